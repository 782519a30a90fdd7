/*
 * npu-sim: a simulated NPU-class accelerator, loaded as a plugin (loom-npu-sim.so). It computes
 * for real on the host, with the arithmetic of an int8/fp16 accelerator (npu_kernels.c), and
 * declares the performance of a device described by a profile, so that placement can be studied
 * for hardware one does not have. Written against <loom/backend.h> only.
 *
 * Options (backend ABI 1.0, `--backend-option npu-sim:KEY=VALUE`, loom_runtime_options.
 * backend_options): profile=FILE and devices=N. The environment variables $LOOM_NPU_SIM_PROFILE
 * and $LOOM_NPU_SIM_DEVICES, the way to configure it before 1.0, are still read at start as a
 * fallback; an option given overrides them.
 *
 * The profile: JSON from the file named by the profile option (else $LOOM_NPU_SIM_PROFILE),
 * else the built-in default, an edge NPU of the 10 TOPS class:
 *   {"name": "edge-npu-10tops", "tops_int8": 10, "tflops_fp16": 5, "bandwidth_gbs": 40,
 *    "dispatch_latency_us": 20, "memory_mb": 1024, "power_w": 5}
 * Every key is optional (missing ones keep the default); an unknown key, a number that is not
 * positive or a file that cannot be read or parsed makes the plugin refuse to start, after
 * saying why through the host's log (an option: refuses the option, with the reason). The
 * devices option (else $LOOM_NPU_SIM_DEVICES; 1 to 16, default 1) sets how many identical
 * devices it reports.
 *
 * Device facts: kind NPU; memory_bytes = memory_mb MiB; peak_flops_f32 is the fp16 figure (the
 * device has no f32 datapath: f32 nodes run in fp16 or int8 when the plan's precision allows);
 * mem_bandwidth and launch_latency_s from the profile. estimate() is a roofline:
 * max(flops / peak, bytes / bandwidth) + dispatch latency, with peak tops_int8 for int8 and
 * quantised nodes and tflops_fp16 otherwise, and bytes counted in the device's formats.
 * power_w is kept in the profile for energy studies; ABI 0.2 has no slot for it yet.
 *
 * int8 activations use static scales (calibrated max-abs / 127, saturating) when the host
 * calibrated the plan on sample inputs (node->input_absmax), else dynamic ones: see
 * npu_kernels.c.
 */
#include "npu_sim.h"

#include <jansson.h>

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPU_MAX_DEVICES 16

typedef struct npu_profile {
    char name[64];
    double tops_int8, tflops_fp16, bandwidth_gbs, dispatch_latency_us, memory_mb, power_w;
} npu_profile;

typedef struct npu_state {
    loom_backend table;
    npu_profile prof;
    uint32_t n_devices;
    void *host_ctx;
    void (*log)(void *host_ctx, loom_log_level level, const char *message);
    /* Bytes allocated on each device: alloc() refuses beyond the profile's memory. */
    atomic_size_t used[NPU_MAX_DEVICES];
} npu_state;

static const npu_profile k_default_profile = {
    .name = "edge-npu-10tops",
    .tops_int8 = 10,
    .tflops_fp16 = 5,
    .bandwidth_gbs = 40,
    .dispatch_latency_us = 20,
    .memory_mb = 1024,
    .power_w = 5,
};

static void say(void *host_ctx, void (*log)(void *, loom_log_level, const char *),
                loom_log_level level, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void say(void *host_ctx, void (*log)(void *, loom_log_level, const char *),
                loom_log_level level, const char *fmt, ...)
{
    if (!log)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log(host_ctx, level, msg);
}

/* Read the profile at PATH over the defaults in P; on failure writes ERR and returns 0. */
static int load_profile(const char *path, npu_profile *p, char *err, size_t err_len)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        snprintf(err, err_len, "profile %s: %s (line %d)", path, je.text, je.line);
        return 0;
    }
    int ok = 1;
    if (!json_is_object(root)) {
        snprintf(err, err_len, "profile %s: not a JSON object", path);
        ok = 0;
    }
    static const char *const keys[] = {"tops_int8", "tflops_fp16", "bandwidth_gbs",
                                       "dispatch_latency_us", "memory_mb", "power_w"};
    double *slots[] = {&p->tops_int8, &p->tflops_fp16, &p->bandwidth_gbs,
                       &p->dispatch_latency_us, &p->memory_mb, &p->power_w};
    const char *key;
    json_t *v;
    if (ok)
        json_object_foreach(root, key, v)
        {
            if (strcmp(key, "name") == 0) {
                if (!json_is_string(v) || !json_string_value(v)[0]) {
                    snprintf(err, err_len, "profile %s: \"name\" must be a non-empty string",
                             path);
                    ok = 0;
                    break;
                }
                snprintf(p->name, sizeof p->name, "%s", json_string_value(v));
                continue;
            }
            size_t i = 0;
            while (i < sizeof keys / sizeof *keys && strcmp(keys[i], key) != 0)
                i++;
            if (i == sizeof keys / sizeof *keys) {
                snprintf(err, err_len, "profile %s: unknown key \"%s\" (known: name, tops_int8, "
                         "tflops_fp16, bandwidth_gbs, dispatch_latency_us, memory_mb, power_w)",
                         path, key);
                ok = 0;
                break;
            }
            double d = json_is_number(v) ? json_number_value(v) : -1;
            /* dispatch latency may be 0 (an ideal device); the rest must be positive */
            if (!json_is_number(v) || !isfinite(d) || d < 0 ||
                (d == 0 && slots[i] != &p->dispatch_latency_us)) {
                snprintf(err, err_len, "profile %s: \"%s\" must be a positive number", path, key);
                ok = 0;
                break;
            }
            *slots[i] = d;
        }
    json_decref(root);
    return ok;
}

/* ---- the table ------------------------------------------------------------------------------ */

static uint32_t npu_device_count(void *ctx)
{
    return ((npu_state *)ctx)->n_devices;
}

static loom_status npu_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    npu_state *s = ctx;
    if (dev >= s->n_devices || !info)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_device_info d;
    memset(&d, 0, sizeof d);
    /* the profile name is at most 63 bytes, so the line fits */
    int len = snprintf(d.name, sizeof d.name, "npu-sim %.40s (simulated: %.4g TOPS int8, %.4g "
                     "TFLOPS fp16, %.4g GB/s)", s->prof.name, s->prof.tops_int8,
                     s->prof.tflops_fp16, s->prof.bandwidth_gbs);
    (void)len;
    d.kind = LOOM_DEVICE_NPU;
    d.compute_units = 1;
    d.threads = 1;
    d.memory_bytes = (uint64_t)(s->prof.memory_mb * 1024.0 * 1024.0);
    d.numa_node = -1;
    d.host_visible = 1;
    d.peak_flops_f32 = s->prof.tflops_fp16 * 1e12;
    d.mem_bandwidth = s->prof.bandwidth_gbs * 1e9;
    d.launch_latency_s = s->prof.dispatch_latency_us * 1e-6;
    /* Copy only what the host's struct has room for: it may be older than ours. */
    uint32_t abi = info->abi_version, size = info->struct_size;
    size_t n = size && size < sizeof d ? size : sizeof d;
    memcpy(info, &d, n);
    info->abi_version = abi;
    info->struct_size = size;
    return LOOM_OK;
}

static int npu_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                        size_t reason_len)
{
    npu_state *s = ctx;
    npu_mode mode;
    if (dev >= s->n_devices) {
        if (reason && reason_len)
            snprintf(reason, reason_len, "npu-sim: no device %u", dev);
        return 0;
    }
    return npu_check(node, &mode, reason, reason_len);
}

static double npu_estimate(void *ctx, uint32_t dev, const loom_node_desc *node)
{
    npu_state *s = ctx;
    npu_mode mode;
    if (dev >= s->n_devices || !npu_check(node, &mode, NULL, 0))
        return -1.0;
    double flops, bytes;
    npu_work(node, mode, &flops, &bytes);
    int integer = mode == NPU_MODE_INT8 || node->op == LOOM_OP_QLINEAR_CONV ||
                  node->op == LOOM_OP_QLINEAR_MAT_MUL || node->op == LOOM_OP_QUANTIZE_LINEAR ||
                  node->op == LOOM_OP_DEQUANTIZE_LINEAR;
    double peak = (integer ? s->prof.tops_int8 : s->prof.tflops_fp16) * 1e12;
    double t_compute = flops / peak, t_memory = bytes / (s->prof.bandwidth_gbs * 1e9);
    return (t_compute > t_memory ? t_compute : t_memory) + s->prof.dispatch_latency_us * 1e-6;
}

static loom_status npu_prepare(void *ctx, uint32_t dev, const loom_node_desc *node,
                               void **kernel, size_t *scratch_bytes, char *err, size_t err_len)
{
    npu_state *s = ctx;
    npu_mode mode;
    char why[256] = "";
    if (dev >= s->n_devices || !npu_check(node, &mode, why, sizeof why)) {
        snprintf(err, err_len, "%s", why[0] ? why : "npu-sim: no such device");
        return LOOM_ERR_UNSUPPORTED;
    }
    npu_kernel *k = malloc(sizeof *k);
    if (!k) {
        snprintf(err, err_len, "npu-sim: out of memory");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    loom_status st = npu_kernel_prepare(node, mode, k, err, err_len);
    if (st != LOOM_OK) {
        free(k);
        return st;
    }
    *kernel = k;
    *scratch_bytes = k->scratch_bytes;
    return LOOM_OK;
}

static loom_status npu_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                               char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    return npu_kernel_run(kernel, args, err, err_len);
}

static void npu_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    npu_kernel_free(kernel);
    free(kernel);
}

static void *npu_alloc(void *ctx, uint32_t dev, size_t size, size_t align)
{
    npu_state *s = ctx;
    if (dev >= s->n_devices)
        return NULL;
    size_t cap = (size_t)(s->prof.memory_mb * 1024.0 * 1024.0);
    size_t was = atomic_fetch_add(&s->used[dev], size);
    if (was + size > cap || was + size < was) {
        atomic_fetch_sub(&s->used[dev], size);
        say(s->host_ctx, s->log, LOOM_LOG_WARNING,
            "npu-sim:%u: out of device memory (%zu bytes asked, %zu of %zu in use)", dev, size,
            was, cap);
        return NULL;
    }
    void *p = NULL;
    if (align < sizeof(void *))
        align = sizeof(void *);
    if (posix_memalign(&p, align, size ? size : 1) != 0) {
        atomic_fetch_sub(&s->used[dev], size);
        return NULL;
    }
    return p;
}

static void npu_free(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    npu_state *s = ctx;
    if (!ptr)
        return;
    if (dev < s->n_devices)
        atomic_fetch_sub(&s->used[dev], size);
    free(ptr);
}

static void npu_shutdown(void *ctx)
{
    free(ctx);
}

/* ---- options (ABI 1.0) ---------------------------------------------------------------------- */

static const loom_backend_option k_options[] = {
    {"profile", "JSON file with the simulated device's facts (tops_int8, tflops_fp16, "
                "bandwidth_gbs, dispatch_latency_us, memory_mb, power_w, name); "
                "fallback: $LOOM_NPU_SIM_PROFILE", ""},
    {"devices", "how many identical devices to report, 1 to 16; fallback: $LOOM_NPU_SIM_DEVICES",
     "1"},
};

/* DEVICES as a device count into *N; 0 when it is not one. */
static int parse_devices(const char *text, uint32_t *n)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (!*text || *end || v < 1 || v > NPU_MAX_DEVICES)
        return 0;
    *n = (uint32_t)v;
    return 1;
}

/* Called by the host before device_count (never concurrently with anything else). */
static loom_status npu_set_option(void *ctx, const char *key, const char *value, char *err,
                                  size_t err_len)
{
    npu_state *s = ctx;
    if (!key || !value) {
        snprintf(err, err_len, "npu-sim: option key or value is NULL");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    if (!strcmp(key, "profile")) {
        npu_profile prof = k_default_profile;
        if (!*value) {
            snprintf(err, err_len, "npu-sim: profile needs a file name");
            return LOOM_ERR_INVALID_ARGUMENT;
        }
        if (!load_profile(value, &prof, err, err_len))
            return LOOM_ERR_INVALID_ARGUMENT;
        s->prof = prof;
        say(s->host_ctx, s->log, LOOM_LOG_INFO, "npu-sim: profile '%s' from %s (option)",
            prof.name, value);
        return LOOM_OK;
    }
    if (!strcmp(key, "devices")) {
        if (!parse_devices(value, &s->n_devices)) {
            snprintf(err, err_len, "npu-sim: devices='%s' is not a device count (1 to %d)", value,
                     NPU_MAX_DEVICES);
            return LOOM_ERR_INVALID_ARGUMENT;
        }
        return LOOM_OK;
    }
    snprintf(err, err_len, "npu-sim: unknown option '%s' (profile, devices)", key);
    return LOOM_ERR_INVALID_ARGUMENT;
}

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    void *hctx = NULL;
    void (*log)(void *, loom_log_level, const char *) = NULL;
    if (host && host->struct_size >= offsetof(loom_host, log) + sizeof host->log) {
        hctx = host->host_ctx;
        log = host->log;
    }
    if ((host_abi_version >> 16) != LOOM_ABI_VERSION_MAJOR) {
        say(hctx, log, LOOM_LOG_ERROR,
            "npu-sim: built for Loom ABI %u.%u, the host speaks %u.%u", LOOM_ABI_VERSION_MAJOR,
            LOOM_ABI_VERSION_MINOR, host_abi_version >> 16, host_abi_version & 0xffffu);
        return NULL;
    }
    npu_profile prof = k_default_profile;
    const char *path = getenv("LOOM_NPU_SIM_PROFILE");
    char err[512];
    if (path && *path && !load_profile(path, &prof, err, sizeof err)) {
        say(hctx, log, LOOM_LOG_ERROR, "npu-sim: %s", err);
        return NULL;
    }
    uint32_t n = 1;
    const char *env = getenv("LOOM_NPU_SIM_DEVICES");
    if (env && *env && !parse_devices(env, &n)) {
        say(hctx, log, LOOM_LOG_ERROR,
            "npu-sim: LOOM_NPU_SIM_DEVICES='%s' is not a device count (1 to %d)", env,
            NPU_MAX_DEVICES);
        return NULL;
    }
    npu_state *s = calloc(1, sizeof *s);
    if (!s) {
        say(hctx, log, LOOM_LOG_ERROR, "npu-sim: out of memory");
        return NULL;
    }
    s->prof = prof;
    s->n_devices = n;
    s->host_ctx = hctx;
    s->log = log;
    for (uint32_t d = 0; d < NPU_MAX_DEVICES; d++)
        atomic_init(&s->used[d], 0);
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "npu-sim";
    t->ctx = s;
    t->device_count = npu_device_count;
    t->device_info = npu_device_info;
    t->supports = npu_supports;
    t->prepare = npu_prepare;
    t->execute = npu_execute;
    t->release_kernel = npu_release_kernel;
    t->alloc = npu_alloc;
    t->free = npu_free;
    t->shutdown = npu_shutdown;
    t->estimate = npu_estimate;
    t->submit = NULL; /* synchronous: the host calls execute() */
    t->options = k_options;
    t->n_options = sizeof k_options / sizeof *k_options;
    t->set_option = npu_set_option;
    if (path && *path)
        say(hctx, log, LOOM_LOG_INFO, "npu-sim: profile '%s' from %s", prof.name, path);
    return t;
}
