/*
 * raft: the consensus state machine. Elections with pre-vote and check-quorum (Raft paper §5.2,
 * thesis §9.6, §6.2), log replication with pipelining and flow control (§5.3, thesis §10.2),
 * commitment by counting current-term replicas (§5.4.2, Figure 8), snapshots sent in chunks
 * (§7, thesis §5), ReadIndex (thesis §6.4), leadership transfer (thesis §3.10) and membership
 * changes, single-server and joint (thesis §4). The public contract is in raft.h; the
 * in-memory log is in log.c, the wire format in codec.c.
 *
 * Everything here is driven by the caller: no I/O, no clock, no threads, no globals. Outputs go
 * to queues that raft_ready() hands out; messages that must wait for durable state wait in a
 * separate queue tagged with the persist batch they depend on.
 */
#include "raft/raft_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define READS_MAX         4096
#define READY_ENTRIES_MAX 65536 /* committed entries handed out per ready */
/* Bounds on the message queues. Raft tolerates message loss, so past a bound a message is
 * dropped (and logged), like a network loss; a correct caller that takes readies never gets
 * near them. */
#define OUTBOX_MAX  (1u << 20)
#define WAITBOX_MAX (1u << 16)

#define RLOG(r, level, fmt, ...)                                                                   \
    log_write((r)->o.log, level, "mod=raft id=%" PRIu64 " term=%" PRIu64 " " fmt, (r)->id,         \
              (r)->term, ##__VA_ARGS__)

enum vote_state { VOTE_NONE = 0, VOTE_GRANTED = 1, VOTE_REJECTED = 2 };
enum quorum_result { QUORUM_PENDING = 0, QUORUM_WON = 1, QUORUM_LOST = 2 };

/* Replication progress of one member, as the leader sees it (thesis §10.2, etcd's Progress). */
struct progress {
    uint64_t id;
    uint64_t match;
    uint64_t next;
    uint8_t state; /* enum raft_progress_state */
    uint8_t vote;  /* enum vote_state, during an election */
    bool probe_sent;
    bool recent_active;
    uint64_t read_acked;  /* highest ReadIndex round this member confirmed */
    uint64_t commit_sent; /* highest commit index sent in an append */
    /* In-flight appends (replicate state): a ring of (last index, bytes). */
    uint32_t inf_start;
    uint32_t inf_count;
    uint64_t inf_bytes;
    uint64_t *inf_last;
    uint32_t *inf_size;
    /* Snapshot transfer (snapshot state). */
    uint64_t snap_index;
    uint64_t snap_term;
    uint64_t snap_acked; /* bytes the follower confirmed */
    uint64_t snap_next;  /* next offset to read and send */
    uint32_t snap_idle;
    bool snap_read_pending;
    bool snap_last_sent;
};

struct outmsg {
    struct raft_msg m;
    void *owned; /* chunk data and config copied for this message; freed at advance */
};

struct waitmsg {
    struct raft_msg m;
    uint64_t seq; /* released once persist batch seq is durable */
};

struct pending_read {
    uint64_t context;
    uint64_t from; /* this member, or the follower that forwarded the request */
    uint64_t index;
    uint64_t round; /* 0: not yet assigned to a heartbeat round */
};

struct raft {
    struct raft_options o;
    uint64_t id;
    enum raft_role role;
    uint64_t term;
    uint64_t vote;
    uint64_t leader;
    uint64_t commit;
    uint64_t applied;
    struct raft_log log;

    struct raft_config config; /* committed configuration in effect */
    uint64_t config_index;
    uint64_t pending_conf_index;    /* leader: index of the last configuration entry proposed */
    struct raft_snapshot_meta snap; /* latest snapshot (compaction point) */

    uint32_t election_elapsed;
    uint32_t heartbeat_elapsed;
    uint32_t randomized_timeout;
    bool leader_dead; /* raft_peer_down() reported the current leader dead */
    uint64_t transferee;
    uint32_t transfer_elapsed;
    uint64_t uncommitted_bytes;
    bool committed_own_term;
    bool flush_pending;      /* leader: send appends to everyone at the next ready */
    bool commit_changed;     /* leader: followers need the new commit index */
    bool read_start_pending; /* leader: start a ReadIndex round at the next ready */

    struct progress peers[RAFT_PEERS_MAX];
    uint32_t peers_len;

    /* Persistence (see raft.h). */
    uint64_t stable_index;  /* log entries up to here are durable */
    uint64_t unstable_from; /* first entry not yet handed out in a persist batch */
    struct raft_hard_state hs_handed;
    uint64_t seq_handed;
    uint64_t seq_done;
    struct raft_persist pb;
    uint64_t pb_last;
    struct raft_entry *pb_ents;
    size_t pb_ents_cap;
    struct raft_snapshot_meta pb_snap;
    struct raft_snap_chunk pb_chunk;
    struct buf pb_chunk_buf;

    /* Snapshot reception (follower). */
    uint64_t rx_index;
    uint64_t rx_term;
    uint64_t rx_offset;
    bool chunk_pending;
    struct raft_snap_chunk chunk;
    struct buf chunk_buf;
    bool install_pending;
    struct raft_snapshot_meta install_meta;
    uint8_t snap_apply; /* 0 none, 1 waiting for batch snap_apply_seq, 2 to hand out */
    uint64_t snap_apply_seq;
    struct raft_snapshot_meta snap_apply_meta;

    /* Output queues. */
    struct outmsg *out;
    size_t out_len, out_cap;
    struct waitmsg *wait;
    size_t wait_len, wait_cap;
    struct raft_read_state *rs;
    size_t rs_len, rs_cap;
    struct raft_snap_read *sr;
    size_t sr_len, sr_cap;

    /* The outstanding ready. */
    bool rd_outstanding;
    struct raft_msg *rd_msgs;
    size_t rd_msgs_cap;
    void **rd_owned;
    size_t rd_owned_len, rd_owned_cap;
    struct raft_entry *rd_ents;
    size_t rd_ents_cap;
    struct raft_read_state *rd_rs;
    size_t rd_rs_cap;
    struct raft_snap_read *rd_sr;
    size_t rd_sr_cap;
    uint64_t rd_applied_to;
    bool rd_snap_applied;

    /* ReadIndex (leader). */
    struct pending_read *reads;
    size_t reads_len;
    uint64_t read_round;
    uint64_t read_round_done;

    struct buf scratch;
};

/* Grows *arr (of elem bytes) to hold at least n elements. */
static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < n)
        c *= 2;
    void *p = realloc(*arr, c * elem);
    if (!p)
        return BATON_ENOMEM;
    *arr = p;
    *cap = c;
    return 0;
}
#define GROW(arr, cap, n) grow((void **)&(arr), &(cap), (n), sizeof(*(arr)))

static uint64_t last_index(const struct raft *r)
{
    return raft_log_last(&r->log);
}

static uint64_t last_term(const struct raft *r)
{
    return raft_log_last_term(&r->log);
}

/* ---- Members and progress -------------------------------------------------------------------- */

static struct progress *peer_find(struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->peers_len; i++)
        if (r->peers[i].id == id)
            return &r->peers[i];
    return NULL;
}

static bool is_voter(const struct raft *r, uint64_t id)
{
    return raft_config_is_voter(&r->config, id);
}

/* A member may campaign only if it votes in the configuration in effect. */
static bool promotable(const struct raft *r)
{
    return is_voter(r, r->id) && r->snap_apply == 0;
}

static void inflight_reset(struct progress *pr)
{
    pr->inf_start = pr->inf_count = 0;
    pr->inf_bytes = 0;
}

static bool inflight_full(const struct raft *r, const struct progress *pr)
{
    return pr->inf_count >= r->o.max_inflight_msgs || pr->inf_bytes >= r->o.max_inflight_bytes;
}

static void inflight_add(struct raft *r, struct progress *pr, uint64_t last, uint32_t bytes)
{
    BATON_ASSERT(pr->inf_count < r->o.max_inflight_msgs);
    uint32_t slot = (pr->inf_start + pr->inf_count) % r->o.max_inflight_msgs;
    pr->inf_last[slot] = last;
    pr->inf_size[slot] = bytes;
    pr->inf_count++;
    pr->inf_bytes += bytes;
}

/* Frees every in-flight append whose last index is <= index. */
static void inflight_free_to(struct raft *r, struct progress *pr, uint64_t index)
{
    while (pr->inf_count > 0 && pr->inf_last[pr->inf_start] <= index) {
        pr->inf_bytes -= pr->inf_size[pr->inf_start];
        pr->inf_start = (pr->inf_start + 1) % r->o.max_inflight_msgs;
        pr->inf_count--;
    }
}

static void inflight_free_first(struct raft *r, struct progress *pr)
{
    if (pr->inf_count > 0)
        inflight_free_to(r, pr, pr->inf_last[pr->inf_start]);
}

static void progress_reset(struct raft *r, struct progress *pr, uint64_t id)
{
    pr->id = id;
    pr->match = 0;
    pr->next = last_index(r) + 1;
    pr->state = RAFT_PROGRESS_PROBE;
    pr->vote = VOTE_NONE;
    pr->probe_sent = false;
    pr->recent_active = true;
    pr->read_acked = 0;
    pr->commit_sent = 0;
    pr->snap_read_pending = false;
    inflight_reset(pr);
}

static void become_probe(struct progress *pr)
{
    pr->state = RAFT_PROGRESS_PROBE;
    pr->probe_sent = false;
    pr->next = pr->match + 1;
    pr->snap_read_pending = false;
    pr->inf_start = pr->inf_count = 0;
    pr->inf_bytes = 0;
}

static void become_replicate(struct progress *pr)
{
    pr->state = RAFT_PROGRESS_REPLICATE;
    pr->probe_sent = false;
    pr->next = pr->match + 1;
    pr->inf_start = pr->inf_count = 0;
    pr->inf_bytes = 0;
}

static bool progress_paused(const struct raft *r, const struct progress *pr)
{
    switch (pr->state) {
    case RAFT_PROGRESS_PROBE:
        return pr->probe_sent;
    case RAFT_PROGRESS_REPLICATE:
        return inflight_full(r, pr);
    default:
        return true;
    }
}

/* Collects the distinct members of the configuration in effect. */
static uint32_t config_members(const struct raft_config *c, uint64_t *ids)
{
    uint32_t n = 0;
    const uint64_t *lists[] = {c->voters, c->voters_old, c->learners};
    uint32_t lens[] = {c->voters_len, c->voters_old_len, c->learners_len};
    for (int l = 0; l < 3; l++) {
        for (uint32_t i = 0; i < lens[l]; i++) {
            bool dup = false;
            for (uint32_t j = 0; j < n; j++)
                dup |= ids[j] == lists[l][i];
            if (!dup)
                ids[n++] = lists[l][i];
        }
    }
    BATON_ASSERT(n <= RAFT_PEERS_MAX);
    return n;
}

static bool peer_in(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

/* Rebuilds the progress table for the configuration in effect, keeping the progress of members
 * that stay. Slots (with their in-flight arrays) are permuted, never allocated. */
static void peers_rebuild(struct raft *r)
{
    uint64_t ids[RAFT_PEERS_MAX];
    uint32_t n = config_members(&r->config, ids);
    struct progress old[RAFT_PEERS_MAX];
    bool taken[RAFT_PEERS_MAX] = {false};
    memcpy(old, r->peers, sizeof(old));
    uint32_t out = 0;
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t j = 0; j < r->peers_len; j++) {
            if (old[j].id == ids[i] && !taken[j]) {
                taken[j] = true;
                r->peers[out++] = old[j];
                goto next;
            }
        }
        for (uint32_t j = 0; j < RAFT_PEERS_MAX; j++) {
            if (taken[j] || (j < r->peers_len && peer_in(ids, n, old[j].id)))
                continue;
            taken[j] = true;
            r->peers[out] = old[j];
            progress_reset(r, &r->peers[out], ids[i]);
            if (ids[i] == r->id)
                r->peers[out].match = r->stable_index;
            out++;
            break;
        }
    next:;
    }
    BATON_ASSERT(out == n);
    /* Keep the unused slots (and their arrays) after the live ones. */
    for (uint32_t j = 0; j < RAFT_PEERS_MAX; j++)
        if (!taken[j])
            r->peers[out++] = old[j];
    BATON_ASSERT(out == RAFT_PEERS_MAX);
    r->peers_len = n;
}

/* ---- Quorums (thesis §4.3: in a joint configuration both majorities must agree) ---------------
 */

enum quorum_field { Q_MATCH, Q_READ };

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static uint64_t field_of(const struct raft *r, uint64_t id, enum quorum_field f)
{
    struct progress *pr = peer_find((struct raft *)r, id);
    if (!pr)
        return 0;
    if (f == Q_MATCH)
        return pr->match;
    return id == r->id ? r->read_round : pr->read_acked;
}

/* The largest value that a majority of ids has reached. An empty set agrees to anything. */
static uint64_t majority_value(const struct raft *r, const uint64_t *ids, uint32_t n,
                               enum quorum_field f)
{
    if (n == 0)
        return UINT64_MAX;
    uint64_t v[RAFT_CONFIG_MAX];
    for (uint32_t i = 0; i < n; i++)
        v[i] = field_of(r, ids[i], f);
    qsort(v, n, sizeof(v[0]), cmp_desc);
    return v[n / 2];
}

static uint64_t quorum_value(const struct raft *r, enum quorum_field f)
{
    const struct raft_config *c = &r->config;
    uint64_t a = majority_value(r, c->voters, c->voters_len, f);
    uint64_t b = majority_value(r, c->voters_old, c->voters_old_len, f);
    return BATON_MIN(a, b);
}

static enum quorum_result vote_result_of(const struct raft *r, const uint64_t *ids, uint32_t n)
{
    if (n == 0)
        return QUORUM_WON;
    uint32_t yes = 0, no = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct progress *pr = peer_find((struct raft *)r, ids[i]);
        if (pr && pr->vote == VOTE_GRANTED)
            yes++;
        else if (pr && pr->vote == VOTE_REJECTED)
            no++;
    }
    uint32_t q = n / 2 + 1;
    if (yes >= q)
        return QUORUM_WON;
    if (n - no < q)
        return QUORUM_LOST;
    return QUORUM_PENDING;
}

static enum quorum_result vote_result(const struct raft *r)
{
    enum quorum_result a = vote_result_of(r, r->config.voters, r->config.voters_len);
    enum quorum_result b = vote_result_of(r, r->config.voters_old, r->config.voters_old_len);
    if (a == QUORUM_LOST || b == QUORUM_LOST)
        return QUORUM_LOST;
    if (a == QUORUM_WON && b == QUORUM_WON)
        return QUORUM_WON;
    return QUORUM_PENDING;
}

/* Check-quorum (thesis §6.2): did a quorum talk to the leader during the last timeout? */
static bool quorum_active_of(const struct raft *r, const uint64_t *ids, uint32_t n)
{
    if (n == 0)
        return true;
    uint32_t yes = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct progress *pr = peer_find((struct raft *)r, ids[i]);
        if (ids[i] == r->id || (pr && pr->recent_active))
            yes++;
    }
    return yes >= n / 2 + 1;
}

static bool quorum_active(const struct raft *r)
{
    return quorum_active_of(r, r->config.voters, r->config.voters_len) &&
           quorum_active_of(r, r->config.voters_old, r->config.voters_old_len);
}

/* ---- Output queues --------------------------------------------------------------------------- */

/* Messages are small and bounded by the inputs that cause them; a failed allocation drops the
 * message, which Raft tolerates like any network loss. */
static void send_owned(struct raft *r, const struct raft_msg *m, void *owned)
{
    if (r->out_len >= OUTBOX_MAX || GROW(r->out, r->out_cap, r->out_len + 1)) {
        RLOG(r, LOG_ERROR, "msg=\"queue full or out of memory, message dropped\" type=%s",
             raft_msg_type_name(m->type));
        free(owned);
        return;
    }
    struct outmsg *o = &r->out[r->out_len++];
    o->m = *m;
    o->m.from = r->id;
    o->owned = owned;
}

static void send(struct raft *r, struct raft_msg *m)
{
    m->from = r->id;
    if (m->term == 0)
        m->term = r->term;
    send_owned(r, m, NULL);
}

/* Is there state that the next persist batch will carry (that the caller has not been handed)? */
static bool persist_dirty(const struct raft *r)
{
    return r->unstable_from <= last_index(r) || r->term != r->hs_handed.term ||
           r->vote != r->hs_handed.vote || r->chunk_pending || r->install_pending;
}

static void step_local(struct raft *r, const struct raft_msg *m);

/* Sends m once everything raft holds now is durable: vote grants, append acknowledgements, a
 * candidate's requests and its own vote (Raft §5.1 "respond after persisting"; thesis §10.2.1).
 * A message to this member itself is stepped locally on release. */
static void send_after_persist(struct raft *r, struct raft_msg *m)
{
    m->from = r->id;
    if (m->term == 0)
        m->term = r->term;
    uint64_t seq = persist_dirty(r) ? r->seq_handed + 1 : r->seq_handed;
    if (seq <= r->seq_done) {
        if (m->to == r->id)
            step_local(r, m);
        else
            send_owned(r, m, NULL);
        return;
    }
    if (r->wait_len >= WAITBOX_MAX || GROW(r->wait, r->wait_cap, r->wait_len + 1)) {
        RLOG(r, LOG_ERROR, "msg=\"queue full or out of memory, message dropped\" type=%s",
             raft_msg_type_name(m->type));
        return;
    }
    r->wait[r->wait_len++] = (struct waitmsg){.m = *m, .seq = seq};
}

/* Drops the leader's unsent traffic when it stops leading: appends, heartbeats, snapshot chunks
 * and TimeoutNow carry the old role's view. */
static void purge_leader_output(struct raft *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->out_len; i++) {
        uint8_t t = r->out[i].m.type;
        if (t == RAFT_MSG_APPEND || t == RAFT_MSG_HEARTBEAT || t == RAFT_MSG_SNAPSHOT ||
            t == RAFT_MSG_TIMEOUT_NOW || t == RAFT_MSG_READ_INDEX_RESP) {
            free(r->out[i].owned);
            continue;
        }
        r->out[n++] = r->out[i];
    }
    r->out_len = n;
    r->sr_len = 0;
}

static void push_read_state(struct raft *r, uint64_t context, uint64_t index)
{
    if (r->rs_len >= READS_MAX || GROW(r->rs, r->rs_cap, r->rs_len + 1)) {
        RLOG(r, LOG_ERROR, "msg=\"queue full or out of memory, read state dropped\"");
        return;
    }
    r->rs[r->rs_len++] = (struct raft_read_state){.context = context, .index = index};
}

/* ---- Roles (Raft §5.2) ----------------------------------------------------------------------- */

static void reset_election_timer(struct raft *r)
{
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    /* Randomized in [T, 2T) so that split votes are rare (§5.2). */
    r->randomized_timeout =
        r->o.election_ticks + (uint32_t)prng_below(r->o.rng, r->o.election_ticks);
}

static void reset_term(struct raft *r, uint64_t term)
{
    if (term != r->term) {
        BATON_ASSERT(term > r->term);
        r->term = term;
        r->vote = RAFT_NONE;
    }
    r->leader = RAFT_NONE;
    r->leader_dead = false;
    r->transferee = RAFT_NONE;
    r->transfer_elapsed = 0;
    for (uint32_t i = 0; i < r->peers_len; i++)
        r->peers[i].vote = VOTE_NONE;
    reset_election_timer(r);
}

static void become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
    bool was_leader = r->role == RAFT_LEADER;
    bool changed = r->role != RAFT_FOLLOWER || term != r->term || leader != r->leader;
    reset_term(r, term);
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
    if (was_leader) {
        purge_leader_output(r);
        r->reads_len = 0;
        r->read_start_pending = false;
        r->flush_pending = r->commit_changed = false;
        r->uncommitted_bytes = 0;
    }
    if (changed)
        RLOG(r, LOG_INFO, "msg=\"became follower\" leader=%" PRIu64, leader);
}

static void send_vote_requests(struct raft *r, bool pre, bool transfer)
{
    uint64_t ids[RAFT_PEERS_MAX];
    uint32_t n = config_members(&r->config, ids);
    for (uint32_t i = 0; i < n; i++) {
        if (ids[i] == r->id || !is_voter(r, ids[i]))
            continue;
        struct raft_msg m = {
            .type = pre ? RAFT_MSG_PREVOTE : RAFT_MSG_VOTE,
            .to = ids[i],
            .term = pre ? r->term + 1 : r->term,
            .index = last_index(r),
            .log_term = last_term(r),
            .transfer = transfer,
        };
        /* A pre-vote changes no durable state, so it leaves at once; a real vote request
         * waits until the new term and the self-vote are durable (§5.1). */
        if (pre)
            send(r, &m);
        else
            send_after_persist(r, &m);
    }
}

static void become_leader(struct raft *r);
static void become_candidate(struct raft *r, bool transfer);

static void tally(struct raft *r)
{
    switch (vote_result(r)) {
    case QUORUM_WON:
        if (r->role == RAFT_PRE_CANDIDATE)
            become_candidate(r, false);
        else
            become_leader(r);
        break;
    case QUORUM_LOST:
        become_follower(r, r->term, RAFT_NONE);
        break;
    case QUORUM_PENDING:
        break;
    }
}

/* Pre-vote (thesis §9.6): ask whether we could win in term+1 before disturbing anyone. */
static void become_pre_candidate(struct raft *r)
{
    BATON_ASSERT(r->role != RAFT_LEADER);
    uint64_t term = r->term;
    reset_term(r, term);
    r->role = RAFT_PRE_CANDIDATE;
    RLOG(r, LOG_INFO, "msg=\"starting pre-vote\" last_index=%" PRIu64 " last_term=%" PRIu64,
         last_index(r), last_term(r));
    peer_find(r, r->id)->vote = VOTE_GRANTED;
    send_vote_requests(r, true, false);
    tally(r);
}

static void become_candidate(struct raft *r, bool transfer)
{
    BATON_ASSERT(r->role != RAFT_LEADER);
    reset_term(r, r->term + 1);
    r->role = RAFT_CANDIDATE;
    r->vote = r->id;
    RLOG(r, LOG_INFO, "msg=\"starting election\" last_index=%" PRIu64 " last_term=%" PRIu64,
         last_index(r), last_term(r));
    /* Our own vote counts only once the term and vote are durable: otherwise a crash could let
     * us vote again in this term for someone else. */
    struct raft_msg self = {.type = RAFT_MSG_VOTE_RESP, .to = r->id};
    send_after_persist(r, &self);
    send_vote_requests(r, false, transfer);
}

static void campaign(struct raft *r, bool transfer)
{
    if (!promotable(r))
        return;
    if (r->o.pre_vote && !transfer)
        become_pre_candidate(r);
    else
        become_candidate(r, transfer);
}

static int append_entry(struct raft *r, uint8_t type, const void *data, size_t len,
                        uint64_t *index_out);

static void become_leader(struct raft *r)
{
    BATON_ASSERT(r->role == RAFT_CANDIDATE);
    r->role = RAFT_LEADER;
    r->leader = r->id;
    r->transferee = RAFT_NONE;
    reset_election_timer(r);
    for (uint32_t i = 0; i < r->peers_len; i++) {
        struct progress *pr = &r->peers[i];
        progress_reset(r, pr, pr->id);
        if (pr->id == r->id) {
            pr->match = r->stable_index;
            become_replicate(pr);
        }
    }
    r->pending_conf_index = last_index(r);
    r->committed_own_term = false;
    r->reads_len = 0;
    r->read_start_pending = false;
    r->read_round = r->read_round_done = 0;
    r->uncommitted_bytes = 0;
    RLOG(r, LOG_INFO, "msg=\"became leader\" last_index=%" PRIu64, last_index(r));
    /* The no-op at the start of the term lets the leader commit (and learn the commit index
     * of) everything before it (thesis §6.4, §5.4.2). */
    int rc = append_entry(r, RAFT_ENTRY_NOOP, NULL, 0, NULL);
    if (rc)
        RLOG(r, LOG_ERROR, "msg=\"cannot append no-op\" err=\"%s\"", baton_strerror(rc));
    r->flush_pending = true;
}

/* ---- Log changes ----------------------------------------------------------------------------- */

/* Appends an entry of the current term to the leader's log. The leader's own write proceeds in
 * parallel with replication (thesis §10.2.1): the entry goes out in the next persist batch and
 * in the next appends alike. */
static int append_entry(struct raft *r, uint8_t type, const void *data, size_t len,
                        uint64_t *index_out)
{
    int rc = raft_log_append(&r->log, r->term, type, data, len);
    if (rc)
        return rc;
    uint64_t index = last_index(r);
    r->uncommitted_bytes += len;
    struct progress *self = peer_find(r, r->id);
    if (self)
        self->next = index + 1;
    r->flush_pending = true;
    if (index_out)
        *index_out = index;
    return 0;
}

/* Acknowledgements still waiting for durability that claim entries after index are dropped when
 * those entries leave the log (truncation, snapshot install): once released they would claim
 * entries the disk will never hold. */
static void drop_waiting_acks_after(struct raft *r, uint64_t index)
{
    size_t n = 0;
    for (size_t i = 0; i < r->wait_len; i++) {
        const struct raft_msg *m = &r->wait[i].m;
        if (m->type == RAFT_MSG_APPEND_RESP && !m->reject && m->index > index)
            continue;
        r->wait[n++] = r->wait[i];
    }
    r->wait_len = n;
}

/* Drops entries after index (a follower resolving a conflict, §5.3). Durable and in-flight
 * bookkeeping shrink with it; the next persist batch tells the caller to drop them too. */
static void truncate_after(struct raft *r, uint64_t index)
{
    BATON_ASSERT(index >= r->commit);
    RLOG(r, LOG_INFO, "msg=\"truncating log\" after=%" PRIu64 " last_index=%" PRIu64, index,
         last_index(r));
    raft_log_truncate_after(&r->log, index);
    drop_waiting_acks_after(r, index);
    if (r->unstable_from > index + 1)
        r->unstable_from = index + 1;
    if (r->stable_index > index)
        r->stable_index = index;
    if (r->pb_last > index)
        r->pb_last = index;
}

static void apply_config(struct raft *r, const struct raft_config *c, uint64_t index)
{
    r->config = *c;
    r->config_index = index;
    peers_rebuild(r);
    RLOG(r, LOG_INFO,
         "msg=\"configuration in effect\" index=%" PRIu64 " voters=%u voters_old=%u learners=%u",
         index, c->voters_len, c->voters_old_len, c->learners_len);
}

/* Advances the commit index. Configuration entries take effect here (see raft.h). */
static void commit_to(struct raft *r, uint64_t index)
{
    if (index <= r->commit)
        return;
    BATON_ASSERT(index <= last_index(r));
    uint64_t from = BATON_MAX(r->commit + 1, raft_log_first(&r->log));
    r->commit = index;
    for (uint64_t i = from; i <= index; i++) {
        const struct raft_entry *e = raft_log_get(&r->log, i);
        if (r->role == RAFT_LEADER) {
            r->uncommitted_bytes -= BATON_MIN(r->uncommitted_bytes, e->len);
            if (e->term == r->term)
                r->committed_own_term = true;
        }
        if (e->type == RAFT_ENTRY_CONFIG) {
            struct raft_config c;
            int rc = raft_config_decode(e->data, e->len, &c);
            BATON_ASSERT(rc == 0); /* validated when it entered the log */
            apply_config(r, &c, i);
        }
    }
}

/* ---- Replication (leader, §5.3, thesis §10.2) ------------------------------------------------ */

static void pump_snapshot(struct raft *r, struct progress *pr);

static void become_snapshot(struct raft *r, struct progress *pr)
{
    pr->state = RAFT_PROGRESS_SNAPSHOT;
    inflight_reset(pr);
    pr->snap_index = r->snap.index;
    pr->snap_term = r->snap.term;
    pr->snap_acked = pr->snap_next = 0;
    pr->snap_idle = 0;
    pr->snap_read_pending = pr->snap_last_sent = false;
    RLOG(r, LOG_INFO, "msg=\"sending snapshot\" to=%" PRIu64 " index=%" PRIu64, pr->id,
         pr->snap_index);
    pump_snapshot(r, pr);
}

/* Sends the next append to pr if its flow control allows. Entries are batched up to
 * max_msg_bytes (at least one entry, so any entry fits). Returns true when a message left. */
static bool send_append(struct raft *r, struct progress *pr, bool allow_empty)
{
    if (pr->id == r->id || progress_paused(r, pr))
        return false;
    uint64_t prev = pr->next - 1, prev_term;
    if (!raft_log_term(&r->log, prev, &prev_term)) {
        /* The entries the follower needs were compacted: send the snapshot (§7). */
        become_snapshot(r, pr);
        return false;
    }
    uint64_t last = last_index(r), bytes = 0;
    uint32_t n = 0;
    for (uint64_t i = pr->next; i <= last && n < RAFT_MSG_ENTRIES_MAX; i++) {
        uint32_t len = raft_log_get(&r->log, i)->len;
        if (n > 0 && bytes + len > r->o.max_msg_bytes)
            break;
        bytes += len;
        n++;
    }
    if (n == 0 && !allow_empty)
        return false;
    struct raft_msg m = {
        .type = RAFT_MSG_APPEND,
        .to = pr->id,
        .index = prev,
        .log_term = prev_term,
        .commit = r->commit,
        .entries_len = n,
    };
    send(r, &m);
    pr->commit_sent = r->commit;
    if (pr->state == RAFT_PROGRESS_REPLICATE && n > 0) {
        /* Optimistic pipelining: assume delivery, move next on (thesis §10.2.2). */
        pr->next = prev + n + 1;
        inflight_add(r, pr, prev + n, (uint32_t)BATON_MIN(bytes, UINT32_MAX));
    } else if (pr->state == RAFT_PROGRESS_PROBE) {
        pr->probe_sent = true;
    }
    return true;
}

static void send_heartbeat(struct raft *r, struct progress *pr)
{
    struct raft_msg m = {
        .type = RAFT_MSG_HEARTBEAT,
        .to = pr->id,
        /* Never tell a follower to commit beyond what it is known to hold. */
        .commit = BATON_MIN(pr->match, r->commit),
        .context = r->read_round,
    };
    send(r, &m);
}

static void bcast_heartbeat(struct raft *r)
{
    for (uint32_t i = 0; i < r->peers_len; i++)
        if (r->peers[i].id != r->id)
            send_heartbeat(r, &r->peers[i]);
}

static void start_read_round(struct raft *r);
static void check_reads(struct raft *r);

/* The leader's batching point, run when a ready is taken: one append per follower carries
 * everything proposed since the last ready (up to the flow-control window). */
static void leader_flush(struct raft *r)
{
    if (r->role != RAFT_LEADER)
        return;
    if (r->read_start_pending) {
        r->read_start_pending = false;
        start_read_round(r);
        check_reads(r); /* a single voter confirms its own round at once */
    }
    if (!(r->flush_pending || r->commit_changed))
        return;
    for (uint32_t i = 0; i < r->peers_len; i++) {
        struct progress *pr = &r->peers[i];
        bool sent = false;
        for (int k = 0; k < 64 && send_append(r, pr, false); k++)
            sent = true;
        if (!sent && pr->commit_sent < r->commit)
            send_append(r, pr, true);
    }
    r->flush_pending = r->commit_changed = false;
}

static void abort_transfer(struct raft *r, const char *why)
{
    if (r->transferee == RAFT_NONE)
        return;
    RLOG(r, LOG_INFO, "msg=\"leadership transfer abandoned\" to=%" PRIu64 " why=%s", r->transferee,
         why);
    r->transferee = RAFT_NONE;
    r->transfer_elapsed = 0;
}

static void send_timeout_now(struct raft *r, uint64_t to)
{
    struct raft_msg m = {.type = RAFT_MSG_TIMEOUT_NOW, .to = to};
    send(r, &m);
    RLOG(r, LOG_INFO, "msg=\"sent timeout-now\" to=%" PRIu64, to);
}

static void check_reads(struct raft *r);
static int propose_leave_joint(struct raft *r);

/* After the commit index or the configuration moved on the leader. */
static void leader_after_commit(struct raft *r)
{
    if (r->role != RAFT_LEADER)
        return;
    r->commit_changed = true;
    /* A leader that is no longer part of the configuration steps down once the change is
     * committed (thesis §4.2.2). */
    if (!is_voter(r, r->id) && !raft_config_is_learner(&r->config, r->id)) {
        RLOG(r, LOG_INFO, "msg=\"removed from the configuration, stepping down\"");
        become_follower(r, r->term, RAFT_NONE);
        return;
    }
    if (r->transferee != RAFT_NONE && !is_voter(r, r->transferee))
        abort_transfer(r, "target-removed");
    if (r->config.voters_old_len > 0 && r->config.auto_leave && r->committed_own_term &&
        r->pending_conf_index <= r->commit) {
        int rc = propose_leave_joint(r);
        if (rc)
            RLOG(r, LOG_WARN, "msg=\"cannot leave joint configuration\" err=\"%s\"",
                 baton_strerror(rc));
    }
    check_reads(r);
}

/* Commits what a quorum holds, but only by counting replicas of an entry of the current term
 * (§5.4.2, Figure 8); earlier entries commit with it. */
static bool maybe_commit(struct raft *r)
{
    bool any = false;
    for (int k = 0; k < 8; k++) {
        uint64_t q = quorum_value(r, Q_MATCH), t;
        if (q == UINT64_MAX || q <= r->commit)
            break;
        if (!raft_log_term(&r->log, q, &t) || t != r->term)
            break;
        commit_to(r, q);
        any = true;
        leader_after_commit(r);
        if (r->role != RAFT_LEADER)
            break;
    }
    return any;
}

/* Thesis §5.3 fast backtracking: the largest index <= index whose term is <= term. */
static uint64_t find_conflict_by_term(const struct raft *r, uint64_t index, uint64_t term)
{
    uint64_t li = last_index(r);
    if (index > li)
        index = li;
    for (;;) {
        uint64_t t;
        if (!raft_log_term(&r->log, index, &t) || t <= term)
            return index;
        index--;
    }
}

static void handle_append_resp(struct raft *r, const struct raft_msg *m, struct progress *pr)
{
    if (m->reject) {
        if (pr->state == RAFT_PROGRESS_REPLICATE) {
            if (m->index <= pr->match)
                return; /* stale */
            become_probe(pr);
        } else if (pr->state == RAFT_PROGRESS_PROBE) {
            if (m->index != pr->next - 1)
                return; /* stale */
            /* The follower's hint (index, term) points at the last place our logs can agree;
             * find our own last entry at or before it with a term no newer (thesis §5.3). */
            uint64_t hint = m->hint_term > 0 ? find_conflict_by_term(r, m->hint_index, m->hint_term)
                                             : BATON_MIN(m->hint_index, m->index);
            pr->next = BATON_MAX(BATON_MIN(m->index, hint + 1), pr->match + 1);
            pr->probe_sent = false;
        } else {
            return;
        }
        RLOG(r, LOG_DEBUG, "msg=\"append rejected\" from=%" PRIu64 " next=%" PRIu64, pr->id,
             pr->next);
        send_append(r, pr, true);
        return;
    }
    if (m->index > last_index(r))
        return; /* impossible for a correct follower of this term: ignore */
    bool progressed = m->index > pr->match;
    if (progressed) {
        pr->match = m->index;
        if (pr->next <= m->index)
            pr->next = m->index + 1;
    }
    pr->probe_sent = false;
    switch (pr->state) {
    case RAFT_PROGRESS_PROBE:
        become_replicate(pr);
        break;
    case RAFT_PROGRESS_SNAPSHOT:
        if (pr->match >= pr->snap_index)
            become_probe(pr);
        break;
    default:
        inflight_free_to(r, pr, m->index);
        break;
    }
    if (progressed)
        maybe_commit(r);
    if (r->role != RAFT_LEADER)
        return;
    r->flush_pending = true;
    if (m->from == r->transferee && pr->match == last_index(r))
        send_timeout_now(r, m->from);
}

/* ---- Follower side ----------------------------------------------------------------------------
 */

static bool entries_valid(const struct raft_msg *m)
{
    uint64_t prev_term = m->log_term;
    for (uint32_t i = 0; i < m->entries_len; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (e->index != m->index + 1 + i || e->term < prev_term || e->term > m->term ||
            e->type > RAFT_ENTRY_CONFIG || e->len > RAFT_ENTRY_BYTES_MAX ||
            (e->len > 0 && !e->data))
            return false;
        struct raft_config c;
        if (e->type == RAFT_ENTRY_CONFIG && raft_config_decode(e->data, e->len, &c) != 0)
            return false;
        prev_term = e->term;
    }
    return true;
}

/* AppendEntries receiver (§5.3). */
static int handle_append(struct raft *r, const struct raft_msg *m)
{
    struct raft_msg resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from};
    if (m->index < r->commit) {
        resp.index = r->commit;
        send_after_persist(r, &resp);
        return 0;
    }
    if (!entries_valid(m))
        return BATON_EPROTO;
    uint64_t t;
    if (!raft_log_term(&r->log, m->index, &t) || t != m->log_term) {
        uint64_t hint = find_conflict_by_term(r, BATON_MIN(m->index, last_index(r)), m->log_term);
        uint64_t hint_term = 0;
        raft_log_term(&r->log, hint, &hint_term);
        resp.reject = true;
        resp.index = m->index;
        resp.hint_index = hint;
        resp.hint_term = hint_term;
        RLOG(r, LOG_DEBUG,
             "msg=\"rejecting append\" from=%" PRIu64 " index=%" PRIu64 " log_term=%" PRIu64
             " hint=%" PRIu64,
             m->from, m->index, m->log_term, hint);
        send(r, &resp);
        return 0;
    }
    for (uint32_t i = 0; i < m->entries_len; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (e->index <= last_index(r)) {
            raft_log_term(&r->log, e->index, &t);
            if (t == e->term)
                continue;
            truncate_after(r, e->index - 1);
        }
        int rc = raft_log_append(&r->log, e->term, e->type, e->data, e->len);
        if (rc)
            return rc; /* what was appended stays; the leader retries the rest */
    }
    uint64_t last_new = m->index + m->entries_len;
    commit_to(r, BATON_MIN(m->commit, last_new));
    resp.index = last_new;
    send_after_persist(r, &resp);
    return 0;
}

static void handle_heartbeat(struct raft *r, const struct raft_msg *m)
{
    commit_to(r, BATON_MIN(m->commit, last_index(r)));
    struct raft_msg resp = {.type = RAFT_MSG_HEARTBEAT_RESP, .to = m->from, .context = m->context};
    send(r, &resp);
}

/* A chunk of a snapshot from the leader (§7, thesis §5.3 "InstallSnapshot" in chunks). Raft
 * holds at most one chunk that the caller has not yet been handed; the caller writes chunks
 * to a staging file, and the acknowledgement leaves once the chunk is durable. */
static int handle_snapshot(struct raft *r, const struct raft_msg *m)
{
    if (m->index <= r->commit) {
        /* We have all of it already: tell the leader where we are. */
        struct raft_msg resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from, .index = r->commit};
        send_after_persist(r, &resp);
        return 0;
    }
    uint64_t t;
    if (raft_log_term(&r->log, m->index, &t) && t == m->log_term) {
        /* We hold the snapshot's last entry, so by Log Matching everything before it too: the
         * snapshot only tells us that index is committed. Installing it would drop our entries
         * after it, which we may have acknowledged and the leader may have counted (etcd's
         * matchTerm fast-forward). */
        commit_to(r, m->index);
        struct raft_msg resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from, .index = r->commit};
        send_after_persist(r, &resp);
        return 0;
    }
    if (m->last && (!m->config || !raft_config_valid(m->config)))
        return BATON_EPROTO;
    if (m->data_len > 0 && !m->data)
        return BATON_EPROTO;
    /* An installed snapshot waits for its persist batch: its last chunk is still pending, so
     * nothing may touch the reception state until the batch is formed. The leader resends. */
    if (r->install_pending)
        return 0;
    bool same = m->index == r->rx_index && m->log_term == r->rx_term && r->rx_index != 0;
    if (!same && m->offset == 0) {
        r->rx_index = m->index;
        r->rx_term = m->log_term;
        r->rx_offset = 0;
        r->chunk_pending = false; /* a newer snapshot replaces a half-received one */
        same = true;
    }
    struct raft_msg resp = {.type = RAFT_MSG_SNAPSHOT_RESP, .to = m->from, .index = m->index};
    RLOG(r, LOG_DEBUG,
         "msg=\"snapshot chunk\" from=%" PRIu64 " index=%" PRIu64 " offset=%" PRIu64
         " len=%u last=%d expected=%" PRIu64,
         m->from, m->index, m->offset, m->data_len, m->last, r->rx_offset);
    if (!same || m->offset > r->rx_offset) {
        /* A gap (lost or reordered chunk) or another snapshot: say where to resume. */
        resp.reject = true;
        resp.offset = same ? r->rx_offset : 0;
        send(r, &resp);
        return 0;
    }
    if (m->offset < r->rx_offset) {
        resp.offset = r->rx_offset; /* a duplicate: acknowledge what we have */
        send_after_persist(r, &resp);
        return 0;
    }
    /* Chunks that arrive before the caller took the previous one are merged with it, up to one
     * window (snapshot_chunks_inflight x snapshot_chunk_bytes, the members share options);
     * past it the chunk is dropped and the leader resends after its timeout. */
    uint64_t window = (uint64_t)r->o.snapshot_chunks_inflight * r->o.snapshot_chunk_bytes;
    if (r->chunk_pending && r->chunk.len + (uint64_t)m->data_len > window)
        return 0;
    if (!r->chunk_pending) {
        buf_clear(&r->chunk_buf);
        r->chunk =
            (struct raft_snap_chunk){.index = m->index, .term = m->log_term, .offset = m->offset};
    }
    int rc = buf_append(&r->chunk_buf, m->data, m->data_len);
    if (rc)
        return rc;
    r->chunk.len += m->data_len;
    r->chunk.data = r->chunk_buf.data;
    r->chunk.last = m->last;
    r->chunk_pending = true;
    r->rx_offset += m->data_len;
    if (!m->last) {
        resp.offset = r->rx_offset;
        send_after_persist(r, &resp);
        return 0;
    }
    /* The last chunk: the snapshot replaces the whole log (§7: "discard the entire log"). */
    RLOG(r, LOG_INFO, "msg=\"installing snapshot\" index=%" PRIu64 " snap_term=%" PRIu64, m->index,
         m->log_term);
    raft_log_reset(&r->log, m->index, m->log_term);
    drop_waiting_acks_after(r, m->index);
    r->snap = (struct raft_snapshot_meta){.index = m->index, .term = m->log_term};
    r->snap.config = *m->config;
    r->install_meta = r->snap;
    r->install_pending = true;
    r->commit = m->index;
    r->unstable_from = m->index + 1;
    if (r->stable_index > m->index)
        r->stable_index = m->index;
    if (r->pb_last > m->index)
        r->pb_last = m->index;
    r->rx_index = r->rx_term = r->rx_offset = 0;
    apply_config(r, m->config, m->index);
    struct raft_msg done = {.type = RAFT_MSG_APPEND_RESP, .to = m->from, .index = m->index};
    send_after_persist(r, &done);
    return 0;
}

/* ---- Votes (§5.2, §5.4.1; thesis §9.6) --------------------------------------------------------
 */

static void handle_vote(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE;
    bool can_vote = r->vote == m->from || (r->vote == RAFT_NONE && r->leader == RAFT_NONE) ||
                    (pre && m->term > r->term);
    /* §5.4.1: grant only to a candidate whose log is at least as up-to-date as ours. */
    bool up_to_date =
        m->log_term > last_term(r) || (m->log_term == last_term(r) && m->index >= last_index(r));
    struct raft_msg resp = {.type = pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP,
                            .to = m->from};
    if (can_vote && up_to_date) {
        /* A pre-vote reply carries the term asked about, so the pre-candidate can tell it
         * from a stale one. */
        resp.term = m->term;
        RLOG(r, LOG_INFO, "msg=\"granting %s\" to=%" PRIu64 " cand_term=%" PRIu64,
             pre ? "pre-vote" : "vote", m->from, m->term);
        if (pre) {
            send(r, &resp);
        } else {
            r->vote = m->from;
            r->election_elapsed = 0;
            send_after_persist(r, &resp); /* never before the vote is durable */
        }
        return;
    }
    resp.reject = true;
    RLOG(r, LOG_INFO,
         "msg=\"rejecting %s\" to=%" PRIu64 " cand_term=%" PRIu64 " vote=%" PRIu64 " up_to_date=%d",
         pre ? "pre-vote" : "vote", m->from, m->term, r->vote, up_to_date);
    send(r, &resp);
}

static void handle_vote_resp(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE_RESP;
    if ((pre && r->role != RAFT_PRE_CANDIDATE) || (!pre && r->role != RAFT_CANDIDATE))
        return;
    struct progress *pr = peer_find(r, m->from);
    if (!pr || !is_voter(r, m->from))
        return;
    if (pr->vote == VOTE_NONE)
        pr->vote = m->reject ? VOTE_REJECTED : VOTE_GRANTED;
    tally(r);
}

/* ---- Snapshot sending (leader) ----------------------------------------------------------------
 */

/* Asks the caller for the next chunk while the window allows (flow control: at most
 * snapshot_chunks_inflight unacknowledged chunks, and one read outstanding). */
static void pump_snapshot(struct raft *r, struct progress *pr)
{
    if (pr->state != RAFT_PROGRESS_SNAPSHOT || pr->snap_read_pending || pr->snap_last_sent ||
        pr->snap_next - pr->snap_acked >=
            (uint64_t)r->o.snapshot_chunks_inflight * r->o.snapshot_chunk_bytes)
        return;
    if (GROW(r->sr, r->sr_cap, r->sr_len + 1))
        return; /* retried at the next timeout */
    r->sr[r->sr_len++] = (struct raft_snap_read){
        .to = pr->id,
        .index = pr->snap_index,
        .term = pr->snap_term,
        .offset = pr->snap_next,
        .len_max = r->o.snapshot_chunk_bytes,
    };
    pr->snap_read_pending = true;
}

static void restart_snapshot_from_ack(struct raft *r, struct progress *pr, uint64_t offset)
{
    pr->snap_acked = offset;
    pr->snap_next = offset;
    pr->snap_idle = 0;
    pr->snap_last_sent = false;
    pr->snap_read_pending = false;
    pump_snapshot(r, pr);
}

static void handle_snapshot_resp(struct raft *r, const struct raft_msg *m, struct progress *pr)
{
    if (pr->state != RAFT_PROGRESS_SNAPSHOT || m->index != pr->snap_index)
        return;
    RLOG(r, LOG_DEBUG,
         "msg=\"snapshot ack\" from=%" PRIu64 " offset=%" PRIu64 " reject=%d acked=%" PRIu64,
         m->from, m->offset, m->reject, pr->snap_acked);
    pr->snap_idle = 0;
    if (m->reject) {
        /* The follower expects m->offset: a chunk was lost or it restarted. */
        if (m->offset <= pr->snap_next)
            restart_snapshot_from_ack(r, pr, m->offset);
        return;
    }
    if (m->offset > pr->snap_acked)
        pr->snap_acked = m->offset;
    if (m->offset > pr->snap_next) {
        /* The follower holds more than this round sent (we restarted it too eagerly): go on
         * from there; any chunk read still outstanding is stale. */
        pr->snap_next = m->offset;
        pr->snap_read_pending = false;
    }
    pump_snapshot(r, pr);
}

/* ---- ReadIndex (thesis §6.4) ----------------------------------------------------------------- */

static void release_read(struct raft *r, const struct pending_read *rd)
{
    if (rd->from == r->id) {
        push_read_state(r, rd->context, rd->index);
        return;
    }
    struct raft_msg m = {.type = RAFT_MSG_READ_INDEX_RESP,
                         .to = rd->from,
                         .context = rd->context,
                         .index = rd->index};
    send(r, &m);
}

/* Starts a heartbeat round for every read not yet in one. Reads that arrive while a round is in
 * flight wait for the next round, so one round serves many reads. */
static void start_read_round(struct raft *r)
{
    bool any = false;
    for (size_t i = 0; i < r->reads_len; i++) {
        if (r->reads[i].round == 0) {
            if (!any)
                r->read_round++;
            any = true;
            r->reads[i].round = r->read_round;
            /* The commit index now is at least the one when the read arrived (§6.4 step 1). */
            r->reads[i].index = r->commit;
        }
    }
    if (any) {
        RLOG(r, LOG_DEBUG, "msg=\"read round\" round=%" PRIu64, r->read_round);
        bcast_heartbeat(r);
    }
}

static void check_reads(struct raft *r)
{
    if (r->role != RAFT_LEADER || r->reads_len == 0)
        return;
    /* A new leader does not know the commit index until an entry of its term commits. */
    if (!r->committed_own_term)
        return;
    uint64_t done = BATON_MIN(quorum_value(r, Q_READ), r->read_round);
    if (done > r->read_round_done) {
        r->read_round_done = done;
        size_t n = 0;
        while (n < r->reads_len && r->reads[n].round != 0 && r->reads[n].round <= done)
            release_read(r, &r->reads[n++]);
        if (n > 0) {
            memmove(r->reads, r->reads + n, (r->reads_len - n) * sizeof(*r->reads));
            r->reads_len -= n;
        }
    }
    /* Reads not yet in a round get the next one, started when the ready is taken, so every
     * read that arrives until then shares it. */
    if (r->reads_len > 0 && r->read_round_done == r->read_round)
        r->read_start_pending = true;
}

static int leader_read(struct raft *r, uint64_t from, uint64_t context)
{
    if (r->reads_len >= READS_MAX)
        return BATON_EBUSY;
    if (!r->reads) {
        r->reads = malloc(READS_MAX * sizeof(*r->reads));
        if (!r->reads)
            return BATON_ENOMEM;
    }
    r->reads[r->reads_len++] = (struct pending_read){.context = context, .from = from};
    check_reads(r);
    return 0;
}

/* ---- Message dispatch -------------------------------------------------------------------------
 */

static void handle_heartbeat_resp(struct raft *r, const struct raft_msg *m, struct progress *pr)
{
    pr->probe_sent = false;
    if (pr->state == RAFT_PROGRESS_REPLICATE && inflight_full(r, pr))
        inflight_free_first(r, pr); /* a lost append must not stall the pipe for ever */
    /* A follower behind: an append (empty if nothing is sendable) makes it reveal where its
     * log really ends, e.g. after a restart that lost what was in flight. */
    if (pr->match < last_index(r))
        send_append(r, pr, true);
    if (m->context > pr->read_acked && m->context <= r->read_round) {
        pr->read_acked = m->context;
        check_reads(r);
    }
}

static int step_leader(struct raft *r, const struct raft_msg *m)
{
    struct progress *pr = peer_find(r, m->from);
    if (m->type == RAFT_MSG_READ_INDEX) {
        int rc = leader_read(r, m->from, m->context);
        if (rc) {
            struct raft_msg resp = {.type = RAFT_MSG_READ_INDEX_RESP,
                                    .to = m->from,
                                    .context = m->context,
                                    .reject = true};
            send(r, &resp);
        }
        return 0;
    }
    if (!pr)
        return 0;
    pr->recent_active = true;
    switch (m->type) {
    case RAFT_MSG_APPEND_RESP:
        handle_append_resp(r, m, pr);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        handle_heartbeat_resp(r, m, pr);
        break;
    case RAFT_MSG_SNAPSHOT_RESP:
        handle_snapshot_resp(r, m, pr);
        break;
    default:
        break;
    }
    return 0;
}

static int step_follower(struct raft *r, const struct raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APPEND:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAPSHOT:
        if (r->role != RAFT_FOLLOWER || r->leader != m->from)
            become_follower(r, r->term, m->from);
        r->election_elapsed = 0;
        r->leader_dead = false;
        if (m->type == RAFT_MSG_APPEND)
            return handle_append(r, m);
        if (m->type == RAFT_MSG_HEARTBEAT)
            handle_heartbeat(r, m);
        else
            return handle_snapshot(r, m);
        return 0;
    case RAFT_MSG_TIMEOUT_NOW:
        if (r->role == RAFT_FOLLOWER && promotable(r)) {
            RLOG(r, LOG_INFO, "msg=\"timeout-now: campaigning\" from=%" PRIu64, m->from);
            campaign(r, true);
        }
        return 0;
    case RAFT_MSG_READ_INDEX_RESP:
        if (!m->reject)
            push_read_state(r, m->context, m->index);
        return 0;
    default:
        return 0;
    }
}

/* Term handling common to every message (§5.1; thesis §9.6 for pre-votes and leader
 * stickiness). Returns false when the message is to be dropped. */
static bool step_term(struct raft *r, const struct raft_msg *m)
{
    bool vote_req = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE;
    if (m->term > r->term) {
        if (vote_req) {
            /* Leader stickiness (thesis §4.2.3, §9.6): while we hear from a live leader we
             * ignore candidates, unless the leader itself asked for the election
             * (TimeoutNow) or we saw the leader's process die (raft_peer_down). */
            bool in_lease = r->leader != RAFT_NONE && r->election_elapsed < r->o.election_ticks &&
                            !r->leader_dead && !m->transfer;
            if (in_lease) {
                RLOG(r, LOG_INFO,
                     "msg=\"ignoring %s: leader is live\" from=%" PRIu64 " leader=%" PRIu64,
                     raft_msg_type_name(m->type), m->from, r->leader);
                return false;
            }
        }
        if (m->type == RAFT_MSG_PREVOTE || (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject))
            return true; /* pre-votes never change our term */
        bool from_leader = m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
                           m->type == RAFT_MSG_SNAPSHOT;
        become_follower(r, m->term, from_leader ? m->from : RAFT_NONE);
        return true;
    }
    if (m->term < r->term) {
        if ((r->o.check_quorum || r->o.pre_vote) &&
            (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT)) {
            /* Tell a stale leader about the newer term so it steps down; with pre-vote it
             * might otherwise never learn of it. */
            struct raft_msg resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from};
            send(r, &resp);
        } else if (m->type == RAFT_MSG_PREVOTE) {
            struct raft_msg resp = {.type = RAFT_MSG_PREVOTE_RESP, .to = m->from, .reject = true};
            send(r, &resp);
        }
        return false;
    }
    return true;
}

static int step_msg(struct raft *r, const struct raft_msg *m)
{
    if (!step_term(r, m))
        return 0;
    switch (m->type) {
    case RAFT_MSG_VOTE:
    case RAFT_MSG_PREVOTE:
        handle_vote(r, m);
        return 0;
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_PREVOTE_RESP:
        handle_vote_resp(r, m);
        return 0;
    default:
        break;
    }
    if (r->role == RAFT_LEADER) {
        if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
            m->type == RAFT_MSG_SNAPSHOT) {
            RLOG(r, LOG_ERROR, "msg=\"another leader in my term\" from=%" PRIu64, m->from);
            return 0;
        }
        return step_leader(r, m);
    }
    return step_follower(r, m);
}

static void step_local(struct raft *r, const struct raft_msg *m)
{
    int rc = step_msg(r, m);
    BATON_ASSERT(rc == 0);
}

int raft_step(struct raft *r, const struct raft_msg *m)
{
    BATON_ASSERT(!r->rd_outstanding);
    if (m->to != r->id || m->from == RAFT_NONE || m->from == r->id || m->type < RAFT_MSG_APPEND ||
        m->type > RAFT_MSG_READ_INDEX_RESP)
        return BATON_EINVAL;
    if (m->entries_len > 0 && (m->type != RAFT_MSG_APPEND || !m->entries))
        return BATON_EPROTO;
    return step_msg(r, m);
}

/* ---- Time ------------------------------------------------------------------------------------ */

static void tick_leader(struct raft *r)
{
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    if (r->transferee != RAFT_NONE && ++r->transfer_elapsed >= r->o.election_ticks)
        abort_transfer(r, "timeout");
    if (r->election_elapsed >= r->o.election_ticks) {
        r->election_elapsed = 0;
        if (r->o.check_quorum) {
            if (!quorum_active(r)) {
                RLOG(r, LOG_WARN, "msg=\"lost contact with a quorum, stepping down\"");
                become_follower(r, r->term, RAFT_NONE);
                return;
            }
            for (uint32_t i = 0; i < r->peers_len; i++)
                r->peers[i].recent_active = r->peers[i].id == r->id;
        }
    }
    for (uint32_t i = 0; i < r->peers_len; i++) {
        struct progress *pr = &r->peers[i];
        /* A lost chunk or acknowledgement: resume from what the follower confirmed. */
        if (pr->state == RAFT_PROGRESS_SNAPSHOT && ++pr->snap_idle >= r->o.election_ticks)
            restart_snapshot_from_ack(r, pr, pr->snap_acked);
    }
    if (r->heartbeat_elapsed >= r->o.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        bcast_heartbeat(r);
    }
}

void raft_tick(struct raft *r)
{
    BATON_ASSERT(!r->rd_outstanding);
    if (r->role == RAFT_LEADER) {
        tick_leader(r);
        return;
    }
    r->election_elapsed++;
    if (r->election_elapsed >= r->randomized_timeout && promotable(r)) {
        r->election_elapsed = 0;
        campaign(r, false);
    }
}

/* ---- Proposals and requests ------------------------------------------------------------------ */

int raft_propose(struct raft *r, const void *data, size_t len, uint64_t *index_out)
{
    BATON_ASSERT(!r->rd_outstanding);
    if (r->role != RAFT_LEADER)
        return BATON_ENOTLEADER;
    if (r->transferee != RAFT_NONE)
        return BATON_EPROPOSALDROP;
    if (len > RAFT_ENTRY_BYTES_MAX)
        return BATON_ETOOBIG;
    if (r->uncommitted_bytes > 0 && r->uncommitted_bytes + len > r->o.max_uncommitted_bytes)
        return BATON_EBUSY;
    return append_entry(r, RAFT_ENTRY_NORMAL, data, len, index_out);
}

int raft_read_index(struct raft *r, uint64_t context)
{
    BATON_ASSERT(!r->rd_outstanding);
    if (r->role == RAFT_LEADER)
        return leader_read(r, r->id, context);
    if (r->leader == RAFT_NONE || r->role != RAFT_FOLLOWER)
        return BATON_ENOTLEADER;
    struct raft_msg m = {.type = RAFT_MSG_READ_INDEX, .to = r->leader, .context = context};
    send(r, &m);
    return 0;
}

int raft_transfer_leader(struct raft *r, uint64_t target)
{
    BATON_ASSERT(!r->rd_outstanding);
    if (r->role != RAFT_LEADER)
        return BATON_ENOTLEADER;
    if (target == r->id || !is_voter(r, target))
        return BATON_EINVAL;
    if (r->transferee == target)
        return 0;
    abort_transfer(r, "superseded");
    r->transferee = target;
    r->transfer_elapsed = 0;
    RLOG(r, LOG_INFO, "msg=\"leadership transfer started\" to=%" PRIu64, target);
    struct progress *pr = peer_find(r, target);
    if (pr->match == last_index(r))
        send_timeout_now(r, target);
    else
        send_append(r, pr, true); /* catch the target up first */
    return 0;
}

static bool ids_remove(uint64_t *ids, uint32_t *n, uint64_t id)
{
    for (uint32_t i = 0; i < *n; i++) {
        if (ids[i] == id) {
            ids[i] = ids[--*n];
            return true;
        }
    }
    return false;
}

static int ids_add(uint64_t *ids, uint32_t *n, uint64_t id)
{
    if (*n >= RAFT_CONFIG_MAX)
        return BATON_ETOOBIG;
    ids[(*n)++] = id;
    return 0;
}

static int conf_apply_change(struct raft_config *c, const struct raft_conf_change *cc)
{
    if (cc->id == RAFT_NONE)
        return BATON_EINVAL;
    bool voter = peer_in(c->voters, c->voters_len, cc->id);
    bool learner = peer_in(c->learners, c->learners_len, cc->id);
    switch (cc->op) {
    case RAFT_CONF_ADD_VOTER:
        if (voter)
            return BATON_EINVAL;
        ids_remove(c->learners, &c->learners_len, cc->id);
        return ids_add(c->voters, &c->voters_len, cc->id);
    case RAFT_CONF_ADD_LEARNER:
        if (voter || learner)
            return BATON_EINVAL; /* no demotion in one step */
        return ids_add(c->learners, &c->learners_len, cc->id);
    case RAFT_CONF_REMOVE:
        if (!ids_remove(c->voters, &c->voters_len, cc->id) &&
            !ids_remove(c->learners, &c->learners_len, cc->id))
            return BATON_EINVAL;
        return 0;
    default:
        return BATON_EINVAL;
    }
}

static uint32_t voters_changed(const struct raft_config *a, const struct raft_config *b)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < a->voters_len; i++)
        n += !peer_in(b->voters, b->voters_len, a->voters[i]);
    for (uint32_t i = 0; i < b->voters_len; i++)
        n += !peer_in(a->voters, a->voters_len, b->voters[i]);
    return n;
}

static int propose_config(struct raft *r, const struct raft_config *c, uint64_t *index_out)
{
    if (!raft_config_valid(c))
        return BATON_EINVAL;
    buf_clear(&r->scratch);
    int rc = raft_config_encode(c, &r->scratch);
    if (rc)
        return rc;
    uint64_t index;
    rc = append_entry(r, RAFT_ENTRY_CONFIG, r->scratch.data, r->scratch.len, &index);
    if (rc)
        return rc;
    r->pending_conf_index = index;
    RLOG(r, LOG_INFO,
         "msg=\"configuration change proposed\" index=%" PRIu64 " voters=%u voters_old=%u "
         "learners=%u",
         index, c->voters_len, c->voters_old_len, c->learners_len);
    if (index_out)
        *index_out = index;
    return 0;
}

static int propose_leave_joint(struct raft *r)
{
    struct raft_config c = r->config;
    c.voters_old_len = 0;
    c.auto_leave = false;
    return propose_config(r, &c, NULL);
}

int raft_change_config(struct raft *r, const struct raft_conf_change *changes, size_t n,
                       enum raft_conf_transition t, uint64_t *index_out)
{
    BATON_ASSERT(!r->rd_outstanding);
    if (r->role != RAFT_LEADER)
        return BATON_ENOTLEADER;
    if (r->transferee != RAFT_NONE)
        return BATON_EPROPOSALDROP;
    /* One change at a time, and only once this leader has committed in its term: both are
     * needed for single-server changes to be safe (thesis §4.1, and the 2015 correction). */
    if (r->pending_conf_index > r->commit || !r->committed_own_term)
        return BATON_ECONFCHANGE;
    bool joint = r->config.voters_old_len > 0;
    if (n == 0) {
        if (!joint)
            return BATON_EINVAL;
        uint64_t index;
        int rc = propose_leave_joint(r);
        if (rc == 0 && index_out) {
            index = r->pending_conf_index;
            *index_out = index;
        }
        return rc;
    }
    if (joint || n > RAFT_PEERS_MAX)
        return joint ? BATON_ECONFCHANGE : BATON_EINVAL;
    struct raft_config c = r->config;
    for (size_t i = 0; i < n; i++) {
        int rc = conf_apply_change(&c, &changes[i]);
        if (rc)
            return rc == BATON_ETOOBIG ? BATON_EINVAL : rc;
    }
    if (c.voters_len == 0)
        return BATON_EINVAL;
    if (t != RAFT_TRANSITION_AUTO || voters_changed(&r->config, &c) > 1) {
        memcpy(c.voters_old, r->config.voters, sizeof(c.voters_old));
        c.voters_old_len = r->config.voters_len;
        c.auto_leave = t != RAFT_TRANSITION_JOINT_EXPLICIT;
        /* A voter that becomes a learner would be in both lists: not supported. */
        for (uint32_t i = 0; i < c.learners_len; i++)
            if (peer_in(c.voters_old, c.voters_old_len, c.learners[i]))
                return BATON_EINVAL;
    }
    return propose_config(r, &c, index_out);
}

/*
 * Fast failover. The caller saw the TCP connection to `peer` closed by the peer's kernel (RST or
 * FIN without our asking), which means the peer's process died. If that peer is our leader we
 * campaign at once (through pre-vote when enabled) instead of waiting out the election timeout,
 * and we stop ignoring other candidates for leader stickiness.
 *
 * Why this is safe: it changes only WHEN an election starts and whether we listen to one. Every
 * vote still requires the candidate's term to be current and its log to be at least as
 * up-to-date as the voter's (§5.2, §5.4.1), and at most one vote per term is durable before it
 * leaves; so Election Safety and Leader Completeness are untouched. A false report (the leader
 * is alive, only its connection reset) costs availability only: an unnecessary election and a
 * term bump, the very thing leader stickiness normally prevents. It must not be combined with
 * lease-based reads: a leader serving reads from a lease assumes no other leader can be elected
 * until the lease ends, which this hook defeats. baton uses ReadIndex (a quorum round per batch
 * of reads), which stays linearizable whatever triggers elections.
 */
void raft_peer_down(struct raft *r, uint64_t peer)
{
    BATON_ASSERT(!r->rd_outstanding);
    if (r->role == RAFT_LEADER) {
        struct progress *pr = peer_find(r, peer);
        if (pr && pr->id != r->id && pr->state == RAFT_PROGRESS_REPLICATE)
            become_probe(pr);
        return;
    }
    if (peer != r->leader || peer == RAFT_NONE)
        return;
    RLOG(r, LOG_INFO, "msg=\"leader reported dead\" leader=%" PRIu64, peer);
    r->leader_dead = true;
    if (r->role == RAFT_FOLLOWER && promotable(r)) {
        r->election_elapsed = 0;
        campaign(r, false);
    }
}

void raft_report_unreachable(struct raft *r, uint64_t peer)
{
    BATON_ASSERT(!r->rd_outstanding);
    if (r->role != RAFT_LEADER)
        return;
    struct progress *pr = peer_find(r, peer);
    if (pr && pr->id != r->id && pr->state == RAFT_PROGRESS_REPLICATE)
        become_probe(pr);
}

/* ---- Snapshots and compaction -----------------------------------------------------------------
 */

/* The configuration in effect at index (<= commit): the last configuration entry at or before
 * index, else the snapshot's. */
static void config_at(const struct raft *r, uint64_t index, struct raft_config *c)
{
    if (r->config_index <= index) {
        *c = r->config;
        return;
    }
    for (uint64_t i = index; i > r->log.snap_index; i--) {
        const struct raft_entry *e = raft_log_get(&r->log, i);
        if (e->type == RAFT_ENTRY_CONFIG) {
            int rc = raft_config_decode(e->data, e->len, c);
            BATON_ASSERT(rc == 0);
            return;
        }
    }
    *c = r->snap.config;
}

int raft_compact(struct raft *r, uint64_t index)
{
    if (r->rd_outstanding)
        return BATON_EBUSY;
    if (index > r->applied || index < r->snap.index)
        return BATON_EINVAL;
    if (index == r->snap.index)
        return 0;
    struct raft_snapshot_meta s = {.index = index};
    BATON_ASSERT(raft_log_term(&r->log, index, &s.term));
    config_at(r, index, &s.config);
    raft_log_compact(&r->log, index);
    r->snap = s;
    RLOG(r, LOG_INFO, "msg=\"log compacted\" index=%" PRIu64 " snap_term=%" PRIu64, index, s.term);
    /* Transfers of an older snapshot restart with this one: the caller keeps only the latest. */
    if (r->role == RAFT_LEADER) {
        size_t n = 0;
        for (size_t i = 0; i < r->sr_len; i++)
            if (r->sr[i].index == index)
                r->sr[n++] = r->sr[i];
        r->sr_len = n;
        for (uint32_t i = 0; i < r->peers_len; i++)
            if (r->peers[i].state == RAFT_PROGRESS_SNAPSHOT)
                become_snapshot(r, &r->peers[i]);
    }
    return 0;
}

int raft_snapshot_chunk(struct raft *r, uint64_t peer, uint64_t index, uint64_t offset,
                        const void *data, size_t len, bool last)
{
    BATON_ASSERT(!r->rd_outstanding);
    if ((len == 0 && !last) || len > r->o.snapshot_chunk_bytes || (len > 0 && !data))
        return BATON_EINVAL;
    struct progress *pr = r->role == RAFT_LEADER ? peer_find(r, peer) : NULL;
    if (!pr || pr->state != RAFT_PROGRESS_SNAPSHOT || !pr->snap_read_pending ||
        pr->snap_index != index || pr->snap_next != offset || index != r->snap.index)
        return 0; /* stale */
    /* The message owns a copy of the chunk and of the snapshot's configuration until the
     * ready that carries it is advanced. */
    struct raft_config *c = malloc(sizeof(*c) + len);
    if (!c)
        return BATON_ENOMEM;
    *c = r->snap.config;
    uint8_t *copy = (uint8_t *)(c + 1);
    if (len > 0)
        memcpy(copy, data, len);
    struct raft_msg m = {
        .type = RAFT_MSG_SNAPSHOT,
        .to = peer,
        .term = r->term,
        .index = index,
        .log_term = pr->snap_term,
        .offset = offset,
        .data = len > 0 ? copy : NULL,
        .data_len = (uint32_t)len,
        .last = last,
        .config = c,
    };
    m.from = r->id;
    send_owned(r, &m, c);
    pr->snap_read_pending = false;
    pr->snap_next = offset + len;
    pr->snap_last_sent = last;
    pump_snapshot(r, pr);
    return 0;
}

/* ---- Ready / advance / persisted ------------------------------------------------------------- */

static uint64_t apply_limit(const struct raft *r)
{
    if (r->snap_apply != 0 || r->install_pending)
        return r->applied;
    return BATON_MIN(r->commit, r->stable_index);
}

bool raft_has_ready(const struct raft *r)
{
    if (r->rd_outstanding)
        return false;
    if (r->out_len || r->rs_len || r->sr_len || r->snap_apply == 2)
        return true;
    if (r->role == RAFT_LEADER &&
        (((r->flush_pending || r->commit_changed) && r->peers_len > 1) || r->read_start_pending))
        return true;
    if (r->seq_handed == r->seq_done && persist_dirty(r))
        return true;
    return apply_limit(r) > r->applied;
}

static void form_persist_batch(struct raft *r)
{
    struct raft_persist *pb = &r->pb;
    memset(pb, 0, sizeof(*pb));
    pb->seq = ++r->seq_handed;
    if (r->chunk_pending) {
        struct buf tmp = r->pb_chunk_buf;
        r->pb_chunk_buf = r->chunk_buf;
        r->chunk_buf = tmp;
        r->pb_chunk = r->chunk;
        r->pb_chunk.data = r->pb_chunk_buf.data;
        pb->chunks = &r->pb_chunk;
        pb->chunks_len = 1;
        r->chunk_pending = false;
    }
    if (r->install_pending) {
        r->pb_snap = r->install_meta;
        pb->snapshot = &r->pb_snap;
        r->install_pending = false;
        r->snap_apply = 1;
        r->snap_apply_seq = pb->seq;
        r->snap_apply_meta = r->install_meta;
    }
    uint64_t last = last_index(r);
    if (r->unstable_from <= last) {
        size_t n = (size_t)(last - r->unstable_from + 1);
        if (GROW(r->pb_ents, r->pb_ents_cap, n)) {
            /* Hand out what fits later: leave the entries unstable, persist the rest. */
            n = 0;
            last = r->unstable_from - 1;
        }
        for (size_t i = 0; i < n; i++)
            r->pb_ents[i] = *raft_log_get(&r->log, r->unstable_from + i);
        pb->entries = r->pb_ents;
        pb->entries_len = n;
        r->unstable_from = last + 1;
    }
    r->pb_last = last;
    pb->hard_state = (struct raft_hard_state){
        .term = r->term, .vote = r->vote, .commit = BATON_MIN(r->commit, last)};
    pb->hard_state_changed = pb->hard_state.term != r->hs_handed.term ||
                             pb->hard_state.vote != r->hs_handed.vote ||
                             pb->hard_state.commit != r->hs_handed.commit;
    r->hs_handed = pb->hard_state;
}

/* Copies the outbox into the ready, filling in the entries of each append from the log. */
static void ready_msgs(struct raft *r, struct raft_ready *rd, size_t *ents_used, size_t committed)
{
    size_t n = 0;
    if (GROW(r->rd_msgs, r->rd_msgs_cap, r->out_len) ||
        GROW(r->rd_owned, r->rd_owned_cap, r->out_len)) {
        RLOG(r, LOG_ERROR, "msg=\"out of memory, messages dropped\" n=%zu", r->out_len);
        for (size_t i = 0; i < r->out_len; i++)
            free(r->out[i].owned);
        r->out_len = 0;
    }
    size_t ents = 0;
    for (size_t i = 0; i < r->out_len; i++)
        ents += r->out[i].m.entries_len;
    /* One array holds the entries of every append and then the committed entries. */
    if (GROW(r->rd_ents, r->rd_ents_cap, ents + committed))
        ents = SIZE_MAX;
    size_t e = 0;
    r->rd_owned_len = 0;
    for (size_t i = 0; i < r->out_len; i++) {
        struct raft_msg m = r->out[i].m;
        if (r->out[i].owned)
            r->rd_owned[r->rd_owned_len++] = r->out[i].owned;
        if (m.entries_len > 0) {
            /* Gone (compacted) or no memory: drop; the follower will ask again. */
            if (ents == SIZE_MAX || !raft_log_get(&r->log, m.index + 1) ||
                !raft_log_get(&r->log, m.index + m.entries_len))
                continue;
            for (uint32_t k = 0; k < m.entries_len; k++)
                r->rd_ents[e + k] = *raft_log_get(&r->log, m.index + 1 + k);
            m.entries = (const struct raft_entry *)(uintptr_t)e; /* fixed up below */
            e += m.entries_len;
        }
        r->rd_msgs[n++] = m;
    }
    for (size_t i = 0; i < n; i++)
        if (r->rd_msgs[i].entries_len > 0)
            r->rd_msgs[i].entries = r->rd_ents + (uintptr_t)r->rd_msgs[i].entries;
    r->out_len = 0;
    rd->msgs = r->rd_msgs;
    rd->msgs_len = n;
    *ents_used = e;
}

void raft_ready(struct raft *r, struct raft_ready *rd)
{
    BATON_ASSERT(!r->rd_outstanding);
    memset(rd, 0, sizeof(*rd));
    leader_flush(r);
    if (r->seq_handed == r->seq_done && persist_dirty(r)) {
        form_persist_batch(r);
        rd->persist = &r->pb;
    }
    size_t e = 0, want = 0;
    if (r->snap_apply != 2 && apply_limit(r) > r->applied)
        want = (size_t)BATON_MIN(apply_limit(r) - r->applied, READY_ENTRIES_MAX);
    ready_msgs(r, rd, &e, want);
    r->rd_applied_to = r->applied;
    r->rd_snap_applied = false;
    if (r->snap_apply == 2) {
        rd->apply_snapshot = &r->snap_apply_meta;
        r->rd_snap_applied = true;
    } else if (e + want <= r->rd_ents_cap) {
        size_t n = 0;
        for (uint64_t i = r->applied + 1; n < want; i++)
            r->rd_ents[e + n++] = *raft_log_get(&r->log, i);
        rd->committed = n ? r->rd_ents + e : NULL;
        rd->committed_len = n;
        r->rd_applied_to = r->applied + n;
    }
    /* Reads and snapshot reads move to the ready's own arrays. */
    if (r->rs_len && GROW(r->rd_rs, r->rd_rs_cap, r->rs_len) == 0) {
        memcpy(r->rd_rs, r->rs, r->rs_len * sizeof(*r->rs));
        rd->reads = r->rd_rs;
        rd->reads_len = r->rs_len;
        r->rs_len = 0;
    }
    if (r->sr_len && GROW(r->rd_sr, r->rd_sr_cap, r->sr_len) == 0) {
        memcpy(r->rd_sr, r->sr, r->sr_len * sizeof(*r->sr));
        rd->snap_reads = r->rd_sr;
        rd->snap_reads_len = r->sr_len;
        r->sr_len = 0;
    }
    r->rd_outstanding = true;
}

void raft_advance(struct raft *r, const struct raft_ready *rd)
{
    BATON_ASSERT(r->rd_outstanding);
    (void)rd;
    for (size_t i = 0; i < r->rd_owned_len; i++)
        free(r->rd_owned[i]);
    r->rd_owned_len = 0;
    if (r->rd_snap_applied) {
        r->applied = r->snap_apply_meta.index;
        r->snap_apply = 0;
    } else {
        BATON_ASSERT(r->rd_applied_to >= r->applied);
        r->applied = r->rd_applied_to;
    }
    r->rd_outstanding = false;
}

void raft_persisted(struct raft *r)
{
    BATON_ASSERT(r->seq_handed > r->seq_done);
    r->seq_done++;
    r->stable_index = r->pb_last;
    if (r->snap_apply == 1 && r->snap_apply_seq == r->seq_done)
        r->snap_apply = 2;
    /* Release what waited for this batch, in order. Stepping a released message locally may
     * queue new waiting messages behind these; they stay. */
    size_t n = 0;
    while (n < r->wait_len && r->wait[n].seq <= r->seq_done)
        n++;
    for (size_t i = 0; i < n; i++) {
        struct raft_msg m = r->wait[i].m;
        if (m.to == r->id)
            step_local(r, &m);
        else
            send_owned(r, &m, NULL);
    }
    if (n > 0) {
        memmove(r->wait, r->wait + n, (r->wait_len - n) * sizeof(*r->wait));
        r->wait_len -= n;
    }
    if (r->role == RAFT_LEADER) {
        struct progress *self = peer_find(r, r->id);
        if (self && r->stable_index > self->match)
            self->match = r->stable_index;
        maybe_commit(r);
    }
}

/* ---- Life cycle ------------------------------------------------------------------------------ */

void raft_options_default(struct raft_options *o)
{
    if (!o->election_ticks)
        o->election_ticks = 10;
    if (!o->heartbeat_ticks)
        o->heartbeat_ticks = 1;
    if (!o->max_msg_bytes)
        o->max_msg_bytes = 1u << 20;
    if (!o->max_inflight_msgs)
        o->max_inflight_msgs = 256;
    if (!o->max_inflight_bytes)
        o->max_inflight_bytes = 32u << 20;
    if (!o->max_uncommitted_bytes)
        o->max_uncommitted_bytes = 256u << 20;
    if (!o->snapshot_chunk_bytes)
        o->snapshot_chunk_bytes = 1u << 20;
    if (!o->snapshot_chunks_inflight)
        o->snapshot_chunks_inflight = 2;
}

int raft_create(const struct raft_options *opts, struct raft **out)
{
    struct raft_options o = *opts;
    raft_options_default(&o);
    if (o.id == RAFT_NONE || !o.rng || o.heartbeat_ticks >= o.election_ticks ||
        o.election_ticks > (1u << 30) || o.max_inflight_msgs > (1u << 20) ||
        o.snapshot_chunk_bytes > RAFT_CHUNK_BYTES_MAX)
        return BATON_EINVAL;
    struct raft *r = calloc(1, sizeof(*r));
    if (!r)
        return BATON_ENOMEM;
    r->o = o;
    r->id = o.id;
    raft_log_init(&r->log);
    r->unstable_from = 1;
    for (uint32_t i = 0; i < RAFT_PEERS_MAX; i++) {
        r->peers[i].inf_last = calloc(o.max_inflight_msgs, sizeof(uint64_t));
        r->peers[i].inf_size = calloc(o.max_inflight_msgs, sizeof(uint32_t));
        if (!r->peers[i].inf_last || !r->peers[i].inf_size) {
            raft_destroy(r);
            return BATON_ENOMEM;
        }
    }
    reset_election_timer(r);
    *out = r;
    return 0;
}

void raft_destroy(struct raft *r)
{
    if (!r)
        return;
    for (uint32_t i = 0; i < RAFT_PEERS_MAX; i++) {
        free(r->peers[i].inf_last);
        free(r->peers[i].inf_size);
    }
    for (size_t i = 0; i < r->out_len; i++)
        free(r->out[i].owned);
    for (size_t i = 0; i < r->rd_owned_len; i++)
        free(r->rd_owned[i]);
    raft_log_free(&r->log);
    free(r->out);
    free(r->wait);
    free(r->rs);
    free(r->sr);
    free(r->rd_msgs);
    free(r->rd_owned);
    free(r->rd_ents);
    free(r->rd_rs);
    free(r->rd_sr);
    free(r->pb_ents);
    free(r->reads);
    buf_free(&r->chunk_buf);
    buf_free(&r->pb_chunk_buf);
    buf_free(&r->scratch);
    free(r);
}

static bool is_pristine(const struct raft *r)
{
    return r->term == 0 && last_index(r) == 0 && r->log.snap_index == 0 && r->seq_handed == 0;
}

int raft_bootstrap(struct raft *r, const struct raft_config *conf)
{
    if (!is_pristine(r) || !raft_config_valid(conf) || conf->voters_len == 0 ||
        conf->voters_old_len > 0)
        return BATON_EINVAL;
    buf_clear(&r->scratch);
    int rc = raft_config_encode(conf, &r->scratch);
    if (rc == 0)
        rc = raft_log_append(&r->log, 1, RAFT_ENTRY_CONFIG, r->scratch.data, r->scratch.len);
    if (rc)
        return rc;
    r->term = 1;
    commit_to(r, 1);
    RLOG(r, LOG_INFO, "msg=bootstrapped voters=%u learners=%u", conf->voters_len,
         conf->learners_len);
    return 0;
}

static int restore_check(const struct raft_hard_state *hs, const struct raft_snapshot_meta *snap,
                         const struct raft_entry *entries, size_t n)
{
    uint64_t prev_index = snap ? snap->index : 0, prev_term = snap ? snap->term : 0;
    if (snap && !raft_config_valid(&snap->config))
        return BATON_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const struct raft_entry *e = &entries[i];
        struct raft_config c;
        if (e->index != prev_index + 1 || e->term < prev_term || e->term == 0 ||
            e->type > RAFT_ENTRY_CONFIG || (e->len > 0 && !e->data) ||
            (e->type == RAFT_ENTRY_CONFIG && raft_config_decode(e->data, e->len, &c) != 0))
            return BATON_EINVAL;
        prev_index = e->index;
        prev_term = e->term;
    }
    if (hs->term < prev_term || hs->commit > prev_index)
        return BATON_EINVAL;
    return 0;
}

int raft_restore(struct raft *r, const struct raft_hard_state *hs,
                 const struct raft_snapshot_meta *snap, const struct raft_entry *entries,
                 size_t entries_len)
{
    if (!is_pristine(r))
        return BATON_EINVAL;
    int rc = restore_check(hs, snap, entries, entries_len);
    if (rc)
        return rc;
    if (snap) {
        raft_log_reset(&r->log, snap->index, snap->term);
        r->snap = *snap;
        r->commit = r->applied = snap->index;
        apply_config(r, &snap->config, snap->index);
    }
    for (size_t i = 0; i < entries_len; i++) {
        rc = raft_log_append(&r->log, entries[i].term, entries[i].type, entries[i].data,
                             entries[i].len);
        if (rc)
            return rc; /* the caller destroys this member */
    }
    r->term = hs->term;
    r->vote = hs->vote;
    r->hs_handed = *hs;
    r->stable_index = last_index(r);
    r->unstable_from = last_index(r) + 1;
    commit_to(r, hs->commit);
    r->hs_handed.commit = r->commit;
    RLOG(r, LOG_INFO,
         "msg=restored vote=%" PRIu64 " commit=%" PRIu64 " first_index=%" PRIu64
         " last_index=%" PRIu64,
         r->vote, r->commit, raft_log_first(&r->log), last_index(r));
    return 0;
}

/* ---- Inspection ------------------------------------------------------------------------------ */

const char *raft_role_name(enum raft_role role)
{
    switch (role) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_PRE_CANDIDATE:
        return "pre-candidate";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    }
    return "unknown";
}

void raft_status(const struct raft *r, struct raft_status *s)
{
    memset(s, 0, sizeof(*s));
    s->id = r->id;
    s->role = r->role;
    s->term = r->term;
    s->vote = r->vote;
    s->leader = r->leader;
    s->commit = r->commit;
    s->applied = r->applied;
    s->persisted = r->stable_index;
    s->first_index = raft_log_first(&r->log);
    s->last_index = last_index(r);
    s->snapshot_index = r->snap.index;
    s->snapshot_term = r->snap.term;
    s->transferee = r->transferee;
    s->config = r->config;
}

int raft_progress(const struct raft *r, uint64_t peer, struct raft_progress_info *p)
{
    if (r->role != RAFT_LEADER)
        return BATON_ENOTLEADER;
    const struct progress *pr = peer_find((struct raft *)r, peer);
    if (!pr)
        return BATON_ENOTFOUND;
    *p = (struct raft_progress_info){
        .state = pr->state,
        .match = pr->match,
        .next = pr->next,
        .inflight_msgs = pr->inf_count,
        .recent_active = pr->recent_active,
    };
    return 0;
}

int raft_term_at(const struct raft *r, uint64_t index, uint64_t *term)
{
    return raft_log_term(&r->log, index, term) ? 0 : BATON_ENOTFOUND;
}

void raft_snapshot_meta(const struct raft *r, struct raft_snapshot_meta *out)
{
    *out = r->snap;
}
