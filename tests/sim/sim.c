/*
 * The simulated cluster: nodes running raft, their disks, the network between them, and the
 * loop that performs raft's ready batches exactly as a real member would (persist, send, apply,
 * read, snapshot chunks) while reporting everything to the invariant checker. The randomized
 * workload and fault schedule live in run.c.
 */
#include "sim_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void *sim_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    BATON_ASSERT(p != NULL);
    return p;
}

static uint8_t *sim_dup(const void *p, size_t n)
{
    uint8_t *q = sim_xmalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}

void sim_trace(struct sim *s, const char *fmt, ...)
{
    if (!s->cfg.verbose)
        return;
    va_list ap;
    fprintf(stderr, "t=%" PRIu64 ".%03" PRIu64 " ", s->now_us / 1000, s->now_us % 1000);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void sim_raft_log(void *ctx, enum log_level level, const char *line, size_t len)
{
    struct sim *s = ctx;
    fprintf(stderr, "t=%" PRIu64 ".%03" PRIu64 "   raft %.*s\n", s->now_us / 1000, s->now_us % 1000,
            (int)len, line);
}

static struct sim_node *sim_node_of(struct sim *s, uint64_t id)
{
    if (id == 0 || id > (uint64_t)s->nodes_len)
        return NULL;
    return &s->nodes[id - 1];
}

static int sim_idx(const struct sim_node *n)
{
    return (int)(n->id - 1);
}

/* ---- Snapshot payload: the state machine image ----------------------------------------------
 * index (8) | chain (8) | filler whose bytes derive from the chain, so a corrupted or mixed-up
 * snapshot transfer is detected when it is loaded. */

static void sim_snap_encode(uint64_t index, uint64_t chain, struct buf *out)
{
    uint8_t hdr[16];
    le64_put(hdr, index);
    le64_put(hdr + 8, chain);
    buf_clear(out);
    BATON_ASSERT(buf_append(out, hdr, sizeof(hdr)) == 0);
    struct prng r;
    prng_seed(&r, chain);
    size_t filler = (size_t)(chain % SIM_SNAP_FILLER_MAX);
    BATON_ASSERT(buf_reserve(out, filler) == 0);
    for (size_t i = 0; i < filler; i++)
        out->data[out->len++] = (uint8_t)prng_next(&r);
}

static bool sim_snap_decode(const struct buf *b, uint64_t *index, uint64_t *chain)
{
    if (b->len < 16)
        return false;
    *index = le64_get(b->data);
    *chain = le64_get(b->data + 8);
    struct prng r;
    prng_seed(&r, *chain);
    size_t filler = (size_t)(*chain % SIM_SNAP_FILLER_MAX);
    if (b->len != 16 + filler)
        return false;
    for (size_t i = 0; i < filler; i++)
        if (b->data[16 + i] != (uint8_t)prng_next(&r))
            return false;
    return true;
}

/* ---- Disk ------------------------------------------------------------------------------------ */

static void sim_entry_free(struct sim_entry *e)
{
    free(e->data);
    e->data = NULL;
}

static void sim_disk_truncate(struct sim_disk *d, size_t keep)
{
    for (size_t i = keep; i < d->ents_len; i++)
        sim_entry_free(&d->ents[i]);
    if (keep < d->ents_len)
        d->ents_len = keep;
}

static void sim_disk_free(struct sim_disk *d)
{
    sim_disk_truncate(d, 0);
    free(d->ents);
    buf_free(&d->snap_data);
    buf_free(&d->stage);
    memset(d, 0, sizeof(*d));
}

static uint64_t sim_disk_first(const struct sim_disk *d)
{
    return (d->has_snap ? d->snap.index : 0) + 1;
}

static uint64_t sim_disk_last(const struct sim_disk *d)
{
    return sim_disk_first(d) - 1 + d->ents_len;
}

static bool sim_disk_term(const struct sim_disk *d, uint64_t index, uint64_t *term)
{
    if (d->has_snap && index == d->snap.index) {
        *term = d->snap.term;
        return true;
    }
    if (index == 0) {
        *term = 0;
        return true;
    }
    if (index < sim_disk_first(d) || index > sim_disk_last(d))
        return false;
    *term = d->ents[index - sim_disk_first(d)].term;
    return true;
}

static void sim_write_free(struct sim_write *w)
{
    for (size_t i = 0; i < w->chunks_len; i++)
        free(w->chunks[i].data);
    free(w->chunks);
    for (size_t i = 0; i < w->ents_len; i++)
        sim_entry_free(&w->ents[i]);
    free(w->ents);
    memset(w, 0, sizeof(*w));
}

/* The write reached the disk: fold it into the durable state in raft's documented order
 * (chunks, snapshot, entries, hard state). */
static int sim_disk_apply(struct sim *s, struct sim_node *n, struct sim_write *w)
{
    struct sim_disk *d = &n->disk;
    for (size_t i = 0; i < w->chunks_len; i++) {
        struct sim_chunk *c = &w->chunks[i];
        if (c->offset == 0) {
            buf_clear(&d->stage);
            d->stage_index = c->index;
            d->stage_term = c->term;
        }
        if (c->index != d->stage_index || c->offset > d->stage.len)
            return chk_fail(&s->chk,
                            "snapshot: node %" PRIu64 " got chunk of snapshot %" PRIu64
                            " at offset %" PRIu64 " while staging %" PRIu64 " with %zu bytes",
                            n->id, c->index, c->offset, d->stage_index, d->stage.len);
        d->stage.len = (size_t)c->offset;
        BATON_ASSERT(buf_append(&d->stage, c->data, c->len) == 0);
    }
    if (w->has_snap) {
        if (d->stage_index != w->snap.index)
            return chk_fail(&s->chk,
                            "snapshot: node %" PRIu64 " told to install snapshot %" PRIu64
                            " but staged %" PRIu64,
                            n->id, w->snap.index, d->stage_index);
        d->has_snap = true;
        d->snap = w->snap;
        buf_clear(&d->snap_data);
        BATON_ASSERT(buf_append(&d->snap_data, d->stage.data, d->stage.len) == 0);
        sim_disk_truncate(d, 0);
    }
    if (w->ents_len > 0) {
        uint64_t first = w->ents[0].index;
        if (first < sim_disk_first(d) || first > sim_disk_last(d) + 1)
            return chk_fail(&s->chk,
                            "persist: node %" PRIu64 " writes entries from %" PRIu64
                            " but its disk holds [%" PRIu64 ", %" PRIu64 "]",
                            n->id, first, sim_disk_first(d), sim_disk_last(d));
        sim_disk_truncate(d, (size_t)(first - sim_disk_first(d)));
        if (d->ents_len + w->ents_len > d->ents_cap) {
            d->ents_cap = BATON_MAX(d->ents_cap * 2, d->ents_len + w->ents_len + 64);
            d->ents = realloc(d->ents, d->ents_cap * sizeof(*d->ents));
            BATON_ASSERT(d->ents != NULL);
        }
        for (size_t i = 0; i < w->ents_len; i++) {
            d->ents[d->ents_len++] = w->ents[i];
            w->ents[i].data = NULL; /* moved */
        }
    }
    d->has_hs = true;
    d->hs = w->hs;
    return 0;
}

/* ---- Network --------------------------------------------------------------------------------- */

static void sim_deliver_at(struct sim *s, int from, int to, uint64_t at_us, const void *p,
                           size_t len)
{
    evq_push(&s->q, (struct ev){.at_us = at_us,
                                .kind = EV_DELIVER,
                                .node = to,
                                .from = from,
                                .data = sim_dup(p, len),
                                .len = len});
}

/* One message into the network: lost, delayed, duplicated as the current faults say. Without
 * the reorder fault each link is FIFO (like TCP); with it, jitter reorders freely. */
static void sim_net_send(struct sim *s, int from, int to, const void *p, size_t len)
{
    s->st.msgs_sent++;
    if (s->link_down[from][to] || (s->drop_ppm && prng_chance(&s->rng, s->drop_ppm))) {
        s->st.msgs_dropped++;
        return;
    }
    int copies = (s->dup_ppm && prng_chance(&s->rng, s->dup_ppm)) ? 2 : 1;
    if (copies == 2)
        s->st.msgs_duplicated++;
    for (int c = 0; c < copies; c++) {
        uint64_t delay = 50 + prng_below(&s->rng, 950);
        if (s->reorder)
            delay += prng_below(&s->rng, s->jitter_us + 1);
        if (s->delay_ppm && prng_chance(&s->rng, s->delay_ppm))
            delay += prng_below(&s->rng, s->delay_max_us + 1);
        uint64_t at = s->now_us + delay;
        if (!s->reorder) {
            if (at <= s->fifo_us[from][to])
                at = s->fifo_us[from][to] + 1;
            s->fifo_us[from][to] = at;
        }
        sim_deliver_at(s, from, to, at, p, len);
    }
}

/* The persistence contract, checked on the wire: a message that promises durable state may only
 * leave once that state is on the sender's disk (Raft §5.1 "respond after persisting"; thesis
 * §10.2.1 for the leader's exception, which covers appends, not responses). */
static int sim_check_durable(struct sim *s, struct sim_node *n, const struct raft_msg *m)
{
    const struct sim_disk *d = &n->disk;
    uint64_t dterm = d->has_hs ? d->hs.term : 0, dvote = d->has_hs ? d->hs.vote : 0;
    const char *what = raft_msg_type_name(m->type);
    switch (m->type) {
    case RAFT_MSG_VOTE:
        if (dterm < m->term || (dterm == m->term && dvote != n->id))
            return chk_fail(&s->chk,
                            "persistence: node %" PRIu64 " sent %s for term %" PRIu64
                            " before its vote for itself was durable (disk term %" PRIu64
                            " vote %" PRIu64 ")",
                            n->id, what, m->term, dterm, dvote);
        break;
    case RAFT_MSG_VOTE_RESP:
        if (!m->reject && (dterm < m->term || (dterm == m->term && dvote != m->to)))
            return chk_fail(&s->chk,
                            "persistence: node %" PRIu64 " granted its vote to %" PRIu64
                            " in term %" PRIu64 " before the vote was durable (disk term %" PRIu64
                            " vote %" PRIu64 ")",
                            n->id, m->to, m->term, dterm, dvote);
        break;
    case RAFT_MSG_APPEND_RESP: {
        if (m->reject || m->index == 0)
            break; /* index 0: only tells a stale leader about a newer term */
        if (d->has_snap && m->index <= d->snap.index)
            break; /* inside the durable snapshot */
        uint64_t dt, vt, vc;
        bool have = sim_disk_term(d, m->index, &dt);
        bool vhave = chk_log_get(&s->chk, sim_idx(n), m->index, &vt, &vc);
        if (dterm < m->term || !have || (vhave && vt != dt))
            return chk_fail(&s->chk,
                            "persistence: node %" PRIu64 " acknowledged entries up to %" PRIu64
                            " in term %" PRIu64
                            " before they were durable (disk holds up to %" PRIu64
                            ", disk term %" PRIu64 ")",
                            n->id, m->index, m->term, sim_disk_last(d), dterm);
        break;
    }
    default:
        break;
    }
    return 0;
}

static int sim_send(struct sim *s, struct sim_node *n, const struct raft_msg *m)
{
    if (!s->cfg.no_wire_check && sim_check_durable(s, n, m) != 0)
        return -1;
    struct sim_node *to = sim_node_of(s, m->to);
    sim_trace(s,
              "send %" PRIu64 "->%" PRIu64 " %s term=%" PRIu64 " index=%" PRIu64
              " log_term=%" PRIu64 " commit=%" PRIu64 " n=%u offset=%" PRIu64 " len=%u ctx=%" PRIu64
              "%s%s",
              m->from, m->to, raft_msg_type_name(m->type), m->term, m->index, m->log_term,
              m->commit, m->entries_len, m->offset, m->data_len, m->context,
              m->reject ? " reject" : "", m->last ? " last" : "");
    if (m->from != n->id)
        return chk_fail(&s->chk, "message: node %" PRIu64 " sent a message from %" PRIu64, n->id,
                        m->from);
    if (!to)
        return 0; /* an id the simulator never created: nobody listens */
    buf_clear(&s->enc);
    BATON_ASSERT(raft_msg_encode(m, &s->enc) == 0);
    if (m->type == RAFT_MSG_SNAPSHOT && m->offset == 0)
        s->st.snapshots_sent++;
    sim_net_send(s, sim_idx(n), sim_idx(to), s->enc.data, s->enc.len);
    return 0;
}

/* ---- Ready processing --------------------------------------------------------------------------
 */

static int sim_write_start(struct sim *s, struct sim_node *n, const struct raft_persist *p)
{
    if (n->writing)
        return chk_fail(&s->chk,
                        "persist: node %" PRIu64 " handed out batch %" PRIu64
                        " while batch %" PRIu64 " was still being written",
                        n->id, p->seq, n->w.seq);
    struct sim_write *w = &n->w;
    memset(w, 0, sizeof(*w));
    w->seq = p->seq;
    int idx = sim_idx(n);
    if (p->chunks_len) {
        w->chunks = sim_xmalloc(p->chunks_len * sizeof(*w->chunks));
        for (size_t i = 0; i < p->chunks_len; i++) {
            const struct raft_snap_chunk *c = &p->chunks[i];
            w->chunks[i] = (struct sim_chunk){
                c->index, c->term, c->offset, c->last, sim_dup(c->data, c->len), c->len};
            w->chunks_len++;
            sim_trace(s,
                      "node %" PRIu64 " persist chunk snapshot=%" PRIu64 " offset=%" PRIu64
                      " len=%u%s",
                      n->id, c->index, c->offset, c->len, c->last ? " last" : "");
            if (c->offset == 0) {
                buf_clear(&n->vstage);
                n->vstage_index = c->index;
            }
            if (c->index == n->vstage_index && c->offset <= n->vstage.len) {
                n->vstage.len = (size_t)c->offset;
                BATON_ASSERT(buf_append(&n->vstage, c->data, c->len) == 0);
            }
        }
    }
    if (p->snapshot) {
        w->has_snap = true;
        w->snap = *p->snapshot;
        uint64_t sidx, schain;
        if (n->vstage_index != p->snapshot->index || !sim_snap_decode(&n->vstage, &sidx, &schain) ||
            sidx != p->snapshot->index)
            return chk_fail(&s->chk,
                            "snapshot: node %" PRIu64 " installs snapshot %" PRIu64
                            " whose received bytes are incomplete or corrupt (%zu bytes staged)",
                            n->id, p->snapshot->index, n->vstage.len);
        if (chk_log_snapshot(&s->chk, idx, p->snapshot->index, p->snapshot->term, schain, false))
            return -1;
    }
    if (p->entries_len) {
        w->ents = sim_xmalloc(p->entries_len * sizeof(*w->ents));
        for (size_t i = 0; i < p->entries_len; i++) {
            const struct raft_entry *e = &p->entries[i];
            if (i > 0 && e->index != p->entries[i - 1].index + 1)
                return chk_fail(&s->chk, "persist: node %" PRIu64 " batch entries not consecutive",
                                n->id);
            w->ents[i] =
                (struct sim_entry){e->term, e->index, e->type, e->len, sim_dup(e->data, e->len)};
            w->ents_len++;
            if (chk_log_append(&s->chk, idx, e->index, e->term, e->data, e->len))
                return -1;
        }
    }
    w->hs = p->hard_state;
    n->writing = true;
    uint64_t lat = n->fsync_us ? n->fsync_us : 100 + prng_below(&s->rng, 2900);
    evq_push(&s->q, (struct ev){.at_us = s->now_us + lat,
                                .kind = EV_PERSIST_DONE,
                                .node = idx,
                                .generation = n->gen});
    sim_trace(s,
              "node %" PRIu64 " persist seq=%" PRIu64 " entries=%zu snap=%d term=%" PRIu64
              " vote=%" PRIu64 " commit=%" PRIu64,
              n->id, p->seq, p->entries_len, p->snapshot != NULL, p->hard_state.term,
              p->hard_state.vote, p->hard_state.commit);
    return 0;
}

static void sim_sm_config_reset(struct sim_node *n, const struct raft_config *c)
{
    n->sm_config = *c;
}

static int sim_apply_snapshot(struct sim *s, struct sim_node *n, const struct raft_snapshot_meta *m)
{
    const struct sim_disk *d = &n->disk;
    uint64_t sidx, schain;
    if (!d->has_snap || d->snap.index != m->index)
        return chk_fail(&s->chk,
                        "snapshot: node %" PRIu64 " told to load snapshot %" PRIu64
                        " which is not durable (disk snapshot %" PRIu64 ")",
                        n->id, m->index, d->has_snap ? d->snap.index : 0);
    if (!sim_snap_decode(&d->snap_data, &sidx, &schain) || sidx != m->index)
        return chk_fail(&s->chk, "snapshot: node %" PRIu64 " snapshot %" PRIu64 " is corrupt",
                        n->id, m->index);
    if (chk_apply_snapshot(&s->chk, sim_idx(n), sidx, schain))
        return -1;
    n->sm_index = sidx;
    n->sm_chain = schain;
    sim_sm_config_reset(n, &m->config);
    /* Proposals inside the snapshot have an unknown outcome for their client: forget them. */
    size_t k = 0;
    for (size_t i = 0; i < n->props_len; i++)
        if (n->props[i].index > sidx)
            n->props[k++] = n->props[i];
    n->props_len = k;
    sim_trace(s, "node %" PRIu64 " loaded snapshot %" PRIu64, n->id, sidx);
    return 0;
}

static void sim_ack(struct sim *s, uint64_t cmd, uint64_t index)
{
    if (cmd >= s->cmd_cap) {
        size_t ncap = BATON_MAX(s->cmd_cap * 2, cmd + 1024);
        s->cmd_index = realloc(s->cmd_index, ncap * sizeof(uint64_t));
        BATON_ASSERT(s->cmd_index != NULL);
        memset(s->cmd_index + s->cmd_cap, 0, (ncap - s->cmd_cap) * sizeof(uint64_t));
        s->cmd_cap = ncap;
    }
    s->cmd_index[cmd] = index;
    chk_write_acked(&s->chk, index);
    s->st.commits++;
}

static int sim_apply(struct sim *s, struct sim_node *n, const struct raft_entry *e)
{
    if (chk_apply(&s->chk, sim_idx(n), e->index, e->term, e->data, e->len))
        return -1;
    n->sm_index = e->index;
    n->sm_chain = chk_chain(n->sm_chain, e->term, e->data, e->len);
    if (e->type == RAFT_ENTRY_CONFIG) {
        struct raft_config c;
        if (raft_config_decode(e->data, e->len, &c) != 0)
            return chk_fail(&s->chk,
                            "apply: node %" PRIu64 " config entry %" PRIu64 " does not decode",
                            n->id, e->index);
        sim_sm_config_reset(n, &c);
    }
    uint64_t cmd = (e->type == RAFT_ENTRY_NORMAL && e->len >= 8) ? le64_get(e->data) : 0;
    size_t k = 0;
    for (size_t i = 0; i < n->props_len; i++) {
        struct sim_prop *p = &n->props[i];
        if (p->index > e->index) {
            n->props[k++] = *p;
            continue;
        }
        if (p->index == e->index && p->cmd == cmd)
            sim_ack(s, cmd, e->index); /* applied where it was proposed: the client hears */
    }
    n->props_len = k;
    return 0;
}

static void sim_read_state(struct sim *s, struct sim_node *n, const struct raft_read_state *rs)
{
    for (size_t i = 0; i < n->reads_len; i++) {
        struct sim_read_op *r = &n->reads[i];
        if (r->id == rs->context && !r->has_ridx) {
            r->ridx = rs->index;
            r->has_ridx = true;
            return;
        }
    }
}

static void sim_read_served(struct sim *s, uint64_t id, uint64_t index)
{
    if (id >= s->read_cap) {
        size_t ncap = BATON_MAX(s->read_cap * 2, id + 1024);
        s->read_served = realloc(s->read_served, ncap * sizeof(uint64_t));
        BATON_ASSERT(s->read_served != NULL);
        memset(s->read_served + s->read_cap, 0, (ncap - s->read_cap) * sizeof(uint64_t));
        s->read_cap = ncap;
    }
    s->read_served[id] = index + 1;
}

/* Serves reads whose read index the state machine has reached; drops reads that waited too
 * long (their request or answer was lost: raft never answers those). */
static int sim_reads_sweep(struct sim *s, struct sim_node *n)
{
    size_t k = 0;
    for (size_t i = 0; i < n->reads_len; i++) {
        struct sim_read_op *r = &n->reads[i];
        if (r->has_ridx && n->sm_index >= r->ridx) {
            if (chk_read_done(&s->chk, sim_idx(n), r->floor, r->ridx, n->sm_index))
                return -1;
            sim_read_served(s, r->id, n->sm_index);
            s->st.reads++;
            continue;
        }
        if (s->now_us - r->start_us > 5000000)
            continue;
        n->reads[k++] = *r;
    }
    n->reads_len = k;
    return 0;
}

static void sim_snap_read(struct sim *s, struct sim_node *n, const struct raft_snap_read *q)
{
    const struct sim_disk *d = &n->disk;
    if (!n->up || !d->has_snap || d->snap.index != q->index || q->offset > d->snap_data.len)
        return; /* raft asks for a snapshot we no longer have: it will ask again */
    size_t left = d->snap_data.len - (size_t)q->offset;
    size_t len = BATON_MIN(left, (size_t)q->len_max);
    bool last = len == left;
    int rc = raft_snapshot_chunk(n->r, q->to, q->index, q->offset, d->snap_data.data + q->offset,
                                 len, last);
    if (rc != 0)
        chk_fail(&s->chk,
                 "snapshot: raft_snapshot_chunk(node %" PRIu64 ", to %" PRIu64 ", offset %" PRIu64
                 ", len %zu) = %s",
                 n->id, q->to, q->offset, len, baton_strerror(rc));
}

/* Compacts the node's log at its applied index: the state machine image becomes its durable
 * snapshot (a real member writes and fsyncs the snapshot file before compacting its WAL). */
static int sim_compact_node(struct sim *s, struct sim_node *n)
{
    struct sim_disk *d = &n->disk;
    uint64_t index = n->sm_index;
    if (!n->up || index <= (d->has_snap ? d->snap.index : 0))
        return 0;
    uint64_t term;
    if (raft_term_at(n->r, index, &term) != 0)
        return 0;
    int rc = raft_compact(n->r, index);
    if (rc != 0)
        return chk_fail(&s->chk, "compact: node %" PRIu64 " raft_compact(%" PRIu64 ") = %s", n->id,
                        index, baton_strerror(rc));
    d->has_snap = true;
    d->snap.index = index;
    d->snap.term = term;
    d->snap.config = n->sm_config;
    sim_snap_encode(index, n->sm_chain, &d->snap_data);
    uint64_t first = d->ents_len ? d->ents[0].index : index + 1;
    size_t drop = index >= first ? (size_t)BATON_MIN(index - first + 1, d->ents_len) : 0;
    for (size_t i = 0; i < drop; i++)
        sim_entry_free(&d->ents[i]);
    if (drop)
        memmove(d->ents, d->ents + drop, (d->ents_len - drop) * sizeof(*d->ents));
    d->ents_len -= drop;
    if (d->ents_len && d->ents[0].index != index + 1) {
        /* The disk's log does not reach the snapshot: nothing after it survives. */
        sim_disk_truncate(d, 0);
    }
    s->st.compactions++;
    sim_trace(s, "node %" PRIu64 " compacted at %" PRIu64, n->id, index);
    return chk_log_snapshot(&s->chk, sim_idx(n), index, term, n->sm_chain, true);
}

static int sim_check_status(struct sim *s, struct sim_node *n)
{
    if (!n->up)
        return 0;
    struct raft_status st;
    raft_status(n->r, &st);
    if (st.commit > st.last_index)
        return chk_fail(
            &s->chk, "commit: node %" PRIu64 " commit %" PRIu64 " beyond its last index %" PRIu64,
            n->id, st.commit, st.last_index);
    /* §5.4.2 (Figure 8): a leader moves its commit index only onto an entry of its own term;
     * older entries become committed indirectly, never by counting their replicas. */
    bool leader = st.role == RAFT_LEADER;
    if (leader && n->obs_leader && n->obs_term == st.term && st.commit > n->obs_commit) {
        uint64_t t = 0;
        if (raft_term_at(n->r, st.commit, &t) == 0 && t != st.term)
            return chk_fail(&s->chk,
                            "commitment (Figure 8): leader %" PRIu64 " of term %" PRIu64
                            " advanced its commit index to %" PRIu64 ", an entry of term %" PRIu64,
                            n->id, st.term, st.commit, t);
    }
    n->obs_leader = leader;
    n->obs_term = st.term;
    n->obs_commit = st.commit;
    /* Commitment is judged on what the node handed out. Raft may hold entries not handed out
     * yet (the next persist batch), even replacing a handed-out suffix: fold in only the prefix
     * where raft's log and the mirror agree (equal terms at an index mean equal prefixes). */
    uint64_t commit = BATON_MIN(st.commit, chk_log_last(&s->chk, sim_idx(n)));
    uint64_t floor = s->chk.nodes[sim_idx(n)].commit_seen;
    while (commit > floor) {
        uint64_t mt, mc, rt;
        if (chk_log_get(&s->chk, sim_idx(n), commit, &mt, &mc) &&
            raft_term_at(n->r, commit, &rt) == 0 && mt == rt)
            break;
        commit--;
    }
    return chk_status(&s->chk, sim_idx(n), st.role == RAFT_LEADER, st.term, commit);
}

/* Performs every ready of node n, then checks it. */
int sim_node_process(struct sim *s, struct sim_node *n)
{
    struct raft_snap_read sreads[SIM_SNAP_READS_MAX];
    for (int loops = 0; n->up && raft_has_ready(n->r); loops++) {
        if (loops == SIM_READY_LOOPS_MAX)
            return chk_fail(&s->chk, "ready: node %" PRIu64 " never runs out of ready batches",
                            n->id);
        struct raft_ready rd;
        raft_ready(n->r, &rd);
        if (rd.persist && sim_write_start(s, n, rd.persist))
            return -1;
        /* Fold in the commit index before applying: what is applied must be known committed. */
        if (sim_check_status(s, n))
            return -1;
        for (size_t i = 0; i < rd.msgs_len; i++)
            if (sim_send(s, n, &rd.msgs[i]))
                return -1;
        if (rd.apply_snapshot && sim_apply_snapshot(s, n, rd.apply_snapshot))
            return -1;
        for (size_t i = 0; i < rd.committed_len; i++)
            if (sim_apply(s, n, &rd.committed[i]))
                return -1;
        for (size_t i = 0; i < rd.reads_len; i++)
            sim_read_state(s, n, &rd.reads[i]);
        size_t sreads_len = BATON_MIN(rd.snap_reads_len, (size_t)SIM_SNAP_READS_MAX);
        if (sreads_len)
            memcpy(sreads, rd.snap_reads, sreads_len * sizeof(*sreads));
        raft_advance(n->r, &rd);
        for (size_t i = 0; i < sreads_len; i++)
            sim_snap_read(s, n, &sreads[i]);
        if (s->chk.violation[0])
            return -1;
    }
    if (sim_reads_sweep(s, n))
        return -1;
    if (n->up && n->compact_every &&
        n->sm_index - (n->disk.has_snap ? n->disk.snap.index : 0) >= n->compact_every) {
        if (sim_compact_node(s, n))
            return -1;
        if (raft_has_ready(n->r))
            return sim_node_process(s, n);
    }
    return sim_check_status(s, n);
}

/* ---- Node life cycle ------------------------------------------------------------------------- */

static int sim_node_start(struct sim *s, struct sim_node *n)
{
    BATON_ASSERT(!n->up && !n->retired);
    struct raft_options o = {0};
    raft_options_default(&o);
    o.id = n->id;
    o.election_ticks = s->cfg.election_ticks;
    o.heartbeat_ticks = s->cfg.heartbeat_ticks;
    o.pre_vote = !s->cfg.no_pre_vote;
    o.check_quorum = !s->cfg.no_check_quorum;
    o.max_msg_bytes = s->cfg.max_msg_bytes; /* small, so appends are batched and split */
    o.max_inflight_msgs = 16;
    o.snapshot_chunk_bytes = SIM_CHUNK_BYTES;
    prng_seed(&n->rng, prng_next(&s->rng));
    o.rng = &n->rng;
    o.log = s->cfg.verbose ? &s->sink : NULL;
    int rc = raft_create(&o, &n->r);
    if (rc != 0)
        return chk_fail(&s->chk, "start: raft_create(node %" PRIu64 ") = %s", n->id,
                        baton_strerror(rc));
    n->up = true;
    n->started = true;
    n->gen++;
    n->writing = false;
    n->props_len = n->reads_len = 0;
    n->obs_leader = false;

    int idx = sim_idx(n);
    struct sim_disk *d = &n->disk;
    chk_node_reset(&s->chk, idx);
    n->sm_index = n->sm_chain = 0;
    memset(&n->sm_config, 0, sizeof(n->sm_config));
    buf_clear(&n->vstage);
    BATON_ASSERT(buf_append(&n->vstage, d->stage.data, d->stage.len) == 0);
    n->vstage_index = d->stage_index;
    if (d->has_hs || d->has_snap || d->ents_len) {
        /* Restart: rebuild raft and the state machine from the disk alone. */
        uint64_t sidx = 0, schain = 0;
        if (d->has_snap) {
            if (!sim_snap_decode(&d->snap_data, &sidx, &schain))
                return chk_fail(&s->chk, "restart: node %" PRIu64 " snapshot corrupt", n->id);
            if (chk_log_snapshot(&s->chk, idx, sidx, d->snap.term, schain, false) ||
                chk_apply_snapshot(&s->chk, idx, sidx, schain))
                return -1;
            n->sm_index = sidx;
            n->sm_chain = schain;
            n->sm_config = d->snap.config;
        }
        struct raft_entry *ents = sim_xmalloc(d->ents_len * sizeof(*ents));
        for (size_t i = 0; i < d->ents_len; i++) {
            const struct sim_entry *e = &d->ents[i];
            ents[i] = (struct raft_entry){e->term, e->index, e->type, e->len, e->data};
            if (chk_log_append(&s->chk, idx, e->index, e->term, e->data, e->len)) {
                free(ents);
                return -1;
            }
        }
        struct raft_hard_state hs = d->has_hs ? d->hs : (struct raft_hard_state){0};
        rc = raft_restore(n->r, &hs, d->has_snap ? &d->snap : NULL, ents, d->ents_len);
        free(ents);
        if (rc != 0)
            return chk_fail(&s->chk, "restart: raft_restore(node %" PRIu64 ") = %s", n->id,
                            baton_strerror(rc));
    } else if (n->initial) {
        rc = raft_bootstrap(n->r, &s->initial_conf);
        if (rc != 0)
            return chk_fail(&s->chk, "start: raft_bootstrap(node %" PRIu64 ") = %s", n->id,
                            baton_strerror(rc));
    }
    uint64_t tick_us = (uint64_t)s->cfg.tick_ms * 1000;
    evq_push(&s->q, (struct ev){.at_us = s->now_us + 1 + prng_below(&s->rng, tick_us),
                                .kind = EV_TICK,
                                .node = idx,
                                .generation = n->gen});
    sim_trace(s, "node %" PRIu64 " started (disk: snap=%" PRIu64 " entries=%zu term=%" PRIu64 ")",
              n->id, d->has_snap ? d->snap.index : 0, d->ents_len, d->has_hs ? d->hs.term : 0);
    return sim_node_process(s, n);
}

static void sim_node_stop(struct sim *s, struct sim_node *n)
{
    if (!n->up)
        return;
    raft_destroy(n->r);
    n->r = NULL;
    n->up = false;
    n->gen++;
    if (n->writing)
        sim_write_free(&n->w); /* never reached the disk */
    n->writing = false;
    n->props_len = n->reads_len = 0;
    chk_node_reset(&s->chk, sim_idx(n));
}

/* ---- Events ---------------------------------------------------------------------------------- */

static int sim_on_deliver(struct sim *s, struct ev *e)
{
    struct sim_node *n = &s->nodes[e->node];
    if (!n->up || s->link_down[e->from][e->node])
        return 0;
    if (s->hold[e->from][e->node]) {
        if (s->held_len < SIM_HELD_MAX) {
            s->held[s->held_len++] = (struct sim_held){e->from, e->node, e->data, e->len};
            e->data = NULL;
        }
        return 0;
    }
    struct raft_msg m;
    arena_reset(&s->arena);
    int rc = raft_msg_decode(e->data, e->len, &m, &s->arena);
    if (rc != 0)
        return chk_fail(&s->chk, "codec: node %" PRIu64 " cannot decode a message it was sent: %s",
                        n->id, baton_strerror(rc));
    sim_trace(s, "recv %" PRIu64 "->%" PRIu64 " %s term=%" PRIu64 " index=%" PRIu64, m.from, m.to,
              raft_msg_type_name(m.type), m.term, m.index);
    if (s->filter && s->filter(s->filter_arg, &m)) {
        s->st.msgs_dropped++;
        return 0;
    }
    rc = raft_step(n->r, &m);
    if (rc != 0 && rc != BATON_ENOMEM)
        return chk_fail(&s->chk, "step: node %" PRIu64 " raft_step(%s from %" PRIu64 ") = %s",
                        n->id, raft_msg_type_name(m.type), m.from, baton_strerror(rc));
    return sim_node_process(s, n);
}

static int sim_on_persist_done(struct sim *s, struct ev *e)
{
    struct sim_node *n = &s->nodes[e->node];
    if (!n->up || e->generation != n->gen || !n->writing)
        return 0;
    int rc = sim_disk_apply(s, n, &n->w);
    sim_write_free(&n->w);
    n->writing = false;
    if (rc)
        return -1;
    raft_persisted(n->r);
    return sim_node_process(s, n);
}

static int sim_on_tick(struct sim *s, struct ev *e)
{
    struct sim_node *n = &s->nodes[e->node];
    if (!n->up || e->generation != n->gen)
        return 0;
    raft_tick(n->r);
    evq_push(&s->q, (struct ev){.at_us = s->now_us + (uint64_t)s->cfg.tick_ms * 1000,
                                .kind = EV_TICK,
                                .node = e->node,
                                .generation = n->gen});
    return sim_node_process(s, n);
}

static int sim_on_peer_down(struct sim *s, struct ev *e);

/* One step: the earliest event. 0 (also when the queue is empty), or -1 on a violation. */
int sim_step(struct sim *s)
{
    struct ev e;
    if (!evq_pop(&s->q, &e))
        return 0;
    BATON_ASSERT(e.at_us >= s->now_us);
    s->now_us = e.at_us;
    s->st.steps++;
    int rc = 0;
    switch (e.kind) {
    case EV_TICK:
        rc = sim_on_tick(s, &e);
        break;
    case EV_DELIVER:
        rc = sim_on_deliver(s, &e);
        break;
    case EV_PERSIST_DONE:
        rc = sim_on_persist_done(s, &e);
        break;
    case EV_CLIENT:
        rc = sim_on_client(s, &e);
        break;
    case EV_FAULT:
        rc = sim_on_fault(s, &e);
        break;
    case EV_HEAL:
        rc = sim_on_heal(s, &e);
        break;
    case EV_USER:
        rc = sim_on_restart(s, &e);
        break;
    case EV_PEER_DOWN:
        rc = sim_on_peer_down(s, &e);
        break;
    }
    free(e.data);
    if (s->chk.violation[0])
        rc = -1;
    return rc;
}

/* ---- Fixture API ------------------------------------------------------------------------------
 */

struct sim *sim_create(const struct sim_config *cfg)
{
    BATON_ASSERT(cfg->nodes >= 1 && cfg->nodes <= 7);
    struct sim *s = calloc(1, sizeof(*s));
    BATON_ASSERT(s != NULL);
    s->cfg = *cfg;
    if (getenv("SIM_VERBOSE")) /* scenario debugging: trace every event */
        s->cfg.verbose = true;
    if (!s->cfg.tick_ms)
        s->cfg.tick_ms = 10;
    if (!s->cfg.election_ticks)
        s->cfg.election_ticks = 10;
    if (!s->cfg.heartbeat_ticks)
        s->cfg.heartbeat_ticks = 1;
    if (!s->cfg.max_msg_bytes)
        s->cfg.max_msg_bytes = 2048;
    if (!s->cfg.liveness_ms)
        s->cfg.liveness_ms = 10000;
    prng_seed(&s->rng, cfg->seed);
    evq_init(&s->q);
    chk_init(&s->chk, SIM_NODES_MAX);
    arena_init(&s->arena, 64 * 1024);
    s->sink = (struct log_sink){sim_raft_log, s, LOG_DEBUG};
    s->next_cmd = s->next_read = 1;
    s->jitter_us = 1000;
    s->initial_conf.voters_len = (uint32_t)cfg->nodes;
    for (int i = 0; i < cfg->nodes; i++) {
        s->initial_conf.voters[i] = (uint64_t)i + 1;
        struct sim_node *n = &s->nodes[i];
        n->id = (uint64_t)i + 1;
        n->initial = true;
    }
    s->nodes_len = cfg->nodes;
    for (int i = 0; i < cfg->nodes; i++)
        if (sim_node_start(s, &s->nodes[i]) != 0)
            break;
    return s;
}

void sim_destroy(struct sim *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nodes_len; i++) {
        struct sim_node *n = &s->nodes[i];
        sim_node_stop(s, n);
        sim_disk_free(&n->disk);
        buf_free(&n->vstage);
    }
    for (size_t i = 0; i < s->held_len; i++)
        free(s->held[i].data);
    evq_free(&s->q);
    chk_free(&s->chk);
    arena_free(&s->arena);
    buf_free(&s->enc);
    free(s->cmd_index);
    free(s->read_served);
    free(s);
}

const char *sim_violation(const struct sim *s)
{
    return s->chk.violation;
}

void sim_get_stats(const struct sim *s, struct sim_stats *st)
{
    *st = s->st;
    st->elections = s->chk.elections;
    st->sim_ms = s->now_us / 1000;
}

uint64_t sim_now_ms(const struct sim *s)
{
    return s->now_us / 1000;
}

int sim_run_until(struct sim *s, bool (*pred)(struct sim *s, void *arg), void *arg, uint64_t max_ms)
{
    uint64_t end = s->now_us + max_ms * 1000;
    if (s->chk.violation[0])
        return -1;
    while (!(pred && pred(s, arg))) {
        if (evq_next_at(&s->q) > end) {
            s->now_us = end;
            return pred ? BATON_ETIMEOUT : 0;
        }
        if (sim_step(s) != 0)
            return -1;
    }
    return 0;
}

int sim_run_for(struct sim *s, uint64_t ms)
{
    return sim_run_until(s, NULL, NULL, ms);
}

uint64_t sim_leader(const struct sim *s)
{
    uint64_t best = 0, best_term = 0;
    for (int i = 0; i < s->nodes_len; i++) {
        const struct sim_node *n = &s->nodes[i];
        if (!n->up)
            continue;
        struct raft_status st;
        raft_status(n->r, &st);
        if (st.role == RAFT_LEADER && st.term >= best_term) {
            best = n->id;
            best_term = st.term;
        }
    }
    return best;
}

int sim_leaders_count(const struct sim *s)
{
    int count = 0;
    for (int i = 0; i < s->nodes_len; i++) {
        struct raft_status st;
        if (s->nodes[i].up) {
            raft_status(s->nodes[i].r, &st);
            count += st.role == RAFT_LEADER;
        }
    }
    return count;
}

bool sim_is_up(const struct sim *s, uint64_t id)
{
    return id >= 1 && id <= (uint64_t)s->nodes_len && s->nodes[id - 1].up;
}

int sim_status(const struct sim *s, uint64_t id, struct raft_status *st)
{
    if (!sim_is_up(s, id))
        return BATON_ENOTFOUND;
    raft_status(s->nodes[id - 1].r, st);
    return 0;
}

struct raft *sim_raft(struct sim *s, uint64_t id)
{
    return sim_is_up(s, id) ? s->nodes[id - 1].r : NULL;
}

uint64_t sim_applied(const struct sim *s, uint64_t id)
{
    return (id >= 1 && id <= (uint64_t)s->nodes_len) ? s->nodes[id - 1].sm_index : 0;
}

void sim_crash(struct sim *s, uint64_t id, bool peer_down)
{
    struct sim_node *n = sim_node_of(s, id);
    if (!n || !n->up)
        return;
    sim_trace(s, "node %" PRIu64 " CRASH%s", id,
              peer_down ? " (peers see the connection close)" : "");
    s->st.crashes++;
    sim_node_stop(s, n);
    if (!peer_down)
        return;
    /* Each peer notices the closed connection on its own schedule (when it next reads or writes
     * the socket), not all in the same instant. */
    for (int i = 0; i < s->nodes_len; i++) {
        struct sim_node *p = &s->nodes[i];
        if (p->up && !s->link_down[i][sim_idx(n)])
            evq_push(&s->q, (struct ev){.at_us = s->now_us + 100 + prng_below(&s->rng, 20000),
                                        .kind = EV_PEER_DOWN,
                                        .node = i,
                                        .from = sim_idx(n),
                                        .generation = p->gen});
    }
}

static int sim_on_peer_down(struct sim *s, struct ev *e)
{
    struct sim_node *p = &s->nodes[e->node];
    if (!p->up || p->gen != e->generation)
        return 0;
    sim_trace(s, "node %" PRIu64 " sees node %d's connection closed", p->id, e->from + 1);
    raft_peer_down(p->r, (uint64_t)e->from + 1);
    return sim_node_process(s, p);
}

void sim_restart(struct sim *s, uint64_t id)
{
    struct sim_node *n = sim_node_of(s, id);
    if (!n || n->up || n->retired)
        return;
    sim_node_start(s, n);
}

void sim_retire(struct sim *s, uint64_t id)
{
    struct sim_node *n = sim_node_of(s, id);
    if (!n)
        return;
    sim_trace(s, "node %" PRIu64 " retired", id);
    sim_node_stop(s, n);
    n->retired = true;
}

void sim_link(struct sim *s, uint64_t from, uint64_t to, bool up)
{
    BATON_ASSERT(from >= 1 && from <= SIM_NODES_MAX && to >= 1 && to <= SIM_NODES_MAX);
    s->link_down[from - 1][to - 1] = !up;
}

void sim_isolate(struct sim *s, uint64_t id)
{
    for (uint64_t j = 1; j <= SIM_NODES_MAX; j++)
        if (j != id) {
            sim_link(s, id, j, false);
            sim_link(s, j, id, false);
        }
}

void sim_heal_network(struct sim *s)
{
    memset(s->link_down, 0, sizeof(s->link_down));
    s->drop_ppm = s->dup_ppm = s->delay_ppm = 0;
    s->reorder = false;
    for (int i = 0; i < SIM_NODES_MAX; i++)
        for (int j = 0; j < SIM_NODES_MAX; j++)
            if (s->hold[i][j])
                sim_hold(s, (uint64_t)i + 1, (uint64_t)j + 1, false);
}

void sim_set_drop(struct sim *s, uint32_t per_million)
{
    s->drop_ppm = per_million;
}

void sim_hold(struct sim *s, uint64_t from, uint64_t to, bool hold)
{
    BATON_ASSERT(from >= 1 && from <= SIM_NODES_MAX && to >= 1 && to <= SIM_NODES_MAX);
    s->hold[from - 1][to - 1] = hold;
    if (hold)
        return;
    size_t k = 0;
    for (size_t i = 0; i < s->held_len; i++) {
        struct sim_held *h = &s->held[i];
        if (h->from == (int)from - 1 && h->to == (int)to - 1) {
            evq_push(&s->q, (struct ev){.at_us = s->now_us + 1 + i,
                                        .kind = EV_DELIVER,
                                        .node = h->to,
                                        .from = h->from,
                                        .data = h->data,
                                        .len = h->len});
        } else {
            s->held[k++] = *h;
        }
    }
    s->held_len = k;
}

void sim_set_filter(struct sim *s, sim_filter_fn fn, void *arg)
{
    s->filter = fn;
    s->filter_arg = arg;
}

void sim_set_fsync_ms(struct sim *s, uint64_t id, uint64_t ms)
{
    struct sim_node *n = sim_node_of(s, id);
    if (n)
        n->fsync_us = ms * 1000;
}

int sim_propose(struct sim *s, uint64_t id, uint64_t *cmd_out)
{
    struct sim_node *n = sim_node_of(s, id);
    if (!n || !n->up)
        return BATON_ENOTFOUND;
    if (n->props_len == SIM_PROPS_MAX)
        return BATON_EBUSY;
    uint8_t data[64];
    uint64_t cmd = s->next_cmd++;
    le64_put(data, cmd);
    size_t len = 8 + (size_t)prng_below(&s->rng, sizeof(data) - 8 + 1);
    for (size_t i = 8; i < len; i++)
        data[i] = (uint8_t)prng_next(&s->rng);
    uint64_t index = 0;
    int rc = raft_propose(n->r, data, len, &index);
    if (cmd_out)
        *cmd_out = cmd;
    if (rc != 0)
        return rc;
    n->props[n->props_len++] = (struct sim_prop){index, cmd};
    sim_trace(s, "node %" PRIu64 " propose cmd=%" PRIu64 " index=%" PRIu64, id, cmd, index);
    return sim_node_process(s, n);
}

bool sim_write_acked(const struct sim *s, uint64_t cmd)
{
    return cmd < s->cmd_cap && s->cmd_index[cmd] != 0;
}

uint64_t sim_write_index(const struct sim *s, uint64_t cmd)
{
    return cmd < s->cmd_cap ? s->cmd_index[cmd] : 0;
}

int sim_read(struct sim *s, uint64_t id, uint64_t *read_out)
{
    struct sim_node *n = sim_node_of(s, id);
    if (!n || !n->up)
        return BATON_ENOTFOUND;
    if (n->reads_len == SIM_READS_MAX)
        return BATON_EBUSY;
    uint64_t rid = s->next_read++;
    if (read_out)
        *read_out = rid;
    int rc = raft_read_index(n->r, rid);
    if (rc != 0)
        return rc;
    n->reads[n->reads_len++] =
        (struct sim_read_op){rid, chk_read_begin(&s->chk), 0, false, s->now_us};
    sim_trace(s, "node %" PRIu64 " read id=%" PRIu64, id, rid);
    return sim_node_process(s, n);
}

bool sim_read_done(const struct sim *s, uint64_t read, uint64_t *index_out)
{
    if (read >= s->read_cap || s->read_served[read] == 0)
        return false;
    if (index_out)
        *index_out = s->read_served[read] - 1;
    return true;
}

uint64_t sim_new_node(struct sim *s)
{
    if (s->nodes_len == SIM_NODES_MAX)
        return 0;
    struct sim_node *n = &s->nodes[s->nodes_len];
    memset(n, 0, sizeof(*n));
    n->id = (uint64_t)s->nodes_len + 1;
    n->compact_every = s->snapshots ? 8 + prng_below(&s->rng, 40) : 0;
    s->nodes_len++;
    if (sim_node_start(s, n) != 0)
        return 0;
    return n->id;
}

int sim_change(struct sim *s, uint64_t leader, const struct raft_conf_change *c, size_t n,
               enum raft_conf_transition t)
{
    struct sim_node *l = sim_node_of(s, leader);
    if (!l || !l->up)
        return BATON_ENOTFOUND;
    uint64_t index = 0;
    int rc = raft_change_config(l->r, c, n, t, &index);
    sim_trace(s, "node %" PRIu64 " change config (%zu changes, transition %d) = %d index=%" PRIu64,
              leader, n, (int)t, rc, index);
    if (rc != 0)
        return rc;
    s->st.conf_changes++;
    return sim_node_process(s, l);
}

int sim_transfer(struct sim *s, uint64_t leader, uint64_t target)
{
    struct sim_node *l = sim_node_of(s, leader);
    if (!l || !l->up)
        return BATON_ENOTFOUND;
    int rc = raft_transfer_leader(l->r, target);
    sim_trace(s, "node %" PRIu64 " transfer leadership to %" PRIu64 " = %d", leader, target, rc);
    if (rc != 0)
        return rc;
    s->st.transfers++;
    return sim_node_process(s, l);
}

int sim_compact(struct sim *s, uint64_t id)
{
    struct sim_node *n = sim_node_of(s, id);
    if (!n || !n->up)
        return BATON_ENOTFOUND;
    if (sim_compact_node(s, n))
        return -1;
    return sim_node_process(s, n);
}
