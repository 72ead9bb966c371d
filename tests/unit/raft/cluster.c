/* The in-memory cluster behind raft's unit tests (see cluster.h). */
#include "cluster.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

#define SNAP_HEAD 96

static struct tc_node *node(struct tc_cluster *c, uint64_t id)
{
    BATON_ASSERT(id >= 1 && id <= (uint64_t)c->n);
    return &c->nodes[id];
}

void tc_init(struct tc_cluster *c, int n, uint64_t seed)
{
    BATON_ASSERT(n >= 1 && n <= TC_NODES_MAX);
    memset(c, 0, sizeof(*c));
    c->n = n;
    c->seed = seed;
    c->opts.election_ticks = 10;
    c->opts.heartbeat_ticks = 1;
    c->opts.pre_vote = true;
    c->opts.check_quorum = true;
    c->opts.snapshot_chunk_bytes = 1024;
    arena_init(&c->arena, 1 << 16);
}

static void create_raft(struct tc_cluster *c, struct tc_node *nd)
{
    struct raft_options o = c->opts;
    o.id = nd->id;
    o.rng = &nd->rng;
    /* RAFT_TEST_LOG=1 shows raft's log lines on stderr. */
    static const struct log_sink sink = {.fn = log_fn_stderr, .min_level = LOG_DEBUG};
    o.log = getenv("RAFT_TEST_LOG") ? &sink : NULL;
    int rc = raft_create(&o, &nd->r);
    if (rc)
        test_fail(__FILE__, __LINE__, "raft_create: %s", baton_strerror(rc));
}

void tc_start(struct tc_cluster *c, int voters)
{
    struct raft_config conf = {0};
    for (int i = 1; i <= voters; i++)
        conf.voters[conf.voters_len++] = (uint64_t)i;
    for (int i = 1; i <= c->n; i++) {
        struct tc_node *nd = &c->nodes[i];
        nd->id = (uint64_t)i;
        nd->up = true;
        prng_seed(&nd->rng, c->seed * 1000 + (uint64_t)i);
        create_raft(c, nd);
        if (i <= voters)
            CHECK_OK(raft_bootstrap(nd->r, &conf));
    }
}

static void log_clear(struct tc_node *nd)
{
    for (size_t i = 0; i < nd->log_len; i++)
        free(nd->log[i].data);
    nd->log_len = 0;
}

void tc_free(struct tc_cluster *c)
{
    for (int i = 1; i <= c->n; i++) {
        struct tc_node *nd = &c->nodes[i];
        raft_destroy(nd->r);
        log_clear(nd);
        free(nd->log);
        buf_free(&nd->snap_file);
        buf_free(&nd->snap_staging);
    }
    tc_drop_queue(c);
    free(c->q);
    arena_free(&c->arena);
}

static void write_persist(struct tc_node *nd, const struct raft_persist *p)
{
    for (size_t i = 0; i < p->chunks_len; i++) {
        const struct raft_snap_chunk *ch = &p->chunks[i];
        if (ch->offset == 0)
            buf_clear(&nd->snap_staging);
        CHECK_EQ(nd->snap_staging.len, ch->offset);
        CHECK_OK(buf_append(&nd->snap_staging, ch->data, ch->len));
    }
    if (p->snapshot) {
        nd->has_snap = true;
        nd->snap = *p->snapshot;
        buf_clear(&nd->snap_file);
        CHECK_OK(buf_append(&nd->snap_file, nd->snap_staging.data, nd->snap_staging.len));
        log_clear(nd);
    }
    if (p->entries_len > 0) {
        uint64_t first = p->entries[0].index;
        while (nd->log_len > 0 && nd->log[nd->log_len - 1].index >= first) {
            free(nd->log[nd->log_len - 1].data);
            nd->log_len--;
        }
        for (size_t i = 0; i < p->entries_len; i++) {
            const struct raft_entry *e = &p->entries[i];
            if (nd->log_len == nd->log_cap) {
                nd->log_cap = nd->log_cap ? nd->log_cap * 2 : 64;
                nd->log = realloc(nd->log, nd->log_cap * sizeof(*nd->log));
                BATON_ASSERT(nd->log);
            }
            if (nd->log_len > 0)
                CHECK_EQ(nd->log[nd->log_len - 1].index + 1, e->index);
            struct tc_stored *s = &nd->log[nd->log_len++];
            s->term = e->term;
            s->index = e->index;
            s->type = e->type;
            s->len = e->len;
            s->data = e->len ? malloc(e->len) : NULL;
            if (e->len)
                memcpy(s->data, e->data, e->len);
        }
    }
    nd->hs = p->hard_state;
}

static const struct raft_persist *held[TC_NODES_MAX + 1];

void tc_persist(struct tc_cluster *c, uint64_t id)
{
    struct tc_node *nd = node(c, id);
    if (!nd->persist_held)
        return;
    write_persist(nd, held[id]);
    nd->persist_held = false;
    raft_persisted(nd->r);
}

static void sm_serialize(struct tc_node *nd, struct buf *b)
{
    uint8_t head[SNAP_HEAD] = {0};
    le64_put(head, nd->sm_index);
    le64_put(head + 8, nd->sm_count);
    le32_put(head + 16, nd->sm_hash);
    le32_put(head + 20, nd->last_len);
    memcpy(head + 24, nd->last_data, sizeof(nd->last_data));
    buf_clear(b);
    CHECK_OK(buf_append(b, head, sizeof(head)));
    for (int i = 0; i < TC_SNAP_PAD; i++) {
        uint8_t x = (uint8_t)(i * 31 + nd->sm_index);
        CHECK_OK(buf_append(b, &x, 1));
    }
}

static void sm_load(struct tc_node *nd, const struct buf *b)
{
    CHECK_EQ(b->len, SNAP_HEAD + TC_SNAP_PAD);
    nd->sm_index = le64_get(b->data);
    nd->sm_count = le64_get(b->data + 8);
    nd->sm_hash = le32_get(b->data + 16);
    nd->last_len = le32_get(b->data + 20);
    memcpy(nd->last_data, b->data + 24, sizeof(nd->last_data));
    for (int i = 0; i < TC_SNAP_PAD; i++)
        CHECK_EQ(b->data[SNAP_HEAD + i], (uint8_t)(i * 31 + nd->sm_index));
}

static void sm_apply(struct tc_node *nd, const struct raft_entry *e)
{
    CHECK_EQ(e->index, nd->sm_index + 1);
    nd->sm_index = e->index;
    if (e->type != RAFT_ENTRY_NORMAL)
        return;
    nd->sm_count++;
    nd->sm_hash = crc32c_extend(nd->sm_hash, e->data, e->len);
    nd->last_len = BATON_MIN(e->len, sizeof(nd->last_data));
    memcpy(nd->last_data, e->data, nd->last_len);
}

static void enqueue(struct tc_cluster *c, const struct raft_msg *m)
{
    if (c->q_len == c->q_cap) {
        c->q_cap = c->q_cap ? c->q_cap * 2 : 64;
        c->q = realloc(c->q, c->q_cap * sizeof(*c->q));
        BATON_ASSERT(c->q);
    }
    struct tc_msg *t = &c->q[c->q_len++];
    memset(t, 0, sizeof(*t));
    t->to = m->to;
    t->type = m->type;
    CHECK_OK(raft_msg_encode(m, &t->b));
}

void tc_process(struct tc_cluster *c, uint64_t id)
{
    struct tc_node *nd = node(c, id);
    if (nd->crashed)
        return;
    for (int iter = 0; iter < 1000 && raft_has_ready(nd->r); iter++) {
        struct raft_ready rd;
        raft_ready(nd->r, &rd);
        if (rd.persist && !nd->manual_persist)
            write_persist(nd, rd.persist);
        for (size_t i = 0; i < rd.msgs_len; i++) {
            CHECK_EQ(rd.msgs[i].from, id);
            if (rd.msgs[i].type < 16) {
                nd->msgs_sent[rd.msgs[i].type]++;
                nd->msgs_rejected[rd.msgs[i].type] += rd.msgs[i].reject;
            }
            enqueue(c, &rd.msgs[i]);
        }
        if (rd.apply_snapshot) {
            CHECK_EQ(rd.apply_snapshot->index, nd->snap.index);
            sm_load(nd, &nd->snap_file);
            CHECK_EQ(nd->sm_index, rd.apply_snapshot->index);
        }
        for (size_t i = 0; i < rd.committed_len; i++)
            sm_apply(nd, &rd.committed[i]);
        for (size_t i = 0; i < rd.reads_len && nd->reads_len < 64; i++) {
            nd->reads_ctx[nd->reads_len] = rd.reads[i].context;
            nd->reads_index[nd->reads_len++] = rd.reads[i].index;
        }
        struct raft_snap_read sr[TC_NODES_MAX * 4];
        size_t sr_len = BATON_MIN(rd.snap_reads_len, BATON_ARRAY_LEN(sr));
        if (sr_len)
            memcpy(sr, rd.snap_reads, sr_len * sizeof(*sr));
        raft_advance(nd->r, &rd);
        if (rd.persist) {
            if (nd->manual_persist) {
                nd->persist_held = true;
                held[id] = rd.persist;
            } else {
                raft_persisted(nd->r);
            }
        }
        for (size_t i = 0; i < sr_len; i++) {
            CHECK_EQ(sr[i].index, nd->snap.index);
            uint64_t size = nd->snap_file.len;
            CHECK_LE(sr[i].offset, size);
            size_t len = (size_t)BATON_MIN(sr[i].len_max, size - sr[i].offset);
            bool last = sr[i].offset + len == size;
            CHECK_OK(raft_snapshot_chunk(nd->r, sr[i].to, sr[i].index, sr[i].offset,
                                         nd->snap_file.data + sr[i].offset, len, last));
        }
    }
}

static bool any_ready(struct tc_cluster *c)
{
    for (int i = 1; i <= c->n; i++)
        if (!c->nodes[i].crashed && raft_has_ready(c->nodes[i].r))
            return true;
    return false;
}

size_t tc_deliver_round(struct tc_cluster *c)
{
    for (int i = 1; i <= c->n; i++)
        tc_process(c, (uint64_t)i);
    struct tc_msg *q = c->q;
    size_t n = c->q_len;
    c->q = NULL;
    c->q_len = c->q_cap = 0;
    size_t delivered = 0;
    if (c->chaos) {
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)prng_below(c->chaos, i);
            struct tc_msg t = q[i - 1];
            q[i - 1] = q[j];
            q[j] = t;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct raft_msg m;
        if (c->chaos && prng_chance(c->chaos, c->drop_ppm)) {
            buf_free(&q[i].b);
            continue;
        }
        if (c->chaos && prng_chance(c->chaos, c->dup_ppm)) {
            /* Deliver a copy later: back into the queue for the next round. */
            struct raft_msg dm;
            arena_reset(&c->arena);
            CHECK_OK(raft_msg_decode(q[i].b.data, q[i].b.len, &dm, &c->arena));
            enqueue(c, &dm);
        }
        arena_reset(&c->arena);
        CHECK_OK(raft_msg_decode(q[i].b.data, q[i].b.len, &m, &c->arena));
        struct tc_node *to = node(c, m.to);
        bool drop = to->crashed || !to->up || !node(c, m.from)->up || c->cut[m.from][m.to] ||
                    (c->drop_types & (1u << m.type));
        if (!drop) {
            CHECK_OK(raft_step(to->r, &m));
            delivered++;
        }
        buf_free(&q[i].b);
    }
    free(q);
    for (int i = 1; i <= c->n; i++)
        tc_process(c, (uint64_t)i);
    return delivered;
}

size_t tc_settle(struct tc_cluster *c)
{
    size_t total = 0;
    for (int round = 0; round < 200; round++) {
        if (c->q_len == 0 && !any_ready(c))
            break;
        total += tc_deliver_round(c);
    }
    return total;
}

void tc_tick(struct tc_cluster *c, uint64_t id, int n)
{
    struct tc_node *nd = node(c, id);
    for (int i = 0; i < n && !nd->crashed; i++) {
        raft_tick(nd->r);
        tc_process(c, id);
    }
}

void tc_tick_all(struct tc_cluster *c, int n)
{
    for (int k = 0; k < n; k++) {
        for (int i = 1; i <= c->n; i++)
            tc_tick(c, (uint64_t)i, 1);
        tc_settle(c);
    }
}

struct raft_status tc_status(struct tc_cluster *c, uint64_t id)
{
    struct raft_status s;
    raft_status(node(c, id)->r, &s);
    return s;
}

uint64_t tc_elect(struct tc_cluster *c, uint64_t id)
{
    struct tc_node *nd = node(c, id);
    for (int i = 0; i < 4 * (int)c->opts.election_ticks; i++) {
        raft_tick(nd->r);
        if (tc_status(c, id).role != RAFT_FOLLOWER)
            break;
    }
    tc_settle(c);
    return tc_leader(c);
}

uint64_t tc_leader(struct tc_cluster *c)
{
    uint64_t best = 0, term = 0;
    for (int i = 1; i <= c->n; i++) {
        struct tc_node *nd = &c->nodes[i];
        if (nd->crashed || !nd->up)
            continue;
        struct raft_status s = tc_status(c, (uint64_t)i);
        if (s.role == RAFT_LEADER && s.term >= term) {
            best = (uint64_t)i;
            term = s.term;
        }
    }
    return best;
}

int tc_propose(struct tc_cluster *c, uint64_t id, const char *text)
{
    return raft_propose(node(c, id)->r, text, strlen(text), NULL);
}

void tc_crash(struct tc_cluster *c, uint64_t id)
{
    struct tc_node *nd = node(c, id);
    raft_destroy(nd->r);
    nd->r = NULL;
    nd->crashed = true;
    nd->persist_held = false; /* unsynced writes are lost */
}

void tc_restart(struct tc_cluster *c, uint64_t id)
{
    struct tc_node *nd = node(c, id);
    if (!nd->crashed)
        tc_crash(c, id);
    create_raft(c, nd);
    nd->crashed = false;
    struct raft_entry *es = calloc(nd->log_len + 1, sizeof(*es));
    BATON_ASSERT(es);
    for (size_t i = 0; i < nd->log_len; i++)
        es[i] = (struct raft_entry){.term = nd->log[i].term,
                                    .index = nd->log[i].index,
                                    .type = nd->log[i].type,
                                    .len = nd->log[i].len,
                                    .data = nd->log[i].data};
    int rc = raft_restore(nd->r, &nd->hs, nd->has_snap ? &nd->snap : NULL, es, nd->log_len);
    free(es);
    CHECK_OK(rc);
    /* The state machine restarts from the snapshot and re-applies the log. */
    nd->sm_index = nd->sm_count = 0;
    nd->sm_hash = 0;
    nd->last_len = 0;
    if (nd->has_snap)
        sm_load(nd, &nd->snap_file);
}

void tc_isolate(struct tc_cluster *c, uint64_t id, bool isolated)
{
    for (int i = 1; i <= c->n; i++) {
        c->cut[id][i] = isolated;
        c->cut[i][id] = isolated;
    }
}

int tc_compact(struct tc_cluster *c, uint64_t id)
{
    struct tc_node *nd = node(c, id);
    struct buf b = {0};
    sm_serialize(nd, &b);
    int rc = raft_compact(nd->r, nd->sm_index);
    if (rc) {
        buf_free(&b);
        return rc;
    }
    buf_free(&nd->snap_file);
    nd->snap_file = b;
    raft_snapshot_meta(nd->r, &nd->snap);
    nd->has_snap = true;
    /* The durable log drops what the snapshot covers. */
    size_t k = 0;
    for (size_t i = 0; i < nd->log_len; i++) {
        if (nd->log[i].index <= nd->snap.index)
            free(nd->log[i].data);
        else
            nd->log[k++] = nd->log[i];
    }
    nd->log_len = k;
    return 0;
}

void tc_drop_queue(struct tc_cluster *c)
{
    for (size_t i = 0; i < c->q_len; i++)
        buf_free(&c->q[i].b);
    c->q_len = 0;
}
