/*
 * net: the libuv edge. An event loop, TCP listeners that accept connections and pump bytes
 * between each socket and an rpc server connection, and outgoing TCP connections carrying an
 * rpc client. Every connection has a bounded write queue (when it is full the socket stops being
 * read and rpc stops being asked for output, so a peer that does not read cannot make us
 * buffer), TCP_NODELAY, a 100 ms timer driving rpc deadlines and keepalives, and a clean close
 * (the rpc object is destroyed first, so handlers hear on_cancel / on_close before memory goes).
 *
 * Everything runs on the loop's thread except net_loop_stop and net_async_send.
 *
 * ---- Peer transport ---------------------------------------------------------------------------
 * Raft messages between members travel over TCP. Each member dials every peer (one connection
 * for messages, one for bulk traffic such as snapshot chunks, so a snapshot never delays
 * heartbeats) and accepts the peers' connections; each connection carries frames in one
 * direction only. A connection opens with a handshake (magic, cluster id, sender, receiver,
 * channel) that the acceptor checks, then carries frames: a 4-byte little-endian length and
 * that many bytes. Send queues are bounded per peer; a full queue or a link that is down drops
 * the message with an error (Raft retransmits). Links reconnect with exponential backoff.
 *
 * When a peer's kernel closes a connection (EOF or reset: the process exited or was killed) or
 * refuses a new one, the transport reports the peer down, once per outage, so Raft can start an
 * election at once (raft_peer_down) instead of waiting out the election timeout.
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

/* ---- Loop utilities -------------------------------------------------------------------------
 * Timers, cross-thread wake-ups, file descriptors and signals for programs that assemble the
 * core (batond), so that only net/ includes libuv. Each handle is closed with its *_close and
 * freed by the loop afterwards; no callback runs after *_close. */
struct net_timer;
struct net_async;
struct net_fd;
struct net_signal;

/* Calls cb(ctx) after first_ms, then every repeat_ms (0: once). 0 or BATON_ENOMEM. */
int net_timer_start(struct net_loop *l, uint64_t first_ms, uint64_t repeat_ms,
                    void (*cb)(void *ctx), void *ctx, struct net_timer **out);
void net_timer_close(struct net_timer *t);
/* cb(ctx) runs on the loop thread after net_async_send, which any thread may call; several
 * sends may fold into one call. */
int net_async_create(struct net_loop *l, void (*cb)(void *ctx), void *ctx, struct net_async **out);
void net_async_send(struct net_async *a);
void net_async_close(struct net_async *a);
/* cb(ctx) runs once on the loop thread before the loop next waits for I/O, however many
 * net_defer_request calls (loop thread only) came before: work queued by all the events of one
 * loop turn is done once, without the system calls of an async wake-up. */
struct net_defer;
int net_defer_create(struct net_loop *l, void (*cb)(void *ctx), void *ctx, struct net_defer **out);
void net_defer_request(struct net_defer *d);
void net_defer_close(struct net_defer *d);
/* cb(ctx) whenever fd is readable (level-triggered). 0, BATON_ENOMEM or -errno. */
int net_fd_watch(struct net_loop *l, int fd, void (*cb)(void *ctx), void *ctx, struct net_fd **out);
void net_fd_close(struct net_fd *f);
/* cb(ctx, signum) on the loop thread when the process receives signum. */
int net_signal_watch(struct net_loop *l, int signum, void (*cb)(void *ctx, int signum), void *ctx,
                     struct net_signal **out);
void net_signal_close(struct net_signal *s);
/* Monotonic milliseconds (not the loop's cached time). */
uint64_t net_now_ms(void);

/* ---- Peer transport (see the top of this file) ------------------------------------------------
 */
#define NET_PEERS_MAX 64
#define NET_HOST_MAX  256

enum net_channel { NET_CHANNEL_MSG = 0, NET_CHANNEL_BULK = 1 };

struct net_peer_handler {
    /* A frame from peer `from`; data is valid only during the call. */
    void (*on_message)(void *ctx, uint64_t from, const uint8_t *data, size_t len);
    /* The peer's side closed or refused a connection: its process is most likely gone. */
    void (*on_peer_down)(void *ctx, uint64_t peer);
    void *ctx;
    /* Optional: a member starting with --initial-cluster-state existing asks who it is (see
     * net_peers_discover); append the answer for the member advertising peer_url to reply. */
    void (*on_discover)(void *ctx, const char *peer_url, struct buf *reply);
};

struct net_peers_config {
    uint64_t self_id;           /* non-zero */
    uint64_t cluster_id;        /* connections from other clusters are refused */
    const char *listen_host;    /* numeric address; NULL: do not listen */
    uint16_t listen_port;       /* 0: the kernel picks (see net_peers_port) */
    size_t queue_bytes_max;     /* per peer and channel; 0: 64 MiB */
    size_t frame_bytes_max;     /* larger incoming frames close the connection; 0: 80 MiB */
    uint32_t backoff_min_ms;    /* 0: 20 */
    uint32_t backoff_max_ms;    /* 0: 1000 */
    const struct log_sink *log; /* borrowed; may be NULL */
};

struct net_peers;

/* Starts listening (if asked). The handler is copied; its ctx is borrowed until stop completes.
 * 0, -errno (bind/listen failure, e.g. -EADDRINUSE), BATON_EINVAL or BATON_ENOMEM. */
int net_peers_start(struct net_loop *loop, const struct net_peers_config *cfg,
                    const struct net_peer_handler *h, struct net_peers **out);
uint16_t net_peers_port(const struct net_peers *p);
/* Adds a peer (or changes its address) and starts dialing it. host is a numeric address or a
 * name resolved now. 0, BATON_ETOOBIG (NET_PEERS_MAX), BATON_EINVAL (bad host/id). */
int net_peers_add(struct net_peers *p, uint64_t id, const char *host, uint16_t port);
/* Forgets a peer: its links close, queued frames are dropped. */
void net_peers_remove(struct net_peers *p, uint64_t id);
/* Queues one frame (copied) to peer `to`. 0; BATON_ENOTFOUND (unknown peer); BATON_EUNAVAIL
 * (link down, frame dropped); BATON_EBUSY (queue full, frame dropped); BATON_ETOOBIG. */
int net_peers_send(struct net_peers *p, uint64_t to, enum net_channel ch, const void *data,
                   size_t len);
/* True when the message link to peer is connected. */
bool net_peers_connected(const struct net_peers *p, uint64_t peer);
/* Discovery, for a member joining an existing cluster before it knows its own id: connects to
 * the member listening for peers at host:port, sends peer_url and reads the member's answer
 * (whatever its on_discover appended) into reply. Blocking, bounded by timeout_ms; meant for
 * start-up, before the loop runs. 0, -errno, BATON_ETIMEOUT, BATON_EPROTO (closed without an
 * answer), BATON_EINVAL. */
int net_peers_discover(const char *host, uint16_t port, const char *peer_url, uint32_t timeout_ms,
                       struct buf *reply);
/* Closes everything; done(ctx) runs once every handle is closed (then p is freed). No handler
 * callback runs after this call. */
void net_peers_stop(struct net_peers *p, void (*done)(void *ctx), void *ctx);

#endif
