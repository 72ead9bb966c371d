/*
 * A latency histogram with bounded relative error, in the style of HdrHistogram: values (ns)
 * fall into log2 ranges, each split into HIST_SUB linear buckets, so a reported quantile is
 * within 1/HIST_SUB (< 0.8 %) of the true value. Fixed size, no allocation; values above
 * 2^HIST_EXP_MAX ns (~18 minutes) go to the last bucket. The maximum is kept exactly.
 */
#ifndef BATON_BENCH_HIST_H
#define BATON_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_EXP_MAX  40
#define HIST_BUCKETS  ((HIST_EXP_MAX - HIST_SUB_BITS + 2) * HIST_SUB)

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max_ns;
    uint64_t sum_ns;
};

void hist_reset(struct hist *h);
void hist_record(struct hist *h, uint64_t ns);
/* The value at quantile q (0..1): the midpoint of its bucket, or the exact maximum for q = 1.
 * 0 when the histogram is empty. */
uint64_t hist_quantile(const struct hist *h, double q);
/* Bucket index of a value and the value range [lo, hi) of a bucket (exposed for the test). */
uint32_t hist_bucket(uint64_t ns);
void hist_bucket_range(uint32_t b, uint64_t *lo, uint64_t *hi);

#endif
