/* Fuzzes opening a data file: the input is written as the LMDB file, then the store is opened
 * (structural check, index rebuild, lease restore), read in full and hashed. Any outcome but a
 * crash, a sanitizer report or a leak is fine. */
#include "mvcc/mvcc.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[128], lock[160];
    snprintf(path, sizeof(path), "/tmp/fuzz-mvcc-open-%d.db", (int)getpid());
    snprintf(lock, sizeof(lock), "%s-lock", path);
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    struct mvcc_config cfg;
    mvcc_config_default(&cfg);
    cfg.path = path;
    cfg.map_size_bytes = 64 << 20;
    struct mvcc_store *s = NULL;
    char err[256];
    if (mvcc_open(&cfg, &s, err, sizeof(err)) == 0) {
        struct arena a;
        arena_init(&a, 1 << 16);
        struct mvcc_range_req r = {.key = {(const uint8_t *)"", 1},
                                   .range_end = {(const uint8_t *)"", 1}};
        struct mvcc_range_resp resp;
        (void)mvcc_range(s, &r, &a, &resp);
        uint32_t h;
        int64_t c, rev;
        (void)mvcc_hash_kv(s, 0, &h, &c, &rev);
        arena_free(&a);
        mvcc_close(s);
    }
    unlink(path);
    unlink(lock);
    return 0;
}
