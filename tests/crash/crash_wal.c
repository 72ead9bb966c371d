/* Crash test of the WAL on a real disk: a child process appends continuously through the real
 * WAL thread (submit, notify, poll, as the loop thread will) and reports through a pipe every
 * index the WAL declared durable; the parent kill -9s it at a random moment, reopens the WAL and
 * checks that every acknowledged index is there with the right payload and that nothing torn is
 * visible. The child of the next round reopens and continues. Rounds: argv[1], or the env var
 * WAL_CRASH_ITERS, or 25. Seed: WAL_CRASH_SEED (printed, so a failing run replays its kill
 * schedule). */
#include "test.h"
#include "walt.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SEG_BYTES    (256 << 10)
#define BATCH_MAX    16
#define INFLIGHT_MAX 8

static char wal_dir[512];
static int wake_pipe[2];

static void child_notify(void *ctx)
{
    char c = 1;
    /* Only wakes the loop; a full pipe already means "wake up". */
    if (write(wake_pipe[1], &c, 1) < 0 && errno != EAGAIN)
        _exit(3);
}

/* The child: a loop thread feeding the WAL; never returns. */
static _Noreturn void child_main(int out_fd, uint64_t term, uint64_t seed)
{
    if (pipe2(wake_pipe, O_NONBLOCK) != 0)
        _exit(2);
    struct wal_options o = {.dir = wal_dir,
                            .segment_bytes = SEG_BYTES,
                            .queue_batches_max = INFLIGHT_MAX,
                            .notify = child_notify};
    struct wal *w;
    char em[512];
    if (wal_open(&o, &w, em, sizeof(em)) != 0) {
        fprintf(stderr, "child: %s\n", em);
        _exit(2);
    }
    struct wal_state st;
    wal_state_get(w, &st);
    uint64_t next = st.last_index + 1, reported = st.last_index;
    struct prng r;
    prng_seed(&r, seed);
    static uint8_t pay[BATCH_MAX][WALT_PAYLOAD_MAX];
    uint64_t marker_seq = 0, marker_index = 0;
    for (;;) {
        /* Submit until the bounded queue says EBUSY. */
        for (;;) {
            struct wal_entry e[BATCH_MAX];
            size_t n = 1 + (size_t)prng_below(&r, BATCH_MAX);
            for (size_t i = 0; i < n; i++)
                e[i] = (struct wal_entry){.index = next + i,
                                          .term = term,
                                          .data = pay[i],
                                          .len = walt_payload(next + i, term, pay[i])};
            struct wal_hard_state hs = {.term = term, .vote = 1, .commit = next + n - 1};
            struct wal_batch b = {.entries = e, .entries_len = n, .hs = &hs};
            int rc = wal_submit(w, &b, NULL);
            if (rc == BATON_EBUSY)
                break;
            if (rc)
                _exit(4);
            next += n;
            if (!marker_seq && prng_chance(&r, 20000)) {
                /* Now and then a snapshot marker; once durable, segments below it go. */
                struct wal_snap_marker m = {.index = next - 1, .term = term};
                struct wal_batch sb = {.snap = &m};
                if (wal_submit(w, &sb, &marker_seq) != 0)
                    break;
                marker_index = m.index;
            }
        }
        struct pollfd pfd = {.fd = wake_pipe[0], .events = POLLIN};
        if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
            _exit(5);
        char drain[64];
        if (read(wake_pipe[0], drain, sizeof(drain)) < 0 && errno != EAGAIN)
            _exit(5);
        struct wal_progress p;
        wal_poll(w, &p);
        if (p.err)
            _exit(6);
        if (marker_seq && p.durable_seq >= marker_seq) {
            if (wal_release(w, marker_index, NULL) != 0)
                _exit(8);
            marker_seq = 0;
        }
        if (p.durable_index > reported) {
            char line[64];
            int len =
                snprintf(line, sizeof(line), "%" PRIu64 " %" PRIu64 "\n", p.durable_index, term);
            if (write(out_fd, line, (size_t)len) != len)
                _exit(7);
            reported = p.durable_index;
        }
    }
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 10) : dflt;
}

/* Reads acknowledgements until the pipe closes: the highest acked index and its term. */
static void read_acks(FILE *in, uint64_t *acked, uint64_t *acked_term)
{
    uint64_t idx, term;
    while (fscanf(in, "%" SCNu64 " %" SCNu64, &idx, &term) == 2) {
        CHECK_GT(idx, *acked); /* progress only moves forward */
        *acked = idx;
        *acked_term = term;
    }
}

TEST(kill9_loses_no_acknowledged_entry)
{
    uint64_t rounds = env_u64("WAL_CRASH_ITERS", 25);
    uint64_t seed = env_u64("WAL_CRASH_SEED", (uint64_t)time(NULL));
    snprintf(wal_dir, sizeof(wal_dir), "%s/wal", test_tmpdir());
    test_log("rounds=%" PRIu64 " seed=%" PRIu64 " dir=%s", rounds, seed, wal_dir);
    struct prng r;
    prng_seed(&r, seed);
    uint64_t acked = 0, acked_term = 0, max_lost_unacked = 0, total_acked_batches = 0;
    uint64_t snap_index = 0;
    uint32_t segments = 0;
    for (uint64_t round = 1; round <= rounds; round++) {
        int fds[2];
        CHECK_EQ(pipe(fds), 0);
        fflush(NULL);
        pid_t pid = fork();
        CHECK_GE(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            child_main(fds[1], round, seed + round);
        }
        close(fds[1]);
        /* Let it run 30..530 ms, then the power of a process: SIGKILL. */
        struct timespec ts = {0, (long)(30 + prng_below(&r, 500)) * 1000000L};
        nanosleep(&ts, NULL);
        CHECK_EQ(kill(pid, SIGKILL), 0);
        int status;
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status))
            test_fail(__FILE__, __LINE__, "round %" PRIu64 ": child exited with %d before the kill",
                      round, WEXITSTATUS(status));
        FILE *in = fdopen(fds[0], "r");
        CHECK(in);
        uint64_t before = acked;
        read_acks(in, &acked, &acked_term);
        fclose(in);
        total_acked_batches += acked > before;

        /* Reopen: every acknowledged entry must be there, unharmed. */
        struct wal_options o = {.dir = wal_dir, .segment_bytes = SEG_BYTES};
        struct wal *w;
        char em[512];
        int rc = wal_open(&o, &w, em, sizeof(em));
        if (rc)
            test_fail(__FILE__, __LINE__, "round %" PRIu64 ": reopen: %s", round, em);
        struct wal_state st;
        wal_state_get(w, &st);
        struct walt_got *g = calloc(1, sizeof(*g));
        CHECK_OK(wal_read_entries(w, 0, UINT64_MAX, walt_collect, g));
        CHECK_EQ(g->bad, 0);
        if (st.last_index < acked)
            test_fail(__FILE__, __LINE__,
                      "round %" PRIu64 ": acknowledged index %" PRIu64 " lost (log ends at %" PRIu64
                      ")",
                      round, acked, st.last_index);
        if (acked > st.snap.index)
            CHECK_EQ(g->terms[acked - g->first], acked_term);
        if (g->n)
            CHECK_EQ(g->first, st.snap.index + 1);
        CHECK_GE(st.hs.commit, acked);
        max_lost_unacked = BATON_MAX(max_lost_unacked, st.last_index - acked);
        snap_index = st.snap.index;
        segments = wal_segments(w);
        free(g);
        CHECK_OK(wal_close(w));
    }
    test_log("%" PRIu64 " kill -9 rounds: last acknowledged index %" PRIu64 ", %" PRIu64
             " rounds acknowledged new entries, at most %" PRIu64
             " durable-but-unacknowledged entries found after a kill; snapshot marker at %" PRIu64
             ", %u segments left",
             rounds, acked, total_acked_batches, max_lost_unacked, snap_index, segments);
    CHECK_GT(acked, 0);
}
