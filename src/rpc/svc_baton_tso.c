/*
 * baton.v1.Tso: GetTimestamp, Stream and AllocIds, served by the leader from the windows of
 * cluster/tso.c (the protocol is described in cluster/cluster_tso.h).
 *
 * Linearizability. A leader that lost its leadership without knowing it (partitioned, paused)
 * could still hand out timestamps from its window while a new leader hands out larger ones, so
 * a client could see a new leader's value and then an older, smaller one. Every timestamp
 * request therefore waits for a ReadIndex round that started after it arrived: once a quorum
 * has confirmed this member's term after the request's arrival, no newer leader can have
 * served a value before the request arrived (its first window needs a quorum in the newer
 * term, and quorums intersect). One round serves every request queued while the previous one
 * ran, so the cost is a heartbeat round per batch, not per request.
 *
 * Order. Requests (unary calls and the messages of every Stream) wait in one FIFO in arrival
 * order; a confirmed prefix is served in that order, so the answers on a stream come in order
 * and values grow in arrival order. Requests wait while there is no window (a new leader, or
 * the window is used up) up to the request timeout; the window is extended from the tick when
 * less than TSO_EXTEND_BELOW_MS remains, so that rarely happens.
 *
 * Ids need no barrier: they only have to be unique, and a stale leader's chunk was reserved
 * through Raft, so nobody else hands out its ids.
 */
#include "rpc/svc.h"
#include "cluster/cluster_tso.h"

#include <baton.pb-c.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TSO_KEY             "/baton/tso"
#define IDS_KEY             "/baton/ids"
#define QUEUE_MAX           65536 /* requests waiting, over every call */
#define STREAM_INFLIGHT_MAX 1024  /* requests of one stream waiting */
#define TIMEOUT_DEFAULT_MS  5000
#define ERR_TOO_MANY        "etcdserver: too many requests"
/* Windows are kept ahead of time only while requests come: an idle cluster (or one that never
 * uses the TSO, e.g. one serving etcd clients only) writes nothing. */
#define IDLE_MS 10000

enum item_kind { ITEM_TS, ITEM_IDS };

struct tstream;

/* One request waiting: a unary call, or one message of a Stream. */
struct item {
    struct item *next;
    enum item_kind kind;
    uint32_t count;
    struct rpc_call *call;  /* NULL once the call went away */
    struct tstream *stream; /* NULL for unary calls */
    uint64_t round;         /* the barrier round it waits for (0: none yet) */
    bool confirmed;
    uint64_t deadline_ms; /* monotonic */
};

struct fifo {
    struct item *head, *tail;
    size_t len;
};

/* A Stream call. Freed when the call ends and no item refers to it any more. */
struct tstream {
    struct tso_svc *ts;
    struct rpc_call *call; /* NULL once ended */
    size_t inflight;
    bool half_closed; /* the client sends no more: end the call after the last answer */
};

/* A compare-and-set of a counter key in flight. */
struct cas {
    struct server_call *pending;
    struct arena arena;
    uint64_t term;
    bool present;    /* the key existed: compare its value with `stored` (else its absence) */
    uint64_t stored; /* the value read */
    uint64_t from, to;
    bool busy;
};

struct tso_svc {
    struct services *sv;
    struct tso tso;
    struct idalloc ids;
    uint64_t term;         /* the term last seen in a response header */
    bool leading;          /* this member led `term` when last looked */
    struct fifo ts_q;      /* timestamp requests, arrival order */
    struct fifo ids_q;     /* id requests, arrival order */
    uint64_t round_next;   /* the round the next barrier will confirm */
    bool barrier_busy;     /* a barrier is in flight for round_next - 1 */
    uint64_t barrier_term; /* the term this member led in when the barrier started */
    struct server_call *barrier;
    struct cas tso_cas, ids_cas;
    uint64_t ts_used_ms, ids_used_ms; /* monotonic time of the last request (0: none) */
    bool corrupt_logged;
};

static uint64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* Timestamps carry wall-clock milliseconds; a clock that steps back is absorbed by tso.c. */
static uint64_t wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static uint32_t timeout_ms(const struct tso_svc *ts)
{
    return ts->sv->cfg.request_timeout_ms ? ts->sv->cfg.request_timeout_ms : TIMEOUT_DEFAULT_MS;
}

static void fifo_push(struct fifo *f, struct item *it)
{
    it->next = NULL;
    if (f->tail)
        f->tail->next = it;
    else
        f->head = it;
    f->tail = it;
    f->len++;
}

static struct item *fifo_pop(struct fifo *f)
{
    struct item *it = f->head;
    if (it) {
        f->head = it->next;
        if (!f->head)
            f->tail = NULL;
        f->len--;
    }
    return it;
}

/* ---- Streams and items ------------------------------------------------------------------------
 */

static void stream_release(struct tstream *st)
{
    if (!st->call && st->inflight == 0)
        free(st);
}

/* Ends a stream's call with a status; its items still queued are dropped as they come up. */
static void stream_end(struct tstream *st, int code, const char *msg)
{
    if (!st->call)
        return;
    struct rpc_call *call = st->call;
    st->call = NULL;
    rpc_call_set_user(call, NULL);
    rpc_call_finish(call, code, msg);
}

/* Answers one item (code GRPC_OK with first, or an error) and frees it. */
static void item_done(struct tso_svc *ts, struct item *it, int code, const char *msg,
                      uint64_t first)
{
    struct rpc_call *call = it->stream ? it->stream->call : it->call;
    if (it->call)
        rpc_call_set_user(it->call, NULL); /* before the call ends and the handle goes */
    if (call && code == GRPC_OK) {
        Etcdserverpb__ResponseHeader h;
        svc_header_fill(ts->sv, &h, 0);
        int rc;
        if (it->kind == ITEM_TS) {
            Baton__V1__TsoResponse m = BATON__V1__TSO_RESPONSE__INIT;
            m.header = &h;
            m.first = first;
            m.count = it->count;
            rc = rpc_call_send(call, &m.base);
        } else {
            Baton__V1__IdAllocResponse m = BATON__V1__ID_ALLOC_RESPONSE__INIT;
            m.header = &h;
            m.first = first;
            m.count = it->count;
            rc = rpc_call_send(call, &m.base);
        }
        if (rc == BATON_EBUSY && it->stream) {
            stream_end(it->stream, GRPC_RESOURCE_EXHAUSTED, ERR_TOO_MANY);
        } else if (rc) {
            struct rpc_status s = rpc_status_from_err(rc);
            if (it->stream)
                stream_end(it->stream, s.code, s.message);
            else
                rpc_call_finish(call, s.code, s.message);
        } else if (!it->stream) {
            rpc_call_finish(call, GRPC_OK, NULL);
        }
    } else if (call) {
        if (it->stream)
            stream_end(it->stream, code, msg);
        else
            rpc_call_finish(call, code, msg);
    }
    if (it->stream) {
        struct tstream *st = it->stream;
        st->inflight--;
        if (st->half_closed && st->inflight == 0)
            stream_end(st, GRPC_OK, NULL);
        stream_release(st);
    }
    free(it);
}

static void item_fail_err(struct tso_svc *ts, struct item *it, int err)
{
    if (err == BATON_ENOTLEADER || err == BATON_EUNAVAIL || err == BATON_EPROPOSALDROP) {
        struct rpc_status nl = rpc_etcd_status(RPC_ETCD_NOT_LEADER); /* etcd's code and text */
        item_done(ts, it, nl.code, nl.message, 0);
        return;
    }
    struct rpc_status s = rpc_status_from_err(err);
    item_done(ts, it, s.code, s.message, 0);
}

static void fifo_fail_all(struct tso_svc *ts, struct fifo *f, int err)
{
    struct item *it;
    while ((it = fifo_pop(f)))
        item_fail_err(ts, it, err);
}

/* ---- Leadership -------------------------------------------------------------------------------
 */

static void cas_cancel(struct cas *c)
{
    if (c->pending)
        server_call_cancel(c->pending);
    c->pending = NULL;
    c->busy = false;
    arena_reset(&c->arena);
}

/* Looks at the member's role again when the term moved (every change of leader moves it; a
 * leader that steps down without a new term is caught by the barrier or the next tick). */
static void leadership_check(struct tso_svc *ts, bool force)
{
    struct server_header h;
    server_header(ts->sv->s, &h);
    if (!force && h.term == ts->term)
        return;
    struct server_status st;
    server_status(ts->sv->s, &st);
    bool leading = st.is_leader && !st.is_learner;
    if (leading == ts->leading && st.term == ts->term)
        return;
    ts->term = st.term;
    ts->leading = leading;
    if (leading) {
        tso_lead(&ts->tso, st.term);
        ids_lead(&ts->ids, st.term);
    } else {
        tso_follow(&ts->tso);
        ids_follow(&ts->ids);
        fifo_fail_all(ts, &ts->ts_q, BATON_ENOTLEADER);
        fifo_fail_all(ts, &ts->ids_q, BATON_ENOTLEADER);
    }
    /* Proposals of an older term answer nothing useful any more. */
    cas_cancel(&ts->tso_cas);
    cas_cancel(&ts->ids_cas);
}

/* ---- Counter compare-and-set ------------------------------------------------------------------
 */

/* Reads a counter key from the local store into c (present, stored). BATON_ECORRUPT when it
 * does not hold a decimal number. */
static int counter_read(struct tso_svc *ts, const char *key, struct cas *c)
{
    uint64_t v = 0;
    struct arena a;
    arena_init(&a, 1024);
    struct mvcc_range_req q = {.key = {(const uint8_t *)key, strlen(key)}};
    struct mvcc_range_resp r;
    int rc = mvcc_range(server_store(ts->sv->s), &q, &a, &r);
    if (!rc) {
        c->present = r.kvs_len == 1;
        if (c->present)
            rc = cluster_parse_u64(r.kvs[0].value.p, r.kvs[0].value.len, &v);
        c->stored = v;
    }
    arena_free(&a);
    if (rc == BATON_ECORRUPT && !ts->corrupt_logged) {
        ts->corrupt_logged = true;
        log_write(ts->sv->cfg.log, LOG_ERROR,
                  "msg=\"counter key does not hold a decimal number; not serving\" key=%s", key);
    }
    return rc;
}

/* Proposes: if key holds c->stored (is absent when !c->present), write c->to; else read it. */
static int cas_propose(struct tso_svc *ts, struct cas *c, const char *key, server_done_fn done)
{
    char from_txt[24], to_txt[24];
    int from_len = snprintf(from_txt, sizeof(from_txt), "%" PRIu64, c->stored);
    int to_len = snprintf(to_txt, sizeof(to_txt), "%" PRIu64, c->to);
    struct mvcc_bytes k = {(const uint8_t *)key, strlen(key)};
    struct mvcc_compare cmp = {.key = k};
    if (!c->present) {
        cmp.target = MVCC_CMP_VERSION;
        cmp.number = 0;
    } else {
        cmp.target = MVCC_CMP_VALUE;
        cmp.value = (struct mvcc_bytes){(const uint8_t *)from_txt, (size_t)from_len};
    }
    struct mvcc_op ok = {.type = MVCC_OP_PUT};
    ok.u.put = (struct mvcc_put_req){.key = k, .value = {(const uint8_t *)to_txt, (size_t)to_len}};
    struct mvcc_op fail = {.type = MVCC_OP_RANGE};
    fail.u.range = (struct mvcc_range_req){.key = k};
    struct request q = {.type = REQ_TXN};
    q.u.txn = (struct mvcc_txn_req){&cmp, 1, &ok, 1, &fail, 1};
    c->term = ts->term;
    c->busy = true;
    int rc = server_propose(ts->sv->s, &q, &c->arena, done, ts, &c->pending);
    if (rc)
        c->busy = false;
    return rc;
}

static void serve_ts(struct tso_svc *ts);
static void serve_ids(struct tso_svc *ts);
/* The server's callbacks run while Raft's output is being processed, where no proposal may
 * start: from there, pump() is called with may_propose false and the proposals wait for the
 * next request or tick. */
static void pump(struct tso_svc *ts, bool may_propose);

static void on_tso_cas(void *ctx, int err, const struct server_result *res)
{
    struct tso_svc *ts = ctx;
    struct cas *c = &ts->tso_cas;
    c->pending = NULL;
    c->busy = false;
    if (!err && res->u.txn.succeeded)
        tso_window_saved(&ts->tso, c->term, c->from, c->to);
    else
        tso_window_failed(&ts->tso, c->term);
    arena_reset(&c->arena);
    /* A lost compare means the local store has the newer bound now: the next tick (or
     * request) goes again with it. */
    pump(ts, false);
}

static void on_ids_cas(void *ctx, int err, const struct server_result *res)
{
    struct tso_svc *ts = ctx;
    struct cas *c = &ts->ids_cas;
    c->pending = NULL;
    c->busy = false;
    if (!err && res->u.txn.succeeded)
        ids_chunk_saved(&ts->ids, c->term, c->from, c->to);
    else
        ids_chunk_failed(&ts->ids, c->term);
    arena_reset(&c->arena);
    pump(ts, false);
}

/* Starts the window or chunk proposals the allocators ask for. */
static void propose_windows(struct tso_svc *ts)
{
    if (!ts->leading)
        return;
    uint64_t now = wall_ms(), mono = mono_ms();
    struct cas *c = &ts->tso_cas;
    bool ts_active = ts->ts_q.head || (ts->ts_used_ms && mono - ts->ts_used_ms < IDLE_MS);
    bool ids_active = ts->ids_q.head || (ts->ids_used_ms && mono - ts->ids_used_ms < IDLE_MS);
    /* The local read only when a window is due: this runs for every request. */
    if (ts_active && !c->busy && tso_window_due(&ts->tso, now) &&
        counter_read(ts, TSO_KEY, c) == 0 && tso_want_window(&ts->tso, now, c->stored, &c->to)) {
        c->from = c->stored;
        if (cas_propose(ts, c, TSO_KEY, on_tso_cas))
            tso_window_failed(&ts->tso, ts->term);
    }
    c = &ts->ids_cas;
    if (ids_active && !c->busy && ids_chunk_due(&ts->ids) && counter_read(ts, IDS_KEY, c) == 0 &&
        ids_want_chunk(&ts->ids, c->stored, &c->from, &c->to)) {
        if (cas_propose(ts, c, IDS_KEY, on_ids_cas))
            ids_chunk_failed(&ts->ids, ts->term);
    }
}

/* ---- Serving ----------------------------------------------------------------------------------
 */

static void on_barrier(void *ctx, int err, const struct server_result *res)
{
    (void)res;
    struct tso_svc *ts = ctx;
    uint64_t round = ts->round_next - 1;
    ts->barrier = NULL;
    ts->barrier_busy = false;
    /* A read barrier also completes on a follower (its ReadIndex goes to the leader), so it
     * alone does not show that this member still leads: a leader resumed after a pause can
     * start one, learn of a newer term before Raft takes it, and have it answered by the new
     * leader. Only a member that leads in the term it started the barrier in has had its own
     * leadership confirmed by it (a member never leads twice in one term). */
    if (!err) {
        struct server_status st;
        server_status(ts->sv->s, &st);
        if (!st.is_leader || st.term != ts->barrier_term)
            err = BATON_ENOTLEADER;
    }
    for (struct item *it = ts->ts_q.head; it && it->round && it->round <= round; it = it->next)
        it->confirmed = !err;
    if (err) {
        /* The items of this round cannot be confirmed: they fail, later ones wait on. */
        while (ts->ts_q.head && ts->ts_q.head->round && ts->ts_q.head->round <= round)
            item_fail_err(ts, fifo_pop(&ts->ts_q), err);
        leadership_check(ts, true);
    }
    pump(ts, false);
}

/* One barrier for every timestamp request not yet in a round. */
static void start_barrier(struct tso_svc *ts)
{
    if (ts->barrier_busy || !ts->ts_q.tail || ts->ts_q.tail->round)
        return;
    uint64_t round = ts->round_next++;
    for (struct item *it = ts->ts_q.head; it; it = it->next)
        if (!it->round)
            it->round = round;
    ts->barrier_busy = true;
    ts->barrier_term = ts->term;
    int rc = ts->leading ? server_read_barrier(ts->sv->s, on_barrier, ts, &ts->barrier)
                         : BATON_ENOTLEADER;
    if (rc) {
        ts->barrier_busy = false;
        while (ts->ts_q.head && ts->ts_q.head->round == round)
            item_fail_err(ts, fifo_pop(&ts->ts_q), rc);
    }
}

/* Serves the confirmed prefix of the timestamp FIFO, in order, while the window allows. */
static void serve_ts(struct tso_svc *ts)
{
    uint64_t now = wall_ms();
    while (ts->ts_q.head && ts->ts_q.head->confirmed) {
        struct item *it = ts->ts_q.head;
        if (!(it->stream ? it->stream->call : it->call)) {
            item_done(ts, fifo_pop(&ts->ts_q), GRPC_CANCELLED, NULL, 0);
            continue;
        }
        uint64_t first;
        int rc = tso_alloc(&ts->tso, now, it->count, &first);
        if (rc == BATON_EBUSY)
            return; /* waits for the next window */
        fifo_pop(&ts->ts_q);
        if (rc)
            item_fail_err(ts, it, rc);
        else
            item_done(ts, it, GRPC_OK, NULL, first);
    }
}

static void serve_ids(struct tso_svc *ts)
{
    while (ts->ids_q.head) {
        struct item *it = ts->ids_q.head;
        if (!it->call) {
            item_done(ts, fifo_pop(&ts->ids_q), GRPC_CANCELLED, NULL, 0);
            continue;
        }
        uint64_t first;
        int rc = ids_alloc(&ts->ids, it->count, &first);
        if (rc == BATON_EBUSY)
            return;
        fifo_pop(&ts->ids_q);
        if (rc)
            item_fail_err(ts, it, rc);
        else
            item_done(ts, it, GRPC_OK, NULL, first);
    }
}

static void pump(struct tso_svc *ts, bool may_propose)
{
    serve_ts(ts);
    serve_ids(ts);
    if (may_propose)
        propose_windows(ts);
    start_barrier(ts); /* only queues: the round starts on the server's next turn */
}

/* Queues a request. Answers at once (and returns) when it cannot be queued. */
static void enqueue(struct tso_svc *ts, struct rpc_call *call, struct tstream *st,
                    enum item_kind kind, uint32_t count)
{
    char msg[96];
    uint32_t max = kind == ITEM_TS ? TSO_COUNT_MAX : IDS_COUNT_MAX;
    struct item tmp = {.kind = kind, .call = st ? NULL : call, .stream = st};
    if (count == 0 || count > max) {
        snprintf(msg, sizeof(msg), "baton: count must be 1..%u, got %u", max, count);
        if (st)
            stream_end(st, GRPC_INVALID_ARGUMENT, msg);
        else
            rpc_call_finish(call, GRPC_INVALID_ARGUMENT, msg);
        return;
    }
    leadership_check(ts, false);
    struct fifo *q = kind == ITEM_TS ? &ts->ts_q : &ts->ids_q;
    struct rpc_status nl = rpc_etcd_status(RPC_ETCD_NOT_LEADER);
    const char *refuse = !ts->leading ? nl.message : NULL;
    int code = nl.code;
    if (!refuse && (q->len >= QUEUE_MAX || (st && st->inflight >= STREAM_INFLIGHT_MAX))) {
        refuse = ERR_TOO_MANY;
        code = GRPC_RESOURCE_EXHAUSTED;
    }
    struct item *it = refuse ? NULL : malloc(sizeof(*it));
    if (!refuse && !it) {
        refuse = baton_strerror(BATON_ENOMEM);
        code = GRPC_RESOURCE_EXHAUSTED;
    }
    if (refuse) {
        if (st)
            stream_end(st, code, refuse);
        else
            rpc_call_finish(call, code, refuse);
        return;
    }
    *it = tmp;
    it->count = count;
    uint64_t now = mono_ms();
    it->deadline_ms = now + timeout_ms(ts);
    if (kind == ITEM_TS)
        ts->ts_used_ms = now;
    else
        ts->ids_used_ms = now;
    if (st)
        st->inflight++;
    else
        rpc_call_set_user(call, it);
    fifo_push(q, it);
    pump(ts, true);
}

static void on_get_timestamp(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Baton__V1__TsoRequest *p = (const Baton__V1__TsoRequest *)msg;
    enqueue(ctx, call, NULL, ITEM_TS, p->count);
}

static void on_alloc_ids(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Baton__V1__IdAllocRequest *p = (const Baton__V1__IdAllocRequest *)msg;
    enqueue(ctx, call, NULL, ITEM_IDS, p->count);
}

/* A unary call went away: its item stays queued (the FIFO is singly linked) and is dropped
 * when it comes up. */
static void on_unary_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct item *it = rpc_call_user(call);
    if (it)
        it->call = NULL;
}

static void on_stream_start(struct rpc_call *call, void *ctx)
{
    struct tstream *st = calloc(1, sizeof(*st));
    if (!st) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    st->ts = ctx;
    st->call = call;
    rpc_call_set_user(call, st);
}

static void on_stream_message(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct tstream *st = rpc_call_user(call);
    if (!st || !st->call)
        return;
    const Baton__V1__TsoRequest *p = (const Baton__V1__TsoRequest *)msg;
    enqueue(ctx, call, st, ITEM_TS, p->count);
}

/* The client closed its side: the call ends once every request was answered. */
static void on_stream_half_close(struct rpc_call *call, void *ctx)
{
    (void)ctx;
    struct tstream *st = rpc_call_user(call);
    if (!st || !st->call)
        return;
    st->half_closed = true;
    if (st->inflight == 0)
        stream_end(st, GRPC_OK, NULL);
}

static void on_stream_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct tstream *st = rpc_call_user(call);
    if (!st)
        return;
    st->call = NULL;
    stream_release(st);
}

/* ---- Tick, life -------------------------------------------------------------------------------
 */

static void fifo_expire(struct tso_svc *ts, struct fifo *f, uint64_t now)
{
    /* Deadlines grow along the FIFO (uniform timeout), so only the head needs looking at. An
     * item of the round in flight is left to the round's outcome (the barrier has the same
     * timeout), which keeps the round bookkeeping simple. */
    while (f->head && f->head->deadline_ms <= now && (f->head->confirmed || !f->head->round))
        item_fail_err(ts, fifo_pop(f), BATON_ETIMEOUT);
}

void svc_tso_tick(struct services *sv)
{
    struct tso_svc *ts = sv->tso;
    if (!ts)
        return;
    leadership_check(ts, true);
    uint64_t now = mono_ms();
    fifo_expire(ts, &ts->ts_q, now);
    fifo_expire(ts, &ts->ids_q, now);
    pump(ts, true);
}

void svc_tso_destroy(struct services *sv)
{
    struct tso_svc *ts = sv->tso;
    if (!ts)
        return;
    if (ts->barrier)
        server_call_cancel(ts->barrier);
    cas_cancel(&ts->tso_cas);
    cas_cancel(&ts->ids_cas);
    fifo_fail_all(ts, &ts->ts_q, BATON_ECLOSED);
    fifo_fail_all(ts, &ts->ids_q, BATON_ECLOSED);
    arena_free(&ts->tso_cas.arena);
    arena_free(&ts->ids_cas.arena);
    free(ts);
    sv->tso = NULL;
}

int svc_tso_register(struct services *sv)
{
    struct tso_svc *ts = calloc(1, sizeof(*ts));
    if (!ts)
        return BATON_ENOMEM;
    ts->sv = sv;
    ts->round_next = 1;
    tso_init(&ts->tso);
    ids_init(&ts->ids);
    arena_init(&ts->tso_cas.arena, 4096);
    arena_init(&ts->ids_cas.arena, 4096);
    sv->tso = ts;
    const struct rpc_method methods[] = {
        {"/baton.v1.Tso/GetTimestamp", RPC_UNARY, &baton__v1__tso_request__descriptor, NULL,
         on_get_timestamp, NULL, NULL, on_unary_cancel, ts},
        {"/baton.v1.Tso/Stream", RPC_BIDI_STREAMING, &baton__v1__tso_request__descriptor,
         on_stream_start, on_stream_message, on_stream_half_close, NULL, on_stream_cancel, ts},
        {"/baton.v1.Tso/AllocIds", RPC_UNARY, &baton__v1__id_alloc_request__descriptor, NULL,
         on_alloc_ids, NULL, NULL, on_unary_cancel, ts},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(methods); i++) {
        int rc = rpc_server_register(sv->rs, &methods[i]);
        if (rc)
            return rc;
    }
    return 0;
}
