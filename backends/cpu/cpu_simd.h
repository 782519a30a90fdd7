/*
 * Vectorisable float helpers shared by the CPU kernel families: run-time ISA dispatch for
 * whole-run loops (CPU_CLONES), bit casts, a branch-free select, and the exp core that Exp,
 * Softmax, Sigmoid, Tanh and GELU build on. Branch-free float code (selects, no libm calls) that
 * GCC vectorises inside the kernels' blocked loops.
 */
#ifndef LOOM_CPU_SIMD_H
#define LOOM_CPU_SIMD_H

#include <stddef.h>
#include <stdint.h>

/* Run-time ISA dispatch. The build targets baseline x86-64 (SSE2: 4 floats a vector); on GCC for
 * x86-64 the loops that process whole runs or rows are also compiled for x86-64-v3 (AVX2, FMA: 8
 * floats a vector) and an ifunc picks the clone once, at load time. A clone cannot be inlined,
 * so this goes only on functions called once per run or row, never on per-element helpers (which
 * are inlined into each clone). Only ISA extensions change: with -std=c11 GCC does not contract
 * a * b + c into an FMA, so both clones round alike. Other compilers and targets get plain
 * functions. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
#endif
#ifndef CPU_CLONES
#define CPU_CLONES
#endif

/* Loops as blocks of CPU_BLK iterations with a fixed-count inner loop plus a scalar tail: GCC's
 * cost model at -O2 ("very-cheap") vectorises only loops whose trip count is a known multiple of
 * the vector width. The body sees the index as `i`. Float sums keep CPU_BLK partial sums for the
 * same reason (GCC may not reassociate one running sum), which is also more accurate. */
#define CPU_BLK 16

/* Max that lets a NaN win, as NumPy's max does. */
#define CPU_MAXF(a, b) ((a) != (a) || (a) > (b) ? (a) : (b))
#define CPU_LOOP(n, ...)                                                                          \
    do {                                                                                          \
        size_t i_ = 0;                                                                            \
        for (; i_ + CPU_BLK <= (n); i_ += CPU_BLK)                                                \
            for (size_t k_ = 0; k_ < CPU_BLK; k_++) {                                             \
                const size_t i = i_ + k_;                                                         \
                __VA_ARGS__                                                                       \
            }                                                                                     \
        for (; i_ < (n); i_++) {                                                                  \
            const size_t i = i_;                                                                  \
            __VA_ARGS__                                                                           \
        }                                                                                         \
    } while (0)

static inline float cpu_f_bits(uint32_t i)
{
    union { uint32_t i; float f; } u = {.i = i};
    return u.f;
}

static inline uint32_t cpu_bits_f(float f)
{
    union { float f; uint32_t i; } u = {.f = f};
    return u.i;
}

/* C ? A : B through bit masks. A plain ?: between computed floats does not vectorise: GCC
 * sinks the computation of the unused arm into a branch, and with trapping maths (the default)
 * a conditional float operation is not if-converted. */
static inline float cpu_sel(int c, float a, float b)
{
    const uint32_t m = 0u - (uint32_t)c;
    return cpu_f_bits((cpu_bits_f(a) & m) | (cpu_bits_f(b) & ~m));
}

/* e^x = 2^n e^r, x = n ln2 + r, |r| <= ln2 / 2 (Cody-Waite two-part ln2), e^r by Cephes'
 * degree-5 minimax polynomial: ~1e-7 relative. Returns e^r and sets *N to n (two's complement);
 * integer steps are unsigned, so that out-of-range lanes a caller masks off afterwards wrap
 * instead of overflowing. A NaN gives a NaN. */
static inline float cpu_exp_reduce(float x, uint32_t *n_out)
{
    const float k = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rounds to integer */
    const float n = k - 12582912.0f;
    *n_out = cpu_bits_f(k) - 0x4B400000u;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * (r * r) + r + 1.0f;
}

/* 2^n for n in [-126, 127]. */
static inline float cpu_pow2(uint32_t n)
{
    return cpu_f_bits((n + 127u) << 23);
}

/* e^x for x in [-87.3, 88.3] (2^n a normal float) or NaN. */
static inline float cpu_exp_mid(float x)
{
    uint32_t n;
    const float p = cpu_exp_reduce(x, &n);
    return p * cpu_pow2(n);
}

/* e^x for x <= 0 or NaN: +0 below -87.3 (where e^x < 2^-126; so -inf and -1e30 give 0), which
 * is masked off afterwards rather than clamped before. */
static inline float cpu_exp_neg(float x)
{
    return cpu_f_bits(cpu_bits_f(cpu_exp_mid(x)) & ~(0u - (uint32_t)(x < -87.3f)));
}

#endif /* LOOM_CPU_SIMD_H */
