/*
 * raft internals shared by raft.c, log.c and codec.c. Not a public header: nothing outside
 * src/raft includes it.
 */
#ifndef BATON_RAFT_INT_H
#define BATON_RAFT_INT_H

#include "raft/raft.h"

/* ---- In-memory log (log.c) -------------------------------------------------------------------
 * The log since the last compaction: entry descriptors in a growable array, payloads copied into
 * append-only blocks. A payload never moves once stored, so descriptors handed out in a ready or
 * a persist batch stay valid while raft keeps appending. Truncation does not reuse payload space
 * (it is rare, and a persist batch being written may still point at the dropped payloads);
 * blocks are freed by compaction once every index they ever held is compacted. */
struct raft_log_block;
struct raft_log {
    struct raft_entry *ents; /* ents[start .. start+len) are indexes snap_index+1 .. */
    size_t start;
    size_t len;
    size_t cap;
    uint64_t snap_index; /* index of the entry just before the first, 0 for none */
    uint64_t snap_term;
    struct raft_log_block *head;   /* oldest block */
    struct raft_log_block *tail;   /* block being filled */
    struct raft_log_block *spares; /* freed blocks kept for reuse */
    size_t spares_len;
    size_t block_bytes;
};

void raft_log_init(struct raft_log *l);
void raft_log_free(struct raft_log *l);
static inline uint64_t raft_log_first(const struct raft_log *l)
{
    return l->snap_index + 1;
}
static inline uint64_t raft_log_last(const struct raft_log *l)
{
    return l->snap_index + l->len;
}
/* The entry at index, or NULL when outside [first, last]. */
static inline const struct raft_entry *raft_log_get(const struct raft_log *l, uint64_t index)
{
    if (index <= l->snap_index || index > raft_log_last(l))
        return NULL;
    return &l->ents[l->start + (index - l->snap_index - 1)];
}
/* Term at index (snap_index included); false when unknown (compacted or beyond last). */
bool raft_log_term(const struct raft_log *l, uint64_t index, uint64_t *term);
uint64_t raft_log_last_term(const struct raft_log *l);
/* Appends one entry at last+1 with its payload copied. 0 or BATON_ENOMEM. */
int raft_log_append(struct raft_log *l, uint64_t term, uint8_t type, const void *data, size_t len);
/* Drops every entry after index (index >= snap_index). */
void raft_log_truncate_after(struct raft_log *l, uint64_t index);
/* Drops every entry up to index (snap_index < index <= last); index becomes the snapshot. */
void raft_log_compact(struct raft_log *l, uint64_t index);
/* Drops everything; the log restarts after (index, term). */
void raft_log_reset(struct raft_log *l, uint64_t index, uint64_t term);

/* ---- Codec helpers (codec.c) ---------------------------------------------------------------- */
bool raft_config_valid(const struct raft_config *c);

#endif
