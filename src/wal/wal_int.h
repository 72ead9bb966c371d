/*
 * Internals shared by the WAL's files (not part of the public API): full-length I/O helpers
 * over struct wal_io, the on-disk layout constants, and error-message formatting.
 */
#ifndef BATON_WAL_INT_H
#define BATON_WAL_INT_H

#include "wal/wal.h"

#include <limits.h>

#define WAL_PATH_MAX 1024

/* Segment header: magic[8] version u32 crc u32 seq u64 first_index u64 (little-endian). The CRC
 * covers the 32 bytes with the crc field zeroed. */
#define WAL_SEG_MAGIC   "BATNWAL\x01"
#define WAL_SEG_VERSION 1u
#define WAL_SEG_HDR     32u

/* Record frame: crc u32 | len u32 | type u8 | zero[7] | payload[len] | zero pad to 8 bytes.
 * The CRC32C covers bytes 4..16 of the frame and the payload. A frame of zeros (type 0) is the
 * end of the written part of a preallocated segment. */
#define WAL_REC_HDR 16u
enum wal_rec_type {
    WAL_REC_ENTRY = 1,     /* index u64, term u64, type u32, zero u32, data */
    WAL_REC_HARDSTATE = 2, /* term u64, vote u64, commit u64 */
    WAL_REC_SNAP = 3,      /* index u64, term u64 */
    WAL_REC_TRUNCATE = 4,  /* from_index u64: entries >= from_index are dropped */
};
#define WAL_ENTRY_HDR 24u

static inline uint64_t wal_align8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

/* pread/pwrite the full length: 0, -errno, or BATON_ECORRUPT for a read past the end. */
int wal_read_full(const struct wal_io *io, int fd, void *buf, size_t len, uint64_t off);
int wal_write_full(const struct wal_io *io, int fd, const void *buf, size_t len, uint64_t off);

/* snprintf into an optional message buffer. */
void wal_errf(char *msg, size_t msg_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
