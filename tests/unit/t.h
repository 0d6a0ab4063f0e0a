/*
 * t.h — the unit-test harness: CHECK macros that count, and T_DONE()
 * which prints "NAME: N passed, N failed" and returns the exit code.
 * Each test binary is one .c file under tests/unit/ named test_*.c.
 */
#ifndef HERALD_T_H
#define HERALD_T_H

#include <stdio.h>
#include <string.h>

static int t_pass, t_fail;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (cond) {                                                            \
            t_pass++;                                                          \
        } else {                                                               \
            t_fail++;                                                          \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);    \
        }                                                                      \
    } while (0)

#define CHECK_MSG(cond, ...)                                                   \
    do {                                                                       \
        if (cond) {                                                            \
            t_pass++;                                                          \
        } else {                                                               \
            t_fail++;                                                          \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

#define CHECK_STR(a, b)                                                        \
    do {                                                                       \
        const char *t_a_ = (a), *t_b_ = (b);                                   \
        CHECK_MSG(t_a_ &&t_b_ &&strcmp(t_a_, t_b_) == 0,                       \
                  "got \"%s\", want \"%s\"", t_a_ ? t_a_ : "(null)",           \
                  t_b_ ? t_b_ : "(null)");                                     \
    } while (0)

#define T_DONE(name)                                                           \
    (printf("%s: %d passed, %d failed\n", (name), t_pass, t_fail),             \
     t_fail ? 1 : 0)

#endif
