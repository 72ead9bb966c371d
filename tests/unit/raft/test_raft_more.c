/*
 * raft unit tests, part 2: flow control and batching (thesis §10.2), fast backtracking (§5.3),
 * snapshots in chunks (§7), ReadIndex (thesis §6.4), leadership transfer (thesis §3.10),
 * membership changes (thesis §4), and the fast-failover hook.
 */
#include "cluster.h"
#include "test.h"

#include <stdio.h>
#include <string.h>

static void same_state(struct tc_cluster *c, uint64_t a, uint64_t b)
{
    CHECK_EQ(c->nodes[a].sm_index, c->nodes[b].sm_index);
    CHECK_EQ(c->nodes[a].sm_count, c->nodes[b].sm_count);
    CHECK_EQ_U64(c->nodes[a].sm_hash, c->nodes[b].sm_hash);
}

static size_t sent(struct tc_cluster *c, uint64_t id, uint8_t type)
{
    return c->nodes[id].msgs_sent[type];
}

TEST(flow_control_bounded_inflight_window)
{
    struct tc_cluster c;
    tc_init(&c, 3, 21);
    c.opts.max_inflight_msgs = 4;
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    CHECK_OK(tc_propose(&c, 1, "warm"));
    tc_settle(&c);
    struct raft_progress_info p;
    CHECK_OK(raft_progress(c.nodes[1].r, 2, &p));
    CHECK_EQ(p.state, RAFT_PROGRESS_REPLICATE);
    /* Acknowledgements get lost: the leader stops after 4 appends per follower. */
    c.drop_types = 1u << RAFT_MSG_APPEND_RESP;
    size_t before = sent(&c, 1, RAFT_MSG_APPEND);
    for (int i = 0; i < 10; i++) {
        CHECK_OK(tc_propose(&c, 1, "x"));
        tc_settle(&c);
    }
    CHECK_EQ(sent(&c, 1, RAFT_MSG_APPEND) - before, 8); /* 4 to each follower */
    CHECK_OK(raft_progress(c.nodes[1].r, 2, &p));
    CHECK_EQ(p.inflight_msgs, 4);
    /* Acks flow again: heartbeats unblock the pipe and everything commits. */
    c.drop_types = 0;
    tc_tick_all(&c, 3);
    same_state(&c, 1, 2);
    same_state(&c, 1, 3);
    CHECK_EQ(c.nodes[2].sm_count, 11);
    tc_free(&c);
}

TEST(batching_and_max_message_size)
{
    struct tc_cluster c;
    tc_init(&c, 3, 22);
    c.opts.max_msg_bytes = 1000;
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    char big[301];
    memset(big, 'b', 300);
    big[300] = 0;
    size_t before = sent(&c, 1, RAFT_MSG_APPEND);
    for (int i = 0; i < 12; i++)
        CHECK_OK(tc_propose(&c, 1, big));
    /* One ready: 12 entries of 300 bytes go out 3 per message, 4 messages per follower. */
    tc_process(&c, 1);
    CHECK_EQ(sent(&c, 1, RAFT_MSG_APPEND) - before, 8);
    for (size_t i = 0; i < c.q_len; i++)
        CHECK_LE(c.q[i].b.len, 1000 + 200);
    tc_settle(&c);
    CHECK_EQ(c.nodes[3].sm_count, 12);
    same_state(&c, 1, 3);
    tc_free(&c);
}

TEST(fast_backtracking_over_divergent_log)
{
    struct tc_cluster c;
    tc_init(&c, 3, 23);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    /* The old leader writes 40 entries nobody else sees. */
    tc_isolate(&c, 1, true);
    for (int i = 0; i < 40; i++)
        CHECK_OK(tc_propose(&c, 1, "lost"));
    tc_settle(&c);
    /* 2 and 3 elect 2, which commits 40 entries of its own. */
    raft_peer_down(c.nodes[3].r, 1); /* 2 still trusts 1 and ignores 3 */
    tc_settle(&c);
    raft_peer_down(c.nodes[2].r, 1); /* 3 grants 2's pre-vote and vote */
    tc_settle(&c);
    CHECK_EQ(tc_leader(&c), 2);
    for (int i = 0; i < 40; i++)
        CHECK_OK(tc_propose(&c, 2, "kept"));
    tc_settle(&c);
    /* Leadership goes to 3 and back, so 2 starts a new term believing 1's log is as long as
     * its own: without hints it would probe back one entry at a time. */
    CHECK_OK(raft_transfer_leader(c.nodes[2].r, 3));
    tc_settle(&c);
    CHECK_EQ(tc_leader(&c), 3);
    CHECK_OK(raft_transfer_leader(c.nodes[3].r, 2));
    tc_settle(&c);
    CHECK_EQ(tc_leader(&c), 2);
    CHECK_EQ(c.nodes[1].msgs_rejected[RAFT_MSG_APPEND_RESP], 0);
    tc_isolate(&c, 1, false);
    tc_tick_all(&c, 12);
    CHECK_EQ(tc_status(&c, 1).leader, 2);
    same_state(&c, 1, 2);
    CHECK_EQ(c.nodes[1].sm_count, 40);
    CHECK_MEM(c.nodes[1].last_data, c.nodes[1].last_len, "kept", 4);
    /* The conflict hints let the leader skip the whole divergent term at once: a couple of
     * rejections, not one per divergent entry (40). */
    CHECK_GE(c.nodes[1].msgs_rejected[RAFT_MSG_APPEND_RESP], 1);
    CHECK_LE(c.nodes[1].msgs_rejected[RAFT_MSG_APPEND_RESP], 3);
    tc_free(&c);
}

TEST(snapshot_sent_in_chunks_to_lagging_follower)
{
    struct tc_cluster c;
    tc_init(&c, 3, 24);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    tc_crash(&c, 3);
    for (int i = 0; i < 30; i++)
        CHECK_OK(tc_propose(&c, 1, "s"));
    tc_settle(&c);
    CHECK_OK(tc_compact(&c, 1));
    CHECK_EQ(tc_status(&c, 1).snapshot_index, 32);
    CHECK_EQ(tc_status(&c, 1).first_index, 33);
    CHECK_OK(tc_propose(&c, 1, "after-compaction"));
    tc_settle(&c);
    tc_restart(&c, 3);
    /* Lose the first chunks for a while: the leader retries from the last acknowledged
     * offset after an election timeout. */
    c.drop_types = 1u << RAFT_MSG_SNAPSHOT;
    tc_tick_all(&c, 3);
    c.drop_types = 0;
    tc_tick_all(&c, 30);
    CHECK_GE(sent(&c, 1, RAFT_MSG_SNAPSHOT), 4); /* 3096 bytes in 1024-byte chunks */
    struct raft_status s3 = tc_status(&c, 3);
    CHECK_EQ(s3.snapshot_index, 32);
    CHECK_EQ(s3.first_index, 33);
    CHECK_EQ(c.nodes[3].snap.index, 32);
    same_state(&c, 1, 3);
    CHECK_EQ(c.nodes[3].sm_count, 31);
    /* The follower replicates normally afterwards, and restarts from its snapshot. */
    CHECK_OK(tc_propose(&c, 1, "later"));
    tc_settle(&c);
    same_state(&c, 1, 3);
    tc_restart(&c, 3);
    CHECK_EQ(c.nodes[3].sm_index, 32);
    tc_tick_all(&c, 3);
    same_state(&c, 1, 3);
    CHECK_EQ(c.nodes[3].sm_count, 32);
    tc_free(&c);
}

TEST(compact_bounds)
{
    struct tc_cluster c;
    tc_init(&c, 1, 25);
    tc_start(&c, 1);
    CHECK_EQ(tc_elect(&c, 1), 1);
    struct raft *r = c.nodes[1].r;
    CHECK_EQ(raft_compact(r, 100), BATON_EINVAL); /* beyond applied */
    CHECK_OK(raft_compact(r, 2));
    CHECK_EQ(raft_compact(r, 1), BATON_EINVAL); /* before the snapshot */
    struct raft_snapshot_meta m;
    raft_snapshot_meta(r, &m);
    CHECK_EQ(m.index, 2);
    CHECK_EQ(m.term, 2);
    CHECK_EQ(m.config.voters_len, 1);
    tc_free(&c);
}

TEST(read_index_leader_batches_reads)
{
    struct tc_cluster c;
    tc_init(&c, 3, 26);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    CHECK_OK(tc_propose(&c, 1, "v1"));
    tc_settle(&c);
    size_t hb = sent(&c, 1, RAFT_MSG_HEARTBEAT);
    for (uint64_t i = 0; i < 10; i++)
        CHECK_OK(raft_read_index(c.nodes[1].r, 100 + i));
    tc_settle(&c);
    CHECK_EQ(c.nodes[1].reads_len, 10);
    for (size_t i = 0; i < 10; i++) {
        CHECK_EQ(c.nodes[1].reads_ctx[i], 100 + i);
        CHECK_EQ(c.nodes[1].reads_index[i], 3);
    }
    CHECK_EQ(sent(&c, 1, RAFT_MSG_HEARTBEAT) - hb, 2); /* one round for all ten */
    /* Reads that arrive while a round is in flight share the next round. */
    CHECK_OK(raft_read_index(c.nodes[1].r, 200));
    tc_process(&c, 1);
    CHECK_OK(raft_read_index(c.nodes[1].r, 201));
    CHECK_OK(raft_read_index(c.nodes[1].r, 202));
    tc_settle(&c);
    CHECK_EQ(c.nodes[1].reads_len, 13);
    CHECK_EQ(sent(&c, 1, RAFT_MSG_HEARTBEAT) - hb, 6);
    tc_free(&c);
}

TEST(read_index_needs_quorum_and_own_term_commit)
{
    struct tc_cluster c;
    tc_init(&c, 3, 27);
    tc_start(&c, 3);
    /* The new leader's no-op cannot commit: reads wait. */
    c.drop_types = 1u << RAFT_MSG_APPEND;
    CHECK_EQ(tc_elect(&c, 1), 1);
    CHECK_EQ(tc_status(&c, 1).commit, 1);
    CHECK_OK(raft_read_index(c.nodes[1].r, 7));
    tc_settle(&c);
    CHECK_EQ(c.nodes[1].reads_len, 0);
    c.drop_types = 0;
    tc_tick_all(&c, 2);
    CHECK_EQ(c.nodes[1].reads_len, 1);
    CHECK_EQ(c.nodes[1].reads_index[0], 2);
    /* Without a quorum's heartbeat answers no read is released. */
    c.drop_types = 1u << RAFT_MSG_HEARTBEAT_RESP;
    CHECK_OK(raft_read_index(c.nodes[1].r, 8));
    tc_settle(&c);
    CHECK_EQ(c.nodes[1].reads_len, 1);
    c.drop_types = 0;
    tc_tick_all(&c, 1);
    CHECK_EQ(c.nodes[1].reads_len, 2);
    CHECK_EQ(c.nodes[1].reads_ctx[1], 8);
    tc_free(&c);
}

TEST(read_index_forwarded_by_follower)
{
    struct tc_cluster c;
    tc_init(&c, 3, 28);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    CHECK_OK(tc_propose(&c, 1, "v"));
    tc_settle(&c);
    CHECK_OK(raft_read_index(c.nodes[2].r, 55));
    tc_settle(&c);
    CHECK_EQ(c.nodes[2].reads_len, 1);
    CHECK_EQ(c.nodes[2].reads_ctx[0], 55);
    CHECK_EQ(c.nodes[2].reads_index[0], 3);
    CHECK_EQ(c.nodes[1].reads_len, 0);
    /* No leader known: refused. */
    struct tc_cluster d;
    tc_init(&d, 3, 29);
    tc_start(&d, 3);
    CHECK_EQ(raft_read_index(d.nodes[2].r, 1), BATON_ENOTLEADER);
    tc_free(&d);
    tc_free(&c);
}

TEST(leader_transfer)
{
    struct tc_cluster c;
    tc_init(&c, 3, 30);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    tc_isolate(&c, 3, true);
    for (int i = 0; i < 5; i++)
        CHECK_OK(tc_propose(&c, 1, "t"));
    tc_settle(&c);
    tc_isolate(&c, 3, false);
    CHECK_EQ(raft_transfer_leader(c.nodes[1].r, 1), BATON_EINVAL);
    CHECK_EQ(raft_transfer_leader(c.nodes[1].r, 9), BATON_EINVAL);
    CHECK_OK(raft_transfer_leader(c.nodes[1].r, 3));
    CHECK_EQ(tc_propose(&c, 1, "refused"), BATON_EPROPOSALDROP);
    /* 3 is caught up first, then told to campaign; stickiness does not stop it. */
    tc_settle(&c);
    CHECK_EQ(tc_leader(&c), 3);
    CHECK_EQ(tc_status(&c, 1).leader, 3);
    CHECK_EQ(tc_status(&c, 3).term, 3);
    CHECK_OK(tc_propose(&c, 3, "new-leader"));
    tc_settle(&c);
    same_state(&c, 1, 3);
    CHECK_EQ(c.nodes[1].sm_count, 6);
    tc_free(&c);
}

TEST(leader_transfer_abandoned_after_timeout)
{
    struct tc_cluster c;
    tc_init(&c, 3, 31);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    tc_isolate(&c, 3, true);
    CHECK_OK(tc_propose(&c, 1, "x"));
    tc_settle(&c);
    CHECK_OK(raft_transfer_leader(c.nodes[1].r, 3));
    CHECK_EQ(tc_status(&c, 1).transferee, 3);
    for (int i = 0; i < 12; i++) {
        tc_tick(&c, 1, 1);
        tc_tick(&c, 2, 1);
        tc_settle(&c);
    }
    CHECK_EQ(tc_status(&c, 1).transferee, 0);
    CHECK_EQ(tc_leader(&c), 1);
    CHECK_OK(tc_propose(&c, 1, "accepted-again"));
    tc_free(&c);
}

static int change(struct tc_cluster *c, uint64_t leader, uint8_t op, uint64_t id)
{
    struct raft_conf_change cc = {.op = op, .id = id};
    return raft_change_config(c->nodes[leader].r, &cc, 1, RAFT_TRANSITION_AUTO, NULL);
}

TEST(membership_learner_promote_remove)
{
    struct tc_cluster c;
    tc_init(&c, 4, 32);
    tc_start(&c, 3); /* node 4 starts empty: it joins */
    CHECK_EQ(tc_elect(&c, 1), 1);
    for (int i = 0; i < 5; i++)
        CHECK_OK(tc_propose(&c, 1, "m"));
    tc_settle(&c);
    CHECK_OK(change(&c, 1, RAFT_CONF_ADD_LEARNER, 4));
    CHECK_EQ(change(&c, 1, RAFT_CONF_ADD_LEARNER, 4), BATON_ECONFCHANGE); /* one at a time */
    tc_tick_all(&c, 3);
    struct raft_status s = tc_status(&c, 1);
    CHECK(raft_config_is_learner(&s.config, 4));
    CHECK_EQ(tc_status(&c, 4).config.learners_len, 1);
    same_state(&c, 1, 4); /* the learner receives the log */
    /* A learner does not vote and cannot campaign. */
    tc_tick(&c, 4, 50);
    CHECK_EQ(tc_status(&c, 4).role, RAFT_FOLLOWER);
    /* Promote, then the cluster needs 3 of 4 for commitment. */
    CHECK_OK(change(&c, 1, RAFT_CONF_ADD_VOTER, 4));
    tc_settle(&c);
    s = tc_status(&c, 1);
    CHECK_EQ(s.config.voters_len, 4);
    CHECK_EQ(s.config.learners_len, 0);
    tc_isolate(&c, 3, true);
    tc_isolate(&c, 4, true);
    CHECK_OK(tc_propose(&c, 1, "needs-3-of-4"));
    tc_settle(&c);
    uint64_t commit = tc_status(&c, 1).commit;
    CHECK_LT(commit, tc_status(&c, 1).last_index);
    tc_isolate(&c, 4, false);
    tc_tick_all(&c, 2);
    CHECK_EQ(tc_status(&c, 1).commit, tc_status(&c, 1).last_index);
    tc_isolate(&c, 3, false);
    /* Remove 3. */
    CHECK_OK(change(&c, 1, RAFT_CONF_REMOVE, 3));
    tc_tick_all(&c, 2);
    s = tc_status(&c, 1);
    CHECK_EQ(s.config.voters_len, 3);
    CHECK(!raft_config_is_voter(&s.config, 3));
    CHECK_EQ(change(&c, 1, RAFT_CONF_REMOVE, 3), BATON_EINVAL);
    same_state(&c, 1, 4);
    tc_free(&c);
}

TEST(membership_joint_consensus_auto_leave)
{
    struct tc_cluster c;
    tc_init(&c, 5, 33);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    /* Add 4 and 5 and remove 2 at once: two or more voters change, so joint. */
    struct raft_conf_change cc[3] = {
        {.op = RAFT_CONF_ADD_VOTER, .id = 4},
        {.op = RAFT_CONF_ADD_VOTER, .id = 5},
        {.op = RAFT_CONF_REMOVE, .id = 2},
    };
    uint64_t index = 0;
    CHECK_OK(raft_change_config(c.nodes[1].r, cc, 3, RAFT_TRANSITION_AUTO, &index));
    CHECK_EQ(index, 3);
    /* While the joint entry commits, the leader still uses the old configuration. */
    tc_settle(&c);
    tc_tick_all(&c, 3);
    struct raft_status s = tc_status(&c, 1);
    CHECK_EQ(s.config.voters_old_len, 0); /* left automatically */
    CHECK_EQ(s.config.voters_len, 4);
    CHECK(raft_config_is_voter(&s.config, 5));
    CHECK(!raft_config_is_voter(&s.config, 2));
    CHECK_EQ(s.last_index, 4); /* joint entry, then the leave entry */
    for (uint64_t i = 3; i <= 5; i++)
        CHECK_EQ(tc_status(&c, i).config.voters_len, 4);
    CHECK_OK(tc_propose(&c, 1, "in-new-config"));
    tc_settle(&c);
    same_state(&c, 1, 5);
    tc_free(&c);
}

TEST(membership_joint_explicit_and_leader_removal)
{
    struct tc_cluster c;
    tc_init(&c, 4, 34);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    struct raft_conf_change cc[2] = {
        {.op = RAFT_CONF_ADD_VOTER, .id = 4},
        {.op = RAFT_CONF_REMOVE, .id = 1},
    };
    CHECK_OK(raft_change_config(c.nodes[1].r, cc, 2, RAFT_TRANSITION_JOINT_EXPLICIT, NULL));
    tc_tick_all(&c, 3);
    struct raft_status s = tc_status(&c, 1);
    CHECK_EQ(s.config.voters_old_len, 3); /* stays joint until asked */
    CHECK_EQ(change(&c, 1, RAFT_CONF_ADD_LEARNER, 9), BATON_ECONFCHANGE);
    CHECK_OK(raft_change_config(c.nodes[1].r, NULL, 0, RAFT_TRANSITION_AUTO, NULL));
    tc_settle(&c);
    /* The leader left the configuration: it steps down once that commits; the rest elect. */
    CHECK(tc_status(&c, 1).role != RAFT_LEADER);
    uint64_t l = 0;
    for (int i = 0; i < 40 && (l == 0 || l == 1); i++) {
        tc_tick_all(&c, 1);
        l = tc_leader(&c);
    }
    CHECK(l >= 2 && l <= 4);
    CHECK_EQ(tc_status(&c, l).config.voters_len, 3);
    tc_free(&c);
}

TEST(peer_down_fast_failover)
{
    struct tc_cluster c;
    tc_init(&c, 3, 35);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    tc_crash(&c, 1);
    /* Only 2 saw the leader die: 3 still trusts its recent leader and ignores 2. */
    raft_peer_down(c.nodes[2].r, 1);
    tc_settle(&c);
    CHECK_EQ(tc_leader(&c), 0);
    CHECK_EQ(tc_status(&c, 3).term, 2);
    /* Once 3 saw it too, an election completes without a single tick. */
    raft_peer_down(c.nodes[3].r, 1);
    tc_settle(&c);
    uint64_t l = tc_leader(&c);
    CHECK(l == 2 || l == 3);
    CHECK_EQ(tc_status(&c, l).term, 3);
    /* A report about a non-leader changes nothing. */
    uint64_t other = l == 2 ? 3 : 2;
    raft_peer_down(c.nodes[other].r, 1);
    tc_settle(&c);
    CHECK_EQ(tc_leader(&c), l);
    tc_free(&c);
}
