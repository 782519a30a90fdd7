/*
 * Host tensors: the buffers callers pass in and get back. 64-byte aligned, owned or wrapped.
 */
#include "core_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct loom_tensor {
    loom_tensor_desc desc;
    void *data;
    size_t nbytes;
    int owned;
};

uint64_t loom_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static loom_status make(loom_dtype dtype, uint32_t rank, const int64_t *dims, loom_tensor_desc *d,
                        size_t *bytes)
{
    if (!loom_dtype_size(dtype))
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "tensor: unknown dtype %d", (int)dtype);
    if (rank > LOOM_MAX_RANK)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "tensor: rank %u exceeds %d", rank,
                              LOOM_MAX_RANK);
    if (rank && !dims)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "tensor: dims is NULL");
    memset(d, 0, sizeof *d);
    d->dtype = dtype;
    d->rank = rank;
    for (uint32_t k = 0; k < rank; k++) {
        if (dims[k] < 0)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "tensor: dimension %u is negative",
                                  k);
        d->dims[k] = dims[k];
    }
    int64_t numel;
    if (!loom_dims_numel_checked(rank, d->dims, loom_dtype_size(dtype), &numel))
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "tensor: size overflows");
    *bytes = (size_t)numel * loom_dtype_size(dtype);
    return LOOM_OK;
}

/* Allocates a tensor of DTYPE and DIMS[RANK]; zero-fills its data when ZERO. */
static loom_status tensor_alloc(loom_dtype dtype, uint32_t rank, const int64_t *dims, int zero,
                                loom_tensor **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "tensor: out is NULL");
    *out = NULL;
    loom_clear_error();
    loom_tensor_desc d;
    size_t bytes = 0; /* set by make(); GCC -O3 cannot see it through the failure paths */
    loom_status st = make(dtype, rank, dims, &d, &bytes);
    if (st != LOOM_OK)
        return st;
    loom_tensor *t = calloc(1, sizeof *t);
    size_t alloc = (bytes + 63) / 64 * 64;
    void *data = NULL;
    if (!t || posix_memalign(&data, 64, alloc ? alloc : 64) != 0) {
        free(t);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "tensor: cannot allocate %zu bytes", bytes);
    }
    if (zero)
        memset(data, 0, alloc ? alloc : 64);
    else if (alloc > bytes)
        memset((char *)data + bytes, 0, alloc - bytes); /* the tail past the elements */
    t->desc = d;
    t->data = data;
    t->nbytes = bytes;
    t->owned = 1;
    *out = t;
    return LOOM_OK;
}

loom_status loom_tensor_create(loom_dtype dtype, uint32_t rank, const int64_t *dims,
                               loom_tensor **out)
{
    return tensor_alloc(dtype, rank, dims, 1, out);
}

loom_status loom_tensor_create_uninit(loom_dtype dtype, uint32_t rank, const int64_t *dims,
                                      loom_tensor **out)
{
    return tensor_alloc(dtype, rank, dims, 0, out);
}

loom_status loom_tensor_wrap(loom_dtype dtype, uint32_t rank, const int64_t *dims, void *data,
                             loom_tensor **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "tensor: out is NULL");
    *out = NULL;
    loom_clear_error();
    loom_tensor_desc d;
    size_t bytes = 0; /* set by make(); GCC -O3 cannot see it through the failure paths */
    loom_status st = make(dtype, rank, dims, &d, &bytes);
    if (st != LOOM_OK)
        return st;
    if (!data && bytes)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "tensor: data is NULL");
    loom_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "tensor: out of memory");
    t->desc = d;
    t->data = data;
    t->nbytes = bytes;
    *out = t;
    return LOOM_OK;
}

void loom_tensor_destroy(loom_tensor *t)
{
    if (!t)
        return;
    if (t->owned)
        free(t->data);
    free(t);
}

void *loom_tensor_data(const loom_tensor *t)
{
    return t ? t->data : NULL;
}

loom_dtype loom_tensor_dtype(const loom_tensor *t)
{
    return t ? t->desc.dtype : LOOM_DTYPE_UNDEFINED;
}

uint32_t loom_tensor_rank(const loom_tensor *t)
{
    return t ? t->desc.rank : 0;
}

void loom_tensor_dims(const loom_tensor *t, int64_t *dims)
{
    if (t && dims)
        memcpy(dims, t->desc.dims, t->desc.rank * sizeof *dims);
}

size_t loom_tensor_nbytes(const loom_tensor *t)
{
    return t ? t->nbytes : 0;
}

const loom_tensor_desc *loom_tensor_desc_of(const loom_tensor *t)
{
    return &t->desc;
}
