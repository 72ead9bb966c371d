/*
 * The operator's calls: etcd's Cluster service (members), Maintenance (status, move-leader,
 * snapshot) and baton.v1.Nodes' read and admin methods. batonctl is built on these.
 */
#include "internal.h"

#include "baton.pb-c.h"
#include "rpc.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Unary call + decode into a; *resp valid while a is. */
static int unary(struct baton_client *c, const char *path, int flags, const char *pin,
                 const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
                 struct arena *a, void **resp)
{
    struct op op = {.path = path, .flags = flags, .pin = pin};
    int rc = client_call(c, &op, req);
    if (rc == 0)
        rc = op_decode(&op, desc, a, resp);
    op_free(&op);
    return rc;
}

static void join_urls(char *out, size_t len, char **urls, size_t n)
{
    size_t off = 0;
    out[0] = 0;
    for (size_t i = 0; i < n && off < len; i++) {
        int w = snprintf(out + off, len - off, "%s%s", i ? "," : "", urls[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

static void member_from_pb(struct baton_member *m, const Etcdserverpb__Member *p)
{
    memset(m, 0, sizeof(*m));
    m->id = p->id;
    snprintf(m->name, sizeof(m->name), "%s", p->name ? p->name : "");
    join_urls(m->peer_urls, sizeof(m->peer_urls), p->peerurls, p->n_peerurls);
    join_urls(m->client_urls, sizeof(m->client_urls), p->clienturls, p->n_clienturls);
    m->learner = p->islearner;
}

int baton_member_list(struct baton_client *c, struct baton_member **members, size_t *len)
{
    if (!c || !members || !len)
        return client_fail(BATONE_INVAL, "member list: no output");
    Etcdserverpb__MemberListRequest req = ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
    req.linearizable = true;
    struct arena a;
    arena_init(&a, 4096);
    void *resp;
    int rc = unary(c, "/etcdserverpb.Cluster/MemberList", 0, NULL, &req.base,
                   &etcdserverpb__member_list_response__descriptor, &a, &resp);
    if (rc == 0) {
        Etcdserverpb__MemberListResponse *ml = resp;
        *members = calloc(ml->n_members ? ml->n_members : 1, sizeof(**members));
        if (!*members) {
            rc = client_fail(BATONE_NOMEM, "out of memory");
        } else {
            for (size_t i = 0; i < ml->n_members; i++)
                member_from_pb(&(*members)[i], ml->members[i]);
            *len = ml->n_members;
        }
    }
    arena_free(&a);
    return rc;
}

int baton_member_add(struct baton_client *c, const char *peer_urls, bool learner,
                     struct baton_member *added)
{
    if (!c || !peer_urls || !peer_urls[0])
        return client_fail(BATONE_INVAL, "member add: no peer URLs");
    char copy[BATON_URLS_MAX * 2];
    if (strlen(peer_urls) >= sizeof(copy))
        return client_fail(BATONE_TOOBIG, "member add: peer URLs too long");
    snprintf(copy, sizeof(copy), "%s", peer_urls);
    char *urls[16];
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n == BATON_ARRAY_LEN(urls))
            return client_fail(BATONE_TOOBIG, "member add: more than 16 peer URLs");
        urls[n++] = t;
    }
    Etcdserverpb__MemberAddRequest req = ETCDSERVERPB__MEMBER_ADD_REQUEST__INIT;
    req.peerurls = urls;
    req.n_peerurls = n;
    req.islearner = learner;
    struct arena a;
    arena_init(&a, 4096);
    void *resp;
    int rc = unary(c, "/etcdserverpb.Cluster/MemberAdd", OP_WRITE, NULL, &req.base,
                   &etcdserverpb__member_add_response__descriptor, &a, &resp);
    if (rc == 0 && added) {
        Etcdserverpb__MemberAddResponse *r = resp;
        if (r->member)
            member_from_pb(added, r->member);
        else
            memset(added, 0, sizeof(*added));
    }
    arena_free(&a);
    return rc;
}

static int member_by_id(struct baton_client *c, const char *path, uint64_t id,
                        const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc)
{
    struct arena a;
    arena_init(&a, 4096);
    void *resp;
    int rc = unary(c, path, OP_WRITE, NULL, req, desc, &a, &resp);
    arena_free(&a);
    (void)id;
    return rc;
}

int baton_member_remove(struct baton_client *c, uint64_t id)
{
    if (!c || !id)
        return client_fail(BATONE_INVAL, "member remove: no member id");
    Etcdserverpb__MemberRemoveRequest req = ETCDSERVERPB__MEMBER_REMOVE_REQUEST__INIT;
    req.id = id;
    return member_by_id(c, "/etcdserverpb.Cluster/MemberRemove", id, &req.base,
                        &etcdserverpb__member_remove_response__descriptor);
}

int baton_member_promote(struct baton_client *c, uint64_t id)
{
    if (!c || !id)
        return client_fail(BATONE_INVAL, "member promote: no member id");
    Etcdserverpb__MemberPromoteRequest req = ETCDSERVERPB__MEMBER_PROMOTE_REQUEST__INIT;
    req.id = id;
    return member_by_id(c, "/etcdserverpb.Cluster/MemberPromote", id, &req.base,
                        &etcdserverpb__member_promote_response__descriptor);
}

int baton_leader_transfer(struct baton_client *c, uint64_t id)
{
    if (!c || !id)
        return client_fail(BATONE_INVAL, "leader transfer: no member id");
    Etcdserverpb__MoveLeaderRequest req = ETCDSERVERPB__MOVE_LEADER_REQUEST__INIT;
    req.targetid = id;
    /* Only the leader may move leadership: "etcdserver: not leader" from a follower sends the
     * call through leader discovery and a retry. */
    return member_by_id(c, "/etcdserverpb.Maintenance/MoveLeader", id, &req.base,
                        &etcdserverpb__move_leader_response__descriptor);
}

int baton_endpoint_status(struct baton_client *c, const char *endpoint, struct baton_status *out)
{
    if (!c || !endpoint || !out)
        return client_fail(BATONE_INVAL, "status: no endpoint");
    char host[NET_HOST_MAX];
    uint16_t port;
    if (net_url_parse(endpoint, host, sizeof(host), &port) != 0)
        return client_fail(BATONE_INVAL, "malformed endpoint '%.100s' (want host:port)", endpoint);
    Etcdserverpb__StatusRequest req = ETCDSERVERPB__STATUS_REQUEST__INIT;
    struct arena a;
    arena_init(&a, 4096);
    void *resp;
    int rc = unary(c, "/etcdserverpb.Maintenance/Status", OP_NORETRY, endpoint, &req.base,
                   &etcdserverpb__status_response__descriptor, &a, &resp);
    if (rc == 0) {
        Etcdserverpb__StatusResponse *st = resp;
        memset(out, 0, sizeof(*out));
        snprintf(out->endpoint, sizeof(out->endpoint), "%s", endpoint);
        if (st->header) {
            out->member_id = st->header->member_id;
            out->cluster_id = st->header->cluster_id;
            out->revision = st->header->revision;
        }
        snprintf(out->version, sizeof(out->version), "%s", st->version ? st->version : "");
        out->db_size = st->dbsize;
        out->db_size_in_use = st->dbsizeinuse;
        out->leader = st->leader;
        out->raft_term = st->raftterm;
        out->raft_index = st->raftindex;
        out->raft_applied_index = st->raftappliedindex;
        out->learner = st->islearner;
        join_urls(out->errors, sizeof(out->errors), st->errors, st->n_errors);
    }
    arena_free(&a);
    return rc;
}

/* ---- snapshot ----------------------------------------------------------------------------- */

struct snap_sink {
    int fd;
    uint32_t attempt;
    uint64_t bytes;
    bool last_seen;
    struct arena arena;
};

static int snap_on_msg(struct op *op, const uint8_t *d, size_t n)
{
    struct snap_sink *sk = op->arg;
    arena_reset(&sk->arena);
    Etcdserverpb__SnapshotResponse *r = (Etcdserverpb__SnapshotResponse *)rpc_unpack(
        &etcdserverpb__snapshot_response__descriptor, &sk->arena, d, n);
    if (!r)
        return BATONE_SERVER;
    if (op->attempt != sk->attempt) {
        /* A retry on another member: start the file again. */
        if (ftruncate(sk->fd, 0) != 0 || lseek(sk->fd, 0, SEEK_SET) != 0)
            return BATONE_IO;
        sk->attempt = op->attempt;
        sk->bytes = 0;
    }
    size_t off = 0;
    while (off < r->blob.len) {
        ssize_t w = write(sk->fd, r->blob.data + off, r->blob.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return BATONE_IO;
        off += (size_t)w;
    }
    sk->bytes += r->blob.len;
    if (r->remaining_bytes == 0)
        sk->last_seen = true;
    return 0;
}

int baton_snapshot_save(struct baton_client *c, const char *path, uint64_t *bytes)
{
    if (!c || !path || !path[0])
        return client_fail(BATONE_INVAL, "snapshot save: no file");
    char part[4096];
    if (snprintf(part, sizeof(part), "%s.part", path) >= (int)sizeof(part))
        return client_fail(BATONE_INVAL, "snapshot save: path too long");
    struct snap_sink sk = {.fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
    if (sk.fd < 0)
        return client_fail(BATONE_IO, "snapshot save: %s: %s", part, strerror(errno));
    arena_init(&sk.arena, 64 * 1024);
    Etcdserverpb__SnapshotRequest req = ETCDSERVERPB__SNAPSHOT_REQUEST__INIT;
    /* A snapshot of any size takes as long as it takes: the deadline is generous. */
    struct op op = {.path = "/etcdserverpb.Maintenance/Snapshot",
                    .flags = OP_STREAM,
                    .on_msg = snap_on_msg,
                    .arg = &sk,
                    .timeout_ms = 10 * 60 * 1000};
    int rc = client_call(c, &op, &req.base);
    op_free(&op);
    arena_free(&sk.arena);
    if (rc == 0 && !sk.last_seen)
        rc = client_fail(BATONE_SERVER, "snapshot save: the stream ended before the last chunk");
    if (rc == 0 && fsync(sk.fd) != 0)
        rc = client_fail(BATONE_IO, "snapshot save: fsync %s: %s", part, strerror(errno));
    if (close(sk.fd) != 0 && rc == 0)
        rc = client_fail(BATONE_IO, "snapshot save: close %s: %s", part, strerror(errno));
    if (rc == 0 && rename(part, path) != 0)
        rc = client_fail(BATONE_IO, "snapshot save: rename to %s: %s", path, strerror(errno));
    if (rc) {
        unlink(part);
        return rc;
    }
    if (bytes)
        *bytes = sk.bytes;
    return 0;
}

/* ---- nodes (read and admin side; the agent is in cm.c) -------------------------------------- */

const char *baton_node_state_name(enum baton_node_state s)
{
    static const char *names[] = {"unknown", "joining", "up",       "suspect",
                                  "down",    "removed", "draining", "decommissioned"};
    if ((unsigned)s >= BATON_ARRAY_LEN(names))
        return "unknown";
    return names[s];
}

void node_from_pb(struct baton_node *n, const void *pb)
{
    const Baton__V1__Node *p = pb;
    memset(n, 0, sizeof(*n));
    n->id = p->id;
    snprintf(n->address, sizeof(n->address), "%s", p->address ? p->address : "");
    for (size_t i = 0; i < p->n_labels && i < BATON_LABELS_MAX; i++) {
        snprintf(n->labels[i].key, sizeof(n->labels[i].key), "%s",
                 p->labels[i]->key ? p->labels[i]->key : "");
        snprintf(n->labels[i].value, sizeof(n->labels[i].value), "%s",
                 p->labels[i]->value ? p->labels[i]->value : "");
        n->labels_len++;
    }
    n->capacity_bytes = p->capacity_bytes;
    snprintf(n->version, sizeof(n->version), "%s", p->version ? p->version : "");
    n->state = (enum baton_node_state)p->state;
    n->epoch = p->epoch;
    n->lease = p->lease;
    n->registered_unix_ms = p->registered_unix_ms;
    n->state_changed_unix_ms = p->state_changed_unix_ms;
    if (p->stats) {
        n->stats.used_bytes = p->stats->used_bytes;
        n->stats.available_bytes = p->stats->available_bytes;
        n->stats.shard_count = p->stats->shard_count;
        n->stats.leader_count = p->stats->leader_count;
        n->stats.cpu_usage = p->stats->cpu_usage;
    }
}

int baton_node_list(struct baton_client *c, enum baton_node_state state, struct baton_node **nodes,
                    size_t *len)
{
    if (!c || !nodes || !len)
        return client_fail(BATONE_INVAL, "node list: no output");
    Baton__V1__NodeListRequest req = BATON__V1__NODE_LIST_REQUEST__INIT;
    req.state = (Baton__V1__NodeState)state;
    struct arena a;
    arena_init(&a, 4096);
    void *resp;
    int rc = unary(c, "/baton.v1.Nodes/List", 0, NULL, &req.base,
                   &baton__v1__node_list_response__descriptor, &a, &resp);
    if (rc == 0) {
        Baton__V1__NodeListResponse *r = resp;
        *nodes = calloc(r->n_nodes ? r->n_nodes : 1, sizeof(**nodes));
        if (!*nodes) {
            rc = client_fail(BATONE_NOMEM, "out of memory");
        } else {
            for (size_t i = 0; i < r->n_nodes; i++)
                node_from_pb(&(*nodes)[i], r->nodes[i]);
            *len = r->n_nodes;
        }
    }
    arena_free(&a);
    return rc;
}

static int node_call(struct baton_client *c, const char *path, int flags,
                     const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
                     struct baton_node *out)
{
    struct arena a;
    arena_init(&a, 4096);
    void *resp;
    int rc = unary(c, path, flags, NULL, req, desc, &a, &resp);
    if (rc == 0 && out) {
        /* NodeGet / NodeDrain responses share the layout header + node. */
        Baton__V1__NodeGetResponse *r = resp;
        if (r->node)
            node_from_pb(out, r->node);
        else
            rc = client_fail(BATONE_SERVER, "%s: no node in the answer", path);
    }
    arena_free(&a);
    return rc;
}

int baton_node_get(struct baton_client *c, uint64_t id, struct baton_node *out)
{
    if (!c || !id || !out)
        return client_fail(BATONE_INVAL, "node get: no node id");
    Baton__V1__NodeGetRequest req = BATON__V1__NODE_GET_REQUEST__INIT;
    req.id = id;
    return node_call(c, "/baton.v1.Nodes/Get", 0, &req.base,
                     &baton__v1__node_get_response__descriptor, out);
}

int baton_node_drain(struct baton_client *c, uint64_t id, struct baton_node *out)
{
    if (!c || !id)
        return client_fail(BATONE_INVAL, "node drain: no node id");
    Baton__V1__NodeDrainRequest req = BATON__V1__NODE_DRAIN_REQUEST__INIT;
    req.id = id;
    /* Draining twice leaves the node draining: safe to retry. */
    return node_call(c, "/baton.v1.Nodes/Drain", 0, &req.base,
                     &baton__v1__node_drain_response__descriptor, out);
}

int baton_node_remove(struct baton_client *c, uint64_t id)
{
    if (!c || !id)
        return client_fail(BATONE_INVAL, "node remove: no node id");
    Baton__V1__NodeRemoveRequest req = BATON__V1__NODE_REMOVE_REQUEST__INIT;
    req.id = id;
    return node_call(c, "/baton.v1.Nodes/Remove", OP_WRITE, &req.base,
                     &baton__v1__node_remove_response__descriptor, NULL);
}
