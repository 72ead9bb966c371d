/* Fuzzes snapshot-file loading (header checks, streamed content verification) on the memfs disk.
 * Input: byte 0 odd = the rest is content, given a valid header (it must load and read back
 * exactly); even = the rest is the raw file (it must load or fail cleanly, never crash). */
#include "memfs.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 20)
        return 0;
    bool framed = data[0] & 1;
    data++, size--;
    struct memfs *fs = memfs_new();
    const struct wal_io *io = memfs_io(fs);
    const char *name = "0000000000000002-0000000000000009.snap";
    if (framed) {
        struct wal_snap_writer *s;
        BATON_ASSERT(wal_snap_create("/s", io, 9, 2, &s) == 0);
        for (size_t off = 0; off < size; off += 1000)
            BATON_ASSERT(wal_snap_write(s, data + off, BATON_MIN((size_t)1000, size - off)) == 0);
        BATON_ASSERT(wal_snap_finish(s) == 0);
    } else {
        memfs_write_file(fs, "/s/0000000000000002-0000000000000009.snap", data, size);
    }
    struct wal_snap_reader *r;
    struct wal_snap_info info;
    char em[512];
    int rc = wal_snap_open("/s", name, io, &r, &info, em, sizeof(em));
    BATON_ASSERT(!framed || rc == 0);
    if (rc == 0) {
        uint8_t *buf = malloc(info.len + 1);
        uint64_t got = 0;
        for (;;) {
            size_t n;
            BATON_ASSERT(wal_snap_read(r, buf + got, 777, &n) == 0);
            if (n == 0)
                break;
            got += n;
            BATON_ASSERT(got <= info.len);
        }
        BATON_ASSERT(got == info.len);
        BATON_ASSERT(!framed || (info.len == size && memcmp(buf, data, size) == 0));
        free(buf);
        wal_snap_close(r);
    } else {
        BATON_ASSERT(strstr(em, name) != NULL);
    }
    memfs_free(fs);
    return 0;
}
