/*
 * The OpenCL backend's scans and masks: Trilu (any element size; k from input 1 read by the
 * kernel itself) and CumSum (float32, int32, int64; exclusive, reverse, any axis: a constant
 * axis is resolved at prepare, a computed one is read back at run time and checked). Their
 * OpenCL C is in ocl_source.c (trilu_*, cumsum_*).
 */
#include "ocl_kernels.h"

/* ---- Trilu ----------------------------------------------------------------------------------- */

int ocl_trilu_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (ocl_size_index(ocl_esize(node->inputs[0].dtype)) < 0)
        return ocl_reason(reason, len, "Trilu: dtype of unsupported size");
    if (node->inputs[0].rank < 2)
        return ocl_reason(reason, len, "Trilu: input of rank < 2");
    if (ocl_has_in(node, 1) && node->inputs[1].dtype != LOOM_DTYPE_I32 &&
        node->inputs[1].dtype != LOOM_DTYPE_I64)
        return ocl_reason(reason, len, "Trilu: k must be int32 or int64");
    return 1;
}

static loom_status run_trilu(ocl_run *r, const ocl_kernel *k)
{
    size_t es = ocl_esize(k->out[0].dtype);
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)(OCL_K_TRILU_1 + ocl_size_index(es)));
    cl_ulong xo = ocl_eoff(r->in[0], es), yo = ocl_eoff(r->out[0], es);
    cl_ulong n = (cl_ulong)ocl_numel(&k->out[0]);
    cl_long rows = k->v[0], cols = k->v[1];
    cl_int upper = k->iop, kmode = 0;
    /* k is read by the kernel from its buffer (a constant's copy or a computed value); without
     * it, any buffer stands in and kmode 0 makes the kernel use 0. */
    cl_mem kmem = r->in[0].mem;
    cl_ulong ko = 0;
    if (k->n_in > 1 && r->in[1].mem) {
        size_t ks = ocl_esize(k->in[1].dtype);
        kmem = r->in[1].mem;
        ko = ocl_eoff(r->in[1], ks);
        kmode = ks == 8 ? 2 : 1;
    }
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->out[0].mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, n);
    ARG(ker, 5, rows);
    ARG(ker, 6, cols);
    ARG(ker, 7, upper);
    ARG(ker, 8, kmem);
    ARG(ker, 9, ko);
    ARG(ker, 10, kmode);
    return ocl_launch(r, ker, (size_t)n, 0);
}

loom_status ocl_trilu_prepare(const loom_node_desc *node, ocl_kernel *k)
{
    const loom_tensor_desc *x = &node->inputs[0];
    k->v[0] = x->dims[x->rank - 2];
    k->v[1] = x->dims[x->rank - 1];
    k->iop = loom_node_attr_int(node, "upper", 1) != 0;
    k->run = run_trilu;
    return LOOM_OK;
}

/* ---- CumSum ---------------------------------------------------------------------------------- */

static ocl_kid cumsum_kernel(loom_dtype dt)
{
    return dt == LOOM_DTYPE_F32 ? OCL_K_CUMSUM_F32
           : dt == LOOM_DTYPE_I32 ? OCL_K_CUMSUM_I32
                                  : OCL_K_CUMSUM_I64;
}

int ocl_cumsum_supports(const loom_node_desc *node, char *reason, size_t len)
{
    loom_dtype t = node->inputs[0].dtype;
    if (t != LOOM_DTYPE_F32 && t != LOOM_DTYPE_I32 && t != LOOM_DTYPE_I64)
        return ocl_reason(reason, len, "CumSum: f32, i32 and i64 only");
    if (!ocl_has_in(node, 1) ||
        (node->inputs[1].dtype != LOOM_DTYPE_I32 && node->inputs[1].dtype != LOOM_DTYPE_I64))
        return ocl_reason(reason, len, "CumSum: axis must be an int32 or int64 scalar");
    if (ocl_is_const(node, 1)) {
        int64_t axis = node->inputs[1].dtype == LOOM_DTYPE_I64
                           ? *(const int64_t *)node->input_constants[1]
                           : *(const int32_t *)node->input_constants[1];
        if (axis < -(int64_t)node->inputs[0].rank || axis >= (int64_t)node->inputs[0].rank)
            return ocl_reason(reason, len, "CumSum: axis %lld is out of range", (long long)axis);
    }
    return 1;
}

/* X's geometry along AXIS (in range): lines of LEN elements, INNER apart, into V[0..2]. */
static void cumsum_geometry(const loom_tensor_desc *x, int64_t axis, int64_t *v)
{
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < (int64_t)x->rank; d++) {
        if (d < axis)
            outer *= x->dims[d];
        else if (d > axis)
            inner *= x->dims[d];
    }
    v[0] = outer * inner;
    v[1] = x->dims[axis];
    v[2] = inner;
}

static loom_status run_cumsum(ocl_run *r, const ocl_kernel *k)
{
    const loom_tensor_desc *x = &k->in[0];
    int64_t geo[3] = {k->v[0], k->v[1], k->v[2]};
    if (!k->v[3]) {
        /* A computed axis: read it back (the queue is in order, so its producer is done) and
         * refuse one out of range, as the CPU does, rather than scan the wrong axis. */
        size_t as = ocl_esize(k->in[1].dtype);
        int64_t axis = 0;
        int32_t a32 = 0;
        cl_int e = clEnqueueReadBuffer(r->d->queue, r->in[1].mem, CL_TRUE, r->in[1].off, as,
                                       as == 8 ? (void *)&axis : (void *)&a32, 0, NULL, NULL);
        if (e != CL_SUCCESS)
            return ocl_run_fail(r, ocl_cl_status(e), "reading the axis failed: %s",
                                ocl_error_name(e));
        if (as == 4)
            axis = a32;
        if (axis < -(int64_t)x->rank || axis >= (int64_t)x->rank)
            return ocl_run_fail(r, LOOM_ERR_INVALID_ARGUMENT,
                                "CumSum: axis %lld is outside [-%u, %u)", (long long)axis,
                                x->rank, x->rank);
        cumsum_geometry(x, axis < 0 ? axis + x->rank : axis, geo);
    }
    size_t es = ocl_esize(x->dtype);
    cl_kernel ker = ocl_get_kernel(r, cumsum_kernel(x->dtype));
    cl_ulong xo = ocl_eoff(r->in[0], es), yo = ocl_eoff(r->out[0], es);
    cl_long lines = geo[0], len = geo[1], inner = geo[2] ? geo[2] : 1;
    cl_int excl = k->iop & 1, rev = (k->iop >> 1) & 1;
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->out[0].mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, lines);
    ARG(ker, 5, len);
    ARG(ker, 6, inner);
    ARG(ker, 7, excl);
    ARG(ker, 8, rev);
    return len > 0 ? ocl_launch(r, ker, (size_t)lines, 0) : LOOM_OK;
}

loom_status ocl_cumsum_prepare(const loom_node_desc *node, ocl_kernel *k)
{
    k->iop = (loom_node_attr_int(node, "exclusive", 0) != 0) |
             (loom_node_attr_int(node, "reverse", 0) != 0) << 1;
    k->v[3] = ocl_is_const(node, 1); /* the geometry is known now */
    if (k->v[3]) {
        int64_t axis = node->inputs[1].dtype == LOOM_DTYPE_I64
                           ? *(const int64_t *)node->input_constants[1]
                           : *(const int32_t *)node->input_constants[1];
        cumsum_geometry(&node->inputs[0], axis < 0 ? axis + node->inputs[0].rank : axis, k->v);
    }
    k->run = run_cumsum;
    return LOOM_OK;
}
