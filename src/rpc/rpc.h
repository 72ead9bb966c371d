/*
 * rpc: gRPC over HTTP/2, on nghttp2 and protobuf-c. Both ends are I/O-agnostic: a connection
 * object is fed the bytes read from its transport (rpc_conn_recv / rpc_client_recv) and hands
 * back the bytes to write (rpc_conn_send / rpc_client_send), so the same code runs on libuv
 * sockets (net/), in memory (tests) and in the simulator. Everything here runs on one thread;
 * nothing blocks.
 *
 * Server: a table of methods keyed by ":path" ("/etcdserverpb.KV/Range"); each request message
 * is decoded with protobuf-c into a per-call arena and given to the method's handler through a
 * call handle. The handle stays valid until the handler finishes it (rpc_call_finish) or is
 * told it is gone (on_cancel: client reset, connection closed, deadline passed, bad input on a
 * later message) -- exactly one of the two ends every call the handler was shown, so a handler
 * may answer long after its on_message returned (after Raft commits).
 *
 * Client: many concurrent calls over one connection; each call reports its response messages
 * (raw bytes; rpc_unpack decodes them) and then exactly once its status through on_close.
 *
 * Bounds: request message size, header bytes per call, streams per connection, output bytes
 * buffered per call and per connection (rpc_call_send returns BATON_EBUSY past them and
 * on_writable says when to go on), stream resets per second, time to complete the handshake.
 */
#ifndef BATON_RPC_H
#define BATON_RPC_H

#include "base/base.h"

struct ProtobufCMessage;
struct ProtobufCMessageDescriptor;

/* ---- Status codes ------------------------------------------------------------------------- */
enum grpc_code {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
    GRPC_UNAUTHENTICATED = 16,
};
/* "OK", "CANCELLED", ... as gRPC spells them; "UNKNOWN" for codes out of range. Static. */
const char *grpc_code_name(int code);

/* A status: a gRPC code and its message (static storage unless said otherwise). */
struct rpc_status {
    int code;
    const char *message;
};

/* etcd's server-side errors (api/v3rpc/rpctypes/error.go, v3.5) with their exact texts: clients
 * match on the text, so never reword one. */
enum rpc_etcd_error {
    RPC_ETCD_EMPTY_KEY,
    RPC_ETCD_KEY_NOT_FOUND,
    RPC_ETCD_VALUE_PROVIDED,
    RPC_ETCD_LEASE_PROVIDED,
    RPC_ETCD_TOO_MANY_OPS,
    RPC_ETCD_DUPLICATE_KEY,
    RPC_ETCD_COMPACTED,
    RPC_ETCD_FUTURE_REV,
    RPC_ETCD_NO_SPACE,
    RPC_ETCD_LEASE_NOT_FOUND,
    RPC_ETCD_LEASE_EXIST,
    RPC_ETCD_LEASE_TTL_TOO_LARGE,
    RPC_ETCD_WATCH_CANCELED,
    RPC_ETCD_MEMBER_EXIST,
    RPC_ETCD_PEER_URL_EXIST,
    RPC_ETCD_MEMBER_NOT_ENOUGH_STARTED,
    RPC_ETCD_MEMBER_BAD_URLS,
    RPC_ETCD_MEMBER_NOT_FOUND,
    RPC_ETCD_MEMBER_NOT_LEARNER,
    RPC_ETCD_LEARNER_NOT_READY,
    RPC_ETCD_TOO_MANY_LEARNERS,
    RPC_ETCD_CLUSTER_ID_MISMATCH,
    RPC_ETCD_REQUEST_TOO_LARGE,
    RPC_ETCD_TOO_MANY_REQUESTS,
    RPC_ETCD_ROOT_USER_NOT_EXIST,
    RPC_ETCD_ROOT_ROLE_NOT_EXIST,
    RPC_ETCD_USER_ALREADY_EXIST,
    RPC_ETCD_USER_EMPTY,
    RPC_ETCD_USER_NOT_FOUND,
    RPC_ETCD_ROLE_ALREADY_EXIST,
    RPC_ETCD_ROLE_NOT_FOUND,
    RPC_ETCD_ROLE_EMPTY,
    RPC_ETCD_AUTH_FAILED,
    RPC_ETCD_PERMISSION_NOT_GIVEN,
    RPC_ETCD_PERMISSION_DENIED,
    RPC_ETCD_ROLE_NOT_GRANTED,
    RPC_ETCD_PERMISSION_NOT_GRANTED,
    RPC_ETCD_AUTH_NOT_ENABLED,
    RPC_ETCD_INVALID_AUTH_TOKEN,
    RPC_ETCD_INVALID_AUTH_MGMT,
    RPC_ETCD_AUTH_OLD_REVISION,
    RPC_ETCD_NO_LEADER,
    RPC_ETCD_NOT_LEADER,
    RPC_ETCD_LEADER_CHANGED,
    RPC_ETCD_NOT_CAPABLE,
    RPC_ETCD_STOPPED,
    RPC_ETCD_TIMEOUT,
    RPC_ETCD_TIMEOUT_DUE_TO_LEADER_FAIL,
    RPC_ETCD_TIMEOUT_DUE_TO_CONNECTION_LOST,
    RPC_ETCD_TIMEOUT_WAIT_APPLIED_INDEX,
    RPC_ETCD_UNHEALTHY,
    RPC_ETCD_CORRUPT,
    RPC_ETCD_NOT_SUPPORTED_FOR_LEARNER,
    RPC_ETCD_BAD_LEADER_TRANSFEREE,
    RPC_ETCD_CLUSTER_VERSION_UNAVAILABLE,
    RPC_ETCD_WRONG_DOWNGRADE_VERSION_FORMAT,
    RPC_ETCD_INVALID_DOWNGRADE_TARGET_VERSION,
    RPC_ETCD_DOWNGRADE_IN_PROCESS,
    RPC_ETCD_NO_INFLIGHT_DOWNGRADE,
    RPC_ETCD_CANCELED,
    RPC_ETCD_DEADLINE_EXCEEDED,
    RPC_ETCD_ERROR_COUNT,
};
/* The code and exact text etcd answers with; asserts e is in range. */
struct rpc_status rpc_etcd_status(enum rpc_etcd_error e);
/* A baton error code (base.h) as the status etcd answers for the same condition, e.g.
 * BATON_ECOMPACTED -> OUT_OF_RANGE "etcdserver: mvcc: required revision has been compacted",
 * BATON_EPROPOSALDROP/BATON_ENOTLEADER -> UNAVAILABLE "etcdserver: no leader" (etcd's text when
 * a proposal has no leader to go to), BATON_ETIMEOUT -> UNAVAILABLE "etcdserver: request timed
 * out". Codes without an etcd twin map to INTERNAL/UNKNOWN with baton_strerror's text. */
struct rpc_status rpc_status_from_err(int err);

/* ---- Helpers shared by both ends -------------------------------------------------------- */

/* Decodes a protobuf message with every allocation taken from arena (nothing to free but the
 * arena). NULL when the bytes are not a valid message of that type or the arena is exhausted. */
struct ProtobufCMessage *rpc_unpack(const struct ProtobufCMessageDescriptor *desc,
                                    struct arena *arena, const void *data, size_t len);

/* A metadata pair (header) a client sends with a call; both strings borrowed for the call. */
struct rpc_metadata {
    const char *name; /* lower-case, not starting with ':' or "grpc-" */
    const char *value;
};

/* Clock: milliseconds from an arbitrary origin, never going back. NULL means CLOCK_MONOTONIC.
 * The simulator passes a virtual clock. */
typedef uint64_t (*rpc_clock_fn)(void *ctx);

/* Called when a connection has new bytes to write (a handler answered, a timer fired): the
 * transport should call rpc_conn_send / rpc_client_send soon. It may be called from inside any
 * rpc function, so it must only schedule the send, never call back into rpc directly. */
typedef void (*rpc_notify_fn)(void *ctx);

/* ---- Server ------------------------------------------------------------------------------- */
struct rpc_server;
struct rpc_conn;
struct rpc_call;

enum rpc_kind {
    RPC_UNARY,
    RPC_SERVER_STREAMING,
    RPC_CLIENT_STREAMING,
    RPC_BIDI_STREAMING,
};

struct rpc_method {
    const char *path; /* "/package.Service/Method"; borrowed, must outlive the server */
    enum rpc_kind kind;
    const struct ProtobufCMessageDescriptor *request;
    /* Optional, streaming kinds only: the call was accepted (before any message). */
    void (*on_start)(struct rpc_call *call, void *ctx);
    /* Required. A request message. Unary: exactly once, message and call arena alive until the
     * call ends. Streaming: once per message, the message valid only until this returns (the
     * call arena, rpc_call_arena, lives as long as the call). */
    void (*on_message)(struct rpc_call *call, const struct ProtobufCMessage *msg, void *ctx);
    /* Optional, streaming kinds: the client will send no more messages. */
    void (*on_half_close)(struct rpc_call *call, void *ctx);
    /* Optional: rpc_call_send said BATON_EBUSY and the buffered output has drained to half of
     * the bounds; sending again will be accepted. */
    void (*on_writable)(struct rpc_call *call, void *ctx);
    /* Optional but needed by any handler that keeps a call: the call ended without
     * rpc_call_finish (code says why: CANCELLED on client reset or connection close,
     * DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED / INVALID_ARGUMENT / INTERNAL on a bad later
     * message). The handle is invalid once this returns; do not call rpc_call_* inside it. */
    void (*on_cancel)(struct rpc_call *call, int code, void *ctx);
    void *ctx;
};

/* Optional per-call accounting (batond turns it into metrics). Both run on the loop thread and
 * must not call into rpc. Only calls to registered methods are reported: on_start once the call
 * is dispatched, on_end exactly once after it with the status sent (CANCELLED when the client
 * reset the stream or the connection closed first). method is the method's registration index
 * (0, 1, ... in rpc_server_register order), so the observer can keep per-method state in an
 * array; m is the registered method (path, kind). */
struct rpc_call_observer {
    void (*on_start)(void *ctx, size_t method, const struct rpc_method *m);
    void (*on_end)(void *ctx, size_t method, const struct rpc_method *m, int code);
    void *ctx;
};

struct rpc_server_config {
    size_t recv_msg_max_bytes;   /* one request message; default 1.5 MiB */
    size_t header_max_bytes;     /* request header block per call; default 64 KiB */
    size_t metadata_max;         /* metadata pairs kept per call; default 64 */
    size_t stream_out_max_bytes; /* buffered response bytes per call; default 4 MiB */
    size_t conn_out_max_bytes;   /* buffered response bytes per connection; default 16 MiB */
    /* Buffered response bytes over all connections; default 256 MiB. A send past it is refused
     * (BATON_EBUSY, on_writable later) unless nothing at all is buffered, so one message larger
     * than every bound still goes out, alone. */
    size_t server_out_max_bytes;
    size_t conn_in_max_bytes;      /* partial request messages held per connection; 32 MiB */
    uint32_t streams_max;          /* SETTINGS_MAX_CONCURRENT_STREAMS, enforced; default 256 */
    uint32_t window_bytes;         /* initial stream window; default 1 MiB */
    uint32_t handshake_timeout_ms; /* preface + SETTINGS must arrive within; default 5000 */
    uint32_t idle_timeout_ms;      /* GOAWAY after this long without calls; 0 = never (default) */
    uint32_t keepalive_ms;         /* PING after this long without input; default 2 h (etcd) */
    uint32_t keepalive_timeout_ms; /* close when a PING stays unanswered; default 20 s (etcd) */
    uint32_t ping_min_interval_ms; /* client PINGs closer than this are strikes; 5 s (etcd) */
    uint32_t ping_strikes_max;     /* GOAWAY ENHANCE_YOUR_CALM "too_many_pings" past; 2 */
    uint32_t resets_burst;         /* RST_STREAM budget, CVE-2023-44487; default 200 */
    uint32_t resets_per_sec;       /* budget refill; default 50 */
    rpc_clock_fn clock;
    void *clock_ctx;
    const struct log_sink *log;        /* borrowed; NULL = silent */
    struct rpc_call_observer observer; /* optional; ctx borrowed */
};

void rpc_server_config_default(struct rpc_server_config *cfg);
/* cfg is copied. 0, BATON_EINVAL (a bound of 0) or BATON_ENOMEM. */
int rpc_server_create(const struct rpc_server_config *cfg, struct rpc_server **out);
/* Adds a method; m is copied (m->path is borrowed). 0, BATON_EEXIST, BATON_EINVAL, BATON_ENOMEM.
 * Register everything before the first connection. */
int rpc_server_register(struct rpc_server *srv, const struct rpc_method *m);
/* Destroy every connection first. */
void rpc_server_destroy(struct rpc_server *srv);

/* Counters over the server's life, for metrics. */
struct rpc_server_stats {
    uint64_t conns;          /* connections open now */
    uint64_t conns_total;    /* connections ever created */
    uint64_t bytes_received; /* HTTP/2 bytes fed to rpc_conn_recv */
    uint64_t bytes_sent;     /* HTTP/2 bytes handed out by rpc_conn_send */
    uint64_t out_buffered;   /* response bytes buffered now, over all connections */
    uint64_t out_refused;    /* sends refused (BATON_EBUSY) by an output bound */
};
void rpc_server_stats(const struct rpc_server *srv, struct rpc_server_stats *st);

/* One HTTP/2 connection. notify may be NULL (then poll rpc_conn_send). */
int rpc_conn_create(struct rpc_server *srv, rpc_notify_fn notify, void *notify_ctx,
                    struct rpc_conn **out);
/* Feeds bytes read from the transport. 0, or BATON_EPROTO when the peer broke the protocol
 * (bad preface, ...): then write what rpc_conn_send still gives and close. */
int rpc_conn_recv(struct rpc_conn *c, const void *data, size_t len);
/* Appends pending output to out: whole HTTP/2 frames until about max_bytes (the last frame may
 * cross it by at most 16 KiB). 0, BATON_ENOMEM, or BATON_EPROTO (session failed: close). */
int rpc_conn_send(struct rpc_conn *c, struct buf *out, size_t max_bytes);
/* Runs timers: deadlines, handshake and idle timeouts, keepalive. Call every ~100 ms. */
void rpc_conn_tick(struct rpc_conn *c);
/* Graceful shutdown: a GOAWAY notice and a PING, then (after the PING's answer or 1 s) the
 * final GOAWAY(NO_ERROR). Calls in flight complete; new ones are refused; rpc_conn_done turns
 * true when the last call is over. */
void rpc_conn_shutdown(struct rpc_conn *c);
/* True when the connection has nothing more to do: write out what rpc_conn_send gives, then
 * close the transport. */
bool rpc_conn_done(const struct rpc_conn *c);
/* Frees the connection; every call a handler still holds gets on_cancel(CANCELLED). */
void rpc_conn_destroy(struct rpc_conn *c);
/* How many calls are open on the connection (for tests and metrics). */
size_t rpc_conn_calls(const struct rpc_conn *c);
/* Response bytes buffered for the transport over all calls (bounded by conn_out_max_bytes plus
 * one message). */
size_t rpc_conn_buffered_bytes(const struct rpc_conn *c);

/* Queues a response message. 0; BATON_EBUSY when the call's or the connection's output bound
 * is reached (nothing queued; wait for on_writable); BATON_ECLOSED for a unary call that sent
 * its one message already; BATON_ENOMEM. */
int rpc_call_send(struct rpc_call *call, const struct ProtobufCMessage *msg);
/* The same with an encoded message (copied). */
int rpc_call_send_bytes(struct rpc_call *call, const void *msg, size_t len);
/* Writes exactly len bytes of an encoded message into dst. */
typedef void (*rpc_fill_fn)(void *ctx, uint8_t *dst, size_t len);
/* The same for a large message encoded in place: fill(ctx, dst, len) is called at once, with
 * room for the message in the call's output queue, so the response is never held twice. On an
 * error fill is not called. */
int rpc_call_send_fill(struct rpc_call *call, size_t len, rpc_fill_fn fill, void *ctx);
/* Ends the call: queued messages, then trailers (grpc-status, grpc-message percent-encoded;
 * message may be NULL, copied). The handle is invalid afterwards. */
void rpc_call_finish(struct rpc_call *call, int code, const char *message);
/* rpc_call_finish with rpc_status_from_err(err); err 0 is OK. */
void rpc_call_finish_err(struct rpc_call *call, int err);
bool rpc_call_writable(const struct rpc_call *call);
/* First value of a request header ("token", "authorization", ...; lower-case name) or NULL.
 * Valid while the call is. */
const char *rpc_call_metadata(const struct rpc_call *call, const char *name);
const char *rpc_call_path(const struct rpc_call *call);
/* Memory that lives as long as the call. */
struct arena *rpc_call_arena(struct rpc_call *call);
/* Absolute deadline on the server clock from grpc-timeout, or 0 for none. */
uint64_t rpc_call_deadline_ms(const struct rpc_call *call);
void rpc_call_set_user(struct rpc_call *call, void *user);
void *rpc_call_user(const struct rpc_call *call);

/* ---- Client ------------------------------------------------------------------------------- */
struct rpc_client;
struct rpc_client_call;

struct rpc_client_config {
    size_t recv_msg_max_bytes;   /* one response message; default 64 MiB */
    size_t stream_out_max_bytes; /* buffered request bytes per call; default 4 MiB */
    uint32_t calls_max;          /* calls open at once; default 1024 */
    uint32_t window_bytes;       /* initial stream window; default 1 MiB */
    uint32_t keepalive_ms;       /* PING after this long without input; 0 = never (default) */
    uint32_t keepalive_timeout_ms;
    const char *authority; /* :authority; borrowed; default "localhost" */
    rpc_clock_fn clock;
    void *clock_ctx;
    const struct log_sink *log;
};

struct rpc_client_callbacks {
    /* A response message: bytes valid until this returns. */
    void (*on_message)(struct rpc_client_call *call, const uint8_t *data, size_t len, void *ctx);
    /* Exactly once per started call: its status (message percent-decoded, valid until this
     * returns). The handle is invalid once this returns. */
    void (*on_close)(struct rpc_client_call *call, int code, const char *message, void *ctx);
    /* Optional: a send that said BATON_EBUSY may go on. */
    void (*on_writable)(struct rpc_client_call *call, void *ctx);
};

void rpc_client_config_default(struct rpc_client_config *cfg);
int rpc_client_create(const struct rpc_client_config *cfg, rpc_notify_fn notify, void *notify_ctx,
                      struct rpc_client **out);
/* Same contract as rpc_conn_recv / send / tick / done. */
int rpc_client_recv(struct rpc_client *cl, const void *data, size_t len);
int rpc_client_send(struct rpc_client *cl, struct buf *out, size_t max_bytes);
void rpc_client_tick(struct rpc_client *cl);
bool rpc_client_done(const struct rpc_client *cl);
/* Every open call gets on_close(UNAVAILABLE, "connection closed"), then the client is freed. */
void rpc_client_destroy(struct rpc_client *cl);
/* Calls open (started and not yet closed). */
size_t rpc_client_calls(const struct rpc_client *cl);
/* True once the server sent GOAWAY; *error_code gets its HTTP/2 code (0 NO_ERROR = graceful,
 * 11 ENHANCE_YOUR_CALM, ...). New calls are refused from then on. */
bool rpc_client_goaway(const struct rpc_client *cl, uint32_t *error_code);

/* Starts a call. timeout_ms 0 = no deadline (sent as grpc-timeout and enforced locally). md may
 * be NULL; path and md are copied. cbs is borrowed for the call. 0, BATON_EBUSY (calls_max),
 * BATON_ECLOSED (the connection is going away), BATON_EINVAL, BATON_ENOMEM; on error no
 * callback is ever called. */
int rpc_client_call_start(struct rpc_client *cl, const char *path, const struct rpc_metadata *md,
                          size_t md_len, uint32_t timeout_ms,
                          const struct rpc_client_callbacks *cbs, void *ctx,
                          struct rpc_client_call **out);
/* Queues a request message (0, BATON_EBUSY past stream_out_max_bytes, BATON_ECLOSED after
 * close_send, BATON_ENOMEM). */
int rpc_client_call_send(struct rpc_client_call *call, const struct ProtobufCMessage *msg);
int rpc_client_call_send_bytes(struct rpc_client_call *call, const void *msg, size_t len);
/* No more messages from this side (END_STREAM after what is queued). */
int rpc_client_call_close_send(struct rpc_client_call *call);
/* Abandons the call (RST_STREAM CANCEL); on_close is not called; the handle is invalid. */
void rpc_client_call_cancel(struct rpc_client_call *call);
/* start + send + close_send. */
int rpc_client_unary(struct rpc_client *cl, const char *path, const struct ProtobufCMessage *msg,
                     uint32_t timeout_ms, const struct rpc_client_callbacks *cbs, void *ctx,
                     struct rpc_client_call **out);

#endif
