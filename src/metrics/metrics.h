/*
 * metrics: counters, gauges and histograms with labels, rendered in Prometheus' text format
 * (version 0.0.4) for the admin HTTP endpoint. Single-threaded by design: only the loop thread
 * records and renders (other threads report through their completions), so recording a value
 * is a plain add on a cached series pointer, with no atomics and no lookups on hot paths.
 *
 * Lifetime: a registry owns its families and series; series pointers stay valid until
 * metrics_free. Names, help texts and label strings are copied.
 */
#ifndef BATON_METRICS_H
#define BATON_METRICS_H

#include "base/base.h"

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

struct metrics;
struct metrics_series;

/* Computes a gauge's value at render time (e.g. the db size, open connections). */
typedef double (*metrics_gauge_fn)(void *ctx);

int metrics_create(struct metrics **out);
void metrics_free(struct metrics *m);

/* Returns the series for (name, labels), creating family and series on first use; labels is
 * Prometheus label text without braces (`method="Range",code="OK"`) or "" for none. A name
 * registered before with another type or other bucket bounds is a programmer error (asserted).
 * NULL only when out of memory. */
struct metrics_series *metrics_counter(struct metrics *m, const char *name, const char *help,
                                       const char *labels);
struct metrics_series *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                     const char *labels);
/* Histogram with the given upper bounds (ascending, copied; +Inf is implicit). */
struct metrics_series *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                         const char *labels, const double *bounds, int bounds_len);
/* A gauge whose value comes from fn(ctx) when rendered. */
struct metrics_series *metrics_gauge_func(struct metrics *m, const char *name, const char *help,
                                          const char *labels, metrics_gauge_fn fn, void *ctx);
/* A counter kept elsewhere (a layer's own monotonic count), read through fn(ctx) when
 * rendered. fn must never go down. */
struct metrics_series *metrics_counter_func(struct metrics *m, const char *name, const char *help,
                                            const char *labels, metrics_gauge_fn fn, void *ctx);

/* Exponential bucket bounds: start, start*factor, ... (len values) into out. */
void metrics_exp_buckets(double *out, int len, double start, double factor);

/* Recording. A NULL series is allowed and ignored, so a failed registration costs nothing. */
void metrics_add(struct metrics_series *s, double delta);     /* counter (delta >= 0) or gauge */
void metrics_set(struct metrics_series *s, double value);     /* gauge */
void metrics_observe(struct metrics_series *s, double value); /* histogram */
double metrics_value(const struct metrics_series *s);         /* counter/gauge; hist: count */

/* Appends the whole registry in Prometheus text format to out. 0 or BATON_ENOMEM. */
int metrics_render(struct metrics *m, struct buf *out);

#endif
