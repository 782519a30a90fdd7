/*
 * The OpenCL backend measured through its loom_backend table (as the executor drives it) against
 * the device used directly: GEMM f32 GFLOP/s through the backend vs CLBlastSgemm on a queue of
 * our own; elementwise Add bandwidth vs a measured clEnqueueCopyBuffer bandwidth; and the
 * dispatch cost of a tiny kernel (synchronous execute, and submit + completion callback).
 *
 * Usage: bench_opencl [N...]   square GEMM sizes (default 256 512 1024); prints figures only.
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
    lg_node_desc(g, 0, &desc, in_d, out_d, in_c);
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

static void bench_bandwidth(direct *d)
{
    const size_t n = (size_t)8 << 20; /* 8M floats: 32 MiB per tensor */
    loom_graph *g = loom_graph_create("add");
    int64_t dims[1] = {(int64_t)n};
    loom_output(g, loom_add(g, loom_input(g, "a", LOOM_DTYPE_F32, 1, dims),
                            loom_input(g, "b", LOOM_DTYPE_F32, 1, dims)), "c");
    size_t scratch;
    void *k = prepare(g, &scratch);
    void *pa = dev_alloc(n * 4, NULL), *pb = dev_alloc(n * 4, NULL), *pc = dev_alloc(n * 4, NULL);
    const void *ins[2] = {pa, pb};
    void *outs[1] = {pc};
    loom_exec_args args = {sizeof args, ins, outs, NULL};
    double te = time_execute(k, &args, RUNS);
    cl_int e;
    cl_mem src = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, n * 4, NULL, &e);
    cl_mem dst = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, n * 4, NULL, &e);
    double t[RUNS + 1];
    for (int r = 0; r <= RUNS; r++) {
        double t0 = bench_now();
        clEnqueueCopyBuffer(d->q, src, dst, 0, 0, n * 4, 0, NULL, NULL);
        clFinish(d->q);
        t[r] = bench_now() - t0;
    }
    double tc = bench_median(t + 1, RUNS);
    printf("elementwise Add f32 [%zu]: %6.2f GB/s (3 x 32 MiB moved)   clEnqueueCopyBuffer: "
           "%6.2f GB/s (2 x 32 MiB)\n", n, 3.0 * n * 4 / te * 1e-9, 2.0 * n * 4 / tc * 1e-9);
    clReleaseMemObject(src);
    clReleaseMemObject(dst);
    g_be->free(g_be->ctx, 0, pa, n * 4);
    g_be->free(g_be->ctx, 0, pb, n * 4);
    g_be->free(g_be->ctx, 0, pc, n * 4);
    g_be->release_kernel(g_be->ctx, k);
    loom_graph_destroy(g);
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
