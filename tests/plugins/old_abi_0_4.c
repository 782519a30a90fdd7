/*
 * A test plugin built the way a plugin of backend ABI 0.4 was: its table says 0.4, its
 * struct_size is that of the 0.4 table (everything before the 1.0 slots, `claim` onward), and
 * its loom_backend_query refuses a host whose major version is not 0, logging why, as 0.x
 * plugins did. A 1.x host asks it once more with LOOM_ABI_VERSION_0_COMPAT and runs it through
 * the adapter. Backend "old04", one device (kind OTHER, host-visible) that runs float32 Relu.
 *
 * The table is allocated with exactly its 0.4 size, so a host that reads a 1.0 slot of it
 * (instead of going by struct_size) reads past the allocation: AddressSanitizer stops it.
 */
#include "test_plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TABLE_0_4_SIZE offsetof(loom_backend, claim)

static loom_status o4_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    (void)ctx;
    if (dev != 0)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_device_info d = tp_device_facts("old04 test device (backend ABI 0.4)", LOOM_DEVICE_OTHER, 1);
    return tp_write_info(info, &d);
}

static int o4_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                       size_t reason_len)
{
    (void)ctx;
    if (tp_is_relu_f32(dev, node))
        return 1;
    snprintf(reason, reason_len, "old04: only float32 Relu");
    return 0;
}

static loom_status o4_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                              size_t *scratch_bytes, char *err, size_t err_len)
{
    if (!o4_supports(ctx, dev, node, err, err_len))
        return LOOM_ERR_UNSUPPORTED;
    return tp_relu_prepare(node, kernel, scratch_bytes);
}

static loom_status o4_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    (void)err;
    (void)err_len;
    tp_relu_run(kernel, args);
    return LOOM_OK;
}

static void o4_shutdown(void *ctx)
{
    free(ctx); /* the table itself */
}

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    if ((host_abi_version >> 16) != 0) {
        if (host && host->struct_size >= offsetof(loom_host, log) + sizeof host->log &&
            host->log)
            host->log(host->host_ctx, LOOM_LOG_ERROR,
                      "old04: built for backend ABI 0.4, refusing a host of another major");
        return NULL;
    }
    if ((host_abi_version & 0xffffu) < 4)
        return NULL; /* it would need the 0.4 operator ids */
    loom_backend t;
    memset(&t, 0, sizeof t);
    t.abi_version = (0u << 16) | 4u;
    t.struct_size = (uint32_t)TABLE_0_4_SIZE;
    t.name = "old04";
    t.device_count = tp_one_device;
    t.device_info = o4_device_info;
    t.supports = o4_supports;
    t.prepare = o4_prepare;
    t.execute = o4_execute;
    t.release_kernel = tp_release_kernel;
    t.shutdown = o4_shutdown;
    loom_backend *table = malloc(TABLE_0_4_SIZE);
    if (!table)
        return NULL;
    t.ctx = table;
    memcpy(table, &t, TABLE_0_4_SIZE);
    return table;
}
