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
