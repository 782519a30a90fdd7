/*
 * A test plugin whose memory the host cannot address: backend "devmem", one device (kind NPU)
 * that reports host_visible = 0. Its alloc() hands out addresses with bit 62 flipped, which the
 * CPU cannot dereference (non-canonical), so any host code that touches device memory instead
 * of going through upload()/download() crashes at once. It computes float32 Relu, Add (same
 * shapes) and 2-D MatMul with naive loops, keeps its own copy of constant inputs from prepare
 * (as the ABI asks), and estimates its time as 5 TFLOP/s with a 2 us launch, so that the
 * placement sends MatMuls to it and the plan needs copy nodes.
 *
 * $LOOM_TEST_DEVMEM_FAIL=N (read when the plugin is queried): the N-th execution fails with
 * "devmem: injected failure", for the executor's staged fallback.
 */
#include <loom/backend.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEV_BIT ((uintptr_t)1 << 62)

typedef struct dm_state {
    loom_backend table;
    long fail_at; /* 0: never */
    atomic_long calls;
} dm_state;

typedef struct dm_kernel {
    loom_op_id op;
    int64_t m, k, n;    /* MatMul dims; elementwise: m = element count */
    void *constant[2];  /* own copies of constant inputs */
} dm_kernel;

static void *to_host(const void *p)
{
    return (void *)((uintptr_t)p ^ DEV_BIT);
}

static int is_device(const void *p)
{
    return ((uintptr_t)p & DEV_BIT) != 0;
}

static uint32_t dm_device_count(void *ctx)
{
    (void)ctx;
    return 1;
}

static loom_status dm_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    (void)ctx;
    if (dev != 0)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "devmem test device");
    d.kind = LOOM_DEVICE_NPU;
    d.compute_units = 1;
    d.threads = 1;
    d.numa_node = -1;
    d.host_visible = 0;
    d.memory_bytes = (uint64_t)1 << 30;
    d.peak_flops_f32 = 50e9;
    d.mem_bandwidth = 50e9;
    d.launch_latency_s = 2e-6;
    uint32_t abi = info->abi_version, size = info->struct_size;
    memcpy(info, &d, size && size < sizeof d ? size : sizeof d);
    info->abi_version = abi;
    info->struct_size = size;
    return LOOM_OK;
}

static int same_shape(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    if (a->rank != b->rank)
        return 0;
    for (uint32_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return 0;
    return 1;
}

static int dm_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                       size_t reason_len)
{
    (void)ctx;
    int ok = dev == 0 && node->n_inputs >= 1 && node->inputs[0].dtype == LOOM_DTYPE_F32;
    if (ok && node->op == LOOM_OP_ADD)
        ok = same_shape(&node->inputs[0], &node->inputs[1]) &&
             same_shape(&node->inputs[0], &node->outputs[0]);
    else if (ok && node->op == LOOM_OP_MATMUL)
        ok = node->inputs[0].rank == 2 && node->inputs[1].rank == 2;
    else if (ok)
        ok = node->op == LOOM_OP_RELU;
    if (!ok)
        snprintf(reason, reason_len, "devmem: only float32 Relu, Add (same shapes), 2-D MatMul");
    return ok;
}

static void dm_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    dm_kernel *k = kernel;
    if (!k)
        return;
    free(k->constant[0]);
    free(k->constant[1]);
    free(k);
}

static loom_status dm_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                              size_t *scratch_bytes, char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    dm_kernel *k = calloc(1, sizeof *k);
    if (!k)
        return LOOM_ERR_OUT_OF_MEMORY;
    k->op = node->op;
    if (node->op == LOOM_OP_MATMUL) {
        k->m = node->inputs[0].dims[0];
        k->k = node->inputs[0].dims[1];
        k->n = node->inputs[1].dims[1];
    } else {
        k->m = loom_tensor_desc_numel(&node->outputs[0]);
    }
    for (uint32_t i = 0; i < node->n_inputs && i < 2; i++) {
        if (!node->input_constants || !node->input_constants[i])
            continue;
        size_t bytes = (size_t)loom_tensor_desc_numel(&node->inputs[i]) * sizeof(float);
        if (!(k->constant[i] = malloc(bytes ? bytes : 1))) {
            dm_release_kernel(ctx, k);
            snprintf(err, err_len, "devmem: out of memory copying a constant");
            return LOOM_ERR_OUT_OF_MEMORY;
        }
        memcpy(k->constant[i], node->input_constants[i], bytes);
    }
    *kernel = k;
    *scratch_bytes = 0;
    return LOOM_OK;
}

static loom_status dm_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              char *err, size_t err_len)
{
    dm_state *s = ctx;
    (void)dev;
    long call = atomic_fetch_add(&s->calls, 1) + 1;
    if (s->fail_at > 0 && call == s->fail_at) {
        snprintf(err, err_len, "devmem: injected failure (call %ld)", call);
        return LOOM_ERR_DEVICE_LOST;
    }
    const dm_kernel *k = kernel;
    const float *in[2] = {NULL, NULL};
    int n_in = k->op == LOOM_OP_RELU ? 1 : 2;
    for (int i = 0; i < n_in; i++) {
        if (k->constant[i]) {
            in[i] = k->constant[i];
        } else if (!is_device(args->inputs[i])) {
            snprintf(err, err_len, "devmem: input %d is a host address, not device memory", i);
            return LOOM_ERR_INVALID_ARGUMENT;
        } else {
            in[i] = to_host(args->inputs[i]);
        }
    }
    if (!is_device(args->outputs[0])) {
        snprintf(err, err_len, "devmem: the output is a host address, not device memory");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    float *y = to_host(args->outputs[0]);
    if (k->op == LOOM_OP_RELU) {
        for (int64_t i = 0; i < k->m; i++)
            y[i] = in[0][i] > 0 ? in[0][i] : 0.0f;
    } else if (k->op == LOOM_OP_ADD) {
        for (int64_t i = 0; i < k->m; i++)
            y[i] = in[0][i] + in[1][i];
    } else {
        for (int64_t i = 0; i < k->m; i++)
            for (int64_t j = 0; j < k->n; j++) {
                double acc = 0;
                for (int64_t q = 0; q < k->k; q++)
                    acc += (double)in[0][i * k->k + q] * in[1][q * k->n + j];
                y[i * k->n + j] = (float)acc;
            }
    }
    return LOOM_OK;
}

static double dm_estimate(void *ctx, uint32_t dev, const loom_node_desc *node)
{
    (void)ctx;
    (void)dev;
    double flops = 0;
    if (node->op == LOOM_OP_MATMUL)
        flops = 2.0 * (double)node->inputs[0].dims[0] * (double)node->inputs[0].dims[1] *
                (double)node->inputs[1].dims[1];
    else
        flops = (double)loom_tensor_desc_numel(&node->outputs[0]);
    return 2e-6 + flops / 5e12;
}

static void *dm_alloc(void *ctx, uint32_t dev, size_t size, size_t align)
{
    (void)ctx;
    (void)dev;
    void *p = aligned_alloc(align < 64 ? 64 : align, (size + 63) / 64 * 64);
    return p ? (void *)((uintptr_t)p ^ DEV_BIT) : NULL;
}

static void dm_free(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    (void)ctx;
    (void)dev;
    (void)size;
    if (ptr)
        free(to_host(ptr));
}

static loom_status dm_upload(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                             char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    if (!is_device(dst) || is_device(src)) {
        snprintf(err, err_len, "devmem: upload needs a device destination and a host source");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    memcpy(to_host(dst), src, bytes);
    return LOOM_OK;
}

static loom_status dm_download(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                               char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    if (is_device(dst) || !is_device(src)) {
        snprintf(err, err_len, "devmem: download needs a device source and a host destination");
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    memcpy(dst, to_host(src), bytes);
    return LOOM_OK;
}

static void dm_shutdown(void *ctx)
{
    free(ctx);
}

__attribute__((visibility("default"))) const loom_backend *
loom_backend_query(uint32_t host_abi_version, const loom_host *host);

const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host)
{
    (void)host;
    if ((host_abi_version >> 16) != LOOM_ABI_VERSION_MAJOR)
        return NULL; /* built for 1.x: any 1.y host has upload/download */
    dm_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    const char *env = getenv("LOOM_TEST_DEVMEM_FAIL");
    if (env && *env)
        s->fail_at = strtol(env, NULL, 10);
    atomic_init(&s->calls, 0);
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "devmem";
    t->ctx = s;
    t->device_count = dm_device_count;
    t->device_info = dm_device_info;
    t->supports = dm_supports;
    t->prepare = dm_prepare;
    t->execute = dm_execute;
    t->release_kernel = dm_release_kernel;
    t->alloc = dm_alloc;
    t->free = dm_free;
    t->shutdown = dm_shutdown;
    t->estimate = dm_estimate;
    t->upload = dm_upload;
    t->download = dm_download;
    return t;
}
