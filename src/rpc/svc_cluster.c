/*
 * etcdserverpb.Cluster: MemberList, MemberAdd, MemberRemove, MemberUpdate, MemberPromote.
 *
 * Membership changes are leader-only operations (server_member_*, forwarded by followers).
 * Once one completes, the answer carries the member list after the change, as etcd's does; a
 * follower's table may lag the leader's, so the list is read after a read barrier (the change
 * is then applied here too). MemberList reads the local table, after a barrier when asked to be
 * linearizable. Only members in the configuration in effect are listed (the table remembers
 * removed members' attributes).
 */
#include "rpc/svc.h"

#include <string.h>

enum cluster_op { OP_LIST, OP_ADD, OP_REMOVE, OP_UPDATE, OP_PROMOTE };

struct cluster_call {
    struct services *sv;
    struct rpc_call *call;
    struct server_call *pending;
    enum cluster_op op;
    uint64_t added_id; /* MemberAdd: the new member's id */
    bool learner;
    const Etcdserverpb__MemberAddRequest *add;
};

static Etcdserverpb__Member *member_pb(struct arena *a, const struct server_member *m, bool learner)
{
    Etcdserverpb__Member *p = arena_alloc(a, sizeof(*p));
    char **peers = arena_alloc(a, SERVER_URLS_MAX * sizeof(char *));
    char **clients = arena_alloc(a, SERVER_URLS_MAX * sizeof(char *));
    if (!p || !peers || !clients)
        return NULL;
    etcdserverpb__member__init(p);
    p->id = m->id;
    p->name = (char *)m->name;
    for (int i = 0; i < m->peer_urls_len; i++)
        peers[i] = (char *)m->peer_urls[i];
    for (int i = 0; i < m->client_urls_len; i++)
        clients[i] = (char *)m->client_urls[i];
    p->peerurls = peers;
    p->n_peerurls = (size_t)m->peer_urls_len;
    p->clienturls = clients;
    p->n_clienturls = (size_t)m->client_urls_len;
    p->islearner = learner;
    return p;
}

/* The members of the configuration in effect, copied into the call's arena (the server's table
 * may change before the answer is written out). */
static int members_pb(struct services *sv, struct arena *a, Etcdserverpb__Member ***out,
                      size_t *n_out, const struct server_member **found, uint64_t find_id)
{
    int len = 0;
    const struct server_member *ms = server_members(sv->s, &len);
    struct server_member *copy = len ? arena_dup(a, ms, (size_t)len * sizeof(*ms)) : NULL;
    Etcdserverpb__Member **list = len ? arena_alloc(a, (size_t)len * sizeof(*list)) : NULL;
    if (len && (!copy || !list))
        return BATON_ENOMEM;
    size_t n = 0;
    for (int i = 0; i < len; i++) {
        if (found && copy[i].id == find_id)
            *found = &copy[i];
        if (!server_member_in_config(sv->s, copy[i].id))
            continue;
        list[n] = member_pb(a, &copy[i], server_member_is_learner(sv->s, copy[i].id));
        if (!list[n++])
            return BATON_ENOMEM;
    }
    *out = list;
    *n_out = n;
    return 0;
}

static void respond(struct cluster_call *c)
{
    struct services *sv = c->sv;
    struct rpc_call *call = c->call;
    struct arena *a = rpc_call_arena(call);
    Etcdserverpb__ResponseHeader *h = svc_header(sv, a, 0);
    Etcdserverpb__Member **list = NULL;
    size_t n = 0;
    const struct server_member *added = NULL;
    int rc = h ? members_pb(sv, a, &list, &n, &added, c->added_id) : BATON_ENOMEM;
    if (rc) {
        rpc_call_finish_err(call, rc);
        return;
    }
    switch (c->op) {
    case OP_LIST: {
        Etcdserverpb__MemberListResponse m = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
        m.header = h;
        m.members = list;
        m.n_members = n;
        rc = rpc_call_send(call, &m.base);
        break;
    }
    case OP_ADD: {
        Etcdserverpb__MemberAddResponse m = ETCDSERVERPB__MEMBER_ADD_RESPONSE__INIT;
        m.header = h;
        m.members = list;
        m.n_members = n;
        /* The new member as added: its id and peer URLs (it has no name until it starts). */
        Etcdserverpb__Member *p = arena_alloc(a, sizeof(*p));
        if (!p) {
            rc = BATON_ENOMEM;
            break;
        }
        etcdserverpb__member__init(p);
        p->id = c->added_id;
        p->peerurls = c->add->peerurls;
        p->n_peerurls = c->add->n_peerurls;
        p->islearner = c->learner;
        if (added) {
            p->name = (char *)added->name;
            p->clienturls = NULL;
        }
        m.member = p;
        rc = rpc_call_send(call, &m.base);
        break;
    }
    case OP_REMOVE: {
        Etcdserverpb__MemberRemoveResponse m = ETCDSERVERPB__MEMBER_REMOVE_RESPONSE__INIT;
        m.header = h;
        m.members = list;
        m.n_members = n;
        rc = rpc_call_send(call, &m.base);
        break;
    }
    case OP_UPDATE: {
        Etcdserverpb__MemberUpdateResponse m = ETCDSERVERPB__MEMBER_UPDATE_RESPONSE__INIT;
        m.header = h;
        m.members = list;
        m.n_members = n;
        rc = rpc_call_send(call, &m.base);
        break;
    }
    case OP_PROMOTE: {
        Etcdserverpb__MemberPromoteResponse m = ETCDSERVERPB__MEMBER_PROMOTE_RESPONSE__INIT;
        m.header = h;
        m.members = list;
        m.n_members = n;
        rc = rpc_call_send(call, &m.base);
        break;
    }
    }
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

/* etcd's texts for the membership errors the server reports. */
static void finish_member_err(struct cluster_call *c, int err)
{
    enum rpc_etcd_error e = RPC_ETCD_ERROR_COUNT;
    switch (err) {
    case BATON_EEXIST:
        e = c->op == OP_ADD || c->op == OP_UPDATE ? RPC_ETCD_PEER_URL_EXIST : RPC_ETCD_MEMBER_EXIST;
        break;
    case BATON_ETOOBIG:
        e = c->op == OP_ADD ? RPC_ETCD_TOO_MANY_LEARNERS : RPC_ETCD_ERROR_COUNT;
        break;
    case BATON_ENOTFOUND:
        e = RPC_ETCD_MEMBER_NOT_FOUND;
        break;
    case BATON_EBUSY:
        e = c->op == OP_PROMOTE ? RPC_ETCD_LEARNER_NOT_READY : RPC_ETCD_ERROR_COUNT;
        break;
    case BATON_EINVAL:
        e = c->op == OP_PROMOTE ? RPC_ETCD_MEMBER_NOT_LEARNER : RPC_ETCD_ERROR_COUNT;
        break;
    default:
        break;
    }
    if (e == RPC_ETCD_ERROR_COUNT) {
        svc_finish_err(c->call, err);
        return;
    }
    struct rpc_status st = rpc_etcd_status(e);
    rpc_call_finish(c->call, st.code, st.message);
}

static void on_barrier(void *ctx, int err, const struct server_result *res)
{
    (void)res;
    struct cluster_call *c = ctx;
    c->pending = NULL;
    rpc_call_set_user(c->call, NULL);
    /* A change that succeeded is reported as such even when no leader can confirm the list
     * right now (a leader that removed itself steps down as the change commits): the list is
     * then this member's, which may lag by that change. */
    if (err && c->op == OP_LIST) {
        svc_finish_err(c->call, err);
        return;
    }
    respond(c);
}

static void barrier_then_respond(struct cluster_call *c)
{
    int rc = server_read_barrier(c->sv->s, on_barrier, c, &c->pending);
    if (rc && c->op != OP_LIST) {
        rpc_call_set_user(c->call, NULL);
        respond(c);
    } else if (rc) {
        rpc_call_set_user(c->call, NULL);
        svc_finish_err(c->call, rc);
    }
}

static void on_op_done(void *ctx, int err, int64_t v1, int64_t v2)
{
    (void)v2;
    struct cluster_call *c = ctx;
    c->pending = NULL;
    if (err) {
        rpc_call_set_user(c->call, NULL);
        finish_member_err(c, err);
        return;
    }
    if (c->op == OP_ADD)
        c->added_id = (uint64_t)v1;
    barrier_then_respond(c);
}

static void on_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct cluster_call *c = rpc_call_user(call);
    if (c && c->pending)
        server_call_cancel(c->pending);
}

static struct cluster_call *cluster_call_new(struct services *sv, struct rpc_call *call,
                                             enum cluster_op op)
{
    struct cluster_call *c = arena_alloc(rpc_call_arena(call), sizeof(*c));
    if (!c) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return NULL;
    }
    memset(c, 0, sizeof(*c));
    c->sv = sv;
    c->call = call;
    c->op = op;
    rpc_call_set_user(call, c);
    return c;
}

static void submitted(struct cluster_call *c, int rc)
{
    if (rc) {
        rpc_call_set_user(c->call, NULL);
        finish_member_err(c, rc);
    }
}

static void on_list(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Etcdserverpb__MemberListRequest *p = (const Etcdserverpb__MemberListRequest *)msg;
    struct cluster_call *c = cluster_call_new(ctx, call, OP_LIST);
    if (!c)
        return;
    if (p->linearizable) {
        barrier_then_respond(c);
        return;
    }
    rpc_call_set_user(call, NULL);
    respond(c);
}

static void on_add(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Etcdserverpb__MemberAddRequest *p = (const Etcdserverpb__MemberAddRequest *)msg;
    if (p->n_peerurls == 0 || p->n_peerurls > SERVER_URLS_MAX) {
        struct rpc_status st = rpc_etcd_status(RPC_ETCD_MEMBER_BAD_URLS);
        rpc_call_finish(call, st.code, st.message);
        return;
    }
    struct cluster_call *c = cluster_call_new(ctx, call, OP_ADD);
    if (!c)
        return;
    c->add = p;
    c->learner = p->islearner;
    submitted(c, server_member_add(c->sv->s, (const char *const *)p->peerurls, (int)p->n_peerurls,
                                   p->islearner, on_op_done, c, &c->pending));
}

static void on_remove(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Etcdserverpb__MemberRemoveRequest *p = (const Etcdserverpb__MemberRemoveRequest *)msg;
    struct cluster_call *c = cluster_call_new(ctx, call, OP_REMOVE);
    if (c)
        submitted(c, server_member_remove(c->sv->s, p->id, on_op_done, c, &c->pending));
}

static void on_update(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Etcdserverpb__MemberUpdateRequest *p = (const Etcdserverpb__MemberUpdateRequest *)msg;
    if (p->n_peerurls == 0 || p->n_peerurls > SERVER_URLS_MAX) {
        struct rpc_status st = rpc_etcd_status(RPC_ETCD_MEMBER_BAD_URLS);
        rpc_call_finish(call, st.code, st.message);
        return;
    }
    struct cluster_call *c = cluster_call_new(ctx, call, OP_UPDATE);
    if (c)
        submitted(c, server_member_update(c->sv->s, p->id, (const char *const *)p->peerurls,
                                          (int)p->n_peerurls, on_op_done, c, &c->pending));
}

static void on_promote(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    const Etcdserverpb__MemberPromoteRequest *p = (const Etcdserverpb__MemberPromoteRequest *)msg;
    struct cluster_call *c = cluster_call_new(ctx, call, OP_PROMOTE);
    if (c)
        submitted(c, server_member_promote(c->sv->s, p->id, on_op_done, c, &c->pending));
}

int svc_cluster_register(struct services *sv)
{
    const struct rpc_method methods[] = {
        {"/etcdserverpb.Cluster/MemberList", RPC_UNARY,
         &etcdserverpb__member_list_request__descriptor, NULL, on_list, NULL, NULL, on_cancel, sv},
        {"/etcdserverpb.Cluster/MemberAdd", RPC_UNARY,
         &etcdserverpb__member_add_request__descriptor, NULL, on_add, NULL, NULL, on_cancel, sv},
        {"/etcdserverpb.Cluster/MemberRemove", RPC_UNARY,
         &etcdserverpb__member_remove_request__descriptor, NULL, on_remove, NULL, NULL, on_cancel,
         sv},
        {"/etcdserverpb.Cluster/MemberUpdate", RPC_UNARY,
         &etcdserverpb__member_update_request__descriptor, NULL, on_update, NULL, NULL, on_cancel,
         sv},
        {"/etcdserverpb.Cluster/MemberPromote", RPC_UNARY,
         &etcdserverpb__member_promote_request__descriptor, NULL, on_promote, NULL, NULL, on_cancel,
         sv},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(methods); i++) {
        int rc = rpc_server_register(sv->rs, &methods[i]);
        if (rc)
            return rc;
    }
    return 0;
}
