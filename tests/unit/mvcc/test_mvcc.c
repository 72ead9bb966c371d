/* Unit tests for mvcc/: revisions, ranges, txns, compaction, leases, watch, hash, quota, defrag,
 * reopen. Expected values follow etcd 3.4's behaviour (see etcd_compare.py and etcd_sequence.txt
 * for the same sequences checked against a real etcd). */
#include "mvcc/mvcc.h"
#include "test.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define B(s) ((struct mvcc_bytes){(const uint8_t *)(s), strlen(s)})

static struct arena A;
static uint64_t g_index;

static struct mvcc_store *open_store_at(const char *path)
{
    struct mvcc_config cfg;
    mvcc_config_default(&cfg);
    cfg.path = path;
    cfg.quota_bytes = 64 << 20;
    struct mvcc_store *s = NULL;
    char err[256];
    int rc = mvcc_open(&cfg, &s, err, sizeof(err));
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "open: %s", err);
    g_index = mvcc_applied_index(s);
    arena_init(&A, 1 << 16);
    return s;
}

static char g_path[512];
static struct mvcc_store *open_store(void)
{
    snprintf(g_path, sizeof(g_path), "%s/db", test_tmpdir());
    return open_store_at(g_path);
}

static void begin(struct mvcc_store *s)
{
    CHECK_OK(mvcc_batch_begin(s, ++g_index, 1));
}

static int put(struct mvcc_store *s, const char *k, const char *v, int64_t lease)
{
    struct mvcc_put_req r = {.key = B(k), .value = B(v), .lease = lease};
    struct mvcc_put_resp resp;
    begin(s);
    int rc = mvcc_put(s, &r, &A, &resp);
    CHECK_OK(mvcc_batch_commit(s));
    return rc;
}

static int64_t del(struct mvcc_store *s, const char *k, const char *end)
{
    struct mvcc_delete_req r = {.key = B(k), .range_end = end ? B(end) : (struct mvcc_bytes){0}};
    struct mvcc_delete_resp resp;
    begin(s);
    CHECK_OK(mvcc_delete_range(s, &r, &A, &resp));
    CHECK_OK(mvcc_batch_commit(s));
    return resp.deleted;
}

/* Gets one key at rev; returns false when absent. */
static bool get(struct mvcc_store *s, const char *k, int64_t rev, struct mvcc_kv *out)
{
    struct mvcc_range_req r = {.key = B(k), .revision = rev};
    struct mvcc_range_resp resp;
    CHECK_OK(mvcc_range(s, &r, &A, &resp));
    if (resp.kvs_len == 0)
        return false;
    CHECK_EQ(resp.kvs_len, 1);
    *out = resp.kvs[0];
    return true;
}

static void check_kv(const struct mvcc_kv *kv, const char *k, const char *v, int64_t create,
                     int64_t mod, int64_t ver)
{
    CHECK_MEM(kv->key.p, kv->key.len, k, strlen(k));
    CHECK_MEM(kv->value.p, kv->value.len, v, strlen(v));
    CHECK_EQ(kv->create_revision, create);
    CHECK_EQ(kv->mod_revision, mod);
    CHECK_EQ(kv->version, ver);
}

TEST(revisions_versions_put_delete)
{
    struct mvcc_store *s = open_store();
    CHECK_EQ(mvcc_rev(s), 1);      /* as etcd: a fresh store is at 1 */
    CHECK_OK(put(s, "a", "1", 0)); /* rev 2 */
    CHECK_OK(put(s, "a", "2", 0)); /* rev 3 */
    CHECK_OK(put(s, "b", "x", 0)); /* rev 4 */
    struct mvcc_kv kv;
    CHECK(get(s, "a", 0, &kv));
    check_kv(&kv, "a", "2", 2, 3, 2);
    CHECK(get(s, "a", 2, &kv));
    check_kv(&kv, "a", "1", 2, 2, 1);
    CHECK_EQ(del(s, "a", NULL), 1); /* rev 5 */
    CHECK_EQ(mvcc_rev(s), 5);
    CHECK_EQ(del(s, "a", NULL), 0); /* missing: no revision */
    CHECK_EQ(mvcc_rev(s), 5);
    CHECK(!get(s, "a", 0, &kv));
    CHECK(get(s, "a", 3, &kv));
    CHECK_OK(put(s, "a", "3", 0)); /* rev 6: new generation */
    CHECK(get(s, "a", 0, &kv));
    check_kv(&kv, "a", "3", 6, 6, 1);
    /* The packed bytes are a valid KeyValue: field 1 first. */
    CHECK_EQ(kv.packed[0], 0x0a);
    CHECK_EQ(mvcc_key_count(s), 2);
    mvcc_close(s);
    arena_free(&A);
}

TEST(range_options)
{
    struct mvcc_store *s = open_store();
    const char *keys[] = {"k1", "k2", "k3", "k4", "k5"};
    const char *vals[] = {"e", "d", "c", "b", "a"};
    for (int i = 0; i < 5; i++)
        CHECK_OK(put(s, keys[i], vals[i], 0)); /* revs 2..6 */
    CHECK_OK(put(s, "k2", "dd", 0));           /* rev 6, k2 version 2 */
    struct mvcc_range_req r = {.key = B("k1"), .range_end = B("k4")};
    struct mvcc_range_resp resp;
    CHECK_OK(mvcc_range(s, &r, &A, &resp));
    CHECK_EQ(resp.count, 3);
    CHECK_EQ(resp.kvs_len, 3);
    CHECK_EQ(resp.header_revision, 7);
    CHECK(!resp.more);
    /* limit + more; count is the total. */
    r.limit = 2;
    CHECK_OK(mvcc_range(s, &r, &A, &resp));
    CHECK_EQ(resp.kvs_len, 2);
    CHECK_EQ(resp.count, 3);
    CHECK(resp.more);
    /* "\0" range_end: every key >= key. */
    struct mvcc_range_req all = {.key = B("k3"), .range_end = {(const uint8_t *)"", 1}};
    CHECK_OK(mvcc_range(s, &all, &A, &resp));
    CHECK_EQ(resp.count, 3);
    /* Prefix: [k, k+1). */
    struct mvcc_range_req pre = {.key = B("k"), .range_end = B("l")};
    CHECK_OK(mvcc_range(s, &pre, &A, &resp));
    CHECK_EQ(resp.count, 5);
    /* Sort by value ascending. */
    pre.sort_target = MVCC_SORT_VALUE;
    pre.sort_order = MVCC_SORT_ASCEND;
    CHECK_OK(mvcc_range(s, &pre, &A, &resp));
    CHECK_MEM(resp.kvs[0].key.p, resp.kvs[0].key.len, "k5", 2);
    CHECK_MEM(resp.kvs[4].key.p, resp.kvs[4].key.len, "k1", 2);
    /* Sort by key descending with limit. */
    pre.sort_target = MVCC_SORT_KEY;
    pre.sort_order = MVCC_SORT_DESCEND;
    pre.limit = 2;
    CHECK_OK(mvcc_range(s, &pre, &A, &resp));
    CHECK_EQ(resp.kvs_len, 2);
    CHECK(resp.more);
    CHECK_MEM(resp.kvs[0].key.p, resp.kvs[0].key.len, "k5", 2);
    CHECK_MEM(resp.kvs[1].key.p, resp.kvs[1].key.len, "k4", 2);
    /* Version target with order NONE sorts ascending; ties keep key order. */
    pre.limit = 0;
    pre.sort_target = MVCC_SORT_VERSION;
    pre.sort_order = MVCC_SORT_NONE;
    CHECK_OK(mvcc_range(s, &pre, &A, &resp));
    CHECK_MEM(resp.kvs[4].key.p, resp.kvs[4].key.len, "k2", 2);
    CHECK_MEM(resp.kvs[0].key.p, resp.kvs[0].key.len, "k1", 2);
    /* Mod and create revision sorting, descending. */
    pre.sort_target = MVCC_SORT_MOD;
    pre.sort_order = MVCC_SORT_DESCEND;
    CHECK_OK(mvcc_range(s, &pre, &A, &resp));
    CHECK_MEM(resp.kvs[0].key.p, resp.kvs[0].key.len, "k2", 2);
    pre.sort_target = MVCC_SORT_CREATE;
    CHECK_OK(mvcc_range(s, &pre, &A, &resp));
    CHECK_MEM(resp.kvs[0].key.p, resp.kvs[0].key.len, "k5", 2);
    /* keys_only strips values from the packed bytes too. */
    struct mvcc_range_req ko = {.key = B("k1"), .keys_only = true};
    CHECK_OK(mvcc_range(s, &ko, &A, &resp));
    CHECK_EQ(resp.kvs[0].value.len, 0);
    CHECK_EQ(resp.kvs[0].version, 1);
    /* count_only. */
    struct mvcc_range_req co = {.key = B("k"), .range_end = B("l"), .count_only = true};
    CHECK_OK(mvcc_range(s, &co, &A, &resp));
    CHECK_EQ(resp.count, 5);
    CHECK_EQ(resp.kvs_len, 0);
    /* Filters: min/max mod and create; count stays the total. */
    struct mvcc_range_req f = {.key = B("k"), .range_end = B("l"), .min_mod_revision = 5};
    CHECK_OK(mvcc_range(s, &f, &A, &resp));
    CHECK_EQ(resp.kvs_len, 3); /* k2@6, k4@4, k5@5 */
    CHECK_EQ(resp.count, 5);
    f.min_mod_revision = 0;
    f.max_create_revision = 3;
    CHECK_OK(mvcc_range(s, &f, &A, &resp));
    CHECK_EQ(resp.kvs_len, 2);
    f.max_create_revision = 0;
    f.min_create_revision = 4;
    f.max_mod_revision = 5;
    CHECK_OK(mvcc_range(s, &f, &A, &resp));
    CHECK_EQ(resp.kvs_len, 2); /* k3, k4 */
    /* Revision in the past, in the future. */
    struct mvcc_range_req old = {.key = B("k2"), .revision = 6};
    CHECK_OK(mvcc_range(s, &old, &A, &resp));
    CHECK_MEM(resp.kvs[0].value.p, resp.kvs[0].value.len, "d", 1);
    old.revision = 8;
    CHECK_EQ(mvcc_range(s, &old, &A, &resp), BATON_EFUTURE);
    struct mvcc_range_req empty = {0};
    CHECK_EQ(mvcc_range(s, &empty, &A, &resp), MVCC_EEMPTYKEY);
    mvcc_close(s);
    arena_free(&A);
}

TEST(put_flags_and_errors)
{
    struct mvcc_store *s = open_store();
    struct mvcc_put_resp resp;
    begin(s);
    struct mvcc_put_req r = {.key = B("a"), .ignore_value = true};
    CHECK_EQ(mvcc_put(s, &r, &A, &resp), MVCC_EKEYNOTFOUND);
    r = (struct mvcc_put_req){.key = B("a"), .value = B("v"), .ignore_value = true};
    CHECK_EQ(mvcc_put(s, &r, &A, &resp), MVCC_EVALUEPROVIDED);
    r = (struct mvcc_put_req){.key = B("a"), .lease = 5, .ignore_lease = true};
    CHECK_EQ(mvcc_put(s, &r, &A, &resp), MVCC_ELEASEPROVIDED);
    r = (struct mvcc_put_req){.key = B("a"), .lease = 77};
    CHECK_EQ(mvcc_put(s, &r, &A, &resp), MVCC_ELEASENOTFOUND);
    CHECK_EQ(mvcc_rev(s), 1);
    int64_t lid;
    CHECK_OK(mvcc_lease_grant(s, 77, 60, &lid, NULL));
    CHECK_OK(mvcc_put(s, &r, &A, &resp));
    r = (struct mvcc_put_req){
        .key = B("a"), .value = B("new"), .ignore_lease = true, .prev_kv = true};
    CHECK_OK(mvcc_put(s, &r, &A, &resp));
    CHECK(resp.prev_kv != NULL);
    CHECK_EQ(resp.prev_kv->lease, 77);
    CHECK_EQ(resp.header_revision, 3);
    r = (struct mvcc_put_req){.key = B("a"), .ignore_value = true};
    CHECK_OK(mvcc_put(s, &r, &A, &resp));
    CHECK_OK(mvcc_batch_commit(s));
    struct mvcc_kv kv;
    CHECK(get(s, "a", 0, &kv));
    check_kv(&kv, "a", "new", 2, 4, 3);
    CHECK_EQ(kv.lease, 0); /* the last put set neither ignore_lease nor a lease */
    /* Writes outside a batch are refused. */
    r = (struct mvcc_put_req){.key = B("b"), .value = B("v")};
    CHECK_EQ(mvcc_put(s, &r, &A, &resp), BATON_EINVAL);
    mvcc_close(s);
    arena_free(&A);
}

static struct mvcc_op op_put(const char *k, const char *v)
{
    struct mvcc_op o = {.type = MVCC_OP_PUT};
    o.u.put = (struct mvcc_put_req){.key = B(k), .value = B(v)};
    return o;
}
static struct mvcc_op op_get(const char *k)
{
    struct mvcc_op o = {.type = MVCC_OP_RANGE};
    o.u.range = (struct mvcc_range_req){.key = B(k)};
    return o;
}
static struct mvcc_op op_del(const char *k, const char *end)
{
    struct mvcc_op o = {.type = MVCC_OP_DELETE};
    o.u.del =
        (struct mvcc_delete_req){.key = B(k), .range_end = end ? B(end) : (struct mvcc_bytes){0}};
    return o;
}

TEST(txn_compares_and_revisions)
{
    struct mvcc_store *s = open_store();
    CHECK_OK(put(s, "a", "1", 0)); /* rev 2 */
    struct mvcc_compare c = {
        .result = MVCC_CMP_EQUAL, .target = MVCC_CMP_VALUE, .key = B("a"), .value = B("1")};
    struct mvcc_op succ[] = {op_put("a", "2"), op_put("b", "x"), op_get("a")};
    struct mvcc_op fail[] = {op_get("a")};
    struct mvcc_txn_req t = {&c, 1, succ, 3, fail, 1};
    struct mvcc_txn_resp resp;
    begin(s);
    CHECK_OK(mvcc_txn(s, &t, &A, &resp));
    CHECK_OK(mvcc_batch_commit(s));
    CHECK(resp.succeeded);
    CHECK_EQ(resp.header_revision, 3); /* one revision for the whole txn */
    CHECK_EQ(resp.responses_len, 3);
    /* The range inside sees the txn's own put. */
    CHECK_EQ(resp.responses[2].u.range.kvs_len, 1);
    CHECK_MEM(resp.responses[2].u.range.kvs[0].value.p, 1, "2", 1);
    struct mvcc_kv kv;
    CHECK(get(s, "b", 0, &kv));
    check_kv(&kv, "b", "x", 3, 3, 1);
    /* Same compare now fails: read-only failure branch, no revision. */
    begin(s);
    CHECK_OK(mvcc_txn(s, &t, &A, &resp));
    CHECK_OK(mvcc_batch_commit(s));
    CHECK(!resp.succeeded);
    CHECK_EQ(resp.header_revision, 3);
    CHECK_EQ(mvcc_rev(s), 3);
    /* Read-only txns run outside a batch; txns with writes (in any branch) need one. */
    CHECK_EQ(mvcc_txn(s, &t, &A, &resp), BATON_EINVAL);
    struct mvcc_txn_req ro = {&c, 1, fail, 1, fail, 1};
    CHECK_OK(mvcc_txn(s, &ro, &A, &resp));
    CHECK(!resp.succeeded);
    CHECK_MEM(resp.responses[0].u.range.kvs[0].value.p, 1, "2", 1);
    /* Compares on every target and result. */
    struct {
        enum mvcc_cmp_target target;
        enum mvcc_cmp_result result;
        int64_t n;
        const char *v;
        bool want;
    } cases[] = {
        {MVCC_CMP_VERSION, MVCC_CMP_EQUAL, 2, NULL, true},
        {MVCC_CMP_VERSION, MVCC_CMP_GREATER, 1, NULL, true},
        {MVCC_CMP_VERSION, MVCC_CMP_LESS, 2, NULL, false},
        {MVCC_CMP_VERSION, MVCC_CMP_NOT_EQUAL, 2, NULL, false},
        {MVCC_CMP_CREATE, MVCC_CMP_EQUAL, 2, NULL, true},
        {MVCC_CMP_MOD, MVCC_CMP_EQUAL, 3, NULL, true},
        {MVCC_CMP_MOD, MVCC_CMP_LESS, 4, NULL, true},
        {MVCC_CMP_LEASE, MVCC_CMP_EQUAL, 0, NULL, true},
        {MVCC_CMP_VALUE, MVCC_CMP_GREATER, 0, "1", true},
        {MVCC_CMP_VALUE, MVCC_CMP_LESS, 0, "3", true},
        {MVCC_CMP_VALUE, MVCC_CMP_NOT_EQUAL, 0, "2", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mvcc_compare cc = {.result = cases[i].result,
                                  .target = cases[i].target,
                                  .key = B("a"),
                                  .number = cases[i].n,
                                  .value = cases[i].v ? B(cases[i].v) : (struct mvcc_bytes){0}};
        struct mvcc_txn_req ct = {&cc, 1, NULL, 0, NULL, 0};
        CHECK_OK(mvcc_txn(s, &ct, &A, &resp));
        if (resp.succeeded != cases[i].want)
            test_fail(__FILE__, __LINE__, "compare case %zu: got %d", i, resp.succeeded);
    }
    /* Missing key: version 0 equal succeeds, value compare always fails. */
    struct mvcc_compare m = {.result = MVCC_CMP_EQUAL, .target = MVCC_CMP_VERSION, .key = B("zz")};
    struct mvcc_txn_req mt = {&m, 1, NULL, 0, NULL, 0};
    CHECK_OK(mvcc_txn(s, &mt, &A, &resp));
    CHECK(resp.succeeded);
    m.target = MVCC_CMP_VALUE;
    m.result = MVCC_CMP_NOT_EQUAL;
    CHECK_OK(mvcc_txn(s, &mt, &A, &resp));
    CHECK(!resp.succeeded);
    /* Compare over a range: every key must satisfy. */
    struct mvcc_compare rc = {.result = MVCC_CMP_GREATER,
                              .target = MVCC_CMP_CREATE,
                              .key = B("a"),
                              .range_end = B("c"),
                              .number = 0};
    struct mvcc_txn_req rt = {&rc, 1, NULL, 0, NULL, 0};
    CHECK_OK(mvcc_txn(s, &rt, &A, &resp));
    CHECK(resp.succeeded);
    rc.number = 2;
    CHECK_OK(mvcc_txn(s, &rt, &A, &resp));
    CHECK(!resp.succeeded); /* a was created at 1 */
    mvcc_close(s);
    arena_free(&A);
}

TEST(txn_nested_and_duplicates)
{
    struct mvcc_store *s = open_store();
    CHECK_OK(put(s, "a", "1", 0));
    struct mvcc_compare c = {
        .result = MVCC_CMP_EQUAL, .target = MVCC_CMP_VERSION, .key = B("a"), .number = 1};
    struct mvcc_op inner_s[] = {op_put("x", "1")};
    struct mvcc_op inner_f[] = {op_put("y", "1")};
    struct mvcc_compare ic = {
        .result = MVCC_CMP_EQUAL, .target = MVCC_CMP_VERSION, .key = B("a"), .number = 5};
    struct mvcc_txn_req inner = {&ic, 1, inner_s, 1, inner_f, 1};
    struct mvcc_op nested = {.type = MVCC_OP_TXN};
    nested.u.txn = &inner;
    struct mvcc_op outer_s[] = {op_put("a", "2"), nested, op_del("b", NULL)};
    struct mvcc_txn_req t = {&c, 1, outer_s, 3, NULL, 0};
    struct mvcc_txn_resp resp;
    begin(s);
    CHECK_OK(mvcc_txn(s, &t, &A, &resp));
    CHECK_OK(mvcc_batch_commit(s));
    CHECK(resp.succeeded);
    CHECK_EQ(resp.responses[1].type, MVCC_OP_TXN);
    CHECK(!resp.responses[1].u.txn->succeeded); /* inner compare: version 1 != 5 */
    CHECK_EQ(mvcc_rev(s), 3);
    struct mvcc_kv kv;
    CHECK(get(s, "y", 0, &kv));
    check_kv(&kv, "y", "1", 3, 3, 1);
    CHECK(!get(s, "x", 0, &kv));
    /* Duplicates. */
    struct mvcc_op d1[] = {op_put("k", "1"), op_put("k", "2")};
    struct mvcc_txn_req dt = {NULL, 0, d1, 2, NULL, 0};
    CHECK_EQ(mvcc_txn_check(&dt, 128), MVCC_EDUPKEY);
    struct mvcc_op d2[] = {op_del("a", "z"), op_put("k", "2")};
    dt.success = d2;
    CHECK_EQ(mvcc_txn_check(&dt, 128), MVCC_EDUPKEY);
    struct mvcc_op d3[] = {op_del("a", NULL), op_del("a", "z")};
    dt.success = d3;
    CHECK_OK(mvcc_txn_check(&dt, 128)); /* overlapping deletes are fine */
    /* Same key put in then and else of a nested txn is fine; with an outer put it is not. */
    struct mvcc_op ns[] = {op_put("k", "1")}, nf[] = {op_put("k", "2")};
    struct mvcc_txn_req nt = {NULL, 0, ns, 1, nf, 1};
    struct mvcc_op nop = {.type = MVCC_OP_TXN};
    nop.u.txn = &nt;
    struct mvcc_op d4[] = {nop};
    dt.success = d4;
    dt.success_len = 1;
    CHECK_OK(mvcc_txn_check(&dt, 128));
    struct mvcc_op d5[] = {nop, op_put("k", "3")};
    dt.success = d5;
    dt.success_len = 2;
    CHECK_EQ(mvcc_txn_check(&dt, 128), MVCC_EDUPKEY);
    CHECK_EQ(mvcc_txn_check(&dt, 1), MVCC_ETOOMANYOPS);
    begin(s);
    CHECK_EQ(mvcc_txn(s, &dt, &A, &resp), MVCC_EDUPKEY);
    CHECK_OK(mvcc_batch_commit(s));
    CHECK_EQ(mvcc_rev(s), 3);
    mvcc_close(s);
    arena_free(&A);
}

TEST(compaction_and_reopen)
{
    struct mvcc_store *s = open_store();
    for (int i = 0; i < 10; i++)
        CHECK_OK(put(s, "a", i % 2 ? "odd" : "even", 0)); /* revs 2..11 */
    CHECK_OK(put(s, "gone", "x", 0));                     /* 12 */
    CHECK_EQ(del(s, "gone", NULL), 1);                    /* 13 */
    CHECK_OK(put(s, "b", "b", 0));                        /* 14 */
    begin(s);
    CHECK_EQ(mvcc_compact(s, 15), BATON_EFUTURE);
    CHECK_OK(mvcc_compact(s, 13));
    CHECK_EQ(mvcc_compact(s, 13), BATON_ECOMPACTED);
    CHECK_OK(mvcc_batch_commit(s));
    struct mvcc_range_req r = {.key = B("a"), .revision = 12};
    struct mvcc_range_resp resp;
    CHECK_EQ(mvcc_range(s, &r, &A, &resp), BATON_ECOMPACTED);
    r.revision = 13;
    CHECK_OK(mvcc_range(s, &r, &A, &resp));
    CHECK_EQ(resp.kvs_len, 1);
    CHECK_EQ(resp.kvs[0].mod_revision, 11);
    CHECK_EQ(resp.kvs[0].version, 10); /* version survives compaction */
    CHECK_EQ(mvcc_key_count(s), 2);    /* "gone" left the index */
    uint32_t h1, h2;
    int64_t crev, hrev;
    CHECK_OK(mvcc_hash_kv(s, 0, &h1, &crev, &hrev));
    CHECK(mvcc_compact_pending(s));
    bool done = false;
    int steps = 0;
    while (!done) {
        CHECK_OK(mvcc_compact_step(s, 3, &done));
        steps++;
    }
    CHECK_GT(steps, 2);
    CHECK_OK(mvcc_hash_kv(s, 0, &h2, &crev, &hrev));
    CHECK_EQ_U64(h1, h2); /* hash does not depend on physical compaction progress */
    CHECK_EQ(crev, 13);
    CHECK_OK(put(s, "a", "after", 0)); /* 15 */
    struct mvcc_kv kv;
    CHECK(get(s, "a", 0, &kv));
    check_kv(&kv, "a", "after", 2, 15, 11);
    uint64_t idx = mvcc_applied_index(s);
    mvcc_close(s);
    arena_free(&A);
    s = open_store_at(g_path);
    CHECK_EQ(mvcc_applied_index(s), idx);
    CHECK_EQ(mvcc_rev(s), 15);
    CHECK_EQ(mvcc_compact_rev(s), 13);
    CHECK(!mvcc_compact_pending(s));
    CHECK(get(s, "a", 0, &kv));
    check_kv(&kv, "a", "after", 2, 15, 11);
    CHECK(get(s, "a", 13, &kv));
    CHECK_EQ(kv.mod_revision, 11);
    CHECK_EQ(mvcc_key_count(s), 2);
    mvcc_close(s);
    arena_free(&A);
}

TEST(compaction_resumes_after_reopen)
{
    struct mvcc_store *s = open_store();
    for (int i = 0; i < 50; i++)
        CHECK_OK(put(s, i % 2 ? "x" : "y", "v", 0));
    begin(s);
    CHECK_OK(mvcc_compact(s, 40));
    CHECK_OK(mvcc_batch_commit(s));
    bool done;
    CHECK_OK(mvcc_compact_step(s, 5, &done));
    CHECK(!done);
    uint32_t h1, h2;
    int64_t c, hr;
    CHECK_OK(mvcc_hash_kv(s, 0, &h1, &c, &hr));
    mvcc_close(s);
    arena_free(&A);
    s = open_store_at(g_path);
    CHECK(mvcc_compact_pending(s));
    CHECK_OK(mvcc_hash_kv(s, 0, &h2, &c, &hr));
    CHECK_EQ_U64(h1, h2);
    do
        CHECK_OK(mvcc_compact_step(s, 5, &done));
    while (!done);
    uint64_t used;
    CHECK_OK(mvcc_db_size(s, &used, NULL));
    CHECK_OK(mvcc_hash_kv(s, 0, &h2, &c, &hr));
    CHECK_EQ_U64(h1, h2);
    mvcc_close(s);
    arena_free(&A);
}

TEST(hash_equal_across_stores)
{
    char p1[512], p2[512];
    snprintf(p1, sizeof(p1), "%s/one", test_tmpdir());
    snprintf(p2, sizeof(p2), "%s/two", test_tmpdir());
    struct mvcc_store *s1 = open_store_at(p1);
    arena_free(&A);
    struct mvcc_store *s2 = open_store_at(p2);
    struct prng rng;
    prng_seed(&rng, 42);
    struct mvcc_store *ss[2] = {s1, s2};
    char k[16], v[16];
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof(k), "k%02d", (int)prng_below(&rng, 40));
        snprintf(v, sizeof(v), "v%d", i);
        bool d = prng_chance(&rng, 200000);
        for (int j = 0; j < 2; j++) {
            CHECK_OK(mvcc_batch_begin(ss[j], (uint64_t)i + 1, 1));
            if (d) {
                struct mvcc_delete_req r = {.key = B(k)};
                struct mvcc_delete_resp resp;
                CHECK_OK(mvcc_delete_range(ss[j], &r, &A, &resp));
            } else {
                struct mvcc_put_req r = {.key = B(k), .value = B(v)};
                struct mvcc_put_resp resp;
                CHECK_OK(mvcc_put(ss[j], &r, &A, &resp));
            }
            if (i == 200)
                CHECK_OK(mvcc_compact(ss[j], 150));
            CHECK_OK(mvcc_batch_commit(ss[j]));
        }
    }
    bool done;
    do /* only s1 finishes its physical compaction */
        CHECK_OK(mvcc_compact_step(s1, 7, &done));
    while (!done);
    uint32_t h1, h2;
    int64_t c1, c2, r1, r2;
    CHECK_OK(mvcc_hash_kv(s1, 0, &h1, &c1, &r1));
    CHECK_OK(mvcc_hash_kv(s2, 0, &h2, &c2, &r2));
    CHECK_EQ_U64(h1, h2);
    CHECK_EQ(r1, r2);
    CHECK_OK(mvcc_hash_kv(s1, 250, &h1, &c1, &r1));
    CHECK_OK(mvcc_hash_kv(s2, 250, &h2, &c2, &r2));
    CHECK_EQ_U64(h1, h2);
    CHECK_EQ(mvcc_hash_kv(s1, 100, &h1, &c1, &r1), BATON_ECOMPACTED);
    /* A different history hashes differently. */
    g_index = 1000;
    CHECK_OK(put(s2, "extra", "x", 0));
    CHECK_OK(mvcc_hash_kv(s2, 0, &h2, &c2, &r2));
    CHECK_OK(mvcc_hash_kv(s1, 0, &h1, &c1, &r1));
    CHECK_NE(h1, h2);
    (void)g_index;
    mvcc_close(s1);
    mvcc_close(s2);
    arena_free(&A);
}

TEST(leases_grant_revoke_ttl)
{
    struct mvcc_store *s = open_store();
    int64_t id1, id2, id3;
    begin(s);
    CHECK_OK(mvcc_lease_grant(s, 0, 10, &id1, NULL));
    CHECK_OK(mvcc_lease_grant(s, 0, 20, &id2, NULL));
    CHECK_NE(id1, id2);
    CHECK_GT(id1, 0);
    CHECK_EQ(mvcc_lease_grant(s, id1, 5, &id3, NULL), MVCC_ELEASEEXISTS);
    CHECK_EQ(mvcc_lease_grant(s, 0, MVCC_MAX_LEASE_TTL + 1, &id3, NULL), MVCC_ELEASETTLTOOLARGE);
    CHECK_OK(mvcc_batch_commit(s));
    CHECK_OK(put(s, "l/a", "1", id1)); /* 2 */
    CHECK_OK(put(s, "l/b", "1", id1)); /* 3 */
    CHECK_OK(put(s, "l/c", "1", id2)); /* 4 */
    CHECK_OK(put(s, "l/b", "2", id2)); /* 5: moves to id2 */
    struct mvcc_lease_info info;
    CHECK_OK(mvcc_lease_ttl(s, id1, 0, true, &A, &info));
    CHECK_EQ(info.keys_len, 1);
    CHECK_MEM(info.keys[0].p, info.keys[0].len, "l/a", 3);
    CHECK_EQ(info.granted_ttl_s, 10);
    /* Leader-local expiry. */
    mvcc_lease_promote(s, 1000);
    int64_t ids[4];
    size_t n;
    CHECK_OK(mvcc_lease_expired(s, 5000, ids, 4, &n));
    CHECK_EQ(n, 0);
    CHECK_OK(mvcc_lease_expired(s, 11001, ids, 4, &n));
    CHECK_EQ(n, 1);
    CHECK_EQ(ids[0], id1);
    int64_t ttl;
    CHECK_OK(mvcc_lease_renew(s, id2, 15000, &ttl));
    CHECK_EQ(ttl, 20);
    CHECK_OK(mvcc_lease_ttl(s, id2, 16000, false, &A, &info));
    CHECK_EQ(info.ttl_s, 19); /* 35 s - 16 s, truncated */
    CHECK_OK(mvcc_lease_expired(s, 30000, ids, 4, &n));
    CHECK_EQ(n, 1); /* id2 renewed at 15 s: alive until 35 s */
    /* Promote after a leader change: a full TTL again. */
    mvcc_lease_promote(s, 100000);
    CHECK_OK(mvcc_lease_expired(s, 105000, ids, 4, &n));
    CHECK_EQ(n, 0);
    /* Revoke deletes attached keys in one revision. */
    begin(s);
    CHECK_OK(mvcc_lease_revoke(s, id2));
    CHECK_EQ(mvcc_lease_revoke(s, id2), MVCC_ELEASENOTFOUND);
    CHECK_OK(mvcc_batch_commit(s));
    CHECK_EQ(mvcc_rev(s), 6);
    struct mvcc_kv kv;
    CHECK(!get(s, "l/b", 0, &kv));
    CHECK(!get(s, "l/c", 0, &kv));
    CHECK(get(s, "l/a", 0, &kv));
    /* Reopen restores leases with their keys. */
    mvcc_close(s);
    arena_free(&A);
    s = open_store_at(g_path);
    int64_t *list;
    CHECK_OK(mvcc_lease_list(s, &A, &list, &n));
    CHECK_EQ(n, 1);
    CHECK_EQ(list[0], id1);
    begin(s);
    CHECK_OK(mvcc_lease_revoke(s, id1));
    CHECK_OK(mvcc_batch_commit(s));
    CHECK(!get(s, "l/a", 0, &kv));
    CHECK_EQ(mvcc_rev(s), 7);
    mvcc_close(s);
    arena_free(&A);
}

/* The expiry heap keeps renewed leases under their old keys and catches them up lazily: what
 * it reports must still be exactly the leases a brute-force model says are expired (after at
 * most a few calls at one instant, since each call catches up a bounded number). */
TEST(lease_expiry_matches_a_model)
{
    enum { N = 600 };
    struct mvcc_store *s = open_store();
    struct prng rng;
    prng_seed(&rng, 17);
    int64_t id[N], ttl[N];
    uint64_t expiry[N];
    bool live[N];
    begin(s);
    for (int i = 0; i < N; i++) {
        ttl[i] = 5 + (int64_t)prng_below(&rng, 20);
        CHECK_OK(mvcc_lease_grant(s, 0, ttl[i], &id[i], NULL));
        live[i] = true;
    }
    CHECK_OK(mvcc_batch_commit(s));
    uint64_t now = 1000;
    mvcc_lease_promote(s, now);
    for (int i = 0; i < N; i++)
        expiry[i] = now + (uint64_t)ttl[i] * 1000 + 1;
    for (int step = 0; step < 3000; step++) {
        now += prng_below(&rng, 400);
        for (int r = 0; r < 40; r++) {
            int i = (int)prng_below(&rng, N);
            int64_t got;
            int rc = mvcc_lease_renew(s, id[i], now, &got);
            if (!live[i]) {
                CHECK_EQ(rc, MVCC_ELEASENOTFOUND);
            } else if (expiry[i] <= now) {
                CHECK_EQ(rc, MVCC_ELEASENOTFOUND); /* expired, not yet revoked */
            } else {
                CHECK_OK(rc);
                expiry[i] = now + (uint64_t)ttl[i] * 1000 + 1;
            }
        }
        bool seen[N] = {false};
        for (int call = 0; call < 4; call++) {
            int64_t ids[N];
            size_t n;
            CHECK_OK(mvcc_lease_expired(s, now, ids, N, &n));
            for (size_t k = 0; k < n; k++) {
                int i = 0;
                while (i < N && id[i] != ids[k])
                    i++;
                CHECK(i < N);
                CHECK(live[i]);
                CHECK(expiry[i] <= now); /* never an unexpired lease */
                seen[i] = true;
            }
        }
        int revoked = 0;
        for (int i = 0; i < N; i++) {
            if (!live[i] || expiry[i] > now)
                continue;
            CHECK(seen[i]); /* every expired lease reported */
            if (prng_below(&rng, 3) == 0 || revoked == 0) {
                begin(s);
                CHECK_OK(mvcc_lease_revoke(s, id[i]));
                CHECK_OK(mvcc_batch_commit(s));
                live[i] = false;
                revoked++;
            }
        }
    }
    mvcc_close(s);
    arena_free(&A);
}

TEST(lease_ids_deterministic)
{
    char p1[512], p2[512];
    snprintf(p1, sizeof(p1), "%s/one", test_tmpdir());
    snprintf(p2, sizeof(p2), "%s/two", test_tmpdir());
    struct mvcc_store *s1 = open_store_at(p1);
    arena_free(&A);
    struct mvcc_store *s2 = open_store_at(p2);
    int64_t a, b;
    /* Different batching, same per-entry index: same ids. */
    CHECK_OK(mvcc_batch_begin(s1, 7, 1));
    CHECK_OK(mvcc_lease_grant(s1, 0, 5, &a, NULL));
    CHECK_OK(mvcc_batch_commit(s1));
    CHECK_OK(mvcc_batch_begin(s2, 5, 1));
    CHECK_OK(mvcc_batch_set_index(s2, 7, 1));
    CHECK_OK(mvcc_lease_grant(s2, 0, 5, &b, NULL));
    CHECK_OK(mvcc_batch_commit(s2));
    CHECK_EQ(a, b);
    mvcc_close(s1);
    mvcc_close(s2);
    arena_free(&A);
}

/* A watch consumer with a bounded buffer: it refuses deliveries while full. */
struct sink {
    int64_t revs[4096];
    int types[4096];
    char keys[4096][16];
    bool prev[4096];
    size_t n, cap;
    int calls, progress;
    int64_t compacted;
};
static int sink_fn(void *ctx, const struct mvcc_watch_batch *b)
{
    struct sink *k = ctx;
    if (b->compact_revision) {
        k->compacted = b->compact_revision;
        return 0;
    }
    if (b->events_len == 0) {
        k->progress++;
        return 0;
    }
    if (k->n + b->events_len > k->cap)
        return BATON_EBUSY;
    k->calls++;
    for (size_t i = 0; i < b->events_len; i++) {
        /* Decode just what the test needs from the packed KeyValue: key and mod_revision. */
        const uint8_t *p = b->events[i].kv;
        size_t len = b->events[i].kv_len, off = 0;
        int64_t mod = 0;
        char key[16] = {0};
        while (off < len) {
            uint64_t tag, v;
            off += varint_get(p + off, len - off, &tag);
            off += varint_get(p + off, len - off, &v);
            if ((tag & 7) == 2) {
                if ((tag >> 3) == 1)
                    memcpy(key, p + off, v < 15 ? v : 15);
                off += v;
            } else if ((tag >> 3) == 3) {
                mod = (int64_t)v;
            }
        }
        k->revs[k->n] = mod;
        k->types[k->n] = b->events[i].type;
        k->prev[k->n] = b->events[i].prev_kv != NULL;
        memcpy(k->keys[k->n], key, 16);
        k->n++;
    }
    return 0;
}

TEST(watch_live_replay_filters)
{
    struct mvcc_store *s = open_store();
    CHECK_OK(put(s, "w/a", "1", 0)); /* 2 */
    CHECK_OK(put(s, "w/b", "1", 0)); /* 3 */
    CHECK_OK(put(s, "x", "1", 0));   /* 4 */
    struct sink *live = calloc(1, sizeof(*live)), *hist = calloc(1, sizeof(*hist)),
                *nodel = calloc(1, sizeof(*nodel));
    live->cap = hist->cap = nodel->cap = 4096;
    struct mvcc_watch_req r = {.key = B("w/"), .range_end = B("w0"), .prev_kv = true};
    int64_t id1, id2, id3, crev;
    CHECK_OK(mvcc_watch_create(s, &r, sink_fn, live, &id1, &crev));
    r.start_revision = 2;
    CHECK_OK(mvcc_watch_create(s, &r, sink_fn, hist, &id2, &crev));
    struct mvcc_watch_req nd = {.key = B("w/a"), .no_delete = true};
    CHECK_OK(mvcc_watch_create(s, &nd, sink_fn, nodel, &id3, &crev));
    CHECK_EQ(mvcc_watch_unsynced_count(s), 1);
    CHECK_OK(put(s, "w/a", "2", 0));  /* 5 */
    CHECK_EQ(del(s, "w/a", NULL), 1); /* 6 */
    CHECK_OK(put(s, "x", "2", 0));    /* 7: outside the range */
    CHECK_EQ(live->n, 2);
    CHECK_EQ(live->revs[0], 5);
    CHECK(live->prev[0]);
    CHECK_EQ(live->types[1], MVCC_EVENT_DELETE);
    CHECK_EQ(live->revs[1], 6);
    CHECK_EQ(nodel->n, 1);
    CHECK_EQ(hist->n, 0);
    bool pending = true;
    while (pending)
        CHECK_OK(mvcc_watch_step(s, 100, &pending));
    CHECK_EQ(hist->n, 4); /* 1, 2, 4, 5 */
    CHECK_EQ(hist->revs[0], 2);
    CHECK(!hist->prev[0]);
    CHECK_EQ(hist->revs[2], 5);
    CHECK(hist->prev[2]);
    CHECK_EQ(hist->revs[3], 6);
    CHECK(hist->prev[3]);
    CHECK_OK(put(s, "w/c", "1", 0)); /* 8: hist is synced now */
    CHECK_EQ(hist->n, 5);
    CHECK_OK(mvcc_watch_progress(s, id2));
    CHECK_EQ(hist->progress, 1);
    CHECK_OK(mvcc_watch_cancel(s, id2));
    CHECK_OK(put(s, "w/d", "1", 0));
    CHECK_EQ(hist->n, 5);
    /* Compacted start revision. */
    begin(s);
    CHECK_OK(mvcc_compact(s, 7));
    CHECK_OK(mvcc_batch_commit(s));
    r.start_revision = 4;
    CHECK_EQ(mvcc_watch_create(s, &r, sink_fn, hist, &id2, &crev), BATON_ECOMPACTED);
    CHECK_EQ(crev, 7);
    mvcc_close(s);
    free(live);
    free(hist);
    free(nodel);
    arena_free(&A);
}

TEST(watch_slow_consumer_catches_up_bounded)
{
    struct mvcc_store *s = open_store();
    struct sink *slow = calloc(1, sizeof(*slow)), *fast = calloc(1, sizeof(*fast));
    slow->cap = 10;
    fast->cap = 4096;
    struct mvcc_watch_req r = {.key = B("k"), .range_end = B("l")};
    int64_t id1, id2, crev;
    CHECK_OK(mvcc_watch_create(s, &r, sink_fn, slow, &id1, &crev));
    CHECK_OK(mvcc_watch_create(s, &r, sink_fn, fast, &id2, &crev));
    /* A txn of 3 puts per revision: its events must never be split. */
    for (int i = 0; i < 100; i++) {
        struct mvcc_op ops[] = {op_put("k1", "v"), op_put("k2", "v"), op_put("k3", "v")};
        struct mvcc_txn_req t = {NULL, 0, ops, 3, NULL, 0};
        struct mvcc_txn_resp resp;
        begin(s);
        CHECK_OK(mvcc_txn(s, &t, &A, &resp));
        CHECK_OK(mvcc_batch_commit(s));
    }
    CHECK_EQ(fast->n, 300); /* the slow one did not hold the fast one back */
    CHECK_EQ(slow->n, 9);   /* three whole revisions fit its buffer of 10 */
    CHECK_EQ(mvcc_watch_unsynced_count(s), 1);
    /* Drain slowly: the consumer frees its buffer, the hub re-reads LMDB in bounded steps. */
    int steps = 0;
    bool pending = true;
    while (pending && steps < 1000) {
        slow->n = 0;
        slow->cap = 10;
        CHECK_OK(mvcc_watch_step(s, 6, &pending));
        CHECK_LE(slow->n, 10);
        CHECK_EQ(slow->n % 3, 0);
        steps++;
    }
    CHECK(!pending);
    CHECK_GT(steps, 30);
    CHECK_EQ(slow->revs[slow->n - 1], 101);
    /* Compacted while behind: the watcher gets the compact revision and is cancelled. */
    slow->cap = 0;
    CHECK_OK(put(s, "k1", "x", 0)); /* 102: refused, slow falls behind */
    CHECK_OK(put(s, "k1", "y", 0)); /* 103 */
    begin(s);
    CHECK_OK(mvcc_compact(s, 103));
    CHECK_OK(mvcc_batch_commit(s));
    CHECK_OK(mvcc_watch_step(s, 10, &pending));
    CHECK_EQ(slow->compacted, 103);
    CHECK_EQ(mvcc_watch_count(s), 1);
    mvcc_close(s);
    free(slow);
    free(fast);
    arena_free(&A);
}

TEST(quota_alarm)
{
    struct mvcc_store *s = open_store();
    CHECK(!mvcc_quota_exceeded(s));
    begin(s);
    CHECK_OK(mvcc_alarm_nospace(s, true));
    CHECK_OK(mvcc_batch_commit(s));
    CHECK_EQ(put(s, "a", "1", 0), BATON_ENOSPACE);
    int64_t id;
    begin(s);
    CHECK_EQ(mvcc_lease_grant(s, 0, 5, &id, NULL), BATON_ENOSPACE);
    struct mvcc_op ops[] = {op_put("k", "v")};
    struct mvcc_txn_req t = {NULL, 0, ops, 1, NULL, 0};
    struct mvcc_txn_resp resp;
    CHECK_EQ(mvcc_txn(s, &t, &A, &resp), BATON_ENOSPACE);
    CHECK_OK(mvcc_batch_commit(s));
    /* The alarm is replicated state: it survives a reopen. */
    mvcc_close(s);
    arena_free(&A);
    s = open_store_at(g_path);
    CHECK(mvcc_alarm_nospace_armed(s));
    CHECK_EQ(del(s, "a", NULL), 0); /* deletes still work */
    begin(s);
    CHECK_OK(mvcc_alarm_nospace(s, false));
    CHECK_OK(mvcc_batch_commit(s));
    CHECK_OK(put(s, "a", "1", 0));
    mvcc_close(s);
    arena_free(&A);
}

TEST(quota_exceeded_by_size)
{
    struct mvcc_config cfg;
    mvcc_config_default(&cfg);
    char path[512];
    snprintf(path, sizeof(path), "%s/small", test_tmpdir());
    cfg.path = path;
    cfg.quota_bytes = 256 << 10;
    struct mvcc_store *s;
    CHECK_OK(mvcc_open(&cfg, &s, NULL, 0));
    arena_init(&A, 1 << 16);
    g_index = 0;
    char v[1000], k[16];
    memset(v, 'v', sizeof(v) - 1);
    v[sizeof(v) - 1] = 0;
    int i = 0;
    while (!mvcc_quota_exceeded(s) && i < 10000) {
        snprintf(k, sizeof(k), "k%d", i++);
        CHECK_OK(put(s, k, v, 0));
    }
    CHECK(mvcc_quota_exceeded(s));
    CHECK_LT(i, 10000);
    mvcc_close(s);
    arena_free(&A);
}

struct reader_arg {
    struct mvcc_store *s;
    volatile int stop;
    int reads, errors;
};

TEST(defrag_shrinks_and_keeps_data)
{
    struct mvcc_store *s = open_store();
    char v[512], k[16];
    memset(v, 'x', sizeof(v) - 1);
    v[sizeof(v) - 1] = 0;
    for (int b = 0; b < 20; b++) {
        begin(s);
        for (int i = 0; i < 100; i++) {
            snprintf(k, sizeof(k), "k%04d", b * 100 + i);
            struct mvcc_put_req r = {.key = B(k), .value = B(v)};
            struct mvcc_put_resp resp;
            CHECK_OK(mvcc_put(s, &r, &A, &resp));
        }
        CHECK_OK(mvcc_batch_commit(s));
    }
    struct mvcc_delete_req d = {.key = B("k0"), .range_end = B("k1")};
    struct mvcc_delete_resp dr;
    begin(s);
    CHECK_OK(mvcc_delete_range(s, &d, &A, &dr));
    CHECK_EQ(dr.deleted, 1000);
    CHECK_OK(mvcc_compact(s, mvcc_rev(s)));
    CHECK_OK(mvcc_batch_commit(s));
    bool done;
    do
        CHECK_OK(mvcc_compact_step(s, 500, &done));
    while (!done);
    uint64_t before, after, fbefore, fafter;
    CHECK_OK(mvcc_db_size(s, &before, &fbefore));
    uint32_t h1, h2;
    int64_t c, r;
    CHECK_OK(mvcc_hash_kv(s, 0, &h1, &c, &r));
    CHECK_OK(mvcc_defrag_begin(s));
    /* Reads go on during the copy; writes are refused until the switch. */
    struct mvcc_kv kv;
    int reads = 0;
    bool fin = false;
    CHECK_EQ(mvcc_batch_begin(s, g_index + 1, 1), BATON_EBUSY);
    while (!fin) {
        CHECK(get(s, "k1500", 0, &kv));
        reads++;
        CHECK_OK(mvcc_defrag_poll(s, &fin));
    }
    CHECK_OK(mvcc_db_size(s, &after, &fafter));
    test_log("defrag: file %llu -> %llu bytes, %d reads during the copy",
             (unsigned long long)fbefore, (unsigned long long)fafter, reads);
    CHECK_LT(fafter, fbefore);
    CHECK_OK(mvcc_hash_kv(s, 0, &h2, &c, &r));
    CHECK_EQ_U64(h1, h2);
    CHECK_OK(put(s, "after", "1", 0));
    mvcc_close(s);
    arena_free(&A);
    s = open_store_at(g_path);
    CHECK(get(s, "after", 0, &kv));
    CHECK(get(s, "k1999", 0, &kv));
    CHECK_EQ(mvcc_key_count(s), 1001);
    mvcc_close(s);
    arena_free(&A);
}

TEST(corrupt_file_is_an_error_with_path)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/garbage", test_tmpdir());
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    uint8_t junk[16384];
    struct prng rng;
    prng_seed(&rng, 7);
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)prng_next(&rng);
    fwrite(junk, 1, sizeof(junk), f);
    fclose(f);
    struct mvcc_config cfg;
    mvcc_config_default(&cfg);
    cfg.path = path;
    struct mvcc_store *s = NULL;
    char err[512] = {0};
    int rc = mvcc_open(&cfg, &s, err, sizeof(err));
    CHECK_NE(rc, 0);
    CHECK(s == NULL);
    CHECK(strstr(err, path) != NULL);
    test_log("%s", err);
}

TEST(index_many_keys_ordered)
{
    struct mvcc_store *s = open_store();
    struct prng rng;
    prng_seed(&rng, 3);
    /* Random-order inserts across many chunk splits, then a full ordered scan. */
    begin(s);
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "key%08llu", (unsigned long long)prng_below(&rng, 1000000));
        struct mvcc_put_req r = {.key = B(k), .value = B("v")};
        struct mvcc_put_resp resp;
        CHECK_OK(mvcc_put(s, &r, &A, &resp));
    }
    CHECK_OK(mvcc_batch_commit(s));
    struct mvcc_range_req r = {.key = B("key"), .range_end = B("kez")};
    struct mvcc_range_resp resp;
    CHECK_OK(mvcc_range(s, &r, &A, &resp));
    CHECK_EQ((size_t)resp.count, mvcc_key_count(s));
    for (size_t i = 1; i < resp.kvs_len; i++)
        CHECK_LT(memcmp(resp.kvs[i - 1].key.p, resp.kvs[i].key.p, 11), 0);
    test_log("index: %zu keys, %zu bytes (%.1f per key)", mvcc_key_count(s), mvcc_index_bytes(s),
             (double)mvcc_index_bytes(s) / (double)mvcc_key_count(s));
    mvcc_close(s);
    arena_free(&A);
}

/* Damaged pages anywhere past the meta pages: opening and reading must end in success or an
 * error, never a crash inside LMDB (the structural check runs before LMDB maps the file). */
TEST(corrupt_pages_never_crash)
{
    struct mvcc_store *s = open_store();
    char k[32], v[6000];
    memset(v, 'x', sizeof(v));
    for (int b = 0; b < 10; b++) {
        begin(s);
        for (int i = 0; i < 60; i++) {
            snprintf(k, sizeof(k), "key%05d", (b * 37 + i * 101) % 1000);
            size_t vl = i % 13 == 0 ? 5000 : 20; /* some values on overflow pages */
            struct mvcc_put_req r = {.key = B(k), .value = {(const uint8_t *)v, vl}};
            struct mvcc_put_resp resp;
            CHECK_OK(mvcc_put(s, &r, &A, &resp));
        }
        CHECK_OK(mvcc_batch_commit(s));
    }
    mvcc_close(s);
    arena_free(&A);
    FILE *f = fopen(g_path, "rb");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *orig = malloc((size_t)size), *copy = malloc((size_t)size);
    CHECK_EQ(fread(orig, 1, (size_t)size, f), size);
    fclose(f);
    char path[600];
    snprintf(path, sizeof(path), "%s/damaged", test_tmpdir());
    struct prng rng;
    prng_seed(&rng, 99);
    int opened = 0, refused = 0;
    for (int it = 0; it < 150; it++) {
        memcpy(copy, orig, (size_t)size);
        int flips = 1 + (int)prng_below(&rng, 8);
        for (int j = 0; j < flips; j++)
            copy[8192 + prng_below(&rng, (uint64_t)size - 8192)] ^=
                (uint8_t)(1 + prng_below(&rng, 255));
        f = fopen(path, "wb");
        CHECK(f != NULL);
        CHECK_EQ(fwrite(copy, 1, (size_t)size, f), size);
        fclose(f);
        struct mvcc_config cfg;
        mvcc_config_default(&cfg);
        cfg.path = path;
        struct mvcc_store *d = NULL;
        char err[512];
        if (mvcc_open(&cfg, &d, err, sizeof(err)) != 0) {
            CHECK(strstr(err, path) != NULL);
            refused++;
            continue;
        }
        struct arena a;
        arena_init(&a, 1 << 16);
        struct mvcc_range_req r = {.key = {(const uint8_t *)"", 1},
                                   .range_end = {(const uint8_t *)"", 1}};
        struct mvcc_range_resp resp;
        (void)mvcc_range(d, &r, &a, &resp);
        arena_free(&a);
        mvcc_close(d);
        opened++;
    }
    test_log("150 damaged copies: %d opened, %d refused with an error", opened, refused);
    free(orig);
    free(copy);
}

TEST(lease_min_ttl)
{
    struct mvcc_config cfg;
    mvcc_config_default(&cfg);
    char path[512];
    snprintf(path, sizeof(path), "%s/minttl", test_tmpdir());
    cfg.path = path;
    cfg.min_lease_ttl_s = 5;
    struct mvcc_store *s;
    CHECK_OK(mvcc_open(&cfg, &s, NULL, 0));
    int64_t id, ttl;
    CHECK_OK(mvcc_batch_begin(s, 1, 1));
    CHECK_OK(mvcc_lease_grant(s, 0, 1, &id, &ttl));
    CHECK_EQ(ttl, 5);
    CHECK_OK(mvcc_lease_grant(s, 0, 60, &id, &ttl));
    CHECK_EQ(ttl, 60);
    CHECK_OK(mvcc_batch_commit(s));
    mvcc_close(s);
}

TEST(aux_table)
{
    struct mvcc_store *s = open_store();
    begin(s);
    CHECK_OK(mvcc_aux_put(s, B("members/2"), B("b")));
    CHECK_OK(mvcc_aux_put(s, B("members/1"), B("a")));
    CHECK_OK(mvcc_aux_put(s, B("members/3"), B("c")));
    CHECK_OK(mvcc_aux_put(s, B("cluster/id"), B("x")));
    CHECK_OK(mvcc_aux_delete(s, B("members/3")));
    CHECK_EQ(mvcc_aux_delete(s, B("members/9")), BATON_ENOTFOUND);
    CHECK_OK(mvcc_batch_commit(s));
    CHECK_EQ(mvcc_aux_put(s, B("x"), B("y")), BATON_EINVAL); /* outside a batch */
    struct mvcc_bytes *names, *values, v;
    size_t n;
    bool more;
    CHECK_OK(mvcc_aux_list(s, B("members/"), 10, &A, &names, &values, &n, &more));
    CHECK_EQ(n, 2);
    CHECK(!more);
    CHECK_MEM(names[0].p, names[0].len, "members/1", 9);
    CHECK_MEM(values[1].p, values[1].len, "b", 1);
    CHECK_OK(mvcc_aux_list(s, (struct mvcc_bytes){0}, 2, &A, &names, &values, &n, &more));
    CHECK_EQ(n, 2);
    CHECK(more);
    CHECK_MEM(names[0].p, names[0].len, "cluster/id", 10);
    mvcc_close(s);
    arena_free(&A);
    s = open_store_at(g_path);
    CHECK_OK(mvcc_aux_get(s, B("members/2"), &A, &v));
    CHECK_MEM(v.p, v.len, "b", 1);
    CHECK_EQ(mvcc_aux_get(s, B("members/3"), &A, &v), BATON_ENOTFOUND);
    CHECK_EQ(mvcc_rev(s), 1); /* the aux table has no revisions */
    mvcc_close(s);
    arena_free(&A);
}

/* A writer killed (SIGKILL) at a random moment: the store reopens, and its applied index and
 * data agree (each batch i writes counter = i and key k<i>, in one LMDB transaction). */
TEST(killed_writer_reopens_consistent)
{
    snprintf(g_path, sizeof(g_path), "%s/killed", test_tmpdir());
    struct prng rng;
    prng_seed(&rng, 5);
    for (int round = 0; round < 3; round++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            struct mvcc_store *w = open_store_at(g_path);
            for (uint64_t i = mvcc_applied_index(w) + 1;; i++) {
                char k[32], v[32];
                snprintf(k, sizeof(k), "k%llu", (unsigned long long)i);
                snprintf(v, sizeof(v), "%llu", (unsigned long long)i);
                struct mvcc_put_req r1 = {.key = B("counter"), .value = B(v)};
                struct mvcc_put_req r2 = {.key = B(k), .value = B(v)};
                struct mvcc_put_resp resp;
                if (mvcc_batch_begin(w, i, 1) || mvcc_put(w, &r1, &A, &resp) ||
                    mvcc_put(w, &r2, &A, &resp) || mvcc_batch_commit(w))
                    _exit(3);
                arena_reset(&A);
            }
        }
        usleep((useconds_t)(50000 + prng_below(&rng, 200000)));
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        CHECK(WIFSIGNALED(st));
        struct mvcc_store *s = open_store_at(g_path);
        uint64_t idx = mvcc_applied_index(s);
        struct mvcc_kv kv;
        if (idx > 0) {
            CHECK(get(s, "counter", 0, &kv));
            CHECK_EQ(strtoull((const char *)kv.value.p, NULL, 10), idx);
            CHECK_EQ(kv.version, idx);
            char k[32];
            snprintf(k, sizeof(k), "k%llu", (unsigned long long)idx);
            CHECK(get(s, k, 0, &kv));
            snprintf(k, sizeof(k), "k%llu", (unsigned long long)idx + 1);
            CHECK(!get(s, k, 0, &kv));
        }
        CHECK_EQ(mvcc_rev(s), 1 + 2 * (int64_t)idx);
        test_log("round %d: killed after %llu batches", round, (unsigned long long)idx);
        mvcc_close(s);
        arena_free(&A);
    }
}

/* A truncated data file and a path that is a directory: errors naming the path. */
TEST(truncated_file_and_directory_path)
{
    struct mvcc_store *s = open_store();
    char k[32];
    begin(s);
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof(k), "key%05d", i);
        struct mvcc_put_req r = {.key = B(k), .value = B("some value bytes")};
        struct mvcc_put_resp resp;
        CHECK_OK(mvcc_put(s, &r, &A, &resp));
    }
    CHECK_OK(mvcc_batch_commit(s));
    mvcc_close(s);
    arena_free(&A);
    FILE *f = fopen(g_path, "r+b");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    CHECK_OK(truncate(g_path, size / 2));
    struct mvcc_config cfg;
    mvcc_config_default(&cfg);
    cfg.path = g_path;
    char err[600] = "";
    CHECK_EQ(mvcc_open(&cfg, &s, err, sizeof(err)), BATON_ECORRUPT);
    CHECK(strstr(err, g_path) != NULL);
    test_log("%s", err);
    cfg.path = test_tmpdir();
    err[0] = 0;
    CHECK_NE(mvcc_open(&cfg, &s, err, sizeof(err)), 0);
    CHECK(strstr(err, test_tmpdir()) != NULL);
    test_log("%s", err);
}

/* Many synced watchers (single keys, prefixes, open ranges, filters) over random batches: each
 * gets exactly the events a brute-force filter of the history gives, in revision order. */
struct rec_sink {
    char keys[600][8];
    int64_t revs[600];
    int types[600];
    size_t n;
};
static int rec_fn(void *ctx, const struct mvcc_watch_batch *b)
{
    struct rec_sink *k = ctx;
    for (size_t i = 0; i < b->events_len && k->n < 600; i++) {
        const uint8_t *p = b->events[i].kv;
        size_t len = b->events[i].kv_len, off = 0;
        memset(k->keys[k->n], 0, 8);
        while (off < len) {
            uint64_t tag, v;
            off += varint_get(p + off, len - off, &tag);
            off += varint_get(p + off, len - off, &v);
            if ((tag & 7) == 2) {
                if ((tag >> 3) == 1)
                    memcpy(k->keys[k->n], p + off, v < 7 ? v : 7);
                off += v;
            } else if ((tag >> 3) == 3) {
                k->revs[k->n] = (int64_t)v;
            }
        }
        k->types[k->n++] = b->events[i].type;
    }
    return 0;
}

TEST(watch_fanout_matches_brute_force)
{
    struct mvcc_store *s = open_store();
    enum { NW = 120, NOPS = 400 };
    static struct rec_sink sinks[NW];
    static char wk[NW][8], we[NW][8];
    static struct mvcc_watch_req reqs[NW];
    memset(sinks, 0, sizeof(sinks));
    struct prng rng;
    prng_seed(&rng, 11);
    for (int i = 0; i < NW; i++) {
        struct mvcc_watch_req *r = &reqs[i];
        memset(r, 0, sizeof(*r));
        int kind = (int)prng_below(&rng, 4);
        snprintf(wk[i], sizeof(wk[i]), "%c%c", 'a' + (int)prng_below(&rng, 4),
                 '0' + (int)prng_below(&rng, 5));
        r->key = B(wk[i]);
        if (kind == 1) { /* prefix of one letter */
            wk[i][1] = 0;
            r->key = B(wk[i]);
            snprintf(we[i], sizeof(we[i]), "%c", wk[i][0] + 1);
            r->range_end = B(we[i]);
        } else if (kind == 2) { /* open range */
            r->range_end = (struct mvcc_bytes){(const uint8_t *)"", 1};
        }
        r->no_put = prng_chance(&rng, 100000);
        r->no_delete = !r->no_put && prng_chance(&rng, 100000);
        int64_t id, c;
        CHECK_OK(mvcc_watch_create(s, r, rec_fn, &sinks[i], &id, &c));
    }
    static char hk[NOPS][8];
    static int64_t hrev[NOPS];
    static int htype[NOPS];
    int nh = 0;
    char k[8];
    for (int b = 0; b < 40; b++) {
        begin(s);
        for (int j = 0; j < 10 && nh < NOPS; j++) {
            snprintf(k, sizeof(k), "%c%c", 'a' + (int)prng_below(&rng, 5),
                     '0' + (int)prng_below(&rng, 5));
            if (prng_chance(&rng, 250000)) {
                struct mvcc_delete_req r = {.key = B(k)};
                struct mvcc_delete_resp resp;
                CHECK_OK(mvcc_delete_range(s, &r, &A, &resp));
                if (resp.deleted == 0)
                    continue;
                htype[nh] = MVCC_EVENT_DELETE;
            } else {
                struct mvcc_put_req r = {.key = B(k), .value = B("v")};
                struct mvcc_put_resp resp;
                CHECK_OK(mvcc_put(s, &r, &A, &resp));
                htype[nh] = MVCC_EVENT_PUT;
            }
            memcpy(hk[nh], k, 8);
            hrev[nh++] = mvcc_rev(s);
        }
        CHECK_OK(mvcc_batch_commit(s));
        arena_reset(&A);
    }
    for (int i = 0; i < NW; i++) {
        size_t n = 0;
        for (int h = 0; h < nh; h++) {
            const struct mvcc_watch_req *r = &reqs[i];
            bool in;
            if (r->range_end.len == 0)
                in = strcmp(hk[h], wk[i]) == 0;
            else if (r->range_end.len == 1 && r->range_end.p[0] == 0)
                in = strcmp(hk[h], wk[i]) >= 0;
            else
                in = strcmp(hk[h], wk[i]) >= 0 && strcmp(hk[h], we[i]) < 0;
            if (!in || (htype[h] == MVCC_EVENT_PUT ? r->no_put : r->no_delete))
                continue;
            CHECK_LT(n, sinks[i].n);
            CHECK_STR(sinks[i].keys[n], hk[h]);
            CHECK_EQ(sinks[i].revs[n], hrev[h]);
            CHECK_EQ(sinks[i].types[n], htype[h]);
            n++;
        }
        CHECK_EQ(n, sinks[i].n);
    }
    mvcc_close(s);
    arena_free(&A);
}

/* What mvcc_range_borrow's callback saw. */
struct borrowed {
    size_t n;
    bool equal; /* every KeyValue equals the copied range's */
    struct mvcc_range_resp copy;
};

static int borrow_check(void *ctx, const struct mvcc_range_resp *r)
{
    struct borrowed *b = ctx;
    b->n = r->kvs_len;
    b->equal = r->kvs_len == b->copy.kvs_len && r->count == b->copy.count;
    for (size_t i = 0; b->equal && i < r->kvs_len; i++) {
        const struct mvcc_kv *x = &r->kvs[i], *y = &b->copy.kvs[i];
        b->equal = x->packed_len == y->packed_len &&
                   memcmp(x->packed, y->packed, x->packed_len) == 0 &&
                   x->value.len == y->value.len && x->mod_revision == y->mod_revision;
    }
    return 0;
}

/* A borrowed range sees the same KeyValues as a copied one, the records as LMDB maps them
 * (not copies in the arena), and keys_only still strips values. */
TEST(range_borrow_matches_copy)
{
    struct mvcc_store *s = open_store();
    char v[4096];
    memset(v, 'v', sizeof(v) - 1);
    v[sizeof(v) - 1] = 0;
    CHECK_OK(put(s, "k1", v, 0));
    CHECK_OK(put(s, "k2", "two", 0));
    CHECK_OK(put(s, "k3", v, 0));
    struct mvcc_range_req q = {.key = B("k"), .range_end = B("l"), .limit = 2};
    struct borrowed b = {0};
    CHECK_OK(mvcc_range(s, &q, &A, &b.copy));
    CHECK_EQ(b.copy.kvs_len, 2);
    struct arena small;
    arena_init(&small, 1024);
    CHECK_OK(mvcc_range_borrow(s, &q, &small, borrow_check, &b));
    CHECK_EQ(b.n, 2);
    CHECK(b.equal);
    CHECK_GT(mvcc_last_commit_ns(s), 0); /* the puts' commits were timed */
    /* Only the kvs array came from the arena, not the 4 KiB value. */
    CHECK_LT(small.used_bytes, 1024);
    q.keys_only = true;
    q.limit = 0;
    CHECK_OK(mvcc_range(s, &q, &A, &b.copy));
    CHECK_OK(mvcc_range_borrow(s, &q, &small, borrow_check, &b));
    CHECK_EQ(b.n, 3);
    CHECK(b.equal);
    CHECK_EQ(b.copy.kvs[0].value.len, 0);
    /* An error from the range: the callback never runs; the callback's error is returned. */
    b.n = 99;
    q.revision = 1000;
    CHECK_EQ(mvcc_range_borrow(s, &q, &small, borrow_check, &b), BATON_EFUTURE);
    CHECK_EQ(b.n, 99);
    arena_free(&small);
    mvcc_close(s);
}
