/*
 * mvcc-bench: throughput of the revisioned store on a real LMDB file with real commits.
 *   puts/s applied in batches of 100 and of 1,000 (one LMDB commit, with fsync, per batch),
 *   single-key ranges/s and 1,000-key ranges/s,
 *   index bytes per key at --keys keys (mallinfo2 delta, RSS delta, and the index's own count),
 *   defragmentation of the large store: how long writes are refused (the copy) and how long the
 *   switch stalls reads.
 * Each figure is the median of --runs runs (default 3). Not a test: never asserts on timing.
 * Usage: mvcc-bench [--dir D] [--keys N] [--puts N] [--runs N]
 */
#include "mvcc/mvcc.h"

#include <malloc.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), dcmp);
    return v[n / 2];
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "mvcc-bench: %s: %s\n", what, mvcc_strerror(rc));
    exit(1);
}

static struct mvcc_store *open_at(const char *dir, const char *name, uint64_t quota)
{
    char path[1024], lock[1100];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(lock, sizeof(lock), "%s-lock", path);
    unlink(path);
    unlink(lock);
    struct mvcc_config cfg;
    mvcc_config_default(&cfg);
    cfg.path = path;
    cfg.quota_bytes = quota;
    struct mvcc_store *s;
    char err[512];
    int rc = mvcc_open(&cfg, &s, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "mvcc-bench: %s\n", err);
        exit(1);
    }
    return s;
}

static void remove_at(const char *dir, const char *name)
{
    char path[1024], lock[1100];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(lock, sizeof(lock), "%s-lock", path);
    unlink(path);
    unlink(lock);
}

static void key_of(char *buf, size_t len, uint64_t i)
{
    /* Spread keys over the key space (a multiplicative hash), fixed width: 20 bytes. */
    snprintf(buf, len, "/bench/%013llu",
             (unsigned long long)((i * 0x9E3779B97F4A7C15ull) % 10000000000000ull));
}

/* Applies n puts in batches of batch; returns puts per second. */
static double bench_puts(struct mvcc_store *s, uint64_t *index, uint64_t first, uint64_t n,
                         uint64_t batch, struct arena *a)
{
    char key[32], val[100];
    memset(val, 'v', sizeof(val));
    double t0 = now_s();
    for (uint64_t i = 0; i < n; i += batch) {
        int rc = mvcc_batch_begin(s, ++*index, 1);
        if (rc)
            die("batch begin", rc);
        for (uint64_t j = i; j < i + batch && j < n; j++) {
            key_of(key, sizeof(key), first + j);
            struct mvcc_put_req r = {.key = {(const uint8_t *)key, strlen(key)},
                                     .value = {(const uint8_t *)val, sizeof(val)}};
            struct mvcc_put_resp resp;
            if ((rc = mvcc_put(s, &r, a, &resp)) != 0)
                die("put", rc);
        }
        if ((rc = mvcc_batch_commit(s)) != 0)
            die("commit", rc);
        arena_reset(a);
    }
    return (double)n / (now_s() - t0);
}

#define KEYSPACE 10000000000000ull

/* Ranges per second: single keys (width 0) or [k, k + width) holding ~width_keys keys (etcd
 * counts every key of the range, so the range is bounded rather than open with a limit).
 * *avg gets the mean number of keys returned. */
static double bench_ranges(struct mvcc_store *s, uint64_t keys, uint64_t width_keys, double seconds,
                           struct arena *a, double *avg, double *per_cpu_s)
{
    double c0 = cpu_s();
    char key[32], end[32];
    struct prng rng;
    prng_seed(&rng, 1);
    uint64_t n = 0, got = 0;
    uint64_t width = width_keys ? KEYSPACE / keys * width_keys : 0;
    double t0 = now_s(), t;
    do {
        for (int k = 0; k < 100; k++) {
            struct mvcc_range_req r = {0};
            if (width == 0) {
                key_of(key, sizeof(key), prng_below(&rng, keys));
            } else {
                uint64_t start = prng_below(&rng, KEYSPACE - width);
                snprintf(key, sizeof(key), "/bench/%013llu", (unsigned long long)start);
                snprintf(end, sizeof(end), "/bench/%013llu", (unsigned long long)(start + width));
                r.range_end = (struct mvcc_bytes){(const uint8_t *)end, strlen(end)};
            }
            r.key = (struct mvcc_bytes){(const uint8_t *)key, strlen(key)};
            struct mvcc_range_resp resp;
            int rc = mvcc_range(s, &r, a, &resp);
            if (rc)
                die("range", rc);
            if (width == 0 && resp.kvs_len != 1)
                die("range found nothing", BATON_ENOTFOUND);
            got += resp.kvs_len;
            arena_reset(a);
            n++;
        }
        t = now_s() - t0;
    } while (t < seconds);
    *avg = (double)got / (double)n;
    *per_cpu_s = (double)n / (cpu_s() - c0);
    return (double)n / t;
}

int main(int argc, char **argv)
{
    const char *dir = "/tmp";
    uint64_t keys = 1000000, puts = 100000;
    int runs = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dir") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "--keys") == 0)
            keys = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--puts") == 0)
            puts = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--runs") == 0)
            runs = atoi(argv[i + 1]);
    }
    if (runs < 1 || runs > 15)
        runs = 3;
    struct arena a;
    arena_init(&a, 1 << 20);
    double p100[15], p1000[15], r1[15], r1000[15], bpk_m[15], bpk_r[15], bpk_i[15];
    double dcopy[15], dswitch[15], dbefore[15], dafter[15], rreads[15], ropen[15];
    double ropen_cpu[15], r1c[15], r1000c[15];
    double avg1 = 0, avg1000 = 0;
    printf("mvcc-bench: dir=%s keys=%llu puts=%llu runs=%d\n", dir, (unsigned long long)keys,
           (unsigned long long)puts, runs);
    for (int run = 0; run < runs; run++) {
        uint64_t index = 0;
        struct mvcc_store *s = open_at(dir, "mvcc-bench-puts.db", 8ull << 30);
        p100[run] = bench_puts(s, &index, 0, puts, 100, &a);
        p1000[run] = bench_puts(s, &index, puts, puts, 1000, &a);
        mvcc_close(s);
        remove_at(dir, "mvcc-bench-puts.db");

        /* The large store: loaded, closed, reopened (the index rebuilt by a scan), so the
         * heap delta of the open is the index plus small per-store state; write transactions'
         * page caches are not in it. RSS also counts LMDB's mapped pages read by the scan. */
        s = open_at(dir, "mvcc-bench-large.db", 8ull << 30);
        index = 0;
        bench_puts(s, &index, 0, keys, 10000, &a);
        mvcc_close(s);
        arena_free(&a);
        malloc_trim(0);
        struct mallinfo2 m0 = mallinfo2();
        long rss0 = rss_kb();
        char path[1024];
        snprintf(path, sizeof(path), "%s/mvcc-bench-large.db", dir);
        struct mvcc_config cfg;
        mvcc_config_default(&cfg);
        cfg.path = path;
        cfg.quota_bytes = 8ull << 30;
        double to = now_s(), co = cpu_s();
        int rc = mvcc_open(&cfg, &s, NULL, 0);
        if (rc)
            die("reopen", rc);
        ropen[run] = now_s() - to;
        ropen_cpu[run] = cpu_s() - co;
        struct mallinfo2 m1 = mallinfo2();
        long rss1 = rss_kb();
        arena_init(&a, 1 << 20);
        index = mvcc_applied_index(s);
        /* Heap bytes in use: small chunks (uordblks) and mmapped large blocks (hblkhd, e.g. the
         * hash table and the chunk array). */
        bpk_m[run] =
            ((double)(m1.uordblks - m0.uordblks) + (double)(m1.hblkhd - m0.hblkhd)) / (double)keys;
        bpk_r[run] = (double)(rss1 - rss0) * 1024.0 / (double)keys;
        bpk_i[run] = (double)mvcc_index_bytes(s) / (double)keys;
        r1[run] = bench_ranges(s, keys, 0, 1.0, &a, &avg1, &r1c[run]);
        r1000[run] = bench_ranges(s, keys, 1000, 1.0, &a, &avg1000, &r1000c[run]);

        /* Defragmentation after deleting half the keys and compacting. */
        rc = mvcc_batch_begin(s, ++index, 1);
        struct mvcc_delete_req d = {.key = {(const uint8_t *)"/bench/0", 8},
                                    .range_end = {(const uint8_t *)"/bench/5", 8}};
        struct mvcc_delete_resp dr;
        if (rc || (rc = mvcc_delete_range(s, &d, &a, &dr)) != 0 ||
            (rc = mvcc_compact(s, mvcc_rev(s))) != 0 || (rc = mvcc_batch_commit(s)) != 0)
            die("delete+compact", rc);
        arena_reset(&a);
        bool done = false;
        while (!done)
            if ((rc = mvcc_compact_step(s, 10000, &done)) != 0)
                die("compact step", rc);
        uint64_t fb, fa;
        mvcc_db_size(s, NULL, &fb);
        double t0 = now_s();
        if ((rc = mvcc_defrag_begin(s)) != 0)
            die("defrag", rc);
        char key[32];
        struct prng rng;
        prng_seed(&rng, 2);
        uint64_t reads = 0;
        double tsw = 0;
        for (;;) {
            /* Reads go on during the copy. */
            key_of(key, sizeof(key), prng_below(&rng, keys));
            struct mvcc_range_req r = {.key = {(const uint8_t *)key, strlen(key)}};
            struct mvcc_range_resp resp;
            if ((rc = mvcc_range(s, &r, &a, &resp)) != 0)
                die("range during defrag", rc);
            arena_reset(&a);
            reads++;
            double ts = now_s();
            if ((rc = mvcc_defrag_poll(s, &done)) != 0)
                die("defrag poll", rc);
            if (done) {
                tsw = now_s() - ts;
                break;
            }
        }
        dcopy[run] = now_s() - t0;
        dswitch[run] = tsw;
        mvcc_db_size(s, NULL, &fa);
        dbefore[run] = (double)fb / 1e6;
        dafter[run] = (double)fa / 1e6;
        rreads[run] = (double)reads / (dcopy[run] - tsw);
        mvcc_close(s);
        remove_at(dir, "mvcc-bench-large.db");
        fprintf(stderr, "run %d done\n", run + 1);
        (void)avg1;
    }
    printf("puts/s, batches of 100:        %.0f\n", median(p100, runs));
    printf("puts/s, batches of 1000:       %.0f\n", median(p1000, runs));
    printf("ranges/s, single key:          %.0f (%.0f per CPU second)\n", median(r1, runs),
           median(r1c, runs));
    printf("ranges/s, ~1000 keys:          %.0f (%.0f per CPU second; mean %.0f keys returned)\n",
           median(r1000, runs), median(r1000c, runs), avg1000);
    printf("reopen with index rebuild:     %.3f s wall, %.3f s CPU for %llu keys\n",
           median(ropen, runs), median(ropen_cpu, runs), (unsigned long long)keys);
    printf("index bytes/key (own count):   %.1f\n", median(bpk_i, runs));
    printf("heap bytes/key after reopen (mallinfo2, incl. malloc overhead): %.1f\n",
           median(bpk_m, runs));
    printf("RSS bytes/key after reopen (incl. LMDB pages scanned): %.1f\n", median(bpk_r, runs));
    printf("defrag: file %.1f MB -> %.1f MB; writes refused for %.3f s (the copy); "
           "switch stalled the loop %.4f s; %.0f reads/s served during the copy\n",
           median(dbefore, runs), median(dafter, runs), median(dcopy, runs), median(dswitch, runs),
           median(rreads, runs));
    arena_free(&a);
    return 0;
}
