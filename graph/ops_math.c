/*
 * Elementwise math of the registry added for operator coverage (issue 13): the trigonometric
 * and hyperbolic functions (Tan, Asin, Acos, Atan, Sinh, Cosh, Asinh, Acosh, Atanh), the
 * activations Softsign, ThresholdedRelu, Shrink and Celu, the tests IsNaN and IsInf, and the
 * binary Mod and BitShift (ONNX multidirectional broadcasting). Shape and dtype inference,
 * attribute canonicalisation and cost.
 *
 * CANONICAL ATTRIBUTES:
 *   ThresholdedRelu      alpha:f
 *   Shrink               bias:f lambd:f
 *   Celu                 alpha:f
 *   IsInf                detect_negative:i detect_positive:i
 *   Mod                  fmod:i (1 for floats: C's fmod; 0: the sign of the divisor, as Python)
 *   BitShift             direction:s ("LEFT" | "RIGHT")
 *   the others           none
 */
#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <stdint.h>
#include <string.h>

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

#define DTS_UNSIGNED LOOM_DTS_UNSIGNED
#define DTS_NUMERIC (LOOM_DTS_ARITH | LOOM_DTS_WIDE)

static const char *const k_none[] = {NULL};
static const loom_attr_kind k_none_kinds[] = {LOOM_ATTR_INT};

/* One input of a dtype in MASK, one output of its dtype and shape (OUT_DT: another dtype). */
static loom_status unary(loom_infer_ctx *ctx, uint32_t mask, loom_dtype out_dt)
{
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", mask));
    const loom_tensor_desc *x = &ctx->inputs[0];
    loom_ops_set_output(ctx, 0, out_dt ? out_dt : x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_float_fn(loom_infer_ctx *ctx)
{
    TRY(loom_infer_check_attrs(ctx, k_none, k_none_kinds));
    return unary(ctx, LOOM_DTS_FLOAT, LOOM_DTYPE_UNDEFINED);
}

/* Canonicalise float attribute NAME (default DEF). */
static loom_status float_attr(loom_infer_ctx *ctx, const char *name, float def)
{
    return loom_infer_set_float(ctx, name, loom_infer_get_float(ctx, name, def));
}

static loom_status infer_thresholded_relu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(float_attr(ctx, "alpha", 1.0f));
    return unary(ctx, LOOM_DTS_FLOAT, LOOM_DTYPE_UNDEFINED);
}

static loom_status infer_celu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    if (loom_infer_get_float(ctx, "alpha", 1.0f) == 0.0f)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "alpha must not be 0");
    TRY(float_attr(ctx, "alpha", 1.0f));
    return unary(ctx, LOOM_DTS(LOOM_DTYPE_F32), LOOM_DTYPE_UNDEFINED);
}

static loom_status infer_shrink(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"bias", "lambd", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(float_attr(ctx, "bias", 0.0f));
    TRY(float_attr(ctx, "lambd", 0.5f));
    return unary(ctx, DTS_NUMERIC, LOOM_DTYPE_UNDEFINED);
}

static loom_status infer_isnan(loom_infer_ctx *ctx)
{
    TRY(loom_infer_check_attrs(ctx, k_none, k_none_kinds));
    return unary(ctx, LOOM_DTS_FLOAT, LOOM_DTYPE_BOOL);
}

static loom_status infer_isinf(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"detect_negative", "detect_positive", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_infer_set_int(ctx, "detect_negative",
                           loom_infer_get_int(ctx, "detect_negative", 1) != 0));
    TRY(loom_infer_set_int(ctx, "detect_positive",
                           loom_infer_get_int(ctx, "detect_positive", 1) != 0));
    return unary(ctx, LOOM_DTS_FLOAT, LOOM_DTYPE_BOOL);
}

/* Two inputs of one dtype in MASK, broadcast. */
static loom_status binary(loom_infer_ctx *ctx, uint32_t mask)
{
    TRY(loom_ops_require(ctx, 0, "A"));
    TRY(loom_ops_require(ctx, 1, "B"));
    TRY(loom_ops_check_dtype(ctx, 0, "A", mask));
    TRY(loom_ops_same_dtype(ctx, 1, "B", 0));
    loom_tensor_desc y;
    if (!loom_broadcast_shapes(&ctx->inputs[0], &ctx->inputs[1], &y))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "inputs 0 and 1 do not broadcast to one shape");
    loom_ops_set_output(ctx, 0, ctx->inputs[0].dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_mod(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"fmod", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    int fmod = loom_infer_get_int(ctx, "fmod", 0) != 0;
    if (loom_ops_has(ctx, 0) && (LOOM_DTS(ctx->inputs[0].dtype) & (LOOM_DTS_FLOAT | LOOM_DTS(LOOM_DTYPE_F64))) &&
        !fmod)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "fmod must be 1 for floating-point inputs (%s)",
                               loom_dtype_name(ctx->inputs[0].dtype));
    TRY(loom_infer_set_int(ctx, "fmod", fmod));
    return binary(ctx, DTS_NUMERIC);
}

static loom_status infer_bitshift(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"direction", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_STRING};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    const char *dir = loom_infer_get_string(ctx, "direction", NULL);
    if (!dir || (strcmp(dir, "LEFT") && strcmp(dir, "RIGHT")))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "direction must be LEFT or RIGHT, not '%s'", dir ? dir : "");
    TRY(loom_infer_set_string(ctx, "direction", dir));
    return binary(ctx, DTS_UNSIGNED);
}

static void cost_one(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->outputs[0]);
}

static void cost_libm(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = LOOM_FLOPS_TRANSCENDENTAL * loom_ops_numel(&node->outputs[0]);
}

#define FLOAT_FN(var, id, name)                                                                    \
    LOOM_OPS_DEF(var, id, name, 1, 1, 1, 1, infer_float_fn, cost_libm, 0)

FLOAT_FN(loom_op_def_tan, LOOM_OP_TAN, "Tan");
FLOAT_FN(loom_op_def_asin, LOOM_OP_ASIN, "Asin");
FLOAT_FN(loom_op_def_acos, LOOM_OP_ACOS, "Acos");
FLOAT_FN(loom_op_def_atan, LOOM_OP_ATAN, "Atan");
FLOAT_FN(loom_op_def_sinh, LOOM_OP_SINH, "Sinh");
FLOAT_FN(loom_op_def_cosh, LOOM_OP_COSH, "Cosh");
FLOAT_FN(loom_op_def_asinh, LOOM_OP_ASINH, "Asinh");
FLOAT_FN(loom_op_def_acosh, LOOM_OP_ACOSH, "Acosh");
FLOAT_FN(loom_op_def_atanh, LOOM_OP_ATANH, "Atanh");
LOOM_OPS_DEF(loom_op_def_softsign, LOOM_OP_SOFTSIGN, "Softsign",
             1, 1, 1, 1, infer_float_fn, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_thresholded_relu, LOOM_OP_THRESHOLDED_RELU, "ThresholdedRelu",
             1, 1, 1, 1, infer_thresholded_relu, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_shrink, LOOM_OP_SHRINK, "Shrink", 1, 1, 1, 1, infer_shrink, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_celu, LOOM_OP_CELU, "Celu", 1, 1, 1, 1, infer_celu, cost_libm, 0);
LOOM_OPS_DEF(loom_op_def_isnan, LOOM_OP_IS_NAN, "IsNaN", 1, 1, 1, 1, infer_isnan, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_isinf, LOOM_OP_IS_INF, "IsInf", 1, 1, 1, 1, infer_isinf, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_mod, LOOM_OP_MOD, "Mod", 2, 2, 1, 1, infer_mod, cost_one, 0);
LOOM_OPS_DEF(loom_op_def_bitshift, LOOM_OP_BIT_SHIFT, "BitShift",
             2, 2, 1, 1, infer_bitshift, cost_one, 0);
