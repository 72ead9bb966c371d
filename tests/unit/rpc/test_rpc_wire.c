/* The shared wire helpers: grpc-timeout, grpc-message percent-encoding, message framing. */
#include "rpc/rpc_int.h"
#include "test.h"

#include <string.h>

TEST(timeout_parse_and_format)
{
    uint64_t ms;
    CHECK(rpc_timeout_parse("1H", 2, &ms));
    CHECK_EQ(ms, 3600000);
    CHECK(rpc_timeout_parse("2M", 2, &ms));
    CHECK_EQ(ms, 120000);
    CHECK(rpc_timeout_parse("3S", 2, &ms));
    CHECK_EQ(ms, 3000);
    CHECK(rpc_timeout_parse("250m", 4, &ms));
    CHECK_EQ(ms, 250);
    CHECK(rpc_timeout_parse("1500u", 5, &ms));
    CHECK_EQ(ms, 2);
    CHECK(rpc_timeout_parse("1n", 2, &ms));
    CHECK_EQ(ms, 1);
    CHECK(rpc_timeout_parse("99999999S", 9, &ms));
    CHECK_EQ(ms, 99999999000ull);
    CHECK(!rpc_timeout_parse("123456789S", 10, &ms)); /* 9 digits: too long */
    CHECK(!rpc_timeout_parse("S", 1, &ms));
    CHECK(!rpc_timeout_parse("10x", 3, &ms));
    CHECK(!rpc_timeout_parse("1 S", 3, &ms));
    CHECK(!rpc_timeout_parse("-1S", 3, &ms));
    char out[16];
    rpc_timeout_format(5000, out);
    CHECK_STR(out, "5000m");
    rpc_timeout_format(100000000, out);
    CHECK_STR(out, "100000S");
    CHECK(rpc_timeout_parse(out, strlen(out), &ms));
    CHECK_EQ(ms, 100000000);
}

TEST(percent_encoding_roundtrip)
{
    struct buf enc = {0}, dec = {0};
    const char *s = "a%b\r\nc\x01\xff ok~";
    CHECK_OK(rpc_percent_encode(&enc, s));
    CHECK_MEM(enc.data, enc.len, "a%25b%0D%0Ac%01%FF ok~", 22);
    CHECK_OK(rpc_percent_decode(&dec, (const char *)enc.data, enc.len));
    CHECK_STR((const char *)dec.data, s);
    /* Malformed escapes pass through unchanged, as the gRPC spec asks. */
    buf_clear(&dec);
    CHECK_OK(rpc_percent_decode(&dec, "100%", 4));
    CHECK_STR((const char *)dec.data, "100%");
    buf_clear(&dec);
    CHECK_OK(rpc_percent_decode(&dec, "%zz%4", 5));
    CHECK_STR((const char *)dec.data, "%zz%4");
    buf_free(&enc);
    buf_free(&dec);
}

TEST(deframe_byte_by_byte_and_bounds)
{
    /* Three messages (5, 0 and 3 bytes) fed one byte at a time. */
    const uint8_t in[] = {0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o', 0,  0,
                          0, 0, 0, 0, 0, 0,   0,   3,   'a', 'b', 'c'};
    struct rpc_deframer d = {0};
    int got = 0;
    size_t lens[3];
    for (size_t i = 0; i < sizeof(in); i++) {
        const uint8_t *p = &in[i];
        size_t len = 1;
        for (;;) {
            const uint8_t *msg;
            size_t mlen;
            enum rpc_deframe_result r = rpc_deframe(&d, &p, &len, 16, &msg, &mlen);
            if (r == RPC_DEFRAME_MORE)
                break;
            CHECK_EQ(r, RPC_DEFRAME_MESSAGE);
            CHECK_LT(got, 3);
            lens[got++] = mlen;
            if (len == 0 && !(d.hdr_len == RPC_FRAME_HEADER && d.msg.len == d.need))
                break;
        }
    }
    CHECK_EQ(got, 3);
    CHECK_EQ(lens[0], 5);
    CHECK_EQ(lens[1], 0);
    CHECK_EQ(lens[2], 3);
    CHECK(rpc_deframer_idle(&d));

    /* Over the bound: refused on the header, before any body byte is buffered. */
    const uint8_t big[] = {0, 0, 0, 0, 17};
    const uint8_t *p = big;
    size_t len = sizeof(big), mlen = 0;
    const uint8_t *msg;
    CHECK_EQ(rpc_deframe(&d, &p, &len, 16, &msg, &mlen), RPC_DEFRAME_TOO_LARGE);
    CHECK_EQ(mlen, 17);
    CHECK_EQ(d.msg.len, 0);
    rpc_deframer_free(&d);

    const uint8_t comp[] = {1, 0, 0, 0, 1, 'x'};
    p = comp;
    len = sizeof(comp);
    CHECK_EQ(rpc_deframe(&d, &p, &len, 16, &msg, &mlen), RPC_DEFRAME_COMPRESSED);
    rpc_deframer_free(&d);
    const uint8_t flag[] = {7, 0, 0, 0, 1, 'x'};
    p = flag;
    len = sizeof(flag);
    CHECK_EQ(rpc_deframe(&d, &p, &len, 16, &msg, &mlen), RPC_DEFRAME_BAD_FLAG);
    rpc_deframer_free(&d);
}

TEST(outq_frames_and_drains)
{
    struct rpc_outq q = {0};
    CHECK_OK(rpc_outq_frame(&q, &(struct rpc_msg_src){.bytes = "abc", .len = 3}));
    CHECK_OK(rpc_outq_frame(&q, &(struct rpc_msg_src){.bytes = "", .len = 0}));
    CHECK_EQ(rpc_outq_pending(&q), 13);
    uint8_t out[16];
    CHECK_EQ(rpc_outq_take(&q, out, 4), 4);
    CHECK_EQ(rpc_outq_take(&q, out + 4, 16), 9);
    CHECK_MEM(out, 13,
              "\x00\x00\x00\x00\x03"
              "abc"
              "\x00\x00\x00\x00\x00",
              13);
    CHECK_EQ(rpc_outq_pending(&q), 0);
    rpc_outq_free(&q);
}

static void fill_pattern(void *ctx, uint8_t *dst, size_t len)
{
    for (size_t i = 0; i < len; i++)
        dst[i] = (uint8_t)(i * 7 + *(int *)ctx);
}

/* A message written in place lands after its header; once a large message drained, the queue
 * gives its memory back instead of keeping it for the call's life. */
TEST(outq_fill_in_place_and_release)
{
    struct rpc_outq q = {0};
    int seed = 3;
    size_t len = 1 << 20;
    CHECK_OK(rpc_outq_frame(
        &q, &(struct rpc_msg_src){.len = len, .fill = fill_pattern, .fill_ctx = &seed}));
    CHECK_EQ(rpc_outq_pending(&q), len + 5);
    uint8_t hdr[5], chunk[4096];
    CHECK_EQ(rpc_outq_take(&q, hdr, 5), 5);
    CHECK_MEM(hdr, 5, "\x00\x00\x10\x00\x00", 5);
    size_t got = 0, bad = 0;
    while (rpc_outq_pending(&q)) {
        size_t n = rpc_outq_take(&q, chunk, sizeof(chunk));
        for (size_t i = 0; i < n; i++)
            bad += chunk[i] != (uint8_t)((got + i) * 7 + 3);
        got += n;
    }
    CHECK_EQ(got, len);
    CHECK_EQ(bad, 0);
    CHECK_EQ(q.b.cap, 0);
    CHECK(q.b.data == NULL);
    /* Small messages keep their buffer. */
    CHECK_OK(rpc_outq_frame(&q, &(struct rpc_msg_src){.bytes = "xy", .len = 2}));
    CHECK_EQ(rpc_outq_take(&q, chunk, sizeof(chunk)), 7);
    CHECK(q.b.cap > 0);
    rpc_outq_free(&q);
}
