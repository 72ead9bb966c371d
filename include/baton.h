/*
 * libbaton: the C client of baton's control plane for database nodes. It speaks etcd's v3 gRPC
 * API (KV, Watch, Lease, Cluster, Maintenance, v3election, v3lock) and baton's own services
 * (Nodes, Config, Tso) to a list of endpoints, follows the leader, and fails over.
 *
 * ---- Threading ---------------------------------------------------------------------------------
 * A client owns one thread running its own event loop; every connection, stream, timer and
 * callback lives there. The functions below may be called from any thread (several at once):
 * each one is queued to the client's thread and the caller blocks until it completes, so a
 * function returning means it is done. Background work (watches, lease keep-alives, node
 * heartbeats) reports through callbacks, which run on the client's thread, one at a time: a
 * callback must return quickly and must not call a blocking libbaton function (doing so returns
 * BATONE_INVAL rather than deadlocking); hand the work to a thread of your own instead. The
 * *_stop functions may be called from a callback.
 *
 * ---- Endpoints, leader, failover --------------------------------------------------------------
 * The client starts on the first endpoint that answers, asks it for the leader
 * (Maintenance.Status) and the members' client URLs (Cluster.MemberList), and moves to the
 * leader. When a connection fails, or a member answers "etcdserver: no leader" / "etcdserver:
 * not leader" (UNAVAILABLE / FAILED_PRECONDITION), the call is retried on the next endpoint
 * after an exponential backoff with full jitter, within the call's deadline. A write whose
 * connection broke after it was sent is not retried (it may have been applied): it fails with
 * BATONE_INDOUBT. Streams (watches, keep-alives, heartbeats) reopen by themselves; a watch
 * resumes from the revision after the last event it delivered, so no event is lost or repeated.
 *
 * ---- Errors -------------------------------------------------------------------------------------
 * Every action returns 0 or a negative BATONE_* code. For a failure, baton_last_error() on the
 * same thread gives the gRPC status code and the server's message (e.g. "etcdserver: mvcc:
 * required revision has been compacted") or a local description ("127.0.0.1:1: connection
 * refused").
 *
 * ---- Memory -------------------------------------------------------------------------------------
 * Pointer parameters are borrowed for the duration of the call unless said otherwise. Results
 * that point to memory (struct baton_result, member and node lists, strings) are freed by the
 * matching *_free function. Data passed to a callback is valid only until the callback returns.
 */
#ifndef BATON_H
#define BATON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Errors ------------------------------------------------------------------------------- */
enum baton_error {
    BATONE_INVAL = -20001,       /* bad argument (malformed endpoint, empty key, ...) */
    BATONE_NOMEM = -20002,       /* out of memory */
    BATONE_UNAVAILABLE = -20003, /* no endpoint could serve the call before its deadline */
    BATONE_TIMEOUT = -20004,     /* the call's deadline passed */
    BATONE_INDOUBT = -20005,     /* the connection broke after a write was sent: it may be done */
    BATONE_NOTFOUND = -20006,    /* no such key, lease, member, node, leader */
    BATONE_EXISTS = -20007,      /* exists already (member, ...) */
    BATONE_COMPACTED = -20008,   /* the revision asked for was compacted */
    BATONE_FENCED = -20009,      /* a fenced write ran under an old epoch and was refused */
    BATONE_CONFLICT = -20010,    /* compare-and-set lost: the version moved */
    BATONE_UNSUPPORTED = -20011, /* the server does not implement the service (UNIMPLEMENTED) */
    BATONE_SERVER = -20012,      /* any other error from the server: see baton_last_error */
    BATONE_CLOSED = -20013,      /* the client is closing */
    BATONE_BUSY = -20014,        /* a bounded queue is full (calls in flight, watches, ...) */
    BATONE_TOOBIG = -20015,      /* a bound was exceeded (key, value, message size) */
    BATONE_IO = -20016,          /* a local file could not be read or written */
};

/* Name of a BATONE_* code ("unavailable", ...); "unknown error" for anything else. Static. */
const char *baton_errstr(int err);
/* The gRPC status code (0..16; -1 for a local error) and message of the latest failed call made
 * by the calling thread. *message (may be NULL) is valid until the next call on this thread. */
int baton_last_error(const char **message);

/* ---- Client ------------------------------------------------------------------------------- */
struct baton_client;

struct baton_options {
    const char *endpoints;    /* "host:port,http://host:port,..."; copied; at most 16 */
    uint32_t dial_timeout_ms; /* connecting to one endpoint; default 2000 */
    uint32_t call_timeout_ms; /* default deadline of a call, retries included; default 5000 */
    uint32_t backoff_min_ms;  /* first retry delay (jittered); default 25 */
    uint32_t backoff_max_ms;  /* retry delay cap; default 1000 */
    bool no_leader_discovery; /* stay on the endpoints given; default false */
    /* Optional log lines (key=value text) from the client's thread. */
    void (*log)(void *ctx, int level, const char *line);
    void *log_ctx;
};

void baton_options_default(struct baton_options *o);
/* Parses the endpoints and starts the client's thread; does not wait for a connection (the
 * first call does). 0, BATONE_INVAL (no endpoint, malformed one: see baton_last_error),
 * BATONE_NOMEM. */
int baton_open(const struct baton_options *o, struct baton_client **out);
/* Stops every stream, agent and keep-alive, closes the connections and joins the thread.
 * Blocked calls in other threads return BATONE_CLOSED. Watch and agent handles are freed too:
 * stop them before, or never touch them after. Not from a callback. */
void baton_close(struct baton_client *c);
/* The endpoint the client talks to now ("127.0.0.1:2379"), copied into buf. */
void baton_current_endpoint(struct baton_client *c, char *buf, size_t len);

/* ---- Key-value ---------------------------------------------------------------------------- */
struct baton_kv {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
};

/* The result of get, put, delete and txn. ops holds one result per operation a txn executed,
 * in order (their own ops are empty). Free with baton_result_free. */
struct baton_result {
    int64_t revision; /* the store revision the call saw or made */
    bool succeeded;   /* txn: the compares held */
    struct baton_kv *kvs;
    size_t kvs_len;
    int64_t count;   /* get: keys in the range (may exceed kvs_len with a limit) */
    bool more;       /* get: more keys past the limit */
    int64_t deleted; /* delete: keys deleted */
    struct baton_result *ops;
    size_t ops_len;
    void *mem; /* private */
};
void baton_result_free(struct baton_result *r);

struct baton_get_options {
    const uint8_t *range_end; /* [key, range_end); NULL: the key alone */
    size_t range_end_len;
    bool prefix;       /* every key starting with key (range_end ignored) */
    int64_t limit;     /* 0: no limit */
    int64_t revision;  /* 0: the latest */
    bool serializable; /* served by the member we talk to, without a quorum round */
    bool keys_only;
    bool count_only;
};

/* opts may be NULL. */
int baton_get(struct baton_client *c, const void *key, size_t key_len,
              const struct baton_get_options *opts, struct baton_result *out);
/* lease 0: none. *revision (may be NULL) gets the revision of the write. */
int baton_put(struct baton_client *c, const void *key, size_t key_len, const void *value,
              size_t value_len, int64_t lease, int64_t *revision);
/* Deletes key, or [key, range_end) when range_end is not NULL. *deleted may be NULL. */
int baton_delete(struct baton_client *c, const void *key, size_t key_len, const void *range_end,
                 size_t range_end_len, int64_t *deleted);
/* The range_end that selects every key starting with prefix (out: room for len bytes); returns
 * its length (1 with out[0] = 0, meaning "to the end", when prefix is all 0xff). */
size_t baton_prefix_end(const void *prefix, size_t len, uint8_t *out);

enum baton_cmp_target {
    BATON_CMP_VALUE,
    BATON_CMP_VERSION,
    BATON_CMP_CREATE,
    BATON_CMP_MOD,
    BATON_CMP_LEASE,
};
enum baton_cmp_result { BATON_CMP_EQ, BATON_CMP_NE, BATON_CMP_LT, BATON_CMP_GT };
struct baton_cmp {
    const void *key;
    size_t key_len;
    enum baton_cmp_target target;
    enum baton_cmp_result result;
    const void *value; /* BATON_CMP_VALUE */
    size_t value_len;
    int64_t number; /* the other targets */
};
enum baton_op_kind { BATON_OP_GET, BATON_OP_PUT, BATON_OP_DELETE };
struct baton_op {
    enum baton_op_kind kind;
    const void *key;
    size_t key_len;
    const void *range_end; /* get / delete: NULL for the key alone */
    size_t range_end_len;
    const void *value; /* put */
    size_t value_len;
    int64_t lease; /* put */
};
struct baton_txn {
    const struct baton_cmp *cmps;
    size_t cmps_len;
    const struct baton_op *then_ops; /* when every compare holds */
    size_t then_len;
    const struct baton_op *else_ops;
    size_t else_len;
};
/* At most 128 compares and 128 operations per branch. A txn is a write: after a broken
 * connection it fails with BATONE_INDOUBT rather than running twice. */
int baton_txn(struct baton_client *c, const struct baton_txn *t, struct baton_result *out);

/* ---- Watch -------------------------------------------------------------------------------- */
enum baton_event_type { BATON_EVENT_PUT, BATON_EVENT_DELETE };
struct baton_event {
    enum baton_event_type type;
    struct baton_kv kv; /* for a delete: key and mod_revision only */
};
/* One call per event, in revision order. */
typedef void (*baton_watch_fn)(void *ctx, const struct baton_event *ev);
/* The watch ended for good (err: BATONE_COMPACTED when it cannot resume, BATONE_CLOSED at
 * baton_close, BATONE_SERVER when the server cancelled it). Not called after baton_watch_stop. */
typedef void (*baton_watch_end_fn)(void *ctx, int err);
struct baton_watch;

/* Watches key (or [key, range_end)) from start_revision (0: from now). Returns once the server
 * has created the watch: every write made after this returns is delivered. At most 256
 * watches per client. */
int baton_watch(struct baton_client *c, const void *key, size_t key_len, const void *range_end,
                size_t range_end_len, int64_t start_revision, baton_watch_fn fn,
                baton_watch_end_fn end, void *ctx, struct baton_watch **out);
/* No callback runs for w once this returns (except when called from w's own callback: then
 * none runs after that callback returns). Frees w. */
void baton_watch_stop(struct baton_watch *w);

/* ---- Leases ------------------------------------------------------------------------------- */
/* ttl_s: requested TTL; *id gets the lease id, *granted_ttl_s (may be NULL) the TTL granted. */
int baton_lease_grant(struct baton_client *c, int64_t ttl_s, int64_t *id, int64_t *granted_ttl_s);
int baton_lease_revoke(struct baton_client *c, int64_t id);
/* Remaining TTL in seconds (-1 when the lease does not exist). */
int baton_lease_ttl(struct baton_client *c, int64_t id, int64_t *remaining_s);
/* Keeps the lease alive in the background (a keep-alive every TTL/3) until
 * baton_lease_keepalive_stop, baton_lease_revoke or baton_close. lost(ctx, id) (may be NULL)
 * runs once if the server says the lease is gone. At most 1024 leases per client. */
int baton_lease_keepalive(struct baton_client *c, int64_t id, void (*lost)(void *ctx, int64_t id),
                          void *ctx);
void baton_lease_keepalive_stop(struct baton_client *c, int64_t id);

/* ---- Cluster members and status (the operator's view) --------------------------------------- */
#define BATON_URLS_MAX 256
struct baton_member {
    uint64_t id;
    char name[64];
    char peer_urls[BATON_URLS_MAX];   /* comma-separated */
    char client_urls[BATON_URLS_MAX]; /* comma-separated; empty until the member started */
    bool learner;
};
/* *members: malloc'd array of *len (free with baton_free). */
int baton_member_list(struct baton_client *c, struct baton_member **members, size_t *len);
/* peer_urls: comma-separated. *added (may be NULL) gets the new member. */
int baton_member_add(struct baton_client *c, const char *peer_urls, bool learner,
                     struct baton_member *added);
int baton_member_remove(struct baton_client *c, uint64_t id);
int baton_member_promote(struct baton_client *c, uint64_t id);
/* Moves leadership to member id (sent to the leader). */
int baton_leader_transfer(struct baton_client *c, uint64_t id);

struct baton_status {
    char endpoint[128];
    uint64_t member_id;
    uint64_t cluster_id;
    char version[32];
    int64_t db_size;
    int64_t db_size_in_use;
    uint64_t leader;
    uint64_t raft_term;
    uint64_t raft_index;
    uint64_t raft_applied_index;
    int64_t revision;
    bool learner;
    char errors[256]; /* "; "-separated */
};
/* The status of one endpoint (asked directly, not through the leader). endpoint: one of the
 * client's endpoints or any other "host:port". */
int baton_endpoint_status(struct baton_client *c, const char *endpoint, struct baton_status *out);
/* Streams Maintenance.Snapshot of the member we talk to into path (written to path.part, fsynced
 * and renamed). *bytes (may be NULL) gets the size. */
int baton_snapshot_save(struct baton_client *c, const char *path, uint64_t *bytes);

void baton_free(void *p);

/* ---- Nodes (baton.v1.Nodes) --------------------------------------------------------------- */
#define BATON_LABELS_MAX 16
struct baton_label {
    char key[64];
    char value[256];
};
enum baton_node_state {
    BATON_NODE_UNKNOWN = 0,
    BATON_NODE_JOINING = 1,
    BATON_NODE_UP = 2,
    BATON_NODE_SUSPECT = 3,
    BATON_NODE_DOWN = 4,
    BATON_NODE_REMOVED = 5,
    BATON_NODE_DECOMMISSIONING = 6,
    BATON_NODE_DECOMMISSIONED = 7,
};
/* "up", "down", ...; static. */
const char *baton_node_state_name(enum baton_node_state s);
struct baton_node_stats {
    uint64_t used_bytes;
    uint64_t available_bytes;
    uint32_t shard_count;
    uint32_t leader_count;
    double cpu_usage;
};
struct baton_node {
    uint64_t id;
    char address[256];
    struct baton_label labels[BATON_LABELS_MAX];
    size_t labels_len;
    uint64_t capacity_bytes;
    char version[32];
    enum baton_node_state state;
    uint64_t epoch;
    int64_t lease;
    int64_t registered_unix_ms;
    int64_t state_changed_unix_ms;
    struct baton_node_stats stats;
};
/* *nodes: malloc'd (baton_free). state BATON_NODE_UNKNOWN: any. */
int baton_node_list(struct baton_client *c, enum baton_node_state state, struct baton_node **nodes,
                    size_t *len);
int baton_node_get(struct baton_client *c, uint64_t id, struct baton_node *out);
int baton_node_drain(struct baton_client *c, uint64_t id, struct baton_node *out);
int baton_node_remove(struct baton_client *c, uint64_t id);

/* ---- Node agent: registration, heartbeats, commands, fenced writes ----------------------------
 */
enum baton_agent_event {
    BATON_AGENT_EPOCH_CHANGED, /* re-registered under a new epoch (work under the old one is
                                  fenced off: drop it) */
    BATON_AGENT_DRAIN,         /* decommissioning: move work away */
    BATON_AGENT_STOP,          /* removed or decommissioned: stop serving; heartbeats stop */
};
struct baton_agent_config {
    uint64_t id; /* 0: a new node; else re-register that node */
    const char *address;
    const struct baton_label *labels;
    size_t labels_len;
    uint64_t capacity_bytes;
    const char *version; /* "major.minor.patch" */
    /* Fills the stats sent with each heartbeat (may be NULL: zeros). Client thread. */
    void (*stats)(void *ctx, struct baton_node_stats *out);
    /* Epoch changes and commands (may be NULL). Client thread. */
    void (*on_event)(void *ctx, enum baton_agent_event ev, uint64_t epoch, const uint8_t *payload,
                     size_t payload_len);
    void *ctx;
};
struct baton_agent;
/* Registers (blocking), then heartbeats to the leader in the background at the interval the
 * server returned. cfg is copied. */
int baton_agent_start(struct baton_client *c, const struct baton_agent_config *cfg,
                      struct baton_agent **out);
uint64_t baton_agent_id(const struct baton_agent *a);
uint64_t baton_agent_epoch(const struct baton_agent *a);
/* A txn with compare(value("/baton/nodes/<id hex16>/epoch") == "<epoch>") added: when the epoch
 * moved on, nothing runs and the call returns BATONE_FENCED. */
int baton_agent_txn(struct baton_agent *a, const struct baton_txn *t, struct baton_result *out);
/* A fenced put (baton_agent_txn with one put). */
int baton_agent_put(struct baton_agent *a, const void *key, size_t key_len, const void *value,
                    size_t value_len, int64_t *revision);
/* Stops heartbeats (the node's lease then lapses on the server) and frees a. */
void baton_agent_stop(struct baton_agent *a);

/* ---- TSO, ids, configuration ------------------------------------------------------------- */
/* count timestamps [*first, *first + count), strictly above any handed out before. */
int baton_tso(struct baton_client *c, uint32_t count, uint64_t *first);
/* count ids [*first, *first + count), never handed out before. */
int baton_id_alloc(struct baton_client *c, uint32_t count, uint64_t *first);

/* revision 0: the latest. *json: malloc'd (baton_free); "" with *version 0 when never set. */
int baton_config_get(struct baton_client *c, int64_t revision, char **json, int64_t *version,
                     int64_t *mod_revision);
/* Compare-and-set on the version read (0: must be unset); BATONE_CONFLICT when it moved. force
 * ignores expected_version. *version (may be NULL) gets the new version. */
int baton_config_set(struct baton_client *c, const char *json, int64_t expected_version, bool force,
                     int64_t *version);
/* fn(ctx, json, version, mod_revision) for the current configuration (when start_revision is 0)
 * and every change; resumes after failover. */
typedef void (*baton_config_fn)(void *ctx, const char *json, int64_t version, int64_t mod_revision);
int baton_config_watch(struct baton_client *c, int64_t start_revision, baton_config_fn fn,
                       void *ctx, struct baton_watch **out);
/* Current cluster version and finalized version (buffers of at least 32 bytes). */
int baton_cluster_version(struct baton_client *c, char *cluster_version, char *finalized);

/* ---- Elections, locks, fencing ------------------------------------------------------------ */
#define BATON_NAME_MAX 256
#define BATON_KEY_MAX  512
/* Held leadership or lock. token is the key's create revision: a fencing token that only grows
 * from one holder to the next. */
struct baton_lease_key {
    uint8_t name[BATON_NAME_MAX];
    size_t name_len;
    uint8_t key[BATON_KEY_MAX];
    size_t key_len;
    int64_t token;
    int64_t lease;
};
/* Blocks until this client leads election name (timeout_ms 0: the client's call timeout). The
 * lease (granted and kept alive by the caller) bounds the leadership. */
int baton_campaign(struct baton_client *c, const void *name, size_t name_len, int64_t lease,
                   const void *value, size_t value_len, uint32_t timeout_ms,
                   struct baton_lease_key *out);
int baton_proclaim(struct baton_client *c, const struct baton_lease_key *k, const void *value,
                   size_t value_len);
int baton_resign(struct baton_client *c, const struct baton_lease_key *k);
/* The current leader's key and value (BATONE_NOTFOUND when none). */
int baton_election_leader(struct baton_client *c, const void *name, size_t name_len,
                          struct baton_result *out);
/* fn(ctx, ev) for each new leader (ev->kv is the leader's key and value). */
int baton_observe(struct baton_client *c, const void *name, size_t name_len, baton_watch_fn fn,
                  void *ctx, struct baton_watch **out);
/* Blocks until the lock is held (timeout_ms 0: the client's call timeout). */
int baton_lock(struct baton_client *c, const void *name, size_t name_len, int64_t lease,
               uint32_t timeout_ms, struct baton_lease_key *out);
int baton_unlock(struct baton_client *c, const struct baton_lease_key *k);
/* The check a storage node runs on each request carrying a fencing token: true (and
 * *last_seen raised to token) when token >= *last_seen; false when the request comes from a
 * holder older than one already seen. */
bool baton_fence_check(int64_t token, int64_t *last_seen);

#ifdef __cplusplus
}
#endif
#endif
