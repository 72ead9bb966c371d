/*
 * Node keys, fencing compares and validation of what a node registers. The texts written into
 * err are what clients see (with INVALID_ARGUMENT), so they name the offending field and value.
 */
#include "cluster/cluster.h"
#include "cluster/cluster_tso.h"

#include <stdio.h>
#include <string.h>

const char *cluster_node_state_name(int state)
{
    static const char *const names[] = {
        "unknown",         "joining",        "up", "suspect", "down", "removed",
        "decommissioning", "decommissioned",
    };
    return state >= 0 && state < (int)BATON_ARRAY_LEN(names) ? names[state] : "unknown";
}

size_t cluster_node_key(uint64_t id, char out[CLUSTER_KEY_MAX])
{
    return (size_t)snprintf(out, CLUSTER_KEY_MAX, CLUSTER_NODES_PREFIX "%016llx",
                            (unsigned long long)id);
}

size_t cluster_node_epoch_key(uint64_t id, char out[CLUSTER_KEY_MAX])
{
    return (size_t)snprintf(out, CLUSTER_KEY_MAX, CLUSTER_NODES_PREFIX "%016llx/epoch",
                            (unsigned long long)id);
}

size_t cluster_node_alive_key(uint64_t id, char out[CLUSTER_KEY_MAX])
{
    return (size_t)snprintf(out, CLUSTER_KEY_MAX, CLUSTER_NODES_PREFIX "%016llx/alive",
                            (unsigned long long)id);
}

static int hex_digit(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool cluster_parse_key(const uint8_t *key, size_t len, uint64_t *id, enum cluster_key_kind *kind)
{
    const size_t plen = sizeof(CLUSTER_NODES_PREFIX) - 1;
    if (len < plen + 16 || memcmp(key, CLUSTER_NODES_PREFIX, plen) != 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < 16; i++) {
        int d = hex_digit(key[plen + i]);
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    const uint8_t *rest = key + plen + 16;
    size_t rest_len = len - plen - 16;
    if (rest_len == 0)
        *kind = CLUSTER_KEY_NODE;
    else if (rest_len == 6 && memcmp(rest, "/epoch", 6) == 0)
        *kind = CLUSTER_KEY_EPOCH;
    else if (rest_len == 6 && memcmp(rest, "/alive", 6) == 0)
        *kind = CLUSTER_KEY_ALIVE;
    else
        return false;
    *id = v;
    return true;
}

size_t cluster_epoch_text(uint64_t epoch, char out[CLUSTER_EPOCH_TEXT_MAX])
{
    return (size_t)snprintf(out, CLUSTER_EPOCH_TEXT_MAX, "%llu", (unsigned long long)epoch);
}

int cluster_epoch_parse(const uint8_t *p, size_t len, uint64_t *epoch)
{
    return cluster_parse_u64(p, len, epoch); /* canonical decimal, as cluster_epoch_text writes */
}

void cluster_fence_init(struct cluster_fence *f, uint64_t id, uint64_t epoch)
{
    memset(f, 0, sizeof(*f));
    size_t kl = cluster_node_epoch_key(id, f->key);
    size_t vl = cluster_epoch_text(epoch, f->value);
    f->cmp.result = MVCC_CMP_EQUAL;
    f->cmp.target = MVCC_CMP_VALUE;
    f->cmp.key = (struct mvcc_bytes){(const uint8_t *)f->key, kl};
    f->cmp.value = (struct mvcc_bytes){(const uint8_t *)f->value, vl};
}

#define ERR(...) (snprintf(err, err_len, __VA_ARGS__), BATON_EINVAL)

int cluster_validate_address(const char *address, char *err, size_t err_len)
{
    size_t len = address ? strlen(address) : 0;
    if (len == 0)
        return ERR("baton: malformed address: empty");
    if (len > CLUSTER_ADDRESS_MAX)
        return ERR("baton: malformed address: %zu bytes, at most %d", len, CLUSTER_ADDRESS_MAX);
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)address[i];
        if (c <= ' ' || c >= 0x7f)
            return ERR("baton: malformed address: byte 0x%02x at %zu is not printable", c, i);
    }
    return 0;
}

static bool label_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

/* Keys are printed only once known to be short and made of allowed characters. */
static int validate_label(const struct cluster_label *l, char *err, size_t err_len)
{
    const char *k = l->key ? l->key : "", *v = l->value ? l->value : "";
    size_t kl = strlen(k), vl = strlen(v);
    if (kl == 0)
        return ERR("baton: malformed label key \"\": want [a-z0-9_.-]{1,63}");
    if (kl > CLUSTER_LABEL_KEY_MAX)
        return ERR("baton: malformed label key: %zu bytes, want [a-z0-9_.-]{1,63}", kl);
    for (size_t i = 0; i < kl; i++)
        if (!label_key_char(k[i]))
            return ERR("baton: malformed label key: byte 0x%02x at %zu, want [a-z0-9_.-]{1,63}",
                       (uint8_t)k[i], i);
    if (vl > CLUSTER_LABEL_VALUE_MAX)
        return ERR("baton: malformed label \"%s\": value of %zu bytes, at most %d", k, vl,
                   CLUSTER_LABEL_VALUE_MAX);
    for (size_t i = 0; i < vl; i++) {
        uint8_t c = (uint8_t)v[i];
        if (c < ' ' || c >= 0x7f)
            return ERR("baton: malformed label \"%s\": value byte 0x%02x at %zu is not printable",
                       k, c, i);
    }
    return 0;
}

int cluster_validate_labels(const struct cluster_label *labels, size_t n, char *err, size_t err_len)
{
    if (n > CLUSTER_LABELS_MAX)
        return ERR("baton: malformed labels: %zu labels, at most %d", n, CLUSTER_LABELS_MAX);
    for (size_t i = 0; i < n; i++) {
        int rc = validate_label(&labels[i], err, err_len);
        if (rc)
            return rc;
        /* At most 64 labels: the quadratic check is cheaper than a set. */
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i].key, labels[j].key) == 0)
                return ERR("baton: malformed labels: duplicate key \"%s\"", labels[i].key);
    }
    return 0;
}

int cluster_validate_version(const char *version, char *err, size_t err_len)
{
    const char *p = version ? version : "";
    size_t len = strlen(p);
    bool ok = len > 0 && len <= 64;
    for (int part = 0; ok && part < 3; part++) {
        const char *start = p;
        while (*p >= '0' && *p <= '9')
            p++;
        size_t digits = (size_t)(p - start);
        ok = digits > 0 && digits <= 9 && !(digits > 1 && *start == '0');
        if (ok && part < 2)
            ok = *p++ == '.';
    }
    if (!ok || *p != '\0') {
        if (len > 64)
            return ERR("baton: malformed version: %zu bytes, want major.minor.patch", len);
        for (size_t i = 0; i < len; i++) /* len > 0: version is not NULL */
            if ((uint8_t)version[i] < ' ' || (uint8_t)version[i] >= 0x7f)
                return ERR("baton: malformed version: want major.minor.patch");
        return ERR("baton: malformed version \"%s\": want major.minor.patch",
                   version ? version : "");
    }
    return 0;
}
