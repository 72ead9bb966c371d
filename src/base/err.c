/* Error texts and the always-on assertion handler. */
#include "base/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const baton_err_text[] = {
    [-(BATON_ENOMEM - BATON_ERR_BASE)] = "out of memory",
    [-(BATON_EINVAL - BATON_ERR_BASE)] = "invalid argument",
    [-(BATON_ECORRUPT - BATON_ERR_BASE)] = "data is corrupt",
    [-(BATON_ETOOBIG - BATON_ERR_BASE)] = "size limit exceeded",
    [-(BATON_ENOTFOUND - BATON_ERR_BASE)] = "not found",
    [-(BATON_EEXIST - BATON_ERR_BASE)] = "already exists",
    [-(BATON_EBUSY - BATON_ERR_BASE)] = "busy, try again",
    [-(BATON_ENOTLEADER - BATON_ERR_BASE)] = "not the leader",
    [-(BATON_EPROPOSALDROP - BATON_ERR_BASE)] = "proposal dropped",
    [-(BATON_ECOMPACTED - BATON_ERR_BASE)] = "required revision has been compacted",
    [-(BATON_EFUTURE - BATON_ERR_BASE)] = "required revision is a future revision",
    [-(BATON_EUNAVAIL - BATON_ERR_BASE)] = "not available",
    [-(BATON_ECLOSED - BATON_ERR_BASE)] = "closed",
    [-(BATON_ETIMEOUT - BATON_ERR_BASE)] = "timed out",
    [-(BATON_ENOSPACE - BATON_ERR_BASE)] = "database space exceeded",
    [-(BATON_ECONFCHANGE - BATON_ERR_BASE)] = "a configuration change is pending",
    [-(BATON_EPROTO - BATON_ERR_BASE)] = "protocol error",
};

const char *baton_strerror(int err)
{
    if (err == 0)
        return "success";
    if (err < BATON_ERR_BASE && err > BATON_ERR_LAST) {
        const char *t = baton_err_text[-(err - BATON_ERR_BASE)];
        return t ? t : "unknown baton error";
    }
    if (err < 0 && err > BATON_ERR_BASE)
        return strerror(-err);
    return "unknown error";
}

void baton_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "assertion failed: %s at %s:%d in %s()\n", expr, file, line, func);
    fflush(stderr);
    abort();
}
