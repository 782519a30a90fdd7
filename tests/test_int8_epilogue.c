/*
 * Tests of the int8 GEMM's fused epilogue (issue 14): MatMulInt8Dynamic with an activation
 * attribute (Gelu, GeluTanh, Relu) against naive loops that apply the same quantisation, the
 * bias and the activation in double precision (odd sizes, several panels, K not a multiple of 4,
 * one row and one column); and the quantize_int8_dynamic pass absorbing what follows a MatMul:
 * the bias Add and GELU as a Gelu node or in the Erf form exporters write (x / sqrt(2) or
 * x * 1/sqrt(2), Erf, + 1, times x, times 0.5, the 0.5 first or last), one node left, its output
 * against naive loops (the pass's weight quantisation redone here) and against the same plan
 * unfused (LOOM_FUSE=0); the chains it must leave alone (an intermediate value read twice or a
 * graph output, a divisor that is not sqrt(2)) left alone and right; ONNX Runtime's quantized
 * chain (DynamicQuantizeLinear ... Add) followed by the Erf GELU, fused into one node by
 * fuse_quantized_matmul, against ONNX's arithmetic; and OpenCL, which has no epilogue, refusing a
 * node with an activation (the CPU takes it). Run with LOOM_CPU_NO_VNNI=1 too (the portable
 * kernel).
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <loom/loom.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;

static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / (float)0x800000 - 1.0f; /* [-1, 1) */
}

typedef enum act { ACT_NONE, ACT_RELU, ACT_GELU, ACT_GELU_TANH } act;

static double apply(act a, double v)
{
    switch (a) {
    case ACT_RELU:
        return v < 0 ? 0 : v;
    case ACT_GELU:
        return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case ACT_GELU_TANH:
        return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    default:
        return v;
    }
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

/* Naive: row I of X [m, k] quantised symmetrically to [-127, 127] times int8 B [k, n] with
 * column scales SB, plus BIAS (or none), then A; into WANT [m, n]. */
static void naive(const float *x, const int8_t *b, const float *sb, const float *bias, act a,
                  int64_t m, int64_t k, int64_t n, double *want)
{
    for (int64_t i = 0; i < m; i++) {
        float amax = 0;
        for (int64_t t = 0; t < k; t++)
            amax = fmaxf(amax, fabsf(x[i * k + t]));
        const float sa = amax > 0 ? amax / 127.0f : 1.0f;
        for (int64_t j = 0; j < n; j++) {
            int64_t acc = 0;
            for (int64_t t = 0; t < k; t++) {
                float q = nearbyintf(x[i * k + t] / sa);
                q = fminf(127.0f, fmaxf(-127.0f, q));
                acc += (int64_t)q * b[t * n + j];
            }
            want[i * n + j] = apply(a, (double)acc * sa * sb[j] + (bias ? bias[j] : 0.0));
        }
    }
}

/* How many of Y [count] are further than 1e-4 (relative, plus 1e-4 absolute) from WANT; prints
 * the first few. */
static int count_bad(const float *y, const double *want, int64_t count, const char *what)
{
    int bad = 0;
    for (int64_t i = 0; i < count; i++)
        if (!(fabs(y[i] - want[i]) <= 1e-4 * (1.0 + fabs(want[i])))) {
            if (bad < 5)
                printf("\n  %s [%lld]: %.7f, want %.7f", what, (long long)i, y[i], want[i]);
            bad++;
        }
    return bad;
}

static const char *const act_names[] = {"", "Relu", "Gelu", "GeluTanh"};

/* The kernel on M x K x N with activation A, against the naive loops. */
static void check_kernel(int64_t m, int64_t k, int64_t n, int with_bias, act a)
{
    int8_t *b = malloc((size_t)(k * n));
    float *sb = malloc((size_t)n * sizeof *sb), *bias = malloc((size_t)n * sizeof *bias);
    float *x = malloc((size_t)(m * k) * sizeof *x), *y = calloc((size_t)(m * n), sizeof *y);
    double *want = malloc((size_t)(m * n) * sizeof *want);
    for (int64_t i = 0; i < k * n; i++)
        b[i] = (int8_t)(int)(frand() * 127.0f);
    for (int64_t j = 0; j < n; j++) {
        sb[j] = (0.2f + 0.01f * (float)(j % 7)) / (float)k;
        bias[j] = frand();
    }
    for (int64_t i = 0; i < m * k; i++)
        x[i] = frand() * 3.0f;
    loom_graph *g = loom_graph_create("int8ep");
    int64_t xd[2] = {m, k}, bd[2] = {k, n}, sd[1] = {n};
    loom_value ins[4] = {loom_input(g, "x", LOOM_DTYPE_F32, 2, xd),
                         loom_constant(g, "b", LOOM_DTYPE_I8, 2, bd, b),
                         loom_constant(g, "sb", LOOM_DTYPE_F32, 1, sd, sb),
                         with_bias ? loom_constant(g, "bias", LOOM_DTYPE_F32, 1, sd, bias)
                                   : LOOM_NO_VALUE};
    loom_attr at = loom_attr_string("activation", act_names[a]);
    loom_value out;
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "MatMulInt8Dynamic", "q", ins, with_bias ? 4 : 3,
                                        &at, 1, &out, 1), LOOM_OK);
    loom_output(g, out, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .device = "cpu"};
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(test_rt, g, &o, &p), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "MatMulInt8Dynamic");
    CU_ASSERT_EQUAL(run(p, x, m, k, y, n), LOOM_OK);
    naive(x, b, sb, with_bias ? bias : NULL, a, m, k, n, want);
    char what[96];
    snprintf(what, sizeof what, "%lldx%lldx%lld %s", (long long)m, (long long)k, (long long)n,
             act_names[a]);
    CU_ASSERT_EQUAL(count_bad(y, want, m * n, what), 0);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(b);
    free(sb);
    free(bias);
    free(x);
    free(y);
    free(want);
}

static void test_kernel_activation_matches_naive(void)
{
    check_kernel(7, 37, 70, 1, ACT_GELU);       /* two panels, K % 4 = 1, a partial row block */
    check_kernel(4, 64, 64, 0, ACT_GELU);       /* exactly one tile, no bias */
    check_kernel(1, 5, 1, 1, ACT_GELU_TANH);    /* one row, one column */
    check_kernel(33, 130, 200, 1, ACT_GELU_TANH);
    check_kernel(9, 16, 129, 1, ACT_RELU);
    check_kernel(9, 16, 129, 0, ACT_NONE);
}

static void test_unknown_activation_is_refused(void)
{
    loom_graph *g = loom_graph_create("int8bad");
    int8_t b[4 * 3] = {0};
    float sb[3] = {1, 1, 1};
    int64_t xd[2] = {2, 4}, bd[2] = {4, 3}, sd[1] = {3};
    loom_value ins[3] = {loom_input(g, "x", LOOM_DTYPE_F32, 2, xd),
                         loom_constant(g, "b", LOOM_DTYPE_I8, 2, bd, b),
                         loom_constant(g, "sb", LOOM_DTYPE_F32, 1, sd, sb)};
    loom_attr at = loom_attr_string("activation", "Swishy");
    loom_value out;
    CU_ASSERT_EQUAL(loom_graph_op(g, "MatMulInt8Dynamic", "q", ins, 3, &at, 1, &out, 1),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(strstr(loom_last_error(), "Swishy") != NULL);
    loom_graph_destroy(g);
}

/* A device without the epilogue (OpenCL) refuses a node with an activation, naming it: a strict
 * plan there fails, a free one runs the node on the CPU; without the activation it takes it. */
static void test_opencl_refuses_activation(void)
{
    char id[64] = "";
    int have = 0;
    for (size_t i = 0; i < loom_runtime_device_count(test_rt) && !have; i++)
        have = loom_runtime_device(test_rt, i, id, sizeof id, NULL) == LOOM_OK &&
               strncmp(id, "opencl:", 7) == 0;
    if (!have) {
        printf("(no OpenCL device: skipped) ");
        return;
    }
    for (int with_act = 0; with_act < 2; with_act++) {
        loom_graph *g = loom_graph_create("int8ocl");
        int8_t b[8 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
        float sb[3] = {0.1f, 0.2f, 0.3f};
        int64_t xd[2] = {2, 8}, bd[2] = {8, 3}, sd[1] = {3};
        loom_value ins[3] = {loom_input(g, "x", LOOM_DTYPE_F32, 2, xd),
                             loom_constant(g, "b", LOOM_DTYPE_I8, 2, bd, b),
                             loom_constant(g, "sb", LOOM_DTYPE_F32, 1, sd, sb)};
        loom_attr at = loom_attr_string("activation", "Gelu");
        loom_value out;
        CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "MatMulInt8Dynamic", "q", ins, 3,
                                            with_act ? &at : NULL, with_act ? 1 : 0, &out, 1),
                              LOOM_OK);
        loom_output(g, out, "y");
        CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
        loom_plan_options o = {.struct_size = sizeof o, .device = id, .strict = 1};
        loom_plan *p = NULL;
        loom_status st = loom_plan_create(test_rt, g, &o, &p);
        if (with_act) {
            CU_ASSERT_NOT_EQUAL(st, LOOM_OK);
            CU_ASSERT(strstr(loom_last_error(), "activation") != NULL);
            o.strict = 0;
            CU_ASSERT_EQUAL_FATAL(loom_plan_create(test_rt, g, &o, &p), LOOM_OK);
            CU_ASSERT(strncmp(loom_plan_node_device(p, 0), "cpu", 3) == 0);
        } else {
            CU_ASSERT_EQUAL(st, LOOM_OK);
        }
        loom_plan_destroy(p);
        loom_graph_destroy(g);
    }
}

/* ---- the pass ---------------------------------------------------------------------------- */

typedef enum gelu_form {
    FORM_NONE,      /* MatMul + Add only */
    FORM_ERF_LAST,  /* Div(x, sqrt2), Erf, Add 1, Mul x, Mul 0.5 (the fixtures' and PyTorch's) */
    FORM_ERF_FIRST, /* Mul(x, 1/sqrt2), Erf, Add 1, Mul(x, 0.5) then Mul by it */
    FORM_GELU_NODE, /* Gelu (approximate none) */
    FORM_GELU_TANH, /* Gelu (approximate tanh) */
    FORM_NOT_SQRT2, /* Div(x, 1.5): not GELU, left alone */
    FORM_READ_TWICE, /* the bias Add's output is a graph output too: its Gelu stays apart */
} gelu_form;

static loom_value scalar(loom_graph *g, const char *name, float v)
{
    return loom_constant(g, name, LOOM_DTYPE_F32, 0, NULL, &v);
}

static loom_value op2(loom_graph *g, const char *op, const char *name, loom_value a, loom_value b)
{
    loom_value ins[2] = {a, b}, y = LOOM_NO_VALUE;
    CU_ASSERT_EQUAL(loom_graph_op(g, op, name, ins, 2, NULL, 0, &y, 1), LOOM_OK);
    return y;
}

/* X [m, k] . W [k, n] + BIAS, then FORM; planned with int8-dynamic (FUSE: as usual, else with
 * LOOM_FUSE=0). */
static loom_plan *plan_chain(int64_t m, int64_t k, int64_t n, const float *w, const float *bias,
                             gelu_form form, int fuse)
{
    loom_graph *g = loom_graph_create("chain");
    int64_t xd[2] = {m, k}, wd[2] = {k, n}, bd[1] = {n};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd);
    loom_value mm = op2(g, "MatMul", "fc", x, loom_constant(g, "w", LOOM_DTYPE_F32, 2, wd, w));
    loom_value h = op2(g, "Add", "fc_bias", mm, loom_constant(g, "b", LOOM_DTYPE_F32, 1, bd, bias));
    loom_value y = h;
    switch (form) {
    case FORM_ERF_LAST:
    case FORM_NOT_SQRT2: {
        loom_value d = op2(g, "Div", "div", h,
                           scalar(g, "s2", form == FORM_NOT_SQRT2 ? 1.5f : 1.41421356f));
        loom_value e, in1[1] = {d};
        loom_graph_op(g, "Erf", "erf", in1, 1, NULL, 0, &e, 1);
        loom_value a = op2(g, "Add", "add1", scalar(g, "one", 1.0f), e);
        y = op2(g, "Mul", "half", op2(g, "Mul", "mulx", h, a), scalar(g, "h", 0.5f));
        break;
    }
    case FORM_ERF_FIRST: {
        loom_value d = op2(g, "Mul", "scale", scalar(g, "is2", 0.70710678f), h);
        loom_value e, in1[1] = {d};
        loom_graph_op(g, "Erf", "erf", in1, 1, NULL, 0, &e, 1);
        loom_value a = op2(g, "Add", "add1", e, scalar(g, "one", 1.0f));
        y = op2(g, "Mul", "mulx", a, op2(g, "Mul", "half", h, scalar(g, "h", 0.5f)));
        break;
    }
    case FORM_GELU_NODE:
    case FORM_GELU_TANH: {
        loom_attr ap = loom_attr_string("approximate", form == FORM_GELU_TANH ? "tanh" : "none");
        loom_value in1[1] = {h};
        CU_ASSERT_EQUAL(loom_graph_op(g, "Gelu", "gelu", in1, 1, &ap, 1, &y, 1), LOOM_OK);
        break;
    }
    case FORM_READ_TWICE: {
        loom_value in1[1] = {h};
        CU_ASSERT_EQUAL(loom_graph_op(g, "Gelu", "gelu", in1, 1, NULL, 0, &y, 1), LOOM_OK);
        break;
    }
    default:
        break;
    }
    loom_output(g, y, "y");
    if (form == FORM_READ_TWICE)
        loom_output(g, h, "h");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .precision = LOOM_PRECISION_INT8_DYNAMIC};
    loom_plan *p = NULL;
    if (!fuse)
        setenv("LOOM_FUSE", "0", 1);
    CU_ASSERT_EQUAL(loom_plan_create(test_rt, g, &o, &p), LOOM_OK);
    if (!fuse)
        unsetenv("LOOM_FUSE");
    loom_graph_destroy(g);
    return p;
}

/* Run a plan with two outputs (FORM_READ_TWICE): y, then h. */
static loom_status run2(loom_plan *p, float *x, int64_t rows, int64_t k, float *y, float *h,
                        int64_t n)
{
    loom_tensor *in, *out[2];
    int64_t xd[2] = {rows, k}, yd[2] = {rows, n};
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, xd, x, &in);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, yd, y, &out[0]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, yd, h, &out[1]);
    loom_status st = loom_plan_run(p, (const loom_tensor *const *)&in, 1, out, 2, NULL);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out[0]);
    loom_tensor_destroy(out[1]);
    return st;
}

static void check_pass(int64_t m, int64_t k, int64_t n, gelu_form form)
{
    float *w = malloc((size_t)(k * n) * sizeof *w), *bias = malloc((size_t)n * sizeof *bias);
    float *x = malloc((size_t)(m * k) * sizeof *x), *y = calloc((size_t)(m * n), sizeof *y);
    float *y0 = calloc((size_t)(m * n), sizeof *y0), *h = calloc((size_t)(m * n), sizeof *h);
    float *sb = malloc((size_t)n * sizeof *sb);
    int8_t *bq = malloc((size_t)(k * n));
    double *want = malloc((size_t)(m * n) * sizeof *want);
    for (int64_t i = 0; i < k * n; i++)
        w[i] = frand() / sqrtf((float)k) * 2.0f;
    for (int64_t j = 0; j < n; j++)
        bias[j] = frand() * 0.5f;
    for (int64_t i = 0; i < m * k; i++)
        x[i] = frand() * 2.0f;
    /* The pass's weight quantisation: one symmetric scale per column. */
    for (int64_t j = 0; j < n; j++) {
        float mx = 0;
        for (int64_t t = 0; t < k; t++)
            mx = fmaxf(mx, fabsf(w[t * n + j]));
        sb[j] = mx > 0 ? mx / 127.0f : 1.0f;
        for (int64_t t = 0; t < k; t++) {
            float q = nearbyintf(w[t * n + j] * (1.0f / sb[j]));
            bq[t * n + j] = (int8_t)fminf(127.0f, fmaxf(-127.0f, q));
        }
    }
    const act a = form == FORM_GELU_TANH                                  ? ACT_GELU_TANH
                  : form == FORM_NONE || form == FORM_NOT_SQRT2 ||
                          form == FORM_READ_TWICE                         ? ACT_NONE
                                                                          : ACT_GELU;
    naive(x, bq, sb, bias, a, m, k, n, want);
    if (form == FORM_NOT_SQRT2) /* 0.5 x (1 + erf(x / 1.5)) */
        for (int64_t i = 0; i < m * n; i++)
            want[i] = 0.5 * want[i] * (1.0 + erf(want[i] / 1.5));

    loom_plan *p = plan_chain(m, k, n, w, bias, form, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    /* not sqrt(2): the int8 node (bias absorbed), Div, Erf, Add, Mul, Mul */
    const size_t expect_nodes = form == FORM_NOT_SQRT2 ? 6 : form == FORM_READ_TWICE ? 2 : 1;
    CU_ASSERT_EQUAL(loom_plan_node_count(p), expect_nodes);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "MatMulInt8Dynamic");
    if (form == FORM_READ_TWICE) {
        CU_ASSERT_EQUAL(run2(p, x, m, k, y, h, n), LOOM_OK);
        CU_ASSERT_EQUAL(count_bad(h, want, m * n, "h (bias Add, read twice)"), 0);
        for (int64_t i = 0; i < m * n; i++)
            want[i] = apply(ACT_GELU, want[i]);
    } else {
        CU_ASSERT_EQUAL(run(p, x, m, k, y, n), LOOM_OK);
    }
    char what[64];
    snprintf(what, sizeof what, "form %d, %lldx%lldx%lld", (int)form, (long long)m, (long long)k,
             (long long)n);
    CU_ASSERT_EQUAL(count_bad(y, want, m * n, what), 0);
    loom_plan_destroy(p);

    /* The same graph unfused: the same numbers, to rounding. */
    if (form != FORM_READ_TWICE) {
        p = plan_chain(m, k, n, w, bias, form, 0);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT(loom_plan_node_count(p) > 1);
        CU_ASSERT_EQUAL(run(p, x, m, k, y0, n), LOOM_OK);
        double worst = 0;
        for (int64_t i = 0; i < m * n; i++)
            worst = fmax(worst, fabs((double)y[i] - y0[i]) / (1.0 + fabs(y0[i])));
        CU_ASSERT(worst < 1e-5);
        if (!(worst < 1e-5))
            printf("\n  %s: fused vs unfused %.3g", what, worst);
        loom_plan_destroy(p);
    }
    free(w);
    free(bias);
    free(x);
    free(y);
    free(y0);
    free(h);
    free(sb);
    free(bq);
    free(want);
}

static void test_pass_fuses_bias_and_gelu(void)
{
    check_pass(8, 96, 80, FORM_NONE);
    check_pass(8, 96, 80, FORM_ERF_LAST);
    check_pass(5, 37, 130, FORM_ERF_FIRST);
    check_pass(3, 64, 70, FORM_GELU_NODE);
    check_pass(3, 64, 70, FORM_GELU_TANH);
}

static void test_pass_leaves_what_is_not_a_chain(void)
{
    check_pass(4, 48, 33, FORM_NOT_SQRT2); /* bias absorbed, the rest left as it is */
    check_pass(4, 48, 33, FORM_READ_TWICE);
}

/* ---- quantized ONNX models: ONNX Runtime's chain followed by GELU ------------------------- */

/* DynamicQuantizeLinear + MatMulInteger + Cast + Mul (scales) + Add (bias), then GELU in the Erf
 * form: fused into one node with its activation; against naive loops of ONNX's arithmetic. */
static void test_quantized_chain_absorbs_gelu(void)
{
    const int64_t m = 5, k = 44, n = 70;
    uint8_t *w = malloc((size_t)(k * n)), wzp = 128;
    float ws[70], bias[70], x[5 * 44], y[5 * 70];
    for (int64_t i = 0; i < k * n; i++)
        w[i] = (uint8_t)(int)(128 + frand() * 120);
    for (int j = 0; j < n; j++) {
        ws[j] = 0.004f + 0.0001f * (float)j;
        bias[j] = frand() * 0.3f;
    }
    for (int i = 0; i < m * k; i++)
        x[i] = frand() * 2.0f + 0.2f;
    loom_graph *g = loom_graph_create("qdyn_gelu");
    int64_t xd[2] = {m, k}, wd[2] = {k, n}, nd[1] = {n};
    loom_value xv = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd), dq[3], mm, mf, sc, yv, h, e;
    CU_ASSERT_EQUAL(loom_graph_op(g, "DynamicQuantizeLinear", "dql", &xv, 1, NULL, 0, dq, 3),
                    LOOM_OK);
    loom_value mi_in[4] = {dq[0], loom_constant(g, "w", LOOM_DTYPE_U8, 2, wd, w), dq[2],
                           loom_constant(g, "wzp", LOOM_DTYPE_U8, 0, NULL, &wzp)};
    CU_ASSERT_EQUAL(loom_graph_op(g, "MatMulInteger", "mmi", mi_in, 4, NULL, 0, &mm, 1), LOOM_OK);
    loom_attr to = loom_attr_int("to", 1);
    CU_ASSERT_EQUAL(loom_graph_op(g, "Cast", "cast", &mm, 1, &to, 1, &mf, 1), LOOM_OK);
    sc = op2(g, "Mul", "scales", dq[1], loom_constant(g, "ws", LOOM_DTYPE_F32, 1, nd, ws));
    yv = op2(g, "Mul", "dequant", mf, sc);
    h = op2(g, "Add", "bias", yv, loom_constant(g, "b", LOOM_DTYPE_F32, 1, nd, bias));
    loom_value d = op2(g, "Div", "div", h, scalar(g, "s2", 1.41421356f));
    CU_ASSERT_EQUAL(loom_graph_op(g, "Erf", "erf", &d, 1, NULL, 0, &e, 1), LOOM_OK);
    loom_value out = op2(g, "Mul", "half",
                         op2(g, "Mul", "mulx", h, op2(g, "Add", "add1", e, scalar(g, "one", 1.0f))),
                         scalar(g, "h", 0.5f));
    loom_output(g, out, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(test_rt, g, NULL, &p), LOOM_OK);
    CU_ASSERT_EQUAL(loom_plan_node_count(p), 1);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "MatMulInt8Dynamic");
    CU_ASSERT_EQUAL(run(p, x, m, k, y, n), LOOM_OK);
    /* ONNX DynamicQuantizeLinear over the whole of x, then the integer sums. */
    float lo = 0, hi = 0;
    for (int i = 0; i < m * k; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    const float xs = (hi - lo) / 255.0f;
    const float xzp = fminf(255.0f, fmaxf(0.0f, nearbyintf(0.0f - lo / xs)));
    double *want = malloc((size_t)(m * n) * sizeof *want);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            int64_t acc = 0;
            for (int64_t t = 0; t < k; t++) {
                const float q = fminf(255.0f, fmaxf(0.0f, nearbyintf(x[i * k + t] / xs) + xzp));
                acc += ((int64_t)q - (int64_t)xzp) * ((int64_t)w[t * n + j] - wzp);
            }
            want[i * n + j] = apply(ACT_GELU, (double)((float)acc * (xs * ws[j]) + bias[j]));
        }
    CU_ASSERT_EQUAL(count_bad(y, want, m * n, "quantized chain + GELU"), 0);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(want);
    free(w);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"kernel_activation_matches_naive", test_kernel_activation_matches_naive},
        {"unknown_activation_is_refused", test_unknown_activation_is_refused},
        {"opencl_refuses_activation", test_opencl_refuses_activation},
        {"pass_fuses_bias_and_gelu", test_pass_fuses_bias_and_gelu},
        {"pass_leaves_what_is_not_a_chain", test_pass_leaves_what_is_not_a_chain},
        {"quantized_chain_absorbs_gelu", test_quantized_chain_absorbs_gelu},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"int8_epilogue", tests, test_rt_open_default, test_rt_close, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
