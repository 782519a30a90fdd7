/*
 * The OpenCL backend's data movement: the Identity/Reshape family (one buffer copy), Transpose,
 * Expand, Slice, Concat and Split (strided copies planned at prepare), and Gather.
 */
#include "ocl_kernels.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- copies: Identity/Reshape family, Transpose, Expand, Slice, Concat, Split --------------- */

/* A strided copy: RANK dims, source strides and base, destination strides and base (elements);
 * stored in K's META2-free table META at entry offset MO. */
typedef struct copy_plan {
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK], src[LOOM_MAX_RANK], dst[LOOM_MAX_RANK];
    int64_t src_base, dst_base, n;
    uint32_t in, out; /* which input and output */
} copy_plan;

typedef struct copy_params {
    uint32_t n_plans;
    int64_t mo[]; /* per plan: offset of its table in META; then the plans follow */
} copy_params;

int ocl_copy_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->op == LOOM_OP_TRANSPOSE && !loom_node_attr(node, "perm"))
        return ocl_reason(reason, len, "Transpose: no canonical perm");
    if (node->op == LOOM_OP_SLICE &&
        (!loom_node_attr(node, "starts") || !loom_node_attr(node, "steps")))
        return ocl_reason(reason, len, "Slice: no canonical starts/steps");
    if (node->op == LOOM_OP_CONCAT)
        for (uint32_t i = 0; i < node->n_inputs; i++)
            if (!ocl_has_in(node, i))
                return ocl_reason(reason, len, "Concat: absent input");
    if (ocl_size_index(ocl_esize(node->inputs[0].dtype)) < 0)
        return ocl_reason(reason, len, "%s: dtype of unsupported size", node->op_name);
    if (node->op == LOOM_OP_SPLIT || node->op == LOOM_OP_CONCAT)
        for (uint32_t i = 0; i < node->n_outputs; i++)
            if (node->outputs[i].dtype == LOOM_DTYPE_UNDEFINED)
                return ocl_reason(reason, len, "%s: absent outputs", node->op_name);
    return 1;
}

static loom_status run_bytes_copy(ocl_run *r, const ocl_kernel *k)
{
    size_t bytes = (size_t)ocl_numel(&k->out[0]) * ocl_esize(k->out[0].dtype);
    return ocl_copy(r, r->in[0], r->out[0], bytes);
}

static loom_status run_copies(ocl_run *r, const ocl_kernel *k)
{
    const copy_plan *plans = k->params;
    size_t es = ocl_esize(k->out[0].dtype);
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)(OCL_K_COPY_1 + ocl_size_index(es)));
    cl_ulong mo = 0;
    for (int64_t p = 0; p < k->v[0]; p++) {
        const copy_plan *c = &plans[p];
        cl_long xo = (cl_long)ocl_eoff(r->in[c->in], es) + c->src_base;
        cl_long yo = (cl_long)ocl_eoff(r->out[c->out], es) + c->dst_base;
        cl_ulong n = (cl_ulong)c->n;
        ARG(ker, 0, r->in[c->in].mem);
        ARG(ker, 1, xo);
        ARG(ker, 2, r->out[c->out].mem);
        ARG(ker, 3, yo);
        ARG(ker, 4, n);
        ARG(ker, 5, k->meta);
        ARG(ker, 6, mo);
        loom_status st = ocl_launch(r, ker, (size_t)n, 0);
        if (st != LOOM_OK)
            return st;
        mo += 1 + 3 * (cl_ulong)c->rank;
    }
    return LOOM_OK;
}

static loom_status copies_finish(ocl_state *s, ocl_device *d, ocl_kernel *k, copy_plan *plans,
                                 size_t n, char *err, size_t len)
{
    size_t total = 0;
    for (size_t p = 0; p < n; p++)
        total += 1 + 3 * (size_t)plans[p].rank;
    int64_t *meta = calloc(total + 1, sizeof *meta);
    if (!meta) {
        free(plans);
        snprintf(err, len, "out of memory");
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    size_t at = 0;
    for (size_t p = 0; p < n; p++) {
        copy_plan *c = &plans[p];
        c->n = 1;
        meta[at++] = c->rank;
        for (uint32_t dd = 0; dd < c->rank; dd++) {
            meta[at + dd] = c->dims[dd];
            meta[at + c->rank + dd] = c->src[dd];
            meta[at + 2 * c->rank + dd] = c->dst[dd];
            c->n *= c->dims[dd];
        }
        at += 3 * (size_t)c->rank;
    }
    loom_status st = ocl_put_meta(s, d, k, meta, total, 0, err, len);
    free(meta);
    if (st != LOOM_OK) {
        free(plans);
        return st;
    }
    k->params = plans;
    k->v[0] = (int64_t)n;
    k->run = run_copies;
    return LOOM_OK;
}

loom_status ocl_copy_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                             ocl_kernel *k, char *err, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    switch (node->op) {
    case LOOM_OP_IDENTITY: case LOOM_OP_RESHAPE: case LOOM_OP_FLATTEN: case LOOM_OP_SQUEEZE:
    case LOOM_OP_UNSQUEEZE:
        k->run = run_bytes_copy;
        return LOOM_OK;
    default: break;
    }
    size_t n_plans = node->op == LOOM_OP_CONCAT ? node->n_inputs
                     : node->op == LOOM_OP_SPLIT ? node->n_outputs : 1;
    copy_plan *plans = calloc(n_plans ? n_plans : 1, sizeof *plans);
    if (!plans)
        return ocl_kfail(err, len, LOOM_ERR_OUT_OF_MEMORY, node, "out of memory");
    int64_t xs[LOOM_MAX_RANK], ys[LOOM_MAX_RANK];
    ocl_contiguous_strides(x, xs);
    ocl_contiguous_strides(y, ys);
    if (node->op == LOOM_OP_TRANSPOSE) {
        const loom_attr *perm = loom_node_attr(node, "perm");
        copy_plan *c = &plans[0];
        c->rank = y->rank;
        for (uint32_t dd = 0; dd < y->rank; dd++) {
            c->dims[dd] = y->dims[dd];
            c->src[dd] = xs[perm->ints[dd]];
            c->dst[dd] = ys[dd];
        }
    } else if (node->op == LOOM_OP_EXPAND) {
        copy_plan *c = &plans[0];
        c->rank = y->rank;
        ocl_bcast_strides(x, y, c->src);
        for (uint32_t dd = 0; dd < y->rank; dd++) {
            c->dims[dd] = y->dims[dd];
            c->dst[dd] = ys[dd];
        }
    } else if (node->op == LOOM_OP_SLICE) {
        const loom_attr *starts = loom_node_attr(node, "starts"), *steps = loom_node_attr(node, "steps");
        copy_plan *c = &plans[0];
        c->rank = y->rank;
        for (uint32_t dd = 0; dd < y->rank; dd++) {
            c->dims[dd] = y->dims[dd];
            c->src[dd] = steps->ints[dd] * xs[dd];
            c->dst[dd] = ys[dd];
            c->src_base += starts->ints[dd] * xs[dd];
        }
    } else if (node->op == LOOM_OP_CONCAT) {
        int64_t axis = loom_node_attr_int(node, "axis", 0), at = 0;
        for (uint32_t i = 0; i < node->n_inputs; i++) {
            copy_plan *c = &plans[i];
            const loom_tensor_desc *xi = &node->inputs[i];
            c->rank = xi->rank;
            c->in = i;
            ocl_contiguous_strides(xi, c->src);
            for (uint32_t dd = 0; dd < xi->rank; dd++) {
                c->dims[dd] = xi->dims[dd];
                c->dst[dd] = ys[dd];
            }
            c->dst_base = at * ys[axis];
            at += xi->dims[axis];
        }
    } else { /* Split */
        int64_t axis = loom_node_attr_int(node, "axis", 0), at = 0;
        for (uint32_t o = 0; o < node->n_outputs; o++) {
            copy_plan *c = &plans[o];
            const loom_tensor_desc *yo = &node->outputs[o];
            c->rank = yo->rank;
            c->out = o;
            ocl_contiguous_strides(yo, c->dst);
            for (uint32_t dd = 0; dd < yo->rank; dd++) {
                c->dims[dd] = yo->dims[dd];
                c->src[dd] = xs[dd];
            }
            c->src_base = at * xs[axis];
            at += yo->dims[axis];
        }
    }
    return copies_finish(s, d, k, plans, n_plans, err, len);
}

/* ---- Gather --------------------------------------------------------------------------------- */

int ocl_gather_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (ocl_size_index(ocl_esize(node->inputs[0].dtype)) < 0)
        return ocl_reason(reason, len, "Gather: dtype of unsupported size");
    loom_dtype it = node->inputs[1].dtype;
    if (it != LOOM_DTYPE_I32 && it != LOOM_DTYPE_I64)
        return ocl_reason(reason, len, "Gather: indices must be i32 or i64");
    return 1;
}

static loom_status run_gather(ocl_run *r, const ocl_kernel *k)
{
    size_t es = ocl_esize(k->out[0].dtype), is = ocl_esize(k->in[1].dtype);
    cl_kernel ker = ocl_get_kernel(r, (ocl_kid)(OCL_K_GATHER_1 + ocl_size_index(es)));
    cl_ulong xo = ocl_eoff(r->in[0], es), io = ocl_eoff(r->in[1], is), yo = ocl_eoff(r->out[0], es);
    cl_ulong n = (cl_ulong)ocl_numel(&k->out[0]);
    cl_int ix64 = is == 8;
    cl_long axis_len = k->v[0], nidx = k->v[1], inner = k->v[2];
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->in[1].mem);
    ARG(ker, 3, io);
    ARG(ker, 4, ix64);
    ARG(ker, 5, r->out[0].mem);
    ARG(ker, 6, yo);
    ARG(ker, 7, n);
    ARG(ker, 8, axis_len);
    ARG(ker, 9, nidx);
    ARG(ker, 10, inner);
    return ocl_launch(r, ker, (size_t)n, 0);
}

loom_status ocl_gather_prepare(const loom_node_desc *node, ocl_kernel *k, char *err,
                               size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0];
    int64_t axis = loom_node_attr_int(node, "axis", 0), inner = 1;
    for (uint32_t dd = (uint32_t)axis + 1; dd < x->rank; dd++)
        inner *= x->dims[dd];
    k->v[0] = x->dims[axis];
    k->v[1] = ocl_numel(&node->inputs[1]);
    k->v[2] = inner ? inner : 1;
    /* Constant indices are checked once here; computed ones that fall outside give zeros. */
    if (ocl_is_const(node, 1)) {
        for (int64_t j = 0; j < k->v[1]; j++) {
            int64_t ix = node->inputs[1].dtype == LOOM_DTYPE_I64
                             ? ((const int64_t *)node->input_constants[1])[j]
                             : ((const int32_t *)node->input_constants[1])[j];
            if (ix < -k->v[0] || ix >= k->v[0])
                return ocl_kfail(err, len, LOOM_ERR_INVALID_ARGUMENT, node,
                             "index %lld is out of range for axis %lld of size %lld",
                             (long long)ix, (long long)axis, (long long)k->v[0]);
        }
    }
    k->run = run_gather;
    return LOOM_OK;
}
