/*
 * net: the edge to the operating system's network, on libuv. Only net/ includes uv.h; callers
 * pass the loop as an opaque struct uv_loop_s pointer.
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

struct uv_loop_s;

#define NET_PEERS_MAX 64
#define NET_HOST_MAX  256

enum net_channel { NET_CHANNEL_MSG = 0, NET_CHANNEL_BULK = 1 };

struct net_peer_handler {
    /* A frame from peer `from`; data is valid only during the call. */
    void (*on_message)(void *ctx, uint64_t from, const uint8_t *data, size_t len);
    /* The peer's side closed or refused a connection: its process is most likely gone. */
    void (*on_peer_down)(void *ctx, uint64_t peer);
    void *ctx;
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
int net_peers_start(struct uv_loop_s *loop, const struct net_peers_config *cfg,
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
/* Closes everything; done(ctx) runs once every handle is closed (then p is freed). No handler
 * callback runs after this call. */
void net_peers_stop(struct net_peers *p, void (*done)(void *ctx), void *ctx);

#endif
