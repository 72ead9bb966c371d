/*
 * base: what every baton module shares. Error codes, assertions that stay on in every build,
 * CRC32C, growable byte buffers, byte-order and varint helpers, a bump (arena) allocator, a
 * deterministic PRNG, and the log sink interface. base includes nothing else of baton's.
 */
#ifndef BATON_BASE_H
#define BATON_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Errors ----------------------------------------------------------------------------------
 * Action functions return 0 or a negative code. Codes from the system pass up as -errno; baton's
 * own codes live below BATON_ERR_BASE so they never collide with an errno value. */
enum baton_err {
    BATON_OK = 0,
    BATON_ERR_BASE = -10000,
    BATON_ENOMEM = -10001,        /* allocation failed */
    BATON_EINVAL = -10002,        /* invalid argument from the caller */
    BATON_ECORRUPT = -10003,      /* data read from outside failed a check */
    BATON_ETOOBIG = -10004,       /* a bound was exceeded */
    BATON_ENOTFOUND = -10005,     /* no such item */
    BATON_EEXIST = -10006,        /* item exists already */
    BATON_EBUSY = -10007,         /* try again later; a bounded queue is full */
    BATON_ENOTLEADER = -10008,    /* raft: this member is not the leader */
    BATON_EPROPOSALDROP = -10009, /* raft: proposal dropped (no leader, transfer, ...) */
    BATON_ECOMPACTED = -10010,    /* requested index or revision was compacted */
    BATON_EFUTURE = -10011,       /* requested revision is in the future */
    BATON_EUNAVAIL = -10012,      /* data not available (yet) */
    BATON_ECLOSED = -10013,       /* handle closed or shutting down */
    BATON_ETIMEOUT = -10014,      /* deadline passed */
    BATON_ENOSPACE = -10015,      /* storage quota exceeded */
    BATON_ECONFCHANGE = -10016,   /* raft: a configuration change is pending already */
    BATON_EPROTO = -10017,        /* malformed message from a peer or client */
    BATON_ERR_LAST = -10018,
};

/* Text for a code: baton's own codes and -errno values alike. Never NULL; static storage. */
const char *baton_strerror(int err);

/* ---- Assertions ------------------------------------------------------------------------------
 * For programmer errors only (broken invariants); they stay on in release builds. Bad input from
 * outside is an error code, never an assertion. */
_Noreturn void baton_assert_fail(const char *expr, const char *file, int line, const char *func);
#define BATON_ASSERT(e)     ((e) ? (void)0 : baton_assert_fail(#e, __FILE__, __LINE__, __func__))
#define BATON_UNREACHABLE() baton_assert_fail("unreachable", __FILE__, __LINE__, __func__)

#define BATON_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define BATON_MIN(a, b)    ((a) < (b) ? (a) : (b))
#define BATON_MAX(a, b)    ((a) > (b) ? (a) : (b))

/* ---- CRC32C (Castagnoli) ---------------------------------------------------------------------
 * crc32c_extend(0, p, n) is the CRC of p; pass a previous result to continue over more bytes.
 * Uses SSE4.2 when the CPU has it, slicing-by-8 tables otherwise. */
uint32_t crc32c_extend(uint32_t crc, const void *data, size_t len);
static inline uint32_t crc32c(const void *data, size_t len)
{
    return crc32c_extend(0, data, len);
}

/* ---- Byte order and varints ------------------------------------------------------------------ */
static inline void be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}
static inline uint64_t be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}
static inline void le16_put(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}
static inline uint16_t le16_get(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static inline void le32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void le64_put(uint8_t *p, uint64_t v)
{
    le32_put(p, (uint32_t)v);
    le32_put(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t le64_get(const uint8_t *p)
{
    return (uint64_t)le32_get(p) | (uint64_t)le32_get(p + 4) << 32;
}

#define VARINT_MAX_LEN 10
/* Writes v as a protobuf varint into p (room for VARINT_MAX_LEN); returns bytes written. */
size_t varint_put(uint8_t *p, uint64_t v);
/* Reads a varint from [p, p+len); returns bytes consumed, or 0 if truncated or over-long. */
size_t varint_get(const uint8_t *p, size_t len, uint64_t *v);
static inline size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* ---- Byte buffers ----------------------------------------------------------------------------
 * A growable array of bytes. Zero-initialised is a valid empty buffer. The buffer owns data. */
struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Makes room for at least extra more bytes. 0 or BATON_ENOMEM (the buffer is unchanged). */
int buf_reserve(struct buf *b, size_t extra);
/* Appends len bytes copied from data. 0 or BATON_ENOMEM. */
int buf_append(struct buf *b, const void *data, size_t len);
/* Appends a varint. 0 or BATON_ENOMEM. */
int buf_append_varint(struct buf *b, uint64_t v);
/* Appends printf-formatted text (no terminating NUL counted in len). 0 or BATON_ENOMEM. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes, keeping the rest. */
void buf_consume(struct buf *b, size_t n);
static inline void buf_clear(struct buf *b)
{
    b->len = 0;
}
/* Frees the storage; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);

/* ---- Arena (bump allocator) ------------------------------------------------------------------
 * Many small allocations freed together: per request, per batch. Memory from arena_alloc stays
 * valid until arena_reset or arena_free. Chunks are kept across resets up to keep_bytes. */
struct arena_chunk;
struct arena {
    struct arena_chunk *head; /* chunk being filled */
    size_t chunk_size;        /* default size of new chunks */
    size_t used_bytes;        /* bytes handed out since the last reset */
};

void arena_init(struct arena *a, size_t chunk_size);
/* 8-byte aligned memory of size bytes, or NULL when out of memory. */
void *arena_alloc(struct arena *a, size_t size);
/* Copies size bytes into the arena; NULL when out of memory. */
void *arena_dup(struct arena *a, const void *p, size_t size);
/* Forgets every allocation; keeps the largest chunk for reuse. */
void arena_reset(struct arena *a);
void arena_free(struct arena *a);

/* ---- Deterministic PRNG ----------------------------------------------------------------------
 * xoshiro256** seeded through splitmix64: the same seed gives the same sequence everywhere. */
struct prng {
    uint64_t s[4];
};
void prng_seed(struct prng *r, uint64_t seed);
uint64_t prng_next(struct prng *r);
/* Uniform in [0, n); n > 0. */
uint64_t prng_below(struct prng *r, uint64_t n);
/* True with probability per_million / 1e6. */
bool prng_chance(struct prng *r, uint32_t per_million);

/* ---- Logging ---------------------------------------------------------------------------------
 * Library code never prints: it writes structured key=value lines into a sink the program
 * injects. A NULL sink or a level below the sink's threshold drops the line cheaply. */
enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

typedef void (*log_fn)(void *ctx, enum log_level level, const char *line, size_t len);
struct log_sink {
    log_fn fn;
    void *ctx;
    enum log_level min_level;
};

/* Formats "level=info msg=..." style text: fmt carries the key=value pairs after the level. */
void log_write(const struct log_sink *sink, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *log_level_name(enum log_level level);
/* A ready-made sink function writing lines to stderr (ctx unused). */
void log_fn_stderr(void *ctx, enum log_level level, const char *line, size_t len);

#endif
