/*
 * The default I/O table of the WAL: plain POSIX calls, each returning 0 (or a count, or an fd)
 * or -errno. EINTR is retried here so callers never see it.
 */
#include "wal/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int pio_open(void *ctx, const char *path, int flags, int mode)
{
    int fd;
    do
        fd = open(path, flags | O_CLOEXEC, mode);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static int pio_close(void *ctx, int fd)
{
    /* close(2) must not be retried on EINTR on Linux: the fd is gone either way. */
    return close(fd) < 0 && errno != EINTR ? -errno : 0;
}

static ssize_t pio_pread(void *ctx, int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t n;
    do
        n = pread(fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

static ssize_t pio_pwrite(void *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
    ssize_t n;
    do
        n = pwrite(fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

static int pio_fdatasync(void *ctx, int fd)
{
    /* Never retried on any error but EINTR (which reports nothing was done). */
    int rc;
    do
        rc = fdatasync(fd);
    while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

static int pio_fsync(void *ctx, int fd)
{
    int rc;
    do
        rc = fsync(fd);
    while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

static int pio_ftruncate(void *ctx, int fd, uint64_t len)
{
    int rc;
    do
        rc = ftruncate(fd, (off_t)len);
    while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

static int pio_fallocate(void *ctx, int fd, uint64_t off, uint64_t len)
{
    /* posix_fallocate returns the error instead of setting errno. On file systems without
     * fallocate support glibc emulates it by writing zeros, which is what we want anyway. */
    int rc;
    do
        rc = posix_fallocate(fd, (off_t)off, (off_t)len);
    while (rc == EINTR);
    return -rc;
}

static int pio_file_size(void *ctx, int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int pio_rename(void *ctx, const char *from, const char *to)
{
    return rename(from, to) < 0 ? -errno : 0;
}

static int pio_unlink(void *ctx, const char *path)
{
    return unlink(path) < 0 ? -errno : 0;
}

static int pio_fsync_dir(void *ctx, const char *dir)
{
    int fd = pio_open(ctx, dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    int rc = pio_fsync(ctx, fd);
    close(fd);
    return rc;
}

static int pio_mkdir(void *ctx, const char *path, int mode)
{
    return mkdir(path, (mode_t)mode) < 0 ? -errno : 0;
}

static int pio_list_dir(void *ctx, const char *dir, int (*fn)(void *arg, const char *name),
                        void *arg)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            rc = errno ? -errno : 0;
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        rc = fn(arg, e->d_name);
        if (rc != 0)
            break;
    }
    closedir(d);
    return rc;
}

static const struct wal_io posix_io = {
    .ctx = NULL,
    .open = pio_open,
    .close = pio_close,
    .pread = pio_pread,
    .pwrite = pio_pwrite,
    .fdatasync = pio_fdatasync,
    .fsync = pio_fsync,
    .ftruncate = pio_ftruncate,
    .fallocate = pio_fallocate,
    .file_size = pio_file_size,
    .rename = pio_rename,
    .unlink = pio_unlink,
    .fsync_dir = pio_fsync_dir,
    .mkdir = pio_mkdir,
    .list_dir = pio_list_dir,
};

const struct wal_io *wal_io_posix(void)
{
    return &posix_io;
}
