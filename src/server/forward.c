/*
 * Leader-only operations: lease keep-alive and time-to-live (the leader alone tracks expiry),
 * membership changes and leadership transfer (Raft changes configuration on the leader).
 *
 * On the leader an operation is queued and run on the next turn of the loop (so no callback
 * runs inside the call that submitted it). A follower forwards it in a FRAME_LEADER_REQ frame
 * carrying a sequence number; the leader runs it for the follower and answers with
 * FRAME_LEADER_RESP. A lost request or answer ends in the caller's deadline. Membership changes
 * complete when the entry they proposed has been applied on the leader.
 */
#include "server/server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Encoding ----------------------------------------------------------------------------------
 */

static uint64_t zz(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzz(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static int args_encode(struct buf *b, const struct op_args *a)
{
    int rc = buf_append_varint(b, zz(a->id));
    rc = rc ? rc : buf_append_varint(b, a->learner);
    rc = rc ? rc : buf_append_varint(b, (uint64_t)a->urls_len);
    for (int i = 0; i < a->urls_len && !rc; i++) {
        size_t n = strlen(a->urls[i]);
        rc = buf_append_varint(b, n);
        rc = rc ? rc : buf_append(b, a->urls[i], n);
    }
    return rc;
}

struct rd {
    const uint8_t *p;
    size_t len, off;
    bool bad;
};

static uint64_t rd_u(struct rd *r)
{
    uint64_t v = 0;
    size_t n = r->bad ? 0 : varint_get(r->p + r->off, r->len - r->off, &v);
    if (!n)
        r->bad = true;
    r->off += n;
    return v;
}

static int args_decode(struct rd *r, struct op_args *a)
{
    memset(a, 0, sizeof(*a));
    a->id = unzz(rd_u(r));
    a->learner = rd_u(r) != 0;
    uint64_t n = rd_u(r);
    if (n > SERVER_URLS_MAX)
        r->bad = true;
    for (uint64_t i = 0; i < n && !r->bad; i++) {
        uint64_t len = rd_u(r);
        if (r->bad || len >= sizeof(a->urls[0]) || len > r->len - r->off) {
            r->bad = true;
            break;
        }
        memcpy(a->urls[i], r->p + r->off, (size_t)len);
        r->off += (size_t)len;
        a->urls_len++;
    }
    return r->bad || r->off != r->len ? BATON_EPROTO : 0;
}

/* ---- Completion --------------------------------------------------------------------------------
 */

/* Runs when the call is finished: answer the follower it ran for, or the local caller. */
void ops_deliver(struct server_call *c, int err)
{
    struct server *s = c->s;
    if (c->remote_from) {
        uint8_t kind = FRAME_LEADER_RESP;
        buf_clear(&s->frame);
        int rc = buf_append(&s->frame, &kind, 1);
        rc = rc ? rc : buf_append_varint(&s->frame, c->remote_seq);
        rc = rc ? rc : buf_append_varint(&s->frame, zz(err));
        rc = rc ? rc : buf_append_varint(&s->frame, zz(c->v1));
        rc = rc ? rc : buf_append_varint(&s->frame, zz(c->v2));
        if (!rc)
            s->o.env.send(s->o.env.ctx, c->remote_from, false, s->frame.data, s->frame.len);
        return;
    }
    if (c->op_done)
        c->op_done(c->ctx, err, c->v1, c->v2);
}

void ops_finish(struct server_call *c, int err)
{
    calls_finish(c, err, NULL);
}

/* ---- Running on the leader ---------------------------------------------------------------------
 */

static bool urls_in_use(struct server *s, const struct op_args *a, uint64_t except)
{
    struct raft_status st;
    raft_status(s->raft, &st);
    for (int i = 0; i < s->members_len; i++) {
        const struct server_member *m = &s->members[i];
        if (m->id == except || (!raft_config_is_voter(&st.config, m->id) &&
                                !raft_config_is_learner(&st.config, m->id)))
            continue;
        for (int u = 0; u < m->peer_urls_len; u++)
            for (int k = 0; k < a->urls_len; k++)
                if (strcmp(m->peer_urls[u], a->urls[k]) == 0)
                    return true;
    }
    return false;
}

/* Proposes the member's peer URLs; 0 or an error. *index gets the entry's index. */
static int propose_member_urls(struct server *s, uint64_t id, const struct op_args *a,
                               uint64_t *index)
{
    struct request q = {.type = REQ_MEMBER_ATTR};
    q.u.member_attr.member_id = id;
    for (int i = 0; i < a->urls_len; i++)
        q.u.member_attr.peer_urls[i] =
            (struct mvcc_bytes){(const uint8_t *)a->urls[i], strlen(a->urls[i])};
    q.u.member_attr.peer_urls_len = (uint32_t)a->urls_len;
    struct buf b = {0};
    int rc = request_encode(&q, &b);
    if (!rc)
        rc = raft_propose(s->raft, b.data, b.len, index);
    buf_free(&b);
    return rc;
}

static int change_config(struct server *s, uint8_t op, uint64_t id, uint64_t *index)
{
    struct raft_conf_change cc = {op, id};
    return raft_change_config(s->raft, &cc, 1, RAFT_TRANSITION_AUTO, index);
}

/* Starts the operation: 1 when it is done already, 0 when it completes later (when wait_index
 * applies, or the leader changes), or an error. */
static int op_start(struct server *s, struct server_call *c)
{
    const struct op_args *a = &c->args;
    struct raft_status st;
    raft_status(s->raft, &st);
    uint64_t now = s->o.env.now_ms(s->o.env.ctx);
    switch (c->op) {
    case OP_LEASE_KEEPALIVE:
    case OP_LEASE_TTL: {
        int rc;
        if (c->op == OP_LEASE_KEEPALIVE) {
            rc = mvcc_lease_renew(s->store, a->id, now, &c->v1);
        } else {
            struct mvcc_lease_info info;
            arena_reset(&s->scratch);
            rc = mvcc_lease_ttl(s->store, a->id, now, false, &s->scratch, &info);
            c->v1 = info.ttl_s;
            c->v2 = info.granted_ttl_s;
        }
        /* A grant that committed (a follower may have applied it and answered its client) but
         * that this leader has yet to apply: look again once it has (ops_applied). */
        if (rc == MVCC_ELEASENOTFOUND && !c->wait_index && s->applied < st.commit) {
            c->wait_index = st.commit;
            return 0;
        }
        return rc ? rc : 1;
    }
    case OP_MEMBER_ADD: {
        if (a->urls_len == 0)
            return BATON_EINVAL;
        if (urls_in_use(s, a, 0))
            return BATON_EEXIST;
        if (a->learner && st.config.learners_len >= 1)
            return BATON_ETOOBIG; /* etcd allows one learner at a time */
        const char *urls[SERVER_URLS_MAX];
        for (int i = 0; i < a->urls_len; i++)
            urls[i] = a->urls[i];
        char token[32];
        snprintf(token, sizeof(token), "%016llx", (unsigned long long)s->o.cluster_id);
        uint64_t id = server_member_id(urls, a->urls_len, token, now);
        uint64_t idx;
        int rc = propose_member_urls(s, id, a, &idx);
        rc = rc ? rc
                : change_config(s, a->learner ? RAFT_CONF_ADD_LEARNER : RAFT_CONF_ADD_VOTER, id,
                                &c->wait_index);
        c->v1 = (int64_t)id;
        return rc;
    }
    case OP_MEMBER_REMOVE: {
        uint64_t id = (uint64_t)a->id;
        bool voter = raft_config_is_voter(&st.config, id);
        if (!voter && !raft_config_is_learner(&st.config, id))
            return BATON_ENOTFOUND;
        if (voter && st.config.voters_len == 1)
            return BATON_EINVAL;
        return change_config(s, RAFT_CONF_REMOVE, id, &c->wait_index);
    }
    case OP_MEMBER_PROMOTE: {
        uint64_t id = (uint64_t)a->id;
        if (raft_config_is_voter(&st.config, id))
            return BATON_EINVAL;
        if (!raft_config_is_learner(&st.config, id))
            return BATON_ENOTFOUND;
        /* etcd promotes a learner only when its log is within 10% of the leader's. */
        struct raft_progress_info pr;
        if (raft_progress(s->raft, id, &pr) != 0 || (double)pr.match < 0.9 * (double)st.commit)
            return BATON_EBUSY;
        return change_config(s, RAFT_CONF_ADD_VOTER, id, &c->wait_index);
    }
    case OP_MEMBER_UPDATE: {
        uint64_t id = (uint64_t)a->id;
        if (!raft_config_is_voter(&st.config, id) && !raft_config_is_learner(&st.config, id))
            return BATON_ENOTFOUND;
        if (urls_in_use(s, a, id))
            return BATON_EEXIST;
        return propose_member_urls(s, id, a, &c->wait_index);
    }
    case OP_TRANSFER:
        return raft_transfer_leader(s->raft, (uint64_t)a->id);
    }
    return BATON_EINVAL;
}

/* Runs the operations queued for this turn (leader side). */
void ops_run_queued(struct server *s)
{
    while (!dlist_empty(&s->ops_next)) {
        struct server_call *c = DLIST_ENTRY(s->ops_next.next, struct server_call, in_ops);
        dlist_remove(&c->in_ops);
        int rc = s->leader == s->o.member_id ? op_start(s, c) : BATON_EUNAVAIL;
        if (rc == 1)
            ops_finish(c, 0);
        else if (rc == BATON_ENOTLEADER)
            ops_finish(c, BATON_EUNAVAIL);
        else if (rc)
            ops_finish(c, rc);
        else
            dlist_push(&s->ops_wait, &c->in_ops);
    }
}

/* After an apply: configuration changes whose entry applied are done. */
void ops_applied(struct server *s)
{
    for (struct dlist *n = s->ops_wait.next; n != &s->ops_wait;) {
        struct server_call *c = DLIST_ENTRY(n, struct server_call, in_ops);
        n = n->next;
        if (c->op == OP_TRANSFER || !c->wait_index || c->wait_index > s->applied)
            continue;
        if (c->op == OP_LEASE_KEEPALIVE || c->op == OP_LEASE_TTL) {
            dlist_remove(&c->in_ops);
            int rc = s->leader == s->o.member_id ? op_start(s, c) : BATON_EPROPOSALDROP;
            ops_finish(c, rc == 1 ? 0 : rc);
        } else {
            ops_finish(c, 0);
        }
    }
}

/* Leadership moved: transfers to the new leader are done; operations waiting on this member's
 * leadership will not complete here (their entries may still commit: the caller retries),
 * unless their entry committed already — a leader removing itself steps down at that commit,
 * and the entry still applies here, so the answer is success. */
void ops_leader_changed(struct server *s, uint64_t commit)
{
    for (struct dlist *n = s->ops_wait.next; n != &s->ops_wait;) {
        struct server_call *c = DLIST_ENTRY(n, struct server_call, in_ops);
        n = n->next;
        if (c->op == OP_TRANSFER) {
            /* Stepping down leaves no leader for a moment: decide once one is known. */
            if (s->leader)
                ops_finish(c, (uint64_t)c->args.id == s->leader ? 0 : BATON_EPROPOSALDROP);
        } else if (s->leader != s->o.member_id && !(c->wait_index && c->wait_index <= commit)) {
            ops_finish(c, BATON_EPROPOSALDROP);
        }
    }
}

/* ---- Submitting --------------------------------------------------------------------------------
 */

static int op_submit(struct server *s, enum leader_op op, const struct op_args *a,
                     server_op_fn done, void *ctx, struct server_call **call_out)
{
    if (s->failed)
        return BATON_ECLOSED;
    if (!s->leader)
        return BATON_EUNAVAIL;
    if (op == OP_TRANSFER && s->leader != s->o.member_id)
        return BATON_ENOTLEADER;
    struct server_call *c = calls_new(s, CALL_OP, NULL, ctx, NULL);
    if (!c)
        return BATON_EBUSY;
    c->op = op;
    c->args = *a;
    c->op_done = done;
    if (s->leader == s->o.member_id) {
        dlist_push(&s->ops_next, &c->in_ops);
        server_kick(s);
    } else {
        /* Forward: the answer is matched by sequence number (kept in the request-id table). */
        c->req_id = (s->o.member_id << 48) | (++s->next_req_id & 0xffffffffffffull);
        calls_index(s, c);
        uint8_t kind = FRAME_LEADER_REQ;
        buf_clear(&s->frame);
        int rc = buf_append(&s->frame, &kind, 1);
        rc = rc ? rc : buf_append_varint(&s->frame, c->req_id);
        rc = rc ? rc : buf_append_varint(&s->frame, op);
        rc = rc ? rc : args_encode(&s->frame, a);
        if (!rc)
            rc = s->o.env.send(s->o.env.ctx, s->leader, false, s->frame.data, s->frame.len);
        if (rc) {
            server_call_cancel(c);
            return BATON_EUNAVAIL;
        }
    }
    if (call_out)
        *call_out = c;
    return 0;
}

void ops_on_request(struct server *s, uint64_t from, const uint8_t *p, size_t len)
{
    struct rd r = {p, len, 0, false};
    uint64_t seq = rd_u(&r), op = rd_u(&r);
    struct op_args a;
    if (r.bad || op < 1 || op > OP_MAX || args_decode(&r, &a) != 0)
        return; /* malformed: the follower's call times out */
    struct server_call *c = calls_new(s, CALL_OP, NULL, NULL, NULL);
    if (!c)
        return;
    c->op = (enum leader_op)op;
    c->args = a;
    c->remote_from = from;
    c->remote_seq = seq;
    dlist_push(&s->ops_next, &c->in_ops);
}

void ops_on_response(struct server *s, const uint8_t *p, size_t len)
{
    struct rd r = {p, len, 0, false};
    uint64_t seq = rd_u(&r);
    int64_t err = unzz(rd_u(&r)), v1 = unzz(rd_u(&r)), v2 = unzz(rd_u(&r));
    if (r.bad || r.off != len)
        return;
    struct server_call *c = calls_find(s, seq);
    if (!c || c->kind != CALL_OP)
        return;
    c->v1 = v1;
    c->v2 = v2;
    ops_finish(c, (int)err);
}

/* ---- Public entry points -----------------------------------------------------------------------
 */

int server_lease_keepalive(struct server *s, int64_t id, server_op_fn done, void *ctx,
                           struct server_call **call)
{
    struct op_args a = {.id = id};
    return op_submit(s, OP_LEASE_KEEPALIVE, &a, done, ctx, call);
}

int server_lease_ttl(struct server *s, int64_t id, server_op_fn done, void *ctx,
                     struct server_call **call)
{
    struct op_args a = {.id = id};
    return op_submit(s, OP_LEASE_TTL, &a, done, ctx, call);
}

static int urls_args(struct op_args *a, const char *const *urls, int n)
{
    if (n < 1 || n > SERVER_URLS_MAX)
        return BATON_EINVAL;
    for (int i = 0; i < n; i++) {
        if (strlen(urls[i]) >= sizeof(a->urls[i]))
            return BATON_EINVAL;
        strcpy(a->urls[i], urls[i]);
    }
    a->urls_len = n;
    return 0;
}

int server_member_add(struct server *s, const char *const *peer_urls, int n, bool learner,
                      server_op_fn done, void *ctx, struct server_call **call)
{
    struct op_args a = {.learner = learner};
    int rc = urls_args(&a, peer_urls, n);
    return rc ? rc : op_submit(s, OP_MEMBER_ADD, &a, done, ctx, call);
}

int server_member_remove(struct server *s, uint64_t id, server_op_fn done, void *ctx,
                         struct server_call **call)
{
    struct op_args a = {.id = (int64_t)id};
    return op_submit(s, OP_MEMBER_REMOVE, &a, done, ctx, call);
}

int server_member_promote(struct server *s, uint64_t id, server_op_fn done, void *ctx,
                          struct server_call **call)
{
    struct op_args a = {.id = (int64_t)id};
    return op_submit(s, OP_MEMBER_PROMOTE, &a, done, ctx, call);
}

int server_member_update(struct server *s, uint64_t id, const char *const *peer_urls, int n,
                         server_op_fn done, void *ctx, struct server_call **call)
{
    struct op_args a = {.id = (int64_t)id};
    int rc = urls_args(&a, peer_urls, n);
    return rc ? rc : op_submit(s, OP_MEMBER_UPDATE, &a, done, ctx, call);
}

int server_transfer_leader(struct server *s, uint64_t target, server_op_fn done, void *ctx,
                           struct server_call **call)
{
    struct op_args a = {.id = (int64_t)target};
    return op_submit(s, OP_TRANSFER, &a, done, ctx, call);
}
