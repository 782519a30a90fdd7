/*
 * Quantisation operators of the registry: QuantizeLinear, DequantizeLinear, MatMulInteger,
 * QLinearMatMul, QLinearConv, ConvInteger, DynamicQuantizeLinear, and Loom's MatMulInt8Dynamic
 * (what the int8-dynamic and quantized-model passes write). Shape and dtype inference, attribute
 * canonicalisation (graph/ops.h has the contract) and cost.
 *
 * CANONICAL ATTRIBUTES:
 *   QuantizeLinear,
 *   DequantizeLinear     axis:i (the axis a 1-D scale runs along; 0 when the scale has one
 *                        element, i.e. per-tensor). QuantizeLinear also accepts opset 19-21's
 *                        'saturate' (float8 only, so dropped), 'output_dtype' (0, or the
 *                        zero point's dtype) and 'block_size' (0 only); DequantizeLinear
 *                        'block_size' (0 only).
 *   QLinearConv,
 *   ConvInteger          kernel_shape:ints[S] strides:ints[S] dilations:ints[S] pads:ints[2S]
 *                        (begins then ends; auto_pad resolved into pads) group:i
 *   MatMulInteger, QLinearMatMul, DynamicQuantizeLinear: no attributes.
 *   MatMulInt8Dynamic    tensor_asymmetric:i (0: each row of A quantised symmetrically to
 *                        [-127, 127], the int8-dynamic pass's choice; 1: the whole of A
 *                        quantised as ONNX DynamicQuantizeLinear does, uint8 with a zero
 *                        point, so a fused DynamicQuantizeLinear + MatMulInteger keeps its
 *                        integer arithmetic exactly)
 *                        a_scale:f a_zero_point:i (optional, with tensor_asymmetric = 1:
 *                        static quantisation, A quantised with this fixed scale and uint8 zero
 *                        point exactly as QuantizeLinear does, instead of from its range; what
 *                        the fuse_qdq pass writes. An int8 QuantizeLinear with zero point z is
 *                        the same arithmetic with a_zero_point z + 128)
 *                        activation:s activation_alpha:f activation_beta:f (optional, kept as
 *                        given: an activation applied to the output after the bias, with the
 *                        names and parameters of the fused ops (graph/ops_fused.c); what the
 *                        int8-dynamic pass writes for MatMul + bias Add + GELU on plans the
 *                        CPU may run. Backends without an epilogue refuse a node with one)
 * Scales and zero points may be computed at run time.
 *
 * Quantisation layouts: a scale or zero point with one element (rank 0 or [1]) is per-tensor.
 * Otherwise it is 1-D and runs along: QuantizeLinear/DequantizeLinear, x's 'axis';
 * MatMulInteger/QLinearMatMul, the rows M of A (a_*, y_*) or the columns N of B (b_*);
 * QLinearConv and ConvInteger, the output channels M (w_scale, w_zero_point only).
 *
 * Cost: elementwise ops count a few FLOPs per output element; integer GEMMs and convolutions
 * count 2 per multiply-add.
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

#define DTS_QUANT (LOOM_DTS(LOOM_DTYPE_U8) | LOOM_DTS(LOOM_DTYPE_I8))

static const char *shape_str(const loom_tensor_desc *d, char *buf, size_t len)
{
    return loom_dims_format(d->rank, d->dims, buf, len);
}

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

/* DynamicQuantizeLinear (opset 11): x f32 -> y uint8 (same shape), y_scale f32 scalar,
 * y_zero_point uint8 scalar. */
static loom_status infer_dynamic_quantize(loom_infer_ctx *ctx)
{
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "x")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "x", LOOM_DTS(LOOM_DTYPE_F32))) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    loom_ops_set_output(ctx, 0, LOOM_DTYPE_U8, x->rank, x->dims);
    const int64_t scalar[1] = {1};
    loom_ops_set_output(ctx, 1, LOOM_DTYPE_F32, 0, scalar);
    loom_ops_set_output(ctx, 2, LOOM_DTYPE_U8, 0, scalar);
    return loom_ops_finish(ctx);
}

/* MatMulInt8Dynamic (Loom's own): A f32 [.., K], B int8 [K, N], b_scale f32 [N], optional
 * bias f32 [N] -> Y f32 [.., N] (attributes: the file's header). B and b_scale are what the
 * int8-dynamic pass made of constant float weights; A's rows are quantised when the node runs. */
static loom_status infer_matmul_int8_dynamic(loom_infer_ctx *ctx)
{
    loom_status st;
    const uint32_t f32 = LOOM_DTS(LOOM_DTYPE_F32);
    static const char *const names[] = {"tensor_asymmetric", "a_scale", "a_zero_point",
                                        "activation", "activation_alpha", "activation_beta",
                                        NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT,    LOOM_ATTR_FLOAT, LOOM_ATTR_INT,
                                           LOOM_ATTR_STRING, LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT};
    static const char *const acts[] = {"",          "Relu",    "LeakyRelu", "Clip",
                                       "HardSigmoid", "HardSwish", "Sigmoid", "SiLU",
                                       "Gelu",      "GeluTanh", NULL};
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "A")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "A", f32)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "B")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 1, "B", LOOM_DTS(LOOM_DTYPE_I8))) != LOOM_OK ||
        (st = loom_ops_require(ctx, 2, "b_scale")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 2, "b_scale", f32)) != LOOM_OK)
        return st;
    const loom_tensor_desc *a = &ctx->inputs[0], *b = &ctx->inputs[1], *s = &ctx->inputs[2];
    if (a->rank < 1 || b->rank != 2)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "A must have rank >= 1 and B rank 2 (got %u and %u)", a->rank,
                               b->rank);
    int64_t k = a->dims[a->rank - 1], n = b->dims[1];
    if (b->dims[0] != k)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "inner dimensions %lld (A) and %lld (B) differ", (long long)k,
                               (long long)b->dims[0]);
    if (s->rank != 1 || s->dims[0] != n)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "b_scale must be [%lld], one scale per column of B", (long long)n);
    if (loom_ops_has(ctx, 3)) {
        const loom_tensor_desc *bias = &ctx->inputs[3];
        if ((st = loom_ops_check_dtype(ctx, 3, "bias", f32)) != LOOM_OK)
            return st;
        if (bias->rank != 1 || bias->dims[0] != n)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "bias must be [%lld], one value per column of B", (long long)n);
    }
    const loom_attr *act = loom_attr_list_get(ctx->attrs, "activation");
    if (act) {
        size_t i = 0;
        while (acts[i] && strcmp(acts[i], act->s ? act->s : "") != 0)
            i++;
        if (!acts[i])
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute 'activation' is '%.40s'; expected one of Relu, "
                                   "LeakyRelu, Clip, HardSigmoid, HardSwish, Sigmoid, SiLU, "
                                   "Gelu, GeluTanh (or empty)",
                                   act->s ? act->s : "");
    }
    int64_t asym = loom_infer_get_int(ctx, "tensor_asymmetric", 0);
    if (asym != 0 && asym != 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'tensor_asymmetric' is %lld; expected 0 or 1",
                               (long long)asym);
    const int has_scale = loom_attr_list_get(ctx->attrs, "a_scale") != NULL;
    if (has_scale != (loom_attr_list_get(ctx->attrs, "a_zero_point") != NULL) ||
        (has_scale && asym != 1))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attributes 'a_scale' and 'a_zero_point' go together, with "
                               "tensor_asymmetric = 1");
    if (has_scale) {
        const float as = loom_infer_get_float(ctx, "a_scale", 0.0f);
        const int64_t az = loom_infer_get_int(ctx, "a_zero_point", 0);
        if (!(as > 0.0f) || !isfinite(as) || az < 0 || az > 255)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "a_scale %g must be positive and finite and a_zero_point "
                                   "%lld in [0, 255]",
                                   (double)as, (long long)az);
    }
    int64_t dims[LOOM_MAX_RANK];
    for (uint32_t d = 0; d + 1 < a->rank; d++)
        dims[d] = a->dims[d];
    dims[a->rank - 1] = n;
    if ((st = loom_infer_set_int(ctx, "tensor_asymmetric", asym)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, LOOM_DTYPE_F32, a->rank, dims);
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

/* QLinearConv (x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B)
 * and ConvInteger (x, w, x_zero_point, w_zero_point) share the geometry: QLINEAR says which. */
static loom_status infer_int_conv(loom_infer_ctx *ctx, int qlinear)
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
    const uint32_t iw = qlinear ? 3 : 1; /* w's input index */
    loom_status st;
    int pa = 0;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK)
        return st;
    for (uint32_t i = 0; i < (qlinear ? 8u : 2u); i++)
        if ((st = loom_ops_require(ctx, i, qlinear ? in_names[i] : i ? "w" : "x")) != LOOM_OK)
            return st;
    if ((st = loom_ops_check_dtype(ctx, 0, "x", DTS_QUANT)) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, iw, "w", DTS_QUANT)) != LOOM_OK ||
        (qlinear && (st = loom_ops_check_dtype(ctx, 7, "y_zero_point", DTS_QUANT)) != LOOM_OK))
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0], *w = &ctx->inputs[iw];
    const uint32_t r = x->rank;
    char s1[160], s2[160];
    if (r < 3 || r > 5)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 0 (x) has rank %u; expected 3 to 5 ([N, C, spatial...])",
                               r);
    if (w->rank != r)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input %u (w) has shape %s; expected rank %u like x ([M, "
                               "C/group, kernel...])",
                               iw, shape_str(w, s1, sizeof s1), r);
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
    if (!qlinear) {
        /* ConvInteger: optional zero points, x's per tensor, w's per tensor or per channel. */
        if ((loom_ops_has(ctx, 2) &&
             (st = quant_param(ctx, 2, "x_zero_point", LOOM_DTS(x->dtype), -1, NULL, &pa)) !=
                 LOOM_OK) ||
            (loom_ops_has(ctx, 3) &&
             (st = quant_param(ctx, 3, "w_zero_point", LOOM_DTS(w->dtype), m,
                               "the output channels", &pa)) != LOOM_OK))
            return st;
    } else if ((st = quant_param(ctx, 1, "x_scale", f32, -1, NULL, &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 2, "x_zero_point", LOOM_DTS(x->dtype), -1, NULL, &pa)) !=
            LOOM_OK ||
        (st = quant_param(ctx, 4, "w_scale", f32, m, "the output channels", &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 5, "w_zero_point", LOOM_DTS(w->dtype), m, "the output channels",
                          &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 6, "y_scale", f32, -1, NULL, &pa)) != LOOM_OK ||
        (st = quant_param(ctx, 7, "y_zero_point", DTS_QUANT, -1, NULL, &pa)) != LOOM_OK)
        return st;
    if (qlinear && loom_ops_has(ctx, 8)) {
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
    loom_ops_set_output(ctx, 0, qlinear ? ctx->inputs[7].dtype : LOOM_DTYPE_I32, r, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_qlinear_conv(loom_infer_ctx *ctx)
{
    return infer_int_conv(ctx, 1);
}

static loom_status infer_conv_integer(loom_infer_ctx *ctx)
{
    return infer_int_conv(ctx, 0);
}

/* A dot product over C/group * prod(kernel) per output, plus (QLinearConv) the bias and
 * requantisation, or (ConvInteger) nothing more. */
static void cost_int_conv(const loom_node_desc *node, loom_op_cost *cost, uint32_t iw,
                          double extra)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *w = &node->inputs[iw];
    double per_out = 1.0;
    for (uint32_t k = 1; k < w->rank; k++)
        per_out *= (double)w->dims[k];
    cost->flops = loom_ops_numel(&node->outputs[0]) * (2.0 * per_out + extra);
}

static void cost_qlinear_conv(const loom_node_desc *n, loom_op_cost *c)
{
    cost_int_conv(n, c, 3, 5.0);
}

static void cost_conv_integer(const loom_node_desc *n, loom_op_cost *c)
{
    cost_int_conv(n, c, 1, 0.0);
}

static void cost_three(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 3.0); }

static void cost_four(const loom_node_desc *n, loom_op_cost *c) { loom_ops_cost_per_output(n, c, 4.0); }

/* ---- the definitions ------------------------------------------------------------------------ */

/* A divide, a rounding, an add and a clamp per element. */
LOOM_OPS_DEF(loom_op_def_quantize, LOOM_OP_QUANTIZE_LINEAR, "QuantizeLinear",
             2, 3, 1, 1, infer_quantize, cost_four, 0);
/* A subtract and a multiply (plus the conversion). Not folded while a graph is built: the
 * fuse_qdq pass wants quantised weights as int8 constants, and folds the DequantizeLinear of
 * constants it does not fuse itself. */
LOOM_OPS_DEF(loom_op_def_dequantize, LOOM_OP_DEQUANTIZE_LINEAR, "DequantizeLinear",
             2, 3, 1, 1, infer_dequantize, cost_three, LOOM_OPF_NO_FOLD);
LOOM_OPS_DEF(loom_op_def_matmul_integer, LOOM_OP_MAT_MUL_INTEGER, "MatMulInteger",
             2, 4, 1, 1, infer_matmul_integer, cost_matmul_integer, 0);
LOOM_OPS_DEF(loom_op_def_matmul_int8_dynamic, LOOM_OP_MAT_MUL_INT8_DYNAMIC, "MatMulInt8Dynamic",
             3, 4, 1, 1, infer_matmul_int8_dynamic, cost_qlinear_matmul, 0);
LOOM_OPS_DEF(loom_op_def_dynamic_quantize, LOOM_OP_DYNAMIC_QUANTIZE_LINEAR,
             "DynamicQuantizeLinear", 1, 1, 3, 3, infer_dynamic_quantize, cost_four, 0);
LOOM_OPS_DEF(loom_op_def_qlinear_matmul, LOOM_OP_QLINEAR_MAT_MUL, "QLinearMatMul",
             8, 8, 1, 1, infer_qlinear_matmul, cost_qlinear_matmul, 0);
LOOM_OPS_DEF(loom_op_def_qlinear_conv, LOOM_OP_QLINEAR_CONV, "QLinearConv",
             8, 9, 1, 1, infer_qlinear_conv, cost_qlinear_conv, 0);
LOOM_OPS_DEF(loom_op_def_conv_integer, LOOM_OP_CONV_INTEGER, "ConvInteger",
             2, 4, 1, 1, infer_conv_integer, cost_conv_integer, 0);
