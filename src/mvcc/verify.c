/*
 * A structural check of the LMDB data file, run before LMDB maps it. LMDB trusts its pages: a
 * damaged branch or leaf page (a bad node offset, a child page number past the end) makes
 * liblmdb read out of bounds and crash, which a corrupt file must never do to us. This walks
 * every B-tree reachable from the meta page LMDB will use (the free-page tree, the main tree and
 * each named database in it), reading pages with pread, and checks what LMDB relies on: page
 * numbers, page kinds, node offsets and sizes inside the page, child and overflow page numbers
 * inside the file, each page reached once (no cycles), uniform leaf depth, and free-list records
 * naming valid pages. Anything off is BATON_ECORRUPT with the page number.
 *
 * The on-disk format is LMDB 0.9's (data version 1) on a 64-bit little-endian host: 16-byte page
 * header {pgno u64, pad u16, flags u16, lower u16, upper u16}, 2-byte node offsets after it,
 * nodes {lo u16, hi u16, flags u16, ksize u16, key, data}, 48-byte MDB_db records. It costs one
 * read of the file, the same order as the index rebuild's scan that follows it.
 */
#include "mvcc/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PHDR       16
#define P_BRANCH   0x01
#define P_LEAF     0x02
#define P_OVERFLOW 0x04
#define P_META     0x08
#define P_DIRTY    0x10
#define F_BIGDATA  0x01
#define F_SUBDATA  0x02
#define F_DUPDATA  0x04
#define NODESZ     8
#define DBREC_SZ   48
#define META_OFF   PHDR
#define LMDB_MAGIC 0xBEEFC0DEu
#define LMDB_DATAV 1u
#define DEPTH_MAX  64
#define INVALID_PG UINT64_MAX

struct vctx {
    int fd;
    uint32_t psize;
    uint64_t npages; /* pages present in the file */
    uint8_t *seen;   /* one bit per page */
    char *why;
    size_t why_len;
};

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static int bad(struct vctx *v, uint64_t pg, const char *what)
{
    if (v->why && v->why_len)
        snprintf(v->why, v->why_len, "page %llu: %s", (unsigned long long)pg, what);
    return BATON_ECORRUPT;
}

static int read_page(struct vctx *v, uint64_t pg, uint8_t *buf)
{
    if (pg >= v->npages)
        return bad(v, pg, "page number past the end of the file");
    ssize_t n = pread(v->fd, buf, v->psize, (off_t)(pg * v->psize));
    if (n < 0)
        return -errno;
    if ((size_t)n != v->psize)
        return bad(v, pg, "short read");
    return 0;
}

static int mark(struct vctx *v, uint64_t pg)
{
    if (pg < 2 || pg >= v->npages)
        return bad(v, pg, "page number out of range");
    if (v->seen[pg / 8] & (1u << (pg % 8)))
        return bad(v, pg, "page reached twice");
    v->seen[pg / 8] |= (uint8_t)(1u << (pg % 8));
    return 0;
}

/* A free-list record: [count, pgno...] of u64. */
static int check_idl(struct vctx *v, uint64_t pg, const uint8_t *d, size_t len)
{
    if (len < 8 || len % 8)
        return bad(v, pg, "free-list record of a bad size");
    uint64_t n = rd64(d);
    if (n > len / 8 - 1)
        return bad(v, pg, "free-list record count too large");
    for (uint64_t i = 1; i <= n; i++) {
        uint64_t id = rd64(d + i * 8);
        if (id < 2 || id >= v->npages + (1u << 20))
            return bad(v, pg, "free-list names an invalid page");
    }
    return 0;
}

static int walk(struct vctx *v, uint64_t pg, int depth, int want_depth, bool is_main, bool is_free,
                uint8_t *buf);

/* Checks an overflow chain start and returns its data (read into a fresh buffer when needed). */
static int check_overflow(struct vctx *v, uint64_t from, uint64_t opg, size_t dsz, bool is_free)
{
    uint8_t *hdr = malloc(v->psize);
    if (!hdr)
        return BATON_ENOMEM;
    int rc = read_page(v, opg, hdr);
    if (rc == 0 && rd64(hdr) != opg)
        rc = bad(v, opg, "overflow page number mismatch");
    if (rc == 0 && !(rd16(hdr + 10) & P_OVERFLOW))
        rc = bad(v, opg, "expected an overflow page");
    uint32_t pages = rc == 0 ? rd32(hdr + 12) : 0;
    if (rc == 0 &&
        (pages == 0 || opg + pages > v->npages || (uint64_t)pages * v->psize < dsz + PHDR))
        rc = bad(v, opg, "overflow page count inconsistent with the data size");
    for (uint32_t i = 0; rc == 0 && i < pages; i++)
        rc = mark(v, opg + i);
    if (rc == 0 && is_free) {
        uint8_t *d = malloc(dsz ? dsz : 1);
        if (!d) {
            rc = BATON_ENOMEM;
        } else {
            ssize_t n = pread(v->fd, d, dsz, (off_t)(opg * v->psize + PHDR));
            rc = n == (ssize_t)dsz ? check_idl(v, from, d, dsz) : bad(v, opg, "short read");
            free(d);
        }
    }
    free(hdr);
    return rc;
}

static int check_dbrec(struct vctx *v, uint64_t pg, const uint8_t *rec, uint64_t *root, int *depth)
{
    uint16_t flags = rd16(rec + 4);
    *depth = rd16(rec + 6);
    *root = rd64(rec + 40);
    if (flags & (MDB_DUPSORT | MDB_DUPFIXED))
        return bad(v, pg, "unexpected duplicate-key database");
    if (*root != INVALID_PG && (*depth < 1 || *depth > DEPTH_MAX))
        return bad(v, pg, "database depth out of range");
    return 0;
}

static int check_leaf_node(struct vctx *v, uint64_t pg, const uint8_t *page, size_t off,
                           bool is_main, bool is_free)
{
    const uint8_t *n = page + off;
    uint16_t flags = rd16(n + 4), ksize = rd16(n + 6);
    size_t dsz = (size_t)rd16(n) | (size_t)rd16(n + 2) << 16;
    if (off + NODESZ + ksize > v->psize)
        return bad(v, pg, "leaf key past the page end");
    const uint8_t *d = n + NODESZ + ksize;
    if (flags & F_DUPDATA)
        return bad(v, pg, "unexpected duplicate data node");
    if (flags & F_BIGDATA) {
        if (off + NODESZ + ksize + 8 > v->psize)
            return bad(v, pg, "overflow reference past the page end");
        return check_overflow(v, pg, rd64(d), dsz, is_free);
    }
    if (off + NODESZ + ksize + dsz > v->psize)
        return bad(v, pg, "leaf data past the page end");
    if (is_free)
        return check_idl(v, pg, d, dsz);
    if (flags & F_SUBDATA) {
        if (!is_main || dsz != DBREC_SZ)
            return bad(v, pg, "bad named-database record");
        uint64_t root;
        int depth;
        int rc = check_dbrec(v, pg, d, &root, &depth);
        if (rc != 0 || root == INVALID_PG)
            return rc;
        uint8_t *buf = malloc(v->psize);
        if (!buf)
            return BATON_ENOMEM;
        rc = walk(v, root, 1, depth, false, false, buf);
        free(buf);
        return rc;
    }
    return 0;
}

/* Checks page pg (at depth, 1 = root) and everything below it; buf is a page-sized scratch
 * buffer owned by this level. */
static int walk(struct vctx *v, uint64_t pg, int depth, int want_depth, bool is_main, bool is_free,
                uint8_t *buf)
{
    if (depth > want_depth || depth > DEPTH_MAX)
        return bad(v, pg, "tree deeper than recorded");
    int rc = mark(v, pg);
    if (rc == 0)
        rc = read_page(v, pg, buf);
    if (rc != 0)
        return rc;
    if (rd64(buf) != pg)
        return bad(v, pg, "page number mismatch");
    uint16_t flags = rd16(buf + 10) & (uint16_t)~P_DIRTY;
    uint16_t lower = rd16(buf + 12), upper = rd16(buf + 14);
    if (flags != P_BRANCH && flags != P_LEAF)
        return bad(v, pg, "expected a branch or leaf page");
    if (lower < PHDR || (lower & 1) || lower > upper || upper > v->psize)
        return bad(v, pg, "free-space bounds out of range");
    if ((flags == P_LEAF) != (depth == want_depth))
        return bad(v, pg, "leaf at the wrong depth");
    size_t nkeys = (size_t)(lower - PHDR) / 2;
    if (flags == P_BRANCH && nkeys == 0)
        return bad(v, pg, "empty branch page");
    uint8_t *child = NULL;
    for (size_t i = 0; i < nkeys && rc == 0; i++) {
        size_t off = rd16(buf + PHDR + 2 * i);
        if (off < upper || off + NODESZ > v->psize) {
            rc = bad(v, pg, "node offset out of range");
            break;
        }
        const uint8_t *n = buf + off;
        if (flags == P_LEAF) {
            rc = check_leaf_node(v, pg, buf, off, is_main, is_free);
            continue;
        }
        if (off + NODESZ + rd16(n + 6) > v->psize) {
            rc = bad(v, pg, "branch key past the page end");
            break;
        }
        uint64_t cpg =
            (uint64_t)rd16(n) | (uint64_t)rd16(n + 2) << 16 | (uint64_t)rd16(n + 4) << 32;
        if (!child && !(child = malloc(v->psize)))
            rc = BATON_ENOMEM;
        else
            rc = walk(v, cpg, depth + 1, want_depth, is_main, is_free, child);
    }
    free(child);
    return rc;
}

/* Reads both meta pages; picks the valid one with the larger transaction id, as LMDB does. */
static int pick_meta(struct vctx *v, uint8_t *meta_out)
{
    uint8_t hdr[PHDR + 136];
    ssize_t n = pread(v->fd, hdr, sizeof(hdr), 0);
    if (n < 0)
        return -errno;
    if (n != (ssize_t)sizeof(hdr))
        return bad(v, 0, "file shorter than a meta page");
    v->psize = rd32(hdr + META_OFF + 24); /* mm_dbs[FREE].md_pad */
    if (v->psize < 512 || v->psize > 65536 || (v->psize & (v->psize - 1)))
        return bad(v, 0, "bad page size");
    int best = -1;
    uint64_t best_txn = 0;
    uint8_t m[2][PHDR + 136];
    for (int i = 0; i < 2; i++) {
        n = pread(v->fd, m[i], sizeof(m[i]), (off_t)i * v->psize);
        if (n != (ssize_t)sizeof(m[i]))
            return bad(v, (uint64_t)i, "short meta page");
        /* LMDB treats a missing meta on either page as a new file and would overwrite it, and
         * takes the page size from whichever meta it picks: both must be metas of one size. */
        const uint8_t *mm = m[i] + META_OFF;
        if (!(rd16(m[i] + 10) & P_META) || rd32(mm) != LMDB_MAGIC || rd32(mm + 4) != LMDB_DATAV)
            return bad(v, (uint64_t)i, "not a meta page");
        if (rd32(mm + 24) != v->psize)
            return bad(v, (uint64_t)i, "meta pages disagree on the page size");
        uint64_t txn = rd64(mm + 128);
        if (best < 0 || txn > best_txn) {
            best = i;
            best_txn = txn;
        }
    }
    memcpy(meta_out, m[best] + META_OFF, 136);
    return 0;
}

int store_verify_file(const char *path, char *why, size_t why_len);
int store_verify_file(const char *path, char *why, size_t why_len)
{
    struct vctx v = {.why = why, .why_len = why_len};
    v.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (v.fd < 0)
        return errno == ENOENT ? 0 : -errno; /* a new store */
    struct stat st;
    int rc = fstat(v.fd, &st) != 0 ? -errno : 0;
    uint8_t meta[136];
    if (rc == 0 && st.st_size == 0)
        goto out; /* created, never written: LMDB initialises it */
    if (rc == 0)
        rc = pick_meta(&v, meta);
    if (rc != 0)
        goto out;
    v.npages = (uint64_t)st.st_size / v.psize;
    uint64_t last = rd64(meta + 120);
    if (last + 1 < 2 || last >= v.npages + (1u << 20)) {
        rc = bad(&v, 0, "last page number out of range");
        goto out;
    }
    v.seen = calloc(v.npages / 8 + 1, 1);
    uint8_t *buf = malloc(v.psize);
    if (!v.seen || !buf) {
        free(buf);
        rc = BATON_ENOMEM;
        goto out;
    }
    for (int dbi = 0; dbi < 2 && rc == 0; dbi++) {
        uint64_t root;
        int depth;
        rc = check_dbrec(&v, 0, meta + 24 + dbi * DBREC_SZ, &root, &depth);
        if (rc == 0 && root != INVALID_PG)
            rc = walk(&v, root, 1, depth, dbi == 1, dbi == 0, buf);
    }
    free(buf);
out:
    free(v.seen);
    close(v.fd);
    return rc;
}
