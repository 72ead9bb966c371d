/* raft/codec: the binary encoding of raft messages and configurations (skeleton). */
#include "raft/raft.h"

int raft_config_encode(const struct raft_config *c, struct buf *b)
{
    (void)c;
    (void)b;
    return BATON_EINVAL;
}

int raft_config_decode(const uint8_t *p, size_t len, struct raft_config *c)
{
    (void)p;
    (void)len;
    (void)c;
    return BATON_EPROTO;
}

int raft_msg_encode(const struct raft_msg *m, struct buf *b)
{
    (void)m;
    (void)b;
    return BATON_EINVAL;
}

int raft_msg_decode(const uint8_t *p, size_t len, struct raft_msg *m, struct arena *a)
{
    (void)p;
    (void)len;
    (void)m;
    (void)a;
    return BATON_EPROTO;
}
