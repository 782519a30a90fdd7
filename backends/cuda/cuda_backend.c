/*
 * The CUDA backend plugin's table (backend ABI 1.0): loom_backend_query, options, device
 * memory the host cannot address (cudaMalloc; upload/download and their asynchronous forms on
 * a host->device and a device->host stream of each device), pinned staging buffers, execution
 * on one compute stream per device (execute waits; enqueue returns and a waiter thread calls
 * done() once the work's completion event has passed), events between devices' streams, and
 * peer copies. docs/cuda.md describes the backend as a user sees it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr, RTLD_NODELETE (build.sh builds without meson's -D_GNU_SOURCE) */
#endif
#include "cuda_internal.h"

#include <dlfcn.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cuda_log(cuda_state *s, loom_log_level level, const char *fmt, ...)
{
    if (!s->log)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s->log(s->host_ctx, level, buf);
}

loom_status cuda_fail(cudaError_t e, const char *what, char *err, size_t err_len)
{
    if (err && err_len)
        snprintf(err, err_len, "cuda: %s: %s (%s)", what, cudaGetErrorString(e),
                 cudaGetErrorName(e));
    return e == cudaErrorMemoryAllocation ? LOOM_ERR_OUT_OF_MEMORY : LOOM_ERR_DEVICE_LOST;
}

loom_status cuda_blas_fail(cublasStatus_t st, const char *what, char *err, size_t err_len)
{
    if (err && err_len)
        snprintf(err, err_len, "cuda: %s: cuBLAS status %d", what, (int)st);
    return st == CUBLAS_STATUS_ALLOC_FAILED ? LOOM_ERR_OUT_OF_MEMORY : LOOM_ERR_DEVICE_LOST;
}

static cuda_dev *device(cuda_state *s, uint32_t dev)
{
    return dev < (uint32_t)s->n_devices ? &s->devs[dev] : NULL;
}

/* ---- completion: a waiter thread per stream ---- */

struct cuda_done_item {
    cudaEvent_t event;
    loom_done_fn done;
    void *token;
    cuda_done_item *next;
};

static void *waiter_main(void *arg)
{
    cuda_waiter *w = arg;
    (void)cudaSetDevice(w->ordinal);
    pthread_mutex_lock(&w->m);
    for (;;) {
        while (!w->head && !w->stop)
            pthread_cond_wait(&w->cv, &w->m);
        if (!w->head)
            break; /* stopping, and nothing left to report */
        cuda_done_item *it = w->head;
        w->head = it->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->m);
        /* The event was made with cudaEventBlockingSync: the thread sleeps, it does not spin
         * a core the CPU backend could use. */
        cudaError_t e = cudaEventSynchronize(it->event);
        cudaEventDestroy(it->event);
        if (e == cudaSuccess) {
            it->done(it->token, LOOM_OK, NULL);
        } else {
            char msg[256];
            loom_status st = cuda_fail(e, "the enqueued work failed", msg, sizeof msg);
            it->done(it->token, st, msg);
        }
        free(it);
        pthread_mutex_lock(&w->m);
    }
    pthread_mutex_unlock(&w->m);
    return NULL;
}

loom_status cuda_queue_done(cuda_state *s, cuda_dev *d, int q, loom_done_fn done, void *token,
                            char *err, size_t err_len)
{
    (void)s;
    cuda_done_item *it = calloc(1, sizeof *it);
    if (!it) {
        snprintf(err, err_len, "cuda: out of memory queueing a completion");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    cudaError_t e =
        cudaEventCreateWithFlags(&it->event, cudaEventDisableTiming | cudaEventBlockingSync);
    if (e == cudaSuccess && (e = cudaEventRecord(it->event, d->stream[q])) != cudaSuccess)
        cudaEventDestroy(it->event);
    if (e != cudaSuccess) {
        free(it);
        return cuda_fail(e, "recording a completion event", err, err_len);
    }
    it->done = done;
    it->token = token;
    cuda_waiter *w = &d->waiter[q];
    pthread_mutex_lock(&w->m);
    if (!w->started) {
        if (pthread_create(&w->thread, NULL, waiter_main, w) != 0) {
            pthread_mutex_unlock(&w->m);
            cudaEventDestroy(it->event);
            free(it);
            snprintf(err, err_len, "cuda: cannot start a completion thread");
            return LOOM_ERR_OUT_OF_MEMORY;
        }
        w->started = 1;
    }
    if (w->tail)
        w->tail->next = it;
    else
        w->head = it;
    w->tail = it;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->m);
    return LOOM_OK;
}

loom_status cuda_stream_wait(cuda_dev *d, int q, char *err, size_t err_len)
{
    cudaError_t e = cudaStreamSynchronize(d->stream[q]);
    return e == cudaSuccess ? LOOM_OK : cuda_fail(e, "cudaStreamSynchronize", err, err_len);
}

/* ---- devices ---- */

static uint32_t cu_device_count(void *ctx)
{
    return (uint32_t)((cuda_state *)ctx)->n_devices;
}

/* Copies only as much as the host's struct holds (it may be an older, shorter one). */
static loom_status cu_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    cuda_dev *d = device(ctx, dev);
    if (!d)
        return LOOM_ERR_INVALID_ARGUMENT;
    uint32_t abi = info->abi_version, size = info->struct_size;
    memcpy(info, &d->info, size && size < sizeof d->info ? size : sizeof d->info);
    info->abi_version = abi;
    info->struct_size = size;
    return LOOM_OK;
}

/* ---- execution ---- */

/* Device DEV of S, set up for work (its stream and cuBLAS handle made on first use); NULL with
 * *ST and ERR saying why when there is no such device or it cannot be set up. */
static cuda_dev *ready_device(cuda_state *s, uint32_t dev, loom_status *st, char *err,
                              size_t err_len)
{
    cuda_dev *d = device(s, dev);
    if (!d) {
        snprintf(err, err_len, "cuda: no device %u", dev);
        *st = LOOM_ERR_INVALID_ARGUMENT;
        return NULL;
    }
    *st = cuda_dev_ready(s, d, err, err_len);
    return *st == LOOM_OK ? d : NULL;
}

static loom_status cu_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              char *err, size_t err_len)
{
    cuda_state *s = ctx;
    loom_status st;
    cuda_dev *d = ready_device(s, dev, &st, err, err_len);
    if (!d)
        return st;
    /* A completion event of this call's own, not a stream synchronisation: a concurrent run
     * enqueuing after us must not make us wait for its work. */
    cudaEvent_t ev;
    cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming | cudaEventBlockingSync);
    if (e != cudaSuccess)
        return cuda_fail(e, "cudaEventCreateWithFlags", err, err_len);
    pthread_mutex_lock(&d->lock);
    st = cuda_kernel_launch(s, dev, kernel, args, err, err_len);
    if (st == LOOM_OK && (e = cudaEventRecord(ev, d->stream[CUDA_Q_COMPUTE])) != cudaSuccess)
        st = cuda_fail(e, "cudaEventRecord", err, err_len);
    pthread_mutex_unlock(&d->lock);
    if (st == LOOM_OK && (e = cudaEventSynchronize(ev)) != cudaSuccess)
        st = cuda_fail(e, "the kernel failed", err, err_len);
    cudaEventDestroy(ev);
    return st;
}

static loom_status cu_enqueue(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              loom_done_fn done, void *token, char *err, size_t err_len)
{
    cuda_state *s = ctx;
    loom_status st;
    cuda_dev *d = ready_device(s, dev, &st, err, err_len);
    if (!d)
        return st;
    pthread_mutex_lock(&d->lock);
    st = cuda_kernel_launch(s, dev, kernel, args, err, err_len);
    if (st == LOOM_OK)
        st = cuda_queue_done(s, d, CUDA_Q_COMPUTE, done, token, err, err_len);
    pthread_mutex_unlock(&d->lock);
    return st;
}

static void cu_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    if (!kernel)
        return;
    if (*(const cuda_kernel_kind *)kernel == CUDA_KERNEL_CHAIN)
        cuda_chain_release(kernel);
    else
        cuda_node_release(kernel);
}

/* ---- memory ---- */

/* cudaMalloc's blocks are aligned to at least 256 bytes; a larger ALIGN (at most 4096 by the
 * ABI) gets a block that much larger, remembered so that free() finds its start. */
static void *cu_alloc(void *ctx, uint32_t dev, size_t size, size_t align)
{
    cuda_dev *d = device(ctx, dev);
    if (!d || cudaSetDevice(d->ordinal) != cudaSuccess)
        return NULL;
    void *p = NULL;
    if (align <= 256) {
        if (cudaMalloc(&p, size ? size : 1) != cudaSuccess) {
            (void)cudaGetLastError();
            return NULL;
        }
        return p;
    }
    cuda_aligned_block *b = malloc(sizeof *b);
    if (!b)
        return NULL;
    if (cudaMalloc(&b->base, size + align) != cudaSuccess) {
        (void)cudaGetLastError();
        free(b);
        return NULL;
    }
    b->user = (void *)(((uintptr_t)b->base + align - 1) & ~(uintptr_t)(align - 1));
    pthread_mutex_lock(&d->mem_lock);
    b->next = d->aligned;
    d->aligned = b;
    pthread_mutex_unlock(&d->mem_lock);
    return b->user;
}

static void cu_free(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    (void)size;
    cuda_dev *d = device(ctx, dev);
    if (!d || !ptr || cudaSetDevice(d->ordinal) != cudaSuccess)
        return;
    void *base = ptr;
    pthread_mutex_lock(&d->mem_lock);
    for (cuda_aligned_block **pb = &d->aligned; *pb; pb = &(*pb)->next)
        if ((*pb)->user == ptr) {
            cuda_aligned_block *b = *pb;
            *pb = b->next;
            base = b->base;
            free(b);
            break;
        }
    pthread_mutex_unlock(&d->mem_lock);
    /* cudaFree waits for the device to be idle first: no kernel still reads the block. */
    cudaFree(base);
}

static loom_status copy_sync(cuda_state *s, uint32_t dev, int q, void *dst, const void *src,
                             size_t bytes, enum cudaMemcpyKind kind, char *err, size_t err_len)
{
    cuda_dev *d = device(s, dev);
    if (!d) {
        snprintf(err, err_len, "cuda: no device %u", dev);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    loom_status st = cuda_dev_ready(s, d, err, err_len);
    if (st != LOOM_OK || !bytes)
        return st;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, d->stream[q]);
    if (e != cudaSuccess)
        return cuda_fail(e, kind == cudaMemcpyHostToDevice ? "upload" : "download", err, err_len);
    return cuda_stream_wait(d, q, err, err_len);
}

static loom_status cu_upload(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                             char *err, size_t err_len)
{
    return copy_sync(ctx, dev, CUDA_Q_H2D, dst, src, bytes, cudaMemcpyHostToDevice, err, err_len);
}

/* The host calls it once the producer's completion was seen, so the d2h stream need not wait
 * for the compute stream. */
static loom_status cu_download(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                               char *err, size_t err_len)
{
    return copy_sync(ctx, dev, CUDA_Q_D2H, dst, src, bytes, cudaMemcpyDeviceToHost, err, err_len);
}

/* ---- events: one CUDA event per device, so that any device's stream can record it ---- */

typedef struct cuda_ev {
    int n;
    int last; /* the device whose event was recorded last, -1: never recorded */
    cudaEvent_t *ev;
} cuda_ev;

static loom_status cu_event_create(void *ctx, uint32_t dev, void **event, char *err,
                                   size_t err_len)
{
    (void)dev;
    cuda_state *s = ctx;
    cuda_ev *v = calloc(1, sizeof *v);
    cudaEvent_t *evs = calloc((size_t)s->n_devices, sizeof *evs);
    if (!v || !evs) {
        free(v);
        free(evs);
        snprintf(err, err_len, "cuda: out of memory making an event");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    v->ev = evs;
    v->last = -1;
    for (int i = 0; i < s->n_devices; i++) {
        cudaError_t e = cudaSetDevice(s->devs[i].ordinal);
        if (e == cudaSuccess)
            e = cudaEventCreateWithFlags(&v->ev[i], cudaEventDisableTiming);
        if (e != cudaSuccess) {
            for (int j = 0; j < v->n; j++)
                cudaEventDestroy(v->ev[j]);
            free(v->ev);
            free(v);
            return cuda_fail(e, "cudaEventCreateWithFlags", err, err_len);
        }
        v->n = i + 1;
    }
    *event = v;
    return LOOM_OK;
}

static loom_status record(cuda_state *s, uint32_t dev, cuda_ev *v, int q, char *err,
                          size_t err_len)
{
    cudaError_t e = cudaEventRecord(v->ev[dev], s->devs[dev].stream[q]);
    if (e != cudaSuccess)
        return cuda_fail(e, "cudaEventRecord", err, err_len);
    __atomic_store_n(&v->last, (int)dev, __ATOMIC_RELEASE);
    return LOOM_OK;
}

static loom_status cu_event_record(void *ctx, uint32_t dev, void *event, char *err,
                                   size_t err_len)
{
    cuda_state *s = ctx;
    cuda_dev *d = device(s, dev);
    if (!d || !event) {
        snprintf(err, err_len, "cuda: no device %u", dev);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    loom_status st = cuda_dev_ready(s, d, err, err_len);
    if (st != LOOM_OK)
        return st;
    pthread_mutex_lock(&d->lock);
    st = record(s, dev, event, CUDA_Q_COMPUTE, err, err_len);
    pthread_mutex_unlock(&d->lock);
    return st;
}

static loom_status cu_event_wait(void *ctx, uint32_t dev, void *event, char *err, size_t err_len)
{
    cuda_state *s = ctx;
    cuda_dev *d = device(s, dev);
    if (!d || !event) {
        snprintf(err, err_len, "cuda: no device %u", dev);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    cuda_ev *v = event;
    int last = __atomic_load_n(&v->last, __ATOMIC_ACQUIRE);
    if (last < 0)
        return LOOM_OK; /* never recorded: nothing to wait for */
    loom_status st = cuda_dev_ready(s, d, err, err_len);
    if (st != LOOM_OK)
        return st;
    pthread_mutex_lock(&d->lock);
    cudaError_t e = cudaStreamWaitEvent(d->stream[CUDA_Q_COMPUTE], v->ev[last], 0);
    pthread_mutex_unlock(&d->lock);
    return e == cudaSuccess ? LOOM_OK : cuda_fail(e, "cudaStreamWaitEvent", err, err_len);
}

static void cu_event_destroy(void *ctx, void *event)
{
    (void)ctx;
    cuda_ev *v = event;
    if (!v)
        return;
    for (int i = 0; i < v->n; i++)
        cudaEventDestroy(v->ev[i]);
    free(v->ev);
    free(v);
}

static loom_status copy_async(cuda_state *s, uint32_t dev, int q, void *dst, const void *src,
                              size_t bytes, enum cudaMemcpyKind kind, void *event,
                              loom_done_fn done, void *token, char *err, size_t err_len)
{
    loom_status st;
    cuda_dev *d = ready_device(s, dev, &st, err, err_len);
    if (!d)
        return st;
    /* Several transfer threads may share the stream: the copy, its event and its completion
     * must be queued together. */
    pthread_mutex_lock(&d->mem_lock);
    cudaError_t e = bytes ? cudaMemcpyAsync(dst, src, bytes, kind, d->stream[q]) : cudaSuccess;
    if (e != cudaSuccess)
        st = cuda_fail(e, kind == cudaMemcpyHostToDevice ? "upload" : "download", err, err_len);
    if (st == LOOM_OK && event)
        st = record(s, dev, event, q, err, err_len);
    if (st == LOOM_OK)
        st = cuda_queue_done(s, d, q, done, token, err, err_len);
    pthread_mutex_unlock(&d->mem_lock);
    return st;
}

static loom_status cu_upload_async(void *ctx, uint32_t dev, void *dst, const void *src,
                                   size_t bytes, void *event, loom_done_fn done, void *token,
                                   char *err, size_t err_len)
{
    return copy_async(ctx, dev, CUDA_Q_H2D, dst, src, bytes, cudaMemcpyHostToDevice, event, done,
                      token, err, err_len);
}

static loom_status cu_download_async(void *ctx, uint32_t dev, void *dst, const void *src,
                                     size_t bytes, void *event, loom_done_fn done, void *token,
                                     char *err, size_t err_len)
{
    return copy_async(ctx, dev, CUDA_Q_D2H, dst, src, bytes, cudaMemcpyDeviceToHost, event, done,
                      token, err, err_len);
}

static int cu_can_copy_peer(void *ctx, uint32_t dev_dst, uint32_t dev_src)
{
    cuda_state *s = ctx;
    cuda_dev *a = device(s, dev_dst), *b = device(s, dev_src);
    int yes = 0;
    if (a && b && a != b &&
        cudaDeviceCanAccessPeer(&yes, a->ordinal, b->ordinal) != cudaSuccess) {
        (void)cudaGetLastError();
        yes = 0;
    }
    return yes;
}

static loom_status cu_copy_peer(void *ctx, uint32_t dev_dst, void *dst, uint32_t dev_src,
                                const void *src, size_t bytes, char *err, size_t err_len)
{
    cuda_state *s = ctx;
    cuda_dev *a = device(s, dev_dst), *b = device(s, dev_src);
    if (!a || !b) {
        snprintf(err, err_len, "cuda: no device %u or %u", dev_dst, dev_src);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    loom_status st = cuda_dev_ready(s, a, err, err_len);
    if (st != LOOM_OK || !bytes)
        return st;
    cudaError_t e =
        cudaMemcpyPeerAsync(dst, a->ordinal, src, b->ordinal, bytes, a->stream[CUDA_Q_H2D]);
    if (e != cudaSuccess)
        return cuda_fail(e, "cudaMemcpyPeerAsync", err, err_len);
    return cuda_stream_wait(a, CUDA_Q_H2D, err, err_len);
}

static void *cu_alloc_host(void *ctx, uint32_t dev, size_t size)
{
    cuda_dev *d = device(ctx, dev);
    void *p = NULL;
    if (!d || cudaSetDevice(d->ordinal) != cudaSuccess ||
        cudaHostAlloc(&p, size ? size : 1, cudaHostAllocPortable) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cu_free_host(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    (void)ctx;
    (void)dev;
    (void)size;
    if (ptr)
        cudaFreeHost(ptr);
}

static loom_status cu_memory_info(void *ctx, uint32_t dev, uint64_t *free_bytes,
                                  uint64_t *total_bytes)
{
    cuda_dev *d = device(ctx, dev);
    size_t f = 0, t = 0;
    if (!d || cudaSetDevice(d->ordinal) != cudaSuccess || cudaMemGetInfo(&f, &t) != cudaSuccess) {
        (void)cudaGetLastError();
        return LOOM_ERR_UNSUPPORTED;
    }
    *free_bytes = f;
    *total_bytes = t;
    return LOOM_OK;
}

/* ---- options ---- */

static const loom_backend_option cu_options[] = {
    {"tf32", "1: float32 GEMMs on TF32 tensor cores (about 1e-3 relative error, much faster); "
             "0: exact float32 like the CPU reference",
     "0"},
    {"graphs", "1: claim chains of supported nodes and replay each as one CUDA graph; 0: node "
               "by node",
     "1"},
};

static loom_status cu_set_option(void *ctx, const char *key, const char *value, char *err,
                                 size_t err_len)
{
    cuda_state *s = ctx;
    int *slot = !strcmp(key, "tf32") ? &s->tf32 : !strcmp(key, "graphs") ? &s->graphs : NULL;
    if (!slot) {
        snprintf(err, err_len, "cuda: no option '%s'", key);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    if (strcmp(value, "0") && strcmp(value, "1")) {
        snprintf(err, err_len, "cuda: %s='%s' is not 0 or 1", key, value);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    *slot = value[0] == '1';
    return LOOM_OK;
}

/* ---- lifetime ---- */

static void cu_shutdown(void *ctx)
{
    cuda_state *s = ctx;
    for (int i = 0; i < s->n_devices; i++)
        for (int q = 0; q < CUDA_Q_COUNT; q++) {
            cuda_waiter *w = &s->devs[i].waiter[q];
            pthread_mutex_lock(&w->m);
            int started = w->started;
            w->stop = 1;
            pthread_cond_signal(&w->cv);
            pthread_mutex_unlock(&w->m);
            if (started) /* it reports what is still queued, then ends */
                pthread_join(w->thread, NULL);
        }
    cuda_devices_close(s);
    free(s);
}

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

/* Keep this module loaded for the life of the process, whatever the host's dlclose does: the
 * CUDA runtime does not support being unloaded (its exit handlers stay registered), and the
 * C++ runtimes it and cuBLAS bring leave their exception pools behind (LeakSanitizer reports
 * them once the module is gone). Opening ourselves again with RTLD_NODELETE pins us. */
static void pin_module(void)
{
    static const char here = 0;
    Dl_info info;
    if (dladdr(&here, &info) && info.dli_fname)
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    void *hctx = NULL;
    void (*log)(void *, loom_log_level, const char *) = NULL;
    if (host && host->struct_size >= offsetof(loom_host, log) + sizeof host->log) {
        hctx = host->host_ctx;
        log = host->log;
    }
    if ((host_abi_version >> 16) != LOOM_ABI_VERSION_MAJOR) {
        if (log)
            log(hctx, LOOM_LOG_ERROR, "cuda: built for backend ABI 1.x only");
        return NULL;
    }
    pin_module();
    cuda_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->host_ctx = hctx;
    s->log = log;
    s->graphs = 1;
    if (cuda_devices_open(s) != LOOM_OK) {
        if (log)
            log(hctx, LOOM_LOG_ERROR, "cuda: out of memory listing devices");
        free(s);
        return NULL;
    }
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "cuda";
    t->ctx = s;
    t->device_count = cu_device_count;
    t->device_info = cu_device_info;
    t->supports = cuda_supports;
    t->prepare = cuda_prepare;
    t->execute = cu_execute;
    t->release_kernel = cu_release_kernel;
    t->alloc = cu_alloc;
    t->free = cu_free;
    t->shutdown = cu_shutdown;
    t->upload = cu_upload;
    t->download = cu_download;
    t->claim = cuda_claim;
    t->prepare_subgraph = cuda_prepare_subgraph;
    t->enqueue = cu_enqueue;
    t->event_create = cu_event_create;
    t->event_record = cu_event_record;
    t->event_wait = cu_event_wait;
    t->event_destroy = cu_event_destroy;
    t->upload_async = cu_upload_async;
    t->download_async = cu_download_async;
    t->can_copy_peer = cu_can_copy_peer;
    t->copy_peer = cu_copy_peer;
    t->alloc_host = cu_alloc_host;
    t->free_host = cu_free_host;
    t->memory_info = cu_memory_info;
    t->options = cu_options;
    t->n_options = sizeof cu_options / sizeof cu_options[0];
    t->set_option = cu_set_option;
    return t;
}
