/*
 * v3electionpb.Election (Campaign, Proclaim, Leader, Observe, Resign), and the wait-for-my-turn
 * recipe it shares with v3lockpb.Lock (svc_lock.c).
 *
 * The recipe is etcd's concurrency package run inside the server: a contender writes the key
 * "<name>/<lease in hex>" attached to its lease in one txn (create if absent, else read it), and
 * its key's create revision orders it. It owns the election (or the lock) once every key under
 * "<name>/" with a lower create revision is gone. To wait it reads the last key created before
 * its own and watches that key (an mvcc watch from the read's revision on, deletes only); when
 * the delete arrives it looks again. Nothing polls.
 *
 * The create revision is the fencing token: it only grows, a later owner always holds a larger
 * one, and a storage node that remembers the largest token it has seen can refuse writes from an
 * owner that lost its key (lease expired, resigned) without knowing it yet. Campaign answers it
 * as LeaderKey.rev.
 *
 * State belongs to calls only: the lease is the client's (a contender that dies stops keeping it
 * alive and the lease's expiry deletes its key, which passes the turn on). A Campaign or Lock
 * call cancelled while it waits cancels its watch and, as etcd's server does (Resign/Unlock on a
 * cancelled context), deletes its own key if it still has the create revision it wrote.
 *
 * Watch callbacks may not call into the store, so they only mark a waiter; services_tick (every
 * heartbeat interval) runs the look-again. A hand-off therefore takes up to one tick.
 */
#include "rpc/svc.h"

#include <v3election.pb-c.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECIPES_MAX 10000 /* Campaign, Lock and Observe calls held at once */

#define ERR_NOT_LEADER  "election: not leader"
#define ERR_NO_LEADER   "election: no leader"
#define ERR_MISSING_KEY "\"leader\" field must be provided"
#define ERR_NO_LEASE    "election: a lease must be provided"

enum recipe_kind { RECIPE_CAMPAIGN, RECIPE_LOCK, RECIPE_OBSERVE };

struct svc_recipe {
    struct services *sv; /* NULL once services_destroy ran */
    struct rpc_call *call;
    struct svc_recipe *prev, *next;
    enum recipe_kind kind;
    struct server_call *pending;
    struct arena a; /* proposal results and reads; reset between steps */
    int64_t hub_id;
    bool watching, recheck;
    uint8_t *prefix, *key, *value, *name; /* one malloc'd block each, freed with the recipe */
    size_t prefix_len, key_len, value_len, name_len;
    int64_t lease;
    int64_t rev;     /* create revision of our key: the fencing token (0: not written yet) */
    int64_t hdr_rev; /* revision for the answer's header */
    /* Observe: what was sent last. */
    bool sent;
    int64_t sent_create, sent_mod;
};

/* ---- Helpers -----------------------------------------------------------------------------------
 */

/* The end of the range of keys starting with p (etcd's clientv3.GetPrefixRangeEnd). */
static struct mvcc_bytes prefix_end(struct arena *a, const uint8_t *p, size_t len)
{
    static const uint8_t all = 0;
    uint8_t *e = arena_dup(a, p, len ? len : 1);
    for (size_t i = len; e && i > 0; i--) {
        if (e[i - 1] < 0xff) {
            e[i - 1]++;
            return (struct mvcc_bytes){e, i};
        }
    }
    return (struct mvcc_bytes){&all, 1};
}

static void list_remove(struct svc_recipe *r)
{
    if (!r->sv)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        r->sv->recipes = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->sv->recipes_len--;
}

static void recipe_unwatch(struct svc_recipe *r)
{
    if (r->watching && r->sv)
        mvcc_watch_cancel(server_store(r->sv->s), r->hub_id);
    r->watching = false;
}

static void recipe_free(struct svc_recipe *r)
{
    if (r->pending)
        server_call_cancel(r->pending);
    recipe_unwatch(r);
    list_remove(r);
    arena_free(&r->a);
    free(r->prefix);
    free(r);
}

/* Ends the call with an error status and frees the recipe. */
static void recipe_fail(struct svc_recipe *r, int code, const char *msg)
{
    struct rpc_call *call = r->call;
    rpc_call_set_user(call, NULL);
    r->call = NULL;
    recipe_free(r);
    rpc_call_finish(call, code, msg);
}

static void recipe_fail_err(struct svc_recipe *r, int err)
{
    struct rpc_call *call = r->call;
    rpc_call_set_user(call, NULL);
    r->call = NULL;
    recipe_free(r);
    svc_finish_err(call, err);
}

/* A recipe for call: prefix "<name>/", key "<name>/<lease hex>". */
static struct svc_recipe *recipe_new(struct services *sv, struct rpc_call *call,
                                     enum recipe_kind kind, ProtobufCBinaryData name, int64_t lease,
                                     ProtobufCBinaryData value)
{
    if (sv->recipes_len >= RECIPES_MAX)
        return NULL;
    struct svc_recipe *r = calloc(1, sizeof(*r));
    size_t cap = 2 * (name.len + 1) + 16 + value.len + name.len + 1;
    uint8_t *m = malloc(cap);
    if (!r || !m) {
        free(r);
        free(m);
        return NULL;
    }
    r->sv = sv;
    r->call = call;
    r->kind = kind;
    r->lease = lease;
    arena_init(&r->a, 4096);
    r->prefix = m;
    if (name.len)
        memcpy(m, name.data, name.len);
    m[name.len] = '/';
    r->prefix_len = name.len + 1;
    r->key = m + r->prefix_len;
    memcpy(r->key, r->prefix, r->prefix_len);
    r->key_len = r->prefix_len +
                 (size_t)snprintf((char *)r->key + r->prefix_len, 17, "%" PRIx64, (uint64_t)lease);
    r->value = r->key + r->key_len + 1;
    if (value.len)
        memcpy(r->value, value.data, value.len);
    r->value_len = value.len;
    r->name = r->value + value.len;
    if (name.len)
        memcpy(r->name, name.data, name.len);
    r->name_len = name.len;
    r->next = sv->recipes;
    if (sv->recipes)
        sv->recipes->prev = r;
    sv->recipes = r;
    sv->recipes_len++;
    rpc_call_set_user(call, r);
    return r;
}

static int propose_txn(struct services *sv, const struct mvcc_txn_req *t, struct arena *a,
                       server_done_fn fn, void *ctx, struct server_call **pending)
{
    struct request q = {.type = REQ_TXN};
    q.u.txn = *t;
    return server_propose(sv->s, &q, a, fn, ctx, pending);
}

/* Answers msg and ends the call with OK (or the send's error). */
static void answer(struct rpc_call *call, const ProtobufCMessage *msg)
{
    int rc = msg ? rpc_call_send(call, msg) : BATON_ENOMEM;
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

/* ---- Waiting for the keys created before ours --------------------------------------------------
 */

static int on_hub(void *ctx, const struct mvcc_watch_batch *b)
{
    struct svc_recipe *r = ctx;
    if (b->compact_revision) {
        r->watching = false; /* the hub cancels it after this call */
        r->recheck = true;
    }
    if (b->events_len)
        r->recheck = true;
    return 0;
}

static int watch_from(struct svc_recipe *r, struct mvcc_bytes key, struct mvcc_bytes end,
                      int64_t rev, bool deletes_only)
{
    struct mvcc_watch_req w = {.key = key, .range_end = end, .start_revision = rev + 1};
    w.no_put = deletes_only;
    int64_t compact_rev = 0;
    int rc = mvcc_watch_create(server_store(r->sv->s), &w, on_hub, r, &r->hub_id, &compact_rev);
    if (rc == BATON_ECOMPACTED) {
        r->recheck = true; /* compacted since the read: read again at the next tick */
        return 0;
    }
    if (rc == 0)
        r->watching = true;
    return rc;
}

static void acquired(struct svc_recipe *r);

/* Looks for the last key under the prefix created before ours; watches it, or we own it. */
static void recipe_check(struct svc_recipe *r)
{
    arena_reset(&r->a);
    struct mvcc_range_req q = {
        .key = {r->prefix, r->prefix_len},
        .range_end = prefix_end(&r->a, r->prefix, r->prefix_len),
        .limit = 1,
        .sort_order = MVCC_SORT_DESCEND,
        .sort_target = MVCC_SORT_CREATE,
        .max_create_revision = r->rev - 1,
    };
    struct mvcc_range_resp resp;
    int rc = q.range_end.p ? mvcc_range(server_store(r->sv->s), &q, &r->a, &resp) : BATON_ENOMEM;
    if (rc) {
        recipe_fail_err(r, rc);
        return;
    }
    if (resp.kvs_len == 0) {
        if (r->kind == RECIPE_LOCK)
            r->hdr_rev = resp.header_revision; /* etcd's Mutex answers waitDeletes' header */
        acquired(r);
        return;
    }
    rc = watch_from(r, resp.kvs[0].key, (struct mvcc_bytes){0}, resp.header_revision, true);
    if (rc)
        recipe_fail_err(r, rc);
}

static void on_proclaimed(void *ctx, int err, const struct server_result *res)
{
    struct svc_recipe *r = ctx;
    r->pending = NULL;
    if (err) {
        recipe_fail_err(r, err);
        return;
    }
    if (!res->u.txn.succeeded) {
        recipe_fail(r, GRPC_UNKNOWN, ERR_NOT_LEADER);
        return;
    }
    recipe_check(r);
}

/* Our key exists with another value (the same lease campaigned before): update it as etcd's
 * Election.Campaign does, guarded by the create revision. */
static int proclaim_own(struct svc_recipe *r)
{
    struct mvcc_compare c = {.result = MVCC_CMP_EQUAL,
                             .target = MVCC_CMP_CREATE,
                             .key = {r->key, r->key_len},
                             .number = r->rev};
    struct mvcc_op put = {.type = MVCC_OP_PUT};
    put.u.put = (struct mvcc_put_req){
        .key = {r->key, r->key_len}, .value = {r->value, r->value_len}, .lease = r->lease};
    struct mvcc_txn_req t = {.compare = &c, .compare_len = 1, .success = &put, .success_len = 1};
    return propose_txn(r->sv, &t, &r->a, on_proclaimed, r, &r->pending);
}

static void on_created(void *ctx, int err, const struct server_result *res)
{
    struct svc_recipe *r = ctx;
    r->pending = NULL;
    if (err) {
        recipe_fail_err(r, err);
        return;
    }
    const struct mvcc_txn_resp *t = &res->u.txn;
    r->hdr_rev = res->revision;
    if (t->succeeded) {
        r->rev = res->revision;
        recipe_check(r);
        return;
    }
    BATON_ASSERT(t->responses_len == 1 && t->responses[0].type == MVCC_OP_RANGE);
    const struct mvcc_range_resp *got = &t->responses[0].u.range;
    if (got->kvs_len == 0) { /* cannot happen: the compare saw the key in the same txn */
        recipe_fail_err(r, BATON_EINVAL);
        return;
    }
    r->rev = got->kvs[0].create_revision;
    const struct mvcc_kv *kv = &got->kvs[0];
    if (r->kind == RECIPE_CAMPAIGN &&
        (kv->value.len != r->value_len || memcmp(kv->value.p, r->value, r->value_len) != 0)) {
        int rc = proclaim_own(r);
        if (rc)
            recipe_fail_err(r, rc);
        return;
    }
    recipe_check(r);
}

/* Creates the key if absent, else reads it (one txn). */
static void recipe_start(struct svc_recipe *r)
{
    struct mvcc_compare c = {
        .result = MVCC_CMP_EQUAL, .target = MVCC_CMP_CREATE, .key = {r->key, r->key_len}};
    struct mvcc_op put = {.type = MVCC_OP_PUT}, get = {.type = MVCC_OP_RANGE};
    put.u.put = (struct mvcc_put_req){
        .key = {r->key, r->key_len}, .value = {r->value, r->value_len}, .lease = r->lease};
    get.u.range = (struct mvcc_range_req){.key = {r->key, r->key_len}};
    struct mvcc_txn_req t = {.compare = &c,
                             .compare_len = 1,
                             .success = &put,
                             .success_len = 1,
                             .failure = &get,
                             .failure_len = 1};
    int rc = propose_txn(r->sv, &t, &r->a, on_created, r, &r->pending);
    if (rc)
        recipe_fail_err(r, rc);
}

/* A cancelled contender's key goes, as etcd's server resigns/unlocks on a cancelled context:
 * a delete guarded by our create revision, proposed on its own (the call is gone). */
struct cleanup {
    struct arena a;
};

static void on_cleanup_done(void *ctx, int err, const struct server_result *res)
{
    (void)err;
    (void)res;
    struct cleanup *c = ctx;
    arena_free(&c->a);
    free(c);
}

static int delete_if_rev(struct services *sv, struct mvcc_bytes key, int64_t rev, struct arena *a,
                         server_done_fn fn, void *ctx, struct server_call **pending)
{
    struct mvcc_compare c = {
        .result = MVCC_CMP_EQUAL, .target = MVCC_CMP_CREATE, .key = key, .number = rev};
    struct mvcc_op del = {.type = MVCC_OP_DELETE};
    del.u.del = (struct mvcc_delete_req){.key = key};
    struct mvcc_txn_req t = {.compare = &c, .compare_len = 1, .success = &del, .success_len = 1};
    return propose_txn(sv, &t, a, fn, ctx, pending);
}

static void recipe_on_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct svc_recipe *r = rpc_call_user(call);
    if (!r)
        return;
    r->call = NULL;
    if (r->sv && r->kind != RECIPE_OBSERVE && r->rev > 0 && !r->pending) {
        struct cleanup *c = malloc(sizeof(*c));
        if (c) {
            arena_init(&c->a, 1024);
            if (delete_if_rev(r->sv, (struct mvcc_bytes){r->key, r->key_len}, r->rev, &c->a,
                              on_cleanup_done, c, NULL)) {
                arena_free(&c->a);
                free(c); /* the lease's expiry removes the key then */
            }
        }
    }
    recipe_free(r);
}

/* ---- Observe ----------------------------------------------------------------------------------
 */

static Etcdserverpb__ResponseHeader *header_at(struct services *sv, struct arena *a, int64_t rev)
{
    return svc_header(sv, a, rev);
}

/* The leader: the key under the prefix with the lowest create revision. */
static int leader_read(struct services *sv, struct arena *a, const uint8_t *prefix,
                       size_t prefix_len, struct mvcc_range_resp *resp)
{
    struct mvcc_range_req q = {
        .key = {prefix, prefix_len},
        .range_end = prefix_end(a, prefix, prefix_len),
        .limit = 1,
        .sort_order = MVCC_SORT_ASCEND,
        .sort_target = MVCC_SORT_CREATE,
    };
    if (!q.range_end.p)
        return BATON_ENOMEM;
    return mvcc_range(server_store(sv->s), &q, a, resp);
}

static void observe_check(struct svc_recipe *r)
{
    arena_reset(&r->a);
    struct mvcc_range_resp resp;
    int rc = leader_read(r->sv, &r->a, r->prefix, r->prefix_len, &resp);
    if (rc) {
        recipe_fail_err(r, rc);
        return;
    }
    if (!r->watching && !r->recheck) {
        struct mvcc_bytes end = prefix_end(&r->a, r->prefix, r->prefix_len);
        rc = end.p ? watch_from(r, (struct mvcc_bytes){r->prefix, r->prefix_len}, end,
                                resp.header_revision, false)
                   : BATON_ENOMEM;
        if (rc) {
            recipe_fail_err(r, rc);
            return;
        }
    }
    if (resp.kvs_len == 0)
        return; /* no leader: nothing is sent until one appears, as etcd */
    const struct mvcc_kv *kv = &resp.kvs[0];
    if (r->sent && kv->create_revision == r->sent_create && kv->mod_revision == r->sent_mod)
        return;
    V3electionpb__LeaderResponse m = V3ELECTIONPB__LEADER_RESPONSE__INIT;
    m.header = header_at(r->sv, &r->a, resp.header_revision);
    m.kv = svc_kv(&r->a, kv);
    rc = m.header && m.kv ? rpc_call_send(r->call, &m.base) : BATON_ENOMEM;
    if (rc == BATON_EBUSY)
        return; /* on_writable looks again */
    if (rc) {
        recipe_fail_err(r, rc);
        return;
    }
    r->sent = true;
    r->sent_create = kv->create_revision;
    r->sent_mod = kv->mod_revision;
}

static void on_observe(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const V3electionpb__LeaderRequest *p = (const V3electionpb__LeaderRequest *)msg;
    if (rpc_call_user(call))
        return; /* one request per Observe */
    struct svc_recipe *r =
        recipe_new(sv, call, RECIPE_OBSERVE, p->name, 0, (ProtobufCBinaryData){0, NULL});
    if (!r) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    observe_check(r);
}

static void on_observe_writable(struct rpc_call *call, void *ctx)
{
    (void)ctx;
    struct svc_recipe *r = rpc_call_user(call);
    if (r)
        r->recheck = true;
}

/* ---- Shared with svc_lock.c --------------------------------------------------------------------
 */

static void acquired(struct svc_recipe *r)
{
    struct rpc_call *call = r->call;
    struct arena *a = rpc_call_arena(call);
    Etcdserverpb__ResponseHeader *h = header_at(r->sv, a, r->hdr_rev);
    const ProtobufCMessage *out = NULL;
    if (r->kind == RECIPE_CAMPAIGN) {
        V3electionpb__CampaignResponse *m = arena_alloc(a, sizeof(*m));
        V3electionpb__LeaderKey *k = arena_alloc(a, sizeof(*k));
        uint8_t *name = r->name_len ? arena_dup(a, r->name, r->name_len) : (uint8_t *)r->name;
        uint8_t *key = arena_dup(a, r->key, r->key_len);
        if (m && k && h && name && key) {
            v3electionpb__campaign_response__init(m);
            v3electionpb__leader_key__init(k);
            k->name = (ProtobufCBinaryData){r->name_len, name};
            k->key = (ProtobufCBinaryData){r->key_len, key};
            k->rev = r->rev; /* the fencing token */
            k->lease = r->lease;
            m->header = h;
            m->leader = k;
            out = &m->base;
        }
    } else {
        out = svc_lock_response(a, h, r->key, r->key_len);
    }
    rpc_call_set_user(call, NULL);
    r->call = NULL;
    recipe_free(r);
    answer(call, out);
}

int svc_recipe_start(struct services *sv, struct rpc_call *call, bool lock,
                     ProtobufCBinaryData name, int64_t lease, ProtobufCBinaryData value)
{
    if (lease == 0) {
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT, ERR_NO_LEASE);
        return 0;
    }
    struct svc_recipe *r =
        recipe_new(sv, call, lock ? RECIPE_LOCK : RECIPE_CAMPAIGN, name, lease, value);
    if (!r)
        return sv->recipes_len >= RECIPES_MAX ? BATON_EBUSY : BATON_ENOMEM;
    recipe_start(r);
    return 0;
}

void svc_recipe_on_cancel(struct rpc_call *call, int code, void *ctx)
{
    recipe_on_cancel(call, code, ctx);
}

void svc_recipe_tick(struct services *sv)
{
    struct svc_recipe *next;
    for (struct svc_recipe *r = sv->recipes; r; r = next) {
        next = r->next;
        if (!r->recheck || r->pending)
            continue;
        r->recheck = false;
        if (r->kind == RECIPE_OBSERVE) {
            observe_check(r); /* the prefix watch stays */
            continue;
        }
        recipe_unwatch(r);
        recipe_check(r);
    }
}

void svc_recipe_destroy(struct services *sv)
{
    while (sv->recipes) {
        struct svc_recipe *r = sv->recipes;
        if (r->pending)
            server_call_cancel(r->pending);
        r->pending = NULL;
        recipe_unwatch(r);
        list_remove(r);
        r->sv = NULL; /* the call's on_cancel frees it */
    }
}

/* ---- Unary calls -------------------------------------------------------------------------------
 */

struct el_call {
    struct services *sv;
    struct rpc_call *call;
    struct server_call *pending;
    const V3electionpb__LeaderRequest *leader_req;
    bool proclaim;
};

static struct el_call *el_call_new(struct services *sv, struct rpc_call *call)
{
    struct el_call *e = arena_alloc(rpc_call_arena(call), sizeof(*e));
    if (e) {
        memset(e, 0, sizeof(*e));
        e->sv = sv;
        e->call = call;
        rpc_call_set_user(call, e);
    }
    return e;
}

static void el_on_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct el_call *e = rpc_call_user(call);
    if (e && e->pending)
        server_call_cancel(e->pending);
}

static void on_campaign(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const V3electionpb__CampaignRequest *p = (const V3electionpb__CampaignRequest *)msg;
    int rc = svc_recipe_start(ctx, call, false, p->name, p->lease, p->value);
    if (rc)
        rpc_call_finish_err(call, rc);
}

/* Proclaim and Resign: a txn guarded by the leader key's create revision. */
static void on_guarded_done(void *ctx, int err, const struct server_result *res)
{
    struct el_call *e = ctx;
    struct rpc_call *call = e->call;
    struct arena *a = rpc_call_arena(call);
    rpc_call_set_user(call, NULL);
    if (err) {
        svc_finish_err(call, err);
        return;
    }
    if (e->proclaim && !res->u.txn.succeeded) {
        rpc_call_finish(call, GRPC_UNKNOWN, ERR_NOT_LEADER);
        return;
    }
    /* ProclaimResponse and ResignResponse are both { header = 1 }. */
    V3electionpb__ProclaimResponse *pm = arena_alloc(a, sizeof(*pm));
    V3electionpb__ResignResponse *rm = arena_alloc(a, sizeof(*rm));
    if (!pm || !rm) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    v3electionpb__proclaim_response__init(pm);
    v3electionpb__resign_response__init(rm);
    pm->header = rm->header = header_at(e->sv, a, res->revision);
    if (!pm->header)
        answer(call, NULL);
    else
        answer(call, e->proclaim ? &pm->base : &rm->base);
}

static void on_proclaim(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const V3electionpb__ProclaimRequest *p = (const V3electionpb__ProclaimRequest *)msg;
    if (!p->leader) {
        rpc_call_finish(call, GRPC_UNKNOWN, ERR_MISSING_KEY);
        return;
    }
    struct el_call *e = el_call_new(sv, call);
    if (!e) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    e->proclaim = true;
    const V3electionpb__LeaderKey *l = p->leader;
    struct mvcc_compare c = {.result = MVCC_CMP_EQUAL,
                             .target = MVCC_CMP_CREATE,
                             .key = svc_bytes(l->key),
                             .number = l->rev};
    struct mvcc_op put = {.type = MVCC_OP_PUT};
    put.u.put = (struct mvcc_put_req){
        .key = svc_bytes(l->key), .value = svc_bytes(p->value), .lease = l->lease};
    struct mvcc_txn_req t = {.compare = &c, .compare_len = 1, .success = &put, .success_len = 1};
    int rc =
        l->key.len ? propose_txn(sv, &t, rpc_call_arena(call), on_guarded_done, e, &e->pending) : 0;
    if (!l->key.len) {
        rpc_call_set_user(call, NULL);
        rpc_call_finish(call, GRPC_UNKNOWN, ERR_NOT_LEADER);
    } else if (rc) {
        rpc_call_set_user(call, NULL);
        svc_finish_err(call, rc);
    }
}

static void on_resign(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const V3electionpb__ResignRequest *p = (const V3electionpb__ResignRequest *)msg;
    if (!p->leader) {
        rpc_call_finish(call, GRPC_UNKNOWN, ERR_MISSING_KEY);
        return;
    }
    struct el_call *e = el_call_new(sv, call);
    if (!e) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    /* etcd's Election.Resign: delete the key only while it is still ours; not-leader is OK. */
    int rc = p->leader->key.len
                 ? delete_if_rev(sv, svc_bytes(p->leader->key), p->leader->rev,
                                 rpc_call_arena(call), on_guarded_done, e, &e->pending)
                 : MVCC_EEMPTYKEY;
    if (rc) {
        rpc_call_set_user(call, NULL);
        svc_finish_err(call, rc);
    }
}

static void on_leader_barrier(void *ctx, int err, const struct server_result *res)
{
    (void)res;
    struct el_call *e = ctx;
    struct rpc_call *call = e->call;
    struct arena *a = rpc_call_arena(call);
    rpc_call_set_user(call, NULL);
    if (err) {
        svc_finish_err(call, err);
        return;
    }
    const V3electionpb__LeaderRequest *p = e->leader_req;
    uint8_t *prefix = arena_alloc(a, p->name.len + 1);
    struct mvcc_range_resp resp;
    if (!prefix) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    if (p->name.len)
        memcpy(prefix, p->name.data, p->name.len);
    prefix[p->name.len] = '/';
    int rc = leader_read(e->sv, a, prefix, p->name.len + 1, &resp);
    if (rc) {
        svc_finish_err(call, rc);
        return;
    }
    if (resp.kvs_len == 0) {
        rpc_call_finish(call, GRPC_UNKNOWN, ERR_NO_LEADER);
        return;
    }
    V3electionpb__LeaderResponse *m = arena_alloc(a, sizeof(*m));
    if (m) {
        v3electionpb__leader_response__init(m);
        m->header = header_at(e->sv, a, resp.header_revision);
        m->kv = svc_kv(a, &resp.kvs[0]);
    }
    answer(call, m && m->header && m->kv ? &m->base : NULL);
}

static void on_leader(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    struct el_call *e = el_call_new(sv, call);
    if (!e) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    e->leader_req = (const V3electionpb__LeaderRequest *)msg;
    int rc = server_read_barrier(sv->s, on_leader_barrier, e, &e->pending);
    if (rc) {
        rpc_call_set_user(call, NULL);
        svc_finish_err(call, rc);
    }
}

int svc_election_register(struct services *sv)
{
    const struct rpc_method methods[] = {
        {"/v3electionpb.Election/Campaign", RPC_UNARY, &v3electionpb__campaign_request__descriptor,
         NULL, on_campaign, NULL, NULL, svc_recipe_on_cancel, sv},
        {"/v3electionpb.Election/Proclaim", RPC_UNARY, &v3electionpb__proclaim_request__descriptor,
         NULL, on_proclaim, NULL, NULL, el_on_cancel, sv},
        {"/v3electionpb.Election/Leader", RPC_UNARY, &v3electionpb__leader_request__descriptor,
         NULL, on_leader, NULL, NULL, el_on_cancel, sv},
        {"/v3electionpb.Election/Observe", RPC_SERVER_STREAMING,
         &v3electionpb__leader_request__descriptor, NULL, on_observe, NULL, on_observe_writable,
         svc_recipe_on_cancel, sv},
        {"/v3electionpb.Election/Resign", RPC_UNARY, &v3electionpb__resign_request__descriptor,
         NULL, on_resign, NULL, NULL, el_on_cancel, sv},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(methods); i++) {
        int rc = rpc_server_register(sv->rs, &methods[i]);
        if (rc)
            return rc;
    }
    return 0;
}
