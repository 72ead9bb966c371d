/*
 * Bump allocator: a list of chunks, allocation is a pointer bump. Reset keeps the largest chunk
 * so a per-request arena reaches a steady state with no malloc at all.
 */
#include "base/base.h"

#include <stdlib.h>
#include <string.h>

struct arena_chunk {
    struct arena_chunk *next;
    size_t size; /* usable bytes in data */
    size_t used;
    _Alignas(16) uint8_t data[];
};

void arena_init(struct arena *a, size_t chunk_size)
{
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : 4096;
    a->used_bytes = 0;
}

void *arena_alloc(struct arena *a, size_t size)
{
    size = (size + 7) & ~(size_t)7;
    struct arena_chunk *c = a->head;
    if (!c || c->size - c->used < size) {
        size_t n = size > a->chunk_size ? size : a->chunk_size;
        c = malloc(sizeof(*c) + n);
        if (!c)
            return NULL;
        c->size = n;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    a->used_bytes += size;
    return p;
}

void *arena_dup(struct arena *a, const void *p, size_t size)
{
    void *d = arena_alloc(a, size ? size : 1);
    if (d && size)
        memcpy(d, p, size);
    return d;
}

void arena_reset(struct arena *a)
{
    struct arena_chunk *keep = NULL;
    for (struct arena_chunk *c = a->head; c;) {
        struct arena_chunk *next = c->next;
        if (!keep || c->size > keep->size) {
            free(keep);
            keep = c;
        } else {
            free(c);
        }
        c = next;
    }
    if (keep) {
        keep->used = 0;
        keep->next = NULL;
    }
    a->head = keep;
    a->used_bytes = 0;
}

void arena_free(struct arena *a)
{
    for (struct arena_chunk *c = a->head; c;) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used_bytes = 0;
}
