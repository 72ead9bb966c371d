/*
 * Member and cluster ids. They need to agree across members and be well spread, not be secret:
 * a 64-bit FNV-1a over the canonical text, finished with splitmix64's mixer.
 */
#include "server/server.h"

#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(uint64_t h, const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z ? z : 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t server_member_id(const char *const *peer_urls, int urls_len, const char *token,
                          uint64_t add_time_ms)
{
    const char *sorted[16];
    int n = urls_len < 16 ? urls_len : 16;
    memcpy(sorted, peer_urls, sizeof(char *) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(char *), cmp_str);
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++)
        h = fnv1a(h, sorted[i], strlen(sorted[i]) + 1);
    h = fnv1a(h, token, strlen(token) + 1);
    if (add_time_ms) {
        uint8_t t[8];
        be64_put(t, add_time_ms);
        h = fnv1a(h, t, 8);
    }
    return mix(h);
}

uint64_t server_cluster_id(const uint64_t *member_ids, int len)
{
    uint64_t ids[64];
    int n = len < 64 ? len : 64;
    memcpy(ids, member_ids, sizeof(uint64_t) * (size_t)n);
    qsort(ids, (size_t)n, sizeof(uint64_t), cmp_u64);
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++) {
        uint8_t b[8];
        be64_put(b, ids[i]);
        h = fnv1a(h, b, 8);
    }
    return mix(h);
}

/* Discovery answer: u64 cluster id, u64 asker's id (0: unknown), u32 count, then per member
 * u64 id, u16 name length, name, u16 URL length, URL (little-endian). */
int server_discover(struct server *s, const char *peer_url, struct buf *out)
{
    struct server_status st;
    server_status(s, &st);
    int n = 0;
    const struct server_member *m = server_members(s, &n);
    uint64_t asker = 0;
    uint32_t count = 0;
    for (int i = 0; i < n; i++) {
        if (!server_member_in_config(s, m[i].id) || m[i].peer_urls_len == 0)
            continue;
        count++;
        for (int u = 0; u < m[i].peer_urls_len; u++)
            if (strcmp(m[i].peer_urls[u], peer_url) == 0)
                asker = m[i].id;
    }
    uint8_t h[20];
    le64_put(h, st.cluster_id);
    le64_put(h + 8, asker);
    le32_put(h + 16, count);
    int rc = buf_append(out, h, sizeof(h));
    for (int i = 0; i < n && !rc; i++) {
        if (!server_member_in_config(s, m[i].id) || m[i].peer_urls_len == 0)
            continue;
        uint8_t r[8];
        le64_put(r, m[i].id);
        rc = buf_append(out, r, 8);
        const char *str[2] = {m[i].name, m[i].peer_urls[0]};
        for (int k = 0; k < 2 && !rc; k++) {
            uint8_t l[2];
            le16_put(l, (uint16_t)strlen(str[k]));
            rc = buf_append(out, l, 2);
            rc = rc ? rc : buf_append(out, str[k], strlen(str[k]));
        }
    }
    return rc;
}

static int take_str(const uint8_t *p, size_t len, size_t *off, char *out, size_t cap)
{
    if (len - *off < 2)
        return BATON_EPROTO;
    size_t n = le16_get(p + *off);
    *off += 2;
    if (len - *off < n || n >= cap)
        return BATON_EPROTO;
    memcpy(out, p + *off, n);
    out[n] = 0;
    *off += n;
    return 0;
}

int server_discovery_parse(const uint8_t *p, size_t len, struct server_discovery *d)
{
    memset(d, 0, sizeof(*d));
    if (len < 20)
        return BATON_EPROTO;
    d->cluster_id = le64_get(p);
    d->member_id = le64_get(p + 8);
    uint32_t count = le32_get(p + 16);
    if (count > SERVER_DISCOVERY_MAX || !d->cluster_id)
        return BATON_EPROTO;
    size_t off = 20;
    for (uint32_t i = 0; i < count; i++) {
        struct server_peer_info *m = &d->members[d->members_len++];
        if (len - off < 8)
            return BATON_EPROTO;
        m->id = le64_get(p + off);
        off += 8;
        int rc = take_str(p, len, &off, m->name, sizeof(m->name));
        rc = rc ? rc : take_str(p, len, &off, m->peer_url, sizeof(m->peer_url));
        if (rc || !m->id)
            return BATON_EPROTO;
    }
    return off == len ? 0 : BATON_EPROTO;
}
