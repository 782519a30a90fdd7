/*
 * The runtime: starts the built-in backends and lists their devices; plugins (loader.c) join
 * through the same loom_backend table the built-in CPU backend exposes. The runtime is counted
 * by its plans: loom_runtime_destroy drops the caller's reference, and the backends stop when the
 * last plan made from it is destroyed.
 */
#include "sched_internal.h"
#include "cost/cost.h"

#include "backends/cpu/cpu_backend.h"
#include "backends/opencl/ocl_backend.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the messages: a bounded ring ---- */

#define RING_MAX LOOM_RUNTIME_MESSAGES_MAX

/* Drop the oldest lines until the ring has room for one more, counting the "N messages
 * dropped" line (which takes a slot of its own once anything was lost). msg_lock held. */
static void ring_make_room(loom_runtime *rt)
{
    for (;;) {
        size_t cap = rt->msg_dropped ? RING_MAX - 2 : RING_MAX - 1;
        if (rt->msg_held <= cap)
            return;
        free(rt->msg_ring[rt->msg_first]);
        rt->msg_ring[rt->msg_first] = NULL;
        rt->msg_first = (rt->msg_first + 1) % RING_MAX;
        rt->msg_held--;
        rt->msg_dropped++;
    }
}

/* Append M (owned; NULL when a copy failed: counted as lost). msg_lock held. */
static void ring_push(loom_runtime *rt, char *m)
{
    if (m) {
        ring_make_room(rt);
        rt->msg_ring[(rt->msg_first + rt->msg_held) % RING_MAX] = m;
        rt->msg_held++;
    } else {
        rt->msg_dropped++;
        ring_make_room(rt); /* the dropped line may need a slot now */
        if (rt->msg_held > RING_MAX - 1) {
            free(rt->msg_ring[rt->msg_first]);
            rt->msg_ring[rt->msg_first] = NULL;
            rt->msg_first = (rt->msg_first + 1) % RING_MAX;
            rt->msg_held--;
            rt->msg_dropped++;
        }
    }
    if (rt->msg_dropped)
        snprintf(rt->msg_dropped_line, sizeof rt->msg_dropped_line,
                 "%zu message%s dropped (only the newest %d are kept)", rt->msg_dropped,
                 rt->msg_dropped == 1 ? "" : "s", RING_MAX - 1);
}

void runtime_message(loom_runtime *rt, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *m = strdup(buf);
    pthread_mutex_lock(&rt->msg_lock);
    ring_push(rt, m);
    pthread_mutex_unlock(&rt->msg_lock);
}

size_t loom_runtime_message_count(const loom_runtime *rt)
{
    if (!rt)
        return 0;
    loom_runtime *w = (loom_runtime *)rt; /* the lock only */
    pthread_mutex_lock(&w->msg_lock);
    size_t n = rt->msg_held + (rt->msg_dropped ? 1 : 0);
    pthread_mutex_unlock(&w->msg_lock);
    return n;
}

const char *loom_runtime_message(const loom_runtime *rt, size_t i)
{
    if (!rt)
        return NULL;
    loom_runtime *w = (loom_runtime *)rt;
    const char *m = NULL;
    pthread_mutex_lock(&w->msg_lock);
    if (rt->msg_dropped && i == 0)
        m = rt->msg_dropped_line;
    else {
        if (rt->msg_dropped)
            i--;
        if (i < rt->msg_held)
            m = rt->msg_ring[(rt->msg_first + i) % RING_MAX];
    }
    pthread_mutex_unlock(&w->msg_lock);
    return m;
}

size_t loom_runtime_messages_drain(loom_runtime *rt, void (*fn)(void *user, const char *message),
                                   void *user)
{
    if (!rt)
        return 0;
    /* Taken out under the lock, handed to FN outside it: backends may keep logging meanwhile
     * (into the emptied ring), and a slow FN never blocks them. */
    char *lines[RING_MAX];
    char dropped[sizeof rt->msg_dropped_line] = "";
    pthread_mutex_lock(&rt->msg_lock);
    size_t n = rt->msg_held;
    for (size_t k = 0; k < n; k++) {
        size_t slot = (rt->msg_first + k) % RING_MAX;
        lines[k] = rt->msg_ring[slot];
        rt->msg_ring[slot] = NULL;
    }
    if (rt->msg_dropped)
        memcpy(dropped, rt->msg_dropped_line, sizeof dropped);
    rt->msg_first = rt->msg_held = rt->msg_dropped = 0;
    pthread_mutex_unlock(&rt->msg_lock);
    size_t given = 0;
    if (dropped[0]) {
        if (fn)
            fn(user, dropped);
        given++;
    }
    for (size_t k = 0; k < n; k++) {
        if (fn)
            fn(user, lines[k]);
        free(lines[k]);
        given++;
    }
    return given;
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

/* ---- each backend's loom_host ---- */

/* loom_host.log: what a backend says goes into the runtime's messages, prefixed with the
 * plugin's file while it is being queried and with its backend name afterwards. A message that
 * already starts with "NAME: " does not get the name twice. */
static void host_log(void *host_ctx, loom_log_level level, const char *message)
{
    runtime_host *h = host_ctx;
    static const char *names[] = {"", "error", "warning", "info", "debug"};
    if (!h || level == LOOM_LOG_DEBUG)
        return;
    const char *lv = level >= LOOM_LOG_ERROR && level <= LOOM_LOG_INFO ? names[level] : "log";
    const char *msg = message ? message : "";
    char buf[1024];
    loom_runtime *rt = h->rt;
    pthread_mutex_lock(&rt->msg_lock);
    size_t nl = strlen(h->name);
    if (nl) {
        if (!strncmp(msg, h->name, nl) && msg[nl] == ':' && msg[nl + 1] == ' ')
            msg += nl + 2;
        snprintf(buf, sizeof buf, "%s: %s: %s", h->name, lv, msg);
    } else {
        snprintf(buf, sizeof buf, "plugin %s: %s: %s", h->file ? h->file : "(built in)", lv, msg);
    }
    char *line = strdup(buf);
    if (h->holding && line) {
        if (h->n_held == h->cap_held) {
            size_t c = h->cap_held ? h->cap_held * 2 : 8;
            char **p = realloc(h->held, c * sizeof *p);
            if (p) {
                h->held = p;
                h->cap_held = c;
            }
        }
        if (h->n_held < h->cap_held)
            h->held[h->n_held++] = line;
        else
            free(line);
    } else {
        ring_push(rt, line);
    }
    pthread_mutex_unlock(&rt->msg_lock);
}

runtime_host *runtime_host_create(loom_runtime *rt, const char *file, const char *name)
{
    runtime_host *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->host.abi_version = LOOM_ABI_VERSION;
    h->host.struct_size = sizeof h->host;
    h->host.host_ctx = h;
    h->host.log = host_log;
    h->rt = rt;
    if (name)
        snprintf(h->name, sizeof h->name, "%s", name);
    if (file) {
        h->file = strdup(file);
        h->real = realpath(file, NULL);
        if (!h->file) {
            free(h->real);
            free(h);
            return NULL;
        }
    }
    return h;
}

void runtime_host_free(runtime_host *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_held; i++)
        free(h->held[i]);
    free(h->held);
    free(h->file);
    free(h->real);
    free(h);
}

size_t runtime_host_hold(runtime_host *h)
{
    pthread_mutex_lock(&h->rt->msg_lock);
    h->holding = 1;
    size_t n = h->n_held;
    pthread_mutex_unlock(&h->rt->msg_lock);
    return n;
}

void runtime_host_release(runtime_host *h, size_t from, size_t to, int skip_repeats)
{
    loom_runtime *rt = h->rt;
    pthread_mutex_lock(&rt->msg_lock);
    h->holding = 0;
    /* Decide every line first: a line moved into the ring may be freed by a later push. */
    for (size_t i = 0; i < h->n_held; i++) {
        int keep = i >= from && i < to;
        for (size_t j = from; keep && skip_repeats && j < i; j++)
            keep = h->held[j] == NULL || strcmp(h->held[i], h->held[j]) != 0;
        if (!keep) {
            free(h->held[i]);
            h->held[i] = NULL;
        }
    }
    for (size_t i = 0; i < h->n_held; i++)
        if (h->held[i])
            ring_push(rt, h->held[i]);
    free(h->held);
    h->held = NULL;
    h->n_held = h->cap_held = 0;
    pthread_mutex_unlock(&rt->msg_lock);
}

void runtime_host_set_name(runtime_host *h, const char *name)
{
    pthread_mutex_lock(&h->rt->msg_lock);
    snprintf(h->name, sizeof h->name, "%s", name ? name : "");
    pthread_mutex_unlock(&h->rt->msg_lock);
}

const char *runtime_plugin_backend(const loom_runtime *rt, const char *path)
{
    if (!rt || !path)
        return NULL;
    char *real = realpath(path, NULL);
    const char *found = NULL;
    for (size_t i = 0; i < rt->n_backends && !found; i++) {
        const runtime_host *h = rt->hosts[i];
        if (h && h->file && (!strcmp(h->file, path) || (real && h->real && !strcmp(h->real, real))))
            found = rt->backends[i]->name;
    }
    free(real);
    return found;
}

static void shutdown_backend(const loom_backend *be, void *handle)
{
    if (be && be->shutdown)
        be->shutdown(be->ctx);
    if (handle)
        dlclose(handle);
}

/* Why device DEV (its facts in INFO) of BE cannot be used, into WHY; 0 when it can. A device
 * whose memory the host cannot address is reached only through alloc, upload and download:
 * without them every plan that used it would fail. */
static int device_unusable(const loom_backend *be, const loom_device_info *info, char *why,
                           size_t why_len)
{
    if (info->host_visible)
        return 0;
    const char *missing[3];
    size_t n = 0;
    if (!be->alloc)
        missing[n++] = "alloc";
    if (!RUNTIME_SLOT(be, upload))
        missing[n++] = "upload";
    if (!RUNTIME_SLOT(be, download))
        missing[n++] = "download";
    if (!n)
        return 0;
    snprintf(why, why_len,
             "its memory is not host-visible (loom_device_info.host_visible = 0) and backend "
             "'%s' has no %s%s%s%s%s slot%s%s",
             be->name, missing[0], n == 3 ? ", " : n == 2 ? " or " : "", n > 1 ? missing[1] : "",
             n == 3 ? " or " : "", n == 3 ? missing[2] : "", n > 1 ? "s" : "",
             (be->abi_version >> 16) == 0 && (be->abi_version & 0xffffu) < 3
                 ? " (upload and download came with backend ABI 0.3)"
                 : "");
    return 1;
}

loom_status runtime_add_backend(loom_runtime *rt, const loom_backend *be, void *handle,
                                runtime_host *host)
{
    loom_status st = LOOM_OK;
    unsigned major = be->abi_version >> 16, minor = be->abi_version & 0xffffu;
    /* 1.x tables as they are, 0.1-0.4 tables through the adapter (the loader's copy). */
    if (major != LOOM_ABI_VERSION_MAJOR && !(major == 0 && minor >= 1 && minor <= 4))
        st = loom_set_error(LOOM_ERR_UNSUPPORTED,
                            "backend '%s' was built for backend ABI %u.%u; this Loom speaks %u.%u "
                            "(1.x, and 0.1-0.4 through the adapter)",
                            be->name, major, minor, LOOM_ABI_VERSION_MAJOR,
                            LOOM_ABI_VERSION_MINOR);
    else if (rt->n_backends >= LOOM_MAX_BACKENDS)
        st = loom_set_error(LOOM_ERR_UNSUPPORTED, "too many backends (at most %d)",
                            LOOM_MAX_BACKENDS);
    /* The user's options for it, before its devices are listed (backend ABI 1.0). */
    if (st == LOOM_OK)
        st = backend_options_apply(rt, be);
    uint32_t n = st == LOOM_OK ? be->device_count(be->ctx) : 0;
    runtime_device *d = st == LOOM_OK ? realloc(rt->devices, (rt->n_devices + n + 1) * sizeof *d)
                                 : NULL;
    if (st == LOOM_OK && !d)
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory listing devices");
    if (st != LOOM_OK) {
        shutdown_backend(be, handle);
        runtime_host_free(host);
        return st;
    }
    rt->devices = d;
    size_t first = rt->n_devices;
    for (uint32_t i = 0; i < n; i++) {
        runtime_device *dev = &rt->devices[rt->n_devices];
        memset(dev, 0, sizeof *dev);
        snprintf(dev->id, sizeof dev->id, "%s:%u", be->name, i);
        dev->backend = be;
        dev->index = i;
        dev->info.abi_version = LOOM_ABI_VERSION;
        dev->info.struct_size = sizeof dev->info;
        char why[512] = "";
        loom_status ds =
            runtime_backend_status(be, be->device_info(be->ctx, i, &dev->info), why, sizeof why);
        if (ds != LOOM_OK) {
            runtime_message(rt, "device %s did not describe itself (%s); skipped", dev->id,
                            why[0] ? why : loom_status_name(ds));
            continue;
        }
        if (device_unusable(be, &dev->info, why, sizeof why)) {
            runtime_message(rt, "device %s refused: %s", dev->id, why);
            continue;
        }
        rt->n_devices++;
    }
    if (n && rt->n_devices == first) {
        /* Not one device it offers can be used: the backend goes (its messages said why). */
        st = loom_set_error(LOOM_ERR_UNSUPPORTED, "backend '%s': none of its %u device%s can be "
                            "used (the messages above say why)", be->name, n, n == 1 ? "" : "s");
        shutdown_backend(be, handle);
        runtime_host_free(host);
        return st;
    }
    rt->hosts[rt->n_backends] = host;
    rt->handles[rt->n_backends] = handle;
    rt->backends[rt->n_backends++] = be;
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
    backend_option_set *bopts = NULL;
    tst = backend_options_parse(options, &bopts);
    if (tst != LOOM_OK)
        return tst;
    loom_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        backend_options_free(bopts);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory creating the runtime");
    }
    rt->options = bopts;
    atomic_init(&rt->refs, 1);
    pthread_mutex_init(&rt->msg_lock, NULL);
    pthread_mutex_init(&rt->cost_lock, NULL);
    char err[256] = "";
    const loom_backend *cpu = loom_cpu_backend_create(threads, err, sizeof err);
    if (!cpu) {
        pthread_mutex_destroy(&rt->cost_lock);
        pthread_mutex_destroy(&rt->msg_lock);
        backend_options_free(rt->options);
        free(rt);
        return loom_set_error(LOOM_ERR_DEVICE_LOST, "CPU backend: %s", err);
    }
    loom_status st = runtime_add_backend(rt, cpu, NULL, NULL);
    if (st != LOOM_OK) {
        loom_runtime_destroy(rt);
        return st;
    }
    /* The OpenCL backend: none when there is no OpenCL device or LOOM_OPENCL=0, not an error. */
    /* It logs through a loom_host of its own, so that its lines say "opencl: ...". */
    runtime_host *ocl_host = runtime_host_create(rt, NULL, "opencl");
    const loom_backend *ocl =
        ocl_host ? loom_opencl_backend_create(&ocl_host->host, err, sizeof err) : NULL;
    if (ocl) {
        if (runtime_add_backend(rt, ocl, NULL, ocl_host) != LOOM_OK)
            runtime_message(rt, "opencl backend not used: %s", loom_last_error());
    } else {
        runtime_host_free(ocl_host);
        if (err[0])
            runtime_message(rt, "opencl backend not started: %s", err);
    }
    runtime_load_plugins(rt, options);
    /* Options for backends that never came, or that a backend refused: the caller's mistake. */
    st = backend_options_check(rt);
    if (st != LOOM_OK) {
        char why[1280];
        snprintf(why, sizeof why, "%s", loom_last_error());
        loom_runtime_destroy(rt);
        return loom_set_error(st, "%s", why);
    }
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
    for (size_t i = rt->n_backends; i-- > 0;) {
        shutdown_backend(rt->backends[i], rt->handles[i]);
        runtime_host_free(rt->hosts[i]); /* after: its table may be the adapter's copy here */
    }
    for (size_t i = 0; i < rt->msg_held; i++)
        free(rt->msg_ring[(rt->msg_first + i) % RING_MAX]);
    pthread_mutex_destroy(&rt->msg_lock);
    cost_history_cache_free(rt);
    pthread_mutex_destroy(&rt->cost_lock);
    backend_options_free(rt->options);
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
