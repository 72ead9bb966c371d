/*
 * The randomized run: a client workload (proposals and ReadIndex reads), a fault schedule drawn
 * from the enabled fault kinds, then healing and the liveness check: once every fault is lifted
 * a leader must be elected and a fresh write must reach every running member within
 * liveness_ms of virtual time.
 */
#include "sim_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char *const sim_fault_names[] = {"drop",  "delay",  "reorder",  "dup",     "partition",
                                              "crash", "member", "transfer", "snapshot"};

int sim_faults_parse(const char *list, uint32_t *out, char *bad, size_t bad_len)
{
    uint32_t f = 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        bool found = false;
        if (len == 3 && strncmp(p, "all", 3) == 0) {
            f |= SIM_F_ALL;
            found = true;
        } else if (len == 4 && strncmp(p, "none", 4) == 0) {
            found = true;
        }
        for (size_t i = 0; !found && i < BATON_ARRAY_LEN(sim_fault_names); i++) {
            if (strlen(sim_fault_names[i]) == len && strncmp(p, sim_fault_names[i], len) == 0) {
                f |= 1u << i;
                found = true;
            }
        }
        if (!found) {
            snprintf(bad, bad_len, "%.*s", (int)len, p);
            return BATON_EINVAL;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    *out = f;
    return 0;
}

void sim_faults_format(uint32_t faults, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    if ((faults & SIM_F_ALL) == SIM_F_ALL) {
        snprintf(out, len, "all");
        return;
    }
    for (size_t i = 0; i < BATON_ARRAY_LEN(sim_fault_names); i++) {
        if (!(faults & (1u << i)))
            continue;
        int w = snprintf(out + used, len - used, "%s%s", used ? "," : "", sim_fault_names[i]);
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
    if (used == 0)
        snprintf(out, len, "none");
}

static uint64_t sim_rand_between(struct sim *s, uint64_t lo, uint64_t hi)
{
    return lo + prng_below(&s->rng, hi - lo + 1);
}

/* A running node chosen at random (0 when none). */
static uint64_t sim_random_up(struct sim *s)
{
    uint64_t ids[SIM_NODES_MAX];
    int n = 0;
    for (int i = 0; i < s->nodes_len; i++)
        if (s->nodes[i].up)
            ids[n++] = s->nodes[i].id;
    return n ? ids[prng_below(&s->rng, (uint64_t)n)] : 0;
}

/* ---- Client workload --------------------------------------------------------------------------
 */

int sim_on_client(struct sim *s, struct ev *e)
{
    if (s->done || !s->cfg.workload)
        return 0;
    evq_push(&s->q,
             (struct ev){.at_us = s->now_us + sim_rand_between(s, 1000, 12000), .kind = EV_CLIENT});
    uint64_t leader = sim_leader(s);
    bool to_leader = leader && prng_below(&s->rng, 10) < 8;
    if (prng_below(&s->rng, 4) < 3) {
        uint64_t id = to_leader ? leader : sim_random_up(s);
        if (id == 0)
            return 0;
        int rc = sim_propose(s, id, NULL);
        return rc == -1 ? -1 : 0;
    }
    uint64_t id = sim_random_up(s);
    if (id == 0)
        return 0;
    int rc = sim_read(s, id, NULL);
    return rc == -1 ? -1 : 0;
}

/* ---- Faults ---------------------------------------------------------------------------------- */

static int sim_up_count(const struct sim *s)
{
    int n = 0;
    for (int i = 0; i < s->nodes_len; i++)
        n += s->nodes[i].up;
    return n;
}

static void sim_fault_partition(struct sim *s)
{
    memset(s->link_down, 0, sizeof(s->link_down));
    int len = s->nodes_len;
    int kind = (int)prng_below(&s->rng, 7);
    if (kind == 0) {
        sim_trace(s, "fault: partition healed");
        return;
    }
    s->st.partitions++;
    bool side[SIM_NODES_MAX] = {0};
    uint64_t leader = sim_leader(s);
    switch (kind) {
    case 1: /* symmetric split at random */
    case 2: /* majority/minority: a minority of ceil(n/2)-1 nodes */
        for (int i = 0; i < len; i++)
            side[i] = prng_below(&s->rng, 2);
        if (kind == 2) {
            memset(side, 0, sizeof(side));
            int minority = (len - 1) / 2;
            for (int k = 0; k < minority; k++)
                side[prng_below(&s->rng, (uint64_t)len)] = true;
        }
        for (int i = 0; i < len; i++)
            for (int j = 0; j < len; j++)
                if (side[i] != side[j])
                    s->link_down[i][j] = true;
        sim_trace(s, "fault: partition (split)");
        break;
    case 3: /* isolate the leader */
        if (leader)
            sim_isolate(s, leader);
        sim_trace(s, "fault: isolate leader %" PRIu64, leader);
        break;
    case 4: /* one-way: a few directed links cut */
    case 5: {
        int cuts = 1 + (int)prng_below(&s->rng, (uint64_t)len);
        for (int k = 0; k < cuts; k++) {
            int a = (int)prng_below(&s->rng, (uint64_t)len),
                b = (int)prng_below(&s->rng, (uint64_t)len);
            if (kind == 5 && leader && k == 0)
                a = (int)leader - 1; /* the leader can send but not hear, or the reverse */
            if (a != b)
                s->link_down[a][b] = true;
        }
        sim_trace(s, "fault: one-way link cuts");
        break;
    }
    case 6: { /* bridge: two halves that cannot talk, one node talks to both */
        int bridge = (int)prng_below(&s->rng, (uint64_t)len);
        for (int i = 0; i < len; i++)
            side[i] = prng_below(&s->rng, 2);
        for (int i = 0; i < len; i++)
            for (int j = 0; j < len; j++)
                if (i != bridge && j != bridge && side[i] != side[j])
                    s->link_down[i][j] = true;
        sim_trace(s, "fault: bridge through node %d", bridge + 1);
        break;
    }
    }
}

static void sim_fault_net(struct sim *s, uint32_t kind)
{
    static const uint32_t drops[] = {0, 10000, 50000, 200000};
    static const uint32_t dups[] = {0, 10000, 50000};
    static const uint32_t delays[] = {0, 20000, 100000};
    switch (kind) {
    case SIM_F_DROP:
        s->drop_ppm = drops[prng_below(&s->rng, BATON_ARRAY_LEN(drops))];
        break;
    case SIM_F_DUP:
        s->dup_ppm = dups[prng_below(&s->rng, BATON_ARRAY_LEN(dups))];
        break;
    case SIM_F_DELAY:
        s->delay_ppm = delays[prng_below(&s->rng, BATON_ARRAY_LEN(delays))];
        s->delay_max_us = sim_rand_between(s, 10000, 300000);
        break;
    case SIM_F_REORDER:
        s->reorder = prng_below(&s->rng, 3) != 0;
        s->jitter_us = sim_rand_between(s, 1000, 40000);
        break;
    }
    sim_trace(s, "fault: net drop=%u dup=%u delay=%u/%" PRIu64 "us reorder=%d/%" PRIu64 "us",
              s->drop_ppm, s->dup_ppm, s->delay_ppm, s->delay_max_us, s->reorder, s->jitter_us);
}

static int sim_fault_crash(struct sim *s)
{
    uint64_t leader = sim_leader(s);
    uint64_t id = (leader && prng_below(&s->rng, 3) == 0) ? leader : sim_random_up(s);
    /* Keep a majority of the initial size running most of the time; liveness is only judged
     * after healing, but progress during faults exercises more of the protocol. */
    if (id == 0 || sim_up_count(s) <= (s->cfg.nodes + 1) / 2)
        return 0;
    sim_crash(s, id, prng_below(&s->rng, 2) == 0);
    evq_push(&s->q, (struct ev){.at_us = s->now_us + sim_rand_between(s, 1000, 1500000),
                                .kind = EV_USER,
                                .node = (int)id - 1,
                                .generation = s->nodes[id - 1].gen});
    return s->chk.violation[0] ? -1 : 0;
}

int sim_on_restart(struct sim *s, struct ev *e)
{
    struct sim_node *n = &s->nodes[e->node];
    if (n->up || n->retired || n->gen != e->generation)
        return 0;
    sim_restart(s, n->id);
    return s->chk.violation[0] ? -1 : 0;
}

static bool sim_conf_has(const struct raft_config *c, uint64_t id)
{
    return raft_config_is_voter(c, id) || raft_config_is_learner(c, id);
}

/* Nodes whose removal is committed stop for good (a removed member's process is shut down). */
static void sim_retire_removed(struct sim *s, const struct raft_status *lst)
{
    for (int i = 0; i < s->nodes_len; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->removing && !n->retired && !sim_conf_has(&lst->config, n->id))
            sim_retire(s, n->id);
    }
}

static int sim_fault_member_once(struct sim *s, bool *changed)
{
    uint64_t leader = sim_leader(s);
    if (!leader)
        return 0;
    struct raft_status st;
    sim_status(s, leader, &st);
    const struct raft_config *c = &st.config;
    sim_retire_removed(s, &st);
    if (c->voters_old_len > 0) {
        if (!c->auto_leave) /* explicit joint: leave it */
            return sim_change(s, leader, NULL, 0, RAFT_TRANSITION_AUTO) == -1 ? -1 : 0;
        return 0;
    }
    int op = (int)prng_below(&s->rng, 6);
    struct raft_conf_change ch[2];
    int voters = (int)c->voters_len;
    int min_voters = s->cfg.nodes >= 3 ? 3 : s->cfg.nodes;
    int rc = 0;
    if (op == 0 && c->learners_len == 0 && voters < s->cfg.nodes + 2) {
        uint64_t id = sim_new_node(s);
        if (!id)
            return s->chk.violation[0] ? -1 : 0;
        ch[0] = (struct raft_conf_change){RAFT_CONF_ADD_LEARNER, id};
        rc = sim_change(s, leader, ch, 1, RAFT_TRANSITION_AUTO);
        if (rc != 0 && rc != -1)
            sim_retire(s, id);                   /* never joined */
    } else if (op == 1 && c->learners_len > 0) { /* promote */
        ch[0] = (struct raft_conf_change){RAFT_CONF_ADD_VOTER, c->learners[0]};
        rc = sim_change(s, leader, ch, 1, RAFT_TRANSITION_AUTO);
    } else if (op == 2 && voters > min_voters) { /* remove a voter, maybe the leader */
        uint64_t id = c->voters[prng_below(&s->rng, (uint64_t)voters)];
        ch[0] = (struct raft_conf_change){RAFT_CONF_REMOVE, id};
        rc = sim_change(s, leader, ch, 1, RAFT_TRANSITION_AUTO);
        if (rc == 0)
            s->nodes[id - 1].removing = true;
    } else if ((op == 3 || op == 4) && c->learners_len > 0 && voters >= min_voters) {
        /* Joint consensus: promote a learner and remove a voter in one change (§6). */
        uint64_t out = c->voters[prng_below(&s->rng, (uint64_t)voters)];
        ch[0] = (struct raft_conf_change){RAFT_CONF_ADD_VOTER, c->learners[0]};
        ch[1] = (struct raft_conf_change){RAFT_CONF_REMOVE, out};
        rc = sim_change(s, leader, ch, 2,
                        op == 3 ? RAFT_TRANSITION_JOINT_AUTO : RAFT_TRANSITION_JOINT_EXPLICIT);
        if (rc == 0)
            s->nodes[out - 1].removing = true;
    } else if (op == 5 && c->learners_len > 0) {
        uint64_t id = c->learners[0];
        ch[0] = (struct raft_conf_change){RAFT_CONF_REMOVE, id};
        rc = sim_change(s, leader, ch, 1, RAFT_TRANSITION_AUTO);
        if (rc == 0)
            s->nodes[id - 1].removing = true;
    }
    *changed = rc == 0 && op <= 5;
    return rc == -1 ? -1 : 0;
}

/* A membership fault. A third of the time a second change follows at once, computed from the
 * same committed configuration: raft must refuse it while the first is pending (two
 * overlapping single-server changes can produce disjoint majorities). */
static int sim_fault_member(struct sim *s)
{
    bool changed = false;
    if (sim_fault_member_once(s, &changed) != 0)
        return -1;
    if (changed && prng_below(&s->rng, 3) == 0) {
        sim_trace(s, "fault: a second membership change right behind the first");
        return sim_fault_member_once(s, &changed);
    }
    return 0;
}

static int sim_fault_transfer(struct sim *s)
{
    uint64_t leader = sim_leader(s);
    if (!leader)
        return 0;
    struct raft_status st;
    sim_status(s, leader, &st);
    if (st.config.voters_len < 2)
        return 0;
    uint64_t target = st.config.voters[prng_below(&s->rng, st.config.voters_len)];
    if (target == leader)
        return 0;
    return sim_transfer(s, leader, target) == -1 ? -1 : 0;
}

int sim_on_fault(struct sim *s, struct ev *e)
{
    if (s->healed || s->done)
        return 0;
    evq_push(&s->q, (struct ev){.at_us = s->now_us + sim_rand_between(s, 10000, 300000),
                                .kind = EV_FAULT});
    uint32_t kinds[16];
    int n = 0;
    for (int i = 0; i < 9; i++)
        if ((s->cfg.faults & (1u << i)) && (1u << i) != SIM_F_SNAPSHOT)
            kinds[n++] = 1u << i;
    if (n == 0)
        return 0;
    uint32_t kind = kinds[prng_below(&s->rng, (uint64_t)n)];
    switch (kind) {
    case SIM_F_PARTITION:
        sim_fault_partition(s);
        return 0;
    case SIM_F_CRASH:
        return sim_fault_crash(s);
    case SIM_F_MEMBER:
        return sim_fault_member(s);
    case SIM_F_TRANSFER:
        return sim_fault_transfer(s);
    default:
        sim_fault_net(s, kind);
        return 0;
    }
}

int sim_on_heal(struct sim *s, struct ev *e)
{
    sim_trace(s, "HEAL: every fault lifted; liveness bound %" PRIu64 " ms", s->cfg.liveness_ms);
    s->healed = true;
    s->heal_us = s->now_us;
    s->heal_cmd_min = s->next_cmd;
    sim_heal_network(s);
    for (int i = 0; i < s->nodes_len; i++)
        if (!s->nodes[i].up && !s->nodes[i].retired && s->nodes[i].started)
            sim_restart(s, s->nodes[i].id);
    return s->chk.violation[0] ? -1 : 0;
}

/* ---- Liveness -------------------------------------------------------------------------------- */

/* A leader exists, a write proposed after heal_cmd_min was acknowledged, and every running
 * member of the leader's configuration applied it. */
static bool sim_live(struct sim *s, uint64_t cmd_min, char *why, size_t why_len)
{
    uint64_t leader = sim_leader(s);
    if (!leader) {
        snprintf(why, why_len, "no leader");
        return false;
    }
    uint64_t index = 0;
    for (uint64_t c = cmd_min; c < s->next_cmd && c < s->cmd_cap; c++)
        if (s->cmd_index[c]) {
            index = s->cmd_index[c];
            break;
        }
    if (!index) {
        snprintf(why, why_len, "leader %" PRIu64 " but no write proposed since healing committed",
                 leader);
        return false;
    }
    struct raft_status st;
    sim_status(s, leader, &st);
    for (int i = 0; i < s->nodes_len; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->up && sim_conf_has(&st.config, n->id) && n->sm_index < index) {
            snprintf(why, why_len,
                     "leader %" PRIu64 ", write at %" PRIu64 " committed, node %" PRIu64
                     " applied only %" PRIu64,
                     leader, index, n->id, n->sm_index);
            return false;
        }
    }
    return true;
}

struct sim_settle_arg {
    uint64_t cmd_min;
    uint64_t next_probe_us;
    char why[200];
};

static bool sim_settled(struct sim *s, void *arg)
{
    struct sim_settle_arg *a = arg;
    if (s->now_us >= a->next_probe_us) {
        /* The client keeps writing to whoever leads, as a real client would retry. */
        a->next_probe_us = s->now_us + 20000;
        uint64_t leader = sim_leader(s);
        if (leader && !s->cfg.workload)
            sim_propose(s, leader, NULL);
    }
    return sim_live(s, a->cmd_min, a->why, sizeof(a->why));
}

int sim_settle(struct sim *s, uint64_t max_ms)
{
    struct sim_settle_arg a = {.cmd_min = s->next_cmd, .next_probe_us = 0};
    int rc = sim_run_until(s, sim_settled, &a, max_ms);
    if (rc == BATON_ETIMEOUT)
        sim_trace(s, "settle: not live after %" PRIu64 " ms: %s", max_ms, a.why);
    return rc;
}

int sim_run(struct sim *s)
{
    s->cfg.workload = true;
    s->snapshots = (s->cfg.faults & SIM_F_SNAPSHOT) != 0;
    if (s->snapshots)
        for (int i = 0; i < s->nodes_len; i++)
            s->nodes[i].compact_every = 8 + prng_below(&s->rng, 40);
    else
        for (int i = 0; i < s->nodes_len; i++)
            s->nodes[i].compact_every = 2000; /* rare: bounded memory on long runs */
    evq_push(&s->q, (struct ev){.at_us = s->now_us + 1000, .kind = EV_CLIENT});
    evq_push(&s->q,
             (struct ev){.at_us = s->now_us + sim_rand_between(s, 1000, 200000), .kind = EV_FAULT});
    evq_push(&s->q, (struct ev){.at_us = s->now_us + s->cfg.fault_ms * 1000, .kind = EV_HEAL});
    while (!s->healed) {
        if (s->chk.violation[0] || sim_step(s) != 0)
            return -1;
        if (s->cfg.max_steps && s->st.steps >= s->cfg.max_steps && !s->healed &&
            sim_on_heal(s, NULL) != 0)
            return -1;
    }
    struct sim_settle_arg a = {.cmd_min = s->heal_cmd_min, .next_probe_us = UINT64_MAX};
    int rc = sim_run_until(s, sim_settled, &a, s->cfg.liveness_ms);
    s->done = true;
    if (rc == BATON_ETIMEOUT)
        return chk_fail(&s->chk, "liveness: %" PRIu64 " ms after every fault healed: %s",
                        s->cfg.liveness_ms, a.why);
    return rc;
}
