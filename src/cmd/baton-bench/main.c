/*
 * baton-bench: a closed-loop load generator speaking etcd's v3 gRPC API (see usage()).
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const op_names[OP_COUNT] = {"put",   "range",     "txn",   "event",
                                               "grant", "keepalive", "revoke"};

const char *bench_op_name(enum bench_op op)
{
    return op_names[op];
}

static const char *const wl_names[] = {"put",   "range",    "txn",     "watch",      "lease",
                                       "mixed", "failover", "startup", "lease-scale"};

const char *bench_workload_name(enum bench_workload w)
{
    return wl_names[w];
}

/* ---- /proc ---------------------------------------------------------------------------------- */

int bench_proc_cpu_ticks(int pid, uint64_t *ticks)
{
    char path[64], line[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = 0;
    /* The command name may hold spaces and parentheses: fields resume after the last ')'. */
    char *p = strrchr(line, ')');
    if (!p)
        return BATON_ECORRUPT;
    unsigned long long ut, st;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return BATON_ECORRUPT;
    *ticks = ut + st;
    return 0;
}

int bench_proc_status_kb(int pid, const char *field, uint64_t *kb)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    int rc = BATON_ENOTFOUND;
    size_t flen = strlen(field);
    while (fgets(line, sizeof(line), f)) {
        unsigned long long v;
        if (strncmp(line, field, flen) == 0 && line[flen] == ':' &&
            sscanf(line + flen + 1, " %llu kB", &v) == 1) {
            *kb = v;
            rc = 0;
            break;
        }
    }
    fclose(f);
    return rc;
}

/* ---- reports -------------------------------------------------------------------------------- */

static uint64_t request_ops(const struct bench_result *r)
{
    uint64_t n = 0;
    for (int i = 0; i < OP_COUNT; i++)
        if (i != OP_EVENT)
            n += r->ops[i].ok;
    return n;
}

static uint64_t max_kb(const struct bench_opts *o, const uint64_t *kb)
{
    uint64_t m = 0;
    for (int i = 0; i < o->pids_len; i++)
        if (kb[i] > m)
            m = kb[i];
    return m;
}

static const double quantiles[] = {0.5, 0.9, 0.99, 0.999, 1.0};
static const char *const qnames[] = {"p50", "p90", "p99", "p99_9", "max"};

static double pct(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

static uint64_t errors_of(const struct bench_opstats *s)
{
    uint64_t n = 0;
    for (int c = 0; c < BENCH_GRPC_CODES; c++)
        n += s->errors[c];
    return n;
}

static void print_errors(const struct bench_opstats *s)
{
    for (int c = 0; c < BENCH_GRPC_CODES; c++)
        if (s->errors[c])
            printf(" %s=%llu", grpc_code_name(c), (unsigned long long)s->errors[c]);
}

static void report_lease_scale_table(const struct bench_opts *o, const struct bench_result *r)
{
    const struct bench_lease_scale *ls = &r->ls;
    const struct bench_opstats *g = &r->ops[OP_GRANT], *k = &r->ops[OP_KEEPALIVE],
                               *v = &r->ops[OP_REVOKE];
    double wall = r->measured_s > 0 ? r->measured_s : 1;
    printf("lease-scale: %u leases, TTL %lld s, renewed every %u ms, %d conn(s) x %d stream(s), "
           "%d in flight\n",
           o->leases, (long long)o->lease_ttl_s, o->renew_ms, o->conns, o->streams, o->inflight);
    if (r->unsupported) {
        printf("lease-scale: not supported by this server yet (%s answered UNIMPLEMENTED)\n",
               r->unsupported_what);
        return;
    }
    printf("grant:      %llu granted in %.2f s (%.0f/s), p50 %.3f ms, p99 %.3f ms, errors %llu",
           (unsigned long long)ls->granted, ls->grant_s,
           ls->grant_s > 0 ? (double)ls->granted / ls->grant_s : 0.0,
           (double)hist_quantile(&g->hist, 0.5) / 1e6, (double)hist_quantile(&g->hist, 0.99) / 1e6,
           (unsigned long long)errors_of(g));
    print_errors(g);
    printf("\nkeep-alive: %.1f s measured: %.0f renewals/s answered (%.0f/s due), p50 %.3f ms, "
           "p99 %.3f ms, max %.3f ms; %llu sent, %llu skipped (previous unanswered), %llu not sent "
           "(buffer full), %llu stream waits at --stream-window %u\n",
           r->measured_s, (double)k->ok / wall, (double)ls->granted * 1000.0 / o->renew_ms,
           (double)hist_quantile(&k->hist, 0.5) / 1e6, (double)hist_quantile(&k->hist, 0.99) / 1e6,
           (double)hist_quantile(&k->hist, 1.0) / 1e6, (unsigned long long)ls->sent,
           (unsigned long long)ls->skipped, (unsigned long long)ls->send_busy,
           (unsigned long long)ls->window_full, o->stream_window);
    printf("expired:    %llu lease(s) (%.2f%%) answered TTL <= 0 (%llu answers); %llu lease(s) "
           "(%.2f%%) went more than the TTL without a renewal; %llu (%.2f%%) lost in all; %llu "
           "expired within the TTL of their last renewal; %llu unknown answer(s)\n",
           (unsigned long long)ls->expired_leases, pct(ls->expired_leases, ls->granted),
           (unsigned long long)ls->expired_answers, (unsigned long long)ls->lapsed_leases,
           pct(ls->lapsed_leases, ls->granted), (unsigned long long)ls->lost_leases,
           pct(ls->lost_leases, ls->granted), (unsigned long long)ls->expired_early,
           (unsigned long long)ls->unknown_answers);
    if (o->pids_len && r->server_cpu_s >= 0)
        printf("server:     %.3f cores during keep-alive (%.2f CPU s / %.2f s), %.1f us CPU per "
               "renewal, peak RSS %.1f MiB\n",
               r->server_cpu_s / wall, r->server_cpu_s, r->measured_s,
               k->ok ? 1e6 * r->server_cpu_s / (double)k->ok : 0.0,
               (double)max_kb(o, r->server_hwm_kb) / 1024);
    else if (o->pids_len)
        printf("server:     CPU unknown (a pid went away)\n");
    printf("client:     %.3f cores during keep-alive, %.1f us CPU per renewal\n",
           r->client_cpu_s / wall, k->ok ? 1e6 * r->client_cpu_s / (double)k->ok : 0.0);
    printf("revoke:     %llu of %llu revoked in %.2f s (%.0f/s), errors %llu",
           (unsigned long long)v->ok, (unsigned long long)ls->revoke_total, ls->revoke_s,
           ls->revoke_s > 0 ? (double)v->ok / ls->revoke_s : 0.0, (unsigned long long)errors_of(v));
    print_errors(v);
    printf("\n");
}

static void report_lease_scale_json(const struct bench_opts *o, const struct bench_result *r)
{
    const struct bench_lease_scale *ls = &r->ls;
    const struct bench_opstats *k = &r->ops[OP_KEEPALIVE], *v = &r->ops[OP_REVOKE];
    double wall = r->measured_s > 0 ? r->measured_s : 1;
    printf("{\"workload\":\"lease-scale\",\"unsupported\":%s,\"leases\":%u,\"ttl_s\":%lld,"
           "\"renew_ms\":%u,\"conns\":%d,\"streams\":%d,\"inflight\":%d",
           r->unsupported ? "true" : "false", o->leases, (long long)o->lease_ttl_s, o->renew_ms,
           o->conns, o->streams, o->inflight);
    printf(",\"granted\":%llu,\"grant_s\":%.3f,\"grants_per_s\":%.1f,\"grant_errors\":%llu",
           (unsigned long long)ls->granted, ls->grant_s,
           ls->grant_s > 0 ? (double)ls->granted / ls->grant_s : 0.0,
           (unsigned long long)errors_of(&r->ops[OP_GRANT]));
    printf(",\"measured_s\":%.3f,\"renewals\":%llu,\"renewals_per_s\":%.1f,"
           "\"renewals_due_per_s\":%.1f,\"renew_p50_ms\":%.3f,\"renew_p99_ms\":%.3f,"
           "\"renew_max_ms\":%.3f,\"sent\":%llu,\"skipped\":%llu,\"send_busy\":%llu,"
           "\"stream_window\":%u,\"window_full\":%llu",
           r->measured_s, (unsigned long long)k->ok, (double)k->ok / wall,
           (double)ls->granted * 1000.0 / o->renew_ms, (double)hist_quantile(&k->hist, 0.5) / 1e6,
           (double)hist_quantile(&k->hist, 0.99) / 1e6, (double)hist_quantile(&k->hist, 1.0) / 1e6,
           (unsigned long long)ls->sent, (unsigned long long)ls->skipped,
           (unsigned long long)ls->send_busy, o->stream_window,
           (unsigned long long)ls->window_full);
    printf(",\"expired_leases\":%llu,\"expired_pct\":%.3f,\"expired_answers\":%llu,"
           "\"lapsed_leases\":%llu,\"lapsed_pct\":%.3f,\"lost_leases\":%llu,\"lost_pct\":%.3f,"
           "\"expired_early\":%llu,\"unknown_answers\":%llu",
           (unsigned long long)ls->expired_leases, pct(ls->expired_leases, ls->granted),
           (unsigned long long)ls->expired_answers, (unsigned long long)ls->lapsed_leases,
           pct(ls->lapsed_leases, ls->granted), (unsigned long long)ls->lost_leases,
           pct(ls->lost_leases, ls->granted), (unsigned long long)ls->expired_early,
           (unsigned long long)ls->unknown_answers);
    printf(",\"client_cpu_s\":%.3f,\"client_cores\":%.4f,\"client_us_per_renewal\":%.2f",
           r->client_cpu_s, r->client_cpu_s / wall,
           k->ok ? 1e6 * r->client_cpu_s / (double)k->ok : 0.0);
    if (o->pids_len && r->server_cpu_s >= 0)
        printf(",\"server_cpu_s\":%.3f,\"server_cores\":%.4f,\"server_us_per_renewal\":%.2f,"
               "\"server_rss_max_kb\":%llu",
               r->server_cpu_s, r->server_cpu_s / wall,
               k->ok ? 1e6 * r->server_cpu_s / (double)k->ok : 0.0,
               (unsigned long long)max_kb(o, r->server_hwm_kb));
    printf(",\"revoke_total\":%llu,\"revoked\":%llu,\"revoke_errors\":%llu,\"revoke_s\":%.3f}\n",
           (unsigned long long)ls->revoke_total, (unsigned long long)v->ok,
           (unsigned long long)errors_of(v), ls->revoke_s);
}

void bench_report_table(const struct bench_opts *o, const struct bench_result *r)
{
    if (o->workload == WL_LEASE_SCALE) {
        report_lease_scale_table(o, r);
        return;
    }
    printf("workload %s: %d endpoint(s), %d conn(s), %d in flight, %d stream(s)/conn, key %d B, "
           "value %d B, %u keys%s\n",
           bench_workload_name(o->workload), o->endpoints_len, o->conns, o->inflight, o->streams,
           o->key_size, o->val_size, o->keys, o->serializable ? ", serializable" : "");
    if (r->unsupported) {
        printf("%s: not supported by this server yet (%s answered UNIMPLEMENTED)\n",
               bench_workload_name(o->workload), r->unsupported_what);
        return;
    }
    if (o->workload == WL_STARTUP) {
        printf("startup: first successful put after %.1f ms\n", r->startup_ms);
        return;
    }
    if (o->workload == WL_FAILOVER) {
        printf("failover: longest gap between successful puts %.1f ms over %.1f s\n", r->max_gap_ms,
               r->measured_s);
    }
    printf("%-10s %10s %12s %9s %9s %9s %9s %9s  %s\n", "op", "ok", "ops/s", "p50 ms", "p90 ms",
           "p99 ms", "p99.9 ms", "max ms", "errors");
    for (int i = 0; i < OP_COUNT; i++) {
        const struct bench_opstats *s = &r->ops[i];
        uint64_t errs = 0;
        for (int c = 0; c < BENCH_GRPC_CODES; c++)
            errs += s->errors[c];
        if (s->ok == 0 && errs == 0)
            continue;
        printf("%-10s %10llu %12.1f", op_names[i], (unsigned long long)s->ok,
               r->measured_s > 0 ? (double)s->ok / r->measured_s : 0.0);
        for (int q = 0; q < 5; q++)
            printf(" %9.3f", (double)hist_quantile(&s->hist, quantiles[q]) / 1e6);
        printf(" ");
        for (int c = 0; c < BENCH_GRPC_CODES; c++)
            if (s->errors[c])
                printf(" %s=%llu", grpc_code_name(c), (unsigned long long)s->errors[c]);
        printf("\n");
    }
    if (o->workload == WL_TXN)
        printf("txn: %llu succeeded, %llu failed the compare\n",
               (unsigned long long)r->txn_succeeded, (unsigned long long)r->txn_failed);
    uint64_t n = request_ops(r);
    double cpu = r->client_cpu_s;
    printf("client: %.2f CPU s over %.2f s (%.0f%% of one core), %.1f us CPU per request\n", cpu,
           r->measured_s, r->measured_s > 0 ? 100 * cpu / r->measured_s : 0.0,
           n ? 1e6 * cpu / (double)n : 0.0);
    if (o->pids_len) {
        if (r->server_cpu_s >= 0)
            printf("servers: %.2f CPU s, %.1f us CPU per request", r->server_cpu_s,
                   n ? 1e6 * r->server_cpu_s / (double)n : 0.0);
        else
            printf("servers: CPU unknown (a pid went away)");
        printf(", peak RSS (VmHWM)");
        for (int i = 0; i < o->pids_len; i++)
            printf(" %d:%.1fMiB", o->pids[i], (double)r->server_hwm_kb[i] / 1024);
        printf(", private RSS at the end (RssAnon)");
        for (int i = 0; i < o->pids_len; i++)
            printf(" %d:%.1fMiB", o->pids[i], (double)r->server_anon_kb[i] / 1024);
        printf("\n");
    }
}

void bench_report_json(const struct bench_opts *o, const struct bench_result *r)
{
    if (o->workload == WL_LEASE_SCALE) {
        report_lease_scale_json(o, r);
        return;
    }
    uint64_t n = request_ops(r);
    printf("{\"workload\":\"%s\",\"unsupported\":%s", bench_workload_name(o->workload),
           r->unsupported ? "true" : "false");
    printf(",\"conns\":%d,\"inflight\":%d,\"streams\":%d,\"key_size\":%d,\"value_size\":%d,"
           "\"keys\":%u,\"serializable\":%s",
           o->conns, o->inflight, o->streams, o->key_size, o->val_size, o->keys,
           o->serializable ? "true" : "false");
    printf(",\"measured_s\":%.3f,\"ops\":{", r->measured_s);
    bool first = true;
    for (int i = 0; i < OP_COUNT; i++) {
        const struct bench_opstats *s = &r->ops[i];
        uint64_t errs = 0;
        for (int c = 0; c < BENCH_GRPC_CODES; c++)
            errs += s->errors[c];
        if (s->ok == 0 && errs == 0)
            continue;
        printf("%s\"%s\":{\"ok\":%llu,\"per_s\":%.1f", first ? "" : ",", op_names[i],
               (unsigned long long)s->ok, r->measured_s > 0 ? (double)s->ok / r->measured_s : 0.0);
        first = false;
        for (int q = 0; q < 5; q++)
            printf(",\"%s_ms\":%.3f", qnames[q],
                   (double)hist_quantile(&s->hist, quantiles[q]) / 1e6);
        printf(",\"errors\":{");
        bool ef = true;
        for (int c = 0; c < BENCH_GRPC_CODES; c++)
            if (s->errors[c]) {
                printf("%s\"%s\":%llu", ef ? "" : ",", grpc_code_name(c),
                       (unsigned long long)s->errors[c]);
                ef = false;
            }
        printf("}}");
    }
    printf("},\"requests\":%llu", (unsigned long long)n);
    printf(",\"client_cpu_s\":%.3f,\"client_cpu_us_per_op\":%.2f", r->client_cpu_s,
           n ? 1e6 * r->client_cpu_s / (double)n : 0.0);
    if (o->pids_len && r->server_cpu_s >= 0)
        printf(",\"server_cpu_s\":%.3f,\"server_cpu_us_per_op\":%.2f", r->server_cpu_s,
               n ? 1e6 * r->server_cpu_s / (double)n : 0.0);
    if (o->pids_len) {
        printf(",\"server_rss_max_kb\":%llu", (unsigned long long)max_kb(o, r->server_hwm_kb));
        printf(",\"server_anon_max_kb\":%llu", (unsigned long long)max_kb(o, r->server_anon_kb));
    }
    if (o->workload == WL_TXN)
        printf(",\"txn_succeeded\":%llu,\"txn_failed\":%llu", (unsigned long long)r->txn_succeeded,
               (unsigned long long)r->txn_failed);
    if (o->workload == WL_FAILOVER)
        printf(",\"max_gap_ms\":%.1f", r->max_gap_ms);
    if (o->workload == WL_STARTUP)
        printf(",\"startup_ms\":%.1f", r->startup_ms);
    printf("}\n");
}

/* ---- flags ---------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: baton-bench --endpoints host:port[,host:port...] [flags] WORKLOAD\n"
            "workloads: put, range, txn (compare-and-swap), watch (put->event latency),\n"
            "  lease (grants + keepalive streams), mixed (--read-ratio),\n"
            "  failover (sequential puts, longest gap), startup (time to first put),\n"
            "  lease-scale (grant --leases, keep each alive every --renew-ms over --streams\n"
            "  streams per connection for --duration, count expiries, revoke them all)\n"
            "flags:\n"
            "  --conns N           connections (default 4)\n"
            "  --streams N         watch/keepalive streams per connection (default 4)\n"
            "  --inflight N        unary requests in flight over all connections (default 64)\n"
            "  --key-size B        (default 16)   --value-size B (default 256)\n"
            "  --keys N            key space (default 10000; range/txn/mixed prefill it)\n"
            "  --duration S        measured seconds (default 10)   --warmup S (default 2)\n"
            "  --serializable      serializable ranges (default linearizable)\n"
            "  --read-ratio F      mixed: share of reads (default 0.9)\n"
            "  --target all|leader endpoints used; leader: pass the leader's endpoint first\n"
            "                      and only it is used (default all)\n"
            "  --timeout-ms N      per request (default 5000; failover/startup 200)\n"
            "  --server-pids P,... CPU seconds per op and peak RSS of these processes\n"
            "  --since-ns NS       startup: CLOCK_REALTIME origin (default: now)\n"
            "  --seed N            key choice (default 1)\n"
            "  --leases N          lease-scale: leases held (default 100000)\n"
            "  --ttl S             lease-scale: lease TTL (default 10)\n"
            "  --renew-ms MS       lease-scale: keep-alive period of each lease (default 3000)\n"
            "  --stream-window N   lease-scale: keep-alives unanswered per stream, 0 = no bound\n"
            "                      (default 0, as etcd clients)\n"
            "  --json              one JSON object instead of the table\n"
            "exit status: 0 ok, 1 error, 2 usage, 3 workload not supported by the server\n");
}

static int parse_list(const char *v, char out[][64], int max)
{
    int n = 0;
    while (*v) {
        const char *comma = strchr(v, ',');
        size_t len = comma ? (size_t)(comma - v) : strlen(v);
        if (n == max || len == 0 || len >= 64)
            return -1;
        memcpy(out[n], v, len);
        out[n][len] = 0;
        n++;
        v += len + (comma ? 1 : 0);
    }
    return n;
}

static bool parse_num(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < lo || d > hi)
        return false;
    *out = d;
    return true;
}

static int parse_flags(int argc, char **argv, struct bench_opts *o)
{
    *o = (struct bench_opts){.conns = 4,
                             .streams = 4,
                             .inflight = 64,
                             .key_size = 16,
                             .val_size = 256,
                             .keys = 10000,
                             .duration_s = 10,
                             .warmup_s = 2,
                             .read_ratio = 0.9,
                             .timeout_ms = 0,
                             .seed = 1,
                             .leases = 100000,
                             .lease_ttl_s = 10,
                             .renew_ms = 3000};
    const char *workload = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            if (workload) {
                fprintf(stderr, "baton-bench: more than one workload (%s, %s)\n", workload, a);
                return -1;
            }
            workload = a;
            continue;
        }
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strcmp(a, "--serializable") == 0) {
            o->serializable = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "baton-bench: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        double d;
        bool ok = true;
        if (strcmp(a, "--endpoints") == 0) {
            o->endpoints_len = parse_list(v, o->endpoints, BENCH_ENDPOINTS_MAX);
            ok = o->endpoints_len > 0;
        } else if (strcmp(a, "--server-pids") == 0) {
            char tmp[BENCH_PIDS_MAX][64];
            int n = parse_list(v, tmp, BENCH_PIDS_MAX);
            ok = n > 0;
            for (int j = 0; ok && j < n; j++) {
                ok = parse_num(tmp[j], 1, 4194304, &d);
                o->pids[j] = (int)d;
            }
            o->pids_len = ok ? n : 0;
        } else if (strcmp(a, "--target") == 0) {
            ok = strcmp(v, "all") == 0 || strcmp(v, "leader") == 0;
            o->target_leader = strcmp(v, "leader") == 0;
        } else if (strcmp(a, "--conns") == 0) {
            ok = parse_num(v, 1, BENCH_CONNS_MAX, &d);
            o->conns = (int)d;
        } else if (strcmp(a, "--streams") == 0) {
            ok = parse_num(v, 0, 1024, &d);
            o->streams = (int)d;
        } else if (strcmp(a, "--inflight") == 0) {
            ok = parse_num(v, 1, BENCH_SLOTS_MAX, &d);
            o->inflight = (int)d;
        } else if (strcmp(a, "--key-size") == 0) {
            ok = parse_num(v, 16, 500, &d);
            o->key_size = (int)d;
        } else if (strcmp(a, "--value-size") == 0) {
            ok = parse_num(v, 0, 1 << 20, &d);
            o->val_size = (int)d;
        } else if (strcmp(a, "--keys") == 0) {
            ok = parse_num(v, 1, 10000000, &d);
            o->keys = (uint32_t)d;
        } else if (strcmp(a, "--duration") == 0) {
            ok = parse_num(v, 0.1, 3600, &o->duration_s);
        } else if (strcmp(a, "--warmup") == 0) {
            ok = parse_num(v, 0, 600, &o->warmup_s);
        } else if (strcmp(a, "--read-ratio") == 0) {
            ok = parse_num(v, 0, 1, &o->read_ratio);
        } else if (strcmp(a, "--timeout-ms") == 0) {
            ok = parse_num(v, 1, 600000, &d);
            o->timeout_ms = (uint32_t)d;
        } else if (strcmp(a, "--since-ns") == 0) {
            ok = parse_num(v, 0, 1e19, &d);
            o->since_ns = (uint64_t)d;
        } else if (strcmp(a, "--leases") == 0) {
            ok = parse_num(v, 1, 10000000, &d);
            o->leases = (uint32_t)d;
        } else if (strcmp(a, "--ttl") == 0) {
            ok = parse_num(v, 1, 1e6, &d);
            o->lease_ttl_s = (int64_t)d;
        } else if (strcmp(a, "--renew-ms") == 0) {
            ok = parse_num(v, 10, 3.6e6, &d);
            o->renew_ms = (uint32_t)d;
        } else if (strcmp(a, "--stream-window") == 0) {
            ok = parse_num(v, 0, 1e6, &d);
            o->stream_window = (uint32_t)d;
        } else if (strcmp(a, "--seed") == 0) {
            ok = parse_num(v, 0, 1e18, &d);
            o->seed = (uint64_t)d;
        } else {
            fprintf(stderr, "baton-bench: unknown flag %s\n", a);
            return -1;
        }
        if (!ok) {
            fprintf(stderr, "baton-bench: invalid value \"%s\" for %s\n", v, a);
            return -1;
        }
    }
    if (!workload) {
        fprintf(stderr, "baton-bench: no workload given\n");
        return -1;
    }
    bool found = false;
    for (size_t w = 0; w < sizeof(wl_names) / sizeof(wl_names[0]); w++)
        if (strcmp(workload, wl_names[w]) == 0) {
            o->workload = (enum bench_workload)w;
            found = true;
        }
    if (!found) {
        fprintf(stderr, "baton-bench: unknown workload \"%s\"\n", workload);
        return -1;
    }
    if (o->endpoints_len <= 0) {
        fprintf(stderr, "baton-bench: --endpoints is required\n");
        return -1;
    }
    if (o->target_leader)
        o->endpoints_len = 1;
    bool seq = o->workload == WL_FAILOVER || o->workload == WL_STARTUP;
    if (!o->timeout_ms)
        o->timeout_ms = seq ? 200 : 5000;
    if ((o->workload == WL_WATCH || o->workload == WL_LEASE || o->workload == WL_LEASE_SCALE) &&
        o->streams < 1) {
        fprintf(stderr, "baton-bench: %s needs --streams >= 1\n", workload);
        return -1;
    }
    if ((size_t)o->conns * (size_t)o->streams > BENCH_STREAMS_MAX) {
        fprintf(stderr, "baton-bench: --conns x --streams is more than %d\n", BENCH_STREAMS_MAX);
        return -1;
    }
    if (o->workload == WL_STARTUP && !o->since_ns) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        o->since_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct bench_opts o;
    if (parse_flags(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    static struct bench_result res;
    int rc = bench_run(&o, &res);
    if (rc && !res.unsupported) {
        fprintf(stderr, "baton-bench: %s\n", res.fatal[0] ? res.fatal : baton_strerror(rc));
        return 1;
    }
    if (o.json)
        bench_report_json(&o, &res);
    else
        bench_report_table(&o, &res);
    if (res.unsupported)
        return 3;
    if (rc) {
        fprintf(stderr, "baton-bench: %s\n", res.fatal[0] ? res.fatal : baton_strerror(rc));
        return 1;
    }
    return 0;
}
