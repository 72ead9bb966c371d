/*
 * mvcc: baton's revisioned key-value store, with etcd v3's semantics, on LMDB.
 *
 * Every change gets a revision (main, sub): main counts write operations (a Put, a DeleteRange
 * that deleted something, a Txn with at least one write), sub counts the changes inside one.
 * LMDB holds one record per change, keyed by the 16-byte big-endian revision (plus a trailing
 * 't' for a deletion, as etcd does) whose value is the packed mvccpb.KeyValue protobuf, so the
 * rpc layer can hand stored bytes to clients unchanged. An in-memory ordered index maps each
 * user key to its revisions (LMDB keys stop at 511 bytes; user keys may be longer); it is
 * rebuilt at open by one scan. Further tables hold meta (applied index and term, revision,
 * compaction), leases, and an auxiliary name → value table for members/cluster data.
 *
 * Threading: one thread (the server's loop) calls everything, except that reads may overlap a
 * defragmentation running in its own thread (see mvcc_defrag_begin).
 *
 * Write path: mvcc_batch_begin(index, term) → for each committed entry mvcc_batch_set_index
 * (its index, term) and its write calls → mvcc_batch_commit. The applied index is written in the
 * same LMDB transaction as the data it covers; per-entry indexes keep generated lease ids equal
 * on every member however each batches its entries. Write calls
 * outside a batch fail with BATON_EINVAL. A write call that returns an error changed nothing
 * (etcd's request-level errors). If LMDB itself fails inside a batch, the batch is aborted and
 * the handle is poisoned (every later call returns BATON_ECLOSED): the caller must close and
 * reopen, which rebuilds memory from the durable state, then replay its WAL from
 * mvcc_applied_index().
 *
 * Durability (unless cfg.no_sync): LMDB is opened with MDB_NOMETASYNC: each batch commit fsyncs the
 * data pages but writes the meta page lazily. After a crash the store therefore opens at the last
 * commit whose meta page reached disk (at worst the one before the last), which is a consistent
 * state whose applied index is the one read by mvcc_applied_index(); the server replays its WAL
 * from there. mvcc_sync() forces the meta page out; call it before releasing WAL segments.
 *
 * Memory returned in responses is allocated in the struct arena the caller passes and stays
 * valid until that arena is reset; nothing points into LMDB's map.
 *
 * Errors (all negative). Codes the server must map to etcd's exact gRPC texts
 * (mvcc_strerror returns these texts):
 *   BATON_ECOMPACTED          "etcdserver: mvcc: required revision has been compacted"
 *   BATON_EFUTURE             "etcdserver: mvcc: required revision is a future revision"
 *   BATON_ENOSPACE            "etcdserver: mvcc: database space exceeded"
 *   MVCC_EDUPKEY              "etcdserver: duplicate key given in txn request"
 *   MVCC_ELEASENOTFOUND       "etcdserver: requested lease not found"
 *   MVCC_EKEYNOTFOUND         "etcdserver: key not found"
 *   MVCC_EVALUEPROVIDED       "etcdserver: value is provided"
 *   MVCC_ELEASEPROVIDED       "etcdserver: lease is provided"
 *   MVCC_EEMPTYKEY            "etcdserver: key is not provided"
 *   MVCC_ELEASEEXISTS         "etcdserver: lease already exists"
 *   MVCC_ELEASETTLTOOLARGE    "etcdserver: too large lease TTL"
 *   MVCC_ETOOMANYOPS          "etcdserver: too many operations in txn request"
 * Others: BATON_ETOOBIG (a bound: more than 8.4 million changes in one revision, e.g. one
 * DeleteRange of more keys, or the 2^40th revision; see internal.h), BATON_EINVAL (misuse),
 * BATON_ENOMEM, BATON_ECORRUPT (bad data file; the open error text names the path),
 * BATON_EBUSY (writes while a defragmentation runs, or a compaction step inside a batch),
 * BATON_ENOTLEADER (leader-only lease calls on a follower), BATON_ECLOSED (poisoned handle),
 * -errno from the system.
 */
#ifndef BATON_MVCC_H
#define BATON_MVCC_H

#include "base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mvcc_err {
    MVCC_EDUPKEY = -10201,
    MVCC_ELEASENOTFOUND = -10202,
    MVCC_EKEYNOTFOUND = -10203,
    MVCC_EVALUEPROVIDED = -10204,
    MVCC_ELEASEPROVIDED = -10205,
    MVCC_EEMPTYKEY = -10206,
    MVCC_ELEASEEXISTS = -10207,
    MVCC_ELEASETTLTOOLARGE = -10208,
    MVCC_ETOOMANYOPS = -10209,
};

/* etcd's gRPC error text for the codes above and for BATON_ECOMPACTED/EFUTURE/ENOSPACE; falls
 * back to baton_strerror. Static storage. */
const char *mvcc_strerror(int err);

struct mvcc_store;

struct mvcc_config {
    const char *path;         /* LMDB data file (a file, not a directory); lock file path-lock */
    uint64_t quota_bytes;     /* backend quota; default 2 GiB as etcd */
    uint64_t map_size_bytes;  /* LMDB map size; default quota + max(quota/2, 64 MiB) headroom */
    uint32_t max_txn_ops;     /* default 128 as etcd's --max-txn-ops */
    uint32_t watch_batch_max; /* most events per watch callback; default 1000 */
    int64_t min_lease_ttl_s;  /* shorter lease TTLs are raised to this (etcd: 1.5 × election) */
    /* Batch commits do not fsync (MDB_NOSYNC): a killed process loses nothing (the page cache
     * survives it), but after an operating-system crash the file may be torn and must not be
     * used. The caller takes that on (the server rebuilds the store from its snapshot and WAL
     * after a reboot; see server.h). mvcc_sync and mvcc_close still flush. Default false. */
    bool no_sync;
    const struct log_sink *log; /* borrowed, may be NULL */
};

void mvcc_config_default(struct mvcc_config *cfg);

/* Opens (creating if absent) the store at cfg->path, rebuilds the index, restores leases and
 * resumes an unfinished compaction's bookkeeping. On error, errbuf (if non-NULL) receives a
 * NUL-terminated message naming the path. cfg is copied (path too). */
int mvcc_open(const struct mvcc_config *cfg, struct mvcc_store **out, char *errbuf,
              size_t errbuf_len);
/* Closes the handle (aborting an open batch, cancelling watchers without callbacks). */
void mvcc_close(struct mvcc_store *s);

/* ---- State ------------------------------------------------------------------------------- */
uint64_t mvcc_applied_index(const struct mvcc_store *s);
uint64_t mvcc_applied_term(const struct mvcc_store *s);
int64_t mvcc_rev(const struct mvcc_store *s);
int64_t mvcc_compact_rev(const struct mvcc_store *s);
size_t mvcc_key_count(const struct mvcc_store *s);
/* Bytes of heap the key index uses (entries + ordered structure), for bytes-per-key reports. */
size_t mvcc_index_bytes(const struct mvcc_store *s);
/* Size of the data file in use (LMDB pages in use × page size) and the file's size on disk. */
int mvcc_db_size(struct mvcc_store *s, uint64_t *in_use_bytes, uint64_t *file_bytes);
/* Forces the meta page to disk (mdb_env_sync(force)). */
int mvcc_sync(struct mvcc_store *s);

/* ---- Batches ------------------------------------------------------------------------------ */
/* index/term: the last Raft entry the batch covers; must not go backwards. */
int mvcc_batch_begin(struct mvcc_store *s, uint64_t index, uint64_t term);
/* Commits (fsync of data pages), then delivers the batch's watch events. */
int mvcc_batch_commit(struct mvcc_store *s);
/* Drops the batch; memory state is then inconsistent, so the handle is poisoned. */
void mvcc_batch_abort(struct mvcc_store *s);
/* Moves the applied index forward inside an open batch without any other change (entries that
 * carry no mvcc operation). */
int mvcc_batch_set_index(struct mvcc_store *s, uint64_t index, uint64_t term);

/* ---- Requests and responses (mirror etcd's rpc.proto) ----------------------------------- */
struct mvcc_bytes {
    const uint8_t *p; /* borrowed */
    size_t len;
};

/* A KeyValue: packed holds the mvccpb.KeyValue bytes, the other fields are decoded views into
 * the same arena memory. */
struct mvcc_kv {
    const uint8_t *packed;
    size_t packed_len;
    struct mvcc_bytes key, value;
    int64_t create_revision, mod_revision, version, lease;
};

enum mvcc_sort_order { MVCC_SORT_NONE = 0, MVCC_SORT_ASCEND = 1, MVCC_SORT_DESCEND = 2 };
enum mvcc_sort_target {
    MVCC_SORT_KEY = 0,
    MVCC_SORT_VERSION = 1,
    MVCC_SORT_CREATE = 2,
    MVCC_SORT_MOD = 3,
    MVCC_SORT_VALUE = 4,
};

struct mvcc_range_req {
    struct mvcc_bytes key, range_end; /* range_end empty: key only; "\0": every key >= key */
    int64_t limit;                    /* 0: no limit */
    int64_t revision;                 /* <= 0: current */
    enum mvcc_sort_order sort_order;
    enum mvcc_sort_target sort_target;
    bool keys_only, count_only;
    int64_t min_mod_revision, max_mod_revision, min_create_revision, max_create_revision;
};
struct mvcc_range_resp {
    int64_t header_revision;
    struct mvcc_kv *kvs;
    size_t kvs_len;
    bool more;
    int64_t count;
};

struct mvcc_put_req {
    struct mvcc_bytes key, value;
    int64_t lease;
    bool prev_kv, ignore_value, ignore_lease;
};
struct mvcc_put_resp {
    int64_t header_revision;
    struct mvcc_kv *prev_kv; /* NULL when none or not asked */
};

struct mvcc_delete_req {
    struct mvcc_bytes key, range_end;
    bool prev_kv;
};
struct mvcc_delete_resp {
    int64_t header_revision;
    int64_t deleted;
    struct mvcc_kv *prev_kvs;
    size_t prev_kvs_len;
};

enum mvcc_cmp_result {
    MVCC_CMP_EQUAL = 0,
    MVCC_CMP_GREATER = 1,
    MVCC_CMP_LESS = 2,
    MVCC_CMP_NOT_EQUAL = 3
};
enum mvcc_cmp_target {
    MVCC_CMP_VERSION = 0,
    MVCC_CMP_CREATE = 1,
    MVCC_CMP_MOD = 2,
    MVCC_CMP_VALUE = 3,
    MVCC_CMP_LEASE = 4
};
struct mvcc_compare {
    enum mvcc_cmp_result result;
    enum mvcc_cmp_target target;
    struct mvcc_bytes key, range_end;
    int64_t number;          /* version, create/mod revision or lease, per target */
    struct mvcc_bytes value; /* for MVCC_CMP_VALUE */
};

enum mvcc_op_type { MVCC_OP_RANGE = 1, MVCC_OP_PUT = 2, MVCC_OP_DELETE = 3, MVCC_OP_TXN = 4 };
struct mvcc_txn_req;
struct mvcc_op {
    enum mvcc_op_type type;
    union {
        struct mvcc_range_req range;
        struct mvcc_put_req put;
        struct mvcc_delete_req del;
        const struct mvcc_txn_req *txn; /* borrowed */
    } u;
};
struct mvcc_txn_req {
    const struct mvcc_compare *compare; /* borrowed arrays */
    size_t compare_len;
    const struct mvcc_op *success;
    size_t success_len;
    const struct mvcc_op *failure;
    size_t failure_len;
};
struct mvcc_txn_resp;
struct mvcc_op_resp {
    enum mvcc_op_type type;
    union {
        struct mvcc_range_resp range;
        struct mvcc_put_resp put;
        struct mvcc_delete_resp del;
        struct mvcc_txn_resp *txn;
    } u;
};
struct mvcc_txn_resp {
    int64_t header_revision;
    bool succeeded;
    struct mvcc_op_resp *responses;
    size_t responses_len;
};

/* Reads at the current state (inside an open batch: including the batch's writes). */
int mvcc_range(struct mvcc_store *s, const struct mvcc_range_req *req, struct arena *a,
               struct mvcc_range_resp *resp);
/* mvcc_range without copying the records: resp's KeyValues (packed, key, value) point into the
 * store's mapped pages, valid only until fn returns (fn must not call into the store); only the
 * small parts (the kvs array, keys_only re-encodings) come from a. Returns fn's result, or the
 * range's error (then fn is not called). For responses encoded straight into their output. */
typedef int (*mvcc_range_fn)(void *ctx, const struct mvcc_range_resp *resp);
int mvcc_range_borrow(struct mvcc_store *s, const struct mvcc_range_req *req, struct arena *a,
                      mvcc_range_fn fn, void *ctx);
/* Writes: inside a batch only. */
int mvcc_put(struct mvcc_store *s, const struct mvcc_put_req *req, struct arena *a,
             struct mvcc_put_resp *resp);
int mvcc_delete_range(struct mvcc_store *s, const struct mvcc_delete_req *req, struct arena *a,
                      struct mvcc_delete_resp *resp);
/* A Txn; read-only txns may run outside a batch. Validates with mvcc_txn_check first. */
int mvcc_txn(struct mvcc_store *s, const struct mvcc_txn_req *req, struct arena *a,
             struct mvcc_txn_resp *resp);
/* etcd's request checks for a txn (op count, empty keys, put flags, duplicate keys); the rpc
 * layer may call it before proposing, as etcd does. */
int mvcc_txn_check(const struct mvcc_txn_req *req, uint32_t max_txn_ops);
/* Compaction (inside a batch): errors for rev <= compacted or rev > current. The index is
 * compacted at once; LMDB records are removed by mvcc_compact_step in bounded steps. */
int mvcc_compact(struct mvcc_store *s, int64_t rev);
/* Removes up to max_records superseded records in one write transaction (outside a batch);
 * *done tells whether the physical compaction has finished. */
int mvcc_compact_step(struct mvcc_store *s, size_t max_records, bool *done);
bool mvcc_compact_pending(const struct mvcc_store *s);

/* ---- Hash (HashKV) ------------------------------------------------------------------------ */
/* CRC32C over every record with main revision <= rev (rev <= 0: current) that survives the
 * compaction at compact_rev, then over compact_rev: equal on members that applied the same
 * entries, whatever the progress of their physical compaction. */
int mvcc_hash_kv(struct mvcc_store *s, int64_t rev, uint32_t *hash, int64_t *compact_rev,
                 int64_t *header_rev);

/* ---- Auxiliary table (members, cluster, ...) ------------------------------------------- */
/* name: 1..400 bytes. Put/delete inside a batch; get copies into the arena. */
int mvcc_aux_put(struct mvcc_store *s, struct mvcc_bytes name, struct mvcc_bytes value);
int mvcc_aux_delete(struct mvcc_store *s, struct mvcc_bytes name);
int mvcc_aux_get(struct mvcc_store *s, struct mvcc_bytes name, struct arena *a,
                 struct mvcc_bytes *value);
/* Up to max entries whose names start with prefix (empty: all), in name order, copied into the
 * arena; *more tells whether entries were left out. */
int mvcc_aux_list(struct mvcc_store *s, struct mvcc_bytes prefix, size_t max, struct arena *a,
                  struct mvcc_bytes **names, struct mvcc_bytes **values, size_t *n, bool *more);

/* ---- Leases -------------------------------------------------------------------------------
 * Grant and revoke are replicated (inside a batch). Renew, promote, demote and expiry queries
 * are leader-local, never persisted, as in etcd. */
#define MVCC_MAX_LEASE_TTL 9000000000LL
/* id 0: a fresh id derived from the Raft index set by mvcc_batch_begin/set_index (identical on
 * every member when the server sets the index of each entry before applying it). The TTL is
 * raised to min_lease_ttl_s; *granted_ttl_s (may be NULL) gets the TTL in force. */
int mvcc_lease_grant(struct mvcc_store *s, int64_t id, int64_t ttl_s, int64_t *granted_id,
                     int64_t *granted_ttl_s);
/* Deletes the attached keys in one revision, then the lease. */
int mvcc_lease_revoke(struct mvcc_store *s, int64_t id);
/* Leader: resets the lease's expiry to now + TTL; *ttl_s gets the TTL. */
int mvcc_lease_renew(struct mvcc_store *s, int64_t id, uint64_t now_ms, int64_t *ttl_s);
/* Leader: this member became leader at now_ms; every lease gets a full TTL from now. */
void mvcc_lease_promote(struct mvcc_store *s, uint64_t now_ms);
/* Follower: no expiry tracking. */
void mvcc_lease_demote(struct mvcc_store *s);
/* Leader: up to max ids of leases expired at now_ms (in heap order, not sorted); *n gets the
 * count. Leases stay until their revoke is applied, so a later call reports them again. */
int mvcc_lease_expired(struct mvcc_store *s, uint64_t now_ms, int64_t *ids, size_t max, size_t *n);
struct mvcc_lease_info {
    int64_t id, ttl_s, granted_ttl_s; /* ttl_s: remaining (-1: expired/not tracked) */
    struct mvcc_bytes *keys;          /* in the arena when asked */
    size_t keys_len;
};
int mvcc_lease_ttl(struct mvcc_store *s, int64_t id, uint64_t now_ms, bool keys, struct arena *a,
                   struct mvcc_lease_info *info);
/* Every lease id, ascending, in the arena. */
int mvcc_lease_list(struct mvcc_store *s, struct arena *a, int64_t **ids, size_t *n);

/* ---- Watch hub ----------------------------------------------------------------------------- */
enum mvcc_event_type { MVCC_EVENT_PUT = 0, MVCC_EVENT_DELETE = 1 };
struct mvcc_event {
    enum mvcc_event_type type;
    const uint8_t *kv; /* packed mvccpb.KeyValue (for deletes: key and mod_revision) */
    size_t kv_len;
    const uint8_t *prev_kv; /* NULL unless the watcher asked and the previous value exists */
    size_t prev_kv_len;
};
/* One delivery. compact_revision != 0: the watcher's history was compacted; it is cancelled
 * after this call (whose return value is ignored). events_len == 0 and compact_revision == 0:
 * a progress notification. */
struct mvcc_watch_batch {
    int64_t watch_id;
    int64_t header_revision;
    int64_t compact_revision;
    const struct mvcc_event *events; /* valid during the call only */
    size_t events_len;
};
/* Returns 0 when it took the batch, BATON_EBUSY when its own bounded buffer is full: the watcher
 * then moves to the catch-up set and the same events are re-read from LMDB by mvcc_watch_step.
 * The callback must not call into the store (cancel, create, ...): it queues such work for
 * after the call that delivered (mvcc_batch_commit, mvcc_watch_step, mvcc_watch_progress). */
typedef int (*mvcc_watch_fn)(void *ctx, const struct mvcc_watch_batch *b);

struct mvcc_watch_req {
    struct mvcc_bytes key, range_end; /* as Range */
    int64_t start_revision;           /* <= 0: from the next revision */
    bool no_put, no_delete, prev_kv;
};
/* Registers a watcher. BATON_ECOMPACTED (with *compact_rev set) when start_revision is below the
 * compaction: no watcher is created. History from start_revision is replayed by
 * mvcc_watch_step; new events are delivered at each batch commit. */
int mvcc_watch_create(struct mvcc_store *s, const struct mvcc_watch_req *req, mvcc_watch_fn fn,
                      void *ctx, int64_t *watch_id, int64_t *compact_rev);
int mvcc_watch_cancel(struct mvcc_store *s, int64_t watch_id);
/* Sends a progress notification (header revision = current) through the callback if the
 * watcher is synced; BATON_EBUSY if it is catching up (etcd sends none then). */
int mvcc_watch_progress(struct mvcc_store *s, int64_t watch_id);
/* Feeds watchers that are behind from LMDB: reads at most max_events events in total, whole
 * revisions at a time. *pending tells whether any watcher is still behind. */
int mvcc_watch_step(struct mvcc_store *s, size_t max_events, bool *pending);
size_t mvcc_watch_count(const struct mvcc_store *s);
/* Leases held now. */
size_t mvcc_lease_count(const struct mvcc_store *s);
/* How long the last mvcc_batch_commit's LMDB commit (page writes and fsync) took, in ns; 0
 * before the first. Measured on the monotonic clock, for metrics only. */
uint64_t mvcc_last_commit_ns(const struct mvcc_store *s);
size_t mvcc_watch_unsynced_count(const struct mvcc_store *s);

/* ---- Quota and alarm ----------------------------------------------------------------------- */
/* True when the data in use exceeds the quota: the leader then proposes the NOSPACE alarm. */
bool mvcc_quota_exceeded(struct mvcc_store *s);
/* Replicated (inside a batch): arms or disarms NOSPACE. While armed, Put, Txn with a put and
 * LeaseGrant fail with BATON_ENOSPACE; deletes, compaction and reads still work. */
int mvcc_alarm_nospace(struct mvcc_store *s, bool armed);
bool mvcc_alarm_nospace_armed(const struct mvcc_store *s);

/* ---- Defragmentation -------------------------------------------------------------------------
 * An online compacting copy (mdb_env_copyfd2 with MDB_CP_COMPACT) into path.defrag, made by a
 * thread of its own, then a switch. Reads continue during the copy. Writes (batches, compaction
 * steps) are refused with BATON_EBUSY from begin until the switch, because the copy is a
 * snapshot: the server keeps its committed entries until mvcc_defrag_poll reports done. */
int mvcc_defrag_begin(struct mvcc_store *s);
/* Switches files when the copy finished: *done true once the store uses the compacted file
 * (or the copy failed: the error is returned and the old file stays in use). */
int mvcc_defrag_poll(struct mvcc_store *s, bool *done);
/* begin + wait + switch. */
int mvcc_defrag(struct mvcc_store *s);
bool mvcc_defrag_running(const struct mvcc_store *s);

/* ---- Snapshots (snapshot.c) ------------------------------------------------------------------
 * mvcc_snapshot_copy writes a consistent, compacted copy of the data file to fd under an LMDB
 * read transaction; it may run on another thread while the store is used, but not during a
 * defragmentation's switch (do not start one while a copy runs) nor after mvcc_close. */
int mvcc_snapshot_copy(struct mvcc_store *s, int fd);
/* For a store restored from a snapshot: applied index and term back to 0 and the auxiliary
 * table (the old cluster's Raft configuration and members) emptied, so the member bootstraps a
 * new cluster on top of the data. Outside a batch. */
int mvcc_snapshot_reset(struct mvcc_store *s);
/* Builds the data file db_path (which must not exist) from a snapshot file: the database
 * followed by its SHA-256 (etcdctl snapshot save's format, and ours). The checksum is verified
 * before anything is written; then the copy is reset with mvcc_snapshot_reset. On error err
 * names the path and the reason, and db_path is removed. 0, BATON_ECORRUPT, BATON_EINVAL,
 * -errno. */
int mvcc_snapshot_restore(const char *snap_path, const char *db_path, char *err, size_t err_len);

#endif
