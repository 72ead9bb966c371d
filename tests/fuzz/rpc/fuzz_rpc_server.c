/*
 * libFuzzer driver: a gRPC server connection (rpc_conn) fed arbitrary bytes, serving a few
 * etcd methods (so request decoding of etcd's protos is fuzzed too): unary Range answered at
 * once, Put held and answered after the input, and the bidi Watch stream echoing.
 *
 * Input: byte 0 is a mode; bit 0 set = prepend a valid preface and SETTINGS so the fuzzer
 * reaches frame handling quickly; byte 1 picks where the rest is split into two reads. Then
 * the output is drained, time moves past every deadline and timeout, and held calls finish.
 */
#include "rpc/rpc.h"

#include "rpc.pb-c.h"

#include <stdint.h>
#include <string.h>

static uint64_t now_ms;
static uint64_t fuzz_clock(void *ctx)
{
    return now_ms;
}

#define HELD_MAX 16
static struct rpc_call *held[HELD_MAX];
static int held_len;

static void forget(struct rpc_call *call, int code, void *ctx)
{
    for (int i = 0; i < held_len; i++)
        if (held[i] == call)
            held[i] = held[--held_len];
}

static void range(struct rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    const Etcdserverpb__RangeRequest *req = (const Etcdserverpb__RangeRequest *)m;
    Etcdserverpb__RangeResponse resp = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    resp.count = (int64_t)req->key.len;
    if (rpc_call_send(call, &resp.base) == 0)
        rpc_call_finish(call, GRPC_OK, NULL);
    else
        rpc_call_finish_err(call, BATON_EBUSY);
}

static void put(struct rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    if (held_len == HELD_MAX) {
        rpc_call_finish_err(call, BATON_ENOSPACE);
        return;
    }
    held[held_len++] = call;
}

static void watch(struct rpc_call *call, const ProtobufCMessage *m, void *ctx)
{
    const Etcdserverpb__WatchRequest *req = (const Etcdserverpb__WatchRequest *)m;
    Etcdserverpb__WatchResponse resp = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    resp.created =
        req->request_union_case == ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    if (req->request_union_case == ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST) {
        rpc_call_finish(call, GRPC_CANCELLED, "etcdserver: watch canceled");
        return;
    }
    rpc_call_send(call, &resp.base); /* EBUSY is fine: the watcher just misses this one */
}

static void watch_done(struct rpc_call *call, void *ctx)
{
    rpc_call_finish(call, GRPC_OK, NULL);
}

static struct rpc_server *server(void)
{
    static struct rpc_server *srv;
    if (srv)
        return srv;
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fuzz_clock;
    cfg.streams_max = 32;
    cfg.stream_out_max_bytes = 64 * 1024;
    cfg.conn_out_max_bytes = 256 * 1024;
    cfg.recv_msg_max_bytes = 64 * 1024;
    cfg.resets_burst = 20;
    cfg.keepalive_ms = 1000;
    cfg.idle_timeout_ms = 5000;
    if (rpc_server_create(&cfg, &srv))
        __builtin_trap();
    struct rpc_method ms[] = {
        {.path = "/etcdserverpb.KV/Range",
         .kind = RPC_UNARY,
         .request = &etcdserverpb__range_request__descriptor,
         .on_message = range},
        {.path = "/etcdserverpb.KV/Put",
         .kind = RPC_UNARY,
         .request = &etcdserverpb__put_request__descriptor,
         .on_message = put,
         .on_cancel = forget},
        {.path = "/etcdserverpb.Watch/Watch",
         .kind = RPC_BIDI_STREAMING,
         .request = &etcdserverpb__watch_request__descriptor,
         .on_message = watch,
         .on_half_close = watch_done},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(ms); i++)
        if (rpc_server_register(srv, &ms[i]))
            __builtin_trap();
    return srv;
}

static void drain(struct rpc_conn *c)
{
    struct buf out = {0};
    for (int i = 0; i < 64; i++) {
        buf_clear(&out);
        if (rpc_conn_send(c, &out, 1 << 20) || out.len == 0)
            break;
    }
    buf_free(&out);
}

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                 "\x00\x00\x00\x04\x00\x00\x00\x00\x00";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct rpc_conn *c;
    if (rpc_conn_create(server(), NULL, NULL, &c))
        __builtin_trap();
    uint8_t mode = data[0];
    size_t split = data[1];
    data += 2, size -= 2;
    if (split > size)
        split = size;
    int rc = 0;
    if (mode & 1)
        rc = rpc_conn_recv(c, preface, sizeof(preface) - 1);
    if (rc == 0)
        rc = rpc_conn_recv(c, data, split);
    drain(c);
    if (rc == 0)
        rpc_conn_recv(c, data + split, size - split);
    drain(c);
    for (int i = 0; i < 3; i++) {
        now_ms += 4000;
        rpc_conn_tick(c);
        drain(c);
    }
    while (held_len > 0) {
        struct rpc_call *call = held[--held_len];
        rpc_call_finish(call, GRPC_OK, NULL);
    }
    drain(c);
    rpc_conn_destroy(c);
    held_len = 0;
    return 0;
}
