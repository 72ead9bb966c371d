/*
 * batonctl's output: aligned tables for people and JSON for scripts. A table collects its rows
 * (bounded) and prints them with every column padded to its widest cell; the JSON writer
 * escapes strings and tracks commas.
 */
#ifndef BATONCTL_OUT_H
#define BATONCTL_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TABLE_COLS_MAX 16
#define TABLE_ROWS_MAX 4096
#define TABLE_CELL_MAX 256

struct table {
    int cols;
    int rows; /* including the header */
    char (*cells)[TABLE_COLS_MAX][TABLE_CELL_MAX];
};

/* 0 or -1 (out of memory). The header is the first row. */
int table_init(struct table *t, int cols, const char *const *header);
/* Adds a row of cols printf-formatted cells: table_row(t, "%s", a, "%d", b) is not possible in
 * C, so cells are given already formatted. Rows past TABLE_ROWS_MAX are dropped (with a note
 * at print time). */
void table_row(struct table *t, const char *const *cells);
void table_print(const struct table *t, FILE *f);
void table_free(struct table *t);

/* JSON writer onto a FILE. */
struct json {
    FILE *f;
    int depth;
    bool need_comma[32];
};
void json_begin_object(struct json *j, const char *key);
void json_end_object(struct json *j);
void json_begin_array(struct json *j, const char *key);
void json_end_array(struct json *j);
void json_str(struct json *j, const char *key, const char *v);
void json_strn(struct json *j, const char *key, const char *v, size_t n);
void json_u64(struct json *j, const char *key, uint64_t v);
void json_i64(struct json *j, const char *key, int64_t v);
void json_bool(struct json *j, const char *key, bool v);
void json_double(struct json *j, const char *key, double v);
/* Raw JSON text (already valid), e.g. the cluster configuration. */
void json_raw(struct json *j, const char *key, const char *v);
void json_done(struct json *j);

#endif
