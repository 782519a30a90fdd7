/*
 * The OpenCL backend's memory: alloc reserves an address range in the host's address space
 * (never touched) that names a cl_mem of the same size, kept in the device's sorted block table;
 * released cl_mem wait in a pool for reuse; upload, download and the lookup that turns an
 * address into (cl_mem, offset) for every execute.
 */
#include "ocl_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Released cl_mem kept for reuse per device, in bytes. */
#define OCL_POOL_BYTES ((size_t)256 << 20)

/* Index of the block holding address P, or -1 (caller holds blocks_lock). */
static long block_find(const ocl_device *d, uintptr_t p)
{
    size_t lo = 0, hi = d->n_blocks;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (d->blocks[mid].base <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return -1;
    const ocl_block *b = &d->blocks[lo - 1];
    return p < b->base + b->span ? (long)(lo - 1) : -1;
}

void *ocl_alloc(void *ctx, uint32_t dev, size_t size, size_t align)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs || align > 4096 || (align & (align - 1)))
        return NULL;
    ocl_device *d = &s->devs[dev];
    if (ocl_fault_hits(&s->faults.allocs, s->faults.alloc_at)) {
        ocl_log(s, LOOM_LOG_WARNING, "opencl:%u: clCreateBuffer failed: "
                "CL_MEM_OBJECT_ALLOCATION_FAILURE (injected, %zu bytes)", dev, size);
        return NULL;
    }
    size_t want = size ? size : 1;
    if (d->info.max_alloc_bytes && want > d->info.max_alloc_bytes)
        return NULL;
    long page = sysconf(_SC_PAGESIZE);
    size_t span = (want + (size_t)page - 1) / (size_t)page * (size_t)page;
    /* The address range is reserved, never backed: it only names the block. */
    void *base = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    cl_mem mem = NULL;
    size_t mem_size = 0;
    pthread_rwlock_wrlock(&d->blocks_lock);
    /* Reuse a pooled cl_mem at most twice the size asked for. */
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < d->n_pool; i++)
        if (d->pool_size[i] >= want && d->pool_size[i] <= 2 * want &&
            (best == SIZE_MAX || d->pool_size[i] < d->pool_size[best]))
            best = i;
    if (best != SIZE_MAX) {
        mem = d->pool[best];
        mem_size = d->pool_size[best];
        d->pool_bytes -= mem_size;
        d->pool[best] = d->pool[d->n_pool - 1];
        d->pool_size[best] = d->pool_size[d->n_pool - 1];
        d->n_pool--;
    }
    pthread_rwlock_unlock(&d->blocks_lock);
    if (!mem) {
        cl_int e;
        mem = clCreateBuffer(d->context, CL_MEM_READ_WRITE, want, NULL, &e);
        mem_size = want;
        if (!mem) {
            munmap(base, span);
            ocl_log(s, LOOM_LOG_WARNING, "opencl:%u: clCreateBuffer(%zu bytes) failed: %s",
                    dev, want, ocl_error_name(e));
            return NULL;
        }
    }
    pthread_rwlock_wrlock(&d->blocks_lock);
    if (d->n_blocks == d->cap_blocks) {
        size_t cap = d->cap_blocks ? 2 * d->cap_blocks : 16;
        ocl_block *nb = realloc(d->blocks, cap * sizeof *nb);
        if (!nb) {
            pthread_rwlock_unlock(&d->blocks_lock);
            clReleaseMemObject(mem);
            munmap(base, span);
            return NULL;
        }
        d->blocks = nb;
        d->cap_blocks = cap;
    }
    size_t at = 0;
    while (at < d->n_blocks && d->blocks[at].base < (uintptr_t)base)
        at++;
    memmove(&d->blocks[at + 1], &d->blocks[at], (d->n_blocks - at) * sizeof *d->blocks);
    d->blocks[at] = (ocl_block){(uintptr_t)base, want, span, mem_size, mem};
    d->n_blocks++;
    pthread_rwlock_unlock(&d->blocks_lock);
    return base;
}

void ocl_free(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    ocl_state *s = ctx;
    (void)size;
    if (!ptr || dev >= s->n_devs)
        return;
    ocl_device *d = &s->devs[dev];
    pthread_rwlock_wrlock(&d->blocks_lock);
    long i = block_find(d, (uintptr_t)ptr);
    if (i < 0 || d->blocks[i].base != (uintptr_t)ptr) {
        pthread_rwlock_unlock(&d->blocks_lock);
        ocl_log(s, LOOM_LOG_ERROR, "opencl:%u: free of %p, which alloc did not return", dev,
                ptr);
        return;
    }
    ocl_block b = d->blocks[i];
    memmove(&d->blocks[i], &d->blocks[i + 1], (d->n_blocks - (size_t)i - 1) * sizeof *d->blocks);
    d->n_blocks--;
    cl_mem release = b.mem;
    if (d->pool_bytes + b.mem_size <= OCL_POOL_BYTES) {
        if (d->n_pool == d->cap_pool) {
            size_t cap = d->cap_pool ? 2 * d->cap_pool : 16;
            cl_mem *np = realloc(d->pool, cap * sizeof *np);
            if (np)
                d->pool = np;
            size_t *ns = np ? realloc(d->pool_size, cap * sizeof *ns) : NULL;
            if (ns) {
                d->pool_size = ns;
                d->cap_pool = cap;
            }
        }
        if (d->n_pool < d->cap_pool) {
            d->pool[d->n_pool] = b.mem;
            d->pool_size[d->n_pool++] = b.mem_size;
            d->pool_bytes += b.mem_size;
            release = NULL;
        }
    }
    pthread_rwlock_unlock(&d->blocks_lock);
    if (release)
        clReleaseMemObject(release);
    munmap((void *)b.base, b.span);
}

/* The cl_mem and offset of [P, P + BYTES) on D; 0 on success. */
int ocl_resolve(ocl_device *d, const void *p, size_t bytes, ocl_buf *out)
{
    pthread_rwlock_rdlock(&d->blocks_lock);
    long i = block_find(d, (uintptr_t)p);
    int bad = i < 0;
    if (!bad) {
        const ocl_block *b = &d->blocks[i];
        size_t off = (uintptr_t)p - b->base;
        bad = off > b->size || bytes > b->size - off;
        out->mem = b->mem;
        out->off = off;
    }
    pthread_rwlock_unlock(&d->blocks_lock);
    return bad ? -1 : 0;
}

cl_mem ocl_buffer_shared(ocl_device *d, const void *addr, size_t bytes)
{
    ocl_buf b;
    /* Kernels read a constant from offset 0 of its buffer: only a whole block will do. */
    if (!addr || ocl_resolve(d, addr, bytes, &b) != 0 || b.off != 0 || !b.mem)
        return NULL;
    return clRetainMemObject(b.mem) == CL_SUCCESS ? b.mem : NULL;
}

loom_status ocl_upload(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                       char *err, size_t err_len)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: no device %u", dev);
    if (!bytes)
        return LOOM_OK;
    ocl_device *d = &s->devs[dev];
    ocl_buf b;
    if (!src || ocl_resolve(d, dst, bytes, &b) != 0)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "opencl:%u: upload of %zu bytes to %p: not inside a block from alloc", dev,
                        bytes, dst);
    /* Blocking: SRC may be reused as soon as this returns. */
    cl_int e = clEnqueueWriteBuffer(d->queue, b.mem, CL_TRUE, b.off, bytes, src, 0, NULL, NULL);
    if (e != CL_SUCCESS)
        return ocl_fail(err, err_len, ocl_cl_status(e), "opencl:%u: clEnqueueWriteBuffer "
                        "(%zu bytes) failed: %s", dev, bytes, ocl_error_name(e));
    return LOOM_OK;
}

loom_status ocl_download(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                         char *err, size_t err_len)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: no device %u", dev);
    if (!bytes)
        return LOOM_OK;
    ocl_device *d = &s->devs[dev];
    ocl_buf b;
    if (!dst || ocl_resolve(d, src, bytes, &b) != 0)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "opencl:%u: download of %zu bytes from %p: not inside a block from alloc",
                        dev, bytes, src);
    cl_int e = clEnqueueReadBuffer(d->queue, b.mem, CL_TRUE, b.off, bytes, dst, 0, NULL, NULL);
    if (e != CL_SUCCESS)
        return ocl_fail(err, err_len, ocl_cl_status(e), "opencl:%u: clEnqueueReadBuffer "
                        "(%zu bytes) failed: %s", dev, bytes, ocl_error_name(e));
    return LOOM_OK;
}

cl_mem ocl_buffer_from_host(ocl_state *s, ocl_device *d, const void *data, size_t bytes,
                            char *err, size_t err_len)
{
    (void)s;
    cl_int e;
    cl_mem m = clCreateBuffer(d->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                              bytes ? bytes : 1, (void *)data, &e);
    if (!m && !data)
        m = clCreateBuffer(d->context, CL_MEM_READ_ONLY, bytes ? bytes : 1, NULL, &e);
    if (!m)
        ocl_fail(err, err_len, ocl_cl_status(e), "opencl:%u: clCreateBuffer (%zu bytes) failed: %s",
                 d->index, bytes, ocl_error_name(e));
    return m;
}

