/*
 * The peer transport over real loopback TCP, driven on one libuv loop: frames in order on both
 * channels, peer-down reports when the other side closes, reconnection, handshake checks,
 * bounded queues and oversized frames.
 */
#include "net/net.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct member {
    struct net_peers *np;
    uint64_t id;
    uint64_t received[2]; /* per channel: frames, checked for order */
    uint64_t bytes;
    int down_reports[8];
    bool stopped;
};

static void on_message(void *ctx, uint64_t from, const uint8_t *data, size_t len)
{
    struct member *m = ctx;
    CHECK_GE(len, 9);
    int ch = data[0];
    CHECK(ch == 0 || ch == 1);
    uint64_t seq = le64_get(data + 1);
    CHECK_EQ_U64(seq, m->received[ch]); /* in order, nothing lost on a healthy link */
    for (size_t i = 9; i < len; i++)
        CHECK_EQ(data[i], (uint8_t)(seq + i));
    m->received[ch]++;
    m->bytes += len;
}

static void on_peer_down(void *ctx, uint64_t peer)
{
    struct member *m = ctx;
    CHECK_LT(peer, 8);
    m->down_reports[peer]++;
}

/* Answers discovery with "<url> known to <id>". */
static void on_discover(void *ctx, const char *peer_url, struct buf *reply)
{
    struct member *m = ctx;
    char t[1200];
    int n = snprintf(t, sizeof(t), "%s known to %llu", peer_url, (unsigned long long)m->id);
    CHECK_OK(buf_append(reply, t, (size_t)n));
}

static void on_stopped(void *ctx)
{
    ((struct member *)ctx)->stopped = true;
}

static char log_text[8192];
static void log_capture(void *ctx, enum log_level level, const char *line, size_t len)
{
    size_t have = strlen(log_text);
    if (have + len + 2 < sizeof(log_text))
        snprintf(log_text + have, sizeof(log_text) - have, "%.*s\n", (int)len, line);
}
static struct log_sink sink = {log_capture, NULL, LOG_DEBUG};

static void start(struct net_loop *loop, struct member *m, uint64_t id, uint64_t cluster,
                  uint16_t port, size_t queue_max)
{
    memset(m, 0, sizeof(*m));
    m->id = id;
    struct net_peers_config cfg = {.self_id = id,
                                   .cluster_id = cluster,
                                   .listen_host = "127.0.0.1",
                                   .listen_port = port,
                                   .queue_bytes_max = queue_max,
                                   .frame_bytes_max = 1 << 20,
                                   .backoff_min_ms = 5,
                                   .backoff_max_ms = 50,
                                   .log = &sink};
    struct net_peer_handler h = {on_message, on_peer_down, m, on_discover};
    CHECK_OK(net_peers_start(loop, &cfg, &h, &m->np));
}

static void stop(struct net_loop *loop, struct member *m);

/* Runs the loop until cond(ctx) or about max_ms of wall time. */
static bool run_until(struct net_loop *loop, bool (*cond)(void *), void *ctx, int max_ms)
{
    return net_loop_run_until(loop, cond, ctx, (uint32_t)max_ms) == 0;
}

static bool once(void *ctx)
{
    return (*(int *)ctx)++ > 0;
}

/* One turn of the loop without waiting for a condition. */
static void turn(struct net_loop *loop)
{
    int n = 0;
    net_loop_run_until(loop, once, &n, 50);
}

static bool is_stopped(void *ctx)
{
    return ((struct member *)ctx)->stopped;
}

static void stop(struct net_loop *loop, struct member *m)
{
    net_peers_stop(m->np, on_stopped, m);
    CHECK(run_until(loop, is_stopped, m, 5000));
}

struct pair {
    struct member *a, *b;
};
static bool both_connected(void *ctx)
{
    struct pair *p = ctx;
    return net_peers_connected(p->a->np, p->b->id) && net_peers_connected(p->b->np, p->a->id);
}

static int send_frame(struct member *from, uint64_t to, int ch, uint64_t seq, size_t len)
{
    uint8_t f[4096];
    CHECK(len >= 9 && len <= sizeof(f));
    f[0] = (uint8_t)ch;
    le64_put(f + 1, seq);
    for (size_t i = 9; i < len; i++)
        f[i] = (uint8_t)(seq + i);
    return net_peers_send(from->np, to, ch, f, len);
}

struct want {
    struct member *m;
    uint64_t n0, n1;
};
static bool received_all(void *ctx)
{
    struct want *w = ctx;
    return w->m->received[0] >= w->n0 && w->m->received[1] >= w->n1;
}

struct down {
    struct member *m;
    uint64_t peer;
};
static bool down_reported(void *ctx)
{
    struct down *d = ctx;
    return d->m->down_reports[d->peer] > 0;
}

TEST(frames_flow_in_order_on_both_channels)
{
    struct net_loop *loop;
    CHECK_OK(net_loop_create(NULL, &loop));
    struct member a, b;
    start(loop, &a, 1, 7, 0, 0);
    start(loop, &b, 2, 7, 0, 0);
    CHECK_OK(net_peers_add(a.np, 2, "127.0.0.1", net_peers_port(b.np)));
    CHECK_OK(net_peers_add(b.np, 1, "127.0.0.1", net_peers_port(a.np)));
    struct pair p = {&a, &b};
    CHECK(run_until(loop, both_connected, &p, 5000));
    uint64_t n[2] = {0, 0};
    for (int i = 0; i < 3000; i++) {
        int ch = i % 3 == 0;
        CHECK_OK(send_frame(&a, 2, ch, n[ch]++, 9 + (size_t)(i * 37) % 4000));
        if (i % 100 == 0)
            turn(loop);
    }
    struct want w = {&b, n[0], n[1]};
    CHECK(run_until(loop, received_all, &w, 10000));
    CHECK_EQ(b.received[0], n[0]);
    CHECK_EQ(b.received[1], n[1]);
    CHECK_EQ(net_peers_send(a.np, 9, NET_CHANNEL_MSG, "x", 1), BATON_ENOTFOUND);
    stop(loop, &a);
    stop(loop, &b);
    net_loop_destroy(loop);
}

TEST(peer_exit_is_reported_once_and_links_reconnect)
{
    struct net_loop *loop;
    CHECK_OK(net_loop_create(NULL, &loop));
    struct member a, b;
    start(loop, &a, 1, 7, 0, 0);
    start(loop, &b, 2, 7, 0, 0);
    uint16_t b_port = net_peers_port(b.np);
    CHECK_OK(net_peers_add(a.np, 2, "127.0.0.1", b_port));
    CHECK_OK(net_peers_add(b.np, 1, "127.0.0.1", net_peers_port(a.np)));
    struct pair p = {&a, &b};
    CHECK(run_until(loop, both_connected, &p, 5000));
    /* b's process "exits": its sockets close; a hears EOF and reports b down. */
    stop(loop, &b);
    struct down a_sees_b = {&a, 2}, b_sees_a = {&b, 1};
    CHECK(run_until(loop, down_reported, &a_sees_b, 5000));
    /* Refused reconnects during the outage do not report again. */
    run_until(loop, is_stopped, &a, 200);
    CHECK_EQ(a.down_reports[2], 1);
    CHECK_EQ(send_frame(&a, 2, 0, 0, 20), BATON_EUNAVAIL);
    /* b comes back on the same port: a's links reconnect by themselves. */
    start(loop, &b, 2, 7, b_port, 0);
    CHECK_OK(net_peers_add(b.np, 1, "127.0.0.1", net_peers_port(a.np)));
    CHECK(run_until(loop, both_connected, &p, 5000));
    CHECK_OK(send_frame(&a, 2, 0, 0, 100));
    struct want w = {&b, 1, 0};
    CHECK(run_until(loop, received_all, &w, 5000));
    stop(loop, &a);
    CHECK(run_until(loop, down_reported, &b_sees_a, 5000));
    CHECK_EQ(b.down_reports[1], 1);
    stop(loop, &b);
    net_loop_destroy(loop);
}

TEST(handshake_from_another_cluster_is_refused)
{
    struct net_loop *loop;
    CHECK_OK(net_loop_create(NULL, &loop));
    struct member a, c;
    log_text[0] = 0;
    start(loop, &a, 1, 7, 0, 0);
    start(loop, &c, 2, 999, 0, 0);
    CHECK_OK(net_peers_add(a.np, 2, "127.0.0.1", net_peers_port(c.np)));
    CHECK_OK(net_peers_add(c.np, 1, "127.0.0.1", net_peers_port(a.np)));
    run_until(loop, is_stopped, &a, 300);
    send_frame(&c, 1, 0, 0, 30);
    run_until(loop, is_stopped, &a, 200);
    CHECK_EQ(a.received[0], 0);
    CHECK(strstr(log_text, "cluster id mismatch") != NULL);
    stop(loop, &a);
    stop(loop, &c);
    net_loop_destroy(loop);
}

struct discover_job {
    uint16_t port;
    const char *url;
    uint32_t timeout_ms;
    struct buf reply;
    int rc;
    bool done;
};
static void *discover_thread(void *arg)
{
    struct discover_job *j = arg;
    j->rc = net_peers_discover("127.0.0.1", j->port, j->url, j->timeout_ms, &j->reply);
    __atomic_store_n(&j->done, true, __ATOMIC_RELEASE);
    return NULL;
}
static bool discover_done(void *ctx)
{
    return __atomic_load_n(&((struct discover_job *)ctx)->done, __ATOMIC_ACQUIRE);
}

/* The blocking client runs on a thread while the member's loop answers. */
static void discover(struct net_loop *loop, struct discover_job *j)
{
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, discover_thread, j), 0);
    CHECK(run_until(loop, discover_done, j, 10000));
    pthread_join(t, NULL);
}

TEST(discovery_answers_a_joining_member_and_closes)
{
    struct net_loop *loop;
    CHECK_OK(net_loop_create(NULL, &loop));
    struct member a;
    start(loop, &a, 5, 7, 0, 0);
    struct discover_job j = {
        .port = net_peers_port(a.np), .url = "http://10.0.0.9:2380", .timeout_ms = 5000};
    discover(loop, &j);
    CHECK_OK(j.rc);
    CHECK_MEM(j.reply.data, j.reply.len, "http://10.0.0.9:2380 known to 5", 31);
    /* A second request on a fresh connection works too; the member keeps serving. */
    struct discover_job k = {.port = j.port, .url = "x", .timeout_ms = 5000};
    discover(loop, &k);
    CHECK_OK(k.rc);
    CHECK_MEM(k.reply.data, k.reply.len, "x known to 5", 12);
    /* Nobody listening: refused, not a hang. */
    stop(loop, &a);
    struct discover_job r = {.port = j.port, .url = "x", .timeout_ms = 2000};
    discover(loop, &r);
    CHECK_EQ(r.rc, -ECONNREFUSED);
    CHECK_EQ(net_peers_discover("127.0.0.1", 1, "", 100, &r.reply), BATON_EINVAL);
    buf_free(&j.reply);
    buf_free(&k.reply);
    buf_free(&r.reply);
    net_loop_destroy(loop);
}

TEST(queue_bound_and_oversized_frames)
{
    struct net_loop *loop;
    CHECK_OK(net_loop_create(NULL, &loop));
    struct member a, b;
    log_text[0] = 0;
    start(loop, &a, 1, 7, 0, 8192);
    start(loop, &b, 2, 7, 0, 0);
    CHECK_OK(net_peers_add(a.np, 2, "127.0.0.1", net_peers_port(b.np)));
    CHECK_OK(net_peers_add(b.np, 1, "127.0.0.1", net_peers_port(a.np)));
    struct pair p = {&a, &b};
    CHECK(run_until(loop, both_connected, &p, 5000));
    /* Without running the loop the queue only grows: past 8 KiB sends are refused. */
    int rc = 0, sent = 0;
    for (int i = 0; i < 100 && rc == 0; i++)
        if ((rc = send_frame(&a, 2, 0, (uint64_t)sent, 1000)) == 0)
            sent++;
    CHECK_EQ(rc, BATON_EBUSY);
    CHECK_GT(sent, 3);
    CHECK_LT(sent, 10);
    CHECK_EQ(net_peers_send(a.np, 2, NET_CHANNEL_MSG, log_text, 2 << 20), BATON_ETOOBIG);
    struct want w = {&b, (uint64_t)sent, 0};
    CHECK(run_until(loop, received_all, &w, 5000));

    /* A raw client with a valid handshake and an absurd frame length is cut off. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(net_peers_port(b.np))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CHECK_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    uint8_t hs[33 + 4];
    memcpy(hs, "BATONPR1", 8);
    le64_put(hs + 8, 7);
    le64_put(hs + 16, 1);
    le64_put(hs + 24, 2);
    hs[32] = 0;
    le32_put(hs + 33, 0x7fffffff);
    CHECK_EQ(write(fd, hs, sizeof(hs)), (ssize_t)sizeof(hs));
    run_until(loop, is_stopped, &b, 300);
    char x;
    CHECK_EQ(read(fd, &x, 1), 0); /* closed by b */
    close(fd);
    CHECK(strstr(log_text, "frame too large") != NULL);
    stop(loop, &a);
    stop(loop, &b);
    net_loop_destroy(loop);
}
