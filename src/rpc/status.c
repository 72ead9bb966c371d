/*
 * gRPC status codes and etcd's error texts. The texts are etcd v3.5's (api/v3rpc/rpctypes/
 * error.go) byte for byte: etcd clients turn a status back into a typed error by comparing the
 * message, so a reworded text silently breaks them.
 */
#include "rpc/rpc.h"

static const char *const grpc_code_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *grpc_code_name(int code)
{
    if (code < 0 || (size_t)code >= BATON_ARRAY_LEN(grpc_code_names))
        return "UNKNOWN";
    return grpc_code_names[code];
}

#define E(name, c, text) [RPC_ETCD_##name] = {GRPC_##c, "etcdserver: " text}
static const struct rpc_status etcd_errors[RPC_ETCD_ERROR_COUNT] = {
    E(EMPTY_KEY, INVALID_ARGUMENT, "key is not provided"),
    E(KEY_NOT_FOUND, INVALID_ARGUMENT, "key not found"),
    E(VALUE_PROVIDED, INVALID_ARGUMENT, "value is provided"),
    E(LEASE_PROVIDED, INVALID_ARGUMENT, "lease is provided"),
    E(TOO_MANY_OPS, INVALID_ARGUMENT, "too many operations in txn request"),
    E(DUPLICATE_KEY, INVALID_ARGUMENT, "duplicate key given in txn request"),
    E(COMPACTED, OUT_OF_RANGE, "mvcc: required revision has been compacted"),
    E(FUTURE_REV, OUT_OF_RANGE, "mvcc: required revision is a future revision"),
    E(NO_SPACE, RESOURCE_EXHAUSTED, "mvcc: database space exceeded"),
    E(LEASE_NOT_FOUND, NOT_FOUND, "requested lease not found"),
    E(LEASE_EXIST, FAILED_PRECONDITION, "lease already exists"),
    E(LEASE_TTL_TOO_LARGE, OUT_OF_RANGE, "too large lease TTL"),
    E(WATCH_CANCELED, CANCELLED, "watch canceled"),
    E(MEMBER_EXIST, FAILED_PRECONDITION, "member ID already exist"),
    E(PEER_URL_EXIST, FAILED_PRECONDITION, "Peer URLs already exists"),
    E(MEMBER_NOT_ENOUGH_STARTED, FAILED_PRECONDITION,
      "re-configuration failed due to not enough started members"),
    E(MEMBER_BAD_URLS, INVALID_ARGUMENT, "given member URLs are invalid"),
    E(MEMBER_NOT_FOUND, NOT_FOUND, "member not found"),
    E(MEMBER_NOT_LEARNER, FAILED_PRECONDITION, "can only promote a learner member"),
    E(LEARNER_NOT_READY, FAILED_PRECONDITION,
      "can only promote a learner member which is in sync with leader"),
    E(TOO_MANY_LEARNERS, FAILED_PRECONDITION, "too many learner members in cluster"),
    E(CLUSTER_ID_MISMATCH, FAILED_PRECONDITION, "cluster ID mismatch"),
    E(REQUEST_TOO_LARGE, INVALID_ARGUMENT, "request is too large"),
    E(TOO_MANY_REQUESTS, RESOURCE_EXHAUSTED, "too many requests"),
    E(ROOT_USER_NOT_EXIST, FAILED_PRECONDITION, "root user does not exist"),
    E(ROOT_ROLE_NOT_EXIST, FAILED_PRECONDITION, "root user does not have root role"),
    E(USER_ALREADY_EXIST, FAILED_PRECONDITION, "user name already exists"),
    E(USER_EMPTY, INVALID_ARGUMENT, "user name is empty"),
    E(USER_NOT_FOUND, FAILED_PRECONDITION, "user name not found"),
    E(ROLE_ALREADY_EXIST, FAILED_PRECONDITION, "role name already exists"),
    E(ROLE_NOT_FOUND, FAILED_PRECONDITION, "role name not found"),
    E(ROLE_EMPTY, INVALID_ARGUMENT, "role name is empty"),
    E(AUTH_FAILED, INVALID_ARGUMENT, "authentication failed, invalid user ID or password"),
    E(PERMISSION_NOT_GIVEN, INVALID_ARGUMENT, "permission not given"),
    E(PERMISSION_DENIED, PERMISSION_DENIED, "permission denied"),
    E(ROLE_NOT_GRANTED, FAILED_PRECONDITION, "role is not granted to the user"),
    E(PERMISSION_NOT_GRANTED, FAILED_PRECONDITION, "permission is not granted to the role"),
    E(AUTH_NOT_ENABLED, FAILED_PRECONDITION, "authentication is not enabled"),
    E(INVALID_AUTH_TOKEN, UNAUTHENTICATED, "invalid auth token"),
    E(INVALID_AUTH_MGMT, INVALID_ARGUMENT, "invalid auth management"),
    E(AUTH_OLD_REVISION, INVALID_ARGUMENT, "revision of auth store is old"),
    E(NO_LEADER, UNAVAILABLE, "no leader"),
    E(NOT_LEADER, FAILED_PRECONDITION, "not leader"),
    E(LEADER_CHANGED, UNAVAILABLE, "leader changed"),
    E(NOT_CAPABLE, UNAVAILABLE, "not capable"),
    E(STOPPED, UNAVAILABLE, "server stopped"),
    E(TIMEOUT, UNAVAILABLE, "request timed out"),
    E(TIMEOUT_DUE_TO_LEADER_FAIL, UNAVAILABLE,
      "request timed out, possibly due to previous leader failure"),
    E(TIMEOUT_DUE_TO_CONNECTION_LOST, UNAVAILABLE,
      "request timed out, possibly due to connection lost"),
    E(TIMEOUT_WAIT_APPLIED_INDEX, UNAVAILABLE,
      "request timed out, waiting for the applied index took too long"),
    E(UNHEALTHY, UNAVAILABLE, "unhealthy cluster"),
    E(CORRUPT, DATA_LOSS, "corrupt cluster"),
    E(NOT_SUPPORTED_FOR_LEARNER, UNAVAILABLE, "rpc not supported for learner"),
    E(BAD_LEADER_TRANSFEREE, FAILED_PRECONDITION, "bad leader transferee"),
    E(CLUSTER_VERSION_UNAVAILABLE, UNAVAILABLE, "cluster version not found during downgrade"),
    E(WRONG_DOWNGRADE_VERSION_FORMAT, INVALID_ARGUMENT, "wrong downgrade target version format"),
    E(INVALID_DOWNGRADE_TARGET_VERSION, INVALID_ARGUMENT, "invalid downgrade target version"),
    E(DOWNGRADE_IN_PROCESS, FAILED_PRECONDITION, "cluster has a downgrade job in progress"),
    E(NO_INFLIGHT_DOWNGRADE, FAILED_PRECONDITION, "no inflight downgrade job"),
    E(CANCELED, CANCELLED, "request canceled"),
    E(DEADLINE_EXCEEDED, DEADLINE_EXCEEDED, "context deadline exceeded"),
};
#undef E

struct rpc_status rpc_etcd_status(enum rpc_etcd_error e)
{
    BATON_ASSERT((unsigned)e < RPC_ETCD_ERROR_COUNT);
    return etcd_errors[e];
}

struct rpc_status rpc_status_from_err(int err)
{
    switch (err) {
    case 0:
        return (struct rpc_status){GRPC_OK, NULL};
    case BATON_ECOMPACTED:
        return etcd_errors[RPC_ETCD_COMPACTED];
    case BATON_EFUTURE:
        return etcd_errors[RPC_ETCD_FUTURE_REV];
    case BATON_ENOTLEADER:
    case BATON_EPROPOSALDROP:
        return etcd_errors[RPC_ETCD_NO_LEADER];
    case BATON_ETIMEOUT:
        return etcd_errors[RPC_ETCD_TIMEOUT];
    case BATON_ENOSPACE:
        return etcd_errors[RPC_ETCD_NO_SPACE];
    case BATON_ETOOBIG:
        return etcd_errors[RPC_ETCD_REQUEST_TOO_LARGE];
    case BATON_ECLOSED:
        return etcd_errors[RPC_ETCD_STOPPED];
    case BATON_EBUSY:
        return etcd_errors[RPC_ETCD_TOO_MANY_REQUESTS];
    case BATON_EUNAVAIL:
        return etcd_errors[RPC_ETCD_NOT_CAPABLE];
    case BATON_ENOTFOUND:
        return (struct rpc_status){GRPC_NOT_FOUND, baton_strerror(err)};
    case BATON_EEXIST:
        return (struct rpc_status){GRPC_ALREADY_EXISTS, baton_strerror(err)};
    case BATON_EINVAL:
    case BATON_EPROTO:
        return (struct rpc_status){GRPC_INVALID_ARGUMENT, baton_strerror(err)};
    case BATON_ECORRUPT:
        return etcd_errors[RPC_ETCD_CORRUPT];
    case BATON_ECONFCHANGE:
        return (struct rpc_status){GRPC_FAILED_PRECONDITION, baton_strerror(err)};
    default:
        return (struct rpc_status){err < 0 ? GRPC_INTERNAL : GRPC_UNKNOWN, baton_strerror(err)};
    }
}
