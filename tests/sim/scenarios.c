/*
 * Scenario tests: each test is a short story that puts the cluster in the situation a claim of
 * the Raft paper ("In Search of an Understandable Consensus Algorithm", §5-§6) or Ongaro's
 * thesis ("Consensus: Bridging Theory and Practice", §3-§10) is about, and checks the claim. The
 * simulator's invariant checker runs on every step underneath, so each story also proves that
 * no safety property broke on the way.
 *
 * Timing: one tick is 10 ms of virtual time, the election timeout is 10 ticks randomized in
 * [100, 200) ms, heartbeats go every tick. Bounds below are generous multiples of these.
 */
#include "sim.h"
#include "test.h"

#include <string.h>

#define ELECTION_MS 200 /* upper end of the randomized election timeout */

static struct sim *cluster(int nodes, uint64_t seed)
{
    struct sim_config cfg = {.seed = seed, .nodes = nodes};
    return sim_create(&cfg);
}

static bool has_leader(struct sim *s, void *arg)
{
    return sim_leader(s) != 0;
}

/* A leader other than *(uint64_t *)arg. */
static bool has_other_leader(struct sim *s, void *arg)
{
    uint64_t l = sim_leader(s);
    return l != 0 && l != *(uint64_t *)arg;
}

/* Runs until a leader exists and a fresh write reached every member; fails the test if not. */
static uint64_t settle(struct sim *s)
{
    int rc = sim_settle(s, 10 * 1000);
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "cluster did not settle: rc=%d violation=%s", rc,
                  sim_violation(s));
    return sim_leader(s);
}

static void run_ok(struct sim *s, uint64_t ms)
{
    int rc = sim_run_for(s, ms);
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "violation: %s", sim_violation(s));
}

static uint64_t term_of(struct sim *s, uint64_t id)
{
    struct raft_status st;
    CHECK_OK(sim_status(s, id, &st));
    return st.term;
}

static uint64_t commit_of(struct sim *s, uint64_t id)
{
    struct raft_status st;
    CHECK_OK(sim_status(s, id, &st));
    return st.commit;
}

/* Proposes n writes at the leader and waits until all are acknowledged. */
static void write_n(struct sim *s, int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t leader = sim_leader(s), cmd = 0;
        CHECK(leader != 0);
        CHECK_OK(sim_propose(s, leader, &cmd));
        for (int k = 0; k < 200 && !sim_write_acked(s, cmd); k++)
            run_ok(s, 5);
        CHECK(sim_write_acked(s, cmd));
    }
}

/* ---- §5.2 Leader election ----------------------------------------------------------------------
 */

/* §5.2: a fresh cluster elects exactly one leader, and every member learns who it is. */
TEST(election_a_leader_is_elected)
{
    static const int sizes[] = {1, 3, 5, 7};
    for (size_t k = 0; k < BATON_ARRAY_LEN(sizes); k++) {
        struct sim *s = cluster(sizes[k], 100 + k);
        CHECK_OK(sim_run_until(s, has_leader, NULL, 20 * ELECTION_MS));
        uint64_t leader = sim_leader(s);
        run_ok(s, 100); /* a few heartbeats */
        CHECK_EQ(sim_leaders_count(s), 1);
        for (uint64_t id = 1; id <= (uint64_t)sizes[k]; id++) {
            struct raft_status st;
            CHECK_OK(sim_status(s, id, &st));
            CHECK_EQ(st.leader, leader);
        }
        sim_destroy(s);
    }
}

/* §5.2: split votes resolve. With the leader dead and the two survivors unable to reach each
 * other, both become candidates and neither can win; once they can talk, randomized timeouts
 * make one of them time out first and win. */
TEST(election_split_votes_resolve)
{
    struct sim_config cfg = {.seed = 7, .nodes = 3, .no_pre_vote = true};
    struct sim *s = sim_create(&cfg);
    uint64_t leader = settle(s);
    uint64_t a = leader % 3 + 1, b = a % 3 + 1;
    sim_crash(s, leader, false);
    sim_link(s, a, b, false);
    sim_link(s, b, a, false);
    run_ok(s, 5 * ELECTION_MS);
    struct raft_status sa, sb;
    CHECK_OK(sim_status(s, a, &sa));
    CHECK_OK(sim_status(s, b, &sb));
    CHECK_EQ(sa.role, RAFT_CANDIDATE); /* each voted for itself: a split vote, no leader */
    CHECK_EQ(sb.role, RAFT_CANDIDATE);
    CHECK_EQ(sim_leader(s), 0);
    sim_heal_network(s);
    CHECK_OK(sim_run_until(s, has_leader, NULL, 20 * ELECTION_MS));
    uint64_t winner = sim_leader(s);
    CHECK(winner == a || winner == b);
    settle(s);
    sim_destroy(s);
}

/* ---- §5.3 Log replication ----------------------------------------------------------------------
 */

/* §5.3: a leader cut off from the majority keeps appending entries it can never commit; a new
 * leader commits other entries at the same indexes; when the old leader returns, its
 * conflicting suffix is found (fast backtracking) and replaced by the new leader's log. */
TEST(replication_conflicts_are_repaired)
{
    struct sim *s = cluster(5, 11);
    uint64_t old = settle(s);
    write_n(s, 5);
    sim_isolate(s, old);
    uint64_t lost[20];
    for (int i = 0; i < 20; i++)
        CHECK_OK(sim_propose(s, old, &lost[i])); /* appended to the old leader's log only */
    run_ok(s, 50);
    /* The majority elects a new leader and commits its own entries at the same indexes. */
    CHECK_OK(sim_run_until(s, has_other_leader, &old, 20 * ELECTION_MS));
    write_n(s, 30);
    sim_heal_network(s);
    uint64_t leader = settle(s);
    CHECK_NE(leader, 0);
    for (int i = 0; i < 20; i++)
        CHECK(!sim_write_acked(s, lost[i]));
    for (uint64_t id = 1; id <= 5; id++)
        CHECK_EQ(sim_applied(s, id), sim_applied(s, leader));
    sim_destroy(s);
}

/* ---- §5.4.1 Election restriction ------------------------------------------------------------- */

struct watch_leader {
    uint64_t never; /* this node must never lead */
    bool led;
};

static bool watch_not_leader(struct sim *s, void *arg)
{
    struct watch_leader *w = arg;
    struct raft_status st;
    if (sim_status(s, w->never, &st) == 0 && st.role == RAFT_LEADER)
        w->led = true;
    return false;
}

/* §5.4.1: a candidate whose log lacks committed entries cannot collect a majority of votes.
 * Node c misses writes committed by the other two; the leader dies; c can never win (the
 * survivor refuses it), so the survivor leads and keeps every committed write. */
TEST(election_restriction_stale_log_cannot_win)
{
    struct sim *s = cluster(3, 21);
    uint64_t leader = settle(s);
    uint64_t c = leader % 3 + 1, other = c % 3 + 1;
    sim_isolate(s, c);
    write_n(s, 10); /* committed on leader + other */
    sim_crash(s, leader, false);
    sim_heal_network(s);
    struct watch_leader w = {.never = c};
    sim_run_until(s, watch_not_leader, &w, 30 * ELECTION_MS);
    CHECK(!w.led);
    CHECK_EQ(sim_leader(s), other);
    sim_restart(s, leader);
    settle(s);
    sim_destroy(s);
}

/* ---- §5.4.2 Figure 8: committing entries from previous terms -------------------------------- */

struct fig8 {
    struct sim *s;
    bool block_all;   /* drop every append */
    uint64_t index;   /* the old-term entry's index */
    uint64_t x_term;  /* its term */
    uint64_t leader;  /* the later leader holding X */
    bool block_above; /* keep current-term entries (above index) from being accepted */
};

static bool fig8_filter(void *arg, const struct raft_msg *m)
{
    struct fig8 *f = arg;
    if (m->type != RAFT_MSG_APPEND)
        return false;
    if (f->block_all)
        return true;
    if (!f->block_above)
        return false;
    bool above = false;
    for (uint32_t i = 0; i < m->entries_len; i++)
        above |= m->entries[i].index > f->index;
    if (!above)
        return false;
    /* An append carrying X and a newer entry, or one a holder of X would accept, is dropped;
     * appends that the receiver rejects go through, so the leader backs off and sends X alone
     * (one entry per append: max_msg_bytes is 1). */
    uint64_t t = 0;
    struct raft *r = sim_raft(f->s, m->to);
    bool holds_x = r && raft_term_at(r, f->index, &t) == 0 && t == f->x_term;
    bool carries_x = m->entries_len > 0 && m->entries[0].index <= f->index;
    return holds_x || carries_x;
}

/* §5.4.2 and Figure 8: a leader never commits an entry of an earlier term by counting replicas.
 * An entry X of term t2 sits at index i on two of five nodes; a leader of a later term gets X
 * onto a majority while its own current-term entries cannot reach anyone. It must not treat X
 * as committed, because a node holding a different entry at i with a higher term could still be
 * elected and overwrite it (which the checker would flag as a state-machine violation had X
 * been applied). */
TEST(figure8_old_term_entry_not_committed_by_counting)
{
    struct sim_config cfg = {.seed = 31, .nodes = 5, .max_msg_bytes = 1};
    struct sim *s = sim_create(&cfg);
    struct fig8 f = {.s = s};
    sim_set_filter(s, fig8_filter, &f);
    uint64_t s1 = settle(s);
    uint64_t s2 = s1 % 5 + 1;
    /* (a) S1 leads; X reaches only S2. */
    for (uint64_t id = 1; id <= 5; id++)
        if (id != s1 && id != s2)
            sim_link(s, s1, id, false);
    uint64_t x;
    CHECK_OK(sim_propose(s, s1, &x));
    run_ok(s, 30);
    struct raft_status st;
    CHECK_OK(sim_status(s, s1, &st));
    f.index = st.last_index;
    f.x_term = st.term;
    /* (b) S1 crashes; the three others elect a leader L3 that appends at index i but reaches
     * nobody, then crashes too. */
    sim_crash(s, s1, false);
    sim_isolate(s, s2);
    f.block_all = true; /* the next leader's entries reach nobody */
    for (uint64_t id = 1; id <= 5; id++)
        if (id != s1)
            sim_link(s, s1, id, true), sim_link(s, id, s1, true);
    CHECK_OK(sim_run_until(s, has_leader, NULL, 30 * ELECTION_MS));
    uint64_t l3 = sim_leader(s);
    CHECK(l3 != s1 && l3 != s2);
    CHECK_OK(sim_propose(s, l3, NULL));
    run_ok(s, 30);
    uint64_t l3_term_at_i = 0;
    CHECK_OK(raft_term_at(sim_raft(s, l3), f.index, &l3_term_at_i));
    sim_crash(s, l3, false);
    f.block_all = false;
    /* (c) S1 comes back; S1 or S2 (both hold X) wins a later term and spreads X, but none of its
     * current-term entries (index > i) may leave it. */
    sim_restart(s, s1);
    sim_heal_network(s);
    sim_isolate(s, l3);
    f.block_above = true;
    f.leader = 0;
    for (int k = 0; k < 400 && !f.leader; k++) {
        run_ok(s, 5);
        uint64_t l = sim_leader(s);
        if (l == s1 || l == s2)
            f.leader = l;
    }
    CHECK(f.leader == s1 || f.leader == s2);
    run_ok(s, 300);
    /* X is now on a majority... */
    int holders = 0;
    for (uint64_t id = 1; id <= 5; id++) {
        uint64_t t;
        if (id != l3 && sim_raft(s, id) && raft_term_at(sim_raft(s, id), f.index, &t) == 0 &&
            t != l3_term_at_i)
            holders++;
    }
    CHECK_GE(holders, 3);
    /* ...yet it is not committed: the leader has no current-term entry on a majority. */
    CHECK_LT(commit_of(s, f.leader), f.index);
    /* (d) The leader dies; L3, whose entry at i has a higher term, may now win and overwrite X.
     * That is safe precisely because X was never committed. */
    sim_crash(s, f.leader, false);
    sim_set_filter(s, NULL, NULL);
    sim_heal_network(s);
    sim_restart(s, l3);
    settle(s);
    for (uint64_t id = 1; id <= 5; id++)
        sim_restart(s, id);
    settle(s);
    sim_destroy(s);
}

/* ---- §6 / thesis §4 Membership changes ------------------------------------------------------ */

static bool conf_is(struct sim *s, void *arg)
{
    const uint64_t *want = arg; /* want[0] = count, then voter ids */
    uint64_t leader = sim_leader(s);
    struct raft_status st;
    if (!leader || sim_status(s, leader, &st) != 0 || st.config.voters_old_len != 0 ||
        st.config.voters_len != want[0])
        return false;
    for (uint64_t i = 0; i < want[0]; i++)
        if (!raft_config_is_voter(&st.config, want[1 + i]))
            return false;
    return true;
}

static int change_until_ok(struct sim *s, const struct raft_conf_change *c, size_t n,
                           enum raft_conf_transition t)
{
    int rc = BATON_ECONFCHANGE;
    for (int k = 0; k < 200; k++) {
        uint64_t leader = sim_leader(s);
        if (leader) {
            rc = sim_change(s, leader, c, n, t);
            if (rc != BATON_ECONFCHANGE && rc != BATON_ENOTLEADER)
                return rc;
        }
        if (sim_run_for(s, 10) != 0)
            return -1;
    }
    return rc;
}

/* Thesis §4.1 (single-server changes): add a learner, let it catch up, promote it, then remove
 * an old voter; the majorities of consecutive configurations overlap, so no two leaders can
 * appear. The cluster keeps committing throughout. */
TEST(membership_single_server_changes)
{
    struct sim *s = cluster(3, 41);
    settle(s);
    uint64_t n4 = sim_new_node(s);
    CHECK_EQ(n4, 4);
    struct raft_conf_change add = {RAFT_CONF_ADD_LEARNER, n4};
    CHECK_OK(change_until_ok(s, &add, 1, RAFT_TRANSITION_AUTO));
    write_n(s, 20);
    settle(s);
    CHECK_EQ(sim_applied(s, n4), sim_applied(s, sim_leader(s))); /* learners receive the log */
    struct raft_conf_change promote = {RAFT_CONF_ADD_VOTER, n4};
    CHECK_OK(change_until_ok(s, &promote, 1, RAFT_TRANSITION_AUTO));
    uint64_t want4[] = {4, 1, 2, 3, 4};
    CHECK_OK(sim_run_until(s, conf_is, want4, 5000));
    struct raft_conf_change rm = {RAFT_CONF_REMOVE, 1};
    CHECK_OK(change_until_ok(s, &rm, 1, RAFT_TRANSITION_AUTO));
    uint64_t want3[] = {3, 2, 3, 4};
    CHECK_OK(sim_run_until(s, conf_is, want3, 5000));
    sim_crash(s, 1, false); /* the removed member shuts down */
    settle(s);
    write_n(s, 5);
    sim_destroy(s);
}

/* §6 (joint consensus): replace two of three voters at once. The cluster passes through the
 * joint configuration C_old,new, where every decision needs both majorities, and leaves it
 * automatically for C_new. */
TEST(membership_joint_change)
{
    struct sim *s = cluster(3, 43);
    settle(s);
    uint64_t n4 = sim_new_node(s), n5 = sim_new_node(s);
    struct raft_conf_change learners[] = {{RAFT_CONF_ADD_LEARNER, n4}, {RAFT_CONF_ADD_LEARNER, n5}};
    CHECK_OK(change_until_ok(s, learners, 2, RAFT_TRANSITION_AUTO));
    write_n(s, 10);
    settle(s);
    struct raft_conf_change swap[] = {{RAFT_CONF_ADD_VOTER, n4},
                                      {RAFT_CONF_ADD_VOTER, n5},
                                      {RAFT_CONF_REMOVE, 1},
                                      {RAFT_CONF_REMOVE, 2}};
    CHECK_OK(change_until_ok(s, swap, 4, RAFT_TRANSITION_JOINT_AUTO));
    uint64_t want[] = {3, 3, 4, 5};
    CHECK_OK(sim_run_until(s, conf_is, want, 5000));
    sim_crash(s, 1, false);
    sim_crash(s, 2, false);
    settle(s);
    write_n(s, 5);
    sim_destroy(s);
}

/* ---- Thesis §9.6 Pre-vote, §6.2 check-quorum, leader stickiness --------------------------- */

/* §9.6: a follower partitioned away keeps timing out, but with pre-vote it never increments its
 * term (it cannot win a pre-vote), so when it rejoins, the leader is not deposed. */
TEST(prevote_rejoining_node_does_not_disrupt)
{
    struct sim *s = cluster(3, 51);
    uint64_t leader = settle(s);
    uint64_t term = term_of(s, leader);
    uint64_t lonely = leader % 3 + 1;
    sim_isolate(s, lonely);
    run_ok(s, 20 * ELECTION_MS);
    CHECK_EQ(term_of(s, lonely), term); /* pre-votes failed: no term inflation */
    sim_heal_network(s);
    run_ok(s, 10 * ELECTION_MS);
    CHECK_EQ(sim_leader(s), leader);
    CHECK_EQ(term_of(s, leader), term);
    sim_destroy(s);
}

/* Thesis §6.2 (check-quorum): a leader that stops hearing from a majority steps down within an
 * election timeout or so, instead of serving as a stale leader forever; the majority elects a
 * new one. */
TEST(check_quorum_isolated_leader_steps_down)
{
    struct sim *s = cluster(5, 53);
    uint64_t leader = settle(s);
    sim_isolate(s, leader);
    run_ok(s, 10 * ELECTION_MS);
    struct raft_status st;
    CHECK_OK(sim_status(s, leader, &st));
    CHECK_NE(st.role, RAFT_LEADER);
    uint64_t now = sim_leader(s);
    CHECK(now != 0 && now != leader);
    sim_heal_network(s);
    settle(s);
    sim_destroy(s);
}

/* Leader stickiness (thesis §4.2.3): a follower that heard from the leader within the election
 * timeout ignores vote requests. A node that cannot hear the leader (one-way cut) campaigns,
 * even without pre-vote, but cannot depose a leader the others still hear. */
TEST(leader_stickiness_ignores_disruptive_candidate)
{
    struct sim_config cfg = {.seed = 55, .nodes = 3, .no_pre_vote = true};
    struct sim *s = sim_create(&cfg);
    uint64_t leader = settle(s);
    uint64_t cut = leader % 3 + 1;
    sim_link(s, leader, cut, false); /* the leader's messages no longer reach cut */
    write_n(s, 3);
    run_ok(s, 20 * ELECTION_MS);
    CHECK_EQ(sim_leader(s), leader);
    struct raft_status st;
    CHECK_OK(sim_status(s, leader, &st));
    CHECK_EQ(st.role, RAFT_LEADER);
    write_n(s, 3); /* still committing with the other follower */
    sim_heal_network(s);
    settle(s);
    sim_destroy(s);
}

/* ---- Thesis §3.10 Leadership transfer ------------------------------------------------------- */

/* §3.10: the leader catches the target up and sends TimeoutNow; the target wins the next term
 * at once. While the transfer runs, the old leader refuses proposals. */
TEST(leadership_transfer)
{
    struct sim *s = cluster(5, 61);
    uint64_t leader = settle(s);
    write_n(s, 10);
    uint64_t target = leader % 5 + 1;
    uint64_t term = term_of(s, leader);
    CHECK_OK(sim_transfer(s, leader, target));
    CHECK_EQ(sim_propose(s, leader, NULL), BATON_EPROPOSALDROP);
    for (int k = 0; k < 100 && sim_leader(s) != target; k++)
        run_ok(s, 5);
    CHECK_EQ(sim_leader(s), target);
    CHECK_EQ(term_of(s, target), term + 1);
    settle(s);
    sim_destroy(s);
}

/* ---- Thesis §6.4 ReadIndex ------------------------------------------------------------------ */

static bool read_done(struct sim *s, void *arg)
{
    return sim_read_done(s, *(uint64_t *)arg, NULL);
}

/* §6.4: a read at a follower is forwarded to the leader, whose read index covers every write
 * acknowledged before the read began (the checker verifies that on every read). A leader cut
 * off from the majority cannot confirm its leadership, so its read never completes. */
TEST(read_index_linearizable_and_stale_leader_cannot_read)
{
    struct sim *s = cluster(3, 71);
    uint64_t leader = settle(s);
    write_n(s, 10);
    uint64_t follower = leader % 3 + 1, r = 0, served = 0;
    uint64_t last_write = 0;
    CHECK_OK(sim_propose(s, leader, &last_write));
    for (int k = 0; k < 100 && !sim_write_acked(s, last_write); k++)
        run_ok(s, 5);
    CHECK_OK(sim_read(s, follower, &r));
    CHECK_OK(sim_run_until(s, read_done, &r, 2000));
    CHECK(sim_read_done(s, r, &served));
    CHECK_GE(served, sim_write_index(s, last_write));

    sim_isolate(s, leader);
    uint64_t stale = 0;
    CHECK_OK(sim_read(s, leader, &stale));
    run_ok(s, 3 * ELECTION_MS);
    CHECK(!sim_read_done(s, stale, NULL));
    sim_heal_network(s);
    settle(s);
    sim_destroy(s);
}

/* ---- Snapshots, restart, fast failover ---------------------------------------------------------
 */

/* Snapshot catch-up (§7): a follower that was down while the others compacted their logs past
 * its last entry receives the leader's snapshot in chunks, installs it, and continues from the
 * log after it. */
TEST(snapshot_catch_up)
{
    struct sim *s = cluster(3, 81);
    uint64_t leader = settle(s);
    uint64_t lagger = leader % 3 + 1;
    sim_crash(s, lagger, false);
    write_n(s, 60);
    for (uint64_t id = 1; id <= 3; id++)
        if (id != lagger)
            CHECK_OK(sim_compact(s, id));
    write_n(s, 5);
    sim_restart(s, lagger);
    settle(s);
    struct sim_stats st;
    sim_get_stats(s, &st);
    CHECK_GE(st.snapshots_sent, 1);
    CHECK_EQ(sim_applied(s, lagger), sim_applied(s, sim_leader(s)));
    sim_destroy(s);
}

/* Restart from durable state (§5.1, thesis §11.2): every node crashes at once with writes in
 * flight; whatever was not durable is lost, but every acknowledged write was durable on a
 * majority, so after restart each one is still in the log, applied at the same index. */
TEST(restart_from_durable_state)
{
    struct sim *s = cluster(5, 91);
    settle(s);
    uint64_t cmds[30];
    for (int i = 0; i < 30; i++) {
        CHECK_OK(sim_propose(s, sim_leader(s), &cmds[i]));
        run_ok(s, 1);
    }
    for (uint64_t id = 1; id <= 5; id++)
        sim_crash(s, id, false);
    for (uint64_t id = 1; id <= 5; id++)
        sim_restart(s, id);
    uint64_t leader = settle(s);
    int acked = 0;
    for (int i = 0; i < 30; i++)
        if (sim_write_acked(s, cmds[i])) {
            acked++;
            CHECK_LE(sim_write_index(s, cmds[i]), sim_applied(s, leader));
        }
    test_log("%d of 30 writes were acknowledged before the crash", acked);
    sim_destroy(s);
}

/* Fast failover hook: when the peers see the dead leader's connection closed by its kernel,
 * they campaign at once instead of waiting out the election timeout. Over a number of runs the
 * new leader comes sooner than when the crash goes unnoticed (simultaneous campaigns can still
 * split a vote, so single runs are not compared). */
static uint64_t failover_ms(uint64_t seed, bool peer_down)
{
    struct sim *s = cluster(3, seed);
    uint64_t leader = settle(s);
    run_ok(s, 1 + seed % 10);
    uint64_t t0 = sim_now_ms(s);
    sim_crash(s, leader, peer_down);
    CHECK_OK(sim_run_until(s, has_leader, NULL, 20 * ELECTION_MS));
    uint64_t ms = sim_now_ms(s) - t0;
    sim_restart(s, leader);
    settle(s);
    sim_destroy(s);
    return ms;
}

TEST(fast_failover_hook)
{
    uint64_t fast = 0, slow = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        fast += failover_ms(seed, true);
        slow += failover_ms(seed, false);
    }
    test_log("mean time to a new leader: %" PRIu64 " ms with the hook, %" PRIu64 " ms without",
             fast / 20, slow / 20);
    CHECK_LT(fast, slow);
}
