/* The data directory: layout, creation with directory fsyncs, and the single-owner lock. */
#include "server/server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Creates the missing parents of path, as etcd does for --data-dir. */
static int make_parents(const char *path, char *err, size_t err_len)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s", path);
    for (char *c = p + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            snprintf(err, err_len, "%s: cannot create directory: %s", p, strerror(e));
            return -e;
        }
        *c = '/';
    }
    return 0;
}

/* mkdir that accepts an existing directory and refuses anything else at the path. */
static int ensure_dir(const char *path, bool *created, char *err, size_t err_len)
{
    struct stat st;
    *created = false;
    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, err_len, "%s: exists and is not a directory", path);
            return -ENOTDIR;
        }
        return 0;
    }
    if (errno != ENOENT || mkdir(path, 0700) != 0) {
        int e = errno;
        snprintf(err, err_len, "%s: cannot create directory: %s", path, strerror(e));
        return -e;
    }
    *created = true;
    return 0;
}

static int join(char *out, const char *a, const char *b, char *err, size_t err_len)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", a, b);
    if (n < 0 || n >= PATH_MAX) {
        snprintf(err, err_len, "%s: path too long", a);
        return -ENAMETOOLONG;
    }
    return 0;
}

static int take_lock(struct server_datadir *d, char *err, size_t err_len)
{
    char path[PATH_MAX];
    int rc = join(path, d->root, "batond.lock", err, err_len);
    if (rc)
        return rc;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        snprintf(err, err_len, "%s: cannot open lock file: %s", path, strerror(e));
        return -e;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = {0};
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(fd);
        if (e == EWOULDBLOCK) {
            snprintf(err, err_len, "%s: data directory is in use by another batond (pid %s)",
                     d->root, pid[0] ? pid : "unknown");
            return BATON_EBUSY;
        }
        snprintf(err, err_len, "%s: cannot lock: %s", path, strerror(e));
        return -e;
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int e = errno;
        snprintf(err, err_len, "%s: cannot write lock file: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    d->lock_fd = fd;
    return 0;
}

int server_datadir_open(const char *root, struct server_datadir *d, char *err, size_t err_len)
{
    memset(d, 0, sizeof(*d));
    d->lock_fd = -1;
    err[0] = 0;
    if (strlen(root) >= sizeof(d->root)) {
        snprintf(err, err_len, "data directory path too long");
        return -ENAMETOOLONG;
    }
    strcpy(d->root, root);
    bool root_created, member_created, c;
    int rc = make_parents(d->root, err, err_len);
    rc = rc ? rc : ensure_dir(d->root, &root_created, err, err_len);
    if (rc == 0 && access(d->root, W_OK | X_OK) != 0) {
        rc = -errno;
        snprintf(err, err_len, "%s: not writable: %s", d->root, strerror(errno));
    }
    rc = rc ? rc : take_lock(d, err, err_len);
    rc = rc ? rc : join(d->member, d->root, "member", err, err_len);
    rc = rc ? rc : join(d->wal, d->member, "wal", err, err_len);
    rc = rc ? rc : join(d->snap, d->member, "snap", err, err_len);
    rc = rc ? rc : join(d->db, d->member, "db", err, err_len);
    if (rc)
        goto fail;
    struct stat st;
    d->fresh = stat(d->member, &st) != 0;
    if (!d->fresh) {
        /* An existing member directory must be whole: a half-made one is not silently reset. */
        if (!S_ISDIR(st.st_mode) || stat(d->wal, &st) != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, err_len,
                     "%s: member directory is incomplete (no wal/): refusing to start; move it "
                     "away to rejoin as a new member",
                     d->member);
            rc = BATON_ECORRUPT;
            goto fail;
        }
    }
    rc = ensure_dir(d->member, &member_created, err, err_len);
    rc = rc ? rc : ensure_dir(d->snap, &c, err, err_len);
    rc = rc ? rc : ensure_dir(d->wal, &c, err, err_len);
    /* Make the new directory entries durable before anything is written inside them. */
    if (!rc && member_created)
        rc = fsync_dir(d->member);
    if (!rc && member_created)
        rc = fsync_dir(d->root);
    if (!rc && root_created) {
        char parent[PATH_MAX];
        snprintf(parent, sizeof(parent), "%s", d->root);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent)
            *slash = 0;
        else
            strcpy(parent, slash ? "/" : ".");
        rc = fsync_dir(parent);
    }
    if (rc) {
        if (!err[0])
            snprintf(err, err_len, "%s: %s", d->root, baton_strerror(rc));
        goto fail;
    }
    return 0;
fail:
    server_datadir_close(d);
    return rc;
}

void server_datadir_close(struct server_datadir *d)
{
    if (d->lock_fd >= 0)
        close(d->lock_fd); /* releases the flock */
    d->lock_fd = -1;
}

/* member/identity: "member <hex> cluster <hex>\n", written once (temp file, fsync, rename,
 * directory fsync), read at every later start. */
int server_identity_load(const struct server_datadir *d, uint64_t *member_id, uint64_t *cluster_id,
                         char *err, size_t err_len)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/identity", d->member);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return BATON_ENOTFOUND;
        int e = errno;
        snprintf(err, err_len, "%s: cannot read: %s", path, strerror(e));
        return -e;
    }
    char line[128] = {0};
    unsigned long long m = 0, c = 0;
    char extra = 0;
    bool ok = fgets(line, sizeof(line), f) &&
              sscanf(line, "member %16llx cluster %16llx%c", &m, &c, &extra) == 3 &&
              extra == '\n' && m && c;
    fclose(f);
    if (!ok) {
        snprintf(err, err_len, "%s: malformed (want \"member <hex> cluster <hex>\")", path);
        return BATON_ECORRUPT;
    }
    *member_id = m;
    *cluster_id = c;
    return 0;
}

/* Writes text to member/<name> atomically and durably: a temp file, fsync, rename, fsync of
 * the directory. */
static int write_small_file(const struct server_datadir *d, const char *name, const char *text,
                            char *err, size_t err_len)
{
    char path[PATH_MAX + 32], tmp[PATH_MAX + 40];
    snprintf(path, sizeof(path), "%s/%s", d->member, name);
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", d->member, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = fd < 0 ? -errno : 0;
    size_t n = strlen(text);
    if (!rc && write(fd, text, n) != (ssize_t)n)
        rc = errno ? -errno : BATON_ENOSPACE;
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (!rc)
        rc = fsync_dir(d->member);
    if (rc)
        snprintf(err, err_len, "%s: cannot write: %s", path, baton_strerror(rc));
    return rc;
}

int server_identity_save(const struct server_datadir *d, uint64_t member_id, uint64_t cluster_id,
                         char *err, size_t err_len)
{
    char text[80];
    snprintf(text, sizeof(text), "member %016llx cluster %016llx\n", (unsigned long long)member_id,
             (unsigned long long)cluster_id);
    return write_small_file(d, "identity", text, err, err_len);
}

/* ---- Store durability across reboots ----------------------------------------------------------
 * The store commits without fsync (mvcc_config.no_sync): Raft entries are durable in the WAL
 * before they count, so the store only has to be recoverable, not durable. A killed process
 * loses nothing (its writes sit in the page cache, which outlives it); an operating-system
 * crash may leave the LMDB file torn, but also changes the boot id. So while a member runs,
 * member/db-boot names the boot the store has unsynced writes from; a clean close syncs and
 * removes it. At open, a marker from another boot means the store is not to be trusted: it is
 * deleted and rebuilt from the newest snapshot file and the WAL, both fsynced. */

int server_boot_id(char *out, size_t len)
{
    const char *forced = getenv("BATON_BOOT_ID"); /* tests simulate a reboot with it */
    if (forced && forced[0]) {
        snprintf(out, len, "%s", forced);
        return 0;
    }
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f)
        return -errno;
    bool ok = fgets(out, (int)len, f) != NULL;
    fclose(f);
    out[strcspn(out, "\n")] = 0;
    return ok && out[0] ? 0 : BATON_EUNAVAIL;
}

int server_db_marker_check(const struct server_datadir *d, const char *boot_id, bool *trusted,
                           char *err, size_t err_len)
{
    char path[PATH_MAX + 16], seen[128] = "";
    snprintf(path, sizeof(path), "%s/db-boot", d->member);
    *trusted = true;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0; /* closed cleanly, or never written */
        int e = errno;
        snprintf(err, err_len, "%s: cannot read: %s", path, strerror(e));
        return -e;
    }
    if (!fgets(seen, sizeof(seen), f))
        seen[0] = 0;
    fclose(f);
    seen[strcspn(seen, "\n")] = 0;
    *trusted = strcmp(seen, boot_id) == 0;
    return 0;
}

int server_db_marker_set(const struct server_datadir *d, const char *boot_id, char *err,
                         size_t err_len)
{
    char text[160];
    snprintf(text, sizeof(text), "%s\n", boot_id);
    return write_small_file(d, "db-boot", text, err, err_len);
}

static void remove_small_file(const struct server_datadir *d, const char *name)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", d->member, name);
    if (unlink(path) == 0)
        (void)fsync_dir(d->member);
}

void server_db_marker_clear(const struct server_datadir *d)
{
    remove_small_file(d, "db-boot");
}

int server_datadir_mark_restored(const struct server_datadir *d, char *err, size_t err_len)
{
    return write_small_file(d, "restored", "restored from a snapshot file\n", err, err_len);
}

bool server_datadir_restored(const struct server_datadir *d)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/restored", d->member);
    return access(path, F_OK) == 0;
}

void server_datadir_clear_restored(const struct server_datadir *d)
{
    remove_small_file(d, "restored");
}
