/* The data directory: creation, reopen, the single-owner lock across processes, bad paths; and
 * member/cluster ids. */
#include "server/server.h"
#include "test.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char err[512];

TEST(fresh_then_existing)
{
    char root[PATH_MAX];
    snprintf(root, sizeof(root), "%s/a.baton", test_tmpdir());
    struct server_datadir d;
    CHECK_OK(server_datadir_open(root, &d, err, sizeof(err)));
    CHECK(d.fresh);
    struct stat st;
    CHECK_EQ(stat(d.wal, &st), 0);
    CHECK_EQ(stat(d.snap, &st), 0);
    server_datadir_close(&d);
    CHECK_OK(server_datadir_open(root, &d, err, sizeof(err)));
    CHECK(!d.fresh);
    server_datadir_close(&d);
}

TEST(second_process_is_refused_with_owner_pid)
{
    char root[PATH_MAX];
    snprintf(root, sizeof(root), "%s/b.baton", test_tmpdir());
    struct server_datadir d;
    CHECK_OK(server_datadir_open(root, &d, err, sizeof(err)));
    int pipefd[2];
    CHECK_EQ(pipe(pipefd), 0);
    pid_t child = fork();
    if (child == 0) {
        struct server_datadir d2;
        char e[512];
        int rc = server_datadir_open(root, &d2, e, sizeof(e));
        dprintf(pipefd[1], "%d %s", rc, e);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    char out[PATH_MAX + 200] = {0};
    CHECK_GT(read(pipefd[0], out, sizeof(out) - 1), 0);
    char want[PATH_MAX + 200];
    snprintf(want, sizeof(want), "%d %s: data directory is in use by another batond (pid %ld)",
             BATON_EBUSY, root, (long)getpid());
    CHECK_STR(out, want);
    server_datadir_close(&d);
    /* Released: the next open succeeds. */
    CHECK_OK(server_datadir_open(root, &d, err, sizeof(err)));
    server_datadir_close(&d);
    close(pipefd[0]);
    close(pipefd[1]);
}

TEST(bad_paths_are_explained)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/file", test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fclose(f);
    struct server_datadir d;
    CHECK_EQ(server_datadir_open(path, &d, err, sizeof(err)), -ENOTDIR);
    CHECK(strstr(err, "exists and is not a directory") != NULL);
    CHECK(strstr(err, path) != NULL);

    /* member/ without wal/: a half-made directory is refused, not reset. */
    char root[PATH_MAX], member[PATH_MAX + 8];
    snprintf(root, sizeof(root), "%s/c.baton", test_tmpdir());
    snprintf(member, sizeof(member), "%s/member", root);
    CHECK_EQ(mkdir(root, 0700), 0);
    CHECK_EQ(mkdir(member, 0700), 0);
    CHECK_EQ(server_datadir_open(root, &d, err, sizeof(err)), BATON_ECORRUPT);
    CHECK(strstr(err, "incomplete") != NULL);

    /* Missing parents are created (etcd's MkdirAll); a parent that is a file is refused. */
    snprintf(path, sizeof(path), "%s/missing-parent/x/y", test_tmpdir());
    CHECK_OK(server_datadir_open(path, &d, err, sizeof(err)));
    CHECK(d.fresh);
    server_datadir_close(&d);
    snprintf(path, sizeof(path), "%s/file/x", test_tmpdir());
    CHECK_EQ(server_datadir_open(path, &d, err, sizeof(err)), -ENOTDIR);
    CHECK(strstr(err, "cannot create directory") != NULL);
}

TEST(ids_are_canonical)
{
    const char *a[] = {"http://10.0.0.1:2380", "http://10.0.0.1:2390"};
    const char *b[] = {"http://10.0.0.1:2390", "http://10.0.0.1:2380"};
    uint64_t ia = server_member_id(a, 2, "tok", 0);
    CHECK_EQ_U64(ia, server_member_id(b, 2, "tok", 0));
    CHECK_NE(ia, server_member_id(a, 2, "tok2", 0));
    CHECK_NE(ia, server_member_id(a, 2, "tok", 1700000000000ull));
    CHECK_NE(ia, server_member_id(a, 1, "tok", 0));
    CHECK_NE(ia, 0);
    uint64_t m1[] = {3, 1, 2}, m2[] = {1, 2, 3}, m3[] = {1, 2, 4};
    CHECK_EQ_U64(server_cluster_id(m1, 3), server_cluster_id(m2, 3));
    CHECK_NE(server_cluster_id(m1, 3), server_cluster_id(m3, 3));
}
