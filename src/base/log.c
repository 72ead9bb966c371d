/* Structured log lines into an injected sink. */
#include "base/base.h"

#include <stdio.h>
#include <unistd.h>

const char *log_level_name(enum log_level level)
{
    switch (level) {
    case LOG_DEBUG:
        return "debug";
    case LOG_INFO:
        return "info";
    case LOG_WARN:
        return "warn";
    case LOG_ERROR:
        return "error";
    }
    return "unknown";
}

void log_write(const struct log_sink *sink, enum log_level level, const char *fmt, ...)
{
    if (!sink || !sink->fn || level < sink->min_level)
        return;
    char line[1024];
    int n = snprintf(line, sizeof(line), "level=%s ", log_level_name(level));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len >= sizeof(line))
        len = sizeof(line) - 1; /* long lines are cut, never split */
    sink->fn(sink->ctx, level, line, len);
}

void log_fn_stderr(void *ctx, enum log_level level, const char *line, size_t len)
{
    (void)ctx;
    (void)level;
    fprintf(stderr, "%.*s\n", (int)len, line);
}
