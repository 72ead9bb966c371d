/*
 * Pending client calls: proposals waiting for their entry to apply, and linearizable reads
 * waiting for a ReadIndex round and then for the apply to reach the round's index. Every call
 * has a deadline; the loop's tick expires them in deadline order (deadlines are uniform, so the
 * list is ordered by insertion).
 */
#include "server/server_int.h"

#include <stdlib.h>
#include <string.h>

static size_t bucket_of(uint64_t id)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 52) % SERVER_CALL_BUCKETS;
}

struct server_call *calls_new(struct server *s, enum call_kind kind, server_done_fn done, void *ctx,
                              struct arena *a)
{
    if (s->calls_len >= SERVER_CALLS_MAX)
        return NULL;
    struct server_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->s = s;
    c->kind = kind;
    c->done = done;
    c->ctx = ctx;
    c->arena = a;
    c->deadline_ms = s->o.env.now_ms(s->o.env.ctx) + s->o.request_timeout_ms;
    if (kind == CALL_PROPOSAL)
        s->proposals_pending++;
    dlist_init(&c->in_round);
    dlist_init(&c->in_ops);
    dlist_push(&s->calls, &c->by_deadline);
    s->calls_len++;
    return c;
}

/* Registers a proposal under its request id. */
void calls_index(struct server *s, struct server_call *c)
{
    size_t b = bucket_of(c->req_id);
    c->hnext = s->buckets[b];
    s->buckets[b] = c;
}

struct server_call *calls_find(struct server *s, uint64_t req_id)
{
    for (struct server_call *c = s->buckets[bucket_of(req_id)]; c; c = c->hnext)
        if (c->req_id == req_id && !c->applied)
            return c;
    return NULL;
}

static void calls_unlink(struct server_call *c)
{
    struct server *s = c->s;
    if (c->kind == CALL_PROPOSAL || (c->kind == CALL_OP && c->req_id)) {
        struct server_call **pp = &s->buckets[bucket_of(c->req_id)];
        while (*pp && *pp != c)
            pp = &(*pp)->hnext;
        if (*pp)
            *pp = c->hnext;
    }
    dlist_remove(&c->in_round);
    dlist_remove(&c->in_ops);
    dlist_remove(&c->by_deadline);
    s->calls_len--;
    if (c->kind == CALL_PROPOSAL)
        s->proposals_pending--;
}

/* Completes a call: unlinks it from every list, runs its callback, frees it. */
/* etcd counts a proposal as failed when it ends without a result from the state machine. */
static bool proposal_failed(int err)
{
    return err == BATON_ETIMEOUT || err == BATON_EPROPOSALDROP || err == BATON_ECLOSED ||
           err == BATON_EUNAVAIL || err == BATON_ENOTLEADER;
}

void calls_finish(struct server_call *c, int err, const struct server_result *res)
{
    if (c->kind == CALL_PROPOSAL && proposal_failed(err))
        c->s->proposals_failed++;
    calls_unlink(c);
    if (c->kind == CALL_OP)
        ops_deliver(c, err);
    else if (c->done)
        c->done(c->ctx, err, err ? NULL : res);
    free(c);
}

void server_call_cancel(struct server_call *c)
{
    if (c->applied) {
        /* Its completion is queued for delivery after the commit: just silence it. */
        c->done = NULL;
        return;
    }
    calls_unlink(c);
    free(c);
}

void calls_fail_forwarded(struct server *s, uint64_t new_leader)
{
    for (struct dlist *n = s->calls.next; n != &s->calls;) {
        struct server_call *c = DLIST_ENTRY(n, struct server_call, by_deadline);
        n = n->next;
        if (c->kind == CALL_PROPOSAL && !c->index && !c->applied && c->fwd_leader != new_leader)
            calls_finish(c, BATON_EPROPOSALDROP, NULL);
    }
}

void calls_expire(struct server *s, uint64_t now_ms)
{
    /* Bounded by the number of calls; each iteration removes one. */
    while (!dlist_empty(&s->calls)) {
        struct server_call *c = DLIST_ENTRY(s->calls.next, struct server_call, by_deadline);
        if (c->deadline_ms > now_ms)
            break;
        calls_finish(c, BATON_ETIMEOUT, NULL);
    }
}

void calls_fail_all(struct server *s, int err)
{
    while (!dlist_empty(&s->calls))
        calls_finish(DLIST_ENTRY(s->calls.next, struct server_call, by_deadline), err, NULL);
}

/* ---- Reads --------------------------------------------------------------------------------- */

static struct read_round *round_find(struct server *s, uint64_t ctx)
{
    struct read_round *r = &s->rounds[ctx % SERVER_READ_ROUNDS];
    return r->ctx == ctx ? r : NULL;
}

static void round_free_if_empty(struct read_round *r)
{
    if (dlist_empty(&r->calls)) {
        r->ctx = 0;
        r->index = 0;
    }
}

/* Starts one ReadIndex round for every read queued since the last round. */
void reads_start_round(struct server *s)
{
    if (dlist_empty(&s->reads_next))
        return;
    uint64_t ctx = ++s->read_ctx_seq;
    struct read_round *r = &s->rounds[ctx % SERVER_READ_ROUNDS];
    if (r->ctx != 0)
        return; /* every slot busy: the reads wait for the next turn (or time out) */
    int rc = raft_read_index(s->raft, ctx);
    if (rc != 0) {
        s->read_ctx_seq--;
        int err = rc == BATON_ENOTLEADER ? BATON_EUNAVAIL : rc;
        while (!dlist_empty(&s->reads_next))
            calls_finish(DLIST_ENTRY(s->reads_next.next, struct server_call, in_round), err, NULL);
        return;
    }
    r->ctx = ctx;
    r->index = 0;
    dlist_init(&r->calls);
    /* Move the whole list: O(1) splice. */
    r->calls.next = s->reads_next.next;
    r->calls.prev = s->reads_next.prev;
    r->calls.next->prev = &r->calls;
    r->calls.prev->next = &r->calls;
    dlist_init(&s->reads_next);
    for (struct dlist *n = r->calls.next; n != &r->calls; n = n->next)
        DLIST_ENTRY(n, struct server_call, in_round)->round = r;
}

static void round_complete(struct server *s, struct read_round *r)
{
    while (!dlist_empty(&r->calls))
        calls_finish(DLIST_ENTRY(r->calls.next, struct server_call, in_round), 0, NULL);
    round_free_if_empty(r);
}

void reads_confirmed(struct server *s, uint64_t ctx, uint64_t index)
{
    struct read_round *r = round_find(s, ctx);
    if (!r)
        return;
    r->index = index ? index : 1;
    if (s->applied >= r->index)
        round_complete(s, r);
    else
        round_free_if_empty(r);
}

/* After an apply: every confirmed round whose index is now applied completes. */
void reads_applied(struct server *s)
{
    for (int i = 0; i < SERVER_READ_ROUNDS; i++) {
        struct read_round *r = &s->rounds[i];
        if (r->ctx && r->index && r->index <= s->applied)
            round_complete(s, r);
        else if (r->ctx)
            round_free_if_empty(r);
    }
}

/* The leader changed: rounds not yet confirmed will never be (etcd: "leader changed"). */
void reads_fail_unconfirmed(struct server *s, int err)
{
    for (int i = 0; i < SERVER_READ_ROUNDS; i++) {
        struct read_round *r = &s->rounds[i];
        if (!r->ctx || r->index)
            continue;
        while (!dlist_empty(&r->calls))
            calls_finish(DLIST_ENTRY(r->calls.next, struct server_call, in_round), err, NULL);
        r->ctx = 0;
    }
}
