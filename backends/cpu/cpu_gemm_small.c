/*
 * f32 GEMMs with few rows (2 to 48: a classifier head or an MLP at a small batch, a decoder
 * step) and B transposed (ONNX Gemm with transB = 1: B as [N, K], a Linear layer's weight), AVX2
 * + FMA, with no packing. A BLAS call packs the transposed B on every call, and with few rows
 * each element of B is used only a few times, so the packing costs more than the arithmetic
 * (measured on one thread, OpenBLAS 0.3.21 -> here: 8 x 1024 x 1000 0.76 -> 0.20 ms, 32 rows
 * 1.21 -> 0.79 ms, 64 rows 1.79 -> 1.60 ms; at 128 rows the BLAS wins).
 * Here B is read once, in place: dot products along K, 4 rows of A x 2 rows of B per step (8
 * accumulators, 6 loads per 8 FMAs), summed across lanes at the end. Rows past M repeat a valid
 * row (computed, not stored); the tail of K uses masked loads. With B as [K, N] OpenBLAS needs
 * no such packing and stays (it measured as fast as a register-tiled loop). cpu_gemm.c calls
 * this per block when cpu_gemm_small_ok says so.
 */
#include "cpu_avx2.h"
#include "cpu_gemm.h"

#include <stdatomic.h>
#include <stdint.h>

int cpu_gemm_small_ok(const cpu_gemm *g, int64_t m, int64_t n)
{
    /* -1: not asked yet (the answer never changes within a process). */
    static atomic_int avx2 = -1;
    int ok = atomic_load_explicit(&avx2, memory_order_relaxed);
    if (ok < 0) {
        ok = cpu_avx2_ok();
        atomic_store_explicit(&avx2, ok, memory_order_relaxed);
    }
    return ok && !g->trans_a && g->trans_b && m >= 2 && m <= 48 && n >= 8 && g->k >= 32;
}

#ifdef CPU_HAVE_AVX2_CODE

/* Lane i of the result: the sum of the lanes of V[i]. */
CPU_AVX2 static inline __m256 gs_hsum8(const __m256 v[8])
{
    const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20),
                         _mm256_permute2f128_ps(t0, t1, 0x31));
}

static inline void gs_put(float *c, float v, float alpha, float beta)
{
    *c = beta == 0.0f ? alpha * v : alpha * v + beta * *c;
}

/* C[i][j] for B as [N, K] (row j of B is column j of op(B)). */
CPU_AVX2 static void gs_dot(const cpu_gemm *g, int64_t m, int64_t n, const float *a,
                            const float *b, float *c, float beta)
{
    const int64_t k = g->k, kv = k / 8 * 8, kt = k - kv;
    for (int64_t i0 = 0; i0 < m; i0 += 4) {
        const int64_t mr = m - i0 < 4 ? m - i0 : 4;
        const float *ar[4];
        for (int64_t r = 0; r < 4; r++)
            ar[r] = a + (i0 + (r < mr ? r : mr - 1)) * g->lda;
        for (int64_t j = 0; j < n; j += 2) {
            const int two = j + 1 < n;
            const float *b0 = b + j * g->ldb, *b1 = two ? b0 + g->ldb : b0;
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0,
                   s7 = s0;
            for (int64_t q = 0; q < kv; q += 8) {
                const __m256 x0 = _mm256_loadu_ps(b0 + q), x1 = _mm256_loadu_ps(b1 + q);
                __m256 av = _mm256_loadu_ps(ar[0] + q);
                s0 = _mm256_fmadd_ps(av, x0, s0);
                s4 = _mm256_fmadd_ps(av, x1, s4);
                av = _mm256_loadu_ps(ar[1] + q);
                s1 = _mm256_fmadd_ps(av, x0, s1);
                s5 = _mm256_fmadd_ps(av, x1, s5);
                av = _mm256_loadu_ps(ar[2] + q);
                s2 = _mm256_fmadd_ps(av, x0, s2);
                s6 = _mm256_fmadd_ps(av, x1, s6);
                av = _mm256_loadu_ps(ar[3] + q);
                s3 = _mm256_fmadd_ps(av, x0, s3);
                s7 = _mm256_fmadd_ps(av, x1, s7);
            }
            if (kt) {
                const __m256 x0 = cpu_avx2_load_n(b0 + kv, kt), x1 = cpu_avx2_load_n(b1 + kv, kt);
                __m256 av = cpu_avx2_load_n(ar[0] + kv, kt);
                s0 = _mm256_fmadd_ps(av, x0, s0);
                s4 = _mm256_fmadd_ps(av, x1, s4);
                av = cpu_avx2_load_n(ar[1] + kv, kt);
                s1 = _mm256_fmadd_ps(av, x0, s1);
                s5 = _mm256_fmadd_ps(av, x1, s5);
                av = cpu_avx2_load_n(ar[2] + kv, kt);
                s2 = _mm256_fmadd_ps(av, x0, s2);
                s6 = _mm256_fmadd_ps(av, x1, s6);
                av = cpu_avx2_load_n(ar[3] + kv, kt);
                s3 = _mm256_fmadd_ps(av, x0, s3);
                s7 = _mm256_fmadd_ps(av, x1, s7);
            }
            const __m256 v[8] = {s0, s1, s2, s3, s4, s5, s6, s7};
            float out[8];
            _mm256_storeu_ps(out, gs_hsum8(v));
            for (int64_t r = 0; r < mr; r++) {
                gs_put(c + (i0 + r) * g->ldc + j, out[r], g->alpha, beta);
                if (two)
                    gs_put(c + (i0 + r) * g->ldc + j + 1, out[4 + r], g->alpha, beta);
            }
        }
    }
}

void cpu_gemm_small(const cpu_gemm *g, int64_t m, int64_t n, const float *a, const float *b,
                    float *c, float beta)
{
    gs_dot(g, m, n, a, b, c, beta);
}

#else

void cpu_gemm_small(const cpu_gemm *g, int64_t m, int64_t n, const float *a, const float *b,
                    float *c, float beta)
{
    /* cpu_gemm_small_ok never accepts a GEMM where the AVX2 code is not built. */
    (void)g, (void)m, (void)n, (void)a, (void)b, (void)c, (void)beta;
}

#endif
