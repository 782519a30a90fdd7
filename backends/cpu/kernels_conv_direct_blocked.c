/*
 * Direct convolution with output channels in the vector lanes (AVX2 + FMA), for NCHW tensors,
 * instead of im2col + GEMM for spatial (not 1x1) convs with up to 128 output channels: there the
 * GEMM is poorly shaped (M = 16 for an FPN's 3x3 convs, K = 27 for a stem) and the im2col copy
 * costs as much as it.
 *
 * Output channels go in pairs of 8-lane blocks (16 channels; a last block padded with zero
 * weights). For 6 output pixels of one row at a time the kernel keeps 12 accumulators (6 pixels x
 * 2 blocks); each tap (input channel, kernel row, kernel column) loads the two weight vectors
 * and broadcasts each pixel's input value into both blocks' FMAs: 8 loads per 12 FMAs, read
 * straight from the NCHW input, any stride or dilation. Pixels whose taps leave the input (the
 * padding at the ends of a row) read a zero-padded copy of the columns they need instead; the
 * last strip of a row ends at the row's end, overlapping the one before it when 6 does not
 * divide the row. The accumulators start at the bias; they are transposed to
 * 8 pixels per channel and stored to the output rows, with the residual and the common
 * activations applied in registers (cpu_avx2.h); other activations run over the band after.
 *
 * Takes 1-D and 2-D convs with one group, on CPUs with AVX2 and FMA (LOOM_CPU_NO_AVX2=1 turns it
 * off; the tests run both); kernels_conv.c decides by shape which convs come here.
 */
#include "cpu_avx2.h"
#include "cpu_conv.h"

#include <string.h>

/* Pixels per strip, output channels per step (two blocks of 8), and the floats of the stack
 * buffer that holds a task's zero-padded input (48 KiB). */
#define DCB_PX 6
#define DCB_OC 16
#define DCB_BUF_FLOATS 12288

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
    /* Rows of 16+ pixels: row mode, reading the input in place (measured 5-10% faster than
     * copying it padded: the copy costs more than the edge strips save). Shorter rows: padded
     * mode, with the most output rows whose input rows, zero-padded, fit the buffer for all
     * input channels (measured faster than row mode on 10-pixel rows, as fast on 16); rows of
     * 8+ pixels fall back to row mode when even one row does not fit. */
    int64_t band = 0;
    if (p->ow < 16) {
        const int64_t plane = dcb_cols(p) * p->c;
        while (band < p->oh && dcb_rows_in(p, band + 1) * plane <= DCB_BUF_FLOATS)
            band++;
    }
    const int64_t ecols = (DCB_PX - 1) * p->sw + (p->kw - 1) * p->dw + 1;
    if (band == 0 && (p->ow < 8 || p->c * p->kh * ecols > DCB_BUF_FLOATS))
        return 0;
    p->dcb_band = band;
    p->dcb = 1;
    return 1;
}

size_t cpu_conv_dcb_scratch(const conv_params *p)
{
    const int64_t pairs = (p->m + DCB_OC - 1) / DCB_OC;
    return (size_t)(pairs * (p->kc + 1) * DCB_OC) * sizeof(float);
}

#ifdef CPU_HAVE_AVX2_CODE

typedef struct dcb_ctx {
    const conv_params *p;
    const float *x, *z;
    const float *wp; /* weights [pair][c][ki][kj][16], then biases [pair][16] */
    float *y;
    int64_t pairs, bands, band;
    int padded;     /* padded mode: each task copies its input rows into a zero-padded buffer */
    int64_t lo, hi; /* row mode: output columns whose taps all read inside the input row */
} dcb_ctx;

/* DCB_PX output pixels, whose input at tap (input channel ci, kernel row ki, kernel column kj)
 * is PX[j][ci * cstride + ki * kstride + kj * dw], for the kernel rows [ki0, ki1) that read
 * inside the input. The outputs are N <= DCB_PX consecutive pixels from AT in each output
 * plane; with FULL a whole 8-lane store stays in what this task writes (its two extra pixels
 * are written again by a later strip). The 12 accumulators are named variables, not an array,
 * so that they stay in registers. */
CPU_AVX2 static void dcb_strip(const dcb_ctx *c, const float *const px[DCB_PX], int64_t cstride,
                               int64_t kstride, int64_t ki0, int64_t ki1, const float *wp,
                               __m256 b0, __m256 b1, int64_t at, int64_t n, int64_t on, float *y,
                               const float *z, int act, int full)
{
    const conv_params *p = c->p;
    __m256 a0 = b0, a1 = b0, a2 = b0, a3 = b0, a4 = b0, a5 = b0;
    __m256 c0 = b1, c1 = b1, c2 = b1, c3 = b1, c4 = b1, c5 = b1;
    const int64_t kw = p->kw, kh = p->kh, dw = p->dw, ch = p->c;
    const float *p0 = px[0], *p1 = px[1], *p2 = px[2], *p3 = px[3], *p4 = px[4], *p5 = px[5];
    for (int64_t ci = 0; ci < ch; ci++)
        for (int64_t ki = ki0; ki < ki1; ki++) {
            int64_t off = ci * cstride + ki * kstride;
            const float *wr = wp + (ci * kh + ki) * kw * DCB_OC;
            for (int64_t kj = 0; kj < kw; kj++, off += dw, wr += DCB_OC) {
                const __m256 w0 = _mm256_loadu_ps(wr), w1 = _mm256_loadu_ps(wr + 8);
                __m256 xv;
#define DCB_PIX(P, A, C)                                                                          \
    xv = _mm256_broadcast_ss((P) + off);                                                          \
    A = _mm256_fmadd_ps(w0, xv, A);                                                               \
    C = _mm256_fmadd_ps(w1, xv, C);
                DCB_PIX(p0, a0, c0)
                DCB_PIX(p1, a1, c1)
                DCB_PIX(p2, a2, c2)
                DCB_PIX(p3, a3, c3)
                DCB_PIX(p4, a4, c4)
                DCB_PIX(p5, a5, c5)
#undef DCB_PIX
            }
        }
    /* 8 rows of 8 (pixels 6 and 7 zero) -> 8 channels x 8 pixels, per block. */
    const __m256 zero = _mm256_setzero_ps();
    __m256 t[2][8] = {{a0, a1, a2, a3, a4, a5, zero, zero}, {c0, c1, c2, c3, c4, c5, zero, zero}};
    cpu_avx2_transpose8(t[0]);
    cpu_avx2_transpose8(t[1]);
    for (int64_t l = 0; l < on; l++) {
        __m256 v = t[l >> 3][l & 7];
        const int64_t o = l * p->p + at;
        if (act) {
            if (z)
                v = _mm256_add_ps(v, cpu_avx2_load_n(z + o, n));
            v = cpu_avx2_act(&p->ep, v);
        }
        cpu_avx2_store_n(y + o, v, full ? 8 : n);
    }
}

/* Padded mode: the band's input rows of every channel, zero-padded, into BUF as
 * [ci][row][col] (ROWS x COLS per channel; column col is input column col - pl), then strips of
 * 6 consecutive output pixels of the band (they may span rows: each pixel has its own input
 * pointer), the last strip ending at the band's end. */
CPU_AVX2 static void dcb_band_padded(const dcb_ctx *c, const float *xn, const float *wp,
                                     __m256 b0, __m256 b1, int64_t oh0, int64_t oh1, int64_t on,
                                     float *y, const float *z, int act, float *buf)
{
    const conv_params *p = c->p;
    const int64_t rows = dcb_rows_in(p, oh1 - oh0), cols = dcb_cols(p);
    const int64_t ih0 = oh0 * p->sh - p->pt;
    for (int64_t ci = 0; ci < p->c; ci++)
        for (int64_t r = 0; r < rows; r++) {
            float *d = buf + (ci * rows + r) * cols;
            const int64_t ih = ih0 + r;
            if (ih < 0 || ih >= p->h) {
                memset(d, 0, (size_t)cols * sizeof *d);
                continue;
            }
            const float *src = xn + ci * p->in_sp + ih * p->w;
            /* Buffer columns [a, b) hold input columns [a - pl, b - pl). */
            const int64_t a = p->pl < cols ? p->pl : cols;
            const int64_t b = p->pl + p->w < cols ? p->pl + p->w : cols;
            memset(d, 0, (size_t)a * sizeof *d);
            if (b > a)
                memcpy(d + a, src, (size_t)(b - a) * sizeof *d);
            if (b < cols)
                memset(d + (b > a ? b : a), 0, (size_t)(cols - (b > a ? b : a)) * sizeof *d);
        }
    const int64_t total = (oh1 - oh0) * p->ow, n = total < DCB_PX ? total : DCB_PX;
    const int64_t cstride = rows * cols, kstride = p->dh * cols;
    for (int64_t q0 = 0;; q0 += DCB_PX) {
        if (q0 + DCB_PX > total)
            q0 = total > DCB_PX ? total - DCB_PX : 0;
        const float *px[DCB_PX];
        for (int64_t j = 0; j < DCB_PX; j++) {
            const int64_t q = q0 + j < total ? q0 + j : total - 1;
            px[j] = buf + (q / p->ow) * p->sh * cols + (q % p->ow) * p->sw;
        }
        dcb_strip(c, px, cstride, kstride, 0, p->kh, wp, b0, b1, oh0 * p->ow + q0, n, on, y, z,
                  act, q0 + 8 <= total);
        if (q0 + DCB_PX >= total)
            break;
    }
}

/* Row mode (the padded input does not fit): strips of 6 along each output row read the NCHW
 * input in place; a strip whose taps leave the input reads a zero-padded copy of the columns it
 * needs. */
CPU_AVX2 static void dcb_band_rows(const dcb_ctx *c, const float *xn, const float *wp, __m256 b0,
                                   __m256 b1, int64_t oh0, int64_t oh1, int64_t on, float *y,
                                   const float *z, int act, float *edge)
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
            const float *px[DCB_PX];
            if (o0 >= c->lo && o0 + DCB_PX <= c->hi) {
                const float *base = xn + ih0 * p->w + o0 * p->sw - p->pl;
                for (int64_t j = 0; j < DCB_PX; j++)
                    px[j] = base + j * p->sw;
                dcb_strip(c, px, p->in_sp, p->dh * p->w, ki0, ki1, wp, b0, b1, oh * p->ow + o0,
                          DCB_PX, on, y, z, act, full);
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
                dcb_strip(c, px, nk * ecols, ecols, ki0, ki1, wp, b0, b1, oh * p->ow + o0,
                          DCB_PX, on, y, z, act, full);
            }
            if (o0 + DCB_PX >= p->ow)
                break;
        }
    }
}

CPU_AVX2 static void dcb_task(void *arg, size_t t0, size_t t1)
{
    const dcb_ctx *c = arg;
    const conv_params *p = c->p;
    const int act = cpu_avx2_act_ok(p->ep.act);
    float buf[DCB_BUF_FLOATS];
    for (size_t t = t0; t < t1; t++) {
        const int64_t band = (int64_t)t % c->bands, item = (int64_t)t / c->bands;
        const int64_t n = item / c->pairs, pair = item % c->pairs, oc0 = pair * DCB_OC;
        const int64_t on = p->m - oc0 < DCB_OC ? p->m - oc0 : DCB_OC;
        const int64_t oh0 = band * c->band, oh1 = oh0 + c->band < p->oh ? oh0 + c->band : p->oh;
        const float *wp = c->wp + pair * p->kc * DCB_OC;
        const float *bp = c->wp + (c->pairs * p->kc + pair) * DCB_OC;
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
        const float *xn = c->x + n * p->c * p->in_sp;
        float *y = c->y + (n * p->m + oc0) * p->p;
        const float *z = c->z ? c->z + (n * p->m + oc0) * p->p : NULL;
        if (c->padded)
            dcb_band_padded(c, xn, wp, b0, b1, oh0, oh1, on, y, z, act, buf);
        else
            dcb_band_rows(c, xn, wp, b0, b1, oh0, oh1, on, y, z, act, buf);
        if (!act)
            conv_epilogue_rows(p, y, z, on, oh0, oh1);
    }
}

void cpu_conv_dcb_run(const conv_params *p, const float *x, const float *w, const float *bias,
                      const float *z, float *y, float *scratch, cpu_pool *pool)
{
    dcb_ctx c = {.p = p, .x = x, .z = z, .wp = scratch, .y = y,
                 .pairs = (p->m + DCB_OC - 1) / DCB_OC};
    /* Weights [oc][c][ki][kj] -> [pair][c][ki][kj][16], zero past M; biases [pair][16]. */
    for (int64_t pair = 0; pair < c.pairs; pair++) {
        float *d = scratch + pair * p->kc * DCB_OC;
        for (int64_t k = 0; k < p->kc; k++)
            for (int64_t l = 0; l < DCB_OC; l++) {
                const int64_t oc = pair * DCB_OC + l;
                d[k * DCB_OC + l] = oc < p->m ? w[oc * p->kc + k] : 0.0f;
            }
        float *bd = scratch + (c.pairs * p->kc + pair) * DCB_OC;
        for (int64_t l = 0; l < DCB_OC; l++) {
            const int64_t oc = pair * DCB_OC + l;
            bd[l] = bias && oc < p->m ? bias[oc] : 0.0f;
        }
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
     * for about 4 tasks per thread. */
    c.padded = p->dcb_band > 0;
    const int64_t items = p->n * c.pairs, want = 4 * (int64_t)cpu_pool_threads(pool);
    const int64_t per = items >= want ? 1 : (want + items - 1) / items;
    c.band = (p->oh + per - 1) / per;
    if (c.padded && c.band > p->dcb_band)
        c.band = p->dcb_band;
    if (c.band < 1)
        c.band = 1;
    c.bands = (p->oh + c.band - 1) / c.band;
    const double work = (double)(c.band * p->ow * p->kc * DCB_OC) + 1.0;
    const size_t grain = work >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / work) + 1;
    cpu_parallel_for(pool, (size_t)(items * c.bands), grain, dcb_task, &c);
}

#else

void cpu_conv_dcb_run(const conv_params *p, const float *x, const float *w, const float *bias,
                      const float *z, float *y, float *scratch, cpu_pool *pool)
{
    /* cpu_conv_dcb_prepare never accepts a conv where the AVX2 code is not built. */
    (void)p, (void)x, (void)w, (void)bias, (void)z, (void)y, (void)scratch, (void)pool;
}

#endif
