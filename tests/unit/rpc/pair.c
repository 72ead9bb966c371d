/* The in-memory client/server fixture. */
#include "pair.h"
#include "test.h"

#include <string.h>

uint64_t fake_now = 1000000;

uint64_t fake_clock(void *ctx)
{
    return fake_now;
}

void pair_open(struct pair *p, const struct rpc_server_config *cfg)
{
    memset(p, 0, sizeof(*p));
    struct rpc_server_config sc;
    if (cfg) {
        sc = *cfg;
    } else {
        rpc_server_config_default(&sc);
        sc.clock = fake_clock;
    }
    CHECK_OK(rpc_server_create(&sc, &p->srv));
    CHECK_OK(echo_register(p->srv));
    CHECK_OK(rpc_conn_create(p->srv, NULL, NULL, &p->conn));
    struct rpc_client_config cc;
    rpc_client_config_default(&cc);
    cc.clock = fake_clock;
    CHECK_OK(rpc_client_create(&cc, NULL, NULL, &p->cl));
}

void pair_pump(struct pair *p)
{
    for (int i = 0; i < 100000; i++) {
        bool moved = false;
        struct buf b = {0};
        CHECK_OK(rpc_client_send(p->cl, &b, 64 * 1024));
        if (b.len) {
            int rc = rpc_conn_recv(p->conn, b.data, b.len);
            if (rc)
                p->server_recv_rc = rc;
            moved = true;
        }
        buf_clear(&b);
        if (!p->hold_s2c) {
            CHECK_OK(rpc_conn_send(p->conn, &b, 64 * 1024));
            if (b.len) {
                CHECK_OK(buf_append(&p->s2c, b.data, b.len));
                rpc_client_recv(p->cl, b.data, b.len);
                moved = true;
            }
        }
        buf_free(&b);
        if (!moved)
            return;
    }
    test_fail(__FILE__, __LINE__, "pump did not settle");
}

void pair_close(struct pair *p)
{
    rpc_client_destroy(p->cl);
    rpc_conn_destroy(p->conn);
    rpc_server_destroy(p->srv);
    buf_free(&p->s2c);
}

int frames_count(const struct buf *b, int type, uint32_t *code)
{
    int n = 0;
    for (size_t off = 0; off + 9 <= b->len;) {
        const uint8_t *h = b->data + off;
        size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        if (off + 9 + len > b->len)
            break;
        if (h[3] == type) {
            n++;
            const uint8_t *pl = h + 9;
            if (code && type == 7 && len >= 8)
                *code =
                    (uint32_t)pl[4] << 24 | (uint32_t)pl[5] << 16 | (uint32_t)pl[6] << 8 | pl[7];
            if (code && type == 3 && len >= 4)
                *code =
                    (uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 | (uint32_t)pl[2] << 8 | pl[3];
        }
        off += 9 + len;
    }
    return n;
}
