/*
 * v3lockpb.Lock: Lock waits for its turn with the recipe of svc_election.c (key
 * "<name>/<lease hex>" attached to the client's lease; the owner is the key with the lowest
 * create revision, which is also the fencing token) and answers the key; Unlock deletes it.
 * Nothing here outlives a call: a holder that dies stops renewing its lease, and the lease's
 * expiry deletes the key, which passes the lock on.
 */
#include "rpc/svc.h"

#include <v3lock.pb-c.h>

#include <string.h>

const ProtobufCMessage *svc_lock_response(struct arena *a, Etcdserverpb__ResponseHeader *h,
                                          const uint8_t *key, size_t key_len)
{
    V3lockpb__LockResponse *m = arena_alloc(a, sizeof(*m));
    uint8_t *k = arena_dup(a, key, key_len);
    if (!m || !k || !h)
        return NULL;
    v3lockpb__lock_response__init(m);
    m->header = h;
    m->key = (ProtobufCBinaryData){key_len, k};
    return &m->base;
}

static void on_lock(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const V3lockpb__LockRequest *p = (const V3lockpb__LockRequest *)msg;
    int rc = svc_recipe_start(ctx, call, true, p->name, p->lease, (ProtobufCBinaryData){0, NULL});
    if (rc)
        rpc_call_finish_err(call, rc);
}

struct unlock_call {
    struct services *sv;
    struct rpc_call *call;
    struct server_call *pending;
};

static void on_unlocked(void *ctx, int err, const struct server_result *res)
{
    struct unlock_call *u = ctx;
    struct rpc_call *call = u->call;
    struct arena *a = rpc_call_arena(call);
    rpc_call_set_user(call, NULL);
    if (err) {
        svc_finish_err(call, err);
        return;
    }
    V3lockpb__UnlockResponse *m = arena_alloc(a, sizeof(*m));
    if (m) {
        v3lockpb__unlock_response__init(m);
        m->header = svc_header(u->sv, a, res->revision);
    }
    int rc = m && m->header ? rpc_call_send(call, &m->base) : BATON_ENOMEM;
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

static void on_unlock(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const V3lockpb__UnlockRequest *p = (const V3lockpb__UnlockRequest *)msg;
    if (p->key.len == 0) {
        svc_finish_err(call, MVCC_EEMPTYKEY);
        return;
    }
    struct unlock_call *u = arena_alloc(rpc_call_arena(call), sizeof(*u));
    if (!u) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    *u = (struct unlock_call){sv, call, NULL};
    rpc_call_set_user(call, u);
    /* etcd's lockServer.Unlock: a plain Delete of the key. */
    struct request q = {.type = REQ_DELETE};
    q.u.del = (struct mvcc_delete_req){.key = svc_bytes(p->key)};
    int rc = server_propose(sv->s, &q, rpc_call_arena(call), on_unlocked, u, &u->pending);
    if (rc) {
        rpc_call_set_user(call, NULL);
        svc_finish_err(call, rc);
    }
}

static void unlock_on_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct unlock_call *u = rpc_call_user(call);
    if (u && u->pending)
        server_call_cancel(u->pending);
}

int svc_lock_register(struct services *sv)
{
    const struct rpc_method methods[] = {
        {"/v3lockpb.Lock/Lock", RPC_UNARY, &v3lockpb__lock_request__descriptor, NULL, on_lock, NULL,
         NULL, svc_recipe_on_cancel, sv},
        {"/v3lockpb.Lock/Unlock", RPC_UNARY, &v3lockpb__unlock_request__descriptor, NULL, on_unlock,
         NULL, NULL, unlock_on_cancel, sv},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(methods); i++) {
        int rc = rpc_server_register(sv->rs, &methods[i]);
        if (rc)
            return rc;
    }
    return 0;
}
