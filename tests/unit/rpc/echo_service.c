/* The Echo test service: handlers for each call kind, written as a real service would be. */
#include "echo_service.h"

#include <stdio.h>
#include <string.h>

struct echo_state echo_state;

static void reply(struct rpc_call *call, const uint8_t *p, size_t len, int seq, int *rc)
{
    Baton__Test__EchoReply r = BATON__TEST__ECHO_REPLY__INIT;
    r.payload.data = (uint8_t *)p;
    r.payload.len = len;
    r.seq = seq;
    const char *token = rpc_call_metadata(call, "token");
    r.token = (char *)(token ? token : "");
    *rc = rpc_call_send(call, &r.base);
}

static void unary_msg(struct rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    const Baton__Test__EchoRequest *req = (const Baton__Test__EchoRequest *)m;
    echo_state.started++;
    if (req->status) {
        rpc_call_finish(call, req->status, req->message);
        return;
    }
    int rc;
    if (req->count > 0) {
        uint8_t *big = arena_alloc(rpc_call_arena(call), (size_t)req->count);
        memset(big, 'x', (size_t)req->count);
        reply(call, big, (size_t)req->count, 0, &rc);
    } else {
        reply(call, req->payload.data, req->payload.len, 0, &rc);
    }
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

/* Server streaming with backpressure: progress kept in the call's user pointer. */
struct stream_progress {
    const Baton__Test__EchoRequest *req;
    int sent;
};

static void stream_pump(struct rpc_call *call)
{
    struct stream_progress *p = rpc_call_user(call);
    while (p->sent < p->req->count) {
        int rc;
        reply(call, p->req->payload.data, p->req->payload.len, p->sent, &rc);
        if (rc == BATON_EBUSY) {
            echo_state.ebusy++;
            return; /* on_writable resumes */
        }
        if (rc) {
            rpc_call_finish_err(call, rc);
            return;
        }
        p->sent++;
    }
    rpc_call_finish(call, GRPC_OK, NULL);
}

static void stream_msg(struct rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    echo_state.started++;
    struct stream_progress *p = arena_alloc(rpc_call_arena(call), sizeof(*p));
    p->req = (const Baton__Test__EchoRequest *)m; /* one-message calls: alive with the call */
    p->sent = 0;
    rpc_call_set_user(call, p);
    stream_pump(call);
}

static void stream_writable(struct rpc_call *call, void *ctx)
{
    echo_state.writable++;
    stream_pump(call);
}

static void bidi_start(struct rpc_call *call, void *ctx)
{
    echo_state.started++;
    int *seq = arena_alloc(rpc_call_arena(call), sizeof(int));
    *seq = 0;
    rpc_call_set_user(call, seq);
}

static void bidi_msg(struct rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    const Baton__Test__EchoRequest *req = (const Baton__Test__EchoRequest *)m;
    int *seq = rpc_call_user(call);
    if (req->status) {
        rpc_call_finish(call, req->status, req->message);
        return;
    }
    int rc;
    reply(call, req->payload.data, req->payload.len, (*seq)++, &rc);
    if (rc == BATON_EBUSY)
        echo_state.ebusy++;
    else if (rc)
        rpc_call_finish_err(call, rc);
}

static void bidi_half_close(struct rpc_call *call, void *ctx)
{
    rpc_call_finish(call, GRPC_OK, "bye");
}

static void collect_start(struct rpc_call *call, void *ctx)
{
    echo_state.started++;
    int *n = arena_alloc(rpc_call_arena(call), sizeof(int));
    *n = 0;
    rpc_call_set_user(call, n);
}

static void collect_msg(struct rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    (*(int *)rpc_call_user(call))++;
}

static void collect_half_close(struct rpc_call *call, void *ctx)
{
    int rc;
    reply(call, (const uint8_t *)"sum", 3, *(int *)rpc_call_user(call), &rc);
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

static void hold_msg(struct rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    echo_state.started++;
    if (echo_state.held_len == ECHO_HELD_MAX) {
        rpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "too many held calls");
        return;
    }
    echo_state.held[echo_state.held_len++] = call;
}

static void held_remove(struct rpc_call *call)
{
    for (int i = 0; i < echo_state.held_len; i++) {
        if (echo_state.held[i] == call) {
            echo_state.held[i] = echo_state.held[--echo_state.held_len];
            return;
        }
    }
}

static void on_cancel(struct rpc_call *call, int code, void *ctx)
{
    echo_state.cancels++;
    echo_state.last_cancel_code = code;
    held_remove(call);
}

void echo_finish_held(int i, const char *payload)
{
    struct rpc_call *call = echo_state.held[i];
    held_remove(call);
    int rc;
    reply(call, (const uint8_t *)payload, strlen(payload), 0, &rc);
    rpc_call_finish(call, GRPC_OK, NULL);
}

int echo_register(struct rpc_server *srv)
{
    const ProtobufCMessageDescriptor *req = &baton__test__echo_request__descriptor;
    struct rpc_method ms[] = {
        {.path = "/baton.test.Echo/Unary",
         .kind = RPC_UNARY,
         .request = req,
         .on_message = unary_msg,
         .on_cancel = on_cancel},
        {.path = "/baton.test.Echo/Stream",
         .kind = RPC_SERVER_STREAMING,
         .request = req,
         .on_message = stream_msg,
         .on_writable = stream_writable,
         .on_cancel = on_cancel},
        {.path = "/baton.test.Echo/Bidi",
         .kind = RPC_BIDI_STREAMING,
         .request = req,
         .on_start = bidi_start,
         .on_message = bidi_msg,
         .on_half_close = bidi_half_close,
         .on_cancel = on_cancel},
        {.path = "/baton.test.Echo/Collect",
         .kind = RPC_CLIENT_STREAMING,
         .request = req,
         .on_start = collect_start,
         .on_message = collect_msg,
         .on_half_close = collect_half_close,
         .on_cancel = on_cancel},
        {.path = "/baton.test.Echo/Hold",
         .kind = RPC_UNARY,
         .request = req,
         .on_message = hold_msg,
         .on_cancel = on_cancel},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(ms); i++) {
        int rc = rpc_server_register(srv, &ms[i]);
        if (rc)
            return rc;
    }
    memset(&echo_state, 0, sizeof(echo_state));
    return 0;
}

/* ---- Client recorder ---------------------------------------------------------------------- */

void echo_result_init(struct echo_result *r)
{
    memset(r, 0, sizeof(*r));
    r->order_ok = true;
    r->code = -1;
}

static void result_message(struct rpc_client_call *call, const uint8_t *data, size_t len, void *ctx)
{
    struct echo_result *r = ctx;
    struct arena a;
    arena_init(&a, 4096);
    Baton__Test__EchoReply *rep =
        (Baton__Test__EchoReply *)rpc_unpack(&baton__test__echo_reply__descriptor, &a, data, len);
    if (!rep) {
        r->order_ok = false;
    } else {
        if (rep->seq != r->next_seq)
            r->order_ok = false;
        r->next_seq = rep->seq + 1;
        r->last_len = rep->payload.len;
        if (rep->payload.len)
            memcpy(r->last_payload_head, rep->payload.data,
                   BATON_MIN(rep->payload.len, sizeof(r->last_payload_head)));
        snprintf(r->token, sizeof(r->token), "%s", rep->token);
    }
    r->msgs++;
    arena_free(&a);
}

static void result_close(struct rpc_client_call *call, int code, const char *message, void *ctx)
{
    struct echo_result *r = ctx;
    r->closed = true;
    r->code = code;
    snprintf(r->message, sizeof(r->message), "%s", message);
}

const struct rpc_client_callbacks echo_result_cbs = {
    .on_message = result_message,
    .on_close = result_close,
};
