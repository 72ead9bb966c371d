/*
 * The workloads: closed loops on one libuv thread. A "slot" is one unary request in flight
 * (it issues its next request when the previous one closes); a "stream" is one Watch or
 * LeaseKeepAlive call. Statistics are recorded only between the end of the warm-up and the end
 * of the run.
 */
#include "bench.h"

#include "rpc.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define PREFIX     "bench/"
#define PREFIX_LEN 6

struct run;

struct conn {
    struct run *r;
    struct net_client *nc;
    int ep;
    bool ended;
};

struct slot {
    struct run *r;
    struct conn *c;
    uint64_t t0_ns;
    enum bench_op op;
    uint32_t key;
    bool busy;
    bool prefill;
    struct arena arena;
    Etcdserverpb__TxnResponse *txn; /* last Txn response (in arena) */
    int64_t grant_id;
};

struct stream {
    struct run *r;
    struct conn *c;
    struct rpc_client_call *call;
    bool keepalive;
    int64_t lease_id;
    uint64_t t0_ns;
    bool open;
    struct arena arena;
};

struct run {
    const struct bench_opts *o;
    struct bench_result *res;
    struct net_loop *loop;
    struct net_timer *kick, *warm, *end;
    struct conn conns[BENCH_CONNS_MAX];
    int conns_len;
    struct slot *slots;
    int slots_len;
    struct stream *streams;
    int streams_len;
    struct prng prng;
    int64_t *known_rev; /* txn: last mod revision seen per key */
    uint8_t *val;
    bool prefilling;
    uint32_t prefill_next, prefill_done;
    bool recording, stopping;
    int cur_ep; /* failover / startup: endpoint in use */
    uint64_t last_ok_ns;
    struct rusage ru0;
    uint64_t t_rec_ns;
    struct bench_proc_sample ps0;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fatal(struct run *r, const char *what)
{
    if (!r->res->fatal[0])
        snprintf(r->res->fatal, sizeof(r->res->fatal), "%s", what);
    r->stopping = true;
    net_loop_stop(r->loop);
}

static void unsupported(struct run *r, const char *what)
{
    if (!r->res->unsupported) {
        r->res->unsupported = true;
        snprintf(r->res->unsupported_what, sizeof(r->res->unsupported_what), "%s", what);
    }
    r->stopping = true;
    net_loop_stop(r->loop);
}

static void record(struct run *r, enum bench_op op, int code, uint64_t t0_ns)
{
    if (!r->recording)
        return;
    struct bench_opstats *s = &r->res->ops[op];
    if (code == GRPC_OK) {
        s->ok++;
        hist_record(&s->hist, now_ns() - t0_ns);
    } else if (code >= 0 && code < BENCH_GRPC_CODES) {
        s->errors[code]++;
    } else {
        s->errors[GRPC_UNKNOWN]++;
    }
}

/* ---- connections ---------------------------------------------------------------------------- */

static void on_conn_state(struct net_client *nc, int status, void *ctx)
{
    struct conn *c = ctx;
    (void)nc;
    if (status == 0)
        return;
    c->ended = true;
    c->nc = NULL;
    struct run *r = c->r;
    if (!r->stopping && r->o->workload != WL_FAILOVER && r->o->workload != WL_STARTUP) {
        char msg[160];
        snprintf(msg, sizeof(msg), "connection to %s ended: %s", r->o->endpoints[c->ep],
                 baton_strerror(status));
        fatal(r, msg);
    }
}

static int conn_open(struct run *r, struct conn *c, int ep)
{
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    cc.calls_max = BENCH_SLOTS_MAX + BENCH_STREAMS_MAX;
    c->r = r;
    c->ep = ep;
    c->ended = false;
    int rc = net_connect_rpc(r->loop, r->o->endpoints[ep], &cc, on_conn_state, c, &c->nc);
    if (rc) {
        c->ended = true;
        c->nc = NULL;
    }
    return rc;
}

/* ---- keys and values ---------------------------------------------------------------------- */

static size_t key_format(const struct run *r, uint32_t k, uint8_t *out)
{
    /* PREFIX, then the key number in decimal, zero-padded to key_size bytes in all. */
    int ks = r->o->key_size;
    memcpy(out, PREFIX, PREFIX_LEN);
    int digits = ks - PREFIX_LEN;
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%0*u", digits > 10 ? digits : 10, k);
    if (digits < n) {
        memcpy(out + PREFIX_LEN, tmp, (size_t)n);
        return PREFIX_LEN + (size_t)n;
    }
    memset(out + PREFIX_LEN, '0', (size_t)(digits - n));
    memcpy(out + PREFIX_LEN + (digits - n), tmp, (size_t)n);
    return (size_t)ks;
}

/* ---- unary slots ------------------------------------------------------------------------- */

static void slot_issue(struct slot *s);

static void slot_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *ctx)
{
    struct slot *s = ctx;
    (void)call;
    if (s->op == OP_TXN) {
        arena_reset(&s->arena);
        s->txn = (Etcdserverpb__TxnResponse *)rpc_unpack(&etcdserverpb__txn_response__descriptor,
                                                         &s->arena, d, n);
    } else if (s->op == OP_GRANT && s->grant_id == -1) {
        arena_reset(&s->arena);
        Etcdserverpb__LeaseGrantResponse *g = (Etcdserverpb__LeaseGrantResponse *)rpc_unpack(
            &etcdserverpb__lease_grant_response__descriptor, &s->arena, d, n);
        if (g)
            s->grant_id = g->id;
    }
}

static void txn_learn(struct run *r, struct slot *s)
{
    Etcdserverpb__TxnResponse *t = s->txn;
    if (!t)
        return;
    if (t->succeeded) {
        if (t->header)
            r->known_rev[s->key] = t->header->revision;
        if (r->recording)
            r->res->txn_succeeded++;
        return;
    }
    if (r->recording)
        r->res->txn_failed++;
    if (t->n_responses == 1 &&
        t->responses[0]->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE) {
        Etcdserverpb__RangeResponse *rr = t->responses[0]->response_range;
        if (rr && rr->n_kvs == 1)
            r->known_rev[s->key] = rr->kvs[0]->mod_revision;
    }
}

static void failover_on_result(struct run *r, int code)
{
    uint64_t now = now_ns();
    if (code == GRPC_OK) {
        if (r->o->workload == WL_STARTUP) {
            r->res->startup_ms = (double)(realtime_ns() - r->o->since_ns) / 1e6;
            r->stopping = true;
            net_loop_stop(r->loop);
            return;
        }
        if (r->recording && r->last_ok_ns) {
            double gap = (double)(now - r->last_ok_ns) / 1e6;
            if (gap > r->res->max_gap_ms)
                r->res->max_gap_ms = gap;
        }
        r->last_ok_ns = now;
    } else if (r->o->endpoints_len > 1) {
        r->cur_ep = (r->cur_ep + 1) % r->o->endpoints_len;
    }
}

static void slot_on_close(struct rpc_client_call *call, int code, const char *msg, void *ctx)
{
    struct slot *s = ctx;
    struct run *r = s->r;
    (void)call;
    s->busy = false;
    if (code == GRPC_UNIMPLEMENTED) {
        unsupported(r, bench_op_name(s->op));
        return;
    }
    if (s->prefill) {
        if (code == GRPC_OK)
            r->prefill_done++;
        else if (!r->stopping) {
            char m[200];
            snprintf(m, sizeof(m), "prefill put failed: %s (%s)", grpc_code_name(code), msg);
            fatal(r, m);
            return;
        }
    } else {
        record(r, s->op, code, s->t0_ns);
        if (s->op == OP_TXN && code == GRPC_OK)
            txn_learn(r, s);
        if (r->o->workload == WL_FAILOVER || r->o->workload == WL_STARTUP) {
            failover_on_result(r, code);
            /* After a failure the kick timer issues the next attempt (no tight loop). */
            if (code == GRPC_OK && !r->stopping)
                slot_issue(s);
            return;
        }
    }
    if (!r->stopping)
        slot_issue(s);
}

static const struct rpc_client_callbacks slot_cbs = {.on_message = slot_on_message,
                                                     .on_close = slot_on_close};

static uint8_t *value_for(struct run *r, uint64_t stamp)
{
    /* The first 8 bytes carry the send time (watch latency); the rest is filler. */
    if (r->o->val_size >= 8)
        memcpy(r->val, &stamp, 8);
    return r->val;
}

static int start_put(struct run *r, struct slot *s, struct rpc_client *cl, uint8_t *key,
                     size_t klen, struct rpc_client_call **call)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key.data = key;
    p.key.len = klen;
    p.value.data = value_for(r, s->t0_ns);
    p.value.len = (size_t)r->o->val_size;
    return rpc_client_unary(cl, "/etcdserverpb.KV/Put", &p.base, r->o->timeout_ms, &slot_cbs, s,
                            call);
}

static int start_range(struct run *r, struct slot *s, struct rpc_client *cl, uint8_t *key,
                       size_t klen, struct rpc_client_call **call)
{
    Etcdserverpb__RangeRequest q = ETCDSERVERPB__RANGE_REQUEST__INIT;
    q.key.data = key;
    q.key.len = klen;
    q.serializable = r->o->serializable;
    return rpc_client_unary(cl, "/etcdserverpb.KV/Range", &q.base, r->o->timeout_ms, &slot_cbs, s,
                            call);
}

static int start_txn(struct run *r, struct slot *s, struct rpc_client *cl, uint8_t *key,
                     size_t klen, struct rpc_client_call **call)
{
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
    cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
    cmp.key.data = key;
    cmp.key.len = klen;
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    cmp.mod_revision = r->known_rev[s->key];
    Etcdserverpb__Compare *cmps[1] = {&cmp};
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key.data = key;
    p.key.len = klen;
    p.value.data = value_for(r, s->t0_ns);
    p.value.len = (size_t)r->o->val_size;
    Etcdserverpb__RequestOp okop = ETCDSERVERPB__REQUEST_OP__INIT;
    okop.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    okop.request_put = &p;
    Etcdserverpb__RangeRequest q = ETCDSERVERPB__RANGE_REQUEST__INIT;
    q.key.data = key;
    q.key.len = klen;
    Etcdserverpb__RequestOp elseop = ETCDSERVERPB__REQUEST_OP__INIT;
    elseop.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    elseop.request_range = &q;
    Etcdserverpb__RequestOp *succ[1] = {&okop}, *fail[1] = {&elseop};
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.n_compare = 1;
    t.compare = cmps;
    t.n_success = 1;
    t.success = succ;
    t.n_failure = 1;
    t.failure = fail;
    s->txn = NULL;
    return rpc_client_unary(cl, "/etcdserverpb.KV/Txn", &t.base, r->o->timeout_ms, &slot_cbs, s,
                            call);
}

static int start_grant(struct run *r, struct slot *s, struct rpc_client *cl,
                       struct rpc_client_call **call)
{
    Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    g.ttl = 60;
    return rpc_client_unary(cl, "/etcdserverpb.Lease/LeaseGrant", &g.base, r->o->timeout_ms,
                            &slot_cbs, s, call);
}

static enum bench_op pick_op(struct run *r)
{
    switch (r->o->workload) {
    case WL_RANGE:
        return OP_RANGE;
    case WL_TXN:
        return OP_TXN;
    case WL_LEASE:
        return OP_GRANT;
    case WL_MIXED: {
        double u = (double)(prng_next(&r->prng) >> 11) / (double)(1ull << 53);
        return u < r->o->read_ratio ? OP_RANGE : OP_PUT;
    }
    default:
        return OP_PUT;
    }
}

static struct conn *slot_conn(struct run *r, struct slot *s)
{
    if (r->o->workload != WL_FAILOVER && r->o->workload != WL_STARTUP)
        return s->c;
    struct conn *c = &r->conns[r->cur_ep];
    if (c->ended && conn_open(r, c, r->cur_ep) != 0)
        return NULL;
    return c;
}

static void slot_issue(struct slot *s)
{
    struct run *r = s->r;
    if (r->stopping || s->busy)
        return;
    struct conn *c = slot_conn(r, s);
    if (!c || c->ended)
        return; /* failover: the kick timer tries again */
    uint8_t key[512];
    s->prefill = false;
    if (r->prefilling) {
        if (r->prefill_next >= r->o->keys)
            return; /* parked until the prefill completes */
        s->prefill = true;
        s->key = r->prefill_next++;
        s->op = OP_PUT;
    } else {
        s->op = pick_op(r);
        s->key = (uint32_t)prng_below(&r->prng, r->o->keys);
    }
    size_t klen = key_format(r, s->key, key);
    struct rpc_client *cl = net_client_rpc(c->nc);
    struct rpc_client_call *call;
    s->t0_ns = now_ns();
    int rc;
    switch (s->op) {
    case OP_RANGE:
        rc = start_range(r, s, cl, key, klen, &call);
        break;
    case OP_TXN:
        rc = start_txn(r, s, cl, key, klen, &call);
        break;
    case OP_GRANT:
        rc = start_grant(r, s, cl, &call);
        break;
    default:
        rc = start_put(r, s, cl, key, klen, &call);
        break;
    }
    if (rc == 0) {
        s->busy = true;
        return;
    }
    if (r->o->workload == WL_FAILOVER || r->o->workload == WL_STARTUP) {
        failover_on_result(r, GRPC_UNAVAILABLE);
        return;
    }
    char m[160];
    snprintf(m, sizeof(m), "starting a call failed: %s", baton_strerror(rc));
    fatal(r, m);
}

/* ---- streams: Watch and LeaseKeepAlive ------------------------------------------------------ */

static void stream_send_keepalive(struct stream *st)
{
    Etcdserverpb__LeaseKeepAliveRequest k = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    k.id = st->lease_id;
    st->t0_ns = now_ns();
    if (rpc_client_call_send(st->call, &k.base) != 0)
        fatal(st->r, "keepalive send failed");
}

static void stream_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *ctx)
{
    struct stream *st = ctx;
    struct run *r = st->r;
    (void)call;
    arena_reset(&st->arena);
    if (st->keepalive) {
        record(r, OP_KEEPALIVE, GRPC_OK, st->t0_ns);
        if (!r->stopping)
            stream_send_keepalive(st);
        return;
    }
    Etcdserverpb__WatchResponse *w = (Etcdserverpb__WatchResponse *)rpc_unpack(
        &etcdserverpb__watch_response__descriptor, &st->arena, d, n);
    if (!w) {
        fatal(r, "undecodable WatchResponse");
        return;
    }
    uint64_t now = now_ns();
    for (size_t i = 0; i < w->n_events; i++) {
        Mvccpb__KeyValue *kv = w->events[i]->kv;
        if (!kv || kv->value.len < 8)
            continue;
        uint64_t stamp;
        memcpy(&stamp, kv->value.data, 8);
        if (r->recording && stamp <= now) {
            r->res->ops[OP_EVENT].ok++;
            hist_record(&r->res->ops[OP_EVENT].hist, now - stamp);
        }
    }
}

static void stream_on_close(struct rpc_client_call *call, int code, const char *msg, void *ctx)
{
    struct stream *st = ctx;
    struct run *r = st->r;
    (void)call;
    (void)msg;
    st->open = false;
    st->call = NULL;
    if (code == GRPC_UNIMPLEMENTED) {
        unsupported(r, st->keepalive ? "LeaseKeepAlive" : "Watch");
        return;
    }
    if (!r->stopping) {
        char m[200];
        snprintf(m, sizeof(m), "%s stream closed: %s (%s)", st->keepalive ? "keepalive" : "watch",
                 grpc_code_name(code), msg);
        fatal(r, m);
    }
}

static const struct rpc_client_callbacks stream_cbs = {.on_message = stream_on_message,
                                                       .on_close = stream_on_close};

static int stream_open(struct stream *st)
{
    struct rpc_client *cl = net_client_rpc(st->c->nc);
    const char *path =
        st->keepalive ? "/etcdserverpb.Lease/LeaseKeepAlive" : "/etcdserverpb.Watch/Watch";
    int rc = rpc_client_call_start(cl, path, NULL, 0, 0, &stream_cbs, st, &st->call);
    if (rc)
        return rc;
    st->open = true;
    if (st->keepalive) {
        stream_send_keepalive(st);
        return 0;
    }
    static const uint8_t end[] = "bench0"; /* PREFIX with its last byte + 1 */
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key.data = (uint8_t *)PREFIX;
    cr.key.len = PREFIX_LEN;
    cr.range_end.data = (uint8_t *)end;
    cr.range_end.len = PREFIX_LEN;
    Etcdserverpb__WatchRequest w = ETCDSERVERPB__WATCH_REQUEST__INIT;
    w.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    w.create_request = &cr;
    return rpc_client_call_send(st->call, &w.base);
}

/* Keepalive streams need a lease: granted synchronously before the run (one per stream). */
static void grant_on_close(struct rpc_client_call *call, int code, const char *msg, void *ctx);

static void grant_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *ctx)
{
    struct stream *st = ctx;
    (void)call;
    arena_reset(&st->arena);
    Etcdserverpb__LeaseGrantResponse *g = (Etcdserverpb__LeaseGrantResponse *)rpc_unpack(
        &etcdserverpb__lease_grant_response__descriptor, &st->arena, d, n);
    if (g)
        st->lease_id = g->id;
}

static const struct rpc_client_callbacks grant_cbs = {.on_message = grant_on_message,
                                                      .on_close = grant_on_close};

static void grant_on_close(struct rpc_client_call *call, int code, const char *msg, void *ctx)
{
    struct stream *st = ctx;
    struct run *r = st->r;
    (void)call;
    if (code == GRPC_UNIMPLEMENTED) {
        unsupported(r, "LeaseGrant");
        return;
    }
    if (code != GRPC_OK || st->lease_id == 0) {
        char m[200];
        snprintf(m, sizeof(m), "LeaseGrant for a keepalive stream failed: %s (%s)",
                 grpc_code_name(code), msg);
        fatal(r, m);
        return;
    }
    if (!r->stopping && stream_open(st) != 0)
        fatal(r, "opening a keepalive stream failed");
}

/* ---- phases ------------------------------------------------------------------------------- */

static int proc_sample(const struct bench_opts *o, struct bench_proc_sample *ps)
{
    for (int i = 0; i < o->pids_len; i++)
        ps->ok[i] = bench_proc_cpu_ticks(o->pids[i], &ps->cpu_ticks[i]) == 0;
    return 0;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void on_warm(void *ctx)
{
    struct run *r = ctx;
    memset(r->res->ops, 0, sizeof(r->res->ops));
    r->res->txn_succeeded = r->res->txn_failed = 0;
    r->res->max_gap_ms = 0;
    r->recording = true;
    r->t_rec_ns = now_ns();
    r->last_ok_ns = 0;
    getrusage(RUSAGE_SELF, &r->ru0);
    proc_sample(r->o, &r->ps0);
}

static void on_end(void *ctx)
{
    struct run *r = ctx;
    struct bench_result *res = r->res;
    res->measured_s = (double)(now_ns() - r->t_rec_ns) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    res->client_cpu_s =
        tv_s(ru.ru_utime) + tv_s(ru.ru_stime) - tv_s(r->ru0.ru_utime) - tv_s(r->ru0.ru_stime);
    struct bench_proc_sample ps1;
    proc_sample(r->o, &ps1);
    long hz = sysconf(_SC_CLK_TCK);
    res->server_cpu_s = r->o->pids_len ? 0 : -1;
    for (int i = 0; i < r->o->pids_len; i++) {
        if (!r->ps0.ok[i] || !ps1.ok[i]) {
            res->server_cpu_s = -1;
            break;
        }
        res->server_cpu_s += (double)(ps1.cpu_ticks[i] - r->ps0.cpu_ticks[i]) / (double)hz;
    }
    for (int i = 0; i < r->o->pids_len; i++) {
        if (bench_proc_status_kb(r->o->pids[i], "VmHWM", &res->server_hwm_kb[i]) != 0)
            res->server_hwm_kb[i] = 0;
        if (bench_proc_status_kb(r->o->pids[i], "RssAnon", &res->server_anon_kb[i]) != 0)
            res->server_anon_kb[i] = 0;
    }
    r->recording = false;
    r->stopping = true;
    if (r->o->workload == WL_STARTUP && res->startup_ms <= 0)
        snprintf(res->fatal, sizeof(res->fatal), "no successful put within %.1f s",
                 r->o->duration_s);
    net_loop_stop(r->loop);
}

static void start_measuring(struct run *r)
{
    uint64_t warm_ms = (uint64_t)(r->o->warmup_s * 1000);
    uint64_t dur_ms = (uint64_t)(r->o->duration_s * 1000);
    if (net_timer_start(r->loop, warm_ms ? warm_ms : 1, 0, on_warm, r, &r->warm) ||
        net_timer_start(r->loop, warm_ms + dur_ms + 1, 0, on_end, r, &r->end))
        fatal(r, "timer start failed");
}

static void on_kick(void *ctx)
{
    struct run *r = ctx;
    if (r->stopping)
        return;
    if (r->prefilling && r->prefill_done >= r->o->keys) {
        r->prefilling = false;
        start_measuring(r);
    }
    for (int i = 0; i < r->slots_len; i++)
        if (!r->slots[i].busy)
            slot_issue(&r->slots[i]);
}

/* ---- setup and teardown ------------------------------------------------------------------- */

static int run_setup(struct run *r)
{
    const struct bench_opts *o = r->o;
    bool seq = o->workload == WL_FAILOVER || o->workload == WL_STARTUP;
    r->conns_len = seq ? o->endpoints_len : o->conns;
    for (int i = 0; i < r->conns_len; i++) {
        r->conns[i].r = r;
        r->conns[i].ended = true;
        if (!seq || i == 0) {
            int rc = conn_open(r, &r->conns[i], i % o->endpoints_len);
            if (rc && !seq)
                return rc;
        }
    }
    r->slots_len = seq ? 1 : o->inflight;
    if (o->workload == WL_WATCH || o->workload == WL_LEASE)
        r->streams_len = o->conns * o->streams;
    r->slots = calloc((size_t)r->slots_len, sizeof(*r->slots));
    r->streams = calloc((size_t)(r->streams_len ? r->streams_len : 1), sizeof(*r->streams));
    r->known_rev = calloc(o->keys, sizeof(*r->known_rev));
    r->val = calloc(1, (size_t)o->val_size + 8);
    if (!r->slots || !r->streams || !r->known_rev || !r->val)
        return BATON_ENOMEM;
    memset(r->val, 'v', (size_t)o->val_size);
    for (int i = 0; i < r->slots_len; i++) {
        struct slot *s = &r->slots[i];
        s->r = r;
        s->c = &r->conns[i % r->conns_len];
        s->grant_id = 0;
        arena_init(&s->arena, 4096);
    }
    for (int i = 0; i < r->streams_len; i++) {
        struct stream *st = &r->streams[i];
        st->r = r;
        st->c = &r->conns[i % r->conns_len];
        st->keepalive = o->workload == WL_LEASE;
        arena_init(&st->arena, 4096);
        int rc;
        if (st->keepalive) {
            Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
            g.ttl = 60;
            struct rpc_client_call *call;
            rc = rpc_client_unary(net_client_rpc(st->c->nc), "/etcdserverpb.Lease/LeaseGrant",
                                  &g.base, o->timeout_ms, &grant_cbs, st, &call);
        } else {
            rc = stream_open(st);
        }
        if (rc)
            return rc;
    }
    r->prefilling = o->workload == WL_RANGE || o->workload == WL_TXN || o->workload == WL_MIXED;
    if (net_timer_start(r->loop, 10, 10, on_kick, r, &r->kick))
        return BATON_ENOMEM;
    if (!r->prefilling && !seq)
        start_measuring(r);
    if (seq) {
        /* failover measures from the start; startup has no end but its timeout. */
        on_warm(r);
        uint64_t dur_ms = (uint64_t)(o->duration_s * 1000);
        if (net_timer_start(r->loop, dur_ms, 0, on_end, r, &r->end))
            return BATON_ENOMEM;
    }
    for (int i = 0; i < r->slots_len; i++)
        slot_issue(&r->slots[i]);
    return 0;
}

static bool conns_ended(void *ctx)
{
    struct run *r = ctx;
    for (int i = 0; i < r->conns_len; i++)
        if (!r->conns[i].ended)
            return false;
    return true;
}

static void run_teardown(struct run *r)
{
    r->stopping = true;
    r->recording = false;
    if (r->kick)
        net_timer_close(r->kick);
    if (r->warm)
        net_timer_close(r->warm);
    if (r->end)
        net_timer_close(r->end);
    for (int i = 0; i < r->conns_len; i++)
        if (!r->conns[i].ended && r->conns[i].nc)
            net_client_close(r->conns[i].nc);
    if (net_loop_run_until(r->loop, conns_ended, r, 10000) != 0)
        fprintf(stderr, "baton-bench: connections did not close within 10 s\n");
    net_loop_destroy(r->loop);
    for (int i = 0; r->slots && i < r->slots_len; i++)
        arena_free(&r->slots[i].arena);
    for (int i = 0; r->streams && i < r->streams_len; i++)
        arena_free(&r->streams[i].arena);
    free(r->slots);
    free(r->streams);
    free(r->known_rev);
    free(r->val);
}

int bench_run(const struct bench_opts *o, struct bench_result *res)
{
    memset(res, 0, sizeof(*res));
    res->server_cpu_s = -1;
    if (o->workload == WL_LEASE_SCALE)
        return bench_run_lease_scale(o, res);
    struct run *r = calloc(1, sizeof(*r));
    if (!r)
        return BATON_ENOMEM;
    r->o = o;
    r->res = res;
    prng_seed(&r->prng, o->seed);
    int rc = net_loop_create(NULL, &r->loop);
    if (rc) {
        snprintf(res->fatal, sizeof(res->fatal), "event loop: %s", baton_strerror(rc));
        free(r);
        return rc;
    }
    rc = run_setup(r);
    if (rc) {
        snprintf(res->fatal, sizeof(res->fatal), "setup: %s", baton_strerror(rc));
    } else {
        rc = net_loop_run(r->loop);
        if (rc == 0 && res->fatal[0])
            rc = BATON_EUNAVAIL;
    }
    run_teardown(r);
    free(r);
    return rc;
}
