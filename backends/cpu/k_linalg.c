/*
 * CPU kernels of the linear-algebra family: MatMul, Gemm, Conv (1-D and 2-D), MaxPool,
 * AveragePool and GlobalAveragePool, with ONNX opset-18 semantics.
 *
 * Threading. OpenBLAS is told to use one thread at start-up, so that the only parallelism is the
 * backend's own pinned pool and the two never oversubscribe the cores. Every f32 GEMM here is
 * therefore cut by us: the problems of a batch, and when there are too few of them for the pool,
 * each problem's larger output dimension (M rows or N columns) in blocks of whole multiples of 16
 * (the width of OpenBLAS's micro-kernels), one single-threaded cblas_sgemm per block on a
 * sub-matrix of the caller's arrays: nothing is copied. The number of blocks per problem makes the
 * task count a multiple of the pool's threads, so every thread gets the same work. GEMMs under
 * about 64^3 multiply-adds run as one call on the calling thread, where a fork would cost more
 * than it saves.
 *
 * Conv lowers to GEMM through im2col (Y_g[M/g, P] = W_g[M/g, K] * col[K, P], K = C/g * kh * kw,
 * P = output pixels). Scratch holds S column buffers, S fixed at prepare time from the shape
 * alone, since prepare sees no pool: as many (image, group) items as fit in 16 MiB, at most 64,
 * at least 1. At run time:
 *  - many small items (at least as many as threads, and S too): items run in parallel, item i of
 *    a round of S using buffer i, each one im2col and one GEMM on its thread;
 *  - otherwise items run one after another, each split over the pool. When P >= M/g, by chunks
 *    of output columns sized so a chunk's columns (K x cols floats) fit in L2: a thread builds
 *    its chunk's columns and runs the GEMM on them while they are still in its cache. Else by
 *    blocks of output channels, after an im2col split by rows.
 * 1x1, stride-1, unpadded convs read the input as the GEMM's B directly (no scratch), and grouped
 * convs with tiny groups (depthwise) run direct loops, where a GEMM with K <= 32 is all overhead.
 * Bias is added by whoever wrote the block, while it is in cache.
 */
#include "cpu_kernels.h"

#include <cblas.h>

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Below this many multiply-adds a GEMM (or a batch of them) is not worth a fork. */
#define LK_SMALL_MACS (64.0 * 64.0 * 64.0)
/* The least work, in multiply-adds, worth handing to a thread as one chunk. */
#define LK_CHUNK_MACS (32.0 * 1024.0)
/* Block boundaries of a split GEMM fall on multiples of this many rows or columns. */
#define LK_ALIGN 16
/* im2col buffers for parallel (image, group) items: budget in bytes, and most buffers. */
#define LK_COL_BUDGET ((size_t)16 << 20)
#define LK_COL_MAX_BUFFERS 64
/* Column chunks of a conv's im2col: the bytes one chunk should span (an L2's worth), and the
 * fewest columns a chunk has, so that its GEMM still runs at speed. */
#define LK_COL_CHUNK_BYTES ((size_t)256 << 10)
#define LK_COL_CHUNK_MIN 64
/* Grouped convs whose groups reduce over at most this many taps use direct loops. */
#define LK_DIRECT_MAX_TAPS 32

/* ---- shared helpers -------------------------------------------------------------------------- */

static int get_ints(const loom_node_desc *node, const char *name, size_t count, int64_t *out)
{
    const loom_attr *a = loom_node_attr(node, name);
    if (!a || a->kind != LOOM_ATTR_INTS || a->count != count)
        return 0;
    for (size_t i = 0; i < count; i++)
        out[i] = a->ints[i];
    return 1;
}

static int input_present(const loom_node_desc *node, uint32_t i)
{
    return i < node->n_inputs && node->inputs[i].dtype != LOOM_DTYPE_UNDEFINED;
}

static int kernel_input_present(const cpu_kernel *k, uint32_t i)
{
    return i < k->n_in && k->in[i].dtype != LOOM_DTYPE_UNDEFINED;
}

static size_t gcd_size(size_t a, size_t b)
{
    while (b) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Outputs o in [0, n_out) with 0 <= o*stride + off < n_in lie in [*lo, *hi). */
static void valid_range(int64_t off, int64_t stride, int64_t n_in, int64_t n_out, int64_t *lo,
                        int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t h = n_in - 1 - off < 0 ? 0 : (n_in - 1 - off) / stride + 1;
    if (h > n_out)
        h = n_out;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

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

/* The canonical window attributes of Conv and pooling over S spatial dims, checked for sizes
 * the loops can use (inference should have caught the rest). */
static int window_attrs_ok(const loom_node_desc *node, size_t s, char *reason, size_t len)
{
    int64_t ks[LOOM_MAX_RANK], st[LOOM_MAX_RANK], dl[LOOM_MAX_RANK], pd[2 * LOOM_MAX_RANK];
    if (!get_ints(node, "kernel_shape", s, ks) || !get_ints(node, "strides", s, st) ||
        !get_ints(node, "dilations", s, dl) || !get_ints(node, "pads", 2 * s, pd)) {
        cpu_reason(reason, len, "%s: canonical attributes missing (run shape inference)",
                   node->op_name);
        return 0;
    }
    for (size_t i = 0; i < s; i++)
        if (ks[i] < 1 || st[i] < 1 || dl[i] < 1 || pd[i] < 0 || pd[s + i] < 0) {
            cpu_reason(reason, len, "%s: kernel, strides and dilations must be >= 1, pads >= 0",
                       node->op_name);
            return 0;
        }
    return 1;
}

/* ---- GEMM on blocks ---------------------------------------------------------------------------- */

/* One f32 GEMM C = alpha*op(A)*op(B) + beta*C, row-major, as cblas sees it. */
typedef struct lk_gemm {
    int trans_a, trans_b;
    int64_t m, n, k;
    int64_t lda, ldb, ldc;
    float alpha;
    size_t nb;   /* blocks this GEMM is cut into */
    int split_n; /* blocks are column ranges of C (else row ranges) */
} lk_gemm;

/* Decide how to cut BATCH GEMMs of shape G over the pool: sets G->nb and G->split_n, and returns
 * the grain (tasks per chunk) to give cpu_parallel_for over batch*nb tasks. */
static size_t lk_gemm_plan(lk_gemm *g, size_t batch, unsigned threads)
{
    double macs = (double)g->m * (double)g->n * (double)g->k;
    size_t tasks;
    g->nb = 1;
    g->split_n = g->n > g->m;
    if (batch == 0 || macs * (double)batch < LK_SMALL_MACS || threads <= 1)
        return batch ? batch : 1;
    int64_t extent = g->split_n ? g->n : g->m;
    /* Enough blocks per GEMM that the task count is a multiple of the threads. */
    size_t nb = threads / gcd_size(batch, threads);
    if (nb > 1 && extent / (int64_t)nb < LK_ALIGN)
        nb = extent / LK_ALIGN > 1 ? (size_t)(extent / LK_ALIGN) : 1;
    g->nb = nb;
    tasks = batch * nb;
    double per_task = macs / (double)nb;
    size_t grain = per_task >= LK_CHUNK_MACS ? 1 : (size_t)(LK_CHUNK_MACS / per_task) + 1;
    /* Never coarser than an even share per thread. */
    size_t share = (tasks + threads - 1) / threads;
    return grain < share ? grain : share;
}

/* Start of block B of NB over EXTENT, on a multiple of LK_ALIGN (except the ends). */
static int64_t block_start(int64_t extent, size_t nb, size_t b)
{
    if (b == 0)
        return 0;
    if (b >= nb)
        return extent;
    int64_t p = (int64_t)(((double)extent * (double)b) / (double)nb + 0.5);
    p = (p + LK_ALIGN / 2) / LK_ALIGN * LK_ALIGN;
    return p > extent ? extent : p;
}

/* C = alpha*op(A)*op(B) + beta*C on rows or columns [lo, hi) of C, one single-threaded call.
 * Vector shapes go to sgemv, which OpenBLAS (0.3.21) does not forward to on its own. */
static void lk_gemm_block(const lk_gemm *g, const float *a, const float *b, float *c, int64_t lo,
                          int64_t hi, float beta)
{
    int64_t m = g->m, n = g->n;
    if (g->split_n) {
        b += g->trans_b ? lo * g->ldb : lo;
        c += lo;
        n = hi - lo;
    } else {
        a += g->trans_a ? lo : lo * g->lda;
        c += lo * g->ldc;
        m = hi - lo;
    }
    if (m <= 0 || n <= 0)
        return;
    if (g->k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                c[i * g->ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * g->ldc + j];
        return;
    }
    if ((m == 1 || n == 1) && beta == 0.0f) {
        /* Some OpenBLAS versions scale y by beta in sgemv, and 0 * NaN garbage stays NaN. */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                c[i * g->ldc + j] = 0.0f;
    }
    if (m == 1) {
        /* c[j] = sum_kk a[kk] * opB[kk][j] */
        int inc_a = g->trans_a ? (int)g->lda : 1;
        if (g->trans_b)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)g->k, g->alpha, b, (int)g->ldb,
                        a, inc_a, beta, c, 1);
        else
            cblas_sgemv(CblasRowMajor, CblasTrans, (int)g->k, (int)n, g->alpha, b, (int)g->ldb, a,
                        inc_a, beta, c, 1);
        return;
    }
    if (n == 1) {
        /* c[i] = sum_kk opA[i][kk] * b[kk] */
        int inc_b = g->trans_b ? 1 : (int)g->ldb;
        if (g->trans_a)
            cblas_sgemv(CblasRowMajor, CblasTrans, (int)g->k, (int)m, g->alpha, a, (int)g->lda, b,
                        inc_b, beta, c, (int)g->ldc);
        else
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)m, (int)g->k, g->alpha, a, (int)g->lda,
                        b, inc_b, beta, c, (int)g->ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                g->trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)g->k, g->alpha, a,
                (int)g->lda, b, (int)g->ldb, beta, c, (int)g->ldc);
}

static int fits_int(int64_t v)
{
    return v >= 0 && v <= INT_MAX;
}

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
    if (t == LOOM_DTYPE_F32 && (!fits_int(m * batch) || !fits_int(n) || !fits_int(k))) {
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
    lk_gemm g;
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
        lk_gemm_block(&x->g, (const float *)x->a + ao, (const float *)x->b + bo,
                      (float *)x->c + (int64_t)prob * p->m * p->n,
                      block_start(extent, x->g.nb, blk), block_start(extent, x->g.nb, blk + 1),
                      0.0f);
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
        x.g = (lk_gemm){.m = p->m, .n = p->n, .k = p->k, .lda = p->k > 0 ? p->k : 1,
                        .ldb = p->n, .ldc = p->n, .alpha = 1.0f};
        size_t grain = lk_gemm_plan(&x.g, (size_t)p->batch, cpu_pool_threads(pool));
        cpu_parallel_for(pool, (size_t)p->batch * x.g.nb, grain, matmul_f32_task, &x);
        return LOOM_OK;
    }
    size_t rows = (size_t)(p->batch * p->m);
    double per_row = (double)p->n * (double)(p->k + 1);
    size_t grain = per_row >= LK_CHUNK_MACS ? 1 : (size_t)(LK_CHUNK_MACS / per_row) + 1;
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
        if (!input_present(node, i))
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
    if (input_present(node, 2) && node->inputs[2].rank > 2) {
        cpu_reason(reason, len, "Gemm: C has rank %u", node->inputs[2].rank);
        return 0;
    }
    for (uint32_t i = 0; i < 2; i++)
        for (uint32_t d = 0; d < 2; d++)
            if (!fits_int(node->inputs[i].dims[d])) {
                cpu_reason(reason, len, "Gemm: a dimension exceeds the BLAS integer range");
                return 0;
            }
    return 1;
}

typedef struct gemm_ctx {
    const gemm_params *p;
    lk_gemm g;
    const float *a, *b, *c;
    float *y;
} gemm_ctx;

static void gemm_task(void *arg, size_t b0, size_t b1)
{
    const gemm_ctx *x = arg;
    const gemm_params *p = x->p;
    for (size_t blk = b0; blk < b1; blk++) {
        int64_t extent = x->g.split_n ? p->n : p->m;
        int64_t lo = block_start(extent, x->g.nb, blk), hi = block_start(extent, x->g.nb, blk + 1);
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
        lk_gemm_block(&x->g, x->a, x->b, x->y, lo, hi, x->c ? 1.0f : 0.0f);
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
                  .c = kernel_input_present(k, 2) ? args->inputs[2] : NULL,
                  .y = args->outputs[0]};
    x.g = (lk_gemm){.trans_a = p->trans_a, .trans_b = p->trans_b, .m = p->m, .n = p->n,
                    .k = p->k, .alpha = p->alpha, .ldc = p->n};
    x.g.lda = p->trans_a ? p->m : p->k;
    x.g.ldb = p->trans_b ? p->k : p->n;
    if (x.g.lda < 1)
        x.g.lda = 1;
    if (x.g.ldb < 1)
        x.g.ldb = 1;
    size_t grain = lk_gemm_plan(&x.g, 1, cpu_pool_threads(pool));
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
    if (kernel_input_present(k, 2)) {
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

/* ---- Conv -------------------------------------------------------------------------------------- */

typedef struct conv_params {
    int64_t n, c, h, w;  /* input; a 1-D conv has h = 1 */
    int64_t m, oh, ow;   /* output channels and spatial size */
    int64_t kh, kw, sh, sw, dh, dw, pt, pl;
    int64_t group, cg, mg;
    int64_t kc;          /* GEMM K: cg*kh*kw */
    int64_t p;           /* GEMM N: oh*ow */
    int pointwise;       /* 1x1, stride 1, no padding: the input is the GEMM's B as it is */
    int direct;          /* tiny groups: direct loops */
    size_t n_buffers;    /* im2col buffers in scratch */
    int has_bias;
} conv_params;

static int conv_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs < 2 || node->n_inputs > 3 || node->n_outputs != 1) {
        cpu_reason(reason, len, "Conv takes 2 or 3 inputs and 1 output");
        return 0;
    }
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (input_present(node, i) && node->inputs[i].dtype != LOOM_DTYPE_F32) {
            cpu_reason(reason, len, "Conv: only f32 is supported (input %u is dtype %d)", i,
                       (int)node->inputs[i].dtype);
            return 0;
        }
    uint32_t rank = node->inputs[0].rank;
    if (rank != 3 && rank != 4) {
        cpu_reason(reason, len, "Conv: only 1-D and 2-D convolutions (input rank %u)", rank);
        return 0;
    }
    if (node->inputs[1].rank != rank || node->outputs[0].rank != rank) {
        cpu_reason(reason, len, "Conv: weight and output must have the input's rank");
        return 0;
    }
    if (!window_attrs_ok(node, rank - 2, reason, len))
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
    if (!fits_int(kc) || !fits_int(p) || !fits_int(node->inputs[1].dims[0])) {
        cpu_reason(reason, len, "Conv: a dimension exceeds the BLAS integer range");
        return 0;
    }
    return 1;
}

/* Rows [r0, r1) and columns [c0, c1) of the column matrix of one (image, group) item: row
 * (c, ki, kj), column (oh, ow) holds x[c][oh*sh - pt + ki*dh][ow*sw - pl + kj*dw], 0 in the
 * padding. Rows are P long, so column ranges of different threads never share a row segment. */
static void conv_im2col(const conv_params *p, const float *x, float *col, int64_t r0, int64_t r1,
                        int64_t c0, int64_t c1)
{
    int64_t taps = p->kh * p->kw;
    for (int64_t r = r0; r < r1; r++) {
        int64_t c = r / taps, ki = r % taps / p->kw, kj = r % p->kw;
        const float *xc = x + c * p->h * p->w;
        float *dst = col + r * p->p;
        int64_t lo, hi;
        valid_range(kj * p->dw - p->pl, p->sw, p->w, p->ow, &lo, &hi);
        for (int64_t pc = c0; pc < c1;) {
            int64_t oh = pc / p->ow, ow0 = pc % p->ow;
            int64_t ow1 = c1 - pc < p->ow - ow0 ? ow0 + (c1 - pc) : p->ow;
            int64_t ih = oh * p->sh - p->pt + ki * p->dh;
            float *d = dst + oh * p->ow;
            pc += ow1 - ow0;
            if (ih < 0 || ih >= p->h) {
                memset(d + ow0, 0, (size_t)(ow1 - ow0) * sizeof *d);
                continue;
            }
            const float *src = xc + ih * p->w + kj * p->dw - p->pl;
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
    const float *x, *w, *bias;
    float *y, *scratch;
    /* the item being worked on, in the one-item-at-a-time scheme */
    lk_gemm g;
    const float *xi, *wi, *bi, *col;
    float *yi;
    size_t item0;   /* first item of the round, in the item-parallel scheme */
    size_t nchunks; /* column chunks of the item, in the column scheme */
} conv_ctx;

/* Add the bias of each output channel to rows [r0, r1), columns [c0, c1) of a group's output. */
static void conv_add_bias(const conv_params *p, const float *bias, float *y, int64_t r0,
                          int64_t r1, int64_t c0, int64_t c1)
{
    if (!bias)
        return;
    for (int64_t r = r0; r < r1; r++)
        add_row(y + r * p->p + c0, bias[r], c1 - c0);
}

static lk_gemm conv_gemm_shape(const conv_params *p)
{
    return (lk_gemm){.m = p->mg, .n = p->p, .k = p->kc, .lda = p->kc > 0 ? p->kc : 1,
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
    lk_gemm g = conv_gemm_shape(p);
    g.split_n = 1;
    for (size_t blk = b0; blk < b1; blk++) {
        int64_t lo = block_start(p->p, x->nchunks, blk), hi = block_start(p->p, x->nchunks, blk + 1);
        if (!p->pointwise)
            conv_im2col(p, x->xi, x->scratch, 0, p->kc, lo, hi);
        lk_gemm_block(&g, x->wi, x->col, x->yi, lo, hi, 0.0f);
        conv_add_bias(p, x->bi, x->yi, 0, p->mg, lo, hi);
    }
}

static void conv_gemm_task(void *arg, size_t b0, size_t b1)
{
    const conv_ctx *x = arg;
    const conv_params *p = x->p;
    for (size_t blk = b0; blk < b1; blk++) {
        int64_t extent = x->g.split_n ? p->p : p->mg;
        int64_t lo = block_start(extent, x->g.nb, blk), hi = block_start(extent, x->g.nb, blk + 1);
        lk_gemm_block(&x->g, x->wi, x->col, x->yi, lo, hi, 0.0f);
        if (x->g.split_n)
            conv_add_bias(p, x->bi, x->yi, 0, p->mg, lo, hi);
        else
            conv_add_bias(p, x->bi, x->yi, lo, hi, 0, p->p);
    }
}

static void conv_item_task(void *arg, size_t i0, size_t i1)
{
    const conv_ctx *x = arg;
    const conv_params *p = x->p;
    lk_gemm g = conv_gemm_shape(p);
    for (size_t r = i0; r < i1; r++) {
        size_t item = x->item0 + r;
        int64_t n = (int64_t)item / p->group, grp = (int64_t)item % p->group;
        const float *xi = x->x + (n * p->c + grp * p->cg) * p->h * p->w;
        float *yi = x->y + (n * p->m + grp * p->mg) * p->p;
        const float *col = xi;
        if (!p->pointwise) {
            float *buf = x->scratch + r * (size_t)(p->kc * p->p);
            conv_im2col(p, xi, buf, 0, p->kc, 0, p->p);
            col = buf;
        }
        lk_gemm_block(&g, x->w + grp * p->mg * p->kc, col, yi, 0, p->mg, 0.0f);
        conv_add_bias(p, x->bias ? x->bias + grp * p->mg : NULL, yi, 0, p->mg, 0, p->p);
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
            const float *xc = x->x + (n * p->c + grp * p->cg + c) * p->h * p->w;
            const float *wc = x->w + (oc * p->cg + c) * p->kh * p->kw;
            for (int64_t ki = 0; ki < p->kh; ki++) {
                int64_t oh_lo, oh_hi;
                valid_range(ki * p->dh - p->pt, p->sh, p->h, p->oh, &oh_lo, &oh_hi);
                for (int64_t kj = 0; kj < p->kw; kj++) {
                    float wv = wc[ki * p->kw + kj];
                    int64_t lo, hi;
                    valid_range(kj * p->dw - p->pl, p->sw, p->w, p->ow, &lo, &hi);
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
    }
}

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
                  .y = args->outputs[0],
                  .scratch = args->scratch};
    if (p->n == 0 || p->m == 0 || p->p == 0)
        return LOOM_OK;
    unsigned threads = cpu_pool_threads(pool);
    double item_macs = (double)p->mg * (double)p->kc * (double)p->p;
    if (p->direct) {
        double plane = (double)p->cg * (double)p->kh * (double)p->kw * (double)p->p + 1.0;
        size_t grain = plane >= LK_CHUNK_MACS ? 1 : (size_t)(LK_CHUNK_MACS / plane) + 1;
        cpu_parallel_for(pool, (size_t)(p->n * p->m), grain, conv_direct_task, &x);
        return LOOM_OK;
    }
    size_t items = (size_t)(p->n * p->group);
    size_t per_round = p->pointwise ? items : p->n_buffers;
    /* Many small items: one thread per item, each with its own column buffer. Big items split
     * better inside, where their GEMM has blocks to cut. */
    if (threads > 1 && items >= threads && per_round >= threads &&
        item_macs < 16.0 * LK_SMALL_MACS) {
        size_t grain = item_macs >= LK_CHUNK_MACS ? 1 : (size_t)(LK_CHUNK_MACS / item_macs) + 1;
        for (size_t i0 = 0; i0 < items; i0 += per_round) {
            size_t i1 = i0 + per_round < items ? i0 + per_round : items;
            x.item0 = i0;
            cpu_parallel_for(pool, i1 - i0, grain, conv_item_task, &x);
        }
        return LOOM_OK;
    }
    /* One item at a time, split over the pool: by chunks of output columns when there are
     * more columns than output channels (each chunk's columns small enough to stay in L2 from
     * im2col to GEMM), else by blocks of output channels after a row-split im2col. */
    x.g = conv_gemm_shape(p);
    size_t gemm_grain = lk_gemm_plan(&x.g, 1, threads);
    int by_columns = p->p >= p->mg;
    if (by_columns) {
        int64_t cols = (int64_t)(LK_COL_CHUNK_BYTES / sizeof(float)) / (p->kc > 0 ? p->kc : 1);
        cols = cols < LK_COL_CHUNK_MIN ? LK_COL_CHUNK_MIN : cols / LK_ALIGN * LK_ALIGN;
        size_t nch = (size_t)((p->p + cols - 1) / cols);
        /* At least one chunk per thread when the work is worth splitting; whole rounds of
         * threads so none idles at the end. */
        if (x.g.nb > 1) {
            if (nch < threads)
                nch = threads;
            nch = (nch + threads - 1) / threads * threads;
        }
        while (nch > 1 && p->p / (int64_t)nch < LK_ALIGN)
            nch--;
        x.nchunks = nch;
    }
    for (size_t item = 0; item < items; item++) {
        int64_t n = (int64_t)item / p->group, grp = (int64_t)item % p->group;
        x.xi = x.x + (n * p->c + grp * p->cg) * p->h * p->w;
        x.yi = x.y + (n * p->m + grp * p->mg) * p->p;
        x.wi = x.w + grp * p->mg * p->kc;
        x.bi = x.bias ? x.bias + grp * p->mg : NULL;
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
    return LOOM_OK;
}

static loom_status conv_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    conv_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "Conv: out of memory");
    const loom_tensor_desc *x = &k->in[0], *w = &k->in[1], *y = &k->out[0];
    size_t s = x->rank - 2;
    int64_t ks[2], st[2], dl[2], pd[4];
    get_ints(node, "kernel_shape", s, ks);
    get_ints(node, "strides", s, st);
    get_ints(node, "dilations", s, dl);
    get_ints(node, "pads", 2 * s, pd);
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->m = y->dims[1];
    p->group = loom_node_attr_int(node, "group", 1);
    p->cg = p->c / p->group;
    p->mg = p->m / p->group;
    if (s == 2) {
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
    if (w->dims[1] != p->cg || (s == 2 && (w->dims[2] != p->kh || w->dims[3] != p->kw)) ||
        (s == 1 && w->dims[2] != p->kw)) {
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "Conv: weight shape does not match channels/group and kernel_shape");
    }
    p->kc = p->cg * p->kh * p->kw;
    p->p = p->oh * p->ow;
    p->has_bias = kernel_input_present(k, 2);
    int no_pad = 1;
    for (size_t i = 0; i < 2 * s; i++)
        no_pad &= pd[i] == 0;
    p->pointwise = p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && no_pad &&
                   p->oh == p->h && p->ow == p->w;
    p->direct = p->group > 1 && p->kc <= LK_DIRECT_MAX_TAPS && !p->pointwise;
    size_t col_bytes = (size_t)(p->kc * p->p) * sizeof(float);
    k->scratch_bytes = 0;
    if (!p->pointwise && !p->direct && col_bytes > 0) {
        size_t items = (size_t)(p->n * p->group);
        size_t nbuf = LK_COL_BUDGET / col_bytes;
        if (nbuf > LK_COL_MAX_BUFFERS)
            nbuf = LK_COL_MAX_BUFFERS;
        if (nbuf > items)
            nbuf = items;
        if (nbuf < 1)
            nbuf = 1;
        p->n_buffers = nbuf;
        k->scratch_bytes = nbuf * col_bytes;
    }
    k->params = p;
    k->run = conv_run;
    return LOOM_OK;
}

/* ---- MaxPool, AveragePool ---------------------------------------------------------------------- */

/* Pooling works on 3 spatial dims (D, H, W); fewer are padded in front with size-1 dims. For each
 * dim and output index the tables hold the first and one-past-last tap that lands in the input,
 * and for count_include_pad the number of taps inside the padded input. Planes of one depth with
 * no dilation and no Indices output (the 2-D and 1-D pools of CNNs) take a fast path: outputs
 * whose window lies wholly inside the input run in vectorised rows, the border point by point.
 * Either way planes (N*C) are split over the pool. */
typedef struct pool_params {
    int is_max, include_pad, has_indices;
    int fast; /* 2-D, no dilation, no Indices: pool_fast_plane */
    int64_t planes;
    int64_t in[3], out[3], kern[3], stride[3], dil[3], pad[3];
    int64_t inner_lo[3], inner_hi[3]; /* outputs [lo, hi) whose windows are all in the input */
    int64_t *lo[3], *hi[3], *cnt[3];
    int64_t table[]; /* 3 * (out[0] + out[1] + out[2]) entries the pointers above use */
} pool_params;

static int pool_supports(const loom_node_desc *node, char *reason, size_t len)
{
    int is_max = node->op == LOOM_OP_MAX_POOL;
    if (node->n_inputs != 1 || node->n_outputs < 1 || node->n_outputs > (is_max ? 2u : 1u)) {
        cpu_reason(reason, len, "%s: wrong number of inputs or outputs", node->op_name);
        return 0;
    }
    if (node->inputs[0].dtype != LOOM_DTYPE_F32 || node->outputs[0].dtype != LOOM_DTYPE_F32) {
        cpu_reason(reason, len, "%s: only f32 is supported", node->op_name);
        return 0;
    }
    if (node->n_outputs == 2 && node->outputs[1].dtype != LOOM_DTYPE_UNDEFINED &&
        node->outputs[1].dtype != LOOM_DTYPE_I64) {
        cpu_reason(reason, len, "MaxPool: Indices must be i64");
        return 0;
    }
    uint32_t rank = node->inputs[0].rank;
    if (rank < 3 || rank > 5) {
        cpu_reason(reason, len, "%s: 1 to 3 spatial dims supported (input rank %u)",
                   node->op_name, rank);
        return 0;
    }
    return window_attrs_ok(node, rank - 2, reason, len);
}

typedef struct pool_ctx {
    const pool_params *p;
    const float *x;
    float *y;
    int64_t *idx;
} pool_ctx;

/* One output (od, oh, ow) of one plane, through the tables: X and Y are the plane's, BASE the
 * plane's offset in the whole input (for Indices), YI the plane's Indices or NULL. */
static inline void pool_point(const pool_params *p, const float *x, float *y, int64_t *yi,
                              int64_t base, int64_t od, int64_t oh, int64_t ow)
{
    int64_t d0 = od * p->stride[0] - p->pad[0];
    int64_t h0 = oh * p->stride[1] - p->pad[1];
    int64_t w0 = ow * p->stride[2] - p->pad[2];
    int64_t o = (od * p->out[1] + oh) * p->out[2] + ow;
    if (p->is_max) {
        float best = -INFINITY;
        int64_t at = -1;
        for (int64_t td = p->lo[0][od]; td < p->hi[0][od]; td++) {
            int64_t id = d0 + td * p->dil[0];
            for (int64_t th = p->lo[1][oh]; th < p->hi[1][oh]; th++) {
                int64_t row = (id * p->in[1] + h0 + th * p->dil[1]) * p->in[2];
                for (int64_t tw = p->lo[2][ow]; tw < p->hi[2][ow]; tw++) {
                    int64_t i = row + w0 + tw * p->dil[2];
                    float v = x[i];
                    /* NaN never wins, as in ONNX Runtime; -inf still can. */
                    if (v > best || (at < 0 && v == v)) {
                        best = v;
                        at = i;
                    }
                }
            }
        }
        y[o] = best;
        if (yi)
            yi[o] = at < 0 ? -1 : base + at;
    } else {
        float sum = 0.0f;
        for (int64_t td = p->lo[0][od]; td < p->hi[0][od]; td++) {
            int64_t id = d0 + td * p->dil[0];
            for (int64_t th = p->lo[1][oh]; th < p->hi[1][oh]; th++) {
                int64_t row = (id * p->in[1] + h0 + th * p->dil[1]) * p->in[2];
                for (int64_t tw = p->lo[2][ow]; tw < p->hi[2][ow]; tw++)
                    sum += x[row + w0 + tw * p->dil[2]];
            }
        }
        int64_t count;
        if (p->include_pad)
            count = p->cnt[0][od] * p->cnt[1][oh] * p->cnt[2][ow];
        else
            count = (p->hi[0][od] - p->lo[0][od]) * (p->hi[1][oh] - p->lo[1][oh]) *
                    (p->hi[2][ow] - p->lo[2][ow]);
        y[o] = sum / (float)count;
    }
}

/* Fast 2-D rows: N outputs Y[j], j < N, of windows KH x KW whose top-left tap is X[j * SW], rows
 * LD apart, all inside the input. Blocks of POOL_BLK outputs with a fixed-count inner loop, so
 * that -O2 vectorises across output columns (see axpy_row): 2x2 and 3x3 windows have their taps
 * written out (2x2 at stride 2 reads interleaved pairs, 3x3 at stride 2 splits its rows into even
 * and odd columns first), other windows loop over the taps
 * around a block-wide inner loop, which vectorises at stride 1. Taps are visited in the generic
 * order (row by row, left to right), so results are bit-identical to pool_point: max keeps the
 * first of equal values (+0 vs -0) and v > m ? v : m never lets a NaN win (all NaN gives -inf),
 * as pool_point's rule does; the average sums from 0.0f in the same order and divides by the
 * same count, which is KH * KW for an interior window with or without count_include_pad. */
#define POOL_BLK 8
static inline float pool_max_tap(float m, float v)
{
    return v > m ? v : m;
}

/* Any window: taps outermost, the block's outputs innermost. */
static inline void pool_max_row(float *restrict y, const float *restrict x, int64_t ld, int64_t n,
                                int kh, int kw, int sw)
{
    int64_t j = 0;
    for (; j + POOL_BLK <= n; j += POOL_BLK) {
        float m[POOL_BLK];
        for (int k = 0; k < POOL_BLK; k++)
            m[k] = -INFINITY;
        for (int th = 0; th < kh; th++)
            for (int tw = 0; tw < kw; tw++) {
                const float *restrict r = x + th * ld + j * sw + tw;
                for (int k = 0; k < POOL_BLK; k++)
                    m[k] = pool_max_tap(m[k], r[k * sw]);
            }
        for (int k = 0; k < POOL_BLK; k++)
            y[j + k] = m[k];
    }
    for (; j < n; j++) {
        float m = -INFINITY;
        for (int th = 0; th < kh; th++)
            for (int tw = 0; tw < kw; tw++)
                m = pool_max_tap(m, x[th * ld + j * sw + tw]);
        y[j] = m;
    }
}

static inline void pool_avg_row(float *restrict y, const float *restrict x, int64_t ld, int64_t n,
                                int kh, int kw, int sw, float div)
{
    int64_t j = 0;
    for (; j + POOL_BLK <= n; j += POOL_BLK) {
        float s[POOL_BLK];
        for (int k = 0; k < POOL_BLK; k++)
            s[k] = 0.0f;
        for (int th = 0; th < kh; th++)
            for (int tw = 0; tw < kw; tw++) {
                const float *restrict r = x + th * ld + j * sw + tw;
                for (int k = 0; k < POOL_BLK; k++)
                    s[k] += r[k * sw];
            }
        for (int k = 0; k < POOL_BLK; k++)
            y[j + k] = s[k] / div;
    }
    for (; j < n; j++) {
        float s = 0.0f;
        for (int th = 0; th < kh; th++)
            for (int tw = 0; tw < kw; tw++)
                s += x[th * ld + j * sw + tw];
        y[j] = s / div;
    }
}

/* 2x2 and 3x3 windows with the taps written out, so that each output's whole window is
 * straight-line code in the fixed-count block loop. */
#define POOL_ROW3(NAME, INIT, TAP, FINISH)                                                        \
    static inline void NAME(float *restrict y, const float *restrict x, int64_t ld, int64_t n,    \
                            int sw)                                                               \
    {                                                                                             \
        const float *restrict r0 = x, *restrict r1 = x + ld, *restrict r2 = x + 2 * ld;           \
        int64_t j = 0;                                                                            \
        for (; j + POOL_BLK <= n; j += POOL_BLK)                                                  \
            for (int k = 0; k < POOL_BLK; k++) {                                                  \
                int64_t c = (j + k) * sw;                                                         \
                float a = INIT;                                                                   \
                a = TAP(a, r0[c]);                                                                \
                a = TAP(a, r0[c + 1]);                                                            \
                a = TAP(a, r0[c + 2]);                                                            \
                a = TAP(a, r1[c]);                                                                \
                a = TAP(a, r1[c + 1]);                                                            \
                a = TAP(a, r1[c + 2]);                                                            \
                a = TAP(a, r2[c]);                                                                \
                a = TAP(a, r2[c + 1]);                                                            \
                a = TAP(a, r2[c + 2]);                                                            \
                y[j + k] = FINISH(a);                                                             \
            }                                                                                     \
        for (; j < n; j++) {                                                                      \
            int64_t c = j * sw;                                                                   \
            float a = INIT;                                                                       \
            a = TAP(a, r0[c]);                                                                    \
            a = TAP(a, r0[c + 1]);                                                                \
            a = TAP(a, r0[c + 2]);                                                                \
            a = TAP(a, r1[c]);                                                                    \
            a = TAP(a, r1[c + 1]);                                                                \
            a = TAP(a, r1[c + 2]);                                                                \
            a = TAP(a, r2[c]);                                                                    \
            a = TAP(a, r2[c + 1]);                                                                \
            a = TAP(a, r2[c + 2]);                                                                \
            y[j] = FINISH(a);                                                                     \
        }                                                                                         \
    }
#define POOL_ROW2(NAME, INIT, TAP, FINISH)                                                        \
    static inline void NAME(float *restrict y, const float *restrict x, int64_t ld, int64_t n,    \
                            int sw)                                                               \
    {                                                                                             \
        const float *restrict r0 = x, *restrict r1 = x + ld;                                      \
        int64_t j = 0;                                                                            \
        for (; j + POOL_BLK <= n; j += POOL_BLK)                                                  \
            for (int k = 0; k < POOL_BLK; k++) {                                                  \
                int64_t c = (j + k) * sw;                                                         \
                float a = INIT;                                                                   \
                a = TAP(a, r0[c]);                                                                \
                a = TAP(a, r0[c + 1]);                                                            \
                a = TAP(a, r1[c]);                                                                \
                a = TAP(a, r1[c + 1]);                                                            \
                y[j + k] = FINISH(a);                                                             \
            }                                                                                     \
        for (; j < n; j++) {                                                                      \
            int64_t c = j * sw;                                                                   \
            float a = INIT;                                                                       \
            a = TAP(a, r0[c]);                                                                    \
            a = TAP(a, r0[c + 1]);                                                                \
            a = TAP(a, r1[c]);                                                                    \
            a = TAP(a, r1[c + 1]);                                                                \
            y[j] = FINISH(a);                                                                     \
        }                                                                                         \
    }
/* 3x3 windows at stride 2: X[2j], X[2j+1], X[2j+2] are no interleaved pair GCC vectorises, so
 * each of the three input rows is first split, a chunk at a time, into its even and odd columns
 * on the stack (pairs, which do vectorise); the window of output j is then E[j], O[j], E[j+1] of
 * each row, contiguous loads, taps still in the generic order. */
#define POOL_S2_CHUNK 128
#define POOL_ROW3S2(NAME, INIT, TAP, FINISH)                                                      \
    static inline void NAME(float *restrict y, const float *restrict x, int64_t ld, int64_t n)    \
    {                                                                                             \
        float e[3][POOL_S2_CHUNK + 1], o[3][POOL_S2_CHUNK];                                       \
        for (int64_t j0 = 0; j0 < n; j0 += POOL_S2_CHUNK) {                                       \
            int64_t cnt = n - j0 < POOL_S2_CHUNK ? n - j0 : POOL_S2_CHUNK;                        \
            for (int t = 0; t < 3; t++) {                                                         \
                const float *restrict r = x + t * ld + 2 * j0;                                    \
                float *restrict et = e[t], *restrict ot = o[t];                                   \
                int64_t k = 0;                                                                    \
                for (; k + POOL_BLK <= cnt; k += POOL_BLK)                                        \
                    for (int i = 0; i < POOL_BLK; i++) {                                          \
                        et[k + i] = r[2 * (k + i)];                                               \
                        ot[k + i] = r[2 * (k + i) + 1];                                           \
                    }                                                                             \
                for (; k < cnt; k++) {                                                            \
                    et[k] = r[2 * k];                                                             \
                    ot[k] = r[2 * k + 1];                                                         \
                }                                                                                 \
                et[cnt] = r[2 * cnt];                                                             \
            }                                                                                     \
            float *restrict yc = y + j0;                                                          \
            int64_t j = 0;                                                                        \
            for (; j + POOL_BLK <= cnt; j += POOL_BLK)                                            \
                for (int k = 0; k < POOL_BLK; k++) {                                              \
                    float a = INIT;                                                               \
                    a = TAP(a, e[0][j + k]);                                                      \
                    a = TAP(a, o[0][j + k]);                                                      \
                    a = TAP(a, e[0][j + k + 1]);                                                  \
                    a = TAP(a, e[1][j + k]);                                                      \
                    a = TAP(a, o[1][j + k]);                                                      \
                    a = TAP(a, e[1][j + k + 1]);                                                  \
                    a = TAP(a, e[2][j + k]);                                                      \
                    a = TAP(a, o[2][j + k]);                                                      \
                    a = TAP(a, e[2][j + k + 1]);                                                  \
                    yc[j + k] = FINISH(a);                                                        \
                }                                                                                 \
            for (; j < cnt; j++) {                                                                \
                float a = INIT;                                                                   \
                for (int t = 0; t < 3; t++) {                                                     \
                    a = TAP(a, e[t][j]);                                                          \
                    a = TAP(a, o[t][j]);                                                          \
                    a = TAP(a, e[t][j + 1]);                                                      \
                }                                                                                 \
                yc[j] = FINISH(a);                                                                \
            }                                                                                     \
        }                                                                                         \
    }
#define POOL_ADD(a, v) ((a) + (v))
#define POOL_KEEP(a) (a)
#define POOL_DIV9(a) ((a) / 9.0f)
#define POOL_DIV4(a) ((a) / 4.0f)
POOL_ROW3(pool_max3_row, -INFINITY, pool_max_tap, POOL_KEEP)
POOL_ROW3(pool_avg3_row, 0.0f, POOL_ADD, POOL_DIV9)
POOL_ROW2(pool_max2_row, -INFINITY, pool_max_tap, POOL_KEEP)
POOL_ROW2(pool_avg2_row, 0.0f, POOL_ADD, POOL_DIV4)
POOL_ROW3S2(pool_max3s2_row, -INFINITY, pool_max_tap, POOL_KEEP)
POOL_ROW3S2(pool_avg3s2_row, 0.0f, POOL_ADD, POOL_DIV9)

/* The interior part of one output row: N outputs from X (first tap of the first one). */
static void pool_fast_row(const pool_params *p, float *restrict y, const float *restrict x,
                          int64_t n)
{
    int64_t ld = p->in[2];
    int kh = (int)p->kern[1], kw = (int)p->kern[2], sw = (int)p->stride[2];
    if (p->is_max) {
        if (kh == 2 && kw == 2 && sw == 2)
            pool_max2_row(y, x, ld, n, 2);
        else if (kh == 3 && kw == 3 && sw == 1)
            pool_max3_row(y, x, ld, n, 1);
        else if (kh == 3 && kw == 3 && sw == 2)
            pool_max3s2_row(y, x, ld, n);
        else if (sw == 1) /* a constant stride: contiguous loads that vectorise */
            pool_max_row(y, x, ld, n, kh, kw, 1);
        else
            pool_max_row(y, x, ld, n, kh, kw, sw);
    } else {
        if (kh == 2 && kw == 2 && sw == 2)
            pool_avg2_row(y, x, ld, n, 2);
        else if (kh == 3 && kw == 3 && sw == 1)
            pool_avg3_row(y, x, ld, n, 1);
        else if (kh == 3 && kw == 3 && sw == 2)
            pool_avg3s2_row(y, x, ld, n);
        else if (sw == 1)
            pool_avg_row(y, x, ld, n, kh, kw, 1, (float)(kh * kw));
        else
            pool_avg_row(y, x, ld, n, kh, kw, sw, (float)(kh * kw));
    }
}

/* One border output (oh, ow) of a fast-path plane: pool_point for one depth and no dilation,
 * with the max written as in the fast rows, which gives the same result as its first-non-NaN
 * rule without Indices. */
static void pool_border_point(const pool_params *p, const float *x, float *y, int64_t oh,
                              int64_t ow)
{
    int64_t h0 = oh * p->stride[1] - p->pad[1], w0 = ow * p->stride[2] - p->pad[2];
    int64_t hl = p->lo[1][oh], hh = p->hi[1][oh], wl = p->lo[2][ow], wh = p->hi[2][ow];
    if (p->is_max) {
        float m = -INFINITY;
        for (int64_t th = hl; th < hh; th++) {
            int64_t row = (h0 + th) * p->in[2] + w0;
            for (int64_t tw = wl; tw < wh; tw++)
                m = pool_max_tap(m, x[row + tw]);
        }
        y[oh * p->out[2] + ow] = m;
    } else {
        float sum = 0.0f;
        for (int64_t th = hl; th < hh; th++) {
            int64_t row = (h0 + th) * p->in[2] + w0;
            for (int64_t tw = wl; tw < wh; tw++)
                sum += x[row + tw];
        }
        int64_t count;
        if (p->include_pad)
            count = p->cnt[0][0] * p->cnt[1][oh] * p->cnt[2][ow];
        else
            count = (p->hi[0][0] - p->lo[0][0]) * (hh - hl) * (wh - wl);
        y[oh * p->out[2] + ow] = sum / (float)count;
    }
}

/* The interior columns [OW0, OW0 + N) of a border row OH: their windows are cut by the top or
 * bottom edge only, so they run as rows of a shorter window (same taps, same order) and, for the
 * average, pool_point's divisor, which is the same for all of them. */
static void pool_clipped_row(const pool_params *p, float *restrict y, const float *restrict x,
                             int64_t oh, int64_t ow0, int64_t n)
{
    int64_t ld = p->in[2];
    int64_t hl = p->lo[1][oh], hh = p->hi[1][oh];
    int kh = (int)(hh - hl), kw = (int)p->kern[2], sw = (int)p->stride[2];
    const float *xr = x + (oh * p->stride[1] - p->pad[1] + hl) * ld + ow0 * sw - p->pad[2];
    if (p->is_max) {
        if (sw == 1)
            pool_max_row(y, xr, ld, n, kh, kw, 1);
        else
            pool_max_row(y, xr, ld, n, kh, kw, sw);
        return;
    }
    int64_t count = p->include_pad ? p->cnt[0][0] * p->cnt[1][oh] * kw
                                   : (p->hi[0][0] - p->lo[0][0]) * (hh - hl) * kw;
    if (sw == 1)
        pool_avg_row(y, xr, ld, n, kh, kw, 1, (float)count);
    else
        pool_avg_row(y, xr, ld, n, kh, kw, sw, (float)count);
}

/* One 2-D plane by the fast path: interior rows and columns (windows clear of padding and of
 * the input's edges) by pool_fast_row, the interior columns of the top and bottom rows by
 * pool_clipped_row, the rest of the border by pool_border_point. */
static void pool_fast_plane(const pool_params *p, const float *x, float *y)
{
    int64_t oh0 = p->inner_lo[1], oh1 = p->inner_hi[1];
    int64_t ow0 = p->inner_lo[2], ow1 = p->inner_hi[2];
    for (int64_t oh = 0; oh < p->out[1]; oh++) {
        int inner = oh >= oh0 && oh < oh1;
        if (ow0 >= ow1 || (!inner && p->hi[1][oh] <= p->lo[1][oh])) {
            for (int64_t ow = 0; ow < p->out[2]; ow++)
                pool_border_point(p, x, y, oh, ow);
            continue;
        }
        for (int64_t ow = 0; ow < ow0; ow++)
            pool_border_point(p, x, y, oh, ow);
        if (inner) {
            const float *xr = x + (oh * p->stride[1] - p->pad[1]) * p->in[2] +
                              (ow0 * p->stride[2] - p->pad[2]);
            pool_fast_row(p, y + oh * p->out[2] + ow0, xr, ow1 - ow0);
        } else {
            pool_clipped_row(p, y + oh * p->out[2] + ow0, x, oh, ow0, ow1 - ow0);
        }
        for (int64_t ow = ow1; ow < p->out[2]; ow++)
            pool_border_point(p, x, y, oh, ow);
    }
}

static void pool_task(void *arg, size_t q0, size_t q1)
{
    const pool_ctx *c = arg;
    const pool_params *p = c->p;
    int64_t in_plane = p->in[0] * p->in[1] * p->in[2];
    int64_t out_plane = p->out[0] * p->out[1] * p->out[2];
    for (size_t q = q0; q < q1; q++) {
        const float *x = c->x + (int64_t)q * in_plane;
        float *y = c->y + (int64_t)q * out_plane;
        if (p->fast) {
            pool_fast_plane(p, x, y);
            continue;
        }
        int64_t *yi = c->idx ? c->idx + (int64_t)q * out_plane : NULL;
        for (int64_t od = 0; od < p->out[0]; od++)
            for (int64_t oh = 0; oh < p->out[1]; oh++)
                for (int64_t ow = 0; ow < p->out[2]; ow++)
                    pool_point(p, x, y, yi, (int64_t)q * in_plane, od, oh, ow);
    }
}

static loom_status pool_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                            char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const pool_params *p = k->params;
    pool_ctx c = {.p = p, .x = args->inputs[0], .y = args->outputs[0],
                  .idx = p->has_indices ? args->outputs[1] : NULL};
    int64_t out_plane = p->out[0] * p->out[1] * p->out[2];
    if (p->planes == 0 || out_plane == 0)
        return LOOM_OK;
    /* Work per plane: outputs times the taps of an interior window. */
    double taps = 1.0;
    for (int d = 0; d < 3; d++)
        taps *= (double)(p->hi[d][0] - p->lo[d][0] + 1);
    double plane = (double)out_plane * taps;
    size_t grain = plane >= LK_CHUNK_MACS ? 1 : (size_t)(LK_CHUNK_MACS / plane) + 1;
    cpu_parallel_for(pool, (size_t)p->planes, grain, pool_task, &c);
    return LOOM_OK;
}

static loom_status pool_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    const loom_tensor_desc *x = &k->in[0], *y = &k->out[0];
    size_t s = x->rank - 2, off = 3 - s;
    int64_t ks[3], st[3], dl[3], pd[6];
    get_ints(node, "kernel_shape", s, ks);
    get_ints(node, "strides", s, st);
    get_ints(node, "dilations", s, dl);
    get_ints(node, "pads", 2 * s, pd);
    int64_t kern[3], pad_end[3];
    int64_t in[3], out[3], stride[3], dil[3], pad[3];
    for (size_t d = 0; d < 3; d++) {
        int spatial = d >= off;
        size_t sd = d - off;
        in[d] = spatial ? x->dims[2 + sd] : 1;
        out[d] = spatial ? y->dims[2 + sd] : 1;
        kern[d] = spatial ? ks[sd] : 1;
        stride[d] = spatial ? st[sd] : 1;
        dil[d] = spatial ? dl[sd] : 1;
        pad[d] = spatial ? pd[sd] : 0;
        pad_end[d] = spatial ? pd[s + sd] : 0;
    }
    size_t entries = 3 * (size_t)(out[0] + out[1] + out[2]);
    pool_params *p = calloc(1, sizeof *p + entries * sizeof(int64_t));
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    p->is_max = node->op == LOOM_OP_MAX_POOL;
    p->include_pad = !p->is_max && loom_node_attr_int(node, "count_include_pad", 0) != 0;
    p->has_indices = p->is_max && k->n_out == 2 && k->out[1].dtype == LOOM_DTYPE_I64;
    p->planes = x->dims[0] * x->dims[1];
    int64_t *t = p->table;
    for (size_t d = 0; d < 3; d++) {
        p->in[d] = in[d];
        p->out[d] = out[d];
        p->stride[d] = stride[d];
        p->dil[d] = dil[d];
        p->pad[d] = pad[d];
        p->kern[d] = kern[d];
        /* Interior: o * stride - pad >= 0 and o * stride - pad + (kern - 1) * dil < in. */
        int64_t hi = in[d] + pad[d] - (kern[d] - 1) * dil[d] - 1;
        hi = hi < 0 ? 0 : hi / stride[d] + 1;
        hi = hi < out[d] ? hi : out[d];
        int64_t lo = (pad[d] + stride[d] - 1) / stride[d];
        p->inner_lo[d] = lo < hi ? lo : hi;
        p->inner_hi[d] = hi;
        p->lo[d] = t;
        p->hi[d] = t + out[d];
        p->cnt[d] = t + 2 * out[d];
        t += 3 * out[d];
        for (int64_t o = 0; o < out[d]; o++) {
            int64_t start = o * stride[d] - pad[d];
            /* taps t with 0 <= start + t*dil < in */
            valid_range(start, dil[d], in[d], kern[d], &p->lo[d][o], &p->hi[d][o]);
            /* taps inside the padded input: start + t*dil < in + pad_end (start >= -pad) */
            int64_t lim = in[d] + pad_end[d] - start;
            int64_t c = lim <= 0 ? 0 : (lim - 1) / dil[d] + 1;
            p->cnt[d][o] = c < kern[d] ? c : kern[d];
        }
    }
    /* The fast rows take windows up to 16 x 16 with no dilation, in planes of one depth. */
    p->fast = !p->has_indices && in[0] == 1 && out[0] == 1 && kern[0] == 1 && dil[1] == 1 &&
              dil[2] == 1 && kern[1] <= 16 && kern[2] <= 16 && stride[2] <= 16;
    k->params = p;
    k->run = pool_run;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- GlobalAveragePool ------------------------------------------------------------------------- */

typedef struct gap_params {
    int64_t planes, size;
} gap_params;

static int gap_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs != 1 || node->n_outputs != 1) {
        cpu_reason(reason, len, "GlobalAveragePool takes 1 input and 1 output");
        return 0;
    }
    if (node->inputs[0].dtype != LOOM_DTYPE_F32 || node->outputs[0].dtype != LOOM_DTYPE_F32) {
        cpu_reason(reason, len, "GlobalAveragePool: only f32 is supported");
        return 0;
    }
    if (node->inputs[0].rank < 2) {
        cpu_reason(reason, len, "GlobalAveragePool: input rank %u < 2", node->inputs[0].rank);
        return 0;
    }
    return 1;
}

typedef struct gap_ctx {
    const gap_params *p;
    const float *x;
    float *y;
} gap_ctx;

static void gap_task(void *arg, size_t q0, size_t q1)
{
    const gap_ctx *c = arg;
    int64_t n = c->p->size;
    for (size_t q = q0; q < q1; q++) {
        const float *x = c->x + (int64_t)q * n;
        /* Double accumulators keep big planes accurate; four of them keep the adds pipelined. */
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            s0 += x[i];
            s1 += x[i + 1];
            s2 += x[i + 2];
            s3 += x[i + 3];
        }
        for (; i < n; i++)
            s0 += x[i];
        c->y[q] = (float)((s0 + s1 + s2 + s3) / (double)n);
    }
}

static loom_status gap_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const gap_params *p = k->params;
    gap_ctx c = {.p = p, .x = args->inputs[0], .y = args->outputs[0]};
    if (p->planes == 0)
        return LOOM_OK;
    double plane = (double)p->size + 1.0;
    size_t grain = plane >= LK_CHUNK_MACS ? 1 : (size_t)(LK_CHUNK_MACS / plane) + 1;
    cpu_parallel_for(pool, (size_t)p->planes, grain, gap_task, &c);
    return LOOM_OK;
}

static loom_status gap_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    gap_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    const loom_tensor_desc *x = &k->in[0];
    p->planes = x->dims[0] * x->dims[1];
    p->size = 1;
    for (uint32_t d = 2; d < x->rank; d++)
        p->size *= x->dims[d];
    k->params = p;
    k->run = gap_run;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- registration ------------------------------------------------------------------------------ */

void cpu_register_linalg(cpu_op_entry *table)
{
    table[LOOM_OP_MATMUL] = (cpu_op_entry){matmul_supports, matmul_prepare};
    table[LOOM_OP_GEMM] = (cpu_op_entry){gemm_supports, gemm_prepare};
    table[LOOM_OP_CONV] = (cpu_op_entry){conv_supports, conv_prepare};
    table[LOOM_OP_MAX_POOL] = (cpu_op_entry){pool_supports, pool_prepare};
    table[LOOM_OP_AVERAGE_POOL] = (cpu_op_entry){pool_supports, pool_prepare};
    table[LOOM_OP_GLOBAL_AVERAGE_POOL] = (cpu_op_entry){gap_supports, gap_prepare};
}
