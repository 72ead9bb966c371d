/* Prometheus text rendering of counters, gauges, computed gauges and histograms. */
#include "metrics/metrics.h"
#include "test.h"

#include <string.h>

static double answer(void *ctx)
{
    return *(double *)ctx;
}

TEST(render_matches_prometheus_text_format)
{
    struct metrics *m;
    CHECK_OK(metrics_create(&m));
    struct metrics_series *ok =
        metrics_counter(m, "grpc_requests_total", "gRPC requests.", "method=\"Range\",code=\"OK\"");
    struct metrics_series *bad = metrics_counter(m, "grpc_requests_total", "gRPC requests.",
                                                 "method=\"Put\",code=\"Unavailable\"");
    CHECK(metrics_counter(m, "grpc_requests_total", "x", "method=\"Range\",code=\"OK\"") == ok);
    metrics_add(ok, 3);
    metrics_add(bad, 1);
    struct metrics_series *term = metrics_gauge(m, "raft_term", "Current term.\nline2", "");
    metrics_set(term, 7);
    double v = 1.5;
    metrics_gauge_func(m, "db_size_bytes", "Size\\of db.", "", answer, &v);
    double bounds[3];
    metrics_exp_buckets(bounds, 3, 0.001, 2);
    struct metrics_series *h =
        metrics_histogram(m, "wal_fsync_seconds", "fsync latency.", "", bounds, 3);
    metrics_observe(h, 0.0005);
    metrics_observe(h, 0.003);
    metrics_observe(h, 10);
    metrics_add(NULL, 1); /* ignored */

    struct buf out = {0};
    CHECK_OK(metrics_render(m, &out));
    const char *want = "# HELP grpc_requests_total gRPC requests.\n"
                       "# TYPE grpc_requests_total counter\n"
                       "grpc_requests_total{method=\"Range\",code=\"OK\"} 3\n"
                       "grpc_requests_total{method=\"Put\",code=\"Unavailable\"} 1\n"
                       "# HELP raft_term Current term.\\nline2\n"
                       "# TYPE raft_term gauge\n"
                       "raft_term 7\n"
                       "# HELP db_size_bytes Size\\\\of db.\n"
                       "# TYPE db_size_bytes gauge\n"
                       "db_size_bytes 1.5\n"
                       "# HELP wal_fsync_seconds fsync latency.\n"
                       "# TYPE wal_fsync_seconds histogram\n"
                       "wal_fsync_seconds_bucket{le=\"0.001\"} 1\n"
                       "wal_fsync_seconds_bucket{le=\"0.002\"} 1\n"
                       "wal_fsync_seconds_bucket{le=\"0.004\"} 2\n"
                       "wal_fsync_seconds_bucket{le=\"+Inf\"} 3\n"
                       "wal_fsync_seconds_sum 10.0035\n"
                       "wal_fsync_seconds_count 3\n";
    CHECK_MEM(out.data, out.len, want, strlen(want));
    CHECK_EQ(metrics_value(h), 3);
    buf_free(&out);
    metrics_free(m);
}
