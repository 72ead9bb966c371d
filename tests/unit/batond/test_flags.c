/* batond's flags: etcd's names and defaults, both spellings, env vars, and clear errors. */
#include "flags.h"
#include "test.h"

#include <string.h>

static struct batond_flags f;
static char err[256];

static int parse(char **argv, char **env)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    return flags_parse(&f, argc, argv, env, err, sizeof(err));
}

TEST(defaults_match_design)
{
    char *argv[] = {"batond", NULL};
    CHECK_OK(parse(argv, NULL));
    CHECK_STR(f.name, "default");
    CHECK_STR(f.data_dir, "default.baton");
    CHECK_EQ(f.listen_client.len, 1);
    CHECK_STR(f.listen_client.urls[0].host, "127.0.0.1");
    CHECK_EQ(f.listen_client.urls[0].port, 2379);
    CHECK_EQ(f.listen_peer.urls[0].port, 2380);
    CHECK_EQ(f.listen_metrics.urls[0].port, 2381);
    CHECK_EQ(f.heartbeat_interval_ms, 100);
    CHECK_EQ(f.election_timeout_ms, 1000);
    CHECK_EQ(f.max_request_bytes, 1572864);
    CHECK_EQ(f.initial_cluster_len, 1);
    CHECK_STR(f.initial_cluster[0].name, "default");
    CHECK_EQ(f.initial_cluster[0].peer.port, 2380);
    CHECK(!f.initial_cluster_existing);
}

TEST(etcd_style_cluster_flags)
{
    char *argv[] = {"batond",
                    "--name",
                    "n2",
                    "--data-dir=/tmp/x",
                    "-listen-client-urls",
                    "http://127.0.0.1:12379,https://[::1]:12380",
                    "--initial-cluster",
                    "n1=http://127.0.0.1:2380,n2=http://127.0.0.1:3380,n3=http://127.0.0.1:4380",
                    "--initial-cluster-state=existing",
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout=500",
                    "--auto-compaction-mode",
                    "revision",
                    "--auto-compaction-retention=1000",
                    "--pre-vote",
                    "--logger=zap",
                    NULL};
    CHECK_OK(parse(argv, NULL));
    CHECK_STR(f.name, "n2");
    CHECK_STR(f.data_dir, "/tmp/x");
    CHECK_EQ(f.listen_client.len, 2);
    CHECK(f.listen_client.urls[1].tls);
    CHECK_STR(f.listen_client.urls[1].host, "::1");
    CHECK_EQ(f.listen_client.urls[1].port, 12380);
    CHECK_EQ(f.initial_cluster_len, 3);
    CHECK_STR(f.initial_cluster[2].name, "n3");
    CHECK_EQ(f.initial_cluster[2].peer.port, 4380);
    CHECK(f.initial_cluster_existing);
    CHECK_EQ(f.heartbeat_interval_ms, 50);
    CHECK_EQ(f.election_timeout_ms, 500);
    CHECK_EQ(f.auto_compaction_mode, FLAGS_COMPACT_REVISION);
    CHECK_EQ(f.auto_compaction_retention, 1000);
    CHECK_EQ(f.ignored_len, 2);
    CHECK_STR(f.ignored[0], "pre-vote");
    CHECK_STR(f.ignored[1], "logger");
}

TEST(periodic_retention_units)
{
    char *a1[] = {"batond", "--auto-compaction-retention", "2", NULL};
    CHECK_OK(parse(a1, NULL));
    CHECK_EQ(f.auto_compaction_retention, 2 * 3600000);
    char *a2[] = {"batond", "--auto-compaction-retention=30m", NULL};
    CHECK_OK(parse(a2, NULL));
    CHECK_EQ(f.auto_compaction_retention, 30 * 60000);
    char *a3[] = {"batond", "--auto-compaction-retention=5x", NULL};
    CHECK_NE(parse(a3, NULL), 0);
    CHECK(strstr(err, "auto-compaction-retention") != NULL);
}

TEST(environment_applies_when_flag_absent)
{
    char *argv[] = {"batond", "--name", "cli", NULL};
    char *env[] = {"PATH=/bin", "ETCD_NAME=env", "ETCD_DATA_DIR=/var/lib/x",
                   "ETCD_INITIAL_CLUSTER=cli=http://127.0.0.1:2380", NULL};
    CHECK_OK(parse(argv, env));
    CHECK_STR(f.name, "cli"); /* the command line wins */
    CHECK_STR(f.data_dir, "/var/lib/x");
}

TEST(errors_name_the_flag)
{
    struct {
        char *argv[4];
        const char *want;
    } cases[] = {
        {{"batond", "--no-such-flag", NULL}, "unknown flag --no-such-flag"},
        {{"batond", "--name", NULL}, "--name needs a value"},
        {{"batond", "--heartbeat-interval", "abc", NULL}, "--heartbeat-interval"},
        {{"batond", "--listen-client-urls", "127.0.0.1:2379", NULL}, "invalid URL"},
        {{"batond", "--listen-client-urls", "http://h:99999", NULL}, "invalid URL"},
        {{"batond", "--initial-cluster", "nobody", NULL}, "not name=peer-url"},
        {{"batond", "--initial-cluster", "a=http://x:1", NULL}, "no entry for this member"},
        {{"batond", "--initial-cluster-state", "old", NULL}, "neither new nor existing"},
        {{"batond", "--election-timeout", "200", NULL}, "at least 5 times"},
        {{"batond", "stray", NULL}, "unexpected argument"},
        {{"batond", "--max-request-bytes=0", NULL}, "--max-request-bytes"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_NE(parse(cases[i].argv, NULL), 0);
        if (!strstr(err, cases[i].want))
            test_fail(__FILE__, __LINE__, "case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].want);
    }
}

TEST(help_and_version_skip_validation)
{
    char *argv[] = {"batond", "-h", "--initial-cluster", "a=http://x:1", NULL};
    CHECK_OK(parse(argv, NULL));
    CHECK(f.help);
}
