/* raft: the consensus state machine (skeleton; the implementation lands in the next commits). */
#include "raft/raft.h"

#include <stdlib.h>
#include <string.h>

struct raft {
    struct raft_options o;
};

void raft_options_default(struct raft_options *o)
{
    if (!o->election_ticks)
        o->election_ticks = 10;
    if (!o->heartbeat_ticks)
        o->heartbeat_ticks = 1;
}

int raft_create(const struct raft_options *o, struct raft **out)
{
    struct raft *r = calloc(1, sizeof(*r));
    if (!r)
        return BATON_ENOMEM;
    r->o = *o;
    *out = r;
    return 0;
}

void raft_destroy(struct raft *r)
{
    free(r);
}

int raft_bootstrap(struct raft *r, const struct raft_config *conf)
{
    (void)r, (void)conf;
    return BATON_EINVAL;
}

int raft_restore(struct raft *r, const struct raft_hard_state *hs,
                 const struct raft_snapshot_meta *snap, const struct raft_entry *entries,
                 size_t entries_len)
{
    (void)r, (void)hs, (void)snap, (void)entries, (void)entries_len;
    return BATON_EINVAL;
}

int raft_step(struct raft *r, const struct raft_msg *m)
{
    (void)r, (void)m;
    return 0;
}

void raft_tick(struct raft *r)
{
    (void)r;
}

int raft_propose(struct raft *r, const void *data, size_t len, uint64_t *index_out)
{
    (void)r, (void)data, (void)len, (void)index_out;
    return BATON_ENOTLEADER;
}

int raft_read_index(struct raft *r, uint64_t context)
{
    (void)r, (void)context;
    return BATON_ENOTLEADER;
}

int raft_transfer_leader(struct raft *r, uint64_t target)
{
    (void)r, (void)target;
    return BATON_ENOTLEADER;
}

int raft_change_config(struct raft *r, const struct raft_conf_change *changes, size_t n,
                       enum raft_conf_transition t, uint64_t *index_out)
{
    (void)r, (void)changes, (void)n, (void)t, (void)index_out;
    return BATON_ENOTLEADER;
}

void raft_peer_down(struct raft *r, uint64_t peer)
{
    (void)r, (void)peer;
}

void raft_report_unreachable(struct raft *r, uint64_t peer)
{
    (void)r, (void)peer;
}

int raft_compact(struct raft *r, uint64_t index)
{
    (void)r, (void)index;
    return BATON_EINVAL;
}

int raft_snapshot_chunk(struct raft *r, uint64_t peer, uint64_t index, uint64_t offset,
                        const void *data, size_t len, bool last)
{
    (void)r, (void)peer, (void)index, (void)offset, (void)data, (void)len, (void)last;
    return 0;
}

bool raft_has_ready(const struct raft *r)
{
    (void)r;
    return false;
}

void raft_ready(struct raft *r, struct raft_ready *rd)
{
    (void)r;
    memset(rd, 0, sizeof(*rd));
}

void raft_advance(struct raft *r, const struct raft_ready *rd)
{
    (void)r, (void)rd;
}

void raft_persisted(struct raft *r)
{
    (void)r;
}

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

const char *raft_msg_type_name(uint8_t type)
{
    (void)type;
    return "unknown";
}

bool raft_config_is_voter(const struct raft_config *c, uint64_t id)
{
    (void)c, (void)id;
    return false;
}

bool raft_config_is_learner(const struct raft_config *c, uint64_t id)
{
    (void)c, (void)id;
    return false;
}

void raft_status(const struct raft *r, struct raft_status *s)
{
    memset(s, 0, sizeof(*s));
    s->id = r->o.id;
}

int raft_progress(const struct raft *r, uint64_t peer, struct raft_progress_info *p)
{
    (void)r, (void)peer, (void)p;
    return BATON_ENOTLEADER;
}

int raft_term_at(const struct raft *r, uint64_t index, uint64_t *term)
{
    (void)r, (void)index, (void)term;
    return BATON_ENOTFOUND;
}
