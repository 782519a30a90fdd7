/*
 * Sliding-window operators of the registry: Conv, ConvTranspose, MaxPool, AveragePool,
 * GlobalAveragePool, GlobalMaxPool and MaxUnpool. Shape and dtype inference, attribute
 * canonicalisation (auto_pad resolved into pads; graph/ops.h) and cost. QLinearConv is in
 * ops_quantization.c.
 *
 * CANONICAL ATTRIBUTES (besides Conv's and the pools', in graph/ops.h):
 *   ConvTranspose        kernel_shape:ints[S] strides:ints[S] dilations:ints[S] pads:ints[2S]
 *                        output_padding:ints[S] group:i. auto_pad and output_shape are resolved
 *                        into pads (begins then ends), which may then be NEGATIVE: a negative
 *                        pad grows the output by zero-contribution rows (output_shape larger
 *                        than the natural size). Y[s] gets X[i] * W[k] where
 *                        s = i * stride - pad_begin + k * dilation.
 *   MaxPool              (graph/ops.h) and, with its second output (Indices, int64, flat
 *                        indices into X), storage_order:i (0 row-major, 1 column-major spatial
 *                        order). X may also be int8 or uint8.
 *   GlobalMaxPool        (none)
 *   MaxUnpool            kernel_shape:ints[S] strides:ints[S] pads:ints[2S]; the output's
 *                        shape comes from input 2 (output_shape, which must then be a
 *                        constant) or is (in - 1) * stride + kernel - pad_begin - pad_end.
 *                        Input 2 is ignored by kernels.
 */

#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_no_names[] = {NULL};

static const loom_attr_kind k_no_kinds[] = {LOOM_ATTR_INT}; /* unused: no names */

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

/* X is [N, C, spatial...] with 1 to 3 spatial dims, of a dtype in MASK. */
static loom_status window_input_of(loom_infer_ctx *ctx, uint32_t *s, uint32_t mask)
{
    loom_status st;
    if ((st = loom_ops_require(ctx, 0, "X")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "X", mask)) != LOOM_OK)
        return st;
    uint32_t r = ctx->inputs[0].rank;
    if (r < 3 || r > 5)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 0 (X) has rank %u; expected 3 to 5 ([N, C, spatial...])",
                               r);
    *s = r - 2;
    return LOOM_OK;
}

static loom_status window_input(loom_infer_ctx *ctx, uint32_t *s)
{
    return window_input_of(ctx, s, LOOM_DTS_FLOAT);
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
                                            "ceil_mode", "storage_order", NULL};
    static const char *const avg_canon[] = {"kernel_shape", "strides",   "dilations",
                                            "pads",         "ceil_mode", "count_include_pad",
                                            NULL};
    loom_status st;
    window w = {0};
    if ((st = loom_infer_check_attrs(ctx, average ? avg_names : max_names,
                                     average ? avg_kinds : max_kinds)) != LOOM_OK ||
        (st = window_input_of(ctx, &w.s,
                              average ? LOOM_DTS_FLOAT
                                      : LOOM_DTS_FLOAT | LOOM_DTS(LOOM_DTYPE_U8) |
                                            LOOM_DTS(LOOM_DTYPE_I8))) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (!loom_attr_list_get(ctx->attrs, "kernel_shape"))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'kernel_shape' is required");
    /* storage_order only shapes the Indices output: kept (0 or 1) when it is asked for. */
    const int64_t storage_order = loom_infer_get_int(ctx, "storage_order", 0);
    if (storage_order != 0 && storage_order != 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "storage_order is %lld; expected 0 or 1",
                               (long long)storage_order);
    const int indices = !average && ctx->n_outputs > 1;
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
    if (indices && (st = loom_infer_set_int(ctx, "storage_order", storage_order)) != LOOM_OK)
        return st;
    if (!indices)
        loom_infer_remove(ctx, "storage_order");
    loom_ops_keep_only(ctx, average ? avg_canon : max_canon);
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    if (indices)
        loom_ops_set_output(ctx, 1, LOOM_DTYPE_I64, x->rank, dims);
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

/* A comparison per input element. */
static void cost_global_max_pool(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]);
}

static loom_status infer_max_unpool(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"kernel_shape", "pads", "strides", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS, LOOM_ATTR_INTS, LOOM_ATTR_INTS};
    loom_status st;
    uint32_t s = 0;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = window_input(ctx, &s)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "I")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 1, "I", LOOM_DTS(LOOM_DTYPE_I64))) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0], *ix = &ctx->inputs[1];
    int same = ix->rank == x->rank;
    for (uint32_t k = 0; same && k < x->rank; k++)
        same = ix->dims[k] == x->dims[k];
    if (!same)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input 1 (I) must have the shape of input 0 (X)");
    if (!loom_attr_list_get(ctx->attrs, "kernel_shape"))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "attribute 'kernel_shape' is required");
    int64_t kern[3], strides[3], pads[6];
    if ((st = window_ints(ctx, "kernel_shape", s, 1, 1, kern)) != LOOM_OK ||
        (st = window_ints(ctx, "strides", s, 1, 1, strides)) != LOOM_OK ||
        (st = window_ints(ctx, "pads", 2 * s, 0, 0, pads)) != LOOM_OK)
        return st;
    int64_t dims[LOOM_MAX_RANK] = {x->dims[0], x->dims[1]};
    for (uint32_t k = 0; k < s; k++) {
        dims[2 + k] = (x->dims[2 + k] - 1) * strides[k] + kern[k] - pads[k] - pads[s + k];
        if (dims[2 + k] < 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "spatial axis %u has a negative output size", k);
    }
    if (loom_ops_has(ctx, 2)) {
        int64_t shape[LOOM_MAX_RANK];
        size_t n = 0;
        if ((st = loom_ops_const_ints(ctx, 2, "output_shape", LOOM_MAX_RANK, shape, &n)) !=
            LOOM_OK)
            return st;
        if (n != x->rank || shape[0] != x->dims[0] || shape[1] != x->dims[1])
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 2 (output_shape) must be [N, C, spatial...] of X's N "
                                   "and C");
        for (uint32_t k = 0; k < s; k++) {
            if (shape[2 + k] < dims[2 + k])
                return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                       "output_shape %lld is smaller than the unpooled %lld",
                                       (long long)shape[2 + k], (long long)dims[2 + k]);
            dims[2 + k] = shape[2 + k];
        }
    }
    if ((st = loom_infer_set_ints(ctx, "kernel_shape", s, kern)) != LOOM_OK ||
        (st = loom_infer_set_ints(ctx, "strides", s, strides)) != LOOM_OK ||
        (st = loom_infer_set_ints(ctx, "pads", 2 * s, pads)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    return loom_ops_finish(ctx);
}

/* A zero per output and a store per input. */
static void cost_max_unpool(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    cost->flops = loom_ops_numel(&node->inputs[0]);
}

#define INVALID LOOM_ERR_INVALID_ARGUMENT

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

/* Python's floor division by 2, for paddings that may be negative. */
static int64_t floor_half(int64_t v)
{
    return v >= 0 ? v / 2 : -((-v + 1) / 2);
}

/* Ints attribute NAME with exactly COUNT values, each >= MIN_VALUE, or DEF everywhere. */
static loom_status ints_attr(loom_infer_ctx *ctx, const char *name, size_t count, int64_t def,
                             int64_t min_value, int64_t *out)
{
    const int64_t *v;
    if (!loom_attr_list_get(ctx->attrs, name)) {
        for (size_t k = 0; k < count; k++)
            out[k] = def;
        return LOOM_OK;
    }
    size_t n = loom_infer_get_ints(ctx, name, &v);
    if (n != count)
        return loom_infer_fail(ctx, INVALID, "%s must have %zu values, got %zu", name, count, n);
    for (size_t k = 0; k < count; k++) {
        if (v[k] < min_value)
            return loom_infer_fail(ctx, INVALID, "%s has value %lld; must be at least %lld",
                                   name, (long long)v[k], (long long)min_value);
        out[k] = v[k];
    }
    return LOOM_OK;
}

static int is_one_of(const char *s, const char *const *set)
{
    for (size_t k = 0; set[k]; k++)
        if (strcmp(s, set[k]) == 0)
            return 1;
    return 0;
}

static loom_status infer_conv_transpose(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"kernel_shape", "strides",        "dilations",
                                        "pads",         "auto_pad",       "group",
                                        "output_padding", "output_shape", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INTS, LOOM_ATTR_INTS,   LOOM_ATTR_INTS,
                                           LOOM_ATTR_INTS, LOOM_ATTR_STRING, LOOM_ATTR_INT,
                                           LOOM_ATTR_INTS, LOOM_ATTR_INTS};
    static const char *const canonical[] = {"kernel_shape", "strides", "dilations", "pads",
                                            "output_padding", "group", NULL};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_require(ctx, 1, "W"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT));
    TRY(loom_ops_same_dtype(ctx, 1, "W", 0));
    const loom_tensor_desc *x = &ctx->inputs[0], *w = &ctx->inputs[1];
    if (x->rank < 3 || x->rank > 5)
        return loom_infer_fail(ctx, INVALID,
                               "input 0 (X) has rank %u; expected 3 to 5 ([N, C, spatial...])",
                               x->rank);
    if (w->rank != x->rank)
        return loom_infer_fail(ctx, INVALID,
                               "input 1 (W) has rank %u; expected %u like X ([C, M/group, "
                               "kernel...])",
                               w->rank, x->rank);
    const uint32_t s = x->rank - 2;
    int64_t group = loom_infer_get_int(ctx, "group", 1);
    if (group < 1)
        return loom_infer_fail(ctx, INVALID, "group is %lld; must be at least 1",
                               (long long)group);
    if (w->dims[0] != x->dims[1])
        return loom_infer_fail(ctx, INVALID, "X has %lld channels but W has %lld input channels",
                               (long long)x->dims[1], (long long)w->dims[0]);
    if (x->dims[1] % group != 0)
        return loom_infer_fail(ctx, INVALID, "X's %lld channels are not divisible by group %lld",
                               (long long)x->dims[1], (long long)group);
    int64_t m;
    if (__builtin_mul_overflow(w->dims[1], group, &m))
        return loom_infer_fail(ctx, INVALID, "output channels overflow");
    int64_t kernel[3], strides[3], dil[3], pads[6], opad[3], out[3];
    for (uint32_t i = 0; i < s; i++)
        kernel[i] = w->dims[2 + i];
    if (loom_attr_list_get(ctx->attrs, "kernel_shape")) {
        const int64_t *ks;
        size_t n = loom_infer_get_ints(ctx, "kernel_shape", &ks);
        if (n != s || memcmp(ks, kernel, s * sizeof *ks) != 0)
            return loom_infer_fail(ctx, INVALID, "kernel_shape differs from W's kernel dims");
    }
    TRY(ints_attr(ctx, "strides", s, 1, 1, strides));
    TRY(ints_attr(ctx, "dilations", s, 1, 1, dil));
    /* Canonical pads may be negative (see the header), so that a canonical node re-infers. */
    TRY(ints_attr(ctx, "pads", 2 * s, 0, INT32_MIN, pads));
    TRY(ints_attr(ctx, "output_padding", s, 0, 0, opad));
    if (loom_ops_has(ctx, 2)) {
        const loom_tensor_desc *b = &ctx->inputs[2];
        TRY(loom_ops_same_dtype(ctx, 2, "B", 0));
        if (b->rank != 1 || b->dims[0] != m)
            return loom_infer_fail(ctx, INVALID, "input 2 (B) must have shape [%lld]",
                                   (long long)m);
    }
    const char *auto_pad = loom_infer_get_string(ctx, "auto_pad", "NOTSET");
    static const char *const pads_modes[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", NULL};
    if (!is_one_of(auto_pad, pads_modes))
        return loom_infer_fail(ctx, INVALID,
                               "auto_pad is '%s'; expected NOTSET, SAME_UPPER, SAME_LOWER or "
                               "VALID",
                               auto_pad);
    int upper = strcmp(auto_pad, "SAME_UPPER") == 0;
    int same = upper || strcmp(auto_pad, "SAME_LOWER") == 0;
    const int64_t *oshape = NULL;
    size_t n_oshape = loom_infer_get_ints(ctx, "output_shape", &oshape);
    if (loom_attr_list_get(ctx->attrs, "output_shape")) {
        if (n_oshape == s + 2)
            oshape += 2; /* some exporters give the whole shape */
        else if (n_oshape != s)
            return loom_infer_fail(ctx, INVALID,
                                   "output_shape must have %u values (one per spatial axis), "
                                   "got %zu",
                                   s, n_oshape);
    }
    if (strcmp(auto_pad, "VALID") == 0)
        memset(pads, 0, sizeof pads);
    for (uint32_t i = 0; i < s; i++) {
        if (dil[i] > INT32_MAX || strides[i] > INT32_MAX || kernel[i] > INT32_MAX ||
            x->dims[2 + i] > ((int64_t)1 << 40))
            return loom_infer_fail(ctx, INVALID, "spatial axis %u is too large", i);
        int64_t ek = (kernel[i] - 1) * dil[i] + 1;
        int64_t natural = strides[i] * (x->dims[2 + i] - 1) + opad[i] + ek;
        if (x->dims[2 + i] == 0)
            natural = 0;
        if (oshape || same) {
            int64_t want = oshape ? oshape[i] : x->dims[2 + i] * strides[i];
            if (want < 0)
                return loom_infer_fail(ctx, INVALID, "output_shape has a negative value");
            int64_t total = natural - want;
            /* ONNX's reference: SAME_UPPER puts the odd pad at the end, everything else at
             * the beginning. */
            pads[i] = upper ? floor_half(total) : total - floor_half(total);
            pads[s + i] = total - pads[i];
            out[i] = want;
        } else {
            out[i] = natural - pads[i] - pads[s + i];
            if (x->dims[2 + i] == 0)
                out[i] = 0;
            if (out[i] < 0)
                return loom_infer_fail(ctx, INVALID,
                                       "pads %lld + %lld exceed the output size %lld along "
                                       "spatial axis %u",
                                       (long long)pads[i], (long long)pads[s + i],
                                       (long long)natural, i);
        }
    }
    TRY(loom_infer_set_ints(ctx, "kernel_shape", s, kernel));
    TRY(loom_infer_set_ints(ctx, "strides", s, strides));
    TRY(loom_infer_set_ints(ctx, "dilations", s, dil));
    TRY(loom_infer_set_ints(ctx, "pads", 2 * (size_t)s, pads));
    TRY(loom_infer_set_ints(ctx, "output_padding", s, opad));
    TRY(loom_infer_set_int(ctx, "group", group));
    loom_ops_keep_only(ctx, canonical);
    int64_t dims[LOOM_MAX_RANK] = {x->dims[0], m};
    for (uint32_t i = 0; i < s; i++)
        dims[2 + i] = out[i];
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, dims);
    return loom_ops_finish(ctx);
}

/* Every input element multiplies a kernel slab of M/group * prod(kernel) weights. */
static void cost_conv_transpose(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *w = &node->inputs[1];
    double per_in = 1.0;
    for (uint32_t k = 1; k < w->rank; k++)
        per_in *= (double)w->dims[k];
    cost->flops = 2.0 * loom_ops_numel(&node->inputs[0]) * per_in;
    if (node->n_inputs > 2 && node->inputs[2].dtype != LOOM_DTYPE_UNDEFINED)
        cost->flops += loom_ops_numel(&node->outputs[0]);
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_conv, LOOM_OP_CONV, "Conv", 2, 3, 1, 1, infer_conv, cost_conv, 0);
LOOM_OPS_DEF(loom_op_def_conv_transpose, LOOM_OP_CONV_TRANSPOSE, "ConvTranspose",
             2, 3, 1, 1, infer_conv_transpose, cost_conv_transpose, 0);
/* MaxPool's second output is Indices. */
LOOM_OPS_DEF(loom_op_def_max_pool, LOOM_OP_MAX_POOL, "MaxPool",
             1, 1, 1, 2, infer_max_pool, cost_max_pool, 0);
LOOM_OPS_DEF(loom_op_def_average_pool, LOOM_OP_AVERAGE_POOL, "AveragePool",
             1, 1, 1, 1, infer_average_pool, cost_average_pool, 0);
LOOM_OPS_DEF(loom_op_def_global_average_pool, LOOM_OP_GLOBAL_AVERAGE_POOL, "GlobalAveragePool",
             1, 1, 1, 1, infer_global_average_pool, cost_global_average_pool, 0);
LOOM_OPS_DEF(loom_op_def_max_unpool, LOOM_OP_MAX_UNPOOL, "MaxUnpool", 2, 3, 1, 1,
             infer_max_unpool, cost_max_unpool, 0);
/* GlobalMaxPool: the same shapes as GlobalAveragePool. */
LOOM_OPS_DEF(loom_op_def_global_max_pool, LOOM_OP_GLOBAL_MAX_POOL, "GlobalMaxPool",
             1, 1, 1, 1, infer_global_average_pool, cost_global_max_pool, 0);
