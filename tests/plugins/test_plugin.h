/*
 * What the small test plugins share (each is its own shared module built against
 * <loom/backend.h> alone, so these are static functions in a header, not a library):
 * device facts written into the host's struct, and a float32 Relu kernel (prepare keeps the
 * element count; run is the naive loop).
 */
#ifndef LOOM_TEST_PLUGIN_H
#define LOOM_TEST_PLUGIN_H

#include <loom/backend.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Facts of a simple one-core device: NAME, KIND, host-visible or not; the rest 0 (-1 NUMA). */
static inline loom_device_info tp_device_facts(const char *name, loom_device_kind kind,
                                               int host_visible)
{
    loom_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "%s", name);
    d.kind = kind;
    d.compute_units = 1;
    d.threads = 1;
    d.numa_node = -1;
    d.host_visible = host_visible ? 1u : 0u;
    return d;
}

/* Write D into the host's INFO: the host's struct may be older (smaller) than ours, so copy
 * only what it has room for and keep its abi_version and struct_size. */
static inline loom_status tp_write_info(loom_device_info *info, const loom_device_info *d)
{
    uint32_t abi = info->abi_version, size = info->struct_size;
    memcpy(info, d, size && size < sizeof *d ? size : sizeof *d);
    info->abi_version = abi;
    info->struct_size = size;
    return LOOM_OK;
}

/* Whether NODE is a float32 Relu on device 0. */
static inline int tp_is_relu_f32(uint32_t dev, const loom_node_desc *node)
{
    return dev == 0 && node->op == LOOM_OP_RELU && node->inputs[0].dtype == LOOM_DTYPE_F32;
}

/* Prepare a Relu kernel: its element count, freed with tp_release_kernel. */
static inline loom_status tp_relu_prepare(const loom_node_desc *node, void **kernel,
                                          size_t *scratch_bytes)
{
    int64_t *k = malloc(sizeof *k);
    if (!k)
        return LOOM_ERR_OUT_OF_MEMORY;
    *k = loom_tensor_desc_numel(&node->outputs[0]);
    *kernel = k;
    *scratch_bytes = 0;
    return LOOM_OK;
}

/* Run a kernel from tp_relu_prepare on ARGS. */
static inline void tp_relu_run(const void *kernel, const loom_exec_args *args)
{
    const int64_t n = *(const int64_t *)kernel;
    const float *x = args->inputs[0];
    float *y = args->outputs[0];
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static inline void tp_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    free(kernel);
}

static inline uint32_t tp_one_device(void *ctx)
{
    (void)ctx;
    return 1;
}

#endif /* LOOM_TEST_PLUGIN_H */
