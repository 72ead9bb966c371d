/*
 * Fuzzes config_json_validate. Beyond "no crash, no overread", it checks properties any input
 * must keep: an error always comes with a reason naming an offset within the input; a valid
 * value stays valid inside an array and with whitespace around it; a valid value followed by
 * a stray byte is rejected.
 */
#include "cluster/cluster_tso.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    char err[256];
    int rc = config_json_validate((const char *)data, size, false, err, sizeof(err));
    if (rc) {
        BATON_ASSERT(rc == BATON_EINVAL);
        const char *at = strstr(err, " at offset ");
        BATON_ASSERT(at != NULL);
        BATON_ASSERT((size_t)strtoull(at + 11, NULL, 10) <= size);
        return 0;
    }
    BATON_ASSERT(err[0] == 0);
    char *wrapped = malloc(size + 4);
    if (!wrapped)
        return 0;
    wrapped[0] = ' ';
    wrapped[1] = '[';
    memcpy(wrapped + 2, data, size);
    wrapped[size + 2] = ']';
    wrapped[size + 3] = '\n';
    /* One more level of nesting is fine unless the value was at the depth bound already. */
    rc = config_json_validate(wrapped, size + 4, false, err, sizeof(err));
    BATON_ASSERT(rc == 0 || strstr(err, "nesting deeper than") != NULL);
    memcpy(wrapped, data, size);
    wrapped[size] = 'x';
    BATON_ASSERT(config_json_validate(wrapped, size + 1, false, err, sizeof(err)) == BATON_EINVAL);
    free(wrapped);
    return 0;
}
