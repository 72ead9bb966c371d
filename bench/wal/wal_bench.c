/*
 * wal-bench: throughput of the WAL's group commit on this disk. Entries of --entry-bytes (256)
 * from 1 and from 64 concurrent writers — logical submitters, each keeping one entry in flight
 * and submitting its next one as soon as the WAL reports the last durable, the way Raft
 * proposals from many clients arrive at the loop thread — next to a plain pwrite + fdatasync
 * loop on a file in the same directory (the disk's physical limit for one writer). Each scenario
 * runs --runs times (3) for --seconds (3), interleaved; the median run is reported.
 *
 *   wal-bench [--dir DIR] [--seconds N] [--runs N] [--entry-bytes N]
 */
#include "wal/wal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WRITERS_MAX 1024

struct opts {
    const char *dir;
    double seconds;
    int runs;
    size_t entry_bytes;
};

struct result {
    double entries_per_s;
    double fsyncs_per_s;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_dir_files(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd);
}

/* The physical limit: one writer, write 256 bytes, fdatasync, repeat. */
static int bench_raw(const struct opts *o, struct result *res)
{
    char path[1100];
    snprintf(path, sizeof(path), "%s/raw.dat", o->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -errno;
    /* Preallocated like a WAL segment, so both pay the same for extent conversion. */
    uint64_t file_bytes = 64ull << 20;
    int rc = -posix_fallocate(fd, 0, (off_t)file_bytes);
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    if (rc) {
        close(fd);
        return rc;
    }
    uint8_t *buf = calloc(1, o->entry_bytes);
    uint64_t n = 0, off = 0;
    double t0 = now_s(), t;
    while ((t = now_s()) - t0 < o->seconds) {
        if (pwrite(fd, buf, o->entry_bytes, (off_t)off) != (ssize_t)o->entry_bytes ||
            fdatasync(fd) != 0) {
            rc = -errno;
            break;
        }
        off = (off + o->entry_bytes) % (file_bytes - o->entry_bytes);
        n++;
    }
    free(buf);
    close(fd);
    unlink(path);
    res->entries_per_s = (double)n / (t - t0);
    res->fsyncs_per_s = res->entries_per_s;
    return rc;
}

struct waker {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool woken;
};

static void waker_notify(void *ctx)
{
    struct waker *k = ctx;
    pthread_mutex_lock(&k->mu);
    k->woken = true;
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->mu);
}

static void waker_wait(struct waker *k)
{
    pthread_mutex_lock(&k->mu);
    while (!k->woken)
        pthread_cond_wait(&k->cond, &k->mu);
    k->woken = false;
    pthread_mutex_unlock(&k->mu);
}

/* `writers` submitters with one entry each in flight; the loop thread (this one) resubmits for
 * every writer whose entry became durable. */
static int bench_wal(const struct opts *o, int writers, struct result *res)
{
    char dir[1100];
    snprintf(dir, sizeof(dir), "%s/wal", o->dir);
    rm_dir_files(dir);
    struct waker k = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    struct wal_options wo = {
        .dir = dir, .notify = waker_notify, .notify_ctx = &k, .queue_batches_max = WRITERS_MAX};
    struct wal *w;
    char em[512];
    int rc = wal_open(&wo, &w, em, sizeof(em));
    if (rc) {
        fprintf(stderr, "wal-bench: %s\n", em);
        return rc;
    }
    uint8_t *payload = calloc(1, o->entry_bytes);
    /* In-flight seqs complete in order: a ring of seqs, one per writer. */
    static uint64_t ring[WRITERS_MAX];
    size_t head = 0, len = 0;
    uint64_t index = 0, done = 0;
    struct wal_progress p0, p;
    wal_poll(w, &p0);
    double t0 = now_s(), t = t0;
    for (;;) {
        bool stop = (t = now_s()) - t0 >= o->seconds;
        while (!stop && len < (size_t)writers) {
            struct wal_entry e = {
                .index = index + 1, .term = 1, .data = payload, .len = o->entry_bytes};
            struct wal_batch b = {.entries = &e, .entries_len = 1};
            uint64_t seq;
            rc = wal_submit(w, &b, &seq);
            if (rc)
                goto out;
            index++;
            ring[(head + len++) % WRITERS_MAX] = seq;
        }
        if (len == 0)
            break;
        waker_wait(&k);
        wal_poll(w, &p);
        if (p.err) {
            rc = p.err;
            goto out;
        }
        while (len && ring[head] <= p.durable_seq) {
            head = (head + 1) % WRITERS_MAX;
            len--;
            done++;
        }
    }
out:
    wal_poll(w, &p);
    res->entries_per_s = (double)done / (t - t0);
    res->fsyncs_per_s = (double)(p.fsyncs - p0.fsyncs) / (t - t0);
    int rc2 = wal_close(w);
    free(payload);
    rm_dir_files(dir);
    return rc ? rc : rc2;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *name, struct result *r, int runs)
{
    double e[16], f[16];
    for (int i = 0; i < runs; i++)
        e[i] = r[i].entries_per_s, f[i] = r[i].fsyncs_per_s;
    qsort(e, (size_t)runs, sizeof(double), cmp_double);
    qsort(f, (size_t)runs, sizeof(double), cmp_double);
    double me = e[runs / 2], mf = f[runs / 2];
    printf("%-34s %12.0f %12.0f %12.1f   (runs:", name, me, mf, mf > 0 ? me / mf : 0);
    for (int i = 0; i < runs; i++)
        printf(" %.0f", r[i].entries_per_s);
    printf(")\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--dir") == 0 && v)
            o->dir = v, i++;
        else if (strcmp(a, "--seconds") == 0 && v)
            o->seconds = atof(v), i++;
        else if (strcmp(a, "--runs") == 0 && v)
            o->runs = atoi(v), i++;
        else if (strcmp(a, "--entry-bytes") == 0 && v)
            o->entry_bytes = (size_t)atol(v), i++;
        else {
            fprintf(stderr,
                    "usage: wal-bench [--dir DIR] [--seconds N] [--runs N] [--entry-bytes N]\n");
            return 2;
        }
    }
    if (o->seconds <= 0 || o->seconds > 600 || o->runs < 1 || o->runs > 15 || o->entry_bytes < 1 ||
        o->entry_bytes > (1 << 20)) {
        fprintf(stderr, "wal-bench: --seconds in (0, 600], --runs in [1, 15], --entry-bytes in "
                        "[1, 1 MiB]\n");
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {
        .dir = "bench/results/tmp/wal-bench", .seconds = 3, .runs = 3, .entry_bytes = 256};
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", o.dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "wal-bench: cannot create %s\n", o.dir);
        return 1;
    }
    printf("wal-bench: %zu-byte entries, %d runs of %.1f s each, median shown, dir %s\n",
           o.entry_bytes, o.runs, o.seconds, o.dir);
    printf("%-34s %12s %12s %12s\n", "scenario", "entries/s", "fsyncs/s", "entries/fsync");
    /* Rounds interleave the scenarios, so each sees the same (shared, noisy) disk. */
    struct result r[3][16];
    int writers[] = {0, 1, 64};
    for (int i = 0; i < o.runs; i++)
        for (int k = 0; k < 3; k++)
            if ((rc = writers[k] ? bench_wal(&o, writers[k], &r[k][i]) : bench_raw(&o, &r[k][i])) !=
                0)
                goto fail;
    report("raw pwrite+fdatasync, 1 writer", r[0], o.runs);
    report("wal, 1 writer", r[1], o.runs);
    report("wal, 64 writers", r[2], o.runs);
    return 0;
fail:
    fprintf(stderr, "wal-bench: %s\n", baton_strerror(rc));
    return 1;
}
