/*
 * The in-memory key index: user key → packed revisions, in key order, with a hash table for
 * exact lookups. See internal.h for the structure and its costs. Revisions of a key are kept as
 * one sorted array with a tombstone bit per revision; a tombstone ends a generation (etcd's
 * keyIndex generations are the runs between tombstones), which is all Range, Txn, Watch and
 * Compact need.
 */
#include "mvcc/internal.h"

#include <stdlib.h>
#include <string.h>

static size_t kent_size(uint32_t klen)
{
    return sizeof(struct kent) + klen;
}

static size_t krevs_size(uint32_t cap)
{
    return sizeof(struct krevs) + (size_t)cap * sizeof(uint64_t);
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

static uint32_t key_hash(const uint8_t *k, size_t klen)
{
    return crc32c(k, klen) & 0x7fffffffu;
}

void kidx_init(struct kidx *x)
{
    memset(x, 0, sizeof(*x));
}

static void kent_free(struct kent *e)
{
    if (e->ool)
        free(e->r.arr);
    free(e);
}

void kidx_free(struct kidx *x)
{
    for (size_t c = 0; c < x->nchunks; c++) {
        for (uint32_t i = 0; i < x->chunks[c]->n; i++)
            kent_free(x->chunks[c]->e[i]);
        free(x->chunks[c]);
    }
    free(x->chunks);
    free(x->tab);
    memset(x, 0, sizeof(*x));
}

/* ---- Hash table --------------------------------------------------------------------------- */

static int tab_grow(struct kidx *x)
{
    size_t ncap = x->tcap ? x->tcap * 2 : 1024;
    struct kent **nt = calloc(ncap, sizeof(*nt));
    if (!nt)
        return BATON_ENOMEM;
    for (size_t i = 0; i < x->tcap; i++) {
        struct kent *e = x->tab[i];
        if (!e)
            continue;
        size_t j = e->hash & (ncap - 1);
        while (nt[j])
            j = (j + 1) & (ncap - 1);
        nt[j] = e;
    }
    free(x->tab);
    x->bytes += (ncap - x->tcap) * sizeof(*nt);
    x->tab = nt;
    x->tcap = ncap;
    return 0;
}

static void tab_insert(struct kidx *x, struct kent *e)
{
    size_t j = e->hash & (x->tcap - 1);
    while (x->tab[j])
        j = (j + 1) & (x->tcap - 1);
    x->tab[j] = e;
}

/* Backward-shift deletion: keeps every probe chain unbroken without tombstones. */
static void tab_remove(struct kidx *x, struct kent *e)
{
    size_t mask = x->tcap - 1, i = e->hash & mask;
    while (x->tab[i] != e)
        i = (i + 1) & mask;
    x->tab[i] = NULL;
    for (size_t j = (i + 1) & mask; x->tab[j]; j = (j + 1) & mask) {
        size_t home = x->tab[j]->hash & mask;
        bool stays = i < j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            x->tab[i] = x->tab[j];
            x->tab[j] = NULL;
            i = j;
        }
    }
}

struct kent *kidx_get(const struct kidx *x, const uint8_t *k, size_t klen)
{
    if (x->tcap == 0)
        return NULL;
    uint32_t h = key_hash(k, klen);
    size_t mask = x->tcap - 1;
    for (size_t j = h & mask;; j = (j + 1) & mask) {
        struct kent *e = x->tab[j];
        if (!e)
            return NULL;
        if (e->hash == h && e->klen == klen && memcmp(e->data, k, klen) == 0)
            return e;
    }
}

/* ---- Ordered chunks ------------------------------------------------------------------------ */

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
    x->bytes += sizeof(*ch);
    return 0;
}

static void kidx_remove_chunk(struct kidx *x, size_t at)
{
    free(x->chunks[at]);
    x->bytes -= sizeof(struct kchunk);
    memmove(&x->chunks[at], &x->chunks[at + 1], (x->nchunks - at - 1) * sizeof(*x->chunks));
    x->nchunks--;
}

/* Puts e at its place in key order (its key is absent). */
static int chunks_insert(struct kidx *x, struct kent *e)
{
    if (x->nchunks == 0) {
        struct kchunk *ch = calloc(1, sizeof(*ch));
        if (!ch || kidx_insert_chunk(x, 0, ch) != 0) {
            free(ch);
            return BATON_ENOMEM;
        }
    }
    size_t c = kidx_chunk_for(x, e->data, e->klen);
    struct kchunk *ch = x->chunks[c];
    bool eq;
    uint32_t i = chunk_lower(ch, e->data, e->klen, &eq);
    BATON_ASSERT(!eq);
    if (ch->n == KCHUNK_MAX) {
        /* Split: the upper half moves to a new chunk right after this one. Appending at the
         * very end (keys arriving in order) splits at the end instead, leaving full chunks. */
        struct kchunk *nch = calloc(1, sizeof(*nch));
        if (!nch || kidx_insert_chunk(x, c + 1, nch) != 0) {
            free(nch);
            return BATON_ENOMEM;
        }
        uint32_t keep = (i == KCHUNK_MAX && c + 2 == x->nchunks) ? KCHUNK_MAX : KCHUNK_MAX / 2;
        memcpy(nch->e, &ch->e[keep], (KCHUNK_MAX - keep) * sizeof(ch->e[0]));
        nch->n = KCHUNK_MAX - keep;
        ch->n = keep;
        if (i >= keep) {
            ch = nch;
            i -= keep;
        }
    }
    memmove(&ch->e[i + 1], &ch->e[i], (ch->n - i) * sizeof(ch->e[0]));
    ch->e[i] = e;
    ch->n++;
    return 0;
}

/* Inserts a new entry for k (absent); returns it or NULL on ENOMEM. */
static struct kent *kidx_insert(struct kidx *x, const uint8_t *k, size_t klen, uint32_t h)
{
    if ((x->nkeys + 1) * 10 > x->tcap * 7 && tab_grow(x) != 0)
        return NULL;
    struct kent *e = malloc(kent_size((uint32_t)klen));
    if (!e)
        return NULL;
    e->klen = (uint32_t)klen;
    e->hash = h;
    e->ool = 0;
    e->r.rev = 0;
    if (klen)
        memcpy(e->data, k, klen);
    if (chunks_insert(x, e) != 0) {
        free(e);
        return NULL;
    }
    tab_insert(x, e);
    x->nkeys++;
    x->bytes += kent_size(e->klen);
    return e;
}

int kidx_add(struct kidx *x, const uint8_t *k, size_t klen, uint64_t rev)
{
    struct kent *e = kidx_get(x, k, klen);
    if (!e && !(e = kidx_insert(x, k, klen, key_hash(k, klen))))
        return BATON_ENOMEM;
    uint64_t last = kent_last(e);
    if (last >= rev)
        return BATON_EINVAL;
    if (last == 0) {
        e->r.rev = rev; /* a fresh entry: inline */
        return 0;
    }
    if (!e->ool) {
        struct krevs *arr = malloc(krevs_size(4));
        if (!arr)
            return BATON_ENOMEM;
        arr->n = 1;
        arr->cap = 4;
        arr->v[0] = e->r.rev;
        e->r.arr = arr;
        e->ool = 1;
        x->bytes += krevs_size(4);
    } else if (e->r.arr->n == e->r.arr->cap) {
        uint32_t cap = e->r.arr->cap, ncap = cap + cap / 2;
        struct krevs *arr = realloc(e->r.arr, krevs_size(ncap));
        if (!arr)
            return BATON_ENOMEM;
        x->bytes += krevs_size(ncap) - krevs_size(cap);
        arr->cap = ncap;
        e->r.arr = arr;
    }
    e->r.arr->v[e->r.arr->n++] = rev;
    return 0;
}

uint64_t kent_at(struct kent *e, int64_t rev)
{
    uint64_t *revs = kent_revs(e);
    uint32_t n = kent_nrevs(e);
    uint64_t lim = rev_after_main(rev);
    /* The newest revision is by far the most asked for: check it first. */
    if (n && revs[n - 1] < lim)
        return revs[n - 1];
    uint32_t lo = 0, hi = n;
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
    uint32_t lo = 0, hi = kent_nrevs(e);
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
static uint32_t kent_compact(struct kidx *x, struct kent *e, int64_t rev)
{
    uint64_t *revs = kent_revs(e);
    uint32_t n = kent_nrevs(e);
    uint64_t lim = rev_after_main(rev);
    uint32_t p = 0;
    while (p < n && revs[p] < lim)
        p++;
    /* revs[0, p) are <= rev; keep revs[p-1] if it is live. */
    uint32_t from = p;
    if (p > 0 && !rev_tomb(revs[p - 1]))
        from = p - 1;
    if (from > 0) {
        memmove(revs, revs + from, (n - from) * sizeof(*revs));
        n -= from;
        if (e->ool)
            e->r.arr->n = n;
        else
            e->r.rev = 0; /* n is 0: the single revision went */
    }
    if (e->ool && n <= 1) {
        /* Back to the inline form: most keys end up here after a compaction. */
        uint64_t only = n ? revs[0] : 0;
        x->bytes -= krevs_size(e->r.arr->cap);
        free(e->r.arr);
        e->ool = 0;
        e->r.rev = only;
    }
    return n;
}

void kidx_compact(struct kidx *x, int64_t rev)
{
    size_t c = 0;
    while (c < x->nchunks) {
        struct kchunk *ch = x->chunks[c];
        uint32_t w = 0;
        for (uint32_t i = 0; i < ch->n; i++) {
            struct kent *e = ch->e[i];
            if (kent_compact(x, e, rev) == 0) {
                tab_remove(x, e);
                x->bytes -= kent_size(e->klen);
                kent_free(e);
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
