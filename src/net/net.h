/*
 * net: the libuv edge. An event loop, TCP listeners that accept connections and pump bytes
 * between each socket and an rpc server connection, and outgoing TCP connections carrying an
 * rpc client. Every connection has a bounded write queue (when it is full the socket stops being
 * read and rpc stops being asked for output, so a peer that does not read cannot make us
 * buffer), TCP_NODELAY, a 100 ms timer driving rpc deadlines and keepalives, and a clean close
 * (the rpc object is destroyed first, so handlers hear on_cancel / on_close before memory goes).
 *
 * Everything runs on the loop's thread except net_loop_stop. The Raft peer transport will join
 * this module later.
 */
#ifndef BATON_NET_H
#define BATON_NET_H

#include "base/base.h"
#include "rpc/rpc.h"

struct net_loop;
struct net_listener;
struct net_client;

/* log is borrowed (may be NULL). 0 or BATON_ENOMEM / -errno. */
int net_loop_create(const struct log_sink *log, struct net_loop **out);
/* Runs until net_loop_stop. 0 or -errno. */
int net_loop_run(struct net_loop *l);
/* Runs until cond(ctx) is true (checked after every loop iteration, at least every 10 ms) or
 * timeout_ms passes: 0 or BATON_ETIMEOUT. For tests and synchronous client code. */
int net_loop_run_until(struct net_loop *l, bool (*cond)(void *ctx), void *ctx, uint32_t timeout_ms);
/* Makes net_loop_run return. The only function safe to call from another thread. */
void net_loop_stop(struct net_loop *l);
/* Close listeners and clients first; this finishes pending closes and frees the loop. */
void net_loop_destroy(struct net_loop *l);

/* "http://127.0.0.1:2379", "127.0.0.1:2379", "http://[::1]:2379", "http://localhost:2379".
 * host gets the address text (localhost becomes 127.0.0.1). 0 or BATON_EINVAL (https and other
 * schemes included: TLS is not there yet). */
int net_url_parse(const char *url, char *host, size_t host_len, uint16_t *port);

/* Listens on url (port 0 picks a free port) and serves every accepted connection with srv,
 * which must outlive the listener. At most conns_max connections at once (0 = 4096); more are
 * accepted and closed at once. 0, BATON_EINVAL, or -errno (EADDRINUSE, ...). */
int net_listen_rpc(struct net_loop *l, const char *url, struct rpc_server *srv, size_t conns_max,
                   struct net_listener **out);
uint16_t net_listener_port(const struct net_listener *ls);
size_t net_listener_conns(const struct net_listener *ls);
/* Stops accepting and sends GOAWAY on every connection; each closes when its calls are done. */
void net_listener_shutdown(struct net_listener *ls);
/* Closes the listener and every connection now (calls get on_cancel). The listener is freed
 * once its handles are closed; do not use it after this. */
void net_listener_close(struct net_listener *ls);

/* Called once with 0 when connected, and once with a negative code when the connection fails
 * or ends (after net_client_close too); the client is freed after that second call returns. */
typedef void (*net_client_fn)(struct net_client *c, int status, void *ctx);

/* Connects to url with an rpc client (cfg copied). Calls may be started on net_client_rpc()
 * right away; their bytes leave once connected. 0, BATON_EINVAL, BATON_ENOMEM or -errno; on
 * error on_state is never called. */
int net_connect_rpc(struct net_loop *l, const char *url, const struct rpc_client_config *cfg,
                    net_client_fn on_state, void *ctx, struct net_client **out);
/* The client's rpc half; valid until on_state reports the end. */
struct rpc_client *net_client_rpc(struct net_client *c);
/* Closes the connection (open calls get on_close UNAVAILABLE), then on_state(BATON_ECLOSED). */
void net_client_close(struct net_client *c);

#endif
