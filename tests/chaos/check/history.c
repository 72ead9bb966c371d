/*
 * History files: one JSON object per line, written by the workload clients. The parser takes
 * the flat subset those clients write (string, integer, null, boolean and integer-array
 * values) and rejects anything else with the line and column, so a truncated or corrupted
 * history is an error, never a crash or a silent skip.
 */
#include "check.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define JSON_STR_MAX     256
#define HISTORY_LINE_MAX (8u << 20)

struct jparse {
    const char *s;
    size_t len, pos;
    char *err;
    size_t err_len;
};

static int jfail(struct jparse *j, const char *what)
{
    snprintf(j->err, j->err_len, "column %zu: %s", j->pos + 1, what);
    return BATON_ECORRUPT;
}

static void jspace(struct jparse *j)
{
    while (j->pos < j->len && (j->s[j->pos] == ' ' || j->s[j->pos] == '\t' ||
                               j->s[j->pos] == '\r' || j->s[j->pos] == '\n'))
        j->pos++;
}

static bool jeat(struct jparse *j, char c)
{
    jspace(j);
    if (j->pos < j->len && j->s[j->pos] == c) {
        j->pos++;
        return true;
    }
    return false;
}

/* A string into out (truncated past out_len - 1 bytes; escapes other than \uXXXX decoded,
 * \uXXXX replaced by '?': keys and values we read are ASCII). */
static int jstring(struct jparse *j, char *out, size_t out_len)
{
    size_t o = 0;
    if (!jeat(j, '"'))
        return jfail(j, "expected a string");
    while (j->pos < j->len) {
        char c = j->s[j->pos++];
        if (c == '"') {
            out[o] = 0;
            return 0;
        }
        if (c == '\\') {
            if (j->pos >= j->len)
                break;
            c = j->s[j->pos++];
            switch (c) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'u':
                if (j->pos + 4 > j->len)
                    return jfail(j, "short \\u escape");
                j->pos += 4;
                c = '?';
                break;
            case '"':
            case '\\':
            case '/':
                break;
            default:
                return jfail(j, "bad escape");
            }
        }
        if (o + 1 < out_len)
            out[o++] = c;
    }
    return jfail(j, "unterminated string");
}

static int jint(struct jparse *j, int64_t *v)
{
    jspace(j);
    bool neg = false;
    if (j->pos < j->len && j->s[j->pos] == '-') {
        neg = true;
        j->pos++;
    }
    size_t start = j->pos;
    uint64_t u = 0;
    while (j->pos < j->len && j->s[j->pos] >= '0' && j->s[j->pos] <= '9') {
        uint64_t d = (uint64_t)(j->s[j->pos] - '0');
        if (u > (UINT64_MAX - d) / 10 || u * 10 + d > (uint64_t)INT64_MAX)
            return jfail(j, "integer out of range");
        u = u * 10 + d;
        j->pos++;
    }
    if (j->pos == start)
        return jfail(j, "expected an integer");
    if (j->pos < j->len && (j->s[j->pos] == '.' || j->s[j->pos] == 'e' || j->s[j->pos] == 'E'))
        return jfail(j, "only integers are accepted");
    *v = neg ? -(int64_t)u : (int64_t)u;
    return 0;
}

static bool jword(struct jparse *j, const char *w)
{
    size_t n = strlen(w);
    jspace(j);
    if (j->pos + n <= j->len && memcmp(j->s + j->pos, w, n) == 0) {
        j->pos += n;
        return true;
    }
    return false;
}

struct jvalue {
    enum { JV_NULL, JV_INT, JV_STR, JV_LIST } type;
    int64_t i;
    char str[JSON_STR_MAX];
    int64_t *list;
    uint32_t list_len;
};

static int jlist(struct jparse *j, struct arena *a, struct jvalue *v)
{
    /* Count first so the list is one arena allocation. */
    size_t save = j->pos, count = 0;
    if (!jeat(j, ']')) {
        for (;;) {
            int64_t x;
            int rc = jint(j, &x);
            if (rc)
                return rc;
            if (++count > CHAOS_LIST_MAX)
                return jfail(j, "list too long");
            if (jeat(j, ']'))
                break;
            if (!jeat(j, ','))
                return jfail(j, "expected ',' or ']' in a list");
        }
    }
    v->type = JV_LIST;
    v->list_len = (uint32_t)count;
    v->list = NULL;
    if (count == 0)
        return 0;
    v->list = arena_alloc(a, count * sizeof(int64_t));
    if (!v->list)
        return BATON_ENOMEM;
    j->pos = save;
    for (size_t i = 0; i < count; i++) {
        BATON_ASSERT(jint(j, &v->list[i]) == 0);
        jeat(j, ',');
    }
    BATON_ASSERT(jeat(j, ']'));
    return 0;
}

static int jvalue(struct jparse *j, struct arena *a, struct jvalue *v)
{
    jspace(j);
    if (j->pos >= j->len)
        return jfail(j, "expected a value");
    char c = j->s[j->pos];
    if (c == '"') {
        v->type = JV_STR;
        return jstring(j, v->str, sizeof(v->str));
    }
    if (c == '[') {
        j->pos++;
        return jlist(j, a, v);
    }
    if (jword(j, "null")) {
        v->type = JV_NULL;
        return 0;
    }
    if (jword(j, "true") || jword(j, "false")) {
        v->type = JV_INT;
        v->i = j->s[j->pos - 1] == 'e' && j->s[j->pos - 2] == 'u';
        return 0;
    }
    v->type = JV_INT;
    return jint(j, &v->i);
}

static int map_enum(struct jparse *j, const char *s, const char *const *names, size_t n, int *out)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    *out = (int)n; /* the OTHER value of each enum */
    return 0;
}

static const char *const workload_names[] = {"reg", "append", "watch", "lock"};
static const char *const fn_names[] = {"read",  "write", "cas", "append",
                                       "event", "start", "end", "act"};
static const char *const outcome_names[] = {"ok", "fail", "info"};

static int apply_field(struct jparse *j, struct chaos_op *op, const char *name,
                       const struct jvalue *v, bool *have_out)
{
    int e;
    if (v->type == JV_NULL)
        return 0;
    if (strcmp(name, "l") == 0) {
        if (v->type != JV_LIST)
            return jfail(j, "\"l\" must be a list");
        op->list = v->list;
        op->list_len = v->list_len;
        return 0;
    }
    if (strcmp(name, "w") == 0 || strcmp(name, "f") == 0 || strcmp(name, "r") == 0 ||
        strcmp(name, "k") == 0) {
        if (v->type != JV_STR)
            return jfail(j, "expected a string value");
        switch (name[0]) {
        case 'w':
            map_enum(j, v->str, workload_names, BATON_ARRAY_LEN(workload_names), &e);
            op->w = (enum chaos_workload)e;
            break;
        case 'f':
            map_enum(j, v->str, fn_names, BATON_ARRAY_LEN(fn_names), &e);
            op->fn = (enum chaos_fn)e;
            break;
        case 'r':
            map_enum(j, v->str, outcome_names, BATON_ARRAY_LEN(outcome_names), &e);
            if (e == (int)BATON_ARRAY_LEN(outcome_names))
                return jfail(j, "\"r\" must be ok, fail or info");
            op->out = (enum chaos_outcome)e;
            *have_out = true;
            break;
        default:
            if (strlen(v->str) >= CHAOS_KEY_MAX)
                return jfail(j, "key too long");
            memcpy(op->key, v->str, strlen(v->str) + 1);
        }
        return 0;
    }
    static const char *const int_names[] = {"p", "t0", "t1", "a", "b", "v", "rev"};
    int64_t *const slots[] = {&op->p, &op->t0, &op->t1, &op->a, &op->b, &op->v, &op->rev};
    for (size_t i = 0; i < BATON_ARRAY_LEN(int_names); i++) {
        if (strcmp(name, int_names[i]) == 0) {
            if (v->type != JV_INT)
                return jfail(j, "expected an integer value");
            *slots[i] = v->i;
            return 0;
        }
    }
    return 0; /* unknown keys are comments for people */
}

static int parse_object(struct jparse *j, struct arena *a, struct chaos_op *op)
{
    bool have_out = false;
    struct jvalue *v = malloc(sizeof(*v));
    if (!v)
        return BATON_ENOMEM;
    int rc = 0;
    if (!jeat(j, '{')) {
        rc = jfail(j, "expected '{'");
        goto out;
    }
    if (jeat(j, '}'))
        goto done;
    for (;;) {
        char name[32];
        if ((rc = jstring(j, name, sizeof(name))) != 0)
            goto out;
        if (!jeat(j, ':')) {
            rc = jfail(j, "expected ':'");
            goto out;
        }
        if ((rc = jvalue(j, a, v)) != 0)
            goto out;
        if ((rc = apply_field(j, op, name, v, &have_out)) != 0)
            goto out;
        if (jeat(j, '}'))
            break;
        if (!jeat(j, ',')) {
            rc = jfail(j, "expected ',' or '}'");
            goto out;
        }
    }
done:
    jspace(j);
    if (j->pos != j->len)
        rc = jfail(j, "trailing bytes after the object");
    else if (!have_out)
        rc = jfail(j, "missing \"r\" (ok, fail or info)");
    else if (op->t1 < op->t0)
        rc = jfail(j, "t1 before t0");
out:
    free(v);
    return rc;
}

void chaos_history_init(struct chaos_history *h)
{
    memset(h, 0, sizeof(*h));
    arena_init(&h->arena, 1 << 16);
}

void chaos_history_free(struct chaos_history *h)
{
    free(h->ops);
    arena_free(&h->arena);
    memset(h, 0, sizeof(*h));
}

int chaos_history_add_line(struct chaos_history *h, const char *line, size_t len, char *err,
                           size_t err_len)
{
    struct jparse j = {.s = line, .len = len, .err = err, .err_len = err_len};
    jspace(&j);
    if (j.pos == j.len)
        return 0;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        struct chaos_op *ops = realloc(h->ops, cap * sizeof(*ops));
        if (!ops)
            return BATON_ENOMEM;
        h->ops = ops;
        h->cap = cap;
    }
    struct chaos_op *op = &h->ops[h->n];
    memset(op, 0, sizeof(*op));
    op->w = CHAOS_W_OTHER;
    op->fn = CHAOS_FN_OTHER;
    int rc = parse_object(&j, &h->arena, op);
    if (rc == 0) {
        op->line = (uint32_t)(h->n + 1);
        h->n++;
    }
    return rc;
}

int chaos_history_load(struct chaos_history *h, const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(err, err_len, "%s: %s", path, strerror(e));
        return -e;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    size_t lineno = 0;
    int rc = 0;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)got > HISTORY_LINE_MAX) {
            snprintf(err, err_len, "%s:%zu: line longer than %u bytes", path, lineno,
                     HISTORY_LINE_MAX);
            rc = BATON_ETOOBIG;
            break;
        }
        char why[200];
        size_t before = h->n;
        rc = chaos_history_add_line(h, line, (size_t)got, why, sizeof(why));
        if (rc) {
            snprintf(err, err_len, "%s:%zu: %s", path, lineno, why);
            break;
        }
        if (h->n > before)
            h->ops[h->n - 1].line = (uint32_t)lineno;
    }
    free(line);
    fclose(f);
    return rc;
}

void chaos_op_print(FILE *f, const struct chaos_op *op)
{
    fprintf(f, "{\"w\":\"%s\",\"f\":\"%s\",\"r\":\"%s\",\"p\":%" PRId64 ",\"k\":\"%s\"",
            op->w < CHAOS_W_OTHER ? workload_names[op->w] : "other",
            op->fn < CHAOS_FN_OTHER ? fn_names[op->fn] : "other", outcome_names[op->out], op->p,
            op->key);
    fprintf(f,
            ",\"t0\":%" PRId64 ",\"t1\":%" PRId64 ",\"a\":%" PRId64 ",\"b\":%" PRId64
            ",\"v\":%" PRId64 ",\"rev\":%" PRId64,
            op->t0, op->t1, op->a, op->b, op->v, op->rev);
    if (op->list || op->fn == CHAOS_READ) {
        fputs(",\"l\":[", f);
        for (uint32_t i = 0; i < op->list_len; i++)
            fprintf(f, "%s%" PRId64, i ? "," : "", op->list[i]);
        fputs("]", f);
    }
    fprintf(f, ",\"line\":%u}\n", op->line);
}

void chaos_report_add(struct chaos_report *rep, const char *kind, const char *key, size_t key_ops,
                      const char *fmt, ...)
{
    if (rep->anomalies < CHAOS_ANOMALIES_MAX) {
        struct chaos_anomaly *an = &rep->list[rep->anomalies];
        snprintf(an->kind, sizeof(an->kind), "%s", kind);
        snprintf(an->key, sizeof(an->key), "%s", key);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(an->what, sizeof(an->what), fmt, ap);
        va_end(ap);
    }
    rep->anomalies++;
    if (key[0] && (rep->smallest_key[0] == 0 || key_ops < rep->smallest_key_ops)) {
        snprintf(rep->smallest_key, sizeof(rep->smallest_key), "%s", key);
        rep->smallest_key_ops = key_ops;
    }
}
