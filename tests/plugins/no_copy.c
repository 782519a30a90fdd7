/*
 * A deliberately broken plugin for the loader's tests: backend "no-copy" with two devices. Device
 * 0 is host-visible and runs float32 Relu; device 1 says its memory is not host-visible
 * (host_visible = 0) and gives alloc/free, but the table has neither upload nor download, so
 * the host could never move data to or from it: the host must refuse device 1 at load, naming
 * the missing slots, and keep device 0. With $LOOM_TEST_NO_COPY_ALL_HIDDEN=1 (read when the
 * plugin is queried) device 0 is not host-visible either, and the whole backend is refused.
 */
#include "test_plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct nc_state {
    loom_backend table;
    int all_hidden;
} nc_state;

static uint32_t nc_device_count(void *ctx)
{
    (void)ctx;
    return 2;
}

static loom_status nc_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    const nc_state *s = ctx;
    if (dev > 1)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "no-copy test device %u", dev);
    d.kind = LOOM_DEVICE_NPU;
    d.compute_units = 1;
    d.threads = 1;
    d.numa_node = -1;
    d.memory_bytes = (uint64_t)1 << 30;
    d.host_visible = dev == 0 && !s->all_hidden;
    return tp_write_info(info, &d);
}

static int nc_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                       size_t reason_len)
{
    (void)ctx;
    if (tp_is_relu_f32(dev, node))
        return 1;
    snprintf(reason, reason_len, "no-copy: only float32 Relu on device 0");
    return 0;
}

static loom_status nc_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                              size_t *scratch_bytes, char *err, size_t err_len)
{
    if (!nc_supports(ctx, dev, node, err, err_len))
        return LOOM_ERR_UNSUPPORTED;
    return tp_relu_prepare(node, kernel, scratch_bytes);
}

static loom_status nc_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    (void)err;
    (void)err_len;
    tp_relu_run(kernel, args);
    return LOOM_OK;
}

/* Host memory for both devices (device 1 is never used: the host refuses it). */
static void *nc_alloc(void *ctx, uint32_t dev, size_t size, size_t align)
{
    (void)ctx;
    (void)dev;
    return aligned_alloc(align < 64 ? 64 : align, (size + 63) / 64 * 64);
}

static void nc_free(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    (void)ctx;
    (void)dev;
    (void)size;
    free(ptr);
}

static void nc_shutdown(void *ctx)
{
    free(ctx);
}

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    (void)host;
    if ((host_abi_version >> 16) != LOOM_ABI_VERSION_MAJOR)
        return NULL;
    nc_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    const char *env = getenv("LOOM_TEST_NO_COPY_ALL_HIDDEN");
    s->all_hidden = env && !strcmp(env, "1");
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "no-copy";
    t->ctx = s;
    t->device_count = nc_device_count;
    t->device_info = nc_device_info;
    t->supports = nc_supports;
    t->prepare = nc_prepare;
    t->execute = nc_execute;
    t->release_kernel = tp_release_kernel;
    t->alloc = nc_alloc;
    t->free = nc_free;
    t->shutdown = nc_shutdown;
    return t;
}
