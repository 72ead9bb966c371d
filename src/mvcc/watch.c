/*
 * The watch hub. Watchers are synced (fed at each batch commit from the batch's own events) or
 * unsynced (behind: fed from LMDB by mvcc_watch_step in bounded steps). The hub never queues
 * events per watcher: when a watcher's consumer refuses a delivery (its bounded buffer is full),
 * the watcher just moves to the unsynced set with the revision it must resume from, and the
 * history is re-read from LMDB later. So memory does not grow with a slow watcher, and a slow
 * watcher never delays the others (as etcd's watchableStore with its victims).
 * Deliveries never split a revision across calls (a txn's events arrive together).
 */
#include "mvcc/internal.h"

#include <stdlib.h>
#include <string.h>

static void watcher_free(struct watcher *w)
{
    free((void *)w->key.p);
    free((void *)w->end.p);
    free(w);
}

void watch_free_all(struct mvcc_store *s)
{
    for (size_t i = 0; i < s->nw; i++)
        watcher_free(s->w[i]);
    free(s->w);
    s->w = NULL;
    s->nw = s->wcap = 0;
}

static int dup_bytes(struct mvcc_bytes in, struct mvcc_bytes *out)
{
    uint8_t *p = malloc(in.len ? in.len : 1);
    if (!p)
        return BATON_ENOMEM;
    if (in.len)
        memcpy(p, in.p, in.len);
    *out = (struct mvcc_bytes){p, in.len};
    return 0;
}

#define WATCHERS_MAX 100000

int mvcc_watch_create(struct mvcc_store *s, const struct mvcc_watch_req *req, mvcc_watch_fn fn,
                      void *ctx, int64_t *watch_id, int64_t *compact_rev)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    if (!fn || req->key.len == 0)
        return req->key.len == 0 ? MVCC_EEMPTYKEY : BATON_EINVAL;
    if (s->nw >= WATCHERS_MAX)
        return BATON_ETOOBIG;
    if (req->start_revision > 0 && req->start_revision < s->compact_rev) {
        if (compact_rev)
            *compact_rev = s->compact_rev;
        return BATON_ECOMPACTED;
    }
    if (s->nw == s->wcap) {
        size_t nc = s->wcap ? s->wcap * 2 : 16;
        struct watcher **nw = realloc(s->w, nc * sizeof(*nw));
        if (!nw)
            return BATON_ENOMEM;
        s->w = nw;
        s->wcap = nc;
    }
    struct watcher *w = calloc(1, sizeof(*w));
    if (!w)
        return BATON_ENOMEM;
    if (dup_bytes(req->key, &w->key) != 0 || dup_bytes(req->range_end, &w->end) != 0) {
        watcher_free(w);
        return BATON_ENOMEM;
    }
    w->id = s->next_watch_id++;
    w->no_put = req->no_put;
    w->no_delete = req->no_delete;
    w->prev_kv = req->prev_kv;
    w->fn = fn;
    w->ctx = ctx;
    if (req->start_revision <= 0 || req->start_revision > s->rev) {
        w->synced = true;
        w->min_rev = req->start_revision > 0 ? req->start_revision : s->rev + 1;
    } else {
        w->synced = false;
        w->min_rev = req->start_revision;
        w->next_rev = req->start_revision;
    }
    s->w[s->nw++] = w;
    *watch_id = w->id;
    return 0;
}

static size_t watch_find(struct mvcc_store *s, int64_t id)
{
    for (size_t i = 0; i < s->nw; i++)
        if (s->w[i]->id == id)
            return i;
    return SIZE_MAX;
}

static void watch_remove_at(struct mvcc_store *s, size_t i)
{
    watcher_free(s->w[i]);
    memmove(&s->w[i], &s->w[i + 1], (s->nw - i - 1) * sizeof(*s->w));
    s->nw--;
}

int mvcc_watch_cancel(struct mvcc_store *s, int64_t watch_id)
{
    size_t i = watch_find(s, watch_id);
    if (i == SIZE_MAX)
        return BATON_ENOTFOUND;
    watch_remove_at(s, i);
    return 0;
}

int mvcc_watch_progress(struct mvcc_store *s, int64_t watch_id)
{
    size_t i = watch_find(s, watch_id);
    if (i == SIZE_MAX)
        return BATON_ENOTFOUND;
    struct watcher *w = s->w[i];
    if (!w->synced)
        return BATON_EBUSY;
    struct mvcc_watch_batch b = {.watch_id = w->id, .header_revision = s->rev};
    return w->fn(w->ctx, &b);
}

size_t mvcc_watch_count(const struct mvcc_store *s)
{
    return s->nw;
}

size_t mvcc_watch_unsynced_count(const struct mvcc_store *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nw; i++)
        n += !s->w[i]->synced;
    return n;
}

int watch_record(struct mvcc_store *s, uint64_t rev, struct mvcc_bytes key, struct mvcc_bytes kv,
                 struct mvcc_bytes prev)
{
    if (s->nev == s->evcap) {
        size_t nc = s->evcap ? s->evcap * 2 : 64;
        struct pev *ne = realloc(s->ev, nc * sizeof(*ne));
        if (!ne)
            return BATON_ENOMEM;
        s->ev = ne;
        s->evcap = nc;
    }
    uint8_t *kc = arena_dup(&s->ev_arena, key.p, key.len ? key.len : 1);
    uint8_t *vc = arena_dup(&s->ev_arena, kv.p, kv.len ? kv.len : 1);
    if (!kc || !vc)
        return BATON_ENOMEM;
    s->ev[s->nev++] = (struct pev){rev, {kc, key.len}, {vc, kv.len}, prev};
    return 0;
}

static bool watcher_wants(const struct watcher *w, struct mvcc_bytes key, bool tomb)
{
    if (tomb ? w->no_delete : w->no_put)
        return false;
    return key_in_range(w->key, w->end, key.p, key.len);
}

/* Delivers events[0, n) to w in calls of at most watch_batch_max events, never splitting a
 * revision. Returns the index of the first event not taken (n when all were). */
static size_t deliver(struct mvcc_store *s, struct watcher *w, const struct mvcc_event *events,
                      const int64_t *revs, size_t n, int64_t header_rev)
{
    size_t from = 0;
    while (from < n) {
        size_t to = from;
        while (to < n && (to - from < s->cfg.watch_batch_max || revs[to] == revs[to - 1]))
            to++;
        struct mvcc_watch_batch b = {.watch_id = w->id,
                                     .header_revision = header_rev,
                                     .events = events + from,
                                     .events_len = to - from};
        if (w->fn(w->ctx, &b) != 0)
            return from;
        from = to;
    }
    return n;
}

/* Orders event indexes by key, then by position (revision order) for equal keys. */
static int ev_key_cmp(const void *pa, const void *pb, void *ctx)
{
    const struct pev *ev = ctx;
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    int c = key_cmp(ev[a].key.p, ev[a].key.len, ev[b].key.p, ev[b].key.len);
    return c ? c : (a > b) - (a < b);
}

static int u32_cmp(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    return (a > b) - (a < b);
}

/* First position in the key-sorted order whose key is >= k. */
static size_t ev_lower(const struct pev *ev, const uint32_t *order, size_t n, struct mvcc_bytes k)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct pev *e = &ev[order[mid]];
        if (key_cmp(e->key.p, e->key.len, k.p, k.len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Fan-out at commit. The batch's events are sorted by key once; each synced watcher then finds
 * its events with a binary search and a walk over its own range, so the cost is
 * O(E log E + W log E + matches) rather than O(W × E). */
void watch_deliver_batch(struct mvcc_store *s)
{
    if (s->nev == 0 || s->nw == 0)
        return;
    size_t nev = s->nev;
    struct mvcc_event *evs = malloc(nev * sizeof(*evs));
    int64_t *revs = malloc(nev * sizeof(*revs));
    uint32_t *order = malloc(nev * sizeof(*order)), *mine = malloc(nev * sizeof(*mine));
    if (!evs || !revs || !order || !mine || nev > UINT32_MAX) {
        /* Cannot fan out now: every synced watcher catches up from LMDB instead. */
        for (size_t i = 0; i < s->nw; i++) {
            if (s->w[i]->synced) {
                s->w[i]->synced = false;
                s->w[i]->next_rev = rev_main(s->ev[0].rev);
            }
        }
        goto out;
    }
    for (size_t j = 0; j < nev; j++)
        order[j] = (uint32_t)j;
    qsort_r(order, nev, sizeof(*order), ev_key_cmp, s->ev);
    for (size_t i = 0; i < s->nw; i++) {
        struct watcher *w = s->w[i];
        if (!w->synced)
            continue;
        size_t m = 0;
        for (size_t p = ev_lower(s->ev, order, nev, w->key); p < nev; p++) {
            const struct pev *e = &s->ev[order[p]];
            if (!key_in_range(w->key, w->end, e->key.p, e->key.len))
                break;
            if (rev_main(e->rev) < w->min_rev || (rev_tomb(e->rev) ? w->no_delete : w->no_put))
                continue;
            mine[m++] = order[p];
        }
        if (m == 0)
            continue;
        qsort(mine, m, sizeof(*mine), u32_cmp); /* back to revision order */
        for (size_t n = 0; n < m; n++) {
            const struct pev *e = &s->ev[mine[n]];
            evs[n] = (struct mvcc_event){
                .type = rev_tomb(e->rev) ? MVCC_EVENT_DELETE : MVCC_EVENT_PUT,
                .kv = e->kv.p,
                .kv_len = e->kv.len,
                .prev_kv = w->prev_kv && e->prev.p ? e->prev.p : NULL,
                .prev_kv_len = w->prev_kv && e->prev.p ? e->prev.len : 0,
            };
            revs[n] = rev_main(e->rev);
        }
        size_t taken = deliver(s, w, evs, revs, m, s->rev);
        if (taken < m) {
            w->synced = false;
            w->next_rev = revs[taken];
        }
    }
out:
    free(evs);
    free(revs);
    free(order);
    free(mine);
}

/* One catch-up pass for w: reads at most *budget records from next_rev on. */
static int catch_up(struct mvcc_store *s, MDB_txn *txn, struct watcher *w, size_t *budget)
{
    if (w->next_rev < s->compact_rev) {
        struct mvcc_watch_batch b = {
            .watch_id = w->id, .header_revision = s->rev, .compact_revision = s->compact_rev};
        w->fn(w->ctx, &b);
        return 1; /* remove */
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->dbi_kv, &cur);
    if (rc != 0)
        return mdb_to_err(rc);
    struct arena *a = &s->scratch;
    arena_reset(a);
    size_t n = 0, cap = 0;
    struct mvcc_event *evs = NULL;
    int64_t *revs = NULL;
    uint8_t kb[REVKEY_LEN];
    MDB_val k = {revkey_put(kb, rev_pack(w->next_rev, 0, false)), kb}, v;
    int64_t stop_rev = s->rev + 1, last_main = 0;
    int err = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t r;
        struct kvfields f;
        if ((err = revkey_get(k.mv_data, k.mv_size, &r)) != 0 ||
            (err = kv_decode(v.mv_data, v.mv_size, &f)) != 0)
            break;
        if (rev_main(r) != last_main && *budget == 0) {
            stop_rev = rev_main(r);
            break;
        }
        last_main = rev_main(r);
        if (*budget)
            (*budget)--;
        if (!watcher_wants(w, f.key, rev_tomb(r)))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            struct mvcc_event *ne = arena_alloc(a, nc * sizeof(*ne));
            int64_t *nr = arena_alloc(a, nc * sizeof(*nr));
            if (!ne || !nr) {
                err = BATON_ENOMEM;
                break;
            }
            if (n) {
                memcpy(ne, evs, n * sizeof(*ne));
                memcpy(nr, revs, n * sizeof(*nr));
            }
            evs = ne;
            revs = nr;
            cap = nc;
        }
        struct mvcc_event *e = &evs[n];
        memset(e, 0, sizeof(*e));
        e->type = rev_tomb(r) ? MVCC_EVENT_DELETE : MVCC_EVENT_PUT;
        if (rev_tomb(r)) {
            struct kvfields ev = {.key = f.key, .mod_revision = rev_main(r)};
            size_t en = kv_encoded_len(&ev);
            uint8_t *ep = arena_alloc(a, en);
            if (!ep) {
                err = BATON_ENOMEM;
                break;
            }
            kv_encode(&ev, ep);
            e->kv = ep;
            e->kv_len = en;
        } else {
            e->kv = v.mv_data;
            e->kv_len = v.mv_size;
        }
        if (w->prev_kv) {
            struct kent *ke = kidx_get(&s->idx, f.key.p, f.key.len);
            uint64_t pr = ke ? kent_before(ke, r) : 0;
            struct mvcc_bytes pv;
            if (pr && !rev_tomb(pr) && store_get_rec(s, txn, pr, &pv) == 0) {
                e->prev_kv = pv.p;
                e->prev_kv_len = pv.len;
            }
        }
        revs[n++] = rev_main(r);
    }
    mdb_cursor_close(cur);
    if (!err && rc != 0 && rc != MDB_NOTFOUND)
        err = mdb_to_err(rc);
    if (err)
        return err;
    size_t taken = deliver(s, w, evs, revs, n, s->rev);
    if (taken < n) {
        w->next_rev = revs[taken];
        return 0;
    }
    w->next_rev = stop_rev;
    if (w->next_rev > s->rev)
        w->synced = true;
    return 0;
}

int mvcc_watch_step(struct mvcc_store *s, size_t max_events, bool *pending)
{
    *pending = false;
    if (s->poisoned)
        return BATON_ECLOSED;
    if (s->wtxn)
        return BATON_EBUSY;
    size_t budget = max_events ? max_events : 1;
    MDB_txn *txn = NULL;
    int rc = 0;
    /* Round robin from where the last step stopped, so no watcher starves. */
    for (size_t k = 0; k < s->nw && budget; k++) {
        size_t i = (s->w_rr + k) % s->nw;
        struct watcher *w = s->w[i];
        if (w->synced)
            continue;
        if (!txn && (rc = store_read_txn(s, &txn)) != 0)
            return rc;
        rc = catch_up(s, txn, w, &budget);
        if (rc == 1) {
            watch_remove_at(s, i);
            k--;
            rc = 0;
            continue;
        }
        if (rc != 0)
            break;
        s->w_rr = i + 1;
    }
    if (txn)
        store_read_done(s, txn);
    *pending = mvcc_watch_unsynced_count(s) > 0;
    return rc;
}
