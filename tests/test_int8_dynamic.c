/*
 * Tests of dynamic int8 (issue 14): the MatMulInt8Dynamic kernel against naive loops that apply
 * the same quantisation (odd sizes, several panels, K not a multiple of 4, one row, one column,
 * with and without bias), and the quantize_int8_dynamic pass: MatMul and Gemm (transB, alpha,
 * beta, a bias row) rewritten and close to the float result, tiny inner dimensions and listed
 * nodes left in float, and a graph with nothing to quantize named in the pass's summary; and
 * quantized ONNX models: DynamicQuantizeLinear against ONNX's formula, ONNX Runtime's
 * DynamicQuantizeLinear + MatMulInteger + Cast + Mul + Add chains (one, and two sharing the
 * quantisation) fused into one node each with the same integer arithmetic; and statically
 * quantised "QDQ" models (the fuse_qdq pass): QuantizeLinear/DequantizeLinear around MatMul, Gemm
 * and Conv [+ Relu] [+ QuantizeLinear] fused into MatMulInt8Dynamic / QLinearConv and within the
 * quantisation's tolerance of naive float loops over the dequantised values, and the graphs the
 * pass must leave alone (weights along another axis or not constant, a QuantizeLinear and
 * DequantizeLinear that disagree, a Relu the output clamp cannot absorb) left alone and right.
 * The kernel's portable path is exercised by running this suite with LOOM_CPU_NO_VNNI=1 too.
 */
#include <loom/loom.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static loom_runtime *rt;

static int suite_init(void)
{
    return loom_runtime_create(NULL, &rt) == LOOM_OK ? 0 : 1;
}

static int suite_clean(void)
{
    loom_runtime_destroy(rt);
    return 0;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / (float)0x800000 - 1.0f; /* [-1, 1) */
}

/* Run a plan of one input [rows, k] into one output [rows, n]. */
static loom_status run(loom_plan *p, float *x, int64_t rows, int64_t k, float *y, int64_t n)
{
    loom_tensor *in, *out;
    int64_t xd[2] = {rows, k}, yd[2] = {rows, n};
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, xd, x, &in);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, yd, y, &out);
    loom_status st = loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, NULL);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    return st;
}

/* The kernel on M x K x N with int8 weights it is given, against the same arithmetic in naive
 * loops: each row quantised symmetrically to [-127, 127], int32 sums, scales, bias. */
static void check_kernel(int64_t m, int64_t k, int64_t n, int with_bias)
{
    int8_t *b = malloc((size_t)(k * n));
    float *sb = malloc((size_t)n * sizeof *sb), *bias = malloc((size_t)n * sizeof *bias);
    float *x = malloc((size_t)(m * k) * sizeof *x), *y = calloc((size_t)(m * n), sizeof *y);
    for (int64_t i = 0; i < k * n; i++)
        b[i] = (int8_t)(int)(frand() * 127.0f);
    for (int64_t j = 0; j < n; j++) {
        sb[j] = 0.01f + 0.001f * (float)j;
        bias[j] = frand();
    }
    for (int64_t i = 0; i < m * k; i++)
        x[i] = frand() * 3.0f;
    loom_graph *g = loom_graph_create("int8k");
    int64_t xd[2] = {m, k}, bd[2] = {k, n}, sd[1] = {n};
    loom_value ins[4] = {loom_input(g, "x", LOOM_DTYPE_F32, 2, xd),
                         loom_constant(g, "b", LOOM_DTYPE_I8, 2, bd, b),
                         loom_constant(g, "sb", LOOM_DTYPE_F32, 1, sd, sb),
                         with_bias ? loom_constant(g, "bias", LOOM_DTYPE_F32, 1, sd, bias)
                                   : LOOM_NO_VALUE};
    loom_value out;
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "MatMulInt8Dynamic", "q", ins, with_bias ? 4 : 3,
                                        NULL, 0, &out, 1), LOOM_OK);
    loom_output(g, out, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "MatMulInt8Dynamic");
    CU_ASSERT_EQUAL(run(p, x, m, k, y, n), LOOM_OK);
    int bad = 0;
    for (int64_t i = 0; i < m && bad < 5; i++) {
        float amax = 0;
        for (int64_t t = 0; t < k; t++)
            amax = fmaxf(amax, fabsf(x[i * k + t]));
        float sa = amax > 0 ? amax / 127.0f : 1.0f;
        for (int64_t j = 0; j < n && bad < 5; j++) {
            int64_t acc = 0;
            for (int64_t t = 0; t < k; t++) {
                float q = nearbyintf(x[i * k + t] / sa);
                q = fminf(127.0f, fmaxf(-127.0f, q));
                acc += (int64_t)q * b[t * n + j];
            }
            double want = (double)acc * sa * sb[j] + (with_bias ? bias[j] : 0.0);
            double got = y[i * n + j];
            if (fabs(got - want) > 1e-4 * (1.0 + fabs(want))) {
                printf("\n  [%lld,%lld] of %lldx%lldx%lld: %.6f, want %.6f", (long long)i,
                       (long long)j, (long long)m, (long long)k, (long long)n, got, want);
                bad++;
            }
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(b);
    free(sb);
    free(bias);
    free(x);
    free(y);
}

static void test_kernel_matches_naive_quantised_arithmetic(void)
{
    check_kernel(7, 37, 70, 1);   /* two panels, K % 4 = 1, a partial row block */
    check_kernel(4, 64, 64, 0);   /* exactly one tile */
    check_kernel(1, 5, 1, 1);     /* one row, one column */
    check_kernel(33, 130, 200, 1);
    check_kernel(9, 16, 129, 0);
}

/* y = x . W (+ bias), W [k, n] float, planned with int8-dynamic; the result is within the error
 * the quantisation allows of the float product. */
static loom_plan *plan_matmul(int64_t k, int64_t n, const float *w, const char *const *keep,
                              size_t n_keep)
{
    loom_graph *g = loom_graph_create("mm");
    int64_t xd[2] = {8, k}, wd[2] = {k, n};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd);
    loom_value wv = loom_constant(g, "w", LOOM_DTYPE_F32, 2, wd, w);
    loom_value ins[2] = {x, wv}, y;
    loom_graph_op(g, "MatMul", "fc", ins, 2, NULL, 0, &y, 1);
    loom_output(g, y, "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .precision = LOOM_PRECISION_INT8_DYNAMIC,
                           .keep_float = keep, .n_keep_float = n_keep};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    loom_graph_destroy(g); /* the int8 weights live in the plan */
    return p;
}

static const char *stage_summary(const loom_plan *p, const char *name)
{
    for (size_t i = 0; i < loom_plan_pass_count(p); i++) {
        loom_pass_info info = {.struct_size = sizeof info};
        if (loom_plan_pass_info(p, i, &info) == LOOM_OK && strcmp(info.name, name) == 0)
            return info.summary;
    }
    return "";
}

static void test_pass_quantizes_matmul_with_constant_weights(void)
{
    const int64_t k = 96, n = 80;
    float *w = malloc((size_t)(k * n) * sizeof *w), x[8 * 96], y[8 * 80];
    for (int64_t i = 0; i < k * n; i++)
        w[i] = frand() * 0.2f;
    for (int i = 0; i < 8 * 96; i++)
        x[i] = frand();
    loom_plan *p = plan_matmul(k, n, w, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(loom_plan_node_count(p), 1);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "MatMulInt8Dynamic");
    CU_ASSERT_STRING_EQUAL(loom_plan_node_name(p, 0), "fc");
    CU_ASSERT(strstr(stage_summary(p, "quantize_int8_dynamic"), "1 MatMul/Gemm to int8") != NULL);
    CU_ASSERT_EQUAL(run(p, x, 8, k, y, n), LOOM_OK);
    double num = 0, den = 0;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < n; j++) {
            double ref = 0;
            for (int t = 0; t < k; t++)
                ref += (double)x[i * k + t] * w[t * n + j];
            num += (y[i * n + j] - ref) * (y[i * n + j] - ref);
            den += ref * ref;
        }
    CU_ASSERT(sqrt(num / den) < 0.02); /* relative RMS error of int8 x int8 */
    loom_plan_destroy(p);
    free(w);
}

static void test_pass_folds_gemm_transb_alpha_beta_and_bias(void)
{
    const int64_t m = 5, k = 40, n = 24;
    float *w = malloc((size_t)(n * k) * sizeof *w), c[24], x[5 * 40], y[5 * 24];
    for (int64_t i = 0; i < n * k; i++)
        w[i] = frand();
    for (int j = 0; j < n; j++)
        c[j] = frand();
    for (int i = 0; i < m * k; i++)
        x[i] = frand();
    loom_graph *g = loom_graph_create("gemm");
    int64_t xd[2] = {m, k}, wd[2] = {n, k}, cd[1] = {n};
    loom_value ins[3] = {loom_input(g, "x", LOOM_DTYPE_F32, 2, xd),
                         loom_constant(g, "w", LOOM_DTYPE_F32, 2, wd, w),
                         loom_constant(g, "c", LOOM_DTYPE_F32, 1, cd, c)};
    loom_attr at[3] = {loom_attr_int("transB", 1), loom_attr_float("alpha", 0.5f),
                       loom_attr_float("beta", -2.0f)};
    loom_value out;
    CU_ASSERT_EQUAL(loom_graph_op(g, "Gemm", "dense", ins, 3, at, 3, &out, 1), LOOM_OK);
    loom_output(g, out, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .precision = LOOM_PRECISION_INT8_DYNAMIC};
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "MatMulInt8Dynamic");
    CU_ASSERT_EQUAL(run(p, x, m, k, y, n), LOOM_OK);
    double worst = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double ref = -2.0 * c[j];
            for (int t = 0; t < k; t++)
                ref += 0.5 * x[i * k + t] * w[j * k + t];
            worst = fmax(worst, fabs(y[i * n + j] - ref));
        }
    CU_ASSERT(worst < 0.1); /* |sum| of 40 products of [-1, 1) values: errors ~1% of ~3 */
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(w);
}

static void test_pass_keeps_tiny_k_and_listed_nodes_float(void)
{
    float w[8 * 8];
    for (int i = 0; i < 64; i++)
        w[i] = frand();
    loom_plan *p = plan_matmul(8, 8, w, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "MatMul");
    CU_ASSERT(strstr(stage_summary(p, "quantize_int8_dynamic"), "inner dimension < 16") != NULL);
    loom_plan_destroy(p);
    float *w2 = calloc(64 * 32, sizeof *w2);
    const char *keep[1] = {"fc"};
    p = plan_matmul(64, 32, w2, keep, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "MatMul");
    CU_ASSERT(strstr(stage_summary(p, "quantize_int8_dynamic"), "1 listed") != NULL);
    loom_plan_destroy(p);
    free(w2);
}

/* An embedding table (Gather from a constant [V, D] float matrix) is held as int8 with one scale
 * per column and dequantised after the gather: rows within half a step of the floats. */
static void test_pass_quantizes_embedding_tables(void)
{
    const int64_t v = 200, d = 48;
    float *t = malloc((size_t)(v * d) * sizeof *t), y[3 * 48];
    for (int64_t i = 0; i < v * d; i++)
        t[i] = frand() * (1.0f + (float)(i % d) / 8.0f);
    int64_t ids[3] = {7, 0, 199};
    loom_graph *g = loom_graph_create("emb");
    int64_t td[2] = {v, d}, idd[1] = {3};
    loom_value tv = loom_constant(g, "table", LOOM_DTYPE_F32, 2, td, t);
    loom_value iv = loom_input(g, "ids", LOOM_DTYPE_I64, 1, idd);
    loom_value gi[2] = {tv, iv}, out;
    CU_ASSERT_EQUAL(loom_graph_op(g, "Gather", "embed", gi, 2, NULL, 0, &out, 1), LOOM_OK);
    loom_output(g, out, "rows");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .precision = LOOM_PRECISION_INT8_DYNAMIC};
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    CU_ASSERT(strstr(stage_summary(p, "quantize_int8_dynamic"), "1 embedding table") != NULL);
    loom_plan_summary sum = {.struct_size = sizeof sum};
    CU_ASSERT_EQUAL(loom_plan_summary_get(p, &sum), LOOM_OK);
    CU_ASSERT(sum.constant_bytes < (size_t)(v * d) * 2); /* int8 table + scales, not floats */
    loom_tensor *in, *res;
    int64_t yd[2] = {3, d};
    loom_tensor_wrap(LOOM_DTYPE_I64, 1, idd, ids, &in);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, yd, y, &res);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &res, 1, NULL), LOOM_OK);
    int bad = 0;
    for (int r = 0; r < 3; r++)
        for (int64_t j = 0; j < d; j++) {
            float colmax = 0;
            for (int64_t q = 0; q < v; q++)
                colmax = fmaxf(colmax, fabsf(t[q * d + j]));
            bad += fabsf(y[r * d + j] - t[ids[r] * d + j]) > colmax / 127.0f * 0.5f + 1e-6f;
        }
    CU_ASSERT_EQUAL(bad, 0);
    loom_tensor_destroy(in);
    loom_tensor_destroy(res);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(t);
}

static void test_nothing_to_quantize_is_a_warning_not_an_error(void)
{
    loom_graph *g = loom_graph_create("relu");
    int64_t d[1] = {4};
    loom_output(g, loom_relu(g, loom_input(g, "x", LOOM_DTYPE_F32, 1, d)), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .precision = LOOM_PRECISION_INT8_DYNAMIC};
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    CU_ASSERT(strstr(stage_summary(p, "quantize_int8_dynamic"), "warning: nothing to quantize") !=
              NULL);
    loom_plan_destroy(p);
    o.precision = 4;
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, &o, &p), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(strstr(loom_last_error(), "int8-dynamic") != NULL);
    loom_graph_destroy(g);
}

/* ---- quantized ONNX models: DynamicQuantizeLinear + MatMulInteger chains ---------------- */

static float round_even(float v)
{
    return (v + 12582912.0f) - 12582912.0f;
}

/* ONNX DynamicQuantizeLinear of X[N], in naive loops. */
static void naive_dql(const float *x, int64_t n, uint8_t *q, float *scale, uint8_t *zp)
{
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    *scale = hi > lo ? (hi - lo) / 255.0f : 1.0f;
    float z = round_even(fminf(255.0f, fmaxf(0.0f, -lo / *scale)));
    *zp = (uint8_t)z;
    for (int64_t i = 0; i < n; i++)
        q[i] = (uint8_t)fminf(255.0f, fmaxf(0.0f, round_even(x[i] / *scale) + z));
}

/* ONNX Runtime's quantize_dynamic form of y = x . W + bias for W uint8 [K, N] with zero point
 * WZP (per tensor) and scale WS (per column): DynamicQuantizeLinear, MatMulInteger, Cast, the
 * scale product, Mul, Add. TWO: a second MatMul sharing the DynamicQuantizeLinear. */
static loom_graph *ort_style(int64_t m, int64_t k, int64_t n, const uint8_t *w, uint8_t wzp,
                             const float *ws, const float *bias, int two)
{
    loom_graph *g = loom_graph_create("qdyn");
    int64_t xd[2] = {m, k}, wd[2] = {k, n}, nd[1] = {n};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd), dq[3];
    loom_graph_op(g, "DynamicQuantizeLinear", "dql", &x, 1, NULL, 0, dq, 3);
    for (int t = 0; t < 1 + two; t++) {
        char nm[32];
        loom_value wv = loom_constant(g, NULL, LOOM_DTYPE_U8, 2, wd, w);
        loom_value zv = loom_constant(g, NULL, LOOM_DTYPE_U8, 0, NULL, &wzp);
        loom_value sv = loom_constant(g, NULL, LOOM_DTYPE_F32, 1, nd, ws);
        loom_value mi_in[4] = {dq[0], wv, dq[2], zv}, mm, mf, sc, y, z;
        snprintf(nm, sizeof nm, "mmi%d", t);
        loom_graph_op(g, "MatMulInteger", nm, mi_in, 4, NULL, 0, &mm, 1);
        loom_attr to = loom_attr_int("to", 1);
        loom_graph_op(g, "Cast", NULL, &mm, 1, &to, 1, &mf, 1);
        loom_value s_in[2] = {dq[1], sv};
        loom_graph_op(g, "Mul", NULL, s_in, 2, NULL, 0, &sc, 1);
        loom_value m_in[2] = {mf, sc};
        loom_graph_op(g, "Mul", NULL, m_in, 2, NULL, 0, &y, 1);
        loom_value b = loom_constant(g, NULL, LOOM_DTYPE_F32, 1, nd, bias);
        loom_value a_in[2] = {y, b};
        loom_graph_op(g, "Add", NULL, a_in, 2, NULL, 0, &z, 1);
        snprintf(nm, sizeof nm, "y%d", t);
        loom_output(g, z, nm);
    }
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    return g;
}

static void test_quantized_matmul_chain_fuses_and_keeps_onnx_arithmetic(void)
{
    const int64_t m = 6, k = 50, n = 70;
    uint8_t *w = malloc((size_t)(k * n)), wzp = 131, xq[6 * 50], xzp;
    float ws[70], bias[70], x[6 * 50], y[2][6 * 70], xs;
    /* uint8 weights around their zero point, as ONNX Runtime writes them (W - zp fits int8). */
    for (int64_t i = 0; i < k * n; i++)
        w[i] = (uint8_t)(int)(131 + frand() * 120);
    for (int j = 0; j < n; j++) {
        ws[j] = 0.002f + 0.0001f * (float)j;
        bias[j] = frand();
    }
    for (int i = 0; i < m * k; i++)
        x[i] = frand() * 2.0f + 0.3f;
    for (int shared = 0; shared < 2; shared++) {
        loom_graph *g = ort_style(m, k, n, w, wzp, ws, bias, shared);
        loom_plan *p;
        CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
        /* Every node of the chain (and the shared DynamicQuantizeLinear) is gone. */
        CU_ASSERT_EQUAL(loom_plan_node_count(p), (size_t)(1 + shared));
        for (size_t i = 0; i < loom_plan_node_count(p); i++)
            CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, i), "MatMulInt8Dynamic");
        CU_ASSERT(strstr(stage_summary(p, "fuse_quantized_matmul"), shared ? "2 Dynamic" : "1 Dyn") !=
                  NULL);
        loom_tensor *in, *out[2];
        int64_t xd[2] = {m, k}, yd[2] = {m, n};
        loom_tensor_wrap(LOOM_DTYPE_F32, 2, xd, x, &in);
        loom_tensor_wrap(LOOM_DTYPE_F32, 2, yd, y[0], &out[0]);
        loom_tensor_wrap(LOOM_DTYPE_F32, 2, yd, y[1], &out[1]);
        CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, out,
                                      (size_t)(1 + shared), NULL), LOOM_OK);
        naive_dql(x, m * k, xq, &xs, &xzp);
        double worst = 0;
        for (int t = 0; t <= shared; t++)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    int64_t acc = 0;
                    for (int q = 0; q < k; q++)
                        acc += ((int64_t)xq[i * k + q] - xzp) * ((int64_t)w[q * n + j] - wzp);
                    float want = (float)acc * (xs * ws[j]) + bias[j];
                    worst = fmax(worst, fabs(y[t][i * n + j] - want) / (1.0 + fabs(want)));
                }
        CU_ASSERT(worst < 1e-6); /* the same integer sums and float products */
        loom_tensor_destroy(in);
        loom_tensor_destroy(out[0]);
        loom_tensor_destroy(out[1]);
        loom_plan_destroy(p);
        loom_graph_destroy(g);
    }
    free(w);
}

/* Weights whose distance from their zero point does not fit int8 stay unfused, and right. */
static void test_quantized_chain_outside_int8_stays_unfused(void)
{
    const int64_t m = 3, k = 20, n = 9;
    uint8_t w[20 * 9], wzp = 131, xq[3 * 20], xzp;
    float ws[9], bias[9], x[3 * 20], y[3 * 9], xs;
    for (int i = 0; i < k * n; i++)
        w[i] = (uint8_t)(i % 2 ? 0 : 255); /* 0 - 131 is below -128 */
    for (int j = 0; j < n; j++) {
        ws[j] = 0.01f;
        bias[j] = (float)j;
    }
    for (int i = 0; i < m * k; i++)
        x[i] = frand();
    loom_graph *g = ort_style(m, k, n, w, wzp, ws, bias, 0);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    CU_ASSERT(strstr(stage_summary(p, "fuse_quantized_matmul"), "nothing fused") != NULL);
    CU_ASSERT(loom_plan_node_count(p) > 1);
    CU_ASSERT_EQUAL(run(p, x, m, k, y, n), LOOM_OK);
    naive_dql(x, m * k, xq, &xs, &xzp);
    double worst = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            int64_t acc = 0;
            for (int q = 0; q < k; q++)
                acc += ((int64_t)xq[i * k + q] - xzp) * ((int64_t)w[q * n + j] - wzp);
            float want = (float)acc * (xs * ws[j]) + bias[j];
            worst = fmax(worst, fabs(y[i * n + j] - want) / (1.0 + fabs(want)));
        }
    CU_ASSERT(worst < 1e-6);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

/* DynamicQuantizeLinear alone, against ONNX's formula. */
static void test_dynamic_quantize_linear_matches_onnx_formula(void)
{
    float x[13];
    for (int i = 0; i < 13; i++)
        x[i] = frand() * 3.0f - 0.5f;
    loom_graph *g = loom_graph_create("dql");
    int64_t d[1] = {13};
    loom_value xv = loom_input(g, "x", LOOM_DTYPE_F32, 1, d), o[3];
    loom_graph_op(g, "DynamicQuantizeLinear", "q", &xv, 1, NULL, 0, o, 3);
    loom_output(g, o[0], "y");
    loom_output(g, o[1], "y_scale");
    loom_output(g, o[2], "y_zero_point");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    uint8_t y[13], yz, want[13], wz;
    float ys, ws;
    loom_tensor *in, *out[3];
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, x, &in);
    loom_tensor_wrap(LOOM_DTYPE_U8, 1, d, y, &out[0]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 0, NULL, &ys, &out[1]);
    loom_tensor_wrap(LOOM_DTYPE_U8, 0, NULL, &yz, &out[2]);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, out, 3, NULL), LOOM_OK);
    naive_dql(x, 13, want, &ws, &wz);
    CU_ASSERT_DOUBLE_EQUAL(ys, ws, 1e-9);
    CU_ASSERT_EQUAL(yz, wz);
    CU_ASSERT(memcmp(y, want, 13) == 0);
    loom_tensor_destroy(in);
    for (int i = 0; i < 3; i++)
        loom_tensor_destroy(out[i]);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

/* ---- statically quantised (QDQ) models: the fuse_qdq pass ------------------------------- */

/* Quantise V as QuantizeLinear does (round half to even, saturate). */
static int64_t quant(float v, float s, int64_t z, int64_t lo, int64_t hi)
{
    float q = rintf(v / s) + (float)z;
    return q < (float)lo ? lo : q > (float)hi ? hi : (int64_t)q;
}

static loom_value qdq_scalar(loom_graph *g, loom_dtype t, double v)
{
    if (t == LOOM_DTYPE_F32) {
        float f = (float)v;
        return loom_constant(g, NULL, t, 0, NULL, &f);
    }
    int8_t b = (int8_t)(int)v;
    uint8_t u = (uint8_t)(int)v;
    return loom_constant(g, NULL, t, 0, NULL, t == LOOM_DTYPE_I8 ? (void *)&b : (void *)&u);
}

/* x' = DequantizeLinear(QuantizeLinear(x, S, Z), S2, Z) of dtype T. */
static loom_value qdq_act(loom_graph *g, loom_value x, loom_dtype t, float s, int z, float s2)
{
    loom_value qi[3] = {x, qdq_scalar(g, LOOM_DTYPE_F32, s), qdq_scalar(g, t, z)}, q, d;
    loom_graph_op(g, "QuantizeLinear", NULL, qi, 3, NULL, 0, &q, 1);
    loom_value di[3] = {q, qdq_scalar(g, LOOM_DTYPE_F32, s2), qdq_scalar(g, t, z)};
    loom_graph_op(g, "DequantizeLinear", NULL, di, 3, NULL, 0, &d, 1);
    return d;
}

/* W' = DequantizeLinear(WQ, scales [NS] along AXIS) without a zero point. */
static loom_value qdq_weight(loom_graph *g, loom_value wq, const float *ws, int64_t ns,
                             int64_t axis)
{
    int64_t sd[1] = {ns};
    loom_value di[2] = {wq, ns == 1 ? loom_constant(g, NULL, LOOM_DTYPE_F32, 0, NULL, ws)
                                    : loom_constant(g, NULL, LOOM_DTYPE_F32, 1, sd, ws)};
    loom_attr ax = loom_attr_int("axis", axis);
    loom_value d;
    loom_graph_op(g, "DequantizeLinear", NULL, di, 2, &ax, 1, &d, 1);
    return d;
}

typedef struct qdq_mm_case {
    int gemm;        /* Gemm with transB = 1, alpha 0.5 and a DequantizeLinear(int32) bias */
    int x_int8;      /* activations int8 (zero point -3), else uint8 (zero point 120) */
    int per_channel; /* weight scales per output column, else per tensor */
    int bad;         /* 1: scales along K; 2: weights a graph input; 3: Q and DQ scales differ */
} qdq_mm_case;

/* QDQ MatMul/Gemm of case C on M x K x N: fused (or not) as expected, and the result within
 * float rounding of naive loops over the dequantised values (the integer sums are exact). */
static void check_qdq_matmul(const qdq_mm_case *c, int64_t m, int64_t k, int64_t n)
{
    const loom_dtype xt = c->x_int8 ? LOOM_DTYPE_I8 : LOOM_DTYPE_U8;
    const int zx = c->x_int8 ? -3 : 120;
    const float sx = 0.013f, alpha = c->gemm ? 0.5f : 1.0f;
    int8_t *w = malloc((size_t)(k * n));
    float *ws = malloc((size_t)(k + n) * sizeof *ws), *x = malloc((size_t)(m * k) * sizeof *x);
    float *y = malloc((size_t)(m * n) * sizeof *y), bias_s = sx * 0.004f;
    int32_t *bq = malloc((size_t)n * sizeof *bq);
    for (int64_t i = 0; i < k * n; i++)
        w[i] = (int8_t)(int)(frand() * 127.0f); /* Gemm: [N, K]; MatMul: [K, N] */
    for (int64_t j = 0; j < k + n; j++)
        ws[j] = 0.002f + 0.00003f * (float)j;
    for (int64_t j = 0; j < n; j++)
        bq[j] = (int32_t)(frand() * 5000.0f);
    for (int64_t i = 0; i < m * k; i++)
        x[i] = frand() * 1.5f + 0.2f;
    loom_graph *g = loom_graph_create("qdq_mm");
    int64_t xd[2] = {m, k}, wd[2] = {c->gemm ? n : k, c->gemm ? k : n}, nd[1] = {n};
    loom_value xv = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd);
    loom_value wq = c->bad == 2 ? loom_input(g, "w", LOOM_DTYPE_I8, 2, wd)
                                : loom_constant(g, "w", LOOM_DTYPE_I8, 2, wd, w);
    /* Output columns run along axis 1 of MatMul's [K, N] and axis 0 of Gemm's [N, K]. */
    const int64_t out_axis = c->gemm ? 0 : 1;
    const int64_t axis = c->bad == 1 ? 1 - out_axis : out_axis;
    const int64_t ns = c->bad == 1 ? k : c->per_channel ? n : 1;
    loom_value ins[3] = {qdq_act(g, xv, xt, sx, zx, c->bad == 3 ? sx * 1.01f : sx),
                         qdq_weight(g, wq, ws, ns, axis), LOOM_NO_VALUE};
    loom_value yv;
    if (c->gemm) {
        loom_value bi[2] = {loom_constant(g, NULL, LOOM_DTYPE_I32, 1, nd, bq),
                            qdq_scalar(g, LOOM_DTYPE_F32, bias_s)};
        loom_graph_op(g, "DequantizeLinear", NULL, bi, 2, NULL, 0, &ins[2], 1);
        loom_attr at[2] = {loom_attr_int("transB", 1), loom_attr_float("alpha", alpha)};
        loom_graph_op(g, "Gemm", "fc", ins, 3, at, 2, &yv, 1);
    } else {
        loom_graph_op(g, "MatMul", "fc", ins, 2, NULL, 0, &yv, 1);
    }
    loom_output(g, yv, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    const int fused = c->bad == 0;
    CU_ASSERT((strstr(stage_summary(p, "fuse_qdq"), "1 QDQ MatMul") != NULL) == fused);
    int has_int8 = 0;
    for (size_t i = 0; i < loom_plan_node_count(p); i++)
        has_int8 |= strcmp(loom_plan_node_op(p, i), "MatMulInt8Dynamic") == 0;
    CU_ASSERT_EQUAL(has_int8, fused);
    if (fused)
        CU_ASSERT_EQUAL(loom_plan_node_count(p), 1);
    loom_tensor *in[2], *out;
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, xd, x, &in[0]);
    loom_tensor_wrap(LOOM_DTYPE_I8, 2, wd, w, &in[1]);
    int64_t yd[2] = {m, n};
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, yd, y, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)in, c->bad == 2 ? 2 : 1, &out, 1,
                                  NULL),
                    LOOM_OK);
    const int64_t lo = c->x_int8 ? -128 : 0, hi = c->x_int8 ? 127 : 255;
    const float sx2 = c->bad == 3 ? sx * 1.01f : sx;
    double worst = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0, mag = 0;
            for (int64_t t = 0; t < k; t++) {
                const float xdq = (float)(quant(x[i * k + t], sx, zx, lo, hi) - zx) * sx2;
                const int64_t wi = c->gemm ? j * k + t : t * n + j;
                const int64_t ch = c->bad == 1 ? t : ns == 1 ? 0 : j;
                const float wdq = (float)w[wi] * ws[ch];
                acc += (double)xdq * wdq;
                mag += fabs((double)xdq * wdq);
            }
            double want = alpha * acc + (c->gemm ? (double)bq[j] * bias_s : 0.0);
            worst = fmax(worst, fabs(y[i * n + j] - want) / (1e-3 + mag));
        }
    CU_ASSERT(worst < 1e-4);
    if (worst >= 1e-4)
        fprintf(stderr, "qdq matmul case gemm=%d int8=%d pc=%d bad=%d: worst %g\n", c->gemm,
                c->x_int8, c->per_channel, c->bad, worst);
    loom_tensor_destroy(in[0]);
    loom_tensor_destroy(in[1]);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(w);
    free(ws);
    free(x);
    free(y);
    free(bq);
}

static void test_qdq_matmul_and_gemm_fuse_into_the_int8_kernel(void)
{
    const qdq_mm_case cases[] = {
        {0, 0, 1, 0}, {0, 1, 0, 0}, {1, 0, 1, 0}, {1, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_qdq_matmul(&cases[i], 5, 37, 70);
        check_qdq_matmul(&cases[i], 1, 4, 3);
    }
}

static void test_qdq_pass_leaves_what_it_cannot_fuse(void)
{
    const qdq_mm_case cases[] = {
        {0, 0, 1, 1}, {1, 0, 1, 1}, /* scales along K, not the output columns */
        {0, 0, 1, 2}, {1, 1, 0, 2}, /* weights computed at run time */
        {0, 0, 0, 3}, {1, 0, 1, 3}, /* QuantizeLinear and DequantizeLinear disagree */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_qdq_matmul(&cases[i], 6, 29, 17);
}

/* Conv [+ Relu] between QDQ pairs, 1x3x9x8 -> 4 channels, 3x3, pads 1, stride STRIDE: with the
 * output QuantizeLinear it becomes one QLinearConv (the Relu absorbed when the output zero point
 * is the bottom of the range, i.e. RELU_ZP of 0 for uint8 / -128 for int8), else it stays. The
 * result is within one output step of naive float loops (requantised once instead of rounded
 * in float first). */
static void check_qdq_conv(int x_int8, int relu, int y_zp, int stride, int expect_fused)
{
    const int64_t N = 2, C = 3, H = 9, W = 8, M = 4, KH = 3, KW = 3;
    const int64_t OH = (H + 2 - KH) / stride + 1, OW = (W + 2 - KW) / stride + 1;
    const loom_dtype xt = x_int8 ? LOOM_DTYPE_I8 : LOOM_DTYPE_U8;
    const int zx = x_int8 ? 5 : 128;
    const float sx = 0.01f, sy = 0.03f;
    int8_t w[4 * 3 * 3 * 3];
    float ws[4], x[2 * 3 * 9 * 8], y[2 * 4 * 9 * 8], bsc[4];
    int32_t bq[4];
    for (size_t i = 0; i < sizeof w; i++)
        w[i] = (int8_t)(int)(frand() * 127.0f);
    for (int j = 0; j < 4; j++) {
        ws[j] = 0.003f + 0.001f * (float)j;
        bsc[j] = sx * ws[j];
        bq[j] = (int32_t)(frand() * 3000.0f);
    }
    for (int64_t i = 0; i < N * C * H * W; i++)
        x[i] = frand();
    loom_graph *g = loom_graph_create("qdq_conv");
    int64_t xd[4] = {N, C, H, W}, wd[4] = {M, C, KH, KW}, md[1] = {M};
    loom_value xv = loom_input(g, "x", LOOM_DTYPE_F32, 4, xd);
    loom_value ins[3] = {qdq_act(g, xv, xt, sx, zx, sx),
                         qdq_weight(g, loom_constant(g, "w", LOOM_DTYPE_I8, 4, wd, w), ws, M, 0),
                         LOOM_NO_VALUE};
    loom_value bi[2] = {loom_constant(g, NULL, LOOM_DTYPE_I32, 1, md, bq),
                        loom_constant(g, NULL, LOOM_DTYPE_F32, 1, md, bsc)};
    loom_attr bax = loom_attr_int("axis", 0);
    loom_graph_op(g, "DequantizeLinear", NULL, bi, 2, &bax, 1, &ins[2], 1);
    const int64_t pads[4] = {1, 1, 1, 1}, st[2] = {stride, stride};
    loom_attr at[2] = {loom_attr_ints("pads", 4, pads), loom_attr_ints("strides", 2, st)};
    loom_value cv, rv;
    loom_graph_op(g, "Conv", "conv", ins, 3, at, 2, &cv, 1);
    if (relu)
        loom_graph_op(g, "Relu", NULL, &cv, 1, NULL, 0, &rv, 1);
    else
        rv = cv;
    loom_output(g, qdq_act(g, rv, xt, sy, y_zp, sy), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    CU_ASSERT(strstr(stage_summary(p, "fuse_qdq"), expect_fused ? "1 QDQ Conv" : "0 QDQ Conv") !=
              NULL);
    int has_qconv = 0;
    for (size_t i = 0; i < loom_plan_node_count(p); i++)
        has_qconv |= strcmp(loom_plan_node_op(p, i), "QLinearConv") == 0;
    CU_ASSERT_EQUAL(has_qconv, expect_fused);
    if (expect_fused) /* QuantizeLinear, QLinearConv, DequantizeLinear */
        CU_ASSERT_EQUAL(loom_plan_node_count(p), 3);
    loom_tensor *in, *out;
    loom_tensor_wrap(LOOM_DTYPE_F32, 4, xd, x, &in);
    int64_t yd[4] = {N, M, OH, OW};
    loom_tensor_wrap(LOOM_DTYPE_F32, 4, yd, y, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, NULL), LOOM_OK);
    const int64_t lo = x_int8 ? -128 : 0, hi = x_int8 ? 127 : 255;
    double worst = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t mo = 0; mo < M; mo++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double acc = (double)((float)bq[mo] * bsc[mo]);
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t kh = 0; kh < KH; kh++)
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t ih = oh * stride - 1 + kh, iw = ow * stride - 1 + kw;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                    continue;
                                float xv2 = x[((n * C + c) * H + ih) * W + iw];
                                float xdq = (float)(quant(xv2, sx, zx, lo, hi) - zx) * sx;
                                float wdq = (float)w[((mo * C + c) * KH + kh) * KW + kw] * ws[mo];
                                acc += (double)xdq * wdq;
                            }
                    if (relu && acc < 0)
                        acc = 0;
                    float want = (float)(quant((float)acc, sy, y_zp, lo, hi) - y_zp) * sy;
                    float got = y[((n * M + mo) * OH + oh) * OW + ow];
                    worst = fmax(worst, fabs(got - want));
                }
    CU_ASSERT(worst <= sy * 1.001);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_qdq_conv_fuses_into_qlinear_conv(void)
{
    check_qdq_conv(0, 1, 0, 1, 1);    /* uint8, Relu absorbed (zero point 0) */
    check_qdq_conv(1, 1, -128, 2, 1); /* int8, Relu absorbed (zero point -128), stride 2 */
    check_qdq_conv(0, 0, 100, 1, 1);  /* no Relu */
    check_qdq_conv(1, 1, 3, 1, 0);    /* a Relu the clamp would not do: left alone */
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"kernel_matches_naive_quantised_arithmetic",
         test_kernel_matches_naive_quantised_arithmetic},
        {"pass_quantizes_matmul_with_constant_weights",
         test_pass_quantizes_matmul_with_constant_weights},
        {"pass_folds_gemm_transb_alpha_beta_and_bias",
         test_pass_folds_gemm_transb_alpha_beta_and_bias},
        {"pass_keeps_tiny_k_and_listed_nodes_float", test_pass_keeps_tiny_k_and_listed_nodes_float},
        {"pass_quantizes_embedding_tables", test_pass_quantizes_embedding_tables},
        {"nothing_to_quantize_is_a_warning_not_an_error",
         test_nothing_to_quantize_is_a_warning_not_an_error},
        {"dynamic_quantize_linear_matches_onnx_formula",
         test_dynamic_quantize_linear_matches_onnx_formula},
        {"quantized_matmul_chain_fuses_and_keeps_onnx_arithmetic",
         test_quantized_matmul_chain_fuses_and_keeps_onnx_arithmetic},
        {"quantized_chain_outside_int8_stays_unfused",
         test_quantized_chain_outside_int8_stays_unfused},
        {"qdq_matmul_and_gemm_fuse_into_the_int8_kernel",
         test_qdq_matmul_and_gemm_fuse_into_the_int8_kernel},
        {"qdq_pass_leaves_what_it_cannot_fuse", test_qdq_pass_leaves_what_it_cannot_fuse},
        {"qdq_conv_fuses_into_qlinear_conv", test_qdq_conv_fuses_into_qlinear_conv},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"int8_dynamic", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
