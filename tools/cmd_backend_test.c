/*
 * `loom backend-test PLUGIN.so|BACKEND`: conformance of a backend against the CPU reference.
 * Every op of a fixed case list (several shapes and dtypes per op) is planned strictly on the
 * backend's device; what it accepts is run there and on cpu:0 with the same seeded inputs, and
 * the outputs are compared. Prints an op x dtype table: pass, FAIL (max error) or unsupported
 * (the backend's reason). Then the ABI 1.0 checks: small chains offered to the backend's claim()
 * (kept as one kernel or not, and the numbers against each node run alone with the CPU
 * reference kernels), and on an in-order device with enqueue/submit, chains of several nodes
 * run several times with the run's copies, host wake-ups and event waits. Exit 0 when nothing
 * failed, 1 when something did, 2 on bad usage.
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
/* Operators of issue 13 (one case each): the rest of the Reduce family, a scan, a mask and
 * the element and ND indexing ops, with constant indices and axes as exported models have. */
static loom_value b_op(loom_graph *g, const char *op, const loom_value *in, size_t n,
                       const loom_attr *at, size_t na)
{
    loom_value y = LOOM_NO_VALUE;
    loom_graph_op(g, op, NULL, in, n, at, na, &y, 1);
    return y;
}
static loom_value b_rl2(loom_graph *g, const loom_value *x)
{
    int64_t axes[1] = {-1};
    loom_attr at[2] = {loom_attr_ints("axes", 1, axes), loom_attr_int("keepdims", 0)};
    return b_op(g, "ReduceL2", x, 1, at, 2);
}
static loom_value b_rlse(loom_graph *g, const loom_value *x)
{
    int64_t axes[2] = {0, 2};
    loom_attr at = loom_attr_ints("axes", 2, axes);
    return b_op(g, "ReduceLogSumExp", x, 1, &at, 1);
}
static loom_value b_cumsum(loom_graph *g, const loom_value *x)
{
    int64_t axis = 1;
    loom_value in[2] = {x[0], loom_constant(g, NULL, LOOM_DTYPE_I64, 0, NULL, &axis)};
    loom_attr at = loom_attr_int("exclusive", 1);
    return b_op(g, "CumSum", in, 2, &at, 1);
}
static loom_value b_trilu(loom_graph *g, const loom_value *x)
{
    int64_t k = -1;
    loom_value in[2] = {x[0], loom_constant(g, NULL, LOOM_DTYPE_I64, 0, NULL, &k)};
    loom_attr at = loom_attr_int("upper", 0);
    return b_op(g, "Trilu", in, 2, &at, 1);
}
static loom_value b_gather_el(loom_graph *g, const loom_value *x)
{
    int64_t idx[8] = {3, 0, -1, 2, 1, 1, 0, -4}, d[2] = {2, 4};
    loom_value in[2] = {x[0], loom_constant(g, NULL, LOOM_DTYPE_I64, 2, d, idx)};
    loom_attr at = loom_attr_int("axis", 0);
    return b_op(g, "GatherElements", in, 2, &at, 1);
}
static loom_value b_gather_nd(loom_graph *g, const loom_value *x)
{
    int64_t idx[6] = {1, 2, 0, -1, 3, 0}, d[2] = {3, 2};
    loom_value in[2] = {x[0], loom_constant(g, NULL, LOOM_DTYPE_I64, 2, d, idx)};
    return b_op(g, "GatherND", in, 2, NULL, 0);
}
static loom_value b_scatter_nd(loom_graph *g, const loom_value *x)
{
    int64_t idx[3] = {2, 0, 2}, d[2] = {3, 1};
    loom_value in[3] = {x[0], loom_constant(g, NULL, LOOM_DTYPE_I64, 2, d, idx), x[1]};
    loom_attr at = loom_attr_string("reduction", "add");
    return b_op(g, "ScatterND", in, 3, &at, 1);
}
static loom_value b_mod(loom_graph *g, const loom_value *x)
{
    loom_attr at = loom_attr_int("fmod", 1);
    return b_op(g, "Mod", x, 2, &at, 1);
}
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
    {"ReduceL2", "[3,5,4] axis -1", 1, {IN(F32, 3, 3, 5, 4, 0)}, b_rl2},
    {"ReduceLogSumExp", "[3,5,4] axes 0,2", 1, {IN(F32, 3, 3, 5, 4, 0)}, b_rlse},
    {"CumSum", "[4,6] axis 1 exclusive", 1, {IN(F32, 2, 4, 6, 0, 0)}, b_cumsum},
    {"Trilu", "[2,5,6] lower k -1", 1, {IN(F32, 3, 2, 5, 6, 0)}, b_trilu},
    {"GatherElements", "[4,4] axis 0", 1, {IN(F32, 2, 4, 4, 0, 0)}, b_gather_el},
    {"GatherND", "[4,3,5] by [3,2]", 1, {IN(F32, 3, 4, 3, 5, 0)}, b_gather_nd},
    {"ScatterND", "[3,7] add, duplicates", 2, {IN(F32, 2, 3, 7, 0, 0), IN(F32, 2, 3, 7, 0, 0)},
     b_scatter_nd},
    {"Mod", "[4,7] fmod [7]", 2, {IN(F32, 2, 4, 7, 0, 0), INP(F32, 1, 7, 0, 0, 0)}, b_mod},
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

/* ---- ABI 1.0: subgraph claims and the pipelined path ------------------------------------- */

/* A small chain of nodes a backend may claim as one unit, or run through its queue. */
typedef struct bt_chain {
    const char *name;  /* "MatMul+Add(bias)+Relu" */
    const char *shape; /* for the table */
    int n_in;
    bt_input in[4];
    loom_value (*build)(loom_graph *g, const loom_value *x);
} bt_chain;

static loom_value c_add_relu(loom_graph *g, const loom_value *x)
{
    return loom_relu(g, loom_add(g, x[0], x[1]));
}
static loom_value c_mm_bias_relu(loom_graph *g, const loom_value *x)
{
    return loom_relu(g, loom_add(g, loom_matmul(g, x[0], x[1]), x[2]));
}
static loom_value c_gemm_relu(loom_graph *g, const loom_value *x)
{
    return loom_relu(g, loom_gemm(g, x[0], x[1], x[2], 1.0f, 1.0f, 0, 1));
}
static loom_value c_add_layernorm(loom_graph *g, const loom_value *x)
{
    return loom_layer_norm(g, loom_add(g, x[0], x[1]), x[2], x[3], -1, 1e-5f);
}
static loom_value c_scale_mask_softmax(loom_graph *g, const loom_value *x)
{
    return loom_softmax(g, loom_add(g, loom_mul(g, x[0], loom_constant_f32(g, 0.35f)), x[1]), -1);
}
static loom_value c_conv_bias_relu(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 1;
    p.strides[0] = p.strides[1] = 1;
    return loom_relu(g, loom_add(g, loom_conv(g, x[0], x[1], LOOM_NO_VALUE, &p), x[2]));
}

static loom_value c_hard_swish(loom_graph *g, loom_value v)
{
    loom_value y = LOOM_NO_VALUE;
    loom_graph_op(g, "HardSwish", NULL, &v, 1, NULL, 0, &y, 1);
    return y;
}
/* MobileNet's convolutions with their epilogues (each a kernel of its own on the CPU): a
 * depthwise 5x5, a 1x1 with a residual, a 3x3/2 stem. */
static loom_value c_dw_hswish(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 2;
    p.group = 13;
    return c_hard_swish(g, loom_conv(g, x[0], x[1], x[2], &p));
}
static loom_value c_pw_residual_relu(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    return loom_relu(g, loom_add(g, loom_conv(g, x[0], x[1], x[2], &p), x[3]));
}
static loom_value c_stem_hswish(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 1;
    p.strides[0] = p.strides[1] = 2;
    return c_hard_swish(g, loom_conv(g, x[0], x[1], x[2], &p));
}

/* A 3x3 conv, Relu and a 2x2/2 MaxPool (the CNN fixture's blocks; one kernel on the CPU,
 * which pools each band of rows it computes). */
static loom_value c_conv_relu_pool(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 1;
    loom_window_params q = {0};
    q.n_spatial = 2;
    q.kernel_shape[0] = q.kernel_shape[1] = 2;
    q.strides[0] = q.strides[1] = 2;
    return loom_max_pool(g, loom_relu(g, loom_conv(g, x[0], x[1], x[2], &p)), &q);
}

/* Chains offered to claim(): the fusions backends commonly compile (epilogues of a matrix
 * product or convolution, a residual add into a normalisation, attention's scale and mask). */
static const bt_chain chains[] = {
    {"Add->Relu", "[4,33]+[4,33]", 2, {IN(F32, 2, 4, 33, 0, 0), IN(F32, 2, 4, 33, 0, 0)},
     c_add_relu},
    {"MatMul+Add(bias)+Relu", "[8,32]x[32,16]+[16]", 3,
     {IN(F32, 2, 8, 32, 0, 0), W(F32, 2, 32, 16, 0, 0), W(F32, 1, 16, 0, 0, 0)}, c_mm_bias_relu},
    {"Gemm+Relu", "[6,24]x[16,24]T+[16]", 3,
     {IN(F32, 2, 6, 24, 0, 0), W(F32, 2, 16, 24, 0, 0), W(F32, 1, 16, 0, 0, 0)}, c_gemm_relu},
    {"Add+LayerNormalization", "[4,32]+[4,32]", 4,
     {IN(F32, 2, 4, 32, 0, 0), IN(F32, 2, 4, 32, 0, 0), W(F32, 1, 32, 0, 0, 0),
      W(F32, 1, 32, 0, 0, 0)},
     c_add_layernorm},
    {"Mul(scale)+Add(mask)+Softmax", "[2,4,8,8]*s+[8,8]", 2,
     {IN(F32, 4, 2, 4, 8, 8), W(F32, 2, 8, 8, 0, 0)}, c_scale_mask_softmax},
    {"Conv+Add(bias)+Relu", "[1,3,8,8]*[4,3,3,3]+[4,1,1]", 3,
     {IN(F32, 4, 1, 3, 8, 8), W(F32, 4, 4, 3, 3, 3), W(F32, 3, 4, 1, 1, 0)}, c_conv_bias_relu},
    {"Conv(depthwise 5x5)+HardSwish", "[2,13,9,11]*[13,1,5,5]+[13]", 3,
     {IN(F32, 4, 2, 13, 9, 11), W(F32, 4, 13, 1, 5, 5), W(F32, 1, 13, 0, 0, 0)}, c_dw_hswish},
    {"Conv(1x1)+Add(residual)+Relu", "[2,24,5,7]*[20,24,1,1]+Z", 4,
     {IN(F32, 4, 2, 24, 5, 7), W(F32, 4, 20, 24, 1, 1), W(F32, 1, 20, 0, 0, 0),
      IN(F32, 4, 2, 20, 5, 7)},
     c_pw_residual_relu},
    {"Conv(3x3/2)+HardSwish", "[1,3,21,20]*[16,3,3,3]+[16]", 3,
     {IN(F32, 4, 1, 3, 21, 20), W(F32, 4, 16, 3, 3, 3), W(F32, 1, 16, 0, 0, 0)}, c_stem_hswish},
    {"Conv(3x3)+Relu+MaxPool(2x2/2)", "[2,3,17,24]*[16,3,3,3]+[16]", 3,
     {IN(F32, 4, 2, 3, 17, 24), W(F32, 4, 16, 3, 3, 3), W(F32, 1, 16, 0, 0, 0)},
     c_conv_relu_pool},
    {"Conv(3x3)+Relu+MaxPool(2x2/2)", "[2,16,10,12]*[20,16,3,3]+[20]", 3,
     {IN(F32, 4, 2, 16, 10, 12), W(F32, 4, 20, 16, 3, 3), W(F32, 1, 20, 0, 0, 0)},
     c_conv_relu_pool},
};

static loom_value p_add_chain(loom_graph *g, const loom_value *x)
{
    loom_value v = x[0];
    for (int i = 0; i < 8; i++)
        v = loom_add(g, v, i % 2 ? x[2] : x[1]);
    return loom_relu(g, v);
}
static loom_value p_relu_chain(loom_graph *g, const loom_value *x)
{
    loom_value v = x[0];
    for (int i = 0; i < 8; i++)
        v = loom_relu(g, i % 2 ? v : loom_neg(g, v));
    return v;
}
static loom_value p_relu_only(loom_graph *g, const loom_value *x)
{
    loom_value v = x[0];
    for (int i = 0; i < 8; i++)
        v = loom_relu(g, v);
    return v;
}

/* Chains of several nodes on one device, run several times: what an in-order queue (enqueue or
 * submit, events, asynchronous copies) has to get right. */
static const bt_chain pipelines[] = {
    {"8 x Add -> Relu", "[16,256]", 3,
     {IN(F32, 2, 16, 256, 0, 0), W(F32, 2, 16, 256, 0, 0), W(F32, 2, 16, 256, 0, 0)},
     p_add_chain},
    {"8 x (Neg, Relu)", "[16,256]", 1, {IN(F32, 2, 16, 256, 0, 0)}, p_relu_chain},
    {"8 x Relu", "[16,256]", 1, {IN(F32, 2, 16, 256, 0, 0)}, p_relu_only},
};

/* A chain's graph: constants filled from SEED at build time, inputs declared (their data is
 * made per run). NULL when the graph does not check (ERR says why). */
static loom_graph *bt_chain_graph(const bt_chain *c, uint64_t *seed, void **const_data, char *err,
                                  size_t err_len)
{
    loom_graph *g = loom_graph_create(c->name);
    loom_value x[4];
    for (int k = 0; k < c->n_in; k++) {
        const bt_input *in = &c->in[k];
        char name[16];
        snprintf(name, sizeof name, "x%d", k);
        const_data[k] = NULL;
        if (in->constant) {
            size_t n = numel(in);
            const_data[k] = calloc(n + 1, loom_dtype_size(in->dtype));
            if (const_data[k])
                fill(const_data[k], in->dtype, n, in->positive, seed);
            x[k] = loom_constant(g, name, in->dtype, in->rank, in->dims, const_data[k]);
        } else {
            x[k] = loom_input(g, name, in->dtype, in->rank, in->dims);
        }
    }
    loom_output(g, c->build(g, x), "y");
    if (loom_graph_check(g) != LOOM_OK) {
        snprintf(err, err_len, "%s", loom_last_error());
        loom_graph_destroy(g);
        return NULL;
    }
    return g;
}

/* The reference: G's nodes one by one, in the order they were built, with the CPU reference
 * kernels on host memory (no graph pass, no claim, no plan), INPUTS[i] holding graph input i.
 * Writes the first output into REF (of its dtype and shape). Fails with the evaluator's status
 * and message in ERR. */
static loom_status bt_reference(const loom_graph *g, void *const *inputs, loom_tensor *ref,
                                char *err, size_t err_len)
{
    graph_eval_fn eval = runtime_reference_eval();
    void **buf = calloc(g->n_values + 1, sizeof *buf);
    uint8_t *owned = calloc(g->n_values + 1, 1);
    loom_status st = buf && owned ? LOOM_OK : LOOM_ERR_OUT_OF_MEMORY;
    if (st != LOOM_OK)
        snprintf(err, err_len, "out of memory");
    for (size_t i = 0; st == LOOM_OK && i < g->n_inputs; i++)
        buf[g->inputs[i]] = inputs[i];
    for (size_t v = 0; st == LOOM_OK && v < g->n_values; v++)
        if (g->values[v].kind == GRAPH_VALUE_CONSTANT)
            buf[v] = (void *)g->values[v].data;
    for (size_t i = 0; st == LOOM_OK && i < g->n_nodes; i++) {
        const graph_node *gn = &g->nodes[i];
        loom_tensor_desc in_d[16], out_d[8];
        const void *in_c[16];
        const void *in_p[16];
        void *out_p[8];
        if (gn->n_inputs > 16 || gn->n_outputs > 8) {
            snprintf(err, err_len, "node %s has too many inputs or outputs", gn->name);
            st = LOOM_ERR_UNSUPPORTED;
            break;
        }
        loom_node_desc d;
        graph_node_desc(g, i, &d, in_d, out_d, in_c);
        for (uint32_t k = 0; k < gn->n_inputs; k++)
            in_p[k] = gn->inputs[k] == LOOM_NO_VALUE ? NULL : buf[gn->inputs[k]];
        for (uint32_t k = 0; k < gn->n_outputs && st == LOOM_OK; k++) {
            loom_value v = gn->outputs[k];
            size_t bytes = (size_t)loom_tensor_desc_numel(&out_d[k]) * loom_dtype_size(out_d[k].dtype);
            if (!(buf[v] = calloc(bytes + 16, 1))) {
                snprintf(err, err_len, "out of memory");
                st = LOOM_ERR_OUT_OF_MEMORY;
            }
            owned[v] = 1;
            out_p[k] = buf[v];
        }
        if (st == LOOM_OK)
            st = eval(&d, in_p, out_p, err, err_len);
    }
    if (st == LOOM_OK)
        memcpy(loom_tensor_data(ref), buf[g->outputs[0]], loom_tensor_nbytes(ref));
    for (size_t v = 0; buf && owned && v < g->n_values; v++)
        if (owned[v])
            free(buf[v]);
    free(buf);
    free(owned);
    return st;
}

/* Run PLAN (of chain C's graph G) RUNS times, each with new inputs from SEED, against the
 * reference. Returns 0 pass, 1 FAIL, 2 no reference; RESULT says how, STATS sums the runs'
 * copies, wake-ups and event waits. */
static int bt_chain_runs(loom_plan *plan, const loom_graph *g, const bt_chain *c, int runs,
                         uint64_t *seed, double rtol, double atol, loom_run_stats *sum,
                         char *result, size_t result_len)
{
    void *data[4] = {0};
    loom_tensor *ins[4] = {0};
    size_t n_ins = 0;
    for (int k = 0; k < c->n_in; k++)
        if (!c->in[k].constant) {
            data[n_ins] = calloc(numel(&c->in[k]) + 1, loom_dtype_size(c->in[k].dtype));
            loom_tensor_wrap(c->in[k].dtype, c->in[k].rank, c->in[k].dims, data[n_ins],
                             &ins[n_ins]);
            n_ins++;
        }
    loom_tensor *out = NULL, *ref = NULL;
    loom_plan_make_outputs(plan, &out, 1);
    loom_plan_make_outputs(plan, &ref, 1);
    int outcome = 0;
    double max_abs_all = 0;
    memset(sum, 0, sizeof *sum);
    sum->struct_size = sizeof *sum;
    for (int r = 0; r < runs && outcome == 0; r++) {
        size_t j = 0;
        for (int k = 0; k < c->n_in; k++)
            if (!c->in[k].constant) {
                fill(data[j], c->in[k].dtype, numel(&c->in[k]), c->in[k].positive, seed);
                j++;
            }
        char err[512];
        if (bt_reference(g, data, ref, err, sizeof err) != LOOM_OK) {
            snprintf(result, result_len, "no reference: %s", err);
            outcome = 2;
            break;
        }
        memset(loom_tensor_data(out), 0, loom_tensor_nbytes(out));
        loom_run_stats st = {.struct_size = sizeof st};
        if (loom_plan_run(plan, (const loom_tensor *const *)ins, n_ins, &out, 1, &st) != LOOM_OK) {
            snprintf(result, result_len, "FAIL (run %d): %s", r + 1, loom_last_error());
            outcome = 1;
            break;
        }
        sum->copies += st.copies;
        sum->peer_copies += st.peer_copies;
        sum->host_wakeups += st.host_wakeups;
        sum->event_waits += st.event_waits;
        sum->fallback_count += st.fallback_count;
        double max_abs, worst = compare(out, ref, rtol, atol, &max_abs);
        if (max_abs > max_abs_all || isnan(max_abs))
            max_abs_all = max_abs;
        if (worst > 1.0) {
            snprintf(result, result_len, "FAIL (run %d of %d: max error %.3g)", r + 1, runs,
                     max_abs);
            outcome = 1;
        }
    }
    if (outcome == 0)
        snprintf(result, result_len, "pass (max error %.2g)", max_abs_all);
    loom_tensor_destroy(out);
    loom_tensor_destroy(ref);
    for (size_t k = 0; k < n_ins; k++) {
        loom_tensor_destroy(ins[k]);
        free(data[k]);
    }
    return outcome;
}

/* The claim cases on DEVICE (index DI): each chain planned strictly there; whether a claim was
 * kept as one unit (the plan's claims), and its numbers against the reference. */
static void bt_run_claims(loom_runtime *rt, const char *device, int di, uint32_t precision,
                          double rtol, double atol, int *kept, int *not_claimed, int *failed)
{
    const loom_backend *be = rt->devices[di].backend;
    printf("\nclaims on %s (claim, prepare_subgraph; reference: each node alone, CPU reference "
           "kernels)\n", device);
    if (!RUNTIME_SLOT(be, claim) || !RUNTIME_SLOT(be, prepare_subgraph)) {
        printf("  backend '%s' has no claim() and prepare_subgraph(): node by node only, "
               "nothing to check\n", be->name);
        return;
    }
    printf("%-30s %-28s %s\n", "CHAIN", "CASE", "RESULT");
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (size_t c = 0; c < sizeof chains / sizeof *chains; c++) {
        const bt_chain *ch = &chains[c];
        void *cdata[4];
        char result[1400], err[512];
        int outcome = 1; /* 0 kept and right, 1 failed, 2 not claimed */
        loom_graph *g = bt_chain_graph(ch, &seed, cdata, err, sizeof err);
        loom_plan *pt = NULL;
        if (!g) {
            snprintf(result, sizeof result, "not claimed: the graph does not check: %s", err);
            outcome = 2;
        } else {
            loom_plan_options po = {.struct_size = sizeof po, .device = device, .strict = 1,
                                    .precision = precision};
            loom_status st = loom_plan_create(rt, g, &po, &pt);
            if (st == LOOM_ERR_UNSUPPORTED) {
                snprintf(result, sizeof result, "not claimed, and not supported node by node: %s",
                         loom_last_error());
                outcome = 2;
            } else if (st != LOOM_OK) {
                snprintf(result, sizeof result, "FAIL (plan): %s", loom_last_error());
            }
        }
        if (pt) {
            /* What the plan made of the device's claims: the kept one covering most nodes. */
            const plan_claim *best = NULL, *other = NULL;
            for (uint32_t k = 0; k < pt->n_claims; k++) {
                const plan_claim *pc = &pt->claims[k];
                if ((int)pc->device != di)
                    continue;
                if (pc->state == PLAN_CLAIM_KEPT && (!best || pc->n_pos > best->n_pos))
                    best = pc;
                else if (pc->state != PLAN_CLAIM_KEPT && !other)
                    other = pc;
            }
            loom_run_stats sum;
            char runs[700];
            int r = bt_chain_runs(pt, g, ch, 2, &seed, rtol, atol, &sum, runs, sizeof runs);
            if (best) {
                snprintf(result, sizeof result, "kept: \"%s\" as one kernel (%u of %zu nodes): %s",
                         best->label, best->n_pos, g->n_nodes, runs);
                outcome = r == 0 ? 0 : r == 1 ? 1 : 2;
            } else {
                const char *how = "not claimed";
                char why[400] = "";
                if (other) {
                    how = other->state == PLAN_CLAIM_FAILED ? "claimed, prepare_subgraph failed"
                          : other->state == PLAN_CLAIM_LOST ? "claimed, lost to another claim"
                                                            : "claimed, split";
                    snprintf(why, sizeof why, " (%s)", other->why);
                }
                size_t pn = 0;
                for (size_t i = 0; i < loom_plan_node_count(pt); i++)
                    pn += !loom_plan_node_is_copy(pt, i);
                char fused[80] = "";
                if (pn < g->n_nodes) /* a graph pass (fuse_epilogue, ...) merged them first */
                    snprintf(fused, sizeof fused, " (the graph passes made %zu node%s of %zu)", pn,
                             pn == 1 ? "" : "s", g->n_nodes);
                snprintf(result, sizeof result, "%s%s%s; as planned: %s", how, fused, why, runs);
                outcome = r == 1 ? 1 : 2;
            }
        }
        printf("%-30s %-28s %s\n", ch->name, ch->shape, result);
        *kept += outcome == 0;
        *failed += outcome == 1;
        *not_claimed += outcome == 2;
        loom_plan_destroy(pt);
        loom_graph_destroy(g);
        for (int k = 0; k < ch->n_in; k++)
            free(cdata[k]);
    }
}

/* The pipelined path on DEVICE (index DI): chains of several nodes run several times through
 * an in-order queue; the run's copies, host wake-ups and event waits are shown. */
static void bt_run_pipeline(loom_runtime *rt, const char *device, int di, uint32_t precision,
                            double rtol, double atol, int *passed, int *failed, int *unsupported)
{
    const runtime_device *rd = &rt->devices[di];
    const loom_backend *be = rd->backend;
    int has_enqueue = RUNTIME_SLOT(be, enqueue) != NULL || be->submit != NULL;
    int has_events = RUNTIME_SLOT(be, event_create) && RUNTIME_SLOT(be, event_record) &&
                     RUNTIME_SLOT(be, event_wait) && RUNTIME_SLOT(be, event_destroy);
    int has_async = RUNTIME_SLOT(be, upload_async) && RUNTIME_SLOT(be, download_async);
    printf("\npipeline on %s (in_order %u; %s; events %s; async copies %s; memory %s)\n", device,
           rd->info.in_order,
           RUNTIME_SLOT(be, enqueue) ? "enqueue" : be->submit ? "submit" : "no enqueue/submit",
           has_events ? "yes" : "no", has_async ? "yes" : "no",
           rd->info.host_visible ? "host-visible" : "device-only");
    if (!rd->info.in_order || !has_enqueue) {
        printf("  not an in-order device with enqueue or submit: nodes run with execute(), "
               "nothing more to check\n");
        return;
    }
    printf("%-30s %-28s %s\n", "CHAIN", "CASE", "RESULT");
    uint64_t seed = 0xD1B54A32D192ED03ull;
    enum { RUNS = 6 };
    for (size_t c = 0; c < sizeof pipelines / sizeof *pipelines; c++) {
        const bt_chain *ch = &pipelines[c];
        void *cdata[4];
        char result[1400], err[512];
        int outcome = 1;
        loom_graph *g = bt_chain_graph(ch, &seed, cdata, err, sizeof err);
        loom_plan *pt = NULL;
        if (!g) {
            snprintf(result, sizeof result, "unsupported: the graph does not check: %s", err);
            outcome = 2;
        } else {
            loom_plan_options po = {.struct_size = sizeof po, .device = device, .strict = 1,
                                    .precision = precision};
            loom_status st = loom_plan_create(rt, g, &po, &pt);
            if (st != LOOM_OK) {
                snprintf(result, sizeof result, "%s: %s",
                         st == LOOM_ERR_UNSUPPORTED ? "unsupported" : "FAIL (plan)",
                         loom_last_error());
                outcome = st == LOOM_ERR_UNSUPPORTED ? 2 : 1;
            }
        }
        if (pt) {
            size_t nodes = loom_plan_node_count(pt), copies = 0, deps[3] = {0};
            for (size_t i = 0; i < nodes; i++)
                copies += loom_plan_node_is_copy(pt, i) != 0;
            for (size_t i = 0; i < loom_plan_dependency_count(pt); i++) {
                loom_dependency_kind kind = LOOM_DEPENDENCY_HOST;
                loom_plan_dependency(pt, i, NULL, NULL, &kind);
                deps[kind == LOOM_DEPENDENCY_EVENT ? 2 : 1]++;
            }
            loom_run_stats sum;
            char runs[700];
            outcome = bt_chain_runs(pt, g, ch, RUNS, &seed, rtol, atol, &sum, runs, sizeof runs);
            snprintf(result, sizeof result,
                     "%d runs: %s; plan: %zu nodes (%zu copies), %zu event / %zu host "
                     "dependencies; per run: %.3g copies (%.3g peer), %.3g host wake-ups, %.3g "
                     "event waits",
                     RUNS, runs, nodes, copies, deps[2], deps[1], (double)sum.copies / RUNS,
                     (double)sum.peer_copies / RUNS, (double)sum.host_wakeups / RUNS,
                     (double)sum.event_waits / RUNS);
        }
        printf("%-30s %-28s %s\n", ch->name, ch->shape, result);
        *passed += outcome == 0;
        *failed += outcome == 1;
        *unsupported += outcome == 2;
        loom_plan_destroy(pt);
        loom_graph_destroy(g);
        for (int k = 0; k < ch->n_in; k++)
            free(cdata[k]);
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
    "Then the checks of backend ABI 1.0, on each device: claims (small chains such as\n"
    "MatMul+Add(bias)+Relu, Add+LayerNormalization, Mul+Add+Softmax, planned strictly there:\n"
    "whether a claim was kept as one kernel, and its numbers against each node run alone with\n"
    "the CPU reference kernels; 'not claimed' is no failure, a kept claim with wrong numbers\n"
    "is) and, on an in-order device with enqueue or submit, the pipeline (chains of 9-16 nodes\n"
    "run 6 times, with the run's copies, host wake-ups and event waits). Summary lines:\n"
    "'claims: N kept, M not claimed, K failed' and 'pipeline: N passed, M failed, K\n"
    "unsupported'. --op skips them.\n"
    "\n"
    "  PLUGIN.so        a plugin file (a name with a '/' or ending in .so): loaded alone for\n"
    "                   this run (LOOM_BACKEND_PATH and the installed folder are not searched),\n"
    "                   and its own devices are the ones tested\n"
    "  BACKEND          a backend already found: cpu, opencl, npu-sim, ...\n"
    "  --precision P    precision accepted for float32 nodes (default f32); tolerances follow\n"
    "  --op OP          only the cases of this operator\n"
    "  --skip-missing   exit 77 (a skipped test) when the backend has no device here\n"
    "\n"
    "Exit status: 0 when no case failed; 1 when one did (an op case, a kept claim or a\n"
    "pipeline chain), or when a device ran none of them (all unsupported: nothing was\n"
    "tested); 2 on bad usage, and when the plugin was\n"
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
        int di = plan_find_device(rt, devices[d]);
        if (!only && di >= 0) {
            /* ABI 1.0: claims and the pipelined path (--op limits the run to the op table) */
            double rtol = precision == LOOM_PRECISION_F32 ? 1e-4 : precision == LOOM_PRECISION_F16 ? 2e-2 : 8e-2;
            double atol = precision == LOOM_PRECISION_F32 ? 1e-5 : precision == LOOM_PRECISION_F16 ? 2e-2 : 8e-2;
            int kept = 0, not_claimed = 0, c_failed = 0, p_passed = 0, p_failed = 0, p_unsup = 0;
            bt_run_claims(rt, devices[d], di, precision, rtol, atol, &kept, &not_claimed,
                          &c_failed);
            bt_run_pipeline(rt, devices[d], di, precision, rtol, atol, &p_passed, &p_failed,
                            &p_unsup);
            printf("\nclaims: %d kept, %d not claimed, %d failed\n", kept, not_claimed, c_failed);
            printf("pipeline: %d passed, %d failed, %d unsupported\n", p_passed, p_failed,
                   p_unsup);
            /* a device that runs only what it claims (an NPU of compiled graphs) is tested too */
            passed += kept + p_passed;
            failed += c_failed + p_failed;
            unsupported += not_claimed + p_unsup;
        }
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
