/*
 * A deliberately broken plugin for the loader's tests: it answers any host, but its table says
 * it was built for ABI major 99, which the host must refuse with a message naming the file and
 * both versions. Its functions are never meant to be called; they exist so that a host that
 * wrongly accepts the table does not crash on a NULL slot.
 */
#include <loom/backend.h>

#include <stdio.h>
#include <stdlib.h>

static uint32_t ba_device_count(void *ctx)
{
    (void)ctx;
    return 1;
}

static loom_status ba_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    (void)ctx;
    (void)dev;
    (void)info;
    return LOOM_ERR_UNSUPPORTED;
}

static int ba_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                       size_t reason_len)
{
    (void)ctx;
    (void)dev;
    (void)node;
    snprintf(reason, reason_len, "bad-abi: supports nothing");
    return 0;
}

static loom_status ba_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                              size_t *scratch_bytes, char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    (void)node;
    (void)kernel;
    (void)scratch_bytes;
    snprintf(err, err_len, "bad-abi: supports nothing");
    return LOOM_ERR_UNSUPPORTED;
}

static loom_status ba_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    (void)kernel;
    (void)args;
    snprintf(err, err_len, "bad-abi: supports nothing");
    return LOOM_ERR_UNSUPPORTED;
}

static void ba_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    (void)kernel;
}

static const loom_backend k_table = {
    .abi_version = (99u << 16) | 0u,
    .struct_size = sizeof(loom_backend),
    .name = "bad-abi",
    .ctx = NULL,
    .device_count = ba_device_count,
    .device_info = ba_device_info,
    .supports = ba_supports,
    .prepare = ba_prepare,
    .execute = ba_execute,
    .release_kernel = ba_release_kernel,
};

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    (void)host_abi_version;
    (void)host;
    return &k_table;
}
