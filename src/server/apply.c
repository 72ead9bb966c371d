/*
 * Applying committed entries: one LMDB write transaction per ready, the applied index written in
 * it (mvcc_batch_begin). Results for local callers are written into their arenas and delivered
 * after the commit, so a caller that reads right after its callback sees its write.
 *
 * Besides user requests the log carries Raft configurations (recorded in LMDB's aux table as
 * "raft/conf": index, term and the encoded configuration, in the same transaction, so that LMDB
 * is a complete Raft snapshot) and member attributes ("cluster/members").
 */
#include "server/server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUX_CONF    "raft/conf"
#define AUX_MEMBERS "cluster/members"

static struct mvcc_bytes bytes_of(const char *s)
{
    return (struct mvcc_bytes){(const uint8_t *)s, strlen(s)};
}

/* ---- Member table ------------------------------------------------------------------------------
 */

static struct server_member *member_find(struct server *s, uint64_t id)
{
    for (int i = 0; i < s->members_len; i++)
        if (s->members[i].id == id)
            return &s->members[i];
    return NULL;
}

static void copy_str(char *dst, size_t cap, struct mvcc_bytes b)
{
    size_t n = b.len < cap - 1 ? b.len : cap - 1;
    memcpy(dst, b.p, n);
    dst[n] = 0;
}

int members_encode(const struct server *s, struct buf *b)
{
    int rc = buf_append_varint(b, (uint64_t)s->members_len);
    for (int i = 0; i < s->members_len && !rc; i++) {
        const struct server_member *m = &s->members[i];
        rc = buf_append_varint(b, m->id);
        size_t n = strlen(m->name);
        rc = rc ? rc : buf_append_varint(b, n);
        rc = rc ? rc : buf_append(b, m->name, n);
        rc = rc ? rc : buf_append_varint(b, (uint64_t)m->peer_urls_len);
        for (int u = 0; u < m->peer_urls_len && !rc; u++) {
            n = strlen(m->peer_urls[u]);
            rc = buf_append_varint(b, n);
            rc = rc ? rc : buf_append(b, m->peer_urls[u], n);
        }
        rc = rc ? rc : buf_append_varint(b, (uint64_t)m->client_urls_len);
        for (int u = 0; u < m->client_urls_len && !rc; u++) {
            n = strlen(m->client_urls[u]);
            rc = buf_append_varint(b, n);
            rc = rc ? rc : buf_append(b, m->client_urls[u], n);
        }
    }
    return rc;
}

static bool get_str(const uint8_t *p, size_t len, size_t *off, char *dst, size_t cap)
{
    uint64_t n;
    size_t k = varint_get(p + *off, len - *off, &n);
    if (!k || n > len - *off - k || n >= cap)
        return false;
    memcpy(dst, p + *off + k, (size_t)n);
    dst[n] = 0;
    *off += k + (size_t)n;
    return true;
}

static bool get_count(const uint8_t *p, size_t len, size_t *off, uint64_t max, uint64_t *n)
{
    size_t k = varint_get(p + *off, len - *off, n);
    *off += k;
    return k && *n <= max;
}

int members_decode(struct server *s, const uint8_t *p, size_t len)
{
    size_t off = 0;
    uint64_t n, c;
    if (!get_count(p, len, &off, SERVER_PEERS_MAX, &n))
        return BATON_ECORRUPT;
    s->members_len = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct server_member *m = &s->members[s->members_len++];
        memset(m, 0, sizeof(*m));
        size_t k = varint_get(p + off, len - off, &m->id);
        off += k;
        if (!k || !get_str(p, len, &off, m->name, sizeof(m->name)) ||
            !get_count(p, len, &off, SERVER_URLS_MAX, &c))
            return BATON_ECORRUPT;
        m->peer_urls_len = (int)c;
        for (uint64_t u = 0; u < c; u++)
            if (!get_str(p, len, &off, m->peer_urls[u], sizeof(m->peer_urls[u])))
                return BATON_ECORRUPT;
        if (!get_count(p, len, &off, SERVER_URLS_MAX, &c))
            return BATON_ECORRUPT;
        m->client_urls_len = (int)c;
        for (uint64_t u = 0; u < c; u++)
            if (!get_str(p, len, &off, m->client_urls[u], sizeof(m->client_urls[u])))
                return BATON_ECORRUPT;
    }
    return off == len ? 0 : BATON_ECORRUPT;
}

static int members_save(struct server *s)
{
    struct buf b = {0};
    int rc = members_encode(s, &b);
    if (!rc)
        rc = mvcc_aux_put(s->store, bytes_of(AUX_MEMBERS), (struct mvcc_bytes){b.data, b.len});
    buf_free(&b);
    return rc;
}

/* Upserts a member's attributes: empty fields keep what is known. */
static int apply_member_attr(struct server *s, const struct req_member_attr *a)
{
    struct server_member *m = member_find(s, a->member_id);
    if (!m) {
        if (s->members_len == SERVER_PEERS_MAX || a->member_id == 0)
            return BATON_ETOOBIG;
        m = &s->members[s->members_len++];
        memset(m, 0, sizeof(*m));
        m->id = a->member_id;
    }
    if (a->name.len)
        copy_str(m->name, sizeof(m->name), a->name);
    if (a->peer_urls_len) {
        m->peer_urls_len = (int)BATON_MIN(a->peer_urls_len, SERVER_URLS_MAX);
        for (int i = 0; i < m->peer_urls_len; i++)
            copy_str(m->peer_urls[i], sizeof(m->peer_urls[i]), a->peer_urls[i]);
        if (m->id != s->o.member_id && s->o.env.peer_set)
            s->o.env.peer_set(s->o.env.ctx, m->id, m->peer_urls[0], false);
    }
    if (a->client_urls_len) {
        m->client_urls_len = (int)BATON_MIN(a->client_urls_len, SERVER_URLS_MAX);
        for (int i = 0; i < m->client_urls_len; i++)
            copy_str(m->client_urls[i], sizeof(m->client_urls[i]), a->client_urls[i]);
    }
    return members_save(s);
}

/* ---- Configurations ----------------------------------------------------------------------------
 */

static int apply_config(struct server *s, const struct raft_entry *e)
{
    struct raft_config conf;
    int rc = raft_config_decode(e->data, e->len, &conf);
    if (rc)
        return rc; /* raft accepted it, so this cannot happen: the caller treats it as fatal */
    uint8_t hdr[16];
    be64_put(hdr, e->index);
    be64_put(hdr + 8, e->term);
    struct buf b = {0};
    rc = buf_append(&b, hdr, sizeof(hdr));
    rc = rc ? rc : buf_append(&b, e->data, e->len);
    rc = rc ? rc : mvcc_aux_put(s->store, bytes_of(AUX_CONF), (struct mvcc_bytes){b.data, b.len});
    buf_free(&b);
    s->applied_conf = conf;
    /* Members that left the configuration are forgotten by the transport. */
    for (int i = 0; i < s->members_len && !rc; i++) {
        uint64_t id = s->members[i].id;
        if (id != s->o.member_id && !raft_config_is_voter(&conf, id) &&
            !raft_config_is_learner(&conf, id) && s->o.env.peer_set)
            s->o.env.peer_set(s->o.env.ctx, id, NULL, true);
    }
    return rc;
}

/* The configuration LMDB recorded with its applied state: the snapshot's configuration. */
int apply_restore_config(struct server *s, struct raft_config *conf, uint64_t *index)
{
    struct mvcc_bytes v;
    int rc = mvcc_aux_get(s->store, bytes_of(AUX_CONF), &s->scratch, &v);
    if (rc)
        return rc;
    if (v.len < 16)
        return BATON_ECORRUPT;
    *index = be64_get(v.p);
    return raft_config_decode(v.p + 16, v.len - 16, conf) ? BATON_ECORRUPT : 0;
}

int members_load(struct server *s)
{
    struct mvcc_bytes v;
    int rc = mvcc_aux_get(s->store, bytes_of(AUX_MEMBERS), &s->scratch, &v);
    if (rc == BATON_ENOTFOUND)
        return 0;
    return rc ? rc : members_decode(s, v.p, v.len);
}

/* ---- User requests -----------------------------------------------------------------------------
 */

static struct completion *completion_add(struct server *s, struct server_call *c)
{
    if (s->completions_len == s->completions_cap) {
        size_t cap = s->completions_cap ? s->completions_cap * 2 : 64;
        struct completion *n = realloc(s->completions, cap * sizeof(*n));
        if (!n)
            return NULL;
        s->completions = n;
        s->completions_cap = cap;
    }
    struct completion *x = &s->completions[s->completions_len++];
    memset(x, 0, sizeof(*x));
    x->call = c;
    return x;
}

/* Applies one request. Request-level errors (mvcc's etcd errors) go to the waiting caller;
 * only an LMDB failure is returned (fatal). */
static int apply_request(struct server *s, const struct raft_entry *e)
{
    struct request q;
    arena_reset(&s->scratch);
    int rc = request_decode(e->data, e->len, &s->scratch, &q);
    if (rc) {
        /* Only members propose, and they encode with this code: a bad payload means a bug or
         * a corrupt log. Every member skips it identically, so state stays consistent. */
        log_write(s->o.log, LOG_ERROR, "member=%llx msg=\"undecodable entry skipped\" index=%llu",
                  (unsigned long long)s->o.member_id, (unsigned long long)e->index);
        return 0;
    }
    struct server_call *call = q.id ? calls_find(s, q.id) : NULL;
    struct completion *done = call ? completion_add(s, call) : NULL;
    struct server_result tmp, *res = done ? &done->res : &tmp;
    struct arena *a = call ? call->arena : &s->scratch;
    memset(res, 0, sizeof(*res));
    res->index = e->index;
    res->term = e->term;
    switch (q.type) {
    case REQ_PUT:
        rc = mvcc_put(s->store, &q.u.put, a, &res->u.put);
        break;
    case REQ_DELETE:
        rc = mvcc_delete_range(s->store, &q.u.del, a, &res->u.del);
        break;
    case REQ_TXN:
        rc = mvcc_txn(s->store, &q.u.txn, a, &res->u.txn);
        break;
    case REQ_COMPACT:
        rc = mvcc_compact(s->store, q.u.compact.revision);
        break;
    case REQ_LEASE_GRANT:
        rc = mvcc_lease_grant(s->store, q.u.lease_grant.id, q.u.lease_grant.ttl_s,
                              &res->u.lease_grant.id, &res->u.lease_grant.ttl_s);
        if (!rc && s->was_leader)
            mvcc_lease_renew(s->store, res->u.lease_grant.id, s->o.env.now_ms(s->o.env.ctx),
                             &res->u.lease_grant.ttl_s);
        break;
    case REQ_LEASE_REVOKE:
        rc = mvcc_lease_revoke(s->store, q.u.lease_revoke);
        break;
    case REQ_ALARM:
        if (q.u.alarm.type == REQ_ALARM_NOSPACE && q.u.alarm.action != REQ_ALARM_GET)
            rc = mvcc_alarm_nospace(s->store, q.u.alarm.action == REQ_ALARM_ACTIVATE);
        break;
    case REQ_MEMBER_ATTR:
        rc = apply_member_attr(s, &q.u.member_attr);
        break;
    }
    res->revision = mvcc_rev(s->store);
    if (done)
        done->err = rc;
    if (call)
        call->applied = true;
    /* Request-level errors changed nothing; anything else from LMDB poisons the store. */
    return rc == BATON_ECLOSED || (rc < 0 && rc > BATON_ERR_BASE) ? rc : 0;
}

int apply_entries(struct server *s, const struct raft_entry *e, size_t n)
{
    /* Entries at or below the applied index are already in LMDB (a replay after restart). */
    while (n > 0 && e->index <= s->applied)
        e++, n--;
    if (n == 0)
        return 0;
    /* Each entry's index is set before it applies: generated lease ids derive from it, and
     * must not depend on how entries happen to be grouped into batches on each member. */
    int rc = mvcc_batch_begin(s->store, e[0].index, e[0].term);
    for (size_t i = 0; i < n && !rc; i++) {
        if (i > 0)
            rc = mvcc_batch_set_index(s->store, e[i].index, e[i].term);
        if (rc)
            break;
        if (e[i].type == RAFT_ENTRY_CONFIG)
            rc = apply_config(s, &e[i]);
        else if (e[i].type == RAFT_ENTRY_NORMAL)
            rc = apply_request(s, &e[i]);
    }
    if (rc) {
        mvcc_batch_abort(s->store);
        return rc;
    }
    rc = mvcc_batch_commit(s->store);
    if (rc)
        return rc;
    if (s->o.observer.timing)
        s->o.observer.timing(s->o.observer.ctx, SERVER_TIMING_BACKEND_COMMIT,
                             mvcc_last_commit_ns(s->store));
    s->applied = e[n - 1].index;
    /* Deliver results now that the batch is committed. */
    for (size_t i = 0; i < s->completions_len; i++) {
        struct completion *c = &s->completions[i];
        calls_finish(c->call, c->err, &c->res);
    }
    s->completions_len = 0;
    return 0;
}
