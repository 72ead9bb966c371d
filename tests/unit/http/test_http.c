/*
 * The admin HTTP server over real loopback TCP: a client thread sends raw HTTP/1.1 while the
 * test thread plays the event loop (poll on the server's fd, then http_server_run).
 */
#include "http/http.h"
#include "test.h"

#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct client {
    uint16_t port;
    const char *request;
    size_t request_len;
    char response[8192];
    size_t response_len;
    atomic_bool done;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(c->port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
        for (size_t off = 0; off < c->request_len;) {
            ssize_t n = write(fd, c->request + off, c->request_len - off);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        for (;;) {
            ssize_t n =
                read(fd, c->response + c->response_len, sizeof(c->response) - 1 - c->response_len);
            if (n <= 0)
                break;
            c->response_len += (size_t)n;
        }
    }
    c->response[c->response_len] = 0;
    close(fd);
    atomic_store(&c->done, true);
    return NULL;
}

static struct http_request *parked_req;

static void on_metrics(void *ctx, struct http_request *req)
{
    CHECK_STR(http_request_method(req), "GET");
    const char *who = http_request_arg(req, "who");
    char body[64];
    int n = snprintf(body, sizeof(body), "hello %s\n", who ? who : "nobody");
    http_respond(req, 200, "text/plain; version=0.0.4", body, (size_t)n);
}

static void on_slow(void *ctx, struct http_request *req)
{
    parked_req = req; /* answered later by the loop */
}

static const struct http_route routes[] = {
    {"/metrics", on_metrics, NULL},
    {"/slow", on_slow, NULL},
};

static struct http_server *start(void)
{
    struct http_config cfg = {.host = "127.0.0.1", .routes = routes, .routes_len = 2};
    struct http_server *s;
    CHECK_OK(http_server_start(&s, &cfg));
    CHECK_GT(http_server_port(s), 0);
    return s;
}

/* Runs the loop until the client is done; answers a parked request after `delay` turns. */
static void loop_until(struct http_server *s, struct client *c, int delay)
{
    int turns = 0;
    for (int i = 0; i < 2000 && !atomic_load(&c->done); i++) {
        struct pollfd p = {.fd = http_server_fd(s), .events = POLLIN};
        poll(&p, 1, 5);
        CHECK_OK(http_server_run(s));
        if (parked_req && ++turns > delay) {
            http_respond(parked_req, 200, "text/plain", "later\n", 6);
            parked_req = NULL;
        }
    }
    CHECK(atomic_load(&c->done));
}

static void exchange(struct http_server *s, struct client *c, const char *req, int delay)
{
    memset(c, 0, sizeof(*c));
    c->port = http_server_port(s);
    c->request = req;
    c->request_len = strlen(req);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, client_main, c), 0);
    loop_until(s, c, delay);
    pthread_join(t, NULL);
}

static void check_status(const struct client *c, const char *status_line)
{
    if (strncmp(c->response, status_line, strlen(status_line)) != 0)
        test_fail(__FILE__, __LINE__, "want \"%s\", got \"%.80s\"", status_line, c->response);
}

TEST(get_served_synchronously_with_query)
{
    struct http_server *s = start();
    struct client c;
    exchange(s, &c, "GET /metrics?who=ops HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0);
    check_status(&c, "HTTP/1.1 200");
    CHECK(strstr(c.response, "Content-Type: text/plain; version=0.0.4") != NULL);
    CHECK(strstr(c.response, "\r\n\r\nhello ops\n") != NULL);
    http_server_stop(s);
}

TEST(handler_answers_later)
{
    struct http_server *s = start();
    struct client c;
    exchange(s, &c, "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 20);
    check_status(&c, "HTTP/1.1 200");
    CHECK(strstr(c.response, "\r\n\r\nlater\n") != NULL);
    http_server_stop(s);
}

TEST(bad_requests_get_clear_errors_and_server_keeps_serving)
{
    struct http_server *s = start();
    struct client c;
    exchange(s, &c, "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0);
    check_status(&c, "HTTP/1.1 404");
    exchange(s, &c,
             "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
             "abc",
             0);
    check_status(&c, "HTTP/1.1 405");
    CHECK(strstr(c.response, "Allow: GET, HEAD") != NULL);
    exchange(s, &c, "\x01\x02garbage\r\n\r\n", 0);
    CHECK_EQ(c.response_len, 0); /* not HTTP at all: disconnected without a reply */
    exchange(s, &c, "GET /metrics HTTP/1.1\r\nBad Header Line\r\n\r\n", 0);
    check_status(&c, "HTTP/1.1 400");
    exchange(s, &c, "GET /metrics\r\n\r\n", 0);
    check_status(&c, "HTTP/1.1 400");
    /* Headers larger than the per-connection memory limit. */
    static char big[70000];
    int n = snprintf(big, sizeof(big), "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'a', 60000);
    strcpy(big + n + 60000, "\r\nConnection: close\r\n\r\n");
    exchange(s, &c, big, 0);
    check_status(&c, "HTTP/1.1 431");
    exchange(s, &c, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0);
    check_status(&c, "HTTP/1.1 200");
    http_server_stop(s);
}

TEST(stop_answers_parked_requests)
{
    struct http_server *s = start();
    struct client c = {0};
    c.port = http_server_port(s);
    c.request = "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    c.request_len = strlen(c.request);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, client_main, &c), 0);
    for (int i = 0; i < 2000 && !parked_req; i++) {
        struct pollfd p = {.fd = http_server_fd(s), .events = POLLIN};
        poll(&p, 1, 5);
        CHECK_OK(http_server_run(s));
    }
    CHECK(parked_req != NULL);
    parked_req = NULL;
    http_server_stop(s);
    pthread_join(t, NULL);
    check_status(&c, "HTTP/1.1 503");
}

TEST(port_in_use_is_an_error)
{
    struct http_server *s = start();
    struct http_config cfg = {.host = "127.0.0.1", .port = http_server_port(s), .routes = routes};
    struct http_server *s2;
    CHECK_LT(http_server_start(&s2, &cfg), 0);
    cfg.host = "not-an-address";
    CHECK_EQ(http_server_start(&s2, &cfg), BATON_EINVAL);
    http_server_stop(s);
}
