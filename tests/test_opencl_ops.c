/*
 * The OpenCL kernels added for operator coverage (issue 13): ReduceL1, ReduceL2, ReduceLogSum,
 * ReduceLogSumExp, ReduceSumSquare (and the older Reduce ops through the same kernels), Trilu,
 * CumSum, GatherElements, ScatterElements, GatherND, ScatterND, Mod, BitShift, IsNaN, IsInf.
 * Each case is one node whose data input is a graph input (so nothing folds it away), planned
 * strictly on opencl:0 (a node the backend refused would fail the plan: the case proves the node
 * ran there) and strictly on cpu:0, the reference backend; the outputs must agree (floats
 * within a relative and absolute tolerance, integers and bools exactly). Odd shapes, negative
 * axes, both index dtypes, computed and constant indices, duplicates. Also: what the backend
 * must refuse (so that the node runs on the CPU), and computed indices out of range failing
 * the run rather than giving numbers. Every test passes with a note when there is no OpenCL
 * device.
 *
 * Run all tests: ./test_opencl_ops; only tests whose name contains WORD: ./test_opencl_ops WORD.
 */
#include <loom/graph.h>
#include <loom/runtime.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32
#define F16 LOOM_DTYPE_F16
#define F64 LOOM_DTYPE_F64
#define I32 LOOM_DTYPE_I32
#define I64 LOOM_DTYPE_I64
#define U8 LOOM_DTYPE_U8
#define U16 LOOM_DTYPE_U16
#define U32 LOOM_DTYPE_U32
#define U64 LOOM_DTYPE_U64
#define I8 LOOM_DTYPE_I8
#define BOOL LOOM_DTYPE_BOOL

static loom_runtime *g_rt;
static int g_have_ocl, g_noted;

static int no_device(void)
{
    if (g_have_ocl)
        return 0;
    if (!g_noted++)
        printf("\n  note: no OpenCL device found: OpenCL tests skipped\n");
    return 1;
}

/* ---- inputs ---------------------------------------------------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static double unit(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 53);
}

/* How an input is filled. */
enum {
    G_FLOAT,  /* [-2, 2) */
    G_POS,    /* [0.1, 3) */
    G_RANGE,  /* integers in [lo, hi) */
    G_SPECIAL /* floats with NaN, +inf, -inf, 0 among them */
};

typedef struct tin {
    loom_dtype dt;
    uint32_t rank;
    int64_t dims[5];
    int gen;
    int64_t lo, hi;
    int constant;
} tin;

#define IN(dt, r, ...) {dt, r, {__VA_ARGS__}, G_FLOAT, 0, 0, 0}
#define INP(dt, r, ...) {dt, r, {__VA_ARGS__}, G_POS, 0, 0, 0}
#define INS(dt, r, ...) {dt, r, {__VA_ARGS__}, G_SPECIAL, 0, 0, 0}
/* integers in [lo, hi): computed (IX) or constant (CX) */
#define IX(dt, lo, hi, r, ...) {dt, r, {__VA_ARGS__}, G_RANGE, lo, hi, 0}
#define CX(dt, lo, hi, r, ...) {dt, r, {__VA_ARGS__}, G_RANGE, lo, hi, 1}

static int64_t tin_numel(const tin *t)
{
    int64_t n = 1;
    for (uint32_t d = 0; d < t->rank; d++)
        n *= t->dims[d];
    return n;
}

static void store(void *p, loom_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case F32: ((float *)p)[i] = (float)v; break;
    case F64: ((double *)p)[i] = v; break;
    case I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case I64: ((int64_t *)p)[i] = (int64_t)v; break;
    case I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case U8: case BOOL: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case U32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    case U64: ((uint64_t *)p)[i] = (uint64_t)v; break;
    case F16: { /* values of few bits: exact in half */
        float f = (float)v;
        uint32_t u;
        memcpy(&u, &f, 4);
        uint32_t sign = (u >> 16) & 0x8000u, e = (u >> 23) & 0xff, m = (u >> 13) & 0x3ff;
        ((uint16_t *)p)[i] = e == 0xff ? (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0u))
                             : e < 113 ? (uint16_t)sign
                                       : (uint16_t)(sign | ((e - 112) << 10) | m);
        break;
    }
    default: break;
    }
}

static void *make_data(const tin *t)
{
    int64_t n = tin_numel(t);
    void *p = calloc((size_t)n + 1, loom_dtype_size(t->dt));
    for (int64_t i = 0; p && i < n; i++) {
        double u = unit(), v;
        switch (t->gen) {
        case G_POS: v = 0.1 + 2.9 * u; break;
        case G_RANGE: v = (double)(t->lo + (int64_t)(u * (double)(t->hi - t->lo))); break;
        case G_SPECIAL: {
            static const double sp[] = {NAN, INFINITY, -INFINITY, 0.0};
            v = u < 0.4 ? sp[(size_t)(u * 10) % 4] : 4.0 * u - 2.0;
            break;
        }
        default: v = 4.0 * u - 2.0; break;
        }
        /* small integers for integer data in float cases */
        if (t->gen != G_RANGE && t->dt != F32 && t->dt != F64 && t->dt != F16)
            v = floor(v * 10.0);
        store(p, t->dt, i, v);
    }
    return p;
}

/* ---- one case: OpenCL (strict) against the CPU (strict) ------------------------------------- */

typedef loom_value (*builder)(loom_graph *g, const loom_value *x);

typedef struct ocase {
    const char *name;
    int n_in;
    tin in[4];
    builder build;
    double tol;
} ocase;

static loom_status plan_run(loom_graph *g, const char *device, loom_tensor *const *ins,
                            size_t n_ins, loom_tensor **out, int strict)
{
    loom_plan_options po = {.struct_size = sizeof po, .device = device, .strict = strict};
    loom_plan *plan = NULL;
    *out = NULL;
    loom_status st = loom_plan_create(g_rt, g, &po, &plan);
    if (st == LOOM_OK)
        st = loom_plan_make_outputs(plan, out, 1);
    if (st == LOOM_OK)
        st = loom_plan_run(plan, (const loom_tensor *const *)ins, n_ins, out, 1, NULL);
    loom_plan_destroy(plan);
    if (st != LOOM_OK) {
        loom_tensor_destroy(*out);
        *out = NULL;
    }
    return st;
}

/* 1 when GOT matches REF: same dtype and size, floats within TOL (NaN where NaN, infinities
 * equal), everything else bit for bit. */
static int same(const char *name, const loom_tensor *got, const loom_tensor *ref, double tol)
{
    loom_dtype dt = loom_tensor_dtype(ref);
    if (loom_tensor_dtype(got) != dt || loom_tensor_nbytes(got) != loom_tensor_nbytes(ref)) {
        printf("\n  %s: dtype or size differs\n", name);
        return 0;
    }
    size_t es = loom_dtype_size(dt), n = loom_tensor_nbytes(ref) / es;
    const char *a = loom_tensor_data(got), *b = loom_tensor_data(ref);
    for (size_t i = 0; i < n; i++) {
        if (dt == F32 || dt == F64) {
            double x = dt == F32 ? ((const float *)a)[i] : ((const double *)a)[i];
            double y = dt == F32 ? ((const float *)b)[i] : ((const double *)b)[i];
            int ok = isnan(y) ? isnan(x) : isinf(y) ? x == y : fabs(x - y) <= tol + tol * fabs(y);
            if (!ok) {
                printf("\n  %s: element %zu: opencl %.9g, cpu %.9g\n", name, i, x, y);
                return 0;
            }
        } else if (memcmp(a + i * es, b + i * es, es)) {
            printf("\n  %s: element %zu differs\n", name, i);
            return 0;
        }
    }
    return 1;
}

/* Build the case's graph, with its data made; INS gets the non-constant inputs' tensors. */
static loom_graph *case_graph(const ocase *c, void **data, loom_tensor **ins, size_t *n_ins)
{
    loom_graph *g = loom_graph_create(c->name);
    loom_value x[4];
    *n_ins = 0;
    for (int k = 0; k < c->n_in; k++) {
        const tin *t = &c->in[k];
        data[k] = make_data(t);
        char name[16];
        snprintf(name, sizeof name, "x%d", k);
        if (t->constant) {
            x[k] = loom_constant(g, name, t->dt, t->rank, t->dims, data[k]);
        } else {
            x[k] = loom_input(g, name, t->dt, t->rank, t->dims);
            loom_tensor_wrap(t->dt, t->rank, t->dims, data[k], &ins[(*n_ins)++]);
        }
    }
    loom_output(g, c->build(g, x), "y");
    return g;
}

static void free_case(loom_graph *g, void **data, int n_data, loom_tensor **ins, size_t n_ins)
{
    for (size_t k = 0; k < n_ins; k++)
        loom_tensor_destroy(ins[k]);
    for (int k = 0; k < n_data; k++)
        free(data[k]);
    loom_graph_destroy(g);
}

static int check_case(const ocase *c)
{
    void *data[4] = {0};
    loom_tensor *ins[4] = {0}, *got = NULL, *ref = NULL;
    size_t n_ins = 0;
    loom_graph *g = case_graph(c, data, ins, &n_ins);
    int ok = 0;
    if (loom_graph_check(g) != LOOM_OK) {
        printf("\n  %s: graph: %s\n", c->name, loom_last_error());
    } else if (plan_run(g, "cpu:0", ins, n_ins, &ref, 1) != LOOM_OK) {
        printf("\n  %s: cpu: %s\n", c->name, loom_last_error());
    } else if (plan_run(g, "opencl:0", ins, n_ins, &got, 1) != LOOM_OK) {
        printf("\n  %s: opencl: %s\n", c->name, loom_last_error());
    } else {
        ok = same(c->name, got, ref, c->tol);
    }
    loom_tensor_destroy(got);
    loom_tensor_destroy(ref);
    free_case(g, data, c->n_in, ins, n_ins);
    return ok;
}

static void run_cases(const ocase *cases, size_t n)
{
    if (no_device())
        return;
    for (size_t i = 0; i < n; i++) {
        if (getenv("LOOM_TEST_VERBOSE")) {
            printf("\n    %s", cases[i].name);
            fflush(stdout);
        }
        int ok = check_case(&cases[i]);
        if (!ok)
            printf("  FAILED: %s\n", cases[i].name);
        CU_ASSERT(ok);
    }
}

/* ---- builders -------------------------------------------------------------------------------- */

static loom_value node(loom_graph *g, const char *op, const loom_value *in, size_t n,
                       const loom_attr *at, size_t na)
{
    loom_value y = LOOM_NO_VALUE;
    loom_graph_op(g, op, NULL, in, n, at, na, &y, 1);
    return y;
}

/* Reduce OP over AXES (NAX of them; -1: attribute absent) with KEEP; NOOP sets
 * noop_with_empty_axes. */
static loom_value reduce(loom_graph *g, loom_value x, const char *op, const int64_t *axes,
                         int nax, int keep, int noop)
{
    loom_attr at[3];
    size_t na = 0;
    if (nax >= 0)
        at[na++] = loom_attr_ints("axes", (size_t)nax, axes);
    at[na++] = loom_attr_int("keepdims", keep);
    if (noop)
        at[na++] = loom_attr_int("noop_with_empty_axes", 1);
    return node(g, op, &x, 1, at, na);
}

#define RED(fn, op, keep, ...)                                                                     \
    static loom_value fn(loom_graph *g, const loom_value *x)                                       \
    {                                                                                              \
        static const int64_t ax[] = {__VA_ARGS__};                                                 \
        return reduce(g, x[0], op, ax, (int)(sizeof ax / sizeof ax[0]), keep, 0);                 \
    }
RED(r_l1_last, "ReduceL1", 1, -1)
RED(r_l2_01, "ReduceL2", 0, 0, 1)
RED(r_logsum_mid, "ReduceLogSum", 1, -2)
RED(r_lse_0, "ReduceLogSumExp", 0, 0)
RED(r_lse_last, "ReduceLogSumExp", 1, -1)
RED(r_ss_02, "ReduceSumSquare", 1, 0, 2)
RED(r_l2_big, "ReduceL2", 0, 1)
RED(r_l1_big, "ReduceL1", 1, 0)
RED(r_lse_big, "ReduceLogSumExp", 0, -1)
RED(r_ss_big, "ReduceSumSquare", 0, 0)
RED(r_mean_neg, "ReduceMean", 1, -3, -1)
RED(r_prod_big, "ReduceProd", 0, 1)

static loom_value r_l1_all(loom_graph *g, const loom_value *x)
{
    return reduce(g, x[0], "ReduceL1", NULL, -1, 0, 0);
}
static loom_value r_lse_all(loom_graph *g, const loom_value *x)
{
    return reduce(g, x[0], "ReduceLogSumExp", NULL, -1, 1, 0);
}
static loom_value r_l2_noop(loom_graph *g, const loom_value *x)
{
    return reduce(g, x[0], "ReduceL2", NULL, 0, 1, 1);
}
static loom_value r_logsum_noop(loom_graph *g, const loom_value *x)
{
    return reduce(g, x[0], "ReduceLogSum", NULL, 0, 0, 1);
}
/* opset 18: the axes as a constant input */
static loom_value r_ss_input_axes(loom_graph *g, const loom_value *x)
{
    static const int64_t ax[] = {-1, 1};
    int64_t n = 2;
    loom_value in[2] = {x[0], loom_constant(g, "axes", I64, 1, &n, ax)};
    loom_attr at = loom_attr_int("keepdims", 0);
    return node(g, "ReduceSumSquare", in, 2, &at, 1);
}

static loom_value trilu(loom_graph *g, const loom_value *x, int upper, int with_k)
{
    loom_attr at = loom_attr_int("upper", upper);
    return node(g, "Trilu", x, with_k ? 2 : 1, &at, 1);
}
static loom_value t_upper(loom_graph *g, const loom_value *x) { return trilu(g, x, 1, 0); }
static loom_value t_lower(loom_graph *g, const loom_value *x) { return trilu(g, x, 0, 0); }
static loom_value t_upper_k(loom_graph *g, const loom_value *x) { return trilu(g, x, 1, 1); }
static loom_value t_lower_k(loom_graph *g, const loom_value *x) { return trilu(g, x, 0, 1); }

static loom_value cumsum(loom_graph *g, const loom_value *x, int excl, int rev)
{
    loom_attr at[2] = {loom_attr_int("exclusive", excl), loom_attr_int("reverse", rev)};
    return node(g, "CumSum", x, 2, at, 2);
}
static loom_value c_plain(loom_graph *g, const loom_value *x) { return cumsum(g, x, 0, 0); }
static loom_value c_excl(loom_graph *g, const loom_value *x) { return cumsum(g, x, 1, 0); }
static loom_value c_rev(loom_graph *g, const loom_value *x) { return cumsum(g, x, 0, 1); }
static loom_value c_excl_rev(loom_graph *g, const loom_value *x) { return cumsum(g, x, 1, 1); }

static loom_value gather_el(loom_graph *g, const loom_value *x, int64_t axis)
{
    loom_attr at = loom_attr_int("axis", axis);
    return node(g, "GatherElements", x, 2, &at, 1);
}
static loom_value ge_0(loom_graph *g, const loom_value *x) { return gather_el(g, x, 0); }
static loom_value ge_m1(loom_graph *g, const loom_value *x) { return gather_el(g, x, -1); }
static loom_value ge_1(loom_graph *g, const loom_value *x) { return gather_el(g, x, 1); }

static loom_value scatter_el(loom_graph *g, const loom_value *x, int64_t axis, const char *red)
{
    loom_attr at[2] = {loom_attr_int("axis", axis), loom_attr_string("reduction", red)};
    return node(g, "ScatterElements", x, 3, at, 2);
}
static loom_value se_none_0(loom_graph *g, const loom_value *x)
{
    return scatter_el(g, x, 0, "none");
}
static loom_value se_add_m1(loom_graph *g, const loom_value *x)
{
    return scatter_el(g, x, -1, "add");
}
static loom_value se_mul_1(loom_graph *g, const loom_value *x)
{
    return scatter_el(g, x, 1, "mul");
}
static loom_value se_max_0(loom_graph *g, const loom_value *x)
{
    return scatter_el(g, x, 0, "max");
}
static loom_value se_min_m2(loom_graph *g, const loom_value *x)
{
    return scatter_el(g, x, -2, "min");
}

static loom_value gather_nd(loom_graph *g, const loom_value *x, int64_t b)
{
    loom_attr at = loom_attr_int("batch_dims", b);
    return node(g, "GatherND", x, 2, &at, 1);
}
static loom_value gn_0(loom_graph *g, const loom_value *x) { return gather_nd(g, x, 0); }
static loom_value gn_1(loom_graph *g, const loom_value *x) { return gather_nd(g, x, 1); }
static loom_value gn_2(loom_graph *g, const loom_value *x) { return gather_nd(g, x, 2); }

static loom_value scatter_nd(loom_graph *g, const loom_value *x, const char *red)
{
    loom_attr at = loom_attr_string("reduction", red);
    return node(g, "ScatterND", x, 3, &at, 1);
}
static loom_value sn_none(loom_graph *g, const loom_value *x) { return scatter_nd(g, x, "none"); }
static loom_value sn_add(loom_graph *g, const loom_value *x) { return scatter_nd(g, x, "add"); }
static loom_value sn_mul(loom_graph *g, const loom_value *x) { return scatter_nd(g, x, "mul"); }
static loom_value sn_max(loom_graph *g, const loom_value *x) { return scatter_nd(g, x, "max"); }
static loom_value sn_min(loom_graph *g, const loom_value *x) { return scatter_nd(g, x, "min"); }

static loom_value mod(loom_graph *g, const loom_value *x, int fmod)
{
    loom_attr at = loom_attr_int("fmod", fmod);
    return node(g, "Mod", x, 2, &at, 1);
}
static loom_value m_fmod(loom_graph *g, const loom_value *x) { return mod(g, x, 1); }
static loom_value m_py(loom_graph *g, const loom_value *x) { return mod(g, x, 0); }

static loom_value shift(loom_graph *g, const loom_value *x, const char *dir)
{
    loom_attr at = loom_attr_string("direction", dir);
    return node(g, "BitShift", x, 2, &at, 1);
}
static loom_value s_left(loom_graph *g, const loom_value *x) { return shift(g, x, "LEFT"); }
static loom_value s_right(loom_graph *g, const loom_value *x) { return shift(g, x, "RIGHT"); }

static loom_value is_nan(loom_graph *g, const loom_value *x)
{
    return node(g, "IsNaN", x, 1, NULL, 0);
}
static loom_value is_inf(loom_graph *g, const loom_value *x)
{
    return node(g, "IsInf", x, 1, NULL, 0);
}
static loom_value is_inf_neg(loom_graph *g, const loom_value *x)
{
    loom_attr at = loom_attr_int("detect_positive", 0);
    return node(g, "IsInf", x, 1, &at, 1);
}
static loom_value is_inf_pos(loom_graph *g, const loom_value *x)
{
    loom_attr at = loom_attr_int("detect_negative", 0);
    return node(g, "IsInf", x, 1, &at, 1);
}

/* ---- the cases ------------------------------------------------------------------------------- */

#define T 1e-5

static void test_reduce_family_matches_cpu(void)
{
    static const ocase cases[] = {
        {"ReduceL1 [3,5,7] axis -1 keep", 1, {IN(F32, 3, 3, 5, 7)}, r_l1_last, T},
        {"ReduceL2 [4,6,3] axes 0,1", 1, {IN(F32, 3, 4, 6, 3)}, r_l2_01, T},
        {"ReduceLogSum [2,9,5] axis -2 keep", 1, {INP(F32, 3, 2, 9, 5)}, r_logsum_mid, T},
        {"ReduceLogSumExp [7,3] axis 0", 1, {IN(F32, 2, 7, 3)}, r_lse_0, T},
        {"ReduceLogSumExp [5,11] axis -1 keep", 1, {IN(F32, 2, 5, 11)}, r_lse_last, T},
        {"ReduceLogSumExp NaN/inf [6,4]", 1, {INS(F32, 2, 6, 4)}, r_lse_last, T},
        {"ReduceSumSquare [3,4,5] axes 0,2 keep", 1, {IN(F32, 3, 3, 4, 5)}, r_ss_02, T},
        {"ReduceSumSquare axes as input", 1, {IN(F32, 3, 3, 4, 5)}, r_ss_input_axes, T},
        {"ReduceL1 all axes", 1, {IN(F32, 3, 2, 3, 5)}, r_l1_all, T},
        {"ReduceLogSumExp all axes keep", 1, {IN(F32, 3, 2, 3, 5)}, r_lse_all, T},
        {"ReduceL2 noop_with_empty_axes", 1, {IN(F32, 2, 3, 4)}, r_l2_noop, T},
        {"ReduceLogSum noop_with_empty_axes", 1, {INP(F32, 2, 3, 4)}, r_logsum_noop, T},
        /* long rows: the work-group kernel, split in parts where there are few outputs */
        {"ReduceL2 [3,5000] axis 1", 1, {IN(F32, 2, 3, 5000)}, r_l2_big, 1e-4},
        {"ReduceL1 [4099,3] axis 0 keep", 1, {IN(F32, 2, 4099, 3)}, r_l1_big, 1e-4},
        {"ReduceLogSumExp [2,20001] axis -1", 1, {IN(F32, 2, 2, 20001)}, r_lse_big, 1e-4},
        {"ReduceSumSquare [10007] axis 0", 1, {IN(F32, 1, 10007)}, r_ss_big, 1e-4},
        {"ReduceMean [3,4,70] axes -3,-1 keep", 1, {IN(F32, 3, 3, 4, 70)}, r_mean_neg, T},
        {"ReduceProd [2,40,3] axis 1", 1, {INP(F32, 3, 2, 40, 3)}, r_prod_big, 1e-4},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

static void test_trilu_and_cumsum_match_cpu(void)
{
    static const ocase cases[] = {
        {"Trilu upper [3,5,7]", 1, {IN(F32, 3, 3, 5, 7)}, t_upper, 0},
        {"Trilu lower [6,4]", 1, {IN(F32, 2, 6, 4)}, t_lower, 0},
        {"Trilu upper k computed i64 [2,5,5]", 2, {IN(F32, 3, 2, 5, 5), IX(I64, -3, 4, 0, 0)},
         t_upper_k, 0},
        {"Trilu lower k constant -2 [4,7] i32", 2, {IN(I32, 2, 4, 7), CX(I64, -2, -1, 0, 0)},
         t_lower_k, 0},
        {"Trilu upper k constant 9 [3,4] i64", 2, {IN(I64, 2, 3, 4), CX(I64, 9, 10, 0, 0)},
         t_upper_k, 0},
        {"Trilu lower [2,3,1,6] u8", 1, {IN(U8, 4, 2, 3, 1, 6)}, t_lower, 0},
        {"CumSum axis 1 (constant) [3,7,5]", 2, {IN(F32, 3, 3, 7, 5), CX(I64, 1, 2, 0, 0)}, c_plain,
         T},
        {"CumSum exclusive axis -1 [4,9]", 2, {IN(F32, 2, 4, 9), CX(I32, -1, 0, 0, 0)}, c_excl, T},
        {"CumSum reverse axis 0 i32 [6,5]", 2, {IN(I32, 2, 6, 5), CX(I64, 0, 1, 0, 0)}, c_rev, 0},
        {"CumSum exclusive reverse axis -2 i64 [2,5,3]", 2,
         {IN(I64, 3, 2, 5, 3), CX(I32, -2, -1, 0, 0)}, c_excl_rev, 0},
        {"CumSum computed axis [3,4,6]", 2, {IN(F32, 3, 3, 4, 6), IX(I64, -3, 3, 0, 0)}, c_plain, T},
        {"CumSum computed axis i32 [5,2]", 2, {IN(F32, 2, 5, 2), IX(I32, 0, 2, 0, 0)}, c_excl_rev,
         T},
        {"CumSum 1-D [1000]", 2, {IN(F32, 1, 1000), CX(I64, 0, 1, 0, 0)}, c_plain, 1e-4},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

static void test_element_indexing_matches_cpu(void)
{
    static const ocase cases[] = {
        {"GatherElements axis 0 [5,4] idx [3,4] i64", 2, {IN(F32, 2, 5, 4), IX(I64, -5, 5, 2, 3, 4)},
         ge_0, 0},
        {"GatherElements axis -1 [3,4,6] idx [3,4,2] i32", 2,
         {IN(F32, 3, 3, 4, 6), IX(I32, -6, 6, 3, 3, 4, 2)}, ge_m1, 0},
        {"GatherElements axis 1 i64 data, const idx", 2,
         {IN(I64, 3, 2, 7, 3), CX(I64, -7, 7, 3, 2, 9, 3)}, ge_1, 0},
        {"GatherElements axis 0 u16 [4,3]", 2, {IN(U16, 2, 4, 3), IX(I64, 0, 4, 2, 6, 2)}, ge_0,
         0},
        {"ScatterElements none axis 0 (duplicates)", 3,
         {IN(F32, 2, 3, 5), IX(I64, -3, 3, 2, 4, 5), IN(F32, 2, 4, 5)}, se_none_0, 0},
        {"ScatterElements add axis -1", 3,
         {IN(F32, 3, 2, 3, 4), IX(I32, -4, 4, 3, 2, 3, 6), IN(F32, 3, 2, 3, 6)}, se_add_m1, T},
        {"ScatterElements mul axis 1 i32", 3,
         {IN(I32, 2, 3, 4), IX(I64, 0, 4, 2, 3, 5), IN(I32, 2, 3, 5)}, se_mul_1, 0},
        {"ScatterElements max axis 0 i64, const idx", 3,
         {IN(I64, 2, 4, 3), CX(I64, -4, 4, 2, 5, 3), IN(I64, 2, 5, 3)}, se_max_0, 0},
        {"ScatterElements min axis -2", 3,
         {IN(F32, 3, 3, 4, 2), IX(I64, -4, 4, 3, 2, 6, 2), IN(F32, 3, 2, 6, 2)}, se_min_m2, 0},
        {"ScatterElements none u8", 3, {IN(U8, 2, 5, 2), IX(I64, 0, 5, 2, 3, 2), IN(U8, 2, 3, 2)},
         se_none_0, 0},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

static void test_nd_indexing_matches_cpu(void)
{
    static const ocase cases[] = {
        {"GatherND [4,5,3] idx [6,2]", 2, {IN(F32, 3, 4, 5, 3), IX(I64, -4, 4, 2, 6, 2)}, gn_0, 0},
        {"GatherND [4,5] idx [2,3,2] (elements)", 2, {IN(F32, 2, 4, 5), IX(I64, 0, 4, 3, 2, 3, 2)},
         gn_0, 0},
        {"GatherND [5,3,2] idx [4,1] i64 data", 2, {IN(I64, 3, 5, 3, 2), CX(I64, -5, 5, 2, 4, 1)},
         gn_0, 0},
        {"GatherND batch_dims 1 [3,4,5] idx [3,2,1]", 2,
         {IN(F32, 3, 3, 4, 5), IX(I64, -4, 4, 3, 3, 2, 1)}, gn_1, 0},
        {"GatherND batch_dims 2 [2,3,4,5] idx [2,3,1]", 2,
         {IN(F32, 4, 2, 3, 4, 5), IX(I64, 0, 4, 3, 2, 3, 1)}, gn_2, 0},
        {"ScatterND none [6,4] idx [3,1] (duplicates)", 3,
         {IN(F32, 2, 6, 4), IX(I64, -6, 6, 2, 3, 1), IN(F32, 2, 3, 4)}, sn_none, 0},
        {"ScatterND add [4,3,2] idx [5,2]", 3,
         {IN(F32, 3, 4, 3, 2), IX(I64, 0, 3, 2, 5, 2), IN(F32, 2, 5, 2)}, sn_add, T},
        {"ScatterND mul i32 [5,3] idx [4,2] elements", 3,
         {IN(I32, 2, 5, 3), IX(I64, 0, 3, 2, 4, 2), IN(I32, 1, 4)}, sn_mul, 0},
        {"ScatterND max i64 [4,4] idx [2,1] const", 3,
         {IN(I64, 2, 4, 4), CX(I64, -4, 4, 2, 2, 1), IN(I64, 2, 2, 4)}, sn_max, 0},
        {"ScatterND min [3,5] idx [2,2,1]", 3,
         {IN(F32, 2, 3, 5), IX(I64, 0, 3, 3, 2, 2, 1), IN(F32, 3, 2, 2, 5)}, sn_min, 0},
        {"ScatterND none u8 [7] idx [3,1]", 3, {IN(U8, 1, 7), IX(I64, 0, 7, 2, 3, 1), IN(U8, 1, 3)},
         sn_none, 0},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

static void test_mod_bitshift_isnan_isinf_match_cpu(void)
{
    static const ocase cases[] = {
        {"Mod fmod f32 [4,7]%[7]", 2, {IN(F32, 2, 4, 7), INP(F32, 1, 7)}, m_fmod, T},
        {"Mod fmod f32 [3,1,5]%[4,1]", 2, {IN(F32, 3, 3, 1, 5), IN(F32, 2, 4, 1)}, m_fmod, T},
        {"Mod python i32 [5,6]%[6]", 2, {IX(I32, -40, 40, 2, 5, 6), IX(I32, -7, 8, 1, 6)}, m_py, 0},
        {"Mod fmod i64 [5,6]%[5,1]", 2, {IX(I64, -40, 40, 2, 5, 6), IX(I64, -7, 8, 2, 5, 1)},
         m_fmod, 0},
        {"Mod python i8", 2, {IX(I8, -100, 100, 1, 9), IX(I8, -9, 9, 1, 9)}, m_py, 0},
        {"Mod u16", 2, {IX(U16, 0, 60000, 1, 9), IX(U16, 0, 300, 1, 9)}, m_py, 0},
        {"BitShift left u8", 2, {IX(U8, 0, 256, 2, 3, 5), IX(U8, 0, 10, 1, 5)}, s_left, 0},
        {"BitShift right u32", 2, {IX(U32, 0, 1000000, 1, 11), IX(U32, 0, 40, 1, 11)}, s_right, 0},
        {"BitShift left u64", 2, {IX(U64, 0, 1000000, 1, 11), IX(U64, 0, 70, 1, 1)}, s_left, 0},
        {"IsNaN [5,7]", 1, {INS(F32, 2, 5, 7)}, is_nan, 0},
        {"IsInf [5,7]", 1, {INS(F32, 2, 5, 7)}, is_inf, 0},
        {"IsInf negative only", 1, {INS(F32, 1, 33)}, is_inf_neg, 0},
        {"IsInf positive only", 1, {INS(F32, 3, 3, 1, 11)}, is_inf_pos, 0},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

/* ---- refusals and bad indices ---------------------------------------------------------------- */

/* A strict plan on opencl:0 is refused with the backend's reason containing WHY; when
 * CPU_RUNS, a plan that may use the CPU runs the node there, with the CPU's numbers. */
static void expect_refused(const ocase *c, const char *why, int cpu_runs)
{
    void *data[4] = {0};
    loom_tensor *ins[4] = {0}, *got = NULL, *ref = NULL;
    size_t n_ins = 0;
    loom_graph *g = case_graph(c, data, ins, &n_ins);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_status st = plan_run(g, "opencl:0", ins, n_ins, &got, 1);
    CU_ASSERT_EQUAL(st, LOOM_ERR_UNSUPPORTED);
    if (st == LOOM_ERR_UNSUPPORTED && !strstr(loom_last_error(), why)) {
        printf("\n  %s: refused with '%s', expected '%s' in it\n", c->name, loom_last_error(),
               why);
        CU_FAIL("refused for another reason");
    }
    loom_tensor_destroy(got);
    got = NULL;
    if (cpu_runs) {
        CU_ASSERT_EQUAL(plan_run(g, "opencl:0", ins, n_ins, &got, 0), LOOM_OK);
        CU_ASSERT_EQUAL(plan_run(g, "cpu:0", ins, n_ins, &ref, 1), LOOM_OK);
    }
    if (got && ref)
        CU_ASSERT(same(c->name, got, ref, T));
    loom_tensor_destroy(got);
    loom_tensor_destroy(ref);
    free_case(g, data, c->n_in, ins, n_ins);
}

static void test_unsupported_nodes_are_refused_and_run_on_cpu(void)
{
    if (no_device())
        return;
    static const ocase l1_f64 = {"ReduceL1 f64", 1, {IN(F64, 2, 3, 4)}, r_l1_last, T};
    expect_refused(&l1_f64, "ReduceL1: f32 only", 1);
    static const ocase cumsum_f64 = {"CumSum f64", 2, {IN(F64, 2, 3, 4), CX(I64, 0, 1, 0, 0)},
                                     c_plain, T};
    expect_refused(&cumsum_f64, "CumSum: f32, i32 and i64 only", 1);
    /* reductions the CPU has no kernel for either */
    static const ocase snd_f64_add = {"ScatterND add f64", 3,
                                      {IN(F64, 2, 4, 2), IX(I64, 0, 4, 2, 2, 1), IN(F64, 2, 2, 2)},
                                      sn_add, T};
    expect_refused(&snd_f64_add, "a reduction needs f32, i32 or i64", 0);
    static const ocase snd_f64 = {"ScatterND none f64", 3,
                                  {IN(F64, 2, 4, 2), IX(I64, 0, 4, 2, 2, 1), IN(F64, 2, 2, 2)},
                                  sn_none, T};
    CU_ASSERT(check_case(&snd_f64)); /* a move: any element size runs */
    static const ocase se_u8_add = {"ScatterElements add u8", 3,
                                    {IN(U8, 2, 4, 2), IX(I64, 0, 4, 2, 2, 2), IN(U8, 2, 2, 2)},
                                    se_add_m1, T};
    expect_refused(&se_u8_add, "a reduction needs f32, i32 or i64", 0);
    static const ocase mod_f64 = {"Mod f64", 2, {IN(F64, 1, 5), INP(F64, 1, 5)}, m_fmod, T};
    expect_refused(&mod_f64, "Mod: f32 and 8- to 64-bit integers only", 1);
    static const ocase isnan_f16 = {"IsNaN f16", 1, {INS(F16, 1, 9)}, is_nan, 0};
    expect_refused(&isnan_f16, "IsNaN: f32 only", 0);
}

/* A case whose run must fail on opencl:0 (strict) with LOOM_ERR_INVALID_ARGUMENT and WHAT in
 * the message: an index or an axis out of range computed at run time. */
static void expect_run_fails(const ocase *c, const char *what)
{
    void *data[4] = {0};
    loom_tensor *ins[4] = {0}, *got = NULL;
    size_t n_ins = 0;
    loom_graph *g = case_graph(c, data, ins, &n_ins);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_status st = plan_run(g, "opencl:0", ins, n_ins, &got, 1);
    CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
    if (st != LOOM_OK && !strstr(loom_last_error(), what)) {
        printf("\n  %s: failed with '%s', expected '%s' in it\n", c->name, loom_last_error(),
               what);
        CU_FAIL("failed for another reason");
    }
    /* Not strict: the node is re-run on the CPU, whose kernel names the value. */
    loom_tensor_destroy(got);
    got = NULL;
    CU_ASSERT_EQUAL(plan_run(g, "opencl:0", ins, n_ins, &got, 0), LOOM_ERR_INVALID_ARGUMENT);
    loom_tensor_destroy(got);
    free_case(g, data, c->n_in, ins, n_ins);
}

static void test_computed_indices_out_of_range_fail_the_run(void)
{
    if (no_device())
        return;
    static const ocase ge = {"GatherElements index 9 of 5", 2,
                             {IN(F32, 2, 5, 4), IX(I64, 9, 10, 2, 3, 4)}, ge_0, 0};
    expect_run_fails(&ge, "GatherElements: an index is out of range");
    static const ocase se = {"ScatterElements index -7 of 3", 3,
                             {IN(F32, 2, 3, 5), IX(I32, -7, -6, 2, 2, 5), IN(F32, 2, 2, 5)},
                             se_none_0, 0};
    expect_run_fails(&se, "ScatterElements: an index is out of range");
    static const ocase gn = {"GatherND index 4 of 4", 2,
                             {IN(F32, 3, 4, 5, 3), IX(I64, 4, 5, 2, 6, 2)}, gn_0, 0};
    expect_run_fails(&gn, "GatherND: an index is out of range");
    static const ocase sn = {"ScatterND index 6 of 6", 3,
                             {IN(F32, 2, 6, 4), IX(I64, 6, 7, 2, 3, 1), IN(F32, 2, 3, 4)}, sn_add,
                             0};
    expect_run_fails(&sn, "ScatterND: an index is out of range");
    static const ocase cs = {"CumSum axis 3 of rank 2", 2, {IN(F32, 2, 3, 4), IX(I64, 3, 4, 0, 0)},
                             c_plain, 0};
    expect_run_fails(&cs, "CumSum: axis 3 is outside [-2, 2)");
}

static void test_constant_indices_out_of_range_are_refused_at_plan(void)
{
    if (no_device())
        return;
    /* The registry checks Gather's constant indices, not these: the backend's prepare must. */
    static const ocase c = {"GatherND constant index 5 of 4", 2,
                            {IN(F32, 2, 4, 3), CX(I64, 5, 6, 2, 2, 1)}, gn_0, 0};
    void *data[4] = {0};
    loom_tensor *ins[4] = {0}, *got = NULL;
    size_t n_ins = 0;
    loom_graph *g = case_graph(&c, data, ins, &n_ins);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_status st = plan_run(g, "opencl:0", ins, n_ins, &got, 1);
    CU_ASSERT_NOT_EQUAL(st, LOOM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "index 5 is outside a dimension of 4"));
    loom_tensor_destroy(got);
    free_case(g, data, c.n_in, ins, n_ins);
}

/* ---- suite ----------------------------------------------------------------------------------- */

static int suite_init(void)
{
    loom_runtime_options ro = {.struct_size = sizeof ro};
    if (loom_runtime_create(&ro, &g_rt) != LOOM_OK)
        return -1;
    for (size_t i = 0; i < loom_runtime_device_count(g_rt); i++) {
        char id[64];
        if (loom_runtime_device(g_rt, i, id, sizeof id, NULL) == LOOM_OK &&
            !strcmp(id, "opencl:0"))
            g_have_ocl = 1;
    }
    return 0;
}

static int suite_cleanup(void)
{
    loom_runtime_destroy(g_rt);
    return 0;
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("opencl_ops", suite_init, suite_cleanup);
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"test_reduce_family_matches_cpu", test_reduce_family_matches_cpu},
        {"test_trilu_and_cumsum_match_cpu", test_trilu_and_cumsum_match_cpu},
        {"test_element_indexing_matches_cpu", test_element_indexing_matches_cpu},
        {"test_nd_indexing_matches_cpu", test_nd_indexing_matches_cpu},
        {"test_mod_bitshift_isnan_isinf_match_cpu", test_mod_bitshift_isnan_isinf_match_cpu},
        {"test_unsupported_nodes_are_refused_and_run_on_cpu",
         test_unsupported_nodes_are_refused_and_run_on_cpu},
        {"test_computed_indices_out_of_range_fail_the_run",
         test_computed_indices_out_of_range_fail_the_run},
        {"test_constant_indices_out_of_range_are_refused_at_plan",
         test_constant_indices_out_of_range_are_refused_at_plan},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++)
        if (!only || strstr(tests[i].name, only))
            CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
