/*
 * batonctl: the operator's CLI for a baton control plane, built on libbaton. Global flags
 * (--endpoints, --dial-timeout, --command-timeout, -w table|json) may appear anywhere; the
 * rest is a command and its arguments. Exit codes: 0 done, 1 the command failed (message on
 * stderr), 2 usage error (unknown command or flag: usage on stderr).
 */
#include "baton.h"
#include "out.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ARGS_MAX 64

struct ctl {
    char endpoints[1024];
    uint32_t dial_timeout_ms;
    uint32_t command_timeout_ms;
    bool json;
    /* Command-specific flags, gathered by the same parser. */
    const char *peer_urls;
    bool learner;
    int64_t expected_version;
    bool has_expected, force;
    const char *data_dir;
    const char *batond;
    long limit;
    const char *state;
    /* batond flags passed through by snapshot restore. */
    const char *passthrough[ARGS_MAX];
    int passthrough_len;
    const char *args[ARGS_MAX];
    int args_len;
    struct baton_client *c;
};

static const char usage_text[] =
    "usage: batonctl [flags] COMMAND [args]\n"
    "\n"
    "Commands:\n"
    "  status                          members, leader, raft term/index, db size, versions\n"
    "  member list\n"
    "  member add [NAME] --peer-urls URLS [--learner]\n"
    "  member remove ID                (hex, as member list prints it)\n"
    "  member promote ID\n"
    "  leader transfer ID\n"
    "  node list [--state STATE]\n"
    "  node show ID | node drain ID | node remove ID\n"
    "  config get\n"
    "  config set JSON [--expected-version N | --force]\n"
    "  config watch [--limit N]       print every change (N changes, then exit)\n"
    "  tso [COUNT]                     COUNT timestamps (default 1)\n"
    "  id [COUNT]                      COUNT ids (default 1)\n"
    "  snapshot save FILE\n"
    "  snapshot restore FILE --data-dir DIR [--batond PATH] [batond flags...]\n"
    "                                  runs batond --restore FILE --data-dir DIR ...\n"
    "\n"
    "Flags:\n"
    "  --endpoints LIST                comma-separated host:port (default 127.0.0.1:2379)\n"
    "  --dial-timeout DURATION         per endpoint connection (default 2s)\n"
    "  --command-timeout DURATION      per command, retries included (default 5s)\n"
    "  -w, --write-out table|json      output format (default table)\n"
    "  -h, --help\n";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs("batonctl: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputs("\n\n", stderr);
        va_end(ap);
    }
    fputs(usage_text, stderr);
    return 2;
}

/* The failure of the last libbaton call, with the server's message. */
static int fail(const char *what, int rc)
{
    const char *msg;
    baton_last_error(&msg);
    if (msg && msg[0])
        fprintf(stderr, "batonctl: %s: %s (%s)\n", what, msg, baton_errstr(rc));
    else
        fprintf(stderr, "batonctl: %s: %s\n", what, baton_errstr(rc));
    return 1;
}

static int error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("batonctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* "5s", "500ms", "1m", "2" (seconds). */
static bool parse_duration(const char *s, uint32_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return false;
    double mult = 1000;
    if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0 || *end == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else
        return false;
    double r = v * mult;
    if (r < 1 || r > 86400000.0)
        return false;
    *ms = (uint32_t)r;
    return true;
}

static bool parse_u64(const char *s, int base, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Member and node ids print in hex (etcdctl's habit); "0x" is optional. */
static bool parse_id(const char *s, uint64_t *id)
{
    if (s && (strncmp(s, "0x", 2) == 0 || strncmp(s, "0X", 2) == 0))
        s += 2;
    return parse_u64(s, 16, id) && *id != 0;
}

/* ---- flags -------------------------------------------------------------------------------- */

/* Value of --name=V or --name V; advances *i. NULL when the value is missing. */
static const char *flag_value(int argc, char **argv, int *i, const char *eq)
{
    if (eq)
        return eq + 1;
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

static int parse_args(struct ctl *x, int argc, char **argv)
{
    bool restore = false;
    for (int i = 1; i + 1 < argc; i++)
        restore |= strcmp(argv[i], "snapshot") == 0 && strcmp(argv[i + 1], "restore") == 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++)
                if (x->args_len < ARGS_MAX)
                    x->args[x->args_len++] = argv[i];
            break;
        }
        if (a[0] != '-' || a[1] == 0) {
            if (x->args_len == ARGS_MAX)
                return usage("too many arguments");
            x->args[x->args_len++] = a;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        }
        char name[64];
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof(name))
            return usage("unknown flag '%s'", a);
        memcpy(name, a, nl);
        name[nl] = 0;
        const char *v = NULL;
#define VALUE()                                                                                    \
    do {                                                                                           \
        v = flag_value(argc, argv, &i, eq);                                                        \
        if (!v)                                                                                    \
            return usage("flag %s needs a value", name);                                           \
    } while (0)
        if (strcmp(name, "--endpoints") == 0) {
            VALUE();
            if (strlen(v) >= sizeof(x->endpoints))
                return usage("--endpoints is too long");
            snprintf(x->endpoints, sizeof(x->endpoints), "%s", v);
        } else if (strcmp(name, "--dial-timeout") == 0) {
            VALUE();
            if (!parse_duration(v, &x->dial_timeout_ms))
                return usage("bad duration '%s' for --dial-timeout (e.g. 2s, 500ms)", v);
        } else if (strcmp(name, "--command-timeout") == 0) {
            VALUE();
            if (!parse_duration(v, &x->command_timeout_ms))
                return usage("bad duration '%s' for --command-timeout (e.g. 5s)", v);
        } else if (strcmp(name, "-w") == 0 || strcmp(name, "--write-out") == 0) {
            VALUE();
            if (strcmp(v, "json") == 0)
                x->json = true;
            else if (strcmp(v, "table") == 0)
                x->json = false;
            else
                return usage("unknown output format '%s' (table or json)", v);
        } else if (strcmp(name, "--peer-urls") == 0) {
            VALUE();
            x->peer_urls = v;
        } else if (strcmp(name, "--learner") == 0) {
            x->learner = true;
        } else if (strcmp(name, "--expected-version") == 0) {
            VALUE();
            uint64_t ev;
            if (!parse_u64(v, 10, &ev) || ev > INT64_MAX)
                return usage("bad --expected-version '%s'", v);
            x->expected_version = (int64_t)ev;
            x->has_expected = true;
        } else if (strcmp(name, "--force") == 0) {
            x->force = true;
        } else if (strcmp(name, "--data-dir") == 0) {
            VALUE();
            x->data_dir = v;
        } else if (strcmp(name, "--batond") == 0) {
            VALUE();
            x->batond = v;
        } else if (strcmp(name, "--limit") == 0) {
            VALUE();
            uint64_t l;
            if (!parse_u64(v, 10, &l) || l == 0 || l > 1000000)
                return usage("bad --limit '%s'", v);
            x->limit = (long)l;
        } else if (strcmp(name, "--state") == 0) {
            VALUE();
            x->state = v;
        } else if (restore && strncmp(a, "--", 2) == 0) {
            /* snapshot restore: batond's own flags (--name, --initial-cluster, ...). */
            if (x->passthrough_len + 2 > ARGS_MAX)
                return usage("too many flags");
            x->passthrough[x->passthrough_len++] = a;
            if (!eq && i + 1 < argc && argv[i + 1][0] != '-')
                x->passthrough[x->passthrough_len++] = argv[++i];
        } else {
            return usage("unknown flag '%s'", a);
        }
#undef VALUE
    }
    return 0;
}

static int connect_client(struct ctl *x)
{
    struct baton_options o;
    baton_options_default(&o);
    o.endpoints = x->endpoints;
    o.dial_timeout_ms = x->dial_timeout_ms;
    o.call_timeout_ms = x->command_timeout_ms;
    int rc = baton_open(&o, &x->c);
    if (rc == BATONE_INVAL) {
        const char *msg;
        baton_last_error(&msg);
        return usage("--endpoints: %s", msg);
    }
    if (rc)
        return fail("--endpoints", rc);
    return 0;
}

/* ---- status and members ------------------------------------------------------------------- */

static void fmt_size(char *out, size_t len, int64_t bytes)
{
    if (bytes >= 1 << 20)
        snprintf(out, len, "%.1f MB", (double)bytes / (1 << 20));
    else if (bytes >= 1 << 10)
        snprintf(out, len, "%.1f kB", (double)bytes / (1 << 10));
    else
        snprintf(out, len, "%" PRId64 " B", bytes);
}

/* The endpoints to ask for status: every member's first client URL, or the flag's list when
 * the member list is not available. */
static int status_targets(struct ctl *x, char (*eps)[128], int max)
{
    struct baton_member *ms;
    size_t n;
    int k = 0;
    if (baton_member_list(x->c, &ms, &n) == 0) {
        for (size_t i = 0; i < n && k < max; i++) {
            const char *u = ms[i].client_urls;
            if (!u[0])
                continue;
            const char *comma = strchr(u, ',');
            int l = comma ? (int)(comma - u) : (int)strlen(u);
            snprintf(eps[k++], 128, "%.*s", l, u);
        }
        baton_free(ms);
    }
    if (k == 0) {
        char copy[1024];
        snprintf(copy, sizeof(copy), "%s", x->endpoints);
        for (char *s = NULL, *t = strtok_r(copy, ",", &s); t && k < max;
             t = strtok_r(NULL, ",", &s))
            snprintf(eps[k++], 128, "%s", t);
    }
    return k;
}

struct status_row {
    char ep[128];
    struct baton_status st;
    int rc;
    char err[256];
};

static void status_json(const struct status_row *rows, int n, uint64_t leader, const char *cv,
                        const char *fin)
{
    struct json j = {.f = stdout};
    json_begin_object(&j, NULL);
    json_u64(&j, "leader", leader);
    json_str(&j, "cluster_version", cv);
    json_str(&j, "finalized_version", fin);
    json_begin_array(&j, "members");
    for (int i = 0; i < n; i++) {
        const struct baton_status *st = &rows[i].st;
        json_begin_object(&j, NULL);
        json_str(&j, "endpoint", rows[i].ep);
        if (rows[i].rc == 0) {
            json_u64(&j, "id", st->member_id);
            json_u64(&j, "cluster_id", st->cluster_id);
            json_str(&j, "version", st->version);
            json_i64(&j, "db_size", st->db_size);
            json_i64(&j, "db_size_in_use", st->db_size_in_use);
            json_bool(&j, "is_leader", st->leader && st->leader == st->member_id);
            json_bool(&j, "is_learner", st->learner);
            json_u64(&j, "raft_term", st->raft_term);
            json_u64(&j, "raft_index", st->raft_index);
            json_u64(&j, "raft_applied_index", st->raft_applied_index);
            json_i64(&j, "revision", st->revision);
            json_str(&j, "errors", st->errors);
        } else {
            json_str(&j, "error", rows[i].err);
        }
        json_end_object(&j);
    }
    json_end_array(&j);
    json_end_object(&j);
    json_done(&j);
}

static int status_table(const struct status_row *rows, int n, uint64_t leader, const char *cv,
                        const char *fin)
{
    static const char *const hdr[] = {"ENDPOINT",     "ID",         "VERSION",   "DB SIZE",
                                      "IS LEADER",    "IS LEARNER", "RAFT TERM", "RAFT INDEX",
                                      "RAFT APPLIED", "REVISION",   "ERRORS"};
    struct table t;
    if (table_init(&t, 11, hdr) != 0)
        return error("out of memory");
    for (int i = 0; i < n; i++) {
        const struct baton_status *st = &rows[i].st;
        char id[20] = "", sz[32] = "", term[24] = "", idx[24] = "", app[24] = "", rev[24] = "";
        const char *lead = "", *lrn = "", *e = rows[i].err, *ver = "";
        if (rows[i].rc == 0) {
            snprintf(id, sizeof(id), "%" PRIx64, st->member_id);
            fmt_size(sz, sizeof(sz), st->db_size);
            snprintf(term, sizeof(term), "%" PRIu64, st->raft_term);
            snprintf(idx, sizeof(idx), "%" PRIu64, st->raft_index);
            snprintf(app, sizeof(app), "%" PRIu64, st->raft_applied_index);
            snprintf(rev, sizeof(rev), "%" PRId64, st->revision);
            lead = st->leader && st->leader == st->member_id ? "true" : "false";
            lrn = st->learner ? "true" : "false";
            e = st->errors;
            ver = st->version;
        }
        const char *row[] = {rows[i].ep, id, ver, sz, lead, lrn, term, idx, app, rev, e};
        table_row(&t, row);
    }
    table_print(&t, stdout);
    table_free(&t);
    printf("leader: %" PRIx64 "\ncluster version: %s%s%s%s\n", leader,
           cv[0] ? cv : "(not published yet)", fin[0] ? " (finalized " : "", fin,
           fin[0] ? ")" : "");
    return 0;
}

static int cmd_status(struct ctl *x)
{
    char eps[16][128];
    int n = status_targets(x, eps, 16);
    static struct status_row rows[16];
    int ok = 0;
    uint64_t leader = 0;
    for (int i = 0; i < n; i++) {
        memcpy(rows[i].ep, eps[i], sizeof(rows[i].ep)); /* both 128 bytes, NUL-terminated */
        rows[i].rc = baton_endpoint_status(x->c, eps[i], &rows[i].st);
        if (rows[i].rc == 0) {
            ok++;
            if (rows[i].st.leader)
                leader = rows[i].st.leader;
        } else {
            const char *m;
            baton_last_error(&m);
            snprintf(rows[i].err, sizeof(rows[i].err), "%s", m);
        }
    }
    char cv[32] = "", fin[32] = "";
    int cvrc = baton_cluster_version(x->c, cv, fin);
    if (cvrc)
        snprintf(cv, sizeof(cv), "%s", cvrc == BATONE_UNSUPPORTED ? "unknown" : "unavailable");
    if (x->json)
        status_json(rows, n, leader, cv, fin);
    else if (status_table(rows, n, leader, cv, fin) != 0)
        return 1;
    if (ok == 0)
        return error("status: no endpoint answered");
    return ok == n ? 0 : 1;
}

static void print_members(struct ctl *x, const struct baton_member *ms, size_t n)
{
    if (x->json) {
        struct json j = {.f = stdout};
        json_begin_object(&j, NULL);
        json_begin_array(&j, "members");
        for (size_t i = 0; i < n; i++) {
            json_begin_object(&j, NULL);
            json_u64(&j, "id", ms[i].id);
            json_str(&j, "name", ms[i].name);
            json_str(&j, "peer_urls", ms[i].peer_urls);
            json_str(&j, "client_urls", ms[i].client_urls);
            json_bool(&j, "is_learner", ms[i].learner);
            json_end_object(&j);
        }
        json_end_array(&j);
        json_end_object(&j);
        json_done(&j);
        return;
    }
    static const char *const hdr[] = {"ID",         "STATUS",       "NAME",
                                      "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"};
    struct table t;
    if (table_init(&t, 6, hdr) != 0)
        return;
    for (size_t i = 0; i < n; i++) {
        char id[20];
        snprintf(id, sizeof(id), "%" PRIx64, ms[i].id);
        const char *row[] = {id,
                             ms[i].name[0] ? "started" : "unstarted",
                             ms[i].name,
                             ms[i].peer_urls,
                             ms[i].client_urls,
                             ms[i].learner ? "true" : "false"};
        table_row(&t, row);
    }
    table_print(&t, stdout);
    table_free(&t);
}

static int cmd_member(struct ctl *x)
{
    const char *sub = x->args_len > 1 ? x->args[1] : NULL;
    if (!sub)
        return usage("member: list, add, remove or promote");
    if (strcmp(sub, "list") == 0) {
        if (x->args_len != 2)
            return usage("member list takes no arguments");
        struct baton_member *ms;
        size_t n;
        int rc = baton_member_list(x->c, &ms, &n);
        if (rc)
            return fail("member list", rc);
        print_members(x, ms, n);
        baton_free(ms);
        return 0;
    }
    if (strcmp(sub, "add") == 0) {
        if (!x->peer_urls || x->args_len > 3)
            return usage("member add [NAME] --peer-urls URLS [--learner]");
        struct baton_member m;
        int rc = baton_member_add(x->c, x->peer_urls, x->learner, &m);
        if (rc)
            return fail("member add", rc);
        if (x->json) {
            struct json j = {.f = stdout};
            json_begin_object(&j, NULL);
            json_u64(&j, "id", m.id);
            json_str(&j, "peer_urls", m.peer_urls);
            json_bool(&j, "is_learner", m.learner);
            json_end_object(&j);
            json_done(&j);
        } else {
            printf("Member %" PRIx64 " added%s%s (peer URLs %s%s)\n", m.id,
                   x->args_len == 3 ? " as " : "", x->args_len == 3 ? x->args[2] : "", m.peer_urls,
                   m.learner ? ", learner" : "");
        }
        return 0;
    }
    bool rm = strcmp(sub, "remove") == 0, pr = strcmp(sub, "promote") == 0;
    if (!rm && !pr)
        return usage("unknown member command '%s'", sub);
    uint64_t id;
    if (x->args_len != 3 || !parse_id(x->args[2], &id))
        return usage("member %s ID (hex)", sub);
    int rc = rm ? baton_member_remove(x->c, id) : baton_member_promote(x->c, id);
    if (rc)
        return fail(rm ? "member remove" : "member promote", rc);
    if (x->json)
        printf("{\"id\":%" PRIu64 ",\"%s\":true}\n", id, rm ? "removed" : "promoted");
    else
        printf("Member %" PRIx64 " %s\n", id, rm ? "removed" : "promoted");
    return 0;
}

static int cmd_leader(struct ctl *x)
{
    uint64_t id;
    if (x->args_len != 3 || strcmp(x->args[1], "transfer") != 0 || !parse_id(x->args[2], &id))
        return usage("leader transfer ID (hex)");
    int rc = baton_leader_transfer(x->c, id);
    if (rc)
        return fail("leader transfer", rc);
    if (x->json)
        printf("{\"leader\":%" PRIu64 "}\n", id);
    else
        printf("Leadership transferred to %" PRIx64 "\n", id);
    return 0;
}

/* ---- nodes -------------------------------------------------------------------------------- */

static void labels_text(const struct baton_node *n, char *out, size_t len)
{
    size_t off = 0;
    out[0] = 0;
    for (size_t i = 0; i < n->labels_len && off < len; i++) {
        int w = snprintf(out + off, len - off, "%s%s=%s", i ? "," : "", n->labels[i].key,
                         n->labels[i].value);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

static void node_json(struct json *j, const struct baton_node *n)
{
    json_begin_object(j, NULL);
    json_u64(j, "id", n->id);
    json_str(j, "address", n->address);
    json_begin_object(j, "labels");
    for (size_t i = 0; i < n->labels_len; i++)
        json_str(j, n->labels[i].key, n->labels[i].value);
    json_end_object(j);
    json_u64(j, "capacity_bytes", n->capacity_bytes);
    json_str(j, "version", n->version);
    json_str(j, "state", baton_node_state_name(n->state));
    json_u64(j, "epoch", n->epoch);
    json_i64(j, "lease", n->lease);
    json_i64(j, "registered_unix_ms", n->registered_unix_ms);
    json_i64(j, "state_changed_unix_ms", n->state_changed_unix_ms);
    json_begin_object(j, "stats");
    json_u64(j, "used_bytes", n->stats.used_bytes);
    json_u64(j, "available_bytes", n->stats.available_bytes);
    json_u64(j, "shard_count", n->stats.shard_count);
    json_u64(j, "leader_count", n->stats.leader_count);
    json_double(j, "cpu_usage", n->stats.cpu_usage);
    json_end_object(j);
    json_end_object(j);
}

static int print_nodes(struct ctl *x, const struct baton_node *ns, size_t n)
{
    if (x->json) {
        struct json j = {.f = stdout};
        json_begin_object(&j, NULL);
        json_begin_array(&j, "nodes");
        for (size_t i = 0; i < n; i++)
            node_json(&j, &ns[i]);
        json_end_array(&j);
        json_end_object(&j);
        json_done(&j);
        return 0;
    }
    static const char *const hdr[] = {"ID",      "ADDRESS",  "STATE", "EPOCH",
                                      "VERSION", "CAPACITY", "USED",  "LABELS"};
    struct table t;
    if (table_init(&t, 8, hdr) != 0)
        return error("out of memory");
    for (size_t i = 0; i < n; i++) {
        char id[20], ep[24], cap[32], used[32], lb[256];
        snprintf(id, sizeof(id), "%016" PRIx64, ns[i].id);
        snprintf(ep, sizeof(ep), "%" PRIu64, ns[i].epoch);
        fmt_size(cap, sizeof(cap), (int64_t)ns[i].capacity_bytes);
        fmt_size(used, sizeof(used), (int64_t)ns[i].stats.used_bytes);
        labels_text(&ns[i], lb, sizeof(lb));
        const char *row[] = {
            id, ns[i].address, baton_node_state_name(ns[i].state), ep, ns[i].version, cap, used,
            lb};
        table_row(&t, row);
    }
    table_print(&t, stdout);
    table_free(&t);
    return 0;
}

static int parse_state(const char *s, enum baton_node_state *out)
{
    for (int i = 0; i <= BATON_NODE_DECOMMISSIONED; i++) {
        if (strcmp(s, baton_node_state_name((enum baton_node_state)i)) == 0) {
            *out = (enum baton_node_state)i;
            return 0;
        }
    }
    return -1;
}

static int cmd_node(struct ctl *x)
{
    const char *sub = x->args_len > 1 ? x->args[1] : NULL;
    if (!sub)
        return usage("node: list, show, drain or remove");
    if (strcmp(sub, "list") == 0) {
        enum baton_node_state st = BATON_NODE_UNKNOWN;
        if (x->args_len != 2 || (x->state && parse_state(x->state, &st) != 0))
            return usage("node list [--state up|down|suspect|joining|draining|...]");
        struct baton_node *ns;
        size_t n;
        int rc = baton_node_list(x->c, st, &ns, &n);
        if (rc)
            return fail("node list", rc);
        rc = print_nodes(x, ns, n);
        baton_free(ns);
        return rc;
    }
    uint64_t id;
    if (x->args_len != 3 || !parse_id(x->args[2], &id))
        return usage("node %s ID (hex)", sub);
    struct baton_node n;
    int rc;
    if (strcmp(sub, "show") == 0)
        rc = baton_node_get(x->c, id, &n);
    else if (strcmp(sub, "drain") == 0)
        rc = baton_node_drain(x->c, id, &n);
    else if (strcmp(sub, "remove") == 0)
        rc = baton_node_remove(x->c, id);
    else
        return usage("unknown node command '%s'", sub);
    if (rc)
        return fail(sub, rc);
    if (strcmp(sub, "remove") == 0) {
        if (x->json)
            printf("{\"id\":%" PRIu64 ",\"removed\":true}\n", id);
        else
            printf("Node %016" PRIx64 " removed\n", id);
        return 0;
    }
    return print_nodes(x, &n, 1);
}

/* ---- config, tso, ids --------------------------------------------------------------------- */

static int cmd_config_watch(struct ctl *x);

static int cmd_config(struct ctl *x)
{
    const char *sub = x->args_len > 1 ? x->args[1] : NULL;
    if (!sub)
        return usage("config: get, set or watch");
    if (strcmp(sub, "get") == 0) {
        if (x->args_len != 2)
            return usage("config get takes no arguments");
        char *json;
        int64_t ver, rev;
        int rc = baton_config_get(x->c, 0, &json, &ver, &rev);
        if (rc)
            return fail("config get", rc);
        if (x->json) {
            struct json j = {.f = stdout};
            json_begin_object(&j, NULL);
            json_i64(&j, "version", ver);
            json_i64(&j, "mod_revision", rev);
            json_raw(&j, "config", json);
            json_end_object(&j);
            json_done(&j);
        } else {
            printf("version: %" PRId64 "\nmod_revision: %" PRId64 "\n%s\n", ver, rev,
                   json[0] ? json : "(not set)");
        }
        baton_free(json);
        return 0;
    }
    if (strcmp(sub, "set") == 0) {
        if (x->args_len != 3)
            return usage("config set JSON [--expected-version N | --force]");
        int64_t expected = x->expected_version;
        if (!x->has_expected && !x->force) {
            /* Compare-and-set against the version read now. */
            char *cur;
            int rc = baton_config_get(x->c, 0, &cur, &expected, NULL);
            if (rc)
                return fail("config get", rc);
            baton_free(cur);
        }
        int64_t ver;
        int rc = baton_config_set(x->c, x->args[2], expected, x->force, &ver);
        if (rc)
            return fail("config set", rc);
        if (x->json)
            printf("{\"version\":%" PRId64 "}\n", ver);
        else
            printf("config version %" PRId64 "\n", ver);
        return 0;
    }
    if (strcmp(sub, "watch") == 0)
        return cmd_config_watch(x);
    return usage("unknown config command '%s'", sub);
}

struct cfgw {
    struct ctl *x;
    long seen;
    volatile sig_atomic_t done;
};

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void on_config(void *ctx, const char *json, int64_t version, int64_t mod_revision)
{
    struct cfgw *w = ctx;
    if (w->done)
        return;
    if (w->x->json)
        printf("{\"version\":%" PRId64 ",\"mod_revision\":%" PRId64 ",\"config\":%s}\n", version,
               mod_revision, json[0] ? json : "null");
    else
        printf("version %" PRId64 " mod_revision %" PRId64 ": %s\n", version, mod_revision,
               json[0] ? json : "(not set)");
    fflush(stdout);
    if (w->x->limit && ++w->seen >= w->x->limit)
        w->done = 1;
}

static int cmd_config_watch(struct ctl *x)
{
    if (x->args_len != 2)
        return usage("config watch [--limit N]");
    struct cfgw w = {.x = x};
    struct baton_watch *h;
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    int rc = baton_config_watch(x->c, 0, on_config, &w, &h);
    if (rc)
        return fail("config watch", rc);
    while (!w.done && !interrupted)
        usleep(20000);
    baton_watch_stop(h);
    return 0;
}

static int cmd_range(struct ctl *x, bool tso)
{
    uint64_t count = 1;
    if (x->args_len > 2 ||
        (x->args_len == 2 && (!parse_u64(x->args[1], 10, &count) || count == 0 || count > 1000000)))
        return usage("%s [COUNT]", tso ? "tso" : "id");
    uint64_t first;
    int rc = tso ? baton_tso(x->c, (uint32_t)count, &first)
                 : baton_id_alloc(x->c, (uint32_t)count, &first);
    if (rc)
        return fail(tso ? "tso" : "id", rc);
    if (x->json) {
        struct json j = {.f = stdout};
        json_begin_object(&j, NULL);
        json_u64(&j, "first", first);
        json_u64(&j, "count", count);
        if (tso) {
            json_u64(&j, "physical_ms", first >> 18);
            json_u64(&j, "logical", first & ((1u << 18) - 1));
        }
        json_end_object(&j);
        json_done(&j);
    } else if (tso) {
        time_t secs = (time_t)((first >> 18) / 1000);
        struct tm tm;
        char when[64];
        gmtime_r(&secs, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        printf("%" PRIu64 " (physical %s.%03" PRIu64 "Z, logical %" PRIu64 ")%s", first, when,
               (first >> 18) % 1000, first & ((1u << 18) - 1), count > 1 ? "" : "\n");
        if (count > 1)
            printf(" .. %" PRIu64 " (%" PRIu64 " timestamps)\n", first + count - 1, count);
    } else {
        if (count > 1)
            printf("%" PRIu64 " .. %" PRIu64 " (%" PRIu64 " ids)\n", first, first + count - 1,
                   count);
        else
            printf("%" PRIu64 "\n", first);
    }
    return 0;
}

/* ---- snapshots ---------------------------------------------------------------------------- */

static int cmd_snapshot_save(struct ctl *x)
{
    if (x->args_len != 3)
        return usage("snapshot save FILE");
    uint64_t bytes;
    char ep[128];
    int rc = baton_snapshot_save(x->c, x->args[2], &bytes);
    if (rc)
        return fail("snapshot save", rc);
    baton_current_endpoint(x->c, ep, sizeof(ep));
    if (x->json) {
        struct json j = {.f = stdout};
        json_begin_object(&j, NULL);
        json_str(&j, "file", x->args[2]);
        json_u64(&j, "bytes", bytes);
        json_str(&j, "endpoint", ep);
        json_end_object(&j);
        json_done(&j);
    } else
        printf("Snapshot saved at %s (%" PRIu64 " bytes, from %s)\n", x->args[2], bytes, ep);
    return 0;
}

/* batond next to this binary (installed side by side, or the build tree's src/cmd/batond). */
static const char *find_batond(const struct ctl *x, char *buf, size_t len)
{
    if (x->batond)
        return x->batond;
    const char *env = getenv("BATOND");
    if (env && env[0])
        return env;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            snprintf(buf, len, "%s/batond", self);
            if (access(buf, X_OK) == 0)
                return buf;
            snprintf(buf, len, "%s/../batond/batond", self);
            if (access(buf, X_OK) == 0)
                return buf;
        }
    }
    return "batond"; /* from PATH */
}

static int cmd_snapshot_restore(struct ctl *x)
{
    if (x->args_len != 3 || !x->data_dir)
        return usage("snapshot restore FILE --data-dir DIR [--batond PATH] [batond flags...]");
    if (access(x->args[2], R_OK) != 0)
        return error("snapshot restore: %s: %s", x->args[2], strerror(errno));
    if (access(x->data_dir, F_OK) == 0)
        return error("snapshot restore: %s exists; restore into a new directory", x->data_dir);
    char buf[PATH_MAX + 32];
    const char *bin = find_batond(x, buf, sizeof(buf));
    const char *argv[ARGS_MAX + 8];
    int k = 0;
    argv[k++] = bin;
    argv[k++] = "--restore";
    argv[k++] = x->args[2];
    argv[k++] = "--data-dir";
    argv[k++] = x->data_dir;
    for (int i = 0; i < x->passthrough_len; i++)
        argv[k++] = x->passthrough[i];
    argv[k] = NULL;
    fprintf(stderr, "batonctl: running %s --restore %s --data-dir %s%s\n", bin, x->args[2],
            x->data_dir, x->passthrough_len ? " ..." : "");
    fflush(NULL);
    execvp(bin, (char *const *)argv);
    return error("snapshot restore: cannot run %s: %s (use --batond PATH)", bin, strerror(errno));
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static struct ctl x;
    snprintf(x.endpoints, sizeof(x.endpoints), "127.0.0.1:2379");
    x.dial_timeout_ms = 2000;
    x.command_timeout_ms = 5000;
    int rc = parse_args(&x, argc, argv);
    if (rc)
        return rc;
    if (x.args_len == 0)
        return usage("no command");
    const char *cmd = x.args[0];
    static const char *const known[] = {"status", "member", "leader", "node",
                                        "config", "tso",    "id",     "snapshot"};
    bool ok = false;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        ok |= strcmp(cmd, known[i]) == 0;
    if (!ok)
        return usage("unknown command '%s'", cmd);
    if (strcmp(cmd, "snapshot") == 0 && x.args_len > 1 && strcmp(x.args[1], "restore") == 0)
        return cmd_snapshot_restore(&x);
    if (strcmp(cmd, "snapshot") == 0 && (x.args_len < 2 || strcmp(x.args[1], "save") != 0))
        return usage("snapshot save FILE | snapshot restore FILE --data-dir DIR");
    if (x.passthrough_len)
        return usage("unknown flag '%s'", x.passthrough[0]);
    signal(SIGPIPE, SIG_IGN);
    rc = connect_client(&x);
    if (rc)
        return rc;
    if (strcmp(cmd, "status") == 0)
        rc = x.args_len == 1 ? cmd_status(&x) : usage("status takes no arguments");
    else if (strcmp(cmd, "member") == 0)
        rc = cmd_member(&x);
    else if (strcmp(cmd, "leader") == 0)
        rc = cmd_leader(&x);
    else if (strcmp(cmd, "node") == 0)
        rc = cmd_node(&x);
    else if (strcmp(cmd, "config") == 0)
        rc = cmd_config(&x);
    else if (strcmp(cmd, "tso") == 0)
        rc = cmd_range(&x, true);
    else if (strcmp(cmd, "id") == 0)
        rc = cmd_range(&x, false);
    else
        rc = cmd_snapshot_save(&x);
    baton_close(x.c);
    return rc;
}
