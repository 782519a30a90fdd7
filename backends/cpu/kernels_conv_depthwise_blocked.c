/*
 * Depthwise convolution with channels in the vector lanes (AVX2 + FMA), for NCHW tensors.
 *
 * The row kernel of kernels_conv_depthwise.c puts output columns in the lanes, which wastes most
 * of each vector on MobileNet's 7- and 14-column planes and needs gathers at stride 2. Here a
 * task takes a block of 8 channels of one image and a band of output rows: it transposes the
 * input rows the band reads into a zero-padded buffer laid out [row][column][8 channels] (on the
 * stack, sized to stay in L1/L2), then computes 8 output pixels at a time as 8 accumulators of 8
 * channels: per tap one weight vector times 8 input vectors, whatever the stride, dilation or
 * plane width. The accumulators start at the bias and are transposed back to 8 output rows of
 * the NCHW output; the residual and activation of a FusedConv follow on the band while it is
 * still in cache (cpu_epilogue_apply, the same formulas as everywhere else).
 *
 * Takes 1-D and 2-D depthwise convs with one output channel per group (multiplier 1) and up to
 * DWB_MAX_TAPS taps, on machines with AVX2 and FMA, when a band of at least one output row fits
 * the buffer. LOOM_CPU_NO_AVX2=1 turns it off (the tests run both kernels).
 */
#include "cpu_avx2.h"
#include "cpu_conv.h"

#include <string.h>

/* Lanes (channels) per block, floats in the stack buffer (48 KiB), most taps. */
#define DWB_LANES 8
#define DWB_BUF_FLOATS 12288
#define DWB_MAX_TAPS 64

/* Buffer columns of P: every column an 8-pixel strip of the last output row may read. */
static int64_t dwb_cols(const conv_params *p)
{
    const int64_t strips = (p->ow + DWB_LANES - 1) / DWB_LANES;
    return (strips * DWB_LANES - 1) * p->sw + (p->kw - 1) * p->dw + 1;
}

/* Input rows a band of ROWS output rows reads. */
static int64_t dwb_rows_in(const conv_params *p, int64_t rows)
{
    return (rows - 1) * p->sh + (p->kh - 1) * p->dh + 1;
}

int cpu_conv_dwb_prepare(conv_params *p)
{
    p->dwb_band = 0;
    if (p->cg != 1 || p->mg != 1 || p->group < 2 || p->kd != 1 || p->d != 1 || p->od != 1 ||
        p->kh * p->kw > DWB_MAX_TAPS || p->kh < 1 || p->kw < 1)
        return 0;
    const int64_t row_floats = dwb_cols(p) * DWB_LANES;
    int64_t band = 0;
    while (band < p->oh && dwb_rows_in(p, band + 1) * row_floats <= DWB_BUF_FLOATS)
        band++;
    if (band < 1 || !cpu_avx2_ok())
        return 0;
    p->dwb_band = band;
    return 1;
}

#ifdef CPU_HAVE_AVX2_CODE

typedef struct dwb_ctx {
    const conv_params *p;
    const float *x, *z;
    const float *wp; /* weights [block][tap][8] and biases [block][8], packed by the run */
    float *y;
    int64_t blocks, bands, band; /* channel blocks per image, bands per plane, rows per band */
} dwb_ctx;

/* V[c] <- N (1..8) floats at ROWS[c] + OFF for the CN rows given, zero beyond N and CN; then
 * transposed, so that V[j] holds element j of every row. */
CPU_AVX2 static inline void dwb_load_t(__m256 v[8], const float *const rows[8], int64_t cn,
                                         int64_t off, int64_t n)
{
    for (int c = 0; c < DWB_LANES; c++)
        v[c] = c >= cn ? _mm256_setzero_ps() : cpu_avx2_load_n(rows[c] + off, n);
    cpu_avx2_transpose8(v);
}

/* Buffer rows [0, rows) <- input rows ih0.. of the CN channels at XC (plane stride in_sp), as
 * [row][col][8] with column col holding input column col - pl, zero outside the input. */
CPU_AVX2 static void dwb_pack(const conv_params *p, const float *xc, int64_t cn, int64_t ih0,
                                int64_t rows, int64_t cols, float *buf)
{
    const int64_t w = p->w, pl = p->pl;
    /* Input columns [0, b) land inside the buffer (pads are never negative). */
    const int64_t b = cols - pl < w ? cols - pl : w;
    for (int64_t r = 0; r < rows; r++) {
        float *br = buf + r * cols * DWB_LANES;
        const int64_t ih = ih0 + r;
        if (ih < 0 || ih >= p->h || b <= 0) {
            memset(br, 0, (size_t)(cols * DWB_LANES) * sizeof *br);
            continue;
        }
        if (pl > 0)
            memset(br, 0, (size_t)(pl * DWB_LANES) * sizeof *br);
        if (b + pl < cols)
            memset(br + (b + pl) * DWB_LANES, 0, (size_t)((cols - b - pl) * DWB_LANES) * sizeof *br);
        const float *src[DWB_LANES];
        for (int64_t c = 0; c < DWB_LANES; c++)
            src[c] = xc + (c < cn ? c : 0) * p->in_sp + ih * w;
        for (int64_t iw = 0; iw < b; iw += DWB_LANES) {
            const int64_t n = b - iw < DWB_LANES ? b - iw : DWB_LANES;
            __m256 v[DWB_LANES];
            dwb_load_t(v, src, cn, iw, n);
            float *d = br + (iw + pl) * DWB_LANES;
            if (n == DWB_LANES) {
                for (int j = 0; j < DWB_LANES; j++)
                    _mm256_storeu_ps(d + j * DWB_LANES, v[j]);
            } else {
                for (int j = 0; j < DWB_LANES; j++)
                    if (j < n)
                        _mm256_storeu_ps(d + j * DWB_LANES, v[j]);
            }
        }
    }
}

/* One output row ROW of the band: 8-pixel strips, taps over the buffer, bias in the
 * accumulators, transposed back into the CN output rows at Y (plane stride p->p), the residual
 * Z (same offsets, may be NULL) and the activation applied when ACT is set. With FULL (not the
 * band's last row), a short strip at the end of the row is still stored whole: its extra lanes
 * land on the start of the next row of the same plane, which this task writes next. */
/* Stride 1, no dilation, KW taps per kernel row: the KW weight vectors of a kernel row stay in
 * registers and each of the 8 + KW - 1 input columns of the strip is loaded once and fed to every
 * (pixel, tap) pair that reads it: 8 + 2 KW - 1 loads per 8 KW FMAs instead of 9 KW. */
#define DWB_ACC_S1(KW)                                                                            \
    CPU_AVX2 static inline void dwb_acc_s1_k##KW(const conv_params *p, const float *buf,         \
                                                 int64_t cols, const float *wp, int64_t row,     \
                                                 int64_t o0, __m256 acc[DWB_LANES])              \
    {                                                                                             \
        for (int64_t ki = 0; ki < p->kh; ki++) {                                                  \
            const float *br = buf + ((row * p->sh + ki * p->dh) * cols + o0) * DWB_LANES;        \
            const float *wk = wp + ki * KW * DWB_LANES;                                           \
            __m256 w[KW];                                                                         \
            _Pragma("GCC unroll 8") for (int kj = 0; kj < KW; kj++) w[kj] =                       \
                _mm256_loadu_ps(wk + kj * DWB_LANES);                                             \
            _Pragma("GCC unroll 16") for (int c = 0; c < DWB_LANES + KW - 1; c++)                 \
            {                                                                                     \
                const __m256 x = _mm256_loadu_ps(br + c * DWB_LANES);                             \
                _Pragma("GCC unroll 8") for (int kj = 0; kj < KW; kj++)                           \
                {                                                                                 \
                    const int j = c - kj;                                                         \
                    if (j >= 0 && j < DWB_LANES)                                                  \
                        acc[j] = _mm256_fmadd_ps(w[kj], x, acc[j]);                               \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }
DWB_ACC_S1(3)
DWB_ACC_S1(5)
#undef DWB_ACC_S1

/* The sums of output pixels o0..o0+7 of output row ROW of the band, any stride and dilation:
 * per tap one weight vector times 8 input vectors. */
CPU_AVX2 static inline void dwb_acc(const conv_params *p, const float *buf, int64_t cols,
                                    const float *wp, int64_t row, int64_t o0,
                                    __m256 acc[DWB_LANES])
{
    const int64_t sw8 = p->sw * DWB_LANES;
    for (int64_t ki = 0; ki < p->kh; ki++) {
        const float *br = buf + ((row * p->sh + ki * p->dh) * cols + o0 * p->sw) * DWB_LANES;
        const float *wk = wp + ki * p->kw * DWB_LANES;
        for (int64_t kj = 0; kj < p->kw; kj++) {
            const __m256 wv = _mm256_loadu_ps(wk + kj * DWB_LANES);
            const float *s = br + kj * p->dw * DWB_LANES;
            for (int j = 0; j < DWB_LANES; j++)
                acc[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + j * sw8), acc[j]);
        }
    }
}

CPU_AVX2 static void dwb_row(const conv_params *p, const float *buf, int64_t cols,
                               const float *wp, __m256 bias, int64_t row, int64_t cn, float *y,
                               const float *z, int act, int full)
{
    const int s1 = p->sw == 1 && p->dw == 1;
    for (int64_t o0 = 0; o0 < p->ow; o0 += DWB_LANES) {
        __m256 acc[DWB_LANES];
        for (int j = 0; j < DWB_LANES; j++)
            acc[j] = bias;
        if (s1 && p->kw == 3)
            dwb_acc_s1_k3(p, buf, cols, wp, row, o0, acc);
        else if (s1 && p->kw == 5)
            dwb_acc_s1_k5(p, buf, cols, wp, row, o0, acc);
        else
            dwb_acc(p, buf, cols, wp, row, o0, acc);
        cpu_avx2_transpose8(acc);
        const int64_t n = p->ow - o0 < DWB_LANES ? p->ow - o0 : DWB_LANES;
        for (int64_t c = 0; c < cn; c++) {
            __m256 v = acc[c];
            const int64_t off = c * p->p + o0;
            if (act) {
                if (z)
                    v = _mm256_add_ps(v, cpu_avx2_load_n(z + off, n));
                v = cpu_avx2_act(&p->ep, v);
            }
            cpu_avx2_store_n(y + off, v, full ? DWB_LANES : n);
        }
    }
}

CPU_AVX2 static void dwb_task(void *arg, size_t t0, size_t t1)
{
    const dwb_ctx *c = arg;
    const conv_params *p = c->p;
    const int64_t cols = dwb_cols(p), taps = p->kh * p->kw;
    const int act = cpu_avx2_act_ok(p->ep.act);
    float buf[DWB_BUF_FLOATS];
    for (size_t t = t0; t < t1; t++) {
        const int64_t band = (int64_t)t % c->bands, item = (int64_t)t / c->bands;
        const int64_t n = item / c->blocks, blk = item % c->blocks, c0 = blk * DWB_LANES;
        const int64_t cn = p->c - c0 < DWB_LANES ? p->c - c0 : DWB_LANES;
        const int64_t oh0 = band * c->band, oh1 = oh0 + c->band < p->oh ? oh0 + c->band : p->oh;
        const float *wp = c->wp + blk * taps * DWB_LANES;
        const __m256 bias = _mm256_loadu_ps(c->wp + (c->blocks * taps + blk) * DWB_LANES);
        dwb_pack(p, c->x + (n * p->c + c0) * p->in_sp, cn, oh0 * p->sh - p->pt,
                 dwb_rows_in(p, oh1 - oh0), cols, buf);
        const int64_t base = (n * p->m + c0) * p->p;
        float *yc = c->y + base;
        const float *zc = c->z ? c->z + base : NULL;
        for (int64_t oh = oh0; oh < oh1; oh++)
            dwb_row(p, buf, cols, wp, bias, oh - oh0, cn, yc + oh * p->ow,
                    zc ? zc + oh * p->ow : NULL, act, oh + 1 < oh1);
        if (!act)
            conv_epilogue_rows(p, yc, zc, cn, oh0, oh1);
    }
}

/* WP <- the weights as [block][tap][8 channels] then the biases as [block][8], zero in the
 * channels past C. */
CPU_AVX2 static void dwb_pack_weights(const conv_params *p, const float *w, const float *bias,
                                        int64_t blocks, float *wp)
{
    const int64_t taps = p->kh * p->kw;
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t c0 = blk * DWB_LANES, cn = p->c - c0 < DWB_LANES ? p->c - c0 : DWB_LANES;
        const float *rows[DWB_LANES];
        for (int64_t c = 0; c < DWB_LANES; c++)
            rows[c] = w + (c0 + (c < cn ? c : 0)) * taps;
        float *d = wp + blk * taps * DWB_LANES;
        for (int64_t k = 0; k < taps; k += DWB_LANES) {
            const int64_t n = taps - k < DWB_LANES ? taps - k : DWB_LANES;
            __m256 v[DWB_LANES];
            dwb_load_t(v, rows, cn, k, n);
            for (int64_t j = 0; j < n; j++)
                _mm256_storeu_ps(d + (k + j) * DWB_LANES, v[j]);
        }
        float *bd = wp + (blocks * taps + blk) * DWB_LANES;
        for (int64_t l = 0; l < DWB_LANES; l++)
            bd[l] = bias && l < cn ? bias[c0 + l] : 0.0f;
    }
}

size_t cpu_conv_dwb_scratch(const conv_params *p)
{
    const int64_t blocks = (p->c + DWB_LANES - 1) / DWB_LANES;
    return (size_t)(blocks * (p->kh * p->kw + 1) * DWB_LANES) * sizeof(float);
}

void cpu_conv_dwb_run(const conv_params *p, const float *x, const float *w, const float *bias,
                      const float *z, float *y, float *scratch, cpu_pool *pool)
{
    dwb_ctx c = {p, x, z, scratch, y, (p->c + DWB_LANES - 1) / DWB_LANES, 1, p->dwb_band};
    dwb_pack_weights(p, w, bias, c.blocks, scratch);
    /* Bands no taller than the buffer allows; shorter when there are too few (image, channel
     * block) items to keep every thread busy. */
    const int64_t items = p->n * c.blocks, want = 4 * (int64_t)cpu_pool_threads(pool);
    if (items < want) {
        int64_t per = (want + items - 1) / items;
        int64_t band = (p->oh + per - 1) / per;
        if (band < c.band)
            c.band = band < 1 ? 1 : band;
    }
    c.bands = (p->oh + c.band - 1) / c.band;
    const double work = (double)(c.band * p->ow * p->kh * p->kw * DWB_LANES) + 1.0;
    const size_t grain = work >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / work) + 1;
    cpu_parallel_for(pool, (size_t)(items * c.bands), grain, dwb_task, &c);
}

#else

size_t cpu_conv_dwb_scratch(const conv_params *p)
{
    (void)p;
    return 0;
}

void cpu_conv_dwb_run(const conv_params *p, const float *x, const float *w, const float *bias,
                      const float *z, float *y, float *scratch, cpu_pool *pool)
{
    /* cpu_conv_dwb_prepare never accepts a conv where the AVX2 code is not built. */
    (void)scratch;
    cpu_conv_dw_run(p, x, w, bias, z, y, pool);
}

#endif
