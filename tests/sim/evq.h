/*
 * evq: the simulator's event queue. A binary min-heap of events ordered by (virtual time,
 * insertion sequence), so two events due at the same instant always run in the order they were
 * scheduled: with one seeded PRNG this makes every run replay exactly.
 */
#ifndef BATON_SIM_EVQ_H
#define BATON_SIM_EVQ_H

#include <stddef.h>
#include <stdint.h>

enum ev_kind {
    EV_TICK = 1,     /* a node's logical clock ticks */
    EV_DELIVER,      /* a message arrives at node (owned bytes in data) */
    EV_PERSIST_DONE, /* the node's outstanding write reached the disk */
    EV_CLIENT,       /* the client workload acts */
    EV_FAULT,        /* the fault schedule acts */
    EV_HEAL,         /* every fault is lifted */
    EV_USER,         /* restart a crashed node */
    EV_PEER_DOWN,    /* node learns that peer `from` died (its connection closed) */
};

struct ev {
    uint64_t at_us; /* virtual time at which the event runs */
    uint64_t seq;   /* tie-break: insertion order */
    enum ev_kind kind;
    int node;            /* target node index */
    int from;            /* sender for EV_DELIVER */
    uint64_t generation; /* node incarnation the event belongs to (ticks, writes) */
    void *data;          /* owned by the event; freed by the consumer */
    size_t len;
};

struct evq {
    struct ev *heap;
    size_t len, cap;
    uint64_t seq;
};

void evq_init(struct evq *q);
/* Frees pending events' data too. */
void evq_free(struct evq *q);
/* Copies ev (its data pointer is taken). */
void evq_push(struct evq *q, struct ev ev);
/* Removes the earliest event into *out; 0 when empty. */
int evq_pop(struct evq *q, struct ev *out);
/* Time of the earliest event; UINT64_MAX when empty. */
uint64_t evq_next_at(const struct evq *q);

#endif
