/*
 * The cluster configuration's validator: a strict JSON (RFC 8259) recogniser. It builds
 * nothing; it only says whether the text is JSON and, if not, why and where. Nesting is bounded
 * (CONFIG_JSON_DEPTH_MAX), so the recursion is too. Hand-written because none of the Debian
 * packages the design allows parses JSON, and a recogniser is small.
 */
#include "cluster/cluster_tso.h"

#include <stdarg.h>
#include <stdio.h>

struct jp {
    const unsigned char *p;
    size_t len, at;
    char *err;
    size_t err_len;
};

__attribute__((format(printf, 2, 3))) static int jp_fail(struct jp *j, const char *fmt, ...)
{
    if (j->err_len > 0) {
        char what[160];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        snprintf(j->err, j->err_len, "%s at offset %zu", what, j->at);
    }
    return BATON_EINVAL;
}

static void skip_ws(struct jp *j)
{
    while (j->at < j->len) {
        unsigned char c = j->p[j->at];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        j->at++;
    }
}

static int hex4(struct jp *j, uint32_t *out)
{
    if (j->len - j->at < 4)
        return jp_fail(j, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = j->p[j->at];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return jp_fail(j, "bad hex digit in \\u escape");
        v = v << 4 | d;
        j->at++;
    }
    *out = v;
    return 0;
}

/* After a backslash: one escape; \u surrogates must come in high-low pairs. */
static int escape(struct jp *j)
{
    if (j->at >= j->len)
        return jp_fail(j, "unterminated string");
    unsigned char c = j->p[j->at++];
    switch (c) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        return 0;
    case 'u':
        break;
    default:
        j->at--;
        return jp_fail(j, "invalid escape '\\%c'", c >= 0x20 && c < 0x7f ? c : '?');
    }
    uint32_t u;
    int rc = hex4(j, &u);
    if (rc)
        return rc;
    if (u >= 0xDC00 && u <= 0xDFFF)
        return jp_fail(j, "lone low surrogate \\u%04X", (unsigned)u);
    if (u < 0xD800 || u > 0xDBFF)
        return 0;
    if (j->len - j->at < 2 || j->p[j->at] != '\\' || j->p[j->at + 1] != 'u')
        return jp_fail(j, "high surrogate \\u%04X without a low one", (unsigned)u);
    j->at += 2;
    uint32_t lo;
    rc = hex4(j, &lo);
    if (rc)
        return rc;
    if (lo < 0xDC00 || lo > 0xDFFF)
        return jp_fail(j, "high surrogate \\u%04X followed by \\u%04X", (unsigned)u, (unsigned)lo);
    return 0;
}

/* One UTF-8 sequence starting with a byte >= 0x80: shortest form, no surrogates, <= U+10FFFF. */
static int utf8(struct jp *j)
{
    unsigned char c = j->p[j->at];
    size_t n;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3, cp = c & 0x07, min = 0x10000;
    } else {
        return jp_fail(j, "invalid UTF-8 byte 0x%02X", c);
    }
    if (j->len - j->at - 1 < n)
        return jp_fail(j, "truncated UTF-8 sequence");
    for (size_t i = 1; i <= n; i++) {
        unsigned char k = j->p[j->at + i];
        if ((k & 0xC0) != 0x80)
            return jp_fail(j, "invalid UTF-8 sequence");
        cp = cp << 6 | (k & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return jp_fail(j, "invalid UTF-8 sequence (overlong, surrogate or out of range)");
    j->at += n + 1;
    return 0;
}

static int string(struct jp *j)
{
    j->at++; /* the opening quote */
    while (j->at < j->len) {
        unsigned char c = j->p[j->at];
        if (c == '"') {
            j->at++;
            return 0;
        }
        if (c < 0x20)
            return jp_fail(j, "control character 0x%02X in a string", c);
        if (c == '\\') {
            j->at++;
            int rc = escape(j);
            if (rc)
                return rc;
        } else if (c >= 0x80) {
            int rc = utf8(j);
            if (rc)
                return rc;
        } else {
            j->at++;
        }
    }
    return jp_fail(j, "unterminated string");
}

static bool digit_at(const struct jp *j)
{
    return j->at < j->len && j->p[j->at] >= '0' && j->p[j->at] <= '9';
}

static void digits(struct jp *j)
{
    while (digit_at(j))
        j->at++;
}

static int number(struct jp *j)
{
    if (j->p[j->at] == '-')
        j->at++;
    if (!digit_at(j))
        return jp_fail(j, "a number needs a digit");
    if (j->p[j->at] == '0') {
        j->at++;
        if (digit_at(j))
            return jp_fail(j, "leading zero in a number");
    } else {
        digits(j);
    }
    if (j->at < j->len && j->p[j->at] == '.') {
        j->at++;
        if (!digit_at(j))
            return jp_fail(j, "a fraction needs a digit");
        digits(j);
    }
    if (j->at < j->len && (j->p[j->at] == 'e' || j->p[j->at] == 'E')) {
        j->at++;
        if (j->at < j->len && (j->p[j->at] == '+' || j->p[j->at] == '-'))
            j->at++;
        if (!digit_at(j))
            return jp_fail(j, "an exponent needs a digit");
        digits(j);
    }
    return 0;
}

static int literal(struct jp *j, const char *word, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (j->at + i >= j->len || j->p[j->at + i] != (unsigned char)word[i])
            return jp_fail(j, "unexpected character");
    j->at += n;
    return 0;
}

static int value(struct jp *j, int depth);

static int container(struct jp *j, int depth, bool object)
{
    if (depth >= CONFIG_JSON_DEPTH_MAX)
        return jp_fail(j, "nesting deeper than %d", CONFIG_JSON_DEPTH_MAX);
    unsigned char close = object ? '}' : ']';
    j->at++;
    skip_ws(j);
    if (j->at < j->len && j->p[j->at] == close) {
        j->at++;
        return 0;
    }
    /* Bounded by the input: every turn consumes at least one byte. */
    for (;;) {
        int rc;
        if (object) {
            if (j->at >= j->len || j->p[j->at] != '"')
                return jp_fail(j, "expected a string key");
            if ((rc = string(j)))
                return rc;
            skip_ws(j);
            if (j->at >= j->len || j->p[j->at] != ':')
                return jp_fail(j, "expected ':'");
            j->at++;
        }
        if ((rc = value(j, depth + 1)))
            return rc;
        skip_ws(j);
        if (j->at >= j->len)
            return jp_fail(j, "unterminated %s", object ? "object" : "array");
        if (j->p[j->at] == close) {
            j->at++;
            return 0;
        }
        if (j->p[j->at] != ',')
            return jp_fail(j, "expected ',' or '%c'", close);
        j->at++;
        skip_ws(j);
    }
}

static int value(struct jp *j, int depth)
{
    skip_ws(j);
    if (j->at >= j->len)
        return jp_fail(j, "unexpected end of input");
    switch (j->p[j->at]) {
    case '{':
        return container(j, depth, true);
    case '[':
        return container(j, depth, false);
    case '"':
        return string(j);
    case 't':
        return literal(j, "true", 4);
    case 'f':
        return literal(j, "false", 5);
    case 'n':
        return literal(j, "null", 4);
    default:
        if (j->p[j->at] == '-' || digit_at(j))
            return number(j);
        return jp_fail(j, "unexpected character");
    }
}

int config_json_validate(const char *p, size_t len, bool object_only, char *err, size_t err_len)
{
    struct jp j = {(const unsigned char *)p, len, 0, err, err_len};
    if (err_len > 0)
        err[0] = 0;
    if (len > CONFIG_JSON_MAX_BYTES) {
        if (err_len > 0)
            snprintf(err, err_len, "%zu bytes, more than the limit of %u", len,
                     CONFIG_JSON_MAX_BYTES);
        return BATON_ETOOBIG;
    }
    skip_ws(&j);
    if (object_only && (j.at >= len || p[j.at] != '{'))
        return jp_fail(&j, "the configuration must be a JSON object");
    int rc = value(&j, 0);
    if (rc)
        return rc;
    skip_ws(&j);
    if (j.at != len)
        return jp_fail(&j, "trailing data after the JSON value");
    return 0;
}
