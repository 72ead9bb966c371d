/* Shared inside net/: the libuv loop behind a struct net_loop. */
#ifndef BATON_NET_INT_H
#define BATON_NET_INT_H

#include "net/net.h"

#include <uv.h>

uv_loop_t *net_loop_uv(struct net_loop *l);

#endif
