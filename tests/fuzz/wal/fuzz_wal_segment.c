/* Fuzzes WAL recovery (segment header and record decoding, torn-tail repair) through wal_open on
 * the memfs disk. Input: byte 0 picks the layout, the rest is segment content.
 *   bit 0: 1 = prepend a valid segment header (so the fuzzer works on records), 0 = raw file
 *   bit 1: 1 = put a valid, written-by-the-WAL segment before it (the input is the last one)
 * Whatever the bytes, recovery must return 0 or an error, never crash; and after a successful
 * open the repaired log must accept a write and reopen to the same state plus that write. */
#include "memfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEG_BYTES 8192

static void put_header(uint8_t *h, uint64_t seq, uint64_t first)
{
    /* wal.h's segment layout: magic, version, crc, seq, first index. */
    memset(h, 0, 32);
    memcpy(h, "BATNWAL\x01", 8);
    le32_put(h + 8, 1);
    le64_put(h + 16, seq);
    le64_put(h + 24, first);
    le32_put(h + 12, crc32c(h, 32));
}

static int count_fn(void *ctx, const struct wal_entry *e)
{
    (*(uint64_t *)ctx)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 64 << 10)
        return 0;
    uint8_t mode = data[0];
    data++, size--;
    struct memfs *fs = memfs_new();
    struct wal_options o = {.dir = "/w", .io = memfs_io(fs), .segment_bytes = SEG_BYTES};
    struct wal *w;
    uint64_t seq = 1;
    if (mode & 2) {
        /* A genuine first segment with a few entries, then the fuzzed one as seq 2. */
        BATON_ASSERT(wal_open(&o, &w, NULL, 0) == 0);
        uint8_t pay[40] = {7};
        struct wal_entry e[3] = {{1, 1, 0, pay, 40}, {2, 1, 0, pay, 3}, {3, 1, 1, pay, 0}};
        struct wal_batch b = {.entries = e, .entries_len = 3};
        uint64_t s;
        BATON_ASSERT(wal_submit(w, &b, &s) == 0 && wal_wait(w, s) == 0);
        BATON_ASSERT(wal_close(w) == 0);
        seq = 2;
    }
    char path[128];
    uint64_t first = (mode & 2) ? 4 : 1;
    snprintf(path, sizeof(path), "/w/%016llx-%016llx.wal", (unsigned long long)seq,
             (unsigned long long)first);
    uint8_t *file = malloc(size + 32);
    size_t len = 0;
    if (mode & 1) {
        put_header(file, seq, first);
        len = 32;
    }
    memcpy(file + len, data, size);
    len += size;
    memfs_write_file(fs, path, file, len);
    free(file);

    char em[512];
    if (wal_open(&o, &w, em, sizeof(em)) == 0) {
        struct wal_state st;
        wal_state_get(w, &st);
        uint64_t n = 0;
        int rc = wal_read_entries(w, 0, UINT64_MAX, count_fn, &n);
        BATON_ASSERT(rc == 0);
        BATON_ASSERT(n ==
                     (st.last_index >= st.first_index ? st.last_index - st.first_index + 1 : 0));
        uint8_t pay[10] = {1};
        struct wal_entry e = {
            .index = st.last_index + 1, .term = st.hs.term, .data = pay, .len = 10};
        struct wal_batch b = {.entries = &e, .entries_len = 1};
        uint64_t s;
        rc = wal_submit(w, &b, &s);
        if (rc == 0)
            rc = wal_wait(w, s);
        BATON_ASSERT(rc == 0);
        BATON_ASSERT(wal_close(w) == 0);
        /* The repaired log reopens: same state plus the entry just written. */
        rc = wal_open(&o, &w, em, sizeof(em));
        if (rc) {
            fprintf(stderr, "reopen after repair failed: %s\n", em);
            abort();
        }
        struct wal_state st2;
        wal_state_get(w, &st2);
        BATON_ASSERT(st2.last_index == st.last_index + 1);
        BATON_ASSERT(st2.snap.index == st.snap.index);
        BATON_ASSERT(memcmp(&st2.hs, &st.hs, sizeof(st.hs)) == 0);
        wal_close(w);
    } else {
        BATON_ASSERT(em[0] != 0); /* every refusal explains itself */
    }
    memfs_free(fs);
    return 0;
}
