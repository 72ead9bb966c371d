/*
 * The chaos checkers: they read a history of client operations (JSON lines written by the chaos
 * workload clients) and decide whether what the clients saw is explainable by a correct
 * key-value store.
 *
 *   - registers: linearizability of read / write / compare-and-set per key, a WGL search
 *     (Wing & Gong, Lowe; the way Porcupine does it) with memoisation of
 *     (linearized set, register value); indeterminate writes may take effect at any time after
 *     their invocation, or never;
 *   - list-append: reads of each list must be prefixes of one order, contain no duplicates or
 *     phantoms, never go back in real time, and contain every append acknowledged before them;
 *   - watch: every watcher sees the same events in the same revision order, with no gap and no
 *     duplicate, and every acknowledged write appears with its revision;
 *   - fencing: no two lock holders act with the same token, and no action completed before
 *     another began carries a larger token than it.
 *
 * Memory: a history owns every op and string it holds; free it with chaos_history_free.
 */
#ifndef BATON_CHAOS_CHECK_H
#define BATON_CHAOS_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/base.h"

#define CHAOS_KEY_MAX       128
#define CHAOS_LIST_MAX      100000 /* elements in one list-append read */
#define CHAOS_ANOMALIES_MAX 64
#define CHAOS_T_INF         INT64_MAX

enum chaos_outcome {
    CHAOS_OK,   /* completed, the result is known */
    CHAOS_FAIL, /* definitely had no effect */
    CHAOS_INFO, /* indeterminate: may have taken effect, at any time after invocation */
};

enum chaos_workload {
    CHAOS_W_REG,
    CHAOS_W_APPEND,
    CHAOS_W_WATCH,
    CHAOS_W_LOCK,
    CHAOS_W_OTHER,
};

enum chaos_fn {
    CHAOS_READ,   /* reg: v = value read (0 = absent); append: list = elements read */
    CHAOS_WRITE,  /* reg: a = value written; watch: a = value, k = key, rev = revision */
    CHAOS_CAS,    /* reg: a = expected, b = new value, v = 1 swapped / 0 compare failed */
    CHAOS_APPEND, /* append: a = element appended */
    CHAOS_EVENT,  /* watch: one event seen by watcher p: k, a = value, b = 1 delete, rev */
    CHAOS_START,  /* watch: watcher p starts at revision rev */
    CHAOS_END,    /* watch: watcher p stopped; v = 1 if it caught up with the last write */
    CHAOS_ACT,    /* lock: holder b acted under fencing token a */
    CHAOS_FN_OTHER,
};

struct chaos_op {
    enum chaos_workload w;
    enum chaos_fn fn;
    enum chaos_outcome out;
    int64_t p;               /* client process (or watcher) id */
    char key[CHAOS_KEY_MAX]; /* "" when the op has none */
    int64_t t0, t1;          /* invocation and completion, ns on one clock; t1 >= t0 */
    int64_t a, b, v, rev;
    int64_t *list; /* owned by the history; list_len elements */
    uint32_t list_len;
    uint32_t line; /* line number in the source file, for reports */
};

struct chaos_history {
    struct chaos_op *ops;
    size_t n, cap;
    struct arena arena; /* lists */
};

void chaos_history_init(struct chaos_history *h);
void chaos_history_free(struct chaos_history *h);
/* Parses one JSON line (a flat object: strings, integers, null, booleans, arrays of integers)
 * and appends the op. Unknown keys are ignored. 0, BATON_ECORRUPT (err says why) or
 * BATON_ENOMEM. Empty lines are skipped (0, nothing appended). */
int chaos_history_add_line(struct chaos_history *h, const char *line, size_t len, char *err,
                           size_t err_len);
/* Loads a whole file. 0, -errno, BATON_ECORRUPT (err names the line) or BATON_ENOMEM. */
int chaos_history_load(struct chaos_history *h, const char *path, char *err, size_t err_len);

struct chaos_anomaly {
    char kind[32]; /* "nonlinearizable", "lost-append", "watch-gap", "fence-reuse", ... */
    char key[CHAOS_KEY_MAX];
    char what[256];
};

struct chaos_report {
    size_t ops, ok, fail, info;
    size_t anomalies; /* total found; the first CHAOS_ANOMALIES_MAX are kept */
    struct chaos_anomaly list[CHAOS_ANOMALIES_MAX];
    size_t unknown;                   /* keys whose search hit the step bound (not anomalies) */
    size_t keys_checked;              /* register keys searched */
    char smallest_key[CHAOS_KEY_MAX]; /* the failing key with the fewest ops */
    size_t smallest_key_ops;
};

enum chaos_lin_verdict {
    CHAOS_LIN_OK,
    CHAOS_LIN_VIOLATION,
    CHAOS_LIN_UNKNOWN, /* step or memory bound reached before a verdict */
};

struct chaos_lin_result {
    enum chaos_lin_verdict verdict;
    uint64_t steps;
    size_t ops_searched;
    /* On a violation: the op that could not be linearized at the deepest point reached. */
    const struct chaos_op *stuck;
    int64_t stuck_state;
    size_t depth_max;
};

/* Linearizability of one key's register ops (reads, writes, CAS; any others are ignored).
 * ops is borrowed. steps_max bounds the search. 0 or BATON_ENOMEM. */
int chaos_lin_check_register(const struct chaos_op *const *ops, size_t n, uint64_t steps_max,
                             struct chaos_lin_result *res);

/* Whole-history checkers; each adds what it finds to rep. 0 or BATON_ENOMEM. */
int chaos_check_registers(const struct chaos_history *h, uint64_t steps_max,
                          struct chaos_report *rep);
int chaos_check_append(const struct chaos_history *h, struct chaos_report *rep);
int chaos_check_watch(const struct chaos_history *h, struct chaos_report *rep);
int chaos_check_fencing(const struct chaos_history *h, struct chaos_report *rep);
/* Counts ops and runs every checker. 0 or BATON_ENOMEM. */
int chaos_check_all(const struct chaos_history *h, uint64_t steps_max, struct chaos_report *rep);

/* Records an anomaly (kept if there is room) and tracks the smallest failing key. */
void chaos_report_add(struct chaos_report *rep, const char *kind, const char *key, size_t key_ops,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Writes one op back as a JSON line (for the failing-key extract). */
void chaos_op_print(FILE *f, const struct chaos_op *op);

#endif
