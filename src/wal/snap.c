/*
 * Snapshot files: <term:016x>-<index:016x>.snap, written through a .tmp file in bounded chunks,
 * then fsync, rename and a directory fsync, so a crash leaves either the old set of snapshots or
 * the new one, never a half-written file under a final name. Layout (little-endian):
 *   magic[8] version u32 header_crc u32 index u64 term u64 length u64 content_crc u32 zero u32
 *   content[length]
 * header_crc covers the 48 header bytes with the header_crc field zeroed.
 */
#include "wal/wal_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_MAGIC     "BATNSNP\x01"
#define SNAP_VERSION   1u
#define SNAP_HDR       48u
#define SNAP_NAMES_MAX 4096u

struct wal_snap_writer {
    const struct wal_io *io;
    int fd;
    uint64_t index, term;
    uint64_t len;
    uint32_t crc;
    char dir[WAL_PATH_MAX];
    char path[WAL_PATH_MAX + 64];
    char tmp[WAL_PATH_MAX + 80];
};

struct wal_snap_reader {
    const struct wal_io *io;
    int fd;
    uint64_t len, pos;
    uint32_t want_crc, crc;
};

static void snap_header(uint8_t h[SNAP_HDR], uint64_t index, uint64_t term, uint64_t len,
                        uint32_t crc)
{
    memset(h, 0, SNAP_HDR);
    memcpy(h, SNAP_MAGIC, 8);
    le32_put(h + 8, SNAP_VERSION);
    le64_put(h + 16, index);
    le64_put(h + 24, term);
    le64_put(h + 32, len);
    le32_put(h + 40, crc);
    le32_put(h + 12, crc32c(h, SNAP_HDR));
}

static bool parse_snap_name(const char *name, uint64_t *term, uint64_t *index)
{
    if (strlen(name) != 38 || name[16] != '-' || strcmp(name + 33, ".snap") != 0)
        return false;
    for (int i = 0; i < 33; i++) {
        char c = name[i];
        if (i != 16 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    *term = strtoull(name, NULL, 16);
    *index = strtoull(name + 17, NULL, 16);
    return true;
}

int wal_snap_create(const char *dir, const struct wal_io *io, uint64_t index, uint64_t term,
                    struct wal_snap_writer **out)
{
    *out = NULL;
    if (!io)
        io = wal_io_posix();
    if (strlen(dir) + 64 >= WAL_PATH_MAX)
        return BATON_EINVAL;
    struct wal_snap_writer *s = calloc(1, sizeof(*s));
    if (!s)
        return BATON_ENOMEM;
    s->io = io, s->index = index, s->term = term;
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    snprintf(s->path, sizeof(s->path), "%s/%016" PRIx64 "-%016" PRIx64 ".snap", dir, term, index);
    snprintf(s->tmp, sizeof(s->tmp), "%s.tmp", s->path);
    int rc = io->mkdir(io->ctx, dir, 0755);
    if (rc && rc != -EEXIST)
        goto fail;
    int probe = io->open(io->ctx, s->path, O_RDONLY, 0);
    if (probe >= 0) {
        io->close(io->ctx, probe);
        rc = BATON_EEXIST;
        goto fail;
    }
    s->fd = io->open(io->ctx, s->tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (s->fd < 0) {
        rc = s->fd;
        goto fail;
    }
    /* A zeroed header until finish: a torn temp file can never pass for a snapshot. */
    uint8_t h[SNAP_HDR] = {0};
    rc = wal_write_full(io, s->fd, h, sizeof(h), 0);
    if (rc) {
        io->close(io->ctx, s->fd);
        io->unlink(io->ctx, s->tmp);
        goto fail;
    }
    *out = s;
    return 0;
fail:
    free(s);
    return rc;
}

int wal_snap_write(struct wal_snap_writer *s, const void *data, size_t len)
{
    if (len > WAL_SNAP_CHUNK_MAX)
        return BATON_ETOOBIG;
    int rc = wal_write_full(s->io, s->fd, data, len, SNAP_HDR + s->len);
    if (rc)
        return rc;
    s->crc = crc32c_extend(s->crc, data, len);
    s->len += len;
    return 0;
}

void wal_snap_abort(struct wal_snap_writer *s)
{
    if (!s)
        return;
    s->io->close(s->io->ctx, s->fd);
    s->io->unlink(s->io->ctx, s->tmp);
    free(s);
}

int wal_snap_finish(struct wal_snap_writer *s)
{
    const struct wal_io *io = s->io;
    uint8_t h[SNAP_HDR];
    snap_header(h, s->index, s->term, s->len, s->crc);
    int rc = wal_write_full(io, s->fd, h, sizeof(h), 0);
    if (!rc)
        rc = io->fsync(io->ctx, s->fd);
    if (rc) {
        wal_snap_abort(s);
        return rc;
    }
    io->close(io->ctx, s->fd);
    s->fd = -1;
    rc = io->rename(io->ctx, s->tmp, s->path);
    if (!rc)
        rc = io->fsync_dir(io->ctx, s->dir);
    if (rc)
        io->unlink(io->ctx, s->tmp);
    free(s);
    return rc;
}

/* ---- Listing ------------------------------------------------------------------------------- */

struct snap_id {
    uint64_t term, index;
};

struct snap_list {
    struct snap_id *v; /* grows up to SNAP_NAMES_MAX */
    size_t len, cap;
    char tmps[16][64]; /* stale temp files to purge (a few are enough per pass) */
    size_t tmps_len;
};

static int snap_list_fn(void *arg, const char *name)
{
    struct snap_list *l = arg;
    size_t n = strlen(name);
    if (n == 42 && strcmp(name + 38, ".tmp") == 0) {
        if (l->tmps_len < BATON_ARRAY_LEN(l->tmps))
            snprintf(l->tmps[l->tmps_len++], sizeof(l->tmps[0]), "%s", name);
        return 0;
    }
    uint64_t term, index;
    if (!parse_snap_name(name, &term, &index))
        return 0;
    if (l->len == SNAP_NAMES_MAX)
        return BATON_ETOOBIG;
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct snap_id *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return BATON_ENOMEM;
        l->v = v, l->cap = cap;
    }
    l->v[l->len].term = term;
    l->v[l->len].index = index;
    l->len++;
    return 0;
}

/* Newest first: higher index, then higher term. */
static int snap_cmp(const void *a, const void *b)
{
    const struct snap_id *x = a, *y = b;
    if (x->index != y->index)
        return x->index > y->index ? -1 : 1;
    return x->term > y->term ? -1 : x->term < y->term;
}

static void snap_list_free(struct snap_list *l)
{
    free(l->v);
    free(l);
}

static int snap_list_read(const char *dir, const struct wal_io *io, struct snap_list **out)
{
    struct snap_list *l = calloc(1, sizeof(*l));
    if (!l)
        return BATON_ENOMEM;
    int rc = io->list_dir(io->ctx, dir, snap_list_fn, l);
    if (rc) {
        snap_list_free(l);
        return rc;
    }
    if (l->len)
        qsort(l->v, l->len, sizeof(l->v[0]), snap_cmp);
    *out = l;
    return 0;
}

int wal_snap_latest(const char *dir, const struct wal_io *io, char *name, size_t name_len)
{
    if (!io)
        io = wal_io_posix();
    struct snap_list *l;
    int rc = snap_list_read(dir, io, &l);
    if (rc)
        return rc;
    rc = l->len ? 0 : BATON_ENOTFOUND;
    if (!rc)
        snprintf(name, name_len, "%016" PRIx64 "-%016" PRIx64 ".snap", l->v[0].term, l->v[0].index);
    snap_list_free(l);
    return rc;
}

int wal_snap_purge(const char *dir, const struct wal_io *io, uint32_t keep, uint32_t *removed)
{
    if (!io)
        io = wal_io_posix();
    if (removed)
        *removed = 0;
    struct snap_list *l;
    int rc = snap_list_read(dir, io, &l);
    if (rc)
        return rc;
    uint32_t n = 0;
    char path[WAL_PATH_MAX + 128];
    for (size_t i = keep; i < l->len && !rc; i++) {
        snprintf(path, sizeof(path), "%s/%016" PRIx64 "-%016" PRIx64 ".snap", dir, l->v[i].term,
                 l->v[i].index);
        rc = io->unlink(io->ctx, path);
        n += rc == 0;
    }
    for (size_t i = 0; i < l->tmps_len && !rc; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, l->tmps[i]);
        rc = io->unlink(io->ctx, path);
        n += rc == 0;
    }
    if (n) {
        int rc2 = io->fsync_dir(io->ctx, dir);
        if (!rc)
            rc = rc2;
    }
    snap_list_free(l);
    if (removed)
        *removed = n;
    return rc;
}

/* ---- Reading ------------------------------------------------------------------------------- */

static int snap_verify(struct wal_snap_reader *r, const char *path, char *em, size_t em_len)
{
    enum { CHUNK = 64 << 10 };
    uint8_t *buf = malloc(CHUNK);
    if (!buf)
        return BATON_ENOMEM;
    uint32_t crc = 0;
    int rc = 0;
    for (uint64_t off = 0; off < r->len && !rc;) {
        size_t n = (size_t)BATON_MIN((uint64_t)CHUNK, r->len - off);
        rc = wal_read_full(r->io, r->fd, buf, n, SNAP_HDR + off);
        crc = crc32c_extend(crc, buf, n);
        off += n;
    }
    free(buf);
    if (rc == BATON_ECORRUPT)
        wal_errf(em, em_len,
                 "snapshot %s: content shorter than its header says (%" PRIu64 " bytes)", path,
                 r->len);
    else if (rc)
        wal_errf(em, em_len, "snapshot %s: read: %s", path, baton_strerror(rc));
    else if (crc != r->want_crc) {
        wal_errf(em, em_len, "snapshot %s: content CRC32C mismatch (header %08x, content %08x)",
                 path, r->want_crc, crc);
        rc = BATON_ECORRUPT;
    }
    return rc;
}

static int snap_check_header(struct wal_snap_reader *r, const char *path, const char *name,
                             struct wal_snap_info *info, char *em, size_t em_len)
{
    uint64_t size;
    int rc = r->io->file_size(r->io->ctx, r->fd, &size);
    if (rc) {
        wal_errf(em, em_len, "snapshot %s: stat: %s", path, baton_strerror(rc));
        return rc;
    }
    uint8_t h[SNAP_HDR];
    if (size < SNAP_HDR || (rc = wal_read_full(r->io, r->fd, h, SNAP_HDR, 0)) != 0) {
        wal_errf(em, em_len, "snapshot %s: file too short for a header (%" PRIu64 " bytes)", path,
                 size);
        return rc && rc != BATON_ECORRUPT ? rc : BATON_ECORRUPT;
    }
    uint8_t want[SNAP_HDR];
    snap_header(want, le64_get(h + 16), le64_get(h + 24), le64_get(h + 32), le32_get(h + 40));
    uint64_t term = 0, index = 0;
    bool named = parse_snap_name(name, &term, &index);
    if (memcmp(h, want, SNAP_HDR) != 0) {
        wal_errf(em, em_len, "snapshot %s: bad header (magic, version or header CRC)", path);
        return BATON_ECORRUPT;
    }
    info->index = le64_get(h + 16);
    info->term = le64_get(h + 24);
    info->len = le64_get(h + 32);
    if (named && (term != info->term || index != info->index)) {
        wal_errf(em, em_len, "snapshot %s: header says term %" PRIu64 " index %" PRIu64, path,
                 info->term, info->index);
        return BATON_ECORRUPT;
    }
    if (info->len != size - SNAP_HDR) {
        wal_errf(em, em_len,
                 "snapshot %s: header says %" PRIu64 " content bytes, file has %" PRIu64, path,
                 info->len, size - SNAP_HDR);
        return BATON_ECORRUPT;
    }
    r->len = info->len;
    r->want_crc = le32_get(h + 40);
    return 0;
}

int wal_snap_open(const char *dir, const char *name, const struct wal_io *io,
                  struct wal_snap_reader **out, struct wal_snap_info *info, char *errmsg,
                  size_t errmsg_len)
{
    *out = NULL;
    if (!io)
        io = wal_io_posix();
    if (errmsg && errmsg_len)
        errmsg[0] = 0;
    char path[WAL_PATH_MAX + 256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct wal_snap_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return BATON_ENOMEM;
    r->io = io;
    r->fd = io->open(io->ctx, path, O_RDONLY, 0);
    if (r->fd < 0) {
        int rc = r->fd;
        wal_errf(errmsg, errmsg_len, "snapshot %s: open: %s", path, baton_strerror(rc));
        free(r);
        return rc;
    }
    int rc = snap_check_header(r, path, name, info, errmsg, errmsg_len);
    if (!rc)
        rc = snap_verify(r, path, errmsg, errmsg_len);
    if (rc) {
        wal_snap_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

int wal_snap_read(struct wal_snap_reader *r, void *buf, size_t len, size_t *got)
{
    *got = 0;
    uint64_t n = BATON_MIN((uint64_t)len, r->len - r->pos);
    if (n == 0)
        return r->crc == r->want_crc ? 0 : BATON_ECORRUPT;
    int rc = wal_read_full(r->io, r->fd, buf, (size_t)n, SNAP_HDR + r->pos);
    if (rc)
        return rc;
    r->crc = crc32c_extend(r->crc, buf, (size_t)n);
    r->pos += n;
    *got = (size_t)n;
    if (r->pos == r->len && r->crc != r->want_crc)
        return BATON_ECORRUPT;
    return 0;
}

void wal_snap_close(struct wal_snap_reader *r)
{
    if (!r)
        return;
    r->io->close(r->io->ctx, r->fd);
    free(r);
}
