/*
 * The OpenCL backend's GEMMs, all through CLBlast: MatMul (batched, strided when regular),
 * Gemm (optional C broadcast into Y first), and Conv (im2col into scratch, then one GEMM per
 * image and group, bias per channel).
 */
#include "ocl_kernels.h"

#include <clblast_c.h>
#include <stdlib.h>
#include <string.h>

/* ---- GEMMs: MatMul, Gemm, Conv (CLBlast) ------------------------------------------------------ */

typedef struct gemm_batch {
    int64_t a, b, c; /* element offsets of one product */
} gemm_batch;

/* MatMul: Y[b] = A[ba] x B[bb] for each batch b; stride mode when offsets are regular. */
typedef struct matmul_params {
    int64_t m, n, kk, count;
    int strided; /* 1: CLBlastSgemmStridedBatched with sa, sb */
    int64_t sa, sb;
    gemm_batch batches[];
} matmul_params;

static loom_status run_matmul(ocl_run *r, const ocl_kernel *k)
{
    const matmul_params *p = k->params;
    cl_command_queue q = r->d->queue;
    size_t ao = r->in[0].off / 4, bo = r->in[1].off / 4, co = r->out[0].off / 4;
    if (p->strided) {
        loom_status st = ocl_fault_check(r, "CLBlastSgemmStridedBatched");
        if (st != LOOM_OK)
            return st;
        cl_event ev = NULL;
        CLBlastStatusCode bs = CLBlastSgemmStridedBatched(
            CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, (size_t)p->m,
            (size_t)p->n, (size_t)p->kk, 1.0f, r->in[0].mem, ao, (size_t)p->kk, (size_t)p->sa,
            r->in[1].mem, bo, (size_t)p->n, (size_t)p->sb, 0.0f, r->out[0].mem, co, (size_t)p->n,
            (size_t)(p->m * p->n), (size_t)p->count, &q, &ev);
        return ocl_blas_done(r, bs, ev, "CLBlastSgemmStridedBatched");
    }
    for (int64_t i = 0; i < p->count; i++) {
        const gemm_batch *g = &p->batches[i];
        loom_status st = ocl_fault_check(r, "CLBlastSgemm");
        if (st != LOOM_OK)
            return st;
        cl_event ev = NULL;
        CLBlastStatusCode bs = CLBlastSgemm(
            CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, (size_t)p->m,
            (size_t)p->n, (size_t)p->kk, 1.0f, r->in[0].mem, ao + (size_t)g->a, (size_t)p->kk,
            r->in[1].mem, bo + (size_t)g->b, (size_t)p->n, 0.0f, r->out[0].mem, co + (size_t)g->c,
            (size_t)p->n, &q, &ev);
        if ((st = ocl_blas_done(r, bs, ev, "CLBlastSgemm")) != LOOM_OK)
            return st;
    }
    return LOOM_OK;
}

int ocl_matmul_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_tensor_desc *a = &node->inputs[0], *b = &node->inputs[1];
    if (a->dtype != LOOM_DTYPE_F32 || b->dtype != LOOM_DTYPE_F32)
        return ocl_reason(reason, len, "MatMul: f32 only (CLBlast has no integer GEMM)");
    if (ocl_numel(a) == 0 || ocl_numel(b) == 0 || ocl_numel(&node->outputs[0]) == 0)
        return ocl_reason(reason, len, "MatMul: empty operands not supported");
    return 1;
}

loom_status ocl_matmul_prepare(const loom_node_desc *node, ocl_kernel *k, char *err,
                               size_t len)
{
    const loom_tensor_desc *a = &node->inputs[0], *b = &node->inputs[1], *y = &node->outputs[0];
    int64_t m = a->rank >= 2 ? a->dims[a->rank - 2] : 1, kk = a->dims[a->rank - 1];
    int64_t n = b->rank >= 2 ? b->dims[b->rank - 1] : 1;
    /* Batch dims: A's and B's leading dims broadcast to the output's. */
    uint32_t ra = a->rank > 2 ? a->rank - 2 : 0, rb = b->rank > 2 ? b->rank - 2 : 0;
    uint32_t rbatch = ra > rb ? ra : rb;
    int64_t bd[LOOM_MAX_RANK], da[LOOM_MAX_RANK], db[LOOM_MAX_RANK];
    int64_t count = 1;
    for (uint32_t i = 0; i < rbatch; i++) {
        int64_t x = i + ra >= rbatch ? a->dims[i + ra - rbatch] : 1;
        int64_t z = i + rb >= rbatch ? b->dims[i + rb - rbatch] : 1;
        da[i] = x;
        db[i] = z;
        bd[i] = x > z ? x : z;
        count *= bd[i];
    }
    (void)y;
    /* B without batch dims and A contiguous: one GEMM of (count*M) rows. */
    if (rb == 0) {
        m *= count;
        count = 1;
    }
    matmul_params *p = calloc(1, sizeof *p + (size_t)count * sizeof(gemm_batch));
    if (!p)
        return ocl_kfail(err, len, LOOM_ERR_OUT_OF_MEMORY, node, "out of memory");
    p->m = m;
    p->n = n;
    p->kk = kk;
    p->count = count;
    for (int64_t i = 0; i < count && rb; i++) {
        int64_t rem = i, oa = 0, ob = 0, sa = 1, sb = 1;
        for (int dd = (int)rbatch - 1; dd >= 0; dd--) {
            int64_t idx = rem % bd[dd];
            rem /= bd[dd];
            oa += (da[dd] == 1 ? 0 : idx) * sa;
            ob += (db[dd] == 1 ? 0 : idx) * sb;
            sa *= da[dd];
            sb *= db[dd];
        }
        p->batches[i] = (gemm_batch){oa * m * kk, ob * kk * n, i * m * n};
    }
    if (rb == 0)
        p->batches[0] = (gemm_batch){0, 0, 0};
    /* Regular offsets (no broadcast of either side) take the strided-batched call. */
    if (count > 1) {
        int regular = 1;
        for (int64_t i = 0; i < count && regular; i++)
            regular = p->batches[i].a == i * m * kk && p->batches[i].b == i * kk * n;
        if (regular) {
            p->strided = 1;
            p->sa = m * kk;
            p->sb = kk * n;
        }
    }
    k->params = p;
    k->run = run_matmul;
    return LOOM_OK;
}

/* Gemm: optional C copied (broadcast) into Y, then Y = alpha op(A) op(B) + beta Y. */
static loom_status run_gemm(ocl_run *r, const ocl_kernel *k)
{
    int64_t m = k->v[0], n = k->v[1], kk = k->v[2];
    int ta = (int)k->v[3], tb = (int)k->v[4], has_c = (int)k->v[5];
    float beta = has_c ? k->fb : 0.0f;
    loom_status st;
    if (has_c) {
        cl_kernel ker = ocl_get_kernel(r, OCL_K_COPY_4);
        cl_long xo = (cl_long)ocl_eoff(r->in[2], 4), yo = (cl_long)ocl_eoff(r->out[0], 4);
        cl_ulong cnt = (cl_ulong)(m * n), mo = 0;
        ARG(ker, 0, r->in[2].mem);
        ARG(ker, 1, xo);
        ARG(ker, 2, r->out[0].mem);
        ARG(ker, 3, yo);
        ARG(ker, 4, cnt);
        ARG(ker, 5, k->meta);
        ARG(ker, 6, mo);
        if ((st = ocl_launch(r, ker, (size_t)cnt, 0)) != LOOM_OK)
            return st;
    }
    if ((st = ocl_fault_check(r, "CLBlastSgemm")) != LOOM_OK)
        return st;
    cl_command_queue q = r->d->queue;
    cl_event ev = NULL;
    CLBlastStatusCode bs = CLBlastSgemm(
        CLBlastLayoutRowMajor, ta ? CLBlastTransposeYes : CLBlastTransposeNo,
        tb ? CLBlastTransposeYes : CLBlastTransposeNo, (size_t)m, (size_t)n, (size_t)kk, k->fa,
        r->in[0].mem, r->in[0].off / 4, (size_t)(ta ? m : kk), r->in[1].mem, r->in[1].off / 4,
        (size_t)(tb ? kk : n), beta, r->out[0].mem, r->out[0].off / 4, (size_t)n, &q, &ev);
    return ocl_blas_done(r, bs, ev, "CLBlastSgemm");
}

int ocl_gemm_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (ocl_has_in(node, i) && node->inputs[i].dtype != LOOM_DTYPE_F32)
            return ocl_reason(reason, len, "Gemm: f32 only");
    if (ocl_numel(&node->outputs[0]) == 0 || ocl_numel(&node->inputs[0]) == 0)
        return ocl_reason(reason, len, "Gemm: empty operands not supported");
    return 1;
}

loom_status ocl_gemm_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                             ocl_kernel *k, char *err, size_t len)
{
    const loom_tensor_desc *a = &node->inputs[0], *y = &node->outputs[0];
    int ta = (int)loom_node_attr_int(node, "transA", 0), tb = (int)loom_node_attr_int(node, "transB", 0);
    k->v[0] = y->dims[0];
    k->v[1] = y->dims[1];
    k->v[2] = ta ? a->dims[0] : a->dims[1];
    k->v[3] = ta;
    k->v[4] = tb;
    k->fa = loom_node_attr_float(node, "alpha", 1.0f);
    k->fb = loom_node_attr_float(node, "beta", 1.0f);
    k->v[5] = ocl_has_in(node, 2) && k->fb != 0.0f;
    k->run = run_gemm;
    if (!k->v[5])
        return LOOM_OK;
    int64_t meta[1 + 3 * 2];
    meta[0] = 2;
    meta[1] = y->dims[0];
    meta[2] = y->dims[1];
    ocl_bcast_strides(&node->inputs[2], y, &meta[3]);
    meta[5] = y->dims[1];
    meta[6] = 1;
    return ocl_put_meta(s, d, k, meta, 7, 0, err, len);
}

/* Conv, 1-D and 2-D: per image and group, im2col into scratch (skipped for 1x1 stride-1
 * unpadded kernels) and one GEMM W[g] x col; bias added per channel afterwards. */
int ocl_conv_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (!ocl_window_supports(node, reason, len, 1))
        return 0;
    if (node->inputs[1].dtype != LOOM_DTYPE_F32 ||
        (ocl_has_in(node, 2) && node->inputs[2].dtype != LOOM_DTYPE_F32))
        return ocl_reason(reason, len, "Conv: f32 only");
    if (ocl_numel(&node->outputs[0]) == 0 || ocl_numel(&node->inputs[1]) == 0)
        return ocl_reason(reason, len, "Conv: empty tensors not supported");
    return 1;
}

static loom_status run_conv(ocl_run *r, const ocl_kernel *k)
{
    const int64_t *v = k->v;
    int64_t N = v[0], C = v[1], H = v[2], W = v[3], M = v[4], G = v[5], KH = v[6], KW = v[7];
    int64_t OH = v[8], OW = v[9], direct = v[10];
    int64_t Cg = C / G, Mg = M / G, K = Cg * KH * KW, P = OH * OW;
    cl_command_queue q = r->d->queue;
    size_t xo = r->in[0].off / 4, wo = r->in[1].off / 4, yo = r->out[0].off / 4;
    size_t so = r->scratch.off / 4;
    cl_kernel im2col = ocl_get_kernel(r, OCL_K_IM2COL);
    loom_status st;
    for (int64_t img = 0; img < N; img++) {
        for (int64_t g = 0; g < G; g++) {
            size_t xoff = xo + (size_t)((img * C + g * Cg) * H * W);
            cl_mem bmem = r->in[0].mem;
            size_t boff = xoff;
            if (!direct) {
                cl_ulong xe = xoff, ce = so, cnt = (cl_ulong)(K * P);
                ARG(im2col, 0, r->in[0].mem);
                ARG(im2col, 1, xe);
                ARG(im2col, 2, r->scratch.mem);
                ARG(im2col, 3, ce);
                ARG(im2col, 4, k->meta);
                ARG(im2col, 5, cnt);
                if ((st = ocl_launch(r, im2col, (size_t)cnt, 0)) != LOOM_OK)
                    return st;
                bmem = r->scratch.mem;
                boff = so;
            }
            if ((st = ocl_fault_check(r, "CLBlastSgemm")) != LOOM_OK)
                return st;
            cl_event ev = NULL;
            CLBlastStatusCode bs = CLBlastSgemm(
                CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, (size_t)Mg,
                (size_t)P, (size_t)K, 1.0f, r->in[1].mem, wo + (size_t)(g * Mg * K), (size_t)K,
                bmem, boff, (size_t)P, 0.0f, r->out[0].mem,
                yo + (size_t)((img * M + g * Mg) * P), (size_t)P, &q, &ev);
            if ((st = ocl_blas_done(r, bs, ev, "CLBlastSgemm")) != LOOM_OK)
                return st;
        }
    }
    if (k->n_in > 2 && r->in[2].mem) {
        cl_kernel ker = ocl_get_kernel(r, OCL_K_BIAS_CHANNEL);
        cl_ulong ye = yo, be = r->in[2].off / 4, n = (cl_ulong)(N * M * P);
        cl_long Ml = M, inner = P;
        ARG(ker, 0, r->out[0].mem);
        ARG(ker, 1, ye);
        ARG(ker, 2, r->in[2].mem);
        ARG(ker, 3, be);
        ARG(ker, 4, n);
        ARG(ker, 5, Ml);
        ARG(ker, 6, inner);
        if ((st = ocl_launch(r, ker, (size_t)n, 0)) != LOOM_OK)
            return st;
    }
    return LOOM_OK;
}

loom_status ocl_conv_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                             ocl_kernel *k, char *err, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0], *w = &node->inputs[1], *y = &node->outputs[0];
    int two = x->rank == 4;
    int64_t N = x->dims[0], C = x->dims[1], H = two ? x->dims[2] : 1, W = x->dims[x->rank - 1];
    int64_t M = w->dims[0], G = loom_node_attr_int(node, "group", 1);
    int64_t KH = two ? w->dims[2] : 1, KW = w->dims[w->rank - 1];
    int64_t OH = two ? y->dims[2] : 1, OW = y->dims[y->rank - 1];
    int64_t k3[3], s3[3], d3[3], pb[3], pe[3];
    ocl_spatial3(node, "kernel_shape", 1, k3, 0);
    ocl_spatial3(node, "strides", 1, s3, 0);
    ocl_spatial3(node, "dilations", 1, d3, 0);
    ocl_spatial3(node, "pads", 0, pb, 0);
    ocl_spatial3(node, "pads", 0, pe, 1);
    if (G < 1 || C % G || M % G)
        return ocl_kfail(err, len, LOOM_ERR_INVALID_ARGUMENT, node, "group %lld does not divide "
                     "the channels", (long long)G);
    int64_t v[11] = {N, C, H, W, M, G, KH, KW, OH, OW, 0};
    v[10] = KH == 1 && KW == 1 && s3[1] == 1 && s3[2] == 1 && pb[1] == 0 && pb[2] == 0 &&
            pe[1] == 0 && pe[2] == 0 && OH == H && OW == W;
    memcpy(k->v, v, sizeof v);
    int64_t meta[13] = {C / G, H, W, KH, KW, s3[1], s3[2], d3[1], d3[2], pb[1], pb[2], OH, OW};
    k->scratch_bytes = v[10] ? 0 : (size_t)((C / G) * KH * KW * OH * OW) * sizeof(float);
    k->run = run_conv;
    return ocl_put_meta(s, d, k, meta, 13, 0, err, len);
}
