/*
 * libbaton's key-value side: Range / Put / DeleteRange / Txn, watches that resume after a
 * failover from the revision after the last event delivered, and leases with background
 * keep-alives over one LeaseKeepAlive stream per client.
 */
#include "internal.h"

#include "rpc.pb-c.h"

#include <stdlib.h>
#include <string.h>

#define TXN_OPS_MAX 128

/* ---- results ------------------------------------------------------------------------------ */

int result_new(struct baton_result *r, struct arena **a)
{
    memset(r, 0, sizeof(*r));
    struct arena *ar = malloc(sizeof(*ar));
    if (!ar)
        return client_fail(BATONE_NOMEM, "out of memory");
    arena_init(ar, 4096);
    r->mem = ar;
    *a = ar;
    return 0;
}

void baton_result_free(struct baton_result *r)
{
    if (!r || !r->mem)
        return;
    arena_free(r->mem);
    free(r->mem);
    memset(r, 0, sizeof(*r));
}

void kv_from_pb(struct baton_kv *out, const void *pb)
{
    const Mvccpb__KeyValue *kv = pb;
    out->key = kv->key.data;
    out->key_len = kv->key.len;
    out->value = kv->value.data;
    out->value_len = kv->value.len;
    out->create_revision = kv->create_revision;
    out->mod_revision = kv->mod_revision;
    out->version = kv->version;
    out->lease = kv->lease;
}

int result_from_range(struct baton_result *r, struct arena *a, const void *resp)
{
    const Etcdserverpb__RangeResponse *rr = resp;
    if (rr->header)
        r->revision = rr->header->revision;
    r->count = rr->count;
    r->more = rr->more;
    if (rr->n_kvs) {
        r->kvs = arena_alloc(a, rr->n_kvs * sizeof(*r->kvs));
        if (!r->kvs)
            return client_fail(BATONE_NOMEM, "out of memory");
        for (size_t i = 0; i < rr->n_kvs; i++)
            kv_from_pb(&r->kvs[i], rr->kvs[i]);
    }
    r->kvs_len = rr->n_kvs;
    return 0;
}

size_t baton_prefix_end(const void *prefix, size_t len, uint8_t *out)
{
    const uint8_t *p = prefix;
    memcpy(out, p, len);
    for (size_t i = len; i > 0; i--) {
        if (out[i - 1] < 0xff) {
            out[i - 1]++;
            return i;
        }
    }
    out[0] = 0;
    return 1;
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    ProtobufCBinaryData b = {n, (uint8_t *)p};
    return b;
}

/* ---- get / put / delete ------------------------------------------------------------------- */

int baton_get(struct baton_client *c, const void *key, size_t key_len,
              const struct baton_get_options *o, struct baton_result *out)
{
    if (!c || !key || !key_len || !out)
        return client_fail(BATONE_INVAL, "get: no key");
    uint8_t end[BATON_KEY_MAX];
    Etcdserverpb__RangeRequest q = ETCDSERVERPB__RANGE_REQUEST__INIT;
    q.key = bin(key, key_len);
    if (o) {
        if (o->prefix) {
            if (key_len > sizeof(end))
                return client_fail(BATONE_TOOBIG, "get: prefix longer than %d", BATON_KEY_MAX);
            q.range_end = bin(end, baton_prefix_end(key, key_len, end));
        } else if (o->range_end) {
            q.range_end = bin(o->range_end, o->range_end_len);
        }
        q.limit = o->limit;
        q.revision = o->revision;
        q.serializable = o->serializable;
        q.keys_only = o->keys_only;
        q.count_only = o->count_only;
    }
    struct op op = {.path = "/etcdserverpb.KV/Range"};
    int rc = client_call(c, &op, &q.base);
    struct arena *a = NULL;
    if (rc == 0)
        rc = result_new(out, &a);
    if (rc == 0) {
        void *resp;
        rc = op_decode(&op, &etcdserverpb__range_response__descriptor, a, &resp);
        if (rc == 0)
            rc = result_from_range(out, a, resp);
        if (rc)
            baton_result_free(out);
    }
    op_free(&op);
    return rc;
}

int baton_put(struct baton_client *c, const void *key, size_t key_len, const void *value,
              size_t value_len, int64_t lease, int64_t *revision)
{
    if (!c || !key || !key_len)
        return client_fail(BATONE_INVAL, "put: no key");
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = bin(key, key_len);
    p.value = bin(value, value_len);
    p.lease = lease;
    struct op op = {.path = "/etcdserverpb.KV/Put", .flags = OP_WRITE};
    int rc = client_call(c, &op, &p.base);
    if (rc == 0 && revision) {
        struct arena a;
        arena_init(&a, 1024);
        void *resp;
        rc = op_decode(&op, &etcdserverpb__put_response__descriptor, &a, &resp);
        if (rc == 0) {
            Etcdserverpb__PutResponse *pr = resp;
            *revision = pr->header ? pr->header->revision : 0;
        }
        arena_free(&a);
    }
    op_free(&op);
    return rc;
}

int baton_delete(struct baton_client *c, const void *key, size_t key_len, const void *range_end,
                 size_t range_end_len, int64_t *deleted)
{
    if (!c || !key || !key_len)
        return client_fail(BATONE_INVAL, "delete: no key");
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d.key = bin(key, key_len);
    if (range_end)
        d.range_end = bin(range_end, range_end_len);
    struct op op = {.path = "/etcdserverpb.KV/DeleteRange", .flags = OP_WRITE};
    int rc = client_call(c, &op, &d.base);
    if (rc == 0 && deleted) {
        struct arena a;
        arena_init(&a, 1024);
        void *resp;
        rc = op_decode(&op, &etcdserverpb__delete_range_response__descriptor, &a, &resp);
        if (rc == 0)
            *deleted = ((Etcdserverpb__DeleteRangeResponse *)resp)->deleted;
        arena_free(&a);
    }
    op_free(&op);
    return rc;
}

/* ---- txn ---------------------------------------------------------------------------------- */

static Etcdserverpb__RequestOp *txn_op_pb(struct arena *a, const struct baton_op *o)
{
    Etcdserverpb__RequestOp *r = arena_alloc(a, sizeof(*r));
    if (!r)
        return NULL;
    etcdserverpb__request_op__init(r);
    switch (o->kind) {
    case BATON_OP_GET: {
        Etcdserverpb__RangeRequest *q = arena_alloc(a, sizeof(*q));
        if (!q)
            return NULL;
        etcdserverpb__range_request__init(q);
        q->key = bin(o->key, o->key_len);
        if (o->range_end)
            q->range_end = bin(o->range_end, o->range_end_len);
        r->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
        r->request_range = q;
        break;
    }
    case BATON_OP_PUT: {
        Etcdserverpb__PutRequest *p = arena_alloc(a, sizeof(*p));
        if (!p)
            return NULL;
        etcdserverpb__put_request__init(p);
        p->key = bin(o->key, o->key_len);
        p->value = bin(o->value, o->value_len);
        p->lease = o->lease;
        r->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        r->request_put = p;
        break;
    }
    case BATON_OP_DELETE: {
        Etcdserverpb__DeleteRangeRequest *d = arena_alloc(a, sizeof(*d));
        if (!d)
            return NULL;
        etcdserverpb__delete_range_request__init(d);
        d->key = bin(o->key, o->key_len);
        if (o->range_end)
            d->range_end = bin(o->range_end, o->range_end_len);
        r->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
        r->request_delete_range = d;
        break;
    }
    default:
        return NULL;
    }
    return r;
}

static Etcdserverpb__Compare *txn_cmp_pb(struct arena *a, const struct baton_cmp *m)
{
    Etcdserverpb__Compare *p = arena_alloc(a, sizeof(*p));
    if (!p)
        return NULL;
    etcdserverpb__compare__init(p);
    p->key = bin(m->key, m->key_len);
    static const Etcdserverpb__Compare__CompareResult res[] = {
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS,
        ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER,
    };
    if ((unsigned)m->result >= BATON_ARRAY_LEN(res))
        return NULL;
    p->result = res[m->result];
    switch (m->target) {
    case BATON_CMP_VALUE:
        p->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
        p->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
        p->value = bin(m->value, m->value_len);
        break;
    case BATON_CMP_VERSION:
        p->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
        p->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
        p->version = m->number;
        break;
    case BATON_CMP_CREATE:
        p->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
        p->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        p->create_revision = m->number;
        break;
    case BATON_CMP_MOD:
        p->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
        p->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        p->mod_revision = m->number;
        break;
    case BATON_CMP_LEASE:
        p->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE;
        p->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
        p->lease = m->number;
        break;
    default:
        return NULL;
    }
    return p;
}

static int txn_ops_pb(struct arena *a, const struct baton_op *ops, size_t n,
                      Etcdserverpb__RequestOp ***out)
{
    if (n > TXN_OPS_MAX)
        return client_fail(BATONE_TOOBIG, "txn: more than %d operations", TXN_OPS_MAX);
    *out = NULL;
    if (!n)
        return 0;
    *out = arena_alloc(a, n * sizeof(**out));
    if (!*out)
        return client_fail(BATONE_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!ops[i].key || !ops[i].key_len)
            return client_fail(BATONE_INVAL, "txn: an operation without a key");
        (*out)[i] = txn_op_pb(a, &ops[i]);
        if (!(*out)[i])
            return client_fail(BATONE_INVAL, "txn: bad operation kind %d", (int)ops[i].kind);
    }
    return 0;
}

int txn_build(struct arena *a, const struct baton_txn *t, const struct baton_cmp *extra,
              const struct baton_op *else_extra, Etcdserverpb__TxnRequest *req)
{
    etcdserverpb__txn_request__init(req);
    size_t nc = t->cmps_len + (extra ? 1 : 0);
    if (nc > TXN_OPS_MAX)
        return client_fail(BATONE_TOOBIG, "txn: more than %d compares", TXN_OPS_MAX);
    if (nc) {
        req->compare = arena_alloc(a, nc * sizeof(*req->compare));
        if (!req->compare)
            return client_fail(BATONE_NOMEM, "out of memory");
        for (size_t i = 0; i < nc; i++) {
            const struct baton_cmp *m = i < t->cmps_len ? &t->cmps[i] : extra;
            if (!m->key || !m->key_len)
                return client_fail(BATONE_INVAL, "txn: a compare without a key");
            req->compare[i] = txn_cmp_pb(a, m);
            if (!req->compare[i])
                return client_fail(BATONE_INVAL, "txn: bad compare");
        }
    }
    req->n_compare = nc;
    int rc = txn_ops_pb(a, t->then_ops, t->then_len, &req->success);
    if (rc)
        return rc;
    req->n_success = t->then_len;
    size_t ne = t->else_len + (else_extra ? 1 : 0);
    struct baton_op *all = NULL;
    if (else_extra) {
        all = arena_alloc(a, ne * sizeof(*all));
        if (!all)
            return client_fail(BATONE_NOMEM, "out of memory");
        if (t->else_len)
            memcpy(all, t->else_ops, t->else_len * sizeof(*all));
        all[t->else_len] = *else_extra;
    }
    rc = txn_ops_pb(a, all ? all : t->else_ops, ne, &req->failure);
    req->n_failure = ne;
    return rc;
}

static int txn_result(struct baton_result *out, struct arena *a,
                      const Etcdserverpb__TxnResponse *tr)
{
    out->revision = tr->header ? tr->header->revision : 0;
    out->succeeded = tr->succeeded;
    if (!tr->n_responses)
        return 0;
    out->ops = arena_alloc(a, tr->n_responses * sizeof(*out->ops));
    if (!out->ops)
        return client_fail(BATONE_NOMEM, "out of memory");
    memset(out->ops, 0, tr->n_responses * sizeof(*out->ops));
    out->ops_len = tr->n_responses;
    for (size_t i = 0; i < tr->n_responses; i++) {
        const Etcdserverpb__ResponseOp *r = tr->responses[i];
        struct baton_result *o = &out->ops[i];
        o->revision = out->revision;
        if (r->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE &&
            r->response_range) {
            int rc = result_from_range(o, a, r->response_range);
            if (rc)
                return rc;
            o->revision = out->revision;
        } else if (r->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE &&
                   r->response_delete_range) {
            o->deleted = r->response_delete_range->deleted;
        }
    }
    return 0;
}

int txn_run(struct baton_client *c, const Etcdserverpb__TxnRequest *req, struct baton_result *out,
            const Etcdserverpb__TxnResponse **tr_out)
{
    struct op op = {.path = "/etcdserverpb.KV/Txn", .flags = OP_WRITE};
    int rc = client_call(c, &op, &req->base);
    struct arena *a = NULL;
    if (rc == 0)
        rc = result_new(out, &a);
    if (rc == 0) {
        void *resp;
        rc = op_decode(&op, &etcdserverpb__txn_response__descriptor, a, &resp);
        if (rc == 0)
            rc = txn_result(out, a, resp);
        if (rc == 0 && tr_out)
            *tr_out = resp;
        if (rc)
            baton_result_free(out);
    }
    op_free(&op);
    return rc;
}

int baton_txn(struct baton_client *c, const struct baton_txn *t, struct baton_result *out)
{
    if (!c || !t || !out)
        return client_fail(BATONE_INVAL, "txn: no transaction");
    struct arena a;
    arena_init(&a, 4096);
    Etcdserverpb__TxnRequest req;
    int rc = txn_build(&a, t, NULL, NULL, &req);
    if (rc == 0)
        rc = txn_run(c, &req, out, NULL);
    arena_free(&a);
    return rc;
}

/* ---- watch -------------------------------------------------------------------------------- */

void watch_created(struct baton_watch *w, int rc, int code, const char *msg)
{
    if (w->create_op) {
        struct op *op = w->create_op;
        w->create_op = NULL;
        op_complete(op, rc, code, msg);
    }
}

static void watch_finish(struct baton_watch *w, int err)
{
    if (!w->ended && w->end_fn && !w->stop_requested)
        w->end_fn(w->ctx, err);
    w->ended = true;
}

static int watch_start(struct stream *s)
{
    struct baton_watch *w = s->owner;
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key = bin(w->key, w->key_len);
    if (w->end)
        cr.range_end = bin(w->end, w->end_len);
    cr.start_revision = w->next_rev;
    Etcdserverpb__WatchRequest r = ETCDSERVERPB__WATCH_REQUEST__INIT;
    r.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    r.create_request = &cr;
    return stream_send(s, &r.base);
}

static void watch_deliver(struct baton_watch *w, const Etcdserverpb__WatchResponse *r)
{
    w->in_cb = true;
    for (size_t i = 0; i < r->n_events && !w->stop_requested; i++) {
        const Mvccpb__Event *e = r->events[i];
        if (!e->kv)
            continue;
        struct baton_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.type =
            e->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? BATON_EVENT_DELETE : BATON_EVENT_PUT;
        kv_from_pb(&ev.kv, e->kv);
        if (e->kv->mod_revision >= w->next_rev)
            w->next_rev = e->kv->mod_revision + 1;
        w->fn(w->ctx, &ev);
    }
    w->in_cb = false;
}

static void watch_on_msg(struct stream *s, const uint8_t *d, size_t n)
{
    struct baton_watch *w = s->owner;
    arena_reset(&w->arena);
    Etcdserverpb__WatchResponse *r = (Etcdserverpb__WatchResponse *)rpc_unpack(
        &etcdserverpb__watch_response__descriptor, &w->arena, d, n);
    if (!r)
        return;
    if (r->created) {
        if (w->next_rev == 0 && r->header)
            w->next_rev = r->header->revision + 1;
        watch_created(w, 0, 0, "");
    }
    if (r->canceled) {
        int err = r->compact_revision > 0 ? BATONE_COMPACTED : BATONE_SERVER;
        const char *why = r->cancel_reason && r->cancel_reason[0]
                              ? r->cancel_reason
                              : "etcdserver: mvcc: required revision has been compacted";
        watch_created(w, err, GRPC_OUT_OF_RANGE, why);
        watch_finish(w, err);
        stream_remove(s);
        return;
    }
    watch_deliver(w, r);
    if (w->stop_requested)
        stream_remove(s);
}

static bool watch_on_end(struct stream *s, int code, const char *msg)
{
    struct baton_watch *w = s->owner;
    if (code == GRPC_UNIMPLEMENTED || code == GRPC_INVALID_ARGUMENT ||
        code == GRPC_PERMISSION_DENIED) {
        int err = client_map_status(code, msg);
        watch_created(w, err, code, msg);
        watch_finish(w, err);
        return false;
    }
    return true;
}

static void watch_on_free(struct stream *s)
{
    struct baton_watch *w = s->owner;
    watch_created(w, BATONE_CLOSED, -1, "client closed");
    if (s->c && s->c->shut)
        watch_finish(w, BATONE_CLOSED);
    free(w->key);
    free(w->end);
    arena_free(&w->arena);
    free(w);
}

static void watch_tick(struct stream *s, uint64_t now)
{
    struct baton_watch *w = s->owner;
    if (w->create_op && now >= w->create_deadline_ms) {
        watch_created(w, BATONE_TIMEOUT, GRPC_DEADLINE_EXCEEDED,
                      "watch: not created before the deadline");
        stream_remove(s);
    }
}

struct watch_add_arg {
    struct baton_watch *w;
    bool reached; /* the client's thread took w over (and frees it on failure) */
};

static void watch_add_fn(struct baton_client *c, struct op *op)
{
    struct watch_add_arg *a = op->arg;
    struct baton_watch *w = a->w;
    a->reached = true;
    if (c->streams_len >= CLIENT_STREAMS_MAX) {
        w->s.on_free(&w->s);
        op_complete(op, BATONE_BUSY, -1, "too many watches and streams");
        return;
    }
    w->create_op = op;
    w->create_deadline_ms = op->deadline_ms;
    stream_add(c, &w->s);
}

static void watch_stop_fn(struct baton_client *c, struct op *op)
{
    struct baton_watch *w = op->arg;
    (void)c;
    w->stop_requested = true;
    stream_remove(&w->s);
    op_complete(op, 0, 0, "");
}

void baton_watch_stop(struct baton_watch *w)
{
    if (!w)
        return;
    struct baton_client *c = w->s.c;
    if (client_on_thread(c)) {
        w->stop_requested = true;
        if (!w->in_cb)
            stream_remove(&w->s);
        return;
    }
    client_run(c, watch_stop_fn, w);
}

struct baton_watch *watch_new(enum watch_kind kind, const char *path, void *ctx)
{
    struct baton_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->kind = kind;
    w->ctx = ctx;
    w->s.path = path;
    w->s.owner = w;
    w->s.on_free = watch_on_free;
    w->s.on_tick = watch_tick;
    arena_init(&w->arena, 4096);
    return w;
}

int watch_register(struct baton_client *c, struct baton_watch *w, struct baton_watch **out)
{
    struct watch_add_arg a = {.w = w};
    int rc = client_run(c, watch_add_fn, &a);
    if (rc) {
        if (!a.reached)
            w->s.on_free(&w->s);
        return rc;
    }
    *out = w;
    return 0;
}

int baton_watch(struct baton_client *c, const void *key, size_t key_len, const void *range_end,
                size_t range_end_len, int64_t start_revision, baton_watch_fn fn,
                baton_watch_end_fn end, void *ctx, struct baton_watch **out)
{
    if (!c || !key || !key_len || !fn || !out)
        return client_fail(BATONE_INVAL, "watch: no key or callback");
    if (client_on_thread(c))
        return client_fail(BATONE_INVAL, "a blocking libbaton call from a libbaton callback");
    struct baton_watch *w = watch_new(WATCH_KV, "/etcdserverpb.Watch/Watch", ctx);
    if (!w)
        return client_fail(BATONE_NOMEM, "out of memory");
    w->key = malloc(key_len);
    w->end = range_end ? malloc(range_end_len ? range_end_len : 1) : NULL;
    if (!w->key || (range_end && !w->end)) {
        free(w->key);
        free(w->end);
        arena_free(&w->arena);
        free(w);
        return client_fail(BATONE_NOMEM, "out of memory");
    }
    memcpy(w->key, key, key_len);
    w->key_len = key_len;
    if (range_end) {
        memcpy(w->end, range_end, range_end_len);
        w->end_len = range_end_len;
    }
    w->next_rev = start_revision;
    w->fn = fn;
    w->end_fn = end;
    w->s.start = watch_start;
    w->s.on_msg = watch_on_msg;
    w->s.on_end = watch_on_end;
    return watch_register(c, w, out);
}

/* ---- leases ------------------------------------------------------------------------------- */

struct lease_keeper {
    int64_t id;
    int64_t ttl_s;
    uint64_t next_ms;
    void (*lost)(void *ctx, int64_t id);
    void *ctx;
    struct lease_keeper *next;
};

struct lease_stream {
    struct stream s;
    struct arena arena;
};

static struct lease_stream *lease_stream_of(struct baton_client *c)
{
    for (struct stream *s = c->streams; s; s = s->next)
        if (s->path && strcmp(s->path, "/etcdserverpb.Lease/LeaseKeepAlive") == 0)
            return s->owner;
    return NULL;
}

static int lease_send(struct stream *s, int64_t id)
{
    Etcdserverpb__LeaseKeepAliveRequest k = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    k.id = id;
    return stream_send(s, &k.base);
}

static int lease_start(struct stream *s)
{
    /* A new stream: every lease is due now. */
    for (struct lease_keeper *k = s->c->leases; k; k = k->next)
        k->next_ms = 0;
    return 0;
}

static struct lease_keeper **lease_find(struct baton_client *c, int64_t id)
{
    for (struct lease_keeper **pp = &c->leases; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id)
            return pp;
    return NULL;
}

static void lease_on_msg(struct stream *s, const uint8_t *d, size_t n)
{
    struct lease_stream *ls = s->owner;
    struct baton_client *c = s->c;
    arena_reset(&ls->arena);
    Etcdserverpb__LeaseKeepAliveResponse *r = (Etcdserverpb__LeaseKeepAliveResponse *)rpc_unpack(
        &etcdserverpb__lease_keep_alive_response__descriptor, &ls->arena, d, n);
    if (!r)
        return;
    struct lease_keeper **pp = lease_find(c, r->id);
    if (!pp)
        return;
    struct lease_keeper *k = *pp;
    if (r->ttl <= 0) {
        *pp = k->next;
        if (k->lost)
            k->lost(k->ctx, k->id);
        free(k);
        return;
    }
    k->ttl_s = r->ttl;
    uint64_t every = (uint64_t)r->ttl * 1000 / 3;
    k->next_ms = client_now_ms() + BATON_MAX(every, 200u);
}

static bool lease_on_end(struct stream *s, int code, const char *msg)
{
    (void)s;
    (void)msg;
    return code != GRPC_UNIMPLEMENTED;
}

static void lease_stream_free(struct stream *s)
{
    struct lease_stream *ls = s->owner;
    arena_free(&ls->arena);
    free(ls);
}

void lease_tick(struct baton_client *c, uint64_t now)
{
    if (!c->leases)
        return;
    struct lease_stream *ls = lease_stream_of(c);
    if (!ls) {
        ls = calloc(1, sizeof(*ls));
        if (!ls)
            return;
        arena_init(&ls->arena, 1024);
        ls->s.path = "/etcdserverpb.Lease/LeaseKeepAlive";
        ls->s.owner = ls;
        ls->s.start = lease_start;
        ls->s.on_msg = lease_on_msg;
        ls->s.on_end = lease_on_end;
        ls->s.on_free = lease_stream_free;
        stream_add(c, &ls->s);
    }
    if (!ls->s.open)
        return;
    for (struct lease_keeper *k = c->leases; k; k = k->next) {
        if (k->next_ms > now)
            continue;
        if (lease_send(&ls->s, k->id) != 0)
            return;
        /* The answer sets the next time; without one, ask again after a second. */
        k->next_ms = now + 1000;
    }
}

void lease_shutdown(struct baton_client *c)
{
    while (c->leases) {
        struct lease_keeper *k = c->leases;
        c->leases = k->next;
        free(k);
    }
}

struct lease_add_arg {
    int64_t id;
    void (*lost)(void *ctx, int64_t id);
    void *ctx;
    bool remove;
};

static void lease_add_fn(struct baton_client *c, struct op *op)
{
    struct lease_add_arg *a = op->arg;
    struct lease_keeper **pp = lease_find(c, a->id);
    if (a->remove) {
        if (pp) {
            struct lease_keeper *k = *pp;
            *pp = k->next;
            free(k);
        }
        if (!c->leases) {
            struct lease_stream *ls = lease_stream_of(c);
            if (ls)
                stream_remove(&ls->s);
        }
        op_complete(op, 0, 0, "");
        return;
    }
    if (pp) {
        op_complete(op, 0, 0, "");
        return;
    }
    size_t n = 0;
    for (struct lease_keeper *k = c->leases; k; k = k->next)
        n++;
    if (n >= CLIENT_LEASES_MAX) {
        op_complete(op, BATONE_BUSY, -1, "too many leases kept alive");
        return;
    }
    struct lease_keeper *k = calloc(1, sizeof(*k));
    if (!k) {
        op_complete(op, BATONE_NOMEM, -1, "out of memory");
        return;
    }
    k->id = a->id;
    k->lost = a->lost;
    k->ctx = a->ctx;
    k->next = c->leases;
    c->leases = k;
    op_complete(op, 0, 0, "");
}

int baton_lease_keepalive(struct baton_client *c, int64_t id, void (*lost)(void *ctx, int64_t id),
                          void *ctx)
{
    if (!c || id <= 0)
        return client_fail(BATONE_INVAL, "keepalive: bad lease id");
    struct lease_add_arg a = {.id = id, .lost = lost, .ctx = ctx};
    return client_run(c, lease_add_fn, &a);
}

void baton_lease_keepalive_stop(struct baton_client *c, int64_t id)
{
    struct lease_add_arg a = {.id = id, .remove = true};
    if (client_on_thread(c)) {
        struct lease_keeper **pp = lease_find(c, id);
        if (pp) {
            struct lease_keeper *k = *pp;
            *pp = k->next;
            free(k);
        }
        return;
    }
    client_run(c, lease_add_fn, &a);
}

int baton_lease_grant(struct baton_client *c, int64_t ttl_s, int64_t *id, int64_t *granted_ttl_s)
{
    if (!c || ttl_s <= 0 || !id)
        return client_fail(BATONE_INVAL, "lease grant: ttl must be positive");
    Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    g.ttl = ttl_s;
    struct op op = {.path = "/etcdserverpb.Lease/LeaseGrant", .flags = OP_WRITE};
    int rc = client_call(c, &op, &g.base);
    if (rc == 0) {
        struct arena a;
        arena_init(&a, 1024);
        void *resp;
        rc = op_decode(&op, &etcdserverpb__lease_grant_response__descriptor, &a, &resp);
        if (rc == 0) {
            Etcdserverpb__LeaseGrantResponse *r = resp;
            if (r->error && r->error[0])
                rc = client_fail(BATONE_SERVER, "lease grant: %s", r->error);
            *id = r->id;
            if (granted_ttl_s)
                *granted_ttl_s = r->ttl;
        }
        arena_free(&a);
    }
    op_free(&op);
    return rc;
}

int baton_lease_revoke(struct baton_client *c, int64_t id)
{
    if (!c)
        return client_fail(BATONE_INVAL, "lease revoke: no client");
    baton_lease_keepalive_stop(c, id);
    Etcdserverpb__LeaseRevokeRequest r = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    r.id = id;
    /* Revoking twice is harmless (the second says not found): safe to retry. */
    struct op op = {.path = "/etcdserverpb.Lease/LeaseRevoke"};
    int rc = client_call(c, &op, &r.base);
    op_free(&op);
    return rc;
}

int baton_lease_ttl(struct baton_client *c, int64_t id, int64_t *remaining_s)
{
    if (!c || !remaining_s)
        return client_fail(BATONE_INVAL, "lease ttl: no output");
    Etcdserverpb__LeaseTimeToLiveRequest r = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    r.id = id;
    struct op op = {.path = "/etcdserverpb.Lease/LeaseTimeToLive"};
    int rc = client_call(c, &op, &r.base);
    if (rc == 0) {
        struct arena a;
        arena_init(&a, 1024);
        void *resp;
        rc = op_decode(&op, &etcdserverpb__lease_time_to_live_response__descriptor, &a, &resp);
        if (rc == 0)
            *remaining_s = ((Etcdserverpb__LeaseTimeToLiveResponse *)resp)->ttl;
        arena_free(&a);
    }
    op_free(&op);
    return rc;
}
