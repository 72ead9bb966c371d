/* Helpers shared by the WAL tests: deterministic payloads and a collector for read-back. */
#ifndef BATON_TEST_WALT_H
#define BATON_TEST_WALT_H

#include "wal/wal.h"

#include <stdlib.h>
#include <string.h>

#define WALT_PAYLOAD_MAX 600

/* The payload of entry (index, term): its length and bytes depend on both, so a record from
 * another generation or a torn one never matches. Returns the length. */
static inline size_t walt_payload(uint64_t index, uint64_t term, uint8_t *out)
{
    size_t len = (size_t)((index * 7 + term * 13) % WALT_PAYLOAD_MAX);
    uint64_t x = index * 0x9e3779b97f4a7c15ull ^ term;
    for (size_t i = 0; i < len; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        out[i] = (uint8_t)(x >> 56);
    }
    return len;
}

struct walt_got {
    uint64_t first, n;
    uint64_t terms[1 << 16];
    uint32_t types[1 << 16];
    int bad; /* entries whose payload did not match walt_payload */
};

static inline int walt_collect(void *ctx, const struct wal_entry *e)
{
    struct walt_got *g = ctx;
    if (g->n == 0)
        g->first = e->index;
    if (e->index != g->first + g->n || g->n >= (1 << 16))
        return -1;
    uint8_t want[WALT_PAYLOAD_MAX];
    size_t len = walt_payload(e->index, e->term, want);
    if (len != e->len || (len && memcmp(want, e->data, len) != 0))
        g->bad++;
    g->terms[g->n] = e->term;
    g->types[g->n] = e->type;
    g->n++;
    return 0;
}

/* Submits entries [lo, hi] of one term, with payloads from walt_payload. */
static inline int walt_submit_range(struct wal *w, uint64_t lo, uint64_t hi, uint64_t term,
                                    const struct wal_hard_state *hs, uint64_t *seq)
{
    size_t n = (size_t)(hi - lo + 1);
    struct wal_entry *e = calloc(n, sizeof(*e));
    uint8_t *pay = malloc(n * WALT_PAYLOAD_MAX);
    if (!e || !pay)
        return BATON_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        e[i].index = lo + i;
        e[i].term = term;
        e[i].type = (uint32_t)(lo + i) % 3;
        e[i].data = pay + i * WALT_PAYLOAD_MAX;
        e[i].len = walt_payload(lo + i, term, pay + i * WALT_PAYLOAD_MAX);
    }
    struct wal_batch b = {.entries = e, .entries_len = n, .hs = hs};
    int rc = wal_submit(w, &b, seq);
    free(e);
    free(pay);
    return rc;
}

#endif
