/*
 * The runtime: starts the built-in backends and lists their devices; plugins (loader.c) join
 * through the same loom_backend table the built-in CPU backend exposes. The runtime is counted
 * by its plans: loom_runtime_destroy drops the caller's reference, and the backends stop when the
 * last plan made from it is destroyed.
 */
#include "sched_internal.h"

#include "backends/cpu/cpu_backend.h"
#include "backends/opencl/ocl_backend.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void runtime_message(loom_runtime *rt, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&rt->msg_lock);
    if (rt->n_messages < LOOM_MAX_MESSAGES) {
        char *m = strdup(buf);
        if (m)
            rt->messages[rt->n_messages++] = m;
    }
    pthread_mutex_unlock(&rt->msg_lock);
}

loom_status runtime_backend_status(const loom_backend *be, int status, char *msg, size_t msg_len)
{
    if (status >= LOOM_OK && status <= LOOM_ERR_INTERNAL)
        return (loom_status)status;
    if (msg && msg_len) {
        char kept[512];
        snprintf(kept, sizeof kept, "%s", msg);
        snprintf(msg, msg_len, "backend '%s' returned status %d, not a loom_status%s%s",
                 be && be->name ? be->name : "?", status, kept[0] ? ": " : "", kept);
    }
    return LOOM_ERR_DEVICE_LOST;
}

/* loom_host.log: what plugins say goes into the runtime's messages. */
static void host_log(void *host_ctx, loom_log_level level, const char *message)
{
    loom_runtime *rt = host_ctx;
    static const char *names[] = {"", "error", "warning", "info", "debug"};
    if (level == LOOM_LOG_DEBUG)
        return;
    runtime_message(rt, "%s%s%s%s: %s", rt->loading ? "plugin " : "", rt->loading ? rt->loading : "",
               rt->loading ? ": " : "", (unsigned)level < 5 ? names[level] : "log",
               message ? message : "");
}

size_t loom_runtime_message_count(const loom_runtime *rt)
{
    return rt ? rt->n_messages : 0;
}

const char *loom_runtime_message(const loom_runtime *rt, size_t i)
{
    return rt && i < rt->n_messages ? rt->messages[i] : NULL;
}

static void shutdown_backend(const loom_backend *be, void *handle)
{
    if (be && be->shutdown)
        be->shutdown(be->ctx);
    if (handle)
        dlclose(handle);
}

loom_status runtime_add_backend(loom_runtime *rt, const loom_backend *be, void *handle)
{
    loom_status st = LOOM_OK;
    if ((be->abi_version >> 16) != LOOM_ABI_VERSION_MAJOR)
        st = loom_set_error(LOOM_ERR_UNSUPPORTED,
                            "backend '%s' was built for ABI %u.%u; this Loom speaks %u.x",
                            be->name, be->abi_version >> 16, be->abi_version & 0xffff,
                            LOOM_ABI_VERSION_MAJOR);
    else if (rt->n_backends >= LOOM_MAX_BACKENDS)
        st = loom_set_error(LOOM_ERR_UNSUPPORTED, "too many backends (at most %d)",
                            LOOM_MAX_BACKENDS);
    uint32_t n = st == LOOM_OK ? be->device_count(be->ctx) : 0;
    runtime_device *d = st == LOOM_OK ? realloc(rt->devices, (rt->n_devices + n + 1) * sizeof *d)
                                 : NULL;
    if (st == LOOM_OK && !d)
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory listing devices");
    if (st != LOOM_OK) {
        shutdown_backend(be, handle);
        return st;
    }
    rt->devices = d;
    rt->handles[rt->n_backends] = handle;
    rt->backends[rt->n_backends++] = be;
    for (uint32_t i = 0; i < n; i++) {
        runtime_device *dev = &rt->devices[rt->n_devices];
        memset(dev, 0, sizeof *dev);
        snprintf(dev->id, sizeof dev->id, "%s:%u", be->name, i);
        dev->backend = be;
        dev->index = i;
        dev->info.abi_version = LOOM_ABI_VERSION;
        dev->info.struct_size = sizeof dev->info;
        if (be->device_info(be->ctx, i, &dev->info) != LOOM_OK) {
            runtime_message(rt, "device %s did not describe itself; skipped", dev->id);
            continue;
        }
        rt->n_devices++;
    }
    return LOOM_OK;
}

/* The CPU thread count OPTIONS asks for, else LOOM_CPU_THREADS, else 0 (one per core), refused
 * beyond LOOM_MAX_CPU_THREADS: each thread costs a stack, and a typo must not start 100000. */
static loom_status pick_cpu_threads(const loom_runtime_options *options, unsigned *threads)
{
    *threads = 0;
    if (options && options->cpu_threads) {
        if (options->cpu_threads > LOOM_MAX_CPU_THREADS)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "runtime options: cpu_threads %u exceeds the limit of %d",
                                  options->cpu_threads, LOOM_MAX_CPU_THREADS);
        *threads = options->cpu_threads;
        return LOOM_OK;
    }
    const char *env = getenv("LOOM_CPU_THREADS");
    if (!env || !*env)
        return LOOM_OK;
    char *end;
    errno = 0;
    long v = strtol(env, &end, 10);
    if (errno || *end || v < 1 || v > LOOM_MAX_CPU_THREADS)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "LOOM_CPU_THREADS='%s' is not a thread count (1 to %d)", env,
                              LOOM_MAX_CPU_THREADS);
    *threads = (unsigned)v;
    return LOOM_OK;
}

/* Arrays of OPTIONS that the loader reads: a NULL array with a count, or a NULL entry, is the
 * caller's mistake, said before anything starts. */
static loom_status check_options(const loom_runtime_options *o)
{
    if (o->struct_size < offsetof(loom_runtime_options, no_default_plugins) + sizeof(int))
        return LOOM_OK; /* an older struct: the plugin fields are not read */
    if (o->n_plugin_paths && !o->plugin_paths)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "runtime options: plugin_paths is NULL but n_plugin_paths is %zu",
                              o->n_plugin_paths);
    for (size_t i = 0; i < o->n_plugin_paths; i++)
        if (!o->plugin_paths[i])
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "runtime options: plugin_paths[%zu] is NULL", i);
    return LOOM_OK;
}

loom_status loom_runtime_create(const loom_runtime_options *options, loom_runtime **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "runtime: out is NULL");
    *out = NULL;
    loom_clear_error();
    if (options) {
        if (options->struct_size < sizeof(uint32_t) * 2)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "runtime options: struct_size %u is too small (set it to "
                                  "sizeof(loom_runtime_options))", options->struct_size);
        loom_status cst = check_options(options);
        if (cst != LOOM_OK)
            return cst;
    }
    unsigned threads;
    loom_status tst = pick_cpu_threads(options, &threads);
    if (tst != LOOM_OK)
        return tst;
    loom_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory creating the runtime");
    atomic_init(&rt->refs, 1);
    pthread_mutex_init(&rt->msg_lock, NULL);
    rt->host.abi_version = LOOM_ABI_VERSION;
    rt->host.struct_size = sizeof rt->host;
    rt->host.host_ctx = rt;
    rt->host.log = host_log;
    char err[256] = "";
    const loom_backend *cpu = loom_cpu_backend_create(threads, err, sizeof err);
    if (!cpu) {
        pthread_mutex_destroy(&rt->msg_lock);
        free(rt);
        return loom_set_error(LOOM_ERR_DEVICE_LOST, "CPU backend: %s", err);
    }
    loom_status st = runtime_add_backend(rt, cpu, NULL);
    if (st != LOOM_OK) {
        loom_runtime_destroy(rt);
        return st;
    }
    /* The OpenCL backend: none when there is no OpenCL device or LOOM_OPENCL=0, not an error. */
    const loom_backend *ocl = loom_opencl_backend_create(&rt->host, err, sizeof err);
    if (ocl)
        runtime_add_backend(rt, ocl, NULL);
    else if (err[0])
        runtime_message(rt, "opencl backend not started: %s", err);
    runtime_load_plugins(rt, options);
    if (rt->n_devices == 0) {
        loom_runtime_destroy(rt);
        return loom_set_error(LOOM_ERR_DEVICE_LOST, "no device could start");
    }
    /* Starting backends may have recorded messages of the ones that did not start; those are in
     * loom_runtime_message. The call succeeded. */
    loom_clear_error();
    *out = rt;
    return LOOM_OK;
}

static void runtime_free(loom_runtime *rt)
{
    /* Plugins last in, first out; a plugin's code is unmapped only after its shutdown. */
    for (size_t i = rt->n_backends; i-- > 0;)
        shutdown_backend(rt->backends[i], rt->handles[i]);
    for (size_t i = 0; i < rt->n_messages; i++)
        free(rt->messages[i]);
    pthread_mutex_destroy(&rt->msg_lock);
    free(rt->devices);
    free(rt);
}

loom_runtime *runtime_retain(loom_runtime *rt)
{
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
    return rt;
}

void runtime_release(loom_runtime *rt)
{
    /* acq_rel: whatever a plan's thread did with the devices happens before they are freed. */
    if (rt && atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) == 1)
        runtime_free(rt);
}

void loom_runtime_destroy(loom_runtime *rt)
{
    runtime_release(rt);
}

size_t loom_runtime_device_count(const loom_runtime *rt)
{
    return rt ? rt->n_devices : 0;
}

loom_status loom_runtime_device(const loom_runtime *rt, size_t i, char *id, size_t id_len,
                                loom_device_info *info)
{
    if (!rt)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "runtime_device: runtime is NULL");
    if (i >= rt->n_devices)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "device %zu does not exist (%zu devices)",
                              i, rt->n_devices);
    loom_clear_error();
    if (id && id_len)
        snprintf(id, id_len, "%s", rt->devices[i].id);
    if (info) {
        size_t n = info->struct_size && info->struct_size < sizeof *info ? info->struct_size
                                                                          : sizeof *info;
        memcpy(info, &rt->devices[i].info, n);
    }
    return LOOM_OK;
}
