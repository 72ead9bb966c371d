/* libFuzzer: the proposal decoder on arbitrary bytes; whatever decodes must re-encode to a
 * payload that decodes to the same encoding (a fixed point). */
#include "server/request.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct arena a;
    arena_init(&a, 4096);
    struct request q;
    if (request_decode(data, size, &a, &q) == 0) {
        struct buf b1 = {0}, b2 = {0};
        if (request_encode(&q, &b1) == 0) {
            struct request q2;
            BATON_ASSERT(request_decode(b1.data, b1.len, &a, &q2) == 0);
            BATON_ASSERT(request_encode(&q2, &b2) == 0);
            BATON_ASSERT(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
        }
        buf_free(&b1);
        buf_free(&b2);
    }
    arena_free(&a);
    return 0;
}
