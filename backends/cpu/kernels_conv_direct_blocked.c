/*
 * Direct convolution with output channels in the vector lanes (AVX2 + FMA), for NCHW tensors,
 * instead of im2col + GEMM for spatial (not 1x1) convs with up to 128 output channels: there the
 * GEMM is poorly shaped (M = 16 for an FPN's 3x3 convs, K = 27 for a stem) and the im2col copy
 * costs as much as it.
 *
 * Output channels go in pairs of 8-lane blocks (16 channels; a last block padded with zero
 * weights). For 6 output pixels of one row at a time the kernel keeps 12 accumulators (6 pixels x
 * 2 blocks); each tap (input channel, kernel row, kernel column) loads the two weight vectors
 * and broadcasts each pixel's input value into both blocks' FMAs: 8 loads per 12 FMAs, any
 * stride or dilation. A task (image, band of output rows) first copies the input rows the band
 * reads, zero-padded, into a buffer on the stack (padded mode) and runs every pair of output
 * blocks over it, in strips of 6 consecutive pixels of the band (a strip may span rows; the last
 * one ends at the band's end, overlapping the one before). When even one padded row of every
 * input channel does not fit, row mode reads the NCHW input in place and copies only the
 * columns of strips whose taps leave the input. The accumulators start at the bias; they are
 * transposed to 8 pixels per channel and stored to the output rows, with the residual and the
 * common activations applied in registers (cpu_avx2.h); other activations run over the band
 * after. Constant weights are packed once, at prepare.
 *
 * Pooled mode (a FusedConv with a max pooling, windows = strides, no residual, padded mode): a
 * strip stores its 6 pixels x 16 channels as they are, channels in the lanes, to a band buffer
 * on the stack; the pooling then takes maxima of whole vectors and transposes only the pooled
 * pixels (a quarter of them for 2x2) into NCHW.
 *
 * Takes 1-D and 2-D convs with one group, on CPUs with AVX2 and FMA (LOOM_CPU_NO_AVX2=1 turns it
 * off; the tests run both); kernels_conv.c decides by shape which convs come here.
 */
#include "cpu_avx2.h"
#include "cpu_conv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Pixels per strip, output channels per step (two blocks of 8; four with AVX-512VL's 32
 * registers), and the floats of the stack buffer that holds a task's zero-padded input
 * (48 KiB). */
#define DCB_PX 6
#define DCB_PX_WIDE 8 /* 8 pixels x 16 channels, AVX-512VL: for planes 6 pixels do not divide */
#define DCB_OC 16
#define DCB_OC_WIDE 32
#define DCB_BUF_FLOATS 12288
/* Floats of the stack buffer that holds a pooled band's conv output, channels in the lanes
 * (32 KiB). */
#define DCB_CL_FLOATS 8192

/* Input rows a band of ROWS output rows reads, and the padded columns one output row reads. */
static int64_t dcb_rows_in(const conv_params *p, int64_t rows)
{
    return (rows - 1) * p->sh + (p->kh - 1) * p->dh + 1;
}
static int64_t dcb_cols(const conv_params *p)
{
    return (p->ow - 1) * p->sw + (p->kw - 1) * p->dw + 1;
}

int cpu_conv_dcb_prepare(conv_params *p)
{
    p->dcb = 0;
    p->dcb_band = 0;
    /* 1x1 convs stay GEMMs on the input as it is: measured faster (OpenBLAS) on MobileNet's
     * pointwise shapes, from 16 -> 72 channels on 56x56 to 576 -> 96 on 7x7. */
    if (p->group != 1 || p->kd != 1 || p->d != 1 || p->od != 1 || p->pointwise || p->ow < 1 ||
        p->c < 1)
        return 0;
    /* Up to 128 output channels: measured faster than im2col + GEMM on one thread from 3 -> 16
     * stems and 48 -> 16 FPN convs (where that GEMM is worst, 2x) to 96 -> 96 on 28x28 (10%);
     * wider outputs are left to the GEMM's blocking. */
    if (p->m > 128 || !cpu_avx2_ok())
        return 0;
    /* Padded mode: the most output rows whose input rows, zero-padded, fit the buffer for all
     * input channels, copied once per band for every output channel pair (measured 5% faster
     * than row mode on MobileNet's convs at batch 8, 18% on the CNN fixture's 16-pixel rows,
     * where two strips in three need a padded edge in row mode). Rows of 8+ pixels fall back to
     * row mode, reading the input in place, when even one row does not fit. */
    int64_t band = 0;
    {
        const int64_t plane = dcb_cols(p) * p->c;
        while (band < p->oh && dcb_rows_in(p, band + 1) * plane <= DCB_BUF_FLOATS)
            band++;
    }
    const int64_t ecols = (DCB_PX - 1) * p->sw + (p->kw - 1) * p->dw + 1;
    if (band == 0 && (p->ow < 8 || p->c * p->kh * ecols > DCB_BUF_FLOATS))
        return 0;
    p->dcb_band = band;
    p->dcb = 1;
    /* 32 output channels a step where 32 ymm registers hold its 24 accumulators, unless that
     * computes more padded channels than 16 a step (e.g. M = 40): 8 loads per 24 FMAs instead
     * of 8 per 12 (the CNN fixture's 16 -> 32 and 32 -> 64 convs 6% faster on one thread). */
    p->dcb_oc = DCB_OC;
    if (cpu_avx512vl_ok() && (p->m + DCB_OC_WIDE - 1) / DCB_OC_WIDE * DCB_OC_WIDE <=
                                 (p->m + DCB_OC - 1) / DCB_OC * DCB_OC)
        p->dcb_oc = DCB_OC_WIDE;
    /* Strips of 8 pixels (x 16 channels) where strips of 6 compute over 5% more pixels than a
     * padded band has (the last strip overlaps the one before): the CNN fixture's 4x4 output
     * planes, 18 pixels computed for 16. */
    p->dcb_px = DCB_PX;
    const int64_t t = p->oh * p->ow;
    const int64_t w6 = (t + DCB_PX - 1) / DCB_PX * DCB_PX - t;
    const int64_t w8 = (t + DCB_PX_WIDE - 1) / DCB_PX_WIDE * DCB_PX_WIDE - t;
    if (band > 0 && cpu_avx512vl_ok() && t >= DCB_PX_WIDE && w8 < w6 && w6 * 20 > t) {
        p->dcb_px = DCB_PX_WIDE;
        p->dcb_oc = DCB_OC;
    }
    return 1;
}

int cpu_conv_dcb_pool_ok(const conv_params *p)
{
    return p->pool && p->dcb_band >= p->pkh && p->pkh == p->psh && p->pkw == p->psw &&
           !p->has_z && p->ow * p->dcb_oc * p->pkh <= DCB_CL_FLOATS;
}

size_t cpu_conv_dcb_scratch(const conv_params *p)
{
    if (p->dcb_w)
        return 0;
    const int64_t groups = (p->m + p->dcb_oc - 1) / p->dcb_oc;
    return (size_t)(groups * (p->kc + 1) * p->dcb_oc) * sizeof(float);
}

/* Weights [oc][c][ki][kj] -> [group][ki][kj][c][G], G = P->dcb_oc, zero past M (the taps
 * outermost, so that the strip's inner loop walks the input channels); then biases
 * [group][G]. */
static void dcb_pack(const conv_params *p, const float *w, const float *bias, float *d)
{
    const int64_t G = p->dcb_oc, groups = (p->m + G - 1) / G, taps = p->kh * p->kw;
    for (int64_t g = 0; g < groups; g++) {
        float *dp = d + g * p->kc * G;
        for (int64_t l = 0; l < G; l++) {
            const int64_t oc = g * G + l;
            for (int64_t k = 0; k < p->kc; k++) /* k = ci * taps + tap */
                dp[((k % taps) * p->c + k / taps) * G + l] = oc < p->m ? w[oc * p->kc + k] : 0.0f;
        }
        float *bd = d + (groups * p->kc + g) * G;
        for (int64_t l = 0; l < G; l++) {
            const int64_t oc = g * G + l;
            bd[l] = bias && oc < p->m ? bias[oc] : 0.0f;
        }
    }
}

int cpu_conv_dcb_pack(conv_params *p, const float *w, const float *bias)
{
    float *d = malloc(cpu_conv_dcb_scratch(p));
    if (!d)
        return 0;
    dcb_pack(p, w, bias, d);
    p->dcb_w = d;
    return 1;
}

#ifdef CPU_HAVE_AVX2_CODE

typedef struct dcb_ctx {
    const conv_params *p;
    const float *x, *z;
    const float *wp; /* weights [group][ki][kj][c][G], then biases [group][G] (dcb_pack) */
    float *y;
    int64_t groups;  /* groups of G = p->dcb_oc output channels */
    int64_t bands, band;
    int padded;     /* padded mode: each task copies its input rows into a zero-padded buffer */
    int64_t lo, hi; /* row mode: output columns whose taps all read inside the input row */
} dcb_ctx;

/* DCB_PX output pixels of 8 * NB output channels (NB = 2, or 4 where 32 registers hold the
 * accumulators), whose input at tap (input channel ci, kernel row ki, kernel column kj) is
 * PX[j][ci * cstride + ki * kstride + kj * dw], for the kernel rows [ki0, ki1) that read inside
 * the input; weights WP, biases BP. The outputs are N <= DCB_PX consecutive pixels from AT in
 * each output plane; with FULL a whole 8-lane store stays in what this task writes (its two
 * extra pixels are written again by a later strip). With CL (pooled mode) the pixels are
 * stored as they are, 8 * NB channels each, activation applied. The accumulators are named
 * variables, not an array, so that they stay in registers. */
__attribute__((always_inline)) CPU_AVX2 static inline void
dcb_strip(const int NB, const int PX, const dcb_ctx *c, const float *const px[DCB_PX_WIDE],
          int64_t cstride,
          int64_t kstride, int64_t ki0, int64_t ki1, const float *wp, const float *bp, int64_t at,
          int64_t n, int64_t on, float *y, const float *z, int act, int full, float *cl)
{
    const conv_params *p = c->p;
    const int64_t G = 8 * NB;
    const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
    const __m256 b2 = NB > 2 ? _mm256_loadu_ps(bp + 16) : b0;
    const __m256 b3 = NB > 2 ? _mm256_loadu_ps(bp + 24) : b0;
    __m256 a0 = b0, a1 = b0, a2 = b0, a3 = b0, a4 = b0, a5 = b0;
    __m256 c0 = b1, c1 = b1, c2 = b1, c3 = b1, c4 = b1, c5 = b1;
    __m256 d0 = b2, d1 = b2, d2 = b2, d3 = b2, d4 = b2, d5 = b2;
    __m256 e0 = b3, e1 = b3, e2 = b3, e3 = b3, e4 = b3, e5 = b3;
    __m256 a6 = b0, a7 = b0, c6 = b1, c7 = b1; /* PX = 8 (with NB = 2) */
    const int64_t kw = p->kw, dw = p->dw, ch = p->c;
    const float *p0 = px[0], *p1 = px[1], *p2 = px[2], *p3 = px[3], *p4 = px[4], *p5 = px[5];
    const float *p6 = PX > 6 ? px[6] : p5, *p7 = PX > 6 ? px[7] : p5;
    for (int64_t ki = ki0; ki < ki1; ki++)
        for (int64_t kj = 0; kj < kw; kj++) {
            int64_t off = ki * kstride + kj * dw;
            const float *wr = wp + (ki * kw + kj) * ch * G;
            for (int64_t ci = 0; ci < ch; ci++, off += cstride, wr += G) {
                const __m256 w0 = _mm256_loadu_ps(wr), w1 = _mm256_loadu_ps(wr + 8);
                const __m256 w2 = NB > 2 ? _mm256_loadu_ps(wr + 16) : w0;
                const __m256 w3 = NB > 2 ? _mm256_loadu_ps(wr + 24) : w0;
                __m256 xv;
#define DCB_PIX(P, A, C, D, E)                                                                    \
    xv = _mm256_broadcast_ss((P) + off);                                                          \
    A = _mm256_fmadd_ps(w0, xv, A);                                                               \
    C = _mm256_fmadd_ps(w1, xv, C);                                                               \
    if (NB > 2) {                                                                                 \
        D = _mm256_fmadd_ps(w2, xv, D);                                                           \
        E = _mm256_fmadd_ps(w3, xv, E);                                                           \
    }
                DCB_PIX(p0, a0, c0, d0, e0)
                DCB_PIX(p1, a1, c1, d1, e1)
                DCB_PIX(p2, a2, c2, d2, e2)
                DCB_PIX(p3, a3, c3, d3, e3)
                DCB_PIX(p4, a4, c4, d4, e4)
                DCB_PIX(p5, a5, c5, d5, e5)
                if (PX > 6) {
                    xv = _mm256_broadcast_ss(p6 + off);
                    a6 = _mm256_fmadd_ps(w0, xv, a6);
                    c6 = _mm256_fmadd_ps(w1, xv, c6);
                    xv = _mm256_broadcast_ss(p7 + off);
                    a7 = _mm256_fmadd_ps(w0, xv, a7);
                    c7 = _mm256_fmadd_ps(w1, xv, c7);
                }
#undef DCB_PIX
            }
        }
    if (cl) {
        /* Pooled: the pixels as they are, G channels each, at CL (activation applied). */
        __m256 v[4 * DCB_PX_WIDE] = {a0, c0, d0, e0, a1, c1, d1, e1, a2, c2, d2, e2,
                                     a3, c3, d3, e3, a4, c4, d4, e4, a5, c5, d5, e5,
                                     a6, c6, d0, e0, a7, c7, d0, e0};
        if (act)
            cpu_avx2_act_n(&p->ep, v, 4 * PX);
        for (int64_t j = 0; j < n; j++)
            for (int k = 0; k < NB; k++)
                _mm256_storeu_ps(cl + G * j + 8 * k, v[4 * j + k]);
        return;
    }
    /* 8 rows of 8 (pixels 6 and 7 zero for PX = 6) -> 8 channels x 8 pixels, per block; two
     * blocks at a time. */
    const __m256 zero = _mm256_setzero_ps();
    for (int h = 0; h < NB / 2; h++) {
        const int64_t hon = on - 16 * h;
        if (hon <= 0)
            break;
        const int64_t lim = hon < 16 ? hon : 16;
        __m256 t[16];
        if (h == 0) {
            __m256 u[16] = {a0, a1, a2, a3, a4, a5, PX > 6 ? a6 : zero, PX > 6 ? a7 : zero,
                            c0, c1, c2, c3, c4, c5, PX > 6 ? c6 : zero, PX > 6 ? c7 : zero};
            memcpy(t, u, sizeof t);
        } else {
            __m256 u[16] = {d0, d1, d2, d3, d4, d5, zero, zero, e0, e1, e2, e3, e4, e5, zero, zero};
            memcpy(t, u, sizeof t);
        }
        cpu_avx2_transpose8(t);
        cpu_avx2_transpose8(t + 8);
        float *yh = y + 16 * h * p->p;
        if (act) {
            const float *zh = z ? z + 16 * h * p->p : NULL;
            if (zh)
                for (int64_t l = 0; l < lim; l++)
                    t[l] = _mm256_add_ps(t[l], cpu_avx2_load_n(zh + l * p->p + at, n));
            cpu_avx2_act_n(&p->ep, t, lim);
        }
        if (full)
            for (int64_t l = 0; l < lim; l++)
                _mm256_storeu_ps(yh + l * p->p + at, t[l]);
        else
            for (int64_t l = 0; l < lim; l++)
                cpu_avx2_store_n(yh + l * p->p + at, t[l], n);
    }
}

/* Padded mode: the band's input rows of every channel, zero-padded, into BUF as
 * [ci][row][col] (ROWS x COLS per channel; column col is input column col - pl): one memset
 * for the padding, then each row's inside (cpu_avx2_copy). */
CPU_AVX2 static void dcb_pad_band(const conv_params *p, const float *xn, int64_t oh0, int64_t oh1,
                                  float *buf)
{
    const int64_t rows = dcb_rows_in(p, oh1 - oh0), cols = dcb_cols(p);
    const int64_t ih0 = oh0 * p->sh - p->pt;
    memset(buf, 0, (size_t)(p->c * rows * cols) * sizeof *buf);
    /* Buffer columns [a, b) hold input columns [a - pl, b - pl). */
    const int64_t a = p->pl < cols ? p->pl : cols;
    const int64_t b = p->pl + p->w < cols ? p->pl + p->w : cols;
    const int64_t n = b - a;
    if (n <= 0)
        return;
    const int64_t r0 = ih0 < 0 ? -ih0 : 0, r1 = p->h - ih0 < rows ? p->h - ih0 : rows;
    for (int64_t ci = 0; ci < p->c; ci++)
        for (int64_t r = r0; r < r1; r++)
            cpu_avx2_copy(buf + (ci * rows + r) * cols + a,
                          xn + ci * p->in_sp + (ih0 + r) * p->w + a - p->pl, n);
}

/* Padded mode, one group of 16 output channels (two 8-lane blocks): strips of 6 consecutive output pixels of the band
 * (they may span rows: each pixel has its own input pointer) over the copy dcb_pad_band made
 * in BUF, the last strip ending at the band's end. */
__attribute__((always_inline)) CPU_AVX2 static inline void
dcb_band_padded(const int NB, const int PX, const dcb_ctx *c, const float *wp, const float *bp, int64_t oh0,
                int64_t oh1, int64_t on, float *y, const float *z, int act, const float *buf,
                float *cl)
{
    const conv_params *p = c->p;
    const int64_t rows = dcb_rows_in(p, oh1 - oh0), cols = dcb_cols(p);
    const int64_t total = (oh1 - oh0) * p->ow, n = total < PX ? total : PX;
    const int64_t cstride = rows * cols, kstride = p->dh * cols;
    for (int64_t q0 = 0;; q0 += PX) {
        if (q0 + PX > total)
            q0 = total > PX ? total - PX : 0;
        /* Each pixel's input: one division per strip, then step along the row (a divide per
         * pixel cost ~9% of the CNN fixture's 16 -> 32 conv). */
        const float *px[DCB_PX_WIDE];
        int64_t row = q0 / p->ow, col = q0 - row * p->ow;
        for (int64_t j = 0; j < PX; j++) {
            px[j] = buf + row * p->sh * cols + col * p->sw;
            if (q0 + j + 1 < total && ++col == p->ow) {
                col = 0;
                row++;
            }
        }
        dcb_strip(NB, PX, c, px, cstride, kstride, 0, p->kh, wp, bp, oh0 * p->ow + q0, n, on, y, z,
                  act, q0 + 8 <= total, cl ? cl + q0 * 8 * NB : NULL);
        if (q0 + PX >= total)
            break;
    }
}

/* Row mode (the padded input does not fit): strips of 6 along each output row read the NCHW
 * input in place; a strip whose taps leave the input reads a zero-padded copy of the columns it
 * needs. */
__attribute__((always_inline)) CPU_AVX2 static inline void
dcb_band_rows(const int NB, const dcb_ctx *c, const float *xn, const float *wp, const float *bp,
              int64_t oh0, int64_t oh1, int64_t on, float *y, const float *z, int act, float *edge)
{
    const conv_params *p = c->p;
    const int64_t ecols = (DCB_PX - 1) * p->sw + (p->kw - 1) * p->dw + 1;
    for (int64_t oh = oh0; oh < oh1; oh++) {
        /* Kernel rows [ki0, ki1) read inside the input. */
        const int64_t ih0 = oh * p->sh - p->pt;
        int64_t ki0 = 0, ki1 = p->kh;
        while (ki0 < ki1 && ih0 + ki0 * p->dh < 0)
            ki0++;
        while (ki1 > ki0 && ih0 + (ki1 - 1) * p->dh >= p->h)
            ki1--;
        const int64_t nk = ki1 - ki0;
        /* Strips of 6 from the left; the last one ends at the row's end (overlapping the one
         * before when 6 does not divide the row). */
        for (int64_t o0 = 0;; o0 += DCB_PX) {
            if (o0 + DCB_PX > p->ow)
                o0 = p->ow - DCB_PX;
            const int full = o0 + 8 <= p->ow;
            const float *px[DCB_PX_WIDE];
            if (o0 >= c->lo && o0 + DCB_PX <= c->hi) {
                const float *base = xn + ih0 * p->w + o0 * p->sw - p->pl;
                for (int64_t j = 0; j < DCB_PX; j++)
                    px[j] = base + j * p->sw;
                dcb_strip(NB, DCB_PX, c, px, p->in_sp, p->dh * p->w, ki0, ki1, wp, bp, oh * p->ow + o0,
                          DCB_PX, on, y, z, act, full, NULL);
            } else {
                /* Taps leave the input: the columns this strip reads, zero outside the input,
                 * as [ci][ki - ki0][ecols]. */
                const int64_t iw0 = o0 * p->sw - p->pl;
                for (int64_t ci = 0; ci < p->c; ci++)
                    for (int64_t k = 0; k < nk; k++) {
                        const float *xr = xn + ci * p->in_sp + (ih0 + (ki0 + k) * p->dh) * p->w;
                        float *e = edge + (ci * nk + k) * ecols;
                        for (int64_t q = 0; q < ecols; q++) {
                            const int64_t iw = iw0 + q;
                            e[q] = iw >= 0 && iw < p->w ? xr[iw] : 0.0f;
                        }
                    }
                for (int64_t j = 0; j < DCB_PX; j++)
                    px[j] = edge - ki0 * ecols + j * p->sw;
                dcb_strip(NB, DCB_PX, c, px, nk * ecols, ecols, ki0, ki1, wp, bp, oh * p->ow + o0,
                          DCB_PX, on, y, z, act, full, NULL);
            }
            if (o0 + DCB_PX >= p->ow)
                break;
        }
    }
}

/* Pooled mode: the max pooling of a band's conv output CL ([row][col][8 * NB], rows [OH0, OH1),
 * activated) into the pooled rows it covers of the ON output planes at Y (P->ph x P->pwo
 * each): 8 pooled pixels x 16 channels at a time, transposed to 8 pixels per channel. Taps in
 * MaxPool's order with its maximum (kernels_pooling.c), so the result is the unfused one. */
__attribute__((always_inline)) CPU_AVX2 static inline void
dcb_pool_band(const int NB, const conv_params *p, const float *cl, int64_t oh0, int64_t oh1,
              int64_t on, float *y)
{
    const int64_t G = 8 * NB, pr0 = oh0 / p->psh;
    int64_t pr1 = oh1 / p->psh;
    if (pr1 > p->ph)
        pr1 = p->ph;
    const int64_t pp = p->ph * p->pwo;
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int64_t pr = pr0; pr < pr1; pr++) {
        const float *rb = cl + (pr * p->psh - oh0) * p->ow * G;
        for (int64_t pc0 = 0; pc0 < p->pwo; pc0 += 8) {
            const int64_t nc = p->pwo - pc0 < 8 ? p->pwo - pc0 : 8;
            for (int64_t h = 0; h < NB / 2 && on > 16 * h; h++) {
                const int64_t lim = on - 16 * h < 16 ? on - 16 * h : 16;
                __m256 t[16];
                for (int64_t j = 0; j < 8; j++) {
                    __m256 m0 = ninf, m1 = ninf;
                    if (j < nc)
                        for (int64_t i = 0; i < p->pkh; i++) {
                            const float *r = rb + (i * p->ow + (pc0 + j) * p->psw) * G + 16 * h;
                            for (int64_t k = 0; k < p->pkw; k++) {
                                m0 = _mm256_max_ps(_mm256_loadu_ps(r + k * G), m0);
                                m1 = _mm256_max_ps(_mm256_loadu_ps(r + k * G + 8), m1);
                            }
                        }
                    t[j] = m0;
                    t[8 + j] = m1;
                }
                cpu_avx2_transpose8(t);
                cpu_avx2_transpose8(t + 8);
                float *yr = y + 16 * h * pp + pr * p->pwo + pc0;
                if (nc == 8)
                    for (int64_t l = 0; l < lim; l++)
                        _mm256_storeu_ps(yr + l * pp, t[l]);
                else
                    for (int64_t l = 0; l < lim; l++)
                        cpu_avx2_store_n(yr + l * pp, t[l], nc);
            }
        }
    }
}

__attribute__((always_inline)) CPU_AVX2 static inline void dcb_task_t(const int NB, const int PX,
                                                                        void *arg, size_t t0,
                                                                        size_t t1)
{
    const dcb_ctx *c = arg;
    const conv_params *p = c->p;
    const int act = cpu_avx2_act_ok(p->ep.act);
    float buf[DCB_BUF_FLOATS];
    float cl[DCB_CL_FLOATS]; /* pooled mode only */
    for (size_t t = t0; t < t1; t++) {
        /* Padded mode: a task is (image, band) and copies the band's input once for every
         * pair of output blocks; row mode: (image, pair, band). */
        const int64_t band = (int64_t)t % c->bands, item = (int64_t)t / c->bands;
        const int64_t n = c->padded ? item : item / c->groups;
        const int64_t g0 = c->padded ? 0 : item % c->groups;
        const int64_t g1 = c->padded ? c->groups : g0 + 1;
        const int64_t oh0 = band * c->band, oh1 = oh0 + c->band < p->oh ? oh0 + c->band : p->oh;
        const float *xn = c->x + n * p->c * p->in_sp;
        if (c->padded)
            dcb_pad_band(p, xn, oh0, oh1, buf);
        for (int64_t g = g0; g < g1; g++) {
            const int64_t G = 8 * NB, oc0 = g * G;
            const int64_t on = p->m - oc0 < G ? p->m - oc0 : G;
            const float *wp = c->wp + g * p->kc * G;
            const float *bp = c->wp + (c->groups * p->kc + g) * G;
            float *y = c->y + (n * p->m + oc0) * p->p;
            const float *z = c->z ? c->z + (n * p->m + oc0) * p->p : NULL;
            if (p->pool_fast) {
                dcb_band_padded(NB, PX, c, wp, bp, oh0, oh1, on, y, z, act, buf, cl);
                if (!act)
                    cpu_epilogue_apply(&p->ep, cl, (size_t)((oh1 - oh0) * p->ow * G), 0.0f, NULL,
                                       NULL);
                dcb_pool_band(NB, p, cl, oh0, oh1, on, c->y + (n * p->m + oc0) * p->ph * p->pwo);
                continue;
            }
            if (c->padded)
                dcb_band_padded(NB, PX, c, wp, bp, oh0, oh1, on, y, z, act, buf, NULL);
            else
                dcb_band_rows(NB, c, xn, wp, bp, oh0, oh1, on, y, z, act, buf);
            if (!act)
                conv_epilogue_rows(p, y, z, on, oh0, oh1);
        }
    }
}

CPU_AVX2 static void dcb_task(void *arg, size_t t0, size_t t1)
{
    dcb_task_t(2, DCB_PX, arg, t0, t1);
}

/* 32 output channels a step: 24 accumulators, 4 weight vectors and the broadcast. */
CPU_AVX512VL static void dcb_task_wide(void *arg, size_t t0, size_t t1)
{
    dcb_task_t(4, DCB_PX, arg, t0, t1);
}

/* 8 pixels a step (16 channels): 16 accumulators. */
CPU_AVX512VL static void dcb_task_px8(void *arg, size_t t0, size_t t1)
{
    dcb_task_t(2, DCB_PX_WIDE, arg, t0, t1);
}

void cpu_conv_dcb_run(const conv_params *p, const float *x, const float *w, const float *bias,
                      const float *z, float *y, float *scratch, cpu_pool *pool)
{
    dcb_ctx c = {.p = p, .x = x, .z = z, .wp = p->dcb_w, .y = y,
                 .groups = (p->m + p->dcb_oc - 1) / p->dcb_oc};
    if (!c.wp) { /* weights that are not constants: packed here, every run */
        dcb_pack(p, w, bias, scratch);
        c.wp = scratch;
    }
    /* Interior columns: o * sw - pl >= 0 and o * sw - pl + (kw - 1) * dw < w. */
    c.lo = p->pl > 0 ? (p->pl + p->sw - 1) / p->sw : 0;
    const int64_t last = p->w - 1 - (p->kw - 1) * p->dw + p->pl; /* o * sw <= last */
    c.hi = last < 0 ? 0 : last / p->sw + 1;
    if (c.hi > p->ow)
        c.hi = p->ow;
    if (c.lo > c.hi)
        c.lo = c.hi;
    /* Bands of rows: no taller than the padded buffer allows (padded mode), and short enough
     * for about 4 tasks per thread. A padded task covers every group of output channels. */
    c.padded = p->dcb_band > 0;
    const int64_t items = c.padded ? p->n : p->n * c.groups;
    const int64_t want = 4 * (int64_t)cpu_pool_threads(pool);
    const int64_t per = items >= want ? 1 : (want + items - 1) / items;
    c.band = (p->oh + per - 1) / per;
    if (c.padded && c.band > p->dcb_band)
        c.band = p->dcb_band;
    if (p->pool_fast) {
        /* Whole pooling windows per band, within the pooled band's buffer. */
        int64_t most = DCB_CL_FLOATS / (p->ow * p->dcb_oc);
        if (most > p->dcb_band)
            most = p->dcb_band;
        most -= most % p->pkh;
        c.band = (c.band + p->pkh - 1) / p->pkh * p->pkh;
        if (c.band > most)
            c.band = most;
    }
    if (c.band < 1)
        c.band = 1;
    c.bands = (p->oh + c.band - 1) / c.band;
    const double work =
        (double)(c.band * p->ow * p->kc * p->dcb_oc) * (double)(c.padded ? c.groups : 1) + 1.0;
    const size_t grain = work >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / work) + 1;
    cpu_parallel_for(pool, (size_t)(items * c.bands), grain,
                     p->dcb_px == DCB_PX_WIDE    ? dcb_task_px8
                     : p->dcb_oc == DCB_OC_WIDE ? dcb_task_wide
                                                : dcb_task,
                     &c);
}

#else

void cpu_conv_dcb_run(const conv_params *p, const float *x, const float *w, const float *bias,
                      const float *z, float *y, float *scratch, cpu_pool *pool)
{
    /* cpu_conv_dcb_prepare never accepts a conv where the AVX2 code is not built. */
    (void)p, (void)x, (void)w, (void)bias, (void)z, (void)y, (void)scratch, (void)pool;
}

#endif
