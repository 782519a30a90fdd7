/*
 * Neural-network operators of the registry: MatMul, Gemm, Conv, the pools, Softmax, the
 * normalisations and the reductions. Shape and dtype inference, attribute canonicalisation
 * (graph/ops.h lists the canonical attributes) and cost.
 *
 * Cost: a multiply-add counts 2 FLOPs, a comparison or an add 1, a transcendental function
 * LOOM_FLOPS_TRANSCENDENTAL. Bytes are each input read once and each output written once,
 * as if weights and re-read windows stayed in cache: the cost model corrects for the device.
 */
#include "ops_defs.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define T LOOM_FLOPS_TRANSCENDENTAL

static const char *const k_no_names[] = {NULL};
static const loom_attr_kind k_no_kinds[] = {LOOM_ATTR_INT}; /* unused: no names */

/* ---- MatMul and Gemm ------------------------------------------------------------------------ */

/* numpy matmul: a 1-D A is a row [1, K] and a 1-D B a column [K, 1], the promoted dim being
 * dropped from the result; every leading dim is a batch dim and broadcasts. */
static loom_status infer_matmul(loom_infer_ctx *ctx)
{
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "A")) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "B")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "A", LOOM_DTS_FLOAT | LOOM_DTS_INDEX)) != LOOM_OK ||
        (st = loom_ops_same_dtype(ctx, 1, "B", 0)) != LOOM_OK)
        return st;
    const loom_tensor_desc *a = &ctx->inputs[0], *b = &ctx->inputs[1];
    if (a->rank == 0 || b->rank == 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input %d (%s) is a scalar; MatMul needs rank 1 or more",
                               a->rank == 0 ? 0 : 1, a->rank == 0 ? "A" : "B");
    int64_t ka = a->dims[a->rank - 1];
    int64_t kb = b->rank >= 2 ? b->dims[b->rank - 2] : b->dims[0];
    if (ka != kb) {
        char sa[160], sb[160];
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "inner dimensions %lld and %lld differ (shapes %s and %s)",
                               (long long)ka, (long long)kb,
                               loom_dims_format(a->rank, a->dims, sa, sizeof sa),
                               loom_dims_format(b->rank, b->dims, sb, sizeof sb));
    }
    loom_tensor_desc ba = {.rank = a->rank > 2 ? a->rank - 2 : 0};
    loom_tensor_desc bb = {.rank = b->rank > 2 ? b->rank - 2 : 0};
    memcpy(ba.dims, a->dims, ba.rank * sizeof ba.dims[0]);
    memcpy(bb.dims, b->dims, bb.rank * sizeof bb.dims[0]);
    loom_tensor_desc y;
    if (!loom_broadcast_shapes(&ba, &bb, &y)) {
        char sa[160], sb[160];
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "batch dimensions %s and %s cannot be broadcast together",
                               loom_dims_format(ba.rank, ba.dims, sa, sizeof sa),
                               loom_dims_format(bb.rank, bb.dims, sb, sizeof sb));
    }
    /* The batch part has at most LOOM_MAX_RANK - 2 dims, so M and N always fit. */
    if (a->rank >= 2)
        y.dims[y.rank++] = a->dims[a->rank - 2];
    if (b->rank >= 2)
        y.dims[y.rank++] = b->dims[b->rank - 1];
    loom_ops_set_output(ctx, 0, a->dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

/* 2 * |Y| * K: each output element is a dot product of length K. */
static void cost_matmul(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *a = &node->inputs[0];
    cost->flops = 2.0 * loom_ops_numel(&node->outputs[0]) * (double)a->dims[a->rank - 1];
}

static loom_status infer_gemm(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", "beta", "transA", "transB", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT, LOOM_ATTR_INT,
                                           LOOM_ATTR_INT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "A")) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "B")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "A", LOOM_DTS_FLOAT | LOOM_DTS_INDEX)) != LOOM_OK ||
        (st = loom_ops_same_dtype(ctx, 1, "B", 0)) != LOOM_OK)
        return st;
    const loom_tensor_desc *a = &ctx->inputs[0], *b = &ctx->inputs[1];
    for (uint32_t i = 0; i < 2; i++)
        if (ctx->inputs[i].rank != 2)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input %u (%s) must be 2-D, not of rank %u", i,
                                   i ? "B" : "A", ctx->inputs[i].rank);
    int trans_a = loom_infer_get_int(ctx, "transA", 0) != 0;
    int trans_b = loom_infer_get_int(ctx, "transB", 0) != 0;
    int64_t m = a->dims[trans_a ? 1 : 0], ka = a->dims[trans_a ? 0 : 1];
    int64_t kb = b->dims[trans_b ? 1 : 0], n = b->dims[trans_b ? 0 : 1];
    if (ka != kb)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "inner dimensions %lld and %lld differ (transA=%d, transB=%d)",
                               (long long)ka, (long long)kb, trans_a, trans_b);
    loom_tensor_desc y = {.dtype = a->dtype, .rank = 2, .dims = {m, n}};
    if (loom_ops_has(ctx, 2)) {
        /* C broadcasts one way only: to [M, N], never the other way round. */
        loom_tensor_desc bc;
        const loom_tensor_desc *c = &ctx->inputs[2];
        if ((st = loom_ops_same_dtype(ctx, 2, "C", 0)) != LOOM_OK)
            return st;
        if (!loom_broadcast_shapes(c, &y, &bc) || bc.rank != 2 || bc.dims[0] != m ||
            bc.dims[1] != n) {
            char sc[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 2 (C) of shape %s does not broadcast to [%lld, %lld]",
                                   loom_dims_format(c->rank, c->dims, sc, sizeof sc),
                                   (long long)m, (long long)n);
        }
    }
    if ((st = loom_infer_set_float(ctx, "alpha", loom_infer_get_float(ctx, "alpha", 1.0f))) !=
            LOOM_OK ||
        (st = loom_infer_set_float(ctx, "beta", loom_infer_get_float(ctx, "beta", 1.0f))) !=
            LOOM_OK ||
        (st = loom_infer_set_int(ctx, "transA", trans_a)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "transB", trans_b)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, names);
    loom_ops_set_output(ctx, 0, y.dtype, 2, y.dims);
    return loom_ops_finish(ctx);
}

/* 2 * M * N * K, plus a multiply-add per output element for beta * C. */
static void cost_gemm(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *a = &node->inputs[0];
    double k = (double)a->dims[loom_node_attr_int(node, "transA", 0) ? 0 : 1];
    double mn = loom_ops_numel(&node->outputs[0]);
    int has_c = node->n_inputs > 2 && node->inputs[2].dtype != LOOM_DTYPE_UNDEFINED;
    cost->flops = 2.0 * mn * k + (has_c ? 2.0 * mn : 0.0);
}

/* ---- windows: Conv and the pools ------------------------------------------------------------ */

typedef struct window {
    uint32_t s; /* spatial dims */
    int64_t kernel[3], strides[3], dilations[3], pads[6];
    int ceil_mode;
} window;

/* Ints attribute NAME of exactly COUNT values into OUT, or DEFAULT_VALUE everywhere when absent.
 * Values must be >= MIN_VALUE. */
static loom_status window_ints(loom_infer_ctx *ctx, const char *name, size_t count,
                               int64_t default_value, int64_t min_value, int64_t *out)
{
    const int64_t *v;
    const loom_attr *a = loom_attr_list_get(ctx->attrs, name);
    size_t n = loom_infer_get_ints(ctx, name, &v);
    if (!a) {
        for (size_t k = 0; k < count; k++)
            out[k] = default_value;
        return LOOM_OK;
    }
    if (n != count)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute '%s' has %zu values; expected %zu for %s", name, n,
                               count,
                               strcmp(name, "pads") == 0 ? "the begins and ends of each "
                                                           "spatial axis"
                                                         : "one per spatial axis");
    for (size_t k = 0; k < count; k++) {
        if (v[k] < min_value)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute '%s' has value %lld; must be at least %lld", name,
                                   (long long)v[k], (long long)min_value);
        out[k] = v[k];
    }
    return LOOM_OK;
}

/* Read strides, dilations, pads and auto_pad for W->s spatial dims of X (W->kernel and
 * W->ceil_mode already set), resolve auto_pad into W->pads, and write the output's spatial dims
 * into OUT. Afterwards W holds the canonical attributes; ceil_mode is cleared when auto_pad
 * chose the output size, since the canonical pads then reproduce it with floor rounding. */
static loom_status window_resolve(loom_infer_ctx *ctx, const loom_tensor_desc *x, window *w,
                                  int64_t *out)
{
    loom_status st;
    const uint32_t s = w->s;
    for (uint32_t i = 0; i < s; i++)
        if (w->kernel[i] < 1)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "kernel size %lld along spatial axis %u must be at least 1",
                                   (long long)w->kernel[i], i);
    if ((st = window_ints(ctx, "strides", s, 1, 1, w->strides)) != LOOM_OK ||
        (st = window_ints(ctx, "dilations", s, 1, 1, w->dilations)) != LOOM_OK ||
        (st = window_ints(ctx, "pads", 2 * s, 0, 0, w->pads)) != LOOM_OK)
        return st;
    const char *auto_pad = loom_infer_get_string(ctx, "auto_pad", "NOTSET");
    int same_upper = strcmp(auto_pad, "SAME_UPPER") == 0;
    int same_lower = strcmp(auto_pad, "SAME_LOWER") == 0;
    int valid = strcmp(auto_pad, "VALID") == 0;
    if (!same_upper && !same_lower && !valid && strcmp(auto_pad, "NOTSET") != 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'auto_pad' is '%s'; expected NOTSET, SAME_UPPER, "
                               "SAME_LOWER or VALID",
                               auto_pad);
    if (same_upper || same_lower || valid) {
        for (uint32_t k = 0; k < 2 * s; k++)
            if (w->pads[k] != 0)
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "attribute 'pads' cannot be used with auto_pad %s",
                                       auto_pad);
    }
    for (uint32_t i = 0; i < s; i++) {
        int64_t in = x->dims[2 + i], st_ = w->strides[i], ek, padded, o;
        /* Effective kernel extent with dilation: (k - 1) * d + 1. */
        if (__builtin_mul_overflow(w->kernel[i] - 1, w->dilations[i], &ek) ||
            __builtin_add_overflow(ek, 1, &ek))
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "kernel extent along spatial axis %u overflows", i);
        if (same_upper || same_lower) {
            o = in / st_ + (in % st_ != 0);
            int64_t total = 0;
            if (o > 0 && (__builtin_mul_overflow(o - 1, st_, &total) ||
                          __builtin_add_overflow(total, ek - in, &total)))
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "padding along spatial axis %u overflows", i);
            if (total < 0)
                total = 0;
            /* The odd pixel goes at the end for SAME_UPPER, at the beginning for SAME_LOWER. */
            w->pads[i] = same_upper ? total / 2 : total - total / 2;
            w->pads[s + i] = total - w->pads[i];
            w->ceil_mode = 0;
            out[i] = o;
            continue;
        }
        if (valid)
            w->ceil_mode = 0;
        if (__builtin_add_overflow(in, w->pads[i], &padded) ||
            __builtin_add_overflow(padded, w->pads[s + i], &padded))
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "padded size along spatial axis %u overflows", i);
        if (padded < ek)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "kernel extent %lld is larger than the padded input %lld "
                                   "along spatial axis %u",
                                   (long long)ek, (long long)padded, i);
        if (w->ceil_mode) {
            o = (padded - ek) / st_ + ((padded - ek) % st_ != 0) + 1;
            /* PyTorch's rule, adopted by ONNX 1.16: the last window must start inside the input
             * or its leading padding, never wholly in the trailing padding. */
            int64_t last_start;
            if (__builtin_mul_overflow(o - 1, st_, &last_start) ||
                last_start >= in + w->pads[i])
                o--;
        } else {
            o = (padded - ek) / st_ + 1;
        }
        out[i] = o;
    }
    return LOOM_OK;
}

/* X is [N, C, spatial...] with 1 to 3 spatial dims. */
static loom_status window_input(loom_infer_ctx *ctx, uint32_t *s)
{
    loom_status st;
    if ((st = loom_ops_require(ctx, 0, "X")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    uint32_t r = ctx->inputs[0].rank;
    if (r < 3 || r > 5)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 0 (X) has rank %u; expected 3 to 5 ([N, C, spatial...])",
                               r);
    *s = r - 2;
    return LOOM_OK;
}

static loom_status window_set(loom_infer_ctx *ctx, const window *w)
{
    loom_status st;
    if ((st = loom_infer_set_ints(ctx, "kernel_shape", w->s, w->kernel)) != LOOM_OK ||
        (st = loom_infer_set_ints(ctx, "strides", w->s, w->strides)) != LOOM_OK ||
        (st = loom_infer_set_ints(ctx, "dilations", w->s, w->dilations)) != LOOM_OK ||
        (st = loom_infer_set_ints(ctx, "pads", 2 * (size_t)w->s, w->pads)) != LOOM_OK)
        return st;
    return LOOM_OK;
}

static loom_status infer_conv(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"kernel_shape", "strides", "dilations", "pads",
                                        "auto_pad",     "group",   NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS, LOOM_ATTR_INTS,   LOOM_ATTR_INTS,
                                           LOOM_ATTR_INTS, LOOM_ATTR_STRING, LOOM_ATTR_INT};
    static const char *const canonical[] = {"kernel_shape", "strides", "dilations", "pads",
                                            "group", NULL};
    loom_status st;
    window w = {0};
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = window_input(ctx, &w.s)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "W")) != LOOM_OK ||
        (st = loom_ops_same_dtype(ctx, 1, "W", 0)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0], *wt = &ctx->inputs[1];
    if (wt->rank != x->rank)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 1 (W) has rank %u; expected %u like X ([M, C/group, "
                               "kernel...])",
                               wt->rank, x->rank);
    int64_t group = loom_infer_get_int(ctx, "group", 1), wc;
    if (group < 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'group' is %lld; must be at least 1", (long long)group);
    int64_t c = x->dims[1], m = wt->dims[0];
    if (__builtin_mul_overflow(wt->dims[1], group, &wc) || wc != c)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "X has %lld channels but W expects %lld x group %lld",
                               (long long)c, (long long)wt->dims[1], (long long)group);
    if (m % group != 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "W's %lld output channels are not divisible by group %lld",
                               (long long)m, (long long)group);
    for (uint32_t i = 0; i < w.s; i++)
        w.kernel[i] = wt->dims[2 + i];
    const int64_t *ks;
    if (loom_attr_list_get(ctx->attrs, "kernel_shape")) {
        size_t n = loom_infer_get_ints(ctx, "kernel_shape", &ks);
        if (n != w.s || memcmp(ks, w.kernel, w.s * sizeof ks[0]) != 0) {
            char a[160], b[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute 'kernel_shape' %s differs from W's kernel %s",
                                   loom_dims_format((uint32_t)(n < 8 ? n : 8), ks, a, sizeof a),
                                   loom_dims_format(w.s, w.kernel, b, sizeof b));
        }
    }
    if (loom_ops_has(ctx, 2)) {
        const loom_tensor_desc *b = &ctx->inputs[2];
        if ((st = loom_ops_same_dtype(ctx, 2, "B", 0)) != LOOM_OK)
            return st;
        if (b->rank != 1 || b->dims[0] != m) {
            char sb[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 2 (B) has shape %s; expected [%lld]",
                                   loom_dims_format(b->rank, b->dims, sb, sizeof sb),
                                   (long long)m);
        }
    }
    int64_t dims[LOOM_MAX_RANK] = {x->dims[0], m};
    if ((st = window_resolve(ctx, x, &w, dims + 2)) != LOOM_OK ||
        (st = window_set(ctx, &w)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "group", group)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    return loom_ops_finish(ctx);
}

/* Each output element is a dot product over C/group * prod(kernel) inputs, plus the bias. */
static void cost_conv(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *w = &node->inputs[1];
    double per_out = 1.0;
    for (uint32_t k = 1; k < w->rank; k++)
        per_out *= (double)w->dims[k];
    int has_b = node->n_inputs > 2 && node->inputs[2].dtype != LOOM_DTYPE_UNDEFINED;
    cost->flops = loom_ops_numel(&node->outputs[0]) * (2.0 * per_out + (has_b ? 1.0 : 0.0));
}

static loom_status infer_pool(loom_infer_ctx *ctx, int average)
{
    static const char *const max_names[] = {"kernel_shape", "strides",   "dilations",
                                            "pads",         "auto_pad",  "ceil_mode",
                                            "storage_order", NULL};
    static const loom_attr_kind max_kinds[] = {LOOM_ATTR_INTS,   LOOM_ATTR_INTS, LOOM_ATTR_INTS,
                                               LOOM_ATTR_INTS,   LOOM_ATTR_STRING,
                                               LOOM_ATTR_INT,    LOOM_ATTR_INT};
    static const char *const avg_names[] = {"kernel_shape", "strides",   "dilations",
                                            "pads",         "auto_pad",  "ceil_mode",
                                            "count_include_pad", NULL};
    static const loom_attr_kind avg_kinds[] = {LOOM_ATTR_INTS,   LOOM_ATTR_INTS, LOOM_ATTR_INTS,
                                               LOOM_ATTR_INTS,   LOOM_ATTR_STRING,
                                               LOOM_ATTR_INT,    LOOM_ATTR_INT};
    static const char *const max_canon[] = {"kernel_shape", "strides", "dilations", "pads",
                                            "ceil_mode", NULL};
    static const char *const avg_canon[] = {"kernel_shape", "strides",   "dilations",
                                            "pads",         "ceil_mode", "count_include_pad",
                                            NULL};
    loom_status st;
    window w = {0};
    if ((st = loom_infer_check_attrs(ctx, average ? avg_names : max_names,
                                     average ? avg_kinds : max_kinds)) != LOOM_OK ||
        (st = window_input(ctx, &w.s)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (!loom_attr_list_get(ctx->attrs, "kernel_shape"))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'kernel_shape' is required");
    /* storage_order only shapes the Indices output, which Loom does not produce. */
    if ((st = window_ints(ctx, "kernel_shape", w.s, 1, 1, w.kernel)) != LOOM_OK)
        return st;
    w.ceil_mode = loom_infer_get_int(ctx, "ceil_mode", 0) != 0;
    int count_include_pad = loom_infer_get_int(ctx, "count_include_pad", 0) != 0;
    int64_t dims[LOOM_MAX_RANK] = {x->dims[0], x->dims[1]};
    if ((st = window_resolve(ctx, x, &w, dims + 2)) != LOOM_OK ||
        (st = window_set(ctx, &w)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "ceil_mode", w.ceil_mode)) != LOOM_OK)
        return st;
    if (average && (st = loom_infer_set_int(ctx, "count_include_pad", count_include_pad)) !=
                       LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, average ? avg_canon : max_canon);
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_max_pool(loom_infer_ctx *ctx) { return infer_pool(ctx, 0); }
static loom_status infer_average_pool(loom_infer_ctx *ctx) { return infer_pool(ctx, 1); }

/* A comparison (MaxPool) or an add (AveragePool) per window element, AveragePool a divide per
 * output. */
static void cost_pool(const loom_node_desc *node, loom_op_cost *cost, double extra)
{
    loom_ops_cost_io(node, cost);
    const loom_attr *k = loom_node_attr(node, "kernel_shape");
    double window = 1.0;
    for (size_t i = 0; k && k->kind == LOOM_ATTR_INTS && i < k->count; i++)
        window *= (double)k->ints[i];
    cost->flops = loom_ops_numel(&node->outputs[0]) * (window + extra);
}

static void cost_max_pool(const loom_node_desc *n, loom_op_cost *c) { cost_pool(n, c, 0.0); }
static void cost_average_pool(const loom_node_desc *n, loom_op_cost *c) { cost_pool(n, c, 1.0); }

static loom_status infer_global_average_pool(loom_infer_ctx *ctx)
{
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "X")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank < 3)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 0 (X) has rank %u; expected at least 3 ([N, C, "
                               "spatial...])",
                               x->rank);
    int64_t dims[LOOM_MAX_RANK];
    for (uint32_t k = 0; k < x->rank; k++)
        dims[k] = k < 2 ? x->dims[k] : 1;
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    return loom_ops_finish(ctx);
}

/* An add per input element and a divide per output. */
static void cost_global_average_pool(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]) + loom_ops_numel(&node->outputs[0]);
}

/* ---- Softmax and the normalisations --------------------------------------------------------- */

static loom_status infer_softmax(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    loom_status st;
    int64_t axis;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "input")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "input", LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if ((st = loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", -1), x->rank, &axis)) !=
            LOOM_OK ||
        (st = loom_infer_set_int(ctx, "axis", axis)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

/* Per element: the max, a subtract, an exp, the sum and a multiply by the reciprocal. */
static void cost_softmax(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]) * (T + 4.0);
}

/* Whether P's dims, leading 1s dropped, equal the dims of X from AXIS on, leading 1s dropped:
 * then P has exactly one element per normalised position, laid out the same way. */
static int same_trailing(const loom_tensor_desc *p, const loom_tensor_desc *x, uint32_t axis)
{
    uint32_t i = 0, j = axis;
    while (i < p->rank && p->dims[i] == 1)
        i++;
    while (j < x->rank && x->dims[j] == 1)
        j++;
    if (p->rank - i != x->rank - j)
        return 0;
    for (; i < p->rank; i++, j++)
        if (p->dims[i] != x->dims[j])
            return 0;
    return 1;
}

static loom_status infer_layer_norm(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"axis", "epsilon", "stash_type", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_FLOAT, LOOM_ATTR_INT};
    static const char *const canonical[] = {"axis", "epsilon", NULL};
    static const char *const inputs[] = {"X", "Scale", "B"};
    loom_status st;
    int64_t axis;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "X")) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "Scale")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if ((st = loom_ops_axis(ctx, "axis", loom_infer_get_int(ctx, "axis", -1), x->rank, &axis)) !=
        LOOM_OK)
        return st;
    /* stash_type is the precision of the statistics; kernels keep them in f32 at least, which
     * is what stash_type=1 asks for, and no less than any other value does. */
    int64_t stash = loom_infer_get_int(ctx, "stash_type", 1);
    if (stash != LOOM_DTYPE_F32 && stash != LOOM_DTYPE_F16 && stash != LOOM_DTYPE_BF16)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'stash_type' is %lld; expected a float dtype",
                               (long long)stash);
    for (uint32_t i = 1; i <= 2; i++) {
        if (!loom_ops_has(ctx, i))
            continue;
        if ((st = loom_ops_same_dtype(ctx, i, inputs[i], 0)) != LOOM_OK)
            return st;
        if (!same_trailing(&ctx->inputs[i], x, (uint32_t)axis)) {
            char a[160], b[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input %u (%s) has shape %s; expected X's dims from axis "
                                   "%lld, %s",
                                   i, inputs[i],
                                   loom_dims_format(ctx->inputs[i].rank, ctx->inputs[i].dims, a,
                                                    sizeof a),
                                   (long long)axis,
                                   loom_dims_format(x->rank - (uint32_t)axis,
                                                    x->dims + axis, b, sizeof b));
        }
    }
    float eps = loom_infer_get_float(ctx, "epsilon", 1e-5f);
    if ((st = loom_infer_set_int(ctx, "axis", axis)) != LOOM_OK ||
        (st = loom_infer_set_float(ctx, "epsilon", eps)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    /* Mean and InvStdDev keep X's rank with 1s from AXIS on; their type U is float for the
     * stash_type Loom computes in. */
    int64_t stat[LOOM_MAX_RANK];
    for (uint32_t k = 0; k < x->rank; k++)
        stat[k] = k < (uint32_t)axis ? x->dims[k] : 1;
    for (uint32_t o = 1; o < ctx->n_outputs && o < 3; o++)
        loom_ops_set_output(ctx, o, LOOM_DTYPE_F32, x->rank, stat);
    return loom_ops_finish(ctx);
}

/* Per element: mean and variance (3), normalise (2), scale and bias (2), and slack (1). */
static void cost_layer_norm(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]) * 8.0;
}

static loom_status infer_batch_norm(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"epsilon", "momentum", "training_mode", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT, LOOM_ATTR_INT};
    static const char *const canonical[] = {"epsilon", NULL};
    static const char *const inputs[] = {"X", "scale", "B", "input_mean", "input_var"};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK)
        return st;
    for (uint32_t i = 0; i < 5; i++)
        if ((st = loom_ops_require(ctx, i, inputs[i])) != LOOM_OK)
            return st;
    if ((st = loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    /* momentum only matters when training, which Loom does not do. */
    if (loom_infer_get_int(ctx, "training_mode", 0) != 0)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "training_mode=1 is not supported: Loom runs inference only");
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank < 2)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 0 (X) has rank %u; expected at least 2 ([N, C, ...])",
                               x->rank);
    for (uint32_t i = 1; i < 5; i++) {
        const loom_tensor_desc *p = &ctx->inputs[i];
        /* ONNX lets the parameters have their own float type; Loom's kernels read them in X's,
         * which is what every exporter writes. */
        if ((st = loom_ops_same_dtype(ctx, i, inputs[i], 0)) != LOOM_OK)
            return st;
        if (p->rank != 1 || p->dims[0] != x->dims[1]) {
            char sp[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input %u (%s) has shape %s; expected [%lld] (X's channels)",
                                   i, inputs[i], loom_dims_format(p->rank, p->dims, sp, sizeof sp),
                                   (long long)x->dims[1]);
        }
    }
    if ((st = loom_infer_set_float(ctx, "epsilon", loom_infer_get_float(ctx, "epsilon", 1e-5f))) !=
        LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

/* A multiply-add per element once scale, bias and the statistics are folded per channel. */
static void cost_batch_norm(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]) * 2.0;
}

/* ---- reductions ----------------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Axes come from constant input 1 (opset 18) or the 'axes' attribute (earlier opsets, and the
 * canonical form); the input wins when both are there. No axes reduce everything, unless
 * noop_with_empty_axes makes the node an identity (canonical: an empty 'axes'). */
static loom_status infer_reduce(loom_infer_ctx *ctx, uint32_t mask)
{
    static const char *const names[] = {"axes", "keepdims", "noop_with_empty_axes", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS, LOOM_ATTR_INT, LOOM_ATTR_INT};
    static const char *const canonical[] = {"axes", "keepdims", NULL};
    loom_status st;
    int64_t axes[LOOM_MAX_RANK];
    size_t n = 0;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "data")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "data", mask)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (loom_ops_has(ctx, 1)) {
        if ((st = loom_ops_const_ints(ctx, 1, "axes", LOOM_MAX_RANK, axes, &n)) != LOOM_OK)
            return st;
    } else {
        const int64_t *v;
        n = loom_infer_get_ints(ctx, "axes", &v);
        if (n > LOOM_MAX_RANK)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute 'axes' has %zu values, more than the maximum "
                                   "rank %d",
                                   n, LOOM_MAX_RANK);
        for (size_t k = 0; k < n; k++)
            axes[k] = v[k];
    }
    /* A present but empty 'axes' attribute is the canonical form of noop_with_empty_axes=1, so
     * that a canonical node infers to itself. */
    int noop = loom_infer_get_int(ctx, "noop_with_empty_axes", 0) != 0 ||
               (!loom_ops_has(ctx, 1) && loom_attr_list_get(ctx->attrs, "axes") != NULL);
    int keepdims = loom_infer_get_int(ctx, "keepdims", 1) != 0;
    if (n == 0 && !noop) {
        n = x->rank;
        for (size_t k = 0; k < n; k++)
            axes[k] = (int64_t)k;
    }
    int reduced[LOOM_MAX_RANK] = {0};
    for (size_t k = 0; k < n; k++) {
        if ((st = loom_ops_axis(ctx, "axes entry", axes[k], x->rank, &axes[k])) != LOOM_OK)
            return st;
        if (reduced[axes[k]])
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "axis %lld appears twice in axes", (long long)axes[k]);
        reduced[axes[k]] = 1;
    }
    qsort(axes, n, sizeof axes[0], cmp_i64);
    int64_t dims[LOOM_MAX_RANK];
    uint32_t rank = 0;
    for (uint32_t k = 0; k < x->rank; k++) {
        if (!reduced[k])
            dims[rank++] = x->dims[k];
        else if (keepdims)
            dims[rank++] = 1;
    }
    if ((st = loom_infer_set_ints(ctx, "axes", n, axes)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "keepdims", keepdims)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, rank, dims);
    return loom_ops_finish(ctx);
}

static loom_status infer_reduce_sum_mean(loom_infer_ctx *ctx)
{
    return infer_reduce(ctx, LOOM_DTS_FLOAT | LOOM_DTS_INDEX);
}

static loom_status infer_reduce_max(loom_infer_ctx *ctx)
{
    return infer_reduce(ctx, LOOM_DTS_ARITH);
}

/* An add or comparison per input element; ReduceMean a divide per output. */
static void cost_reduce(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]);
    if (node->op == LOOM_OP_REDUCE_MEAN)
        cost->flops += loom_ops_numel(&node->outputs[0]);
}

/* ---- the definitions ------------------------------------------------------------------------ */

#define DEF(var, opid, onnx, in_min, in_max, out_max, inf, cst)                                \
    const loom_op_def var = {.id = opid,                                                       \
                             .name = onnx,                                                     \
                             .min_inputs = in_min,                                             \
                             .max_inputs = in_max,                                             \
                             .min_outputs = 1,                                                 \
                             .max_outputs = out_max,                                           \
                             .infer = inf,                                                     \
                             .cost = cst}

DEF(loom_op_def_matmul, LOOM_OP_MATMUL, "MatMul", 2, 2, 1, infer_matmul, cost_matmul);
DEF(loom_op_def_gemm, LOOM_OP_GEMM, "Gemm", 2, 3, 1, infer_gemm, cost_gemm);
DEF(loom_op_def_conv, LOOM_OP_CONV, "Conv", 2, 3, 1, infer_conv, cost_conv);
/* MaxPool's optional Indices output is not supported: exactly one output. */
DEF(loom_op_def_max_pool, LOOM_OP_MAX_POOL, "MaxPool", 1, 1, 1, infer_max_pool, cost_max_pool);
DEF(loom_op_def_average_pool, LOOM_OP_AVERAGE_POOL, "AveragePool", 1, 1, 1, infer_average_pool,
    cost_average_pool);
DEF(loom_op_def_global_average_pool, LOOM_OP_GLOBAL_AVERAGE_POOL, "GlobalAveragePool", 1, 1, 1,
    infer_global_average_pool, cost_global_average_pool);
DEF(loom_op_def_softmax, LOOM_OP_SOFTMAX, "Softmax", 1, 1, 1, infer_softmax, cost_softmax);
DEF(loom_op_def_layer_normalization, LOOM_OP_LAYER_NORMALIZATION, "LayerNormalization", 2, 3, 3,
    infer_layer_norm, cost_layer_norm);
/* Inference form only: the running statistics outputs of training are not produced. */
DEF(loom_op_def_batch_normalization, LOOM_OP_BATCH_NORMALIZATION, "BatchNormalization", 5, 5, 1,
    infer_batch_norm, cost_batch_norm);
DEF(loom_op_def_reduce_mean, LOOM_OP_REDUCE_MEAN, "ReduceMean", 1, 2, 1, infer_reduce_sum_mean,
    cost_reduce);
DEF(loom_op_def_reduce_sum, LOOM_OP_REDUCE_SUM, "ReduceSum", 1, 2, 1, infer_reduce_sum_mean,
    cost_reduce);
DEF(loom_op_def_reduce_max, LOOM_OP_REDUCE_MAX, "ReduceMax", 1, 2, 1, infer_reduce_max,
    cost_reduce);
