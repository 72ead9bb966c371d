/* Internal state of a member (server.c, calls.c, apply.c). */
#ifndef BATON_SERVER_INT_H
#define BATON_SERVER_INT_H

#include "mvcc/mvcc.h"
#include "raft/raft.h"
#include "server/request.h"
#include "server/server.h"
#include "wal/wal.h"

#define SERVER_CALLS_MAX    65536 /* pending proposals and reads */
#define SERVER_CALL_BUCKETS 4096
#define SERVER_READ_ROUNDS  1024 /* ReadIndex rounds in flight */
#define SERVER_PEERS_MAX    64

/* Peer frame kinds: the first byte of every frame between members. */
enum peer_frame {
    FRAME_RAFT = 1,        /* raft_msg_encode bytes */
    FRAME_FORWARD = 2,     /* a proposal (request_encode bytes) for the leader */
    FRAME_LEADER_REQ = 3,  /* varint seq, op, args: a leader-only operation (forward.c) */
    FRAME_LEADER_RESP = 4, /* varint seq, zigzag err, zigzag v1, zigzag v2 */
};

/* Leader-only operations a follower forwards (forward.c). */
enum leader_op {
    OP_LEASE_KEEPALIVE = 1,
    OP_LEASE_TTL = 2,
    OP_MEMBER_ADD = 3,
    OP_MEMBER_REMOVE = 4,
    OP_MEMBER_PROMOTE = 5,
    OP_MEMBER_UPDATE = 6,
    OP_MAX = 6,
    OP_TRANSFER = 7, /* local only: waits for the target to lead */
};

struct op_args {
    int64_t id;
    bool learner;
    int urls_len;
    char urls[SERVER_URLS_MAX][256];
};

struct dlist {
    struct dlist *prev, *next;
};

#define DLIST_ENTRY(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

static inline void dlist_init(struct dlist *l)
{
    l->prev = l->next = l;
}
static inline bool dlist_empty(const struct dlist *l)
{
    return l->next == l;
}
static inline void dlist_push(struct dlist *l, struct dlist *n)
{
    n->prev = l->prev;
    n->next = l;
    l->prev->next = n;
    l->prev = n;
}
static inline void dlist_remove(struct dlist *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

enum call_kind {
    CALL_PROPOSAL, /* waits for its entry to apply */
    CALL_READ,     /* waits for a ReadIndex round and the apply */
    CALL_OP,       /* a leader-only operation: forwarded (waits for the leader's answer) or run
                      here as leader (possibly waiting for a configuration entry to apply) */
};

struct read_round;

struct server_call {
    struct server *s;
    enum call_kind kind;
    uint64_t req_id;     /* proposals */
    uint64_t index;      /* proposals: raft index when proposed here (0: forwarded) */
    uint64_t fwd_leader; /* forwarded proposals: the leader it went to */
    uint64_t deadline_ms;
    server_done_fn done;
    void *ctx;
    struct arena *arena;
    struct dlist by_deadline;  /* s->calls (ordered by deadline: timeouts are uniform) */
    struct dlist in_round;     /* reads: the round's list */
    struct server_call *hnext; /* proposals: hash bucket */
    struct read_round *round;
    bool applied; /* its entry applied; the completion is queued (no second match) */
    /* CALL_OP */
    server_op_fn op_done;
    enum leader_op op;
    struct op_args args;
    uint64_t remote_from, remote_seq; /* run for a follower: answer it by frame */
    uint64_t wait_index;              /* complete once applied >= wait_index */
    int64_t v1, v2;
    struct dlist in_ops; /* s->ops_next (to run) or s->ops_wait (waiting for the apply) */
};

/* One ReadIndex round: every read queued since the previous round. */
struct read_round {
    uint64_t ctx;   /* raft_read_index context; 0: slot free */
    uint64_t index; /* confirmed read index; 0 while unconfirmed */
    struct dlist calls;
};

/* A completion collected while applying, delivered after the LMDB commit. */
struct completion {
    struct server_call *call;
    int err;
    struct server_result res;
};

struct server {
    struct server_options o;
    char name[128];
    struct server_datadir dir;
    struct server_peer_info initial[SERVER_PEERS_MAX];
    char client_urls[8][256];
    int client_urls_len;

    struct prng rng;
    struct raft *raft;
    struct wal *wal;
    struct mvcc_store *store;

    uint64_t persist_seq; /* WAL seq of the persist batch in flight (0: none) */
    struct wal_entry *wal_entries;
    size_t wal_entries_cap;

    struct server_member members[SERVER_PEERS_MAX];
    int members_len;

    /* Snapshots (snap.c). */
    uint64_t snap_index, snap_term;      /* the newest local snapshot */
    uint64_t release_seq, release_index; /* WAL marker awaiting durability, then release */
    struct wal_snap_reader *reader;      /* leader: the snapshot being sent */
    uint64_t reader_index, reader_pos, reader_len;
    struct wal_snap_writer *staging; /* follower: the snapshot being received */
    uint64_t staging_index, staging_pos;
    struct raft_config applied_conf; /* configuration as of the applied index */
    uint64_t store_generation;       /* bumped when a snapshot replaced the store */

    uint64_t down_peer; /* the dead leader, reported to Raft when down_ticks run out */
    uint32_t down_ticks;

    uint64_t leader, term;
    bool was_leader;
    uint64_t leader_changes, proposals_failed, proposals_pending; /* server_status */
    uint64_t publish_after_ms; /* next time to (re)publish attributes the table still lacks */
    uint64_t applied;
    uint64_t last_compact_index;
    bool failed;
    bool store_no_sync; /* the store commits without fsync (see store_prepare) */

    uint64_t next_req_id;
    struct server_call *buckets[SERVER_CALL_BUCKETS];
    struct dlist calls; /* every pending call, oldest deadline first */
    size_t calls_len;
    struct dlist reads_next; /* reads waiting for the next round */
    struct read_round rounds[SERVER_READ_ROUNDS];
    uint64_t read_ctx_seq;

    struct dlist ops_next; /* leader-only operations to run on the next turn */
    struct dlist ops_wait; /* ... waiting for their entry to apply */

    struct completion *completions;
    size_t completions_len, completions_cap;

    struct arena scratch;                   /* per-ready scratch (decoding, unwaited results) */
    struct buf frame;                       /* encoding buffer for outgoing frames */
    uint64_t unreachable[SERVER_PEERS_MAX]; /* failed sends, reported after the ready */
    int unreachable_len;
    int processing; /* re-entrancy guard for process() */
    bool in_ready;  /* between raft_ready and raft_advance: Raft takes no proposal */
    /* Proposals made by callbacks that ran inside a ready (e.g. on an apply): proposed right
     * after raft_advance. Records: [u32 length][u64 request id][entry bytes]. */
    struct buf deferred;
    bool kicked; /* a wake is pending: server_on_wal will run */
    bool again;
};

/* calls.c */
struct server_call *calls_new(struct server *s, enum call_kind kind, server_done_fn done, void *ctx,
                              struct arena *a);
void calls_finish(struct server_call *c, int err, const struct server_result *res);
struct server_call *calls_find(struct server *s, uint64_t req_id);
void calls_index(struct server *s, struct server_call *c);
void calls_expire(struct server *s, uint64_t now_ms);
void calls_fail_all(struct server *s, int err);
/* Another leader took over: proposals this member forwarded to an earlier leader fail with
 * BATON_EPROPOSALDROP ("leader changed", an indeterminate outcome: the entry may still commit)
 * instead of waiting out their deadline, so clients retry on the new leader at once. */
void calls_fail_forwarded(struct server *s, uint64_t new_leader);
void reads_start_round(struct server *s);
void reads_confirmed(struct server *s, uint64_t ctx, uint64_t index);
void reads_applied(struct server *s);
void reads_fail_unconfirmed(struct server *s, int err);

/* forward.c */
void ops_run_queued(struct server *s);
void ops_applied(struct server *s);
void ops_on_request(struct server *s, uint64_t from, const uint8_t *p, size_t len);
void ops_on_response(struct server *s, const uint8_t *p, size_t len);
void ops_finish(struct server_call *c, int err);
void ops_deliver(struct server_call *c, int err);
void ops_leader_changed(struct server *s, uint64_t commit);

/* snap.c */
void snap_maybe_compact(struct server *s);
void snap_release(struct server *s, uint64_t durable_seq);
void snap_serve_read(struct server *s, const struct raft_snap_read *r);
int snap_stage_chunks(struct server *s, const struct raft_snap_chunk *c, size_t n);
int snap_stage_finish(struct server *s, const struct raft_snapshot_meta *meta);
int snap_install(struct server *s, const struct raft_snapshot_meta *meta, char *err,
                 size_t err_len);
int snap_load_latest(struct server *s, struct raft_snapshot_meta *meta, char *err, size_t err_len);
void snap_close(struct server *s);

/* apply.c */
int apply_entries(struct server *s, const struct raft_entry *e, size_t n);
int apply_restore_config(struct server *s, struct raft_config *conf, uint64_t *index);
int members_load(struct server *s);
int members_encode(const struct server *s, struct buf *b);
int members_decode(struct server *s, const uint8_t *p, size_t len);

/* server.c */
int64_t server_min_lease_ttl_s(const struct server_options *o);
/* The store's configuration (path, quota, limits, durability) for open and reopen. */
void server_mvcc_config(const struct server *s, struct mvcc_config *mc);
void server_process(struct server *s);
void server_kick(struct server *s);
void server_fail(struct server *s, int err, const char *what);

#endif
