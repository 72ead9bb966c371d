/*
 * Proposals: what a member puts into a Raft entry. Each entry carries one request, encoded in
 * a compact binary form (varints and length-prefixed bytes) so that server/ needs no protobuf:
 * the rpc layer translates etcd's protobuf messages into mvcc's structs, the server encodes
 * those here, and every member decodes and applies them.
 *
 * Entry payload: magic byte, format version, request id (varint), type, body. The request id
 * lets the member that proposed it find the waiting client when the entry is applied; id 0 is
 * an internal request nobody waits for (a lease revoked by expiry, an alarm raised by quota).
 *
 * Decoding is strict: every length is checked against the bytes present, counts are bounded,
 * nesting of transactions is bounded, and trailing garbage is an error. Decoded byte fields
 * point into the payload (borrowed); arrays come from the arena.
 */
#ifndef BATON_SERVER_REQUEST_H
#define BATON_SERVER_REQUEST_H

#include "base/base.h"
#include "mvcc/mvcc.h"

#define REQ_TXN_DEPTH_MAX 16
#define REQ_OPS_MAX       65536
#define REQ_PEER_URLS_MAX 8

enum req_type {
    REQ_PUT = 1,
    REQ_DELETE = 2,
    REQ_TXN = 3,
    REQ_COMPACT = 4,
    REQ_LEASE_GRANT = 5,
    REQ_LEASE_REVOKE = 6,
    REQ_ALARM = 7,
    REQ_MEMBER_ATTR = 8, /* a member's name, peer and client URLs (upserted; empty keeps) */
    REQ_TYPE_MAX = 8,
};

enum req_alarm_action { REQ_ALARM_GET = 0, REQ_ALARM_ACTIVATE = 1, REQ_ALARM_DEACTIVATE = 2 };
enum req_alarm_type { REQ_ALARM_NONE = 0, REQ_ALARM_NOSPACE = 1, REQ_ALARM_CORRUPT = 2 };

struct req_member_attr {
    uint64_t member_id;
    struct mvcc_bytes name;
    struct mvcc_bytes peer_urls[REQ_PEER_URLS_MAX];
    uint32_t peer_urls_len;
    struct mvcc_bytes client_urls[REQ_PEER_URLS_MAX];
    uint32_t client_urls_len;
};

struct request {
    uint64_t id; /* 0: internal, nobody waits */
    enum req_type type;
    union {
        struct mvcc_put_req put;
        struct mvcc_delete_req del;
        struct mvcc_txn_req txn;
        struct {
            int64_t revision;
            bool physical;
        } compact;
        struct {
            int64_t id; /* 0: generated from the entry's index */
            int64_t ttl_s;
        } lease_grant;
        int64_t lease_revoke;
        struct {
            enum req_alarm_action action;
            enum req_alarm_type type;
            uint64_t member_id;
        } alarm;
        struct req_member_attr member_attr;
    } u;
};

/* Appends the encoding of r to b. 0, BATON_ENOMEM, BATON_EINVAL (unknown type, too deep). */
int request_encode(const struct request *r, struct buf *b);
/* Decodes exactly len bytes. 0, BATON_EPROTO (malformed) or BATON_ENOMEM. */
int request_decode(const uint8_t *p, size_t len, struct arena *a, struct request *r);
const char *request_type_name(enum req_type t);

#endif
