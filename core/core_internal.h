/*
 * What every layer of Loom shares and no public header shows: recording the thread's last error,
 * a host tensor's descriptor, and the monotonic clock. The base layer: it includes nothing of
 * Loom but the public headers.
 */
#ifndef LOOM_CORE_INTERNAL_H
#define LOOM_CORE_INTERNAL_H

#include <loom/core.h>

/* Record a failure as the thread's last error: formats FMT into the thread's message and
 * returns STATUS, so callers can write `return loom_set_error(...)`. */
loom_status loom_set_error(loom_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Forget the thread's last error (loom_last_error() returns "" afterwards). */
void loom_clear_error(void);

/* The descriptor (dtype, rank, dims, data) of a host tensor; owned by T. */
const loom_tensor_desc *loom_tensor_desc_of(const loom_tensor *t);

/* loom_tensor_create without the zero fill, for a caller that writes every element at once
 * (a copy); the same ownership and failures. */
loom_status loom_tensor_create_uninit(loom_dtype dtype, uint32_t rank, const int64_t *dims,
                                      loom_tensor **out);

/* Monotonic clock in nanoseconds. */
uint64_t loom_now_ns(void);

/* Product of DIMS[RANK] into *NUMEL; returns 0 when it overflows int64 (or a byte count of it
 * would overflow size_t for elements of ELEM_SIZE bytes). */
int loom_dims_numel_checked(uint32_t rank, const int64_t *dims, size_t elem_size,
                            int64_t *numel);

/* "[2, 3, 4]" into BUF. */
const char *loom_dims_format(uint32_t rank, const int64_t *dims, char *buf, size_t len);

#endif /* LOOM_CORE_INTERNAL_H */
