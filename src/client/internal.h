/*
 * libbaton internals shared by its files. core.c owns the client's thread, the queue of calls
 * from other threads, connections, endpoint choice, leader discovery, retries and managed
 * streams; kv.c, admin.c, cm.c and elect.c build the public calls on top of it.
 */
#ifndef BATON_CLIENT_INTERNAL_H
#define BATON_CLIENT_INTERNAL_H

#include "baton.h"
#include "base/base.h"
#include "net/net.h"
#include "rpc/rpc.h"

#include "rpc.pb-c.h"
#include <protobuf-c/protobuf-c.h>
#include <pthread.h>

#define CLIENT_EPS_MAX     16
#define CLIENT_URL_MAX     128
#define CLIENT_QUEUE_MAX   1024
#define CLIENT_TICK_MS     20
#define CLIENT_MSG_MAX     256
#define CLIENT_STREAMS_MAX 512
#define CLIENT_LEASES_MAX  1024
#define CLIENT_RESP_MAX    (64u << 20)

struct baton_client;
struct op;
struct stream;

/* One endpoint: where to connect and when it may be tried again after a failure. */
struct endpoint {
    char url[CLIENT_URL_MAX];
    uint64_t member_id; /* 0 until discovery learned it */
    uint64_t retry_at_ms;
    uint32_t failures;
};

/* One connection (net_client + rpc_client). Freed when net reports its end. */
struct conn {
    struct baton_client *c;
    struct net_client *nc;
    char url[CLIENT_URL_MAX];
    int ep; /* index into eps, -1 for a pinned one-off connection */
    bool connected, was_connected, ended, closing, retiring;
    uint64_t opened_ms;
    uint32_t unary; /* unary calls open on it */
    int last_err;   /* why it ended */
    struct conn *next;
};

enum op_flags {
    OP_WRITE = 1 << 0,  /* not idempotent: not retried once it may have reached a member */
    OP_STREAM = 1 << 1, /* server streaming: messages go to on_msg */
    OP_NORETRY = 1 << 2,
};

/* A call from a user thread (lives on that thread's stack until completed). Either a function
 * to run on the client's thread (fn), or a unary / server-streaming RPC (path). */
struct op {
    struct baton_client *c;
    void (*fn)(struct baton_client *c, struct op *op); /* must end with op_complete */
    void *arg;
    const char *path;
    struct buf req; /* encoded request */
    int flags;
    const char *pin; /* NULL: the client's endpoints; else this endpoint only */
    uint32_t timeout_ms;
    /* Server streaming: each message (return non-zero to abort the call with that code). */
    int (*on_msg)(struct op *op, const uint8_t *data, size_t len);
    /* Set for a call the client's thread makes itself (client_call_async): runs instead of
     * waking a caller, on the client's thread; it owns op from then on. */
    void (*on_done)(struct op *op);
    /* Client-thread state. */
    uint64_t deadline_ms;
    uint32_t attempt;
    uint64_t retry_at_ms;
    bool queued_retry;
    struct rpc_client_call *call;
    struct conn *conn;
    struct op *next_retry;
    /* Result. */
    struct buf resp;
    int rc;
    int code;
    char msg[CLIENT_MSG_MAX];
    bool done;
};

/* A long-lived stream the client keeps open across failures (watch, keep-alive, heartbeat,
 * config watch, observe). */
struct stream {
    struct baton_client *c;
    const char *path;
    bool want_leader; /* wait for leader discovery before opening */
    /* Sends the opening messages on s->call. 0 or an error (the stream is retried). */
    int (*start)(struct stream *s);
    void (*on_msg)(struct stream *s, const uint8_t *data, size_t len);
    /* The call ended (code, msg): return true to reopen after a backoff. */
    bool (*on_end)(struct stream *s, int code, const char *msg);
    /* Called once when the stream is removed for good (free owner memory here). */
    void (*on_free)(struct stream *s);
    /* Optional: every tick of the client's thread. */
    void (*on_tick)(struct stream *s, uint64_t now);
    void *owner;
    struct rpc_client_call *call;
    struct conn *conn;
    bool open, removed;
    uint32_t failures;
    uint64_t reopen_at_ms;
    struct stream *next;
};

struct baton_client {
    struct baton_options o;
    struct endpoint eps[CLIENT_EPS_MAX];
    int eps_len;
    int cur; /* endpoint in use */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct op *queue[CLIENT_QUEUE_MAX];
    size_t q_head, q_len;
    bool closing;   /* under mu */
    size_t callers; /* threads blocked in a call; under mu */

    /* Client-thread state. */
    struct net_loop *loop;
    struct net_async *wake;
    struct net_timer *tick;
    struct prng prng;
    struct conn *main;  /* the connection calls go to */
    struct conn *conns; /* every live connection (main, retiring, pinned) */
    struct op *retry;   /* ops waiting for their retry time */
    struct op **inflight;
    size_t inflight_len, inflight_cap;
    struct stream *streams;
    size_t streams_len;
    bool shut;
    uint64_t leader_id;
    bool discover_needed, discovering;
    uint64_t discover_at_ms;
    char conn_err[96]; /* why the latest connection attempt failed */
    char last_conn_url[CLIENT_URL_MAX];
    struct log_sink net_log;
    struct lease_keeper *leases; /* kv.c */
    struct baton_agent *agents;  /* cm.c */
};

/* ---- core.c ---- */
uint64_t client_now_ms(void);
bool client_on_thread(const struct baton_client *c);
/* Records a local error for baton_last_error on this thread and returns err. */
int client_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Thread-local copy of op's outcome for baton_last_error; returns op->rc. */
int client_result(const struct op *op);

/* Runs op on the client's thread and waits. The request (if any) is packed from msg. */
int client_call(struct baton_client *c, struct op *op, const ProtobufCMessage *msg);
/* Client thread: starts op (heap-allocated, on_done set) without waiting. On an immediate
 * failure on_done still runs (from inside this call). */
void client_call_async(struct baton_client *c, struct op *op, const ProtobufCMessage *msg);
/* Runs fn(c, op) on the client's thread and waits until op_complete. */
int client_run(struct baton_client *c, void (*fn)(struct baton_client *, struct op *), void *arg);
/* Client thread: ends op with rc (0 or BATONE_*), gRPC code and message. op is the caller's
 * again after this; do not touch it. */
void op_complete(struct op *op, int rc, int code, const char *msg);
/* Decodes op->resp into arena; BATONE_SERVER with a message when undecodable. */
int op_decode(struct op *op, const ProtobufCMessageDescriptor *desc, struct arena *arena,
              void **out);
void op_free(struct op *op);
/* BATONE_* code for a server status. */
int client_map_status(int code, const char *msg);

/* Client thread: managed streams. s is owned by the client from stream_add until on_free. */
void stream_add(struct baton_client *c, struct stream *s);
void stream_remove(struct stream *s);
/* Queue a message on an open stream: 0 or an error (the stream restarts). */
int stream_send(struct stream *s, const ProtobufCMessage *msg);

/* kv.c / cm.c hooks for the tick and shutdown. */
void lease_tick(struct baton_client *c, uint64_t now);
void lease_shutdown(struct baton_client *c);
void agent_tick(struct baton_client *c, uint64_t now);
void agent_shutdown(struct baton_client *c);

/* Converters shared by kv.c and elect.c. */
void kv_from_pb(struct baton_kv *out, const void *pb_kv);
int result_from_range(struct baton_result *r, struct arena *a, const void *range_resp);
int result_new(struct baton_result *r, struct arena **a);

/* ---- kv.c: watches (KV, config, observe share the object), txn helpers ---- */
enum watch_kind { WATCH_KV, WATCH_CONFIG, WATCH_OBSERVE };

struct baton_watch {
    struct stream s;
    enum watch_kind kind;
    uint8_t *key, *end;
    size_t key_len, end_len;
    int64_t next_rev; /* resume point: the revision after the last one delivered */
    baton_watch_fn fn;
    baton_watch_end_fn end_fn;
    baton_config_fn config_fn;
    void *ctx;
    struct op *create_op; /* baton_watch waiting for the server's "created" */
    uint64_t create_deadline_ms;
    bool in_cb, stop_requested, ended;
    struct arena arena;
};

struct baton_watch *watch_new(enum watch_kind kind, const char *path, void *ctx);
/* Registers w (stream start/on_msg/on_end set) and waits until w->create_op completes. On an
 * error w is freed. */
int watch_register(struct baton_client *c, struct baton_watch *w, struct baton_watch **out);
/* Completes the baton_watch* call waiting for w, if any. */
void watch_created(struct baton_watch *w, int rc, int code, const char *msg);
/* Builds the TxnRequest in arena a. extra (may be NULL) is one more compare appended, and
 * else_extra one more failure op (the fencing helpers use both). */
int txn_build(struct arena *a, const struct baton_txn *t, const struct baton_cmp *extra,
              const struct baton_op *else_extra, Etcdserverpb__TxnRequest *req);
/* Runs a Txn; out is filled (free with baton_result_free); *tr (may be NULL) is the decoded
 * response, valid while out is. */
int txn_run(struct baton_client *c, const Etcdserverpb__TxnRequest *req, struct baton_result *out,
            const Etcdserverpb__TxnResponse **tr);

/* ---- admin.c ---- */
void node_from_pb(struct baton_node *n, const void *pb);

#endif
