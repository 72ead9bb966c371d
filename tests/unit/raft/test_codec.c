/* raft message and configuration encoding: round trips and strict rejection of bad input. */
#include "raft/raft.h"
#include "test.h"

#include <string.h>

static struct raft_msg sample(struct raft_entry *es, struct raft_config *conf)
{
    static const char *payloads[] = {"", "x", "hello world"};
    for (int i = 0; i < 3; i++)
        es[i] = (struct raft_entry){.term = 5 + (uint64_t)(i / 2),
                                    .index = 101 + (uint64_t)i,
                                    .type = (uint8_t)(i == 0 ? RAFT_ENTRY_NOOP : 0),
                                    .len = (uint32_t)strlen(payloads[i]),
                                    .data = (const uint8_t *)payloads[i]};
    memset(conf, 0, sizeof(*conf));
    conf->voters[0] = 1, conf->voters[1] = 2, conf->voters[2] = 300;
    conf->voters_len = 3;
    conf->voters_old[0] = 1, conf->voters_old_len = 1;
    conf->learners[0] = 9, conf->learners_len = 1;
    conf->auto_leave = true;
    return (struct raft_msg){.type = RAFT_MSG_APPEND,
                             .reject = true,
                             .transfer = true,
                             .last = true,
                             .from = 1,
                             .to = 2,
                             .term = 7,
                             .index = 100,
                             .log_term = 4,
                             .commit = 99,
                             .hint_index = 3,
                             .hint_term = 2,
                             .context = UINT64_MAX,
                             .offset = 1ull << 40,
                             .entries_len = 3,
                             .entries = es,
                             .data_len = 4,
                             .data = (const uint8_t *)"abcd",
                             .config = conf};
}

TEST(codec_roundtrip)
{
    struct raft_entry es[3];
    struct raft_config conf;
    struct raft_msg m = sample(es, &conf);
    struct buf b = {0};
    CHECK_OK(raft_msg_encode(&m, &b));
    struct arena a;
    arena_init(&a, 4096);
    struct raft_msg d;
    CHECK_OK(raft_msg_decode(b.data, b.len, &d, &a));
    CHECK_EQ(d.type, m.type);
    CHECK(d.reject && d.transfer && d.last);
    CHECK_EQ(d.from, 1);
    CHECK_EQ(d.to, 2);
    CHECK_EQ(d.term, 7);
    CHECK_EQ(d.index, 100);
    CHECK_EQ(d.log_term, 4);
    CHECK_EQ(d.commit, 99);
    CHECK_EQ(d.hint_index, 3);
    CHECK_EQ(d.hint_term, 2);
    CHECK_EQ_U64(d.context, UINT64_MAX);
    CHECK_EQ_U64(d.offset, 1ull << 40);
    CHECK_EQ(d.entries_len, 3);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(d.entries[i].term, es[i].term);
        CHECK_EQ(d.entries[i].index, es[i].index);
        CHECK_EQ(d.entries[i].type, es[i].type);
        CHECK_MEM(d.entries[i].data, d.entries[i].len, es[i].data, es[i].len);
    }
    CHECK_MEM(d.data, d.data_len, "abcd", 4);
    CHECK(d.config != NULL);
    CHECK_EQ(d.config->voters_len, 3);
    CHECK_EQ(d.config->voters[2], 300);
    CHECK_EQ(d.config->voters_old_len, 1);
    CHECK_EQ(d.config->learners[0], 9);
    CHECK(d.config->auto_leave);
    /* Every strict prefix is malformed, and so is trailing garbage. */
    for (size_t n = 0; n < b.len; n++) {
        arena_reset(&a);
        CHECK_EQ(raft_msg_decode(b.data, n, &d, &a), BATON_EPROTO);
    }
    CHECK_OK(buf_append(&b, "z", 1));
    CHECK_EQ(raft_msg_decode(b.data, b.len, &d, &a), BATON_EPROTO);
    buf_free(&b);
    arena_free(&a);
}

TEST(codec_rejects_bad_fields)
{
    struct raft_entry es[3];
    struct raft_config conf;
    struct raft_msg m = sample(es, &conf);
    struct arena a;
    arena_init(&a, 4096);
    struct raft_msg d;
    struct buf b = {0};
    /* Mutate one byte at a time: the decoder must never crash, and whatever it accepts must
     * re-encode to something it accepts again. */
    CHECK_OK(raft_msg_encode(&m, &b));
    for (size_t i = 0; i < b.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b.data[i] ^= (uint8_t)(1u << bit);
            arena_reset(&a);
            int rc = raft_msg_decode(b.data, b.len, &d, &a);
            CHECK(rc == 0 || rc == BATON_EPROTO);
            if (rc == 0) {
                struct buf b2 = {0};
                CHECK_OK(raft_msg_encode(&d, &b2));
                struct raft_msg d2;
                CHECK_OK(raft_msg_decode(b2.data, b2.len, &d2, &a));
                buf_free(&b2);
            }
            b.data[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Specific rejections: version, type, entry term above message term, zero ids. */
    uint8_t bad_version[] = {2, 1, 0};
    CHECK_EQ(raft_msg_decode(bad_version, sizeof(bad_version), &d, &a), BATON_EPROTO);
    m.config = NULL;
    m.term = 5; /* entries of term 6 are newer than the message */
    buf_clear(&b);
    CHECK_OK(raft_msg_encode(&m, &b));
    CHECK_EQ(raft_msg_decode(b.data, b.len, &d, &a), BATON_EPROTO);
    m.term = 7;
    m.from = 0;
    buf_clear(&b);
    CHECK_OK(raft_msg_encode(&m, &b));
    CHECK_EQ(raft_msg_decode(b.data, b.len, &d, &a), BATON_EPROTO);
    /* A huge entry count with no bytes behind it is refused before any allocation. */
    uint8_t huge[] = {1, 1, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f};
    CHECK_EQ(raft_msg_decode(huge, sizeof(huge), &d, &a), BATON_EPROTO);
    buf_free(&b);
    arena_free(&a);
}

TEST(config_codec_validation)
{
    struct raft_config c = {0};
    c.voters[0] = 1, c.voters[1] = 2, c.voters_len = 2;
    c.learners[0] = 3, c.learners_len = 1;
    struct buf b = {0};
    CHECK_OK(raft_config_encode(&c, &b));
    struct raft_config d;
    CHECK_OK(raft_config_decode(b.data, b.len, &d));
    CHECK_EQ(d.voters_len, 2);
    CHECK_EQ(d.learners[0], 3);
    CHECK(raft_config_is_voter(&d, 2));
    CHECK(!raft_config_is_voter(&d, 3));
    CHECK(raft_config_is_learner(&d, 3));
    /* Duplicate voter, voter that is also a learner, zero id, too many ids, bad flag. */
    uint8_t dup[] = {2, 1, 1, 0, 0, 0};
    CHECK_EQ(raft_config_decode(dup, sizeof(dup), &d), BATON_EPROTO);
    uint8_t both[] = {1, 1, 0, 1, 1, 0};
    CHECK_EQ(raft_config_decode(both, sizeof(both), &d), BATON_EPROTO);
    uint8_t zero[] = {1, 0, 0, 0, 0};
    CHECK_EQ(raft_config_decode(zero, sizeof(zero), &d), BATON_EPROTO);
    uint8_t many[] = {17, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 0, 0, 0};
    CHECK_EQ(raft_config_decode(many, sizeof(many), &d), BATON_EPROTO);
    uint8_t flag[] = {1, 1, 0, 0, 2};
    CHECK_EQ(raft_config_decode(flag, sizeof(flag), &d), BATON_EPROTO);
    CHECK_EQ(raft_config_decode(b.data, b.len - 1, &d), BATON_EPROTO);
    buf_free(&b);
}
