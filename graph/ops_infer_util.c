/*
 * Helpers shared by the operator family files (ops_defs.h): ONNX broadcasting of shapes, input
 * and dtype checks, constant shape-like inputs, axis resolution, epsilon checks, output
 * descriptors and cost accounting.
 */
#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- shapes --------------------------------------------------------------------------------- */

int loom_broadcast_shapes(const loom_tensor_desc *a, const loom_tensor_desc *b,
                          loom_tensor_desc *out)
{
    if (a->rank > LOOM_MAX_RANK || b->rank > LOOM_MAX_RANK)
        return 0;
    uint32_t rank = a->rank > b->rank ? a->rank : b->rank;
    int64_t dims[LOOM_MAX_RANK];
    /* Right-aligned: a missing leading dim acts as 1. A 1 stretches to the other side's dim,
     * including 0 (numpy: [1] with [0] gives [0]). */
    for (uint32_t k = 0; k < rank; k++) {
        int64_t da = k < rank - a->rank ? 1 : a->dims[k - (rank - a->rank)];
        int64_t db = k < rank - b->rank ? 1 : b->dims[k - (rank - b->rank)];
        if (da == db || db == 1)
            dims[k] = da;
        else if (da == 1)
            dims[k] = db;
        else
            return 0;
    }
    /* OUT may alias A or B, hence the local array. */
    out->rank = rank;
    for (uint32_t k = 0; k < LOOM_MAX_RANK; k++)
        out->dims[k] = k < rank ? dims[k] : 0;
    return 1;
}

/* ---- helpers shared by the families (ops_defs.h) -------------------------------------------- */

int loom_ops_has(const loom_infer_ctx *ctx, uint32_t idx)
{
    return idx < ctx->n_inputs && ctx->inputs[idx].dtype != LOOM_DTYPE_UNDEFINED;
}

loom_status loom_ops_require(loom_infer_ctx *ctx, uint32_t idx, const char *what)
{
    if (!loom_ops_has(ctx, idx))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "input %u (%s) is required",
                               idx, what);
    return LOOM_OK;
}

/* "float, float16, bfloat16" for a dtype set, for messages. */
static const char *dtype_set_format(uint32_t mask, char *buf, size_t len)
{
    static const loom_dtype all[] = {LOOM_DTYPE_F32, LOOM_DTYPE_F16, LOOM_DTYPE_BF16,
                                     LOOM_DTYPE_I8,  LOOM_DTYPE_U8,  LOOM_DTYPE_I32,
                                     LOOM_DTYPE_I64, LOOM_DTYPE_BOOL, LOOM_DTYPE_F64,
                                     LOOM_DTYPE_I16, LOOM_DTYPE_U16, LOOM_DTYPE_U32,
                                     LOOM_DTYPE_U64};
    size_t used = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        if (!(mask & LOOM_DTS(all[k])) || used >= len)
            continue;
        int w = snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
                         loom_dtype_name(all[k]));
        used = w < 0 ? len : used + (size_t)w;
    }
    return buf;
}

loom_status loom_ops_check_dtype(loom_infer_ctx *ctx, uint32_t idx, const char *what,
                                 uint32_t mask)
{
    loom_dtype dt = ctx->inputs[idx].dtype;
    if (idx == 0 && ctx->probe_input0) { /* loom_op_input0_dtypes: record, then stop */
        *ctx->probe_input0 = mask;
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED, "dtype probe");
    }
    if ((unsigned)dt < 32 && (mask & LOOM_DTS(dt)))
        return LOOM_OK;
    char set[128];
    return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                           "input %u (%s) has dtype %s; expected one of: %s", idx, what,
                           loom_dtype_name(dt), dtype_set_format(mask, set, sizeof set));
}

loom_status loom_ops_same_dtype(loom_infer_ctx *ctx, uint32_t idx, const char *what, uint32_t ref)
{
    if (ctx->inputs[idx].dtype == ctx->inputs[ref].dtype)
        return LOOM_OK;
    return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                           "dtype mismatch: input %u (%s) is %s but input %u is %s", idx, what,
                           loom_dtype_name(ctx->inputs[idx].dtype), ref,
                           loom_dtype_name(ctx->inputs[ref].dtype));
}

loom_status loom_ops_axis(loom_infer_ctx *ctx, const char *what, int64_t axis, int64_t rank,
                          int64_t *out)
{
    if (rank <= 0 || axis < -rank || axis >= rank) {
        if (rank <= 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "%s %lld is out of range: the input is a scalar", what,
                                   (long long)axis);
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "%s %lld is out of range for rank %lld (expected %lld..%lld)",
                               what, (long long)axis, (long long)rank, (long long)-rank,
                               (long long)(rank - 1));
    }
    *out = axis < 0 ? axis + rank : axis;
    return LOOM_OK;
}

loom_status loom_ops_const_ints(loom_infer_ctx *ctx, uint32_t idx, const char *what, size_t cap,
                                int64_t *out, size_t *count)
{
    if (!loom_ops_has(ctx, idx))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "input %u (%s) is required",
                               idx, what);
    const loom_tensor_desc *d = &ctx->inputs[idx];
    const void *data = ctx->input_constants ? ctx->input_constants[idx] : NULL;
    /* Valid ONNX that Loom cannot run: shapes are static, so this is unsupported, not wrong. */
    if (!data) {
        ctx->need_constant = idx + 1;
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "input %u (%s) must be a constant", idx, what);
    }
    if (d->dtype != LOOM_DTYPE_I64 && d->dtype != LOOM_DTYPE_I32)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input %u (%s) must be int64 or int32, not %s", idx, what,
                               loom_dtype_name(d->dtype));
    /* ONNX says 1-D; a scalar is read as one value, which is what every user means by it. */
    if (d->rank > 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input %u (%s) must be 1-D, not of rank %u", idx, what, d->rank);
    int64_t n = d->rank ? d->dims[0] : 1;
    if (n < 0 || (uint64_t)n > cap)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input %u (%s) has %lld values, more than the %zu allowed", idx,
                               what, (long long)n, cap);
    for (int64_t k = 0; k < n; k++)
        out[k] = d->dtype == LOOM_DTYPE_I64 ? ((const int64_t *)data)[k]
                                            : ((const int32_t *)data)[k];
    *count = (size_t)n;
    return LOOM_OK;
}

void loom_ops_set_output(loom_infer_ctx *ctx, uint32_t idx, loom_dtype dtype, uint32_t rank,
                         const int64_t *dims)
{
    loom_tensor_desc *o = &ctx->outputs[idx];
    o->dtype = dtype;
    o->rank = rank;
    for (uint32_t k = 0; k < LOOM_MAX_RANK; k++)
        o->dims[k] = k < rank ? dims[k] : 0;
}


loom_status loom_ops_finish(loom_infer_ctx *ctx)
{
    for (uint32_t i = 0; i < ctx->n_outputs; i++) {
        const loom_tensor_desc *o = &ctx->outputs[i];
        if (!loom_dims_numel_checked(o->rank, o->dims, loom_dtype_size(o->dtype), NULL)) {
            char shape[256];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "output %u would have shape %s: its element count "
                                   "overflows (dimension product too large)",
                                   i, loom_dims_format(o->rank, o->dims, shape, sizeof shape));
        }
    }
    return LOOM_OK;
}

loom_status loom_ops_epsilon(loom_infer_ctx *ctx, float default_value, float *eps)
{
    float e = loom_infer_get_float(ctx, "epsilon", default_value);
    if (!(e >= 0.0f) || isinf(e))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'epsilon' is %g; expected a finite number >= 0",
                               (double)e);
    *eps = e;
    return loom_infer_set_float(ctx, "epsilon", e);
}

/* IEEE half to float, exact (every half is a float). */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    float f;
    if (exp == 0)
        f = ldexpf((float)man, -24); /* zero and subnormals */
    else if (exp == 31)
        f = man ? NAN : INFINITY;
    else
        f = ldexpf((float)(man | 0x400u), (int)exp - 25);
    return sign ? -f : f;
}

float loom_ops_scalar_to_float(loom_dtype dtype, const void *data)
{
    switch (dtype) {
    case LOOM_DTYPE_F32: {
        float v;
        memcpy(&v, data, sizeof v);
        return v;
    }
    case LOOM_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, data, sizeof h);
        return half_to_float(h);
    }
    case LOOM_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, data, sizeof h);
        uint32_t bits = (uint32_t)h << 16;
        float v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    case LOOM_DTYPE_U8: return (float)*(const uint8_t *)data;
    case LOOM_DTYPE_I8: return (float)*(const int8_t *)data;
    case LOOM_DTYPE_BOOL: return *(const uint8_t *)data ? 1.0f : 0.0f;
    case LOOM_DTYPE_I32: {
        int32_t v;
        memcpy(&v, data, sizeof v);
        return (float)v;
    }
    case LOOM_DTYPE_I64: {
        int64_t v;
        memcpy(&v, data, sizeof v);
        return (float)v;
    }
    default: return 0.0f;
    }
}

double loom_ops_numel(const loom_tensor_desc *desc)
{
    if (desc->dtype == LOOM_DTYPE_UNDEFINED)
        return 0.0;
    double n = 1.0;
    for (uint32_t k = 0; k < desc->rank; k++)
        n *= (double)desc->dims[k];
    return n;
}

void loom_ops_cost_io(const loom_node_desc *node, loom_op_cost *cost)
{
    cost->flops = 0.0;
    cost->bytes_read = 0.0;
    cost->bytes_written = 0.0;
    for (uint32_t i = 0; i < node->n_inputs; i++)
        cost->bytes_read +=
            loom_ops_numel(&node->inputs[i]) * (double)loom_dtype_size(node->inputs[i].dtype);
    for (uint32_t i = 0; i < node->n_outputs; i++)
        cost->bytes_written +=
            loom_ops_numel(&node->outputs[i]) * (double)loom_dtype_size(node->outputs[i].dtype);
}

void loom_ops_cost_per_output(const loom_node_desc *node, loom_op_cost *cost, double flops)
{
    loom_ops_cost_io(node, cost);
    cost->flops = flops * loom_ops_numel(&node->outputs[0]);
}

loom_status loom_ops_unary_shape(loom_infer_ctx *ctx, uint32_t mask)
{
    loom_status st;
    if ((st = loom_ops_require(ctx, 0, "X")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "X", mask)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return LOOM_OK;
}

loom_status loom_ops_unary_no_attrs(loom_infer_ctx *ctx, uint32_t mask)
{
    static const char *const no_names[] = {NULL};
    static const loom_attr_kind no_kinds[] = {LOOM_ATTR_INT}; /* unused: no names */
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, no_names, no_kinds)) != LOOM_OK ||
        (st = loom_ops_unary_shape(ctx, mask)) != LOOM_OK)
        return st;
    return loom_ops_finish(ctx);
}
