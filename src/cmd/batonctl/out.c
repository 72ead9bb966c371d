/*
 * Tables and JSON for batonctl (see out.h).
 */
#include "out.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int table_init(struct table *t, int cols, const char *const *header)
{
    memset(t, 0, sizeof(*t));
    if (cols <= 0 || cols > TABLE_COLS_MAX)
        return -1;
    t->cols = cols;
    t->cells = calloc(TABLE_ROWS_MAX + 1, sizeof(*t->cells));
    if (!t->cells)
        return -1;
    table_row(t, header);
    return 0;
}

void table_row(struct table *t, const char *const *cells)
{
    if (t->rows > TABLE_ROWS_MAX)
        return;
    for (int c = 0; c < t->cols; c++)
        snprintf(t->cells[t->rows][c], TABLE_CELL_MAX, "%s", cells[c] ? cells[c] : "");
    t->rows++;
}

void table_print(const struct table *t, FILE *f)
{
    size_t w[TABLE_COLS_MAX] = {0};
    int rows = t->rows > TABLE_ROWS_MAX ? TABLE_ROWS_MAX : t->rows;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < t->cols; c++) {
            size_t n = strlen(t->cells[r][c]);
            if (n > w[c])
                w[c] = n;
        }
    char line[TABLE_COLS_MAX * (TABLE_CELL_MAX + 2) + 1];
    for (int r = 0; r < rows; r++) {
        size_t off = 0;
        for (int c = 0; c < t->cols; c++) {
            bool last = c == t->cols - 1;
            int n = snprintf(line + off, sizeof(line) - off, "%-*s%s", last ? 0 : (int)w[c],
                             t->cells[r][c], last ? "" : "  ");
            if (n > 0)
                off += (size_t)n;
            if (off >= sizeof(line))
                off = sizeof(line) - 1;
        }
        while (off > 0 && line[off - 1] == ' ')
            off--;
        line[off] = 0;
        fprintf(f, "%s\n", line);
    }
    if (t->rows > TABLE_ROWS_MAX)
        fprintf(f, "(more rows than %d; use -w json for all)\n", TABLE_ROWS_MAX - 1);
}

void table_free(struct table *t)
{
    free(t->cells);
    t->cells = NULL;
}

/* ---- JSON --------------------------------------------------------------------------------- */

static void put_escaped(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (ch < 0x20)
                fprintf(f, "\\u%04x", ch);
            else
                fputc(ch, f);
        }
    }
    fputc('"', f);
}

static void key(struct json *j, const char *k)
{
    if (j->depth > 0 && j->need_comma[j->depth])
        fputc(',', j->f);
    if (j->depth > 0)
        j->need_comma[j->depth] = true;
    if (k) {
        put_escaped(j->f, k, strlen(k));
        fputc(':', j->f);
    }
}

void json_begin_object(struct json *j, const char *k)
{
    key(j, k);
    fputc('{', j->f);
    if (j->depth < 31)
        j->depth++;
    j->need_comma[j->depth] = false;
}

void json_end_object(struct json *j)
{
    fputc('}', j->f);
    if (j->depth > 0)
        j->depth--;
}

void json_begin_array(struct json *j, const char *k)
{
    key(j, k);
    fputc('[', j->f);
    if (j->depth < 31)
        j->depth++;
    j->need_comma[j->depth] = false;
}

void json_end_array(struct json *j)
{
    fputc(']', j->f);
    if (j->depth > 0)
        j->depth--;
}

void json_str(struct json *j, const char *k, const char *v)
{
    json_strn(j, k, v ? v : "", v ? strlen(v) : 0);
}

void json_strn(struct json *j, const char *k, const char *v, size_t n)
{
    key(j, k);
    put_escaped(j->f, v, n);
}

void json_u64(struct json *j, const char *k, uint64_t v)
{
    key(j, k);
    fprintf(j->f, "%" PRIu64, v);
}

void json_i64(struct json *j, const char *k, int64_t v)
{
    key(j, k);
    fprintf(j->f, "%" PRId64, v);
}

void json_bool(struct json *j, const char *k, bool v)
{
    key(j, k);
    fputs(v ? "true" : "false", j->f);
}

void json_double(struct json *j, const char *k, double v)
{
    key(j, k);
    fprintf(j->f, "%.6g", v);
}

void json_raw(struct json *j, const char *k, const char *v)
{
    key(j, k);
    fputs(v && v[0] ? v : "null", j->f);
}

void json_done(struct json *j)
{
    fputc('\n', j->f);
    fflush(j->f);
}
