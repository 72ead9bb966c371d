/*
 * baton.v1.Config: the cluster configuration (a JSON object at /baton/config whose version is
 * the key's etcd version), its watch, and the cluster version (the minimum over members and
 * registered nodes, finalized at /baton/version/finalized).
 *
 * Reads are linearizable (a ReadIndex barrier, then the local store). Writes are Txn proposals
 * with compares, so two writers racing on the same version cannot both win. Each member
 * publishes its own software version at /baton/members/<id as 16 hex digits>/version (the
 * member table's REQ_MEMBER_ATTR has no field for it), from the tick until the store holds it.
 */
#include "rpc/svc.h"
#include "cluster/cluster_tso.h"

#include <baton.pb-c.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CONFIG_KEY       "/baton/config"
#define FINALIZED_KEY    "/baton/version/finalized"
#define MEMBERS_PREFIX   "/baton/members/"
#define NODES_PREFIX     "/baton/nodes/"
#define NODES_END        "/baton/nodes0" /* '/' + 1 */
#define PUBLISH_EVERY_MS 1000
#define ERR_TEXT_MAX     320

static struct mvcc_bytes cbytes(const char *s)
{
    return (struct mvcc_bytes){(const uint8_t *)s, strlen(s)};
}

static uint64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* A unary call waiting for a barrier or a proposal. */
struct ccall {
    struct services *sv;
    struct rpc_call *call;
    struct server_call *pending;
    const ProtobufCMessage *req;
    int attempts;
    /* Finalize: the write waits for the tick (no proposal may start inside the server's
     * callbacks), on the list cfg_svc.finalizing. */
    struct ccall *next;
    bool queued;
    bool fin_present; /* the finalized key existed when read; its mod revision: */
    int64_t fin_mod;
};

struct cwatch;
struct cfg_svc {
    struct cwatch *watches;
    struct ccall *finalizing;
    struct server_call *publish;
    struct arena publish_arena;
    uint64_t publish_next_ms;
    /* Versions are published only once the cluster uses baton's services: a cluster that
     * serves etcd clients only must show them exactly etcd's revisions. */
    bool publish_wanted;
};

static struct ccall *ccall_new(struct services *sv, struct rpc_call *call,
                               const ProtobufCMessage *req)
{
    struct ccall *c = arena_alloc(rpc_call_arena(call), sizeof(*c));
    if (c) {
        *c = (struct ccall){.sv = sv, .call = call, .req = req};
        rpc_call_set_user(call, c);
    }
    return c;
}

static void ccall_on_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct ccall *c = rpc_call_user(call);
    if (c && c->pending)
        server_call_cancel(c->pending);
    if (c && c->queued) {
        struct ccall **pp = &c->sv->cfg_svc->finalizing;
        while (*pp && *pp != c)
            pp = &(*pp)->next;
        if (*pp)
            *pp = c->next;
    }
}

/* Ends the call with an error from the server or the store (etcd's texts). */
static void ccall_fail(struct ccall *c, int err)
{
    rpc_call_set_user(c->call, NULL);
    svc_finish_err(c->call, err);
}

static void ccall_finish(struct ccall *c, int code, const char *msg)
{
    rpc_call_set_user(c->call, NULL);
    rpc_call_finish(c->call, code, msg);
}

static void ccall_send(struct ccall *c, const ProtobufCMessage *m)
{
    rpc_call_set_user(c->call, NULL);
    int rc = rpc_call_send(c->call, m);
    if (rc)
        rpc_call_finish_err(c->call, rc);
    else
        rpc_call_finish(c->call, GRPC_OK, NULL);
}

static int ccall_barrier(struct ccall *c, server_done_fn done)
{
    c->pending = NULL;
    int rc = server_read_barrier(c->sv->s, done, c, &c->pending);
    if (rc)
        ccall_fail(c, rc);
    return rc;
}

static int ccall_propose(struct ccall *c, struct request *q, server_done_fn done)
{
    c->pending = NULL;
    int rc = server_propose(c->sv->s, q, rpc_call_arena(c->call), done, c, &c->pending);
    if (rc)
        ccall_fail(c, rc);
    return rc;
}

/* Reads one key at rev (0: current) into the arena. *kv NULL when absent. */
static int read_key(struct services *sv, struct arena *a, const char *key, int64_t rev,
                    struct mvcc_kv **kv, int64_t *header_rev)
{
    struct mvcc_range_req q = {.key = cbytes(key), .revision = rev};
    struct mvcc_range_resp r;
    int rc = mvcc_range(server_store(sv->s), &q, a, &r);
    if (rc)
        return rc;
    *kv = r.kvs_len ? &r.kvs[0] : NULL;
    if (header_rev)
        *header_rev = r.header_revision;
    return 0;
}

static char *arena_strndup(struct arena *a, const uint8_t *p, size_t len)
{
    char *s = arena_alloc(a, len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = 0;
    }
    return s;
}

/* ---- Get ----------------------------------------------------------------------------------------
 */

static void get_read(void *ctx, int err, const struct server_result *res)
{
    (void)res;
    struct ccall *c = ctx;
    c->pending = NULL;
    if (err) {
        ccall_fail(c, err);
        return;
    }
    const Baton__V1__ConfigGetRequest *p = (const Baton__V1__ConfigGetRequest *)c->req;
    struct arena *a = rpc_call_arena(c->call);
    struct mvcc_kv *kv;
    int64_t hrev;
    int rc = read_key(c->sv, a, CONFIG_KEY, p->revision, &kv, &hrev);
    if (rc) {
        ccall_fail(c, rc);
        return;
    }
    Baton__V1__ConfigGetResponse m = BATON__V1__CONFIG_GET_RESPONSE__INIT;
    m.header = svc_header(c->sv, a, hrev);
    m.json = kv ? arena_strndup(a, kv->value.p, kv->value.len) : "";
    if (kv) {
        m.version = kv->version;
        m.mod_revision = kv->mod_revision;
    }
    if (!m.header || !m.json) {
        ccall_fail(c, BATON_ENOMEM);
        return;
    }
    ccall_send(c, &m.base);
}

static void on_get(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Baton__V1__ConfigGetRequest *p = (const Baton__V1__ConfigGetRequest *)msg;
    if (p->revision < 0) {
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT, "baton: revision must not be negative");
        return;
    }
    struct ccall *c = ccall_new(ctx, call, msg);
    if (!c) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    ccall_barrier(c, get_read);
}

/* ---- Set ----------------------------------------------------------------------------------------
 */

static void set_done(void *ctx, int err, const struct server_result *res)
{
    struct ccall *c = ctx;
    c->pending = NULL;
    if (err) {
        ccall_fail(c, err);
        return;
    }
    const Baton__V1__ConfigSetRequest *p = (const Baton__V1__ConfigSetRequest *)c->req;
    const struct mvcc_txn_resp *t = &res->u.txn;
    /* Success: [put, range]; failure: [range]. The range shows the key after the txn. */
    const struct mvcc_op_resp *last = t->responses_len ? &t->responses[t->responses_len - 1] : NULL;
    const struct mvcc_kv *kv =
        last && last->type == MVCC_OP_RANGE && last->u.range.kvs_len ? &last->u.range.kvs[0] : NULL;
    if (!t->succeeded) {
        char text[ERR_TEXT_MAX];
        snprintf(text, sizeof(text),
                 "baton: config version mismatch: expected %" PRId64 ", current %" PRId64,
                 p->expected_version, kv ? kv->version : 0);
        ccall_finish(c, GRPC_FAILED_PRECONDITION, text);
        return;
    }
    struct arena *a = rpc_call_arena(c->call);
    Baton__V1__ConfigSetResponse m = BATON__V1__CONFIG_SET_RESPONSE__INIT;
    m.header = svc_header(c->sv, a, res->revision);
    if (!m.header) {
        ccall_fail(c, BATON_ENOMEM);
        return;
    }
    m.version = kv ? kv->version : 0;
    m.mod_revision = kv ? kv->mod_revision : res->revision;
    ccall_send(c, &m.base);
}

static void on_set(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Baton__V1__ConfigSetRequest *p = (const Baton__V1__ConfigSetRequest *)msg;
    char err[200], text[ERR_TEXT_MAX];
    size_t len = strlen(p->json);
    int rc = config_json_validate(p->json, len, true, err, sizeof(err));
    if (rc == BATON_ETOOBIG) {
        snprintf(text, sizeof(text), "baton: config too large: %s", err);
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT, text);
        return;
    }
    if (rc) {
        snprintf(text, sizeof(text), "baton: invalid config JSON: %s", err);
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT, text);
        return;
    }
    if (p->expected_version < 0 && !p->force) {
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT,
                        "baton: expected_version must not be negative");
        return;
    }
    struct ccall *c = ccall_new(ctx, call, msg);
    struct arena *a = rpc_call_arena(call);
    struct mvcc_compare *cmp = arena_alloc(a, sizeof(*cmp));
    struct mvcc_op *ok = arena_alloc(a, 2 * sizeof(*ok));
    struct mvcc_op *fail = arena_alloc(a, sizeof(*fail));
    if (!c || !cmp || !ok || !fail) {
        rpc_call_set_user(call, NULL);
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    struct mvcc_bytes key = cbytes(CONFIG_KEY);
    *cmp = (struct mvcc_compare){.result = MVCC_CMP_EQUAL,
                                 .target = MVCC_CMP_VERSION,
                                 .key = key,
                                 .number = p->expected_version};
    ok[0] = (struct mvcc_op){.type = MVCC_OP_PUT};
    ok[0].u.put = (struct mvcc_put_req){.key = key, .value = {(const uint8_t *)p->json, len}};
    ok[1] = (struct mvcc_op){.type = MVCC_OP_RANGE};
    ok[1].u.range = (struct mvcc_range_req){.key = key};
    fail[0] = ok[1];
    struct request q = {.type = REQ_TXN};
    q.u.txn = (struct mvcc_txn_req){cmp, p->force ? 0 : 1, ok, 2, fail, 1};
    ccall_propose(c, &q, set_done);
}

/* ---- Cluster version ----------------------------------------------------------------------------
 */

struct version_view {
    char cluster[CLUSTER_VERSION_TEXT_MAX]; /* "" when unknown */
    char finalized[CLUSTER_VERSION_TEXT_MAX];
    char **member_versions; /* "<id hex>=<version or unknown>" */
    size_t members_len;
    char unknown_why[160]; /* why the cluster version is unknown */
    struct mvcc_kv *finalized_kv;
};

/* Collects the versions of every member and every registered node from the local store. */
static int version_collect(struct services *sv, struct arena *a, struct version_view *v)
{
    memset(v, 0, sizeof(*v));
    int n = 0;
    const struct server_member *mem = server_members(sv->s, &n);
    size_t cap = (size_t)n + 1;
    const char **texts = arena_alloc(a, cap * sizeof(*texts));
    size_t *lens = arena_alloc(a, cap * sizeof(*lens));
    v->member_versions = arena_alloc(a, cap * sizeof(*v->member_versions));
    if (!texts || !lens || !v->member_versions)
        return BATON_ENOMEM;
    size_t nt = 0;
    bool unknown = false;
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof(key), MEMBERS_PREFIX "%016" PRIx64 "/version", mem[i].id);
        struct mvcc_kv *kv;
        int rc = read_key(sv, a, key, 0, &kv, NULL);
        if (rc)
            return rc;
        const char *ver = kv ? arena_strndup(a, kv->value.p, kv->value.len) : NULL;
        if (kv && !ver)
            return BATON_ENOMEM;
        char line[64 + CLUSTER_VERSION_TEXT_MAX];
        snprintf(line, sizeof(line), "%016" PRIx64 "=%.*s", mem[i].id, CLUSTER_VERSION_TEXT_MAX,
                 ver ? ver : "unknown");
        if (!(v->member_versions[v->members_len++] =
                  arena_strndup(a, (uint8_t *)line, strlen(line))))
            return BATON_ENOMEM;
        if (!ver) {
            if (!unknown)
                snprintf(v->unknown_why, sizeof(v->unknown_why),
                         "member %016" PRIx64 " has not published its version", mem[i].id);
            unknown = true;
            continue;
        }
        texts[nt] = ver;
        lens[nt++] = strlen(ver);
    }
    /* Nodes: "/baton/nodes/<16 hex>" holds a Node; longer keys below it are other records. */
    struct mvcc_range_req q = {.key = cbytes(NODES_PREFIX), .range_end = cbytes(NODES_END)};
    struct mvcc_range_resp r;
    int rc = mvcc_range(server_store(sv->s), &q, a, &r);
    if (rc)
        return rc;
    const char **all = arena_alloc(a, (nt + r.kvs_len + 1) * sizeof(*all));
    size_t *all_lens = arena_alloc(a, (nt + r.kvs_len + 1) * sizeof(*all_lens));
    if (!all || !all_lens)
        return BATON_ENOMEM;
    memcpy(all, texts, nt * sizeof(*all));
    memcpy(all_lens, lens, nt * sizeof(*all_lens));
    for (size_t i = 0; i < r.kvs_len; i++) {
        if (r.kvs[i].key.len != strlen(NODES_PREFIX) + 16)
            continue;
        const Baton__V1__Node *node = (const Baton__V1__Node *)rpc_unpack(
            &baton__v1__node__descriptor, a, r.kvs[i].value.p, r.kvs[i].value.len);
        if (!node || node->state == BATON__V1__NODE_STATE__NODE_REMOVED ||
            node->state == BATON__V1__NODE_STATE__NODE_DECOMMISSIONED || !node->version[0])
            continue;
        all[nt] = node->version;
        all_lens[nt++] = strlen(node->version);
    }
    struct cluster_version cv;
    if (!unknown && cluster_version_min(all, all_lens, nt, &cv, NULL) == 0)
        cluster_version_format(&cv, v->cluster, sizeof(v->cluster));
    else if (!unknown)
        snprintf(v->unknown_why, sizeof(v->unknown_why), "no member published a version");
    rc = read_key(sv, a, FINALIZED_KEY, 0, &v->finalized_kv, NULL);
    if (rc)
        return rc;
    if (v->finalized_kv)
        snprintf(v->finalized, sizeof(v->finalized), "%.*s",
                 (int)BATON_MIN(v->finalized_kv->value.len, sizeof(v->finalized) - 1),
                 (const char *)v->finalized_kv->value.p);
    return 0;
}

static void version_read(void *ctx, int err, const struct server_result *res)
{
    (void)res;
    struct ccall *c = ctx;
    c->pending = NULL;
    if (err) {
        ccall_fail(c, err);
        return;
    }
    struct arena *a = rpc_call_arena(c->call);
    struct version_view v;
    int rc = version_collect(c->sv, a, &v);
    Baton__V1__ClusterVersionResponse m = BATON__V1__CLUSTER_VERSION_RESPONSE__INIT;
    m.header = svc_header(c->sv, a, 0);
    if (!rc && !m.header)
        rc = BATON_ENOMEM;
    if (rc) {
        ccall_fail(c, rc);
        return;
    }
    m.cluster_version = v.cluster;
    m.finalized_version = v.finalized;
    m.member_versions = v.member_versions;
    m.n_member_versions = v.members_len;
    ccall_send(c, &m.base);
}

static void on_cluster_version(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    ((struct services *)ctx)->cfg_svc->publish_wanted = true;
    struct ccall *c = ccall_new(ctx, call, msg);
    if (!c) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    ccall_barrier(c, version_read);
}

static void finalize_read(void *ctx, int err, const struct server_result *res);

static void finalize_done(void *ctx, int err, const struct server_result *res)
{
    struct ccall *c = ctx;
    c->pending = NULL;
    if (err) {
        ccall_fail(c, err);
        return;
    }
    if (!res->u.txn.succeeded) {
        /* The finalized version moved between our read and the write: look again (bounded). */
        if (++c->attempts < 3) {
            ccall_barrier(c, finalize_read);
            return;
        }
        ccall_finish(c, GRPC_ABORTED, "baton: the finalized version changed concurrently");
        return;
    }
    const Baton__V1__FinalizeRequest *p = (const Baton__V1__FinalizeRequest *)c->req;
    Baton__V1__FinalizeResponse m = BATON__V1__FINALIZE_RESPONSE__INIT;
    m.header = svc_header(c->sv, rpc_call_arena(c->call), res->revision);
    m.finalized_version = p->version;
    if (!m.header) {
        ccall_fail(c, BATON_ENOMEM);
        return;
    }
    ccall_send(c, &m.base);
}

static void finalize_read(void *ctx, int err, const struct server_result *res)
{
    (void)res;
    struct ccall *c = ctx;
    c->pending = NULL;
    if (err) {
        ccall_fail(c, err);
        return;
    }
    const Baton__V1__FinalizeRequest *p = (const Baton__V1__FinalizeRequest *)c->req;
    struct arena *a = rpc_call_arena(c->call);
    struct version_view v;
    int rc = version_collect(c->sv, a, &v);
    if (rc) {
        ccall_fail(c, rc);
        return;
    }
    char text[ERR_TEXT_MAX];
    if (!v.cluster[0]) {
        snprintf(text, sizeof(text),
                 "baton: cannot finalize %s: the cluster version is unknown (%s)", p->version,
                 v.unknown_why);
        ccall_finish(c, GRPC_FAILED_PRECONDITION, text);
        return;
    }
    if (strcmp(v.cluster, p->version) != 0) {
        snprintf(text, sizeof(text), "baton: cannot finalize %s: the cluster version is %s",
                 p->version, v.cluster);
        ccall_finish(c, GRPC_FAILED_PRECONDITION, text);
        return;
    }
    struct cluster_version want, have;
    cluster_version_parse(p->version, strlen(p->version), &want);
    bool have_ok =
        v.finalized_kv && cluster_version_parse(v.finalized, strlen(v.finalized), &have) == 0;
    if (have_ok && cluster_version_cmp(&want, &have) < 0) {
        snprintf(text, sizeof(text),
                 "baton: cannot finalize %s: %s is finalized already and the finalized version "
                 "never moves backwards",
                 p->version, v.finalized);
        ccall_finish(c, GRPC_FAILED_PRECONDITION, text);
        return;
    }
    c->fin_present = v.finalized_kv != NULL;
    c->fin_mod = v.finalized_kv ? v.finalized_kv->mod_revision : 0;
    c->queued = true;
    c->next = c->sv->cfg_svc->finalizing;
    c->sv->cfg_svc->finalizing = c;
}

/* From the tick: the write, with a compare on what was read, so that a concurrent Finalize is
 * never undone. */
static void finalize_write(struct ccall *c)
{
    const Baton__V1__FinalizeRequest *p = (const Baton__V1__FinalizeRequest *)c->req;
    struct arena *a = rpc_call_arena(c->call);
    struct mvcc_compare *cmp = arena_alloc(a, sizeof(*cmp));
    struct mvcc_op *ok = arena_alloc(a, sizeof(*ok));
    if (!cmp || !ok) {
        ccall_fail(c, BATON_ENOMEM);
        return;
    }
    struct mvcc_bytes key = cbytes(FINALIZED_KEY);
    *cmp = (struct mvcc_compare){.key = key};
    if (c->fin_present) {
        cmp->target = MVCC_CMP_MOD;
        cmp->number = c->fin_mod;
    } else {
        cmp->target = MVCC_CMP_VERSION;
        cmp->number = 0;
    }
    *ok = (struct mvcc_op){.type = MVCC_OP_PUT};
    ok->u.put = (struct mvcc_put_req){.key = key, .value = cbytes(p->version)};
    struct request q = {.type = REQ_TXN};
    q.u.txn = (struct mvcc_txn_req){cmp, 1, ok, 1, NULL, 0};
    ccall_propose(c, &q, finalize_done);
}

static void on_finalize(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Baton__V1__FinalizeRequest *p = (const Baton__V1__FinalizeRequest *)msg;
    struct cluster_version v;
    if (cluster_version_parse(p->version, strlen(p->version), &v)) {
        char text[ERR_TEXT_MAX];
        snprintf(text, sizeof(text), "baton: invalid version \"%.64s\": want major.minor.patch",
                 p->version);
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT, text);
        return;
    }
    ((struct services *)ctx)->cfg_svc->publish_wanted = true;
    struct ccall *c = ccall_new(ctx, call, msg);
    if (!c) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    ccall_barrier(c, finalize_read);
}

/* ---- Watch --------------------------------------------------------------------------------------
 */

/* A Watch call: a barrier (when the current configuration goes first), then a hub watcher. */
struct cwatch {
    struct services *sv;
    struct rpc_call *call; /* NULL once ended */
    struct cwatch *prev, *next;
    struct server_call *pending;
    int64_t hub_id; /* 0: none */
    int64_t last_sent_rev;
    bool compacted; /* the hub cancelled the watcher: end the call at the next tick */
    int64_t compact_rev;
};

static void cwatch_unlink(struct cwatch *w)
{
    struct cfg_svc *cs = w->sv->cfg_svc;
    if (w->prev)
        w->prev->next = w->next;
    else if (cs->watches == w)
        cs->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

static void cwatch_free(struct cwatch *w)
{
    if (w->pending)
        server_call_cancel(w->pending);
    if (w->hub_id)
        mvcc_watch_cancel(server_store(w->sv->s), w->hub_id);
    cwatch_unlink(w);
    free(w);
}

static void cwatch_end(struct cwatch *w, int code, const char *msg)
{
    struct rpc_call *call = w->call;
    w->call = NULL;
    rpc_call_set_user(call, NULL);
    cwatch_free(w);
    rpc_call_finish(call, code, msg);
}

static int cwatch_send(struct cwatch *w, const uint8_t *value, size_t len, int64_t version,
                       int64_t mod_rev, int64_t header_rev)
{
    char *json = malloc(len + 1);
    if (!json)
        return BATON_ENOMEM;
    if (len)
        memcpy(json, value, len);
    json[len] = 0;
    Etcdserverpb__ResponseHeader h;
    svc_header_fill(w->sv, &h, header_rev);
    Baton__V1__ConfigWatchResponse m = BATON__V1__CONFIG_WATCH_RESPONSE__INIT;
    m.header = &h;
    m.json = json;
    m.version = version;
    m.mod_revision = mod_rev;
    int rc = rpc_call_send(w->call, &m.base);
    free(json);
    if (!rc && mod_rev > w->last_sent_rev)
        w->last_sent_rev = mod_rev;
    return rc;
}

/* The hub's callback: one response per change, in revision order. It must not call into the
 * store; a compaction ends the call from the next tick. */
static int cwatch_on_hub(void *ctx, const struct mvcc_watch_batch *b)
{
    struct cwatch *w = ctx;
    if (!w->call)
        return 0;
    if (b->compact_revision) {
        w->compacted = true;
        w->compact_rev = b->compact_revision;
        w->hub_id = 0; /* the hub drops it after this call */
        return 0;
    }
    for (size_t i = 0; i < b->events_len; i++) {
        const struct mvcc_event *e = &b->events[i];
        Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, e->kv_len, e->kv);
        if (!kv)
            continue;
        int rc = 0;
        /* Events re-read after a refused delivery start again at the batch's first one. */
        if (kv->mod_revision > w->last_sent_rev) {
            if (e->type == MVCC_EVENT_PUT)
                rc = cwatch_send(w, kv->value.data, kv->value.len, kv->version, kv->mod_revision,
                                 b->header_revision);
            else
                rc = cwatch_send(w, NULL, 0, 0, kv->mod_revision, b->header_revision);
        }
        mvccpb__key_value__free_unpacked(kv, NULL);
        if (rc)
            return BATON_EBUSY; /* re-read from the store by mvcc_watch_step */
    }
    return 0;
}

static int cwatch_start_hub(struct cwatch *w, int64_t start_rev)
{
    struct mvcc_watch_req q = {.key = cbytes(CONFIG_KEY), .start_revision = start_rev};
    int64_t compact = 0;
    return mvcc_watch_create(server_store(w->sv->s), &q, cwatch_on_hub, w, &w->hub_id, &compact);
}

/* After the barrier: the current configuration, then the changes after it. */
static void cwatch_first(void *ctx, int err, const struct server_result *res)
{
    (void)res;
    struct cwatch *w = ctx;
    w->pending = NULL;
    if (err) {
        struct rpc_status s = rpc_status_from_err(err);
        cwatch_end(w, s.code, s.message);
        return;
    }
    struct arena a;
    arena_init(&a, 4096);
    struct mvcc_kv *kv;
    int64_t hrev = 0;
    int rc = read_key(w->sv, &a, CONFIG_KEY, 0, &kv, &hrev);
    if (!rc)
        rc = kv ? cwatch_send(w, kv->value.p, kv->value.len, kv->version, kv->mod_revision, hrev)
                : cwatch_send(w, NULL, 0, 0, 0, hrev);
    arena_free(&a);
    if (!rc)
        rc = cwatch_start_hub(w, hrev + 1);
    if (rc) {
        struct rpc_status s = rpc_status_from_err(rc);
        cwatch_end(w, s.code, s.message);
    }
}

static void on_watch(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const Baton__V1__ConfigWatchRequest *p = (const Baton__V1__ConfigWatchRequest *)msg;
    struct cwatch *w = calloc(1, sizeof(*w));
    if (!w) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    w->sv = sv;
    w->call = call;
    w->next = sv->cfg_svc->watches;
    if (w->next)
        w->next->prev = w;
    sv->cfg_svc->watches = w;
    rpc_call_set_user(call, w);
    int rc;
    if (p->start_revision > 0) {
        rc = cwatch_start_hub(w, p->start_revision);
    } else {
        rc = server_read_barrier(sv->s, cwatch_first, w, &w->pending);
        if (rc)
            w->pending = NULL;
    }
    if (rc) {
        struct rpc_status s = rpc_status_from_err(rc);
        cwatch_end(w, s.code, s.message);
    }
}

static void watch_on_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct cwatch *w = rpc_call_user(call);
    if (w) {
        w->call = NULL;
        cwatch_free(w);
    }
}

/* ---- Tick: compacted watchers end, this member's version is published ------------------------ */

static void publish_done(void *ctx, int err, const struct server_result *res)
{
    (void)err;
    (void)res;
    struct cfg_svc *cs = ctx;
    cs->publish = NULL;
    arena_reset(&cs->publish_arena);
}

static void publish_version(struct services *sv)
{
    struct cfg_svc *cs = sv->cfg_svc;
    const char *ver = sv->cfg.version;
    uint64_t now = mono_ms();
    if (!ver || !ver[0] || cs->publish || now < cs->publish_next_ms)
        return;
    cs->publish_next_ms = now + PUBLISH_EVERY_MS;
    struct server_header h;
    server_header(sv->s, &h);
    char key[64];
    snprintf(key, sizeof(key), MEMBERS_PREFIX "%016" PRIx64 "/version", h.member_id);
    struct mvcc_kv *kv;
    arena_reset(&cs->publish_arena);
    if (!cs->publish_wanted) {
        /* Anything under /baton/ (a member's version included) means baton is in use. */
        struct mvcc_range_req q = {.key = cbytes("/baton/"),
                                   .range_end = cbytes("/baton0"),
                                   .limit = 1,
                                   .keys_only = true};
        struct mvcc_range_resp r;
        if (mvcc_range(server_store(sv->s), &q, &cs->publish_arena, &r) != 0 || r.kvs_len == 0)
            return;
        cs->publish_wanted = true;
    }
    if (read_key(sv, &cs->publish_arena, key, 0, &kv, NULL) != 0)
        return;
    if (kv && kv->value.len == strlen(ver) && memcmp(kv->value.p, ver, kv->value.len) == 0)
        return;
    arena_reset(&cs->publish_arena);
    struct request q = {.type = REQ_PUT};
    q.u.put = (struct mvcc_put_req){.key = cbytes(key), .value = cbytes(ver)};
    if (server_propose(sv->s, &q, &cs->publish_arena, publish_done, cs, &cs->publish) != 0)
        cs->publish = NULL; /* no leader yet: the next tick tries again */
}

void svc_config_tick(struct services *sv)
{
    struct cfg_svc *cs = sv->cfg_svc;
    if (!cs)
        return;
    struct cwatch *next;
    for (struct cwatch *w = cs->watches; w; w = next) {
        next = w->next;
        if (w->compacted && w->call) {
            char text[ERR_TEXT_MAX];
            snprintf(text, sizeof(text), "%s (compacted at %" PRId64 ")",
                     mvcc_strerror(BATON_ECOMPACTED), w->compact_rev);
            cwatch_end(w, GRPC_OUT_OF_RANGE, text);
        }
    }
    while (cs->finalizing) {
        struct ccall *c = cs->finalizing;
        cs->finalizing = c->next;
        c->queued = false;
        finalize_write(c);
    }
    publish_version(sv);
}

void svc_config_destroy(struct services *sv)
{
    struct cfg_svc *cs = sv->cfg_svc;
    if (!cs)
        return;
    /* Calls still open end later with their connections; only the store links go now. */
    while (cs->watches) {
        struct cwatch *w = cs->watches;
        if (w->pending)
            server_call_cancel(w->pending);
        w->pending = NULL;
        if (w->hub_id)
            mvcc_watch_cancel(server_store(sv->s), w->hub_id);
        w->hub_id = 0;
        cwatch_unlink(w);
        if (w->call)
            cwatch_end(w, GRPC_UNAVAILABLE, "etcdserver: server stopped");
        else
            free(w);
    }
    while (cs->finalizing) {
        struct ccall *c = cs->finalizing;
        cs->finalizing = c->next;
        c->queued = false;
        ccall_finish(c, GRPC_UNAVAILABLE, "etcdserver: server stopped");
    }
    if (cs->publish)
        server_call_cancel(cs->publish);
    arena_free(&cs->publish_arena);
    free(cs);
    sv->cfg_svc = NULL;
}

int svc_config_register(struct services *sv)
{
    struct cfg_svc *cs = calloc(1, sizeof(*cs));
    if (!cs)
        return BATON_ENOMEM;
    arena_init(&cs->publish_arena, 1024);
    sv->cfg_svc = cs;
    const struct rpc_method methods[] = {
        {"/baton.v1.Config/Get", RPC_UNARY, &baton__v1__config_get_request__descriptor, NULL,
         on_get, NULL, NULL, ccall_on_cancel, sv},
        {"/baton.v1.Config/Set", RPC_UNARY, &baton__v1__config_set_request__descriptor, NULL,
         on_set, NULL, NULL, ccall_on_cancel, sv},
        {"/baton.v1.Config/Watch", RPC_SERVER_STREAMING,
         &baton__v1__config_watch_request__descriptor, NULL, on_watch, NULL, NULL, watch_on_cancel,
         sv},
        {"/baton.v1.Config/ClusterVersion", RPC_UNARY,
         &baton__v1__cluster_version_request__descriptor, NULL, on_cluster_version, NULL, NULL,
         ccall_on_cancel, sv},
        {"/baton.v1.Config/Finalize", RPC_UNARY, &baton__v1__finalize_request__descriptor, NULL,
         on_finalize, NULL, NULL, ccall_on_cancel, sv},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(methods); i++) {
        int rc = rpc_server_register(sv->rs, &methods[i]);
        if (rc)
            return rc;
    }
    return 0;
}
