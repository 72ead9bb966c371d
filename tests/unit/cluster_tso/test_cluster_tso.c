/*
 * cluster_tso under virtual time: the TSO across simulated failovers with skewed clocks that
 * step back, logical overflow, window exhaustion; id chunks across failovers; the JSON
 * validator on good and bad inputs; version parsing and order.
 */
#include "cluster/cluster_tso.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- TSO ----------------------------------------------------------------------------------- */

/* The replicated bound: what a compare-and-set on /baton/tso would see. */
struct fake_store {
    uint64_t tso; /* 0: absent */
    uint64_t ids;
};

/* Runs the window protocol for t at now: propose (if due), "apply" it against the store. */
static bool persist_window(struct tso *t, struct fake_store *st, uint64_t now)
{
    uint64_t limit;
    if (!tso_want_window(t, now, st->tso, &limit))
        return false;
    uint64_t compared = st->tso;
    CHECK(limit > compared);
    st->tso = limit;
    tso_window_saved(t, t->term, compared, limit);
    return true;
}

TEST(tso_first_window_starts_above_the_stored_bound)
{
    struct tso t;
    tso_init(&t);
    uint64_t first;
    CHECK_EQ(tso_alloc(&t, 1000, 1, &first), BATON_ENOTLEADER);
    tso_lead(&t, 7);
    CHECK_EQ(tso_alloc(&t, 1000, 1, &first), BATON_EBUSY); /* no window yet */
    struct fake_store st = {.tso = 50000};                 /* a bound far ahead of our clock */
    CHECK(persist_window(&t, &st, 1000));
    CHECK_EQ_U64(st.tso, 50001 + TSO_WINDOW_MS);
    CHECK_OK(tso_alloc(&t, 1000, 1, &first));
    CHECK_EQ_U64(first, tso_compose(50001, 0));
    CHECK_OK(tso_alloc(&t, 1000, 5, &first));
    CHECK_EQ_U64(first, tso_compose(50001, 1));
    /* The clock catches up: values jump to now with logical 0. */
    CHECK_OK(tso_alloc(&t, 52000, 1, &first));
    CHECK_EQ_U64(first, tso_compose(52000, 0));
    CHECK_EQ(tso_alloc(&t, 52000, 0, &first), BATON_EINVAL);
    CHECK_EQ(tso_alloc(&t, 52000, TSO_COUNT_MAX + 1, &first), BATON_EINVAL);
}

TEST(tso_logical_overflow_moves_to_the_next_millisecond)
{
    struct tso t;
    tso_init(&t);
    tso_lead(&t, 1);
    struct fake_store st = {0};
    CHECK(persist_window(&t, &st, 100000));
    uint64_t a, b, c;
    CHECK_OK(tso_alloc(&t, 100000, 10, &a));
    CHECK_OK(tso_alloc(&t, 100000, TSO_COUNT_MAX, &b)); /* crosses into 100001 */
    CHECK_EQ_U64(b, a + 10);
    CHECK_EQ_U64(tso_physical(b + TSO_COUNT_MAX - 1), 100001);
    CHECK_OK(tso_alloc(&t, 100000, 1, &c)); /* the clock has not moved: logical goes on */
    CHECK_EQ_U64(c, b + TSO_COUNT_MAX);
}

TEST(tso_window_exhaustion_waits_then_extends)
{
    struct tso t;
    tso_init(&t);
    tso_lead(&t, 3);
    struct fake_store st = {0};
    uint64_t now = 1000000;
    CHECK(persist_window(&t, &st, now));
    uint64_t limit = st.tso, first = 0, last = 0;
    /* A frozen clock: every range comes from the logical part, until the window ends. */
    int served = 0;
    for (int i = 0; i < 100000; i++) {
        int rc = tso_alloc(&t, now, TSO_COUNT_MAX, &first);
        if (rc == BATON_EBUSY)
            break;
        CHECK_OK(rc);
        CHECK(first > last);
        last = first + TSO_COUNT_MAX - 1;
        served++;
    }
    CHECK_EQ(served, (int)(limit - now + 1)); /* one full millisecond per request */
    CHECK_EQ_U64(tso_physical(last), limit);
    CHECK(tso_window_due(&t, now));
    CHECK(persist_window(&t, &st, now));
    CHECK_EQ_U64(st.tso, limit + TSO_WINDOW_MS); /* from the last value, not the clock */
    CHECK_OK(tso_alloc(&t, now, 1, &first));
    CHECK_EQ_U64(first, last + 1);
}

TEST(tso_extends_ahead_of_time)
{
    struct tso t;
    tso_init(&t);
    tso_lead(&t, 3);
    struct fake_store st = {0};
    CHECK(persist_window(&t, &st, 5000));
    CHECK(!tso_window_due(&t, 5000 + TSO_WINDOW_MS - TSO_EXTEND_BELOW_MS));
    CHECK(tso_window_due(&t, 5000 + TSO_WINDOW_MS - TSO_EXTEND_BELOW_MS + 1));
    /* One proposal at a time. */
    uint64_t limit;
    CHECK(tso_want_window(&t, 7500, st.tso, &limit));
    CHECK(!tso_want_window(&t, 7500, st.tso, &limit));
    tso_window_failed(&t, 3);
    CHECK(tso_want_window(&t, 7500, st.tso, &limit));
    tso_window_saved(&t, 3, st.tso, limit);
    CHECK_EQ_U64(t.limit_ms, 7500 + TSO_WINDOW_MS);
}

TEST(tso_clock_step_back_never_lowers_values)
{
    struct tso t;
    tso_init(&t);
    tso_lead(&t, 1);
    struct fake_store st = {0};
    CHECK(persist_window(&t, &st, 10000000));
    uint64_t a, b;
    CHECK_OK(tso_alloc(&t, 10000000, 1, &a));
    CHECK_OK(tso_alloc(&t, 9990000, 1, &b)); /* ten seconds back */
    CHECK_EQ_U64(b, a + 1);
    /* Extension is measured from the last value, so the window keeps moving forward. */
    for (int i = 0; i < 5000; i++) {
        persist_window(&t, &st, 9990000);
        CHECK_OK(tso_alloc(&t, 9990000, TSO_COUNT_MAX, &b));
        CHECK(b > a);
        a = b;
    }
}

/* Three members with skewed clocks that wander and step back; leadership moves at random.
 * Window proposals are compare-and-sets that apply some steps later, in proposal order (the
 * log), possibly after the proposer lost its leadership; the store decides by the compare. */
struct pending_cas {
    int member;
    uint64_t term, compared, limit;
    int apply_at;
};

TEST(tso_monotonic_across_simulated_failovers)
{
    struct prng r;
    prng_seed(&r, 20261128);
    struct tso m[3];
    int64_t skew[3] = {0, -400, 900};
    for (int i = 0; i < 3; i++)
        tso_init(&m[i]);
    struct fake_store st = {0};
    struct pending_cas q[64];
    int q_len = 0;
    uint64_t real = 1700000000000ull, max_served = 0, term = 0;
    int leader = -1;
    uint64_t served = 0, waits = 0, lost = 0;
    for (int step = 0; step < 200000; step++) {
        real += prng_below(&r, 3);
        /* Apply the proposals whose time came, in order. */
        while (q_len > 0 && q[0].apply_at <= step) {
            struct pending_cas *c = &q[0];
            if (st.tso == c->compared) {
                st.tso = c->limit;
                tso_window_saved(&m[c->member], c->term, c->compared, c->limit);
            } else {
                tso_window_failed(&m[c->member], c->term);
                lost++;
            }
            memmove(q, q + 1, (size_t)--q_len * sizeof(q[0]));
        }
        if (leader < 0 || prng_chance(&r, 5000)) {
            if (leader >= 0)
                tso_follow(&m[leader]);
            leader = (int)prng_below(&r, 3);
            tso_lead(&m[leader], ++term);
        }
        if (prng_chance(&r, 200)) /* a clock steps back by up to 5 s, or forward by 1 s */
            skew[prng_below(&r, 3)] += (int64_t)prng_below(&r, 6000) - 5000;
        uint64_t now = (uint64_t)((int64_t)real + skew[leader]);
        uint64_t limit;
        /* The leader reads its local store, which may lag behind proposals in flight. */
        if (q_len < 64 && tso_want_window(&m[leader], now, st.tso, &limit)) {
            q[q_len++] =
                (struct pending_cas){leader, term, st.tso, limit, step + (int)prng_below(&r, 40)};
            for (int k = q_len - 1; k > 0 && q[k].apply_at < q[k - 1].apply_at; k--)
                q[k].apply_at = q[k - 1].apply_at; /* the log applies in order */
        }
        uint64_t first;
        uint32_t count = 1 + (uint32_t)prng_below(&r, prng_chance(&r, 1000) ? TSO_COUNT_MAX : 64);
        int rc = tso_alloc(&m[leader], now, count, &first);
        if (rc == BATON_EBUSY) {
            waits++;
            continue;
        }
        CHECK_OK(rc);
        if (first <= max_served)
            test_fail(__FILE__, __LINE__, "step %d: %llx not above %llx", step,
                      (unsigned long long)first, (unsigned long long)max_served);
        /* Never above the persisted bound. */
        CHECK(tso_physical(first + count - 1) <= st.tso);
        max_served = first + count - 1;
        served++;
    }
    test_log("%llu ranges served, %llu waits, %llu terms, %llu lost compares",
             (unsigned long long)served, (unsigned long long)waits, (unsigned long long)term,
             (unsigned long long)lost);
    CHECK(served > 100000);
    CHECK(waits > 0);
    CHECK(lost > 0); /* the races this test is about did happen */
}

/* ---- Ids ------------------------------------------------------------------------------------ */

static bool persist_chunk(struct idalloc *d, struct fake_store *st)
{
    uint64_t from, to;
    if (!ids_want_chunk(d, st->ids, &from, &to))
        return false;
    CHECK(from == (st->ids ? st->ids : IDS_FIRST));
    st->ids = to;
    ids_chunk_saved(d, d->term, from, to);
    return true;
}

TEST(ids_chunks_never_repeat_across_failovers)
{
    struct idalloc a, b;
    ids_init(&a);
    ids_init(&b);
    a.chunk = b.chunk = 1000;
    struct fake_store st = {0};
    uint64_t first, next_min = IDS_FIRST;
    ids_lead(&a, 1);
    CHECK_EQ(ids_alloc(&a, 1, &first), BATON_EBUSY);
    CHECK(persist_chunk(&a, &st));
    CHECK_OK(ids_alloc(&a, 10, &first));
    CHECK_EQ_U64(first, IDS_FIRST);
    next_min = first + 10;
    /* Failover: b starts at the stored counter; a's remaining ids are skipped. */
    ids_follow(&a);
    ids_lead(&b, 2);
    CHECK(persist_chunk(&b, &st));
    CHECK_OK(ids_alloc(&b, 5, &first));
    CHECK_EQ_U64(first, IDS_FIRST + 1000);
    CHECK(first >= next_min);
    /* A request larger than a chunk: the next chunk covers it. */
    CHECK_EQ(ids_alloc(&b, 5000, &first), BATON_EBUSY);
    CHECK(persist_chunk(&b, &st));
    CHECK_OK(ids_alloc(&b, 5000, &first));
    CHECK_EQ_U64(first, IDS_FIRST + 1005); /* contiguous with what was left */
    CHECK_EQ(ids_alloc(&b, 0, &first), BATON_EINVAL);
    CHECK_EQ(ids_alloc(&b, IDS_COUNT_MAX + 1, &first), BATON_EINVAL);
    /* Ahead of time: below a quarter chunk left, another chunk is due. */
    while (b.end - b.next >= b.chunk / 4)
        CHECK_OK(ids_alloc(&b, 1, &first));
    CHECK(ids_chunk_due(&b));
    /* Someone else moved the counter meanwhile: the new chunk starts there. */
    st.ids += 77;
    uint64_t expect = st.ids;
    CHECK(persist_chunk(&b, &st));
    CHECK_EQ_U64(b.next, expect);
    /* Near the end of the space nothing more is reserved. */
    CHECK(ids_exhausted(UINT64_MAX - 10, 1000));
    CHECK(!ids_exhausted(1, 1000));
}

TEST(parse_stored_counters)
{
    uint64_t v;
    CHECK_OK(cluster_parse_u64((const uint8_t *)"0", 1, &v));
    CHECK_EQ_U64(v, 0);
    CHECK_OK(cluster_parse_u64((const uint8_t *)"18446744073709551615", 20, &v));
    CHECK_EQ_U64(v, UINT64_MAX);
    CHECK_EQ(cluster_parse_u64((const uint8_t *)"18446744073709551616", 20, &v), BATON_ECORRUPT);
    CHECK_EQ(cluster_parse_u64((const uint8_t *)"01", 2, &v), BATON_ECORRUPT);
    CHECK_EQ(cluster_parse_u64((const uint8_t *)"-1", 2, &v), BATON_ECORRUPT);
    CHECK_EQ(cluster_parse_u64((const uint8_t *)"", 0, &v), BATON_ECORRUPT);
    CHECK_EQ(cluster_parse_u64((const uint8_t *)"12a", 3, &v), BATON_ECORRUPT);
}

/* ---- JSON ------------------------------------------------------------------------------------ */

static int json(const char *s, char *err, size_t len)
{
    return config_json_validate(s, strlen(s), false, err, len);
}

TEST(json_good)
{
    static const char *good[] = {
        "{}",
        "[]",
        "0",
        "-0",
        "1.5e-3",
        "-12.25E+8",
        "true",
        "false",
        "null",
        "\"\"",
        " { \"a\" : [ 1 , 2 , { \"b\" : null } ] , \"c\" : \"\\\"\\\\\\/\\b\\f\\n\\r\\t\" } ",
        "\"\\u00e9\\uD83D\\uDE00\"",
        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
        "{\"a\":{\"a\":{\"a\":{}}}}",
        "[[],[[]],{}]",
        "\t\r\n[1]\n",
        "{\"dup\":1,\"dup\":2}",
    };
    char err[200];
    for (size_t i = 0; i < BATON_ARRAY_LEN(good); i++) {
        int rc = json(good[i], err, sizeof(err));
        if (rc)
            test_fail(__FILE__, __LINE__, "%s: %s", good[i], err);
    }
    CHECK_OK(config_json_validate("{\"x\":1}", 7, true, err, sizeof(err)));
}

TEST(json_bad_with_reasons)
{
    static const struct {
        const char *in, *why;
    } bad[] = {
        {"", "unexpected end of input at offset 0"},
        {"   ", "unexpected end of input at offset 3"},
        {"{", "expected a string key at offset 1"},
        {"{\"a\"}", "expected ':' at offset 4"},
        {"{\"a\":}", "unexpected character at offset 5"},
        {"{\"a\":1,}", "expected a string key at offset 7"},
        {"[1,]", "unexpected character at offset 3"},
        {"[1 2]", "expected ',' or ']' at offset 3"},
        {"{a:1}", "expected a string key at offset 1"},
        {"01", "leading zero in a number at offset 1"},
        {"1.", "a fraction needs a digit at offset 2"},
        {"1e", "an exponent needs a digit at offset 2"},
        {"-", "a number needs a digit at offset 1"},
        {"+1", "unexpected character at offset 0"},
        {".5", "unexpected character at offset 0"},
        {"tru", "unexpected character at offset 0"},
        {"nul", "unexpected character at offset 0"},
        {"NaN", "unexpected character at offset 0"},
        {"\"abc", "unterminated string at offset 4"},
        {"\"a\nb\"", "control character 0x0A in a string at offset 2"},
        {"\"\\x\"", "invalid escape '\\x' at offset 2"},
        {"\"\\u12\"", "truncated \\u escape at offset 3"},
        {"\"\\u12G4\"", "bad hex digit in \\u escape at offset 5"},
        {"\"\\u12", "truncated \\u escape at offset 3"},
        {"\"\\uDC00\"", "lone low surrogate \\uDC00 at offset 7"},
        {"\"\\uD800\"", "high surrogate \\uD800 without a low one at offset 7"},
        {"\"\\uD800\\u0041\"", "high surrogate \\uD800 followed by \\u0041 at offset 13"},
        {"\"\xc0\xaf\"", "invalid UTF-8 byte 0xC0 at offset 1"},
        {"\"\xe0\x80\xaf\"",
         "invalid UTF-8 sequence (overlong, surrogate or out of range) at offset 1"},
        {"\"\xed\xa0\x80\"",
         "invalid UTF-8 sequence (overlong, surrogate or out of range) at offset 1"},
        {"\"\xf4\x90\x80\x80\"",
         "invalid UTF-8 sequence (overlong, surrogate or out of range) at offset 1"},
        {"\"\xe2\x82\"", "invalid UTF-8 sequence at offset 1"},
        {"\"\xff\"", "invalid UTF-8 byte 0xFF at offset 1"},
        {"{} x", "trailing data after the JSON value at offset 3"},
        {"[1]]", "trailing data after the JSON value at offset 3"},
    };
    char err[200];
    for (size_t i = 0; i < BATON_ARRAY_LEN(bad); i++) {
        int rc = json(bad[i].in, err, sizeof(err));
        if (rc != BATON_EINVAL || strcmp(err, bad[i].why) != 0)
            test_fail(__FILE__, __LINE__, "input %zu: rc %d \"%s\", want \"%s\"", i, rc, err,
                      bad[i].why);
    }
    /* A NUL byte inside a string is a control character too (the length is explicit). */
    CHECK_EQ(config_json_validate("\"a\0b\"", 5, false, err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "control character 0x00 in a string at offset 2");
    CHECK_EQ(config_json_validate("[1]", 3, true, err, sizeof(err)), BATON_EINVAL);
    CHECK_STR(err, "the configuration must be a JSON object at offset 0");
}

TEST(json_depth_and_size_bounds)
{
    char buf[300], err[200];
    /* 64 nested arrays are fine, 65 are not. */
    for (int depth = 64; depth <= 65; depth++) {
        memset(buf, '[', (size_t)depth);
        memset(buf + depth, ']', (size_t)depth);
        buf[2 * depth] = 0;
        int rc = json(buf, err, sizeof(err));
        if (depth == 64) {
            CHECK_OK(rc);
        } else {
            CHECK_EQ(rc, BATON_EINVAL);
            CHECK_STR(err, "nesting deeper than 64 at offset 64");
        }
    }
    /* A hostile nesting far deeper than the bound stops at the bound (no deep recursion). */
    size_t n = 1u << 20;
    char *deep = malloc(n);
    memset(deep, '[', n);
    CHECK_EQ(config_json_validate(deep, n, false, err, sizeof(err)), BATON_EINVAL);
    CHECK_EQ(config_json_validate(deep, n + 1, false, err, sizeof(err)), BATON_ETOOBIG);
    CHECK_STR(err, "1048577 bytes, more than the limit of 1048576");
    free(deep);
    /* Exactly 1 MiB of a valid object passes. */
    char *big = malloc(n);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    CHECK_OK(config_json_validate(big, n, true, err, sizeof(err)));
    free(big);
    /* err_len 0: no text, same answer. */
    CHECK_EQ(config_json_validate("[", 1, false, NULL, 0), BATON_EINVAL);
}

/* ---- Versions ---------------------------------------------------------------------------- */

TEST(versions_parse_and_order)
{
    struct cluster_version a, b;
    CHECK_OK(cluster_version_parse("1.2.3", 5, &a));
    CHECK_EQ(a.major, 1);
    CHECK_EQ(a.minor, 2);
    CHECK_EQ(a.patch, 3);
    CHECK_OK(cluster_version_parse("0.10.0", 6, &b));
    CHECK(cluster_version_cmp(&a, &b) > 0);
    CHECK_OK(cluster_version_parse("1.10.0", 6, &b));
    CHECK(cluster_version_cmp(&a, &b) < 0); /* numeric, not text order */
    CHECK_OK(cluster_version_parse("1.2.3", 5, &b));
    CHECK_EQ(cluster_version_cmp(&a, &b), 0);
    CHECK_OK(cluster_version_parse("999999999.0.0", 13, &b));
    static const char *bad[] = {
        "",     "1",      "1.2",       "1.2.3.4", "01.2.3",         "1.2.x",
        "1..3", "-1.2.3", "1.2.3-rc1", " 1.2.3",  "1000000000.0.0", "1.2.3 "};
    for (size_t i = 0; i < BATON_ARRAY_LEN(bad); i++)
        if (cluster_version_parse(bad[i], strlen(bad[i]), &b) != BATON_EINVAL)
            test_fail(__FILE__, __LINE__, "\"%s\" parsed", bad[i]);
    char text[CLUSTER_VERSION_TEXT_MAX];
    cluster_version_format(&a, text, sizeof(text));
    CHECK_STR(text, "1.2.3");
}

TEST(versions_minimum)
{
    const char *v[] = {"1.4.0", "1.10.2", "bogus", "1.3.9", "2.0.0"};
    size_t lens[5];
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(v[i]);
    struct cluster_version m;
    size_t invalid = 0;
    CHECK_OK(cluster_version_min(v, lens, 5, &m, &invalid));
    CHECK_EQ(invalid, 1);
    char text[CLUSTER_VERSION_TEXT_MAX];
    cluster_version_format(&m, text, sizeof(text));
    CHECK_STR(text, "1.3.9");
    CHECK_EQ(cluster_version_min(v + 2, lens + 2, 1, &m, NULL), BATON_ENOTFOUND);
    CHECK_EQ(cluster_version_min(NULL, NULL, 0, &m, NULL), BATON_ENOTFOUND);
}
