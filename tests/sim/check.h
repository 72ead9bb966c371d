/*
 * check: the simulator's invariant checker. It knows nothing of raft's types: the cluster driver
 * reports what each node handed out (log entries, snapshots, commit indexes, applied entries,
 * leadership, client reads and acknowledged writes) and the checker verifies, incrementally and
 * on every report, the safety properties of the Raft paper (Figure 3) plus linearizable reads:
 *
 *   election safety     at most one leader per term
 *   log matching        two logs holding an entry with the same index and term hold the same
 *                       prefix up to it (checked through a chained hash per entry)
 *   leader completeness a leader of term T holds every entry committed in a term below T
 *   state-machine safety every node applies the same entry at each index; applied entries are
 *                       committed; committed entries never change
 *   linearizable reads  a read's index covers every write acknowledged and every read completed
 *                       before the read began
 *
 * Each function returns 0, or -1 after writing the first violation into chk->violation.
 */
#ifndef BATON_SIM_CHECK_H
#define BATON_SIM_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHK_NODES_MAX 16

/* One entry of a node's log as the checker mirrors it. */
struct chk_entry {
    uint64_t term;
    uint64_t chain; /* hash of (previous chain, term, payload): equal chains = equal prefixes */
};

/* A node's log mirror: entries (base_index, base_index + len], with the chain of base_index. */
struct chk_log {
    uint64_t base_index;
    uint64_t base_term;
    uint64_t base_chain;
    struct chk_entry *entries;
    size_t len, cap;
};

struct chk_node {
    struct chk_log log;    /* what the node handed out for persistence (volatile view) */
    uint64_t applied;      /* last index applied to the node's state machine */
    uint64_t applied_hash; /* chain hash of the state machine at applied */
    uint64_t commit_seen;  /* highest commit index of this node already folded in */
    bool leader;
    uint64_t leader_term;
};

/* Committed entries, indexed by log index (1-based); known = false for holes. */
struct chk_commit {
    uint64_t term;
    uint64_t chain;
    uint64_t commit_term; /* lowest term in which a node reported the index committed */
    bool known;
};

struct chk_it_slot; /* (index, term) -> chain, for log matching */

struct chk {
    struct chk_node nodes[CHK_NODES_MAX];
    int nodes_len;

    /* Election safety: leader of each term (0 = none seen); grown on demand. */
    uint8_t *term_leader;
    size_t term_leader_cap;

    struct chk_it_slot *it; /* open-addressing table */
    size_t it_len, it_cap;

    struct chk_commit *committed;
    size_t committed_cap;
    uint64_t committed_max;

    /* Applied sequence shared by every node (state-machine safety). */
    uint64_t *applied_chain; /* index -> chain; 0 = not applied anywhere yet */
    size_t applied_cap;
    uint64_t applied_max;

    /* Linearizability floor: every read must cover this index at its start. */
    uint64_t acked_write_max; /* highest index of an acknowledged write */
    uint64_t read_done_max;   /* highest index served by a completed read */

    uint64_t elections; /* distinct (term, leader) pairs observed */
    char violation[512];
};

void chk_init(struct chk *c, int nodes);
void chk_free(struct chk *c);

/* Chained hash of an entry following prev. Exposed so snapshots can carry the state digest. */
uint64_t chk_chain(uint64_t prev, uint64_t term, const void *data, size_t len);

/* Node's log: entry (index, term, data) handed out for persistence; truncates the mirror at
 * index first (a conflicting suffix is replaced). index must be <= last + 1. */
int chk_log_append(struct chk *c, int node, uint64_t index, uint64_t term, const void *data,
                   size_t len);
/* The node's log now starts after a snapshot at (index, term) whose state digest is chain;
 * entries after index are kept when keep_suffix and they match, else dropped. */
int chk_log_snapshot(struct chk *c, int node, uint64_t index, uint64_t term, uint64_t chain,
                     bool keep_suffix);
/* The node restarted: forget its volatile view (the driver replays the durable log next). */
void chk_node_reset(struct chk *c, int node);
/* Last index and chain of the node's mirror (0 if empty). */
uint64_t chk_log_last(const struct chk *c, int node);
/* Term and chain of index in node's mirror; false when not held (compacted or beyond). */
bool chk_log_get(const struct chk *c, int node, uint64_t index, uint64_t *term, uint64_t *chain);

/* The node's status after a step: leader or not, its term and commit index. */
int chk_status(struct chk *c, int node, bool leader, uint64_t term, uint64_t commit);

/* The node applied entry (index, term, data) to its state machine. */
int chk_apply(struct chk *c, int node, uint64_t index, uint64_t term, const void *data, size_t len);
/* The node's state machine was replaced by a snapshot at index with digest chain. */
int chk_apply_snapshot(struct chk *c, int node, uint64_t index, uint64_t chain);

/* Client history. A write was acknowledged to its client: it sits at index. */
void chk_write_acked(struct chk *c, uint64_t index);
/* A read begins: returns the floor its index must reach. */
uint64_t chk_read_begin(const struct chk *c);
/* A read that began with floor got read index ridx and was served at state index served. */
int chk_read_done(struct chk *c, int node, uint64_t floor, uint64_t ridx, uint64_t served);

/* Formats a violation (printf style) unless one is recorded already; returns -1. */
int chk_fail(struct chk *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
