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
    struct wstream *watch_streams; /* svc_watch.c */
    struct ka_stream *ka_streams;  /* svc_lease.c */
    struct svc_recipe *recipes;    /* svc_election.c: Campaign, Lock, Observe calls held */
    size_t recipes_len;
    struct maint *maint;     /* svc_maint.c: snapshot streams in progress */
    struct nodes *nodes;     /* svc_baton_nodes.c: the leader's node table, heartbeat streams */
    struct tso_svc *tso;     /* svc_baton_tso.c */
    struct cfg_svc *cfg_svc; /* svc_baton_config.c */
};

/* A ResponseHeader for now (revision: the store's current one unless rev > 0): filled in place,
 * or allocated in a. Cheap enough for every response. */
void svc_header_fill(struct services *sv, Etcdserverpb__ResponseHeader *h, int64_t rev);
Etcdserverpb__ResponseHeader *svc_header(struct services *sv, struct arena *a, int64_t rev);
/* An mvcc KeyValue as a protobuf-c struct (pointers into kv's memory). */
Mvccpb__KeyValue *svc_kv(struct arena *a, const struct mvcc_kv *kv);
struct mvcc_bytes svc_bytes(ProtobufCBinaryData b);
/* Finishes call with the status etcd gives for err (mvcc's texts included). */
void svc_finish_err(struct rpc_call *call, int err);

int svc_kv_register(struct services *sv);
int svc_watch_register(struct services *sv);
/* Flushes queued watch responses, sends progress notifications, feeds watchers behind. */
void svc_watch_tick(struct services *sv);
/* Cancels every watcher (the store may close next); streams are freed when their calls end. */
void svc_watch_destroy(struct services *sv);
int svc_lease_register(struct services *sv);
void svc_lease_destroy(struct services *sv);

/* svc_election.c, svc_lock.c, svc_auth.c */
int svc_election_register(struct services *sv);
int svc_lock_register(struct services *sv);
int svc_auth_register(struct services *sv);
/* Campaign (lock false) or Lock: creates "<name>/<lease hex>" and answers call once every key
 * under "<name>/" created before it is gone. 0 (the call is answered or held), or an error
 * (nothing was done: the caller ends the call). */
int svc_recipe_start(struct services *sv, struct rpc_call *call, bool lock,
                     ProtobufCBinaryData name, int64_t lease, ProtobufCBinaryData value);
void svc_recipe_on_cancel(struct rpc_call *call, int code, void *ctx);
/* Looks again for the waiters whose watches fired (watch callbacks cannot read the store). */
void svc_recipe_tick(struct services *sv);
/* Cancels every watch and pending proposal; the calls are freed when they end. */
void svc_recipe_destroy(struct services *sv);
/* LockResponse {header, key} in a (svc_lock.c). */
const ProtobufCMessage *svc_lock_response(struct arena *a, Etcdserverpb__ResponseHeader *h,
                                          const uint8_t *key, size_t key_len);
int svc_cluster_register(struct services *sv);
int svc_maint_register(struct services *sv);
/* Ends the snapshot streams still open (their calls finish with "server stopped"). */
void svc_maint_destroy(struct services *sv);
/* Snapshot copies that finished start streaming. */
void svc_maint_tick(struct services *sv);

/* svc_baton_nodes.c: baton.v1.Nodes. The tick follows leadership (loads the node table on
 * promotion) and proposes the liveness policy's transitions. */
int svc_nodes_register(struct services *sv);
/* 1 while the node table's watch runs (this member leads), else 0. */
size_t svc_nodes_watchers(const struct services *sv);
void svc_nodes_tick(struct services *sv);
/* Ends the heartbeat streams' work and cancels transitions in flight; frees the node table. */
void svc_nodes_destroy(struct services *sv);
/* baton.v1.Tso (svc_baton_tso.c): leadership changes, window extension, request deadlines. */
int svc_tso_register(struct services *sv);
void svc_tso_tick(struct services *sv);
/* Fails every waiting request ("server stopped") and forgets the proposals in flight. */
void svc_tso_destroy(struct services *sv);
/* baton.v1.Config (svc_baton_config.c): compacted watchers end, the member's version is
 * published. */
int svc_config_register(struct services *sv);
void svc_config_tick(struct services *sv);
/* Ends every Config.Watch call and cancels its watcher (before the store closes). */
void svc_config_destroy(struct services *sv);

#endif
