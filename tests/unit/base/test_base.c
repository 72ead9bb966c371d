/* Unit tests for base/: CRC32C vectors, varints, buffers, arena, PRNG determinism, errors. */
#include "base/base.h"
#include "test.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

TEST(crc32c_known_vectors)
{
    /* RFC 3720 B.4 test vectors and the classic "123456789" check value. */
    CHECK_EQ_U64(crc32c("123456789", 9), 0xE3069283u);
    uint8_t zeros[32] = {0}, ones[32], inc[32];
    memset(ones, 0xff, sizeof(ones));
    for (int i = 0; i < 32; i++)
        inc[i] = (uint8_t)i;
    CHECK_EQ_U64(crc32c(zeros, 32), 0x8A9136AAu);
    CHECK_EQ_U64(crc32c(ones, 32), 0x62A8AB43u);
    CHECK_EQ_U64(crc32c(inc, 32), 0x46DD794Eu);
    CHECK_EQ_U64(crc32c("", 0), 0);
}

TEST(crc32c_extend_equals_whole)
{
    uint8_t data[1000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 3);
    uint32_t whole = crc32c(data, sizeof(data));
    for (size_t cut = 0; cut <= sizeof(data); cut += 37)
        CHECK_EQ_U64(crc32c_extend(crc32c(data, cut), data + cut, sizeof(data) - cut), whole);
}

TEST(varint_roundtrip_and_rejects)
{
    uint64_t vals[] = {0,         1, 127, 128, 300, 16383, 16384, UINT32_MAX, (uint64_t)1 << 63,
                       UINT64_MAX};
    for (size_t i = 0; i < BATON_ARRAY_LEN(vals); i++) {
        uint8_t b[VARINT_MAX_LEN];
        size_t n = varint_put(b, vals[i]);
        CHECK_EQ(n, varint_len(vals[i]));
        uint64_t v = 0;
        CHECK_EQ(varint_get(b, n, &v), n);
        CHECK_EQ_U64(v, vals[i]);
        CHECK_EQ(varint_get(b, n - 1, &v), 0); /* truncated */
    }
    uint8_t overlong[11];
    memset(overlong, 0x80, sizeof(overlong));
    uint64_t v;
    CHECK_EQ(varint_get(overlong, sizeof(overlong), &v), 0);
    uint8_t toobig[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    CHECK_EQ(varint_get(toobig, sizeof(toobig), &v), 0);
}

TEST(buf_append_printf_consume)
{
    struct buf b = {0};
    CHECK_OK(buf_append(&b, "hello", 5));
    CHECK_OK(buf_printf(&b, " %d-%s", 42, "x"));
    CHECK_MEM(b.data, b.len, "hello 42-x", 10);
    buf_consume(&b, 6);
    CHECK_MEM(b.data, b.len, "42-x", 4);
    for (int i = 0; i < 10000; i++)
        CHECK_OK(buf_append_varint(&b, (uint64_t)i));
    CHECK_GT(b.len, 10000);
    buf_free(&b);
    CHECK_EQ(b.len, 0);
}

TEST(arena_alignment_and_reset)
{
    struct arena a;
    arena_init(&a, 128);
    for (int i = 1; i < 200; i++) {
        uint8_t *p = arena_alloc(&a, (size_t)i);
        CHECK(p != NULL);
        CHECK_EQ((uintptr_t)p % 8, 0);
        memset(p, i, (size_t)i);
    }
    void *big = arena_alloc(&a, 100000);
    CHECK(big != NULL);
    memset(big, 1, 100000);
    char *s = arena_dup(&a, "abc", 4);
    CHECK_STR(s, "abc");
    arena_reset(&a);
    CHECK_EQ(a.used_bytes, 0);
    CHECK(arena_alloc(&a, 50000) != NULL); /* served from the kept chunk */
    arena_free(&a);
}

TEST(prng_is_deterministic)
{
    struct prng a, b;
    prng_seed(&a, 12345);
    prng_seed(&b, 12345);
    for (int i = 0; i < 1000; i++)
        CHECK_EQ_U64(prng_next(&a), prng_next(&b));
    prng_seed(&b, 12346);
    CHECK_NE(prng_next(&a) == prng_next(&b), 1);
    int hist[10] = {0};
    for (int i = 0; i < 100000; i++)
        hist[prng_below(&a, 10)]++;
    for (int i = 0; i < 10; i++)
        CHECK(hist[i] > 9000 && hist[i] < 11000);
}

TEST(strerror_covers_codes)
{
    for (int e = BATON_ERR_BASE - 1; e > BATON_ERR_LAST; e--) {
        const char *t = baton_strerror(e);
        CHECK(t != NULL);
        CHECK(strcmp(t, "unknown baton error") != 0);
    }
    CHECK_STR(baton_strerror(-ENOENT), strerror(ENOENT));
    CHECK_STR(baton_strerror(0), "success");
}

static char log_last[256];
static void log_capture(void *ctx, enum log_level level, const char *line, size_t len)
{
    (void)ctx, (void)level;
    snprintf(log_last, sizeof(log_last), "%.*s", (int)len, line);
}

TEST(log_sink_filters_and_formats)
{
    struct log_sink sink = {log_capture, NULL, LOG_INFO};
    log_last[0] = 0;
    log_write(&sink, LOG_DEBUG, "msg=%s", "dropped");
    CHECK_STR(log_last, "");
    log_write(&sink, LOG_WARN, "member=%x term=%d msg=%s", 0xab, 3, "hi");
    CHECK_STR(log_last, "level=warn member=ab term=3 msg=hi");
    log_write(NULL, LOG_ERROR, "msg=nothing"); /* a NULL sink is allowed */
}
