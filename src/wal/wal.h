/*
 * wal: baton's write-ahead log and snapshot files. The WAL stores three first-class record
 * kinds — log entries (index, term, type, payload), the hard state (term, vote, commit) and
 * snapshot markers (index, term) — in segmented, preallocated, append-only files; every record
 * is framed with its length, type and a CRC32C. A dedicated WAL thread writes and fdatasyncs
 * submitted batches (group commit: one fdatasync covers every batch queued while the previous
 * one ran) and reports durability back to the loop thread. The WAL knows neither Raft nor gRPC.
 *
 * Files in the WAL directory:
 *   <seq:016x>-<first_index:016x>.wal   a segment: a 32-byte header (magic, version, seq, first
 *                                       index, header CRC) followed by 8-byte aligned records
 *   *.wal.tmp                           a segment being created; removed by wal_open
 * Files in a snapshot directory:
 *   <term:016x>-<index:016x>.snap       a snapshot file: a 48-byte header (magic, version,
 *                                       index, term, content length, content CRC32C) + content
 *   *.snap.tmp                          a snapshot being written; removed by wal_snap_purge
 *
 * Threads: every wal_* function is called from one thread (the loop thread), except the
 * notify callback, which the WAL thread calls. The snapshot functions are independent of any
 * struct wal and may run on any thread, one writer or reader per handle.
 */
#ifndef BATON_WAL_H
#define BATON_WAL_H

#include "base/base.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- I/O table ----------------------------------------------------------------------------
 * Every file operation of the WAL and the snapshot files goes through this table, so tests can
 * plug in a disk that fails or loses unsynced writes. Every function returns 0 (or a count /
 * fd >= 0) or -errno. The POSIX table is the default. Calls may come from the WAL thread and the
 * loop thread concurrently: an implementation must be thread-safe. */
struct wal_io {
    void *ctx;
    /* open(2) flags (O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_RDONLY are used). fd or -errno. */
    int (*open)(void *ctx, const char *path, int flags, int mode);
    int (*close)(void *ctx, int fd);
    /* Full-length semantics are the WAL's business: these may return short counts. */
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t len, uint64_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t len, uint64_t off);
    int (*fdatasync)(void *ctx, int fd);
    int (*fsync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, uint64_t len);
    /* Reserves [off, off+len) (zero-filled, file size extended); -ENOSPC when the disk is full. */
    int (*fallocate)(void *ctx, int fd, uint64_t off, uint64_t len);
    int (*file_size)(void *ctx, int fd, uint64_t *size);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    /* Makes the directory's entries (creates, renames, unlinks) durable. */
    int (*fsync_dir)(void *ctx, const char *dir);
    /* mkdir(2): one level, the parent must exist; the WAL treats -EEXIST as success. */
    int (*mkdir)(void *ctx, const char *path, int mode);
    /* Calls fn for each entry name but "." and ".."; a non-zero return from fn stops the walk
     * and is returned. fn may unlink entries of dir. */
    int (*list_dir)(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg);
};

/* The real thing: POSIX calls (fallocate(2), fdatasync(2), ...). Static storage. */
const struct wal_io *wal_io_posix(void);

/* ---- Records --------------------------------------------------------------------------------- */
struct wal_entry {
    uint64_t index;
    uint64_t term;
    uint32_t type;       /* opaque to the WAL (Raft's entry type) */
    const uint8_t *data; /* borrowed */
    size_t len;
};

struct wal_hard_state {
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
};

struct wal_snap_marker {
    uint64_t index;
    uint64_t term;
};

/* ---- Opening and recovery --------------------------------------------------------------------
 * wal_open reads every segment back. A torn or zero-filled tail of the LAST segment (a crash in
 * the middle of an unsynced write) is truncated and logged with file and offset. A bad record
 * anywhere else — in an earlier segment, or followed by a valid record — is BATON_ECORRUPT
 * with the file and offset in errmsg: never skipped. The WAL cannot tell which bytes of the last
 * segment were synced, so it assumes a crash leaves a prefix of the last unsynced write (what
 * disks that write in order do); a device that persisted later sectors of an unsynced write but
 * not earlier ones makes recovery refuse with BATON_ECORRUPT rather than guess. */
struct wal_options {
    const char *dir;            /* created if missing; borrowed during wal_open only */
    const struct wal_io *io;    /* NULL: wal_io_posix(); borrowed, must outlive the wal */
    const struct log_sink *log; /* NULL: silent; borrowed, must outlive the wal */
    uint64_t segment_bytes;     /* 0: 64 MiB. Preallocated size of each segment */
    uint32_t queue_batches_max; /* 0: 1024. Submitted, not yet durable batches */
    uint64_t queue_bytes_max;   /* 0: 64 MiB. Their encoded bytes */
    uint32_t record_bytes_max;  /* 0: segment_bytes / 4. Largest entry payload accepted */
    /* Called on the WAL thread after each fdatasync completes (or the WAL fails). It must only
     * wake the loop thread (e.g. uv_async_send), which then calls wal_poll. May be NULL. */
    void (*notify)(void *ctx);
    void *notify_ctx;
    /* Deterministic mode for simulations and tests: no WAL thread. Submitted batches are written
     * and synced (as one group) only inside wal_step, wal_wait or wal_close, on the caller's
     * thread, which then also runs notify. */
    bool no_thread;
};

struct wal;

/* Opens (creating if empty) the WAL in opt->dir, recovers it and starts the WAL thread.
 * On success *out is the handle; on failure *out is NULL and errmsg (if not NULL) holds a line
 * naming the file and offset. Errors: BATON_ECORRUPT, BATON_EINVAL (options), BATON_ENOMEM,
 * -errno from I/O (-ENOSPC when the first segment cannot be preallocated). */
int wal_open(const struct wal_options *opt, struct wal **out, char *errmsg, size_t errmsg_len);

/* Drains queued batches (writes and syncs them), stops the thread and frees the handle.
 * Returns the WAL's sticky error, if any (the handle is freed regardless). */
int wal_close(struct wal *w);

/* What recovery found (and what has been submitted since): the latest hard state and snapshot
 * marker (zeroes when none was ever saved) and the log's live entries, which are those above
 * the snapshot marker: [first_index, last_index], empty when last_index < first_index. */
struct wal_state {
    struct wal_hard_state hs;
    struct wal_snap_marker snap;
    uint64_t first_index;
    uint64_t last_index;
};
void wal_state_get(const struct wal *w, struct wal_state *out);

/* Reads entries [lo, hi] (clamped to the live range) in order into fn; data is valid only during
 * the call. fn returning non-zero stops the walk and is returned. Entries submitted but not yet
 * written may be missing (they are in the caller's memory anyway). fn runs with the log's lock
 * held — the WAL thread cannot start writing a group meanwhile — so it must be quick and must
 * not call wal_* functions. Errors: -errno from pread, BATON_ENOMEM, BATON_ECORRUPT if a record
 * changed on disk since it was written. */
typedef int (*wal_entry_fn)(void *ctx, const struct wal_entry *e);
int wal_read_entries(struct wal *w, uint64_t lo, uint64_t hi, wal_entry_fn fn, void *ctx);

/* ---- Appending ---------------------------------------------------------------------------------
 * A batch is written in this order: the snapshot marker, the entries, the hard state (each
 * optional). Entries must have consecutive indexes. If the first entry's index is at or below
 * the last submitted index, the entries from that index on are replaced (Raft overwriting a
 * conflicting suffix): the WAL records a truncation, so recovery yields the new log. An index
 * above last+1 is BATON_EINVAL unless a snapshot marker (in this batch or before) covers the gap.
 * A snapshot marker's index must not go backwards. */
struct wal_batch {
    const struct wal_entry *entries; /* borrowed; copied by wal_submit */
    size_t entries_len;
    const struct wal_hard_state *hs;    /* optional; copied */
    const struct wal_snap_marker *snap; /* optional; copied */
};

/* Queues a batch for the WAL thread; *seq (optional) receives its sequence number (1, 2, ...).
 * Errors: BATON_EBUSY when the queue is full (nothing queued: retry after a completion),
 * BATON_EINVAL for a malformed batch, BATON_ETOOBIG for an entry above record_bytes_max,
 * BATON_ENOMEM, or the sticky error after the WAL failed (see wal_poll). */
int wal_submit(struct wal *w, const struct wal_batch *b, uint64_t *seq);

/* Completion report, collected by the loop thread after notify (or at any time). */
struct wal_progress {
    uint64_t durable_seq;     /* every batch with seq <= this is on disk */
    uint64_t durable_index;   /* last index of the durable log (0: none) */
    struct wal_hard_state hs; /* latest durable hard state */
    uint64_t fsyncs;          /* fdatasync calls made for batches so far */
    int err;                  /* sticky: 0, or the I/O error that stopped the WAL */
};
void wal_poll(struct wal *w, struct wal_progress *out);

/* How long each fdatasync of the log took, in ns (monotonic clock; for metrics only): moves up
 * to max durations not taken before into ns, oldest first, and returns how many. The WAL keeps
 * the last WAL_FSYNC_SAMPLES; older ones nobody took are dropped. */
#define WAL_FSYNC_SAMPLES 256
size_t wal_fsync_samples(struct wal *w, uint64_t *ns, size_t max);

/* Blocks until batch seq is durable or the WAL failed; returns 0 or the sticky error. For
 * tests, tools and shutdown paths; the loop thread uses notify + wal_poll instead. */
int wal_wait(struct wal *w, uint64_t seq);

/* no_thread mode only: writes and syncs every queued batch now, as one group. Returns the sticky
 * error (0 if none); BATON_EINVAL when the WAL has its own thread. */
int wal_step(struct wal *w);

/* Once the WAL failed (an fdatasync, write or preallocation error), it never writes again: an
 * fsync that failed cannot be retried and trusted (pages may have been dropped). Every later
 * wal_submit returns the sticky error; the process must reopen (recover) the WAL. */

/* ---- Releasing old segments ------------------------------------------------------------------
 * Deletes whole segments whose entries are all at or below snap_index (never the segment being
 * written). CONTRACT: call it only after the state those entries produced is durable elsewhere
 * — for baton, after mdb_env_sync() returned with the applied index >= snap_index — and after a
 * snapshot marker at snap_index was made durable through this WAL (BATON_EINVAL otherwise).
 * Blocks for the unlinks and one directory fsync per segment (the WAL thread keeps writing).
 * Returns 0, BATON_ENOMEM or -errno; *released (optional) counts deleted segments. */
int wal_release(struct wal *w, uint64_t snap_index, uint32_t *released);

/* Number of segment files (for tests and metrics). */
uint32_t wal_segments(const struct wal *w);

/* ---- Snapshot files ----------------------------------------------------------------------------
 * Written to <dir>/<name>.tmp in chunks, fsynced, renamed into place, directory fsynced; content
 * CRC32C checked on load. No snapshot ever needs to be in memory whole. */
#define WAL_SNAP_CHUNK_MAX (4u << 20) /* bytes per wal_snap_write / wal_snap_read call */

struct wal_snap_writer;
/* Starts <dir>/<term>-<index>.snap (through <name>.tmp). io NULL: POSIX.
 * Errors: -errno, BATON_ENOMEM, BATON_EEXIST if that snapshot exists already. */
int wal_snap_create(const char *dir, const struct wal_io *io, uint64_t index, uint64_t term,
                    struct wal_snap_writer **out);
/* Appends len (<= WAL_SNAP_CHUNK_MAX) bytes; data borrowed. 0, BATON_ETOOBIG or -errno. */
int wal_snap_write(struct wal_snap_writer *s, const void *data, size_t len);
/* Writes the header, fsyncs, renames, fsyncs the directory, frees s. 0 or -errno (the temp file
 * is removed on failure and s freed either way). */
int wal_snap_finish(struct wal_snap_writer *s);
/* Drops the temp file and frees s. */
void wal_snap_abort(struct wal_snap_writer *s);

struct wal_snap_info {
    uint64_t index;
    uint64_t term;
    uint64_t len; /* content bytes */
};

/* Finds the newest snapshot in dir (highest index) and writes its file name (no directory)
 * into name. BATON_ENOTFOUND when there is none; -errno from listing. */
int wal_snap_latest(const char *dir, const struct wal_io *io, char *name, size_t name_len);

struct wal_snap_reader;
/* Opens <dir>/<name>, checks the header and verifies the content CRC in one streaming pass
 * before returning, so a reader that opened is known good. Errors: BATON_ECORRUPT (errmsg names
 * the path and what failed), -errno, BATON_ENOMEM. */
int wal_snap_open(const char *dir, const char *name, const struct wal_io *io,
                  struct wal_snap_reader **out, struct wal_snap_info *info, char *errmsg,
                  size_t errmsg_len);
/* Reads the next up to len bytes of content into buf; *got = 0 at the end. 0 or -errno, or
 * BATON_ECORRUPT if the file changed after it was verified (checked again at the end). */
int wal_snap_read(struct wal_snap_reader *r, void *buf, size_t len, size_t *got);
void wal_snap_close(struct wal_snap_reader *r);

/* Deletes all but the keep newest snapshot files in dir and stale *.snap.tmp files (so never
 * call it while a snapshot is being written into dir), then fsyncs the directory. 0 or -errno;
 * *removed (optional) counts deleted files. */
int wal_snap_purge(const char *dir, const struct wal_io *io, uint32_t keep, uint32_t *removed);

#endif
