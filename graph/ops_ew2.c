/*
 * The ABI 0.2 elementwise, logic, shape and quantisation operators of the registry: shape and
 * dtype inference, attribute canonicalisation and cost (graph/ops.h has the contract).
 *
 * CANONICAL ATTRIBUTES of the operators defined here (after inference a node carries exactly
 * these, every default filled in, every axis non-negative):
 *   HardSigmoid          alpha:f beta:f
 *   Elu                  alpha:f
 *   Selu                 alpha:f gamma:f
 *   Shape                start:i end:i (resolved and clamped: 0 <= start <= end <= rank; the
 *                        output is int64 [end - start]); flags LOOM_OPF_SHAPE_ONLY: its kernel
 *                        never reads the input's data, which may be NULL
 *   ConstantOfShape      dtype:i (a loom_dtype; default float) value:f value_int:i. ONNX's
 *                        'value' is a one-element TENSOR attribute, a kind Loom's attributes do
 *                        not have: the importer converts it to 'dtype' plus 'value' (float
 *                        dtypes) or 'value_int' (integer and bool dtypes). Either number may be
 *                        given; inference fills in the other, so both always describe the one
 *                        fill value: value_int is authoritative for integer and bool dtypes,
 *                        value for float dtypes. Input 0 (the shape) must be a constant.
 *   QuantizeLinear,
 *   DequantizeLinear     axis:i (the axis a 1-D scale runs along; 0 when the scale has one
 *                        element, i.e. per-tensor). QuantizeLinear also accepts opset 19-21's
 *                        'saturate' (float8 only, so dropped), 'output_dtype' (0, or the
 *                        zero point's dtype) and 'block_size' (0 only); DequantizeLinear
 *                        'block_size' (0 only).
 *   QLinearConv          kernel_shape:ints[S] strides:ints[S] dilations:ints[S] pads:ints[2S]
 *                        (begins then ends; auto_pad resolved into pads) group:i
 *   HardSwish, Reciprocal, Floor, Ceil, Round, Sin, Cos, Softplus, Sign, Not, And, Or, Xor,
 *   Equal, Less, Greater, LessOrEqual, GreaterOrEqual, Sum, Mean, Range, Dropout,
 *   MatMulInteger, QLinearMatMul: no attributes (Dropout's 'seed' is accepted and dropped:
 *   inference never draws).
 * Inputs that decide shapes must be constants: ConstantOfShape's shape, Range's start, limit and
 * delta. Dropout's training_mode, when given, must be a constant false (Loom only infers); its
 * ratio is ignored. Scales and zero points may be computed at run time.
 *
 * Quantisation layouts: a scale or zero point with one element (rank 0 or [1]) is per-tensor.
 * Otherwise it is 1-D and runs along: QuantizeLinear/DequantizeLinear, x's 'axis';
 * MatMulInteger/QLinearMatMul, the rows M of A (a_*, y_*) or the columns N of B (b_*);
 * QLinearConv, the output channels M (w_scale, w_zero_point only).
 *
 * Cost: elementwise ops count a few FLOPs per output element (transcendentals
 * LOOM_FLOPS_TRANSCENDENTAL); integer GEMMs and convolutions count 2 per multiply-add.
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

#define DTS_QUANT (LOOM_DTS(LOOM_DTYPE_U8) | LOOM_DTS(LOOM_DTYPE_I8))
#define DTS_BOOL LOOM_DTS(LOOM_DTYPE_BOOL)

static void cost_per_output(const loom_node_desc *node, loom_op_cost *cost, double flops)
{
    loom_ops_cost_io(node, cost);
    cost->flops = flops * loom_ops_numel(&node->outputs[0]);
}

static const char *shape_str(const loom_tensor_desc *d, char *buf, size_t len)
{
    return loom_dims_format(d->rank, d->dims, buf, len);
}

/* ---- unary ---------------------------------------------------------------------------------- */

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

static loom_status infer_sign(loom_infer_ctx *ctx)
{
    return unary_no_attrs(ctx, LOOM_DTS_ARITH);
}

static loom_status infer_not(loom_infer_ctx *ctx)
{
    return unary_no_attrs(ctx, DTS_BOOL);
}

/* A float unary op whose float attributes NAMES (NULL-terminated) default to DEFAULTS. */
static loom_status unary_float_attrs(loom_infer_ctx *ctx, const char *const *names,
                                     const float *defaults)
{
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = unary_shape(ctx, LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    for (size_t k = 0; names[k]; k++) {
        float v = loom_infer_get_float(ctx, names[k], defaults[k]);
        if ((st = loom_infer_set_float(ctx, names[k], v)) != LOOM_OK)
            return st;
    }
    loom_ops_keep_only(ctx, names);
    return loom_ops_finish(ctx);
}

static loom_status infer_hard_sigmoid(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", "beta", NULL};
    static const float defaults[] = {0.2f, 0.5f};
    return unary_float_attrs(ctx, names, defaults);
}

static loom_status infer_elu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", NULL};
    static const float defaults[] = {1.0f};
    return unary_float_attrs(ctx, names, defaults);
}

static loom_status infer_selu(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", "gamma", NULL};
    static const float defaults[] = {1.67326319217681884765625f, 1.05070102214813232421875f};
    return unary_float_attrs(ctx, names, defaults);
}

/* ---- binary and variadic, with broadcasting ------------------------------------------------- */

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

/* Two inputs of one dtype in MASK, broadcast; the output is OUT_DTYPE, or the inputs' dtype
 * when UNDEFINED. */
static loom_status binary(loom_infer_ctx *ctx, uint32_t mask, loom_dtype out_dtype)
{
    static const char *const names[] = {"A", "B"};
    loom_status st;
    loom_tensor_desc y;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = broadcast_all(ctx, mask, names, &y)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, out_dtype ? out_dtype : y.dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_logic(loom_infer_ctx *ctx)
{
    return binary(ctx, DTS_BOOL, LOOM_DTYPE_BOOL);
}

static loom_status infer_equal(loom_infer_ctx *ctx)
{
    return binary(ctx, LOOM_DTS_ARITH | DTS_BOOL, LOOM_DTYPE_BOOL);
}

static loom_status infer_compare(loom_infer_ctx *ctx)
{
    return binary(ctx, LOOM_DTS_ARITH, LOOM_DTYPE_BOOL);
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

/* ---- Shape, ConstantOfShape, Range, Dropout ------------------------------------------------- */

static loom_status infer_shape(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"start", "end", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "data")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "data", LOOM_DTS_ALL)) != LOOM_OK)
        return st;
    const int64_t rank = ctx->inputs[0].rank;
    int64_t v[2] = {loom_infer_get_int(ctx, "start", 0), loom_infer_get_int(ctx, "end", rank)};
    /* Opset 15: negative values count from the back; both are clamped to [0, rank]. */
    for (int k = 0; k < 2; k++) {
        if (v[k] < 0)
            v[k] = v[k] < -rank ? 0 : v[k] + rank;
        if (v[k] > rank)
            v[k] = rank;
    }
    if (v[1] < v[0])
        v[1] = v[0];
    if ((st = loom_infer_set_int(ctx, "start", v[0])) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "end", v[1])) != LOOM_OK)
        return st;
    const int64_t n = v[1] - v[0];
    loom_ops_set_output(ctx, 0, LOOM_DTYPE_I64, 1, &n);
    return loom_ops_finish(ctx);
}

static int dtype_is_float(loom_dtype t)
{
    return (unsigned)t < 32 && (LOOM_DTS_FLOAT & LOOM_DTS(t));
}

static loom_status infer_constant_of_shape(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"dtype", "value", "value_int", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_FLOAT, LOOM_ATTR_INT};
    loom_status st;
    int64_t dims[LOOM_MAX_RANK];
    size_t n = 0;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_const_ints(ctx, 0, "input", LOOM_MAX_RANK, dims, &n)) != LOOM_OK)
        return st;
    for (size_t k = 0; k < n; k++)
        if (dims[k] < 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 0 (input) has a negative dimension %lld",
                                   (long long)dims[k]);
    int64_t dt = loom_infer_get_int(ctx, "dtype", LOOM_DTYPE_F32);
    if (dt <= 0 || dt >= 32 || !(LOOM_DTS_ALL & LOOM_DTS(dt)))
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "attribute 'dtype' is %lld, not a dtype Loom supports",
                               (long long)dt);
    const int has_f = loom_attr_list_get(ctx->attrs, "value") != NULL;
    const int has_i = loom_attr_list_get(ctx->attrs, "value_int") != NULL;
    float vf = loom_infer_get_float(ctx, "value", 0.0f);
    int64_t vi = loom_infer_get_int(ctx, "value_int", 0);
    if (dtype_is_float((loom_dtype)dt)) {
        if (!has_f)
            vf = (float)vi;
        /* value_int mirrors the fill value truncated; NaN and huge values have no integer. */
        vi = isfinite(vf) && fabsf(vf) < 9.2e18f ? (int64_t)vf : 0;
    } else {
        if (!has_i) {
            if (!isfinite(vf) || fabsf(vf) >= 9.2e18f)
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "attribute 'value' %g has no %s value", (double)vf,
                                       loom_dtype_name((loom_dtype)dt));
            if (vf != truncf(vf))
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "attribute 'value' %g is not an integer, but dtype is %s; "
                                       "give 'value_int'",
                                       (double)vf, loom_dtype_name((loom_dtype)dt));
            vi = (int64_t)vf;
        }
        if (dt == LOOM_DTYPE_BOOL)
            vi = vi != 0;
        vf = (float)vi;
    }
    if ((st = loom_infer_set_int(ctx, "dtype", dt)) != LOOM_OK ||
        (st = loom_infer_set_float(ctx, "value", vf)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "value_int", vi)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, (loom_dtype)dt, (uint32_t)n, dims);
    return loom_ops_finish(ctx);
}

/* Number of elements of Range(START, LIMIT, DELTA) for integers, into *N; 0 on overflow. */
static int range_count_int(int64_t start, int64_t limit, int64_t delta, int64_t *n)
{
    if ((delta > 0 && limit <= start) || (delta < 0 && limit >= start)) {
        *n = 0;
        return 1;
    }
    /* |limit - start| and |delta| as unsigned: no signed overflow for any int64 inputs. */
    uint64_t span = delta > 0 ? (uint64_t)limit - (uint64_t)start
                              : (uint64_t)start - (uint64_t)limit;
    uint64_t step = delta > 0 ? (uint64_t)delta : (uint64_t)0 - (uint64_t)delta;
    uint64_t count = span / step + (span % step != 0);
    if (count > (uint64_t)INT64_MAX)
        return 0;
    *n = (int64_t)count;
    return 1;
}

static loom_status infer_range(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"start", "limit", "delta"};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK)
        return st;
    const uint32_t mask = LOOM_DTS(LOOM_DTYPE_F32) | LOOM_DTS_INDEX;
    const void *data[3];
    for (uint32_t i = 0; i < 3; i++) {
        if ((st = loom_ops_require(ctx, i, names[i])) != LOOM_OK ||
            (st = i == 0 ? loom_ops_check_dtype(ctx, 0, names[0], mask)
                         : loom_ops_same_dtype(ctx, i, names[i], 0)) != LOOM_OK)
            return st;
        const loom_tensor_desc *d = &ctx->inputs[i];
        if (d->rank > 1 || loom_ops_numel(d) != 1.0) {
            char s[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input %u (%s) must be a scalar, not of shape %s", i,
                                   names[i], shape_str(d, s, sizeof s));
        }
        data[i] = ctx->input_constants ? ctx->input_constants[i] : NULL;
        if (!data[i])
            return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                                   "input %u (%s) must be a constant: it decides the output's "
                                   "length",
                                   i, names[i]);
    }
    const loom_dtype dt = ctx->inputs[0].dtype;
    int64_t n = 0;
    if (dt == LOOM_DTYPE_F32) {
        float v[3];
        for (int i = 0; i < 3; i++)
            memcpy(&v[i], data[i], sizeof v[i]);
        if (!isfinite(v[0]) || !isfinite(v[1]) || !isfinite(v[2]))
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "start, limit and delta must be finite (%g, %g, %g)",
                                   (double)v[0], (double)v[1], (double)v[2]);
        if (v[2] == 0.0f)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "input 2 (delta) is zero");
        /* ONNX: max(ceil((limit - start) / delta), 0), in the inputs' type. */
        float q = ceilf((v[1] - v[0]) / v[2]);
        if (!(q < 9.2e18f))
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "the range has too many elements");
        n = q > 0 ? (int64_t)q : 0;
    } else {
        int64_t v[3];
        for (int i = 0; i < 3; i++) {
            if (dt == LOOM_DTYPE_I64) {
                memcpy(&v[i], data[i], sizeof v[i]);
            } else {
                int32_t t;
                memcpy(&t, data[i], sizeof t);
                v[i] = t;
            }
        }
        if (v[2] == 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "input 2 (delta) is zero");
        if (!range_count_int(v[0], v[1], v[2], &n))
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "the range has too many elements");
    }
    loom_ops_set_output(ctx, 0, dt, 1, &n);
    return loom_ops_finish(ctx);
}

static loom_status infer_dropout(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"seed", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = unary_shape(ctx, LOOM_DTS_FLOAT)) != LOOM_OK)
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
        const uint8_t *v = ctx->input_constants ? ctx->input_constants[2] : NULL;
        if (!v)
            return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                                   "input 2 (training_mode) must be a constant false: Loom "
                                   "runs inference only");
        if (*v)
            return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                                   "training_mode is true: Loom runs inference only");
    }
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (ctx->n_outputs > 1)
        loom_ops_set_output(ctx, 1, LOOM_DTYPE_BOOL, x->rank, x->dims);
    loom_ops_keep_only(ctx, k_no_names);
    return loom_ops_finish(ctx);
}

/* ---- quantisation --------------------------------------------------------------------------- */

/* Check that input IDX (WHAT) has dtype in MASK and either one element (per-tensor) or shape
 * [LEN] (per-axis, when LEN >= 0; ALONG names what it runs along in messages). Sets *PER_AXIS. */
static loom_status quant_param(loom_infer_ctx *ctx, uint32_t idx, const char *what,
                               uint32_t mask, int64_t len, const char *along, int *per_axis)
{
    loom_status st;
    if ((st = loom_ops_require(ctx, idx, what)) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, idx, what, mask)) != LOOM_OK)
        return st;
    const loom_tensor_desc *d = &ctx->inputs[idx];
    if (d->rank <= 1 && loom_ops_numel(d) == 1.0) {
        *per_axis = 0;
        return LOOM_OK;
    }
    if (len >= 0 && d->rank == 1 && d->dims[0] == len) {
        *per_axis = 1;
        return LOOM_OK;
    }
    char s[160];
    if (len < 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input %u (%s) has shape %s; expected a scalar", idx, what,
                               shape_str(d, s, sizeof s));
    return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                           "input %u (%s) has shape %s; expected a scalar or [%lld] (%s)", idx,
                           what, shape_str(d, s, sizeof s), (long long)len, along);
}

/* Shared by QuantizeLinear and DequantizeLinear: the scale (input 1) and the optional zero point
 * (input 2, of ZP_DTYPE's dtype when given) against X's AXIS; sets the canonical axis. */
static loom_status quant_axis(loom_infer_ctx *ctx, const char *scale_name, const char *zp_name,
                              loom_dtype zp_dtype)
{
    loom_status st;
    const loom_tensor_desc *x = &ctx->inputs[0], *s = &ctx->inputs[1];
    int64_t axis = loom_infer_get_int(ctx, "axis", 1);
    if (loom_infer_get_int(ctx, "block_size", 0) != 0)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "blocked quantisation (block_size %lld) is not supported",
                               (long long)loom_infer_get_int(ctx, "block_size", 0));
    int per_axis = 0, zp_axis = 0;
    int64_t len = -1;
    if (s->rank == 1 && s->dims[0] != 1) {
        if ((st = loom_ops_axis(ctx, "axis", axis, x->rank, &axis)) != LOOM_OK)
            return st;
        len = x->dims[axis];
    } else {
        axis = 0;
    }
    char along[48];
    snprintf(along, sizeof along, "x's axis %lld", (long long)axis);
    if ((st = quant_param(ctx, 1, scale_name, LOOM_DTS(LOOM_DTYPE_F32), len, along,
                          &per_axis)) != LOOM_OK)
        return st;
    if (loom_ops_has(ctx, 2)) {
        if ((st = quant_param(ctx, 2, zp_name, LOOM_DTS(zp_dtype), len, along, &zp_axis)) !=
            LOOM_OK)
            return st;
        if (zp_axis != per_axis) {
            char a[160], b[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 2 (%s) has shape %s but the scale has shape %s",
                                   zp_name, shape_str(&ctx->inputs[2], a, sizeof a),
                                   shape_str(s, b, sizeof b));
        }
    }
    return loom_infer_set_int(ctx, "axis", axis);
}

static loom_status infer_quantize(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", "saturate", "output_dtype", "block_size", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT, LOOM_ATTR_INT,
                                           LOOM_ATTR_INT};
    static const char *const canonical[] = {"axis", NULL};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "x")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "x",
                                   LOOM_DTS(LOOM_DTYPE_F32) | LOOM_DTS(LOOM_DTYPE_I32))) !=
            LOOM_OK)
        return st;
    int64_t od = loom_infer_get_int(ctx, "output_dtype", 0);
    loom_dtype y = LOOM_DTYPE_U8;
    if (loom_ops_has(ctx, 2)) {
        if ((st = loom_ops_check_dtype(ctx, 2, "y_zero_point", DTS_QUANT)) != LOOM_OK)
            return st;
        y = ctx->inputs[2].dtype;
        if (od != 0 && od != (int64_t)y)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute 'output_dtype' (%lld) differs from y_zero_point's "
                                   "dtype %s",
                                   (long long)od, loom_dtype_name(y));
    } else if (od != 0) {
        if (od != LOOM_DTYPE_U8 && od != LOOM_DTYPE_I8)
            return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                                   "attribute 'output_dtype' is %lld; only uint8 (2) and int8 "
                                   "(3) are supported",
                                   (long long)od);
        y = (loom_dtype)od;
    }
    if ((st = quant_axis(ctx, "y_scale", "y_zero_point", y)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    loom_ops_set_output(ctx, 0, y, x->rank, x->dims);
    loom_ops_keep_only(ctx, canonical);
    return loom_ops_finish(ctx);
}

static loom_status infer_dequantize(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", "block_size", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT};
    static const char *const canonical[] = {"axis", NULL};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "x")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "x", DTS_QUANT | LOOM_DTS(LOOM_DTYPE_I32))) !=
            LOOM_OK ||
        (st = quant_axis(ctx, "x_scale", "x_zero_point", ctx->inputs[0].dtype)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    loom_ops_set_output(ctx, 0, LOOM_DTYPE_F32, x->rank, x->dims);
    loom_ops_keep_only(ctx, canonical);
    return loom_ops_finish(ctx);
}

/* numpy.matmul's shape rule for A and B into Y, with *M, *K, *N. */
static loom_status matmul_shape(loom_infer_ctx *ctx, uint32_t ia, uint32_t ib,
                                loom_tensor_desc *y, int64_t *m, int64_t *k, int64_t *n)
{
    const loom_tensor_desc *a = &ctx->inputs[ia], *b = &ctx->inputs[ib];
    char sa[160], sb[160];
    if (a->rank < 1 || b->rank < 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "matrix multiplication of a scalar (shapes %s and %s)",
                               shape_str(a, sa, sizeof sa), shape_str(b, sb, sizeof sb));
    loom_tensor_desc ab = {.rank = a->rank > 2 ? a->rank - 2 : 0};
    loom_tensor_desc bb = {.rank = b->rank > 2 ? b->rank - 2 : 0};
    for (uint32_t d = 0; d < ab.rank; d++)
        ab.dims[d] = a->dims[d];
    for (uint32_t d = 0; d < bb.rank; d++)
        bb.dims[d] = b->dims[d];
    *m = a->rank > 1 ? a->dims[a->rank - 2] : 1;
    *k = a->dims[a->rank - 1];
    int64_t kb = b->rank > 1 ? b->dims[b->rank - 2] : b->dims[0];
    *n = b->rank > 1 ? b->dims[b->rank - 1] : 1;
    if (*k != kb)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "inner dimensions %lld and %lld differ (shapes %s and %s)",
                               (long long)*k, (long long)kb, shape_str(a, sa, sizeof sa),
                               shape_str(b, sb, sizeof sb));
    loom_tensor_desc batch;
    if (!loom_broadcast_shapes(&ab, &bb, &batch))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "batch dimensions of %s and %s cannot be broadcast together",
                               shape_str(a, sa, sizeof sa), shape_str(b, sb, sizeof sb));
    *y = batch;
    if (a->rank > 1)
        y->dims[y->rank++] = *m;
    if (b->rank > 1)
        y->dims[y->rank++] = *n;
    return LOOM_OK;
}

static loom_status infer_matmul_integer(loom_infer_ctx *ctx)
{
    loom_status st;
    loom_tensor_desc y;
    int64_t m, k, n;
    int pa = 0;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "A")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "A", DTS_QUANT)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "B")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 1, "B", DTS_QUANT)) != LOOM_OK ||
        (st = matmul_shape(ctx, 0, 1, &y, &m, &k, &n)) != LOOM_OK)
        return st;
    if (loom_ops_has(ctx, 2) &&
        (st = quant_param(ctx, 2, "a_zero_point", LOOM_DTS(ctx->inputs[0].dtype), m,
                          "the rows of A", &pa)) != LOOM_OK)
        return st;
    if (loom_ops_has(ctx, 3) &&
        (st = quant_param(ctx, 3, "b_zero_point", LOOM_DTS(ctx->inputs[1].dtype), n,
                          "the columns of B", &pa)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, LOOM_DTYPE_I32, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_qlinear_matmul(loom_infer_ctx *ctx)
{
    loom_status st;
    loom_tensor_desc y;
    int64_t m, k, n;
    int pa = 0;
    const uint32_t f32 = LOOM_DTS(LOOM_DTYPE_F32);
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "a")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "a", DTS_QUANT)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 3, "b")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 3, "b", DTS_QUANT)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 7, "y_zero_point")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 7, "y_zero_point", DTS_QUANT)) != LOOM_OK ||
        (st = matmul_shape(ctx, 0, 3, &y, &m, &k, &n)) != LOOM_OK ||
        (st = quant_param(ctx, 1, "a_scale", f32, m, "the rows of a", &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 2, "a_zero_point", LOOM_DTS(ctx->inputs[0].dtype), m,
                          "the rows of a", &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 4, "b_scale", f32, n, "the columns of b", &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 5, "b_zero_point", LOOM_DTS(ctx->inputs[3].dtype), n,
                          "the columns of b", &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 6, "y_scale", f32, m, "the rows of y", &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 7, "y_zero_point", DTS_QUANT, m, "the rows of y", &pa)) !=
            LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, ctx->inputs[7].dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

static void cost_matmul_like(const loom_node_desc *node, loom_op_cost *cost, uint32_t ib)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *a = &node->inputs[0];
    double k = a->rank ? (double)a->dims[a->rank - 1] : 0.0;
    (void)ib;
    cost->flops = 2.0 * k * loom_ops_numel(&node->outputs[0]);
}

static void cost_matmul_integer(const loom_node_desc *n, loom_op_cost *c)
{
    cost_matmul_like(n, c, 1);
}

/* The GEMM, then a requantisation of about four operations per output. */
static void cost_qlinear_matmul(const loom_node_desc *n, loom_op_cost *c)
{
    cost_matmul_like(n, c, 3);
    c->flops += 4.0 * loom_ops_numel(&n->outputs[0]);
}

/* ---- QLinearConv ---------------------------------------------------------------------------- */

static loom_status conv_ints(loom_infer_ctx *ctx, const char *name, size_t count, int64_t dflt,
                             int64_t min_value, int64_t *out)
{
    const int64_t *v;
    if (!loom_attr_list_get(ctx->attrs, name)) {
        for (size_t k = 0; k < count; k++)
            out[k] = dflt;
        return LOOM_OK;
    }
    size_t n = loom_infer_get_ints(ctx, name, &v);
    if (n != count)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute '%s' has %zu values; expected %zu", name, n, count);
    for (size_t k = 0; k < count; k++) {
        if (v[k] < min_value)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute '%s' has value %lld; must be at least %lld", name,
                                   (long long)v[k], (long long)min_value);
        out[k] = v[k];
    }
    return LOOM_OK;
}

static loom_status infer_qlinear_conv(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"kernel_shape", "strides", "dilations", "pads",
                                        "auto_pad",     "group",   NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS, LOOM_ATTR_INTS,   LOOM_ATTR_INTS,
                                           LOOM_ATTR_INTS, LOOM_ATTR_STRING, LOOM_ATTR_INT};
    static const char *const canonical[] = {"kernel_shape", "strides", "dilations", "pads",
                                            "group", NULL};
    static const char *const in_names[] = {"x", "x_scale", "x_zero_point", "w",
                                           "w_scale", "w_zero_point", "y_scale", "y_zero_point",
                                           "B"};
    const uint32_t f32 = LOOM_DTS(LOOM_DTYPE_F32);
    loom_status st;
    int pa = 0;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK)
        return st;
    for (uint32_t i = 0; i < 8; i++)
        if ((st = loom_ops_require(ctx, i, in_names[i])) != LOOM_OK)
            return st;
    if ((st = loom_ops_check_dtype(ctx, 0, "x", DTS_QUANT)) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 3, "w", DTS_QUANT)) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 7, "y_zero_point", DTS_QUANT)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0], *w = &ctx->inputs[3];
    const uint32_t r = x->rank;
    char s1[160], s2[160];
    if (r < 3 || r > 5)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 0 (x) has rank %u; expected 3 to 5 ([N, C, spatial...])",
                               r);
    if (w->rank != r)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 3 (w) has shape %s; expected rank %u like x ([M, C/group, "
                               "kernel...])",
                               shape_str(w, s1, sizeof s1), r);
    const uint32_t s = r - 2;
    const int64_t c = x->dims[1], m = w->dims[0];
    int64_t group = loom_infer_get_int(ctx, "group", 1), wc;
    if (group < 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'group' is %lld; must be at least 1", (long long)group);
    if (__builtin_mul_overflow(w->dims[1], group, &wc) || wc != c)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "x has %lld channels but w expects %lld x group %lld",
                               (long long)c, (long long)w->dims[1], (long long)group);
    if (m % group != 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "w's %lld output channels are not divisible by group %lld",
                               (long long)m, (long long)group);
    if ((st = quant_param(ctx, 1, "x_scale", f32, -1, NULL, &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 2, "x_zero_point", LOOM_DTS(x->dtype), -1, NULL, &pa)) !=
            LOOM_OK ||
        (st = quant_param(ctx, 4, "w_scale", f32, m, "the output channels", &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 5, "w_zero_point", LOOM_DTS(w->dtype), m, "the output channels",
                          &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 6, "y_scale", f32, -1, NULL, &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 7, "y_zero_point", DTS_QUANT, -1, NULL, &pa)) != LOOM_OK)
        return st;
    if (loom_ops_has(ctx, 8)) {
        const loom_tensor_desc *b = &ctx->inputs[8];
        if ((st = loom_ops_check_dtype(ctx, 8, "B", LOOM_DTS(LOOM_DTYPE_I32))) != LOOM_OK)
            return st;
        if (b->rank != 1 || b->dims[0] != m)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 8 (B) has shape %s; expected [%lld]",
                                   shape_str(b, s1, sizeof s1), (long long)m);
    }
    int64_t kernel[3], strides[3], dil[3], pads[6], dims[LOOM_MAX_RANK] = {x->dims[0], m};
    for (uint32_t i = 0; i < s; i++)
        kernel[i] = w->dims[2 + i];
    if (loom_attr_list_get(ctx->attrs, "kernel_shape")) {
        const int64_t *ks;
        size_t n = loom_infer_get_ints(ctx, "kernel_shape", &ks);
        if (n != s || memcmp(ks, kernel, s * sizeof ks[0]) != 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute 'kernel_shape' %s differs from w's kernel %s",
                                   loom_dims_format((uint32_t)(n < 8 ? n : 8), ks, s1, sizeof s1),
                                   loom_dims_format(s, kernel, s2, sizeof s2));
    }
    for (uint32_t i = 0; i < s; i++)
        if (kernel[i] < 1)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "kernel size %lld along spatial axis %u must be at least 1",
                                   (long long)kernel[i], i);
    if ((st = conv_ints(ctx, "strides", s, 1, 1, strides)) != LOOM_OK ||
        (st = conv_ints(ctx, "dilations", s, 1, 1, dil)) != LOOM_OK ||
        (st = conv_ints(ctx, "pads", 2 * s, 0, 0, pads)) != LOOM_OK)
        return st;
    const char *auto_pad = loom_infer_get_string(ctx, "auto_pad", "NOTSET");
    const int upper = strcmp(auto_pad, "SAME_UPPER") == 0;
    const int lower = strcmp(auto_pad, "SAME_LOWER") == 0;
    const int valid = strcmp(auto_pad, "VALID") == 0;
    if (!upper && !lower && !valid && strcmp(auto_pad, "NOTSET") != 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'auto_pad' is '%s'; expected NOTSET, SAME_UPPER, "
                               "SAME_LOWER or VALID",
                               auto_pad);
    if (upper || lower || valid)
        for (uint32_t k = 0; k < 2 * s; k++)
            if (pads[k] != 0)
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "attribute 'pads' cannot be used with auto_pad %s",
                                       auto_pad);
    for (uint32_t i = 0; i < s; i++) {
        const int64_t in = x->dims[2 + i], st_ = strides[i];
        int64_t ek, padded;
        if (__builtin_mul_overflow(kernel[i] - 1, dil[i], &ek) ||
            __builtin_add_overflow(ek, 1, &ek))
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "kernel extent along spatial axis %u overflows", i);
        if (upper || lower) {
            const int64_t o = in / st_ + (in % st_ != 0);
            int64_t total = 0;
            if (o > 0 && (__builtin_mul_overflow(o - 1, st_, &total) ||
                          __builtin_add_overflow(total, ek - in, &total)))
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "padding along spatial axis %u overflows", i);
            if (total < 0)
                total = 0;
            pads[i] = upper ? total / 2 : total - total / 2;
            pads[s + i] = total - pads[i];
            dims[2 + i] = o;
            continue;
        }
        if (__builtin_add_overflow(in, pads[i], &padded) ||
            __builtin_add_overflow(padded, pads[s + i], &padded))
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "padded size along spatial axis %u overflows", i);
        if (padded < ek)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "kernel extent %lld is larger than the padded input %lld "
                                   "along spatial axis %u",
                                   (long long)ek, (long long)padded, i);
        dims[2 + i] = (padded - ek) / st_ + 1;
    }
    if ((st = loom_infer_set_ints(ctx, "kernel_shape", s, kernel)) != LOOM_OK ||
        (st = loom_infer_set_ints(ctx, "strides", s, strides)) != LOOM_OK ||
        (st = loom_infer_set_ints(ctx, "dilations", s, dil)) != LOOM_OK ||
        (st = loom_infer_set_ints(ctx, "pads", 2 * (size_t)s, pads)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "group", group)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, ctx->inputs[7].dtype, r, dims);
    return loom_ops_finish(ctx);
}

/* A dot product over C/group * prod(kernel) per output, plus the bias and requantisation. */
static void cost_qlinear_conv(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *w = &node->inputs[3];
    double per_out = 1.0;
    for (uint32_t k = 1; k < w->rank; k++)
        per_out *= (double)w->dims[k];
    cost->flops = loom_ops_numel(&node->outputs[0]) * (2.0 * per_out + 5.0);
}

/* ---- costs ---------------------------------------------------------------------------------- */

static void cost_copy(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, 0.0); }
static void cost_one(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, 1.0); }
static void cost_two(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, 2.0); }
static void cost_three(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, 3.0); }
static void cost_four(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, 4.0); }
static void cost_transcendental(const loom_node_desc *n, loom_op_cost *c)
{
    cost_per_output(n, c, T);
}
/* A transcendental plus a compare and a multiply or two. */
static void cost_transcendental_plus(const loom_node_desc *n, loom_op_cost *c)
{
    cost_per_output(n, c, T + 3.0);
}
/* N inputs take N - 1 additions per output element (Mean one more, the scaling). */
static void cost_sum(const loom_node_desc *n, loom_op_cost *c)
{
    cost_per_output(n, c, n->n_inputs > 1 ? (double)(n->n_inputs - 1) : 0.0);
}
static void cost_mean(const loom_node_desc *n, loom_op_cost *c)
{
    cost_per_output(n, c, (double)n->n_inputs);
}
/* Shape reads no data at all: only the descriptor. */
static void cost_shape(const loom_node_desc *n, loom_op_cost *c)
{
    loom_ops_cost_io(n, c);
    c->bytes_read = 0.0;
}
/* Outputs written, nothing read but the (tiny) shape-like inputs. */
static void cost_fill(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, 0.0); }
static void cost_range(const loom_node_desc *n, loom_op_cost *c) { cost_per_output(n, c, 2.0); }

/* ---- the definitions ------------------------------------------------------------------------ */

#define DEFX(var, opid, onnx, in_min, in_max, out_max, inf, cst, fl)                            \
    static const loom_op_def var = {.id = opid,                                                 \
                                    .name = onnx,                                               \
                                    .min_inputs = in_min,                                       \
                                    .max_inputs = in_max,                                       \
                                    .min_outputs = 1,                                           \
                                    .max_outputs = out_max,                                     \
                                    .infer = inf,                                               \
                                    .cost = cst,                                                \
                                    .flags = fl}
#define DEF(var, opid, onnx, in_min, in_max, inf, cst)                                          \
    DEFX(var, opid, onnx, in_min, in_max, 1, inf, cst, 0)

/* max(0, min(1, alpha x + beta)): a multiply-add and two comparisons. */
DEF(d_hard_sigmoid, LOOM_OP_HARD_SIGMOID, "HardSigmoid", 1, 1, infer_hard_sigmoid, cost_four);
/* x * max(0, min(1, x/6 + 1/2)). */
DEF(d_hard_swish, LOOM_OP_HARD_SWISH, "HardSwish", 1, 1, infer_float_unary, cost_four);
DEF(d_reciprocal, LOOM_OP_RECIPROCAL, "Reciprocal", 1, 1, infer_float_unary, cost_one);
DEF(d_floor, LOOM_OP_FLOOR, "Floor", 1, 1, infer_float_unary, cost_one);
DEF(d_ceil, LOOM_OP_CEIL, "Ceil", 1, 1, infer_float_unary, cost_one);
DEF(d_round, LOOM_OP_ROUND, "Round", 1, 1, infer_float_unary, cost_one);
DEF(d_sin, LOOM_OP_SIN, "Sin", 1, 1, infer_float_unary, cost_transcendental);
DEF(d_cos, LOOM_OP_COS, "Cos", 1, 1, infer_float_unary, cost_transcendental);
/* log(1 + exp(x)): two transcendentals, counted as one plus the extra work. */
DEF(d_softplus, LOOM_OP_SOFTPLUS, "Softplus", 1, 1, infer_float_unary, cost_transcendental_plus);
DEF(d_elu, LOOM_OP_ELU, "Elu", 1, 1, infer_elu, cost_transcendental_plus);
DEF(d_selu, LOOM_OP_SELU, "Selu", 1, 1, infer_selu, cost_transcendental_plus);
DEF(d_sign, LOOM_OP_SIGN, "Sign", 1, 1, infer_sign, cost_two);
DEF(d_not, LOOM_OP_NOT, "Not", 1, 1, infer_not, cost_one);
DEF(d_and, LOOM_OP_AND, "And", 2, 2, infer_logic, cost_one);
DEF(d_or, LOOM_OP_OR, "Or", 2, 2, infer_logic, cost_one);
DEF(d_xor, LOOM_OP_XOR, "Xor", 2, 2, infer_logic, cost_one);
DEF(d_equal, LOOM_OP_EQUAL, "Equal", 2, 2, infer_equal, cost_one);
DEF(d_less, LOOM_OP_LESS, "Less", 2, 2, infer_compare, cost_one);
DEF(d_greater, LOOM_OP_GREATER, "Greater", 2, 2, infer_compare, cost_one);
DEF(d_less_or_equal, LOOM_OP_LESS_OR_EQUAL, "LessOrEqual", 2, 2, infer_compare, cost_one);
DEF(d_greater_or_equal, LOOM_OP_GREATER_OR_EQUAL, "GreaterOrEqual", 2, 2, infer_compare,
    cost_one);
DEFX(d_shape, LOOM_OP_SHAPE, "Shape", 1, 1, 1, infer_shape, cost_shape, LOOM_OPF_SHAPE_ONLY);
DEF(d_constant_of_shape, LOOM_OP_CONSTANT_OF_SHAPE, "ConstantOfShape", 1, 1,
    infer_constant_of_shape, cost_fill);
DEF(d_range, LOOM_OP_RANGE, "Range", 3, 3, infer_range, cost_range);
DEFX(d_dropout, LOOM_OP_DROPOUT, "Dropout", 1, 3, 2, infer_dropout, cost_copy, 0);
DEF(d_sum, LOOM_OP_SUM, "Sum", 1, UINT32_MAX, infer_sum_mean, cost_sum);
DEF(d_mean, LOOM_OP_MEAN, "Mean", 1, UINT32_MAX, infer_sum_mean, cost_mean);
/* A divide, a rounding, an add and a clamp per element. */
DEF(d_quantize, LOOM_OP_QUANTIZE_LINEAR, "QuantizeLinear", 2, 3, infer_quantize, cost_four);
/* A subtract and a multiply (plus the conversion). */
DEF(d_dequantize, LOOM_OP_DEQUANTIZE_LINEAR, "DequantizeLinear", 2, 3, infer_dequantize,
    cost_three);
DEF(d_matmul_integer, LOOM_OP_MAT_MUL_INTEGER, "MatMulInteger", 2, 4, infer_matmul_integer,
    cost_matmul_integer);
DEF(d_qlinear_matmul, LOOM_OP_QLINEAR_MAT_MUL, "QLinearMatMul", 8, 8, infer_qlinear_matmul,
    cost_qlinear_matmul);
DEF(d_qlinear_conv, LOOM_OP_QLINEAR_CONV, "QLinearConv", 8, 9, infer_qlinear_conv,
    cost_qlinear_conv);

static const loom_op_def *const k_ew2_ops[] = {
    &d_hard_sigmoid, &d_hard_swish, &d_reciprocal, &d_floor, &d_ceil, &d_round, &d_not,
    &d_and, &d_or, &d_equal, &d_less, &d_greater, &d_shape, &d_constant_of_shape, &d_range,
    &d_dropout, &d_sum, &d_mean, &d_quantize, &d_dequantize, &d_matmul_integer,
    &d_qlinear_matmul, &d_qlinear_conv, &d_less_or_equal, &d_greater_or_equal, &d_xor, &d_sin,
    &d_cos, &d_softplus, &d_elu, &d_selu, &d_sign,
};

const loom_op_set loom_ops_ew2 = {k_ew2_ops, sizeof k_ew2_ops / sizeof k_ew2_ops[0]};
