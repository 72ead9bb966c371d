/*
 * mvcc-script: runs a scripted sequence of etcdctl-like commands against a fresh mvcc store and
 * prints the results in a normalised text form. etcd_compare.py runs the same script through
 * etcdctl (and etcd's JSON gateway for options etcdctl 3.4 lacks) against a real etcd, prints
 * the same form, and diffs the two. The script language (one command per line):
 *   put KEY [VALUE] [--prev-kv] [--lease=Ln] [--ignore-value] [--ignore-lease]
 *   get KEY [END] [--prefix] [--from-key] [--limit=N] [--rev=N] [--sort-by=T] [--order=O]
 *       [--keys-only]
 *   rangereq key=K [end=E] [count_only=1] [keys_only=1] [limit=N] [revision=N]
 *       [min_mod=N] [max_mod=N] [min_create=N] [max_create=N] [sort_order=N] [sort_target=N]
 *   del KEY [END] [--prefix] [--from-key] [--prev-kv]
 *   txn / compare lines (etcdctl syntax) / -- / success ops / -- / failure ops / end
 *   compact REV
 *   lease grant TTL | lease revoke Ln | lease timetolive Ln
 *   watch KEY [END] [--prefix] [--from-key] [--rev=N] [--prev-kv] [--no-put] [--no-delete]
 *       (history from --rev up to now; prints each event, then the count or compacted=N)
 *   # comment
 * Usage: mvcc-script SCRIPT DIR (the store is created in DIR, which must exist).
 */
#include "mvcc/mvcc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX      32
#define LINE_MAX_LEN 1024

static struct mvcc_store *S;
static struct arena A;
static uint64_t g_index;
static int64_t lease_ids[64];
static int nleases;

static struct mvcc_bytes bytes_of(const char *s)
{
    return (struct mvcc_bytes){(const uint8_t *)s, strlen(s)};
}

static int split(char *line, char **tok)
{
    int n = 0;
    for (char *p = strtok(line, " \t\r\n"); p && n < TOK_MAX; p = strtok(NULL, " \t\r\n"))
        tok[n++] = p;
    return n;
}

static const char *flag_val(const char *tok, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(tok, name, n) == 0 && tok[n] == '=')
        return tok + n + 1;
    return NULL;
}

static int64_t lease_of(const char *name)
{
    if (name[0] != 'L')
        return atoll(name);
    int i = atoi(name + 1) - 1;
    return i >= 0 && i < nleases ? lease_ids[i] : 999999;
}

static void print_lease(int64_t id)
{
    for (int i = 0; i < nleases; i++) {
        if (lease_ids[i] == id) {
            printf("L%d", i + 1);
            return;
        }
    }
    printf("%lld", (long long)id);
}

static void print_kv(const struct mvcc_kv *kv)
{
    printf("%.*s:%.*s:%lld:%lld:%lld:", (int)kv->key.len, (const char *)kv->key.p,
           (int)kv->value.len, (const char *)kv->value.p, (long long)kv->create_revision,
           (long long)kv->mod_revision, (long long)kv->version);
    print_lease(kv->lease);
}

static void print_kvs(const struct mvcc_kv *kvs, size_t n)
{
    printf("[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            printf(",");
        print_kv(&kvs[i]);
    }
    printf("]");
}

/* The prefix range end as clientv3.GetPrefixRangeEnd; buf holds at least strlen(k)+1. */
static struct mvcc_bytes prefix_end(const char *k, char *buf)
{
    size_t n = strlen(k);
    memcpy(buf, k, n);
    while (n > 0) {
        if ((uint8_t)buf[n - 1] < 0xff) {
            buf[n - 1]++;
            return (struct mvcc_bytes){(const uint8_t *)buf, n};
        }
        n--;
    }
    buf[0] = 0;
    return (struct mvcc_bytes){(const uint8_t *)buf, 1};
}

static char g_bufs[8][LINE_MAX_LEN];
static int g_nbuf;
static char *scratch(void)
{
    return g_bufs[g_nbuf++ % 8];
}

static const struct mvcc_bytes NUL_END = {(const uint8_t *)"", 1};

static int parse_range(char **tok, int n, struct mvcc_range_req *r)
{
    memset(r, 0, sizeof(*r));
    const char *key = NULL, *end = NULL, *v;
    bool prefix = false, from = false;
    int order = -1, target = -1;
    for (int i = 1; i < n; i++) {
        if (strcmp(tok[i], "--prefix") == 0)
            prefix = true;
        else if (strcmp(tok[i], "--from-key") == 0)
            from = true;
        else if (strcmp(tok[i], "--keys-only") == 0)
            r->keys_only = true;
        else if ((v = flag_val(tok[i], "--limit")))
            r->limit = atoll(v);
        else if ((v = flag_val(tok[i], "--rev")))
            r->revision = atoll(v);
        else if ((v = flag_val(tok[i], "--order")))
            order = strcmp(v, "DESCEND") == 0 ? MVCC_SORT_DESCEND : MVCC_SORT_ASCEND;
        else if ((v = flag_val(tok[i], "--sort-by")))
            target = strcmp(v, "CREATE") == 0    ? MVCC_SORT_CREATE
                     : strcmp(v, "MODIFY") == 0  ? MVCC_SORT_MOD
                     : strcmp(v, "VALUE") == 0   ? MVCC_SORT_VALUE
                     : strcmp(v, "VERSION") == 0 ? MVCC_SORT_VERSION
                                                 : MVCC_SORT_KEY;
        else if (!key)
            key = tok[i];
        else
            end = tok[i];
    }
    if (!key)
        return -1;
    r->key = bytes_of(key);
    if (end)
        r->range_end = bytes_of(end);
    if (prefix)
        r->range_end = prefix_end(key, scratch());
    if (from)
        r->range_end = NUL_END;
    /* etcdctl: WithSort(target, order); KEY + ASCEND becomes NONE. */
    if (order >= 0 || target >= 0) {
        r->sort_target = target >= 0 ? (enum mvcc_sort_target)target : MVCC_SORT_KEY;
        r->sort_order = order >= 0 ? (enum mvcc_sort_order)order : MVCC_SORT_NONE;
        if (r->sort_target == MVCC_SORT_KEY && r->sort_order == MVCC_SORT_ASCEND)
            r->sort_order = MVCC_SORT_NONE;
    }
    return 0;
}

static int parse_rangereq(char **tok, int n, struct mvcc_range_req *r)
{
    memset(r, 0, sizeof(*r));
    const char *v;
    for (int i = 1; i < n; i++) {
        if ((v = flag_val(tok[i], "key")))
            r->key = bytes_of(v);
        else if ((v = flag_val(tok[i], "end")))
            r->range_end = strcmp(v, "\\0") == 0 ? NUL_END : bytes_of(v);
        else if ((v = flag_val(tok[i], "count_only")))
            r->count_only = atoi(v);
        else if ((v = flag_val(tok[i], "keys_only")))
            r->keys_only = atoi(v);
        else if ((v = flag_val(tok[i], "limit")))
            r->limit = atoll(v);
        else if ((v = flag_val(tok[i], "revision")))
            r->revision = atoll(v);
        else if ((v = flag_val(tok[i], "min_mod")))
            r->min_mod_revision = atoll(v);
        else if ((v = flag_val(tok[i], "max_mod")))
            r->max_mod_revision = atoll(v);
        else if ((v = flag_val(tok[i], "min_create")))
            r->min_create_revision = atoll(v);
        else if ((v = flag_val(tok[i], "max_create")))
            r->max_create_revision = atoll(v);
        else if ((v = flag_val(tok[i], "sort_order")))
            r->sort_order = (enum mvcc_sort_order)atoi(v);
        else if ((v = flag_val(tok[i], "sort_target")))
            r->sort_target = (enum mvcc_sort_target)atoi(v);
        else
            return -1;
    }
    return 0;
}

static int parse_put(char **tok, int n, struct mvcc_put_req *r)
{
    memset(r, 0, sizeof(*r));
    const char *key = NULL, *val = NULL, *v;
    for (int i = 1; i < n; i++) {
        if (strcmp(tok[i], "--prev-kv") == 0)
            r->prev_kv = true;
        else if (strcmp(tok[i], "--ignore-value") == 0)
            r->ignore_value = true;
        else if (strcmp(tok[i], "--ignore-lease") == 0)
            r->ignore_lease = true;
        else if ((v = flag_val(tok[i], "--lease")))
            r->lease = lease_of(v);
        else if (!key)
            key = tok[i];
        else
            val = tok[i];
    }
    if (!key)
        return -1;
    r->key = bytes_of(key);
    if (val)
        r->value = bytes_of(val);
    return 0;
}

static int parse_del(char **tok, int n, struct mvcc_delete_req *r)
{
    memset(r, 0, sizeof(*r));
    const char *key = NULL, *end = NULL;
    bool prefix = false, from = false;
    for (int i = 1; i < n; i++) {
        if (strcmp(tok[i], "--prev-kv") == 0)
            r->prev_kv = true;
        else if (strcmp(tok[i], "--prefix") == 0)
            prefix = true;
        else if (strcmp(tok[i], "--from-key") == 0)
            from = true;
        else if (!key)
            key = tok[i];
        else
            end = tok[i];
    }
    if (!key)
        return -1;
    r->key = bytes_of(key);
    if (end)
        r->range_end = bytes_of(end);
    if (prefix)
        r->range_end = prefix_end(key, scratch());
    if (from)
        r->range_end = NUL_END;
    return 0;
}

static void print_range(const struct mvcc_range_resp *r)
{
    printf("rev=%lld count=%lld more=%d kvs=", (long long)r->header_revision, (long long)r->count,
           r->more);
    print_kvs(r->kvs, r->kvs_len);
    printf("\n");
}

static void print_put(const struct mvcc_put_resp *r)
{
    printf("rev=%lld", (long long)r->header_revision);
    if (r->prev_kv) {
        printf(" prev=");
        print_kv(r->prev_kv);
    }
    printf("\n");
}

static void print_del(const struct mvcc_delete_resp *r)
{
    printf("rev=%lld deleted=%lld prev=", (long long)r->header_revision, (long long)r->deleted);
    print_kvs(r->prev_kvs, r->prev_kvs_len);
    printf("\n");
}

static void print_err(int rc)
{
    printf("error: %s\n", mvcc_strerror(rc));
}

static void begin(void)
{
    int rc = mvcc_batch_begin(S, ++g_index, 1);
    if (rc != 0) {
        fprintf(stderr, "batch begin: %s\n", mvcc_strerror(rc));
        exit(2);
    }
}
static void commit(void)
{
    int rc = mvcc_batch_commit(S);
    if (rc != 0) {
        fprintf(stderr, "batch commit: %s\n", mvcc_strerror(rc));
        exit(2);
    }
}

/* Compare: target("key") op "value". */
static int parse_compare(char *line, struct mvcc_compare *c, char *keybuf, char *valbuf)
{
    char target[32], op[4];
    memset(c, 0, sizeof(*c));
    if (sscanf(line, " %31[a-z](\"%511[^\"]\") %3s \"%511[^\"]\"", target, keybuf, op, valbuf) !=
        4) {
        valbuf[0] = 0;
        if (sscanf(line, " %31[a-z](\"%511[^\"]\") %3s \"\"", target, keybuf, op) != 3)
            return -1;
    }
    c->key = bytes_of(keybuf);
    if (strcmp(target, "value") == 0 || strcmp(target, "val") == 0) {
        c->target = MVCC_CMP_VALUE;
        c->value = bytes_of(valbuf);
    } else {
        c->target = strncmp(target, "ver", 3) == 0 ? MVCC_CMP_VERSION
                    : strncmp(target, "c", 1) == 0 ? MVCC_CMP_CREATE
                    : strncmp(target, "m", 1) == 0 ? MVCC_CMP_MOD
                    : strcmp(target, "lease") == 0 ? MVCC_CMP_LEASE
                                                   : MVCC_CMP_VALUE;
        c->number = c->target == MVCC_CMP_LEASE ? lease_of(valbuf) : atoll(valbuf);
    }
    c->result = strcmp(op, "=") == 0    ? MVCC_CMP_EQUAL
                : strcmp(op, "!=") == 0 ? MVCC_CMP_NOT_EQUAL
                : strcmp(op, ">") == 0  ? MVCC_CMP_GREATER
                                        : MVCC_CMP_LESS;
    return 0;
}

#define TXN_MAX 32
static char txn_lines[3][TXN_MAX][LINE_MAX_LEN];
static int txn_n[3];

static int parse_op(char *line, struct mvcc_op *o)
{
    char *tok[TOK_MAX];
    int n = split(line, tok);
    if (n == 0)
        return -1;
    if (strcmp(tok[0], "put") == 0) {
        o->type = MVCC_OP_PUT;
        return parse_put(tok, n, &o->u.put);
    }
    if (strcmp(tok[0], "get") == 0) {
        o->type = MVCC_OP_RANGE;
        return parse_range(tok, n, &o->u.range);
    }
    if (strcmp(tok[0], "del") == 0) {
        o->type = MVCC_OP_DELETE;
        return parse_del(tok, n, &o->u.del);
    }
    return -1;
}

static void run_txn(void)
{
    static char keys[TXN_MAX][512], vals[TXN_MAX][512];
    struct mvcc_compare cmp[TXN_MAX];
    struct mvcc_op ops[2][TXN_MAX];
    for (int i = 0; i < txn_n[0]; i++)
        if (parse_compare(txn_lines[0][i], &cmp[i], keys[i], vals[i]) != 0) {
            printf("bad compare\n");
            return;
        }
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < txn_n[b + 1]; i++)
            if (parse_op(txn_lines[b + 1][i], &ops[b][i]) != 0) {
                printf("bad op\n");
                return;
            }
    struct mvcc_txn_req t = {cmp,    (size_t)txn_n[0], ops[0], (size_t)txn_n[1],
                             ops[1], (size_t)txn_n[2]};
    struct mvcc_txn_resp resp;
    begin();
    int rc = mvcc_txn(S, &t, &A, &resp);
    commit();
    if (rc != 0) {
        print_err(rc);
        return;
    }
    printf("rev=%lld succeeded=%d\n", (long long)resp.header_revision, resp.succeeded);
    for (size_t i = 0; i < resp.responses_len; i++) {
        const struct mvcc_op_resp *r = &resp.responses[i];
        printf("  ");
        if (r->type == MVCC_OP_RANGE)
            print_range(&r->u.range);
        else if (r->type == MVCC_OP_PUT)
            print_put(&r->u.put);
        else if (r->type == MVCC_OP_DELETE)
            print_del(&r->u.del);
    }
}

/* Watch events gathered by the callback, printed after the catch-up. */
struct wsink {
    int events;
    int64_t compacted;
};

static void print_packed(const uint8_t *p, size_t len)
{
    struct mvcc_kv kv;
    struct arena a;
    arena_init(&a, 4096);
    struct mvcc_range_resp dummy;
    (void)dummy;
    /* Decode with the same printer as ranges: fields of the packed KeyValue. */
    memset(&kv, 0, sizeof(kv));
    size_t off = 0;
    while (off < len) {
        uint64_t tag, v;
        off += varint_get(p + off, len - off, &tag);
        off += varint_get(p + off, len - off, &v);
        switch (tag >> 3) {
        case 1:
            kv.key = (struct mvcc_bytes){p + off, (size_t)v};
            off += v;
            break;
        case 5:
            kv.value = (struct mvcc_bytes){p + off, (size_t)v};
            off += v;
            break;
        case 2:
            kv.create_revision = (int64_t)v;
            break;
        case 3:
            kv.mod_revision = (int64_t)v;
            break;
        case 4:
            kv.version = (int64_t)v;
            break;
        case 6:
            kv.lease = (int64_t)v;
            break;
        }
    }
    print_kv(&kv);
    arena_free(&a);
}

static int watch_cb(void *ctx, const struct mvcc_watch_batch *b)
{
    struct wsink *w = ctx;
    if (b->compact_revision) {
        w->compacted = b->compact_revision;
        return 0;
    }
    for (size_t i = 0; i < b->events_len; i++) {
        const struct mvcc_event *e = &b->events[i];
        printf("  %s ", e->type == MVCC_EVENT_PUT ? "PUT" : "DELETE");
        print_packed(e->kv, e->kv_len);
        if (e->prev_kv) {
            printf(" prev=");
            print_packed(e->prev_kv, e->prev_kv_len);
        }
        printf("\n");
        w->events++;
    }
    return 0;
}

static void run_watch(char **tok, int n)
{
    struct mvcc_watch_req r = {0};
    const char *key = NULL, *end = NULL, *v;
    bool prefix = false, from = false;
    for (int i = 1; i < n; i++) {
        if (strcmp(tok[i], "--prefix") == 0)
            prefix = true;
        else if (strcmp(tok[i], "--from-key") == 0)
            from = true;
        else if (strcmp(tok[i], "--prev-kv") == 0)
            r.prev_kv = true;
        else if (strcmp(tok[i], "--no-put") == 0)
            r.no_put = true;
        else if (strcmp(tok[i], "--no-delete") == 0)
            r.no_delete = true;
        else if ((v = flag_val(tok[i], "--rev")))
            r.start_revision = atoll(v);
        else if (!key)
            key = tok[i];
        else
            end = tok[i];
    }
    if (!key) {
        printf("bad command\n");
        return;
    }
    r.key = bytes_of(key);
    if (end)
        r.range_end = bytes_of(end);
    if (prefix)
        r.range_end = prefix_end(key, scratch());
    if (from)
        r.range_end = NUL_END;
    struct wsink w = {0};
    int64_t id, crev = 0;
    int rc = mvcc_watch_create(S, &r, watch_cb, &w, &id, &crev);
    if (rc == BATON_ECOMPACTED) {
        printf("compacted=%lld\n", (long long)crev);
        return;
    }
    if (rc) {
        print_err(rc);
        return;
    }
    bool pending = true;
    while (pending && w.compacted == 0)
        if (mvcc_watch_step(S, 2, &pending) != 0)
            break;
    if (w.compacted)
        printf("compacted=%lld\n", (long long)w.compacted);
    else
        printf("events=%d\n", w.events);
    mvcc_watch_cancel(S, id);
}

static void run_line(char *line)
{
    char *tok[TOK_MAX];
    int n = split(line, tok);
    int rc;
    if (n == 0)
        return;
    if (strcmp(tok[0], "put") == 0) {
        struct mvcc_put_req r;
        struct mvcc_put_resp resp;
        if (parse_put(tok, n, &r) != 0)
            goto bad;
        begin();
        rc = mvcc_put(S, &r, &A, &resp);
        commit();
        if (rc)
            print_err(rc);
        else
            print_put(&resp);
    } else if (strcmp(tok[0], "get") == 0 || strcmp(tok[0], "rangereq") == 0) {
        struct mvcc_range_req r;
        struct mvcc_range_resp resp;
        if ((tok[0][0] == 'g' ? parse_range(tok, n, &r) : parse_rangereq(tok, n, &r)) != 0)
            goto bad;
        rc = mvcc_range(S, &r, &A, &resp);
        if (rc)
            print_err(rc);
        else
            print_range(&resp);
    } else if (strcmp(tok[0], "del") == 0) {
        struct mvcc_delete_req r;
        struct mvcc_delete_resp resp;
        if (parse_del(tok, n, &r) != 0)
            goto bad;
        begin();
        rc = mvcc_delete_range(S, &r, &A, &resp);
        commit();
        if (rc)
            print_err(rc);
        else
            print_del(&resp);
    } else if (strcmp(tok[0], "watch") == 0) {
        run_watch(tok, n);
    } else if (strcmp(tok[0], "compact") == 0 && n == 2) {
        begin();
        rc = mvcc_compact(S, atoll(tok[1]));
        commit();
        if (rc)
            print_err(rc);
        else
            printf("ok\n");
        bool done = false;
        while (!done && mvcc_compact_step(S, 2, &done) == 0) {
        }
    } else if (strcmp(tok[0], "lease") == 0 && n >= 3 && strcmp(tok[1], "grant") == 0) {
        int64_t id;
        begin();
        rc = mvcc_lease_grant(S, 0, atoll(tok[2]), &id, NULL);
        commit();
        if (rc) {
            print_err(rc);
            return;
        }
        lease_ids[nleases++] = id;
        printf("id=L%d ttl=%s\n", nleases, tok[2]);
    } else if (strcmp(tok[0], "lease") == 0 && n >= 3 && strcmp(tok[1], "revoke") == 0) {
        begin();
        rc = mvcc_lease_revoke(S, lease_of(tok[2]));
        commit();
        if (rc)
            print_err(rc);
        else
            printf("rev=%lld\n", (long long)mvcc_rev(S));
    } else if (strcmp(tok[0], "lease") == 0 && n >= 3 && strcmp(tok[1], "timetolive") == 0) {
        struct mvcc_lease_info info;
        rc = mvcc_lease_ttl(S, lease_of(tok[2]), 0, true, &A, &info);
        if (rc) {
            print_err(rc);
            return;
        }
        printf("granted=%lld keys=[", (long long)info.granted_ttl_s);
        for (size_t i = 0; i < info.keys_len; i++)
            printf("%s%.*s", i ? "," : "", (int)info.keys[i].len, (const char *)info.keys[i].p);
        printf("]\n");
    } else {
        goto bad;
    }
    return;
bad:
    printf("bad command\n");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SCRIPT DIR\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/mvcc.db", argv[2]);
    struct mvcc_config cfg;
    mvcc_config_default(&cfg);
    cfg.path = path;
    cfg.quota_bytes = 64 << 20;
    char err[512];
    int rc = mvcc_open(&cfg, &S, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    arena_init(&A, 1 << 16);
    char line[LINE_MAX_LEN], copy[LINE_MAX_LEN];
    int section = -1; /* inside a txn block: 0 compares, 1 success, 2 failure */
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0] == '#' || line[0] == 0)
            continue;
        if (section >= 0) {
            if (strcmp(line, "--") == 0) {
                section++;
            } else if (strcmp(line, "end") == 0) {
                run_txn();
                section = -1;
            } else if (section <= 2 && txn_n[section] < TXN_MAX) {
                snprintf(txn_lines[section][txn_n[section]++], LINE_MAX_LEN, "%s", line);
                printf("  %s\n", line);
            }
            continue;
        }
        printf("> %s\n", line);
        if (strcmp(line, "txn") == 0) {
            section = 0;
            txn_n[0] = txn_n[1] = txn_n[2] = 0;
            continue;
        }
        snprintf(copy, sizeof(copy), "%s", line);
        run_line(copy);
        arena_reset(&A);
    }
    fclose(f);
    mvcc_close(S);
    arena_free(&A);
    return 0;
}
