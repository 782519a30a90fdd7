/*
 * ABI 1.0 events and memory of the OpenCL backend: events between the devices' in-order queues,
 * non-blocking uploads and downloads that report through done(), pinned host memory for the
 * host's staging buffers, and the free-memory query where the platform tells it.
 *
 * A loom event is an object of ours holding the marker last recorded into it (a cl_event of the
 * recording device's context). Waiting on a queue of the same context enqueues a barrier on the
 * marker; each device here has a context of its own, so a queue of another context waits on a
 * user event of its own context that a callback on the marker completes (OpenCL events do not
 * cross contexts). Uploads and downloads run on the device's one in-order queue, so kernels
 * enqueued after an upload see its data without a wait.
 */
#include "ocl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ocl_event {
    pthread_mutex_t m;
    cl_event marker; /* the last point recorded (retained), or NULL */
    uint32_t dev;    /* the device it was recorded on */
} ocl_event;

static loom_status bad_device(const ocl_state *s, uint32_t dev, char *err, size_t err_len)
{
    return dev >= s->n_devs
               ? ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: no device %u", dev)
               : LOOM_OK;
}

loom_status ocl_event_create(void *ctx, uint32_t dev, void **event, char *err, size_t err_len)
{
    loom_status st = bad_device(ctx, dev, err, err_len);
    if (st != LOOM_OK)
        return st;
    ocl_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        return ocl_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "opencl: out of memory (event)");
    pthread_mutex_init(&ev->m, NULL);
    ev->dev = dev;
    *event = ev;
    return LOOM_OK;
}

/* Make MARKER (retained by the caller, given to EV) EV's point on device DEV. */
static void event_set(ocl_event *ev, uint32_t dev, cl_event marker)
{
    pthread_mutex_lock(&ev->m);
    cl_event old = ev->marker;
    ev->marker = marker;
    ev->dev = dev;
    pthread_mutex_unlock(&ev->m);
    if (old)
        clReleaseEvent(old);
}

loom_status ocl_event_record(void *ctx, uint32_t dev, void *event, char *err, size_t err_len)
{
    ocl_state *s = ctx;
    loom_status st = bad_device(s, dev, err, err_len);
    if (st != LOOM_OK)
        return st;
    ocl_device *d = &s->devs[dev];
    cl_event mk = NULL;
    pthread_mutex_lock(&d->lock);
    cl_int e = clEnqueueMarkerWithWaitList(d->queue, 0, NULL, &mk);
    if (e == CL_SUCCESS)
        clFlush(d->queue);
    pthread_mutex_unlock(&d->lock);
    if (e != CL_SUCCESS)
        return ocl_fail(err, err_len, ocl_cl_status(e), "opencl:%u: clEnqueueMarkerWithWaitList "
                        "failed: %s", dev, ocl_error_name(e));
    event_set(event, dev, mk);
    return LOOM_OK;
}

/* Completes the user event USER (of another context) when the marker it mirrors completes. */
static void CL_CALLBACK mirror_done(cl_event ev, cl_int exec, void *user)
{
    (void)ev;
    clSetUserEventStatus((cl_event)user, exec < 0 ? exec : CL_COMPLETE);
    clReleaseEvent((cl_event)user);
}

loom_status ocl_event_wait(void *ctx, uint32_t dev, void *event, char *err, size_t err_len)
{
    ocl_state *s = ctx;
    loom_status st = bad_device(s, dev, err, err_len);
    if (st != LOOM_OK)
        return st;
    ocl_event *ev = event;
    ocl_device *d = &s->devs[dev];
    pthread_mutex_lock(&ev->m);
    cl_event mk = ev->marker;
    uint32_t from = ev->dev;
    if (mk)
        clRetainEvent(mk);
    pthread_mutex_unlock(&ev->m);
    if (!mk)
        return LOOM_OK; /* never recorded: nothing to wait for */
    cl_event wait = mk;
    cl_int e = CL_SUCCESS;
    if (s->devs[from].context != d->context) {
        wait = clCreateUserEvent(d->context, &e);
        if (e == CL_SUCCESS) {
            clRetainEvent(wait); /* the callback's reference */
            e = clSetEventCallback(mk, CL_COMPLETE, mirror_done, wait);
            if (e != CL_SUCCESS) {
                clReleaseEvent(wait);
                clReleaseEvent(wait);
            }
        }
    }
    if (e == CL_SUCCESS) {
        pthread_mutex_lock(&d->lock);
        e = clEnqueueBarrierWithWaitList(d->queue, 1, &wait, NULL);
        pthread_mutex_unlock(&d->lock);
        if (wait != mk)
            clReleaseEvent(wait);
    }
    clReleaseEvent(mk);
    if (e != CL_SUCCESS)
        return ocl_fail(err, err_len, ocl_cl_status(e), "opencl:%u: waiting for an event of "
                        "opencl:%u failed: %s", dev, from, ocl_error_name(e));
    return LOOM_OK;
}

void ocl_event_destroy(void *ctx, void *event)
{
    (void)ctx;
    ocl_event *ev = event;
    if (!ev)
        return;
    if (ev->marker)
        clReleaseEvent(ev->marker);
    pthread_mutex_destroy(&ev->m);
    free(ev);
}

/* ---- asynchronous copies -------------------------------------------------------------------- */

typedef struct ocl_copy_pending {
    loom_done_fn done;
    void *token;
    uint32_t dev;
    size_t bytes;
    int upload;
} ocl_copy_pending;

static void CL_CALLBACK copy_done(cl_event ev, cl_int exec, void *user)
{
    ocl_copy_pending *p = user;
    loom_done_fn done = p->done;
    void *token = p->token;
    char msg[256] = "";
    loom_status st = LOOM_OK;
    if (exec < 0) {
        st = ocl_cl_status(exec);
        snprintf(msg, sizeof msg, "opencl:%u: %s of %zu bytes failed: %s", p->dev,
                 p->upload ? "upload" : "download", p->bytes, ocl_error_name(exec));
    }
    free(p);
    clReleaseEvent(ev);
    done(token, st, st == LOOM_OK ? NULL : msg);
}

static loom_status copy_async(ocl_state *s, uint32_t dev, int upload, void *dst, const void *src,
                              size_t bytes, void *event, loom_done_fn done, void *token,
                              char *err, size_t err_len)
{
    loom_status st = bad_device(s, dev, err, err_len);
    if (st != LOOM_OK)
        return st;
    if (!done)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: no done callback");
    ocl_device *d = &s->devs[dev];
    ocl_buf b;
    const void *dev_ptr = upload ? dst : src;
    if (!(upload ? src : dst) || ocl_resolve(d, dev_ptr, bytes ? bytes : 1, &b) != 0)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "opencl:%u: %s of %zu bytes at %p: not inside a block from alloc", dev,
                        upload ? "upload" : "download", bytes, dev_ptr);
    ocl_copy_pending *p = malloc(sizeof *p);
    if (!p)
        return ocl_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "opencl: out of memory (copy)");
    *p = (ocl_copy_pending){done, token, dev, bytes, upload};
    cl_event ev = NULL;
    pthread_mutex_lock(&d->lock);
    cl_int e = upload ? clEnqueueWriteBuffer(d->queue, b.mem, CL_FALSE, b.off, bytes, src, 0,
                                             NULL, &ev)
                      : clEnqueueReadBuffer(d->queue, b.mem, CL_FALSE, b.off, bytes, dst, 0, NULL,
                                            &ev);
    if (e == CL_SUCCESS)
        clFlush(d->queue);
    pthread_mutex_unlock(&d->lock);
    if (e != CL_SUCCESS) {
        free(p);
        return ocl_fail(err, err_len, ocl_cl_status(e), "opencl:%u: %s (%zu bytes) failed: %s",
                        dev, upload ? "clEnqueueWriteBuffer" : "clEnqueueReadBuffer", bytes,
                        ocl_error_name(e));
    }
    if (event) {
        clRetainEvent(ev);
        event_set(event, dev, ev);
    }
    if (clSetEventCallback(ev, CL_COMPLETE, copy_done, p) != CL_SUCCESS) {
        /* No callback: wait here and report now (done may run before we return: allowed). */
        clWaitForEvents(1, &ev);
        cl_int exec = CL_COMPLETE;
        clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
        copy_done(ev, exec, p);
    }
    return LOOM_OK;
}

loom_status ocl_upload_async(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                             void *event, loom_done_fn done, void *token, char *err,
                             size_t err_len)
{
    return copy_async(ctx, dev, 1, dst, src, bytes, event, done, token, err, err_len);
}

loom_status ocl_download_async(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                               void *event, loom_done_fn done, void *token, char *err,
                               size_t err_len)
{
    return copy_async(ctx, dev, 0, dst, src, bytes, event, done, token, err, err_len);
}

/* ---- pinned host memory: CL_MEM_ALLOC_HOST_PTR buffers, mapped for the host ---------------- */

typedef struct host_map {
    void *ptr;
    cl_mem mem;
    uint32_t dev;
    struct host_map *next;
} host_map;

static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;
static host_map *maps;

void *ocl_alloc_host(void *ctx, uint32_t dev, size_t size)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs || !size)
        return NULL;
    ocl_device *d = &s->devs[dev];
    host_map *m = malloc(sizeof *m);
    if (!m)
        return NULL;
    cl_int e;
    m->mem = clCreateBuffer(d->context, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, size, NULL, &e);
    if (!m->mem) {
        free(m);
        return NULL; /* the host uses ordinary memory */
    }
    pthread_mutex_lock(&d->lock);
    m->ptr = clEnqueueMapBuffer(d->queue, m->mem, CL_TRUE, CL_MAP_READ | CL_MAP_WRITE, 0, size, 0,
                                NULL, NULL, &e);
    pthread_mutex_unlock(&d->lock);
    if (!m->ptr || e != CL_SUCCESS) {
        clReleaseMemObject(m->mem);
        free(m);
        return NULL;
    }
    m->dev = dev;
    pthread_mutex_lock(&maps_lock);
    m->next = maps;
    maps = m;
    pthread_mutex_unlock(&maps_lock);
    return m->ptr;
}

void ocl_free_host(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    ocl_state *s = ctx;
    (void)size;
    if (!ptr)
        return;
    pthread_mutex_lock(&maps_lock);
    host_map **link = &maps, *m = NULL;
    while (*link && (*link)->ptr != ptr)
        link = &(*link)->next;
    if (*link) {
        m = *link;
        *link = m->next;
    }
    pthread_mutex_unlock(&maps_lock);
    if (!m || m->dev != dev || dev >= s->n_devs)
        return; /* not ours: a host bug, but nothing to free safely */
    ocl_device *d = &s->devs[dev];
    pthread_mutex_lock(&d->lock);
    clEnqueueUnmapMemObject(d->queue, m->mem, m->ptr, 0, NULL, NULL);
    clFinish(d->queue);
    pthread_mutex_unlock(&d->lock);
    clReleaseMemObject(m->mem);
    free(m);
}

/* ---- free memory ----------------------------------------------------------------------------- */

#ifndef CL_DEVICE_GLOBAL_FREE_MEMORY_AMD
#define CL_DEVICE_GLOBAL_FREE_MEMORY_AMD 0x4039
#endif

/* Only AMD's platforms tell the free memory (cl_amd_device_attribute_query, in KiB); elsewhere
 * OpenCL has no such query and the host keeps loom_device_info.memory_bytes. */
loom_status ocl_memory_info(void *ctx, uint32_t dev, uint64_t *free_bytes, uint64_t *total_bytes)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs)
        return LOOM_ERR_INVALID_ARGUMENT;
    ocl_device *d = &s->devs[dev];
    char ext[4096];
    ocl_dev_string(d->id, CL_DEVICE_EXTENSIONS, ext, sizeof ext);
    if (!strstr(ext, "cl_amd_device_attribute_query"))
        return LOOM_ERR_UNSUPPORTED;
    size_t kib[2] = {0, 0};
    if (clGetDeviceInfo(d->id, CL_DEVICE_GLOBAL_FREE_MEMORY_AMD, sizeof kib, kib, NULL) !=
        CL_SUCCESS)
        return LOOM_ERR_UNSUPPORTED;
    *free_bytes = (uint64_t)kib[0] * 1024;
    *total_bytes = d->info.memory_bytes;
    return LOOM_OK;
}
