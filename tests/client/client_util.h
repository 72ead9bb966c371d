/* Helpers the libbaton tests share: a monotonic clock and a client on the cluster that
 * tests/compat/cluster.sh run started (CLUSTER_ENDPOINTS). */
#ifndef BATON_TESTS_CLIENT_UTIL_H
#define BATON_TESTS_CLIENT_UTIL_H

#include "test.h"

#include <baton.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* call_timeout_ms 0: libbaton's default. */
static inline struct baton_client *client_open(uint32_t call_timeout_ms)
{
    struct baton_options o;
    baton_options_default(&o);
    o.endpoints = getenv("CLUSTER_ENDPOINTS");
    if (!o.endpoints)
        test_fail(__FILE__, __LINE__, "CLUSTER_ENDPOINTS is not set (run under cluster.sh run)");
    if (call_timeout_ms)
        o.call_timeout_ms = call_timeout_ms;
    struct baton_client *c = NULL;
    CHECK_EQ(baton_open(&o, &c), 0);
    return c;
}

#endif
