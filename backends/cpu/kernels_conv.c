/*
 * CPU kernels of the convolutions: Conv (1-D, 2-D and 3-D) and ConvTranspose, with ONNX
 * opset-18 semantics. QLinearConv is in kernels_quantization.c; the GEMMs are cut over the pool as
 * kernels_linalg.c describes (cpu_gemm.c).
 *
 * Conv lowers to GEMM through im2col (Y_g[M/g, P] = W_g[M/g, K] * col[K, P], K = C/g * kd * kh *
 * kw, P = output pixels; a 1-D or 2-D conv has kd = 1 and a depth of 1). Scratch holds S column
 * buffers, S fixed at prepare time from the shape alone, since prepare sees no pool: as many
 * (image, group) items as fit in 16 MiB, at most 64, at least 1. At run time:
 *  - many small items (at least as many as threads, and S too): items run in parallel, item i of
 *    a round of S using buffer i, each one im2col and one GEMM on its thread;
 *  - otherwise items run one after another, each split over the pool. When P >= M/g, by chunks
 *    of output columns sized so a chunk's columns (K x cols floats) fit in L2: a thread builds
 *    its chunk's columns and runs the GEMM on them while they are still in its cache. Else by
 *    blocks of output channels, after an im2col split by rows.
 * 1x1, stride-1, unpadded convs read the input as the GEMM's B directly (no scratch); on 1x1
 * planes (squeeze-excitation) the whole batch is one GEMM, X [N, C] times W^T; depthwise
 * convs (one input channel per group) run kernels_conv_depthwise.c's direct kernel, and other
 * grouped convs with tiny groups direct loops here, where a GEMM with K <= 32 is all overhead
 * (both 1-D and 2-D only: 3-D convs always take im2col + GEMM).
 * The epilogue (bias; FusedConv's residual Z and activation, cpu_epilogue.h) is applied by
 * whoever wrote the block, while it is in cache. FusedConv is Conv with that epilogue
 * (graph/ops_fused.c) and shares everything here.
 *
 * ConvTranspose: per (image, group) one GEMM col = W_g^T X_g (single-threaded cblas), then col2im
 * into Y; the canonical attributes are graph/ops_conv_pool.c's.
 */
#include "cpu_avx2.h"
#include "cpu_conv.h"
#include "cpu_gemm.h"
#include "cpu_kernels.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32

/* im2col buffers for parallel (image, group) items: budget in bytes, and most buffers. */
#define CONV_COL_BUDGET ((size_t)16 << 20)
#define CONV_COL_MAX_BUFFERS 64
/* Column chunks of a conv's im2col: the bytes one chunk should span (an L2's worth), and the
 * fewest columns a chunk has, so that its GEMM still runs at speed. */
#define CONV_COL_CHUNK_BYTES ((size_t)256 << 10)
#define CONV_COL_CHUNK_MIN 64
/* Grouped convs whose groups reduce over at most this many taps use direct loops. */
#define CONV_DIRECT_MAX_TAPS 32

/* d[i] += w * s[i]. Unrolled by hand because -O2 (GCC's very-cheap vectorizer cost model)
 * leaves loops with unknown trip counts scalar; the unrolled body vectorizes as straight-line
 * code, which restrict makes legal. */
static inline void axpy_row(float *restrict d, const float *restrict s, float w, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        d[i] += w * s[i];
        d[i + 1] += w * s[i + 1];
        d[i + 2] += w * s[i + 2];
        d[i + 3] += w * s[i + 3];
        d[i + 4] += w * s[i + 4];
        d[i + 5] += w * s[i + 5];
        d[i + 6] += w * s[i + 6];
        d[i + 7] += w * s[i + 7];
    }
    for (; i < n; i++)
        d[i] += w * s[i];
}

/* d[i] += b, unrolled for the same reason. */
static inline void add_row(float *restrict d, float b, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        d[i] += b;
        d[i + 1] += b;
        d[i + 2] += b;
        d[i + 3] += b;
        d[i + 4] += b;
        d[i + 5] += b;
        d[i + 6] += b;
        d[i + 7] += b;
    }
    for (; i < n; i++)
        d[i] += b;
}

/* ---- Conv -------------------------------------------------------------------------------------- */


/* FusedConv's pooling (graph/ops_fused.c: pool, pool_kernel, pool_strides) into P's pool
 * fields when P is not NULL; whether the node has one. */
static int conv_pool_attrs(const loom_node_desc *node, conv_params *p)
{
    const loom_attr *a = loom_node_attr(node, "pool");
    if (node->op != LOOM_OP_FUSED_CONV || !a || a->kind != LOOM_ATTR_STRING || !a->s || !a->s[0])
        return 0;
    if (p) {
        int64_t k[2] = {1, 1}, st[2] = {1, 1};
        cpu_get_ints(node, "pool_kernel", 2, k);
        cpu_get_ints(node, "pool_strides", 2, st);
        p->pool = 1;
        p->pkh = k[0];
        p->pkw = k[1];
        p->psh = st[0];
        p->psw = st[1];
    }
    return 1;
}

static int conv_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const int fused = node->op == LOOM_OP_FUSED_CONV;
    if (node->n_inputs < 2 || node->n_inputs > (fused ? 4u : 3u) || node->n_outputs != 1) {
        cpu_reason(reason, len, fused ? "FusedConv takes 2 to 4 inputs and 1 output"
                                      : "Conv takes 2 or 3 inputs and 1 output");
        return 0;
    }
    cpu_epilogue ep;
    if (fused && !cpu_epilogue_parse(node, &ep, reason, len))
        return 0;
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (cpu_present(node, i) && node->inputs[i].dtype != LOOM_DTYPE_F32) {
            cpu_reason(reason, len, "Conv: only f32 is supported (input %u is dtype %d)", i,
                       (int)node->inputs[i].dtype);
            return 0;
        }
    uint32_t rank = node->inputs[0].rank;
    if (rank < 3 || rank > 5) {
        cpu_reason(reason, len, "Conv: only 1-D, 2-D and 3-D convolutions (input rank %u)", rank);
        return 0;
    }
    if (node->inputs[1].rank != rank || node->outputs[0].rank != rank) {
        cpu_reason(reason, len, "Conv: weight and output must have the input's rank");
        return 0;
    }
    if (fused && conv_pool_attrs(node, NULL) && rank != 4) {
        cpu_reason(reason, len, "FusedConv: pooling only after a 2-D conv (input rank %u)", rank);
        return 0;
    }
    if (!cpu_window_attrs_ok(node, rank - 2, reason, len))
        return 0;
    int64_t g = loom_node_attr_int(node, "group", 1);
    if (g < 1 || node->inputs[0].dims[1] % g || node->inputs[1].dims[0] % g) {
        cpu_reason(reason, len, "Conv: group %lld does not divide the channels", (long long)g);
        return 0;
    }
    int64_t kc = node->inputs[1].dims[1];
    for (uint32_t d = 2; d < rank; d++)
        kc *= node->inputs[1].dims[d];
    int64_t p = 1;
    for (uint32_t d = 2; d < rank; d++)
        p *= node->outputs[0].dims[d];
    if (!cpu_fits_int(kc) || !cpu_fits_int(p) || !cpu_fits_int(node->inputs[1].dims[0])) {
        cpu_reason(reason, len, "Conv: a dimension exceeds the BLAS integer range");
        return 0;
    }
    return 1;
}

/* Rows [r0, r1) and columns [c0, c1) of the column matrix of one (image, group) item: row
 * (c, kz, ki, kj), column (oz, oh, ow) holds
 * x[c][oz*sd - pf + kz*dd][oh*sh - pt + ki*dh][ow*sw - pl + kj*dw], 0 in the padding (kz and oz
 * are 0 below 3-D). Rows are P long, so column ranges of different threads never share a row
 * segment. */
static void conv_im2col(const conv_params *p, const float *x, float *col, int64_t r0, int64_t r1,
                        int64_t c0, int64_t c1)
{
    const int64_t plane = p->kh * p->kw, taps = p->kd * plane;
    for (int64_t r = r0; r < r1; r++) {
        int64_t c = r / taps, kz = r % taps / plane, ki = r % plane / p->kw, kj = r % p->kw;
        const float *xc = x + c * p->in_sp;
        float *dst = col + r * p->p;
        int64_t lo, hi;
        cpu_valid_range(kj * p->dw - p->pl, p->sw, p->w, p->ow, &lo, &hi);
        for (int64_t pc = c0; pc < c1;) {
            /* orow: the output row (oz, oh) of column pc */
            int64_t orow = pc / p->ow, ow0 = pc % p->ow;
            int64_t ow1 = c1 - pc < p->ow - ow0 ? ow0 + (c1 - pc) : p->ow;
            int64_t iz = orow / p->oh * p->sd - p->pf + kz * p->dd;
            int64_t ih = orow % p->oh * p->sh - p->pt + ki * p->dh;
            float *d = dst + orow * p->ow;
            pc += ow1 - ow0;
            if (ih < 0 || ih >= p->h || iz < 0 || iz >= p->d) {
                memset(d + ow0, 0, (size_t)(ow1 - ow0) * sizeof *d);
                continue;
            }
            const float *src = xc + (iz * p->h + ih) * p->w + kj * p->dw - p->pl;
            int64_t a = lo > ow0 ? lo : ow0, b = hi < ow1 ? hi : ow1;
            if (a > b)
                a = b = ow0;
            for (int64_t o = ow0; o < a; o++)
                d[o] = 0.0f;
            if (p->sw == 1)
                memcpy(d + a, src + a, (size_t)(b - a) * sizeof *d);
            else
                for (int64_t o = a; o < b; o++)
                    d[o] = src[o * p->sw];
            for (int64_t o = b; o < ow1; o++)
                d[o] = 0.0f;
        }
    }
}

typedef struct conv_ctx {
    const conv_params *p;
    const float *x, *w, *bias, *z;
    float *y, *scratch;
    /* the item being worked on, in the one-item-at-a-time scheme */
    cpu_gemm g;
    const float *xi, *wi, *bi, *col, *zi;
    float *yi;
    size_t item0;   /* first item of the round, in the item-parallel scheme */
    size_t nchunks; /* column chunks of the item, in the column scheme */
} conv_ctx;

/* The epilogue of rows [r0, r1), columns [c0, c1) of a group's output: each output channel's
 * bias, then FusedConv's residual Z (at the same offsets as Y) and activation. */
static void conv_add_bias(const conv_params *p, const float *bias, const float *z, float *y,
                          int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    if (!z && p->ep.act == CPU_ACT_NONE) {
        if (!bias)
            return;
        for (int64_t r = r0; r < r1; r++)
            add_row(y + r * p->p + c0, bias[r], c1 - c0);
        return;
    }
    for (int64_t r = r0; r < r1; r++)
        cpu_epilogue_apply(&p->ep, y + r * p->p + c0, (size_t)(c1 - c0), bias ? bias[r] : 0.0f,
                           NULL, z ? z + r * p->p + c0 : NULL);
}

static cpu_gemm conv_gemm_shape(const conv_params *p)
{
    return (cpu_gemm){.m = p->mg, .n = p->p, .k = p->kc, .lda = p->kc > 0 ? p->kc : 1,
                     .ldb = p->p, .ldc = p->p, .alpha = 1.0f, .nb = 1};
}

static void conv_im2col_task(void *arg, size_t r0, size_t r1)
{
    conv_ctx *x = arg;
    conv_im2col(x->p, x->xi, x->scratch, (int64_t)r0, (int64_t)r1, 0, x->p->p);
}

/* One chunk of output columns: its im2col and its GEMM on the same thread, the columns still in
 * that core's cache when the GEMM packs them. */
static void conv_cols_task(void *arg, size_t b0, size_t b1)
{
    const conv_ctx *x = arg;
    const conv_params *p = x->p;
    cpu_gemm g = conv_gemm_shape(p);
    g.split_n = 1;
    for (size_t blk = b0; blk < b1; blk++) {
        int64_t lo = cpu_gemm_block_start(p->p, x->nchunks, blk),
                hi = cpu_gemm_block_start(p->p, x->nchunks, blk + 1);
        if (!p->pointwise)
            conv_im2col(p, x->xi, x->scratch, 0, p->kc, lo, hi);
        cpu_gemm_block(&g, x->wi, x->col, x->yi, lo, hi, 0.0f);
        conv_add_bias(p, x->bi, x->zi, x->yi, 0, p->mg, lo, hi);
    }
}

/* A pointwise conv on 1x1 planes (squeeze-excitation's convs) over a batch of images: X is
 * [N, C] and Y [N, M] as they lie, so the whole batch is one GEMM Y = X W^T (W is [M, C]), cut in
 * blocks; each block's epilogue adds the per-column bias, Z and the activation. */
static void conv_batch_gemm_task(void *arg, size_t b0, size_t b1)
{
    const conv_ctx *x = arg;
    const conv_params *p = x->p;
    for (size_t blk = b0; blk < b1; blk++) {
        const int64_t extent = x->g.split_n ? p->m : p->n;
        const int64_t lo = cpu_gemm_block_start(extent, x->g.nb, blk),
                      hi = cpu_gemm_block_start(extent, x->g.nb, blk + 1);
        cpu_gemm_block(&x->g, x->x, x->w, x->y, lo, hi, 0.0f);
        const int64_t r0 = x->g.split_n ? 0 : lo, r1 = x->g.split_n ? p->n : hi;
        const int64_t c0 = x->g.split_n ? lo : 0, c1 = x->g.split_n ? hi : p->m;
        if (!x->bias && !x->z && p->ep.act == CPU_ACT_NONE)
            continue;
        for (int64_t r = r0; r < r1; r++)
            cpu_epilogue_apply(&p->ep, x->y + r * p->m + c0, (size_t)(c1 - c0), 0.0f,
                               x->bias ? x->bias + c0 : NULL,
                               x->z ? x->z + r * p->m + c0 : NULL);
    }
}

static void conv_gemm_task(void *arg, size_t b0, size_t b1)
{
    const conv_ctx *x = arg;
    const conv_params *p = x->p;
    for (size_t blk = b0; blk < b1; blk++) {
        int64_t extent = x->g.split_n ? p->p : p->mg;
        int64_t lo = cpu_gemm_block_start(extent, x->g.nb, blk),
                hi = cpu_gemm_block_start(extent, x->g.nb, blk + 1);
        cpu_gemm_block(&x->g, x->wi, x->col, x->yi, lo, hi, 0.0f);
        if (x->g.split_n)
            conv_add_bias(p, x->bi, x->zi, x->yi, 0, p->mg, lo, hi);
        else
            conv_add_bias(p, x->bi, x->zi, x->yi, lo, hi, 0, p->p);
    }
}

static void conv_item_task(void *arg, size_t i0, size_t i1)
{
    const conv_ctx *x = arg;
    const conv_params *p = x->p;
    cpu_gemm g = conv_gemm_shape(p);
    for (size_t r = i0; r < i1; r++) {
        size_t item = x->item0 + r;
        int64_t n = (int64_t)item / p->group, grp = (int64_t)item % p->group;
        const float *xi = x->x + (n * p->c + grp * p->cg) * p->in_sp;
        float *yi = x->y + (n * p->m + grp * p->mg) * p->p;
        const float *col = xi;
        if (!p->pointwise) {
            float *buf = x->scratch + r * (size_t)(p->kc * p->p);
            conv_im2col(p, xi, buf, 0, p->kc, 0, p->p);
            col = buf;
        }
        cpu_gemm_block(&g, x->w + grp * p->mg * p->kc, col, yi, 0, p->mg, 0.0f);
        conv_add_bias(p, x->bias ? x->bias + grp * p->mg : NULL,
                      x->z ? x->z + (n * p->m + grp * p->mg) * p->p : NULL, yi, 0, p->mg, 0,
                      p->p);
    }
}

/* Direct convolution of whole output planes (image, output channel): for grouped convs whose
 * groups are too small for a GEMM to pay. Tap-major, so the inner loop runs along a row. */
static void conv_direct_task(void *arg, size_t q0, size_t q1)
{
    const conv_ctx *x = arg;
    const conv_params *p = x->p;
    for (size_t q = q0; q < q1; q++) {
        int64_t n = (int64_t)q / p->m, oc = (int64_t)q % p->m, grp = oc / p->mg;
        float *y = x->y + (int64_t)q * p->p;
        float b = x->bias ? x->bias[oc] : 0.0f;
        for (int64_t i = 0; i < p->p; i++)
            y[i] = b;
        for (int64_t c = 0; c < p->cg; c++) {
            const float *xc = x->x + (n * p->c + grp * p->cg + c) * p->in_sp;
            const float *wc = x->w + (oc * p->cg + c) * p->kh * p->kw;
            for (int64_t ki = 0; ki < p->kh; ki++) {
                int64_t oh_lo, oh_hi;
                cpu_valid_range(ki * p->dh - p->pt, p->sh, p->h, p->oh, &oh_lo, &oh_hi);
                for (int64_t kj = 0; kj < p->kw; kj++) {
                    float wv = wc[ki * p->kw + kj];
                    int64_t lo, hi;
                    cpu_valid_range(kj * p->dw - p->pl, p->sw, p->w, p->ow, &lo, &hi);
                    for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                        const float *src =
                            xc + (oh * p->sh - p->pt + ki * p->dh) * p->w + kj * p->dw - p->pl;
                        float *d = y + oh * p->ow;
                        if (p->sw == 1)
                            axpy_row(d + lo, src + lo, wv, hi - lo);
                        else
                            for (int64_t o = lo; o < hi; o++)
                                d[o] += wv * src[o * p->sw];
                    }
                }
            }
        }
        if (x->z || p->ep.act != CPU_ACT_NONE)
            cpu_epilogue_apply(&p->ep, y, (size_t)p->p, 0.0f, NULL,
                               x->z ? x->z + (int64_t)q * p->p : NULL);
    }
}

typedef struct conv_pool_ctx {
    const conv_params *p;
    const float *src;
    float *y;
} conv_pool_ctx;

static void conv_pool_task(void *arg, size_t q0, size_t q1);
static void conv_compute(conv_ctx *xp, cpu_pool *pool);

static loom_status conv_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                            char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const conv_params *p = k->params;
    conv_ctx x = {.p = p,
                  .x = args->inputs[0],
                  .w = args->inputs[1],
                  .bias = p->has_bias ? args->inputs[2] : NULL,
                  .z = p->has_z ? args->inputs[3] : NULL,
                  .y = args->outputs[0],
                  .scratch = args->scratch};
    if (p->n == 0 || p->m == 0 || p->p == 0)
        return LOOM_OK;
    if (p->pool && !p->pool_fast) {
        /* The conv into scratch, then its pooling into Y. */
        x.y = (float *)((char *)args->scratch + p->pool_off);
        conv_compute(&x, pool);
        conv_pool_ctx pc = {.p = p, .src = x.y, .y = args->outputs[0]};
        const double plane = (double)(p->ph * p->pwo * p->pkh * p->pkw) + 1.0;
        const size_t grain = plane >= 16384.0 ? 1 : (size_t)(16384.0 / plane) + 1;
        cpu_parallel_for(pool, (size_t)(p->n * p->m), grain, conv_pool_task, &pc);
        return LOOM_OK;
    }
    conv_compute(&x, pool);
    return LOOM_OK;
}

/* Pooled planes [Q0, Q1) of a FusedConv from its conv output in scratch. */
static void conv_pool_task(void *arg, size_t q0, size_t q1)
{
    const conv_pool_ctx *c = arg;
    const conv_params *p = c->p;
    for (size_t q = q0; q < q1; q++)
        cpu_max_pool_rows(c->y + (int64_t)q * p->ph * p->pwo, p->pwo, c->src + (int64_t)q * p->p,
                          p->ow, p->ph, p->pwo, (int)p->pkh, (int)p->pkw, (int)p->psh,
                          (int)p->psw, p->pool_avx2);
}

/* The conv of X's node into X->y, by the kernel prepare chose. */
static void conv_compute(conv_ctx *xp, cpu_pool *pool)
{
    conv_ctx x = *xp;
    const conv_params *p = x.p;
    unsigned threads = cpu_pool_threads(pool);
    double item_macs = (double)p->mg * (double)p->kc * (double)p->p;
    if (p->pw) {
        cpu_conv_pw_run(p, x.x, x.w, x.bias, x.z, x.y, pool);
        return;
    }
    if (p->stem_band) {
        cpu_conv_stem_run(p, x.x, x.w, x.bias, x.z, x.y, x.scratch, pool);
        return;
    }
    if (p->dcb) {
        cpu_conv_dcb_run(p, x.x, x.w, x.bias, x.z, x.y, x.scratch, pool);
        return;
    }
    if (p->dwb_band > 0) {
        cpu_conv_dwb_run(p, x.x, x.w, x.bias, x.z, x.y, x.scratch, pool);
        return;
    }
    if (p->depthwise) {
        cpu_conv_dw_run(p, x.x, x.w, x.bias, x.z, x.y, pool);
        return;
    }
    if (p->direct) {
        double plane = (double)p->cg * (double)p->kh * (double)p->kw * (double)p->p + 1.0;
        size_t grain = plane >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / plane) + 1;
        cpu_parallel_for(pool, (size_t)(p->n * p->m), grain, conv_direct_task, &x);
        return;
    }
    if (p->pointwise && p->p == 1 && p->group == 1 && p->n > 1) {
        x.g = (cpu_gemm){.m = p->n, .n = p->m, .k = p->c, .lda = p->c, .ldb = p->c,
                         .ldc = p->m, .alpha = 1.0f, .trans_b = 1, .nb = 1};
        size_t grain = cpu_gemm_plan(&x.g, 1, threads);
        cpu_parallel_for(pool, x.g.nb, grain, conv_batch_gemm_task, &x);
        return;
    }
    size_t items = (size_t)(p->n * p->group);
    size_t per_round = p->pointwise ? items : p->n_buffers;
    /* Many small items: one thread per item, each with its own column buffer. Big items split
     * better inside, where their GEMM has blocks to cut. */
    if (threads > 1 && items >= threads && per_round >= threads &&
        item_macs < 16.0 * CPU_GEMM_SMALL_MACS) {
        size_t grain = item_macs >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / item_macs) + 1;
        for (size_t i0 = 0; i0 < items; i0 += per_round) {
            size_t i1 = i0 + per_round < items ? i0 + per_round : items;
            x.item0 = i0;
            cpu_parallel_for(pool, i1 - i0, grain, conv_item_task, &x);
        }
        return;
    }
    /* One item at a time, split over the pool: by chunks of output columns when there are
     * more columns than output channels (each chunk's columns small enough to stay in L2 from
     * im2col to GEMM), else by blocks of output channels after a row-split im2col. */
    x.g = conv_gemm_shape(p);
    size_t gemm_grain = cpu_gemm_plan(&x.g, 1, threads);
    int by_columns = p->p >= p->mg;
    if (by_columns) {
        int64_t cols = (int64_t)(CONV_COL_CHUNK_BYTES / sizeof(float)) / (p->kc > 0 ? p->kc : 1);
        cols = cols < CONV_COL_CHUNK_MIN ? CONV_COL_CHUNK_MIN
                                         : cols / CPU_GEMM_ALIGN * CPU_GEMM_ALIGN;
        size_t nch = (size_t)((p->p + cols - 1) / cols);
        /* At least one chunk per thread when the work is worth splitting; whole rounds of
         * threads so none idles at the end. */
        if (x.g.nb > 1) {
            if (nch < threads)
                nch = threads;
            nch = (nch + threads - 1) / threads * threads;
        }
        while (nch > 1 && p->p / (int64_t)nch < CPU_GEMM_ALIGN)
            nch--;
        x.nchunks = nch;
    }
    for (size_t item = 0; item < items; item++) {
        int64_t n = (int64_t)item / p->group, grp = (int64_t)item % p->group;
        x.xi = x.x + (n * p->c + grp * p->cg) * p->in_sp;
        x.yi = x.y + (n * p->m + grp * p->mg) * p->p;
        x.wi = x.w + grp * p->mg * p->kc;
        x.bi = x.bias ? x.bias + grp * p->mg : NULL;
        x.zi = x.z ? x.z + (n * p->m + grp * p->mg) * p->p : NULL;
        x.col = p->pointwise ? x.xi : x.scratch;
        if (by_columns) {
            cpu_parallel_for(pool, x.nchunks, x.g.nb > 1 ? 1 : x.nchunks, conv_cols_task, &x);
            continue;
        }
        if (!p->pointwise) {
            double row = (double)p->p;
            size_t grain = row >= 16384.0 ? 1 : (size_t)(16384.0 / row) + 1;
            cpu_parallel_for(pool, (size_t)p->kc, grain, conv_im2col_task, &x);
        }
        cpu_parallel_for(pool, x.g.nb, gemm_grain, conv_gemm_task, &x);
    }
}

static void conv_free(void *params)
{
    conv_params *p = params;
    if (p) {
        free(p->dcb_w);
        free(p->stem_w);
    }
    free(p);
}

static loom_status conv_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    conv_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "Conv: out of memory");
    const loom_tensor_desc *x = &k->in[0], *w = &k->in[1], *y = &k->out[0];
    size_t s = x->rank - 2;
    int64_t ks[3], st[3], dl[3], pd[6];
    cpu_get_ints(node, "kernel_shape", s, ks);
    cpu_get_ints(node, "strides", s, st);
    cpu_get_ints(node, "dilations", s, dl);
    cpu_get_ints(node, "pads", 2 * s, pd);
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->m = y->dims[1];
    p->group = loom_node_attr_int(node, "group", 1);
    p->cg = p->c / p->group;
    p->mg = p->m / p->group;
    p->d = p->od = p->kd = p->sd = p->dd = 1;
    p->pf = 0;
    if (s == 3) {
        p->d = x->dims[2];
        p->h = x->dims[3];
        p->w = x->dims[4];
        p->od = y->dims[2];
        p->oh = y->dims[3];
        p->ow = y->dims[4];
        p->kd = ks[0];
        p->kh = ks[1];
        p->kw = ks[2];
        p->sd = st[0];
        p->sh = st[1];
        p->sw = st[2];
        p->dd = dl[0];
        p->dh = dl[1];
        p->dw = dl[2];
        p->pf = pd[0];
        p->pt = pd[1];
        p->pl = pd[2];
    } else if (s == 2) {
        p->h = x->dims[2];
        p->w = x->dims[3];
        p->oh = y->dims[2];
        p->ow = y->dims[3];
        p->kh = ks[0];
        p->kw = ks[1];
        p->sh = st[0];
        p->sw = st[1];
        p->dh = dl[0];
        p->dw = dl[1];
        p->pt = pd[0];
        p->pl = pd[1];
        if (conv_pool_attrs(node, p)) {
            /* Y is pooled: the conv's own output size from its attributes. */
            p->ph = y->dims[2];
            p->pwo = y->dims[3];
            p->oh = (p->h + pd[0] + pd[2] - p->dh * (p->kh - 1) - 1) / p->sh + 1;
            p->ow = (p->w + pd[1] + pd[3] - p->dw * (p->kw - 1) - 1) / p->sw + 1;
            if (p->ph != (p->oh - p->pkh) / p->psh + 1 || p->pwo != (p->ow - p->pkw) / p->psw + 1) {
                free(p);
                return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                                "FusedConv: the output does not match the pooled conv's shape");
            }
        }
    } else {
        p->h = p->oh = p->kh = p->sh = p->dh = 1;
        p->pt = 0;
        p->w = x->dims[2];
        p->ow = y->dims[2];
        p->kw = ks[0];
        p->sw = st[0];
        p->dw = dl[0];
        p->pl = pd[0];
    }
    /* The weight's shape is the truth when kernel_shape disagrees. */
    if (w->dims[1] != p->cg ||
        (s == 3 && (w->dims[2] != p->kd || w->dims[3] != p->kh || w->dims[4] != p->kw)) ||
        (s == 2 && (w->dims[2] != p->kh || w->dims[3] != p->kw)) ||
        (s == 1 && w->dims[2] != p->kw)) {
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "Conv: weight shape does not match channels/group and kernel_shape");
    }
    p->kc = p->cg * p->kd * p->kh * p->kw;
    p->p = p->od * p->oh * p->ow;
    p->in_sp = p->d * p->h * p->w;
    p->has_bias = cpu_kernel_present(k, 2);
    p->has_z = node->op == LOOM_OP_FUSED_CONV && cpu_kernel_present(k, 3);
    if (node->op == LOOM_OP_FUSED_CONV)
        cpu_epilogue_parse(node, &p->ep, NULL, 0);
    int no_pad = 1;
    for (size_t i = 0; i < 2 * s; i++)
        no_pad &= pd[i] == 0;
    p->pointwise = p->kd == 1 && p->kh == 1 && p->kw == 1 && p->sd == 1 && p->sh == 1 &&
                   p->sw == 1 && no_pad && p->od == p->d && p->oh == p->h && p->ow == p->w;
    p->direct = p->group > 1 && p->kc <= CONV_DIRECT_MAX_TAPS && !p->pointwise && s < 3;
    p->depthwise = p->direct && cpu_conv_dw_prepare(p);
    /* The channel-blocked depthwise kernel, where the CPU has it, for more taps too. */
    if (!p->pointwise && s < 3 && cpu_conv_dwb_prepare(p))
        p->direct = p->depthwise = 0;
    /* Direct with output pixels in the lanes for few input channels (stems), else with output
     * channels in the lanes where the GEMM's shape is poor. */
    if (s < 3 && !p->dwb_band && !p->pointwise && cpu_conv_stem_prepare(p))
        p->direct = p->depthwise = 0;
    else if (s < 3 && !p->dwb_band && cpu_conv_dcb_prepare(p))
        p->direct = p->depthwise = 0;
    /* Pointwise: the register-tiled kernel on the input as it is (no scratch either way). */
    cpu_conv_pw_prepare(p);
    size_t col_bytes = (size_t)(p->kc * p->p) * sizeof(float);
    k->scratch_bytes = 0;
    if (!p->pointwise && !p->direct && !p->dwb_band && !p->dcb && !p->stem_band &&
        col_bytes > 0) {
        size_t items = (size_t)(p->n * p->group);
        size_t nbuf = CONV_COL_BUDGET / col_bytes;
        if (nbuf > CONV_COL_MAX_BUFFERS)
            nbuf = CONV_COL_MAX_BUFFERS;
        if (nbuf > items)
            nbuf = items;
        if (nbuf < 1)
            nbuf = 1;
        p->n_buffers = nbuf;
        k->scratch_bytes = nbuf * col_bytes;
    }
    if (p->dwb_band)
        k->scratch_bytes = cpu_conv_dwb_scratch(p);
    if (p->dcb) {
        /* Constant weights (and bias) are packed once here instead of at every run. */
        const void *const *cs = node->input_constants;
        if (cs && cs[1] && (!p->has_bias || cs[2]))
            cpu_conv_dcb_pack(p, cs[1], p->has_bias ? cs[2] : NULL);
        k->scratch_bytes = cpu_conv_dcb_scratch(p);
    }
    if (p->stem_band) {
        const void *const *cs = node->input_constants;
        if (cs && cs[1] && (!p->has_bias || cs[2]))
            cpu_conv_stem_pack(p, cs[1], p->has_bias ? cs[2] : NULL);
        k->scratch_bytes = cpu_conv_stem_scratch(p);
    }
    if (p->pool) {
        /* The stem and padded direct kernels pool each band they compute (set by their
         * prepare); elsewhere the conv's output goes to scratch, aligned, and is pooled after. */
        p->pool_avx2 = cpu_avx2_ok();
        p->pool_fast = (p->stem_band && cpu_conv_stem_pool_ok(p)) ||
                       (p->dcb && p->dcb_band && cpu_conv_dcb_pool_ok(p));
        if (!p->pool_fast) {
            p->pool_off = (k->scratch_bytes + 63) / 64 * 64;
            k->scratch_bytes = p->pool_off + (size_t)(p->n * p->m * p->p) * sizeof(float);
        }
    }
    k->params = p;
    k->free_params = conv_free;
    k->run = conv_run;
    return LOOM_OK;
}

/* ===========================================================================================
 * ConvTranspose: per (image, group) one GEMM col = W_g^T X_g, then col2im into Y.
 * =========================================================================================== */

typedef struct ct_params {
    int64_t n, c, m, g, cg, mg;  /* batch, channels in/out, groups, per-group channels */
    int64_t in[3], out[3], k[3], st[3], dil[3], pb[3]; /* spatial, padded to 3-D */
    int64_t kk, hw_in, hw_out;  /* kernel elements, input and output plane sizes */
    int has_bias;
} ct_params;

typedef struct ct_job {
    const ct_params *p;
    const float *x, *w, *bias;
    float *y, *col;
    int64_t n, g;
} ct_job;

/* col[:, c0:c1] = W_g^T X_g[:, c0:c1]: columns are input positions. */
static void ct_gemm_task(void *arg, size_t b0, size_t b1)
{
    const ct_job *j = arg;
    const ct_params *p = j->p;
    const int64_t c0 = (int64_t)b0 * 256, c1 = (int64_t)b1 * 256 < p->hw_in ? (int64_t)b1 * 256
                                                                           : p->hw_in;
    const float *xg = j->x + (j->n * p->c + j->g * p->cg) * p->hw_in;
    const float *wg = j->w + j->g * p->cg * p->mg * p->kk;
    cpu_sgemm(1, 0, p->mg * p->kk, c1 - c0, p->cg, wg, p->mg * p->kk, xg + c0, p->hw_in, 0.0f,
              j->col + c0, p->hw_in);
}

/* Scatter-add the columns of output channels [m0, m1) of the group into Y. */
static void ct_col2im_task(void *arg, size_t m0, size_t m1)
{
    const ct_job *j = arg;
    const ct_params *p = j->p;
    for (size_t mo = m0; mo < m1; mo++) {
        const int64_t oc = j->g * p->mg + (int64_t)mo;
        float *y = j->y + (j->n * p->m + oc) * p->hw_out;
        const float b = p->has_bias ? j->bias[oc] : 0.0f;
        for (int64_t i = 0; i < p->hw_out; i++)
            y[i] = b;
        const float *col = j->col + (int64_t)mo * p->kk * p->hw_in;
        for (int64_t k0 = 0; k0 < p->k[0]; k0++)
            for (int64_t k1 = 0; k1 < p->k[1]; k1++)
                for (int64_t k2 = 0; k2 < p->k[2]; k2++, col += p->hw_in) {
                    /* Input positions whose output lands inside along the innermost axis. */
                    const int64_t off2 = k2 * p->dil[2] - p->pb[2];
                    int64_t lo = 0, hi = p->in[2];
                    while (lo < hi && lo * p->st[2] + off2 < 0)
                        lo++;
                    while (hi > lo && (hi - 1) * p->st[2] + off2 >= p->out[2])
                        hi--;
                    for (int64_t i0 = 0; i0 < p->in[0]; i0++) {
                        const int64_t o0 = i0 * p->st[0] + k0 * p->dil[0] - p->pb[0];
                        if (o0 < 0 || o0 >= p->out[0])
                            continue;
                        for (int64_t i1 = 0; i1 < p->in[1]; i1++) {
                            const int64_t o1 = i1 * p->st[1] + k1 * p->dil[1] - p->pb[1];
                            if (o1 < 0 || o1 >= p->out[1])
                                continue;
                            const float *src = col + (i0 * p->in[1] + i1) * p->in[2];
                            float *dst = y + (o0 * p->out[1] + o1) * p->out[2] + off2;
                            if (p->st[2] == 1)
                                for (int64_t i2 = lo; i2 < hi; i2++)
                                    dst[i2] += src[i2];
                            else
                                for (int64_t i2 = lo; i2 < hi; i2++)
                                    dst[i2 * p->st[2]] += src[i2];
                        }
                    }
                }
    }
}

static loom_status ct_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const ct_params *p = k->params;
    if (p->n == 0 || p->m == 0 || p->hw_out == 0)
        return LOOM_OK;
    ct_job j = {p, args->inputs[0], args->inputs[1], p->has_bias ? args->inputs[2] : NULL,
                args->outputs[0], args->scratch, 0, 0};
    for (j.n = 0; j.n < p->n; j.n++)
        for (j.g = 0; j.g < p->g; j.g++) {
            if (p->hw_in > 0) {
                size_t blocks = (size_t)((p->hw_in + 255) / 256);
                double work = (double)p->mg * (double)p->kk * (double)p->cg * 256.0;
                cpu_parallel_for(pool, blocks, work >= 4.0 * CPU_GRAIN ? 1 : blocks, ct_gemm_task,
                                 &j);
            }
            cpu_parallel_for(pool, (size_t)p->mg,
                             cpu_grain(p->kk * (p->hw_in > 0 ? p->hw_in : 1) + p->hw_out),
                             ct_col2im_task, &j);
        }
    return LOOM_OK;
}

static int ct_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0];
    if (x->dtype != F32 || node->inputs[1].dtype != F32 ||
        (cpu_present(node, 2) && node->inputs[2].dtype != F32))
        return cpu_no_dtype(node, x->dtype, "float32", reason, len);
    if (x->rank < 3 || x->rank > 5)
        return cpu_reason(reason, len, "ConvTranspose: X must have 1 to 3 spatial dims");
    size_t s = x->rank - 2;
    int64_t v[6];
    if (!cpu_get_ints(node, "strides", s, v) || !cpu_get_ints(node, "dilations", s, v) ||
        !cpu_get_ints(node, "pads", 2 * s, v) || !cpu_get_ints(node, "kernel_shape", s, v))
        return cpu_reason(reason, len, "ConvTranspose: canonical attributes missing");
    const loom_tensor_desc *w = &node->inputs[1];
    int64_t rows = w->dims[1] * cpu_prod(w->dims, 2, w->rank);
    if (!cpu_fits_int(rows) || !cpu_fits_int(cpu_prod(x->dims, 2, x->rank)) ||
        !cpu_fits_int(x->dims[1]))
        return cpu_reason(reason, len, "ConvTranspose: too large for one BLAS call");
    return 1;
}

static loom_status ct_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    ct_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0], *w = &node->inputs[1], *y = &node->outputs[0];
    const uint32_t s = x->rank - 2, lead = 3 - s;
    int64_t st[3], dil[3], pads[6];
    cpu_get_ints(node, "strides", s, st);
    cpu_get_ints(node, "dilations", s, dil);
    cpu_get_ints(node, "pads", 2 * s, pads);
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->m = y->dims[1];
    p->g = loom_node_attr_int(node, "group", 1);
    p->cg = p->c / p->g;
    p->mg = w->dims[1];
    for (uint32_t i = 0; i < 3; i++) {
        int sp = i >= lead;
        uint32_t q = i - lead;
        p->in[i] = sp ? x->dims[2 + q] : 1;
        p->out[i] = sp ? y->dims[2 + q] : 1;
        p->k[i] = sp ? w->dims[2 + q] : 1;
        p->st[i] = sp ? st[q] : 1;
        p->dil[i] = sp ? dil[q] : 1;
        p->pb[i] = sp ? pads[q] : 0;
    }
    p->kk = p->k[0] * p->k[1] * p->k[2];
    p->hw_in = p->in[0] * p->in[1] * p->in[2];
    p->hw_out = p->out[0] * p->out[1] * p->out[2];
    p->has_bias = cpu_present(node, 2);
    k->params = p;
    k->run = ct_run;
    k->scratch_bytes = (size_t)(p->mg * p->kk * p->hw_in) * sizeof(float);
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_conv(cpu_op_entry *table)
{
    table[LOOM_OP_CONV] = (cpu_op_entry){conv_supports, conv_prepare};
    table[LOOM_OP_FUSED_CONV] = (cpu_op_entry){conv_supports, conv_prepare};
    table[LOOM_OP_CONV_TRANSPOSE] = (cpu_op_entry){ct_supports, ct_prepare};
}
