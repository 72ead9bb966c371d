/*
 * baton-example-node: a fake storage node built on libbaton, to show what a database node
 * does with the control plane. It registers with labels from its flags, heartbeats with fake
 * statistics, prints epoch changes and commands, writes its "data" under /example/<id>/ with
 * fenced writes (a write made under an old epoch is refused), and exits on STOP or Ctrl-C.
 *
 *   baton-example-node --endpoints 127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379 \
 *       --address 127.0.0.1:7001 --label zone=z1 --label rack=r1 --capacity-gb 100
 */
#include "baton.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;
static int stop_requested;  /* set on the client's thread, read by main */
static uint64_t used_bytes; /* fake: grows with every write */

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", when);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

static void on_stats(void *ctx, struct baton_node_stats *out)
{
    (void)ctx;
    out->used_bytes = __atomic_load_n(&used_bytes, __ATOMIC_RELAXED);
    out->available_bytes = (uint64_t)100 << 30;
    out->shard_count = 4;
    out->leader_count = 2;
    out->cpu_usage = 0.25;
}

static void on_event(void *ctx, enum baton_agent_event ev, uint64_t epoch, const uint8_t *payload,
                     size_t len)
{
    (void)ctx;
    switch (ev) {
    case BATON_AGENT_EPOCH_CHANGED:
        say("epoch changed: now %" PRIu64 " (work done under the old epoch is fenced off)", epoch);
        break;
    case BATON_AGENT_DRAIN:
        say("command DRAIN%s%.*s: moving work away (this example only stops writing new data)",
            len ? " payload=" : "", (int)len, (const char *)payload);
        break;
    case BATON_AGENT_STOP:
        say("command STOP: shutting down");
        __atomic_store_n(&stop_requested, 1, __ATOMIC_RELEASE);
        break;
    }
}

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "baton-example-node: %s\n\n", why);
    fprintf(stderr,
            "usage: baton-example-node [--endpoints LIST] --address HOST:PORT [--label K=V]...\n"
            "                          [--capacity-gb N] [--version X.Y.Z] [--id HEX]\n"
            "                          [--write-interval-ms N] [--writes N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *endpoints = "127.0.0.1:2379", *address = NULL, *version = "0.1.0";
    struct baton_label labels[BATON_LABELS_MAX];
    size_t labels_len = 0;
    uint64_t capacity_gb = 100, id = 0;
    long interval_ms = 1000, writes_max = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(NULL);
            return 0;
        }
        if (!v)
            return usage("every flag takes a value");
        i++;
        char *end;
        errno = 0;
        if (strcmp(a, "--endpoints") == 0) {
            endpoints = v;
        } else if (strcmp(a, "--address") == 0) {
            address = v;
        } else if (strcmp(a, "--version") == 0) {
            version = v;
        } else if (strcmp(a, "--label") == 0) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || labels_len == BATON_LABELS_MAX ||
                (size_t)(eq - v) >= sizeof(labels[0].key) ||
                strlen(eq + 1) >= sizeof(labels[0].value))
                return usage("--label wants KEY=VALUE (at most 16)");
            memset(&labels[labels_len], 0, sizeof(labels[0]));
            memcpy(labels[labels_len].key, v, (size_t)(eq - v));
            snprintf(labels[labels_len].value, sizeof(labels[0].value), "%s", eq + 1);
            labels_len++;
        } else if (strcmp(a, "--capacity-gb") == 0) {
            capacity_gb = strtoull(v, &end, 10);
            if (errno || *end || capacity_gb > (1u << 30))
                return usage("bad --capacity-gb");
        } else if (strcmp(a, "--id") == 0) {
            id = strtoull(v, &end, 16);
            if (errno || *end)
                return usage("bad --id (hex)");
        } else if (strcmp(a, "--write-interval-ms") == 0) {
            interval_ms = strtol(v, &end, 10);
            if (errno || *end || interval_ms < 10 || interval_ms > 3600000)
                return usage("bad --write-interval-ms (10..3600000)");
        } else if (strcmp(a, "--writes") == 0) {
            writes_max = strtol(v, &end, 10);
            if (errno || *end || writes_max < 0)
                return usage("bad --writes");
        } else {
            return usage("unknown flag");
        }
    }
    if (!address)
        return usage("--address is required");

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct baton_options o;
    baton_options_default(&o);
    o.endpoints = endpoints;
    struct baton_client *c;
    const char *msg;
    int rc = baton_open(&o, &c);
    if (rc) {
        baton_last_error(&msg);
        fprintf(stderr, "baton-example-node: %s\n", msg);
        return rc == BATONE_INVAL ? 2 : 1;
    }
    struct baton_agent_config cfg = {.id = id,
                                     .address = address,
                                     .labels = labels,
                                     .labels_len = labels_len,
                                     .capacity_bytes = capacity_gb << 30,
                                     .version = version,
                                     .stats = on_stats,
                                     .on_event = on_event};
    struct baton_agent *a;
    rc = baton_agent_start(c, &cfg, &a);
    if (rc) {
        baton_last_error(&msg);
        fprintf(stderr, "baton-example-node: register: %s (%s)\n", msg, baton_errstr(rc));
        baton_close(c);
        return 1;
    }
    id = baton_agent_id(a);
    say("registered node %016" PRIx64 " epoch %" PRIu64 " address %s", id, baton_agent_epoch(a),
        address);

    long n = 0;
    int exit_code = 0;
    while (!interrupted && !__atomic_load_n(&stop_requested, __ATOMIC_ACQUIRE) &&
           (writes_max == 0 || n < writes_max)) {
        char key[96], val[64];
        snprintf(key, sizeof(key), "/example/%016" PRIx64 "/data-%06ld", id, n % 100);
        snprintf(val, sizeof(val), "write %ld under epoch %" PRIu64, n, baton_agent_epoch(a));
        int64_t rev;
        rc = baton_agent_put(a, key, strlen(key), val, strlen(val), &rev);
        if (rc == 0) {
            __atomic_add_fetch(&used_bytes, strlen(val), __ATOMIC_RELAXED);
            say("fenced write %s ok at revision %" PRId64, key, rev);
        } else {
            baton_last_error(&msg);
            say("fenced write %s failed: %s (%s)", key, msg, baton_errstr(rc));
        }
        n++;
        for (long slept = 0; slept < interval_ms && !interrupted; slept += 10)
            usleep(10000);
    }
    if (__atomic_load_n(&stop_requested, __ATOMIC_ACQUIRE))
        say("stopped by the cluster");
    else if (interrupted)
        say("interrupted");
    baton_agent_stop(a);
    baton_close(c);
    return exit_code;
}
