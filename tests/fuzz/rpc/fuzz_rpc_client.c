/*
 * libFuzzer driver: the gRPC client core fed arbitrary bytes as if from a server, with three
 * calls open (unary Range, a bidi Watch, one with a short deadline). Response messages are
 * decoded as the etcd types the calls expect, so the response decoding path is fuzzed too.
 *
 * Input: byte 0 picks where the rest is split into two reads; then time moves past every
 * deadline and keepalive and the client is destroyed (open calls get their on_close).
 */
#include "rpc/rpc.h"

#include "rpc.pb-c.h"

#include <stdint.h>
#include <string.h>

static uint64_t now_ms = 1000;
static uint64_t fuzz_clock(void *ctx)
{
    return now_ms;
}

static void on_message(struct rpc_client_call *call, const uint8_t *data, size_t len, void *ctx)
{
    struct arena a;
    arena_init(&a, 1024);
    rpc_unpack(ctx, &a, data, len);
    arena_free(&a);
}

static int closes;
static void on_close(struct rpc_client_call *call, int code, const char *message, void *ctx)
{
    closes++;
    if (!message)
        __builtin_trap();
}

static const struct rpc_client_callbacks cbs = {.on_message = on_message, .on_close = on_close};

static void drain(struct rpc_client *cl)
{
    struct buf out = {0};
    for (int i = 0; i < 64; i++) {
        buf_clear(&out);
        if (rpc_client_send(cl, &out, 1 << 20) || out.len == 0)
            break;
    }
    buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct rpc_client_config cfg;
    rpc_client_config_default(&cfg);
    cfg.clock = fuzz_clock;
    cfg.recv_msg_max_bytes = 64 * 1024;
    cfg.keepalive_ms = 1000;
    struct rpc_client *cl;
    if (rpc_client_create(&cfg, NULL, NULL, &cl))
        __builtin_trap();
    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    struct rpc_client_call *a, *b, *c;
    int started = 0;
    started += rpc_client_unary(cl, "/etcdserverpb.KV/Range", &rr.base, 0, &cbs,
                                (void *)&etcdserverpb__range_response__descriptor, &a) == 0;
    if (rpc_client_call_start(cl, "/etcdserverpb.Watch/Watch", NULL, 0, 0, &cbs,
                              (void *)&etcdserverpb__watch_response__descriptor, &b) == 0) {
        started++;
        Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
        rpc_client_call_send(b, &wr.base);
    }
    started += rpc_client_unary(cl, "/etcdserverpb.KV/Range", &rr.base, 50, &cbs,
                                (void *)&etcdserverpb__range_response__descriptor, &c) == 0;
    drain(cl);
    size_t split = data[0];
    data++, size--;
    if (split > size)
        split = size;
    closes = 0;
    if (rpc_client_recv(cl, data, split) == 0) {
        drain(cl);
        rpc_client_recv(cl, data + split, size - split);
    }
    drain(cl);
    for (int i = 0; i < 3; i++) {
        now_ms += 1000;
        rpc_client_tick(cl);
        drain(cl);
    }
    rpc_client_destroy(cl);
    /* Every started call hears its end exactly once. */
    if (closes != started)
        __builtin_trap();
    return 0;
}
