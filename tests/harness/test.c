/* The harness behind test.h: registration, failure unwinding, scratch directories, main(). */
#include "test.h"
#include "base/base.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TESTS_MAX 1024

struct test_case {
    const char *name;
    test_fn fn;
};

static struct test_case tests[TESTS_MAX];
static int tests_len;
static jmp_buf test_jmp;
static const char *test_current;
static char test_dir[256];

void test_register(const char *name, test_fn fn)
{
    if (tests_len == TESTS_MAX) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[tests_len++] = (struct test_case){name, fn};
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "  %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    longjmp(test_jmp, 1);
}

void test_log(const char *fmt, ...)
{
    va_list ap;
    printf("  [%s] ", test_current ? test_current : "-");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

bool test_str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

bool test_mem_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static void print_bytes(const char *name, const void *p, size_t len)
{
    const uint8_t *b = p;
    fprintf(stderr, "    %s (%zu bytes): ", name, len);
    for (size_t i = 0; i < len && i < 64; i++)
        fprintf(stderr, (b[i] >= 32 && b[i] < 127) ? "%c" : "\\x%02x", b[i]);
    fprintf(stderr, len > 64 ? "...\n" : "\n");
}

void test_fail_mem(const char *file, int line, const char *an, const void *a, size_t alen,
                   const char *bn, const void *b, size_t blen)
{
    fprintf(stderr, "  %s:%d: %s == %s differ\n", file, line, an, bn);
    print_bytes(an, a, alen);
    print_bytes(bn, b, blen);
    longjmp(test_jmp, 1);
}

const char *test_strerror(int rc)
{
    return baton_strerror(rc);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

const char *test_tmpdir(void)
{
    if (!test_dir[0]) {
        const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(test_dir, sizeof(test_dir), "%s/baton-test-XXXXXX", base);
        if (!mkdtemp(test_dir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return test_dir;
}

static bool selected(const char *name, int argc, char **argv)
{
    if (argc <= 1)
        return true;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

/* One test under setjmp; kept apart from main's loop so no loop variable lives across it. */
static bool run_one(const struct test_case *t)
{
    test_current = t->name;
    test_dir[0] = 0;
    if (setjmp(test_jmp) != 0)
        return false;
    t->fn();
    return true;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < tests_len; i++) {
        if (!selected(tests[i].name, argc, argv))
            continue;
        if (run_one(&tests[i])) {
            printf("ok   %s\n", tests[i].name);
            passed++;
            if (test_dir[0])
                nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        } else {
            if (test_dir[0])
                printf("FAIL %s (files kept in %s)\n", tests[i].name, test_dir);
            else
                printf("FAIL %s\n", tests[i].name);
            failed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
