/*
 * The registry: a list of families in registration order (so output is stable), each with a
 * list of series. Lookups walk lists; they happen at registration, not when recording.
 */
#include "metrics/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct metrics_series {
    struct metrics_series *next;
    struct metrics_family *family;
    char *labels;
    double value;        /* counter, gauge */
    metrics_gauge_fn fn; /* computed gauge */
    void *fn_ctx;
    uint64_t *bucket_counts; /* histogram: bounds_len + 1 (last is +Inf) */
    uint64_t count;          /* histogram */
    double sum;              /* histogram */
};

struct metrics_family {
    struct metrics_family *next;
    char *name;
    char *help;
    enum metrics_type type;
    double *bounds;
    int bounds_len;
    struct metrics_series *series, **series_tail;
};

struct metrics {
    struct metrics_family *families, **families_tail;
};

int metrics_create(struct metrics **out)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return BATON_ENOMEM;
    m->families_tail = &m->families;
    *out = m;
    return 0;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    for (struct metrics_family *f = m->families; f;) {
        struct metrics_family *fn = f->next;
        for (struct metrics_series *s = f->series; s;) {
            struct metrics_series *sn = s->next;
            free(s->labels);
            free(s->bucket_counts);
            free(s);
            s = sn;
        }
        free(f->name);
        free(f->help);
        free(f->bounds);
        free(f);
        f = fn;
    }
    free(m);
}

static struct metrics_family *family_get(struct metrics *m, const char *name, const char *help,
                                         enum metrics_type type, const double *bounds,
                                         int bounds_len)
{
    for (struct metrics_family *f = m->families; f; f = f->next) {
        if (strcmp(f->name, name) != 0)
            continue;
        BATON_ASSERT(f->type == type);
        BATON_ASSERT(f->bounds_len == bounds_len);
        for (int i = 0; i < bounds_len; i++)
            BATON_ASSERT(f->bounds[i] == bounds[i]);
        return f;
    }
    struct metrics_family *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help);
    f->type = type;
    f->bounds_len = bounds_len;
    f->series_tail = &f->series;
    if (bounds_len) {
        f->bounds = malloc(sizeof(double) * (size_t)bounds_len);
        if (f->bounds)
            memcpy(f->bounds, bounds, sizeof(double) * (size_t)bounds_len);
    }
    if (!f->name || !f->help || (bounds_len && !f->bounds)) {
        free(f->name);
        free(f->help);
        free(f->bounds);
        free(f);
        return NULL;
    }
    *m->families_tail = f;
    m->families_tail = &f->next;
    return f;
}

static struct metrics_series *series_get(struct metrics *m, const char *name, const char *help,
                                         enum metrics_type type, const char *labels,
                                         const double *bounds, int bounds_len)
{
    struct metrics_family *f = family_get(m, name, help, type, bounds, bounds_len);
    if (!f)
        return NULL;
    for (struct metrics_series *s = f->series; s; s = s->next)
        if (strcmp(s->labels, labels) == 0)
            return s;
    struct metrics_series *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->family = f;
    s->labels = strdup(labels);
    if (type == METRICS_HISTOGRAM)
        s->bucket_counts = calloc((size_t)bounds_len + 1, sizeof(uint64_t));
    if (!s->labels || (type == METRICS_HISTOGRAM && !s->bucket_counts)) {
        free(s->labels);
        free(s->bucket_counts);
        free(s);
        return NULL;
    }
    *f->series_tail = s;
    f->series_tail = &s->next;
    return s;
}

struct metrics_series *metrics_counter(struct metrics *m, const char *name, const char *help,
                                       const char *labels)
{
    return series_get(m, name, help, METRICS_COUNTER, labels, NULL, 0);
}

struct metrics_series *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                     const char *labels)
{
    return series_get(m, name, help, METRICS_GAUGE, labels, NULL, 0);
}

struct metrics_series *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                         const char *labels, const double *bounds, int bounds_len)
{
    BATON_ASSERT(bounds_len > 0);
    for (int i = 1; i < bounds_len; i++)
        BATON_ASSERT(bounds[i - 1] < bounds[i]);
    return series_get(m, name, help, METRICS_HISTOGRAM, labels, bounds, bounds_len);
}

struct metrics_series *metrics_gauge_func(struct metrics *m, const char *name, const char *help,
                                          const char *labels, metrics_gauge_fn fn, void *ctx)
{
    struct metrics_series *s = series_get(m, name, help, METRICS_GAUGE, labels, NULL, 0);
    if (s) {
        s->fn = fn;
        s->fn_ctx = ctx;
    }
    return s;
}

struct metrics_series *metrics_counter_func(struct metrics *m, const char *name, const char *help,
                                            const char *labels, metrics_gauge_fn fn, void *ctx)
{
    struct metrics_series *s = series_get(m, name, help, METRICS_COUNTER, labels, NULL, 0);
    if (s) {
        s->fn = fn;
        s->fn_ctx = ctx;
    }
    return s;
}

void metrics_exp_buckets(double *out, int len, double start, double factor)
{
    for (int i = 0; i < len; i++, start *= factor)
        out[i] = start;
}

void metrics_add(struct metrics_series *s, double delta)
{
    if (!s)
        return;
    BATON_ASSERT(s->family->type != METRICS_HISTOGRAM);
    BATON_ASSERT(s->family->type == METRICS_GAUGE || delta >= 0);
    s->value += delta;
}

void metrics_set(struct metrics_series *s, double value)
{
    if (!s)
        return;
    BATON_ASSERT(s->family->type == METRICS_GAUGE);
    s->value = value;
}

void metrics_observe(struct metrics_series *s, double value)
{
    if (!s)
        return;
    struct metrics_family *f = s->family;
    BATON_ASSERT(f->type == METRICS_HISTOGRAM);
    int i = 0;
    while (i < f->bounds_len && value > f->bounds[i])
        i++;
    s->bucket_counts[i]++;
    s->count++;
    s->sum += value;
}

double metrics_value(const struct metrics_series *s)
{
    if (s->family->type == METRICS_HISTOGRAM)
        return (double)s->count;
    return s->fn ? s->fn(s->fn_ctx) : s->value;
}

/* Prometheus' float text: the shortest of %.15g/%.17g that reads back exactly, integers
 * without a fraction, +Inf/-Inf/NaN by name. */
static void format_float(char *s, size_t len, double v)
{
    if (isnan(v))
        snprintf(s, len, "NaN");
    else if (isinf(v))
        snprintf(s, len, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(s, len, "%.0f", v);
    else if (snprintf(s, len, "%.15g", v), strtod(s, NULL) != v)
        snprintf(s, len, "%.17g", v);
}

static int put_float(struct buf *out, double v)
{
    char s[64];
    format_float(s, sizeof(s), v);
    return buf_printf(out, "%s", s);
}

/* Help text escapes backslash and newline. */
static int put_help(struct buf *out, const char *help)
{
    int rc = 0;
    for (const char *p = help; *p && !rc; p++) {
        if (*p == '\\')
            rc = buf_append(out, "\\\\", 2);
        else if (*p == '\n')
            rc = buf_append(out, "\\n", 2);
        else
            rc = buf_append(out, p, 1);
    }
    return rc;
}

static int put_labels(struct buf *out, const char *labels, const char *extra)
{
    bool l = labels[0] != 0, e = extra && extra[0];
    if (!l && !e)
        return 0;
    return buf_printf(out, "{%s%s%s}", labels, l && e ? "," : "", e ? extra : "");
}

static int render_histogram(struct buf *out, struct metrics_family *f, struct metrics_series *s)
{
    int rc = 0;
    uint64_t cum = 0;
    char le[80], num[64];
    for (int i = 0; i <= f->bounds_len && !rc; i++) {
        cum += s->bucket_counts[i];
        format_float(num, sizeof(num), i < f->bounds_len ? f->bounds[i] : INFINITY);
        snprintf(le, sizeof(le), "le=\"%s\"", num);
        rc = buf_printf(out, "%s_bucket", f->name);
        rc = rc ? rc : put_labels(out, s->labels, le);
        rc = rc ? rc : buf_printf(out, " %llu\n", (unsigned long long)cum);
    }
    rc = rc ? rc : buf_printf(out, "%s_sum", f->name);
    rc = rc ? rc : put_labels(out, s->labels, NULL);
    rc = rc ? rc : buf_append(out, " ", 1);
    rc = rc ? rc : put_float(out, s->sum);
    rc = rc ? rc : buf_printf(out, "\n%s_count", f->name);
    rc = rc ? rc : put_labels(out, s->labels, NULL);
    rc = rc ? rc : buf_printf(out, " %llu\n", (unsigned long long)s->count);
    return rc;
}

int metrics_render(struct metrics *m, struct buf *out)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    int rc = 0;
    for (struct metrics_family *f = m->families; f && !rc; f = f->next) {
        rc = buf_printf(out, "# HELP %s ", f->name);
        rc = rc ? rc : put_help(out, f->help);
        rc = rc ? rc : buf_printf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        for (struct metrics_series *s = f->series; s && !rc; s = s->next) {
            if (f->type == METRICS_HISTOGRAM) {
                rc = render_histogram(out, f, s);
                continue;
            }
            rc = buf_printf(out, "%s", f->name);
            rc = rc ? rc : put_labels(out, s->labels, NULL);
            rc = rc ? rc : buf_append(out, " ", 1);
            rc = rc ? rc : put_float(out, metrics_value(s));
            rc = rc ? rc : buf_append(out, "\n", 1);
        }
    }
    return rc;
}
