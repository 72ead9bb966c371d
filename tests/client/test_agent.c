/*
 * libbaton's node agent against batond's baton.v1.Nodes (cluster.sh run, with short node
 * leases: CLUSTER_EXTRA_FLAGS="--node-lease-ttl-ms 2000 --node-heartbeat-interval-ms 200"):
 * registration, heartbeats with the caller's stats, fenced writes, an epoch change after the
 * node stalls past its lease (the agent re-registers and says so; a write made under the old
 * epoch is refused), DRAIN and STOP commands, and the operator's node calls.
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

struct agent_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stats_calls;
    bool stall; /* the stats callback blocks the client's thread while set */
    bool stalled;
    int epoch_events, drain_events, stop_events;
    uint64_t last_epoch;
    struct baton_agent *agent; /* stopped from the STOP callback itself */
};

static void on_stats(void *ctx, struct baton_node_stats *out)
{
    struct agent_state *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->stats_calls++;
    while (s->stall) {
        s->stalled = true;
        pthread_cond_broadcast(&s->cv);
        pthread_cond_wait(&s->cv, &s->mu);
    }
    s->stalled = false;
    pthread_mutex_unlock(&s->mu);
    out->used_bytes = 12345;
    out->available_bytes = 1 << 30;
    out->shard_count = 7;
    out->leader_count = 3;
    out->cpu_usage = 0.5;
}

static void on_agent_event(void *ctx, enum baton_agent_event ev, uint64_t epoch,
                           const uint8_t *payload, size_t len)
{
    struct agent_state *s = ctx;
    (void)payload;
    (void)len;
    pthread_mutex_lock(&s->mu);
    if (ev == BATON_AGENT_EPOCH_CHANGED)
        s->epoch_events++;
    else if (ev == BATON_AGENT_DRAIN)
        s->drain_events++;
    else if (ev == BATON_AGENT_STOP) {
        s->stop_events++;
        baton_agent_stop(s->agent); /* allowed from a callback */
    }
    s->last_epoch = epoch;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Waits until *field (under s->mu) reaches want or timeout_ms passes. */
static bool wait_count(struct agent_state *s, const int *field, int want, uint32_t timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    pthread_mutex_lock(&s->mu);
    while (*field < want && now_ms() < end) {
        pthread_mutex_unlock(&s->mu);
        usleep(20000);
        pthread_mutex_lock(&s->mu);
    }
    bool ok = *field >= want;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

struct put_arg {
    struct baton_agent *a;
    const char *key;
    int rc;
    char msg[256];
};

static void *put_thread(void *arg)
{
    struct put_arg *p = arg;
    p->rc = baton_agent_put(p->a, p->key, strlen(p->key), "late", 4, NULL);
    const char *m;
    baton_last_error(&m);
    snprintf(p->msg, sizeof(p->msg), "%s", m);
    return NULL;
}

TEST(agent_lifecycle)
{
    struct baton_client *c = client_open(10000), *admin = client_open(10000);
    static struct agent_state s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct baton_label labels[2];
    memset(labels, 0, sizeof(labels));
    snprintf(labels[0].key, sizeof(labels[0].key), "zone");
    snprintf(labels[0].value, sizeof(labels[0].value), "z1");
    snprintf(labels[1].key, sizeof(labels[1].key), "rack");
    snprintf(labels[1].value, sizeof(labels[1].value), "r7");
    struct baton_agent_config cfg = {.address = "127.0.0.1:7001",
                                     .labels = labels,
                                     .labels_len = 2,
                                     .capacity_bytes = 1ull << 40,
                                     .version = "1.2.3",
                                     .stats = on_stats,
                                     .on_event = on_agent_event,
                                     .ctx = &s};
    struct baton_agent *a = NULL;
    CHECK_EQ(baton_agent_start(c, &cfg, &a), 0);
    pthread_mutex_lock(&s.mu);
    s.agent = a;
    pthread_mutex_unlock(&s.mu);
    uint64_t id = baton_agent_id(a), e0 = baton_agent_epoch(a);
    CHECK_NE(id, 0);
    CHECK_GE(e0, 1);
    test_log("registered node %016" PRIx64 " epoch %" PRIu64, id, e0);

    /* Heartbeats flow (the stats callback runs for each) and the node comes up. */
    CHECK(wait_count(&s, &s.stats_calls, 3, 10000));
    struct baton_node n;
    uint64_t end = now_ms() + 10000;
    do {
        CHECK_EQ(baton_node_get(admin, id, &n), 0);
        if (n.state != BATON_NODE_UP)
            usleep(100000);
    } while (n.state != BATON_NODE_UP && now_ms() < end);
    CHECK_STR(baton_node_state_name(n.state), "up");
    CHECK_STR(n.address, "127.0.0.1:7001");
    CHECK_STR(n.version, "1.2.3");
    CHECK_EQ(n.labels_len, 2);
    CHECK_EQ_U64(n.capacity_bytes, 1ull << 40);
    struct baton_node *list;
    size_t len;
    CHECK_EQ(baton_node_list(admin, BATON_NODE_UP, &list, &len), 0);
    bool listed = false;
    for (size_t i = 0; i < len; i++)
        listed |= list[i].id == id;
    baton_free(list);
    CHECK(listed);

    /* Fenced writes pass under the current epoch. */
    char key[64];
    snprintf(key, sizeof(key), "/example/%016" PRIx64 "/data", id);
    CHECK_EQ(baton_agent_put(a, key, strlen(key), "v1", 2, NULL), 0);

    /* The node stalls (its client's thread is blocked) past its lease: the leader declares it
     * down with a new epoch. A write queued during the stall carries the old epoch. */
    pthread_mutex_lock(&s.mu);
    s.stall = true;
    while (!s.stalled)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    struct put_arg pa = {.a = a, .key = key};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, put_thread, &pa), 0);
    end = now_ms() + 20000;
    do {
        CHECK_EQ(baton_node_get(admin, id, &n), 0);
        if (n.epoch == e0)
            usleep(100000);
    } while (n.epoch == e0 && now_ms() < end);
    test_log("while stalled: state %s epoch %" PRIu64, baton_node_state_name(n.state), n.epoch);
    CHECK_GT(n.epoch, e0);
    pthread_mutex_lock(&s.mu);
    s.stall = false;
    pthread_cond_broadcast(&s.cv);
    pthread_mutex_unlock(&s.mu);
    pthread_join(th, NULL);
    test_log("write under the old epoch: %s (%s)", baton_errstr(pa.rc), pa.msg);
    CHECK_EQ(pa.rc, BATONE_FENCED);

    /* The agent re-registers by itself and reports the new epoch. */
    CHECK(wait_count(&s, &s.epoch_events, 1, 15000));
    uint64_t e1 = baton_agent_epoch(a);
    CHECK_GT(e1, e0);
    CHECK_EQ(s.last_epoch, e1);
    CHECK_EQ(baton_agent_put(a, key, strlen(key), "v2", 2, NULL), 0);
    struct baton_result r;
    CHECK_EQ(baton_get(admin, key, strlen(key), NULL, &r), 0);
    CHECK_EQ(r.kvs_len, 1);
    CHECK_MEM(r.kvs[0].value, r.kvs[0].value_len, "v2", 2);
    baton_result_free(&r);

    /* A failing compare of the caller's own is not "fenced". */
    struct baton_cmp cmp = {.key = key,
                            .key_len = strlen(key),
                            .target = BATON_CMP_VALUE,
                            .result = BATON_CMP_EQ,
                            .value = "nope",
                            .value_len = 4};
    struct baton_op put = {
        .kind = BATON_OP_PUT, .key = key, .key_len = strlen(key), .value = "v3", .value_len = 2};
    struct baton_txn t = {.cmps = &cmp, .cmps_len = 1, .then_ops = &put, .then_len = 1};
    CHECK_EQ(baton_agent_txn(a, &t, &r), 0);
    CHECK(!r.succeeded);
    CHECK_EQ(r.ops_len, 0);
    baton_result_free(&r);

    /* Drain, then remove: the agent hears DRAIN once and then STOP. */
    CHECK_EQ(baton_node_drain(admin, id, &n), 0);
    CHECK_STR(baton_node_state_name(n.state), "draining");
    CHECK(wait_count(&s, &s.drain_events, 1, 10000));
    usleep(600000); /* several more heartbeats: still one DRAIN */
    CHECK_EQ(s.drain_events, 1);
    CHECK_EQ(baton_node_remove(admin, id), 0);
    CHECK(wait_count(&s, &s.stop_events, 1, 10000));
    CHECK_EQ(s.stop_events, 1);
    CHECK_EQ(baton_node_get(admin, id, &n), 0);
    CHECK_STR(baton_node_state_name(n.state), "removed");
    /* The STOP callback stopped the agent; the client goes on working. */
    CHECK_EQ(baton_put(c, key, strlen(key), "after", 5, 0, NULL), 0);
    baton_close(c);
    baton_close(admin);
}

TEST(agent_bad_input)
{
    struct baton_client *c = client_open(10000);
    struct baton_agent *a;
    struct baton_agent_config cfg = {.address = ""};
    CHECK_EQ(baton_agent_start(c, &cfg, &a), BATONE_INVAL);
    struct baton_label l;
    memset(&l, 0, sizeof(l));
    snprintf(l.key, sizeof(l.key), "Bad Key!");
    snprintf(l.value, sizeof(l.value), "v");
    cfg = (struct baton_agent_config){
        .address = "127.0.0.1:7002", .labels = &l, .labels_len = 1, .version = "1.0.0"};
    CHECK_EQ(baton_agent_start(c, &cfg, &a), BATONE_INVAL);
    const char *msg;
    CHECK_EQ(baton_last_error(&msg), 3);
    test_log("bad label: %s", msg);
    CHECK(strstr(msg, "label") != NULL);
    struct baton_node n;
    CHECK_EQ(baton_node_get(c, 0x7777777777, &n), BATONE_NOTFOUND);
    baton_close(c);
}
