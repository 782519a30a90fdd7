/*
 * Direct convolution for convs with few input channels (a network's stem: 3 -> 16 channels,
 * 3x3 at stride 2 on 224x224 images), output pixels in the vector lanes (AVX2 + FMA), NCHW.
 *
 * With 3 input channels a 3x3 conv has 27 taps per output, too few to hide the 8x8 transposes
 * that kernels_conv_direct_blocked.c needs to store channels-in-lanes accumulators as NCHW rows
 * (measured: a quarter of its time on the CNN fixture's stem). Here the lanes hold 8 consecutive
 * output pixels of one channel, so results are stored as they are: a strip is 3 output channels
 * by up to 32 pixels of one row (12 accumulators); each tap broadcasts the 3 channels' weights
 * and loads the 4 input vectors, 7 loads per 12 FMAs. Where AVX-512VL gives 32 ymm registers a
 * strip is 4 channels (16 accumulators, 8 loads per 16 FMAs, and no wasted lanes for 16 or 32
 * output channels): the CNN fixture's stem 18% faster on one thread (Zen 4).
 *
 * A FusedConv with a max pooling (windows = strides, no residual) writes a band's rows to a
 * buffer on the stack and pools them into the output from there.
 *
 * The input rows a band of output rows reads are first copied, zero-padded, into a buffer on
 * the stack, for stride 2 split into even and odd columns, so that every tap of a strip reads
 * consecutive floats. Bias, residual and the common activations are applied in registers; other
 * activations run over the band afterwards.
 *
 * Takes 1-D and 2-D convs with one group, at most 4 input channels, stride 1 or 2 along W, no
 * dilation along W, rows of 8 or more output pixels, on CPUs with AVX2 and FMA
 * (LOOM_CPU_NO_AVX2=1 turns it off; the tests run both).
 */
#include "cpu_avx2.h"
#include "cpu_conv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STEM_OC 4            /* most output channels per strip (3 with AVX2's 16 registers) */
#define STEM_NV 4            /* most 8-pixel vectors per strip */
#define STEM_MAX_C 4         /* most input channels */
#define STEM_MAX_KW 16       /* most kernel columns */
#define STEM_BUF_FLOATS 12288 /* the stack buffer of a task's padded input (48 KiB) */
#define STEM_YB_FLOATS 8192   /* the stack buffer of a pooled band's 3 output planes (32 KiB) */

/* Floats of one buffered input row: the padded columns the outputs read, for stride 2 as even
 * columns then odd ones (NE each). */
static int64_t stem_row_len(const conv_params *p, int64_t *ne)
{
    *ne = p->ow + (p->kw - 1) / 2;
    return p->sw == 1 ? p->ow + p->kw - 1 : 2 * *ne;
}

static int64_t stem_rows_in(const conv_params *p, int64_t rows)
{
    return (rows - 1) * p->sh + (p->kh - 1) * p->dh + 1;
}

int cpu_conv_stem_prepare(conv_params *p)
{
    p->stem_band = 0;
    if (p->group != 1 || p->kd != 1 || p->d != 1 || p->od != 1 || p->c < 1 ||
        p->c > STEM_MAX_C || p->kw > STEM_MAX_KW || (p->sw != 1 && p->sw != 2) || p->dw != 1 ||
        p->ow < 8 || p->m < 1 || !cpu_avx2_ok())
        return 0;
    int64_t ne;
    const int64_t plane = stem_row_len(p, &ne) * p->c;
    int64_t band = 0;
    while (band < p->oh && stem_rows_in(p, band + 1) * plane <= STEM_BUF_FLOATS)
        band++;
    p->stem_band = band;
    p->stem_oc = cpu_avx512vl_ok() ? 4 : 3;
    return band > 0;
}

/* The most output rows of a pooled band: whole windows that fit both buffers. */
static int64_t stem_pool_band(const conv_params *p)
{
    int64_t most = STEM_YB_FLOATS / (STEM_OC * p->ow);
    if (most > p->stem_band)
        most = p->stem_band;
    return most - most % p->pkh;
}

int cpu_conv_stem_pool_ok(const conv_params *p)
{
    return p->pool && p->pkh == p->psh && p->pkw == p->psw && !p->has_z &&
           stem_pool_band(p) >= p->pkh;
}

size_t cpu_conv_stem_scratch(const conv_params *p)
{
    if (p->stem_w)
        return 0;
    const int64_t groups = (p->m + p->stem_oc - 1) / p->stem_oc;
    return (size_t)(groups * (p->kc + 1) * p->stem_oc) * sizeof(float);
}

/* Weights [oc][c][kh][kw] -> [group][c][kh][kw][3], zero past M; then biases [group][3]. */
static void stem_pack(const conv_params *p, const float *w, const float *bias, float *d)
{
    const int64_t noc = p->stem_oc, groups = (p->m + noc - 1) / noc;
    for (int64_t g = 0; g < groups; g++)
        for (int64_t l = 0; l < noc; l++) {
            const int64_t oc = g * noc + l;
            for (int64_t k = 0; k < p->kc; k++)
                d[(g * p->kc + k) * noc + l] = oc < p->m ? w[oc * p->kc + k] : 0.0f;
            d[(groups * p->kc + g) * noc + l] = bias && oc < p->m ? bias[oc] : 0.0f;
        }
}

int cpu_conv_stem_pack(conv_params *p, const float *w, const float *bias)
{
    float *d = malloc(cpu_conv_stem_scratch(p));
    if (!d)
        return 0;
    stem_pack(p, w, bias, d);
    p->stem_w = d;
    return 1;
}

#ifdef CPU_HAVE_AVX2_CODE

typedef struct stem_ctx {
    const conv_params *p;
    const float *x, *z, *wp;
    float *y;
    int64_t groups, band, bands, rl, ne;
    int64_t ys; /* floats between the output planes a strip writes (P->p, or a pooled band's) */
    int64_t pys;   /* pooled output planes' floats (P->ph * P->pwo) */
    int pool2;     /* pooled 2x2/2 in registers: activation in registers, 16+ pixel rows */
    int64_t koff[STEM_MAX_KW]; /* where tap kj's column of output 0 is in a buffered row */
} stem_ctx;

/* Padded columns [Q0, Q1) of one input row SRC (column q is input column q - PL) into D: as
 * they are (stride 1), or as even columns at D[q / 2] and odd ones at D[NE + q / 2] (stride 2),
 * 16 columns at a time split by shuffles. */
CPU_AVX2 static void stem_copy_cols(const float *src, int64_t pl, int64_t q0, int64_t q1, float *d,
                                    int sw, int64_t ne)
{
    if (q1 <= q0)
        return;
    if (sw == 1) {
        cpu_avx2_copy(d + q0, src + q0 - pl, q1 - q0);
        return;
    }
    int64_t q = q0;
    if (q & 1) {
        d[ne + q / 2] = src[q - pl];
        q++;
    }
    for (; q + 16 <= q1; q += 16) {
        const __m256 lo = _mm256_loadu_ps(src + q - pl), hi = _mm256_loadu_ps(src + q - pl + 8);
        /* lanes: columns 0 2 8 10 | 4 6 12 14, and the odd ones; 64-bit order 0 2 1 3 fixes it */
        const __m256 ev = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
        const __m256 od = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
        _mm256_storeu_ps(d + q / 2,
                         _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xd8)));
        _mm256_storeu_ps(d + ne + q / 2,
                         _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xd8)));
    }
    for (; q < q1; q++)
        d[(q & 1) * ne + q / 2] = src[q - pl];
}

/* The band's input rows [ci][row][rl], zero outside the input (one memset, then the inside of
 * each row); stride 2 rows as even padded columns then odd ones. */
CPU_AVX2 static void stem_pad_band(const stem_ctx *c, const float *xn, int64_t oh0, int64_t oh1,
                                   float *buf)
{
    const conv_params *p = c->p;
    const int64_t rows = stem_rows_in(p, oh1 - oh0), ih0 = oh0 * p->sh - p->pt;
    const int64_t cols = p->sw == 1 ? c->rl : 2 * c->ne;
    /* Buffer columns [a, b) hold input columns [a - pl, b - pl). */
    const int64_t a = p->pl < cols ? p->pl : cols;
    const int64_t b = p->pl + p->w < cols ? p->pl + p->w : cols;
    memset(buf, 0, (size_t)(p->c * rows * c->rl) * sizeof *buf);
    const int64_t r0 = ih0 < 0 ? -ih0 : 0, r1 = p->h - ih0 < rows ? p->h - ih0 : rows;
    for (int64_t ci = 0; ci < p->c; ci++)
        for (int64_t r = r0; r < r1; r++)
            stem_copy_cols(xn + ci * p->in_sp + (ih0 + r) * p->w, p->pl, a, b,
                           buf + (ci * rows + r) * c->rl, (int)p->sw, c->ne);
}

/* NV (1..4) vectors V0..V3 of one output channel's row to Y, plus Z (may be NULL) and the
 * activation in registers when ACT. */
__attribute__((always_inline)) CPU_AVX2 static inline void
stem_out(const int NV, const conv_params *p, __m256 v0, __m256 v1, __m256 v2, __m256 v3,
         float *y, const float *z, int act)
{
    __m256 t[STEM_NV] = {v0, v1, v2, v3};
    if (act) {
        if (z)
            for (int v = 0; v < NV; v++)
                t[v] = _mm256_add_ps(t[v], _mm256_loadu_ps(z + 8 * v));
        cpu_avx2_act_n(&p->ep, t, NV);
    }
    for (int v = 0; v < NV; v++)
        _mm256_storeu_ps(y + 8 * v, t[v]);
}

/* A 2x2/2 max pooling in registers of one channel's two rows of 16 pixels (R0 = V0 V1, R1 = V2
 * V3, activated first when ACT): 8 pooled pixels to Y. The operations of MaxPool's AVX2 rows
 * (kernels_pooling.c), so the result is the unfused one. */
__attribute__((always_inline)) CPU_AVX2 static inline void
stem_pool_out(const conv_params *p, __m256 v0, __m256 v1, __m256 v2, __m256 v3, float *y, int act)
{
    __m256 t[4] = {v0, v1, v2, v3};
    if (act)
        cpu_avx2_act_n(&p->ep, t, 4);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const __m256 lo = _mm256_max_ps(t[2], _mm256_max_ps(t[0], ninf));
    const __m256 hi = _mm256_max_ps(t[3], _mm256_max_ps(t[1], ninf));
    const __m256 ev = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 od = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    const __m256 m = _mm256_max_ps(od, ev); /* lanes: outputs 0 1 4 5 | 2 3 6 7 */
    _mm256_storeu_ps(y, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xd8)));
}

/* One strip: output pixels [O0, O0 + 8 * NV) of the row whose buffered input starts at XB (tap
 * (ci, ki) at XB + ci * cstride + ki * kstride), for the NOC output channels of weights WG; ON
 * of them are stored at Y (their planes, C->ys floats apart, at the row's start). With POOL
 * (NV = 4), pixels [O0, O0 + 16) of that row and of the next (ROFF floats on in the buffer),
 * max-pooled 2x2/2 in registers: 8 pooled pixels a channel to Y (planes C->pys apart). NOC, NV
 * and POOL are constants where this is inlined; the accumulators are named variables, not an
 * array, so that they stay in registers. */
__attribute__((always_inline)) CPU_AVX2 static inline void
stem_strip_t(const int NOC, const int NV, const int POOL, const stem_ctx *c, const float *xb,
             int64_t cstride, int64_t kstride, const float *wg, const float *bg, int64_t o0,
             int64_t on, float *y, const float *z, int act, int64_t roff)
{
    const conv_params *p = c->p;
    const __m256 b0 = _mm256_broadcast_ss(bg), b1 = _mm256_broadcast_ss(bg + 1),
                 b2 = _mm256_broadcast_ss(bg + 2), b3 = NOC > 3 ? _mm256_broadcast_ss(bg + 3) : b2;
    __m256 a00 = b0, a01 = b0, a02 = b0, a03 = b0;
    __m256 a10 = b1, a11 = b1, a12 = b1, a13 = b1;
    __m256 a20 = b2, a21 = b2, a22 = b2, a23 = b2;
    __m256 a30 = b3, a31 = b3, a32 = b3, a33 = b3;
    const float *wt = wg;
    for (int64_t ci = 0; ci < p->c; ci++)
        for (int64_t ki = 0; ki < p->kh; ki++) {
            const float *row = xb + ci * cstride + ki * kstride + o0;
            for (int64_t kj = 0; kj < p->kw; kj++, wt += NOC) {
                const float *q = row + c->koff[kj];
                const __m256 w0 = _mm256_broadcast_ss(wt), w1 = _mm256_broadcast_ss(wt + 1),
                             w2 = _mm256_broadcast_ss(wt + 2),
                             w3 = NOC > 3 ? _mm256_broadcast_ss(wt + 3) : w2;
                __m256 xv;
#define STEM_V(V, A0, A1, A2, A3)                                                                 \
    if (NV > V) {                                                                                 \
        xv = _mm256_loadu_ps(q + (POOL && V >= 2 ? roff + 8 * (V - 2) : 8 * V));                  \
        A0 = _mm256_fmadd_ps(w0, xv, A0);                                                         \
        A1 = _mm256_fmadd_ps(w1, xv, A1);                                                         \
        A2 = _mm256_fmadd_ps(w2, xv, A2);                                                         \
        if (NOC > 3)                                                                              \
            A3 = _mm256_fmadd_ps(w3, xv, A3);                                                     \
    }
                STEM_V(0, a00, a10, a20, a30)
                STEM_V(1, a01, a11, a21, a31)
                STEM_V(2, a02, a12, a22, a32)
                STEM_V(3, a03, a13, a23, a33)
#undef STEM_V
            }
        }
    if (POOL) {
        stem_pool_out(p, a00, a01, a02, a03, y, act);
        if (on > 1)
            stem_pool_out(p, a10, a11, a12, a13, y + c->pys, act);
        if (on > 2)
            stem_pool_out(p, a20, a21, a22, a23, y + 2 * c->pys, act);
        if (NOC > 3 && on > 3)
            stem_pool_out(p, a30, a31, a32, a33, y + 3 * c->pys, act);
        return;
    }
    stem_out(NV, p, a00, a01, a02, a03, y + o0, z ? z + o0 : NULL, act);
    if (on > 1)
        stem_out(NV, p, a10, a11, a12, a13, y + c->ys + o0, z ? z + p->p + o0 : NULL, act);
    if (on > 2)
        stem_out(NV, p, a20, a21, a22, a23, y + 2 * c->ys + o0, z ? z + 2 * p->p + o0 : NULL,
                 act);
    if (NOC > 3 && on > 3)
        stem_out(NV, p, a30, a31, a32, a33, y + 3 * c->ys + o0, z ? z + 3 * p->p + o0 : NULL,
                 act);
}

#define STEM_STRIP(NOC, NV, TARGET)                                                               \
    TARGET static void stem_strip_##NOC##_##NV(                                                  \
        const stem_ctx *c, const float *xb, int64_t cstride, int64_t kstride, const float *wg,   \
        const float *bg, int64_t o0, int64_t on, float *y, const float *z, int act)               \
    {                                                                                             \
        stem_strip_t(NOC, NV, 0, c, xb, cstride, kstride, wg, bg, o0, on, y, z, act, 0);          \
    }
STEM_STRIP(3, 1, CPU_AVX2)
STEM_STRIP(3, 2, CPU_AVX2)
STEM_STRIP(3, 3, CPU_AVX2)
STEM_STRIP(3, 4, CPU_AVX2)
/* 4 channels x 4 vectors: 16 accumulators, 4 weights and the input, in AVX-512VL's 32 ymm
 * registers (256-bit operations: a 512-bit FMA issues at half the rate on Zen 4). */
STEM_STRIP(4, 1, CPU_AVX512VL)
STEM_STRIP(4, 2, CPU_AVX512VL)
STEM_STRIP(4, 3, CPU_AVX512VL)
STEM_STRIP(4, 4, CPU_AVX512VL)
#undef STEM_STRIP

/* Two rows of 16 pixels pooled 2x2/2 in registers (the same 12 or 16 accumulators). */
CPU_AVX2 static void stem_strip_pool_3(const stem_ctx *c, const float *xb, int64_t cstride,
                                       int64_t kstride, const float *wg, const float *bg,
                                       int64_t o0, int64_t on, float *y, int64_t roff, int act)
{
    stem_strip_t(3, 4, 1, c, xb, cstride, kstride, wg, bg, o0, on, y, NULL, act, roff);
}
CPU_AVX512VL static void stem_strip_pool_4(const stem_ctx *c, const float *xb, int64_t cstride,
                                           int64_t kstride, const float *wg, const float *bg,
                                           int64_t o0, int64_t on, float *y, int64_t roff, int act)
{
    stem_strip_t(4, 4, 1, c, xb, cstride, kstride, wg, bg, o0, on, y, NULL, act, roff);
}

typedef void (*stem_strip_fn)(const stem_ctx *c, const float *xb, int64_t cstride,
                              int64_t kstride, const float *wg, const float *bg, int64_t o0,
                              int64_t on, float *y, const float *z, int act);

CPU_AVX2 static void stem_task(void *arg, size_t t0, size_t t1)
{
    const stem_ctx *c = arg;
    const conv_params *p = c->p;
    const int act = cpu_avx2_act_ok(p->ep.act);
    static const stem_strip_fn strips[2][STEM_NV + 1] = {
        {NULL, stem_strip_3_1, stem_strip_3_2, stem_strip_3_3, stem_strip_3_4},
        {NULL, stem_strip_4_1, stem_strip_4_2, stem_strip_4_3, stem_strip_4_4}};
    /* Strips of 8 * NV pixels, NV as large as the row allows; the last one ends at the row's
     * end, overlapping the one before when the row is no multiple of it. */
    const int64_t nv = p->ow / 8 < STEM_NV ? p->ow / 8 : STEM_NV, width = 8 * nv;
    const int64_t noc = p->stem_oc;
    const stem_strip_fn strip = strips[noc > 3][nv];
    float buf[STEM_BUF_FLOATS];
    float yb[STEM_YB_FLOATS]; /* pooled mode: the band's rows of a group's planes, ys apart */
    for (size_t t = t0; t < t1; t++) {
        const int64_t band = (int64_t)t % c->bands, n = (int64_t)t / c->bands;
        const int64_t oh0 = band * c->band, oh1 = oh0 + c->band < p->oh ? oh0 + c->band : p->oh;
        stem_pad_band(c, c->x + n * p->c * p->in_sp, oh0, oh1, buf);
        const int64_t rows = stem_rows_in(p, oh1 - oh0);
        const int64_t cstride = rows * c->rl, kstride = p->dh * c->rl;
        for (int64_t g = 0; g < c->groups; g++) {
            const int64_t oc0 = g * noc;
            const int64_t on = p->m - oc0 < noc ? p->m - oc0 : noc;
            const float *wg = c->wp + g * p->kc * noc;
            const float *bg = c->wp + (c->groups * p->kc + g) * noc;
            float *y = c->y + (n * p->m + oc0) * p->p;
            const float *z = c->z ? c->z + (n * p->m + oc0) * p->p : NULL;
            if (c->pool2) {
                /* Pairs of rows pooled in registers, 8 pooled pixels a strip (the last one
                 * ends at the pooled row's end). */
                const int64_t pr1 = oh1 / 2 < p->ph ? oh1 / 2 : p->ph;
                float *yp = c->y + (n * p->m + oc0) * c->pys;
                for (int64_t pr = oh0 / 2; pr < pr1; pr++) {
                    const float *xb = buf + (2 * pr - oh0) * p->sh * c->rl;
                    for (int64_t pc = 0;; pc += 8) {
                        if (pc + 8 > p->pwo)
                            pc = p->pwo - 8;
                        (noc > 3 ? stem_strip_pool_4 : stem_strip_pool_3)(
                            c, xb, cstride, kstride, wg, bg, 2 * pc, on, yp + pr * p->pwo + pc,
                            p->sh * c->rl, act);
                        if (pc + 8 >= p->pwo)
                            break;
                    }
                }
                continue;
            }
            for (int64_t oh = oh0; oh < oh1; oh++) {
                const float *xb = buf + (oh - oh0) * p->sh * c->rl;
                float *yr = p->pool_fast ? yb + (oh - oh0) * p->ow : y + oh * p->ow;
                for (int64_t o0 = 0;; o0 += width) {
                    if (o0 + width > p->ow)
                        o0 = p->ow - width;
                    strip(c, xb, cstride, kstride, wg, bg, o0, on, yr,
                               z ? z + oh * p->ow : NULL, act);
                    if (o0 + width >= p->ow)
                        break;
                }
            }
            if (p->pool_fast) {
                /* The band's pooled rows of these channels, from the rows just written. */
                const int64_t pr0 = oh0 / p->psh;
                int64_t pr1 = oh1 / p->psh;
                if (pr1 > p->ph)
                    pr1 = p->ph;
                for (int64_t l = 0; l < on; l++) {
                    if (!act)
                        cpu_epilogue_apply(&p->ep, yb + l * c->ys, (size_t)((oh1 - oh0) * p->ow),
                                           0.0f, NULL, NULL);
                    cpu_max_pool_rows(c->y + ((n * p->m + oc0 + l) * p->ph + pr0) * p->pwo,
                                      p->pwo, yb + l * c->ys, p->ow, pr1 - pr0, p->pwo,
                                      (int)p->pkh, (int)p->pkw, (int)p->psh, (int)p->psw,
                                      p->pool_avx2);
                }
                continue;
            }
            if (!act)
                conv_epilogue_rows(p, y, z, on, oh0, oh1);
        }
    }
}

void cpu_conv_stem_run(const conv_params *p, const float *x, const float *w, const float *bias,
                       const float *z, float *y, float *scratch, cpu_pool *pool)
{
    stem_ctx c = {.p = p, .x = x, .z = z, .wp = p->stem_w, .y = y,
                  .groups = (p->m + p->stem_oc - 1) / p->stem_oc};
    if (!c.wp) { /* weights that are not constants: packed here, every run */
        stem_pack(p, w, bias, scratch);
        c.wp = scratch;
    }
    c.rl = stem_row_len(p, &c.ne);
    for (int64_t kj = 0; kj < p->kw; kj++)
        c.koff[kj] = p->sw == 1 ? kj : (kj & 1) * c.ne + kj / 2;
    /* Bands of rows: no taller than the buffer allows, and short enough for about 4 tasks per
     * thread. */
    const int64_t want = 4 * (int64_t)cpu_pool_threads(pool);
    const int64_t per = p->n >= want ? 1 : (want + p->n - 1) / p->n;
    c.band = (p->oh + per - 1) / per;
    if (c.band > p->stem_band)
        c.band = p->stem_band;
    c.ys = p->p;
    c.pys = p->ph * p->pwo;
    c.pool2 = p->pool_fast && p->pkh == 2 && p->pkw == 2 && p->psh == 2 && p->psw == 2 &&
              p->pwo >= 8 && cpu_avx2_act_ok(p->ep.act);
    if (p->pool_fast) {
        /* Whole pooling windows per band, within the pooled band's buffer. */
        const int64_t most = stem_pool_band(p);
        c.band = (c.band + p->pkh - 1) / p->pkh * p->pkh;
        if (c.band > most)
            c.band = most;
        c.ys = c.band * p->ow;
    }
    if (c.band < 1)
        c.band = 1;
    c.bands = (p->oh + c.band - 1) / c.band;
    const double work = (double)(c.band * p->ow * p->kc * p->m) + 1.0;
    const size_t grain = work >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / work) + 1;
    cpu_parallel_for(pool, (size_t)(p->n * c.bands), grain, stem_task, &c);
}

#else

void cpu_conv_stem_run(const conv_params *p, const float *x, const float *w, const float *bias,
                       const float *z, float *y, float *scratch, cpu_pool *pool)
{
    /* cpu_conv_stem_prepare never accepts a conv where the AVX2 code is not built. */
    (void)p, (void)x, (void)w, (void)bias, (void)z, (void)y, (void)scratch, (void)pool;
}

#endif
