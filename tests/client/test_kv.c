/*
 * libbaton against a real batond cluster (started by tests/compat/cluster.sh run, which exports
 * CLUSTER_ENDPOINTS): key-value calls, transactions, watches, leases, error reporting. Runs on
 * 1 and on 3 members.
 */
#include "baton.h"
#include "test.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *endpoints(void)
{
    const char *e = getenv("CLUSTER_ENDPOINTS");
    if (!e)
        test_fail(__FILE__, __LINE__, "CLUSTER_ENDPOINTS is not set (run under cluster.sh run)");
    return e;
}

static struct baton_client *open_client(void)
{
    struct baton_options o;
    baton_options_default(&o);
    o.endpoints = endpoints();
    struct baton_client *c = NULL;
    CHECK_EQ(baton_open(&o, &c), 0);
    return c;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A key unique to this run, so reruns against a kept cluster do not collide. */
static void key_of(char *out, size_t len, const char *test, int i)
{
    snprintf(out, len, "/t/%d/%s/%03d", (int)getpid(), test, i);
}

TEST(kv_put_get_delete)
{
    struct baton_client *c = open_client();
    char k[64];
    key_of(k, sizeof(k), "pgd", 1);
    int64_t rev1 = 0, rev2 = 0;
    CHECK_EQ(baton_put(c, k, strlen(k), "one", 3, 0, &rev1), 0);
    CHECK_GT(rev1, 0);
    CHECK_EQ(baton_put(c, k, strlen(k), "two", 3, 0, &rev2), 0);
    CHECK_GT(rev2, rev1);
    struct baton_result r;
    CHECK_EQ(baton_get(c, k, strlen(k), NULL, &r), 0);
    CHECK_EQ(r.kvs_len, 1);
    CHECK_MEM(r.kvs[0].value, r.kvs[0].value_len, "two", 3);
    CHECK_EQ(r.kvs[0].create_revision, rev1);
    CHECK_EQ(r.kvs[0].mod_revision, rev2);
    CHECK_EQ(r.kvs[0].version, 2);
    baton_result_free(&r);

    /* Prefix get over several keys, with a limit. */
    char p[64];
    snprintf(p, sizeof(p), "/t/%d/pfx/", (int)getpid());
    for (int i = 0; i < 5; i++) {
        char kk[80];
        snprintf(kk, sizeof(kk), "%s%d", p, i);
        CHECK_EQ(baton_put(c, kk, strlen(kk), "v", 1, 0, NULL), 0);
    }
    struct baton_get_options go = {.prefix = true, .limit = 3};
    CHECK_EQ(baton_get(c, p, strlen(p), &go, &r), 0);
    CHECK_EQ(r.kvs_len, 3);
    CHECK_EQ(r.count, 5);
    CHECK(r.more);
    char k2[80];
    snprintf(k2, sizeof(k2), "%s2", p);
    CHECK_MEM(r.kvs[2].key, r.kvs[2].key_len, k2, strlen(k2));
    baton_result_free(&r);

    uint8_t end[64];
    size_t el = baton_prefix_end(p, strlen(p), end);
    int64_t deleted = 0;
    CHECK_EQ(baton_delete(c, p, strlen(p), end, el, &deleted), 0);
    CHECK_EQ(deleted, 5);
    CHECK_EQ(baton_delete(c, k, strlen(k), NULL, 0, &deleted), 0);
    CHECK_EQ(deleted, 1);
    CHECK_EQ(baton_get(c, k, strlen(k), NULL, &r), 0);
    CHECK_EQ(r.kvs_len, 0);
    baton_result_free(&r);
    baton_close(c);
}

TEST(kv_txn_compare)
{
    struct baton_client *c = open_client();
    char k[64];
    key_of(k, sizeof(k), "txn", 1);
    int64_t rev = 0;
    CHECK_EQ(baton_put(c, k, strlen(k), "a", 1, 0, &rev), 0);

    /* mod == rev holds: put "b", then read it back in the same txn. */
    struct baton_cmp cmp = {.key = k,
                            .key_len = strlen(k),
                            .target = BATON_CMP_MOD,
                            .result = BATON_CMP_EQ,
                            .number = rev};
    struct baton_op then[2] = {
        {.kind = BATON_OP_PUT, .key = k, .key_len = strlen(k), .value = "b", .value_len = 1},
        {.kind = BATON_OP_GET, .key = k, .key_len = strlen(k)},
    };
    struct baton_op els = {.kind = BATON_OP_GET, .key = k, .key_len = strlen(k)};
    struct baton_txn t = {.cmps = &cmp,
                          .cmps_len = 1,
                          .then_ops = then,
                          .then_len = 2,
                          .else_ops = &els,
                          .else_len = 1};
    struct baton_result r;
    CHECK_EQ(baton_txn(c, &t, &r), 0);
    CHECK(r.succeeded);
    CHECK_EQ(r.ops_len, 2);
    CHECK_EQ(r.ops[1].kvs_len, 1);
    CHECK_MEM(r.ops[1].kvs[0].value, r.ops[1].kvs[0].value_len, "b", 1);
    int64_t rev_b = r.revision;
    baton_result_free(&r);

    /* The same compare again fails: the else branch reads "b". */
    CHECK_EQ(baton_txn(c, &t, &r), 0);
    CHECK(!r.succeeded);
    CHECK_EQ(r.ops_len, 1);
    CHECK_EQ(r.ops[0].kvs_len, 1);
    CHECK_MEM(r.ops[0].kvs[0].value, r.ops[0].kvs[0].value_len, "b", 1);
    CHECK_EQ(r.ops[0].kvs[0].mod_revision, rev_b);
    baton_result_free(&r);

    /* Value compare. */
    struct baton_cmp vc = {.key = k,
                           .key_len = strlen(k),
                           .target = BATON_CMP_VALUE,
                           .result = BATON_CMP_EQ,
                           .value = "b",
                           .value_len = 1};
    struct baton_op del = {.kind = BATON_OP_DELETE, .key = k, .key_len = strlen(k)};
    struct baton_txn t2 = {.cmps = &vc, .cmps_len = 1, .then_ops = &del, .then_len = 1};
    CHECK_EQ(baton_txn(c, &t2, &r), 0);
    CHECK(r.succeeded);
    CHECK_EQ(r.ops[0].deleted, 1);
    baton_result_free(&r);
    baton_close(c);
}

/* ---- watch ---------------------------------------------------------------------------------- */

struct seen {
    pthread_mutex_t mu;
    int n;
    int64_t revs[64];
    int types[64];
    char vals[64][16];
    int ended;
};

static void on_event(void *ctx, const struct baton_event *ev)
{
    struct seen *s = ctx;
    pthread_mutex_lock(&s->mu);
    if (s->n < 64) {
        s->revs[s->n] = ev->kv.mod_revision;
        s->types[s->n] = ev->type;
        snprintf(s->vals[s->n], sizeof(s->vals[0]), "%.*s",
                 (int)(ev->kv.value_len < 15 ? ev->kv.value_len : 15), (const char *)ev->kv.value);
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
}

static int seen_n(struct seen *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static bool wait_events(struct seen *s, int n, uint32_t timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    while (seen_n(s) < n && now_ms() < end)
        usleep(10000);
    return seen_n(s) >= n;
}

TEST(watch_events_in_order)
{
    struct baton_client *c = open_client();
    char p[64];
    snprintf(p, sizeof(p), "/t/%d/w/", (int)getpid());
    uint8_t end[64];
    size_t el = baton_prefix_end(p, strlen(p), end);
    struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct baton_watch *w = NULL;
    CHECK_EQ(baton_watch(c, p, strlen(p), end, el, 0, on_event, NULL, &s, &w), 0);
    int64_t revs[3];
    for (int i = 0; i < 3; i++) {
        char k[80], v[8];
        snprintf(k, sizeof(k), "%s%d", p, i);
        snprintf(v, sizeof(v), "v%d", i);
        CHECK_EQ(baton_put(c, k, strlen(k), v, strlen(v), 0, &revs[i]), 0);
    }
    char k0[80];
    snprintf(k0, sizeof(k0), "%s0", p);
    int64_t drev = 0;
    CHECK_EQ(baton_delete(c, k0, strlen(k0), NULL, 0, NULL), 0);
    CHECK(wait_events(&s, 4, 10000));
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(s.revs[i], revs[i]);
        CHECK_EQ(s.types[i], BATON_EVENT_PUT);
        char v[8];
        snprintf(v, sizeof(v), "v%d", i);
        CHECK_STR(s.vals[i], v);
    }
    CHECK_EQ(s.types[3], BATON_EVENT_DELETE);
    CHECK_GT(s.revs[3], revs[2]);
    (void)drev;
    baton_watch_stop(w);
    /* No event after stop. */
    CHECK_EQ(baton_put(c, k0, strlen(k0), "late", 4, 0, NULL), 0);
    usleep(300000);
    CHECK_EQ(seen_n(&s), 4);

    /* A watch from an old revision replays history. */
    struct seen s2 = {.mu = PTHREAD_MUTEX_INITIALIZER};
    CHECK_EQ(baton_watch(c, p, strlen(p), end, el, revs[1], on_event, NULL, &s2, &w), 0);
    CHECK(wait_events(&s2, 4, 10000));
    CHECK_EQ(s2.revs[0], revs[1]);
    CHECK_EQ(s2.revs[1], revs[2]);
    baton_watch_stop(w);
    baton_close(c);
}

/* ---- leases --------------------------------------------------------------------------------- */

TEST(lease_keepalive_and_revoke)
{
    struct baton_client *c = open_client();
    int64_t id = 0, ttl = 0;
    CHECK_EQ(baton_lease_grant(c, 2, &id, &ttl), 0);
    CHECK_GT(id, 0);
    CHECK_GE(ttl, 2);
    char k[64];
    key_of(k, sizeof(k), "lease", 1);
    CHECK_EQ(baton_put(c, k, strlen(k), "x", 1, id, NULL), 0);
    CHECK_EQ(baton_lease_keepalive(c, id, NULL, NULL), 0);
    /* Well past the TTL: the key must still be there. */
    sleep((unsigned)ttl + 2);
    struct baton_result r;
    CHECK_EQ(baton_get(c, k, strlen(k), NULL, &r), 0);
    CHECK_EQ(r.kvs_len, 1);
    CHECK_EQ(r.kvs[0].lease, id);
    baton_result_free(&r);
    int64_t left = 0;
    CHECK_EQ(baton_lease_ttl(c, id, &left), 0);
    CHECK_GT(left, 0);
    CHECK_EQ(baton_lease_revoke(c, id), 0);
    CHECK_EQ(baton_get(c, k, strlen(k), NULL, &r), 0);
    CHECK_EQ(r.kvs_len, 0);
    baton_result_free(&r);
    CHECK_EQ(baton_lease_ttl(c, id, &left), 0);
    CHECK_EQ(left, -1);
    /* A lease that is not kept alive lapses. */
    CHECK_EQ(baton_lease_grant(c, 2, &id, &ttl), 0);
    CHECK_EQ(baton_put(c, k, strlen(k), "y", 1, id, NULL), 0);
    uint64_t end = now_ms() + 15000;
    bool gone = false;
    while (!gone && now_ms() < end) {
        CHECK_EQ(baton_get(c, k, strlen(k), NULL, &r), 0);
        gone = r.kvs_len == 0;
        baton_result_free(&r);
        usleep(200000);
    }
    CHECK(gone);
    baton_close(c);
}

/* ---- errors --------------------------------------------------------------------------------- */

TEST(errors_bad_endpoints)
{
    struct baton_options o;
    baton_options_default(&o);
    struct baton_client *c = NULL;
    const char *msg;
    o.endpoints = "127.0.0.1:2379,not a host:port";
    CHECK_EQ(baton_open(&o, &c), BATONE_INVAL);
    baton_last_error(&msg);
    CHECK(strstr(msg, "malformed endpoint 'not a host:port'") != NULL);
    o.endpoints = "";
    CHECK_EQ(baton_open(&o, &c), BATONE_INVAL);
    o.endpoints = "127.0.0.1:99999";
    CHECK_EQ(baton_open(&o, &c), BATONE_INVAL);

    /* Nothing listens on port 1: a clear "unavailable" within the deadline. */
    o.endpoints = "127.0.0.1:1";
    o.call_timeout_ms = 1500;
    CHECK_EQ(baton_open(&o, &c), 0);
    uint64_t t0 = now_ms();
    CHECK_EQ(baton_put(c, "k", 1, "v", 1, 0, NULL), BATONE_UNAVAILABLE);
    uint64_t took = now_ms() - t0;
    baton_last_error(&msg);
    test_log("unreachable: %s (%s) after %" PRIu64 " ms", baton_errstr(BATONE_UNAVAILABLE), msg,
             took);
    CHECK(strstr(msg, "127.0.0.1:1") != NULL);
    CHECK(strstr(msg, "refused") != NULL);
    CHECK_LT(took, 150000);
    baton_close(c);
}

static struct baton_client *cb_client;
static int cb_rc;

static void on_event_calls_back(void *ctx, const struct baton_event *ev)
{
    struct seen *s = ctx;
    (void)ev;
    cb_rc = baton_put(cb_client, "x", 1, "y", 1, 0, NULL);
    pthread_mutex_lock(&s->mu);
    s->n++;
    pthread_mutex_unlock(&s->mu);
}

TEST(errors_server_messages)
{
    struct baton_client *c = open_client();
    const char *msg;
    /* etcd's own texts reach the caller. */
    CHECK_EQ(baton_lease_revoke(c, 0x7fff1234), BATONE_NOTFOUND);
    int code = baton_last_error(&msg);
    CHECK_EQ(code, 5);
    CHECK_STR(msg, "etcdserver: requested lease not found");
    struct baton_result r;
    char k[64];
    key_of(k, sizeof(k), "err", 1);
    struct baton_get_options go = {.revision = 1 << 30};
    CHECK_EQ(baton_get(c, k, strlen(k), &go, &r), BATONE_SERVER);
    baton_last_error(&msg);
    CHECK_STR(msg, "etcdserver: mvcc: required revision is a future revision");
    CHECK_EQ(baton_get(c, "", 0, NULL, &r), BATONE_INVAL);

    /* A blocking call from a callback is refused, not a deadlock. */
    struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct baton_watch *w;
    cb_client = c;
    CHECK_EQ(baton_watch(c, k, strlen(k), NULL, 0, 0, on_event_calls_back, NULL, &s, &w), 0);
    CHECK_EQ(baton_put(c, k, strlen(k), "v", 1, 0, NULL), 0);
    CHECK(wait_events(&s, 1, 10000));
    CHECK_EQ(cb_rc, BATONE_INVAL);
    baton_watch_stop(w);
    baton_close(c);
}

/* Many threads share one client. */
struct thr {
    struct baton_client *c;
    int idx, ok;
};

static void *thr_main(void *arg)
{
    struct thr *t = arg;
    for (int i = 0; i < 50; i++) {
        char k[64];
        snprintf(k, sizeof(k), "/t/%d/thr/%d/%d", (int)getpid(), t->idx, i);
        if (baton_put(t->c, k, strlen(k), "v", 1, 0, NULL) == 0)
            t->ok++;
    }
    return NULL;
}

TEST(threads_share_a_client)
{
    struct baton_client *c = open_client();
    pthread_t th[8];
    struct thr t[8];
    for (int i = 0; i < 8; i++) {
        t[i] = (struct thr){.c = c, .idx = i};
        CHECK_EQ(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(t[i].ok, 50);
    char p[64];
    snprintf(p, sizeof(p), "/t/%d/thr/", (int)getpid());
    struct baton_get_options go = {.prefix = true, .count_only = true};
    struct baton_result r;
    CHECK_EQ(baton_get(c, p, strlen(p), &go, &r), 0);
    CHECK_EQ(r.count, 400);
    baton_result_free(&r);
    baton_close(c);
}

TEST(fence_check)
{
    int64_t last = 0;
    CHECK(baton_fence_check(5, &last));
    CHECK_EQ(last, 5);
    CHECK(baton_fence_check(5, &last));
    CHECK(!baton_fence_check(4, &last));
    CHECK_EQ(last, 5);
    CHECK(baton_fence_check(9, &last));
    CHECK_EQ(last, 9);
}

/* baton_close while another thread is blocked in a call: the call returns BATONE_CLOSED. */
struct blocked {
    struct baton_client *c;
    const char *name;
    int64_t lease;
    int rc;
};

static void *blocked_lock(void *arg)
{
    struct blocked *b = arg;
    struct baton_lease_key k;
    b->rc = baton_lock(b->c, b->name, strlen(b->name), b->lease, 60000, &k);
    return NULL;
}

TEST(close_with_a_blocked_caller)
{
    struct baton_client *c1 = open_client(), *c2 = open_client();
    char name[64];
    snprintf(name, sizeof(name), "close-%d", (int)getpid());
    int64_t l1, l2;
    CHECK_EQ(baton_lease_grant(c1, 30, &l1, NULL), 0);
    CHECK_EQ(baton_lease_grant(c2, 30, &l2, NULL), 0);
    struct baton_lease_key k1;
    CHECK_EQ(baton_lock(c1, name, strlen(name), l1, 0, &k1), 0);
    struct blocked b = {.c = c2, .name = name, .lease = l2, .rc = 1};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, blocked_lock, &b), 0);
    usleep(300000);
    uint64_t t0 = now_ms();
    baton_close(c2);
    pthread_join(th, NULL);
    CHECK_EQ(b.rc, BATONE_CLOSED);
    CHECK_LT(now_ms() - t0, 30000);
    CHECK_EQ(baton_lease_revoke(c1, l2), 0);
    CHECK_EQ(baton_unlock(c1, &k1), 0);
    CHECK_EQ(baton_lease_revoke(c1, l1), 0);
    baton_close(c1);
}
