/*
 * libbaton's TSO, id and configuration calls against batond's baton.v1.Tso / Config
 * (cluster.sh run). On 3 members (CLUSTER_SH set) the leader is killed between calls: the
 * timestamps stay strictly increasing, ids never repeat, and the config watch resumes without
 * missing or repeating a version.
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

#include "client_util.h"

/* Kills the leader when running on 3 members (CLUSTER_SH set); returns whether it did. */
static bool kill_leader(struct baton_client *c)
{
    const char *sh = getenv("CLUSTER_SH"), *dir = getenv("CLUSTER_DIR"),
               *eps = getenv("CLUSTER_ENDPOINTS");
    if (!sh || !dir || !eps || !strchr(eps, ','))
        return false;
    char copy[512];
    snprintf(copy, sizeof(copy), "%s", eps);
    int idx = 0, li = 0;
    for (char *s = NULL, *t = strtok_r(copy, ",", &s); t; t = strtok_r(NULL, ",", &s)) {
        idx++;
        struct baton_status st;
        if (baton_endpoint_status(c, t, &st) == 0 && st.leader && st.leader == st.member_id)
            li = idx;
    }
    if (!li)
        test_fail(__FILE__, __LINE__, "no leader found");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s kill %s %d KILL", sh, dir, li);
    if (system(cmd) != 0)
        test_fail(__FILE__, __LINE__, "%s failed", cmd);
    test_log("killed member %d, the leader", li);
    return true;
}

static void restart_all(void)
{
    const char *sh = getenv("CLUSTER_SH"), *dir = getenv("CLUSTER_DIR"),
               *eps = getenv("CLUSTER_ENDPOINTS");
    if (!sh || !dir || !eps || !strchr(eps, ','))
        return;
    for (int i = 1; i <= 3; i++) {
        char cmd[1024];
        /* start refuses a running member; the killed one comes back. */
        snprintf(cmd, sizeof(cmd), "%s start %s %d >/dev/null 2>&1", sh, dir, i);
        if (system(cmd) != 0)
            continue;
    }
}

TEST(tso_strictly_increasing)
{
    struct baton_client *c = client_open(15000);
    uint64_t prev = 0, first;
    for (int i = 0; i < 50; i++) {
        uint32_t n = (uint32_t)(1 + i * 37 % 1000);
        CHECK_EQ(baton_tso(c, n, &first), 0);
        CHECK_GT(first, prev);
        prev = first + n - 1;
    }
    /* Physical part is wall-clock milliseconds (within a day of now). */
    uint64_t phys = first >> 18;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t wall = (uint64_t)ts.tv_sec * 1000;
    CHECK_LT(phys > wall ? phys - wall : wall - phys, 86400000);
    if (kill_leader(c)) {
        for (int i = 0; i < 20; i++) {
            int rc = baton_tso(c, 10, &first);
            if (rc) {
                const char *m;
                baton_last_error(&m);
                test_fail(__FILE__, __LINE__, "tso after the kill: %s (%s)", baton_errstr(rc), m);
            }
            CHECK_GT(first, prev);
            prev = first + 9;
        }
        restart_all();
    }
    CHECK_EQ(baton_tso(c, 0, &first), BATONE_INVAL);
    baton_close(c);
}

TEST(ids_never_repeat)
{
    struct baton_client *c = client_open(15000);
    uint64_t prev_end = 0, first;
    for (int i = 0; i < 30; i++) {
        CHECK_EQ(baton_id_alloc(c, 100, &first), 0);
        CHECK_GE(first, prev_end);
        prev_end = first + 100;
    }
    CHECK_EQ(baton_id_alloc(c, 2000000, &first), BATONE_INVAL);
    baton_close(c);
}

struct cfg_seen {
    pthread_mutex_t mu;
    int n;
    int64_t versions[64];
    char last[256];
};

static void on_config(void *ctx, const char *json, int64_t version, int64_t mod_revision)
{
    struct cfg_seen *s = ctx;
    (void)mod_revision;
    pthread_mutex_lock(&s->mu);
    if (s->n < 64)
        s->versions[s->n++] = version;
    snprintf(s->last, sizeof(s->last), "%s", json);
    pthread_mutex_unlock(&s->mu);
}

static int64_t cfg_last_version(struct cfg_seen *s)
{
    pthread_mutex_lock(&s->mu);
    int64_t v = s->n ? s->versions[s->n - 1] : -1;
    pthread_mutex_unlock(&s->mu);
    return v;
}

TEST(config_cas_and_watch)
{
    struct baton_client *c = client_open(15000);
    char *json;
    int64_t ver, rev;
    CHECK_EQ(baton_config_get(c, 0, &json, &ver, &rev), 0);
    baton_free(json);
    static struct cfg_seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct baton_watch *w;
    CHECK_EQ(baton_config_watch(c, 0, on_config, &s, &w), 0);

    int64_t v1;
    CHECK_EQ(baton_config_set(c, "{\"replicas\":3}", ver, false, &v1), 0);
    CHECK_EQ(v1, ver + 1);
    /* A stale compare-and-set loses, with the server's message. */
    CHECK_EQ(baton_config_set(c, "{\"replicas\":5}", ver, false, NULL), BATONE_CONFLICT);
    const char *m;
    baton_last_error(&m);
    test_log("stale CAS: %s", m);
    CHECK(strstr(m, "version mismatch") != NULL);
    /* Bad JSON is the caller's error. */
    CHECK_EQ(baton_config_set(c, "{not json", 0, true, NULL), BATONE_INVAL);
    int64_t v2;
    CHECK_EQ(baton_config_set(c, "{\"replicas\":5}", 0, true, &v2), 0);
    CHECK_EQ(v2, v1 + 1);
    CHECK_EQ(baton_config_get(c, 0, &json, &ver, &rev), 0);
    CHECK_STR(json, "{\"replicas\":5}");
    CHECK_EQ(ver, v2);
    baton_free(json);

    uint64_t end = now_ms() + 10000;
    while (cfg_last_version(&s) < v2 && now_ms() < end)
        usleep(20000);
    CHECK_EQ(cfg_last_version(&s), v2);

    int64_t last = v2;
    if (kill_leader(c)) {
        for (int i = 0; i < 3; i++) {
            char j[64];
            snprintf(j, sizeof(j), "{\"round\":%d}", i);
            int rc = baton_config_set(c, j, last, false, &last);
            if (rc) {
                baton_last_error(&m);
                test_fail(__FILE__, __LINE__, "config set after the kill: %s (%s)",
                          baton_errstr(rc), m);
            }
        }
        end = now_ms() + 20000;
        while (cfg_last_version(&s) < last && now_ms() < end)
            usleep(20000);
        restart_all();
    }
    CHECK_EQ(cfg_last_version(&s), last);
    /* Each version once, in order (the first callback is the state before our writes). */
    pthread_mutex_lock(&s.mu);
    for (int i = 1; i < s.n; i++)
        CHECK_EQ(s.versions[i], s.versions[i - 1] + 1);
    pthread_mutex_unlock(&s.mu);
    baton_watch_stop(w);

    /* Members publish their versions a moment after they start: poll. */
    char cv[32] = "", fin[32];
    end = now_ms() + 15000;
    do {
        CHECK_EQ(baton_cluster_version(c, cv, fin), 0);
        if (!cv[0])
            usleep(100000);
    } while (!cv[0] && now_ms() < end);
    test_log("cluster version %s finalized %s", cv, fin);
    CHECK_GT(strlen(cv), 0);
    baton_close(c);
}
