/*
 * sim: a deterministic simulator for baton's raft core. It runs a cluster of raft members on a
 * virtual clock, with a seeded network that drops, delays, reorders, duplicates and partitions
 * messages, disks that lose every write not yet acknowledged as durable when their node
 * crashes, a client workload of proposals and ReadIndex reads, membership changes, leadership
 * transfers and snapshots. After every step (one event) it checks the invariants listed in
 * check.h and the persistence contract (no vote grant, vote request or append response leaves a
 * node before the state it depends on is durable there). Everything derives from one 64-bit
 * seed: the same seed replays the same run step for step.
 *
 * Two ways to use it: sim_run() performs a whole randomized run (faults for fault_ms, then
 * everything heals and the cluster must elect a leader and commit within liveness_ms); the
 * scenario tests drive the cluster by hand with the sim_* controls below.
 *
 * Node ids are 1..SIM_NODES_MAX; ids 1..nodes form the initial cluster, later ids are handed to
 * members added by membership changes (never reused).
 */
#ifndef BATON_SIM_H
#define BATON_SIM_H

#include "raft/raft.h"

#include <stdbool.h>
#include <stdint.h>

#define SIM_NODES_MAX 16

/* Fault kinds, for sim_config.faults and raft-sim --faults. */
enum sim_fault {
    SIM_F_DROP = 1u << 0,      /* lose messages */
    SIM_F_DELAY = 1u << 1,     /* long delays on some messages */
    SIM_F_REORDER = 1u << 2,   /* jitter large enough to reorder */
    SIM_F_DUP = 1u << 3,       /* deliver some messages twice */
    SIM_F_PARTITION = 1u << 4, /* symmetric, one-way, majority/minority, leader, bridge */
    SIM_F_CRASH = 1u << 5,     /* crash and restart from durable state */
    SIM_F_MEMBER = 1u << 6,    /* add learner, promote, remove, joint changes */
    SIM_F_TRANSFER = 1u << 7,  /* leadership transfers */
    SIM_F_SNAPSHOT = 1u << 8,  /* frequent compaction: followers catch up from snapshots */
    SIM_F_ALL = (1u << 9) - 1,
};

/* Parses "drop,delay,..." or "all" or "none"; 0 or BATON_EINVAL (bad name written to bad). */
int sim_faults_parse(const char *list, uint32_t *out, char *bad, size_t bad_len);
/* Writes the names of the kinds in faults, comma-separated ("none" for 0). */
void sim_faults_format(uint32_t faults, char *out, size_t len);

struct sim_config {
    uint64_t seed;
    int nodes;                /* initial voters, 1..7 */
    uint32_t faults;          /* enum sim_fault bits */
    uint64_t fault_ms;        /* sim_run: length of the faulty phase (virtual ms) */
    uint64_t liveness_ms;     /* sim_run: bound on recovery after faults heal */
    bool workload;            /* random client proposals and reads (sim_run turns it on) */
    bool verbose;             /* trace every event to stderr */
    uint32_t tick_ms;         /* virtual ms per raft tick; default 10 */
    uint32_t election_ticks;  /* default 10 */
    uint32_t heartbeat_ticks; /* default 1 */
    bool no_pre_vote;         /* scenarios: turn pre-vote off */
    bool no_check_quorum;     /* scenarios: turn check-quorum off */
    uint64_t max_steps;       /* sim_run: heal after this many steps at most (0 = no bound) */
    uint32_t max_msg_bytes;   /* raft's bound on entry bytes per append; default 2048 */
    bool no_wire_check;       /* skip the persistence check on sent messages (to see whether a
                                 persistence bug is also caught by its consequences) */
};

struct sim_stats {
    uint64_t steps;
    uint64_t elections; /* distinct (term, leader) pairs */
    uint64_t commits;   /* client writes acknowledged */
    uint64_t reads;     /* linearizable reads completed and checked */
    uint64_t sim_ms;    /* virtual time elapsed */
    uint64_t crashes, partitions, conf_changes, transfers, snapshots_sent, compactions;
    uint64_t msgs_sent, msgs_dropped, msgs_duplicated;
};

struct sim;

/* Creates the cluster: nodes 1..nodes bootstrapped with one configuration of nodes voters. */
struct sim *sim_create(const struct sim_config *cfg);
void sim_destroy(struct sim *s);

/* A full randomized run. 0, or -1 on a violation (see sim_violation). */
int sim_run(struct sim *s);
/* The first violation, or "" when none. */
const char *sim_violation(const struct sim *s);
void sim_get_stats(const struct sim *s, struct sim_stats *st);
uint64_t sim_now_ms(const struct sim *s);

/* ---- Manual control (scenarios) --------------------------------------------------------------
 * Functions returning int give 0, -1 on an invariant violation, or a BATON_E* code. */

/* Processes events for ms of virtual time. */
int sim_run_for(struct sim *s, uint64_t ms);
/* Processes events until pred(s, arg) holds (checked after every step): 0, BATON_ETIMEOUT after
 * max_ms, or -1 on a violation. */
int sim_run_until(struct sim *s, bool (*pred)(struct sim *s, void *arg), void *arg,
                  uint64_t max_ms);

/* The node that leads the highest term among running nodes, or 0. */
uint64_t sim_leader(const struct sim *s);
/* Running nodes that consider themselves leader (of any term). */
int sim_leaders_count(const struct sim *s);
bool sim_is_up(const struct sim *s, uint64_t id);
/* Status of a running node (BATON_ENOTFOUND when down). */
int sim_status(const struct sim *s, uint64_t id, struct raft_status *st);
/* The running raft of node id (NULL when down); for direct calls such as raft_term_at. */
struct raft *sim_raft(struct sim *s, uint64_t id);
/* Last index node id applied to its state machine. */
uint64_t sim_applied(const struct sim *s, uint64_t id);

/* Crash: the node stops and loses every write not yet durable; restart rebuilds it from its
 * disk. peer_down also reports the crash to the others (fast failover hook). */
void sim_crash(struct sim *s, uint64_t id, bool peer_down);
void sim_restart(struct sim *s, uint64_t id);
/* Links: from -> to up or down (one-way). */
void sim_link(struct sim *s, uint64_t from, uint64_t to, bool up);
/* Cuts every link between node id and the others, both ways. */
void sim_isolate(struct sim *s, uint64_t id);
/* All links up, message faults off. Crashed nodes stay down. */
void sim_heal_network(struct sim *s);
/* Message loss per million for every link (0 = none). */
void sim_set_drop(struct sim *s, uint32_t per_million);
/* Holds messages from -> to (one-way) until released: they queue, neither lost nor delivered. */
void sim_hold(struct sim *s, uint64_t from, uint64_t to, bool hold);
/* A scenario's message filter, called for every message about to be delivered: return true to
 * drop it. NULL removes the filter. */
typedef bool (*sim_filter_fn)(void *arg, const struct raft_msg *m);
void sim_set_filter(struct sim *s, sim_filter_fn fn, void *arg);
/* Makes a node's disk slow: its writes take ms each from now on (0 restores the default). */
void sim_set_fsync_ms(struct sim *s, uint64_t id, uint64_t ms);

/* Client operations. A proposal at node id: its client id goes to *cmd_out. Returns raft's
 * answer (BATON_ENOTLEADER ...). */
int sim_propose(struct sim *s, uint64_t id, uint64_t *cmd_out);
/* True once the write cmd was applied at the node that proposed it and acknowledged. */
bool sim_write_acked(const struct sim *s, uint64_t cmd);
/* Index of an acknowledged write (0 when not acknowledged). */
uint64_t sim_write_index(const struct sim *s, uint64_t cmd);
/* A ReadIndex read at node id; *read_out identifies it. */
int sim_read(struct sim *s, uint64_t id, uint64_t *read_out);
/* True once the read completed (was checked); *index_out the index it was served at. */
bool sim_read_done(const struct sim *s, uint64_t read, uint64_t *index_out);

/* Membership: starts a new empty node (id returned, 0 when ids ran out) for an add. */
uint64_t sim_new_node(struct sim *s);
int sim_change(struct sim *s, uint64_t leader, const struct raft_conf_change *c, size_t n,
               enum raft_conf_transition t);
int sim_transfer(struct sim *s, uint64_t leader, uint64_t target);
/* Compacts node id's log at its applied index (snapshot of its state machine). */
int sim_compact(struct sim *s, uint64_t id);

/* Runs until a leader exists and every running member of its configuration has applied a
 * fresh write: 0 or BATON_ETIMEOUT / -1. */
int sim_settle(struct sim *s, uint64_t max_ms);

#endif
