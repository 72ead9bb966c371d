/*
 * cluster_tso: the leader's timestamp oracle and id allocator, the configuration's JSON
 * validator and cluster-version arithmetic. Pure logic: no I/O, no clock (time is a parameter),
 * no Raft. The rpc services (svc_baton_tso.c, svc_baton_config.c) read the replicated keys,
 * propose the compare-and-set transactions these objects ask for, and report the outcome back.
 *
 * TSO (PD's design). A timestamp is physical_ms << 18 | logical. The leader hands timestamps
 * out from memory below a window bound persisted through Raft at /baton/tso: every timestamp
 * any leader ever handed out has a physical part <= the persisted bound. A new leader reads the
 * bound S, persists a new one with a compare on S (so a stale leader cannot overwrite a newer
 * window), and starts at physical max(now, S + 1): strictly above everything handed out before.
 * Ranges are contiguous integers, so a logical part that overflows moves into the next
 * millisecond; a clock that steps back never lowers the next value (it is at least last + 1).
 *
 * Ids: /baton/ids holds the next id never handed out. The leader reserves a chunk [S, E) by a
 * compare-and-set from S to E and hands ids out of it from memory; a new leader starts at
 * whatever the key holds, so ids left in an old leader's chunk are skipped, never repeated.
 */
#ifndef BATON_CLUSTER_TSO_H
#define BATON_CLUSTER_TSO_H

#include "base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Timestamps ----------------------------------------------------------------------------- */
#define TSO_LOGICAL_BITS    18
#define TSO_COUNT_MAX       (1u << TSO_LOGICAL_BITS) /* 262144 per request */
#define TSO_WINDOW_MS       3000u                    /* a window reaches this far past now */
#define TSO_EXTEND_BELOW_MS 1000u                    /* extend when less than this remains */
/* physical_ms must stay below 2^46 so that the shifted value fits 64 bits (year 4199). */
#define TSO_PHYSICAL_MAX ((UINT64_C(1) << (64 - TSO_LOGICAL_BITS)) - 1)

static inline uint64_t tso_compose(uint64_t physical_ms, uint32_t logical)
{
    return physical_ms << TSO_LOGICAL_BITS | logical;
}
static inline uint64_t tso_physical(uint64_t ts)
{
    return ts >> TSO_LOGICAL_BITS;
}

struct tso {
    uint64_t term;      /* the leadership being served; 0: not leading */
    bool ready;         /* a window of this term is persisted: timestamps may be handed out */
    bool proposing;     /* a window proposal is in flight */
    uint64_t limit_ms;  /* the persisted bound (valid when ready) */
    uint64_t last;      /* the last timestamp handed out (or the floor minus one) */
    uint32_t window_ms; /* TSO_WINDOW_MS unless a test sets it */
    uint32_t extend_ms; /* TSO_EXTEND_BELOW_MS likewise */
    uint64_t windows;   /* persisted windows (statistics) */
};

void tso_init(struct tso *t);
/* This member leads `term` (non-zero) from now on: the window is forgotten and nothing is handed
 * out until a window of this term is saved. Calling it again with the same term changes
 * nothing. */
void tso_lead(struct tso *t, uint64_t term);
/* This member no longer leads. */
void tso_follow(struct tso *t);
/* Whether a window proposal should go out now, and with which bound: when leading, none is in
 * flight, and there is no window yet or less than extend_ms remains past max(now, last). stored
 * is the bound the store holds (0: absent), which the proposal compares. On true the proposal
 * counts as in flight until tso_window_saved or tso_window_failed. A clock past TSO_PHYSICAL_MAX
 * gives false. */
bool tso_want_window(struct tso *t, uint64_t now_ms, uint64_t stored_ms, uint64_t *limit_ms);
/* The cheap half of tso_want_window, without the stored bound: whether one is due at all. */
bool tso_window_due(const struct tso *t, uint64_t now_ms);
/* The proposal made under `term`, which compared the stored bound `stored_ms`, applied and
 * wrote `limit_ms`. Ignored when the term is no longer the one led. */
void tso_window_saved(struct tso *t, uint64_t term, uint64_t stored_ms, uint64_t limit_ms);
/* The proposal failed (compare mismatch, lost, timed out): another may go out. */
void tso_window_failed(struct tso *t, uint64_t term);
/* Hands out [*first, *first + count). 0; BATON_EINVAL (count 0 or above TSO_COUNT_MAX);
 * BATON_ENOTLEADER (not leading); BATON_EBUSY: wait for a window (none yet, or the range would
 * pass the persisted bound); nothing is handed out then. */
int tso_alloc(struct tso *t, uint64_t now_ms, uint32_t count, uint64_t *first);

/* ---- Ids ---------------------------------------------------------------------------------------
 */
#define IDS_COUNT_MAX 1000000u
#define IDS_CHUNK     (1u << 20) /* ids reserved per proposal (more when one request needs it) */
#define IDS_FIRST     1u         /* /baton/ids absent: ids start here (0 means "none") */

struct idalloc {
    uint64_t term;
    bool ready, proposing;
    uint64_t next, end; /* [next, end) is reserved and not yet handed out */
    uint32_t need;      /* the largest request waiting (the next chunk covers it) */
    uint32_t chunk;     /* IDS_CHUNK unless a test sets it */
};

void ids_init(struct idalloc *d);
void ids_lead(struct idalloc *d, uint64_t term);
void ids_follow(struct idalloc *d);
/* Whether a chunk proposal should go out: leading, none in flight, and no chunk yet, or fewer
 * than a quarter chunk (or than a waiting request needs) left. stored: the key's value (0:
 * absent, meaning IDS_FIRST). *from gets the value compared, *to the value to write. False also
 * when the id space is exhausted (see ids_exhausted). */
bool ids_want_chunk(struct idalloc *d, uint64_t stored, uint64_t *from, uint64_t *to);
/* Whether ids_want_chunk could say yes (without the stored value). */
bool ids_chunk_due(const struct idalloc *d);
/* True when no chunk can be reserved after stored any more (the 64-bit space is spent). */
bool ids_exhausted(uint64_t stored, uint32_t chunk);
void ids_chunk_saved(struct idalloc *d, uint64_t term, uint64_t from, uint64_t to);
void ids_chunk_failed(struct idalloc *d, uint64_t term);
/* 0; BATON_EINVAL (count 0 or above IDS_COUNT_MAX); BATON_ENOTLEADER; BATON_EBUSY (wait for a
 * chunk; the request's size is remembered so the next chunk covers it). */
int ids_alloc(struct idalloc *d, uint32_t count, uint64_t *first);

/* Parses a stored decimal counter (no sign, no leading zeros unless "0", at most 20 digits, no
 * overflow). 0 or BATON_ECORRUPT. */
int cluster_parse_u64(const uint8_t *p, size_t len, uint64_t *out);

/* ---- Configuration JSON -------------------------------------------------------------------- */
#define CONFIG_JSON_MAX_BYTES (1u << 20)
#define CONFIG_JSON_DEPTH_MAX 64

/* Validates strict JSON (RFC 8259): objects, arrays, strings (escapes checked, \u surrogates
 * paired, UTF-8 well formed, no raw control characters), numbers, true/false/null, nesting at
 * most CONFIG_JSON_DEPTH_MAX, nothing but whitespace after the value. With object_only the
 * top-level value must be an object. 0, or BATON_EINVAL with a one-line reason naming the byte
 * offset in err (always NUL-terminated when err_len > 0). BATON_ETOOBIG past
 * CONFIG_JSON_MAX_BYTES. */
int config_json_validate(const char *p, size_t len, bool object_only, char *err, size_t err_len);

/* ---- Versions ---------------------------------------------------------------------------------
 * "major.minor.patch", each a decimal number without leading zeros, at most 9 digits. */
struct cluster_version {
    uint32_t major, minor, patch;
};
#define CLUSTER_VERSION_TEXT_MAX 32 /* buffer size for the text of any version */

/* 0 or BATON_EINVAL. */
int cluster_version_parse(const char *p, size_t len, struct cluster_version *v);
/* <0, 0, >0 as a is lower, equal, higher. */
int cluster_version_cmp(const struct cluster_version *a, const struct cluster_version *b);
void cluster_version_format(const struct cluster_version *v, char *buf, size_t len);

/* The cluster version: the minimum of the n versions given (texts[i] of lens[i] bytes). Texts that
 * do not parse are counted in *invalid (may be NULL) and left out. BATON_ENOTFOUND when no valid
 * version was given. */
int cluster_version_min(const char *const *texts, const size_t *lens, size_t n,
                        struct cluster_version *out, size_t *invalid);

#endif
