/* The in-memory client/server fixture. */
#include "pair.h"
#include "test.h"

#include <stdio.h>
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

/* ---- Raw nghttp2 client ------------------------------------------------------------------- */

#include <nghttp2/nghttp2.h>
#include <stdlib.h>

struct raw_body {
    size_t len, off;
    bool end;
    uint8_t data[];
};

static ssize_t raw_read(nghttp2_session *h2, int32_t id, uint8_t *dst, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *user)
{
    struct raw_body *b = src->ptr;
    size_t n = BATON_MIN(len, b->len - b->off);
    memcpy(dst, b->data + b->off, n);
    b->off += n;
    if (b->off == b->len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!b->end)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

static int raw_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                      const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    struct raw_stream *s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (!s)
        return 0;
    if (nlen == 7 && memcmp(name, ":status", 7) == 0)
        s->http_status = atoi((const char *)value);
    else if (nlen == 11 && memcmp(name, "grpc-status", 11) == 0)
        s->grpc_status = atoi((const char *)value);
    else if (nlen == 12 && memcmp(name, "grpc-message", 12) == 0)
        snprintf(s->grpc_message, sizeof(s->grpc_message), "%.*s", (int)vlen, value);
    return 0;
}

static int raw_stream_close(nghttp2_session *h2, int32_t id, uint32_t code, void *user)
{
    struct raw_stream *s = nghttp2_session_get_stream_user_data(h2, id);
    if (s) {
        s->closed = true;
        s->close_code = code;
    }
    return 0;
}

void raw_open(struct raw_client *r, struct rpc_conn *conn)
{
    memset(r, 0, sizeof(*r));
    r->conn = conn;
    nghttp2_session_callbacks *cbs;
    CHECK_EQ(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_on_header_callback(cbs, raw_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, raw_stream_close);
    nghttp2_session *h2;
    CHECK_EQ(nghttp2_session_client_new(&h2, cbs, r), 0);
    nghttp2_session_callbacks_del(cbs);
    CHECK_EQ(nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    r->h2 = h2;
}

int raw_start(struct raw_client *r, const char *path, const char *content_type,
              const char *extra_name, const char *extra_value, const void *body, size_t len,
              bool end)
{
    CHECK_LT(r->n, RAW_STREAMS_MAX);
    struct raw_stream *s = &r->s[r->n];
    s->grpc_status = -1;
    nghttp2_nv nva[6];
    size_t n = 0;
#define NVS(k, v) nva[n++] = (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), 0}
    NVS(":method", "POST");
    NVS(":scheme", "http");
    NVS(":path", path);
    NVS(":authority", "x");
    NVS("content-type", content_type);
    if (extra_name)
        NVS(extra_name, extra_value);
#undef NVS
    struct raw_body *b = malloc(sizeof(*b) + len + 1);
    b->len = len;
    b->off = 0;
    b->end = end;
    memcpy(b->data, body, len);
    r->bodies[r->n] = b;
    nghttp2_data_provider prd = {.source.ptr = b, .read_callback = raw_read};
    s->id = nghttp2_submit_request(r->h2, NULL, nva, n, &prd, s);
    CHECK_GT(s->id, 0);
    return r->n++;
}

void raw_pump(struct raw_client *r)
{
    for (int i = 0; i < 10000; i++) {
        bool moved = false;
        const uint8_t *out;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(r->h2, &out)) > 0) {
            rpc_conn_recv(r->conn, out, (size_t)n);
            moved = true;
        }
        struct buf b = {0};
        CHECK_OK(rpc_conn_send(r->conn, &b, 1 << 20));
        if (b.len) {
            nghttp2_session_mem_recv(r->h2, b.data, b.len);
            moved = true;
        }
        buf_free(&b);
        if (!moved)
            return;
    }
    test_fail(__FILE__, __LINE__, "raw pump did not settle");
}

void raw_close(struct raw_client *r)
{
    nghttp2_session_del(r->h2);
    for (int i = 0; i < r->n; i++)
        free(r->bodies[i]);
}
