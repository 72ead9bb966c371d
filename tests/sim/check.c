/*
 * The invariant checker (see check.h). Every check is incremental so it can run after every
 * simulator step: a new log entry costs one hash-table probe, a new commit one comparison per
 * newly committed index, a leadership change one pass over the committed prefix.
 */
#include "check.h"

#include "base/base.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chk_it_slot {
    uint64_t index; /* 0 = empty slot */
    uint64_t term;
    uint64_t chain;
};

static void *chk_xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size);
    BATON_ASSERT(q != NULL); /* the simulator is a test program: out of memory is fatal */
    return q;
}

/* Grows a zero-filled array so that index idx is valid. */
static void chk_grow(void **arr, size_t *cap, size_t elem, uint64_t idx)
{
    if (idx < *cap)
        return;
    size_t ncap = *cap ? *cap : 64;
    while (ncap <= idx)
        ncap *= 2;
    *arr = chk_xrealloc(*arr, ncap * elem);
    memset((uint8_t *)*arr + *cap * elem, 0, (ncap - *cap) * elem);
    *cap = ncap;
}

static uint64_t chk_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

uint64_t chk_chain(uint64_t prev, uint64_t term, const void *data, size_t len)
{
    /* FNV-1a over the payload, then mixed with the previous chain and the term. */
    uint64_t h = 0xcbf29ce484222325ull;
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    h ^= len;
    uint64_t x = chk_mix(prev ^ chk_mix(term + 0x9e3779b97f4a7c15ull) ^ chk_mix(h));
    return x ? x : 1; /* 0 means "unknown" in the tables */
}

int chk_fail(struct chk *c, const char *fmt, ...)
{
    if (c->violation[0])
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->violation, sizeof(c->violation), fmt, ap);
    va_end(ap);
    return -1;
}

void chk_init(struct chk *c, int nodes)
{
    BATON_ASSERT(nodes > 0 && nodes <= CHK_NODES_MAX);
    memset(c, 0, sizeof(*c));
    c->nodes_len = nodes;
}

void chk_free(struct chk *c)
{
    for (int i = 0; i < c->nodes_len; i++)
        free(c->nodes[i].log.entries);
    free(c->term_leader);
    free(c->it);
    free(c->committed);
    free(c->applied_chain);
    memset(c, 0, sizeof(*c));
}

/* ---- (index, term) -> chain table: log matching ---------------------------------------------- */

static struct chk_it_slot *chk_it_find(struct chk *c, uint64_t index, uint64_t term)
{
    size_t mask = c->it_cap - 1;
    size_t i = chk_mix(index * 0x9e3779b97f4a7c15ull ^ term) & mask;
    for (;;) {
        struct chk_it_slot *s = &c->it[i];
        if (s->index == 0 || (s->index == index && s->term == term))
            return s;
        i = (i + 1) & mask;
    }
}

static void chk_it_rehash(struct chk *c)
{
    struct chk_it_slot *old = c->it;
    size_t old_cap = c->it_cap;
    c->it_cap = old_cap ? old_cap * 2 : 4096;
    c->it = chk_xrealloc(NULL, c->it_cap * sizeof(*c->it));
    memset(c->it, 0, c->it_cap * sizeof(*c->it));
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].index)
            *chk_it_find(c, old[i].index, old[i].term) = old[i];
    free(old);
}

/* Log matching: an (index, term) pair always carries the same chain, whoever holds it. */
static int chk_it_check(struct chk *c, int node, uint64_t index, uint64_t term, uint64_t chain)
{
    if ((c->it_len + 1) * 2 > c->it_cap)
        chk_it_rehash(c);
    struct chk_it_slot *s = chk_it_find(c, index, term);
    if (s->index == 0) {
        *s = (struct chk_it_slot){index, term, chain};
        c->it_len++;
        return 0;
    }
    if (s->chain != chain)
        return chk_fail(c,
                        "log matching: node %d holds index %" PRIu64 " term %" PRIu64
                        " with a prefix that differs from another node's entry at the same "
                        "index and term",
                        node + 1, index, term);
    return 0;
}

/* ---- Log mirrors ----------------------------------------------------------------------------- */

uint64_t chk_log_last(const struct chk *c, int node)
{
    const struct chk_log *l = &c->nodes[node].log;
    return l->base_index + l->len;
}

bool chk_log_get(const struct chk *c, int node, uint64_t index, uint64_t *term, uint64_t *chain)
{
    const struct chk_log *l = &c->nodes[node].log;
    if (index == l->base_index) {
        *term = l->base_term;
        *chain = l->base_chain;
        return true;
    }
    if (index < l->base_index || index > l->base_index + l->len)
        return false;
    const struct chk_entry *e = &l->entries[index - l->base_index - 1];
    *term = e->term;
    *chain = e->chain;
    return true;
}

int chk_log_append(struct chk *c, int node, uint64_t index, uint64_t term, const void *data,
                   size_t len)
{
    struct chk_log *l = &c->nodes[node].log;
    uint64_t last = l->base_index + l->len;
    if (index <= l->base_index || index > last + 1)
        return chk_fail(c,
                        "log: node %d handed out entry %" PRIu64 " but its log holds (%" PRIu64
                        ", %" PRIu64 "]",
                        node + 1, index, l->base_index, last);
    uint64_t prev_term, prev_chain;
    BATON_ASSERT(chk_log_get(c, node, index - 1, &prev_term, &prev_chain));
    if (term < prev_term)
        return chk_fail(c,
                        "log: node %d entry %" PRIu64 " has term %" PRIu64
                        " below the previous entry's term %" PRIu64,
                        node + 1, index, term, prev_term);
    l->len = index - l->base_index - 1; /* truncate a conflicting suffix */
    if (l->len == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->entries = chk_xrealloc(l->entries, l->cap * sizeof(*l->entries));
    }
    uint64_t chain = chk_chain(prev_chain, term, data, len);
    l->entries[l->len++] = (struct chk_entry){term, chain};
    /* An entry below the node's commit index must never be replaced: that is checked through the
     * committed table when the commit is folded in, and by log matching here. */
    return chk_it_check(c, node, index, term, chain);
}

int chk_log_snapshot(struct chk *c, int node, uint64_t index, uint64_t term, uint64_t chain,
                     bool keep_suffix)
{
    struct chk_log *l = &c->nodes[node].log;
    uint64_t t, ch;
    size_t keep = 0;
    if (keep_suffix && chk_log_get(c, node, index, &t, &ch)) {
        if (t != term || ch != chain)
            return chk_fail(c,
                            "snapshot: node %d compacted at %" PRIu64 " term %" PRIu64
                            " but its log holds term %" PRIu64 " there, or another prefix",
                            node + 1, index, term, t);
        keep = (size_t)(l->base_index + l->len - index);
        if (keep)
            memmove(l->entries, l->entries + (index - l->base_index), keep * sizeof(*l->entries));
    }
    l->base_index = index;
    l->base_term = term;
    l->base_chain = chain;
    l->len = keep;
    if (index > 0)
        return chk_it_check(c, node, index, term, chain);
    return 0;
}

void chk_node_reset(struct chk *c, int node)
{
    struct chk_node *n = &c->nodes[node];
    n->log.base_index = n->log.base_term = n->log.base_chain = 0;
    n->log.len = 0;
    n->applied = n->applied_hash = n->commit_seen = 0;
    n->leader = false;
    n->leader_term = 0;
}

/* ---- Leadership and commitment ----------------------------------------------------------------
 */

/* Leader completeness (§5.4): a leader of term T holds every entry committed in a term < T. */
static int chk_leader_complete(struct chk *c, int node, uint64_t term, uint64_t from)
{
    const struct chk_log *l = &c->nodes[node].log;
    for (uint64_t i = BATON_MAX(from, l->base_index + 1); i <= c->committed_max; i++) {
        const struct chk_commit *k = &c->committed[i];
        if (!k->known || k->commit_term >= term)
            continue;
        uint64_t t, ch;
        if (!chk_log_get(c, node, i, &t, &ch) || ch != k->chain)
            return chk_fail(c,
                            "leader completeness: node %d leads term %" PRIu64
                            " but lacks entry %" PRIu64 " (term %" PRIu64
                            ") committed in term %" PRIu64,
                            node + 1, term, i, k->term, k->commit_term);
    }
    return 0;
}

static int chk_commit_index(struct chk *c, int node, uint64_t term, uint64_t index)
{
    uint64_t t, ch;
    if (!chk_log_get(c, node, index, &t, &ch))
        return chk_fail(c,
                        "commit: node %d reports index %" PRIu64 " committed but does not hold it",
                        node + 1, index);
    chk_grow((void **)&c->committed, &c->committed_cap, sizeof(*c->committed), index);
    struct chk_commit *k = &c->committed[index];
    if (k->known) {
        if (k->chain != ch)
            return chk_fail(c,
                            "state-machine safety: node %d committed index %" PRIu64
                            " term %" PRIu64 " but term %" PRIu64 " (another prefix) was "
                            "committed there before",
                            node + 1, index, t, k->term);
        if (term < k->commit_term)
            k->commit_term = term;
        return 0;
    }
    *k = (struct chk_commit){.term = t, .chain = ch, .commit_term = term, .known = true};
    if (index > c->committed_max)
        c->committed_max = index;
    /* A leader elected in a later term must already hold it. */
    for (int i = 0; i < c->nodes_len; i++)
        if (c->nodes[i].leader && c->nodes[i].leader_term > term &&
            chk_leader_complete(c, i, c->nodes[i].leader_term, index) != 0)
            return -1;
    return 0;
}

int chk_status(struct chk *c, int node, bool leader, uint64_t term, uint64_t commit)
{
    struct chk_node *n = &c->nodes[node];
    if (commit > chk_log_last(c, node))
        return chk_fail(c,
                        "commit: node %d commit index %" PRIu64 " beyond its last entry %" PRIu64,
                        node + 1, commit, chk_log_last(c, node));
    /* Entries folded in after compaction below the mirror are known to be committed already. */
    uint64_t from = BATON_MAX(n->commit_seen, n->log.base_index) + 1;
    for (uint64_t i = from; i <= commit; i++)
        if (chk_commit_index(c, node, term, i) != 0)
            return -1;
    if (commit > n->commit_seen)
        n->commit_seen = commit;

    bool became = leader && (!n->leader || n->leader_term != term);
    n->leader = leader;
    n->leader_term = leader ? term : 0;
    if (!became)
        return 0;
    /* Election safety (§5.2): one leader per term. */
    chk_grow((void **)&c->term_leader, &c->term_leader_cap, 1, term);
    uint8_t prev = c->term_leader[term];
    if (prev != 0 && prev != node + 1)
        return chk_fail(c, "election safety: nodes %d and %d both lead term %" PRIu64, prev,
                        node + 1, term);
    if (prev == 0)
        c->elections++;
    c->term_leader[term] = (uint8_t)(node + 1);
    return chk_leader_complete(c, node, term, 1);
}

/* ---- State machines -------------------------------------------------------------------------- */

int chk_apply(struct chk *c, int node, uint64_t index, uint64_t term, const void *data, size_t len)
{
    struct chk_node *n = &c->nodes[node];
    if (index != n->applied + 1)
        return chk_fail(
            c, "apply: node %d applied index %" PRIu64 " after %" PRIu64 " (out of order or a gap)",
            node + 1, index, n->applied);
    uint64_t chain = chk_chain(n->applied_hash, term, data, len);
    if (index > c->committed_max || !c->committed[index].known)
        return chk_fail(c,
                        "state-machine safety: node %d applied index %" PRIu64
                        " which no node reported committed",
                        node + 1, index);
    if (c->committed[index].chain != chain)
        return chk_fail(c,
                        "state-machine safety: node %d applied index %" PRIu64 " term %" PRIu64
                        " which differs from the committed entry (term %" PRIu64 ")",
                        node + 1, index, term, c->committed[index].term);
    chk_grow((void **)&c->applied_chain, &c->applied_cap, sizeof(uint64_t), index);
    if (c->applied_chain[index] == 0)
        c->applied_chain[index] = chain;
    else if (c->applied_chain[index] != chain)
        return chk_fail(c,
                        "state-machine safety: node %d applied a different entry at %" PRIu64
                        " than another node",
                        node + 1, index);
    if (index > c->applied_max)
        c->applied_max = index;
    n->applied = index;
    n->applied_hash = chain;
    return 0;
}

int chk_apply_snapshot(struct chk *c, int node, uint64_t index, uint64_t chain)
{
    struct chk_node *n = &c->nodes[node];
    if (index < n->applied)
        return chk_fail(c,
                        "snapshot: node %d installed a snapshot at %" PRIu64
                        " behind its applied index %" PRIu64,
                        node + 1, index, n->applied);
    if (index > 0) {
        bool known = index <= c->committed_max && c->committed[index].known;
        if (!known || c->committed[index].chain != chain)
            return chk_fail(c,
                            "state-machine safety: node %d installed a snapshot at %" PRIu64
                            " whose state is not the committed prefix",
                            node + 1, index);
    }
    n->applied = index;
    n->applied_hash = chain;
    return 0;
}

/* ---- Client history: linearizable reads --------------------------------------------------------
 */

void chk_write_acked(struct chk *c, uint64_t index)
{
    if (index > c->acked_write_max)
        c->acked_write_max = index;
}

uint64_t chk_read_begin(const struct chk *c)
{
    return BATON_MAX(c->acked_write_max, c->read_done_max);
}

int chk_read_done(struct chk *c, int node, uint64_t floor, uint64_t ridx, uint64_t served)
{
    if (ridx < floor)
        return chk_fail(c,
                        "linearizable read: node %d returned read index %" PRIu64
                        " but a write or read at index %" PRIu64 " completed before the read began",
                        node + 1, ridx, floor);
    if (served < ridx)
        return chk_fail(c,
                        "linearizable read: node %d served at applied %" PRIu64
                        " below its read index %" PRIu64,
                        node + 1, served, ridx);
    if (served > c->read_done_max)
        c->read_done_max = served;
    return 0;
}
