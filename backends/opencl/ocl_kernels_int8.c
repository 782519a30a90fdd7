/*
 * The OpenCL backend's int8 GEMM: MatMulInt8Dynamic (what the int8-dynamic pass writes: float A,
 * int8 weights B [K, N] with one scale per column, optional bias). Two kernels: each row of A
 * quantised symmetrically into scratch (int8 values and one scale per row, the CPU kernel's
 * rule), then the integer GEMM with exact int32 sums and the float epilogue; its inner step is
 * one dot() of char4s where the device has cl_khr_integer_dot_product (dp4a-class hardware).
 * The tensor-asymmetric form (a fused DynamicQuantizeLinear + MatMulInteger) stays on the CPU.
 */
#include "ocl_kernels.h"

int ocl_int8_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs < 3 || !ocl_one_output(node) ||
        node->inputs[0].dtype != LOOM_DTYPE_F32 || node->inputs[1].dtype != LOOM_DTYPE_I8 ||
        node->inputs[2].dtype != LOOM_DTYPE_F32 ||
        (ocl_has_in(node, 3) && node->inputs[3].dtype != LOOM_DTYPE_F32))
        return ocl_reason(reason, len, "MatMulInt8Dynamic: f32 A, int8 B, f32 scales and bias");
    if (loom_node_attr_int(node, "tensor_asymmetric", 0) != 0 ||
        loom_node_attr_float(node, "a_scale", 0.0f) != 0.0f ||
        loom_node_attr_int(node, "a_zero_point", 0) != 0)
        return ocl_reason(reason, len, "MatMulInt8Dynamic: only per-row symmetric activations "
                          "here (the tensor-asymmetric and fixed-scale forms run on the CPU)");
    const loom_attr *act = loom_node_attr(node, "activation");
    if (act && act->kind == LOOM_ATTR_STRING && act->s && *act->s)
        return ocl_reason(reason, len, "MatMulInt8Dynamic: no fused activation here (one with "
                          "'%.20s' runs on the CPU)", act->s);
    if (node->inputs[1].rank != 2 || node->inputs[0].rank < 1)
        return ocl_reason(reason, len, "MatMulInt8Dynamic: B must be 2-D");
    return 1;
}

static loom_status run_int8(ocl_run *r, const ocl_kernel *k)
{
    cl_long rows = k->v[0], kk = k->v[1], n = k->v[2];
    if (rows == 0 || n == 0)
        return LOOM_OK;
    /* Scratch: ROWS float scales, then ROWS x K int8 values. */
    cl_ulong so = ocl_eoff(r->scratch, 4);
    cl_ulong qo = r->scratch.off + (cl_ulong)rows * 4;
    cl_kernel quant = ocl_get_kernel(r, OCL_K_I8_QUANT_ROWS);
    cl_ulong ao = ocl_eoff(r->in[0], 4);
    size_t local = (size_t)k->v[3];
    ARG(quant, 0, r->in[0].mem);
    ARG(quant, 1, ao);
    ARG(quant, 2, r->scratch.mem);
    ARG(quant, 3, qo);
    ARG(quant, 4, r->scratch.mem);
    ARG(quant, 5, so);
    ARG(quant, 6, kk);
    ARG(quant, 7, rows);
    if (ocl_arg(r, quant, 8, local * sizeof(float), NULL))
        return LOOM_ERR_INTERNAL;
    loom_status st = ocl_launch(r, quant, ocl_row_groups(r->d, rows) * local, local);
    if (st != LOOM_OK)
        return st;
    cl_kernel gemm = ocl_get_kernel(r, OCL_K_I8_GEMM);
    int has_bias = k->n_in > 3 && r->in[3].mem != NULL;
    cl_ulong bo = ocl_eoff(r->in[1], 1), sbo = ocl_eoff(r->in[2], 4);
    cl_ulong biaso = has_bias ? ocl_eoff(r->in[3], 4) : 0, yo = ocl_eoff(r->out[0], 4);
    cl_mem bias = has_bias ? r->in[3].mem : r->in[2].mem;
    cl_int hb = has_bias;
    ARG(gemm, 0, r->scratch.mem);
    ARG(gemm, 1, qo);
    ARG(gemm, 2, r->scratch.mem);
    ARG(gemm, 3, so);
    ARG(gemm, 4, r->in[1].mem);
    ARG(gemm, 5, bo);
    ARG(gemm, 6, r->in[2].mem);
    ARG(gemm, 7, sbo);
    ARG(gemm, 8, bias);
    ARG(gemm, 9, biaso);
    ARG(gemm, 10, hb);
    ARG(gemm, 11, r->out[0].mem);
    ARG(gemm, 12, yo);
    ARG(gemm, 13, rows);
    ARG(gemm, 14, n);
    ARG(gemm, 15, kk);
    return ocl_launch(r, gemm, (size_t)(rows * n), 0);
}

loom_status ocl_int8_prepare(ocl_device *d, const loom_node_desc *node, ocl_kernel *k)
{
    const loom_tensor_desc *a = &node->inputs[0], *b = &node->inputs[1];
    int64_t kk = b->dims[0], n = b->dims[1];
    int64_t rows = kk ? ocl_numel(a) / kk : 0;
    k->v[0] = rows;
    k->v[1] = kk;
    k->v[2] = n;
    k->v[3] = (int64_t)ocl_row_local(d, d->kernels[OCL_K_I8_QUANT_ROWS], kk, 256);
    /* Scales first (4-byte aligned), then the quantised rows. */
    k->scratch_bytes = (size_t)rows * 4 + (size_t)(rows * kk);
    k->run = run_int8;
    return LOOM_OK;
}
