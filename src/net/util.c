/*
 * Loop utilities for programs (see net.h): thin handles over libuv timers, async wake-ups, fd
 * polls and signals. Each is one allocation freed in its close callback.
 */
#include "net/net_int.h"

#include <stdlib.h>
#include <time.h>

struct net_timer {
    uv_timer_t h;
    void (*cb)(void *);
    void *ctx;
};

struct net_async {
    uv_async_t h;
    void (*cb)(void *);
    void *ctx;
};

struct net_defer {
    uv_idle_t h;
    void (*cb)(void *);
    void *ctx;
};

struct net_fd {
    uv_poll_t h;
    void (*cb)(void *);
    void *ctx;
};

struct net_signal {
    uv_signal_t h;
    void (*cb)(void *, int);
    void *ctx;
};

static void free_handle(uv_handle_t *h)
{
    free(h->data);
}

static void on_timer(uv_timer_t *h)
{
    struct net_timer *t = h->data;
    t->cb(t->ctx);
}

int net_timer_start(struct net_loop *l, uint64_t first_ms, uint64_t repeat_ms,
                    void (*cb)(void *ctx), void *ctx, struct net_timer **out)
{
    struct net_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return BATON_ENOMEM;
    t->cb = cb;
    t->ctx = ctx;
    uv_timer_init(net_loop_uv(l), &t->h);
    t->h.data = t;
    uv_timer_start(&t->h, on_timer, first_ms, repeat_ms);
    *out = t;
    return 0;
}

void net_timer_close(struct net_timer *t)
{
    if (t)
        uv_close((uv_handle_t *)&t->h, free_handle);
}

static void on_async(uv_async_t *h)
{
    struct net_async *a = h->data;
    a->cb(a->ctx);
}

int net_async_create(struct net_loop *l, void (*cb)(void *ctx), void *ctx, struct net_async **out)
{
    struct net_async *a = calloc(1, sizeof(*a));
    if (!a)
        return BATON_ENOMEM;
    a->cb = cb;
    a->ctx = ctx;
    int rc = uv_async_init(net_loop_uv(l), &a->h, on_async);
    if (rc) {
        free(a);
        return rc;
    }
    a->h.data = a;
    *out = a;
    return 0;
}

void net_async_send(struct net_async *a)
{
    uv_async_send(&a->h);
}

void net_async_close(struct net_async *a)
{
    if (a)
        uv_close((uv_handle_t *)&a->h, free_handle);
}

/* An active idle handle makes the loop poll without blocking, so the callback runs before the
 * loop next sleeps; it stops itself first, so a request made inside cb schedules another run. */
static void on_defer(uv_idle_t *h)
{
    struct net_defer *d = h->data;
    uv_idle_stop(&d->h);
    d->cb(d->ctx);
}

int net_defer_create(struct net_loop *l, void (*cb)(void *ctx), void *ctx, struct net_defer **out)
{
    struct net_defer *d = calloc(1, sizeof(*d));
    if (!d)
        return BATON_ENOMEM;
    d->cb = cb;
    d->ctx = ctx;
    uv_idle_init(net_loop_uv(l), &d->h);
    d->h.data = d;
    *out = d;
    return 0;
}

void net_defer_request(struct net_defer *d)
{
    if (!uv_is_active((uv_handle_t *)&d->h))
        uv_idle_start(&d->h, on_defer);
}

void net_defer_close(struct net_defer *d)
{
    if (d)
        uv_close((uv_handle_t *)&d->h, free_handle);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct net_fd *f = h->data;
    f->cb(f->ctx);
}

int net_fd_watch(struct net_loop *l, int fd, void (*cb)(void *ctx), void *ctx, struct net_fd **out)
{
    struct net_fd *f = calloc(1, sizeof(*f));
    if (!f)
        return BATON_ENOMEM;
    f->cb = cb;
    f->ctx = ctx;
    int rc = uv_poll_init(net_loop_uv(l), &f->h, fd);
    if (rc) {
        free(f);
        return rc;
    }
    f->h.data = f;
    uv_poll_start(&f->h, UV_READABLE, on_poll);
    *out = f;
    return 0;
}

void net_fd_close(struct net_fd *f)
{
    if (f)
        uv_close((uv_handle_t *)&f->h, free_handle);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct net_signal *s = h->data;
    s->cb(s->ctx, signum);
}

int net_signal_watch(struct net_loop *l, int signum, void (*cb)(void *ctx, int signum), void *ctx,
                     struct net_signal **out)
{
    struct net_signal *s = calloc(1, sizeof(*s));
    if (!s)
        return BATON_ENOMEM;
    s->cb = cb;
    s->ctx = ctx;
    uv_signal_init(net_loop_uv(l), &s->h);
    s->h.data = s;
    int rc = uv_signal_start(&s->h, on_signal, signum);
    if (rc) {
        uv_close((uv_handle_t *)&s->h, free_handle);
        return rc;
    }
    *out = s;
    return 0;
}

void net_signal_close(struct net_signal *s)
{
    if (s)
        uv_close((uv_handle_t *)&s->h, free_handle);
}

uint64_t net_now_ms(void)
{
    return uv_hrtime() / 1000000u;
}
