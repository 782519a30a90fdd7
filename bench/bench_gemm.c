/*
 * GEMM through Loom against a direct cblas_sgemm: C = A·B in f32 for square n = 512, 1024, 2048,
 * GFLOP/s of each and their ratio. Loom runs a one-node MatMul graph (A and B are both inputs,
 * so neither side gets to pre-pack a constant).
 *
 * Threads: loom_runtime_create sets OpenBLAS to one thread, because the CPU backend parallelises
 * with its own pool. The OpenBLAS thread count is process-wide, so the direct calls are measured
 * apart, after every Loom run, with openblas_set_num_threads(cores) set just before them; the two
 * are never interleaved.
 *
 * Usage: bench_gemm [RUNS]   (timed runs per size, default 7; 2 warm-up runs come first)
 */
#include "bench_common.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define WARMUP_RUNS 2
#define N_SIZES 3
static const int sizes[N_SIZES] = {512, 1024, 2048};

typedef struct case_data {
    int n;
    float *a, *b, *c_loom, *c_blas;
    double loom_s, blas_s; /* median seconds of one GEMM */
} case_data;

static float *alloc_matrix(int n)
{
    size_t bytes = (size_t)n * (size_t)n * sizeof(float);
    float *p = aligned_alloc(64, bytes); /* bytes is a multiple of 64 for these sizes */
    if (!p) {
        fprintf(stderr, "bench_gemm: out of memory\n");
        exit(1);
    }
    memset(p, 0, bytes);
    return p;
}

/* Seeded uniform numbers in [-1, 1): xorshift is plenty for benchmark data. */
static void fill(float *p, size_t count, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < count; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[i] = (float)(s >> 40) * (2.0f / 16777216.0f) - 1.0f;
    }
}

static double gflops(int n, double seconds)
{
    return 2.0 * (double)n * n * n / seconds * 1e-9;
}

static void bench_loom(loom_runtime *rt, case_data *cd, int runs, double *times)
{
    const int64_t dims[2] = {cd->n, cd->n};
    loom_graph *g = loom_graph_create("gemm");
    if (!g) {
        fprintf(stderr, "bench_gemm: out of memory\n");
        exit(1);
    }
    loom_value a = loom_input(g, "A", LOOM_DTYPE_F32, 2, dims);
    loom_value b = loom_input(g, "B", LOOM_DTYPE_F32, 2, dims);
    (void)loom_output(g, loom_matmul(g, a, b), "C"); /* errors surface in the check */
    bench_check(loom_graph_check(g), "loom_graph_check");
    loom_plan_options popts = {.struct_size = sizeof popts, .device = "cpu"};
    loom_plan *plan = NULL;
    bench_check(loom_plan_create(rt, g, &popts, &plan), "loom_plan_create");
    loom_graph_destroy(g);

    loom_tensor *ta = NULL, *tb = NULL, *tc = NULL;
    bench_check(loom_tensor_wrap(LOOM_DTYPE_F32, 2, dims, cd->a, &ta), "loom_tensor_wrap");
    bench_check(loom_tensor_wrap(LOOM_DTYPE_F32, 2, dims, cd->b, &tb), "loom_tensor_wrap");
    bench_check(loom_tensor_wrap(LOOM_DTYPE_F32, 2, dims, cd->c_loom, &tc), "loom_tensor_wrap");
    const loom_tensor *inputs[2] = {ta, tb};
    loom_tensor *outputs[1] = {tc};
    for (int r = 0; r < WARMUP_RUNS + runs; r++) {
        double t0 = bench_now();
        bench_check(loom_plan_run(plan, inputs, 2, outputs, 1, NULL), "loom_plan_run");
        double t1 = bench_now();
        if (r >= WARMUP_RUNS)
            times[r - WARMUP_RUNS] = t1 - t0;
    }
    cd->loom_s = bench_median(times, (size_t)runs);
    loom_tensor_destroy(ta);
    loom_tensor_destroy(tb);
    loom_tensor_destroy(tc);
    loom_plan_destroy(plan);
}

static void bench_blas(case_data *cd, int runs, double *times)
{
    const int n = cd->n;
    for (int r = 0; r < WARMUP_RUNS + runs; r++) {
        double t0 = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, cd->a, n, cd->b, n,
                    0.0f, cd->c_blas, n);
        double t1 = bench_now();
        if (r >= WARMUP_RUNS)
            times[r - WARMUP_RUNS] = t1 - t0;
    }
    cd->blas_s = bench_median(times, (size_t)runs);
}

/* Largest |loom - blas| relative to the largest |blas|: both sum in different orders, so only
 * rounding may differ. */
static double max_rel_diff(const case_data *cd)
{
    size_t count = (size_t)cd->n * (size_t)cd->n;
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)cd->c_loom[i] - (double)cd->c_blas[i]);
        double m = fabs((double)cd->c_blas[i]);
        if (d > diff || d != d)
            diff = d;
        if (m > scale)
            scale = m;
    }
    return scale > 0.0 ? diff / scale : diff;
}

int main(int argc, char **argv)
{
    int runs = 7;
    if (argc > 1) {
        char *end;
        long v = strtol(argv[1], &end, 10);
        if (*end || v < 1 || v > 1000) {
            fprintf(stderr, "usage: bench_gemm [RUNS]\n");
            return 2;
        }
        runs = (int)v;
    }
    const int cores = bench_cores();
    double *times = malloc((size_t)runs * sizeof *times);
    case_data cases[N_SIZES];
    if (!times) {
        fprintf(stderr, "bench_gemm: out of memory\n");
        return 1;
    }
    for (int i = 0; i < N_SIZES; i++) {
        case_data *cd = &cases[i];
        cd->n = sizes[i];
        cd->a = alloc_matrix(cd->n);
        cd->b = alloc_matrix(cd->n);
        cd->c_loom = alloc_matrix(cd->n);
        cd->c_blas = alloc_matrix(cd->n);
        fill(cd->a, (size_t)cd->n * cd->n, 2 * (uint64_t)i + 1);
        fill(cd->b, (size_t)cd->n * cd->n, 2 * (uint64_t)i + 2);
    }

    /* Phase 1: Loom, with its own pool on every core. */
    loom_runtime_options ropts = {.struct_size = sizeof ropts, .cpu_threads = 0};
    loom_runtime *rt = NULL;
    bench_check(loom_runtime_create(&ropts, &rt), "loom_runtime_create");
    int blas_threads_in_loom = openblas_get_num_threads();
    loom_device_info info = {.abi_version = LOOM_ABI_VERSION, .struct_size = sizeof info};
    char dev_id[64] = "";
    bench_check(loom_runtime_device(rt, 0, dev_id, sizeof dev_id, &info), "loom_runtime_device");
    for (int i = 0; i < N_SIZES; i++)
        bench_loom(rt, &cases[i], runs, times);
    loom_runtime_destroy(rt);

    /* Phase 2: OpenBLAS alone, on every core. */
    openblas_set_num_threads(cores);
    int blas_threads_direct = openblas_get_num_threads();
    for (int i = 0; i < N_SIZES; i++)
        bench_blas(&cases[i], runs, times);

    printf("GEMM C = A*B, f32, n x n, %d cores; median of %d runs after %d warm-up runs\n", cores,
           runs, WARMUP_RUNS);
    printf("Loom:  one-node MatMul graph on %s (%s, %u threads); OpenBLAS threads inside Loom: "
           "%d\n",
           dev_id, info.name, info.threads, blas_threads_in_loom);
    printf("cblas: direct cblas_sgemm, openblas_set_num_threads(%d) -> %d threads, measured after "
           "all of Loom's runs\n",
           cores, blas_threads_direct);
    printf("OpenBLAS: %s (core %s)\n\n", openblas_get_config(), openblas_get_corename());
    printf("%6s %10s %12s %10s %12s %11s %13s\n", "n", "Loom ms", "Loom GF/s", "cblas ms",
           "cblas GF/s", "Loom/cblas", "max rel diff");
    int bad = 0;
    for (int i = 0; i < N_SIZES; i++) {
        const case_data *cd = &cases[i];
        double diff = max_rel_diff(cd);
        printf("%6d %10.2f %12.1f %10.2f %12.1f %11.2f %13.2e\n", cd->n, cd->loom_s * 1e3,
               gflops(cd->n, cd->loom_s), cd->blas_s * 1e3, gflops(cd->n, cd->blas_s),
               cd->blas_s / cd->loom_s, diff);
        /* A wrong product is a failure; a slow one is only a figure. */
        if (!(diff < 1e-4))
            bad = 1;
    }
    if (bad)
        fprintf(stderr, "bench_gemm: Loom's product differs from cblas_sgemm's\n");

    for (int i = 0; i < N_SIZES; i++) {
        free(cases[i].a);
        free(cases[i].b);
        free(cases[i].c_loom);
        free(cases[i].c_blas);
    }
    free(times);
    return bad;
}
