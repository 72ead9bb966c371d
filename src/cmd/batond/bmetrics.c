/*
 * batond's metric families. Gauges computed at render time read one server_status and one
 * rpc_server_stats taken when the render starts (one file-size look-up per scrape, not one per
 * gauge). Per-method gRPC series are created the first time a method is called or ends with a
 * given code, and cached by the method's registration index, so recording a call is an array
 * index and an add.
 */
#include "bmetrics.h"

#include "rpc/services.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char *const code_labels[BMETRICS_CODES] = {
    "OK",       "Canceled",        "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",   "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",      "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated",
};

const char *bmetrics_code_label(int code)
{
    return code >= 0 && code < BMETRICS_CODES ? code_labels[code] : "Unknown";
}

/* ---- Gauges and counters read at render time -------------------------------------------- */

#define ST(fn, expr)                                                                               \
    static double fn(void *ctx)                                                                    \
    {                                                                                              \
        const struct bmetrics *bm = ctx;                                                           \
        return (double)(expr);                                                                     \
    }
ST(g_has_leader, bm->st.leader != 0)
ST(g_is_leader, bm->st.is_leader)
ST(g_is_learner, bm->st.is_learner)
ST(g_term, bm->st.term)
ST(g_index, bm->st.raft_index)
ST(g_commit, bm->st.commit)
ST(g_applied, bm->st.applied)
ST(g_leader_changes, bm->st.leader_changes)
ST(g_proposals_failed, bm->st.proposals_failed)
ST(g_proposals_pending, bm->st.proposals_pending)
ST(g_db_size, bm->st.db_size)
ST(g_db_in_use, bm->st.db_size_in_use)
ST(g_revision, bm->st.revision)
ST(g_leases, bm->st.leases)
ST(g_quota, bm->quota_bytes)
ST(g_conns, bm->rpc_st.conns)
ST(g_conns_total, bm->rpc_st.conns_total)
ST(g_bytes_in, bm->rpc_st.bytes_received)
ST(g_bytes_out, bm->rpc_st.bytes_sent)
ST(g_out_buffered, bm->rpc_st.out_buffered)
ST(g_out_refused, bm->rpc_st.out_refused)

/* Client watchers, as etcd counts them: not the services' own (the node table's). */
static double g_watchers(void *ctx)
{
    struct bmetrics *bm = ctx;
    if (!bm->srv)
        return 0;
    size_t n = mvcc_watch_count(server_store(bm->srv));
    size_t own = bm->svc ? services_internal_watchers(bm->svc) : 0;
    return (double)(n >= own ? n - own : 0);
}

static double g_slow_watchers(void *ctx)
{
    const struct bmetrics *bm = ctx;
    return bm->srv ? (double)mvcc_watch_unsynced_count(server_store(bm->srv)) : 0;
}

/* Resident set size from /proc/self/statm (pages); 0 when it cannot be read. */
static double g_rss(void *ctx)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f)
        return 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) : 0;
}

static double g_cpu(void *ctx)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct family {
    const char *name, *help;
    bool counter;
    metrics_gauge_fn fn;
};

static const struct family families[] = {
    {"etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", false,
     g_has_leader},
    {"etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.",
     false, g_is_leader},
    {"etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.",
     false, g_is_learner},
    {"etcd_server_leader_changes_seen_total", "The number of leader changes seen.", true,
     g_leader_changes},
    {"baton_raft_term", "The current Raft term.", false, g_term},
    {"baton_raft_index", "The last index in this member's Raft log.", false, g_index},
    {"etcd_server_proposals_committed_total", "The total number of consensus proposals committed.",
     false, g_commit},
    {"etcd_server_proposals_applied_total", "The total number of consensus proposals applied.",
     false, g_applied},
    {"etcd_server_proposals_pending", "The current number of pending proposals to commit.", false,
     g_proposals_pending},
    {"etcd_server_proposals_failed_total", "The total number of failed proposals seen.", true,
     g_proposals_failed},
    {"etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.", false,
     g_quota},
    {"etcd_mvcc_db_total_size_in_bytes",
     "Total size of the underlying database physically allocated in bytes.", false, g_db_size},
    {"etcd_mvcc_db_total_size_in_use_in_bytes",
     "Total size of the underlying database logically in use in bytes.", false, g_db_in_use},
    {"etcd_debugging_mvcc_current_revision", "The current revision of store.", false, g_revision},
    {"etcd_debugging_mvcc_watcher_total", "Total number of watchers.", false, g_watchers},
    {"etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers.", false,
     g_slow_watchers},
    {"baton_leases", "Leases held now.", false, g_leases},
    {"baton_grpc_connections", "Client connections open now.", false, g_conns},
    {"baton_grpc_connections_total", "Client connections accepted since start.", true,
     g_conns_total},
    {"etcd_network_client_grpc_received_bytes_total",
     "The total number of bytes received from grpc clients.", true, g_bytes_in},
    {"etcd_network_client_grpc_sent_bytes_total", "The total number of bytes sent to grpc clients.",
     true, g_bytes_out},
    {"baton_grpc_output_buffered_bytes",
     "Response bytes buffered for clients now, over all connections.", false, g_out_buffered},
    {"baton_grpc_output_refused_total",
     "Responses held back because an output bound was reached (sent once it drained).", true,
     g_out_refused},
    {"process_resident_memory_bytes", "Resident memory size in bytes.", false, g_rss},
    {"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", true, g_cpu},
};

/* etcd's buckets for both disk histograms: 1 ms doubling to 8.192 s. */
#define DISK_BUCKETS 14

int bmetrics_init(struct bmetrics *bm, uint64_t quota_bytes)
{
    memset(bm, 0, sizeof(*bm));
    bm->quota_bytes = quota_bytes;
    int rc = metrics_create(&bm->m);
    if (rc)
        return rc;
    for (size_t i = 0; i < BATON_ARRAY_LEN(families); i++) {
        const struct family *f = &families[i];
        struct metrics_series *s =
            f->counter ? metrics_counter_func(bm->m, f->name, f->help, "", f->fn, bm)
                       : metrics_gauge_func(bm->m, f->name, f->help, "", f->fn, bm);
        if (!s)
            return BATON_ENOMEM;
    }
    double b[DISK_BUCKETS];
    metrics_exp_buckets(b, DISK_BUCKETS, 0.001, 2);
    bm->wal_fsync =
        metrics_histogram(bm->m, "etcd_disk_wal_fsync_duration_seconds",
                          "The latency distributions of fsync called by WAL.", "", b, DISK_BUCKETS);
    bm->backend_commit = metrics_histogram(bm->m, "etcd_disk_backend_commit_duration_seconds",
                                           "The latency distributions of commit called by backend.",
                                           "", b, DISK_BUCKETS);
    if (!bm->wal_fsync || !bm->backend_commit)
        return BATON_ENOMEM;
    /* Declared now so the families appear (without series) before the first call. */
    if (!metrics_counter(bm->m, "grpc_server_started_total",
                         "Total number of RPCs started on the server.",
                         "grpc_type=\"unary\","
                         "grpc_service=\"etcdserverpb.KV\",grpc_method=\"Range\"") ||
        !metrics_counter(bm->m, "grpc_server_handled_total",
                         "Total number of RPCs completed on the server, regardless of success or "
                         "failure.",
                         "grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\","
                         "grpc_method=\"Range\",grpc_code=\"OK\""))
        return BATON_ENOMEM;
    return 0;
}

void bmetrics_set_member(struct bmetrics *bm, uint64_t member_id)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "server_id=\"%llx\"", (unsigned long long)member_id);
    metrics_set(metrics_gauge(bm->m, "etcd_server_id",
                              "Server or member ID in hexadecimal format. 1 for 'server_id' label "
                              "with current ID.",
                              labels),
                1);
}

void bmetrics_free(struct bmetrics *bm)
{
    metrics_free(bm->m);
    bm->m = NULL;
}

/* ---- Observers ------------------------------------------------------------------------------ */

static void on_timing(void *ctx, enum server_timing what, uint64_t ns)
{
    struct bmetrics *bm = ctx;
    double s = (double)ns / 1e9;
    metrics_observe(what == SERVER_TIMING_WAL_FSYNC ? bm->wal_fsync : bm->backend_commit, s);
}

struct server_observer bmetrics_server_observer(struct bmetrics *bm)
{
    return (struct server_observer){on_timing, bm};
}

static const char *kind_label(enum rpc_kind k)
{
    switch (k) {
    case RPC_UNARY:
        return "unary";
    case RPC_SERVER_STREAMING:
        return "server_stream";
    case RPC_CLIENT_STREAMING:
        return "client_stream";
    case RPC_BIDI_STREAMING:
        return "bidi_stream";
    }
    return "unary";
}

/* grpc_type, grpc_service and grpc_method labels from "/pkg.Service/Method". */
static void method_labels(const struct rpc_method *m, char *out, size_t len)
{
    const char *path = m->path + 1, *slash = strrchr(path, '/');
    int svc_len = slash ? (int)(slash - path) : 0;
    snprintf(out, len, "grpc_type=\"%s\",grpc_service=\"%.*s\",grpc_method=\"%s\"",
             kind_label(m->kind), svc_len, path, slash ? slash + 1 : path);
}

static void on_call_start(void *ctx, size_t method, const struct rpc_method *m)
{
    struct bmetrics *bm = ctx;
    if (method >= BMETRICS_METHODS_MAX)
        return;
    struct bmetrics_method *bmm = &bm->methods[method];
    if (!bmm->started) {
        char labels[512];
        method_labels(m, labels, sizeof(labels));
        bmm->started = metrics_counter(bm->m, "grpc_server_started_total", "", labels);
    }
    metrics_add(bmm->started, 1);
}

static void on_call_end(void *ctx, size_t method, const struct rpc_method *m, int code)
{
    struct bmetrics *bm = ctx;
    if (method >= BMETRICS_METHODS_MAX)
        return;
    if (code < 0 || code >= BMETRICS_CODES)
        code = GRPC_UNKNOWN;
    struct metrics_series **s = &bm->methods[method].handled[code];
    if (!*s) {
        char labels[600], ml[512];
        method_labels(m, ml, sizeof(ml));
        snprintf(labels, sizeof(labels), "%s,grpc_code=\"%s\"", ml, code_labels[code]);
        *s = metrics_counter(bm->m, "grpc_server_handled_total", "", labels);
    }
    metrics_add(*s, 1);
}

struct rpc_call_observer bmetrics_rpc_observer(struct bmetrics *bm)
{
    return (struct rpc_call_observer){on_call_start, on_call_end, bm};
}

/* ---- Render -----------------------------------------------------------------------------------
 */

int bmetrics_render(struct bmetrics *bm, struct buf *out)
{
    if (bm->srv)
        server_status(bm->srv, &bm->st);
    if (bm->rpc)
        rpc_server_stats(bm->rpc, &bm->rpc_st);
    return metrics_render(bm->m, out);
}
