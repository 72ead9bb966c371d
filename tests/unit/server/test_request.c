/* The proposal codec: every request type round-trips; malformed payloads are refused. */
#include "server/request.h"
#include "test.h"

#include <string.h>

#define B(s) ((struct mvcc_bytes){(const uint8_t *)(s), sizeof(s) - 1})

static void check_bytes(struct mvcc_bytes a, struct mvcc_bytes b)
{
    CHECK_MEM(a.p, a.len, b.p, b.len);
}

static void roundtrip(const struct request *in, struct request *out, struct arena *a, struct buf *b)
{
    buf_clear(b);
    CHECK_OK(request_encode(in, b));
    CHECK_OK(request_decode(b->data, b->len, a, out));
    CHECK_EQ_U64(out->id, in->id);
    CHECK_EQ(out->type, in->type);
    /* Every strict prefix is refused, never read past. */
    struct request junk;
    for (size_t n = 0; n < b->len; n++)
        CHECK_EQ(request_decode(b->data, n, a, &junk), BATON_EPROTO);
}

TEST(put_delete_compact_lease_alarm_roundtrip)
{
    struct arena a;
    arena_init(&a, 4096);
    struct buf b = {0};
    struct request in = {.id = 0xabcdef0123ull, .type = REQ_PUT}, out;
    in.u.put = (struct mvcc_put_req){B("k"), B("v\0x"), -5, true, false, true};
    roundtrip(&in, &out, &a, &b);
    check_bytes(out.u.put.key, B("k"));
    check_bytes(out.u.put.value, B("v\0x"));
    CHECK_EQ(out.u.put.lease, -5);
    CHECK(out.u.put.prev_kv && !out.u.put.ignore_value && out.u.put.ignore_lease);

    in = (struct request){.id = 1, .type = REQ_DELETE};
    in.u.del = (struct mvcc_delete_req){B("a"), B("\0"), true};
    roundtrip(&in, &out, &a, &b);
    check_bytes(out.u.del.range_end, B("\0"));
    CHECK(out.u.del.prev_kv);

    in = (struct request){.id = 0, .type = REQ_COMPACT};
    in.u.compact.revision = INT64_MAX;
    in.u.compact.physical = true;
    roundtrip(&in, &out, &a, &b);
    CHECK_EQ(out.u.compact.revision, INT64_MAX);
    CHECK(out.u.compact.physical);

    in = (struct request){.id = 2, .type = REQ_LEASE_GRANT};
    in.u.lease_grant.id = 0x7fffffffffffffffll;
    in.u.lease_grant.ttl_s = 60;
    roundtrip(&in, &out, &a, &b);
    CHECK_EQ(out.u.lease_grant.id, 0x7fffffffffffffffll);
    CHECK_EQ(out.u.lease_grant.ttl_s, 60);

    in = (struct request){.id = 3, .type = REQ_ALARM};
    in.u.alarm.action = REQ_ALARM_ACTIVATE;
    in.u.alarm.type = REQ_ALARM_NOSPACE;
    in.u.alarm.member_id = UINT64_MAX;
    roundtrip(&in, &out, &a, &b);
    CHECK_EQ(out.u.alarm.action, REQ_ALARM_ACTIVATE);
    CHECK_EQ_U64(out.u.alarm.member_id, UINT64_MAX);

    in = (struct request){.id = 4, .type = REQ_MEMBER_ATTR};
    in.u.member_attr.member_id = 99;
    in.u.member_attr.name = B("n1");
    in.u.member_attr.client_urls[0] = B("http://127.0.0.1:2379");
    in.u.member_attr.client_urls_len = 1;
    roundtrip(&in, &out, &a, &b);
    check_bytes(out.u.member_attr.client_urls[0], B("http://127.0.0.1:2379"));
    buf_free(&b);
    arena_free(&a);
}

TEST(nested_txn_roundtrip_and_depth_bound)
{
    struct arena a;
    arena_init(&a, 4096);
    struct buf b = {0};
    struct mvcc_compare cmp[2] = {
        {MVCC_CMP_GREATER, MVCC_CMP_MOD, B("x"), B(""), 7, B("")},
        {MVCC_CMP_EQUAL, MVCC_CMP_VALUE, B("y"), B("z"), 0, B("val")},
    };
    struct mvcc_op inner_ops[1] = {{.type = MVCC_OP_PUT}};
    inner_ops[0].u.put = (struct mvcc_put_req){B("in"), B("1"), 0, false, false, false};
    struct mvcc_txn_req inner = {NULL, 0, inner_ops, 1, NULL, 0};
    struct mvcc_op ops[3] = {
        {.type = MVCC_OP_RANGE}, {.type = MVCC_OP_TXN}, {.type = MVCC_OP_DELETE}};
    ops[0].u.range = (struct mvcc_range_req){.key = B("r"),
                                             .range_end = B("s"),
                                             .limit = 3,
                                             .revision = -1,
                                             .sort_order = MVCC_SORT_DESCEND,
                                             .sort_target = MVCC_SORT_VALUE,
                                             .count_only = true,
                                             .max_create_revision = 9};
    ops[1].u.txn = &inner;
    ops[2].u.del = (struct mvcc_delete_req){B("d"), B(""), false};
    struct request in = {.id = 5, .type = REQ_TXN}, out;
    in.u.txn = (struct mvcc_txn_req){cmp, 2, ops, 2, ops + 2, 1};
    roundtrip(&in, &out, &a, &b);
    const struct mvcc_txn_req *t = &out.u.txn;
    CHECK_EQ(t->compare_len, 2);
    CHECK_EQ(t->compare[0].number, 7);
    check_bytes(t->compare[1].value, B("val"));
    CHECK_EQ(t->success_len, 2);
    CHECK_EQ(t->success[0].u.range.limit, 3);
    CHECK_EQ(t->success[0].u.range.revision, -1);
    CHECK(t->success[0].u.range.count_only && !t->success[0].u.range.keys_only);
    CHECK_EQ(t->success[0].u.range.max_create_revision, 9);
    CHECK_EQ(t->success[1].type, MVCC_OP_TXN);
    check_bytes(t->success[1].u.txn->success[0].u.put.key, B("in"));
    CHECK_EQ(t->failure_len, 1);
    check_bytes(t->failure[0].u.del.key, B("d"));

    /* A chain of txns deeper than the bound is refused by the encoder. */
    struct mvcc_txn_req chain[REQ_TXN_DEPTH_MAX + 1];
    struct mvcc_op chain_ops[REQ_TXN_DEPTH_MAX + 1];
    for (int i = 0; i <= REQ_TXN_DEPTH_MAX; i++) {
        chain_ops[i] = (struct mvcc_op){.type = MVCC_OP_TXN};
        chain_ops[i].u.txn = i < REQ_TXN_DEPTH_MAX ? &chain[i + 1] : NULL;
        chain[i] = (struct mvcc_txn_req){NULL, 0, &chain_ops[i], i < REQ_TXN_DEPTH_MAX, NULL, 0};
    }
    in.u.txn = chain[0];
    buf_clear(&b);
    CHECK_EQ(request_encode(&in, &b), BATON_EINVAL);
    CHECK_EQ(b.len, 0);
    buf_free(&b);
    arena_free(&a);
}

TEST(malformed_payloads_are_refused)
{
    struct arena a;
    arena_init(&a, 4096);
    struct request q;
    const uint8_t bad_magic[] = {0x00, 1, 0, 1};
    CHECK_EQ(request_decode(bad_magic, sizeof(bad_magic), &a, &q), BATON_EPROTO);
    const uint8_t bad_type[] = {0xBA, 1, 0, 99};
    CHECK_EQ(request_decode(bad_type, sizeof(bad_type), &a, &q), BATON_EPROTO);
    /* A byte string longer than the payload. */
    const uint8_t long_key[] = {0xBA, 1, 0, REQ_PUT, 0x7f, 'k'};
    CHECK_EQ(request_decode(long_key, sizeof(long_key), &a, &q), BATON_EPROTO);
    /* An op count far larger than the bytes could hold. */
    const uint8_t many_ops[] = {0xBA, 1, 0, REQ_TXN, 0, 0xff, 0xff, 0x03};
    CHECK_EQ(request_decode(many_ops, sizeof(many_ops), &a, &q), BATON_EPROTO);
    /* Unknown flag bits and trailing bytes. */
    const uint8_t flags[] = {0xBA, 1, 0, REQ_DELETE, 1, 'k', 0, 0x08};
    CHECK_EQ(request_decode(flags, sizeof(flags), &a, &q), BATON_EPROTO);
    const uint8_t trailing[] = {0xBA, 1, 0, REQ_LEASE_REVOKE, 2, 0};
    CHECK_EQ(request_decode(trailing, sizeof(trailing), &a, &q), BATON_EPROTO);
    const uint8_t ok[] = {0xBA, 1, 0, REQ_LEASE_REVOKE, 2};
    CHECK_OK(request_decode(ok, sizeof(ok), &a, &q));
    CHECK_EQ(q.u.lease_revoke, 1);
    arena_free(&a);
}
