/*
 * The admin HTTP server on libmicrohttpd, in external-epoll mode with suspend/resume so that a
 * handler may answer after its function returned. Every request gets a struct http_request,
 * freed by MHD's completion callback; parked (suspended) requests are kept on a list so stop
 * can answer them.
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_PATH_MAX 256

struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    char method[8];
    char path[HTTP_PATH_MAX];
    bool parked;               /* suspended, waiting for http_respond */
    bool responded;            /* http_respond was called */
    struct MHD_Response *resp; /* built by http_respond, queued by on_request */
    unsigned status;
    struct http_request *prev, *next; /* parked list */
};

struct http_server {
    struct MHD_Daemon *mhd;
    const struct http_route *routes;
    int routes_len;
    const struct log_sink *log;
    struct http_request *parked;
    uint16_t port;
};

static void parked_remove(struct http_server *s, struct http_request *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        s->parked = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->parked = false;
}

static enum MHD_Result queue_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, "Allow", "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result queue_stored(struct http_request *r)
{
    enum MHD_Result ret = MHD_queue_response(r->conn, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    return ret;
}

static const struct http_route *route_find(struct http_server *s, const char *path)
{
    for (int i = 0; i < s->routes_len; i++)
        if (strcmp(s->routes[i].path, path) == 0)
            return &s->routes[i];
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_server *s = cls;
    struct http_request *r = *con_cls;
    if (r) {
        /* Called again: after a resume, or with a body we do not read. */
        *upload_data_size = 0;
        return r->resp ? queue_stored(r) : MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return queue_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    const struct http_route *route = route_find(s, url);
    if (!route)
        return queue_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
    if (strlen(url) >= HTTP_PATH_MAX)
        return queue_text(c, MHD_HTTP_URI_TOO_LONG, "path too long\n");
    r = calloc(1, sizeof(*r));
    if (!r)
        return queue_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    r->srv = s;
    r->conn = c;
    snprintf(r->method, sizeof(r->method), "%s", method);
    snprintf(r->path, sizeof(r->path), "%s", url);
    *con_cls = r;
    route->fn(route->ctx, r);
    if (r->responded)
        return queue_stored(r);
    /* The handler answers later: park the connection until http_respond. */
    r->parked = true;
    r->next = s->parked;
    if (s->parked)
        s->parked->prev = r;
    s->parked = r;
    MHD_suspend_connection(c);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_request *r = *con_cls;
    if (!r)
        return;
    BATON_ASSERT(!r->parked);
    if (r->resp)
        MHD_destroy_response(r->resp);
    free(r);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct http_server *s = cls;
    char msg[256];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = 0;
    log_write(s->log, LOG_WARN, "component=http msg=\"%s\"", msg);
}

void http_respond(struct http_request *r, unsigned status, const char *content_type,
                  const void *body, size_t len)
{
    BATON_ASSERT(!r->responded);
    r->responded = true;
    r->status = status;
    r->resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r->resp && content_type)
        MHD_add_response_header(r->resp, "Content-Type", content_type);
    if (!r->resp) {
        /* Out of memory: a static 503 needs no allocation of its body. */
        static const char oom[] = "out of memory\n";
        r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
        r->resp =
            MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
    }
    if (r->parked) {
        parked_remove(r->srv, r);
        MHD_resume_connection(r->conn);
    }
}

const char *http_request_method(const struct http_request *r)
{
    return r->method;
}

const char *http_request_path(const struct http_request *r)
{
    return r->path;
}

const char *http_request_arg(const struct http_request *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

int http_server_start(struct http_server **out, const struct http_config *cfg)
{
    struct sockaddr_storage ss = {0};
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(cfg->port);
    } else if (inet_pton(AF_INET6, cfg->host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        return BATON_EINVAL;
    }
    struct http_server *s = calloc(1, sizeof(*s));
    if (!s)
        return BATON_ENOMEM;
    s->routes = cfg->routes;
    s->routes_len = cfg->routes_len;
    s->log = cfg->log;
    unsigned conns = cfg->connections_max ? cfg->connections_max : 64;
    unsigned idle = cfg->idle_timeout_s ? cfg->idle_timeout_s : 10;
    errno = 0;
    s->mhd = MHD_start_daemon(
        flags, cfg->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, conns, MHD_OPTION_CONNECTION_TIMEOUT, idle,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_END);
    if (!s->mhd) {
        int err = errno ? -errno : BATON_EINVAL;
        free(s);
        return err;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : cfg->port;
    *out = s;
    return 0;
}

uint16_t http_server_port(const struct http_server *s)
{
    return s->port;
}

int http_server_fd(const struct http_server *s)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    return info ? info->epoll_fd : -1;
}

int http_server_run(struct http_server *s)
{
    return MHD_run(s->mhd) == MHD_YES ? 0 : BATON_EINVAL;
}

int64_t http_server_timeout_ms(struct http_server *s)
{
    MHD_UNSIGNED_LONG_LONG t;
    if (MHD_get_timeout(s->mhd, &t) != MHD_YES)
        return -1;
    return t > INT64_MAX ? INT64_MAX : (int64_t)t;
}

void http_server_stop(struct http_server *s)
{
    if (!s)
        return;
    static const char msg[] = "server is stopping\n";
    while (s->parked)
        http_respond(s->parked, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", msg, sizeof(msg) - 1);
    MHD_run(s->mhd);
    MHD_stop_daemon(s->mhd);
    free(s);
}
