/*
 * What the Conv kernels of the CPU backend share (kernels_conv.c: the choice per shape, im2col +
 * GEMM for 1 to 3 spatial dims, 1x1 as a GEMM; kernels_conv_depthwise.c: the direct depthwise
 * kernel): the prepared shape of one Conv or FusedConv node and its epilogue.
 */
#ifndef LOOM_CPU_CONV_H
#define LOOM_CPU_CONV_H

#include "cpu_epilogue.h"
#include "cpu_kernels.h"

#include <stdint.h>

/* Most kernel taps along W the depthwise kernel precomputes valid ranges for. */
#define CONV_DW_MAX_KW 16

typedef struct conv_params {
    int64_t n, c, h, w;  /* input; a 1-D conv has h = 1 */
    int64_t m, oh, ow;   /* output channels and spatial size */
    int64_t kh, kw, sh, sw, dh, dw, pt, pl;
    /* the depth axis of a 3-D conv (input d, output od, kernel kd, stride sd, dilation dd,
     * front pad pf); 1, 1, 1, 1, 1, 0 for 1-D and 2-D convs, which alone the direct and
     * depthwise kernels take */
    int64_t d, od, kd, sd, dd, pf;
    int64_t in_sp;       /* input elements per channel: d*h*w */
    int64_t group, cg, mg;
    int64_t kc;          /* GEMM K: cg*kh*kw */
    int64_t p;           /* GEMM N: oh*ow */
    int pointwise;       /* 1x1, stride 1, no padding: the input is the GEMM's B as it is */
    int direct;          /* tiny groups: direct loops */
    int depthwise;       /* one input channel per group: kernels_conv_depthwise.c */
    size_t n_buffers;    /* im2col buffers in scratch */
    int has_bias;
    int has_z;           /* FusedConv's residual input Z (input 3) */
    cpu_epilogue ep;     /* FusedConv's activation (CPU_ACT_NONE for Conv) */
    /* depthwise: output columns [lo[kj], hi[kj]) read inside the input row for tap kj, and the
     * interior [in_lo, in_hi) where every tap does */
    int64_t lo[CONV_DW_MAX_KW], hi[CONV_DW_MAX_KW], in_lo, in_hi;
    /* channel-blocked depthwise (kernels_conv_depthwise_blocked.c): most output rows per band,
     * 0 when that kernel does not take the conv */
    int64_t dwb_band;
    /* direct conv with output channels in the lanes (kernels_conv_direct_blocked.c) */
    int dcb;
    int64_t dcb_band; /* its padded mode's most output rows per band; 0: row mode */
    int dcb_oc;       /* its output channels per step: 16, or 32 with AVX-512VL's registers */
    int dcb_px;       /* its pixels per step in padded mode: 6, or 8 (AVX-512VL, 16 channels) */
    float *dcb_w;     /* its weights and biases packed at prepare (constants), or NULL: packed
                       * into scratch at every run; owned by the params (conv_free) */
    /* direct conv with output pixels in the lanes for few input channels
     * (kernels_conv_stem.c): its most output rows per band, 0 when it does not take the conv */
    int64_t stem_band;
    int stem_oc;      /* its output channels per strip: 4 where AVX-512VL gives 32 registers, else 3 */
    float *stem_w;    /* its weights and biases packed at prepare (constants), or NULL; owned */
    /* pointwise as a register-tiled GEMM on the input (kernels_conv_pointwise.c) */
    int pw;
    /* FusedConv's max pooling of the activated output (2-D only; graph/ops_fused.c): kernel
     * pkh x pkw, strides psh x psw, pooled planes ph x pwo (the output's); oh, ow and p stay the
     * conv's. pool_fast: the stem or padded direct kernel pools each band it computes, with
     * non-overlapping windows (kernel = stride) and no residual; else the conv is computed into
     * scratch at pool_off and pooled after. */
    int pool, pool_fast, pool_avx2;
    int64_t pkh, pkw, psh, psw, ph, pwo;
    size_t pool_off;
} conv_params;

/* The epilogue (Z and the activation; the bias is already in) of output rows [OH0, OH1) of
 * CHANNELS consecutive output planes at Y (Z at the same offsets, may be NULL): for the
 * activations the channels-in-lanes kernels do not apply in registers. */
static inline void conv_epilogue_rows(const conv_params *p, float *y, const float *z,
                                      int64_t channels, int64_t oh0, int64_t oh1)
{
    const size_t len = (size_t)((oh1 - oh0) * p->ow);
    for (int64_t l = 0; l < channels; l++) {
        const int64_t off = l * p->p + oh0 * p->ow;
        cpu_epilogue_apply(&p->ep, y + off, len, 0.0f, NULL, z ? z + off : NULL);
    }
}

/* Max pooling of ROWS output rows of N outputs each from X (row r reads input rows from r * SH,
 * LDX floats apart) into Y (rows LDY apart): windows KH x KW at column stride SW, all inside X
 * (no padding). The same maxima, NaN rule and order as MaxPool's kernel (kernels_pooling.c).
 * AVX2: whether its AVX2 rows may run (cpu_avx2_ok(), asked once at prepare). */
void cpu_max_pool_rows(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t rows, int64_t n,
                       int kh, int kw, int sh, int sw, int avx2);

/* Whether the depthwise kernel takes P (set by kernels_conv.c's prepare once the shape is
 * known): one input channel per group and at most CONV_DW_MAX_KW taps along W. Fills P's
 * column ranges when it does. */
int cpu_conv_dw_prepare(conv_params *p);

/* Runs the depthwise conv of P: Y = act(conv(X, W) + bias + Z) (BIAS and Z may be NULL), split
 * over the pool by output planes. */
void cpu_conv_dw_run(const conv_params *p, const float *x, const float *w, const float *bias,
                     const float *z, float *y, cpu_pool *pool);

/* Whether the channel-blocked depthwise kernel takes P (set by kernels_conv.c's prepare once
 * the shape is known): a 1-D or 2-D conv with one input and one output channel per group, at
 * most 64 taps, a CPU with AVX2 and FMA (and LOOM_CPU_NO_AVX2 unset), and a band of one output
 * row fitting its buffer. Sets P->dwb_band (0 when not taken). */
int cpu_conv_dwb_prepare(conv_params *p);

/* Scratch bytes cpu_conv_dwb_run needs for P (its packed weights and biases). */
size_t cpu_conv_dwb_scratch(const conv_params *p);

/* Runs the depthwise conv of P with channels in the vector lanes: Y = act(conv(X, W) + bias +
 * Z) (BIAS and Z may be NULL), split over the pool by (image, block of 8 channels, band of
 * output rows). SCRATCH holds cpu_conv_dwb_scratch(P) bytes. Only after cpu_conv_dwb_prepare
 * accepted P. */
void cpu_conv_dwb_run(const conv_params *p, const float *x, const float *w, const float *bias,
                      const float *z, float *y, float *scratch, cpu_pool *pool);

/* Whether the direct conv for few input channels (a stem) takes P (set by kernels_conv.c's
 * prepare): a 1-D or 2-D conv with one group, at most 4 input channels, stride 1 or 2 and no
 * dilation along W, rows of 8 or more output pixels, a band of one output row fitting its
 * buffer, on a CPU with AVX2 and FMA (and LOOM_CPU_NO_AVX2 unset). Sets P->stem_band (0 when
 * not taken). */
int cpu_conv_stem_prepare(conv_params *p);

/* Whether cpu_conv_stem_run pools P's output band by band (P->pool set, after
 * cpu_conv_stem_prepare accepted P): windows that do not overlap (kernel = stride), no
 * residual, and a band of whole windows within the buffers. */
int cpu_conv_stem_pool_ok(const conv_params *p);

/* Packs constant weights W [m][c][kh][kw] and BIAS (may be NULL) once for cpu_conv_stem_run
 * into P->stem_w (malloc'ed, owned by P). Returns 0 when out of memory (P unchanged: run packs
 * into scratch then). Only after cpu_conv_stem_prepare accepted P. */
int cpu_conv_stem_pack(conv_params *p, const float *w, const float *bias);

/* Scratch bytes cpu_conv_stem_run needs for P (its packed weights; 0 when packed at prepare). */
size_t cpu_conv_stem_scratch(const conv_params *p);

/* Runs the conv of P directly, 3 output channels by up to 32 pixels of a row per step: Y =
 * act(conv(X, W) + bias + Z) (BIAS and Z may be NULL), max-pooled when P->pool_fast, split over the pool by (image, band of
 * output rows). SCRATCH holds cpu_conv_stem_scratch(P) bytes. Only after cpu_conv_stem_prepare
 * accepted P. */
void cpu_conv_stem_run(const conv_params *p, const float *x, const float *w, const float *bias,
                       const float *z, float *y, float *scratch, cpu_pool *pool);

/* Whether the direct conv with output channels in the vector lanes takes P (set by
 * kernels_conv.c's prepare): a 1-D or 2-D conv with one group, not pointwise, at most 128 output
 * channels, rows of 8 or more output pixels, on a CPU with AVX2 and FMA (and LOOM_CPU_NO_AVX2
 * unset). Sets P->dcb. */
int cpu_conv_dcb_prepare(conv_params *p);

/* Whether cpu_conv_dcb_run pools P's output band by band (P->pool set, after
 * cpu_conv_dcb_prepare chose padded mode): windows that do not overlap (kernel = stride), no
 * residual, and a band of whole windows within the buffers. */
int cpu_conv_dcb_pool_ok(const conv_params *p);

/* Packs constant weights W [m][c][kh][kw] and BIAS (may be NULL) once for cpu_conv_dcb_run into
 * P->dcb_w (malloc'ed, owned by P). Returns 0 when out of memory (P unchanged: run packs into
 * scratch then). Only after cpu_conv_dcb_prepare accepted P. */
int cpu_conv_dcb_pack(conv_params *p, const float *w, const float *bias);

/* Scratch bytes cpu_conv_dcb_run needs for P (its packed weights and biases; 0 when packed at
 * prepare). */
size_t cpu_conv_dcb_scratch(const conv_params *p);

/* Runs the conv of P directly, 16 output channels by 6 pixels per step: Y = act(conv(X, W) +
 * bias + Z) (BIAS and Z may be NULL), max-pooled when P->pool_fast, split over the pool by (image, 16 output channels, band of
 * output rows). SCRATCH holds cpu_conv_dcb_scratch(P) bytes. Only after cpu_conv_dcb_prepare
 * accepted P. */
void cpu_conv_dcb_run(const conv_params *p, const float *x, const float *w, const float *bias,
                      const float *z, float *y, float *scratch, cpu_pool *pool);

/* Whether the register-tiled pointwise kernel takes P (set by kernels_conv.c's prepare): a
 * pointwise conv (1x1, stride 1, unpadded) with one group, 24 to 320 input channels, at least
 * 16 pixels per plane, an activation cpu_avx2.h applies in registers, on a CPU with AVX2 and FMA (and LOOM_CPU_NO_AVX2
 * unset). Sets P->pw. */
int cpu_conv_pw_prepare(conv_params *p);

/* Runs the pointwise conv of P: Y = act(W X + bias + Z) (BIAS and Z may be NULL), split over the
 * pool by (image, 16-pixel panel, 48 output channels); no scratch. Only after
 * cpu_conv_pw_prepare accepted P. */
void cpu_conv_pw_run(const conv_params *p, const float *x, const float *w, const float *bias,
                     const float *z, float *y, cpu_pool *pool);

#endif /* LOOM_CPU_CONV_H */
