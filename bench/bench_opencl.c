/*
 * The OpenCL backend measured through its loom_backend table (as the executor drives it) against
 * the device used directly: GEMM f32 GFLOP/s through the backend vs CLBlastSgemm on a queue of
 * our own; elementwise (same shape, odd count, broadcast), reduction, Softmax and LayerNorm
 * bandwidth against a measured clEnqueueCopyBuffer bandwidth; and the dispatch cost of a tiny
 * kernel (synchronous execute, and submit + completion callback).
 *
 * Usage: bench_opencl [N...]   square GEMM sizes (default 256 512 1024; 0 skips GEMMs);
 * prints figures only.
 */
#define CL_TARGET_OPENCL_VERSION 120
#include "bench_common.h"

#include "../backends/opencl/ocl_backend.h"
#include "../graph/graph_internal.h"

#include <CL/cl.h>
#include <clblast_c.h>
#include <stdint.h>
#include <string.h>

#define RUNS 5

static const loom_backend *g_be;

static void fill(float *p, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[i] = (float)(s >> 40) * (2.0f / 16777216.0f) - 1.0f;
    }
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_opencl: %s: %s\n", what, msg);
    exit(1);
}

/* A one-node graph's node 0 prepared on opencl:0. */
static void *prepare(loom_graph *g, size_t *scratch)
{
    if (loom_graph_check(g) != LOOM_OK)
        die("graph", loom_last_error());
    loom_tensor_desc in_d[8], out_d[8];
    const void *in_c[8];
    loom_node_desc desc;
    graph_node_desc(g, 0, &desc, in_d, out_d, in_c);
    void *k = NULL;
    char err[512];
    if (g_be->prepare(g_be->ctx, 0, &desc, &k, scratch, err, sizeof err) != LOOM_OK)
        die("prepare", err);
    return k;
}

static void *dev_alloc(size_t bytes, const void *init)
{
    void *p = g_be->alloc(g_be->ctx, 0, bytes, 64);
    char err[256];
    if (!p)
        die("alloc", "out of device memory");
    if (init && g_be->upload(g_be->ctx, 0, p, init, bytes, err, sizeof err) != LOOM_OK)
        die("upload", err);
    return p;
}

static double time_execute(void *k, const loom_exec_args *args, int runs)
{
    char err[512];
    double t[64];
    if (g_be->execute(g_be->ctx, 0, k, args, err, sizeof err) != LOOM_OK) /* warm-up */
        die("execute", err);
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now();
        if (g_be->execute(g_be->ctx, 0, k, args, err, sizeof err) != LOOM_OK)
            die("execute", err);
        t[r] = bench_now() - t0;
    }
    return bench_median(t, (size_t)runs);
}

/* The device used directly: the first device of the first platform, as the backend's opencl:0. */
typedef struct direct {
    cl_context ctx;
    cl_command_queue q;
} direct;

static direct direct_open(void)
{
    direct d = {0};
    cl_platform_id p;
    cl_device_id dev;
    cl_int e;
    if (clGetPlatformIDs(1, &p, NULL) != CL_SUCCESS ||
        clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 1, &dev, NULL) != CL_SUCCESS)
        die("OpenCL", "no device");
    d.ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
    d.q = d.ctx ? clCreateCommandQueue(d.ctx, dev, 0, &e) : NULL;
    if (!d.q)
        die("OpenCL", "cannot create a queue");
    return d;
}

static double clblast_gemm(direct *d, int n, const float *a, const float *b)
{
    size_t bytes = (size_t)n * n * sizeof(float);
    cl_int e;
    cl_mem ma = clCreateBuffer(d->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes, (void *)a, &e);
    cl_mem mb = clCreateBuffer(d->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes, (void *)b, &e);
    cl_mem mc = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
    double t[RUNS + 1];
    for (int r = 0; r <= RUNS; r++) {
        double t0 = bench_now();
        if (CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo,
                         (size_t)n, (size_t)n, (size_t)n, 1.0f, ma, 0, (size_t)n, mb, 0,
                         (size_t)n, 0.0f, mc, 0, (size_t)n, &d->q, NULL) != CLBlastSuccess)
            die("CLBlastSgemm", "failed");
        clFinish(d->q);
        t[r] = bench_now() - t0;
    }
    clReleaseMemObject(ma);
    clReleaseMemObject(mb);
    clReleaseMemObject(mc);
    return bench_median(t + 1, RUNS);
}

static void bench_gemm(direct *d, int n)
{
    size_t cnt = (size_t)n * n;
    float *a = malloc(cnt * sizeof *a), *b = malloc(cnt * sizeof *b);
    if (!a || !b)
        die("gemm", "out of memory");
    fill(a, cnt, 1);
    fill(b, cnt, 2);
    loom_graph *g = loom_graph_create("gemm");
    int64_t dims[2] = {n, n};
    loom_output(g, loom_matmul(g, loom_input(g, "a", LOOM_DTYPE_F32, 2, dims),
                               loom_input(g, "b", LOOM_DTYPE_F32, 2, dims)), "c");
    size_t scratch;
    void *k = prepare(g, &scratch);
    void *pa = dev_alloc(cnt * 4, a), *pb = dev_alloc(cnt * 4, b), *pc = dev_alloc(cnt * 4, NULL);
    const void *ins[2] = {pa, pb};
    void *outs[1] = {pc};
    loom_exec_args args = {sizeof args, ins, outs, NULL};
    double tl = time_execute(k, &args, RUNS);
    double tc = clblast_gemm(d, n, a, b);
    double fl = 2.0 * n * (double)n * n;
    printf("gemm f32 %5d: backend %8.2f GFLOP/s   CLBlast direct %8.2f GFLOP/s   ratio %.2f\n",
           n, fl / tl * 1e-9, fl / tc * 1e-9, tc / tl);
    g_be->free(g_be->ctx, 0, pa, cnt * 4);
    g_be->free(g_be->ctx, 0, pb, cnt * 4);
    g_be->free(g_be->ctx, 0, pc, cnt * 4);
    g_be->release_kernel(g_be->ctx, k);
    loom_graph_destroy(g);
    free(a);
    free(b);
}

/* The device's copy bandwidth, clEnqueueCopyBuffer of 32 MiB on our own queue (bytes read plus
 * bytes written per second): the yardstick for the kernels below. */
static double copy_bandwidth(direct *d)
{
    const size_t bytes = (size_t)32 << 20;
    cl_int e;
    cl_mem src = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
    cl_mem dst = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
    if (!src || !dst)
        die("clCreateBuffer", "failed");
    double t[RUNS + 1];
    for (int r = 0; r <= RUNS; r++) {
        double t0 = bench_now();
        clEnqueueCopyBuffer(d->q, src, dst, 0, 0, bytes, 0, NULL, NULL);
        clFinish(d->q);
        t[r] = bench_now() - t0;
    }
    clReleaseMemObject(src);
    clReleaseMemObject(dst);
    return 2.0 * (double)bytes / bench_median(t + 1, RUNS) * 1e-9;
}

/* Node 0 of G (a one-node graph) on opencl:0 with seeded inputs: prints the GB/s of the bytes
 * it must move (every input read once, the output written once) and the fraction of COPY_GBS. */
static void bench_node(const char *label, loom_graph *g, double copy_gbs)
{
    size_t scratch = 0;
    void *k = prepare(g, &scratch);
    loom_tensor_desc in_d[8], out_d[8];
    const void *in_c[8];
    loom_node_desc desc;
    graph_node_desc(g, 0, &desc, in_d, out_d, in_c);
    const void *ins[8] = {0};
    void *outs[8] = {0}, *held[16] = {0};
    size_t held_bytes[16] = {0}, n_held = 0;
    double moved = 0;
    for (uint32_t i = 0; i < desc.n_inputs + desc.n_outputs; i++) {
        int is_in = i < desc.n_inputs;
        const loom_tensor_desc *t = is_in ? &desc.inputs[i] : &desc.outputs[i - desc.n_inputs];
        size_t bytes = (size_t)loom_tensor_desc_numel(t) * loom_dtype_size(t->dtype);
        moved += (double)bytes;
        float *host = NULL;
        if (is_in) {
            host = malloc(bytes + 4);
            if (!host)
                die("bench", "out of memory");
            fill(host, bytes / 4, 3 + i);
        }
        void *p = dev_alloc(bytes, host);
        free(host);
        held[n_held] = p;
        held_bytes[n_held++] = bytes;
        if (is_in)
            ins[i] = p;
        else
            outs[i - desc.n_inputs] = p;
    }
    void *sp = scratch ? dev_alloc(scratch, NULL) : NULL;
    loom_exec_args args = {sizeof args, ins, outs, sp};
    double te = time_execute(k, &args, RUNS);
    double gbs = moved / te * 1e-9;
    printf("%-44s %8.2f GB/s  %5.0f%% of copy  (%.1f MiB moved, %.2f ms)\n", label, gbs,
           100.0 * gbs / copy_gbs, moved / 1048576.0, te * 1e3);
    if (sp)
        g_be->free(g_be->ctx, 0, sp, scratch);
    for (size_t i = 0; i < n_held; i++)
        g_be->free(g_be->ctx, 0, held[i], held_bytes[i]);
    g_be->release_kernel(g_be->ctx, k);
    loom_graph_destroy(g);
}

/* Elementwise, reduction and row kernels against the copy bandwidth: 32 MiB tensors. */
static void bench_bandwidth(direct *d)
{
    double copy = copy_bandwidth(d);
    printf("clEnqueueCopyBuffer 32 MiB: %.2f GB/s (read + write)\n", copy);
    const int64_t n = (int64_t)8 << 20, rows = 8192, cols = 1024;
    int64_t flat[1] = {n}, mat[2] = {rows, cols}, row[1] = {cols}, odd[1] = {n - 3};
    int64_t last[1] = {1};
    loom_graph *g = loom_graph_create("add");
    loom_output(g, loom_add(g, loom_input(g, "a", LOOM_DTYPE_F32, 1, flat),
                            loom_input(g, "b", LOOM_DTYPE_F32, 1, flat)), "c");
    bench_node("Add f32 [8M] same shape", g, copy);
    g = loom_graph_create("add_odd");
    loom_output(g, loom_add(g, loom_input(g, "a", LOOM_DTYPE_F32, 1, odd),
                            loom_input(g, "b", LOOM_DTYPE_F32, 1, odd)), "c");
    bench_node("Add f32 [8M-3] same shape", g, copy);
    g = loom_graph_create("add_bcast");
    loom_output(g, loom_add(g, loom_input(g, "a", LOOM_DTYPE_F32, 2, mat),
                            loom_input(g, "b", LOOM_DTYPE_F32, 1, row)), "c");
    bench_node("Add f32 [8192,1024] + [1024] broadcast", g, copy);
    g = loom_graph_create("relu");
    loom_output(g, loom_relu(g, loom_input(g, "x", LOOM_DTYPE_F32, 1, flat)), "y");
    bench_node("Relu f32 [8M]", g, copy);
    g = loom_graph_create("sigmoid");
    loom_output(g, loom_sigmoid(g, loom_input(g, "x", LOOM_DTYPE_F32, 1, flat)), "y");
    bench_node("Sigmoid f32 [8M]", g, copy);
    g = loom_graph_create("rsum");
    loom_output(g, loom_reduce_sum(g, loom_input(g, "x", LOOM_DTYPE_F32, 2, mat), 1, last, 0),
                "y");
    bench_node("ReduceSum f32 [8192,1024] axis 1", g, copy);
    g = loom_graph_create("rsum_all");
    loom_output(g, loom_reduce_sum(g, loom_input(g, "x", LOOM_DTYPE_F32, 1, flat), 0, NULL, 0),
                "y");
    bench_node("ReduceSum f32 [8M] all", g, copy);
    g = loom_graph_create("softmax");
    loom_output(g, loom_softmax(g, loom_input(g, "x", LOOM_DTYPE_F32, 2, mat), -1), "y");
    bench_node("Softmax f32 [8192,1024] axis -1", g, copy);
    g = loom_graph_create("layernorm");
    loom_output(g, loom_layer_norm(g, loom_input(g, "x", LOOM_DTYPE_F32, 2, mat),
                                   loom_input(g, "s", LOOM_DTYPE_F32, 1, row),
                                   loom_input(g, "b", LOOM_DTYPE_F32, 1, row), -1, 1e-5f),
                "y");
    bench_node("LayerNorm f32 [8192,1024] axis -1", g, copy);
}

static void on_done(void *token, loom_status st, const char *msg)
{
    (void)st;
    (void)msg;
    __atomic_store_n((int *)token, 1, __ATOMIC_RELEASE);
}

static void bench_dispatch(void)
{
    loom_graph *g = loom_graph_create("tiny");
    int64_t dims[1] = {16};
    loom_output(g, loom_relu(g, loom_input(g, "x", LOOM_DTYPE_F32, 1, dims)), "y");
    size_t scratch;
    void *k = prepare(g, &scratch);
    void *px = dev_alloc(64, NULL), *py = dev_alloc(64, NULL);
    const void *ins[1] = {px};
    void *outs[1] = {py};
    loom_exec_args args = {sizeof args, ins, outs, NULL};
    enum { N = 2000 };
    char err[256];
    time_execute(k, &args, 3);
    double t0 = bench_now();
    for (int i = 0; i < N; i++)
        if (g_be->execute(g_be->ctx, 0, k, &args, err, sizeof err) != LOOM_OK)
            die("execute", err);
    double ts = (bench_now() - t0) / N;
    t0 = bench_now();
    for (int i = 0; i < N; i++) {
        int flag = 0;
        if (g_be->submit(g_be->ctx, 0, k, &args, on_done, &flag) != LOOM_OK)
            die("submit", "failed");
        while (!__atomic_load_n(&flag, __ATOMIC_ACQUIRE))
            ;
    }
    double ta = (bench_now() - t0) / N;
    printf("dispatch of a 16-element Relu: execute %.1f us, submit+callback %.1f us\n",
           ts * 1e6, ta * 1e6);
    g_be->free(g_be->ctx, 0, px, 64);
    g_be->free(g_be->ctx, 0, py, 64);
    g_be->release_kernel(g_be->ctx, k);
    loom_graph_destroy(g);
}

int main(int argc, char **argv)
{
    char err[256] = "";
    g_be = loom_opencl_backend_create(NULL, err, sizeof err);
    if (!g_be) {
        printf("bench_opencl: no OpenCL device%s%s: nothing to measure\n", err[0] ? ": " : "", err);
        return 0;
    }
    loom_device_info info = {.abi_version = LOOM_ABI_VERSION, .struct_size = sizeof info};
    g_be->device_info(g_be->ctx, 0, &info);
    printf("opencl:0: %s (%s), %u compute units\n", info.name, info.driver, info.compute_units);
    direct d = direct_open();
    int sizes[16] = {256, 512, 1024}, n_sizes = 3;
    if (argc > 1) {
        n_sizes = 0;
        for (int i = 1; i < argc && n_sizes < 16; i++) {
            int v = atoi(argv[i]);
            if (v == 0 && argc == 2)
                break; /* "0": no GEMM sizes */
            if (v < 1 || v > 16384) {
                fprintf(stderr, "bench_opencl: size '%s' is not in 1..16384\n", argv[i]);
                return 2;
            }
            sizes[n_sizes++] = v;
        }
    }
    for (int i = 0; i < n_sizes; i++)
        bench_gemm(&d, sizes[i]);
    bench_bandwidth(&d);
    bench_dispatch();
    clReleaseCommandQueue(d.q);
    clReleaseContext(d.ctx);
    g_be->shutdown(g_be->ctx);
    return 0;
}
