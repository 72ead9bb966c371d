/*
 * The Watch service at the gRPC level against a real batond process: a watcher whose client
 * stops reading its socket while another client's watcher on the same keys keeps receiving
 * every event; batond's anonymous memory stays bounded while the stalled stream is far behind;
 * once the stalled client reads again it gets every event, in order, caught up from the store.
 * Also progress notifications (short interval through --watch-progress-notify-interval-ms),
 * fragmentation of a large delivery, cancel, and a progress request.
 *
 * Clients are rpc_client objects pumped by hand over blocking-free sockets, so the test decides
 * exactly when each one reads.
 */
#include "rpc/rpc.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <rpc.pb-c.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS    60000
#define PUTS       96
#define VALUE_SIZE (128 * 1024)

static pid_t batond_pid;

static void kill_batond(void)
{
    if (batond_pid > 0) {
        kill(batond_pid, SIGKILL);
        waitpid(batond_pid, NULL, 0);
        batond_pid = 0;
    }
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    CHECK_OK(bind(fd, (struct sockaddr *)&a, sizeof(a)));
    CHECK_OK(getsockname(fd, (struct sockaddr *)&a, &len));
    close(fd);
    return ntohs(a.sin_port);
}

static long rss_anon_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "RssAnon: %ld kB", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static uint16_t metrics_port;

/* A gauge from batond's /metrics (-1 when absent). */
static long metric(const char *name)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(metrics_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK_OK(connect(fd, (struct sockaddr *)&a, sizeof(a)));
    const char *req = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
    CHECK_EQ(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    static char body[1 << 16];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(body) - 1 && (n = read(fd, body + len, sizeof(body) - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    body[len] = 0;
    char pat[128];
    snprintf(pat, sizeof(pat), "\n%s ", name);
    const char *p = strstr(body, pat);
    return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

/* ---- A client pumped by hand ------------------------------------------------------------------
 */

struct conn {
    int fd;
    struct rpc_client *cl;
};

static int conn_open(struct conn *c, uint16_t port)
{
    struct rpc_client_config cfg;
    rpc_client_config_default(&cfg);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(c->fd);
        return -errno;
    }
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    return rpc_client_create(&cfg, NULL, NULL, &c->cl);
}

static void conn_close(struct conn *c)
{
    rpc_client_destroy(c->cl);
    close(c->fd);
}

/* Writes what the client has, reads what arrived (waiting up to wait_ms for it). */
static void conn_pump(struct conn *c, int wait_ms)
{
    struct buf out = {0};
    CHECK_OK(rpc_client_send(c->cl, &out, 1 << 20));
    size_t off = 0;
    while (off < out.len) {
        ssize_t n = write(c->fd, out.data + off, out.len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        CHECK(n < 0 && (errno == EAGAIN || errno == EINTR));
        struct pollfd p = {.fd = c->fd, .events = POLLOUT | POLLIN};
        poll(&p, 1, 100);
        if (p.revents & POLLIN) { /* the server may need us to read before it reads more */
            uint8_t in[65536];
            ssize_t r = read(c->fd, in, sizeof(in));
            if (r > 0)
                CHECK_OK(rpc_client_recv(c->cl, in, (size_t)r));
        }
    }
    buf_free(&out);
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) <= 0)
        return;
    for (int i = 0; i < 64; i++) {
        uint8_t in[65536];
        ssize_t r = read(c->fd, in, sizeof(in));
        if (r <= 0)
            break;
        CHECK_OK(rpc_client_recv(c->cl, in, (size_t)r));
    }
}

/* ---- Watch streams ----------------------------------------------------------------------------
 */

struct watch {
    struct rpc_client_call *call;
    int64_t watch_id;
    int created, canceled, progress, fragments, closed, deletes;
    int64_t last_id; /* watch_id of the last response */
    int64_t compact_revision;
    int events;
    int64_t next_rev; /* events must come in revision order, none missing */
    bool order_ok;
    size_t value_bytes;
};

static void on_watch_message(struct rpc_client_call *call, const uint8_t *data, size_t len,
                             void *ctx)
{
    struct watch *w = ctx;
    struct arena a;
    arena_init(&a, 4096);
    Etcdserverpb__WatchResponse *r = (Etcdserverpb__WatchResponse *)rpc_unpack(
        &etcdserverpb__watch_response__descriptor, &a, data, len);
    CHECK(r != NULL);
    CHECK(r->header != NULL && r->header->revision > 0);
    if (r->created) {
        w->created++;
        w->watch_id = r->watch_id;
    }
    if (r->canceled) {
        w->canceled++;
        w->compact_revision = r->compact_revision;
    }
    if (!r->created && !r->canceled && r->n_events == 0)
        w->progress++;
    w->fragments += r->fragment;
    w->last_id = r->watch_id;
    for (size_t i = 0; i < r->n_events; i++) {
        const Mvccpb__KeyValue *kv = r->events[i]->kv;
        if (w->next_rev && kv->mod_revision != w->next_rev)
            w->order_ok = false;
        w->next_rev = kv->mod_revision + 1;
        w->value_bytes += kv->value.len;
        w->deletes += r->events[i]->type == MVCCPB__EVENT__EVENT_TYPE__DELETE;
        w->events++;
    }
    arena_free(&a);
}

static void on_watch_close(struct rpc_client_call *call, int code, const char *message, void *ctx)
{
    ((struct watch *)ctx)->closed = 1;
}

static const struct rpc_client_callbacks watch_cbs = {on_watch_message, on_watch_close, NULL};

static void watch_start(struct conn *c, struct watch *w)
{
    memset(w, 0, sizeof(*w));
    w->order_ok = true;
    CHECK_OK(rpc_client_call_start(c->cl, "/etcdserverpb.Watch/Watch", NULL, 0, 0, &watch_cbs, w,
                                   &w->call));
}

static void watch_create(struct watch *w, const char *key, const char *end, int64_t rev,
                         bool progress, bool fragment)
{
    Etcdserverpb__WatchCreateRequest c = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    c.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    c.range_end = (ProtobufCBinaryData){end ? strlen(end) : 0, (uint8_t *)end};
    c.start_revision = rev;
    c.progress_notify = progress;
    c.fragment = fragment;
    Etcdserverpb__WatchRequest r = ETCDSERVERPB__WATCH_REQUEST__INIT;
    r.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    r.create_request = &c;
    CHECK_OK(rpc_client_call_send(w->call, &r.base));
}

/* ---- Puts ---------------------------------------------------------------------------------- */

struct puts {
    struct rpc_client *cl;
    const char *prefix;
    int started, done, failed, total;
    uint8_t *value;
    size_t value_len;
};

static void put_start(struct puts *p);

static void on_put_close(struct rpc_client_call *call, int code, const char *message, void *ctx)
{
    struct puts *p = ctx;
    p->done++;
    if (code != GRPC_OK) {
        p->failed++;
        if (strcmp(p->prefix, "ready") != 0)
            test_log("put failed: %d %s", code, message);
    }
    if (p->started < p->total)
        put_start(p);
}

static void on_put_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *ctx)
{
}

static const struct rpc_client_callbacks put_cbs = {on_put_message, on_put_close, NULL};

static void put_start(struct puts *p)
{
    char key[64];
    snprintf(key, sizeof(key), "%s%05d", p->prefix, p->started++);
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    r.value = (ProtobufCBinaryData){p->value_len, p->value};
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_unary(p->cl, "/etcdserverpb.KV/Put", &r.base, 30000, &put_cbs, p, &call));
}

/* Runs total puts of value_len bytes, 16 in flight, pumping c until they are done. */
static void puts_run(struct conn *c, const char *prefix, int total, size_t value_len)
{
    struct puts p = {.cl = c->cl, .prefix = prefix, .total = total, .value_len = value_len};
    p.value = malloc(value_len);
    memset(p.value, 'v', value_len);
    for (int i = 0; i < 16 && p.started < total; i++)
        put_start(&p);
    uint64_t end = mono_ms() + WAIT_MS;
    while (p.done < total && mono_ms() < end)
        conn_pump(c, 5);
    free(p.value);
    CHECK_EQ(p.done, total);
    CHECK_EQ(p.failed, 0);
}

/* ---- The member -------------------------------------------------------------------------------
 */

static uint16_t batond_start(uint64_t max_request_bytes)
{
    uint16_t cp = free_port(), pp = free_port(), mp = free_port();
    char dir[512], c[64], p[64], m[64], cl[96], mrb[32];
    snprintf(dir, sizeof(dir), "%s/member", test_tmpdir());
    snprintf(c, sizeof(c), "http://127.0.0.1:%u", cp);
    snprintf(p, sizeof(p), "http://127.0.0.1:%u", pp);
    snprintf(m, sizeof(m), "http://127.0.0.1:%u", mp);
    metrics_port = mp;
    snprintf(cl, sizeof(cl), "w=%s", p);
    snprintf(mrb, sizeof(mrb), "%llu", (unsigned long long)max_request_bytes);
    signal(SIGPIPE, SIG_IGN);
    fflush(NULL);
    batond_pid = fork();
    CHECK(batond_pid >= 0);
    if (batond_pid == 0) {
        /* A small ASan quarantine, so that RssAnon reflects live memory. */
        setenv("ASAN_OPTIONS", "quarantine_size_mb=1:detect_leaks=0", 1);
        char logp[600];
        snprintf(logp, sizeof(logp), "%s/batond.log", test_tmpdir());
        int lf = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(lf, 1);
        dup2(lf, 2);
        execl(BATOND_PATH, "batond", "--name", "w", "--data-dir", dir, "--listen-client-urls", c,
              "--advertise-client-urls", c, "--listen-peer-urls", p,
              "--initial-advertise-peer-urls", p, "--listen-metrics-urls", m, "--initial-cluster",
              cl, "--max-request-bytes", mrb, "--watch-progress-notify-interval-ms", "200",
              (char *)NULL);
        _exit(127);
    }
    /* Ready once a Put succeeds (a leader is elected). */
    uint64_t end = mono_ms() + WAIT_MS;
    while (mono_ms() < end) {
        struct conn k;
        if (conn_open(&k, cp) == 0) {
            struct puts pu = {.cl = k.cl, .prefix = "ready", .total = 1, .value_len = 1};
            uint8_t v = 'r';
            pu.value = &v;
            put_start(&pu);
            uint64_t e2 = mono_ms() + 3000;
            while (!pu.done && mono_ms() < e2)
                conn_pump(&k, 10);
            conn_close(&k);
            if (pu.done && !pu.failed)
                return cp;
        }
        usleep(100 * 1000);
    }
    CHECK(!"batond did not become ready");
    return 0;
}

static void wait_for(struct conn *c, bool (*cond)(void *), void *ctx)
{
    uint64_t end = mono_ms() + WAIT_MS;
    while (!cond(ctx) && mono_ms() < end)
        conn_pump(c, 10);
    CHECK(cond(ctx));
}

static bool created(void *ctx)
{
    return ((struct watch *)ctx)->created > 0;
}

static bool all_events(void *ctx)
{
    return ((struct watch *)ctx)->events >= PUTS;
}

static bool got_progress(void *ctx)
{
    return ((struct watch *)ctx)->progress >= 2;
}

static bool got_canceled(void *ctx)
{
    return ((struct watch *)ctx)->canceled > 0;
}

TEST(slow_watcher_does_not_stall_others_and_catches_up)
{
    atexit(kill_batond);
    uint16_t port = batond_start(1572864);
    struct conn slow, fast;
    CHECK_OK(conn_open(&fast, port));
    struct watch ws, wf;
    watch_start(&fast, &wf);
    watch_create(&wf, "s/", "s0", 0, false, false);
    wait_for(&fast, created, &wf);

    /* Warm-up: the same traffic with the fast watcher alone, so the allocators of batond have
     * reached their working size before the measurement. */
    puts_run(&fast, "s/a", PUTS, VALUE_SIZE);
    wait_for(&fast, all_events, &wf);
    CHECK(wf.order_ok);
    long rss_before = rss_anon_kib(batond_pid);

    CHECK_OK(conn_open(&slow, port));
    watch_start(&slow, &ws);
    watch_create(&ws, "s/", "s0", 0, false, false);
    wait_for(&slow, created, &ws);
    wf.events = 0;
    /* 12 MiB of events; the slow client reads nothing from now on. */
    puts_run(&fast, "s/b", PUTS, VALUE_SIZE);
    wait_for(&fast, all_events, &wf);
    CHECK_EQ(wf.events, PUTS);
    CHECK(wf.order_ok);
    CHECK_EQ(ws.events, 0);
    /* The stalled watcher was moved to the catch-up set: the hub holds no events for it. */
    CHECK_EQ(metric("etcd_debugging_mvcc_watcher_total"), 2);
    CHECK_EQ(metric("etcd_debugging_mvcc_slow_watcher_total"), 1);
    long rss_after = rss_anon_kib(batond_pid);
    test_log("batond RssAnon %ld KiB before, %ld KiB with the slow stream %d MiB behind",
             rss_before, rss_after, PUTS * VALUE_SIZE >> 20);
    /* Informational mostly: the allocators alone grow by ~14 MiB here on an ASan build (same
     * traffic without the stalled watcher); a gross leak per event would show. */
    CHECK_LT(rss_after - rss_before, 64 * 1024);

    /* The slow client reads again: everything arrives, in order. */
    wait_for(&slow, all_events, &ws);
    CHECK_EQ(ws.events, PUTS);
    CHECK(ws.order_ok);
    CHECK_EQ(ws.value_bytes, (size_t)PUTS * VALUE_SIZE);
    CHECK_EQ(metric("etcd_debugging_mvcc_slow_watcher_total"), 0);
    conn_close(&slow);
    conn_close(&fast);
    kill_batond();
}

TEST(progress_fragment_cancel)
{
    atexit(kill_batond);
    /* A small request bound so that a delivery of 8 x 64 KiB must be fragmented. */
    uint16_t port = batond_start(256 * 1024);
    struct conn c;
    CHECK_OK(conn_open(&c, port));

    /* Progress notifications every 200 ms for a watcher that asked, none for another. */
    struct watch wp, wq;
    watch_start(&c, &wp);
    watch_create(&wp, "p", NULL, 0, true, false);
    wait_for(&c, created, &wp);
    watch_start(&c, &wq);
    watch_create(&wq, "q", NULL, 0, false, false);
    wait_for(&c, created, &wq);
    wait_for(&c, got_progress, &wp);
    CHECK_EQ(wq.progress, 0);

    /* A txn-free history replay of 8 puts from one revision: one delivery, fragmented. */
    puts_run(&c, "f/", 8, 64 * 1024);
    struct watch wf;
    watch_start(&c, &wf);
    watch_create(&wf, "f/", "f0", 1, false, true);
    uint64_t end = mono_ms() + WAIT_MS;
    while (wf.events < 8 && mono_ms() < end)
        conn_pump(&c, 10);
    CHECK_EQ(wf.events, 8);
    CHECK(wf.order_ok);
    CHECK_GT(wf.fragments, 0);

    /* Cancel: answered with canceled and the same id. */
    Etcdserverpb__WatchCancelRequest cr = ETCDSERVERPB__WATCH_CANCEL_REQUEST__INIT;
    cr.watch_id = wq.watch_id;
    Etcdserverpb__WatchRequest r = ETCDSERVERPB__WATCH_REQUEST__INIT;
    r.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST;
    r.cancel_request = &cr;
    CHECK_OK(rpc_client_call_send(wq.call, &r.base));
    wait_for(&c, got_canceled, &wq);
    CHECK_EQ(wq.compact_revision, 0);

    /* Two watchers with the same client-chosen id on one stream: the second is refused. */
    struct watch wd;
    watch_start(&c, &wd);
    Etcdserverpb__WatchCreateRequest cc = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cc.key = (ProtobufCBinaryData){1, (uint8_t *)"d"};
    cc.watch_id = 7;
    Etcdserverpb__WatchRequest rr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    rr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    rr.create_request = &cc;
    CHECK_OK(rpc_client_call_send(wd.call, &rr.base));
    CHECK_OK(rpc_client_call_send(wd.call, &rr.base));
    end = mono_ms() + WAIT_MS;
    while (wd.created < 2 && mono_ms() < end)
        conn_pump(&c, 10);
    CHECK_EQ(wd.created, 2);
    CHECK_EQ(wd.canceled, 1);
    CHECK_EQ(wd.watch_id, -1);

    /* Filter NOPUT: a put then a delete give one DELETE event. */
    struct watch wn;
    watch_start(&c, &wn);
    Etcdserverpb__WatchCreateRequest nc = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    nc.key = (ProtobufCBinaryData){2, (uint8_t *)"n/"};
    nc.range_end = (ProtobufCBinaryData){2, (uint8_t *)"n0"};
    Etcdserverpb__WatchCreateRequest__FilterType filters[1] = {
        ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT};
    nc.filters = filters;
    nc.n_filters = 1;
    rr.create_request = &nc;
    CHECK_OK(rpc_client_call_send(wn.call, &rr.base));
    wait_for(&c, created, &wn);
    puts_run(&c, "n/", 1, 1);
    Etcdserverpb__DeleteRangeRequest dr = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    dr.key = (ProtobufCBinaryData){7, (uint8_t *)"n/00000"};
    struct puts pd = {.prefix = "del", .started = 1, .total = 1};
    struct rpc_client_call *dc;
    CHECK_OK(rpc_client_unary(c.cl, "/etcdserverpb.KV/DeleteRange", &dr.base, 30000, &put_cbs, &pd,
                              &dc));
    end = mono_ms() + WAIT_MS;
    while ((wn.events < 1 || !pd.done) && mono_ms() < end)
        conn_pump(&c, 10);
    CHECK_EQ(pd.failed, 0);
    CHECK_EQ(wn.events, 1);
    CHECK_EQ(wn.deletes, 1);

    /* A progress request: one response for the stream, watch_id -1 (etcd 3.4). */
    Etcdserverpb__WatchProgressRequest pr = ETCDSERVERPB__WATCH_PROGRESS_REQUEST__INIT;
    Etcdserverpb__WatchRequest prr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    prr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST;
    prr.progress_request = &pr;
    int before = wn.progress;
    CHECK_OK(rpc_client_call_send(wn.call, &prr.base));
    end = mono_ms() + WAIT_MS;
    while (wn.progress == before && mono_ms() < end)
        conn_pump(&c, 10);
    CHECK_EQ(wn.progress, before + 1);
    CHECK_EQ(wn.last_id, -1);
    conn_close(&c);
    kill_batond();
}

/* ---- Large ranges ----------------------------------------------------------------------- */

struct ranges {
    int done, ok;
    size_t kvs, value_bytes;
};

static void on_range_message(struct rpc_client_call *call, const uint8_t *data, size_t len,
                             void *ctx)
{
    struct ranges *r = ctx;
    struct arena a;
    arena_init(&a, 4096);
    Etcdserverpb__RangeResponse *m = (Etcdserverpb__RangeResponse *)rpc_unpack(
        &etcdserverpb__range_response__descriptor, &a, data, len);
    CHECK(m != NULL);
    r->kvs += m->n_kvs;
    for (size_t i = 0; i < m->n_kvs; i++)
        r->value_bytes += m->kvs[i]->value.len;
    arena_free(&a);
}

static void on_range_close(struct rpc_client_call *call, int code, const char *message, void *ctx)
{
    struct ranges *r = ctx;
    r->done++;
    if (code == GRPC_OK)
        r->ok++;
    else
        test_log("range failed: %d %s", code, message);
}

static const struct rpc_client_callbacks range_cbs = {on_range_message, on_range_close, NULL};

/* Concurrent responses larger than the connection's output bound on one connection: the ones
 * that do not fit wait until the output drains, and every range completes. */
TEST(concurrent_large_ranges_one_connection)
{
    atexit(kill_batond);
    uint16_t port = batond_start(1572864);
    struct conn c;
    CHECK_OK(conn_open(&c, port));
    enum { KEYS = 17, RANGES = 6 }; /* 17 MiB per response, above the 16 MiB bound */
    puts_run(&c, "r/", KEYS, 1 << 20);
    Etcdserverpb__RangeRequest q = ETCDSERVERPB__RANGE_REQUEST__INIT;
    q.key = (ProtobufCBinaryData){2, (uint8_t *)"r/"};
    q.range_end = (ProtobufCBinaryData){2, (uint8_t *)"r0"};
    struct ranges r = {0};
    for (int i = 0; i < RANGES; i++) {
        struct rpc_client_call *call;
        q.serializable = i % 2; /* both paths: local and after a read barrier */
        CHECK_OK(rpc_client_unary(c.cl, "/etcdserverpb.KV/Range", &q.base, 120000, &range_cbs, &r,
                                  &call));
    }
    uint64_t end = mono_ms() + WAIT_MS;
    while (r.done < RANGES && mono_ms() < end)
        conn_pump(&c, 10);
    CHECK_EQ(r.ok, RANGES);
    CHECK_EQ(r.kvs, (size_t)RANGES * KEYS);
    CHECK_EQ(r.value_bytes, (size_t)RANGES * KEYS << 20);
    CHECK_GT(metric("baton_grpc_output_refused_total"), 0); /* some had to wait */
    conn_close(&c);
    kill_batond();
}
