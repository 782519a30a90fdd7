/*
 * What the simulated NPU takes, and how much work it is: the support rules (the ops and dtypes
 * an int8/fp16 accelerator has, and in which compute mode a node runs) and a node's arithmetic
 * and bytes moved for the roofline estimate. The kernels are in npu_kernels.c (float ops in
 * fp16 or int8 arithmetic) and npu_kernels_quant.c (exact integer ops).
 */
#include "npu_sim.h"

#include <stdarg.h>
#include <stdio.h>

static int say_no(char *reason, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int say_no(char *reason, size_t len, const char *fmt, ...)
{
    if (reason && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, len, fmt, ap);
        va_end(ap);
    }
    return 0;
}

/* ---- support rules ------------------------------------------------------------------------- */

static int is_q8(loom_dtype t)
{
    return t == LOOM_DTYPE_I8 || t == LOOM_DTYPE_U8;
}

static const char *dtype_word(loom_dtype t)
{
    switch (t) {
    case LOOM_DTYPE_F32: return "float32";
    case LOOM_DTYPE_F16: return "float16";
    case LOOM_DTYPE_BF16: return "bfloat16";
    case LOOM_DTYPE_I8: return "int8";
    case LOOM_DTYPE_U8: return "uint8";
    case LOOM_DTYPE_I32: return "int32";
    case LOOM_DTYPE_I64: return "int64";
    case LOOM_DTYPE_BOOL: return "bool";
    default: return "undefined";
    }
}

/* The float mode of an arithmetic node whose float inputs have dtype T. */
static int float_mode(const loom_node_desc *node, loom_dtype t, npu_mode *mode, char *reason,
                      size_t len)
{
    if (t == LOOM_DTYPE_F16) {
        *mode = NPU_MODE_F16;
        return 1;
    }
    if (t != LOOM_DTYPE_F32)
        return say_no(reason, len, "npu-sim: %s on %s is not supported (float16, or float32 "
                      "with reduced precision)", node->op_name, dtype_word(t));
    uint32_t p = LOOM_NODE_DESC_HAS_PRECISION(node) ? node->precision : LOOM_PRECISION_F32;
    if (p == LOOM_PRECISION_F16) {
        *mode = NPU_MODE_F16;
        return 1;
    }
    if (p == LOOM_PRECISION_INT8) {
        *mode = NPU_MODE_INT8;
        return 1;
    }
    return say_no(reason, len, "npu-sim: float32 %s needs --precision fp16 or int8",
                  node->op_name);
}

static int scale_ok(const loom_node_desc *node, uint32_t k, int64_t per_axis)
{
    if (!npu_input_present(node, k))
        return 0;
    int64_t n = npu_numel(&node->inputs[k]);
    return n == 1 || (per_axis > 0 && n == per_axis && node->inputs[k].rank == 1);
}

int npu_check(const loom_node_desc *node, npu_mode *mode, char *reason, size_t len)
{
    const char *op = node->op_name ? node->op_name : "this operator";
    switch (node->op) {
    case LOOM_OP_CONV: case LOOM_OP_MATMUL: case LOOM_OP_GEMM: case LOOM_OP_RELU:
    case LOOM_OP_CLIP: case LOOM_OP_ADD: case LOOM_OP_MUL: case LOOM_OP_MAX_POOL:
    case LOOM_OP_AVERAGE_POOL: case LOOM_OP_GLOBAL_AVERAGE_POOL: case LOOM_OP_RESHAPE:
    case LOOM_OP_FLATTEN: case LOOM_OP_QUANTIZE_LINEAR: case LOOM_OP_DEQUANTIZE_LINEAR:
    case LOOM_OP_QLINEAR_CONV: case LOOM_OP_QLINEAR_MAT_MUL: case LOOM_OP_MOE_EXPERT:
        break;
    default:
        return say_no(reason, len, "npu-sim: %s is not supported", op);
    }
    if (node->n_inputs > NPU_MAX_IN || node->n_outputs < 1 || node->n_outputs > 2 ||
        node->n_inputs < 1)
        return say_no(reason, len, "npu-sim: %s with %u inputs and %u outputs is not supported",
                      op, node->n_inputs, node->n_outputs);
    for (uint32_t k = 0; k < node->n_inputs; k++)
        if (npu_input_present(node, k) && node->inputs[k].rank > 4)
            return say_no(reason, len, "npu-sim: %s: input %u has rank %u (at most 4)", op, k,
                          node->inputs[k].rank);
    for (uint32_t k = 0; k < node->n_outputs; k++)
        if (node->outputs[k].rank > 4)
            return say_no(reason, len, "npu-sim: %s: output %u has rank %u (at most 4)", op, k,
                          node->outputs[k].rank);
    if (node->n_outputs != 1)
        return say_no(reason, len, "npu-sim: %s with a second output is not supported", op);

    const loom_tensor_desc *x = &node->inputs[0];
    switch (node->op) {
    case LOOM_OP_RESHAPE: case LOOM_OP_FLATTEN:
        if (x->dtype == LOOM_DTYPE_F32)
            return float_mode(node, x->dtype, mode, reason, len) ? (*mode = NPU_MODE_EXACT, 1)
                                                                 : 0;
        if (x->dtype != LOOM_DTYPE_F16 && !is_q8(x->dtype))
            return say_no(reason, len, "npu-sim: %s of %s is not supported", op,
                          dtype_word(x->dtype));
        *mode = NPU_MODE_EXACT;
        return 1;
    case LOOM_OP_QUANTIZE_LINEAR: {
        if (!npu_is_float(x->dtype) || !is_q8(node->outputs[0].dtype))
            return say_no(reason, len, "npu-sim: QuantizeLinear from %s to %s is not supported",
                          dtype_word(x->dtype), dtype_word(node->outputs[0].dtype));
        int64_t ax = loom_node_attr_int(node, "axis", 0);
        if (!scale_ok(node, 1, x->rank ? x->dims[ax < x->rank ? ax : 0] : 1))
            return say_no(reason, len, "npu-sim: QuantizeLinear: unsupported scale layout");
        *mode = NPU_MODE_EXACT;
        return 1;
    }
    case LOOM_OP_DEQUANTIZE_LINEAR: {
        if (!is_q8(x->dtype) || !npu_is_float(node->outputs[0].dtype))
            return say_no(reason, len, "npu-sim: DequantizeLinear from %s is not supported",
                          dtype_word(x->dtype));
        int64_t ax = loom_node_attr_int(node, "axis", 0);
        if (!scale_ok(node, 1, x->rank ? x->dims[ax < x->rank ? ax : 0] : 1))
            return say_no(reason, len, "npu-sim: DequantizeLinear: unsupported scale layout");
        *mode = NPU_MODE_EXACT;
        return 1;
    }
    case LOOM_OP_QLINEAR_MAT_MUL:
        if (node->n_inputs != 8 || node->inputs[0].rank != 2 || node->inputs[3].rank != 2)
            return say_no(reason, len, "npu-sim: QLinearMatMul is 2-D only");
        if (!is_q8(x->dtype) || !is_q8(node->inputs[3].dtype) ||
            !is_q8(node->outputs[0].dtype) || node->inputs[1].dtype != LOOM_DTYPE_F32 ||
            node->inputs[4].dtype != LOOM_DTYPE_F32 || node->inputs[6].dtype != LOOM_DTYPE_F32)
            return say_no(reason, len, "npu-sim: QLinearMatMul: only int8/uint8 data with "
                          "float32 scales is supported");
        if (!scale_ok(node, 1, 0) || !scale_ok(node, 6, 0) ||
            !scale_ok(node, 4, node->inputs[3].dims[1]) ||
            (npu_input_present(node, 2) && npu_numel(&node->inputs[2]) != 1) ||
            (npu_input_present(node, 7) && npu_numel(&node->inputs[7]) != 1) ||
            (npu_input_present(node, 5) && npu_numel(&node->inputs[5]) != 1))
            return say_no(reason, len, "npu-sim: QLinearMatMul: only per-tensor scales (and "
                          "per-column scales of B) are supported");
        *mode = NPU_MODE_EXACT;
        return 1;
    case LOOM_OP_QLINEAR_CONV:
        if (node->n_inputs < 8 || x->rank != 4)
            return say_no(reason, len, "npu-sim: QLinearConv is 2-D only");
        if (!is_q8(x->dtype) || !is_q8(node->inputs[3].dtype) ||
            !is_q8(node->outputs[0].dtype) || node->inputs[1].dtype != LOOM_DTYPE_F32 ||
            node->inputs[4].dtype != LOOM_DTYPE_F32 || node->inputs[6].dtype != LOOM_DTYPE_F32)
            return say_no(reason, len, "npu-sim: QLinearConv: only int8/uint8 data with "
                          "float32 scales is supported");
        if (!scale_ok(node, 1, 0) || !scale_ok(node, 6, 0) ||
            !scale_ok(node, 4, node->inputs[3].dims[0]) ||
            (npu_input_present(node, 5) && npu_numel(&node->inputs[5]) != 1) ||
            (npu_input_present(node, 8) && node->inputs[8].dtype != LOOM_DTYPE_I32))
            return say_no(reason, len, "npu-sim: QLinearConv: only per-tensor scales (per "
                          "output channel for W), a per-tensor W zero point and an int32 bias "
                          "are supported");
        *mode = NPU_MODE_EXACT;
        return 1;
    default:
        break;
    }

    /* Float arithmetic: every float input has the dtype of input 0. */
    for (uint32_t k = 1; k < node->n_inputs; k++)
        if (npu_input_present(node, k) && node->inputs[k].dtype != x->dtype)
            return say_no(reason, len, "npu-sim: %s with mixed dtypes is not supported", op);
    if (!float_mode(node, x->dtype, mode, reason, len))
        return 0;
    switch (node->op) {
    case LOOM_OP_CONV:
        if (x->rank != 4 || node->inputs[1].rank != 4)
            return say_no(reason, len, "npu-sim: Conv is 2-D only (input of rank %u)", x->rank);
        break;
    case LOOM_OP_MATMUL:
        if (x->rank < 2 || node->inputs[1].rank < 2)
            return say_no(reason, len, "npu-sim: MatMul needs inputs of rank 2 to 4");
        break;
    case LOOM_OP_MAX_POOL: case LOOM_OP_AVERAGE_POOL:
        if (x->rank != 4)
            return say_no(reason, len, "npu-sim: %s is 2-D only (input of rank %u)", op,
                          x->rank);
        break;
    case LOOM_OP_GLOBAL_AVERAGE_POOL:
        if (x->rank < 3)
            return say_no(reason, len, "npu-sim: GlobalAveragePool needs an input of rank 3 "
                          "or 4");
        break;
    case LOOM_OP_MOE_EXPERT:
        if (*mode != NPU_MODE_F16)
            return say_no(reason, len, "npu-sim: MoEExpert runs in fp16 only (--precision "
                          "fp16, or float16 data)");
        break;
    case LOOM_OP_CLIP:
        for (uint32_t k = 1; k < node->n_inputs && k < 3; k++)
            if (npu_input_present(node, k) && !(node->input_constants && node->input_constants[k]))
                return say_no(reason, len, "npu-sim: Clip with bounds computed at run time is "
                              "not supported");
        break;
    default:
        break;
    }
    if (*mode == NPU_MODE_INT8 && (node->op == LOOM_OP_MATMUL || node->op == LOOM_OP_GEMM ||
                                   node->op == LOOM_OP_CONV)) {
        /* int32 accumulators hold at most 2^31 / 127^2 products */
        const loom_tensor_desc *w = &node->inputs[1];
        int64_t red;
        if (node->op == LOOM_OP_CONV)
            red = w->dims[0] ? npu_numel(w) / w->dims[0] : 0;
        else if (node->op == LOOM_OP_MATMUL)
            red = x->dims[x->rank - 1];
        else
            red = loom_node_attr_int(node, "transA", 0) ? x->dims[0] : x->dims[1];
        if (red > 133000)
            return say_no(reason, len, "npu-sim: int8 %s reduces over %lld terms (int32 "
                          "accumulators hold at most 133000)", op, (long long)red);
    }
    return 1;
}

/* ---- work ------------------------------------------------------------------------------------ */

void npu_work(const loom_node_desc *node, npu_mode mode, double *flops, double *bytes)
{
    double f = 0, b = 0;
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    double out = (double)npu_numel(y);
    switch (node->op) {
    case LOOM_OP_CONV: case LOOM_OP_QLINEAR_CONV: {
        const loom_tensor_desc *w = &node->inputs[node->op == LOOM_OP_CONV ? 1 : 3];
        double per = w->dims[0] ? (double)npu_numel(w) / (double)w->dims[0] : 0;
        f = 2.0 * out * per;
        break;
    }
    case LOOM_OP_MATMUL: case LOOM_OP_QLINEAR_MAT_MUL: {
        const loom_tensor_desc *a = x;
        f = 2.0 * out * (double)a->dims[a->rank - 1];
        break;
    }
    case LOOM_OP_GEMM: {
        int64_t kk = loom_node_attr_int(node, "transA", 0) ? x->dims[0] : x->dims[1];
        f = 2.0 * out * (double)kk;
        break;
    }
    case LOOM_OP_MAX_POOL: case LOOM_OP_AVERAGE_POOL: {
        const loom_attr *ks = loom_node_attr(node, "kernel_shape");
        double taps = 1;
        if (ks && ks->kind == LOOM_ATTR_INTS)
            for (size_t i = 0; i < ks->count; i++)
                taps *= (double)ks->ints[i];
        f = out * taps;
        break;
    }
    case LOOM_OP_GLOBAL_AVERAGE_POOL:
        f = (double)npu_numel(x);
        break;
    case LOOM_OP_RESHAPE: case LOOM_OP_FLATTEN:
        f = 0;
        break;
    case LOOM_OP_MOE_EXPERT: {
        /* The tokens it is expected to receive (tokens * k / num_experts, as the registry's
         * cost): two GEMMs (three gated) of hidden x inter per token. */
        const loom_tensor_desc *r = &node->inputs[1], *w1 = &node->inputs[2];
        double hidden = (double)x->dims[x->rank - 1], inter = (double)w1->dims[0];
        double k = (double)loom_node_attr_int(node, "k", 1);
        double gated = npu_input_present(node, 6) ? 3.0 : 2.0;
        f = (double)r->dims[0] * k / (double)(r->dims[1] ? r->dims[1] : 1) * 2.0 * hidden *
            inter * gated;
        break;
    }
    default:
        f = out; /* elementwise and quantisation: about one operation per element */
        break;
    }
    /* Bytes in the device's formats: fp16 or int8 for float tensors, as stored otherwise. */
    for (uint32_t k = 0; k < node->n_inputs + node->n_outputs; k++) {
        const loom_tensor_desc *d = k < node->n_inputs ? &node->inputs[k]
                                                       : &node->outputs[k - node->n_inputs];
        if (d->dtype == LOOM_DTYPE_UNDEFINED)
            continue;
        if (node->op == LOOM_OP_RESHAPE && k == 1)
            continue; /* the shape input is never read */
        size_t es = loom_dtype_size(d->dtype);
        if (d->dtype == LOOM_DTYPE_F32 && mode == NPU_MODE_F16)
            es = 2;
        else if (d->dtype == LOOM_DTYPE_F32 && mode == NPU_MODE_INT8)
            es = 1;
        b += (double)npu_numel(d) * (double)es;
    }
    *flops = f;
    *bytes = b;
}

