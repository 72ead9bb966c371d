/*
 * lease-scale: many leases held alive by keep-alive streams, as node liveness does (issue 6).
 *
 * Phase 1 grants --leases leases (--inflight LeaseGrant calls in flight). Phase 2 renews every
 * lease every --renew-ms: a 10 ms timer walks the lease array at the rate N / renew period and
 * sends one LeaseKeepAliveRequest per lease due, on the stream that owns it (lease i -> stream
 * i % streams). The walk starts with phase 1, so a lease is renewed within one period of its
 * grant however long the grants take. A lease whose previous renewal is still unanswered is not
 * sent again (counted as "skipped"): the client holds at most one request per lease.
 * --stream-window W (0 = none, etcd clients have none) bounds the keep-alives unanswered on one
 * stream: a stream at its window sends its due leases late. Phase 3 revokes every lease not
 * known to be expired.
 *
 * Expiry is seen two ways: the server answering TTL <= 0 (it no longer has the lease), and a
 * lease that went more than its TTL between the answer to one renewal and the sending of the
 * next ("lapsed": the server was free to expire it). Both are counted over the whole run;
 * renewal latency, rates and CPU only over the measured window (--warmup after the last grant,
 * then --duration).
 */
#include "bench.h"

#include "rpc.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define LS_TICK_MS 10

enum ls_flag {
    LS_GRANTED = 1,
    LS_OUTSTANDING = 2, /* a keep-alive is unanswered */
    LS_EXPIRED = 4,     /* the server answered TTL <= 0 */
    LS_LAPSED = 8,      /* more than TTL without a renewal */
};

enum ls_phase { LS_GRANT, LS_KEEP, LS_REVOKE, LS_DONE };

struct ls_lease {
    int64_t id;
    uint64_t sent_ns;    /* last keep-alive sent */
    uint64_t ok_ns;      /* last successful renewal answered (or the grant) */
    uint64_t ok_sent_ns; /* when that renewal (or grant) was sent */
    uint8_t flags;
};

struct ls_run;

struct ls_conn {
    struct ls_run *r;
    struct net_client *nc;
    bool ended;
};

struct ls_slot {
    struct ls_run *r;
    struct ls_conn *c;
    uint32_t idx;
    int64_t id;
    uint64_t t0_ns;
    bool busy;
    struct arena arena;
};

struct ls_stream {
    struct ls_run *r;
    struct rpc_client_call *call;
    struct arena arena;
    uint32_t first;       /* owns leases first, first + streams, ... */
    uint32_t leases_len;  /* how many */
    uint64_t done;        /* keep-alives of this stream scheduled so far (sent or skipped) */
    uint32_t outstanding; /* sent, unanswered */
};

struct ls_run {
    const struct bench_opts *o;
    struct bench_result *res;
    struct bench_lease_scale *ls;
    struct net_loop *loop;
    struct net_timer *tick, *warm, *end;
    struct ls_conn conns[BENCH_CONNS_MAX];
    int conns_len;
    struct ls_slot *slots;
    int slots_len;
    struct ls_stream *streams;
    int streams_len;
    struct ls_lease *leases;
    uint32_t n;
    uint32_t *map; /* open addressing: lease id -> index + 1 */
    uint32_t map_mask;
    enum ls_phase phase;
    uint32_t next;   /* grant / revoke cursor */
    uint32_t closed; /* grants / revokes answered */
    uint64_t sched_t0_ns;
    uint64_t renew_ns, ttl_ns;
    uint64_t phase_t0_ns, rec_t0_ns;
    bool recording, stopping;
    struct rusage ru0;
    struct bench_proc_sample ps0;
};

static uint64_t ls_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void ls_stop(struct ls_run *r)
{
    r->stopping = true;
    net_loop_stop(r->loop);
}

static void ls_fatal(struct ls_run *r, const char *what)
{
    if (!r->res->fatal[0])
        snprintf(r->res->fatal, sizeof(r->res->fatal), "%s", what);
    ls_stop(r);
}

static void ls_unsupported(struct ls_run *r, const char *what)
{
    if (!r->res->unsupported) {
        r->res->unsupported = true;
        snprintf(r->res->unsupported_what, sizeof(r->res->unsupported_what), "%s", what);
    }
    ls_stop(r);
}

static void ls_count_error(struct bench_opstats *s, int code)
{
    s->errors[code >= 0 && code < BENCH_GRPC_CODES ? code : GRPC_UNKNOWN]++;
}

/* ---- lease id map --------------------------------------------------------------------------- */

static uint32_t map_slot(const struct ls_run *r, int64_t id)
{
    return (uint32_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 32) & r->map_mask;
}

static void map_put(struct ls_run *r, int64_t id, uint32_t idx)
{
    uint32_t s = map_slot(r, id);
    while (r->map[s] != 0)
        s = (s + 1) & r->map_mask; /* at most n entries in a table of >= 2n */
    r->map[s] = idx + 1;
}

static bool map_get(const struct ls_run *r, int64_t id, uint32_t *idx)
{
    for (uint32_t s = map_slot(r, id), probes = 0; probes <= r->map_mask;
         s = (s + 1) & r->map_mask, probes++) {
        uint32_t v = r->map[s];
        if (v == 0)
            return false;
        if (r->leases[v - 1].id == id) {
            *idx = v - 1;
            return true;
        }
    }
    return false;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void ls_on_conn_state(struct net_client *nc, int status, void *ctx)
{
    struct ls_conn *c = ctx;
    (void)nc;
    if (status == 0)
        return;
    c->ended = true;
    c->nc = NULL;
    if (!c->r->stopping) {
        char m[160];
        snprintf(m, sizeof(m), "a connection ended: %s", baton_strerror(status));
        ls_fatal(c->r, m);
    }
}

/* ---- phase changes -------------------------------------------------------------------------- */

static void ls_slots_issue(struct ls_run *r);
static void ls_revokes_done(struct ls_run *r);

static double ls_tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void ls_on_warm(void *ctx)
{
    struct ls_run *r = ctx;
    struct bench_opstats *k = &r->res->ops[OP_KEEPALIVE];
    memset(k, 0, sizeof(*k));
    r->ls->skipped = 0;
    r->recording = true;
    r->rec_t0_ns = ls_now_ns();
    getrusage(RUSAGE_SELF, &r->ru0);
    for (int i = 0; i < r->o->pids_len; i++)
        r->ps0.ok[i] = bench_proc_cpu_ticks(r->o->pids[i], &r->ps0.cpu_ticks[i]) == 0;
}

static void ls_window_close(struct ls_run *r)
{
    struct bench_result *res = r->res;
    uint64_t now = ls_now_ns();
    res->measured_s = (double)(now - r->rec_t0_ns) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    res->client_cpu_s = ls_tv_s(ru.ru_utime) + ls_tv_s(ru.ru_stime) - ls_tv_s(r->ru0.ru_utime) -
                        ls_tv_s(r->ru0.ru_stime);
    long hz = sysconf(_SC_CLK_TCK);
    res->server_cpu_s = r->o->pids_len ? 0 : -1;
    for (int i = 0; i < r->o->pids_len; i++) {
        uint64_t t;
        if (!r->ps0.ok[i] || bench_proc_cpu_ticks(r->o->pids[i], &t) != 0) {
            res->server_cpu_s = -1;
            break;
        }
        res->server_cpu_s += (double)(t - r->ps0.cpu_ticks[i]) / (double)hz;
    }
    for (int i = 0; i < r->o->pids_len; i++) {
        if (bench_proc_status_kb(r->o->pids[i], "VmHWM", &res->server_hwm_kb[i]) != 0)
            res->server_hwm_kb[i] = 0;
        if (bench_proc_status_kb(r->o->pids[i], "RssAnon", &res->server_anon_kb[i]) != 0)
            res->server_anon_kb[i] = 0;
    }
    r->recording = false;
    /* Leases whose last renewal is older than their TTL now, even if never answered. */
    for (uint32_t i = 0; i < r->n; i++) {
        struct ls_lease *l = &r->leases[i];
        if ((l->flags & LS_GRANTED) && !(l->flags & (LS_EXPIRED | LS_LAPSED)) &&
            now - l->ok_ns > r->ttl_ns) {
            l->flags |= LS_LAPSED;
            r->ls->lapsed_leases++;
        }
    }
}

static void ls_on_end(void *ctx)
{
    struct ls_run *r = ctx;
    if (r->stopping)
        return;
    ls_window_close(r);
    r->phase = LS_REVOKE;
    r->next = 0;
    r->closed = 0;
    r->phase_t0_ns = ls_now_ns();
    for (uint32_t i = 0; i < r->n; i++)
        if ((r->leases[i].flags & LS_GRANTED) && !(r->leases[i].flags & LS_EXPIRED))
            r->ls->revoke_total++;
    if (r->ls->revoke_total == 0)
        ls_revokes_done(r);
    else
        ls_slots_issue(r);
}

static void ls_grants_done(struct ls_run *r)
{
    r->ls->grant_s = (double)(ls_now_ns() - r->phase_t0_ns) / 1e9;
    r->phase = LS_KEEP;
    uint64_t warm_ms = (uint64_t)(r->o->warmup_s * 1000);
    uint64_t dur_ms = (uint64_t)(r->o->duration_s * 1000);
    if (net_timer_start(r->loop, warm_ms ? warm_ms : 1, 0, ls_on_warm, r, &r->warm) ||
        net_timer_start(r->loop, warm_ms + dur_ms + 1, 0, ls_on_end, r, &r->end))
        ls_fatal(r, "timer start failed");
}

static void ls_revokes_done(struct ls_run *r)
{
    r->ls->revoke_s = (double)(ls_now_ns() - r->phase_t0_ns) / 1e9;
    r->phase = LS_DONE;
    ls_stop(r);
}

/* ---- unary slots: LeaseGrant and LeaseRevoke ------------------------------------------------ */

static void ls_slot_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *ctx)
{
    struct ls_slot *s = ctx;
    (void)call;
    if (s->r->phase != LS_GRANT)
        return;
    arena_reset(&s->arena);
    Etcdserverpb__LeaseGrantResponse *g = (Etcdserverpb__LeaseGrantResponse *)rpc_unpack(
        &etcdserverpb__lease_grant_response__descriptor, &s->arena, d, n);
    if (g && (!g->error || g->error[0] == 0))
        s->id = g->id;
}

static void ls_grant_closed(struct ls_run *r, struct ls_slot *s, int code)
{
    struct bench_opstats *st = &r->res->ops[OP_GRANT];
    if (code == GRPC_OK && s->id != 0) {
        struct ls_lease *l = &r->leases[s->idx];
        l->id = s->id;
        l->ok_ns = ls_now_ns();
        l->ok_sent_ns = s->t0_ns;
        l->flags = LS_GRANTED;
        map_put(r, s->id, s->idx);
        st->ok++;
        hist_record(&st->hist, l->ok_ns - s->t0_ns);
    } else {
        ls_count_error(st, code == GRPC_OK ? GRPC_INTERNAL : code);
    }
    if (++r->closed == r->n)
        ls_grants_done(r);
}

static void ls_revoke_closed(struct ls_run *r, struct ls_slot *s, int code)
{
    struct bench_opstats *st = &r->res->ops[OP_REVOKE];
    if (code == GRPC_OK) {
        st->ok++;
        hist_record(&st->hist, ls_now_ns() - s->t0_ns);
    } else {
        ls_count_error(st, code);
    }
    if (++r->closed == r->ls->revoke_total)
        ls_revokes_done(r);
}

static void ls_slot_on_close(struct rpc_client_call *call, int code, const char *msg, void *ctx)
{
    struct ls_slot *s = ctx;
    struct ls_run *r = s->r;
    (void)call;
    (void)msg;
    s->busy = false;
    if (r->stopping)
        return;
    if (code == GRPC_UNIMPLEMENTED) {
        ls_unsupported(r, r->phase == LS_GRANT ? "LeaseGrant" : "LeaseRevoke");
        return;
    }
    if (r->phase == LS_GRANT)
        ls_grant_closed(r, s, code);
    else if (r->phase == LS_REVOKE)
        ls_revoke_closed(r, s, code);
    ls_slots_issue(r);
}

static const struct rpc_client_callbacks ls_slot_cbs = {.on_message = ls_slot_on_message,
                                                        .on_close = ls_slot_on_close};

/* The next lease the current phase has to grant or revoke, or false. */
static bool ls_next_work(struct ls_run *r, uint32_t *idx)
{
    if (r->phase == LS_GRANT) {
        if (r->next >= r->n)
            return false;
        *idx = r->next++;
        return true;
    }
    if (r->phase != LS_REVOKE)
        return false;
    while (r->next < r->n) {
        uint32_t i = r->next++;
        uint8_t f = r->leases[i].flags;
        if ((f & LS_GRANTED) && !(f & LS_EXPIRED)) {
            *idx = i;
            return true;
        }
    }
    return false;
}

static void ls_slot_issue(struct ls_run *r, struct ls_slot *s)
{
    uint32_t idx;
    if (s->busy || s->c->ended || !ls_next_work(r, &idx))
        return;
    s->idx = idx;
    s->id = 0;
    s->t0_ns = ls_now_ns();
    struct rpc_client *cl = net_client_rpc(s->c->nc);
    struct rpc_client_call *call;
    int rc;
    if (r->phase == LS_GRANT) {
        Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
        g.ttl = r->o->lease_ttl_s;
        rc = rpc_client_unary(cl, "/etcdserverpb.Lease/LeaseGrant", &g.base, r->o->timeout_ms,
                              &ls_slot_cbs, s, &call);
    } else {
        Etcdserverpb__LeaseRevokeRequest v = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
        v.id = r->leases[idx].id;
        rc = rpc_client_unary(cl, "/etcdserverpb.Lease/LeaseRevoke", &v.base, r->o->timeout_ms,
                              &ls_slot_cbs, s, &call);
    }
    if (rc) {
        char m[160];
        snprintf(m, sizeof(m), "starting a call failed: %s", baton_strerror(rc));
        ls_fatal(r, m);
        return;
    }
    s->busy = true;
}

static void ls_slots_issue(struct ls_run *r)
{
    for (int i = 0; i < r->slots_len && !r->stopping; i++)
        ls_slot_issue(r, &r->slots[i]);
}

/* ---- keep-alive streams --------------------------------------------------------------------- */

static void ls_stream_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n,
                                 void *ctx)
{
    struct ls_stream *st = ctx;
    struct ls_run *r = st->r;
    struct bench_lease_scale *ls = r->ls;
    (void)call;
    arena_reset(&st->arena);
    Etcdserverpb__LeaseKeepAliveResponse *k = (Etcdserverpb__LeaseKeepAliveResponse *)rpc_unpack(
        &etcdserverpb__lease_keep_alive_response__descriptor, &st->arena, d, n);
    uint32_t idx;
    if (!k || !map_get(r, k->id, &idx)) {
        ls->unknown_answers++;
        return;
    }
    struct ls_lease *l = &r->leases[idx];
    uint64_t now = ls_now_ns();
    if ((l->flags & LS_OUTSTANDING) && st->outstanding > 0)
        st->outstanding--;
    l->flags &= (uint8_t)~LS_OUTSTANDING;
    if (!(l->flags & (LS_EXPIRED | LS_LAPSED)) && l->sent_ns > l->ok_ns &&
        l->sent_ns - l->ok_ns > r->ttl_ns) {
        l->flags |= LS_LAPSED; /* the client sent this one too late */
        ls->lapsed_leases++;
    }
    if (k->ttl <= 0) {
        ls->expired_answers++;
        if (!(l->flags & LS_EXPIRED)) {
            l->flags |= LS_EXPIRED;
            ls->expired_leases++;
            /* Gone although answered within the TTL of the request that last renewed it: the
             * server dropped a lease it had to keep. */
            if (now - l->ok_sent_ns < r->ttl_ns)
                ls->expired_early++;
        }
        return;
    }
    if (l->flags & LS_EXPIRED)
        return; /* cannot come back to life; a late answer */
    l->ok_ns = now;
    l->ok_sent_ns = l->sent_ns;
    if (r->recording) {
        r->res->ops[OP_KEEPALIVE].ok++;
        hist_record(&r->res->ops[OP_KEEPALIVE].hist, now - l->sent_ns);
    }
}

static void ls_stream_on_close(struct rpc_client_call *call, int code, const char *msg, void *ctx)
{
    struct ls_stream *st = ctx;
    struct ls_run *r = st->r;
    (void)call;
    st->call = NULL;
    if (r->stopping)
        return;
    if (code == GRPC_UNIMPLEMENTED) {
        ls_unsupported(r, "LeaseKeepAlive");
        return;
    }
    char m[200];
    snprintf(m, sizeof(m), "keep-alive stream closed: %s (%s)", grpc_code_name(code), msg);
    ls_fatal(r, m);
}

static const struct rpc_client_callbacks ls_stream_cbs = {.on_message = ls_stream_on_message,
                                                          .on_close = ls_stream_on_close};

/* Sends lease i's keep-alive on st, or skips it (not granted, expired, previous one unanswered).
 * False when st's window is full: the lease stays due. */
static bool ls_send_keepalive(struct ls_run *r, struct ls_stream *st, uint32_t i, uint64_t now)
{
    struct ls_lease *l = &r->leases[i];
    if (!(l->flags & LS_GRANTED) || (l->flags & LS_EXPIRED) || !st->call)
        return true;
    if (l->flags & LS_OUTSTANDING) {
        if (r->recording)
            r->ls->skipped++;
        return true;
    }
    if (r->o->stream_window && st->outstanding >= r->o->stream_window)
        return false;
    Etcdserverpb__LeaseKeepAliveRequest k = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    k.id = l->id;
    int rc = rpc_client_call_send(st->call, &k.base);
    if (rc == BATON_EBUSY) {
        r->ls->send_busy++;
        return true;
    }
    if (rc) {
        ls_fatal(r, "keep-alive send failed");
        return true;
    }
    l->sent_ns = now;
    l->flags |= LS_OUTSTANDING;
    st->outstanding++;
    if (r->recording)
        r->ls->sent++;
    return true;
}

/* Sends the keep-alives due since the last tick. Each stream walks its own leases: its k-th is
 * due at sched_t0 + k * period / leases_len, so every lease is renewed once a period, evenly
 * spread. A stream whose window is full waits (its leases stay due); one stalled for a whole
 * period resumes with one round, not a burst of several. */
static void ls_on_tick(void *ctx)
{
    struct ls_run *r = ctx;
    if (r->stopping || (r->phase != LS_GRANT && r->phase != LS_KEEP))
        return;
    uint64_t now = ls_now_ns();
    double periods = (double)(now - r->sched_t0_ns) / (double)r->renew_ns;
    for (int j = 0; j < r->streams_len && !r->stopping; j++) {
        struct ls_stream *st = &r->streams[j];
        if (st->leases_len == 0)
            continue;
        uint64_t due = (uint64_t)(periods * st->leases_len);
        if (due > st->done + st->leases_len)
            st->done = due - st->leases_len;
        for (; st->done < due && !r->stopping; st->done++) {
            uint32_t i =
                st->first + (uint32_t)(st->done % st->leases_len) * (uint32_t)r->streams_len;
            if (!ls_send_keepalive(r, st, i, now)) {
                if (r->recording)
                    r->ls->window_full++;
                break;
            }
        }
    }
}

/* ---- setup and teardown --------------------------------------------------------------------- */

static int ls_setup(struct ls_run *r)
{
    const struct bench_opts *o = r->o;
    r->n = o->leases;
    r->renew_ns = (uint64_t)o->renew_ms * 1000000u;
    r->ttl_ns = (uint64_t)o->lease_ttl_s * 1000000000u;
    uint32_t map_len = 1;
    while (map_len < 2 * r->n)
        map_len <<= 1;
    r->map_mask = map_len - 1;
    r->leases = calloc(r->n, sizeof(*r->leases));
    r->map = calloc(map_len, sizeof(*r->map));
    r->conns_len = o->conns;
    r->slots_len = o->inflight;
    r->streams_len = o->conns * o->streams;
    r->slots = calloc((size_t)r->slots_len, sizeof(*r->slots));
    r->streams = calloc((size_t)r->streams_len, sizeof(*r->streams));
    if (!r->leases || !r->map || !r->slots || !r->streams)
        return BATON_ENOMEM;
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    cc.calls_max = BENCH_SLOTS_MAX + BENCH_STREAMS_MAX;
    for (int i = 0; i < r->conns_len; i++) {
        struct ls_conn *c = &r->conns[i];
        c->r = r;
        int rc = net_connect_rpc(r->loop, o->endpoints[i % o->endpoints_len], &cc, ls_on_conn_state,
                                 c, &c->nc);
        if (rc) {
            c->ended = true;
            return rc;
        }
    }
    for (int i = 0; i < r->streams_len; i++) {
        struct ls_stream *st = &r->streams[i];
        st->r = r;
        st->first = (uint32_t)i;
        st->leases_len =
            (uint32_t)i < r->n ? (r->n - (uint32_t)i - 1) / (uint32_t)r->streams_len + 1 : 0;
        arena_init(&st->arena, 1024);
        int rc = rpc_client_call_start(net_client_rpc(r->conns[i % r->conns_len].nc),
                                       "/etcdserverpb.Lease/LeaseKeepAlive", NULL, 0, 0,
                                       &ls_stream_cbs, st, &st->call);
        if (rc)
            return rc;
    }
    for (int i = 0; i < r->slots_len; i++) {
        struct ls_slot *s = &r->slots[i];
        s->r = r;
        s->c = &r->conns[i % r->conns_len];
        arena_init(&s->arena, 1024);
    }
    r->phase = LS_GRANT;
    r->phase_t0_ns = r->sched_t0_ns = ls_now_ns();
    if (net_timer_start(r->loop, LS_TICK_MS, LS_TICK_MS, ls_on_tick, r, &r->tick))
        return BATON_ENOMEM;
    ls_slots_issue(r);
    return 0;
}

static bool ls_conns_ended(void *ctx)
{
    struct ls_run *r = ctx;
    for (int i = 0; i < r->conns_len; i++)
        if (!r->conns[i].ended)
            return false;
    return true;
}

static void ls_teardown(struct ls_run *r)
{
    r->stopping = true;
    r->recording = false;
    if (r->tick)
        net_timer_close(r->tick);
    if (r->warm)
        net_timer_close(r->warm);
    if (r->end)
        net_timer_close(r->end);
    for (int i = 0; i < r->conns_len; i++)
        if (!r->conns[i].ended && r->conns[i].nc)
            net_client_close(r->conns[i].nc);
    if (net_loop_run_until(r->loop, ls_conns_ended, r, 10000) != 0)
        fprintf(stderr, "baton-bench: connections did not close within 10 s\n");
    net_loop_destroy(r->loop);
    for (int i = 0; r->slots && i < r->slots_len; i++)
        arena_free(&r->slots[i].arena);
    for (int i = 0; r->streams && i < r->streams_len; i++)
        arena_free(&r->streams[i].arena);
    free(r->slots);
    free(r->streams);
    free(r->leases);
    free(r->map);
}

int bench_run_lease_scale(const struct bench_opts *o, struct bench_result *res)
{
    struct ls_run *r = calloc(1, sizeof(*r));
    if (!r)
        return BATON_ENOMEM;
    r->o = o;
    r->res = res;
    r->ls = &res->ls;
    int rc = net_loop_create(NULL, &r->loop);
    if (rc) {
        snprintf(res->fatal, sizeof(res->fatal), "event loop: %s", baton_strerror(rc));
        free(r);
        return rc;
    }
    rc = ls_setup(r);
    if (rc) {
        snprintf(res->fatal, sizeof(res->fatal), "setup: %s", baton_strerror(rc));
    } else {
        rc = net_loop_run(r->loop);
        if (rc == 0 && res->fatal[0])
            rc = BATON_EUNAVAIL;
        if (rc == 0 && r->phase != LS_DONE && !res->unsupported) {
            snprintf(res->fatal, sizeof(res->fatal), "the run stopped before the revokes ended");
            rc = BATON_EUNAVAIL;
        }
    }
    res->ls.granted = res->ops[OP_GRANT].ok;
    for (uint32_t i = 0; r->leases && i < r->n; i++)
        if (r->leases[i].flags & (LS_EXPIRED | LS_LAPSED))
            res->ls.lost_leases++;
    ls_teardown(r);
    free(r);
    return rc;
}
