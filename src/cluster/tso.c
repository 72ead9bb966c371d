/*
 * The leader's timestamp oracle and id allocator (see cluster_tso.h for the protocol). Both
 * follow the same shape: leadership of a term starts with nothing to serve; the service reads
 * the persisted bound, proposes a compare-and-set that moves it past everything handed out so
 * far, and only once that applied are values handed out, from memory, below the bound.
 */
#include "cluster/cluster_tso.h"

/* ---- Timestamps ----------------------------------------------------------------------------- */

void tso_init(struct tso *t)
{
    *t = (struct tso){.window_ms = TSO_WINDOW_MS, .extend_ms = TSO_EXTEND_BELOW_MS};
}

void tso_lead(struct tso *t, uint64_t term)
{
    BATON_ASSERT(term != 0);
    if (t->term == term)
        return;
    t->term = term;
    t->ready = false;
    t->proposing = false;
    t->limit_ms = 0;
    /* last is kept: it only ever helps (a value handed out by this member in an older term is
     * below the stored bound anyway). */
}

void tso_follow(struct tso *t)
{
    t->term = 0;
    t->ready = false;
    t->proposing = false;
}

/* The physical time the window must cover from: now, or the last value handed out when the
 * logical overflow (or a clock that stepped back) put it ahead of now. */
static uint64_t tso_base_ms(const struct tso *t, uint64_t now_ms)
{
    uint64_t last_ms = tso_physical(t->last);
    return now_ms > last_ms ? now_ms : last_ms;
}

bool tso_window_due(const struct tso *t, uint64_t now_ms)
{
    if (!t->term || t->proposing)
        return false;
    uint64_t base = tso_base_ms(t, now_ms);
    return !t->ready || t->limit_ms <= base || t->limit_ms - base < t->extend_ms;
}

bool tso_want_window(struct tso *t, uint64_t now_ms, uint64_t stored_ms, uint64_t *limit_ms)
{
    if (!tso_window_due(t, now_ms))
        return false;
    uint64_t base = tso_base_ms(t, now_ms);
    /* Starting: strictly above the stored bound. Extending: now + window (the bound is ours;
     * base is at least the last value handed out), but never lower than what is stored (a
     * bound raised by someone else is kept). */
    if (!t->ready && base <= stored_ms)
        base = stored_ms + 1;
    if (base > TSO_PHYSICAL_MAX - t->window_ms)
        return false;
    *limit_ms = base + t->window_ms;
    if (*limit_ms <= stored_ms)
        *limit_ms = stored_ms + 1;
    t->proposing = true;
    return true;
}

void tso_window_saved(struct tso *t, uint64_t term, uint64_t stored_ms, uint64_t limit_ms)
{
    if (term != t->term)
        return;
    BATON_ASSERT(limit_ms > stored_ms);
    t->proposing = false;
    if (!t->ready) {
        /* First window of this term: start strictly above everything stored. */
        uint64_t floor = tso_compose(stored_ms + 1, 0) - 1;
        if (t->last < floor)
            t->last = floor;
        t->ready = true;
    }
    if (limit_ms > t->limit_ms)
        t->limit_ms = limit_ms;
    t->windows++;
}

void tso_window_failed(struct tso *t, uint64_t term)
{
    if (term == t->term)
        t->proposing = false;
}

int tso_alloc(struct tso *t, uint64_t now_ms, uint32_t count, uint64_t *first)
{
    if (count == 0 || count > TSO_COUNT_MAX)
        return BATON_EINVAL;
    if (!t->term)
        return BATON_ENOTLEADER;
    if (!t->ready)
        return BATON_EBUSY;
    /* The next value is above the last one whatever the clock says; when the clock is ahead, it
     * jumps to now with logical 0. A range that overflows the logical bits simply continues in
     * the next millisecond: the values are contiguous integers. */
    uint64_t start = t->last + 1;
    if (now_ms <= TSO_PHYSICAL_MAX && tso_compose(now_ms, 0) > start)
        start = tso_compose(now_ms, 0);
    uint64_t end = start + count - 1;
    if (tso_physical(end) > t->limit_ms)
        return BATON_EBUSY;
    t->last = end;
    *first = start;
    return 0;
}

/* ---- Ids --------------------------------------------------------------------------------------
 */

void ids_init(struct idalloc *d)
{
    *d = (struct idalloc){.chunk = IDS_CHUNK};
}

void ids_lead(struct idalloc *d, uint64_t term)
{
    BATON_ASSERT(term != 0);
    if (d->term == term)
        return;
    d->term = term;
    d->ready = false;
    d->proposing = false;
    d->next = d->end = 0;
}

void ids_follow(struct idalloc *d)
{
    d->term = 0;
    d->ready = false;
    d->proposing = false;
    d->next = d->end = 0;
}

bool ids_exhausted(uint64_t stored, uint32_t chunk)
{
    if (stored == 0)
        stored = IDS_FIRST;
    return stored > UINT64_MAX - chunk - IDS_COUNT_MAX;
}

bool ids_chunk_due(const struct idalloc *d)
{
    if (!d->term || d->proposing)
        return false;
    uint64_t left = d->ready ? d->end - d->next : 0;
    uint64_t low = d->chunk / 4 > d->need ? d->chunk / 4 : d->need;
    return !d->ready || left < low || left == 0;
}

bool ids_want_chunk(struct idalloc *d, uint64_t stored, uint64_t *from, uint64_t *to)
{
    if (!ids_chunk_due(d))
        return false;
    if (stored == 0)
        stored = IDS_FIRST;
    if (ids_exhausted(stored, d->chunk))
        return false;
    uint64_t size = d->chunk > d->need ? d->chunk : d->need;
    *from = stored;
    *to = stored + size;
    d->proposing = true;
    return true;
}

void ids_chunk_saved(struct idalloc *d, uint64_t term, uint64_t from, uint64_t to)
{
    if (term != d->term)
        return;
    BATON_ASSERT(to > from);
    d->proposing = false;
    if (d->ready && d->end == from) {
        d->end = to; /* contiguous with what is left */
    } else {
        /* Someone else moved the counter (or this is the first chunk): what was left of the
         * old chunk is skipped, never handed out twice. */
        d->next = from;
        d->end = to;
    }
    d->ready = true;
    if (d->end - d->next >= d->need)
        d->need = 0;
}

void ids_chunk_failed(struct idalloc *d, uint64_t term)
{
    if (term == d->term)
        d->proposing = false;
}

int ids_alloc(struct idalloc *d, uint32_t count, uint64_t *first)
{
    if (count == 0 || count > IDS_COUNT_MAX)
        return BATON_EINVAL;
    if (!d->term)
        return BATON_ENOTLEADER;
    if (!d->ready || d->end - d->next < count) {
        if (count > d->need)
            d->need = count;
        return BATON_EBUSY;
    }
    *first = d->next;
    d->next += count;
    return 0;
}

int cluster_parse_u64(const uint8_t *p, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20 || (p[0] == '0' && len > 1))
        return BATON_ECORRUPT;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return BATON_ECORRUPT;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return BATON_ECORRUPT;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}
