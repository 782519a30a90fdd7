/*
 * Shapes as plain dim arrays: element counts checked for overflow, and formatting for messages.
 */
#include "core_internal.h"

#include <stdint.h>
#include <stdio.h>

int loom_dims_numel_checked(uint32_t rank, const int64_t *dims, size_t elem_size,
                            int64_t *numel)
{
    int64_t n = 1;
    int zero = 0;
    for (uint32_t k = 0; k < rank; k++) {
        if (dims[k] < 0)
            return 0;
        if (dims[k] == 0)
            zero = 1;
    }
    /* A zero dim makes an empty tensor however large the others are: nothing overflows. */
    if (zero) {
        if (numel)
            *numel = 0;
        return 1;
    }
    for (uint32_t k = 0; k < rank; k++) {
        if (__builtin_mul_overflow(n, dims[k], &n))
            return 0;
    }
    if (elem_size && (uint64_t)n > SIZE_MAX / elem_size)
        return 0;
    if (numel)
        *numel = n;
    return 1;
}

const char *loom_dims_format(uint32_t rank, const int64_t *dims, char *buf, size_t len)
{
    if (!buf || !len)
        return buf;
    size_t used = 0;
    buf[0] = '\0';
    /* snprintf returns what it wanted to write; clamp so truncation just stops appending. */
#define APPEND(...)                                                                           \
    do {                                                                                      \
        if (used < len) {                                                                     \
            int w_ = snprintf(buf + used, len - used, __VA_ARGS__);                          \
            used = w_ < 0 ? len : used + (size_t)w_;                                          \
        }                                                                                     \
    } while (0)
    APPEND("[");
    for (uint32_t k = 0; k < rank; k++)
        APPEND(k ? ", %lld" : "%lld", (long long)dims[k]);
    APPEND("]");
#undef APPEND
    return buf;
}
