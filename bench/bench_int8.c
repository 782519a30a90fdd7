/*
 * Int8 GEMM for dynamic quantisation, side by side in one run: Loom's MatMulInt8Dynamic node
 * (row quantisation + VNNI GEMM + dequantising epilogue, through a plan), oneDNN's u8 x s8 -> s32
 * matmul primitive on the same shapes (the GEMM alone, weights in the layout oneDNN picks,
 * reordered once, outside the timing), and Loom's float32 MatMul for scale. The issue asked
 * which of oneDNN and a hand-written kernel to keep: this prints both. "+GELU" is Loom's node
 * with a bias and the GELU the int8-dynamic pass fuses into it (BERT's FFN).
 *
 *   bench_int8 [REPEATS]     shapes of BERT-base at sequence 128, and of a BERT-tiny batch
 *
 * Threads: Loom's CPU backend uses LOOM_CPU_THREADS (default: every core); oneDNN is given the
 * same count through OMP_NUM_THREADS when it was built with OpenMP. Prints figures, asserts
 * nothing.
 */
#include "bench_common.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <dnnl.h>

#define DNNL_OK(call)                                                                          \
    do {                                                                                       \
        dnnl_status_t s_ = (call);                                                             \
        if (s_ != dnnl_success) {                                                              \
            fprintf(stderr, "bench_int8: %s failed (%d)\n", #call, (int)s_);                   \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static void die(const char *what)
{
    fprintf(stderr, "bench_int8: %s: %s\n", what, loom_last_error());
    exit(1);
}

static uint64_t rng = 42;
static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / (float)0x800000 - 1.0f;
}

/* Median ms of REPEATS runs of a one-node plan over X [m, k] -> Y [m, n]. */
static double time_plan(loom_runtime *rt, loom_graph *g, int64_t m, int64_t k, int64_t n,
                        int repeats)
{
    if (loom_graph_check(g) != LOOM_OK)
        die("graph");
    loom_plan *p;
    if (loom_plan_create(rt, g, NULL, &p) != LOOM_OK)
        die("plan");
    int64_t xd[2] = {m, k}, yd[2] = {m, n};
    loom_tensor *x, *y;
    loom_tensor_create(LOOM_DTYPE_F32, 2, xd, &x);
    loom_tensor_create(LOOM_DTYPE_F32, 2, yd, &y);
    float *xs = loom_tensor_data(x);
    for (int64_t i = 0; i < m * k; i++)
        xs[i] = frand();
    double *t = malloc((size_t)repeats * sizeof *t);
    for (int r = -3; r < repeats; r++) {
        double t0 = bench_now();
        if (loom_plan_run(p, (const loom_tensor *const *)&x, 1, &y, 1, NULL) != LOOM_OK)
            die("run");
        if (r >= 0)
            t[r] = (bench_now() - t0) * 1e3;
    }
    double med = bench_median(t, (size_t)repeats);
    free(t);
    loom_tensor_destroy(x);
    loom_tensor_destroy(y);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    return med;
}

/* Loom's node; with ACT (an activation name) a bias and that activation too. */
static double loom_int8(loom_runtime *rt, int64_t m, int64_t k, int64_t n, const char *act,
                        int repeats)
{
    int8_t *b = malloc((size_t)(k * n));
    float *s = malloc((size_t)n * sizeof *s);
    for (int64_t i = 0; i < k * n; i++)
        b[i] = (int8_t)(int)(frand() * 127);
    for (int64_t j = 0; j < n; j++)
        s[j] = 0.01f;
    loom_graph *g = loom_graph_create("int8");
    int64_t xd[2] = {m, k}, bd[2] = {k, n}, sd[1] = {n};
    loom_value ins[4] = {loom_input(g, "x", LOOM_DTYPE_F32, 2, xd),
                         loom_constant(g, "b", LOOM_DTYPE_I8, 2, bd, b),
                         loom_constant(g, "s", LOOM_DTYPE_F32, 1, sd, s),
                         act ? loom_constant(g, "bias", LOOM_DTYPE_F32, 1, sd, s) : LOOM_NO_VALUE};
    loom_attr a = loom_attr_string("activation", act ? act : "");
    loom_value y;
    if (loom_graph_op(g, "MatMulInt8Dynamic", "q", ins, act ? 4 : 3, act ? &a : NULL, act ? 1 : 0,
                      &y, 1) != LOOM_OK)
        die("int8 node");
    loom_output(g, y, "y");
    free(b);
    free(s);
    return time_plan(rt, g, m, k, n, repeats);
}

static double loom_f32(loom_runtime *rt, int64_t m, int64_t k, int64_t n, int repeats)
{
    float *w = malloc((size_t)(k * n) * sizeof *w);
    for (int64_t i = 0; i < k * n; i++)
        w[i] = frand();
    loom_graph *g = loom_graph_create("f32");
    int64_t xd[2] = {m, k}, wd[2] = {k, n};
    loom_value ins[2] = {loom_input(g, "x", LOOM_DTYPE_F32, 2, xd),
                         loom_constant(g, "w", LOOM_DTYPE_F32, 2, wd, w)};
    loom_value y;
    loom_graph_op(g, "MatMul", "mm", ins, 2, NULL, 0, &y, 1);
    loom_output(g, y, "y");
    free(w);
    return time_plan(rt, g, m, k, n, repeats);
}

static double onednn_u8s8(dnnl_engine_t eng, dnnl_stream_t stream, int64_t m, int64_t k,
                          int64_t n, int repeats)
{
    dnnl_memory_desc_t a_md, b_md, c_md, b_any;
    dnnl_dims_t ad = {m, k}, bd = {k, n}, cd = {m, n};
    DNNL_OK(dnnl_memory_desc_init_by_tag(&a_md, 2, ad, dnnl_u8, dnnl_ab));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&b_md, 2, bd, dnnl_s8, dnnl_ab));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&b_any, 2, bd, dnnl_s8, dnnl_format_tag_any));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&c_md, 2, cd, dnnl_s32, dnnl_ab));
    dnnl_matmul_desc_t desc;
    DNNL_OK(dnnl_matmul_desc_init(&desc, &a_md, &b_any, NULL, &c_md));
    dnnl_primitive_desc_t pd;
    DNNL_OK(dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL));
    const dnnl_memory_desc_t *b_opt = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_t mm;
    DNNL_OK(dnnl_primitive_create(&mm, pd));
    dnnl_memory_t a, b_plain, b, c;
    DNNL_OK(dnnl_memory_create(&a, &a_md, eng, DNNL_MEMORY_ALLOCATE));
    DNNL_OK(dnnl_memory_create(&b_plain, &b_md, eng, DNNL_MEMORY_ALLOCATE));
    DNNL_OK(dnnl_memory_create(&b, b_opt, eng, DNNL_MEMORY_ALLOCATE));
    DNNL_OK(dnnl_memory_create(&c, &c_md, eng, DNNL_MEMORY_ALLOCATE));
    uint8_t *ap;
    int8_t *bp;
    DNNL_OK(dnnl_memory_get_data_handle(a, (void **)&ap));
    DNNL_OK(dnnl_memory_get_data_handle(b_plain, (void **)&bp));
    for (int64_t i = 0; i < m * k; i++)
        ap[i] = (uint8_t)(int)(128 + frand() * 127);
    for (int64_t i = 0; i < k * n; i++)
        bp[i] = (int8_t)(int)(frand() * 127);
    /* Weights into oneDNN's preferred layout once, as an inference engine would at load. */
    dnnl_primitive_desc_t rpd;
    DNNL_OK(dnnl_reorder_primitive_desc_create(&rpd, &b_md, eng, b_opt, eng, NULL));
    dnnl_primitive_t reorder;
    DNNL_OK(dnnl_primitive_create(&reorder, rpd));
    dnnl_exec_arg_t rargs[2] = {{DNNL_ARG_FROM, b_plain}, {DNNL_ARG_TO, b}};
    DNNL_OK(dnnl_primitive_execute(reorder, stream, 2, rargs));
    DNNL_OK(dnnl_stream_wait(stream));
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
    double *t = malloc((size_t)repeats * sizeof *t);
    for (int r = -3; r < repeats; r++) {
        double t0 = bench_now();
        DNNL_OK(dnnl_primitive_execute(mm, stream, 3, args));
        DNNL_OK(dnnl_stream_wait(stream));
        if (r >= 0)
            t[r] = (bench_now() - t0) * 1e3;
    }
    double med = bench_median(t, (size_t)repeats);
    free(t);
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_primitive_destroy(mm);
    dnnl_primitive_desc_destroy(pd);
    dnnl_memory_destroy(a);
    dnnl_memory_destroy(b_plain);
    dnnl_memory_destroy(b);
    dnnl_memory_destroy(c);
    return med;
}

int main(int argc, char **argv)
{
    int repeats = argc > 1 ? atoi(argv[1]) : 20;
    if (repeats < 1)
        repeats = 20;
    loom_runtime *rt;
    if (loom_runtime_create(NULL, &rt) != LOOM_OK)
        die("runtime");
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    DNNL_OK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    DNNL_OK(dnnl_stream_create(&stream, eng, dnnl_stream_default_flags));
    const dnnl_version_t *v = dnnl_version();
    printf("int8 GEMM, median of %d runs, ms (oneDNN %d.%d.%d, %s runtime; loom threads: "
           "LOOM_CPU_THREADS or all cores)\n",
           repeats, v->major, v->minor, v->patch,
           v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other");
    printf("%6s %6s %6s  %12s %11s %14s %10s  %11s %11s\n", "M", "K", "N", "loom int8", "+GELU",
           "oneDNN u8s8", "loom f32", "int8/oneDNN", "f32/int8");
    const int64_t shapes[][3] = {{128, 768, 768},  {128, 768, 3072}, {128, 3072, 768},
                                 {512, 256, 1024}, {512, 1024, 256}, {8, 768, 768}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int64_t m = shapes[i][0], k = shapes[i][1], n = shapes[i][2];
        double li = loom_int8(rt, m, k, n, NULL, repeats);
        double lg = loom_int8(rt, m, k, n, "Gelu", repeats);
        double od = onednn_u8s8(eng, stream, m, k, n, repeats);
        double lf = loom_f32(rt, m, k, n, repeats);
        printf("%6lld %6lld %6lld  %12.4f %11.4f %14.4f %10.4f  %11.2f %11.2f\n", (long long)m,
               (long long)k, (long long)n, li, lg, od, lf, li / od, lf / li);
    }
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(eng);
    loom_runtime_destroy(rt);
    return 0;
}
