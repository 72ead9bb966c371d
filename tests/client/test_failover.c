/*
 * libbaton across a leader failure: a 3-member batond cluster (cluster.sh run ... 3), the
 * client finds and uses the leader, the leader is killed with SIGKILL, and the client keeps
 * working: writes succeed again on the new leader, the watch delivers every acknowledged write
 * exactly once and in order, and the lease kept alive in the background survives.
 * Needs CLUSTER_ENDPOINTS, CLUSTER_DIR (cluster.sh run) and CLUSTER_SH (the script's path).
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

#define PUTS_MAX 4096

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct events {
    pthread_mutex_t mu;
    int n;
    int64_t revs[PUTS_MAX];
    bool out_of_order;
};

static void on_event(void *ctx, const struct baton_event *ev)
{
    struct events *e = ctx;
    pthread_mutex_lock(&e->mu);
    if (e->n && ev->kv.mod_revision <= e->revs[e->n - 1])
        e->out_of_order = true;
    if (e->n < PUTS_MAX)
        e->revs[e->n++] = ev->kv.mod_revision;
    pthread_mutex_unlock(&e->mu);
}

static bool has_rev(struct events *e, int64_t rev)
{
    pthread_mutex_lock(&e->mu);
    bool found = false;
    for (int i = 0; i < e->n && !found; i++)
        found = e->revs[i] == rev;
    pthread_mutex_unlock(&e->mu);
    return found;
}

/* Index (1-based, as cluster.sh counts) of the endpoint whose member leads, or 0. */
static int find_leader(struct baton_client *c, const char *eps, char *leader_ep, size_t len)
{
    char copy[512];
    snprintf(copy, sizeof(copy), "%s", eps);
    int idx = 0, found = 0;
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        idx++;
        struct baton_status st;
        if (baton_endpoint_status(c, t, &st) == 0 && st.leader && st.leader == st.member_id) {
            found = idx;
            snprintf(leader_ep, len, "%s", t);
        }
    }
    return found;
}

TEST(failover_kill_leader)
{
    const char *eps = getenv("CLUSTER_ENDPOINTS"), *dir = getenv("CLUSTER_DIR"),
               *sh = getenv("CLUSTER_SH");
    if (!eps || !dir || !sh)
        test_fail(__FILE__, __LINE__, "run under cluster.sh run with CLUSTER_SH set");
    struct baton_options o;
    baton_options_default(&o);
    o.endpoints = eps;
    o.call_timeout_ms = 15000;
    struct baton_client *c;
    CHECK_EQ(baton_open(&o, &c), 0);

    char prefix[64];
    snprintf(prefix, sizeof(prefix), "/fo/%d/", (int)getpid());
    uint8_t end[64];
    size_t el = baton_prefix_end(prefix, strlen(prefix), end);
    static struct events ev = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct baton_watch *w;
    CHECK_EQ(baton_watch(c, prefix, strlen(prefix), end, el, 0, on_event, NULL, &ev, &w), 0);

    int64_t lease, ttl;
    CHECK_EQ(baton_lease_grant(c, 3, &lease, &ttl), 0);
    CHECK_EQ(baton_lease_keepalive(c, lease, NULL, NULL), 0);
    char lk[80];
    snprintf(lk, sizeof(lk), "/fo/%d-lease", (int)getpid());
    CHECK_EQ(baton_put(c, lk, strlen(lk), "held", 4, lease, NULL), 0);

    static int64_t acked[PUTS_MAX];
    int n_acked = 0, n = 0;
    for (; n < 20; n++) {
        char k[80];
        snprintf(k, sizeof(k), "%s%05d", prefix, n);
        CHECK_EQ(baton_put(c, k, strlen(k), "v", 1, 0, &acked[n_acked]), 0);
        n_acked++;
    }
    /* Leader discovery moved the client to the leader. */
    char leader_ep[128] = "", cur[128];
    int li = find_leader(c, eps, leader_ep, sizeof(leader_ep));
    CHECK_GT(li, 0);
    uint64_t until = now_ms() + 5000;
    do {
        baton_current_endpoint(c, cur, sizeof(cur));
        if (strcmp(cur, leader_ep) != 0)
            usleep(50000);
    } while (strcmp(cur, leader_ep) != 0 && now_ms() < until);
    CHECK_STR(cur, leader_ep);

    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s kill %s %d KILL", sh, dir, li);
    uint64_t t_kill = now_ms();
    CHECK_EQ(system(cmd), 0);
    test_log("killed member %d (%s), the leader", li, leader_ep);

    uint64_t first_ok = 0;
    int after_ok = 0, indoubt = 0;
    uint64_t stop_at = now_ms() + 60000;
    while (after_ok < 50 && now_ms() < stop_at && n < PUTS_MAX) {
        char k[80];
        snprintf(k, sizeof(k), "%s%05d", prefix, n++);
        int64_t rev;
        int rc = baton_put(c, k, strlen(k), "v", 1, 0, &rev);
        if (rc == 0) {
            acked[n_acked++] = rev;
            after_ok++;
            if (!first_ok)
                first_ok = now_ms();
        } else {
            const char *msg;
            baton_last_error(&msg);
            test_log("put after the kill: %s (%s)", baton_errstr(rc), msg);
            CHECK(rc == BATONE_INDOUBT || rc == BATONE_UNAVAILABLE || rc == BATONE_TIMEOUT);
            indoubt++;
            CHECK_LT(indoubt, 10);
        }
    }
    CHECK_EQ(after_ok, 50);
    test_log("first acknowledged put %" PRIu64 " ms after the kill; %d calls failed",
             first_ok - t_kill, indoubt);

    /* The watch resumed on another member: every acknowledged put arrives, once, in order. */
    uint64_t wend = now_ms() + 20000;
    while (!has_rev(&ev, acked[n_acked - 1]) && now_ms() < wend)
        usleep(20000);
    for (int i = 0; i < n_acked; i++)
        if (!has_rev(&ev, acked[i]))
            test_fail(__FILE__, __LINE__, "acknowledged put at revision %" PRId64 " not watched",
                      acked[i]);
    CHECK(!ev.out_of_order);

    /* The keep-alive went on through the failover. */
    sleep((unsigned)ttl + 1);
    int64_t left = 0;
    CHECK_EQ(baton_lease_ttl(c, lease, &left), 0);
    CHECK_GT(left, 0);
    struct baton_result r;
    CHECK_EQ(baton_get(c, lk, strlen(lk), NULL, &r), 0);
    CHECK_EQ(r.kvs_len, 1);
    baton_result_free(&r);

    /* And the client found the new leader. */
    char new_leader[128] = "";
    CHECK_GT(find_leader(c, eps, new_leader, sizeof(new_leader)), 0);
    until = now_ms() + 5000;
    do {
        baton_current_endpoint(c, cur, sizeof(cur));
        if (strcmp(cur, new_leader) != 0)
            usleep(50000);
    } while (strcmp(cur, new_leader) != 0 && now_ms() < until);
    CHECK_STR(cur, new_leader);
    baton_watch_stop(w);
    baton_close(c);
    /* Bring the killed member back for the next test. */
    snprintf(cmd, sizeof(cmd), "%s start %s %d >/dev/null", sh, dir, li);
    CHECK_EQ(system(cmd), 0);
}

/* Given only the leader's endpoint, the client learns the others from the member list and
 * fails over to them when the leader dies. */
TEST(failover_from_a_single_endpoint)
{
    const char *eps = getenv("CLUSTER_ENDPOINTS"), *dir = getenv("CLUSTER_DIR"),
               *sh = getenv("CLUSTER_SH");
    if (!eps || !dir || !sh)
        test_fail(__FILE__, __LINE__, "run under cluster.sh run with CLUSTER_SH set");
    struct baton_options o;
    baton_options_default(&o);
    o.endpoints = eps;
    struct baton_client *probe;
    CHECK_EQ(baton_open(&o, &probe), 0);
    char leader_ep[128] = "";
    int li = 0;
    uint64_t until = now_ms() + 10000;
    while (!li && now_ms() < until) {
        li = find_leader(probe, eps, leader_ep, sizeof(leader_ep));
        if (!li)
            usleep(100000);
    }
    baton_close(probe);
    CHECK_GT(li, 0);

    o.endpoints = leader_ep;
    o.call_timeout_ms = 15000;
    struct baton_client *c;
    CHECK_EQ(baton_open(&o, &c), 0);
    char k[64];
    snprintf(k, sizeof(k), "/fo1/%d", (int)getpid());
    CHECK_EQ(baton_put(c, k, strlen(k), "before", 6, 0, NULL), 0);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s kill %s %d KILL", sh, dir, li);
    CHECK_EQ(system(cmd), 0);
    test_log("killed member %d (%s), the client's only endpoint", li, leader_ep);
    int rc = baton_put(c, k, strlen(k), "after", 5, 0, NULL);
    if (rc == BATONE_INDOUBT)
        rc = baton_put(c, k, strlen(k), "after", 5, 0, NULL);
    const char *msg;
    baton_last_error(&msg);
    if (rc)
        test_fail(__FILE__, __LINE__, "put after the kill: %s (%s)", baton_errstr(rc), msg);
    struct baton_result r;
    CHECK_EQ(baton_get(c, k, strlen(k), NULL, &r), 0);
    CHECK_EQ(r.kvs_len, 1);
    CHECK_MEM(r.kvs[0].value, r.kvs[0].value_len, "after", 5);
    baton_result_free(&r);
    char cur[128];
    baton_current_endpoint(c, cur, sizeof(cur));
    CHECK(strcmp(cur, leader_ep) != 0);
    baton_close(c);
}
