/*
 * The CPU backend's table: device facts from hwloc, the per-op kernel table filled by the kernel
 * families, prepare/execute, and intermediate memory from libnuma on the pool's NUMA node.
 * Written against loom/backend.h only, as a third-party plugin would be.
 */
#include "cpu_backend.h"
#include "cpu_claims.h"
#include "cpu_kernels.h"
#include "cpu_pool.h"

#include <cblas.h>
#include <hwloc.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cpu_state {
    loom_backend table;
    hwloc_topology_t topo;
    cpu_pool *pool;
    cpu_op_entry ops[CPU_OP_TABLE_SIZE];
    loom_device_info info;
    int numa_node; /* where intermediates go; -1 when libnuma is unavailable */
} cpu_state;

static uint32_t cpu_device_count(void *ctx)
{
    (void)ctx;
    return 1;
}

static loom_status cpu_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    cpu_state *s = ctx;
    if (dev != 0)
        return LOOM_ERR_INVALID_ARGUMENT;
    /* Copy only what the host's struct has room for: it may be older than ours. */
    size_t n = info->struct_size && info->struct_size < sizeof *info ? info->struct_size
                                                                      : sizeof *info;
    uint32_t abi = info->abi_version, size = info->struct_size;
    memcpy(info, &s->info, n);
    info->abi_version = abi;
    info->struct_size = size;
    return LOOM_OK;
}

static const cpu_op_entry *entry_for(const cpu_state *s, loom_op_id op)
{
    if ((unsigned)op >= CPU_OP_TABLE_SIZE || !s->ops[op].prepare)
        return NULL;
    return &s->ops[op];
}

static int cpu_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                        size_t reason_len)
{
    cpu_state *s = ctx;
    if (dev != 0)
        return cpu_reason(reason, reason_len, "no CPU device %u", dev);
    const cpu_op_entry *e = entry_for(s, node->op);
    if (!e)
        return cpu_reason(reason, reason_len, "no CPU kernel for %s", node->op_name);
    if (e->supports)
        return e->supports(node, reason, reason_len);
    return 1;
}

void cpu_kernel_release(cpu_kernel *k)
{
    if (k->free_params)
        k->free_params(k->params);
    else
        free(k->params);
    free(k->in);
    free(k->out);
}

static void kernel_free(cpu_kernel *k)
{
    if (!k)
        return;
    cpu_kernel_release(k);
    free(k);
}

static loom_status cpu_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                               size_t *scratch_bytes, char *err, size_t err_len)
{
    cpu_state *s = ctx;
    char why[256] = "";
    if (!cpu_supports(ctx, dev, node, why, sizeof why))
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "%s", why);
    cpu_kernel *k = calloc(1, sizeof *k);
    if (!k)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    k->op = node->op;
    k->n_in = node->n_inputs;
    k->n_out = node->n_outputs;
    k->in = calloc(node->n_inputs + 1, sizeof *k->in);
    k->out = calloc(node->n_outputs + 1, sizeof *k->out);
    if (!k->in || !k->out) {
        kernel_free(k);
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(k->in, node->inputs, node->n_inputs * sizeof *k->in);
    memcpy(k->out, node->outputs, node->n_outputs * sizeof *k->out);
    loom_status st = entry_for(s, node->op)->prepare(node, k, err, err_len);
    if (st == LOOM_OK && !k->run)
        st = cpu_fail(err, err_len, LOOM_ERR_INTERNAL, "%s: prepare set no kernel",
                      node->op_name);
    if (st != LOOM_OK) {
        kernel_free(k);
        return st;
    }
    *kernel = k;
    *scratch_bytes = k->scratch_bytes;
    return LOOM_OK;
}

static loom_status cpu_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                               char *err, size_t err_len)
{
    cpu_state *s = ctx;
    (void)dev;
    const cpu_kernel *k = kernel;
    return k->run(k, args, s->pool, err, err_len);
}

/* Subgraph claims (ABI 1.0): the chains of cpu_claims.c. */
static uint32_t cpu_claim(void *ctx, uint32_t dev, const loom_subgraph_desc *graph,
                          uint32_t *nodes, uint32_t max_nodes, loom_claim *claims,
                          uint32_t max_claims)
{
    cpu_state *s = ctx;
    return dev == 0 ? cpu_claims_find(s->ops, graph, nodes, max_nodes, claims, max_claims) : 0;
}

static loom_status cpu_prepare_subgraph(void *ctx, uint32_t dev, const loom_subgraph_desc *sg,
                                        void **kernel, size_t *scratch_bytes, char *err,
                                        size_t err_len)
{
    cpu_state *s = ctx;
    if (dev != 0)
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "no CPU device %u", dev);
    cpu_kernel *k = NULL;
    loom_status st = cpu_claims_prepare(s->ops, sg, &k, err, err_len);
    if (st != LOOM_OK)
        return st;
    *kernel = k;
    *scratch_bytes = k->scratch_bytes;
    return LOOM_OK;
}

static void cpu_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    kernel_free(kernel);
}

static void *cpu_alloc(void *ctx, uint32_t dev, size_t size, size_t align)
{
    cpu_state *s = ctx;
    (void)dev;
    if (size == 0)
        size = 1;
    /* numa_alloc_onnode gives page-aligned memory bound to the pool's node. */
    if (s->numa_node >= 0 && align <= 4096)
        return numa_alloc_onnode(size, s->numa_node);
    void *p = NULL;
    if (posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, size) != 0)
        return NULL;
    return p;
}

static void cpu_free(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    cpu_state *s = ctx;
    (void)dev;
    if (!ptr)
        return;
    if (s->numa_node >= 0)
        numa_free(ptr, size ? size : 1);
    else
        free(ptr);
}

static void cpu_shutdown(void *ctx)
{
    cpu_state *s = ctx;
    cpu_pool_destroy(s->pool);
    if (s->topo)
        hwloc_topology_destroy(s->topo);
    free(s);
}

/* Threads wanted: the argument, else LOOM_CPU_THREADS, else one per core. */
static unsigned pick_threads(unsigned threads, int n_cores, char *err, size_t err_len, int *bad)
{
    *bad = 0;
    if (threads)
        return threads;
    const char *env = getenv("LOOM_CPU_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end || v < 1 || v > 4096) {
            snprintf(err, err_len, "LOOM_CPU_THREADS='%s' is not a thread count (1 to 4096)",
                     env);
            *bad = 1;
            return 0;
        }
        return (unsigned)v;
    }
    return n_cores > 0 ? (unsigned)n_cores : 1;
}

static void describe(cpu_state *s, unsigned threads)
{
    loom_device_info *info = &s->info;
    info->abi_version = LOOM_ABI_VERSION;
    info->struct_size = sizeof *info;
    info->kind = LOOM_DEVICE_CPU;
    int cores = hwloc_get_nbobjs_by_type(s->topo, HWLOC_OBJ_CORE);
    info->compute_units = cores > 0 ? (uint32_t)cores : 1;
    info->threads = threads;
    hwloc_obj_t root = hwloc_get_root_obj(s->topo);
    info->memory_bytes = root ? root->total_memory : 0;
    info->host_visible = 1;
    info->numa_node = s->numa_node;
    const char *model = NULL;
    hwloc_obj_t pkg = hwloc_get_obj_by_type(s->topo, HWLOC_OBJ_PACKAGE, 0);
    if (pkg)
        model = hwloc_obj_get_info_by_name(pkg, "CPUModel");
    if (!model && root)
        model = hwloc_obj_get_info_by_name(root, "CPUModel");
    snprintf(info->name, sizeof info->name, "%s (%u cores)", model ? model : "CPU",
             info->compute_units);
}

/* Every family fills the entries of its ops (cpu_kernels.h lists them, file by file). */
static void cpu_register_all(cpu_op_entry *ops)
{
    cpu_register_elementwise(ops);
    cpu_register_compare_logic_round(ops);
    cpu_register_activations(ops);
    cpu_register_normalization(ops);
    cpu_register_reductions(ops);
    cpu_register_linalg(ops);
    cpu_register_conv(ops);
    cpu_register_pooling(ops);
    cpu_register_layout(ops);
    cpu_register_indexing(ops);
    cpu_register_resize(ops);
    cpu_register_recurrent(ops);
    cpu_register_generators(ops);
    cpu_register_dropout(ops);
    cpu_register_loss(ops);
    cpu_register_sampling(ops);
    cpu_register_math(ops);
    cpu_register_tensor(ops);
    cpu_register_quantization(ops);
    cpu_register_int8_gemm(ops);
    cpu_register_moe(ops);
    cpu_register_fused_gemm(ops);
}

const loom_backend *loom_cpu_backend_create(unsigned threads, char *err, size_t err_len)
{
    cpu_state *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "out of memory starting the CPU backend");
        return NULL;
    }
    if (hwloc_topology_init(&s->topo) != 0 || hwloc_topology_load(s->topo) != 0) {
        snprintf(err, err_len, "hwloc cannot read this machine's topology");
        if (s->topo)
            hwloc_topology_destroy(s->topo);
        free(s);
        return NULL;
    }
    int bad;
    unsigned n = pick_threads(threads, hwloc_get_nbobjs_by_type(s->topo, HWLOC_OBJ_CORE), err,
                              err_len, &bad);
    if (bad) {
        hwloc_topology_destroy(s->topo);
        free(s);
        return NULL;
    }
    /* The pool's NUMA node: that of core 0, where the calling thread usually runs and the
     * first worker is pinned next to. */
    s->numa_node = -1;
    if (numa_available() >= 0) {
        hwloc_obj_t core = hwloc_get_obj_by_type(s->topo, HWLOC_OBJ_CORE, 0);
        hwloc_nodeset_t ns = hwloc_bitmap_alloc();
        if (core && ns && hwloc_cpuset_to_nodeset(s->topo, core->cpuset, ns) == 0) {
            int node = hwloc_bitmap_first(ns);
            s->numa_node = node >= 0 ? node : 0;
        }
        hwloc_bitmap_free(ns);
    }
    /* Parallelism comes from the pool: OpenBLAS runs single-threaded inside each pool thread,
     * so the two never fight over the cores. */
    openblas_set_num_threads(1);
    s->pool = cpu_pool_create(n, s->topo, err, err_len);
    if (!s->pool) {
        hwloc_topology_destroy(s->topo);
        free(s);
        return NULL;
    }
    cpu_register_all(s->ops);
    describe(s, n);

    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "cpu";
    t->ctx = s;
    t->device_count = cpu_device_count;
    t->device_info = cpu_device_info;
    t->supports = cpu_supports;
    t->prepare = cpu_prepare;
    t->execute = cpu_execute;
    t->release_kernel = cpu_release_kernel;
    t->alloc = cpu_alloc;
    t->free = cpu_free;
    t->shutdown = cpu_shutdown;
    t->claim = cpu_claim;
    t->prepare_subgraph = cpu_prepare_subgraph;
    return t;
}

loom_status loom_cpu_eval_node(const loom_node_desc *node, const void *const *inputs,
                               void *const *outputs, char *err, size_t err_len)
{
    /* A kernel table of our own: cheap to fill, and no state shared with any runtime. */
    cpu_state s;
    memset(&s, 0, sizeof s);
    cpu_register_all(s.ops);
    void *kernel = NULL;
    size_t scratch_bytes = 0;
    loom_status st = cpu_prepare(&s, 0, node, &kernel, &scratch_bytes, err, err_len);
    if (st != LOOM_OK)
        return st;
    void *scratch = NULL;
    if (scratch_bytes && posix_memalign(&scratch, 64, scratch_bytes) != 0) {
        kernel_free(kernel);
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory (%zu bytes scratch)",
                        scratch_bytes);
    }
    loom_exec_args args = {sizeof args, inputs, outputs, scratch};
    const cpu_kernel *k = kernel;
    st = k->run(k, &args, NULL, err, err_len);
    free(scratch);
    kernel_free(kernel);
    return st;
}
