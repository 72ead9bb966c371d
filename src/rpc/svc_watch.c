/*
 * etcdserverpb.Watch: the bidi Watch stream (etcd's v3rpc/watch.go serverWatchStream).
 *
 * A stream holds many watchers; each is a watcher of mvcc's hub whose callback encodes the
 * events (packed mvccpb.KeyValue bytes, copied once, never decoded) into WatchResponses. When
 * the call's output is full (rpc_call_send says BATON_EBUSY) the callback answers BATON_EBUSY
 * and the hub moves the watcher to its catch-up set: nothing is queued per watcher, the history
 * is re-read from LMDB by mvcc_watch_step (run from services_tick), so a client that never
 * reads costs a bounded buffer and never holds other watchers back.
 *
 * Control responses (created, canceled, progress) and the tail of a fragmented delivery cannot
 * be re-read later, so they wait in a small per-stream queue; while that queue is not empty,
 * event deliveries are refused (BATON_EBUSY), which keeps every watcher's responses in order.
 */
#include "rpc/svc.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WATCHERS_PER_STREAM_MAX 4096
#define CTRL_QUEUE_MAX_BYTES    (1u << 20)
#define STEP_EVENTS_MAX         10000
#define PROGRESS_DEFAULT_MS     (10u * 60u * 1000u)

/* etcd's mvcc errors a create can fail with (mvcc/watcher.go). */
#define ERR_DUP_ID      "mvcc: duplicate watch ID provided on the WatchStream"
#define ERR_EMPTY_RANGE "mvcc: watcher range is empty"
#define ERR_TOO_MANY    "etcdserver: too many watchers on this stream"

struct wmsg {
    struct wmsg *next;
    size_t len;
    uint8_t data[];
};

struct wwatcher {
    struct wstream *st;
    int64_t id;     /* the client's */
    int64_t hub_id; /* mvcc's */
    bool progress_notify, fragment;
    bool sent_since_progress; /* events went out since the last progress tick */
};

struct wstream {
    struct services *sv; /* NULL once services_destroy ran */
    struct rpc_call *call;
    struct wstream *prev, *next;
    struct wwatcher **w;
    size_t nw, wcap;
    int64_t next_id;
    struct wmsg *q_head, *q_tail;
    size_t q_bytes;
    uint64_t last_progress_ms;
    bool broken; /* could not queue a response: end the call at the next tick */
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- Encoding ---------------------------------------------------------------------------------
 * WatchResponse is written by hand: header = 1, watch_id = 2, created = 3, canceled = 4,
 * compact_revision = 5, cancel_reason = 6, fragment = 7, events = 11 (Event: type = 1, kv = 2,
 * prev_kv = 3). */

struct wresp {
    int64_t header_rev;
    int64_t watch_id;
    bool created, canceled, fragment;
    int64_t compact_revision;
    const char *cancel_reason;
    const struct mvcc_event *events;
    size_t events_len;
};

static size_t field_len(size_t payload)
{
    return 1 + varint_len(payload) + payload;
}

static size_t varint_field_len(uint64_t v)
{
    return v ? 1 + varint_len(v) : 0;
}

static uint8_t *put_tag_len(uint8_t *p, unsigned field, size_t len)
{
    *p++ = (uint8_t)(field << 3 | 2);
    return p + varint_put(p, len);
}

static uint8_t *put_varint_field(uint8_t *p, unsigned field, uint64_t v)
{
    if (!v)
        return p;
    *p++ = (uint8_t)(field << 3);
    return p + varint_put(p, v);
}

static uint8_t *put_bytes_field(uint8_t *p, unsigned field, const void *d, size_t len)
{
    p = put_tag_len(p, field, len);
    memcpy(p, d, len);
    return p + len;
}

static size_t event_len(const struct mvcc_event *e)
{
    return varint_field_len((uint64_t)e->type) + field_len(e->kv_len) +
           (e->prev_kv ? field_len(e->prev_kv_len) : 0);
}

static size_t events_size(const struct mvcc_event *ev, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += field_len(event_len(&ev[i]));
    return total;
}

/* Encodes r into a queue node (malloc'd), header packed by protobuf-c. */
static struct wmsg *wresp_encode(struct services *sv, const struct wresp *r)
{
    uint8_t hbuf[128];
    Etcdserverpb__ResponseHeader h;
    svc_header_fill(sv, &h, r->header_rev);
    size_t hlen = etcdserverpb__response_header__get_packed_size(&h);
    BATON_ASSERT(hlen <= sizeof(hbuf));
    etcdserverpb__response_header__pack(&h, hbuf);
    size_t reason_len = r->cancel_reason ? strlen(r->cancel_reason) : 0;
    size_t total = field_len(hlen) + varint_field_len((uint64_t)r->watch_id) + 2 * r->created +
                   2 * r->canceled + 2 * r->fragment +
                   varint_field_len((uint64_t)r->compact_revision) +
                   (reason_len ? field_len(reason_len) : 0) + events_size(r->events, r->events_len);
    struct wmsg *m = malloc(sizeof(*m) + total);
    if (!m)
        return NULL;
    m->next = NULL;
    m->len = total;
    uint8_t *p = m->data;
    p = put_bytes_field(p, 1, hbuf, hlen);
    p = put_varint_field(p, 2, (uint64_t)r->watch_id);
    p = put_varint_field(p, 3, r->created);
    p = put_varint_field(p, 4, r->canceled);
    p = put_varint_field(p, 5, (uint64_t)r->compact_revision);
    if (reason_len)
        p = put_bytes_field(p, 6, r->cancel_reason, reason_len);
    p = put_varint_field(p, 7, r->fragment);
    for (size_t i = 0; i < r->events_len; i++) {
        const struct mvcc_event *e = &r->events[i];
        p = put_tag_len(p, 11, event_len(e));
        p = put_varint_field(p, 1, (uint64_t)e->type);
        p = put_bytes_field(p, 2, e->kv, e->kv_len);
        if (e->prev_kv)
            p = put_bytes_field(p, 3, e->prev_kv, e->prev_kv_len);
    }
    BATON_ASSERT((size_t)(p - m->data) == total);
    return m;
}

/* ---- Output -----------------------------------------------------------------------------------
 */

static void queue_push(struct wstream *st, struct wmsg *m)
{
    if (st->q_tail)
        st->q_tail->next = m;
    else
        st->q_head = m;
    st->q_tail = m;
    st->q_bytes += m->len;
}

static void queue_free(struct wstream *st)
{
    while (st->q_head) {
        struct wmsg *m = st->q_head;
        st->q_head = m->next;
        free(m);
    }
    st->q_tail = NULL;
    st->q_bytes = 0;
}

/* Sends what waits in the queue, in order. 0 when it is empty afterwards, BATON_EBUSY when the
 * call's output is full, another error when the call must end. */
static int queue_flush(struct wstream *st)
{
    while (st->q_head) {
        struct wmsg *m = st->q_head;
        int rc = rpc_call_send_bytes(st->call, m->data, m->len);
        if (rc)
            return rc;
        st->q_head = m->next;
        if (!st->q_head)
            st->q_tail = NULL;
        st->q_bytes -= m->len;
        free(m);
    }
    return 0;
}

/* Sends a control response now, or queues it behind earlier ones. Past the queue's bound (a
 * client that sends requests and never reads the answers) the call ends. */
static int send_ctrl(struct wstream *st, const struct wresp *r)
{
    struct wmsg *m = wresp_encode(st->sv, r);
    if (!m)
        return BATON_ENOMEM;
    if (!st->q_head) {
        int rc = rpc_call_send_bytes(st->call, m->data, m->len);
        if (rc != BATON_EBUSY) {
            free(m);
            return rc;
        }
    }
    if (st->q_bytes + m->len > CTRL_QUEUE_MAX_BYTES) {
        free(m);
        return BATON_ETOOBIG;
    }
    queue_push(st, m);
    return 0;
}

/* ---- Watchers ---------------------------------------------------------------------------------
 */

static struct wwatcher *watcher_find(struct wstream *st, int64_t id, size_t *at)
{
    for (size_t i = 0; i < st->nw; i++) {
        if (st->w[i]->id == id) {
            if (at)
                *at = i;
            return st->w[i];
        }
    }
    return NULL;
}

static void watcher_drop(struct wstream *st, size_t i)
{
    free(st->w[i]);
    st->w[i] = st->w[--st->nw];
}

/* Splits a delivery into responses no larger than max_bytes, as etcd's sendFragments: only when
 * the client asked and there are at least two events; each fragment holds at least one event. */
static int deliver_events(struct wwatcher *w, const struct mvcc_watch_batch *b)
{
    struct wstream *st = w->st;
    size_t max_bytes = (size_t)st->sv->cfg.max_request_bytes;
    struct wresp r = {.header_rev = b->header_revision, .watch_id = w->id};
    bool split =
        w->fragment && b->events_len > 1 && events_size(b->events, b->events_len) + 64 >= max_bytes;
    size_t from = 0;
    bool first = true;
    do {
        size_t to = b->events_len;
        if (split) {
            size_t sz = 64;
            for (to = from; to < b->events_len; to++) {
                size_t e = field_len(event_len(&b->events[to]));
                if (to > from && sz + e >= max_bytes)
                    break;
                sz += e;
            }
        }
        r.events = b->events + from;
        r.events_len = to - from;
        r.fragment = split && to < b->events_len;
        struct wmsg *m = wresp_encode(st->sv, &r);
        if (!m) {
            st->broken = !first;
            return BATON_EBUSY;
        }
        if (first) {
            int rc = rpc_call_send_bytes(st->call, m->data, m->len);
            free(m);
            m = NULL;
            if (rc)
                return BATON_EBUSY; /* nothing went out: the hub re-reads it later */
            first = false;
        } else if (st->q_head || rpc_call_send_bytes(st->call, m->data, m->len) != 0) {
            queue_push(st, m); /* the rest of one delivery: bounded by watch_batch_max */
            m = NULL;
        }
        free(m);
        from = to;
    } while (from < b->events_len);
    w->sent_since_progress = true;
    return 0;
}

/* mvcc's callback. */
static int on_hub(void *ctx, const struct mvcc_watch_batch *b)
{
    struct wwatcher *w = ctx;
    struct wstream *st = w->st;
    if (b->compact_revision) {
        /* The hub drops the watcher after this call: tell the client, as etcd does. */
        struct wresp r = {.watch_id = w->id,
                          .canceled = true,
                          .compact_revision = b->compact_revision,
                          .header_rev = b->header_revision};
        size_t at;
        if (watcher_find(st, w->id, &at) == w)
            watcher_drop(st, at);
        if (send_ctrl(st, &r) != 0)
            st->broken = true; /* ended by the next tick, outside the hub's iteration */
        return 0;
    }
    /* Refuse before encoding: a stalled client must not cost an encoding per step. */
    if (st->q_head || !rpc_call_writable(st->call))
        return BATON_EBUSY;
    if (b->events_len == 0) {
        struct wresp r = {.header_rev = b->header_revision, .watch_id = w->id};
        struct wmsg *m = wresp_encode(st->sv, &r);
        if (!m)
            return BATON_EBUSY;
        int rc = rpc_call_send_bytes(st->call, m->data, m->len);
        free(m);
        return rc ? BATON_EBUSY : 0;
    }
    return deliver_events(w, b);
}

static const char *create_watcher(struct wstream *st, const Etcdserverpb__WatchCreateRequest *c,
                                  int64_t *id_out, int64_t *compact_rev)
{
    struct mvcc_watch_req q = {0};
    static const uint8_t zero = 0;
    /* etcd's normalisation: no key is "\0" (the smallest key); range_end "\0" means >= key. */
    q.key = c->key.len ? svc_bytes(c->key) : (struct mvcc_bytes){&zero, 1};
    q.range_end = svc_bytes(c->range_end);
    if (q.range_end.len && !(q.range_end.len == 1 && q.range_end.p[0] == 0)) {
        size_t n = q.key.len < q.range_end.len ? q.key.len : q.range_end.len;
        int cmp = memcmp(q.key.p, q.range_end.p, n);
        if (cmp > 0 || (cmp == 0 && q.key.len >= q.range_end.len))
            return ERR_EMPTY_RANGE;
    }
    q.start_revision = c->start_revision;
    q.prev_kv = c->prev_kv;
    for (size_t i = 0; i < c->n_filters; i++) {
        if (c->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT)
            q.no_put = true;
        else if (c->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE)
            q.no_delete = true;
    }
    int64_t id = c->watch_id;
    if (id == 0) {
        while (watcher_find(st, st->next_id, NULL))
            st->next_id++;
        id = st->next_id++;
    } else if (watcher_find(st, id, NULL)) {
        return ERR_DUP_ID;
    }
    if (st->nw >= WATCHERS_PER_STREAM_MAX)
        return ERR_TOO_MANY;
    if (st->nw == st->wcap) {
        size_t nc = st->wcap ? st->wcap * 2 : 8;
        struct wwatcher **nw = realloc(st->w, nc * sizeof(*nw));
        if (!nw)
            return baton_strerror(BATON_ENOMEM);
        st->w = nw;
        st->wcap = nc;
    }
    struct wwatcher *w = calloc(1, sizeof(*w));
    if (!w)
        return baton_strerror(BATON_ENOMEM);
    w->st = st;
    w->id = id;
    w->progress_notify = c->progress_notify;
    w->fragment = c->fragment;
    *id_out = id;
    int rc = mvcc_watch_create(server_store(st->sv->s), &q, on_hub, w, &w->hub_id, compact_rev);
    if (rc) {
        free(w);
        return rc == BATON_ECOMPACTED ? NULL : mvcc_strerror(rc);
    }
    st->w[st->nw++] = w;
    return NULL;
}

/* ---- Stream life ------------------------------------------------------------------------------
 */

static void stream_unlink(struct wstream *st)
{
    if (!st->sv)
        return;
    struct mvcc_store *store = server_store(st->sv->s);
    for (size_t i = 0; i < st->nw; i++) {
        mvcc_watch_cancel(store, st->w[i]->hub_id);
        free(st->w[i]);
    }
    st->nw = 0;
    if (st->prev)
        st->prev->next = st->next;
    else
        st->sv->watch_streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    st->sv = NULL;
}

static void stream_free(struct wstream *st)
{
    stream_unlink(st);
    queue_free(st);
    free(st->w);
    free(st);
}

/* Ends the call with a status and frees the stream. */
static void stream_end(struct wstream *st, int code, const char *msg)
{
    struct rpc_call *call = st->call;
    rpc_call_set_user(call, NULL);
    stream_free(st);
    rpc_call_finish(call, code, msg);
}

static void on_start(struct rpc_call *call, void *ctx)
{
    struct services *sv = ctx;
    struct wstream *st = calloc(1, sizeof(*st));
    if (!st) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    st->sv = sv;
    st->call = call;
    st->last_progress_ms = now_ms();
    st->next = sv->watch_streams;
    if (st->next)
        st->next->prev = st;
    sv->watch_streams = st;
    rpc_call_set_user(call, st);
}

static int on_create(struct wstream *st, const Etcdserverpb__WatchCreateRequest *c)
{
    int64_t id = -1, compact_rev = 0;
    const char *err = create_watcher(st, c, &id, &compact_rev);
    struct wresp r = {.watch_id = err ? -1 : id, .created = true, .canceled = err != NULL};
    r.cancel_reason = err;
    int rc = send_ctrl(st, &r);
    if (rc || !compact_rev)
        return rc;
    /* From a compacted revision: created, then canceled with the compaction, as etcd. */
    struct wresp cr = {.watch_id = id, .canceled = true, .compact_revision = compact_rev};
    return send_ctrl(st, &cr);
}

static int on_cancel_req(struct wstream *st, int64_t id)
{
    size_t at;
    struct wwatcher *w = watcher_find(st, id, &at);
    if (!w)
        return 0; /* etcd answers nothing for an unknown id */
    mvcc_watch_cancel(server_store(st->sv->s), w->hub_id);
    watcher_drop(st, at);
    struct wresp r = {.watch_id = id, .canceled = true};
    return send_ctrl(st, &r);
}

static void on_message(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct wstream *st = rpc_call_user(call);
    if (!st || !st->sv)
        return;
    const Etcdserverpb__WatchRequest *p = (const Etcdserverpb__WatchRequest *)msg;
    int rc = 0;
    switch (p->request_union_case) {
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST:
        rc = on_create(st, p->create_request);
        break;
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST:
        rc = on_cancel_req(st, p->cancel_request->watch_id);
        break;
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST: {
        /* etcd 3.4: one response for the whole stream, watch_id -1, at the current revision. */
        struct wresp r = {.watch_id = -1};
        rc = send_ctrl(st, &r);
        break;
    }
    default:
        break; /* etcd ignores an empty request */
    }
    if (rc == BATON_ETOOBIG)
        stream_end(st, GRPC_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
    else if (rc)
        stream_end(st, rpc_status_from_err(rc).code, rpc_status_from_err(rc).message);
}

static void on_writable(struct rpc_call *call, void *ctx)
{
    struct wstream *st = rpc_call_user(call);
    if (!st)
        return;
    int rc = queue_flush(st);
    if (rc && rc != BATON_EBUSY)
        stream_end(st, rpc_status_from_err(rc).code, rpc_status_from_err(rc).message);
    /* Watchers behind are fed by mvcc_watch_step from services_tick. */
}

static void on_cancel(struct rpc_call *call, int code, void *ctx)
{
    struct wstream *st = rpc_call_user(call);
    if (st)
        stream_free(st);
}

/* Progress for watchers that asked and got no events during the last interval (etcd's
 * progressTicker in sendLoop). */
static void stream_progress(struct wstream *st, uint64_t now, uint32_t interval_ms)
{
    if (now - st->last_progress_ms < interval_ms)
        return;
    st->last_progress_ms = now;
    struct mvcc_store *store = server_store(st->sv->s);
    for (size_t i = 0; i < st->nw; i++) {
        struct wwatcher *w = st->w[i];
        if (!w->progress_notify)
            continue;
        if (!w->sent_since_progress && !st->q_head)
            mvcc_watch_progress(store, w->hub_id); /* BATON_EBUSY: behind or full, skip */
        w->sent_since_progress = false;
    }
}

void svc_watch_tick(struct services *sv)
{
    uint64_t now = now_ms();
    uint32_t interval = sv->cfg.watch_progress_ms ? sv->cfg.watch_progress_ms : PROGRESS_DEFAULT_MS;
    struct wstream *next;
    for (struct wstream *st = sv->watch_streams; st; st = next) {
        next = st->next;
        if (st->broken) {
            stream_end(st, GRPC_RESOURCE_EXHAUSTED, "etcdserver: too many requests");
            continue;
        }
        int rc = queue_flush(st);
        if (rc && rc != BATON_EBUSY) {
            stream_end(st, rpc_status_from_err(rc).code, rpc_status_from_err(rc).message);
            continue;
        }
        stream_progress(st, now, interval);
    }
    bool pending = false;
    mvcc_watch_step(server_store(sv->s), STEP_EVENTS_MAX, &pending);
}

void svc_watch_destroy(struct services *sv)
{
    while (sv->watch_streams)
        stream_unlink(sv->watch_streams);
}

int svc_watch_register(struct services *sv)
{
    const struct rpc_method m = {"/etcdserverpb.Watch/Watch",
                                 RPC_BIDI_STREAMING,
                                 &etcdserverpb__watch_request__descriptor,
                                 on_start,
                                 on_message,
                                 NULL,
                                 on_writable,
                                 on_cancel,
                                 sv};
    return rpc_server_register(sv->rs, &m);
}
