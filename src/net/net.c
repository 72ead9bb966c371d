/*
 * libuv glue between TCP sockets and rpc connection objects. One struct net_conn per socket,
 * with three handles (the socket, a tick timer, an idle handle that defers output until rpc
 * has returned to the loop); it is freed when all three have closed.
 */
#include "net/net_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define NET_READ_BYTES   (64 * 1024)
#define NET_SEND_CHUNK   (64 * 1024)
#define NET_WRITE_MAX    (256 * 1024) /* bytes handed to the kernel and not yet written */
#define NET_TICK_MS      100
#define NET_CONNS_MAX    4096
#define NET_CONN_HANDLES 3

struct net_loop {
    uv_loop_t uv;
    uv_async_t stop;
    const struct log_sink *log;
};

uv_loop_t *net_loop_uv(struct net_loop *l)
{
    return &l->uv;
}

struct net_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_idle_t flush;
    int handles_open;
    struct net_loop *loop;
    struct rpc_conn *srv;    /* server side */
    struct rpc_client *cl;   /* client side */
    struct net_listener *ls; /* server side: owner */
    struct net_conn *prev, *next;
    struct net_client *client; /* client side: owner */
    size_t write_inflight;
    bool connected, reading, closing;
    uint8_t rbuf[NET_READ_BYTES];
};

struct net_listener {
    uv_tcp_t tcp;
    struct net_loop *loop;
    struct rpc_server *srv;
    struct net_conn *conns;
    size_t conns_len, conns_max;
    uint16_t port;
    bool closing, tcp_closed, shutting_down;
};

struct net_client {
    struct net_conn conn; /* first: uv handles point at it */
    uv_connect_t connect_req;
    net_client_fn on_state;
    void *ctx;
};

struct write_req {
    uv_write_t req;
    struct net_conn *c;
    struct buf b;
};

/* ---- Loop --------------------------------------------------------------------------------- */

static void on_stop(uv_async_t *a)
{
    uv_stop(a->loop);
}

int net_loop_create(const struct log_sink *log, struct net_loop **out)
{
    struct net_loop *l = calloc(1, sizeof(*l));
    if (!l)
        return BATON_ENOMEM;
    int rc = uv_loop_init(&l->uv);
    if (rc == 0) {
        rc = uv_async_init(&l->uv, &l->stop, on_stop);
        if (rc)
            uv_loop_close(&l->uv);
    }
    if (rc) {
        free(l);
        return rc;
    }
    l->log = log;
    *out = l;
    return 0;
}

int net_loop_run(struct net_loop *l)
{
    uv_run(&l->uv, UV_RUN_DEFAULT);
    return 0;
}

static void on_wake(uv_timer_t *t)
{
}

int net_loop_run_until(struct net_loop *l, bool (*cond)(void *ctx), void *ctx, uint32_t timeout_ms)
{
    uv_timer_t wake;
    uv_timer_init(&l->uv, &wake);
    uv_timer_start(&wake, on_wake, 10, 10);
    uv_update_time(&l->uv);
    uint64_t end = uv_now(&l->uv) + timeout_ms;
    int rc = BATON_ETIMEOUT;
    for (;;) {
        if (cond(ctx)) {
            rc = 0;
            break;
        }
        if (uv_now(&l->uv) >= end)
            break;
        uv_run(&l->uv, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(&l->uv, UV_RUN_NOWAIT); /* lets the timer's close complete before it goes away */
    return rc;
}

void net_loop_stop(struct net_loop *l)
{
    uv_async_send(&l->stop);
}

static void close_any(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void net_loop_destroy(struct net_loop *l)
{
    if (!l)
        return;
    uv_close((uv_handle_t *)&l->stop, NULL);
    uv_run(&l->uv, UV_RUN_DEFAULT);
    if (uv_loop_close(&l->uv) == UV_EBUSY) {
        /* Something was left open: close it rather than leave the loop half torn down. */
        uv_walk(&l->uv, close_any, NULL);
        uv_run(&l->uv, UV_RUN_DEFAULT);
        uv_loop_close(&l->uv);
    }
    free(l);
}

/* ---- URLs --------------------------------------------------------------------------------- */

int net_url_parse(const char *url, char *host, size_t host_len, uint16_t *port)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strstr(p, "://"))
        return BATON_EINVAL;
    const char *h = p, *hend, *colon;
    if (*p == '[') {
        hend = strchr(p, ']');
        if (!hend || hend[1] != ':')
            return BATON_EINVAL;
        h = p + 1;
        colon = hend + 1;
    } else {
        colon = strrchr(p, ':');
        if (!colon)
            return BATON_EINVAL;
        hend = colon;
    }
    size_t n = (size_t)(hend - h);
    if (n == 0 || n >= host_len)
        return BATON_EINVAL;
    char *end;
    unsigned long v = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || (*end && strcmp(end, "/") != 0) || v > 65535)
        return BATON_EINVAL;
    memcpy(host, h, n);
    host[n] = 0;
    if (strcmp(host, "localhost") == 0) {
        if (host_len < 10)
            return BATON_EINVAL;
        strcpy(host, "127.0.0.1");
    }
    *port = (uint16_t)v;
    return 0;
}

static int url_to_addr(const char *url, struct sockaddr_storage *ss)
{
    char host[256];
    uint16_t port;
    int rc = net_url_parse(url, host, sizeof(host), &port);
    if (rc)
        return rc;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return BATON_EINVAL;
}

/* ---- Connections -------------------------------------------------------------------------- */

static void conn_close(struct net_conn *c);

static int conn_rpc_recv(struct net_conn *c, const void *data, size_t len)
{
    return c->srv ? rpc_conn_recv(c->srv, data, len) : rpc_client_recv(c->cl, data, len);
}

static int conn_rpc_send(struct net_conn *c, struct buf *out)
{
    return c->srv ? rpc_conn_send(c->srv, out, NET_SEND_CHUNK)
                  : rpc_client_send(c->cl, out, NET_SEND_CHUNK);
}

static bool conn_rpc_done(struct net_conn *c)
{
    return c->srv ? rpc_conn_done(c->srv) : rpc_client_done(c->cl);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct net_conn *c = h->data;
    *b = uv_buf_init((char *)c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void conn_flush(struct net_conn *c);

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct net_conn *c = w->c;
    c->write_inflight -= w->b.len;
    buf_free(&w->b);
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    conn_flush(c);
}

/* Moves rpc output to the socket while the write queue has room; pauses reading while it has
 * none (a peer that does not read gets no more of our attention); closes once rpc is done. */
static void conn_flush(struct net_conn *c)
{
    if (c->closing || !c->connected)
        return;
    while (c->write_inflight < NET_WRITE_MAX) {
        struct write_req *w = calloc(1, sizeof(*w));
        if (!w) {
            conn_close(c);
            return;
        }
        int rc = conn_rpc_send(c, &w->b);
        if (rc || w->b.len == 0) {
            buf_free(&w->b);
            free(w);
            if (rc) {
                conn_close(c);
                return;
            }
            break;
        }
        w->c = c;
        uv_buf_t ub = uv_buf_init((char *)w->b.data, (unsigned)w->b.len);
        rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_write);
        if (rc) {
            buf_free(&w->b);
            free(w);
            conn_close(c);
            return;
        }
        c->write_inflight += w->b.len;
    }
    if (conn_rpc_done(c) && c->write_inflight == 0) {
        conn_close(c);
        return;
    }
    bool want_read = c->write_inflight < NET_WRITE_MAX;
    if (want_read && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
    } else if (!want_read && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct net_conn *c = s->data;
    if (n < 0) {
        conn_close(c); /* EOF or error: the peer is gone */
        return;
    }
    if (n > 0)
        conn_rpc_recv(c, b->base, (size_t)n); /* an error makes rpc "done": flush closes */
    conn_flush(c);
}

static void on_flush_idle(uv_idle_t *h)
{
    struct net_conn *c = h->data;
    uv_idle_stop(h);
    conn_flush(c);
}

static void conn_notify(void *ctx)
{
    struct net_conn *c = ctx;
    if (!c->closing)
        uv_idle_start(&c->flush, on_flush_idle);
}

static void on_tick(uv_timer_t *t)
{
    struct net_conn *c = t->data;
    if (c->srv)
        rpc_conn_tick(c->srv);
    else
        rpc_client_tick(c->cl);
    conn_flush(c);
}

static int conn_init(struct net_loop *l, struct net_conn *c)
{
    c->loop = l;
    int rc = uv_tcp_init(&l->uv, &c->tcp);
    if (rc)
        return rc;
    uv_timer_init(&l->uv, &c->timer);
    uv_idle_init(&l->uv, &c->flush);
    c->tcp.data = c->timer.data = c->flush.data = c;
    c->handles_open = NET_CONN_HANDLES;
    return 0;
}

static void listener_maybe_free(struct net_listener *ls)
{
    if (ls->closing && ls->tcp_closed && ls->conns_len == 0)
        free(ls);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct net_conn *c = h->data;
    if (--c->handles_open > 0)
        return;
    if (c->ls) {
        struct net_listener *ls = c->ls;
        if (c->prev)
            c->prev->next = c->next;
        else
            ls->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        ls->conns_len--;
        free(c);
        listener_maybe_free(ls);
    } else if (c->client) {
        struct net_client *cl = c->client;
        if (cl->on_state)
            cl->on_state(cl, BATON_ECLOSED, cl->ctx);
        free(cl);
    } else {
        free(c);
    }
}

/* Destroys the rpc half first (handlers hear about their calls while the memory is good),
 * then closes the handles; the struct goes when the last one is closed. */
static void conn_close(struct net_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->srv) {
        rpc_conn_destroy(c->srv);
        c->srv = NULL;
    }
    if (c->cl) {
        rpc_client_destroy(c->cl);
        c->cl = NULL;
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->flush, on_conn_handle_closed);
}

/* ---- Listener ----------------------------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    struct net_listener *ls = server->data;
    if (status < 0 || ls->closing)
        return;
    struct net_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    if (conn_init(ls->loop, c) != 0) {
        free(c);
        return;
    }
    c->ls = ls;
    c->next = ls->conns;
    if (ls->conns)
        ls->conns->prev = c;
    ls->conns = c;
    ls->conns_len++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || ls->conns_len > ls->conns_max ||
        ls->shutting_down || rpc_conn_create(ls->srv, conn_notify, c, &c->srv) != 0) {
        log_write(ls->loop->log, LOG_WARN, "msg=\"connection refused\" conns=%zu", ls->conns_len);
        conn_close(c);
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, on_tick, NET_TICK_MS, NET_TICK_MS);
    conn_flush(c);
}

int net_listen_rpc(struct net_loop *l, const char *url, struct rpc_server *srv, size_t conns_max,
                   struct net_listener **out)
{
    struct sockaddr_storage ss;
    int rc = url_to_addr(url, &ss);
    if (rc)
        return rc;
    struct net_listener *ls = calloc(1, sizeof(*ls));
    if (!ls)
        return BATON_ENOMEM;
    ls->loop = l;
    ls->srv = srv;
    ls->conns_max = conns_max ? conns_max : NET_CONNS_MAX;
    rc = uv_tcp_init(&l->uv, &ls->tcp);
    if (rc) {
        free(ls);
        return rc;
    }
    ls->tcp.data = ls;
    rc = uv_tcp_bind(&ls->tcp, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&ls->tcp, 511, on_connection);
    if (rc == 0) {
        struct sockaddr_storage bound;
        int len = sizeof(bound);
        rc = uv_tcp_getsockname(&ls->tcp, (struct sockaddr *)&bound, &len);
        if (rc == 0)
            ls->port =
                ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    }
    if (rc) {
        ls->closing = true;
        ls->tcp_closed = false;
        uv_close((uv_handle_t *)&ls->tcp, NULL);
        uv_run(&l->uv, UV_RUN_NOWAIT);
        free(ls);
        return rc;
    }
    *out = ls;
    return 0;
}

uint16_t net_listener_port(const struct net_listener *ls)
{
    return ls->port;
}

size_t net_listener_conns(const struct net_listener *ls)
{
    return ls->conns_len;
}

void net_listener_shutdown(struct net_listener *ls)
{
    ls->shutting_down = true;
    for (struct net_conn *c = ls->conns; c; c = c->next) {
        if (c->srv) {
            rpc_conn_shutdown(c->srv);
            conn_flush(c);
        }
    }
}

static void on_listener_closed(uv_handle_t *h)
{
    struct net_listener *ls = h->data;
    ls->tcp_closed = true;
    listener_maybe_free(ls);
}

void net_listener_close(struct net_listener *ls)
{
    ls->closing = true;
    for (struct net_conn *c = ls->conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&ls->tcp, on_listener_closed);
}

/* ---- Client ------------------------------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
    struct net_client *cl = req->data;
    struct net_conn *c = &cl->conn;
    if (c->closing)
        return;
    if (status < 0) {
        log_write(c->loop->log, LOG_INFO, "msg=\"connect failed\" err=\"%s\"", uv_strerror(status));
        conn_close(c);
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    if (cl->on_state)
        cl->on_state(cl, 0, cl->ctx);
    conn_flush(c);
}

int net_connect_rpc(struct net_loop *l, const char *url, const struct rpc_client_config *cfg,
                    net_client_fn on_state, void *ctx, struct net_client **out)
{
    struct sockaddr_storage ss;
    int rc = url_to_addr(url, &ss);
    if (rc)
        return rc;
    struct net_client *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return BATON_ENOMEM;
    struct net_conn *c = &cl->conn;
    c->client = cl;
    cl->ctx = ctx;
    rc = rpc_client_create(cfg, conn_notify, c, &c->cl);
    if (rc) {
        free(cl);
        return rc;
    }
    rc = conn_init(l, c);
    if (rc) {
        rpc_client_destroy(c->cl);
        free(cl);
        return rc;
    }
    cl->connect_req.data = cl;
    rc = uv_tcp_connect(&cl->connect_req, &c->tcp, (struct sockaddr *)&ss, on_connect);
    if (rc) {
        conn_close(c); /* frees cl once closed; on_state is not set yet, so never called */
        return rc;
    }
    cl->on_state = on_state;
    uv_timer_start(&c->timer, on_tick, NET_TICK_MS, NET_TICK_MS);
    *out = cl;
    return 0;
}

struct rpc_client *net_client_rpc(struct net_client *cl)
{
    return cl->conn.cl;
}

void net_client_close(struct net_client *cl)
{
    conn_close(&cl->conn);
}
