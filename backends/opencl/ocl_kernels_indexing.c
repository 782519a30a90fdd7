/*
 * The OpenCL backend's element indexing: GatherElements, ScatterElements, GatherND (batch_dims)
 * and ScatterND (reduction none, add, mul, max, min). Moves take any element size; reductions
 * compute in float32, int32 and int64. Scatters apply their updates in the CPU's order, so the
 * last of duplicate indices wins and float sums round alike.
 *
 * Indices out of range: constant ones fail prepare with a message naming the value (like
 * Gather's); computed ones are checked by the kernels, which skip them and raise a flag in the
 * node's 4 bytes of scratch, read back after the launch: the node then fails (and the host
 * re-runs it on its fallback device, whose kernel names the value) instead of producing wrong
 * numbers. Their OpenCL C is in ocl_source.c (gather_el_*, scatter_el_*, gather_nd_*,
 * scatter_nd_*).
 */
#include "ocl_kernels.h"

#include <stdio.h>
#include <string.h>

/* ScatterElements/ScatterND reduction codes of the kernels (SC_RED, ND_RED). */
enum { IX_NONE, IX_ADD, IX_MUL, IX_MAX, IX_MIN };

static int ix_reduction(const loom_node_desc *node)
{
    const loom_attr *a = loom_node_attr(node, "reduction");
    const char *s = a && a->kind == LOOM_ATTR_STRING && a->s ? a->s : "none";
    return !strcmp(s, "add")   ? IX_ADD
           : !strcmp(s, "mul") ? IX_MUL
           : !strcmp(s, "max") ? IX_MAX
           : !strcmp(s, "min") ? IX_MIN
           : !strcmp(s, "none") ? IX_NONE
                                : -1;
}

/* The element-size kernel (FIRST + 0..3) for a plain move, or the typed one (FIRST + 4..6: f32,
 * i32, i64) for a reduction; -1 when DT has none. */
static int ix_kernel(int first, loom_dtype dt, int red)
{
    if (red == IX_NONE) {
        int si = ocl_size_index(ocl_esize(dt));
        return si < 0 ? -1 : first + si;
    }
    return dt == LOOM_DTYPE_F32   ? first + 4
           : dt == LOOM_DTYPE_I32 ? first + 5
           : dt == LOOM_DTYPE_I64 ? first + 6
                                  : -1;
}

static int64_t ix_value(const void *data, loom_dtype dt, int64_t i)
{
    return dt == LOOM_DTYPE_I64 ? ((const int64_t *)data)[i] : ((const int32_t *)data)[i];
}

/* ---- the out-of-range flag ------------------------------------------------------------------- */

/* Clear the flag in R's scratch before a kernel that may raise it. */
static loom_status flag_clear(ocl_run *r)
{
    cl_int zero = 0;
    cl_int e = clEnqueueFillBuffer(r->d->queue, r->scratch.mem, &zero, sizeof zero, r->scratch.off,
                                   sizeof zero, 0, NULL, NULL);
    return e == CL_SUCCESS ? LOOM_OK
                           : ocl_run_fail(r, ocl_cl_status(e), "clEnqueueFillBuffer failed: %s",
                                          ocl_error_name(e));
}

/* Wait for the kernels and fail the node when one saw an index out of range. */
static loom_status flag_check(ocl_run *r, const char *what)
{
    cl_int flag = 0;
    cl_int e = clEnqueueReadBuffer(r->d->queue, r->scratch.mem, CL_TRUE, r->scratch.off,
                                   sizeof flag, &flag, 0, NULL, NULL);
    if (e != CL_SUCCESS)
        return ocl_run_fail(r, ocl_cl_status(e), "reading the index check failed: %s",
                            ocl_error_name(e));
    return flag ? ocl_run_fail(r, LOOM_ERR_INVALID_ARGUMENT, "%s: an index is out of range", what)
                : LOOM_OK;
}

/* Whether K checks its indices at run time (they are not a constant checked at prepare). */
static int checks_at_run(const ocl_kernel *k)
{
    return k->v[8] != 0;
}

/* ---- GatherElements, ScatterElements --------------------------------------------------------- */

int ocl_elements_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    loom_dtype t = node->inputs[0].dtype, it = node->inputs[1].dtype;
    if (it != LOOM_DTYPE_I32 && it != LOOM_DTYPE_I64)
        return ocl_reason(reason, len, "%s: indices must be int32 or int64", op);
    if (node->inputs[1].rank != node->inputs[0].rank)
        return ocl_reason(reason, len, "%s: indices of another rank than the data", op);
    int64_t axis = loom_node_attr_int(node, "axis", 0);
    if (axis < 0 || axis >= (int64_t)node->inputs[0].rank)
        return ocl_reason(reason, len, "%s: no canonical axis", op);
    for (uint32_t d = 0; d < node->inputs[0].rank; d++)
        if ((int64_t)d != axis && node->inputs[1].dims[d] > node->inputs[0].dims[d])
            return ocl_reason(reason, len, "%s: indices larger than the data along axis %u", op,
                              d);
    int red = node->op == LOOM_OP_SCATTER_ELEMENTS ? ix_reduction(node) : IX_NONE;
    if (red < 0)
        return ocl_reason(reason, len, "%s: unknown reduction", op);
    if (ix_kernel(0, t, red) < 0)
        return ocl_reason(reason, len, red ? "%s: a reduction needs f32, i32 or i64"
                                           : "%s: dtype of unsupported size", op);
    if (node->op == LOOM_OP_SCATTER_ELEMENTS &&
        (!ocl_has_in(node, 2) || node->inputs[2].dtype != t ||
         !ocl_same_shape(&node->inputs[2], &node->inputs[1])))
        return ocl_reason(reason, len, "ScatterElements: updates of the indices' shape and the "
                          "data's dtype");
    return 1;
}

static loom_status run_gather_elements(ocl_run *r, const ocl_kernel *k)
{
    size_t es = ocl_esize(k->out[0].dtype), is = ocl_esize(k->in[1].dtype);
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)k->v[0]);
    cl_ulong xo = ocl_eoff(r->in[0], es), io = ocl_eoff(r->in[1], is);
    cl_ulong yo = ocl_eoff(r->out[0], es), n = (cl_ulong)ocl_numel(&k->out[0]);
    cl_ulong fo = r->scratch.off / sizeof(cl_int);
    cl_int ix64 = is == 8;
    if (!n)
        return LOOM_OK;
    int check = checks_at_run(k);
    if (check) {
        loom_status st = flag_clear(r);
        if (st != LOOM_OK)
            return st;
    }
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->in[1].mem);
    ARG(ker, 3, io);
    ARG(ker, 4, ix64);
    ARG(ker, 5, r->out[0].mem);
    ARG(ker, 6, yo);
    ARG(ker, 7, n);
    ARG(ker, 8, k->meta);
    ARG(ker, 9, r->scratch.mem);
    ARG(ker, 10, fo);
    loom_status st = ocl_launch(r, ker, (size_t)n, 0);
    return st == LOOM_OK && check ? flag_check(r, "GatherElements") : st;
}

static loom_status run_scatter_elements(ocl_run *r, const ocl_kernel *k)
{
    size_t es = ocl_esize(k->out[0].dtype), is = ocl_esize(k->in[1].dtype);
    size_t bytes = (size_t)ocl_numel(&k->out[0]) * es;
    loom_status st = ocl_copy(r, r->in[0], r->out[0], bytes);
    cl_long lines = k->v[1];
    if (st != LOOM_OK || lines == 0)
        return st;
    int check = checks_at_run(k);
    if (check && (st = flag_clear(r)) != LOOM_OK)
        return st;
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)k->v[0]);
    cl_ulong yo = ocl_eoff(r->out[0], es), io = ocl_eoff(r->in[1], is);
    cl_ulong uo = ocl_eoff(r->in[2], es), fo = r->scratch.off / sizeof(cl_int);
    cl_int ix64 = is == 8, red = k->iop;
    ARG(ker, 0, r->out[0].mem);
    ARG(ker, 1, yo);
    ARG(ker, 2, r->in[1].mem);
    ARG(ker, 3, io);
    ARG(ker, 4, ix64);
    ARG(ker, 5, r->in[2].mem);
    ARG(ker, 6, uo);
    ARG(ker, 7, lines);
    ARG(ker, 8, k->meta);
    ARG(ker, 9, red);
    ARG(ker, 10, r->scratch.mem);
    ARG(ker, 11, fo);
    st = ocl_launch(r, ker, (size_t)lines, 0);
    return st == LOOM_OK && check ? flag_check(r, "ScatterElements") : st;
}

loom_status ocl_elements_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                 ocl_kernel *k, char *err, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0], *ix = &node->inputs[1];
    int scatter = node->op == LOOM_OP_SCATTER_ELEMENTS;
    int64_t axis = loom_node_attr_int(node, "axis", 0);
    if (axis < 0 || axis >= (int64_t)x->rank)
        return ocl_kfail(err, len, LOOM_ERR_INVALID_ARGUMENT, node, "axis %lld is not canonical",
                         (long long)axis);
    int64_t alen = x->dims[axis], n_idx = ocl_numel(ix);
    /* Constant indices are checked once here; computed ones by the kernels at every run. */
    if (ocl_is_const(node, 1)) {
        for (int64_t i = 0; i < n_idx; i++) {
            int64_t v = ix_value(node->input_constants[1], ix->dtype, i);
            if (v < -alen || v >= alen)
                return ocl_kfail(err, len, LOOM_ERR_INVALID_ARGUMENT, node,
                                 "index %lld (element %lld of indices) is out of range for "
                                 "axis %lld of size %lld",
                                 (long long)v, (long long)i, (long long)axis, (long long)alen);
        }
    }
    k->v[8] = !ocl_is_const(node, 1);
    k->scratch_bytes = 64; /* the flag */
    k->iop = scatter ? ix_reduction(node) : IX_NONE;
    k->v[0] = ix_kernel(scatter ? OCL_K_SCATTER_EL_1 : OCL_K_GATHER_EL_1, x->dtype, k->iop);
    k->v[1] = ix->dims[axis] ? n_idx / ix->dims[axis] : 0; /* lines along the axis */
    int64_t meta[3 + 2 * LOOM_MAX_RANK], xs[LOOM_MAX_RANK];
    uint32_t rank = x->rank;
    ocl_contiguous_strides(x, xs);
    meta[0] = rank;
    for (uint32_t dd = 0; dd < rank; dd++) {
        meta[1 + dd] = ix->dims[dd];
        meta[1 + rank + dd] = xs[dd];
    }
    meta[1 + 2 * rank] = axis;
    meta[2 + 2 * rank] = alen;
    k->run = scatter ? run_scatter_elements : run_gather_elements;
    return ocl_put_meta(s, d, k, meta, 3 + 2 * (size_t)rank, 0, err, len);
}

/* ---- GatherND, ScatterND --------------------------------------------------------------------- */

int ocl_nd_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *op = node->op_name;
    loom_dtype t = node->inputs[0].dtype;
    if (node->inputs[1].dtype != LOOM_DTYPE_I64)
        return ocl_reason(reason, len, "%s: indices must be int64", op);
    int red = node->op == LOOM_OP_SCATTER_ND ? ix_reduction(node) : IX_NONE;
    if (red < 0)
        return ocl_reason(reason, len, "%s: unknown reduction", op);
    if (ix_kernel(0, t, red) < 0)
        return ocl_reason(reason, len, red ? "%s: a reduction needs f32, i32 or i64"
                                           : "%s: dtype of unsupported size", op);
    const loom_tensor_desc *ix = &node->inputs[1];
    int64_t b = node->op == LOOM_OP_GATHER_ND ? loom_node_attr_int(node, "batch_dims", 0) : 0;
    if (ix->rank < 1 || b < 0 || b >= (int64_t)ix->rank || b >= (int64_t)node->inputs[0].rank ||
        ix->dims[ix->rank - 1] < 1 || ix->dims[ix->rank - 1] > (int64_t)node->inputs[0].rank - b)
        return ocl_reason(reason, len, "%s: indices' shape does not address the data", op);
    if (node->op == LOOM_OP_SCATTER_ND &&
        (!ocl_has_in(node, 2) || node->inputs[2].dtype != t))
        return ocl_reason(reason, len, "ScatterND: updates of the data's dtype");
    return 1;
}

/* K's geometry: v[1] batch, v[2] tuples per batch, v[3] slice elements, v[4] data elements per
 * batch; META = [last, addressed dims[last], their strides in slices]. */
static loom_status nd_geometry(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                               int64_t b, ocl_kernel *k, char *err, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0], *ix = &node->inputs[1];
    int64_t last = ix->dims[ix->rank - 1], batch = 1, tuples = 1, slice = 1, dpb = 1;
    for (int64_t dd = 0; dd < b; dd++)
        batch *= x->dims[dd];
    for (int64_t dd = b; dd + 1 < (int64_t)ix->rank; dd++)
        tuples *= ix->dims[dd];
    for (int64_t dd = b + last; dd < (int64_t)x->rank; dd++)
        slice *= x->dims[dd];
    for (int64_t dd = b; dd < (int64_t)x->rank; dd++)
        dpb *= x->dims[dd];
    k->v[1] = batch;
    k->v[2] = tuples;
    k->v[3] = slice;
    k->v[4] = dpb;
    int64_t meta[1 + 2 * LOOM_MAX_RANK], st = 1;
    meta[0] = last;
    for (int64_t dd = last; dd-- > 0;) {
        meta[1 + dd] = x->dims[b + dd];
        meta[1 + last + dd] = st;
        st *= x->dims[b + dd];
    }
    /* Constant indices are checked once here; computed ones by the kernels at every run. */
    if (ocl_is_const(node, 1)) {
        const int64_t *v = node->input_constants[1];
        int64_t n = ocl_numel(ix);
        for (int64_t i = 0; i < n; i++) {
            int64_t dim = meta[1 + i % last];
            if (v[i] < -dim || v[i] >= dim)
                return ocl_kfail(err, len, LOOM_ERR_INVALID_ARGUMENT, node,
                                 "index %lld is outside a dimension of %lld", (long long)v[i],
                                 (long long)dim);
        }
    }
    k->v[8] = !ocl_is_const(node, 1);
    k->scratch_bytes = 64; /* the flag */
    return ocl_put_meta(s, d, k, meta, 1 + 2 * (size_t)last, 0, err, len);
}

static loom_status run_gather_nd(ocl_run *r, const ocl_kernel *k)
{
    size_t es = ocl_esize(k->out[0].dtype);
    cl_ulong n = (cl_ulong)ocl_numel(&k->out[0]);
    if (!n)
        return LOOM_OK;
    int check = checks_at_run(k);
    loom_status st;
    if (check && (st = flag_clear(r)) != LOOM_OK)
        return st;
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)k->v[0]);
    cl_ulong xo = ocl_eoff(r->in[0], es), io = ocl_eoff(r->in[1], 8);
    cl_ulong yo = ocl_eoff(r->out[0], es), fo = r->scratch.off / sizeof(cl_int);
    cl_long tuples = k->v[2], slice = k->v[3], dpb = k->v[4];
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->in[1].mem);
    ARG(ker, 3, io);
    ARG(ker, 4, r->out[0].mem);
    ARG(ker, 5, yo);
    ARG(ker, 6, n);
    ARG(ker, 7, tuples);
    ARG(ker, 8, slice);
    ARG(ker, 9, dpb);
    ARG(ker, 10, k->meta);
    ARG(ker, 11, r->scratch.mem);
    ARG(ker, 12, fo);
    st = ocl_launch(r, ker, (size_t)n, 0);
    return st == LOOM_OK && check ? flag_check(r, "GatherND") : st;
}

static loom_status run_scatter_nd(ocl_run *r, const ocl_kernel *k)
{
    size_t es = ocl_esize(k->out[0].dtype);
    loom_status st = ocl_copy(r, r->in[0], r->out[0], (size_t)ocl_numel(&k->out[0]) * es);
    cl_long tuples = k->v[2], slice = k->v[3];
    if (st != LOOM_OK || tuples == 0 || slice == 0)
        return st;
    int check = checks_at_run(k);
    if (check && (st = flag_clear(r)) != LOOM_OK)
        return st;
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)k->v[0]);
    cl_ulong yo = ocl_eoff(r->out[0], es), io = ocl_eoff(r->in[1], 8);
    cl_ulong uo = ocl_eoff(r->in[2], es), fo = r->scratch.off / sizeof(cl_int);
    cl_int red = k->iop;
    ARG(ker, 0, r->out[0].mem);
    ARG(ker, 1, yo);
    ARG(ker, 2, r->in[1].mem);
    ARG(ker, 3, io);
    ARG(ker, 4, r->in[2].mem);
    ARG(ker, 5, uo);
    ARG(ker, 6, tuples);
    ARG(ker, 7, slice);
    ARG(ker, 8, k->meta);
    ARG(ker, 9, red);
    ARG(ker, 10, r->scratch.mem);
    ARG(ker, 11, fo);
    /* A work-item per slice element, each taking the tuples in order. */
    st = ocl_launch(r, ker, (size_t)slice, 0);
    return st == LOOM_OK && check ? flag_check(r, "ScatterND") : st;
}

loom_status ocl_nd_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                           ocl_kernel *k, char *err, size_t len)
{
    int scatter = node->op == LOOM_OP_SCATTER_ND;
    k->iop = scatter ? ix_reduction(node) : IX_NONE;
    k->v[0] = ix_kernel(scatter ? OCL_K_SCATTER_ND_1 : OCL_K_GATHER_ND_1, node->inputs[0].dtype,
                        k->iop);
    k->run = scatter ? run_scatter_nd : run_gather_nd;
    return nd_geometry(s, d, node, scatter ? 0 : loom_node_attr_int(node, "batch_dims", 0), k,
                       err, len);
}
