/*
 * libbaton's engine: the client's thread and its event loop, the bounded queue that carries
 * calls from user threads to it, connections to endpoints, leader discovery, retries with
 * exponential backoff and full jitter under a per-call deadline, and managed streams that
 * reopen after failures. Everything below runs on the client's thread except client_call,
 * client_run, baton_open and baton_close.
 */
#include "internal.h"

#include "rpc.pb-c.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Thread_local int tl_code = -1;
static _Thread_local char tl_msg[CLIENT_MSG_MAX];

uint64_t client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool client_on_thread(const struct baton_client *c)
{
    return c->loop && pthread_equal(pthread_self(), c->thread);
}

int client_fail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof(tl_msg), fmt, ap);
    va_end(ap);
    tl_code = -1;
    return err;
}

int client_result(const struct op *op)
{
    if (op->rc) {
        tl_code = op->code;
        snprintf(tl_msg, sizeof(tl_msg), "%s", op->msg);
    }
    return op->rc;
}

int baton_last_error(const char **message)
{
    if (message)
        *message = tl_msg;
    return tl_code;
}

const char *baton_errstr(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case BATONE_INVAL:
        return "invalid argument";
    case BATONE_NOMEM:
        return "out of memory";
    case BATONE_UNAVAILABLE:
        return "unavailable";
    case BATONE_TIMEOUT:
        return "deadline exceeded";
    case BATONE_INDOUBT:
        return "outcome unknown (connection lost after the write was sent)";
    case BATONE_NOTFOUND:
        return "not found";
    case BATONE_EXISTS:
        return "already exists";
    case BATONE_COMPACTED:
        return "revision compacted";
    case BATONE_FENCED:
        return "fenced: epoch changed";
    case BATONE_CONFLICT:
        return "conflict: version changed";
    case BATONE_UNSUPPORTED:
        return "not supported by the server";
    case BATONE_SERVER:
        return "server error";
    case BATONE_CLOSED:
        return "client closed";
    case BATONE_BUSY:
        return "busy";
    case BATONE_TOOBIG:
        return "too big";
    case BATONE_IO:
        return "i/o error";
    default:
        return "unknown error";
    }
}

void baton_free(void *p)
{
    free(p);
}

void baton_options_default(struct baton_options *o)
{
    memset(o, 0, sizeof(*o));
    o->endpoints = "127.0.0.1:2379";
    o->dial_timeout_ms = 2000;
    o->call_timeout_ms = 5000;
    o->backoff_min_ms = 25;
    o->backoff_max_ms = 1000;
}

int client_map_status(int code, const char *msg)
{
    switch (code) {
    case GRPC_OK:
        return 0;
    case GRPC_NOT_FOUND:
        return BATONE_NOTFOUND;
    case GRPC_ALREADY_EXISTS:
        return BATONE_EXISTS;
    case GRPC_DEADLINE_EXCEEDED:
        return BATONE_TIMEOUT;
    case GRPC_UNIMPLEMENTED:
        return BATONE_UNSUPPORTED;
    case GRPC_UNAVAILABLE:
        return BATONE_UNAVAILABLE;
    case GRPC_RESOURCE_EXHAUSTED:
        return strstr(msg, "too large") ? BATONE_TOOBIG : BATONE_SERVER;
    case GRPC_OUT_OF_RANGE:
        return strstr(msg, "compacted") ? BATONE_COMPACTED : BATONE_SERVER;
    case GRPC_FAILED_PRECONDITION:
        if (strstr(msg, "already exist"))
            return BATONE_EXISTS;
        if (strstr(msg, "not found"))
            return BATONE_NOTFOUND;
        return strstr(msg, "version") ? BATONE_CONFLICT : BATONE_SERVER;
    case GRPC_INVALID_ARGUMENT:
        return BATONE_INVAL;
    default:
        return BATONE_SERVER;
    }
}

/* ---- endpoints ---------------------------------------------------------------------------- */

static void client_log(struct baton_client *c, enum log_level lv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void client_log(struct baton_client *c, enum log_level lv, const char *fmt, ...)
{
    if (!c->o.log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    c->o.log(c->o.log_ctx, (int)lv, line);
}

/* Normalises "http://h:p" / "h:p" into "h:p" after checking it parses. */
static int endpoint_norm(const char *in, size_t in_len, char *out, size_t out_len)
{
    char tmp[CLIENT_URL_MAX];
    if (in_len == 0 || in_len >= sizeof(tmp))
        return BATONE_INVAL;
    memcpy(tmp, in, in_len);
    tmp[in_len] = 0;
    char host[NET_HOST_MAX];
    uint16_t port;
    if (net_url_parse(tmp, host, sizeof(host), &port) != 0 || port == 0)
        return BATONE_INVAL;
    const char *h = strstr(tmp, "://") ? strstr(tmp, "://") + 3 : tmp;
    size_t n = strlen(h);
    while (n && h[n - 1] == '/')
        n--;
    if (n + 1 > out_len)
        return BATONE_INVAL;
    memcpy(out, h, n);
    out[n] = 0;
    return 0;
}

static int endpoints_parse(struct baton_client *c, const char *list)
{
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && p[0] == ' ')
            p++, n--;
        while (n && p[n - 1] == ' ')
            n--;
        if (c->eps_len == CLIENT_EPS_MAX)
            return client_fail(BATONE_INVAL, "more than %d endpoints", CLIENT_EPS_MAX);
        if (endpoint_norm(p, n, c->eps[c->eps_len].url, CLIENT_URL_MAX) != 0)
            return client_fail(BATONE_INVAL, "malformed endpoint '%.*s' (want host:port)",
                               (int)BATON_MIN(n, 100), p);
        c->eps_len++;
        if (!e)
            break;
        p = e + 1;
    }
    if (c->eps_len == 0)
        return client_fail(BATONE_INVAL, "no endpoints");
    return 0;
}

static int endpoint_find_or_add(struct baton_client *c, const char *url)
{
    char norm[CLIENT_URL_MAX];
    if (endpoint_norm(url, strlen(url), norm, sizeof(norm)) != 0)
        return -1;
    for (int i = 0; i < c->eps_len; i++)
        if (strcmp(c->eps[i].url, norm) == 0)
            return i;
    if (c->eps_len == CLIENT_EPS_MAX)
        return -1;
    snprintf(c->eps[c->eps_len].url, CLIENT_URL_MAX, "%s", norm);
    return c->eps_len++;
}

/* The next endpoint to try after cur failed: the first whose retry time has come, else the
 * one that comes soonest. */
static int endpoint_next(struct baton_client *c, uint64_t now)
{
    int best = -1;
    for (int k = 1; k <= c->eps_len; k++) {
        int i = (c->cur + k) % c->eps_len;
        if (c->eps[i].retry_at_ms <= now)
            return i;
        if (best < 0 || c->eps[i].retry_at_ms < c->eps[best].retry_at_ms)
            best = i;
    }
    return best;
}

void baton_current_endpoint(struct baton_client *c, char *buf, size_t len)
{
    pthread_mutex_lock(&c->mu);
    snprintf(buf, len, "%s", c->eps[c->cur].url);
    pthread_mutex_unlock(&c->mu);
}

/* ---- connections -------------------------------------------------------------------------- */

/* net/ reports why a connect failed only in its log ("msg=\"connect failed\" err=\"...\"");
 * the client keeps that text for the caller's error message. Client thread. */
static void net_log(void *ctx, enum log_level level, const char *line, size_t len)
{
    struct baton_client *c = ctx;
    (void)level;
    const char *e = strstr(line, "err=\"");
    if (strstr(line, "connect failed") && e && (size_t)(e - line) < len) {
        e += 5;
        const char *q = strchr(e, '"');
        size_t n = q ? (size_t)(q - e) : strlen(e);
        snprintf(c->conn_err, sizeof(c->conn_err), "%.*s", (int)BATON_MIN(n, 90u), e);
    }
}

static void conn_unlink(struct baton_client *c, struct conn *k)
{
    for (struct conn **pp = &c->conns; *pp; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            return;
        }
    }
}

static void on_conn_state(struct net_client *nc, int status, void *ctx)
{
    struct conn *k = ctx;
    struct baton_client *c = k->c;
    (void)nc;
    if (status == 0) {
        k->connected = k->was_connected = true;
        if (k->ep >= 0)
            c->eps[k->ep].failures = 0;
        return;
    }
    k->ended = true;
    k->last_err = status;
    if (!k->closing && k->ep >= 0) {
        struct endpoint *e = &c->eps[k->ep];
        e->failures++;
        uint32_t back = c->o.backoff_min_ms << BATON_MIN(e->failures, 6u);
        e->retry_at_ms = client_now_ms() + BATON_MIN(back, c->o.backoff_max_ms);
        client_log(c, LOG_INFO, "msg=\"connection ended\" endpoint=%s err=\"%s\"", k->url,
                   baton_strerror(status));
    }
    if (c->main == k) {
        c->main = NULL;
        if (k->ep == c->cur && !k->closing) {
            pthread_mutex_lock(&c->mu);
            c->cur = endpoint_next(c, client_now_ms());
            pthread_mutex_unlock(&c->mu);
        }
        c->discover_needed = !c->o.no_leader_discovery;
    }
    conn_unlink(c, k);
    free(k);
}

static struct conn *conn_open(struct baton_client *c, const char *url, int ep)
{
    struct conn *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->c = c;
    k->ep = ep;
    snprintf(k->url, sizeof(k->url), "%s", url);
    k->opened_ms = client_now_ms();
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    cc.recv_msg_max_bytes = CLIENT_RESP_MAX;
    cc.calls_max = 4096;
    cc.keepalive_ms = 10000;
    cc.keepalive_timeout_ms = 5000;
    snprintf(c->last_conn_url, sizeof(c->last_conn_url), "%s", url);
    c->conn_err[0] = 0;
    int rc = net_connect_rpc(c->loop, url, &cc, on_conn_state, k, &k->nc);
    if (rc) {
        snprintf(c->conn_err, sizeof(c->conn_err), "%s", baton_strerror(rc));
        snprintf(c->last_conn_url, sizeof(c->last_conn_url), "%s", url);
        free(k);
        return NULL;
    }
    k->next = c->conns;
    c->conns = k;
    return k;
}

static void conn_close(struct conn *k)
{
    if (k->closing || k->ended)
        return;
    k->closing = true;
    net_client_close(k->nc);
}

/* The connection for calls, opened on the current endpoint when there is none. */
static struct conn *conn_main(struct baton_client *c)
{
    if (c->main && !c->main->ended && !c->main->closing) {
        uint32_t ga;
        if (!rpc_client_goaway(net_client_rpc(c->main->nc), &ga))
            return c->main;
        c->main->retiring = true;
        c->main = NULL;
    }
    int tries = c->eps_len;
    while (tries-- > 0) {
        c->main = conn_open(c, c->eps[c->cur].url, c->cur);
        if (c->main)
            return c->main;
        pthread_mutex_lock(&c->mu);
        c->cur = (c->cur + 1) % c->eps_len;
        pthread_mutex_unlock(&c->mu);
    }
    return NULL;
}

/* Moves calls to endpoint ep; the old connection retires (closes once its unary calls end;
 * its streams are closed now and reopen on the new one). */
static void conn_switch(struct baton_client *c, int ep)
{
    if (ep == c->cur && c->main)
        return;
    struct conn *old = c->main;
    pthread_mutex_lock(&c->mu);
    c->cur = ep;
    pthread_mutex_unlock(&c->mu);
    c->main = NULL;
    if (old)
        old->retiring = true;
    for (struct stream *s = c->streams; s; s = s->next) {
        if (s->open && s->conn == old) {
            rpc_client_call_cancel(s->call);
            s->call = NULL;
            s->open = false;
            s->conn = NULL;
            s->reopen_at_ms = 0;
        }
    }
    client_log(c, LOG_INFO, "msg=\"moving to the leader\" endpoint=%s", c->eps[ep].url);
}

/* ---- retries ------------------------------------------------------------------------------ */

static bool msg_is(const char *msg, const char *s)
{
    return strcmp(msg, s) == 0;
}

/* The member could not take the request and did nothing with it. */
static bool leader_problem(const char *msg)
{
    return msg_is(msg, "etcdserver: not leader") || msg_is(msg, "etcdserver: no leader") ||
           msg_is(msg, "etcdserver: leader changed") || msg_is(msg, "not leader");
}

/* The request may or may not have been applied. */
static bool outcome_unknown(const char *msg)
{
    return strncmp(msg, "etcdserver: request timed out", 29) == 0 ||
           msg_is(msg, "etcdserver: leader changed") || msg_is(msg, "etcdserver: server stopped");
}

static void op_start(struct baton_client *c, struct op *op);
static bool inflight_add(struct baton_client *c, struct op *op);

static void inflight_remove(struct baton_client *c, struct op *op)
{
    for (size_t i = 0; i < c->inflight_len; i++) {
        if (c->inflight[i] == op) {
            c->inflight[i] = c->inflight[--c->inflight_len];
            return;
        }
    }
}

void op_complete(struct op *op, int rc, int code, const char *msg)
{
    struct baton_client *c = op->c;
    inflight_remove(c, op);
    if (op->on_done) {
        op->rc = rc;
        op->code = code;
        snprintf(op->msg, sizeof(op->msg), "%s", msg ? msg : "");
        op->done = true;
        op->on_done(op);
        return;
    }
    pthread_mutex_lock(&c->mu);
    op->rc = rc;
    op->code = code;
    snprintf(op->msg, sizeof(op->msg), "%s", msg ? msg : "");
    op->done = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Schedules another attempt after a jittered exponential backoff, or ends op with the last
 * error when the deadline would pass first. where: the endpoint that failed (for the message). */
static void op_retry_later(struct baton_client *c, struct op *op, const char *where, int code,
                           const char *msg)
{
    uint64_t now = client_now_ms();
    uint32_t cap = c->o.backoff_min_ms << BATON_MIN(op->attempt, 10u);
    cap = BATON_MIN(cap, c->o.backoff_max_ms);
    uint64_t delay = 1 + prng_below(&c->prng, cap ? cap : 1);
    op->attempt++;
    if (now + delay >= op->deadline_ms || (op->flags & OP_NORETRY)) {
        char m[CLIENT_MSG_MAX];
        snprintf(m, sizeof(m), "%.100s%s%.150s", where ? where : "", where ? ": " : "", msg);
        int rc = client_map_status(code, msg);
        op_complete(op, rc ? rc : BATONE_UNAVAILABLE, code, m);
        return;
    }
    op->retry_at_ms = now + delay;
    op->queued_retry = true;
    op->next_retry = c->retry;
    c->retry = op;
}

static void op_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *ctx)
{
    struct op *op = ctx;
    (void)call;
    if (op->on_msg) {
        int rc = op->on_msg(op, d, n);
        if (rc) {
            /* The sink failed: abandon the call and report the sink's error. */
            struct baton_client *c = op->c;
            rpc_client_call_cancel(op->call);
            op->call = NULL;
            if (op->conn)
                op->conn->unary--;
            op->conn = NULL;
            (void)c;
            op_complete(op, rc, -1, "writing the stream's data failed");
        }
        return;
    }
    buf_clear(&op->resp);
    if (buf_append(&op->resp, d, n) != 0)
        op->resp.len = 0;
}

static void op_on_close(struct rpc_client_call *call, int code, const char *msg, void *ctx)
{
    struct op *op = ctx;
    struct baton_client *c = op->c;
    (void)call;
    op->call = NULL;
    struct conn *k = op->conn;
    op->conn = NULL;
    if (k)
        k->unary--;
    bool maybe_sent = k && k->was_connected;
    const char *where = k ? k->url : NULL;
    if (c->shut) {
        op_complete(op, BATONE_CLOSED, code, "client closed");
        return;
    }
    if (code == GRPC_OK) {
        op_complete(op, 0, 0, "");
        return;
    }
    if (leader_problem(msg)) {
        c->discover_needed = !c->o.no_leader_discovery;
        if ((op->flags & OP_WRITE) && outcome_unknown(msg))
            op_complete(op, BATONE_INDOUBT, code, msg);
        else
            op_retry_later(c, op, where, code, msg);
        return;
    }
    if (outcome_unknown(msg)) {
        if (op->flags & OP_WRITE)
            op_complete(op, BATONE_INDOUBT, code, msg);
        else
            op_retry_later(c, op, where, code, msg);
        return;
    }
    if (code == GRPC_UNAVAILABLE && strncmp(msg, "etcdserver:", 11) != 0) {
        /* The transport failed: the connection's own error says more than "connection
         * closed" when it never connected. */
        char m[CLIENT_MSG_MAX];
        if (k && !k->was_connected && c->conn_err[0] && strcmp(c->last_conn_url, k->url) == 0)
            snprintf(m, sizeof(m), "%s", c->conn_err);
        else
            snprintf(m, sizeof(m), "%s", msg);
        if ((op->flags & OP_WRITE) && maybe_sent && !op->pin) {
            char mm[CLIENT_MSG_MAX];
            snprintf(mm, sizeof(mm), "%.100s: %.150s", where, m);
            op_complete(op, BATONE_INDOUBT, code, mm);
            return;
        }
        op_retry_later(c, op, where, code, m);
        return;
    }
    if (code == GRPC_UNAVAILABLE) {
        /* The member refused the request before acting on it ("etcdserver: not capable",
         * "etcdserver: too many requests" style conditions): transient by gRPC's definition. */
        c->discover_needed = !c->o.no_leader_discovery;
        op_retry_later(c, op, where, code, msg);
        return;
    }
    if (code == GRPC_DEADLINE_EXCEEDED) {
        op_complete(op, BATONE_TIMEOUT, code, msg);
        return;
    }
    op_complete(op, client_map_status(code, msg), code, msg);
}

static const struct rpc_client_callbacks op_cbs = {.on_message = op_on_message,
                                                   .on_close = op_on_close};

static void op_start(struct baton_client *c, struct op *op)
{
    uint64_t now = client_now_ms();
    if (now >= op->deadline_ms) {
        op_complete(op, BATONE_TIMEOUT, GRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
        return;
    }
    struct conn *k;
    if (op->pin) {
        k = conn_open(c, op->pin, -1);
        if (k)
            k->retiring = true; /* closes once the call is over */
    } else {
        k = conn_main(c);
    }
    if (!k) {
        char m[CLIENT_MSG_MAX];
        snprintf(m, sizeof(m), "%.100s: %.100s", c->last_conn_url, c->conn_err);
        op_complete(op, BATONE_UNAVAILABLE, GRPC_UNAVAILABLE, m);
        return;
    }
    uint32_t left = (uint32_t)BATON_MIN(op->deadline_ms - now, 0x7fffffffu);
    struct rpc_client_call *call;
    int rc =
        rpc_client_call_start(net_client_rpc(k->nc), op->path, NULL, 0, left, &op_cbs, op, &call);
    if (rc == 0) {
        rc = rpc_client_call_send_bytes(call, op->req.data, op->req.len);
        if (rc == 0)
            rc = rpc_client_call_close_send(call);
        if (rc) {
            rpc_client_call_cancel(call);
        }
    }
    if (rc) {
        if (rc == BATON_ECLOSED && !op->pin) {
            k->retiring = true;
            if (c->main == k)
                c->main = NULL;
            op_retry_later(c, op, k->url, GRPC_UNAVAILABLE, "connection is going away");
            return;
        }
        op_complete(op, rc == BATON_EBUSY ? BATONE_BUSY : BATONE_NOMEM, -1, baton_strerror(rc));
        return;
    }
    op->call = call;
    op->conn = k;
    k->unary++;
}

/* ---- leader discovery --------------------------------------------------------------------- */

struct discover {
    struct baton_client *c;
    struct conn *k;
    struct buf resp;
    uint64_t leader;
    uint64_t self; /* the member dv->k reaches */
    bool member_list;
};

static void disc_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *ctx)
{
    struct discover *dv = ctx;
    (void)call;
    buf_clear(&dv->resp);
    if (buf_append(&dv->resp, d, n) != 0)
        dv->resp.len = 0;
}

static void disc_on_close(struct rpc_client_call *call, int code, const char *msg, void *ctx);
static const struct rpc_client_callbacks disc_cbs = {.on_message = disc_on_message,
                                                     .on_close = disc_on_close};

static void disc_end(struct discover *dv, bool ok)
{
    struct baton_client *c = dv->c;
    c->discovering = false;
    if (!ok) {
        c->discover_needed = true;
        c->discover_at_ms = client_now_ms() + 100;
    }
    buf_free(&dv->resp);
    free(dv);
}

/* The leader's client URL from a MemberList answer; switches to it. */
static bool disc_member_list(struct discover *dv, struct arena *a)
{
    struct baton_client *c = dv->c;
    Etcdserverpb__MemberListResponse *ml = (Etcdserverpb__MemberListResponse *)rpc_unpack(
        &etcdserverpb__member_list_response__descriptor, a, dv->resp.data, dv->resp.len);
    if (!ml)
        return false;
    int leader_ep = -1;
    for (size_t i = 0; i < ml->n_members; i++) {
        Etcdserverpb__Member *m = ml->members[i];
        for (size_t j = 0; j < m->n_clienturls; j++) {
            int ep = endpoint_find_or_add(c, m->clienturls[j]);
            if (ep < 0)
                continue;
            c->eps[ep].member_id = m->id;
            if (m->id == dv->leader && leader_ep < 0)
                leader_ep = ep;
        }
    }
    c->leader_id = dv->leader;
    if (dv->leader == dv->self)
        return true; /* on the leader already, whatever URL it advertises */
    if (leader_ep < 0)
        return false;
    if (leader_ep != c->cur)
        conn_switch(c, leader_ep);
    return true;
}

static void disc_on_close(struct rpc_client_call *call, int code, const char *msg, void *ctx)
{
    struct discover *dv = ctx;
    struct baton_client *c = dv->c;
    (void)call;
    (void)msg;
    if (c->shut || code != GRPC_OK || dv->k != c->main) {
        disc_end(dv, c->shut || dv->k != c->main);
        return;
    }
    struct arena a;
    arena_init(&a, 4096);
    bool ok = false;
    if (!dv->member_list) {
        Etcdserverpb__StatusResponse *st = (Etcdserverpb__StatusResponse *)rpc_unpack(
            &etcdserverpb__status_response__descriptor, &a, dv->resp.data, dv->resp.len);
        if (st && st->leader && st->header) {
            /* The leader is known; the member list gives its client URL and every other
             * member's, so the client can fail over past the endpoints it was given. */
            dv->leader = st->leader;
            dv->self = st->header->member_id;
            if (dv->k->ep >= 0)
                c->eps[dv->k->ep].member_id = st->header->member_id;
            Etcdserverpb__MemberListRequest req = ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
            dv->member_list = true;
            struct rpc_client_call *nc;
            if (rpc_client_unary(net_client_rpc(dv->k->nc), "/etcdserverpb.Cluster/MemberList",
                                 &req.base, 2000, &disc_cbs, dv, &nc) == 0) {
                arena_free(&a);
                return;
            }
        }
    } else {
        ok = disc_member_list(dv, &a);
    }
    arena_free(&a);
    disc_end(dv, ok);
}

static void discover_start(struct baton_client *c, uint64_t now)
{
    if (!c->main && c->eps[c->cur].retry_at_ms > now)
        return; /* the endpoint failed lately; calls will reconnect, or the next tick */
    struct conn *k = conn_main(c);
    if (!k || !k->connected)
        return;
    struct discover *dv = calloc(1, sizeof(*dv));
    if (!dv)
        return;
    dv->c = c;
    dv->k = k;
    Etcdserverpb__StatusRequest req = ETCDSERVERPB__STATUS_REQUEST__INIT;
    struct rpc_client_call *call;
    if (rpc_client_unary(net_client_rpc(k->nc), "/etcdserverpb.Maintenance/Status", &req.base, 2000,
                         &disc_cbs, dv, &call) != 0) {
        free(dv);
        return;
    }
    c->discover_needed = false;
    c->discovering = true;
}

/* ---- managed streams ---------------------------------------------------------------------- */

static void stream_on_message(struct rpc_client_call *call, const uint8_t *d, size_t n, void *ctx)
{
    struct stream *s = ctx;
    (void)call;
    s->failures = 0;
    s->on_msg(s, d, n);
}

static void stream_on_close(struct rpc_client_call *call, int code, const char *msg, void *ctx)
{
    struct stream *s = ctx;
    struct baton_client *c = s->c;
    (void)call;
    s->call = NULL;
    s->open = false;
    s->conn = NULL;
    if (c->shut || s->removed)
        return;
    if (leader_problem(msg))
        c->discover_needed = !c->o.no_leader_discovery;
    bool again = s->on_end(s, code, msg);
    if (s->removed)
        return;
    if (!again) {
        stream_remove(s);
        return;
    }
    uint32_t cap = c->o.backoff_min_ms << BATON_MIN(s->failures, 10u);
    cap = BATON_MIN(cap, c->o.backoff_max_ms);
    s->failures++;
    s->reopen_at_ms = client_now_ms() + 1 + prng_below(&c->prng, cap ? cap : 1);
}

static const struct rpc_client_callbacks stream_cbs = {.on_message = stream_on_message,
                                                       .on_close = stream_on_close};

static void stream_open(struct baton_client *c, struct stream *s)
{
    if (s->want_leader && (c->discover_needed || c->discovering))
        return;
    struct conn *k = conn_main(c);
    if (!k) {
        s->reopen_at_ms = client_now_ms() + c->o.backoff_max_ms;
        return;
    }
    int rc =
        rpc_client_call_start(net_client_rpc(k->nc), s->path, NULL, 0, 0, &stream_cbs, s, &s->call);
    if (rc) {
        s->reopen_at_ms = client_now_ms() + c->o.backoff_min_ms;
        return;
    }
    s->open = true;
    s->conn = k;
    if (s->start(s) != 0 && s->call) {
        rpc_client_call_cancel(s->call);
        s->call = NULL;
        s->open = false;
        s->conn = NULL;
        s->reopen_at_ms = client_now_ms() + c->o.backoff_min_ms;
    }
}

void stream_add(struct baton_client *c, struct stream *s)
{
    s->c = c;
    s->next = c->streams;
    c->streams = s;
    c->streams_len++;
    stream_open(c, s);
}

void stream_remove(struct stream *s)
{
    struct baton_client *c = s->c;
    if (s->removed)
        return;
    s->removed = true;
    if (s->call) {
        rpc_client_call_cancel(s->call);
        s->call = NULL;
    }
    for (struct stream **pp = &c->streams; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            c->streams_len--;
            break;
        }
    }
    if (s->on_free)
        s->on_free(s);
}

int stream_send(struct stream *s, const ProtobufCMessage *msg)
{
    if (!s->open || !s->call)
        return BATONE_UNAVAILABLE;
    int rc = rpc_client_call_send(s->call, msg);
    if (rc) {
        rpc_client_call_cancel(s->call);
        s->call = NULL;
        s->open = false;
        s->conn = NULL;
        s->reopen_at_ms = client_now_ms() + s->c->o.backoff_min_ms;
        return BATONE_BUSY;
    }
    return 0;
}

/* ---- the client's thread ------------------------------------------------------------------ */

static void on_tick(void *ctx)
{
    struct baton_client *c = ctx;
    if (c->shut)
        return;
    uint64_t now = client_now_ms();
    /* Dial timeouts and retired connections. */
    for (struct conn *k = c->conns; k; k = k->next) {
        if (!k->connected && !k->closing && now - k->opened_ms >= c->o.dial_timeout_ms) {
            snprintf(c->conn_err, sizeof(c->conn_err), "dial timeout (%u ms)",
                     c->o.dial_timeout_ms);
            snprintf(c->last_conn_url, sizeof(c->last_conn_url), "%s", k->url);
            conn_close(k);
        } else if (k->retiring && k != c->main && k->unary == 0) {
            bool streams = false;
            for (struct stream *s = c->streams; s; s = s->next)
                streams |= s->open && s->conn == k;
            if (!streams)
                conn_close(k);
        }
    }
    if (c->discover_needed && !c->discovering && now >= c->discover_at_ms)
        discover_start(c, now);
    /* Retries whose time has come. */
    struct op *due = NULL;
    for (struct op **pp = &c->retry; *pp;) {
        struct op *op = *pp;
        if (op->retry_at_ms <= now) {
            *pp = op->next_retry;
            op->queued_retry = false;
            op->next_retry = due;
            due = op;
        } else {
            pp = &op->next_retry;
        }
    }
    while (due) {
        struct op *op = due;
        due = op->next_retry;
        op_start(c, op);
    }
    for (struct stream *s = c->streams, *next; s; s = next) {
        next = s->next;
        if (!s->open && !s->removed && s->reopen_at_ms <= now)
            stream_open(c, s);
        if (s->on_tick)
            s->on_tick(s, now); /* may remove s */
    }
    lease_tick(c, now);
    agent_tick(c, now);
}

static void shutdown_all(struct baton_client *c)
{
    c->shut = true;
    agent_shutdown(c);
    lease_shutdown(c);
    while (c->streams)
        stream_remove(c->streams);
    for (struct conn *k = c->conns; k; k = k->next)
        conn_close(k); /* calls end with on_close -> BATONE_CLOSED */
    while (c->retry) {
        struct op *op = c->retry;
        c->retry = op->next_retry;
        op_complete(op, BATONE_CLOSED, -1, "client closed");
    }
    while (c->inflight_len) {
        struct op *op = c->inflight[0];
        if (op->call) {
            rpc_client_call_cancel(op->call);
            op->call = NULL;
        }
        op_complete(op, BATONE_CLOSED, -1, "client closed");
    }
    net_timer_close(c->tick);
    net_async_close(c->wake);
    net_loop_stop(c->loop);
}

static void on_wake(void *ctx)
{
    struct baton_client *c = ctx;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        bool closing = c->closing;
        struct op *op = NULL;
        if (c->q_len) {
            op = c->queue[c->q_head];
            c->q_head = (c->q_head + 1) % CLIENT_QUEUE_MAX;
            c->q_len--;
        }
        pthread_mutex_unlock(&c->mu);
        if (!op) {
            if (closing && !c->shut)
                shutdown_all(c);
            return;
        }
        if (closing || c->shut) {
            op_complete(op, BATONE_CLOSED, -1, "client closed");
            continue;
        }
        if (!inflight_add(c, op)) {
            op_complete(op, BATONE_NOMEM, -1, "out of memory");
            continue;
        }
        op->deadline_ms =
            client_now_ms() + (op->timeout_ms ? op->timeout_ms : c->o.call_timeout_ms);
        if (op->fn)
            op->fn(c, op);
        else
            op_start(c, op);
    }
}

static void *client_thread(void *arg)
{
    struct baton_client *c = arg;
    net_loop_run(c->loop);
    net_loop_destroy(c->loop);
    return NULL;
}

static int submit(struct baton_client *c, struct op *op)
{
    if (client_on_thread(c))
        return client_fail(BATONE_INVAL, "a blocking libbaton call from a libbaton callback");
    op->c = c;
    op->done = false;
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        return client_fail(BATONE_CLOSED, "client closed");
    }
    if (c->q_len == CLIENT_QUEUE_MAX) {
        pthread_mutex_unlock(&c->mu);
        return client_fail(BATONE_BUSY, "more than %d calls queued", CLIENT_QUEUE_MAX);
    }
    c->queue[(c->q_head + c->q_len) % CLIENT_QUEUE_MAX] = op;
    c->q_len++;
    c->callers++; /* baton_close waits for every blocked caller to leave */
    net_async_send(c->wake);
    while (!op->done)
        pthread_cond_wait(&c->cv, &c->mu);
    c->callers--;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return client_result(op);
}

int client_call(struct baton_client *c, struct op *op, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > (3u << 20)) {
        op_free(op);
        return client_fail(BATONE_TOOBIG, "request of %zu bytes is over the limit", n);
    }
    if (buf_reserve(&op->req, n + 1) != 0) {
        op_free(op);
        return client_fail(BATONE_NOMEM, "out of memory");
    }
    op->req.len = protobuf_c_message_pack(msg, op->req.data);
    return submit(c, op);
}

static bool inflight_add(struct baton_client *c, struct op *op)
{
    if (c->inflight_len == c->inflight_cap) {
        size_t cap = c->inflight_cap ? c->inflight_cap * 2 : 64;
        struct op **n = realloc(c->inflight, cap * sizeof(*n));
        if (!n)
            return false;
        c->inflight = n;
        c->inflight_cap = cap;
    }
    c->inflight[c->inflight_len++] = op;
    return true;
}

void client_call_async(struct baton_client *c, struct op *op, const ProtobufCMessage *msg)
{
    BATON_ASSERT(op->on_done);
    op->c = c;
    op->done = false;
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (c->shut) {
        op_complete(op, BATONE_CLOSED, -1, "client closed");
        return;
    }
    if (buf_reserve(&op->req, n + 1) != 0 || !inflight_add(c, op)) {
        op_complete(op, BATONE_NOMEM, -1, "out of memory");
        return;
    }
    op->req.len = protobuf_c_message_pack(msg, op->req.data);
    op->deadline_ms = client_now_ms() + (op->timeout_ms ? op->timeout_ms : c->o.call_timeout_ms);
    op_start(c, op);
}

int client_run(struct baton_client *c, void (*fn)(struct baton_client *, struct op *), void *arg)
{
    struct op op = {.fn = fn, .arg = arg};
    int rc = submit(c, &op);
    op_free(&op);
    return rc;
}

int op_decode(struct op *op, const ProtobufCMessageDescriptor *desc, struct arena *arena,
              void **out)
{
    *out = rpc_unpack(desc, arena, op->resp.data, op->resp.len);
    if (!*out)
        return client_fail(BATONE_SERVER, "undecodable %s from the server", desc->name);
    return 0;
}

void op_free(struct op *op)
{
    buf_free(&op->req);
    buf_free(&op->resp);
}

int baton_open(const struct baton_options *o, struct baton_client **out)
{
    if (!o || !o->endpoints || !out)
        return client_fail(BATONE_INVAL, "no options or endpoints");
    struct baton_client *c = calloc(1, sizeof(*c));
    if (!c)
        return client_fail(BATONE_NOMEM, "out of memory");
    c->o = *o;
    c->o.endpoints = NULL;
    if (!c->o.dial_timeout_ms)
        c->o.dial_timeout_ms = 2000;
    if (!c->o.call_timeout_ms)
        c->o.call_timeout_ms = 5000;
    if (!c->o.backoff_min_ms)
        c->o.backoff_min_ms = 25;
    if (c->o.backoff_max_ms < c->o.backoff_min_ms)
        c->o.backoff_max_ms = BATON_MAX(1000u, c->o.backoff_min_ms);
    int rc = endpoints_parse(c, o->endpoints);
    if (rc) {
        free(c);
        return rc;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    prng_seed(&c->prng, (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uintptr_t)c);
    c->discover_needed = !c->o.no_leader_discovery;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->net_log.fn = net_log;
    c->net_log.ctx = c;
    c->net_log.min_level = LOG_DEBUG;
    rc = net_loop_create(&c->net_log, &c->loop);
    if (rc == 0)
        rc = net_async_create(c->loop, on_wake, c, &c->wake);
    if (rc == 0)
        rc = net_timer_start(c->loop, CLIENT_TICK_MS, CLIENT_TICK_MS, on_tick, c, &c->tick);
    if (rc == 0)
        rc = pthread_create(&c->thread, NULL, client_thread, c) ? BATON_ENOMEM : 0;
    if (rc) {
        if (c->loop)
            net_loop_destroy(c->loop);
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
        return client_fail(BATONE_NOMEM, "starting the client's thread: %s", baton_strerror(rc));
    }
    *out = c;
    return 0;
}

void baton_close(struct baton_client *c)
{
    if (!c)
        return;
    BATON_ASSERT(!client_on_thread(c));
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_mutex_unlock(&c->mu);
    net_async_send(c->wake);
    pthread_join(c->thread, NULL);
    /* Calls blocked in other threads were completed with BATONE_CLOSED; let them return
     * before the mutex they wait on goes away. */
    pthread_mutex_lock(&c->mu);
    while (c->callers)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    free(c->inflight);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}
