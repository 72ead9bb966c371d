/*
 * A small in-memory cluster for raft's unit tests: every node has a durable store (what raft
 * handed out for persisting and the test then "fsynced"), a state machine (count and CRC of the
 * applied payloads), a snapshot file, and a network queue through which every message travels
 * encoded with raft_msg_encode and decoded with raft_msg_decode.
 */
#ifndef RAFT_TEST_CLUSTER_H
#define RAFT_TEST_CLUSTER_H

#include "raft/raft.h"

#define TC_NODES_MAX 7
#define TC_SNAP_PAD  3000 /* snapshot files are padded so that they take several chunks */

struct tc_stored {
    uint64_t term, index;
    uint8_t type;
    uint32_t len;
    uint8_t *data;
};

struct tc_node {
    uint64_t id;
    struct raft *r;
    struct prng rng;
    bool up; /* false: crashed (no raft instance) or partitioned by tc_isolate */
    bool crashed;
    bool manual_persist; /* persist batches are held until tc_persist() */
    bool persist_held;
    /* Durable state. */
    struct raft_hard_state hs;
    bool has_snap;
    struct raft_snapshot_meta snap;
    struct buf snap_file;    /* the snapshot's bytes */
    struct buf snap_staging; /* chunks being received */
    struct tc_stored *log;
    size_t log_len, log_cap;
    /* State machine. */
    uint64_t sm_index;
    uint64_t sm_count;
    uint32_t sm_hash;
    uint8_t last_data[64];
    uint32_t last_len;
    /* Outputs seen. */
    uint64_t reads_ctx[64];
    uint64_t reads_index[64];
    size_t reads_len;
    size_t msgs_sent[16];     /* per type */
    size_t msgs_rejected[16]; /* per type, with reject set */
};

struct tc_msg {
    uint64_t to;
    uint8_t type;
    struct buf b;
};

struct tc_cluster {
    int n;
    struct tc_node nodes[TC_NODES_MAX + 1]; /* index = id */
    struct raft_options opts;
    struct tc_msg *q;
    size_t q_len, q_cap;
    uint32_t drop_types;                          /* bit per message type: dropped on the wire */
    bool cut[TC_NODES_MAX + 1][TC_NODES_MAX + 1]; /* cut[a][b]: a -> b dropped */
    struct arena arena;
    uint64_t seed;
    /* Network chaos for randomized tests: when set, each delivery round shuffles the queue,
     * and drops or duplicates messages with these probabilities (per million). */
    struct prng *chaos;
    uint32_t drop_ppm;
    uint32_t dup_ppm;
};

/* Options every node gets (id, rng filled in per node). Call before tc_start. */
void tc_init(struct tc_cluster *c, int n, uint64_t seed);
/* Creates the nodes; bootstraps voters 1..voters (others start empty, as joiners). */
void tc_start(struct tc_cluster *c, int voters);
void tc_free(struct tc_cluster *c);

/* Handles every ready of node id (persist, send, apply). */
void tc_process(struct tc_cluster *c, uint64_t id);
/* Processes and delivers until quiet (bounded). Returns messages delivered. */
size_t tc_settle(struct tc_cluster *c);
/* Delivers only the queued messages (one round), processing nodes first. */
size_t tc_deliver_round(struct tc_cluster *c);
void tc_tick(struct tc_cluster *c, uint64_t id, int n);
void tc_tick_all(struct tc_cluster *c, int n);
/* Ticks id until it starts an election, then settles. Returns the leader afterwards or 0. */
uint64_t tc_elect(struct tc_cluster *c, uint64_t id);
uint64_t tc_leader(struct tc_cluster *c);
/* Proposes on id, returns raft's code. */
int tc_propose(struct tc_cluster *c, uint64_t id, const char *text);
void tc_crash(struct tc_cluster *c, uint64_t id);
void tc_restart(struct tc_cluster *c, uint64_t id);
void tc_isolate(struct tc_cluster *c, uint64_t id, bool isolated);
/* Releases a held persist batch of a manual_persist node. */
void tc_persist(struct tc_cluster *c, uint64_t id);
/* Snapshot of node id's state machine at its applied index, then raft_compact. */
int tc_compact(struct tc_cluster *c, uint64_t id);
/* Drops every queued message. */
void tc_drop_queue(struct tc_cluster *c);
struct raft_status tc_status(struct tc_cluster *c, uint64_t id);

#endif
