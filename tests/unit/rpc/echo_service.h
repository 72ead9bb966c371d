/* The Echo test service (echo.proto) on the rpc server core, and a client-side recorder. */
#ifndef BATON_TEST_ECHO_SERVICE_H
#define BATON_TEST_ECHO_SERVICE_H

#include "rpc/rpc.h"

#include "echo.pb-c.h"

#define ECHO_HELD_MAX 64

struct echo_state {
    struct rpc_call *held[ECHO_HELD_MAX]; /* Hold calls the handler keeps */
    int held_len;
    int cancels;          /* on_cancel calls */
    int last_cancel_code; /* code of the last on_cancel */
    int ebusy;            /* rpc_call_send said BATON_EBUSY */
    int writable;         /* on_writable calls */
    int started;          /* calls that reached a handler */
};
extern struct echo_state echo_state;

/* Registers the four Echo methods. */
int echo_register(struct rpc_server *srv);
/* Finishes the held call i with OK and reply payload. */
void echo_finish_held(int i, const char *payload);

/* Client side: what a call saw. */
struct echo_result {
    int msgs;
    int next_seq;
    bool order_ok;
    bool closed;
    int code;
    char message[512];
    size_t last_len;
    uint8_t last_payload_head[64];
    char token[64];
};
extern const struct rpc_client_callbacks echo_result_cbs;
void echo_result_init(struct echo_result *r);

#endif
