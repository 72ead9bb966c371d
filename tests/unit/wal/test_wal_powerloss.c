/* Power loss through the I/O table: a scripted workload (appends, suffix overwrites, hard
 * states, snapshot markers, segment roll-overs and releases) runs against the memfs disk model,
 * and the power is cut at every mutating I/O call in turn; half of the cuts also keep a torn
 * prefix of the unsynced writes. After each cut the WAL must open, hold every acknowledged
 * batch, and show exactly the acknowledged state plus a prefix of the one batch in flight. */
#include "memfs.h"
#include "test.h"
#include "walt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDX_MAX 1024
#define STEPS   36

static bool verbose;

/* The log as the test expects it. */
struct model {
    uint64_t terms[IDX_MAX]; /* by index */
    uint64_t last;
    struct wal_snap_marker snap;
    struct wal_hard_state hs;
};

/* One step of the script, in the WAL's record order: marker, (truncate,) entries, hard state. */
struct step {
    bool has_snap, has_hs;
    struct wal_snap_marker snap;
    struct wal_hard_state hs;
    uint64_t lo, hi, term;
    bool release;
};

static struct step script[STEPS];

static void make_script(void)
{
    uint64_t last = 0, term = 1, snap = 0;
    for (int s = 0; s < STEPS; s++) {
        struct step *st = &script[s];
        memset(st, 0, sizeof(*st));
        st->term = term;
        if (s % 7 == 6 && last > snap + 4) { /* a new leader overwrites the last 3 entries */
            st->term = ++term;
            st->lo = last - 2;
        } else {
            st->lo = last + 1;
        }
        st->hi = st->lo + 2 + (uint64_t)(s % 5) * 3;
        uint64_t prev_last = last;
        last = st->hi;
        if (s % 4 == 1) {
            st->has_hs = true;
            st->hs = (struct wal_hard_state){.term = term, .vote = 1 + s % 3, .commit = last - 1};
        }
        if (s % 12 == 11) {
            st->has_snap = true;
            snap = BATON_MIN(prev_last, st->lo - 1) - 3; /* below this step's entries */
            st->snap = (struct wal_snap_marker){.index = snap, .term = term};
            st->release = true;
        }
    }
}

/* Applies the first `records` records of step s (all of them with records = -1). */
static void model_apply(struct model *m, const struct step *st, int records)
{
    int r = 0;
    if (st->has_snap) {
        if (records >= 0 && r++ >= records)
            return;
        m->snap = st->snap;
        if (m->last < st->snap.index)
            m->last = st->snap.index;
    }
    if (st->lo <= m->last) {
        if (records >= 0 && r++ >= records)
            return;
        m->last = st->lo - 1;
    }
    for (uint64_t i = st->lo; i <= st->hi; i++) {
        if (records >= 0 && r++ >= records)
            return;
        m->terms[i] = st->term;
        m->last = i;
    }
    if (st->has_hs) {
        if (records >= 0 && r++ >= records)
            return;
        m->hs = st->hs;
    }
}

static bool model_eq(const struct model *m, const struct wal_state *st, const struct walt_got *g)
{
    if (st->snap.index != m->snap.index || st->snap.term != m->snap.term ||
        st->last_index != m->last || memcmp(&st->hs, &m->hs, sizeof(m->hs)) != 0)
        return false;
    if (g->n != (m->last > m->snap.index ? m->last - m->snap.index : 0))
        return false;
    for (uint64_t i = 0; i < g->n; i++)
        if (g->terms[i] != m->terms[g->first + i])
            return false;
    return true;
}

/* Runs the script until the disk dies; returns the number of acknowledged steps. */
static int run_script(struct memfs *fs, const struct wal_options *o, bool *opened)
{
    struct wal *w;
    *opened = wal_open(o, &w, NULL, 0) == 0;
    if (!*opened)
        return 0;
    int acked = 0;
    for (int s = 0; s < STEPS; s++) {
        const struct step *st = &script[s];
        struct wal_entry e[32];
        uint8_t pay[32][WALT_PAYLOAD_MAX];
        size_t n = 0;
        for (uint64_t i = st->lo; i <= st->hi; i++, n++)
            e[n] = (struct wal_entry){.index = i,
                                      .term = st->term,
                                      .data = pay[n],
                                      .len = walt_payload(i, st->term, pay[n])};
        struct wal_batch b = {.entries = e,
                              .entries_len = n,
                              .hs = st->has_hs ? &st->hs : NULL,
                              .snap = st->has_snap ? &st->snap : NULL};
        uint64_t seq;
        int rc = wal_submit(w, &b, &seq);
        if (!rc)
            rc = wal_wait(w, seq);
        if (!rc)
            acked = s + 1;
        if (!rc && st->release)
            rc = wal_release(w, st->snap.index, NULL);
        if (rc) {
            if (verbose)
                test_log("step %d: %s", s, baton_strerror(rc));
            break;
        }
    }
    wal_close(w);
    return acked;
}

static int records_of(const struct step *st, const struct model *before)
{
    return (int)(st->has_snap +
                 (st->lo <= BATON_MAX(before->last, st->has_snap ? st->snap.index : 0)) +
                 (st->hi - st->lo + 1) + st->has_hs);
}

/* Cuts at calls first, first + 2, ...: the two modes make the same calls, so between them every
 * call is cut once. */
static void power_cut_all(bool no_thread, uint64_t first)
{
    make_script();
    struct wal_options o = {.dir = "/wal", .segment_bytes = 8 << 10, .no_thread = no_thread};
    /* A clean run first: how many mutating calls the workload makes. */
    struct memfs *fs = memfs_new();
    o.io = memfs_io(fs);
    bool opened;
    verbose = true;
    CHECK_EQ(run_script(fs, &o, &opened), STEPS);
    verbose = false;
    uint64_t total = memfs_ops(fs);
    memfs_free(fs);
    test_log("workload: %d steps, %" PRIu64 " mutating I/O calls", STEPS, total);

    int exact = 0, partial = 0, torn_runs = 0;
    int cuts = 0;
    for (uint64_t cut = first; cut <= total + 1; cut += 2, cuts++) {
        fs = memfs_new();
        o.io = memfs_io(fs);
        memfs_fail_from_op(fs, cut);
        int acked = run_script(fs, &o, &opened);
        uint64_t torn_seed = (cut / 2 % 2) ? cut * 7919 : 0;
        torn_runs += torn_seed != 0;
        memfs_power_cut(fs, torn_seed);

        struct wal *w;
        char em[512];
        int rc = wal_open(&o, &w, em, sizeof(em));
        if (rc)
            test_fail(__FILE__, __LINE__, "cut at call %" PRIu64 " (acked %d steps): %s: %s", cut,
                      acked, baton_strerror(rc), em);
        struct wal_state st;
        wal_state_get(w, &st);
        struct walt_got *g = calloc(1, sizeof(*g));
        CHECK_OK(wal_read_entries(w, 0, UINT64_MAX, walt_collect, g));
        CHECK_EQ(g->bad, 0);

        /* Exactly the acknowledged state, or it plus a prefix of the next step's records. */
        struct model m = {0};
        for (int s = 0; s < acked; s++)
            model_apply(&m, &script[s], -1);
        bool ok = model_eq(&m, &st, g);
        exact += ok;
        if (!ok && acked < STEPS) {
            int nrec = records_of(&script[acked], &m);
            for (int r = 1; r <= nrec && !ok; r++) {
                struct model m2 = m;
                model_apply(&m2, &script[acked], r);
                ok = model_eq(&m2, &st, g);
            }
            partial += ok;
        }
        if (!ok)
            test_fail(__FILE__, __LINE__,
                      "cut at call %" PRIu64 " (torn seed %" PRIu64
                      "): acked %d steps (last %" PRIu64 " snap %" PRIu64
                      "), recovered last %" PRIu64 " snap %" PRIu64 " entries %" PRIu64
                      " hs.commit %" PRIu64,
                      cut, torn_seed, acked, m.last, m.snap.index, st.last_index, st.snap.index,
                      g->n, st.hs.commit);
        free(g);

        /* The recovered log takes new writes and survives another reopen. */
        uint64_t seq;
        CHECK_OK(walt_submit_range(w, st.last_index + 1, st.last_index + 2, 99, NULL, &seq));
        CHECK_OK(wal_wait(w, seq));
        CHECK_OK(wal_close(w));
        CHECK_OK(wal_open(&o, &w, em, sizeof(em)));
        struct wal_state st2;
        wal_state_get(w, &st2);
        CHECK_EQ(st2.last_index, st.last_index + 2);
        CHECK_OK(wal_close(w));
        memfs_free(fs);
    }
    test_log("%s: %" PRIu64 " cuts (%d with torn unsynced writes): %d recovered exactly the "
             "acked state, %d the acked state plus a prefix of the batch in flight",
             no_thread ? "no_thread mode" : "WAL thread", (uint64_t)cuts, torn_runs, exact,
             partial);
}

TEST(power_cut_at_every_io_call)
{
    power_cut_all(false, 1);
}

TEST(power_cut_at_every_io_call_no_thread)
{
    power_cut_all(true, 2);
}
