/*
 * The write-ahead log: segment files, record framing, recovery and the group-commit WAL thread.
 *
 * Recovery and the writer share one model of the log (struct wal_log): the live entries' file
 * locations plus the latest hard state and snapshot marker. Recovery feeds it the records it
 * reads; the WAL thread feeds it the records it writes. Two mutexes split the work: `mu` guards
 * the submission queue and the durability report (taken briefly by the loop thread on every
 * submit/poll), `log_mu` guards the model and the segment list (held by the WAL thread while it
 * writes, never while it fdatasyncs a group, so submitters never wait for the disk).
 */
#include "wal/wal_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAL_DEFAULT_SEGMENT_BYTES (64ull << 20)
#define WAL_DEFAULT_QUEUE_BATCHES 1024u
#define WAL_DEFAULT_QUEUE_BYTES   (64ull << 20)
#define WAL_READ_WINDOW           (256u << 10)
#define WAL_SEGMENTS_MAX          65536u
#define WAL_THREAD_STACK_BYTES    (256u << 10)

struct wal_loc {
    uint64_t seq; /* segment */
    uint32_t off; /* frame offset */
    uint32_t len; /* payload length */
};

struct wal_seg {
    uint64_t seq;
    uint64_t first_index;
    uint64_t max_index; /* highest entry index written into it (0: none) */
    int fd;
};

struct wal_log {
    struct wal_loc *v; /* live entries; v[i] is index first + i */
    size_t len, cap;
    uint64_t first;
    uint64_t next; /* expected next entry index; 0 while unknown at the start of recovery */
    struct wal_hard_state hs;
    struct wal_snap_marker snap;
};

struct wal_batch_q {
    struct wal_batch_q *next;
    uint64_t seq;
    struct buf rec; /* framed records */
};

struct wal {
    const struct wal_io *io;
    const struct log_sink *log;
    char dir[WAL_PATH_MAX];
    uint64_t segment_bytes;
    uint32_t queue_batches_max;
    uint64_t queue_bytes_max;
    uint32_t record_bytes_max;
    void (*notify)(void *ctx);
    void *notify_ctx;

    /* Loop thread only: what has been submitted. */
    uint64_t sub_seq;
    uint64_t sub_last;
    struct wal_snap_marker sub_snap;
    struct wal_hard_state sub_hs;

    /* Guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond; /* queue non-empty or closing (WAL thread); progress (waiters) */
    struct wal_batch_q *q_head, *q_tail;
    uint32_t q_batches; /* queued or being written */
    uint64_t q_bytes;
    bool closing;
    struct wal_progress prog;
    uint64_t durable_snap_index;
    uint64_t fsync_ns[WAL_FSYNC_SAMPLES]; /* ring of durations not yet taken */
    size_t fsync_head, fsync_len;

    /* Guarded by log_mu (WAL thread writes; loop thread reads and releases). */
    pthread_mutex_t log_mu;
    struct wal_log lg;
    struct wal_seg *segs;
    size_t segs_len, segs_cap;
    uint64_t seg_off; /* write offset in the last segment */
    uint64_t seg_cap; /* its preallocated size */

    /* WAL thread only (or the caller of wal_step in no_thread mode). */
    struct buf wbuf;
    bool no_thread;
    bool thread_started;
    pthread_t thread;
};

/* ---- Helpers ------------------------------------------------------------------------------- */

void wal_errf(char *msg, size_t msg_len, const char *fmt, ...)
{
    if (!msg || msg_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msg_len, fmt, ap);
    va_end(ap);
}

int wal_read_full(const struct wal_io *io, int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = io->pread(io->ctx, fd, p, len, off);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return BATON_ECORRUPT; /* the file is shorter than its structure says */
        p += n, len -= (size_t)n, off += (uint64_t)n;
    }
    return 0;
}

int wal_write_full(const struct wal_io *io, int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = io->pwrite(io->ctx, fd, p, len, off);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO;
        p += n, len -= (size_t)n, off += (uint64_t)n;
    }
    return 0;
}

static void seg_name(char *out, size_t out_len, uint64_t seq, uint64_t first_index)
{
    snprintf(out, out_len, "%016" PRIx64 "-%016" PRIx64 ".wal", seq, first_index);
}

static void seg_path(const struct wal *w, char *out, size_t out_len, const struct wal_seg *s)
{
    char name[64];
    seg_name(name, sizeof(name), s->seq, s->first_index);
    snprintf(out, out_len, "%s/%s", w->dir, name);
}

static bool parse_seg_name(const char *name, uint64_t *seq, uint64_t *first_index)
{
    if (strlen(name) != 37 || name[16] != '-' || strcmp(name + 33, ".wal") != 0)
        return false;
    char tmp[17];
    for (int part = 0; part < 2; part++) {
        memcpy(tmp, name + part * 17, 16);
        tmp[16] = 0;
        for (int i = 0; i < 16; i++)
            if (!((tmp[i] >= '0' && tmp[i] <= '9') || (tmp[i] >= 'a' && tmp[i] <= 'f')))
                return false;
        uint64_t v = strtoull(tmp, NULL, 16);
        *(part == 0 ? seq : first_index) = v;
    }
    return true;
}

/* Frames one record at the end of b. */
static int rec_append(struct buf *b, enum wal_rec_type type, const void *p1, size_t n1,
                      const void *p2, size_t n2)
{
    size_t len = n1 + n2;
    size_t total = WAL_REC_HDR + (size_t)wal_align8(len);
    int rc = buf_reserve(b, total);
    if (rc)
        return rc;
    uint8_t *f = b->data + b->len;
    memset(f, 0, total);
    le32_put(f + 4, (uint32_t)len);
    f[8] = (uint8_t)type;
    if (n1)
        memcpy(f + WAL_REC_HDR, p1, n1);
    if (n2)
        memcpy(f + WAL_REC_HDR + n1, p2, n2);
    uint32_t crc = crc32c_extend(crc32c(f + 4, WAL_REC_HDR - 4), f + WAL_REC_HDR, len);
    le32_put(f, crc);
    b->len += total;
    return 0;
}

static int rec_append_u64s(struct buf *b, enum wal_rec_type type, const uint64_t *v, size_t n)
{
    uint8_t p[24];
    BATON_ASSERT(n <= 3);
    for (size_t i = 0; i < n; i++)
        le64_put(p + 8 * i, v[i]);
    return rec_append(b, type, p, 8 * n, NULL, 0);
}

static int rec_append_entry(struct buf *b, const struct wal_entry *e)
{
    uint8_t h[WAL_ENTRY_HDR] = {0};
    le64_put(h, e->index);
    le64_put(h + 8, e->term);
    le32_put(h + 16, e->type);
    return rec_append(b, WAL_REC_ENTRY, h, sizeof(h), e->data, e->len);
}

static bool rec_type_valid(uint8_t t)
{
    return t >= WAL_REC_ENTRY && t <= WAL_REC_TRUNCATE;
}

/* Checks the frame at f (avail bytes readable). Returns true with *len set when it is a whole,
 * CRC-valid record. */
static bool rec_check(const uint8_t *f, uint64_t avail, uint32_t *len)
{
    if (avail < WAL_REC_HDR || !rec_type_valid(f[8]))
        return false;
    for (int i = 9; i < 16; i++)
        if (f[i])
            return false;
    uint32_t n = le32_get(f + 4);
    if ((uint64_t)n > avail - WAL_REC_HDR)
        return false;
    uint32_t crc = crc32c_extend(crc32c(f + 4, WAL_REC_HDR - 4), f + WAL_REC_HDR, n);
    if (crc != le32_get(f))
        return false;
    *len = n;
    return true;
}

/* ---- The log model ------------------------------------------------------------------------- */

static uint64_t log_last(const struct wal_log *l)
{
    return l->next ? l->next - 1 : l->snap.index;
}

static int log_push(struct wal_log *l, uint64_t index, struct wal_loc loc)
{
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        struct wal_loc *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return BATON_ENOMEM;
        l->v = v, l->cap = cap;
    }
    if (l->len == 0)
        l->first = index;
    l->v[l->len++] = loc;
    l->next = index + 1;
    return 0;
}

/* Applies one decoded record. BATON_ECORRUPT (with why) for a record that breaks the log's
 * rules; the writer validates batches first, so there it can only mean a bug. */
static int log_apply(struct wal_log *l, uint8_t type, const uint8_t *p, uint32_t n,
                     struct wal_loc loc, uint64_t *entry_index, const char **why)
{
    *entry_index = 0;
    switch (type) {
    case WAL_REC_ENTRY: {
        if (n < WAL_ENTRY_HDR)
            return *why = "short entry record", BATON_ECORRUPT;
        uint64_t index = le64_get(p);
        if (index == 0 || index <= l->snap.index)
            return *why = "entry at or below the snapshot marker", BATON_ECORRUPT;
        if (l->next && index != l->next)
            return *why = "entry index out of sequence", BATON_ECORRUPT;
        *entry_index = index;
        return log_push(l, index, loc);
    }
    case WAL_REC_HARDSTATE:
        if (n != 24)
            return *why = "bad hard state record size", BATON_ECORRUPT;
        l->hs = (struct wal_hard_state){le64_get(p), le64_get(p + 8), le64_get(p + 16)};
        return 0;
    case WAL_REC_SNAP: {
        if (n != 16)
            return *why = "bad snapshot marker size", BATON_ECORRUPT;
        struct wal_snap_marker m = {le64_get(p), le64_get(p + 8)};
        if (m.index < l->snap.index)
            return *why = "snapshot marker goes backwards", BATON_ECORRUPT;
        if (l->len && m.index >= l->first) {
            size_t drop = (size_t)BATON_MIN((uint64_t)l->len, m.index - l->first + 1);
            memmove(l->v, l->v + drop, (l->len - drop) * sizeof(*l->v));
            l->len -= drop;
            l->first += drop;
        }
        l->snap = m;
        if (l->next && l->next <= m.index)
            l->next = m.index + 1;
        return 0;
    }
    case WAL_REC_TRUNCATE: {
        if (n != 8)
            return *why = "bad truncate record size", BATON_ECORRUPT;
        uint64_t from = le64_get(p);
        if (from <= l->snap.index || (l->next && from > l->next))
            return *why = "truncation outside the log", BATON_ECORRUPT;
        if (l->len && from < l->first + l->len)
            l->len = from > l->first ? (size_t)(from - l->first) : 0;
        l->next = from;
        return 0;
    }
    }
    return *why = "unknown record type", BATON_ECORRUPT;
}

/* ---- Segments ------------------------------------------------------------------------------ */

static int segs_push(struct wal *w, struct wal_seg s)
{
    if (w->segs_len == w->segs_cap) {
        size_t cap = w->segs_cap ? w->segs_cap * 2 : 16;
        struct wal_seg *v = realloc(w->segs, cap * sizeof(*v));
        if (!v)
            return BATON_ENOMEM;
        w->segs = v, w->segs_cap = cap;
    }
    w->segs[w->segs_len++] = s;
    return 0;
}

static struct wal_seg *seg_by_seq(struct wal *w, uint64_t seq)
{
    if (w->segs_len == 0 || seq < w->segs[0].seq || seq - w->segs[0].seq >= w->segs_len)
        return NULL;
    return &w->segs[seq - w->segs[0].seq];
}

static void seg_header(uint8_t h[WAL_SEG_HDR], uint64_t seq, uint64_t first_index)
{
    memset(h, 0, WAL_SEG_HDR);
    memcpy(h, WAL_SEG_MAGIC, 8);
    le32_put(h + 8, WAL_SEG_VERSION);
    le64_put(h + 16, seq);
    le64_put(h + 24, first_index);
    le32_put(h + 12, crc32c(h, WAL_SEG_HDR));
}

/* Creates segment seq through a temp file: preallocate; write the header and the log's current
 * snapshot marker and hard state (so earlier segments can be released without losing them);
 * fsync; rename; fsync the directory. A segment under its final name therefore always starts
 * with a durable header and state. On success it is the segment being written. */
static int seg_create(struct wal *w, uint64_t seq)
{
    struct wal_seg s = {.seq = seq, .first_index = log_last(&w->lg) + 1, .fd = -1};
    char path[WAL_PATH_MAX + 64], tmp[WAL_PATH_MAX + 80];
    seg_path(w, path, sizeof(path), &s);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);

    struct buf head = {0};
    uint64_t snapv[2] = {w->lg.snap.index, w->lg.snap.term};
    uint64_t hsv[3] = {w->lg.hs.term, w->lg.hs.vote, w->lg.hs.commit};
    int rc = buf_reserve(&head, WAL_SEG_HDR);
    if (rc)
        return rc;
    seg_header(head.data, s.seq, s.first_index);
    head.len = WAL_SEG_HDR;
    rc = rec_append_u64s(&head, WAL_REC_SNAP, snapv, 2);
    if (!rc)
        rc = rec_append_u64s(&head, WAL_REC_HARDSTATE, hsv, 3);
    if (rc) {
        buf_free(&head);
        return rc;
    }

    const struct wal_io *io = w->io;
    int fd = io->open(io->ctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        buf_free(&head);
        return fd;
    }
    rc = io->fallocate(io->ctx, fd, 0, w->segment_bytes);
    if (!rc)
        rc = wal_write_full(io, fd, head.data, head.len, 0);
    if (!rc)
        rc = io->fsync(io->ctx, fd);
    if (!rc)
        rc = io->rename(io->ctx, tmp, path);
    if (!rc)
        rc = io->fsync_dir(io->ctx, w->dir);
    if (!rc) {
        s.fd = fd;
        rc = segs_push(w, s);
    }
    if (rc) {
        io->close(io->ctx, fd);
        io->unlink(io->ctx, tmp); /* best effort; recovery removes *.tmp anyway */
    } else {
        w->seg_off = head.len;
        w->seg_cap = w->segment_bytes;
    }
    buf_free(&head);
    return rc;
}

/* ---- Recovery ------------------------------------------------------------------------------ */

struct rd {
    const struct wal_io *io;
    int fd;
    uint64_t size;
    uint8_t *buf;
    size_t cap;
    uint64_t boff;
    size_t blen;
};

/* Points *p at [off, off+n) of the file, reading a window around it as needed. */
static int rd_get(struct rd *r, uint64_t off, size_t n, const uint8_t **p)
{
    BATON_ASSERT(off + n <= r->size);
    if (r->blen && off >= r->boff && off + n <= r->boff + r->blen) {
        *p = r->buf + (off - r->boff);
        return 0;
    }
    size_t want = BATON_MAX(n, (size_t)WAL_READ_WINDOW);
    if (off + want > r->size)
        want = (size_t)(r->size - off);
    if (want > r->cap) {
        uint8_t *nb = realloc(r->buf, want);
        if (!nb)
            return BATON_ENOMEM;
        r->buf = nb, r->cap = want;
    }
    r->blen = 0;
    int rc = wal_read_full(r->io, r->fd, r->buf, want, off);
    if (rc)
        return rc;
    r->boff = off, r->blen = want;
    *p = r->buf;
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Looks for any CRC-valid record at an 8-byte boundary in (off, size). *found is its offset. */
static int scan_for_valid(struct rd *r, uint64_t off, bool *found, uint64_t *at)
{
    *found = false;
    for (uint64_t o = off + 8; o + WAL_REC_HDR <= r->size; o += 8) {
        const uint8_t *f;
        int rc = rd_get(r, o, WAL_REC_HDR, &f);
        if (rc)
            return rc;
        uint32_t n = le32_get(f + 4);
        if (!rec_type_valid(f[8]) || !all_zero(f + 9, 7) || n > r->size - o - WAL_REC_HDR)
            continue;
        rc = rd_get(r, o, WAL_REC_HDR + n, &f);
        if (rc)
            return rc;
        uint32_t len;
        if (rec_check(f, WAL_REC_HDR + n, &len)) {
            *found = true, *at = o;
            return 0;
        }
    }
    return 0;
}

/* Sets *dirty when any byte in [off, size) is not zero. */
static int region_is_zero(struct rd *r, uint64_t off, bool *dirty)
{
    *dirty = false;
    while (off < r->size && !*dirty) {
        size_t n = (size_t)BATON_MIN((uint64_t)WAL_READ_WINDOW, r->size - off);
        const uint8_t *p;
        int rc = rd_get(r, off, n, &p);
        if (rc)
            return rc;
        *dirty = !all_zero(p, n);
        off += n;
    }
    return 0;
}

struct seg_scan {
    uint64_t end; /* offset after the last good record */
    bool torn;    /* the bytes at end are not a clean zero frame */
};

static int seg_scan_records(struct wal *w, struct wal_seg *s, struct rd *r, const char *path,
                            bool is_last, struct seg_scan *out, char *em, size_t em_len)
{
    uint64_t off = WAL_SEG_HDR;
    for (;;) {
        const uint8_t *f;
        int rc;
        bool zero = false;
        if (off >= r->size) {
            /* The file ends here, or inside the padding of the last record: the next record
             * goes at the aligned end (the caller extends the file with zeros to it). */
            out->end = off;
            out->torn = false;
            return 0;
        }
        uint64_t avail = r->size - off;
        if (avail < WAL_REC_HDR) {
            rc = rd_get(r, off, (size_t)avail, &f);
            if (rc)
                return rc;
            zero = all_zero(f, (size_t)avail);
        } else {
            rc = rd_get(r, off, WAL_REC_HDR, &f);
            if (rc)
                return rc;
            zero = all_zero(f, WAL_REC_HDR);
            uint32_t n = le32_get(f + 4);
            if (!zero && n <= avail - WAL_REC_HDR) {
                rc = rd_get(r, off, WAL_REC_HDR + n, &f);
                if (rc)
                    return rc;
            }
        }
        uint32_t len;
        if (zero || !rec_check(f, avail, &len)) {
            bool found;
            uint64_t at = 0;
            rc = scan_for_valid(r, off, &found, &at);
            if (rc)
                return rc;
            if (found || (!zero && !is_last)) {
                wal_errf(em, em_len, "wal: corrupt record in %s at offset %" PRIu64 " (%s)", path,
                         off, found ? "a valid record follows it" : "not the last segment");
                if (found)
                    wal_errf(em, em_len,
                             "wal: corrupt record in %s at offset %" PRIu64
                             " (valid record follows at offset %" PRIu64 ")",
                             path, off, at);
                return BATON_ECORRUPT;
            }
            out->end = off;
            out->torn = !zero;
            return 0;
        }
        struct wal_loc loc = {.seq = s->seq, .off = (uint32_t)off, .len = len};
        uint64_t index;
        const char *why = "";
        rc = log_apply(&w->lg, f[8], f + WAL_REC_HDR, len, loc, &index, &why);
        if (rc == BATON_ECORRUPT) {
            wal_errf(em, em_len, "wal: bad record in %s at offset %" PRIu64 ": %s", path, off, why);
            return rc;
        }
        if (rc)
            return rc;
        if (index > s->max_index)
            s->max_index = index;
        off += WAL_REC_HDR + wal_align8(len);
    }
}

/* Zeroes a torn tail physically, so bytes of the torn write can never be mistaken for records
 * once new records are written before them. */
static int seg_cut_tail(struct wal *w, int fd, uint64_t off, uint64_t size)
{
    const struct wal_io *io = w->io;
    int rc = io->ftruncate(io->ctx, fd, off);
    if (!rc)
        rc = io->fallocate(io->ctx, fd, off, BATON_MAX(size, w->segment_bytes) - off);
    if (!rc)
        rc = io->fdatasync(io->ctx, fd);
    return rc;
}

static int seg_open_one(struct wal *w, struct wal_seg *s, bool is_last, char *em, size_t em_len)
{
    const struct wal_io *io = w->io;
    char path[WAL_PATH_MAX + 64];
    seg_path(w, path, sizeof(path), s);
    int fd = io->open(io->ctx, path, O_RDWR, 0);
    if (fd < 0) {
        wal_errf(em, em_len, "wal: open %s: %s", path, baton_strerror(fd));
        return fd;
    }
    s->fd = fd;
    struct rd r = {.io = io, .fd = fd};
    int rc = io->file_size(io->ctx, fd, &r.size);
    if (rc) {
        wal_errf(em, em_len, "wal: stat %s: %s", path, baton_strerror(rc));
        return rc;
    }
    const uint8_t *h;
    if (r.size < WAL_SEG_HDR) {
        wal_errf(em, em_len,
                 "wal: corrupt segment header in %s at offset 0 (file is %" PRIu64 " bytes)", path,
                 r.size);
        return BATON_ECORRUPT;
    }
    rc = rd_get(&r, 0, WAL_SEG_HDR, &h);
    if (rc)
        goto out;
    uint8_t want[WAL_SEG_HDR];
    seg_header(want, s->seq, s->first_index);
    if (memcmp(h, want, WAL_SEG_HDR) != 0) {
        wal_errf(em, em_len, "wal: corrupt segment header in %s at offset 0", path);
        rc = BATON_ECORRUPT;
        goto out;
    }
    struct seg_scan sc;
    rc = seg_scan_records(w, s, &r, path, is_last, &sc, em, em_len);
    if (rc)
        goto out;
    if (is_last) {
        /* Any non-zero byte past the end goes too, torn record or not: once the segment is
         * extended or written again, a fragment there could complete into a valid record. */
        bool dirty = sc.torn;
        if (!dirty && (rc = region_is_zero(&r, sc.end, &dirty)) != 0)
            goto out;
        if (dirty) {
            log_write(w->log, LOG_WARN,
                      "msg=\"wal: truncating torn tail\" file=%s offset=%" PRIu64
                      " dropped_bytes=%" PRIu64,
                      path, sc.end, r.size - sc.end);
            rc = seg_cut_tail(w, fd, sc.end, r.size);
        } else if (r.size < BATON_MAX(sc.end, w->segment_bytes)) {
            rc = io->fallocate(io->ctx, fd, r.size, BATON_MAX(sc.end, w->segment_bytes) - r.size);
        }
        if (rc) {
            wal_errf(em, em_len, "wal: repairing %s at offset %" PRIu64 ": %s", path, sc.end,
                     baton_strerror(rc));
            goto out;
        }
        w->seg_off = sc.end;
        w->seg_cap = BATON_MAX(BATON_MAX(r.size, sc.end), w->segment_bytes);
    }
out:
    free(r.buf);
    if (rc && rc != BATON_ECORRUPT && em && !em[0])
        wal_errf(em, em_len, "wal: reading %s: %s", path, baton_strerror(rc));
    return rc;
}

struct dir_scan {
    struct wal *w;
    struct wal_seg *found;
    size_t len, cap;
    bool removed_tmp;
};

static int dir_scan_fn(void *arg, const char *name)
{
    struct dir_scan *d = arg;
    size_t nl = strlen(name);
    if (nl > 8 && strcmp(name + nl - 8, ".wal.tmp") == 0) {
        char path[WAL_PATH_MAX + 256];
        snprintf(path, sizeof(path), "%s/%s", d->w->dir, name);
        int rc = d->w->io->unlink(d->w->io->ctx, path);
        if (rc && rc != -ENOENT)
            return rc;
        d->removed_tmp = true;
        return 0;
    }
    struct wal_seg s = {.fd = -1};
    if (!parse_seg_name(name, &s.seq, &s.first_index))
        return 0;
    if (d->len == WAL_SEGMENTS_MAX)
        return BATON_ETOOBIG;
    if (d->len == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        struct wal_seg *v = realloc(d->found, cap * sizeof(*v));
        if (!v)
            return BATON_ENOMEM;
        d->found = v, d->cap = cap;
    }
    d->found[d->len++] = s;
    return 0;
}

static int seg_cmp(const void *a, const void *b)
{
    const struct wal_seg *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int wal_recover(struct wal *w, char *em, size_t em_len)
{
    const struct wal_io *io = w->io;
    struct dir_scan d = {.w = w};
    int rc = io->list_dir(io->ctx, w->dir, dir_scan_fn, &d);
    if (rc) {
        wal_errf(em, em_len, "wal: listing %s: %s", w->dir, baton_strerror(rc));
        free(d.found);
        return rc;
    }
    if (d.removed_tmp && (rc = io->fsync_dir(io->ctx, w->dir)) != 0) {
        wal_errf(em, em_len, "wal: fsync dir %s: %s", w->dir, baton_strerror(rc));
        free(d.found);
        return rc;
    }
    if (d.len)
        qsort(d.found, d.len, sizeof(*d.found), seg_cmp);
    w->segs = d.found, w->segs_len = d.len, w->segs_cap = d.cap;
    for (size_t i = 0; i < w->segs_len; i++) {
        if (i > 0 && w->segs[i].seq != w->segs[i - 1].seq + 1) {
            wal_errf(em, em_len,
                     "wal: segment %016" PRIx64 " missing in %s (found %016" PRIx64 " after it)",
                     w->segs[i - 1].seq + 1, w->dir, w->segs[i].seq);
            return BATON_ECORRUPT;
        }
        rc = seg_open_one(w, &w->segs[i], i + 1 == w->segs_len, em, em_len);
        if (rc)
            return rc;
    }
    struct wal_log *l = &w->lg;
    if (l->len && l->first != l->snap.index + 1) {
        wal_errf(em, em_len,
                 "wal: entries %" PRIu64 "..%" PRIu64 " missing in %s (snapshot marker at %" PRIu64
                 ", log resumes at %" PRIu64 ")",
                 l->snap.index + 1, l->first - 1, w->dir, l->snap.index, l->first);
        return BATON_ECORRUPT;
    }
    if (w->segs_len == 0) {
        rc = seg_create(w, 1);
        if (rc) {
            wal_errf(em, em_len, "wal: creating the first segment in %s: %s", w->dir,
                     baton_strerror(rc));
            return rc;
        }
    }
    return 0;
}

/* ---- WAL thread ---------------------------------------------------------------------------- */

/* Writes the buffered records of a group into the current segment. */
static int wal_flush(struct wal *w)
{
    if (w->wbuf.len == 0)
        return 0;
    struct wal_seg *s = &w->segs[w->segs_len - 1];
    int rc = wal_write_full(w->io, s->fd, w->wbuf.data, w->wbuf.len, w->seg_off);
    if (!rc)
        w->seg_off += w->wbuf.len;
    buf_clear(&w->wbuf);
    return rc;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int wal_sync(struct wal *w)
{
    /* Timed for the fsync histogram; the clock only feeds metrics. */
    uint64_t start_ns = mono_ns();
    int rc = w->io->fdatasync(w->io->ctx, w->segs[w->segs_len - 1].fd);
    uint64_t took_ns = mono_ns() - start_ns;
    pthread_mutex_lock(&w->mu);
    w->prog.fsyncs++;
    if (w->fsync_len == WAL_FSYNC_SAMPLES) { /* nobody took them: drop the oldest */
        w->fsync_head = (w->fsync_head + 1) % WAL_FSYNC_SAMPLES;
        w->fsync_len--;
    }
    w->fsync_ns[(w->fsync_head + w->fsync_len++) % WAL_FSYNC_SAMPLES] = took_ns;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

size_t wal_fsync_samples(struct wal *w, uint64_t *ns, size_t max)
{
    pthread_mutex_lock(&w->mu);
    size_t n = BATON_MIN(max, w->fsync_len);
    for (size_t i = 0; i < n; i++)
        ns[i] = w->fsync_ns[(w->fsync_head + i) % WAL_FSYNC_SAMPLES];
    w->fsync_head = (w->fsync_head + n) % WAL_FSYNC_SAMPLES;
    w->fsync_len -= n;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* Appends one framed record to the group, rolling to a new segment when it does not fit. */
static int wal_put_record(struct wal *w, const uint8_t *f, size_t total)
{
    int rc;
    if (w->seg_off + w->wbuf.len + total > w->seg_cap) {
        /* Everything in this segment is durable before the next one exists. */
        if ((rc = wal_flush(w)) != 0 || (rc = wal_sync(w)) != 0)
            return rc;
        if ((rc = seg_create(w, w->segs[w->segs_len - 1].seq + 1)) != 0)
            return rc;
    }
    BATON_ASSERT(w->seg_off + w->wbuf.len + total <= w->seg_cap);
    struct wal_seg *s = &w->segs[w->segs_len - 1];
    uint32_t len = le32_get(f + 4);
    struct wal_loc loc = {.seq = s->seq, .off = (uint32_t)(w->seg_off + w->wbuf.len), .len = len};
    uint64_t index;
    const char *why = "";
    rc = log_apply(&w->lg, f[8], f + WAL_REC_HDR, len, loc, &index, &why);
    BATON_ASSERT(rc != BATON_ECORRUPT); /* wal_submit validated the batch */
    if (rc)
        return rc;
    if (index > s->max_index)
        s->max_index = index;
    return buf_append(&w->wbuf, f, total);
}

static int wal_write_group(struct wal *w, struct wal_batch_q *g)
{
    int rc = 0;
    pthread_mutex_lock(&w->log_mu);
    for (struct wal_batch_q *b = g; b && !rc; b = b->next) {
        for (size_t off = 0; off < b->rec.len && !rc;) {
            const uint8_t *f = b->rec.data + off;
            size_t total = WAL_REC_HDR + (size_t)wal_align8(le32_get(f + 4));
            rc = wal_put_record(w, f, total);
            off += total;
        }
    }
    if (!rc)
        rc = wal_flush(w);
    pthread_mutex_unlock(&w->log_mu);
    return rc;
}

/* Writes and syncs everything queued as one group and reports it. Called with mu held and the
 * queue non-empty; returns with mu held (it is released while writing and while notifying). */
static void wal_group_run(struct wal *w)
{
    struct wal_batch_q *g = w->q_head;
    uint64_t last_seq = w->q_tail->seq;
    w->q_head = w->q_tail = NULL;
    bool failed = w->prog.err != 0;
    pthread_mutex_unlock(&w->mu);

    int rc = failed ? 0 : wal_write_group(w, g);
    if (!failed && !rc)
        rc = wal_sync(w);
    pthread_mutex_lock(&w->log_mu);
    uint64_t last_index = log_last(&w->lg);
    struct wal_hard_state hs = w->lg.hs;
    uint64_t snap_index = w->lg.snap.index;
    pthread_mutex_unlock(&w->log_mu);

    pthread_mutex_lock(&w->mu);
    uint32_t nb = 0;
    uint64_t bytes = 0;
    for (struct wal_batch_q *b = g; b;) {
        struct wal_batch_q *next = b->next;
        nb++, bytes += b->rec.len;
        buf_free(&b->rec);
        free(b);
        b = next;
    }
    w->q_batches -= nb;
    w->q_bytes -= bytes;
    if (rc && !w->prog.err) {
        w->prog.err = rc;
        log_write(w->log, LOG_ERROR, "msg=\"wal: write failed, wal stopped\" dir=%s err=\"%s\"",
                  w->dir, baton_strerror(rc));
    }
    if (!failed && !rc) {
        w->prog.durable_seq = last_seq;
        w->prog.durable_index = last_index;
        w->prog.hs = hs;
        w->durable_snap_index = snap_index;
    }
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    if (w->notify)
        w->notify(w->notify_ctx);
    pthread_mutex_lock(&w->mu);
}

static void *wal_thread_main(void *arg)
{
    struct wal *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->q_head && !w->closing)
            pthread_cond_wait(&w->cond, &w->mu);
        if (!w->q_head)
            break;
        wal_group_run(w);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- Public API ---------------------------------------------------------------------------- */

static void wal_free(struct wal *w)
{
    for (size_t i = 0; i < w->segs_len; i++)
        if (w->segs[i].fd >= 0)
            w->io->close(w->io->ctx, w->segs[i].fd);
    free(w->segs);
    free(w->lg.v);
    buf_free(&w->wbuf);
    for (struct wal_batch_q *b = w->q_head; b;) {
        struct wal_batch_q *next = b->next;
        buf_free(&b->rec);
        free(b);
        b = next;
    }
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->log_mu);
    pthread_cond_destroy(&w->cond);
    free(w);
}

static int wal_configure(struct wal *w, const struct wal_options *opt, char *em, size_t em_len)
{
    w->io = opt->io ? opt->io : wal_io_posix();
    w->log = opt->log;
    w->segment_bytes = opt->segment_bytes ? opt->segment_bytes : WAL_DEFAULT_SEGMENT_BYTES;
    w->queue_batches_max =
        opt->queue_batches_max ? opt->queue_batches_max : WAL_DEFAULT_QUEUE_BATCHES;
    w->queue_bytes_max = opt->queue_bytes_max ? opt->queue_bytes_max : WAL_DEFAULT_QUEUE_BYTES;
    w->record_bytes_max = opt->record_bytes_max
                              ? opt->record_bytes_max
                              : (uint32_t)BATON_MIN(w->segment_bytes / 4, UINT32_MAX / 2);
    w->notify = opt->notify;
    w->notify_ctx = opt->notify_ctx;
    w->no_thread = opt->no_thread;
    if (!opt->dir || strlen(opt->dir) + 64 >= WAL_PATH_MAX) {
        wal_errf(em, em_len, "wal: directory path missing or too long");
        return BATON_EINVAL;
    }
    if (w->segment_bytes < 4096 || w->segment_bytes > (1ull << 31)) {
        wal_errf(em, em_len, "wal: segment_bytes %" PRIu64 " outside [4096, 2^31]",
                 w->segment_bytes);
        return BATON_EINVAL;
    }
    /* The biggest frame plus the state records that open a segment must fit in one. */
    if ((uint64_t)w->record_bytes_max + WAL_ENTRY_HDR + 3 * WAL_REC_HDR + 64 + WAL_SEG_HDR >
        w->segment_bytes) {
        wal_errf(em, em_len, "wal: record_bytes_max %u does not fit a segment of %" PRIu64,
                 w->record_bytes_max, w->segment_bytes);
        return BATON_EINVAL;
    }
    snprintf(w->dir, sizeof(w->dir), "%s", opt->dir);
    return 0;
}

static int wal_thread_start(struct wal *w, char *errmsg, size_t errmsg_len)
{
    /* The WAL thread needs little stack; a small one keeps opens cheap (and fuzzing fast). */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WAL_THREAD_STACK_BYTES);
    int prc = pthread_create(&w->thread, &attr, wal_thread_main, w);
    pthread_attr_destroy(&attr);
    if (prc != 0) {
        wal_errf(errmsg, errmsg_len, "wal: starting the WAL thread: %s", baton_strerror(-prc));
        return -prc;
    }
    w->thread_started = true;
    return 0;
}

int wal_open(const struct wal_options *opt, struct wal **out, char *errmsg, size_t errmsg_len)
{
    *out = NULL;
    if (errmsg && errmsg_len)
        errmsg[0] = 0;
    struct wal *w = calloc(1, sizeof(*w));
    if (!w)
        return BATON_ENOMEM;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->log_mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    int rc = wal_configure(w, opt, errmsg, errmsg_len);
    if (rc)
        goto fail;
    rc = w->io->mkdir(w->io->ctx, w->dir, 0755);
    if (rc && rc != -EEXIST) {
        wal_errf(errmsg, errmsg_len, "wal: mkdir %s: %s", w->dir, baton_strerror(rc));
        goto fail;
    }
    rc = wal_recover(w, errmsg, errmsg_len);
    if (rc)
        goto fail;
    w->sub_last = log_last(&w->lg);
    w->sub_snap = w->lg.snap;
    w->sub_hs = w->lg.hs;
    w->prog.durable_index = w->sub_last;
    w->prog.hs = w->lg.hs;
    w->durable_snap_index = w->lg.snap.index;
    if (!w->no_thread) {
        rc = wal_thread_start(w, errmsg, errmsg_len);
        if (rc)
            goto fail;
    }
    log_write(w->log, LOG_INFO,
              "msg=\"wal: opened\" dir=%s segments=%zu snapshot_index=%" PRIu64
              " last_index=%" PRIu64,
              w->dir, w->segs_len, w->lg.snap.index, w->sub_last);
    *out = w;
    return 0;
fail:
    wal_free(w);
    return rc;
}

int wal_close(struct wal *w)
{
    if (!w)
        return 0;
    if (w->no_thread)
        (void)wal_step(w); /* drain; its error is the sticky one returned below */
    pthread_mutex_lock(&w->mu);
    w->closing = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    if (w->thread_started)
        pthread_join(w->thread, NULL);
    int rc = w->prog.err;
    wal_free(w);
    return rc;
}

void wal_state_get(const struct wal *w, struct wal_state *out)
{
    out->hs = w->sub_hs;
    out->snap = w->sub_snap;
    out->first_index = w->sub_snap.index + 1;
    out->last_index = w->sub_last;
}

static int batch_validate(const struct wal *w, const struct wal_batch *b)
{
    uint64_t snap = w->sub_snap.index, last = w->sub_last;
    if (b->snap) {
        if (b->snap->index < snap)
            return BATON_EINVAL;
        snap = b->snap->index;
        last = BATON_MAX(last, snap);
    }
    if (b->entries_len && !b->entries)
        return BATON_EINVAL;
    for (size_t i = 0; i < b->entries_len; i++) {
        const struct wal_entry *e = &b->entries[i];
        if (i == 0 && (e->index <= snap || e->index > last + 1))
            return BATON_EINVAL;
        if (i > 0 && e->index != b->entries[i - 1].index + 1)
            return BATON_EINVAL;
        if (e->len > w->record_bytes_max)
            return BATON_ETOOBIG;
        if (e->len && !e->data)
            return BATON_EINVAL;
    }
    return 0;
}

static int batch_encode(const struct wal *w, const struct wal_batch *b, struct buf *out)
{
    int rc = 0;
    if (b->snap) {
        uint64_t v[2] = {b->snap->index, b->snap->term};
        rc = rec_append_u64s(out, WAL_REC_SNAP, v, 2);
    }
    uint64_t last = b->snap ? BATON_MAX(w->sub_last, b->snap->index) : w->sub_last;
    if (!rc && b->entries_len && b->entries[0].index <= last) {
        uint64_t from = b->entries[0].index;
        rc = rec_append_u64s(out, WAL_REC_TRUNCATE, &from, 1);
    }
    for (size_t i = 0; i < b->entries_len && !rc; i++)
        rc = rec_append_entry(out, &b->entries[i]);
    if (!rc && b->hs) {
        uint64_t v[3] = {b->hs->term, b->hs->vote, b->hs->commit};
        rc = rec_append_u64s(out, WAL_REC_HARDSTATE, v, 3);
    }
    return rc;
}

int wal_submit(struct wal *w, const struct wal_batch *b, uint64_t *seq)
{
    int rc = batch_validate(w, b);
    if (rc)
        return rc;
    pthread_mutex_lock(&w->mu);
    rc = w->prog.err;
    if (!rc && w->q_batches >= w->queue_batches_max)
        rc = BATON_EBUSY;
    pthread_mutex_unlock(&w->mu);
    if (rc)
        return rc;
    struct wal_batch_q *q = calloc(1, sizeof(*q));
    if (!q)
        return BATON_ENOMEM;
    rc = batch_encode(w, b, &q->rec);
    if (!rc && q->rec.len > w->queue_bytes_max)
        rc = BATON_ETOOBIG;
    if (rc) {
        buf_free(&q->rec);
        free(q);
        return rc;
    }
    pthread_mutex_lock(&w->mu);
    rc = w->prog.err;
    if (!rc &&
        (w->q_batches >= w->queue_batches_max || w->q_bytes + q->rec.len > w->queue_bytes_max))
        rc = BATON_EBUSY;
    uint64_t qseq = 0;
    if (!rc) {
        qseq = q->seq = ++w->sub_seq;
        if (w->q_tail)
            w->q_tail->next = q;
        else
            w->q_head = q;
        w->q_tail = q;
        w->q_batches++;
        w->q_bytes += q->rec.len;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->mu);
    if (rc) {
        buf_free(&q->rec);
        free(q);
        return rc;
    }
    if (seq)
        *seq = qseq; /* q belongs to the WAL thread now */
    if (b->snap) {
        w->sub_snap = *b->snap;
        w->sub_last = BATON_MAX(w->sub_last, b->snap->index);
    }
    if (b->entries_len)
        w->sub_last = b->entries[b->entries_len - 1].index;
    if (b->hs)
        w->sub_hs = *b->hs;
    return 0;
}

void wal_poll(struct wal *w, struct wal_progress *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->prog;
    pthread_mutex_unlock(&w->mu);
}

int wal_step(struct wal *w)
{
    if (!w->no_thread)
        return BATON_EINVAL;
    pthread_mutex_lock(&w->mu);
    while (w->q_head)
        wal_group_run(w);
    int rc = w->prog.err;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int wal_wait(struct wal *w, uint64_t seq)
{
    BATON_ASSERT(seq <= w->sub_seq); /* only batches that were submitted */
    pthread_mutex_lock(&w->mu);
    while (w->no_thread && w->prog.durable_seq < seq && !w->prog.err && w->q_head)
        wal_group_run(w);
    while (!w->no_thread && w->prog.durable_seq < seq && !w->prog.err)
        pthread_cond_wait(&w->cond, &w->mu);
    int rc = w->prog.durable_seq >= seq ? 0 : w->prog.err;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int wal_read_entries(struct wal *w, uint64_t lo, uint64_t hi, wal_entry_fn fn, void *ctx)
{
    int rc = 0;
    uint8_t *buf = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&w->log_mu);
    struct wal_log *l = &w->lg;
    lo = BATON_MAX(lo, l->first);
    if (l->len)
        hi = BATON_MIN(hi, l->first + l->len - 1);
    for (uint64_t i = lo; l->len && i <= hi && !rc; i++) {
        struct wal_loc loc = l->v[i - l->first];
        struct wal_seg *s = seg_by_seq(w, loc.seq);
        BATON_ASSERT(s);
        size_t total = WAL_REC_HDR + loc.len;
        if (total > cap) {
            uint8_t *nb = realloc(buf, total);
            if (!nb) {
                rc = BATON_ENOMEM;
                break;
            }
            buf = nb, cap = total;
        }
        rc = wal_read_full(w->io, s->fd, buf, total, loc.off);
        uint32_t len;
        if (!rc && (!rec_check(buf, total, &len) || len != loc.len || buf[8] != WAL_REC_ENTRY ||
                    le64_get(buf + WAL_REC_HDR) != i))
            rc = BATON_ECORRUPT;
        if (rc)
            break;
        const uint8_t *p = buf + WAL_REC_HDR;
        struct wal_entry e = {.index = i,
                              .term = le64_get(p + 8),
                              .type = le32_get(p + 16),
                              .data = p + WAL_ENTRY_HDR,
                              .len = len - WAL_ENTRY_HDR};
        rc = fn(ctx, &e);
    }
    pthread_mutex_unlock(&w->log_mu);
    free(buf);
    return rc;
}

int wal_release(struct wal *w, uint64_t snap_index, uint32_t *released)
{
    if (released)
        *released = 0;
    pthread_mutex_lock(&w->mu);
    uint64_t durable_snap = w->durable_snap_index;
    pthread_mutex_unlock(&w->mu);
    if (snap_index > durable_snap)
        return BATON_EINVAL; /* the marker must be durable before the entries go */

    /* Take the releasable prefix out of the list under the lock; no live entry points into it
     * (their indexes are at or below the snapshot marker). The file work happens outside it,
     * so the WAL thread keeps writing meanwhile. */
    pthread_mutex_lock(&w->log_mu);
    size_t n = 0;
    while (w->segs_len - n > 1 && w->segs[n].max_index <= snap_index)
        n++;
    struct wal_seg *gone = n ? malloc(n * sizeof(*gone)) : NULL;
    if (n && !gone) {
        pthread_mutex_unlock(&w->log_mu);
        return BATON_ENOMEM;
    }
    if (n) {
        memcpy(gone, w->segs, n * sizeof(*gone));
        memmove(w->segs, w->segs + n, (w->segs_len - n) * sizeof(*w->segs));
        w->segs_len -= n;
    }
    pthread_mutex_unlock(&w->log_mu);

    /* Oldest first, each unlink made durable before the next: whatever a crash leaves is a
     * contiguous run of segments. A failure leaves the rest on disk for the next release after
     * a restart. */
    int rc = 0;
    uint32_t done = 0;
    for (size_t i = 0; i < n; i++) {
        char path[WAL_PATH_MAX + 64];
        seg_path(w, path, sizeof(path), &gone[i]);
        w->io->close(w->io->ctx, gone[i].fd);
        if (!rc)
            rc = w->io->unlink(w->io->ctx, path);
        if (!rc)
            rc = w->io->fsync_dir(w->io->ctx, w->dir);
        done += rc == 0;
    }
    free(gone);
    if (done)
        log_write(w->log, LOG_INFO,
                  "msg=\"wal: released segments\" dir=%s count=%u below_index=%" PRIu64, w->dir,
                  done, snap_index);
    if (released)
        *released = done;
    return rc;
}

uint32_t wal_segments(const struct wal *w)
{
    struct wal *mw = (struct wal *)w;
    pthread_mutex_lock(&mw->log_mu);
    uint32_t n = (uint32_t)w->segs_len;
    pthread_mutex_unlock(&mw->log_mu);
    return n;
}
