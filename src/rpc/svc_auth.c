/*
 * etcdserverpb.Auth for a cluster without authentication: baton has no users or roles (the
 * control plane's clients are trusted, or authenticated by TLS). Every call answers what etcd
 * 3.4 answers on a cluster where auth was never enabled and no user or role exists:
 * AuthStatus says disabled, Authenticate "authentication is not enabled", lists are empty,
 * lookups of a user or role say it is not found, AuthEnable "root user does not exist",
 * AuthDisable succeeds. Creating users or roles is refused as unimplemented (etcd would store
 * them).
 */
#include "rpc/svc.h"

#include <string.h>

#define ERR_AUTH_NOT_ENABLED "etcdserver: authentication is not enabled"
#define ERR_USER_NOT_FOUND   "etcdserver: user name not found"
#define ERR_ROLE_NOT_FOUND   "etcdserver: role name not found"
#define ERR_ROOT_MISSING     "etcdserver: root user does not exist"
#define ERR_USER_EMPTY       "etcdserver: user name is empty"
#define ERR_ROLE_EMPTY       "etcdserver: role name is empty"
#define ERR_NO_USERS         "baton: users and roles are not supported (authentication is off)"

/* A response that is only { header = 1 } plus zero-valued fields: every Auth response's field 1
 * is the header, so the message is encoded by hand. */
static void answer_header(struct services *sv, struct rpc_call *call)
{
    struct arena *a = rpc_call_arena(call);
    Etcdserverpb__ResponseHeader *h = svc_header(sv, a, 0);
    if (!h) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    size_t hlen = etcdserverpb__response_header__get_packed_size(h);
    uint8_t *m = arena_alloc(a, hlen + 1 + varint_len(hlen));
    if (!m) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    m[0] = 1 << 3 | 2;
    size_t n = 1 + varint_put(m + 1, hlen);
    n += etcdserverpb__response_header__pack(h, m + n);
    int rc = rpc_call_send_bytes(call, m, n);
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

static void on_status(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)msg;
    Etcdserverpb__AuthStatusResponse m = ETCDSERVERPB__AUTH_STATUS_RESPONSE__INIT;
    m.header = svc_header(ctx, rpc_call_arena(call), 0);
    m.enabled = false;
    m.authrevision = 0;
    int rc = m.header ? rpc_call_send(call, &m.base) : BATON_ENOMEM;
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

/* AuthDisable, UserList, RoleList: a header (and empty lists). */
static void on_ok(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)msg;
    answer_header(ctx, call);
}

static void on_not_enabled(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)msg;
    (void)ctx;
    rpc_call_finish(call, GRPC_FAILED_PRECONDITION, ERR_AUTH_NOT_ENABLED);
}

static void on_enable(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)msg;
    (void)ctx;
    rpc_call_finish(call, GRPC_FAILED_PRECONDITION, ERR_ROOT_MISSING);
}

static void on_user_missing(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)msg;
    (void)ctx;
    rpc_call_finish(call, GRPC_FAILED_PRECONDITION, ERR_USER_NOT_FOUND);
}

static void on_role_missing(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)msg;
    (void)ctx;
    rpc_call_finish(call, GRPC_FAILED_PRECONDITION, ERR_ROLE_NOT_FOUND);
}

static void on_user_add(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)ctx;
    const Etcdserverpb__AuthUserAddRequest *p = (const Etcdserverpb__AuthUserAddRequest *)msg;
    if (!p->name || !p->name[0])
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT, ERR_USER_EMPTY);
    else
        rpc_call_finish(call, GRPC_UNIMPLEMENTED, ERR_NO_USERS);
}

static void on_role_add(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)ctx;
    const Etcdserverpb__AuthRoleAddRequest *p = (const Etcdserverpb__AuthRoleAddRequest *)msg;
    if (!p->name || !p->name[0])
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT, ERR_ROLE_EMPTY);
    else
        rpc_call_finish(call, GRPC_UNIMPLEMENTED, ERR_NO_USERS);
}

#define AUTH(m, req, fn)                                                                           \
    {                                                                                              \
        "/etcdserverpb.Auth/" m, RPC_UNARY, &etcdserverpb__##req##__descriptor, NULL, fn, NULL,    \
            NULL, NULL, sv                                                                         \
    }

int svc_auth_register(struct services *sv)
{
    const struct rpc_method methods[] = {
        AUTH("AuthEnable", auth_enable_request, on_enable),
        AUTH("AuthDisable", auth_disable_request, on_ok),
        AUTH("AuthStatus", auth_status_request, on_status),
        AUTH("Authenticate", authenticate_request, on_not_enabled),
        AUTH("UserAdd", auth_user_add_request, on_user_add),
        AUTH("UserGet", auth_user_get_request, on_user_missing),
        AUTH("UserList", auth_user_list_request, on_ok),
        AUTH("UserDelete", auth_user_delete_request, on_user_missing),
        AUTH("UserChangePassword", auth_user_change_password_request, on_user_missing),
        AUTH("UserGrantRole", auth_user_grant_role_request, on_user_missing),
        AUTH("UserRevokeRole", auth_user_revoke_role_request, on_user_missing),
        AUTH("RoleAdd", auth_role_add_request, on_role_add),
        AUTH("RoleGet", auth_role_get_request, on_role_missing),
        AUTH("RoleList", auth_role_list_request, on_ok),
        AUTH("RoleDelete", auth_role_delete_request, on_role_missing),
        AUTH("RoleGrantPermission", auth_role_grant_permission_request, on_role_missing),
        AUTH("RoleRevokePermission", auth_role_revoke_permission_request, on_role_missing),
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(methods); i++) {
        int rc = rpc_server_register(sv->rs, &methods[i]);
        if (rc)
            return rc;
    }
    return 0;
}
