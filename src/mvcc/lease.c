/*
 * Leases: the replicated table (grant, revoke; persisted in LMDB's "lease" table) and the
 * leader-local expiry tracking (renew, promote, expired), as etcd's lessor.
 *
 * Why promote may give every lease a full TTL: expiry is decided by the leader alone and only
 * acts through a replicated revoke. A new leader does not know how long ago the old leader last
 * saw a keepalive, so it cannot know which leases are near expiry; restarting every TTL from the
 * moment it took over can only make a lease live longer than its TTL (by at most one TTL), never
 * shorter, so a client that keeps renewing within its TTL never loses its keys to a leader
 * change. Clocks are never compared across machines: each leader measures on its own clock.
 *
 * Attached keys are kept per lease as an array of owned key copies: detach is a linear search,
 * fine for the usual few keys per lease (a session's locks, a node's registration).
 */
#include "mvcc/internal.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t slot_of(const struct lease_table *t, int64_t id)
{
    return (size_t)mix64((uint64_t)id) & (t->cap - 1);
}

struct lease *lease_find(const struct lease_table *t, int64_t id)
{
    if (t->cap == 0)
        return NULL;
    for (size_t i = slot_of(t, id);; i = (i + 1) & (t->cap - 1)) {
        if (!t->slots[i])
            return NULL;
        if (t->slots[i]->id == id)
            return t->slots[i];
    }
}

static int table_grow(struct lease_table *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 64;
    struct lease **ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return BATON_ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        struct lease *l = t->slots[i];
        if (!l)
            continue;
        size_t j = (size_t)mix64((uint64_t)l->id) & (ncap - 1);
        while (ns[j])
            j = (j + 1) & (ncap - 1);
        ns[j] = l;
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

/* ---- Expiry heap -------------------------------------------------------------------------- */

static void heap_swap(struct lease_table *t, size_t a, size_t b)
{
    struct lease *x = t->heap[a];
    t->heap[a] = t->heap[b];
    t->heap[b] = x;
    t->heap[a]->heap_i = a;
    t->heap[b]->heap_i = b;
}

static void heap_up(struct lease_table *t, size_t i)
{
    while (i > 0 && t->heap[(i - 1) / 2]->heap_ms > t->heap[i]->heap_ms) {
        heap_swap(t, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct lease_table *t, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->heap_n && t->heap[l]->heap_ms < t->heap[m]->heap_ms)
            m = l;
        if (r < t->heap_n && t->heap[r]->heap_ms < t->heap[m]->heap_ms)
            m = r;
        if (m == i)
            return;
        heap_swap(t, i, m);
        i = m;
    }
}

static int heap_push(struct lease_table *t, struct lease *l)
{
    if (t->heap_n == t->heap_cap) {
        size_t nc = t->heap_cap ? t->heap_cap * 2 : 64;
        struct lease **nh = realloc(t->heap, nc * sizeof(*nh));
        if (!nh)
            return BATON_ENOMEM;
        t->heap = nh;
        t->heap_cap = nc;
    }
    l->heap_ms = l->expiry_ms;
    l->heap_i = t->heap_n;
    t->heap[t->heap_n++] = l;
    heap_up(t, l->heap_i);
    return 0;
}

static void heap_remove(struct lease_table *t, struct lease *l)
{
    size_t i = l->heap_i;
    if (i == SIZE_MAX)
        return;
    t->heap_n--;
    if (i != t->heap_n) {
        t->heap[i] = t->heap[t->heap_n];
        t->heap[i]->heap_i = i;
        heap_down(t, i);
        heap_up(t, i);
    }
    l->heap_i = SIZE_MAX;
}

/* Moves a lease's heap key up to its expiry (starting the expiry first if it has not started):
 * keys only grow, so it sifts down. */
static void heap_catch_up(struct lease_table *t, struct lease *l, uint64_t now_ms);

/* ---- Table ---------------------------------------------------------------------------------- */

int lease_insert(struct lease_table *t, int64_t id, int64_t ttl_s)
{
    if ((t->n + 1) * 2 > t->cap && table_grow(t) != 0)
        return BATON_ENOMEM;
    struct lease *l = calloc(1, sizeof(*l));
    if (!l)
        return BATON_ENOMEM;
    l->id = id;
    l->ttl_s = ttl_s;
    l->heap_i = SIZE_MAX;
    if (t->primary && heap_push(t, l) != 0) {
        free(l);
        return BATON_ENOMEM;
    }
    size_t i = slot_of(t, id);
    while (t->slots[i])
        i = (i + 1) & (t->cap - 1);
    t->slots[i] = l;
    t->n++;
    return 0;
}

static void lease_free(struct lease *l)
{
    for (size_t i = 0; i < l->nkeys; i++)
        free((void *)l->keys[i].p);
    free(l->keys);
    free(l);
}

/* Removes a lease from the table (backward-shift deletion keeps probe chains intact). */
static void lease_remove(struct lease_table *t, struct lease *l)
{
    heap_remove(t, l);
    size_t i = slot_of(t, l->id);
    while (t->slots[i] != l)
        i = (i + 1) & (t->cap - 1);
    t->slots[i] = NULL;
    for (size_t j = (i + 1) & (t->cap - 1); t->slots[j]; j = (j + 1) & (t->cap - 1)) {
        struct lease *m = t->slots[j];
        size_t home = slot_of(t, m->id);
        /* m may move to the hole at i when its home is not in (i, j]. */
        bool stay = (i < j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!stay) {
            t->slots[i] = m;
            t->slots[j] = NULL;
            i = j;
        }
    }
    t->n--;
    lease_free(l);
}

void lease_table_free(struct lease_table *t)
{
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i])
            lease_free(t->slots[i]);
    free(t->slots);
    free(t->heap);
    memset(t, 0, sizeof(*t));
}

int lease_attach(struct lease_table *t, int64_t id, const uint8_t *k, size_t klen)
{
    struct lease *l = lease_find(t, id);
    BATON_ASSERT(l);
    if (l->nkeys == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4;
        struct mvcc_bytes *nk = realloc(l->keys, nc * sizeof(*nk));
        if (!nk)
            return BATON_ENOMEM;
        l->keys = nk;
        l->cap = nc;
    }
    uint8_t *c = malloc(klen ? klen : 1);
    if (!c)
        return BATON_ENOMEM;
    memcpy(c, k, klen);
    l->keys[l->nkeys++] = (struct mvcc_bytes){c, klen};
    return 0;
}

void lease_detach(struct lease_table *t, int64_t id, const uint8_t *k, size_t klen)
{
    struct lease *l = lease_find(t, id);
    if (!l)
        return;
    for (size_t i = 0; i < l->nkeys; i++) {
        if (l->keys[i].len == klen && memcmp(l->keys[i].p, k, klen) == 0) {
            free((void *)l->keys[i].p);
            l->keys[i] = l->keys[--l->nkeys];
            return;
        }
    }
}

/* ---- Replicated operations ---------------------------------------------------------------------
 */

int mvcc_lease_grant(struct mvcc_store *s, int64_t id, int64_t ttl_s, int64_t *granted_id,
                     int64_t *granted_ttl_s)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    if (!s->wtxn)
        return BATON_EINVAL;
    if (s->nospace)
        return BATON_ENOSPACE;
    if (ttl_s > MVCC_MAX_LEASE_TTL)
        return MVCC_ELEASETTLTOOLARGE;
    if (id < 0)
        return BATON_EINVAL;
    if (ttl_s < s->cfg.min_lease_ttl_s)
        ttl_s = s->cfg.min_lease_ttl_s;
    struct lease_table *t = &s->leases;
    if (id == 0) {
        /* Derived from the Raft index (and a counter within it) so every member picks the same
         * id; mvcc_batch_set_index must be called per entry for this to hold. */
        if (t->gen_index != s->applied_index) {
            t->gen_index = s->applied_index;
            t->gen_seq = 0;
        }
        uint64_t seed = s->applied_index << 8 | t->gen_seq++;
        do {
            id = (int64_t)(mix64(seed++) & INT64_MAX);
        } while (id == 0 || lease_find(t, id));
    } else if (lease_find(t, id)) {
        return MVCC_ELEASEEXISTS;
    }
    uint8_t kb[8], vb[8];
    be64_put(kb, (uint64_t)id);
    be64_put(vb, (uint64_t)ttl_s);
    MDB_val k = {8, kb}, v = {8, vb};
    int rc = mdb_to_err(mdb_put(s->wtxn, s->dbi_lease, &k, &v, 0));
    if (rc == 0)
        rc = lease_insert(t, id, ttl_s);
    if (rc != 0) {
        mvcc_batch_abort(s);
        return rc;
    }
    *granted_id = id;
    if (granted_ttl_s)
        *granted_ttl_s = ttl_s;
    return 0;
}

static int key_sort_cmp(const void *a, const void *b)
{
    const struct mvcc_bytes *x = a, *y = b;
    return key_cmp(x->p, x->len, y->p, y->len);
}

int mvcc_lease_revoke(struct mvcc_store *s, int64_t id)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    if (!s->wtxn)
        return BATON_EINVAL;
    struct lease *l = lease_find(&s->leases, id);
    if (!l)
        return MVCC_ELEASENOTFOUND;
    /* Delete in key order so every member writes the same records (equal hashes). The copies
     * are needed because deleting detaches keys from l. */
    arena_reset(&s->scratch);
    size_t n = l->nkeys;
    struct mvcc_bytes *keys = arena_alloc(&s->scratch, (n ? n : 1) * sizeof(*keys));
    if (!keys)
        return BATON_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint8_t *c = arena_dup(&s->scratch, l->keys[i].p, l->keys[i].len ? l->keys[i].len : 1);
        if (!c)
            return BATON_ENOMEM;
        keys[i] = (struct mvcc_bytes){c, l->keys[i].len};
    }
    qsort(keys, n, sizeof(*keys), key_sort_cmp);
    int rc = store_delete_keys(s, keys, n);
    if (rc != 0)
        return rc;
    uint8_t kb[8];
    be64_put(kb, (uint64_t)id);
    MDB_val k = {8, kb};
    if ((rc = mdb_to_err(mdb_del(s->wtxn, s->dbi_lease, &k, NULL))) != 0) {
        mvcc_batch_abort(s);
        return rc;
    }
    lease_remove(&s->leases, l);
    return 0;
}

/* ---- Leader-local -------------------------------------------------------------------------------
 */

static uint64_t expiry_of(int64_t ttl_s, uint64_t now_ms)
{
    uint64_t ms = ttl_s > 0 ? (uint64_t)ttl_s * 1000 : 0;
    return now_ms + ms + 1; /* + 1: never 0, which means "not started" */
}

int mvcc_lease_renew(struct mvcc_store *s, int64_t id, uint64_t now_ms, int64_t *ttl_s)
{
    struct lease_table *t = &s->leases;
    struct lease *l = lease_find(t, id);
    if (!l)
        return MVCC_ELEASENOTFOUND;
    if (!t->primary)
        return BATON_ENOTLEADER;
    if (l->expiry_ms && l->expiry_ms <= now_ms)
        return MVCC_ELEASENOTFOUND; /* expired: its revoke is on its way, as etcd answers */
    /* The heap key stays behind: the expiry check catches it up when it comes due, so a
     * renewal costs no heap work (a lease renewed every TTL/3 is sifted once per TTL). */
    l->expiry_ms = expiry_of(l->ttl_s, now_ms);
    *ttl_s = l->ttl_s;
    return 0;
}

void mvcc_lease_promote(struct mvcc_store *s, uint64_t now_ms)
{
    struct lease_table *t = &s->leases;
    t->heap_n = 0;
    t->primary = true;
    for (size_t i = 0; i < t->cap; i++) {
        struct lease *l = t->slots[i];
        if (!l)
            continue;
        l->expiry_ms = expiry_of(l->ttl_s, now_ms);
        l->heap_i = SIZE_MAX;
        if (heap_push(t, l) != 0) {
            /* Out of memory: stay a non-primary lessor rather than track some leases only. */
            mvcc_lease_demote(s);
            return;
        }
    }
}

void mvcc_lease_demote(struct mvcc_store *s)
{
    struct lease_table *t = &s->leases;
    for (size_t i = 0; i < t->heap_n; i++)
        t->heap[i]->heap_i = SIZE_MAX;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i])
            t->slots[i]->expiry_ms = 0;
    t->heap_n = 0;
    t->primary = false;
}

static void heap_catch_up(struct lease_table *t, struct lease *l, uint64_t now_ms)
{
    if (l->expiry_ms == 0)
        l->expiry_ms = expiry_of(l->ttl_s, now_ms);
    l->heap_ms = l->expiry_ms;
    heap_down(t, l->heap_i);
}

/* A lease whose heap key is due but whose expiry moved on (renewed), or not started. */
static bool heap_behind(const struct lease *l, uint64_t now_ms)
{
    return l->heap_ms == 0 || (l->heap_ms <= now_ms && l->expiry_ms > l->heap_ms);
}

#define LEASE_CATCH_UP_MAX 256 /* below the top, per call */

int mvcc_lease_expired(struct mvcc_store *s, uint64_t now_ms, int64_t *ids, size_t max, size_t *n)
{
    struct lease_table *t = &s->leases;
    *n = 0;
    if (!t->primary)
        return 0;
    /* Leases granted since the last reading start their TTL now; renewed ones due at the top
     * take their real expiry. Each step raises a key, so this ends. */
    while (t->heap_n && heap_behind(t->heap[0], now_ms))
        heap_catch_up(t, t->heap[0], now_ms);
    /* Report without removing: the leader proposes revokes and they remove the leases. Only
     * the subtrees whose keys are due are walked (a key never exceeds its subtree's); renewed
     * leases met there are caught up afterwards, a bounded number per call. */
    struct lease *behind[LEASE_CATCH_UP_MAX];
    size_t nb = 0;
    size_t stack[2 * 64 + 2];
    size_t sp = 0;
    if (t->heap_n && t->heap[0]->heap_ms <= now_ms)
        stack[sp++] = 0;
    while (sp && *n < max && nb < LEASE_CATCH_UP_MAX) {
        size_t i = stack[--sp];
        struct lease *l = t->heap[i];
        if (heap_behind(l, now_ms))
            behind[nb++] = l;
        else
            ids[(*n)++] = l->id;
        for (size_t c = 2 * i + 1; c <= 2 * i + 2 && c < t->heap_n; c++)
            if (t->heap[c]->heap_ms <= now_ms && sp < BATON_ARRAY_LEN(stack))
                stack[sp++] = c;
    }
    for (size_t i = 0; i < nb; i++)
        heap_catch_up(t, behind[i], now_ms);
    return 0;
}

int mvcc_lease_ttl(struct mvcc_store *s, int64_t id, uint64_t now_ms, bool keys, struct arena *a,
                   struct mvcc_lease_info *info)
{
    struct lease *l = lease_find(&s->leases, id);
    if (!l)
        return MVCC_ELEASENOTFOUND;
    memset(info, 0, sizeof(*info));
    info->id = id;
    info->granted_ttl_s = l->ttl_s;
    if (!s->leases.primary)
        info->ttl_s = -1;
    else if (l->expiry_ms == 0)
        info->ttl_s = l->ttl_s;
    else if (l->expiry_ms <= now_ms)
        info->ttl_s = -1;
    else
        info->ttl_s = (int64_t)((l->expiry_ms - 1 - now_ms) / 1000);
    if (keys && l->nkeys) {
        info->keys = arena_alloc(a, l->nkeys * sizeof(*info->keys));
        if (!info->keys)
            return BATON_ENOMEM;
        for (size_t i = 0; i < l->nkeys; i++) {
            uint8_t *c = arena_dup(a, l->keys[i].p, l->keys[i].len ? l->keys[i].len : 1);
            if (!c)
                return BATON_ENOMEM;
            info->keys[i] = (struct mvcc_bytes){c, l->keys[i].len};
        }
        qsort(info->keys, l->nkeys, sizeof(*info->keys), key_sort_cmp);
        info->keys_len = l->nkeys;
    }
    return 0;
}

static int id_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int mvcc_lease_list(struct mvcc_store *s, struct arena *a, int64_t **ids, size_t *n)
{
    struct lease_table *t = &s->leases;
    *n = 0;
    *ids = arena_alloc(a, (t->n ? t->n : 1) * sizeof(**ids));
    if (!*ids)
        return BATON_ENOMEM;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i])
            (*ids)[(*n)++] = t->slots[i]->id;
    qsort(*ids, *n, sizeof(**ids), id_cmp);
    return 0;
}
