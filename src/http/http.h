/*
 * http: the admin HTTP/1.1 endpoint (/health, /readyz, /metrics, /debug/...), on
 * libmicrohttpd in external-epoll mode. MHD starts no thread: the loop thread polls
 * http_server_fd() for readability and calls http_server_run(), and arms a timer from
 * http_server_timeout_ms(). Handlers therefore run on the loop thread and may read server state
 * directly. A handler answers with http_respond(), either before it returns or later (after a
 * Raft round, say): the connection is parked until then.
 *
 * Only GET and HEAD are served; other methods get 405, unknown paths 404, malformed requests
 * MHD's 400, oversized headers 431. Connections are bounded in number and idle time.
 */
#ifndef BATON_HTTP_H
#define BATON_HTTP_H

#include "base/base.h"

struct http_server;
struct http_request;

/* Called on the loop thread for a request whose path matched. req stays valid until
 * http_respond(req, ...) is called, which must happen exactly once. */
typedef void (*http_handler_fn)(void *ctx, struct http_request *req);

struct http_route {
    const char *path; /* exact match, e.g. "/metrics"; borrowed for the server's life */
    http_handler_fn fn;
    void *ctx;
};

struct http_config {
    const char *host;                /* numeric IPv4 or IPv6 address */
    uint16_t port;                   /* 0: the kernel picks; see http_server_port */
    const struct http_route *routes; /* borrowed for the server's life */
    int routes_len;
    unsigned connections_max;   /* 0: 64 */
    unsigned idle_timeout_s;    /* 0: 10 */
    const struct log_sink *log; /* borrowed; may be NULL */
};

/* Binds and listens. 0, or -errno (e.g. -EADDRINUSE) / BATON_EINVAL with nothing left open. */
int http_server_start(struct http_server **out, const struct http_config *cfg);
uint16_t http_server_port(const struct http_server *s);
/* The descriptor to poll for readability (MHD's epoll fd). */
int http_server_fd(const struct http_server *s);
/* Does all pending work without blocking. 0 or BATON_EINVAL. */
int http_server_run(struct http_server *s);
/* Milliseconds until http_server_run must be called even without I/O; -1: no deadline. */
int64_t http_server_timeout_ms(struct http_server *s);
/* Answers every parked request with 503, closes the listener and connections, frees s. */
void http_server_stop(struct http_server *s);

const char *http_request_method(const struct http_request *req);
const char *http_request_path(const struct http_request *req);
/* The value of a query argument (?key=value), or NULL. Valid until http_respond. */
const char *http_request_arg(const struct http_request *req, const char *key);
/* Sends status, content type and a copy of body; ends the request. Safe to call from inside the
 * handler or any time later on the loop thread. */
void http_respond(struct http_request *req, unsigned status, const char *content_type,
                  const void *body, size_t len);

#endif
