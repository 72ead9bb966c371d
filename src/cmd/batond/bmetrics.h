/*
 * batond's /metrics: the families etcd exposes (same names and buckets where etcd has one),
 * fed by the layers without them knowing about metrics. server/ reports counters through
 * server_status and durations through its observer; rpc/ reports each call's start and end
 * (method, status code) through its call observer. Everything here runs on the loop thread.
 */
#ifndef BATOND_BMETRICS_H
#define BATOND_BMETRICS_H

#include "metrics/metrics.h"
#include "rpc/rpc.h"
#include "server/server.h"

#define BMETRICS_METHODS_MAX 256
#define BMETRICS_CODES       17 /* gRPC codes 0..16 */

/* Series of one gRPC method, created on first use. */
struct bmetrics_method {
    struct metrics_series *started;
    struct metrics_series *handled[BMETRICS_CODES];
};

struct bmetrics {
    struct metrics *m;
    struct server *srv;     /* borrowed; set once the member is open */
    struct rpc_server *rpc; /* borrowed; set once created */
    struct services *svc;   /* borrowed; set once created (its own watchers are not counted) */
    uint64_t quota_bytes;
    struct server_status st;        /* refreshed once per render */
    struct rpc_server_stats rpc_st; /* same */
    struct metrics_series *wal_fsync, *backend_commit;
    struct bmetrics_method methods[BMETRICS_METHODS_MAX];
};

/* Creates the registry and every family that does not depend on a method. 0 or BATON_ENOMEM. */
int bmetrics_init(struct bmetrics *bm, uint64_t quota_bytes);
void bmetrics_free(struct bmetrics *bm);

/* etcd_server_id{server_id="<hex>"} 1, once the member's id is known. */
void bmetrics_set_member(struct bmetrics *bm, uint64_t member_id);

/* The member's observer and rpc's call observer, both with ctx = bm. */
struct server_observer bmetrics_server_observer(struct bmetrics *bm);
struct rpc_call_observer bmetrics_rpc_observer(struct bmetrics *bm);

/* The whole registry in Prometheus text format (0.0.4). 0 or BATON_ENOMEM. */
int bmetrics_render(struct bmetrics *bm, struct buf *out);

/* Go's spelling of a gRPC code, as grpc_server_handled_total's grpc_code label carries it
 * ("OK", "Canceled", "OutOfRange", ...). Static. */
const char *bmetrics_code_label(int code);

#endif
