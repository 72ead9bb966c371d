/*
 * The in-memory key index: user key → packed revisions, in key order. See internal.h for why a
 * two-level structure of sorted chunks. Revisions of a key are kept as one sorted array with a
 * tombstone bit per revision; a tombstone ends a generation (etcd's keyIndex generations are the
 * runs between tombstones), which is all Range, Txn, Watch and Compact need.
 */
#include "mvcc/internal.h"

#include <stdlib.h>
#include <string.h>

static size_t kent_size(uint32_t klen, uint32_t cap)
{
    return ((12 + (size_t)klen + 7) & ~(size_t)7) + (size_t)cap * sizeof(uint64_t);
}

int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int kent_cmp(const struct kent *e, const uint8_t *k, size_t klen)
{
    return key_cmp(e->data, e->klen, k, klen);
}

void kidx_init(struct kidx *x)
{
    memset(x, 0, sizeof(*x));
}

void kidx_free(struct kidx *x)
{
    for (size_t c = 0; c < x->nchunks; c++) {
        for (uint32_t i = 0; i < x->chunks[c]->n; i++)
            free(x->chunks[c]->e[i]);
        free(x->chunks[c]);
    }
    free(x->chunks);
    memset(x, 0, sizeof(*x));
}

/* The chunk that holds k if present: the last chunk whose first key <= k (or chunk 0). */
static size_t kidx_chunk_for(const struct kidx *x, const uint8_t *k, size_t klen)
{
    size_t lo = 0, hi = x->nchunks;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (kent_cmp(x->chunks[mid]->e[0], k, klen) <= 0)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* First slot in chunk ch with key >= k; *eq set when equal. */
static uint32_t chunk_lower(const struct kchunk *ch, const uint8_t *k, size_t klen, bool *eq)
{
    uint32_t lo = 0, hi = ch->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (kent_cmp(ch->e[mid], k, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *eq = lo < ch->n && kent_cmp(ch->e[lo], k, klen) == 0;
    return lo;
}

struct kpos kidx_seek(const struct kidx *x, const uint8_t *k, size_t klen)
{
    struct kpos p = {x->nchunks, 0};
    if (x->nchunks == 0)
        return p;
    size_t c = kidx_chunk_for(x, k, klen);
    bool eq;
    uint32_t i = chunk_lower(x->chunks[c], k, klen, &eq);
    if (i >= x->chunks[c]->n) {
        p.c = c + 1;
        p.i = 0;
        return p;
    }
    p.c = c;
    p.i = i;
    return p;
}

struct kent *kidx_get(const struct kidx *x, const uint8_t *k, size_t klen)
{
    if (x->nchunks == 0)
        return NULL;
    size_t c = kidx_chunk_for(x, k, klen);
    bool eq;
    uint32_t i = chunk_lower(x->chunks[c], k, klen, &eq);
    return eq ? x->chunks[c]->e[i] : NULL;
}

static int kidx_insert_chunk(struct kidx *x, size_t at, struct kchunk *ch)
{
    if (x->nchunks == x->cap) {
        size_t ncap = x->cap ? x->cap * 2 : 16;
        struct kchunk **n = realloc(x->chunks, ncap * sizeof(*n));
        if (!n)
            return BATON_ENOMEM;
        x->bytes += (ncap - x->cap) * sizeof(*n);
        x->chunks = n;
        x->cap = ncap;
    }
    memmove(&x->chunks[at + 1], &x->chunks[at], (x->nchunks - at) * sizeof(*x->chunks));
    x->chunks[at] = ch;
    x->nchunks++;
    return 0;
}

static void kidx_remove_chunk(struct kidx *x, size_t at)
{
    free(x->chunks[at]);
    x->bytes -= sizeof(struct kchunk);
    memmove(&x->chunks[at], &x->chunks[at + 1], (x->nchunks - at - 1) * sizeof(*x->chunks));
    x->nchunks--;
}

static struct kent *kent_new(const uint8_t *k, size_t klen)
{
    struct kent *e = malloc(kent_size((uint32_t)klen, 1));
    if (!e)
        return NULL;
    e->klen = (uint32_t)klen;
    e->nrevs = 0;
    e->cap = 1;
    if (klen)
        memcpy(e->data, k, klen);
    return e;
}

/* Inserts a new entry for k; returns it or NULL on ENOMEM. */
static struct kent *kidx_insert(struct kidx *x, const uint8_t *k, size_t klen)
{
    struct kent *e = kent_new(k, klen);
    if (!e)
        return NULL;
    if (x->nchunks == 0) {
        struct kchunk *ch = calloc(1, sizeof(*ch));
        if (!ch || kidx_insert_chunk(x, 0, ch) != 0) {
            free(ch);
            free(e);
            return NULL;
        }
        x->bytes += sizeof(*ch);
    }
    size_t c = kidx_chunk_for(x, k, klen);
    struct kchunk *ch = x->chunks[c];
    bool eq;
    uint32_t i = chunk_lower(ch, k, klen, &eq);
    BATON_ASSERT(!eq);
    if (ch->n == KCHUNK_MAX) {
        /* Split: the upper half moves to a new chunk right after this one. Appends (the common
         * case while rebuilding, keys arriving in order are rare though) split evenly too. */
        struct kchunk *nch = calloc(1, sizeof(*nch));
        if (!nch || kidx_insert_chunk(x, c + 1, nch) != 0) {
            free(nch);
            free(e);
            return NULL;
        }
        x->bytes += sizeof(*nch);
        uint32_t half = KCHUNK_MAX / 2;
        memcpy(nch->e, &ch->e[half], (KCHUNK_MAX - half) * sizeof(ch->e[0]));
        nch->n = KCHUNK_MAX - half;
        ch->n = half;
        if (i > half) {
            ch = nch;
            i -= half;
        } else if (i == half && c + 1 < x->nchunks) {
            /* Either chunk works; keep it in the lower one. */
        }
    }
    memmove(&ch->e[i + 1], &ch->e[i], (ch->n - i) * sizeof(ch->e[0]));
    ch->e[i] = e;
    ch->n++;
    x->nkeys++;
    x->bytes += kent_size(e->klen, e->cap);
    return e;
}

int kidx_add(struct kidx *x, const uint8_t *k, size_t klen, uint64_t rev)
{
    struct kent *e = NULL;
    struct kent **slot = NULL;
    if (x->nchunks) {
        size_t c = kidx_chunk_for(x, k, klen);
        bool eq;
        uint32_t i = chunk_lower(x->chunks[c], k, klen, &eq);
        if (eq) {
            slot = &x->chunks[c]->e[i];
            e = *slot;
        }
    }
    if (!e) {
        e = kidx_insert(x, k, klen);
        if (!e)
            return BATON_ENOMEM;
        /* A fresh entry has room for one revision: no reallocation below. */
    }
    uint64_t *revs = kent_revs(e);
    BATON_ASSERT(e->nrevs == 0 || revs[e->nrevs - 1] < rev);
    if (e->nrevs == e->cap) {
        BATON_ASSERT(slot);
        uint32_t ncap = e->cap < 4 ? e->cap + 1 : e->cap + e->cap / 2;
        size_t old_size = kent_size(e->klen, e->cap);
        struct kent *n = realloc(e, kent_size(e->klen, ncap));
        if (!n)
            return BATON_ENOMEM;
        x->bytes += kent_size(n->klen, ncap) - old_size;
        n->cap = ncap;
        *slot = n;
        e = n;
        revs = kent_revs(e);
    }
    revs[e->nrevs++] = rev;
    return 0;
}

uint64_t kent_at(struct kent *e, int64_t rev)
{
    uint64_t *revs = kent_revs(e);
    uint64_t lim = rev_after_main(rev);
    /* The newest revision is by far the most asked for: check it first. */
    if (e->nrevs && revs[e->nrevs - 1] < lim)
        return revs[e->nrevs - 1];
    uint32_t lo = 0, hi = e->nrevs;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (revs[mid] < lim)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? revs[lo - 1] : 0;
}

uint64_t kent_before(struct kent *e, uint64_t r)
{
    uint64_t *revs = kent_revs(e);
    uint64_t lim = r & ~(uint64_t)1;
    uint32_t lo = 0, hi = e->nrevs;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (revs[mid] < lim)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? revs[lo - 1] : 0;
}

/* Compacts one entry: keeps the newest revision <= rev unless it is a tombstone, and every
 * newer one. Returns the number of revisions left. */
static uint32_t kent_compact(struct kent *e, int64_t rev)
{
    uint64_t *revs = kent_revs(e);
    uint64_t lim = rev_after_main(rev);
    uint32_t p = 0;
    while (p < e->nrevs && revs[p] < lim)
        p++;
    /* revs[0, p) are <= rev; keep revs[p-1] if it is live. */
    uint32_t from = p;
    if (p > 0 && !rev_tomb(revs[p - 1]))
        from = p - 1;
    if (from > 0) {
        memmove(revs, revs + from, (e->nrevs - from) * sizeof(*revs));
        e->nrevs -= from;
    }
    return e->nrevs;
}

void kidx_compact(struct kidx *x, int64_t rev)
{
    size_t c = 0;
    while (c < x->nchunks) {
        struct kchunk *ch = x->chunks[c];
        uint32_t w = 0;
        for (uint32_t i = 0; i < ch->n; i++) {
            struct kent *e = ch->e[i];
            if (kent_compact(e, rev) == 0) {
                x->bytes -= kent_size(e->klen, e->cap);
                free(e);
                x->nkeys--;
                continue;
            }
            ch->e[w++] = e;
        }
        ch->n = w;
        if (w == 0)
            kidx_remove_chunk(x, c);
        else
            c++;
    }
}

bool key_in_range(struct mvcc_bytes key, struct mvcc_bytes end, const uint8_t *k, size_t klen)
{
    if (end.len == 0)
        return key_cmp(key.p, key.len, k, klen) == 0;
    if (key_cmp(k, klen, key.p, key.len) < 0)
        return false;
    if (end.len == 1 && end.p[0] == 0)
        return true;
    return key_cmp(k, klen, end.p, end.len) < 0;
}
