/*
 * etcd's v3 services on top of the member (server/): one file per service, registered on an
 * rpc_server. They translate protobuf requests into mvcc/server requests and answers back,
 * with etcd's status codes and texts. Built as the library `rpcsvc`, so client-side programs
 * can link rpc without the server.
 */
#ifndef BATON_RPC_SERVICES_H
#define BATON_RPC_SERVICES_H

#include "rpc/rpc.h"
#include "server/server.h"

struct services_config {
    uint64_t max_request_bytes; /* etcd's --max-request-bytes: larger proposals are refused */
    uint32_t max_txn_ops;
    const struct log_sink *log;
    uint32_t watch_progress_ms; /* progress_notify interval; 0: etcd's 10 minutes */
    /* This member's software version ("major.minor.patch"), published for the cluster version
     * (baton.v1.Config); NULL or "": not published. Borrowed; must outlive the services. */
    const char *version;
    uint32_t request_timeout_ms; /* how long a TSO/id request waits for a window; 0: 5 s */
};

struct services;

/* Registers every service on rs. s and rs are borrowed and must outlive the services. */
int services_create(struct rpc_server *rs, struct server *s, const struct services_config *cfg,
                    struct services **out);
/* Periodic work, at the member's tick rate: watch catch-up and progress notifications, waiters
 * of elections and locks, snapshot copies that finished and can start streaming. */
void services_tick(struct services *sv);
/* Cancels what the services hold (watchers, keep-alive streams). */
void services_destroy(struct services *sv);

#endif
