/*
 * memfs: an in-memory disk behind struct wal_io for the WAL's tests and fuzzers. It models what
 * a power cut does to a real disk: file contents survive only up to the last fsync/fdatasync of
 * that file, directory entries (creates, renames, unlinks) only once the directory was fsynced.
 * memfs_power_cut() throws the rest away (optionally keeping a torn prefix of the unsynced
 * writes, in order). It counts calls and injects faults: a cut after N mutating calls, a full
 * disk, a failing fdatasync, a slow fdatasync.
 */
#ifndef BATON_TEST_MEMFS_H
#define BATON_TEST_MEMFS_H

#include "wal/wal.h"

struct memfs;

struct memfs *memfs_new(void);
void memfs_free(struct memfs *fs);
/* The I/O table; valid while fs lives. */
const struct wal_io *memfs_io(struct memfs *fs);

/* Mutating calls (open with O_CREAT/O_TRUNC, pwrite, fdatasync, fsync, ftruncate, fallocate,
 * rename, unlink, fsync_dir) made so far. */
uint64_t memfs_ops(struct memfs *fs);
uint64_t memfs_fdatasyncs(struct memfs *fs);
/* From mutating call number n (1-based) on, every call fails with -EIO and changes nothing, as
 * if the power went at that moment. 0 disables. */
void memfs_fail_from_op(struct memfs *fs, uint64_t n);
/* Total bytes all files may occupy; past it pwrite/fallocate return -ENOSPC. 0: unlimited. */
void memfs_space_limit(struct memfs *fs, uint64_t bytes);
/* The n-th fdatasync/fsync from now (1-based) fails with -EIO. 0 disables. */
void memfs_fail_sync(struct memfs *fs, uint64_t n);
/* Every fdatasync sleeps this long (outside the lock) before it takes effect. */
void memfs_sync_delay_us(struct memfs *fs, uint32_t us);

/* While held, every fdatasync/fsync waits (outside the lock) until released: a disk that stalls. */
void memfs_hold_syncs(struct memfs *fs, bool hold);

/* The power cut: every file goes back to its synced content, every directory to its synced
 * entries, all fds close, faults are cleared. torn_seed != 0 keeps a random prefix of each file's
 * unsynced writes (whole calls, then part of one), as a disk writing in order would. */
void memfs_power_cut(struct memfs *fs, uint64_t torn_seed);

/* Direct access for tests: copies a file's current content (malloc'd into *data) or replaces it.
 * 0 or -ENOENT. */
int memfs_read_file(struct memfs *fs, const char *path, uint8_t **data, size_t *len);
int memfs_write_file(struct memfs *fs, const char *path, const uint8_t *data, size_t len);

#endif
