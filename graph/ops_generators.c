/*
 * Operators that make tensors from shapes and scalars: Shape, ConstantOfShape, Range and the
 * window generators HannWindow, HammingWindow and BlackmanWindow. Shape
 * and dtype inference, attribute canonicalisation and cost.
 *
 * CANONICAL ATTRIBUTES:
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
 *   Range: no attributes.
 *   HannWindow, HammingWindow, BlackmanWindow  output_datatype:i (a loom_dtype; default float)
 *                        periodic:i size:i (from input 0, which must be a constant scalar;
 *                        the output is [size])
 * Inputs that decide shapes must be constants: ConstantOfShape's shape, Range's start, limit and
 * delta.
 */

#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const char *const k_no_names[] = {NULL};

static const loom_attr_kind k_no_kinds[] = {LOOM_ATTR_INT}; /* unused: no names */

static const char *shape_str(const loom_tensor_desc *d, char *buf, size_t len)
{
    return loom_dims_format(d->rank, d->dims, buf, len);
}

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
        if (!data[i] && (ctx->need_constant = i + 1))
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

/* Shape reads no data at all: only the descriptor. */
static void cost_shape(const loom_node_desc *n, loom_op_cost *c)
{
    loom_ops_cost_io(n, c);
    c->bytes_read = 0.0;
}

/* Outputs written, nothing read but the (tiny) shape-like inputs. */
static void cost_fill(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 0.0); }

static void cost_range(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 2.0); }

static loom_status infer_window(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"output_datatype", "periodic", "size", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT, LOOM_ATTR_INT};
    loom_status st;
    int64_t size = 0;
    size_t n = 0;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "size")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "size", LOOM_DTS_INDEX)) != LOOM_OK ||
        (st = loom_ops_const_ints(ctx, 0, "size", 1, &size, &n)) != LOOM_OK)
        return st;
    if (n != 1 || ctx->inputs[0].rank > 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "input 0 (size) must be a scalar");
    if (size < 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "size %lld is negative",
                               (long long)size);
    int64_t dt = loom_infer_get_int(ctx, "output_datatype", LOOM_DTYPE_F32);
    if (dt <= 0 || dt >= 32 || !((LOOM_DTS_ARITH | LOOM_DTS_WIDE) & LOOM_DTS(dt)))
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "output_datatype %lld is not a numeric dtype Loom supports",
                               (long long)dt);
    if ((st = loom_infer_set_int(ctx, "output_datatype", dt)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "periodic",
                                 loom_infer_get_int(ctx, "periodic", 1) != 0)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "size", size)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, (loom_dtype)dt, 1, &size);
    return loom_ops_finish(ctx);
}

/* A cosine or two per output. */
static void cost_window(const loom_node_desc *n, loom_op_cost *c)
{
    loom_ops_cost_per_output(n, c, 2.0 * LOOM_FLOPS_TRANSCENDENTAL);
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_shape, LOOM_OP_SHAPE, "Shape",
             1, 1, 1, 1, infer_shape, cost_shape, LOOM_OPF_SHAPE_ONLY);
LOOM_OPS_DEF(loom_op_def_constant_of_shape, LOOM_OP_CONSTANT_OF_SHAPE, "ConstantOfShape",
             1, 1, 1, 1, infer_constant_of_shape, cost_fill, 0);
LOOM_OPS_DEF(loom_op_def_range, LOOM_OP_RANGE, "Range", 3, 3, 1, 1, infer_range, cost_range, 0);
LOOM_OPS_DEF(loom_op_def_hann_window, LOOM_OP_HANN_WINDOW, "HannWindow", 1, 1, 1, 1, infer_window,
             cost_window, 0);
LOOM_OPS_DEF(loom_op_def_hamming_window, LOOM_OP_HAMMING_WINDOW, "HammingWindow", 1, 1, 1, 1,
             infer_window, cost_window, 0);
LOOM_OPS_DEF(loom_op_def_blackman_window, LOOM_OP_BLACKMAN_WINDOW, "BlackmanWindow", 1, 1, 1, 1,
             infer_window, cost_window, 0);
