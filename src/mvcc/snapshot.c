/*
 * Snapshots: a consistent copy of the LMDB file for etcd's Maintenance.Snapshot, and the
 * restore of such a copy (`batond --restore`) into a new data file.
 *
 * Snapshot file format (as `etcdctl snapshot save` writes it): the database file, then the
 * SHA-256 of those bytes. A database file is a whole number of 4 KiB pages, so the size of a
 * file with its checksum is 32 modulo 512; etcd relies on the same property.
 */
#include "mvcc/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SNAP_SHA_LEN  32
#define SNAP_IO_BYTES (256 * 1024)

int mvcc_snapshot_copy(struct mvcc_store *s, int fd)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    return mdb_to_err(mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT));
}

int mvcc_snapshot_reset(struct mvcc_store *s)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    if (s->wtxn)
        return BATON_EINVAL;
    s->applied_index = 0;
    s->applied_term = 0;
    int rc = mvcc_batch_begin(s, 0, 0);
    if (rc)
        return rc;
    rc = mdb_to_err(mdb_drop(s->wtxn, s->dbi_aux, 0));
    if (rc) {
        mvcc_batch_abort(s);
        return rc;
    }
    return mvcc_batch_commit(s);
}

/* Reads exactly len bytes at off; BATON_ECORRUPT when the file is shorter. */
static int read_full(int fd, uint8_t *p, size_t len, off_t off)
{
    while (len) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return BATON_ECORRUPT;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static int write_full(int fd, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Copies the first data_len bytes of in to out (when out >= 0) while hashing them, then checks
 * the hash against the 32 bytes that follow. */
static int copy_verify(int in, int out, uint64_t data_len, char *err, size_t err_len,
                       const char *snap_path)
{
    uint8_t *chunk = malloc(SNAP_IO_BYTES);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int rc = chunk && md ? 0 : BATON_ENOMEM;
    if (!rc && EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        rc = BATON_ENOMEM;
    uint64_t off = 0;
    while (!rc && off < data_len) {
        size_t n = (size_t)BATON_MIN((uint64_t)SNAP_IO_BYTES, data_len - off);
        rc = read_full(in, chunk, n, (off_t)off);
        if (!rc && EVP_DigestUpdate(md, chunk, n) != 1)
            rc = BATON_ENOMEM;
        if (!rc && out >= 0)
            rc = write_full(out, chunk, n);
        off += n;
    }
    uint8_t want[SNAP_SHA_LEN], got[SNAP_SHA_LEN];
    unsigned got_len = 0;
    if (!rc)
        rc = read_full(in, want, sizeof(want), (off_t)data_len);
    if (!rc && EVP_DigestFinal_ex(md, got, &got_len) != 1)
        rc = BATON_ENOMEM;
    if (!rc && (got_len != SNAP_SHA_LEN || memcmp(got, want, SNAP_SHA_LEN) != 0)) {
        snprintf(err, err_len, "%s: snapshot checksum mismatch (the file is corrupt)", snap_path);
        rc = BATON_ECORRUPT;
    }
    if (rc && !err[0])
        snprintf(err, err_len, "%s: cannot read the snapshot: %s", snap_path, baton_strerror(rc));
    EVP_MD_CTX_free(md);
    free(chunk);
    return rc;
}

int mvcc_snapshot_restore(const char *snap_path, const char *db_path, char *err, size_t err_len)
{
    err[0] = 0;
    int in = open(snap_path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        int rc = -errno;
        snprintf(err, err_len, "%s: cannot open the snapshot: %s", snap_path, baton_strerror(rc));
        return rc;
    }
    struct stat st;
    if (fstat(in, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "%s: not a regular file", snap_path);
        close(in);
        return BATON_EINVAL;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 512 + SNAP_SHA_LEN || size % 512 != SNAP_SHA_LEN) {
        snprintf(err, err_len,
                 "%s: not a snapshot with a sha256 checksum (%llu bytes; expected a database "
                 "of whole pages followed by 32 bytes)",
                 snap_path, (unsigned long long)size);
        close(in);
        return BATON_ECORRUPT;
    }
    /* Verify before writing anything. */
    int rc = copy_verify(in, -1, size - SNAP_SHA_LEN, err, err_len, snap_path);
    if (rc) {
        close(in);
        return rc;
    }
    int out = open(db_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = -errno;
        snprintf(err, err_len, "%s: cannot create: %s", db_path, baton_strerror(rc));
        close(in);
        return rc;
    }
    rc = copy_verify(in, out, size - SNAP_SHA_LEN, err, err_len, snap_path);
    if (!rc && fsync(out) != 0) {
        rc = -errno;
        snprintf(err, err_len, "%s: fsync: %s", db_path, baton_strerror(rc));
    }
    close(out);
    close(in);
    if (rc) {
        unlink(db_path);
        return rc;
    }
    /* A new Raft history starts from this state: forget the old one's bookkeeping. */
    struct mvcc_config cfg;
    mvcc_config_default(&cfg);
    cfg.path = db_path;
    struct mvcc_store *s = NULL;
    char oerr[512] = "";
    rc = mvcc_open(&cfg, &s, oerr, sizeof(oerr));
    if (rc) {
        snprintf(err, err_len, "%s: the snapshot's database does not open: %s", snap_path,
                 oerr[0] ? oerr : baton_strerror(rc));
        unlink(db_path);
        return rc;
    }
    rc = mvcc_snapshot_reset(s);
    mvcc_close(s);
    if (rc) {
        snprintf(err, err_len, "%s: cannot reset the restored database: %s", db_path,
                 baton_strerror(rc));
        unlink(db_path);
    }
    return rc;
}
