/*
 * The OpenCL backend's table: messages, LOOM_FAULT's failure injection, the enqueue helpers the
 * kernel families use, prepare (constants uploaded, the family's prepare), execute/submit on the
 * device's in-order queue, and loom_opencl_backend_create. Written against loom/backend.h only,
 * as a third-party plugin would be. Devices: ocl_device.c; memory: ocl_memory.c; programs and
 * their binary cache: ocl_program.c, ocl_program_cache.c; operators: ocl_kernels*.c.
 */
#include "ocl_backend.h"
#include "ocl_internal.h"

#include <CL/cl_ext.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

/* ---- messages ------------------------------------------------------------------------------ */

const char *ocl_error_name(cl_int code)
{
    switch (code) {
#define E(x) case x: return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_BUILD_PROGRAM_FAILURE) E(CL_INVALID_VALUE) E(CL_INVALID_DEVICE) E(CL_INVALID_CONTEXT)
    E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_BINARY)
    E(CL_INVALID_BUILD_OPTIONS) E(CL_INVALID_PROGRAM) E(CL_INVALID_PROGRAM_EXECUTABLE)
    E(CL_INVALID_KERNEL_NAME) E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX) E(CL_INVALID_ARG_VALUE)
    E(CL_INVALID_ARG_SIZE) E(CL_INVALID_KERNEL_ARGS) E(CL_INVALID_WORK_DIMENSION)
    E(CL_INVALID_WORK_GROUP_SIZE) E(CL_INVALID_WORK_ITEM_SIZE) E(CL_INVALID_GLOBAL_OFFSET)
    E(CL_INVALID_EVENT_WAIT_LIST) E(CL_INVALID_EVENT) E(CL_INVALID_OPERATION)
    E(CL_INVALID_BUFFER_SIZE) E(CL_INVALID_GLOBAL_WORK_SIZE) E(CL_MISALIGNED_SUB_BUFFER_OFFSET)
    E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST) E(CL_INVALID_PLATFORM)
    E(CL_PLATFORM_NOT_FOUND_KHR)
#undef E
    default: return "unknown OpenCL error";
    }
}

int ocl_reason(char *reason, size_t len, const char *fmt, ...)
{
    if (reason && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, len, fmt, ap);
        va_end(ap);
    }
    return 0;
}

loom_status ocl_fail(char *err, size_t err_len, loom_status st, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return st;
}

void ocl_log(const ocl_state *s, loom_log_level level, const char *fmt, ...)
{
    if (!s->have_host || !s->host.log)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s->host.log(s->host.host_ctx, level, buf);
}

loom_status ocl_run_fail(ocl_run *r, loom_status status, const char *fmt, ...)
{
    if (r->err && r->err_len) {
        char msg[384];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(r->err, r->err_len, "opencl:%u: node '%s' (%s): %s", r->d->index, r->k->name,
                 r->k->op_name, msg);
    }
    return status;
}

loom_status ocl_cl_status(cl_int code)
{
    switch (code) {
    case CL_OUT_OF_HOST_MEMORY:
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
        return LOOM_ERR_OUT_OF_MEMORY;
    case CL_INVALID_VALUE:
    case CL_INVALID_BUFFER_SIZE:
        return LOOM_ERR_INVALID_ARGUMENT;
    default:
        return LOOM_ERR_DEVICE_LOST;
    }
}

/* ---- failure injection ------------------------------------------------------------------- */

/* LOOM_FAULT=opencl:KIND:N[,opencl:KIND:N...]; entries of other backends are ignored. */
static void parse_faults(ocl_state *s)
{
    const char *env = getenv("LOOM_FAULT");
    if (!env || !*env)
        return;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", env);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char kind[32];
        long n;
        if (sscanf(tok, "opencl:%31[a-z]:%ld", kind, &n) != 2 || n < 1) {
            if (!strncmp(tok, "opencl:", 7))
                ocl_log(s, LOOM_LOG_WARNING, "LOOM_FAULT entry '%s' ignored (opencl:enqueue|"
                        "build|alloc:N with N >= 1)", tok);
            continue;
        }
        if (!strcmp(kind, "enqueue"))
            s->faults.enqueue_at = n;
        else if (!strcmp(kind, "build"))
            s->faults.build_at = n;
        else if (!strcmp(kind, "alloc"))
            s->faults.alloc_at = n;
        else
            ocl_log(s, LOOM_LOG_WARNING, "LOOM_FAULT kind '%s' unknown (enqueue, build, alloc)",
                    kind);
    }
}

/* Whether this event of a kind (counter C, fault at AT) is the one to fail. */
int ocl_fault_hits(atomic_long *c, long at)
{
    if (at <= 0)
        return 0;
    return atomic_fetch_add(c, 1) + 1 == at;
}

/* ---- enqueue helpers the kernel families use ------------------------------------------------ */

cl_kernel ocl_get_kernel(ocl_run *r, ocl_kid id)
{
    return r->d->kernels[id];
}

int ocl_arg(ocl_run *r, cl_kernel ker, cl_uint i, size_t size, const void *value)
{
    cl_int e = clSetKernelArg(ker, i, size, value);
    if (e != CL_SUCCESS) {
        ocl_run_fail(r, LOOM_ERR_INTERNAL, "clSetKernelArg(%u) failed: %s", i, ocl_error_name(e));
        return -1;
    }
    return 0;
}

static void take_event(ocl_run *r, cl_event ev)
{
    if (r->last)
        clReleaseEvent(r->last);
    r->last = ev;
}

loom_status ocl_launch(ocl_run *r, cl_kernel ker, size_t global, size_t local)
{
    if (!global)
        return LOOM_OK;
    if (ocl_fault_hits(&r->s->faults.enqueues, r->s->faults.enqueue_at))
        return ocl_run_fail(r, LOOM_ERR_DEVICE_LOST,
                            "clEnqueueNDRangeKernel failed: CL_OUT_OF_RESOURCES (injected)");
    if (local)
        global = (global + local - 1) / local * local;
    cl_event ev = NULL;
    cl_int e = clEnqueueNDRangeKernel(r->d->queue, ker, 1, NULL, &global, local ? &local : NULL,
                                      0, NULL, &ev);
    if (e != CL_SUCCESS)
        return ocl_run_fail(r, ocl_cl_status(e), "clEnqueueNDRangeKernel failed: %s",
                            ocl_error_name(e));
    take_event(r, ev);
    return LOOM_OK;
}

loom_status ocl_copy(ocl_run *r, ocl_buf src, ocl_buf dst, size_t bytes)
{
    if (!bytes)
        return LOOM_OK;
    if (ocl_fault_hits(&r->s->faults.enqueues, r->s->faults.enqueue_at))
        return ocl_run_fail(r, LOOM_ERR_DEVICE_LOST,
                            "clEnqueueCopyBuffer failed: CL_OUT_OF_RESOURCES (injected)");
    cl_event ev = NULL;
    cl_int e = clEnqueueCopyBuffer(r->d->queue, src.mem, dst.mem, src.off, dst.off, bytes, 0,
                                   NULL, &ev);
    if (e != CL_SUCCESS)
        return ocl_run_fail(r, ocl_cl_status(e), "clEnqueueCopyBuffer (%zu bytes) failed: %s",
                            bytes, ocl_error_name(e));
    take_event(r, ev);
    return LOOM_OK;
}

loom_status ocl_blas_done(ocl_run *r, int status, cl_event ev, const char *what)
{
    if (status != 0) {
        if (ev)
            clReleaseEvent(ev);
        return ocl_run_fail(r, status == CL_OUT_OF_RESOURCES || status == -4 ? LOOM_ERR_OUT_OF_MEMORY
                                                                            : LOOM_ERR_DEVICE_LOST,
                            "%s failed: CLBlast status %d%s%s", what, status,
                            status < 0 && status > -70 ? " " : "",
                            status < 0 && status > -70 ? ocl_error_name(status) : "");
    }
    if (ev)
        take_event(r, ev);
    return LOOM_OK;
}

loom_status ocl_fault_check(ocl_run *r, const char *what)
{
    if (ocl_fault_hits(&r->s->faults.enqueues, r->s->faults.enqueue_at))
        return ocl_run_fail(r, LOOM_ERR_DEVICE_LOST, "%s failed: CL_OUT_OF_RESOURCES (injected)",
                            what);
    return LOOM_OK;
}

/* ---- the table ------------------------------------------------------------------------------ */

static uint32_t ocl_device_count(void *ctx)
{
    return ((ocl_state *)ctx)->n_devs;
}

static loom_status ocl_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs || !info)
        return LOOM_ERR_INVALID_ARGUMENT;
    /* Copy only what the host's struct has room for: it may be older than ours (the ABI 0.3
     * fields are written only when its struct_size includes them). */
    size_t n = info->struct_size && info->struct_size < sizeof *info ? info->struct_size
                                                                      : sizeof *info;
    uint32_t abi = info->abi_version, size = info->struct_size;
    memcpy(info, &s->devs[dev].info, n);
    info->abi_version = abi;
    info->struct_size = size;
    return LOOM_OK;
}

static int ocl_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                        size_t reason_len)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs)
        return ocl_reason(reason, reason_len, "no OpenCL device %u", dev);
    return ocl_kernels_supports(s, &s->devs[dev], node, reason, reason_len);
}

void ocl_kernel_free(ocl_kernel *k)
{
    if (!k)
        return;
    if (k->consts)
        for (uint32_t i = 0; i < k->n_in; i++)
            if (k->consts[i])
                clReleaseMemObject(k->consts[i]);
    if (k->meta)
        clReleaseMemObject(k->meta);
    if (k->meta2)
        clReleaseMemObject(k->meta2);
    free(k->consts);
    free(k->in);
    free(k->out);
    if (k->free_params)
        k->free_params(k->params);
    else
        free(k->params);
    free(k);
}

static loom_status ocl_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                               size_t *scratch_bytes, char *err, size_t err_len)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: no device %u", dev);
    ocl_device *d = &s->devs[dev];
    char why[256] = "";
    if (!ocl_kernels_supports(s, d, node, why, sizeof why))
        return ocl_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "opencl:%u: node '%s' (%s): %s", dev,
                        node->name ? node->name : "", node->op_name, why);
    pthread_mutex_lock(&d->lock);
    loom_status st = ocl_ensure_program(s, d, err, err_len);
    pthread_mutex_unlock(&d->lock);
    if (st != LOOM_OK)
        return st;
    ocl_kernel *k = calloc(1, sizeof *k);
    if (!k)
        return ocl_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    k->dev = dev;
    k->op = node->op;
    snprintf(k->name, sizeof k->name, "%s", node->name ? node->name : "");
    snprintf(k->op_name, sizeof k->op_name, "%s", node->op_name ? node->op_name : "?");
    k->n_in = node->n_inputs;
    k->n_out = node->n_outputs;
    k->in = calloc(node->n_inputs + 1, sizeof *k->in);
    k->out = calloc(node->n_outputs + 1, sizeof *k->out);
    k->consts = calloc(node->n_inputs + 1, sizeof *k->consts);
    if (!k->in || !k->out || !k->consts) {
        ocl_kernel_free(k);
        return ocl_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(k->in, node->inputs, node->n_inputs * sizeof *k->in);
    memcpy(k->out, node->outputs, node->n_outputs * sizeof *k->out);
    /* Constants (weights) live in this handle's own buffers, or in the host's device copy of
     * a shared one (retained); at execute the host passes their host pointers, ignored. */
    const void *const *shared =
        LOOM_NODE_DESC_HAS_DEVICE_CONSTANTS(node) ? node->input_device_constants : NULL;
    for (uint32_t i = 0; node->input_constants && i < node->n_inputs; i++) {
        if (!node->input_constants[i] || node->inputs[i].dtype == LOOM_DTYPE_UNDEFINED)
            continue;
        size_t bytes = (size_t)loom_tensor_desc_numel(&node->inputs[i]) *
                       loom_dtype_size(node->inputs[i].dtype);
        if (shared && shared[i] && (k->consts[i] = ocl_buffer_shared(d, shared[i], bytes)))
            continue;
        k->consts[i] = ocl_buffer_from_host(s, d, node->input_constants[i], bytes, err, err_len);
        if (!k->consts[i]) {
            ocl_kernel_free(k);
            return LOOM_ERR_OUT_OF_MEMORY;
        }
    }
    st = ocl_kernels_prepare(s, d, node, k, err, err_len);
    if (st == LOOM_OK && !k->run)
        st = ocl_fail(err, err_len, LOOM_ERR_INTERNAL, "opencl: %s: prepare set no kernel",
                      node->op_name);
    if (st != LOOM_OK) {
        ocl_kernel_free(k);
        return st;
    }
    *kernel = k;
    *scratch_bytes = k->scratch_bytes;
    return LOOM_OK;
}

static void ocl_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    ocl_kernel_free(kernel);
}

/* Resolve ARGS and enqueue K; on success *EV is the event of the last command (a marker when
 * the node enqueued nothing), owned by the caller. */
static loom_status enqueue_node(ocl_state *s, uint32_t dev, ocl_kernel *k,
                                const loom_exec_args *args, char *err, size_t err_len,
                                cl_event *ev)
{
    *ev = NULL;
    if (dev >= s->n_devs || !k || k->dev != dev || !args)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: bad execute arguments");
    ocl_device *d = &s->devs[dev];
    ocl_buf stack_bufs[16], *bufs = stack_bufs;
    size_t nb = (size_t)k->n_in + k->n_out;
    if (nb > 16 && !(bufs = calloc(nb, sizeof *bufs)))
        return ocl_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    ocl_run r = {.s = s, .d = d, .k = k, .in = bufs, .out = bufs + k->n_in, .err = err,
                 .err_len = err_len};
    loom_status st = LOOM_OK;
    for (uint32_t i = 0; i < k->n_in + k->n_out && st == LOOM_OK; i++) {
        int is_in = i < k->n_in;
        const loom_tensor_desc *t = is_in ? &k->in[i] : &k->out[i - k->n_in];
        const void *p = is_in ? (args->inputs ? args->inputs[i] : NULL)
                              : (args->outputs ? args->outputs[i - k->n_in] : NULL);
        bufs[i].mem = NULL;
        bufs[i].off = 0;
        if (is_in && k->consts[i]) {
            bufs[i].mem = k->consts[i];
            continue;
        }
        if (t->dtype == LOOM_DTYPE_UNDEFINED || !p)
            continue;
        size_t bytes = (size_t)loom_tensor_desc_numel(t) * loom_dtype_size(t->dtype);
        if (ocl_resolve(d, p, bytes, &bufs[i]) != 0)
            st = ocl_run_fail(&r, LOOM_ERR_INVALID_ARGUMENT,
                              "%s %u at %p (%zu bytes) is not inside a block from alloc",
                              is_in ? "input" : "output", is_in ? i : i - k->n_in, p, bytes);
        else if (bufs[i].off % loom_dtype_size(t->dtype))
            st = ocl_run_fail(&r, LOOM_ERR_INVALID_ARGUMENT,
                              "%s %u at offset %zu is not aligned to its element size",
                              is_in ? "input" : "output", is_in ? i : i - k->n_in, bufs[i].off);
    }
    if (st == LOOM_OK && k->scratch_bytes) {
        if (!args->scratch || ocl_resolve(d, args->scratch, k->scratch_bytes, &r.scratch) != 0)
            st = ocl_run_fail(&r, LOOM_ERR_INVALID_ARGUMENT,
                              "scratch (%zu bytes) is not inside a block from alloc",
                              k->scratch_bytes);
    }
    if (st == LOOM_OK) {
        pthread_mutex_lock(&d->lock);
        st = k->run(&r, k);
        if (st == LOOM_OK && !r.last) {
            cl_int e = clEnqueueMarkerWithWaitList(d->queue, 0, NULL, &r.last);
            if (e != CL_SUCCESS)
                st = ocl_run_fail(&r, ocl_cl_status(e), "clEnqueueMarkerWithWaitList failed: %s",
                                  ocl_error_name(e));
        }
        if (st != LOOM_OK) {
            /* Let what was enqueued before the failure finish: nothing of this node stays in
             * flight once we return. */
            clFinish(d->queue);
        } else {
            clFlush(d->queue);
        }
        pthread_mutex_unlock(&d->lock);
    }
    if (bufs != stack_bufs)
        free(bufs);
    if (st != LOOM_OK) {
        if (r.last)
            clReleaseEvent(r.last);
        return st;
    }
    *ev = r.last;
    return LOOM_OK;
}

static loom_status event_status(ocl_state *s, uint32_t dev, ocl_kernel *k, cl_int exec,
                                char *err, size_t err_len)
{
    (void)s;
    if (exec >= 0)
        return LOOM_OK;
    return ocl_fail(err, err_len, ocl_cl_status(exec), "opencl:%u: node '%s' (%s): the device "
                    "failed running it: %s", dev, k->name, k->op_name, ocl_error_name(exec));
}

static loom_status ocl_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                               char *err, size_t err_len)
{
    ocl_state *s = ctx;
    cl_event ev;
    loom_status st = enqueue_node(s, dev, kernel, args, err, err_len, &ev);
    if (st != LOOM_OK)
        return st;
    cl_int e = clWaitForEvents(1, &ev);
    cl_int exec = CL_COMPLETE;
    if (clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL) !=
        CL_SUCCESS)
        exec = e != CL_SUCCESS ? e : CL_COMPLETE;
    clReleaseEvent(ev);
    return event_status(s, dev, kernel, exec, err, err_len);
}

typedef struct ocl_pending {
    ocl_state *s;
    uint32_t dev;
    ocl_kernel *k;
    void (*done)(void *token, loom_status status, const char *message);
    void *token;
} ocl_pending;

static void CL_CALLBACK on_complete(cl_event ev, cl_int exec, void *user)
{
    ocl_pending *p = user;
    char msg[512] = "";
    loom_status st = event_status(p->s, p->dev, p->k, exec, msg, sizeof msg);
    void (*done)(void *, loom_status, const char *) = p->done;
    void *token = p->token;
    free(p);
    clReleaseEvent(ev);
    done(token, st, st == LOOM_OK ? NULL : msg);
}

static loom_status ocl_submit(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              void (*done)(void *token, loom_status status, const char *message),
                              void *token)
{
    ocl_state *s = ctx;
    if (!done)
        return LOOM_ERR_INVALID_ARGUMENT;
    ocl_pending *p = malloc(sizeof *p);
    if (!p)
        return LOOM_ERR_OUT_OF_MEMORY;
    *p = (ocl_pending){s, dev, kernel, done, token};
    char err[512] = "";
    cl_event ev;
    loom_status st = enqueue_node(s, dev, kernel, args, err, sizeof err, &ev);
    if (st != LOOM_OK) {
        /* Nothing is left in flight (enqueue_node waited): report through done() so that the
         * message reaches the host, which submit's status alone could not carry. */
        free(p);
        done(token, st, err);
        return LOOM_OK;
    }
    cl_int e = clSetEventCallback(ev, CL_COMPLETE, on_complete, p);
    if (e != CL_SUCCESS) {
        /* No callback: wait here and report synchronously. */
        clWaitForEvents(1, &ev);
        cl_int exec = CL_COMPLETE;
        clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
        clReleaseEvent(ev);
        free(p);
        st = event_status(s, dev, kernel, exec, err, sizeof err);
        done(token, st, st == LOOM_OK ? NULL : err);
    }
    return LOOM_OK;
}

static double ocl_estimate(void *ctx, uint32_t dev, const loom_node_desc *node)
{
    (void)ctx;
    (void)dev;
    (void)node;
    return -1.0;
}

static void ocl_shutdown(void *ctx)
{
    ocl_state *s = ctx;
    for (uint32_t i = 0; i < s->n_devs; i++)
        ocl_device_close(&s->devs[i]);
    free(s->devs);
    free(s);
}

/* Address space an OpenCL driver needs to start: PoCL, for one, aborts the whole process when
 * it cannot start its threads (measured: 300 MB under `ulimit -v` aborts, 400 MB runs). */
#define OCL_ADDRESS_ROOM ((size_t)256 << 20)

/* Whether a finite address-space limit (RLIMIT_AS, `ulimit -v`) leaves too little room to start
 * a driver, probed by reserving that room (never touched, given back at once). No limit, no
 * probe. */
static int address_space_short(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 0;
    void *p = mmap(NULL, OCL_ADDRESS_ROOM, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return 1;
    munmap(p, OCL_ADDRESS_ROOM);
    return 0;
}

/* ---- options (ABI 1.0) --------------------------------------------------------------------- */

static const loom_backend_option ocl_options[] = {
    {"layout", "kernel layouts: cpu (for CPU devices), gpu, or auto (by device kind); "
               "fallback: $LOOM_OPENCL_LAYOUT", "auto"},
};

/* Apply the layout LAYOUT ("cpu", "gpu", "auto" or NULL/"": by kind) to every device. */
static int ocl_apply_layout(ocl_state *s, const char *layout)
{
    int mode = !layout || !*layout || !strcmp(layout, "auto") ? -1
               : !strcmp(layout, "gpu")                      ? 0
               : !strcmp(layout, "cpu")                      ? 1
                                                              : -2;
    if (mode == -2)
        return 0;
    for (uint32_t i = 0; i < s->n_devs; i++)
        s->devs[i].cpu_layout = mode >= 0 ? mode : s->devs[i].info.kind == LOOM_DEVICE_CPU;
    return 1;
}

/* Called by the host before device_count, never concurrently with anything else. */
static loom_status ocl_set_option(void *ctx, const char *key, const char *value, char *err,
                                  size_t err_len)
{
    ocl_state *s = ctx;
    if (key && value && !strcmp(key, "layout")) {
        if (ocl_apply_layout(s, value))
            return LOOM_OK;
        snprintf(err, err_len, "opencl: layout '%s' is not one of cpu, gpu, auto", value);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    snprintf(err, err_len, "opencl: unknown option '%s' (layout)", key ? key : "(null)");
    return LOOM_ERR_INVALID_ARGUMENT;
}

const loom_backend *loom_opencl_backend_create(const loom_host *host, char *err, size_t err_len)
{
    if (err && err_len)
        err[0] = '\0';
    const char *env = getenv("LOOM_OPENCL");
    if (env && !strcmp(env, "0"))
        return NULL;
    if (address_space_short()) {
        ocl_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "the address-space limit (ulimit -v) leaves "
                 "less than %zu MiB for the OpenCL driver", OCL_ADDRESS_ROOM >> 20);
        return NULL;
    }
    ocl_state *s = calloc(1, sizeof *s);
    if (!s) {
        ocl_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory starting the OpenCL backend");
        return NULL;
    }
    if (host && host->struct_size >= offsetof(loom_host, log) + sizeof host->log) {
        s->host = *host;
        s->have_host = 1;
    }
    parse_faults(s);
    ocl_discover(s);
    if (s->n_devs == 0) {
        free(s->devs);
        free(s);
        return NULL;
    }
    ocl_cache_dir_init(s);
    /* $LOOM_OPENCL_LAYOUT (an unknown value: by kind), until the layout option says otherwise */
    if (!ocl_apply_layout(s, getenv("LOOM_OPENCL_LAYOUT")))
        ocl_apply_layout(s, NULL);
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "opencl";
    t->ctx = s;
    t->device_count = ocl_device_count;
    t->device_info = ocl_device_info;
    t->supports = ocl_supports;
    t->prepare = ocl_prepare;
    t->execute = ocl_execute;
    t->release_kernel = ocl_release_kernel;
    t->alloc = ocl_alloc;
    t->free = ocl_free;
    t->shutdown = ocl_shutdown;
    t->estimate = ocl_estimate;
    t->submit = ocl_submit;
    t->upload = ocl_upload;
    t->download = ocl_download;
    t->event_create = ocl_event_create;
    t->event_record = ocl_event_record;
    t->event_wait = ocl_event_wait;
    t->event_destroy = ocl_event_destroy;
    t->upload_async = ocl_upload_async;
    t->download_async = ocl_download_async;
    t->alloc_host = ocl_alloc_host;
    t->free_host = ocl_free_host;
    t->memory_info = ocl_memory_info;
    t->claim = ocl_claim;
    t->prepare_subgraph = ocl_prepare_subgraph;
    t->options = ocl_options;
    t->n_options = sizeof ocl_options / sizeof *ocl_options;
    t->set_option = ocl_set_option;
    return t;
}

