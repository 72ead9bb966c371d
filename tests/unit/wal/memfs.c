/* memfs: see memfs.h. One mutex guards everything; files are never freed before memfs_free. */
#include "memfs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MEMFS_FILES_MAX 1024
#define MEMFS_FDS_MAX   256
#define MEMFS_NAMES_MAX 512
#define MEMFS_PATH_MAX  256

enum pending_kind { P_WRITE, P_TRUNCATE, P_ALLOCATE };
struct pending {
    enum pending_kind kind;
    uint64_t off, len;
    uint8_t *bytes; /* P_WRITE */
};

struct mfile {
    uint8_t *data;
    size_t len;
    uint8_t *dur;
    size_t dur_len;
    struct pending *p; /* calls since the last sync, in order */
    size_t p_len, p_cap;
};

struct mname {
    char path[MEMFS_PATH_MAX];
    int file;
};

struct names {
    struct mname *v; /* grows up to MEMFS_NAMES_MAX */
    size_t len, cap;
};

struct memfs {
    pthread_mutex_t mu;
    struct wal_io io;
    struct mfile *files[MEMFS_FILES_MAX];
    size_t files_len;
    int fds[MEMFS_FDS_MAX]; /* file number + 1; 0 = free */
    struct names cur, dur;
    uint64_t ops, syncs;
    uint64_t fail_from_op;
    uint64_t space_limit;
    uint64_t fail_sync_at; /* counts down */
    uint32_t sync_delay_us;
    pthread_cond_t hold_cond;
    bool hold;
};

/* ---- helpers (mu held) --------------------------------------------------------------------- */

static int names_find(const struct names *n, const char *path)
{
    for (size_t i = 0; i < n->len; i++)
        if (strcmp(n->v[i].path, path) == 0)
            return (int)i;
    return -1;
}

static void names_del(struct names *n, int i)
{
    n->v[i] = n->v[--n->len];
}

static int names_add(struct names *n, const char *path, int file)
{
    if (n->len == MEMFS_NAMES_MAX || strlen(path) >= MEMFS_PATH_MAX)
        return -ENAMETOOLONG;
    if (n->len == n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 8;
        struct mname *v = realloc(n->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        n->v = v, n->cap = cap;
    }
    struct mname *m = &n->v[n->len++];
    strcpy(m->path, path);
    m->file = file;
    return 0;
}

static bool in_dir(const char *path, const char *dir)
{
    size_t dl = strlen(dir);
    return strncmp(path, dir, dl) == 0 && path[dl] == '/' && !strchr(path + dl + 1, '/');
}

static uint64_t used_bytes(const struct memfs *fs)
{
    uint64_t n = 0;
    for (size_t i = 0; i < fs->files_len; i++)
        n += fs->files[i]->len;
    return n;
}

/* Counts a mutating call; false when the power is already gone. */
static bool op_begin(struct memfs *fs)
{
    fs->ops++;
    return !(fs->fail_from_op && fs->ops >= fs->fail_from_op);
}

static int file_resize(struct mfile *f, uint64_t len)
{
    if (len > (1ull << 32))
        return -EFBIG;
    if (len > f->len) {
        uint8_t *d = realloc(f->data, (size_t)len);
        if (!d)
            return -ENOMEM;
        memset(d + f->len, 0, (size_t)len - f->len);
        f->data = d;
    }
    f->len = (size_t)len;
    return 0;
}

static int pending_add(struct mfile *f, enum pending_kind k, uint64_t off, uint64_t len,
                       const void *bytes)
{
    if (f->p_len == f->p_cap) {
        size_t cap = f->p_cap ? f->p_cap * 2 : 16;
        struct pending *p = realloc(f->p, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        f->p = p, f->p_cap = cap;
    }
    struct pending *p = &f->p[f->p_len];
    *p = (struct pending){.kind = k, .off = off, .len = len};
    if (bytes) {
        p->bytes = malloc(len ? len : 1);
        if (!p->bytes)
            return -ENOMEM;
        memcpy(p->bytes, bytes, len);
    }
    f->p_len++;
    return 0;
}

static void pending_clear(struct mfile *f)
{
    for (size_t i = 0; i < f->p_len; i++)
        free(f->p[i].bytes);
    f->p_len = 0;
}

static void file_sync(struct mfile *f)
{
    free(f->dur);
    f->dur = malloc(f->len ? f->len : 1);
    BATON_ASSERT(f->dur);
    if (f->len)
        memcpy(f->dur, f->data, f->len);
    f->dur_len = f->len;
    pending_clear(f);
}

static struct mfile *fd_file(struct memfs *fs, int fd)
{
    if (fd < 0 || fd >= MEMFS_FDS_MAX || !fs->fds[fd])
        return NULL;
    return fs->files[fs->fds[fd] - 1];
}

/* ---- the I/O table ------------------------------------------------------------------------- */

static int m_open(void *ctx, const char *path, int flags, int mode)
{
    struct memfs *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    int rc = 0, i = names_find(&fs->cur, path), file = -1;
    bool mut = (flags & O_CREAT && i < 0) || (flags & O_TRUNC);
    if (mut && !op_begin(fs)) {
        rc = -EIO;
        goto out;
    }
    if (i >= 0 && (flags & O_CREAT) && (flags & O_EXCL)) {
        rc = -EEXIST;
        goto out;
    }
    if (i < 0 && !(flags & O_CREAT)) {
        rc = -ENOENT;
        goto out;
    }
    if (i < 0) {
        if (fs->files_len == MEMFS_FILES_MAX) {
            rc = -ENOSPC;
            goto out;
        }
        struct mfile *f = calloc(1, sizeof(*f));
        if (!f) {
            rc = -ENOMEM;
            goto out;
        }
        fs->files[fs->files_len++] = f;
        file = (int)fs->files_len - 1;
        if ((rc = names_add(&fs->cur, path, file)) != 0)
            goto out;
    } else {
        file = fs->cur.v[i].file;
    }
    if (flags & O_TRUNC) {
        struct mfile *f = fs->files[file];
        f->len = 0;
        pending_add(f, P_TRUNCATE, 0, 0, NULL);
    }
    rc = -EMFILE;
    for (int fd = 3; fd < MEMFS_FDS_MAX; fd++) {
        if (!fs->fds[fd]) {
            fs->fds[fd] = file + 1;
            rc = fd;
            break;
        }
    }
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int m_close(void *ctx, int fd)
{
    struct memfs *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    int rc = fd_file(fs, fd) ? 0 : -EBADF;
    if (!rc)
        fs->fds[fd] = 0;
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static ssize_t m_pread(void *ctx, int fd, void *buf, size_t len, uint64_t off)
{
    struct memfs *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    struct mfile *f = fd_file(fs, fd);
    ssize_t n = -EBADF;
    if (f) {
        n = off >= f->len ? 0 : (ssize_t)BATON_MIN(len, f->len - off);
        if (n > 0)
            memcpy(buf, f->data + off, (size_t)n);
    }
    pthread_mutex_unlock(&fs->mu);
    return n;
}

static ssize_t m_pwrite(void *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
    struct memfs *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    struct mfile *f = fd_file(fs, fd);
    ssize_t n = -EBADF;
    if (f && !op_begin(fs))
        n = -EIO;
    else if (f) {
        uint64_t end = off + len;
        if (fs->space_limit && end > f->len && used_bytes(fs) + (end - f->len) > fs->space_limit)
            n = -ENOSPC;
        else if ((n = end > f->len ? file_resize(f, end) : 0) == 0 &&
                 (n = pending_add(f, P_WRITE, off, len, buf)) == 0) {
            memcpy(f->data + off, buf, len);
            n = (ssize_t)len;
        }
    }
    pthread_mutex_unlock(&fs->mu);
    return n;
}

static int m_sync(void *ctx, int fd)
{
    struct memfs *fs = ctx;
    if (fs->sync_delay_us)
        usleep(fs->sync_delay_us);
    pthread_mutex_lock(&fs->mu);
    while (fs->hold)
        pthread_cond_wait(&fs->hold_cond, &fs->mu);
    struct mfile *f = fd_file(fs, fd);
    int rc = -EBADF;
    if (f && !op_begin(fs))
        rc = -EIO;
    else if (f) {
        fs->syncs++;
        if (fs->fail_sync_at && --fs->fail_sync_at == 0) {
            /* The fsyncgate case: the kernel dropped the dirty pages and reports it once. */
            rc = -EIO;
        } else {
            file_sync(f);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int m_ftruncate(void *ctx, int fd, uint64_t len)
{
    struct memfs *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    struct mfile *f = fd_file(fs, fd);
    int rc = -EBADF;
    if (f && !op_begin(fs))
        rc = -EIO;
    else if (f && (rc = pending_add(f, P_TRUNCATE, 0, len, NULL)) == 0) {
        if (len < f->len)
            f->len = (size_t)len;
        else
            rc = file_resize(f, len);
    }
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int m_fallocate(void *ctx, int fd, uint64_t off, uint64_t len)
{
    struct memfs *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    struct mfile *f = fd_file(fs, fd);
    int rc = -EBADF;
    uint64_t end = off + len;
    if (f && !op_begin(fs))
        rc = -EIO;
    else if (f && fs->space_limit && end > f->len &&
             used_bytes(fs) + (end - f->len) > fs->space_limit)
        rc = -ENOSPC;
    else if (f) {
        rc = 0;
        if (end > f->len && (rc = file_resize(f, end)) == 0)
            rc = pending_add(f, P_ALLOCATE, off, len, NULL);
    }
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int m_file_size(void *ctx, int fd, uint64_t *size)
{
    struct memfs *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    struct mfile *f = fd_file(fs, fd);
    if (f)
        *size = f->len;
    pthread_mutex_unlock(&fs->mu);
    return f ? 0 : -EBADF;
}

static int m_rename(void *ctx, const char *from, const char *to)
{
    struct memfs *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    int rc = 0, i = names_find(&fs->cur, from);
    if (!op_begin(fs))
        rc = -EIO;
    else if (i < 0)
        rc = -ENOENT;
    else if (strlen(to) >= MEMFS_PATH_MAX)
        rc = -ENAMETOOLONG;
    else {
        int file = fs->cur.v[i].file;
        names_del(&fs->cur, i);
        int j = names_find(&fs->cur, to);
        if (j >= 0)
            names_del(&fs->cur, j);
        rc = names_add(&fs->cur, to, file);
    }
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int m_unlink(void *ctx, const char *path)
{
    struct memfs *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    int rc = 0, i = names_find(&fs->cur, path);
    if (!op_begin(fs))
        rc = -EIO;
    else if (i < 0)
        rc = -ENOENT;
    else
        names_del(&fs->cur, i);
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int m_fsync_dir(void *ctx, const char *dir)
{
    struct memfs *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    int rc = 0;
    if (!op_begin(fs)) {
        rc = -EIO;
    } else {
        for (size_t i = fs->dur.len; i-- > 0;)
            if (in_dir(fs->dur.v[i].path, dir))
                names_del(&fs->dur, (int)i);
        for (size_t i = 0; i < fs->cur.len && !rc; i++)
            if (in_dir(fs->cur.v[i].path, dir))
                rc = names_add(&fs->dur, fs->cur.v[i].path, fs->cur.v[i].file);
    }
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int m_mkdir(void *ctx, const char *path, int mode)
{
    return 0; /* directories exist implicitly */
}

static int m_list_dir(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg)
{
    struct memfs *fs = ctx;
    /* Snapshot the names first: fn may call back into the table (unlink). */
    pthread_mutex_lock(&fs->mu);
    size_t n = 0;
    char(*names)[MEMFS_PATH_MAX] = malloc(sizeof(*names) * (fs->cur.len + 1));
    BATON_ASSERT(names);
    for (size_t i = 0; i < fs->cur.len; i++)
        if (in_dir(fs->cur.v[i].path, dir))
            strcpy(names[n++], fs->cur.v[i].path + strlen(dir) + 1);
    pthread_mutex_unlock(&fs->mu);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = fn(arg, names[i]);
    free(names);
    return rc;
}

/* ---- control ------------------------------------------------------------------------------- */

struct memfs *memfs_new(void)
{
    struct memfs *fs = calloc(1, sizeof(*fs));
    BATON_ASSERT(fs);
    pthread_mutex_init(&fs->mu, NULL);
    pthread_cond_init(&fs->hold_cond, NULL);
    fs->io = (struct wal_io){
        .ctx = fs,
        .open = m_open,
        .close = m_close,
        .pread = m_pread,
        .pwrite = m_pwrite,
        .fdatasync = m_sync,
        .fsync = m_sync,
        .ftruncate = m_ftruncate,
        .fallocate = m_fallocate,
        .file_size = m_file_size,
        .rename = m_rename,
        .unlink = m_unlink,
        .fsync_dir = m_fsync_dir,
        .mkdir = m_mkdir,
        .list_dir = m_list_dir,
    };
    return fs;
}

void memfs_free(struct memfs *fs)
{
    for (size_t i = 0; i < fs->files_len; i++) {
        pending_clear(fs->files[i]);
        free(fs->files[i]->p);
        free(fs->files[i]->data);
        free(fs->files[i]->dur);
        free(fs->files[i]);
    }
    free(fs->cur.v);
    free(fs->dur.v);
    pthread_cond_destroy(&fs->hold_cond);
    pthread_mutex_destroy(&fs->mu);
    free(fs);
}

const struct wal_io *memfs_io(struct memfs *fs)
{
    return &fs->io;
}

uint64_t memfs_ops(struct memfs *fs)
{
    pthread_mutex_lock(&fs->mu);
    uint64_t n = fs->ops;
    pthread_mutex_unlock(&fs->mu);
    return n;
}

uint64_t memfs_fdatasyncs(struct memfs *fs)
{
    pthread_mutex_lock(&fs->mu);
    uint64_t n = fs->syncs;
    pthread_mutex_unlock(&fs->mu);
    return n;
}

void memfs_fail_from_op(struct memfs *fs, uint64_t n)
{
    pthread_mutex_lock(&fs->mu);
    fs->fail_from_op = n;
    pthread_mutex_unlock(&fs->mu);
}

void memfs_space_limit(struct memfs *fs, uint64_t bytes)
{
    pthread_mutex_lock(&fs->mu);
    fs->space_limit = bytes;
    pthread_mutex_unlock(&fs->mu);
}

void memfs_fail_sync(struct memfs *fs, uint64_t n)
{
    pthread_mutex_lock(&fs->mu);
    fs->fail_sync_at = n;
    pthread_mutex_unlock(&fs->mu);
}

void memfs_hold_syncs(struct memfs *fs, bool hold)
{
    pthread_mutex_lock(&fs->mu);
    fs->hold = hold;
    pthread_cond_broadcast(&fs->hold_cond);
    pthread_mutex_unlock(&fs->mu);
}

void memfs_sync_delay_us(struct memfs *fs, uint32_t us)
{
    fs->sync_delay_us = us;
}

/* Replays a prefix of a file's unsynced calls onto its synced content. */
static void torn_apply(struct mfile *f, struct prng *r)
{
    size_t keep = (size_t)prng_below(r, f->p_len + 1);
    for (size_t i = 0; i < keep && i < f->p_len; i++) {
        struct pending *p = &f->p[i];
        uint64_t len = p->len;
        if (i + 1 == keep && p->kind == P_WRITE)
            len = prng_below(r, p->len + 1); /* the last one only partly reached the disk */
        uint64_t end = p->kind == P_TRUNCATE ? p->len : p->off + len;
        if (p->kind == P_TRUNCATE || end > f->dur_len) {
            uint8_t *d = realloc(f->dur, end ? (size_t)end : 1);
            BATON_ASSERT(d);
            if (end > f->dur_len)
                memset(d + f->dur_len, 0, (size_t)(end - f->dur_len));
            f->dur = d;
            f->dur_len = (size_t)end;
        }
        if (p->kind == P_WRITE)
            memcpy(f->dur + p->off, p->bytes, (size_t)len);
    }
}

void memfs_power_cut(struct memfs *fs, uint64_t torn_seed)
{
    pthread_mutex_lock(&fs->mu);
    struct prng r;
    prng_seed(&r, torn_seed);
    for (size_t i = 0; i < fs->files_len; i++) {
        struct mfile *f = fs->files[i];
        if (torn_seed)
            torn_apply(f, &r);
        free(f->data);
        f->data = malloc(f->dur_len ? f->dur_len : 1);
        BATON_ASSERT(f->data);
        if (f->dur_len)
            memcpy(f->data, f->dur, f->dur_len);
        f->len = f->dur_len;
        pending_clear(f);
    }
    fs->cur.len = 0;
    for (size_t i = 0; i < fs->dur.len; i++)
        BATON_ASSERT(names_add(&fs->cur, fs->dur.v[i].path, fs->dur.v[i].file) == 0);
    memset(fs->fds, 0, sizeof(fs->fds));
    fs->fail_from_op = 0;
    fs->fail_sync_at = 0;
    fs->space_limit = 0;
    pthread_mutex_unlock(&fs->mu);
}

int memfs_read_file(struct memfs *fs, const char *path, uint8_t **data, size_t *len)
{
    pthread_mutex_lock(&fs->mu);
    int i = names_find(&fs->cur, path), rc = -ENOENT;
    if (i >= 0) {
        struct mfile *f = fs->files[fs->cur.v[i].file];
        *data = malloc(f->len ? f->len : 1);
        BATON_ASSERT(*data);
        if (f->len)
            memcpy(*data, f->data, f->len);
        *len = f->len;
        rc = 0;
    }
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

int memfs_write_file(struct memfs *fs, const char *path, const uint8_t *data, size_t len)
{
    pthread_mutex_lock(&fs->mu);
    int i = names_find(&fs->cur, path), file, rc = 0;
    if (i >= 0) {
        file = fs->cur.v[i].file;
    } else {
        BATON_ASSERT(fs->files_len < MEMFS_FILES_MAX);
        struct mfile *f = calloc(1, sizeof(*f));
        BATON_ASSERT(f);
        fs->files[fs->files_len++] = f;
        file = (int)fs->files_len - 1;
        rc = names_add(&fs->cur, path, file);
        if (!rc && names_find(&fs->dur, path) < 0)
            rc = names_add(&fs->dur, path, file);
    }
    if (!rc) {
        struct mfile *f = fs->files[file];
        f->len = 0;
        rc = file_resize(f, len);
        if (!rc && len)
            memcpy(f->data, data, len);
        if (!rc)
            file_sync(f);
    }
    pthread_mutex_unlock(&fs->mu);
    return rc;
}
