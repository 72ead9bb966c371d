/*
 * Elections and locks through libbaton against batond's v3election / v3lock (cluster.sh run):
 * campaign, leader, proclaim, observe, resign; two clients contending for a lock get growing
 * fencing tokens, and baton_fence_check refuses the older holder.
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

struct observed {
    pthread_mutex_t mu;
    int n;
    char vals[16][32];
};

static void on_leader(void *ctx, const struct baton_event *ev)
{
    struct observed *o = ctx;
    pthread_mutex_lock(&o->mu);
    if (o->n < 16)
        snprintf(o->vals[o->n++], 32, "%.*s", (int)(ev->kv.value_len < 31 ? ev->kv.value_len : 31),
                 (const char *)ev->kv.value);
    pthread_mutex_unlock(&o->mu);
}

static int observed_n(struct observed *o)
{
    pthread_mutex_lock(&o->mu);
    int n = o->n;
    pthread_mutex_unlock(&o->mu);
    return n;
}

TEST(election_campaign_proclaim_observe_resign)
{
    struct baton_client *c = client_open(0);
    char name[64];
    snprintf(name, sizeof(name), "el-%d", (int)getpid());
    int64_t lease;
    CHECK_EQ(baton_lease_grant(c, 10, &lease, NULL), 0);
    struct baton_lease_key k;
    CHECK_EQ(baton_campaign(c, name, strlen(name), lease, "alice", 5, 0, &k), 0);
    CHECK_GT(k.token, 0);
    CHECK_EQ(k.lease, lease);
    struct observed o = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct baton_watch *w;
    CHECK_EQ(baton_observe(c, name, strlen(name), on_leader, &o, &w), 0);
    struct baton_result r;
    CHECK_EQ(baton_election_leader(c, name, strlen(name), &r), 0);
    CHECK_MEM(r.kvs[0].value, r.kvs[0].value_len, "alice", 5);
    CHECK_EQ(r.kvs[0].create_revision, k.token);
    baton_result_free(&r);
    CHECK_EQ(baton_proclaim(c, &k, "alice2", 6), 0);
    uint64_t end = now_ms() + 10000;
    while (observed_n(&o) < 2 && now_ms() < end)
        usleep(20000);
    CHECK_GE(observed_n(&o), 2);
    CHECK_STR(o.vals[0], "alice");
    CHECK_STR(o.vals[observed_n(&o) - 1], "alice2");
    baton_watch_stop(w);
    CHECK_EQ(baton_resign(c, &k), 0);
    CHECK_EQ(baton_election_leader(c, name, strlen(name), &r), BATONE_NOTFOUND);
    const char *msg;
    baton_last_error(&msg);
    test_log("leader after resign: %s", msg);
    CHECK_EQ(baton_lease_revoke(c, lease), 0);
    baton_close(c);
}

struct locker {
    struct baton_client *c;
    const char *name;
    int64_t lease;
    struct baton_lease_key k;
    int rc;
};

static void *lock_thread(void *arg)
{
    struct locker *l = arg;
    l->rc = baton_lock(l->c, l->name, strlen(l->name), l->lease, 20000, &l->k);
    return NULL;
}

TEST(lock_fencing_tokens)
{
    struct baton_client *c1 = client_open(0), *c2 = client_open(0);
    char name[64];
    snprintf(name, sizeof(name), "lk-%d", (int)getpid());
    int64_t l1, l2;
    CHECK_EQ(baton_lease_grant(c1, 10, &l1, NULL), 0);
    CHECK_EQ(baton_lease_grant(c2, 10, &l2, NULL), 0);
    CHECK_EQ(baton_lease_keepalive(c1, l1, NULL, NULL), 0);
    CHECK_EQ(baton_lease_keepalive(c2, l2, NULL, NULL), 0);
    struct baton_lease_key k1;
    CHECK_EQ(baton_lock(c1, name, strlen(name), l1, 0, &k1), 0);
    CHECK_GT(k1.token, 0);

    /* The second locker waits until the first unlocks. */
    struct locker b = {.c = c2, .name = name, .lease = l2, .rc = 1};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, lock_thread, &b), 0);
    usleep(500000);
    CHECK_EQ(b.rc, 1); /* still waiting */
    /* A storage node sees the first holder's requests. */
    int64_t last_seen = 0;
    CHECK(baton_fence_check(k1.token, &last_seen));
    CHECK_EQ(baton_unlock(c1, &k1), 0);
    pthread_join(th, NULL);
    CHECK_EQ(b.rc, 0);
    CHECK_GT(b.k.token, k1.token);
    /* The new holder passes; a late request from the old one is refused. */
    CHECK(baton_fence_check(b.k.token, &last_seen));
    CHECK(!baton_fence_check(k1.token, &last_seen));
    CHECK_EQ(baton_unlock(c2, &b.k), 0);

    /* A lock that cannot be had in time: a timeout, not a hang. */
    CHECK_EQ(baton_lock(c1, name, strlen(name), l1, 0, &k1), 0);
    uint64_t t0 = now_ms();
    struct baton_lease_key k2;
    CHECK_EQ(baton_lock(c2, name, strlen(name), l2, 700, &k2), BATONE_TIMEOUT);
    CHECK_LT(now_ms() - t0, 60000);
    CHECK_EQ(baton_unlock(c1, &k1), 0);
    CHECK_EQ(baton_lease_revoke(c1, l1), 0);
    CHECK_EQ(baton_lease_revoke(c2, l2), 0);
    baton_close(c1);
    baton_close(c2);
}
