/*
 * The fuse_epilogue pass (issue 16): which chains become one FusedConv / FusedMatMul / FusedGemm
 * node (bias Add, residual Add, each activation, SiLU as Sigmoid + Mul), which do not (an
 * intermediate with a second reader, or that is a graph output; a Conv that already has a bias
 * followed by a bias Add; nothing to absorb), the op the plan shows ("Conv+Add+Relu"), and the
 * numbers of every fused plan against the same graph planned with LOOM_FUSE=0 (no fusion).
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

static uint64_t rng = 0x853c49e6748fea9bull;

static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / (float)0x800000 - 1.0f;
}

static float *rand_array(size_t n)
{
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = frand();
    return a;
}

/* Plan G on cpu:0, fused (FUSE) or not, run it on X and write the first output into Y. Returns
 * the plan (the caller destroys it). */
static loom_plan *plan_run(loom_graph *g, int fuse, loom_tensor *const *in, size_t n_in,
                           loom_tensor *out)
{
    setenv("LOOM_FUSE", fuse ? "1" : "0", 1);
    loom_plan_options o = {.struct_size = sizeof o, .device = "cpu:0", .strict = 1};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    unsetenv("LOOM_FUSE");
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)in, n_in, &out, 1, NULL), LOOM_OK);
    return p;
}

/* The plan's node ops joined by spaces ("Conv+Add+Relu MaxPool"). */
static void plan_ops(const loom_plan *p, char *buf, size_t len)
{
    buf[0] = '\0';
    for (size_t i = 0; i < loom_plan_node_count(p); i++) {
        size_t at = strlen(buf);
        snprintf(buf + at, len - at, "%s%s", i ? " " : "", loom_plan_node_op(p, i));
    }
}

/* Runs G fused and unfused on INPUTS (N_IN of them, dims DIMS x RANK each) and compares the
 * output of OUT_NUMEL elements; returns the fused plan's ops in OPS. */
static void fused_vs_unfused(loom_graph *g, float *const *inputs, size_t n_in, uint32_t rank,
                             const int64_t *dims, const int64_t *ydims, uint32_t yrank,
                             size_t out_numel, char *ops, size_t ops_len)
{
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_tensor *in[4];
    for (size_t i = 0; i < n_in; i++)
        loom_tensor_wrap(LOOM_DTYPE_F32, rank, dims, inputs[i], &in[i]);
    float *y0 = calloc(out_numel, sizeof *y0), *y1 = calloc(out_numel, sizeof *y1);
    loom_tensor *t0, *t1;
    loom_tensor_wrap(LOOM_DTYPE_F32, yrank, ydims, y0, &t0);
    loom_tensor_wrap(LOOM_DTYPE_F32, yrank, ydims, y1, &t1);
    loom_plan *p0 = plan_run(g, 0, in, n_in, t0);
    loom_plan *p1 = plan_run(g, 1, in, n_in, t1);
    plan_ops(p1, ops, ops_len);
    int bad = 0;
    for (size_t i = 0; i < out_numel; i++)
        if (!(fabsf(y0[i] - y1[i]) <= 1e-5f * (1.0f + fabsf(y0[i])))) {
            if (bad++ < 3)
                printf("\n  [%zu] fused %.7g, unfused %.7g (%s)", i, y1[i], y0[i], ops);
        }
    CU_ASSERT_EQUAL(bad, 0);
    loom_plan_destroy(p0);
    loom_plan_destroy(p1);
    for (size_t i = 0; i < n_in; i++)
        loom_tensor_destroy(in[i]);
    loom_tensor_destroy(t0);
    loom_tensor_destroy(t1);
    free(y0);
    free(y1);
}

/* x [1, 8, 10, 10] -> Conv 3x3 (8 -> 8, pad 1, with or without B) -> what MAKE adds. */
typedef loom_value (*tail_fn)(loom_graph *g, loom_value conv, loom_value x, loom_value *extra);

static loom_value conv_graph(loom_graph *g, int with_b, loom_value *x)
{
    int64_t xd[4] = {1, 8, 10, 10}, wd[4] = {8, 8, 3, 3}, bd[1] = {8};
    *x = loom_input(g, "x", LOOM_DTYPE_F32, 4, xd);
    float *w = rand_array(8 * 8 * 9), *b = rand_array(8);
    int64_t pads[4] = {1, 1, 1, 1};
    loom_attr a[1] = {loom_attr_ints("pads", 4, pads)};
    loom_value ins[3] = {*x, loom_constant(g, "w", LOOM_DTYPE_F32, 4, wd, w),
                         with_b ? loom_constant(g, "b", LOOM_DTYPE_F32, 1, bd, b) : LOOM_NO_VALUE};
    loom_value y;
    loom_graph_op(g, "Conv", "conv", ins, with_b ? 3 : 2, a, 1, &y, 1);
    free(w);
    free(b);
    return y;
}

static loom_value op1(loom_graph *g, const char *op, const char *name, loom_value a,
                      const loom_attr *attrs, size_t n_attrs)
{
    loom_value y;
    loom_graph_op(g, op, name, &a, 1, attrs, n_attrs, &y, 1);
    return y;
}

static loom_value op2(loom_graph *g, const char *op, const char *name, loom_value a, loom_value b)
{
    loom_value ins[2] = {a, b}, y;
    loom_graph_op(g, op, name, ins, 2, NULL, 0, &y, 1);
    return y;
}

static void run_conv_case(const char *what, int with_b, int bias_add, int residual,
                          const char *act, const char *want_ops)
{
    loom_graph *g = loom_graph_create(what);
    loom_value x;
    loom_value y = conv_graph(g, with_b, &x);
    if (bias_add) {
        int64_t cd[3] = {8, 1, 1};
        float *c = rand_array(8);
        y = op2(g, "Add", "bias_add", y, loom_constant(g, "c", LOOM_DTYPE_F32, 3, cd, c));
        free(c);
    }
    if (residual)
        y = op2(g, "Add", "res_add", x, y); /* the residual first: either order fuses */
    if (act) {
        if (!strcmp(act, "SiLU")) {
            loom_value s = op1(g, "Sigmoid", "sig", y, NULL, 0);
            y = op2(g, "Mul", "silu", y, s);
        } else if (!strcmp(act, "Clip")) {
            float lo = 0.0f, hi = 6.0f;
            loom_value ins[3] = {y, loom_constant(g, "lo", LOOM_DTYPE_F32, 0, NULL, &lo),
                                 loom_constant(g, "hi", LOOM_DTYPE_F32, 0, NULL, &hi)};
            loom_graph_op(g, "Clip", "relu6", ins, 3, NULL, 0, &y, 1);
        } else if (!strcmp(act, "HardSigmoid")) {
            loom_attr a[2] = {loom_attr_float("alpha", 0.3f), loom_attr_float("beta", 0.4f)};
            y = op1(g, act, "act", y, a, 2);
        } else if (!strcmp(act, "LeakyRelu")) {
            loom_attr a[1] = {loom_attr_float("alpha", 0.2f)};
            y = op1(g, act, "act", y, a, 1);
        } else {
            y = op1(g, act, "act", y, NULL, 0);
        }
    }
    loom_output(g, y, "y");
    float *xv = rand_array(800);
    int64_t xd[4] = {1, 8, 10, 10};
    char ops[256];
    fused_vs_unfused(g, &xv, 1, 4, xd, xd, 4, 800, ops, sizeof ops);
    if (strcmp(ops, want_ops) != 0)
        printf("\n  %s: plan ops '%s', want '%s'", what, ops, want_ops);
    CU_ASSERT_STRING_EQUAL(ops, want_ops);
    free(xv);
    loom_graph_destroy(g);
}

static void test_conv_chains_fuse_into_one_node(void)
{
    run_conv_case("relu", 1, 0, 0, "Relu", "Conv+Relu");
    run_conv_case("bias_res_hswish", 0, 1, 1, "HardSwish", "Conv+Add+Add+HardSwish");
    run_conv_case("res", 1, 0, 1, NULL, "Conv+Add");
    run_conv_case("bias", 0, 1, 0, NULL, "Conv+Add");
    run_conv_case("relu6", 1, 0, 1, "Clip", "Conv+Add+Clip");
    run_conv_case("hsig", 1, 0, 0, "HardSigmoid", "Conv+HardSigmoid");
    run_conv_case("sigmoid", 1, 0, 0, "Sigmoid", "Conv+Sigmoid");
    run_conv_case("silu", 1, 0, 0, "SiLU", "Conv+Sigmoid+Mul");
    run_conv_case("silu_res", 0, 1, 1, "SiLU", "Conv+Add+Add+Sigmoid+Mul");
    run_conv_case("gelu", 1, 0, 0, "Gelu", "Conv+Gelu");
    run_conv_case("leaky", 1, 0, 0, "LeakyRelu", "Conv+LeakyRelu");
}

static void test_second_reader_or_output_stops_the_chain(void)
{
    /* conv -> relu, and conv is also an output: nothing fuses. */
    loom_graph *g = loom_graph_create("two_readers");
    loom_value x;
    loom_value c = conv_graph(g, 1, &x);
    loom_value r = op1(g, "Relu", "relu", c, NULL, 0);
    loom_value s = op2(g, "Add", "sum", r, c); /* c read twice: by relu and by sum */
    loom_output(g, s, "y");
    float *xv = rand_array(800);
    int64_t xd[4] = {1, 8, 10, 10};
    char ops[256];
    fused_vs_unfused(g, &xv, 1, 4, xd, xd, 4, 800, ops, sizeof ops);
    CU_ASSERT_STRING_EQUAL(ops, "Conv Relu Add");
    loom_graph_destroy(g);

    /* The Add's result has a second reader: Conv+Add fuses, the Relu stays on its own. */
    g = loom_graph_create("add_read_twice");
    c = conv_graph(g, 1, &x);
    loom_value a = op2(g, "Add", "res", c, x);
    r = op1(g, "Relu", "relu", a, NULL, 0);
    s = op2(g, "Mul", "mul", r, a);
    loom_output(g, s, "y");
    fused_vs_unfused(g, &xv, 1, 4, xd, xd, 4, 800, ops, sizeof ops);
    CU_ASSERT_STRING_EQUAL(ops, "Conv+Add Relu Mul");
    loom_graph_destroy(g);

    /* An intermediate that is a graph output is not absorbed. */
    g = loom_graph_create("intermediate_output");
    c = conv_graph(g, 1, &x);
    loom_output(g, c, "conv_out");
    loom_output(g, op1(g, "Relu", "relu", c, NULL, 0), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    setenv("LOOM_FUSE", "1", 1);
    loom_plan_options o = {.struct_size = sizeof o, .device = "cpu:0"};
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    unsetenv("LOOM_FUSE");
    plan_ops(p, ops, sizeof ops);
    CU_ASSERT_STRING_EQUAL(ops, "Conv Relu");
    loom_plan_destroy(p);
    loom_graph_destroy(g);

    /* A Conv that has B and a second bias Add: the Add is neither a bias nor a residual. */
    run_conv_case("double_bias", 1, 1, 0, "Relu", "Conv Add Relu");
    /* Nothing after the conv: nothing to fuse. */
    run_conv_case("plain", 1, 0, 0, NULL, "Conv");
    free(xv);
}

/* conv (x [1, 8, 10, 10], 3x3 pad 1) -> ACT (or nothing) -> MaxPool with ATTRS: the plan's ops
 * are WANT, and fused and unfused runs agree. */
static void run_pool_case(const char *what, const char *act, const loom_attr *attrs,
                          size_t n_attrs, int indices, const char *want)
{
    loom_graph *g = loom_graph_create(what);
    loom_value x;
    loom_value y = conv_graph(g, 1, &x);
    if (act)
        y = op1(g, act, "act", y, NULL, 0);
    loom_value outs[2];
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "MaxPool", "pool", &y, 1, attrs, n_attrs, outs,
                                        indices ? 2 : 1), LOOM_OK);
    loom_output(g, outs[0], "y"); /* the Indices output, when there is one, is not read */
    loom_dtype dt;
    uint32_t rank = 0;
    int64_t yd[LOOM_MAX_RANK];
    CU_ASSERT_EQUAL_FATAL(loom_value_info(g, outs[0], &dt, &rank, yd), LOOM_OK);
    CU_ASSERT_FATAL(rank == 4);
    float *xv = rand_array(800);
    int64_t xd[4] = {1, 8, 10, 10};
    char ops[256];
    fused_vs_unfused(g, &xv, 1, 4, xd, yd, 4, (size_t)(yd[0] * yd[1] * yd[2] * yd[3]), ops,
                     sizeof ops);
    if (strcmp(ops, want) != 0)
        printf("\n  %s: plan ops '%s', want '%s'", what, ops, want);
    CU_ASSERT_STRING_EQUAL(ops, want);
    free(xv);
    loom_graph_destroy(g);
}

static void test_maxpool_fuses_after_conv(void)
{
    int64_t k2[2] = {2, 2}, k3[2] = {3, 3}, s2[2] = {2, 2}, pads[4] = {1, 1, 1, 1};
    loom_attr a22[2] = {loom_attr_ints("kernel_shape", 2, k2), loom_attr_ints("strides", 2, s2)};
    loom_attr a3[1] = {loom_attr_ints("kernel_shape", 2, k3)};
    loom_attr a3s2p[3] = {loom_attr_ints("kernel_shape", 2, k3), loom_attr_ints("strides", 2, s2),
                          loom_attr_ints("pads", 4, pads)};
    loom_attr ceil[3] = {loom_attr_ints("kernel_shape", 2, k3), loom_attr_ints("strides", 2, s2),
                         loom_attr_int("ceil_mode", 1)};
    run_pool_case("relu_pool", "Relu", a22, 2, 0, "Conv+Relu+MaxPool");
    run_pool_case("pool", NULL, a22, 2, 0, "Conv+MaxPool");
    run_pool_case("gelu_pool3", "Gelu", a3, 1, 0, "Conv+Gelu+MaxPool");
    /* Padding, ceil rounding and the Indices output are not FusedConv's: the pool stays. */
    run_pool_case("padded", "Relu", a3s2p, 3, 0, "Conv+Relu MaxPool");
    run_pool_case("ceil", "Relu", ceil, 3, 0, "Conv+Relu MaxPool");
    run_pool_case("indices", "Relu", a22, 2, 1, "Conv+Relu MaxPool");
}

/* FusedConv's pool attributes from the C API: the pooled shape is inferred; a malformed pool
 * attribute or a conv output smaller than the window is refused at the node, naming it. */
static void test_fused_conv_pool_attributes_are_checked(void)
{
    static const struct {
        const char *pool;
        int64_t k[2], s[2];
        int64_t want_h, want_w; /* 0: refused */
        const char *says;
    } cs[] = {
        {"MaxPool", {2, 2}, {2, 2}, 5, 5, NULL},
        {"MaxPool", {3, 3}, {2, 2}, 4, 4, NULL},
        {"MaxPool", {0, 2}, {2, 2}, 0, 0, "pool_kernel"},
        {"MaxPool", {2, 2}, {-1, 2}, 0, 0, "pool_strides"},
        {"AveragePool", {2, 2}, {2, 2}, 0, 0, "'pool'"},
        {"MaxPool", {11, 2}, {1, 1}, 0, 0, "at least the pool kernel"},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        loom_graph *g = loom_graph_create("fused_pool");
        int64_t xd[4] = {1, 8, 10, 10}, wd[4] = {4, 8, 3, 3}, pads[4] = {1, 1, 1, 1};
        float *w = rand_array(4 * 8 * 9);
        loom_value ins[2] = {loom_input(g, "x", LOOM_DTYPE_F32, 4, xd),
                             loom_constant(g, "w", LOOM_DTYPE_F32, 4, wd, w)};
        loom_attr a[5] = {loom_attr_ints("pads", 4, pads), loom_attr_string("activation", "Relu"),
                          loom_attr_string("pool", cs[i].pool),
                          loom_attr_ints("pool_kernel", 2, cs[i].k),
                          loom_attr_ints("pool_strides", 2, cs[i].s)};
        loom_value y = LOOM_NO_VALUE;
        loom_status st = loom_graph_op(g, "FusedConv", "conv", ins, 2, a, 5, &y, 1);
        if (cs[i].want_h) {
            CU_ASSERT_EQUAL(st, LOOM_OK);
            int64_t yd[LOOM_MAX_RANK];
            uint32_t rank = 0;
            loom_dtype dt;
            CU_ASSERT_EQUAL(loom_value_info(g, y, &dt, &rank, yd), LOOM_OK);
            CU_ASSERT(rank == 4 && yd[2] == cs[i].want_h && yd[3] == cs[i].want_w);
        } else {
            CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
            if (!strstr(loom_last_error(), cs[i].says))
                printf("\n  case %zu: '%s' does not say '%s'", i, loom_last_error(), cs[i].says);
            CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), cs[i].says));
        }
        free(w);
        loom_graph_destroy(g);
    }
}

static void test_matmul_and_gemm_fuse(void)
{
    /* MatMul [2, 5, 16] x [16, 24] + bias [24] + GELU; a residual of the output's shape. */
    loom_graph *g = loom_graph_create("matmul");
    int64_t ad[3] = {2, 5, 16}, wd[2] = {16, 24}, bd[1] = {24}, yd[3] = {2, 5, 24};
    float *w = rand_array(16 * 24), *b = rand_array(24);
    loom_value a = loom_input(g, "a", LOOM_DTYPE_F32, 3, ad);
    loom_value z = loom_input(g, "z", LOOM_DTYPE_F32, 3, yd);
    loom_value m = op2(g, "MatMul", "fc", a, loom_constant(g, "w", LOOM_DTYPE_F32, 2, wd, w));
    m = op2(g, "Add", "fc_bias", loom_constant(g, "b", LOOM_DTYPE_F32, 1, bd, b), m);
    m = op2(g, "Add", "res", m, z);
    m = op1(g, "Gelu", "gelu", m, NULL, 0);
    loom_output(g, m, "y");
    float *av = rand_array(160), *zv = rand_array(240);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_tensor *in[2], *out;
    loom_tensor_wrap(LOOM_DTYPE_F32, 3, ad, av, &in[0]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 3, yd, zv, &in[1]);
    float y0[240], y1[240];
    loom_tensor_wrap(LOOM_DTYPE_F32, 3, yd, y0, &out);
    loom_plan *p0 = plan_run(g, 0, in, 2, out);
    loom_tensor_destroy(out);
    loom_tensor_wrap(LOOM_DTYPE_F32, 3, yd, y1, &out);
    loom_plan *p1 = plan_run(g, 1, in, 2, out);
    char ops[256];
    plan_ops(p1, ops, sizeof ops);
    CU_ASSERT_STRING_EQUAL(ops, "MatMul+Add+Add+Gelu");
    for (int i = 0; i < 240; i++)
        CU_ASSERT(fabsf(y0[i] - y1[i]) <= 1e-5f * (1.0f + fabsf(y0[i])));
    loom_plan_destroy(p0);
    loom_plan_destroy(p1);
    loom_tensor_destroy(in[0]);
    loom_tensor_destroy(in[1]);
    loom_tensor_destroy(out);
    loom_graph_destroy(g);

    /* Gemm (transB, with C) + HardSwish. */
    g = loom_graph_create("gemm");
    int64_t xd[2] = {3, 16}, gw[2] = {24, 16}, gy[2] = {3, 24};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd);
    loom_attr t[1] = {loom_attr_int("transB", 1)};
    loom_value ins[3] = {x, loom_constant(g, "w", LOOM_DTYPE_F32, 2, gw, w),
                         loom_constant(g, "c", LOOM_DTYPE_F32, 1, bd, b)};
    loom_value yv;
    loom_graph_op(g, "Gemm", "fc", ins, 3, t, 1, &yv, 1);
    loom_output(g, op1(g, "HardSwish", "hs", yv, NULL, 0), "y");
    fused_vs_unfused(g, &av, 1, 2, xd, gy, 2, 72, ops, sizeof ops);
    CU_ASSERT_STRING_EQUAL(ops, "Gemm+HardSwish");
    loom_graph_destroy(g);
    free(w);
    free(b);
    free(av);
    free(zv);
}

static void test_pass_is_recorded_and_off_without_the_cpu_option(void)
{
    loom_graph *g = loom_graph_create("stage");
    loom_value x;
    loom_output(g, op1(g, "Relu", "relu", conv_graph(g, 1, &x), NULL, 0), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .device = "cpu:0"};
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    int found = 0;
    for (size_t i = 0; i < loom_plan_pass_count(p); i++) {
        loom_pass_info info = {.struct_size = sizeof info};
        CU_ASSERT_EQUAL(loom_plan_pass_info(p, i, &info), LOOM_OK);
        if (strcmp(info.name, "fuse_epilogue") == 0) {
            found = 1;
            CU_ASSERT_EQUAL(info.nodes_before, 2);
            CU_ASSERT_EQUAL(info.nodes_after, 1);
            CU_ASSERT_PTR_NOT_NULL(strstr(info.summary, "1 Conv"));
        }
    }
    CU_ASSERT(found);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "Conv+Relu");
    CU_ASSERT_STRING_EQUAL(loom_plan_node_name(p, 0), "conv");
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"conv_chains_fuse_into_one_node", test_conv_chains_fuse_into_one_node},
        {"second_reader_or_output_stops_the_chain", test_second_reader_or_output_stops_the_chain},
        {"matmul_and_gemm_fuse", test_matmul_and_gemm_fuse},
        {"maxpool_fuses_after_conv", test_maxpool_fuses_after_conv},
        {"fused_conv_pool_attributes_are_checked", test_fused_conv_pool_attributes_are_checked},
        {"pass_is_recorded_and_off_without_the_cpu_option",
         test_pass_is_recorded_and_off_without_the_cpu_option},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"fuse_epilogue", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
