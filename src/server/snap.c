/*
 * Log compaction with snapshot files, and moving them between members.
 *
 * A snapshot file (wal's format: header with index, term, length and CRC32C) holds a 4-byte
 * length and the encoded Raft configuration as of the snapshot, then a compacted copy of the
 * LMDB data file. LMDB holds the applied index in the same transactions as the data, so the copy
 * is a complete state machine at exactly the snapshot's index.
 *
 * - Every --snapshot-count applied entries, between readies, the member copies LMDB into a new
 *   snapshot file at its applied index and tells Raft to compact its log there. A WAL marker at
 *   that index follows; once the marker is durable and LMDB is synced, WAL segments wholly below
 *   it are released.
 * - A follower too far behind asks (through Raft) for chunks; the leader reads them from its
 *   latest snapshot file and hands them to raft_snapshot_chunk.
 * - A follower writes received chunks into a staging snapshot file as part of its persist batch;
 *   when Raft installs the snapshot, the LMDB copy replaces the follower's data file.
 * - At start, the newest snapshot file gives Raft its snapshot (index, term, configuration);
 *   the WAL gives the entries after it.
 *
 * The copy runs on the loop thread and blocks it for as long as copying the data file takes:
 * fine for a control plane's few megabytes, and the next step is a copy thread.
 */
#include "server/server_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SNAP_KEEP       2
#define SNAP_COPY_CHUNK (1u << 20)

static void snap_name(char *out, size_t len, uint64_t index, uint64_t term)
{
    snprintf(out, len, "%016llx-%016llx.snap", (unsigned long long)term, (unsigned long long)index);
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* ---- Creating (leader or follower: any member compacts its own log) -------------------------- */

static int write_conf_header(struct wal_snap_writer *w, const struct raft_config *conf)
{
    struct buf b = {0};
    uint8_t len[4] = {0};
    int rc = buf_append(&b, len, 4);
    rc = rc ? rc : raft_config_encode(conf, &b);
    if (!rc) {
        le32_put(b.data, (uint32_t)(b.len - 4));
        rc = wal_snap_write(w, b.data, b.len);
    }
    buf_free(&b);
    return rc;
}

/* Streams the LMDB copy from fd into the snapshot writer. */
static int copy_into(struct wal_snap_writer *w, int fd)
{
    uint8_t *chunk = malloc(SNAP_COPY_CHUNK);
    if (!chunk)
        return BATON_ENOMEM;
    int rc = lseek(fd, 0, SEEK_SET) < 0 ? -errno : 0;
    while (!rc) {
        ssize_t n = read(fd, chunk, SNAP_COPY_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : 0;
            break;
        }
        rc = wal_snap_write(w, chunk, (size_t)n);
    }
    free(chunk);
    return rc;
}

static int snapshot_create(struct server *s, uint64_t index, uint64_t term)
{
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof(tmp), "%s/db.copy", s->dir.snap);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    struct wal_snap_writer *w = NULL;
    int rc = mvcc_snapshot_copy(s->store, fd);
    if (!rc)
        rc = wal_snap_create(s->dir.snap, NULL, index, term, &w);
    if (!rc)
        rc = write_conf_header(w, &s->applied_conf);
    if (!rc)
        rc = copy_into(w, fd);
    close(fd);
    unlink(tmp);
    if (w && rc)
        wal_snap_abort(w);
    else if (w)
        rc = wal_snap_finish(w);
    return rc;
}

/* Called between readies. Compacts when enough entries were applied since the last snapshot. */
void snap_maybe_compact(struct server *s)
{
    if (!s->o.snapshot_count || s->applied < s->snap_index + s->o.snapshot_count || s->staging ||
        mvcc_defrag_running(s->store))
        return;
    uint64_t index = s->applied, term;
    if (raft_term_at(s->raft, index, &term) != 0)
        return;
    int rc = snapshot_create(s, index, term);
    if (rc == BATON_EEXIST)
        rc = 0; /* the same snapshot exists already */
    if (rc) {
        log_write(s->o.log, LOG_ERROR, "member=%llx msg=\"snapshot failed\" index=%llu err=\"%s\"",
                  (unsigned long long)s->o.member_id, (unsigned long long)index,
                  baton_strerror(rc));
        s->snap_index = index; /* do not retry at every turn; the next interval tries again */
        return;
    }
    rc = raft_compact(s->raft, index);
    if (rc) {
        log_write(s->o.log, LOG_WARN, "member=%llx msg=\"raft compaction refused\" index=%llu",
                  (unsigned long long)s->o.member_id, (unsigned long long)index);
        return;
    }
    s->snap_index = index;
    s->snap_term = term;
    /* The marker makes the WAL agree; segments go once it is durable and LMDB is synced. */
    struct wal_snap_marker mk = {index, term};
    struct wal_batch b = {NULL, 0, NULL, &mk};
    if (wal_submit(s->wal, &b, &s->release_seq) == 0)
        s->release_index = index;
    wal_snap_purge(s->dir.snap, NULL, SNAP_KEEP, NULL);
    /* Restored data is now in a snapshot file: from the next start the store may defer its
     * syncs (see store_prepare). */
    if (!s->store_no_sync)
        server_datadir_clear_restored(&s->dir);
    log_write(s->o.log, LOG_INFO, "member=%llx term=%llu msg=\"snapshot taken\" index=%llu",
              (unsigned long long)s->o.member_id, (unsigned long long)term,
              (unsigned long long)index);
}

/* After a WAL completion: release segments below a durable marker. */
void snap_release(struct server *s, uint64_t durable_seq)
{
    if (!s->release_seq || durable_seq < s->release_seq)
        return;
    s->release_seq = 0;
    if (mvcc_sync(s->store) == 0)
        wal_release(s->wal, s->release_index, NULL);
}

/* ---- Sending (leader) --------------------------------------------------------------------------
 */

static void reader_close(struct server *s)
{
    if (s->reader)
        wal_snap_close(s->reader);
    s->reader = NULL;
}

/* Answers one chunk request from Raft (after the ready that asked was advanced). */
void snap_serve_read(struct server *s, const struct raft_snap_read *r)
{
    char err[256];
    if (!s->reader || s->reader_index != r->index || s->reader_pos > r->offset) {
        reader_close(s);
        char name[64];
        snap_name(name, sizeof(name), r->index, r->term);
        struct wal_snap_info info;
        if (wal_snap_open(s->dir.snap, name, NULL, &s->reader, &info, err, sizeof(err)) != 0) {
            log_write(s->o.log, LOG_ERROR, "member=%llx msg=\"cannot read snapshot\" err=\"%s\"",
                      (unsigned long long)s->o.member_id, err);
            s->reader = NULL;
            return;
        }
        s->reader_index = r->index;
        s->reader_pos = 0;
        s->reader_len = info.len;
    }
    uint8_t *chunk = malloc(r->len_max ? r->len_max : 1);
    if (!chunk)
        return;
    int rc = 0;
    while (!rc && s->reader_pos < r->offset) { /* skip forward (rare: a restarted transfer) */
        size_t got, want = (size_t)BATON_MIN(r->offset - s->reader_pos, r->len_max);
        rc = wal_snap_read(s->reader, chunk, want, &got);
        if (!rc && got == 0)
            rc = BATON_ECORRUPT;
        s->reader_pos += got;
    }
    size_t got = 0;
    if (!rc)
        rc = wal_snap_read(s->reader, chunk, BATON_MIN(r->len_max, WAL_SNAP_CHUNK_MAX), &got);
    if (!rc) {
        s->reader_pos += got;
        raft_snapshot_chunk(s->raft, r->to, r->index, r->offset, chunk, got,
                            s->reader_pos >= s->reader_len);
    } else {
        reader_close(s);
    }
    free(chunk);
}

/* ---- Receiving (follower) ----------------------------------------------------------------------
 */

/* Writes persist chunks into the staging file. Raft hands chunks out in order from offset 0. */
int snap_stage_chunks(struct server *s, const struct raft_snap_chunk *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (c[i].offset == 0) {
            if (s->staging)
                wal_snap_abort(s->staging);
            s->staging = NULL;
            char path[PATH_MAX + 80], name[64];
            snap_name(name, sizeof(name), c[i].index, c[i].term);
            snprintf(path, sizeof(path), "%s/%s", s->dir.snap, name);
            unlink(path); /* a complete copy of the same snapshot is replaced */
            int rc = wal_snap_create(s->dir.snap, NULL, c[i].index, c[i].term, &s->staging);
            if (rc)
                return rc;
            s->staging_index = c[i].index;
            s->staging_pos = 0;
        }
        if (!s->staging || s->staging_index != c[i].index || s->staging_pos != c[i].offset)
            return BATON_EINVAL; /* Raft broke its own ordering: a bug, not bad input */
        for (uint32_t off = 0; off < c[i].len;) {
            uint32_t part = BATON_MIN(c[i].len - off, WAL_SNAP_CHUNK_MAX);
            int rc = wal_snap_write(s->staging, c[i].data + off, part);
            if (rc)
                return rc;
            off += part;
        }
        s->staging_pos += c[i].len;
    }
    return 0;
}

/* The staged snapshot is complete: make it durable under its final name. */
int snap_stage_finish(struct server *s, const struct raft_snapshot_meta *meta)
{
    if (!s->staging || s->staging_index != meta->index)
        return BATON_EINVAL;
    int rc = wal_snap_finish(s->staging);
    s->staging = NULL;
    return rc;
}

/* Reads the configuration header of an open snapshot; the reader is left at the LMDB bytes. */
static int read_conf_header(struct wal_snap_reader *r, struct raft_config *conf)
{
    uint8_t len[4];
    size_t got;
    int rc = wal_snap_read(r, len, 4, &got);
    if (rc || got != 4)
        return rc ? rc : BATON_ECORRUPT;
    uint32_t n = le32_get(len);
    if (n > 64 * 1024)
        return BATON_ECORRUPT;
    uint8_t buf[64 * 1024];
    rc = wal_snap_read(r, buf, n, &got);
    if (rc || got != n)
        return rc ? rc : BATON_ECORRUPT;
    return raft_config_decode(buf, n, conf) ? BATON_ECORRUPT : 0;
}

/* Opens the snapshot (index, term) and fills meta; *reader is left at the LMDB bytes. */
static int snap_open(struct server *s, const char *name, struct raft_snapshot_meta *meta,
                     struct wal_snap_reader **reader, char *err, size_t err_len)
{
    struct wal_snap_info info;
    int rc = wal_snap_open(s->dir.snap, name, NULL, reader, &info, err, err_len);
    if (rc)
        return rc;
    meta->index = info.index;
    meta->term = info.term;
    rc = read_conf_header(*reader, &meta->config);
    if (rc) {
        snprintf(err, err_len, "%s/%s: bad configuration header", s->dir.snap, name);
        wal_snap_close(*reader);
        *reader = NULL;
    }
    return rc;
}

/* Replaces the data file with the snapshot's LMDB copy and reopens the store. */
int snap_install(struct server *s, const struct raft_snapshot_meta *meta, char *err, size_t err_len)
{
    char name[64], tmp[PATH_MAX + 8];
    snap_name(name, sizeof(name), meta->index, meta->term);
    struct raft_snapshot_meta m;
    struct wal_snap_reader *r;
    int rc = snap_open(s, name, &m, &r, err, err_len);
    if (rc)
        return rc;
    snprintf(tmp, sizeof(tmp), "%s.new", s->dir.db);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    uint8_t *chunk = malloc(SNAP_COPY_CHUNK);
    rc = fd < 0 ? -errno : chunk ? 0 : BATON_ENOMEM;
    while (!rc) {
        size_t got;
        rc = wal_snap_read(r, chunk, SNAP_COPY_CHUNK, &got);
        if (rc || got == 0)
            break;
        for (size_t off = 0; off < got && !rc;) {
            ssize_t w = write(fd, chunk + off, got - off);
            if (w < 0 && errno != EINTR)
                rc = -errno;
            else if (w > 0)
                off += (size_t)w;
        }
    }
    free(chunk);
    wal_snap_close(r);
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    if (rc) {
        unlink(tmp);
        snprintf(err, err_len, "%s: cannot write the snapshot's data file: %s", tmp,
                 baton_strerror(rc));
        return rc;
    }
    mvcc_close(s->store);
    s->store = NULL;
    rc = rename(tmp, s->dir.db) == 0 ? fsync_dir(s->dir.member) : -errno;
    struct mvcc_config mc;
    server_mvcc_config(s, &mc);
    if (!rc)
        rc = mvcc_open(&mc, &s->store, err, err_len);
    if (rc)
        return rc;
    s->applied = mvcc_applied_index(s->store);
    s->applied_conf = m.config;
    s->snap_index = meta->index;
    s->snap_term = meta->term;
    s->store_generation++;
    rc = members_load(s);
    for (int i = 0; i < s->members_len && !rc; i++)
        if (s->members[i].id != s->o.member_id && s->members[i].peer_urls_len)
            s->o.env.peer_set(s->o.env.ctx, s->members[i].id, s->members[i].peer_urls[0], false);
    log_write(s->o.log, LOG_INFO, "member=%llx msg=\"snapshot installed\" index=%llu applied=%llu",
              (unsigned long long)s->o.member_id, (unsigned long long)meta->index,
              (unsigned long long)s->applied);
    return rc;
}

/* At start: the newest snapshot file, if any. 0 with meta->index == 0 when there is none. */
int snap_load_latest(struct server *s, struct raft_snapshot_meta *meta, char *err, size_t err_len)
{
    memset(meta, 0, sizeof(*meta));
    char name[128];
    int rc = wal_snap_latest(s->dir.snap, NULL, name, sizeof(name));
    if (rc == BATON_ENOTFOUND)
        return 0;
    struct wal_snap_reader *r = NULL;
    if (!rc)
        rc = snap_open(s, name, meta, &r, err, err_len);
    if (r)
        wal_snap_close(r);
    if (!rc && mvcc_applied_index(s->store) < meta->index) {
        /* A crash between receiving a snapshot and replacing the data file: finish it. */
        rc = snap_install(s, meta, err, err_len);
    }
    if (!rc) {
        s->snap_index = meta->index;
        s->snap_term = meta->term;
    }
    return rc;
}

void snap_close(struct server *s)
{
    reader_close(s);
    if (s->staging)
        wal_snap_abort(s->staging);
    s->staging = NULL;
}
