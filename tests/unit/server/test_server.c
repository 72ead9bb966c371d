/*
 * Members in one process: real WAL and LMDB files in a temp directory, frames between members
 * carried by an in-memory queue, and a test loop that ticks, delivers frames and collects WAL
 * completions. Covers a single member (write, linearizable read, restart keeps data) and three
 * members (proposals forwarded from followers, reads on followers, losing the leader).
 */
#include "server/request.h"
#include "server/server.h"
#include "test.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MEMBERS_MAX 3
#define FRAMES_MAX  4096

struct frame {
    int to;
    uint64_t from;
    uint8_t *data;
    size_t len;
};

struct member {
    struct cluster *c;
    int idx;
    uint64_t id;
    struct server *s;
    struct server_datadir dir;
    atomic_bool woken;
    bool down;
    uint64_t fsyncs, commits; /* durations the observer reported */
};

struct cluster {
    struct member m[MEMBERS_MAX];
    int n;
    struct server_peer_info peers[MEMBERS_MAX];
    struct frame frames[FRAMES_MAX];
    size_t frames_len;
    uint64_t last_tick_ms;
    uint64_t snapshot_count;
};

static uint64_t mono_ms(void *ctx)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int env_send(void *ctx, uint64_t to, bool bulk, const uint8_t *data, size_t len)
{
    struct member *m = ctx;
    struct cluster *c = m->c;
    for (int i = 0; i < c->n; i++) {
        if (c->m[i].id != to)
            continue;
        if (c->frames_len == FRAMES_MAX || c->m[i].down)
            return BATON_EUNAVAIL;
        struct frame *f = &c->frames[c->frames_len++];
        f->to = i;
        f->from = m->id;
        f->data = malloc(len);
        memcpy(f->data, data, len);
        f->len = len;
        return 0;
    }
    return BATON_ENOTFOUND;
}

static void env_peer_set(void *ctx, uint64_t id, const char *url, bool remove)
{
}

static void env_wake(void *ctx)
{
    atomic_store(&((struct member *)ctx)->woken, true);
}

static void env_fatal(void *ctx, int err, const char *msg)
{
    test_fail(__FILE__, __LINE__, "member fatal: %s", msg);
}

static void obs_timing(void *ctx, enum server_timing what, uint64_t ns)
{
    struct member *m = ctx;
    if (what == SERVER_TIMING_WAL_FSYNC)
        m->fsyncs++;
    else
        m->commits++;
}

static void member_open(struct cluster *c, int i)
{
    struct member *m = &c->m[i];
    char root[PATH_MAX], err[512];
    snprintf(root, sizeof(root), "%s/m%d", test_tmpdir(), i);
    CHECK_OK(server_datadir_open(root, &m->dir, err, sizeof(err)));
    const char *curl = "http://127.0.0.1:2379";
    struct server_options o = {
        .member_id = m->id,
        .cluster_id = 77,
        .name = c->peers[i].name,
        .dir = &m->dir,
        .tick_ms = 10,
        .election_ticks = 10,
        .initial = c->peers,
        .initial_len = c->n,
        .client_urls = &curl,
        .client_urls_len = 1,
        .seed = 1234 + (uint64_t)i,
        .snapshot_count = c->snapshot_count,
        .env = {m, mono_ms, env_send, env_peer_set, env_wake, env_fatal, env_wake},
        .observer = {obs_timing, m},
    };
    int rc = server_open(&o, &m->s, err, sizeof(err));
    if (rc)
        test_fail(__FILE__, __LINE__, "server_open: %s", err);
    m->down = false;
}

static void member_close(struct member *m)
{
    server_close(m->s);
    m->s = NULL;
    server_datadir_close(&m->dir);
    m->down = true;
}

static void cluster_start_snap(struct cluster *c, int n, uint64_t snapshot_count);
static void cluster_start(struct cluster *c, int n)
{
    cluster_start_snap(c, n, 0);
}

static void cluster_start_snap(struct cluster *c, int n, uint64_t snapshot_count)
{
    memset(c, 0, sizeof(*c));
    c->n = n;
    c->snapshot_count = snapshot_count;
    for (int i = 0; i < n; i++) {
        c->m[i].c = c;
        c->m[i].idx = i;
        c->m[i].id = 0x100 + (uint64_t)i;
        c->peers[i].id = c->m[i].id;
        snprintf(c->peers[i].name, sizeof(c->peers[i].name), "m%d", i);
        snprintf(c->peers[i].peer_url, sizeof(c->peers[i].peer_url), "http://127.0.0.1:%d",
                 3000 + i);
    }
    for (int i = 0; i < n; i++)
        member_open(c, i);
}

/* One turn of the loop: WAL completions, frames, ticks. */
static void cluster_turn(struct cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        struct member *m = &c->m[i];
        if (!m->down && atomic_exchange(&m->woken, false))
            server_on_wal(m->s);
    }
    size_t n = c->frames_len;
    struct frame batch[FRAMES_MAX];
    memcpy(batch, c->frames, n * sizeof(batch[0]));
    c->frames_len = 0;
    for (size_t i = 0; i < n; i++) {
        struct member *m = &c->m[batch[i].to];
        if (!m->down)
            server_on_peer_frame(m->s, batch[i].from, batch[i].data, batch[i].len);
        free(batch[i].data);
    }
    uint64_t now = mono_ms(NULL);
    if (now - c->last_tick_ms >= 10) {
        c->last_tick_ms = now;
        for (int i = 0; i < c->n; i++)
            if (!c->m[i].down)
                server_tick(c->m[i].s);
    }
    if (n == 0) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

static bool run_until(struct cluster *c, bool (*cond)(struct cluster *, void *), void *ctx,
                      int max_ms)
{
    uint64_t start = mono_ms(NULL);
    while (!cond(c, ctx)) {
        if (mono_ms(NULL) - start > (uint64_t)max_ms)
            return false;
        cluster_turn(c);
    }
    return true;
}

static int leader_of(struct cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->m[i].down)
            continue;
        struct server_status st;
        server_status(c->m[i].s, &st);
        if (st.is_leader)
            return i;
    }
    return -1;
}

static bool has_leader_everywhere(struct cluster *c, void *ctx)
{
    int l = leader_of(c);
    if (l < 0)
        return false;
    for (int i = 0; i < c->n; i++) {
        if (c->m[i].down)
            continue;
        struct server_status st;
        server_status(c->m[i].s, &st);
        if (st.leader != c->m[l].id)
            return false;
    }
    return true;
}

struct waiter {
    bool done;
    int err;
    int64_t revision;
};

static void on_done(void *ctx, int err, const struct server_result *res)
{
    struct waiter *w = ctx;
    w->done = true;
    w->err = err;
    w->revision = res ? res->revision : 0;
}

static bool waiter_done(struct cluster *c, void *ctx)
{
    return ((struct waiter *)ctx)->done;
}

static int put(struct cluster *c, int at, const char *key, const char *val, int64_t *rev)
{
    struct arena a;
    arena_init(&a, 1024);
    struct request q = {.type = REQ_PUT};
    q.u.put.key = (struct mvcc_bytes){(const uint8_t *)key, strlen(key)};
    q.u.put.value = (struct mvcc_bytes){(const uint8_t *)val, strlen(val)};
    struct waiter w = {0};
    int rc = server_propose(c->m[at].s, &q, &a, on_done, &w, NULL);
    if (rc == 0) {
        CHECK(run_until(c, waiter_done, &w, 10000));
        rc = w.err;
        if (rev)
            *rev = w.revision;
    }
    arena_free(&a);
    return rc;
}

/* A linearizable read on member `at`: barrier, then the local store. */
static void check_value(struct cluster *c, int at, const char *key, const char *want)
{
    struct waiter w = {0};
    CHECK_OK(server_read_barrier(c->m[at].s, on_done, &w, NULL));
    CHECK(run_until(c, waiter_done, &w, 10000));
    CHECK_OK(w.err);
    struct arena a;
    arena_init(&a, 1024);
    struct mvcc_range_req q = {.key = {(const uint8_t *)key, strlen(key)}};
    struct mvcc_range_resp r;
    CHECK_OK(mvcc_range(server_store(c->m[at].s), &q, &a, &r));
    CHECK_EQ(r.kvs_len, want ? 1 : 0);
    if (want)
        CHECK_MEM(r.kvs[0].value.p, r.kvs[0].value.len, want, strlen(want));
    arena_free(&a);
}

static void cluster_stop(struct cluster *c)
{
    for (int i = 0; i < c->n; i++)
        if (!c->m[i].down)
            member_close(&c->m[i]);
    for (size_t i = 0; i < c->frames_len; i++)
        free(c->frames[i].data);
    c->frames_len = 0;
}

static struct cluster cl;

/* A callback that proposes again, as services do (e.g. a put after a compare that failed). */
struct chain {
    struct server *s;
    struct arena a;
    int left;
    struct waiter last;
};
static void on_chained(void *ctx, int err, const struct server_result *res)
{
    struct chain *ch = ctx;
    CHECK_OK(err);
    if (--ch->left == 0) {
        on_done(&ch->last, err, res);
        return;
    }
    struct request q = {.type = REQ_PUT};
    q.u.put.key = (struct mvcc_bytes){(const uint8_t *)"chain", 5};
    q.u.put.value = (struct mvcc_bytes){(const uint8_t *)"v", 1};
    CHECK_OK(server_propose(ch->s, &q, &ch->a, on_chained, ch, NULL));
}

static void chain_on_every_member(int n)
{
    cluster_start(&cl, n);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    for (int at = 0; at < n; at++) {
        struct chain ch = {.s = cl.m[at].s, .left = 6}; /* a start and 5 completions */
        arena_init(&ch.a, 1024);
        on_chained(&ch, 0, NULL);
        CHECK(run_until(&cl, waiter_done, &ch.last, 10000));
        CHECK_OK(ch.last.err);
        arena_free(&ch.a);
    }
    cluster_stop(&cl);
}

TEST(a_callback_may_propose_one_member)
{
    chain_on_every_member(1);
}

TEST(a_callback_may_propose_three_members)
{
    chain_on_every_member(3);
}

TEST(single_member_writes_reads_and_restarts)
{
    cluster_start(&cl, 1);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    int64_t rev = 0;
    CHECK_OK(put(&cl, 0, "a", "1", &rev));
    CHECK_EQ(rev, 2); /* etcd: the first write of a new cluster is revision 2 */
    CHECK_OK(put(&cl, 0, "a", "2", &rev));
    CHECK_EQ(rev, 3);
    check_value(&cl, 0, "a", "2");
    /* Restart: the WAL and LMDB bring everything back. */
    member_close(&cl.m[0]);
    member_open(&cl, 0);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    check_value(&cl, 0, "a", "2");
    CHECK_OK(put(&cl, 0, "b", "3", &rev));
    CHECK_EQ(rev, 4);
    /* Members published their attributes through the log. */
    int n;
    const struct server_member *ms = server_members(cl.m[0].s, &n);
    CHECK_EQ(n, 1);
    CHECK_STR(ms[0].name, "m0");
    CHECK_EQ(ms[0].client_urls_len, 1);
    cluster_stop(&cl);
}

TEST(three_members_forward_read_and_survive_leader_loss)
{
    cluster_start(&cl, 3);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    int l = leader_of(&cl), f = (l + 1) % 3;
    CHECK_OK(put(&cl, f, "k", "from-follower", NULL)); /* forwarded to the leader */
    check_value(&cl, f, "k", "from-follower");
    check_value(&cl, l, "k", "from-follower");
    for (int i = 0; i < 20; i++) {
        char v[16];
        snprintf(v, sizeof(v), "v%d", i);
        CHECK_OK(put(&cl, i % 3, "k", v, NULL));
    }
    check_value(&cl, (l + 2) % 3, "k", "v19");
    /* The leader goes away: the two others elect a new one and keep serving. */
    member_close(&cl.m[l]);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    int l2 = leader_of(&cl);
    CHECK_NE(l2, l);
    CHECK_OK(put(&cl, (l2 + 1) % 3 == l ? (l2 + 2) % 3 : (l2 + 1) % 3, "k", "after", NULL));
    check_value(&cl, l2, "k", "after");
    /* The old leader returns and catches up. */
    member_open(&cl, l);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    check_value(&cl, l, "k", "after");
    int n;
    const struct server_member *ms = server_members(cl.m[l].s, &n);
    CHECK_EQ(n, 3);
    for (int i = 0; i < n; i++)
        CHECK_EQ(ms[i].peer_urls_len, 1);
    cluster_stop(&cl);
}

TEST(errors_reach_the_caller)
{
    cluster_start(&cl, 1);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    struct arena a;
    arena_init(&a, 1024);
    struct request q = {.type = REQ_PUT};
    q.u.put.key = (struct mvcc_bytes){(const uint8_t *)"x", 1};
    q.u.put.lease = 12345; /* no such lease */
    struct waiter w = {0};
    CHECK_OK(server_propose(cl.m[0].s, &q, &a, on_done, &w, NULL));
    CHECK(run_until(&cl, waiter_done, &w, 10000));
    CHECK_EQ(w.err, MVCC_ELEASENOTFOUND);
    CHECK_STR(mvcc_strerror(w.err), "etcdserver: requested lease not found");
    arena_free(&a);
    cluster_stop(&cl);
}

/* The counters server_status carries for metrics, and the observer's durations. */
TEST(status_counters_and_timings)
{
    cluster_start(&cl, 3);
    struct arena a;
    arena_init(&a, 1024);
    struct request q = {.type = REQ_PUT};
    q.u.put.key = (struct mvcc_bytes){(const uint8_t *)"x", 1};
    struct waiter w = {0};
    /* No leader yet: refused, and counted as a failed proposal. */
    CHECK_EQ(server_propose(cl.m[0].s, &q, &a, on_done, &w, NULL), BATON_EUNAVAIL);
    struct server_status st;
    server_status(cl.m[0].s, &st);
    CHECK_EQ(st.proposals_failed, 1);
    CHECK_EQ(st.leader_changes, 0);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    int l = leader_of(&cl), f = (l + 1) % 3;
    /* Pending while in flight, then applied; a request-level error is not a failure. */
    CHECK_OK(server_propose(cl.m[f].s, &q, &a, on_done, &w, NULL));
    server_status(cl.m[f].s, &st);
    CHECK_EQ(st.proposals_pending, 1);
    CHECK(run_until(&cl, waiter_done, &w, 10000));
    CHECK_OK(w.err);
    q.u.put.lease = 12345; /* no such lease */
    w.done = false;
    CHECK_OK(server_propose(cl.m[l].s, &q, &a, on_done, &w, NULL));
    CHECK(run_until(&cl, waiter_done, &w, 10000));
    CHECK_EQ(w.err, MVCC_ELEASENOTFOUND);
    for (int i = 0; i < 3; i++) {
        server_status(cl.m[i].s, &st);
        CHECK_EQ(st.proposals_pending, 0);
        CHECK_EQ(st.proposals_failed, i == 0 ? 1 : 0);
        CHECK_GE(st.leader_changes, 1); /* one, unless an election was split */
        CHECK_EQ(st.leases, 0);
        CHECK_GT(cl.m[i].fsyncs, 0);
        CHECK_GT(cl.m[i].commits, 0);
    }
    /* The leader goes: the survivors see another leader. */
    server_status(cl.m[f].s, &st);
    uint64_t before = st.leader_changes;
    member_close(&cl.m[l]);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    server_status(cl.m[f].s, &st);
    CHECK_GT(st.leader_changes, before);
    arena_free(&a);
    cluster_stop(&cl);
}

struct op_waiter {
    bool done;
    int err;
    int64_t v1, v2;
};

static void on_op(void *ctx, int err, int64_t v1, int64_t v2)
{
    struct op_waiter *w = ctx;
    w->done = true;
    w->err = err;
    w->v1 = v1;
    w->v2 = v2;
}

static bool op_done(struct cluster *c, void *ctx)
{
    return ((struct op_waiter *)ctx)->done;
}

static void wait_op(struct cluster *c, struct op_waiter *w, int rc)
{
    CHECK_OK(rc);
    CHECK(!w->done); /* never completed before the call returned */
    CHECK(run_until(c, op_done, w, 10000));
}

TEST(leader_only_operations_from_any_member)
{
    cluster_start(&cl, 3);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    int l = leader_of(&cl), f = (l + 1) % 3;

    /* A lease granted through a follower, kept alive and queried through the follower. */
    struct arena a;
    arena_init(&a, 1024);
    struct request q = {.type = REQ_LEASE_GRANT};
    q.u.lease_grant.ttl_s = 30;
    struct waiter w = {0};
    CHECK_OK(server_propose(cl.m[f].s, &q, &a, on_done, &w, NULL));
    CHECK(run_until(&cl, waiter_done, &w, 10000));
    CHECK_OK(w.err);
    size_t n = 0;
    int64_t *list;
    CHECK_OK(mvcc_lease_list(server_store(cl.m[f].s), &a, &list, &n));
    CHECK_EQ(n, 1);
    int64_t lease = list[0];
    struct op_waiter ow = {0};
    wait_op(&cl, &ow, server_lease_keepalive(cl.m[f].s, lease, on_op, &ow, NULL));
    CHECK_OK(ow.err);
    CHECK_EQ(ow.v1, 30);
    ow = (struct op_waiter){0};
    wait_op(&cl, &ow, server_lease_ttl(cl.m[f].s, lease, on_op, &ow, NULL));
    CHECK_OK(ow.err);
    CHECK_EQ(ow.v2, 30);
    CHECK_GT(ow.v1, 25);
    ow = (struct op_waiter){0};
    wait_op(&cl, &ow, server_lease_keepalive(cl.m[f].s, 999, on_op, &ow, NULL));
    CHECK_EQ(ow.err, MVCC_ELEASENOTFOUND);

    /* A learner that never starts: added, not promotable (not in sync), removed. */
    const char *urls[] = {"http://127.0.0.1:3999"};
    ow = (struct op_waiter){0};
    wait_op(&cl, &ow, server_member_add(cl.m[f].s, urls, 1, true, on_op, &ow, NULL));
    CHECK_OK(ow.err);
    uint64_t learner = (uint64_t)ow.v1;
    CHECK(server_member_is_learner(cl.m[l].s, learner));
    ow = (struct op_waiter){0};
    wait_op(&cl, &ow, server_member_add(cl.m[l].s, urls, 1, false, on_op, &ow, NULL));
    CHECK_EQ(ow.err, BATON_EEXIST);
    ow = (struct op_waiter){0};
    wait_op(&cl, &ow, server_member_promote(cl.m[f].s, learner, on_op, &ow, NULL));
    CHECK_EQ(ow.err, BATON_EBUSY);
    ow = (struct op_waiter){0};
    wait_op(&cl, &ow, server_member_remove(cl.m[f].s, learner, on_op, &ow, NULL));
    CHECK_OK(ow.err);
    CHECK(!server_member_is_learner(cl.m[l].s, learner));
    ow = (struct op_waiter){0};
    wait_op(&cl, &ow, server_member_remove(cl.m[l].s, learner, on_op, &ow, NULL));
    CHECK_EQ(ow.err, BATON_ENOTFOUND);

    /* Leadership moves where asked; a follower cannot start a transfer. */
    int t = (l + 2) % 3;
    CHECK_EQ(server_transfer_leader(cl.m[f].s, cl.m[t].id, on_op, &ow, NULL), BATON_ENOTLEADER);
    ow = (struct op_waiter){0};
    wait_op(&cl, &ow, server_transfer_leader(cl.m[l].s, cl.m[t].id, on_op, &ow, NULL));
    CHECK_OK(ow.err);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    CHECK_EQ(leader_of(&cl), t);
    arena_free(&a);
    cluster_stop(&cl);
}

static int count_snapshots(const char *dir)
{
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd), "ls %s/*.snap 2>/dev/null | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = 0;
        pclose(p);
    }
    return n;
}

TEST(lagging_follower_catches_up_from_a_snapshot_and_restarts_from_one)
{
    cluster_start_snap(&cl, 3, 20);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    int l = leader_of(&cl), f = (l + 1) % 3, o = (l + 2) % 3;
    CHECK_OK(put(&cl, l, "k", "first", NULL));
    member_close(&cl.m[f]);
    for (int i = 0; i < 100; i++) {
        char key[16], v[16];
        snprintf(key, sizeof(key), "key%03d", i);
        snprintf(v, sizeof(v), "v%d", i);
        CHECK_OK(put(&cl, i % 2 ? l : o, key, v, NULL));
    }
    /* The two live members compacted their logs (several snapshots; old ones purged). */
    CHECK_GE(count_snapshots(cl.m[l].dir.snap), 1);
    CHECK_LE(count_snapshots(cl.m[l].dir.snap), 2);
    /* The follower comes back behind the compaction point: it gets the leader's snapshot. */
    member_open(&cl, f);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    check_value(&cl, f, "key099", "v99");
    check_value(&cl, f, "k", "first");
    CHECK_GE(count_snapshots(cl.m[f].dir.snap), 1);
    CHECK_OK(put(&cl, f, "after", "x", NULL));
    check_value(&cl, f, "after", "x");
    /* Everyone restarts: Raft comes back from the newest snapshot plus the WAL after it. */
    for (int i = 0; i < 3; i++)
        member_close(&cl.m[i]);
    for (int i = 0; i < 3; i++)
        member_open(&cl, i);
    CHECK(run_until(&cl, has_leader_everywhere, NULL, 10000));
    for (int i = 0; i < 3; i++) {
        check_value(&cl, i, "key050", "v50");
        check_value(&cl, i, "after", "x");
    }
    int n;
    server_members(cl.m[f].s, &n);
    CHECK_EQ(n, 3);
    cluster_stop(&cl);
}
