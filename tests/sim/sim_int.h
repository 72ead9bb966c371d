/*
 * Internals shared by the simulator's files: the node, disk and network models. Nothing here is
 * part of the fixture API (sim.h).
 */
#ifndef BATON_SIM_INT_H
#define BATON_SIM_INT_H

#include "check.h"
#include "evq.h"
#include "sim.h"

#include <stdio.h>

#define SIM_PROPS_MAX       256  /* proposals awaiting their entry's application, per node */
#define SIM_READS_MAX       64   /* reads awaiting their read state or application, per node */
#define SIM_SNAP_READS_MAX  64   /* snapshot chunk requests handled per ready */
#define SIM_HELD_MAX        4096 /* messages held by sim_hold */
#define SIM_READY_LOOPS_MAX 10000
#define SIM_SNAP_FILLER_MAX 3000 /* snapshot payload padding, so snapshots span several chunks */
#define SIM_CHUNK_BYTES     512

/* A log entry owned by the simulator (disk copy or in-flight write). */
struct sim_entry {
    uint64_t term;
    uint64_t index;
    uint8_t type;
    uint32_t len;
    uint8_t *data;
};

/* What survives a crash: exactly what raft handed out and the disk then acknowledged. */
struct sim_disk {
    bool has_hs;
    struct raft_hard_state hs;
    bool has_snap;
    struct raft_snapshot_meta snap;
    struct buf snap_data;
    uint64_t stage_index, stage_term; /* snapshot being received in chunks */
    struct buf stage;
    struct sim_entry *ents; /* consecutive, after snap.index */
    size_t ents_len, ents_cap;
};

struct sim_chunk {
    uint64_t index, term, offset;
    bool last;
    uint8_t *data;
    uint32_t len;
};

/* A persist batch being written (a deep copy of raft's struct raft_persist). */
struct sim_write {
    uint64_t seq;
    struct sim_chunk *chunks;
    size_t chunks_len;
    bool has_snap;
    struct raft_snapshot_meta snap;
    struct sim_entry *ents;
    size_t ents_len;
    struct raft_hard_state hs;
};

struct sim_prop {
    uint64_t index;
    uint64_t cmd;
};

struct sim_read_op {
    uint64_t id;    /* read id (raft context) */
    uint64_t floor; /* index the read must cover (chk_read_begin at its start) */
    uint64_t ridx;  /* read index from raft, once known */
    bool has_ridx;
    uint64_t start_us;
};

struct sim_node {
    uint64_t id;
    bool started; /* has run at least once */
    bool up;
    bool retired; /* removed from the cluster: never restarts */
    bool initial; /* part of the bootstrap configuration */
    bool removing;
    struct raft *r;
    struct prng rng; /* raft's randomness, reseeded from the simulator at each start */
    uint64_t gen;    /* incarnation; events of older incarnations are ignored */

    struct sim_disk disk;
    bool writing;
    struct sim_write w;
    struct buf vstage; /* snapshot chunks handed out (volatile view of disk.stage) */
    uint64_t vstage_index;
    uint64_t fsync_us; /* fixed write latency, 0 = random */

    /* The state machine: the chain hash of the applied prefix is its whole state. */
    uint64_t sm_index, sm_chain;
    struct raft_config sm_config;
    uint64_t compact_every; /* compact when this many entries were applied since the last */
    bool obs_leader;        /* last status seen: leader in obs_term with commit obs_commit */
    uint64_t obs_term, obs_commit;

    struct sim_prop props[SIM_PROPS_MAX];
    size_t props_len;
    struct sim_read_op reads[SIM_READS_MAX];
    size_t reads_len;
};

struct sim_held {
    int from, to;
    void *data;
    size_t len;
};

struct sim {
    struct sim_config cfg;
    struct prng rng;
    struct evq q;
    uint64_t now_us;
    struct chk chk;
    struct sim_stats st;
    struct sim_node nodes[SIM_NODES_MAX];
    int nodes_len; /* ids handed out so far */
    struct raft_config initial_conf;
    struct arena arena; /* message decoding, reset every delivery */
    struct buf enc;
    struct log_sink sink;

    /* Network model. */
    bool link_down[SIM_NODES_MAX][SIM_NODES_MAX];
    bool hold[SIM_NODES_MAX][SIM_NODES_MAX];
    uint64_t fifo_us[SIM_NODES_MAX][SIM_NODES_MAX]; /* last delivery time per link (FIFO) */
    struct sim_held held[SIM_HELD_MAX];
    size_t held_len;
    uint32_t drop_ppm, dup_ppm, delay_ppm;
    uint64_t delay_max_us;
    bool reorder;
    uint64_t jitter_us;
    sim_filter_fn filter;
    void *filter_arg;

    /* Client history. */
    uint64_t next_cmd, next_read;
    uint64_t *cmd_index; /* cmd -> acknowledged index (0 = not acknowledged) */
    size_t cmd_cap;
    uint64_t *read_served; /* read -> served index + 1 (0 = not done) */
    size_t read_cap;

    /* Run phases. */
    bool healed;
    uint64_t heal_us, heal_cmd_min;
    bool done;
    bool snapshots; /* compaction enabled */
};

/* Shared between sim.c and run.c. */
void sim_trace(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sim_step(struct sim *s);
int sim_node_process(struct sim *s, struct sim_node *n);
void sim_retire(struct sim *s, uint64_t id);
int sim_on_client(struct sim *s, struct ev *e);
int sim_on_fault(struct sim *s, struct ev *e);
int sim_on_heal(struct sim *s, struct ev *e);
int sim_on_restart(struct sim *s, struct ev *e);

#endif
