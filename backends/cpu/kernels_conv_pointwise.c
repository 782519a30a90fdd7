/*
 * Pointwise (1x1, stride 1, unpadded) convolution as a register-tiled GEMM on the NCHW input,
 * AVX2 + FMA: Y[n][oc][p] = act(sum_c W[oc][c] * X[n][c][p] + bias[oc] + Z[n][oc][p]).
 *
 * MobileNet-style 1x1 convs reduce over few channels (K = 16 to 96 for the expansions) on small
 * planes (49 to 3136 pixels): shapes where a BLAS call spends much of its time packing. Here
 * there is no packing: a tile of 6 output channels x 16 pixels keeps 12 accumulators; per input
 * channel it loads 16 pixels of that channel's plane (two vectors, read in place) and broadcasts
 * the 6 weights, 12 FMAs per 8 loads. A task sweeps a group of output-channel tiles over one
 * 16-pixel panel of one image, so the panel (K x 16 floats) stays in L1 while the weights stream
 * from L2. Bias, residual and the activation are applied to the tile in registers before the
 * one store of each output row segment. Pixel tails use masked loads; a last tile of fewer than
 * 6 output channels computes duplicates of a valid row and stores only the valid ones.
 *
 * Taken for 1x1 convs with one group, 24 to 320 input channels, at least 16 pixels per plane,
 * an activation cpu_avx2.h applies in registers, on CPUs with AVX2 and FMA; the rest stays
 * kernels_conv.c's GEMM.
 */
#include "cpu_avx2.h"
#include "cpu_conv.h"

/* Tile: output channels x pixels; output channels per task. */
#define PW_MR 6
#define PW_NR 16
#define PW_TASK_ROWS 48
/* Input channels (the GEMM's K) this kernel takes. */
#define PW_MIN_K 24
#define PW_MAX_K 320

int cpu_conv_pw_prepare(conv_params *p)
{
    /* Reductions over 24 to 320 channels: measured faster than the BLAS GEMM on one thread
     * for MobileNet's 40 -> 240 (14x14, 1.4x), 96 -> 576 (7x7, 1.1x) and 256 -> 256 (28x28);
     * slower for 16 -> 72 (56x56: the tile's epilogue outweighs 16 steps) and 576 -> 96 (7x7:
     * a 576-row panel no longer stays in L1), which stay GEMMs. */
    p->pw = p->pointwise && p->group == 1 && p->p >= PW_NR && p->c >= PW_MIN_K &&
            p->c <= PW_MAX_K && p->m >= 1 && cpu_avx2_act_ok(p->ep.act) && cpu_avx2_ok();
    return p->pw;
}

#ifdef CPU_HAVE_AVX2_CODE

typedef struct pw_ctx {
    const conv_params *p;
    const float *x, *w, *bias, *z;
    float *y;
    int64_t panels, chunks; /* 16-pixel panels per plane, output-channel chunks */
} pw_ctx;

/* Rows [oc0, oc0 + mr) (mr <= 6) x pixels [p0, p0 + np) (np <= 16) of image n. */
CPU_AVX2 static void pw_tile(const pw_ctx *c, int64_t n, int64_t oc0, int64_t mr, int64_t p0,
                             int64_t np)
{
    const conv_params *p = c->p;
    const int64_t K = p->c, P = p->p;
    const float *xp = c->x + n * K * P + p0;
    const float *w0 = c->w + oc0 * K;
    /* Rows past mr repeat the last valid one (computed, never stored). */
    const float *w1 = w0 + (mr > 1 ? 1 : mr - 1) * K, *w2 = w0 + (mr > 2 ? 2 : mr - 1) * K;
    const float *w3 = w0 + (mr > 3 ? 3 : mr - 1) * K, *w4 = w0 + (mr > 4 ? 4 : mr - 1) * K;
    const float *w5 = w0 + (mr > 5 ? 5 : mr - 1) * K;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0;
#define PW_STEP(K_)                                                                               \
    {                                                                                             \
        __m256 wv = _mm256_broadcast_ss(w0 + (K_));                                               \
        a0 = _mm256_fmadd_ps(wv, x0, a0);                                                         \
        b0 = _mm256_fmadd_ps(wv, x1, b0);                                                         \
        wv = _mm256_broadcast_ss(w1 + (K_));                                                      \
        a1 = _mm256_fmadd_ps(wv, x0, a1);                                                         \
        b1 = _mm256_fmadd_ps(wv, x1, b1);                                                         \
        wv = _mm256_broadcast_ss(w2 + (K_));                                                      \
        a2 = _mm256_fmadd_ps(wv, x0, a2);                                                         \
        b2 = _mm256_fmadd_ps(wv, x1, b2);                                                         \
        wv = _mm256_broadcast_ss(w3 + (K_));                                                      \
        a3 = _mm256_fmadd_ps(wv, x0, a3);                                                         \
        b3 = _mm256_fmadd_ps(wv, x1, b3);                                                         \
        wv = _mm256_broadcast_ss(w4 + (K_));                                                      \
        a4 = _mm256_fmadd_ps(wv, x0, a4);                                                         \
        b4 = _mm256_fmadd_ps(wv, x1, b4);                                                         \
        wv = _mm256_broadcast_ss(w5 + (K_));                                                      \
        a5 = _mm256_fmadd_ps(wv, x0, a5);                                                         \
        b5 = _mm256_fmadd_ps(wv, x1, b5);                                                         \
    }
    if (np <= PW_NR / 2) {
        /* A tail of at most 8 pixels: one vector, half the FMAs (b* stay zero). */
        for (int64_t k = 0; k < K; k++) {
            const __m256 x0 = cpu_avx2_load_n(xp + k * P, np);
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w0 + k), x0, a0);
            a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(w1 + k), x0, a1);
            a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(w2 + k), x0, a2);
            a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(w3 + k), x0, a3);
            a4 = _mm256_fmadd_ps(_mm256_broadcast_ss(w4 + k), x0, a4);
            a5 = _mm256_fmadd_ps(_mm256_broadcast_ss(w5 + k), x0, a5);
        }
    } else if (np == PW_NR) {
        for (int64_t k = 0; k < K; k++) {
            const __m256 x0 = _mm256_loadu_ps(xp + k * P), x1 = _mm256_loadu_ps(xp + k * P + 8);
            PW_STEP(k)
        }
    } else {
        const int64_t n0 = np < 8 ? np : 8, n1 = np - n0;
        for (int64_t k = 0; k < K; k++) {
            const __m256 x0 = cpu_avx2_load_n(xp + k * P, n0);
            const __m256 x1 = cpu_avx2_load_n(xp + k * P + 8, n1);
            PW_STEP(k)
        }
    }
#undef PW_STEP
    const __m256 acc[PW_MR][2] = {{a0, b0}, {a1, b1}, {a2, b2}, {a3, b3}, {a4, b4}, {a5, b5}};
    const int64_t n0 = np < 8 ? np : 8, n1 = np - n0;
    for (int64_t r = 0; r < mr; r++) {
        const int64_t off = ((n * p->m) + oc0 + r) * P + p0;
        const __m256 bv = _mm256_set1_ps(c->bias ? c->bias[oc0 + r] : 0.0f);
        __m256 v0 = _mm256_add_ps(acc[r][0], bv), v1 = _mm256_add_ps(acc[r][1], bv);
        if (c->z) {
            v0 = _mm256_add_ps(v0, cpu_avx2_load_n(c->z + off, n0));
            v1 = _mm256_add_ps(v1, cpu_avx2_load_n(c->z + off + 8, n1));
        }
        v0 = cpu_avx2_act(&p->ep, v0);
        v1 = cpu_avx2_act(&p->ep, v1);
        cpu_avx2_store_n(c->y + off, v0, n0);
        if (n1 > 0)
            cpu_avx2_store_n(c->y + off + 8, v1, n1);
    }
}

CPU_AVX2 static void pw_task(void *arg, size_t t0, size_t t1)
{
    const pw_ctx *c = arg;
    const conv_params *p = c->p;
    for (size_t t = t0; t < t1; t++) {
        const int64_t chunk = (int64_t)t % c->chunks, rest = (int64_t)t / c->chunks;
        const int64_t panel = rest % c->panels, n = rest / c->panels;
        const int64_t p0 = panel * PW_NR, np = p->p - p0 < PW_NR ? p->p - p0 : PW_NR;
        const int64_t r0 = chunk * PW_TASK_ROWS;
        const int64_t r1 = r0 + PW_TASK_ROWS < p->m ? r0 + PW_TASK_ROWS : p->m;
        for (int64_t oc = r0; oc < r1; oc += PW_MR)
            pw_tile(c, n, oc, r1 - oc < PW_MR ? r1 - oc : PW_MR, p0, np);
    }
}

void cpu_conv_pw_run(const conv_params *p, const float *x, const float *w, const float *bias,
                     const float *z, float *y, cpu_pool *pool)
{
    pw_ctx c = {p, x, w, bias, z, y, (p->p + PW_NR - 1) / PW_NR,
                (p->m + PW_TASK_ROWS - 1) / PW_TASK_ROWS};
    const double work = (double)(PW_TASK_ROWS * PW_NR) * (double)p->c + 1.0;
    const size_t grain = work >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / work) + 1;
    cpu_parallel_for(pool, (size_t)(p->n * c.panels * c.chunks), grain, pw_task, &c);
}

#else

void cpu_conv_pw_run(const conv_params *p, const float *x, const float *w, const float *bias,
                     const float *z, float *y, cpu_pool *pool)
{
    /* cpu_conv_pw_prepare never accepts a conv where the AVX2 code is not built. */
    (void)p, (void)x, (void)w, (void)bias, (void)z, (void)y, (void)pool;
}

#endif
