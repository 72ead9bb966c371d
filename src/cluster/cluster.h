/*
 * cluster: the cluster manager's domain logic for the database's nodes, free of I/O. Time is a
 * parameter (milliseconds on one member's monotonic clock, never compared across machines), so
 * the simulator and unit tests drive it with virtual time; the rpc layer (svc_baton_nodes.c)
 * turns its decisions into Raft proposals.
 *
 * What lives here:
 *   - the key layout under /baton/nodes/ (proto/baton.proto's header comment) and the fencing
 *     compare a node's writes carry: value(/baton/nodes/<id>/epoch) == "<epoch>";
 *   - validation of what a node registers (address, labels, version) with the texts clients see;
 *   - a phi-accrual failure detector over heartbeat inter-arrival times (Hayashibara et al.,
 *     2004, with Akka's normal approximation and minimum standard deviation);
 *   - the liveness policy: a leader-local table of registered nodes (soft state, rebuilt on
 *     promotion) that decides the transitions JOINING → UP, UP ⇄ SUSPECT (with hysteresis) and
 *     → DOWN with epoch + 1 once a node's lease lapsed, never within a lease TTL of promotion.
 */
#ifndef BATON_CLUSTER_H
#define BATON_CLUSTER_H

#include "base/base.h"
#include "mvcc/mvcc.h"

/* ---- States (values equal baton.v1.NodeState) ------------------------------------------------ */
enum cluster_node_state {
    CLUSTER_NODE_UNKNOWN = 0,
    CLUSTER_NODE_JOINING = 1,
    CLUSTER_NODE_UP = 2,
    CLUSTER_NODE_SUSPECT = 3,
    CLUSTER_NODE_DOWN = 4,
    CLUSTER_NODE_REMOVED = 5,
    CLUSTER_NODE_DECOMMISSIONING = 6,
    CLUSTER_NODE_DECOMMISSIONED = 7,
};
/* "joining", "up", ...; "unknown" out of range. Static. */
const char *cluster_node_state_name(int state);

/* ---- Keys ----------------------------------------------------------------------------------- */
#define CLUSTER_NODES_PREFIX "/baton/nodes/"
/* Room for the longest key below with its NUL. */
#define CLUSTER_KEY_MAX 48
/* "/baton/nodes/<id as 16 hex digits>"; returns the length (without the NUL). */
size_t cluster_node_key(uint64_t id, char out[CLUSTER_KEY_MAX]);
/* ".../<id>/epoch": the node's liveness epoch in decimal. */
size_t cluster_node_epoch_key(uint64_t id, char out[CLUSTER_KEY_MAX]);
/* ".../<id>/alive": attached to the node's lease; gone once the lease lapsed or was revoked. */
size_t cluster_node_alive_key(uint64_t id, char out[CLUSTER_KEY_MAX]);
/* Parses a key under the prefix: *id and which key it is. false for anything else. */
enum cluster_key_kind { CLUSTER_KEY_NODE, CLUSTER_KEY_EPOCH, CLUSTER_KEY_ALIVE };
bool cluster_parse_key(const uint8_t *key, size_t len, uint64_t *id, enum cluster_key_kind *kind);

/* ---- Fencing --------------------------------------------------------------------------------
 * A node that acts under epoch E makes each of its writes a Txn with this compare: the write
 * fails once the epoch moved (its lease lapsed and the leader declared it down). The value is
 * the epoch in decimal, the same text the epoch key holds. */
#define CLUSTER_EPOCH_TEXT_MAX 24
size_t cluster_epoch_text(uint64_t epoch, char out[CLUSTER_EPOCH_TEXT_MAX]);
/* Parses the epoch key's value: 0 or BATON_ECORRUPT (not a decimal number without sign). */
int cluster_epoch_parse(const uint8_t *p, size_t len, uint64_t *epoch);
struct cluster_fence {
    char key[CLUSTER_KEY_MAX];
    char value[CLUSTER_EPOCH_TEXT_MAX];
    struct mvcc_compare cmp; /* points into key and value above: do not copy the struct */
};
/* Fills f so that f->cmp is value(epoch key of id) == "<epoch>". */
void cluster_fence_init(struct cluster_fence *f, uint64_t id, uint64_t epoch);

/* ---- Validation -------------------------------------------------------------------------------
 * Each returns 0 or BATON_EINVAL with a one-line reason in err ("baton: malformed label ..."),
 * the text the client gets with INVALID_ARGUMENT. */
#define CLUSTER_ADDRESS_MAX     255
#define CLUSTER_LABELS_MAX      64
#define CLUSTER_LABEL_KEY_MAX   63
#define CLUSTER_LABEL_VALUE_MAX 255
struct cluster_label {
    const char *key, *value; /* borrowed, NUL-terminated */
};
int cluster_validate_address(const char *address, char *err, size_t err_len);
int cluster_validate_labels(const struct cluster_label *labels, size_t n, char *err,
                            size_t err_len);
/* "major.minor.patch", each a decimal number without leading zeros (semver's core). */
int cluster_validate_version(const char *version, char *err, size_t err_len);

/* ---- Phi-accrual failure detector -------------------------------------------------------------
 * phi(t) = -log10(P(the next heartbeat arrives later than t after the last one)), with the
 * inter-arrival times modelled as a normal distribution of the window's mean (plus the
 * acceptable pause) and standard deviation (at least min_std_ms). The window starts with two
 * samples around the expected interval (Akka's first-heartbeat estimate), so phi is defined
 * from the first heartbeat on. */
#define CLUSTER_PHI_WINDOW 100
struct cluster_phi_config {
    uint32_t expected_interval_ms; /* the heartbeat interval the nodes were told */
    uint32_t min_std_ms;           /* floor of the standard deviation */
    uint32_t acceptable_pause_ms;  /* added to the mean: pauses this long are normal */
};
struct cluster_phi {
    uint64_t last_ms; /* 0: no heartbeat yet */
    uint32_t n, head;
    double sum, sumsq;
    uint16_t intervals_ms[CLUSTER_PHI_WINDOW]; /* saturating at 65535 ms */
};
void cluster_phi_init(struct cluster_phi *d, const struct cluster_phi_config *cfg);
/* A heartbeat arrived at now_ms (times never go backwards). */
void cluster_phi_heartbeat(struct cluster_phi *d, uint64_t now_ms);
/* Suspicion level at now_ms; 0 before the first heartbeat. */
double cluster_phi_value(const struct cluster_phi *d, const struct cluster_phi_config *cfg,
                         uint64_t now_ms);
double cluster_phi_mean_ms(const struct cluster_phi *d);
double cluster_phi_std_ms(const struct cluster_phi *d);

/* ---- Liveness policy ---------------------------------------------------------------------------
 * The table holds what the leader knows of each registered node: the replicated fields it needs
 * (state, epoch, lease, the record's mod revision; updated from the store by the caller) and
 * soft state (its detector, the last stats).
 *
 * Decisions, for a node with no transition in flight:
 *   - its lease (not 0) lapsed, once a lease TTL has passed since promotion: epoch + 1 and
 *     lease 0, state DOWN (a DECOMMISSIONING node stays DECOMMISSIONING: the drain goes on
 *     when it registers again);
 *   - JOINING and a heartbeat arrived: UP;
 *   - UP, heartbeats seen under this leader, phi > suspect_phi, past the grace: SUSPECT;
 *   - SUSPECT and the last recover_beats heartbeats arrived with phi < recover_phi: UP.
 * DOWN, REMOVED and DECOMMISSIONED nodes are left alone (RegisterNode brings a DOWN one back). */
struct cluster_liveness_config {
    struct cluster_phi_config phi;
    uint32_t lease_ttl_ms;  /* the grace after promotion */
    double suspect_phi;     /* UP → SUSPECT above this (8) */
    double recover_phi;     /* SUSPECT → UP after recover_beats heartbeats below this (1) */
    uint32_t recover_beats; /* (3) */
    uint32_t nodes_max;     /* table bound */
};
void cluster_liveness_config_default(struct cluster_liveness_config *cfg);

struct cluster_node_live {
    uint64_t id;
    enum cluster_node_state state;
    uint64_t epoch;
    int64_t lease;
    int64_t mod_rev;     /* the record's mod revision (compare of every transition) */
    bool beat;           /* a heartbeat arrived under this leader */
    bool pending;        /* a transition is in flight: decide nothing until it is applied */
    uint32_t good_beats; /* consecutive heartbeats that arrived with phi < recover_phi */
    struct cluster_phi phi;
    uint64_t stats[4]; /* used, available, shard count, leader count (soft) */
    double cpu_usage;
};

struct cluster_liveness;
int cluster_liveness_create(const struct cluster_liveness_config *cfg,
                            struct cluster_liveness **out);
void cluster_liveness_destroy(struct cluster_liveness *lv);
/* This member became leader at now_ms: the table is emptied (the caller reloads it with
 * cluster_liveness_upsert) and nothing is suspected or declared down before now_ms + TTL. */
void cluster_liveness_promote(struct cluster_liveness *lv, uint64_t now_ms);
/* The replicated fields of a node changed (or the node is new). Clears pending. BATON_ETOOBIG
 * past nodes_max, BATON_ENOMEM. */
int cluster_liveness_upsert(struct cluster_liveness *lv, uint64_t id, enum cluster_node_state st,
                            uint64_t epoch, int64_t lease, int64_t mod_rev);
void cluster_liveness_remove(struct cluster_liveness *lv, uint64_t id);
/* NULL when unknown. Valid until the next upsert/remove/promote. */
struct cluster_node_live *cluster_liveness_get(struct cluster_liveness *lv, uint64_t id);
size_t cluster_liveness_count(const struct cluster_liveness *lv);
/* A heartbeat of the node's current epoch arrived at now_ms: feeds the detector and the
 * recovery count. */
void cluster_liveness_heartbeat(struct cluster_liveness *lv, struct cluster_node_live *n,
                                uint64_t now_ms);

/* A transition the leader should propose (compare the record's mod revision). */
struct cluster_transition {
    uint64_t id;
    enum cluster_node_state from, to;
    uint64_t epoch;  /* the epoch to write: +1 when the lease lapsed */
    int64_t mod_rev; /* expected mod revision of the record */
    bool lapsed;     /* the lease lapsed: write lease 0 (the record keeps no dead lease) */
};
/* Tells whether a lease lapsed (expired or gone) on the leader. */
typedef bool (*cluster_lease_lapsed_fn)(void *ctx, int64_t lease);
/* Decides transitions at now_ms: up to max of them into out (*n), marking each node pending.
 * Nodes visited round-robin across calls, so a bounded out never starves a node. */
void cluster_liveness_step(struct cluster_liveness *lv, uint64_t now_ms,
                           cluster_lease_lapsed_fn lapsed, void *ctx,
                           struct cluster_transition *out, size_t max, size_t *n);
/* A proposed transition failed or lost its compare: decide again for the node. */
void cluster_liveness_unpend(struct cluster_liveness *lv, uint64_t id);

#endif
