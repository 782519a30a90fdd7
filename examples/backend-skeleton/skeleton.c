/*
 * The smallest useful Loom backend plugin: one device ("skeleton:0") that runs one operator,
 * Relu on float32. Copy this file to start a backend of your own; docs/writing-a-backend.md
 * walks through it. Built against the installed <loom/backend.h> alone (see the Makefile).
 */
#include <loom/backend.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The backend's state: the table the host reads, and whatever the backend needs. One instance
 * per loom_backend_query call, freed by shutdown: no global mutable state. */
typedef struct skel_state {
    loom_backend table;
    void *host_ctx;
    void (*log)(void *host_ctx, loom_log_level level, const char *message);
} skel_state;

/* What prepare() compiles a node into: here, only its element count. */
typedef struct skel_kernel {
    int64_t n;
} skel_kernel;

static uint32_t skel_device_count(void *ctx)
{
    (void)ctx;
    return 1;
}

/* Facts with units; what we do not know stays 0. The host's struct may be older (smaller) than
 * ours: copy only what it has room for, and keep its abi_version and struct_size. */
static loom_status skel_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    (void)ctx;
    if (dev != 0)
        return LOOM_ERR_INVALID_ARGUMENT;
    loom_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "skeleton example device");
    d.kind = LOOM_DEVICE_OTHER;
    d.compute_units = 1;
    d.threads = 1;
    d.numa_node = -1;
    d.host_visible = 1; /* our buffers are ordinary host memory */
    uint32_t abi = info->abi_version, size = info->struct_size;
    memcpy(info, &d, size && size < sizeof d ? size : sizeof d);
    info->abi_version = abi;
    info->struct_size = size;
    return LOOM_OK;
}

/* Pure: the same node always gets the same answer, and a "no" always comes with a reason. */
static int skel_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                         size_t reason_len)
{
    (void)ctx;
    if (dev != 0) {
        snprintf(reason, reason_len, "skeleton: no device %u", dev);
        return 0;
    }
    if (node->op != LOOM_OP_RELU) {
        snprintf(reason, reason_len, "skeleton: %s is not supported (only Relu)", node->op_name);
        return 0;
    }
    if (node->inputs[0].dtype != LOOM_DTYPE_F32) {
        snprintf(reason, reason_len, "skeleton: Relu runs on float32 only");
        return 0;
    }
    return 1;
}

/* Copy what the kernel needs: the node descriptor is only valid during this call. */
static loom_status skel_prepare(void *ctx, uint32_t dev, const loom_node_desc *node,
                                void **kernel, size_t *scratch_bytes, char *err, size_t err_len)
{
    if (!skel_supports(ctx, dev, node, err, err_len))
        return LOOM_ERR_UNSUPPORTED;
    skel_kernel *k = malloc(sizeof *k);
    if (!k) {
        snprintf(err, err_len, "skeleton: out of memory");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    k->n = loom_tensor_desc_numel(&node->outputs[0]);
    *kernel = k;
    *scratch_bytes = 0;
    return LOOM_OK;
}

/* Runs to completion; may be called from several threads at once with different ARGS, so it
 * only reads the kernel. */
static loom_status skel_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                                char *err, size_t err_len)
{
    (void)ctx;
    (void)dev;
    (void)err;
    (void)err_len;
    const skel_kernel *k = kernel;
    const float *x = args->inputs[0];
    float *y = args->outputs[0];
    for (int64_t i = 0; i < k->n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return LOOM_OK;
}

static void skel_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    free(kernel);
}

static void skel_shutdown(void *ctx)
{
    free(ctx); /* the table lives inside the state: it dies here too */
}

/* The one exported symbol. Refuse a host of another major version; otherwise make a new,
 * independent instance. Optional slots (alloc/free, estimate, submit) stay NULL: the host's
 * defaults apply. */
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
        if (log)
            log(hctx, LOOM_LOG_ERROR, "skeleton: built for another major version of the ABI");
        return NULL;
    }
    skel_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->host_ctx = hctx;
    s->log = log;
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "skeleton";
    t->ctx = s;
    t->device_count = skel_device_count;
    t->device_info = skel_device_info;
    t->supports = skel_supports;
    t->prepare = skel_prepare;
    t->execute = skel_execute;
    t->release_kernel = skel_release_kernel;
    t->shutdown = skel_shutdown;
    return t;
}
