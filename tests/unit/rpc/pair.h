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
