/*
 * The leader's table of registered nodes and the liveness policy over it (see cluster.h).
 * Nodes live in a dense array (cache-friendly round-robin scans), found by id through an
 * open-addressing index of array positions with linear probing and backward-shift deletion.
 */
#include "cluster/cluster.h"

#include <stdlib.h>
#include <string.h>

struct cluster_liveness {
    struct cluster_liveness_config cfg;
    struct cluster_node_live *nodes;
    size_t n, cap;
    uint32_t *index;  /* position + 1, 0 = empty */
    size_t index_cap; /* power of two, at least twice n */
    size_t cursor;    /* round-robin position of the next step */
    uint64_t grace_end_ms;
};

void cluster_liveness_config_default(struct cluster_liveness_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->phi.expected_interval_ms = 1000;
    cfg->phi.min_std_ms = 250;
    cfg->phi.acceptable_pause_ms = 1000;
    cfg->lease_ttl_ms = 10000;
    cfg->suspect_phi = 8;
    cfg->recover_phi = 1;
    cfg->recover_beats = 3;
    cfg->nodes_max = 1000000;
}

static size_t slot_of(uint64_t id, size_t cap)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return (size_t)id & (cap - 1);
}

int cluster_liveness_create(const struct cluster_liveness_config *cfg,
                            struct cluster_liveness **out)
{
    struct cluster_liveness *lv = calloc(1, sizeof(*lv));
    if (!lv)
        return BATON_ENOMEM;
    lv->cfg = *cfg;
    *out = lv;
    return 0;
}

void cluster_liveness_destroy(struct cluster_liveness *lv)
{
    if (!lv)
        return;
    free(lv->nodes);
    free(lv->index);
    free(lv);
}

void cluster_liveness_promote(struct cluster_liveness *lv, uint64_t now_ms)
{
    lv->n = 0;
    lv->cursor = 0;
    if (lv->index)
        memset(lv->index, 0, lv->index_cap * sizeof(*lv->index));
    lv->grace_end_ms = now_ms + lv->cfg.lease_ttl_ms;
}

size_t cluster_liveness_count(const struct cluster_liveness *lv)
{
    return lv->n;
}

/* Position of id's index slot: the slot holding it, or the empty slot where it would go. */
static size_t index_find(const struct cluster_liveness *lv, uint64_t id)
{
    size_t i = slot_of(id, lv->index_cap);
    while (lv->index[i] && lv->nodes[lv->index[i] - 1].id != id)
        i = (i + 1) & (lv->index_cap - 1);
    return i;
}

struct cluster_node_live *cluster_liveness_get(struct cluster_liveness *lv, uint64_t id)
{
    if (!lv->index_cap)
        return NULL;
    size_t i = index_find(lv, id);
    return lv->index[i] ? &lv->nodes[lv->index[i] - 1] : NULL;
}

static int index_grow(struct cluster_liveness *lv)
{
    size_t cap = lv->index_cap ? lv->index_cap * 2 : 64;
    uint32_t *idx = calloc(cap, sizeof(*idx));
    if (!idx)
        return BATON_ENOMEM;
    free(lv->index);
    lv->index = idx;
    lv->index_cap = cap;
    for (size_t p = 0; p < lv->n; p++)
        lv->index[index_find(lv, lv->nodes[p].id)] = (uint32_t)(p + 1);
    return 0;
}

static struct cluster_node_live *insert(struct cluster_liveness *lv, uint64_t id)
{
    if (lv->n >= lv->cfg.nodes_max || lv->n >= UINT32_MAX - 1)
        return NULL;
    if ((lv->n + 1) * 2 > lv->index_cap && index_grow(lv) != 0)
        return NULL;
    if (lv->n == lv->cap) {
        size_t cap = lv->cap ? lv->cap * 2 : 64;
        struct cluster_node_live *nn = realloc(lv->nodes, cap * sizeof(*nn));
        if (!nn)
            return NULL;
        lv->nodes = nn;
        lv->cap = cap;
    }
    struct cluster_node_live *n = &lv->nodes[lv->n];
    memset(n, 0, sizeof(*n));
    n->id = id;
    cluster_phi_init(&n->phi, &lv->cfg.phi);
    lv->index[index_find(lv, id)] = (uint32_t)(++lv->n);
    return n;
}

int cluster_liveness_upsert(struct cluster_liveness *lv, uint64_t id, enum cluster_node_state st,
                            uint64_t epoch, int64_t lease, int64_t mod_rev)
{
    struct cluster_node_live *n = cluster_liveness_get(lv, id);
    if (!n) {
        if (lv->n >= lv->cfg.nodes_max)
            return BATON_ETOOBIG;
        n = insert(lv, id);
        if (!n)
            return BATON_ENOMEM;
    }
    if (n->state != st)
        n->good_beats = 0;
    if (n->epoch != epoch || n->lease != lease) {
        /* A new registration: the detector's history belongs to the old one. */
        uint64_t last = n->phi.last_ms;
        cluster_phi_init(&n->phi, &lv->cfg.phi);
        n->phi.last_ms = last;
    }
    n->state = st;
    n->epoch = epoch;
    n->lease = lease;
    n->mod_rev = mod_rev;
    n->pending = false;
    return 0;
}

void cluster_liveness_remove(struct cluster_liveness *lv, uint64_t id)
{
    if (!lv->index_cap)
        return;
    size_t i = index_find(lv, id);
    if (!lv->index[i])
        return;
    size_t pos = lv->index[i] - 1;
    /* Backward-shift deletion keeps every probe chain unbroken. */
    size_t mask = lv->index_cap - 1, hole = i, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!lv->index[j])
            break;
        size_t home = slot_of(lv->nodes[lv->index[j] - 1].id, lv->index_cap);
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            lv->index[hole] = lv->index[j];
            hole = j;
        }
    }
    lv->index[hole] = 0;
    /* Fill the array's gap with the last node. */
    size_t last = lv->n - 1;
    if (pos != last) {
        lv->nodes[pos] = lv->nodes[last];
        lv->index[index_find(lv, lv->nodes[pos].id)] = (uint32_t)(pos + 1);
    }
    lv->n--;
    if (lv->cursor > lv->n)
        lv->cursor = 0;
}

void cluster_liveness_heartbeat(struct cluster_liveness *lv, struct cluster_node_live *n,
                                uint64_t now_ms)
{
    double phi = cluster_phi_value(&n->phi, &lv->cfg.phi, now_ms);
    if (n->beat && phi < lv->cfg.recover_phi)
        n->good_beats++;
    else if (n->beat)
        n->good_beats = 0;
    cluster_phi_heartbeat(&n->phi, now_ms);
    n->beat = true;
}

void cluster_liveness_unpend(struct cluster_liveness *lv, uint64_t id)
{
    struct cluster_node_live *n = cluster_liveness_get(lv, id);
    if (n)
        n->pending = false;
}

/* The transition n needs now, if any: false when none. */
static bool decide(const struct cluster_liveness *lv, const struct cluster_node_live *n,
                   uint64_t now_ms, cluster_lease_lapsed_fn lapsed, void *ctx,
                   struct cluster_transition *t)
{
    bool graced = now_ms < lv->grace_end_ms;
    *t = (struct cluster_transition){n->id, n->state, n->state, n->epoch, n->mod_rev, false};
    switch (n->state) {
    case CLUSTER_NODE_JOINING:
    case CLUSTER_NODE_UP:
    case CLUSTER_NODE_SUSPECT:
    case CLUSTER_NODE_DECOMMISSIONING:
        break;
    default:
        return false;
    }
    if (!graced && n->lease != 0 && lapsed(ctx, n->lease)) {
        t->to = n->state == CLUSTER_NODE_DECOMMISSIONING ? n->state : CLUSTER_NODE_DOWN;
        t->epoch = n->epoch + 1;
        t->lapsed = true;
        return true;
    }
    if (n->state == CLUSTER_NODE_JOINING && n->beat) {
        t->to = CLUSTER_NODE_UP;
        return true;
    }
    if (n->state == CLUSTER_NODE_UP && !graced && n->beat &&
        cluster_phi_value(&n->phi, &lv->cfg.phi, now_ms) > lv->cfg.suspect_phi) {
        t->to = CLUSTER_NODE_SUSPECT;
        return true;
    }
    if (n->state == CLUSTER_NODE_SUSPECT && n->good_beats >= lv->cfg.recover_beats) {
        t->to = CLUSTER_NODE_UP;
        return true;
    }
    return false;
}

void cluster_liveness_step(struct cluster_liveness *lv, uint64_t now_ms,
                           cluster_lease_lapsed_fn lapsed, void *ctx,
                           struct cluster_transition *out, size_t max, size_t *n)
{
    *n = 0;
    for (size_t visited = 0; visited < lv->n && *n < max; visited++) {
        if (lv->cursor >= lv->n)
            lv->cursor = 0;
        struct cluster_node_live *node = &lv->nodes[lv->cursor++];
        if (node->pending)
            continue;
        if (decide(lv, node, now_ms, lapsed, ctx, &out[*n])) {
            node->pending = true;
            (*n)++;
        }
    }
}
