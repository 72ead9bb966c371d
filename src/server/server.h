/*
 * server: one member of the control plane. It wires raft, wal, mvcc and cluster together and
 * turns client requests into proposals, waits for them to apply, serves linearizable reads with
 * ReadIndex and serializable reads locally. It reaches the outside world only through the
 * tables its caller injects; it knows neither libuv nor nghttp2.
 *
 * This header grows with the server. So far: the data directory and member identities.
 */
#ifndef BATON_SERVER_H
#define BATON_SERVER_H

#include "base/base.h"

#include <limits.h>

/* ---- Data directory ---------------------------------------------------------------------------
 * Layout of --data-dir:
 *   batond.lock      exclusive flock while a member runs; holds the owner's pid (for messages)
 *   member/wal/      write-ahead log segments
 *   member/snap/     snapshot files
 *   member/db        the LMDB data file (plus member/db-lock)
 * A directory without member/ is fresh: the member bootstraps or joins. */
struct server_datadir {
    char root[PATH_MAX];
    char member[PATH_MAX];
    char wal[PATH_MAX];
    char snap[PATH_MAX];
    char db[PATH_MAX];
    int lock_fd;
    bool fresh; /* member/ did not exist before this open */
};

/* Creates what is missing, takes the lock. On failure writes a one-line reason naming the path
 * into err: another member holds the lock (with its pid), not a directory, permission denied,
 * a member/ that is incomplete. 0, BATON_EBUSY (locked), -errno, or BATON_ECORRUPT. */
int server_datadir_open(const char *root, struct server_datadir *d, char *err, size_t err_len);
/* Releases the lock. */
void server_datadir_close(struct server_datadir *d);

/* ---- Identities -------------------------------------------------------------------------------
 * A member's id is derived from its sorted peer URLs and the cluster token, as etcd does, so
 * every initial member computes the same ids from --initial-cluster; a member added later mixes
 * in the time of the add. The cluster id is derived from the sorted initial member ids. Ids are
 * never 0. */
uint64_t server_member_id(const char *const *peer_urls, int urls_len, const char *token,
                          uint64_t add_time_ms);
uint64_t server_cluster_id(const uint64_t *member_ids, int len);

#endif
