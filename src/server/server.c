/*
 * The member: life cycle, restore, the loop that turns Raft's readies into WAL writes, peer
 * frames and applies, and the entry points for client calls.
 */
#include "server/server_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t now_ms(struct server *s)
{
    return s->o.env.now_ms(s->o.env.ctx);
}

/* Asks the loop to call server_on_wal soon. Entry points never run a caller's callback before
 * they return: they queue work and kick, and the loop does it on its next turn. */
void server_kick(struct server *s)
{
    if (!s->kicked) {
        s->kicked = true;
        if (s->o.env.defer)
            s->o.env.defer(s->o.env.ctx);
        else
            s->o.env.wake(s->o.env.ctx);
    }
}

void server_fail(struct server *s, int err, const char *what)
{
    if (s->failed)
        return;
    s->failed = true;
    char msg[PATH_MAX + 256];
    snprintf(msg, sizeof(msg), "%s: %s", what, mvcc_strerror(err));
    log_write(s->o.log, LOG_ERROR, "member=%llx msg=\"fatal\" err=\"%s\"",
              (unsigned long long)s->o.member_id, msg);
    calls_fail_all(s, BATON_ECLOSED);
    if (s->o.env.fatal)
        s->o.env.fatal(s->o.env.ctx, err, msg);
}

/* ---- Peer frames -------------------------------------------------------------------------------
 */

/* Sends s->frame. A failed send is remembered and reported to Raft once no ready is
 * outstanding (raft_report_unreachable may not run in the middle of one). */
static void send_frame(struct server *s, uint64_t to, bool bulk)
{
    int rc = s->o.env.send(s->o.env.ctx, to, bulk, s->frame.data, s->frame.len);
    if (rc == 0)
        return;
    for (int i = 0; i < s->unreachable_len; i++)
        if (s->unreachable[i] == to)
            return;
    if (s->unreachable_len < SERVER_PEERS_MAX)
        s->unreachable[s->unreachable_len++] = to;
}

static void report_unreachable(struct server *s)
{
    for (int i = 0; i < s->unreachable_len; i++)
        raft_report_unreachable(s->raft, s->unreachable[i]);
    s->unreachable_len = 0;
}

static void send_msgs(struct server *s, const struct raft_msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        buf_clear(&s->frame);
        uint8_t kind = FRAME_RAFT;
        if (buf_append(&s->frame, &kind, 1) != 0 || raft_msg_encode(&m[i], &s->frame) != 0)
            continue; /* out of memory: the message is lost, Raft retransmits */
        send_frame(s, m[i].to, m[i].type == RAFT_MSG_SNAPSHOT);
    }
}

void server_on_peer_frame(struct server *s, uint64_t from, const uint8_t *data, size_t len)
{
    if (s->failed || len == 0)
        return;
    if (data[0] == FRAME_RAFT) {
        struct raft_msg m;
        arena_reset(&s->scratch);
        if (raft_msg_decode(data + 1, len - 1, &m, &s->scratch) != 0 || m.from != from) {
            log_write(s->o.log, LOG_WARN, "member=%llx msg=\"bad raft frame\" from=%llx",
                      (unsigned long long)s->o.member_id, (unsigned long long)from);
            return;
        }
        raft_step(s->raft, &m);
    } else if (data[0] == FRAME_FORWARD) {
        /* A follower's proposal: propose it as is if we lead; otherwise drop it (the
         * follower's call times out or fails when it learns the new leader). */
        if (s->leader == s->o.member_id)
            raft_propose(s->raft, data + 1, len - 1, NULL);
    } else if (data[0] == FRAME_LEADER_REQ) {
        ops_on_request(s, from, data + 1, len - 1);
    } else if (data[0] == FRAME_LEADER_RESP) {
        ops_on_response(s, data + 1, len - 1);
    }
    /* The other frames read in this loop turn join the same ready (one WAL batch, one store
     * commit); a change of leader or term is taken at once, so that calls arriving next see it. */
    struct raft_status st;
    raft_status(s->raft, &st);
    if (st.leader != s->leader || st.term != s->term)
        server_process(s);
    else
        server_kick(s);
}

/* The transport saw a peer's process die. When it was our leader, every follower hears it at
 * the same moment; if all campaigned at once they would grant each other's pre-votes and then
 * split the real vote, falling back to the full randomized election timeout. So the followers
 * report the death to Raft in a fixed order: the k-th of the remaining voters by id waits k
 * steps of election/30 ticks. An early one is refused by those still in the leader's lease;
 * the first whose already-reporting peers make a majority wins, with no vote split. */
void server_on_peer_down(struct server *s, uint64_t peer)
{
    if (s->failed)
        return;
    if (peer != s->leader || peer == s->o.member_id) {
        raft_peer_down(s->raft, peer);
        server_process(s);
        return;
    }
    struct raft_status st;
    raft_status(s->raft, &st);
    uint32_t rank = 0;
    for (uint32_t i = 0; i < st.config.voters_len; i++)
        if (st.config.voters[i] != peer && st.config.voters[i] < s->o.member_id)
            rank++;
    uint32_t step = BATON_MAX(1, s->o.election_ticks / 30);
    s->down_peer = peer;
    s->down_ticks = rank * step;
    if (s->down_ticks == 0) {
        s->down_peer = 0;
        raft_peer_down(s->raft, peer);
        server_process(s);
    }
}

/* ---- Persisting --------------------------------------------------------------------------------
 */

static int submit_persist(struct server *s, const struct raft_persist *p)
{
    /* In Raft's order: snapshot chunks, the snapshot, entries, hard state. */
    int rc = snap_stage_chunks(s, p->chunks, p->chunks_len);
    if (!rc && p->snapshot)
        rc = snap_stage_finish(s, p->snapshot);
    if (rc)
        return rc;
    struct wal_snap_marker mk = {0, 0};
    if (p->snapshot)
        mk = (struct wal_snap_marker){p->snapshot->index, p->snapshot->term};
    if (p->entries_len > s->wal_entries_cap) {
        size_t cap = BATON_MAX(p->entries_len, 2 * s->wal_entries_cap);
        struct wal_entry *n = realloc(s->wal_entries, cap * sizeof(*n));
        if (!n)
            return BATON_ENOMEM;
        s->wal_entries = n;
        s->wal_entries_cap = cap;
    }
    for (size_t i = 0; i < p->entries_len; i++) {
        const struct raft_entry *e = &p->entries[i];
        s->wal_entries[i] = (struct wal_entry){e->index, e->term, e->type, e->data, e->len};
    }
    struct wal_hard_state hs = {p->hard_state.term, p->hard_state.vote, p->hard_state.commit};
    struct wal_batch b = {s->wal_entries, p->entries_len, p->hard_state_changed ? &hs : NULL,
                          p->snapshot ? &mk : NULL};
    return wal_submit(s->wal, &b, &s->persist_seq);
}

void server_on_wal(struct server *s)
{
    s->kicked = false;
    if (s->failed)
        return;
    struct wal_progress pr;
    wal_poll(s->wal, &pr);
    if (s->o.observer.timing) {
        uint64_t ns[64];
        size_t n;
        do {
            n = wal_fsync_samples(s->wal, ns, BATON_ARRAY_LEN(ns));
            for (size_t i = 0; i < n; i++)
                s->o.observer.timing(s->o.observer.ctx, SERVER_TIMING_WAL_FSYNC, ns[i]);
        } while (n == BATON_ARRAY_LEN(ns));
    }
    if (pr.err) {
        char what[PATH_MAX + 64];
        snprintf(what, sizeof(what), "%s: write-ahead log", s->dir.wal);
        server_fail(s, pr.err, what);
        return;
    }
    if (s->persist_seq && pr.durable_seq >= s->persist_seq) {
        s->persist_seq = 0;
        raft_persisted(s->raft);
    }
    snap_release(s, pr.durable_seq);
    server_process(s);
}

/* ---- The ready loop ----------------------------------------------------------------------------
 */

static void publish_self(struct server *s);
static bool published(struct server *s);

static void leader_changed(struct server *s, const struct raft_status *st)
{
    bool leads = st->role == RAFT_LEADER;
    log_write(s->o.log, LOG_INFO, "member=%llx term=%llu msg=\"leader changed\" leader=%llx",
              (unsigned long long)s->o.member_id, (unsigned long long)st->term,
              (unsigned long long)st->leader);
    if (st->leader && st->leader != s->leader)
        s->leader_changes++;
    if (s->was_leader && !leads)
        mvcc_lease_demote(s->store);
    if (leads && !s->was_leader)
        mvcc_lease_promote(s->store, now_ms(s)); /* a full TTL for every lease: see mvcc.h */
    /* Rounds the old leader never confirmed will not be confirmed. */
    reads_fail_unconfirmed(s, BATON_EPROPOSALDROP);
    s->was_leader = leads;
    s->leader = st->leader;
    s->term = st->term;
    ops_leader_changed(s, st->commit);
    if (st->leader)
        calls_fail_forwarded(s, st->leader);
}

/* Proposes what callbacks asked for while the last ready was outstanding. */
static void propose_deferred(struct server *s)
{
    size_t off = 0;
    while (off + 12 <= s->deferred.len) {
        uint32_t n = le32_get(s->deferred.data + off);
        uint64_t id = le64_get(s->deferred.data + off + 4);
        struct server_call *c = calls_find(s, id);
        if (c) {
            int rc = s->leader == s->o.member_id
                         ? raft_propose(s->raft, s->deferred.data + off + 12, n, &c->index)
                         : BATON_ENOTLEADER;
            if (rc)
                calls_finish(c, rc == BATON_ENOTLEADER ? BATON_EPROPOSALDROP : rc, NULL);
        }
        off += 12 + n;
    }
    buf_clear(&s->deferred);
}

static void handle_ready(struct server *s)
{
    struct raft_ready rd;
    raft_ready(s->raft, &rd);
    s->in_ready = true;
    if (rd.persist) {
        int rc = submit_persist(s, rd.persist);
        if (rc) {
            server_fail(s, rc, "write-ahead log submit");
            return;
        }
    }
    send_msgs(s, rd.msgs, rd.msgs_len);
    int rc = 0;
    if (rd.apply_snapshot) {
        char err[512];
        rc = snap_install(s, rd.apply_snapshot, err, sizeof(err));
        if (rc) {
            server_fail(s, rc, err);
            return;
        }
    }
    rc = apply_entries(s, rd.committed, rd.committed_len);
    if (rc) {
        char what[PATH_MAX + 64];
        snprintf(what, sizeof(what), "%s: applying committed entries to the store", s->dir.db);
        server_fail(s, rc, what);
        return;
    }
    for (size_t i = 0; i < rd.reads_len; i++)
        reads_confirmed(s, rd.reads[i].context, rd.reads[i].index);
    /* Chunk requests are answered once the ready is advanced (Raft takes no input before). */
    struct raft_snap_read sr[8];
    size_t sr_len = BATON_MIN(rd.snap_reads_len, BATON_ARRAY_LEN(sr));
    if (sr_len)
        memcpy(sr, rd.snap_reads, sr_len * sizeof(sr[0]));
    raft_advance(s->raft, &rd);
    s->in_ready = false;
    propose_deferred(s);
    for (size_t i = 0; i < sr_len; i++)
        snap_serve_read(s, &sr[i]);
    report_unreachable(s);
    if (rd.committed_len) {
        reads_applied(s);
        ops_applied(s);
    }
}

void server_process(struct server *s)
{
    if (s->processing) {
        s->again = true; /* a callback re-entered: the outer call loops once more */
        return;
    }
    s->processing = 1;
    for (int round = 0; round < 1000 && !s->failed; round++) {
        s->again = false;
        reads_start_round(s);
        ops_run_queued(s);
        while (!s->failed && raft_has_ready(s->raft))
            handle_ready(s);
        struct raft_status st;
        raft_status(s->raft, &st);
        if (st.leader != s->leader || st.term != s->term)
            leader_changed(s, &st);
        if (st.leader && now_ms(s) >= s->publish_after_ms && !published(s))
            publish_self(s);
        snap_maybe_compact(s);
        if (!s->again && (dlist_empty(&s->reads_next) || s->failed))
            break;
    }
    s->processing = 0;
}

/* ---- Calls -------------------------------------------------------------------------------------
 */

static uint64_t next_request_id(struct server *s)
{
    /* Member id in the top 16 bits keeps ids unique across members; the counter starts at the
     * boot time in ms so ids of a restarted member do not repeat. */
    return (s->o.member_id << 48) | (++s->next_req_id & 0xffffffffffffull);
}

int server_propose(struct server *s, struct request *req, struct arena *a, server_done_fn done,
                   void *ctx, struct server_call **call_out)
{
    if (s->failed)
        return BATON_ECLOSED;
    if (!s->leader) {
        s->proposals_failed++;
        return BATON_EUNAVAIL;
    }
    struct server_call *c = calls_new(s, CALL_PROPOSAL, done, ctx, a);
    if (!c)
        return BATON_EBUSY;
    req->id = c->req_id = next_request_id(s);
    buf_clear(&s->frame);
    uint8_t kind = FRAME_FORWARD;
    int rc = buf_append(&s->frame, &kind, 1);
    rc = rc ? rc : request_encode(req, &s->frame);
    if (!rc && s->leader == s->o.member_id && s->in_ready) {
        /* A callback inside a ready: Raft takes the entry once the ready is advanced. */
        uint8_t h[12];
        le32_put(h, (uint32_t)(s->frame.len - 1));
        le64_put(h + 4, c->req_id);
        rc = buf_append(&s->deferred, h, sizeof(h));
        rc = rc ? rc : buf_append(&s->deferred, s->frame.data + 1, s->frame.len - 1);
    } else if (!rc && s->leader == s->o.member_id) {
        rc = raft_propose(s->raft, s->frame.data + 1, s->frame.len - 1, &c->index);
    } else if (!rc) {
        c->fwd_leader = s->leader;
        send_frame(s, s->leader, false);
    }
    report_unreachable(s);
    if (rc) {
        server_call_cancel(c);
        s->proposals_failed++;
        return rc == BATON_ENOTLEADER ? BATON_EUNAVAIL : rc;
    }
    calls_index(s, c);
    if (call_out)
        *call_out = c;
    server_kick(s);
    return 0;
}

int server_read_barrier(struct server *s, server_done_fn done, void *ctx,
                        struct server_call **call_out)
{
    if (s->failed)
        return BATON_ECLOSED;
    if (!s->leader)
        return BATON_EUNAVAIL;
    struct server_call *c = calls_new(s, CALL_READ, done, ctx, NULL);
    if (!c)
        return BATON_EBUSY;
    dlist_push(&s->reads_next, &c->in_round);
    if (call_out)
        *call_out = c;
    /* The round starts on the next turn of the loop, so reads arriving together share it. */
    server_kick(s);
    return 0;
}

void server_tick(struct server *s)
{
    if (s->failed)
        return;
    raft_tick(s->raft);
    if (s->down_peer && --s->down_ticks == 0) {
        raft_peer_down(s->raft, s->down_peer);
        s->down_peer = 0;
    }
    calls_expire(s, now_ms(s));
    if (s->was_leader) {
        /* Expired leases are revoked through Raft, at most a bounded number per tick. */
        int64_t ids[64];
        size_t n = 0;
        mvcc_lease_expired(s->store, now_ms(s), ids, BATON_ARRAY_LEN(ids), &n);
        for (size_t i = 0; i < n; i++) {
            struct request q = {.type = REQ_LEASE_REVOKE};
            q.u.lease_revoke = ids[i];
            buf_clear(&s->frame);
            if (request_encode(&q, &s->frame) == 0)
                raft_propose(s->raft, s->frame.data, s->frame.len, NULL);
        }
    }
    server_process(s);
}

/* True when the member table holds this member's name and client URLs and, on a bootstrapping
 * leader, every initial member's peer URLs. */
static bool published(struct server *s)
{
    bool self = false;
    for (int m = 0; m < s->members_len; m++)
        if (s->members[m].id == s->o.member_id)
            self = strcmp(s->members[m].name, s->name) == 0 &&
                   s->members[m].client_urls_len == BATON_MIN(s->client_urls_len, SERVER_URLS_MAX);
    if (!self || s->leader != s->o.member_id || s->o.join)
        return self;
    for (int i = 0; i < s->o.initial_len; i++) {
        bool known = false;
        for (int m = 0; m < s->members_len; m++)
            known |= s->members[m].id == s->initial[i].id && s->members[m].peer_urls_len > 0;
        if (!known)
            return false;
    }
    return true;
}

/* After start, the member publishes its name and client URLs through the log (as etcd does),
 * and the first leader of a new cluster records the initial members' peer URLs. */
static void publish_self(struct server *s)
{
    if (s->leader == s->o.member_id && !s->o.join) {
        for (int i = 0; i < s->o.initial_len; i++) {
            const struct server_peer_info *p = &s->initial[i];
            bool known = false;
            for (int m = 0; m < s->members_len; m++)
                known |= s->members[m].id == p->id && s->members[m].peer_urls_len > 0;
            if (known)
                continue;
            struct request q = {.type = REQ_MEMBER_ATTR};
            q.u.member_attr.member_id = p->id;
            q.u.member_attr.name = (struct mvcc_bytes){(const uint8_t *)p->name, strlen(p->name)};
            q.u.member_attr.peer_urls[0] =
                (struct mvcc_bytes){(const uint8_t *)p->peer_url, strlen(p->peer_url)};
            q.u.member_attr.peer_urls_len = 1;
            buf_clear(&s->frame);
            if (request_encode(&q, &s->frame) == 0)
                raft_propose(s->raft, s->frame.data, s->frame.len, NULL);
        }
    }
    struct request q = {.type = REQ_MEMBER_ATTR};
    q.u.member_attr.member_id = s->o.member_id;
    q.u.member_attr.name = (struct mvcc_bytes){(const uint8_t *)s->name, strlen(s->name)};
    for (int i = 0; i < s->client_urls_len; i++)
        q.u.member_attr.client_urls[i] =
            (struct mvcc_bytes){(const uint8_t *)s->client_urls[i], strlen(s->client_urls[i])};
    q.u.member_attr.client_urls_len = (uint32_t)s->client_urls_len;
    /* A proposal can be lost (leader change, dropped forward): look again later. */
    s->publish_after_ms = now_ms(s) + 2ull * s->o.election_ticks * s->o.tick_ms;
    buf_clear(&s->frame);
    uint8_t kind = FRAME_FORWARD;
    if (buf_append(&s->frame, &kind, 1) != 0 || request_encode(&q, &s->frame) != 0)
        return;
    if (s->leader == s->o.member_id)
        raft_propose(s->raft, s->frame.data + 1, s->frame.len - 1, NULL);
    else
        send_frame(s, s->leader, false);
}

/* ---- Opening -----------------------------------------------------------------------------------
 */

struct restore_ctx {
    struct raft_entry *entries;
    size_t len, cap;
    struct arena *a;
};

static int collect_entry(void *ctx, const struct wal_entry *e)
{
    struct restore_ctx *r = ctx;
    if (r->len == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        struct raft_entry *n = realloc(r->entries, cap * sizeof(*n));
        if (!n)
            return BATON_ENOMEM;
        r->entries = n;
        r->cap = cap;
    }
    const uint8_t *data = e->len ? arena_dup(r->a, e->data, e->len) : NULL;
    if (e->len && !data)
        return BATON_ENOMEM;
    r->entries[r->len++] =
        (struct raft_entry){e->term, e->index, (uint8_t)e->type, (uint32_t)e->len, data};
    return 0;
}

/* Restores Raft from the WAL (the log and hard state) and LMDB (applied state). Entries at or
 * below LMDB's applied index are given to Raft too and skipped when re-applied. */
static int restore(struct server *s, char *err, size_t err_len)
{
    struct wal_state ws;
    wal_state_get(s->wal, &ws);
    s->applied = mvcc_applied_index(s->store);
    char probe[128];
    bool empty = ws.last_index == 0 && ws.hs.term == 0 && s->applied == 0 &&
                 wal_snap_latest(s->dir.snap, NULL, probe, sizeof(probe)) == BATON_ENOTFOUND;
    if (empty) {
        if (s->o.join)
            return 0; /* the leader will contact us */
        struct raft_config conf = {0};
        for (int i = 0; i < s->o.initial_len && i < RAFT_CONFIG_MAX; i++)
            conf.voters[conf.voters_len++] = s->initial[i].id;
        return raft_bootstrap(s->raft, &conf);
    }
    struct raft_snapshot_meta meta;
    int rc = snap_load_latest(s, &meta, err, err_len);
    if (rc)
        return rc;
    s->applied = mvcc_applied_index(s->store);
    uint64_t last = BATON_MAX(ws.last_index, meta.index);
    if (s->applied > last) {
        snprintf(err, err_len,
                 "%s: store applied index %llu is beyond the write-ahead log's last index %llu",
                 s->dir.member, (unsigned long long)s->applied, (unsigned long long)last);
        return BATON_ECORRUPT;
    }
    uint64_t lo = meta.index + 1;
    if (ws.last_index >= lo && ws.first_index > lo) {
        snprintf(err, err_len,
                 "%s: write-ahead log starts at %llu but the newest snapshot ends "
                 "at %llu",
                 s->dir.wal, (unsigned long long)ws.first_index, (unsigned long long)meta.index);
        return BATON_ECORRUPT;
    }
    struct arena a;
    arena_init(&a, 1 << 20);
    struct restore_ctx r = {.a = &a};
    rc = ws.last_index >= lo ? wal_read_entries(s->wal, lo, ws.last_index, collect_entry, &r) : 0;
    struct raft_hard_state hs = {ws.hs.term, ws.hs.vote, ws.hs.commit};
    /* Applied (and snapshotted) implies committed. */
    hs.commit = BATON_MAX(hs.commit, BATON_MAX(s->applied, meta.index));
    if (!rc)
        rc = raft_restore(s->raft, &hs, meta.index ? &meta : NULL, r.entries, r.len);
    if (rc && !err[0])
        snprintf(err, err_len, "%s: cannot restore the raft log: %s", s->dir.wal,
                 baton_strerror(rc));
    free(r.entries);
    arena_free(&a);
    return rc;
}

/* etcd's minimum lease TTL: one and a half election timeouts, rounded up to whole seconds, so
 * a lease cannot expire during the election that follows a leader's failure. */
int64_t server_min_lease_ttl_s(const struct server_options *o)
{
    uint64_t ms = (uint64_t)o->election_ticks * o->tick_ms * 3 / 2;
    return (int64_t)((ms + 999) / 1000);
}

static void copy_options(struct server *s, const struct server_options *o)
{
    s->o = *o;
    snprintf(s->name, sizeof(s->name), "%s", o->name ? o->name : "default");
    s->o.name = s->name;
    s->dir = *o->dir;
    s->o.dir = &s->dir;
    s->o.initial_len = BATON_MIN(o->initial_len, SERVER_PEERS_MAX);
    memcpy(s->initial, o->initial, sizeof(s->initial[0]) * (size_t)s->o.initial_len);
    s->o.initial = s->initial;
    s->client_urls_len = BATON_MIN(o->client_urls_len, 8);
    for (int i = 0; i < s->client_urls_len; i++)
        snprintf(s->client_urls[i], sizeof(s->client_urls[i]), "%s", o->client_urls[i]);
    s->o.client_urls = NULL;
    if (!s->o.request_timeout_ms)
        s->o.request_timeout_ms = 5000 + 2 * o->election_ticks * o->tick_ms;
}

void server_mvcc_config(const struct server *s, struct mvcc_config *mc)
{
    mvcc_config_default(mc);
    mc->path = s->dir.db;
    if (s->o.quota_bytes)
        mc->quota_bytes = s->o.quota_bytes;
    if (s->o.max_txn_ops)
        mc->max_txn_ops = s->o.max_txn_ops;
    mc->min_lease_ttl_s = server_min_lease_ttl_s(&s->o);
    mc->no_sync = s->store_no_sync;
    mc->log = s->o.log;
}

/* Before the store opens: whether it may commit without fsync, and whether it must be rebuilt
 * because an operating-system restart may have torn it (see server.h, datadir.c). */
static int store_prepare(struct server *s, char *err, size_t err_len)
{
    char boot[128];
    if (server_boot_id(boot, sizeof(boot)) != 0 || server_datadir_restored(&s->dir))
        return 0; /* no boot id to tell reboots by, or restored data: fsync every commit */
    bool trusted = true;
    int rc = server_db_marker_check(&s->dir, boot, &trusted, err, err_len);
    if (rc)
        return rc;
    if (!trusted) {
        log_write(s->o.log, LOG_WARN,
                  "member=%llx msg=\"the operating system restarted since the store's last "
                  "unsynced writes; rebuilding it from the newest snapshot and the write-ahead "
                  "log\" db=%s",
                  (unsigned long long)s->o.member_id, s->dir.db);
        char lock[PATH_MAX + 8];
        snprintf(lock, sizeof(lock), "%s-lock", s->dir.db);
        if ((unlink(s->dir.db) != 0 && errno != ENOENT) || (unlink(lock) != 0 && errno != ENOENT)) {
            rc = -errno;
            snprintf(err, err_len, "%s: cannot remove the untrusted store: %s", s->dir.db,
                     strerror(errno));
            return rc;
        }
    }
    rc = server_db_marker_set(&s->dir, boot, err, err_len);
    s->store_no_sync = rc == 0;
    return rc;
}

/* A starting member would wait a whole election timeout before its first campaign. As etcd
 * does, advance its election clock to one tick short of the timeout: the randomized part still
 * keeps candidates apart, and pre-vote keeps a running leader in place. A sole voter has nobody
 * to wait for and campaigns at once. */
static void fast_forward(struct server *s)
{
    struct raft_status st;
    raft_status(s->raft, &st);
    bool alone = st.config.voters_len == 1 && st.config.voters[0] == s->o.member_id &&
                 st.config.voters_old_len == 0;
    if (s->o.join && !alone)
        return;
    uint32_t ticks = alone ? 2 * s->o.election_ticks : s->o.election_ticks - 1;
    for (uint32_t i = 0; i < ticks && st.role != RAFT_LEADER; i++) {
        raft_tick(s->raft);
        raft_status(s->raft, &st);
    }
}

int server_open(const struct server_options *o, struct server **out, char *err, size_t err_len)
{
    err[0] = 0;
    struct server *s = calloc(1, sizeof(*s));
    if (!s)
        return BATON_ENOMEM;
    copy_options(s, o);
    dlist_init(&s->calls);
    dlist_init(&s->reads_next);
    dlist_init(&s->ops_next);
    dlist_init(&s->ops_wait);
    arena_init(&s->scratch, 64 * 1024);
    s->next_req_id = o->env.now_ms(o->env.ctx) << 8;
    prng_seed(&s->rng, o->seed ^ o->member_id);

    int rc = store_prepare(s, err, err_len);
    if (rc)
        goto fail;
    struct mvcc_config mc;
    server_mvcc_config(s, &mc);
    rc = mvcc_open(&mc, &s->store, err, err_len);
    if (rc)
        goto fail;
    struct wal_options wo = {
        .dir = s->dir.wal, .log = o->log, .notify = o->env.wake, .notify_ctx = o->env.ctx};
    rc = wal_open(&wo, &s->wal, err, err_len);
    if (rc)
        goto fail;
    struct raft_options ro = {0};
    raft_options_default(&ro);
    ro.id = o->member_id;
    ro.election_ticks = o->election_ticks;
    ro.heartbeat_ticks = o->heartbeat_ticks ? o->heartbeat_ticks : 1;
    ro.pre_vote = true;
    ro.check_quorum = true;
    ro.rng = &s->rng;
    ro.log = o->log;
    rc = raft_create(&ro, &s->raft);
    if (rc) {
        snprintf(err, err_len, "cannot create raft: %s", baton_strerror(rc));
        goto fail;
    }
    uint64_t conf_index;
    if (mvcc_applied_index(s->store) > 0 &&
        apply_restore_config(s, &s->applied_conf, &conf_index) != 0) {
        snprintf(err, err_len, "%s: no raft configuration recorded with the applied state",
                 s->dir.db);
        rc = BATON_ECORRUPT;
        goto fail;
    }
    rc = members_load(s);
    if (rc) {
        snprintf(err, err_len, "%s: member table is corrupt", s->dir.db);
        goto fail;
    }
    rc = restore(s, err, err_len);
    if (rc)
        goto fail;
    /* The transport learns every peer: from the flags, then from the member table. */
    for (int i = 0; i < s->o.initial_len; i++)
        if (s->initial[i].id != o->member_id)
            o->env.peer_set(o->env.ctx, s->initial[i].id, s->initial[i].peer_url, false);
    for (int i = 0; i < s->members_len; i++)
        if (s->members[i].id != o->member_id && s->members[i].peer_urls_len)
            o->env.peer_set(o->env.ctx, s->members[i].id, s->members[i].peer_urls[0], false);
    fast_forward(s);
    *out = s;
    server_process(s);
    return 0;
fail:
    if (!err[0])
        snprintf(err, err_len, "%s: %s", s->dir.root, baton_strerror(rc));
    server_close(s);
    return rc;
}

void server_close(struct server *s)
{
    if (!s)
        return;
    calls_fail_all(s, BATON_ECLOSED);
    snap_close(s);
    if (s->wal)
        wal_close(s->wal);
    if (s->store) {
        mvcc_close(s->store); /* syncs */
        if (s->store_no_sync && !s->failed)
            server_db_marker_clear(&s->dir);
    }
    if (s->raft)
        raft_destroy(s->raft);
    free(s->wal_entries);
    free(s->completions);
    buf_free(&s->frame);
    buf_free(&s->deferred);
    arena_free(&s->scratch);
    free(s);
}

/* ---- Inspection --------------------------------------------------------------------------------
 */

struct mvcc_store *server_store(struct server *s)
{
    return s->store;
}

const struct server_member *server_members(struct server *s, int *len)
{
    *len = s->members_len;
    return s->members;
}

bool server_member_is_learner(struct server *s, uint64_t id)
{
    struct raft_status st;
    raft_status(s->raft, &st);
    return raft_config_is_learner(&st.config, id);
}

bool server_member_in_config(struct server *s, uint64_t id)
{
    struct raft_status st;
    raft_status(s->raft, &st);
    return raft_config_is_voter(&st.config, id) || raft_config_is_learner(&st.config, id);
}

void server_header(struct server *s, struct server_header *h)
{
    h->cluster_id = s->o.cluster_id;
    h->member_id = s->o.member_id;
    h->term = s->term;
    h->revision = mvcc_rev(s->store);
}

void server_status(struct server *s, struct server_status *out)
{
    struct raft_status st;
    raft_status(s->raft, &st);
    memset(out, 0, sizeof(*out));
    out->member_id = s->o.member_id;
    out->cluster_id = s->o.cluster_id;
    out->leader = st.leader;
    out->term = st.term;
    out->commit = st.commit;
    out->applied = s->applied;
    out->raft_index = st.last_index;
    out->is_leader = st.role == RAFT_LEADER;
    out->is_learner = raft_config_is_learner(&st.config, s->o.member_id);
    out->revision = mvcc_rev(s->store);
    mvcc_db_size(s->store, &out->db_size_in_use, &out->db_size);
    out->leader_changes = s->leader_changes;
    out->proposals_failed = s->proposals_failed;
    out->proposals_pending = s->proposals_pending;
    out->leases = mvcc_lease_count(s->store);
}
