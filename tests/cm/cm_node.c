/*
 * cm_node: a database node's side of baton.v1.Nodes, for the tests in this directory, on the
 * rpc client and net/ (as a real node would use libbaton later). Modes:
 *
 *   cm_node agent EPS [--address A] [--label k=v]... [--version V]
 *       Registers, then heartbeats at the interval the server gave, always on the leader
 *       (followers answer "not leader": the agent moves to the next endpoint). When told to
 *       REREGISTER it first tries a write fenced with its old epoch (expected to fail), then
 *       registers again and writes fenced with the new epoch (expected to succeed). One line
 *       per event on stdout: "registered id=.. epoch=..", "state id=.. epoch=.. state=..",
 *       "fence id=.. epoch=.. succeeded=0|1", "reregister ...", "stop ...".
 *   cm_node call EP METHOD [--id N] [--epoch E] [--address A] [--label k=v]... [--version V]
 *       One call (register, get, list, drain, decommission, remove, or heartbeat: one message
 *       on a stream); prints "code=<name> message=<text>" and the node(s) or heartbeat answer.
 *   cm_node watch EP
 *       Watches /baton/nodes/ and prints "node id=.. state=.. epoch=.. rev=.." per record put.
 *   cm_node load EP --nodes N [--conns C] [--seconds S] [--pid P] [--interval-ms I]
 *       Registers N nodes, then runs one heartbeat stream per node over C connections, each
 *       sending its next heartbeat as soon as the last is answered (or, with I, once every I
 *       ms), for S seconds; with --pid, reports P's CPU time and RSS growth: heartbeats per CPU
 *       second, bytes per node.
 *
 * EPS: comma-separated host:port list. Exit status 0 unless the tool itself failed.
 */
#include "net/net.h"
#include "rpc/rpc.h"

#include <baton.pb-c.h>
#include <rpc.pb-c.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EPS_MAX    8
#define LABELS_MAX 70

static struct net_loop *loop;
static char eps[EPS_MAX][64];
static int eps_len;
static bool done;

static void die(const char *m)
{
    fprintf(stderr, "cm_node: %s\n", m);
    exit(2);
}

static void parse_eps(const char *s)
{
    while (*s && eps_len < EPS_MAX) {
        const char *c = strchr(s, ',');
        size_t n = c ? (size_t)(c - s) : strlen(s);
        snprintf(eps[eps_len++], sizeof(eps[0]), "%.*s", (int)n, s);
        s += n + (c ? 1 : 0);
    }
}

/* ---- options shared by the modes ------------------------------------------------------------ */
struct opts {
    uint64_t id, epoch;
    const char *address, *version;
    Baton__V1__Label labels[LABELS_MAX], *label_ptrs[LABELS_MAX];
    char label_keys[LABELS_MAX][128];
    size_t labels_len;
    int nodes, conns;
    double seconds;
    int pid;
    int state;
    int interval_ms;
};

static void parse_opts(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->address = "127.0.0.1:9000";
    o->version = "1.0.0";
    o->conns = 4;
    o->seconds = 5;
    for (int i = 0; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            die("option without value");
        if (!strcmp(a, "--id"))
            o->id = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--epoch"))
            o->epoch = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--address"))
            o->address = v;
        else if (!strcmp(a, "--version"))
            o->version = v;
        else if (!strcmp(a, "--nodes"))
            o->nodes = atoi(v);
        else if (!strcmp(a, "--conns"))
            o->conns = atoi(v);
        else if (!strcmp(a, "--seconds"))
            o->seconds = atof(v);
        else if (!strcmp(a, "--pid"))
            o->pid = atoi(v);
        else if (!strcmp(a, "--state"))
            o->state = atoi(v);
        else if (!strcmp(a, "--interval-ms"))
            o->interval_ms = atoi(v);
        else if (!strcmp(a, "--label") && o->labels_len < LABELS_MAX) {
            Baton__V1__Label *l = &o->labels[o->labels_len];
            baton__v1__label__init(l);
            char *eq = strchr(v, '=');
            if (!eq)
                die("--label wants key=value");
            snprintf(o->label_keys[o->labels_len], sizeof(o->label_keys[0]), "%.*s", (int)(eq - v),
                     v);
            l->key = o->label_keys[o->labels_len];
            l->value = eq + 1;
            o->label_ptrs[o->labels_len++] = l;
        } else
            die("unknown option");
    }
}

static Baton__V1__RegisterRequest register_req(const struct opts *o, uint64_t id)
{
    Baton__V1__RegisterRequest r = BATON__V1__REGISTER_REQUEST__INIT;
    r.id = id;
    r.address = (char *)o->address;
    r.version = (char *)o->version;
    r.labels = (Baton__V1__Label **)o->label_ptrs;
    r.n_labels = o->labels_len;
    r.capacity_bytes = 1ull << 40;
    return r;
}

static const char *state_name(int s)
{
    static const char *const n[] = {"unknown",         "joining",       "up",
                                    "suspect",         "down",          "removed",
                                    "decommissioning", "decommissioned"};
    return s >= 0 && s < 8 ? n[s] : "?";
}

static const char *cmd_name(int k)
{
    static const char *const n[] = {"none", "reregister", "drain", "stop"};
    return k >= 0 && k < 4 ? n[k] : "?";
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool is_done(void *ctx)
{
    (void)ctx;
    return done;
}

/* ---- a synchronous unary call --------------------------------------------------------------- */
struct sync_call {
    bool closed;
    int code;
    char message[512];
    uint8_t *data;
    size_t len;
};

static void sync_on_message(struct rpc_client_call *c, const uint8_t *d, size_t n, void *ctx)
{
    (void)c;
    struct sync_call *s = ctx;
    free(s->data);
    s->data = malloc(n ? n : 1);
    memcpy(s->data, d, n);
    s->len = n;
}

static void sync_on_close(struct rpc_client_call *c, int code, const char *m, void *ctx)
{
    (void)c;
    struct sync_call *s = ctx;
    s->closed = true;
    s->code = code;
    snprintf(s->message, sizeof(s->message), "%s", m ? m : "");
}

static const struct rpc_client_callbacks sync_cbs = {sync_on_message, sync_on_close, NULL};

static bool sync_closed(void *ctx)
{
    return ((struct sync_call *)ctx)->closed;
}

static void conn_state_ignore(struct net_client *c, int status, void *ctx)
{
    (void)c;
    (void)status;
    bool *ended = ctx;
    if (status != 0 && ended)
        *ended = true;
}

/* One unary call on a fresh connection to ep; the answer in s (data malloc'ed). */
static void call_sync(const char *ep, const char *path, const ProtobufCMessage *m,
                      struct sync_call *s)
{
    memset(s, 0, sizeof(*s));
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    struct net_client *nc;
    bool ended = false;
    if (net_connect_rpc(loop, ep, &cc, conn_state_ignore, &ended, &nc) != 0) {
        s->closed = true;
        s->code = GRPC_UNAVAILABLE;
        snprintf(s->message, sizeof(s->message), "connect failed");
        return;
    }
    struct rpc_client_call *call;
    if (rpc_client_unary(net_client_rpc(nc), path, m, 5000, &sync_cbs, s, &call) != 0) {
        s->closed = true;
        s->code = GRPC_UNAVAILABLE;
    }
    net_loop_run_until(loop, sync_closed, s, 10000);
    if (!ended)
        net_client_close(nc);
    if (!s->closed) {
        s->code = GRPC_DEADLINE_EXCEEDED;
        snprintf(s->message, sizeof(s->message), "no answer in 10 s");
    }
}

static void print_node(const Baton__V1__Node *n)
{
    printf("node id=%016llx state=%s epoch=%llu lease=%lld address=%s version=%s labels=",
           (unsigned long long)n->id, state_name(n->state), (unsigned long long)n->epoch,
           (long long)n->lease, n->address, n->version);
    for (size_t i = 0; i < n->n_labels; i++)
        printf("%s%s=%s", i ? "," : "", n->labels[i]->key, n->labels[i]->value);
    printf("\n");
}

/* ---- fenced write -----------------------------------------------------------------------------
 */

/* Puts /test/fenced/<id> = <epoch> if the node's epoch key still holds epoch. */
static int fenced_write(const char *ep, uint64_t id, uint64_t epoch)
{
    char ekey[64], eval[32], key[64];
    snprintf(ekey, sizeof(ekey), "/baton/nodes/%016llx/epoch", (unsigned long long)id);
    snprintf(eval, sizeof(eval), "%llu", (unsigned long long)epoch);
    snprintf(key, sizeof(key), "/test/fenced/%016llx", (unsigned long long)id);
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT, *cmps[1] = {&cmp};
    cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
    cmp.key = (ProtobufCBinaryData){strlen(ekey), (uint8_t *)ekey};
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    cmp.value = (ProtobufCBinaryData){strlen(eval), (uint8_t *)eval};
    Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
    put.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    put.value = (ProtobufCBinaryData){strlen(eval), (uint8_t *)eval};
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT, *ops[1] = {&op};
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &put;
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.compare = cmps;
    t.n_compare = 1;
    t.success = ops;
    t.n_success = 1;
    struct sync_call s;
    call_sync(ep, "/etcdserverpb.KV/Txn", &t.base, &s);
    int ok = -1;
    if (s.code == GRPC_OK && s.data) {
        struct arena a;
        arena_init(&a, 4096);
        Etcdserverpb__TxnResponse *r = (Etcdserverpb__TxnResponse *)rpc_unpack(
            &etcdserverpb__txn_response__descriptor, &a, s.data, s.len);
        ok = r ? r->succeeded : -1;
        arena_free(&a);
    }
    free(s.data);
    printf("fence id=%016llx epoch=%llu succeeded=%d\n", (unsigned long long)id,
           (unsigned long long)epoch, ok);
    fflush(stdout);
    return ok;
}

/* ---- agent ---------------------------------------------------------------------------------- */
struct agent {
    struct opts o;
    int ep;
    uint64_t id, epoch;
    int state;
    uint32_t interval_ms;
    struct net_client *nc;
    bool conn_ended;
    struct rpc_client_call *hb;
    bool hb_open, hb_waiting, reregister, reconnect;
    uint64_t next_ms;
    struct arena arena;
};

static struct agent ag;

/* Registers (again when id != 0) on any endpoint, trying each in turn. */
static bool agent_register(struct agent *g)
{
    Baton__V1__RegisterRequest r = register_req(&g->o, g->id);
    for (int tries = 0; tries < 3 * eps_len; tries++) {
        struct sync_call s;
        call_sync(eps[g->ep], "/baton.v1.Nodes/RegisterNode", &r.base, &s);
        if (s.code == GRPC_OK && s.data) {
            arena_reset(&g->arena);
            Baton__V1__RegisterResponse *m = (Baton__V1__RegisterResponse *)rpc_unpack(
                &baton__v1__register_response__descriptor, &g->arena, s.data, s.len);
            free(s.data);
            if (!m || !m->node)
                die("undecodable RegisterResponse");
            g->id = m->node->id;
            g->epoch = m->node->epoch;
            g->state = m->node->state;
            g->interval_ms = (uint32_t)m->heartbeat_interval_ms;
            printf("registered id=%016llx epoch=%llu state=%s lease_ttl_ms=%lld "
                   "heartbeat_ms=%lld\n",
                   (unsigned long long)g->id, (unsigned long long)g->epoch, state_name(g->state),
                   (long long)m->lease_ttl_ms, (long long)m->heartbeat_interval_ms);
            fflush(stdout);
            return true;
        }
        free(s.data);
        printf("register-failed code=%s message=%s\n", grpc_code_name(s.code), s.message);
        fflush(stdout);
        if (s.code == GRPC_NOT_FOUND || s.code == GRPC_FAILED_PRECONDITION ||
            s.code == GRPC_INVALID_ARGUMENT)
            return false;
        g->ep = (g->ep + 1) % eps_len;
        usleep(200 * 1000);
    }
    return false;
}

static void agent_drop_conn(struct agent *g)
{
    if (g->hb_open && g->hb)
        rpc_client_call_cancel(g->hb);
    g->hb = NULL;
    g->hb_open = false;
    g->hb_waiting = false;
    if (g->nc && !g->conn_ended)
        net_client_close(g->nc);
    g->nc = NULL;
}

static void hb_on_message(struct rpc_client_call *c, const uint8_t *d, size_t n, void *ctx)
{
    (void)c;
    struct agent *g = ctx;
    g->hb_waiting = false;
    arena_reset(&g->arena);
    Baton__V1__HeartbeatResponse *m = (Baton__V1__HeartbeatResponse *)rpc_unpack(
        &baton__v1__heartbeat_response__descriptor, &g->arena, d, n);
    if (!m)
        die("undecodable HeartbeatResponse");
    int kind = m->n_commands ? m->commands[0]->kind : 0;
    if ((int)m->state != g->state || kind) {
        printf("state id=%016llx epoch=%llu state=%s command=%s\n", (unsigned long long)g->id,
               (unsigned long long)m->epoch, state_name(m->state), cmd_name(kind));
        fflush(stdout);
    }
    g->state = m->state;
    if (kind == BATON__V1__COMMAND__KIND__REREGISTER)
        g->reregister = true;
    if (kind == BATON__V1__COMMAND__KIND__STOP) {
        printf("stop id=%016llx\n", (unsigned long long)g->id);
        fflush(stdout);
        done = true;
    }
}

static void hb_on_close(struct rpc_client_call *c, int code, const char *m, void *ctx)
{
    (void)c;
    struct agent *g = ctx;
    g->hb = NULL;
    g->hb_open = false;
    g->hb_waiting = false;
    printf("stream-closed code=%s message=%s\n", grpc_code_name(code), m ? m : "");
    fflush(stdout);
    if (code == GRPC_NOT_FOUND) {
        done = true;
    } else {
        /* Not the leader, or gone: the next member, on a new connection (not from inside this
         * callback). */
        g->ep = (g->ep + 1) % eps_len;
        g->reconnect = true;
        g->next_ms = mono_ms() + 50;
    }
}

static const struct rpc_client_callbacks hb_cbs = {hb_on_message, hb_on_close, NULL};

static void agent_conn_state(struct net_client *c, int status, void *ctx)
{
    struct agent *g = ctx;
    if (status != 0 && c == g->nc) {
        g->conn_ended = true;
        g->nc = NULL;
        g->hb = NULL;
        g->hb_open = false;
        g->hb_waiting = false;
    }
}

static void agent_tick(void *ctx)
{
    struct agent *g = ctx;
    if (done)
        return;
    uint64_t now = mono_ms();
    if (g->reconnect) {
        g->reconnect = false;
        agent_drop_conn(g);
    }
    if (g->reregister) {
        g->reregister = false;
        agent_drop_conn(g);
        printf("reregister id=%016llx old_epoch=%llu\n", (unsigned long long)g->id,
               (unsigned long long)g->epoch);
        fflush(stdout);
        fenced_write(eps[g->ep], g->id, g->epoch);
        if (!agent_register(g)) {
            done = true;
            return;
        }
        fenced_write(eps[g->ep], g->id, g->epoch);
        g->next_ms = 0;
    }
    if (now < g->next_ms)
        return;
    if (!g->nc) {
        struct rpc_client_config cc;
        rpc_client_config_default(&cc);
        g->conn_ended = false;
        if (net_connect_rpc(loop, eps[g->ep], &cc, agent_conn_state, g, &g->nc) != 0) {
            g->nc = NULL;
            g->ep = (g->ep + 1) % eps_len;
            g->next_ms = now + 200;
            return;
        }
    }
    if (!g->hb_open) {
        if (rpc_client_call_start(net_client_rpc(g->nc), "/baton.v1.Nodes/Heartbeat", NULL, 0, 0,
                                  &hb_cbs, g, &g->hb) != 0) {
            agent_drop_conn(g);
            g->next_ms = now + 200;
            return;
        }
        g->hb_open = true;
    }
    Baton__V1__NodeStats st = BATON__V1__NODE_STATS__INIT;
    st.used_bytes = 1000;
    st.available_bytes = 1u << 30;
    Baton__V1__HeartbeatRequest h = BATON__V1__HEARTBEAT_REQUEST__INIT;
    h.node_id = g->id;
    h.epoch = g->epoch;
    h.stats = &st;
    if (rpc_client_call_send(g->hb, &h.base) != 0) {
        agent_drop_conn(g);
        g->next_ms = now + 200;
        return;
    }
    g->hb_waiting = true;
    g->next_ms = now + g->interval_ms;
}

static int run_agent(int argc, char **argv)
{
    struct agent *g = &ag;
    parse_opts(argc, argv, &g->o);
    arena_init(&g->arena, 4096);
    g->id = g->o.id;
    if (!agent_register(g))
        return 1;
    struct net_timer *t;
    if (net_timer_start(loop, 10, 10, agent_tick, g, &t) != 0)
        die("timer");
    net_loop_run_until(loop, is_done, NULL, UINT32_MAX);
    net_timer_close(t);
    agent_drop_conn(g);
    return 0;
}

/* ---- call ------------------------------------------------------------------------------------ */

static int run_call(const char *method, int argc, char **argv)
{
    struct opts o;
    parse_opts(argc, argv, &o);
    struct arena a;
    arena_init(&a, 65536);
    struct sync_call s;
    const ProtobufCMessageDescriptor *resp = NULL;
    if (!strcmp(method, "heartbeat")) {
        /* One message on a stream, then close our side. */
        memset(&s, 0, sizeof(s));
        struct rpc_client_config cc;
        rpc_client_config_default(&cc);
        struct net_client *nc;
        bool ended = false;
        if (net_connect_rpc(loop, eps[0], &cc, conn_state_ignore, &ended, &nc) != 0)
            die("connect");
        struct rpc_client_call *call;
        if (rpc_client_call_start(net_client_rpc(nc), "/baton.v1.Nodes/Heartbeat", NULL, 0, 5000,
                                  &sync_cbs, &s, &call) != 0)
            die("start");
        Baton__V1__HeartbeatRequest h = BATON__V1__HEARTBEAT_REQUEST__INIT;
        h.node_id = o.id;
        h.epoch = o.epoch;
        rpc_client_call_send(call, &h.base);
        rpc_client_call_close_send(call);
        net_loop_run_until(loop, sync_closed, &s, 10000);
        if (!ended)
            net_client_close(nc);
        resp = &baton__v1__heartbeat_response__descriptor;
    } else if (!strcmp(method, "register")) {
        Baton__V1__RegisterRequest r = register_req(&o, o.id);
        call_sync(eps[0], "/baton.v1.Nodes/RegisterNode", &r.base, &s);
        resp = &baton__v1__register_response__descriptor;
    } else if (!strcmp(method, "list")) {
        Baton__V1__NodeListRequest r = BATON__V1__NODE_LIST_REQUEST__INIT;
        r.state = o.state;
        r.labels = o.label_ptrs;
        r.n_labels = o.labels_len;
        call_sync(eps[0], "/baton.v1.Nodes/List", &r.base, &s);
        resp = &baton__v1__node_list_response__descriptor;
    } else {
        /* get, drain, decommission, remove: requests made of one id field (field 1). */
        Baton__V1__NodeGetRequest r = BATON__V1__NODE_GET_REQUEST__INIT;
        r.id = o.id;
        char path[64];
        const char *m = !strcmp(method, "get")            ? "Get"
                        : !strcmp(method, "drain")        ? "Drain"
                        : !strcmp(method, "decommission") ? "Decommission"
                        : !strcmp(method, "remove")       ? "Remove"
                                                          : NULL;
        if (!m)
            die("unknown method");
        snprintf(path, sizeof(path), "/baton.v1.Nodes/%s", m);
        call_sync(eps[0], path, &r.base, &s);
        resp = !strcmp(m, "Get")      ? &baton__v1__node_get_response__descriptor
               : !strcmp(m, "Drain")  ? &baton__v1__node_drain_response__descriptor
               : !strcmp(m, "Remove") ? &baton__v1__node_remove_response__descriptor
                                      : &baton__v1__node_decommission_response__descriptor;
    }
    printf("code=%s message=%s\n", grpc_code_name(s.code), s.message);
    if (s.data && resp) {
        ProtobufCMessage *m = rpc_unpack(resp, &a, s.data, s.len);
        if (!m)
            die("undecodable response");
        if (resp == &baton__v1__heartbeat_response__descriptor) {
            Baton__V1__HeartbeatResponse *h = (Baton__V1__HeartbeatResponse *)m;
            printf("heartbeat epoch=%llu state=%s command=%s\n", (unsigned long long)h->epoch,
                   state_name(h->state), cmd_name(h->n_commands ? h->commands[0]->kind : 0));
        } else if (resp == &baton__v1__node_list_response__descriptor) {
            Baton__V1__NodeListResponse *l = (Baton__V1__NodeListResponse *)m;
            for (size_t i = 0; i < l->n_nodes; i++)
                print_node(l->nodes[i]);
            printf("count=%zu\n", l->n_nodes);
        } else if (resp == &baton__v1__register_response__descriptor) {
            print_node(((Baton__V1__RegisterResponse *)m)->node);
        } else if (resp == &baton__v1__node_get_response__descriptor) {
            print_node(((Baton__V1__NodeGetResponse *)m)->node);
        } else if (resp == &baton__v1__node_drain_response__descriptor) {
            print_node(((Baton__V1__NodeDrainResponse *)m)->node);
        } else if (resp == &baton__v1__node_decommission_response__descriptor) {
            print_node(((Baton__V1__NodeDecommissionResponse *)m)->node);
        }
    }
    free(s.data);
    arena_free(&a);
    fflush(stdout);
    return 0;
}

/* ---- watch ----------------------------------------------------------------------------------- */

static struct arena watch_arena;

static void watch_on_message(struct rpc_client_call *c, const uint8_t *d, size_t n, void *ctx)
{
    (void)c;
    (void)ctx;
    arena_reset(&watch_arena);
    Etcdserverpb__WatchResponse *w = (Etcdserverpb__WatchResponse *)rpc_unpack(
        &etcdserverpb__watch_response__descriptor, &watch_arena, d, n);
    if (!w)
        die("undecodable WatchResponse");
    if (w->created) {
        printf("watching\n");
        fflush(stdout);
    }
    for (size_t i = 0; i < w->n_events; i++) {
        Mvccpb__KeyValue *kv = w->events[i]->kv;
        if (!kv || kv->key.len != 29 || w->events[i]->type != MVCCPB__EVENT__EVENT_TYPE__PUT)
            continue; /* only node records: /baton/nodes/<16 hex> */
        Baton__V1__Node *nd = (Baton__V1__Node *)rpc_unpack(
            &baton__v1__node__descriptor, &watch_arena, kv->value.data, kv->value.len);
        if (!nd)
            continue;
        printf("node id=%016llx state=%s epoch=%llu rev=%lld\n", (unsigned long long)nd->id,
               state_name(nd->state), (unsigned long long)nd->epoch, (long long)kv->mod_revision);
    }
    fflush(stdout);
}

static void watch_on_close(struct rpc_client_call *c, int code, const char *m, void *ctx)
{
    (void)c;
    (void)ctx;
    printf("watch-closed code=%s message=%s\n", grpc_code_name(code), m ? m : "");
    fflush(stdout);
    done = true;
}

static int run_watch(void)
{
    static const struct rpc_client_callbacks cbs = {watch_on_message, watch_on_close, NULL};
    arena_init(&watch_arena, 65536);
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    struct net_client *nc;
    if (net_connect_rpc(loop, eps[0], &cc, conn_state_ignore, NULL, &nc) != 0)
        die("connect");
    struct rpc_client_call *call;
    if (rpc_client_call_start(net_client_rpc(nc), "/etcdserverpb.Watch/Watch", NULL, 0, 0, &cbs,
                              NULL, &call) != 0)
        die("start");
    static const char key[] = "/baton/nodes/", end[] = "/baton/nodes0";
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key = (ProtobufCBinaryData){sizeof(key) - 1, (uint8_t *)key};
    cr.range_end = (ProtobufCBinaryData){sizeof(end) - 1, (uint8_t *)end};
    Etcdserverpb__WatchRequest w = ETCDSERVERPB__WATCH_REQUEST__INIT;
    w.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    w.create_request = &cr;
    rpc_client_call_send(call, &w.base);
    net_loop_run_until(loop, is_done, NULL, UINT32_MAX);
    return 0;
}

/* ---- load ------------------------------------------------------------------------------------ */

struct lnode {
    uint64_t id, epoch;
    struct rpc_client_call *call;
    int conn;
    bool waiting; /* paced mode: a heartbeat is unanswered */
};

static struct {
    struct lnode *nodes;
    int n, registered, reg_next, reg_inflight, failed;
    struct net_client *nc[64];
    bool ended[64];
    int conns;
    uint64_t beats;
    int pace_next;
    bool running;
    const struct opts *o;
    struct arena arena;
} ld;

static void reg_issue(void);

static void reg_on_message(struct rpc_client_call *c, const uint8_t *d, size_t n, void *ctx)
{
    (void)c;
    struct lnode *x = ctx;
    arena_reset(&ld.arena);
    Baton__V1__RegisterResponse *m = (Baton__V1__RegisterResponse *)rpc_unpack(
        &baton__v1__register_response__descriptor, &ld.arena, d, n);
    if (m && m->node) {
        x->id = m->node->id;
        x->epoch = m->node->epoch;
    }
}

static void reg_on_close(struct rpc_client_call *c, int code, const char *m, void *ctx)
{
    (void)c;
    (void)ctx;
    ld.reg_inflight--;
    if (code == GRPC_OK)
        ld.registered++;
    else if (ld.failed++ < 5)
        fprintf(stderr, "register: %s %s\n", grpc_code_name(code), m);
    reg_issue();
}

static const struct rpc_client_callbacks reg_cbs = {reg_on_message, reg_on_close, NULL};

static void reg_issue(void)
{
    while (ld.reg_inflight < 64 && ld.reg_next < ld.n) {
        struct lnode *x = &ld.nodes[ld.reg_next++];
        char addr[32];
        snprintf(addr, sizeof(addr), "10.0.%d.%d:9000", (ld.reg_next / 250) % 250,
                 ld.reg_next % 250);
        struct opts o = *ld.o;
        o.address = addr;
        Baton__V1__RegisterRequest r = register_req(&o, 0);
        struct rpc_client_call *c;
        if (rpc_client_unary(net_client_rpc(ld.nc[x->conn]), "/baton.v1.Nodes/RegisterNode",
                             &r.base, 30000, &reg_cbs, x, &c) != 0)
            die("register start");
        ld.reg_inflight++;
    }
    if (ld.reg_inflight == 0)
        done = true;
}

static void lhb_send(struct lnode *x)
{
    Baton__V1__HeartbeatRequest h = BATON__V1__HEARTBEAT_REQUEST__INIT;
    h.node_id = x->id;
    h.epoch = x->epoch;
    if (x->call && rpc_client_call_send(x->call, &h.base) != 0)
        die("heartbeat send");
}

static void lhb_on_message(struct rpc_client_call *c, const uint8_t *d, size_t n, void *ctx)
{
    (void)c;
    (void)d;
    (void)n;
    struct lnode *x = ctx;
    x->waiting = false;
    if (ld.running) {
        ld.beats++;
        if (!ld.o->interval_ms)
            lhb_send(x);
    }
}

/* Paced mode: every 10 ms, the next slice of nodes sends, so each node beats once per
 * interval (a node whose last heartbeat is unanswered skips its turn). */
static void lhb_pace(void *ctx)
{
    (void)ctx;
    if (!ld.running)
        return;
    int slice = (int)((int64_t)ld.n * 10 / ld.o->interval_ms);
    for (int i = 0; i < (slice > 0 ? slice : 1); i++) {
        struct lnode *x = &ld.nodes[ld.pace_next];
        ld.pace_next = (ld.pace_next + 1) % ld.n;
        if (x->call && !x->waiting) {
            x->waiting = true;
            lhb_send(x);
        }
    }
}

static void lhb_on_close(struct rpc_client_call *c, int code, const char *m, void *ctx)
{
    (void)c;
    struct lnode *x = ctx;
    x->call = NULL;
    if (ld.running && ld.failed++ < 5)
        fprintf(stderr, "heartbeat stream: %s %s\n", grpc_code_name(code), m);
}

static const struct rpc_client_callbacks lhb_cbs = {lhb_on_message, lhb_on_close, NULL};

static bool proc_stat(int pid, double *cpu_s, long *rss_kb)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return false;
    unsigned long ut = 0, st = 0;
    /* Fields after the name: state(3) ... utime(14) stime(15). */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return false;
    *cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (!f)
        return false;
    *rss_kb = 0;
    while (fgets(buf, sizeof(buf), f))
        if (!strncmp(buf, "VmRSS:", 6))
            *rss_kb = atol(buf + 6);
    fclose(f);
    return true;
}

static void sleep_loop(uint32_t ms)
{
    done = false;
    net_loop_run_until(loop, is_done, NULL, ms);
}

static int run_load(int argc, char **argv)
{
    static struct opts o;
    parse_opts(argc, argv, &o);
    if (o.nodes <= 0 || o.conns <= 0 || o.conns > 64)
        die("--nodes > 0 and --conns in 1..64");
    ld.o = &o;
    ld.n = o.nodes;
    ld.conns = o.conns;
    ld.nodes = calloc((size_t)o.nodes, sizeof(*ld.nodes));
    arena_init(&ld.arena, 65536);
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    cc.calls_max = (uint32_t)(o.nodes / o.conns + 100);
    for (int i = 0; i < o.conns; i++)
        if (net_connect_rpc(loop, eps[0], &cc, conn_state_ignore, &ld.ended[i], &ld.nc[i]) != 0)
            die("connect");
    for (int i = 0; i < o.nodes; i++)
        ld.nodes[i].conn = i % o.conns;
    double cpu0 = 0, cpu1 = 0, cpu2 = 0;
    long rss0 = 0, rss1 = 0, rss2 = 0;
    if (o.pid)
        proc_stat(o.pid, &cpu0, &rss0);
    uint64_t t0 = mono_ms();
    done = false;
    reg_issue();
    net_loop_run_until(loop, is_done, NULL, 600000);
    uint64_t t1 = mono_ms();
    printf("registered=%d failed=%d seconds=%.2f rate=%.0f/s\n", ld.registered, ld.failed,
           (double)(t1 - t0) / 1000, ld.registered * 1000.0 / (double)(t1 - t0 + 1));
    if (o.pid) {
        sleep_loop(1000); /* let the server settle (transitions, allocator) */
        proc_stat(o.pid, &cpu1, &rss1);
        printf("server rss_before_kb=%ld rss_after_kb=%ld bytes_per_node=%.0f\n", rss0, rss1,
               (double)(rss1 - rss0) * 1024 / ld.registered);
    }
    /* Heartbeat streams, one per node, closed loop. */
    ld.running = true;
    for (int i = 0; i < o.nodes; i++) {
        struct lnode *x = &ld.nodes[i];
        if (!x->id)
            continue;
        if (rpc_client_call_start(net_client_rpc(ld.nc[x->conn]), "/baton.v1.Nodes/Heartbeat", NULL,
                                  0, 0, &lhb_cbs, x, &x->call) != 0)
            die("stream start");
        if (!o.interval_ms)
            lhb_send(x);
    }
    struct net_timer *pacer = NULL;
    if (o.interval_ms && net_timer_start(loop, 10, 10, lhb_pace, NULL, &pacer) != 0)
        die("timer");
    sleep_loop(1000); /* warm-up */
    uint64_t b0 = ld.beats;
    if (o.pid)
        proc_stat(o.pid, &cpu1, &rss1);
    uint64_t t2 = mono_ms();
    sleep_loop((uint32_t)(o.seconds * 1000));
    uint64_t t3 = mono_ms();
    uint64_t b1 = ld.beats;
    if (o.pid)
        proc_stat(o.pid, &cpu2, &rss2);
    ld.running = false;
    if (pacer)
        net_timer_close(pacer);
    double secs = (double)(t3 - t2) / 1000;
    printf("heartbeats=%llu seconds=%.2f rate=%.0f/s\n", (unsigned long long)(b1 - b0), secs,
           (double)(b1 - b0) / secs);
    if (o.pid)
        printf("server cpu_seconds=%.2f heartbeats_per_cpu_second=%.0f rss_kb_start=%ld "
               "rss_kb_end=%ld\n",
               cpu2 - cpu1, (double)(b1 - b0) / (cpu2 - cpu1 > 0 ? cpu2 - cpu1 : 1e-9), rss1, rss2);
    printf("stream_failures=%d\n", ld.failed);
    for (int i = 0; i < o.conns; i++)
        if (!ld.ended[i])
            net_client_close(ld.nc[i]);
    sleep_loop(200);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 3)
        die("usage: cm_node agent|call|watch|load ENDPOINTS ...");
    parse_eps(argv[2]);
    if (net_loop_create(NULL, &loop) != 0)
        die("loop");
    int rc = 2;
    if (!strcmp(argv[1], "agent"))
        rc = run_agent(argc - 3, argv + 3);
    else if (!strcmp(argv[1], "call") && argc >= 4)
        rc = run_call(argv[3], argc - 4, argv + 4);
    else if (!strcmp(argv[1], "watch"))
        rc = run_watch();
    else if (!strcmp(argv[1], "load"))
        rc = run_load(argc - 3, argv + 3);
    else
        die("unknown mode");
    net_loop_destroy(loop);
    return rc;
}
