/*
 * Regression tests for bugs the simulator (tests/sim) found, driven by hand on one follower:
 * each step is a message from a pretend leader, and every output is inspected.
 */
#include "raft/raft.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

struct follower {
    struct prng rng;
    struct raft *r;
    size_t acks_above; /* APPEND_RESP accepts seen with index > limit */
    uint64_t limit;
    const struct raft_persist *held;
    size_t chunks_seen;
    uint64_t last_chunk_offset;
    bool install_seen;
    uint64_t install_index;
};

static void f_init(struct follower *f)
{
    memset(f, 0, sizeof(*f));
    prng_seed(&f->rng, 7);
    static const struct log_sink sink = {.fn = log_fn_stderr, .min_level = LOG_DEBUG};
    struct raft_options o = {.id = 1,
                             .rng = &f->rng,
                             .pre_vote = true,
                             .check_quorum = true,
                             .log = getenv("RAFT_TEST_LOG") ? &sink : NULL};
    CHECK_OK(raft_create(&o, &f->r));
    struct raft_config conf = {.voters = {1, 2, 3}, .voters_len = 3};
    CHECK_OK(raft_bootstrap(f->r, &conf));
}

/* Takes every ready; a persist batch is held (not acknowledged) until f_persist. */
static void f_drain(struct follower *f)
{
    for (int i = 0; i < 16 && raft_has_ready(f->r); i++) {
        struct raft_ready rd;
        raft_ready(f->r, &rd);
        for (size_t k = 0; k < rd.msgs_len; k++)
            if (rd.msgs[k].type == RAFT_MSG_APPEND_RESP && !rd.msgs[k].reject &&
                rd.msgs[k].index > f->limit)
                f->acks_above++;
        if (rd.persist) {
            CHECK(f->held == NULL);
            f->held = rd.persist;
            for (size_t k = 0; k < rd.persist->chunks_len; k++) {
                f->chunks_seen++;
                f->last_chunk_offset = rd.persist->chunks[k].offset + rd.persist->chunks[k].len;
            }
            if (rd.persist->snapshot) {
                f->install_seen = true;
                f->install_index = rd.persist->snapshot->index;
            }
        }
        raft_advance(f->r, &rd);
    }
}

static void f_persist(struct follower *f)
{
    if (f->held) {
        f->held = NULL;
        raft_persisted(f->r);
    }
    f_drain(f);
}

static void f_append(struct follower *f, uint64_t prev, uint64_t prev_term, uint64_t n,
                     uint64_t commit)
{
    struct raft_entry es[8];
    for (uint64_t i = 0; i < n; i++)
        es[i] = (struct raft_entry){
            .term = 2, .index = prev + 1 + i, .data = (const uint8_t *)"e", .len = 1};
    struct raft_msg m = {.type = RAFT_MSG_APPEND,
                         .from = 2,
                         .to = 1,
                         .term = 2,
                         .index = prev,
                         .log_term = prev_term,
                         .commit = commit,
                         .entries_len = (uint32_t)n,
                         .entries = es};
    CHECK_OK(raft_step(f->r, &m));
    f_drain(f);
}

static void f_chunk_term(struct follower *f, uint64_t index, uint64_t term, uint64_t offset,
                         uint32_t len, bool last)
{
    static const uint8_t bytes[64];
    struct raft_config conf = {.voters = {1, 2, 3}, .voters_len = 3};
    struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT,
                         .from = 2,
                         .to = 1,
                         .term = term,
                         .index = index,
                         .log_term = term,
                         .offset = offset,
                         .data = bytes,
                         .data_len = len,
                         .last = last,
                         .config = &conf};
    CHECK_OK(raft_step(f->r, &m));
    f_drain(f);
}

static void f_chunk(struct follower *f, uint64_t index, uint64_t offset, uint32_t len, bool last)
{
    f_chunk_term(f, index, 2, offset, len, last);
}

/* Simulator seed 681: an ack waiting for its entries' batch must not survive a snapshot
 * install that removes those entries from the log. */
TEST(regress_ack_dropped_when_snapshot_resets_log)
{
    struct follower f;
    f_init(&f);
    f_drain(&f);
    f_persist(&f);
    f_append(&f, 1, 1, 1, 1); /* entry 2: batch in flight, held */
    CHECK(f.held != NULL);
    f_append(&f, 2, 2, 1, 1); /* entry 3: its ack waits for the next batch */
    f.limit = 2;
    /* A snapshot at 2 from a later term (our entry 2 conflicts with it) resets the log: entry 3
     * is gone. */
    f_chunk_term(&f, 2, 3, 0, 10, true);
    for (int i = 0; i < 4; i++)
        f_persist(&f);
    CHECK(f.install_seen);
    CHECK_EQ(f.install_index, 2);
    CHECK_EQ(f.acks_above, 0); /* nobody was told entry 3 is durable */
    struct raft_status s;
    raft_status(f.r, &s);
    CHECK_EQ(s.last_index, 2);
    raft_destroy(f.r);
}

/* Simulator seed 720: the last chunk of an installed snapshot stays with the install even if
 * a newer snapshot's first chunk arrives before the batch is formed. */
TEST(regress_install_keeps_its_last_chunk)
{
    struct follower f;
    f_init(&f);
    f_drain(&f);
    f_persist(&f);
    f_chunk(&f, 20, 0, 32, false); /* batch with chunk 0 of snapshot 20: held */
    CHECK(f.held != NULL);
    f_chunk(&f, 20, 32, 16, true); /* last chunk: install pending behind the held batch */
    f_chunk(&f, 30, 0, 32, false); /* a newer snapshot: must not disturb the pending install */
    f_persist(&f);
    CHECK(f.install_seen);
    CHECK_EQ(f.install_index, 20);
    CHECK_EQ(f.chunks_seen, 2);
    CHECK_EQ(f.last_chunk_offset, 48); /* the staging file is complete: 32 + 16 bytes */
    f_persist(&f);
    raft_destroy(f.r);
}

/* Simulator seed 5265: a follower whose log holds the snapshot's (index, term) must not install
 * it: that would drop later entries it acknowledged. It only learns the commit index. */
TEST(regress_snapshot_within_log_keeps_acknowledged_entries)
{
    struct follower f;
    f_init(&f);
    f_drain(&f);
    f_persist(&f);
    f_append(&f, 1, 1, 4, 1); /* entries 2..5 of term 2, commit stays 1 */
    f_persist(&f);
    f.limit = 0;
    f_chunk(&f, 3, 0, 10, true); /* a stale snapshot at 3 (term 2) */
    f_persist(&f);
    CHECK(!f.install_seen);
    CHECK_EQ(f.chunks_seen, 0);
    struct raft_status s;
    raft_status(f.r, &s);
    CHECK_EQ(s.last_index, 5);
    CHECK_EQ(s.commit, 3);
    CHECK_GE(f.acks_above, 1); /* acknowledged at its commit index */
    raft_destroy(f.r);
}
