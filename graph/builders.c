/*
 * One builder per operator (include/loom/graph.h), each a thin layer over loom_graph_op: it
 * turns C arguments into the node ONNX opset 18 would have. Shape-like arguments (Reshape's
 * shape, Slice's starts/ends/axes/steps, Split's sizes, Squeeze/Unsqueeze/Reduce axes, Expand's
 * shape) become int64 constants passed as inputs, and Clip's bounds scalar constants, so that a
 * built graph and an imported one look the same to every later stage.
 *
 * Errors are the graph's sticky error: every builder returns LOOM_NO_VALUE once the graph has
 * failed, and the few checks made here (before any node exists) record into it the same way.
 */
#include "graph_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- plumbing ------------------------------------------------------------------------------- */

/* Record a misuse of a builder as the graph's sticky error, unless the graph already failed
 * (the first error wins, as in loom_graph_op). Returns LOOM_NO_VALUE. */
static loom_value builder_fail(loom_graph *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static loom_value builder_fail(loom_graph *g, const char *fmt, ...)
{
    char msg[sizeof g->error_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!g) {
        loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "graph is NULL");
        return LOOM_NO_VALUE;
    }
    if (g->error != LOOM_OK) {
        loom_set_error(g->error, "%s", g->error_msg);
        return LOOM_NO_VALUE;
    }
    if (g->checked) { /* read-only: refused without poisoning it, as in loom_graph_op */
        loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                       "graph '%s' was already checked and is read-only", g->name);
        return LOOM_NO_VALUE;
    }
    g->error = LOOM_ERR_INVALID_ARGUMENT;
    memcpy(g->error_msg, msg, sizeof msg);
    loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "%s", msg);
    return LOOM_NO_VALUE;
}

/* Add a one-output node of OP; its output, or LOOM_NO_VALUE on failure. */
static loom_value node1(loom_graph *g, const char *op, const loom_value *in, size_t n_in,
                        const loom_attr *attrs, size_t n_attrs)
{
    loom_value out = LOOM_NO_VALUE;
    if (loom_graph_op(g, op, NULL, in, n_in, attrs, n_attrs, &out, 1) != LOOM_OK)
        return LOOM_NO_VALUE;
    return out;
}

static loom_value unary(loom_graph *g, const char *op, loom_value x)
{
    return node1(g, op, &x, 1, NULL, 0);
}

static loom_value binary(loom_graph *g, const char *op, loom_value a, loom_value b)
{
    loom_value in[2] = {a, b};
    return node1(g, op, in, 2, NULL, 0);
}

/* An int64 vector constant for a shape-like input. A NULL array with COUNT > 0 is the caller's
 * mistake, named by FN and WHAT. When this fails the graph's error is set, so the node built
 * next with the result is a no-op: callers need not check. */
static loom_value ints_const(loom_graph *g, const char *fn, const char *what, size_t count,
                             const int64_t *values)
{
    if (count && !values)
        return builder_fail(g, "%s: %s is NULL but its count is %zu", fn, what, count);
    return loom_constant_i64s(g, count, values);
}

/* ---- linear algebra and windows ------------------------------------------------------------- */

loom_value loom_matmul(loom_graph *g, loom_value a, loom_value b)
{
    return binary(g, "MatMul", a, b);
}

loom_value loom_gemm(loom_graph *g, loom_value a, loom_value b, loom_value c, float alpha,
                     float beta, int trans_a, int trans_b)
{
    loom_value in[3] = {a, b, c};
    loom_attr attrs[4] = {loom_attr_float("alpha", alpha), loom_attr_float("beta", beta),
                          loom_attr_int("transA", trans_a != 0),
                          loom_attr_int("transB", trans_b != 0)};
    return node1(g, "Gemm", in, c == LOOM_NO_VALUE ? 2 : 3, attrs, 4);
}

static int any_nonzero(const int64_t *v, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (v[k])
            return 1;
    return 0;
}

/* The attributes PARAMS stands for, into ATTRS (room for 8); returns how many, or -1 (error
 * recorded) for bad params. Arrays left all zero mean ONNX's default and are not passed. */
static int window_attrs(loom_graph *g, const char *fn, const loom_window_params *p, int pool,
                        int average, loom_attr *attrs)
{
    int n = 0;
    if (!p)
        return 0;
    size_t s = p->n_spatial;
    if (s > 3) {
        builder_fail(g, "%s: n_spatial is %zu; at most 3 spatial dims are supported", fn, s);
        return -1;
    }
    if (pool && any_nonzero(p->kernel_shape, s))
        attrs[n++] = loom_attr_ints("kernel_shape", s, p->kernel_shape);
    if (any_nonzero(p->strides, s))
        attrs[n++] = loom_attr_ints("strides", s, p->strides);
    if (any_nonzero(p->dilations, s))
        attrs[n++] = loom_attr_ints("dilations", s, p->dilations);
    if (any_nonzero(p->pads, 2 * s))
        attrs[n++] = loom_attr_ints("pads", 2 * s, p->pads);
    if (p->auto_pad)
        attrs[n++] = loom_attr_string("auto_pad", p->auto_pad);
    if (!pool && p->group)
        attrs[n++] = loom_attr_int("group", p->group);
    if (pool && p->ceil_mode)
        attrs[n++] = loom_attr_int("ceil_mode", 1);
    if (average && p->count_include_pad)
        attrs[n++] = loom_attr_int("count_include_pad", 1);
    return n;
}

loom_value loom_conv(loom_graph *g, loom_value x, loom_value w, loom_value b,
                     const loom_window_params *params)
{
    loom_attr attrs[8];
    int n = window_attrs(g, "loom_conv", params, 0, 0, attrs);
    if (n < 0)
        return LOOM_NO_VALUE;
    loom_value in[3] = {x, w, b};
    return node1(g, "Conv", in, b == LOOM_NO_VALUE ? 2 : 3, attrs, (size_t)n);
}

loom_value loom_max_pool(loom_graph *g, loom_value x, const loom_window_params *params)
{
    loom_attr attrs[8];
    int n = window_attrs(g, "loom_max_pool", params, 1, 0, attrs);
    return n < 0 ? LOOM_NO_VALUE : node1(g, "MaxPool", &x, 1, attrs, (size_t)n);
}

loom_value loom_average_pool(loom_graph *g, loom_value x, const loom_window_params *params)
{
    loom_attr attrs[8];
    int n = window_attrs(g, "loom_average_pool", params, 1, 1, attrs);
    return n < 0 ? LOOM_NO_VALUE : node1(g, "AveragePool", &x, 1, attrs, (size_t)n);
}

loom_value loom_global_average_pool(loom_graph *g, loom_value x)
{
    return unary(g, "GlobalAveragePool", x);
}

/* ---- elementwise ---------------------------------------------------------------------------- */

loom_value loom_relu(loom_graph *g, loom_value x) { return unary(g, "Relu", x); }
loom_value loom_sigmoid(loom_graph *g, loom_value x) { return unary(g, "Sigmoid", x); }
loom_value loom_tanh(loom_graph *g, loom_value x) { return unary(g, "Tanh", x); }
loom_value loom_erf(loom_graph *g, loom_value x) { return unary(g, "Erf", x); }
loom_value loom_sqrt(loom_graph *g, loom_value x) { return unary(g, "Sqrt", x); }
loom_value loom_exp(loom_graph *g, loom_value x) { return unary(g, "Exp", x); }
loom_value loom_log(loom_graph *g, loom_value x) { return unary(g, "Log", x); }
loom_value loom_neg(loom_graph *g, loom_value x) { return unary(g, "Neg", x); }
loom_value loom_abs(loom_graph *g, loom_value x) { return unary(g, "Abs", x); }
loom_value loom_identity(loom_graph *g, loom_value x) { return unary(g, "Identity", x); }

loom_value loom_leaky_relu(loom_graph *g, loom_value x, float alpha)
{
    loom_attr a = loom_attr_float("alpha", alpha);
    return node1(g, "LeakyRelu", &x, 1, &a, 1);
}

loom_value loom_gelu(loom_graph *g, loom_value x, const char *approximate)
{
    loom_attr a = loom_attr_string("approximate", approximate);
    return node1(g, "Gelu", &x, 1, &a, approximate ? 1 : 0);
}

/* f32 to IEEE half, rounding to nearest even. */
static uint16_t float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t exp = (x >> 23) & 0xffu, man = x & 0x7fffffu;
    if (exp == 0xff)
        return sign | (man ? 0x7e00u : 0x7c00u);
    int e = (int)exp - 127 + 15;
    if (e >= 31)
        return sign | 0x7c00u; /* overflow: infinity */
    if (e <= 0) {
        if (e < -10)
            return sign; /* underflow: signed zero */
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift, rest = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rest > mid || (rest == mid && (half & 1u)))
            half++;
        return sign | (uint16_t)half;
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13), rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++; /* may carry into the exponent, up to infinity: still right */
    return sign | (uint16_t)h;
}

/* f32 to bfloat16, rounding to nearest even. */
static uint16_t float_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); /* keep NaN a NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* V clamped to [LO, HI] after rounding toward the inside of the clip range: for integers,
 * x >= 2.5 means x >= 3 and x <= 2.5 means x <= 2. */
static int64_t int_bound(float v, int upper, int64_t lo, int64_t hi)
{
    double r = upper ? floor((double)v) : ceil((double)v);
    if (r <= (double)lo)
        return lo;
    if (r >= (double)hi)
        return hi;
    return (int64_t)r;
}

/* A scalar constant holding bound V in DTYPE (X's), so that Clip's inputs share X's dtype as
 * ONNX requires. */
static loom_value clip_bound(loom_graph *g, loom_dtype dtype, float v, int upper)
{
    union {
        uint16_t h;
        int8_t i8;
        uint8_t u8;
        int32_t i32;
        int64_t i64;
    } d;
    switch (dtype) {
    case LOOM_DTYPE_F16: d.h = float_to_half(v); break;
    case LOOM_DTYPE_BF16: d.h = float_to_bf16(v); break;
    case LOOM_DTYPE_I8: d.i8 = (int8_t)int_bound(v, upper, INT8_MIN, INT8_MAX); break;
    case LOOM_DTYPE_U8: d.u8 = (uint8_t)int_bound(v, upper, 0, UINT8_MAX); break;
    case LOOM_DTYPE_I32: d.i32 = (int32_t)int_bound(v, upper, INT32_MIN, INT32_MAX); break;
    case LOOM_DTYPE_I64: d.i64 = int_bound(v, upper, INT64_MIN, INT64_MAX); break;
    default: return loom_constant_f32(g, v); /* f32, or a dtype Clip rejects with a message */
    }
    return loom_constant(g, NULL, dtype, 0, NULL, &d);
}

loom_value loom_clip(loom_graph *g, loom_value x, float lo, float hi)
{
    loom_dtype dtype = LOOM_DTYPE_F32;
    /* A bad handle is reported by loom_graph_op below; until then assume f32. */
    if (loom_value_info(g, x, &dtype, NULL, NULL) != LOOM_OK)
        dtype = LOOM_DTYPE_F32;
    loom_value in[3] = {x, LOOM_NO_VALUE, LOOM_NO_VALUE};
    size_t n = 1;
    /* An infinite side is an open side: no input at all, as ONNX's default. */
    if (!(isinf(lo) && lo < 0)) {
        in[1] = clip_bound(g, dtype, lo, 0);
        n = 2;
    }
    if (!(isinf(hi) && hi > 0)) {
        in[2] = clip_bound(g, dtype, hi, 1);
        n = 3;
    }
    return node1(g, "Clip", in, n, NULL, 0);
}

loom_value loom_add(loom_graph *g, loom_value a, loom_value b) { return binary(g, "Add", a, b); }
loom_value loom_sub(loom_graph *g, loom_value a, loom_value b) { return binary(g, "Sub", a, b); }
loom_value loom_mul(loom_graph *g, loom_value a, loom_value b) { return binary(g, "Mul", a, b); }
loom_value loom_div(loom_graph *g, loom_value a, loom_value b) { return binary(g, "Div", a, b); }
loom_value loom_pow(loom_graph *g, loom_value a, loom_value b) { return binary(g, "Pow", a, b); }
loom_value loom_min(loom_graph *g, loom_value a, loom_value b) { return binary(g, "Min", a, b); }
loom_value loom_max(loom_graph *g, loom_value a, loom_value b) { return binary(g, "Max", a, b); }

loom_value loom_where(loom_graph *g, loom_value cond, loom_value a, loom_value b)
{
    loom_value in[3] = {cond, a, b};
    return node1(g, "Where", in, 3, NULL, 0);
}

/* ---- normalisation -------------------------------------------------------------------------- */

loom_value loom_softmax(loom_graph *g, loom_value x, int64_t axis)
{
    loom_attr a = loom_attr_int("axis", axis);
    return node1(g, "Softmax", &x, 1, &a, 1);
}

loom_value loom_layer_norm(loom_graph *g, loom_value x, loom_value scale, loom_value bias,
                           int64_t axis, float epsilon)
{
    loom_value in[3] = {x, scale, bias};
    loom_attr attrs[2] = {loom_attr_int("axis", axis), loom_attr_float("epsilon", epsilon)};
    return node1(g, "LayerNormalization", in, bias == LOOM_NO_VALUE ? 2 : 3, attrs, 2);
}

loom_value loom_moe(loom_graph *g, loom_value x, loom_value router_logits, loom_value fc1_w,
                    loom_value fc1_b, loom_value fc2_w, loom_value fc2_b, int64_t k,
                    const char *activation)
{
    loom_value in[6] = {x, router_logits, fc1_w, fc1_b, fc2_w, fc2_b};
    loom_attr attrs[2] = {loom_attr_int("k", k),
                          loom_attr_string("activation_type", activation ? activation : "relu")};
    return node1(g, "MoE", in, fc2_b == LOOM_NO_VALUE ? 5 : 6, attrs, 2);
}

loom_value loom_batch_norm(loom_graph *g, loom_value x, loom_value scale, loom_value bias,
                           loom_value mean, loom_value var, float epsilon)
{
    loom_value in[5] = {x, scale, bias, mean, var};
    loom_attr a = loom_attr_float("epsilon", epsilon);
    return node1(g, "BatchNormalization", in, 5, &a, 1);
}

/* ---- layout --------------------------------------------------------------------------------- */

loom_value loom_reshape(loom_graph *g, loom_value x, size_t rank, const int64_t *shape)
{
    loom_value in[2] = {x, ints_const(g, "loom_reshape", "shape", rank, shape)};
    return node1(g, "Reshape", in, 2, NULL, 0);
}

loom_value loom_transpose(loom_graph *g, loom_value x, const int64_t *perm)
{
    uint32_t rank = 0;
    loom_attr a;
    /* Without a readable rank, leave perm out: loom_graph_op then reports the bad handle. */
    int with_perm = perm && loom_value_info(g, x, NULL, &rank, NULL) == LOOM_OK;
    if (with_perm)
        a = loom_attr_ints("perm", rank, perm);
    return node1(g, "Transpose", &x, 1, with_perm ? &a : NULL, with_perm ? 1 : 0);
}

loom_value loom_flatten(loom_graph *g, loom_value x, int64_t axis)
{
    loom_attr a = loom_attr_int("axis", axis);
    return node1(g, "Flatten", &x, 1, &a, 1);
}

loom_value loom_concat(loom_graph *g, const loom_value *xs, size_t n, int64_t axis)
{
    loom_attr a = loom_attr_int("axis", axis);
    return node1(g, "Concat", xs, n, &a, 1);
}

loom_status loom_split(loom_graph *g, loom_value x, int64_t axis, size_t n, const int64_t *sizes,
                       loom_value *outs)
{
    loom_value in[2] = {x, LOOM_NO_VALUE};
    loom_attr attrs[2] = {loom_attr_int("axis", axis), loom_attr_int("num_outputs", (int64_t)n)};
    size_t n_attrs = 1;
    for (size_t k = 0; outs && k < n; k++)
        outs[k] = LOOM_NO_VALUE;
    if (sizes) {
        in[1] = loom_constant_i64s(g, n, sizes);
        if (in[1] == LOOM_NO_VALUE)
            return g && g->error ? g->error : LOOM_ERR_INVALID_ARGUMENT;
    } else {
        n_attrs = 2; /* equal parts: opset 18's num_outputs */
    }
    return loom_graph_op(g, "Split", NULL, in, sizes ? 2 : 1, attrs, n_attrs, outs, n);
}

loom_value loom_slice(loom_graph *g, loom_value x, size_t n, const int64_t *starts,
                      const int64_t *ends, const int64_t *axes, const int64_t *steps)
{
    loom_value in[5] = {x, LOOM_NO_VALUE, LOOM_NO_VALUE, LOOM_NO_VALUE, LOOM_NO_VALUE};
    size_t n_in = 3;
    in[1] = ints_const(g, "loom_slice", "starts", n, starts);
    in[2] = ints_const(g, "loom_slice", "ends", n, ends);
    if (axes) {
        in[3] = ints_const(g, "loom_slice", "axes", n, axes);
        n_in = 4;
    }
    if (steps) {
        in[4] = ints_const(g, "loom_slice", "steps", n, steps);
        n_in = 5; /* axes, when NULL, stays an absent optional input */
    }
    return node1(g, "Slice", in, n_in, NULL, 0);
}

loom_value loom_gather(loom_graph *g, loom_value data, loom_value indices, int64_t axis)
{
    loom_value in[2] = {data, indices};
    loom_attr a = loom_attr_int("axis", axis);
    return node1(g, "Gather", in, 2, &a, 1);
}

loom_value loom_squeeze(loom_graph *g, loom_value x, size_t n, const int64_t *axes)
{
    if (n == 0) /* no axes input: squeeze every dim of size 1 */
        return unary(g, "Squeeze", x);
    loom_value in[2] = {x, ints_const(g, "loom_squeeze", "axes", n, axes)};
    return node1(g, "Squeeze", in, 2, NULL, 0);
}

loom_value loom_unsqueeze(loom_graph *g, loom_value x, size_t n, const int64_t *axes)
{
    loom_value in[2] = {x, ints_const(g, "loom_unsqueeze", "axes", n, axes)};
    return node1(g, "Unsqueeze", in, 2, NULL, 0);
}

loom_value loom_expand(loom_graph *g, loom_value x, size_t rank, const int64_t *shape)
{
    loom_value in[2] = {x, ints_const(g, "loom_expand", "shape", rank, shape)};
    return node1(g, "Expand", in, 2, NULL, 0);
}

loom_value loom_cast(loom_graph *g, loom_value x, loom_dtype to)
{
    loom_attr a = loom_attr_int("to", (int64_t)to);
    return node1(g, "Cast", &x, 1, &a, 1);
}

/* ---- reductions ----------------------------------------------------------------------------- */

static loom_value reduce(loom_graph *g, const char *op, const char *fn, loom_value x, size_t n,
                         const int64_t *axes, int keepdims)
{
    loom_value in[2] = {x, LOOM_NO_VALUE};
    loom_attr a = loom_attr_int("keepdims", keepdims != 0);
    if (n == 0) /* no axes input: reduce over every axis (noop_with_empty_axes stays 0) */
        return node1(g, op, in, 1, &a, 1);
    in[1] = ints_const(g, fn, "axes", n, axes);
    return node1(g, op, in, 2, &a, 1);
}

loom_value loom_reduce_mean(loom_graph *g, loom_value x, size_t n, const int64_t *axes,
                            int keepdims)
{
    return reduce(g, "ReduceMean", "loom_reduce_mean", x, n, axes, keepdims);
}

loom_value loom_reduce_sum(loom_graph *g, loom_value x, size_t n, const int64_t *axes,
                           int keepdims)
{
    return reduce(g, "ReduceSum", "loom_reduce_sum", x, n, axes, keepdims);
}

loom_value loom_reduce_max(loom_graph *g, loom_value x, size_t n, const int64_t *axes,
                           int keepdims)
{
    return reduce(g, "ReduceMax", "loom_reduce_max", x, n, axes, keepdims);
}
