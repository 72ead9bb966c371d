/*
 * Our client core and etcd protos against a real etcd (3.4, grpc-go): proves the generated
 * etcdpb messages match etcd's wire format, exercises unary and bidi (Watch) calls on an
 * independent server, and checks rpc_etcd_status texts against what etcd actually answers.
 */
#include "net/net.h"
#include "rpc/rpc.h"
#include "test.h"

#include "rpc.pb-c.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static uint16_t free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(s, (struct sockaddr *)&a, sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

struct reply {
    bool closed;
    int code;
    char message[256];
    int msgs;
    struct buf last; /* last response message, encoded */
};

static void on_msg(struct rpc_client_call *call, const uint8_t *d, size_t n, void *ctx)
{
    struct reply *r = ctx;
    r->msgs++;
    buf_clear(&r->last);
    buf_append(&r->last, d, n);
}

static void on_close(struct rpc_client_call *call, int code, const char *m, void *ctx)
{
    struct reply *r = ctx;
    r->closed = true;
    r->code = code;
    snprintf(r->message, sizeof(r->message), "%s", m);
}

static const struct rpc_client_callbacks cbs = {.on_message = on_msg, .on_close = on_close};

static bool reply_closed(void *ctx)
{
    return ((struct reply *)ctx)->closed;
}

struct etcd {
    pid_t pid;
    struct net_loop *loop;
    struct net_client *nc;
    struct rpc_client *cl;
    bool ended; /* nc reported its end and is gone */
    struct arena arena;
};

static void on_state(struct net_client *c, int status, void *ctx)
{
    if (status != 0)
        ((struct etcd *)ctx)->ended = true;
}

static bool ended(void *ctx)
{
    return ((struct etcd *)ctx)->ended;
}

/* Closes the client unless it already ended, and waits until it is gone. */
static void client_close(struct etcd *e)
{
    if (!e->ended)
        net_client_close(e->nc);
    CHECK_OK(net_loop_run_until(e->loop, ended, e, 10000));
}

/* A unary call, waited for; returns the decoded response (in e->arena) or NULL on error. */
static ProtobufCMessage *unary(struct etcd *e, const char *path, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp, struct reply *r)
{
    memset(r, 0, sizeof(*r));
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_unary(e->cl, path, req, 5000, &cbs, r, &call));
    CHECK_OK(net_loop_run_until(e->loop, reply_closed, r, 10000));
    ProtobufCMessage *m = NULL;
    if (r->code == GRPC_OK && r->msgs == 1)
        m = rpc_unpack(resp, &e->arena, r->last.data, r->last.len);
    buf_free(&r->last);
    return m;
}

static void etcd_start(struct etcd *e)
{
    memset(e, 0, sizeof(*e));
    arena_init(&e->arena, 4096);
    uint16_t cport = free_port(), pport = free_port();
    char curl[64], purl[64], cluster[96], dir[512];
    snprintf(curl, sizeof(curl), "http://127.0.0.1:%u", cport);
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%u", pport);
    snprintf(cluster, sizeof(cluster), "t=%s", purl);
    snprintf(dir, sizeof(dir), "%s/etcd", test_tmpdir());
    char *argv[] = {"etcd",  "--name",
                    "t",     "--data-dir",
                    dir,     "--listen-client-urls",
                    curl,    "--advertise-client-urls",
                    curl,    "--listen-peer-urls",
                    purl,    "--initial-advertise-peer-urls",
                    purl,    "--initial-cluster",
                    cluster, "--log-level",
                    "error", "--logger",
                    "zap",   NULL};
    char log[600];
    snprintf(log, sizeof(log), "%s/etcd.log", test_tmpdir());
    e->pid = fork();
    CHECK_GE(e->pid, 0);
    if (e->pid == 0) {
        /* etcd must not outlive a test that failed half way. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp("etcd", argv);
        _exit(127);
    }
    CHECK_OK(net_loop_create(NULL, &e->loop));
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    /* etcd takes a moment to listen: retry a cheap Range until it answers. */
    for (int attempt = 0; attempt < 100; attempt++) {
        e->ended = false;
        CHECK_OK(net_connect_rpc(e->loop, curl, &cc, on_state, e, &e->nc));
        e->cl = net_client_rpc(e->nc);
        Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
        rr.key.data = (uint8_t *)"x";
        rr.key.len = 1;
        struct reply r;
        if (unary(e, "/etcdserverpb.KV/Range", &rr.base, &etcdserverpb__range_response__descriptor,
                  &r))
            return;
        client_close(e);
        usleep(100 * 1000);
    }
    test_fail(__FILE__, __LINE__, "etcd did not come up");
}

static void etcd_stop(struct etcd *e)
{
    client_close(e);
    net_loop_destroy(e->loop);
    kill(e->pid, SIGTERM);
    int st;
    waitpid(e->pid, &st, 0);
    arena_free(&e->arena);
}

static Etcdserverpb__PutResponse *put(struct etcd *e, const char *k, const char *v, struct reply *r)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key.data = (uint8_t *)k;
    p.key.len = strlen(k);
    p.value.data = (uint8_t *)v;
    p.value.len = strlen(v);
    return (Etcdserverpb__PutResponse *)unary(e, "/etcdserverpb.KV/Put", &p.base,
                                              &etcdserverpb__put_response__descriptor, r);
}

static void check_status(const struct reply *r, enum rpc_etcd_error want)
{
    struct rpc_status st = rpc_etcd_status(want);
    CHECK_EQ(r->code, st.code);
    CHECK_STR(r->message, st.message);
}

TEST(etcd_kv_and_error_texts)
{
    struct etcd e;
    etcd_start(&e);
    struct reply r;
    Etcdserverpb__PutResponse *pr = put(&e, "baton/k1", "v1", &r);
    CHECK(pr != NULL);
    CHECK(pr->header != NULL);
    int64_t rev = pr->header->revision;
    CHECK_GT(rev, 0);

    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    rr.key.data = (uint8_t *)"baton/k1";
    rr.key.len = 8;
    Etcdserverpb__RangeResponse *rg = (Etcdserverpb__RangeResponse *)unary(
        &e, "/etcdserverpb.KV/Range", &rr.base, &etcdserverpb__range_response__descriptor, &r);
    CHECK(rg != NULL);
    CHECK_EQ(rg->n_kvs, 1);
    CHECK_MEM(rg->kvs[0]->value.data, rg->kvs[0]->value.len, "v1", 2);
    CHECK_EQ(rg->kvs[0]->mod_revision, rev);

    /* Errors: our table's texts are what etcd says. */
    rr.revision = rev + 1000;
    unary(&e, "/etcdserverpb.KV/Range", &rr.base, &etcdserverpb__range_response__descriptor, &r);
    check_status(&r, RPC_ETCD_FUTURE_REV);

    put(&e, "", "v", &r);
    check_status(&r, RPC_ETCD_EMPTY_KEY);

    Etcdserverpb__LeaseRevokeRequest lr = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    lr.id = 424242;
    unary(&e, "/etcdserverpb.Lease/LeaseRevoke", &lr.base,
          &etcdserverpb__lease_revoke_response__descriptor, &r);
    check_status(&r, RPC_ETCD_LEASE_NOT_FOUND);

    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key.data = (uint8_t *)"dup";
    p.key.len = 3;
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &p;
    Etcdserverpb__RequestOp *ops[] = {&op, &op};
    Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
    txn.n_success = 2;
    txn.success = ops;
    unary(&e, "/etcdserverpb.KV/Txn", &txn.base, &etcdserverpb__txn_response__descriptor, &r);
    check_status(&r, RPC_ETCD_DUPLICATE_KEY);

    put(&e, "baton/k1", "v2", &r);
    put(&e, "baton/k1", "v3", &r);
    Etcdserverpb__CompactionRequest cr = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    cr.revision = rev + 2;
    CHECK(unary(&e, "/etcdserverpb.KV/Compact", &cr.base,
                &etcdserverpb__compaction_response__descriptor, &r) != NULL);
    rr.revision = rev;
    unary(&e, "/etcdserverpb.KV/Range", &rr.base, &etcdserverpb__range_response__descriptor, &r);
    check_status(&r, RPC_ETCD_COMPACTED);

    /* Unknown method on a real grpc-go server: the text our server copies. */
    unary(&e, "/etcdserverpb.KV/Nope", &rr.base, &etcdserverpb__range_response__descriptor, &r);
    CHECK_EQ(r.code, GRPC_UNIMPLEMENTED);
    CHECK_STR(r.message, "unknown method Nope for service etcdserverpb.KV");
    unary(&e, "/etcdserverpb.Nope/X", &rr.base, &etcdserverpb__range_response__descriptor, &r);
    CHECK_EQ(r.code, GRPC_UNIMPLEMENTED);
    CHECK_STR(r.message, "unknown service etcdserverpb.Nope");
    etcd_stop(&e);
}

static bool got_events(void *ctx)
{
    struct reply *r = ctx;
    return r->msgs >= 2 || r->closed;
}

TEST(etcd_watch_stream)
{
    struct etcd e;
    etcd_start(&e);
    struct reply w = {0};
    struct rpc_client_call *call;
    CHECK_OK(rpc_client_call_start(e.cl, "/etcdserverpb.Watch/Watch", NULL, 0, 0, &cbs, &w, &call));
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key.data = (uint8_t *)"baton/w";
    cr.key.len = 7;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    CHECK_OK(rpc_client_call_send(call, &wr.base));
    struct reply r;
    put(&e, "baton/w", "event!", &r);
    CHECK_EQ(r.code, GRPC_OK);
    CHECK_OK(net_loop_run_until(e.loop, got_events, &w, 10000));
    CHECK(!w.closed);
    Etcdserverpb__WatchResponse *resp = (Etcdserverpb__WatchResponse *)rpc_unpack(
        &etcdserverpb__watch_response__descriptor, &e.arena, w.last.data, w.last.len);
    CHECK(resp != NULL);
    CHECK_EQ(resp->n_events, 1);
    CHECK_EQ(resp->events[0]->type, MVCCPB__EVENT__EVENT_TYPE__PUT);
    CHECK_MEM(resp->events[0]->kv->value.data, resp->events[0]->kv->value.len, "event!", 6);
    rpc_client_call_cancel(call);
    buf_free(&w.last);
    etcd_stop(&e);
}
