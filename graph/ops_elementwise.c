/*
 * Elementwise math of the registry: binary and variadic arithmetic with ONNX broadcasting (Add,
 * Sub, Mul, Div, Pow, Min, Max, Sum, Mean), unary math (Sqrt, Exp, Log, Erf, Neg, Abs, Sign,
 * Reciprocal, Floor, Ceil, Round, Sin, Cos), Clip, and the conversions and copies Cast,
 * Identity and Dropout. Shape and dtype inference, attribute canonicalisation (graph/ops.h) and
 * cost. Activations are in ops_activations.c, comparisons and logic in ops_compare_logic.c.
 *
 * Dropout keeps its 'seed' (canonical: seed:i, when given); ratio and training_mode may be
 * constants or run-time inputs (a constant ratio must lie in [0, 1)); the CPU kernel
 * (backends/cpu/kernels_dropout.c) copies outside training and draws the mask in training. It is
 * never folded: a training Dropout without a seed draws a new mask per run.
 *
 * Cost: every output element costs a few FLOPs (the per-op figure below); transcendental
 * functions count LOOM_FLOPS_TRANSCENDENTAL each. Bytes are the inputs read once and the
 * outputs written once (loom_ops_cost_io); broadcasting does not re-count re-read inputs,
 * because they stay in cache for the sizes that matter.
 */

#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define T LOOM_FLOPS_TRANSCENDENTAL

static const char *const k_no_names[] = {NULL};

static const loom_attr_kind k_no_kinds[] = {LOOM_ATTR_INT}; /* unused: no names */

static loom_status infer_float_unary(loom_infer_ctx *ctx)
{
    return loom_ops_unary_no_attrs(ctx, LOOM_DTS_FLOAT);
}

static loom_status infer_signed_unary(loom_infer_ctx *ctx)
{
    return loom_ops_unary_no_attrs(ctx, LOOM_DTS_SIGNED | LOOM_DTS(LOOM_DTYPE_F64));
}

static loom_status infer_identity(loom_infer_ctx *ctx)
{
    return loom_ops_unary_no_attrs(ctx, LOOM_DTS_ALL);
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

/* Add, Sub, Mul, Div, Min and Max take every numeric dtype (float64 and the wide integers
 * too, issue 13); backends say which they run. */
#define DTS_BINARY (LOOM_DTS_ARITH | LOOM_DTS_WIDE)

static loom_status infer_arith_binary(loom_infer_ctx *ctx)
{
    return binary(ctx, DTS_BINARY);
}

/* Pow: a float, float64, int32 or int64 base X (ONNX's T); the exponent Y may be any numeric
 * dtype (T1); Z has X's dtype. */
static loom_status infer_pow(loom_infer_ctx *ctx)
{
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "X")) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "Y")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "X",
                                   LOOM_DTS_FLOAT | LOOM_DTS_INDEX |
                                       LOOM_DTS(LOOM_DTYPE_F64))) != LOOM_OK)
        return st;
    if (ctx->n_inputs != 2)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "takes 2 inputs, %u given",
                               ctx->n_inputs);
    const loom_tensor_desc *x = &ctx->inputs[0], *y = &ctx->inputs[1];
    if ((st = loom_ops_check_dtype(ctx, 1, "Y", DTS_BINARY)) != LOOM_OK)
        return st;
    loom_tensor_desc z;
    if (!loom_broadcast_shapes(x, y, &z)) {
        char a[160], b[160];
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "shapes %s and %s cannot be broadcast together (X, Y)",
                               loom_dims_format(x->rank, x->dims, a, sizeof a),
                               loom_dims_format(y->rank, y->dims, b, sizeof b));
    }
    loom_ops_set_output(ctx, 0, x->dtype, z.rank, z.dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_variadic(loom_infer_ctx *ctx)
{
    loom_status st;
    loom_tensor_desc y;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK)
        return st;
    if (ctx->n_inputs == 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "needs at least one input");
    if ((st = broadcast_inputs(ctx, 0, DTS_BINARY, NULL, &y)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, y.dtype, y.rank, y.dims);
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
        (st = loom_ops_unary_shape(ctx, LOOM_DTS_ARITH)) != LOOM_OK)
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

static void cost_copy(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 0.0); }

static void cost_one(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 1.0); }

static void cost_two(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 2.0); }

static void cost_transcendental(const loom_node_desc *n, loom_op_cost *c)
{
    loom_ops_cost_per_output(n, c, T);
}

/* N inputs take N - 1 comparisons per output element. */
static void cost_variadic(const loom_node_desc *n, loom_op_cost *c)
{
    loom_ops_cost_per_output(n, c, n->n_inputs > 1 ? (double)(n->n_inputs - 1) : 0.0);
}

#define DTS_BOOL LOOM_DTS(LOOM_DTYPE_BOOL)

static const char *shape_str(const loom_tensor_desc *d, char *buf, size_t len)
{
    return loom_dims_format(d->rank, d->dims, buf, len);
}

static loom_status infer_sign(loom_infer_ctx *ctx)
{
    return loom_ops_unary_no_attrs(ctx, LOOM_DTS_ARITH);
}

/* Broadcast every input (all required, all of input 0's dtype, which must be in MASK) into
 * *OUT. NAMES name the inputs in messages; NULL names them data_<i>. */
static loom_status broadcast_all(loom_infer_ctx *ctx, uint32_t mask, const char *const *names,
                                 loom_tensor_desc *out)
{
    loom_status st;
    char what[32];
    for (uint32_t i = 0; i < ctx->n_inputs; i++) {
        const char *name = names ? names[i] : what;
        if (!names)
            snprintf(what, sizeof what, "data_%u", i);
        if ((st = loom_ops_require(ctx, i, name)) != LOOM_OK)
            return st;
        if (i == 0) {
            if ((st = loom_ops_check_dtype(ctx, 0, name, mask)) != LOOM_OK)
                return st;
            *out = ctx->inputs[0];
            continue;
        }
        if ((st = loom_ops_same_dtype(ctx, i, name, 0)) != LOOM_OK)
            return st;
        loom_tensor_desc next;
        if (!loom_broadcast_shapes(out, &ctx->inputs[i], &next)) {
            char a[160], b[160];
            return loom_infer_fail(
                ctx, LOOM_ERR_INVALID_ARGUMENT,
                "shapes %s and %s cannot be broadcast together (input %u (%s))",
                shape_str(out, a, sizeof a), shape_str(&ctx->inputs[i], b, sizeof b), i, name);
        }
        next.dtype = out->dtype;
        *out = next;
    }
    return LOOM_OK;
}

static loom_status infer_sum_mean(loom_infer_ctx *ctx)
{
    loom_status st;
    loom_tensor_desc y;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK)
        return st;
    if (ctx->n_inputs == 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "needs at least one input");
    if ((st = broadcast_all(ctx, LOOM_DTS_FLOAT, NULL, &y)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, y.dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_dropout(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"seed", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_unary_shape(ctx, LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    if (loom_ops_has(ctx, 1)) {
        const loom_tensor_desc *r = &ctx->inputs[1];
        if ((st = loom_ops_check_dtype(ctx, 1, "ratio", LOOM_DTS_FLOAT)) != LOOM_OK)
            return st;
        if (r->rank > 1 || loom_ops_numel(r) != 1.0) {
            char s[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 1 (ratio) must be a scalar, not of shape %s",
                                   shape_str(r, s, sizeof s));
        }
        const void *rv = ctx->input_constants ? ctx->input_constants[1] : NULL;
        if (rv) {
            float ratio = loom_ops_scalar_to_float(r->dtype, rv);
            if (!(ratio >= 0.0f && ratio < 1.0f))
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "input 1 (ratio) is %g, outside [0, 1)", (double)ratio);
        }
    }
    if (loom_ops_has(ctx, 2)) {
        const loom_tensor_desc *t = &ctx->inputs[2];
        if ((st = loom_ops_check_dtype(ctx, 2, "training_mode", DTS_BOOL)) != LOOM_OK)
            return st;
        if (t->rank > 1 || loom_ops_numel(t) != 1.0) {
            char s[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 2 (training_mode) must be a scalar, not of shape %s",
                                   shape_str(t, s, sizeof s));
        }
    }
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (ctx->n_outputs > 1)
        loom_ops_set_output(ctx, 1, LOOM_DTYPE_BOOL, x->rank, x->dims);
    loom_ops_keep_only(ctx, names);
    return loom_ops_finish(ctx);
}

/* N inputs take N - 1 additions per output element (Mean one more, the scaling). */
static void cost_sum(const loom_node_desc *n, loom_op_cost *c)
{
    loom_ops_cost_per_output(n, c, n->n_inputs > 1 ? (double)(n->n_inputs - 1) : 0.0);
}

static void cost_mean(const loom_node_desc *n, loom_op_cost *c)
{
    loom_ops_cost_per_output(n, c, (double)n->n_inputs);
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_add, LOOM_OP_ADD, "Add", 2, 2, 1, 1, infer_arith_binary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_sub, LOOM_OP_SUB, "Sub", 2, 2, 1, 1, infer_arith_binary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_mul, LOOM_OP_MUL, "Mul", 2, 2, 1, 1, infer_arith_binary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_div, LOOM_OP_DIV, "Div", 2, 2, 1, 1, infer_arith_binary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_pow, LOOM_OP_POW, "Pow", 2, 2, 1, 1, infer_pow, cost_transcendental, 0);
LOOM_OPS_DEF(loom_op_def_sqrt, LOOM_OP_SQRT, "Sqrt",
             1, 1, 1, 1, infer_float_unary, cost_transcendental, 0);
LOOM_OPS_DEF(loom_op_def_exp, LOOM_OP_EXP, "Exp",
             1, 1, 1, 1, infer_float_unary, cost_transcendental, 0);
LOOM_OPS_DEF(loom_op_def_log, LOOM_OP_LOG, "Log",
             1, 1, 1, 1, infer_float_unary, cost_transcendental, 0);
LOOM_OPS_DEF(loom_op_def_erf, LOOM_OP_ERF, "Erf",
             1, 1, 1, 1, infer_float_unary, cost_transcendental, 0);
LOOM_OPS_DEF(loom_op_def_neg, LOOM_OP_NEG, "Neg", 1, 1, 1, 1, infer_signed_unary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_abs, LOOM_OP_ABS, "Abs", 1, 1, 1, 1, infer_signed_unary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_sign, LOOM_OP_SIGN, "Sign", 1, 1, 1, 1, infer_sign, cost_two, 0);
LOOM_OPS_DEF(loom_op_def_reciprocal, LOOM_OP_RECIPROCAL, "Reciprocal",
             1, 1, 1, 1, infer_float_unary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_floor, LOOM_OP_FLOOR, "Floor", 1, 1, 1, 1, infer_float_unary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_ceil, LOOM_OP_CEIL, "Ceil", 1, 1, 1, 1, infer_float_unary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_round, LOOM_OP_ROUND, "Round", 1, 1, 1, 1, infer_float_unary, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_sin, LOOM_OP_SIN, "Sin",
             1, 1, 1, 1, infer_float_unary, cost_transcendental, 0);
LOOM_OPS_DEF(loom_op_def_cos, LOOM_OP_COS, "Cos",
             1, 1, 1, 1, infer_float_unary, cost_transcendental, 0);
LOOM_OPS_DEF(loom_op_def_min, LOOM_OP_MIN, "Min",
             1, UINT32_MAX, 1, 1, infer_variadic, cost_variadic, 0);
LOOM_OPS_DEF(loom_op_def_max, LOOM_OP_MAX, "Max",
             1, UINT32_MAX, 1, 1, infer_variadic, cost_variadic, 0);
LOOM_OPS_DEF(loom_op_def_sum, LOOM_OP_SUM, "Sum", 1, UINT32_MAX, 1, 1, infer_sum_mean, cost_sum, 0);
LOOM_OPS_DEF(loom_op_def_mean, LOOM_OP_MEAN, "Mean",
             1, UINT32_MAX, 1, 1, infer_sum_mean, cost_mean, 0);
/* A lower and an upper comparison per element. */
LOOM_OPS_DEF(loom_op_def_clip, LOOM_OP_CLIP, "Clip", 1, 3, 1, 1, infer_clip, cost_two, 0);
/* A conversion per element. */
LOOM_OPS_DEF(loom_op_def_cast, LOOM_OP_CAST, "Cast", 1, 1, 1, 1, infer_cast, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_identity, LOOM_OP_IDENTITY, "Identity",
             1, 1, 1, 1, infer_identity, cost_copy, 0);
LOOM_OPS_DEF(loom_op_def_dropout, LOOM_OP_DROPOUT, "Dropout",
             1, 3, 1, 2, infer_dropout, cost_copy, LOOM_OPF_NO_FOLD);
