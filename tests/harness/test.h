/*
 * baton's unit-test harness: TEST(name) registers a test; typed CHECK_* assertions print both
 * sides and stop the current test (the binary goes on with the next one). `prog [name...]` runs
 * the named tests only; the exit code is non-zero when any test failed. The closing line reads
 * "N passed, N failed".
 */
#ifndef BATON_TEST_H
#define BATON_TEST_H

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
_Noreturn void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prints a line attached to the current test (shown always; keep it short). */
void test_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A scratch directory for the current test, removed after it passes. */
const char *test_tmpdir(void);

#define TEST(name)                                                                                 \
    static void name(void);                                                                        \
    __attribute__((constructor)) static void test_reg_##name(void)                                 \
    {                                                                                              \
        test_register(#name, name);                                                                \
    }                                                                                              \
    static void name(void)

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            test_fail(__FILE__, __LINE__, "CHECK(%s)", #c);                                        \
    } while (0)

#define CHECK_INT_OP(a, op, b)                                                                     \
    do {                                                                                           \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                                              \
        if (!(a_ op b_))                                                                           \
            test_fail(__FILE__, __LINE__, "%s %s %s: %" PRId64 " vs %" PRId64, #a, #op, #b, a_,    \
                      b_);                                                                         \
    } while (0)
#define CHECK_EQ(a, b) CHECK_INT_OP(a, ==, b)
#define CHECK_NE(a, b) CHECK_INT_OP(a, !=, b)
#define CHECK_LT(a, b) CHECK_INT_OP(a, <, b)
#define CHECK_LE(a, b) CHECK_INT_OP(a, <=, b)
#define CHECK_GT(a, b) CHECK_INT_OP(a, >, b)
#define CHECK_GE(a, b) CHECK_INT_OP(a, >=, b)

#define CHECK_EQ_U64(a, b)                                                                         \
    do {                                                                                           \
        uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                                           \
        if (a_ != b_)                                                                              \
            test_fail(__FILE__, __LINE__,                                                          \
                      "%s == %s: %" PRIu64 " (0x%" PRIx64 ") vs %" PRIu64 " (0x%" PRIx64 ")", #a,  \
                      #b, a_, a_, b_, b_);                                                         \
    } while (0)

/* 0 expected; on failure prints the code and its baton_strerror text. */
#define CHECK_OK(e)                                                                                \
    do {                                                                                           \
        int rc_ = (e);                                                                             \
        if (rc_ != 0)                                                                              \
            test_fail(__FILE__, __LINE__, "%s returned %d (%s)", #e, rc_, test_strerror(rc_));     \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!test_str_eq(a_, b_))                                                                  \
            test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" vs \"%s\"", #a, #b,                    \
                      a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                     \
    } while (0)

#define CHECK_MEM(a, alen, b, blen)                                                                \
    do {                                                                                           \
        if (!test_mem_eq((a), (alen), (b), (blen)))                                                \
            test_fail_mem(__FILE__, __LINE__, #a, (a), (alen), #b, (b), (blen));                   \
    } while (0)

bool test_str_eq(const char *a, const char *b);
bool test_mem_eq(const void *a, size_t alen, const void *b, size_t blen);
_Noreturn void test_fail_mem(const char *file, int line, const char *an, const void *a, size_t alen,
                             const char *bn, const void *b, size_t blen);
const char *test_strerror(int rc);

#endif
