/* In-memory fixture: an rpc server connection and an rpc client wired back to back, bytes
 * moved by pump(), time from a fake clock both sides share. */
#ifndef BATON_TEST_RPC_PAIR_H
#define BATON_TEST_RPC_PAIR_H

#include "echo_service.h"

extern uint64_t fake_now;
uint64_t fake_clock(void *ctx);

struct pair {
    struct rpc_server *srv;
    struct rpc_conn *conn;
    struct rpc_client *cl;
    struct buf s2c; /* everything the server wrote, for frame inspection */
    bool hold_s2c;  /* do not deliver server output (a client that stops reading) */
    int server_recv_rc;
};

/* cfg may be NULL for defaults (with the fake clock). */
void pair_open(struct pair *p, const struct rpc_server_config *cfg);
/* Moves bytes both ways until neither side has anything to say. */
void pair_pump(struct pair *p);
void pair_close(struct pair *p);

/* HTTP/2 frames the server sent: how many of a type; *code gets the error code of the last
 * GOAWAY (type 7) or RST_STREAM (type 3) seen. */
int frames_count(const struct buf *b, int type, uint32_t *code);

#endif

/* A hand-driven nghttp2 client talking to an rpc_conn in memory, for requests our own client
 * would never send (compressed flag, wrong content type, half-sent messages). */
#define RAW_STREAMS_MAX 64
struct raw_stream {
    int32_t id;
    int http_status;
    int grpc_status; /* -1 until seen */
    char grpc_message[256];
    bool closed;
    uint32_t close_code;
};
struct raw_client {
    void *h2; /* nghttp2_session */
    struct rpc_conn *conn;
    struct raw_stream s[RAW_STREAMS_MAX];
    void *bodies[RAW_STREAMS_MAX]; /* freed by raw_close: a reset stream never drains its body */
    int n;
};
void raw_open(struct raw_client *r, struct rpc_conn *conn);
/* Starts a request with an initial body (a whole gRPC frame or any bytes); end = END_STREAM
 * after it. extra_name may be NULL. Returns the stream's index in r->s. */
int raw_start(struct raw_client *r, const char *path, const char *content_type,
              const char *extra_name, const char *extra_value, const void *body, size_t len,
              bool end);
void raw_pump(struct raw_client *r);
void raw_close(struct raw_client *r);
