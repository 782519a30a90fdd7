/*
 * Elementwise operators of the registry: unary math (Relu ... Log, Neg, Abs), binary and
 * variadic arithmetic with ONNX broadcasting (Add ... Max), Clip, Where, Cast, Identity and
 * Expand. Shape and dtype inference, attribute canonicalisation (graph/ops.h) and cost.
 *
 * Cost: every output element costs a few FLOPs (the per-op figure below); transcendental
 * functions count LOOM_FLOPS_TRANSCENDENTAL each. Bytes are the inputs read once and the
 * outputs written once (loom_ops_cost_io); broadcasting does not re-count re-read inputs,
 * because they stay in cache for the sizes that matter.
 */
#include "ops_defs.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define T LOOM_FLOPS_TRANSCENDENTAL

static const char *const k_no_names[] = {NULL};
static const loom_attr_kind k_no_kinds[] = {LOOM_ATTR_INT}; /* unused: no names */

/* The cost of ops that do FLOPS work per output element. */
static void cost_per_output(const loom_node_desc *node, loom_op_cost *cost, double flops)
{
    loom_ops_cost_io(node, cost);
    cost->flops = flops * loom_ops_numel(&node->outputs[0]);
}

/* ---- unary ---------------------------------------------------------------------------------- */

/* Y has X's dtype and shape; X's dtype must be in MASK. The caller has checked attributes. */
static loom_status unary_shape(loom_infer_ctx *ctx, uint32_t mask)
{
    loom_status st;
    if ((st = loom_ops_require(ctx, 0, "X")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "X", mask)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return LOOM_OK;
}

static loom_status unary_no_attrs(loom_infer_ctx *ctx, uint32_t mask)
{
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = unary_shape(ctx, mask)) != LOOM_OK)
        return st;
    return loom_ops_finish(ctx);
}

static loom_status infer_float_unary(loom_infer_ctx *ctx)
{
    return unary_no_attrs(ctx, LOOM_DTS_FLOAT);
}

static loom_status infer_signed_unary(loom_infer_ctx *ctx)
{
    return unary_no_attrs(ctx, LOOM_DTS_SIGNED);
}

static loom_status infer_identity(loom_infer_ctx *ctx)
{
    return unary_no_attrs(ctx, LOOM_DTS_ALL);
}

static loom_status infer_leaky_relu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = unary_shape(ctx, LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    float alpha = loom_infer_get_float(ctx, "alpha", 0.01f);
    if ((st = loom_infer_set_float(ctx, "alpha", alpha)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, names);
    return loom_ops_finish(ctx);
}

static loom_status infer_gelu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"approximate", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_STRING};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = unary_shape(ctx, LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    const char *approx = loom_infer_get_string(ctx, "approximate", "none");
    if (strcmp(approx, "none") != 0 && strcmp(approx, "tanh") != 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'approximate' is '%s'; expected 'none' or 'tanh'",
                               approx);
    /* Copy first: APPROX may point into the attribute the setter replaces. */
    const char *canon = strcmp(approx, "tanh") == 0 ? "tanh" : "none";
    if ((st = loom_infer_set_string(ctx, "approximate", canon)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, names);
    return loom_ops_finish(ctx);
}

static loom_status infer_cast(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"to", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "input")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_ALL)) != LOOM_OK)
        return st;
    if (!loom_attr_list_get(ctx->attrs, "to"))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "attribute 'to' is required");
    int64_t to = loom_infer_get_int(ctx, "to", 0);
    if (to <= 0 || to >= 32 || !(LOOM_DTS_ALL & LOOM_DTS(to)))
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "attribute 'to' is %lld, not a dtype Loom supports",
                               (long long)to);
    const loom_tensor_desc *x = &ctx->inputs[0];
    loom_ops_set_output(ctx, 0, (loom_dtype)to, x->rank, x->dims);
    loom_ops_keep_only(ctx, names);
    return loom_ops_finish(ctx);
}

/* ---- binary and variadic, with broadcasting ------------------------------------------------- */

/* Broadcast inputs FIRST..N_INPUTS-1 (all required, all of input FIRST's dtype, which must be in
 * MASK) into *OUT. NAMES name the inputs in messages; NULL names them by position. */
static loom_status broadcast_inputs(loom_infer_ctx *ctx, uint32_t first, uint32_t mask,
                                    const char *const *names, loom_tensor_desc *out)
{
    loom_status st;
    char what[32];
    for (uint32_t i = first; i < ctx->n_inputs; i++) {
        const char *name = names ? names[i] : what;
        if (!names)
            snprintf(what, sizeof what, "data_%u", i);
        if ((st = loom_ops_require(ctx, i, name)) != LOOM_OK)
            return st;
        if (i == first) {
            if ((st = loom_ops_check_dtype(ctx, i, name, mask)) != LOOM_OK)
                return st;
            *out = ctx->inputs[i];
            continue;
        }
        if ((st = loom_ops_same_dtype(ctx, i, name, first)) != LOOM_OK)
            return st;
        loom_tensor_desc next;
        if (!loom_broadcast_shapes(out, &ctx->inputs[i], &next)) {
            char a[160], b[160];
            return loom_infer_fail(
                ctx, LOOM_ERR_INVALID_ARGUMENT,
                "shapes %s and %s cannot be broadcast together (input %u (%s))",
                loom_dims_format(out->rank, out->dims, a, sizeof a),
                loom_dims_format(ctx->inputs[i].rank, ctx->inputs[i].dims, b, sizeof b), i,
                name);
        }
        next.dtype = out->dtype;
        *out = next;
    }
    return LOOM_OK;
}

static loom_status binary(loom_infer_ctx *ctx, uint32_t mask)
{
    static const char *const names[] = {"A", "B"};
    loom_status st;
    loom_tensor_desc y;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = broadcast_inputs(ctx, 0, mask, names, &y)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, y.dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_arith_binary(loom_infer_ctx *ctx)
{
    return binary(ctx, LOOM_DTS_ARITH);
}

static loom_status infer_pow(loom_infer_ctx *ctx)
{
    return binary(ctx, LOOM_DTS_FLOAT);
}

static loom_status infer_variadic(loom_infer_ctx *ctx)
{
    loom_status st;
    loom_tensor_desc y;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK)
        return st;
    if (ctx->n_inputs == 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "needs at least one input");
    if ((st = broadcast_inputs(ctx, 0, LOOM_DTS_ARITH, NULL, &y)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, y.dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_where(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"condition", "X", "Y"};
    loom_status st;
    loom_tensor_desc xy, y;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, names[0])) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, names[0], LOOM_DTS(LOOM_DTYPE_BOOL))) != LOOM_OK ||
        (st = broadcast_inputs(ctx, 1, LOOM_DTS_ALL, names, &xy)) != LOOM_OK)
        return st;
    if (!loom_broadcast_shapes(&ctx->inputs[0], &xy, &y)) {
        char a[160], b[160];
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "shapes %s (condition) and %s (X and Y) cannot be broadcast "
                               "together",
                               loom_dims_format(ctx->inputs[0].rank, ctx->inputs[0].dims, a,
                                                sizeof a),
                               loom_dims_format(xy.rank, xy.dims, b, sizeof b));
    }
    loom_ops_set_output(ctx, 0, xy.dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

/* Clip's bounds come from constant inputs 1/2 (opset 11+), or from the 'min'/'max' attributes
 * (opset 6, and the canonical form, so that a canonical node infers to itself). A bound input
 * that is not a constant is read by the kernel; its attribute is then the open bound. */
static loom_status infer_clip(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"min", "max", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = unary_shape(ctx, LOOM_DTS_ARITH)) != LOOM_OK)
        return st;
    float bound[2] = {loom_infer_get_float(ctx, "min", -INFINITY),
                      loom_infer_get_float(ctx, "max", INFINITY)};
    for (uint32_t i = 1; i <= 2; i++) {
        if (!loom_ops_has(ctx, i))
            continue;
        const loom_tensor_desc *d = &ctx->inputs[i];
        if ((st = loom_ops_same_dtype(ctx, i, names[i - 1], 0)) != LOOM_OK)
            return st;
        if (loom_ops_numel(d) != 1.0) {
            char s[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input %u (%s) must be a scalar, not of shape %s", i,
                                   names[i - 1], loom_dims_format(d->rank, d->dims, s, sizeof s));
        }
        const void *data = ctx->input_constants ? ctx->input_constants[i] : NULL;
        bound[i - 1] = data ? loom_ops_scalar_to_float(d->dtype, data)
                            : (i == 1 ? -INFINITY : INFINITY);
    }
    if ((st = loom_infer_set_float(ctx, "min", bound[0])) != LOOM_OK ||
        (st = loom_infer_set_float(ctx, "max", bound[1])) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, names);
    return loom_ops_finish(ctx);
}

static loom_status infer_expand(loom_infer_ctx *ctx)
{
    loom_status st;
    int64_t shape[LOOM_MAX_RANK];
    size_t n = 0;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "input")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_ALL)) != LOOM_OK ||
        (st = loom_ops_const_ints(ctx, 1, "shape", LOOM_MAX_RANK, shape, &n)) != LOOM_OK)
        return st;
    loom_tensor_desc target = {.dtype = ctx->inputs[0].dtype, .rank = (uint32_t)n};
    for (size_t k = 0; k < n; k++) {
        if (shape[k] < 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 1 (shape) has a negative dimension %lld",
                                   (long long)shape[k]);
        target.dims[k] = shape[k];
    }
    loom_tensor_desc y;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (!loom_broadcast_shapes(x, &target, &y)) {
        char a[160], b[160];
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "cannot expand shape %s to %s",
                               loom_dims_format(x->rank, x->dims, a, sizeof a),
                               loom_dims_format(target.rank, target.dims, b, sizeof b));
    }
    loom_ops_set_output(ctx, 0, x->dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

/* ---- costs ---------------------------------------------------------------------------------- */

static void cost_copy(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, 0.0); }
static void cost_one(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, 1.0); }
static void cost_two(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, 2.0); }
static void cost_transcendental(const loom_node_desc *n, loom_op_cost *c)
{
    cost_per_output(n, c, T);
}
/* 1 / (1 + exp(-x)): one exp, an add and a divide. */
static void cost_sigmoid(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, T + 2); }
/* 0.5 x (1 + erf(x / sqrt 2)) or its tanh form: one transcendental and about five operations. */
static void cost_gelu(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, T + 5); }
/* N inputs take N - 1 comparisons per output element. */
static void cost_variadic(const loom_node_desc *n, loom_op_cost *c)
{
    cost_per_output(n, c, n->n_inputs > 1 ? (double)(n->n_inputs - 1) : 0.0);
}

/* ---- the definitions ------------------------------------------------------------------------ */

#define DEF(var, opid, onnx, in_min, in_max, inf, cst)                                         \
    const loom_op_def var = {.id = opid,                                                       \
                             .name = onnx,                                                     \
                             .min_inputs = in_min,                                             \
                             .max_inputs = in_max,                                             \
                             .min_outputs = 1,                                                 \
                             .max_outputs = 1,                                                 \
                             .infer = inf,                                                     \
                             .cost = cst}

DEF(loom_op_def_relu, LOOM_OP_RELU, "Relu", 1, 1, infer_float_unary, cost_one);
DEF(loom_op_def_leaky_relu, LOOM_OP_LEAKY_RELU, "LeakyRelu", 1, 1, infer_leaky_relu, cost_two);
DEF(loom_op_def_sigmoid, LOOM_OP_SIGMOID, "Sigmoid", 1, 1, infer_float_unary, cost_sigmoid);
DEF(loom_op_def_tanh, LOOM_OP_TANH, "Tanh", 1, 1, infer_float_unary, cost_transcendental);
DEF(loom_op_def_erf, LOOM_OP_ERF, "Erf", 1, 1, infer_float_unary, cost_transcendental);
DEF(loom_op_def_gelu, LOOM_OP_GELU, "Gelu", 1, 1, infer_gelu, cost_gelu);
DEF(loom_op_def_add, LOOM_OP_ADD, "Add", 2, 2, infer_arith_binary, cost_one);
DEF(loom_op_def_sub, LOOM_OP_SUB, "Sub", 2, 2, infer_arith_binary, cost_one);
DEF(loom_op_def_mul, LOOM_OP_MUL, "Mul", 2, 2, infer_arith_binary, cost_one);
DEF(loom_op_def_div, LOOM_OP_DIV, "Div", 2, 2, infer_arith_binary, cost_one);
DEF(loom_op_def_pow, LOOM_OP_POW, "Pow", 2, 2, infer_pow, cost_transcendental);
DEF(loom_op_def_sqrt, LOOM_OP_SQRT, "Sqrt", 1, 1, infer_float_unary, cost_transcendental);
DEF(loom_op_def_exp, LOOM_OP_EXP, "Exp", 1, 1, infer_float_unary, cost_transcendental);
DEF(loom_op_def_log, LOOM_OP_LOG, "Log", 1, 1, infer_float_unary, cost_transcendental);
DEF(loom_op_def_neg, LOOM_OP_NEG, "Neg", 1, 1, infer_signed_unary, cost_one);
DEF(loom_op_def_abs, LOOM_OP_ABS, "Abs", 1, 1, infer_signed_unary, cost_one);
DEF(loom_op_def_min, LOOM_OP_MIN, "Min", 1, UINT32_MAX, infer_variadic, cost_variadic);
DEF(loom_op_def_max, LOOM_OP_MAX, "Max", 1, UINT32_MAX, infer_variadic, cost_variadic);
/* A lower and an upper comparison per element. */
DEF(loom_op_def_clip, LOOM_OP_CLIP, "Clip", 1, 3, infer_clip, cost_two);
DEF(loom_op_def_where, LOOM_OP_WHERE, "Where", 3, 3, infer_where, cost_one);
/* A conversion per element. */
DEF(loom_op_def_cast, LOOM_OP_CAST, "Cast", 1, 1, infer_cast, cost_one);
DEF(loom_op_def_identity, LOOM_OP_IDENTITY, "Identity", 1, 1, infer_identity, cost_copy);
DEF(loom_op_def_expand, LOOM_OP_EXPAND, "Expand", 2, 2, infer_expand, cost_copy);
