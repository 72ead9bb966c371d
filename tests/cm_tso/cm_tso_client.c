/*
 * cm_tso_client: drives baton.v1.Tso and baton.v1.Config on real batond processes over gRPC
 * (rpc client on libuv, net/). Modes:
 *
 *   checks EP1,EP2,EP3          bad input and exact texts, followers' "not leader", Config
 *                               Get/Set/Watch at revisions, compaction, ClusterVersion and
 *                               Finalize, AllocIds, the Stream's order
 *   race EP1,EP2 ROUNDS         two writers race Config.Set with the same expected version on
 *                               two endpoints: exactly one wins each round, the loser gets the
 *                               conflict text
 *   linear EPS CLIENTS STOP PROGRESS MAXSECS
 *                               CLIENTS closed loops calling GetTimestamp (and one AllocIds loop)
 *                               through all endpoints, moving on at any error, until the file
 *                               STOP exists; the number of answers goes to PROGRESS as it grows.
 *                               Checks: every range is above every value any client had
 *                               received before the request was sent (real-time order), ranges
 *                               never overlap, ids never repeat.
 *   bench EP CONNS INFLIGHT COUNT SECS
 *                               GetTimestamp(count) closed loops: timestamps/s, p50/p99 latency
 *
 * Exit status 0 when every check passed. The last line reads "N passed, N failed".
 */
#include "net/net.h"
#include "rpc/rpc.h"

#include <baton.pb-c.h>
#include <rpc.pb-c.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EPS_MAX     8
#define TIMEOUT_MS  5000
#define CLIENTS_MAX 64
#define LAT_BUCKETS 4096 /* 100 us each: up to 409.6 ms, the last one holds the rest */

static int passed, failed;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    failed++;
}

static void ok(const char *what)
{
    printf("ok: %s\n", what);
    fflush(stdout);
    passed++;
}

static uint64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* ---- Connections ------------------------------------------------------------------------------
 */

struct ctx {
    struct net_loop *loop;
    const char *eps[EPS_MAX];
    int neps;
    struct net_client *nc[EPS_MAX];
};

static void on_conn_state(struct net_client *c, int status, void *arg)
{
    (void)c;
    struct net_client **slot = arg;
    if (status != 0)
        *slot = NULL;
}

/* The connection to endpoint i, opened on first use and again after it ended. */
static struct rpc_client *conn(struct ctx *x, int i)
{
    if (!x->nc[i]) {
        struct rpc_client_config cc;
        rpc_client_config_default(&cc);
        cc.calls_max = 4096;
        if (net_connect_rpc(x->loop, x->eps[i], &cc, on_conn_state, &x->nc[i], &x->nc[i]) != 0)
            return NULL;
    }
    return net_client_rpc(x->nc[i]);
}

static int parse_eps(struct ctx *x, char *list)
{
    for (char *s = strtok(list, ","); s && x->neps < EPS_MAX; s = strtok(NULL, ","))
        x->eps[x->neps++] = s;
    return x->neps > 0 ? 0 : -1;
}

/* ---- Synchronous calls ------------------------------------------------------------------------
 */

struct sync_call {
    bool done;
    int code;
    char msg[512];
    uint8_t *resp;
    size_t resp_len;
    int messages;
};

static void sync_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *arg)
{
    (void)call;
    struct sync_call *s = arg;
    free(s->resp);
    s->resp = malloc(n ? n : 1);
    memcpy(s->resp, d, n);
    s->resp_len = n;
    s->messages++;
}

static void sync_on_close(struct rpc_client_call *call, int code, const char *msg, void *arg)
{
    (void)call;
    struct sync_call *s = arg;
    s->done = true;
    s->code = code;
    snprintf(s->msg, sizeof(s->msg), "%s", msg ? msg : "");
}

/* rpc_client_unary wants somewhere to put the handle; these calls never need it. */
static struct rpc_client_call *unused_call;

static const struct rpc_client_callbacks sync_cbs = {sync_on_message, sync_on_close, NULL};

static bool sync_done(void *arg)
{
    return ((struct sync_call *)arg)->done;
}

/* One unary call; the response (if any) unpacked into arena a. Returns the gRPC code. */
static int unary(struct ctx *x, int ep, const char *path, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *rd, struct arena *a, void **resp, char *msg,
                 size_t msg_len)
{
    struct sync_call s = {0};
    struct rpc_client *cl = conn(x, ep);
    if (!cl || rpc_client_unary(cl, path, req, TIMEOUT_MS, &sync_cbs, &s, &unused_call) != 0) {
        snprintf(msg, msg_len, "cannot start the call");
        return -1;
    }
    net_loop_run_until(x->loop, sync_done, &s, TIMEOUT_MS + 2000);
    if (!s.done) {
        snprintf(msg, msg_len, "no answer");
        return -1;
    }
    snprintf(msg, msg_len, "%s", s.msg);
    if (resp)
        *resp = s.resp && s.code == 0 ? rpc_unpack(rd, a, s.resp, s.resp_len) : NULL;
    free(s.resp);
    return s.code;
}

/* Expects code and text exactly. */
static void expect(const char *what, int code, const char *msg, int want_code, const char *want_msg)
{
    if (code == want_code && strcmp(msg, want_msg) == 0) {
        ok(what);
        return;
    }
    fail("%s: got %s \"%s\", want %s \"%s\"", what, grpc_code_name(code), msg,
         grpc_code_name(want_code), want_msg);
}

/* ---- checks -----------------------------------------------------------------------------------
 */

/* The endpoint of the leader, found by asking for a timestamp on each (followers refuse). */
static int find_leader(struct ctx *x)
{
    struct arena a;
    arena_init(&a, 4096);
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < x->neps; i++) {
            Baton__V1__TsoRequest q = BATON__V1__TSO_REQUEST__INIT;
            q.count = 1;
            char msg[512];
            if (unary(x, i, "/baton.v1.Tso/GetTimestamp", &q.base, NULL, &a, NULL, msg,
                      sizeof(msg)) == GRPC_OK) {
                arena_free(&a);
                return i;
            }
        }
        usleep(200000);
    }
    arena_free(&a);
    return -1;
}

static int config_set(struct ctx *x, int ep, const char *json, int64_t expected, bool force,
                      struct arena *a, Baton__V1__ConfigSetResponse **r, char *msg, size_t ml)
{
    Baton__V1__ConfigSetRequest q = BATON__V1__CONFIG_SET_REQUEST__INIT;
    q.json = (char *)json;
    q.expected_version = expected;
    q.force = force;
    return unary(x, ep, "/baton.v1.Config/Set", &q.base,
                 &baton__v1__config_set_response__descriptor, a, (void **)r, msg, ml);
}

static int config_get(struct ctx *x, int ep, int64_t rev, struct arena *a,
                      Baton__V1__ConfigGetResponse **r, char *msg, size_t ml)
{
    Baton__V1__ConfigGetRequest q = BATON__V1__CONFIG_GET_REQUEST__INIT;
    q.revision = rev;
    return unary(x, ep, "/baton.v1.Config/Get", &q.base,
                 &baton__v1__config_get_response__descriptor, a, (void **)r, msg, ml);
}

static void check_bad_input(struct ctx *x, int leader)
{
    struct arena a;
    arena_init(&a, 1 << 16);
    char msg[512];
    Baton__V1__TsoRequest t = BATON__V1__TSO_REQUEST__INIT;
    t.count = 0;
    int code =
        unary(x, leader, "/baton.v1.Tso/GetTimestamp", &t.base, NULL, &a, NULL, msg, sizeof(msg));
    expect("GetTimestamp count 0", code, msg, GRPC_INVALID_ARGUMENT,
           "baton: count must be 1..262144, got 0");
    t.count = 262145;
    code =
        unary(x, leader, "/baton.v1.Tso/GetTimestamp", &t.base, NULL, &a, NULL, msg, sizeof(msg));
    expect("GetTimestamp count 262145", code, msg, GRPC_INVALID_ARGUMENT,
           "baton: count must be 1..262144, got 262145");
    Baton__V1__IdAllocRequest d = BATON__V1__ID_ALLOC_REQUEST__INIT;
    d.count = 0;
    code = unary(x, leader, "/baton.v1.Tso/AllocIds", &d.base, NULL, &a, NULL, msg, sizeof(msg));
    expect("AllocIds count 0", code, msg, GRPC_INVALID_ARGUMENT,
           "baton: count must be 1..1000000, got 0");
    d.count = 1000001;
    code = unary(x, leader, "/baton.v1.Tso/AllocIds", &d.base, NULL, &a, NULL, msg, sizeof(msg));
    expect("AllocIds count 1000001", code, msg, GRPC_INVALID_ARGUMENT,
           "baton: count must be 1..1000000, got 1000001");

    /* A configuration of 1 MiB + 1 byte: a valid object, too large. */
    size_t big = (1u << 20) + 1;
    char *json = malloc(big + 1);
    memset(json, ' ', big);
    json[0] = '{';
    json[big - 1] = '}';
    json[big] = 0;
    code = config_set(x, leader, json, 0, true, &a, NULL, msg, sizeof(msg));
    expect("Config.Set 1 MiB + 1", code, msg, GRPC_INVALID_ARGUMENT,
           "baton: config too large: 1048577 bytes, more than the limit of 1048576");
    free(json);
    code = config_set(x, leader, "{\"a\":}", 0, true, &a, NULL, msg, sizeof(msg));
    expect("Config.Set invalid JSON", code, msg, GRPC_INVALID_ARGUMENT,
           "baton: invalid config JSON: unexpected character at offset 5");
    code = config_set(x, leader, "[1,2]", 0, true, &a, NULL, msg, sizeof(msg));
    expect("Config.Set not an object", code, msg, GRPC_INVALID_ARGUMENT,
           "baton: invalid config JSON: the configuration must be a JSON object at offset 0");
    code = config_set(x, leader, "{\"s\":\"\\ud800\"}", 0, true, &a, NULL, msg, sizeof(msg));
    expect("Config.Set lone surrogate", code, msg, GRPC_INVALID_ARGUMENT,
           "baton: invalid config JSON: high surrogate \\uD800 without a low one at offset 12");

    Baton__V1__FinalizeRequest f = BATON__V1__FINALIZE_REQUEST__INIT;
    f.version = "1.2";
    code = unary(x, leader, "/baton.v1.Config/Finalize", &f.base, NULL, &a, NULL, msg, sizeof(msg));
    expect("Finalize to an invalid version", code, msg, GRPC_INVALID_ARGUMENT,
           "baton: invalid version \"1.2\": want major.minor.patch");
    arena_free(&a);
}

static void check_followers(struct ctx *x, int leader)
{
    struct arena a;
    arena_init(&a, 4096);
    char msg[512];
    for (int i = 0; i < x->neps; i++) {
        if (i == leader)
            continue;
        Baton__V1__TsoRequest t = BATON__V1__TSO_REQUEST__INIT;
        t.count = 1;
        int code =
            unary(x, i, "/baton.v1.Tso/GetTimestamp", &t.base, NULL, &a, NULL, msg, sizeof(msg));
        expect("GetTimestamp on a follower", code, msg, GRPC_FAILED_PRECONDITION,
               "etcdserver: not leader");
        Baton__V1__IdAllocRequest d = BATON__V1__ID_ALLOC_REQUEST__INIT;
        d.count = 1;
        code = unary(x, i, "/baton.v1.Tso/AllocIds", &d.base, NULL, &a, NULL, msg, sizeof(msg));
        expect("AllocIds on a follower", code, msg, GRPC_FAILED_PRECONDITION,
               "etcdserver: not leader");
    }
    arena_free(&a);
}

/* Puts a Node record (as the Nodes service stores it) with an etcd Put. */
static int node_put(struct ctx *x, int ep, const char *key, const char *version, int state,
                    struct arena *a)
{
    Baton__V1__Node n = BATON__V1__NODE__INIT;
    n.id = 1;
    n.version = (char *)version;
    n.state = state;
    uint8_t buf[256];
    size_t len = baton__v1__node__pack(&n, buf);
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    p.value = (ProtobufCBinaryData){len, buf};
    char msg[256];
    return unary(x, ep, "/etcdserverpb.KV/Put", &p.base, NULL, a, NULL, msg, sizeof(msg));
}

static const char *cluster_version(struct ctx *x, int ep, struct arena *a)
{
    Baton__V1__ClusterVersionRequest q = BATON__V1__CLUSTER_VERSION_REQUEST__INIT;
    Baton__V1__ClusterVersionResponse *r = NULL;
    char msg[256];
    int code =
        unary(x, ep, "/baton.v1.Config/ClusterVersion", &q.base,
              &baton__v1__cluster_version_response__descriptor, a, (void **)&r, msg, sizeof(msg));
    return code == 0 && r ? r->cluster_version : "(error)";
}

/* Registered nodes count in the cluster version unless removed or decommissioned; records
 * below a node's key (its epoch) are not nodes; the finalized version never moves back. */
static void check_node_versions(struct ctx *x, int leader, struct arena *a)
{
    const char *old = "/baton/nodes/00000000000000a1", *gone = "/baton/nodes/00000000000000a2";
    bool good =
        node_put(x, leader, old, "0.0.9", BATON__V1__NODE_STATE__NODE_UP, a) == 0 &&
        node_put(x, leader, gone, "0.0.1", BATON__V1__NODE_STATE__NODE_DECOMMISSIONED, a) == 0;
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    const char *epoch = "/baton/nodes/00000000000000a1/epoch";
    p.key = (ProtobufCBinaryData){strlen(epoch), (uint8_t *)epoch};
    p.value = (ProtobufCBinaryData){1, (uint8_t *)"1"};
    char msg[512];
    good = good &&
           unary(x, leader, "/etcdserverpb.KV/Put", &p.base, NULL, a, NULL, msg, sizeof(msg)) == 0;
    const char *v = cluster_version(x, leader, a);
    if (good && strcmp(v, "0.0.9") == 0)
        ok("ClusterVersion: the lowest registered node counts, a decommissioned one does not");
    else
        fail("ClusterVersion with nodes: \"%s\" (want 0.0.9)", v);
    Baton__V1__FinalizeRequest f = BATON__V1__FINALIZE_REQUEST__INIT;
    f.version = "0.0.9";
    int code =
        unary(x, leader, "/baton.v1.Config/Finalize", &f.base, NULL, a, NULL, msg, sizeof(msg));
    expect("Finalize below the finalized version", code, msg, GRPC_FAILED_PRECONDITION,
           "baton: cannot finalize 0.0.9: 0.1.0 is finalized already and the finalized version "
           "never moves backwards");
    node_put(x, leader, old, "0.0.9", BATON__V1__NODE_STATE__NODE_REMOVED, a);
    v = cluster_version(x, leader, a);
    if (strcmp(v, "0.1.0") == 0)
        ok("ClusterVersion: a removed node no longer counts");
    else
        fail("ClusterVersion after the node's removal: \"%s\" (want 0.1.0)", v);
}

static void check_versions(struct ctx *x, int leader)
{
    struct arena a;
    arena_init(&a, 4096);
    char msg[512];
    Baton__V1__ClusterVersionRequest q = BATON__V1__CLUSTER_VERSION_REQUEST__INIT;
    Baton__V1__ClusterVersionResponse *r = NULL;
    /* Members publish their version shortly after start: wait for all of them. */
    int code = -1;
    for (int i = 0; i < 50; i++) {
        code = unary(x, (leader + 1) % x->neps, "/baton.v1.Config/ClusterVersion", &q.base,
                     &baton__v1__cluster_version_response__descriptor, &a, (void **)&r, msg,
                     sizeof(msg));
        if (code == 0 && r && strcmp(r->cluster_version, "0.1.0") == 0)
            break;
        usleep(100000);
    }
    if (code == 0 && r && strcmp(r->cluster_version, "0.1.0") == 0 &&
        (int)r->n_member_versions == x->neps)
        ok("ClusterVersion 0.1.0 with every member's version");
    else
        fail("ClusterVersion: code %d \"%s\" version \"%s\" members %zu", code, msg,
             r ? r->cluster_version : "", r ? r->n_member_versions : 0);
    Baton__V1__FinalizeRequest f = BATON__V1__FINALIZE_REQUEST__INIT;
    f.version = "9.9.9";
    code = unary(x, leader, "/baton.v1.Config/Finalize", &f.base, NULL, &a, NULL, msg, sizeof(msg));
    expect("Finalize to a wrong version", code, msg, GRPC_FAILED_PRECONDITION,
           "baton: cannot finalize 9.9.9: the cluster version is 0.1.0");
    f.version = "0.1.0";
    code = unary(x, leader, "/baton.v1.Config/Finalize", &f.base, NULL, &a, NULL, msg, sizeof(msg));
    expect("Finalize 0.1.0", code, msg, GRPC_OK, "");
    code =
        unary(x, leader, "/baton.v1.Config/ClusterVersion", &q.base,
              &baton__v1__cluster_version_response__descriptor, &a, (void **)&r, msg, sizeof(msg));
    if (code == 0 && r && strcmp(r->finalized_version, "0.1.0") == 0)
        ok("finalized version reads back");
    else
        fail("finalized version: code %d finalized \"%s\"", code, r ? r->finalized_version : "");
    check_node_versions(x, leader, &a);
    arena_free(&a);
}

/* Config: CAS versions, reads at revisions, the watch (current first, then each change). */
struct wctx {
    int messages;
    int64_t versions[16];
    char json[16][64];
    bool closed;
    int code;
};

static void w_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *arg)
{
    (void)call;
    struct wctx *w = arg;
    Baton__V1__ConfigWatchResponse *m = baton__v1__config_watch_response__unpack(NULL, n, d);
    if (m && w->messages < 16) {
        w->versions[w->messages] = m->version;
        snprintf(w->json[w->messages], sizeof(w->json[0]), "%s", m->json);
    }
    w->messages++;
    if (m)
        baton__v1__config_watch_response__free_unpacked(m, NULL);
}

static void w_on_close(struct rpc_client_call *call, int code, const char *msg, void *arg)
{
    (void)call;
    (void)msg;
    struct wctx *w = arg;
    w->closed = true;
    w->code = code;
}

static const struct rpc_client_callbacks w_cbs = {w_on_message, w_on_close, NULL};

struct wwait {
    struct wctx *w;
    int want;
};

static bool w_enough(void *arg)
{
    struct wwait *ww = arg;
    return ww->w->messages >= ww->want || ww->w->closed;
}

static void check_config(struct ctx *x, int leader)
{
    struct arena a;
    arena_init(&a, 1 << 16);
    char msg[512];
    int follower = (leader + 1) % x->neps;
    Baton__V1__ConfigGetResponse *g = NULL;
    Baton__V1__ConfigSetResponse *s = NULL;
    int code = config_get(x, follower, 0, &a, &g, msg, sizeof(msg));
    int64_t v0 = g ? g->version : -1;
    if (code == 0 && g)
        ok("Config.Get through a follower");
    else
        fail("Config.Get: %d %s", code, msg);

    /* The watch starts before the changes, through a follower. */
    struct wctx w = {0};
    Baton__V1__ConfigWatchRequest wq = BATON__V1__CONFIG_WATCH_REQUEST__INIT;
    struct rpc_client_call *wc = NULL;
    rpc_client_unary(conn(x, follower), "/baton.v1.Config/Watch", &wq.base, 0, &w_cbs, &w, &wc);
    struct wwait ww = {&w, 1};
    net_loop_run_until(x->loop, w_enough, &ww, TIMEOUT_MS);

    code = config_set(x, leader, "{\"a\":1}", v0, false, &a, &s, msg, sizeof(msg));
    int64_t v1 = s ? s->version : -1, r1 = s ? s->mod_revision : -1;
    if (code == 0 && v1 == v0 + 1)
        ok("Config.Set with the expected version");
    else
        fail("Config.Set: %d %s version %" PRId64 " (want %" PRId64 ")", code, msg, v1, v0 + 1);
    code = config_set(x, follower, "{\"a\":2, \"b\": [true, null, -1.5e3, \"\\u00e9\"]}", v1, false,
                      &a, &s, msg, sizeof(msg));
    int64_t v2 = s ? s->version : -1;
    if (code == 0 && v2 == v1 + 1)
        ok("Config.Set through a follower");
    else
        fail("Config.Set via follower: %d %s", code, msg);
    char want[128];
    snprintf(want, sizeof(want),
             "baton: config version mismatch: expected %" PRId64 ", current %" PRId64, v1, v2);
    code = config_set(x, leader, "{}", v1, false, &a, NULL, msg, sizeof(msg));
    expect("Config.Set with a stale version", code, msg, GRPC_FAILED_PRECONDITION, want);

    code = config_get(x, leader, r1, &a, &g, msg, sizeof(msg));
    if (code == 0 && g && strcmp(g->json, "{\"a\":1}") == 0 && g->version == v1)
        ok("Config.Get at a revision");
    else
        fail("Config.Get at %" PRId64 ": %d %s json %s", r1, code, msg, g ? g->json : "");

    ww.want = 3;
    net_loop_run_until(x->loop, w_enough, &ww, TIMEOUT_MS);
    if (w.messages >= 3 && w.versions[0] == v0 && w.versions[1] == v1 && w.versions[2] == v2 &&
        strcmp(w.json[1], "{\"a\":1}") == 0)
        ok("Config.Watch: the current configuration, then each change");
    else
        fail("Config.Watch: %d messages, versions %" PRId64 " %" PRId64 " %" PRId64
             " (want %" PRId64 " %" PRId64 " %" PRId64 ")",
             w.messages, w.versions[0], w.versions[1], w.versions[2], v0, v1, v2);
    if (!w.closed && wc)
        rpc_client_call_cancel(wc);

    /* Compaction past r1: the old revision is gone, with etcd's text. */
    Etcdserverpb__CompactionRequest cq = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    cq.revision = r1 + 1;
    code = unary(x, leader, "/etcdserverpb.KV/Compact", &cq.base, NULL, &a, NULL, msg, sizeof(msg));
    if (code != 0)
        fail("Compact: %d %s", code, msg);
    code = config_get(x, leader, r1, &a, NULL, msg, sizeof(msg));
    expect("Config.Get at a compacted revision", code, msg, GRPC_OUT_OF_RANGE,
           "etcdserver: mvcc: required revision has been compacted");
    /* A watch from a compacted revision ends with the same text. */
    struct wctx w2 = {0};
    wq.start_revision = r1;
    rpc_client_unary(conn(x, leader), "/baton.v1.Config/Watch", &wq.base, 0, &w_cbs, &w2,
                     &unused_call);
    struct wwait ww2 = {&w2, 1000};
    net_loop_run_until(x->loop, w_enough, &ww2, TIMEOUT_MS);
    if (w2.closed && w2.code == GRPC_OUT_OF_RANGE && w2.messages == 0)
        ok("Config.Watch from a compacted revision");
    else
        fail("Config.Watch from compacted: closed %d code %d messages %d", w2.closed, w2.code,
             w2.messages);
    arena_free(&a);
}

/* Stream: pipelined requests answered in order, each range above the last. */
struct sctx {
    int answers;
    uint64_t last;
    uint32_t counts[64];
    bool bad, closed;
    int code;
};

static void s_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *arg)
{
    (void)call;
    struct sctx *s = arg;
    Baton__V1__TsoResponse *m = baton__v1__tso_response__unpack(NULL, n, d);
    if (!m || s->answers >= 64 || m->count != s->counts[s->answers] || m->first <= s->last)
        s->bad = true;
    if (m) {
        s->last = m->first + m->count - 1;
        baton__v1__tso_response__free_unpacked(m, NULL);
    }
    s->answers++;
}

static void s_on_close(struct rpc_client_call *call, int code, const char *msg, void *arg)
{
    (void)call;
    (void)msg;
    struct sctx *s = arg;
    s->closed = true;
    s->code = code;
}

static bool s_closed(void *arg)
{
    return ((struct sctx *)arg)->closed;
}

static void check_stream(struct ctx *x, int leader)
{
    static const struct rpc_client_callbacks cbs = {s_on_message, s_on_close, NULL};
    struct sctx s = {0};
    struct rpc_client_call *call;
    if (rpc_client_call_start(conn(x, leader), "/baton.v1.Tso/Stream", NULL, 0, TIMEOUT_MS, &cbs,
                              &s, &call) != 0) {
        fail("Stream: cannot start");
        return;
    }
    for (int i = 0; i < 64; i++) {
        Baton__V1__TsoRequest q = BATON__V1__TSO_REQUEST__INIT;
        q.count = s.counts[i] = (uint32_t)(1 + (i * 7919) % 262144);
        rpc_client_call_send(call, &q.base);
    }
    rpc_client_call_close_send(call);
    net_loop_run_until(x->loop, s_closed, &s, TIMEOUT_MS + 1000);
    if (s.closed && s.code == 0 && s.answers == 64 && !s.bad)
        ok("Stream: 64 pipelined requests answered in order, ranges increasing");
    else
        fail("Stream: closed %d code %d answers %d bad %d", s.closed, s.code, s.answers, s.bad);

    /* A bad count ends the stream with the same text as the unary call. */
    struct sctx s2 = {0};
    if (rpc_client_call_start(conn(x, leader), "/baton.v1.Tso/Stream", NULL, 0, TIMEOUT_MS, &cbs,
                              &s2, &call) == 0) {
        Baton__V1__TsoRequest q = BATON__V1__TSO_REQUEST__INIT;
        rpc_client_call_send(call, &q.base);
        net_loop_run_until(x->loop, s_closed, &s2, TIMEOUT_MS + 1000);
        if (s2.closed && s2.code == GRPC_INVALID_ARGUMENT)
            ok("Stream: count 0 ends the stream with INVALID_ARGUMENT");
        else
            fail("Stream count 0: closed %d code %d", s2.closed, s2.code);
    }
}

static void check_ids(struct ctx *x, int leader)
{
    struct arena a;
    arena_init(&a, 4096);
    char msg[512];
    uint64_t end = 0;
    bool good = true;
    for (int i = 0; i < 20 && good; i++) {
        Baton__V1__IdAllocRequest d = BATON__V1__ID_ALLOC_REQUEST__INIT;
        d.count = i % 2 ? 1000000 : 1;
        Baton__V1__IdAllocResponse *r = NULL;
        int code =
            unary(x, leader, "/baton.v1.Tso/AllocIds", &d.base,
                  &baton__v1__id_alloc_response__descriptor, &a, (void **)&r, msg, sizeof(msg));
        good = code == 0 && r && r->count == d.count && r->first >= end && r->first > 0;
        if (!good)
            fail("AllocIds %u: %d %s first %" PRIu64 " after %" PRIu64, d.count, code, msg,
                 r ? r->first : 0, end);
        if (r)
            end = r->first + r->count;
    }
    if (good)
        ok("AllocIds: 20 ranges of 1 and 1,000,000, increasing and disjoint");
    arena_free(&a);
}

static int mode_checks(struct ctx *x)
{
    int leader = find_leader(x);
    if (leader < 0) {
        fail("no member serves timestamps");
        return 1;
    }
    printf("leader: %s\n", x->eps[leader]);
    check_bad_input(x, leader);
    check_followers(x, leader);
    check_config(x, leader);
    check_stream(x, leader);
    check_ids(x, leader);
    check_versions(x, leader);
    return 0;
}

/* ---- race -------------------------------------------------------------------------------------
 */

struct racer {
    bool done;
    int code;
    char msg[256];
    struct rpc_client_call *call;
};

static void r_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *arg)
{
    (void)call;
    (void)d;
    (void)n;
    (void)arg;
}

static void r_on_close(struct rpc_client_call *call, int code, const char *msg, void *arg)
{
    (void)call;
    struct racer *r = arg;
    r->done = true;
    r->code = code;
    snprintf(r->msg, sizeof(r->msg), "%s", msg ? msg : "");
}

static bool both_done(void *arg)
{
    struct racer *r = arg;
    return r[0].done && r[1].done;
}

static int mode_race(struct ctx *x, int rounds)
{
    static const struct rpc_client_callbacks cbs = {r_on_message, r_on_close, NULL};
    struct arena a;
    arena_init(&a, 4096);
    char msg[512];
    int wins[2] = {0, 0};
    for (int round = 0; round < rounds; round++) {
        Baton__V1__ConfigGetResponse *g = NULL;
        arena_reset(&a);
        if (config_get(x, 0, 0, &a, &g, msg, sizeof(msg)) != 0 || !g) {
            fail("race: Get: %s", msg);
            break;
        }
        int64_t v = g->version;
        struct racer r[2] = {{0}, {0}};
        char json[2][64];
        for (int i = 0; i < 2; i++) {
            Baton__V1__ConfigSetRequest q = BATON__V1__CONFIG_SET_REQUEST__INIT;
            snprintf(json[i], sizeof(json[i]), "{\"writer\":%d,\"round\":%d}", i, round);
            q.json = json[i];
            q.expected_version = v;
            struct rpc_client *cl = conn(x, i % x->neps);
            if (!cl || rpc_client_unary(cl, "/baton.v1.Config/Set", &q.base, TIMEOUT_MS, &cbs,
                                        &r[i], &unused_call) != 0)
                r[i].done = true, r[i].code = -1;
        }
        net_loop_run_until(x->loop, both_done, r, TIMEOUT_MS + 2000);
        char want[128];
        snprintf(want, sizeof(want),
                 "baton: config version mismatch: expected %" PRId64 ", current %" PRId64, v,
                 v + 1);
        int winner = r[0].code == 0 ? 0 : 1;
        struct racer *loser = &r[1 - winner];
        if (r[winner].code != 0 || loser->code != GRPC_FAILED_PRECONDITION ||
            strcmp(loser->msg, want) != 0) {
            fail("race round %d: codes %d \"%s\" / %d \"%s\" (want one OK and \"%s\")", round,
                 r[0].code, r[0].msg, r[1].code, r[1].msg, want);
            continue;
        }
        wins[winner]++;
        /* The stored configuration is the winner's. */
        arena_reset(&a);
        if (config_get(x, 1 % x->neps, 0, &a, &g, msg, sizeof(msg)) != 0 || !g ||
            strcmp(g->json, json[winner]) != 0 || g->version != v + 1)
            fail("race round %d: stored %s version %" PRId64, round, g ? g->json : "?",
                 g ? g->version : -1);
    }
    printf("race: %d rounds, wins %d / %d\n", rounds, wins[0], wins[1]);
    if (wins[0] + wins[1] == rounds)
        ok("race: exactly one writer won each round, the loser got the conflict text");
    arena_free(&a);
    return 0;
}

/* ---- linear -----------------------------------------------------------------------------------
 */

struct range {
    uint64_t first, count;
};

struct lclient {
    struct ctx *x;
    int id, ep;
    bool ids;  /* AllocIds instead of GetTimestamp */
    bool roam; /* the next endpoint after every answer, not only after errors */
    bool busy;
    uint64_t retry_at_us;
    uint64_t floor; /* the largest value any client had received when this request went */
    uint64_t last;  /* the largest value this client received */
    uint32_t count;
    uint64_t oks, errors;
};

static struct {
    struct lclient c[CLIENTS_MAX];
    int n;
    uint64_t max_seen; /* over every timestamp answer received */
    struct range *ts, *ids;
    size_t ts_len, ts_cap, ids_len, ids_cap;
    uint64_t oks, errors, violations;
    bool stop;
    const char *stop_file, *progress_file;
    uint64_t deadline_us, last_progress_write;
    struct prng prng;
    uint64_t codes[17];
    uint64_t ts_oks_by_ep[EPS_MAX]; /* timestamp answers from each endpoint */
    int last_ep;                    /* 1-based endpoint of the last timestamp answer */
} L;

static void range_add(struct range **v, size_t *len, size_t *cap, uint64_t first, uint64_t n)
{
    if (*len == *cap) {
        *cap = *cap ? *cap * 2 : 4096;
        *v = realloc(*v, *cap * sizeof(**v));
        if (!*v)
            abort();
    }
    (*v)[(*len)++] = (struct range){first, n};
}

static void l_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *arg)
{
    (void)call;
    struct lclient *c = arg;
    if (c->ids) {
        Baton__V1__IdAllocResponse *m = baton__v1__id_alloc_response__unpack(NULL, n, d);
        if (!m)
            return;
        if (m->count != c->count || m->first == 0) {
            fail("AllocIds answer %" PRIu64 "+%u for count %u", m->first, m->count, c->count);
            L.violations++;
        }
        range_add(&L.ids, &L.ids_len, &L.ids_cap, m->first, m->count);
        baton__v1__id_alloc_response__free_unpacked(m, NULL);
        return;
    }
    Baton__V1__TsoResponse *m = baton__v1__tso_response__unpack(NULL, n, d);
    if (!m)
        return;
    uint64_t last = m->first + m->count - 1;
    if (m->count != c->count || m->first <= c->floor || m->first <= c->last) {
        if (L.violations < 20)
            fail("client %d: range %" PRIu64 "+%u (count %u) not above %" PRIu64
                 " (seen by all before the request) / %" PRIu64 " (its own last)",
                 c->id, m->first, m->count, c->count, c->floor, c->last);
        L.violations++;
    }
    c->last = last > c->last ? last : c->last;
    if (last > L.max_seen)
        L.max_seen = last;
    range_add(&L.ts, &L.ts_len, &L.ts_cap, m->first, m->count);
    baton__v1__tso_response__free_unpacked(m, NULL);
}

static void l_on_close(struct rpc_client_call *call, int code, const char *msg, void *arg)
{
    (void)call;
    (void)msg;
    struct lclient *c = arg;
    c->busy = false;
    L.codes[code >= 0 && code <= 16 ? code : 2]++;
    if (code == GRPC_OK) {
        c->oks++;
        L.oks++;
        if (!c->ids) {
            L.ts_oks_by_ep[c->ep]++;
            L.last_ep = c->ep + 1;
        }
        if (c->roam)
            c->ep = (c->ep + 1) % c->x->neps;
        return;
    }
    /* Any error: the next endpoint, after a pause. */
    c->errors++;
    L.errors++;
    c->ep = (c->ep + 1) % c->x->neps;
    c->retry_at_us = now_us() + 50000;
}

static const struct rpc_client_callbacks l_cbs = {l_on_message, l_on_close, NULL};

static void l_issue(struct lclient *c)
{
    struct rpc_client *cl = conn(c->x, c->ep);
    int rc = -1;
    c->floor = L.max_seen;
    if (cl && c->ids) {
        Baton__V1__IdAllocRequest q = BATON__V1__ID_ALLOC_REQUEST__INIT;
        q.count = c->count = 1 + prng_below(&L.prng, 5000);
        rc = rpc_client_unary(cl, "/baton.v1.Tso/AllocIds", &q.base, 3000, &l_cbs, c, &unused_call);
    } else if (cl) {
        Baton__V1__TsoRequest q = BATON__V1__TSO_REQUEST__INIT;
        q.count = c->count = 1 + prng_below(&L.prng, 100);
        rc = rpc_client_unary(cl, "/baton.v1.Tso/GetTimestamp", &q.base, 3000, &l_cbs, c,
                              &unused_call);
    }
    if (rc == 0) {
        c->busy = true;
    } else {
        c->ep = (c->ep + 1) % c->x->neps;
        c->retry_at_us = now_us() + 50000;
    }
}

static int eps_n;
static int c_eps(void)
{
    return eps_n;
}

static bool l_loop(void *arg)
{
    (void)arg;
    uint64_t now = now_us();
    if (now - L.last_progress_write > 200000) {
        L.last_progress_write = now;
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", L.progress_file);
        FILE *f = fopen(tmp, "w");
        if (f) {
            /* "total ts-answers-from-endpoint-1 ... -n last-answering-endpoint" */
            fprintf(f, "%" PRIu64, L.oks);
            for (int i = 0; i < c_eps(); i++)
                fprintf(f, " %" PRIu64, L.ts_oks_by_ep[i]);
            fprintf(f, " %d\n", L.last_ep);
            fclose(f);
            rename(tmp, L.progress_file); /* the reader never sees a half-written file */
        }
        if (access(L.stop_file, F_OK) == 0 || now > L.deadline_us)
            L.stop = true;
    }
    bool any_busy = false;
    for (int i = 0; i < L.n; i++) {
        struct lclient *c = &L.c[i];
        if (!c->busy && !L.stop && now >= c->retry_at_us)
            l_issue(c);
        any_busy |= c->busy;
    }
    return L.stop && !any_busy;
}

static int cmp_range(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Sorted, every range must end before the next begins. */
static uint64_t overlaps(struct range *v, size_t n)
{
    if (n < 2)
        return 0;
    qsort(v, n, sizeof(*v), cmp_range);
    uint64_t bad = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i].first < v[i - 1].first + v[i - 1].count)
            bad++;
    return bad;
}

static int mode_linear(struct ctx *x, int clients, const char *stop, const char *progress,
                       int max_secs)
{
    L.n = clients + 1 > CLIENTS_MAX ? CLIENTS_MAX : clients + 1;
    L.stop_file = stop;
    eps_n = x->neps;
    L.progress_file = progress;
    L.deadline_us = now_us() + (uint64_t)max_secs * 1000000u;
    prng_seed(&L.prng, 42);
    for (int i = 0; i < L.n; i++) {
        L.c[i] = (struct lclient){
            .x = x, .id = i, .ep = i % x->neps, .ids = i == L.n - 1, .roam = i < 2};
    }
    /* The loop polls l_loop after every iteration and at least every 10 ms. */
    while (!l_loop(NULL))
        net_loop_run_until(x->loop, l_loop, NULL, 1000);
    uint64_t ts_bad = overlaps(L.ts, L.ts_len), ids_bad = overlaps(L.ids, L.ids_len);
    printf("linear: %" PRIu64 " answers, %" PRIu64 " errors (UNAVAILABLE %" PRIu64
           ", DEADLINE %" PRIu64 ", other %" PRIu64 "), %zu timestamp ranges, %zu id ranges\n",
           L.oks, L.errors, L.codes[GRPC_UNAVAILABLE], L.codes[GRPC_DEADLINE_EXCEEDED],
           L.errors - L.codes[GRPC_UNAVAILABLE] - L.codes[GRPC_DEADLINE_EXCEEDED], L.ts_len,
           L.ids_len);
    if (L.violations == 0)
        ok("linear: every timestamp range above everything received before its request");
    else
        fail("linear: %" PRIu64 " order violations", L.violations);
    if (ts_bad == 0 && ids_bad == 0)
        ok("linear: no timestamp or id handed out twice");
    else
        fail("linear: %" PRIu64 " overlapping timestamp ranges, %" PRIu64 " overlapping id ranges",
             ts_bad, ids_bad);
    if (L.ts_len > 0 && L.ids_len > 0)
        ok("linear: timestamps and ids were served");
    else
        fail("linear: nothing served");
    free(L.ts);
    free(L.ids);
    return 0;
}

/* ---- bench ------------------------------------------------------------------------------------
 */

struct bslot {
    struct ctx *x;
    int conn;
    uint64_t t0;
    bool busy;
};

static struct {
    uint64_t hist[LAT_BUCKETS];
    uint64_t reqs, stamps, errors;
    bool stop, recording;
    uint32_t count;
    struct net_client *nc[64];
    int conns;
} B;

static void b_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *arg)
{
    (void)call;
    (void)d;
    (void)n;
    (void)arg;
}

static void b_issue(struct bslot *s);

static void b_on_close(struct rpc_client_call *call, int code, const char *msg, void *arg)
{
    (void)call;
    (void)msg;
    struct bslot *s = arg;
    s->busy = false;
    if (B.recording) {
        if (code == 0) {
            uint64_t us = now_us() - s->t0;
            B.hist[us / 100 < LAT_BUCKETS ? us / 100 : LAT_BUCKETS - 1]++;
            B.reqs++;
            B.stamps += B.count;
        } else {
            B.errors++;
        }
    }
    if (!B.stop)
        b_issue(s);
}

static const struct rpc_client_callbacks b_cbs = {b_on_message, b_on_close, NULL};

static void b_issue(struct bslot *s)
{
    Baton__V1__TsoRequest q = BATON__V1__TSO_REQUEST__INIT;
    q.count = B.count;
    s->t0 = now_us();
    if (!B.nc[s->conn])
        return;
    if (rpc_client_unary(net_client_rpc(B.nc[s->conn]), "/baton.v1.Tso/GetTimestamp", &q.base,
                         TIMEOUT_MS, &b_cbs, s, &unused_call) == 0)
        s->busy = true;
}

static uint64_t b_until;
static bool b_time(void *arg)
{
    (void)arg;
    return now_us() >= b_until;
}

static double pct(double p)
{
    uint64_t total = 0, acc = 0;
    for (int i = 0; i < LAT_BUCKETS; i++)
        total += B.hist[i];
    for (int i = 0; i < LAT_BUCKETS; i++) {
        acc += B.hist[i];
        if (acc >= (uint64_t)(p * (double)total))
            return (i + 1) * 0.1;
    }
    return 0;
}

static int mode_bench(struct ctx *x, int conns, int inflight, uint32_t count, int secs)
{
    B.count = count;
    B.conns = conns > 64 ? 64 : conns;
    for (int i = 0; i < B.conns; i++) {
        struct rpc_client_config cc;
        rpc_client_config_default(&cc);
        if (net_connect_rpc(x->loop, x->eps[0], &cc, on_conn_state, &B.nc[i], &B.nc[i]) != 0) {
            fail("bench: cannot connect");
            return 1;
        }
    }
    int n = B.conns * inflight;
    struct bslot *slots = calloc((size_t)n, sizeof(*slots));
    for (int i = 0; i < n; i++) {
        slots[i] = (struct bslot){.x = x, .conn = i % B.conns};
        b_issue(&slots[i]);
    }
    b_until = now_us() + 1000000; /* warm-up */
    net_loop_run_until(x->loop, b_time, NULL, 5000);
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    B.recording = true;
    uint64_t t0 = now_us();
    b_until = t0 + (uint64_t)secs * 1000000u;
    net_loop_run_until(x->loop, b_time, NULL, (uint32_t)secs * 1000 + 5000);
    B.recording = false;
    double el = (double)(now_us() - t0) / 1e6;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    B.stop = true;
    double cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
    printf("bench: %d conns x %d in flight, count %u, %.1f s: %.0f requests/s, %.0f "
           "timestamps/s, p50 %.1f ms, p99 %.1f ms, errors %" PRIu64 ", client CPU %.2f cores\n",
           B.conns, inflight, count, el, (double)B.reqs / el, (double)B.stamps / el, pct(0.5),
           pct(0.99), B.errors, cpu / el);
    bool any = false;
    for (int i = 0; i < n; i++)
        any |= slots[i].busy;
    if (any) {
        b_until = now_us() + 2000000;
        net_loop_run_until(x->loop, b_time, NULL, 3000);
    }
    free(slots);
    if (B.reqs > 0)
        ok("bench ran");
    else
        fail("bench: no answers");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3) {
        fprintf(stderr, "usage: cm_tso_client checks|race|linear|bench ENDPOINTS ...\n");
        return 2;
    }
    struct ctx x = {0};
    if (parse_eps(&x, argv[2]) || net_loop_create(NULL, &x.loop)) {
        fprintf(stderr, "bad endpoints\n");
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "checks") == 0)
        mode_checks(&x);
    else if (strcmp(mode, "race") == 0 && argc >= 4)
        mode_race(&x, atoi(argv[3]));
    else if (strcmp(mode, "linear") == 0 && argc >= 7)
        mode_linear(&x, atoi(argv[3]), argv[4], argv[5], atoi(argv[6]));
    else if (strcmp(mode, "bench") == 0 && argc >= 7)
        mode_bench(&x, atoi(argv[3]), atoi(argv[4]), (uint32_t)atoi(argv[5]), atoi(argv[6]));
    else {
        fprintf(stderr, "unknown mode or missing arguments\n");
        return 2;
    }
    for (int i = 0; i < x.neps; i++)
        if (x.nc[i])
            net_client_close(x.nc[i]);
    for (int i = 0; i < B.conns; i++)
        if (B.nc[i])
            net_client_close(B.nc[i]);
    b_until = now_us() + 200000;
    net_loop_run_until(x.loop, b_time, NULL, 1000);
    net_loop_destroy(x.loop);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
