/*
 * baton.v1.Nodes: the registry of the database's nodes and their liveness (proto/baton.proto).
 *
 * Replicated state: one packed Node per node at /baton/nodes/<id>, its epoch as decimal text at
 * .../<id>/epoch (what fenced writes compare), and .../<id>/alive attached to the node's lease.
 * Every change is a Txn proposal that compares the record's mod revision (or its absence), so a
 * write decided on stale state, e.g. by a deposed leader, fails instead of overwriting.
 *
 * Ids: a new node's id is the id of the lease granted for its first registration, drawn at
 * random (63 bits, seeded per member and start) by the member that serves the call: the grant
 * fails if a lease holds it, and the Txn that creates the record requires that the key never
 * existed (Remove keeps a tombstone), so an id is never given twice.
 *
 * Leader-only soft state (struct nodes): the liveness table of cluster/ (detectors, stats),
 * loaded from the store when this member becomes leader and kept in step by a watch on the
 * prefix; heartbeat streams. Heartbeats renew the lease (server_lease_keepalive) and feed the
 * detector; they never propose in steady state. services_tick runs the liveness policy and
 * proposes its transitions (JOINING → UP, UP ⇄ SUSPECT, → DOWN with epoch + 1).
 *
 * Remove keeps the record with state REMOVED (a tombstone: the id stays taken, and a node that
 * comes back learns STOP instead of NOT_FOUND); Decommission and Remove revoke the lease.
 */
#include "cluster/cluster.h"
#include "rpc/svc.h"

#include <baton.pb-c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TRANSITIONS_PER_TICK  64
#define TRANSITIONS_IN_FLIGHT 256
#define HB_IN_FLIGHT_MAX      64
#define WRITE_ATTEMPTS        3
#define LIST_PAGE             1000

/* ---- State ------------------------------------------------------------------------------- */

struct hb_stream;
struct transition_op;
struct node_call;

struct nodes {
    struct services *sv;
    struct cluster_liveness_config lcfg;
    struct cluster_liveness *lv;
    int64_t lease_ttl_s;
    uint32_t heartbeat_ms;
    bool leading;  /* the table is loaded and the watch runs */
    uint64_t term; /* of the leadership the table belongs to */
    bool reload;   /* the watch was cancelled (compaction; never expected, as the callback
                    * never falls behind): load again, with a fresh grace */
    int64_t watch_id;
    bool watching;
    struct arena scratch; /* watch decoding and loads */
    struct hb_stream *streams;
    struct transition_op *ops;
    size_t ops_len;
    uint64_t cmd_seq;
    struct node_call *deferred, *deferred_tail; /* steps waiting to propose */
    struct prng prng;                           /* lease (and so node) ids */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void send_and_finish(struct rpc_call *call, const ProtobufCMessage *m)
{
    int rc = m ? rpc_call_send(call, m) : BATON_ENOMEM;
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

/* ---- Records ------------------------------------------------------------------------------ */

/* The record of id from this member's store: *node NULL when absent. */
static int node_read(struct services *sv, uint64_t id, struct arena *a, Baton__V1__Node **node,
                     int64_t *mod_rev)
{
    char key[CLUSTER_KEY_MAX];
    size_t kl = cluster_node_key(id, key);
    struct mvcc_range_req q = {.key = {(const uint8_t *)key, kl}};
    struct mvcc_range_resp r;
    *node = NULL;
    int rc = mvcc_range(server_store(sv->s), &q, a, &r);
    if (rc || r.kvs_len == 0)
        return rc;
    *node = (Baton__V1__Node *)rpc_unpack(&baton__v1__node__descriptor, a, r.kvs[0].value.p,
                                          r.kvs[0].value.len);
    if (!*node)
        return BATON_ECORRUPT;
    *mod_rev = r.kvs[0].mod_revision;
    return 0;
}

/* A copy of n in a whose scalar fields the caller may change (strings and labels shared). */
static Baton__V1__Node *node_copy(struct arena *a, const Baton__V1__Node *n)
{
    Baton__V1__Node *c = arena_alloc(a, sizeof(*c));
    if (c)
        *c = *n;
    return c;
}

struct node_write {
    const Baton__V1__Node *node;
    int64_t expect_mod_rev; /* 0: the record must never have existed */
    bool put_epoch;
    int64_t alive_lease;        /* != 0: put the alive key attached to this lease */
    int64_t expect_alive_lease; /* != 0: the alive key must still be attached to this lease */
};

/* Proposes the Txn that writes a record (and its epoch and alive keys) if the compares hold;
 * res->u.txn.succeeded tells. Request memory in a (only needed until this returns). */
static int node_write_propose(struct services *sv, struct arena *a, const struct node_write *w,
                              server_done_fn done, void *ctx, struct server_call **call)
{
    const Baton__V1__Node *n = w->node;
    char *key = arena_alloc(a, CLUSTER_KEY_MAX), *ekey = arena_alloc(a, CLUSTER_KEY_MAX);
    char *akey = arena_alloc(a, CLUSTER_KEY_MAX), *eval = arena_alloc(a, CLUSTER_EPOCH_TEXT_MAX);
    size_t len = baton__v1__node__get_packed_size(n);
    uint8_t *val = arena_alloc(a, len ? len : 1);
    struct mvcc_compare *cmp = arena_alloc(a, 2 * sizeof(*cmp));
    struct mvcc_op *ops = arena_alloc(a, 3 * sizeof(*ops));
    if (!key || !ekey || !akey || !eval || !val || !cmp || !ops)
        return BATON_ENOMEM;
    baton__v1__node__pack(n, val);
    size_t kl = cluster_node_key(n->id, key), ekl = cluster_node_epoch_key(n->id, ekey);
    size_t akl = cluster_node_alive_key(n->id, akey), evl = cluster_epoch_text(n->epoch, eval);
    memset(cmp, 0, 2 * sizeof(*cmp));
    memset(ops, 0, 3 * sizeof(*ops));
    size_t ncmp = 0, nops = 0;
    cmp[ncmp].key = (struct mvcc_bytes){(const uint8_t *)key, kl};
    cmp[ncmp].result = MVCC_CMP_EQUAL;
    cmp[ncmp].target = w->expect_mod_rev ? MVCC_CMP_MOD : MVCC_CMP_CREATE;
    cmp[ncmp++].number = w->expect_mod_rev;
    if (w->expect_alive_lease) {
        cmp[ncmp].key = (struct mvcc_bytes){(const uint8_t *)akey, akl};
        cmp[ncmp].result = MVCC_CMP_EQUAL;
        cmp[ncmp].target = MVCC_CMP_LEASE;
        cmp[ncmp++].number = w->expect_alive_lease;
    }
    ops[nops].type = MVCC_OP_PUT;
    ops[nops++].u.put =
        (struct mvcc_put_req){.key = {(const uint8_t *)key, kl}, .value = {val, len}};
    if (w->put_epoch) {
        ops[nops].type = MVCC_OP_PUT;
        ops[nops++].u.put = (struct mvcc_put_req){.key = {(const uint8_t *)ekey, ekl},
                                                  .value = {(const uint8_t *)eval, evl}};
    }
    if (w->alive_lease) {
        ops[nops].type = MVCC_OP_PUT;
        ops[nops++].u.put = (struct mvcc_put_req){.key = {(const uint8_t *)akey, akl},
                                                  .value = {(const uint8_t *)eval, evl},
                                                  .lease = w->alive_lease};
    }
    struct request q = {.type = REQ_TXN};
    q.u.txn = (struct mvcc_txn_req){cmp, ncmp, ops, nops, NULL, 0};
    return server_propose(sv->s, &q, a, done, ctx, call);
}

static Baton__V1__Node *node_pb_copy_stats(struct arena *a, Baton__V1__Node *n,
                                           const struct cluster_node_live *l)
{
    if (!l || !l->beat)
        return n;
    Baton__V1__NodeStats *st = arena_alloc(a, sizeof(*st));
    if (!st)
        return n;
    baton__v1__node_stats__init(st);
    st->used_bytes = l->stats[0];
    st->available_bytes = l->stats[1];
    st->shard_count = (uint32_t)l->stats[2];
    st->leader_count = (uint32_t)l->stats[3];
    st->cpu_usage = l->cpu_usage;
    n->stats = st;
    return n;
}

/* ---- Leader soft state -------------------------------------------------------------------- */

static struct nodes *nodes_of(struct services *sv)
{
    return sv->nodes;
}

static void table_put(struct nodes *ns, const uint8_t *val, size_t len, int64_t mod_rev,
                      struct arena *a)
{
    Baton__V1__Node *n = (Baton__V1__Node *)rpc_unpack(&baton__v1__node__descriptor, a, val, len);
    if (!n) {
        log_write(ns->sv->cfg.log, LOG_WARN, "msg=\"undecodable node record\" mod_rev=%lld",
                  (long long)mod_rev);
        return;
    }
    int rc = cluster_liveness_upsert(ns->lv, n->id, (enum cluster_node_state)n->state, n->epoch,
                                     n->lease, mod_rev);
    if (rc)
        log_write(ns->sv->cfg.log, LOG_WARN, "msg=\"node table full\" node=%016llx err=\"%s\"",
                  (unsigned long long)n->id, baton_strerror(rc));
}

/* Watch callback: keeps the table equal to the records. It must not call into the store. */
static int on_nodes_watch(void *ctx, const struct mvcc_watch_batch *b)
{
    struct nodes *ns = ctx;
    if (b->compact_revision) {
        ns->reload = true; /* the watcher is cancelled after this call */
        return 0;
    }
    for (size_t i = 0; i < b->events_len; i++) {
        arena_reset(&ns->scratch);
        const struct mvcc_event *e = &b->events[i];
        Mvccpb__KeyValue *kv = (Mvccpb__KeyValue *)rpc_unpack(&mvccpb__key_value__descriptor,
                                                              &ns->scratch, e->kv, e->kv_len);
        uint64_t id;
        enum cluster_key_kind kind;
        if (!kv || !cluster_parse_key(kv->key.data, kv->key.len, &id, &kind) ||
            kind != CLUSTER_KEY_NODE)
            continue;
        if (e->type == MVCC_EVENT_DELETE)
            cluster_liveness_remove(ns->lv, id);
        else
            table_put(ns, kv->value.data, kv->value.len, kv->mod_revision, &ns->scratch);
    }
    return 0;
}

static void watch_stop(struct nodes *ns)
{
    if (ns->watching) {
        mvcc_watch_cancel(server_store(ns->sv->s), ns->watch_id);
        ns->watching = false;
    }
}

/* Loads every record into a fresh table and watches the prefix from the next revision. */
static int table_load(struct nodes *ns, uint64_t now)
{
    struct mvcc_store *st = server_store(ns->sv->s);
    watch_stop(ns);
    cluster_liveness_promote(ns->lv, now);
    static const char prefix[] = CLUSTER_NODES_PREFIX, end[] = "/baton/nodes0";
    uint8_t from[CLUSTER_KEY_MAX + 8];
    size_t from_len = sizeof(prefix) - 1;
    memcpy(from, prefix, from_len);
    int64_t rev = 0;
    for (;;) {
        arena_reset(&ns->scratch);
        struct mvcc_range_req q = {.key = {from, from_len},
                                   .range_end = {(const uint8_t *)end, sizeof(end) - 1},
                                   .limit = LIST_PAGE,
                                   .revision = rev};
        struct mvcc_range_resp r;
        int rc = mvcc_range(st, &q, &ns->scratch, &r);
        if (rc)
            return rc;
        rev = r.header_revision;
        for (size_t i = 0; i < r.kvs_len; i++) {
            uint64_t id;
            enum cluster_key_kind kind;
            if (cluster_parse_key(r.kvs[i].key.p, r.kvs[i].key.len, &id, &kind) &&
                kind == CLUSTER_KEY_NODE)
                table_put(ns, r.kvs[i].value.p, r.kvs[i].value.len, r.kvs[i].mod_revision,
                          &ns->scratch);
        }
        if (!r.more || r.kvs_len == 0)
            break;
        const struct mvcc_bytes *last = &r.kvs[r.kvs_len - 1].key;
        if (last->len + 1 > sizeof(from))
            return BATON_ECORRUPT; /* keys in range are at most 36 bytes */
        memcpy(from, last->p, last->len);
        from[last->len] = 0;
        from_len = last->len + 1;
    }
    struct mvcc_watch_req w = {.key = {(const uint8_t *)prefix, sizeof(prefix) - 1},
                               .range_end = {(const uint8_t *)end, sizeof(end) - 1},
                               .start_revision = rev + 1};
    int64_t compact;
    int rc = mvcc_watch_create(st, &w, on_nodes_watch, ns, &ns->watch_id, &compact);
    ns->watching = rc == 0;
    return rc;
}

static void streams_end_not_leader(struct nodes *ns);

/* Follows leadership: loads the table on promotion (and after a lost watch), drops it and ends
 * the heartbeat streams on demotion. */
static void nodes_sync(struct nodes *ns)
{
    struct server_status st;
    server_status(ns->sv->s, &st);
    bool leads = st.is_leader;
    if (ns->leading && (!leads || st.term != ns->term)) {
        watch_stop(ns);
        ns->leading = false;
        cluster_liveness_promote(ns->lv, 0); /* empties the table */
        streams_end_not_leader(ns);
    }
    if (leads && (!ns->leading || ns->reload)) {
        ns->reload = false;
        int rc = table_load(ns, mono_ms());
        if (rc) {
            log_write(ns->sv->cfg.log, LOG_ERROR, "msg=\"cannot load the node table\" err=\"%s\"",
                      baton_strerror(rc));
            watch_stop(ns);
            return; /* tried again next tick */
        }
        ns->leading = true;
        ns->term = st.term;
        log_write(ns->sv->cfg.log, LOG_INFO, "msg=\"node table loaded\" nodes=%zu term=%llu",
                  cluster_liveness_count(ns->lv), (unsigned long long)st.term);
    }
}

/* ---- Transitions decided by the liveness policy ------------------------------------------ */

struct transition_op {
    struct nodes *ns; /* NULL once the services are destroyed */
    struct transition_op *prev, *next;
    struct server_call *pending;
    uint64_t id;
    struct arena arena;
};

static void op_unlink_free(struct transition_op *op)
{
    struct nodes *ns = op->ns;
    if (ns) {
        if (op->prev)
            op->prev->next = op->next;
        else
            ns->ops = op->next;
        if (op->next)
            op->next->prev = op->prev;
        ns->ops_len--;
    }
    arena_free(&op->arena);
    free(op);
}

static void on_transition_done(void *ctx, int err, const struct server_result *res)
{
    struct transition_op *op = ctx;
    struct nodes *ns = op->ns;
    if (ns && (err || !res->u.txn.succeeded))
        cluster_liveness_unpend(ns->lv, op->id); /* decided again from fresher state */
    op_unlink_free(op);
}

static void run_deferred(struct nodes *ns);

/* Only asked right after nodes_sync confirmed this member leads (and so tracks expiry): a
 * follower's store reports every lease with ttl -1. */
static bool lease_lapsed(void *ctx, int64_t lease)
{
    struct nodes *ns = ctx;
    struct mvcc_lease_info info;
    int rc = mvcc_lease_ttl(server_store(ns->sv->s), lease, mono_ms(), false, NULL, &info);
    return rc == MVCC_ELEASENOTFOUND || (rc == 0 && info.ttl_s < 0);
}

static void transition_propose(struct nodes *ns, const struct cluster_transition *t)
{
    struct transition_op *op = calloc(1, sizeof(*op));
    if (!op) {
        cluster_liveness_unpend(ns->lv, t->id);
        return;
    }
    op->ns = ns;
    op->id = t->id;
    arena_init(&op->arena, 4096);
    Baton__V1__Node *n;
    int64_t mod_rev = 0;
    int rc = node_read(ns->sv, t->id, &op->arena, &n, &mod_rev);
    if (rc || !n || mod_rev != t->mod_rev) {
        cluster_liveness_unpend(ns->lv, t->id); /* the watch brings the news */
        arena_free(&op->arena);
        free(op);
        return;
    }
    Baton__V1__Node *c = node_copy(&op->arena, n);
    if (c) {
        c->state = (Baton__V1__NodeState)t->to;
        c->epoch = t->epoch;
        if (t->lapsed)
            c->lease = 0;
        if (t->to != t->from)
            c->state_changed_unix_ms = wall_ms();
        node_pb_copy_stats(&op->arena, c, cluster_liveness_get(ns->lv, t->id));
    }
    struct node_write w = {c, t->mod_rev, t->epoch != n->epoch, 0, 0};
    rc = c ? node_write_propose(ns->sv, &op->arena, &w, on_transition_done, op, &op->pending)
           : BATON_ENOMEM;
    if (rc) {
        cluster_liveness_unpend(ns->lv, t->id);
        arena_free(&op->arena);
        free(op);
        return;
    }
    log_write(ns->sv->cfg.log, LOG_INFO,
              "msg=\"node transition\" node=%016llx from=%s to=%s epoch=%llu",
              (unsigned long long)t->id, cluster_node_state_name(t->from),
              cluster_node_state_name(t->to), (unsigned long long)t->epoch);
    op->next = ns->ops;
    if (op->next)
        op->next->prev = op;
    ns->ops = op;
    ns->ops_len++;
}

void svc_nodes_tick(struct services *sv)
{
    struct nodes *ns = nodes_of(sv);
    if (!ns)
        return;
    run_deferred(ns);
    nodes_sync(ns);
    if (!ns->leading)
        return;
    size_t room = TRANSITIONS_IN_FLIGHT - BATON_MIN(ns->ops_len, TRANSITIONS_IN_FLIGHT);
    struct cluster_transition t[TRANSITIONS_PER_TICK];
    size_t n = 0;
    cluster_liveness_step(ns->lv, mono_ms(), lease_lapsed, ns, t,
                          BATON_MIN(room, (size_t)TRANSITIONS_PER_TICK), &n);
    for (size_t i = 0; i < n; i++)
        transition_propose(ns, &t[i]);
}

/* ---- Heartbeat streams -------------------------------------------------------------------- */

struct hb_op {
    struct hb_stream *st;
    struct hb_op *prev, *next;
    struct server_call *pending;
    uint64_t id;
};

struct hb_stream {
    struct nodes *ns; /* NULL once detached */
    struct rpc_call *call;
    struct hb_stream *prev, *next;
    struct hb_op *ops;
    size_t ops_len;
    bool half_closed; /* the node sends no more: end once the last renewal is answered */
};

static void hb_op_unlink(struct hb_op *op)
{
    struct hb_stream *st = op->st;
    if (op->prev)
        op->prev->next = op->next;
    else
        st->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    st->ops_len--;
    free(op);
}

static void hb_detach(struct hb_stream *st)
{
    while (st->ops) {
        server_call_cancel(st->ops->pending);
        hb_op_unlink(st->ops);
    }
    if (!st->ns)
        return;
    if (st->prev)
        st->prev->next = st->next;
    else
        st->ns->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    st->ns = NULL;
}

/* Ends the stream: code/message, or err's status when code < 0. */
static void hb_end(struct hb_stream *st, int code, const char *message, int err)
{
    struct rpc_call *call = st->call;
    rpc_call_set_user(call, NULL);
    hb_detach(st);
    free(st);
    if (code >= 0)
        rpc_call_finish(call, code, message);
    else
        rpc_call_finish_err(call, err);
}

static void streams_end_not_leader(struct nodes *ns)
{
    struct rpc_status s = rpc_etcd_status(RPC_ETCD_NOT_LEADER);
    while (ns->streams)
        hb_end(ns->streams, s.code, s.message, 0);
}

/* Answers with the node's current epoch and state and the command they imply; true when the
 * stream ended (a send error). */
static bool hb_respond(struct hb_stream *st, const struct cluster_node_live *n, bool reregister)
{
    struct nodes *ns = st->ns;
    Etcdserverpb__ResponseHeader h;
    svc_header_fill(ns->sv, &h, 0);
    Baton__V1__HeartbeatResponse m = BATON__V1__HEARTBEAT_RESPONSE__INIT;
    Baton__V1__Command cmd = BATON__V1__COMMAND__INIT, *cmds[1] = {&cmd};
    m.header = &h;
    m.epoch = n->epoch;
    m.state = (Baton__V1__NodeState)n->state;
    if (n->state == CLUSTER_NODE_REMOVED || n->state == CLUSTER_NODE_DECOMMISSIONED)
        cmd.kind = BATON__V1__COMMAND__KIND__STOP;
    else if (reregister)
        cmd.kind = BATON__V1__COMMAND__KIND__REREGISTER;
    else if (n->state == CLUSTER_NODE_DECOMMISSIONING)
        cmd.kind = BATON__V1__COMMAND__KIND__DRAIN;
    if (cmd.kind != BATON__V1__COMMAND__KIND__NONE) {
        cmd.id = ++ns->cmd_seq;
        m.commands = cmds;
        m.n_commands = 1;
    }
    int rc = rpc_call_send(st->call, &m.base);
    /* BATON_EBUSY: the node does not read its answers; the next heartbeat gets a fresh one. */
    if (rc && rc != BATON_EBUSY) {
        hb_end(st, -1, NULL, rc);
        return true;
    }
    return false;
}

static bool hb_renewed(struct hb_stream *st, uint64_t id, int err);
static void hb_maybe_end(struct rpc_call *call);

static void on_hb_renewed(void *ctx, int err, int64_t ttl, int64_t granted)
{
    (void)ttl;
    (void)granted;
    struct hb_op *op = ctx;
    struct hb_stream *st = op->st;
    uint64_t id = op->id;
    hb_op_unlink(op);
    if (!st->ns)
        return;
    struct rpc_call *call = st->call;
    if (!hb_renewed(st, id, err))
        hb_maybe_end(call);
}

/* Answers a renewal; true when the stream ended (st is gone). */
static bool hb_renewed(struct hb_stream *st, uint64_t id, int err)
{
    if (err == BATON_ENOTLEADER || err == BATON_EUNAVAIL || err == BATON_EPROPOSALDROP) {
        struct rpc_status s = rpc_etcd_status(RPC_ETCD_NOT_LEADER);
        hb_end(st, s.code, s.message, 0);
        return true;
    }
    if (err && err != MVCC_ELEASENOTFOUND) {
        hb_end(st, -1, NULL, err);
        return true;
    }
    struct cluster_node_live *n = cluster_liveness_get(st->ns->lv, id);
    if (!n) {
        hb_end(st, GRPC_NOT_FOUND, "baton: node not found", 0);
        return true;
    }
    /* The lease lapsed before this renewal: the node is about to be declared down with a new
     * epoch; it must register again. */
    return hb_respond(st, n, err == MVCC_ELEASENOTFOUND);
}

/* hb_respond may have ended the stream; a half-closed one ends once nothing is in flight. */
static void hb_maybe_end(struct rpc_call *call)
{
    struct hb_stream *st = rpc_call_user(call);
    if (st && st->half_closed && st->ops_len == 0)
        hb_end(st, GRPC_OK, NULL, 0);
}

static void on_hb_half_close(struct rpc_call *call, void *ctx)
{
    (void)ctx;
    struct hb_stream *st = rpc_call_user(call);
    if (!st)
        return;
    st->half_closed = true;
    hb_maybe_end(call);
}

static void on_hb_start(struct rpc_call *call, void *ctx)
{
    struct services *sv = ctx;
    struct nodes *ns = nodes_of(sv);
    struct hb_stream *st = calloc(1, sizeof(*st));
    if (!st) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    st->ns = ns;
    st->call = call;
    st->next = ns->streams;
    if (st->next)
        st->next->prev = st;
    ns->streams = st;
    rpc_call_set_user(call, st);
}

static void hb_keep_stats(struct cluster_node_live *n, const Baton__V1__NodeStats *s)
{
    if (!s)
        return;
    n->stats[0] = s->used_bytes;
    n->stats[1] = s->available_bytes;
    n->stats[2] = s->shard_count;
    n->stats[3] = s->leader_count;
    n->cpu_usage = s->cpu_usage;
}

static void on_hb_message(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)ctx;
    struct hb_stream *st = rpc_call_user(call);
    if (!st || !st->ns)
        return;
    struct nodes *ns = st->ns;
    const Baton__V1__HeartbeatRequest *p = (const Baton__V1__HeartbeatRequest *)msg;
    run_deferred(ns);
    if (!ns->leading) {
        nodes_sync(ns); /* leadership may be newer than the last tick */
        if (!ns->leading) {
            struct rpc_status s = rpc_etcd_status(RPC_ETCD_NOT_LEADER);
            hb_end(st, s.code, s.message, 0);
            return;
        }
    }
    struct cluster_node_live *n = cluster_liveness_get(ns->lv, p->node_id);
    if (!n) {
        hb_end(st, GRPC_NOT_FOUND, "baton: node not found", 0);
        return;
    }
    /* Removed, decommissioned (STOP), an old epoch or a lapsed lease (REREGISTER): no renewal,
     * and an old epoch's stats are ignored. */
    bool stop = n->state == CLUSTER_NODE_REMOVED || n->state == CLUSTER_NODE_DECOMMISSIONED;
    if (stop || p->epoch != n->epoch || n->lease == 0) {
        hb_respond(st, n, true);
        return;
    }
    if (st->ops_len >= HB_IN_FLIGHT_MAX) {
        hb_end(st, GRPC_RESOURCE_EXHAUSTED, "etcdserver: too many requests", 0);
        return;
    }
    struct hb_op *op = calloc(1, sizeof(*op));
    if (!op) {
        hb_end(st, -1, NULL, BATON_ENOMEM);
        return;
    }
    cluster_liveness_heartbeat(ns->lv, n, mono_ms());
    hb_keep_stats(n, p->stats);
    op->st = st;
    op->id = n->id;
    op->next = st->ops;
    if (op->next)
        op->next->prev = op;
    st->ops = op;
    st->ops_len++;
    int rc = server_lease_keepalive(ns->sv->s, n->lease, on_hb_renewed, op, &op->pending);
    if (rc) {
        hb_op_unlink(op);
        hb_end(st, -1, NULL, rc);
    }
}

static void on_hb_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct hb_stream *st = rpc_call_user(call);
    if (st) {
        hb_detach(st);
        free(st);
    }
}

/* ---- Unary calls ---------------------------------------------------------------------------
 * Get and List: a read barrier, then the local store. Writes: a read barrier, the record read,
 * a compare-and-write Txn, maybe a lease revoke. The server's callbacks run while it applies
 * entries, when no new proposal may start, so every step that proposes after a callback is
 * deferred: queued on the services and run from the next handler of this service or from
 * services_tick (a tick at most). A new node needs no read: its lease grant and its Txn are
 * proposed back to back (Raft applies them in order), so registering costs one round. */

enum node_verb { VERB_REGISTER, VERB_GET, VERB_LIST, VERB_DRAIN, VERB_DECOMMISSION, VERB_REMOVE };

struct node_call {
    struct services *sv;
    struct rpc_call *call;
    struct server_call *pending, *pending_grant;
    enum node_verb verb;
    const ProtobufCMessage *req; /* the request: lives as long as the unary call */
    uint64_t id;
    int attempts;
    int64_t lease, lease_ttl_s; /* the lease granted for this registration */
    int grant_err;
    int64_t revoke;           /* lease to revoke after the write */
    Baton__V1__Node *written; /* the record as written */
    int64_t revision;
    void (*cont)(struct node_call *k); /* the deferred step */
    struct node_call *dprev, *dnext;
    bool deferred;
};

static void defer(struct node_call *k, void (*cont)(struct node_call *k))
{
    struct nodes *ns = nodes_of(k->sv);
    k->cont = cont;
    k->deferred = true;
    k->dprev = ns->deferred_tail;
    k->dnext = NULL;
    if (ns->deferred_tail)
        ns->deferred_tail->dnext = k;
    else
        ns->deferred = k;
    ns->deferred_tail = k;
}

static void undefer(struct node_call *k)
{
    struct nodes *ns = nodes_of(k->sv);
    if (!k->deferred || !ns)
        return;
    if (k->dprev)
        k->dprev->dnext = k->dnext;
    else
        ns->deferred = k->dnext;
    if (k->dnext)
        k->dnext->dprev = k->dprev;
    else
        ns->deferred_tail = k->dprev;
    k->deferred = false;
}

/* Runs the deferred steps queued so far (those they queue wait for the next run). */
static void run_deferred(struct nodes *ns)
{
    struct node_call *last = ns->deferred_tail;
    while (ns->deferred) {
        struct node_call *k = ns->deferred;
        bool was_last = k == last;
        undefer(k);
        k->cont(k);
        if (was_last)
            break;
    }
}

static void on_unary_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct node_call *k = rpc_call_user(call);
    if (!k)
        return;
    undefer(k);
    if (k->pending)
        server_call_cancel(k->pending);
    if (k->pending_grant)
        server_call_cancel(k->pending_grant);
}

static void call_fail(struct node_call *k, int err)
{
    if (k->pending_grant)
        server_call_cancel(k->pending_grant);
    rpc_call_set_user(k->call, NULL);
    svc_finish_err(k->call, err);
}

static void call_finish(struct node_call *k, int code, const char *message)
{
    if (k->pending_grant)
        server_call_cancel(k->pending_grant);
    rpc_call_set_user(k->call, NULL);
    rpc_call_finish(k->call, code, message);
}

static void call_respond(struct node_call *k)
{
    struct arena *a = rpc_call_arena(k->call);
    Etcdserverpb__ResponseHeader *h = svc_header(k->sv, a, k->revision);
    const ProtobufCMessage *m = NULL;
    if (k->pending_grant)
        server_call_cancel(k->pending_grant); /* applied before the Txn: never left, but safe */
    rpc_call_set_user(k->call, NULL);
    switch (k->verb) {
    case VERB_REGISTER: {
        Baton__V1__RegisterResponse *r = arena_alloc(a, sizeof(*r));
        if (r) {
            baton__v1__register_response__init(r);
            r->header = h;
            r->node = k->written;
            r->lease_ttl_ms = k->lease_ttl_s * 1000;
            r->heartbeat_interval_ms = nodes_of(k->sv)->heartbeat_ms;
            m = &r->base;
        }
        break;
    }
    case VERB_DRAIN: {
        Baton__V1__NodeDrainResponse *r = arena_alloc(a, sizeof(*r));
        if (r) {
            baton__v1__node_drain_response__init(r);
            r->header = h;
            r->node = k->written;
            m = &r->base;
        }
        break;
    }
    case VERB_DECOMMISSION: {
        Baton__V1__NodeDecommissionResponse *r = arena_alloc(a, sizeof(*r));
        if (r) {
            baton__v1__node_decommission_response__init(r);
            r->header = h;
            r->node = k->written;
            m = &r->base;
        }
        break;
    }
    default: {
        Baton__V1__NodeRemoveResponse *r = arena_alloc(a, sizeof(*r));
        if (r) {
            baton__v1__node_remove_response__init(r);
            r->header = h;
            m = &r->base;
        }
        break;
    }
    }
    send_and_finish(k->call, h ? m : NULL);
}

static void on_read(void *ctx, int err, const struct server_result *res);

/* A read barrier; on_read continues. */
static void step_barrier(struct node_call *k)
{
    int rc = server_read_barrier(k->sv->s, on_read, k, &k->pending);
    if (rc)
        call_fail(k, rc);
}

static void on_revoked(void *ctx, int err, const struct server_result *res)
{
    (void)res;
    struct node_call *k = ctx;
    k->pending = NULL;
    if (err && err != MVCC_ELEASENOTFOUND) {
        call_fail(k, err);
        return;
    }
    call_respond(k);
}

static void step_revoke(struct node_call *k)
{
    struct request q = {.type = REQ_LEASE_REVOKE};
    q.u.lease_revoke = k->revoke;
    int rc = server_propose(k->sv->s, &q, rpc_call_arena(k->call), on_revoked, k, &k->pending);
    if (rc)
        call_fail(k, rc);
}

static void on_written(void *ctx, int err, const struct server_result *res)
{
    struct node_call *k = ctx;
    k->pending = NULL;
    if (err == MVCC_ELEASENOTFOUND && k->grant_err)
        err = k->grant_err; /* the grant before it failed: say why */
    if (err) {
        call_fail(k, err);
        return;
    }
    if (!res->u.txn.succeeded) {
        /* The record (or the alive key) changed since it was read: read and decide again. */
        if (++k->attempts < WRITE_ATTEMPTS && k->id != 0) {
            defer(k, step_barrier);
            return;
        }
        call_finish(k, GRPC_ABORTED, "baton: node changed concurrently; retry");
        return;
    }
    k->revision = res->revision;
    if (k->revoke) {
        defer(k, step_revoke);
        return;
    }
    call_respond(k);
}

static void on_granted(void *ctx, int err, const struct server_result *res)
{
    struct node_call *k = ctx;
    k->pending_grant = NULL;
    if (err)
        k->grant_err = err;
    else
        k->lease_ttl_s = res->u.lease_grant.ttl_s;
}

/* The record a registration writes: fields from the request over the old record (if any). */
static Baton__V1__Node *reg_record(struct node_call *k, const Baton__V1__Node *old, struct arena *a)
{
    const Baton__V1__RegisterRequest *p = (const Baton__V1__RegisterRequest *)k->req;
    Baton__V1__Node *n = arena_alloc(a, sizeof(*n));
    if (!n)
        return NULL;
    baton__v1__node__init(n);
    int64_t now = wall_ms();
    n->id = old ? old->id : (uint64_t)k->lease;
    n->address = p->address;
    n->labels = p->labels;
    n->n_labels = p->n_labels;
    n->capacity_bytes = p->capacity_bytes;
    n->version = p->version;
    n->lease = k->lease;
    n->epoch = old ? old->epoch : 1;
    n->registered_unix_ms = old ? old->registered_unix_ms : now;
    n->state = BATON__V1__NODE_STATE__NODE_JOINING;
    n->state_changed_unix_ms = now;
    if (old) {
        n->stats = old->stats;
        switch (old->state) {
        case BATON__V1__NODE_STATE__NODE_JOINING:
        case BATON__V1__NODE_STATE__NODE_DECOMMISSIONING:
            n->state = old->state;
            break;
        default: /* up, suspect, down: the registration itself is a sign of life */
            n->state = BATON__V1__NODE_STATE__NODE_UP;
            break;
        }
        if (n->state == old->state)
            n->state_changed_unix_ms = old->state_changed_unix_ms;
    }
    return n;
}

/* Whether lease is gone from this member's store (a follower does not track expiry; the leader
 * also counts an expired lease whose revoke is not applied yet). */
static bool lease_gone(struct services *sv, int64_t lease)
{
    struct mvcc_lease_info info;
    int rc = mvcc_lease_ttl(server_store(sv->s), lease, mono_ms(), false, NULL, &info);
    if (rc == MVCC_ELEASENOTFOUND)
        return true;
    return rc == 0 && nodes_of(sv)->leading && info.ttl_s < 0;
}

/* Proposes a fresh lease and, right behind it, the Txn writing w (whose alive key uses it). */
static void grant_and_write(struct node_call *k, struct node_write *w)
{
    struct nodes *ns = nodes_of(k->sv);
    struct arena *a = rpc_call_arena(k->call);
    struct request q = {.type = REQ_LEASE_GRANT};
    q.u.lease_grant.id = k->lease;
    q.u.lease_grant.ttl_s = ns->lease_ttl_s;
    k->lease_ttl_s = ns->lease_ttl_s;
    k->grant_err = 0;
    int rc = server_propose(k->sv->s, &q, a, on_granted, k, &k->pending_grant);
    if (!rc)
        rc = node_write_propose(k->sv, a, w, on_written, k, &k->pending);
    if (rc)
        call_fail(k, rc);
}

/* A lease id of our choosing (the grant fails, harmlessly, if it is taken). */
static int64_t new_lease_id(struct nodes *ns)
{
    int64_t id;
    do
        id = (int64_t)(prng_next(&ns->prng) & INT64_MAX);
    while (id == 0);
    return id;
}

/* A new node: its id is the id of its first lease. */
static void register_new(struct node_call *k)
{
    struct nodes *ns = nodes_of(k->sv);
    k->lease = new_lease_id(ns);
    Baton__V1__Node *n = reg_record(k, NULL, rpc_call_arena(k->call));
    if (!n) {
        call_fail(k, BATON_ENOMEM);
        return;
    }
    k->written = n;
    struct node_write w = {n, 0, true, k->lease, 0};
    grant_and_write(k, &w);
}

/* Re-registration from the record just read. */
static void rereg_write(struct node_call *k, Baton__V1__Node *old, int64_t mod_rev)
{
    struct arena *a = rpc_call_arena(k->call);
    if (old->state == BATON__V1__NODE_STATE__NODE_REMOVED) {
        call_finish(k, GRPC_FAILED_PRECONDITION, "baton: node was removed");
        return;
    }
    if (old->state == BATON__V1__NODE_STATE__NODE_DECOMMISSIONED) {
        call_finish(k, GRPC_FAILED_PRECONDITION, "baton: node is decommissioned");
        return;
    }
    k->lease = new_lease_id(nodes_of(k->sv));
    Baton__V1__Node *n = reg_record(k, old, a);
    if (!n) {
        call_fail(k, BATON_ENOMEM);
        return;
    }
    struct node_write w = {n, mod_rev, false, k->lease, 0};
    if (old->lease != 0 && lease_gone(k->sv, old->lease)) {
        /* The lease lapsed and nobody declared it yet: this registration does, with the new
         * epoch, so work done under the old one can be fenced. */
        n->epoch = old->epoch + 1;
        w.put_epoch = true;
    } else if (old->lease != 0) {
        /* The old lease must still hold the alive key when this applies, or it lapsed in
         * between (then the compare fails and the next attempt sees it gone). */
        w.expect_alive_lease = old->lease;
    }
    k->written = n;
    grant_and_write(k, &w);
}

/* Drain, Decommission, Remove: the transition from the record just read. */
static void admin_write(struct node_call *k, Baton__V1__Node *old, int64_t mod_rev)
{
    struct arena *a = rpc_call_arena(k->call);
    char msg[160];
    const char *state = cluster_node_state_name(old->state);
    Baton__V1__NodeState to;
    switch (k->verb) {
    case VERB_DRAIN:
        if (old->state == BATON__V1__NODE_STATE__NODE_DECOMMISSIONING) {
            k->written = old; /* draining already */
            call_respond(k);
            return;
        }
        if (old->state != BATON__V1__NODE_STATE__NODE_UP &&
            old->state != BATON__V1__NODE_STATE__NODE_SUSPECT) {
            snprintf(msg, sizeof(msg), "baton: node is %s; drain needs up or suspect", state);
            call_finish(k, GRPC_FAILED_PRECONDITION, msg);
            return;
        }
        to = BATON__V1__NODE_STATE__NODE_DECOMMISSIONING;
        break;
    case VERB_DECOMMISSION:
        if (old->state != BATON__V1__NODE_STATE__NODE_DECOMMISSIONING) {
            snprintf(msg, sizeof(msg),
                     "baton: node is %s; decommission needs decommissioning (drain it first)",
                     state);
            call_finish(k, GRPC_FAILED_PRECONDITION, msg);
            return;
        }
        to = BATON__V1__NODE_STATE__NODE_DECOMMISSIONED;
        break;
    default:
        if (old->state == BATON__V1__NODE_STATE__NODE_REMOVED) {
            call_respond(k); /* removed already: Remove is idempotent */
            return;
        }
        to = BATON__V1__NODE_STATE__NODE_REMOVED;
        break;
    }
    Baton__V1__Node *n = node_copy(a, old);
    if (!n) {
        call_fail(k, BATON_ENOMEM);
        return;
    }
    n->state = to;
    n->state_changed_unix_ms = wall_ms();
    k->revoke = 0;
    if (to != BATON__V1__NODE_STATE__NODE_DECOMMISSIONING) {
        k->revoke = old->lease; /* a stopped node holds no lease */
        n->lease = 0;
    }
    k->written = n;
    struct node_write w = {n, mod_rev, false, 0, 0};
    int rc = node_write_propose(k->sv, a, &w, on_written, k, &k->pending);
    if (rc)
        call_fail(k, rc);
}

static bool labels_match(const Baton__V1__Node *n, Baton__V1__Label *const *want, size_t want_len)
{
    for (size_t i = 0; i < want_len; i++) {
        bool found = false;
        for (size_t j = 0; j < n->n_labels && !found; j++)
            found = strcmp(n->labels[j]->key, want[i]->key) == 0 &&
                    strcmp(n->labels[j]->value, want[i]->value) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* List: every record under the prefix that matches the filter, in id order. */
static void list_respond(struct node_call *k)
{
    const Baton__V1__NodeListRequest *p = (const Baton__V1__NodeListRequest *)k->req;
    struct arena *a = rpc_call_arena(k->call);
    static const char prefix[] = CLUSTER_NODES_PREFIX, end[] = "/baton/nodes0";
    size_t cap = 64, n = 0;
    Baton__V1__Node **nodes = arena_alloc(a, cap * sizeof(*nodes));
    uint8_t from[CLUSTER_KEY_MAX + 8];
    size_t from_len = sizeof(prefix) - 1;
    memcpy(from, prefix, from_len);
    int64_t rev = 0;
    for (int rc = nodes ? 0 : BATON_ENOMEM;; rc = 0) {
        struct mvcc_range_req q = {.key = {from, from_len},
                                   .range_end = {(const uint8_t *)end, sizeof(end) - 1},
                                   .limit = LIST_PAGE,
                                   .revision = rev};
        struct mvcc_range_resp r;
        if (!rc)
            rc = mvcc_range(server_store(k->sv->s), &q, a, &r);
        if (rc) {
            call_fail(k, rc);
            return;
        }
        rev = r.header_revision;
        for (size_t i = 0; i < r.kvs_len; i++) {
            uint64_t id;
            enum cluster_key_kind kind;
            if (!cluster_parse_key(r.kvs[i].key.p, r.kvs[i].key.len, &id, &kind) ||
                kind != CLUSTER_KEY_NODE)
                continue;
            Baton__V1__Node *nd = (Baton__V1__Node *)rpc_unpack(
                &baton__v1__node__descriptor, a, r.kvs[i].value.p, r.kvs[i].value.len);
            if (!nd || (p->state && nd->state != p->state) ||
                !labels_match(nd, p->labels, p->n_labels))
                continue;
            if (n == cap) {
                Baton__V1__Node **g = arena_alloc(a, 2 * cap * sizeof(*g));
                if (!g) {
                    call_fail(k, BATON_ENOMEM);
                    return;
                }
                memcpy(g, nodes, cap * sizeof(*g));
                nodes = g;
                cap *= 2;
            }
            nodes[n++] = nd;
        }
        if (!r.more || r.kvs_len == 0)
            break;
        const struct mvcc_bytes *last = &r.kvs[r.kvs_len - 1].key;
        if (last->len + 1 > sizeof(from)) {
            call_fail(k, BATON_ECORRUPT);
            return;
        }
        memcpy(from, last->p, last->len);
        from[last->len] = 0;
        from_len = last->len + 1;
    }
    Baton__V1__NodeListResponse *m = arena_alloc(a, sizeof(*m));
    if (m) {
        baton__v1__node_list_response__init(m);
        m->header = svc_header(k->sv, a, rev);
        m->nodes = nodes;
        m->n_nodes = n;
    }
    rpc_call_set_user(k->call, NULL);
    send_and_finish(k->call, m && m->header ? &m->base : NULL);
}

/* After the read barrier (deferred for writes): read the record and act. */
static void step_after_read(struct node_call *k)
{
    struct arena *a = rpc_call_arena(k->call);
    if (k->verb == VERB_LIST) {
        list_respond(k);
        return;
    }
    Baton__V1__Node *old;
    int64_t mod_rev = 0;
    int rc = node_read(k->sv, k->id, a, &old, &mod_rev);
    if (rc) {
        call_fail(k, rc);
        return;
    }
    if (!old) {
        call_finish(k, GRPC_NOT_FOUND, "baton: node not found");
        return;
    }
    if (k->verb == VERB_GET) {
        Baton__V1__NodeGetResponse *m = arena_alloc(a, sizeof(*m));
        if (m) {
            baton__v1__node_get_response__init(m);
            m->header = svc_header(k->sv, a, 0);
            m->node = old;
        }
        rpc_call_set_user(k->call, NULL);
        send_and_finish(k->call, m && m->header ? &m->base : NULL);
    } else if (k->verb == VERB_REGISTER) {
        rereg_write(k, old, mod_rev);
    } else {
        admin_write(k, old, mod_rev);
    }
}

static void on_read(void *ctx, int err, const struct server_result *res)
{
    (void)res;
    struct node_call *k = ctx;
    k->pending = NULL;
    if (err) {
        call_fail(k, err);
        return;
    }
    if (k->verb == VERB_GET || k->verb == VERB_LIST)
        step_after_read(k); /* reads only: safe inside the callback */
    else
        defer(k, step_after_read);
}

static struct node_call *call_new(struct services *sv, struct rpc_call *call, enum node_verb v,
                                  const ProtobufCMessage *msg, uint64_t id)
{
    run_deferred(nodes_of(sv));
    struct node_call *k = arena_alloc(rpc_call_arena(call), sizeof(*k));
    if (!k) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return NULL;
    }
    memset(k, 0, sizeof(*k));
    k->sv = sv;
    k->call = call;
    k->verb = v;
    k->req = msg;
    k->id = id;
    rpc_call_set_user(call, k);
    return k;
}

static void call_step(struct node_call *k)
{
    if (k->verb == VERB_REGISTER && k->id == 0)
        register_new(k);
    else
        step_barrier(k);
}

static void on_register(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Baton__V1__RegisterRequest *p = (const Baton__V1__RegisterRequest *)msg;
    char err[256];
    int rc = cluster_validate_address(p->address, err, sizeof(err));
    if (!rc) {
        struct arena *a = rpc_call_arena(call);
        struct cluster_label *ls = arena_alloc(a, (p->n_labels ? p->n_labels : 1) * sizeof(*ls));
        if (!ls) {
            rpc_call_finish_err(call, BATON_ENOMEM);
            return;
        }
        for (size_t i = 0; i < p->n_labels; i++)
            ls[i] = (struct cluster_label){p->labels[i]->key, p->labels[i]->value};
        rc = cluster_validate_labels(ls, p->n_labels, err, sizeof(err));
    }
    if (!rc)
        rc = cluster_validate_version(p->version, err, sizeof(err));
    if (rc) {
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT, err);
        return;
    }
    struct node_call *k = call_new(ctx, call, VERB_REGISTER, msg, p->id);
    if (k)
        call_step(k);
}

static void on_get(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct node_call *k =
        call_new(ctx, call, VERB_GET, msg, ((const Baton__V1__NodeGetRequest *)msg)->id);
    if (k)
        call_step(k);
}

static void on_list(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Baton__V1__NodeListRequest *p = (const Baton__V1__NodeListRequest *)msg;
    if (p->state < 0 || p->state > BATON__V1__NODE_STATE__NODE_DECOMMISSIONED) {
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT, "baton: unknown node state");
        return;
    }
    struct node_call *k = call_new(ctx, call, VERB_LIST, msg, 0);
    if (k)
        call_step(k);
}

static void on_drain(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct node_call *k =
        call_new(ctx, call, VERB_DRAIN, msg, ((const Baton__V1__NodeDrainRequest *)msg)->id);
    if (k)
        call_step(k);
}

static void on_decommission(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct node_call *k = call_new(ctx, call, VERB_DECOMMISSION, msg,
                                   ((const Baton__V1__NodeDecommissionRequest *)msg)->id);
    if (k)
        call_step(k);
}

static void on_remove(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct node_call *k =
        call_new(ctx, call, VERB_REMOVE, msg, ((const Baton__V1__NodeRemoveRequest *)msg)->id);
    if (k)
        call_step(k);
}

/* ---- Registration ------------------------------------------------------------------------- */

size_t svc_nodes_watchers(const struct services *sv)
{
    return sv->nodes && sv->nodes->watching ? 1 : 0;
}

void svc_nodes_destroy(struct services *sv)
{
    struct nodes *ns = nodes_of(sv);
    if (!ns)
        return;
    while (ns->streams)
        hb_detach(ns->streams);
    /* Deferred steps are dropped: their calls are cancelled when the connections close. */
    while (ns->deferred) {
        struct node_call *k = ns->deferred;
        ns->deferred = k->dnext;
        k->deferred = false;
    }
    ns->deferred_tail = NULL;
    /* Proposals in flight: cancelled, so their callbacks never run. */
    while (ns->ops) {
        struct transition_op *op = ns->ops;
        server_call_cancel(op->pending);
        op_unlink_free(op);
    }
    watch_stop(ns);
    cluster_liveness_destroy(ns->lv);
    arena_free(&ns->scratch);
    free(ns);
    sv->nodes = NULL;
}

int svc_nodes_register(struct services *sv)
{
    struct nodes *ns = calloc(1, sizeof(*ns));
    if (!ns)
        return BATON_ENOMEM;
    ns->sv = sv;
    uint32_t ttl_ms = sv->cfg.node_lease_ttl_ms ? sv->cfg.node_lease_ttl_ms : 10000;
    ns->heartbeat_ms = sv->cfg.node_heartbeat_ms ? sv->cfg.node_heartbeat_ms : 1000;
    ns->lease_ttl_s = (ttl_ms + 999) / 1000; /* etcd's leases count whole seconds */
    cluster_liveness_config_default(&ns->lcfg);
    ns->lcfg.lease_ttl_ms = (uint32_t)ns->lease_ttl_s * 1000;
    ns->lcfg.phi.expected_interval_ms = ns->heartbeat_ms;
    ns->lcfg.phi.min_std_ms = ns->heartbeat_ms / 4;
    ns->lcfg.phi.acceptable_pause_ms = ns->heartbeat_ms;
    arena_init(&ns->scratch, 16384);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct server_header sh;
    server_header(sv->s, &sh);
    prng_seed(&ns->prng, sh.member_id ^ (uint64_t)ts.tv_sec * 1000000000u ^ (uint64_t)ts.tv_nsec);
    int rc = cluster_liveness_create(&ns->lcfg, &ns->lv);
    if (rc) {
        free(ns);
        return rc;
    }
    sv->nodes = ns;
    const struct rpc_method methods[] = {
        {"/baton.v1.Nodes/RegisterNode", RPC_UNARY, &baton__v1__register_request__descriptor, NULL,
         on_register, NULL, NULL, on_unary_cancel, sv},
        {"/baton.v1.Nodes/Heartbeat", RPC_BIDI_STREAMING, &baton__v1__heartbeat_request__descriptor,
         on_hb_start, on_hb_message, on_hb_half_close, NULL, on_hb_cancel, sv},
        {"/baton.v1.Nodes/Get", RPC_UNARY, &baton__v1__node_get_request__descriptor, NULL, on_get,
         NULL, NULL, on_unary_cancel, sv},
        {"/baton.v1.Nodes/List", RPC_UNARY, &baton__v1__node_list_request__descriptor, NULL,
         on_list, NULL, NULL, on_unary_cancel, sv},
        {"/baton.v1.Nodes/Drain", RPC_UNARY, &baton__v1__node_drain_request__descriptor, NULL,
         on_drain, NULL, NULL, on_unary_cancel, sv},
        {"/baton.v1.Nodes/Decommission", RPC_UNARY,
         &baton__v1__node_decommission_request__descriptor, NULL, on_decommission, NULL, NULL,
         on_unary_cancel, sv},
        {"/baton.v1.Nodes/Remove", RPC_UNARY, &baton__v1__node_remove_request__descriptor, NULL,
         on_remove, NULL, NULL, on_unary_cancel, sv},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(methods); i++) {
        rc = rpc_server_register(sv->rs, &methods[i]);
        if (rc)
            return rc; /* services_create's failure path calls svc_nodes_destroy */
    }
    return 0;
}
