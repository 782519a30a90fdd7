/*
 * `loom backend-test PLUGIN.so|BACKEND`: conformance of a backend against the CPU reference.
 * Every op of a fixed case list (several shapes and dtypes per op) is planned strictly on the
 * backend's device; what it accepts is run there and on cpu:0 with the same seeded inputs, and
 * the outputs are compared. Prints an op x dtype table: pass, FAIL (max error) or unsupported
 * (the backend's reason). Exit 0 when nothing failed, 1 when something did, 2 on bad usage.
 */
#include "tool_util.h"
#include "commands.h"
#include "scheduler/sched_internal.h" /* runtime_plugin_backend: the plugin's own backend */

#include <loom/loom.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct bt_input {
    loom_dtype dtype;
    uint32_t rank;
    int64_t dims[4];
    int positive; /* data in [0.5, 2) instead of [-1, 1) (Log, Sqrt, Pow bases) */
    int constant; /* a constant of the graph (weights) rather than an input */
} bt_input;

typedef struct bt_case {
    const char *op;
    const char *shape; /* for the table */
    int n_in;
    bt_input in[4];
    loom_value (*build)(loom_graph *g, const loom_value *x);
} bt_case;

#define F32 LOOM_DTYPE_F32
#define F16 LOOM_DTYPE_F16
#define I32 LOOM_DTYPE_I32
#define I64 LOOM_DTYPE_I64

static loom_value b_matmul(loom_graph *g, const loom_value *x) { return loom_matmul(g, x[0], x[1]); }
static loom_value b_gemm(loom_graph *g, const loom_value *x)
{
    return loom_gemm(g, x[0], x[1], x[2], 0.5f, 2.0f, 0, 1);
}
static loom_value b_conv(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 1;
    p.strides[0] = p.strides[1] = 1;
    return loom_conv(g, x[0], x[1], x[2], &p);
}
static loom_value b_conv_s2(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.strides[0] = p.strides[1] = 2;
    return loom_conv(g, x[0], x[1], LOOM_NO_VALUE, &p);
}
static loom_value b_relu(loom_graph *g, const loom_value *x) { return loom_relu(g, x[0]); }
static loom_value b_leaky(loom_graph *g, const loom_value *x) { return loom_leaky_relu(g, x[0], 0.1f); }
static loom_value b_sigmoid(loom_graph *g, const loom_value *x) { return loom_sigmoid(g, x[0]); }
static loom_value b_tanh(loom_graph *g, const loom_value *x) { return loom_tanh(g, x[0]); }
static loom_value b_erf(loom_graph *g, const loom_value *x) { return loom_erf(g, x[0]); }
static loom_value b_gelu(loom_graph *g, const loom_value *x) { return loom_gelu(g, x[0], NULL); }
static loom_value b_sqrt(loom_graph *g, const loom_value *x) { return loom_sqrt(g, x[0]); }
static loom_value b_exp(loom_graph *g, const loom_value *x) { return loom_exp(g, x[0]); }
static loom_value b_log(loom_graph *g, const loom_value *x) { return loom_log(g, x[0]); }
static loom_value b_neg(loom_graph *g, const loom_value *x) { return loom_neg(g, x[0]); }
static loom_value b_abs(loom_graph *g, const loom_value *x) { return loom_abs(g, x[0]); }
static loom_value b_clip(loom_graph *g, const loom_value *x) { return loom_clip(g, x[0], -0.5f, 0.5f); }
static loom_value b_add(loom_graph *g, const loom_value *x) { return loom_add(g, x[0], x[1]); }
static loom_value b_sub(loom_graph *g, const loom_value *x) { return loom_sub(g, x[0], x[1]); }
static loom_value b_mul(loom_graph *g, const loom_value *x) { return loom_mul(g, x[0], x[1]); }
static loom_value b_div(loom_graph *g, const loom_value *x) { return loom_div(g, x[0], x[1]); }
static loom_value b_pow(loom_graph *g, const loom_value *x) { return loom_pow(g, x[0], x[1]); }
static loom_value b_min(loom_graph *g, const loom_value *x) { return loom_min(g, x[0], x[1]); }
static loom_value b_max(loom_graph *g, const loom_value *x) { return loom_max(g, x[0], x[1]); }
static loom_value b_softmax(loom_graph *g, const loom_value *x) { return loom_softmax(g, x[0], -1); }
static loom_value b_layernorm(loom_graph *g, const loom_value *x)
{
    return loom_layer_norm(g, x[0], x[1], x[2], -1, 1e-5f);
}
static loom_value b_batchnorm(loom_graph *g, const loom_value *x)
{
    return loom_batch_norm(g, x[0], x[1], x[2], x[3], x[1], 1e-5f);
}
static loom_value b_maxpool(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.kernel_shape[0] = p.kernel_shape[1] = 2;
    p.strides[0] = p.strides[1] = 2;
    return loom_max_pool(g, x[0], &p);
}
static loom_value b_avgpool(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.kernel_shape[0] = p.kernel_shape[1] = 3;
    p.strides[0] = p.strides[1] = 1;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 1;
    return loom_average_pool(g, x[0], &p);
}
static loom_value b_gap(loom_graph *g, const loom_value *x) { return loom_global_average_pool(g, x[0]); }
static loom_value b_reshape(loom_graph *g, const loom_value *x)
{
    int64_t s[2] = {-1, 6};
    return loom_reshape(g, x[0], 2, s);
}
static loom_value b_transpose(loom_graph *g, const loom_value *x)
{
    int64_t perm[3] = {2, 0, 1};
    return loom_transpose(g, x[0], perm);
}
static loom_value b_flatten(loom_graph *g, const loom_value *x) { return loom_flatten(g, x[0], 1); }
static loom_value b_concat(loom_graph *g, const loom_value *x) { return loom_concat(g, x, 2, 1); }
static loom_value b_split(loom_graph *g, const loom_value *x)
{
    loom_value parts[2];
    int64_t sizes[2] = {2, 4};
    if (loom_split(g, x[0], 1, 2, sizes, parts) != LOOM_OK)
        return LOOM_NO_VALUE;
    return loom_concat(g, (loom_value[]){parts[1], parts[0]}, 2, 1);
}
static loom_value b_slice(loom_graph *g, const loom_value *x)
{
    int64_t starts[2] = {1, -1}, ends[2] = {5, -7}, axes[2] = {0, 1}, steps[2] = {2, -2};
    return loom_slice(g, x[0], 2, starts, ends, axes, steps);
}
static loom_value b_gather(loom_graph *g, const loom_value *x)
{
    int64_t idx[3] = {2, 0, -1}, d[1] = {3};
    loom_value i = loom_constant(g, NULL, LOOM_DTYPE_I64, 1, d, idx);
    return loom_gather(g, x[0], i, 1);
}
static loom_value b_squeeze(loom_graph *g, const loom_value *x)
{
    int64_t axes[1] = {1};
    return loom_squeeze(g, x[0], 1, axes);
}
static loom_value b_unsqueeze(loom_graph *g, const loom_value *x)
{
    int64_t axes[1] = {0};
    return loom_unsqueeze(g, x[0], 1, axes);
}
static loom_value b_rmean(loom_graph *g, const loom_value *x)
{
    int64_t axes[1] = {1};
    return loom_reduce_mean(g, x[0], 1, axes, 1);
}
static loom_value b_rsum(loom_graph *g, const loom_value *x)
{
    int64_t axes[2] = {0, 2};
    return loom_reduce_sum(g, x[0], 2, axes, 0);
}
static loom_value b_rmax(loom_graph *g, const loom_value *x) { return loom_reduce_max(g, x[0], 0, NULL, 0); }
static loom_value b_cast(loom_graph *g, const loom_value *x)
{
    return loom_cast(g, loom_cast(g, x[0], LOOM_DTYPE_F16), LOOM_DTYPE_F32);
}
static loom_value b_where(loom_graph *g, const loom_value *x)
{
    loom_value zero = loom_constant_f32(g, 0.0f);
    loom_value cond = LOOM_NO_VALUE;
    loom_value args[2] = {x[0], zero};
    loom_graph_op(g, "Greater", NULL, args, 2, NULL, 0, &cond, 1);
    return loom_where(g, cond, x[0], x[1]);
}
static loom_value b_expand(loom_graph *g, const loom_value *x)
{
    int64_t s[3] = {2, 5, 7};
    return loom_expand(g, x[0], 3, s);
}

/* MatMulInt8Dynamic (what --quantize int8-dynamic and quantized ONNX models run): X [9, 37] f32
 * times an int8 [37, 70] weight (two 64-column panels, K not a multiple of 4) with one scale per
 * column and a bias; TENSOR_ASYM quantises X as DynamicQuantizeLinear does. */
static loom_value int8_matmul(loom_graph *g, const loom_value *x, int tensor_asym)
{
    enum { K = 37, N = 70 };
    int8_t w[K * N];
    float scale[N], bias[N];
    for (int i = 0; i < K * N; i++)
        w[i] = (int8_t)((i * 37 + 11) % 255 - 127);
    for (int j = 0; j < N; j++) {
        scale[j] = 0.001f * (float)(j + 1);
        bias[j] = 0.01f * (float)(j % 7) - 0.03f;
    }
    int64_t wd[2] = {K, N}, nd[1] = {N};
    loom_value in[4] = {x[0], loom_constant(g, NULL, LOOM_DTYPE_I8, 2, wd, w),
                        loom_constant(g, NULL, LOOM_DTYPE_F32, 1, nd, scale),
                        loom_constant(g, NULL, LOOM_DTYPE_F32, 1, nd, bias)};
    loom_attr asym = loom_attr_int("tensor_asymmetric", tensor_asym);
    loom_value y = LOOM_NO_VALUE;
    loom_graph_op(g, "MatMulInt8Dynamic", NULL, in, 4, &asym, 1, &y, 1);
    return y;
}
static loom_value b_int8_rows(loom_graph *g, const loom_value *x) { return int8_matmul(g, x, 0); }
static loom_value b_int8_tensor(loom_graph *g, const loom_value *x) { return int8_matmul(g, x, 1); }

#define IN(dt, r, a, b, c, d) {dt, r, {a, b, c, d}, 0, 0}
#define INP(dt, r, a, b, c, d) {dt, r, {a, b, c, d}, 1, 0}
#define W(dt, r, a, b, c, d) {dt, r, {a, b, c, d}, 0, 1}

static const bt_case cases[] = {
    {"MatMul", "[7,13]x[13,5]", 2, {IN(F32, 2, 7, 13, 0, 0), W(F32, 2, 13, 5, 0, 0)}, b_matmul},
    {"MatMul", "[2,3,8,16]x[16,4]", 2, {IN(F32, 4, 2, 3, 8, 16), W(F32, 2, 16, 4, 0, 0)}, b_matmul},
    {"MatMul", "[9,11]x[11,6] i32", 2, {IN(I32, 2, 9, 11, 0, 0), IN(I32, 2, 11, 6, 0, 0)}, b_matmul},
    {"Gemm", "[6,9]x[4,9]T+[4]", 3,
     {IN(F32, 2, 6, 9, 0, 0), W(F32, 2, 4, 9, 0, 0), W(F32, 1, 4, 0, 0, 0)}, b_gemm},
    {"Conv", "[1,3,9,9]*[4,3,3,3] pad1", 3,
     {IN(F32, 4, 1, 3, 9, 9), W(F32, 4, 4, 3, 3, 3), W(F32, 1, 4, 0, 0, 0)}, b_conv},
    {"Conv", "[2,8,10,10]*[16,8,1,1] s2", 2, {IN(F32, 4, 2, 8, 10, 10), W(F32, 4, 16, 8, 1, 1)},
     b_conv_s2},
    {"Relu", "[3,17]", 1, {IN(F32, 2, 3, 17, 0, 0)}, b_relu},
    {"Relu", "[2,64,33]", 1, {IN(F32, 3, 2, 64, 33, 0)}, b_relu},
    {"Relu", "[3,17] f16", 1, {IN(F16, 2, 3, 17, 0, 0)}, b_relu},
    {"LeakyRelu", "[5,9]", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_leaky},
    {"Sigmoid", "[5,9]", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_sigmoid},
    {"Tanh", "[5,9]", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_tanh},
    {"Erf", "[5,9]", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_erf},
    {"Gelu", "[5,9]", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_gelu},
    {"Sqrt", "[5,9]", 1, {INP(F32, 2, 5, 9, 0, 0)}, b_sqrt},
    {"Exp", "[5,9]", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_exp},
    {"Log", "[5,9]", 1, {INP(F32, 2, 5, 9, 0, 0)}, b_log},
    {"Neg", "[5,9]", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_neg},
    {"Neg", "[5,9] i64", 1, {IN(I64, 2, 5, 9, 0, 0)}, b_neg},
    {"Abs", "[5,9]", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_abs},
    {"Clip", "[5,9]", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_clip},
    {"Add", "[4,7]+[7]", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 1, 7, 0, 0, 0)}, b_add},
    {"Add", "[2,3,5]+[2,3,5]", 2, {IN(F32, 3, 2, 3, 5, 0), IN(F32, 3, 2, 3, 5, 0)}, b_add},
    {"Add", "[4,7]+[4,1] i32", 2, {IN(I32, 2, 4, 7, 0, 0), IN(I32, 2, 4, 1, 0, 0)}, b_add},
    {"Add", "[4,7]+[7] f16", 2, {IN(F16, 2, 4, 7, 0, 0), IN(F16, 1, 7, 0, 0, 0)}, b_add},
    {"Sub", "[4,7]-[4,1]", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 2, 4, 1, 0, 0)}, b_sub},
    {"Mul", "[4,7]*[1]", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 1, 1, 0, 0, 0)}, b_mul},
    {"Mul", "[4,7]*[7] i64", 2, {IN(I64, 2, 4, 7, 0, 0), IN(I64, 1, 7, 0, 0, 0)}, b_mul},
    {"Div", "[4,7]/[7]", 2, {IN(F32, 2, 4, 7, 0, 0), INP(F32, 1, 7, 0, 0, 0)}, b_div},
    {"Pow", "[4,7]^[7]", 2, {INP(F32, 2, 4, 7, 0, 0), IN(F32, 1, 7, 0, 0, 0)}, b_pow},
    {"Min", "min([4,7],[7])", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 1, 7, 0, 0, 0)}, b_min},
    {"Max", "max([4,7],[4,1])", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 2, 4, 1, 0, 0)}, b_max},
    {"Softmax", "[5,11] axis -1", 1, {IN(F32, 2, 5, 11, 0, 0)}, b_softmax},
    {"LayerNormalization", "[4,16]", 3,
     {IN(F32, 2, 4, 16, 0, 0), W(F32, 1, 16, 0, 0, 0), W(F32, 1, 16, 0, 0, 0)}, b_layernorm},
    {"BatchNormalization", "[2,3,5,5]", 4,
     {IN(F32, 4, 2, 3, 5, 5), {F32, 1, {3}, 1, 1}, W(F32, 1, 3, 0, 0, 0), W(F32, 1, 3, 0, 0, 0)},
     b_batchnorm},
    {"MaxPool", "[1,3,8,8] k2 s2", 1, {IN(F32, 4, 1, 3, 8, 8)}, b_maxpool},
    {"AveragePool", "[1,3,7,7] k3 pad1", 1, {IN(F32, 4, 1, 3, 7, 7)}, b_avgpool},
    {"GlobalAveragePool", "[2,3,5,5]", 1, {IN(F32, 4, 2, 3, 5, 5)}, b_gap},
    {"Reshape", "[4,3,2]->[-1,6]", 1, {IN(F32, 3, 4, 3, 2, 0)}, b_reshape},
    {"Transpose", "[3,4,5] (2,0,1)", 1, {IN(F32, 3, 3, 4, 5, 0)}, b_transpose},
    {"Flatten", "[2,3,4] axis 1", 1, {IN(F32, 3, 2, 3, 4, 0)}, b_flatten},
    {"Concat", "[2,3]+[2,5] axis 1", 2, {IN(F32, 2, 2, 3, 0, 0), IN(F32, 2, 2, 5, 0, 0)}, b_concat},
    {"Split", "[3,6] -> 2+4", 1, {IN(F32, 2, 3, 6, 0, 0)}, b_split},
    {"Slice", "[7,9] steps 2,-2", 1, {IN(F32, 2, 7, 9, 0, 0)}, b_slice},
    {"Gather", "[4,5] axis 1", 1, {IN(F32, 2, 4, 5, 0, 0)}, b_gather},
    {"Squeeze", "[3,1,4]", 1, {IN(F32, 3, 3, 1, 4, 0)}, b_squeeze},
    {"Unsqueeze", "[3,4]", 1, {IN(F32, 2, 3, 4, 0, 0)}, b_unsqueeze},
    {"ReduceMean", "[3,5,4] axis 1", 1, {IN(F32, 3, 3, 5, 4, 0)}, b_rmean},
    {"ReduceSum", "[3,5,4] axes 0,2", 1, {IN(F32, 3, 3, 5, 4, 0)}, b_rsum},
    {"ReduceMax", "[3,5,4] all", 1, {IN(F32, 3, 3, 5, 4, 0)}, b_rmax},
    {"Cast", "f32->f16->f32 [5,9]", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_cast},
    {"Where", "[4,7]", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 2, 4, 7, 0, 0)}, b_where},
    {"Expand", "[5,1]->[2,5,7]", 1, {IN(F32, 2, 5, 1, 0, 0)}, b_expand},
    {"MatMulInt8Dynamic", "[9,37]x[37,70] i8 rows", 1, {IN(F32, 2, 9, 37, 0, 0)}, b_int8_rows},
    {"MatMulInt8Dynamic", "[9,37]x[37,70] i8 tensor", 1, {IN(F32, 2, 9, 37, 0, 0)},
     b_int8_tensor},
};

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static float rng_float(uint64_t *s, int positive)
{
    double u = (double)(rng_next(s) >> 11) / (double)(1ull << 53);
    return positive ? (float)(0.5 + 1.5 * u) : (float)(u * 2.0 - 1.0);
}

static void fill(void *data, loom_dtype dt, size_t n, int positive, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        float v = rng_float(s, positive);
        switch (dt) {
        case LOOM_DTYPE_F32: ((float *)data)[i] = v; break;
        case LOOM_DTYPE_I32: ((int32_t *)data)[i] = (int32_t)(v * 50); break;
        case LOOM_DTYPE_I64: ((int64_t *)data)[i] = (int64_t)(v * 50); break;
        case LOOM_DTYPE_F16: {
            /* round through f32 -> f16 bits: small values, exact enough for a test pattern */
            float f = v;
            uint32_t u;
            memcpy(&u, &f, 4);
            uint32_t sign = (u >> 16) & 0x8000u, exp = (u >> 23) & 0xff, man = (u >> 13) & 0x3ff;
            uint16_t h = exp < 113 ? (uint16_t)sign : (uint16_t)(sign | ((exp - 112) << 10) | man);
            ((uint16_t *)data)[i] = h;
            break;
        }
        default: memset(data, 0, n * loom_dtype_size(dt)); return;
        }
    }
}

static size_t numel(const bt_input *in)
{
    size_t n = 1;
    for (uint32_t k = 0; k < in->rank; k++)
        n *= (size_t)in->dims[k];
    return n;
}

/* Largest error of OUT against REF, scaled by the case's tolerance: <= 1 passes. */
static double compare(const loom_tensor *out, const loom_tensor *ref, double rtol, double atol,
                      double *max_abs)
{
    loom_dtype dt = loom_tensor_dtype(ref);
    size_t n = loom_tensor_nbytes(ref) / loom_dtype_size(dt);
    double worst = 0;
    *max_abs = 0;
    for (size_t i = 0; i < n; i++) {
        double a, b;
        switch (dt) {
        case LOOM_DTYPE_F32:
            a = ((float *)loom_tensor_data(out))[i];
            b = ((float *)loom_tensor_data(ref))[i];
            break;
        case LOOM_DTYPE_I32:
            a = ((int32_t *)loom_tensor_data(out))[i];
            b = ((int32_t *)loom_tensor_data(ref))[i];
            break;
        case LOOM_DTYPE_I64:
            a = (double)((int64_t *)loom_tensor_data(out))[i];
            b = (double)((int64_t *)loom_tensor_data(ref))[i];
            break;
        default:
            a = memcmp((char *)loom_tensor_data(out) + i * loom_dtype_size(dt),
                       (char *)loom_tensor_data(ref) + i * loom_dtype_size(dt),
                       loom_dtype_size(dt)) != 0;
            b = 0;
        }
        double err = fabs(a - b);
        if (isnan(a) != isnan(b))
            err = INFINITY;
        else if (isnan(a))
            err = 0;
        if (err > *max_abs)
            *max_abs = err;
        double scaled = err / (atol + rtol * fabs(b));
        if (scaled > worst)
            worst = scaled;
    }
    return worst;
}

/* The case list on DEVICE against cpu:0: the table, and the counts added to the three. */
static void bt_run_device(loom_runtime *rt, const char *device, uint32_t precision,
                          const char *only, int *passed, int *failed, int *unsupported)
{
    double rtol = precision == LOOM_PRECISION_F32 ? 1e-4 : precision == LOOM_PRECISION_F16 ? 2e-2 : 8e-2;
    double atol = precision == LOOM_PRECISION_F32 ? 1e-5 : precision == LOOM_PRECISION_F16 ? 2e-2 : 8e-2;
    printf("backend-test of %s against cpu:0 (precision %s; pass when |err| <= %.0e + %.0e*|ref|)\n",
           device, precision == 0 ? "f32" : precision == 1 ? "fp16" : "int8", atol, rtol);
    printf("%-20s %-28s %s\n", "OP", "CASE", "RESULT");
    uint64_t seed = 0x2545F4914F6CDD1Dull;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const bt_case *tc = &cases[c];
        if (only && strcmp(only, tc->op))
            continue;
        loom_graph *g = loom_graph_create(tc->op);
        loom_value x[4];
        void *data[4] = {0};
        loom_tensor *ins[4] = {0};
        size_t n_ins = 0;
        for (int k = 0; k < tc->n_in; k++) {
            const bt_input *in = &tc->in[k];
            size_t n = numel(in);
            data[k] = calloc(n + 1, loom_dtype_size(in->dtype));
            fill(data[k], in->dtype, n, in->positive, &seed);
            char name[16];
            snprintf(name, sizeof name, "x%d", k);
            if (in->constant)
                x[k] = loom_constant(g, name, in->dtype, in->rank, in->dims, data[k]);
            else {
                x[k] = loom_input(g, name, in->dtype, in->rank, in->dims);
                loom_tensor_wrap(in->dtype, in->rank, in->dims, data[k], &ins[n_ins++]);
            }
        }
        loom_value y = tc->build(g, x);
        loom_output(g, y, "y");
        char result[300];
        int outcome = 0; /* 0 pass, 1 fail, 2 unsupported */
        if (loom_graph_check(g) != LOOM_OK) {
            snprintf(result, sizeof result, "unsupported: %s", loom_last_error());
            outcome = 2;
        } else {
            loom_plan_options po = {.struct_size = sizeof po, .device = device, .strict = 1,
                                    .precision = precision};
            loom_plan_options ro2 = {.struct_size = sizeof ro2, .device = "cpu:0", .strict = 1};
            loom_plan *pt = NULL, *pr = NULL;
            loom_status st = loom_plan_create(rt, g, &po, &pt);
            if (st != LOOM_OK) {
                snprintf(result, sizeof result, "%s: %s",
                         st == LOOM_ERR_UNSUPPORTED ? "unsupported" : "FAIL (plan)",
                         loom_last_error());
                outcome = st == LOOM_ERR_UNSUPPORTED ? 2 : 1;
            } else if (loom_plan_create(rt, g, &ro2, &pr) != LOOM_OK) {
                snprintf(result, sizeof result, "unsupported: no reference: %s",
                         loom_last_error());
                outcome = 2;
            } else {
                loom_tensor *out = NULL, *ref = NULL;
                loom_plan_make_outputs(pt, &out, 1);
                loom_plan_make_outputs(pr, &ref, 1);
                if (loom_plan_run(pr, (const loom_tensor *const *)ins, n_ins, &ref, 1, NULL) !=
                    LOOM_OK) {
                    snprintf(result, sizeof result, "unsupported: reference failed: %s",
                             loom_last_error());
                    outcome = 2;
                } else if (loom_plan_run(pt, (const loom_tensor *const *)ins, n_ins, &out, 1,
                                         NULL) != LOOM_OK) {
                    snprintf(result, sizeof result, "FAIL (run): %s", loom_last_error());
                    outcome = 1;
                } else {
                    double max_abs, worst = compare(out, ref, rtol, atol, &max_abs);
                    if (worst <= 1.0) {
                        snprintf(result, sizeof result, "pass (max error %.2g)", max_abs);
                    } else {
                        snprintf(result, sizeof result, "FAIL (max error %.3g)", max_abs);
                        outcome = 1;
                    }
                }
                loom_tensor_destroy(out);
                loom_tensor_destroy(ref);
            }
            loom_plan_destroy(pt);
            loom_plan_destroy(pr);
        }
        printf("%-20s %-28s %s\n", tc->op, tc->shape, result);
        *passed += outcome == 0;
        *failed += outcome == 1;
        *unsupported += outcome == 2;
        for (size_t k = 0; k < n_ins; k++)
            loom_tensor_destroy(ins[k]);
        for (int k = 0; k < tc->n_in; k++)
            free(data[k]);
        loom_graph_destroy(g);
    }
}

/* The runtime's messages, taken with loom_runtime_messages_drain: copies, printed (or not)
 * once the command knows what they mean. */
typedef struct bt_messages {
    char **lines;
    size_t n, cap;
} bt_messages;

static void bt_keep_message(void *user, const char *m)
{
    bt_messages *b = user;
    if (b->n == b->cap) {
        size_t c = b->cap ? b->cap * 2 : 16;
        char **p = realloc(b->lines, c * sizeof *p);
        if (!p)
            return;
        b->lines = p;
        b->cap = c;
    }
    if ((b->lines[b->n] = strdup(m)))
        b->n++;
}

static void bt_print_message(void *user, const char *m)
{
    (void)user;
    fprintf(stderr, "loom: %s\n", m);
}

static void bt_messages_print(const bt_messages *b)
{
    for (size_t i = 0; i < b->n; i++)
        bt_print_message(NULL, b->lines[i]);
}

static void bt_messages_free(bt_messages *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->lines[i]);
    free(b->lines);
    b->lines = NULL;
    b->n = b->cap = 0;
}

static const char help[] =
    "usage: loom backend-test PLUGIN.so|BACKEND|DEVICE [--precision f32|fp16|int8] [--op OP]\n"
    "\n"
    "Check every operator case a backend accepts against the CPU reference (cpu:0): each case\n"
    "is planned strictly on each device of the backend (or on DEVICE alone, e.g. npu-sim:0);\n"
    "what the device accepts is run there and on cpu:0 with the same seeded inputs and\n"
    "compared. Prints a table per device: pass, FAIL (max error) or unsupported (the backend's\n"
    "reason).\n"
    "\n"
    "  PLUGIN.so        a plugin file (a name with a '/' or ending in .so): loaded alone for\n"
    "                   this run (LOOM_BACKEND_PATH and the installed folder are not searched),\n"
    "                   and its own devices are the ones tested\n"
    "  BACKEND          a backend already found: cpu, opencl, npu-sim, ...\n"
    "  --precision P    precision accepted for float32 nodes (default f32); tolerances follow\n"
    "  --op OP          only the cases of this operator\n"
    "  --skip-missing   exit 77 (a skipped test) when the backend has no device here\n"
    "\n"
    "Exit status: 0 when no case failed; 1 when one did, or when a device ran none of the\n"
    "cases (all unsupported: nothing was tested); 2 on bad usage, and when the plugin was\n"
    "refused (not loadable, no loom_backend_query, another ABI major, a missing slot: the\n"
    "refusal is the last line) or offers no usable device (77: skipped).\n";

int loom_cmd_backend_test(int argc, char **argv)
{
    const char *target = NULL, *only = NULL;
    int skip_missing = 0;
    uint32_t precision = LOOM_PRECISION_F32;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            fputs(tool_backend_option_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            const char *p = argv[++i];
            if (!strcmp(p, "f32") || !strcmp(p, "fp32"))
                precision = LOOM_PRECISION_F32;
            else if (!strcmp(p, "fp16") || !strcmp(p, "f16"))
                precision = LOOM_PRECISION_F16;
            else if (!strcmp(p, "int8"))
                precision = LOOM_PRECISION_INT8;
            else {
                fprintf(stderr, "loom backend-test: unknown precision '%s' (f32, fp16, int8)\n", p);
                return 2;
            }
        } else if (!strcmp(argv[i], "--skip-missing")) {
            skip_missing = 1;
        } else if (!strcmp(argv[i], "--op") && i + 1 < argc) {
            only = argv[++i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "loom backend-test: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        } else if (!target) {
            target = argv[i];
        } else {
            fprintf(stderr, "loom backend-test: one backend at a time ('%s' is extra)\n", argv[i]);
            return 2;
        }
    }
    if (!target) {
        fprintf(stderr, "loom backend-test: which backend? (see --help)\n");
        return 2;
    }
    size_t tl = strlen(target);
    int is_file = strchr(target, '/') || (tl > 3 && !strcmp(target + tl - 3, ".so"));
    /* A plugin file is loaded alone: a plugin found on LOOM_BACKEND_PATH must not be tested in
     * its place, nor a built-in GPU when the plugin is refused. */
    loom_runtime_options ro = {.struct_size = sizeof ro};
    const char *paths[1] = {target};
    if (is_file) {
        ro.plugin_paths = paths;
        ro.n_plugin_paths = 1;
        ro.no_default_plugins = 1;
    }
    /* A plugin file that cannot be read is bad input, said in one line like any command's. */
    if (is_file && access(target, R_OK) != 0) {
        fprintf(stderr, "loom backend-test: cannot open plugin '%s': %s\n", target,
                strerror(errno));
        return 2;
    }
    loom_runtime *rt;
    loom_status rst = tool_runtime_create(&ro, &rt);
    if (rst != LOOM_OK) {
        fprintf(stderr, "loom backend-test: cannot start: %s\n", loom_last_error());
        return tool_runtime_exit_status(rst);
    }
    bt_messages msgs = {0};
    loom_runtime_messages_drain(rt, bt_keep_message, &msgs);
    /* The backend under test: for a plugin file, the one that file gave (none: it was
     * refused, and its refusal is the last line, as the one line of a bad input). */
    char backend[64] = "";
    if (is_file) {
        const char *name = runtime_plugin_backend(rt, target);
        if (!name) {
            const char *refusal = NULL;
            char prefix[4200];
            snprintf(prefix, sizeof prefix, "plugin %s refused", target);
            for (size_t i = 0; i < msgs.n; i++) {
                if (!strncmp(msgs.lines[i], prefix, strlen(prefix)))
                    refusal = msgs.lines[i];
                else
                    fprintf(stderr, "loom: %s\n", msgs.lines[i]);
            }
            if (refusal)
                fprintf(stderr, "loom backend-test: %s\n", refusal);
            else
                fprintf(stderr, "loom backend-test: plugin %s did not load (see above)\n", target);
            bt_messages_free(&msgs);
            loom_runtime_destroy(rt);
            return 2;
        }
        snprintf(backend, sizeof backend, "%s", name);
    }
    bt_messages_print(&msgs);
    /* The devices under test: every device of that backend, or the one DEVICE named. */
    char (*devices)[64] = NULL;
    size_t n_devices = 0, nd = loom_runtime_device_count(rt);
    if (nd)
        devices = calloc(nd, sizeof *devices);
    for (size_t d = 0; devices && d < nd; d++) {
        char id[64];
        loom_runtime_device(rt, d, id, sizeof id, NULL);
        const char *want = is_file ? backend : target;
        size_t wl = strlen(want);
        if ((!is_file && !strcmp(id, target)) ||
            (!strchr(want, ':') && !strncmp(id, want, wl) && id[wl] == ':'))
            snprintf(devices[n_devices++], sizeof *devices, "%s", id);
    }
    if (!n_devices && skip_missing && !is_file) {
        printf("backend-test: no device of '%s' on this machine: skipped\n", target);
        free(devices);
        loom_runtime_destroy(rt);
        return 77;
    }
    if (!n_devices) {
        if (is_file)
            fprintf(stderr, "loom backend-test: plugin %s (backend '%s') loaded but offers no "
                    "usable device%s\n", target, backend, msgs.n ? " (see above)" : "");
        else
            fprintf(stderr, "loom backend-test: no device of '%s' found (see 'loom devices')\n",
                    target);
        bt_messages_free(&msgs);
        free(devices);
        loom_runtime_destroy(rt);
        return 2;
    }
    bt_messages_free(&msgs);
    int status = 0;
    for (size_t d = 0; d < n_devices; d++) {
        if (d)
            printf("\n");
        int passed = 0, failed = 0, unsupported = 0;
        bt_run_device(rt, devices[d], precision, only, &passed, &failed, &unsupported);
        printf("%d passed, %d failed, %d unsupported\n", passed, failed, unsupported);
        if (failed)
            status = 1;
        else if (!passed) {
            fprintf(stderr, "loom backend-test: %s ran none of the %d case%s (all unsupported): "
                    "nothing was tested\n", devices[d], unsupported, unsupported == 1 ? "" : "s");
            status = 1;
        }
        loom_runtime_messages_drain(rt, bt_print_message, NULL);
    }
    free(devices);
    loom_runtime_destroy(rt);
    return status;
}
