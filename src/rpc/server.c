/*
 * The gRPC server core: one nghttp2 server session per connection, driven through
 * nghttp2_session_mem_recv / mem_send so it never touches a socket. It owns request dispatch by
 * ":path", message framing and decoding, response headers / DATA / trailers, deadlines, output
 * bounds with backpressure, and the connection-level defences (stream limit, rapid-reset budget,
 * handshake timeout, keepalive, GOAWAY).
 *
 * A call lives from the request HEADERS until nghttp2 closes its stream. Within that, the
 * handler "owns" it from dispatch (streaming) or from its one message (unary) until it calls
 * rpc_call_finish or is told on_cancel; the struct itself is freed only in on_stream_close, so
 * a handle the handler still holds is never dangling.
 */
#include "rpc/rpc_int.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rpc_server {
    struct rpc_server_config cfg;
    struct rpc_method *methods;
    size_t methods_len, methods_cap;
    struct rpc_conn *conns; /* every live connection, for the server-wide output bound */
    struct rpc_server_stats stats;
    bool blocked; /* a send was refused by the server-wide bound since the last drain */
};

struct rpc_md {
    const char *name, *value;
};

struct rpc_call {
    struct rpc_conn *conn;
    struct rpc_call *prev, *next;
    int32_t stream_id;
    const struct rpc_method *method; /* set at dispatch */
    struct arena arena;              /* lives with the call */
    struct arena msg_arena;          /* streaming: one request message at a time */
    const char *path, *http_method, *content_type, *timeout, *encoding;
    struct rpc_md *md;
    size_t md_len, md_cap, header_bytes;
    bool header_overflow;
    struct rpc_deframer in;
    struct rpc_outq out;
    uint64_t deadline_ms;
    void *user;
    ProtobufCMessage *unary_req;
    uint32_t msgs_in;
    char status[12];
    const char *status_msg; /* percent-encoded, in arena */
    bool owned;             /* the handler holds the handle */
    bool finished;          /* trailers queued behind the pending output */
    bool headers_sent;
    bool deferred; /* the data provider is waiting for output */
    bool blocked;  /* a send was refused; on_writable is due */
    bool sent_one; /* unary response: its one message is queued */
    bool reported; /* the observer heard its end */
};

struct rpc_conn {
    struct rpc_server *srv;
    struct rpc_conn *prev, *next; /* srv->conns */
    const struct rpc_server_config *cfg;
    nghttp2_session *h2;
    rpc_notify_fn notify;
    void *notify_ctx;
    struct rpc_call *calls;
    size_t calls_len;
    size_t out_pending; /* response bytes buffered over all calls */
    size_t in_buffered; /* partial request messages held over all calls */
    uint64_t created_ms, last_recv_ms, last_active_ms, ping_sent_ms, reset_ms;
    uint64_t reset_tokens_milli;
    uint64_t last_ping_recv_ms;
    uint32_t ping_strikes;
    uint64_t shutdown_ms;
    int shutdown_phase; /* 0 serving; 1 GOAWAY notice sent, PING out; 2 final GOAWAY sent */
    bool got_settings, ping_outstanding, fatal;
    bool close_after_send; /* a GOAWAY for misbehaviour is queued: close once it is out */
};

static void conn_shutdown_final(struct rpc_conn *c);

/* Output accounting: per connection and over the server. */
static void conn_out_add(struct rpc_conn *c, size_t n)
{
    c->out_pending += n;
    c->srv->stats.out_buffered += n;
}

static void conn_out_sub(struct rpc_conn *c, size_t n)
{
    BATON_ASSERT(c->out_pending >= n && c->srv->stats.out_buffered >= n);
    c->out_pending -= n;
    c->srv->stats.out_buffered -= n;
}

/* The observer hears a dispatched call's end once. */
static void call_report_end(struct rpc_call *call, int code)
{
    const struct rpc_call_observer *o = &call->conn->cfg->observer;
    if (!call->method || call->reported)
        return;
    call->reported = true;
    if (o->on_end)
        o->on_end(o->ctx, (size_t)(call->method - call->conn->srv->methods), call->method, code);
}

static uint64_t conn_now(const struct rpc_conn *c)
{
    return c->cfg->clock(c->cfg->clock_ctx);
}

static void conn_notify(struct rpc_conn *c)
{
    if (c->notify)
        c->notify(c->notify_ctx);
}

void rpc_server_config_default(struct rpc_server_config *cfg)
{
    *cfg = (struct rpc_server_config){
        .recv_msg_max_bytes = 3 * 512 * 1024,
        .header_max_bytes = 64 * 1024,
        .metadata_max = 64,
        .stream_out_max_bytes = 4 << 20,
        .conn_out_max_bytes = 16 << 20,
        .server_out_max_bytes = 256 << 20,
        .conn_in_max_bytes = 32 << 20,
        .streams_max = 256,
        .window_bytes = 1 << 20,
        .handshake_timeout_ms = 5000,
        .idle_timeout_ms = 0,
        .keepalive_ms = 2 * 3600 * 1000,
        .keepalive_timeout_ms = 20 * 1000,
        .ping_min_interval_ms = 5000,
        .ping_strikes_max = 2,
        .resets_burst = 200,
        .resets_per_sec = 50,
    };
}

int rpc_server_create(const struct rpc_server_config *cfg, struct rpc_server **out)
{
    if (!cfg->recv_msg_max_bytes || !cfg->stream_out_max_bytes || !cfg->conn_out_max_bytes ||
        !cfg->server_out_max_bytes || !cfg->conn_in_max_bytes || !cfg->streams_max ||
        !cfg->header_max_bytes || cfg->window_bytes < 65535 || cfg->window_bytes > (1u << 31) - 1 ||
        !cfg->resets_burst)
        return BATON_EINVAL;
    struct rpc_server *s = calloc(1, sizeof(*s));
    if (!s)
        return BATON_ENOMEM;
    s->cfg = *cfg;
    if (!s->cfg.clock)
        s->cfg.clock = rpc_clock_monotonic;
    *out = s;
    return 0;
}

int rpc_server_register(struct rpc_server *s, const struct rpc_method *m)
{
    if (!m->path || m->path[0] != '/' || !strchr(m->path + 1, '/') || !m->request || !m->on_message)
        return BATON_EINVAL;
    for (size_t i = 0; i < s->methods_len; i++)
        if (strcmp(s->methods[i].path, m->path) == 0)
            return BATON_EEXIST;
    if (s->methods_len == s->methods_cap) {
        size_t cap = s->methods_cap ? s->methods_cap * 2 : 16;
        struct rpc_method *n = realloc(s->methods, cap * sizeof(*n));
        if (!n)
            return BATON_ENOMEM;
        s->methods = n;
        s->methods_cap = cap;
    }
    s->methods[s->methods_len++] = *m;
    return 0;
}

void rpc_server_stats(const struct rpc_server *s, struct rpc_server_stats *st)
{
    *st = s->stats;
}

void rpc_server_destroy(struct rpc_server *s)
{
    if (!s)
        return;
    BATON_ASSERT(!s->conns);
    free(s->methods);
    free(s);
}

/* ---- Responses ---------------------------------------------------------------------------- */

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

static ssize_t call_data_read(nghttp2_session *h2, int32_t stream_id, uint8_t *dst, size_t len,
                              uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct rpc_call *call = src->ptr;
    size_t n = rpc_outq_take(&call->out, dst, len);
    conn_out_sub(call->conn, n);
    if (rpc_outq_pending(&call->out) == 0 && call->finished) {
        nghttp2_nv trailers[] = {NV("grpc-status", call->status),
                                 NV("grpc-message", call->status_msg)};
        size_t ntrailers = call->status_msg[0] ? 2 : 1;
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (nghttp2_submit_trailer(h2, stream_id, trailers, ntrailers) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        return (ssize_t)n;
    }
    if (n == 0) {
        call->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* Submits the response HEADERS with a data provider that drains call->out. */
static int call_send_headers(struct rpc_call *call)
{
    nghttp2_nv hdrs[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                         NV("grpc-accept-encoding", "identity")};
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = call_data_read};
    int rv =
        nghttp2_submit_response(call->conn->h2, call->stream_id, hdrs, BATON_ARRAY_LEN(hdrs), &prd);
    if (rv != 0)
        return BATON_ENOMEM;
    call->headers_sent = true;
    return 0;
}

/* An HTTP-level refusal (not gRPC: wrong method or content type). */
static void call_respond_http(struct rpc_call *call, const char *status)
{
    nghttp2_nv hdrs[] = {NV(":status", status)};
    call->finished = true;
    call->headers_sent = true;
    nghttp2_submit_response(call->conn->h2, call->stream_id, hdrs, 1, NULL);
}

static void call_set_status(struct rpc_call *call, int code, const char *message)
{
    snprintf(call->status, sizeof(call->status), "%d", code);
    struct buf enc = {0};
    call->status_msg = "";
    if (message && message[0] && rpc_percent_encode(&enc, message) == 0 &&
        buf_append(&enc, "", 1) == 0) {
        const char *m = arena_dup(&call->arena, enc.data, enc.len);
        if (m)
            call->status_msg = m;
    }
    buf_free(&enc);
}

/* Queues the status: after the pending output, or at once as a Trailers-Only response. */
static void call_end(struct rpc_call *call, int code, const char *message)
{
    BATON_ASSERT(!call->finished);
    struct rpc_conn *c = call->conn;
    call->finished = true;
    call_set_status(call, code, message);
    call_report_end(call, code);
    if (!call->headers_sent) {
        nghttp2_nv hdrs[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                             NV("grpc-status", call->status), NV("grpc-message", call->status_msg)};
        call->headers_sent = true;
        nghttp2_submit_response(c->h2, call->stream_id, hdrs, call->status_msg[0] ? 4 : 3, NULL);
    } else if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(c->h2, call->stream_id);
    }
    conn_notify(c);
}

/* The core ends a call on its own (deadline, bad input): the queued output is dropped, and a
 * handler holding the call learns through on_cancel. */
static void call_abort(struct rpc_call *call, int code, const char *message)
{
    if (call->finished)
        return;
    bool owned = call->owned;
    call->owned = false;
    conn_out_sub(call->conn, rpc_outq_pending(&call->out));
    rpc_outq_free(&call->out);
    call->conn->in_buffered -= rpc_deframer_buffered(&call->in);
    rpc_deframer_free(&call->in);
    call_end(call, code, message);
    if (owned && call->method->on_cancel)
        call->method->on_cancel(call, code, call->method->ctx);
}

static void call_abortf(struct rpc_call *call, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void call_abortf(struct rpc_call *call, int code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    call_abort(call, code, msg);
}

/* ---- Requests ----------------------------------------------------------------------------- */

static const struct rpc_method *server_lookup(const struct rpc_server *s, const char *path)
{
    for (size_t i = 0; i < s->methods_len; i++)
        if (strcmp(s->methods[i].path, path) == 0)
            return &s->methods[i];
    return NULL;
}

/* UNIMPLEMENTED with grpc-go's texts: "malformed method name", "unknown service", "unknown
 * method ... for service ...". */
static void call_unknown_method(struct rpc_call *call, const char *path)
{
    const struct rpc_server *s = call->conn->srv;
    const char *slash = path[0] == '/' ? strrchr(path, '/') : NULL;
    if (!slash || slash == path) {
        call_abortf(call, GRPC_UNIMPLEMENTED, "malformed method name: \"%.200s\"", path);
        return;
    }
    size_t svc_len = (size_t)(slash - path); /* "/pkg.Service" including the leading '/' */
    for (size_t i = 0; i < s->methods_len; i++) {
        if (strncmp(s->methods[i].path, path, svc_len + 1) == 0) {
            call_abortf(call, GRPC_UNIMPLEMENTED, "unknown method %.100s for service %.*s",
                        slash + 1, (int)BATON_MIN(svc_len - 1, 100), path + 1);
            return;
        }
    }
    call_abortf(call, GRPC_UNIMPLEMENTED, "unknown service %.*s", (int)BATON_MIN(svc_len - 1, 100),
                path + 1);
}

static bool content_type_is_grpc(const char *ct)
{
    if (!ct || strncmp(ct, "application/grpc", 16) != 0)
        return false;
    return ct[16] == 0 || ct[16] == '+' || ct[16] == ';';
}

static void call_dispatch(struct rpc_call *call)
{
    struct rpc_conn *c = call->conn;
    if (!call->http_method || strcmp(call->http_method, "POST") != 0) {
        call_respond_http(call, "405");
        return;
    }
    if (!content_type_is_grpc(call->content_type)) {
        call_respond_http(call, "415");
        return;
    }
    if (call->header_overflow) {
        call_abortf(call, GRPC_RESOURCE_EXHAUSTED, "grpc: header list larger than max (%zu)",
                    c->cfg->header_max_bytes);
        return;
    }
    const char *path = call->path ? call->path : "";
    const struct rpc_method *m = server_lookup(c->srv, path);
    if (!m) {
        call_unknown_method(call, path);
        return;
    }
    if (call->timeout) {
        uint64_t ms;
        if (!rpc_timeout_parse(call->timeout, strlen(call->timeout), &ms)) {
            call_abortf(call, GRPC_INTERNAL, "transport: malformed grpc-timeout: %.40s",
                        call->timeout);
            return;
        }
        call->deadline_ms = conn_now(c) + ms;
    }
    call->method = m;
    c->last_active_ms = conn_now(c);
    if (c->cfg->observer.on_start)
        c->cfg->observer.on_start(c->cfg->observer.ctx, (size_t)(m - c->srv->methods), m);
    if (m->kind != RPC_UNARY) {
        call->owned = true;
        if (m->on_start)
            m->on_start(call, m->ctx);
    }
}

static void call_message(struct rpc_call *call, const uint8_t *data, size_t len)
{
    const struct rpc_method *m = call->method;
    call->msgs_in++;
    if (m->kind == RPC_UNARY || m->kind == RPC_SERVER_STREAMING) {
        if (call->msgs_in > 1) {
            call_abort(call, GRPC_INTERNAL, "grpc: too many requests for a call that takes one");
            return;
        }
        call->unary_req = rpc_unpack(m->request, &call->arena, data, len);
        if (!call->unary_req)
            call_abort(call, GRPC_INVALID_ARGUMENT,
                       "grpc: error unmarshalling request: invalid protobuf message");
        return;
    }
    arena_reset(&call->msg_arena);
    ProtobufCMessage *msg = rpc_unpack(m->request, &call->msg_arena, data, len);
    if (!msg) {
        call_abort(call, GRPC_INVALID_ARGUMENT,
                   "grpc: error unmarshalling request: invalid protobuf message");
        return;
    }
    m->on_message(call, msg, m->ctx);
}

/* The client sent END_STREAM: a unary request is complete now. */
static void call_remote_end(struct rpc_call *call)
{
    if (!call->method || call->finished)
        return;
    const struct rpc_method *m = call->method;
    if (!rpc_deframer_idle(&call->in)) {
        call_abort(call, GRPC_INTERNAL, "grpc: request ended inside a message");
        return;
    }
    if (m->kind == RPC_UNARY || m->kind == RPC_SERVER_STREAMING) {
        if (!call->unary_req) {
            call_abort(call, GRPC_INTERNAL, "grpc: half-closed without a request");
            return;
        }
        if (m->kind == RPC_UNARY)
            call->owned = true;
        m->on_message(call, call->unary_req, m->ctx);
        return;
    }
    if (m->on_half_close)
        m->on_half_close(call, m->ctx);
}

/* ---- nghttp2 callbacks -------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct rpc_conn *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    /* nghttp2 refuses streams past the advertised limit; this is the same bound kept by us in
     * case the limit was lowered while a peer's SETTINGS ACK was in flight. */
    if (c->calls_len >= c->cfg->streams_max || c->shutdown_phase == 2) {
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    struct rpc_call *call = calloc(1, sizeof(*call));
    if (!call)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    call->conn = c;
    call->stream_id = frame->hd.stream_id;
    arena_init(&call->arena, 1024);
    arena_init(&call->msg_arena, 4096);
    call->next = c->calls;
    if (c->calls)
        c->calls->prev = call;
    c->calls = call;
    c->calls_len++;
    nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, call);
    return 0;
}

static const char *arena_strndup(struct arena *a, const uint8_t *s, size_t len)
{
    char *p = arena_alloc(a, len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = 0;
    }
    return p;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct rpc_conn *c = user;
    struct rpc_call *call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!call || call->method || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers from a client carry nothing gRPC needs */
    call->header_bytes += namelen + valuelen + 32;
    if (call->header_bytes > c->cfg->header_max_bytes) {
        call->header_overflow = true;
        return 0;
    }
    const char *v = arena_strndup(&call->arena, value, valuelen);
    if (!v)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
#define IS(s) (namelen == sizeof(s) - 1 && memcmp(name, s, namelen) == 0)
    if (IS(":path"))
        call->path = v;
    else if (IS(":method"))
        call->http_method = v;
    else if (IS("content-type"))
        call->content_type = v;
    else if (IS("grpc-timeout"))
        call->timeout = v;
    else if (IS("grpc-encoding"))
        call->encoding = v;
    else if (namelen > 0 && name[0] != ':' && call->md_len < c->cfg->metadata_max) {
        if (call->md_len == call->md_cap) {
            size_t cap = call->md_cap ? call->md_cap * 2 : 8;
            struct rpc_md *n = arena_alloc(&call->arena, cap * sizeof(*n));
            if (!n)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            if (call->md_len)
                memcpy(n, call->md, call->md_len * sizeof(*n));
            call->md = n;
            call->md_cap = cap;
        }
        const char *k = arena_strndup(&call->arena, name, namelen);
        if (!k)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        call->md[call->md_len++] = (struct rpc_md){k, v};
    }
#undef IS
    return 0;
}

/* CVE-2023-44487: a token bucket over RST_STREAM frames from the client. */
static void conn_count_reset(struct rpc_conn *c)
{
    uint64_t now = conn_now(c);
    uint64_t cap = (uint64_t)c->cfg->resets_burst * 1000;
    c->reset_tokens_milli += (now - c->reset_ms) * c->cfg->resets_per_sec;
    if (c->reset_tokens_milli > cap)
        c->reset_tokens_milli = cap;
    c->reset_ms = now;
    if (c->reset_tokens_milli >= 1000) {
        c->reset_tokens_milli -= 1000;
        return;
    }
    log_write(c->cfg->log, LOG_WARN, "msg=\"too many stream resets, closing\" conn=%p", (void *)c);
    nghttp2_session_terminate_session(c->h2, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* PING flood defence as grpc-go's keepalive enforcement: a PING sooner than
 * ping_min_interval_ms after the previous one is a strike (sending HEADERS or DATA forgives
 * them); past ping_strikes_max the client gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings",
 * the debug text grpc clients react to by slowing their keepalive down. */
static void conn_count_ping(struct rpc_conn *c)
{
    uint64_t now = conn_now(c);
    if (c->last_ping_recv_ms && now - c->last_ping_recv_ms < c->cfg->ping_min_interval_ms)
        c->ping_strikes++;
    c->last_ping_recv_ms = now;
    if (c->ping_strikes <= c->cfg->ping_strikes_max || c->close_after_send)
        return;
    log_write(c->cfg->log, LOG_WARN, "msg=\"too many pings, closing\" conn=%p", (void *)c);
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                          NGHTTP2_ENHANCE_YOUR_CALM, (const uint8_t *)"too_many_pings", 14);
    c->close_after_send = true;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct rpc_conn *c = user;
    struct rpc_call *call;
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            c->got_settings = true;
        break;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
            c->ping_outstanding = false;
            if (c->shutdown_phase == 1)
                conn_shutdown_final(c);
        } else
            conn_count_ping(c);
        break;
    case NGHTTP2_RST_STREAM:
        conn_count_reset(c);
        break;
    case NGHTTP2_HEADERS:
        call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
        if (!call)
            break;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
            call_dispatch(call);
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
            call_remote_end(call);
        break;
    case NGHTTP2_DATA:
        call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
        if (call && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            call_remote_end(call);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user)
{
    struct rpc_conn *c = user;
    struct rpc_call *call = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!call || !call->method)
        return 0;
    while (len > 0 && !call->finished) {
        const uint8_t *msg;
        size_t msg_len = 0;
        size_t before = rpc_deframer_buffered(&call->in);
        if (c->in_buffered - before + BATON_MIN(before + len, c->cfg->recv_msg_max_bytes) >
            c->cfg->conn_in_max_bytes) {
            /* Many calls each holding part of a large message: refuse this one rather than
             * let one connection pin streams_max times the message bound. */
            call_abortf(call, GRPC_RESOURCE_EXHAUSTED,
                        "grpc: connection holds more than %zu bytes of partial requests",
                        c->cfg->conn_in_max_bytes);
            break;
        }
        enum rpc_deframe_result res =
            rpc_deframe(&call->in, &data, &len, c->cfg->recv_msg_max_bytes, &msg, &msg_len);
        c->in_buffered = c->in_buffered - before + rpc_deframer_buffered(&call->in);
        switch (res) {
        case RPC_DEFRAME_MORE:
            return 0;
        case RPC_DEFRAME_MESSAGE:
            call_message(call, msg, msg_len);
            break;
        case RPC_DEFRAME_TOO_LARGE:
            call_abortf(call, GRPC_RESOURCE_EXHAUSTED,
                        "grpc: received message larger than max (%zu vs. %zu)", msg_len,
                        c->cfg->recv_msg_max_bytes);
            break;
        case RPC_DEFRAME_COMPRESSED:
            if (call->encoding && strcmp(call->encoding, "identity") != 0)
                call_abortf(call, GRPC_UNIMPLEMENTED,
                            "grpc: Decompressor is not installed for grpc-encoding \"%.40s\"",
                            call->encoding);
            else
                call_abort(call, GRPC_INTERNAL,
                           "grpc: compressed flag set with identity or empty encoding");
            break;
        case RPC_DEFRAME_BAD_FLAG:
            call_abort(call, GRPC_INTERNAL, "grpc: received unexpected payload format");
            break;
        case RPC_DEFRAME_NOMEM:
            call_abort(call, GRPC_RESOURCE_EXHAUSTED, "grpc: out of memory");
            break;
        }
    }
    return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct rpc_conn *c = user;
    if (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA)
        c->ping_strikes = 0;
    /* Trailers went out while the client may still send: tell it to stop (gRPC over HTTP/2:
     * RST_STREAM(NO_ERROR) after the status). */
    if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(h2, frame->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static void call_free(struct rpc_call *call)
{
    struct rpc_conn *c = call->conn;
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    c->calls_len--;
    call_report_end(call, GRPC_CANCELLED);
    conn_out_sub(c, rpc_outq_pending(&call->out));
    c->in_buffered -= rpc_deframer_buffered(&call->in);
    rpc_outq_free(&call->out);
    rpc_deframer_free(&call->in);
    arena_free(&call->arena);
    arena_free(&call->msg_arena);
    free(call);
}

/* The handler loses a call it holds when the stream goes away under it. */
static void call_cancel(struct rpc_call *call, int code)
{
    if (!call->owned)
        return;
    call->owned = false;
    call->finished = true;
    if (call->method->on_cancel)
        call->method->on_cancel(call, code, call->method->ctx);
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *user)
{
    struct rpc_conn *c = user;
    struct rpc_call *call = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!call)
        return 0;
    call_cancel(call, GRPC_CANCELLED);
    call_free(call);
    if (c->calls_len == 0)
        c->last_active_ms = conn_now(c);
    return 0;
}

/* ---- Connection --------------------------------------------------------------------------- */

int rpc_conn_create(struct rpc_server *srv, rpc_notify_fn notify, void *notify_ctx,
                    struct rpc_conn **out)
{
    struct rpc_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return BATON_ENOMEM;
    c->srv = srv;
    c->cfg = &srv->cfg;
    c->notify = notify;
    c->notify_ctx = notify_ctx;
    c->created_ms = c->last_recv_ms = c->last_active_ms = c->reset_ms = conn_now(c);
    c->reset_tokens_milli = (uint64_t)c->cfg->resets_burst * 1000;

    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        free(c);
        return BATON_ENOMEM;
    }
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        free(c);
        return BATON_ENOMEM;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    /* nghttp2's own reset limiter answers INTERNAL_ERROR; ours (ENHANCE_YOUR_CALM) trips first. */
    nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)c->cfg->resets_burst * 4,
                                               (uint64_t)c->cfg->resets_per_sec * 4);
    nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
    nghttp2_option_set_no_http_messaging(opt, 1);
    /* gRPC has no use for stream priorities; without this nghttp2 keeps closed streams in its
     * priority tree, up to the concurrent-stream limit per connection (~1 MiB per busy
     * connection at our limit, grown by every stream until then). */
    nghttp2_option_set_no_closed_streams(opt, 1);
    int rv = nghttp2_session_server_new2(&c->h2, cbs, c, opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rv != 0) {
        free(c);
        return BATON_ENOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, c->cfg->streams_max},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->cfg->window_bytes},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)c->cfg->header_max_bytes},
    };
    rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, BATON_ARRAY_LEN(iv));
    if (rv == 0) {
        /* A connection window of a few streams' worth keeps large messages moving. */
        int32_t conn_window = (int32_t)BATON_MIN((uint64_t)c->cfg->window_bytes * 4, 1u << 30);
        rv = nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, conn_window);
    }
    if (rv != 0) {
        nghttp2_session_del(c->h2);
        free(c);
        return BATON_ENOMEM;
    }
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->stats.conns++;
    srv->stats.conns_total++;
    *out = c;
    return 0;
}

int rpc_conn_recv(struct rpc_conn *c, const void *data, size_t len)
{
    if (c->fatal)
        return BATON_EPROTO;
    c->last_recv_ms = conn_now(c);
    c->ping_outstanding = false;
    c->srv->stats.bytes_received += len;
    ssize_t n = nghttp2_session_mem_recv(c->h2, data, len);
    if (n < 0) {
        log_write(c->cfg->log, LOG_INFO, "msg=\"closing connection\" conn=%p err=\"%s\"", (void *)c,
                  nghttp2_strerror((int)n));
        c->fatal = true;
        return BATON_EPROTO;
    }
    conn_notify(c);
    return 0;
}

static bool server_drained(const struct rpc_server *s)
{
    return s->stats.out_buffered <= s->cfg.server_out_max_bytes / 2;
}

/* Tells handlers whose sends were refused that the output has drained to half the bounds. */
static void conn_fire_writable(struct rpc_conn *c)
{
    if (c->out_pending > c->cfg->conn_out_max_bytes / 2 || !server_drained(c->srv))
        return;
    for (struct rpc_call *call = c->calls; call; call = call->next) {
        if (!call->blocked || !call->owned || call->finished ||
            rpc_outq_pending(&call->out) > c->cfg->stream_out_max_bytes / 2)
            continue;
        call->blocked = false;
        if (call->method->on_writable)
            call->method->on_writable(call, call->method->ctx);
    }
}

/* The server-wide bound drained: calls refused by it may wait on any connection. */
static void server_fire_writable(struct rpc_server *s)
{
    if (!s->blocked || !server_drained(s))
        return;
    s->blocked = false;
    for (struct rpc_conn *c = s->conns; c; c = c->next)
        conn_fire_writable(c);
}

int rpc_conn_send(struct rpc_conn *c, struct buf *out, size_t max_bytes)
{
    if (c->fatal)
        return 0;
    size_t start = out->len;
    while (out->len - start < max_bytes) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            c->fatal = true;
            return BATON_EPROTO;
        }
        if (n == 0)
            break;
        int rc = buf_append(out, data, (size_t)n);
        if (rc)
            return rc;
        c->srv->stats.bytes_sent += (uint64_t)n;
    }
    conn_fire_writable(c);
    server_fire_writable(c->srv);
    return 0;
}

void rpc_conn_tick(struct rpc_conn *c)
{
    const struct rpc_server_config *cfg = c->cfg;
    uint64_t now = conn_now(c);
    if (c->fatal)
        return;
    if (!c->got_settings && now - c->created_ms >= cfg->handshake_timeout_ms) {
        log_write(cfg->log, LOG_INFO, "msg=\"no HTTP/2 handshake in time, closing\" conn=%p",
                  (void *)c);
        c->fatal = true;
        conn_notify(c);
        return;
    }
    for (struct rpc_call *call = c->calls; call; call = call->next)
        if (call->method && !call->finished && call->deadline_ms && now >= call->deadline_ms)
            call_abort(call, GRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
    if (c->shutdown_phase == 1 && now - c->shutdown_ms >= 1000)
        conn_shutdown_final(c); /* the PING ACK is late: one second is RTT enough */
    if (cfg->idle_timeout_ms && c->calls_len == 0 && !c->shutdown_phase &&
        now - c->last_active_ms >= cfg->idle_timeout_ms)
        rpc_conn_shutdown(c);
    if (c->ping_outstanding && now - c->ping_sent_ms >= cfg->keepalive_timeout_ms) {
        log_write(cfg->log, LOG_INFO, "msg=\"keepalive ping unanswered, closing\" conn=%p",
                  (void *)c);
        c->fatal = true;
        conn_notify(c);
        return;
    }
    if (cfg->keepalive_ms && !c->ping_outstanding && now - c->last_recv_ms >= cfg->keepalive_ms) {
        if (nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL) == 0) {
            c->ping_outstanding = true;
            c->ping_sent_ms = now;
            conn_notify(c);
        }
    }
}

/* Graceful shutdown in two steps, as nghttp2 and grpc-go do it: a GOAWAY notice (last stream
 * id 2^31-1) with a PING; once the PING is answered, every stream the client opened before it
 * saw the notice has reached us, and the final GOAWAY names the last one we will serve. */
void rpc_conn_shutdown(struct rpc_conn *c)
{
    if (c->shutdown_phase || c->fatal)
        return;
    c->shutdown_phase = 1;
    c->shutdown_ms = conn_now(c);
    nghttp2_submit_shutdown_notice(c->h2);
    nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL);
    conn_notify(c);
}

static void conn_shutdown_final(struct rpc_conn *c)
{
    c->shutdown_phase = 2;
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    conn_notify(c);
}

bool rpc_conn_done(const struct rpc_conn *c)
{
    if (c->fatal)
        return true;
    bool want_write = nghttp2_session_want_write(c->h2);
    return (c->close_after_send && !want_write) ||
           (!nghttp2_session_want_read(c->h2) && !want_write);
}

size_t rpc_conn_calls(const struct rpc_conn *c)
{
    return c->calls_len;
}

size_t rpc_conn_buffered_bytes(const struct rpc_conn *c)
{
    return c->out_pending;
}

void rpc_conn_destroy(struct rpc_conn *c)
{
    if (!c)
        return;
    /* Handlers first, while every call is still intact; then the session, whose teardown
     * closes each stream (on_stream_close frees the calls). */
    for (struct rpc_call *call = c->calls; call; call = call->next)
        call_cancel(call, GRPC_CANCELLED);
    while (c->calls) {
        nghttp2_session_set_stream_user_data(c->h2, c->calls->stream_id, NULL);
        call_free(c->calls);
    }
    nghttp2_session_del(c->h2);
    struct rpc_server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->stats.conns--;
    free(c);
    server_fire_writable(srv); /* its output no longer counts against the server's bound */
}

/* ---- Calls -------------------------------------------------------------------------------- */

static int call_queue(struct rpc_call *call, const struct rpc_msg_src *src)
{
    BATON_ASSERT(call->owned && !call->finished);
    struct rpc_conn *c = call->conn;
    const struct rpc_method *m = call->method;
    bool one_response = m->kind == RPC_UNARY || m->kind == RPC_CLIENT_STREAMING;
    if (one_response && call->sent_one)
        return BATON_ECLOSED;
    if (rpc_outq_pending(&call->out) >= c->cfg->stream_out_max_bytes ||
        c->out_pending >= c->cfg->conn_out_max_bytes ||
        c->srv->stats.out_buffered >= c->cfg->server_out_max_bytes) {
        /* Any refusal also marks the server: if this connection drains while the server is
         * still above half its bound, only another connection's drain can wake the call. */
        call->blocked = true;
        c->srv->blocked = true;
        c->srv->stats.out_refused++;
        return BATON_EBUSY;
    }
    size_t before = rpc_outq_pending(&call->out);
    int rc = rpc_outq_frame(&call->out, src);
    if (rc)
        return rc;
    conn_out_add(c, rpc_outq_pending(&call->out) - before);
    call->sent_one = true;
    if (!call->headers_sent) {
        rc = call_send_headers(call);
        if (rc)
            return rc;
    } else if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(c->h2, call->stream_id);
    }
    conn_notify(c);
    return 0;
}

int rpc_call_send(struct rpc_call *call, const ProtobufCMessage *msg)
{
    return call_queue(call, &(struct rpc_msg_src){.msg = msg});
}

int rpc_call_send_bytes(struct rpc_call *call, const void *msg, size_t len)
{
    return call_queue(call, &(struct rpc_msg_src){.bytes = msg, .len = len});
}

int rpc_call_send_fill(struct rpc_call *call, size_t len, rpc_fill_fn fill, void *ctx)
{
    return call_queue(call, &(struct rpc_msg_src){.len = len, .fill = fill, .fill_ctx = ctx});
}

void rpc_call_finish(struct rpc_call *call, int code, const char *message)
{
    BATON_ASSERT(call->owned && !call->finished);
    call->owned = false;
    call_end(call, code, message);
}

void rpc_call_finish_err(struct rpc_call *call, int err)
{
    struct rpc_status st = rpc_status_from_err(err);
    rpc_call_finish(call, st.code, st.message);
}

bool rpc_call_writable(const struct rpc_call *call)
{
    return !call->finished &&
           rpc_outq_pending(&call->out) < call->conn->cfg->stream_out_max_bytes &&
           call->conn->out_pending < call->conn->cfg->conn_out_max_bytes &&
           call->conn->srv->stats.out_buffered < call->conn->cfg->server_out_max_bytes;
}

const char *rpc_call_metadata(const struct rpc_call *call, const char *name)
{
    for (size_t i = 0; i < call->md_len; i++)
        if (strcmp(call->md[i].name, name) == 0)
            return call->md[i].value;
    return NULL;
}

const char *rpc_call_path(const struct rpc_call *call)
{
    return call->path;
}

struct arena *rpc_call_arena(struct rpc_call *call)
{
    return &call->arena;
}

uint64_t rpc_call_deadline_ms(const struct rpc_call *call)
{
    return call->deadline_ms;
}

void rpc_call_set_user(struct rpc_call *call, void *user)
{
    call->user = user;
}

void *rpc_call_user(const struct rpc_call *call)
{
    return call->user;
}
