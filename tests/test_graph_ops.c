/*
 * CUnit suite of the operator registry: shape and dtype inference, canonical attributes
 * (graph/ops.h) and cost of every operator, through the builders and loom_graph_op, and the
 * errors bad graphs get (each names the node and the op). Canonical attributes are read from
 * the node's attribute list, exactly as a backend receives them.
 */
#include <loom/graph.h>

#include "../graph/graph_internal.h"
#include "test_support.h"

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers -------------------------------------------------------------------------------- */

#define D(...) ((const int64_t[]){__VA_ARGS__})
#define NDIMS(...) ((uint32_t)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))

static loom_value in(loom_graph *g, const char *name, loom_dtype dt, uint32_t rank,
                     const int64_t *dims)
{
    loom_value v = loom_input(g, name, dt, rank, dims);
    CU_ASSERT_NOT_EQUAL(v, LOOM_NO_VALUE);
    return v;
}

/* Whether V has DT and shape DIMS[RANK]; says what it has when not. */
static int shape_is(const loom_graph *g, loom_value v, loom_dtype dt, uint32_t rank,
                    const int64_t *dims)
{
    loom_dtype got_dt = LOOM_DTYPE_UNDEFINED;
    uint32_t got_rank = 0;
    int64_t got[LOOM_MAX_RANK] = {0};
    if (v == LOOM_NO_VALUE) {
        printf("\n  no value (error: %s)\n", loom_last_error());
        return 0;
    }
    if (loom_value_info(g, v, &got_dt, &got_rank, got) != LOOM_OK)
        return 0;
    int ok = got_dt == dt && got_rank == rank;
    for (uint32_t k = 0; ok && k < rank; k++)
        ok = got[k] == dims[k];
    if (!ok) {
        char a[160], b[160];
        printf("\n  got %s %s, expected %s %s\n", loom_dtype_name(got_dt),
               loom_dims_format(got_rank, got, a, sizeof a), loom_dtype_name(dt),
               loom_dims_format(rank, dims, b, sizeof b));
    }
    return ok;
}
#define ASSERT_SHAPE(g, v, dt, ...)                                                          \
    CU_ASSERT(shape_is(g, v, dt, NDIMS(__VA_ARGS__), D(__VA_ARGS__)))
#define ASSERT_SCALAR(g, v, dt) CU_ASSERT(shape_is(g, v, dt, 0, NULL))

/* The canonical attributes of the graph's last node. */
static const loom_attr_list *last_attrs(const loom_graph *g)
{
    return g->n_nodes ? &g->nodes[g->n_nodes - 1].attrs : NULL;
}

static const loom_attr *last_attr(const loom_graph *g, const char *name, loom_attr_kind kind)
{
    const loom_attr *a = loom_attr_list_get(last_attrs(g), name);
    if (!a || a->kind != kind) {
        printf("\n  attribute '%s' %s\n", name, a ? "has the wrong kind" : "is missing");
        return NULL;
    }
    return a;
}

static int int_is(const loom_graph *g, const char *name, int64_t want)
{
    const loom_attr *a = last_attr(g, name, LOOM_ATTR_INT);
    if (a && a->i != want)
        printf("\n  attribute '%s' is %lld, expected %lld\n", name, (long long)a->i,
               (long long)want);
    return a && a->i == want;
}
#define ASSERT_INT(g, name, want) CU_ASSERT(int_is(g, name, want))

static int float_is(const loom_graph *g, const char *name, float want)
{
    const loom_attr *a = last_attr(g, name, LOOM_ATTR_FLOAT);
    int ok = a && (a->f == want || (isnan(a->f) && isnan(want)));
    if (a && !ok)
        printf("\n  attribute '%s' is %g, expected %g\n", name, a->f, want);
    return ok;
}
#define ASSERT_FLOAT(g, name, want) CU_ASSERT(float_is(g, name, want))

static int ints_are(const loom_graph *g, const char *name, size_t n, const int64_t *want)
{
    const loom_attr *a = last_attr(g, name, LOOM_ATTR_INTS);
    int ok = a && a->count == n && (n == 0 || memcmp(a->ints, want, n * sizeof *want) == 0);
    if (a && !ok) {
        char x[160], y[160];
        printf("\n  attribute '%s' is %s, expected %s\n", name,
               loom_dims_format((uint32_t)(a->count < 8 ? a->count : 8), a->ints, x, sizeof x),
               loom_dims_format((uint32_t)n, want, y, sizeof y));
    }
    return ok;
}
#define ASSERT_INTS(g, name, ...) CU_ASSERT(ints_are(g, name, NDIMS(__VA_ARGS__), D(__VA_ARGS__)))
#define ASSERT_EMPTY_INTS(g, name) CU_ASSERT(ints_are(g, name, 0, NULL))

/* Whether the last node carries exactly the attributes NAMES (NULL-terminated). */
static int attrs_exactly(const loom_graph *g, const char *const *names)
{
    const loom_attr_list *l = last_attrs(g);
    size_t n = 0;
    int ok = l != NULL;
    for (; names[n]; n++)
        ok = ok && loom_attr_list_get(l, names[n]) != NULL;
    ok = ok && l->count == n;
    if (!ok && l) {
        printf("\n  node carries:");
        for (size_t k = 0; k < l->count; k++)
            printf(" %s", l->items[k].name);
        printf("\n");
    }
    return ok;
}
#define ASSERT_ATTRS(g, ...) CU_ASSERT(attrs_exactly(g, (const char *const[]){__VA_ARGS__, NULL}))
#define ASSERT_NO_ATTRS(g) CU_ASSERT(attrs_exactly(g, (const char *const[]){NULL}))

static int contains(const char *msg, const char *part)
{
    return !part || strstr(msg, part) != NULL;
}

/* Whether the last builder call failed with STATUS and a message holding NODE (when given), OP
 * and TEXT; and whether loom_graph_check reports that same first failure. */
static int failed_with(loom_graph *g, loom_status status, const char *node, const char *op,
                       const char *text)
{
    char first[1024];
    snprintf(first, sizeof first, "%s", loom_last_error());
    int ok = contains(first, node) && contains(first, op) && contains(first, text);
    loom_status st = loom_graph_check(g);
    ok = ok && st == status && strcmp(loom_last_error(), first) == 0;
    if (!ok)
        printf("\n  status %s, message \"%s\"; wanted %s with '%s' '%s' '%s'\n",
               loom_status_name(st), first, loom_status_name(status), node ? node : "",
               op ? op : "", text ? text : "");
    return ok;
}
#define ASSERT_FAILED(g, status, node, op, text) CU_ASSERT(failed_with(g, status, node, op, text))

/* Cost of the graph's last node, as the scheduler computes it. */
static loom_op_cost last_cost(const loom_graph *g)
{
    loom_op_cost c = {0};
    size_t i = g->n_nodes - 1;
    loom_tensor_desc ins[8], outs[8];
    const void *consts[8];
    loom_node_desc d;
    graph_node_desc(g, i, &d, ins, outs, consts);
    g->nodes[i].def->cost(&d, &c);
    return c;
}

/* One output of generic op OP (error left in the graph when it fails). */
static loom_value op1(loom_graph *g, const char *op, const char *node, const loom_value *inputs,
                      size_t n_in, const loom_attr *attrs, size_t n_attrs)
{
    loom_value out = LOOM_NO_VALUE;
    loom_graph_op(g, op, node, inputs, n_in, attrs, n_attrs, &out, 1);
    return out;
}

/* ---- the registry and its helpers ----------------------------------------------------------- */

/* What `loom ops` lists: each op's domain, and the dtypes its inference checks input 0 against
 * (probed through infer() itself; every op must survive the probe). */
static void test_registry_domains_and_probed_input_dtypes(void)
{
    for (size_t i = 0; i < loom_op_count(); i++) {
        const loom_op_def *def = loom_op_at(i);
        const char *d = loom_op_domain(def);
        CU_ASSERT(!strcmp(d, "ai.onnx") || !strcmp(d, "com.microsoft") || !strcmp(d, "loom"));
        (void)loom_op_input0_dtypes(def);
    }
    CU_ASSERT_STRING_EQUAL(loom_op_domain(loom_op_find("MoE")), "com.microsoft");
    CU_ASSERT_STRING_EQUAL(loom_op_domain(loom_op_find("FusedConv")), "loom");
    CU_ASSERT_STRING_EQUAL(loom_op_domain(loom_op_find("GridSample")), "ai.onnx");
    const uint32_t relu = loom_op_input0_dtypes(loom_op_find("Relu"));
    CU_ASSERT(relu & (1u << LOOM_DTYPE_F32));
    CU_ASSERT_FALSE(relu & (1u << LOOM_DTYPE_I32));
    const uint32_t pool = loom_op_input0_dtypes(loom_op_find("MaxPool"));
    CU_ASSERT(pool & (1u << LOOM_DTYPE_U8));
    CU_ASSERT(pool & (1u << LOOM_DTYPE_I8));
    CU_ASSERT_EQUAL(loom_op_input0_dtypes(loom_op_find("Where")), 1u << LOOM_DTYPE_BOOL);
    CU_ASSERT_EQUAL(loom_op_input0_dtypes(loom_op_find("HannWindow")),
                    (1u << LOOM_DTYPE_I32) | (1u << LOOM_DTYPE_I64));
}

static void test_registry_finds_every_abi_op_by_name_and_id(void)
{
    /* every id of ABI 0.2 is registered, exactly once */
    CU_ASSERT_EQUAL(loom_op_count(), LOOM_OP_COUNT_V0_4 - 1);
    for (int id = 1; id < LOOM_OP_COUNT_V0_4; id++) {
        const loom_op_def *def = loom_op_get((loom_op_id)id);
        CU_ASSERT_PTR_NOT_NULL_FATAL(def);
        CU_ASSERT_EQUAL(def->id, id);
        CU_ASSERT_PTR_EQUAL(loom_op_find(def->name), def);
        CU_ASSERT_PTR_NOT_NULL(def->infer);
        CU_ASSERT_PTR_NOT_NULL(def->cost);
        CU_ASSERT(def->min_inputs <= def->max_inputs);
        CU_ASSERT(def->min_outputs >= 1 && def->min_outputs <= def->max_outputs);
    }
    for (size_t i = 0; i < loom_op_count(); i++)
        CU_ASSERT_PTR_EQUAL(loom_op_at(i), loom_op_get(loom_op_at(i)->id));
    CU_ASSERT_PTR_NULL(loom_op_at(loom_op_count()));
    CU_ASSERT_PTR_NULL(loom_op_get(LOOM_OP_INVALID));
    CU_ASSERT_PTR_NULL(loom_op_find("matmul")); /* case-sensitive, ONNX spelling */
    CU_ASSERT_PTR_NULL(loom_op_find("Conv2d"));
    CU_ASSERT_PTR_NULL(loom_op_find(NULL));
    CU_ASSERT_EQUAL(loom_op_find("LayerNormalization")->id, LOOM_OP_LAYER_NORMALIZATION);
}

static void test_attr_list_owns_deep_copies_and_rejects_duplicates(void)
{
    int64_t axes[2] = {1, 2};
    char name[8] = "axes";
    char mode[8] = "tanh";
    loom_attr attrs[2] = {loom_attr_ints(name, 2, axes), loom_attr_string("mode", mode)};
    loom_attr_list list;
    char err[128] = "";
    CU_ASSERT_EQUAL_FATAL(loom_attr_list_init(&list, attrs, 2, err, sizeof err), LOOM_OK);
    axes[0] = 99;
    name[0] = 'X';
    mode[0] = 'X';
    const loom_attr *a = loom_attr_list_get(&list, "axes");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(a->ints[0], 1);
    CU_ASSERT_STRING_EQUAL(loom_attr_list_get(&list, "mode")->s, "tanh");

    loom_infer_ctx ctx = {.attrs = &list, .err = err, .err_len = sizeof err};
    CU_ASSERT_EQUAL(loom_infer_set_int(&ctx, "keepdims", 0), LOOM_OK);
    CU_ASSERT_EQUAL(loom_infer_set_ints(&ctx, "axes", 1, a->ints + 1), LOOM_OK); /* self-alias */
    const int64_t *v;
    CU_ASSERT_EQUAL(loom_infer_get_ints(&ctx, "axes", &v), 1);
    CU_ASSERT_EQUAL(v[0], 2);
    CU_ASSERT_EQUAL(loom_infer_get_int(&ctx, "keepdims", 7), 0);
    CU_ASSERT_EQUAL(loom_infer_get_int(&ctx, "mode", 7), 7); /* wrong kind: the default */
    loom_infer_remove(&ctx, "mode");
    CU_ASSERT_PTR_NULL(loom_attr_list_get(&list, "mode"));
    CU_ASSERT_EQUAL(list.count, 2);
    loom_attr_list_free(&list);

    loom_attr dup[2] = {loom_attr_int("axis", 0), loom_attr_int("axis", 1)};
    CU_ASSERT_EQUAL(loom_attr_list_init(&list, dup, 2, err, sizeof err),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(err, "duplicate attribute 'axis'"));
    loom_attr unnamed = loom_attr_int(NULL, 0);
    CU_ASSERT_EQUAL(loom_attr_list_init(&list, &unnamed, 1, err, sizeof err),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(list.count, 0);
}

static void test_broadcast_shapes_follows_numpy_rules(void)
{
    loom_tensor_desc a = {.rank = 3, .dims = {2, 1, 4}}, b = {.rank = 2, .dims = {3, 1}}, o;
    CU_ASSERT_FATAL(loom_broadcast_shapes(&a, &b, &o));
    CU_ASSERT(o.rank == 3 && o.dims[0] == 2 && o.dims[1] == 3 && o.dims[2] == 4);
    loom_tensor_desc s = {.rank = 0}, z = {.rank = 1, .dims = {0}}, one = {.rank = 1, .dims = {1}};
    CU_ASSERT(loom_broadcast_shapes(&s, &a, &o) && o.rank == 3);
    CU_ASSERT(loom_broadcast_shapes(&one, &z, &o) && o.rank == 1 && o.dims[0] == 0);
    loom_tensor_desc c = {.rank = 1, .dims = {3}};
    CU_ASSERT_FALSE(loom_broadcast_shapes(&a, &c, &o)); /* 4 vs 3 */
    CU_ASSERT_FALSE(loom_broadcast_shapes(&z, &c, &o)); /* 0 vs 3 */
}

static void test_dims_numel_checked_rejects_int64_and_size_overflow(void)
{
    int64_t n = -1;
    CU_ASSERT(loom_dims_numel_checked(3, D(2, 3, 4), 4, &n) && n == 24);
    CU_ASSERT(loom_dims_numel_checked(0, NULL, 4, &n) && n == 1);
    CU_ASSERT_FALSE(loom_dims_numel_checked(3, D(1LL << 32, 1LL << 32, 2), 1, &n));
    /* 2^62 elements fit int64 but not in bytes of 4 each. */
    CU_ASSERT(loom_dims_numel_checked(2, D(1LL << 31, 1LL << 31), 0, &n));
    CU_ASSERT_FALSE(loom_dims_numel_checked(2, D(1LL << 31, 1LL << 31), 8, &n));
    /* An empty dim makes the product 0, however large the rest. */
    CU_ASSERT(loom_dims_numel_checked(3, D(INT64_MAX, 0, INT64_MAX), 8, &n) && n == 0);
    CU_ASSERT_FALSE(loom_dims_numel_checked(1, D(-1), 1, &n));
    char buf[32];
    CU_ASSERT_STRING_EQUAL(loom_dims_format(3, D(2, 3, 4), buf, sizeof buf), "[2, 3, 4]");
    CU_ASSERT_STRING_EQUAL(loom_dims_format(0, NULL, buf, sizeof buf), "[]");
    CU_ASSERT_STRING_EQUAL(loom_dims_format(3, D(2, 3, 4), buf, 5), "[2, ");
}

/* ---- elementwise ---------------------------------------------------------------------------- */

static void test_unary_float_ops_keep_shape_and_dtype(void)
{
    loom_graph *g = loom_graph_create("unary");
    loom_value x = in(g, "x", LOOM_DTYPE_F16, 2, D(3, 5));
    loom_value (*ops[])(loom_graph *, loom_value) = {loom_relu, loom_sigmoid, loom_tanh,
                                                     loom_erf,  loom_sqrt,    loom_exp,
                                                     loom_log,  loom_neg,     loom_abs,
                                                     loom_identity};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        ASSERT_SHAPE(g, ops[i](g, x), LOOM_DTYPE_F16, 3, 5);
        ASSERT_NO_ATTRS(g);
    }
    loom_value b = in(g, "b", LOOM_DTYPE_BF16, 0, NULL);
    ASSERT_SCALAR(g, loom_exp(g, b), LOOM_DTYPE_BF16);
    loom_graph_destroy(g);
}

static void test_float_math_ops_reject_integer_inputs(void)
{
    loom_graph *g = loom_graph_create("relu_int");
    loom_value x = in(g, "x", LOOM_DTYPE_I32, 1, D(4));
    CU_ASSERT_EQUAL(loom_relu(g, x), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Relu)",
                  "input 0 (X) has dtype int32; expected one of: float, float16, bfloat16");
    loom_graph_destroy(g);
}

static void test_neg_and_abs_accept_signed_integers_but_not_uint8(void)
{
    loom_graph *g = loom_graph_create("neg");
    loom_value i8 = in(g, "i8", LOOM_DTYPE_I8, 1, D(4));
    ASSERT_SHAPE(g, loom_neg(g, i8), LOOM_DTYPE_I8, 4);
    ASSERT_SHAPE(g, loom_abs(g, in(g, "i64", LOOM_DTYPE_I64, 1, D(2))), LOOM_DTYPE_I64, 2);
    CU_ASSERT_EQUAL(loom_abs(g, in(g, "u8", LOOM_DTYPE_U8, 1, D(4))), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Abs)", "has dtype uint8");
    loom_graph_destroy(g);
}

static void test_leaky_relu_and_gelu_fill_in_default_attributes(void)
{
    loom_graph *g = loom_graph_create("defaults");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 1, D(8));
    ASSERT_SHAPE(g, op1(g, "LeakyRelu", NULL, &x, 1, NULL, 0), LOOM_DTYPE_F32, 8);
    ASSERT_FLOAT(g, "alpha", 0.01f);
    ASSERT_ATTRS(g, "alpha");
    loom_leaky_relu(g, x, 0.2f);
    ASSERT_FLOAT(g, "alpha", 0.2f);
    loom_gelu(g, x, NULL);
    ASSERT_ATTRS(g, "approximate");
    CU_ASSERT_STRING_EQUAL(last_attr(g, "approximate", LOOM_ATTR_STRING)->s, "none");
    loom_gelu(g, x, "tanh");
    CU_ASSERT_STRING_EQUAL(last_attr(g, "approximate", LOOM_ATTR_STRING)->s, "tanh");
    CU_ASSERT_EQUAL(loom_gelu(g, x, "fast"), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Gelu)", "'approximate' is 'fast'");
    loom_graph_destroy(g);
}

static void test_binary_ops_broadcast_numpy_style(void)
{
    loom_graph *g = loom_graph_create("bin");
    loom_value a = in(g, "a", LOOM_DTYPE_F32, 3, D(2, 1, 4));
    loom_value b = in(g, "b", LOOM_DTYPE_F32, 2, D(3, 1));
    loom_value (*ops[])(loom_graph *, loom_value, loom_value) = {
        loom_add, loom_sub, loom_mul, loom_div, loom_pow, loom_min, loom_max};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        ASSERT_SHAPE(g, ops[i](g, a, b), LOOM_DTYPE_F32, 2, 3, 4);
        ASSERT_NO_ATTRS(g);
    }
    loom_value s = in(g, "s", LOOM_DTYPE_F32, 0, NULL);
    ASSERT_SHAPE(g, loom_add(g, s, a), LOOM_DTYPE_F32, 2, 1, 4);
    loom_value u = in(g, "u", LOOM_DTYPE_U8, 1, D(5));
    ASSERT_SHAPE(g, loom_add(g, u, u), LOOM_DTYPE_U8, 5);
    loom_op_cost c = last_cost(g);
    CU_ASSERT_DOUBLE_EQUAL(c.flops, 5.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.bytes_read, 10.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.bytes_written, 5.0, 1e-9);
    loom_graph_destroy(g);
}

static void test_binary_ops_reject_incompatible_broadcast(void)
{
    loom_graph *g = loom_graph_create("bad_bcast");
    loom_value a = in(g, "a", LOOM_DTYPE_F32, 2, D(2, 3));
    loom_value b = in(g, "b", LOOM_DTYPE_F32, 1, D(4));
    loom_value in2[2] = {a, b};
    CU_ASSERT_EQUAL(op1(g, "Add", "sum", in2, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'sum'", "(Add)",
                  "shapes [2, 3] and [4] cannot be broadcast");
    loom_graph_destroy(g);
}

static void test_binary_ops_reject_dtype_mismatch(void)
{
    loom_graph *g = loom_graph_create("bad_dtype");
    loom_value a = in(g, "a", LOOM_DTYPE_F32, 1, D(3));
    loom_value b = in(g, "b", LOOM_DTYPE_F16, 1, D(3));
    loom_value in2[2] = {a, b};
    CU_ASSERT_EQUAL(op1(g, "Mul", "scale", in2, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'scale'", "(Mul)",
                  "dtype mismatch: input 1 (B) is float16 but input 0 is float");
    loom_graph_destroy(g);
}

static void test_min_max_are_variadic_and_broadcast_every_input(void)
{
    loom_graph *g = loom_graph_create("minmax");
    loom_value xs[3] = {in(g, "a", LOOM_DTYPE_I32, 1, D(4)), in(g, "b", LOOM_DTYPE_I32, 2, D(3, 1)),
                        in(g, "c", LOOM_DTYPE_I32, 3, D(2, 1, 1))};
    ASSERT_SHAPE(g, op1(g, "Max", NULL, xs, 3, NULL, 0), LOOM_DTYPE_I32, 2, 3, 4);
    CU_ASSERT_DOUBLE_EQUAL(last_cost(g).flops, 2.0 * 24, 1e-9); /* two comparisons each */
    ASSERT_SHAPE(g, op1(g, "Min", NULL, xs, 1, NULL, 0), LOOM_DTYPE_I32, 4);
    CU_ASSERT_EQUAL(op1(g, "Min", "none", xs, 0, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'none'", "(Min)", "at least 1 inputs");
    loom_graph_destroy(g);
}

static void test_clip_bounds_from_constants_become_min_max_attributes(void)
{
    loom_graph *g = loom_graph_create("clip");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(2, 3));
    ASSERT_SHAPE(g, loom_clip(g, x, 0.0f, 6.0f), LOOM_DTYPE_F32, 2, 3);
    CU_ASSERT_EQUAL(g->nodes[g->n_nodes - 1].n_inputs, 3);
    ASSERT_FLOAT(g, "min", 0.0f);
    ASSERT_FLOAT(g, "max", 6.0f);
    ASSERT_ATTRS(g, "min", "max");

    /* An infinite side is no input at all, and the canonical bound is infinite. */
    loom_clip(g, x, -INFINITY, 1.5f);
    CU_ASSERT_EQUAL(g->nodes[g->n_nodes - 1].n_inputs, 3);
    CU_ASSERT_EQUAL(g->nodes[g->n_nodes - 1].inputs[1], LOOM_NO_VALUE);
    ASSERT_FLOAT(g, "min", -INFINITY);
    ASSERT_FLOAT(g, "max", 1.5f);
    loom_clip(g, x, -INFINITY, INFINITY);
    CU_ASSERT_EQUAL(g->nodes[g->n_nodes - 1].n_inputs, 1);
    ASSERT_FLOAT(g, "max", INFINITY);

    /* A bound that is not a constant is the kernel's to read: its attribute stays open. */
    loom_value lo = in(g, "lo", LOOM_DTYPE_F32, 0, NULL);
    loom_value ins[2] = {x, lo};
    ASSERT_SHAPE(g, op1(g, "Clip", NULL, ins, 2, NULL, 0), LOOM_DTYPE_F32, 2, 3);
    ASSERT_FLOAT(g, "min", -INFINITY);
    ASSERT_FLOAT(g, "max", INFINITY);

    loom_value v = in(g, "v", LOOM_DTYPE_F32, 1, D(2));
    loom_value bad[2] = {x, v};
    CU_ASSERT_EQUAL(op1(g, "Clip", "c", bad, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'c'", "(Clip)",
                  "input 1 (min) must be a scalar");
    loom_graph_destroy(g);
}

static void test_clip_builder_makes_bounds_in_the_input_dtype(void)
{
    loom_graph *g = loom_graph_create("clip_types");
    loom_value i = in(g, "i", LOOM_DTYPE_I32, 1, D(4));
    /* For integers, x >= 0.5 is x >= 1 and x <= 6.5 is x <= 6. */
    ASSERT_SHAPE(g, loom_clip(g, i, 0.5f, 6.5f), LOOM_DTYPE_I32, 4);
    ASSERT_FLOAT(g, "min", 1.0f);
    ASSERT_FLOAT(g, "max", 6.0f);
    loom_value h = in(g, "h", LOOM_DTYPE_F16, 1, D(4));
    ASSERT_SHAPE(g, loom_clip(g, h, -1.5f, 6.0f), LOOM_DTYPE_F16, 4);
    ASSERT_FLOAT(g, "min", -1.5f);
    ASSERT_FLOAT(g, "max", 6.0f);
    loom_value b = in(g, "b", LOOM_DTYPE_BF16, 1, D(4));
    ASSERT_SHAPE(g, loom_clip(g, b, 0.0f, 0.25f), LOOM_DTYPE_BF16, 4);
    ASSERT_FLOAT(g, "max", 0.25f);
    loom_value u = in(g, "u", LOOM_DTYPE_U8, 1, D(4));
    ASSERT_SHAPE(g, loom_clip(g, u, -3.0f, 300.0f), LOOM_DTYPE_U8, 4);
    ASSERT_FLOAT(g, "min", 0.0f);
    ASSERT_FLOAT(g, "max", 255.0f);
    loom_graph_destroy(g);
}

static void test_where_needs_bool_condition_and_broadcasts_three_ways(void)
{
    loom_graph *g = loom_graph_create("where");
    loom_value c = in(g, "c", LOOM_DTYPE_BOOL, 2, D(2, 1));
    loom_value a = in(g, "a", LOOM_DTYPE_I64, 1, D(3));
    loom_value b = in(g, "b", LOOM_DTYPE_I64, 3, D(4, 1, 1));
    ASSERT_SHAPE(g, loom_where(g, c, a, b), LOOM_DTYPE_I64, 4, 2, 3);
    ASSERT_NO_ATTRS(g);
    loom_value f = in(g, "f", LOOM_DTYPE_F32, 2, D(2, 1));
    CU_ASSERT_EQUAL(loom_where(g, f, a, b), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Where)",
                  "input 0 (condition) has dtype float; expected one of: bool");
    loom_graph_destroy(g);
}

static void test_cast_sets_output_dtype_from_to(void)
{
    loom_graph *g = loom_graph_create("cast");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(2, 3));
    ASSERT_SHAPE(g, loom_cast(g, x, LOOM_DTYPE_BOOL), LOOM_DTYPE_BOOL, 2, 3);
    ASSERT_INT(g, "to", LOOM_DTYPE_BOOL);
    ASSERT_ATTRS(g, "to");
    loom_value i = in(g, "i", LOOM_DTYPE_I8, 0, NULL);
    ASSERT_SCALAR(g, loom_cast(g, i, LOOM_DTYPE_BF16), LOOM_DTYPE_BF16);
    CU_ASSERT_EQUAL(op1(g, "Cast", "c", &x, 1, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'c'", "(Cast)",
                  "attribute 'to' is required");
    loom_graph_destroy(g);
}

static void test_cast_to_unknown_dtype_is_unsupported(void)
{
    loom_graph *g = loom_graph_create("cast_bad");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 1, D(2));
    CU_ASSERT_EQUAL(loom_cast(g, x, (loom_dtype)14 /* complex64 */), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_UNSUPPORTED, NULL, "(Cast)", "'to' is 14");
    loom_graph_destroy(g);
}

static void test_identity_accepts_every_dtype(void)
{
    const loom_dtype all[] = {LOOM_DTYPE_F32, LOOM_DTYPE_F16, LOOM_DTYPE_BF16, LOOM_DTYPE_I8,
                              LOOM_DTYPE_U8,  LOOM_DTYPE_I32, LOOM_DTYPE_I64,  LOOM_DTYPE_BOOL};
    loom_graph *g = loom_graph_create("id");
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        char name[8];
        snprintf(name, sizeof name, "x%zu", k);
        ASSERT_SHAPE(g, loom_identity(g, in(g, name, all[k], 2, D(0, 3))), all[k], 0, 3);
    }
    loom_graph_destroy(g);
}

static void test_expand_broadcasts_to_the_constant_shape(void)
{
    loom_graph *g = loom_graph_create("expand");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(3, 1));
    ASSERT_SHAPE(g, loom_expand(g, x, 3, D(2, 1, 4)), LOOM_DTYPE_F32, 2, 3, 4);
    ASSERT_NO_ATTRS(g);
    /* Bidirectional: a smaller target keeps the input's dims, a longer one adds dims. */
    ASSERT_SHAPE(g, loom_expand(g, x, 1, D(1)), LOOM_DTYPE_F32, 3, 1);
    ASSERT_SHAPE(g, loom_expand(g, x, 1, D(4)), LOOM_DTYPE_F32, 3, 4);
    CU_ASSERT_EQUAL(loom_expand(g, x, 2, D(2, 1)), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Expand)",
                  "cannot expand shape [3, 1] to [2, 1]");
    loom_graph_destroy(g);
}

/* ---- MatMul and Gemm ------------------------------------------------------------------------ */

static void test_matmul_broadcasts_batch_dimensions(void)
{
    loom_graph *g = loom_graph_create("mm");
    loom_value a = in(g, "a", LOOM_DTYPE_F32, 4, D(2, 1, 3, 4));
    loom_value b = in(g, "b", LOOM_DTYPE_F32, 3, D(5, 4, 6));
    ASSERT_SHAPE(g, loom_matmul(g, a, b), LOOM_DTYPE_F32, 2, 5, 3, 6);
    ASSERT_NO_ATTRS(g);
    loom_value i = in(g, "i", LOOM_DTYPE_I64, 2, D(3, 4));
    loom_value j = in(g, "j", LOOM_DTYPE_I64, 2, D(4, 2));
    ASSERT_SHAPE(g, loom_matmul(g, i, j), LOOM_DTYPE_I64, 3, 2);
    loom_value c = in(g, "c", LOOM_DTYPE_F32, 3, D(3, 4, 5));
    loom_value d = in(g, "d", LOOM_DTYPE_F32, 3, D(2, 5, 6));
    CU_ASSERT_EQUAL(loom_matmul(g, c, d), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(MatMul)",
                  "batch dimensions [3] and [2] cannot be broadcast");
    loom_graph_destroy(g);
}

static void test_matmul_promotes_1d_operands_and_drops_the_promoted_dim(void)
{
    loom_graph *g = loom_graph_create("mm1d");
    loom_value v = in(g, "v", LOOM_DTYPE_F32, 1, D(4));
    loom_value m = in(g, "m", LOOM_DTYPE_F32, 2, D(4, 5));
    loom_value n = in(g, "n", LOOM_DTYPE_F32, 2, D(3, 4));
    loom_value t = in(g, "t", LOOM_DTYPE_F32, 3, D(7, 4, 5));
    ASSERT_SHAPE(g, loom_matmul(g, v, m), LOOM_DTYPE_F32, 5);
    ASSERT_SHAPE(g, loom_matmul(g, n, v), LOOM_DTYPE_F32, 3);
    ASSERT_SCALAR(g, loom_matmul(g, v, v), LOOM_DTYPE_F32);
    ASSERT_SHAPE(g, loom_matmul(g, v, t), LOOM_DTYPE_F32, 7, 5);
    loom_graph_destroy(g);
}

static void test_matmul_inner_dimension_mismatch_names_node_and_dims(void)
{
    loom_graph *g = loom_graph_create("fc");
    loom_value ins[2] = {in(g, "x", LOOM_DTYPE_F32, 2, D(1, 512)),
                         in(g, "w", LOOM_DTYPE_F32, 2, D(256, 10))};
    CU_ASSERT_EQUAL(op1(g, "MatMul", "fc1", ins, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, NULL,
                  "node 'fc1' (MatMul): inner dimensions 512 and 256 differ");
    loom_graph_destroy(g);
}

static void test_matmul_rejects_scalars_and_bool(void)
{
    loom_graph *g = loom_graph_create("mm_bad");
    loom_value s = in(g, "s", LOOM_DTYPE_F32, 0, NULL);
    loom_value v = in(g, "v", LOOM_DTYPE_F32, 1, D(3));
    CU_ASSERT_EQUAL(loom_matmul(g, s, v), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(MatMul)", "input 0 (A) is a scalar");
    loom_graph_destroy(g);

    g = loom_graph_create("mm_bool");
    loom_value b = in(g, "b", LOOM_DTYPE_BOOL, 2, D(2, 2));
    CU_ASSERT_EQUAL(loom_matmul(g, b, b), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(MatMul)", "has dtype bool");
    loom_graph_destroy(g);
}

static void test_matmul_cost_counts_a_multiply_add_as_two_flops(void)
{
    loom_graph *g = loom_graph_create("mm_cost");
    loom_value a = in(g, "a", LOOM_DTYPE_F32, 2, D(8, 16));
    loom_value b = in(g, "b", LOOM_DTYPE_F32, 2, D(16, 32));
    loom_matmul(g, a, b);
    loom_op_cost c = last_cost(g);
    CU_ASSERT_DOUBLE_EQUAL(c.flops, 2.0 * 8 * 32 * 16, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.bytes_read, (8 * 16 + 16 * 32) * 4.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(c.bytes_written, 8 * 32 * 4.0, 1e-9);
    loom_graph_destroy(g);
}

static void test_gemm_applies_transposes_and_canonicalises_defaults(void)
{
    loom_graph *g = loom_graph_create("gemm");
    loom_value a = in(g, "a", LOOM_DTYPE_F32, 2, D(4, 3));
    loom_value b = in(g, "b", LOOM_DTYPE_F32, 2, D(5, 4));
    loom_value c = in(g, "c", LOOM_DTYPE_F32, 1, D(5));
    loom_value ins[3] = {a, b, c};
    loom_attr t[2] = {loom_attr_int("transA", 1), loom_attr_int("transB", 7)};
    ASSERT_SHAPE(g, op1(g, "Gemm", NULL, ins, 3, t, 2), LOOM_DTYPE_F32, 3, 5);
    ASSERT_ATTRS(g, "alpha", "beta", "transA", "transB");
    ASSERT_FLOAT(g, "alpha", 1.0f);
    ASSERT_FLOAT(g, "beta", 1.0f);
    ASSERT_INT(g, "transA", 1);
    ASSERT_INT(g, "transB", 1);
    CU_ASSERT_DOUBLE_EQUAL(last_cost(g).flops, 2.0 * 3 * 5 * 4 + 2.0 * 15, 1e-9);

    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(3, 4));
    ASSERT_SHAPE(g, loom_gemm(g, x, a, LOOM_NO_VALUE, 0.5f, 0.0f, 0, 0), LOOM_DTYPE_F32, 3, 3);
    ASSERT_FLOAT(g, "alpha", 0.5f);
    ASSERT_INT(g, "transA", 0);

    loom_value bad_c = in(g, "bad_c", LOOM_DTYPE_F32, 2, D(3, 4));
    CU_ASSERT_EQUAL(loom_gemm(g, x, a, bad_c, 1, 1, 0, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Gemm)",
                  "input 2 (C) of shape [3, 4] does not broadcast to [3, 3]");
    loom_graph_destroy(g);
}

static void test_gemm_rejects_inner_mismatch_and_non_2d(void)
{
    loom_graph *g = loom_graph_create("gemm_bad");
    loom_value a = in(g, "a", LOOM_DTYPE_F32, 2, D(4, 3));
    CU_ASSERT_EQUAL(loom_gemm(g, a, a, LOOM_NO_VALUE, 1, 1, 0, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Gemm)", "inner dimensions 3 and 4 differ");
    loom_graph_destroy(g);
    g = loom_graph_create("gemm_3d");
    loom_value t = in(g, "t", LOOM_DTYPE_F32, 3, D(2, 4, 3));
    CU_ASSERT_EQUAL(loom_gemm(g, t, t, LOOM_NO_VALUE, 1, 1, 0, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Gemm)", "must be 2-D, not of rank 3");
    loom_graph_destroy(g);
}

/* ---- Conv and the pools --------------------------------------------------------------------- */

static void test_conv_2d_shape_with_pads_strides_and_dilations(void)
{
    loom_graph *g = loom_graph_create("conv");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 4, D(1, 3, 32, 32));
    loom_value w = in(g, "w", LOOM_DTYPE_F32, 4, D(8, 3, 3, 3));
    loom_value b = in(g, "b", LOOM_DTYPE_F32, 1, D(8));
    loom_window_params p = {.n_spatial = 2, .strides = {2, 2}, .pads = {1, 1, 1, 1}};
    ASSERT_SHAPE(g, loom_conv(g, x, w, b, &p), LOOM_DTYPE_F32, 1, 8, 16, 16);
    ASSERT_ATTRS(g, "kernel_shape", "strides", "dilations", "pads", "group");
    ASSERT_INTS(g, "kernel_shape", 3, 3);
    ASSERT_INTS(g, "strides", 2, 2);
    ASSERT_INTS(g, "dilations", 1, 1);
    ASSERT_INTS(g, "pads", 1, 1, 1, 1);
    ASSERT_INT(g, "group", 1);
    /* 2 * C * kh * kw per output, plus the bias add. */
    CU_ASSERT_DOUBLE_EQUAL(last_cost(g).flops, 8.0 * 16 * 16 * (2.0 * 27 + 1), 1e-6);

    loom_window_params dil = {.n_spatial = 2, .dilations = {2, 2}, .pads = {2, 2, 2, 2}};
    ASSERT_SHAPE(g, loom_conv(g, x, w, LOOM_NO_VALUE, &dil), LOOM_DTYPE_F32, 1, 8, 32, 32);
    ASSERT_INTS(g, "dilations", 2, 2);
    /* No params: ONNX's defaults, the kernel from W. */
    ASSERT_SHAPE(g, loom_conv(g, x, w, LOOM_NO_VALUE, NULL), LOOM_DTYPE_F32, 1, 8, 30, 30);
    ASSERT_INTS(g, "pads", 0, 0, 0, 0);
    ASSERT_INTS(g, "strides", 1, 1);
    loom_graph_destroy(g);
}

static void test_conv_1d_and_3d_with_groups(void)
{
    loom_graph *g = loom_graph_create("conv13");
    loom_value x1 = in(g, "x1", LOOM_DTYPE_F16, 3, D(2, 4, 10));
    loom_value w1 = in(g, "w1", LOOM_DTYPE_F16, 3, D(6, 2, 3));
    loom_window_params grouped = {.group = 2};
    ASSERT_SHAPE(g, loom_conv(g, x1, w1, LOOM_NO_VALUE, &grouped), LOOM_DTYPE_F16, 2, 6, 8);
    ASSERT_INT(g, "group", 2);
    ASSERT_INTS(g, "pads", 0, 0);
    loom_value x3 = in(g, "x3", LOOM_DTYPE_F32, 5, D(1, 2, 5, 6, 7));
    loom_value w3 = in(g, "w3", LOOM_DTYPE_F32, 5, D(4, 2, 3, 3, 3));
    ASSERT_SHAPE(g, loom_conv(g, x3, w3, LOOM_NO_VALUE, NULL), LOOM_DTYPE_F32, 1, 4, 3, 4, 5);
    ASSERT_INTS(g, "kernel_shape", 3, 3, 3);
    loom_value bad_w = in(g, "bad_w", LOOM_DTYPE_F16, 3, D(6, 3, 3));
    CU_ASSERT_EQUAL(loom_conv(g, x1, bad_w, LOOM_NO_VALUE, &grouped), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Conv)",
                  "X has 4 channels but W expects 3 x group 2");
    loom_graph_destroy(g);
}

static void test_conv_auto_pad_same_is_resolved_into_pads(void)
{
    loom_graph *g = loom_graph_create("same");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 3, D(1, 1, 6));
    loom_value w = in(g, "w", LOOM_DTYPE_F32, 3, D(1, 1, 3));
    /* ceil(6 / 2) = 3 outputs need (3 - 1) * 2 + 3 - 6 = 1 pixel of padding. */
    loom_window_params up = {.n_spatial = 1, .strides = {2}, .auto_pad = "SAME_UPPER"};
    ASSERT_SHAPE(g, loom_conv(g, x, w, LOOM_NO_VALUE, &up), LOOM_DTYPE_F32, 1, 1, 3);
    ASSERT_INTS(g, "pads", 0, 1);
    ASSERT_ATTRS(g, "kernel_shape", "strides", "dilations", "pads", "group");
    loom_window_params low = up;
    low.auto_pad = "SAME_LOWER";
    ASSERT_SHAPE(g, loom_conv(g, x, w, LOOM_NO_VALUE, &low), LOOM_DTYPE_F32, 1, 1, 3);
    ASSERT_INTS(g, "pads", 1, 0);
    loom_window_params valid = {.auto_pad = "VALID"};
    ASSERT_SHAPE(g, loom_conv(g, x, w, LOOM_NO_VALUE, &valid), LOOM_DTYPE_F32, 1, 1, 4);
    ASSERT_INTS(g, "pads", 0, 0);
    loom_window_params both = {.n_spatial = 1, .pads = {1, 1}, .auto_pad = "SAME_UPPER"};
    CU_ASSERT_EQUAL(loom_conv(g, x, w, LOOM_NO_VALUE, &both), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Conv)",
                  "'pads' cannot be used with auto_pad SAME_UPPER");
    loom_graph_destroy(g);
}

static void test_conv_kernel_larger_than_padded_input_is_rejected(void)
{
    loom_graph *g = loom_graph_create("big_kernel");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 4, D(1, 1, 2, 2));
    loom_value w = in(g, "w", LOOM_DTYPE_F32, 4, D(1, 1, 3, 3));
    CU_ASSERT_EQUAL(loom_conv(g, x, w, LOOM_NO_VALUE, NULL), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Conv)",
                  "kernel extent 3 is larger than the padded input 2");
    loom_graph_destroy(g);
}

static void test_max_pool_ceil_mode_keeps_last_window_inside_input(void)
{
    loom_graph *g = loom_graph_create("pool");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 4, D(1, 3, 6, 6));
    loom_window_params p = {
        .n_spatial = 2, .kernel_shape = {3, 3}, .strides = {2, 2}, .pads = {1, 1, 1, 1}};
    ASSERT_SHAPE(g, loom_max_pool(g, x, &p), LOOM_DTYPE_F32, 1, 3, 3, 3);
    ASSERT_ATTRS(g, "kernel_shape", "strides", "dilations", "pads", "ceil_mode");
    ASSERT_INT(g, "ceil_mode", 0);
    CU_ASSERT_DOUBLE_EQUAL(last_cost(g).flops, 27.0 * 9, 1e-9);
    p.ceil_mode = 1;
    ASSERT_SHAPE(g, loom_max_pool(g, x, &p), LOOM_DTYPE_F32, 1, 3, 4, 4);
    ASSERT_INT(g, "ceil_mode", 1);
    /* 5 wide, kernel 1, stride 3: ceil would give a third window starting at 6, past the
     * input; PyTorch and ONNX drop it. */
    loom_value y = in(g, "y", LOOM_DTYPE_F32, 3, D(1, 1, 5));
    loom_window_params q = {.n_spatial = 1, .kernel_shape = {1}, .strides = {3}, .ceil_mode = 1};
    ASSERT_SHAPE(g, loom_max_pool(g, y, &q), LOOM_DTYPE_F32, 1, 1, 2);
    loom_graph_destroy(g);
}

static void test_average_pool_carries_every_canonical_attribute(void)
{
    loom_graph *g = loom_graph_create("avg");
    loom_value x = in(g, "x", LOOM_DTYPE_BF16, 4, D(1, 2, 7, 7));
    loom_window_params p = {.n_spatial = 2, .kernel_shape = {3, 3}};
    ASSERT_SHAPE(g, loom_average_pool(g, x, &p), LOOM_DTYPE_BF16, 1, 2, 5, 5);
    ASSERT_ATTRS(g, "kernel_shape", "strides", "dilations", "pads", "ceil_mode",
                 "count_include_pad");
    ASSERT_INTS(g, "strides", 1, 1);
    ASSERT_INTS(g, "dilations", 1, 1);
    ASSERT_INTS(g, "pads", 0, 0, 0, 0);
    ASSERT_INT(g, "count_include_pad", 0);
    p.dilations[0] = p.dilations[1] = 2;
    p.count_include_pad = 1;
    ASSERT_SHAPE(g, loom_average_pool(g, x, &p), LOOM_DTYPE_BF16, 1, 2, 3, 3);
    ASSERT_INT(g, "count_include_pad", 1);
    /* SAME decides the size itself: the canonical ceil_mode is then 0. */
    loom_window_params s = {.n_spatial = 2, .kernel_shape = {3, 3}, .strides = {2, 2},
                            .auto_pad = "SAME_LOWER", .ceil_mode = 1};
    ASSERT_SHAPE(g, loom_average_pool(g, x, &s), LOOM_DTYPE_BF16, 1, 2, 4, 4);
    ASSERT_INTS(g, "pads", 1, 1, 1, 1);
    ASSERT_INT(g, "ceil_mode", 0);
    loom_graph_destroy(g);
}

static void test_pools_require_kernel_shape(void)
{
    loom_graph *g = loom_graph_create("nokernel");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 4, D(1, 2, 7, 7));
    CU_ASSERT_EQUAL(loom_max_pool(g, x, NULL), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(MaxPool)",
                  "attribute 'kernel_shape' is required");
    loom_graph_destroy(g);
}

static void test_global_average_pool_keeps_batch_and_channels(void)
{
    loom_graph *g = loom_graph_create("gap");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 4, D(2, 16, 7, 9));
    ASSERT_SHAPE(g, loom_global_average_pool(g, x), LOOM_DTYPE_F32, 2, 16, 1, 1);
    ASSERT_NO_ATTRS(g);
    loom_value v = in(g, "v", LOOM_DTYPE_F32, 2, D(2, 16));
    CU_ASSERT_EQUAL(loom_global_average_pool(g, v), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(GlobalAveragePool)", "rank 2");
    loom_graph_destroy(g);
}

static void test_window_params_with_too_many_spatial_dims_fail_the_builder(void)
{
    loom_graph *g = loom_graph_create("spatial4");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 4, D(1, 2, 7, 7));
    loom_window_params p = {.n_spatial = 4};
    CU_ASSERT_EQUAL(loom_max_pool(g, x, &p), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "loom_max_pool", "n_spatial is 4");
    loom_graph_destroy(g);
}

/* ---- Softmax and the normalisations --------------------------------------------------------- */

static void test_softmax_axis_defaults_to_last_and_is_made_non_negative(void)
{
    loom_graph *g = loom_graph_create("softmax");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(2, 3));
    ASSERT_SHAPE(g, op1(g, "Softmax", NULL, &x, 1, NULL, 0), LOOM_DTYPE_F32, 2, 3);
    ASSERT_INT(g, "axis", 1);
    ASSERT_ATTRS(g, "axis");
    loom_softmax(g, x, -2);
    ASSERT_INT(g, "axis", 0);
    CU_ASSERT_EQUAL(loom_softmax(g, x, 2), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Softmax)",
                  "axis 2 is out of range for rank 2");
    loom_graph_destroy(g);
}

static void test_layer_norm_mean_and_inv_std_dev_have_onnx_shapes(void)
{
    loom_graph *g = loom_graph_create("ln");
    loom_value x = in(g, "x", LOOM_DTYPE_F16, 3, D(2, 5, 8));
    loom_value s = in(g, "s", LOOM_DTYPE_F16, 2, D(5, 8));
    loom_value b = in(g, "b", LOOM_DTYPE_F16, 2, D(5, 8));
    loom_value ins[3] = {x, s, b}, outs[3];
    loom_attr attrs[2] = {loom_attr_int("axis", -2), loom_attr_int("stash_type", 1)};
    CU_ASSERT_EQUAL_FATAL(
        loom_graph_op(g, "LayerNormalization", "ln", ins, 3, attrs, 2, outs, 3), LOOM_OK);
    ASSERT_SHAPE(g, outs[0], LOOM_DTYPE_F16, 2, 5, 8);
    ASSERT_SHAPE(g, outs[1], LOOM_DTYPE_F32, 2, 1, 1);
    ASSERT_SHAPE(g, outs[2], LOOM_DTYPE_F32, 2, 1, 1);
    ASSERT_ATTRS(g, "axis", "epsilon");
    ASSERT_INT(g, "axis", 1);
    ASSERT_FLOAT(g, "epsilon", 1e-5f);
    ASSERT_SHAPE(g, loom_layer_norm(g, x, b, LOOM_NO_VALUE, 1, 1e-6f), LOOM_DTYPE_F16, 2, 5, 8);
    ASSERT_FLOAT(g, "epsilon", 1e-6f);
    CU_ASSERT_EQUAL(loom_layer_norm(g, x, s, LOOM_NO_VALUE, -1, 1e-5f), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(LayerNormalization)",
                  "input 1 (Scale) has shape [5, 8]; expected X's dims from axis 2, [8]");
    loom_graph_destroy(g);
}

/* A negative, NaN or infinite epsilon is bad input, refused at inference with the node named
 * (issue 17): the square root of a negative variance would turn the output into NaN. */
static void test_normalization_refuses_a_negative_or_nan_epsilon(void)
{
    static const char *const ops[] = {"LayerNormalization", "InstanceNormalization",
                                      "BatchNormalization"};
    static const size_t n_in[] = {2, 3, 5};
    const float bad[] = {-1e-5f, NAN, INFINITY};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        for (size_t o = 0; o < 3; o++) {
            /* a fresh graph each time: a failed builder call leaves its error on the graph */
            loom_graph *g = loom_graph_create("eps");
            loom_value x = in(g, "x", LOOM_DTYPE_F32, 3, D(2, 3, 4));
            loom_value s = in(g, "s", LOOM_DTYPE_F32, 1, D(4));
            loom_value c = in(g, "c", LOOM_DTYPE_F32, 1, D(3));
            loom_value ins[5] = {x, o == 0 ? s : c, c, c, c};
            loom_attr e = loom_attr_float("epsilon", bad[k]);
            char want_op[64];
            snprintf(want_op, sizeof want_op, "(%s)", ops[o]);
            CU_ASSERT_EQUAL(op1(g, ops[o], "norm_eps", ins, n_in[o], &e, 1), LOOM_NO_VALUE);
            ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'norm_eps'", want_op,
                          "attribute 'epsilon' is");
            loom_graph_destroy(g);
        }
    }
    loom_graph *g = loom_graph_create("eps_builder");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 3, D(2, 3, 4));
    loom_value s = in(g, "s", LOOM_DTYPE_F32, 1, D(4));
    /* zero is a valid epsilon */
    ASSERT_SHAPE(g, loom_layer_norm(g, x, s, LOOM_NO_VALUE, -1, 0.0f), LOOM_DTYPE_F32, 2, 3, 4);
    CU_ASSERT_EQUAL(loom_layer_norm(g, x, s, LOOM_NO_VALUE, -1, -1.0f), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(LayerNormalization)",
                  "attribute 'epsilon' is -1; expected a finite number >= 0");
    loom_graph_destroy(g);
}

static void test_batch_norm_is_inference_only(void)
{
    loom_graph *g = loom_graph_create("bn");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 4, D(2, 3, 4, 4));
    loom_value p[4];
    for (int k = 0; k < 4; k++) {
        char name[4] = {'p', (char)('0' + k), 0};
        p[k] = in(g, name, LOOM_DTYPE_F32, 1, D(3));
    }
    ASSERT_SHAPE(g, loom_batch_norm(g, x, p[0], p[1], p[2], p[3], 1e-3f), LOOM_DTYPE_F32, 2, 3,
                 4, 4);
    ASSERT_ATTRS(g, "epsilon");
    ASSERT_FLOAT(g, "epsilon", 1e-3f);
    loom_value ins[5] = {x, p[0], p[1], p[2], p[3]};
    loom_attr m[2] = {loom_attr_float("momentum", 0.9f), loom_attr_int("training_mode", 0)};
    ASSERT_SHAPE(g, op1(g, "BatchNormalization", NULL, ins, 5, m, 2), LOOM_DTYPE_F32, 2, 3, 4, 4);
    ASSERT_ATTRS(g, "epsilon");
    ASSERT_FLOAT(g, "epsilon", 1e-5f);

    loom_value outs[3];
    CU_ASSERT_NOT_EQUAL(loom_graph_op(g, "BatchNormalization", "bn3", ins, 5, NULL, 0, outs, 3),
                        LOOM_OK);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'bn3'", "(BatchNormalization)", "output");
    loom_graph_destroy(g);

    g = loom_graph_create("bn_train");
    x = in(g, "x", LOOM_DTYPE_F32, 2, D(2, 3));
    for (int k = 0; k < 4; k++) {
        char name[4] = {'p', (char)('0' + k), 0};
        ins[k + 1] = in(g, name, LOOM_DTYPE_F32, 1, D(3));
    }
    ins[0] = x;
    loom_attr train = loom_attr_int("training_mode", 1);
    CU_ASSERT_EQUAL(op1(g, "BatchNormalization", "bn", ins, 5, &train, 1), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_UNSUPPORTED, "node 'bn'", "(BatchNormalization)",
                  "training_mode=1 is not supported");
    loom_graph_destroy(g);
}

/* ---- reductions ----------------------------------------------------------------------------- */

static void test_reduce_axes_from_input_are_sorted_and_keepdims_canonical(void)
{
    loom_graph *g = loom_graph_create("reduce");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 3, D(2, 3, 4));
    ASSERT_SHAPE(g, loom_reduce_mean(g, x, 2, D(-1, 0), 1), LOOM_DTYPE_F32, 1, 3, 1);
    ASSERT_ATTRS(g, "axes", "keepdims");
    ASSERT_INTS(g, "axes", 0, 2);
    ASSERT_INT(g, "keepdims", 1);
    CU_ASSERT_DOUBLE_EQUAL(last_cost(g).flops, 24.0 + 3.0, 1e-9);
    ASSERT_SHAPE(g, loom_reduce_sum(g, x, 2, D(-1, 0), 0), LOOM_DTYPE_F32, 3);
    ASSERT_INT(g, "keepdims", 0);
    loom_value i = in(g, "i", LOOM_DTYPE_U8, 2, D(2, 3));
    ASSERT_SHAPE(g, loom_reduce_max(g, i, 1, D(1), 1), LOOM_DTYPE_U8, 2, 1);
    loom_graph_destroy(g);
}

static void test_reduce_without_axes_reduces_everything(void)
{
    loom_graph *g = loom_graph_create("reduce_all");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 3, D(2, 3, 4));
    ASSERT_SCALAR(g, loom_reduce_sum(g, x, 0, NULL, 0), LOOM_DTYPE_F32);
    ASSERT_INTS(g, "axes", 0, 1, 2);
    ASSERT_SHAPE(g, loom_reduce_max(g, x, 0, NULL, 1), LOOM_DTYPE_F32, 1, 1, 1);
    ASSERT_INTS(g, "axes", 0, 1, 2);
    loom_graph_destroy(g);
}

static void test_reduce_axes_attribute_and_noop_with_empty_axes(void)
{
    loom_graph *g = loom_graph_create("reduce_attr");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 3, D(2, 3, 4));
    loom_attr a = loom_attr_ints("axes", 1, D(-2));
    ASSERT_SHAPE(g, op1(g, "ReduceMean", NULL, &x, 1, &a, 1), LOOM_DTYPE_F32, 2, 1, 4);
    ASSERT_INTS(g, "axes", 1);
    ASSERT_INT(g, "keepdims", 1);
    loom_attr noop = loom_attr_int("noop_with_empty_axes", 1);
    ASSERT_SHAPE(g, op1(g, "ReduceSum", NULL, &x, 1, &noop, 1), LOOM_DTYPE_F32, 2, 3, 4);
    ASSERT_ATTRS(g, "axes", "keepdims");
    ASSERT_EMPTY_INTS(g, "axes");
    loom_graph_destroy(g);
}

static void test_reduce_noop_canonical_form_infers_to_itself(void)
{
    /* noop_with_empty_axes=1 with no axes is an identity; its canonical form (an empty 'axes'
     * attribute) must stay an identity when a node is rebuilt from it. */
    loom_graph *g = loom_graph_create("reduce_noop");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(3, 4));
    loom_attr noop = loom_attr_int("noop_with_empty_axes", 1);
    loom_value y = op1(g, "ReduceMax", "r1", &x, 1, &noop, 1);
    loom_attr empty = loom_attr_ints("axes", 0, NULL);
    loom_value z = op1(g, "ReduceMax", "r2", &x, 1, &empty, 1);
    uint32_t rank = 0;
    int64_t dims[LOOM_MAX_RANK];
    CU_ASSERT_EQUAL(loom_value_info(g, y, NULL, &rank, dims), LOOM_OK);
    CU_ASSERT_EQUAL(rank, 2);
    CU_ASSERT_EQUAL(loom_value_info(g, z, NULL, &rank, dims), LOOM_OK);
    CU_ASSERT_EQUAL(rank, 2);
    CU_ASSERT(rank == 2 && dims[0] == 3 && dims[1] == 4);
    loom_graph_destroy(g);
}

static void test_reduce_rejects_repeated_and_non_constant_axes(void)
{
    loom_graph *g = loom_graph_create("reduce_dup");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 3, D(2, 3, 4));
    CU_ASSERT_EQUAL(loom_reduce_mean(g, x, 2, D(1, -2), 1), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(ReduceMean)", "axis 1 appears twice");
    loom_graph_destroy(g);

    g = loom_graph_create("reduce_dyn");
    x = in(g, "x", LOOM_DTYPE_F32, 3, D(2, 3, 4));
    loom_value ins[2] = {x, in(g, "axes", LOOM_DTYPE_I64, 1, D(1))};
    CU_ASSERT_EQUAL(op1(g, "ReduceMax", "rm", ins, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_UNSUPPORTED, "node 'rm'", "(ReduceMax)",
                  "input 1 (axes) must be a constant");
    loom_graph_destroy(g);
}

/* ---- layout --------------------------------------------------------------------------------- */

static void test_reshape_copies_zeros_and_infers_minus_one(void)
{
    loom_graph *g = loom_graph_create("reshape");
    loom_value x = in(g, "x", LOOM_DTYPE_BF16, 3, D(2, 3, 4));
    ASSERT_SHAPE(g, loom_reshape(g, x, 2, D(0, -1)), LOOM_DTYPE_BF16, 2, 12);
    ASSERT_ATTRS(g, "shape");
    ASSERT_INTS(g, "shape", 2, 12);
    ASSERT_SHAPE(g, loom_reshape(g, x, 3, D(-1, 0, 2)), LOOM_DTYPE_BF16, 4, 3, 2);
    ASSERT_INTS(g, "shape", 4, 3, 2);
    loom_graph_destroy(g);

    g = loom_graph_create("reshape_scalar");
    loom_value one = in(g, "one", LOOM_DTYPE_F32, 2, D(1, 1));
    ASSERT_SCALAR(g, loom_reshape(g, one, 0, NULL), LOOM_DTYPE_F32);
    ASSERT_EMPTY_INTS(g, "shape");
    loom_graph_destroy(g);
}

static void test_reshape_allowzero_keeps_zero_dims(void)
{
    loom_graph *g = loom_graph_create("allowzero");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(0, 3));
    loom_value ins[2] = {x, loom_constant_i64s(g, 2, D(3, 0))};
    loom_attr az = loom_attr_int("allowzero", 1);
    ASSERT_SHAPE(g, op1(g, "Reshape", NULL, ins, 2, &az, 1), LOOM_DTYPE_F32, 3, 0);
    ASSERT_ATTRS(g, "shape");
    ASSERT_INTS(g, "shape", 3, 0);
    /* Without allowzero the 0 copies X's dim 1 (3): 9 elements from 0. */
    CU_ASSERT_EQUAL(op1(g, "Reshape", "r", ins, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'r'", "(Reshape)",
                  "cannot reshape [0, 3] (0 elements) into [3, 3]");
    loom_graph_destroy(g);
}

static void test_reshape_rejects_count_mismatch_and_two_minus_ones(void)
{
    loom_graph *g = loom_graph_create("reshape_bad");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 3, D(2, 3, 4));
    CU_ASSERT_EQUAL(loom_reshape(g, x, 2, D(5, 5)), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Reshape)",
                  "cannot reshape [2, 3, 4] (24 elements) into [5, 5]");
    loom_graph_destroy(g);
    g = loom_graph_create("reshape_two");
    x = in(g, "x", LOOM_DTYPE_F32, 3, D(2, 3, 4));
    CU_ASSERT_EQUAL(loom_reshape(g, x, 2, D(-1, -1)), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Reshape)", "more than one -1");
    loom_graph_destroy(g);
}

static void test_reshape_requires_a_constant_shape_input(void)
{
    loom_graph *g = loom_graph_create("reshape_dyn");
    loom_value ins[2] = {in(g, "x", LOOM_DTYPE_F32, 1, D(6)),
                         in(g, "shape", LOOM_DTYPE_I64, 1, D(2))};
    CU_ASSERT_EQUAL(op1(g, "Reshape", "r", ins, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_UNSUPPORTED, "node 'r'", "(Reshape)",
                  "input 1 (shape) must be a constant");
    loom_graph_destroy(g);
}

static void test_shape_inputs_accept_int32_constants(void)
{
    loom_graph *g = loom_graph_create("i32shape");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(4, 6));
    const int32_t shape[2] = {8, -1};
    loom_value ins[2] = {x, loom_constant(g, "s", LOOM_DTYPE_I32, 1, D(2), shape)};
    ASSERT_SHAPE(g, op1(g, "Reshape", NULL, ins, 2, NULL, 0), LOOM_DTYPE_F32, 8, 3);
    ASSERT_INTS(g, "shape", 8, 3);
    const float fshape[2] = {8, 3};
    ins[1] = loom_constant(g, "f", LOOM_DTYPE_F32, 1, D(2), fshape);
    CU_ASSERT_EQUAL(op1(g, "Reshape", "rf", ins, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'rf'", "(Reshape)",
                  "input 1 (shape) must be int64 or int32, not float");
    loom_graph_destroy(g);
}

static void test_transpose_defaults_to_reversal_and_checks_perm(void)
{
    loom_graph *g = loom_graph_create("transpose");
    loom_value x = in(g, "x", LOOM_DTYPE_I8, 3, D(2, 3, 4));
    ASSERT_SHAPE(g, loom_transpose(g, x, NULL), LOOM_DTYPE_I8, 4, 3, 2);
    ASSERT_ATTRS(g, "perm");
    ASSERT_INTS(g, "perm", 2, 1, 0);
    ASSERT_SHAPE(g, loom_transpose(g, x, D(1, 0, 2)), LOOM_DTYPE_I8, 3, 2, 4);
    ASSERT_INTS(g, "perm", 1, 0, 2);
    CU_ASSERT_EQUAL(loom_transpose(g, x, D(0, 0, 1)), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Transpose)", "axis 0 appears twice");
    loom_graph_destroy(g);
}

static void test_flatten_splits_dims_at_axis(void)
{
    loom_graph *g = loom_graph_create("flatten");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 4, D(2, 3, 4, 5));
    ASSERT_SHAPE(g, loom_flatten(g, x, 2), LOOM_DTYPE_F32, 6, 20);
    ASSERT_SHAPE(g, loom_flatten(g, x, 0), LOOM_DTYPE_F32, 1, 120);
    ASSERT_SHAPE(g, loom_flatten(g, x, 4), LOOM_DTYPE_F32, 120, 1);
    ASSERT_SHAPE(g, loom_flatten(g, x, -1), LOOM_DTYPE_F32, 24, 5);
    ASSERT_INT(g, "axis", 3);
    ASSERT_ATTRS(g, "axis");
    ASSERT_SHAPE(g, op1(g, "Flatten", NULL, &x, 1, NULL, 0), LOOM_DTYPE_F32, 2, 60);
    ASSERT_INT(g, "axis", 1);
    CU_ASSERT_EQUAL(loom_flatten(g, x, 5), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Flatten)", "axis 5 is out of range");
    loom_graph_destroy(g);
}

static void test_concat_sums_the_axis_and_checks_other_dims(void)
{
    loom_graph *g = loom_graph_create("concat");
    loom_value xs[3] = {in(g, "a", LOOM_DTYPE_F32, 2, D(2, 3)),
                        in(g, "b", LOOM_DTYPE_F32, 2, D(2, 5)),
                        in(g, "c", LOOM_DTYPE_F32, 2, D(2, 0))};
    ASSERT_SHAPE(g, loom_concat(g, xs, 3, -1), LOOM_DTYPE_F32, 2, 8);
    ASSERT_ATTRS(g, "axis");
    ASSERT_INT(g, "axis", 1);
    CU_ASSERT_EQUAL(op1(g, "Concat", "cat", xs, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'cat'", "(Concat)",
                  "attribute 'axis' is required");
    loom_graph_destroy(g);

    g = loom_graph_create("concat_bad");
    loom_value ys[2] = {in(g, "a", LOOM_DTYPE_F32, 2, D(2, 3)),
                        in(g, "b", LOOM_DTYPE_F32, 2, D(3, 3))};
    CU_ASSERT_EQUAL(loom_concat(g, ys, 2, 1), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Concat)",
                  "input 1 has shape [3, 3], which differs from input 0's [2, 3] outside axis 1");
    loom_graph_destroy(g);
}

static void test_split_sizes_from_input_attribute_or_equal_parts(void)
{
    loom_graph *g = loom_graph_create("split");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(7, 6));
    loom_value o[3];
    CU_ASSERT_EQUAL_FATAL(loom_split(g, x, 0, 2, D(3, 4), o), LOOM_OK);
    ASSERT_SHAPE(g, o[0], LOOM_DTYPE_F32, 3, 6);
    ASSERT_SHAPE(g, o[1], LOOM_DTYPE_F32, 4, 6);
    ASSERT_ATTRS(g, "axis", "split");
    ASSERT_INTS(g, "split", 3, 4);
    /* Equal parts round up, the last one takes what is left (opset 18's num_outputs). */
    CU_ASSERT_EQUAL_FATAL(loom_split(g, x, -2, 3, NULL, o), LOOM_OK);
    ASSERT_SHAPE(g, o[2], LOOM_DTYPE_F32, 1, 6);
    ASSERT_INTS(g, "split", 3, 3, 1);
    ASSERT_INT(g, "axis", 0);
    ASSERT_ATTRS(g, "axis", "split");
    /* Opset 11 gave the sizes as an attribute. */
    loom_attr attrs[2] = {loom_attr_int("axis", 1), loom_attr_ints("split", 2, D(2, 4))};
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "Split", NULL, &x, 1, attrs, 2, o, 2), LOOM_OK);
    ASSERT_SHAPE(g, o[1], LOOM_DTYPE_F32, 7, 4);
    ASSERT_INTS(g, "split", 2, 4);
    /* Opset 13 without sizes: equal parts by output count. */
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "Split", NULL, &x, 1, attrs, 1, o, 3), LOOM_OK);
    ASSERT_INTS(g, "split", 2, 2, 2);
    loom_graph_destroy(g);
}

static void test_split_rejects_sizes_that_do_not_sum_to_the_axis(void)
{
    loom_graph *g = loom_graph_create("split_bad");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 1, D(10));
    loom_value o[2] = {7, 7};
    CU_ASSERT_NOT_EQUAL(loom_split(g, x, 0, 2, D(3, 3), o), LOOM_OK);
    CU_ASSERT(o[0] == LOOM_NO_VALUE && o[1] == LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Split)",
                  "split sizes sum to 6 but axis 0 has size 10");
    loom_graph_destroy(g);
    g = loom_graph_create("split_num");
    x = in(g, "x", LOOM_DTYPE_F32, 1, D(10));
    loom_attr n = loom_attr_int("num_outputs", 3);
    CU_ASSERT_NOT_EQUAL(loom_graph_op(g, "Split", "sp", &x, 1, &n, 1, o, 2), LOOM_OK);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'sp'", "(Split)",
                  "attribute 'num_outputs' is 3 but the node has 2 outputs");
    loom_graph_destroy(g);
}

static void test_slice_clamps_and_resolves_every_axis(void)
{
    loom_graph *g = loom_graph_create("slice");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 3, D(10, 20, 30));
    ASSERT_SHAPE(g, loom_slice(g, x, 2, D(1, -100), D(INT64_MAX, 1000), D(0, -1), NULL),
                 LOOM_DTYPE_F32, 9, 20, 30);
    ASSERT_ATTRS(g, "starts", "steps");
    ASSERT_INTS(g, "starts", 1, 0, 0);
    ASSERT_INTS(g, "steps", 1, 1, 1);
    /* Leading axes when AXES is NULL; steps of 2 from 1 up to 6: 1, 3, 5. */
    ASSERT_SHAPE(g, loom_slice(g, x, 1, D(1), D(6), NULL, D(2)), LOOM_DTYPE_F32, 3, 20, 30);
    ASSERT_INTS(g, "starts", 1, 0, 0);
    ASSERT_INTS(g, "steps", 2, 1, 1);
    /* Entirely past the end: empty. */
    ASSERT_SHAPE(g, loom_slice(g, x, 1, D(25), D(30), D(1), NULL), LOOM_DTYPE_F32, 10, 0, 30);
    /* Reversed start/end with a positive step: empty too. */
    ASSERT_SHAPE(g, loom_slice(g, x, 1, D(5), D(2), D(2), NULL), LOOM_DTYPE_F32, 10, 20, 0);
    loom_graph_destroy(g);
}

static void test_slice_negative_steps_walk_backwards(void)
{
    loom_graph *g = loom_graph_create("slice_neg");
    loom_value x = in(g, "x", LOOM_DTYPE_I64, 1, D(10));
    /* The whole axis reversed: the idiom x[::-1]. */
    ASSERT_SHAPE(g, loom_slice(g, x, 1, D(-1), D(INT64_MIN), NULL, D(-1)), LOOM_DTYPE_I64, 10);
    ASSERT_INTS(g, "starts", 9);
    ASSERT_INTS(g, "steps", -1);
    /* 8, 5, 2 (stops before 0). */
    ASSERT_SHAPE(g, loom_slice(g, x, 1, D(8), D(0), D(0), D(-3)), LOOM_DTYPE_I64, 3);
    ASSERT_INTS(g, "starts", 8);
    /* A start past the end clamps to the last element. */
    ASSERT_SHAPE(g, loom_slice(g, x, 1, D(100), D(-100), D(0), D(-4)), LOOM_DTYPE_I64, 3);
    ASSERT_INTS(g, "starts", 9);
    CU_ASSERT_EQUAL(loom_slice(g, x, 1, D(0), D(5), NULL, D(0)), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Slice)", "input 4 (steps) has a 0");
    loom_graph_destroy(g);
}

static void test_gather_output_shape_and_constant_index_range(void)
{
    loom_graph *g = loom_graph_create("gather");
    loom_value d = in(g, "d", LOOM_DTYPE_F16, 3, D(5, 4, 3));
    loom_value i = in(g, "i", LOOM_DTYPE_I64, 2, D(2, 6));
    ASSERT_SHAPE(g, loom_gather(g, d, i, 1), LOOM_DTYPE_F16, 5, 2, 6, 3);
    ASSERT_ATTRS(g, "axis");
    ASSERT_INT(g, "axis", 1);
    loom_value s = in(g, "s", LOOM_DTYPE_I32, 0, NULL);
    ASSERT_SHAPE(g, loom_gather(g, d, s, -1), LOOM_DTYPE_F16, 5, 4);
    ASSERT_INT(g, "axis", 2);
    const int32_t ok[2] = {0, -4};
    ASSERT_SHAPE(g, loom_gather(g, d, loom_constant(g, "ok", LOOM_DTYPE_I32, 1, D(2), ok), 1),
                 LOOM_DTYPE_F16, 5, 2, 3);
    const int32_t bad[2] = {0, 4};
    loom_value c = loom_constant(g, "bad", LOOM_DTYPE_I32, 1, D(2), bad);
    CU_ASSERT_EQUAL(loom_gather(g, d, c, 1), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Gather)",
                  "index 4 is out of range for axis 1 of size 4");
    loom_graph_destroy(g);

    g = loom_graph_create("gather_f");
    d = in(g, "d", LOOM_DTYPE_F32, 1, D(5));
    CU_ASSERT_EQUAL(loom_gather(g, d, d, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Gather)",
                  "input 1 (indices) has dtype float");
    loom_graph_destroy(g);
}

static void test_squeeze_removes_size_one_dims(void)
{
    loom_graph *g = loom_graph_create("squeeze");
    loom_value x = in(g, "x", LOOM_DTYPE_BOOL, 4, D(1, 3, 1, 4));
    ASSERT_SHAPE(g, loom_squeeze(g, x, 0, NULL), LOOM_DTYPE_BOOL, 3, 4);
    ASSERT_ATTRS(g, "axes");
    ASSERT_INTS(g, "axes", 0, 2);
    ASSERT_SHAPE(g, loom_squeeze(g, x, 1, D(-2)), LOOM_DTYPE_BOOL, 1, 3, 4);
    ASSERT_INTS(g, "axes", 2);
    loom_attr a = loom_attr_ints("axes", 1, D(0));
    ASSERT_SHAPE(g, op1(g, "Squeeze", NULL, &x, 1, &a, 1), LOOM_DTYPE_BOOL, 3, 1, 4);
    CU_ASSERT_EQUAL(loom_squeeze(g, x, 1, D(1)), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Squeeze)",
                  "cannot squeeze axis 1 of size 3");
    loom_graph_destroy(g);
}

static void test_unsqueeze_axes_index_the_output(void)
{
    loom_graph *g = loom_graph_create("unsqueeze");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(3, 4));
    ASSERT_SHAPE(g, loom_unsqueeze(g, x, 2, D(-1, 0)), LOOM_DTYPE_F32, 1, 3, 4, 1);
    ASSERT_ATTRS(g, "axes");
    ASSERT_INTS(g, "axes", 0, 3);
    ASSERT_SHAPE(g, loom_unsqueeze(g, x, 2, D(1, 2)), LOOM_DTYPE_F32, 3, 1, 1, 4);
    loom_value s = in(g, "s", LOOM_DTYPE_F32, 0, NULL);
    ASSERT_SHAPE(g, loom_unsqueeze(g, s, 1, D(0)), LOOM_DTYPE_F32, 1);
    CU_ASSERT_EQUAL(loom_unsqueeze(g, x, 2, D(1, -3)), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Unsqueeze)", "axis 1 appears twice");
    loom_graph_destroy(g);

    g = loom_graph_create("unsqueeze_rank");
    x = in(g, "x", LOOM_DTYPE_F32, 8, D(1, 1, 1, 1, 1, 1, 1, 1));
    CU_ASSERT_EQUAL(loom_unsqueeze(g, x, 1, D(0)), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_UNSUPPORTED, NULL, "(Unsqueeze)", "output rank 9 exceeds");
    loom_graph_destroy(g);
}

/* ---- errors every op shares ----------------------------------------------------------------- */

static void test_unknown_op_is_reported_with_the_node_name(void)
{
    loom_graph *g = loom_graph_create("unknown");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 1, D(3));
    loom_value out;
    CU_ASSERT_EQUAL(loom_graph_op(g, "Frobnicate", "fro", &x, 1, NULL, 0, &out, 1),
                    LOOM_ERR_UNSUPPORTED);
    ASSERT_FAILED(g, LOOM_ERR_UNSUPPORTED, "'fro'", "Frobnicate", "unknown op");
    loom_graph_destroy(g);
}

static void test_wrong_arity_is_reported(void)
{
    loom_graph *g = loom_graph_create("arity");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 1, D(3));
    loom_value xs[3] = {x, x, x};
    CU_ASSERT_EQUAL(op1(g, "Add", "add3", xs, 3, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'add3'", "(Add)", "got 3");
    loom_graph_destroy(g);
}

static void test_missing_required_input_is_reported(void)
{
    loom_graph *g = loom_graph_create("missing");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(3, 3));
    loom_value ins[2] = {x, LOOM_NO_VALUE};
    CU_ASSERT_EQUAL(op1(g, "MatMul", "mm", ins, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'mm'", "(MatMul)",
                  "input 1 (B) is required");
    loom_graph_destroy(g);
}

static void test_unknown_attribute_is_reported(void)
{
    loom_graph *g = loom_graph_create("attr");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 1, D(3));
    loom_attr foo = loom_attr_int("foo", 1);
    CU_ASSERT_EQUAL(op1(g, "Relu", "r", &x, 1, &foo, 1), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'r'", "(Relu)", "unknown attribute 'foo'");
    loom_graph_destroy(g);
}

static void test_attribute_of_the_wrong_kind_is_reported(void)
{
    loom_graph *g = loom_graph_create("attr_kind");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 1, D(3));
    loom_attr alpha = loom_attr_int("alpha", 1);
    CU_ASSERT_EQUAL(op1(g, "LeakyRelu", "lr", &x, 1, &alpha, 1), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'lr'", "(LeakyRelu)",
                  "attribute 'alpha' must be a float, not an int");
    loom_graph_destroy(g);
}

static void test_dimension_product_overflow_is_reported(void)
{
    loom_graph *g = loom_graph_create("overflow");
    loom_value a = in(g, "a", LOOM_DTYPE_F32, 2, D(1LL << 40, 1));
    loom_value b = in(g, "b", LOOM_DTYPE_F32, 2, D(1, 1LL << 40));
    loom_value ins[2] = {a, b};
    CU_ASSERT_EQUAL(op1(g, "Add", "huge", ins, 2, NULL, 0), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, "node 'huge'", "(Add)", "overflows");
    loom_graph_destroy(g);

    g = loom_graph_create("overflow_expand");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 1, D(1));
    CU_ASSERT_EQUAL(loom_expand(g, x, 3, D(1LL << 31, 1LL << 31, 1LL << 31)), LOOM_NO_VALUE);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(Expand)", "overflows");
    loom_graph_destroy(g);
}

static void test_first_error_is_sticky_and_later_builders_do_nothing(void)
{
    loom_graph *g = loom_graph_create("sticky");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(2, 3));
    CU_ASSERT_EQUAL(loom_matmul(g, x, x), LOOM_NO_VALUE);
    size_t nodes = loom_graph_node_count(g);
    CU_ASSERT_EQUAL(loom_relu(g, x), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_reshape(g, x, 1, D(6)), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_graph_node_count(g), nodes);
    ASSERT_FAILED(g, LOOM_ERR_INVALID_ARGUMENT, NULL, "(MatMul)", "inner dimensions 3 and 2");
    loom_graph_destroy(g);
}

static void test_builders_make_a_graph_that_checks(void)
{
    loom_graph *g = loom_graph_create("mlp");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 3, D(2, 8, 16));
    const float wd[16 * 4] = {0};
    loom_value w = loom_constant(g, "w", LOOM_DTYPE_F32, 2, D(16, 4), wd);
    loom_value h = loom_gelu(g, loom_matmul(g, x, w), "tanh");
    h = loom_clip(g, h, -1.0f, 1.0f);
    h = loom_reshape(g, h, 2, D(-1, 4));
    h = loom_slice(g, h, 1, D(0), D(8), D(0), D(2));
    h = loom_unsqueeze(g, h, 1, D(0));
    h = loom_reduce_mean(g, h, 1, D(-1), 0);
    h = loom_squeeze(g, h, 0, NULL);
    ASSERT_SHAPE(g, h, LOOM_DTYPE_F32, 4);
    CU_ASSERT_EQUAL(loom_output(g, h, "y"), LOOM_OK);
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    if (loom_graph_check(g) != LOOM_OK)
        printf("\n  %s\n", loom_last_error());
    loom_graph_destroy(g);
}

/* The public node accessors (what tools use instead of graph_internal.h): names, ops, wiring
 * between nodes, an absent optional input, and out-of-range indices. */
static void test_node_accessors_walk_names_ops_and_wiring(void)
{
    loom_graph *g = loom_graph_create("walk");
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 2, D(2, 4));
    const float zeros[16] = {0};
    loom_value w1 = loom_constant(g, "w1", LOOM_DTYPE_F32, 2, D(4, 3), zeros);
    loom_value w2 = loom_constant(g, "w2", LOOM_DTYPE_F32, 2, D(3, 4), zeros);
    loom_value h = LOOM_NO_VALUE, p = LOOM_NO_VALUE, halves[2] = {LOOM_NO_VALUE, LOOM_NO_VALUE};
    loom_value y = LOOM_NO_VALUE;
    CU_ASSERT_EQUAL(loom_graph_op(g, "MatMul", "fc", (loom_value[]){x, w1}, 2, NULL, 0, &h, 1),
                    LOOM_OK);
    CU_ASSERT_EQUAL(loom_graph_op(g, "Gemm", "proj", (loom_value[]){h, w2, LOOM_NO_VALUE}, 3,
                                  NULL, 0, &p, 1),
                    LOOM_OK);
    loom_attr split_attrs[2] = {loom_attr_int("axis", 1), loom_attr_int("num_outputs", 2)};
    CU_ASSERT_EQUAL(loom_graph_op(g, "Split", "halves", &p, 1, split_attrs, 2, halves, 2), LOOM_OK);
    CU_ASSERT_EQUAL(loom_graph_op(g, "Add", "sum", halves, 2, NULL, 0, &y, 1), LOOM_OK);
    CU_ASSERT_EQUAL(loom_output(g, y, "y"), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);

    static const char *const names[] = {"fc", "proj", "halves", "sum"};
    static const char *const ops[] = {"MatMul", "Gemm", "Split", "Add"};
    static const size_t n_in[] = {2, 3, 1, 2}, n_out[] = {1, 1, 2, 1};
    CU_ASSERT_EQUAL_FATAL(loom_graph_node_count(g), 4);
    for (size_t i = 0; i < 4; i++) {
        CU_ASSERT_STRING_EQUAL(loom_graph_node_name(g, i), names[i]);
        CU_ASSERT_STRING_EQUAL(loom_graph_node_op(g, i), ops[i]);
        CU_ASSERT_EQUAL(loom_graph_node_input_count(g, i), n_in[i]);
        CU_ASSERT_EQUAL(loom_graph_node_output_count(g, i), n_out[i]);
    }
    /* each node reads what the one before made; the handles are those the builder returned */
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 0, 0), x);
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 0, 1), w1);
    CU_ASSERT_EQUAL(loom_graph_node_output(g, 0, 0), h);
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 1, 0), loom_graph_node_output(g, 0, 0));
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 1, 1), w2);
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 1, 2), LOOM_NO_VALUE); /* Gemm without C */
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 2, 0), p);
    CU_ASSERT_EQUAL(loom_graph_node_output(g, 2, 0), halves[0]);
    CU_ASSERT_EQUAL(loom_graph_node_output(g, 2, 1), halves[1]);
    CU_ASSERT_NOT_EQUAL(halves[0], halves[1]);
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 3, 0), halves[0]);
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 3, 1), halves[1]);
    CU_ASSERT_EQUAL(loom_graph_node_output(g, 3, 0), loom_graph_output(g, 0));
    CU_ASSERT_STRING_EQUAL(loom_value_name(g, loom_graph_node_output(g, 3, 0)), "y");
    /* producers: nodes for node outputs, -1 for inputs, constants and absent values */
    CU_ASSERT_EQUAL(loom_graph_value_producer(g, h), 0);
    CU_ASSERT_EQUAL(loom_graph_value_producer(g, p), 1);
    CU_ASSERT_EQUAL(loom_graph_value_producer(g, halves[1]), 2);
    CU_ASSERT_EQUAL(loom_graph_value_producer(g, y), 3);
    CU_ASSERT_EQUAL(loom_graph_value_producer(g, x), -1);
    CU_ASSERT_EQUAL(loom_graph_value_producer(g, w1), -1);
    CU_ASSERT_EQUAL(loom_graph_value_producer(g, LOOM_NO_VALUE), -1);
    CU_ASSERT_EQUAL(loom_graph_value_producer(NULL, h), -1);

    /* out of range: a node past the end, a slot past a node's last, a NULL graph */
    CU_ASSERT_PTR_NULL(loom_graph_node_name(g, 4));
    CU_ASSERT_PTR_NULL(loom_graph_node_op(g, 4));
    CU_ASSERT_EQUAL(loom_graph_node_input_count(g, 4), 0);
    CU_ASSERT_EQUAL(loom_graph_node_output_count(g, 4), 0);
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 4, 0), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_graph_node_output(g, 4, 0), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 0, 2), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_graph_node_output(g, 2, 2), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_graph_node_output(g, SIZE_MAX, SIZE_MAX), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_graph_node_count(NULL), 0);
    CU_ASSERT_PTR_NULL(loom_graph_node_name(NULL, 0));
    CU_ASSERT_PTR_NULL(loom_graph_node_op(NULL, 0));
    CU_ASSERT_EQUAL(loom_graph_node_input_count(NULL, 0), 0);
    CU_ASSERT_EQUAL(loom_graph_node_output_count(NULL, 0), 0);
    CU_ASSERT_EQUAL(loom_graph_node_input(NULL, 0, 0), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_graph_node_output(NULL, 0, 0), LOOM_NO_VALUE);
    loom_graph_destroy(g);
}

/* Folded nodes become constants, not nodes: the walk sees only what will run. */
static void test_node_accessors_skip_folded_nodes(void)
{
    loom_graph *g = loom_graph_create("walk_folded");
    CU_ASSERT_EQUAL(loom_graph_set_folding(g, 1), LOOM_OK);
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 1, D(4));
    const float ones[4] = {1, 1, 1, 1};
    loom_value c = loom_constant(g, "c", LOOM_DTYPE_F32, 1, D(4), ones);
    loom_value y = loom_add(g, x, loom_neg(g, c)); /* Neg of a constant folds */
    CU_ASSERT_EQUAL(loom_output(g, y, "y"), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_graph_node_count(g), 1);
    CU_ASSERT_STRING_EQUAL(loom_graph_node_op(g, 0), "Add");
    CU_ASSERT_EQUAL(loom_graph_node_input(g, 0, 0), x);
    CU_ASSERT_NOT_EQUAL(loom_graph_node_input(g, 0, 1), c);
    CU_ASSERT_NOT_EQUAL(loom_graph_node_input(g, 0, 1), LOOM_NO_VALUE);
    loom_graph_destroy(g);
}

static int same_attr(const loom_attr *a, const loom_attr *b)
{
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case LOOM_ATTR_INT: return a->i == b->i;
    case LOOM_ATTR_FLOAT: return a->f == b->f || (isnan(a->f) && isnan(b->f));
    case LOOM_ATTR_STRING: return strcmp(a->s, b->s) == 0;
    case LOOM_ATTR_INTS:
        return a->count == b->count &&
               (!a->count || memcmp(a->ints, b->ints, a->count * sizeof *a->ints) == 0);
    case LOOM_ATTR_FLOATS:
        return a->count == b->count &&
               (!a->count || memcmp(a->floats, b->floats, a->count * sizeof *a->floats) == 0);
    }
    return 0;
}

/* Passes rebuild nodes from what a node carries: a canonical node must infer to itself. */
static void test_canonical_attributes_infer_to_themselves(void)
{
    loom_graph *g = loom_graph_create("idempotent");
    graph_raw_handles(g); /* node->inputs (value indices) are fed back to loom_graph_op below */
    loom_value x = in(g, "x", LOOM_DTYPE_F32, 4, D(2, 3, 9, 9));
    loom_value w = in(g, "w", LOOM_DTYPE_F32, 4, D(6, 3, 3, 3));
    loom_value v = in(g, "v", LOOM_DTYPE_F32, 1, D(8));
    loom_window_params same = {.n_spatial = 2, .strides = {2, 2}, .auto_pad = "SAME_LOWER"};
    loom_window_params pool = {.n_spatial = 2, .kernel_shape = {2, 2}, .strides = {2, 2},
                               .ceil_mode = 1, .count_include_pad = 1};
    loom_value c = loom_conv(g, x, w, LOOM_NO_VALUE, &same);
    loom_max_pool(g, c, &pool);
    loom_average_pool(g, c, &pool);
    loom_softmax(g, c, -1);
    loom_reduce_sum(g, c, 2, D(-1, 1), 0);
    loom_reduce_mean(g, c, 0, NULL, 1);
    loom_reshape(g, c, 2, D(0, -1));
    loom_transpose(g, c, NULL);
    loom_flatten(g, c, -2);
    loom_value parts[2];
    loom_split(g, x, 2, 2, NULL, parts);
    loom_slice(g, x, 2, D(-1, 1), D(INT64_MIN, 100), D(-1, 1), D(-2, 1));
    loom_squeeze(g, loom_unsqueeze(g, x, 2, D(-1, 0)), 0, NULL);
    loom_clip(g, v, -1.0f, 1.0f);
    loom_gelu(g, v, NULL);
    loom_leaky_relu(g, v, 0.5f);
    loom_layer_norm(g, v, v, v, 0, 1e-3f);
    loom_gemm(g, loom_reshape(g, v, 2, D(2, 4)), loom_reshape(g, v, 2, D(2, 4)), LOOM_NO_VALUE,
              2.0f, 0.0f, 1, 0);
    loom_cast(g, v, LOOM_DTYPE_F16);
    loom_concat(g, parts, 2, -2);
    CU_ASSERT_EQUAL(g->error, LOOM_OK); /* every builder above succeeded */
    if (g->error != LOOM_OK) {
        printf("\n  %s\n", g->error_msg);
        loom_graph_destroy(g);
        return;
    }
    size_t n_nodes = g->n_nodes;
    for (size_t i = 0; i < n_nodes; i++) {
        const graph_node *node = &g->nodes[i];
        loom_value outs[8];
        loom_status st = loom_graph_op(g, node->def->name, NULL, node->inputs, node->n_inputs,
                                       node->attrs.items, node->attrs.count, outs,
                                       node->n_outputs);
        CU_ASSERT_EQUAL(st, LOOM_OK);
        if (st != LOOM_OK) {
            printf("\n  %s\n", loom_last_error());
            break;
        }
        node = &g->nodes[i]; /* loom_graph_op may have moved the node array */
        const graph_node *again = &g->nodes[g->n_nodes - 1];
        int same_attrs = again->attrs.count == node->attrs.count;
        for (size_t k = 0; same_attrs && k < node->attrs.count; k++) {
            const loom_attr *b = loom_attr_list_get(&again->attrs, node->attrs.items[k].name);
            same_attrs = b && same_attr(&node->attrs.items[k], b);
        }
        if (!same_attrs)
            printf("\n  %s: canonical attributes changed on re-inference\n", node->def->name);
        CU_ASSERT(same_attrs);
        for (uint32_t o = 0; o < node->n_outputs; o++) {
            const loom_tensor_desc *d = &g->values[node->outputs[o]].desc;
            CU_ASSERT(shape_is(g, outs[o], d->dtype, d->rank, d->dims));
        }
    }
    loom_graph_destroy(g);
}

/* ---- main ----------------------------------------------------------------------------------- */


int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        TEST_ENTRY(test_registry_finds_every_abi_op_by_name_and_id),
        TEST_ENTRY(test_registry_domains_and_probed_input_dtypes),
        TEST_ENTRY(test_attr_list_owns_deep_copies_and_rejects_duplicates),
        TEST_ENTRY(test_broadcast_shapes_follows_numpy_rules),
        TEST_ENTRY(test_dims_numel_checked_rejects_int64_and_size_overflow),
        TEST_ENTRY(test_unary_float_ops_keep_shape_and_dtype),
        TEST_ENTRY(test_float_math_ops_reject_integer_inputs),
        TEST_ENTRY(test_neg_and_abs_accept_signed_integers_but_not_uint8),
        TEST_ENTRY(test_leaky_relu_and_gelu_fill_in_default_attributes),
        TEST_ENTRY(test_binary_ops_broadcast_numpy_style),
        TEST_ENTRY(test_binary_ops_reject_incompatible_broadcast),
        TEST_ENTRY(test_binary_ops_reject_dtype_mismatch),
        TEST_ENTRY(test_min_max_are_variadic_and_broadcast_every_input),
        TEST_ENTRY(test_clip_bounds_from_constants_become_min_max_attributes),
        TEST_ENTRY(test_clip_builder_makes_bounds_in_the_input_dtype),
        TEST_ENTRY(test_where_needs_bool_condition_and_broadcasts_three_ways),
        TEST_ENTRY(test_cast_sets_output_dtype_from_to),
        TEST_ENTRY(test_cast_to_unknown_dtype_is_unsupported),
        TEST_ENTRY(test_identity_accepts_every_dtype),
        TEST_ENTRY(test_expand_broadcasts_to_the_constant_shape),
        TEST_ENTRY(test_matmul_broadcasts_batch_dimensions),
        TEST_ENTRY(test_matmul_promotes_1d_operands_and_drops_the_promoted_dim),
        TEST_ENTRY(test_matmul_inner_dimension_mismatch_names_node_and_dims),
        TEST_ENTRY(test_matmul_rejects_scalars_and_bool),
        TEST_ENTRY(test_matmul_cost_counts_a_multiply_add_as_two_flops),
        TEST_ENTRY(test_gemm_applies_transposes_and_canonicalises_defaults),
        TEST_ENTRY(test_gemm_rejects_inner_mismatch_and_non_2d),
        TEST_ENTRY(test_conv_2d_shape_with_pads_strides_and_dilations),
        TEST_ENTRY(test_conv_1d_and_3d_with_groups),
        TEST_ENTRY(test_conv_auto_pad_same_is_resolved_into_pads),
        TEST_ENTRY(test_conv_kernel_larger_than_padded_input_is_rejected),
        TEST_ENTRY(test_max_pool_ceil_mode_keeps_last_window_inside_input),
        TEST_ENTRY(test_average_pool_carries_every_canonical_attribute),
        TEST_ENTRY(test_pools_require_kernel_shape),
        TEST_ENTRY(test_global_average_pool_keeps_batch_and_channels),
        TEST_ENTRY(test_window_params_with_too_many_spatial_dims_fail_the_builder),
        TEST_ENTRY(test_softmax_axis_defaults_to_last_and_is_made_non_negative),
        TEST_ENTRY(test_layer_norm_mean_and_inv_std_dev_have_onnx_shapes),
        TEST_ENTRY(test_normalization_refuses_a_negative_or_nan_epsilon),
        TEST_ENTRY(test_batch_norm_is_inference_only),
        TEST_ENTRY(test_reduce_axes_from_input_are_sorted_and_keepdims_canonical),
        TEST_ENTRY(test_reduce_without_axes_reduces_everything),
        TEST_ENTRY(test_reduce_axes_attribute_and_noop_with_empty_axes),
        TEST_ENTRY(test_reduce_rejects_repeated_and_non_constant_axes),
        TEST_ENTRY(test_reduce_noop_canonical_form_infers_to_itself),
        TEST_ENTRY(test_reshape_copies_zeros_and_infers_minus_one),
        TEST_ENTRY(test_reshape_allowzero_keeps_zero_dims),
        TEST_ENTRY(test_reshape_rejects_count_mismatch_and_two_minus_ones),
        TEST_ENTRY(test_reshape_requires_a_constant_shape_input),
        TEST_ENTRY(test_shape_inputs_accept_int32_constants),
        TEST_ENTRY(test_transpose_defaults_to_reversal_and_checks_perm),
        TEST_ENTRY(test_flatten_splits_dims_at_axis),
        TEST_ENTRY(test_concat_sums_the_axis_and_checks_other_dims),
        TEST_ENTRY(test_split_sizes_from_input_attribute_or_equal_parts),
        TEST_ENTRY(test_split_rejects_sizes_that_do_not_sum_to_the_axis),
        TEST_ENTRY(test_slice_clamps_and_resolves_every_axis),
        TEST_ENTRY(test_slice_negative_steps_walk_backwards),
        TEST_ENTRY(test_gather_output_shape_and_constant_index_range),
        TEST_ENTRY(test_squeeze_removes_size_one_dims),
        TEST_ENTRY(test_unsqueeze_axes_index_the_output),
        TEST_ENTRY(test_unknown_op_is_reported_with_the_node_name),
        TEST_ENTRY(test_wrong_arity_is_reported),
        TEST_ENTRY(test_missing_required_input_is_reported),
        TEST_ENTRY(test_unknown_attribute_is_reported),
        TEST_ENTRY(test_attribute_of_the_wrong_kind_is_reported),
        TEST_ENTRY(test_dimension_product_overflow_is_reported),
        TEST_ENTRY(test_first_error_is_sticky_and_later_builders_do_nothing),
        TEST_ENTRY(test_builders_make_a_graph_that_checks),
        TEST_ENTRY(test_node_accessors_walk_names_ops_and_wiring),
        TEST_ENTRY(test_node_accessors_skip_folded_nodes),
        TEST_ENTRY(test_canonical_attributes_infer_to_themselves),
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"graph_ops", tests, NULL, NULL, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
