/*
 * Elections and locks over etcd's v3election / v3lock services, with fencing tokens: a
 * holder's token is its key's create revision, which only grows from one holder to the next,
 * so a storage node that remembers the highest token it has seen (baton_fence_check) refuses
 * requests from a holder that lost its lease and does not know it yet.
 */
#include "internal.h"

#include "v3election.pb-c.h"
#include "v3lock.pb-c.h"

#include <stdlib.h>
#include <string.h>

bool baton_fence_check(int64_t token, int64_t *last_seen)
{
    if (token < *last_seen)
        return false;
    *last_seen = token;
    return true;
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    ProtobufCBinaryData b = {n, (uint8_t *)p};
    return b;
}

static int key_set(struct baton_lease_key *k, const ProtobufCBinaryData *name,
                   const ProtobufCBinaryData *key, int64_t rev, int64_t lease)
{
    if (name->len > sizeof(k->name) || key->len > sizeof(k->key))
        return client_fail(BATONE_TOOBIG, "election key longer than %d bytes", BATON_KEY_MAX);
    memset(k, 0, sizeof(*k));
    if (name->len)
        memcpy(k->name, name->data, name->len);
    k->name_len = name->len;
    if (key->len)
        memcpy(k->key, key->data, key->len);
    k->key_len = key->len;
    k->token = rev;
    k->lease = lease;
    return 0;
}

static void leader_key_pb(const struct baton_lease_key *k, V3electionpb__LeaderKey *p)
{
    v3electionpb__leader_key__init(p);
    p->name = bin(k->name, k->name_len);
    p->key = bin(k->key, k->key_len);
    p->rev = k->token;
    p->lease = k->lease;
}

int baton_campaign(struct baton_client *c, const void *name, size_t name_len, int64_t lease,
                   const void *value, size_t value_len, uint32_t timeout_ms,
                   struct baton_lease_key *out)
{
    if (!c || !name || !name_len || name_len > BATON_NAME_MAX || lease <= 0 || !out)
        return client_fail(BATONE_INVAL, "campaign: need a name (1..%d bytes) and a lease",
                           BATON_NAME_MAX);
    V3electionpb__CampaignRequest req = V3ELECTIONPB__CAMPAIGN_REQUEST__INIT;
    req.name = bin(name, name_len);
    req.lease = lease;
    req.value = bin(value, value_len);
    /* Campaigning again with the same lease finds the key it made: safe to retry. */
    struct op op = {.path = "/v3electionpb.Election/Campaign", .timeout_ms = timeout_ms};
    int rc = client_call(c, &op, &req.base);
    if (rc == 0) {
        struct arena a;
        arena_init(&a, 1024);
        void *resp;
        rc = op_decode(&op, &v3electionpb__campaign_response__descriptor, &a, &resp);
        if (rc == 0) {
            V3electionpb__CampaignResponse *r = resp;
            if (!r->leader)
                rc = client_fail(BATONE_SERVER, "campaign: no leader key in the answer");
            else
                rc = key_set(out, &r->leader->name, &r->leader->key, r->leader->rev,
                             r->leader->lease);
        }
        arena_free(&a);
    }
    op_free(&op);
    return rc;
}

int baton_proclaim(struct baton_client *c, const struct baton_lease_key *k, const void *value,
                   size_t value_len)
{
    if (!c || !k)
        return client_fail(BATONE_INVAL, "proclaim: no leader key");
    V3electionpb__LeaderKey lk;
    leader_key_pb(k, &lk);
    V3electionpb__ProclaimRequest req = V3ELECTIONPB__PROCLAIM_REQUEST__INIT;
    req.leader = &lk;
    req.value = bin(value, value_len);
    struct op op = {.path = "/v3electionpb.Election/Proclaim"};
    int rc = client_call(c, &op, &req.base);
    op_free(&op);
    return rc;
}

int baton_resign(struct baton_client *c, const struct baton_lease_key *k)
{
    if (!c || !k)
        return client_fail(BATONE_INVAL, "resign: no leader key");
    V3electionpb__LeaderKey lk;
    leader_key_pb(k, &lk);
    V3electionpb__ResignRequest req = V3ELECTIONPB__RESIGN_REQUEST__INIT;
    req.leader = &lk;
    struct op op = {.path = "/v3electionpb.Election/Resign"};
    int rc = client_call(c, &op, &req.base);
    op_free(&op);
    return rc;
}

int baton_election_leader(struct baton_client *c, const void *name, size_t name_len,
                          struct baton_result *out)
{
    if (!c || !name || !name_len || !out)
        return client_fail(BATONE_INVAL, "leader: no election name");
    V3electionpb__LeaderRequest req = V3ELECTIONPB__LEADER_REQUEST__INIT;
    req.name = bin(name, name_len);
    struct op op = {.path = "/v3electionpb.Election/Leader"};
    int rc = client_call(c, &op, &req.base);
    if (rc == BATONE_SERVER && strcmp(op.msg, "election: no leader") == 0)
        rc = BATONE_NOTFOUND; /* etcd answers UNKNOWN with this text */
    struct arena *a = NULL;
    if (rc == 0)
        rc = result_new(out, &a);
    if (rc == 0) {
        void *resp;
        rc = op_decode(&op, &v3electionpb__leader_response__descriptor, a, &resp);
        V3electionpb__LeaderResponse *r = resp;
        if (rc == 0 && !r->kv)
            rc = client_fail(BATONE_NOTFOUND, "election: no leader");
        if (rc == 0) {
            out->kvs = arena_alloc(a, sizeof(*out->kvs));
            if (!out->kvs) {
                rc = client_fail(BATONE_NOMEM, "out of memory");
            } else {
                kv_from_pb(out->kvs, r->kv);
                out->kvs_len = 1;
                out->count = 1;
                out->revision = r->header ? r->header->revision : 0;
            }
        }
        if (rc)
            baton_result_free(out);
    }
    op_free(&op);
    return rc;
}

/* ---- observe ------------------------------------------------------------------------------ */

static int obs_start(struct stream *s)
{
    struct baton_watch *w = s->owner;
    V3electionpb__LeaderRequest req = V3ELECTIONPB__LEADER_REQUEST__INIT;
    req.name = bin(w->key, w->key_len);
    int rc = stream_send(s, &req.base);
    if (rc == 0 && s->call)
        rc = rpc_client_call_close_send(s->call) ? BATONE_UNAVAILABLE : 0;
    if (rc == 0)
        watch_created(w, 0, 0, "");
    return rc;
}

static void obs_on_msg(struct stream *s, const uint8_t *d, size_t n)
{
    struct baton_watch *w = s->owner;
    arena_reset(&w->arena);
    V3electionpb__LeaderResponse *r = (V3electionpb__LeaderResponse *)rpc_unpack(
        &v3electionpb__leader_response__descriptor, &w->arena, d, n);
    if (!r || !r->kv)
        return;
    /* After a reopen the server repeats the current leader: deliver each change once. */
    if (r->kv->mod_revision < w->next_rev)
        return;
    w->next_rev = r->kv->mod_revision + 1;
    struct baton_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = BATON_EVENT_PUT;
    kv_from_pb(&ev.kv, r->kv);
    w->in_cb = true;
    w->fn(w->ctx, &ev);
    w->in_cb = false;
    if (w->stop_requested)
        stream_remove(s);
}

static bool obs_on_end(struct stream *s, int code, const char *msg)
{
    struct baton_watch *w = s->owner;
    if (code == GRPC_UNIMPLEMENTED || code == GRPC_INVALID_ARGUMENT) {
        watch_created(w, client_map_status(code, msg), code, msg);
        return false;
    }
    return true;
}

int baton_observe(struct baton_client *c, const void *name, size_t name_len, baton_watch_fn fn,
                  void *ctx, struct baton_watch **out)
{
    if (!c || !name || !name_len || !fn || !out)
        return client_fail(BATONE_INVAL, "observe: no election name or callback");
    if (client_on_thread(c))
        return client_fail(BATONE_INVAL, "a blocking libbaton call from a libbaton callback");
    struct baton_watch *w = watch_new(WATCH_OBSERVE, "/v3electionpb.Election/Observe", ctx);
    if (!w)
        return client_fail(BATONE_NOMEM, "out of memory");
    w->key = malloc(name_len);
    if (!w->key) {
        w->s.on_free(&w->s);
        return client_fail(BATONE_NOMEM, "out of memory");
    }
    memcpy(w->key, name, name_len);
    w->key_len = name_len;
    w->fn = fn;
    w->s.start = obs_start;
    w->s.on_msg = obs_on_msg;
    w->s.on_end = obs_on_end;
    return watch_register(c, w, out);
}

/* ---- locks -------------------------------------------------------------------------------- */

int baton_lock(struct baton_client *c, const void *name, size_t name_len, int64_t lease,
               uint32_t timeout_ms, struct baton_lease_key *out)
{
    if (!c || !name || !name_len || name_len > BATON_NAME_MAX || lease <= 0 || !out)
        return client_fail(BATONE_INVAL, "lock: need a name (1..%d bytes) and a lease",
                           BATON_NAME_MAX);
    V3lockpb__LockRequest req = V3LOCKPB__LOCK_REQUEST__INIT;
    req.name = bin(name, name_len);
    req.lease = lease;
    /* Locking again with the same lease finds the key it made: safe to retry. */
    struct op op = {.path = "/v3lockpb.Lock/Lock", .timeout_ms = timeout_ms};
    int rc = client_call(c, &op, &req.base);
    ProtobufCBinaryData key = {0, NULL};
    struct arena a;
    arena_init(&a, 1024);
    if (rc == 0) {
        void *resp;
        rc = op_decode(&op, &v3lockpb__lock_response__descriptor, &a, &resp);
        if (rc == 0)
            key = ((V3lockpb__LockResponse *)resp)->key;
        if (rc == 0 && !key.len)
            rc = client_fail(BATONE_SERVER, "lock: no key in the answer");
    }
    op_free(&op);
    /* The fencing token is the owner key's create revision. */
    struct baton_result r;
    if (rc == 0)
        rc = baton_get(c, key.data, key.len, NULL, &r);
    if (rc == 0) {
        if (r.kvs_len != 1)
            rc = client_fail(BATONE_NOTFOUND, "lock: the owner key vanished (lease expired?)");
        else {
            ProtobufCBinaryData nm = bin(name, name_len);
            rc = key_set(out, &nm, &key, r.kvs[0].create_revision, lease);
        }
        baton_result_free(&r);
    }
    arena_free(&a);
    return rc;
}

int baton_unlock(struct baton_client *c, const struct baton_lease_key *k)
{
    if (!c || !k || !k->key_len)
        return client_fail(BATONE_INVAL, "unlock: no lock key");
    V3lockpb__UnlockRequest req = V3LOCKPB__UNLOCK_REQUEST__INIT;
    req.key = bin(k->key, k->key_len);
    struct op op = {.path = "/v3lockpb.Lock/Unlock"};
    int rc = client_call(c, &op, &req.base);
    op_free(&op);
    return rc;
}
