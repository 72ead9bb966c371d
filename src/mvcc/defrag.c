/*
 * Online defragmentation: a compacting copy of the LMDB file (mdb_env_copyfd2 with
 * MDB_CP_COMPACT, which walks a read snapshot and writes only live pages, renumbered) made by a
 * thread of its own, then a switch to the copy. The copy runs under an LMDB read transaction,
 * so reads on the loop thread go on meanwhile. Writes are refused (BATON_EBUSY) from begin to
 * the switch: anything written after the copy's snapshot would be lost by the switch. The
 * switch itself closes and reopens the environment; the in-memory index and leases are kept,
 * since the data is the same.
 */
#include "mvcc/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int store_env_open(struct mvcc_store *s);

static char *defrag_path(const struct mvcc_store *s)
{
    size_t n = strlen(s->path) + sizeof(".defrag");
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s.defrag", s->path);
    return p;
}

static void *defrag_main(void *arg)
{
    struct mvcc_store *s = arg;
    int rc = 0;
    char *tmp = defrag_path(s);
    if (!tmp) {
        rc = BATON_ENOMEM;
        goto out;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = mdb_to_err(mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT));
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    close(fd);
    if (rc != 0)
        unlink(tmp);
out:
    free(tmp);
    s->defrag_rc = rc;
    __atomic_store_n(&s->defrag_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

int mvcc_defrag_begin(struct mvcc_store *s)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    if (s->wtxn || s->defrag_running)
        return BATON_EBUSY;
    s->defrag_done = 0;
    s->defrag_rc = 0;
    int rc = pthread_create(&s->defrag_thread, NULL, defrag_main, s);
    if (rc != 0)
        return -rc;
    s->defrag_running = true;
    return 0;
}

bool mvcc_defrag_running(const struct mvcc_store *s)
{
    return s->defrag_running;
}

static int fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return BATON_ENOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) != 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* Replaces the file under the environment with the copy. */
static int defrag_switch(struct mvcc_store *s)
{
    char *tmp = defrag_path(s);
    if (!tmp)
        return BATON_ENOMEM;
    if (s->rtxn) {
        mdb_txn_abort(s->rtxn);
        s->rtxn = NULL;
    }
    mdb_env_close(s->env);
    s->env = NULL;
    int rc = rename(tmp, s->path) != 0 ? -errno : 0;
    if (rc == 0)
        rc = fsync_dir_of(s->path);
    free(tmp);
    int orc = store_env_open(s);
    if (orc != 0) {
        log_write(s->cfg.log, LOG_ERROR, "msg=\"defrag: reopen failed\" path=%s err=\"%s\"",
                  s->path, mvcc_strerror(orc));
        s->poisoned = true;
        return orc;
    }
    return rc;
}

int mvcc_defrag_poll(struct mvcc_store *s, bool *done)
{
    *done = false;
    if (!s->defrag_running)
        return BATON_EINVAL;
    if (!__atomic_load_n(&s->defrag_done, __ATOMIC_ACQUIRE))
        return 0;
    pthread_join(s->defrag_thread, NULL);
    s->defrag_running = false;
    *done = true;
    if (s->defrag_rc != 0)
        return s->defrag_rc;
    return defrag_switch(s);
}

int mvcc_defrag(struct mvcc_store *s)
{
    int rc = mvcc_defrag_begin(s);
    if (rc != 0)
        return rc;
    bool done = false;
    while (!done) {
        rc = mvcc_defrag_poll(s, &done);
        if (!done)
            usleep(1000);
    }
    return rc;
}
