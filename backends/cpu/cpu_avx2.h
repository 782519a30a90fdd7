/*
 * AVX2 + FMA building blocks of the CPU kernels that keep channels in the vector lanes
 * (kernels_conv_depthwise_blocked.c, kernels_conv_direct_blocked.c): the run-time check, an
 * in-register 8x8 transpose, lane masks, and the activations of the fused epilogue in registers
 * with the same formulas and operation order as cpu_epilogue.c, so that a fused result is the
 * unfused one.
 *
 * Everything here is compiled for AVX2 + FMA through function attributes (the build targets
 * baseline x86-64), so callers use it only inside CPU_AVX2 functions, after cpu_avx2_ok().
 */
#ifndef LOOM_CPU_AVX2_H
#define LOOM_CPU_AVX2_H

#include "cpu_epilogue.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CPU_HAVE_AVX2_CODE 1
#define CPU_AVX2 __attribute__((target("avx2,fma")))
/* 256-bit code that may use AVX-512VL's 32 ymm registers (EVEX encodings). */
#define CPU_AVX512VL __attribute__((target("avx2,fma,avx512f,avx512vl")))
#endif

/* Whether this CPU runs AVX2 + FMA code and LOOM_CPU_NO_AVX2 does not turn it off (the tests
 * run the portable kernels that way). */
static inline int cpu_avx2_ok(void)
{
    const char *off = getenv("LOOM_CPU_NO_AVX2");
    if (off && *off && strcmp(off, "0") != 0)
        return 0;
#ifdef CPU_HAVE_AVX2_CODE
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* Whether cpu_avx2_ok(), the CPU has AVX-512F and AVX-512VL (CPU_AVX512VL code) and
 * LOOM_CPU_NO_AVX512 does not turn them off (the tests run the AVX2-only kernels that way). */
static inline int cpu_avx512vl_ok(void)
{
#ifdef CPU_HAVE_AVX2_CODE
    const char *off = getenv("LOOM_CPU_NO_AVX512");
    if (off && *off && strcmp(off, "0") != 0)
        return 0;
    return cpu_avx2_ok() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

/* The activations cpu_avx2_act applies in registers; kernels run the others through
 * cpu_epilogue_apply afterwards. */
static inline int cpu_avx2_act_ok(cpu_act_kind a)
{
    return a == CPU_ACT_NONE || a == CPU_ACT_RELU || a == CPU_ACT_LEAKY_RELU || a == CPU_ACT_CLIP ||
           a == CPU_ACT_HARD_SIGMOID || a == CPU_ACT_HARD_SWISH;
}

#ifdef CPU_HAVE_AVX2_CODE

/* In-register transpose of 8 rows of 8 floats: afterwards r[j][i] is the old r[i][j]. */
CPU_AVX2 static inline void cpu_avx2_transpose8(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* Lanes [0, N) set, for maskload (never maskstore: microcoded and slow on AMD). */
CPU_AVX2 static inline __m256i cpu_avx2_mask(int64_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* N (0..8) floats at P, zero in the other lanes. */
CPU_AVX2 static inline __m256 cpu_avx2_load_n(const float *p, int64_t n)
{
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, cpu_avx2_mask(n));
}

/* The first N (0..8) lanes of V to P (a spill, not a masked store). */
CPU_AVX2 static inline void cpu_avx2_store_n(float *p, __m256 v, int64_t n)
{
    if (n >= 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    for (int64_t j = 0; j < n; j++)
        p[j] = tmp[j];
}

/* N floats from S to D (not overlapping), 8 at a time, the last 8 overlapping what is already
 * copied: for the short rows of the conv kernels' padded copies, where a memcpy call per row cost
 * more than the copying. */
CPU_AVX2 static inline void cpu_avx2_copy(float *d, const float *s, int64_t n)
{
    if (n < 8) {
        for (int64_t q = 0; q < n; q++)
            d[q] = s[q];
        return;
    }
    int64_t q = 0;
    for (; q + 8 <= n; q += 8)
        _mm256_storeu_ps(d + q, _mm256_loadu_ps(s + q));
    if (q < n)
        _mm256_storeu_ps(d + n - 8, _mm256_loadu_ps(s + n - 8));
}

/* min(max(v, 0), 1) that keeps a NaN (maxps/minps return their second operand on a NaN). */
CPU_AVX2 static inline __m256 cpu_avx2_clamp01(__m256 v)
{
    return _mm256_min_ps(_mm256_set1_ps(1.0f), _mm256_max_ps(_mm256_setzero_ps(), v));
}

/* E's activation of X, for the kinds cpu_avx2_act_ok accepts (others: X unchanged). */
CPU_AVX2 static inline __m256 cpu_avx2_act(const cpu_epilogue *e, __m256 x)
{
    const __m256 zero = _mm256_setzero_ps();
    switch (e->act) {
    case CPU_ACT_RELU:
        return _mm256_max_ps(zero, x);
    case CPU_ACT_LEAKY_RELU:
        return _mm256_add_ps(_mm256_max_ps(zero, x),
                             _mm256_mul_ps(_mm256_set1_ps(e->alpha), _mm256_min_ps(zero, x)));
    case CPU_ACT_CLIP: {
        /* x < alpha ? alpha : x, then x > beta ? beta : x */
        const __m256 lo = _mm256_set1_ps(e->alpha), hi = _mm256_set1_ps(e->beta);
        x = _mm256_blendv_ps(x, lo, _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
        return _mm256_blendv_ps(x, hi, _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
    }
    case CPU_ACT_HARD_SIGMOID:
        return cpu_avx2_clamp01(
            _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(e->alpha), x), _mm256_set1_ps(e->beta)));
    case CPU_ACT_HARD_SWISH:
        return _mm256_mul_ps(x, cpu_avx2_clamp01(_mm256_add_ps(
                                    _mm256_mul_ps(x, _mm256_set1_ps(1.0f / 6.0f)),
                                    _mm256_set1_ps(0.5f))));
    default:
        return x;
    }
}

/* cpu_avx2_act on V[0], ..., V[N - 1], switching on the activation once for all of them (each
 * case's loop sees a constant kind, so its switch folds away). */
CPU_AVX2 static inline void cpu_avx2_act_n(const cpu_epilogue *e, __m256 *v, int64_t n)
{
    cpu_epilogue k = *e;
#define CPU_AVX2_ACT_CASE(KIND)                                                                   \
    case KIND:                                                                                    \
        k.act = KIND;                                                                             \
        for (int64_t i = 0; i < n; i++)                                                           \
            v[i] = cpu_avx2_act(&k, v[i]);                                                        \
        return;
    switch (e->act) {
        CPU_AVX2_ACT_CASE(CPU_ACT_RELU)
        CPU_AVX2_ACT_CASE(CPU_ACT_LEAKY_RELU)
        CPU_AVX2_ACT_CASE(CPU_ACT_CLIP)
        CPU_AVX2_ACT_CASE(CPU_ACT_HARD_SIGMOID)
        CPU_AVX2_ACT_CASE(CPU_ACT_HARD_SWISH)
    default:
        return;
    }
#undef CPU_AVX2_ACT_CASE
}

#endif /* CPU_HAVE_AVX2_CODE */

#endif /* LOOM_CPU_AVX2_H */
