/* libFuzzer driver for the history parser and the checkers: any bytes, split into lines, are
 * either rejected with a reason or checked without a crash, a leak or undefined behaviour. */
#include "check.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct chaos_history h;
    chaos_history_init(&h);
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == '\n') {
            char err[200];
            chaos_history_add_line(&h, (const char *)data + start, i - start, err, sizeof(err));
            start = i + 1;
        }
    }
    struct chaos_report *rep = calloc(1, sizeof(*rep));
    if (rep) {
        chaos_check_all(&h, 10000, rep);
        free(rep);
    }
    chaos_history_free(&h);
    return 0;
}
