/*
 * raft/codec: the compact binary encoding of raft messages and configurations, used by the
 * peer transport and for RAFT_ENTRY_CONFIG payloads. Not protobuf: raft includes only base.
 *
 * Message layout (version 1):
 *   u8 version(=1) u8 type u8 flags(bit0 reject, bit1 transfer, bit2 last, bit3 config)
 *   varint from to term index log_term commit hint_index hint_term context offset
 *   varint entries_len, then per entry: varint term, u8 type, varint len, len bytes
 *     (entry i has index = index + 1 + i: appends carry consecutive entries after index)
 *   varint data_len, data_len bytes
 *   [config] when flag bit3
 * Configuration layout: varint n, n ids (voters); the same for voters_old and learners; u8
 * auto_leave. Every count and length is checked against what is left and against the bounds in
 * raft.h before anything is allocated.
 */
#include "raft/raft_int.h"

#include <string.h>

#define MSG_VERSION     1
#define FLAG_REJECT     0x01
#define FLAG_TRANSFER   0x02
#define FLAG_LAST       0x04
#define FLAG_CONFIG     0x08
#define FLAGS_KNOWN     0x0f
#define MSG_TYPE_LAST   RAFT_MSG_READ_INDEX_RESP
#define ENTRY_TYPE_LAST RAFT_ENTRY_CONFIG

static bool ids_contain(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

bool raft_config_is_voter(const struct raft_config *c, uint64_t id)
{
    return ids_contain(c->voters, c->voters_len, id) ||
           ids_contain(c->voters_old, c->voters_old_len, id);
}

bool raft_config_is_learner(const struct raft_config *c, uint64_t id)
{
    return ids_contain(c->learners, c->learners_len, id);
}

static bool ids_valid(const uint64_t *ids, uint32_t n)
{
    if (n > RAFT_CONFIG_MAX)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        if (ids[i] == RAFT_NONE || ids_contain(ids, i, ids[i]))
            return false;
    }
    return true;
}

bool raft_config_valid(const struct raft_config *c)
{
    if (!ids_valid(c->voters, c->voters_len) || !ids_valid(c->voters_old, c->voters_old_len) ||
        !ids_valid(c->learners, c->learners_len))
        return false;
    for (uint32_t i = 0; i < c->learners_len; i++)
        if (raft_config_is_voter(c, c->learners[i]))
            return false;
    /* Raft tracks at most RAFT_PEERS_MAX distinct members. */
    uint32_t n = c->voters_len + c->learners_len;
    for (uint32_t i = 0; i < c->voters_old_len; i++)
        if (!ids_contain(c->voters, c->voters_len, c->voters_old[i]))
            n++;
    return n <= RAFT_PEERS_MAX;
}

static int put_ids(struct buf *b, const uint64_t *ids, uint32_t n)
{
    int rc = buf_append_varint(b, n);
    for (uint32_t i = 0; i < n && rc == 0; i++)
        rc = buf_append_varint(b, ids[i]);
    return rc;
}

int raft_config_encode(const struct raft_config *c, struct buf *b)
{
    BATON_ASSERT(raft_config_valid(c));
    int rc = put_ids(b, c->voters, c->voters_len);
    if (rc == 0)
        rc = put_ids(b, c->voters_old, c->voters_old_len);
    if (rc == 0)
        rc = put_ids(b, c->learners, c->learners_len);
    if (rc == 0) {
        uint8_t al = c->auto_leave ? 1 : 0;
        rc = buf_append(b, &al, 1);
    }
    return rc;
}

/* A bounds-checked reader over [p, end). Any failure sets bad and yields zeros. */
struct reader {
    const uint8_t *p;
    const uint8_t *end;
    bool bad;
};

static uint64_t rd_varint(struct reader *r)
{
    uint64_t v = 0;
    size_t n = r->bad ? 0 : varint_get(r->p, (size_t)(r->end - r->p), &v);
    if (n == 0) {
        r->bad = true;
        return 0;
    }
    r->p += n;
    return v;
}

static uint8_t rd_u8(struct reader *r)
{
    if (r->bad || r->p == r->end) {
        r->bad = true;
        return 0;
    }
    return *r->p++;
}

static const uint8_t *rd_bytes(struct reader *r, uint64_t n)
{
    if (r->bad || n > (uint64_t)(r->end - r->p)) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}

static void rd_ids(struct reader *r, uint64_t *ids, uint32_t *n_out)
{
    uint64_t n = rd_varint(r);
    if (n > RAFT_CONFIG_MAX) {
        r->bad = true;
        n = 0;
    }
    for (uint64_t i = 0; i < n; i++)
        ids[i] = rd_varint(r);
    *n_out = r->bad ? 0 : (uint32_t)n;
}

static void rd_config(struct reader *r, struct raft_config *c)
{
    memset(c, 0, sizeof(*c));
    rd_ids(r, c->voters, &c->voters_len);
    rd_ids(r, c->voters_old, &c->voters_old_len);
    rd_ids(r, c->learners, &c->learners_len);
    uint8_t al = rd_u8(r);
    if (al > 1)
        r->bad = true;
    c->auto_leave = al == 1;
    if (!r->bad && !raft_config_valid(c))
        r->bad = true;
}

int raft_config_decode(const uint8_t *p, size_t len, struct raft_config *c)
{
    struct reader r = {.p = p, .end = p + len};
    struct raft_config tmp;
    rd_config(&r, &tmp);
    if (r.bad || r.p != r.end)
        return BATON_EPROTO;
    *c = tmp;
    return 0;
}

int raft_msg_encode(const struct raft_msg *m, struct buf *b)
{
    uint8_t flags = (m->reject ? FLAG_REJECT : 0) | (m->transfer ? FLAG_TRANSFER : 0) |
                    (m->last ? FLAG_LAST : 0) | (m->config ? FLAG_CONFIG : 0);
    uint8_t head[3] = {MSG_VERSION, m->type, flags};
    uint64_t v[] = {m->from,       m->to,        m->term,    m->index,  m->log_term,   m->commit,
                    m->hint_index, m->hint_term, m->context, m->offset, m->entries_len};
    int rc = buf_append(b, head, sizeof(head));
    for (size_t i = 0; i < BATON_ARRAY_LEN(v) && rc == 0; i++)
        rc = buf_append_varint(b, v[i]);
    for (uint32_t i = 0; i < m->entries_len && rc == 0; i++) {
        const struct raft_entry *e = &m->entries[i];
        BATON_ASSERT(e->index == m->index + 1 + i);
        rc = buf_append_varint(b, e->term);
        if (rc == 0)
            rc = buf_append(b, &e->type, 1);
        if (rc == 0)
            rc = buf_append_varint(b, e->len);
        if (rc == 0)
            rc = buf_append(b, e->data, e->len);
    }
    if (rc == 0)
        rc = buf_append_varint(b, m->data_len);
    if (rc == 0)
        rc = buf_append(b, m->data, m->data_len);
    if (rc == 0 && m->config)
        rc = raft_config_encode(m->config, b);
    return rc;
}

static void rd_entries(struct reader *r, struct raft_msg *m, struct arena *a, int *rc)
{
    uint64_t n = rd_varint(r);
    /* Each entry takes at least three bytes: check before allocating. */
    if (r->bad || n > RAFT_MSG_ENTRIES_MAX || n > (uint64_t)(r->end - r->p) / 3 ||
        m->index > UINT64_MAX - n - 1) {
        r->bad = true;
        return;
    }
    if (n == 0)
        return;
    struct raft_entry *es = arena_alloc(a, (size_t)n * sizeof(*es));
    if (!es) {
        *rc = BATON_ENOMEM;
        return;
    }
    uint64_t prev_term = 0;
    for (uint64_t i = 0; i < n && !r->bad; i++) {
        struct raft_entry *e = &es[i];
        e->index = m->index + 1 + i;
        e->term = rd_varint(r);
        e->type = rd_u8(r);
        uint64_t len = rd_varint(r);
        /* Terms never decrease along a log, and no entry is newer than its message. */
        if (e->type > ENTRY_TYPE_LAST || len > RAFT_ENTRY_BYTES_MAX || e->term < prev_term ||
            e->term > m->term || e->term == 0)
            r->bad = true;
        e->len = (uint32_t)len;
        e->data = rd_bytes(r, len);
        prev_term = e->term;
    }
    m->entries = es;
    m->entries_len = (uint32_t)n;
}

int raft_msg_decode(const uint8_t *p, size_t len, struct raft_msg *out, struct arena *a)
{
    struct reader r = {.p = p, .end = p + len};
    struct raft_msg m;
    memset(&m, 0, sizeof(m));
    int rc = 0;
    uint8_t version = rd_u8(&r);
    m.type = rd_u8(&r);
    uint8_t flags = rd_u8(&r);
    if (version != MSG_VERSION || m.type < RAFT_MSG_APPEND || m.type > MSG_TYPE_LAST ||
        (flags & ~FLAGS_KNOWN))
        return BATON_EPROTO;
    m.reject = flags & FLAG_REJECT;
    m.transfer = flags & FLAG_TRANSFER;
    m.last = flags & FLAG_LAST;
    uint64_t *v[] = {&m.from,   &m.to,         &m.term,      &m.index,   &m.log_term,
                     &m.commit, &m.hint_index, &m.hint_term, &m.context, &m.offset};
    for (size_t i = 0; i < BATON_ARRAY_LEN(v); i++)
        *v[i] = rd_varint(&r);
    if (r.bad || m.from == RAFT_NONE || m.to == RAFT_NONE)
        return BATON_EPROTO;
    rd_entries(&r, &m, a, &rc);
    if (rc)
        return rc;
    uint64_t dl = rd_varint(&r);
    if (dl > RAFT_CHUNK_BYTES_MAX)
        r.bad = true;
    m.data_len = (uint32_t)dl;
    m.data = rd_bytes(&r, dl);
    if (dl == 0)
        m.data = NULL;
    if (flags & FLAG_CONFIG) {
        struct raft_config *c = arena_alloc(a, sizeof(*c));
        if (!c)
            return BATON_ENOMEM;
        rd_config(&r, c);
        m.config = c;
    }
    if (r.bad || r.p != r.end)
        return BATON_EPROTO;
    if (m.entries_len > 0 && m.type != RAFT_MSG_APPEND)
        return BATON_EPROTO;
    *out = m;
    return 0;
}

const char *raft_msg_type_name(uint8_t type)
{
    static const char *const names[] = {
        [RAFT_MSG_APPEND] = "append",
        [RAFT_MSG_APPEND_RESP] = "append-resp",
        [RAFT_MSG_VOTE] = "vote",
        [RAFT_MSG_VOTE_RESP] = "vote-resp",
        [RAFT_MSG_PREVOTE] = "prevote",
        [RAFT_MSG_PREVOTE_RESP] = "prevote-resp",
        [RAFT_MSG_HEARTBEAT] = "heartbeat",
        [RAFT_MSG_HEARTBEAT_RESP] = "heartbeat-resp",
        [RAFT_MSG_SNAPSHOT] = "snapshot",
        [RAFT_MSG_SNAPSHOT_RESP] = "snapshot-resp",
        [RAFT_MSG_TIMEOUT_NOW] = "timeout-now",
        [RAFT_MSG_READ_INDEX] = "read-index",
        [RAFT_MSG_READ_INDEX_RESP] = "read-index-resp",
    };
    if (type < BATON_ARRAY_LEN(names) && names[type])
        return names[type];
    return "unknown";
}
