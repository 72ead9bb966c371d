/*
 * The store: LMDB environment, meta, batches, Range/Put/DeleteRange/Txn, compaction, hash, and
 * the auxiliary table. Leases live in lease.c, the watch hub in watch.c, defragmentation in
 * defrag.c.
 */
#include "mvcc/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define META_APPLIED_INDEX "applied_index"
#define META_APPLIED_TERM  "applied_term"
#define META_REV           "rev"
#define META_COMPACT_REV   "compact_rev"
#define META_COMPACT_DONE  "compact_done_rev"
#define META_ALARM_NOSPACE "alarm_nospace"

const char *mvcc_strerror(int err)
{
    switch (err) {
    case BATON_ECOMPACTED:
        return "etcdserver: mvcc: required revision has been compacted";
    case BATON_EFUTURE:
        return "etcdserver: mvcc: required revision is a future revision";
    case BATON_ENOSPACE:
        return "etcdserver: mvcc: database space exceeded";
    case MVCC_EDUPKEY:
        return "etcdserver: duplicate key given in txn request";
    case MVCC_ELEASENOTFOUND:
        return "etcdserver: requested lease not found";
    case MVCC_EKEYNOTFOUND:
        return "etcdserver: key not found";
    case MVCC_EVALUEPROVIDED:
        return "etcdserver: value is provided";
    case MVCC_ELEASEPROVIDED:
        return "etcdserver: lease is provided";
    case MVCC_EEMPTYKEY:
        return "etcdserver: key is not provided";
    case MVCC_ELEASEEXISTS:
        return "etcdserver: lease already exists";
    case MVCC_ELEASETTLTOOLARGE:
        return "etcdserver: too large lease TTL";
    case MVCC_ETOOMANYOPS:
        return "etcdserver: too many operations in txn request";
    default:
        return baton_strerror(err);
    }
}

int mdb_to_err(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return BATON_ENOTFOUND;
    case MDB_MAP_FULL:
        return BATON_ENOSPACE;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_BAD_TXN:
    case MDB_BAD_VALSIZE:
        return BATON_ECORRUPT;
    default:
        return rc > 0 ? -rc : BATON_EINVAL;
    }
}

void mvcc_config_default(struct mvcc_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->quota_bytes = 2ull << 30;
    cfg->max_txn_ops = 128;
    cfg->watch_batch_max = 1000;
}

/* ---- Read transactions -------------------------------------------------------------------- */

int store_read_txn(struct mvcc_store *s, MDB_txn **txn)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    if (s->wtxn) {
        *txn = s->wtxn;
        return 0;
    }
    int rc = s->rtxn ? mdb_txn_renew(s->rtxn) : mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
    if (rc != 0)
        return mdb_to_err(rc);
    *txn = s->rtxn;
    return 0;
}

void store_read_done(struct mvcc_store *s, MDB_txn *txn)
{
    if (txn == s->rtxn)
        mdb_txn_reset(s->rtxn);
}

int store_get_rec(struct mvcc_store *s, MDB_txn *txn, uint64_t rev, struct mvcc_bytes *val)
{
    uint8_t kb[REVKEY_LEN];
    MDB_val k = {revkey_put(kb, rev), kb}, v;
    int rc = mdb_get(txn, s->dbi_kv, &k, &v);
    if (rc == MDB_NOTFOUND)
        return BATON_ECORRUPT; /* the index names a record LMDB does not have */
    if (rc != 0)
        return mdb_to_err(rc);
    val->p = v.mv_data;
    val->len = v.mv_size;
    return 0;
}

/* ---- Meta ----------------------------------------------------------------------------------- */

static int meta_put_u64(struct mvcc_store *s, const char *name, uint64_t v)
{
    uint8_t b[8];
    be64_put(b, v);
    MDB_val k = {strlen(name), (void *)name}, d = {8, b};
    return mdb_to_err(mdb_put(s->wtxn, s->dbi_meta, &k, &d, 0));
}

static int meta_get_u64(struct mvcc_store *s, MDB_txn *txn, const char *name, uint64_t *v)
{
    MDB_val k = {strlen(name), (void *)name}, d;
    int rc = mdb_get(txn, s->dbi_meta, &k, &d);
    if (rc == MDB_NOTFOUND) {
        *v = 0;
        return 0;
    }
    if (rc != 0)
        return mdb_to_err(rc);
    if (d.mv_size != 8)
        return BATON_ECORRUPT;
    *v = be64_get(d.mv_data);
    return 0;
}

/* ---- Open / close --------------------------------------------------------------------------- */

static void set_err(char *errbuf, size_t len, const char *path, const char *what, int rc)
{
    if (errbuf && len)
        snprintf(errbuf, len, "%s: %s: %s", path, what, mvcc_strerror(rc));
}

/* Scans every record into the index; tracks the highest revision. */
static int store_rebuild(struct mvcc_store *s, MDB_txn *txn, int64_t *max_main)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->dbi_kv, &cur);
    if (rc != 0)
        return mdb_to_err(rc);
    MDB_val k, v;
    uint64_t last = 0;
    int err = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t r;
        struct kvfields f;
        if ((err = revkey_get(k.mv_data, k.mv_size, &r)) != 0 ||
            (err = kv_decode(v.mv_data, v.mv_size, &f)) != 0)
            break;
        if (f.key.len == 0 || (last && (r | 1) == (last | 1))) {
            err = BATON_ECORRUPT;
            break;
        }
        if ((err = kidx_add(&s->idx, f.key.p, f.key.len, r)) != 0) {
            if (err == BATON_EINVAL)
                err = BATON_ECORRUPT; /* revisions out of order on disk */
            break;
        }
        last = r;
    }
    mdb_cursor_close(cur);
    if (err)
        return err;
    if (rc != MDB_NOTFOUND)
        return mdb_to_err(rc);
    *max_main = last ? rev_main(last) : 0;
    return 0;
}

/* Restores leases and attaches every live key that names one. */
static int store_restore_leases(struct mvcc_store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->dbi_lease, &cur);
    if (rc != 0)
        return mdb_to_err(rc);
    MDB_val k, v;
    int err = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || v.mv_size != 8) {
            err = BATON_ECORRUPT;
            break;
        }
        if ((err = lease_insert(&s->leases, (int64_t)be64_get(k.mv_data),
                                (int64_t)be64_get(v.mv_data))) != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (err || s->leases.n == 0)
        return err;
    for (struct kpos p = kidx_seek(&s->idx, NULL, 0); kidx_at(&s->idx, p);
         p = kidx_next(&s->idx, p)) {
        struct kent *e = kidx_at(&s->idx, p);
        uint64_t r = kent_last(e);
        if (rev_tomb(r))
            continue;
        struct mvcc_bytes val;
        struct kvfields f;
        if ((err = store_get_rec(s, txn, r, &val)) != 0 ||
            (err = kv_decode(val.p, val.len, &f)) != 0)
            return err;
        if (f.lease == 0)
            continue;
        if (!lease_find(&s->leases, f.lease))
            return BATON_ECORRUPT; /* a live key names a lease that is gone */
        if ((err = lease_attach(&s->leases, f.lease, e->data, e->klen)) != 0)
            return err;
    }
    return 0;
}

static int store_open_dbis(struct mvcc_store *s, unsigned flags)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return mdb_to_err(rc);
    if ((rc = mdb_dbi_open(txn, "kv", flags, &s->dbi_kv)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", flags, &s->dbi_meta)) != 0 ||
        (rc = mdb_dbi_open(txn, "lease", flags, &s->dbi_lease)) != 0 ||
        (rc = mdb_dbi_open(txn, "aux", flags, &s->dbi_aux)) != 0) {
        mdb_txn_abort(txn);
        return mdb_to_err(rc);
    }
    return mdb_to_err(mdb_txn_commit(txn));
}

int store_verify_file(const char *path, char *why, size_t why_len);
int store_env_open(struct mvcc_store *s);
int store_env_open(struct mvcc_store *s)
{
    int rc = mdb_env_create(&s->env);
    if (rc != 0)
        return mdb_to_err(rc);
    if ((rc = mdb_env_set_mapsize(s->env, s->cfg.map_size_bytes)) != 0 ||
        (rc = mdb_env_set_maxdbs(s->env, 8)) != 0 ||
        (rc =
             mdb_env_open(s->env, s->path,
                          MDB_NOSUBDIR | MDB_NOTLS | (s->cfg.no_sync ? MDB_NOSYNC : MDB_NOMETASYNC),
                          0644)) != 0) {
        mdb_env_close(s->env);
        s->env = NULL;
        return mdb_to_err(rc);
    }
    if ((rc = store_open_dbis(s, MDB_CREATE)) != 0) {
        mdb_env_close(s->env);
        s->env = NULL;
    }
    return rc;
}

static int store_load(struct mvcc_store *s)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return mdb_to_err(rc);
    uint64_t idx, term, rev, crev, cdone, alarm;
    int64_t max_main = 0;
    int err;
    if ((err = meta_get_u64(s, txn, META_APPLIED_INDEX, &idx)) != 0 ||
        (err = meta_get_u64(s, txn, META_APPLIED_TERM, &term)) != 0 ||
        (err = meta_get_u64(s, txn, META_REV, &rev)) != 0 ||
        (err = meta_get_u64(s, txn, META_COMPACT_REV, &crev)) != 0 ||
        (err = meta_get_u64(s, txn, META_COMPACT_DONE, &cdone)) != 0 ||
        (err = meta_get_u64(s, txn, META_ALARM_NOSPACE, &alarm)) != 0 ||
        (err = store_rebuild(s, txn, &max_main)) != 0)
        goto out;
    if ((int64_t)rev < max_main || crev > rev || cdone > crev || rev >= (uint64_t)REV_MAIN_MAX) {
        err = BATON_ECORRUPT;
        goto out;
    }
    s->applied_index = idx;
    s->applied_term = term;
    /* A fresh store is at revision 1, as etcd's: the first write gets revision 2. */
    s->rev = rev ? (int64_t)rev : 1;
    s->compact_rev = (int64_t)crev;
    s->compact_done_rev = (int64_t)cdone;
    s->nospace = alarm != 0;
    if (s->compact_rev > 0)
        kidx_compact(&s->idx, s->compact_rev);
    err = store_restore_leases(s, txn);
out:
    mdb_txn_abort(txn);
    return err;
}

int mvcc_open(const struct mvcc_config *cfg, struct mvcc_store **out, char *errbuf,
              size_t errbuf_len)
{
    if (!cfg || !cfg->path || !out)
        return BATON_EINVAL;
    struct mvcc_store *s = calloc(1, sizeof(*s));
    if (!s)
        return BATON_ENOMEM;
    s->cfg = *cfg;
    if (!s->cfg.quota_bytes)
        s->cfg.quota_bytes = 2ull << 30;
    if (!s->cfg.map_size_bytes) {
        uint64_t head = BATON_MAX(s->cfg.quota_bytes / 2, 64ull << 20);
        s->cfg.map_size_bytes = s->cfg.quota_bytes + head;
    }
    if (!s->cfg.max_txn_ops)
        s->cfg.max_txn_ops = 128;
    if (!s->cfg.watch_batch_max)
        s->cfg.watch_batch_max = 1000;
    s->path = strdup(cfg->path);
    s->cfg.path = s->path;
    kidx_init(&s->idx);
    arena_init(&s->ev_arena, 64 << 10);
    arena_init(&s->scratch, 64 << 10);
    s->next_watch_id = 1;
    if (!s->path) {
        free(s);
        return BATON_ENOMEM;
    }
    /* A copy left by a defragmentation interrupted before its switch is garbage. */
    char stale[4200];
    if ((size_t)snprintf(stale, sizeof(stale), "%s.defrag", s->path) < sizeof(stale))
        unlink(stale);
    char why[160] = "";
    int rc = store_verify_file(s->path, why, sizeof(why));
    if (rc != 0) {
        if (errbuf && errbuf_len)
            snprintf(errbuf, errbuf_len, "%s: structural check: %s: %s", s->path,
                     why[0] ? why : "unreadable", mvcc_strerror(rc));
        mvcc_close(s);
        return rc;
    }
    rc = store_env_open(s);
    if (rc != 0) {
        set_err(errbuf, errbuf_len, s->path, "opening LMDB file", rc);
        mvcc_close(s);
        return rc;
    }
    if ((rc = store_load(s)) != 0) {
        set_err(errbuf, errbuf_len, s->path, "loading data (index rebuild)", rc);
        mvcc_close(s);
        return rc;
    }
    log_write(s->cfg.log, LOG_INFO,
              "msg=\"mvcc opened\" path=%s rev=%lld compact_rev=%lld applied_index=%llu keys=%zu",
              s->path, (long long)s->rev, (long long)s->compact_rev,
              (unsigned long long)s->applied_index, s->idx.nkeys);
    *out = s;
    return 0;
}

void mvcc_close(struct mvcc_store *s)
{
    if (!s)
        return;
    if (s->defrag_running)
        pthread_join(s->defrag_thread, NULL);
    if (s->wtxn)
        mdb_txn_abort(s->wtxn);
    if (s->rtxn)
        mdb_txn_abort(s->rtxn);
    if (s->env && s->cfg.no_sync && !s->poisoned)
        (void)mdb_env_sync(s->env, 1); /* a clean close leaves a file that survives a reboot */
    if (s->env)
        mdb_env_close(s->env);
    kidx_free(&s->idx);
    lease_table_free(&s->leases);
    watch_free_all(s);
    arena_free(&s->ev_arena);
    arena_free(&s->scratch);
    free(s->ev);
    free(s->path);
    free(s);
}

uint64_t mvcc_applied_index(const struct mvcc_store *s)
{
    return s->applied_index;
}
uint64_t mvcc_applied_term(const struct mvcc_store *s)
{
    return s->applied_term;
}
int64_t mvcc_rev(const struct mvcc_store *s)
{
    return s->rev;
}
int64_t mvcc_compact_rev(const struct mvcc_store *s)
{
    return s->compact_rev;
}
size_t mvcc_key_count(const struct mvcc_store *s)
{
    return s->idx.nkeys;
}
size_t mvcc_index_bytes(const struct mvcc_store *s)
{
    return s->idx.bytes;
}

int mvcc_db_size(struct mvcc_store *s, uint64_t *in_use_bytes, uint64_t *file_bytes)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc = mdb_env_info(s->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(s->env, &st);
    if (rc != 0)
        return mdb_to_err(rc);
    if (in_use_bytes)
        *in_use_bytes = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
    if (file_bytes) {
        mdb_filehandle_t fd;
        struct stat fst;
        if ((rc = mdb_env_get_fd(s->env, &fd)) != 0)
            return mdb_to_err(rc);
        if (fstat(fd, &fst) != 0)
            return -errno;
        *file_bytes = (uint64_t)fst.st_size;
    }
    return 0;
}

int mvcc_sync(struct mvcc_store *s)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    return mdb_to_err(mdb_env_sync(s->env, 1));
}

/* ---- Batches -------------------------------------------------------------------------------- */

int mvcc_batch_begin(struct mvcc_store *s, uint64_t index, uint64_t term)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    if (s->wtxn || index < s->applied_index)
        return BATON_EINVAL;
    if (s->defrag_running)
        return BATON_EBUSY;
    int rc = mdb_txn_begin(s->env, NULL, 0, &s->wtxn);
    if (rc != 0)
        return mdb_to_err(rc);
    s->applied_index = index;
    s->applied_term = term;
    arena_reset(&s->ev_arena);
    s->nev = 0;
    return 0;
}

int mvcc_batch_set_index(struct mvcc_store *s, uint64_t index, uint64_t term)
{
    if (!s->wtxn || index < s->applied_index)
        return BATON_EINVAL;
    s->applied_index = index;
    s->applied_term = term;
    return 0;
}

static void store_poison(struct mvcc_store *s, int rc)
{
    log_write(s->cfg.log, LOG_ERROR,
              "msg=\"mvcc write failed; handle poisoned\" path=%s err=\"%s\"", s->path,
              mvcc_strerror(rc));
    if (s->wtxn)
        mdb_txn_abort(s->wtxn);
    s->wtxn = NULL;
    s->poisoned = true;
}

/* LMDB reports a short write as EIO (mdb_page_flush), which is how a full file system usually
 * shows itself: call it what it is when the store's file system has no room left. */
static int commit_err(const struct mvcc_store *s, int rc)
{
    struct statvfs v;
    if (rc == -EIO && statvfs(s->path, &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize < (1u << 20))
        return -ENOSPC;
    return rc;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int mvcc_batch_commit(struct mvcc_store *s)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    if (!s->wtxn)
        return BATON_EINVAL;
    int rc;
    if ((rc = meta_put_u64(s, META_APPLIED_INDEX, s->applied_index)) != 0 ||
        (rc = meta_put_u64(s, META_APPLIED_TERM, s->applied_term)) != 0 ||
        (rc = meta_put_u64(s, META_REV, (uint64_t)s->rev)) != 0 ||
        (rc = meta_put_u64(s, META_COMPACT_REV, (uint64_t)s->compact_rev)) != 0 ||
        (rc = meta_put_u64(s, META_ALARM_NOSPACE, s->nospace)) != 0) {
        store_poison(s, rc);
        return rc;
    }
    /* Timed for the backend commit histogram; the clock only feeds metrics. */
    uint64_t start_ns = mono_ns();
    rc = mdb_txn_commit(s->wtxn);
    s->wtxn = NULL;
    s->last_commit_ns = mono_ns() - start_ns;
    if (rc != 0) {
        rc = commit_err(s, mdb_to_err(rc));
        store_poison(s, rc);
        return rc;
    }
    watch_deliver_batch(s);
    return 0;
}

uint64_t mvcc_last_commit_ns(const struct mvcc_store *s)
{
    return s->last_commit_ns;
}

size_t mvcc_lease_count(const struct mvcc_store *s)
{
    return s->leases.n;
}

void mvcc_batch_abort(struct mvcc_store *s)
{
    if (s->wtxn)
        store_poison(s, BATON_ECLOSED);
}

static int write_check(struct mvcc_store *s)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    if (!s->wtxn)
        return BATON_EINVAL;
    return s->rev + 1 < REV_MAIN_MAX ? 0 : BATON_ETOOBIG;
}

/* Whether n more changes fit in the revision being written. */
static int sub_room(struct mvcc_store *s, size_t n)
{
    return (uint64_t)s->op_sub + n < (uint64_t)REV_SUB_MAX ? 0 : BATON_ETOOBIG;
}

/* ---- KeyValues into the caller's arena ---------------------------------------------------- */

/* borrow: point into packed (the mapped record) instead of copying it, when it needs no
 * re-encoding. */
static int kv_to_arena(struct arena *a, struct mvcc_bytes packed, bool keys_only, bool borrow,
                       struct mvcc_kv *out)
{
    struct kvfields f;
    int rc = kv_decode(packed.p, packed.len, &f);
    if (rc != 0)
        return rc;
    uint8_t *p;
    size_t n;
    if (keys_only && f.value.len) {
        f.value.len = 0;
        n = kv_encoded_len(&f);
        if (!(p = arena_alloc(a, n ? n : 1)))
            return BATON_ENOMEM;
        kv_encode(&f, p);
        BATON_ASSERT(kv_decode(p, n, &f) == 0);
    } else if (borrow) {
        n = packed.len;
        p = (uint8_t *)packed.p;
    } else {
        n = packed.len;
        if (!(p = arena_alloc(a, n ? n : 1)))
            return BATON_ENOMEM;
        memcpy(p, packed.p, n);
        /* Same bytes: move the views into the copy instead of decoding again. */
        if (f.key.len)
            f.key.p = p + (f.key.p - packed.p);
        if (f.value.len)
            f.value.p = p + (f.value.p - packed.p);
    }
    out->packed = p;
    out->packed_len = n;
    out->key = f.key;
    out->value = f.value;
    out->create_revision = f.create_revision;
    out->mod_revision = f.mod_revision;
    out->version = f.version;
    out->lease = f.lease;
    return 0;
}

/* ---- Range ----------------------------------------------------------------------------------- */

struct hit {
    struct kent *e;
    uint64_t rev;
};

/* Calls visit for every key live at rev inside [key, end), in key order; stops when visit
 * returns non-zero (returned). */
typedef int (*visit_fn)(void *ctx, struct kent *e, uint64_t r);
static int index_walk(struct mvcc_store *s, struct mvcc_bytes key, struct mvcc_bytes end,
                      int64_t rev, visit_fn visit, void *ctx)
{
    if (end.len == 0) {
        struct kent *e = kidx_get(&s->idx, key.p, key.len);
        uint64_t r = e ? kent_at(e, rev) : 0;
        return r && !rev_tomb(r) ? visit(ctx, e, r) : 0;
    }
    for (struct kpos p = kidx_seek(&s->idx, key.p, key.len); kidx_at(&s->idx, p);
         p = kidx_next(&s->idx, p)) {
        struct kent *e = kidx_at(&s->idx, p);
        if (!key_in_range(key, end, e->data, e->klen))
            break;
        uint64_t r = kent_at(e, rev);
        if (r && !rev_tomb(r)) {
            int rc = visit(ctx, e, r);
            if (rc)
                return rc;
        }
    }
    return 0;
}

struct collect {
    struct arena *a;
    struct hit *hits;
    size_t n, cap, want; /* want: collect at most this many (SIZE_MAX: all) */
    int64_t count;
};

static int collect_visit(void *ctx, struct kent *e, uint64_t r)
{
    struct collect *c = ctx;
    c->count++;
    if (c->n >= c->want)
        return 0;
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 16;
        struct hit *h = arena_alloc(c->a, ncap * sizeof(*h));
        if (!h)
            return BATON_ENOMEM;
        if (c->n)
            memcpy(h, c->hits, c->n * sizeof(*h));
        c->hits = h;
        c->cap = ncap;
    }
    c->hits[c->n].e = e;
    c->hits[c->n].rev = r;
    c->n++;
    return 0;
}

static int sort_cmp(const void *pa, const void *pb, void *ctx)
{
    const struct mvcc_kv *a = pa, *b = pb;
    const struct mvcc_range_req *req = ctx;
    int c = 0;
    switch (req->sort_target) {
    case MVCC_SORT_KEY:
        break;
    case MVCC_SORT_VERSION:
        c = (a->version > b->version) - (a->version < b->version);
        break;
    case MVCC_SORT_CREATE:
        c = (a->create_revision > b->create_revision) - (a->create_revision < b->create_revision);
        break;
    case MVCC_SORT_MOD:
        c = (a->mod_revision > b->mod_revision) - (a->mod_revision < b->mod_revision);
        break;
    case MVCC_SORT_VALUE:
        c = key_cmp(a->value.p, a->value.len, b->value.p, b->value.len);
        break;
    }
    if (req->sort_target == MVCC_SORT_KEY)
        c = key_cmp(a->key.p, a->key.len, b->key.p, b->key.len);
    if (req->sort_order == MVCC_SORT_DESCEND)
        c = -c;
    /* Ties keep key order, as Go's sort does on etcd's key-ordered input at these sizes. */
    return c ? c : key_cmp(a->key.p, a->key.len, b->key.p, b->key.len);
}

static bool kv_filtered_out(const struct mvcc_range_req *r, const struct mvcc_kv *kv)
{
    return (r->max_mod_revision && kv->mod_revision > r->max_mod_revision) ||
           (r->min_mod_revision && kv->mod_revision < r->min_mod_revision) ||
           (r->max_create_revision && kv->create_revision > r->max_create_revision) ||
           (r->min_create_revision && kv->create_revision < r->min_create_revision);
}

/* Validates a range's revision against the state that reads see (cur). */
static int range_check(struct mvcc_store *s, const struct mvcc_range_req *req, int64_t cur)
{
    if (req->key.len == 0)
        return MVCC_EEMPTYKEY;
    if (req->revision > cur)
        return BATON_EFUTURE;
    if (req->revision > 0 && req->revision < s->compact_rev)
        return BATON_ECOMPACTED;
    return 0;
}

/* Range with reads seeing revision cur (etcd's rangeKeys). */
static int range_txn(struct mvcc_store *s, MDB_txn *txn, const struct mvcc_range_req *req,
                     int64_t cur, bool borrow, struct arena *a, struct mvcc_range_resp *resp)
{
    memset(resp, 0, sizeof(*resp));
    int rc = range_check(s, req, cur);
    if (rc != 0)
        return rc;
    int64_t rev = req->revision > 0 ? req->revision : cur;
    bool fetch_all = req->sort_order != MVCC_SORT_NONE || req->min_mod_revision ||
                     req->max_mod_revision || req->min_create_revision || req->max_create_revision;
    struct collect c = {.a = &s->scratch, .want = SIZE_MAX};
    if (req->count_only)
        c.want = 0;
    else if (!fetch_all && req->limit > 0)
        c.want = (size_t)req->limit + 1;
    if ((rc = index_walk(s, req->key, req->range_end, rev, collect_visit, &c)) != 0)
        return rc;
    resp->header_revision = cur;
    resp->count = c.count;
    if (c.n == 0)
        return 0;
    resp->kvs = arena_alloc(a, c.n * sizeof(*resp->kvs));
    if (!resp->kvs)
        return BATON_ENOMEM;
    size_t n = 0;
    bool strip = req->keys_only && req->sort_target != MVCC_SORT_VALUE;
    for (size_t i = 0; i < c.n; i++) {
        struct mvcc_bytes val;
        if ((rc = store_get_rec(s, txn, c.hits[i].rev, &val)) != 0 ||
            (rc = kv_to_arena(a, val, strip, borrow, &resp->kvs[n])) != 0)
            return rc;
        if (!kv_filtered_out(req, &resp->kvs[n]))
            n++;
    }
    enum mvcc_sort_order order = req->sort_order;
    if (req->sort_target != MVCC_SORT_KEY && order == MVCC_SORT_NONE)
        order = MVCC_SORT_ASCEND;
    if (order != MVCC_SORT_NONE && n > 1) {
        struct mvcc_range_req sr = *req;
        sr.sort_order = order;
        qsort_r(resp->kvs, n, sizeof(*resp->kvs), sort_cmp, &sr);
    }
    if (req->limit > 0 && n > (size_t)req->limit) {
        n = (size_t)req->limit;
        resp->more = true;
    }
    if (req->keys_only && !strip) {
        for (size_t i = 0; i < n; i++) {
            struct mvcc_bytes pk = {resp->kvs[i].packed, resp->kvs[i].packed_len};
            if ((rc = kv_to_arena(a, pk, true, false, &resp->kvs[i])) != 0)
                return rc;
        }
    }
    resp->kvs_len = n;
    return 0;
}

/* The revision reads see: inside a write operation that changed something, its own. */
static int64_t read_rev(struct mvcc_store *s)
{
    return s->rev + (s->op_sub > 0 ? 1 : 0);
}

int mvcc_range(struct mvcc_store *s, const struct mvcc_range_req *req, struct arena *a,
               struct mvcc_range_resp *resp)
{
    MDB_txn *txn;
    int rc = store_read_txn(s, &txn);
    if (rc != 0)
        return rc;
    if (!s->wtxn)
        arena_reset(&s->scratch);
    rc = range_txn(s, txn, req, read_rev(s), false, a, resp);
    store_read_done(s, txn);
    return rc;
}

int mvcc_range_borrow(struct mvcc_store *s, const struct mvcc_range_req *req, struct arena *a,
                      mvcc_range_fn fn, void *ctx)
{
    MDB_txn *txn;
    struct mvcc_range_resp resp;
    int rc = store_read_txn(s, &txn);
    if (rc != 0)
        return rc;
    if (!s->wtxn)
        arena_reset(&s->scratch);
    rc = range_txn(s, txn, req, read_rev(s), true, a, &resp);
    if (rc == 0)
        rc = fn(ctx, &resp); /* the read transaction keeps the mapped records in place */
    store_read_done(s, txn);
    return rc;
}

/* ---- Writes -----------------------------------------------------------------------------------
 */

/* The newest live record of a key (at the state writes see), decoded; false if none. */
static int latest_live(struct mvcc_store *s, const uint8_t *k, size_t klen, struct mvcc_bytes *val,
                       struct kvfields *f, bool *found)
{
    *found = false;
    struct kent *e = kidx_get(&s->idx, k, klen);
    uint64_t r = e ? kent_last(e) : 0;
    if (r == 0)
        return 0;
    if (rev_tomb(r))
        return 0;
    int rc = store_get_rec(s, s->wtxn, r, val);
    if (rc == 0)
        rc = kv_decode(val->p, val->len, f);
    *found = rc == 0;
    return rc;
}

static int put_check(struct mvcc_store *s, MDB_txn *txn, const struct mvcc_put_req *req)
{
    if (req->key.len == 0)
        return MVCC_EEMPTYKEY;
    if (req->ignore_value && req->value.len)
        return MVCC_EVALUEPROVIDED;
    if (req->ignore_lease && req->lease)
        return MVCC_ELEASEPROVIDED;
    if (req->ignore_value || req->ignore_lease) {
        struct kent *e = kidx_get(&s->idx, req->key.p, req->key.len);
        uint64_t r = e ? kent_at(e, read_rev(s)) : 0;
        if (!r || rev_tomb(r))
            return MVCC_EKEYNOTFOUND;
    }
    if (req->lease && !lease_find(&s->leases, req->lease))
        return MVCC_ELEASENOTFOUND;
    return 0;
}

static int put_apply(struct mvcc_store *s, const struct mvcc_put_req *req, struct arena *a,
                     struct mvcc_put_resp *resp)
{
    struct mvcc_bytes pval;
    struct kvfields prev, f;
    bool found;
    memset(resp, 0, sizeof(*resp));
    int rc = latest_live(s, req->key.p, req->key.len, &pval, &prev, &found);
    if (rc != 0)
        return rc;
    int64_t main = s->rev + 1;
    uint64_t r = rev_pack(main, s->op_sub, false);
    memset(&f, 0, sizeof(f));
    f.key = req->key;
    f.create_revision = found ? prev.create_revision : main;
    f.mod_revision = main;
    f.version = found ? prev.version + 1 : 1;
    f.value = req->ignore_value ? prev.value : req->value;
    f.lease = req->ignore_lease ? prev.lease : req->lease;
    if (found && req->prev_kv) {
        if (!(resp->prev_kv = arena_alloc(a, sizeof(*resp->prev_kv))))
            return BATON_ENOMEM;
        if ((rc = kv_to_arena(a, pval, false, false, resp->prev_kv)) != 0)
            return rc;
    }
    /* Keep the previous record's bytes for the watch hub before LMDB pages move. */
    struct mvcc_bytes prev_copy = {0};
    if (s->nw && found) {
        uint8_t *pc = arena_dup(&s->ev_arena, pval.p, pval.len ? pval.len : 1);
        if (!pc)
            return BATON_ENOMEM;
        prev_copy = (struct mvcc_bytes){pc, pval.len};
    }
    /* f.value may point into LMDB's page holding the previous record; MDB_RESERVE may reuse it,
     * so encode into scratch first. */
    size_t n = kv_encoded_len(&f);
    uint8_t *enc = arena_alloc(&s->scratch, n ? n : 1);
    if (!enc)
        return BATON_ENOMEM;
    kv_encode(&f, enc);
    uint8_t kb[REVKEY_LEN];
    MDB_val k = {revkey_put(kb, r), kb}, d = {n, enc};
    if ((rc = mdb_to_err(mdb_put(s->wtxn, s->dbi_kv, &k, &d, MDB_APPEND))) != 0)
        return rc;
    if ((rc = kidx_add(&s->idx, req->key.p, req->key.len, r)) != 0)
        return rc;
    if (found && prev.lease && prev.lease != f.lease)
        lease_detach(&s->leases, prev.lease, req->key.p, req->key.len);
    if (f.lease && (!found || prev.lease != f.lease))
        if ((rc = lease_attach(&s->leases, f.lease, req->key.p, req->key.len)) != 0)
            return rc;
    if (s->nw && (rc = watch_record(s, r, req->key, (struct mvcc_bytes){enc, n}, prev_copy)) != 0)
        return rc;
    s->op_sub++;
    resp->header_revision = main;
    return 0;
}

/* Writes the tombstone of one live key; prev is its current record. */
static int delete_one(struct mvcc_store *s, const uint8_t *k, size_t klen, struct mvcc_bytes prev,
                      int64_t prev_lease)
{
    int64_t main = s->rev + 1;
    uint64_t r = rev_pack(main, s->op_sub, true);
    struct kvfields f = {.key = {k, klen}};
    size_t n = kv_encoded_len(&f);
    uint8_t *enc = arena_alloc(&s->scratch, n);
    if (!enc)
        return BATON_ENOMEM;
    kv_encode(&f, enc);
    struct mvcc_bytes prev_copy = {0};
    if (s->nw) {
        uint8_t *pc = arena_dup(&s->ev_arena, prev.p, prev.len ? prev.len : 1);
        if (!pc)
            return BATON_ENOMEM;
        prev_copy = (struct mvcc_bytes){pc, prev.len};
    }
    uint8_t kb[REVKEY_LEN];
    MDB_val mk = {revkey_put(kb, r), kb}, d = {n, enc};
    int rc = mdb_to_err(mdb_put(s->wtxn, s->dbi_kv, &mk, &d, MDB_APPEND));
    if (rc == 0)
        rc = kidx_add(&s->idx, k, klen, r);
    if (rc != 0)
        return rc;
    if (prev_lease)
        lease_detach(&s->leases, prev_lease, k, klen);
    if (s->nw) {
        /* Watchers see a delete as the key with its mod_revision (etcd's watch does the same). */
        struct kvfields ev = {.key = {k, klen}, .mod_revision = main};
        size_t en = kv_encoded_len(&ev);
        uint8_t *ep = arena_alloc(&s->ev_arena, en);
        if (!ep)
            return BATON_ENOMEM;
        kv_encode(&ev, ep);
        if ((rc = watch_record(s, r, (struct mvcc_bytes){k, klen}, (struct mvcc_bytes){ep, en},
                               prev_copy)) != 0)
            return rc;
    }
    s->op_sub++;
    return 0;
}

struct keylist {
    struct arena *a;
    struct mvcc_bytes *k;
    size_t n, cap;
};
static int keylist_visit(void *ctx, struct kent *e, uint64_t r)
{
    struct keylist *l = ctx;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        struct mvcc_bytes *nk = arena_alloc(l->a, ncap * sizeof(*nk));
        if (!nk)
            return BATON_ENOMEM;
        if (l->n)
            memcpy(nk, l->k, l->n * sizeof(*nk));
        l->k = nk;
        l->cap = ncap;
    }
    uint8_t *kc = arena_dup(l->a, e->data, e->klen ? e->klen : 1);
    if (!kc)
        return BATON_ENOMEM;
    l->k[l->n++] = (struct mvcc_bytes){kc, e->klen};
    return 0;
}

/* Deletes the listed keys that are live; prev kvs into resp when asked. */
static int delete_list(struct mvcc_store *s, struct mvcc_bytes *keys, size_t n, bool want_prev,
                       struct arena *a, struct mvcc_delete_resp *resp)
{
    if (want_prev && n) {
        resp->prev_kvs = arena_alloc(a, n * sizeof(*resp->prev_kvs));
        if (!resp->prev_kvs)
            return BATON_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct mvcc_bytes val;
        struct kvfields f;
        bool found;
        int rc = latest_live(s, keys[i].p, keys[i].len, &val, &f, &found);
        if (rc != 0)
            return rc;
        if (!found)
            continue;
        if (want_prev &&
            (rc = kv_to_arena(a, val, false, false, &resp->prev_kvs[resp->prev_kvs_len++])) != 0)
            return rc;
        /* The prev bytes live in LMDB's page; copy before writing. */
        uint8_t *pc = arena_dup(&s->scratch, val.p, val.len ? val.len : 1);
        if (!pc)
            return BATON_ENOMEM;
        if ((rc = delete_one(s, keys[i].p, keys[i].len, (struct mvcc_bytes){pc, val.len},
                             f.lease)) != 0)
            return rc;
        resp->deleted++;
    }
    resp->header_revision = s->rev + (s->op_sub > 0 ? 1 : 0);
    return 0;
}

static int count_visit(void *ctx, struct kent *e, uint64_t r)
{
    (*(size_t *)ctx)++;
    return 0;
}

static int delete_apply(struct mvcc_store *s, const struct mvcc_delete_req *req, struct arena *a,
                        struct mvcc_delete_resp *resp)
{
    memset(resp, 0, sizeof(*resp));
    struct keylist l = {.a = &s->scratch};
    int rc = index_walk(s, req->key, req->range_end, s->rev + 1, keylist_visit, &l);
    if (rc != 0)
        return rc;
    /* Checked before, for the whole request (mvcc_delete_range, txn_check_path); asserted. */
    BATON_ASSERT(sub_room(s, l.n) == 0);
    return delete_list(s, l.k, l.n, req->prev_kv, a, resp);
}

/* Ends a write operation: the revision moves when anything changed. */
static void op_end(struct mvcc_store *s)
{
    if (s->op_sub > 0)
        s->rev++;
    s->op_sub = 0;
}

/* Runs a write operation; any failure inside poisons the handle (a partial write cannot be
 * undone in memory), so callers validate everything first. */
static int op_fail(struct mvcc_store *s, int rc)
{
    store_poison(s, rc);
    s->op_sub = 0;
    return rc;
}

int mvcc_put(struct mvcc_store *s, const struct mvcc_put_req *req, struct arena *a,
             struct mvcc_put_resp *resp)
{
    int rc = write_check(s);
    if (rc != 0)
        return rc;
    if (s->nospace)
        return BATON_ENOSPACE;
    arena_reset(&s->scratch);
    if ((rc = put_check(s, s->wtxn, req)) != 0)
        return rc;
    if ((rc = put_apply(s, req, a, resp)) != 0)
        return op_fail(s, rc);
    op_end(s);
    return 0;
}

int mvcc_delete_range(struct mvcc_store *s, const struct mvcc_delete_req *req, struct arena *a,
                      struct mvcc_delete_resp *resp)
{
    int rc = write_check(s);
    if (rc != 0)
        return rc;
    if (req->key.len == 0)
        return MVCC_EEMPTYKEY;
    arena_reset(&s->scratch);
    size_t live = 0;
    if ((rc = index_walk(s, req->key, req->range_end, s->rev, count_visit, &live)) != 0 ||
        (rc = sub_room(s, live)) != 0)
        return rc;
    if ((rc = delete_apply(s, req, a, resp)) != 0)
        return op_fail(s, rc);
    op_end(s);
    resp->header_revision = s->rev;
    return 0;
}

int store_delete_keys(struct mvcc_store *s, struct mvcc_bytes *keys, size_t n)
{
    struct mvcc_delete_resp resp = {0};
    int rc = write_check(s);
    if (rc == 0)
        rc = sub_room(s, n);
    if (rc != 0)
        return rc; /* nothing written */
    rc = delete_list(s, keys, n, false, NULL, &resp);
    if (rc != 0)
        return op_fail(s, rc);
    op_end(s);
    return 0;
}

/* ---- Txn ----------------------------------------------------------------------------------------
 */

static bool bytes_eq(struct mvcc_bytes a, struct mvcc_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* etcd's checkIntervals: puts of one level against deletes and nested puts. Sets are small
 * (bounded by max_txn_ops), so plain arrays. */
struct ivset {
    struct mvcc_bytes *puts;
    size_t nputs, capputs;
    struct mvcc_bytes *dk, *de; /* deletes: [dk, de), de.len == 0 means the point dk */
    size_t ndels, capdels;
};

static bool ivset_has_put(const struct ivset *v, struct mvcc_bytes k)
{
    for (size_t i = 0; i < v->nputs; i++)
        if (bytes_eq(v->puts[i], k))
            return true;
    return false;
}

static bool ivset_del_hits(const struct ivset *v, struct mvcc_bytes k)
{
    for (size_t i = 0; i < v->ndels; i++) {
        if (v->de[i].len == 0) {
            if (bytes_eq(v->dk[i], k))
                return true;
        } else if (key_cmp(v->dk[i].p, v->dk[i].len, k.p, k.len) <= 0 &&
                   key_cmp(k.p, k.len, v->de[i].p, v->de[i].len) < 0) {
            return true;
        }
    }
    return false;
}

static int ivset_add_put(struct ivset *v, struct mvcc_bytes k)
{
    if (v->nputs == v->capputs) {
        size_t nc = v->capputs ? v->capputs * 2 : 8;
        struct mvcc_bytes *n = realloc(v->puts, nc * sizeof(*n));
        if (!n)
            return BATON_ENOMEM;
        v->puts = n;
        v->capputs = nc;
    }
    v->puts[v->nputs++] = k;
    return 0;
}

static int ivset_add_del(struct ivset *v, struct mvcc_bytes k, struct mvcc_bytes e)
{
    if (v->ndels == v->capdels) {
        size_t nc = v->capdels ? v->capdels * 2 : 8;
        struct mvcc_bytes *nk = realloc(v->dk, nc * sizeof(*nk));
        if (!nk)
            return BATON_ENOMEM;
        v->dk = nk;
        struct mvcc_bytes *ne = realloc(v->de, nc * sizeof(*ne));
        if (!ne)
            return BATON_ENOMEM;
        v->de = ne;
        v->capdels = nc;
    }
    v->dk[v->ndels] = k;
    v->de[v->ndels++] = e;
    return 0;
}

static void ivset_free(struct ivset *v)
{
    free(v->puts);
    free(v->dk);
    free(v->de);
    memset(v, 0, sizeof(*v));
}

static int check_intervals(const struct mvcc_op *ops, size_t n, struct ivset *out)
{
    int rc = 0;
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n && rc == 0; i++)
        if (ops[i].type == MVCC_OP_DELETE)
            rc = ivset_add_del(out, ops[i].u.del.key, ops[i].u.del.range_end);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (ops[i].type != MVCC_OP_TXN)
            continue;
        struct ivset th, el;
        const struct mvcc_txn_req *t = ops[i].u.txn;
        if ((rc = check_intervals(t->success, t->success_len, &th)) != 0)
            break;
        if ((rc = check_intervals(t->failure, t->failure_len, &el)) != 0) {
            ivset_free(&th);
            break;
        }
        for (size_t j = 0; j < th.nputs && rc == 0; j++) {
            if (ivset_has_put(out, th.puts[j]) || ivset_del_hits(out, th.puts[j]))
                rc = MVCC_EDUPKEY;
            else
                rc = ivset_add_put(out, th.puts[j]);
        }
        for (size_t j = 0; j < el.nputs && rc == 0; j++) {
            /* Then and else are exclusive: a key put by both is fine. */
            if ((ivset_has_put(out, el.puts[j]) && !ivset_has_put(&th, el.puts[j])) ||
                ivset_del_hits(out, el.puts[j]))
                rc = MVCC_EDUPKEY;
            else
                rc = ivset_add_put(out, el.puts[j]);
        }
        for (size_t j = 0; j < th.ndels && rc == 0; j++)
            rc = ivset_add_del(out, th.dk[j], th.de[j]);
        for (size_t j = 0; j < el.ndels && rc == 0; j++)
            rc = ivset_add_del(out, el.dk[j], el.de[j]);
        ivset_free(&th);
        ivset_free(&el);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (ops[i].type != MVCC_OP_PUT)
            continue;
        struct mvcc_bytes k = ops[i].u.put.key;
        if (ivset_has_put(out, k) || ivset_del_hits(out, k))
            rc = MVCC_EDUPKEY;
        else
            rc = ivset_add_put(out, k);
    }
    if (rc != 0)
        ivset_free(out);
    return rc;
}

static int check_ops(const struct mvcc_op *ops, size_t n, int64_t max_ops);

/* etcd's checkTxnRequest. */
static int check_txn_req(const struct mvcc_txn_req *t, int64_t max_ops)
{
    size_t opc = BATON_MAX(t->compare_len, BATON_MAX(t->success_len, t->failure_len));
    if ((int64_t)opc > max_ops)
        return MVCC_ETOOMANYOPS;
    for (size_t i = 0; i < t->compare_len; i++)
        if (t->compare[i].key.len == 0)
            return MVCC_EEMPTYKEY;
    int rc = check_ops(t->success, t->success_len, max_ops - (int64_t)opc);
    if (rc == 0)
        rc = check_ops(t->failure, t->failure_len, max_ops - (int64_t)opc);
    return rc;
}

static int check_ops(const struct mvcc_op *ops, size_t n, int64_t max_ops)
{
    for (size_t i = 0; i < n; i++) {
        const struct mvcc_op *o = &ops[i];
        int rc = 0;
        switch (o->type) {
        case MVCC_OP_RANGE:
            rc = o->u.range.key.len ? 0 : MVCC_EEMPTYKEY;
            break;
        case MVCC_OP_PUT:
            if (o->u.put.key.len == 0)
                rc = MVCC_EEMPTYKEY;
            else if (o->u.put.ignore_value && o->u.put.value.len)
                rc = MVCC_EVALUEPROVIDED;
            else if (o->u.put.ignore_lease && o->u.put.lease)
                rc = MVCC_ELEASEPROVIDED;
            break;
        case MVCC_OP_DELETE:
            rc = o->u.del.key.len ? 0 : MVCC_EEMPTYKEY;
            break;
        case MVCC_OP_TXN:
            rc = o->u.txn ? check_txn_req(o->u.txn, max_ops) : BATON_EINVAL;
            break;
        default:
            rc = BATON_EINVAL;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

int mvcc_txn_check(const struct mvcc_txn_req *req, uint32_t max_txn_ops)
{
    int rc = check_txn_req(req, max_txn_ops ? max_txn_ops : 128);
    struct ivset v;
    if (rc == 0 && (rc = check_intervals(req->success, req->success_len, &v)) == 0)
        ivset_free(&v);
    if (rc == 0 && (rc = check_intervals(req->failure, req->failure_len, &v)) == 0)
        ivset_free(&v);
    return rc;
}

/* Whether any branch, at any depth, holds an op of type ty. */
static bool txn_has(const struct mvcc_txn_req *t, enum mvcc_op_type ty)
{
    const struct mvcc_op *lists[2] = {t->success, t->failure};
    size_t lens[2] = {t->success_len, t->failure_len};
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < lens[b]; i++)
            if (lists[b][i].type == ty ||
                (lists[b][i].type == MVCC_OP_TXN && txn_has(lists[b][i].u.txn, ty)))
                return true;
    return false;
}

static int cmp_i64(int64_t a, int64_t b)
{
    return (a > b) - (a < b);
}

static bool compare_kv(const struct mvcc_compare *c, const struct kvfields *f)
{
    int r = 0;
    switch (c->target) {
    case MVCC_CMP_VALUE:
        r = key_cmp(f->value.p, f->value.len, c->value.p, c->value.len);
        break;
    case MVCC_CMP_CREATE:
        r = cmp_i64(f->create_revision, c->number);
        break;
    case MVCC_CMP_MOD:
        r = cmp_i64(f->mod_revision, c->number);
        break;
    case MVCC_CMP_VERSION:
        r = cmp_i64(f->version, c->number);
        break;
    case MVCC_CMP_LEASE:
        r = cmp_i64(f->lease, c->number);
        break;
    }
    switch (c->result) {
    case MVCC_CMP_EQUAL:
        return r == 0;
    case MVCC_CMP_NOT_EQUAL:
        return r != 0;
    case MVCC_CMP_GREATER:
        return r > 0;
    case MVCC_CMP_LESS:
        return r < 0;
    }
    return true;
}

struct cmp_ctx {
    struct mvcc_store *s;
    MDB_txn *txn;
    const struct mvcc_compare *c;
    bool any, ok;
};
static int compare_visit(void *ctx, struct kent *e, uint64_t r)
{
    struct cmp_ctx *cc = ctx;
    struct mvcc_bytes val;
    struct kvfields f;
    int rc = store_get_rec(cc->s, cc->txn, r, &val);
    if (rc == 0)
        rc = kv_decode(val.p, val.len, &f);
    if (rc != 0)
        return rc;
    cc->any = true;
    if (!compare_kv(cc->c, &f)) {
        cc->ok = false;
        return 1; /* stop: one failing key decides */
    }
    return 0;
}

static int apply_compare(struct mvcc_store *s, MDB_txn *txn, const struct mvcc_compare *c, bool *ok)
{
    struct cmp_ctx cc = {s, txn, c, false, true};
    int rc = index_walk(s, c->key, c->range_end, s->rev, compare_visit, &cc);
    if (rc < 0)
        return rc;
    if (!cc.any) {
        struct kvfields zero = {0};
        /* A missing key never compares equal on VALUE (etcd: no way to express "missing"). */
        cc.ok = c->target == MVCC_CMP_VALUE ? false : compare_kv(c, &zero);
    }
    *ok = cc.ok;
    return 0;
}

/* The branch every txn along the chosen path takes, decided before any op runs (etcd's
 * compareToPath): path[0] for t, then its chosen branch's nested txns depth-first. */
struct txn_path {
    bool *p;
    size_t n, cap;
};
static int txn_compute_path(struct mvcc_store *s, MDB_txn *txn, const struct mvcc_txn_req *t,
                            struct txn_path *tp)
{
    bool ok = true;
    for (size_t i = 0; i < t->compare_len && ok; i++) {
        int rc = apply_compare(s, txn, &t->compare[i], &ok);
        if (rc != 0)
            return rc;
    }
    if (tp->n == tp->cap) {
        size_t nc = tp->cap ? tp->cap * 2 : 16;
        bool *np = arena_alloc(&s->scratch, nc * sizeof(*np));
        if (!np)
            return BATON_ENOMEM;
        if (tp->n)
            memcpy(np, tp->p, tp->n * sizeof(*np));
        tp->p = np;
        tp->cap = nc;
    }
    tp->p[tp->n++] = ok;
    const struct mvcc_op *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->success_len : t->failure_len;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type != MVCC_OP_TXN)
            continue;
        int rc = txn_compute_path(s, txn, ops[i].u.txn, tp);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* etcd's checkTxn along the path: request errors before anything is written. *changes gets an
 * upper bound of the changes the path makes (for the sub-revision bound). */
static int txn_check_path(struct mvcc_store *s, MDB_txn *txn, const struct mvcc_txn_req *t,
                          const bool *path, size_t *pi, size_t *changes)
{
    bool ok = path[(*pi)++];
    const struct mvcc_op *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->success_len : t->failure_len;
    for (size_t i = 0; i < n; i++) {
        int rc = 0;
        switch (ops[i].type) {
        case MVCC_OP_RANGE:
            rc = range_check(s, &ops[i].u.range, s->rev);
            break;
        case MVCC_OP_PUT:
            rc = put_check(s, txn, &ops[i].u.put);
            (*changes)++;
            break;
        case MVCC_OP_DELETE:
            rc = index_walk(s, ops[i].u.del.key, ops[i].u.del.range_end, s->rev, count_visit,
                            changes);
            break;
        case MVCC_OP_TXN:
            rc = txn_check_path(s, txn, ops[i].u.txn, path, pi, changes);
            break;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int txn_apply_path(struct mvcc_store *s, MDB_txn *txn, const struct mvcc_txn_req *t,
                          const bool *path, size_t *pi, struct arena *a, struct mvcc_txn_resp *resp)
{
    bool ok = path[(*pi)++];
    const struct mvcc_op *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->success_len : t->failure_len;
    memset(resp, 0, sizeof(*resp));
    resp->succeeded = ok;
    if (n && !(resp->responses = arena_alloc(a, n * sizeof(*resp->responses))))
        return BATON_ENOMEM;
    resp->responses_len = n;
    for (size_t i = 0; i < n; i++) {
        struct mvcc_op_resp *r = &resp->responses[i];
        int rc = 0;
        r->type = ops[i].type;
        switch (ops[i].type) {
        case MVCC_OP_RANGE:
            rc = range_txn(s, txn, &ops[i].u.range, read_rev(s), false, a, &r->u.range);
            break;
        case MVCC_OP_PUT:
            rc = put_apply(s, &ops[i].u.put, a, &r->u.put);
            break;
        case MVCC_OP_DELETE:
            rc = delete_apply(s, &ops[i].u.del, a, &r->u.del);
            break;
        case MVCC_OP_TXN:
            if (!(r->u.txn = arena_alloc(a, sizeof(*r->u.txn))))
                return BATON_ENOMEM;
            rc = txn_apply_path(s, txn, ops[i].u.txn, path, pi, a, r->u.txn);
            break;
        }
        if (rc != 0)
            return rc;
    }
    resp->header_revision = read_rev(s);
    return 0;
}

/* Sets every nested response's header revision to the txn's final one. */
static void txn_fix_headers(struct mvcc_txn_resp *r, int64_t rev)
{
    r->header_revision = rev;
    for (size_t i = 0; i < r->responses_len; i++) {
        struct mvcc_op_resp *o = &r->responses[i];
        if (o->type == MVCC_OP_PUT)
            o->u.put.header_revision = rev;
        else if (o->type == MVCC_OP_DELETE)
            o->u.del.header_revision = rev;
        else if (o->type == MVCC_OP_TXN)
            txn_fix_headers(o->u.txn, rev);
    }
}

int mvcc_txn(struct mvcc_store *s, const struct mvcc_txn_req *req, struct arena *a,
             struct mvcc_txn_resp *resp)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    int rc = mvcc_txn_check(req, s->cfg.max_txn_ops);
    if (rc != 0)
        return rc;
    bool writes = txn_has(req, MVCC_OP_PUT) || txn_has(req, MVCC_OP_DELETE);
    if (writes && !s->wtxn)
        return BATON_EINVAL;
    if (s->nospace && txn_has(req, MVCC_OP_PUT))
        return BATON_ENOSPACE;
    MDB_txn *txn;
    if ((rc = store_read_txn(s, &txn)) != 0)
        return rc;
    if (!s->wtxn || s->op_sub == 0)
        arena_reset(&s->scratch);
    struct txn_path tp = {0};
    size_t pi = 0, changes = 0;
    if (writes && (rc = write_check(s)) != 0) {
        store_read_done(s, txn);
        return rc;
    }
    if ((rc = txn_compute_path(s, txn, req, &tp)) != 0 ||
        (rc = txn_check_path(s, txn, req, tp.p, &pi, &changes)) != 0 ||
        (rc = sub_room(s, changes)) != 0) {
        store_read_done(s, txn);
        return rc;
    }
    pi = 0;
    rc = txn_apply_path(s, txn, req, tp.p, &pi, a, resp);
    store_read_done(s, txn);
    if (rc != 0)
        return writes ? op_fail(s, rc) : rc;
    op_end(s);
    txn_fix_headers(resp, s->rev);
    return 0;
}

/* ---- Compaction
 * ---------------------------------------------------------------------------------- */

int mvcc_compact(struct mvcc_store *s, int64_t rev)
{
    int rc = write_check(s);
    if (rc != 0)
        return rc;
    if (rev <= s->compact_rev)
        return BATON_ECOMPACTED;
    if (rev > s->rev)
        return BATON_EFUTURE;
    s->compact_rev = rev;
    kidx_compact(&s->idx, rev);
    /* Records kept at an older compaction may be superseded now: rescan from the start. */
    s->compact_cursor = 0;
    return 0;
}

bool mvcc_compact_pending(const struct mvcc_store *s)
{
    return s->compact_done_rev < s->compact_rev;
}

/* Whether the index still holds r for the key of record val (a record kept by compaction). */
static int rec_kept(struct mvcc_store *s, struct mvcc_bytes val, uint64_t r, bool *kept)
{
    struct kvfields f;
    int rc = kv_decode(val.p, val.len, &f);
    if (rc != 0)
        return rc;
    *kept = false;
    struct kent *e = kidx_get(&s->idx, f.key.p, f.key.len);
    if (!e)
        return 0;
    uint64_t *revs = kent_revs(e);
    uint32_t n = kent_nrevs(e), lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (revs[mid] < r)
            lo = mid + 1;
        else
            hi = mid;
    }
    *kept = lo < n && revs[lo] == r;
    return 0;
}

int mvcc_compact_step(struct mvcc_store *s, size_t max_records, bool *done)
{
    *done = !mvcc_compact_pending(s);
    if (s->poisoned)
        return BATON_ECLOSED;
    if (*done)
        return 0;
    if (s->wtxn || s->defrag_running)
        return BATON_EBUSY;
    int rc = mdb_txn_begin(s->env, NULL, 0, &s->wtxn);
    if (rc != 0)
        return mdb_to_err(rc);
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(s->wtxn, s->dbi_kv, &cur)) != 0) {
        mdb_txn_abort(s->wtxn);
        s->wtxn = NULL;
        return mdb_to_err(rc);
    }
    uint8_t kb[REVKEY_LEN];
    MDB_val k = {revkey_put(kb, s->compact_cursor), kb}, v;
    uint64_t limit = rev_after_main(s->compact_rev), r = 0;
    size_t seen = 0;
    int err = 0;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        bool kept;
        if ((err = revkey_get(k.mv_data, k.mv_size, &r)) != 0)
            break;
        if (r >= limit || seen >= max_records)
            break;
        if ((err = rec_kept(s, (struct mvcc_bytes){v.mv_data, v.mv_size}, r, &kept)) != 0)
            break;
        if (!kept && (err = mdb_to_err(mdb_cursor_del(cur, 0))) != 0)
            break;
        seen++;
    }
    mdb_cursor_close(cur);
    bool finished = rc == MDB_NOTFOUND || (rc == 0 && r >= limit);
    if (!err && rc != 0 && rc != MDB_NOTFOUND)
        err = mdb_to_err(rc);
    if (!err && finished)
        err = meta_put_u64(s, META_COMPACT_DONE, (uint64_t)s->compact_rev);
    if (!err)
        err = mdb_to_err(mdb_txn_commit(s->wtxn));
    else
        mdb_txn_abort(s->wtxn);
    s->wtxn = NULL;
    if (err)
        return err; /* nothing changed in memory: the next step retries */
    if (finished) {
        s->compact_done_rev = s->compact_rev;
        *done = true;
    } else {
        s->compact_cursor = r;
    }
    return 0;
}

/* ---- Hash
 * ---------------------------------------------------------------------------------------- */

int mvcc_hash_kv(struct mvcc_store *s, int64_t rev, uint32_t *hash, int64_t *compact_rev,
                 int64_t *header_rev)
{
    if (rev > s->rev)
        return BATON_EFUTURE;
    if (rev > 0 && rev < s->compact_rev)
        return BATON_ECOMPACTED;
    if (rev <= 0)
        rev = s->rev;
    MDB_txn *txn;
    int rc = store_read_txn(s, &txn);
    if (rc != 0)
        return rc;
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, s->dbi_kv, &cur)) != 0) {
        store_read_done(s, txn);
        return mdb_to_err(rc);
    }
    uint32_t h = crc32c("kv", 2);
    uint64_t limit = rev_after_main(rev), climit = rev_after_main(s->compact_rev);
    MDB_val k, v;
    int err = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t r;
        if ((err = revkey_get(k.mv_data, k.mv_size, &r)) != 0 || r >= limit)
            break;
        if (r < climit) {
            bool kept;
            if ((err = rec_kept(s, (struct mvcc_bytes){v.mv_data, v.mv_size}, r, &kept)) != 0)
                break;
            if (!kept)
                continue;
        }
        h = crc32c_extend(h, k.mv_data, k.mv_size);
        h = crc32c_extend(h, v.mv_data, v.mv_size);
    }
    mdb_cursor_close(cur);
    store_read_done(s, txn);
    if (err)
        return err;
    uint8_t cb[8];
    be64_put(cb, (uint64_t)s->compact_rev);
    *hash = crc32c_extend(h, cb, 8);
    *compact_rev = s->compact_rev;
    *header_rev = s->rev;
    return 0;
}

/* ---- Auxiliary table and alarm
 * --------------------------------------------------------------------- */

#define AUX_NAME_MAX 400

int mvcc_aux_put(struct mvcc_store *s, struct mvcc_bytes name, struct mvcc_bytes value)
{
    int rc = write_check(s);
    if (rc != 0)
        return rc;
    if (name.len == 0 || name.len > AUX_NAME_MAX)
        return BATON_EINVAL;
    MDB_val k = {name.len, (void *)name.p}, d = {value.len, (void *)value.p};
    if ((rc = mdb_to_err(mdb_put(s->wtxn, s->dbi_aux, &k, &d, 0))) != 0)
        return op_fail(s, rc);
    return 0;
}

int mvcc_aux_delete(struct mvcc_store *s, struct mvcc_bytes name)
{
    int rc = write_check(s);
    if (rc != 0)
        return rc;
    if (name.len == 0 || name.len > AUX_NAME_MAX)
        return BATON_EINVAL;
    MDB_val k = {name.len, (void *)name.p};
    rc = mdb_del(s->wtxn, s->dbi_aux, &k, NULL);
    if (rc == MDB_NOTFOUND)
        return BATON_ENOTFOUND;
    if (rc != 0)
        return op_fail(s, mdb_to_err(rc));
    return 0;
}

int mvcc_aux_get(struct mvcc_store *s, struct mvcc_bytes name, struct arena *a,
                 struct mvcc_bytes *value)
{
    if (name.len == 0 || name.len > AUX_NAME_MAX)
        return BATON_EINVAL;
    MDB_txn *txn;
    int rc = store_read_txn(s, &txn);
    if (rc != 0)
        return rc;
    MDB_val k = {name.len, (void *)name.p}, d;
    rc = mdb_get(txn, s->dbi_aux, &k, &d);
    if (rc == 0) {
        uint8_t *p = arena_dup(a, d.mv_data, d.mv_size ? d.mv_size : 1);
        if (!p)
            rc = BATON_ENOMEM;
        else
            *value = (struct mvcc_bytes){p, d.mv_size};
    } else {
        rc = mdb_to_err(rc);
    }
    store_read_done(s, txn);
    return rc;
}

int mvcc_aux_list(struct mvcc_store *s, struct mvcc_bytes prefix, size_t max, struct arena *a,
                  struct mvcc_bytes **names, struct mvcc_bytes **values, size_t *n, bool *more)
{
    *n = 0;
    *more = false;
    if (prefix.len > AUX_NAME_MAX)
        return BATON_EINVAL;
    *names = arena_alloc(a, (max ? max : 1) * sizeof(**names));
    *values = arena_alloc(a, (max ? max : 1) * sizeof(**values));
    if (!*names || !*values)
        return BATON_ENOMEM;
    MDB_txn *txn;
    int rc = store_read_txn(s, &txn);
    if (rc != 0)
        return rc;
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, s->dbi_aux, &cur)) != 0) {
        store_read_done(s, txn);
        return mdb_to_err(rc);
    }
    MDB_val k = {prefix.len, (void *)prefix.p}, d;
    int err = 0;
    for (rc = mdb_cursor_get(cur, &k, &d, prefix.len ? MDB_SET_RANGE : MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        if (prefix.len && (k.mv_size < prefix.len || memcmp(k.mv_data, prefix.p, prefix.len) != 0))
            break;
        if (*n == max) {
            *more = true;
            break;
        }
        uint8_t *kp = arena_dup(a, k.mv_data, k.mv_size ? k.mv_size : 1);
        uint8_t *dp = arena_dup(a, d.mv_data, d.mv_size ? d.mv_size : 1);
        if (!kp || !dp) {
            err = BATON_ENOMEM;
            break;
        }
        (*names)[*n] = (struct mvcc_bytes){kp, k.mv_size};
        (*values)[*n] = (struct mvcc_bytes){dp, d.mv_size};
        (*n)++;
    }
    mdb_cursor_close(cur);
    store_read_done(s, txn);
    if (!err && rc != 0 && rc != MDB_NOTFOUND)
        err = mdb_to_err(rc);
    return err;
}

bool mvcc_quota_exceeded(struct mvcc_store *s)
{
    uint64_t used = 0;
    return mvcc_db_size(s, &used, NULL) == 0 && used > s->cfg.quota_bytes;
}

int mvcc_alarm_nospace(struct mvcc_store *s, bool armed)
{
    int rc = write_check(s);
    if (rc != 0)
        return rc;
    s->nospace = armed;
    return 0;
}

bool mvcc_alarm_nospace_armed(const struct mvcc_store *s)
{
    return s->nospace;
}
