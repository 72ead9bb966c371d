/*
 * Unit tests for the chaos checkers on hand-made histories: valid ones pass; a stale read, a
 * lost write and a bad CAS each fail; indeterminate writes are accepted whether they took
 * effect or not; the list-append, watch and fencing checkers catch what they are for; bad
 * history lines are errors with a reason.
 */
#include "check.h"
#include "test.h"

#include <stdio.h>
#include <string.h>

/* Builds a history from JSON lines; fails the test on a parse error. */
static void load(struct chaos_history *h, const char *const *lines, size_t n)
{
    chaos_history_init(h);
    for (size_t i = 0; i < n; i++) {
        char err[200];
        int rc = chaos_history_add_line(h, lines[i], strlen(lines[i]), err, sizeof(err));
        if (rc)
            test_fail(__FILE__, __LINE__, "line %zu: %s", i + 1, err);
    }
}

static size_t check(const char *const *lines, size_t n, struct chaos_report *rep)
{
    struct chaos_history h;
    load(&h, lines, n);
    memset(rep, 0, sizeof(*rep));
    CHECK_OK(chaos_check_all(&h, 1000000, rep));
    for (size_t i = 0; i < rep->anomalies && i < CHAOS_ANOMALIES_MAX; i++)
        test_log("%s %s: %s", rep->list[i].kind, rep->list[i].key, rep->list[i].what);
    chaos_history_free(&h);
    return rep->anomalies;
}

#define CHECK_HISTORY(lines, want)                                                                 \
    do {                                                                                           \
        struct chaos_report rep_;                                                                  \
        CHECK_EQ(check(lines, BATON_ARRAY_LEN(lines), &rep_), want);                               \
        CHECK_EQ(rep_.unknown, 0);                                                                 \
    } while (0)

/* Register histories. Values are positive; 0 is "absent". */
#define W(p, k, t0, t1, r, a)                                                                      \
    "{\"w\":\"reg\",\"f\":\"write\",\"p\":" #p ",\"k\":\"" k "\",\"t0\":" #t0 ",\"t1\":" #t1       \
    ",\"r\":\"" r "\",\"a\":" #a "}"
#define R(p, k, t0, t1, r, v)                                                                      \
    "{\"w\":\"reg\",\"f\":\"read\",\"p\":" #p ",\"k\":\"" k "\",\"t0\":" #t0 ",\"t1\":" #t1        \
    ",\"r\":\"" r "\",\"v\":" #v "}"
#define CAS(p, k, t0, t1, r, a, b, v)                                                              \
    "{\"w\":\"reg\",\"f\":\"cas\",\"p\":" #p ",\"k\":\"" k "\",\"t0\":" #t0 ",\"t1\":" #t1         \
    ",\"r\":\"" r "\",\"a\":" #a ",\"b\":" #b ",\"v\":" #v "}"

TEST(register_sequential_valid)
{
    const char *h[] = {R(1, "x", 0, 1, "ok", 0),         W(1, "x", 2, 3, "ok", 5),
                       R(2, "x", 4, 5, "ok", 5),         CAS(1, "x", 6, 7, "ok", 5, 6, 1),
                       CAS(2, "x", 8, 9, "ok", 5, 7, 0), R(1, "x", 10, 11, "ok", 6)};
    CHECK_HISTORY(h, 0);
}

TEST(register_concurrent_valid)
{
    /* Two overlapping writes: reads may see either order, as long as both reads agree with
     * one order. */
    const char *h[] = {W(1, "x", 0, 10, "ok", 1), W(2, "x", 1, 9, "ok", 2),
                       R(3, "x", 2, 8, "ok", 2), R(4, "x", 3, 12, "ok", 1),
                       R(5, "x", 13, 14, "ok", 1)};
    CHECK_HISTORY(h, 0);
}

TEST(register_stale_read_fails)
{
    /* The write of 2 completed before the read began, yet the read saw 1. */
    const char *h[] = {W(1, "x", 0, 1, "ok", 1), W(1, "x", 2, 3, "ok", 2),
                       R(2, "x", 4, 5, "ok", 1)};
    CHECK_HISTORY(h, 1);
    struct chaos_report rep;
    check(h, BATON_ARRAY_LEN(h), &rep);
    CHECK_STR(rep.list[0].kind, "nonlinearizable");
    CHECK_STR(rep.smallest_key, "x");
}

TEST(register_lost_write_fails)
{
    /* An acknowledged write vanished: later reads see the value before it. */
    const char *h[] = {W(1, "y", 0, 1, "ok", 3), R(2, "y", 2, 3, "ok", 3), W(1, "y", 4, 5, "ok", 4),
                       R(2, "y", 6, 7, "ok", 3), R(3, "y", 8, 9, "ok", 3)};
    CHECK_HISTORY(h, 1);
}

TEST(register_bad_cas_fails)
{
    /* The CAS claims to have swapped 1 -> 9 while the register held 2. */
    const char *h[] = {W(1, "z", 0, 1, "ok", 1), W(1, "z", 2, 3, "ok", 2),
                       CAS(2, "z", 4, 5, "ok", 1, 9, 1)};
    CHECK_HISTORY(h, 1);
    /* And a CAS that reports a compare failure while the register held the expected value. */
    const char *h2[] = {W(1, "z", 0, 1, "ok", 1), CAS(2, "z", 2, 3, "ok", 1, 9, 0)};
    CHECK_HISTORY(h2, 1);
}

TEST(register_indeterminate_write_took_effect)
{
    /* The write of 7 timed out, but a read long after saw 7: it took effect late. */
    const char *h[] = {W(1, "x", 0, 1, "ok", 1), W(2, "x", 2, 3, "info", 7),
                       R(3, "x", 4, 5, "ok", 1), R(3, "x", 100, 101, "ok", 7),
                       R(4, "x", 102, 103, "ok", 7)};
    CHECK_HISTORY(h, 0);
}

TEST(register_indeterminate_write_never_happened)
{
    const char *h[] = {W(1, "x", 0, 1, "ok", 1), W(2, "x", 2, 3, "info", 7),
                       R(3, "x", 4, 5, "ok", 1), R(3, "x", 100, 101, "ok", 1)};
    CHECK_HISTORY(h, 0);
    /* But an indeterminate write cannot take effect before it was invoked. */
    const char *h2[] = {R(3, "x", 0, 1, "ok", 7), W(2, "x", 2, 3, "info", 7)};
    CHECK_HISTORY(h2, 1);
    /* Nor take effect twice. */
    const char *h3[] = {W(2, "x", 0, 1, "info", 7), R(3, "x", 2, 3, "ok", 7),
                        W(1, "x", 4, 5, "ok", 1), R(3, "x", 6, 7, "ok", 7)};
    CHECK_HISTORY(h3, 1);
}

TEST(register_unobserved_indeterminate_write_explains_failed_cas)
{
    /* Nobody read 7, but the CAS expecting 1 failed after the register held 1: only the
     * indeterminate write of 7 taking effect explains it, so it must stay in the search. */
    const char *h[] = {W(1, "x", 0, 1, "ok", 1), W(2, "x", 2, 3, "info", 7),
                       CAS(3, "x", 10, 11, "ok", 1, 9, 0)};
    CHECK_HISTORY(h, 0);
    /* Without it the same failed CAS is impossible. */
    const char *h2[] = {W(1, "x", 0, 1, "ok", 1), CAS(3, "x", 10, 11, "ok", 1, 9, 0)};
    CHECK_HISTORY(h2, 1);
    /* Many unobserved indeterminate writes stay cheap (2^40 subsets if searched naively). */
    static char lines[45][200];
    const char *h3[45];
    for (int i = 0; i < 40; i++) {
        snprintf(lines[i], sizeof(lines[i]),
                 "{\"w\":\"reg\",\"f\":\"write\",\"p\":%d,\"k\":\"x\",\"t0\":%d,"
                 "\"t1\":%d,\"r\":\"info\",\"a\":%d}",
                 i, i, i + 1, 100 + i);
        h3[i] = lines[i];
    }
    for (int i = 40; i < 45; i++) {
        snprintf(lines[i], sizeof(lines[i]),
                 "{\"w\":\"reg\",\"f\":\"read\",\"p\":%d,\"k\":\"x\",\"t0\":%d,"
                 "\"t1\":%d,\"r\":\"ok\",\"v\":%d}",
                 i, 100 + i, 101 + i, i == 44 ? 5 : 0);
        h3[i] = lines[i];
    }
    struct chaos_report rep;
    CHECK_EQ(check(h3, 45, &rep), 1); /* the last read saw 5, which nobody wrote */
    CHECK_EQ(rep.unknown, 0);
    /* The same with a failed CAS in the key, which keeps the unobserved writes in the search. */
    snprintf(lines[40], sizeof(lines[40]),
             "{\"w\":\"reg\",\"f\":\"cas\",\"p\":1,\"k\":\"x\",\"t0\":140,\"t1\":141,"
             "\"r\":\"ok\",\"a\":0,\"b\":3,\"v\":0}");
    CHECK_EQ(check(h3, 45, &rep), 1);
    CHECK_EQ(rep.unknown, 0);
}

TEST(register_failed_ops_have_no_effect)
{
    const char *h[] = {W(1, "x", 0, 1, "ok", 1), W(2, "x", 2, 3, "fail", 7),
                       R(3, "x", 4, 5, "info", 7), R(3, "x", 6, 7, "ok", 1)};
    CHECK_HISTORY(h, 0);
    const char *h2[] = {W(1, "x", 0, 1, "ok", 1), W(2, "x", 2, 3, "fail", 7),
                        R(3, "x", 4, 5, "ok", 7)};
    CHECK_HISTORY(h2, 1);
}

TEST(register_keys_are_independent)
{
    /* Each key alone is fine; only y is broken, and it is the one reported. */
    const char *h[] = {W(1, "x", 0, 1, "ok", 1), W(1, "y", 0, 1, "ok", 1), R(2, "x", 2, 3, "ok", 1),
                       R(2, "y", 2, 3, "ok", 0)};
    struct chaos_report rep;
    CHECK_EQ(check(h, BATON_ARRAY_LEN(h), &rep), 1);
    CHECK_STR(rep.smallest_key, "y");
    CHECK_EQ(rep.keys_checked, 2);
}

/* A long history with 6 clients, heavy overlap and some indeterminate writes, valid by
 * construction: a sequential execution (one op every 10 ns) whose intervals are then widened
 * at random. With stale_at >= 0, the read nearest that op instead returns the value from
 * before the two preceding writes: a stale read the search must find. */
static size_t gen_register(char (*lines)[200], const char **h, size_t nmax, int stale_at)
{
    int64_t reg = 0, old[3] = {0, 0, 0};
    size_t n = 0;
    struct prng r;
    prng_seed(&r, 42);
    for (int i = 0; i < (int)nmax; i++) {
        int64_t t = (int64_t)i * 10, t0 = t - (int64_t)prng_below(&r, 25),
                t1 = t + (int64_t)prng_below(&r, 25);
        int p = i % 6;
        if (t0 < 0)
            t0 = 0;
        uint64_t kind = prng_below(&r, 10);
        const char *fmt_head =
            "{\"w\":\"reg\",\"p\":%d,\"k\":\"k\",\"t0\":%" PRId64 ",\"t1\":%" PRId64;
        int off = snprintf(lines[n], sizeof(lines[n]), fmt_head, p, t0, t1);
        char *rest = lines[n] + off;
        size_t room = sizeof(lines[n]) - (size_t)off;
        if (kind < 4) {
            int64_t v = reg;
            if (stale_at >= 0 && i >= stale_at && old[2] != reg) {
                v = old[2];
                stale_at = -1;
            }
            snprintf(rest, room, ",\"f\":\"read\",\"r\":\"ok\",\"v\":%" PRId64 "}", v);
        } else {
            old[2] = old[1];
            old[1] = old[0];
            old[0] = reg;
            int64_t prev = reg;
            reg = i + 1;
            if (kind < 9)
                snprintf(rest, room, ",\"f\":\"write\",\"r\":\"%s\",\"a\":%" PRId64 "}",
                         kind == 8 ? "info" : "ok", reg);
            else
                snprintf(rest, room,
                         ",\"f\":\"cas\",\"r\":\"ok\",\"a\":%" PRId64 ",\"b\":%" PRId64 ",\"v\":1}",
                         prev, reg);
        }
        h[n] = lines[n];
        n++;
    }
    return n;
}

TEST(register_long_history_valid_and_stale)
{
    static char lines[2000][200];
    static const char *h[2000];
    size_t n = gen_register(lines, h, 2000, -1);
    struct chaos_report rep;
    CHECK_EQ(check(h, n, &rep), 0);
    CHECK_EQ(rep.unknown, 0);
    CHECK_EQ(rep.ok + rep.info, 2000);
    n = gen_register(lines, h, 2000, 1500);
    CHECK_EQ(check(h, n, &rep), 1);
    CHECK_EQ(rep.unknown, 0);
    CHECK_STR(rep.list[0].kind, "nonlinearizable");
}

/* List-append histories. */
#define A(p, k, t0, t1, r, a)                                                                      \
    "{\"w\":\"append\",\"f\":\"append\",\"p\":" #p ",\"k\":\"" k "\",\"t0\":" #t0 ",\"t1\":" #t1   \
    ",\"r\":\"" r "\",\"a\":" #a "}"
#define L(p, k, t0, t1, list)                                                                      \
    "{\"w\":\"append\",\"f\":\"read\",\"p\":" #p ",\"k\":\"" k "\",\"t0\":" #t0 ",\"t1\":" #t1     \
    ",\"r\":\"ok\",\"l\":" list "}"

TEST(append_valid)
{
    const char *h[] = {A(1, "l", 0, 1, "ok", 10),     A(2, "l", 0, 3, "info", 20),
                       L(3, "l", 2, 4, "[10]"),       A(1, "l", 5, 6, "ok", 11),
                       L(3, "l", 7, 8, "[10,20,11]"), L(4, "l", 9, 10, "[10,20,11]")};
    CHECK_HISTORY(h, 0);
}

TEST(append_lost_write_fails)
{
    const char *h[] = {A(1, "l", 0, 1, "ok", 10), A(1, "l", 2, 3, "ok", 11),
                       L(3, "l", 4, 5, "[10]")};
    struct chaos_report rep;
    CHECK_EQ(check(h, BATON_ARRAY_LEN(h), &rep), 1);
    CHECK_STR(rep.list[0].kind, "lost-append");
}

TEST(append_reorder_duplicate_phantom_fail)
{
    const char *reorder[] = {A(1, "l", 0, 1, "ok", 10), A(2, "l", 2, 3, "ok", 11),
                             L(3, "l", 4, 5, "[11,10]")};
    struct chaos_report rep;
    CHECK_GE(check(reorder, BATON_ARRAY_LEN(reorder), &rep), 1);
    CHECK_STR(rep.list[0].kind, "reordered-append");
    const char *diverge[] = {A(1, "l", 0, 5, "ok", 10), A(2, "l", 0, 5, "ok", 11),
                             L(3, "l", 6, 7, "[10,11]"), L(4, "l", 6, 7, "[11,10]")};
    CHECK_GE(check(diverge, BATON_ARRAY_LEN(diverge), &rep), 1);
    CHECK_STR(rep.list[0].kind, "incompatible-order");
    const char *dup[] = {A(1, "l", 0, 1, "ok", 10), L(3, "l", 4, 5, "[10,10]")};
    CHECK_EQ(check(dup, BATON_ARRAY_LEN(dup), &rep), 1);
    CHECK_STR(rep.list[0].kind, "duplicate-element");
    const char *phantom[] = {A(1, "l", 0, 1, "fail", 10), L(3, "l", 4, 5, "[10,12]")};
    CHECK_EQ(check(phantom, BATON_ARRAY_LEN(phantom), &rep), 2);
    const char *back[] = {A(1, "l", 0, 1, "info", 10), L(3, "l", 4, 5, "[10]"),
                          L(3, "l", 6, 7, "[]")};
    CHECK_EQ(check(back, BATON_ARRAY_LEN(back), &rep), 1);
    CHECK_STR(rep.list[0].kind, "stale-read");
}

/* Watch histories. */
#define WS(p, rev) "{\"w\":\"watch\",\"f\":\"start\",\"p\":" #p ",\"r\":\"ok\",\"rev\":" #rev "}"
#define WE(p, v, rev)                                                                              \
    "{\"w\":\"watch\",\"f\":\"end\",\"p\":" #p ",\"r\":\"ok\",\"v\":" #v ",\"rev\":" #rev "}"
#define WEV(p, k, a, rev)                                                                          \
    "{\"w\":\"watch\",\"f\":\"event\",\"p\":" #p ",\"k\":\"" k "\",\"r\":\"ok\",\"a\":" #a         \
    ",\"rev\":" #rev "}"
#define WPUT(p, k, a, rev, r)                                                                      \
    "{\"w\":\"watch\",\"f\":\"write\",\"p\":" #p ",\"k\":\"" k "\",\"t0\":1,\"t1\":2,\"r\":\"" r   \
    "\",\"a\":" #a ",\"rev\":" #rev "}"

TEST(watch_valid)
{
    const char *h[] = {WS(100, 2),
                       WS(101, 2),
                       WPUT(1, "w/a", 5, 3, "ok"),
                       WPUT(1, "w/b", 6, 5, "ok"),
                       WPUT(1, "w/c", 7, 0, "info"),
                       WEV(100, "w/a", 5, 3),
                       WEV(101, "w/a", 5, 3),
                       WEV(100, "w/b", 6, 5),
                       WEV(101, "w/b", 6, 5),
                       WEV(100, "w/c", 7, 6),
                       WEV(101, "w/c", 7, 6),
                       WE(100, 1, 6),
                       WE(101, 1, 6)};
    CHECK_HISTORY(h, 0);
}

TEST(watch_gap_duplicate_mismatch_fail)
{
    struct chaos_report rep;
    const char *gap[] = {WS(100, 2),
                         WS(101, 2),
                         WPUT(1, "w/a", 5, 3, "ok"),
                         WPUT(1, "w/b", 6, 5, "ok"),
                         WEV(100, "w/a", 5, 3),
                         WEV(100, "w/b", 6, 5),
                         WEV(101, "w/b", 6, 5),
                         WE(100, 1, 5),
                         WE(101, 1, 5)};
    CHECK_EQ(check(gap, BATON_ARRAY_LEN(gap), &rep), 1);
    CHECK_STR(rep.list[0].kind, "watch-gap");
    const char *dup[] = {WS(100, 2), WPUT(1, "w/a", 5, 3, "ok"), WEV(100, "w/a", 5, 3),
                         WEV(100, "w/a", 5, 3), WE(100, 1, 3)};
    CHECK_EQ(check(dup, BATON_ARRAY_LEN(dup), &rep), 1);
    CHECK_STR(rep.list[0].kind, "watch-order");
    const char *mismatch[] = {
        WS(100, 2),    WS(101, 2),   WEV(100, "w/a", 5, 3), WEV(101, "w/a", 9, 3),
        WE(100, 1, 3), WE(101, 1, 3)};
    CHECK_EQ(check(mismatch, BATON_ARRAY_LEN(mismatch), &rep), 1);
    CHECK_STR(rep.list[0].kind, "watch-mismatch");
    /* A watcher that stopped before the last acknowledged write is missing events. */
    const char *lag[] = {WS(100, 2), WPUT(1, "w/a", 5, 3, "ok"), WE(100, 0, 0)};
    CHECK_EQ(check(lag, BATON_ARRAY_LEN(lag), &rep), 1);
    CHECK_STR(rep.list[0].kind, "watch-lag");
}

/* Fencing histories: a = token, b = holder. */
#define ACT(p, t0, t1, tok, holder)                                                                \
    "{\"w\":\"lock\",\"f\":\"act\",\"p\":" #p ",\"k\":\"lock\",\"t0\":" #t0 ",\"t1\":" #t1         \
    ",\"r\":\"ok\",\"a\":" #tok ",\"b\":" #holder "}"

TEST(fencing_valid_and_violations)
{
    const char *ok[] = {ACT(1, 0, 1, 5, 1), ACT(1, 2, 3, 5, 1), ACT(2, 4, 5, 9, 2),
                        ACT(3, 4, 5, 12, 3)};
    CHECK_HISTORY(ok, 0);
    struct chaos_report rep;
    const char *same[] = {ACT(1, 0, 1, 5, 1), ACT(2, 2, 3, 5, 2)};
    CHECK_EQ(check(same, BATON_ARRAY_LEN(same), &rep), 1);
    CHECK_STR(rep.list[0].kind, "fence-reuse");
    const char *regress[] = {ACT(1, 0, 1, 9, 1), ACT(2, 2, 3, 5, 2)};
    CHECK_EQ(check(regress, BATON_ARRAY_LEN(regress), &rep), 1);
    CHECK_STR(rep.list[0].kind, "fence-regress");
    /* A stale holder acting again and again against the same newer holder is one anomaly;
     * against a second newer holder, another. */
    const char *again[] = {ACT(1, 0, 1, 9, 1), ACT(2, 2, 3, 5, 2),  ACT(2, 4, 5, 5, 2),
                           ACT(2, 6, 7, 5, 2), ACT(3, 8, 9, 12, 3), ACT(2, 10, 11, 5, 2)};
    CHECK_EQ(check(again, BATON_ARRAY_LEN(again), &rep), 2);
}

TEST(history_rejects_bad_lines)
{
    const char *bad[] = {
        "{\"w\":\"reg\"",                                 /* truncated */
        "{\"w\":\"reg\",\"r\":\"maybe\"}",                /* unknown outcome */
        "{\"w\":\"reg\",\"t0\":1.5,\"r\":\"ok\"}",        /* not an integer */
        "{\"w\":\"reg\",\"t0\":5,\"t1\":4,\"r\":\"ok\"}", /* completes before it starts */
        "{\"w\":\"reg\",\"f\":\"read\"}",                 /* no outcome */
        "{\"r\":\"ok\",\"t0\":99999999999999999999}",     /* out of range */
        "{\"r\":\"ok\"} x",                               /* trailing bytes */
        "{\"r\":\"ok\",\"x\":{}}",                        /* nested objects are not ours */
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(bad); i++) {
        struct chaos_history h;
        chaos_history_init(&h);
        char err[200] = "";
        CHECK_EQ(chaos_history_add_line(&h, bad[i], strlen(bad[i]), err, sizeof(err)),
                 BATON_ECORRUPT);
        CHECK(strstr(err, "column") != NULL);
        CHECK_EQ(h.n, 0);
        chaos_history_free(&h);
    }
}

TEST(history_load_from_file)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/h.jsonl", test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(W(1, "x", 0, 1, "ok", 1) "\n\n" R(2, "x", 2, 3, "ok", 1) "\n"
                                                                   "{\"r\":\"ok\",\"l\":[1,2,\n",
          f);
    fclose(f);
    struct chaos_history h;
    chaos_history_init(&h);
    char err[512];
    CHECK_EQ(chaos_history_load(&h, path, err, sizeof(err)), BATON_ECORRUPT);
    CHECK(strstr(err, ":4:") != NULL);
    CHECK_EQ(h.n, 2);
    CHECK_EQ(h.ops[1].line, 3);
    chaos_history_free(&h);
}
