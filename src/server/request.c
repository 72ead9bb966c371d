/* The proposal codec (see request.h). */
#include "server/request.h"

#include <string.h>

#define REQ_MAGIC   0xBA
#define REQ_VERSION 1

/* ---- Encoding -------------------------------------------------------------------------------- */

static int put_u(struct buf *b, uint64_t v)
{
    return buf_append_varint(b, v);
}

/* Signed values travel zigzag-encoded so small negatives stay short. */
static int put_i(struct buf *b, int64_t v)
{
    return buf_append_varint(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static int put_bytes(struct buf *b, struct mvcc_bytes x)
{
    int rc = put_u(b, x.len);
    return rc ? rc : buf_append(b, x.p, x.len);
}

static int put_flags(struct buf *b, bool f0, bool f1, bool f2, bool f3)
{
    return put_u(b, (uint64_t)f0 | (uint64_t)f1 << 1 | (uint64_t)f2 << 2 | (uint64_t)f3 << 3);
}

static int enc_range(struct buf *b, const struct mvcc_range_req *r)
{
    int rc = put_bytes(b, r->key);
    rc = rc ? rc : put_bytes(b, r->range_end);
    rc = rc ? rc : put_i(b, r->limit);
    rc = rc ? rc : put_i(b, r->revision);
    rc = rc ? rc : put_u(b, r->sort_order);
    rc = rc ? rc : put_u(b, r->sort_target);
    rc = rc ? rc : put_flags(b, r->keys_only, r->count_only, false, false);
    rc = rc ? rc : put_i(b, r->min_mod_revision);
    rc = rc ? rc : put_i(b, r->max_mod_revision);
    rc = rc ? rc : put_i(b, r->min_create_revision);
    return rc ? rc : put_i(b, r->max_create_revision);
}

static int enc_put(struct buf *b, const struct mvcc_put_req *r)
{
    int rc = put_bytes(b, r->key);
    rc = rc ? rc : put_bytes(b, r->value);
    rc = rc ? rc : put_i(b, r->lease);
    return rc ? rc : put_flags(b, r->prev_kv, r->ignore_value, r->ignore_lease, false);
}

static int enc_delete(struct buf *b, const struct mvcc_delete_req *r)
{
    int rc = put_bytes(b, r->key);
    rc = rc ? rc : put_bytes(b, r->range_end);
    return rc ? rc : put_flags(b, r->prev_kv, false, false, false);
}

static int enc_txn(struct buf *b, const struct mvcc_txn_req *t, int depth);

static int enc_ops(struct buf *b, const struct mvcc_op *ops, size_t n, int depth)
{
    int rc = put_u(b, n);
    for (size_t i = 0; i < n && !rc; i++) {
        rc = put_u(b, ops[i].type);
        if (rc)
            break;
        switch (ops[i].type) {
        case MVCC_OP_RANGE:
            rc = enc_range(b, &ops[i].u.range);
            break;
        case MVCC_OP_PUT:
            rc = enc_put(b, &ops[i].u.put);
            break;
        case MVCC_OP_DELETE:
            rc = enc_delete(b, &ops[i].u.del);
            break;
        case MVCC_OP_TXN:
            rc = enc_txn(b, ops[i].u.txn, depth + 1);
            break;
        default:
            rc = BATON_EINVAL;
        }
    }
    return rc;
}

static int enc_txn(struct buf *b, const struct mvcc_txn_req *t, int depth)
{
    if (depth >= REQ_TXN_DEPTH_MAX)
        return BATON_EINVAL;
    int rc = put_u(b, t->compare_len);
    for (size_t i = 0; i < t->compare_len && !rc; i++) {
        const struct mvcc_compare *c = &t->compare[i];
        rc = put_u(b, c->result);
        rc = rc ? rc : put_u(b, c->target);
        rc = rc ? rc : put_bytes(b, c->key);
        rc = rc ? rc : put_bytes(b, c->range_end);
        rc = rc ? rc : put_i(b, c->number);
        rc = rc ? rc : put_bytes(b, c->value);
    }
    rc = rc ? rc : enc_ops(b, t->success, t->success_len, depth);
    return rc ? rc : enc_ops(b, t->failure, t->failure_len, depth);
}

int request_encode(const struct request *r, struct buf *b)
{
    size_t mark = b->len;
    uint8_t hdr[2] = {REQ_MAGIC, REQ_VERSION};
    int rc = buf_append(b, hdr, 2);
    rc = rc ? rc : put_u(b, r->id);
    rc = rc ? rc : put_u(b, r->type);
    if (rc)
        goto out;
    switch (r->type) {
    case REQ_PUT:
        rc = enc_put(b, &r->u.put);
        break;
    case REQ_DELETE:
        rc = enc_delete(b, &r->u.del);
        break;
    case REQ_TXN:
        rc = enc_txn(b, &r->u.txn, 0);
        break;
    case REQ_COMPACT:
        rc = put_i(b, r->u.compact.revision);
        rc = rc ? rc : put_flags(b, r->u.compact.physical, false, false, false);
        break;
    case REQ_LEASE_GRANT:
        rc = put_i(b, r->u.lease_grant.id);
        rc = rc ? rc : put_i(b, r->u.lease_grant.ttl_s);
        break;
    case REQ_LEASE_REVOKE:
        rc = put_i(b, r->u.lease_revoke);
        break;
    case REQ_ALARM:
        rc = put_u(b, r->u.alarm.action);
        rc = rc ? rc : put_u(b, r->u.alarm.type);
        rc = rc ? rc : put_u(b, r->u.alarm.member_id);
        break;
    case REQ_MEMBER_ATTR: {
        const struct req_member_attr *m = &r->u.member_attr;
        if (m->client_urls_len > REQ_PEER_URLS_MAX || m->peer_urls_len > REQ_PEER_URLS_MAX) {
            rc = BATON_EINVAL;
            break;
        }
        rc = put_u(b, m->member_id);
        rc = rc ? rc : put_bytes(b, m->name);
        rc = rc ? rc : put_u(b, m->peer_urls_len);
        for (uint32_t i = 0; i < m->peer_urls_len && !rc; i++)
            rc = put_bytes(b, m->peer_urls[i]);
        rc = rc ? rc : put_u(b, m->client_urls_len);
        for (uint32_t i = 0; i < m->client_urls_len && !rc; i++)
            rc = put_bytes(b, m->client_urls[i]);
        break;
    }
    default:
        rc = BATON_EINVAL;
    }
out:
    if (rc)
        b->len = mark;
    return rc;
}

/* ---- Decoding -------------------------------------------------------------------------------- */

struct rd {
    const uint8_t *p;
    size_t len;
    size_t off;
    bool bad;
    struct arena *a;
    bool oom;
};

static uint64_t get_u(struct rd *r)
{
    uint64_t v = 0;
    if (r->bad)
        return 0;
    size_t n = varint_get(r->p + r->off, r->len - r->off, &v);
    if (n == 0) {
        r->bad = true;
        return 0;
    }
    r->off += n;
    return v;
}

static int64_t get_i(struct rd *r)
{
    uint64_t v = get_u(r);
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* An enum value no larger than max. */
static uint32_t get_enum(struct rd *r, uint32_t max)
{
    uint64_t v = get_u(r);
    if (v > max)
        r->bad = true;
    return r->bad ? 0 : (uint32_t)v;
}

static struct mvcc_bytes get_bytes(struct rd *r)
{
    struct mvcc_bytes x = {0};
    uint64_t n = get_u(r);
    if (r->bad || n > r->len - r->off) {
        r->bad = true;
        return x;
    }
    x.p = r->p + r->off;
    x.len = (size_t)n;
    r->off += (size_t)n;
    return x;
}

static uint32_t get_flags(struct rd *r, uint32_t allowed_bits)
{
    uint64_t v = get_u(r);
    if (v >> allowed_bits)
        r->bad = true;
    return (uint32_t)v;
}

/* A count whose items each take at least min_item_bytes: bounded by what is left. */
static size_t get_count(struct rd *r, size_t min_item_bytes, size_t max)
{
    uint64_t n = get_u(r);
    if (r->bad || n > max || n > (r->len - r->off) / min_item_bytes) {
        r->bad = true;
        return 0;
    }
    return (size_t)n;
}

static void *rd_alloc(struct rd *r, size_t n, size_t size)
{
    if (r->bad || n == 0)
        return NULL;
    void *p = arena_alloc(r->a, n * size);
    if (!p)
        r->oom = r->bad = true;
    else
        memset(p, 0, n * size);
    return p;
}

static void dec_range(struct rd *r, struct mvcc_range_req *q)
{
    q->key = get_bytes(r);
    q->range_end = get_bytes(r);
    q->limit = get_i(r);
    q->revision = get_i(r);
    q->sort_order = get_enum(r, MVCC_SORT_DESCEND);
    q->sort_target = get_enum(r, MVCC_SORT_VALUE);
    uint32_t f = get_flags(r, 2);
    q->keys_only = f & 1;
    q->count_only = f & 2;
    q->min_mod_revision = get_i(r);
    q->max_mod_revision = get_i(r);
    q->min_create_revision = get_i(r);
    q->max_create_revision = get_i(r);
}

static void dec_put(struct rd *r, struct mvcc_put_req *q)
{
    q->key = get_bytes(r);
    q->value = get_bytes(r);
    q->lease = get_i(r);
    uint32_t f = get_flags(r, 3);
    q->prev_kv = f & 1;
    q->ignore_value = f & 2;
    q->ignore_lease = f & 4;
}

static void dec_delete(struct rd *r, struct mvcc_delete_req *q)
{
    q->key = get_bytes(r);
    q->range_end = get_bytes(r);
    q->prev_kv = get_flags(r, 1) & 1;
}

static void dec_txn(struct rd *r, struct mvcc_txn_req *t, int depth);

static const struct mvcc_op *dec_ops(struct rd *r, size_t *n_out, int depth)
{
    size_t n = get_count(r, 2, REQ_OPS_MAX);
    struct mvcc_op *ops = rd_alloc(r, n, sizeof(*ops));
    for (size_t i = 0; i < n && !r->bad; i++) {
        ops[i].type = get_enum(r, MVCC_OP_TXN);
        switch (ops[i].type) {
        case MVCC_OP_RANGE:
            dec_range(r, &ops[i].u.range);
            break;
        case MVCC_OP_PUT:
            dec_put(r, &ops[i].u.put);
            break;
        case MVCC_OP_DELETE:
            dec_delete(r, &ops[i].u.del);
            break;
        case MVCC_OP_TXN: {
            struct mvcc_txn_req *t = rd_alloc(r, 1, sizeof(*t));
            if (t)
                dec_txn(r, t, depth + 1);
            ops[i].u.txn = t;
            break;
        }
        default:
            r->bad = true;
        }
    }
    *n_out = r->bad ? 0 : n;
    return ops;
}

static void dec_txn(struct rd *r, struct mvcc_txn_req *t, int depth)
{
    if (depth >= REQ_TXN_DEPTH_MAX) {
        r->bad = true;
        return;
    }
    size_t n = get_count(r, 6, REQ_OPS_MAX);
    struct mvcc_compare *c = rd_alloc(r, n, sizeof(*c));
    for (size_t i = 0; i < n && !r->bad; i++) {
        c[i].result = get_enum(r, MVCC_CMP_NOT_EQUAL);
        c[i].target = get_enum(r, MVCC_CMP_LEASE);
        c[i].key = get_bytes(r);
        c[i].range_end = get_bytes(r);
        c[i].number = get_i(r);
        c[i].value = get_bytes(r);
    }
    t->compare = c;
    t->compare_len = r->bad ? 0 : n;
    t->success = dec_ops(r, &t->success_len, depth);
    t->failure = dec_ops(r, &t->failure_len, depth);
}

int request_decode(const uint8_t *p, size_t len, struct arena *a, struct request *q)
{
    memset(q, 0, sizeof(*q));
    if (len < 2 || p[0] != REQ_MAGIC || p[1] != REQ_VERSION)
        return BATON_EPROTO;
    struct rd r = {.p = p, .len = len, .off = 2, .a = a};
    q->id = get_u(&r);
    q->type = get_enum(&r, REQ_TYPE_MAX);
    switch (q->type) {
    case REQ_PUT:
        dec_put(&r, &q->u.put);
        break;
    case REQ_DELETE:
        dec_delete(&r, &q->u.del);
        break;
    case REQ_TXN:
        dec_txn(&r, &q->u.txn, 0);
        break;
    case REQ_COMPACT:
        q->u.compact.revision = get_i(&r);
        q->u.compact.physical = get_flags(&r, 1) & 1;
        break;
    case REQ_LEASE_GRANT:
        q->u.lease_grant.id = get_i(&r);
        q->u.lease_grant.ttl_s = get_i(&r);
        break;
    case REQ_LEASE_REVOKE:
        q->u.lease_revoke = get_i(&r);
        break;
    case REQ_ALARM:
        q->u.alarm.action = get_enum(&r, REQ_ALARM_DEACTIVATE);
        q->u.alarm.type = get_enum(&r, REQ_ALARM_CORRUPT);
        q->u.alarm.member_id = get_u(&r);
        break;
    case REQ_MEMBER_ATTR: {
        struct req_member_attr *m = &q->u.member_attr;
        m->member_id = get_u(&r);
        m->name = get_bytes(&r);
        m->peer_urls_len = (uint32_t)get_count(&r, 1, REQ_PEER_URLS_MAX);
        for (uint32_t i = 0; i < m->peer_urls_len && !r.bad; i++)
            m->peer_urls[i] = get_bytes(&r);
        m->client_urls_len = (uint32_t)get_count(&r, 1, REQ_PEER_URLS_MAX);
        for (uint32_t i = 0; i < m->client_urls_len && !r.bad; i++)
            m->client_urls[i] = get_bytes(&r);
        break;
    }
    default:
        r.bad = true;
    }
    if (!r.bad && r.off != len)
        r.bad = true; /* trailing bytes */
    if (r.oom)
        return BATON_ENOMEM;
    return r.bad ? BATON_EPROTO : 0;
}

const char *request_type_name(enum req_type t)
{
    static const char *const names[] = {
        [REQ_PUT] = "put",
        [REQ_DELETE] = "delete_range",
        [REQ_TXN] = "txn",
        [REQ_COMPACT] = "compact",
        [REQ_LEASE_GRANT] = "lease_grant",
        [REQ_LEASE_REVOKE] = "lease_revoke",
        [REQ_ALARM] = "alarm",
        [REQ_MEMBER_ATTR] = "member_attr",
    };
    return t >= 1 && t <= REQ_TYPE_MAX ? names[t] : "unknown";
}
