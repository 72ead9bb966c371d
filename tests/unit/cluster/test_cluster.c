/* cluster/: keys, fencing, validation texts, the phi detector's math and the liveness policy
 * under virtual time. The mvcc tests at the end check the promotion grace on a real store. */
#include "cluster/cluster.h"
#include "test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TEST(keys_round_trip)
{
    char k[CLUSTER_KEY_MAX];
    size_t n = cluster_node_key(0x1234abcdULL, k);
    CHECK_STR(k, "/baton/nodes/000000001234abcd");
    uint64_t id = 0;
    enum cluster_key_kind kind;
    CHECK(cluster_parse_key((const uint8_t *)k, n, &id, &kind));
    CHECK_EQ_U64(id, 0x1234abcdULL);
    CHECK_EQ(kind, CLUSTER_KEY_NODE);
    n = cluster_node_epoch_key(UINT64_MAX, k);
    CHECK_STR(k, "/baton/nodes/ffffffffffffffff/epoch");
    CHECK(cluster_parse_key((const uint8_t *)k, n, &id, &kind));
    CHECK_EQ(kind, CLUSTER_KEY_EPOCH);
    n = cluster_node_alive_key(7, k);
    CHECK(cluster_parse_key((const uint8_t *)k, n, &id, &kind));
    CHECK_EQ(kind, CLUSTER_KEY_ALIVE);
    CHECK_EQ_U64(id, 7);
    const char *bad[] = {"/baton/nodes/", "/baton/nodes/000000001234ABCD", "/baton/nodes/0000",
                         "/baton/nodes/000000001234abcd/x", "/baton/node/000000001234abcd"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!cluster_parse_key((const uint8_t *)bad[i], strlen(bad[i]), &id, &kind));
}

TEST(fence_compare)
{
    struct cluster_fence f;
    cluster_fence_init(&f, 0x10, 42);
    CHECK_EQ(f.cmp.target, MVCC_CMP_VALUE);
    CHECK_EQ(f.cmp.result, MVCC_CMP_EQUAL);
    CHECK_MEM(f.cmp.key.p, f.cmp.key.len, "/baton/nodes/0000000000000010/epoch", 35);
    CHECK_MEM(f.cmp.value.p, f.cmp.value.len, "42", 2);
    uint64_t e = 0;
    CHECK_OK(cluster_epoch_parse((const uint8_t *)"18446744073709551615", 20, &e));
    CHECK_EQ_U64(e, UINT64_MAX);
    CHECK_EQ(cluster_epoch_parse((const uint8_t *)"18446744073709551616", 20, &e), BATON_ECORRUPT);
    CHECK_EQ(cluster_epoch_parse((const uint8_t *)"-1", 2, &e), BATON_ECORRUPT);
    CHECK_EQ(cluster_epoch_parse((const uint8_t *)"", 0, &e), BATON_ECORRUPT);
}

TEST(validation_texts)
{
    char err[256];
    CHECK_OK(cluster_validate_address("127.0.0.1:9000", err, sizeof(err)));
    CHECK_EQ(cluster_validate_address("", err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "baton: malformed address: empty");
    char long_addr[300];
    memset(long_addr, 'a', 256);
    long_addr[256] = 0;
    CHECK_EQ(cluster_validate_address(long_addr, err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "baton: malformed address: 256 bytes, at most 255");

    struct cluster_label ok[] = {{"zone", "us-east-1a"}, {"rack", "r1"}, {"host.name_1-x", ""}};
    CHECK_OK(cluster_validate_labels(ok, 3, err, sizeof(err)));
    struct cluster_label upper[] = {{"Zone", "a"}};
    CHECK_EQ(cluster_validate_labels(upper, 1, err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "baton: malformed label key: byte 0x5a at 0, want [a-z0-9_.-]{1,63}");
    struct cluster_label empty[] = {{"", "a"}};
    CHECK_EQ(cluster_validate_labels(empty, 1, err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "baton: malformed label key \"\": want [a-z0-9_.-]{1,63}");
    struct cluster_label dup[] = {{"zone", "a"}, {"rack", "b"}, {"zone", "c"}};
    CHECK_EQ(cluster_validate_labels(dup, 3, err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "baton: malformed labels: duplicate key \"zone\"");
    struct cluster_label ctl[] = {{"zone", "a\nb"}};
    CHECK_EQ(cluster_validate_labels(ctl, 1, err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "baton: malformed label \"zone\": value byte 0x0a at 1 is not printable");
    char k64[65];
    memset(k64, 'k', 64);
    k64[64] = 0;
    struct cluster_label longk[] = {{k64, "a"}};
    CHECK_EQ(cluster_validate_labels(longk, 1, err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "baton: malformed label key: 64 bytes, want [a-z0-9_.-]{1,63}");
    struct cluster_label many[65];
    char names[65][8];
    for (int i = 0; i < 65; i++) {
        snprintf(names[i], sizeof(names[i]), "k%d", i);
        many[i] = (struct cluster_label){names[i], "v"};
    }
    CHECK_OK(cluster_validate_labels(many, 64, err, sizeof(err)));
    CHECK_EQ(cluster_validate_labels(many, 65, err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "baton: malformed labels: 65 labels, at most 64");

    CHECK_OK(cluster_validate_version("0.1.0", err, sizeof(err)));
    CHECK_OK(cluster_validate_version("10.20.300", err, sizeof(err)));
    const char *bad[] = {"", "1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1..3", "1.2.3-rc1", "1.2.x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_EQ(cluster_validate_version(bad[i], err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "baton: malformed version \"1.2.x\": want major.minor.patch");
}

static const struct cluster_phi_config phi_cfg = {1000, 100, 0};

TEST(phi_math)
{
    struct cluster_phi d;
    cluster_phi_init(&d, &phi_cfg);
    CHECK(cluster_phi_value(&d, &phi_cfg, 5000) == 0); /* no heartbeat yet */
    /* Regular 1000 ms heartbeats: mean ~1000, std at the floor after the seeds leave. */
    uint64_t t = 1000;
    for (int i = 0; i < 200; i++, t += 1000)
        cluster_phi_heartbeat(&d, t);
    t -= 1000;
    CHECK(fabs(cluster_phi_mean_ms(&d) - 1000) < 1e-9);
    CHECK(cluster_phi_std_ms(&d) < 1e-6);
    /* phi at the mean is -log10(0.5); one std later -log10(1 - Phi(1)) = -log10(0.1587). */
    CHECK(fabs(cluster_phi_value(&d, &phi_cfg, t + 1000) - 0.30103) < 0.01);
    CHECK(fabs(cluster_phi_value(&d, &phi_cfg, t + 1100) - 0.7995) < 0.01);
    /* 3 std: -log10(0.00135) = 2.87 (the approximation gives 2.91). At 5 std the exact value is
     * -log10(2.87e-7) = 6.54; the logistic approximation's tail is thinner and gives 7.30, so
     * it errs towards suspicion, as in Akka. */
    CHECK(fabs(cluster_phi_value(&d, &phi_cfg, t + 1300) - 2.87) < 0.06);
    CHECK(fabs(cluster_phi_value(&d, &phi_cfg, t + 1500) - 7.30) < 0.05);
    /* Monotonic in the elapsed time, capped, never NaN. */
    double prev = -1;
    for (uint64_t e = 0; e < 100000; e += 50) {
        double p = cluster_phi_value(&d, &phi_cfg, t + e);
        CHECK(!isnan(p));
        CHECK(p >= prev);
        prev = p;
    }
    CHECK(prev <= 300);
    /* A wider spread lowers phi for the same lateness. */
    struct cluster_phi w;
    cluster_phi_init(&w, &phi_cfg);
    uint64_t u = 1000;
    for (int i = 0; i < 200; i++, u += (i % 2) ? 600 : 1400)
        cluster_phi_heartbeat(&w, u);
    CHECK(fabs(cluster_phi_std_ms(&w) - 400) < 5);
    CHECK(cluster_phi_value(&w, &phi_cfg, w.last_ms + 1500) <
          cluster_phi_value(&d, &phi_cfg, d.last_ms + 1500));
}

/* ---- Liveness under virtual time ---------------------------------------------------------- */

struct world {
    struct cluster_liveness *lv;
    uint64_t now;
    bool lapsed[8]; /* by lease id */
    int64_t rev;
};

static bool lease_lapsed(void *ctx, int64_t lease)
{
    struct world *w = ctx;
    return lease > 0 && lease < 8 && w->lapsed[lease];
}

/* Runs one step and applies its transitions as the replicated store would (new mod revision,
 * lease 0 when it lapsed). Returns how many there were. */
static size_t step_apply(struct world *w)
{
    struct cluster_transition t[16];
    size_t n;
    cluster_liveness_step(w->lv, w->now, lease_lapsed, w, t, 16, &n);
    for (size_t i = 0; i < n; i++) {
        struct cluster_node_live *nl = cluster_liveness_get(w->lv, t[i].id);
        CHECK(nl && nl->pending);
        CHECK_EQ(t[i].mod_rev, nl->mod_rev);
        CHECK_OK(cluster_liveness_upsert(w->lv, t[i].id, t[i].to, t[i].epoch,
                                         t[i].lapsed ? 0 : nl->lease, ++w->rev));
    }
    return n;
}

static void world_init(struct world *w, uint32_t ttl_ms)
{
    memset(w, 0, sizeof(*w));
    struct cluster_liveness_config cfg;
    cluster_liveness_config_default(&cfg);
    cfg.lease_ttl_ms = ttl_ms;
    CHECK_OK(cluster_liveness_create(&cfg, &w->lv));
    w->now = 1000000;
    cluster_liveness_promote(w->lv, w->now);
    w->rev = 10;
}

static void beat(struct world *w, uint64_t id)
{
    struct cluster_node_live *n = cluster_liveness_get(w->lv, id);
    CHECK(n != NULL);
    cluster_liveness_heartbeat(w->lv, n, w->now);
}

static enum cluster_node_state state_of(struct world *w, uint64_t id)
{
    struct cluster_node_live *n = cluster_liveness_get(w->lv, id);
    CHECK(n != NULL);
    return n->state;
}

TEST(liveness_up_suspect_down_up)
{
    struct world w;
    world_init(&w, 10000);
    CHECK_OK(cluster_liveness_upsert(w.lv, 1, CLUSTER_NODE_JOINING, 1, 1, ++w.rev));
    CHECK_EQ(step_apply(&w), 0);
    beat(&w, 1);
    CHECK_EQ(step_apply(&w), 1);
    CHECK_EQ(state_of(&w, 1), CLUSTER_NODE_UP);
    /* 30 s of regular heartbeats, stepping every 100 ms: stays UP. */
    for (int i = 0; i < 300; i++) {
        w.now += 100;
        if (i % 10 == 0)
            beat(&w, 1);
        CHECK_EQ(step_apply(&w), 0);
    }
    /* Silence: SUSPECT after a few seconds, long before the lease lapses. */
    uint64_t silent_from = w.now;
    while (state_of(&w, 1) == CLUSTER_NODE_UP) {
        w.now += 100;
        step_apply(&w);
        CHECK_LT(w.now - silent_from, 10000);
    }
    CHECK_EQ(state_of(&w, 1), CLUSTER_NODE_SUSPECT);
    test_log("suspected after %llu ms of silence", (unsigned long long)(w.now - silent_from));
    CHECK_GE(w.now - silent_from, 2000);
    /* The lease lapses: DOWN with epoch 2, lease 0. */
    w.lapsed[1] = true;
    CHECK_EQ(step_apply(&w), 1);
    struct cluster_node_live *n = cluster_liveness_get(w.lv, 1);
    CHECK_EQ(n->state, CLUSTER_NODE_DOWN);
    CHECK_EQ_U64(n->epoch, 2);
    CHECK_EQ(n->lease, 0);
    CHECK_EQ(step_apply(&w), 0); /* nothing more, however long */
    w.now += 60000;
    CHECK_EQ(step_apply(&w), 0);
    /* Re-registered (RegisterNode writes UP with a new lease, same epoch). */
    CHECK_OK(cluster_liveness_upsert(w.lv, 1, CLUSTER_NODE_UP, 2, 2, ++w.rev));
    for (int i = 0; i < 50; i++) {
        w.now += 1000;
        beat(&w, 1);
        CHECK_EQ(step_apply(&w), 0);
    }
    CHECK_EQ(state_of(&w, 1), CLUSTER_NODE_UP);
    CHECK_EQ_U64(cluster_liveness_get(w.lv, 1)->epoch, 2);
    cluster_liveness_destroy(w.lv);
}

TEST(liveness_suspect_recovers_with_hysteresis)
{
    struct world w;
    world_init(&w, 10000);
    CHECK_OK(cluster_liveness_upsert(w.lv, 3, CLUSTER_NODE_UP, 1, 3, ++w.rev));
    w.now += 20000; /* past the grace */
    for (int i = 0; i < 20; i++) {
        w.now += 1000;
        beat(&w, 3);
        step_apply(&w);
    }
    w.now += 6000;
    step_apply(&w);
    CHECK_EQ(state_of(&w, 3), CLUSTER_NODE_SUSPECT);
    /* The first heartbeat after the gap arrives with a high phi: not a good one. Then two
     * good ones are not enough; the third is. */
    beat(&w, 3);
    for (int i = 0; i < 2; i++) {
        w.now += 1000;
        beat(&w, 3);
        CHECK_EQ(step_apply(&w), 0);
        CHECK_EQ(state_of(&w, 3), CLUSTER_NODE_SUSPECT);
    }
    w.now += 1000;
    beat(&w, 3);
    CHECK_EQ(step_apply(&w), 1);
    CHECK_EQ(state_of(&w, 3), CLUSTER_NODE_UP);
    CHECK_EQ_U64(cluster_liveness_get(w.lv, 3)->epoch, 1);
    cluster_liveness_destroy(w.lv);
}

TEST(liveness_no_flapping_under_jitter)
{
    struct world w;
    world_init(&w, 10000);
    struct prng rng;
    prng_seed(&rng, 20261128);
    for (uint64_t id = 1; id <= 4; id++)
        CHECK_OK(cluster_liveness_upsert(w.lv, id, CLUSTER_NODE_UP, 1, (int64_t)id, ++w.rev));
    /* 10,000 heartbeats per node, each interval 1000 ms ± 40% (uniform), steps every 50 ms. */
    uint64_t next[5];
    for (int i = 1; i <= 4; i++)
        next[i] = w.now + 600 + prng_next(&rng) % 801;
    size_t beats = 0, transitions = 0;
    while (beats < 40000) {
        w.now += 50;
        for (int i = 1; i <= 4; i++)
            if (w.now >= next[i]) {
                beat(&w, (uint64_t)i);
                beats++;
                next[i] = w.now + 600 + prng_next(&rng) % 801;
            }
        transitions += step_apply(&w);
    }
    CHECK_EQ(transitions, 0);
    for (uint64_t id = 1; id <= 4; id++)
        CHECK_EQ(state_of(&w, id), CLUSTER_NODE_UP);
    cluster_liveness_destroy(w.lv);
}

TEST(liveness_leader_change_grace)
{
    struct world w;
    world_init(&w, 10000);
    /* A new leader loads nodes whose leases lapsed already (as far as a stale view goes) and
     * that have not reached it yet: nothing happens within the TTL. */
    cluster_liveness_promote(w.lv, w.now);
    CHECK_OK(cluster_liveness_upsert(w.lv, 1, CLUSTER_NODE_UP, 5, 1, ++w.rev));
    CHECK_OK(cluster_liveness_upsert(w.lv, 2, CLUSTER_NODE_UP, 7, 2, ++w.rev));
    w.lapsed[1] = true;
    uint64_t promoted = w.now;
    while (w.now < promoted + 9900) {
        w.now += 100;
        if ((w.now - promoted) % 1000 == 0 && w.now - promoted >= 3000)
            beat(&w, 2); /* node 2 found the new leader after 3 s */
        CHECK_EQ(step_apply(&w), 0);
    }
    CHECK_EQ(state_of(&w, 1), CLUSTER_NODE_UP);
    /* Past the TTL, the lapsed lease is acted on; node 2 stays UP. */
    w.now += 200;
    if ((w.now - promoted) % 1000 == 0)
        beat(&w, 2);
    CHECK_EQ(step_apply(&w), 1);
    CHECK_EQ(state_of(&w, 1), CLUSTER_NODE_DOWN);
    CHECK_EQ_U64(cluster_liveness_get(w.lv, 1)->epoch, 6);
    CHECK_EQ(state_of(&w, 2), CLUSTER_NODE_UP);
    /* A pending transition is not proposed twice; unpend makes it decidable again. */
    w.lapsed[2] = true;
    struct cluster_transition t[4];
    size_t n;
    cluster_liveness_step(w.lv, w.now, lease_lapsed, &w, t, 4, &n);
    CHECK_EQ(n, 1);
    cluster_liveness_step(w.lv, w.now, lease_lapsed, &w, t, 4, &n);
    CHECK_EQ(n, 0);
    cluster_liveness_unpend(w.lv, 2);
    cluster_liveness_step(w.lv, w.now, lease_lapsed, &w, t, 4, &n);
    CHECK_EQ(n, 1);
    CHECK_EQ(t[0].to, CLUSTER_NODE_DOWN);
    CHECK_EQ_U64(t[0].epoch, 8);
    cluster_liveness_destroy(w.lv);
}

TEST(liveness_draining_node_keeps_draining_when_its_lease_lapses)
{
    struct world w;
    world_init(&w, 10000);
    CHECK_OK(cluster_liveness_upsert(w.lv, 4, CLUSTER_NODE_DECOMMISSIONING, 3, 4, ++w.rev));
    CHECK_OK(cluster_liveness_upsert(w.lv, 5, CLUSTER_NODE_DECOMMISSIONED, 3, 0, ++w.rev));
    CHECK_OK(cluster_liveness_upsert(w.lv, 6, CLUSTER_NODE_REMOVED, 3, 0, ++w.rev));
    w.now += 20000;
    w.lapsed[4] = true;
    CHECK_EQ(step_apply(&w), 1);
    struct cluster_node_live *n = cluster_liveness_get(w.lv, 4);
    CHECK_EQ(n->state, CLUSTER_NODE_DECOMMISSIONING);
    CHECK_EQ_U64(n->epoch, 4);
    CHECK_EQ(n->lease, 0);
    /* Lease 0 is never checked again: no epoch churn; stopped nodes are left alone. */
    for (int i = 0; i < 100; i++) {
        w.now += 1000;
        CHECK_EQ(step_apply(&w), 0);
    }
    CHECK_EQ_U64(cluster_liveness_get(w.lv, 4)->epoch, 4);
    cluster_liveness_destroy(w.lv);
}

TEST(liveness_table_many_nodes)
{
    struct cluster_liveness_config cfg;
    cluster_liveness_config_default(&cfg);
    cfg.nodes_max = 5000;
    struct cluster_liveness *lv;
    CHECK_OK(cluster_liveness_create(&cfg, &lv));
    cluster_liveness_promote(lv, 1);
    for (uint64_t id = 1; id <= 5000; id++)
        CHECK_OK(
            cluster_liveness_upsert(lv, id * 0x9e3779b97f4a7c15ull, CLUSTER_NODE_UP, id, 1, 1));
    CHECK_EQ(cluster_liveness_upsert(lv, 1, CLUSTER_NODE_UP, 1, 1, 1), BATON_ETOOBIG);
    /* Remove every other node, then check every remaining one is found with its own data. */
    for (uint64_t id = 2; id <= 5000; id += 2)
        cluster_liveness_remove(lv, id * 0x9e3779b97f4a7c15ull);
    CHECK_EQ(cluster_liveness_count(lv), 2500);
    for (uint64_t id = 1; id <= 5000; id++) {
        struct cluster_node_live *n = cluster_liveness_get(lv, id * 0x9e3779b97f4a7c15ull);
        if (id % 2 == 0) {
            CHECK(n == NULL);
        } else {
            CHECK(n != NULL);
            CHECK_EQ_U64(n->epoch, id);
        }
    }
    cluster_liveness_destroy(lv);
}

/* ---- The promotion grace on a real store (mvcc_lease_promote) ---------------------------- */

TEST(mvcc_promote_gives_full_ttl)
{
    struct mvcc_config cfg;
    mvcc_config_default(&cfg);
    char path[512];
    snprintf(path, sizeof(path), "%s/db", test_tmpdir());
    cfg.path = path;
    cfg.min_lease_ttl_s = 1;
    struct mvcc_store *s;
    char err[256];
    CHECK_OK(mvcc_open(&cfg, &s, err, sizeof(err)));
    int64_t id;
    CHECK_OK(mvcc_batch_begin(s, 1, 1));
    CHECK_OK(mvcc_lease_grant(s, 0, 10, &id, NULL));
    CHECK_OK(mvcc_batch_commit(s));
    /* Leader A renews at t=0 and dies at t=9 s (the lease has 1 s left). */
    mvcc_lease_promote(s, 0);
    int64_t ttl;
    CHECK_OK(mvcc_lease_renew(s, id, 0, &ttl));
    mvcc_lease_demote(s);
    /* Leader B takes over at t=9 s: the lease must live until 19 s, not expire at 10 s. */
    mvcc_lease_promote(s, 9000);
    int64_t ids[4];
    size_t n;
    CHECK_OK(mvcc_lease_expired(s, 18999, ids, 4, &n));
    CHECK_EQ(n, 0);
    CHECK_OK(mvcc_lease_expired(s, 19001, ids, 4, &n));
    CHECK_EQ(n, 1);
    CHECK_EQ(ids[0], id);
    mvcc_close(s);
}
