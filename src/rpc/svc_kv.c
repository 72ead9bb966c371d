/*
 * etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact.
 *
 * Writes become proposals (server_propose) answered when this member applies them. Ranges are
 * serializable (served from the local store at once) or linearizable (after a ReadIndex round
 * and the apply reaching its index). Range responses are encoded by hand: the stored values are
 * already packed mvccpb.KeyValue messages, so they are copied once, from LMDB's map straight
 * into the call's output queue, and never decoded.
 */
#include "rpc/svc.h"

#include <string.h>

/* ---- Shared helpers ----------------------------------------------------------------------------
 */

void svc_header_fill(struct services *sv, Etcdserverpb__ResponseHeader *h, int64_t rev)
{
    etcdserverpb__response_header__init(h);
    struct server_header sh;
    server_header(sv->s, &sh);
    h->cluster_id = sh.cluster_id;
    h->member_id = sh.member_id;
    h->revision = rev > 0 ? rev : sh.revision;
    h->raft_term = sh.term;
}

Etcdserverpb__ResponseHeader *svc_header(struct services *sv, struct arena *a, int64_t rev)
{
    Etcdserverpb__ResponseHeader *h = arena_alloc(a, sizeof(*h));
    if (h)
        svc_header_fill(sv, h, rev);
    return h;
}

Mvccpb__KeyValue *svc_kv(struct arena *a, const struct mvcc_kv *kv)
{
    Mvccpb__KeyValue *m = arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    mvccpb__key_value__init(m);
    m->key = (ProtobufCBinaryData){kv->key.len, (uint8_t *)kv->key.p};
    m->value = (ProtobufCBinaryData){kv->value.len, (uint8_t *)kv->value.p};
    m->create_revision = kv->create_revision;
    m->mod_revision = kv->mod_revision;
    m->version = kv->version;
    m->lease = kv->lease;
    return m;
}

struct mvcc_bytes svc_bytes(ProtobufCBinaryData b)
{
    return (struct mvcc_bytes){b.data, b.len};
}

void svc_finish_err(struct rpc_call *call, int err)
{
    const char *text = mvcc_strerror(err);
    struct rpc_status st = rpc_status_from_err(err);
    /* mvcc's request errors carry etcd's text; rpc knows the code for the common ones. */
    if (err <= MVCC_EDUPKEY && err >= MVCC_ETOOMANYOPS) {
        st.code = err == MVCC_ELEASENOTFOUND ? GRPC_NOT_FOUND : GRPC_INVALID_ARGUMENT;
        st.message = text;
    }
    rpc_call_finish(call, st.code, st.message);
}

/* ---- Translation -------------------------------------------------------------------------------
 */

static void range_from_pb(const Etcdserverpb__RangeRequest *p, struct mvcc_range_req *q)
{
    memset(q, 0, sizeof(*q));
    q->key = svc_bytes(p->key);
    q->range_end = svc_bytes(p->range_end);
    q->limit = p->limit;
    q->revision = p->revision;
    q->sort_order = (enum mvcc_sort_order)p->sort_order;
    q->sort_target = (enum mvcc_sort_target)p->sort_target;
    q->keys_only = p->keys_only;
    q->count_only = p->count_only;
    q->min_mod_revision = p->min_mod_revision;
    q->max_mod_revision = p->max_mod_revision;
    q->min_create_revision = p->min_create_revision;
    q->max_create_revision = p->max_create_revision;
}

static void put_from_pb(const Etcdserverpb__PutRequest *p, struct mvcc_put_req *q)
{
    *q = (struct mvcc_put_req){svc_bytes(p->key), svc_bytes(p->value), p->lease,
                               p->prev_kv,        p->ignore_value,     p->ignore_lease};
}

static void delete_from_pb(const Etcdserverpb__DeleteRangeRequest *p, struct mvcc_delete_req *q)
{
    *q = (struct mvcc_delete_req){svc_bytes(p->key), svc_bytes(p->range_end), p->prev_kv};
}

/* etcd's checks on a range request (v3rpc/key.go checkRangeRequest). */
static int range_check(const Etcdserverpb__RangeRequest *p)
{
    if (p->key.len == 0)
        return MVCC_EEMPTYKEY;
    if ((unsigned)p->sort_order > ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND ||
        (unsigned)p->sort_target > ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE)
        return BATON_EINVAL;
    return 0;
}

static int txn_from_pb(const Etcdserverpb__TxnRequest *p, struct arena *a, struct mvcc_txn_req *t,
                       int depth);

static int ops_from_pb(Etcdserverpb__RequestOp **ops, size_t n, struct arena *a,
                       const struct mvcc_op **out, int depth)
{
    struct mvcc_op *o = n ? arena_alloc(a, n * sizeof(*o)) : NULL;
    if (n && !o)
        return BATON_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        memset(&o[i], 0, sizeof(o[i]));
        switch (ops[i]->request_case) {
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
            if (range_check(ops[i]->request_range))
                return range_check(ops[i]->request_range);
            o[i].type = MVCC_OP_RANGE;
            range_from_pb(ops[i]->request_range, &o[i].u.range);
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
            o[i].type = MVCC_OP_PUT;
            put_from_pb(ops[i]->request_put, &o[i].u.put);
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
            o[i].type = MVCC_OP_DELETE;
            delete_from_pb(ops[i]->request_delete_range, &o[i].u.del);
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN: {
            struct mvcc_txn_req *t = arena_alloc(a, sizeof(*t));
            if (!t)
                return BATON_ENOMEM;
            int rc = txn_from_pb(ops[i]->request_txn, a, t, depth + 1);
            if (rc)
                return rc;
            o[i].type = MVCC_OP_TXN;
            o[i].u.txn = t;
            break;
        }
        default:
            return BATON_EINVAL; /* an empty RequestOp */
        }
    }
    *out = o;
    return 0;
}

static int txn_from_pb(const Etcdserverpb__TxnRequest *p, struct arena *a, struct mvcc_txn_req *t,
                       int depth)
{
    if (depth >= REQ_TXN_DEPTH_MAX)
        return MVCC_ETOOMANYOPS;
    memset(t, 0, sizeof(*t));
    struct mvcc_compare *c = p->n_compare ? arena_alloc(a, p->n_compare * sizeof(*c)) : NULL;
    if (p->n_compare && !c)
        return BATON_ENOMEM;
    for (size_t i = 0; i < p->n_compare; i++) {
        const Etcdserverpb__Compare *pc = p->compare[i];
        memset(&c[i], 0, sizeof(c[i]));
        if ((unsigned)pc->result > ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL ||
            (unsigned)pc->target > ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE)
            return BATON_EINVAL;
        c[i].result = (enum mvcc_cmp_result)pc->result;
        c[i].target = (enum mvcc_cmp_target)pc->target;
        c[i].key = svc_bytes(pc->key);
        c[i].range_end = svc_bytes(pc->range_end);
        switch (pc->target_union_case) {
        case ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION:
            c[i].number = pc->version;
            break;
        case ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION:
            c[i].number = pc->create_revision;
            break;
        case ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION:
            c[i].number = pc->mod_revision;
            break;
        case ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE:
            c[i].number = pc->lease;
            break;
        case ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE:
            c[i].value = svc_bytes(pc->value);
            break;
        default:
            break; /* unset: compares against zero / empty, as etcd does */
        }
    }
    t->compare = c;
    t->compare_len = p->n_compare;
    int rc = ops_from_pb(p->success, p->n_success, a, &t->success, depth);
    rc = rc ? rc : ops_from_pb(p->failure, p->n_failure, a, &t->failure, depth);
    t->success_len = p->n_success;
    t->failure_len = p->n_failure;
    return rc;
}

/* ---- Responses ---------------------------------------------------------------------------------
 */

static size_t pb_field_len(size_t payload)
{
    return 1 + varint_len(payload) + payload;
}

static uint8_t *pb_put_tag_len(uint8_t *p, unsigned field, size_t len)
{
    *p++ = (uint8_t)(field << 3 | 2);
    return p + varint_put(p, len);
}

static uint8_t *pb_put_varint_field(uint8_t *p, unsigned field, uint64_t v)
{
    if (!v)
        return p;
    *p++ = (uint8_t)(field << 3);
    return p + varint_put(p, v);
}

/* A Range response encoded straight into the call's output queue from the records LMDB maps:
 * RangeResponse { header = 1; repeated KeyValue kvs = 2; bool more = 3; int64 count = 4 }, the
 * stored values being packed mvccpb.KeyValue messages already. The response exists once, in
 * the output queue; a member serving many large ranges at once holds each one once. */
struct range_enc {
    const Etcdserverpb__ResponseHeader *h;
    size_t hlen;
    const struct mvcc_range_resp *r;
};

static void range_fill(void *ctx, uint8_t *msg, size_t len)
{
    const struct range_enc *e = ctx;
    const struct mvcc_range_resp *r = e->r;
    uint8_t *p = pb_put_tag_len(msg, 1, e->hlen);
    p += etcdserverpb__response_header__pack(e->h, p);
    for (size_t i = 0; i < r->kvs_len; i++) {
        p = pb_put_tag_len(p, 2, r->kvs[i].packed_len);
        memcpy(p, r->kvs[i].packed, r->kvs[i].packed_len);
        p += r->kvs[i].packed_len;
    }
    p = pb_put_varint_field(p, 3, r->more);
    p = pb_put_varint_field(p, 4, (uint64_t)r->count);
    BATON_ASSERT((size_t)(p - msg) == len);
}

struct range_ctx {
    struct services *sv;
    struct rpc_call *call;
    struct arena *a;
    int send_rc;
};

/* mvcc_range_borrow's callback: the records stay mapped while it runs. */
static int range_emit(void *ctx, const struct mvcc_range_resp *r)
{
    struct range_ctx *rc = ctx;
    struct range_enc e = {.r = r};
    Etcdserverpb__ResponseHeader *h = svc_header(rc->sv, rc->a, r->header_revision);
    if (!h)
        return BATON_ENOMEM;
    e.h = h;
    e.hlen = etcdserverpb__response_header__get_packed_size(h);
    size_t total = pb_field_len(e.hlen);
    for (size_t i = 0; i < r->kvs_len; i++)
        total += pb_field_len(r->kvs[i].packed_len);
    total += (r->more ? 2 : 0) + (r->count ? 1 + varint_len((uint64_t)r->count) : 0);
    rc->send_rc = rpc_call_send_fill(rc->call, total, range_fill, &e);
    return rc->send_rc;
}

static Etcdserverpb__RangeResponse *range_pb(struct services *sv, struct arena *a,
                                             const struct mvcc_range_resp *r)
{
    Etcdserverpb__RangeResponse *m = arena_alloc(a, sizeof(*m));
    Mvccpb__KeyValue **kvs = r->kvs_len ? arena_alloc(a, r->kvs_len * sizeof(*kvs)) : NULL;
    if (!m || (r->kvs_len && !kvs))
        return NULL;
    etcdserverpb__range_response__init(m);
    m->header = svc_header(sv, a, r->header_revision);
    for (size_t i = 0; i < r->kvs_len; i++)
        if (!(kvs[i] = svc_kv(a, &r->kvs[i])))
            return NULL;
    m->kvs = kvs;
    m->n_kvs = r->kvs_len;
    m->more = r->more;
    m->count = r->count;
    return m->header ? m : NULL;
}

static Etcdserverpb__PutResponse *put_pb(struct services *sv, struct arena *a,
                                         const struct mvcc_put_resp *r)
{
    Etcdserverpb__PutResponse *m = arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    etcdserverpb__put_response__init(m);
    m->header = svc_header(sv, a, r->header_revision);
    m->prev_kv = r->prev_kv ? svc_kv(a, r->prev_kv) : NULL;
    return m->header ? m : NULL;
}

static Etcdserverpb__DeleteRangeResponse *delete_pb(struct services *sv, struct arena *a,
                                                    const struct mvcc_delete_resp *r)
{
    Etcdserverpb__DeleteRangeResponse *m = arena_alloc(a, sizeof(*m));
    Mvccpb__KeyValue **kvs =
        r->prev_kvs_len ? arena_alloc(a, r->prev_kvs_len * sizeof(*kvs)) : NULL;
    if (!m || (r->prev_kvs_len && !kvs))
        return NULL;
    etcdserverpb__delete_range_response__init(m);
    m->header = svc_header(sv, a, r->header_revision);
    m->deleted = r->deleted;
    for (size_t i = 0; i < r->prev_kvs_len; i++)
        if (!(kvs[i] = svc_kv(a, &r->prev_kvs[i])))
            return NULL;
    m->prev_kvs = kvs;
    m->n_prev_kvs = r->prev_kvs_len;
    return m->header ? m : NULL;
}

/* etcd fills only the revision in the headers of a Txn's inner responses. */
static Etcdserverpb__ResponseHeader *inner_header(struct arena *a, int64_t rev)
{
    Etcdserverpb__ResponseHeader *h = arena_alloc(a, sizeof(*h));
    if (h) {
        etcdserverpb__response_header__init(h);
        h->revision = rev;
    }
    return h;
}

static Etcdserverpb__TxnResponse *txn_pb(struct services *sv, struct arena *a,
                                         const struct mvcc_txn_resp *r)
{
    Etcdserverpb__TxnResponse *m = arena_alloc(a, sizeof(*m));
    Etcdserverpb__ResponseOp **ops =
        r->responses_len ? arena_alloc(a, r->responses_len * sizeof(*ops)) : NULL;
    if (!m || (r->responses_len && !ops))
        return NULL;
    etcdserverpb__txn_response__init(m);
    m->header = svc_header(sv, a, r->header_revision);
    m->succeeded = r->succeeded;
    for (size_t i = 0; i < r->responses_len; i++) {
        const struct mvcc_op_resp *o = &r->responses[i];
        Etcdserverpb__ResponseOp *op = arena_alloc(a, sizeof(*op));
        if (!op)
            return NULL;
        etcdserverpb__response_op__init(op);
        switch (o->type) {
        case MVCC_OP_RANGE:
            op->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
            if ((op->response_range = range_pb(sv, a, &o->u.range)))
                op->response_range->header = inner_header(a, o->u.range.header_revision);
            break;
        case MVCC_OP_PUT:
            op->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
            if ((op->response_put = put_pb(sv, a, &o->u.put)))
                op->response_put->header = inner_header(a, o->u.put.header_revision);
            break;
        case MVCC_OP_DELETE:
            op->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
            if ((op->response_delete_range = delete_pb(sv, a, &o->u.del)))
                op->response_delete_range->header = inner_header(a, o->u.del.header_revision);
            break;
        case MVCC_OP_TXN:
            op->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
            if ((op->response_txn = txn_pb(sv, a, o->u.txn)))
                op->response_txn->header = inner_header(a, o->u.txn->header_revision);
            break;
        }
        if (!op->response_range && !op->response_put && !op->response_delete_range &&
            !op->response_txn)
            return NULL;
        ops[i] = op;
    }
    m->responses = ops;
    m->n_responses = r->responses_len;
    return m->header ? m : NULL;
}

static void send_and_finish(struct rpc_call *call, const ProtobufCMessage *m)
{
    if (!m) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    int rc = rpc_call_send(call, m);
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

/* ---- Calls -------------------------------------------------------------------------------------
 */

/* What a call in flight keeps: the handle and the server call to cancel. */
struct kv_call {
    struct services *sv;
    struct rpc_call *call;
    struct server_call *pending;
    const Etcdserverpb__RangeRequest *range; /* a range (linearizable: after its barrier) */
    struct arena range_arena;                /* a range's kvs array, per attempt */
    bool range_arena_used;
    bool wait_output; /* the range waits for the output bounds to drain (on_writable) */
    enum req_type type;
};

static void range_arena_free(struct kv_call *k)
{
    if (k->range_arena_used)
        arena_free(&k->range_arena);
    k->range_arena_used = false;
}

/* Serves k's range from the local store. When the output bounds are full (other large
 * responses still draining), the call waits for on_writable and serves the range then, at the
 * state of that moment: still linearizable (the barrier was passed before) and never holding
 * more than the bounds allow. */
static void serve_range(struct kv_call *k)
{
    struct rpc_call *call = k->call;
    struct mvcc_range_req q;
    range_from_pb(k->range, &q);
    if (!k->range_arena_used) {
        arena_init(&k->range_arena, 4096);
        k->range_arena_used = true;
    }
    arena_reset(&k->range_arena);
    struct range_ctx ctx = {k->sv, call, &k->range_arena, 0};
    int rc = mvcc_range_borrow(server_store(k->sv->s), &q, &k->range_arena, range_emit, &ctx);
    if (rc && rc == ctx.send_rc && rc == BATON_EBUSY) {
        k->wait_output = true;
        return;
    }
    range_arena_free(k);
    rpc_call_set_user(call, NULL);
    if (rc)
        svc_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

static void on_range_writable(struct rpc_call *call, void *ctx)
{
    struct kv_call *k = rpc_call_user(call);
    if (k && k->wait_output) {
        k->wait_output = false;
        serve_range(k);
    }
}

static void on_done(void *ctx, int err, const struct server_result *res)
{
    struct kv_call *k = ctx;
    struct rpc_call *call = k->call;
    struct arena *a = rpc_call_arena(call);
    k->pending = NULL;
    if (k->range && !err) {
        serve_range(k); /* keeps the call's user while it may wait for output */
        return;
    }
    rpc_call_set_user(call, NULL);
    if (err) {
        svc_finish_err(call, err);
        return;
    }
    switch (k->type) {
    case REQ_PUT:
        send_and_finish(call, &put_pb(k->sv, a, &res->u.put)->base);
        break;
    case REQ_DELETE:
        send_and_finish(call, &delete_pb(k->sv, a, &res->u.del)->base);
        break;
    case REQ_TXN:
        send_and_finish(call, &txn_pb(k->sv, a, &res->u.txn)->base);
        break;
    case REQ_COMPACT: {
        Etcdserverpb__CompactionResponse *m = arena_alloc(a, sizeof(*m));
        if (m) {
            etcdserverpb__compaction_response__init(m);
            m->header = svc_header(k->sv, a, res->revision);
        }
        send_and_finish(call, m && m->header ? &m->base : NULL);
        break;
    }
    default:
        rpc_call_finish_err(call, BATON_EINVAL);
    }
}

static void on_cancel(struct rpc_call *call, int code, void *ctx)
{
    struct kv_call *k = rpc_call_user(call);
    if (!k)
        return;
    if (k->pending)
        server_call_cancel(k->pending);
    range_arena_free(k);
}

static struct kv_call *kv_call_new(struct services *sv, struct rpc_call *call, enum req_type t)
{
    struct kv_call *k = arena_alloc(rpc_call_arena(call), sizeof(*k));
    if (k) {
        memset(k, 0, sizeof(*k));
        k->sv = sv;
        k->call = call;
        k->type = t;
        rpc_call_set_user(call, k);
    }
    return k;
}

static void propose(struct services *sv, struct rpc_call *call, struct request *q)
{
    struct kv_call *k = kv_call_new(sv, call, q->type);
    if (!k) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    int rc = server_propose(sv->s, q, rpc_call_arena(call), on_done, k, &k->pending);
    if (rc) {
        rpc_call_set_user(call, NULL);
        svc_finish_err(call, rc);
    }
}

static void on_range(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const Etcdserverpb__RangeRequest *p = (const Etcdserverpb__RangeRequest *)msg;
    int rc = range_check(p);
    if (rc) {
        svc_finish_err(call, rc);
        return;
    }
    struct kv_call *k = kv_call_new(sv, call, 0);
    if (!k) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    k->range = p;
    if (p->serializable) {
        serve_range(k);
        return;
    }
    rc = server_read_barrier(sv->s, on_done, k, &k->pending);
    if (rc) {
        rpc_call_set_user(call, NULL);
        svc_finish_err(call, rc);
    }
}

static void on_put(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Etcdserverpb__PutRequest *p = (const Etcdserverpb__PutRequest *)msg;
    if (p->key.len == 0) {
        svc_finish_err(call, MVCC_EEMPTYKEY);
        return;
    }
    if (p->ignore_value && p->value.len) {
        svc_finish_err(call, MVCC_EVALUEPROVIDED);
        return;
    }
    if (p->ignore_lease && p->lease) {
        svc_finish_err(call, MVCC_ELEASEPROVIDED);
        return;
    }
    struct request q = {.type = REQ_PUT};
    put_from_pb(p, &q.u.put);
    propose(ctx, call, &q);
}

static void on_delete(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Etcdserverpb__DeleteRangeRequest *p = (const Etcdserverpb__DeleteRangeRequest *)msg;
    if (p->key.len == 0) {
        svc_finish_err(call, MVCC_EEMPTYKEY);
        return;
    }
    struct request q = {.type = REQ_DELETE};
    delete_from_pb(p, &q.u.del);
    propose(ctx, call, &q);
}

static void on_txn(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const Etcdserverpb__TxnRequest *p = (const Etcdserverpb__TxnRequest *)msg;
    struct request q = {.type = REQ_TXN};
    int rc = txn_from_pb(p, rpc_call_arena(call), &q.u.txn, 0);
    if (!rc)
        rc = mvcc_txn_check(&q.u.txn, sv->cfg.max_txn_ops);
    if (rc) {
        svc_finish_err(call, rc);
        return;
    }
    propose(sv, call, &q);
}

static void on_compact(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Etcdserverpb__CompactionRequest *p = (const Etcdserverpb__CompactionRequest *)msg;
    struct request q = {.type = REQ_COMPACT};
    q.u.compact.revision = p->revision;
    q.u.compact.physical = p->physical;
    propose(ctx, call, &q);
}

int svc_kv_register(struct services *sv)
{
    const struct rpc_method methods[] = {
        {"/etcdserverpb.KV/Range", RPC_UNARY, &etcdserverpb__range_request__descriptor, NULL,
         on_range, NULL, on_range_writable, on_cancel, sv},
        {"/etcdserverpb.KV/Put", RPC_UNARY, &etcdserverpb__put_request__descriptor, NULL, on_put,
         NULL, NULL, on_cancel, sv},
        {"/etcdserverpb.KV/DeleteRange", RPC_UNARY, &etcdserverpb__delete_range_request__descriptor,
         NULL, on_delete, NULL, NULL, on_cancel, sv},
        {"/etcdserverpb.KV/Txn", RPC_UNARY, &etcdserverpb__txn_request__descriptor, NULL, on_txn,
         NULL, NULL, on_cancel, sv},
        {"/etcdserverpb.KV/Compact", RPC_UNARY, &etcdserverpb__compaction_request__descriptor, NULL,
         on_compact, NULL, NULL, on_cancel, sv},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(methods); i++) {
        int rc = rpc_server_register(sv->rs, &methods[i]);
        if (rc)
            return rc;
    }
    return 0;
}
