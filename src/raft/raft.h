/*
 * raft: the Raft consensus core as a pure state machine, in the style of etcd's raft.
 *
 * No I/O, no clock, no threads, no globals. Time is raft_tick(); randomness comes from a
 * caller-seeded struct prng; logs go to an injected struct log_sink. Inputs are raft_step()
 * (a message from a peer), raft_tick(), raft_propose(), raft_read_index(),
 * raft_transfer_leader(), raft_change_config(), raft_peer_down(), raft_compact() and the
 * snapshot calls. Outputs come out as a batch, a `struct raft_ready`, which the caller performs
 * and then acknowledges with raft_advance() (and, for the persist part, raft_persisted()).
 *
 * The caller's loop:
 *
 *     while (raft_has_ready(r)) {
 *         struct raft_ready rd;
 *         raft_ready(r, &rd);
 *         if (rd.persist) start writing rd.persist (entries, hard state, snapshot, chunks);
 *                         when durable (fsync done), call raft_persisted(r).
 *         send rd.msgs (in any order; they may be lost, duplicated or reordered);
 *         if (rd.apply_snapshot) load the state machine from that (durable) snapshot;
 *         apply rd.committed in order;  hand rd.reads to their waiters;
 *         copy rd.snap_reads;
 *         raft_advance(r, &rd);
 *         for each copied snap read: read that chunk, then call raft_snapshot_chunk();
 *     }
 *
 * Persistence contract (Raft thesis §10.2.1 and etcd's ordering rule). At most one persist
 * batch is in flight: raft hands it out in a ready, the caller writes it while raft keeps
 * working, and raft_persisted() acknowledges it. New entries and hard-state changes accumulate
 * meanwhile and form the next batch (group commit). Messages that depend on persisted state
 * (vote grants, append responses, a candidate's vote requests, snapshot chunk acks) stay inside
 * raft until the batch holding that state is acknowledged; they come out in a later ready.
 * The leader's own appends and heartbeats are not held: the leader replicates while it writes
 * its own log, and counts itself in the commit quorum only for entries it has persisted.
 * Committed entries are handed out for applying only once they are durable locally.
 *
 * Memory: everything a ready points at stays valid until raft_advance() for that ready, except
 * rd.persist, which stays valid until raft_persisted(). Payloads passed in (propose, step,
 * restore, snapshot chunks) are copied; raft never keeps a caller's pointer. Only one ready may
 * be outstanding at a time, and between raft_ready() and raft_advance() the caller calls only
 * raft_persisted() and the inspection functions (raft_status, raft_progress, raft_term_at).
 *
 * Configuration changes take effect when the configuration entry is COMMITTED (as known to this
 * member), like etcd's apply-time rule but without waiting for the caller's apply. Safety
 * rests on: at most one unapplied-and-uncommitted configuration entry exists at a time (a
 * leader refuses a new change until its previous one is committed, and a new leader refuses
 * changes until it has committed an entry of its own term, which fixes the single-server bug
 * described in Ongaro's raft-dev post of 2015); a single-server change moves at most one voter,
 * so the majorities of the old and new configuration overlap (thesis §4.1); any larger change
 * goes through a joint configuration, where decisions need a majority of both (thesis §4.3;
 * §6 of the Raft paper). Every member derives its configuration from the committed prefix of
 * its log plus its snapshot, so restart reproduces it exactly.
 */
#ifndef BATON_RAFT_H
#define BATON_RAFT_H

#include "base/base.h"

/* Member ids are non-zero. RAFT_NONE means "nobody" (no vote, no known leader). */
#define RAFT_NONE 0u

/* Bounds of a configuration: voters (and outgoing voters in a joint configuration) and learners
 * each hold at most this many ids. */
#define RAFT_CONFIG_MAX 16
/* At most this many distinct members are tracked at once (voters, outgoing voters, learners). */
#define RAFT_PEERS_MAX 32
/* The decoder refuses messages with more entries than this, and entries larger than this. */
#define RAFT_MSG_ENTRIES_MAX 65536u
#define RAFT_ENTRY_BYTES_MAX (64u << 20)
#define RAFT_CHUNK_BYTES_MAX (64u << 20)

/* ---- Log entries ----------------------------------------------------------------------------- */
enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0, /* caller data from raft_propose() */
    RAFT_ENTRY_NOOP = 1,   /* the empty entry a new leader appends at the start of its term
                              (thesis §6.4); the caller skips it when applying */
    RAFT_ENTRY_CONFIG = 2, /* data is an encoded struct raft_config (raft_config_decode) */
};

struct raft_entry {
    uint64_t term;
    uint64_t index;
    uint8_t type; /* enum raft_entry_type */
    uint32_t len;
    const uint8_t *data; /* len bytes; owner depends on where the entry appears (see above) */
};

/* ---- Configuration --------------------------------------------------------------------------
 * voters_old_len > 0 means a joint configuration: decisions need a majority of voters AND a
 * majority of voters_old (thesis §4.3). Learners receive the log but never vote and never count
 * for commitment. An id appears in at most one of voters/learners; an id in voters_old that is
 * not in voters is leaving. auto_leave: the leader proposes leaving the joint configuration as
 * soon as it has committed the joint one. */
struct raft_config {
    uint32_t voters_len;
    uint32_t voters_old_len;
    uint32_t learners_len;
    bool auto_leave;
    uint64_t voters[RAFT_CONFIG_MAX];
    uint64_t voters_old[RAFT_CONFIG_MAX];
    uint64_t learners[RAFT_CONFIG_MAX];
};

/* Encodes c (compact binary) onto b. 0 or BATON_ENOMEM. */
int raft_config_encode(const struct raft_config *c, struct buf *b);
/* Decodes a RAFT_ENTRY_CONFIG payload. 0 or BATON_EPROTO (bad length, count or duplicate id). */
int raft_config_decode(const uint8_t *p, size_t len, struct raft_config *c);
bool raft_config_is_voter(const struct raft_config *c, uint64_t id); /* voters or voters_old */
bool raft_config_is_learner(const struct raft_config *c, uint64_t id);

enum raft_conf_op {
    RAFT_CONF_ADD_VOTER = 0,   /* add a voter, or promote a learner */
    RAFT_CONF_ADD_LEARNER = 1, /* add a learner (a voter cannot be demoted in one step) */
    RAFT_CONF_REMOVE = 2,      /* remove a voter or a learner */
};
struct raft_conf_change {
    uint8_t op; /* enum raft_conf_op */
    uint64_t id;
};
enum raft_conf_transition {
    /* One change that adds or removes at most one voter is applied directly (single-server
     * change, thesis §4.1); anything else enters a joint configuration that is left
     * automatically. */
    RAFT_TRANSITION_AUTO = 0,
    RAFT_TRANSITION_JOINT_AUTO = 1,     /* always joint, left automatically */
    RAFT_TRANSITION_JOINT_EXPLICIT = 2, /* always joint; leave with raft_change_config(.., 0) */
};

/* ---- Persistent state ------------------------------------------------------------------------ */
struct raft_hard_state {
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
};

struct raft_snapshot_meta {
    uint64_t index;            /* last index covered by the snapshot */
    uint64_t term;             /* term of that entry */
    struct raft_config config; /* configuration as of index */
};

/* ---- Messages -------------------------------------------------------------------------------- */
enum raft_msg_type {
    RAFT_MSG_APPEND = 1,      /* index/log_term: previous entry; entries; commit */
    RAFT_MSG_APPEND_RESP = 2, /* index: last index now matching (accept) or the rejected prev
                                 index (reject, with hint_index/hint_term: thesis §5.3 fast
                                 backtracking) */
    RAFT_MSG_VOTE = 3,        /* index/log_term: candidate's last entry; transfer: from
                                 TimeoutNow, overrides leader stickiness */
    RAFT_MSG_VOTE_RESP = 4,   /* reject = denied */
    RAFT_MSG_PREVOTE = 5,     /* term is the term the sender would campaign in (thesis §9.6) */
    RAFT_MSG_PREVOTE_RESP = 6,
    RAFT_MSG_HEARTBEAT = 7,        /* commit: min(leader commit, follower match); context: read
                                      round of the leader's ReadIndex protocol */
    RAFT_MSG_HEARTBEAT_RESP = 8,   /* context echoed */
    RAFT_MSG_SNAPSHOT = 9,         /* index/log_term: snapshot; offset, data, last; config */
    RAFT_MSG_SNAPSHOT_RESP = 10,   /* index: snapshot; offset: bytes the follower holds; reject:
                                      a gap, resume at offset. The last chunk is acknowledged
                                      with an APPEND_RESP at the snapshot's index. */
    RAFT_MSG_TIMEOUT_NOW = 11,     /* leadership transfer: campaign now (thesis §3.10) */
    RAFT_MSG_READ_INDEX = 12,      /* follower -> leader; context: caller's read id */
    RAFT_MSG_READ_INDEX_RESP = 13, /* index: the read index; reject: leader could not serve */
};

struct raft_msg {
    uint8_t type; /* enum raft_msg_type */
    bool reject;
    bool transfer; /* RAFT_MSG_VOTE / PREVOTE started by TimeoutNow */
    bool last;     /* RAFT_MSG_SNAPSHOT: final chunk */
    uint64_t from;
    uint64_t to;
    uint64_t term;
    uint64_t index;
    uint64_t log_term;
    uint64_t commit;
    uint64_t hint_index; /* APPEND_RESP reject: the largest index <= the rejected one (and <=
                            the follower's last) whose term is <= the leader's log_term */
    uint64_t hint_term;  /* APPEND_RESP reject: the follower's term at hint_index */
    uint64_t context;
    uint64_t offset; /* SNAPSHOT(_RESP): byte offset of the chunk */
    uint32_t entries_len;
    const struct raft_entry *entries;
    uint32_t data_len;
    const uint8_t *data;              /* SNAPSHOT: the chunk */
    const struct raft_config *config; /* SNAPSHOT: configuration of the snapshot, or NULL */
};

/* Appends the binary encoding of m to b (varints, then entries and chunk bytes). 0 or
 * BATON_ENOMEM. */
int raft_msg_encode(const struct raft_msg *m, struct buf *b);
/* Decodes one message from exactly len bytes. The entry array and config are allocated from
 * arena a; entry and chunk data point into p (borrowed: valid while p and a are). Every
 * length and count is checked: 0, BATON_EPROTO (malformed, with nothing else touched but the
 * arena) or BATON_ENOMEM. */
int raft_msg_decode(const uint8_t *p, size_t len, struct raft_msg *m, struct arena *a);
const char *raft_msg_type_name(uint8_t type);

/* ---- The ready batch ------------------------------------------------------------------------- */
struct raft_read_state {
    uint64_t context; /* the caller's id from raft_read_index() */
    uint64_t index;   /* serve the read once the state machine has applied this index */
};

/* A chunk of a snapshot the follower receives: write data at offset into the staging file for
 * snapshot (index, term). offset 0 starts a new staging file (discard any older one). */
struct raft_snap_chunk {
    uint64_t index;
    uint64_t term;
    uint64_t offset;
    uint32_t len;
    const uint8_t *data;
    bool last; /* the snapshot is complete after this chunk */
};

/* A chunk the leader needs: read up to len_max bytes at offset of the snapshot at index (raft's
 * latest compaction point) and pass them to raft_snapshot_chunk(). */
struct raft_snap_read {
    uint64_t to;
    uint64_t index;
    uint64_t term;
    uint64_t offset;
    uint32_t len_max;
};

/* One batch to make durable, in this order: chunks, then snapshot, then entries, then hard
 * state. The caller may write it all in one fsync. */
struct raft_persist {
    uint64_t seq; /* 1, 2, 3, ... acknowledged in order by raft_persisted() */
    const struct raft_snap_chunk *chunks;
    size_t chunks_len;
    /* Non-NULL: the staged snapshot (all chunks written) becomes the member's snapshot; drop
     * every log entry; the log continues at snapshot->index + 1. */
    const struct raft_snapshot_meta *snapshot;
    /* Drop stored entries with index >= entries[0].index, then append these. */
    const struct raft_entry *entries;
    size_t entries_len;
    bool hard_state_changed;
    struct raft_hard_state hard_state; /* always the current value */
};

struct raft_ready {
    const struct raft_msg *msgs; /* send now */
    size_t msgs_len;
    const struct raft_persist *persist; /* NULL or a batch to write; valid until persisted */
    /* Non-NULL: reset the state machine from this (durable) snapshot before applying
     * committed entries. */
    const struct raft_snapshot_meta *apply_snapshot;
    const struct raft_entry *committed; /* apply in order */
    size_t committed_len;
    const struct raft_read_state *reads;
    size_t reads_len;
    const struct raft_snap_read *snap_reads;
    size_t snap_reads_len;
};

/* ---- Options and life cycle ------------------------------------------------------------------ */
struct raft_options {
    uint64_t id;                       /* this member, non-zero */
    uint32_t election_ticks;           /* election timeout; randomized in [T, 2T). Default 10 */
    uint32_t heartbeat_ticks;          /* leader heartbeat interval; < election_ticks. Default 1 */
    bool pre_vote;                     /* thesis §9.6 */
    bool check_quorum;                 /* leader steps down without a live quorum (thesis §6.2) */
    uint32_t max_msg_bytes;            /* bound on entry bytes in one append. Default 1 MiB */
    uint32_t max_inflight_msgs;        /* appends in flight per follower. Default 256 */
    uint64_t max_inflight_bytes;       /* entry bytes in flight per follower. Default 32 MiB */
    uint64_t max_uncommitted_bytes;    /* proposals beyond this fail with BATON_EBUSY. Default
                                          256 MiB */
    uint32_t snapshot_chunk_bytes;     /* Default 1 MiB */
    uint32_t snapshot_chunks_inflight; /* Default 2 */
    struct prng *rng;                  /* borrowed; must outlive raft; seeded by the caller */
    const struct log_sink *log;        /* borrowed; may be NULL */
};

struct raft;

/* Fills defaults for every zero field except id, rng and log. */
void raft_options_default(struct raft_options *o);
/* Creates a member with an empty log and no configuration. 0, BATON_EINVAL or BATON_ENOMEM. */
int raft_create(const struct raft_options *o, struct raft **out);
void raft_destroy(struct raft *r);

/* Starts a brand-new cluster: the log gets entry 1 (term 1, RAFT_ENTRY_CONFIG with conf,
 * committed). Every initial member calls this with the same conf, so their logs agree. Only on
 * a member with no state. The entry and hard state come out in the next persist batch. */
int raft_bootstrap(struct raft *r, const struct raft_config *conf);

/* Restart from durable state: the snapshot's metadata (or NULL for none), the hard state and
 * the log entries after the snapshot (consecutive, copied). Only on a member with no state.
 * A member joining an existing cluster calls neither: it waits for the leader to contact it.
 * 0, BATON_EINVAL (inconsistent input: gap, commit beyond the log, ...) or BATON_ENOMEM. */
int raft_restore(struct raft *r, const struct raft_hard_state *hs,
                 const struct raft_snapshot_meta *snap, const struct raft_entry *entries,
                 size_t entries_len);

/* ---- Inputs ---------------------------------------------------------------------------------- */
/* A message from a peer (m copied as needed). Messages not for this member, from older terms
 * or otherwise stale are dropped. 0, BATON_EINVAL (m->to is not this member, bad type) or
 * BATON_ENOMEM. */
int raft_step(struct raft *r, const struct raft_msg *m);
/* One unit of time. */
void raft_tick(struct raft *r);
/* Appends data (copied) as a new entry on the leader; *index_out (may be NULL) is its index.
 * BATON_ENOTLEADER, BATON_EPROPOSALDROP (leadership transfer running), BATON_EBUSY (too many
 * uncommitted bytes), BATON_ETOOBIG (len > RAFT_ENTRY_BYTES_MAX) or BATON_ENOMEM. */
int raft_propose(struct raft *r, const void *data, size_t len, uint64_t *index_out);
/* Requests a linearizable read barrier (thesis §6.4): a read state (context, index) comes out
 * in a later ready once leadership at that index is confirmed by a quorum. On a follower the
 * request is forwarded to the leader. Lost requests are never answered: the caller times out.
 * BATON_ENOTLEADER (no leader known) or BATON_EBUSY (too many pending reads). */
int raft_read_index(struct raft *r, uint64_t context);
/* Hands leadership to target (thesis §3.10): catches it up, then sends TimeoutNow. Abandoned
 * after an election timeout. BATON_ENOTLEADER, BATON_EINVAL (target not a voter or self). */
int raft_transfer_leader(struct raft *r, uint64_t target);
/* Proposes a configuration change (see raft_conf_transition); n == 0 leaves a joint
 * configuration. *index_out (may be NULL) is the entry's index. BATON_ENOTLEADER,
 * BATON_ECONFCHANGE (a change is pending, or no entry of this term committed yet),
 * BATON_EINVAL (change makes no sense), BATON_EPROPOSALDROP (transfer running). */
int raft_change_config(struct raft *r, const struct raft_conf_change *changes, size_t n,
                       enum raft_conf_transition t, uint64_t *index_out);
/* Fast failover hook: the caller saw the connection to peer closed by the peer's kernel (the
 * process died). See raft.c for why this is safe. */
void raft_peer_down(struct raft *r, uint64_t peer);
/* The caller reports that peer is unreachable (e.g. a send failed): a replicating follower goes
 * back to probing. */
void raft_report_unreachable(struct raft *r, uint64_t peer);

/* The caller took a snapshot of its state machine at index (<= applied) and wants the log up to
 * index dropped. Raft records the snapshot metadata (term and configuration at index) and uses
 * it for followers that are too far behind. 0, BATON_EINVAL (index beyond applied or before
 * the current snapshot), BATON_EBUSY (a ready is outstanding). */
int raft_compact(struct raft *r, uint64_t index);
/* The caller's answer to a raft_snap_read: len bytes (copied) at offset of snapshot index;
 * last is true when the chunk ends the snapshot. Stale answers (peer no longer in snapshot
 * state, other snapshot) are dropped and return 0. BATON_EINVAL (len == 0 without last, or
 * len > the requested len_max). */
int raft_snapshot_chunk(struct raft *r, uint64_t peer, uint64_t index, uint64_t offset,
                        const void *data, size_t len, bool last);

/* ---- Outputs --------------------------------------------------------------------------------- */
bool raft_has_ready(const struct raft *r);
/* Fills rd with everything pending. Only one ready may be outstanding. */
void raft_ready(struct raft *r, struct raft_ready *rd);
/* The caller has sent rd's messages, applied its committed entries and snapshot, and handled its
 * reads and snapshot reads. */
void raft_advance(struct raft *r, const struct raft_ready *rd);
/* The oldest persist batch handed out (and not yet acknowledged) is durable. */
void raft_persisted(struct raft *r);

/* ---- Inspection ------------------------------------------------------------------------------ */
enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRE_CANDIDATE = 1,
    RAFT_CANDIDATE = 2,
    RAFT_LEADER = 3,
};
const char *raft_role_name(enum raft_role role);

enum raft_progress_state {
    RAFT_PROGRESS_PROBE = 0,
    RAFT_PROGRESS_REPLICATE = 1,
    RAFT_PROGRESS_SNAPSHOT = 2,
};

struct raft_status {
    uint64_t id;
    enum raft_role role;
    uint64_t term;
    uint64_t vote;
    uint64_t leader;
    uint64_t commit;
    uint64_t applied;     /* last index handed out for applying and advanced */
    uint64_t persisted;   /* last log index known durable */
    uint64_t first_index; /* first index in the in-memory log (snapshot index + 1) */
    uint64_t last_index;
    uint64_t snapshot_index;
    uint64_t snapshot_term;
    uint64_t transferee;       /* leadership transfer target, or RAFT_NONE */
    struct raft_config config; /* configuration in effect (committed) */
};
void raft_status(const struct raft *r, struct raft_status *s);

struct raft_progress_info {
    enum raft_progress_state state;
    uint64_t match;
    uint64_t next;
    uint32_t inflight_msgs;
    bool recent_active;
};
/* Leader only: the replication progress of peer. 0, BATON_ENOTLEADER or BATON_ENOTFOUND. */
int raft_progress(const struct raft *r, uint64_t peer, struct raft_progress_info *p);

/* The metadata of the latest snapshot (set by raft_compact, an installed snapshot, or
 * raft_restore): what the caller stores next to the snapshot's bytes. */
void raft_snapshot_meta(const struct raft *r, struct raft_snapshot_meta *out);

/* The term of the entry at index, if raft has it (index == snapshot index included). */
int raft_term_at(const struct raft *r, uint64_t index, uint64_t *term);

#endif
