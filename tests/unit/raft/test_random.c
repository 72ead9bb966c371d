/*
 * Randomized runs of small clusters under faults: message loss, duplication and reordering,
 * partitions, crashes that lose unacknowledged persist batches, restarts, compaction, snapshots,
 * reads, transfers and membership changes. After every step the run checks Election Safety (one
 * leader per term, §5.2) and State Machine Safety (every member applies the same entry at the
 * same index, §5.4.3); at the end the faults heal and every member must converge. A failure
 * prints the seed; `unit_raft random_clusters` with RAFT_SEED=<seed> replays it.
 */
#include "cluster.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEPS     400
#define INDEX_MAX 20000
#define TERM_MAX  4096
#define NODES     5

struct history {
    uint64_t leader_of_term[TERM_MAX];
    uint32_t hash_at[INDEX_MAX];
    uint64_t count_at[INDEX_MAX];
    bool seen_at[INDEX_MAX];
};

static struct history h;

static void check_safety(struct tc_cluster *c, uint64_t seed, int step)
{
    for (uint64_t i = 1; i <= (uint64_t)c->n; i++) {
        struct tc_node *nd = &c->nodes[i];
        if (nd->crashed)
            continue;
        struct raft_status s = tc_status(c, i);
        if (s.role == RAFT_LEADER && s.term < TERM_MAX) {
            uint64_t *l = &h.leader_of_term[s.term];
            if (*l != 0 && *l != i)
                test_fail(__FILE__, __LINE__,
                          "seed %llu step %d: two leaders in term %llu: %llu, %llu",
                          (unsigned long long)seed, step, (unsigned long long)s.term,
                          (unsigned long long)*l, (unsigned long long)i);
            *l = i;
        }
        uint64_t x = nd->sm_index;
        if (x >= INDEX_MAX)
            continue;
        if (!h.seen_at[x]) {
            h.seen_at[x] = true;
            h.hash_at[x] = nd->sm_hash;
            h.count_at[x] = nd->sm_count;
        } else if (h.hash_at[x] != nd->sm_hash || h.count_at[x] != nd->sm_count) {
            test_fail(__FILE__, __LINE__,
                      "seed %llu step %d: node %llu applied a different history at index %llu",
                      (unsigned long long)seed, step, (unsigned long long)i, (unsigned long long)x);
        }
    }
}

static uint64_t pick(struct prng *p, int n)
{
    return 1 + prng_below(p, (uint64_t)n);
}

static void random_config_change(struct tc_cluster *c, struct prng *p, uint64_t l)
{
    struct raft_status s = tc_status(c, l);
    uint64_t id = pick(p, c->n);
    struct raft_conf_change cc = {.id = id};
    if (raft_config_is_learner(&s.config, id))
        cc.op = RAFT_CONF_ADD_VOTER;
    else if (raft_config_is_voter(&s.config, id))
        cc.op = s.config.voters_len > 2 ? RAFT_CONF_REMOVE : RAFT_CONF_ADD_VOTER;
    else
        cc.op = prng_chance(p, 500000) ? RAFT_CONF_ADD_LEARNER : RAFT_CONF_ADD_VOTER;
    enum raft_conf_transition t =
        prng_chance(p, 300000) ? RAFT_TRANSITION_JOINT_AUTO : RAFT_TRANSITION_AUTO;
    int rc = raft_change_config(c->nodes[l].r, &cc, 1, t, NULL);
    CHECK(rc == 0 || rc == BATON_ECONFCHANGE || rc == BATON_EINVAL || rc == BATON_EPROPOSALDROP);
}

static void random_step(struct tc_cluster *c, struct prng *p, int *proposals)
{
    uint64_t n = pick(p, c->n);
    struct tc_node *nd = &c->nodes[n];
    uint64_t l = tc_leader(c);
    uint32_t dice = (uint32_t)prng_below(p, 1000);
    if (dice < 150) {
        tc_tick(c, n, 1);
    } else if (dice < 350) {
        tc_deliver_round(c);
    } else if (dice < 550) {
        for (uint64_t k = pick(p, 4); l && k > 0; k--) {
            char text[32];
            snprintf(text, sizeof(text), "p%d", (*proposals)++);
            int rc = tc_propose(c, l, text);
            CHECK(rc == 0 || rc == BATON_EPROPOSALDROP);
        }
    } else if (dice < 700) {
        for (uint64_t i = 1; i <= (uint64_t)c->n; i++)
            if (!c->nodes[i].crashed && (i == n || prng_chance(p, 500000)))
                tc_persist(c, i);
    } else if (dice < 708) {
        if (!nd->crashed)
            tc_crash(c, n);
    } else if (dice < 740) {
        if (nd->crashed)
            tc_restart(c, n);
    } else if (dice < 755) {
        tc_isolate(c, n, prng_chance(p, 300000));
    } else if (dice < 775) {
        if (!nd->crashed && tc_status(c, n).applied > tc_status(c, n).snapshot_index + 5)
            CHECK_OK(tc_compact(c, n));
    } else if (dice < 800) {
        if (!nd->crashed) {
            int rc = raft_read_index(nd->r, (uint64_t)dice);
            CHECK(rc == 0 || rc == BATON_ENOTLEADER || rc == BATON_EBUSY);
        }
    } else if (dice < 806) {
        if (l) {
            int rc = raft_transfer_leader(c->nodes[l].r, pick(p, c->n));
            CHECK(rc == 0 || rc == BATON_EINVAL);
        }
    } else if (dice < 820) {
        if (l)
            random_config_change(c, p, l);
    } else if (dice < 826) {
        uint64_t dead = pick(p, c->n);
        if (!nd->crashed && dead != n)
            raft_peer_down(nd->r, dead);
    } else {
        tc_tick_all(c, 1);
    }
}

static void heal_and_converge(struct tc_cluster *c, uint64_t seed)
{
    c->drop_ppm = c->dup_ppm = 0;
    for (uint64_t i = 1; i <= (uint64_t)c->n; i++) {
        tc_isolate(c, i, false);
        if (c->nodes[i].crashed)
            tc_restart(c, i);
        c->nodes[i].manual_persist = false;
        tc_persist(c, i);
    }
    uint64_t l = 0;
    for (int k = 0; k < 300; k++) {
        tc_tick_all(c, 1);
        l = tc_leader(c);
        if (l && k > 60)
            break;
    }
    if (!l)
        test_fail(__FILE__, __LINE__, "seed %llu: no leader after healing",
                  (unsigned long long)seed);
    CHECK_OK(tc_propose(c, l, "final"));
    for (int k = 0; k < 60; k++)
        tc_tick_all(c, 1);
    struct raft_status ls = tc_status(c, l);
    for (uint64_t i = 1; i <= (uint64_t)c->n; i++) {
        if (!raft_config_is_voter(&ls.config, i) && !raft_config_is_learner(&ls.config, i))
            continue;
        if (c->nodes[i].sm_index != c->nodes[l].sm_index)
            test_fail(__FILE__, __LINE__, "seed %llu: node %llu applied %llu, leader %llu",
                      (unsigned long long)seed, (unsigned long long)i,
                      (unsigned long long)c->nodes[i].sm_index,
                      (unsigned long long)c->nodes[l].sm_index);
        CHECK_EQ_U64(c->nodes[i].sm_hash, c->nodes[l].sm_hash);
    }
}

static void run_seed(uint64_t seed)
{
    memset(&h, 0, sizeof(h));
    if (getenv("RAFT_VERBOSE"))
        fprintf(stderr, "seed %llu\n", (unsigned long long)seed);
    struct prng p;
    prng_seed(&p, seed);
    struct tc_cluster c;
    tc_init(&c, NODES, seed);
    c.chaos = &p;
    c.drop_ppm = 50000;
    c.dup_ppm = 20000;
    c.opts.snapshot_chunk_bytes = 700;
    c.opts.max_inflight_msgs = 8;
    c.opts.max_msg_bytes = 64;
    tc_start(&c, 3);
    for (int i = 1; i <= NODES; i++)
        c.nodes[i].manual_persist = true;
    int proposals = 0;
    for (int step = 0; step < STEPS; step++) {
        random_step(&c, &p, &proposals);
        check_safety(&c, seed, step);
    }
    heal_and_converge(&c, seed);
    check_safety(&c, seed, STEPS);
    if (getenv("RAFT_VERBOSE")) {
        uint64_t l = tc_leader(&c), snaps = 0, terms = 0;
        for (int i = 1; i <= NODES; i++)
            snaps += c.nodes[i].msgs_sent[RAFT_MSG_SNAPSHOT];
        for (int t = 0; t < TERM_MAX; t++)
            terms += h.leader_of_term[t] != 0;
        struct raft_status s = tc_status(&c, l);
        test_log("seed %llu: leader %llu term %llu commit %llu applied_count %llu "
                 "terms_with_leader %llu snapshot_msgs %llu voters %u learners %u",
                 (unsigned long long)seed, (unsigned long long)l, (unsigned long long)s.term,
                 (unsigned long long)s.commit, (unsigned long long)c.nodes[l].sm_count,
                 (unsigned long long)terms, (unsigned long long)snaps, s.config.voters_len,
                 s.config.learners_len);
    }
    tc_free(&c);
}

TEST(random_clusters)
{
    const char *env = getenv("RAFT_SEED");
    if (env) {
        run_seed(strtoull(env, NULL, 10));
        return;
    }
    const char *n_env = getenv("RAFT_SEEDS");
    uint64_t n = n_env ? strtoull(n_env, NULL, 10) : 25;
    for (uint64_t seed = 1; seed <= n; seed++)
        run_seed(seed);
}
