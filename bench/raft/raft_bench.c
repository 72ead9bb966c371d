/*
 * raft-bench: how fast the consensus core alone runs. Three members in one process, no I/O:
 * messages go straight from one member's ready into another's raft_step, persistence is
 * acknowledged at once, and applying an entry is a checksum. Prints entries committed and
 * applied per second (on every member) and heap allocations per entry, counted by wrapping
 * malloc, calloc and realloc at link time.
 *
 *   raft-bench [--entries N] [--size BYTES] [--batch N] [--compact-every N]
 */
#include "raft/raft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Allocation counting ------------------------------------------------------------------ */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
static unsigned long long allocs;

void *__wrap_malloc(size_t n)
{
    allocs++;
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m)
{
    allocs++;
    return __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n)
{
    allocs++;
    return __real_realloc(p, n);
}

/* ---- The cluster -------------------------------------------------------------------------- */
#define MEMBERS 3

struct member {
    struct raft *r;
    struct prng rng;
    uint64_t applied;
    uint32_t sum;
};

static struct member m[MEMBERS + 1];

static void die(const char *what, int rc)
{
    fprintf(stderr, "raft-bench: %s: %s\n", what, baton_strerror(rc));
    exit(1);
}

/* Handles one ready of member i: persistence is instant, messages are stepped into their
 * destination directly (raft copies what it keeps), entries are applied. */
static bool process(int i)
{
    struct raft *r = m[i].r;
    if (!raft_has_ready(r))
        return false;
    struct raft_ready rd;
    raft_ready(r, &rd);
    for (size_t k = 0; k < rd.msgs_len; k++) {
        const struct raft_msg *msg = &rd.msgs[k];
        int rc = raft_step(m[msg->to].r, msg);
        if (rc)
            die("raft_step", rc);
    }
    for (size_t k = 0; k < rd.committed_len; k++) {
        const struct raft_entry *e = &rd.committed[k];
        if (e->type == RAFT_ENTRY_NORMAL)
            m[i].sum = crc32c_extend(m[i].sum, e->data, 8);
        m[i].applied = e->index;
    }
    raft_advance(r, &rd);
    if (rd.persist)
        raft_persisted(r);
    return true;
}

static void settle(void)
{
    for (int round = 0; round < 1000; round++) {
        bool any = false;
        for (int i = 1; i <= MEMBERS; i++)
            any |= process(i);
        if (!any)
            return;
    }
}

/* CPU time of this process: the machine may be shared, and the question is what one core
 * does. Wall time is printed too. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    uint64_t entries = 2000000, size = 256, batch = 1024, compact_every = 65536;
    for (int i = 1; i + 1 < argc; i += 2) {
        uint64_t v = strtoull(argv[i + 1], NULL, 10);
        if (!strcmp(argv[i], "--entries"))
            entries = v;
        else if (!strcmp(argv[i], "--size"))
            size = v;
        else if (!strcmp(argv[i], "--batch"))
            batch = v;
        else if (!strcmp(argv[i], "--compact-every"))
            compact_every = v;
        else {
            fprintf(stderr, "usage: raft-bench [--entries N] [--size B] [--batch N] "
                            "[--compact-every N]\n");
            return 2;
        }
    }
    if (size < 8 || batch == 0 || entries == 0) {
        fprintf(stderr, "raft-bench: --size must be >= 8, --batch and --entries > 0\n");
        return 2;
    }
    struct raft_config conf = {.voters = {1, 2, 3}, .voters_len = 3};
    for (int i = 1; i <= MEMBERS; i++) {
        prng_seed(&m[i].rng, (uint64_t)i);
        struct raft_options o = {
            .id = (uint64_t)i, .rng = &m[i].rng, .pre_vote = true, .check_quorum = true};
        int rc = raft_create(&o, &m[i].r);
        if (rc == 0)
            rc = raft_bootstrap(m[i].r, &conf);
        if (rc)
            die("raft_create", rc);
    }
    settle();
    for (int t = 0; t < 100; t++) {
        raft_tick(m[1].r);
        settle();
        struct raft_status s;
        raft_status(m[1].r, &s);
        if (s.role == RAFT_LEADER)
            break;
    }
    struct raft_status s;
    raft_status(m[1].r, &s);
    if (s.role != RAFT_LEADER) {
        fprintf(stderr, "raft-bench: no leader\n");
        return 1;
    }
    uint8_t *payload = calloc(1, size);
    uint64_t start_index = s.last_index, proposed = 0, last_compact = start_index;
    unsigned long long allocs0 = allocs;
    double t0 = now_s(), c0 = cpu_s();
    while (proposed < entries) {
        for (uint64_t k = 0; k < batch && proposed < entries; k++) {
            memcpy(payload, &proposed, 8);
            int rc = raft_propose(m[1].r, payload, size, NULL);
            if (rc == BATON_EBUSY)
                break;
            if (rc)
                die("raft_propose", rc);
            proposed++;
        }
        settle();
        uint64_t low = m[1].applied;
        for (int i = 2; i <= MEMBERS; i++)
            low = BATON_MIN(low, m[i].applied);
        if (low - last_compact >= compact_every) {
            for (int i = 1; i <= MEMBERS; i++) {
                int rc = raft_compact(m[i].r, low);
                if (rc)
                    die("raft_compact", rc);
            }
            last_compact = low;
        }
    }
    settle();
    double dt = now_s() - t0, ct = cpu_s() - c0;
    unsigned long long used = allocs - allocs0;
    for (int i = 1; i <= MEMBERS; i++) {
        if (m[i].applied != start_index + entries || m[i].sum != m[1].sum) {
            fprintf(stderr, "raft-bench: member %d applied %llu (want %llu), sum %08x vs %08x\n", i,
                    (unsigned long long)m[i].applied, (unsigned long long)(start_index + entries),
                    m[i].sum, m[1].sum);
            return 1;
        }
    }
    printf("raft-bench: members=3 entries=%llu size=%llu batch=%llu cpu_s=%.3f wall_s=%.3f "
           "entries_per_cpu_s=%.0f entries_per_wall_s=%.0f allocs=%llu allocs_per_entry=%.5f\n",
           (unsigned long long)entries, (unsigned long long)size, (unsigned long long)batch, ct, dt,
           (double)entries / ct, (double)entries / dt, used, (double)used / (double)entries);
    for (int i = 1; i <= MEMBERS; i++)
        raft_destroy(m[i].r);
    free(payload);
    return 0;
}
