/*
 * batond's command line: etcd's flag names and defaults where a concept is shared, so scripts
 * written for etcd start batond unchanged. Flags may be given as --flag=value, --flag value,
 * or with a single dash; ETCD_<FLAG> environment variables apply when the flag is absent (as
 * etcd does). Flags etcd has that baton does not need are accepted and reported as ignored;
 * anything else is an error naming the flag.
 */
#ifndef BATOND_FLAGS_H
#define BATOND_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FLAGS_URLS_MAX    8
#define FLAGS_MEMBERS_MAX 64
#define FLAGS_HOST_MAX    256
#define FLAGS_NAME_MAX    128
#define FLAGS_PATH_MAX    1024
#define FLAGS_IGNORED_MAX 32

struct flags_url {
    bool tls;                  /* https:// (or unixs://) */
    char host[FLAGS_HOST_MAX]; /* without brackets for IPv6 */
    uint16_t port;
};

struct flags_url_list {
    struct flags_url urls[FLAGS_URLS_MAX];
    int len;
};

struct flags_member {
    char name[FLAGS_NAME_MAX];
    struct flags_url peer; /* one entry per URL; a name may appear several times */
};

enum flags_compaction_mode { FLAGS_COMPACT_PERIODIC, FLAGS_COMPACT_REVISION };

struct batond_flags {
    char name[FLAGS_NAME_MAX];
    char data_dir[FLAGS_PATH_MAX];
    struct flags_url_list listen_client, advertise_client, listen_peer, advertise_peer;
    struct flags_url_list listen_metrics;
    struct flags_member initial_cluster[FLAGS_MEMBERS_MAX];
    int initial_cluster_len;
    bool initial_cluster_existing; /* --initial-cluster-state existing */
    char initial_cluster_token[FLAGS_NAME_MAX];
    uint32_t heartbeat_interval_ms;
    uint32_t election_timeout_ms;
    uint64_t snapshot_count;
    uint64_t quota_backend_bytes; /* 0: the default (2 GiB) */
    uint64_t max_request_bytes;
    uint32_t max_txn_ops;
    uint32_t watch_progress_ms; /* etcd: 10 minutes, not a flag there */
    uint32_t node_lease_ttl_ms; /* baton.v1.Nodes: lease TTL of a registered node */
    uint32_t node_heartbeat_ms; /* the heartbeat interval nodes are told */
    enum flags_compaction_mode auto_compaction_mode;
    uint64_t auto_compaction_retention; /* ms for periodic, revisions for revision; 0: off */
    char restore_path[FLAGS_PATH_MAX];  /* --restore FILE: build data_dir from a snapshot */
    char log_level[16];
    bool help, version;
    /* Flags accepted for compatibility with etcd that baton does not act on. */
    const char *ignored[FLAGS_IGNORED_MAX];
    int ignored_len;
};

/* Parses argv (argv[0] is skipped) and env (NULL-terminated "K=V" strings, may be NULL) into
 * f, starting from etcd's defaults. On error returns a negative code and writes a one-line
 * message naming the flag and the reason into err (always NUL-terminated). Pointers in
 * f->ignored borrow from argv/env. */
int flags_parse(struct batond_flags *f, int argc, char **argv, char **env, char *err,
                size_t err_len);

/* Parses one URL ("http://127.0.0.1:2379", "https://[::1]:2380", "unix://path" is refused).
 * 0 or a negative code. */
int flags_parse_url(const char *s, size_t len, struct flags_url *u);

/* Writes the usage text to a stream given as a FILE *. */
void flags_usage(void *file);

#endif
