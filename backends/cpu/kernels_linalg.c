/*
 * CPU kernels of the linear-algebra family: MatMul, Gemm and Einsum, with ONNX opset-18
 * semantics. Conv and ConvTranspose are in kernels_conv.c, the integer GEMMs in
 * kernels_quantization.c.
 *
 * Threading. OpenBLAS is told to use one thread at start-up, so that the only parallelism is the
 * backend's own pinned pool and the two never oversubscribe the cores. Every f32 GEMM here (and
 * Conv's) is therefore cut by us (cpu_gemm.c): the problems of a batch, and when there are too
 * few of them for the pool, each problem's larger output dimension (M rows or N columns) in
 * blocks of whole multiples of 16 (the width of OpenBLAS's micro-kernels), one single-threaded
 * cblas_sgemm per block on a sub-matrix of the caller's arrays: nothing is copied. The number of
 * blocks per problem makes the task count a multiple of the pool's threads, so every thread gets
 * the same work. GEMMs under about 64^3 multiply-adds run as one call on the calling thread,
 * where a fork would cost more than it saves.
 *
 * Einsum works on the canonical equation (graph/ops_linalg.c: explicit, no ellipsis). Two f32
 * operands without repeated or operand-only summed labels become permute + batched GEMM +
 * permute (one single-threaded cblas call per batch item); the rest runs a naive loop over the
 * label space.
 */
#include "cpu_gemm.h"
#include "cpu_kernels.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32
#define I32 LOOM_DTYPE_I32
#define I64 LOOM_DTYPE_I64

/* ---- MatMul ------------------------------------------------------------------------------------ */

typedef struct matmul_params {
    loom_dtype dtype;
    int64_t m, n, k; /* per product; m covers the folded batch when B is not batched */
    int64_t batch;   /* products */
    uint32_t brank;  /* batch dimensions of the output */
    int64_t bdims[LOOM_MAX_RANK];
    int64_t astr[LOOM_MAX_RANK], bstr[LOOM_MAX_RANK]; /* element strides; 0 where broadcast */
} matmul_params;

static int matmul_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs != 2 || node->n_outputs != 1) {
        cpu_reason(reason, len, "MatMul takes 2 inputs and 1 output");
        return 0;
    }
    loom_dtype t = node->inputs[0].dtype;
    if (t != LOOM_DTYPE_F32 && t != LOOM_DTYPE_I32 && t != LOOM_DTYPE_I64) {
        cpu_reason(reason, len, "MatMul: dtype %d not supported (f32, i32, i64)", (int)t);
        return 0;
    }
    if (node->inputs[1].dtype != t || node->outputs[0].dtype != t) {
        cpu_reason(reason, len, "MatMul: inputs and output must share one dtype");
        return 0;
    }
    const loom_tensor_desc *a = &node->inputs[0], *b = &node->inputs[1];
    if (a->rank == 0 || b->rank == 0) {
        cpu_reason(reason, len, "MatMul: scalar operands");
        return 0;
    }
    int64_t m = a->rank >= 2 ? a->dims[a->rank - 2] : 1;
    int64_t k = a->dims[a->rank - 1];
    int64_t n = b->rank >= 2 ? b->dims[b->rank - 1] : 1;
    int64_t batch = 1;
    for (uint32_t d = 0; d + 2 < a->rank; d++)
        batch *= a->dims[d];
    if (t == LOOM_DTYPE_F32 && (!cpu_fits_int(m * batch) || !cpu_fits_int(n) || !cpu_fits_int(k))) {
        cpu_reason(reason, len, "MatMul: a dimension exceeds the BLAS integer range");
        return 0;
    }
    return 1;
}

static void matmul_locate(const matmul_params *p, int64_t prob, int64_t *aoff, int64_t *boff)
{
    int64_t ao = 0, bo = 0;
    for (uint32_t d = p->brank; d-- > 0;) {
        int64_t i = prob % p->bdims[d];
        prob /= p->bdims[d];
        ao += i * p->astr[d];
        bo += i * p->bstr[d];
    }
    *aoff = ao;
    *boff = bo;
}

typedef struct matmul_ctx {
    const matmul_params *p;
    cpu_gemm g;
    const void *a, *b;
    void *c;
} matmul_ctx;

static void matmul_f32_task(void *arg, size_t t0, size_t t1)
{
    const matmul_ctx *x = arg;
    const matmul_params *p = x->p;
    for (size_t t = t0; t < t1; t++) {
        size_t prob = t / x->g.nb, blk = t % x->g.nb;
        int64_t ao, bo;
        matmul_locate(p, (int64_t)prob, &ao, &bo);
        int64_t extent = x->g.split_n ? p->n : p->m;
        cpu_gemm_block(&x->g, (const float *)x->a + ao, (const float *)x->b + bo,
                       (float *)x->c + (int64_t)prob * p->m * p->n,
                       cpu_gemm_block_start(extent, x->g.nb, blk),
                       cpu_gemm_block_start(extent, x->g.nb, blk + 1), 0.0f);
    }
}

/* Integer products wrap like NumPy's: the arithmetic is done unsigned. */
#define DEFINE_MATMUL_INT(NAME, T, UT)                                                            \
    static void NAME(void *arg, size_t r0, size_t r1)                                             \
    {                                                                                             \
        const matmul_ctx *x = arg;                                                                \
        const matmul_params *p = x->p;                                                            \
        const T *a = x->a, *b = x->b;                                                             \
        T *c = x->c;                                                                              \
        for (size_t r = r0; r < r1; r++) {                                                        \
            int64_t prob = (int64_t)r / p->m, i = (int64_t)r % p->m, ao, bo;                      \
            matmul_locate(p, prob, &ao, &bo);                                                     \
            const T *ar = a + ao + i * p->k, *bm = b + bo;                                        \
            UT *cr = (UT *)(c + (int64_t)r * p->n);                                               \
            for (int64_t j = 0; j < p->n; j++)                                                    \
                cr[j] = 0;                                                                        \
            for (int64_t kk = 0; kk < p->k; kk++) {                                               \
                UT av = (UT)ar[kk];                                                               \
                const T *br = bm + kk * p->n;                                                     \
                for (int64_t j = 0; j < p->n; j++)                                                \
                    cr[j] += av * (UT)br[j];                                                      \
            }                                                                                     \
        }                                                                                         \
    }
DEFINE_MATMUL_INT(matmul_i32_task, int32_t, uint32_t)
DEFINE_MATMUL_INT(matmul_i64_task, int64_t, uint64_t)

static loom_status matmul_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const matmul_params *p = k->params;
    matmul_ctx x = {.p = p, .a = args->inputs[0], .b = args->inputs[1], .c = args->outputs[0]};
    if (p->batch == 0 || p->m == 0 || p->n == 0)
        return LOOM_OK;
    if (p->dtype == LOOM_DTYPE_F32) {
        x.g = (cpu_gemm){.m = p->m, .n = p->n, .k = p->k, .lda = p->k > 0 ? p->k : 1,
                        .ldb = p->n, .ldc = p->n, .alpha = 1.0f};
        size_t grain = cpu_gemm_plan(&x.g, (size_t)p->batch, cpu_pool_threads(pool));
        cpu_parallel_for(pool, (size_t)p->batch * x.g.nb, grain, matmul_f32_task, &x);
        return LOOM_OK;
    }
    size_t rows = (size_t)(p->batch * p->m);
    double per_row = (double)p->n * (double)(p->k + 1);
    size_t grain = per_row >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / per_row) + 1;
    cpu_parallel_for(pool, rows, grain,
                     p->dtype == LOOM_DTYPE_I32 ? matmul_i32_task : matmul_i64_task, &x);
    return LOOM_OK;
}

static loom_status matmul_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                  size_t err_len)
{
    const loom_tensor_desc *a = &k->in[0], *b = &k->in[1];
    matmul_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "MatMul: out of memory");
    (void)node;
    p->dtype = a->dtype;
    p->m = a->rank >= 2 ? a->dims[a->rank - 2] : 1;
    p->k = a->dims[a->rank - 1];
    p->n = b->rank >= 2 ? b->dims[b->rank - 1] : 1;
    uint32_t ra = a->rank >= 2 ? a->rank - 2 : 0, rb = b->rank >= 2 ? b->rank - 2 : 0;
    p->brank = ra > rb ? ra : rb;
    int64_t astep = p->m * p->k, bstep = p->k * p->n;
    p->batch = 1;
    /* The output's batch dims are the broadcast of both; walk them from the innermost out. */
    int a_broadcast = 0, b_batched = 0;
    for (uint32_t d = p->brank; d-- > 0;) {
        uint32_t from_end = p->brank - 1 - d;
        int64_t da = from_end < ra ? a->dims[ra - 1 - from_end] : 1;
        int64_t db = from_end < rb ? b->dims[rb - 1 - from_end] : 1;
        int64_t dy = da == 1 ? db : da;
        p->bdims[d] = dy;
        p->astr[d] = da == 1 ? 0 : astep;
        p->bstr[d] = db == 1 ? 0 : bstep;
        if (da != dy)
            a_broadcast = 1;
        if (db != 1)
            b_batched = 1;
        astep *= da;
        bstep *= db;
        p->batch *= dy;
    }
    int64_t kb = b->rank >= 2 ? b->dims[b->rank - 2] : b->dims[0];
    if (kb != p->k || loom_tensor_desc_numel(&k->out[0]) != p->batch * p->m * p->n) {
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "MatMul: operand and output shapes do not agree");
    }
    /* B shared by every product and A dense over the batch: one tall GEMM does them all. */
    if (p->brank > 0 && !b_batched && !a_broadcast) {
        p->m *= p->batch;
        p->batch = 1;
        p->brank = 0;
    }
    k->params = p;
    k->run = matmul_run;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- Gemm -------------------------------------------------------------------------------------- */

typedef struct gemm_params {
    int64_t m, n, k;
    int trans_a, trans_b;
    float alpha, beta;
    int64_t c_rs, c_cs; /* element strides of C's rows and columns after broadcasting */
} gemm_params;

static int gemm_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs < 2 || node->n_inputs > 3 || node->n_outputs != 1) {
        cpu_reason(reason, len, "Gemm takes 2 or 3 inputs and 1 output");
        return 0;
    }
    for (uint32_t i = 0; i < node->n_inputs; i++) {
        if (!cpu_present(node, i))
            continue;
        if (node->inputs[i].dtype != LOOM_DTYPE_F32) {
            cpu_reason(reason, len, "Gemm: only f32 is supported (input %u is dtype %d)", i,
                       (int)node->inputs[i].dtype);
            return 0;
        }
    }
    if (node->outputs[0].dtype != LOOM_DTYPE_F32 || node->inputs[0].rank != 2 ||
        node->inputs[1].rank != 2 || node->outputs[0].rank != 2) {
        cpu_reason(reason, len, "Gemm: needs 2-D f32 operands");
        return 0;
    }
    if (cpu_present(node, 2) && node->inputs[2].rank > 2) {
        cpu_reason(reason, len, "Gemm: C has rank %u", node->inputs[2].rank);
        return 0;
    }
    for (uint32_t i = 0; i < 2; i++)
        for (uint32_t d = 0; d < 2; d++)
            if (!cpu_fits_int(node->inputs[i].dims[d])) {
                cpu_reason(reason, len, "Gemm: a dimension exceeds the BLAS integer range");
                return 0;
            }
    return 1;
}

typedef struct gemm_ctx {
    const gemm_params *p;
    cpu_gemm g;
    const float *a, *b, *c;
    float *y;
} gemm_ctx;

static void gemm_task(void *arg, size_t b0, size_t b1)
{
    const gemm_ctx *x = arg;
    const gemm_params *p = x->p;
    for (size_t blk = b0; blk < b1; blk++) {
        int64_t extent = x->g.split_n ? p->n : p->m;
        int64_t lo = cpu_gemm_block_start(extent, x->g.nb, blk),
                hi = cpu_gemm_block_start(extent, x->g.nb, blk + 1);
        int64_t r0 = x->g.split_n ? 0 : lo, r1 = x->g.split_n ? p->m : hi;
        int64_t c0 = x->g.split_n ? lo : 0, c1 = x->g.split_n ? hi : p->n;
        if (x->c) {
            /* Y starts as beta*C on this block, so that the GEMM adds to what is in cache. */
            for (int64_t i = r0; i < r1; i++) {
                const float *cr = x->c + i * p->c_rs;
                float *yr = x->y + i * p->n;
                for (int64_t j = c0; j < c1; j++)
                    yr[j] = p->beta * cr[j * p->c_cs];
            }
        }
        cpu_gemm_block(&x->g, x->a, x->b, x->y, lo, hi, x->c ? 1.0f : 0.0f);
    }
}

static loom_status gemm_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                            char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const gemm_params *p = k->params;
    if (p->m == 0 || p->n == 0)
        return LOOM_OK;
    gemm_ctx x = {.p = p,
                  .a = args->inputs[0],
                  .b = args->inputs[1],
                  .c = cpu_kernel_present(k, 2) ? args->inputs[2] : NULL,
                  .y = args->outputs[0]};
    x.g = (cpu_gemm){.trans_a = p->trans_a, .trans_b = p->trans_b, .m = p->m, .n = p->n,
                    .k = p->k, .alpha = p->alpha, .ldc = p->n};
    x.g.lda = p->trans_a ? p->m : p->k;
    x.g.ldb = p->trans_b ? p->k : p->n;
    if (x.g.lda < 1)
        x.g.lda = 1;
    if (x.g.ldb < 1)
        x.g.ldb = 1;
    size_t grain = cpu_gemm_plan(&x.g, 1, cpu_pool_threads(pool));
    cpu_parallel_for(pool, x.g.nb, grain, gemm_task, &x);
    return LOOM_OK;
}

static loom_status gemm_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    gemm_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "Gemm: out of memory");
    p->alpha = loom_node_attr_float(node, "alpha", 1.0f);
    p->beta = loom_node_attr_float(node, "beta", 1.0f);
    p->trans_a = loom_node_attr_int(node, "transA", 0) != 0;
    p->trans_b = loom_node_attr_int(node, "transB", 0) != 0;
    p->m = k->out[0].dims[0];
    p->n = k->out[0].dims[1];
    p->k = p->trans_a ? k->in[0].dims[0] : k->in[0].dims[1];
    const int64_t *ad = k->in[0].dims, *bd = k->in[1].dims;
    if ((p->trans_a ? ad[1] : ad[0]) != p->m || (p->trans_b ? bd[0] : bd[1]) != p->n ||
        (p->trans_b ? bd[1] : bd[0]) != p->k) {
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "Gemm: operand and output shapes do not agree");
    }
    if (cpu_kernel_present(k, 2)) {
        const loom_tensor_desc *c = &k->in[2];
        int64_t cm = c->rank == 2 ? c->dims[0] : 1;
        int64_t cn = c->rank >= 1 ? c->dims[c->rank - 1] : 1;
        if ((cm != 1 && cm != p->m) || (cn != 1 && cn != p->n)) {
            long long m = (long long)p->m, n = (long long)p->n;
            free(p);
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "Gemm: C does not broadcast to [%lld, %lld]", m, n);
        }
        p->c_rs = cm == 1 ? 0 : cn;
        p->c_cs = cn == 1 ? 0 : 1;
    }
    k->params = p;
    k->run = gemm_run;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ===========================================================================================
 * Einsum: the canonical equation (explicit, no ellipsis). Two f32 operands without repeated or
 * operand-only summed labels become permute + batched GEMM + permute; the rest runs a naive
 * loop over the label space.
 * =========================================================================================== */

#define EIN_LABELS 52

typedef struct ein_perm {
    int needed;
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK];    /* of the destination, C order */
    int64_t sstride[LOOM_MAX_RANK]; /* source stride for each destination dim */
} ein_perm;

typedef struct ein_params {
    uint32_t n_ops;
    loom_dtype dt;
    int gemm;
    /* naive: output labels then summed labels, with per-operand strides per label */
    uint32_t n_out, n_sum;
    int64_t lsize[EIN_LABELS];
    int64_t lstride[2][EIN_LABELS];
    int64_t out_numel, sum_numel;
    /* gemm */
    int64_t batch, m, n, k;
    ein_perm pa, pb, pc; /* A -> [batch, m, k], B -> [batch, k, n], [batch, m, n] -> Y */
    size_t off_b, off_c; /* float offsets of the permuted buffers in scratch */
} ein_params;

static int ein_label(char c)
{
    return c >= 'a' && c <= 'z' ? c - 'a' : c >= 'A' && c <= 'Z' ? 26 + c - 'A' : -1;
}

/* ein_label of a character already validated by ein_split. */
static unsigned ein_lab(char c)
{
    int l = ein_label(c);
    return l < 0 ? 0u : (unsigned)l;
}

/* Naive: output element [o0, o1) each sums over the summed labels. Labels are ordered output
 * first; lsize/lstride are indexed by that order. */
#define EIN_NAIVE(T, ACC)                                                                          \
    static void ein_naive_##T(const ein_params *p, const void *const *in, void *out, size_t o0,  \
                              size_t o1)                                                           \
    {                                                                                              \
        const T *a = in[0], *b = p->n_ops > 1 ? in[1] : NULL;                                      \
        T *y = out;                                                                                \
        const uint32_t nl = p->n_out + p->n_sum;                                                   \
        for (size_t o = o0; o < o1; o++) {                                                         \
            int64_t idx[EIN_LABELS] = {0};                                                        \
            size_t rem = o;                                                                        \
            int64_t oa = 0, ob = 0;                                                                \
            for (uint32_t l = p->n_out; l-- > 0;) {                                                \
                idx[l] = (int64_t)(rem % (size_t)p->lsize[l]);                                     \
                rem /= (size_t)p->lsize[l];                                                        \
                oa += idx[l] * p->lstride[0][l];                                                   \
                ob += idx[l] * p->lstride[1][l];                                                   \
            }                                                                                      \
            ACC acc = 0;                                                                           \
            for (int64_t s = 0; s < p->sum_numel; s++) {                                           \
                ACC v = (ACC)a[oa];                                                                \
                if (b)                                                                             \
                    v *= (ACC)b[ob];                                                               \
                acc += v;                                                                          \
                for (uint32_t l = nl; l-- > p->n_out;) {                                           \
                    oa += p->lstride[0][l];                                                        \
                    ob += p->lstride[1][l];                                                        \
                    if (++idx[l] < p->lsize[l])                                                    \
                        break;                                                                     \
                    oa -= idx[l] * p->lstride[0][l];                                               \
                    ob -= idx[l] * p->lstride[1][l];                                               \
                    idx[l] = 0;                                                                    \
                }                                                                                  \
            }                                                                                      \
            y[o] = (T)acc;                                                                         \
        }                                                                                          \
    }
EIN_NAIVE(float, double)
EIN_NAIVE(double, double)
EIN_NAIVE(int32_t, int64_t)
EIN_NAIVE(int64_t, int64_t)

typedef struct ein_job {
    const ein_params *p;
    const void *const *in;
    void *out;
    const float *a, *b;
    float *c;
    const ein_perm *perm;
    const float *src;
    float *dst;
} ein_job;

static void ein_naive_task(void *arg, size_t o0, size_t o1)
{
    const ein_job *j = arg;
    switch (j->p->dt) {
    case F32: ein_naive_float(j->p, j->in, j->out, o0, o1); break;
    case LOOM_DTYPE_F64: ein_naive_double(j->p, j->in, j->out, o0, o1); break;
    case I32: ein_naive_int32_t(j->p, j->in, j->out, o0, o1); break;
    default: ein_naive_int64_t(j->p, j->in, j->out, o0, o1); break;
    }
}

/* dst (C order over perm->dims) = src read through perm->sstride; rows of the last dim. */
static void ein_perm_task(void *arg, size_t r0, size_t r1)
{
    const ein_job *j = arg;
    const ein_perm *q = j->perm;
    const uint32_t last = q->rank - 1;
    const int64_t n = q->dims[last], ls = q->sstride[last];
    for (size_t r = r0; r < r1; r++) {
        size_t rem = r;
        int64_t off = 0;
        for (uint32_t d = last; d-- > 0;) {
            off += (int64_t)(rem % (size_t)q->dims[d]) * q->sstride[d];
            rem /= (size_t)q->dims[d];
        }
        float *dst = j->dst + r * (size_t)n;
        const float *src = j->src + off;
        for (int64_t i = 0; i < n; i++)
            dst[i] = src[i * ls];
    }
}

static void ein_permute(cpu_pool *pool, const ein_perm *q, const float *src, float *dst)
{
    ein_job j = {.perm = q, .src = src, .dst = dst};
    int64_t rows = cpu_prod(q->dims, 0, q->rank - 1), n = q->dims[q->rank - 1];
    if (rows == 0 || n == 0)
        return;
    cpu_parallel_for(pool, (size_t)rows, cpu_grain(n), ein_perm_task, &j);
}

static void ein_gemm_task(void *arg, size_t b0, size_t b1)
{
    const ein_job *j = arg;
    const ein_params *p = j->p;
    for (size_t b = b0; b < b1; b++)
        cpu_sgemm(0, 0, p->m, p->n, p->k, j->a + b * (size_t)(p->m * p->k), p->k,
                  j->b + b * (size_t)(p->k * p->n), p->n, 0.0f, j->c + b * (size_t)(p->m * p->n),
                  p->n);
}

static loom_status ein_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const ein_params *p = k->params;
    if (p->out_numel == 0)
        return LOOM_OK;
    ein_job j = {.p = p, .in = args->inputs, .out = args->outputs[0]};
    if (!p->gemm) {
        cpu_parallel_for(pool, (size_t)p->out_numel, cpu_grain(p->sum_numel), ein_naive_task,
                         &j);
        return LOOM_OK;
    }
    float *scratch = args->scratch;
    j.a = args->inputs[0];
    j.b = args->inputs[1];
    j.c = args->outputs[0];
    if (p->pa.needed) {
        ein_permute(pool, &p->pa, j.a, scratch);
        j.a = scratch;
    }
    if (p->pb.needed) {
        ein_permute(pool, &p->pb, j.b, scratch + p->off_b);
        j.b = scratch + p->off_b;
    }
    if (p->pc.needed)
        j.c = scratch + p->off_c;
    double work = 2.0 * (double)p->m * (double)p->n * (double)p->k;
    size_t grain = work >= CPU_GRAIN ? 1 : (size_t)(CPU_GRAIN / (work + 1.0)) + 1;
    cpu_parallel_for(pool, (size_t)p->batch, grain, ein_gemm_task, &j);
    if (p->pc.needed)
        ein_permute(pool, &p->pc, j.c, args->outputs[0]);
    return LOOM_OK;
}

typedef struct ein_eq {
    uint32_t n_ops;
    char term[3][LOOM_MAX_RANK + 1]; /* operands, then the output */
} ein_eq;

static int ein_split(const char *eq, ein_eq *e)
{
    memset(e, 0, sizeof *e);
    const char *arrow = strstr(eq, "->");
    if (!arrow)
        return 0;
    uint32_t t = 0, at = 0;
    for (const char *p = eq; p < arrow; p++) {
        if (*p == ',') {
            if (++t >= 2)
                return 0;
            at = 0;
            continue;
        }
        if (ein_label(*p) < 0 || at >= LOOM_MAX_RANK)
            return 0;
        e->term[t][at++] = *p;
    }
    e->n_ops = t + 1;
    at = 0;
    for (const char *p = arrow + 2; *p; p++) {
        if (ein_label(*p) < 0 || at >= LOOM_MAX_RANK)
            return 0;
        e->term[2][at++] = *p;
    }
    return 1;
}

static int ein_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const char *eq = cpu_str_attr(node, "equation", NULL);
    ein_eq e;
    if (!eq || !ein_split(eq, &e) || e.n_ops != node->n_inputs)
        return cpu_reason(reason, len, "Einsum: canonical equation missing or malformed");
    loom_dtype t = node->inputs[0].dtype;
    if (!cpu_is_f32_i32_i64(t) && t != LOOM_DTYPE_F64) /* float64: the naive loop */
        return cpu_no_dtype(node, t, "float32, float64, int32, int64", reason, len);
    for (uint32_t i = 0; i < e.n_ops; i++)
        if (strlen(e.term[i]) != node->inputs[i].rank || node->inputs[i].dtype != t)
            return cpu_reason(reason, len, "Einsum: operand %u does not match the equation", i);
    return 1;
}

static loom_status ein_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    ein_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    ein_eq e;
    ein_split(cpu_str_attr(node, "equation", ""), &e);
    p->n_ops = e.n_ops;
    p->dt = node->inputs[0].dtype;
    k->params = p;
    k->run = ein_run;
    /* Label order: output labels, then the summed ones in order of appearance. */
    int order[EIN_LABELS];
    uint32_t nl = 0;
    for (int l = 0; l < EIN_LABELS; l++)
        order[l] = -1;
    for (const char *c = e.term[2]; *c; c++) {
        order[ein_lab(*c)] = (int)nl++;
    }
    p->n_out = nl;
    for (uint32_t i = 0; i < e.n_ops; i++)
        for (const char *c = e.term[i]; *c; c++)
            if (order[ein_lab(*c)] < 0) {
                order[ein_lab(*c)] = (int)nl++;
            }
    p->n_sum = nl - p->n_out;
    for (uint32_t l = 0; l < nl; l++)
        p->lsize[l] = -1;
    int repeated = 0, broadcast = 0;
    for (uint32_t i = 0; i < e.n_ops; i++) {
        const loom_tensor_desc *d = &node->inputs[i];
        int64_t s = 1;
        for (uint32_t q = d->rank; q-- > 0;) {
            int l = order[ein_lab(e.term[i][q])];
            if (p->lstride[i][l])
                repeated = 1;
            if (d->dims[q] != 1)
                p->lstride[i][l] += s;
            if (p->lsize[l] < 0 || p->lsize[l] == 1) /* a 1 broadcasts, even against 0 */
                p->lsize[l] = d->dims[q];
            s *= d->dims[q];
        }
    }
    for (uint32_t i = 0; i < e.n_ops; i++) {
        const loom_tensor_desc *d = &node->inputs[i];
        for (uint32_t q = 0; q < d->rank; q++)
            if (d->dims[q] != p->lsize[order[ein_lab(e.term[i][q])]])
                broadcast = 1;
        /* a repeated label may have had a size-1 dim: recheck it via strchr */
        for (uint32_t q = 0; q < d->rank; q++)
            if (strchr(e.term[i] + q + 1, e.term[i][q]))
                repeated = 1;
    }
    p->out_numel = cpu_prod(p->lsize, 0, p->n_out);
    p->sum_numel = cpu_prod(p->lsize, p->n_out, nl);
    if (p->sum_numel == 0) { /* sums over nothing: zeros, the naive loop writes them */
        p->sum_numel = 0;
    }
    /* GEMM path: f32, two operands, every label in both or in the output. */
    if (p->dt != F32 || e.n_ops != 2 || repeated || broadcast)
        return LOOM_OK;
    const char *ta = e.term[0], *tb = e.term[1], *to = e.term[2];
    char bl[LOOM_MAX_RANK + 1] = "", ml[LOOM_MAX_RANK + 1] = "", nlab[LOOM_MAX_RANK + 1] = "",
         kl[LOOM_MAX_RANK + 1] = "";
    size_t nb = 0, nm = 0, nn = 0, nk = 0;
    for (const char *c = ta; *c; c++) {
        int in_b = strchr(tb, *c) != NULL, in_o = strchr(to, *c) != NULL;
        if (in_b && in_o)
            bl[nb++] = *c;
        else if (in_o)
            ml[nm++] = *c;
        else if (in_b)
            kl[nk++] = *c;
        else
            return LOOM_OK; /* summed in A alone */
    }
    for (const char *c = tb; *c; c++) {
        int in_a = strchr(ta, *c) != NULL, in_o = strchr(to, *c) != NULL;
        if (!in_a && in_o)
            nlab[nn++] = *c;
        else if (!in_a)
            return LOOM_OK; /* summed in B alone */
    }
    /* The output's batch labels keep the output's order, so Y often needs no permute. */
    nb = 0;
    for (const char *c = to; *c; c++)
        if (strchr(ta, *c) && strchr(tb, *c))
            bl[nb++] = *c;
    bl[nb] = 0;
    p->batch = 1, p->m = 1, p->n = 1, p->k = 1;
    for (size_t i = 0; i < nb; i++)
        p->batch *= p->lsize[order[ein_lab(bl[i])]];
    for (size_t i = 0; i < nm; i++)
        p->m *= p->lsize[order[ein_lab(ml[i])]];
    for (size_t i = 0; i < nn; i++)
        p->n *= p->lsize[order[ein_lab(nlab[i])]];
    for (size_t i = 0; i < nk; i++)
        p->k *= p->lsize[order[ein_lab(kl[i])]];
    if (!cpu_fits_int(p->m) || !cpu_fits_int(p->n) || !cpu_fits_int(p->k))
        return LOOM_OK;
    /* Permutes: destination label strings and where each label lives in the source. */
    /* Each operand has at most LOOM_MAX_RANK labels, so the joined strings fit; the buffers
     * are sized for three full groups so that the compiler can see no truncation. */
    char da[3 * LOOM_MAX_RANK + 1], db[3 * LOOM_MAX_RANK + 1], dc[3 * LOOM_MAX_RANK + 1];
    snprintf(da, sizeof da, "%s%s%s", bl, ml, kl);
    snprintf(db, sizeof db, "%s%s%s", bl, kl, nlab);
    snprintf(dc, sizeof dc, "%s%s%s", bl, ml, nlab);
    struct {
        ein_perm *q;
        const char *dst, *src;
        uint32_t op; /* operand index for source strides, 2: the [b, m, n] buffer */
    } plan[3] = {{&p->pa, da, ta, 0}, {&p->pb, db, tb, 1}, {&p->pc, to, dc, 2}};
    for (int i = 0; i < 3; i++) {
        ein_perm *q = plan[i].q;
        const char *dst = plan[i].dst, *src = plan[i].src;
        q->needed = strcmp(dst, src) != 0 && strlen(dst) > 1;
        q->rank = (uint32_t)strlen(dst);
        int64_t sst[LOOM_MAX_RANK], s = 1;
        for (uint32_t d = (uint32_t)strlen(src); d-- > 0;) {
            sst[d] = s;
            s *= p->lsize[order[ein_lab(src[d])]];
        }
        for (uint32_t d = 0; d < q->rank; d++) {
            q->dims[d] = p->lsize[order[ein_lab(dst[d])]];
            q->sstride[d] = sst[strchr(src, dst[d]) - src];
        }
        if (q->rank == 0)
            q->needed = 0;
    }
    size_t sa = p->pa.needed ? (size_t)(p->batch * p->m * p->k) : 0;
    size_t sb = p->pb.needed ? (size_t)(p->batch * p->k * p->n) : 0;
    size_t sc = p->pc.needed ? (size_t)(p->batch * p->m * p->n) : 0;
    p->off_b = (sa + 15) / 16 * 16;
    p->off_c = p->off_b + (sb + 15) / 16 * 16;
    k->scratch_bytes = (p->off_c + sc) * sizeof(float);
    p->gemm = 1;
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

/* ---- Det: LU with partial pivoting in double, per matrix ---- */

typedef struct det_params {
    int64_t count, m;
    int f64;
} det_params;

static loom_status det_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)pool, (void)err, (void)err_len;
    const det_params *p = k->params;
    const int64_t m = p->m;
    double *a = args->scratch;
    for (int64_t b = 0; b < p->count; b++) {
        for (int64_t i = 0; i < m * m; i++)
            a[i] = p->f64 ? ((const double *)args->inputs[0])[b * m * m + i]
                          : ((const float *)args->inputs[0])[b * m * m + i];
        double det = 1.0;
        for (int64_t c = 0; c < m && det != 0.0; c++) {
            int64_t piv = c;
            for (int64_t r = c + 1; r < m; r++)
                if (fabs(a[r * m + c]) > fabs(a[piv * m + c]))
                    piv = r;
            if (a[piv * m + c] == 0.0) {
                det = 0.0;
                break;
            }
            if (piv != c) {
                for (int64_t j = 0; j < m; j++) {
                    const double t = a[c * m + j];
                    a[c * m + j] = a[piv * m + j];
                    a[piv * m + j] = t;
                }
                det = -det;
            }
            det *= a[c * m + c];
            for (int64_t r = c + 1; r < m; r++) {
                const double f = a[r * m + c] / a[c * m + c];
                for (int64_t j = c; j < m; j++)
                    a[r * m + j] -= f * a[c * m + j];
            }
        }
        if (p->f64)
            ((double *)args->outputs[0])[b] = det;
        else
            ((float *)args->outputs[0])[b] = (float)det;
    }
    return LOOM_OK;
}

static int det_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_dtype t = node->inputs[0].dtype;
    if (t != F32 && t != LOOM_DTYPE_F64)
        return cpu_no_dtype(node, t, "float32, float64", reason, len);
    return 1;
}

static loom_status det_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    det_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    p->m = x->dims[x->rank - 1];
    p->count = cpu_prod(x->dims, 0, x->rank - 2);
    p->f64 = x->dtype == LOOM_DTYPE_F64;
    k->params = p;
    k->run = det_run;
    k->scratch_bytes = (size_t)(p->m * p->m) * sizeof(double) + 8;
    return LOOM_OK;
}

void cpu_register_linalg(cpu_op_entry *table)
{
    table[LOOM_OP_DET] = (cpu_op_entry){det_supports, det_prepare};
    table[LOOM_OP_MATMUL] = (cpu_op_entry){matmul_supports, matmul_prepare};
    table[LOOM_OP_GEMM] = (cpu_op_entry){gemm_supports, gemm_prepare};
    table[LOOM_OP_EINSUM] = (cpu_op_entry){ein_supports, ein_prepare};
}
