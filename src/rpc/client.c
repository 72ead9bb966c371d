/*
 * The gRPC client core: one nghttp2 client session, many concurrent calls, driven through
 * mem_recv / mem_send like the server. A call reports each response message and then, exactly
 * once, its status: from grpc-status / grpc-message trailers when the server sent them, else
 * derived from the HTTP status or the stream's reset code as the gRPC spec maps them. Deadlines
 * are enforced here too (the server also gets grpc-timeout).
 */
#include "rpc/rpc_int.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rpc_client {
    struct rpc_client_config cfg;
    nghttp2_session *h2;
    rpc_notify_fn notify;
    void *notify_ctx;
    struct rpc_client_call *calls;
    size_t calls_len;  /* structs alive (includes closed calls whose stream is still open) */
    size_t calls_open; /* calls whose on_close has not run */
    uint64_t last_recv_ms, ping_sent_ms;
    uint32_t goaway_code;
    bool ping_outstanding, fatal, goaway;
};

struct rpc_client_call {
    struct rpc_client *cl;
    struct rpc_client_call *prev, *next;
    int32_t stream_id;
    const struct rpc_client_callbacks *cbs;
    void *ctx;
    struct rpc_outq out;
    struct rpc_deframer in;
    uint64_t deadline_ms;
    int http_status;
    int grpc_status; /* -1 until the trailers say */
    struct buf grpc_message;
    bool close_send; /* END_STREAM after the pending output */
    bool deferred;
    bool blocked;
    bool closed; /* on_close ran or cancelled: no more callbacks */
};

static uint64_t client_now(const struct rpc_client *cl)
{
    return cl->cfg.clock(cl->cfg.clock_ctx);
}

static void client_notify(struct rpc_client *cl)
{
    if (cl->notify)
        cl->notify(cl->notify_ctx);
}

void rpc_client_config_default(struct rpc_client_config *cfg)
{
    *cfg = (struct rpc_client_config){
        .recv_msg_max_bytes = 64 << 20,
        .stream_out_max_bytes = 4 << 20,
        .calls_max = 1024,
        .window_bytes = 1 << 20,
        .keepalive_ms = 0,
        .keepalive_timeout_ms = 20 * 1000,
        .authority = "localhost",
    };
}

/* Ends the call for its owner: on_close once, then no callback ever again. */
static void call_close(struct rpc_client_call *call, int code, const char *message)
{
    if (call->closed)
        return;
    call->closed = true;
    call->cl->calls_open--;
    call->cbs->on_close(call, code, message ? message : "", call->ctx);
}

static void call_closef(struct rpc_client_call *call, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void call_closef(struct rpc_client_call *call, int code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    call_close(call, code, msg);
}

static void call_free(struct rpc_client_call *call)
{
    struct rpc_client *cl = call->cl;
    if (call->prev)
        call->prev->next = call->next;
    else
        cl->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    cl->calls_len--;
    rpc_outq_free(&call->out);
    rpc_deframer_free(&call->in);
    buf_free(&call->grpc_message);
    free(call);
}

/* Gives up on a call locally (deadline, bad response) and resets its stream. */
static void call_abort(struct rpc_client_call *call, int code, const char *message)
{
    call_close(call, code, message);
    nghttp2_submit_rst_stream(call->cl->h2, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
    client_notify(call->cl);
}

/* ---- nghttp2 callbacks -------------------------------------------------------------------- */

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct rpc_client_call *call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!call)
        return 0;
#define IS(s) (namelen == sizeof(s) - 1 && memcmp(name, s, namelen) == 0)
    if (IS(":status")) {
        int st = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            st = st * 10 + (value[i] - '0');
        call->http_status = st;
    } else if (IS("grpc-status")) {
        int st = 0;
        for (size_t i = 0; i < valuelen && i < 9; i++) {
            if (value[i] < '0' || value[i] > '9') {
                st = GRPC_UNKNOWN;
                break;
            }
            st = st * 10 + (value[i] - '0');
        }
        call->grpc_status = st;
    } else if (IS("grpc-message")) {
        buf_clear(&call->grpc_message);
        if (rpc_percent_decode(&call->grpc_message, (const char *)value, valuelen))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
#undef IS
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user)
{
    struct rpc_client *cl = user;
    struct rpc_client_call *call = nghttp2_session_get_stream_user_data(h2, stream_id);
    while (call && !call->closed && len > 0) {
        const uint8_t *msg;
        size_t msg_len = 0;
        switch (rpc_deframe(&call->in, &data, &len, cl->cfg.recv_msg_max_bytes, &msg, &msg_len)) {
        case RPC_DEFRAME_MORE:
            return 0;
        case RPC_DEFRAME_MESSAGE:
            call->cbs->on_message(call, msg, msg_len, call->ctx);
            break;
        case RPC_DEFRAME_TOO_LARGE:
            call_closef(call, GRPC_RESOURCE_EXHAUSTED,
                        "grpc: received message larger than max (%zu vs. %zu)", msg_len,
                        cl->cfg.recv_msg_max_bytes);
            nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
            return 0;
        case RPC_DEFRAME_COMPRESSED:
        case RPC_DEFRAME_BAD_FLAG:
            call_close(call, GRPC_INTERNAL, "grpc: compressed or malformed response message");
            nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
            return 0;
        case RPC_DEFRAME_NOMEM:
            call_close(call, GRPC_RESOURCE_EXHAUSTED, "grpc: out of memory");
            nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
            return 0;
        }
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct rpc_client *cl = user;
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK))
        cl->ping_outstanding = false;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        cl->goaway = true;
        cl->goaway_code = frame->goaway.error_code;
    }
    return 0;
}

/* The gRPC spec's mapping of HTTP statuses for responses without grpc-status. */
static int http_to_grpc(int st)
{
    switch (st) {
    case 400:
        return GRPC_INTERNAL;
    case 401:
        return GRPC_UNAUTHENTICATED;
    case 403:
        return GRPC_PERMISSION_DENIED;
    case 404:
        return GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return GRPC_UNAVAILABLE;
    default:
        return GRPC_UNKNOWN;
    }
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *user)
{
    struct rpc_client_call *call = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!call)
        return 0;
    if (call->grpc_status >= 0) {
        call_close(call, call->grpc_status, (const char *)call->grpc_message.data);
    } else if (call->http_status && call->http_status != 200) {
        call_closef(call, http_to_grpc(call->http_status), "unexpected HTTP status code %d",
                    call->http_status);
    } else if (error_code == NGHTTP2_REFUSED_STREAM) {
        call_close(call, GRPC_UNAVAILABLE, "stream refused by the server");
    } else if (error_code == NGHTTP2_CANCEL) {
        call_close(call, GRPC_CANCELLED, "stream cancelled by the server");
    } else if (error_code == NGHTTP2_ENHANCE_YOUR_CALM) {
        call_close(call, GRPC_RESOURCE_EXHAUSTED, "stream reset: ENHANCE_YOUR_CALM");
    } else if (error_code != NGHTTP2_NO_ERROR) {
        call_closef(call, GRPC_INTERNAL, "stream reset with HTTP/2 error code %u", error_code);
    } else {
        call_close(call, GRPC_INTERNAL, "server closed the stream without sending trailers");
    }
    call_free(call);
    return 0;
}

static ssize_t call_data_read(nghttp2_session *h2, int32_t stream_id, uint8_t *dst, size_t len,
                              uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct rpc_client_call *call = src->ptr;
    size_t n = rpc_outq_take(&call->out, dst, len);
    if (rpc_outq_pending(&call->out) == 0 && call->close_send) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (n == 0) {
        call->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* ---- Client ------------------------------------------------------------------------------- */

int rpc_client_create(const struct rpc_client_config *cfg, rpc_notify_fn notify, void *notify_ctx,
                      struct rpc_client **out)
{
    if (!cfg->recv_msg_max_bytes || !cfg->stream_out_max_bytes || !cfg->calls_max ||
        cfg->window_bytes < 65535 || cfg->window_bytes > (1u << 31) - 1)
        return BATON_EINVAL;
    struct rpc_client *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return BATON_ENOMEM;
    cl->cfg = *cfg;
    if (!cl->cfg.clock)
        cl->cfg.clock = rpc_clock_monotonic;
    if (!cl->cfg.authority)
        cl->cfg.authority = "localhost";
    cl->notify = notify;
    cl->notify_ctx = notify_ctx;
    cl->last_recv_ms = client_now(cl);

    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        free(cl);
        return BATON_ENOMEM;
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt;
    int rv = nghttp2_option_new(&opt);
    if (rv == 0) {
        nghttp2_option_set_no_closed_streams(opt, 1); /* as the server: no priority tree */
        rv = nghttp2_session_client_new2(&cl->h2, cbs, cl, opt);
        nghttp2_option_del(opt);
    }
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        free(cl);
        return BATON_ENOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg->window_bytes},
    };
    rv = nghttp2_submit_settings(cl->h2, NGHTTP2_FLAG_NONE, iv, BATON_ARRAY_LEN(iv));
    if (rv == 0) {
        int32_t conn_window = (int32_t)BATON_MIN((uint64_t)cfg->window_bytes * 4, 1u << 30);
        rv = nghttp2_session_set_local_window_size(cl->h2, NGHTTP2_FLAG_NONE, 0, conn_window);
    }
    if (rv != 0) {
        nghttp2_session_del(cl->h2);
        free(cl);
        return BATON_ENOMEM;
    }
    *out = cl;
    return 0;
}

int rpc_client_recv(struct rpc_client *cl, const void *data, size_t len)
{
    if (cl->fatal)
        return BATON_EPROTO;
    cl->last_recv_ms = client_now(cl);
    cl->ping_outstanding = false;
    ssize_t n = nghttp2_session_mem_recv(cl->h2, data, len);
    if (n < 0) {
        log_write(cl->cfg.log, LOG_INFO, "msg=\"client connection failed\" err=\"%s\"",
                  nghttp2_strerror((int)n));
        cl->fatal = true;
        return BATON_EPROTO;
    }
    client_notify(cl);
    return 0;
}

int rpc_client_send(struct rpc_client *cl, struct buf *out, size_t max_bytes)
{
    if (cl->fatal)
        return 0;
    size_t start = out->len;
    while (out->len - start < max_bytes) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(cl->h2, &data);
        if (n < 0) {
            cl->fatal = true;
            return BATON_EPROTO;
        }
        if (n == 0)
            break;
        int rc = buf_append(out, data, (size_t)n);
        if (rc)
            return rc;
    }
    for (struct rpc_client_call *call = cl->calls; call; call = call->next) {
        if (call->blocked && !call->closed &&
            rpc_outq_pending(&call->out) <= cl->cfg.stream_out_max_bytes / 2) {
            call->blocked = false;
            if (call->cbs->on_writable)
                call->cbs->on_writable(call, call->ctx);
        }
    }
    return 0;
}

void rpc_client_tick(struct rpc_client *cl)
{
    uint64_t now = client_now(cl);
    if (cl->fatal)
        return;
    for (struct rpc_client_call *call = cl->calls; call; call = call->next)
        if (!call->closed && call->deadline_ms && now >= call->deadline_ms)
            call_abort(call, GRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
    if (cl->ping_outstanding && now - cl->ping_sent_ms >= cl->cfg.keepalive_timeout_ms) {
        cl->fatal = true;
        client_notify(cl);
        return;
    }
    if (cl->cfg.keepalive_ms && !cl->ping_outstanding &&
        now - cl->last_recv_ms >= cl->cfg.keepalive_ms &&
        nghttp2_submit_ping(cl->h2, NGHTTP2_FLAG_NONE, NULL) == 0) {
        cl->ping_outstanding = true;
        cl->ping_sent_ms = now;
        client_notify(cl);
    }
}

bool rpc_client_done(const struct rpc_client *cl)
{
    return cl->fatal || (!nghttp2_session_want_read(cl->h2) && !nghttp2_session_want_write(cl->h2));
}

size_t rpc_client_calls(const struct rpc_client *cl)
{
    return cl->calls_open;
}

bool rpc_client_goaway(const struct rpc_client *cl, uint32_t *error_code)
{
    if (cl->goaway && error_code)
        *error_code = cl->goaway_code;
    return cl->goaway;
}

void rpc_client_destroy(struct rpc_client *cl)
{
    if (!cl)
        return;
    for (struct rpc_client_call *call = cl->calls; call; call = call->next)
        call_close(call, GRPC_UNAVAILABLE, "connection closed");
    while (cl->calls) {
        nghttp2_session_set_stream_user_data(cl->h2, cl->calls->stream_id, NULL);
        call_free(cl->calls);
    }
    nghttp2_session_del(cl->h2);
    free(cl);
}

/* ---- Calls -------------------------------------------------------------------------------- */

static bool metadata_name_ok(const char *n)
{
    if (!n[0] || n[0] == ':' || strncmp(n, "grpc-", 5) == 0)
        return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
              *p == '.'))
            return false;
    return true;
}

#define CLIENT_MD_MAX 32

int rpc_client_call_start(struct rpc_client *cl, const char *path, const struct rpc_metadata *md,
                          size_t md_len, uint32_t timeout_ms,
                          const struct rpc_client_callbacks *cbs, void *ctx,
                          struct rpc_client_call **out)
{
    if (!path || path[0] != '/' || !cbs || !cbs->on_message || !cbs->on_close ||
        md_len > CLIENT_MD_MAX)
        return BATON_EINVAL;
    for (size_t i = 0; i < md_len; i++)
        if (!metadata_name_ok(md[i].name))
            return BATON_EINVAL;
    if (cl->fatal || !nghttp2_session_check_request_allowed(cl->h2))
        return BATON_ECLOSED;
    if (cl->calls_open >= cl->cfg.calls_max)
        return BATON_EBUSY;
    struct rpc_client_call *call = calloc(1, sizeof(*call));
    if (!call)
        return BATON_ENOMEM;
    call->cl = cl;
    call->cbs = cbs;
    call->ctx = ctx;
    call->grpc_status = -1;

    char timeout[16];
    nghttp2_nv nva[7 + CLIENT_MD_MAX];
    size_t n = 0;
#define ADD(k, v)                                                                                  \
    nva[n++] =                                                                                     \
        (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), NGHTTP2_NV_FLAG_NONE}
    ADD(":method", "POST");
    ADD(":scheme", "http");
    ADD(":path", path);
    ADD(":authority", cl->cfg.authority);
    ADD("content-type", "application/grpc");
    ADD("te", "trailers");
    if (timeout_ms) {
        rpc_timeout_format(timeout_ms, timeout);
        ADD("grpc-timeout", timeout);
        call->deadline_ms = client_now(cl) + timeout_ms;
    }
    for (size_t i = 0; i < md_len; i++)
        ADD(md[i].name, md[i].value);
#undef ADD
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = call_data_read};
    int32_t id = nghttp2_submit_request(cl->h2, NULL, nva, n, &prd, call);
    if (id < 0) {
        free(call);
        return id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? BATON_ECLOSED : BATON_ENOMEM;
    }
    call->stream_id = id;
    call->next = cl->calls;
    if (cl->calls)
        cl->calls->prev = call;
    cl->calls = call;
    cl->calls_len++;
    cl->calls_open++;
    client_notify(cl);
    *out = call;
    return 0;
}

static int client_queue(struct rpc_client_call *call, const ProtobufCMessage *msg,
                        const void *bytes, size_t len)
{
    BATON_ASSERT(!call->closed);
    if (call->close_send)
        return BATON_ECLOSED;
    if (rpc_outq_pending(&call->out) >= call->cl->cfg.stream_out_max_bytes) {
        call->blocked = true;
        return BATON_EBUSY;
    }
    int rc =
        rpc_outq_frame(&call->out, &(struct rpc_msg_src){.msg = msg, .bytes = bytes, .len = len});
    if (rc)
        return rc;
    if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(call->cl->h2, call->stream_id);
    }
    client_notify(call->cl);
    return 0;
}

int rpc_client_call_send(struct rpc_client_call *call, const ProtobufCMessage *msg)
{
    return client_queue(call, msg, NULL, 0);
}

int rpc_client_call_send_bytes(struct rpc_client_call *call, const void *msg, size_t len)
{
    return client_queue(call, NULL, msg, len);
}

int rpc_client_call_close_send(struct rpc_client_call *call)
{
    BATON_ASSERT(!call->closed);
    if (call->close_send)
        return 0;
    call->close_send = true;
    if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(call->cl->h2, call->stream_id);
    }
    client_notify(call->cl);
    return 0;
}

void rpc_client_call_cancel(struct rpc_client_call *call)
{
    if (call->closed)
        return;
    call->closed = true;
    call->cl->calls_open--;
    nghttp2_submit_rst_stream(call->cl->h2, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
    client_notify(call->cl);
}

int rpc_client_unary(struct rpc_client *cl, const char *path, const ProtobufCMessage *msg,
                     uint32_t timeout_ms, const struct rpc_client_callbacks *cbs, void *ctx,
                     struct rpc_client_call **out)
{
    struct rpc_client_call *call;
    int rc = rpc_client_call_start(cl, path, NULL, 0, timeout_ms, cbs, ctx, &call);
    if (rc)
        return rc;
    rc = rpc_client_call_send(call, msg);
    if (rc == 0)
        rc = rpc_client_call_close_send(call);
    if (rc) {
        rpc_client_call_cancel(call);
        return rc;
    }
    *out = call;
    return 0;
}
