/*
 * mvcc internals shared by the module's files: the key index, the KeyValue codec, revision
 * packing, and the store's structure. Nothing outside src/mvcc includes this.
 */
#ifndef BATON_MVCC_INTERNAL_H
#define BATON_MVCC_INTERNAL_H

#include "mvcc/mvcc.h"

#include <lmdb.h>
#include <pthread.h>

/* ---- Revisions ------------------------------------------------------------------------------
 * In memory a revision is packed into 64 bits: main << 24 | sub << 1 | tombstone, so ordering
 * the packed values orders (main, sub) and the index pays 8 bytes per revision. The price is two
 * bounds, both checked before anything is written (BATON_ETOOBIG, never an assertion):
 * main < 2^40 (1.1e12 write revisions: 35 years at a sustained 1,000 writes/s) and
 * sub < 2^23 (8.4 million changes in one revision: a DeleteRange or lease revoke of more keys
 * is refused). LMDB record keys keep the full 8 + 8 bytes, so widening this later needs no
 * change on disk. */
#define REV_SUB_BITS 23
#define REV_MAIN_MAX ((int64_t)1 << 40)
#define REV_SUB_MAX  ((int64_t)1 << REV_SUB_BITS)
static inline uint64_t rev_pack(int64_t main, int64_t sub, bool tomb)
{
    BATON_ASSERT(main >= 0 && main < REV_MAIN_MAX && sub >= 0 && sub < REV_SUB_MAX);
    return (uint64_t)main << (REV_SUB_BITS + 1) | (uint64_t)sub << 1 | (tomb ? 1u : 0u);
}
static inline int64_t rev_main(uint64_t r)
{
    return (int64_t)(r >> (REV_SUB_BITS + 1));
}
static inline int64_t rev_sub(uint64_t r)
{
    return (int64_t)((r >> 1) & (REV_SUB_MAX - 1));
}
static inline bool rev_tomb(uint64_t r)
{
    return r & 1;
}
/* The smallest packed value whose main revision exceeds main. */
static inline uint64_t rev_after_main(int64_t main)
{
    return rev_pack(main + 1, 0, false);
}

/* LMDB record key: 8-byte BE main, 8-byte BE sub, then 't' for a tombstone. */
#define REVKEY_LEN 17
static inline size_t revkey_put(uint8_t *p, uint64_t r)
{
    be64_put(p, (uint64_t)rev_main(r));
    be64_put(p + 8, (uint64_t)rev_sub(r));
    if (rev_tomb(r)) {
        p[16] = 't';
        return 17;
    }
    return 16;
}
/* 0 or BATON_ECORRUPT. */
int revkey_get(const uint8_t *p, size_t len, uint64_t *r);

/* ---- KeyValue codec ------------------------------------------------------------------------- */
struct kvfields {
    struct mvcc_bytes key, value;
    int64_t create_revision, mod_revision, version, lease;
};
size_t kv_encoded_len(const struct kvfields *f);
/* Writes into p (room for kv_encoded_len bytes); returns the length. */
size_t kv_encode(const struct kvfields *f, uint8_t *p);
/* 0 or BATON_ECORRUPT. Views point into p. */
int kv_decode(const uint8_t *p, size_t len, struct kvfields *f);

/* ---- Key index --------------------------------------------------------------------------------
 * An ordered map user key → revisions, plus a hash table over the same entries.
 *
 * Order: a two-level structure of sorted chunks (a B+-tree of height two). Ranges are the main
 * read, so entries must be walked in key order with good locality; a chunk of 128 entry
 * pointers is one binary search and a linear scan; inserting moves at most 127 pointers inside a
 * chunk, and a split moves one pointer array of (keys / ~90) chunk pointers, which at a million
 * keys is ~90 KB every ~64 inserts: cheaper than maintaining a deeper tree, and far more
 * compact than a skip list (no per-entry towers).
 *
 * Exact lookups (every put, delete, compare, compaction and hash check) go through an
 * open-addressing hash table (linear probing, CRC32C of the key, load <= 0.7): one or two
 * memory accesses instead of ~20 dependent ones through the binary searches. Entries never move
 * (revisions beyond the first live in a separate array), so both structures point at them.
 *
 * Cost per key: one allocation of 16 bytes + the key (the common single revision inline), about
 * 11 bytes of chunk slot and 11-23 bytes of hash slot. */
struct krevs {
    uint32_t n, cap;
    uint64_t v[];
};
/* 16 bytes + the key: with the usual single revision inline, a 20-byte key fits glibc's 48-byte
 * chunk. A key with more revisions keeps them in a separate krevs array (until compaction
 * brings it back to one). */
struct kent {
    uint32_t klen;
    uint32_t hash : 31; /* crc32c of the key, top bit dropped */
    uint32_t ool : 1;   /* revisions out of line in r.arr */
    union {
        uint64_t rev; /* inline: the only revision, 0 while none */
        struct krevs *arr;
    } r;
    uint8_t data[]; /* the key */
};
static inline uint32_t kent_nrevs(const struct kent *e)
{
    return e->ool ? e->r.arr->n : (e->r.rev != 0);
}
static inline uint64_t *kent_revs(struct kent *e)
{
    return e->ool ? e->r.arr->v : &e->r.rev;
}
/* The newest revision (0 if none). */
static inline uint64_t kent_last(struct kent *e)
{
    uint32_t n = kent_nrevs(e);
    return n ? kent_revs(e)[n - 1] : 0;
}

#define KCHUNK_MAX 128
struct kchunk {
    uint32_t n;
    struct kent *e[KCHUNK_MAX];
};
struct kidx {
    struct kchunk **chunks;
    size_t nchunks, cap;
    struct kent **tab; /* hash table, tcap slots (a power of two) */
    size_t tcap;
    size_t nkeys;
    size_t bytes; /* heap bytes in use (entries, revision arrays, chunks, arrays, table) */
};
struct kpos {
    size_t c, i;
};

void kidx_init(struct kidx *x);
void kidx_free(struct kidx *x);
/* First position with key >= k (may be the end). */
struct kpos kidx_seek(const struct kidx *x, const uint8_t *k, size_t klen);
static inline struct kent *kidx_at(const struct kidx *x, struct kpos p)
{
    return p.c < x->nchunks ? x->chunks[p.c]->e[p.i] : NULL;
}
static inline struct kpos kidx_next(const struct kidx *x, struct kpos p)
{
    if (++p.i >= x->chunks[p.c]->n) {
        p.c++;
        p.i = 0;
    }
    return p;
}
struct kent *kidx_get(const struct kidx *x, const uint8_t *k, size_t klen);
/* Appends rev to k's revisions, inserting k if absent. 0, BATON_ENOMEM, or BATON_EINVAL when
 * rev is not above the key's last revision (the caller's data is out of order). */
int kidx_add(struct kidx *x, const uint8_t *k, size_t klen, uint64_t rev);
/* Compacts every entry at main revision rev; removes entries left empty. */
void kidx_compact(struct kidx *x, int64_t rev);
/* The newest revision of e with main <= rev; 0 if none. Callers check rev_tomb. */
uint64_t kent_at(struct kent *e, int64_t rev);
/* The newest revision of e strictly below packed r; 0 if none. */
uint64_t kent_before(struct kent *e, uint64_t r);
int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

/* ---- Range keys ------------------------------------------------------------------------------ */
/* True when k is inside [key, end) with etcd's conventions (empty end: key only; "\0": open). */
bool key_in_range(struct mvcc_bytes key, struct mvcc_bytes end, const uint8_t *k, size_t klen);

/* ---- Leases ---------------------------------------------------------------------------------- */
struct lease {
    int64_t id, ttl_s;
    uint64_t expiry_ms;      /* leader only; 0: starts at the next clock reading */
    uint64_t heap_ms;        /* its key in the heap: <= expiry_ms, which renewals move ahead */
    size_t heap_i;           /* SIZE_MAX: not in the heap */
    struct mvcc_bytes *keys; /* attached keys, each an owned copy */
    size_t nkeys, cap;
};
struct lease_table {
    struct lease **slots; /* open addressing, linear probing, power-of-two size */
    size_t cap, n;
    struct lease **heap; /* min-heap on heap_ms, leader only */
    size_t heap_n, heap_cap;
    bool primary;
    uint64_t gen_index; /* id generation: Raft index and a counter within it */
    uint32_t gen_seq;
};
void lease_table_free(struct lease_table *t);
struct lease *lease_find(const struct lease_table *t, int64_t id);
int lease_attach(struct lease_table *t, int64_t id, const uint8_t *k, size_t klen);
void lease_detach(struct lease_table *t, int64_t id, const uint8_t *k, size_t klen);
/* Adds a lease to memory (grant and restore at open). */
int lease_insert(struct lease_table *t, int64_t id, int64_t ttl_s);

/* ---- Watch hub ------------------------------------------------------------------------------ */
struct watcher {
    int64_t id;
    struct mvcc_bytes key, end; /* owned copies */
    bool no_put, no_delete, prev_kv;
    bool synced;
    int64_t min_rev;  /* events below are not for this watcher */
    int64_t next_rev; /* unsynced: the next revision to read from LMDB */
    mvcc_watch_fn fn;
    void *ctx;
};
/* An event of the open batch, copied into the batch arena. */
struct pev {
    uint64_t rev;
    struct mvcc_bytes key, kv, prev;
};

/* ---- The store ------------------------------------------------------------------------------ */
struct mvcc_store {
    struct mvcc_config cfg;
    char *path;
    MDB_env *env;
    MDB_dbi dbi_kv, dbi_meta, dbi_lease, dbi_aux;
    MDB_txn *wtxn; /* open batch or compaction step */
    MDB_txn *rtxn; /* reusable read transaction, reset between reads */
    bool poisoned;
    uint64_t applied_index, applied_term;
    int64_t rev, compact_rev, compact_done_rev;
    uint64_t compact_cursor; /* packed revision the physical compaction examines next */
    bool nospace;
    int64_t op_sub; /* changes made by the write operation in progress */
    struct kidx idx;
    struct lease_table leases;
    uint64_t last_commit_ns; /* the last batch commit, for metrics */
    /* Watch hub. */
    struct watcher **w;
    size_t nw, wcap, w_rr;
    int64_t next_watch_id;
    struct arena ev_arena;
    struct pev *ev;
    size_t nev, evcap;
    /* Scratch memory for one operation. */
    struct arena scratch;
    /* Defragmentation. */
    pthread_t defrag_thread;
    bool defrag_running;
    int defrag_done; /* atomic flag: the copy thread finished */
    int defrag_rc;
};

int mdb_to_err(int rc);
/* The transaction reads use: the open write transaction, or the renewed read transaction. */
int store_read_txn(struct mvcc_store *s, MDB_txn **txn);
void store_read_done(struct mvcc_store *s, MDB_txn *txn);
/* Reads the record for packed rev into the kv fields (views into LMDB memory, valid while txn). */
int store_get_rec(struct mvcc_store *s, MDB_txn *txn, uint64_t rev, struct mvcc_bytes *val);
/* Deletes every live key of the list in one revision (lease revoke). */
int store_delete_keys(struct mvcc_store *s, struct mvcc_bytes *keys, size_t n);
/* Watch hub: deliver the batch's events after commit; free state. */
void watch_deliver_batch(struct mvcc_store *s);
void watch_free_all(struct mvcc_store *s);
int watch_record(struct mvcc_store *s, uint64_t rev, struct mvcc_bytes key, struct mvcc_bytes kv,
                 struct mvcc_bytes prev);

#endif
