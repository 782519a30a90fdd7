/*
 * Operator coverage (issue 13): the operators added for the ONNX backend suite and exported
 * models, through the public API. Registry: graph/ops_loss.c, ops_reductions.c (ReduceL1 ...
 * ReduceSumSquare) and the families named at each test; CPU kernels: backends/cpu/kernels_loss.c,
 * kernels_reductions.c and the family files. Each graph is built with loom_graph_op, planned on
 * "cpu" with strict=1 and run, and its outputs compared with naive reference loops written here
 * from the ONNX specification, over odd sizes. Malformed nodes must fail with a clear message.
 * Inputs come from a fixed-seed generator reseeded before every test.
 *
 * Run all tests: ./test_ops_coverage; only tests whose name contains WORD:
 * ./test_ops_coverage WORD.
 */
#include <loom/graph.h>
#include <loom/runtime.h>

#include "test_support.h"

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every test starts the shared generator (test_support.h) from the same seed. */
static void rng_reset(void) { rng_seed(0x9E3779B97F4A7C15ull); }

/* Index of the output element that input element FLAT (of X) reduces into, AXES marked in RED. */
static int64_t reduced_index(int64_t flat, shp x, const int *red)
{
    int64_t idx[LOOM_MAX_RANK], o = 0;
    unravel(flat, x, idx);
    for (uint32_t k = 0; k < x.rank; k++)
        if (!red[k])
            o = o * x.d[k] + idx[k];
    return o;
}

/* ===========================================================================================
 * Losses: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss
 * =========================================================================================== */

/* The ONNX reference: loss[n, d] = -w[t] * LP[n, t, d] (0 and weight 0 when t is ignored);
 * "mean" divides the sum by the sum of the weights taken. LP is X itself (NLL) or its
 * log-softmax over C (SCE, written into LOGP). */
static void ref_loss(shp x, const double *xv, const double *t, const double *w, int softmax,
                     int has_ignore, int64_t ignore, const char *red, double *out, double *logp)
{
    const int64_t N = x.d[0], C = x.d[1], D = numel(x) / (N * C);
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            double m = -INFINITY, s = 0;
            for (int64_t c = 0; c < C; c++)
                m = fmax(m, xv[(n * C + c) * D + d]);
            for (int64_t c = 0; c < C; c++)
                s += exp(xv[(n * C + c) * D + d] - m);
            for (int64_t c = 0; c < C; c++)
                logp[(n * C + c) * D + d] =
                    softmax ? xv[(n * C + c) * D + d] - m - log(s) : xv[(n * C + c) * D + d];
        }
    double sum = 0, wsum = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            int64_t cls = (int64_t)t[n * D + d];
            double l = 0, wt = 0;
            if (!(has_ignore && cls == ignore)) {
                wt = w ? w[cls] : 1;
                l = -wt * logp[(n * C + cls) * D + d];
            }
            if (!strcmp(red, "none"))
                out[n * D + d] = l;
            sum += l;
            wsum += wt;
        }
    if (!strcmp(red, "sum"))
        out[0] = sum;
    else if (!strcmp(red, "mean"))
        out[0] = sum / wsum;
}

static void check_loss(int softmax, shp x, int weighted, int has_ignore, const char *red,
                       loom_dtype tdt, int line)
{
    tc c;
    tc_init(&c);
    const int64_t N = x.d[0], C = x.d[1];
    shp ts;
    memset(&ts, 0, sizeof ts);
    ts.rank = x.rank - 1;
    ts.d[0] = N;
    for (uint32_t k = 2; k < x.rank; k++)
        ts.d[k - 1] = x.d[k];
    double *xv = tc_random(&c, F32, numel(x), -3, 3);
    double *t = tc_random(&c, tdt, numel(ts), 0, (double)C - 1);
    const int64_t ignore = 1;
    double *w = weighted ? tc_random(&c, F32, C, 0.2, 2) : NULL;
    loom_value ins[3] = {tc_input(&c, F32, x, xv), tc_input(&c, tdt, ts, t), LOOM_NO_VALUE};
    if (weighted)
        ins[2] = tc_input(&c, F32, SHP(C), w);
    loom_attr attrs[2] = {loom_attr_string("reduction", red), loom_attr_int("ignore_index",
                                                                               ignore)};
    size_t n_out = softmax ? 2 : 1;
    CU_ASSERT_EQUAL(tc_node(&c, softmax ? "SoftmaxCrossEntropyLoss" : "NegativeLogLikelihoodLoss",
                            ins, weighted ? 3 : 2, attrs, has_ignore ? 2 : 1, n_out),
                    LOOM_OK);
    if (softmax)
        for (int64_t i = 0; i < numel(x); i++)
            xv[i] = (float)xv[i];
    double *out = tc_dbuf(&c, numel(ts)), *logp = tc_dbuf(&c, numel(x));
    ref_loss(x, xv, t, w, softmax, has_ignore, ignore, red, out, logp);
    if (tc_run(&c, line)) {
        check_out(&c, 0, F32, strcmp(red, "none") ? SCALAR : ts, out, 1e-5, 1e-5, line);
        if (softmax)
            check_out(&c, 1, F32, x, logp, 1e-5, 1e-5, line);
    }
    tc_free(&c);
}

static void test_nll_loss_matches_reference(void)
{
    static const char *const reds[] = {"none", "sum", "mean"};
    for (int r = 0; r < 3; r++)
        for (int weighted = 0; weighted < 2; weighted++)
            for (int ig = 0; ig < 2; ig++) {
                check_loss(0, SHP(3, 5), weighted, ig, reds[r], I64, __LINE__);
                check_loss(0, SHP(2, 7, 3, 5), weighted, ig, reds[r], I32, __LINE__);
            }
}

static void test_softmax_cross_entropy_matches_reference(void)
{
    static const char *const reds[] = {"none", "sum", "mean"};
    for (int r = 0; r < 3; r++)
        for (int weighted = 0; weighted < 2; weighted++)
            for (int ig = 0; ig < 2; ig++) {
                check_loss(1, SHP(5, 3), weighted, ig, reds[r], I64, __LINE__);
                check_loss(1, SHP(3, 4, 5, 1, 3), weighted, ig, reds[r], I64, __LINE__);
            }
}

static void test_loss_target_out_of_range_fails_at_run(void)
{
    tc c;
    tc_init(&c);
    double *xv = tc_random(&c, F32, 6, -1, 1), t[2] = {0, 3};
    loom_value ins[2] = {tc_input(&c, F32, SHP(2, 3), xv), tc_input(&c, I64, SHP(2), t)};
    CU_ASSERT_EQUAL(tc_node(&c, "NegativeLogLikelihoodLoss", ins, 2, NULL, 0, 1), LOOM_OK);
    loom_plan_options opt;
    memset(&opt, 0, sizeof opt);
    opt.struct_size = sizeof opt;
    opt.device = "cpu";
    opt.strict = 1;
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(c.g), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(test_rt, c.g, &opt, &c.plan), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_plan_make_outputs(c.plan, c.out, 1), LOOM_OK);
    c.n_out = 1;
    loom_status st = loom_plan_run(c.plan, (const loom_tensor *const *)c.in, c.n_in, c.out, 1,
                                   NULL);
    CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "target 3"));
    tc_free(&c);
}

static void test_loss_shape_errors_are_clear(void)
{
    tc c;
    tc_init(&c);
    double v[12] = {0};
    loom_value ins[2] = {tc_input(&c, F32, SHP(2, 3, 2), v), tc_input(&c, I64, SHP(2, 3), v)};
    loom_status st = tc_node(&c, "NegativeLogLikelihoodLoss", ins, 2, NULL, 0, 1);
    expect_build_error(&c, st, LOOM_ERR_INVALID_ARGUMENT, "NegativeLogLikelihoodLoss",
                       "class dimension", __LINE__);
    tc_free(&c);
    tc_init(&c);
    loom_value ins2[2] = {tc_input(&c, F32, SHP(2, 3), v), tc_input(&c, I64, SHP(2), v)};
    loom_attr bad = loom_attr_string("reduction", "max");
    st = tc_node(&c, "SoftmaxCrossEntropyLoss", ins2, 2, &bad, 1, 1);
    expect_build_error(&c, st, LOOM_ERR_INVALID_ARGUMENT, "SoftmaxCrossEntropyLoss",
                       "reduction 'max'", __LINE__);
    tc_free(&c);
}

/* ===========================================================================================
 * ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare
 * =========================================================================================== */

static void check_reduce_map(const char *op, shp x, const int64_t *axes, size_t n_axes,
                             int keepdims, int line)
{
    tc c;
    tc_init(&c);
    double *xv = tc_random(&c, F32, numel(x), 0.05, 4);
    if (!strcmp(op, "ReduceLogSumExp"))
        for (int64_t i = 0; i < numel(x); i++)
            xv[i] = (float)(xv[i] * 30 - 20); /* large enough to overflow a naive exp sum */
    int red[LOOM_MAX_RANK] = {0};
    for (size_t k = 0; k < n_axes; k++)
        red[axes[k] < 0 ? axes[k] + x.rank : axes[k]] = 1;
    if (!n_axes)
        for (uint32_t k = 0; k < x.rank; k++)
            red[k] = 1;
    shp y;
    memset(&y, 0, sizeof y);
    for (uint32_t k = 0; k < x.rank; k++)
        if (!red[k] || keepdims)
            y.d[y.rank++] = red[k] ? 1 : x.d[k];
    const int64_t ny = numel(y);
    double *ref = tc_dbuf(&c, ny), *mx = tc_dbuf(&c, ny);
    for (int64_t o = 0; o < ny; o++)
        mx[o] = -INFINITY;
    for (int64_t i = 0; i < numel(x); i++)
        mx[reduced_index(i, x, red)] = fmax(mx[reduced_index(i, x, red)], xv[i]);
    for (int64_t i = 0; i < numel(x); i++) {
        int64_t o = reduced_index(i, x, red);
        double v = xv[i];
        ref[o] += !strcmp(op, "ReduceL1")          ? fabs(v)
                  : !strcmp(op, "ReduceLogSum")    ? v
                  : !strcmp(op, "ReduceLogSumExp") ? exp(v - mx[o])
                                                   : v * v;
    }
    for (int64_t o = 0; o < ny; o++)
        ref[o] = !strcmp(op, "ReduceL2")          ? sqrt(ref[o])
                 : !strcmp(op, "ReduceLogSum")    ? log(ref[o])
                 : !strcmp(op, "ReduceLogSumExp") ? mx[o] + log(ref[o])
                                                  : ref[o];
    loom_value in = tc_input(&c, F32, x, xv);
    loom_attr attrs[2] = {loom_attr_int("keepdims", keepdims),
                          loom_attr_ints("axes", n_axes, axes)};
    CU_ASSERT_EQUAL(tc_node(&c, op, &in, 1, attrs, n_axes ? 2 : 1, 1), LOOM_OK);
    if (tc_run(&c, line))
        check_out(&c, 0, F32, y, ref, 1e-6, 1e-5, line);
    tc_free(&c);
}

static void test_reduce_l1_l2_logsum_logsumexp_sumsquare_match_reference(void)
{
    static const char *const ops[] = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                                      "ReduceSumSquare"};
    for (int k = 0; k < 5; k++)
        for (int keep = 0; keep < 2; keep++) {
            check_reduce_map(ops[k], SHP(3, 5, 7), (const int64_t[]){1}, 1, keep, __LINE__);
            check_reduce_map(ops[k], SHP(3, 5, 7), (const int64_t[]){0, -1}, 2, keep, __LINE__);
            check_reduce_map(ops[k], SHP(2, 3, 1, 5), NULL, 0, keep, __LINE__);
            check_reduce_map(ops[k], SHP(11), (const int64_t[]){0}, 1, keep, __LINE__);
        }
}

static void test_reduce_log_sum_exp_of_minus_infinity_is_minus_infinity(void)
{
    tc c;
    tc_init(&c);
    double v[6] = {-INFINITY, -INFINITY, -INFINITY, 1, 2, -INFINITY};
    loom_value in = tc_input(&c, F32, SHP(2, 3), v);
    loom_attr attrs[2] = {loom_attr_int("keepdims", 0), loom_attr_ints("axes", 1,
                                                                       (const int64_t[]){1})};
    CU_ASSERT_EQUAL(tc_node(&c, "ReduceLogSumExp", &in, 1, attrs, 2, 1), LOOM_OK);
    double ref[2] = {-INFINITY, 2 + log(1 + exp(-1.0))};
    if (tc_run(&c, __LINE__))
        check_out(&c, 0, F32, SHP(2), ref, 1e-6, 1e-6, __LINE__);
    tc_free(&c);
}

/* ===========================================================================================
 * Elementwise math (graph/ops_math.c, backends/cpu/kernels_math.c)
 * =========================================================================================== */

static void check_unary(const char *op, const loom_attr *attrs, size_t n_attrs, double lo,
                        double hi, double (*ref)(double), loom_dtype out_dt, int line)
{
    tc c;
    tc_init(&c);
    shp x = SHP(3, 7, 5);
    double *xv = tc_random(&c, F32, numel(x), lo, hi);
    xv[0] = NAN;
    xv[1] = INFINITY;
    xv[2] = -INFINITY;
    loom_value in = tc_input(&c, F32, x, xv);
    CU_ASSERT_EQUAL(tc_node(&c, op, &in, 1, attrs, n_attrs, 1), LOOM_OK);
    double *want = tc_dbuf(&c, numel(x));
    for (int64_t i = 0; i < numel(x); i++)
        want[i] = out_dt == F32 ? (float)ref(xv[i]) : ref(xv[i]);
    if (tc_run(&c, line))
        check_out(&c, 0, out_dt, x, want, 1e-6, 1e-5, line);
    tc_free(&c);
}

static double r_softsign(double v) { return v / (1 + fabs(v)); }
static double r_thresholded(double v) { return v > 0.7 ? v : 0; }
static double r_shrink(double v) { return v < -1.5 ? v + 0.25 : v > 1.5 ? v - 0.25 : 0; }
static double r_celu(double v) { return fmax(0, v) + fmin(0, 2 * (exp(v / 2) - 1)); }
static double r_isnan(double v) { return isnan(v) ? 1 : 0; }
static double r_isinf_pos(double v) { return isinf(v) && v > 0 ? 1 : 0; }

static void test_trigonometric_and_hyperbolic_match_libm(void)
{
    check_unary("Tan", NULL, 0, -1.4, 1.4, tan, F32, __LINE__);
    check_unary("Asin", NULL, 0, -1, 1, asin, F32, __LINE__);
    check_unary("Acos", NULL, 0, -1, 1, acos, F32, __LINE__);
    check_unary("Atan", NULL, 0, -9, 9, atan, F32, __LINE__);
    check_unary("Sinh", NULL, 0, -5, 5, sinh, F32, __LINE__);
    check_unary("Cosh", NULL, 0, -5, 5, cosh, F32, __LINE__);
    check_unary("Asinh", NULL, 0, -9, 9, asinh, F32, __LINE__);
    check_unary("Acosh", NULL, 0, 1, 9, acosh, F32, __LINE__);
    check_unary("Atanh", NULL, 0, -0.99, 0.99, atanh, F32, __LINE__);
}

static void test_softsign_thresholded_relu_shrink_celu_isnan_isinf(void)
{
    check_unary("Softsign", NULL, 0, -5, 5, r_softsign, F32, __LINE__);
    loom_attr a = loom_attr_float("alpha", 0.7f);
    check_unary("ThresholdedRelu", &a, 1, -2, 2, r_thresholded, F32, __LINE__);
    loom_attr sh[2] = {loom_attr_float("bias", 0.25f), loom_attr_float("lambd", 1.5f)};
    check_unary("Shrink", sh, 2, -3, 3, r_shrink, F32, __LINE__);
    loom_attr ca = loom_attr_float("alpha", 2.0f);
    check_unary("Celu", &ca, 1, -4, 4, r_celu, F32, __LINE__);
    check_unary("IsNaN", NULL, 0, -4, 4, r_isnan, BOOL, __LINE__);
    loom_attr neg = loom_attr_int("detect_negative", 0);
    check_unary("IsInf", &neg, 1, -4, 4, r_isinf_pos, BOOL, __LINE__);
}

/* Python's % for integers (fmod=0): the divisor's sign; C's for fmod=1; x % 0 gives 0. */
static double r_mod(double a, double b, int fm)
{
    if (b == 0)
        return 0;
    double r = fmod(a, b);
    if (!fm && r != 0 && ((r < 0) != (b < 0)))
        r += b;
    return r;
}

static void check_binary_int(const char *op, loom_dtype dt, shp sa, shp sb, double lo, double hi,
                             const loom_attr *attrs, size_t n_attrs, int fm, int line)
{
    tc c;
    tc_init(&c);
    double *av = tc_random(&c, dt, numel(sa), lo, hi), *bv = tc_random(&c, dt, numel(sb), lo, hi);
    if (!strcmp(op, "BitShift"))
        for (int64_t i = 0; i < numel(sb); i++)
            bv[i] = (double)rng_int(0, 7);
    loom_value ins[2] = {tc_input(&c, dt, sa, av), tc_input(&c, dt, sb, bv)};
    CU_ASSERT_EQUAL(tc_node(&c, op, ins, 2, attrs, n_attrs, 1), LOOM_OK);
    shp y = bcast(sa, sb);
    double *want = tc_dbuf(&c, numel(y));
    int64_t idx[LOOM_MAX_RANK];
    for (int64_t i = 0; i < numel(y); i++) {
        unravel(i, y, idx);
        double a = av[bcast_off(y.rank, idx, sa)], b = bv[bcast_off(y.rank, idx, sb)];
        if (!strcmp(op, "Mod"))
            want[i] = dt == F32 ? (float)fmod((float)a, (float)b) : r_mod(a, b, fm);
        else
            want[i] = fm ? fmod(ldexp(a, (int)b), ldexp(1, 8 * (int)loom_dtype_size(dt)))
                         : floor(ldexp(a, -(int)b));
    }
    if (tc_run(&c, line))
        check_out(&c, 0, dt, y, want, 0, 1e-6, line);
    tc_free(&c);
}

static void test_mod_python_and_c_signs_broadcast(void)
{
    loom_attr f0 = loom_attr_int("fmod", 0), f1 = loom_attr_int("fmod", 1);
    static const loom_dtype ints[] = {I8, I32, I64};
    for (int k = 0; k < 3; k++) {
        check_binary_int("Mod", ints[k], SHP(3, 5), SHP(3, 5), -20, 20, &f0, 1, 0, __LINE__);
        check_binary_int("Mod", ints[k], SHP(2, 3, 5), SHP(5), -20, 20, &f1, 1, 1, __LINE__);
    }
    check_binary_int("Mod", U8, SHP(7, 3), SHP(7, 1), 0, 200, NULL, 0, 0, __LINE__);
    check_binary_int("Mod", F32, SHP(4, 1, 3), SHP(5, 1), -10, 10, &f1, 1, 1, __LINE__);
    /* floats need fmod=1 */
    tc c;
    tc_init(&c);
    double v[3] = {1, 2, 3};
    loom_value ins[2] = {tc_input(&c, F32, SHP(3), v), tc_input(&c, F32, SHP(3), v)};
    loom_status st = tc_node(&c, "Mod", ins, 2, NULL, 0, 1);
    expect_build_error(&c, st, LOOM_ERR_INVALID_ARGUMENT, "Mod", "fmod must be 1", __LINE__);
    tc_free(&c);
}

static void check_cumsum(loom_dtype dt, shp x, int64_t axis, int excl, int rev, int line);

static void test_wide_integers_and_float64(void)
{
    loom_attr f0 = loom_attr_int("fmod", 0), f1 = loom_attr_int("fmod", 1);
    check_binary_int("Mod", LOOM_DTYPE_I16, SHP(3, 5), SHP(5), -300, 300, &f0, 1, 0, __LINE__);
    check_binary_int("Mod", LOOM_DTYPE_U16, SHP(3, 5), SHP(3, 1), 0, 60000, &f0, 1, 0,
                     __LINE__);
    check_binary_int("Mod", LOOM_DTYPE_U32, SHP(7), SHP(7), 0, 4e9, &f0, 1, 0, __LINE__);
    check_binary_int("Mod", LOOM_DTYPE_U64, SHP(2, 3), SHP(1), 0, 1e15, &f0, 1, 0, __LINE__);
    check_binary_int("Mod", LOOM_DTYPE_F64, SHP(2, 3), SHP(3), -50, 50, &f1, 1, 1, __LINE__);
    loom_attr l = loom_attr_string("direction", "LEFT");
    check_binary_int("BitShift", LOOM_DTYPE_U32, SHP(3, 5), SHP(5), 0, 255, &l, 1, 1,
                     __LINE__);
    check_cumsum(LOOM_DTYPE_F64, SHP(3, 4), 1, 1, 0, __LINE__);
}

/* ---- float64 and the narrow/unsigned integers through Add ... Max, Neg, Abs, Clip, Cast,
 * Einsum, ReduceLogSumExp and Pow's integer exponents (the ONNX suite's float64 and uint8
 * cases, issue 13). Integer results wrap modulo 2^bits, as C's unsigned arithmetic does. */

/* V (an integer below 2^32) wrapped into DT's range, at most 32 bits wide (two's complement
 * for the signed ones). */
static double wrap_int(double v, loom_dtype dt)
{
    const int bits = 8 * (int)loom_dtype_size(dt);
    const double m = ldexp(1, bits);
    double r = fmod(v, m);
    if (r < 0)
        r += m;
    const int is_signed = dt == LOOM_DTYPE_I8 || dt == LOOM_DTYPE_I16 || dt == LOOM_DTYPE_I32;
    return is_signed && r >= m / 2 ? r - m : r;
}

static void check_arith(const char *op, loom_dtype dt, shp sa, shp sb, double lo, double hi,
                        int line)
{
    tc c;
    tc_init(&c);
    const int is_float = dt == LOOM_DTYPE_F64;
    double *av = tc_random(&c, dt, numel(sa), lo, hi), *bv = tc_random(&c, dt, numel(sb), lo, hi);
    if (!strcmp(op, "Div") && !is_float)
        for (int64_t i = 0; i < numel(sb); i++)
            if (bv[i] == 0)
                bv[i] = 3;
    loom_value ins[2] = {tc_input(&c, dt, sa, av), tc_input(&c, dt, sb, bv)};
    CU_ASSERT_EQUAL(tc_node(&c, op, ins, 2, NULL, 0, 1), LOOM_OK);
    shp y = bcast(sa, sb);
    double *want = tc_dbuf(&c, numel(y));
    int64_t idx[LOOM_MAX_RANK];
    for (int64_t i = 0; i < numel(y); i++) {
        unravel(i, y, idx);
        const double a = av[bcast_off(y.rank, idx, sa)], b = bv[bcast_off(y.rank, idx, sb)];
        double r = !strcmp(op, "Add")   ? a + b
                   : !strcmp(op, "Sub") ? a - b
                   : !strcmp(op, "Mul") ? a * b
                   : !strcmp(op, "Div") ? (is_float ? a / b : trunc(a / b))
                   : !strcmp(op, "Max") ? fmax(a, b)
                                        : fmin(a, b);
        if (!is_float && (!strcmp(op, "Add") || !strcmp(op, "Sub") || !strcmp(op, "Mul"))) {
            /* exactly, modulo 2^64 (a double cannot hold every product) */
            const uint64_t ua = (uint64_t)(int64_t)a, ub = (uint64_t)(int64_t)b;
            const uint64_t u = !strcmp(op, "Add") ? ua + ub : !strcmp(op, "Sub") ? ua - ub
                                                                                : ua * ub;
            r = dt == LOOM_DTYPE_U64 ? (double)u
                                     : wrap_int((double)(u & 0xffffffffu), dt);
        }
        want[i] = r;
    }
    if (tc_run(&c, line) && !check_out(&c, 0, dt, y, want, 0, is_float ? 1e-15 : 0, line))
        printf("    (%s, dtype %d)\n", op, (int)dt);
    tc_free(&c);
}

static void test_float64_and_narrow_integer_arithmetic(void)
{
    static const char *const ops[] = {"Add", "Sub", "Mul", "Div", "Max", "Min"};
    static const struct {
        loom_dtype dt;
        double lo, hi;
    } types[] = {{LOOM_DTYPE_F64, -1e3, 1e3}, {I8, -128, 127},       {U8, 0, 255},
                 {LOOM_DTYPE_I16, -3e4, 3e4}, {LOOM_DTYPE_U16, 0, 65535},
                 {LOOM_DTYPE_U32, 0, 4e9},    {LOOM_DTYPE_U64, 0, 4e6}};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
            check_arith(ops[o], types[t].dt, SHP(3, 1, 5), SHP(4, 1), types[t].lo, types[t].hi,
                        __LINE__);
            check_arith(ops[o], types[t].dt, SHP(37), SHP(37), types[t].lo, types[t].hi,
                        __LINE__);
        }
    /* variadic Max of three float64 inputs, a NaN propagating */
    tc c;
    tc_init(&c);
    double a[4] = {1, -2, NAN, 4}, b[1] = {0.5}, d[4] = {-1, 3, 2, 5};
    loom_value ins[3] = {tc_input(&c, LOOM_DTYPE_F64, SHP(4), a),
                         tc_input(&c, LOOM_DTYPE_F64, SHP(1), b),
                         tc_input(&c, LOOM_DTYPE_F64, SHP(4), d)};
    CU_ASSERT_EQUAL(tc_node(&c, "Max", ins, 3, NULL, 0, 1), LOOM_OK);
    double want[4] = {1, 3, NAN, 5};
    if (tc_run(&c, __LINE__))
        check_out(&c, 0, LOOM_DTYPE_F64, SHP(4), want, 0, 0, __LINE__);
    tc_free(&c);
}

static void test_float64_neg_abs_cast_einsum_logsumexp(void)
{
    /* Neg, Abs */
    for (int k = 0; k < 2; k++) {
        tc c;
        tc_init(&c);
        double *xv = tc_random(&c, LOOM_DTYPE_F64, 29, -1e6, 1e6), *want = tc_dbuf(&c, 29);
        for (int i = 0; i < 29; i++)
            want[i] = k ? fabs(xv[i]) : -xv[i];
        loom_value in = tc_input(&c, LOOM_DTYPE_F64, SHP(29), xv);
        CU_ASSERT_EQUAL(tc_node(&c, k ? "Abs" : "Neg", &in, 1, NULL, 0, 1), LOOM_OK);
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, LOOM_DTYPE_F64, SHP(29), want, 0, 0, __LINE__);
        tc_free(&c);
    }
    /* Cast float64 <-> float32, int32, uint16, uint64, bool; float64 -> float16 (the test
     * helpers write no float16 data) */
    static const loom_dtype others[] = {F32, LOOM_DTYPE_F16, LOOM_DTYPE_I32, LOOM_DTYPE_U16,
                                        LOOM_DTYPE_U64, LOOM_DTYPE_BOOL};
    for (size_t o = 0; o < sizeof others / sizeof others[0]; o++)
        for (int dir = 0; dir < (others[o] == LOOM_DTYPE_F16 ? 1 : 2); dir++) {
            const loom_dtype from = dir ? others[o] : LOOM_DTYPE_F64;
            const loom_dtype to = dir ? LOOM_DTYPE_F64 : others[o];
            tc c;
            tc_init(&c);
            const int is_int = others[o] != F32 && others[o] != LOOM_DTYPE_F16;
            double *xv = tc_random(&c, from, 23, is_int ? 0 : -100, is_int ? 1000 : 100);
            double *want = tc_dbuf(&c, 23);
            for (int i = 0; i < 23; i++) {
                double v = xv[i];
                if (to == LOOM_DTYPE_BOOL)
                    v = v != 0;
                else if (to == F32)
                    v = (float)v;
                else if (to != LOOM_DTYPE_F64 && to != LOOM_DTYPE_F16)
                    v = trunc(v);
                want[i] = v;
            }
            loom_value in = tc_input(&c, from, SHP(23), xv);
            loom_attr at = loom_attr_int("to", (int64_t)to);
            CU_ASSERT_EQUAL(tc_node(&c, "Cast", &in, 1, &at, 1, 1), LOOM_OK);
            if (tc_run(&c, __LINE__) &&
                !check_out(&c, 0, to, SHP(23), want, 0, to == LOOM_DTYPE_F16 ? 1e-3 : 0,
                           __LINE__))
                printf("    (Cast %d -> %d)\n", (int)from, (int)to);
            tc_free(&c);
        }
    /* Einsum "bij,bjk->bik" in float64 */
    {
        tc c;
        tc_init(&c);
        const int64_t B = 2, I = 3, J = 5, K = 4;
        double *av = tc_random(&c, LOOM_DTYPE_F64, B * I * J, -2, 2);
        double *bv = tc_random(&c, LOOM_DTYPE_F64, B * J * K, -2, 2);
        double *want = tc_dbuf(&c, B * I * K);
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < I; i++)
                for (int64_t k = 0; k < K; k++)
                    for (int64_t j = 0; j < J; j++)
                        want[(b * I + i) * K + k] +=
                            av[(b * I + i) * J + j] * bv[(b * J + j) * K + k];
        loom_value ins[2] = {tc_input(&c, LOOM_DTYPE_F64, SHP(2, 3, 5), av),
                             tc_input(&c, LOOM_DTYPE_F64, SHP(2, 5, 4), bv)};
        loom_attr eq = loom_attr_string("equation", "bij,bjk->bik");
        CU_ASSERT_EQUAL(tc_node(&c, "Einsum", ins, 2, &eq, 1, 1), LOOM_OK);
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, LOOM_DTYPE_F64, SHP(2, 3, 4), want, 1e-12, 1e-12, __LINE__);
        tc_free(&c);
    }
    /* ReduceLogSumExp in float64: its kernel had a float64 path that supports() refused */
    {
        tc c;
        tc_init(&c);
        double *xv = tc_random(&c, LOOM_DTYPE_F64, 3 * 7, -50, 600), *want = tc_dbuf(&c, 3);
        for (int r = 0; r < 3; r++) {
            double m = -INFINITY, s = 0;
            for (int i = 0; i < 7; i++)
                m = fmax(m, xv[r * 7 + i]);
            for (int i = 0; i < 7; i++)
                s += exp(xv[r * 7 + i] - m);
            want[r] = m + log(s);
        }
        loom_value in = tc_input(&c, LOOM_DTYPE_F64, SHP(3, 7), xv);
        const int64_t ax[1] = {1};
        loom_attr at[2] = {loom_attr_ints("axes", 1, ax), loom_attr_int("keepdims", 0)};
        CU_ASSERT_EQUAL(tc_node(&c, "ReduceLogSumExp", &in, 1, at, 2, 1), LOOM_OK);
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, LOOM_DTYPE_F64, SHP(3), want, 0, 1e-14, __LINE__);
        tc_free(&c);
    }
}

static void test_clip_int8_and_pow_integer_exponent(void)
{
    /* Clip on int8 and uint8 with scalar bounds as inputs */
    static const loom_dtype dts[] = {I8, U8};
    for (int k = 0; k < 2; k++) {
        tc c;
        tc_init(&c);
        const double lo = k ? 0 : -128, hi = k ? 255 : 127, bmin = k ? 20 : -50,
                     bmax = k ? 200 : 60;
        double *xv = tc_random(&c, dts[k], 41, lo, hi), *want = tc_dbuf(&c, 41);
        for (int i = 0; i < 41; i++)
            want[i] = fmin(fmax(xv[i], bmin), bmax);
        loom_value ins[3] = {tc_input(&c, dts[k], SHP(41), xv), tc_scalar(&c, dts[k], bmin),
                             tc_scalar(&c, dts[k], bmax)};
        CU_ASSERT_EQUAL(tc_node(&c, "Clip", ins, 3, NULL, 0, 1), LOOM_OK);
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, dts[k], SHP(41), want, 0, 0, __LINE__);
        tc_free(&c);
    }
    /* Pow: float32 base, int32 and int64 exponents (ONNX's T1), broadcast */
    static const loom_dtype ex[] = {LOOM_DTYPE_I32, LOOM_DTYPE_I64};
    for (int k = 0; k < 2; k++) {
        tc c;
        tc_init(&c);
        double *xv = tc_random(&c, F32, 12, -3, 3), *ev = tc_random(&c, ex[k], 4, -3, 4);
        double *want = tc_dbuf(&c, 12);
        for (int i = 0; i < 12; i++)
            want[i] = pow(xv[i], ev[i % 4]);
        loom_value ins[2] = {tc_input(&c, F32, SHP(3, 4), xv), tc_input(&c, ex[k], SHP(4), ev)};
        CU_ASSERT_EQUAL(tc_node(&c, "Pow", ins, 2, NULL, 0, 1), LOOM_OK);
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, F32, SHP(3, 4), want, 1e-6, 1e-5, __LINE__);
        tc_free(&c);
    }
    /* an exponent of another float dtype, or a bool, is refused by name */
    tc c;
    tc_init(&c);
    double v[2] = {1, 2};
    loom_value ins[2] = {tc_input(&c, F32, SHP(2), v), tc_input(&c, LOOM_DTYPE_BOOL, SHP(2), v)};
    loom_status st = tc_node(&c, "Pow", ins, 2, NULL, 0, 1);
    expect_build_error(&c, st, LOOM_ERR_INVALID_ARGUMENT, "Pow", "(Y) has dtype bool", __LINE__);
    tc_free(&c);
}

/* Pow with an int32/int64 base (exact, wrapping modulo 2^bits; a negative integer exponent
 * truncates 1/a^-e), with a float32 exponent (double pow, truncated), and float32 bases with
 * the unsigned exponents: against naive repeated multiplication. */
static int64_t ref_ipow(int64_t a, int64_t e, loom_dtype dt)
{
    uint64_t r = 1;
    if (e < 0)
        r = a == 1 ? 1 : a == -1 ? (uint64_t)((e % 2) ? -1 : 1) : 0;
    for (int64_t i = 0; i < e; i++)
        r *= (uint64_t)a;
    return dt == LOOM_DTYPE_I32 ? (int64_t)(int32_t)(uint32_t)r : (int64_t)r;
}

static void check_pow(loom_dtype bt, loom_dtype et, int line)
{
    tc c;
    tc_init(&c);
    const int e_float = et == F32, e_signed = et == LOOM_DTYPE_I8 || et == LOOM_DTYPE_I16 ||
                                          et == LOOM_DTYPE_I32 || et == LOOM_DTYPE_I64 || e_float;
    /* exponents up to 40 make int32 and int64 results wrap */
    double *xv = tc_random(&c, bt, 35, -5, 5),
           *ev = tc_random(&c, et, 7, e_signed ? -3 : 0, e_float ? 5 : bt == F32 ? 6 : 40);
    if (e_float)
        for (int i = 0; i < 7; i++)
            ev[i] = round(ev[i] * 4) / 4; /* quarter steps: roots of negative bases give NaN */
    double *want = tc_dbuf(&c, 35);
    for (int i = 0; i < 35; i++) {
        const double a = xv[i], b = ev[i % 7];
        if (bt == F32)
            want[i] = pow(a, b);
        else if (!e_float)
            want[i] = (double)ref_ipow((int64_t)a, (int64_t)b, bt);
        else {
            const double p = pow(a, b);
            want[i] = !isfinite(p) ? (bt == LOOM_DTYPE_I32 ? INT32_MIN : (double)INT64_MIN)
                                   : trunc(p);
        }
    }
    loom_value ins[2] = {tc_input(&c, bt, SHP(5, 7), xv), tc_input(&c, et, SHP(7), ev)};
    CU_ASSERT_EQUAL(tc_node(&c, "Pow", ins, 2, NULL, 0, 1), LOOM_OK);
    if (tc_run(&c, line) &&
        !check_out(&c, 0, bt, SHP(5, 7), want, bt == F32 ? 1e-6 : 0, bt == F32 ? 1e-5 : 0, line))
        printf("    (Pow, base dtype %d, exponent dtype %d)\n", (int)bt, (int)et);
    tc_free(&c);
}

static void test_pow_integer_bases_and_unsigned_exponents(void)
{
    static const loom_dtype es[] = {LOOM_DTYPE_I8,  LOOM_DTYPE_U8,  LOOM_DTYPE_I16,
                                    LOOM_DTYPE_U16, LOOM_DTYPE_I32, LOOM_DTYPE_U32,
                                    LOOM_DTYPE_I64, LOOM_DTYPE_U64, F32};
    for (size_t k = 0; k < sizeof es / sizeof es[0]; k++) {
        check_pow(LOOM_DTYPE_I32, es[k], __LINE__);
        check_pow(LOOM_DTYPE_I64, es[k], __LINE__);
    }
    check_pow(F32, LOOM_DTYPE_U32, __LINE__);
    check_pow(F32, LOOM_DTYPE_U64, __LINE__);
    check_pow(F32, LOOM_DTYPE_U8, __LINE__);
}

/* float16 Min and Max (three inputs: the accumulating pass too, broadcast) and Mod (fmod=1,
 * mixed signs): computed through float32, against double references on values that float16
 * holds exactly (quarter steps). */
static void half_bits(uint16_t *h, const double *v, int n) /* exact for these values */
{
    for (int i = 0; i < n; i++) {
        const double a = fabs(v[i]);
        int e = 0;
        const double m = a == 0 ? 0 : frexp(a, &e) * 2 - 1; /* a = (1 + m) 2^(e - 1) */
        h[i] = (uint16_t)((signbit(v[i]) ? 0x8000 : 0) |
                          (a == 0 ? 0 : ((e - 1 + 15) << 10) | (int)(m * 1024)));
    }
}

static void test_float16_min_max_mod(void)
{
    const loom_dtype H = LOOM_DTYPE_F16;
    static const char *const ops[] = {"Min", "Max", "Mod"};
    for (int o = 0; o < 3; o++) {
        tc c;
        tc_init(&c);
        double *av = tc_random(&c, F32, 24, -8, 8), *bv = tc_random(&c, F32, 6, -8, 8),
               *cv = tc_random(&c, F32, 4, -8, 8);
        for (int i = 0; i < 24; i++)
            av[i] = round(av[i] * 4) / 4;
        for (int i = 0; i < 6; i++)
            bv[i] = round(bv[i] * 4) / 4 == 0 ? 0.75 : round(bv[i] * 4) / 4;
        for (int i = 0; i < 4; i++)
            cv[i] = round(cv[i] * 4) / 4;
        const int is_mod = o == 2;
        uint16_t *ah = tc_buf(&c, 24 * 2), *bh = tc_buf(&c, 6 * 2), *ch = tc_buf(&c, 4 * 2);
        half_bits(ah, av, 24);
        half_bits(bh, bv, 6);
        half_bits(ch, cv, 4);
        loom_value ins[3] = {tc_data(&c, 0, H, SHP(4, 6), ah), tc_data(&c, 0, H, SHP(6), bh),
                             is_mod ? LOOM_NO_VALUE : tc_data(&c, 0, H, SHP(4, 1), ch)};
        loom_attr fm = loom_attr_int("fmod", 1);
        CU_ASSERT_EQUAL(tc_node(&c, ops[o], ins, is_mod ? 2 : 3, is_mod ? &fm : NULL,
                                is_mod ? 1 : 0, 1),
                        LOOM_OK);
        double *want = tc_dbuf(&c, 24);
        for (int i = 0; i < 24; i++) {
            const double a = av[i], b = bv[i % 6], m = cv[i / 6];
            want[i] = o == 0 ? fmin(fmin(a, b), m) : o == 1 ? fmax(fmax(a, b), m) : fmod(a, b);
        }
        if (tc_run(&c, __LINE__) && !check_out(&c, 0, H, SHP(4, 6), want, 0, 0, __LINE__))
            printf("    (%s float16)\n", ops[o]);
        tc_free(&c);
    }
}

static void test_bitshift_left_and_right(void)
{
    loom_attr l = loom_attr_string("direction", "LEFT"), r = loom_attr_string("direction",
                                                                              "RIGHT");
    check_binary_int("BitShift", U8, SHP(3, 5), SHP(3, 5), 0, 255, &l, 1, 1, __LINE__);
    check_binary_int("BitShift", U8, SHP(2, 7), SHP(7), 0, 255, &r, 1, 0, __LINE__);
}

/* ===========================================================================================
 * Structural operators (graph/ops_tensor.c, backends/cpu/kernels_tensor.c)
 * =========================================================================================== */

static void check_trilu(shp x, int upper, int has_k, int64_t k, int line)
{
    tc c;
    tc_init(&c);
    double *xv = tc_random(&c, F32, numel(x), -5, 5), kv = (double)k;
    loom_value ins[2] = {tc_input(&c, F32, x, xv), LOOM_NO_VALUE};
    if (has_k)
        ins[1] = tc_input(&c, I64, SCALAR, &kv);
    loom_attr a = loom_attr_int("upper", upper);
    CU_ASSERT_EQUAL(tc_node(&c, "Trilu", ins, has_k ? 2 : 1, &a, 1, 1), LOOM_OK);
    double *want = tc_dbuf(&c, numel(x));
    int64_t idx[LOOM_MAX_RANK];
    for (int64_t i = 0; i < numel(x); i++) {
        unravel(i, x, idx);
        int64_t r = idx[x.rank - 2], col = idx[x.rank - 1], kk = has_k ? k : 0;
        want[i] = (upper ? col - r >= kk : col - r <= kk) ? xv[i] : 0;
    }
    if (tc_run(&c, line))
        check_out(&c, 0, F32, x, want, 0, 0, line);
    tc_free(&c);
}

static void test_trilu_upper_lower_with_k(void)
{
    for (int up = 0; up < 2; up++) {
        check_trilu(SHP(5, 7), up, 0, 0, __LINE__);
        check_trilu(SHP(2, 3, 7, 4), up, 1, -2, __LINE__);
        check_trilu(SHP(3, 5), up, 1, 9, __LINE__);
        check_trilu(SHP(3, 5), up, 1, -9, __LINE__);
        check_trilu(SHP(1, 6), up, 1, 1, __LINE__);
    }
}

static void check_cumsum(loom_dtype dt, shp x, int64_t axis, int excl, int rev, int line)
{
    tc c;
    tc_init(&c);
    double *xv = tc_random(&c, dt, numel(x), -9, 9), av = (double)axis;
    loom_value ins[2] = {tc_input(&c, dt, x, xv), tc_input(&c, I32, SCALAR, &av)};
    loom_attr a[2] = {loom_attr_int("exclusive", excl), loom_attr_int("reverse", rev)};
    CU_ASSERT_EQUAL(tc_node(&c, "CumSum", ins, 2, a, 2, 1), LOOM_OK);
    double *want = tc_dbuf(&c, numel(x));
    int64_t ax = axis < 0 ? axis + x.rank : axis, idx[LOOM_MAX_RANK], jdx[LOOM_MAX_RANK];
    for (int64_t i = 0; i < numel(x); i++) {
        unravel(i, x, idx);
        double sum = 0;
        for (int64_t j = 0; j < numel(x); j++) {
            unravel(j, x, jdx);
            int same = 1;
            for (uint32_t d = 0; d < x.rank; d++)
                same &= (int64_t)d == ax || jdx[d] == idx[d];
            int64_t a2 = jdx[ax], b2 = idx[ax];
            int take = rev ? (excl ? a2 > b2 : a2 >= b2) : (excl ? a2 < b2 : a2 <= b2);
            if (same && take)
                sum += xv[j];
        }
        want[i] = dt == F32 ? (float)sum : sum;
    }
    if (tc_run(&c, line))
        check_out(&c, 0, dt, x, want, 1e-5, 1e-5, line);
    tc_free(&c);
}

static void test_cumsum_exclusive_reverse_axes(void)
{
    for (int e = 0; e < 2; e++)
        for (int r = 0; r < 2; r++) {
            check_cumsum(F32, SHP(3, 5, 4), 1, e, r, __LINE__);
            check_cumsum(I64, SHP(7), 0, e, r, __LINE__);
            check_cumsum(I32, SHP(2, 3, 5), -1, e, r, __LINE__);
        }
}

static void test_hardmax_first_maximum(void)
{
    tc c;
    tc_init(&c);
    shp x = SHP(3, 4, 5);
    double *xv = tc_random(&c, F32, numel(x), -3, 3);
    xv[5] = xv[10] = 100; /* a tie along axis 1: the first wins */
    loom_value in = tc_input(&c, F32, x, xv);
    loom_attr a = loom_attr_int("axis", 1);
    CU_ASSERT_EQUAL(tc_node(&c, "Hardmax", &in, 1, &a, 1, 1), LOOM_OK);
    double *want = tc_dbuf(&c, numel(x));
    for (int64_t o = 0; o < 3; o++)
        for (int64_t i = 0; i < 5; i++) {
            int64_t best = 0;
            for (int64_t l = 1; l < 4; l++)
                if (xv[(o * 4 + l) * 5 + i] > xv[(o * 4 + best) * 5 + i])
                    best = l;
            want[(o * 4 + best) * 5 + i] = 1;
        }
    if (tc_run(&c, __LINE__))
        check_out(&c, 0, F32, x, want, 0, 0, __LINE__);
    tc_free(&c);
}

/* DepthToSpace by its definition: reshape, transpose, reshape (ONNX's text). */
static void check_d2s(const char *mode, int64_t b, int line)
{
    tc c;
    tc_init(&c);
    const int64_t N = 2, C = 3 * b * b, H = 3, W = 5;
    shp x = SHP(N, C, H, W), y = SHP(N, C / (b * b), H * b, W * b);
    double *xv = tc_random(&c, F32, numel(x), -9, 9);
    loom_value in = tc_input(&c, F32, x, xv);
    loom_attr a[2] = {loom_attr_int("blocksize", b), loom_attr_string("mode", mode)};
    CU_ASSERT_EQUAL(tc_node(&c, "DepthToSpace", &in, 1, a, 2, 1), LOOM_OK);
    double *want = tc_dbuf(&c, numel(y));
    const int64_t Cs = C / (b * b);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c2 = 0; c2 < Cs; c2++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < b; i++)
                    for (int64_t w = 0; w < W; w++)
                        for (int64_t j = 0; j < b; j++) {
                            int64_t ch = !strcmp(mode, "DCR") ? (i * b + j) * Cs + c2
                                                              : (c2 * b + i) * b + j;
                            want[((n * Cs + c2) * H * b + h * b + i) * W * b + w * b + j] =
                                xv[((n * C + ch) * H + h) * W + w];
                        }
    if (tc_run(&c, line))
        check_out(&c, 0, F32, y, want, 0, 0, line);
    /* SpaceToDepth undoes DCR: a second graph in the same helper state */
    if (!strcmp(mode, "DCR")) {
        tc c2;
        tc_init(&c2);
        loom_value in2 = tc_input(&c2, F32, y, want);
        loom_attr bs = loom_attr_int("blocksize", b);
        CU_ASSERT_EQUAL(tc_node(&c2, "SpaceToDepth", &in2, 1, &bs, 1, 1), LOOM_OK);
        if (tc_run(&c2, line))
            check_out(&c2, 0, F32, x, xv, 0, 0, line);
        tc_free(&c2);
    }
    tc_free(&c);
}

static void test_depth_to_space_and_back(void)
{
    check_d2s("DCR", 2, __LINE__);
    check_d2s("CRD", 2, __LINE__);
    check_d2s("DCR", 3, __LINE__);
    check_d2s("CRD", 3, __LINE__);
}

static void test_eyelike_with_k_and_dtype(void)
{
    for (int64_t k = -3; k <= 4; k += 7) {
        tc c;
        tc_init(&c);
        double v[35] = {0};
        loom_value in = tc_input(&c, F32, SHP(5, 7), v);
        loom_attr a[2] = {loom_attr_int("k", k), loom_attr_int("dtype", I32)};
        CU_ASSERT_EQUAL(tc_node(&c, "EyeLike", &in, 1, a, 2, 1), LOOM_OK);
        double want[35] = {0};
        for (int64_t i = 0; i < 5; i++)
            if (i + k >= 0 && i + k < 7)
                want[i * 7 + i + k] = 1;
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, I32, SHP(5, 7), want, 0, 0, __LINE__);
        tc_free(&c);
    }
}

static void test_onehot_axes_and_negative_indices(void)
{
    for (int64_t axis = -1; axis <= 1; axis++) {
        tc c;
        tc_init(&c);
        double ix[6] = {0, 3, -1, 4, 9, -5}, depth = 5, vals[2] = {-2, 7};
        loom_value ins[3] = {tc_input(&c, I64, SHP(2, 3), ix), tc_const(&c, F32, SCALAR, &depth),
                             tc_input(&c, F32, SHP(2), vals)};
        loom_attr a = loom_attr_int("axis", axis);
        CU_ASSERT_EQUAL(tc_node(&c, "OneHot", ins, 3, &a, 1, 1), LOOM_OK);
        int64_t ax = axis < 0 ? axis + 3 : axis;
        shp y = ax == 0 ? SHP(5, 2, 3) : ax == 1 ? SHP(2, 5, 3) : SHP(2, 3, 5);
        double *want = tc_dbuf(&c, 30);
        int64_t idx[3];
        for (int64_t i = 0; i < 30; i++) {
            unravel(i, y, idx);
            int64_t d = idx[ax], src[2], s = 0;
            for (int64_t k = 0; k < 3; k++)
                if (k != ax)
                    src[s++] = idx[k];
            int64_t v = (int64_t)ix[src[0] * 3 + src[1]];
            if (v < 0)
                v += 5;
            want[i] = v == d ? 7 : -2;
        }
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, F32, y, want, 0, 0, __LINE__);
        tc_free(&c);
    }
}

static void test_gather_nd_with_batch_dims(void)
{
    /* batch_dims 0: data [3, 4, 5], indices [2, 2, 2] -> [2, 2, 5] */
    tc c;
    tc_init(&c);
    shp x = SHP(3, 4, 5);
    double *xv = tc_random(&c, F32, numel(x), -9, 9);
    double ix[8] = {0, 1, 2, 3, -1, -4, 1, 0};
    loom_value ins[2] = {tc_input(&c, F32, x, xv), tc_input(&c, I64, SHP(2, 2, 2), ix)};
    CU_ASSERT_EQUAL(tc_node(&c, "GatherND", ins, 2, NULL, 0, 1), LOOM_OK);
    double want[20];
    for (int t = 0; t < 4; t++) {
        int64_t a = (int64_t)ix[2 * t], b = (int64_t)ix[2 * t + 1];
        a = a < 0 ? a + 3 : a;
        b = b < 0 ? b + 4 : b;
        for (int e = 0; e < 5; e++)
            want[t * 5 + e] = xv[(a * 4 + b) * 5 + e];
    }
    if (tc_run(&c, __LINE__))
        check_out(&c, 0, F32, SHP(2, 2, 5), want, 0, 0, __LINE__);
    tc_free(&c);
    /* batch_dims 1: data [3, 4, 5], indices [3, 1] -> [3, 5] */
    tc_init(&c);
    xv = tc_random(&c, I32, numel(x), -9, 9);
    double ib[3] = {3, 0, 2};
    loom_value ins2[2] = {tc_input(&c, I32, x, xv), tc_input(&c, I64, SHP(3, 1), ib)};
    loom_attr bd = loom_attr_int("batch_dims", 1);
    CU_ASSERT_EQUAL(tc_node(&c, "GatherND", ins2, 2, &bd, 1, 1), LOOM_OK);
    double want2[15];
    for (int b = 0; b < 3; b++)
        for (int e = 0; e < 5; e++)
            want2[b * 5 + e] = xv[(b * 4 + (int64_t)ib[b]) * 5 + e];
    if (tc_run(&c, __LINE__))
        check_out(&c, 0, I32, SHP(3, 5), want2, 0, 0, __LINE__);
    tc_free(&c);
}

static void test_scatter_nd_with_reductions(void)
{
    static const char *const reds[] = {"none", "add", "mul", "max", "min"};
    for (int r = 0; r < 5; r++) {
        tc c;
        tc_init(&c);
        shp x = SHP(4, 3, 2);
        double *xv = tc_random(&c, F32, numel(x), -9, 9);
        double ix[3] = {2, 0, r ? 2 : 3}; /* duplicates only with a reduction */
        double *uv = tc_random(&c, F32, 18, -9, 9);
        loom_value ins[3] = {tc_input(&c, F32, x, xv), tc_input(&c, I64, SHP(3, 1), ix),
                             tc_input(&c, F32, SHP(3, 3, 2), uv)};
        loom_attr a = loom_attr_string("reduction", reds[r]);
        CU_ASSERT_EQUAL(tc_node(&c, "ScatterND", ins, 3, &a, 1, 1), LOOM_OK);
        double *want = tc_dbuf(&c, 24);
        memcpy(want, xv, 24 * sizeof *want);
        for (int t = 0; t < 3; t++)
            for (int e = 0; e < 6; e++) {
                double *d = &want[(int64_t)ix[t] * 6 + e], u = uv[t * 6 + e];
                *d = r == 0 ? u : r == 1 ? (float)(*d + u) : r == 2 ? (float)(*d * u)
                     : r == 3 ? fmax(*d, u) : fmin(*d, u);
            }
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, F32, x, want, 1e-6, 1e-6, __LINE__);
        tc_free(&c);
    }
}

static void test_index_out_of_range_fails_the_run(void)
{
    tc c;
    tc_init(&c);
    double xv[6] = {0}, ix[2] = {1, 5};
    loom_value ins[2] = {tc_input(&c, F32, SHP(2, 3), xv), tc_input(&c, I64, SHP(1, 2), ix)};
    CU_ASSERT_EQUAL(tc_node(&c, "GatherND", ins, 2, NULL, 0, 1), LOOM_OK);
    loom_plan_options opt;
    memset(&opt, 0, sizeof opt);
    opt.struct_size = sizeof opt;
    opt.device = "cpu";
    opt.strict = 1;
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(c.g), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(test_rt, c.g, &opt, &c.plan), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_plan_make_outputs(c.plan, c.out, 1), LOOM_OK);
    c.n_out = 1;
    CU_ASSERT_EQUAL(loom_plan_run(c.plan, (const loom_tensor *const *)c.in, c.n_in, c.out, 1,
                                  NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "index 5"));
    tc_free(&c);
}

/* ===========================================================================================
 * The suite
 * =========================================================================================== */

#define T(f) {#f, f}
static const test_entry k_tests[] = {
    T(test_nll_loss_matches_reference),
    T(test_softmax_cross_entropy_matches_reference),
    T(test_loss_target_out_of_range_fails_at_run),
    T(test_loss_shape_errors_are_clear),
    T(test_reduce_l1_l2_logsum_logsumexp_sumsquare_match_reference),
    T(test_reduce_log_sum_exp_of_minus_infinity_is_minus_infinity),
    T(test_trigonometric_and_hyperbolic_match_libm),
    T(test_softsign_thresholded_relu_shrink_celu_isnan_isinf),
    T(test_mod_python_and_c_signs_broadcast),
    T(test_bitshift_left_and_right),
    T(test_wide_integers_and_float64),
    T(test_float64_and_narrow_integer_arithmetic),
    T(test_pow_integer_bases_and_unsigned_exponents),
    T(test_float16_min_max_mod),
    T(test_float64_neg_abs_cast_einsum_logsumexp),
    T(test_clip_int8_and_pow_integer_exponent),
    T(test_trilu_upper_lower_with_k),
    T(test_cumsum_exclusive_reverse_axes),
    T(test_hardmax_first_maximum),
    T(test_depth_to_space_and_back),
    T(test_eyelike_with_k_and_dtype),
    T(test_onehot_axes_and_negative_indices),
    T(test_gather_nd_with_batch_dims),
    T(test_scatter_nd_with_reductions),
    T(test_index_out_of_range_fails_the_run),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    const test_suite suite = {"ops_coverage", k_tests, test_rt_open_default, test_rt_close,
                              rng_reset, NULL};
    return test_run_suites(&suite, 1, argc, argv);
}
