/*
 * The rpc server and client cores wired together in memory: every call kind, statuses and
 * trailers, metadata, deadlines, cancellation, size and output bounds, and the connection
 * defences. Time comes from a fake clock, so nothing here depends on the machine's speed.
 */
#include "pair.h"
#include "test.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ECHO(m) "/baton.test.Echo/" m

static struct rpc_client_call *call_unary(struct pair *p, const char *path,
                                          const Baton__Test__EchoRequest *req, uint32_t timeout_ms,
                                          struct echo_result *r)
{
    struct rpc_client_call *call;
    echo_result_init(r);
    CHECK_OK(rpc_client_unary(p->cl, path, &req->base, timeout_ms, &echo_result_cbs, r, &call));
    return call;
}

TEST(unary_roundtrip_with_metadata)
{
    struct pair p;
    pair_open(&p, NULL);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    req.payload.data = (uint8_t *)"hello";
    req.payload.len = 5;
    struct echo_result r;
    echo_result_init(&r);
    struct rpc_client_call *call;
    struct rpc_metadata md[] = {{"token", "secret-token"}};
    CHECK_OK(rpc_client_call_start(p.cl, ECHO("Unary"), md, 1, 0, &echo_result_cbs, &r, &call));
    CHECK_OK(rpc_client_call_send(call, &req.base));
    CHECK_OK(rpc_client_call_close_send(call));
    pair_pump(&p);
    CHECK(r.closed);
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_EQ(r.msgs, 1);
    CHECK_MEM(r.last_payload_head, r.last_len, "hello", 5);
    CHECK_STR(r.token, "secret-token");
    CHECK_EQ(rpc_conn_calls(p.conn), 0);
    CHECK_EQ(rpc_client_calls(p.cl), 0);
    pair_close(&p);
}

TEST(error_status_percent_encoded)
{
    struct pair p;
    pair_open(&p, NULL);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct rpc_status st = rpc_etcd_status(RPC_ETCD_COMPACTED);
    req.status = st.code;
    req.message = (char *)st.message;
    struct echo_result r;
    call_unary(&p, ECHO("Unary"), &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_OUT_OF_RANGE);
    CHECK_STR(r.message, "etcdserver: mvcc: required revision has been compacted");
    CHECK_EQ(r.msgs, 0);
    /* Bytes that must be percent-encoded on the wire (nghttp2 rejects a raw newline in a
     * header value) come back intact. */
    req.status = GRPC_FAILED_PRECONDITION;
    req.message = "100% sure\nline two \xe2\x9c\x93";
    call_unary(&p, ECHO("Unary"), &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_FAILED_PRECONDITION);
    CHECK_STR(r.message, "100% sure\nline two \xe2\x9c\x93");
    pair_close(&p);
}

TEST(server_streaming_in_order)
{
    struct pair p;
    pair_open(&p, NULL);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    req.payload.data = (uint8_t *)"0123456789";
    req.payload.len = 10;
    req.count = 1000;
    struct echo_result r;
    echo_result_init(&r);
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_call_start(p.cl, ECHO("Stream"), NULL, 0, 0, &echo_result_cbs, &r, &call));
    CHECK_OK(rpc_client_call_send(call, &req.base));
    CHECK_OK(rpc_client_call_close_send(call));
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_EQ(r.msgs, 1000);
    CHECK(r.order_ok);
    pair_close(&p);
}

TEST(bidi_echo_then_half_close)
{
    struct pair p;
    pair_open(&p, NULL);
    struct echo_result r;
    echo_result_init(&r);
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_call_start(p.cl, ECHO("Bidi"), NULL, 0, 0, &echo_result_cbs, &r, &call));
    for (int i = 0; i < 100; i++) {
        Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
        char msg[16];
        int n = snprintf(msg, sizeof(msg), "m%d", i);
        req.payload.data = (uint8_t *)msg;
        req.payload.len = (size_t)n;
        CHECK_OK(rpc_client_call_send(call, &req.base));
        pair_pump(&p);
        CHECK_EQ(r.msgs, i + 1);
        CHECK_MEM(r.last_payload_head, r.last_len, msg, (size_t)n);
    }
    CHECK(!r.closed);
    CHECK_OK(rpc_client_call_close_send(call));
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_STR(r.message, "bye");
    CHECK(r.order_ok);
    pair_close(&p);
}

TEST(client_streaming_one_reply_after_half_close)
{
    struct pair p;
    pair_open(&p, NULL);
    struct echo_result r;
    echo_result_init(&r);
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_call_start(p.cl, ECHO("Collect"), NULL, 0, 0, &echo_result_cbs, &r, &call));
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    for (int i = 0; i < 37; i++) {
        CHECK_OK(rpc_client_call_send(call, &req.base));
        if (i % 10 == 0)
            pair_pump(&p);
    }
    pair_pump(&p);
    CHECK_EQ(r.msgs, 0);
    CHECK_OK(rpc_client_call_close_send(call));
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_EQ(r.msgs, 1);
    CHECK_EQ(r.next_seq, 38); /* seq 37 was the reply */
    CHECK_MEM(r.last_payload_head, r.last_len, "sum", 3);
    pair_close(&p);
}

TEST(rst_no_error_after_trailers_when_client_still_open)
{
    struct pair p;
    pair_open(&p, NULL);
    struct echo_result r;
    echo_result_init(&r);
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_call_start(p.cl, ECHO("Bidi"), NULL, 0, 0, &echo_result_cbs, &r, &call));
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    req.status = GRPC_ABORTED;
    req.message = "stop";
    CHECK_OK(rpc_client_call_send(call, &req.base)); /* the server ends; we never half-close */
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_ABORTED);
    CHECK_STR(r.message, "stop");
    uint32_t code = 99;
    CHECK_EQ(frames_count(&p.s2c, 3, &code), 1);
    CHECK_EQ(code, NGHTTP2_NO_ERROR);
    CHECK_EQ(rpc_conn_calls(p.conn), 0);
    pair_close(&p);
}

TEST(unknown_service_and_method)
{
    struct pair p;
    pair_open(&p, NULL);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    call_unary(&p, "/baton.test.Nope/Unary", &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_UNIMPLEMENTED);
    CHECK_STR(r.message, "unknown service baton.test.Nope");
    call_unary(&p, ECHO("Nope"), &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_UNIMPLEMENTED);
    CHECK_STR(r.message, "unknown method Nope for service baton.test.Echo");
    call_unary(&p, "/nomethod", &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_UNIMPLEMENTED);
    CHECK_STR(r.message, "malformed method name: \"/nomethod\"");
    pair_close(&p);
}

TEST(malformed_protobuf_is_invalid_argument)
{
    struct pair p;
    pair_open(&p, NULL);
    struct echo_result r;
    echo_result_init(&r);
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_call_start(p.cl, ECHO("Unary"), NULL, 0, 0, &echo_result_cbs, &r, &call));
    /* Field 1 (bytes) claims 100 bytes but 2 follow. */
    CHECK_OK(rpc_client_call_send_bytes(call, "\x0a\x64xx", 4));
    CHECK_OK(rpc_client_call_close_send(call));
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_INVALID_ARGUMENT);
    CHECK_STR(r.message, "grpc: error unmarshalling request: invalid protobuf message");
    CHECK_EQ(echo_state.started, 0);
    pair_close(&p);
}

TEST(oversize_request_resource_exhausted)
{
    struct pair p;
    pair_open(&p, NULL);
    size_t n = 3 * 512 * 1024 + 1000;
    uint8_t *big = calloc(1, n);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    req.payload.data = big;
    req.payload.len = n;
    struct echo_result r;
    call_unary(&p, ECHO("Unary"), &req, 0, &r);
    pair_pump(&p);
    free(big);
    size_t packed = baton__test__echo_request__get_packed_size(&req);
    char want[128];
    snprintf(want, sizeof(want), "grpc: received message larger than max (%zu vs. %d)", packed,
             3 * 512 * 1024);
    CHECK_EQ(r.code, GRPC_RESOURCE_EXHAUSTED);
    CHECK_STR(r.message, want);
    CHECK_EQ(echo_state.started, 0);
    /* The connection is fine afterwards. */
    req.payload.data = (uint8_t *)"ok";
    req.payload.len = 2;
    call_unary(&p, ECHO("Unary"), &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_OK);
    pair_close(&p);
}

TEST(large_messages_both_ways)
{
    struct pair p;
    pair_open(&p, NULL);
    size_t n = 1400 * 1024; /* under the 1.5 MiB default, many DATA frames and window updates */
    uint8_t *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 7);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    req.payload.data = big;
    req.payload.len = n;
    struct echo_result r;
    call_unary(&p, ECHO("Unary"), &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_EQ(r.last_len, n);
    CHECK_MEM(r.last_payload_head, 64, big, 64);
    /* A 6 MB response. */
    Baton__Test__EchoRequest req2 = BATON__TEST__ECHO_REQUEST__INIT;
    req2.count = 6 * 1000 * 1000;
    call_unary(&p, ECHO("Unary"), &req2, 0, &r);
    pair_pump(&p);
    /* The bound is checked before queuing, so one message larger than it still goes out. */
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_EQ(r.last_len, 6 * 1000 * 1000);
    free(big);
    pair_close(&p);
}

TEST(output_bound_backpressure_slow_reader)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fake_clock;
    cfg.stream_out_max_bytes = 64 * 1024;
    cfg.conn_out_max_bytes = 256 * 1024;
    struct pair p;
    pair_open(&p, &cfg);
    uint8_t payload[4000];
    memset(payload, 'w', sizeof(payload));
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    req.payload.data = payload;
    req.payload.len = sizeof(payload);
    req.count = 2000; /* 8 MB in all */
    struct echo_result r;
    echo_result_init(&r);
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_call_start(p.cl, ECHO("Stream"), NULL, 0, 0, &echo_result_cbs, &r, &call));
    CHECK_OK(rpc_client_call_send(call, &req.base));
    CHECK_OK(rpc_client_call_close_send(call));
    p.hold_s2c = true; /* the client stops reading */
    pair_pump(&p);
    CHECK_GT(echo_state.ebusy, 0);
    CHECK_LE(rpc_conn_buffered_bytes(p.conn), 64 * 1024 + 4100);
    /* Draining the connection into a transport that never delivers still stops at the
     * HTTP/2 flow-control window: the server cannot be made to produce without bound. */
    size_t produced = 0;
    for (int i = 0; i < 100; i++) {
        struct buf b = {0};
        CHECK_OK(rpc_conn_send(p.conn, &b, 64 * 1024));
        produced += b.len;
        buf_free(&b);
        CHECK_LE(rpc_conn_buffered_bytes(p.conn), 64 * 1024 + 4100);
    }
    CHECK_LT(produced, 2 * 1024 * 1024);
    pair_close(&p);

    /* With a reader again, everything arrives in order. */
    pair_open(&p, &cfg);
    echo_result_init(&r);
    CHECK_OK(rpc_client_call_start(p.cl, ECHO("Stream"), NULL, 0, 0, &echo_result_cbs, &r, &call));
    CHECK_OK(rpc_client_call_send(call, &req.base));
    CHECK_OK(rpc_client_call_close_send(call));
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_EQ(r.msgs, 2000);
    CHECK(r.order_ok);
    CHECK_GT(echo_state.writable, 0);
    pair_close(&p);
}

TEST(async_completion_after_handler_returned)
{
    struct pair p;
    pair_open(&p, NULL);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r1, r2;
    call_unary(&p, ECHO("Hold"), &req, 0, &r1);
    call_unary(&p, ECHO("Hold"), &req, 0, &r2);
    pair_pump(&p);
    CHECK_EQ(echo_state.held_len, 2);
    CHECK(!r1.closed && !r2.closed);
    echo_finish_held(1, "later");
    echo_finish_held(0, "later");
    pair_pump(&p);
    CHECK_EQ(r1.code, GRPC_OK);
    CHECK_EQ(r2.code, GRPC_OK);
    CHECK_MEM(r1.last_payload_head, r1.last_len, "later", 5);
    pair_close(&p);
}

TEST(client_cancel_reaches_handler)
{
    struct pair p;
    pair_open(&p, NULL);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    struct rpc_client_call *call = call_unary(&p, ECHO("Hold"), &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(echo_state.held_len, 1);
    rpc_client_call_cancel(call);
    pair_pump(&p);
    CHECK_EQ(echo_state.held_len, 0);
    CHECK_EQ(echo_state.cancels, 1);
    CHECK_EQ(echo_state.last_cancel_code, GRPC_CANCELLED);
    CHECK(!r.closed); /* cancel never calls on_close */
    CHECK_EQ(rpc_conn_calls(p.conn), 0);
    pair_close(&p);
}

TEST(connection_close_cancels_held_calls)
{
    struct pair p;
    pair_open(&p, NULL);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    call_unary(&p, ECHO("Hold"), &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(echo_state.held_len, 1);
    rpc_conn_destroy(p.conn);
    p.conn = NULL;
    CHECK_EQ(echo_state.cancels, 1);
    CHECK_EQ(echo_state.held_len, 0);
    rpc_client_destroy(p.cl);
    p.cl = NULL;
    CHECK(r.closed);
    CHECK_EQ(r.code, GRPC_UNAVAILABLE);
    rpc_server_destroy(p.srv);
    buf_free(&p.s2c);
}

TEST(server_deadline_exceeded)
{
    struct pair p;
    pair_open(&p, NULL);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    call_unary(&p, ECHO("Hold"), &req, 250, &r);
    pair_pump(&p);
    CHECK_EQ(echo_state.held_len, 1);
    fake_now += 200;
    rpc_conn_tick(p.conn);
    pair_pump(&p);
    CHECK(!r.closed);
    fake_now += 100;
    rpc_conn_tick(p.conn); /* only the server's clock runs out here */
    pair_pump(&p);
    CHECK_EQ(echo_state.held_len, 0);
    CHECK_EQ(echo_state.last_cancel_code, GRPC_DEADLINE_EXCEEDED);
    CHECK_EQ(r.code, GRPC_DEADLINE_EXCEEDED);
    pair_close(&p);
}

TEST(client_deadline_exceeded)
{
    struct pair p;
    pair_open(&p, NULL);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    call_unary(&p, ECHO("Hold"), &req, 100, &r);
    pair_pump(&p);
    fake_now += 100;
    rpc_client_tick(p.cl);
    CHECK_EQ(r.code, GRPC_DEADLINE_EXCEEDED);
    pair_pump(&p);
    CHECK_EQ(echo_state.held_len, 0);
    CHECK_EQ(echo_state.last_cancel_code, GRPC_CANCELLED);
    pair_close(&p);
}

TEST(stream_limit_enforced)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fake_clock;
    cfg.streams_max = 4;
    struct pair p;
    pair_open(&p, &cfg);
    /* All ten HEADERS leave before the client has seen the server's SETTINGS. */
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r[10];
    for (int i = 0; i < 10; i++)
        call_unary(&p, ECHO("Hold"), &req, 0, &r[i]);
    pair_pump(&p);
    CHECK_EQ(echo_state.held_len, 4);
    CHECK_EQ(rpc_conn_calls(p.conn), 4);
    int refused = 0;
    for (int i = 0; i < 10; i++)
        if (r[i].closed && r[i].code == GRPC_UNAVAILABLE)
            refused++;
    CHECK_EQ(refused, 6);
    /* Now that the client knows the limit, new calls queue instead of being refused. */
    struct echo_result more;
    call_unary(&p, ECHO("Hold"), &req, 0, &more);
    pair_pump(&p);
    CHECK(!more.closed);
    CHECK_EQ(echo_state.held_len, 4);
    echo_finish_held(0, "x");
    pair_pump(&p);
    CHECK_EQ(echo_state.held_len, 4); /* the queued call took the free slot */
    pair_close(&p);
}

TEST(rapid_reset_gets_enhance_your_calm)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fake_clock;
    cfg.resets_burst = 50;
    cfg.resets_per_sec = 10;
    struct pair p;
    pair_open(&p, &cfg);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    int started = 0;
    for (int i = 0; i < 500; i++) {
        struct rpc_client_call *call;
        echo_result_init(&r);
        if (rpc_client_unary(p.cl, ECHO("Hold"), &req.base, 0, &echo_result_cbs, &r, &call))
            break;
        started++;
        pair_pump(&p);
        rpc_client_call_cancel(call);
        pair_pump(&p);
    }
    uint32_t code = 0;
    CHECK(rpc_client_goaway(p.cl, &code));
    CHECK_EQ(code, NGHTTP2_ENHANCE_YOUR_CALM);
    CHECK_LE(started, 60);
    CHECK(rpc_conn_done(p.conn));
    pair_close(&p);
}

TEST(resets_within_budget_are_fine)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fake_clock;
    cfg.resets_burst = 50;
    cfg.resets_per_sec = 10;
    struct pair p;
    pair_open(&p, &cfg);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    for (int i = 0; i < 200; i++) { /* 10 per second of fake time: the refill rate */
        struct rpc_client_call *call;
        CHECK_OK(rpc_client_unary(p.cl, ECHO("Hold"), &req.base, 0, &echo_result_cbs, &r, &call));
        pair_pump(&p);
        rpc_client_call_cancel(call);
        pair_pump(&p);
        fake_now += 100;
    }
    CHECK(!rpc_client_goaway(p.cl, NULL));
    pair_close(&p);
}

TEST(garbage_preface_closes)
{
    struct pair p;
    pair_open(&p, NULL);
    const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK_EQ(rpc_conn_recv(p.conn, junk, sizeof(junk) - 1), BATON_EPROTO);
    CHECK(rpc_conn_done(p.conn));
    pair_close(&p);
}

static const char preface_and_settings[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                           "\x00\x00\x00\x04\x00\x00\x00\x00\x00";

TEST(protocol_errors_get_goaway_with_their_code)
{
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
        uint32_t code;
    } cases[] = {
        /* DATA on stream 0 (RFC 9113 6.1). */
        {"data on stream 0", "\x00\x00\x01\x00\x00\x00\x00\x00\x00x", 10, NGHTTP2_PROTOCOL_ERROR},
        /* A 1 MiB frame when SETTINGS_MAX_FRAME_SIZE is 16 KiB (4.2). */
        {"oversized frame", "\x10\x00\x00\x00\x00\x00\x00\x00\x01", 9, NGHTTP2_FRAME_SIZE_ERROR},
        /* WINDOW_UPDATE pushing the connection window past 2^31-1 (6.9.1). */
        {"window overflow", "\x00\x00\x04\x08\x00\x00\x00\x00\x00\x7f\xff\xff\xff", 13,
         NGHTTP2_FLOW_CONTROL_ERROR},
        /* SETTINGS with a length that is not a multiple of 6 (6.5). */
        {"bad settings", "\x00\x00\x05\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 14,
         NGHTTP2_FRAME_SIZE_ERROR},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(cases); i++) {
        test_log("%s", cases[i].what);
        struct pair p;
        pair_open(&p, NULL);
        CHECK_OK(rpc_conn_recv(p.conn, preface_and_settings, sizeof(preface_and_settings) - 1));
        rpc_conn_recv(p.conn, cases[i].bytes, cases[i].len);
        struct buf out = {0};
        CHECK_OK(rpc_conn_send(p.conn, &out, 1 << 20));
        uint32_t code = 99;
        CHECK_EQ(frames_count(&out, 7, &code), 1);
        CHECK_EQ(code, cases[i].code);
        CHECK(rpc_conn_done(p.conn));
        buf_free(&out);
        pair_close(&p);
    }
}

TEST(handshake_timeout_closes_silent_connection)
{
    struct pair p;
    pair_open(&p, NULL);
    fake_now += 4000;
    rpc_conn_tick(p.conn);
    CHECK(!rpc_conn_done(p.conn));
    CHECK_OK(rpc_conn_recv(p.conn, "PRI * HTTP/2.0\r\n", 16)); /* half a preface is not enough */
    fake_now += 1000;
    rpc_conn_tick(p.conn);
    CHECK(rpc_conn_done(p.conn));
    pair_close(&p);
    /* A real client completes the handshake and stays. */
    pair_open(&p, NULL);
    pair_pump(&p);
    fake_now += 60000;
    rpc_conn_tick(p.conn);
    CHECK(!rpc_conn_done(p.conn));
    pair_close(&p);
}

TEST(idle_timeout_goaway)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fake_clock;
    cfg.idle_timeout_ms = 30000;
    struct pair p;
    pair_open(&p, &cfg);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    call_unary(&p, ECHO("Hold"), &req, 0, &r);
    pair_pump(&p);
    fake_now += 60000;
    rpc_conn_tick(p.conn); /* a call is open: not idle */
    pair_pump(&p);
    CHECK(!rpc_client_goaway(p.cl, NULL));
    echo_finish_held(0, "done");
    pair_pump(&p);
    fake_now += 30000;
    rpc_conn_tick(p.conn);
    pair_pump(&p);
    uint32_t code = 99;
    CHECK(rpc_client_goaway(p.cl, &code));
    CHECK_EQ(code, NGHTTP2_NO_ERROR);
    CHECK(rpc_conn_done(p.conn));
    pair_close(&p);
}

TEST(keepalive_ping_and_timeout)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fake_clock;
    cfg.keepalive_ms = 10000;
    cfg.keepalive_timeout_ms = 5000;
    struct pair p;
    pair_open(&p, &cfg);
    pair_pump(&p);
    int pings = frames_count(&p.s2c, 6, NULL);
    fake_now += 10000;
    rpc_conn_tick(p.conn);
    pair_pump(&p); /* the client acks */
    CHECK_EQ(frames_count(&p.s2c, 6, NULL), pings + 1);
    fake_now += 5000;
    rpc_conn_tick(p.conn);
    CHECK(!rpc_conn_done(p.conn));
    /* A peer that stops answering. */
    fake_now += 10000;
    rpc_conn_tick(p.conn);
    p.hold_s2c = true;
    pair_pump(&p);
    fake_now += 5000;
    rpc_conn_tick(p.conn);
    CHECK(rpc_conn_done(p.conn));
    pair_close(&p);
}

TEST(graceful_shutdown_finishes_calls_in_flight)
{
    struct pair p;
    pair_open(&p, NULL);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    call_unary(&p, ECHO("Hold"), &req, 0, &r);
    pair_pump(&p);
    rpc_conn_shutdown(p.conn);
    /* A call the client started before it saw the GOAWAY notice is still served: the final
     * GOAWAY comes only after a PING round trip. */
    struct echo_result racing;
    call_unary(&p, ECHO("Unary"), &req, 0, &racing);
    pair_pump(&p);
    CHECK_EQ(racing.code, GRPC_OK);
    uint32_t code = 99;
    CHECK(rpc_client_goaway(p.cl, &code));
    CHECK_EQ(code, NGHTTP2_NO_ERROR);
    struct rpc_client_call *call;
    struct echo_result r2;
    echo_result_init(&r2);
    CHECK_EQ(rpc_client_unary(p.cl, ECHO("Unary"), &req.base, 0, &echo_result_cbs, &r2, &call),
             BATON_ECLOSED);
    CHECK(!rpc_conn_done(p.conn));
    echo_finish_held(0, "last");
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_OK);
    CHECK(rpc_conn_done(p.conn));
    pair_close(&p);
}

TEST(etcd_error_table)
{
    struct rpc_status s = rpc_status_from_err(BATON_ECOMPACTED);
    CHECK_EQ(s.code, GRPC_OUT_OF_RANGE);
    CHECK_STR(s.message, "etcdserver: mvcc: required revision has been compacted");
    s = rpc_status_from_err(BATON_EFUTURE);
    CHECK_EQ(s.code, GRPC_OUT_OF_RANGE);
    CHECK_STR(s.message, "etcdserver: mvcc: required revision is a future revision");
    s = rpc_status_from_err(BATON_ENOSPACE);
    CHECK_EQ(s.code, GRPC_RESOURCE_EXHAUSTED);
    CHECK_STR(s.message, "etcdserver: mvcc: database space exceeded");
    s = rpc_status_from_err(BATON_ETIMEOUT);
    CHECK_EQ(s.code, GRPC_UNAVAILABLE);
    CHECK_STR(s.message, "etcdserver: request timed out");
    s = rpc_status_from_err(BATON_ENOTLEADER);
    CHECK_EQ(s.code, GRPC_UNAVAILABLE);
    CHECK_STR(s.message, "etcdserver: no leader");
    s = rpc_etcd_status(RPC_ETCD_LEADER_CHANGED);
    CHECK_EQ(s.code, GRPC_UNAVAILABLE);
    CHECK_STR(s.message, "etcdserver: leader changed");
    s = rpc_etcd_status(RPC_ETCD_DUPLICATE_KEY);
    CHECK_EQ(s.code, GRPC_INVALID_ARGUMENT);
    CHECK_STR(s.message, "etcdserver: duplicate key given in txn request");
    s = rpc_etcd_status(RPC_ETCD_EMPTY_KEY);
    CHECK_EQ(s.code, GRPC_INVALID_ARGUMENT);
    CHECK_STR(s.message, "etcdserver: key is not provided");
    s = rpc_etcd_status(RPC_ETCD_LEASE_NOT_FOUND);
    CHECK_EQ(s.code, GRPC_NOT_FOUND);
    CHECK_STR(s.message, "etcdserver: requested lease not found");
    s = rpc_etcd_status(RPC_ETCD_REQUEST_TOO_LARGE);
    CHECK_EQ(s.code, GRPC_INVALID_ARGUMENT);
    CHECK_STR(s.message, "etcdserver: request is too large");
    for (int i = 0; i < RPC_ETCD_ERROR_COUNT; i++) {
        s = rpc_etcd_status((enum rpc_etcd_error)i);
        CHECK(s.message != NULL);
        CHECK(strncmp(s.message, "etcdserver: ", 12) == 0);
        CHECK(s.code > 0 && s.code <= GRPC_UNAUTHENTICATED);
    }
    CHECK_STR(grpc_code_name(GRPC_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
}

static void raw_server(struct rpc_server **srv, struct rpc_conn **conn,
                       const struct rpc_server_config *cfg)
{
    struct rpc_server_config def;
    if (!cfg) {
        rpc_server_config_default(&def);
        def.clock = fake_clock;
        cfg = &def;
    }
    CHECK_OK(rpc_server_create(cfg, srv));
    CHECK_OK(echo_register(*srv));
    CHECK_OK(rpc_conn_create(*srv, NULL, NULL, conn));
}

TEST(compressed_flag_rejected)
{
    struct rpc_server *srv;
    struct rpc_conn *conn;
    raw_server(&srv, &conn, NULL);
    struct raw_client r;
    raw_open(&r, conn);
    const uint8_t frame[] = {1, 0, 0, 0, 2, 0x0a, 0x00};
    int a = raw_start(&r, ECHO("Unary"), "application/grpc", NULL, NULL, frame, 7, true);
    int b =
        raw_start(&r, ECHO("Unary"), "application/grpc", "grpc-encoding", "gzip", frame, 7, true);
    raw_pump(&r);
    CHECK_EQ(r.s[a].grpc_status, GRPC_INTERNAL);
    CHECK_STR(r.s[a].grpc_message, "grpc: compressed flag set with identity or empty encoding");
    CHECK_EQ(r.s[b].grpc_status, GRPC_UNIMPLEMENTED);
    CHECK_STR(r.s[b].grpc_message,
              "grpc: Decompressor is not installed for grpc-encoding \"gzip\"");
    CHECK_EQ(echo_state.started, 0);
    raw_close(&r);
    rpc_conn_destroy(conn);
    rpc_server_destroy(srv);
}

TEST(non_grpc_requests_get_http_errors)
{
    struct rpc_server *srv;
    struct rpc_conn *conn;
    raw_server(&srv, &conn, NULL);
    struct raw_client r;
    raw_open(&r, conn);
    int a = raw_start(&r, ECHO("Unary"), "text/plain", NULL, NULL, "", 0, true);
    int b = raw_start(&r, ECHO("Unary"), "application/grpcx", NULL, NULL, "", 0, true);
    int c = raw_start(&r, ECHO("Unary"), "application/grpc+proto", NULL, NULL,
                      "\x00\x00\x00\x00\x00", 5, true);
    raw_pump(&r);
    CHECK_EQ(r.s[a].http_status, 415);
    CHECK_EQ(r.s[b].http_status, 415);
    CHECK_EQ(r.s[c].http_status, 200);
    CHECK_EQ(r.s[c].grpc_status, GRPC_OK);
    raw_close(&r);
    rpc_conn_destroy(conn);
    rpc_server_destroy(srv);
}

TEST(request_ending_inside_a_message)
{
    struct rpc_server *srv;
    struct rpc_conn *conn;
    raw_server(&srv, &conn, NULL);
    struct raw_client r;
    raw_open(&r, conn);
    int a = raw_start(&r, ECHO("Unary"), "application/grpc", NULL, NULL, "\x00\x00\x00\x00\x09xx",
                      7, true);
    int b = raw_start(&r, ECHO("Unary"), "application/grpc", NULL, NULL, "", 0, true);
    raw_pump(&r);
    /* Two messages on a unary call. */
    int c = raw_start(&r, ECHO("Unary"), "application/grpc", NULL, NULL,
                      "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 10, true);
    raw_pump(&r);
    CHECK_EQ(r.s[a].grpc_status, GRPC_INTERNAL);
    CHECK_STR(r.s[a].grpc_message, "grpc: request ended inside a message");
    CHECK_EQ(r.s[b].grpc_status, GRPC_INTERNAL);
    CHECK_STR(r.s[b].grpc_message, "grpc: half-closed without a request");
    CHECK_EQ(r.s[c].grpc_status, GRPC_INTERNAL);
    CHECK_STR(r.s[c].grpc_message, "grpc: too many requests for a call that takes one");
    CHECK_EQ(echo_state.started, 0);
    raw_close(&r);
    rpc_conn_destroy(conn);
    rpc_server_destroy(srv);
}

TEST(partial_requests_bounded_per_connection)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fake_clock;
    cfg.conn_in_max_bytes = 1 << 20;
    struct rpc_server *srv;
    struct rpc_conn *conn;
    raw_server(&srv, &conn, &cfg);
    struct raw_client r;
    raw_open(&r, conn);
    /* Ten calls each announce a 1 MB message and send 300 KB of it, then stall. */
    size_t part = 300 * 1024;
    uint8_t *body = calloc(1, 5 + part);
    body[2] = 0x10; /* length 0x00100000 = 1 MiB */
    for (int i = 0; i < 10; i++)
        raw_start(&r, ECHO("Unary"), "application/grpc", NULL, NULL, body, 5 + part, false);
    raw_pump(&r);
    free(body);
    int refused = 0;
    for (int i = 0; i < 10; i++) {
        if (r.s[i].grpc_status == GRPC_RESOURCE_EXHAUSTED) {
            CHECK_STR(r.s[i].grpc_message,
                      "grpc: connection holds more than 1048576 bytes of partial requests");
            refused++;
        } else {
            CHECK_EQ(r.s[i].grpc_status, -1); /* still waiting for the rest */
        }
    }
    CHECK_GE(refused, 7);
    CHECK_LE(refused, 8);
    raw_close(&r);
    rpc_conn_destroy(conn);
    rpc_server_destroy(srv);
}

TEST(connection_output_bound_across_calls)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fake_clock;
    cfg.stream_out_max_bytes = 1 << 20;
    cfg.conn_out_max_bytes = 128 * 1024;
    struct pair p;
    pair_open(&p, &cfg);
    uint8_t payload[8000];
    memset(payload, 'c', sizeof(payload));
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    req.payload.data = payload;
    req.payload.len = sizeof(payload);
    req.count = 300;
    struct echo_result r[4];
    p.hold_s2c = true;
    for (int i = 0; i < 4; i++)
        call_unary(&p, ECHO("Stream"), &req, 0, &r[i]);
    pair_pump(&p);
    /* Each call is far below its own bound; together they hit the connection's. */
    CHECK_GT(echo_state.ebusy, 0);
    CHECK_LE(rpc_conn_buffered_bytes(p.conn), 128 * 1024 + 8100);
    p.hold_s2c = false;
    pair_pump(&p);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(r[i].code, GRPC_OK);
        CHECK_EQ(r[i].msgs, 300);
        CHECK(r[i].order_ok);
    }
    pair_close(&p);
}

TEST(client_keepalive_ping)
{
    struct pair p;
    pair_open(&p, NULL);
    rpc_client_destroy(p.cl);
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    cc.clock = fake_clock;
    cc.keepalive_ms = 1000;
    cc.keepalive_timeout_ms = 500;
    CHECK_OK(rpc_client_create(&cc, NULL, NULL, &p.cl));
    pair_pump(&p);
    fake_now += 1000;
    rpc_client_tick(p.cl);
    pair_pump(&p); /* the server acks the PING */
    fake_now += 500;
    rpc_client_tick(p.cl);
    CHECK(!rpc_client_done(p.cl));
    /* A server that went silent. */
    fake_now += 1000;
    rpc_client_tick(p.cl);
    struct buf b = {0};
    CHECK_OK(rpc_client_send(p.cl, &b, 1 << 16));
    CHECK_EQ(b.len, 17); /* PING frame: 9 + 8 */
    CHECK_EQ(b.data[3], 6);
    buf_free(&b);
    fake_now += 500;
    rpc_client_tick(p.cl);
    CHECK(rpc_client_done(p.cl));
    pair_close(&p);
}

TEST(ping_flood_gets_too_many_pings)
{
    static const char ping[] = "\x00\x00\x08\x06\x00\x00\x00\x00\x00"
                               "12345678";
    struct pair p;
    pair_open(&p, NULL);
    pair_pump(&p);
    /* One PING every 5 s is what etcd allows: no strike however long it goes on. */
    for (int i = 0; i < 10; i++) {
        fake_now += 5000;
        CHECK_OK(rpc_conn_recv(p.conn, ping, sizeof(ping) - 1));
        pair_pump(&p);
    }
    CHECK(!rpc_client_goaway(p.cl, NULL));
    /* Four back to back: three strikes. */
    for (int i = 0; i < 4; i++)
        CHECK_OK(rpc_conn_recv(p.conn, ping, sizeof(ping) - 1));
    pair_pump(&p);
    uint32_t code = 0;
    CHECK(rpc_client_goaway(p.cl, &code));
    CHECK_EQ(code, NGHTTP2_ENHANCE_YOUR_CALM);
    CHECK(memmem(p.s2c.data, p.s2c.len, "too_many_pings", 14) != NULL);
    CHECK(rpc_conn_done(p.conn));
    pair_close(&p);
}

/* ---- Call observer and server-wide output bound ------------------------------------------ */

struct observed {
    int started[8], ended[8], codes[8][GRPC_UNAUTHENTICATED + 1];
    char paths[8][64];
};

static void obs_start(void *ctx, size_t method, const struct rpc_method *m)
{
    struct observed *o = ctx;
    CHECK_LT(method, 8);
    snprintf(o->paths[method], sizeof(o->paths[method]), "%s", m->path);
    o->started[method]++;
}

static void obs_end(void *ctx, size_t method, const struct rpc_method *m, int code)
{
    struct observed *o = ctx;
    CHECK_LT(method, 8);
    CHECK_STR(o->paths[method], m->path);
    o->ended[method]++;
    o->codes[method][code]++;
}

static int method_index(const struct observed *o, const char *path)
{
    for (int i = 0; i < 8; i++)
        if (strcmp(o->paths[i], path) == 0)
            return i;
    return -1;
}

/* Every dispatched call is reported once when it starts and once when it ends, with the status
 * it got; a client reset counts as CANCELLED; calls to unknown methods are not reported. */
TEST(call_observer_sees_start_and_end)
{
    struct observed o;
    memset(&o, 0, sizeof(o));
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fake_clock;
    cfg.observer = (struct rpc_call_observer){obs_start, obs_end, &o};
    struct pair p;
    pair_open(&p, &cfg);
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    for (int i = 0; i < 3; i++) {
        call_unary(&p, ECHO("Unary"), &req, 0, &r);
        pair_pump(&p);
        CHECK_EQ(r.code, GRPC_OK);
    }
    req.status = GRPC_OUT_OF_RANGE;
    req.message = "no";
    call_unary(&p, ECHO("Unary"), &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_OUT_OF_RANGE);
    call_unary(&p, "/baton.test.Echo/Nope", &req, 0, &r);
    pair_pump(&p);
    CHECK_EQ(r.code, GRPC_UNIMPLEMENTED);
    /* A held call the client abandons. */
    req.status = 0;
    struct rpc_client_call *held = call_unary(&p, ECHO("Hold"), &req, 0, &r);
    pair_pump(&p);
    rpc_client_call_cancel(held);
    pair_pump(&p);
    int u = method_index(&o, ECHO("Unary")), h = method_index(&o, ECHO("Hold"));
    CHECK(u >= 0 && h >= 0);
    CHECK_EQ(o.started[u], 4);
    CHECK_EQ(o.ended[u], 4);
    CHECK_EQ(o.codes[u][GRPC_OK], 3);
    CHECK_EQ(o.codes[u][GRPC_OUT_OF_RANGE], 1);
    CHECK_EQ(o.started[h], 1);
    CHECK_EQ(o.ended[h], 1);
    CHECK_EQ(o.codes[h][GRPC_CANCELLED], 1);
    int total = 0;
    for (int i = 0; i < 8; i++)
        total += o.started[i];
    CHECK_EQ(total, 5); /* the unknown method never reached the observer */
    struct rpc_server_stats st;
    rpc_server_stats(p.srv, &st);
    CHECK_EQ(st.conns, 1);
    CHECK_EQ(st.conns_total, 1);
    CHECK_GT(st.bytes_received, 0);
    CHECK_GT(st.bytes_sent, 0);
    echo_state.held_len = 0;
    pair_close(&p);
}

/* A second client connection on the same server. */
struct side {
    struct rpc_conn *conn;
    struct rpc_client *cl;
};

static void side_open(struct side *s, struct rpc_server *srv)
{
    CHECK_OK(rpc_conn_create(srv, NULL, NULL, &s->conn));
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    cc.clock = fake_clock;
    CHECK_OK(rpc_client_create(&cc, NULL, NULL, &s->cl));
}

/* Moves bytes both ways; deliver = false: the client reads nothing (its server output stays
 * buffered). */
static void side_pump(struct side *s, bool deliver)
{
    for (int i = 0; i < 100000; i++) {
        struct buf b = {0};
        CHECK_OK(rpc_client_send(s->cl, &b, 64 * 1024));
        bool moved = b.len > 0;
        if (b.len)
            rpc_conn_recv(s->conn, b.data, b.len);
        buf_clear(&b);
        if (deliver) {
            CHECK_OK(rpc_conn_send(s->conn, &b, 64 * 1024));
            if (b.len)
                rpc_client_recv(s->cl, b.data, b.len);
            moved = moved || b.len > 0;
        }
        buf_free(&b);
        if (!moved)
            return;
    }
    test_fail(__FILE__, __LINE__, "pump did not settle");
}

static void side_close(struct side *s)
{
    rpc_client_destroy(s->cl);
    rpc_conn_destroy(s->conn);
}

/* Output buffered over all connections stays under server_out_max_bytes (plus one message):
 * past it sends are refused, and a call refused on one connection is resumed when another
 * connection's output drains. */
TEST(server_output_bound_across_connections)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.clock = fake_clock;
    cfg.stream_out_max_bytes = 4 << 20;
    cfg.conn_out_max_bytes = 4 << 20;
    cfg.server_out_max_bytes = 256 * 1024;
    struct rpc_server *srv;
    CHECK_OK(rpc_server_create(&cfg, &srv));
    CHECK_OK(echo_register(srv));
    struct side a, b;
    side_open(&a, srv);
    side_open(&b, srv);
    memset(&echo_state, 0, sizeof(echo_state));
    uint8_t payload[32 * 1024];
    memset(payload, 's', sizeof(payload));
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    req.payload.data = payload;
    req.payload.len = sizeof(payload);
    req.count = 32; /* 1 MiB per call */
    struct echo_result ra, rb;
    echo_result_init(&ra);
    echo_result_init(&rb);
    struct rpc_client_call *ca, *cb;
    CHECK_OK(rpc_client_unary(a.cl, ECHO("Stream"), &req.base, 0, &echo_result_cbs, &ra, &ca));
    CHECK_OK(rpc_client_unary(b.cl, ECHO("Stream"), &req.base, 0, &echo_result_cbs, &rb, &cb));
    side_pump(&a, false); /* a's client reads nothing: its output fills the server's bound */
    side_pump(&b, false);
    struct rpc_server_stats st;
    rpc_server_stats(srv, &st);
    CHECK_GT(echo_state.ebusy, 0);
    CHECK_GT(st.out_refused, 0);
    CHECK_LE(st.out_buffered, 256 * 1024 + sizeof(payload) + 64);
    CHECK_EQ(ra.msgs + rb.msgs, 0);
    /* Both drain, turn by turn: the one refused resumes when the other's output shrinks. */
    for (int i = 0; i < 1000 && !(ra.closed && rb.closed); i++) {
        side_pump(&a, true);
        side_pump(&b, true);
    }
    CHECK_EQ(ra.code, GRPC_OK);
    CHECK_EQ(rb.code, GRPC_OK);
    CHECK_EQ(ra.msgs, 32);
    CHECK_EQ(rb.msgs, 32);
    CHECK_GT(echo_state.writable, 0);
    rpc_server_stats(srv, &st);
    CHECK_EQ(st.out_buffered, 0);
    CHECK_EQ(st.conns, 2);
    side_close(&a);
    side_close(&b);
    rpc_server_stats(srv, &st);
    CHECK_EQ(st.conns, 0);
    rpc_server_destroy(srv);
}
