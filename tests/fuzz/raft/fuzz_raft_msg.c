/*
 * libFuzzer target for raft's message decoder (the bytes a peer sends over TCP), and for what
 * raft_step does with whatever decodes: malformed input must give BATON_EPROTO, never a crash,
 * and an accepted message must re-encode stably and step into a member (a follower or a
 * leader) without tripping an assertion.
 */
#include "raft/raft.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void drain(struct raft *r)
{
    for (int i = 0; i < 8 && raft_has_ready(r); i++) {
        struct raft_ready rd;
        raft_ready(r, &rd);
        raft_advance(r, &rd);
        if (rd.persist)
            raft_persisted(r);
    }
}

/* Makes r (member 1 of {1,2,3}) the leader of term 2 by answering its elections by hand. */
static void make_leader(struct raft *r)
{
    for (int i = 0; i < 100; i++) {
        struct raft_status s;
        raft_status(r, &s);
        if (s.role != RAFT_FOLLOWER)
            break;
        raft_tick(r);
        drain(r);
    }
    struct raft_msg pre = {.type = RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 2};
    if (raft_step(r, &pre) != 0)
        abort();
    drain(r);
    struct raft_msg vote = {.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 2};
    if (raft_step(r, &vote) != 0)
        abort();
    drain(r);
    struct raft_status s;
    raft_status(r, &s);
    if (s.role != RAFT_LEADER)
        abort();
    if (raft_propose(r, "x", 1, NULL) != 0)
        abort();
    drain(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct arena a;
    arena_init(&a, 4096);
    struct raft_msg m;
    int rc = raft_msg_decode(data, size, &m, &a);
    if (rc != 0 && rc != BATON_EPROTO)
        abort();
    if (rc == 0) {
        /* Re-encoding is stable: encode, decode, encode gives the same bytes. (The input itself
         * may use over-long varints, which decode fine.) */
        struct buf b1 = {0}, b2 = {0};
        struct raft_msg m2;
        if (raft_msg_encode(&m, &b1) != 0 || raft_msg_decode(b1.data, b1.len, &m2, &a) != 0 ||
            raft_msg_encode(&m2, &b2) != 0 || b1.len != b2.len ||
            memcmp(b1.data, b2.data, b1.len) != 0)
            abort();
        buf_free(&b1);
        buf_free(&b2);
        /* Step it into a follower of a 3-member cluster. */
        struct prng rng;
        prng_seed(&rng, 1);
        struct raft_options o = {.id = 1, .rng = &rng, .pre_vote = true, .check_quorum = true};
        struct raft *r;
        struct raft_config conf = {.voters = {1, 2, 3}, .voters_len = 3};
        if (raft_create(&o, &r) == 0) {
            if (raft_bootstrap(r, &conf) != 0)
                abort();
            drain(r);
            /* Odd sizes meet a leader (with progress, reads and snapshots in play), even
             * sizes a follower. */
            if (size % 2)
                make_leader(r);
            m.to = 1;
            if (m.from == 1)
                m.from = 2;
            rc = raft_step(r, &m);
            if (rc != 0 && rc != BATON_EPROTO && rc != BATON_EINVAL)
                abort();
            drain(r);
            raft_tick(r);
            drain(r);
            raft_destroy(r);
        }
    }
    struct raft_config c;
    rc = raft_config_decode(data, size, &c);
    if (rc != 0 && rc != BATON_EPROTO)
        abort();
    arena_free(&a);
    return 0;
}
