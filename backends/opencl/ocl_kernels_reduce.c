/*
 * The OpenCL backend's reductions along rows: Softmax and LogSoftmax, LayerNormalization,
 * BatchNormalization, ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare,
 * GlobalAveragePool, and the windowed MaxPool and AveragePool.
 */
#include "ocl_kernels.h"

/* The reduction codes of reduce_f32 and reduce_rows_f32 (ocl_source.c). */
enum {
    RED_SUM, RED_MEAN, RED_MAX, RED_MIN, RED_PROD, RED_L1, RED_L2, RED_LOG_SUM, RED_LOG_SUM_EXP,
    RED_SUM_SQUARE
};

/* ---- Softmax, LogSoftmax, LayerNormalization, BatchNormalization ----------------------------- */

static void split_axis(const loom_tensor_desc *t, int64_t axis, int64_t *outer, int64_t *mid,
                       int64_t *inner)
{
    *outer = *mid = *inner = 1;
    for (uint32_t dd = 0; dd < t->rank; dd++) {
        if ((int64_t)dd < axis)
            *outer *= t->dims[dd];
        else if ((int64_t)dd == axis)
            *mid = t->dims[dd];
        else
            *inner *= t->dims[dd];
    }
}

static loom_status run_softmax(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_SOFTMAX);
    cl_ulong xo = ocl_eoff(r->in[0], 4), yo = ocl_eoff(r->out[0], 4);
    cl_long outer = k->v[0], n = k->v[1], inner = k->v[2];
    cl_int logsm = k->iop;
    size_t local = (size_t)k->v[3];
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->out[0].mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, n);
    ARG(ker, 5, inner);
    ARG(ker, 6, logsm);
    cl_long rows = outer * inner;
    ARG(ker, 7, rows);
    if (ocl_arg(r, ker, 8, 2 * local * sizeof(float), NULL))
        return LOOM_ERR_INTERNAL;
    /* A work-group per row (fewer on CPU devices); an empty row (n = 0) writes nothing. */
    return n ? ocl_launch(r, ker, ocl_row_groups(r->d, rows) * local, local) : LOOM_OK;
}

static loom_status run_layernorm(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_LAYERNORM);
    int has_b = r->in[2].mem != NULL && k->n_in > 2;
    cl_ulong xo = ocl_eoff(r->in[0], 4), so = ocl_eoff(r->in[1], 4);
    cl_ulong bo = has_b ? ocl_eoff(r->in[2], 4) : 0;
    cl_ulong yo = ocl_eoff(r->out[0], 4);
    cl_int hb = has_b;
    cl_long n = k->v[1];
    cl_float eps = k->fa;
    cl_mem bmem = has_b ? r->in[2].mem : r->in[1].mem;
    size_t local = (size_t)k->v[2];
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->in[1].mem);
    ARG(ker, 3, so);
    ARG(ker, 4, bmem);
    ARG(ker, 5, bo);
    ARG(ker, 6, hb);
    ARG(ker, 7, r->out[0].mem);
    ARG(ker, 8, yo);
    ARG(ker, 9, n);
    ARG(ker, 10, eps);
    cl_long rows = k->v[0];
    ARG(ker, 11, rows);
    if (ocl_arg(r, ker, 12, local * sizeof(float), NULL))
        return LOOM_ERR_INTERNAL;
    return rows ? ocl_launch(r, ker, ocl_row_groups(r->d, rows) * local, local) : LOOM_OK;
}

static loom_status run_batchnorm(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_BATCHNORM);
    cl_ulong o[5];
    for (int i = 0; i < 5; i++)
        o[i] = ocl_eoff(r->in[i], 4);
    cl_ulong yo = ocl_eoff(r->out[0], 4), n = (cl_ulong)ocl_numel(&k->out[0]);
    cl_long C = k->v[0], inner = k->v[1];
    cl_float eps = k->fa;
    for (int i = 0; i < 5; i++) {
        ARG(ker, 2 * i, r->in[i].mem);
        ARG(ker, 2 * i + 1, o[i]);
    }
    ARG(ker, 10, r->out[0].mem);
    ARG(ker, 11, yo);
    ARG(ker, 12, n);
    ARG(ker, 13, C);
    ARG(ker, 14, inner);
    ARG(ker, 15, eps);
    return ocl_launch(r, ker, (size_t)n, 0);
}

int ocl_norm_supports(const loom_node_desc *node, char *reason, size_t len)
{
    switch (node->op) {
    case LOOM_OP_SOFTMAX: case LOOM_OP_LOG_SOFTMAX:
        return node->inputs[0].dtype == LOOM_DTYPE_F32
                   ? 1
                   : ocl_reason(reason, len, "%s: f32 only", node->op_name);
    case LOOM_OP_LAYER_NORMALIZATION: {
        if (node->inputs[0].dtype != LOOM_DTYPE_F32 || !ocl_has_in(node, 1) ||
            node->inputs[1].dtype != LOOM_DTYPE_F32 ||
            (ocl_has_in(node, 2) && node->inputs[2].dtype != LOOM_DTYPE_F32))
            return ocl_reason(reason, len, "LayerNormalization: f32 only");
        if (!ocl_one_output(node))
            return ocl_reason(reason, len, "LayerNormalization: Mean and InvStdDev outputs not "
                              "supported");
        int64_t o, mid, in;
        split_axis(&node->inputs[0], loom_node_attr_int(node, "axis", -1), &o, &mid, &in);
        int64_t nn = mid * in;
        if (ocl_numel(&node->inputs[1]) != nn ||
            (ocl_has_in(node, 2) && ocl_numel(&node->inputs[2]) != nn))
            return ocl_reason(reason, len, "LayerNormalization: broadcast scale/bias not "
                              "supported");
        return 1;
    }
    case LOOM_OP_BATCH_NORMALIZATION:
        for (uint32_t i = 0; i < 5; i++)
            if (!ocl_has_in(node, i) || node->inputs[i].dtype != LOOM_DTYPE_F32)
                return ocl_reason(reason, len, "BatchNormalization: f32 X, scale, B, mean, var");
        if (!ocl_one_output(node) || node->inputs[0].rank < 2)
            return ocl_reason(reason, len, "BatchNormalization: inference form only");
        return 1;
    default:
        return ocl_reason(reason, len, "no OpenCL kernel for %s", node->op_name);
    }
}

loom_status ocl_norm_prepare(ocl_device *d, const loom_node_desc *node, ocl_kernel *k)
{
    switch (node->op) {
    case LOOM_OP_SOFTMAX: case LOOM_OP_LOG_SOFTMAX:
        split_axis(&node->inputs[0], loom_node_attr_int(node, "axis", -1), &k->v[0], &k->v[1],
                   &k->v[2]);
        k->iop = node->op == LOOM_OP_LOG_SOFTMAX;
        k->v[3] = (int64_t)ocl_row_local(d, d->kernels[OCL_K_SOFTMAX], k->v[1], 256);
        k->run = run_softmax;
        return LOOM_OK;
    case LOOM_OP_LAYER_NORMALIZATION: {
        int64_t mid, in;
        split_axis(&node->inputs[0], loom_node_attr_int(node, "axis", -1), &k->v[0], &mid, &in);
        k->v[1] = mid * in;
        k->v[2] = (int64_t)ocl_row_local(d, d->kernels[OCL_K_LAYERNORM], k->v[1], 256);
        k->fa = loom_node_attr_float(node, "epsilon", 1e-5f);
        k->run = run_layernorm;
        return LOOM_OK;
    }
    default: { /* BatchNormalization */
        const loom_tensor_desc *x = &node->inputs[0];
        int64_t inner = 1;
        for (uint32_t dd = 2; dd < x->rank; dd++)
            inner *= x->dims[dd];
        k->v[0] = x->dims[1];
        k->v[1] = inner;
        k->fa = loom_node_attr_float(node, "epsilon", 1e-5f);
        k->run = run_batchnorm;
        return LOOM_OK;
    }
    }
}

/* ---- reductions and pools -------------------------------------------------------------------- */

static loom_status run_reduce(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_REDUCE);
    cl_ulong xo = ocl_eoff(r->in[0], 4), yo = ocl_eoff(r->out[0], 4);
    cl_ulong n = (cl_ulong)ocl_numel(&k->out[0]);
    cl_int op = k->iop;
    cl_long count = k->v[0];
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->out[0].mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, n);
    ARG(ker, 5, k->meta);
    ARG(ker, 6, op);
    ARG(ker, 7, count);
    return ocl_launch(r, ker, (size_t)n, 0);
}

/* One launch of reduce_rows_f32: GROUPS rows (outputs times parts) reduced from SRC into DST by
 * work-groups of LOCAL. */
static loom_status reduce_rows_launch(ocl_run *r, const ocl_kernel *k, ocl_buf src, ocl_buf dst,
                                      cl_int op, cl_int post, cl_long count, cl_int contig,
                                      cl_long parts, cl_float div, size_t groups, size_t local)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_REDUCE_ROWS);
    cl_ulong xo = ocl_eoff(src, 4), yo = ocl_eoff(dst, 4);
    ARG(ker, 0, src.mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, dst.mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, k->meta);
    ARG(ker, 5, op);
    ARG(ker, 6, count);
    ARG(ker, 7, contig);
    ARG(ker, 8, parts);
    ARG(ker, 9, div);
    cl_long total = (cl_long)groups;
    ARG(ker, 10, total);
    if (ocl_arg(r, ker, 11, local * sizeof(float), NULL))
        return LOOM_ERR_INTERNAL;
    ARG(ker, 12, post);
    return groups ? ocl_launch(r, ker, ocl_row_groups(r->d, total) * local, local) : LOOM_OK;
}

/* A work-group per output (v[1] = local size, v[2] = contiguous rows); with v[3] = PARTS > 1,
 * PARTS groups per output write partial results to scratch and a second launch (v[4] = its
 * local size) combines them. */
static loom_status run_reduce_rows(ocl_run *r, const ocl_kernel *k)
{
    size_t n_out = (size_t)ocl_numel(&k->out[0]);
    cl_long count = k->v[0], parts = k->v[3];
    cl_int op = k->iop;
    cl_float div = op == RED_MEAN ? (float)count : 1.0f;
    if (parts <= 1)
        return reduce_rows_launch(r, k, r->in[0], r->out[0], op, op, count, (cl_int)k->v[2], 1,
                                  div, n_out, (size_t)k->v[1]);
    /* Partial accumulations (the map applied), then their combination and the last step. */
    loom_status st = reduce_rows_launch(r, k, r->in[0], r->scratch, op, RED_SUM, count,
                                        (cl_int)k->v[2], parts, 1.0f, n_out * (size_t)parts,
                                        (size_t)k->v[1]);
    if (st != LOOM_OK)
        return st;
    cl_int combine = op == RED_MAX || op == RED_MIN || op == RED_PROD ? op : RED_SUM;
    return reduce_rows_launch(r, k, r->scratch, r->out[0], combine, op, parts, 1, 1, div, n_out,
                              (size_t)k->v[4]);
}

/* Reduce X over the axes in MASK (bit per axis). Few elements per output and many outputs: a
 * work-item per output; otherwise a work-group per output (split in parts when there are too
 * few outputs to fill the device). */
static loom_status reduce_prepare_mask(ocl_state *s, ocl_device *d, const loom_tensor_desc *x,
                                       uint32_t mask, ocl_kernel *k, char *err, size_t len)
{
    int64_t xs[LOOM_MAX_RANK], meta[2 + 4 * LOOM_MAX_RANK];
    ocl_contiguous_strides(x, xs);
    int nk = 0, nr = 0, contig = 1, seen_reduced = 0;
    int64_t kd[LOOM_MAX_RANK], ks[LOOM_MAX_RANK], rd[LOOM_MAX_RANK], rs[LOOM_MAX_RANK];
    int64_t count = 1, n_out = 1;
    for (uint32_t dd = 0; dd < x->rank; dd++) {
        if (mask & (1u << dd)) {
            rd[nr] = x->dims[dd];
            rs[nr++] = xs[dd];
            count *= x->dims[dd];
            seen_reduced |= x->dims[dd] > 1;
        } else {
            kd[nk] = x->dims[dd];
            ks[nk++] = xs[dd];
            n_out *= x->dims[dd];
            /* A kept axis after a reduced one: an output's elements are not one run. */
            if (seen_reduced && x->dims[dd] > 1)
                contig = 0;
        }
    }
    size_t at = 0;
    meta[at++] = nk;
    for (int i = 0; i < nk; i++)
        meta[at + (size_t)i] = kd[i], meta[at + (size_t)nk + (size_t)i] = ks[i];
    at += 2 * (size_t)nk;
    meta[at++] = nr;
    for (int i = 0; i < nr; i++)
        meta[at + (size_t)i] = rd[i], meta[at + (size_t)nr + (size_t)i] = rs[i];
    at += 2 * (size_t)nr;
    k->v[0] = count;
    if (count < 32 && n_out >= 64) {
        k->run = run_reduce;
    } else {
        cl_kernel ker = d->kernels[OCL_K_REDUCE_ROWS];
        size_t local = ocl_row_local(d, ker, count, 256);
        /* Enough groups for every compute unit several times over. */
        int64_t target = 4 * (int64_t)(d->info.compute_units ? d->info.compute_units : 1);
        int64_t parts = 1;
        /* LogSumExp needs the maximum before its sum: one part per output. */
        if (n_out < target && k->iop != RED_LOG_SUM_EXP) {
            parts = (target + n_out - 1) / n_out;
            int64_t most = count / ((int64_t)local * 16); /* each work-item 16 elements or more */
            if (parts > most)
                parts = most;
            if (parts < 1)
                parts = 1;
        }
        k->v[1] = (int64_t)local;
        k->v[2] = contig;
        k->v[3] = parts;
        k->v[4] = (int64_t)ocl_row_local(d, ker, parts, 256);
        k->scratch_bytes = parts > 1 ? (size_t)(n_out * parts) * sizeof(float) : 0;
        k->run = run_reduce_rows;
    }
    return ocl_put_meta(s, d, k, meta, at, 0, err, len);
}

/* The reduction code of a Reduce* op, -1 for another op. */
static int reduce_code(loom_op_id op)
{
    switch (op) {
    case LOOM_OP_REDUCE_SUM: return RED_SUM;
    case LOOM_OP_REDUCE_MEAN: return RED_MEAN;
    case LOOM_OP_REDUCE_MAX: return RED_MAX;
    case LOOM_OP_REDUCE_MIN: return RED_MIN;
    case LOOM_OP_REDUCE_PROD: return RED_PROD;
    case LOOM_OP_REDUCE_L1: return RED_L1;
    case LOOM_OP_REDUCE_L2: return RED_L2;
    case LOOM_OP_REDUCE_LOG_SUM: return RED_LOG_SUM;
    case LOOM_OP_REDUCE_LOG_SUM_EXP: return RED_LOG_SUM_EXP;
    case LOOM_OP_REDUCE_SUM_SQUARE: return RED_SUM_SQUARE;
    default: return -1;
    }
}

int ocl_reduce_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (reduce_code(node->op) >= 0) {
        if (node->inputs[0].dtype != LOOM_DTYPE_F32)
            return ocl_reason(reason, len, "%s: f32 only", node->op_name);
        /* The axes are canonical (graph/ops.h): the attribute, sorted, in range. */
        const loom_attr *axes = loom_node_attr(node, "axes");
        if (axes && axes->kind != LOOM_ATTR_INTS)
            return ocl_reason(reason, len, "%s: no canonical axes", node->op_name);
        for (size_t i = 0; axes && i < axes->count; i++)
            if (axes->ints[i] < 0 || axes->ints[i] >= (int64_t)node->inputs[0].rank)
                return ocl_reason(reason, len, "%s: axis %lld out of range", node->op_name,
                                  (long long)axes->ints[i]);
        return 1;
    }
    /* GlobalAveragePool */
    return node->inputs[0].dtype == LOOM_DTYPE_F32 && node->inputs[0].rank >= 3
               ? 1
               : ocl_reason(reason, len, "GlobalAveragePool: f32, rank >= 3");
}

loom_status ocl_reduce_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                               ocl_kernel *k, char *err, size_t len)
{
    if (reduce_code(node->op) >= 0) {
        /* Canonical axes: every axis when absent; empty (noop_with_empty_axes) reduces none, so
         * each output is its one element through the op's map and last step, as on the CPU. */
        const loom_attr *axes = loom_node_attr(node, "axes");
        uint32_t mask = 0;
        if (!axes || axes->kind != LOOM_ATTR_INTS)
            mask = (1u << node->inputs[0].rank) - 1;
        else
            for (size_t i = 0; i < axes->count; i++)
                mask |= 1u << axes->ints[i];
        k->iop = reduce_code(node->op);
        return reduce_prepare_mask(s, d, &node->inputs[0], mask, k, err, len);
    }
    /* GlobalAveragePool */
    k->iop = RED_MEAN;
    return reduce_prepare_mask(s, d, &node->inputs[0], ((1u << node->inputs[0].rank) - 1) & ~3u,
                               k, err, len);
}

/* ---- MaxPool, AveragePool ------------------------------------------------------------------- */

static loom_status run_pool(ocl_run *r, const ocl_kernel *k)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_POOL);
    cl_ulong xo = ocl_eoff(r->in[0], 4), yo = ocl_eoff(r->out[0], 4);
    cl_ulong n = (cl_ulong)ocl_numel(&k->out[0]);
    cl_int is_max = k->op == LOOM_OP_MAX_POOL, incl = k->iop;
    ARG(ker, 0, r->in[0].mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->out[0].mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, n);
    ARG(ker, 5, k->meta);
    ARG(ker, 6, is_max);
    ARG(ker, 7, incl);
    return ocl_launch(r, ker, (size_t)n, 0);
}

loom_status ocl_pool_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                             ocl_kernel *k, char *err, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    uint32_t ns = x->rank - 2;
    int64_t m[21];
    for (int i = 0; i < 3; i++)
        m[i] = m[3 + i] = 1;
    for (uint32_t i = 0; i < ns; i++) {
        m[3 - ns + i] = x->dims[2 + i];
        m[6 - ns + i] = y->dims[2 + i];
    }
    ocl_spatial3(node, "kernel_shape", 1, &m[6], 0);
    ocl_spatial3(node, "strides", 1, &m[9], 0);
    ocl_spatial3(node, "dilations", 1, &m[12], 0);
    ocl_spatial3(node, "pads", 0, &m[15], 0);
    ocl_spatial3(node, "pads", 0, &m[18], 1);
    k->iop = (int)loom_node_attr_int(node, "count_include_pad", 0);
    k->run = run_pool;
    return ocl_put_meta(s, d, k, m, 21, 0, err, len);
}
