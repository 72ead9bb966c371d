/* The event queue (see evq.h): a plain binary heap. */
#include "evq.h"

#include "base/base.h"

#include <stdlib.h>
#include <string.h>

void evq_init(struct evq *q)
{
    memset(q, 0, sizeof(*q));
}

void evq_free(struct evq *q)
{
    for (size_t i = 0; i < q->len; i++)
        free(q->heap[i].data);
    free(q->heap);
    memset(q, 0, sizeof(*q));
}

static bool evq_less(const struct ev *a, const struct ev *b)
{
    return a->at_us < b->at_us || (a->at_us == b->at_us && a->seq < b->seq);
}

void evq_push(struct evq *q, struct ev ev)
{
    if (q->len == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 1024;
        q->heap = realloc(q->heap, q->cap * sizeof(*q->heap));
        BATON_ASSERT(q->heap != NULL);
    }
    ev.seq = q->seq++;
    size_t i = q->len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!evq_less(&ev, &q->heap[parent]))
            break;
        q->heap[i] = q->heap[parent];
        i = parent;
    }
    q->heap[i] = ev;
}

int evq_pop(struct evq *q, struct ev *out)
{
    if (q->len == 0)
        return 0;
    *out = q->heap[0];
    struct ev last = q->heap[--q->len];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct ev *best = &last;
        if (l < q->len && evq_less(&q->heap[l], best))
            m = l, best = &q->heap[l];
        if (r < q->len && evq_less(&q->heap[r], best))
            m = r;
        if (m == i)
            break;
        q->heap[i] = q->heap[m];
        i = m;
    }
    if (q->len > 0)
        q->heap[i] = last;
    return 1;
}

uint64_t evq_next_at(const struct evq *q)
{
    return q->len ? q->heap[0].at_us : UINT64_MAX;
}
