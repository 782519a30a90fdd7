/*
 * Elementwise, comparison, logic and rounding operators, the activations HardSigmoid ... Selu,
 * Sum and Mean, the generators (Shape, ConstantOfShape, Range, Dropout) and the quantisation
 * operators (QuantizeLinear ... QLinearConv, ConvInteger), through the public API (registry:
 * graph/ops_elementwise.c, ops_compare_logic.c, ops_activations.c, ops_generators.c,
 * ops_quantization.c; CPU kernels: backends/cpu/kernels_compare_logic_round.c,
 * kernels_generators.c, kernels_quantization.c): each graph is built with loom_graph_op, planned
 * on "cpu" with strict=1 and run, and its outputs compared with naive reference loops written
 * here from the ONNX opset-18 specification. Shapes cover broadcasting, odd sizes, scalars and
 * empty dimensions; malformed nodes must fail with a clear message. Inputs come from a
 * fixed-seed generator reseeded before every test.
 *
 * Run all tests: ./test_ops_elementwise_quant; only tests whose name contains WORD:
 * ./test_ops_elementwise_quant WORD.
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

/* ===========================================================================================
 * Unary operators
 * =========================================================================================== */

typedef double (*ref1)(double x, double a, double b);

static double r_hard_sigmoid(double x, double a, double b) { return fmax(0, fmin(1, a * x + b)); }
static double r_hard_swish(double x, double a, double b)
{
    (void)a, (void)b;
    return x * fmax(0, fmin(1, x / 6 + 0.5));
}
static double r_reciprocal(double x, double a, double b) { (void)a, (void)b; return 1 / x; }
static double r_floor(double x, double a, double b) { (void)a, (void)b; return floor(x); }
static double r_ceil(double x, double a, double b) { (void)a, (void)b; return ceil(x); }
/* Half to even, written out rather than through rint. */
static double r_round(double x, double a, double b)
{
    (void)a, (void)b;
    double f = floor(x), d = x - f;
    if (d > 0.5)
        return f + 1;
    if (d < 0.5)
        return f;
    return fmod(f, 2.0) == 0 ? f : f + 1;
}
static double r_sin(double x, double a, double b) { (void)a, (void)b; return sin(x); }
static double r_cos(double x, double a, double b) { (void)a, (void)b; return cos(x); }
static double r_softplus(double x, double a, double b) { (void)a, (void)b; return log(exp(x) + 1); }
static double r_elu(double x, double a, double b) { (void)b; return x < 0 ? a * (exp(x) - 1) : x; }
static double r_selu(double x, double a, double g)
{
    return x <= 0 ? g * (a * exp(x) - a) : g * x;
}
static double r_sign(double x, double a, double b)
{
    (void)a, (void)b;
    return x > 0 ? 1 : x < 0 ? -1 : 0;
}

typedef struct unary_case {
    const char *op;
    ref1 ref;
    double lo, hi;
    const char *attr_a, *attr_b; /* float attributes given explicitly, or NULL */
    double a, b;                 /* their values (or the defaults when not given) */
} unary_case;

static void run_unary(const unary_case *u, shp s, int line)
{
    tc c;
    tc_init(&c);
    int64_t n = numel(s);
    double *x = tc_random(&c, F32, n, u->lo, u->hi);
    if (strcmp(u->op, "Round") == 0 && n >= 8) { /* the ties */
        static const double ties[] = {-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49999997};
        for (int k = 0; k < 8; k++)
            x[k] = ties[k];
    }
    if (strcmp(u->op, "Reciprocal") == 0)
        for (int64_t k = 0; k < n; k++)
            if (fabs(x[k]) < 0.1)
                x[k] = 0.5;
    loom_value in = tc_input(&c, F32, s, x);
    loom_attr attrs[2];
    size_t na = 0;
    if (u->attr_a)
        attrs[na++] = loom_attr_float(u->attr_a, (float)u->a);
    if (u->attr_b)
        attrs[na++] = loom_attr_float(u->attr_b, (float)u->b);
    CU_ASSERT_EQUAL(tc_node(&c, u->op, &in, 1, attrs, na, 1), LOOM_OK);
    if (tc_run(&c, line)) {
        double *ref = tc_dbuf(&c, n);
        for (int64_t k = 0; k < n; k++)
            ref[k] = u->ref((float)x[k], (float)u->a, (float)u->b);
        check_out(&c, 0, F32, s, ref, 1e-5, 1e-5, line);
    }
    tc_free(&c);
}

static void test_unary_float_ops_match_reference(void)
{
    const double selu_a = 1.67326319217681884765625, selu_g = 1.05070102214813232421875;
    const unary_case cases[] = {
        {"HardSigmoid", r_hard_sigmoid, -5, 5, NULL, NULL, 0.2, 0.5},
        {"HardSigmoid", r_hard_sigmoid, -5, 5, "alpha", "beta", 0.5, 0.6},
        {"HardSwish", r_hard_swish, -5, 5, NULL, NULL, 0, 0},
        {"Reciprocal", r_reciprocal, -4, 4, NULL, NULL, 0, 0},
        {"Floor", r_floor, -10, 10, NULL, NULL, 0, 0},
        {"Ceil", r_ceil, -10, 10, NULL, NULL, 0, 0},
        {"Round", r_round, -10, 10, NULL, NULL, 0, 0},
        {"Sin", r_sin, -7, 7, NULL, NULL, 0, 0},
        {"Cos", r_cos, -7, 7, NULL, NULL, 0, 0},
        {"Softplus", r_softplus, -20, 20, NULL, NULL, 0, 0},
        {"Elu", r_elu, -4, 4, NULL, NULL, 1.0, 0},
        {"Elu", r_elu, -4, 4, "alpha", NULL, 0.3, 0},
        {"Selu", r_selu, -4, 4, NULL, NULL, selu_a, selu_g},
        {"Selu", r_selu, -4, 4, "alpha", "gamma", 2.0, 3.0},
        {"Sign", r_sign, -3, 3, NULL, NULL, 0, 0},
    };
    const shp shapes[] = {SHP(3, 5, 17), SHP(1001), SCALAR, SHP(0), SHP(2, 0, 3), SHP(40000)};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            run_unary(&cases[i], shapes[s], __LINE__);
}

static void test_sign_of_integer_dtypes(void)
{
    const loom_dtype dts[] = {I8, U8, I32, I64};
    for (size_t d = 0; d < 4; d++) {
        tc c;
        tc_init(&c);
        shp s = SHP(5, 7);
        double *x = tc_random(&c, dts[d], numel(s), dts[d] == U8 ? 0 : -100, 100);
        x[0] = 0;
        loom_value in = tc_input(&c, dts[d], s, x);
        CU_ASSERT_EQUAL(tc_node(&c, "Sign", &in, 1, NULL, 0, 1), LOOM_OK);
        if (tc_run(&c, __LINE__)) {
            double *ref = tc_dbuf(&c, numel(s));
            for (int64_t k = 0; k < numel(s); k++)
                ref[k] = r_sign(x[k], 0, 0);
            check_out(&c, 0, dts[d], s, ref, 0, 0, __LINE__);
        }
        tc_free(&c);
    }
}

/* ===========================================================================================
 * Binary: logic and comparisons, with broadcasting
 * =========================================================================================== */

typedef struct shape_pair {
    shp a, b;
} shape_pair;

static const shape_pair *pairs(size_t *n)
{
    static shape_pair p[9];
    p[0] = (shape_pair){SHP(3, 4), SHP(3, 4)};
    p[1] = (shape_pair){SHP(2, 3, 5), SCALAR};
    p[2] = (shape_pair){SCALAR, SHP(7)};
    p[3] = (shape_pair){SHP(3, 1, 5), SHP(4, 1)};
    p[4] = (shape_pair){SHP(1, 37), SHP(19, 1)};
    p[5] = (shape_pair){SHP(0, 3), SHP(3)};
    p[6] = (shape_pair){SHP(2, 1, 3, 1), SHP(1, 4, 1, 5)};
    p[7] = (shape_pair){SHP(200, 130), SHP(130)};
    p[8] = (shape_pair){SHP(1), SHP(1, 1)};
    *n = 9;
    return p;
}

typedef int (*ref2)(double a, double b);
static int r_and(double a, double b) { return a != 0 && b != 0; }
static int r_or(double a, double b) { return a != 0 || b != 0; }
static int r_xor(double a, double b) { return (a != 0) != (b != 0); }
static int r_eq(double a, double b) { return a == b; }
static int r_lt(double a, double b) { return a < b; }
static int r_gt(double a, double b) { return a > b; }
static int r_le(double a, double b) { return a <= b; }
static int r_ge(double a, double b) { return a >= b; }

static void run_binary(const char *op, ref2 ref, loom_dtype dt, shp sa, shp sb, int line)
{
    tc c;
    tc_init(&c);
    double lo = dt == U8 ? 0 : -5, hi = 5;
    double *a = tc_random(&c, dt, numel(sa), lo, hi);
    double *b = tc_random(&c, dt, numel(sb), lo, hi);
    if (dt == F32) { /* equal values must occur, and a NaN, which compares false */
        for (int64_t k = 0; k < numel(sa) && k < numel(sb); k += 3)
            a[k] = b[k];
        if (numel(sa) > 1)
            a[1] = NAN;
    }
    loom_value ins[2] = {tc_input(&c, dt, sa, a), tc_input(&c, dt, sb, b)};
    CU_ASSERT_EQUAL(tc_node(&c, op, ins, 2, NULL, 0, 1), LOOM_OK);
    if (tc_run(&c, line)) {
        shp so = bcast(sa, sb);
        int64_t n = numel(so), idx[LOOM_MAX_RANK];
        double *r = tc_dbuf(&c, n);
        for (int64_t k = 0; k < n; k++) {
            unravel(k, so, idx);
            r[k] = ref(a[bcast_off(so.rank, idx, sa)], b[bcast_off(so.rank, idx, sb)]);
        }
        check_out(&c, 0, BOOL, so, r, 0, 0, line);
    }
    tc_free(&c);
}

static void test_logic_ops_broadcast_and_match_reference(void)
{
    size_t np;
    const shape_pair *p = pairs(&np);
    for (size_t i = 0; i < np; i++) {
        run_binary("And", r_and, BOOL, p[i].a, p[i].b, __LINE__);
        run_binary("Or", r_or, BOOL, p[i].a, p[i].b, __LINE__);
        run_binary("Xor", r_xor, BOOL, p[i].a, p[i].b, __LINE__);
        run_binary("Equal", r_eq, BOOL, p[i].a, p[i].b, __LINE__);
    }
    /* Not */
    const shp shapes[] = {SHP(3, 7), SCALAR, SHP(0, 2), SHP(50000)};
    for (size_t s = 0; s < 4; s++) {
        tc c;
        tc_init(&c);
        double *x = tc_random(&c, BOOL, numel(shapes[s]), 0, 1);
        loom_value in = tc_input(&c, BOOL, shapes[s], x);
        CU_ASSERT_EQUAL(tc_node(&c, "Not", &in, 1, NULL, 0, 1), LOOM_OK);
        if (tc_run(&c, __LINE__)) {
            double *r = tc_dbuf(&c, numel(shapes[s]));
            for (int64_t k = 0; k < numel(shapes[s]); k++)
                r[k] = x[k] == 0;
            check_out(&c, 0, BOOL, shapes[s], r, 0, 0, __LINE__);
        }
        tc_free(&c);
    }
}

static void test_comparisons_of_every_numeric_dtype_broadcast(void)
{
    static const struct {
        const char *op;
        ref2 ref;
    } ops[] = {{"Equal", r_eq}, {"Less", r_lt}, {"Greater", r_gt}, {"LessOrEqual", r_le},
               {"GreaterOrEqual", r_ge}};
    const loom_dtype dts[] = {F32, I32, I64, I8, U8};
    size_t np;
    const shape_pair *p = pairs(&np);
    for (size_t o = 0; o < 5; o++)
        for (size_t d = 0; d < 5; d++)
            for (size_t i = 0; i < np; i++)
                run_binary(ops[o].op, ops[o].ref, dts[d], p[i].a, p[i].b, __LINE__);
}

static void test_int64_comparisons_are_exact_beyond_double_precision(void)
{
    tc c;
    tc_init(&c);
    int64_t av[2] = {INT64_C(9007199254740993), INT64_MIN};
    int64_t bv[2] = {INT64_C(9007199254740992), INT64_MIN + 1};
    shp s = SHP(2);
    loom_value ins[2] = {loom_constant(c.g, NULL, I64, 1, s.d, av),
                         loom_constant(c.g, NULL, I64, 1, s.d, bv)};
    double zero = 0;
    loom_value x = tc_input(&c, BOOL, SHP(1), &zero); /* keeps the node from being all-const */
    loom_value lt = LOOM_NO_VALUE, eq = LOOM_NO_VALUE, y = LOOM_NO_VALUE;
    loom_graph_op(c.g, "Less", NULL, ins, 2, NULL, 0, &lt, 1);
    loom_graph_op(c.g, "Equal", NULL, ins, 2, NULL, 0, &eq, 1);
    loom_value o1[2] = {lt, x}, o2[2] = {eq, x};
    loom_value y1 = LOOM_NO_VALUE;
    loom_graph_op(c.g, "Or", NULL, o1, 2, NULL, 0, &y1, 1);
    loom_graph_op(c.g, "Or", NULL, o2, 2, NULL, 0, &y, 1);
    loom_output(c.g, y1, "lt");
    loom_output(c.g, y, "eq");
    if (tc_run(&c, __LINE__)) {
        const double rlt[2] = {0, 1}, req[2] = {0, 0};
        check_out(&c, 0, BOOL, s, rlt, 0, 0, __LINE__);
        check_out(&c, 1, BOOL, s, req, 0, 0, __LINE__);
    }
    tc_free(&c);
}

/* ===========================================================================================
 * Sum and Mean
 * =========================================================================================== */

static void run_sum_mean(const char *op, const shp *shapes, size_t n_in, int line)
{
    tc c;
    tc_init(&c);
    double *data[4];
    loom_value ins[4];
    shp so = shapes[0];
    for (size_t i = 0; i < n_in; i++) {
        data[i] = tc_random(&c, F32, numel(shapes[i]), -3, 3);
        ins[i] = tc_input(&c, F32, shapes[i], data[i]);
        so = bcast(so, shapes[i]);
    }
    CU_ASSERT_EQUAL(tc_node(&c, op, ins, n_in, NULL, 0, 1), LOOM_OK);
    if (tc_run(&c, line)) {
        int64_t n = numel(so), idx[LOOM_MAX_RANK];
        double *r = tc_dbuf(&c, n);
        for (int64_t k = 0; k < n; k++) {
            unravel(k, so, idx);
            double s = 0;
            for (size_t i = 0; i < n_in; i++)
                s += data[i][bcast_off(so.rank, idx, shapes[i])];
            r[k] = op[0] == 'M' ? s / (double)n_in : s;
        }
        check_out(&c, 0, F32, so, r, 1e-5, 1e-5, line);
    }
    tc_free(&c);
}

static void test_sum_and_mean_are_variadic_and_broadcast(void)
{
    const shp one[] = {SHP(3, 4)};
    const shp two[] = {SHP(3, 1, 5), SHP(4, 1)};
    const shp three[] = {SHP(2, 3, 17), SHP(17), SHP(2, 1, 1)};
    const shp four[] = {SCALAR, SHP(0, 5), SHP(5), SHP(1, 1)};
    const shp big[] = {SHP(300, 200), SHP(300, 1), SHP(200)};
    const char *ops[] = {"Sum", "Mean"};
    for (int o = 0; o < 2; o++) {
        run_sum_mean(ops[o], one, 1, __LINE__);
        run_sum_mean(ops[o], two, 2, __LINE__);
        run_sum_mean(ops[o], three, 3, __LINE__);
        run_sum_mean(ops[o], four, 4, __LINE__);
        run_sum_mean(ops[o], big, 3, __LINE__);
    }
}

/* ===========================================================================================
 * Shape, ConstantOfShape, Range, Dropout
 * =========================================================================================== */

static void test_shape_honours_start_and_end(void)
{
    static const struct {
        int has_start, has_end;
        int64_t start, end, first, count;
    } cases[] = {
        {0, 0, 0, 0, 0, 4},  {1, 0, 1, 0, 1, 3},   {0, 1, 0, -1, 0, 3}, {1, 1, 1, 3, 1, 2},
        {1, 0, -1, 0, 3, 1}, {1, 1, -10, 10, 0, 4}, {1, 1, 3, 1, 3, 0}, {1, 1, 4, 4, 4, 0},
    };
    const int64_t dims[4] = {2, 0, 5, 7};
    for (int fold = 0; fold < 2; fold++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            tc c;
            tc_init(&c);
            loom_graph_set_folding(c.g, fold);
            double none = 0;
            loom_value x = tc_input(&c, F32, SHP(2, 0, 5, 7), &none);
            loom_attr attrs[2];
            size_t na = 0;
            if (cases[i].has_start)
                attrs[na++] = loom_attr_int("start", cases[i].start);
            if (cases[i].has_end)
                attrs[na++] = loom_attr_int("end", cases[i].end);
            CU_ASSERT_EQUAL(tc_node(&c, "Shape", &x, 1, attrs, na, 1), LOOM_OK);
            /* A Shape node never needs X's data: folded, it has none; planned, X is empty. */
            if (tc_run(&c, __LINE__)) {
                double ref[4];
                for (int64_t k = 0; k < cases[i].count; k++)
                    ref[k] = (double)dims[cases[i].first + k];
                check_out(&c, 0, I64, SHP(cases[i].count), ref, 0, 0, __LINE__);
            }
            tc_free(&c);
        }
}

static void test_shape_of_scalar_and_of_computed_value(void)
{
    tc c;
    tc_init(&c);
    double v = 3;
    loom_value x = tc_input(&c, F32, SHP(3, 1), (double[]){1, 2, 3});
    loom_value s = tc_input(&c, F32, SCALAR, &v);
    loom_value ins[2] = {x, s};
    loom_value sum = LOOM_NO_VALUE, sh = LOOM_NO_VALUE, sh0 = LOOM_NO_VALUE;
    loom_graph_op(c.g, "Sum", NULL, ins, 2, NULL, 0, &sum, 1);
    loom_graph_op(c.g, "Shape", NULL, &sum, 1, NULL, 0, &sh, 1);
    loom_graph_op(c.g, "Shape", NULL, &s, 1, NULL, 0, &sh0, 1);
    loom_output(c.g, sh, NULL);
    loom_output(c.g, sh0, NULL);
    if (tc_run(&c, __LINE__)) {
        const double ref[2] = {3, 1};
        check_out(&c, 0, I64, SHP(2), ref, 0, 0, __LINE__);
        check_out(&c, 1, I64, SHP(0), ref, 0, 0, __LINE__);
    }
    tc_free(&c);
}

/* ConstantOfShape(SHAPE) with ATTRS; the output must be DT of that shape filled with FILL. The
 * node is followed by an Identity-free path: Sum/Or with a graph input keeps it unfolded when
 * FOLD is 0. */
static void run_constant_of_shape(int fold, const int64_t *shape, size_t rank,
                                  const loom_attr *attrs, size_t na, loom_dtype dt, double fill,
                                  int line)
{
    tc c;
    tc_init(&c);
    loom_graph_set_folding(c.g, fold);
    int64_t len = (int64_t)rank;
    loom_value s = loom_constant(c.g, NULL, I64, 1, &len, shape);
    CU_ASSERT_EQUAL(tc_node(&c, "ConstantOfShape", &s, 1, attrs, na, 1), LOOM_OK);
    if (tc_run(&c, line)) {
        shp want = shp_make(shape, rank);
        double *ref = tc_dbuf(&c, numel(want));
        for (int64_t k = 0; k < numel(want); k++)
            ref[k] = fill;
        check_out(&c, 0, dt, want, ref, 0, 0, line);
    }
    tc_free(&c);
}

static void test_constant_of_shape_fills_every_dtype(void)
{
    const int64_t s23[2] = {2, 3}, s0[2] = {4, 0}, big[1] = {70000};
    for (int fold = 0; fold < 2; fold++) {
        run_constant_of_shape(fold, s23, 2, NULL, 0, F32, 0.0, __LINE__);
        loom_attr a1[] = {loom_attr_float("value", 2.5f)};
        run_constant_of_shape(fold, s23, 2, a1, 1, F32, 2.5, __LINE__);
        run_constant_of_shape(fold, big, 1, a1, 1, F32, 2.5, __LINE__);
        run_constant_of_shape(fold, NULL, 0, a1, 1, F32, 2.5, __LINE__); /* scalar */
        run_constant_of_shape(fold, s0, 2, a1, 1, F32, 2.5, __LINE__);
        loom_attr a2[] = {loom_attr_int("dtype", I64),
                          loom_attr_int("value_int", INT64_C(-7))};
        run_constant_of_shape(fold, s23, 2, a2, 2, I64, -7, __LINE__);
        loom_attr a3[] = {loom_attr_int("dtype", I32), loom_attr_float("value", 5.0f)};
        run_constant_of_shape(fold, s23, 2, a3, 2, I32, 5, __LINE__);
        loom_attr a4[] = {loom_attr_int("dtype", I8), loom_attr_int("value_int", -3)};
        run_constant_of_shape(fold, s23, 2, a4, 2, I8, -3, __LINE__);
        loom_attr a5[] = {loom_attr_int("dtype", BOOL), loom_attr_int("value_int", 1)};
        run_constant_of_shape(fold, big, 1, a5, 2, BOOL, 1, __LINE__);
        loom_attr a6[] = {loom_attr_int("dtype", U8), loom_attr_int("value_int", 200)};
        run_constant_of_shape(fold, s23, 2, a6, 2, U8, 200, __LINE__);
    }
}

static void run_range(loom_dtype dt, double start, double limit, double delta, int line)
{
    tc c;
    tc_init(&c);
    loom_graph_set_folding(c.g, 0);
    loom_value ins[3] = {tc_scalar(&c, dt, start), tc_scalar(&c, dt, limit),
                         tc_scalar(&c, dt, delta)};
    CU_ASSERT_EQUAL(tc_node(&c, "Range", ins, 3, NULL, 0, 1), LOOM_OK);
    if (tc_run(&c, line)) {
        /* ONNX: n = max(ceil((limit - start) / delta), 0); element i is start + i * delta. */
        double q = dt == F32 ? ceil((double)(float)((float)limit - (float)start) / delta)
                             : ceil((limit - start) / delta);
        int64_t n = q > 0 ? (int64_t)q : 0;
        double *ref = tc_dbuf(&c, n);
        for (int64_t k = 0; k < n; k++)
            ref[k] = start + (double)k * delta;
        check_out(&c, 0, dt, SHP(n), ref, 1e-6, 1e-6, line);
    }
    tc_free(&c);
}

static void test_range_counts_like_onnx(void)
{
    run_range(F32, 1, 5, 2, __LINE__);
    run_range(F32, 0, 1, 0.1, __LINE__);
    run_range(F32, 10, -3, -1.5, __LINE__);
    run_range(F32, 3, 3, 1, __LINE__);
    run_range(F32, 3, 1, 1, __LINE__);
    run_range(I32, 10, 6, -3, __LINE__);
    run_range(I32, -5, 100, 7, __LINE__);
    run_range(I64, 0, 12345, 1, __LINE__);
    run_range(I64, 5, 0, 1, __LINE__);
    run_range(I64, -1000000000000, 1000000000000, 300000000000, __LINE__);
}

static void test_dropout_is_identity_at_inference(void)
{
    for (int variant = 0; variant < 3; variant++) {
        tc c;
        tc_init(&c);
        shp s = SHP(4, 33);
        double *x = tc_random(&c, F32, numel(s), -2, 2);
        loom_value ins[3] = {tc_input(&c, F32, s, x), LOOM_NO_VALUE, LOOM_NO_VALUE};
        size_t n_in = 1;
        if (variant >= 1) {
            ins[1] = tc_scalar(&c, F32, 0.7);
            n_in = 2;
        }
        if (variant == 2) {
            ins[2] = tc_scalar(&c, BOOL, 0);
            n_in = 3;
        }
        loom_attr seed = loom_attr_int("seed", 42);
        size_t n_out = variant == 0 ? 1 : 2;
        CU_ASSERT_EQUAL(tc_node(&c, "Dropout", ins, n_in, &seed, variant == 1, n_out), LOOM_OK);
        if (tc_run(&c, __LINE__)) {
            check_out(&c, 0, F32, s, x, 0, 0, __LINE__);
            if (n_out > 1) {
                double *ones = tc_dbuf(&c, numel(s));
                for (int64_t k = 0; k < numel(s); k++)
                    ones[k] = 1;
                check_out(&c, 1, BOOL, s, ones, 0, 0, __LINE__);
            }
        }
        tc_free(&c);
    }
}

/* Runs the case's plan once more, into its outputs. */
static int rerun(tc *c)
{
    return loom_plan_run(c->plan, (const loom_tensor *const *)c->in, c->n_in, c->out, c->n_out,
                         NULL) == LOOM_OK;
}

/* Training Dropout per the spec: every element is either dropped (0, mask false) or kept and
 * scaled by 1 / (1 - ratio) (mask true); about 1 - ratio of them are kept (within 5 standard
 * deviations); a seed gives the same mask on every run; ratio 0 is the identity. */
static void test_dropout_training_drops_and_scales(void)
{
    const loom_dtype dts[] = {F32, F16, BF16};
    const double ratios[] = {0.3, 0.75, 0.0};
    for (size_t t = 0; t < 3; t++) {
        tc c;
        tc_init(&c);
        shp s = SHP(7, 301);
        const int64_t n = numel(s);
        const double ratio = ratios[t];
        /* 0.5, 1, 1.5 and 2, exact in every dtype (their float16 and bfloat16 bits spelt out:
         * the test helpers store only float32 and integers) */
        static const double vals[4] = {0.5, 1.0, 1.5, 2.0};
        static const uint16_t f16[4] = {0x3800, 0x3c00, 0x3e00, 0x4000};
        static const uint16_t bf16[4] = {0x3f00, 0x3f80, 0x3fc0, 0x4000};
        double *x = tc_dbuf(&c, n);
        void *xd = tc_buf(&c, (size_t)n * (dts[t] == F32 ? 4 : 2));
        for (int64_t i = 0; i < n; i++) {
            const int64_t k = rng_int(0, 3);
            x[i] = vals[k];
            if (dts[t] == F32)
                ((float *)xd)[i] = (float)vals[k];
            else
                ((uint16_t *)xd)[i] = dts[t] == F16 ? f16[k] : bf16[k];
        }
        loom_value ins[3] = {tc_data(&c, 0, dts[t], s, xd), tc_scalar(&c, F32, ratio),
                             tc_scalar(&c, BOOL, 1)};
        loom_attr seed = loom_attr_int("seed", 7);
        CU_ASSERT_EQUAL(tc_node(&c, "Dropout", ins, 3, &seed, 1, 2), LOOM_OK);
        if (!tc_run(&c, __LINE__)) {
            tc_free(&c);
            continue;
        }
        const uint8_t *mask = loom_tensor_data(tc_output(&c, 1));
        const void *y = loom_tensor_data(tc_output(&c, 0));
        double *ref = tc_dbuf(&c, n);
        int64_t kept = 0, bad_mask = 0;
        for (int64_t i = 0; i < n; i++) {
            bad_mask += mask[i] > 1;
            kept += mask[i] == 1;
            ref[i] = mask[i] ? x[i] / (1.0 - ratio) : 0.0;
        }
        CU_ASSERT_EQUAL(bad_mask, 0);
        const double tol = dts[t] == F32 ? 1e-6 : dts[t] == F16 ? 2e-3 : 1.6e-2;
        CU_ASSERT_EQUAL(count_mismatches(y, dts[t], n, ref, 0, tol, __LINE__), 0);
        const double mean = (1.0 - ratio) * (double)n;
        const double sd = sqrt(ratio * (1.0 - ratio) * (double)n);
        CU_ASSERT(fabs((double)kept - mean) <= 5.0 * sd);
        if (ratio == 0.0)
            CU_ASSERT_EQUAL(kept, n);
        /* the same seed, the same mask */
        uint8_t *first = tc_buf(&c, (size_t)n);
        memcpy(first, mask, (size_t)n);
        CU_ASSERT(rerun(&c));
        CU_ASSERT_EQUAL(memcmp(first, loom_tensor_data(tc_output(&c, 1)), (size_t)n), 0);
        tc_free(&c);
    }
}

/* Without a seed every run draws a new mask; training_mode and ratio may be run-time inputs
 * (false: the identity); a run-time ratio outside [0, 1) fails the run, naming it. */
static void test_dropout_training_at_run_time(void)
{
    shp s = SHP(3, 257);
    const int64_t n = numel(s);
    for (int training = 0; training < 2; training++) {
        tc c;
        tc_init(&c);
        double *x = tc_random(&c, F32, n, -2, 2);
        double flag = training, ratio = 0.5;
        loom_value ins[3] = {tc_input(&c, F32, s, x), tc_input(&c, F32, SCALAR, &ratio),
                             tc_input(&c, BOOL, SCALAR, &flag)};
        CU_ASSERT_EQUAL(tc_node(&c, "Dropout", ins, 3, NULL, 0, 2), LOOM_OK);
        if (!tc_run(&c, __LINE__)) {
            tc_free(&c);
            continue;
        }
        uint8_t *first = tc_buf(&c, (size_t)n);
        memcpy(first, loom_tensor_data(tc_output(&c, 1)), (size_t)n);
        CU_ASSERT(rerun(&c));
        const uint8_t *second = loom_tensor_data(tc_output(&c, 1));
        if (!training) {
            check_out(&c, 0, F32, s, x, 0, 0, __LINE__);
            int64_t all = 0;
            for (int64_t i = 0; i < n; i++)
                all += second[i] == 1 && first[i] == 1;
            CU_ASSERT_EQUAL(all, n);
        } else {
            CU_ASSERT_NOT_EQUAL(memcmp(first, second, (size_t)n), 0);
        }
        tc_free(&c);
    }
    tc c;
    tc_init(&c);
    double *x = tc_random(&c, F32, n, -2, 2);
    double ratio = 1.0, flag = 1;
    loom_value ins[3] = {tc_input(&c, F32, s, x), tc_input(&c, F32, SCALAR, &ratio),
                         tc_input(&c, BOOL, SCALAR, &flag)};
    CU_ASSERT_EQUAL(tc_node(&c, "Dropout", ins, 3, NULL, 0, 1), LOOM_OK);
    CU_ASSERT_EQUAL(tc_run_status(&c, __LINE__, 1), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "ratio 1 is outside [0, 1)"));
    tc_free(&c);
}

/* ===========================================================================================
 * Quantisation
 * =========================================================================================== */

static double sat(double v, loom_dtype dt)
{
    double lo = dt == U8 ? 0 : -128, hi = dt == U8 ? 255 : 127;
    return v < lo ? lo : v > hi ? hi : v;
}

/* round half to even */
static double rhe(double v)
{
    return r_round(v, 0, 0);
}

/* QuantizeLinear of X (XDT, shape S) with a scale of NS elements along AXIS (NS == 1:
 * per-tensor), zero point of ZDT (UNDEFINED: absent). */
static void run_quantize(loom_dtype xdt, shp s, int64_t axis, int give_axis, int64_t ns,
                         loom_dtype zdt, int line)
{
    tc c;
    tc_init(&c);
    int64_t n = numel(s);
    double *x = tc_random(&c, xdt, n, -300, 300);
    double *sc = tc_random(&c, F32, ns, 0.5, 3);
    loom_dtype ydt = zdt ? zdt : U8;
    double *zp = tc_random(&c, ydt, ns, ydt == U8 ? 0 : -128, ydt == U8 ? 255 : 127);
    if (xdt == F32 && n > 6) { /* ties after division: 2.5 and -3.5 steps */
        sc[0] = 1.0;
        x[0] = 2.5;
        x[1] = -3.5;
        x[2] = 0.5;
        x[3] = 1e9;
        x[4] = -1e9;
    }
    shp ss = ns == 1 ? SCALAR : SHP(ns);
    loom_value ins[3] = {tc_input(&c, xdt, s, x), tc_input(&c, F32, ss, sc), LOOM_NO_VALUE};
    if (zdt)
        ins[2] = tc_const(&c, zdt, ss, zp);
    loom_attr a = loom_attr_int("axis", axis);
    CU_ASSERT_EQUAL(tc_node(&c, "QuantizeLinear", ins, zdt ? 3 : 2, &a, give_axis, 1), LOOM_OK);
    if (tc_run(&c, line)) {
        int64_t ax = axis < 0 ? axis + s.rank : axis, inner = 1;
        for (uint32_t d = (uint32_t)ax + 1; d < s.rank; d++)
            inner *= s.d[d];
        double *ref = tc_dbuf(&c, n);
        for (int64_t k = 0; k < n; k++) {
            int64_t ch = ns == 1 ? 0 : (k / inner) % ns;
            double z = zdt ? zp[ch] : 0;
            ref[k] = sat(rhe((double)((float)x[k] / (float)sc[ch])) + z, ydt);
        }
        check_out(&c, 0, ydt, s, ref, 0, 0, line);
    }
    tc_free(&c);
}

static void test_quantize_linear_per_tensor_and_per_axis(void)
{
    run_quantize(F32, SHP(3, 4, 5), 1, 0, 1, LOOM_DTYPE_UNDEFINED, __LINE__);
    run_quantize(F32, SHP(3, 4, 5), 1, 0, 1, U8, __LINE__);
    run_quantize(F32, SHP(3, 4, 5), 1, 0, 1, I8, __LINE__);
    run_quantize(F32, SHP(3, 4, 5), 1, 0, 4, U8, __LINE__);
    run_quantize(F32, SHP(3, 4, 5), -1, 1, 5, I8, __LINE__);
    run_quantize(F32, SHP(3, 4, 5), 0, 1, 3, I8, __LINE__);
    run_quantize(F32, SHP(1000, 70), 1, 1, 70, U8, __LINE__);
    run_quantize(F32, SCALAR, 1, 0, 1, I8, __LINE__);
    run_quantize(F32, SHP(0, 4), 1, 0, 4, U8, __LINE__);
    run_quantize(I32, SHP(6, 9), 1, 0, 9, I8, __LINE__);
    run_quantize(I32, SHP(6, 9), 1, 0, 1, U8, __LINE__);
    /* A scalar scale with a [1] zero point: both per-tensor. */
    {
        tc c;
        tc_init(&c);
        double x[4] = {-1, 0, 1.26, 300}, s = 0.5, z = 10;
        loom_value ins[3] = {tc_input(&c, F32, SHP(4), x), tc_scalar(&c, F32, s),
                             tc_const(&c, U8, SHP(1), &z)};
        CU_ASSERT_EQUAL(tc_node(&c, "QuantizeLinear", ins, 3, NULL, 0, 1), LOOM_OK);
        if (tc_run(&c, __LINE__)) {
            const double ref[4] = {8, 10, 13, 255};
            check_out(&c, 0, U8, SHP(4), ref, 0, 0, __LINE__);
        }
        tc_free(&c);
    }
}

static void run_dequantize(loom_dtype xdt, shp s, int64_t axis, int64_t ns, int with_zp,
                           int line)
{
    tc c;
    tc_init(&c);
    int64_t n = numel(s);
    double lo = xdt == U8 ? 0 : xdt == I8 ? -128 : -100000, hi = xdt == U8 ? 255 : xdt == I8 ? 127 : 100000;
    double *x = tc_random(&c, xdt, n, lo, hi);
    double *sc = tc_random(&c, F32, ns, 0.01, 2);
    double *zp = tc_random(&c, xdt, ns, xdt == I32 ? -1000 : lo, xdt == I32 ? 1000 : hi);
    shp ss = ns == 1 ? SCALAR : SHP(ns);
    loom_value ins[3] = {tc_input(&c, xdt, s, x), tc_const(&c, F32, ss, sc),
                         with_zp ? tc_input(&c, xdt, ss, zp) : LOOM_NO_VALUE};
    loom_attr a = loom_attr_int("axis", axis);
    CU_ASSERT_EQUAL(tc_node(&c, "DequantizeLinear", ins, with_zp ? 3 : 2, &a, 1, 1), LOOM_OK);
    if (tc_run(&c, line)) {
        int64_t ax = axis < 0 ? axis + s.rank : axis, inner = 1;
        for (uint32_t d = (uint32_t)ax + 1; d < s.rank; d++)
            inner *= s.d[d];
        double *ref = tc_dbuf(&c, n);
        for (int64_t k = 0; k < n; k++) {
            int64_t ch = ns == 1 ? 0 : (k / inner) % ns;
            ref[k] = (x[k] - (with_zp ? zp[ch] : 0)) * (float)sc[ch];
        }
        check_out(&c, 0, F32, s, ref, 1e-6, 1e-6, line);
    }
    tc_free(&c);
}

static void test_dequantize_linear_per_tensor_and_per_axis(void)
{
    const loom_dtype dts[] = {U8, I8, I32};
    for (int d = 0; d < 3; d++) {
        run_dequantize(dts[d], SHP(2, 3, 7), 1, 1, 1, __LINE__);
        run_dequantize(dts[d], SHP(2, 3, 7), 1, 1, 0, __LINE__);
        run_dequantize(dts[d], SHP(2, 3, 7), 1, 3, 1, __LINE__);
        run_dequantize(dts[d], SHP(2, 3, 7), -1, 7, 1, __LINE__);
        /* along the last axis, row by row: no zero point, and rows split between threads */
        run_dequantize(dts[d], SHP(5, 3, 33), -1, 33, 0, __LINE__);
        run_dequantize(dts[d], SHP(700, 70), 1, 70, 1, __LINE__);
        run_dequantize(dts[d], SHP(2, 3, 7), 0, 2, 0, __LINE__);
        run_dequantize(dts[d], SHP(40000), 0, 1, 1, __LINE__);
        run_dequantize(dts[d], SHP(3, 0), 0, 3, 1, __LINE__);
    }
}

/* numpy.matmul of int matrices (values already minus zero points) with broadcasting: returns
 * the int32-valued result of shape *YS. ZA is per row (NZA values: 1 or M), ZB per column. */
static double *ref_qmatmul(tc *c, const double *a, shp as, const double *za, int64_t nza,
                           const double *b, shp bs, const double *zb, int64_t nzb, shp *ys,
                           int64_t *pm, int64_t *pn)
{
    shp A = as.rank == 1 ? SHP(1, as.d[0]) : as, B = bs.rank == 1 ? SHP(bs.d[0], 1) : bs;
    int64_t M = A.d[A.rank - 2], K = A.d[A.rank - 1], N = B.d[B.rank - 1];
    shp ab = shp_make(A.d, A.rank - 2), bb = shp_make(B.d, B.rank - 2), batch = bcast(ab, bb);
    *ys = batch;
    if (as.rank > 1)
        ys->d[ys->rank++] = M;
    if (bs.rank > 1)
        ys->d[ys->rank++] = N;
    *pm = M;
    *pn = N;
    double *y = tc_dbuf(c, numel(batch) * M * N);
    int64_t idx[LOOM_MAX_RANK];
    for (int64_t t = 0; t < numel(batch); t++) {
        unravel(t, batch, idx);
        int64_t oa = bcast_off(batch.rank, idx, ab) * M * K;
        int64_t ob = bcast_off(batch.rank, idx, bb) * K * N;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += (a[oa + m * K + k] - za[nza == 1 ? 0 : m]) *
                         (b[ob + k * N + n] - zb[nzb == 1 ? 0 : n]);
                y[(t * M + m) * N + n] = s;
            }
    }
    return y;
}

static double lo_of(loom_dtype t) { return t == U8 ? 0 : -128; }
static double hi_of(loom_dtype t) { return t == U8 ? 255 : 127; }

/* B_CONST 2: constant B within int8 of its zero point (the u8 x s8 GEMM's case). */
static void run_matmul_integer(loom_dtype adt, loom_dtype bdt, shp as, shp bs, int zp_mode,
                               int b_const, int line)
{
    tc c;
    tc_init(&c);
    const int narrow = b_const == 2, u8b = bdt == U8;
    double *a = tc_random(&c, adt, numel(as), lo_of(adt), hi_of(adt));
    double *b = narrow ? tc_random(&c, bdt, numel(bs), u8b ? 28 : -100, u8b ? 228 : 100)
                       : tc_random(&c, bdt, numel(bs), lo_of(bdt), hi_of(bdt));
    int64_t M = as.rank > 1 ? as.d[as.rank - 2] : 1, N = bs.rank > 1 ? bs.d[bs.rank - 1] : 1;
    /* zp_mode 0: none, 1: scalars, 2: per row / per column */
    int64_t nza = zp_mode == 2 ? M : 1, nzb = zp_mode == 2 ? N : 1;
    double *za = tc_random(&c, adt, nza, lo_of(adt), hi_of(adt));
    double *zb = narrow ? tc_random(&c, bdt, nzb, u8b ? 125 : -3, u8b ? 131 : 3)
                        : tc_random(&c, bdt, nzb, lo_of(bdt), hi_of(bdt));
    if (zp_mode == 0)
        za[0] = zb[0] = 0;
    loom_value ins[4] = {tc_input(&c, adt, as, a), tc_value(&c, b_const, bdt, bs, b),
                         LOOM_NO_VALUE, LOOM_NO_VALUE};
    if (zp_mode) {
        ins[2] = tc_input(&c, adt, zp_mode == 2 ? SHP(M) : SCALAR, za);
        ins[3] = tc_value(&c, b_const, bdt, zp_mode == 2 ? SHP(N) : SCALAR, zb);
    }
    CU_ASSERT_EQUAL(tc_node(&c, "MatMulInteger", ins, zp_mode ? 4 : 2, NULL, 0, 1), LOOM_OK);
    if (tc_run(&c, line)) {
        shp ys;
        int64_t m, n;
        double *ref = ref_qmatmul(&c, a, as, za, nza, b, bs, zb, nzb, &ys, &m, &n);
        check_out(&c, 0, I32, ys, ref, 0, 0, line);
    }
    tc_free(&c);
}

static void test_matmul_integer_matches_reference(void)
{
    const loom_dtype dts[] = {U8, I8};
    for (int da = 0; da < 2; da++)
        for (int db = 0; db < 2; db++)
            for (int zp = 0; zp < 3; zp++) {
                run_matmul_integer(dts[da], dts[db], SHP(4, 3), SHP(3, 2), zp, 0, __LINE__);
                run_matmul_integer(dts[da], dts[db], SHP(5, 33), SHP(33, 67), zp, 1, __LINE__);
                run_matmul_integer(dts[da], dts[db], SHP(5, 33), SHP(33, 67), zp, 0, __LINE__);
            }
    run_matmul_integer(U8, U8, SHP(2, 1, 3, 5), SHP(4, 5, 6), 1, 0, __LINE__);
    run_matmul_integer(I8, U8, SHP(3, 9, 20), SHP(20, 130), 2, 1, __LINE__);
    run_matmul_integer(U8, I8, SHP(7), SHP(7, 3), 1, 0, __LINE__);
    run_matmul_integer(U8, I8, SHP(2, 6, 7), SHP(7), 1, 1, __LINE__);
    run_matmul_integer(U8, U8, SHP(7), SHP(7), 1, 0, __LINE__);
    run_matmul_integer(U8, U8, SHP(3, 0), SHP(0, 4), 1, 0, __LINE__); /* K = 0: zeros */
    run_matmul_integer(U8, U8, SHP(0, 5), SHP(5, 4), 1, 0, __LINE__);
    run_matmul_integer(U8, U8, SHP(64, 128), SHP(128, 64), 2, 1, __LINE__);
    /* The u8 x s8 GEMM: constant B within int8 of its zero point. */
    for (int da = 0; da < 2; da++)
        for (int db = 0; db < 2; db++)
            for (int zp = 0; zp < 3; zp++)
                run_matmul_integer(dts[da], dts[db], SHP(2, 5, 33), SHP(33, 67), zp, 2, __LINE__);
    run_matmul_integer(U8, I8, SHP(7), SHP(7, 3), 1, 2, __LINE__);
    run_matmul_integer(I8, U8, SHP(64, 130), SHP(130, 129), 1, 2, __LINE__);
}

/* Requantised value as ONNX's reference computes it: the multiplier in float32, its product with
 * the integer accumulator in double, rounded half to even, plus the zero point, saturated. */
static double requant_ref(double acc, float sa, float sb, float sy, double zy, loom_dtype dt)
{
    float mult = sa * sb / sy;
    return sat(rhe(acc * (double)mult) + zy, dt);
}

/* PER_AXIS: 0 every scale and zero point per-tensor; 1 all per row / column; 2 mixed (a's
 * and y's zero points per row, their scales per-tensor, b per column). */
static void run_qlinear_matmul(loom_dtype adt, loom_dtype bdt, loom_dtype ydt, shp as, shp bs,
                               int per_axis, int line)
{
    tc c;
    tc_init(&c);
    /* PER_AXIS 3: as 0, with a constant B within int8 of its zero point (the u8 x s8 GEMM). */
    const int narrow = per_axis == 3, u8b = bdt == U8;
    if (narrow)
        per_axis = 0;
    double *a = tc_random(&c, adt, numel(as), lo_of(adt), hi_of(adt));
    double *b = narrow ? tc_random(&c, bdt, numel(bs), u8b ? 28 : -100, u8b ? 228 : 100)
                       : tc_random(&c, bdt, numel(bs), lo_of(bdt), hi_of(bdt));
    int64_t M = as.rank > 1 ? as.d[as.rank - 2] : 1, N = bs.rank > 1 ? bs.d[bs.rank - 1] : 1;
    int64_t nm = per_axis ? M : 1, nn = per_axis ? N : 1;
    shp sm = per_axis ? SHP(M) : SCALAR, sn = per_axis ? SHP(N) : SCALAR;
    const int mixed = per_axis == 2;
    shp ss = mixed ? SCALAR : sm; /* the scales of a and y */
    double *sa = tc_random(&c, F32, nm, 0.01, 0.05), *za = tc_random(&c, adt, nm, lo_of(adt), hi_of(adt));
    double *sb = tc_random(&c, F32, nn, 0.01, 0.05);
    double *zb = narrow ? tc_random(&c, bdt, nn, u8b ? 125 : -3, u8b ? 131 : 3)
                        : tc_random(&c, bdt, nn, lo_of(bdt), hi_of(bdt));
    double *sy = tc_random(&c, F32, nm, 0.5, 5), *zy = tc_random(&c, ydt, nm, lo_of(ydt), hi_of(ydt));
    loom_value ins[8] = {tc_input(&c, adt, as, a), tc_const(&c, F32, ss, sa),
                         tc_const(&c, adt, sm, za),
                         tc_value(&c, per_axis == 1 || narrow, bdt, bs, b),
                         tc_input(&c, F32, sn, sb), tc_const(&c, bdt, sn, zb),
                         tc_const(&c, F32, ss, sy), tc_input(&c, ydt, sm, zy)};
    CU_ASSERT_EQUAL(tc_node(&c, "QLinearMatMul", ins, 8, NULL, 0, 1), LOOM_OK);
    if (tc_run(&c, line)) {
        shp ys;
        int64_t m, n;
        double *acc = ref_qmatmul(&c, a, as, za, nm, b, bs, zb, nn, &ys, &m, &n);
        double *ref = tc_dbuf(&c, numel(ys));
        for (int64_t k = 0; k < numel(ys); k++) {
            int64_t row = (k / n) % m, col = k % n;
            int64_t r = per_axis ? row : 0, cc = per_axis ? col : 0, rs = mixed ? 0 : r;
            ref[k] = requant_ref(acc[k], (float)sa[rs], (float)sb[cc], (float)sy[rs], zy[r], ydt);
        }
        check_out(&c, 0, ydt, ys, ref, 0, 0, line);
    }
    tc_free(&c);
}

static void test_qlinear_matmul_matches_reference(void)
{
    const loom_dtype dts[] = {U8, I8};
    for (int da = 0; da < 2; da++)
        for (int db = 0; db < 2; db++)
            for (int dy = 0; dy < 2; dy++)
                for (int pa = 0; pa < 3; pa++) {
                    run_qlinear_matmul(dts[da], dts[db], dts[dy], SHP(2, 4), SHP(4, 3), pa,
                                       __LINE__);
                    run_qlinear_matmul(dts[da], dts[db], dts[dy], SHP(2, 9, 31), SHP(31, 70), pa,
                                       __LINE__);
                }
    run_qlinear_matmul(U8, U8, U8, SHP(2, 2, 4), SHP(2, 4, 3), 0, __LINE__);
    for (int da = 0; da < 2; da++)
        for (int db = 0; db < 2; db++)
            run_qlinear_matmul(dts[da], dts[db], dts[1 - da], SHP(3, 9, 31), SHP(31, 70), 3,
                               __LINE__);
    run_qlinear_matmul(U8, I8, I8, SHP(6), SHP(6, 5), 0, __LINE__);
}

typedef struct qconv_case {
    loom_dtype xdt, wdt, ydt;
    int64_t n, c, h, w, m, kh, kw; /* h = 0: 1-D (w is the length) */
    int64_t group, stride, dil, pad;
    int per_channel, bias, w_const;
    const char *auto_pad;
    int narrow; /* w - w_zp fits int8: the u8 x s8 (VNNI) path of constant weights */
} qconv_case;

static void run_qlinear_conv(const qconv_case *q, int line)
{
    tc c;
    tc_init(&c);
    const int one_d = q->h == 0;
    const int64_t H = one_d ? 1 : q->h, KH = one_d ? 1 : q->kh, Cg = q->c / q->group;
    shp xs = one_d ? SHP(q->n, q->c, q->w) : SHP(q->n, q->c, q->h, q->w);
    shp ws = one_d ? SHP(q->m, Cg, q->kw) : SHP(q->m, Cg, q->kh, q->kw);
    double *x = tc_random(&c, q->xdt, numel(xs), lo_of(q->xdt), hi_of(q->xdt));
    const int u8w = q->wdt == U8;
    double *w = q->narrow ? tc_random(&c, q->wdt, numel(ws), u8w ? 28 : -100, u8w ? 228 : 100)
                          : tc_random(&c, q->wdt, numel(ws), lo_of(q->wdt), hi_of(q->wdt));
    int64_t nm = q->per_channel ? q->m : 1;
    shp sm = q->per_channel ? SHP(q->m) : SCALAR;
    double sx = 0.02, sy = 4.0;
    double zx = q->xdt == U8 ? 128 : 3, zy = q->ydt == U8 ? 100 : -5;
    double *sw = tc_random(&c, F32, nm, 0.005, 0.05);
    double *zw = q->narrow ? tc_random(&c, q->wdt, nm, u8w ? 125 : -3, u8w ? 131 : 3)
                           : tc_random(&c, q->wdt, nm, u8w ? 100 : -20, u8w ? 150 : 20);
    double *bias = tc_random(&c, I32, q->m, -20000, 20000);
    loom_value ins[9] = {tc_input(&c, q->xdt, xs, x),
                         tc_scalar(&c, F32, sx),
                         tc_scalar(&c, q->xdt, zx),
                         tc_value(&c, q->w_const, q->wdt, ws, w),
                         tc_const(&c, F32, sm, sw),
                         tc_value(&c, q->w_const, q->wdt, sm, zw),
                         tc_scalar(&c, F32, sy),
                         tc_scalar(&c, q->ydt, zy),
                         q->bias ? tc_const(&c, I32, SHP(q->m), bias) : LOOM_NO_VALUE};
    const int64_t st2[2] = {q->stride, q->stride}, dl2[2] = {q->dil, q->dil};
    const int64_t pd4[4] = {q->pad, q->pad, q->pad, q->pad};
    loom_attr attrs[5];
    size_t na = 0;
    const size_t s = one_d ? 1 : 2;
    attrs[na++] = loom_attr_ints("strides", s, st2);
    attrs[na++] = loom_attr_ints("dilations", s, dl2);
    if (q->auto_pad)
        attrs[na++] = loom_attr_string("auto_pad", q->auto_pad);
    else
        attrs[na++] = loom_attr_ints("pads", 2 * s, pd4);
    attrs[na++] = loom_attr_int("group", q->group);
    CU_ASSERT_EQUAL(tc_node(&c, "QLinearConv", ins, q->bias ? 9 : 8, attrs, na, 1), LOOM_OK);
    if (!tc_run(&c, line)) {
        tc_free(&c);
        return;
    }
    /* Padding: explicit, or SAME_UPPER (the odd pixel at the end). */
    int64_t ekh = (KH - 1) * q->dil + 1, ekw = (q->kw - 1) * q->dil + 1;
    int64_t OH, OW, ph = one_d ? 0 : q->pad, pw = q->pad;
    if (q->auto_pad) {
        OH = one_d ? 1 : (H + q->stride - 1) / q->stride;
        OW = (q->w + q->stride - 1) / q->stride;
        int64_t th = one_d ? 0 : (OH - 1) * q->stride + ekh - H, tw = (OW - 1) * q->stride + ekw - q->w;
        ph = th > 0 ? th / 2 : 0;
        pw = tw > 0 ? tw / 2 : 0;
    } else {
        OH = one_d ? 1 : (H + 2 * ph - ekh) / q->stride + 1;
        OW = (q->w + 2 * pw - ekw) / q->stride + 1;
    }
    shp ys = one_d ? SHP(q->n, q->m, OW) : SHP(q->n, q->m, OH, OW);
    double *ref = tc_dbuf(&c, numel(ys));
    const int64_t Mg = q->m / q->group;
    for (int64_t n = 0; n < q->n; n++)
        for (int64_t m = 0; m < q->m; m++) {
            const int64_t g = m / Mg, ch = q->per_channel ? m : 0;
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double acc = q->bias ? bias[m] : 0;
                    for (int64_t ci = 0; ci < Cg; ci++)
                        for (int64_t kh = 0; kh < KH; kh++)
                            for (int64_t kw = 0; kw < q->kw; kw++) {
                                int64_t ih = oh * q->stride - ph + kh * q->dil;
                                int64_t iw = ow * q->stride - pw + kw * q->dil;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= q->w)
                                    continue;
                                double xv = x[((n * q->c + g * Cg + ci) * H + ih) * q->w + iw];
                                double wv = w[((m * Cg + ci) * KH + kh) * q->kw + kw];
                                acc += (xv - zx) * (wv - zw[ch]);
                            }
                    ref[((n * q->m + m) * OH + oh) * OW + ow] =
                        requant_ref(acc, (float)sx, (float)sw[ch], (float)sy, zy, q->ydt);
                }
        }
    check_out(&c, 0, q->ydt, ys, ref, 0, 0, line);
    tc_free(&c);
}

static void test_qlinear_conv_matches_reference(void)
{
    const qconv_case cases[] = {
        /* x   w   y   n  c  h  w  m kh kw g st dl pd pc  b wc auto_pad */
        {U8, U8, U8, 1, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, 0, 1, 1, NULL, 0},
        {U8, I8, U8, 2, 4, 9, 11, 6, 3, 2, 2, 2, 1, 1, 1, 1, 1, NULL, 0},
        {I8, I8, I8, 1, 6, 8, 8, 6, 3, 3, 6, 1, 2, 2, 1, 0, 0, NULL, 0},
        {U8, U8, I8, 1, 2, 20, 20, 3, 5, 5, 1, 1, 1, 0, 1, 1, 0, NULL, 0},
        {I8, U8, U8, 1, 3, 5, 6, 2, 2, 2, 1, 2, 1, 0, 0, 0, 1, "SAME_UPPER", 0},
        {U8, I8, I8, 2, 4, 0, 29, 5, 0, 3, 1, 2, 1, 1, 1, 1, 1, NULL, 0},      /* 1-D */
        {I8, I8, U8, 1, 4, 0, 300, 4, 0, 5, 2, 1, 2, 2, 0, 1, 0, NULL, 0},     /* 1-D, > 1 tile */
        {U8, U8, U8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, NULL, 0},
        /* Constant weights within int8 of their zero point: the u8 x s8 GEMM. */
        {U8, I8, U8, 1, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, NULL, 1},
        {U8, U8, I8, 2, 4, 9, 11, 6, 3, 2, 2, 2, 1, 1, 0, 1, 1, NULL, 1},
        {I8, I8, I8, 1, 6, 8, 8, 6, 3, 3, 6, 1, 2, 2, 1, 0, 1, NULL, 1},
        {I8, U8, U8, 1, 3, 5, 6, 2, 2, 2, 1, 2, 1, 0, 0, 0, 1, "SAME_UPPER", 1},
        {U8, I8, I8, 2, 4, 0, 29, 5, 0, 3, 1, 2, 1, 1, 1, 1, 1, NULL, 1},
        {I8, I8, U8, 1, 4, 0, 300, 70, 0, 5, 2, 1, 2, 2, 1, 1, 1, NULL, 1},
        {U8, I8, U8, 1, 37, 6, 5, 67, 3, 3, 1, 1, 1, 1, 1, 1, 1, NULL, 1},
        {I8, I8, U8, 2, 5, 8, 9, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, NULL, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_qlinear_conv(&cases[i], __LINE__);
}

/* ConvInteger of case Q: int32 sums of (x - x_zp)(w - w_zp), no requantisation. Q->bias says
 * whether the zero points are given (ConvInteger's are optional; absent means 0); the y dtype
 * and the scales are unused. */
static void run_conv_integer(const qconv_case *q, int line)
{
    tc c;
    tc_init(&c);
    const int one_d = q->h == 0, zps = q->bias;
    const int64_t H = one_d ? 1 : q->h, KH = one_d ? 1 : q->kh, Cg = q->c / q->group;
    shp xs = one_d ? SHP(q->n, q->c, q->w) : SHP(q->n, q->c, q->h, q->w);
    shp ws = one_d ? SHP(q->m, Cg, q->kw) : SHP(q->m, Cg, q->kh, q->kw);
    double *x = tc_random(&c, q->xdt, numel(xs), lo_of(q->xdt), hi_of(q->xdt));
    const int u8w = q->wdt == U8;
    double *w = q->narrow ? tc_random(&c, q->wdt, numel(ws), u8w ? 28 : -100, u8w ? 228 : 100)
                          : tc_random(&c, q->wdt, numel(ws), lo_of(q->wdt), hi_of(q->wdt));
    const int64_t nm = q->per_channel ? q->m : 1;
    const shp sm = q->per_channel ? SHP(q->m) : SCALAR;
    double zx = zps ? (q->xdt == U8 ? 131 : -7) : 0;
    double *zw = q->narrow ? tc_random(&c, q->wdt, nm, u8w ? 125 : -3, u8w ? 131 : 3)
                           : tc_random(&c, q->wdt, nm, u8w ? 100 : -20, u8w ? 150 : 20);
    if (!zps)
        for (int64_t i = 0; i < nm; i++)
            zw[i] = 0;
    loom_value ins[4] = {tc_input(&c, q->xdt, xs, x), tc_value(&c, q->w_const, q->wdt, ws, w),
                         zps ? tc_scalar(&c, q->xdt, zx) : LOOM_NO_VALUE,
                         zps ? tc_value(&c, q->w_const, q->wdt, sm, zw) : LOOM_NO_VALUE};
    const int64_t st2[2] = {q->stride, q->stride}, dl2[2] = {q->dil, q->dil};
    const int64_t pd4[4] = {q->pad, q->pad, q->pad, q->pad};
    loom_attr attrs[5];
    size_t na = 0;
    const size_t s = one_d ? 1 : 2;
    attrs[na++] = loom_attr_ints("strides", s, st2);
    attrs[na++] = loom_attr_ints("dilations", s, dl2);
    if (q->auto_pad)
        attrs[na++] = loom_attr_string("auto_pad", q->auto_pad);
    else
        attrs[na++] = loom_attr_ints("pads", 2 * s, pd4);
    attrs[na++] = loom_attr_int("group", q->group);
    CU_ASSERT_EQUAL(tc_node(&c, "ConvInteger", ins, zps ? 4 : 2, attrs, na, 1), LOOM_OK);
    if (!tc_run(&c, line)) {
        tc_free(&c);
        return;
    }
    int64_t ekh = (KH - 1) * q->dil + 1, ekw = (q->kw - 1) * q->dil + 1;
    int64_t OH, OW, ph = one_d ? 0 : q->pad, pw = q->pad;
    if (q->auto_pad) {
        OH = one_d ? 1 : (H + q->stride - 1) / q->stride;
        OW = (q->w + q->stride - 1) / q->stride;
        int64_t th = one_d ? 0 : (OH - 1) * q->stride + ekh - H;
        int64_t tw = (OW - 1) * q->stride + ekw - q->w;
        ph = th > 0 ? th / 2 : 0;
        pw = tw > 0 ? tw / 2 : 0;
    } else {
        OH = one_d ? 1 : (H + 2 * ph - ekh) / q->stride + 1;
        OW = (q->w + 2 * pw - ekw) / q->stride + 1;
    }
    shp ys = one_d ? SHP(q->n, q->m, OW) : SHP(q->n, q->m, OH, OW);
    double *ref = tc_dbuf(&c, numel(ys));
    const int64_t Mg = q->m / q->group;
    for (int64_t n = 0; n < q->n; n++)
        for (int64_t m = 0; m < q->m; m++) {
            const int64_t g = m / Mg, ch = q->per_channel ? m : 0;
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double acc = 0;
                    for (int64_t ci = 0; ci < Cg; ci++)
                        for (int64_t kh = 0; kh < KH; kh++)
                            for (int64_t kw = 0; kw < q->kw; kw++) {
                                int64_t ih = oh * q->stride - ph + kh * q->dil;
                                int64_t iw = ow * q->stride - pw + kw * q->dil;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= q->w)
                                    continue;
                                double xv = x[((n * q->c + g * Cg + ci) * H + ih) * q->w + iw];
                                double wv = w[((m * Cg + ci) * KH + kh) * q->kw + kw];
                                acc += (xv - zx) * (wv - zw[ch]);
                            }
                    ref[((n * q->m + m) * OH + oh) * OW + ow] = acc;
                }
        }
    check_out(&c, 0, I32, ys, ref, 0, 0, line);
    tc_free(&c);
}

static void test_conv_integer_matches_reference(void)
{
    const qconv_case cases[] = {
        /* x   w   y   n  c  h  w  m kh kw g st dl pd pc zp wc auto_pad */
        {U8, U8, I32, 1, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, 0, 1, 1, NULL, 0},
        {U8, I8, I32, 2, 4, 9, 11, 6, 3, 2, 2, 2, 1, 1, 1, 1, 1, NULL, 0},
        {I8, I8, I32, 1, 6, 8, 8, 6, 3, 3, 6, 1, 2, 2, 1, 1, 0, NULL, 0},   /* depthwise */
        {U8, U8, I32, 1, 2, 20, 20, 3, 5, 5, 1, 1, 1, 0, 1, 0, 0, NULL, 0}, /* no zero points */
        {I8, U8, I32, 1, 3, 5, 6, 2, 2, 2, 1, 2, 1, 0, 0, 1, 1, "SAME_UPPER", 0},
        {U8, I8, I32, 2, 4, 0, 29, 5, 0, 3, 1, 2, 1, 1, 1, 1, 1, NULL, 0},  /* 1-D */
        {I8, I8, I32, 1, 4, 0, 300, 4, 0, 5, 2, 1, 2, 2, 0, 0, 1, NULL, 0}, /* 1-D, > 1 tile */
        {U8, U8, I32, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, NULL, 0},
        {U8, I8, I32, 1, 5, 13, 17, 7, 3, 3, 1, 1, 1, 1, 1, 1, 0, NULL, 0}, /* w computed */
        /* Constant weights within int8 of their zero point: the u8 x s8 GEMM. */
        {U8, I8, I32, 2, 4, 9, 11, 6, 3, 2, 2, 2, 1, 1, 1, 1, 1, NULL, 1},
        {I8, U8, I32, 1, 3, 5, 6, 2, 2, 2, 1, 2, 1, 0, 0, 1, 1, "SAME_UPPER", 1},
        {I8, I8, I32, 1, 4, 0, 300, 70, 0, 5, 2, 1, 2, 2, 1, 0, 1, NULL, 1},
        {U8, I8, I32, 1, 37, 6, 5, 67, 3, 3, 1, 1, 1, 1, 1, 1, 1, NULL, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_conv_integer(&cases[i], __LINE__);
}

/* ===========================================================================================
 * Errors
 * =========================================================================================== */

/* Build one node with NIN inputs of the given dtypes and shapes (graph inputs); the build must
 * fail with STATUS mentioning WANT. */
static void expect_error(const char *op, size_t nin, const loom_dtype *dts, const shp *shapes,
                         const loom_attr *attrs, size_t na, size_t nout, loom_status status,
                         const char *want, int line)
{
    tc c;
    tc_init(&c);
    loom_value ins[9];
    static const double zeros[512] = {0};
    for (size_t i = 0; i < nin; i++)
        ins[i] = dts[i] ? tc_input(&c, dts[i], shapes[i], zeros) : LOOM_NO_VALUE;
    loom_value outs[2];
    loom_status st = loom_graph_op(c.g, op, NULL, ins, nin, attrs, na, outs, nout);
    expect_build_error(&c, st, status, op, want, line);
    tc_free(&c);
}

static void test_bad_inputs_give_clear_errors(void)
{
    const loom_status BAD = LOOM_ERR_INVALID_ARGUMENT;
    {
        const loom_dtype d[] = {F32, F32};
        const shp s[] = {SHP(2), SHP(2)};
        expect_error("And", 2, d, s, NULL, 0, 1, BAD, "dtype float", __LINE__);
    }
    {
        const loom_dtype d[] = {BOOL, BOOL};
        const shp s[] = {SHP(2), SHP(2)};
        expect_error("Less", 2, d, s, NULL, 0, 1, BAD, "dtype bool", __LINE__);
    }
    {
        const loom_dtype d[] = {F32, I32};
        const shp s[] = {SHP(2), SHP(2)};
        expect_error("Equal", 2, d, s, NULL, 0, 1, BAD, "dtype mismatch", __LINE__);
    }
    {
        const loom_dtype d[] = {F32, F32, F32};
        const shp s[] = {SHP(2, 3), SHP(3), SHP(4)};
        expect_error("Sum", 3, d, s, NULL, 0, 1, BAD, "cannot be broadcast", __LINE__);
    }
    {
        const loom_dtype d[] = {I32};
        const shp s[] = {SHP(2)};
        expect_error("Floor", 1, d, s, NULL, 0, 1, BAD, "dtype int32", __LINE__);
        loom_attr a = loom_attr_float("alpha", 1.0f);
        expect_error("Floor", 1, (const loom_dtype[]){F32}, s, &a, 1, 1, BAD,
                     "unknown attribute 'alpha'", __LINE__);
        loom_attr b = loom_attr_int("alpha", 1);
        expect_error("Elu", 1, (const loom_dtype[]){F32}, s, &b, 1, 1, BAD,
                     "attribute 'alpha' must be a float", __LINE__);
    }
    {
        const loom_dtype d[] = {I64};
        const shp s[] = {SHP(2)};
        expect_error("ConstantOfShape", 1, d, s, NULL, 0, 1, LOOM_ERR_UNSUPPORTED,
                     "must be a constant", __LINE__);
    }
    {
        const loom_dtype d[] = {F32, F32, F32};
        const shp s[] = {SCALAR, SCALAR, SCALAR};
        expect_error("Range", 3, d, s, NULL, 0, 1, LOOM_ERR_UNSUPPORTED, "must be a constant",
                     __LINE__);
    }
    {
        const loom_dtype d[] = {F32, F32};
        const shp s[] = {SHP(3, 4), SHP(5)};
        expect_error("QuantizeLinear", 2, d, s, NULL, 0, 1, BAD, "expected a scalar or [4]",
                     __LINE__);
        loom_attr ax = loom_attr_int("axis", 2);
        expect_error("QuantizeLinear", 2, d, s, &ax, 1, 1, BAD, "axis 2 is out of range",
                     __LINE__);
    }
    {
        const loom_dtype d[] = {F32, F32, I8};
        const shp s[] = {SHP(3, 4), SHP(4), SCALAR};
        expect_error("QuantizeLinear", 3, d, s, NULL, 0, 1, BAD, "y_zero_point", __LINE__);
    }
    {
        const loom_dtype d[] = {F32, F32};
        const shp s[] = {SHP(3), SCALAR};
        expect_error("DequantizeLinear", 2, d, s, NULL, 0, 1, BAD, "dtype float", __LINE__);
    }
    {
        const loom_dtype d[] = {U8, U8};
        const shp s[] = {SHP(3, 4), SHP(5, 2)};
        expect_error("MatMulInteger", 2, d, s, NULL, 0, 1, BAD, "inner dimensions 4 and 5",
                     __LINE__);
    }
    {
        const loom_dtype d[] = {U8, U8, U8};
        const shp s[] = {SHP(3, 4), SHP(4, 2), SHP(4)};
        expect_error("MatMulInteger", 3, d, s, NULL, 0, 1, BAD, "expected a scalar or [3]",
                     __LINE__);
    }
    {
        const loom_dtype d[] = {U8, F32, U8, U8, F32, U8, F32, U8};
        const shp s[] = {SHP(1, 4, 5, 5), SCALAR, SCALAR, SHP(2, 3, 3, 3),
                         SCALAR,          SCALAR, SCALAR, SCALAR};
        expect_error("QLinearConv", 8, d, s, NULL, 0, 1, BAD, "x has 4 channels", __LINE__);
    }
    {
        const loom_dtype d[] = {U8, U8, U8, U8};
        const shp s[] = {SHP(1, 4, 5, 5), SHP(2, 4, 3, 3), SCALAR, SHP(3)};
        expect_error("ConvInteger", 4, d, s, NULL, 0, 1, BAD,
                     "input 3 (w_zero_point) has shape [3]; expected a scalar or [2]", __LINE__);
        const loom_dtype f[] = {F32, U8};
        expect_error("ConvInteger", 2, f, s, NULL, 0, 1, BAD, "dtype float", __LINE__);
        const shp r[] = {SHP(1, 4, 5, 5), SHP(2, 4, 3)};
        expect_error("ConvInteger", 2, d, r, NULL, 0, 1, BAD,
                     "input 1 (w) has shape [2, 4, 3]; expected rank 4", __LINE__);
    }
    {
        const loom_dtype d[] = {U8, F32, U8, U8, F32, U8, F32, U8};
        const shp s[] = {SHP(2, 3), SHP(3), SCALAR, SHP(3, 5), SCALAR, SCALAR, SCALAR, SCALAR};
        expect_error("QLinearMatMul", 8, d, s, NULL, 0, 1, BAD, "input 1 (a_scale)", __LINE__);
    }
    {
        const loom_dtype d[] = {U8, F32};
        const shp s[] = {SHP(2), SCALAR};
        expect_error("DequantizeLinear", 1, d, s, NULL, 0, 1, BAD, "takes 2 to 3 inputs",
                     __LINE__);
        loom_attr a = loom_attr_int("block_size", 2);
        expect_error("DequantizeLinear", 2, d, s, &a, 1, 1, LOOM_ERR_UNSUPPORTED,
                     "block_size 2", __LINE__);
    }
}

static void test_bad_constant_inputs_give_clear_errors(void)
{
    /* Range with delta 0; ConstantOfShape with a negative dim or a fractional int value;
     * Dropout with a constant ratio outside [0, 1). */
    {
        tc c;
        tc_init(&c);
        loom_value ins[3] = {tc_scalar(&c, I32, 0), tc_scalar(&c, I32, 5),
                             tc_scalar(&c, I32, 0)};
        loom_value y;
        loom_status st = loom_graph_op(c.g, "Range", NULL, ins, 3, NULL, 0, &y, 1);
        expect_build_error(&c, st, LOOM_ERR_INVALID_ARGUMENT, "Range", "delta) is zero",
                           __LINE__);
        tc_free(&c);
    }
    {
        tc c;
        tc_init(&c);
        loom_value ins[3] = {tc_const(&c, I32, SHP(2), (double[]){0, 1}), tc_scalar(&c, I32, 5),
                             tc_scalar(&c, I32, 1)};
        loom_value y;
        loom_status st = loom_graph_op(c.g, "Range", NULL, ins, 3, NULL, 0, &y, 1);
        expect_build_error(&c, st, LOOM_ERR_INVALID_ARGUMENT, "Range", "must be a scalar",
                           __LINE__);
        tc_free(&c);
    }
    {
        tc c;
        tc_init(&c);
        loom_value s = tc_const(&c, I64, SHP(2), (double[]){3, -1});
        loom_value y;
        loom_status st = loom_graph_op(c.g, "ConstantOfShape", NULL, &s, 1, NULL, 0, &y, 1);
        expect_build_error(&c, st, LOOM_ERR_INVALID_ARGUMENT, "ConstantOfShape",
                           "negative dimension -1", __LINE__);
        tc_free(&c);
    }
    {
        tc c;
        tc_init(&c);
        loom_value s = tc_const(&c, I64, SHP(1), (double[]){3});
        loom_attr a[] = {loom_attr_int("dtype", I32), loom_attr_float("value", 1.5f)};
        loom_value y;
        loom_status st = loom_graph_op(c.g, "ConstantOfShape", NULL, &s, 1, a, 2, &y, 1);
        expect_build_error(&c, st, LOOM_ERR_INVALID_ARGUMENT, "ConstantOfShape",
                           "not an integer", __LINE__);
        tc_free(&c);
    }
    {
        tc c;
        tc_init(&c);
        loom_value s = tc_const(&c, I64, SHP(1), (double[]){3});
        loom_attr a[] = {loom_attr_int("dtype", 14)}; /* complex64: not a Loom dtype */
        loom_value y;
        loom_status st = loom_graph_op(c.g, "ConstantOfShape", NULL, &s, 1, a, 1, &y, 1);
        expect_build_error(&c, st, LOOM_ERR_UNSUPPORTED, "ConstantOfShape",
                           "not a dtype Loom supports", __LINE__);
        tc_free(&c);
    }
    for (int above = 0; above < 2; above++) {
        tc c;
        tc_init(&c);
        loom_value ins[3] = {tc_input(&c, F32, SHP(3), (double[]){1, 2, 3}),
                             tc_scalar(&c, F32, above ? 1.0 : -0.25), tc_scalar(&c, BOOL, 1)};
        loom_value y[2];
        loom_status st = loom_graph_op(c.g, "Dropout", NULL, ins, 3, NULL, 0, y, 2);
        expect_build_error(&c, st, LOOM_ERR_INVALID_ARGUMENT, "Dropout",
                           above ? "(ratio) is 1, outside [0, 1)" : "(ratio) is -0.25, outside",
                           __LINE__);
        tc_free(&c);
    }
}

/* ---- the suite ---------------------------------------------------------------------------- */

#define T(f) {#f, f}
static const test_entry k_tests[] = {
    T(test_unary_float_ops_match_reference),
    T(test_sign_of_integer_dtypes),
    T(test_logic_ops_broadcast_and_match_reference),
    T(test_comparisons_of_every_numeric_dtype_broadcast),
    T(test_int64_comparisons_are_exact_beyond_double_precision),
    T(test_sum_and_mean_are_variadic_and_broadcast),
    T(test_shape_honours_start_and_end),
    T(test_shape_of_scalar_and_of_computed_value),
    T(test_constant_of_shape_fills_every_dtype),
    T(test_range_counts_like_onnx),
    T(test_dropout_is_identity_at_inference),
    T(test_dropout_training_drops_and_scales),
    T(test_dropout_training_at_run_time),
    T(test_quantize_linear_per_tensor_and_per_axis),
    T(test_dequantize_linear_per_tensor_and_per_axis),
    T(test_matmul_integer_matches_reference),
    T(test_qlinear_matmul_matches_reference),
    T(test_qlinear_conv_matches_reference),
    T(test_conv_integer_matches_reference),
    T(test_bad_inputs_give_clear_errors),
    T(test_bad_constant_inputs_give_clear_errors),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    const test_suite suite = {"ops_elementwise_quant", k_tests, test_rt_open_default,
                              test_rt_close, rng_reset, NULL};
    return test_run_suites(&suite, 1, argc, argv);
}
