/*
 * The packed mvccpb.KeyValue codec and the LMDB record-key parser. Fields are written in field
 * order and proto3 defaults (0, empty) are omitted, as gogoproto's marshaller (etcd's) does, so
 * the bytes are what an etcd client expects. Decoding reads bytes from disk: every length is
 * checked and a malformed record is BATON_ECORRUPT.
 */
#include "mvcc/internal.h"

#include <string.h>

static size_t field_len_bytes(size_t n)
{
    return n ? 1 + varint_len(n) + n : 0;
}
static size_t field_len_int(int64_t v)
{
    return v ? 1 + varint_len((uint64_t)v) : 0;
}

size_t kv_encoded_len(const struct kvfields *f)
{
    return field_len_bytes(f->key.len) + field_len_int(f->create_revision) +
           field_len_int(f->mod_revision) + field_len_int(f->version) +
           field_len_bytes(f->value.len) + field_len_int(f->lease);
}

static size_t put_bytes(uint8_t *p, uint8_t tag, struct mvcc_bytes b)
{
    if (b.len == 0)
        return 0;
    size_t n = 0;
    p[n++] = tag;
    n += varint_put(p + n, b.len);
    memcpy(p + n, b.p, b.len);
    return n + b.len;
}
static size_t put_int(uint8_t *p, uint8_t tag, int64_t v)
{
    if (v == 0)
        return 0;
    p[0] = tag;
    return 1 + varint_put(p + 1, (uint64_t)v);
}

size_t kv_encode(const struct kvfields *f, uint8_t *p)
{
    size_t n = 0;
    n += put_bytes(p + n, 0x0a, f->key);
    n += put_int(p + n, 0x10, f->create_revision);
    n += put_int(p + n, 0x18, f->mod_revision);
    n += put_int(p + n, 0x20, f->version);
    n += put_bytes(p + n, 0x2a, f->value);
    n += put_int(p + n, 0x30, f->lease);
    return n;
}

int kv_decode(const uint8_t *p, size_t len, struct kvfields *f)
{
    memset(f, 0, sizeof(*f));
    size_t off = 0;
    while (off < len) {
        uint64_t tag, v;
        size_t n = varint_get(p + off, len - off, &tag);
        if (n == 0)
            return BATON_ECORRUPT;
        off += n;
        uint64_t field = tag >> 3, wt = tag & 7;
        n = varint_get(p + off, len - off, &v);
        if (n == 0)
            return BATON_ECORRUPT;
        off += n;
        if (wt == 2) {
            if (v > len - off)
                return BATON_ECORRUPT;
            struct mvcc_bytes b = {p + off, (size_t)v};
            off += (size_t)v;
            if (field == 1)
                f->key = b;
            else if (field == 5)
                f->value = b;
            else
                return BATON_ECORRUPT;
        } else if (wt == 0) {
            if (field == 2)
                f->create_revision = (int64_t)v;
            else if (field == 3)
                f->mod_revision = (int64_t)v;
            else if (field == 4)
                f->version = (int64_t)v;
            else if (field == 6)
                f->lease = (int64_t)v;
            else
                return BATON_ECORRUPT;
        } else {
            return BATON_ECORRUPT;
        }
    }
    return 0;
}

int revkey_get(const uint8_t *p, size_t len, uint64_t *r)
{
    if (len != 16 && !(len == 17 && p[16] == 't'))
        return BATON_ECORRUPT;
    uint64_t main = be64_get(p), sub = be64_get(p + 8);
    if (main >= (uint64_t)REV_MAIN_MAX || sub >= (uint64_t)REV_SUB_MAX)
        return BATON_ECORRUPT;
    *r = rev_pack((int64_t)main, (int64_t)sub, len == 17);
    return 0;
}
