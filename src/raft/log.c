/*
 * raft/log: the in-memory log since the last compaction (see raft_int.h). Raft never reads the
 * disk: the caller restores this log at start and raft keeps it in memory from then on.
 */
#include "raft/raft_int.h"

#include <stdlib.h>
#include <string.h>

#define LOG_BLOCK_BYTES (1u << 20)
#define LOG_SPARES_MAX  16 /* freed blocks kept for reuse: no malloc, no page faults */

struct raft_log_block {
    struct raft_log_block *next;
    uint64_t max_index; /* highest index whose payload was ever stored here */
    size_t used;
    size_t cap;
    uint8_t data[];
};

void raft_log_init(struct raft_log *l)
{
    memset(l, 0, sizeof(*l));
    l->block_bytes = LOG_BLOCK_BYTES;
}

static void free_list(struct raft_log_block *b)
{
    while (b) {
        struct raft_log_block *n = b->next;
        free(b);
        b = n;
    }
}

static void log_free_blocks(struct raft_log *l)
{
    free_list(l->head);
    free_list(l->spares);
    l->head = l->tail = l->spares = NULL;
    l->spares_len = 0;
}

/* Keeps a standard-size block for reuse, or frees it. */
static void block_release(struct raft_log *l, struct raft_log_block *b)
{
    if (b->cap == l->block_bytes && l->spares_len < LOG_SPARES_MAX) {
        b->next = l->spares;
        l->spares = b;
        l->spares_len++;
        return;
    }
    free(b);
}

void raft_log_free(struct raft_log *l)
{
    log_free_blocks(l);
    free(l->ents);
    memset(l, 0, sizeof(*l));
}

bool raft_log_term(const struct raft_log *l, uint64_t index, uint64_t *term)
{
    if (index == l->snap_index) {
        *term = l->snap_term;
        return true;
    }
    const struct raft_entry *e = raft_log_get(l, index);
    if (!e)
        return false;
    *term = e->term;
    return true;
}

uint64_t raft_log_last_term(const struct raft_log *l)
{
    if (l->len == 0)
        return l->snap_term;
    return l->ents[l->start + l->len - 1].term;
}

/* Room for one more descriptor: slide down when the front half is free, else grow. */
static int log_reserve_one(struct raft_log *l)
{
    if (l->start + l->len < l->cap)
        return 0;
    if (l->start > 0 && l->start >= l->cap / 2) {
        memmove(l->ents, l->ents + l->start, l->len * sizeof(*l->ents));
        l->start = 0;
        return 0;
    }
    size_t cap = l->cap ? l->cap * 2 : 1024;
    struct raft_entry *e = realloc(l->ents, cap * sizeof(*e));
    if (!e)
        return BATON_ENOMEM;
    l->ents = e;
    l->cap = cap;
    return 0;
}

/* Payload space for len bytes, in the tail block or a new one. */
static uint8_t *log_payload_alloc(struct raft_log *l, size_t len, uint64_t index)
{
    struct raft_log_block *b = l->tail;
    size_t need = (len + 7) & ~(size_t)7;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > l->block_bytes ? need : l->block_bytes;
        if (cap == l->block_bytes && l->spares) {
            b = l->spares;
            l->spares = b->next;
            l->spares_len--;
        } else {
            b = malloc(sizeof(*b) + cap);
            if (!b)
                return NULL;
        }
        b->next = NULL;
        b->max_index = 0;
        b->used = 0;
        b->cap = cap;
        if (l->tail)
            l->tail->next = b;
        else
            l->head = b;
        l->tail = b;
    }
    uint8_t *p = b->data + b->used;
    b->used += need;
    if (index > b->max_index)
        b->max_index = index;
    return p;
}

int raft_log_append(struct raft_log *l, uint64_t term, uint8_t type, const void *data, size_t len)
{
    BATON_ASSERT(term >= raft_log_last_term(l));
    BATON_ASSERT(len <= UINT32_MAX);
    int rc = log_reserve_one(l);
    if (rc)
        return rc;
    uint64_t index = raft_log_last(l) + 1;
    const uint8_t *p = NULL;
    if (len > 0) {
        uint8_t *q = log_payload_alloc(l, len, index);
        if (!q)
            return BATON_ENOMEM;
        memcpy(q, data, len);
        p = q;
    }
    l->ents[l->start + l->len] = (struct raft_entry){
        .term = term, .index = index, .type = type, .len = (uint32_t)len, .data = p};
    l->len++;
    return 0;
}

void raft_log_truncate_after(struct raft_log *l, uint64_t index)
{
    BATON_ASSERT(index >= l->snap_index);
    if (index >= raft_log_last(l))
        return;
    l->len = (size_t)(index - l->snap_index);
}

void raft_log_compact(struct raft_log *l, uint64_t index)
{
    BATON_ASSERT(index > l->snap_index && index <= raft_log_last(l));
    const struct raft_entry *e = raft_log_get(l, index);
    uint64_t n = index - l->snap_index;
    l->snap_term = e->term;
    l->snap_index = index;
    l->start += (size_t)n;
    l->len -= (size_t)n;
    if (l->len == 0)
        l->start = 0;
    /* Free whole blocks every index of which is compacted; the tail stays to be filled. */
    while (l->head && l->head != l->tail && l->head->max_index <= index) {
        struct raft_log_block *b = l->head;
        l->head = b->next;
        block_release(l, b);
    }
}

void raft_log_reset(struct raft_log *l, uint64_t index, uint64_t term)
{
    /* Blocks stay: a persist batch being written may point into them. Compaction past their
     * indexes frees them. */
    l->start = 0;
    l->len = 0;
    l->snap_index = index;
    l->snap_term = term;
}
