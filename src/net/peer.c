/*
 * The Raft peer transport (see net.h). Every TCP connection is a struct conn allocated per
 * attempt and freed in its close callback, so a link can start a new connection while the old
 * handle is still closing. Links and peers live in a fixed array inside struct net_peers.
 */
#include "net/net_int.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HANDSHAKE_MAGIC  "BATONPR1"
#define HANDSHAKE_LEN    (8 + 8 + 8 + 8 + 1)
#define DISCOVER_MAGIC   "BATONDS1" /* then u32 length + a joining member's peer URL */
#define DISCOVER_URL_MAX 1024
#define READ_CHUNK       (64 * 1024)

struct net_peers;
struct link;

struct conn {
    uv_tcp_t tcp;
    struct net_peers *np;
    struct link *link; /* outgoing: the owning link, NULL once detached; incoming: NULL */
    uint64_t peer_id;  /* incoming: from the handshake */
    uint8_t channel;
    bool incoming;
    bool handshaken;
    bool writing;
    bool closing;
    bool discovery;  /* incoming: a discovery request answered, close once written */
    struct buf rbuf; /* incoming bytes not yet framed */
    struct buf wbuf; /* bytes handed to uv_write */
    uv_connect_t creq;
    uv_write_t wreq;
    struct conn *prev, *next; /* np->conns */
};

struct link {
    struct peer *peer;
    uint8_t channel;
    struct conn *conn; /* current connection (connecting or up), or NULL */
    bool up;           /* handshake sent, frames may flow */
    struct buf pending;
    uv_timer_t retry;
    uint32_t backoff_ms;
};

struct peer {
    struct net_peers *np;
    uint64_t id; /* 0: free slot */
    struct sockaddr_storage addr;
    char host[NET_HOST_MAX];
    bool reachable; /* a connection to or from it was up since the last down report */
    struct link links[2];
};

struct net_peers {
    uv_loop_t *loop;
    struct net_peers_config cfg;
    struct net_peer_handler h;
    uv_tcp_t listener;
    bool listening;
    struct peer peers[NET_PEERS_MAX];
    struct conn *conns;
    int handles; /* open uv handles; stop completes at zero */
    bool stopping;
    void (*stop_done)(void *);
    void *stop_ctx;
};

static void conn_fail(struct conn *c, int status);
static void link_schedule_retry(struct link *l);
static void link_flush(struct link *l);

static struct peer *peer_find(const struct net_peers *np, uint64_t id)
{
    for (int i = 0; i < NET_PEERS_MAX; i++)
        if (np->peers[i].id == id)
            return (struct peer *)&np->peers[i];
    return NULL;
}

static void peers_free(struct net_peers *np)
{
    void (*done)(void *) = np->stop_done;
    void *ctx = np->stop_ctx;
    for (int i = 0; i < NET_PEERS_MAX; i++)
        for (int c = 0; c < 2; c++)
            buf_free(&np->peers[i].links[c].pending);
    free(np);
    if (done)
        done(ctx);
}

static void handle_closed(uv_handle_t *h)
{
    struct net_peers *np = h->data;
    if (--np->handles == 0 && np->stopping)
        peers_free(np);
}

static void conn_closed(uv_handle_t *h)
{
    struct conn *c = (struct conn *)h;
    struct net_peers *np = c->np;
    buf_free(&c->rbuf);
    buf_free(&c->wbuf);
    free(c);
    if (--np->handles == 0 && np->stopping)
        peers_free(np);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->link) {
        c->link->conn = NULL;
        c->link->up = false;
        c->link = NULL;
    }
    if (c->prev)
        c->prev->next = c->next;
    else if (c->np->conns == c)
        c->np->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static struct conn *conn_new(struct net_peers *np)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (uv_tcp_init(np->loop, &c->tcp) != 0) {
        free(c);
        return NULL;
    }
    np->handles++;
    c->np = np;
    c->tcp.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = np->conns;
    if (np->conns)
        np->conns->prev = c;
    np->conns = c;
    return c;
}

/* The remote side's kernel ended the connection: report the peer down once per outage. */
static void peer_saw_close(struct net_peers *np, uint64_t id, int status)
{
    struct peer *p = peer_find(np, id);
    if (!p || !p->reachable || np->stopping)
        return;
    if (status != UV_EOF && status != UV_ECONNRESET && status != UV_ECONNREFUSED &&
        status != UV_EPIPE)
        return;
    p->reachable = false;
    log_write(np->cfg.log, LOG_INFO,
              "member=%llx component=peer peer=%llx msg=\"peer down\" err=%s",
              (unsigned long long)np->cfg.self_id, (unsigned long long)id, uv_err_name(status));
    if (np->h.on_peer_down)
        np->h.on_peer_down(np->h.ctx, id);
}

static void conn_fail(struct conn *c, int status)
{
    struct net_peers *np = c->np;
    struct link *l = c->link;
    uint64_t id = c->incoming ? c->peer_id : (l ? l->peer->id : 0);
    bool was_up = c->handshaken || (l && l->up);
    conn_close(c);
    if (l) {
        buf_clear(&l->pending); /* stale by the time a new link is up; Raft resends */
        link_schedule_retry(l);
    }
    if (id && (was_up || status == UV_ECONNREFUSED))
        peer_saw_close(np, id, status);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = h->data;
    if (buf_reserve(&c->rbuf, READ_CHUNK) != 0) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init((char *)c->rbuf.data + c->rbuf.len, (unsigned)(c->rbuf.cap - c->rbuf.len));
}

static bool handshake_check(struct conn *c, const uint8_t *p)
{
    struct net_peers *np = c->np;
    uint64_t cluster = le64_get(p + 8), from = le64_get(p + 16), to = le64_get(p + 24);
    uint8_t channel = p[32];
    const char *why = NULL;
    if (memcmp(p, HANDSHAKE_MAGIC, 8) != 0)
        why = "bad magic";
    else if (cluster != np->cfg.cluster_id)
        why = "cluster id mismatch";
    else if (to != np->cfg.self_id)
        why = "addressed to another member";
    else if (channel > NET_CHANNEL_BULK)
        why = "bad channel";
    else if (!peer_find(np, from))
        why = "unknown peer";
    if (why) {
        log_write(np->cfg.log, LOG_WARN,
                  "member=%llx component=peer msg=\"refused peer connection\" reason=\"%s\" "
                  "from=%llx cluster=%llx",
                  (unsigned long long)np->cfg.self_id, why, (unsigned long long)from,
                  (unsigned long long)cluster);
        return false;
    }
    c->peer_id = from;
    c->channel = channel;
    c->handshaken = true;
    peer_find(np, from)->reachable = true;
    return true;
}

static void on_write(uv_write_t *req, int status);

/* A joining member asks who it is (see net_peers_discover): answer with the handler's reply in
 * one length-prefixed frame, then close. false: malformed. */
static bool conn_discover(struct conn *c)
{
    struct net_peers *np = c->np;
    if (c->rbuf.len < 12)
        return true;
    uint32_t n = le32_get(c->rbuf.data + 8);
    if (n == 0 || n > DISCOVER_URL_MAX || !np->h.on_discover)
        return false;
    if (c->rbuf.len < 12 + (size_t)n)
        return true;
    if (c->discovery)
        return false; /* one request per connection */
    c->discovery = true;
    char url[DISCOVER_URL_MAX + 1];
    memcpy(url, c->rbuf.data + 12, n);
    url[n] = 0;
    uint8_t len[4] = {0};
    if (buf_append(&c->wbuf, len, sizeof(len)) != 0)
        return false;
    np->h.on_discover(np->h.ctx, url, &c->wbuf);
    le32_put(c->wbuf.data, (uint32_t)(c->wbuf.len - 4));
    uv_buf_t b = uv_buf_init((char *)c->wbuf.data, (unsigned)c->wbuf.len);
    c->wreq.data = c;
    c->writing = true;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        c->writing = false;
        return false;
    }
    return true;
}

/* Delivers every complete frame in rbuf. false: protocol error (connection must close). */
static bool conn_deliver(struct conn *c)
{
    struct net_peers *np = c->np;
    size_t off = 0;
    bool ok = true;
    if (c->discovery ||
        (!c->handshaken && c->rbuf.len >= 8 && memcmp(c->rbuf.data, DISCOVER_MAGIC, 8) == 0))
        return conn_discover(c);
    if (!c->handshaken) {
        if (c->rbuf.len < HANDSHAKE_LEN)
            return true;
        if (!handshake_check(c, c->rbuf.data))
            return false;
        off = HANDSHAKE_LEN;
    }
    size_t frame_max = np->cfg.frame_bytes_max;
    while (c->rbuf.len - off >= 4 && !c->closing && !np->stopping) {
        uint32_t n = le32_get(c->rbuf.data + off);
        if (n > frame_max) {
            log_write(np->cfg.log, LOG_WARN,
                      "member=%llx component=peer peer=%llx msg=\"frame too large\" bytes=%u",
                      (unsigned long long)np->cfg.self_id, (unsigned long long)c->peer_id, n);
            ok = false;
            break;
        }
        if (c->rbuf.len - off - 4 < n)
            break;
        if (np->h.on_message)
            np->h.on_message(np->h.ctx, c->peer_id, c->rbuf.data + off + 4, n);
        off += 4 + (size_t)n;
    }
    if (!c->closing)
        buf_consume(&c->rbuf, off);
    return ok;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n == 0)
        return;
    if (n < 0) {
        conn_fail(c, (int)n);
        return;
    }
    if (!c->incoming) {
        /* Outgoing connections carry nothing back; bytes here are a protocol error. */
        conn_fail(c, UV_EPROTO);
        return;
    }
    c->rbuf.len += (size_t)n;
    if (!conn_deliver(c))
        conn_fail(c, UV_EPROTO);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->writing = false;
    buf_clear(&c->wbuf);
    if (c->closing)
        return;
    if (c->discovery) {
        conn_close(c);
        return;
    }
    if (status < 0) {
        conn_fail(c, status);
        return;
    }
    if (c->link)
        link_flush(c->link);
}

/* Hands everything pending on the link to one uv_write, if none is running. */
static void link_flush(struct link *l)
{
    struct conn *c = l->conn;
    if (!c || !l->up || c->writing || l->pending.len == 0)
        return;
    struct buf t = c->wbuf; /* empty: swap buffers instead of copying */
    c->wbuf = l->pending;
    l->pending = t;
    uv_buf_t b = uv_buf_init((char *)c->wbuf.data, (unsigned)c->wbuf.len);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        conn_fail(c, rc);
        return;
    }
    c->writing = true;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    struct link *l = c->link;
    if (c->closing || !l)
        return;
    if (status < 0) {
        conn_fail(c, status);
        return;
    }
    struct net_peers *np = c->np;
    uint8_t hs[HANDSHAKE_LEN];
    memcpy(hs, HANDSHAKE_MAGIC, 8);
    le64_put(hs + 8, np->cfg.cluster_id);
    le64_put(hs + 16, np->cfg.self_id);
    le64_put(hs + 24, l->peer->id);
    hs[32] = l->channel;
    /* The handshake goes first: put it in front of anything already queued. */
    struct buf b = {0};
    if (buf_append(&b, hs, sizeof(hs)) != 0 || buf_append(&b, l->pending.data, l->pending.len)) {
        buf_free(&b);
        conn_fail(c, UV_ENOMEM);
        return;
    }
    buf_free(&l->pending);
    l->pending = b;
    l->up = true;
    l->backoff_ms = 0;
    l->peer->reachable = true;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    link_flush(l);
}

static void link_connect(struct link *l)
{
    struct net_peers *np = l->peer->np;
    if (np->stopping || l->conn || !l->peer->id)
        return;
    struct conn *c = conn_new(np);
    if (!c) {
        link_schedule_retry(l);
        return;
    }
    c->link = l;
    c->channel = l->channel;
    l->conn = c;
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&l->peer->addr, on_connect);
    if (rc < 0)
        conn_fail(c, rc);
}

static void on_retry(uv_timer_t *t)
{
    link_connect(t->data);
}

static void link_schedule_retry(struct link *l)
{
    struct net_peers *np = l->peer->np;
    if (np->stopping || !l->peer->id)
        return;
    uint32_t lo = np->cfg.backoff_min_ms, hi = np->cfg.backoff_max_ms;
    l->backoff_ms = l->backoff_ms ? BATON_MIN(l->backoff_ms * 2, hi) : lo;
    uv_timer_start(&l->retry, on_retry, l->backoff_ms, 0);
}

static void on_accept(uv_stream_t *server, int status)
{
    struct net_peers *np = server->data;
    if (status < 0 || np->stopping)
        return;
    struct conn *c = conn_new(np);
    if (!c)
        return;
    c->incoming = true;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return BATON_EINVAL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    freeaddrinfo(res);
    return 0;
}

int net_peers_start(struct net_loop *nl, const struct net_peers_config *cfg,
                    const struct net_peer_handler *h, struct net_peers **out)
{
    uv_loop_t *loop = net_loop_uv(nl);
    if (!cfg->self_id)
        return BATON_EINVAL;
    struct net_peers *np = calloc(1, sizeof(*np));
    if (!np)
        return BATON_ENOMEM;
    np->loop = loop;
    np->cfg = *cfg;
    np->h = *h;
    if (!np->cfg.queue_bytes_max)
        np->cfg.queue_bytes_max = 64u << 20;
    if (!np->cfg.frame_bytes_max)
        np->cfg.frame_bytes_max = 80u << 20;
    if (!np->cfg.backoff_min_ms)
        np->cfg.backoff_min_ms = 20;
    if (!np->cfg.backoff_max_ms)
        np->cfg.backoff_max_ms = 1000;
    for (int i = 0; i < NET_PEERS_MAX; i++) {
        struct peer *p = &np->peers[i];
        p->np = np;
        for (int ch = 0; ch < 2; ch++) {
            p->links[ch].peer = p;
            p->links[ch].channel = (uint8_t)ch;
            uv_timer_init(loop, &p->links[ch].retry);
            p->links[ch].retry.data = &p->links[ch];
            np->handles++;
        }
    }
    if (cfg->listen_host) {
        struct sockaddr_storage ss;
        int rc = resolve(cfg->listen_host, cfg->listen_port, &ss);
        if (rc == 0) {
            uv_tcp_init(loop, &np->listener);
            np->listener.data = np;
            np->handles++;
            np->listening = true;
            rc = uv_tcp_bind(&np->listener, (struct sockaddr *)&ss, 0);
            if (rc == 0)
                rc = uv_listen((uv_stream_t *)&np->listener, 128, on_accept);
        }
        if (rc != 0) {
            /* uv error codes are -errno on Linux. */
            net_peers_stop(np, NULL, NULL);
            return rc;
        }
    }
    *out = np;
    return 0;
}

uint16_t net_peers_port(const struct net_peers *np)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (!np->listening || uv_tcp_getsockname(&np->listener, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void peer_close_links(struct peer *p)
{
    for (int ch = 0; ch < 2; ch++) {
        struct link *l = &p->links[ch];
        uv_timer_stop(&l->retry);
        if (l->conn)
            conn_close(l->conn);
        buf_clear(&l->pending);
        l->backoff_ms = 0;
    }
}

int net_peers_add(struct net_peers *np, uint64_t id, const char *host, uint16_t port)
{
    if (!id || id == np->cfg.self_id || strlen(host) >= NET_HOST_MAX)
        return BATON_EINVAL;
    struct sockaddr_storage ss;
    if (resolve(host, port, &ss) != 0)
        return BATON_EINVAL;
    struct peer *p = peer_find(np, id);
    if (!p)
        p = peer_find(np, 0);
    if (!p)
        return BATON_ETOOBIG;
    bool moved = p->id == id && memcmp(&p->addr, &ss, sizeof(ss)) != 0;
    if (moved)
        peer_close_links(p);
    p->id = id;
    p->addr = ss;
    snprintf(p->host, sizeof(p->host), "%s", host);
    for (int ch = 0; ch < 2; ch++)
        link_connect(&p->links[ch]);
    return 0;
}

void net_peers_remove(struct net_peers *np, uint64_t id)
{
    struct peer *p = peer_find(np, id);
    if (!p || !id)
        return;
    peer_close_links(p);
    for (struct conn *c = np->conns; c;) {
        struct conn *next = c->next;
        if (c->incoming && c->peer_id == id)
            conn_close(c);
        c = next;
    }
    p->id = 0;
    p->reachable = false;
}

int net_peers_send(struct net_peers *np, uint64_t to, enum net_channel ch, const void *data,
                   size_t len)
{
    struct peer *p = to ? peer_find(np, to) : NULL;
    if (!p)
        return BATON_ENOTFOUND;
    if (len > np->cfg.frame_bytes_max)
        return BATON_ETOOBIG;
    struct link *l = &p->links[ch == NET_CHANNEL_BULK ? 1 : 0];
    if (!l->conn)
        return BATON_EUNAVAIL;
    if (l->pending.len + 4 + len > np->cfg.queue_bytes_max)
        return BATON_EBUSY;
    uint8_t hdr[4];
    le32_put(hdr, (uint32_t)len);
    size_t mark = l->pending.len;
    if (buf_append(&l->pending, hdr, 4) != 0 || buf_append(&l->pending, data, len) != 0) {
        l->pending.len = mark;
        return BATON_ENOMEM;
    }
    link_flush(l);
    return 0;
}

bool net_peers_connected(const struct net_peers *np, uint64_t peer)
{
    const struct peer *p = peer_find(np, peer);
    return p && p->links[0].up;
}

void net_peers_stop(struct net_peers *np, void (*done)(void *ctx), void *ctx)
{
    np->stopping = true;
    np->stop_done = done;
    np->stop_ctx = ctx;
    np->h.on_message = NULL;
    np->h.on_discover = NULL;
    np->h.on_peer_down = NULL;
    for (int i = 0; i < NET_PEERS_MAX; i++) {
        peer_close_links(&np->peers[i]);
        for (int ch = 0; ch < 2; ch++) {
            np->peers[i].links[ch].retry.data = np;
            uv_close((uv_handle_t *)&np->peers[i].links[ch].retry, handle_closed);
        }
    }
    while (np->conns)
        conn_close(np->conns);
    /* The retry timers always exist, so at least one close callback is still to come and
     * completes the stop. */
    if (np->listening)
        uv_close((uv_handle_t *)&np->listener, handle_closed);
}

/* Waits until fd is ready for events or the deadline passes. */
static int wait_fd(int fd, short events, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = net_now_ms();
        if (now >= deadline_ms)
            return BATON_ETIMEOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)(deadline_ms - now));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

int net_peers_discover(const char *host, uint16_t port, const char *peer_url, uint32_t timeout_ms,
                       struct buf *reply)
{
    size_t url_len = strlen(peer_url);
    if (url_len == 0 || url_len > DISCOVER_URL_MAX)
        return BATON_EINVAL;
    struct sockaddr_storage ss;
    int rc = resolve(host, port, &ss);
    if (rc)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    uint64_t deadline = net_now_ms() + timeout_ms;
    socklen_t sl =
        ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS)
        rc = -errno;
    int soerr = 0;
    socklen_t el = sizeof(soerr);
    if (!rc && !(rc = wait_fd(fd, POLLOUT, deadline)) &&
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) == 0 && soerr)
        rc = -soerr;
    uint8_t req[12 + DISCOVER_URL_MAX];
    memcpy(req, DISCOVER_MAGIC, 8);
    le32_put(req + 8, (uint32_t)url_len);
    memcpy(req + 12, peer_url, url_len);
    for (size_t off = 0; !rc && off < 12 + url_len;) {
        ssize_t n = send(fd, req + off, 12 + url_len - off, MSG_NOSIGNAL);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EINTR)
            rc = -errno;
        else
            rc = wait_fd(fd, POLLOUT, deadline);
    }
    /* The reply: u32 length, then that many bytes; the member closes after it. */
    buf_clear(reply);
    size_t want = 4;
    uint8_t chunk[4096];
    while (!rc && reply->len < want) {
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
        if (n > 0) {
            rc = buf_append(reply, chunk, (size_t)n);
            if (!rc && want == 4 && reply->len >= 4) {
                want = 4 + (size_t)le32_get(reply->data);
                if (want > 4 + (1u << 20))
                    rc = BATON_EPROTO;
            }
        } else if (n == 0) {
            rc = BATON_EPROTO; /* closed early: not a member of ours, or an older one */
        } else if (errno != EAGAIN && errno != EINTR) {
            rc = -errno;
        } else {
            rc = wait_fd(fd, POLLIN, deadline);
        }
    }
    close(fd);
    if (!rc)
        buf_consume(reply, 4);
    return rc;
}
