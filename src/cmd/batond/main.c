/*
 * batond: one member of the baton control plane. Assembles the member (server/) with its edges
 * on one event loop: the peer transport and loop utilities (net/), the gRPC services (rpc/) and
 * the admin HTTP endpoint (http/). Exit codes: 0 after a clean shutdown, 1 when the member
 * cannot start or fails, 2 for bad flags.
 */
#include "bmetrics.h"
#include "flags.h"
#include "http/http.h"
#include "net/net.h"
#include "rpc/services.h"
#include "server/server.h"

#include <errno.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATOND_VERSION "0.1.0"

extern char **environ;

struct batond {
    struct batond_flags f;
    struct log_sink log;
    uint64_t self_id, cluster_id;
    struct server_peer_info peers[FLAGS_MEMBERS_MAX];
    int peers_len;
    char client_urls[FLAGS_URLS_MAX][300];
    const char *client_url_ptrs[FLAGS_URLS_MAX];

    struct net_loop *loop;
    struct server_datadir dir;
    struct server *srv;
    struct net_peers *net;
    struct rpc_server *rpc;
    struct services *svc;
    struct net_listener *listeners[FLAGS_URLS_MAX];
    int listeners_len;
    struct http_server *http;
    struct net_fd *http_fd;
    struct net_timer *http_timer, *tick;
    struct net_async *wal_wake;
    struct net_defer *defer; /* the server's loop-thread kicks */
    struct net_signal *sigint, *sigterm;
    struct bmetrics bm;
    int exit_code;
    bool stopping;
    uint64_t ticks;
};

static void url_string(const struct flags_url *u, char *out, size_t len)
{
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(out, len, "%s://%s%s%s:%u", u->tls ? "https" : "http", v6 ? "[" : "", u->host,
             v6 ? "]" : "", u->port);
}

/* ---- The member's environment ------------------------------------------------------------------
 */

static uint64_t env_now(void *ctx)
{
    return net_now_ms();
}

static int env_send(void *ctx, uint64_t to, bool bulk, const uint8_t *data, size_t len)
{
    struct batond *b = ctx;
    return net_peers_send(b->net, to, bulk ? NET_CHANNEL_BULK : NET_CHANNEL_MSG, data, len);
}

static void env_peer_set(void *ctx, uint64_t id, const char *url, bool remove)
{
    struct batond *b = ctx;
    if (remove) {
        net_peers_remove(b->net, id);
        return;
    }
    char host[256];
    uint16_t port;
    if (net_url_parse(url, host, sizeof(host), &port) == 0)
        net_peers_add(b->net, id, host, port);
    else
        log_write(&b->log, LOG_WARN, "msg=\"bad peer url\" peer=%llx url=\"%s\"",
                  (unsigned long long)id, url);
}

static void env_wake(void *ctx)
{
    net_async_send(((struct batond *)ctx)->wal_wake);
}

static void env_defer(void *ctx)
{
    net_defer_request(((struct batond *)ctx)->defer);
}

static void env_fatal(void *ctx, int err, const char *msg)
{
    struct batond *b = ctx;
    fprintf(stderr, "batond: fatal: %s\n", msg);
    b->exit_code = 1;
    net_loop_stop(b->loop);
}

static void on_wal_wake(void *ctx)
{
    struct batond *b = ctx;
    if (b->srv)
        server_on_wal(b->srv);
}

/* Raft ticks ten times per heartbeat interval, so timeouts (and the jitter after a leader's
 * death) have a tenth of a heartbeat's resolution; the services tick once per heartbeat. */
#define TICKS_PER_HEARTBEAT 10

static uint32_t tick_ms(const struct batond_flags *f)
{
    return f->heartbeat_interval_ms >= TICKS_PER_HEARTBEAT
               ? f->heartbeat_interval_ms / TICKS_PER_HEARTBEAT
               : 1;
}

static void on_tick(void *ctx)
{
    struct batond *b = ctx;
    server_tick(b->srv);
    if (b->svc && ++b->ticks % TICKS_PER_HEARTBEAT == 0)
        services_tick(b->svc);
}

static void on_peer_message(void *ctx, uint64_t from, const uint8_t *data, size_t len)
{
    struct batond *b = ctx;
    if (b->srv)
        server_on_peer_frame(b->srv, from, data, len);
}

static void on_peer_discover(void *ctx, const char *peer_url, struct buf *reply)
{
    struct batond *b = ctx;
    if (b->srv && server_discover(b->srv, peer_url, reply) != 0)
        buf_clear(reply); /* out of memory: an empty answer, which the asker rejects */
}

static void on_peer_down(void *ctx, uint64_t peer)
{
    struct batond *b = ctx;
    if (b->srv)
        server_on_peer_down(b->srv, peer);
}

/* ---- Admin HTTP --------------------------------------------------------------------------------
 */

struct health_req {
    struct batond *b;
    struct http_request *req;
};

static void health_done(void *ctx, int err, const struct server_result *res)
{
    struct health_req *h = ctx;
    char body[160];
    if (err)
        snprintf(body, sizeof(body), "{\"health\":\"false\",\"reason\":\"%s\"}",
                 err == BATON_ETIMEOUT ? "RAFT NO LEADER" : baton_strerror(err));
    else if (mvcc_alarm_nospace_armed(server_store(h->b->srv)))
        snprintf(body, sizeof(body), "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}");
    else
        snprintf(body, sizeof(body), "{\"health\":\"true\",\"reason\":\"\"}");
    http_respond(h->req, strstr(body, "true") ? 200 : 503, "application/json", body, strlen(body));
    free(h);
}

/* etcd's /health: healthy when a linearizable read goes through and no alarm is raised. */
static void on_health(void *ctx, struct http_request *req)
{
    struct batond *b = ctx;
    struct health_req *h = malloc(sizeof(*h));
    if (!h) {
        http_respond(req, 503, "application/json", "{\"health\":\"false\"}", 18);
        return;
    }
    h->b = b;
    h->req = req;
    if (server_read_barrier(b->srv, health_done, h, NULL) != 0)
        health_done(h, BATON_ETIMEOUT, NULL);
}

static void on_livez(void *ctx, struct http_request *req)
{
    http_respond(req, 200, "text/plain", "ok\n", 3);
}

static void on_readyz(void *ctx, struct http_request *req)
{
    struct batond *b = ctx;
    struct server_status st;
    server_status(b->srv, &st);
    if (st.leader)
        http_respond(req, 200, "text/plain", "ok\n", 3);
    else
        http_respond(req, 503, "text/plain", "no leader\n", 10);
}

static void on_version(void *ctx, struct http_request *req)
{
    static const char v[] = "{\"etcdserver\":\"3.5.0\",\"etcdcluster\":\"3.5.0\","
                            "\"baton\":\"" BATOND_VERSION "\"}";
    http_respond(req, 200, "application/json", v, sizeof(v) - 1);
}

static void on_metrics(void *ctx, struct http_request *req)
{
    struct batond *b = ctx;
    struct buf out = {0};
    if (bmetrics_render(&b->bm, &out) == 0)
        http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
    else
        http_respond(req, 503, "text/plain", "out of memory\n", 14);
    buf_free(&out);
}

static void on_http_io(void *ctx)
{
    http_server_run(((struct batond *)ctx)->http);
}

/* ---- Start and stop ----------------------------------------------------------------------------
 */

static void on_signal(void *ctx, int signum)
{
    struct batond *b = ctx;
    if (b->stopping) {
        fprintf(stderr, "batond: second signal, exiting now\n");
        _exit(1);
    }
    b->stopping = true;
    log_write(&b->log, LOG_INFO, "msg=\"shutting down\" signal=%d", signum);
    for (int i = 0; i < b->listeners_len; i++)
        net_listener_shutdown(b->listeners[i]);
    net_loop_stop(b->loop);
}

/* Member ids from --initial-cluster: one per name, over all of that name's peer URLs. */
static int compute_ids(struct batond *b, char *err, size_t err_len)
{
    const struct batond_flags *f = &b->f;
    uint64_t ids[FLAGS_MEMBERS_MAX];
    for (int i = 0; i < f->initial_cluster_len; i++) {
        const struct flags_member *m = &f->initial_cluster[i];
        int p = 0;
        while (p < b->peers_len && strcmp(b->peers[p].name, m->name) != 0)
            p++;
        if (p < b->peers_len)
            continue; /* later URLs of a name only add to its id, computed below */
        struct server_peer_info *pi = &b->peers[b->peers_len++];
        memset(pi, 0, sizeof(*pi));
        snprintf(pi->name, sizeof(pi->name), "%s", m->name);
        url_string(&m->peer, pi->peer_url, sizeof(pi->peer_url));
        char urls[FLAGS_MEMBERS_MAX][300];
        const char *ptrs[FLAGS_MEMBERS_MAX];
        int n = 0;
        for (int j = 0; j < f->initial_cluster_len; j++)
            if (strcmp(f->initial_cluster[j].name, m->name) == 0 && n < FLAGS_MEMBERS_MAX) {
                url_string(&f->initial_cluster[j].peer, urls[n], sizeof(urls[n]));
                ptrs[n] = urls[n];
                n++;
            }
        pi->id = server_member_id(ptrs, n, f->initial_cluster_token, 0);
        ids[b->peers_len - 1] = pi->id;
        if (strcmp(m->name, f->name) == 0)
            b->self_id = pi->id;
    }
    for (int i = 0; i < b->peers_len; i++)
        for (int j = 0; j < i; j++)
            if (b->peers[i].id == b->peers[j].id) {
                snprintf(err, err_len,
                         "--initial-cluster: members %s and %s have the same peer "
                         "URLs",
                         b->peers[i].name, b->peers[j].name);
                return BATON_EINVAL;
            }
    b->cluster_id = server_cluster_id(ids, b->peers_len);
    return 0;
}

static bool dir_has_files(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return false;
    struct dirent *e;
    bool any = false;
    while (!any && (e = readdir(d)))
        any = e->d_name[0] != '.';
    closedir(d);
    return any;
}

/* --initial-cluster-state existing on a new data directory: MemberAdd chose this member's id,
 * so ask the other members listed in --initial-cluster (by peer URL, as etcd does) who we are.
 * A member that has not applied the add yet answers "unknown"; keep asking for a while. */
static int discover_self(struct batond *b, char *err, size_t err_len)
{
    const struct batond_flags *f = &b->f;
    char self[300];
    url_string(&f->advertise_peer.urls[0], self, sizeof(self));
    static struct server_discovery d;
    struct buf reply = {0};
    uint64_t deadline = net_now_ms() + 15000;
    int last = BATON_ENOTFOUND;
    char asked[600] = "";
    while (net_now_ms() < deadline) {
        for (int i = 0; i < f->initial_cluster_len; i++) {
            const struct flags_member *m = &f->initial_cluster[i];
            if (strcmp(m->name, f->name) == 0)
                continue;
            char hp[300];
            snprintf(hp, sizeof(hp), "%s:%u", m->peer.host, m->peer.port);
            if (strlen(asked) + strlen(hp) < 500 && !strstr(asked, hp))
                snprintf(asked + strlen(asked), sizeof(asked) - strlen(asked), "%s%s",
                         asked[0] ? ", " : "", hp);
            int rc = net_peers_discover(m->peer.host, m->peer.port, self, 2000, &reply);
            if (rc == 0)
                rc = server_discovery_parse(reply.data, reply.len, &d);
            if (rc == 0 && d.member_id == 0)
                rc = BATON_ENOTFOUND;
            if (rc) {
                last = rc;
                continue;
            }
            buf_free(&reply);
            b->self_id = d.member_id;
            b->cluster_id = d.cluster_id;
            b->peers_len = BATON_MIN(d.members_len, FLAGS_MEMBERS_MAX);
            memcpy(b->peers, d.members, (size_t)b->peers_len * sizeof(b->peers[0]));
            log_write(&b->log, LOG_INFO,
                      "msg=\"joined an existing cluster\" member=%016llx cluster=%016llx "
                      "members=%d",
                      (unsigned long long)b->self_id, (unsigned long long)b->cluster_id,
                      d.members_len);
            return 0;
        }
        usleep(300 * 1000);
    }
    buf_free(&reply);
    if (last == BATON_ENOTFOUND)
        snprintf(err, err_len,
                 "--initial-cluster-state existing: no member at %s knows peer URL %s; add "
                 "this member first (etcdctl member add %s --peer-urls=%s)",
                 asked[0] ? asked : "(none listed)", self, f->name, self);
    else
        snprintf(err, err_len,
                 "--initial-cluster-state existing: cannot ask the members at %s who %s is: %s",
                 asked[0] ? asked : "(none listed)", self, baton_strerror(last));
    return last;
}

/* The ids this member runs with: from member/identity once written; before that computed from
 * the flags (a new cluster) or discovered (a member joining one); then written down. */
static int settle_identity(struct batond *b, char *err, size_t err_len)
{
    uint64_t m, c;
    int rc = server_identity_load(&b->dir, &m, &c, err, err_len);
    if (rc == 0) {
        b->self_id = m;
        b->cluster_id = c;
        return 0;
    }
    if (rc != BATON_ENOTFOUND)
        return rc;
    if (b->f.initial_cluster_existing && !b->f.restore_path[0] && !dir_has_files(b->dir.wal)) {
        rc = discover_self(b, err, err_len);
        if (rc)
            return rc;
    }
    return server_identity_save(&b->dir, b->self_id, b->cluster_id, err, err_len);
}

static int start_peers(struct batond *b, char *err, size_t err_len)
{
    const struct flags_url *u = &b->f.listen_peer.urls[0];
    struct net_peers_config pc = {.self_id = b->self_id,
                                  .cluster_id = b->cluster_id,
                                  .listen_host = u->host,
                                  .listen_port = u->port,
                                  .log = &b->log};
    struct net_peer_handler h = {on_peer_message, on_peer_down, b, on_peer_discover};
    int rc = net_peers_start(b->loop, &pc, &h, &b->net);
    if (rc)
        snprintf(err, err_len, "cannot listen for peers on %s:%u: %s", u->host, u->port,
                 baton_strerror(rc));
    return rc;
}

static int start_member(struct batond *b, char *err, size_t err_len)
{
    const struct batond_flags *f = &b->f;
    for (int i = 0; i < f->advertise_client.len; i++) {
        url_string(&f->advertise_client.urls[i], b->client_urls[i], sizeof(b->client_urls[i]));
        b->client_url_ptrs[i] = b->client_urls[i];
    }
    struct server_options o = {
        .member_id = b->self_id,
        .cluster_id = b->cluster_id,
        .name = f->name,
        .dir = &b->dir,
        .tick_ms = tick_ms(f),
        .heartbeat_ticks = f->heartbeat_interval_ms / tick_ms(f),
        .election_ticks = f->election_timeout_ms / tick_ms(f),
        .snapshot_count = f->snapshot_count,
        .quota_bytes = f->quota_backend_bytes,
        .max_txn_ops = f->max_txn_ops,
        .initial = b->peers,
        .initial_len = b->peers_len,
        .join = f->initial_cluster_existing,
        .client_urls = b->client_url_ptrs,
        .client_urls_len = f->advertise_client.len,
        .seed = net_now_ms() ^ ((uint64_t)getpid() << 32),
        .log = &b->log,
        .env = {b, env_now, env_send, env_peer_set, env_wake, env_fatal, env_defer},
        .observer = bmetrics_server_observer(&b->bm),
    };
    int rc = net_async_create(b->loop, on_wal_wake, b, &b->wal_wake);
    if (!rc)
        rc = net_defer_create(b->loop, on_wal_wake, b, &b->defer);
    if (!rc)
        rc = server_open(&o, &b->srv, err, err_len);
    if (!rc) {
        b->bm.srv = b->srv;
        bmetrics_set_member(&b->bm, b->self_id);
    }
    return rc;
}

static int start_clients(struct batond *b, char *err, size_t err_len)
{
    struct rpc_server_config rc_cfg;
    rpc_server_config_default(&rc_cfg);
    /* etcd accepts messages up to --max-request-bytes plus gRPC's overhead allowance. */
    rc_cfg.recv_msg_max_bytes = b->f.max_request_bytes + 512 * 1024;
    /* Finite, unlike etcd's, but room for real clients: the npm etcd3 client opens one
     * keep-alive stream per lease on one connection. */
    rc_cfg.streams_max = 10000;
    rc_cfg.log = &b->log;
    rc_cfg.observer = bmetrics_rpc_observer(&b->bm);
    int rc = rpc_server_create(&rc_cfg, &b->rpc);
    b->bm.rpc = b->rpc;
    struct services_config sc = {.max_request_bytes = b->f.max_request_bytes,
                                 .max_txn_ops = b->f.max_txn_ops,
                                 .log = &b->log,
                                 .watch_progress_ms = b->f.watch_progress_ms,
                                 .node_lease_ttl_ms = b->f.node_lease_ttl_ms,
                                 .node_heartbeat_ms = b->f.node_heartbeat_ms,
                                 .version = BATOND_VERSION};
    if (!rc)
        rc = services_create(b->rpc, b->srv, &sc, &b->svc);
    b->bm.svc = b->svc;
    for (int i = 0; !rc && i < b->f.listen_client.len; i++) {
        char url[300];
        url_string(&b->f.listen_client.urls[i], url, sizeof(url));
        rc = net_listen_rpc(b->loop, url, b->rpc, 0, &b->listeners[b->listeners_len]);
        if (rc)
            snprintf(err, err_len, "cannot listen for clients on %s: %s", url, baton_strerror(rc));
        else
            b->listeners_len++;
    }
    return rc;
}

static int start_http(struct batond *b, char *err, size_t err_len)
{
    static struct http_route routes[5];
    routes[0] = (struct http_route){"/health", on_health, b};
    routes[1] = (struct http_route){"/readyz", on_readyz, b};
    routes[2] = (struct http_route){"/livez", on_livez, b};
    routes[3] = (struct http_route){"/metrics", on_metrics, b};
    routes[4] = (struct http_route){"/version", on_version, b};
    const struct flags_url *u = &b->f.listen_metrics.urls[0];
    struct http_config hc = {
        .host = u->host, .port = u->port, .routes = routes, .routes_len = 5, .log = &b->log};
    int rc = http_server_start(&b->http, &hc);
    if (rc) {
        snprintf(err, err_len, "cannot serve admin HTTP on %s:%u: %s", u->host, u->port,
                 baton_strerror(rc));
        return rc;
    }
    rc = net_fd_watch(b->loop, http_server_fd(b->http), on_http_io, b, &b->http_fd);
    return rc ? rc : net_timer_start(b->loop, 100, 100, on_http_io, b, &b->http_timer);
}

static void print_endpoints(struct batond *b)
{
    char u[300];
    printf("batond %s: member %s (%016llx) of cluster %016llx\n", BATOND_VERSION, b->f.name,
           (unsigned long long)b->self_id, (unsigned long long)b->cluster_id);
    printf("  data directory: %s\n", b->dir.root);
    for (int i = 0; i < b->f.listen_client.len; i++) {
        url_string(&b->f.listen_client.urls[i], u, sizeof(u));
        printf("  clients (etcd v3 gRPC): %s\n", u);
    }
    url_string(&b->f.listen_peer.urls[0], u, sizeof(u));
    printf("  peers: %s\n", u);
    url_string(&b->f.listen_metrics.urls[0], u, sizeof(u));
    printf("  admin: %s/health %s/metrics\n", u, u);
    fflush(stdout);
}

static void log_to_stderr(void *ctx, enum log_level level, const char *line, size_t len)
{
    fprintf(stderr, "%.*s\n", (int)len, line);
}

static enum log_level parse_level(const char *s)
{
    if (strcmp(s, "debug") == 0)
        return LOG_DEBUG;
    if (strcmp(s, "warn") == 0)
        return LOG_WARN;
    if (strcmp(s, "error") == 0)
        return LOG_ERROR;
    return LOG_INFO;
}

static void shutdown_all(struct batond *b)
{
    for (int i = 0; i < b->listeners_len; i++)
        net_listener_close(b->listeners[i]);
    if (b->http) {
        net_fd_close(b->http_fd);
        net_timer_close(b->http_timer);
        http_server_stop(b->http);
    }
    net_timer_close(b->tick);
    net_signal_close(b->sigint);
    net_signal_close(b->sigterm);
    if (b->net)
        net_peers_stop(b->net, NULL, NULL);
    if (b->svc)
        services_destroy(b->svc);
    if (b->srv)
        server_close(b->srv);
    net_async_close(b->wal_wake);
    net_defer_close(b->defer);
    if (b->loop)
        net_loop_destroy(b->loop);
    if (b->rpc)
        rpc_server_destroy(b->rpc);
    bmetrics_free(&b->bm);
    server_datadir_close(&b->dir);
}

/* --restore: the new data directory gets the snapshot's data as its store; the member then
 * bootstraps the cluster --initial-cluster describes on top of it (as after `etcdctl snapshot
 * restore`). On failure the directories just created are removed again. */
static int restore_snapshot(struct batond *b, char *err, size_t err_len)
{
    if (!b->dir.fresh) {
        snprintf(err, err_len,
                 "%.900s: the data directory already holds a member; restore into a new one",
                 b->dir.member);
        return BATON_EEXIST;
    }
    int rc = mvcc_snapshot_restore(b->f.restore_path, b->dir.db, err, err_len);
    if (!rc && (rc = server_datadir_mark_restored(&b->dir, err, err_len)) != 0)
        unlink(b->dir.db);
    if (rc) {
        rmdir(b->dir.wal);
        rmdir(b->dir.snap);
        rmdir(b->dir.member);
        return rc;
    }
    log_write(&b->log, LOG_INFO, "msg=\"restored snapshot\" file=%s db=%s", b->f.restore_path,
              b->dir.db);
    return 0;
}

int main(int argc, char **argv)
{
    static struct batond b;
    char err[1024];
    signal(SIGPIPE, SIG_IGN);
    if (flags_parse(&b.f, argc, argv, environ, err, sizeof(err)) != 0) {
        fprintf(stderr, "batond: %s\n", err);
        return 2;
    }
    if (b.f.help) {
        flags_usage(stdout);
        return 0;
    }
    if (b.f.version) {
        printf("batond version %s (etcd v3 API 3.5)\n", BATOND_VERSION);
        return 0;
    }
    b.log = (struct log_sink){log_to_stderr, NULL, parse_level(b.f.log_level)};
    for (int i = 0; i < b.f.ignored_len; i++)
        log_write(&b.log, LOG_INFO,
                  "msg=\"flag accepted for etcd compatibility and ignored\" "
                  "flag=--%s",
                  b.f.ignored[i]);
    int rc = compute_ids(&b, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "batond: %s\n", err);
        return 2;
    }
    rc = server_datadir_open(b.f.data_dir, &b.dir, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "batond: %s\n", err);
        return 1;
    }
    if (b.f.restore_path[0] && restore_snapshot(&b, err, sizeof(err)) != 0) {
        fprintf(stderr, "batond: --restore: %s\n", err);
        server_datadir_close(&b.dir);
        return 1;
    }
    if (settle_identity(&b, err, sizeof(err)) != 0) {
        fprintf(stderr, "batond: %s\n", err);
        server_datadir_close(&b.dir);
        return 1;
    }
    err[0] = 0;
    rc = bmetrics_init(&b.bm, b.f.quota_backend_bytes ? b.f.quota_backend_bytes : 2ull << 30);
    rc = rc ? rc : net_loop_create(&b.log, &b.loop);
    rc = rc ? rc : start_peers(&b, err, sizeof(err));
    rc = rc ? rc : start_member(&b, err, sizeof(err));
    rc = rc ? rc : start_clients(&b, err, sizeof(err));
    rc = rc ? rc : start_http(&b, err, sizeof(err));
    rc = rc ? rc : net_timer_start(b.loop, tick_ms(&b.f), tick_ms(&b.f), on_tick, &b, &b.tick);
    rc = rc ? rc : net_signal_watch(b.loop, SIGINT, on_signal, &b, &b.sigint);
    rc = rc ? rc : net_signal_watch(b.loop, SIGTERM, on_signal, &b, &b.sigterm);
    if (rc) {
        fprintf(stderr, "batond: %s\n", err[0] ? err : baton_strerror(rc));
        shutdown_all(&b);
        return 1;
    }
    print_endpoints(&b);
    net_loop_run(b.loop);
    shutdown_all(&b);
    return b.exit_code;
}
