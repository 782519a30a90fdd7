/*
 * The OpenCL backend's operator table: which family supports and prepares each op, and the
 * helpers the families share (messages, shape tables, broadcast strides, launch shapes). The
 * families: ocl_kernels_elementwise.c, ocl_kernels_layout.c, ocl_kernels_reduce.c,
 * ocl_kernels_scan.c, ocl_kernels_indexing.c and ocl_kernels_gemm.c (CLBlast); their OpenCL C
 * is in ocl_source.c.
 */
#include "ocl_kernels.h"

#include <stdio.h>
#include <string.h>

/* ---- messages and shape tables ------------------------------------------------------------ */

loom_status ocl_kfail(char *err, size_t len, loom_status st, const loom_node_desc *node,
                      const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(err, len, "opencl: node '%s' (%s): %s", node->name ? node->name : "", node->op_name,
             msg);
    return st;
}

/* Upload N int64 values as K's shape table (META, or META2 when SECOND). */
loom_status ocl_put_meta(ocl_state *s, ocl_device *d, ocl_kernel *k, const int64_t *v, size_t n,
                         int second, char *err, size_t len)
{
    cl_mem m = ocl_buffer_from_host(s, d, v, (n ? n : 1) * sizeof(int64_t), err, len);
    if (!m)
        return LOOM_ERR_OUT_OF_MEMORY;
    if (second)
        k->meta2 = m;
    else
        k->meta = m;
    return LOOM_OK;
}

/* Strides (elements) of IN read as OUT's shape under numpy broadcasting (right-aligned). */
void ocl_bcast_strides(const loom_tensor_desc *in, const loom_tensor_desc *out, int64_t *st)
{
    int64_t s = 1;
    for (int d = (int)out->rank - 1, j = (int)in->rank - 1; d >= 0; d--, j--) {
        if (j < 0) {
            st[d] = 0;
            continue;
        }
        st[d] = in->dims[j] == 1 && out->dims[d] != 1 ? 0 : s;
        s *= in->dims[j];
    }
}

void ocl_contiguous_strides(const loom_tensor_desc *t, int64_t *st)
{
    int64_t s = 1;
    for (int d = (int)t->rank - 1; d >= 0; d--) {
        st[d] = s;
        s *= t->dims[d];
    }
}

/* ---- launch shapes ------------------------------------------------------------------------- */

/* The work-group size for KER on D: at most CAP, the kernel's and the device's limits. */
size_t ocl_kernel_local(const ocl_device *d, cl_kernel ker, size_t cap)
{
    size_t wg = 0;
    if (clGetKernelWorkGroupInfo(ker, d->id, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg, &wg, NULL) !=
            CL_SUCCESS || !wg)
        wg = d->max_wg;
    if (wg > d->max_wg)
        wg = d->max_wg;
    return wg < cap ? wg : cap;
}

/* The largest power of two <= the limits of KER on D (and CAP) that is not above WANT's next
 * power of two: a row of WANT elements gets no more work-items than it can use. */
size_t ocl_row_local(const ocl_device *d, cl_kernel ker, int64_t want, size_t cap)
{
    /* On a CPU device a group runs its work-items one after another on one core: a single
     * work-item per group streams through the row with float4 accumulators, and the tree has
     * nothing to do (measured with bench_opencl on PoCL: 1 work-item beat 8, 16 and 256). */
    if (ocl_cpu_like(d))
        cap = 1;
    size_t lim = ocl_kernel_local(d, ker, cap), local = 1;
    while (local * 2 <= lim && (int64_t)local < want)
        local *= 2;
    return local;
}

/* Work-groups for a kernel whose groups loop over ROWS rows: a row per group on a GPU (up to 64
 * per compute unit), four groups per compute unit on a CPU device. At least 1. */
size_t ocl_row_groups(const ocl_device *d, int64_t rows)
{
    int64_t cu = d->info.compute_units ? (int64_t)d->info.compute_units : 1;
    int64_t cap = ocl_cpu_like(d) ? 4 * cu : 64 * cu;
    int64_t g = rows < cap ? rows : cap;
    return g > 0 ? (size_t)g : 1;
}

/* ---- windows (pools and Conv) ------------------------------------------------------------- */

int ocl_window_supports(const loom_node_desc *node, char *reason, size_t len, int conv)
{
    uint32_t rank = node->inputs[0].rank;
    if (node->inputs[0].dtype != LOOM_DTYPE_F32)
        return ocl_reason(reason, len, "%s: f32 only", node->op_name);
    if (!ocl_one_output(node))
        return ocl_reason(reason, len, "%s: the Indices output is not supported", node->op_name);
    if (conv ? (rank < 3 || rank > 4) : (rank < 3 || rank > 5))
        return ocl_reason(reason, len, "%s: %s spatial dims supported (input rank %u)",
                          node->op_name, conv ? "1 or 2" : "1 to 3", rank);
    return 1;
}

/* Spatial attribute NAME of NODE padded in front to 3 dims with FILL (pads: begins then ends). */
void ocl_spatial3(const loom_node_desc *node, const char *name, int64_t fill, int64_t *out3,
                  int which_half)
{
    uint32_t ns = node->inputs[0].rank - 2;
    const loom_attr *a = loom_node_attr(node, name);
    for (int i = 0; i < 3; i++)
        out3[i] = fill;
    for (uint32_t i = 0; i < ns; i++) {
        int64_t v = fill;
        if (a && a->kind == LOOM_ATTR_INTS) {
            size_t at = (size_t)which_half * ns + i;
            if (at < a->count)
                v = a->ints[at];
        }
        out3[3 - ns + i] = v;
    }
}

/* ---- the op table ----------------------------------------------------------------------------- */

int ocl_kernels_supports(const ocl_state *s, const ocl_device *d, const loom_node_desc *node,
                         char *reason, size_t len)
{
    (void)s;
    if (node->n_inputs < 1 || node->n_outputs < 1)
        return ocl_reason(reason, len, "%s: no inputs or outputs", node->op_name);
    if (node->outputs[0].rank > LOOM_MAX_RANK)
        return ocl_reason(reason, len, "%s: rank too large", node->op_name);
    (void)d;
    switch (node->op) {
    case LOOM_OP_RELU: case LOOM_OP_LEAKY_RELU: case LOOM_OP_SIGMOID: case LOOM_OP_TANH:
    case LOOM_OP_ERF: case LOOM_OP_GELU: case LOOM_OP_SQRT: case LOOM_OP_EXP: case LOOM_OP_LOG:
    case LOOM_OP_NEG: case LOOM_OP_ABS: case LOOM_OP_CLIP: case LOOM_OP_RECIPROCAL:
    case LOOM_OP_FLOOR: case LOOM_OP_CEIL: case LOOM_OP_ROUND: case LOOM_OP_HARD_SIGMOID:
    case LOOM_OP_HARD_SWISH: case LOOM_OP_SIN: case LOOM_OP_COS: case LOOM_OP_SOFTPLUS:
    case LOOM_OP_ELU: case LOOM_OP_SELU: case LOOM_OP_SIGN: case LOOM_OP_NOT:
    case LOOM_OP_IS_NAN: case LOOM_OP_IS_INF:
        return ocl_unary_supports(node, reason, len);
    case LOOM_OP_ADD: case LOOM_OP_SUB: case LOOM_OP_MUL: case LOOM_OP_DIV: case LOOM_OP_POW:
    case LOOM_OP_MIN: case LOOM_OP_MAX: case LOOM_OP_EQUAL: case LOOM_OP_LESS:
    case LOOM_OP_GREATER: case LOOM_OP_LESS_OR_EQUAL: case LOOM_OP_GREATER_OR_EQUAL:
    case LOOM_OP_AND: case LOOM_OP_OR: case LOOM_OP_XOR: case LOOM_OP_PRELU:
    case LOOM_OP_MOD: case LOOM_OP_BIT_SHIFT:
        return ocl_binary_supports(node, reason, len);
    case LOOM_OP_WHERE:
        return ocl_where_supports(node, reason, len);
    case LOOM_OP_IDENTITY: case LOOM_OP_RESHAPE: case LOOM_OP_FLATTEN: case LOOM_OP_SQUEEZE:
    case LOOM_OP_UNSQUEEZE: case LOOM_OP_TRANSPOSE: case LOOM_OP_EXPAND: case LOOM_OP_SLICE:
    case LOOM_OP_CONCAT: case LOOM_OP_SPLIT:
        return ocl_copy_supports(node, reason, len);
    case LOOM_OP_GATHER:
        return ocl_gather_supports(node, reason, len);
    case LOOM_OP_CAST:
        return ocl_cast_supports(node, reason, len);
    case LOOM_OP_SOFTMAX: case LOOM_OP_LOG_SOFTMAX: case LOOM_OP_LAYER_NORMALIZATION:
    case LOOM_OP_BATCH_NORMALIZATION:
        return ocl_norm_supports(node, reason, len);
    case LOOM_OP_REDUCE_MEAN: case LOOM_OP_REDUCE_SUM: case LOOM_OP_REDUCE_MAX:
    case LOOM_OP_REDUCE_MIN: case LOOM_OP_REDUCE_PROD: case LOOM_OP_GLOBAL_AVERAGE_POOL:
    case LOOM_OP_REDUCE_L1: case LOOM_OP_REDUCE_L2: case LOOM_OP_REDUCE_LOG_SUM:
    case LOOM_OP_REDUCE_LOG_SUM_EXP: case LOOM_OP_REDUCE_SUM_SQUARE:
        return ocl_reduce_supports(node, reason, len);
    case LOOM_OP_MAX_POOL: case LOOM_OP_AVERAGE_POOL:
        return ocl_window_supports(node, reason, len, 0);
    case LOOM_OP_MATMUL:
        return ocl_matmul_supports(node, reason, len);
    case LOOM_OP_GEMM:
        return ocl_gemm_supports(node, reason, len);
    case LOOM_OP_CONV:
        return ocl_conv_supports(node, reason, len);
    case LOOM_OP_MAT_MUL_INT8_DYNAMIC:
        return ocl_int8_supports(node, reason, len);
    case LOOM_OP_TRILU:
        return ocl_trilu_supports(node, reason, len);
    case LOOM_OP_CUM_SUM:
        return ocl_cumsum_supports(node, reason, len);
    case LOOM_OP_GATHER_ELEMENTS: case LOOM_OP_SCATTER_ELEMENTS:
        return ocl_elements_supports(node, reason, len);
    case LOOM_OP_GATHER_ND: case LOOM_OP_SCATTER_ND:
        return ocl_nd_supports(node, reason, len);
    case LOOM_OP_MOE_EXPERT:
        return ocl_moe_expert_supports(node, reason, len);
    default:
        return ocl_reason(reason, len, "no OpenCL kernel for %s", node->op_name);
    }
}

loom_status ocl_kernels_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                ocl_kernel *k, char *err, size_t len)
{
    switch (node->op) {
    case LOOM_OP_ADD: case LOOM_OP_SUB: case LOOM_OP_MUL: case LOOM_OP_DIV: case LOOM_OP_POW:
    case LOOM_OP_MIN: case LOOM_OP_MAX: case LOOM_OP_EQUAL: case LOOM_OP_LESS:
    case LOOM_OP_GREATER: case LOOM_OP_LESS_OR_EQUAL: case LOOM_OP_GREATER_OR_EQUAL:
    case LOOM_OP_AND: case LOOM_OP_OR: case LOOM_OP_XOR: case LOOM_OP_PRELU:
    case LOOM_OP_MOD: case LOOM_OP_BIT_SHIFT:
        return ocl_binary_prepare(s, d, node, k, err, len);
    case LOOM_OP_WHERE:
        return ocl_where_prepare(s, d, node, k, err, len);
    case LOOM_OP_IDENTITY: case LOOM_OP_RESHAPE: case LOOM_OP_FLATTEN: case LOOM_OP_SQUEEZE:
    case LOOM_OP_UNSQUEEZE: case LOOM_OP_TRANSPOSE: case LOOM_OP_EXPAND: case LOOM_OP_SLICE:
    case LOOM_OP_CONCAT: case LOOM_OP_SPLIT:
        return ocl_copy_prepare(s, d, node, k, err, len);
    case LOOM_OP_GATHER:
        return ocl_gather_prepare(node, k, err, len);
    case LOOM_OP_CAST:
        return ocl_cast_prepare(node, k);
    case LOOM_OP_SOFTMAX: case LOOM_OP_LOG_SOFTMAX: case LOOM_OP_LAYER_NORMALIZATION:
    case LOOM_OP_BATCH_NORMALIZATION:
        return ocl_norm_prepare(d, node, k);
    case LOOM_OP_REDUCE_MEAN: case LOOM_OP_REDUCE_SUM: case LOOM_OP_REDUCE_MAX:
    case LOOM_OP_REDUCE_MIN: case LOOM_OP_REDUCE_PROD: case LOOM_OP_GLOBAL_AVERAGE_POOL:
    case LOOM_OP_REDUCE_L1: case LOOM_OP_REDUCE_L2: case LOOM_OP_REDUCE_LOG_SUM:
    case LOOM_OP_REDUCE_LOG_SUM_EXP: case LOOM_OP_REDUCE_SUM_SQUARE:
        return ocl_reduce_prepare(s, d, node, k, err, len);
    case LOOM_OP_MAX_POOL: case LOOM_OP_AVERAGE_POOL:
        return ocl_pool_prepare(s, d, node, k, err, len);
    case LOOM_OP_MATMUL:
        return ocl_matmul_prepare(node, k, err, len);
    case LOOM_OP_GEMM:
        return ocl_gemm_prepare(s, d, node, k, err, len);
    case LOOM_OP_CONV:
        return ocl_conv_prepare(s, d, node, k, err, len);
    case LOOM_OP_MAT_MUL_INT8_DYNAMIC:
        return ocl_int8_prepare(d, node, k);
    case LOOM_OP_TRILU:
        return ocl_trilu_prepare(node, k);
    case LOOM_OP_CUM_SUM:
        return ocl_cumsum_prepare(node, k);
    case LOOM_OP_GATHER_ELEMENTS: case LOOM_OP_SCATTER_ELEMENTS:
        return ocl_elements_prepare(s, d, node, k, err, len);
    case LOOM_OP_GATHER_ND: case LOOM_OP_SCATTER_ND:
        return ocl_nd_prepare(s, d, node, k, err, len);
    case LOOM_OP_MOE_EXPERT:
        return ocl_moe_expert_prepare(node, k);
    default:
        return ocl_unary_prepare(s, d, node, k, err, len);
    }
}
