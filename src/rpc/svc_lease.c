/*
 * etcdserverpb.Lease: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases
 * (etcd's v3rpc/lease.go).
 *
 * Grant and revoke are proposals. Keep-alive and time-to-live are leader-only operations
 * (server_lease_keepalive / server_lease_ttl forward from followers). A keep-alive stream
 * answers each request with the lease id and its TTL, 0 when the lease is gone, as etcd does;
 * the keep-alives in flight per stream are bounded.
 */
#include "rpc/svc.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Unanswered keep-alives one stream may hold. etcd's clients put every lease on one stream
 * (100,000 leases renewed every 3 s is 33,000 a second on it), so the bound must leave room for
 * a burst of a whole renewal round on a loaded leader (64 cut real clients off: lease-scale
 * lost 30% of 100,000 leases); past it renewals are dropped unanswered and the stream goes on.
 * About 200 bytes each. */
#define KEEPALIVES_IN_FLIGHT_MAX 8192

/* etcd's codes for the lease errors (rpctypes) differ from the generic mapping in svc_kv.c. */
static void lease_finish_err(struct rpc_call *call, int err)
{
    if (err == MVCC_ELEASEEXISTS) {
        struct rpc_status s = rpc_etcd_status(RPC_ETCD_LEASE_EXIST);
        rpc_call_finish(call, s.code, s.message);
    } else if (err == MVCC_ELEASETTLTOOLARGE) {
        struct rpc_status s = rpc_etcd_status(RPC_ETCD_LEASE_TTL_TOO_LARGE);
        rpc_call_finish(call, s.code, s.message);
    } else if (err == MVCC_ELEASENOTFOUND) {
        struct rpc_status s = rpc_etcd_status(RPC_ETCD_LEASE_NOT_FOUND);
        rpc_call_finish(call, s.code, s.message);
    } else {
        svc_finish_err(call, err);
    }
}

static void send_and_finish(struct rpc_call *call, const ProtobufCMessage *m)
{
    int rc = m ? rpc_call_send(call, m) : BATON_ENOMEM;
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

/* ---- Unary calls -------------------------------------------------------------------------------
 */

struct lease_call {
    struct services *sv;
    struct rpc_call *call;
    struct server_call *pending;
    enum req_type type;
    int64_t id;
    bool keys;
};

static struct lease_call *lease_call_new(struct services *sv, struct rpc_call *call)
{
    struct lease_call *k = arena_alloc(rpc_call_arena(call), sizeof(*k));
    if (k) {
        memset(k, 0, sizeof(*k));
        k->sv = sv;
        k->call = call;
        rpc_call_set_user(call, k);
    }
    return k;
}

static void on_unary_cancel(struct rpc_call *call, int code, void *ctx)
{
    struct lease_call *k = rpc_call_user(call);
    if (k && k->pending)
        server_call_cancel(k->pending);
}

static void on_proposed(void *ctx, int err, const struct server_result *res)
{
    struct lease_call *k = ctx;
    struct rpc_call *call = k->call;
    struct arena *a = rpc_call_arena(call);
    rpc_call_set_user(call, NULL);
    if (err) {
        lease_finish_err(call, err);
        return;
    }
    if (k->type == REQ_LEASE_GRANT) {
        Etcdserverpb__LeaseGrantResponse *m = arena_alloc(a, sizeof(*m));
        if (m) {
            etcdserverpb__lease_grant_response__init(m);
            m->header = svc_header(k->sv, a, res->revision);
            m->id = res->u.lease_grant.id;
            m->ttl = res->u.lease_grant.ttl_s;
        }
        send_and_finish(call, m && m->header ? &m->base : NULL);
    } else {
        Etcdserverpb__LeaseRevokeResponse *m = arena_alloc(a, sizeof(*m));
        if (m) {
            etcdserverpb__lease_revoke_response__init(m);
            m->header = svc_header(k->sv, a, res->revision);
        }
        send_and_finish(call, m && m->header ? &m->base : NULL);
    }
}

static void propose(struct services *sv, struct rpc_call *call, struct request *q)
{
    struct lease_call *k = lease_call_new(sv, call);
    if (!k) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    k->type = q->type;
    int rc = server_propose(sv->s, q, rpc_call_arena(call), on_proposed, k, &k->pending);
    if (rc) {
        rpc_call_set_user(call, NULL);
        lease_finish_err(call, rc);
    }
}

static void on_grant(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Etcdserverpb__LeaseGrantRequest *p = (const Etcdserverpb__LeaseGrantRequest *)msg;
    /* etcd refuses a too large TTL before proposing (lessor.Grant checks it again). */
    if (p->ttl > MVCC_MAX_LEASE_TTL) {
        lease_finish_err(call, MVCC_ELEASETTLTOOLARGE);
        return;
    }
    struct request q = {.type = REQ_LEASE_GRANT};
    q.u.lease_grant.id = p->id;
    q.u.lease_grant.ttl_s = p->ttl;
    propose(ctx, call, &q);
}

static void on_revoke(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Etcdserverpb__LeaseRevokeRequest *p = (const Etcdserverpb__LeaseRevokeRequest *)msg;
    struct request q = {.type = REQ_LEASE_REVOKE};
    q.u.lease_revoke = p->id;
    propose(ctx, call, &q);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_ttl_done(void *ctx, int err, int64_t ttl, int64_t granted)
{
    struct lease_call *k = ctx;
    struct rpc_call *call = k->call;
    struct arena *a = rpc_call_arena(call);
    rpc_call_set_user(call, NULL);
    if (err && err != MVCC_ELEASENOTFOUND) {
        lease_finish_err(call, err);
        return;
    }
    Etcdserverpb__LeaseTimeToLiveResponse *m = arena_alloc(a, sizeof(*m));
    if (!m) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    etcdserverpb__lease_time_to_live_response__init(m);
    m->header = svc_header(k->sv, a, 0);
    m->id = k->id;
    if (err) {
        m->ttl = -1; /* etcd: a lease that is gone answers TTL -1, not an error */
        send_and_finish(call, m->header ? &m->base : NULL);
        return;
    }
    m->ttl = ttl;
    m->grantedttl = granted;
    if (k->keys) {
        /* The attached keys come from this member's store (applied state). */
        struct mvcc_lease_info info;
        int rc = mvcc_lease_ttl(server_store(k->sv->s), k->id, now_ms(), true, a, &info);
        if (rc == 0 && info.keys_len) {
            m->keys = arena_alloc(a, info.keys_len * sizeof(*m->keys));
            if (!m->keys) {
                rpc_call_finish_err(call, BATON_ENOMEM);
                return;
            }
            for (size_t i = 0; i < info.keys_len; i++)
                m->keys[i] = (ProtobufCBinaryData){info.keys[i].len, (uint8_t *)info.keys[i].p};
            m->n_keys = info.keys_len;
        }
    }
    send_and_finish(call, m->header ? &m->base : NULL);
}

static void on_ttl(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const Etcdserverpb__LeaseTimeToLiveRequest *p =
        (const Etcdserverpb__LeaseTimeToLiveRequest *)msg;
    struct lease_call *k = lease_call_new(sv, call);
    if (!k) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    k->id = p->id;
    k->keys = p->keys;
    int rc = server_lease_ttl(sv->s, p->id, on_ttl_done, k, &k->pending);
    if (rc) {
        rpc_call_set_user(call, NULL);
        lease_finish_err(call, rc);
    }
}

static void on_leases(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    struct arena *a = rpc_call_arena(call);
    int64_t *ids;
    size_t n;
    int rc = mvcc_lease_list(server_store(sv->s), a, &ids, &n);
    if (rc) {
        svc_finish_err(call, rc);
        return;
    }
    Etcdserverpb__LeaseLeasesResponse *m = arena_alloc(a, sizeof(*m));
    Etcdserverpb__LeaseStatus **ls = n ? arena_alloc(a, n * sizeof(*ls)) : NULL;
    Etcdserverpb__LeaseStatus *st = n ? arena_alloc(a, n * sizeof(*st)) : NULL;
    if (!m || (n && (!ls || !st))) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    etcdserverpb__lease_leases_response__init(m);
    m->header = svc_header(sv, a, 0);
    for (size_t i = 0; i < n; i++) {
        etcdserverpb__lease_status__init(&st[i]);
        st[i].id = ids[i];
        ls[i] = &st[i];
    }
    m->leases = ls;
    m->n_leases = n;
    send_and_finish(call, m->header ? &m->base : NULL);
}

/* ---- Keep-alive streams ------------------------------------------------------------------------
 */

struct ka_stream;

struct ka_op {
    struct ka_stream *st;
    struct ka_op *prev, *next;
    struct server_call *pending;
    int64_t id;
};

struct ka_stream {
    struct services *sv; /* NULL once services_destroy ran */
    struct rpc_call *call;
    struct ka_stream *prev, *next;
    struct ka_op *ops;
    size_t ops_len;
};

static void ka_op_unlink(struct ka_op *op)
{
    struct ka_stream *st = op->st;
    if (op->prev)
        op->prev->next = op->next;
    else
        st->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    st->ops_len--;
    free(op);
}

/* Cancels the keep-alives in flight and leaves the services' list. */
static void ka_detach(struct ka_stream *st)
{
    while (st->ops) {
        server_call_cancel(st->ops->pending);
        ka_op_unlink(st->ops);
    }
    if (!st->sv)
        return;
    if (st->prev)
        st->prev->next = st->next;
    else
        st->sv->ka_streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    st->sv = NULL;
}

static void ka_end(struct ka_stream *st, int err)
{
    struct rpc_call *call = st->call;
    rpc_call_set_user(call, NULL);
    ka_detach(st);
    free(st);
    lease_finish_err(call, err);
}

static void on_ka_done(void *ctx, int err, int64_t ttl, int64_t granted)
{
    struct ka_op *op = ctx;
    struct ka_stream *st = op->st;
    int64_t id = op->id;
    ka_op_unlink(op);
    if (err == MVCC_ELEASENOTFOUND) {
        ttl = 0; /* etcd: the lease is gone, answered with TTL 0 */
        err = 0;
    }
    if (err) {
        ka_end(st, err);
        return;
    }
    Etcdserverpb__ResponseHeader h;
    svc_header_fill(st->sv, &h, 0);
    Etcdserverpb__LeaseKeepAliveResponse m = ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
    m.header = &h;
    m.id = id;
    m.ttl = ttl;
    int rc = rpc_call_send(st->call, &m.base);
    /* BATON_EBUSY: the client does not read its answers; dropping one is harmless (the next
     * keep-alive gets a fresh one) and keeps memory bounded. */
    if (rc && rc != BATON_EBUSY)
        ka_end(st, rc);
}

static void on_ka_start(struct rpc_call *call, void *ctx)
{
    struct services *sv = ctx;
    struct ka_stream *st = calloc(1, sizeof(*st));
    if (!st) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    st->sv = sv;
    st->call = call;
    st->next = sv->ka_streams;
    if (st->next)
        st->next->prev = st;
    sv->ka_streams = st;
    rpc_call_set_user(call, st);
}

static void on_ka_message(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct ka_stream *st = rpc_call_user(call);
    if (!st || !st->sv)
        return;
    const Etcdserverpb__LeaseKeepAliveRequest *p = (const Etcdserverpb__LeaseKeepAliveRequest *)msg;
    if (st->ops_len >= KEEPALIVES_IN_FLIGHT_MAX) {
        /* The member is that far behind on this stream: this renewal is dropped unanswered
         * (memory stays bounded) and the stream goes on, so the client's next renewal of the
         * lease still counts. Ending the stream would stop every lease on it at once. */
        return;
    }
    struct ka_op *op = calloc(1, sizeof(*op));
    if (!op) {
        ka_end(st, BATON_ENOMEM);
        return;
    }
    op->st = st;
    op->id = p->id;
    op->next = st->ops;
    if (op->next)
        op->next->prev = op;
    st->ops = op;
    st->ops_len++;
    int rc = server_lease_keepalive(st->sv->s, p->id, on_ka_done, op, &op->pending);
    if (rc) {
        ka_op_unlink(op);
        ka_end(st, rc);
    }
}

static void on_ka_cancel(struct rpc_call *call, int code, void *ctx)
{
    struct ka_stream *st = rpc_call_user(call);
    if (st) {
        ka_detach(st);
        free(st);
    }
}

void svc_lease_destroy(struct services *sv)
{
    while (sv->ka_streams)
        ka_detach(sv->ka_streams);
}

int svc_lease_register(struct services *sv)
{
    const struct rpc_method methods[] = {
        {"/etcdserverpb.Lease/LeaseGrant", RPC_UNARY,
         &etcdserverpb__lease_grant_request__descriptor, NULL, on_grant, NULL, NULL,
         on_unary_cancel, sv},
        {"/etcdserverpb.Lease/LeaseRevoke", RPC_UNARY,
         &etcdserverpb__lease_revoke_request__descriptor, NULL, on_revoke, NULL, NULL,
         on_unary_cancel, sv},
        {"/etcdserverpb.Lease/LeaseTimeToLive", RPC_UNARY,
         &etcdserverpb__lease_time_to_live_request__descriptor, NULL, on_ttl, NULL, NULL,
         on_unary_cancel, sv},
        {"/etcdserverpb.Lease/LeaseLeases", RPC_UNARY,
         &etcdserverpb__lease_leases_request__descriptor, NULL, on_leases, NULL, NULL,
         on_unary_cancel, sv},
        {"/etcdserverpb.Lease/LeaseKeepAlive", RPC_BIDI_STREAMING,
         &etcdserverpb__lease_keep_alive_request__descriptor, on_ka_start, on_ka_message, NULL,
         NULL, on_ka_cancel, sv},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(methods); i++) {
        int rc = rpc_server_register(sv->rs, &methods[i]);
        if (rc)
            return rc;
    }
    return 0;
}
