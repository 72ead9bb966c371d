/* Unit tests of the WAL: append and read-back, segments, truncation, release, reopen, hard state,
 * group commit, the bounded queue, injected ENOSPC and fsync failures, and snapshot files. Real
 * files in a scratch directory unless a test needs the memfs disk model for counting or faults. */
#include "memfs.h"
#include "test.h"
#include "walt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tlog_warn_last[1024];
static int tlog_warns;
static void tlog_fn(void *ctx, enum log_level level, const char *line, size_t len)
{
    if (level >= LOG_WARN) {
        tlog_warns++;
        snprintf(tlog_warn_last, sizeof(tlog_warn_last), "%.*s", (int)len, line);
    }
}
static const struct log_sink tlog = {.fn = tlog_fn, .min_level = LOG_DEBUG};

static struct wal *open_wal(const char *dir, const struct wal_io *io, uint64_t seg_bytes)
{
    struct wal_options o = {.dir = dir, .io = io, .log = &tlog, .segment_bytes = seg_bytes};
    struct wal *w = NULL;
    char em[512];
    int rc = wal_open(&o, &w, em, sizeof(em));
    if (rc)
        test_fail(__FILE__, __LINE__, "wal_open(%s): %s: %s", dir, baton_strerror(rc), em);
    return w;
}

static struct walt_got *read_all(struct wal *w)
{
    struct walt_got *g = calloc(1, sizeof(*g));
    CHECK(g);
    CHECK_OK(wal_read_entries(w, 0, UINT64_MAX, walt_collect, g));
    return g;
}

static void submit_wait(struct wal *w, uint64_t lo, uint64_t hi, uint64_t term,
                        const struct wal_hard_state *hs)
{
    uint64_t seq;
    CHECK_OK(walt_submit_range(w, lo, hi, term, hs, &seq));
    CHECK_OK(wal_wait(w, seq));
}

TEST(append_read_back_and_reopen)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/wal", test_tmpdir());
    struct wal *w = open_wal(dir, NULL, 1 << 20);
    struct wal_hard_state hs = {.term = 3, .vote = 2, .commit = 40};
    submit_wait(w, 1, 50, 3, NULL);
    submit_wait(w, 51, 100, 3, &hs);
    struct wal_progress p;
    wal_poll(w, &p);
    CHECK_EQ(p.durable_seq, 2);
    CHECK_EQ(p.durable_index, 100);
    CHECK_EQ(p.hs.commit, 40);
    CHECK_EQ(p.err, 0);
    struct walt_got *g = read_all(w);
    CHECK_EQ(g->first, 1);
    CHECK_EQ(g->n, 100);
    CHECK_EQ(g->bad, 0);
    CHECK_EQ(g->types[6], 7 % 3);
    free(g);
    CHECK_OK(wal_close(w));

    w = open_wal(dir, NULL, 1 << 20);
    struct wal_state st;
    wal_state_get(w, &st);
    CHECK_EQ(st.first_index, 1);
    CHECK_EQ(st.last_index, 100);
    CHECK_EQ(st.hs.term, 3);
    CHECK_EQ(st.hs.vote, 2);
    CHECK_EQ(st.hs.commit, 40);
    g = read_all(w);
    CHECK_EQ(g->n, 100);
    CHECK_EQ(g->bad, 0);
    CHECK_EQ(g->terms[99], 3);
    free(g);
    /* Appending continues where recovery ended. */
    submit_wait(w, 101, 120, 4, NULL);
    CHECK_OK(wal_close(w));
    w = open_wal(dir, NULL, 1 << 20);
    wal_state_get(w, &st);
    CHECK_EQ(st.last_index, 120);
    g = read_all(w);
    CHECK_EQ(g->n, 120);
    CHECK_EQ(g->bad, 0);
    CHECK_EQ(g->terms[119], 4);
    free(g);
    CHECK_OK(wal_close(w));
}

TEST(segment_rollover_and_preallocation)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/wal", test_tmpdir());
    struct wal *w = open_wal(dir, NULL, 16 << 10);
    for (uint64_t i = 1; i <= 400; i += 20)
        submit_wait(w, i, i + 19, 1, NULL);
    uint32_t segs = wal_segments(w);
    test_log("400 entries in %u segments of 16 KiB", segs);
    CHECK_GT(segs, 5);
    CHECK_OK(wal_close(w));
    /* Every segment file is preallocated to the full size. */
    char path[600];
    snprintf(path, sizeof(path), "%s/%016x-%016x.wal", dir, 2, 0);
    w = open_wal(dir, NULL, 16 << 10);
    CHECK_EQ(wal_segments(w), segs);
    struct walt_got *g = read_all(w);
    CHECK_EQ(g->first, 1);
    CHECK_EQ(g->n, 400);
    CHECK_EQ(g->bad, 0);
    free(g);
    CHECK_OK(wal_close(w));
    snprintf(path, sizeof(path), "%s/%016x-%016x.wal", dir, 1, 1);
    struct stat sb;
    CHECK_EQ(stat(path, &sb), 0);
    CHECK_EQ(sb.st_size, 16 << 10);
}

TEST(truncate_suffix_across_segments)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/wal", test_tmpdir());
    struct wal *w = open_wal(dir, NULL, 16 << 10);
    submit_wait(w, 1, 200, 1, NULL);
    CHECK_GT(wal_segments(w), 2);
    /* A new leader overwrites from index 30 (in the first segment) with a shorter log. */
    submit_wait(w, 30, 35, 2, NULL);
    struct wal_state st;
    wal_state_get(w, &st);
    CHECK_EQ(st.last_index, 35);
    struct walt_got *g = read_all(w);
    CHECK_EQ(g->n, 35);
    CHECK_EQ(g->terms[28], 1);
    CHECK_EQ(g->terms[29], 2);
    CHECK_EQ(g->bad, 0);
    free(g);
    /* And again at the very end: replace 35 only. */
    submit_wait(w, 35, 36, 3, NULL);
    CHECK_OK(wal_close(w));

    w = open_wal(dir, NULL, 16 << 10);
    wal_state_get(w, &st);
    CHECK_EQ(st.last_index, 36);
    g = read_all(w);
    CHECK_EQ(g->n, 36);
    CHECK_EQ(g->terms[0], 1);
    CHECK_EQ(g->terms[33], 2);
    CHECK_EQ(g->terms[34], 3);
    CHECK_EQ(g->terms[35], 3);
    CHECK_EQ(g->bad, 0);
    free(g);
    CHECK_OK(wal_close(w));
}

TEST(release_below_snapshot)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/wal", test_tmpdir());
    struct wal *w = open_wal(dir, NULL, 16 << 10);
    struct wal_hard_state hs = {.term = 1, .vote = 1, .commit = 300};
    submit_wait(w, 1, 300, 1, &hs);
    uint32_t before = wal_segments(w);
    /* Not durable yet as a marker: refused. */
    uint32_t released = 0;
    CHECK_EQ(wal_release(w, 250, &released), BATON_EINVAL);
    struct wal_snap_marker m = {.index = 250, .term = 1};
    struct wal_batch b = {.snap = &m};
    uint64_t seq;
    CHECK_OK(wal_submit(w, &b, &seq));
    CHECK_OK(wal_wait(w, seq));
    CHECK_OK(wal_release(w, 250, &released));
    test_log("released %u of %u segments below index 250", released, before);
    CHECK_GT(released, 0);
    CHECK_EQ(wal_segments(w), before - released);
    struct walt_got *g = read_all(w);
    CHECK_EQ(g->first, 251);
    CHECK_EQ(g->n, 50);
    CHECK_EQ(g->bad, 0);
    free(g);
    /* Roll over more segments, so the hard state and marker only live in new segment heads. */
    submit_wait(w, 301, 600, 1, NULL);
    b.snap = &(struct wal_snap_marker){.index = 550, .term = 1};
    CHECK_OK(wal_submit(w, &b, &seq));
    CHECK_OK(wal_wait(w, seq));
    CHECK_OK(wal_release(w, 550, &released));
    CHECK_GT(released, 0);
    CHECK_OK(wal_close(w));

    w = open_wal(dir, NULL, 16 << 10);
    struct wal_state st;
    wal_state_get(w, &st);
    CHECK_EQ(st.snap.index, 550);
    CHECK_EQ(st.first_index, 551);
    CHECK_EQ(st.last_index, 600);
    CHECK_EQ(st.hs.commit, 300);
    g = read_all(w);
    CHECK_EQ(g->first, 551);
    CHECK_EQ(g->n, 50);
    CHECK_EQ(g->bad, 0);
    free(g);
    CHECK_OK(wal_close(w));
}

TEST(snapshot_marker_skips_ahead)
{
    /* A follower installs a snapshot far ahead of its log: the log restarts after it. */
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/wal", test_tmpdir());
    struct wal *w = open_wal(dir, NULL, 1 << 20);
    submit_wait(w, 1, 10, 1, NULL);
    CHECK_EQ(walt_submit_range(w, 20, 21, 2, NULL, NULL), BATON_EINVAL); /* gap */
    struct wal_snap_marker m = {.index = 1000, .term = 5};
    struct wal_batch b = {.snap = &m};
    uint64_t seq;
    CHECK_OK(wal_submit(w, &b, &seq));
    CHECK_EQ(walt_submit_range(w, 1000, 1001, 5, NULL, NULL), BATON_EINVAL); /* below marker */
    submit_wait(w, 1001, 1005, 5, NULL);
    m.index = 999;
    CHECK_EQ(wal_submit(w, &b, NULL), BATON_EINVAL); /* backwards */
    CHECK_OK(wal_close(w));
    w = open_wal(dir, NULL, 1 << 20);
    struct wal_state st;
    wal_state_get(w, &st);
    CHECK_EQ(st.snap.index, 1000);
    CHECK_EQ(st.snap.term, 5);
    CHECK_EQ(st.first_index, 1001);
    CHECK_EQ(st.last_index, 1005);
    struct walt_got *g = read_all(w);
    CHECK_EQ(g->first, 1001);
    CHECK_EQ(g->n, 5);
    free(g);
    CHECK_OK(wal_close(w));
}

TEST(hard_state_latest_wins)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/wal", test_tmpdir());
    struct wal *w = open_wal(dir, NULL, 8 << 10);
    uint64_t seq = 0;
    for (uint64_t t = 1; t <= 300; t++) {
        struct wal_hard_state hs = {.term = t, .vote = t % 5, .commit = t * 2};
        struct wal_batch b = {.hs = &hs};
        CHECK_OK(wal_submit(w, &b, &seq));
        if (t % 50 == 0)
            CHECK_OK(wal_wait(w, seq));
    }
    CHECK_OK(wal_wait(w, seq));
    CHECK_GT(wal_segments(w), 1); /* hard states alone roll segments too */
    CHECK_OK(wal_close(w));
    w = open_wal(dir, NULL, 8 << 10);
    struct wal_state st;
    wal_state_get(w, &st);
    CHECK_EQ(st.hs.term, 300);
    CHECK_EQ(st.hs.vote, 0);
    CHECK_EQ(st.hs.commit, 600);
    CHECK_EQ(st.last_index, 0);
    CHECK_OK(wal_close(w));
}

struct notify_ctx {
    pthread_mutex_t mu;
    int calls;
};
static void notify_fn(void *ctx)
{
    struct notify_ctx *n = ctx;
    pthread_mutex_lock(&n->mu);
    n->calls++;
    pthread_mutex_unlock(&n->mu);
}

TEST(group_commit_fewer_fsyncs_than_batches)
{
    struct memfs *fs = memfs_new();
    memfs_sync_delay_us(fs, 3000); /* a slow disk: 3 ms per fdatasync */
    struct notify_ctx nc = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct wal_options o = {.dir = "/g",
                            .io = memfs_io(fs),
                            .segment_bytes = 4 << 20,
                            .notify = notify_fn,
                            .notify_ctx = &nc};
    struct wal *w;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    uint64_t syncs0 = memfs_fdatasyncs(fs);
    /* 64 logical submitters each submit 8 one-entry batches, all without waiting: while one
     * fdatasync runs, the next batches queue up behind it. */
    enum { WRITERS = 64, ROUNDS = 8 };
    uint64_t seq = 0, idx = 1;
    for (int r = 0; r < ROUNDS; r++) {
        for (int wr = 0; wr < WRITERS; wr++, idx++)
            CHECK_OK(walt_submit_range(w, idx, idx, 1, NULL, &seq));
        usleep(1000); /* the next round arrives while an fdatasync is running */
    }
    CHECK_OK(wal_wait(w, seq));
    struct wal_progress p;
    wal_poll(w, &p);
    uint64_t syncs = memfs_fdatasyncs(fs) - syncs0;
    test_log("%d batches made durable by %" PRIu64 " fdatasyncs (wal counted %" PRIu64
             "), notify called %d times",
             WRITERS * ROUNDS, syncs, p.fsyncs, nc.calls);
    CHECK_EQ(p.durable_seq, WRITERS * ROUNDS);
    CHECK_EQ(p.durable_index, WRITERS * ROUNDS);
    CHECK_LT(syncs, WRITERS * ROUNDS / 2);
    CHECK_EQ(p.fsyncs, syncs);
    pthread_mutex_lock(&nc.mu);
    CHECK_GE(nc.calls, 1);
    CHECK_LE((uint64_t)nc.calls, syncs);
    pthread_mutex_unlock(&nc.mu);
    struct walt_got *g = read_all(w);
    CHECK_EQ(g->n, WRITERS * ROUNDS);
    CHECK_EQ(g->bad, 0);
    free(g);
    CHECK_OK(wal_close(w));
    memfs_free(fs);
}

TEST(bounded_queue_is_ebusy)
{
    struct memfs *fs = memfs_new();
    struct wal_options o = {
        .dir = "/q", .io = memfs_io(fs), .segment_bytes = 1 << 20, .queue_batches_max = 4};
    struct wal *w;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    memfs_hold_syncs(fs, true); /* the disk stalls: nothing completes */
    int busy_at = 0;
    uint64_t seq = 0;
    for (uint64_t i = 1; i <= 100; i++) {
        int rc = walt_submit_range(w, i, i, 1, NULL, &seq);
        if (rc == BATON_EBUSY) {
            busy_at = (int)i;
            break;
        }
        CHECK_OK(rc);
    }
    test_log("queue of 4 batches refused batch %d", busy_at);
    CHECK_EQ(busy_at, 5);
    memfs_hold_syncs(fs, false);
    /* Nothing was queued for the refused batch: after the queue drains, it goes in. */
    CHECK_OK(wal_wait(w, seq));
    CHECK_OK(walt_submit_range(w, (uint64_t)busy_at, (uint64_t)busy_at, 1, NULL, &seq));
    CHECK_OK(wal_wait(w, seq));
    struct wal_progress p;
    wal_poll(w, &p);
    CHECK_EQ(p.durable_index, busy_at);
    /* The byte bound too. */
    CHECK_OK(wal_close(w));
    o.queue_batches_max = 0;
    o.queue_bytes_max = 4096;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    uint8_t big[5000] = {0};
    struct wal_entry e = {.index = (uint64_t)busy_at + 1, .term = 1, .data = big, .len = 5000};
    struct wal_batch b = {.entries = &e, .entries_len = 1};
    CHECK_EQ(wal_submit(w, &b, NULL), BATON_ETOOBIG);
    CHECK_OK(wal_close(w));
    memfs_free(fs);
}

TEST(invalid_batches_are_refused)
{
    struct memfs *fs = memfs_new();
    struct wal_options o = {
        .dir = "/i", .io = memfs_io(fs), .segment_bytes = 64 << 10, .record_bytes_max = 1000};
    struct wal *w;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    CHECK_EQ(walt_submit_range(w, 2, 3, 1, NULL, NULL), BATON_EINVAL); /* gap after 0 */
    CHECK_EQ(walt_submit_range(w, 0, 1, 1, NULL, NULL), BATON_EINVAL); /* index 0 */
    uint8_t big[1001] = {0};
    struct wal_entry e[2] = {{.index = 1, .term = 1, .data = big, .len = 1001}};
    struct wal_batch b = {.entries = e, .entries_len = 1};
    CHECK_EQ(wal_submit(w, &b, NULL), BATON_ETOOBIG);
    e[0].len = 10;
    e[1] = (struct wal_entry){.index = 3, .term = 1};
    b.entries_len = 2;
    CHECK_EQ(wal_submit(w, &b, NULL), BATON_EINVAL); /* not consecutive */
    CHECK_OK(wal_close(w));
    o.segment_bytes = 100; /* too small */
    CHECK_EQ(wal_open(&o, &w, NULL, 0), BATON_EINVAL);
    memfs_free(fs);
}

TEST(enospc_is_an_explicit_error)
{
    struct memfs *fs = memfs_new();
    /* Room for one 64 KiB segment but not a second. */
    memfs_space_limit(fs, 100 << 10);
    struct wal_options o = {.dir = "/n", .io = memfs_io(fs), .segment_bytes = 64 << 10};
    struct wal *w;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    uint64_t seq = 0, i = 1;
    int rc = 0;
    for (; i < 10000 && rc == 0; i += 10) {
        rc = walt_submit_range(w, i, i + 9, 1, NULL, &seq);
        if (!rc)
            rc = wal_wait(w, seq);
    }
    test_log("writing stopped at index %" PRIu64 ": %s", i, baton_strerror(rc));
    CHECK_EQ(rc, -ENOSPC);
    struct wal_progress p;
    wal_poll(w, &p);
    CHECK_EQ(p.err, -ENOSPC);
    CHECK_GT(p.durable_index, 0);
    uint64_t durable = p.durable_index;
    CHECK_EQ(walt_submit_range(w, durable + 1, durable + 1, 1, NULL, NULL), -ENOSPC);
    CHECK_EQ(wal_close(w), -ENOSPC);
    /* What was acknowledged is all there after a reopen (with space again). */
    memfs_space_limit(fs, 0);
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    struct wal_state st;
    wal_state_get(w, &st);
    CHECK_GE(st.last_index, durable);
    CHECK_OK(wal_close(w));
    /* A disk too full for the first segment fails the open itself. */
    struct memfs *fs2 = memfs_new();
    memfs_space_limit(fs2, 10 << 10);
    o.io = memfs_io(fs2);
    char em[256];
    CHECK_EQ(wal_open(&o, &w, em, sizeof(em)), -ENOSPC);
    test_log("open on a full disk: %s", em);
    CHECK(strstr(em, "/n") != NULL);
    memfs_free(fs2);
    memfs_free(fs);
}

TEST(failed_fsync_stops_the_wal)
{
    struct memfs *fs = memfs_new();
    struct wal_options o = {.dir = "/f", .io = memfs_io(fs), .segment_bytes = 64 << 10};
    struct wal *w;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    uint64_t seq;
    CHECK_OK(walt_submit_range(w, 1, 10, 1, NULL, &seq));
    CHECK_OK(wal_wait(w, seq));
    memfs_fail_sync(fs, 1);
    CHECK_OK(walt_submit_range(w, 11, 20, 1, NULL, &seq));
    CHECK_EQ(wal_wait(w, seq), -EIO);
    /* Never retried, never pretended: every later write is refused. */
    CHECK_EQ(walt_submit_range(w, 21, 21, 1, NULL, NULL), -EIO);
    struct wal_progress p;
    wal_poll(w, &p);
    CHECK_EQ(p.err, -EIO);
    CHECK_EQ(p.durable_index, 10);
    CHECK_EQ(wal_close(w), -EIO);
    memfs_free(fs);
}

/* ---- snapshot files ---------------------------------------------------------------------- */

static void snap_bytes(uint8_t *p, size_t n, uint64_t off)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((off + i) * 2654435761u >> 13);
}

static void write_snap(const char *dir, const struct wal_io *io, uint64_t index, uint64_t term,
                       uint64_t len)
{
    struct wal_snap_writer *s;
    CHECK_OK(wal_snap_create(dir, io, index, term, &s));
    static uint8_t chunk[64 << 10];
    for (uint64_t off = 0; off < len;) {
        size_t n = (size_t)BATON_MIN((uint64_t)sizeof(chunk), len - off);
        snap_bytes(chunk, n, off);
        CHECK_OK(wal_snap_write(s, chunk, n));
        off += n;
    }
    CHECK_OK(wal_snap_finish(s));
}

TEST(snapshot_files_stream_and_verify)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/snap", test_tmpdir());
    write_snap(dir, NULL, 100, 2, 3 << 20);
    write_snap(dir, NULL, 200, 3, 1000);
    write_snap(dir, NULL, 300, 3, 0);
    struct wal_snap_writer *s;
    CHECK_EQ(wal_snap_create(dir, NULL, 300, 3, &s), BATON_EEXIST);
    CHECK_OK(wal_snap_create(dir, NULL, 400, 3, &s)); /* abandoned: a stale temp file */
    uint8_t x[16] = {1};
    CHECK_OK(wal_snap_write(s, x, sizeof(x)));
    CHECK_EQ(wal_snap_write(s, x, WAL_SNAP_CHUNK_MAX + 1), BATON_ETOOBIG);
    wal_snap_abort(s);
    char name[128];
    CHECK_OK(wal_snap_latest(dir, NULL, name, sizeof(name)));
    CHECK_STR(name, "0000000000000003-000000000000012c.snap");

    /* Stream the big one back in chunks. */
    struct wal_snap_reader *r;
    struct wal_snap_info info;
    char em[512];
    CHECK_OK(wal_snap_open(dir, "0000000000000002-0000000000000064.snap", NULL, &r, &info, em,
                           sizeof(em)));
    CHECK_EQ(info.index, 100);
    CHECK_EQ(info.term, 2);
    CHECK_EQ(info.len, 3 << 20);
    static uint8_t got[100000], want[100000];
    uint64_t off = 0;
    for (;;) {
        size_t n;
        CHECK_OK(wal_snap_read(r, got, sizeof(got), &n));
        if (n == 0)
            break;
        snap_bytes(want, n, off);
        CHECK_MEM(got, n, want, n);
        off += n;
    }
    CHECK_EQ(off, 3 << 20);
    wal_snap_close(r);

    /* Purge keeps the newest two. */
    uint32_t removed;
    CHECK_OK(wal_snap_purge(dir, NULL, 2, &removed));
    CHECK_EQ(removed, 1);
    CHECK_EQ(wal_snap_open(dir, "0000000000000002-0000000000000064.snap", NULL, &r, &info, em,
                           sizeof(em)),
             -ENOENT);
}

TEST(snapshot_corruption_names_the_path)
{
    char dir[512], path[700];
    snprintf(dir, sizeof(dir), "%s/snap", test_tmpdir());
    write_snap(dir, NULL, 7, 1, 100000);
    const char *name = "0000000000000001-0000000000000007.snap";
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct wal_snap_reader *r;
    struct wal_snap_info info;
    char em[512];
    /* One flipped bit in the content, then one in the header, then a truncated file. */
    uint64_t offs[] = {48 + 5000, 20, 0};
    for (size_t k = 0; k < 3; k++) {
        int fd = open(path, O_RDWR);
        CHECK_GE(fd, 0);
        uint8_t b;
        if (k < 2) {
            CHECK_EQ(pread(fd, &b, 1, (off_t)offs[k]), 1);
            b ^= 0x10;
            CHECK_EQ(pwrite(fd, &b, 1, (off_t)offs[k]), 1);
        } else {
            CHECK_EQ(ftruncate(fd, 48 + 99999), 0);
        }
        close(fd);
        CHECK_EQ(wal_snap_open(dir, name, NULL, &r, &info, em, sizeof(em)), BATON_ECORRUPT);
        test_log("%s", em);
        CHECK(strstr(em, path) != NULL);
        write_snap(dir, NULL, 8 + k, 1, 10); /* unrelated files do not matter */
        unlink(path);
        write_snap(dir, NULL, 7, 1, 100000);
    }
}

TEST(snapshot_crash_before_rename_leaves_nothing)
{
    struct memfs *fs = memfs_new();
    const struct wal_io *io = memfs_io(fs);
    write_snap("/s", io, 10, 1, 5000);
    /* Cut the power at every step of writing the next snapshot: afterwards either the old one
     * is the latest or the new one is, complete and verified. */
    uint64_t base = memfs_ops(fs);
    int saw_old = 0, saw_new = 0;
    for (uint64_t cut = 1; cut < 40; cut++) {
        memfs_fail_from_op(fs, memfs_ops(fs) + cut);
        struct wal_snap_writer *s;
        int rc = wal_snap_create("/s", io, 20, 1, &s);
        uint8_t chunk[1000];
        for (int i = 0; i < 5 && !rc; i++) {
            snap_bytes(chunk, sizeof(chunk), (uint64_t)i * 1000);
            rc = wal_snap_write(s, chunk, sizeof(chunk));
        }
        if (!rc)
            rc = wal_snap_finish(s);
        else if (s && rc != BATON_EEXIST)
            wal_snap_abort(s);
        memfs_power_cut(fs, cut);
        char name[128];
        CHECK_OK(wal_snap_latest("/s", io, name, sizeof(name)));
        struct wal_snap_reader *r;
        struct wal_snap_info info;
        char em[256];
        CHECK_OK(wal_snap_open("/s", name, io, &r, &info, em, sizeof(em)));
        wal_snap_close(r);
        if (info.index == 20) {
            saw_new++;
            break;
        }
        saw_old++;
        CHECK_EQ(info.index, 10);
    }
    test_log("cuts leaving the old snapshot: %d, the new one: %d (ops before: %" PRIu64 ")",
             saw_old, saw_new, base);
    CHECK_EQ(saw_new, 1);
    CHECK_GT(saw_old, 3);
    memfs_free(fs);
}

TEST(posix_io_table_roundtrip)
{
    const struct wal_io *io = wal_io_posix();
    char path[600];
    snprintf(path, sizeof(path), "%s/f", test_tmpdir());
    int fd = io->open(io->ctx, path, O_RDWR | O_CREAT | O_EXCL, 0644);
    CHECK_GE(fd, 0);
    CHECK_EQ(io->open(io->ctx, path, O_RDWR | O_CREAT | O_EXCL, 0644), -EEXIST);
    CHECK_OK(io->fallocate(io->ctx, fd, 0, 8192));
    uint64_t size;
    CHECK_OK(io->file_size(io->ctx, fd, &size));
    CHECK_EQ(size, 8192);
    CHECK_EQ(io->pwrite(io->ctx, fd, "abc", 3, 100), 3);
    CHECK_OK(io->fdatasync(io->ctx, fd));
    char b[3];
    CHECK_EQ(io->pread(io->ctx, fd, b, 3, 100), 3);
    CHECK_MEM(b, 3, "abc", 3);
    CHECK_OK(io->ftruncate(io->ctx, fd, 50));
    CHECK_EQ(io->pread(io->ctx, fd, b, 3, 100), 0);
    CHECK_OK(io->close(io->ctx, fd));
    CHECK_OK(io->fsync_dir(io->ctx, test_tmpdir()));
    CHECK_EQ(io->unlink(io->ctx, "/nonexistent/x"), -ENOENT);
}

TEST(read_while_writing)
{
    /* The loop thread reads back durable entries while the WAL thread keeps writing and rolling
     * segments. */
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/wal", test_tmpdir());
    struct wal *w = open_wal(dir, NULL, 32 << 10);
    uint64_t seq = 0, next = 1;
    int reads = 0;
    struct walt_got *g = calloc(1, sizeof(*g));
    CHECK(g);
    for (int round = 0; round < 200; round++) {
        int rc = walt_submit_range(w, next, next + 4, 1, NULL, &seq);
        if (rc == BATON_EBUSY) {
            CHECK_OK(wal_wait(w, seq));
            continue;
        }
        CHECK_OK(rc);
        next += 5;
        struct wal_progress p;
        wal_poll(w, &p);
        if (p.durable_index) {
            memset(g, 0, sizeof(*g));
            CHECK_OK(wal_read_entries(w, 1, p.durable_index, walt_collect, g));
            CHECK_EQ(g->first, 1);
            CHECK_GE(g->n, p.durable_index);
            CHECK_EQ(g->bad, 0);
            reads++;
        }
    }
    CHECK_OK(wal_wait(w, seq));
    test_log("%d reads during %" PRIu64 " entries written over %u segments", reads, next - 1,
             wal_segments(w));
    free(g);
    CHECK_OK(wal_close(w));
}

TEST(no_thread_mode_is_deterministic)
{
    struct memfs *fs = memfs_new();
    struct notify_ctx nc = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct wal_options o = {.dir = "/d",
                            .io = memfs_io(fs),
                            .segment_bytes = 64 << 10,
                            .no_thread = true,
                            .notify = notify_fn,
                            .notify_ctx = &nc};
    struct wal *w;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    uint64_t syncs0 = memfs_fdatasyncs(fs), seq = 0;
    for (uint64_t i = 1; i <= 30; i += 10)
        CHECK_OK(walt_submit_range(w, i, i + 9, 1, NULL, &seq));
    struct wal_progress p;
    wal_poll(w, &p);
    CHECK_EQ(p.durable_seq, 0); /* nothing happens behind the caller's back */
    CHECK_EQ(memfs_fdatasyncs(fs), syncs0);
    CHECK_OK(wal_step(w));
    wal_poll(w, &p);
    CHECK_EQ(p.durable_seq, 3);
    CHECK_EQ(p.durable_index, 30);
    CHECK_EQ(memfs_fdatasyncs(fs) - syncs0, 1); /* three batches, one group, one fdatasync */
    CHECK_EQ(nc.calls, 1);
    CHECK_OK(walt_submit_range(w, 31, 31, 1, NULL, &seq));
    CHECK_OK(wal_wait(w, seq)); /* runs the group itself */
    CHECK_EQ(nc.calls, 2);
    CHECK_OK(walt_submit_range(w, 32, 32, 1, NULL, &seq));
    CHECK_OK(wal_close(w)); /* drains */
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    struct wal_state st;
    wal_state_get(w, &st);
    CHECK_EQ(st.last_index, 32);
    CHECK_OK(wal_close(w));
    memfs_free(fs);
}

TEST(fragment_after_clean_end_is_cut)
{
    /* Found by fuzz_wal_segment: the last segment ends cleanly (zeros), but a fragment of a
     * record sits further on at the very end of a short file. Extending the file with zeros
     * completed the fragment into a valid record, and the next open refused the log. Any
     * non-zero byte after the end of the last segment is now cut at open. */
    struct memfs *fs = memfs_new();
    struct wal_options o = {.dir = "/t", .io = memfs_io(fs), .log = &tlog, .segment_bytes = 8192};
    struct wal *w;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    CHECK_OK(wal_close(w));
    const char *path = "/t/0000000000000001-0000000000000001.wal";
    uint8_t *d;
    size_t n;
    CHECK_OK(memfs_read_file(fs, path, &d, &n));
    /* The head snapshot marker (index 0, term 0) is a 32-byte record with a zero payload:
     * its first 20 bytes, zero-completed, are a valid record again. */
    uint8_t file[220] = {0};
    memcpy(file, d, 104);           /* header + head records */
    memcpy(file + 200, d + 32, 20); /* the fragment */
    free(d);
    CHECK_OK(memfs_write_file(fs, path, file, sizeof(file)));
    int warns0 = tlog_warns;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    CHECK_EQ(tlog_warns, warns0 + 1);
    test_log("%s", tlog_warn_last);
    CHECK(strstr(tlog_warn_last, "offset=104") != NULL);
    CHECK(strstr(tlog_warn_last, path) != NULL);
    uint64_t seq;
    CHECK_OK(walt_submit_range(w, 1, 1, 1, NULL, &seq));
    CHECK_OK(wal_wait(w, seq));
    CHECK_OK(wal_close(w));
    char em[256];
    int rc = wal_open(&o, &w, em, sizeof(em));
    if (rc)
        test_fail(__FILE__, __LINE__, "reopen: %s", em);
    struct wal_state st;
    wal_state_get(w, &st);
    CHECK_EQ(st.last_index, 1);
    CHECK_OK(wal_close(w));
    memfs_free(fs);
}

/* Every fdatasync of the log is timed and handed over once; the WAL keeps a bounded number of
 * samples nobody took. */
TEST(fsync_durations_sampled)
{
    struct memfs *fs = memfs_new();
    memfs_sync_delay_us(fs, 2000); /* each fdatasync takes at least 2 ms */
    struct wal *w = open_wal("/s", memfs_io(fs), 4 << 20);
    uint64_t ns[WAL_FSYNC_SAMPLES + 8];
    wal_fsync_samples(w, ns, BATON_ARRAY_LEN(ns)); /* whatever opening did */
    struct wal_progress p0, p1;
    wal_poll(w, &p0);
    for (uint64_t i = 1; i <= 5; i++)
        submit_wait(w, i, i, 1, NULL);
    wal_poll(w, &p1);
    size_t n = wal_fsync_samples(w, ns, BATON_ARRAY_LEN(ns));
    CHECK_EQ(n, p1.fsyncs - p0.fsyncs);
    CHECK_GE(n, 5);
    for (size_t i = 0; i < n; i++)
        CHECK_GE(ns[i], 2000000);
    CHECK_EQ(wal_fsync_samples(w, ns, BATON_ARRAY_LEN(ns)), 0); /* taken once */
    memfs_sync_delay_us(fs, 0);
    for (uint64_t i = 6; i < 6 + WAL_FSYNC_SAMPLES + 20; i++)
        submit_wait(w, i, i, 1, NULL);
    CHECK_EQ(wal_fsync_samples(w, ns, 3), 3); /* at most max at a time */
    CHECK_EQ(wal_fsync_samples(w, ns, BATON_ARRAY_LEN(ns)), WAL_FSYNC_SAMPLES - 3);
    CHECK_OK(wal_close(w));
    memfs_free(fs);
}
