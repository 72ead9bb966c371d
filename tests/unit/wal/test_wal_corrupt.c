/* The corruption matrix: a real WAL on disk is cut, zeroed and bit-flipped at every record
 * boundary and at several offsets inside records; recovery must truncate a torn tail of the last
 * segment and return exactly the records before it, and must refuse (BATON_ECORRUPT, naming the
 * file and the offset) anything bad elsewhere. The format walk below follows wal.h's layout. */
#include "test.h"
#include "walt.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEG_BYTES (16 << 10)

struct frame {
    uint64_t off, end; /* end: off + 16 + len (without padding) */
    uint8_t type;
    uint64_t index; /* entries */
};

struct segfile {
    char name[256];
    struct frame fr[512];
    int n;
    uint64_t entries_before; /* entries in earlier segments */
};

static struct segfile segs[32];
static int nsegs;
static char orig[512], work[512];
static int warns;
static char warn_line[1024];

static void sink_fn(void *ctx, enum log_level level, const char *line, size_t len)
{
    if (level >= LOG_WARN) {
        warns++;
        snprintf(warn_line, sizeof(warn_line), "%.*s", (int)len, line);
    }
}
static const struct log_sink sink = {.fn = sink_fn, .min_level = LOG_WARN};

/* dir/name into out; a path that does not fit fails the test. */
static void join(char *out, size_t n, const char *dir, const char *name)
{
    int len = snprintf(out, n, "%s/%s", dir, name);
    CHECK(len > 0 && (size_t)len < n);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const struct segfile *)a)->name, ((const struct segfile *)b)->name);
}

static void read_file(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(*len + 1);
    CHECK(fread(*data, 1, *len, f) == *len);
    fclose(f);
}

static void write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK(fwrite(data, 1, len, f) == len);
    fclose(f);
}

/* Walks the frames of every segment of orig. */
static void map_segments(void)
{
    DIR *d = opendir(orig);
    CHECK(d);
    struct dirent *e;
    nsegs = 0;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".wal") && nsegs < 32)
            snprintf(segs[nsegs++].name, sizeof(segs[0].name), "%s", e->d_name);
    closedir(d);
    qsort(segs, (size_t)nsegs, sizeof(segs[0]), name_cmp);
    uint64_t entries = 0;
    for (int s = 0; s < nsegs; s++) {
        char path[1024];
        join(path, sizeof(path), orig, segs[s].name);
        uint8_t *p;
        size_t len;
        read_file(path, &p, &len);
        segs[s].entries_before = entries;
        segs[s].n = 0;
        for (uint64_t off = 32; off + 16 <= len && p[off + 8] != 0;) {
            uint32_t n = le32_get(p + off + 4);
            struct frame *f = &segs[s].fr[segs[s].n++];
            f->off = off, f->end = off + 16 + n, f->type = p[off + 8];
            f->index = f->type == 1 ? le64_get(p + off + 16) : 0;
            entries += f->type == 1;
            off += 16 + ((n + 7u) & ~7u);
        }
        free(p);
    }
}

/* Replaces work with a fresh copy of orig (files only; the WAL directory is flat). */
static void copy_orig(void)
{
    char from[1024], to[1024];
    DIR *d = opendir(work);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') {
                join(to, sizeof(to), work, e->d_name);
                CHECK_EQ(unlink(to), 0);
            }
        closedir(d);
    } else {
        CHECK_EQ(mkdir(work, 0755), 0);
    }
    for (int s = 0; s < nsegs; s++) {
        join(from, sizeof(from), orig, segs[s].name);
        join(to, sizeof(to), work, segs[s].name);
        uint8_t *p;
        size_t len;
        read_file(from, &p, &len);
        write_file(to, p, len);
        free(p);
    }
}

/* Opens the work copy: rc, and on success the number of entries and the last index. */
static int try_open(uint64_t *n, char *em, size_t em_len)
{
    /* No WAL thread: recovery is what is tested here, and 700 thread start-ups add up. */
    struct wal_options o = {
        .dir = work, .log = &sink, .segment_bytes = SEG_BYTES, .no_thread = true};
    struct wal *w;
    int rc = wal_open(&o, &w, em, em_len);
    if (rc)
        return rc;
    struct walt_got *g = calloc(1, sizeof(*g));
    CHECK_OK(wal_read_entries(w, 0, UINT64_MAX, walt_collect, g));
    CHECK_EQ(g->bad, 0);
    *n = g->n;
    if (g->n)
        CHECK_EQ(g->first, 1);
    free(g);
    CHECK_OK(wal_close(w));
    return 0;
}

/* Entries expected when the last segment keeps only bytes [0, cut). */
static uint64_t expect_after_cut(const struct segfile *s, uint64_t cut)
{
    uint64_t n = s->entries_before;
    for (int i = 0; i < s->n && s->fr[i].end <= cut; i++)
        n += s->fr[i].type == 1;
    return n;
}

static void mutate(const char *name, uint64_t off, int how, uint8_t flip)
{
    char path[1024];
    join(path, sizeof(path), work, name);
    uint8_t *p;
    size_t len;
    read_file(path, &p, &len);
    if (how == 0) /* cut the file short */
        len = (size_t)off;
    else if (how == 1) /* zero from off on (a preallocated file whose write never landed) */
        memset(p + off, 0, len - off);
    else /* flip bits of one byte */
        p[off] ^= flip;
    write_file(path, p, len);
    free(p);
}

static struct {
    int cases, truncated_ok, clean_ok, corrupt_ok;
} sum;

static void tail_case(int how, uint64_t cut)
{
    const struct segfile *last = &segs[nsegs - 1];
    copy_orig();
    mutate(last->name, cut, how, 0);
    uint64_t n = 0;
    char em[512];
    int w0 = warns;
    int rc = try_open(&n, em, sizeof(em));
    if (rc)
        test_fail(__FILE__, __LINE__, "cut %s at %" PRIu64 ": %s: %s", how ? "zero" : "trunc", cut,
                  baton_strerror(rc), em);
    CHECK_EQ(n, expect_after_cut(last, cut));
    bool boundary = false;
    for (int i = 0; i < last->n; i++)
        boundary |= last->fr[i].off == cut || last->fr[i].end == cut;
    boundary |= cut >= last->fr[last->n - 1].end;
    sum.cases++;
    if (warns > w0) {
        CHECK(strstr(warn_line, last->name) != NULL);
        CHECK(strstr(warn_line, "offset=") != NULL);
        sum.truncated_ok++;
    } else {
        /* No warning only where nothing was torn: a cut exactly at a record boundary. */
        CHECK(boundary || how == 1);
        sum.clean_ok++;
    }
}

static void corrupt_case(int seg, uint64_t rec_off, uint64_t at, const char *what)
{
    copy_orig();
    mutate(segs[seg].name, at, 2, 0x04);
    uint64_t n;
    char em[512], want[64];
    int rc = try_open(&n, em, sizeof(em));
    if (rc != BATON_ECORRUPT)
        test_fail(__FILE__, __LINE__, "%s: flip at %s+%" PRIu64 " gave %s (%" PRIu64 " entries)",
                  what, segs[seg].name, at, baton_strerror(rc), n);
    CHECK(strstr(em, segs[seg].name) != NULL);
    snprintf(want, sizeof(want), "at offset %" PRIu64, rec_off);
    const char *hit = strstr(em, want);
    if (!hit || (hit[strlen(want)] >= '0' && hit[strlen(want)] <= '9'))
        test_fail(__FILE__, __LINE__, "%s: \"%s\" lacks \"%s\"", what, em, want);
    sum.cases++;
    sum.corrupt_ok++;
}

TEST(corruption_matrix)
{
    /* The matrix checks decoding and repair, not durability: on tmpfs its ~700 repair
     * fdatasyncs cost nothing, where a shared disk makes them dominate the suite. Real files
     * and the real POSIX I/O table all the same. */
    if (access("/dev/shm", W_OK) == 0)
        setenv("TMPDIR", "/dev/shm", 1);
    snprintf(orig, sizeof(orig), "%s/orig", test_tmpdir());
    snprintf(work, sizeof(work), "%s/work", test_tmpdir());
    struct wal_options o = {.dir = orig, .segment_bytes = SEG_BYTES};
    struct wal *w;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    uint64_t seq = 0;
    struct wal_hard_state hs = {.term = 1, .commit = 5};
    for (uint64_t i = 1; i <= 130; i += 5)
        CHECK_OK(walt_submit_range(w, i, i + 4, 1, &hs, &seq));
    CHECK_OK(wal_wait(w, seq));
    CHECK_OK(wal_close(w));
    map_segments();
    CHECK_GE(nsegs, 3);
    const struct segfile *last = &segs[nsegs - 1];
    test_log("log: %d segments, last one %s with %d records", nsegs, last->name, last->n);

    /* 1. Cut or zero the last segment at every record boundary and inside every record. */
    for (int i = 0; i < last->n; i++) {
        const struct frame *f = &last->fr[i];
        uint64_t inside[] = {f->off,     f->off + 1,  f->off + 4,
                             f->off + 9, f->off + 16, (f->off + f->end) / 2,
                             f->end - 1, f->end};
        for (size_t k = 0; k < BATON_ARRAY_LEN(inside); k++) {
            tail_case(0, inside[k]);
            tail_case(1, inside[k]);
        }
    }
    int torn = sum.truncated_ok;

    /* 2. Flip bytes in the tail record: torn, truncated. Header fields and payload. */
    const struct frame *tf = &last->fr[last->n - 1];
    uint64_t tail_expect = expect_after_cut(last, tf->off);
    uint64_t flips[] = {0, 3, 4, 8, 12, 16, 20, tf->end - tf->off - 1};
    for (size_t k = 0; k < BATON_ARRAY_LEN(flips); k++) {
        copy_orig();
        mutate(last->name, tf->off + flips[k], 2, 0x01);
        uint64_t n;
        char em[512];
        int rc = try_open(&n, em, sizeof(em));
        if (rc)
            test_fail(__FILE__, __LINE__, "tail flip +%" PRIu64 ": %s", flips[k], em);
        CHECK_EQ(n, tail_expect);
        sum.cases++;
        sum.truncated_ok++;
    }

    /* 3. Flip bytes in middle records of the last segment and in every record of the first
     *    segment (and the last record of a middle one): hard errors naming file and offset. */
    for (int i = 0; i + 1 < last->n; i += 3) {
        const struct frame *f = &last->fr[i];
        corrupt_case(nsegs - 1, f->off, f->off + 2, "last segment, middle record");
        corrupt_case(nsegs - 1, f->off, f->off + 17, "last segment, middle record payload");
    }
    for (int i = 0; i < segs[0].n; i++) {
        const struct frame *f = &segs[0].fr[i];
        corrupt_case(0, f->off, f->off + 5, "first segment, length field");
        corrupt_case(0, f->off, f->end - 1, "first segment, payload");
    }
    const struct frame *mf = &segs[1].fr[segs[1].n - 1];
    corrupt_case(1, mf->off, mf->off + 16, "middle segment, its last record");

    /* 4. Structural damage: a segment header, a missing segment. */
    copy_orig();
    mutate(segs[1].name, 10, 2, 0x80);
    char em[512];
    uint64_t n;
    CHECK_EQ(try_open(&n, em, sizeof(em)), BATON_ECORRUPT);
    CHECK(strstr(em, segs[1].name) && strstr(em, "offset 0"));
    test_log("bad header: %s", em);
    copy_orig();
    char path[1024];
    join(path, sizeof(path), work, segs[1].name);
    CHECK_EQ(unlink(path), 0);
    CHECK_EQ(try_open(&n, em, sizeof(em)), BATON_ECORRUPT);
    test_log("missing segment: %s", em);
    sum.cases += 2;
    sum.corrupt_ok += 2;

    /* 5. After a torn-tail repair the log takes new records and reopens cleanly. */
    copy_orig();
    mutate(last->name, tf->off + 20, 0, 0);
    o.dir = work;
    CHECK_OK(wal_open(&o, &w, NULL, 0));
    struct wal_state st;
    wal_state_get(w, &st);
    CHECK_OK(walt_submit_range(w, st.last_index + 1, st.last_index + 3, 2, NULL, &seq));
    CHECK_OK(wal_wait(w, seq));
    CHECK_OK(wal_close(w));
    CHECK_OK(try_open(&n, em, sizeof(em)));
    CHECK_EQ(n, st.last_index + 3);

    test_log("corruption matrix: %d cases: %d torn tails truncated (%d by cut/zero, %d by flip), "
             "%d clean ends, %d hard errors with file+offset",
             sum.cases, sum.truncated_ok, torn, sum.truncated_ok - torn, sum.clean_ok,
             sum.corrupt_ok);
    printf("corruption matrix summary: cases=%d truncated=%d clean=%d corrupt=%d\n", sum.cases,
           sum.truncated_ok, sum.clean_ok, sum.corrupt_ok);
}
