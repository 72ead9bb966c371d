/* The histogram's contract: every value lands in a bucket that contains it, and quantiles are
 * within the bucket's relative width (< 1/HIST_SUB) of the exact order statistic. */
#include "base/base.h"
#include "hist.h"
#include "test.h"

#include <stdlib.h>

TEST(hist_buckets_contain_their_values)
{
    struct prng p;
    prng_seed(&p, 7);
    for (int i = 0; i < 200000; i++) {
        uint64_t v = prng_next(&p) >> (prng_below(&p, 64));
        if (v >= (1ull << HIST_EXP_MAX))
            continue;
        uint64_t lo, hi;
        hist_bucket_range(hist_bucket(v), &lo, &hi);
        CHECK(lo <= v && v < hi);
        CHECK((double)(hi - lo) <= (double)lo / HIST_SUB + 1);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

TEST(hist_quantiles_bounded_relative_error)
{
    static struct hist h;
    static uint64_t v[100000];
    struct prng p;
    prng_seed(&p, 11);
    hist_reset(&h);
    for (size_t i = 0; i < 100000; i++) {
        v[i] = 1000 + prng_below(&p, 1000) * prng_below(&p, 100000); /* long tail, ns */
        hist_record(&h, v[i]);
    }
    qsort(v, 100000, sizeof(v[0]), cmp_u64);
    const double qs[] = {0.5, 0.9, 0.99, 0.999};
    for (int i = 0; i < 4; i++) {
        double exact = (double)v[(size_t)(qs[i] * 100000)];
        double got = (double)hist_quantile(&h, qs[i]);
        CHECK(got >= exact * (1 - 1.0 / HIST_SUB) && got <= exact * (1 + 1.0 / HIST_SUB));
    }
    CHECK_EQ(hist_quantile(&h, 1.0), v[99999]);
    CHECK_EQ(h.total, 100000);
}

TEST(hist_empty_is_zero)
{
    struct hist h;
    hist_reset(&h);
    CHECK_EQ(hist_quantile(&h, 0.5), 0);
}
