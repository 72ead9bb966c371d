/*
 * batond's flag table and parser. One table drives parsing, ETCD_* environment variables and
 * the usage text, so a flag is described in exactly one place.
 */
#include "flags.h"
#include "base/base.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum flag_kind {
    F_STRING,   /* copied into a char array of `size` bytes */
    F_URLS,     /* comma-separated URL list */
    F_CLUSTER,  /* name=url,name=url */
    F_STATE,    /* new | existing */
    F_U32,      /* decimal, must fit */
    F_U64,      /* decimal, must fit */
    F_BOOL,     /* --flag, --flag=true|false */
    F_COMPMODE, /* periodic | revision */
    F_RETAIN,   /* auto-compaction retention: "0", "5", "1h", "30m", ... */
    F_IGNORED,  /* etcd flag baton accepts and does not act on; takes a value unless bool */
    F_IGNORED_BOOL,
};

struct flag_def {
    const char *name;
    enum flag_kind kind;
    size_t offset;
    size_t size;
    const char *defval; /* as etcd prints it; NULL: no default text */
    const char *help;
};

#define OFF(field) offsetof(struct batond_flags, field)
#define SZ(field)  sizeof(((struct batond_flags *)0)->field)

static const struct flag_def flag_defs[] = {
    {"name", F_STRING, OFF(name), SZ(name), "default", "Human-readable name for this member."},
    {"data-dir", F_STRING, OFF(data_dir), SZ(data_dir), "${name}.baton",
     "Path to the data directory."},
    {"listen-client-urls", F_URLS, OFF(listen_client), 0, "http://127.0.0.1:2379",
     "URLs to listen on for client traffic."},
    {"advertise-client-urls", F_URLS, OFF(advertise_client), 0, "http://127.0.0.1:2379",
     "Client URLs to advertise to the rest of the cluster."},
    {"listen-peer-urls", F_URLS, OFF(listen_peer), 0, "http://127.0.0.1:2380",
     "URLs to listen on for peer traffic."},
    {"initial-advertise-peer-urls", F_URLS, OFF(advertise_peer), 0, "http://127.0.0.1:2380",
     "This member's peer URLs to advertise to the rest of the cluster."},
    {"listen-metrics-urls", F_URLS, OFF(listen_metrics), 0, "http://127.0.0.1:2381",
     "URLs for the admin HTTP endpoints (/metrics, /health, /readyz)."},
    {"initial-cluster", F_CLUSTER, 0, 0, "default=http://127.0.0.1:2380",
     "Initial cluster configuration for bootstrapping (name=peer-url,...)."},
    {"initial-cluster-state", F_STATE, 0, 0, "new", "Initial cluster state: new or existing."},
    {"initial-cluster-token", F_STRING, OFF(initial_cluster_token), SZ(initial_cluster_token),
     "etcd-cluster", "Initial cluster token for bootstrapping."},
    {"heartbeat-interval", F_U32, OFF(heartbeat_interval_ms), 0, "100",
     "Time (in milliseconds) of a heartbeat interval."},
    {"election-timeout", F_U32, OFF(election_timeout_ms), 0, "1000",
     "Time (in milliseconds) for an election to timeout."},
    {"snapshot-count", F_U64, OFF(snapshot_count), 0, "100000",
     "Number of committed entries that trigger a snapshot."},
    {"quota-backend-bytes", F_U64, OFF(quota_backend_bytes), 0, "0",
     "Raise the NOSPACE alarm past this size (0: 2 GiB)."},
    {"max-request-bytes", F_U64, OFF(max_request_bytes), 0, "1572864",
     "Maximum client request size in bytes."},
    {"max-txn-ops", F_U32, OFF(max_txn_ops), 0, "128",
     "Maximum number of operations in a transaction."},
    {"watch-progress-notify-interval-ms", F_U32, OFF(watch_progress_ms), 0, "600000",
     "Interval of progress notifications to watchers that asked for them."},
    {"node-lease-ttl-ms", F_U32, OFF(node_lease_ttl_ms), 0, "10000",
     "Lease TTL of a registered database node (rounded up to whole seconds)."},
    {"node-heartbeat-interval-ms", F_U32, OFF(node_heartbeat_ms), 0, "1000",
     "Heartbeat interval registered database nodes are told to keep."},
    {"auto-compaction-mode", F_COMPMODE, 0, 0, "periodic",
     "Interpret auto-compaction-retention as: periodic | revision."},
    {"auto-compaction-retention", F_RETAIN, 0, 0, "0",
     "Auto compaction retention (hours if no unit, or e.g. 30m; revisions in revision mode)."},
    {"restore", F_STRING, OFF(restore_path), SZ(restore_path), NULL,
     "Build --data-dir from this snapshot file (Maintenance/Snapshot or batonctl), then serve."},
    {"log-level", F_STRING, OFF(log_level), SZ(log_level), "info", "debug, info, warn or error."},
    {"help", F_BOOL, OFF(help), 0, NULL, "Show this help."},
    {"version", F_BOOL, OFF(version), 0, NULL, "Print the version and exit."},
    /* etcd flags that scripts pass and baton does not need (it always runs pre-vote and
     * check-quorum, logs in one format, and serves only v3). */
    {"logger", F_IGNORED, 0, 0, NULL, NULL},
    {"log-outputs", F_IGNORED, 0, 0, NULL, NULL},
    {"wal-dir", F_IGNORED, 0, 0, NULL, NULL},
    {"max-snapshots", F_IGNORED, 0, 0, NULL, NULL},
    {"max-wals", F_IGNORED, 0, 0, NULL, NULL},
    {"pre-vote", F_IGNORED_BOOL, 0, 0, NULL, NULL},
    {"strict-reconfig-check", F_IGNORED_BOOL, 0, 0, NULL, NULL},
    {"initial-election-tick-advance", F_IGNORED_BOOL, 0, 0, NULL, NULL},
    {"enable-v2", F_IGNORED_BOOL, 0, 0, NULL, NULL},
    {"enable-pprof", F_IGNORED_BOOL, 0, 0, NULL, NULL},
    {"metrics", F_IGNORED, 0, 0, NULL, NULL},
    {"backend-batch-interval", F_IGNORED, 0, 0, NULL, NULL},
    {"backend-batch-limit", F_IGNORED, 0, 0, NULL, NULL},
    {"max-concurrent-streams", F_IGNORED, 0, 0, NULL, NULL},
    {"grpc-keepalive-min-time", F_IGNORED, 0, 0, NULL, NULL},
    {"grpc-keepalive-interval", F_IGNORED, 0, 0, NULL, NULL},
    {"grpc-keepalive-timeout", F_IGNORED, 0, 0, NULL, NULL},
};

#define ERR(...) (snprintf(err, err_len, __VA_ARGS__), BATON_EINVAL)

int flags_parse_url(const char *s, size_t len, struct flags_url *u)
{
    memset(u, 0, sizeof(*u));
    const char *end = s + len;
    if (len > 7 && strncmp(s, "http://", 7) == 0) {
        s += 7;
    } else if (len > 8 && strncmp(s, "https://", 8) == 0) {
        u->tls = true;
        s += 8;
    } else {
        return BATON_EINVAL;
    }
    const char *host = s, *host_end;
    if (*s == '[') {
        host = s + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (!host_end || host_end + 1 >= end || host_end[1] != ':')
            return BATON_EINVAL;
        s = host_end + 2;
    } else {
        host_end = memchr(s, ':', (size_t)(end - s));
        if (!host_end)
            return BATON_EINVAL;
        s = host_end + 1;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen >= sizeof(u->host))
        return BATON_EINVAL;
    memcpy(u->host, host, hlen);
    /* A trailing '/' is allowed, nothing else after the port. */
    if (end > s && end[-1] == '/')
        end--;
    if (s == end || end - s > 5)
        return BATON_EINVAL;
    unsigned port = 0;
    for (; s < end; s++) {
        if (!isdigit((unsigned char)*s))
            return BATON_EINVAL;
        port = port * 10 + (unsigned)(*s - '0');
    }
    if (port == 0 || port > 65535)
        return BATON_EINVAL;
    u->port = (uint16_t)port;
    return 0;
}

static int parse_urls(const char *flag, const char *v, struct flags_url_list *l, char *err,
                      size_t err_len)
{
    l->len = 0;
    while (*v) {
        const char *comma = strchr(v, ',');
        size_t n = comma ? (size_t)(comma - v) : strlen(v);
        if (l->len == FLAGS_URLS_MAX)
            return ERR("--%s: more than %d URLs", flag, FLAGS_URLS_MAX);
        if (flags_parse_url(v, n, &l->urls[l->len]) != 0)
            return ERR("--%s: invalid URL \"%.*s\" (want http://host:port or https://host:port)",
                       flag, (int)n, v);
        l->len++;
        v += n + (comma ? 1 : 0);
    }
    if (l->len == 0)
        return ERR("--%s: empty URL list", flag);
    return 0;
}

static int parse_cluster(const char *v, struct batond_flags *f, char *err, size_t err_len)
{
    f->initial_cluster_len = 0;
    while (*v) {
        const char *comma = strchr(v, ',');
        size_t n = comma ? (size_t)(comma - v) : strlen(v);
        const char *eq = memchr(v, '=', n);
        if (!eq || eq == v)
            return ERR("--initial-cluster: \"%.*s\" is not name=peer-url", (int)n, v);
        if (f->initial_cluster_len == FLAGS_MEMBERS_MAX)
            return ERR("--initial-cluster: more than %d entries", FLAGS_MEMBERS_MAX);
        struct flags_member *m = &f->initial_cluster[f->initial_cluster_len];
        size_t name_len = (size_t)(eq - v);
        if (name_len >= sizeof(m->name))
            return ERR("--initial-cluster: member name too long");
        memcpy(m->name, v, name_len);
        m->name[name_len] = 0;
        if (flags_parse_url(eq + 1, n - name_len - 1, &m->peer) != 0)
            return ERR("--initial-cluster: invalid peer URL \"%.*s\" for %s",
                       (int)(n - name_len - 1), eq + 1, m->name);
        f->initial_cluster_len++;
        v += n + (comma ? 1 : 0);
    }
    if (f->initial_cluster_len == 0)
        return ERR("--initial-cluster: empty");
    return 0;
}

static int parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    if (!*v || !isdigit((unsigned char)*v))
        return BATON_EINVAL;
    errno = 0;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || x > max)
        return BATON_EINVAL;
    *out = x;
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    if (!v || strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        return *out = true, 0;
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        return *out = false, 0;
    return BATON_EINVAL;
}

/* etcd's retention: a bare number means hours in periodic mode, revisions in revision mode;
 * otherwise a Go-style duration with one unit (h, m, s). Stored as ms or revisions. */
static int parse_retention(const char *v, bool periodic, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*v))
        return BATON_EINVAL;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno)
        return BATON_EINVAL;
    uint64_t unit_ms;
    if (*end == 0)
        unit_ms = periodic ? 3600000 : 1;
    else if (!periodic)
        return BATON_EINVAL;
    else if (strcmp(end, "h") == 0)
        unit_ms = 3600000;
    else if (strcmp(end, "m") == 0)
        unit_ms = 60000;
    else if (strcmp(end, "s") == 0)
        unit_ms = 1000;
    else
        return BATON_EINVAL;
    if (x > UINT64_MAX / unit_ms)
        return BATON_EINVAL;
    *out = x * unit_ms;
    return 0;
}

static const struct flag_def *flag_find(const char *name, size_t len)
{
    for (size_t i = 0; i < BATON_ARRAY_LEN(flag_defs); i++)
        if (strlen(flag_defs[i].name) == len && strncmp(flag_defs[i].name, name, len) == 0)
            return &flag_defs[i];
    return NULL;
}

static bool takes_value(const struct flag_def *d)
{
    return d->kind != F_BOOL && d->kind != F_IGNORED_BOOL;
}

/* Retention depends on the mode, which may come later on the command line: keep the text and
 * convert once all flags are read. */
struct parse_state {
    const char *retention;
    bool seen[BATON_ARRAY_LEN(flag_defs)];
};

static int flag_set(struct batond_flags *f, struct parse_state *ps, const struct flag_def *d,
                    const char *v, char *err, size_t err_len)
{
    char *base = (char *)f;
    uint64_t x;
    switch (d->kind) {
    case F_STRING:
        if (strlen(v) >= d->size)
            return ERR("--%s: value too long (at most %zu bytes)", d->name, d->size - 1);
        if (!*v && strcmp(d->name, "restore") != 0)
            return ERR("--%s: empty value", d->name);
        strcpy(base + d->offset, v);
        return 0;
    case F_URLS:
        return parse_urls(d->name, v, (struct flags_url_list *)(base + d->offset), err, err_len);
    case F_CLUSTER:
        return parse_cluster(v, f, err, err_len);
    case F_STATE:
        if (strcmp(v, "new") == 0)
            f->initial_cluster_existing = false;
        else if (strcmp(v, "existing") == 0)
            f->initial_cluster_existing = true;
        else
            return ERR("--initial-cluster-state: \"%s\" is neither new nor existing", v);
        return 0;
    case F_U32:
        if (parse_u64(v, UINT32_MAX, &x) != 0)
            return ERR("--%s: \"%s\" is not a number from 0 to %u", d->name, v, UINT32_MAX);
        *(uint32_t *)(base + d->offset) = (uint32_t)x;
        return 0;
    case F_U64:
        if (parse_u64(v, UINT64_MAX, &x) != 0)
            return ERR("--%s: \"%s\" is not a non-negative number", d->name, v);
        *(uint64_t *)(base + d->offset) = x;
        return 0;
    case F_BOOL:
        if (parse_bool(v, (bool *)(base + d->offset)) != 0)
            return ERR("--%s: \"%s\" is neither true nor false", d->name, v);
        return 0;
    case F_COMPMODE:
        if (strcmp(v, "periodic") == 0)
            f->auto_compaction_mode = FLAGS_COMPACT_PERIODIC;
        else if (strcmp(v, "revision") == 0)
            f->auto_compaction_mode = FLAGS_COMPACT_REVISION;
        else
            return ERR("--auto-compaction-mode: \"%s\" is neither periodic nor revision", v);
        return 0;
    case F_RETAIN:
        ps->retention = v;
        return 0;
    case F_IGNORED:
    case F_IGNORED_BOOL:
        if (f->ignored_len < FLAGS_IGNORED_MAX)
            f->ignored[f->ignored_len++] = d->name;
        return 0;
    }
    BATON_UNREACHABLE();
}

static void flags_defaults(struct batond_flags *f)
{
    memset(f, 0, sizeof(*f));
    strcpy(f->name, "default");
    strcpy(f->initial_cluster_token, "etcd-cluster");
    strcpy(f->log_level, "info");
    f->heartbeat_interval_ms = 100;
    f->election_timeout_ms = 1000;
    f->snapshot_count = 100000;
    f->max_request_bytes = 1572864;
    f->max_txn_ops = 128;
    f->watch_progress_ms = 600000;
    f->node_lease_ttl_ms = 10000;
    f->node_heartbeat_ms = 1000;
    char e[128];
    parse_urls("", "http://127.0.0.1:2379", &f->listen_client, e, sizeof(e));
    f->advertise_client = f->listen_client;
    parse_urls("", "http://127.0.0.1:2380", &f->listen_peer, e, sizeof(e));
    f->advertise_peer = f->listen_peer;
    parse_urls("", "http://127.0.0.1:2381", &f->listen_metrics, e, sizeof(e));
}

/* Final checks that involve several flags, and defaults derived from others. */
static int flags_finish(struct batond_flags *f, struct parse_state *ps, char *err, size_t err_len)
{
    if (ps->retention &&
        parse_retention(ps->retention, f->auto_compaction_mode == FLAGS_COMPACT_PERIODIC,
                        &f->auto_compaction_retention) != 0)
        return ERR("--auto-compaction-retention: invalid value \"%s\" for mode %s", ps->retention,
                   f->auto_compaction_mode == FLAGS_COMPACT_PERIODIC ? "periodic" : "revision");
    if (!f->data_dir[0]) {
        int n = snprintf(f->data_dir, sizeof(f->data_dir), "%s.baton", f->name);
        if (n < 0 || (size_t)n >= sizeof(f->data_dir))
            return ERR("--name: too long to derive --data-dir");
    }
    if (f->heartbeat_interval_ms == 0)
        return ERR("--heartbeat-interval: must be at least 1 ms");
    if (f->election_timeout_ms < 5 * f->heartbeat_interval_ms)
        return ERR("--election-timeout (%u ms) must be at least 5 times --heartbeat-interval "
                   "(%u ms)",
                   f->election_timeout_ms, f->heartbeat_interval_ms);
    if (f->election_timeout_ms > 50000)
        return ERR("--election-timeout: %u ms is longer than the maximum of 50000 ms",
                   f->election_timeout_ms);
    if (f->node_heartbeat_ms == 0 || f->node_lease_ttl_ms < 2 * f->node_heartbeat_ms)
        return ERR("--node-lease-ttl-ms (%u) must be at least twice --node-heartbeat-interval-ms "
                   "(%u), which must be at least 1",
                   f->node_lease_ttl_ms, f->node_heartbeat_ms);
    if (f->max_request_bytes == 0 || f->max_request_bytes > (64u << 20))
        return ERR("--max-request-bytes: must be between 1 and %u", 64u << 20);
    if (!ps->seen[flag_find("initial-cluster", 15) - flag_defs]) {
        /* etcd's default is "<name>=<first advertised peer URL>". */
        struct flags_member *m = &f->initial_cluster[0];
        snprintf(m->name, sizeof(m->name), "%s", f->name);
        m->peer = f->advertise_peer.urls[0];
        f->initial_cluster_len = 1;
    }
    bool self_found = false;
    for (int i = 0; i < f->initial_cluster_len; i++)
        self_found |= strcmp(f->initial_cluster[i].name, f->name) == 0;
    if (!self_found && !f->restore_path[0])
        return ERR("--initial-cluster has no entry for this member's --name \"%s\"", f->name);
    return 0;
}

static int parse_env(struct batond_flags *f, struct parse_state *ps, char **env, char *err,
                     size_t err_len)
{
    for (char **e = env; e && *e; e++) {
        if (strncmp(*e, "ETCD_", 5) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char name[64];
        size_t n = (size_t)(eq - *e) - 5;
        if (n >= sizeof(name))
            continue;
        for (size_t i = 0; i < n; i++)
            name[i] = (*e)[5 + i] == '_' ? '-' : (char)tolower((unsigned char)(*e)[5 + i]);
        name[n] = 0;
        const struct flag_def *d = flag_find(name, n);
        if (!d || ps->seen[d - flag_defs])
            continue; /* a flag on the command line wins over the environment */
        int rc = flag_set(f, ps, d, eq + 1, err, err_len);
        if (rc)
            return rc;
    }
    return 0;
}

int flags_parse(struct batond_flags *f, int argc, char **argv, char **env, char *err,
                size_t err_len)
{
    struct parse_state ps = {0};
    flags_defaults(f);
    err[0] = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == 0)
            return ERR("unexpected argument \"%s\" (flags start with --)", a);
        a += (a[1] == '-') ? 2 : 1;
        if (strcmp(a, "h") == 0)
            a = "help";
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        const struct flag_def *d = flag_find(a, n);
        if (!d)
            return ERR("unknown flag --%.*s (see batond --help)", (int)n, a);
        const char *v = eq ? eq + 1 : NULL;
        if (!v && takes_value(d)) {
            if (i + 1 >= argc)
                return ERR("--%s needs a value", d->name);
            v = argv[++i];
        }
        if (!v)
            v = "true";
        int rc = flag_set(f, &ps, d, v, err, err_len);
        if (rc)
            return rc;
        ps.seen[d - flag_defs] = true;
    }
    int rc = parse_env(f, &ps, env, err, err_len);
    if (rc)
        return rc;
    if (f->help || f->version)
        return 0;
    return flags_finish(f, &ps, err, err_len);
}

void flags_usage(void *file)
{
    FILE *out = file;
    fprintf(out, "usage: batond [flags]\n\n"
                 "Starts one member of a baton control plane. With no flags: a single-member\n"
                 "cluster with data in ./default.baton, clients on 127.0.0.1:2379, peers on\n"
                 "127.0.0.1:2380, admin HTTP on 127.0.0.1:2381. Flags follow etcd's names;\n"
                 "ETCD_<FLAG> environment variables apply when a flag is not given.\n\n");
    for (size_t i = 0; i < BATON_ARRAY_LEN(flag_defs); i++) {
        const struct flag_def *d = &flag_defs[i];
        if (!d->help)
            continue;
        if (d->defval)
            fprintf(out, "  --%s '%s'\n      %s\n", d->name, d->defval, d->help);
        else
            fprintf(out, "  --%s\n      %s\n", d->name, d->help);
    }
    fprintf(out, "\nAccepted for compatibility with etcd and ignored:");
    for (size_t i = 0; i < BATON_ARRAY_LEN(flag_defs); i++)
        if (!flag_defs[i].help)
            fprintf(out, " --%s", flag_defs[i].name);
    fprintf(out, "\n");
}
