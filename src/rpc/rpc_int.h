/* rpc internals shared by the server and client halves: framing, output queues, encodings. */
#ifndef BATON_RPC_INT_H
#define BATON_RPC_INT_H

#include "rpc/rpc.h"

#include <protobuf-c/protobuf-c.h>

#define RPC_FRAME_HEADER 5

/* A drained output queue keeps at most this much memory for the next message. */
#define RPC_OUTQ_KEEP_BYTES (256u << 10)

/* Output waiting for HTTP/2 DATA frames: bytes [off, b.len) are pending. */
struct rpc_outq {
    struct buf b;
    size_t off;
};
static inline size_t rpc_outq_pending(const struct rpc_outq *q)
{
    return q->b.len - q->off;
}
/* How a queued message gets its bytes: packed from msg, copied from bytes, or written in place
 * by fill (exactly len bytes). */
struct rpc_msg_src {
    const ProtobufCMessage *msg;
    const void *bytes;
    size_t len;
    rpc_fill_fn fill;
    void *fill_ctx;
};
/* Appends a 5-byte gRPC frame header and the message. 0, BATON_ETOOBIG or BATON_ENOMEM. */
int rpc_outq_frame(struct rpc_outq *q, const struct rpc_msg_src *src);
/* Moves up to len pending bytes into dst; returns how many. */
size_t rpc_outq_take(struct rpc_outq *q, uint8_t *dst, size_t len);
void rpc_outq_free(struct rpc_outq *q);

/* Reassembles length-prefixed gRPC messages from DATA chunks. The announced length is checked
 * against max_bytes first; the buffer then grows with the bytes that actually arrive. */
struct rpc_deframer {
    uint8_t hdr[RPC_FRAME_HEADER];
    size_t hdr_len;
    uint32_t need; /* body length of the message being read */
    struct buf msg;
};
enum rpc_deframe_result {
    RPC_DEFRAME_MORE,       /* consumed everything, no complete message */
    RPC_DEFRAME_MESSAGE,    /* the message is in *msg, *msg_len (valid until the next call) */
    RPC_DEFRAME_TOO_LARGE,  /* announced length in *msg_len exceeds max */
    RPC_DEFRAME_COMPRESSED, /* compressed flag set */
    RPC_DEFRAME_BAD_FLAG,   /* flag byte other than 0 or 1 */
    RPC_DEFRAME_NOMEM,
};
/* Consumes bytes from *data, len bytes (both advanced) until a message completes or input ends. */
enum rpc_deframe_result rpc_deframe(struct rpc_deframer *d, const uint8_t **data, size_t *len,
                                    size_t max_bytes, const uint8_t **msg, size_t *msg_len);
/* True when no partial message is buffered. */
static inline bool rpc_deframer_idle(const struct rpc_deframer *d)
{
    return d->hdr_len == 0;
}
void rpc_deframer_free(struct rpc_deframer *d);
/* Bytes of a partial message held (0 between messages). */
static inline size_t rpc_deframer_buffered(const struct rpc_deframer *d)
{
    return d->hdr_len + (d->hdr_len == RPC_FRAME_HEADER ? d->msg.len : 0);
}

/* grpc-message encoding: percent-encodes bytes outside 0x20..0x7e and '%'. */
int rpc_percent_encode(struct buf *out, const char *s);
/* Decodes in place into a NUL-terminated string in out. */
int rpc_percent_decode(struct buf *out, const char *s, size_t len);

/* grpc-timeout "<1..8 digits><H|M|S|m|u|n>" to milliseconds (sub-ms rounds up to 1). False for
 * a malformed value. */
bool rpc_timeout_parse(const char *v, size_t len, uint64_t *ms);
/* Formats ms as a grpc-timeout value into out (room for 16 bytes). */
void rpc_timeout_format(uint64_t ms, char *out);

uint64_t rpc_clock_monotonic(void *ctx);

#endif
