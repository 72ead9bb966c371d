/*
 * The whole-history checkers: registers (per key, through the WGL search in lin.c),
 * list-append, watch consistency and fencing tokens. Each appends what it finds to a report;
 * none of them stops at the first anomaly.
 */
#include "check.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Ops of one workload grouped by key: an array of pointers sorted by (key, t0). */
struct by_key {
    const struct chaos_op **ops;
    size_t n;
};

static int cmp_key_t0(const void *pa, const void *pb)
{
    const struct chaos_op *a = *(const struct chaos_op *const *)pa;
    const struct chaos_op *b = *(const struct chaos_op *const *)pb;
    int c = strcmp(a->key, b->key);
    if (c)
        return c;
    if (a->t0 != b->t0)
        return a->t0 < b->t0 ? -1 : 1;
    return a->line < b->line ? -1 : a->line > b->line;
}

static int group(const struct chaos_history *h, enum chaos_workload w, struct by_key *g)
{
    g->n = 0;
    g->ops = malloc((h->n ? h->n : 1) * sizeof(*g->ops));
    if (!g->ops)
        return BATON_ENOMEM;
    for (size_t i = 0; i < h->n; i++) {
        if (h->ops[i].w == w)
            g->ops[g->n++] = &h->ops[i];
    }
    qsort(g->ops, g->n, sizeof(*g->ops), cmp_key_t0);
    return 0;
}

/* Calls fn on each run of ops sharing a key. */
typedef int (*key_fn)(const struct chaos_op *const *ops, size_t n, void *ctx);
static int each_key(const struct by_key *g, key_fn fn, void *ctx)
{
    size_t i = 0;
    while (i < g->n) {
        size_t j = i + 1;
        while (j < g->n && strcmp(g->ops[j]->key, g->ops[i]->key) == 0)
            j++;
        int rc = fn(g->ops + i, j - i, ctx);
        if (rc)
            return rc;
        i = j;
    }
    return 0;
}

static void describe(char *out, size_t len, const struct chaos_op *op)
{
    static const char *const fns[] = {"read",  "write", "cas", "append", "event",
                                      "start", "end",   "act", "other"};
    static const char *const outs[] = {"ok", "fail", "info"};
    snprintf(out, len,
             "%s p=%" PRId64 " a=%" PRId64 " b=%" PRId64 " v=%" PRId64 " %s t=[%" PRId64 ",%" PRId64
             "] line %u",
             fns[op->fn], op->p, op->a, op->b, op->v, outs[op->out], op->t0, op->t1, op->line);
}

/* --- registers ------------------------------------------------------------------------- */

struct reg_ctx {
    struct chaos_report *rep;
    uint64_t steps_max;
};

static int reg_key(const struct chaos_op *const *ops, size_t n, void *ctx)
{
    struct reg_ctx *c = ctx;
    struct chaos_lin_result res;
    int rc = chaos_lin_check_register(ops, n, c->steps_max, &res);
    if (rc)
        return rc;
    c->rep->keys_checked++;
    if (res.verdict == CHAOS_LIN_UNKNOWN) {
        c->rep->unknown++;
        return 0;
    }
    if (res.verdict == CHAOS_LIN_VIOLATION) {
        char d[200] = "?", st[32];
        if (res.stuck)
            describe(d, sizeof(d), res.stuck);
        /* INT64_MIN stands for any value nobody read (see lin.c). */
        if (res.stuck_state == INT64_MIN)
            snprintf(st, sizeof(st), "(a value never read)");
        else
            snprintf(st, sizeof(st), "%" PRId64, res.stuck_state);
        chaos_report_add(c->rep, "nonlinearizable", ops[0]->key, n,
                         "no linearization of %zu ops; deepest point %zu ops in, register=%s, "
                         "cannot place: %s",
                         res.ops_searched, res.depth_max, st, d);
    }
    return 0;
}

int chaos_check_registers(const struct chaos_history *h, uint64_t steps_max,
                          struct chaos_report *rep)
{
    struct by_key g;
    int rc = group(h, CHAOS_W_REG, &g);
    if (rc)
        return rc;
    struct reg_ctx c = {.rep = rep, .steps_max = steps_max};
    rc = each_key(&g, reg_key, &c);
    free(g.ops);
    return rc;
}

/* --- list-append ----------------------------------------------------------------------- */

/* Element -> (position in the longest read, append op), an open-addressing map. */
struct elem {
    int64_t val;
    int64_t pos; /* -1 when absent from the longest read */
    const struct chaos_op *append;
    bool used;
};

struct elem_map {
    struct elem *slots;
    size_t cap;
};

static struct elem *elem_get(struct elem_map *m, int64_t val, bool create)
{
    size_t j = (size_t)((uint64_t)val * 0x9e3779b97f4a7c15ull) & (m->cap - 1);
    while (m->slots[j].used) {
        if (m->slots[j].val == val)
            return &m->slots[j];
        j = (j + 1) & (m->cap - 1);
    }
    if (!create)
        return NULL;
    m->slots[j] = (struct elem){.val = val, .pos = -1, .used = true};
    return &m->slots[j];
}

struct append_ctx {
    struct chaos_report *rep;
};

/* Returns the longest ok read and checks duplicates and phantoms inside each read. */
static const struct chaos_op *append_reads(const struct chaos_op *const *ops, size_t n,
                                           struct elem_map *m, struct chaos_report *rep)
{
    const struct chaos_op *longest = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct chaos_op *r = ops[i];
        if (r->fn != CHAOS_READ || r->out != CHAOS_OK)
            continue;
        if (!longest || r->list_len > longest->list_len)
            longest = r;
        for (uint32_t x = 0; x < r->list_len; x++) {
            struct elem *e = elem_get(m, r->list[x], false);
            if (!e || !e->append) {
                chaos_report_add(rep, "phantom-element", r->key, n,
                                 "read at line %u holds %" PRId64 ", which no append wrote",
                                 r->line, r->list[x]);
            } else if (e->append->out == CHAOS_FAIL) {
                chaos_report_add(rep, "aborted-read", r->key, n,
                                 "read at line %u holds %" PRId64
                                 ", whose append failed definitely (line %u)",
                                 r->line, r->list[x], e->append->line);
            }
            for (uint32_t y = 0; y < x; y++) {
                if (r->list[y] == r->list[x]) {
                    chaos_report_add(rep, "duplicate-element", r->key, n,
                                     "read at line %u holds %" PRId64 " twice", r->line,
                                     r->list[x]);
                    break;
                }
            }
        }
    }
    return longest;
}

static void append_order(const struct chaos_op *const *ops, size_t n, const struct chaos_op *L,
                         struct elem_map *m, struct chaos_report *rep)
{
    for (size_t i = 0; i < n; i++) {
        const struct chaos_op *r = ops[i];
        if (r->fn != CHAOS_READ || r->out != CHAOS_OK)
            continue;
        /* One order: each read is a prefix of the longest. */
        for (uint32_t x = 0; x < r->list_len; x++) {
            if (r->list[x] != L->list[x]) {
                chaos_report_add(rep, "incompatible-order", r->key, n,
                                 "read at line %u differs from the longest read (line %u) at "
                                 "index %u: %" PRId64 " vs %" PRId64,
                                 r->line, L->line, x, r->list[x], L->list[x]);
                break;
            }
        }
        for (size_t j = 0; j < n; j++) {
            const struct chaos_op *o = ops[j];
            if (o->t1 >= r->t0 || o->out != CHAOS_OK)
                continue;
            /* o completed before r was invoked. */
            if (o->fn == CHAOS_READ && o->list_len > r->list_len) {
                chaos_report_add(rep, "stale-read", r->key, n,
                                 "read at line %u saw %u elements after the read at line %u "
                                 "had seen %u",
                                 r->line, r->list_len, o->line, o->list_len);
            } else if (o->fn == CHAOS_APPEND) {
                struct elem *e = elem_get(m, o->a, false);
                if (!e || e->pos < 0 || e->pos >= r->list_len)
                    chaos_report_add(rep, "lost-append", r->key, n,
                                     "append of %" PRId64 " (line %u) acknowledged before the "
                                     "read at line %u began, but missing from it",
                                     o->a, o->line, r->line);
            }
        }
    }
    /* Real-time order of acknowledged appends is the list order. */
    for (size_t i = 0; i < n; i++) {
        const struct chaos_op *x = ops[i];
        if (x->fn != CHAOS_APPEND || x->out != CHAOS_OK)
            continue;
        struct elem *ex = elem_get(m, x->a, false);
        for (size_t j = 0; j < n; j++) {
            const struct chaos_op *y = ops[j];
            if (y->fn != CHAOS_APPEND || y->t0 <= x->t1)
                continue;
            struct elem *ey = elem_get(m, y->a, false);
            if (ex->pos >= 0 && ey && ey->pos >= 0 && ey->pos < ex->pos)
                chaos_report_add(rep, "reordered-append", x->key, n,
                                 "%" PRId64 " (line %u) was acknowledged before %" PRId64
                                 " (line %u) began, yet follows it in the list",
                                 x->a, x->line, y->a, y->line);
        }
    }
}

static int append_key(const struct chaos_op *const *ops, size_t n, void *ctx)
{
    struct append_ctx *c = ctx;
    struct elem_map m = {0};
    m.cap = 16;
    while (m.cap < n * 2 + 16)
        m.cap *= 2;
    m.slots = calloc(m.cap, sizeof(*m.slots));
    if (!m.slots)
        return BATON_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->fn != CHAOS_APPEND)
            continue;
        struct elem *e = elem_get(&m, ops[i]->a, true);
        if (e->append)
            chaos_report_add(c->rep, "bad-history", ops[i]->key, n,
                             "element %" PRId64 " appended twice (lines %u and %u)", ops[i]->a,
                             e->append->line, ops[i]->line);
        e->append = ops[i];
    }
    const struct chaos_op *L = append_reads(ops, n, &m, c->rep);
    if (L) {
        for (uint32_t x = 0; x < L->list_len; x++) {
            struct elem *e = elem_get(&m, L->list[x], false);
            if (e && e->pos < 0)
                e->pos = x;
        }
        append_order(ops, n, L, &m, c->rep);
    }
    free(m.slots);
    return 0;
}

int chaos_check_append(const struct chaos_history *h, struct chaos_report *rep)
{
    struct by_key g;
    int rc = group(h, CHAOS_W_APPEND, &g);
    if (rc)
        return rc;
    struct append_ctx c = {.rep = rep};
    rc = each_key(&g, append_key, &c);
    free(g.ops);
    return rc;
}

/* --- watch ----------------------------------------------------------------------------- */

/* The reference: every revision seen by any watcher or acknowledged to a writer, with its key
 * and value, sorted by revision. */
struct wref {
    int64_t rev;
    const struct chaos_op *op;
};

static int cmp_wref(const void *pa, const void *pb)
{
    const struct wref *a = pa, *b = pb;
    if (a->rev != b->rev)
        return a->rev < b->rev ? -1 : 1;
    return a->op->line < b->op->line ? -1 : a->op->line > b->op->line;
}

static bool same_event(const struct chaos_op *x, const struct chaos_op *y)
{
    bool xdel = x->fn == CHAOS_EVENT && x->b == 1, ydel = y->fn == CHAOS_EVENT && y->b == 1;
    return strcmp(x->key, y->key) == 0 && xdel == ydel && (xdel || x->a == y->a);
}

/* Builds the deduplicated reference; reports two different events at one revision. */
static int watch_reference(const struct chaos_history *h, struct chaos_report *rep,
                           struct wref **out, size_t *out_n)
{
    size_t n = 0;
    struct wref *r = malloc((h->n ? h->n : 1) * sizeof(*r));
    if (!r)
        return BATON_ENOMEM;
    for (size_t i = 0; i < h->n; i++) {
        const struct chaos_op *op = &h->ops[i];
        if (op->w == CHAOS_W_WATCH && op->out == CHAOS_OK &&
            (op->fn == CHAOS_EVENT || op->fn == CHAOS_WRITE) && op->rev > 0)
            r[n++] = (struct wref){.rev = op->rev, .op = op};
    }
    qsort(r, n, sizeof(*r), cmp_wref);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && r[m - 1].rev == r[i].rev) {
            if (!same_event(r[m - 1].op, r[i].op))
                chaos_report_add(rep, "watch-mismatch", r[i].op->key, 0,
                                 "revision %" PRId64 ": line %u says %s=%" PRId64
                                 ", line %u says %s=%" PRId64,
                                 r[i].rev, r[m - 1].op->line, r[m - 1].op->key, r[m - 1].op->a,
                                 r[i].op->line, r[i].op->key, r[i].op->a);
            continue;
        }
        r[m++] = r[i];
    }
    *out = r;
    *out_n = m;
    return 0;
}

static int cmp_p_line(const void *pa, const void *pb)
{
    const struct chaos_op *a = *(const struct chaos_op *const *)pa;
    const struct chaos_op *b = *(const struct chaos_op *const *)pb;
    if (a->p != b->p)
        return a->p < b->p ? -1 : 1;
    return a->line < b->line ? -1 : a->line > b->line;
}

/* One watcher's events (in delivery order = line order) against the reference. */
static void watch_one(const struct chaos_op *const *ev, size_t n, const struct wref *ref,
                      size_t nref, struct chaos_report *rep)
{
    int64_t start = -1, last = 0;
    bool ended = false, caught_up = false;
    int64_t p = ev[0]->p;
    size_t k = 0; /* next reference revision expected */
    for (size_t i = 0; i < n; i++) {
        const struct chaos_op *e = ev[i];
        if (e->fn == CHAOS_START) {
            start = e->rev;
            while (k < nref && ref[k].rev < start)
                k++;
            continue;
        }
        if (e->fn == CHAOS_END) {
            ended = true;
            caught_up = e->v == 1;
            continue;
        }
        if (e->fn != CHAOS_EVENT)
            continue;
        if (e->rev <= last) {
            chaos_report_add(rep, "watch-order", e->key, 0,
                             "watcher %" PRId64 " got revision %" PRId64 " after %" PRId64
                             " (line %u)",
                             p, e->rev, last, e->line);
            continue;
        }
        while (k < nref && ref[k].rev < e->rev) {
            if (start >= 0)
                chaos_report_add(rep, "watch-gap", ref[k].op->key, 0,
                                 "watcher %" PRId64 " skipped revision %" PRId64
                                 " (%s, line %u) before %" PRId64,
                                 p, ref[k].rev, ref[k].op->key, ref[k].op->line, e->rev);
            k++;
        }
        if (k < nref && ref[k].rev == e->rev)
            k++;
        last = e->rev;
    }
    if (start < 0)
        chaos_report_add(rep, "bad-history", "", 0, "watcher %" PRId64 " has no start record", p);
    if (ended && caught_up && k < nref)
        chaos_report_add(rep, "watch-gap", ref[k].op->key, 0,
                         "watcher %" PRId64 " ended caught up at %" PRId64
                         " but never saw revision %" PRId64,
                         p, last, ref[k].rev);
    if (ended && !caught_up)
        chaos_report_add(rep, "watch-lag", "", 0,
                         "watcher %" PRId64 " did not catch up with the last write (at %" PRId64
                         ", last write at %" PRId64 ")",
                         p, last, nref ? ref[nref - 1].rev : 0);
}

int chaos_check_watch(const struct chaos_history *h, struct chaos_report *rep)
{
    struct wref *ref;
    size_t nref;
    int rc = watch_reference(h, rep, &ref, &nref);
    if (rc)
        return rc;
    const struct chaos_op **ev = malloc((h->n ? h->n : 1) * sizeof(*ev));
    if (!ev) {
        free(ref);
        return BATON_ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++) {
        const struct chaos_op *op = &h->ops[i];
        if (op->w == CHAOS_W_WATCH &&
            (op->fn == CHAOS_EVENT || op->fn == CHAOS_START || op->fn == CHAOS_END))
            ev[n++] = op;
    }
    qsort(ev, n, sizeof(*ev), cmp_p_line);
    size_t i = 0;
    while (i < n) {
        size_t j = i + 1;
        while (j < n && ev[j]->p == ev[i]->p)
            j++;
        watch_one(ev + i, j - i, ref, nref, rep);
        i = j;
    }
    free(ev);
    free(ref);
    return 0;
}

/* --- fencing --------------------------------------------------------------------------- */

static int cmp_t1(const void *pa, const void *pb)
{
    const struct chaos_op *a = *(const struct chaos_op *const *)pa;
    const struct chaos_op *b = *(const struct chaos_op *const *)pb;
    return a->t1 < b->t1 ? -1 : a->t1 > b->t1;
}

static int cmp_t0(const void *pa, const void *pb)
{
    const struct chaos_op *a = *(const struct chaos_op *const *)pa;
    const struct chaos_op *b = *(const struct chaos_op *const *)pb;
    return a->t0 < b->t0 ? -1 : a->t0 > b->t0;
}

static int cmp_token(const void *pa, const void *pb)
{
    const struct chaos_op *a = *(const struct chaos_op *const *)pa;
    const struct chaos_op *b = *(const struct chaos_op *const *)pb;
    if (a->a != b->a)
        return a->a < b->a ? -1 : 1;
    return a->b < b->b ? -1 : a->b > b->b;
}

/* One report per (late holder, earlier holder) pair: a stale holder usually acts many times. */
#define FENCE_PAIRS_MAX 64
static bool pair_seen(int64_t *seen, size_t *nseen, int64_t late, int64_t early)
{
    for (size_t i = 0; i < *nseen; i++) {
        if (seen[2 * i] == late && seen[2 * i + 1] == early)
            return true;
    }
    if (*nseen < FENCE_PAIRS_MAX) {
        seen[2 * *nseen] = late;
        seen[2 * *nseen + 1] = early;
        (*nseen)++;
    }
    return false;
}

int chaos_check_fencing(const struct chaos_history *h, struct chaos_report *rep)
{
    size_t n = 0;
    const struct chaos_op **by_t1 = malloc((h->n ? h->n : 1) * sizeof(*by_t1) * 2);
    if (!by_t1)
        return BATON_ENOMEM;
    const struct chaos_op **by_t0 = by_t1 + (h->n ? h->n : 1);
    for (size_t i = 0; i < h->n; i++) {
        const struct chaos_op *op = &h->ops[i];
        if (op->w == CHAOS_W_LOCK && op->fn == CHAOS_ACT && op->out == CHAOS_OK)
            by_t1[n++] = op;
    }
    /* Same token, different holders. */
    memcpy(by_t0, by_t1, n * sizeof(*by_t0));
    qsort(by_t0, n, sizeof(*by_t0), cmp_token);
    for (size_t i = 1; i < n; i++) {
        if (by_t0[i]->a == by_t0[i - 1]->a && by_t0[i]->b != by_t0[i - 1]->b)
            chaos_report_add(rep, "fence-reuse", by_t0[i]->key, n,
                             "holders %" PRId64 " (line %u) and %" PRId64
                             " (line %u) both acted with token %" PRId64,
                             by_t0[i - 1]->b, by_t0[i - 1]->line, by_t0[i]->b, by_t0[i]->line,
                             by_t0[i]->a);
    }
    /* A sweep in t0 order keeps the largest token of every act completed before. */
    qsort(by_t1, n, sizeof(*by_t1), cmp_t1);
    qsort(by_t0, n, sizeof(*by_t0), cmp_t0);
    size_t k = 0, nseen = 0;
    int64_t seen[2 * FENCE_PAIRS_MAX];
    const struct chaos_op *max = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct chaos_op *b = by_t0[i];
        while (k < n && by_t1[k]->t1 < b->t0) {
            if (!max || by_t1[k]->a > max->a)
                max = by_t1[k];
            k++;
        }
        if (max && b->a < max->a && !pair_seen(seen, &nseen, b->b, max->b))
            chaos_report_add(rep, "fence-regress", b->key, n,
                             "holder %" PRId64 " acted with token %" PRId64
                             " (line %u) after holder %" PRId64 " had acted with %" PRId64
                             " (line %u)",
                             b->b, b->a, b->line, max->b, max->a, max->line);
    }
    free(by_t1);
    return 0;
}

int chaos_check_all(const struct chaos_history *h, uint64_t steps_max, struct chaos_report *rep)
{
    for (size_t i = 0; i < h->n; i++) {
        const struct chaos_op *op = &h->ops[i];
        /* Watch events and markers are observations, not client operations. */
        if (op->w == CHAOS_W_WATCH && op->fn != CHAOS_WRITE)
            continue;
        rep->ops++;
        rep->ok += op->out == CHAOS_OK;
        rep->fail += op->out == CHAOS_FAIL;
        rep->info += op->out == CHAOS_INFO;
    }
    int rc = chaos_check_registers(h, steps_max, rep);
    if (!rc)
        rc = chaos_check_append(h, rep);
    if (!rc)
        rc = chaos_check_watch(h, rep);
    if (!rc)
        rc = chaos_check_fencing(h, rep);
    return rc;
}
