#include "hist.h"

#include <string.h>

void hist_reset(struct hist *h)
{
    memset(h, 0, sizeof(*h));
}

uint32_t hist_bucket(uint64_t ns)
{
    if (ns < HIST_SUB)
        return (uint32_t)ns;
    uint32_t e = 63u - (uint32_t)__builtin_clzll(ns); /* >= HIST_SUB_BITS */
    if (e > HIST_EXP_MAX)
        return HIST_BUCKETS - 1;
    uint32_t m = (uint32_t)(ns >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1);
    return (e - HIST_SUB_BITS + 1) * HIST_SUB + m;
}

void hist_bucket_range(uint32_t b, uint64_t *lo, uint64_t *hi)
{
    if (b < HIST_SUB) {
        *lo = b;
        *hi = (uint64_t)b + 1;
        return;
    }
    uint32_t e = b / HIST_SUB + HIST_SUB_BITS - 1;
    uint64_t m = b % HIST_SUB;
    uint32_t shift = e - HIST_SUB_BITS;
    *lo = (HIST_SUB + m) << shift;
    *hi = (HIST_SUB + m + 1) << shift;
}

void hist_record(struct hist *h, uint64_t ns)
{
    h->counts[hist_bucket(ns)]++;
    h->total++;
    h->sum_ns += ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->total == 0)
        return 0;
    if (q >= 1.0)
        return h->max_ns;
    uint64_t rank = (uint64_t)(q * (double)h->total);
    if (rank >= h->total)
        rank = h->total - 1;
    uint64_t seen = 0;
    for (uint32_t b = 0; b < HIST_BUCKETS; b++) {
        seen += h->counts[b];
        if (seen > rank) {
            uint64_t lo, hi;
            hist_bucket_range(b, &lo, &hi);
            uint64_t mid = lo + (hi - lo) / 2;
            return mid > h->max_ns ? h->max_ns : mid;
        }
    }
    return h->max_ns;
}
