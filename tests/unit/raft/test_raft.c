/*
 * raft unit tests, part 1: elections (§5.2, pre-vote §9.6, check-quorum, stickiness),
 * replication and commitment (§5.3, §5.4.2 Figure 8), the persistence contract, restart.
 * Each test drives a few members by hand through the in-memory cluster in cluster.c.
 */
#include "cluster.h"
#include "test.h"

#include <stdio.h>
#include <string.h>

/* Ticks id until it starts campaigning (pre-vote or vote), without delivering anything. */
static void tick_until_campaign(struct tc_cluster *c, uint64_t id)
{
    for (int i = 0; i < 100 && tc_status(c, id).role == RAFT_FOLLOWER; i++)
        tc_tick(c, id, 1);
    CHECK(tc_status(c, id).role != RAFT_FOLLOWER);
}

static void check_same_state(struct tc_cluster *c, uint64_t a, uint64_t b)
{
    CHECK_EQ(c->nodes[a].sm_index, c->nodes[b].sm_index);
    CHECK_EQ(c->nodes[a].sm_count, c->nodes[b].sm_count);
    CHECK_EQ_U64(c->nodes[a].sm_hash, c->nodes[b].sm_hash);
}

TEST(election_single_node)
{
    struct tc_cluster c;
    tc_init(&c, 1, 1);
    tc_start(&c, 1);
    CHECK_EQ(tc_elect(&c, 1), 1);
    CHECK_OK(tc_propose(&c, 1, "solo"));
    tc_settle(&c);
    CHECK_EQ(c.nodes[1].sm_count, 1);
    CHECK_EQ(tc_status(&c, 1).commit, 3); /* config, no-op, entry */
    tc_free(&c);
}

TEST(election_three_nodes_and_noop)
{
    struct tc_cluster c;
    tc_init(&c, 3, 2);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    for (uint64_t i = 1; i <= 3; i++) {
        struct raft_status s = tc_status(&c, i);
        CHECK_EQ(s.term, 2);
        CHECK_EQ(s.leader, 1);
        CHECK_EQ(s.commit, 2); /* the leader's no-op is committed everywhere */
        CHECK_EQ(c.nodes[i].sm_index, 2);
    }
    /* Pre-vote does not bump anyone's term: only the real election did (1 -> 2). */
    CHECK_EQ(tc_status(&c, 2).vote, 1);
    tc_free(&c);
}

TEST(replication_commit_apply)
{
    struct tc_cluster c;
    tc_init(&c, 3, 3);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    char text[32];
    for (int i = 0; i < 50; i++) {
        snprintf(text, sizeof(text), "entry-%d", i);
        CHECK_OK(tc_propose(&c, 1, text));
    }
    tc_settle(&c);
    CHECK_EQ(c.nodes[1].sm_count, 50);
    check_same_state(&c, 1, 2);
    check_same_state(&c, 1, 3);
    CHECK_MEM(c.nodes[3].last_data, c.nodes[3].last_len, "entry-49", 8);
    /* Followers refuse proposals. */
    CHECK_EQ(tc_propose(&c, 2, "x"), BATON_ENOTLEADER);
    tc_free(&c);
}

TEST(prevote_keeps_isolated_node_from_disrupting)
{
    struct tc_cluster c;
    tc_init(&c, 3, 4);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    tc_isolate(&c, 3, true);
    tc_tick(&c, 3, 100);                /* many election timeouts alone */
    CHECK_EQ(tc_status(&c, 3).term, 2); /* pre-vote never won, the term never moved */
    tc_isolate(&c, 3, false);
    tc_tick_all(&c, 3);
    CHECK_EQ(tc_leader(&c), 1);
    CHECK_EQ(tc_status(&c, 1).term, 2);
    CHECK_EQ(tc_status(&c, 3).leader, 1);
    tc_free(&c);
}

TEST(leader_stickiness_ignores_candidates)
{
    struct tc_cluster c;
    tc_init(&c, 3, 5);
    c.opts.pre_vote = false; /* real vote requests reach node 2 */
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    /* 3 cannot hear the leader but can reach 2, which hears the leader. */
    c.cut[1][3] = c.cut[3][1] = true;
    for (int i = 0; i < 40; i++) {
        tc_tick(&c, 3, 1);
        tc_tick(&c, 1, 1);
        tc_tick(&c, 2, 1);
        tc_settle(&c);
    }
    CHECK_GT(tc_status(&c, 3).term, 2); /* 3 kept campaigning */
    CHECK_EQ(tc_status(&c, 2).term, 2); /* 2 ignored it: its leader is live */
    CHECK_EQ(tc_leader(&c), 1);
    tc_free(&c);
}

TEST(check_quorum_leader_steps_down)
{
    struct tc_cluster c;
    tc_init(&c, 3, 6);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    tc_isolate(&c, 1, true);
    tc_tick(&c, 1, 25);
    CHECK_EQ(tc_status(&c, 1).role, RAFT_FOLLOWER);
    CHECK_EQ(tc_status(&c, 1).leader, 0);
    tc_free(&c);
}

TEST(vote_requires_up_to_date_log)
{
    struct tc_cluster c;
    tc_init(&c, 3, 7);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    tc_isolate(&c, 3, true);
    CHECK_OK(tc_propose(&c, 1, "a"));
    tc_settle(&c);
    CHECK_EQ(tc_status(&c, 2).commit, 3);
    tc_crash(&c, 1);
    tc_isolate(&c, 3, false);
    /* 3 lacks entry 3: 2 refuses it (§5.4.1), whatever 3 tries. */
    raft_peer_down(c.nodes[2].r, 1);
    tc_settle(&c);
    for (int i = 0; i < 5; i++) {
        raft_peer_down(c.nodes[3].r, 1);
        tc_tick(&c, 3, 30);
        tc_settle(&c);
        CHECK(tc_status(&c, 3).role != RAFT_LEADER);
    }
    /* 2 can win, and 3 then catches up. */
    uint64_t l = 0;
    for (int i = 0; i < 20 && l != 2; i++) {
        tc_tick(&c, 2, 5);
        tc_settle(&c);
        l = tc_leader(&c);
    }
    CHECK_EQ(l, 2);
    tc_settle(&c);
    check_same_state(&c, 2, 3);
    CHECK_EQ(c.nodes[3].sm_count, 1);
    tc_free(&c);
}

/* §5.4.2 / Figure 8: a leader never commits an entry of an earlier term by counting replicas;
 * it commits it only together with an entry of its own term. */
TEST(commit_only_current_term_by_counting)
{
    struct tc_cluster c;
    tc_init(&c, 3, 8);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    /* Entry 3 (term 2) reaches 2 but its ack never reaches 1, and 3 never sees it. */
    c.cut[1][3] = c.cut[2][1] = true;
    CHECK_OK(tc_propose(&c, 1, "old"));
    tc_settle(&c);
    CHECK_EQ(tc_status(&c, 2).last_index, 3);
    CHECK_EQ(tc_status(&c, 1).commit, 2);
    tc_crash(&c, 1);
    c.cut[1][3] = c.cut[2][1] = false;
    /* 2 becomes leader of term 3; appends to 3 are lost, so 3's progress comes only from the
     * forged acknowledgements below. */
    c.drop_types = 1u << RAFT_MSG_APPEND;
    raft_peer_down(c.nodes[2].r, 1);
    raft_peer_down(c.nodes[3].r, 1);
    tc_settle(&c);
    CHECK_EQ(tc_leader(&c), 2);
    struct raft_status s = tc_status(&c, 2);
    CHECK_EQ(s.term, 3);
    CHECK_EQ(s.last_index, 4); /* old@3 (term 2), no-op@4 (term 3) */
    tc_drop_queue(&c);
    struct raft_msg ack = {.type = RAFT_MSG_APPEND_RESP, .from = 3, .to = 2, .term = 3, .index = 3};
    CHECK_OK(raft_step(c.nodes[2].r, &ack));
    tc_process(&c, 2);
    /* A majority (2 and 3) holds index 3, but it is of term 2: not committed. */
    CHECK_EQ(tc_status(&c, 2).commit, 2);
    ack.index = 4;
    CHECK_OK(raft_step(c.nodes[2].r, &ack));
    tc_process(&c, 2);
    CHECK_EQ(tc_status(&c, 2).commit, 4);
    CHECK_EQ(c.nodes[2].sm_count, 1);
    tc_drop_queue(&c);
    tc_free(&c);
}

static size_t sent(struct tc_cluster *c, uint64_t id, uint8_t type)
{
    return c->nodes[id].msgs_sent[type];
}

TEST(persist_before_vote_grant)
{
    struct tc_cluster c;
    tc_init(&c, 3, 9);
    c.opts.pre_vote = false;
    tc_start(&c, 3);
    tc_settle(&c);
    c.nodes[2].manual_persist = true;
    tick_until_campaign(&c, 1);
    CHECK_EQ(tc_status(&c, 1).role, RAFT_CANDIDATE);
    tc_settle(&c);
    /* 2 granted its vote in memory, but the grant stays inside raft until it is durable. */
    CHECK_EQ(tc_status(&c, 2).vote, 1);
    CHECK_EQ(sent(&c, 2, RAFT_MSG_VOTE_RESP), 0);
    CHECK(c.nodes[2].persist_held);
    CHECK_EQ(c.nodes[2].hs.vote, 0); /* not yet written */
    tc_persist(&c, 2);
    CHECK_EQ(c.nodes[2].hs.vote, 1);
    tc_process(&c, 2);
    CHECK_EQ(sent(&c, 2, RAFT_MSG_VOTE_RESP), 1);
    tc_settle(&c);
    tc_persist(&c, 2);
    tc_settle(&c);
    tc_persist(&c, 2);
    tc_settle(&c);
    CHECK_EQ(tc_leader(&c), 1);
    tc_free(&c);
}

TEST(persist_before_candidate_requests_and_self_vote)
{
    struct tc_cluster c;
    tc_init(&c, 1, 10);
    c.opts.pre_vote = false;
    tc_start(&c, 1);
    tc_settle(&c);
    c.nodes[1].manual_persist = true;
    tick_until_campaign(&c, 1);
    /* A single voter would win at once with its own vote; the vote counts only once the
     * term and vote are durable. */
    CHECK_EQ(tc_status(&c, 1).role, RAFT_CANDIDATE);
    tc_persist(&c, 1);
    tc_process(&c, 1);
    CHECK_EQ(tc_status(&c, 1).role, RAFT_LEADER);
    CHECK_EQ(c.nodes[1].hs.vote, 1);
    tc_free(&c);
}

TEST(persist_before_append_ack_and_leader_parallel_write)
{
    struct tc_cluster c;
    tc_init(&c, 3, 11);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    tc_isolate(&c, 3, true);
    c.nodes[1].manual_persist = true;
    c.nodes[2].manual_persist = true;
    CHECK_OK(tc_propose(&c, 1, "p"));
    tc_settle(&c);
    /* The leader sent the entry before writing it (thesis §10.2.1); 2 holds its ack. */
    CHECK_EQ(tc_status(&c, 2).last_index, 3);
    CHECK_EQ(tc_status(&c, 1).commit, 2);
    tc_persist(&c, 2);
    tc_settle(&c);
    /* 2's ack arrived, but the leader has not written the entry: no majority of durable
     * copies yet (3 is away). */
    CHECK_EQ(tc_status(&c, 1).commit, 2);
    tc_persist(&c, 1);
    tc_settle(&c);
    CHECK_EQ(tc_status(&c, 1).commit, 3);
    tc_free(&c);
}

TEST(group_commit_one_batch_in_flight)
{
    struct tc_cluster c;
    tc_init(&c, 1, 12);
    tc_start(&c, 1);
    CHECK_EQ(tc_elect(&c, 1), 1);
    struct raft *r = c.nodes[1].r;
    CHECK_OK(raft_propose(r, "a", 1, NULL));
    struct raft_ready rd;
    raft_ready(r, &rd);
    CHECK(rd.persist != NULL);
    CHECK_EQ(rd.persist->entries_len, 1);
    const struct raft_persist *first = rd.persist;
    raft_advance(r, &rd);
    for (int i = 0; i < 5; i++)
        CHECK_OK(raft_propose(r, "b", 1, NULL));
    /* While the first batch is being written, new entries wait for the next one. */
    CHECK(!raft_has_ready(r));
    CHECK_EQ(first->entries[0].data[0], 'a');
    raft_persisted(r);
    raft_ready(r, &rd);
    CHECK(rd.persist != NULL);
    CHECK_EQ(rd.persist->entries_len, 5);
    CHECK_EQ(rd.committed_len, 1); /* "a" is durable and committed */
    raft_advance(r, &rd);
    raft_persisted(r);
    raft_ready(r, &rd);
    CHECK_EQ(rd.committed_len, 5);
    raft_advance(r, &rd);
    tc_free(&c);
}

TEST(restart_all_members)
{
    struct tc_cluster c;
    tc_init(&c, 3, 13);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    for (int i = 0; i < 20; i++)
        CHECK_OK(tc_propose(&c, 1, "before"));
    tc_settle(&c);
    for (uint64_t i = 1; i <= 3; i++)
        tc_restart(&c, i);
    tc_settle(&c);
    for (uint64_t i = 1; i <= 3; i++) {
        struct raft_status s = tc_status(&c, i);
        CHECK_EQ(s.role, RAFT_FOLLOWER);
        CHECK_EQ(s.term, 2);
        CHECK_EQ(s.last_index, 22);
        CHECK_EQ(s.config.voters_len, 3);
    }
    uint64_t l = tc_elect(&c, 2);
    CHECK_EQ(l, 2);
    CHECK_EQ(tc_status(&c, 2).term, 3);
    for (int i = 0; i < 5; i++)
        CHECK_OK(tc_propose(&c, 2, "after"));
    tc_settle(&c);
    check_same_state(&c, 1, 2);
    check_same_state(&c, 3, 2);
    CHECK_EQ(c.nodes[1].sm_count, 25);
    tc_free(&c);
}

TEST(restart_keeps_vote)
{
    struct tc_cluster c;
    tc_init(&c, 3, 14);
    c.opts.pre_vote = false;
    tc_start(&c, 3);
    tc_settle(&c);
    tc_isolate(&c, 3, true);
    tick_until_campaign(&c, 1); /* 1 campaigns in term 2; 2 votes for it */
    tc_settle(&c);
    CHECK_EQ(tc_status(&c, 2).vote, 1);
    tc_restart(&c, 2);
    CHECK_EQ(tc_status(&c, 2).vote, 1);
    CHECK_EQ(tc_status(&c, 2).term, 2);
    /* A competing candidate in the same term is refused after the restart. */
    struct raft_msg req = {
        .type = RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 2, .index = 99, .log_term = 9};
    CHECK_OK(raft_step(c.nodes[2].r, &req));
    struct raft_ready rd;
    raft_ready(c.nodes[2].r, &rd);
    CHECK_EQ(rd.msgs_len, 1);
    CHECK_EQ(rd.msgs[0].type, RAFT_MSG_VOTE_RESP);
    CHECK(rd.msgs[0].reject);
    raft_advance(c.nodes[2].r, &rd);
    tc_free(&c);
}

TEST(restart_follower_catches_up)
{
    struct tc_cluster c;
    tc_init(&c, 3, 15);
    tc_start(&c, 3);
    CHECK_EQ(tc_elect(&c, 1), 1);
    tc_crash(&c, 3);
    for (int i = 0; i < 30; i++)
        CHECK_OK(tc_propose(&c, 1, "while-down"));
    tc_settle(&c);
    tc_restart(&c, 3);
    tc_tick_all(&c, 3);
    check_same_state(&c, 1, 3);
    CHECK_EQ(c.nodes[3].sm_count, 30);
    tc_free(&c);
}

TEST(restore_rejects_inconsistent_state)
{
    struct prng rng;
    prng_seed(&rng, 1);
    struct raft_options o = {.id = 1, .rng = &rng};
    struct raft *r;
    CHECK_OK(raft_create(&o, &r));
    struct raft_entry es[2] = {{.term = 1, .index = 1}, {.term = 1, .index = 3}};
    struct raft_hard_state hs = {.term = 1, .commit = 1};
    CHECK_EQ(raft_restore(r, &hs, NULL, es, 2), BATON_EINVAL); /* gap */
    es[1].index = 2;
    hs.commit = 5;
    CHECK_EQ(raft_restore(r, &hs, NULL, es, 2), BATON_EINVAL); /* commit beyond the log */
    hs.commit = 1;
    hs.term = 0;
    CHECK_EQ(raft_restore(r, &hs, NULL, es, 2), BATON_EINVAL); /* term below the log's */
    es[0].type = RAFT_ENTRY_CONFIG;
    hs.term = 1;
    CHECK_EQ(raft_restore(r, &hs, NULL, es, 2), BATON_EINVAL); /* config entry undecodable */
    raft_destroy(r);
    o.id = 0;
    CHECK_EQ(raft_create(&o, &r), BATON_EINVAL);
}

struct captured {
    int lines;
    int bad;
};

static void capture(void *ctx, enum log_level level, const char *line, size_t len)
{
    (void)level;
    struct captured *c = ctx;
    c->lines++;
    char buf[1100];
    size_t n = len < sizeof(buf) - 1 ? len : sizeof(buf) - 1;
    memcpy(buf, line, n);
    buf[n] = 0;
    if (!strstr(buf, "mod=raft id=7 term="))
        c->bad++;
}

TEST(log_lines_carry_member_and_term)
{
    struct captured cap = {0};
    struct log_sink sink = {.fn = capture, .ctx = &cap, .min_level = LOG_DEBUG};
    struct prng rng;
    prng_seed(&rng, 3);
    struct raft_options o = {.id = 7, .rng = &rng, .log = &sink, .pre_vote = true};
    struct raft *r;
    CHECK_OK(raft_create(&o, &r));
    struct raft_config conf = {.voters = {7}, .voters_len = 1};
    CHECK_OK(raft_bootstrap(r, &conf));
    for (int i = 0; i < 60; i++) {
        raft_tick(r);
        while (raft_has_ready(r)) {
            struct raft_ready rd;
            raft_ready(r, &rd);
            raft_advance(r, &rd);
            if (rd.persist)
                raft_persisted(r);
        }
    }
    struct raft_status s;
    raft_status(r, &s);
    CHECK_EQ(s.role, RAFT_LEADER);
    CHECK_GE(cap.lines, 4); /* bootstrapped, pre-vote, election, leader */
    CHECK_EQ(cap.bad, 0);
    raft_destroy(r);
}
