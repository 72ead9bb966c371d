/*
 * Cluster versions: "major.minor.patch" texts, their order, and the minimum over a set (the
 * version every member and node runs at least, which gates features during rolling upgrades).
 */
#include "cluster/cluster_tso.h"

#include <stdio.h>

/* One component: 1..9 digits, no leading zero unless the number is 0. */
static int parse_part(const char *p, size_t len, size_t *at, uint32_t *out)
{
    size_t i = *at, start = i;
    uint32_t v = 0;
    while (i < len && p[i] >= '0' && p[i] <= '9' && i - start < 10) {
        v = v * 10 + (uint32_t)(p[i] - '0');
        i++;
    }
    size_t n = i - start;
    if (n == 0 || n > 9 || (n > 1 && p[start] == '0'))
        return BATON_EINVAL;
    *at = i;
    *out = v;
    return 0;
}

int cluster_version_parse(const char *p, size_t len, struct cluster_version *v)
{
    size_t at = 0;
    struct cluster_version r;
    if (parse_part(p, len, &at, &r.major) || at >= len || p[at++] != '.' ||
        parse_part(p, len, &at, &r.minor) || at >= len || p[at++] != '.' ||
        parse_part(p, len, &at, &r.patch) || at != len)
        return BATON_EINVAL;
    *v = r;
    return 0;
}

static int cmp_u32(uint32_t a, uint32_t b)
{
    return a < b ? -1 : a > b;
}

int cluster_version_cmp(const struct cluster_version *a, const struct cluster_version *b)
{
    int c = cmp_u32(a->major, b->major);
    if (!c)
        c = cmp_u32(a->minor, b->minor);
    if (!c)
        c = cmp_u32(a->patch, b->patch);
    return c;
}

void cluster_version_format(const struct cluster_version *v, char *buf, size_t len)
{
    snprintf(buf, len, "%u.%u.%u", v->major, v->minor, v->patch);
}

int cluster_version_min(const char *const *texts, const size_t *lens, size_t n,
                        struct cluster_version *out, size_t *invalid)
{
    bool any = false;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        struct cluster_version v;
        if (cluster_version_parse(texts[i], lens[i], &v)) {
            bad++;
            continue;
        }
        if (!any || cluster_version_cmp(&v, out) < 0)
            *out = v;
        any = true;
    }
    if (invalid)
        *invalid = bad;
    return any ? 0 : BATON_ENOTFOUND;
}
