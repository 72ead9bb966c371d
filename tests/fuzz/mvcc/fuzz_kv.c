/* Fuzzes the record decoders that read bytes from disk: the packed KeyValue and the revision
 * key. A decoded KeyValue must re-encode to the same length (the encoder omits defaults, so
 * only canonical input round-trips exactly; the length check holds when the input is canonical). */
#include "mvcc/internal.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kvfields f;
    if (kv_decode(data, size, &f) == 0) {
        size_t n = kv_encoded_len(&f);
        uint8_t buf[size + 64];
        BATON_ASSERT(n <= sizeof(buf));
        size_t w = kv_encode(&f, buf);
        BATON_ASSERT(w == n);
        struct kvfields g;
        BATON_ASSERT(kv_decode(buf, w, &g) == 0);
        BATON_ASSERT(g.key.len == f.key.len && g.value.len == f.value.len &&
                     g.create_revision == f.create_revision && g.version == f.version &&
                     g.mod_revision == f.mod_revision && g.lease == f.lease);
    }
    uint64_t r;
    if (revkey_get(data, size, &r) == 0) {
        uint8_t k[REVKEY_LEN];
        size_t n = revkey_put(k, r);
        BATON_ASSERT(n == size && memcmp(k, data, n) == 0);
    }
    return 0;
}
