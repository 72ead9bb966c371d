/*
 * raft-sim: runs the deterministic raft simulator over a range of seeds and prints one summary
 * line. On a violation it prints the seed, what broke and the command that replays it, and exits
 * non-zero.
 *
 *   raft-sim --seeds N --start S [--nodes K] [--faults LIST] [--time MS | --steps N]
 *            [--liveness MS] [--verbose] [--fail-fast]
 *
 * Without --nodes, seed s runs a cluster of 3, 5 or 7 nodes (s % 3 picks). --faults takes
 * drop,delay,reorder,dup,partition,crash,member,transfer,snapshot, "all" or "none".
 */
#include "sim.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct opts {
    uint64_t seeds, start;
    int nodes; /* 0 = cycle 3, 5, 7 */
    uint32_t faults;
    char faults_text[128];
    uint64_t time_ms, steps, liveness_ms;
    bool verbose, fail_fast, no_wire_check;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: raft-sim --seeds N --start S [--nodes K] [--faults LIST] "
            "[--time MS | --steps N] [--liveness MS] [--verbose] [--fail-fast] [--no-wire-check]\n"
            "  faults: drop,delay,reorder,dup,partition,crash,member,transfer,snapshot, "
            "all, none\n");
}

static int parse_u64(const char *flag, const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!v || !*v || *v == '-') {
        fprintf(stderr, "raft-sim: %s needs a non-negative number\n", flag);
        return -1;
    }
    unsigned long long x = strtoull(v, &end, 0);
    if (errno || *end) {
        fprintf(stderr, "raft-sim: %s: bad number '%s'\n", flag, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){
        .seeds = 1, .start = 1, .faults = SIM_F_ALL, .time_ms = 3000, .liveness_ms = 10000};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x;
        if (!strcmp(a, "--verbose")) {
            o->verbose = true;
        } else if (!strcmp(a, "--no-wire-check")) {
            o->no_wire_check = true;
        } else if (!strcmp(a, "--fail-fast")) {
            o->fail_fast = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--faults")) {
            char bad[64];
            if (!v || sim_faults_parse(v, &o->faults, bad, sizeof(bad)) != 0) {
                fprintf(stderr, "raft-sim: --faults: unknown kind '%s'\n", v ? bad : "");
                return -1;
            }
            i++;
        } else if (!strcmp(a, "--seeds") || !strcmp(a, "--start") || !strcmp(a, "--nodes") ||
                   !strcmp(a, "--time") || !strcmp(a, "--steps") || !strcmp(a, "--liveness")) {
            if (parse_u64(a, v, &x) != 0)
                return -1;
            i++;
            if (!strcmp(a, "--seeds"))
                o->seeds = x;
            else if (!strcmp(a, "--start"))
                o->start = x;
            else if (!strcmp(a, "--time"))
                o->time_ms = x;
            else if (!strcmp(a, "--steps"))
                o->steps = x;
            else if (!strcmp(a, "--liveness"))
                o->liveness_ms = x;
            else if (x < 1 || x > 7) {
                fprintf(stderr, "raft-sim: --nodes must be 1..7\n");
                return -1;
            } else
                o->nodes = (int)x;
        } else {
            fprintf(stderr, "raft-sim: unknown argument '%s'\n", a);
            usage(stderr);
            return -1;
        }
    }
    if (o->time_ms > 3600 * 1000 || o->liveness_ms == 0) {
        fprintf(stderr, "raft-sim: --time at most 3600000 ms, --liveness above 0\n");
        return -1;
    }
    sim_faults_format(o->faults, o->faults_text, sizeof(o->faults_text));
    return 0;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(argc, argv, &o) != 0)
        return 2;
    uint64_t t0 = wall_ms(), violations = 0, ran = 0;
    struct sim_stats total = {0};
    for (uint64_t k = 0; k < o.seeds; k++) {
        uint64_t seed = o.start + k;
        static const int sizes[] = {3, 5, 7};
        int nodes = o.nodes ? o.nodes : sizes[seed % 3];
        struct sim_config cfg = {.seed = seed,
                                 .nodes = nodes,
                                 .faults = o.faults,
                                 .fault_ms = o.time_ms,
                                 .liveness_ms = o.liveness_ms,
                                 .verbose = o.verbose,
                                 .max_steps = o.steps,
                                 .no_wire_check = o.no_wire_check};
        struct sim *s = sim_create(&cfg);
        int rc = sim_violation(s)[0] ? -1 : sim_run(s);
        struct sim_stats st;
        sim_get_stats(s, &st);
        total.elections += st.elections;
        total.commits += st.commits;
        total.reads += st.reads;
        total.sim_ms += st.sim_ms;
        ran++;
        if (rc != 0) {
            violations++;
            printf("VIOLATION seed=%" PRIu64 " nodes=%d faults=%s step=%" PRIu64 " sim_ms=%" PRIu64
                   ": %s\n",
                   seed, nodes, o.faults_text, st.steps, st.sim_ms, sim_violation(s));
            char steps_text[48] = "";
            if (o.steps)
                snprintf(steps_text, sizeof(steps_text), " --steps %" PRIu64, o.steps);
            printf("  replay: %s --seeds 1 --start %" PRIu64
                   " --nodes %d --faults %s --time %" PRIu64 "%s --liveness %" PRIu64
                   " --verbose\n",
                   argv[0], seed, nodes, o.faults_text, o.time_ms, steps_text, o.liveness_ms);
            fflush(stdout);
        }
        sim_destroy(s);
        if (rc != 0 && o.fail_fast)
            break;
    }
    char nodes_text[16];
    if (o.nodes)
        snprintf(nodes_text, sizeof(nodes_text), "%d", o.nodes);
    else
        snprintf(nodes_text, sizeof(nodes_text), "3,5,7");
    printf("seeds=%" PRIu64 " violations=%" PRIu64 " nodes=%s faults=%s elections=%" PRIu64
           " commits=%" PRIu64 " reads=%" PRIu64 " sim_ms=%" PRIu64 " wall_ms=%" PRIu64 "\n",
           ran, violations, nodes_text, o.faults_text, total.elections, total.commits, total.reads,
           total.sim_ms, wall_ms() - t0);
    return violations ? 1 : 0;
}
