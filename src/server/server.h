/*
 * server: one member of the control plane. It wires raft, wal, mvcc and cluster together and
 * turns client requests into proposals, waits for them to apply, serves linearizable reads with
 * ReadIndex and serializable reads locally. It reaches the outside world only through the
 * tables its caller injects; it knows neither libuv nor nghttp2.
 *
 * Threads: every function here runs on the caller's loop thread, except that the WAL's notify
 * (server_env.wake) is called from the WAL thread and must only wake the loop.
 *
 * Life of a write: server_propose() encodes the request (request.h) and proposes it to Raft on
 * the leader, or forwards it to the leader in a peer frame; when this member applies the entry
 * carrying the request's id, the caller's callback gets mvcc's response. Life of a linearizable
 * read: server_read_barrier() joins the next ReadIndex round (one round serves every read
 * queued since the last); once this member has applied the confirmed index, the callback runs
 * and the caller reads mvcc directly (server_store()).
 *
 * Durability: LMDB is the state machine and also the snapshot. Raft entries are durable in the
 * WAL before they count; applied state is committed to LMDB (with the applied index in the same
 * transaction) without fsync: a killed process loses nothing, and after an operating-system
 * restart (told by the boot id) the store is rebuilt from the newest snapshot file and the WAL
 * (store_prepare in server.c, datadir.c). At restart Raft is restored with its snapshot at
 * LMDB's applied index, the configuration LMDB recorded with it, and the WAL's entries after
 * that index.
 */
#ifndef BATON_SERVER_H
#define BATON_SERVER_H

#include "base/base.h"
#include "mvcc/mvcc.h"

#include <limits.h>

/* ---- Data directory ---------------------------------------------------------------------------
 * Layout of --data-dir:
 *   batond.lock      exclusive flock while a member runs; holds the owner's pid (for messages)
 *   member/wal/      write-ahead log segments
 *   member/snap/     snapshot files
 *   member/db        the LMDB data file (plus member/db-lock)
 * A directory without member/ is fresh: the member bootstraps or joins. */
struct server_datadir {
    char root[PATH_MAX];
    char member[PATH_MAX];
    char wal[PATH_MAX];
    char snap[PATH_MAX];
    char db[PATH_MAX];
    int lock_fd;
    bool fresh; /* member/ did not exist before this open */
};

/* Creates what is missing, takes the lock. On failure writes a one-line reason naming the path
 * into err: another member holds the lock (with its pid), not a directory, permission denied,
 * a member/ that is incomplete. 0, BATON_EBUSY (locked), -errno, or BATON_ECORRUPT. */
int server_datadir_open(const char *root, struct server_datadir *d, char *err, size_t err_len);
/* Releases the lock. */
void server_datadir_close(struct server_datadir *d);
/* The member's identity, member/identity: written when the member first starts (after
 * discovery for a member that joins), read at every later start, so ids never depend on flags
 * that may change. load: 0, BATON_ENOTFOUND (no file yet), BATON_ECORRUPT, -errno; both write a
 * reason naming the path into err on failure. */
int server_identity_load(const struct server_datadir *d, uint64_t *member_id, uint64_t *cluster_id,
                         char *err, size_t err_len);
int server_identity_save(const struct server_datadir *d, uint64_t member_id, uint64_t cluster_id,
                         char *err, size_t err_len);

/* Store durability across operating-system restarts (see datadir.c): the store commits
 * without fsync while member/db-boot names the current boot; at open, a marker from another
 * boot means the store is rebuilt from the newest snapshot and the WAL. server_open does all
 * of it; these are exposed for tests. server_boot_id reads the kernel's boot id (the
 * environment variable BATON_BOOT_ID overrides it, for tests that simulate a reboot). */
int server_boot_id(char *out, size_t len);
int server_db_marker_check(const struct server_datadir *d, const char *boot_id, bool *trusted,
                           char *err, size_t err_len);
int server_db_marker_set(const struct server_datadir *d, const char *boot_id, char *err,
                         size_t err_len);
void server_db_marker_clear(const struct server_datadir *d);
/* A store built by --restore holds data no snapshot file or WAL of this member has: until the
 * member's first snapshot it commits with fsync. member/restored records that. */
int server_datadir_mark_restored(const struct server_datadir *d, char *err, size_t err_len);
bool server_datadir_restored(const struct server_datadir *d);
void server_datadir_clear_restored(const struct server_datadir *d);

/* ---- Identities -------------------------------------------------------------------------------
 * A member's id is derived from its sorted peer URLs and the cluster token, as etcd does, so
 * every initial member computes the same ids from --initial-cluster; a member added later mixes
 * in the time of the add. The cluster id is derived from the sorted initial member ids. Ids are
 * never 0. */
uint64_t server_member_id(const char *const *peer_urls, int urls_len, const char *token,
                          uint64_t add_time_ms);
uint64_t server_cluster_id(const uint64_t *member_ids, int len);

/* ---- The member --------------------------------------------------------------------------- */
struct request;

/* What the server needs from its environment (libuv in batond, a simulation in tests). */
struct server_env {
    void *ctx;
    uint64_t (*now_ms)(void *ctx); /* monotonic milliseconds */
    /* Sends one frame to a peer; bulk frames (snapshot chunks) may take another connection.
     * Errors mean the frame was dropped (Raft retransmits). */
    int (*send)(void *ctx, uint64_t to, bool bulk, const uint8_t *data, size_t len);
    /* Tells the transport where a member listens for peers (on start and membership changes);
     * url is "http://host:port". remove: forget the member. */
    void (*peer_set)(void *ctx, uint64_t id, const char *url, bool remove);
    /* Wakes the loop, which then calls server_on_wal(). Called from the WAL thread when durable
     * progress is available, and from the loop thread when work was queued. */
    void (*wake)(void *ctx);
    /* A fatal error (WAL or LMDB failure): the member stops serving; the program should exit
     * non-zero with msg. */
    void (*fatal)(void *ctx, int err, const char *msg);
    /* Optional: like wake, from the loop thread only, and run before the loop next waits for
     * I/O, so that the peer frames and proposals of one loop turn make one ready (one WAL
     * batch, one store commit). NULL: wake serves. */
    void (*defer)(void *ctx);
};

#define SERVER_URLS_MAX 4

/* A member of the control plane as the replicated member table knows it. */
struct server_member {
    uint64_t id;
    char name[128];
    char peer_urls[SERVER_URLS_MAX][256];
    int peer_urls_len;
    char client_urls[SERVER_URLS_MAX][256];
    int client_urls_len;
};

/* Durations the member reports for metrics. */
enum server_timing {
    SERVER_TIMING_WAL_FSYNC,      /* one fdatasync of the WAL (measured on the WAL thread) */
    SERVER_TIMING_BACKEND_COMMIT, /* one LMDB commit of a batch of applied entries */
};

/* Optional: called on the loop thread with each duration the member learns. The layers below
 * measure; the caller keeps the histograms. */
struct server_observer {
    void (*timing)(void *ctx, enum server_timing what, uint64_t ns);
    void *ctx;
};

struct server_peer_info {
    uint64_t id;
    char name[128];
    char peer_url[256];
};

struct server_options {
    uint64_t member_id;
    uint64_t cluster_id;
    const char *name;
    const struct server_datadir *dir;
    uint32_t tick_ms;         /* server_tick is called at this rate */
    uint32_t heartbeat_ticks; /* heartbeat interval / tick_ms (0: 1) */
    uint32_t election_ticks;  /* election timeout / tick_ms */
    uint64_t snapshot_count;  /* applied entries between log compactions */
    uint64_t quota_bytes;
    uint32_t max_txn_ops;
    uint32_t request_timeout_ms; /* proposals and reads fail with "request timed out" after */
    /* Bootstrap: with a fresh data directory and !join, the initial members form a new cluster;
     * with join, the member waits for the leader to contact it. */
    const struct server_peer_info *initial;
    int initial_len;
    bool join;
    const char *const *client_urls; /* advertised; published to the cluster after start */
    int client_urls_len;
    uint64_t seed; /* for Raft's randomized timeouts */
    const struct log_sink *log;
    struct server_env env;
    struct server_observer observer; /* optional; ctx borrowed */
};

/* Result of a write, valid during the callback only (memory from the caller's arena). */
struct server_result {
    uint64_t index; /* raft index of the applied entry */
    uint64_t term;
    int64_t revision; /* store revision after the entry */
    union {
        struct mvcc_put_resp put;
        struct mvcc_delete_resp del;
        struct mvcc_txn_resp txn;
        struct {
            int64_t id;
            int64_t ttl_s;
        } lease_grant;
    } u;
};

/* err: 0, a request-level error from mvcc (mvcc_strerror gives etcd's text), BATON_ETIMEOUT,
 * BATON_EUNAVAIL (no leader), BATON_EPROPOSALDROP (leader changed), BATON_ECLOSED (stopping).
 * res is NULL unless err == 0 (for writes). */
typedef void (*server_done_fn)(void *ctx, int err, const struct server_result *res);

struct server;
struct server_call;

/* Leader-only operations (lease keep-alive and TTL, membership) answer with up to two numbers:
 * lease: v1 = remaining TTL (s), v2 = granted TTL (s); member add: v1 = the new member's id. */
typedef void (*server_op_fn)(void *ctx, int err, int64_t v1, int64_t v2);

/* Opens WAL and LMDB from the data directory, restores Raft, bootstraps a new cluster when the
 * directory is fresh (and !join). On failure writes a one-line reason naming the path into err.
 * The options are copied (strings too); env.ctx is borrowed. */
int server_open(const struct server_options *o, struct server **out, char *err, size_t err_len);
/* Fails every pending call with BATON_ECLOSED, closes WAL and LMDB, frees s. */
void server_close(struct server *s);

/* Inputs from the environment. Each processes Raft's output before returning. */
void server_tick(struct server *s);
void server_on_peer_frame(struct server *s, uint64_t from, const uint8_t *data, size_t len);
void server_on_peer_down(struct server *s, uint64_t peer);
void server_on_wal(struct server *s);

/* Proposes a write. req->id is assigned here. Results are written into arena a (borrowed until
 * the callback). *call (may be NULL) lets the caller cancel. 0, BATON_EUNAVAIL (no leader),
 * BATON_EBUSY (too many pending calls), BATON_ETOOBIG, BATON_ENOMEM; on error the callback is
 * never called, otherwise exactly once (unless cancelled), and never before this returns. */
int server_propose(struct server *s, struct request *req, struct arena *a, server_done_fn done,
                   void *ctx, struct server_call **call);
/* A linearizable read barrier; the callback's res is NULL. Same errors and rules. */
int server_read_barrier(struct server *s, server_done_fn done, void *ctx,
                        struct server_call **call);
/* Leader-only operations, run on the leader (forwarded when this member follows). The same
 * rules as server_propose. Errors in the callback: MVCC_ELEASENOTFOUND, BATON_ENOTFOUND (no such
 * member), BATON_EEXIST (peer URLs in use), BATON_ECONFCHANGE (a change is pending),
 * BATON_EINVAL (promote a voter, remove the last voter), BATON_EBUSY (learner not in sync),
 * BATON_ETIMEOUT, BATON_EUNAVAIL. */
int server_lease_keepalive(struct server *s, int64_t id, server_op_fn done, void *ctx,
                           struct server_call **call);
int server_lease_ttl(struct server *s, int64_t id, server_op_fn done, void *ctx,
                     struct server_call **call);
int server_member_add(struct server *s, const char *const *peer_urls, int n, bool learner,
                      server_op_fn done, void *ctx, struct server_call **call);
int server_member_remove(struct server *s, uint64_t id, server_op_fn done, void *ctx,
                         struct server_call **call);
int server_member_promote(struct server *s, uint64_t id, server_op_fn done, void *ctx,
                          struct server_call **call);
int server_member_update(struct server *s, uint64_t id, const char *const *peer_urls, int n,
                         server_op_fn done, void *ctx, struct server_call **call);
/* Leadership transfer from this member (which must lead: BATON_ENOTLEADER otherwise) to
 * target; the callback runs when target leads (0) or the attempt timed out. */
int server_transfer_leader(struct server *s, uint64_t target, server_op_fn done, void *ctx,
                           struct server_call **call);

/* Discovery (a member started with --initial-cluster-state existing asks a running member who
 * it is, by its advertised peer URL): appends the answer to out — the cluster id, the id the
 * member table holds for peer_url (0: none; MemberAdd not applied here yet) and every member in
 * the configuration with its name and peer URL. 0 or BATON_ENOMEM. */
#define SERVER_DISCOVERY_MAX 64
struct server_discovery {
    uint64_t cluster_id, member_id;
    struct server_peer_info members[SERVER_DISCOVERY_MAX];
    int members_len;
};
int server_discover(struct server *s, const char *peer_url, struct buf *out);
/* Parses an answer; BATON_EPROTO when malformed. */
int server_discovery_parse(const uint8_t *p, size_t len, struct server_discovery *d);

/* Forgets a pending call: its callback will not run. */
void server_call_cancel(struct server_call *call);

/* The member table (replicated) and whether id is a learner in the configuration in effect.
 * The array stays valid until the next call into the server. */
const struct server_member *server_members(struct server *s, int *len);
bool server_member_is_learner(struct server *s, uint64_t id);
/* Whether id is a voter or a learner in the configuration in effect. */
bool server_member_in_config(struct server *s, uint64_t id);

/* State for reads and status. */
struct mvcc_store *server_store(struct server *s);
struct server_status {
    uint64_t member_id, cluster_id, leader, term, commit, applied, raft_index;
    bool is_leader, is_learner;
    int64_t revision;
    uint64_t db_size_in_use, db_size;
    /* Counters since start, as etcd's server metrics count them. */
    uint64_t leader_changes;    /* times a new leader (not "none") was seen */
    uint64_t proposals_failed;  /* proposals refused or dropped without a result: no leader,
                                   timed out, lost to a leader change, member stopping */
    uint64_t proposals_pending; /* proposals from this member waiting for their entry */
    uint64_t leases;            /* leases held now */
};
void server_status(struct server *s, struct server_status *st);
/* What every response header carries, without server_status's file-size look-up: cheap enough
 * to call per response. */
struct server_header {
    uint64_t cluster_id, member_id, term;
    int64_t revision;
};
void server_header(struct server *s, struct server_header *h);

#endif
