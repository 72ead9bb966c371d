/*
 * The parts of gRPC-over-HTTP/2 both ends share: the 5-byte message framing (flag + big-endian
 * length), output queues, grpc-message percent-encoding, grpc-timeout, and protobuf-c decoding
 * into an arena.
 */
#include "rpc/rpc_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void *arena_pb_alloc(void *ctx, size_t size)
{
    return arena_alloc(ctx, size ? size : 1);
}

static void arena_pb_free(void *ctx, void *p)
{
    /* The arena frees everything at once. */
}

ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, struct arena *arena,
                             const void *data, size_t len)
{
    ProtobufCAllocator a = {
        .alloc = arena_pb_alloc, .free = arena_pb_free, .allocator_data = arena};
    return protobuf_c_message_unpack(desc, &a, len, data);
}

int rpc_outq_frame(struct rpc_outq *q, const struct rpc_msg_src *src)
{
    size_t len = src->msg ? protobuf_c_message_get_packed_size(src->msg) : src->len;
    if (len > UINT32_MAX)
        return BATON_ETOOBIG;
    /* Drop consumed bytes first so the buffer does not grow while it drains. */
    if (q->off > 0 && (q->off == q->b.len || q->off >= q->b.cap / 2)) {
        buf_consume(&q->b, q->off);
        q->off = 0;
    }
    int rc = buf_reserve(&q->b, RPC_FRAME_HEADER + len);
    if (rc)
        return rc;
    uint8_t *p = q->b.data + q->b.len;
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24), p[2] = (uint8_t)(len >> 16), p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    if (src->msg) {
        size_t n = protobuf_c_message_pack(src->msg, p + RPC_FRAME_HEADER);
        BATON_ASSERT(n == len);
    } else if (src->fill) {
        src->fill(src->fill_ctx, p + RPC_FRAME_HEADER, len);
    } else if (len) {
        memcpy(p + RPC_FRAME_HEADER, src->bytes, len);
    }
    q->b.len += RPC_FRAME_HEADER + len;
    return 0;
}

size_t rpc_outq_take(struct rpc_outq *q, uint8_t *dst, size_t len)
{
    size_t n = BATON_MIN(len, rpc_outq_pending(q));
    if (n == 0)
        return 0; /* an empty or released queue may have no buffer: memcpy from NULL is UB */
    memcpy(dst, q->b.data + q->off, n);
    q->off += n;
    if (q->off == q->b.len) {
        q->b.len = 0;
        q->off = 0;
        /* A large message sent: give its memory back rather than keep it for the call. */
        if (q->b.cap > RPC_OUTQ_KEEP_BYTES)
            buf_free(&q->b);
    }
    return n;
}

void rpc_outq_free(struct rpc_outq *q)
{
    buf_free(&q->b);
    q->off = 0;
}

enum rpc_deframe_result rpc_deframe(struct rpc_deframer *d, const uint8_t **data, size_t *len,
                                    size_t max_bytes, const uint8_t **msg, size_t *msg_len)
{
    while (*len > 0 || (d->hdr_len == RPC_FRAME_HEADER && d->msg.len == d->need)) {
        if (d->hdr_len < RPC_FRAME_HEADER) {
            size_t n = BATON_MIN(*len, RPC_FRAME_HEADER - d->hdr_len);
            memcpy(d->hdr + d->hdr_len, *data, n);
            d->hdr_len += n, *data += n, *len -= n;
            if (d->hdr_len < RPC_FRAME_HEADER)
                return RPC_DEFRAME_MORE;
            d->need = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 |
                      (uint32_t)d->hdr[3] << 8 | d->hdr[4];
            d->msg.len = 0;
            if (d->msg.cap > 64 * 1024 && d->need < d->msg.cap / 4)
                buf_free(&d->msg); /* one large message does not pin memory for the call */
            if (d->hdr[0] == 1)
                return RPC_DEFRAME_COMPRESSED;
            if (d->hdr[0] != 0)
                return RPC_DEFRAME_BAD_FLAG;
            if (d->need > max_bytes) {
                *msg_len = d->need;
                return RPC_DEFRAME_TOO_LARGE;
            }
        }
        /* The buffer grows with the bytes that arrived, never with the announced length alone:
         * a peer announcing large messages and sending little costs us little. */
        size_t n = BATON_MIN(*len, d->need - d->msg.len);
        if (n) {
            if (buf_append(&d->msg, *data, n))
                return RPC_DEFRAME_NOMEM;
            *data += n, *len -= n;
        }
        if (d->msg.len == d->need) {
            d->hdr_len = 0;
            *msg = d->msg.data;
            *msg_len = d->need;
            return RPC_DEFRAME_MESSAGE;
        }
    }
    return RPC_DEFRAME_MORE;
}

void rpc_deframer_free(struct rpc_deframer *d)
{
    buf_free(&d->msg);
    d->hdr_len = 0;
}

int rpc_percent_encode(struct buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int rc;
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            rc = buf_append(out, p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            rc = buf_append(out, e, 3);
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int rpc_percent_decode(struct buf *out, const char *s, size_t len)
{
    int rc = buf_reserve(out, len + 1);
    if (rc)
        return rc;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        /* A '%' not followed by two hex digits is kept as is, as the gRPC spec asks. */
        if (s[i] == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            out->data[out->len++] = (uint8_t)(hi << 4 | lo);
            i += 2;
        } else {
            out->data[out->len++] = (uint8_t)s[i];
        }
    }
    out->data[out->len] = 0;
    return 0;
}

bool rpc_timeout_parse(const char *v, size_t len, uint64_t *ms)
{
    if (len < 2 || len > 9)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H':
        *ms = n * 3600 * 1000;
        break;
    case 'M':
        *ms = n * 60 * 1000;
        break;
    case 'S':
        *ms = n * 1000;
        break;
    case 'm':
        *ms = n;
        break;
    case 'u':
        *ms = (n + 999) / 1000;
        break;
    case 'n':
        *ms = (n + 999999) / 1000000;
        break;
    default:
        return false;
    }
    return true;
}

void rpc_timeout_format(uint64_t ms, char *out)
{
    /* At most 8 digits: pick the finest unit that fits. */
    if (ms <= 99999999)
        snprintf(out, 16, "%llum", (unsigned long long)ms);
    else if (ms / 1000 <= 99999999)
        snprintf(out, 16, "%lluS", (unsigned long long)(ms / 1000));
    else
        snprintf(out, 16, "%lluM", (unsigned long long)BATON_MIN(ms / 60000, 99999999));
}

uint64_t rpc_clock_monotonic(void *ctx)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
