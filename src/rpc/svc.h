/* Shared by the service files: the context and protobuf helpers. */
#ifndef BATON_RPC_SVC_H
#define BATON_RPC_SVC_H

#include "rpc/services.h"
#include "server/request.h"

#include <kv.pb-c.h>
#include <rpc.pb-c.h>

struct services {
    struct rpc_server *rs;
    struct server *s;
    struct services_config cfg;
    struct maint *maint; /* svc_maint.c: snapshot streams in progress */
};

/* A ResponseHeader for now (revision: the store's current one unless rev > 0). */
Etcdserverpb__ResponseHeader *svc_header(struct services *sv, struct arena *a, int64_t rev);
/* An mvcc KeyValue as a protobuf-c struct (pointers into kv's memory). */
Mvccpb__KeyValue *svc_kv(struct arena *a, const struct mvcc_kv *kv);
struct mvcc_bytes svc_bytes(ProtobufCBinaryData b);
/* Finishes call with the status etcd gives for err (mvcc's texts included). */
void svc_finish_err(struct rpc_call *call, int err);

int svc_kv_register(struct services *sv);
int svc_cluster_register(struct services *sv);
int svc_maint_register(struct services *sv);
/* Ends the snapshot streams still open (their calls finish with "server stopped"). */
void svc_maint_destroy(struct services *sv);

#endif
