/*
 * The int8 convolution behind QLinearConv and ConvInteger with constant weights whose distance
 * from their zero point fits int8 (kernels_conv_int8.c): an implicit GEMM with the output
 * channels as rows and the output pixels as columns, so that the int32 sums of a channel come
 * out contiguous in NCHW and are requantised straight into the output (no transpose, no
 * separate requantisation pass).
 */
#ifndef LOOM_CPU_CONV_INT8_H
#define LOOM_CPU_CONV_INT8_H

#include "cpu_kernels.h"

#include <stddef.h>
#include <stdint.h>

/* A 2-D convolution's geometry (1-D runs with H = OH = KH = 1, sh = dh = 1, ph = 0). */
typedef struct cpu_qconv8_geom {
    int64_t N, C, H, W, M, OH, OW, KH, KW, G;
    int64_t sh, sw, dh, dw, ph, pw; /* strides, dilations, leading pads */
} cpu_qconv8_geom;

typedef struct cpu_qconv8 cpu_qconv8;

/* Prepares the kernel for GEOM with weights W' = w - w_zero_point already in int8, [M][C/G *
 * KH * KW] row-major (copied: the caller keeps W). X_SIGNED: x is int8 (else uint8);
 * Y_SIGNED: a requantised output is int8 (else uint8); INTEGER_OUT: the output is the int32
 * sums (ConvInteger) rather than requantised bytes. The instruction set is chosen here:
 * AVX-512 VNNI where the CPU has it and neither LOOM_CPU_NO_VNNI nor LOOM_CPU_NO_AVX512 is set,
 * else portable C (exact either way). Returns NULL when out of memory; free with
 * cpu_qconv8_free. */
cpu_qconv8 *cpu_qconv8_create(const cpu_qconv8_geom *geom, const int8_t *w, int x_signed,
                              int y_signed, int integer_out);

/* Frees what cpu_qconv8_create made; NULL is a no-op. */
void cpu_qconv8_free(cpu_qconv8 *k);

/* Scratch bytes cpu_qconv8_run needs (its packed activation panels, one per worker slot). */
size_t cpu_qconv8_scratch_bytes(const cpu_qconv8 *k);

/* What one run reads and writes. MULT[m] = x_scale * w_scale[m] / y_scale and Y_ZP are unused
 * with INTEGER_OUT; BIAS [M] int32 or NULL. */
typedef struct cpu_qconv8_args {
    const void *x;        /* [N, C, H, W] uint8 or int8 */
    void *y;              /* [N, M, OH, OW] uint8 / int8, or int32 */
    int32_t x_zp, y_zp;   /* x's zero point in x's dtype; the output's */
    const float *mult;
    const int32_t *bias;
    void *scratch;        /* cpu_qconv8_scratch_bytes, 64-byte aligned */
} cpu_qconv8_args;

/* Runs the convolution: y = saturate(round_half_even((sum (x - x_zp) * W' + bias) * mult) +
 * y_zp) per output channel, or the int32 sums with INTEGER_OUT. Cannot fail. */
void cpu_qconv8_run(const cpu_qconv8 *k, const cpu_qconv8_args *a, cpu_pool *pool);

#endif
