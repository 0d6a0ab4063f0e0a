/*
 * fuzz_common — what the libFuzzer targets share: a failed property is a
 * crash (abort after one line on stderr), so libFuzzer saves the input.
 */
#ifndef HERALD_FUZZ_COMMON_H
#define HERALD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_ASSERT(cond, ...)                                                 \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz property failed: %s (%s:%d): ", #cond,       \
                    __FILE__, __LINE__);                                       \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
