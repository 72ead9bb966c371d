/*
 * libbaton's cluster-manager side (baton.v1): the node agent (registration, heartbeat stream to
 * the leader, epoch changes and commands, fenced writes), timestamps, ids, and the cluster
 * configuration (get, compare-and-set, watch).
 */
#include "internal.h"

#include "baton.pb-c.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct baton_agent {
    struct stream s; /* the Heartbeat stream */
    struct baton_client *c;
    struct baton_agent_config cfg; /* strings below are our copies */
    char address[256];
    char version[32];
    struct baton_label labels[BATON_LABELS_MAX];
    uint64_t id;
    uint64_t epoch; /* read by other threads with __atomic_load_n */
    uint64_t interval_ms;
    uint64_t next_hb_ms;
    bool reregistering, stopped, detached;
    bool stop_pending; /* baton_agent_stop from a callback: freed on the next tick */
    bool draining;     /* DRAIN delivered; the server repeats it on every heartbeat */
    struct arena arena;
    struct baton_agent *next;
};

static void labels_pb(const struct baton_agent *a, Baton__V1__Label *store, Baton__V1__Label **ptrs)
{
    for (size_t i = 0; i < a->cfg.labels_len; i++) {
        baton__v1__label__init(&store[i]);
        store[i].key = (char *)a->labels[i].key;
        store[i].value = (char *)a->labels[i].value;
        ptrs[i] = &store[i];
    }
}

static void register_req(const struct baton_agent *a, Baton__V1__RegisterRequest *r,
                         Baton__V1__Label *store, Baton__V1__Label **ptrs)
{
    baton__v1__register_request__init(r);
    r->id = a->id;
    r->address = (char *)a->address;
    labels_pb(a, store, ptrs);
    r->labels = ptrs;
    r->n_labels = a->cfg.labels_len;
    r->capacity_bytes = a->cfg.capacity_bytes;
    r->version = (char *)a->version;
}

/* Takes id, epoch and interval from a RegisterResponse. */
static int agent_learn(struct baton_agent *a, const Baton__V1__RegisterResponse *r)
{
    if (!r->node || !r->node->id)
        return client_fail(BATONE_SERVER, "register: no node in the answer");
    a->id = r->node->id;
    __atomic_store_n(&a->epoch, r->node->epoch, __ATOMIC_RELEASE);
    uint64_t iv = r->heartbeat_interval_ms > 0 ? (uint64_t)r->heartbeat_interval_ms : 1000;
    a->interval_ms = BATON_MAX(iv, 50u);
    return 0;
}

/* ---- heartbeats --------------------------------------------------------------------------- */

static void agent_send(struct baton_agent *a, uint64_t now)
{
    Baton__V1__NodeStats st = BATON__V1__NODE_STATS__INIT;
    struct baton_node_stats s;
    memset(&s, 0, sizeof(s));
    if (a->cfg.stats)
        a->cfg.stats(a->cfg.ctx, &s);
    st.used_bytes = s.used_bytes;
    st.available_bytes = s.available_bytes;
    st.shard_count = s.shard_count;
    st.leader_count = s.leader_count;
    st.cpu_usage = s.cpu_usage;
    Baton__V1__HeartbeatRequest hb = BATON__V1__HEARTBEAT_REQUEST__INIT;
    hb.node_id = a->id;
    hb.epoch = a->epoch;
    hb.stats = &st;
    if (stream_send(&a->s, &hb.base) == 0)
        a->next_hb_ms = now + a->interval_ms;
}

static void agent_free(struct baton_agent *a)
{
    arena_free(&a->arena);
    if (a->reregistering)
        a->detached = true; /* rereg_done frees it */
    else
        free(a);
}

void agent_tick(struct baton_client *c, uint64_t now)
{
    for (struct baton_agent **pp = &c->agents; *pp;) {
        struct baton_agent *a = *pp;
        if (a->stop_pending) {
            *pp = a->next;
            stream_remove(&a->s);
            agent_free(a);
            continue;
        }
        if (!a->stopped && a->s.open && now >= a->next_hb_ms)
            agent_send(a, now);
        pp = &a->next;
    }
}

static int agent_start(struct stream *s)
{
    struct baton_agent *a = s->owner;
    a->next_hb_ms = 0;
    agent_send(a, client_now_ms());
    return 0;
}

static void agent_event(struct baton_agent *a, enum baton_agent_event ev, const uint8_t *p,
                        size_t n)
{
    if (a->cfg.on_event)
        a->cfg.on_event(a->cfg.ctx, ev, a->epoch, p, n);
}

static void rereg_done(struct op *op)
{
    struct baton_agent *a = op->arg;
    if (a) {
        a->reregistering = false;
        if (op->rc == 0 && !a->detached && !a->stopped) {
            struct arena ar;
            arena_init(&ar, 4096);
            void *resp = rpc_unpack(&baton__v1__register_response__descriptor, &ar, op->resp.data,
                                    op->resp.len);
            uint64_t old = a->epoch;
            if (resp && agent_learn(a, resp) == 0 && a->epoch != old)
                agent_event(a, BATON_AGENT_EPOCH_CHANGED, NULL, 0);
            arena_free(&ar);
            a->next_hb_ms = 0;
        }
        if (a->detached)
            free(a); /* baton_agent_stop ran while this was in flight */
    }
    op_free(op);
    free(op);
}

/* The server says our epoch is stale: register again (same id) in the background; the caller
 * hears EPOCH_CHANGED once the new epoch is known. */
static void agent_reregister(struct baton_agent *a)
{
    if (a->reregistering || a->stopped)
        return;
    struct op *op = calloc(1, sizeof(*op));
    if (!op)
        return;
    op->path = "/baton.v1.Nodes/RegisterNode";
    op->arg = a;
    op->on_done = rereg_done;
    Baton__V1__Label store[BATON_LABELS_MAX], *ptrs[BATON_LABELS_MAX];
    Baton__V1__RegisterRequest r;
    register_req(a, &r, store, ptrs);
    a->reregistering = true;
    client_call_async(a->c, op, &r.base);
}

static void agent_on_msg(struct stream *s, const uint8_t *d, size_t n)
{
    struct baton_agent *a = s->owner;
    arena_reset(&a->arena);
    Baton__V1__HeartbeatResponse *r = (Baton__V1__HeartbeatResponse *)rpc_unpack(
        &baton__v1__heartbeat_response__descriptor, &a->arena, d, n);
    if (!r || a->stopped)
        return;
    bool rereg = r->epoch != a->epoch && r->epoch != 0;
    bool drain = false;
    /* The server repeats a command on every heartbeat while it holds (each with a new id):
     * the caller hears each kind once per episode. */
    for (size_t i = 0; i < r->n_commands && !a->stopped; i++) {
        const Baton__V1__Command *cmd = r->commands[i];
        if (cmd->kind == BATON__V1__COMMAND__KIND__REREGISTER) {
            rereg = true;
        } else if (cmd->kind == BATON__V1__COMMAND__KIND__DRAIN) {
            drain = true;
            if (!a->draining)
                agent_event(a, BATON_AGENT_DRAIN, cmd->payload.data, cmd->payload.len);
        } else if (cmd->kind == BATON__V1__COMMAND__KIND__STOP) {
            a->stopped = true;
            agent_event(a, BATON_AGENT_STOP, cmd->payload.data, cmd->payload.len);
        }
    }
    a->draining = drain || r->state == BATON__V1__NODE_STATE__NODE_DECOMMISSIONING;
    if (rereg && !a->stopped)
        agent_reregister(a);
}

static bool agent_on_end(struct stream *s, int code, const char *msg)
{
    struct baton_agent *a = s->owner;
    (void)msg;
    /* A leader that does not know the node (its record is gone): register it again. */
    if (code == GRPC_NOT_FOUND && !a->stopped)
        agent_reregister(a);
    return code != GRPC_UNIMPLEMENTED && !a->stopped;
}

static void agent_on_free(struct stream *s)
{
    /* The agent itself is freed by baton_agent_stop / shutdown. */
    (void)s;
}

static void agent_unlink(struct baton_client *c, struct baton_agent *a)
{
    for (struct baton_agent **pp = &c->agents; *pp; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            return;
        }
    }
}

void agent_shutdown(struct baton_client *c)
{
    /* baton_close frees the agents (their handles are invalid afterwards). */
    while (c->agents) {
        struct baton_agent *a = c->agents;
        c->agents = a->next;
        a->stopped = true;
        stream_remove(&a->s);
        agent_free(a);
    }
}

static void agent_add_fn(struct baton_client *c, struct op *op)
{
    struct baton_agent *a = op->arg;
    a->next = c->agents;
    c->agents = a;
    a->s.want_leader = true;
    stream_add(c, &a->s);
    op_complete(op, 0, 0, "");
}

int baton_agent_start(struct baton_client *c, const struct baton_agent_config *cfg,
                      struct baton_agent **out)
{
    if (!c || !cfg || !out || !cfg->address || !cfg->address[0])
        return client_fail(BATONE_INVAL, "agent: no address");
    if (cfg->labels_len > BATON_LABELS_MAX)
        return client_fail(BATONE_TOOBIG, "agent: more than %d labels", BATON_LABELS_MAX);
    struct baton_agent *a = calloc(1, sizeof(*a));
    if (!a)
        return client_fail(BATONE_NOMEM, "out of memory");
    a->c = c;
    a->cfg = *cfg;
    a->id = cfg->id;
    snprintf(a->address, sizeof(a->address), "%s", cfg->address);
    snprintf(a->version, sizeof(a->version), "%s", cfg->version ? cfg->version : "");
    for (size_t i = 0; i < cfg->labels_len; i++)
        a->labels[i] = cfg->labels[i];
    a->cfg.labels = a->labels;
    a->cfg.address = a->address;
    a->cfg.version = a->version;
    arena_init(&a->arena, 4096);
    a->s.path = "/baton.v1.Nodes/Heartbeat";
    a->s.owner = a;
    a->s.start = agent_start;
    a->s.on_msg = agent_on_msg;
    a->s.on_end = agent_on_end;
    a->s.on_free = agent_on_free;

    Baton__V1__Label store[BATON_LABELS_MAX], *ptrs[BATON_LABELS_MAX];
    Baton__V1__RegisterRequest r;
    register_req(a, &r, store, ptrs);
    /* A new registration allocates an id: not retried once it may have reached the leader. */
    struct op op = {.path = "/baton.v1.Nodes/RegisterNode", .flags = a->id ? 0 : OP_WRITE};
    int rc = client_call(c, &op, &r.base);
    if (rc == 0) {
        struct arena ar;
        arena_init(&ar, 4096);
        void *resp;
        rc = op_decode(&op, &baton__v1__register_response__descriptor, &ar, &resp);
        if (rc == 0)
            rc = agent_learn(a, resp);
        arena_free(&ar);
    }
    op_free(&op);
    if (rc == 0)
        rc = client_run(c, agent_add_fn, a);
    if (rc) {
        arena_free(&a->arena);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

uint64_t baton_agent_id(const struct baton_agent *a)
{
    return a->id;
}

uint64_t baton_agent_epoch(const struct baton_agent *a)
{
    return __atomic_load_n(&a->epoch, __ATOMIC_ACQUIRE);
}

static void agent_stop_fn(struct baton_client *c, struct op *op)
{
    struct baton_agent *a = op->arg;
    bool listed = false;
    for (struct baton_agent *x = c->agents; x; x = x->next)
        listed |= x == a;
    if (listed) {
        agent_unlink(c, a);
        a->stopped = true;
        stream_remove(&a->s);
    }
    agent_free(a);
    op_complete(op, 0, 0, "");
}

void baton_agent_stop(struct baton_agent *a)
{
    if (!a)
        return;
    struct baton_client *c = a->c;
    if (client_on_thread(c)) {
        /* From a callback: no more heartbeats or events now; freed on the next tick, once
         * the callback that called this has returned. */
        a->stopped = true;
        a->stop_pending = true;
        return;
    }
    client_run(c, agent_stop_fn, a);
}

/* ---- fenced writes ------------------------------------------------------------------------ */

int baton_agent_txn(struct baton_agent *a, const struct baton_txn *t, struct baton_result *out)
{
    if (!a || !t || !out)
        return client_fail(BATONE_INVAL, "fenced txn: no transaction");
    char key[64], val[32];
    int kl = snprintf(key, sizeof(key), "/baton/nodes/%016" PRIx64 "/epoch", a->id);
    uint64_t epoch = baton_agent_epoch(a);
    int vl = snprintf(val, sizeof(val), "%" PRIu64, epoch);
    struct baton_cmp fence = {.key = key,
                              .key_len = (size_t)kl,
                              .target = BATON_CMP_VALUE,
                              .result = BATON_CMP_EQ,
                              .value = val,
                              .value_len = (size_t)vl};
    /* On failure, read the epoch key back to tell "fenced" from "your compares failed". */
    struct baton_op probe = {.kind = BATON_OP_GET, .key = key, .key_len = (size_t)kl};
    struct arena ar;
    arena_init(&ar, 4096);
    Etcdserverpb__TxnRequest req;
    int rc = txn_build(&ar, t, &fence, &probe, &req);
    if (rc == 0)
        rc = txn_run(a->c, &req, out, NULL);
    arena_free(&ar);
    if (rc || out->succeeded)
        return rc;
    if (out->ops_len < 1) {
        baton_result_free(out);
        return client_fail(BATONE_SERVER, "fenced txn: the answer lacks the epoch read");
    }
    struct baton_result *p = &out->ops[out->ops_len - 1];
    out->ops_len--;
    bool same = p->kvs_len == 1 && p->kvs[0].value_len == (size_t)vl &&
                memcmp(p->kvs[0].value, val, (size_t)vl) == 0;
    if (!same) {
        char now[32] = "none";
        if (p->kvs_len == 1)
            snprintf(now, sizeof(now), "%.*s", (int)BATON_MIN(p->kvs[0].value_len, 20u),
                     (const char *)p->kvs[0].value);
        baton_result_free(out);
        return client_fail(BATONE_FENCED,
                           "fenced: node %016" PRIx64 " writes under epoch %s, "
                           "the cluster has epoch %s",
                           a->id, val, now);
    }
    return 0;
}

int baton_agent_put(struct baton_agent *a, const void *key, size_t key_len, const void *value,
                    size_t value_len, int64_t *revision)
{
    struct baton_op put = {.kind = BATON_OP_PUT,
                           .key = key,
                           .key_len = key_len,
                           .value = value,
                           .value_len = value_len};
    struct baton_txn t = {.then_ops = &put, .then_len = 1};
    struct baton_result r;
    int rc = baton_agent_txn(a, &t, &r);
    if (rc)
        return rc;
    if (revision)
        *revision = r.revision;
    baton_result_free(&r);
    return 0;
}

/* ---- TSO and ids -------------------------------------------------------------------------- */

static int range_call(struct baton_client *c, const char *path, uint32_t count, uint32_t max,
                      uint64_t *first)
{
    if (!c || !first || count == 0 || count > max)
        return client_fail(BATONE_INVAL, "%s: count must be 1..%u", path, max);
    /* TsoRequest and IdAllocRequest have the same single field. */
    Baton__V1__TsoRequest req = BATON__V1__TSO_REQUEST__INIT;
    req.count = count;
    /* A lost answer only wastes a range: retrying never hands out a value twice. */
    struct op op = {.path = path};
    int rc = client_call(c, &op, &req.base);
    if (rc == 0) {
        struct arena ar;
        arena_init(&ar, 1024);
        void *resp;
        rc = op_decode(&op, &baton__v1__tso_response__descriptor, &ar, &resp);
        if (rc == 0) {
            Baton__V1__TsoResponse *r = resp;
            if (r->count != count || r->first == 0)
                rc = client_fail(BATONE_SERVER, "%s: asked for %u, got %u from %" PRIu64, path,
                                 count, r->count, r->first);
            *first = r->first;
        }
        arena_free(&ar);
    }
    op_free(&op);
    return rc;
}

int baton_tso(struct baton_client *c, uint32_t count, uint64_t *first)
{
    return range_call(c, "/baton.v1.Tso/GetTimestamp", count, 262144, first);
}

int baton_id_alloc(struct baton_client *c, uint32_t count, uint64_t *first)
{
    return range_call(c, "/baton.v1.Tso/AllocIds", count, 1000000, first);
}

/* ---- configuration ------------------------------------------------------------------------ */

int baton_config_get(struct baton_client *c, int64_t revision, char **json, int64_t *version,
                     int64_t *mod_revision)
{
    if (!c || !json)
        return client_fail(BATONE_INVAL, "config get: no output");
    Baton__V1__ConfigGetRequest req = BATON__V1__CONFIG_GET_REQUEST__INIT;
    req.revision = revision;
    struct op op = {.path = "/baton.v1.Config/Get"};
    int rc = client_call(c, &op, &req.base);
    if (rc == 0) {
        struct arena ar;
        arena_init(&ar, 4096);
        void *resp;
        rc = op_decode(&op, &baton__v1__config_get_response__descriptor, &ar, &resp);
        if (rc == 0) {
            Baton__V1__ConfigGetResponse *r = resp;
            *json = strdup(r->json ? r->json : "");
            if (!*json)
                rc = client_fail(BATONE_NOMEM, "out of memory");
            if (version)
                *version = r->version;
            if (mod_revision)
                *mod_revision = r->mod_revision;
        }
        arena_free(&ar);
    }
    op_free(&op);
    return rc;
}

int baton_config_set(struct baton_client *c, const char *json, int64_t expected_version, bool force,
                     int64_t *version)
{
    if (!c || !json)
        return client_fail(BATONE_INVAL, "config set: no JSON");
    Baton__V1__ConfigSetRequest req = BATON__V1__CONFIG_SET_REQUEST__INIT;
    req.json = (char *)json;
    req.expected_version = expected_version;
    req.force = force;
    /* A compare-and-set is safe to retry (a second try fails the compare); a forced set
     * writes the same JSON again. */
    struct op op = {.path = "/baton.v1.Config/Set"};
    int rc = client_call(c, &op, &req.base);
    if (rc == 0 && version) {
        struct arena ar;
        arena_init(&ar, 1024);
        void *resp;
        rc = op_decode(&op, &baton__v1__config_set_response__descriptor, &ar, &resp);
        if (rc == 0)
            *version = ((Baton__V1__ConfigSetResponse *)resp)->version;
        arena_free(&ar);
    }
    if (rc == BATONE_SERVER) {
        int code = baton_last_error(NULL);
        if (code == GRPC_FAILED_PRECONDITION || code == GRPC_ABORTED)
            rc = BATONE_CONFLICT;
    }
    op_free(&op);
    return rc;
}

static int cfgw_start(struct stream *s)
{
    struct baton_watch *w = s->owner;
    Baton__V1__ConfigWatchRequest req = BATON__V1__CONFIG_WATCH_REQUEST__INIT;
    req.start_revision = w->next_rev;
    int rc = stream_send(s, &req.base);
    if (rc == 0 && s->call)
        rc = rpc_client_call_close_send(s->call) ? BATONE_UNAVAILABLE : 0;
    if (rc == 0)
        watch_created(w, 0, 0, "");
    return rc;
}

static void cfgw_on_msg(struct stream *s, const uint8_t *d, size_t n)
{
    struct baton_watch *w = s->owner;
    arena_reset(&w->arena);
    Baton__V1__ConfigWatchResponse *r = (Baton__V1__ConfigWatchResponse *)rpc_unpack(
        &baton__v1__config_watch_response__descriptor, &w->arena, d, n);
    if (!r)
        return;
    if (r->mod_revision && r->mod_revision < w->next_rev)
        return; /* seen before this stream reopened */
    /* Resume after what this message showed: its change, or for the state sent first (which
     * may be "never set", mod_revision 0) the store revision it was read at. A stream that
     * reopens (failover, moving to the leader) then neither repeats nor misses a version. */
    if (r->mod_revision)
        w->next_rev = r->mod_revision + 1;
    else if (r->header && r->header->revision >= w->next_rev)
        w->next_rev = r->header->revision + 1;
    w->in_cb = true;
    w->config_fn(w->ctx, r->json ? r->json : "", r->version, r->mod_revision);
    w->in_cb = false;
    if (w->stop_requested)
        stream_remove(s);
}

static bool cfgw_on_end(struct stream *s, int code, const char *msg)
{
    struct baton_watch *w = s->owner;
    if (code == GRPC_UNIMPLEMENTED || code == GRPC_INVALID_ARGUMENT || code == GRPC_OUT_OF_RANGE) {
        int err = client_map_status(code, msg);
        watch_created(w, err, code, msg);
        if (!w->ended && w->end_fn)
            w->end_fn(w->ctx, err);
        w->ended = true;
        return false;
    }
    return true;
}

int baton_config_watch(struct baton_client *c, int64_t start_revision, baton_config_fn fn,
                       void *ctx, struct baton_watch **out)
{
    if (!c || !fn || !out)
        return client_fail(BATONE_INVAL, "config watch: no callback");
    if (client_on_thread(c))
        return client_fail(BATONE_INVAL, "a blocking libbaton call from a libbaton callback");
    struct baton_watch *w = watch_new(WATCH_CONFIG, "/baton.v1.Config/Watch", ctx);
    if (!w)
        return client_fail(BATONE_NOMEM, "out of memory");
    w->config_fn = fn;
    w->next_rev = start_revision;
    w->s.start = cfgw_start;
    w->s.on_msg = cfgw_on_msg;
    w->s.on_end = cfgw_on_end;
    return watch_register(c, w, out);
}

int baton_cluster_version(struct baton_client *c, char *cluster_version, char *finalized)
{
    if (!c || !cluster_version || !finalized)
        return client_fail(BATONE_INVAL, "cluster version: no output");
    Baton__V1__ClusterVersionRequest req = BATON__V1__CLUSTER_VERSION_REQUEST__INIT;
    struct op op = {.path = "/baton.v1.Config/ClusterVersion"};
    int rc = client_call(c, &op, &req.base);
    if (rc == 0) {
        struct arena ar;
        arena_init(&ar, 1024);
        void *resp;
        rc = op_decode(&op, &baton__v1__cluster_version_response__descriptor, &ar, &resp);
        if (rc == 0) {
            Baton__V1__ClusterVersionResponse *r = resp;
            snprintf(cluster_version, 32, "%s", r->cluster_version ? r->cluster_version : "");
            snprintf(finalized, 32, "%s", r->finalized_version ? r->finalized_version : "");
        }
        arena_free(&ar);
    }
    op_free(&op);
    return rc;
}
