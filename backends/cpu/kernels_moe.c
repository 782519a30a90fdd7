/*
 * MoE on the CPU, sparse: each expert's feed-forward runs on the tokens routed to it and on no
 * other; an expert that receives no token costs nothing. graph/ops_moe.c has the semantics
 * (ONNX Runtime's com.microsoft MoE, weights [num_experts, out, in]).
 *
 * The expert GEMMs have few rows (tokens * k / num_experts: 16 for 64 tokens, top-2 of 8), so a
 * BLAS that packs B on every call spends most of its time packing. Here the weights are packed
 * ONCE, at prepare when they are constants (else into scratch at run, only the experts that
 * have tokens), into panels of MOE_NR = 16 output columns: panel p of an expert holds, for each
 * input index k, the 16 weights of its columns contiguously (K x 16 floats). With fc3 (the gated
 * FFN) a panel holds 8 columns of fc1 and the same 8 columns of fc3, so one tile gives both
 * halves of the gate. A register-blocked micro-kernel reads a panel straight through: AVX-512
 * (up to 12 rows x 16 columns, one accumulator register per row), else AVX2 + FMA (up to 6 rows
 * x 16 columns, 12 accumulators), else portable C; chosen at prepare from the processor
 * (LOOM_CPU_NO_AVX512=1: at most AVX2; LOOM_CPU_NO_AVX2=1: portable). An expert's rows are cut
 * into tiles of nearly equal height (16 rows: 8 + 8 with AVX-512, 6 + 5 + 5 with AVX2), so no
 * tile is left with too few rows to hide the FMA latency.
 *
 * MoERoute and MoEExpert (a MoE that passes/split_moe_experts.c cut into placement units) run
 * the same phases, the router phase 1 and each expert phases 3 and 4 over its own tokens (at the
 * end of this file).
 *
 * One run, in phases, each over the pool:
 *   1. routing, per token: softmax of the router logits, the top k (ties: lower expert first),
 *      weights renormalised when asked; routes of weight 0 are dropped (as ONNX Runtime does);
 *   2. grouping (serial, O(tokens * k)): tokens per expert, their offsets, each route's row in
 *      the expert-ordered buffers (rows of one expert in token order), the experts with tokens;
 *   3. fc1 (+ fc3): one task per (expert with tokens, block of panels); the micro-kernel reads
 *      the token's input row in place (no gather), the epilogue adds the bias, applies the
 *      activation and the fc3 gate and stores the hidden row;
 *   4. fc2: the same over the hidden rows; the epilogue adds the bias and scales by the route's
 *      weight;
 *   5. combine, per token: the sum of its k rows, in routing order (deterministic, no atomics).
 * Tasks walk their panels panel-major: a panel (K x 16 floats) stays in cache while every row
 * block of the expert goes over it. Everything temporary lives in the scratch sized at
 * prepare (tokens * k rows at most); run() allocates nothing. The result does not depend on
 * the number of threads.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MOE_HAVE_X86 1
#endif

#define MOE_NR 16     /* columns of a packed panel (8 + 8 when gated) */
#define MOE_MR_MAX 12 /* rows of the tallest micro-kernel tile (AVX-512) */

enum { MOE_ISA_PORTABLE, MOE_ISA_AVX2, MOE_ISA_AVX512 };

enum { MOE_RELU, MOE_GELU, MOE_SILU, MOE_IDENTITY };

typedef struct moe_params {
    int64_t tokens, hidden, inter, experts, k;
    int64_t expert; /* MoEExpert: its routing column */
    int act;
    int normalize;
    int has_b1, has_b2, has_w3, has_b3;
    int isa;           /* MOE_ISA_*: which micro-kernel */
    int mr;            /* its tallest tile, in rows */
    int64_t half1;     /* fc1 columns per panel: 16, or 8 when gated (8 of fc1 + 8 of fc3) */
    int64_t np1, np2;  /* panels per expert of fc1 (over inter) and fc2 (over hidden) */
    float *pw1, *pw2;  /* packed at prepare (constants), or NULL: packed into scratch at run */
    /* scratch offsets, in bytes */
    size_t o_probs, o_rw, o_re, o_rpos, o_count, o_off, o_cur, o_rtok, o_roww, o_active, o_h,
        o_y, o_pw1, o_pw2;
} moe_params;

typedef struct moe_run {
    const moe_params *p;
    const float *x, *logits, *w1, *b1, *w2, *b2, *w3, *b3;
    float *y;
    float *probs, *rw, *roww, *h, *yb;
    const float *pw1, *pw2;
    float *pack1, *pack2; /* where run() packs non-constant weights (NULL when prepacked) */
    int32_t *re, *rpos, *count, *off, *cur, *rtok, *active;
    int64_t n_active;
    /* fc2 writes each row into its token's row of Y (one expert, MoEExpert) instead of into
     * the expert-ordered rows of YB (MoE, combined after). */
    int scatter;
    /* Panels per task of fc1 and fc2 and the tasks per expert: chosen per run from the threads
     * and the experts that received tokens. */
    int64_t pb1, nb1, pb2, nb2;
} moe_run;

static void moe_free(void *ptr)
{
    moe_params *p = ptr;
    if (!p)
        return;
    free(p->pw1);
    free(p->pw2);
    free(p);
}

/* Cut PANELS into blocks so that ACTIVE experts give about 8 tasks per thread (the pool hands
 * chunks out dynamically; experts differ in rows): one block per expert on one thread. Sets
 * *PB (panels per block) and *NB (blocks). */
static void moe_blocks(int64_t panels, int64_t active, unsigned threads, int64_t *pb, int64_t *nb)
{
    int64_t want = threads <= 1 || active <= 0 ? 1 : (8 * (int64_t)threads + active - 1) / active;
    if (want > panels)
        want = panels;
    if (want < 1)
        want = 1;
    *pb = (panels + want - 1) / want;
    if (*pb < 1)
        *pb = 1;
    *nb = (panels + *pb - 1) / *pb;
}

static size_t moe_align(size_t v)
{
    return (v + 63) & ~(size_t)63;
}

static int moe_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (cpu_present(node, i) && node->inputs[i].dtype != LOOM_DTYPE_F32)
            return cpu_no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
    const loom_tensor_desc *x = &node->inputs[0], *w1 = &node->inputs[2];
    if (!cpu_fits_int(x->dims[x->rank - 1]) || !cpu_fits_int(w1->dims[1]))
        return cpu_reason(reason, len, "MoE: hidden or inter size beyond what the kernel indexes");
    return 1;
}

/* ---- packing ------------------------------------------------------------------------------ */

/* Panels [p0, p1) of one expert's weights WA [N, K] (and WB [N, K], the gate, or NULL) into
 * DST (that expert's panels): panel p, input index k, lane j holds column p * half + j of WA
 * (j < half) or of WB (j >= half), half = 8 with WB, else 16; zero past N. */
static void moe_pack(float *dst, const float *wa, const float *wb, int64_t n, int64_t kdim,
                     int64_t p0, int64_t p1)
{
    const int64_t half = wb ? MOE_NR / 2 : MOE_NR;
    for (int64_t p = p0; p < p1; p++) {
        float *panel = dst + p * kdim * MOE_NR;
        for (int64_t j = 0; j < MOE_NR; j++) {
            const float *w = j < half ? wa : wb;
            const int64_t col = p * half + (j < half ? j : j - half);
            if (col >= n) {
                for (int64_t kk = 0; kk < kdim; kk++)
                    panel[kk * MOE_NR + j] = 0.0f;
                continue;
            }
            const float *src = w + col * kdim;
            for (int64_t kk = 0; kk < kdim; kk++)
                panel[kk * MOE_NR + j] = src[kk];
        }
    }
}

/* ---- micro-kernels: C[rows][16] = sum_k A_r[k] * B[k][0..16) ------------------------------ */

/* Portable: any compiler, any machine; the inner loop over 16 lanes vectorises. */
static void mk_portable(int rows, const float *const *a, const float *restrict b, int64_t kdim,
                        float *restrict c)
{
    float acc[MOE_MR_MAX][MOE_NR];
    memset(acc, 0, sizeof acc);
    for (int64_t kk = 0; kk < kdim; kk++) {
        const float *bk = b + kk * MOE_NR;
        for (int r = 0; r < rows; r++) {
            const float av = a[r][kk];
            for (int j = 0; j < MOE_NR; j++)
                acc[r][j] += av * bk[j];
        }
    }
    memcpy(c, acc, (size_t)rows * MOE_NR * sizeof(float));
}

#ifdef MOE_HAVE_X86
/* AVX2 + FMA, R (1..6, a constant where inlined) rows x 16 columns: 12 accumulators spelled
 * out so that they stay in registers; per k two loads of B, R broadcasts of A, 2R FMAs. */
#define MOE_ROW(i)                                                                               \
    if (R > i) {                                                                                 \
        const __m256 av = _mm256_broadcast_ss(a##i + kk);                                        \
        c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);                                              \
        c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);                                              \
    }
#define MOE_STORE(i)                                                                             \
    if (R > i) {                                                                                 \
        _mm256_storeu_ps(c + i * MOE_NR, c##i##0);                                               \
        _mm256_storeu_ps(c + i * MOE_NR + 8, c##i##1);                                           \
    }
__attribute__((target("avx2,fma"), always_inline)) static inline void
mk_avx2_rows(const int R, const float *const *a, const float *b, int64_t kdim, float *c)
{
    const float *a0 = a[0], *a1 = R > 1 ? a[1] : a0, *a2 = R > 2 ? a[2] : a0;
    const float *a3 = R > 3 ? a[3] : a0, *a4 = R > 4 ? a[4] : a0, *a5 = R > 5 ? a[5] : a0;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t kk = 0; kk < kdim; kk++, b += MOE_NR) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        MOE_ROW(0)
        MOE_ROW(1)
        MOE_ROW(2)
        MOE_ROW(3)
        MOE_ROW(4)
        MOE_ROW(5)
    }
    MOE_STORE(0)
    MOE_STORE(1)
    MOE_STORE(2)
    MOE_STORE(3)
    MOE_STORE(4)
    MOE_STORE(5)
}
#undef MOE_ROW
#undef MOE_STORE

__attribute__((target("avx2,fma"))) static void
mk_avx2(int rows, const float *const *a, const float *b, int64_t kdim, float *c)
{
    switch (rows) {
    case 1:
        mk_avx2_rows(1, a, b, kdim, c);
        break;
    case 2:
        mk_avx2_rows(2, a, b, kdim, c);
        break;
    case 3:
        mk_avx2_rows(3, a, b, kdim, c);
        break;
    case 4:
        mk_avx2_rows(4, a, b, kdim, c);
        break;
    case 5:
        mk_avx2_rows(5, a, b, kdim, c);
        break;
    default:
        mk_avx2_rows(6, a, b, kdim, c);
        break;
    }
}

/* AVX-512, R (1..12) rows x 16 columns: one accumulator per row, B's 16 lanes loaded once per
 * k, A broadcast from memory straight into the FMA. */
#define MOE_ROW(i)                                                                               \
    if (R > i)                                                                                   \
        c##i = _mm512_fmadd_ps(_mm512_set1_ps(a[i][kk]), bv, c##i);
#define MOE_STORE(i)                                                                             \
    if (R > i)                                                                                   \
        _mm512_storeu_ps(c + i * MOE_NR, c##i);
__attribute__((target("avx512f"), always_inline)) static inline void
mk_avx512_rows(const int R, const float *const *a, const float *b, int64_t kdim, float *c)
{
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
    __m512 c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
    for (int64_t kk = 0; kk < kdim; kk++, b += MOE_NR) {
        const __m512 bv = _mm512_loadu_ps(b);
        MOE_ROW(0)
        MOE_ROW(1)
        MOE_ROW(2)
        MOE_ROW(3)
        MOE_ROW(4)
        MOE_ROW(5)
        MOE_ROW(6)
        MOE_ROW(7)
        MOE_ROW(8)
        MOE_ROW(9)
        MOE_ROW(10)
        MOE_ROW(11)
    }
    MOE_STORE(0)
    MOE_STORE(1)
    MOE_STORE(2)
    MOE_STORE(3)
    MOE_STORE(4)
    MOE_STORE(5)
    MOE_STORE(6)
    MOE_STORE(7)
    MOE_STORE(8)
    MOE_STORE(9)
    MOE_STORE(10)
    MOE_STORE(11)
}
#undef MOE_ROW
#undef MOE_STORE

__attribute__((target("avx512f"))) static void
mk_avx512(int rows, const float *const *a, const float *b, int64_t kdim, float *c)
{
    switch (rows) {
#define MOE_CASE(n)                                                                              \
    case n:                                                                                      \
        mk_avx512_rows(n, a, b, kdim, c);                                                        \
        break;
        MOE_CASE(1)
        MOE_CASE(2)
        MOE_CASE(3)
        MOE_CASE(4)
        MOE_CASE(5)
        MOE_CASE(6)
        MOE_CASE(7)
        MOE_CASE(8)
        MOE_CASE(9)
        MOE_CASE(10)
        MOE_CASE(11)
#undef MOE_CASE
    default:
        mk_avx512_rows(12, a, b, kdim, c);
        break;
    }
}
#endif

static inline void moe_tile(const moe_params *p, int rows, const float *const *a, const float *b,
                            int64_t kdim, float *c)
{
#ifdef MOE_HAVE_X86
    if (p->isa == MOE_ISA_AVX512) {
        mk_avx512(rows, a, b, kdim, c);
        return;
    }
    if (p->isa == MOE_ISA_AVX2) {
        mk_avx2(rows, a, b, kdim, c);
        return;
    }
#endif
    mk_portable(rows, a, b, kdim, c);
}

/* Row tile T of ROWS cut into tiles of at most MR rows of nearly equal height: its first row
 * (*I0) and height (returned). */
static inline int moe_row_tile(int64_t rows, int mr, int64_t t, int64_t *i0)
{
    const int64_t n = (rows + mr - 1) / mr, base = rows / n, extra = rows % n;
    *i0 = t * base + (t < extra ? t : extra);
    return (int)(base + (t < extra));
}

/* ---- 1. routing --------------------------------------------------------------------------- */

static void route_tokens(void *arg, size_t b, size_t e)
{
    const moe_run *r = arg;
    const moe_params *p = r->p;
    const int64_t n_exp = p->experts, k = p->k;
    for (size_t t = b; t < e; t++) {
        const float *l = r->logits + (int64_t)t * n_exp;
        float *pr = r->probs + (int64_t)t * n_exp;
        float mx = cpu_max_f32(l, (size_t)n_exp), sum = 0.0f;
        for (int64_t j = 0; j < n_exp; j++) {
            pr[j] = expf(l[j] - mx);
            sum += pr[j];
        }
        for (int64_t j = 0; j < n_exp; j++)
            pr[j] /= sum;
        /* Top k by repeated selection: k passes over the experts. A chosen expert is marked
         * with -1 (probabilities are >= 0), so it is never chosen twice. */
        float *w = r->rw + (int64_t)t * k;
        int32_t *ex = r->re + (int64_t)t * k;
        float wsum = 0.0f;
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t c = 0; c < n_exp; c++)
                if (pr[c] != -1.0f && (best < 0 || pr[c] > pr[best]))
                    best = c;
            ex[j] = (int32_t)best;
            w[j] = pr[best];
            wsum += w[j];
            pr[best] = -1.0f;
        }
        if (p->normalize && wsum > 0.0f)
            for (int64_t j = 0; j < k; j++)
                w[j] /= wsum;
    }
}

/* ---- packing at run (weights that are not constants) -------------------------------------- */

static void pack_tasks(void *arg, size_t b, size_t e)
{
    const moe_run *r = arg;
    const moe_params *p = r->p;
    const int64_t H = p->hidden, I = p->inter;
    for (size_t task = b; task < e; task++) {
        const int64_t ex = r->active[(int64_t)task / 2];
        if (task % 2 == 0)
            moe_pack(r->pack1 + ex * p->np1 * H * MOE_NR, r->w1 + ex * I * H,
                     p->has_w3 ? r->w3 + ex * I * H : NULL, I, H, 0, p->np1);
        else
            moe_pack(r->pack2 + ex * p->np2 * I * MOE_NR, r->w2 + ex * H * I, NULL, H, I, 0,
                     p->np2);
    }
}

/* ---- activations -------------------------------------------------------------------------- */

static inline float moe_act(int act, float v)
{
    switch (act) {
    case MOE_RELU:
        return v > 0.0f ? v : 0.0f;
    case MOE_GELU: /* tanh approximation, as ONNX Runtime's MoE */
        return 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
    case MOE_SILU:
        return v / (1.0f + expf(-v));
    default:
        return v;
    }
}

/* The activation over N values in place: one loop per kind, so that each vectorises. */
static void moe_act_row(int act, float *restrict v, int64_t n)
{
    switch (act) {
    case MOE_RELU:
        for (int64_t c = 0; c < n; c++)
            v[c] = v[c] > 0.0f ? v[c] : 0.0f;
        break;
    case MOE_GELU:
    case MOE_SILU:
        for (int64_t c = 0; c < n; c++)
            v[c] = moe_act(act, v[c]);
        break;
    default:
        break;
    }
}

/* ---- 3. fc1 (+ fc3), bias, activation, gate ----------------------------------------------- */

static void fc1_tasks(void *arg, size_t b, size_t e)
{
    const moe_run *r = arg;
    const moe_params *p = r->p;
    const int64_t H = p->hidden, I = p->inter, half = p->half1;
    float tile[MOE_MR_MAX * MOE_NR];
    const float *a[MOE_MR_MAX];
    for (size_t task = b; task < e; task++) {
        const int64_t ex = r->active[(int64_t)task / r->nb1], blk = (int64_t)task % r->nb1;
        const int64_t r0 = r->off[ex], rows = r->count[ex], tiles = (rows + p->mr - 1) / p->mr;
        const int64_t pe = (blk + 1) * r->pb1 < p->np1 ? (blk + 1) * r->pb1 : p->np1;
        const float *pw = r->pw1 + ex * p->np1 * H * MOE_NR;
        for (int64_t pn = blk * r->pb1; pn < pe; pn++) {
            const int64_t c0 = pn * half, cols = I - c0 < half ? I - c0 : half;
            const float *b1 = p->has_b1 ? r->b1 + ex * I + c0 : NULL;
            const float *b3 = p->has_b3 ? r->b3 + ex * I + c0 : NULL;
            for (int64_t rt = 0, i0; rt < tiles; rt++) {
                const int n = moe_row_tile(rows, p->mr, rt, &i0);
                for (int i = 0; i < n; i++)
                    a[i] = r->x + (int64_t)r->rtok[r0 + i0 + i] * H;
                moe_tile(p, n, a, pw + pn * H * MOE_NR, H, tile);
                for (int i = 0; i < n; i++) {
                    float *t = tile + i * MOE_NR;
                    if (b1)
                        for (int64_t c = 0; c < cols; c++)
                            t[c] += b1[c];
                    moe_act_row(p->act, t, cols);
                    float *dst = r->h + (r0 + i0 + i) * I + c0;
                    if (p->has_w3) {
                        const float *g = t + half;
                        if (b3)
                            for (int64_t c = 0; c < cols; c++)
                                dst[c] = t[c] * (g[c] + b3[c]);
                        else
                            for (int64_t c = 0; c < cols; c++)
                                dst[c] = t[c] * g[c];
                    } else {
                        memcpy(dst, t, (size_t)cols * sizeof(float));
                    }
                }
            }
        }
    }
}

/* ---- 4. fc2, bias, routing weight --------------------------------------------------------- */

static void fc2_tasks(void *arg, size_t b, size_t e)
{
    const moe_run *r = arg;
    const moe_params *p = r->p;
    const int64_t H = p->hidden, I = p->inter;
    float tile[MOE_MR_MAX * MOE_NR];
    const float *a[MOE_MR_MAX];
    for (size_t task = b; task < e; task++) {
        const int64_t ex = r->active[(int64_t)task / r->nb2], blk = (int64_t)task % r->nb2;
        const int64_t r0 = r->off[ex], rows = r->count[ex], tiles = (rows + p->mr - 1) / p->mr;
        const int64_t pe = (blk + 1) * r->pb2 < p->np2 ? (blk + 1) * r->pb2 : p->np2;
        const float *pw = r->pw2 + ex * p->np2 * I * MOE_NR;
        for (int64_t pn = blk * r->pb2; pn < pe; pn++) {
            const int64_t c0 = pn * MOE_NR, cols = H - c0 < MOE_NR ? H - c0 : MOE_NR;
            const float *b2 = p->has_b2 ? r->b2 + ex * H + c0 : NULL;
            for (int64_t rt = 0, i0; rt < tiles; rt++) {
                const int n = moe_row_tile(rows, p->mr, rt, &i0);
                for (int i = 0; i < n; i++)
                    a[i] = r->h + (r0 + i0 + i) * I;
                moe_tile(p, n, a, pw + pn * I * MOE_NR, I, tile);
                for (int i = 0; i < n; i++) {
                    const float *t = tile + i * MOE_NR, w = r->roww[r0 + i0 + i];
                    float *dst = r->scatter ? r->y + (int64_t)r->rtok[r0 + i0 + i] * H + c0
                                            : r->yb + (r0 + i0 + i) * H + c0;
                    if (b2)
                        for (int64_t c = 0; c < cols; c++)
                            dst[c] = w * (t[c] + b2[c]);
                    else
                        for (int64_t c = 0; c < cols; c++)
                            dst[c] = w * t[c];
                }
            }
        }
    }
}

/* ---- 5. combine --------------------------------------------------------------------------- */

static void combine_tokens(void *arg, size_t b, size_t e)
{
    const moe_run *r = arg;
    const int64_t H = r->p->hidden, k = r->p->k;
    for (size_t t = b; t < e; t++) {
        float *y = r->y + (int64_t)t * H;
        memset(y, 0, (size_t)H * sizeof(float));
        for (int64_t j = 0; j < k; j++) {
            int32_t pos = r->rpos[(int64_t)t * k + j];
            if (pos < 0)
                continue;
            const float *src = r->yb + (int64_t)pos * H;
            for (int64_t c = 0; c < H; c++)
                y[c] += src[c];
        }
    }
}

/* The run state both kernels share: the input, weight and output pointers of ARGS (inputs as
 * MoE orders them: x, logits, fc1 w/b, fc2 w/b, fc3 w/b) and the scratch arrays of the expert
 * passes; the rest zeroed. */
static void moe_run_init(moe_run *r, const moe_params *p, const loom_exec_args *args)
{
    char *s = args->scratch;
    *r = (moe_run){
        .p = p,
        .x = args->inputs[0],
        .w1 = args->inputs[2],
        .b1 = p->has_b1 ? args->inputs[3] : NULL,
        .w2 = args->inputs[4],
        .b2 = p->has_b2 ? args->inputs[5] : NULL,
        .w3 = p->has_w3 ? args->inputs[6] : NULL,
        .b3 = p->has_b3 ? args->inputs[7] : NULL,
        .y = args->outputs[0],
        .roww = (float *)(s + p->o_roww),
        .h = (float *)(s + p->o_h),
        .count = (int32_t *)(s + p->o_count),
        .off = (int32_t *)(s + p->o_off),
        .rtok = (int32_t *)(s + p->o_rtok),
        .active = (int32_t *)(s + p->o_active),
        .pack1 = p->pw1 ? NULL : (float *)(s + p->o_pw1),
        .pack2 = p->pw2 ? NULL : (float *)(s + p->o_pw2),
    };
    r->pw1 = p->pw1 ? p->pw1 : r->pack1;
    r->pw2 = p->pw2 ? p->pw2 : r->pack2;
}

static loom_status moe_run_fn(const cpu_kernel *kern, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const moe_params *p = kern->params;
    if (p->tokens == 0 || p->hidden == 0)
        return LOOM_OK;
    char *s = args->scratch;
    moe_run r;
    moe_run_init(&r, p, args);
    r.logits = args->inputs[1];
    r.probs = (float *)(s + p->o_probs);
    r.rw = (float *)(s + p->o_rw);
    r.re = (int32_t *)(s + p->o_re);
    r.rpos = (int32_t *)(s + p->o_rpos);
    r.cur = (int32_t *)(s + p->o_cur);
    r.yb = (float *)(s + p->o_y);
    const int64_t T = p->tokens, k = p->k, E = p->experts;
    cpu_parallel_for(pool, (size_t)T, cpu_grain(E * 8 + k * E), route_tokens, &r);

    /* 2. grouping: counts, offsets, then each route's row (token order within an expert). */
    memset(r.count, 0, (size_t)E * sizeof *r.count);
    for (int64_t i = 0; i < T * k; i++)
        if (r.rw[i] > 0.0f)
            r.count[r.re[i]]++;
    int32_t rows = 0;
    for (int64_t e = 0; e < E; e++) {
        r.off[e] = rows;
        r.cur[e] = rows;
        rows += r.count[e];
        if (r.count[e] > 0)
            r.active[r.n_active++] = (int32_t)e;
    }
    r.off[E] = rows;
    for (int64_t i = 0; i < T * k; i++) {
        if (!(r.rw[i] > 0.0f)) {
            r.rpos[i] = -1;
            continue;
        }
        int32_t pos = r.cur[r.re[i]]++;
        r.rpos[i] = pos;
        r.rtok[pos] = (int32_t)(i / k);
        r.roww[pos] = r.rw[i];
    }

    if (r.n_active > 0) {
        if (r.pack1) /* weights that are not constants: pack the experts that have tokens */
            cpu_parallel_for(pool, (size_t)(2 * r.n_active), 1, pack_tasks, &r);
        const unsigned threads = cpu_pool_threads(pool);
        moe_blocks(p->np1, r.n_active, threads, &r.pb1, &r.nb1);
        moe_blocks(p->np2, r.n_active, threads, &r.pb2, &r.nb2);
        cpu_parallel_for(pool, (size_t)(r.n_active * r.nb1), 1, fc1_tasks, &r);
        cpu_parallel_for(pool, (size_t)(r.n_active * r.nb2), 1, fc2_tasks, &r);
    }
    cpu_parallel_for(pool, (size_t)T, cpu_grain(k * p->hidden), combine_tokens, &r);
    return LOOM_OK;
}

static int moe_env_off(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

/* The widest micro-kernel the processor runs: AVX-512, AVX2 + FMA, portable.
 * LOOM_CPU_NO_AVX512=1 stops at AVX2, LOOM_CPU_NO_AVX2=1 at the portable one (the tests run
 * each path that way). */
static int moe_pick_isa(void)
{
    if (moe_env_off("LOOM_CPU_NO_AVX2"))
        return MOE_ISA_PORTABLE;
#ifdef MOE_HAVE_X86
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return MOE_ISA_PORTABLE;
    if (!moe_env_off("LOOM_CPU_NO_AVX512") && __builtin_cpu_supports("avx512f"))
        return MOE_ISA_AVX512;
    return MOE_ISA_AVX2;
#else
    return MOE_ISA_PORTABLE;
#endif
}

/* What MoE and MoEExpert derive alike from NODE once P's sizes (inter, hidden) are set: the
 * activation, which optional inputs are present, the micro-kernel and the weight panels. */
static void moe_params_layout(moe_params *p, const loom_node_desc *node)
{
    const char *act = cpu_str_attr(node, "activation_type", "relu");
    p->act = strcmp(act, "gelu") == 0       ? MOE_GELU
             : strcmp(act, "silu") == 0     ? MOE_SILU
             : strcmp(act, "identity") == 0 ? MOE_IDENTITY
                                            : MOE_RELU;
    p->has_b1 = cpu_present(node, 3);
    p->has_b2 = cpu_present(node, 5);
    p->has_w3 = cpu_present(node, 6);
    p->has_b3 = cpu_present(node, 7);
    p->isa = moe_pick_isa();
    p->mr = p->isa == MOE_ISA_AVX512 ? 12 : p->isa == MOE_ISA_AVX2 ? 6 : 4;
    p->half1 = p->has_w3 ? MOE_NR / 2 : MOE_NR;
    p->np1 = (p->inter + p->half1 - 1) / p->half1;
    p->np2 = (p->hidden + MOE_NR - 1) / MOE_NR;
}

static loom_status moe_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    moe_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0], *r = &node->inputs[1], *w1 = &node->inputs[2];
    p->hidden = x->dims[x->rank - 1];
    p->tokens = r->dims[0];
    p->experts = r->dims[1];
    p->inter = w1->dims[1];
    p->k = 1;
    p->act = MOE_RELU;
    for (uint32_t a = 0; a < node->n_attrs; a++) {
        const loom_attr *at = &node->attrs[a];
        if (strcmp(at->name, "k") == 0)
            p->k = at->i;
        else if (strcmp(at->name, "normalize_routing_weights") == 0)
            p->normalize = at->i != 0;
    }
    moe_params_layout(p, node);
    if (p->tokens > INT32_MAX / (p->k ? p->k : 1)) {
        long long t = (long long)p->tokens, kk = (long long)p->k;
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "MoE: %lld tokens x k = %lld routes "
                        "is more than the kernel indexes", t, kk);
    }
    const size_t T = (size_t)p->tokens, K = (size_t)p->k, E = (size_t)p->experts;
    const size_t R = T * K, H = (size_t)p->hidden, I = (size_t)p->inter;
    /* Packed weights, per expert: np1 panels of H x 16 and np2 panels of I x 16 floats. */
    const size_t pack1 = E * (size_t)p->np1 * H * MOE_NR * sizeof(float);
    const size_t pack2 = E * (size_t)p->np2 * I * MOE_NR * sizeof(float);
    if ((double)R * (double)(E + 2 * H + I + 8) * sizeof(float) +
            2.0 * ((double)pack1 + (double)pack2) > (double)((size_t)1 << 46)) {
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "MoE: scratch for %zu routes of "
                        "%zu x %zu is beyond what the kernel allocates", R, H, I);
    }
    const void *const *c = node->input_constants;
    const int constant = c && c[2] && c[4] && (!p->has_w3 || c[6]);
    if (constant && E > 0) {
        /* Pack once: run() reads these panels directly. */
        p->pw1 = aligned_alloc(64, moe_align(pack1) + 64); /* never 0 bytes */
        p->pw2 = aligned_alloc(64, moe_align(pack2) + 64);
        if (!p->pw1 || !p->pw2) {
            moe_free(p);
            return cpu_oom(node, err, err_len);
        }
        const float *w1c = c[2], *w2c = c[4], *w3c = p->has_w3 ? c[6] : NULL;
        for (size_t e = 0; e < E; e++) {
            moe_pack(p->pw1 + e * (size_t)p->np1 * H * MOE_NR, w1c + e * I * H,
                     w3c ? w3c + e * I * H : NULL, (int64_t)I, (int64_t)H, 0, p->np1);
            moe_pack(p->pw2 + e * (size_t)p->np2 * I * MOE_NR, w2c + e * H * I, NULL,
                     (int64_t)H, (int64_t)I, 0, p->np2);
        }
    }
    size_t at = 0;
#define MOE_AREA(field, bytes)                                                                   \
    do {                                                                                         \
        p->field = at;                                                                           \
        at += moe_align(bytes);                                                                  \
    } while (0)
    MOE_AREA(o_probs, T * E * sizeof(float));
    MOE_AREA(o_rw, R * sizeof(float));
    MOE_AREA(o_re, R * sizeof(int32_t));
    MOE_AREA(o_rpos, R * sizeof(int32_t));
    MOE_AREA(o_count, E * sizeof(int32_t));
    MOE_AREA(o_off, (E + 1) * sizeof(int32_t));
    MOE_AREA(o_cur, E * sizeof(int32_t));
    MOE_AREA(o_rtok, R * sizeof(int32_t));
    MOE_AREA(o_roww, R * sizeof(float));
    MOE_AREA(o_active, E * sizeof(int32_t));
    MOE_AREA(o_h, R * I * sizeof(float));
    MOE_AREA(o_y, R * H * sizeof(float));
    MOE_AREA(o_pw1, p->pw1 ? 0 : pack1);
    MOE_AREA(o_pw2, p->pw2 ? 0 : pack2);
#undef MOE_AREA
    k->run = moe_run_fn;
    k->params = p;
    k->free_params = moe_free;
    k->scratch_bytes = at;
    return LOOM_OK;
}

/* ---- MoERoute and MoEExpert: a MoE split into placement units ------------------------------
 *
 * The router runs phase 1 above (the same softmax, selection and renormalisation, so the split
 * routes exactly as the fused kernel) and writes each token's weights into its row of the dense
 * [tokens, num_experts] routing tensor. An expert reads its column: the tokens of weight > 0, in
 * token order, are its rows; phases 3 and 4 run over them with the same packed panels and
 * micro-kernels (one expert: index 0 of the packed weights), fc2 writing each weighted row
 * straight into its token's row of Y; the rows of the other tokens are zero. */

static loom_status route_run_fn(const cpu_kernel *kern, const loom_exec_args *args,
                                cpu_pool *pool, char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const moe_params *p = kern->params;
    const int64_t T = p->tokens, E = p->experts, k = p->k;
    float *out = args->outputs[0];
    if (T == 0)
        return LOOM_OK;
    char *s = args->scratch;
    moe_run r = {.p = p,
                 .logits = args->inputs[0],
                 .probs = (float *)(s + p->o_probs),
                 .rw = (float *)(s + p->o_rw),
                 .re = (int32_t *)(s + p->o_re)};
    cpu_parallel_for(pool, (size_t)T, cpu_grain(E * 8 + k * E), route_tokens, &r);
    memset(out, 0, (size_t)(T * E) * sizeof(float));
    for (int64_t i = 0; i < T * k; i++)
        if (r.rw[i] > 0.0f)
            out[(i / k) * E + r.re[i]] = r.rw[i];
    return LOOM_OK;
}

static int route_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->inputs[0].dtype != LOOM_DTYPE_F32)
        return cpu_no_dtype(node, node->inputs[0].dtype, "float32", reason, len);
    return 1;
}

static loom_status route_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                 size_t err_len)
{
    moe_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    p->tokens = node->inputs[0].dims[0];
    p->experts = node->inputs[0].dims[1];
    p->k = 1;
    for (uint32_t a = 0; a < node->n_attrs; a++) {
        if (strcmp(node->attrs[a].name, "k") == 0)
            p->k = node->attrs[a].i;
        else if (strcmp(node->attrs[a].name, "normalize_routing_weights") == 0)
            p->normalize = node->attrs[a].i != 0;
    }
    const size_t T = (size_t)p->tokens, E = (size_t)p->experts, R = T * (size_t)p->k;
    if ((double)T * (double)E > (double)INT32_MAX) {
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "MoERoute: %zu tokens x %zu experts "
                        "is more than the kernel indexes", T, E);
    }
    p->o_probs = 0;
    p->o_rw = moe_align(T * E * sizeof(float));
    p->o_re = p->o_rw + moe_align(R * sizeof(float));
    k->run = route_run_fn;
    k->params = p;
    k->free_params = moe_free;
    k->scratch_bytes = p->o_re + moe_align(R * sizeof(int32_t));
    return LOOM_OK;
}

static loom_status expert_run_fn(const cpu_kernel *kern, const loom_exec_args *args,
                                 cpu_pool *pool, char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const moe_params *p = kern->params;
    const int64_t T = p->tokens, E = p->experts, H = p->hidden;
    if (T == 0 || H == 0)
        return LOOM_OK;
    moe_run r;
    moe_run_init(&r, p, args);
    r.scatter = 1;
    /* This expert's rows: the tokens whose routing weight in its column is > 0, in order. */
    const float *routing = args->inputs[1];
    int32_t rows = 0;
    for (int64_t t = 0; t < T; t++) {
        const float w = routing[t * E + p->expert];
        if (w > 0.0f) {
            r.rtok[rows] = (int32_t)t;
            r.roww[rows++] = w;
        }
    }
    memset(r.y, 0, (size_t)(T * H) * sizeof(float));
    if (rows == 0)
        return LOOM_OK;
    r.count[0] = rows;
    r.off[0] = 0;
    r.off[1] = rows;
    r.active[0] = 0;
    r.n_active = 1;
    if (r.pack1)
        cpu_parallel_for(pool, 2, 1, pack_tasks, &r);
    const unsigned threads = cpu_pool_threads(pool);
    moe_blocks(p->np1, 1, threads, &r.pb1, &r.nb1);
    moe_blocks(p->np2, 1, threads, &r.pb2, &r.nb2);
    cpu_parallel_for(pool, (size_t)r.nb1, 1, fc1_tasks, &r);
    cpu_parallel_for(pool, (size_t)r.nb2, 1, fc2_tasks, &r);
    return LOOM_OK;
}

static int expert_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (cpu_present(node, i) && node->inputs[i].dtype != LOOM_DTYPE_F32)
            return cpu_no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
    const loom_tensor_desc *x = &node->inputs[0], *w1 = &node->inputs[2];
    if (!cpu_fits_int(x->dims[x->rank - 1]) || !cpu_fits_int(w1->dims[0]) ||
        !cpu_fits_int(node->inputs[1].dims[0]))
        return cpu_reason(reason, len, "MoEExpert: tokens, hidden or inter size beyond what the "
                          "kernel indexes");
    return 1;
}

static loom_status expert_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                  size_t err_len)
{
    moe_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0], *r = &node->inputs[1], *w1 = &node->inputs[2];
    p->hidden = x->dims[x->rank - 1];
    p->tokens = r->dims[0];
    p->experts = r->dims[1];
    p->inter = w1->dims[0];
    p->k = 1;
    for (uint32_t a = 0; a < node->n_attrs; a++)
        if (strcmp(node->attrs[a].name, "expert") == 0)
            p->expert = node->attrs[a].i;
    moe_params_layout(p, node);
    const size_t T = (size_t)p->tokens, H = (size_t)p->hidden, I = (size_t)p->inter;
    const size_t pack1 = (size_t)p->np1 * H * MOE_NR * sizeof(float);
    const size_t pack2 = (size_t)p->np2 * I * MOE_NR * sizeof(float);
    if ((double)T * (double)(I + 4) * sizeof(float) + 2.0 * ((double)pack1 + (double)pack2) >
        (double)((size_t)1 << 46)) {
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "MoEExpert: scratch for %zu tokens "
                        "of %zu x %zu is beyond what the kernel allocates", T, H, I);
    }
    const void *const *c = node->input_constants;
    if (c && c[2] && c[4] && (!p->has_w3 || c[6])) {
        p->pw1 = aligned_alloc(64, moe_align(pack1) + 64);
        p->pw2 = aligned_alloc(64, moe_align(pack2) + 64);
        if (!p->pw1 || !p->pw2) {
            moe_free(p);
            return cpu_oom(node, err, err_len);
        }
        moe_pack(p->pw1, c[2], p->has_w3 ? c[6] : NULL, (int64_t)I, (int64_t)H, 0, p->np1);
        moe_pack(p->pw2, c[4], NULL, (int64_t)H, (int64_t)I, 0, p->np2);
    }
    size_t at = 0;
#define MOE_AREA(field, bytes)                                                                   \
    do {                                                                                         \
        p->field = at;                                                                           \
        at += moe_align(bytes);                                                                  \
    } while (0)
    MOE_AREA(o_rtok, T * sizeof(int32_t));
    MOE_AREA(o_roww, T * sizeof(float));
    MOE_AREA(o_count, sizeof(int32_t));
    MOE_AREA(o_off, 2 * sizeof(int32_t));
    MOE_AREA(o_active, sizeof(int32_t));
    MOE_AREA(o_h, T * I * sizeof(float));
    MOE_AREA(o_pw1, p->pw1 ? 0 : pack1);
    MOE_AREA(o_pw2, p->pw2 ? 0 : pack2);
#undef MOE_AREA
    k->run = expert_run_fn;
    k->params = p;
    k->free_params = moe_free;
    k->scratch_bytes = at;
    return LOOM_OK;
}

void cpu_register_moe(cpu_op_entry *table)
{
    table[LOOM_OP_MOE].supports = moe_supports;
    table[LOOM_OP_MOE].prepare = moe_prepare;
    table[LOOM_OP_MOE_ROUTE].supports = route_supports;
    table[LOOM_OP_MOE_ROUTE].prepare = route_prepare;
    table[LOOM_OP_MOE_EXPERT].supports = expert_supports;
    table[LOOM_OP_MOE_EXPERT].prepare = expert_prepare;
}
