/*
 * rpc over real TCP on loopback through the net/ glue: our client against our server, a raw
 * socket sending garbage instead of the HTTP/2 preface, a rapid-reset attacker written on
 * nghttp2's client API, and graceful shutdown. Server and clients share one event loop (one
 * thread); the loop runs until each test's condition holds, bounded far above a healthy run.
 */
#include "echo_service.h"
#include "net/net.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ECHO(m)    "/baton.test.Echo/" m
#define WAIT_MS    20000
#define CALLS_MANY 200

struct fixture {
    struct net_loop *loop;
    struct rpc_server *srv;
    struct net_listener *ls;
    char url[64];
};

static void fixture_open(struct fixture *f, const struct rpc_server_config *cfg)
{
    struct rpc_server_config def;
    if (!cfg) {
        rpc_server_config_default(&def);
        cfg = &def;
    }
    CHECK_OK(net_loop_create(NULL, &f->loop));
    CHECK_OK(rpc_server_create(cfg, &f->srv));
    CHECK_OK(echo_register(f->srv));
    CHECK_OK(net_listen_rpc(f->loop, "http://127.0.0.1:0", f->srv, 0, &f->ls));
    CHECK_GT(net_listener_port(f->ls), 0);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u", net_listener_port(f->ls));
}

static bool listener_empty(void *ctx)
{
    return net_listener_conns(ctx) == 0;
}

static void fixture_close(struct fixture *f)
{
    net_listener_close(f->ls);
    net_loop_destroy(f->loop);
    rpc_server_destroy(f->srv);
}

struct client_state {
    int connected; /* 0 pending, 1 up, -1 ended */
    int end_status;
};

static void on_client_state(struct net_client *c, int status, void *ctx)
{
    struct client_state *s = ctx;
    if (status == 0) {
        s->connected = 1;
    } else {
        s->connected = -1;
        s->end_status = status;
    }
}

static bool result_closed(void *ctx)
{
    return ((struct echo_result *)ctx)->closed;
}

struct many {
    struct echo_result r[CALLS_MANY];
};

static bool many_closed(void *ctx)
{
    struct many *m = ctx;
    for (int i = 0; i < CALLS_MANY; i++)
        if (!m->r[i].closed)
            return false;
    return true;
}

static bool client_ended(void *ctx)
{
    return ((struct client_state *)ctx)->connected == -1;
}

TEST(tcp_unary_streaming_bidi_and_many_calls)
{
    struct fixture f;
    fixture_open(&f, NULL);
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    struct client_state cs = {0};
    struct net_client *nc;
    CHECK_OK(net_connect_rpc(f.loop, f.url, &cc, on_client_state, &cs, &nc));
    struct rpc_client *cl = net_client_rpc(nc);

    /* Unary, started before the connection is even up. */
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    req.payload.data = (uint8_t *)"over tcp";
    req.payload.len = 8;
    struct echo_result r;
    echo_result_init(&r);
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_unary(cl, ECHO("Unary"), &req.base, 5000, &echo_result_cbs, &r, &call));
    CHECK_OK(net_loop_run_until(f.loop, result_closed, &r, WAIT_MS));
    CHECK_EQ(cs.connected, 1);
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_MEM(r.last_payload_head, r.last_len, "over tcp", 8);

    /* Server streaming: 20000 messages of 1 KiB, more than any socket buffer. */
    uint8_t kib[1024];
    memset(kib, 'k', sizeof(kib));
    req.payload.data = kib;
    req.payload.len = sizeof(kib);
    req.count = 20000;
    echo_result_init(&r);
    CHECK_OK(rpc_client_unary(cl, ECHO("Stream"), &req.base, 0, &echo_result_cbs, &r, &call));
    CHECK_OK(net_loop_run_until(f.loop, result_closed, &r, WAIT_MS));
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_EQ(r.msgs, 20000);
    CHECK(r.order_ok);

    /* Bidi: 50 messages then half-close. */
    echo_result_init(&r);
    CHECK_OK(rpc_client_call_start(cl, ECHO("Bidi"), NULL, 0, 0, &echo_result_cbs, &r, &call));
    Baton__Test__EchoRequest m = BATON__TEST__ECHO_REQUEST__INIT;
    m.payload.data = (uint8_t *)"b";
    m.payload.len = 1;
    for (int i = 0; i < 50; i++)
        CHECK_OK(rpc_client_call_send(call, &m.base));
    CHECK_OK(rpc_client_call_close_send(call));
    CHECK_OK(net_loop_run_until(f.loop, result_closed, &r, WAIT_MS));
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_EQ(r.msgs, 50);

    /* Many concurrent unary calls on the one connection. */
    struct many *mc = calloc(1, sizeof(*mc));
    req.count = 0;
    for (int i = 0; i < CALLS_MANY; i++) {
        echo_result_init(&mc->r[i]);
        CHECK_OK(rpc_client_unary(cl, ECHO("Unary"), &req.base, 10000, &echo_result_cbs, &mc->r[i],
                                  &call));
    }
    CHECK_OK(net_loop_run_until(f.loop, many_closed, mc, WAIT_MS));
    for (int i = 0; i < CALLS_MANY; i++)
        CHECK_EQ(mc->r[i].code, GRPC_OK);
    free(mc);
    CHECK_EQ(net_listener_conns(f.ls), 1);

    net_client_close(nc);
    CHECK_OK(net_loop_run_until(f.loop, client_ended, &cs, WAIT_MS));
    CHECK_OK(net_loop_run_until(f.loop, listener_empty, f.ls, WAIT_MS));
    fixture_close(&f);
}

TEST(tcp_connect_refused_reports_end)
{
    struct net_loop *loop;
    CHECK_OK(net_loop_create(NULL, &loop));
    /* A port we just closed: nobody listens there. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK_EQ(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t alen = sizeof(a);
    getsockname(s, (struct sockaddr *)&a, &alen);
    close(s);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(a.sin_port));
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    struct client_state cs = {0};
    struct net_client *nc;
    CHECK_OK(net_connect_rpc(loop, url, &cc, on_client_state, &cs, &nc));
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    echo_result_init(&r);
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_unary(net_client_rpc(nc), ECHO("Unary"), &req.base, 0, &echo_result_cbs, &r,
                              &call));
    CHECK_OK(net_loop_run_until(loop, client_ended, &cs, WAIT_MS));
    CHECK(r.closed);
    CHECK_EQ(r.code, GRPC_UNAVAILABLE);
    net_loop_destroy(loop);
}

TEST(url_parsing)
{
    char host[64];
    uint16_t port;
    CHECK_OK(net_url_parse("http://127.0.0.1:2379", host, sizeof(host), &port));
    CHECK_STR(host, "127.0.0.1");
    CHECK_EQ(port, 2379);
    CHECK_OK(net_url_parse("http://[::1]:23790", host, sizeof(host), &port));
    CHECK_STR(host, "::1");
    CHECK_EQ(port, 23790);
    CHECK_OK(net_url_parse("localhost:1", host, sizeof(host), &port));
    CHECK_STR(host, "127.0.0.1");
    CHECK_EQ(net_url_parse("https://127.0.0.1:2379", host, sizeof(host), &port), BATON_EINVAL);
    CHECK_EQ(net_url_parse("http://127.0.0.1", host, sizeof(host), &port), BATON_EINVAL);
    CHECK_EQ(net_url_parse("http://127.0.0.1:99999", host, sizeof(host), &port), BATON_EINVAL);
    CHECK_EQ(net_url_parse("http://127.0.0.1:12x", host, sizeof(host), &port), BATON_EINVAL);
}

/* ---- Raw sockets -------------------------------------------------------------------------- */

static int raw_connect(uint16_t port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK_EQ(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    return s;
}

struct raw_peer {
    int fd;
    bool eof;
    size_t got;
};

/* Reads whatever the server sent; true once it closed the connection. */
static bool raw_closed(void *ctx)
{
    struct raw_peer *p = ctx;
    char b[4096];
    for (;;) {
        ssize_t n = recv(p->fd, b, sizeof(b), MSG_DONTWAIT);
        if (n > 0) {
            p->got += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            p->eof = true;
        return p->eof;
    }
}

TEST(tcp_garbage_instead_of_preface_is_closed)
{
    struct fixture f;
    fixture_open(&f, NULL);
    struct raw_peer p = {.fd = raw_connect(net_listener_port(f.ls))};
    const char junk[] = "GET / HTTP/1.1\r\nHost: baton\r\n\r\n";
    CHECK_EQ(send(p.fd, junk, sizeof(junk) - 1, 0), (ssize_t)sizeof(junk) - 1);
    CHECK_OK(net_loop_run_until(f.loop, raw_closed, &p, WAIT_MS));
    close(p.fd);
    CHECK_OK(net_loop_run_until(f.loop, listener_empty, f.ls, WAIT_MS));
    fixture_close(&f);
}

TEST(tcp_silent_connection_is_closed)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    cfg.handshake_timeout_ms = 300;
    struct fixture f;
    fixture_open(&f, &cfg);
    struct raw_peer p = {.fd = raw_connect(net_listener_port(f.ls))};
    CHECK_OK(net_loop_run_until(f.loop, raw_closed, &p, WAIT_MS));
    close(p.fd);
    fixture_close(&f);
}

/* The attacker: nghttp2's client API over a non-blocking socket, opening streams and resetting
 * them at once, as fast as it can (CVE-2023-44487). */
struct attacker {
    int fd;
    nghttp2_session *h2;
    int opened;
    bool goaway;
    uint32_t goaway_code;
    bool eof;
};

static ssize_t atk_send(nghttp2_session *h2, const uint8_t *data, size_t len, int flags, void *user)
{
    struct attacker *a = user;
    ssize_t n = send(a->fd, data, len, MSG_NOSIGNAL);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? NGHTTP2_ERR_WOULDBLOCK
                                                         : NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static ssize_t atk_recv(nghttp2_session *h2, uint8_t *buf, size_t len, int flags, void *user)
{
    struct attacker *a = user;
    ssize_t n = recv(a->fd, buf, len, 0);
    if (n == 0) {
        a->eof = true;
        return NGHTTP2_ERR_EOF;
    }
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? NGHTTP2_ERR_WOULDBLOCK
                                                         : NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static int atk_frame(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct attacker *a = user;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        a->goaway = true;
        a->goaway_code = frame->goaway.error_code;
    }
    return 0;
}

static bool attacker_step(void *ctx)
{
    struct attacker *a = ctx;
    if (!a->goaway && !a->eof && a->opened < 100000) {
        nghttp2_nv nva[] = {
            {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
            {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
            {(uint8_t *)":path", (uint8_t *)ECHO("Hold"), 5, strlen(ECHO("Hold")), 0},
            {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0},
            {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
        };
        for (int i = 0; i < 20; i++) {
            int32_t id = nghttp2_submit_request(a->h2, NULL, nva, 5, NULL, NULL);
            if (id < 0)
                break;
            /* HEADERS must leave first: nghttp2 drops a request reset before it was sent. */
            nghttp2_session_send(a->h2);
            nghttp2_submit_rst_stream(a->h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
            a->opened++;
        }
    }
    nghttp2_session_send(a->h2);
    nghttp2_session_recv(a->h2);
    return a->goaway || a->eof;
}

TEST(tcp_rapid_reset_attacker_gets_goaway)
{
    struct fixture f;
    fixture_open(&f, NULL); /* default budget: 200 resets, 50/s */
    struct attacker a = {.fd = raw_connect(net_listener_port(f.ls))};
    nghttp2_session_callbacks *cbs;
    CHECK_EQ(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, atk_send);
    nghttp2_session_callbacks_set_recv_callback(cbs, atk_recv);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, atk_frame);
    CHECK_EQ(nghttp2_session_client_new(&a.h2, cbs, &a), 0);
    nghttp2_session_callbacks_del(cbs);
    CHECK_EQ(nghttp2_submit_settings(a.h2, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    CHECK_OK(net_loop_run_until(f.loop, attacker_step, &a, WAIT_MS));
    test_log("attacker opened %d streams before the server's answer", a.opened);
    CHECK(a.goaway);
    CHECK_EQ(a.goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
    CHECK_LT(a.opened, 100000);
    /* And the server hangs up. */
    struct raw_peer p = {.fd = a.fd};
    CHECK_OK(net_loop_run_until(f.loop, raw_closed, &p, WAIT_MS));
    nghttp2_session_del(a.h2);
    close(a.fd);
    fixture_close(&f);
}

TEST(tcp_graceful_shutdown)
{
    struct fixture f;
    fixture_open(&f, NULL);
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    struct client_state cs = {0};
    struct net_client *nc;
    CHECK_OK(net_connect_rpc(f.loop, f.url, &cc, on_client_state, &cs, &nc));
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    struct echo_result r;
    echo_result_init(&r);
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_unary(net_client_rpc(nc), ECHO("Hold"), &req.base, 0, &echo_result_cbs, &r,
                              &call));
    while (echo_state.held_len == 0)
        CHECK_OK(net_loop_run_until(f.loop, result_closed, &r, 10) == BATON_ETIMEOUT ? 0 : -1);
    net_listener_shutdown(f.ls);
    CHECK_EQ(net_loop_run_until(f.loop, result_closed, &r, 200), BATON_ETIMEOUT);
    CHECK_EQ(net_listener_conns(f.ls), 1);
    echo_finish_held(0, "goodbye");
    CHECK_OK(net_loop_run_until(f.loop, result_closed, &r, WAIT_MS));
    CHECK_EQ(r.code, GRPC_OK);
    /* The server closes the connection once the last call is done. */
    CHECK_OK(net_loop_run_until(f.loop, client_ended, &cs, WAIT_MS));
    CHECK_OK(net_loop_run_until(f.loop, listener_empty, f.ls, WAIT_MS));
    fixture_close(&f);
}

static bool never(void *ctx)
{
    return false;
}

TEST(tcp_connection_limit)
{
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    struct fixture f;
    CHECK_OK(net_loop_create(NULL, &f.loop));
    CHECK_OK(rpc_server_create(&cfg, &f.srv));
    CHECK_OK(echo_register(f.srv));
    CHECK_OK(net_listen_rpc(f.loop, "http://127.0.0.1:0", f.srv, 2, &f.ls));
    struct raw_peer p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = (struct raw_peer){.fd = raw_connect(net_listener_port(f.ls))};
        net_loop_run_until(f.loop, never, NULL, 100);
    }
    CHECK_OK(net_loop_run_until(f.loop, raw_closed, &p[2], WAIT_MS));
    CHECK(!raw_closed(&p[0]));
    CHECK(!raw_closed(&p[1]));
    CHECK_EQ(net_listener_conns(f.ls), 2);
    for (int i = 0; i < 3; i++)
        close(p[i].fd);
    CHECK_OK(net_loop_run_until(f.loop, listener_empty, f.ls, WAIT_MS));
    fixture_close(&f);
}

/* A client that asks for a 400 MB stream, opens its flow-control windows wide, and never reads:
 * the kernel buffers fill, net stops pulling output, and the handler is told to pause. */
struct slow_reader {
    int fd;
    nghttp2_session *h2;
    uint8_t body[5 + 4096 + 16];
    size_t body_len, body_off;
};

static ssize_t slow_read_body(nghttp2_session *h2, int32_t id, uint8_t *dst, size_t len,
                              uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct slow_reader *s = user;
    size_t n = BATON_MIN(len, s->body_len - s->body_off);
    memcpy(dst, s->body + s->body_off, n);
    s->body_off += n;
    if (s->body_off == s->body_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static ssize_t slow_send(nghttp2_session *h2, const uint8_t *data, size_t len, int flags,
                         void *user)
{
    struct slow_reader *s = user;
    ssize_t n = send(s->fd, data, len, MSG_NOSIGNAL);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? NGHTTP2_ERR_WOULDBLOCK
                                                         : NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static bool slow_send_only(void *ctx)
{
    struct slow_reader *s = ctx;
    nghttp2_session_send(s->h2); /* never recv */
    return false;
}

TEST(tcp_slow_reader_pauses_the_handler)
{
    struct fixture f;
    fixture_open(&f, NULL);
    struct slow_reader s = {.fd = raw_connect(net_listener_port(f.ls))};
    int rcvbuf = 16 * 1024;
    setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    uint8_t payload[4096];
    memset(payload, 's', sizeof(payload));
    Baton__Test__EchoRequest req = BATON__TEST__ECHO_REQUEST__INIT;
    req.payload.data = payload;
    req.payload.len = sizeof(payload);
    req.count = 100000;
    size_t n = baton__test__echo_request__pack(&req, s.body + 5);
    s.body[3] = (uint8_t)(n >> 8);
    s.body[4] = (uint8_t)n;
    s.body_len = 5 + n;

    nghttp2_session_callbacks *cbs;
    CHECK_EQ(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, slow_send);
    CHECK_EQ(nghttp2_session_client_new(&s.h2, cbs, &s), 0);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (1u << 31) - 1}};
    CHECK_EQ(nghttp2_submit_settings(s.h2, NGHTTP2_FLAG_NONE, iv, 1), 0);
    CHECK_EQ(nghttp2_session_set_local_window_size(s.h2, NGHTTP2_FLAG_NONE, 0, (1u << 31) - 1), 0);
    nghttp2_nv nva[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":path", (uint8_t *)ECHO("Stream"), 5, strlen(ECHO("Stream")), 0},
        {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
    };
    nghttp2_data_provider prd = {.read_callback = slow_read_body};
    CHECK_GT(nghttp2_submit_request(s.h2, NULL, nva, 5, &prd, NULL), 0);
    CHECK_EQ(net_loop_run_until(f.loop, slow_send_only, &s, 1500), BATON_ETIMEOUT);
    test_log("handler paused %d times; the stream is still open", echo_state.ebusy);
    CHECK_GT(echo_state.ebusy, 0);
    CHECK_EQ(net_listener_conns(f.ls), 1);
    nghttp2_session_del(s.h2);
    close(s.fd);
    CHECK_OK(net_loop_run_until(f.loop, listener_empty, f.ls, WAIT_MS));
    CHECK_EQ(echo_state.cancels, 1); /* the paused handler hears that its call is gone */
    fixture_close(&f);
}
