/*
 * baton-bench internals: options, per-operation statistics, the run state shared by the
 * workload code (work.c), the report (report.c) and main.c.
 */
#ifndef BATON_BENCH_H
#define BATON_BENCH_H

#include "base/base.h"
#include "hist.h"
#include "net/net.h"
#include "rpc/rpc.h"

#include <stdbool.h>
#include <stdint.h>

#define BENCH_ENDPOINTS_MAX 16
#define BENCH_PIDS_MAX      16
#define BENCH_CONNS_MAX     256
#define BENCH_SLOTS_MAX     8192
#define BENCH_STREAMS_MAX   8192
#define BENCH_GRPC_CODES    17

enum bench_workload {
    WL_PUT,
    WL_RANGE,
    WL_TXN,
    WL_WATCH,
    WL_LEASE,
    WL_MIXED,
    WL_FAILOVER,    /* sequential puts, rotating endpoints on failure: reports the longest gap */
    WL_STARTUP,     /* puts until the first success: reports the time since --since-ns */
    WL_LEASE_SCALE, /* --leases leases kept alive every --renew-ms (leasescale.c) */
};

enum bench_op { OP_PUT, OP_RANGE, OP_TXN, OP_EVENT, OP_GRANT, OP_KEEPALIVE, OP_REVOKE, OP_COUNT };

struct bench_opts {
    char endpoints[BENCH_ENDPOINTS_MAX][64];
    int endpoints_len;
    enum bench_workload workload;
    bool target_leader;
    int conns;
    int streams;  /* watch / keepalive streams per connection */
    int inflight; /* unary requests in flight, over all connections */
    int key_size;
    int val_size;
    uint32_t keys; /* key space */
    double duration_s;
    double warmup_s;
    bool serializable;
    double read_ratio; /* mixed */
    uint32_t timeout_ms;
    int pids[BENCH_PIDS_MAX];
    int pids_len;
    bool json;
    uint64_t since_ns; /* startup: CLOCK_REALTIME origin */
    uint64_t seed;
    uint32_t leases;        /* lease-scale: leases held */
    int64_t lease_ttl_s;    /* lease-scale: TTL granted */
    uint32_t renew_ms;      /* lease-scale: keep-alive period of each lease */
    uint32_t stream_window; /* lease-scale: keep-alives unanswered per stream; 0 = unbounded */
};

struct bench_opstats {
    struct hist hist;
    uint64_t ok;
    uint64_t errors[BENCH_GRPC_CODES];
};

struct bench_proc_sample {
    uint64_t cpu_ticks[BENCH_PIDS_MAX];
    bool ok[BENCH_PIDS_MAX];
};

/* lease-scale figures beyond ops[OP_GRANT / OP_KEEPALIVE / OP_REVOKE]. Expiry counts cover the
 * whole run; sent and skipped only the measured window. */
struct bench_lease_scale {
    uint64_t granted;
    double grant_s;
    uint64_t sent;            /* keep-alives sent */
    uint64_t skipped;         /* due while the previous one was unanswered: not sent */
    uint64_t send_busy;       /* the stream's send buffer was full: not sent */
    uint64_t window_full;     /* ticks a stream stopped at --stream-window with leases due */
    uint64_t expired_answers; /* answers with TTL <= 0 */
    uint64_t expired_leases;  /* distinct leases answered TTL <= 0 */
    uint64_t expired_early;   /* of those, answered TTL <= 0 less than TTL after the request
                                 that last renewed them was sent: the server's fault */
    uint64_t lapsed_leases;   /* leases that went more than TTL without a renewal */
    uint64_t lost_leases;     /* expired or lapsed (or both) */
    uint64_t unknown_answers; /* undecodable, or an id not granted here */
    uint64_t revoke_total;    /* leases phase 3 revoked (granted, not known expired) */
    double revoke_s;
};

struct bench_result {
    struct bench_opstats ops[OP_COUNT];
    double measured_s;
    double client_cpu_s;
    double server_cpu_s; /* over --server-pids, during the measured window; <0 unknown */
    uint64_t server_hwm_kb[BENCH_PIDS_MAX];  /* peak RSS (VmHWM), file-backed pages included */
    uint64_t server_anon_kb[BENCH_PIDS_MAX]; /* private memory at the end (RssAnon) */
    bool unsupported;
    char unsupported_what[96];
    char fatal[256];
    uint64_t txn_succeeded, txn_failed;
    double max_gap_ms; /* failover */
    double startup_ms; /* startup */
    struct bench_lease_scale ls;
};

const char *bench_op_name(enum bench_op op);
const char *bench_workload_name(enum bench_workload w);

/* Runs the workload; fills *res. 0, or a negative code with res->fatal set. */
int bench_run(const struct bench_opts *o, struct bench_result *res);
/* The lease-scale workload (called by bench_run). */
int bench_run_lease_scale(const struct bench_opts *o, struct bench_result *res);

/* /proc readers: CPU ticks (utime + stime) and VmHWM in kB. 0 or -errno / BATON_ECORRUPT. */
int bench_proc_cpu_ticks(int pid, uint64_t *ticks);
/* A "<field>: N kB" line of /proc/<pid>/status (VmHWM, RssAnon, ...). */
int bench_proc_status_kb(int pid, const char *field, uint64_t *kb);

void bench_report_table(const struct bench_opts *o, const struct bench_result *r);
void bench_report_json(const struct bench_opts *o, const struct bench_result *r);

#endif
