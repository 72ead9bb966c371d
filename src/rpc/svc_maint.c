/*
 * etcdserverpb.Maintenance: Status, Alarm, Defragment, Hash, HashKV, MoveLeader, Snapshot.
 *
 * Snapshot: a thread copies the store (mvcc_snapshot_copy, an LMDB read transaction) into an
 * unlinked temporary file while the loop goes on; svc_maint_tick notices the end of the copy and
 * the file is streamed in chunks, as fast as the call's output bound allows (on_writable
 * resumes), each chunk with the bytes remaining, then a last message with the SHA-256 of the
 * data (etcd's format: `etcdctl snapshot save` checks it). At most SNAP_JOBS_MAX copies at once.
 *
 * Defragment runs mvcc_defrag on the loop (etcd blocks the member the same way) and is refused
 * while a snapshot copy runs, since the defragmentation replaces the LMDB environment.
 */
#include "rpc/svc.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SNAP_JOBS_MAX    4
#define SNAP_CHUNK_BYTES (64 * 1024)
#define STATUS_VERSION   "3.5.0"

struct snap_job {
    struct snap_job *next;
    struct services *sv;
    struct rpc_call *call; /* NULL once the call is gone */
    pthread_t thread;
    bool joined;
    int done; /* atomic: the copy thread finished */
    int copy_rc;
    int fd;
    bool streaming;
    uint64_t size, off;
    EVP_MD_CTX *md;
    uint8_t sha[EVP_MAX_MD_SIZE];
    unsigned sha_len; /* > 0 once the data is all sent and the digest final */
};

struct maint {
    struct snap_job *jobs;
    int jobs_len;
};

static void send_and_finish(struct rpc_call *call, const ProtobufCMessage *m)
{
    int rc = m ? rpc_call_send(call, m) : BATON_ENOMEM;
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

static void finish_etcd(struct rpc_call *call, enum rpc_etcd_error e)
{
    struct rpc_status st = rpc_etcd_status(e);
    rpc_call_finish(call, st.code, st.message);
}

/* ---- Status ---------------------------------------------------------------------------------- */

static void on_status(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)msg;
    struct services *sv = ctx;
    struct arena *a = rpc_call_arena(call);
    struct server_status st;
    server_status(sv->s, &st);
    Etcdserverpb__StatusResponse m = ETCDSERVERPB__STATUS_RESPONSE__INIT;
    m.header = svc_header(sv, a, 0);
    m.version = STATUS_VERSION;
    m.dbsize = (int64_t)st.db_size;
    m.dbsizeinuse = (int64_t)st.db_size_in_use;
    m.leader = st.leader;
    m.raftindex = st.raft_index;
    m.raftterm = st.term;
    m.raftappliedindex = st.applied;
    m.islearner = st.is_learner;
    char **errors = arena_alloc(a, 2 * sizeof(char *));
    if (!errors || !m.header) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    size_t n = 0;
    if (st.leader == 0)
        errors[n++] = (char *)rpc_etcd_status(RPC_ETCD_NO_LEADER).message;
    if (mvcc_alarm_nospace_armed(server_store(sv->s))) {
        char *e = arena_alloc(a, 64);
        if (!e) {
            rpc_call_finish_err(call, BATON_ENOMEM);
            return;
        }
        snprintf(e, 64, "memberID:%llu alarm:NOSPACE ", (unsigned long long)st.leader);
        errors[n++] = e;
    }
    m.errors = errors;
    m.n_errors = n;
    send_and_finish(call, &m.base);
}

/* ---- Alarm ----------------------------------------------------------------------------------- */

struct alarm_call {
    struct services *sv;
    struct rpc_call *call;
    struct server_call *pending;
    const Etcdserverpb__AlarmRequest *req;
    bool was_armed;
};

/* The alarms armed now. NOSPACE is the only one the store keeps; it does not record which
 * member raised it, so the answer names the leader. */
static void alarm_respond(struct services *sv, struct rpc_call *call, bool only_if, bool include)
{
    struct arena *a = rpc_call_arena(call);
    Etcdserverpb__AlarmResponse m = ETCDSERVERPB__ALARM_RESPONSE__INIT;
    m.header = svc_header(sv, a, 0);
    Etcdserverpb__AlarmMember *am = arena_alloc(a, sizeof(*am));
    Etcdserverpb__AlarmMember **list = arena_alloc(a, sizeof(*list));
    if (!m.header || !am || !list) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    struct server_status st;
    server_status(sv->s, &st);
    bool armed = only_if ? include : mvcc_alarm_nospace_armed(server_store(sv->s));
    if (armed) {
        etcdserverpb__alarm_member__init(am);
        am->memberid = st.leader ? st.leader : st.member_id;
        am->alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
        list[0] = am;
        m.alarms = list;
        m.n_alarms = 1;
    }
    send_and_finish(call, &m.base);
}

static void on_alarm_done(void *ctx, int err, const struct server_result *res)
{
    (void)res;
    struct alarm_call *c = ctx;
    c->pending = NULL;
    rpc_call_set_user(c->call, NULL);
    if (err) {
        svc_finish_err(c->call, err);
        return;
    }
    if (c->req->action == ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE)
        alarm_respond(c->sv, c->call, true, true);
    else
        alarm_respond(c->sv, c->call, true, c->was_armed);
}

static void on_alarm_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct alarm_call *c = rpc_call_user(call);
    if (c && c->pending)
        server_call_cancel(c->pending);
}

static void on_alarm(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const Etcdserverpb__AlarmRequest *p = (const Etcdserverpb__AlarmRequest *)msg;
    if (p->action == ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET) {
        alarm_respond(sv, call, false, false);
        return;
    }
    if ((p->action != ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE &&
         p->action != ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE) ||
        p->alarm != ETCDSERVERPB__ALARM_TYPE__NOSPACE) {
        /* CORRUPT is not kept by the store yet; NONE names no alarm. */
        rpc_call_finish(call, GRPC_INVALID_ARGUMENT,
                        "baton: only the NOSPACE alarm can be activated or deactivated");
        return;
    }
    struct alarm_call *c = arena_alloc(rpc_call_arena(call), sizeof(*c));
    if (!c) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    memset(c, 0, sizeof(*c));
    c->sv = sv;
    c->call = call;
    c->req = p;
    c->was_armed = mvcc_alarm_nospace_armed(server_store(sv->s));
    struct request q = {.type = REQ_ALARM};
    q.u.alarm.action = p->action == ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE
                           ? REQ_ALARM_ACTIVATE
                           : REQ_ALARM_DEACTIVATE;
    q.u.alarm.type = REQ_ALARM_NOSPACE;
    q.u.alarm.member_id = p->memberid;
    rpc_call_set_user(call, c);
    int rc = server_propose(sv->s, &q, rpc_call_arena(call), on_alarm_done, c, &c->pending);
    if (rc) {
        rpc_call_set_user(call, NULL);
        svc_finish_err(call, rc);
    }
}

/* ---- Defragment, Hash, HashKV -------------------------------------------------------------- */

static void on_defrag(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)msg;
    struct services *sv = ctx;
    if (sv->maint->jobs_len > 0) {
        finish_etcd(call, RPC_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    int rc = mvcc_defrag(server_store(sv->s));
    if (rc) {
        svc_finish_err(call, rc);
        return;
    }
    Etcdserverpb__DefragmentResponse m = ETCDSERVERPB__DEFRAGMENT_RESPONSE__INIT;
    m.header = svc_header(sv, rpc_call_arena(call), 0);
    send_and_finish(call, m.header ? &m.base : NULL);
}

static void on_hash(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)msg;
    struct services *sv = ctx;
    uint32_t hash = 0;
    int64_t compact_rev = 0, header_rev = 0;
    int rc = mvcc_hash_kv(server_store(sv->s), 0, &hash, &compact_rev, &header_rev);
    if (rc) {
        svc_finish_err(call, rc);
        return;
    }
    Etcdserverpb__HashResponse m = ETCDSERVERPB__HASH_RESPONSE__INIT;
    m.header = svc_header(sv, rpc_call_arena(call), header_rev);
    m.hash = hash;
    send_and_finish(call, m.header ? &m.base : NULL);
}

static void on_hashkv(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const Etcdserverpb__HashKVRequest *p = (const Etcdserverpb__HashKVRequest *)msg;
    uint32_t hash = 0;
    int64_t compact_rev = 0, header_rev = 0;
    int rc = mvcc_hash_kv(server_store(sv->s), p->revision, &hash, &compact_rev, &header_rev);
    if (rc) {
        svc_finish_err(call, rc);
        return;
    }
    if (compact_rev == 0)
        compact_rev = -1; /* etcd: never compacted */
    Etcdserverpb__HashKVResponse m = ETCDSERVERPB__HASH_KVRESPONSE__INIT;
    m.header = svc_header(sv, rpc_call_arena(call), header_rev);
    m.hash = hash;
    m.compact_revision = compact_rev;
    send_and_finish(call, m.header ? &m.base : NULL);
}

/* ---- MoveLeader ------------------------------------------------------------------------------ */

struct move_call {
    struct services *sv;
    struct rpc_call *call;
    struct server_call *pending;
};

static void finish_move_err(struct rpc_call *call, int err)
{
    if (err == BATON_ENOTLEADER)
        finish_etcd(call, RPC_ETCD_NOT_LEADER);
    else if (err == BATON_ENOTFOUND || err == BATON_EINVAL)
        finish_etcd(call, RPC_ETCD_BAD_LEADER_TRANSFEREE);
    else if (err == BATON_ETIMEOUT)
        finish_etcd(call, RPC_ETCD_TIMEOUT_DUE_TO_LEADER_FAIL);
    else
        svc_finish_err(call, err);
}

static void on_move_done(void *ctx, int err, int64_t v1, int64_t v2)
{
    (void)v1;
    (void)v2;
    struct move_call *c = ctx;
    c->pending = NULL;
    rpc_call_set_user(c->call, NULL);
    if (err) {
        finish_move_err(c->call, err);
        return;
    }
    Etcdserverpb__MoveLeaderResponse m = ETCDSERVERPB__MOVE_LEADER_RESPONSE__INIT;
    m.header = svc_header(c->sv, rpc_call_arena(c->call), 0);
    send_and_finish(c->call, m.header ? &m.base : NULL);
}

static void on_move_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct move_call *c = rpc_call_user(call);
    if (c && c->pending)
        server_call_cancel(c->pending);
}

static void on_move(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    struct services *sv = ctx;
    const Etcdserverpb__MoveLeaderRequest *p = (const Etcdserverpb__MoveLeaderRequest *)msg;
    struct server_status st;
    server_status(sv->s, &st);
    if (!st.is_leader) {
        finish_etcd(call, RPC_ETCD_NOT_LEADER);
        return;
    }
    if (!server_member_in_config(sv->s, p->targetid) ||
        server_member_is_learner(sv->s, p->targetid)) {
        finish_etcd(call, RPC_ETCD_BAD_LEADER_TRANSFEREE);
        return;
    }
    if (p->targetid == st.member_id) {
        /* etcd answers a transfer to the leader itself with success: nothing moves. */
        Etcdserverpb__MoveLeaderResponse m = ETCDSERVERPB__MOVE_LEADER_RESPONSE__INIT;
        m.header = svc_header(sv, rpc_call_arena(call), 0);
        send_and_finish(call, m.header ? &m.base : NULL);
        return;
    }
    struct move_call *c = arena_alloc(rpc_call_arena(call), sizeof(*c));
    if (!c) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    *c = (struct move_call){sv, call, NULL};
    rpc_call_set_user(call, c);
    int rc = server_transfer_leader(sv->s, p->targetid, on_move_done, c, &c->pending);
    if (rc) {
        rpc_call_set_user(call, NULL);
        finish_move_err(call, rc);
    }
}

/* ---- Snapshot -------------------------------------------------------------------------------- */

static void *snap_main(void *arg)
{
    struct snap_job *j = arg;
    int rc = mvcc_snapshot_copy(server_store(j->sv->s), j->fd);
    if (rc == 0 && fsync(j->fd) != 0 && errno != EINVAL)
        rc = -errno;
    j->copy_rc = rc;
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void job_free(struct maint *mt, struct snap_job *j)
{
    if (!j->joined)
        pthread_join(j->thread, NULL);
    for (struct snap_job **pp = &mt->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    mt->jobs_len--;
    if (j->call)
        rpc_call_set_user(j->call, NULL);
    if (j->fd >= 0)
        close(j->fd);
    EVP_MD_CTX_free(j->md);
    free(j);
}

static void job_fail(struct maint *mt, struct snap_job *j, int err)
{
    struct rpc_call *call = j->call;
    job_free(mt, j);
    if (call)
        svc_finish_err(call, err);
}

/* Sends chunks until the output bound is reached (on_writable resumes) or all is sent. */
static void snap_pump(struct snap_job *j)
{
    struct maint *mt = j->sv->maint;
    struct arena *a = rpc_call_arena(j->call);
    uint8_t chunk[SNAP_CHUNK_BYTES];
    Etcdserverpb__ResponseHeader *h = svc_header(j->sv, a, 0);
    if (!h) {
        job_fail(mt, j, BATON_ENOMEM);
        return;
    }
    while (j->off < j->size) {
        size_t n = (size_t)BATON_MIN((uint64_t)sizeof(chunk), j->size - j->off);
        ssize_t r = pread(j->fd, chunk, n, (off_t)j->off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            job_fail(mt, j, r < 0 ? -errno : BATON_ECORRUPT);
            return;
        }
        Etcdserverpb__SnapshotResponse m = ETCDSERVERPB__SNAPSHOT_RESPONSE__INIT;
        m.header = h;
        m.remaining_bytes = j->size - j->off - (uint64_t)r;
        m.blob = (ProtobufCBinaryData){(size_t)r, chunk};
        int rc = rpc_call_send(j->call, &m.base);
        if (rc == BATON_EBUSY)
            return; /* on_writable */
        if (rc) {
            job_fail(mt, j, rc);
            return;
        }
        if (EVP_DigestUpdate(j->md, chunk, (size_t)r) != 1) {
            job_fail(mt, j, BATON_ENOMEM);
            return;
        }
        j->off += (uint64_t)r;
    }
    if (!j->sha_len && EVP_DigestFinal_ex(j->md, j->sha, &j->sha_len) != 1) {
        job_fail(mt, j, BATON_ENOMEM);
        return;
    }
    Etcdserverpb__SnapshotResponse m = ETCDSERVERPB__SNAPSHOT_RESPONSE__INIT;
    m.header = h;
    m.blob = (ProtobufCBinaryData){j->sha_len, j->sha};
    int rc = rpc_call_send(j->call, &m.base);
    if (rc == BATON_EBUSY)
        return; /* on_writable sends the digest again */
    struct rpc_call *call = j->call;
    job_free(mt, j);
    if (rc)
        rpc_call_finish_err(call, rc);
    else
        rpc_call_finish(call, GRPC_OK, NULL);
}

static void on_snapshot_writable(struct rpc_call *call, void *ctx)
{
    (void)ctx;
    struct snap_job *j = rpc_call_user(call);
    if (!j || !j->streaming)
        return;
    snap_pump(j);
}

static void on_snapshot_cancel(struct rpc_call *call, int code, void *ctx)
{
    (void)code;
    (void)ctx;
    struct snap_job *j = rpc_call_user(call);
    if (!j)
        return;
    j->call = NULL;
    if (__atomic_load_n(&j->done, __ATOMIC_ACQUIRE))
        job_free(j->sv->maint, j);
    /* else svc_maint_tick reaps it when the copy ends */
}

static int snap_tmpfile(void)
{
    const char *dir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/batond-snapshot-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return -errno;
    unlink(path);
    return fd;
}

static void on_snapshot(struct rpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
    (void)msg;
    struct services *sv = ctx;
    struct maint *mt = sv->maint;
    if (mt->jobs_len >= SNAP_JOBS_MAX || mvcc_defrag_running(server_store(sv->s))) {
        finish_etcd(call, RPC_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    struct snap_job *j = calloc(1, sizeof(*j));
    if (!j) {
        rpc_call_finish_err(call, BATON_ENOMEM);
        return;
    }
    j->sv = sv;
    j->call = call;
    j->fd = snap_tmpfile();
    j->md = EVP_MD_CTX_new();
    int rc = j->fd < 0 ? j->fd : 0;
    if (!rc && (!j->md || EVP_DigestInit_ex(j->md, EVP_sha256(), NULL) != 1))
        rc = BATON_ENOMEM;
    if (!rc)
        rc = -pthread_create(&j->thread, NULL, snap_main, j);
    if (rc) {
        if (j->fd >= 0)
            close(j->fd);
        EVP_MD_CTX_free(j->md);
        free(j);
        rpc_call_finish_err(call, rc);
        return;
    }
    j->next = mt->jobs;
    mt->jobs = j;
    mt->jobs_len++;
    rpc_call_set_user(call, j);
}

void svc_maint_tick(struct services *sv)
{
    struct maint *mt = sv->maint;
    struct snap_job *next;
    for (struct snap_job *j = mt->jobs; j; j = next) {
        next = j->next;
        if (j->streaming || !__atomic_load_n(&j->done, __ATOMIC_ACQUIRE))
            continue;
        pthread_join(j->thread, NULL);
        j->joined = true;
        if (!j->call) {
            job_free(mt, j);
            continue;
        }
        struct stat st;
        if (j->copy_rc) {
            job_fail(mt, j, j->copy_rc);
            continue;
        }
        if (fstat(j->fd, &st) != 0) {
            job_fail(mt, j, -errno);
            continue;
        }
        j->size = (uint64_t)st.st_size;
        j->streaming = true;
        snap_pump(j);
    }
}

/* ---- Registration ------------------------------------------------------------------------- */

void svc_maint_destroy(struct services *sv)
{
    struct maint *mt = sv->maint;
    if (!mt)
        return;
    while (mt->jobs) {
        struct snap_job *j = mt->jobs;
        struct rpc_call *call = j->call;
        job_free(mt, j);
        if (call)
            finish_etcd(call, RPC_ETCD_STOPPED);
    }
    free(mt);
    sv->maint = NULL;
}

int svc_maint_register(struct services *sv)
{
    sv->maint = calloc(1, sizeof(*sv->maint));
    if (!sv->maint)
        return BATON_ENOMEM;
    const struct rpc_method methods[] = {
        {"/etcdserverpb.Maintenance/Status", RPC_UNARY, &etcdserverpb__status_request__descriptor,
         NULL, on_status, NULL, NULL, NULL, sv},
        {"/etcdserverpb.Maintenance/Alarm", RPC_UNARY, &etcdserverpb__alarm_request__descriptor,
         NULL, on_alarm, NULL, NULL, on_alarm_cancel, sv},
        {"/etcdserverpb.Maintenance/Defragment", RPC_UNARY,
         &etcdserverpb__defragment_request__descriptor, NULL, on_defrag, NULL, NULL, NULL, sv},
        {"/etcdserverpb.Maintenance/Hash", RPC_UNARY, &etcdserverpb__hash_request__descriptor, NULL,
         on_hash, NULL, NULL, NULL, sv},
        {"/etcdserverpb.Maintenance/HashKV", RPC_UNARY, &etcdserverpb__hash_kvrequest__descriptor,
         NULL, on_hashkv, NULL, NULL, NULL, sv},
        {"/etcdserverpb.Maintenance/MoveLeader", RPC_UNARY,
         &etcdserverpb__move_leader_request__descriptor, NULL, on_move, NULL, NULL, on_move_cancel,
         sv},
        {"/etcdserverpb.Maintenance/Snapshot", RPC_SERVER_STREAMING,
         &etcdserverpb__snapshot_request__descriptor, NULL, on_snapshot, NULL, on_snapshot_writable,
         on_snapshot_cancel, sv},
    };
    for (size_t i = 0; i < BATON_ARRAY_LEN(methods); i++) {
        int rc = rpc_server_register(sv->rs, &methods[i]);
        if (rc)
            return rc;
    }
    return 0;
}
