/*
 * Linearizability of a single register (one key), by the Wing & Gong / Lowe search the way
 * Porcupine runs it: at each point, any not yet linearized op invoked before the earliest
 * completion among the pending acknowledged ops may go next, if the register allows it; a
 * (linearized set, value) pair already explored is never explored again. The history is
 * linearizable when every acknowledged op is placed.
 *
 * Indeterminate writes and CAS have no completion (t1 = infinity) and are never required: left
 * out, they "never happened"; placed, they took effect at that point, which can be any time
 * after their invocation. Definite failures and indeterminate reads have no effect and are
 * dropped before the search.
 *
 * The search is iterative (explicit stack, depth bounded by the op count) and bounded by a step
 * count; hitting the bound gives CHAOS_LIN_UNKNOWN, never a wrong verdict.
 */
#include "check.h"

#include <stdlib.h>
#include <string.h>

enum lop_kind { LOP_READ, LOP_WRITE, LOP_CAS, LOP_CAS_FAILED };

/* Values nobody ever read or compared against are all alike to every op (a read or a CAS
 * never matches them), so they collapse into one, which keeps the memo small. */
#define UNOBSERVED INT64_MIN

struct lop {
    const struct chaos_op *op;
    enum lop_kind kind;
    int64_t x, y;   /* read: x = value; write: y; CAS: x expected, y new */
    int64_t t0, t1; /* t1 = CHAOS_T_INF when indeterminate */
    bool required;
};

/* The memo: an open-addressing set of (value, bits from word `lo_word` on). Bits below
 * lo_word * 64 are all set (every op before the first pending one is linearized), so they are
 * implied by lo_word and not stored. */
struct memo_entry {
    uint64_t hash;
    int64_t state;
    uint32_t lo_word, nwords;
    uint64_t *words; /* in the arena */
};

struct memo {
    struct memo_entry *slots;
    size_t cap, used;
    struct arena arena;
    size_t bytes, bytes_max;
};

struct frame {
    uint32_t op;  /* the op placed to enter this frame; UINT32_MAX for the root */
    uint32_t pos; /* next candidate to try */
    uint32_t lo;  /* first not yet linearized op */
    int64_t min_t1;
    int64_t prev_state;
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint32_t top_word(const uint64_t *bits, uint32_t nwords_all)
{
    uint32_t hi = nwords_all;
    while (hi > 0 && bits[hi - 1] == 0)
        hi--;
    return hi;
}

static uint64_t memo_hash(const uint64_t *bits, uint32_t lo_word, uint32_t hi, int64_t state)
{
    uint64_t h = mix64((uint64_t)state ^ ((uint64_t)lo_word << 40));
    for (uint32_t i = lo_word; i < hi; i++)
        h = mix64(h ^ bits[i]) + i;
    return h;
}

static bool slot_used(const struct memo_entry *e)
{
    return e->hash != 0 || e->words != NULL || e->nwords != 0 || e->state != 0 || e->lo_word;
}

static int memo_grow(struct memo *m)
{
    size_t cap = m->cap ? m->cap * 2 : 4096;
    struct memo_entry *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return BATON_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (!slot_used(&m->slots[i]))
            continue;
        size_t j = m->slots[i].hash & (cap - 1);
        while (slot_used(&slots[j]))
            j = (j + 1) & (cap - 1);
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

/* Inserts; *fresh tells whether it was new. BATON_ETOOBIG past the memory bound. */
static int memo_insert(struct memo *m, const uint64_t *bits, uint32_t nwords_all, uint32_t lo_word,
                       int64_t state, bool *fresh)
{
    if ((m->used + 1) * 2 > m->cap) {
        int rc = memo_grow(m);
        if (rc)
            return rc;
    }
    uint32_t hi = top_word(bits, nwords_all);
    if (hi < lo_word)
        hi = lo_word;
    uint64_t h = memo_hash(bits, lo_word, hi, state);
    size_t j = h & (m->cap - 1);
    uint32_t nw = hi - lo_word;
    while (slot_used(&m->slots[j])) {
        struct memo_entry *e = &m->slots[j];
        if (e->hash == h && e->state == state && e->lo_word == lo_word && e->nwords == nw &&
            (nw == 0 || memcmp(e->words, bits + lo_word, nw * sizeof(uint64_t)) == 0)) {
            *fresh = false;
            return 0;
        }
        j = (j + 1) & (m->cap - 1);
    }
    size_t bytes = nw * sizeof(uint64_t) + sizeof(struct memo_entry) * 2;
    if (m->bytes + bytes > m->bytes_max)
        return BATON_ETOOBIG;
    uint64_t *w = NULL;
    if (nw) {
        w = arena_dup(&m->arena, bits + lo_word, nw * sizeof(uint64_t));
        if (!w)
            return BATON_ENOMEM;
    }
    m->slots[j] = (struct memo_entry){
        .hash = h, .state = state, .lo_word = lo_word, .nwords = nw, .words = w};
    m->used++;
    m->bytes += bytes;
    *fresh = true;
    return 0;
}

static void memo_free(struct memo *m)
{
    free(m->slots);
    arena_free(&m->arena);
}

/* The register: does op apply to state, and what does it leave? */
static bool reg_step(const struct lop *l, int64_t state, int64_t *next)
{
    switch (l->kind) {
    case LOP_READ:
        *next = state;
        return l->x == state;
    case LOP_WRITE:
        *next = l->y;
        return true;
    case LOP_CAS_FAILED: /* observed compare failure */
        *next = state;
        return state != l->x;
    case LOP_CAS:
        *next = l->y;
        return state == l->x;
    }
    BATON_UNREACHABLE();
    return false;
}

static int lop_cmp(const void *pa, const void *pb)
{
    const struct lop *a = pa, *b = pb;
    if (a->t0 != b->t0)
        return a->t0 < b->t0 ? -1 : 1;
    if (a->t1 != b->t1)
        return a->t1 < b->t1 ? -1 : 1;
    return a->op->line < b->op->line ? -1 : a->op->line > b->op->line;
}

static bool bit_get(const uint64_t *b, uint32_t i)
{
    return (b[i >> 6] >> (i & 63)) & 1;
}

static void bit_set(uint64_t *b, uint32_t i, bool v)
{
    if (v)
        b[i >> 6] |= (uint64_t)1 << (i & 63);
    else
        b[i >> 6] &= ~((uint64_t)1 << (i & 63));
}

/* Fills lo and min_t1 of a new frame from the current linearized set. */
static void frame_window(struct frame *f, const struct lop *ops, uint32_t n, const uint64_t *bits,
                         uint32_t lo_from)
{
    uint32_t lo = lo_from;
    while (lo < n && bit_get(bits, lo))
        lo++;
    int64_t min_t1 = CHAOS_T_INF;
    for (uint32_t i = lo; i < n && ops[i].t0 < min_t1; i++) {
        if (!bit_get(bits, i) && ops[i].t1 < min_t1)
            min_t1 = ops[i].t1;
    }
    f->lo = lo;
    f->pos = lo;
    f->min_t1 = min_t1;
}

struct search {
    struct lop *ops;
    uint32_t n;
    uint64_t *bits;
    uint32_t nwords;
    struct frame *stack;
    struct memo memo;
};

/* Two pending indeterminate ops that do the same thing and were both invoked already are
 * interchangeable from here on (neither has a completion), so only the first is tried: without
 * this, n unobserved indeterminate writes would cost 2^n linearized sets. */
static bool has_twin(const struct search *s, uint32_t lo, uint32_t c)
{
    const struct lop *l = &s->ops[c];
    if (l->required)
        return false;
    for (uint32_t i = lo; i < c; i++) {
        const struct lop *o = &s->ops[i];
        if (!o->required && !bit_get(s->bits, i) && o->kind == l->kind && o->x == l->x &&
            o->y == l->y)
            return true;
    }
    return false;
}

static int search_run(struct search *s, size_t required, uint64_t steps_max,
                      struct chaos_lin_result *res)
{
    uint32_t depth = 0, placed_required = 0;
    int64_t state = 0;
    s->stack[0] = (struct frame){.op = UINT32_MAX};
    frame_window(&s->stack[0], s->ops, s->n, s->bits, 0);
    res->stuck = NULL;
    for (;;) {
        if (placed_required == required) {
            res->verdict = CHAOS_LIN_OK;
            return 0;
        }
        if (++res->steps > steps_max) {
            res->verdict = CHAOS_LIN_UNKNOWN;
            return 0;
        }
        struct frame *f = &s->stack[depth];
        uint32_t c = f->pos;
        int64_t next = 0;
        while (
            c < s->n && s->ops[c].t0 <= f->min_t1 &&
            (bit_get(s->bits, c) || has_twin(s, f->lo, c) || !reg_step(&s->ops[c], state, &next)))
            c++;
        if (c >= s->n || s->ops[c].t0 > f->min_t1) {
            /* Nothing fits here: remember where we got stuck, then backtrack. */
            if (depth >= res->depth_max) {
                res->depth_max = depth;
                for (uint32_t i = f->lo; i < s->n; i++) {
                    if (!bit_get(s->bits, i) && s->ops[i].t1 == f->min_t1) {
                        res->stuck = s->ops[i].op;
                        res->stuck_state = state;
                        break;
                    }
                }
            }
            if (depth == 0) {
                res->verdict = CHAOS_LIN_VIOLATION;
                return 0;
            }
            bit_set(s->bits, f->op, false);
            placed_required -= s->ops[f->op].required;
            state = f->prev_state;
            depth--;
            continue;
        }
        f->pos = c + 1;
        bit_set(s->bits, c, true);
        /* The memo key starts at the first pending op's word, so the same set reached by
         * different paths is stored once. */
        uint32_t lo = f->lo;
        while (lo < s->n && bit_get(s->bits, lo))
            lo++;
        bool fresh;
        int rc = memo_insert(&s->memo, s->bits, s->nwords, lo >> 6, next, &fresh);
        if (rc == BATON_ETOOBIG) {
            res->verdict = CHAOS_LIN_UNKNOWN;
            return 0;
        }
        if (rc)
            return rc;
        if (!fresh) {
            bit_set(s->bits, c, false);
            continue;
        }
        placed_required += s->ops[c].required;
        struct frame *nf = &s->stack[++depth];
        nf->op = c;
        nf->prev_state = state;
        state = next;
        frame_window(nf, s->ops, s->n, s->bits, f->lo);
    }
}

static int cmp_i64(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return a < b ? -1 : a > b;
}

/* Fills seen with the sorted distinct values read or compared against (0, the absent value,
 * always); returns how many. seen has room for n + 1. */
static size_t observed_values(const struct chaos_op *const *ops, size_t n, int64_t *seen)
{
    size_t k = 0;
    seen[k++] = 0;
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->fn == CHAOS_READ && ops[i]->out == CHAOS_OK)
            seen[k++] = ops[i]->v;
        else if (ops[i]->fn == CHAOS_CAS)
            seen[k++] = ops[i]->a;
    }
    qsort(seen, k, sizeof(*seen), cmp_i64);
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (m == 0 || seen[m - 1] != seen[i])
            seen[m++] = seen[i];
    }
    return m;
}

static int64_t canon(int64_t v, const int64_t *seen, size_t nseen)
{
    return bsearch(&v, seen, nseen, sizeof(*seen), cmp_i64) ? v : UNOBSERVED;
}

/* The search's view of one op; false when the op has no effect and drops out. */
static bool lop_make(const struct chaos_op *op, const int64_t *seen, size_t nseen, struct lop *l)
{
    bool effectful = op->fn == CHAOS_WRITE || op->fn == CHAOS_CAS;
    if (op->fn != CHAOS_READ && !effectful)
        return false;
    if (op->out == CHAOS_FAIL || (op->out == CHAOS_INFO && !effectful))
        return false;
    *l = (struct lop){.op = op, .t0 = op->t0, .required = op->out == CHAOS_OK};
    l->t1 = l->required ? op->t1 : CHAOS_T_INF;
    switch (op->fn) {
    case CHAOS_READ:
        l->kind = LOP_READ;
        l->x = op->v;
        break;
    case CHAOS_WRITE:
        l->kind = LOP_WRITE;
        l->y = canon(op->a, seen, nseen);
        break;
    default:
        l->kind = op->out == CHAOS_OK && op->v == 0 ? LOP_CAS_FAILED : LOP_CAS;
        l->x = op->a;
        l->y = canon(op->b, seen, nseen);
    }
    return true;
}

int chaos_lin_check_register(const struct chaos_op *const *ops, size_t n, uint64_t steps_max,
                             struct chaos_lin_result *res)
{
    memset(res, 0, sizeof(*res));
    struct search s = {0};
    size_t required = 0;
    int rc = BATON_ENOMEM;
    s.ops = calloc(n ? n : 1, sizeof(*s.ops));
    if (!s.ops)
        return BATON_ENOMEM;
    int64_t *seen = calloc(n + 1, sizeof(*seen));
    if (!seen) {
        free(s.ops);
        return BATON_ENOMEM;
    }
    size_t nseen = observed_values(ops, n, seen);
    bool cas_failed = false;
    for (size_t i = 0; i < n; i++)
        cas_failed |= ops[i]->fn == CHAOS_CAS && ops[i]->out == CHAOS_OK && ops[i]->v == 0;
    for (size_t i = 0; i < n; i++) {
        struct lop l;
        if (!lop_make(ops[i], seen, nseen, &l))
            continue;
        /* An indeterminate op that could only leave an unobserved value matters to nothing
         * but an observed compare failure; without those, "never happened" is always a
         * valid choice for it, so it is left out. */
        if (!l.required && l.y == UNOBSERVED && !cas_failed)
            continue;
        s.ops[s.n++] = l;
        required += l.required;
    }
    free(seen);
    res->ops_searched = s.n;
    qsort(s.ops, s.n, sizeof(*s.ops), lop_cmp);
    s.nwords = (s.n + 63) / 64 + 1;
    s.bits = calloc(s.nwords, sizeof(uint64_t));
    s.stack = calloc(s.n + 1, sizeof(*s.stack));
    arena_init(&s.memo.arena, 1 << 20);
    s.memo.bytes_max = (size_t)1 << 30;
    if (s.bits && s.stack)
        rc = search_run(&s, required, steps_max, res);
    memo_free(&s.memo);
    free(s.stack);
    free(s.bits);
    free(s.ops);
    return rc;
}
