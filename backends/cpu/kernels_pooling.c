/*
 * CPU kernels of the pooling operators: MaxPool, AveragePool, GlobalAveragePool and
 * GlobalMaxPool, with ONNX opset-18 semantics (canonical window attributes:
 * graph/ops_conv_pool.c). MaxPool also takes int8 and uint8 (the generic point path), and writes
 * its Indices output in row-major (storage_order 0) or column-major (1) spatial order.
 */
#include "cpu_avx2.h"
#include "cpu_conv.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- MaxPool, AveragePool ---------------------------------------------------------------------- */

/* Pooling works on 3 spatial dims (D, H, W); fewer are padded in front with size-1 dims. For each
 * dim and output index the tables hold the first and one-past-last tap that lands in the input,
 * and for count_include_pad the number of taps inside the padded input. Planes of one depth with
 * no dilation and no Indices output (the 2-D and 1-D pools of CNNs) take a fast path: outputs
 * whose window lies wholly inside the input run in vectorised rows, the border point by point.
 * Either way planes (N*C) are split over the pool. */
typedef struct pool_params {
    int is_max, include_pad, has_indices;
    int col_major;   /* Indices with storage_order 1: spatial dims reversed */
    loom_dtype dt;   /* float32, or int8 / uint8 (MaxPool only) */
    int fast; /* 2-D, no dilation, no Indices: pool_fast_plane */
    int avx2; /* the AVX2 rows where there are (2x2 max at stride 2) */
    int64_t planes;
    int64_t in[3], out[3], kern[3], stride[3], dil[3], pad[3];
    int64_t inner_lo[3], inner_hi[3]; /* outputs [lo, hi) whose windows are all in the input */
    int64_t *lo[3], *hi[3], *cnt[3];
    int64_t table[]; /* 3 * (out[0] + out[1] + out[2]) entries the pointers above use */
} pool_params;

static int pool_supports(const loom_node_desc *node, char *reason, size_t len)
{
    int is_max = node->op == LOOM_OP_MAX_POOL;
    if (node->n_inputs != 1 || node->n_outputs < 1 || node->n_outputs > (is_max ? 2u : 1u)) {
        cpu_reason(reason, len, "%s: wrong number of inputs or outputs", node->op_name);
        return 0;
    }
    const loom_dtype t = node->inputs[0].dtype;
    if (t != LOOM_DTYPE_F32 && !(is_max && (t == LOOM_DTYPE_U8 || t == LOOM_DTYPE_I8)))
        return cpu_no_dtype(node, t, is_max ? "float32, int8, uint8" : "float32", reason, len);
    if (node->n_outputs == 2 && node->outputs[1].dtype != LOOM_DTYPE_UNDEFINED &&
        node->outputs[1].dtype != LOOM_DTYPE_I64) {
        cpu_reason(reason, len, "MaxPool: Indices must be i64");
        return 0;
    }
    uint32_t rank = node->inputs[0].rank;
    if (rank < 3 || rank > 5) {
        cpu_reason(reason, len, "%s: 1 to 3 spatial dims supported (input rank %u)",
                   node->op_name, rank);
        return 0;
    }
    return cpu_window_attrs_ok(node, rank - 2, reason, len);
}

typedef struct pool_ctx {
    const pool_params *p;
    const void *x;
    void *y;
    int64_t *idx;
} pool_ctx;

/* MaxPool of one output over int8 or uint8 (T): as pool_point, the first maximum wins; a window
 * wholly in the padding gives the type's lowest value and Indices -1. */
#define POOL_POINT_INT(name, T, LOWEST)                                                           \
    static void name(const pool_params *p, const T *x, T *y, int64_t *yi, int64_t base,         \
                     int64_t od, int64_t oh, int64_t ow)                                          \
    {                                                                                              \
        int64_t d0 = od * p->stride[0] - p->pad[0];                                                \
        int64_t h0 = oh * p->stride[1] - p->pad[1];                                                \
        int64_t w0 = ow * p->stride[2] - p->pad[2];                                                \
        int64_t o = (od * p->out[1] + oh) * p->out[2] + ow;                                        \
        T best = LOWEST;                                                                           \
        int64_t at = -1;                                                                           \
        for (int64_t td = p->lo[0][od]; td < p->hi[0][od]; td++) {                                 \
            int64_t id = d0 + td * p->dil[0];                                                      \
            for (int64_t th = p->lo[1][oh]; th < p->hi[1][oh]; th++) {                             \
                int64_t row = (id * p->in[1] + h0 + th * p->dil[1]) * p->in[2];                    \
                for (int64_t tw = p->lo[2][ow]; tw < p->hi[2][ow]; tw++) {                         \
                    int64_t i = row + w0 + tw * p->dil[2];                                         \
                    if (at < 0 || x[i] > best) {                                                   \
                        best = x[i];                                                               \
                        at = i;                                                                    \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        y[o] = best;                                                                               \
        if (yi)                                                                                    \
            yi[o] = at < 0 ? -1 : base + at;                                                       \
    }
POOL_POINT_INT(pool_point_u8, uint8_t, 0)
POOL_POINT_INT(pool_point_i8, int8_t, INT8_MIN)

/* One output (od, oh, ow) of one plane, through the tables: X and Y are the plane's, BASE the
 * plane's offset in the whole input (for Indices), YI the plane's Indices or NULL. */
static inline void pool_point(const pool_params *p, const float *x, float *y, int64_t *yi,
                              int64_t base, int64_t od, int64_t oh, int64_t ow)
{
    int64_t d0 = od * p->stride[0] - p->pad[0];
    int64_t h0 = oh * p->stride[1] - p->pad[1];
    int64_t w0 = ow * p->stride[2] - p->pad[2];
    int64_t o = (od * p->out[1] + oh) * p->out[2] + ow;
    if (p->is_max) {
        float best = -INFINITY;
        int64_t at = -1;
        for (int64_t td = p->lo[0][od]; td < p->hi[0][od]; td++) {
            int64_t id = d0 + td * p->dil[0];
            for (int64_t th = p->lo[1][oh]; th < p->hi[1][oh]; th++) {
                int64_t row = (id * p->in[1] + h0 + th * p->dil[1]) * p->in[2];
                for (int64_t tw = p->lo[2][ow]; tw < p->hi[2][ow]; tw++) {
                    int64_t i = row + w0 + tw * p->dil[2];
                    float v = x[i];
                    /* NaN never wins, as in ONNX Runtime; -inf still can. */
                    if (v > best || (at < 0 && v == v)) {
                        best = v;
                        at = i;
                    }
                }
            }
        }
        y[o] = best;
        if (yi)
            yi[o] = at < 0 ? -1 : base + at;
    } else {
        float sum = 0.0f;
        for (int64_t td = p->lo[0][od]; td < p->hi[0][od]; td++) {
            int64_t id = d0 + td * p->dil[0];
            for (int64_t th = p->lo[1][oh]; th < p->hi[1][oh]; th++) {
                int64_t row = (id * p->in[1] + h0 + th * p->dil[1]) * p->in[2];
                for (int64_t tw = p->lo[2][ow]; tw < p->hi[2][ow]; tw++)
                    sum += x[row + w0 + tw * p->dil[2]];
            }
        }
        int64_t count;
        if (p->include_pad)
            count = p->cnt[0][od] * p->cnt[1][oh] * p->cnt[2][ow];
        else
            count = (p->hi[0][od] - p->lo[0][od]) * (p->hi[1][oh] - p->lo[1][oh]) *
                    (p->hi[2][ow] - p->lo[2][ow]);
        y[o] = sum / (float)count;
    }
}

/* Fast 2-D rows: N outputs Y[j], j < N, of windows KH x KW whose top-left tap is X[j * SW], rows
 * LD apart, all inside the input. Blocks of POOL_BLK outputs with a fixed-count inner loop, so
 * that -O2 vectorises across output columns (see axpy_row): 2x2 and 3x3 windows have their taps
 * written out (2x2 at stride 2 reads interleaved pairs, 3x3 at stride 2 splits its rows into even
 * and odd columns first), other windows loop over the taps
 * around a block-wide inner loop, which vectorises at stride 1. Taps are visited in the generic
 * order (row by row, left to right), so results are bit-identical to pool_point: max keeps the
 * first of equal values (+0 vs -0) and v > m ? v : m never lets a NaN win (all NaN gives -inf),
 * as pool_point's rule does; the average sums from 0.0f in the same order and divides by the
 * same count, which is KH * KW for an interior window with or without count_include_pad. */
#define POOL_BLK 8
static inline float pool_max_tap(float m, float v)
{
    return v > m ? v : m;
}

/* Any window: taps outermost, the block's outputs innermost. */
static inline void pool_max_row(float *restrict y, const float *restrict x, int64_t ld, int64_t n,
                                int kh, int kw, int sw)
{
    int64_t j = 0;
    for (; j + POOL_BLK <= n; j += POOL_BLK) {
        float m[POOL_BLK];
        for (int k = 0; k < POOL_BLK; k++)
            m[k] = -INFINITY;
        for (int th = 0; th < kh; th++)
            for (int tw = 0; tw < kw; tw++) {
                const float *restrict r = x + th * ld + j * sw + tw;
                for (int k = 0; k < POOL_BLK; k++)
                    m[k] = pool_max_tap(m[k], r[k * sw]);
            }
        for (int k = 0; k < POOL_BLK; k++)
            y[j + k] = m[k];
    }
    for (; j < n; j++) {
        float m = -INFINITY;
        for (int th = 0; th < kh; th++)
            for (int tw = 0; tw < kw; tw++)
                m = pool_max_tap(m, x[th * ld + j * sw + tw]);
        y[j] = m;
    }
}

static inline void pool_avg_row(float *restrict y, const float *restrict x, int64_t ld, int64_t n,
                                int kh, int kw, int sw, float div)
{
    int64_t j = 0;
    for (; j + POOL_BLK <= n; j += POOL_BLK) {
        float s[POOL_BLK];
        for (int k = 0; k < POOL_BLK; k++)
            s[k] = 0.0f;
        for (int th = 0; th < kh; th++)
            for (int tw = 0; tw < kw; tw++) {
                const float *restrict r = x + th * ld + j * sw + tw;
                for (int k = 0; k < POOL_BLK; k++)
                    s[k] += r[k * sw];
            }
        for (int k = 0; k < POOL_BLK; k++)
            y[j + k] = s[k] / div;
    }
    for (; j < n; j++) {
        float s = 0.0f;
        for (int th = 0; th < kh; th++)
            for (int tw = 0; tw < kw; tw++)
                s += x[th * ld + j * sw + tw];
        y[j] = s / div;
    }
}

/* 2x2 and 3x3 windows with the taps written out, so that each output's whole window is
 * straight-line code in the fixed-count block loop. */
#define POOL_ROW3(NAME, INIT, TAP, FINISH)                                                        \
    static inline void NAME(float *restrict y, const float *restrict x, int64_t ld, int64_t n,    \
                            int sw)                                                               \
    {                                                                                             \
        const float *restrict r0 = x, *restrict r1 = x + ld, *restrict r2 = x + 2 * ld;           \
        int64_t j = 0;                                                                            \
        for (; j + POOL_BLK <= n; j += POOL_BLK)                                                  \
            for (int k = 0; k < POOL_BLK; k++) {                                                  \
                int64_t c = (j + k) * sw;                                                         \
                float a = INIT;                                                                   \
                a = TAP(a, r0[c]);                                                                \
                a = TAP(a, r0[c + 1]);                                                            \
                a = TAP(a, r0[c + 2]);                                                            \
                a = TAP(a, r1[c]);                                                                \
                a = TAP(a, r1[c + 1]);                                                            \
                a = TAP(a, r1[c + 2]);                                                            \
                a = TAP(a, r2[c]);                                                                \
                a = TAP(a, r2[c + 1]);                                                            \
                a = TAP(a, r2[c + 2]);                                                            \
                y[j + k] = FINISH(a);                                                             \
            }                                                                                     \
        for (; j < n; j++) {                                                                      \
            int64_t c = j * sw;                                                                   \
            float a = INIT;                                                                       \
            a = TAP(a, r0[c]);                                                                    \
            a = TAP(a, r0[c + 1]);                                                                \
            a = TAP(a, r0[c + 2]);                                                                \
            a = TAP(a, r1[c]);                                                                    \
            a = TAP(a, r1[c + 1]);                                                                \
            a = TAP(a, r1[c + 2]);                                                                \
            a = TAP(a, r2[c]);                                                                    \
            a = TAP(a, r2[c + 1]);                                                                \
            a = TAP(a, r2[c + 2]);                                                                \
            y[j] = FINISH(a);                                                                     \
        }                                                                                         \
    }
#define POOL_ROW2(NAME, INIT, TAP, FINISH)                                                        \
    static inline void NAME(float *restrict y, const float *restrict x, int64_t ld, int64_t n,    \
                            int sw)                                                               \
    {                                                                                             \
        const float *restrict r0 = x, *restrict r1 = x + ld;                                      \
        int64_t j = 0;                                                                            \
        for (; j + POOL_BLK <= n; j += POOL_BLK)                                                  \
            for (int k = 0; k < POOL_BLK; k++) {                                                  \
                int64_t c = (j + k) * sw;                                                         \
                float a = INIT;                                                                   \
                a = TAP(a, r0[c]);                                                                \
                a = TAP(a, r0[c + 1]);                                                            \
                a = TAP(a, r1[c]);                                                                \
                a = TAP(a, r1[c + 1]);                                                            \
                y[j + k] = FINISH(a);                                                             \
            }                                                                                     \
        for (; j < n; j++) {                                                                      \
            int64_t c = j * sw;                                                                   \
            float a = INIT;                                                                       \
            a = TAP(a, r0[c]);                                                                    \
            a = TAP(a, r0[c + 1]);                                                                \
            a = TAP(a, r1[c]);                                                                    \
            a = TAP(a, r1[c + 1]);                                                                \
            y[j] = FINISH(a);                                                                     \
        }                                                                                         \
    }
/* 3x3 windows at stride 2: X[2j], X[2j+1], X[2j+2] are no interleaved pair GCC vectorises, so
 * each of the three input rows is first split, a chunk at a time, into its even and odd columns
 * on the stack (pairs, which do vectorise); the window of output j is then E[j], O[j], E[j+1] of
 * each row, contiguous loads, taps still in the generic order. */
#define POOL_S2_CHUNK 128
#define POOL_ROW3S2(NAME, INIT, TAP, FINISH)                                                      \
    static inline void NAME(float *restrict y, const float *restrict x, int64_t ld, int64_t n)    \
    {                                                                                             \
        float e[3][POOL_S2_CHUNK + 1], o[3][POOL_S2_CHUNK];                                       \
        for (int64_t j0 = 0; j0 < n; j0 += POOL_S2_CHUNK) {                                       \
            int64_t cnt = n - j0 < POOL_S2_CHUNK ? n - j0 : POOL_S2_CHUNK;                        \
            for (int t = 0; t < 3; t++) {                                                         \
                const float *restrict r = x + t * ld + 2 * j0;                                    \
                float *restrict et = e[t], *restrict ot = o[t];                                   \
                int64_t k = 0;                                                                    \
                for (; k + POOL_BLK <= cnt; k += POOL_BLK)                                        \
                    for (int i = 0; i < POOL_BLK; i++) {                                          \
                        et[k + i] = r[2 * (k + i)];                                               \
                        ot[k + i] = r[2 * (k + i) + 1];                                           \
                    }                                                                             \
                for (; k < cnt; k++) {                                                            \
                    et[k] = r[2 * k];                                                             \
                    ot[k] = r[2 * k + 1];                                                         \
                }                                                                                 \
                et[cnt] = r[2 * cnt];                                                             \
            }                                                                                     \
            float *restrict yc = y + j0;                                                          \
            int64_t j = 0;                                                                        \
            for (; j + POOL_BLK <= cnt; j += POOL_BLK)                                            \
                for (int k = 0; k < POOL_BLK; k++) {                                              \
                    float a = INIT;                                                               \
                    a = TAP(a, e[0][j + k]);                                                      \
                    a = TAP(a, o[0][j + k]);                                                      \
                    a = TAP(a, e[0][j + k + 1]);                                                  \
                    a = TAP(a, e[1][j + k]);                                                      \
                    a = TAP(a, o[1][j + k]);                                                      \
                    a = TAP(a, e[1][j + k + 1]);                                                  \
                    a = TAP(a, e[2][j + k]);                                                      \
                    a = TAP(a, o[2][j + k]);                                                      \
                    a = TAP(a, e[2][j + k + 1]);                                                  \
                    yc[j + k] = FINISH(a);                                                        \
                }                                                                                 \
            for (; j < cnt; j++) {                                                                \
                float a = INIT;                                                                   \
                for (int t = 0; t < 3; t++) {                                                     \
                    a = TAP(a, e[t][j]);                                                          \
                    a = TAP(a, o[t][j]);                                                          \
                    a = TAP(a, e[t][j + 1]);                                                      \
                }                                                                                 \
                yc[j] = FINISH(a);                                                                \
            }                                                                                     \
        }                                                                                         \
    }
#define POOL_ADD(a, v) ((a) + (v))
#define POOL_KEEP(a) (a)
#define POOL_DIV9(a) ((a) / 9.0f)
#define POOL_DIV4(a) ((a) / 4.0f)
POOL_ROW3(pool_max3_row, -INFINITY, pool_max_tap, POOL_KEEP)
POOL_ROW3(pool_avg3_row, 0.0f, POOL_ADD, POOL_DIV9)
POOL_ROW2(pool_max2_row, -INFINITY, pool_max_tap, POOL_KEEP)
POOL_ROW2(pool_avg2_row, 0.0f, POOL_ADD, POOL_DIV4)
POOL_ROW3S2(pool_max3s2_row, -INFINITY, pool_max_tap, POOL_KEEP)
POOL_ROW3S2(pool_avg3s2_row, 0.0f, POOL_ADD, POOL_DIV9)

#ifdef CPU_HAVE_AVX2_CODE
/* pool_max2_row at stride 2 with AVX2, 8 outputs at a time: the two rows' 16 columns reduced
 * vertically, then even and odd columns. maxps(v, m) is v > m ? v : m, i.e. pool_max_tap(m, v),
 * and no partial maximum is NaN, so the result is the scalar rows' (NaN inputs ignored). */
CPU_AVX2 static void pool_max2s2_row_avx2(float *restrict y, const float *restrict x, int64_t ld,
                                          int64_t n)
{
    const float *restrict r0 = x, *restrict r1 = x + ld;
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const float *a = r0 + 2 * j, *b = r1 + 2 * j;
        const __m256 lo = _mm256_max_ps(_mm256_loadu_ps(b), _mm256_max_ps(_mm256_loadu_ps(a), ninf));
        const __m256 hi =
            _mm256_max_ps(_mm256_loadu_ps(b + 8), _mm256_max_ps(_mm256_loadu_ps(a + 8), ninf));
        const __m256 ev = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
        const __m256 od = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
        /* lanes hold outputs 0 1 4 5 | 2 3 6 7 */
        const __m256 m = _mm256_max_ps(od, ev);
        _mm256_storeu_ps(y + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xd8)));
    }
    if (j < n)
        pool_max2_row(y + j, x + 2 * j, ld, n - j, 2);
}
#endif

void cpu_max_pool_rows(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t rows, int64_t n,
                       int kh, int kw, int sh, int sw, int avx2)
{
#ifndef CPU_HAVE_AVX2_CODE
    (void)avx2;
#endif
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * ldy;
        const float *xr = x + r * sh * ldx;
        if (kh == 2 && kw == 2 && sw == 2) {
#ifdef CPU_HAVE_AVX2_CODE
            if (avx2) {
                pool_max2s2_row_avx2(yr, xr, ldx, n);
                continue;
            }
#endif
            pool_max2_row(yr, xr, ldx, n, 2);
        } else if (kh == 3 && kw == 3 && sw == 1) {
            pool_max3_row(yr, xr, ldx, n, 1);
        } else if (kh == 3 && kw == 3 && sw == 2) {
            pool_max3s2_row(yr, xr, ldx, n);
        } else if (sw == 1) {
            pool_max_row(yr, xr, ldx, n, kh, kw, 1);
        } else {
            pool_max_row(yr, xr, ldx, n, kh, kw, sw);
        }
    }
}

/* The interior part of one output row: N outputs from X (first tap of the first one). */
static void pool_fast_row(const pool_params *p, float *restrict y, const float *restrict x,
                          int64_t n)
{
    int64_t ld = p->in[2];
    int kh = (int)p->kern[1], kw = (int)p->kern[2], sw = (int)p->stride[2];
    if (p->is_max) {
        if (kh == 2 && kw == 2 && sw == 2) {
#ifdef CPU_HAVE_AVX2_CODE
            if (p->avx2) {
                pool_max2s2_row_avx2(y, x, ld, n);
                return;
            }
#endif
            pool_max2_row(y, x, ld, n, 2);
        }
        else if (kh == 3 && kw == 3 && sw == 1)
            pool_max3_row(y, x, ld, n, 1);
        else if (kh == 3 && kw == 3 && sw == 2)
            pool_max3s2_row(y, x, ld, n);
        else if (sw == 1) /* a constant stride: contiguous loads that vectorise */
            pool_max_row(y, x, ld, n, kh, kw, 1);
        else
            pool_max_row(y, x, ld, n, kh, kw, sw);
    } else {
        if (kh == 2 && kw == 2 && sw == 2)
            pool_avg2_row(y, x, ld, n, 2);
        else if (kh == 3 && kw == 3 && sw == 1)
            pool_avg3_row(y, x, ld, n, 1);
        else if (kh == 3 && kw == 3 && sw == 2)
            pool_avg3s2_row(y, x, ld, n);
        else if (sw == 1)
            pool_avg_row(y, x, ld, n, kh, kw, 1, (float)(kh * kw));
        else
            pool_avg_row(y, x, ld, n, kh, kw, sw, (float)(kh * kw));
    }
}

/* One border output (oh, ow) of a fast-path plane: pool_point for one depth and no dilation,
 * with the max written as in the fast rows, which gives the same result as its first-non-NaN
 * rule without Indices. */
static void pool_border_point(const pool_params *p, const float *x, float *y, int64_t oh,
                              int64_t ow)
{
    int64_t h0 = oh * p->stride[1] - p->pad[1], w0 = ow * p->stride[2] - p->pad[2];
    int64_t hl = p->lo[1][oh], hh = p->hi[1][oh], wl = p->lo[2][ow], wh = p->hi[2][ow];
    if (p->is_max) {
        float m = -INFINITY;
        for (int64_t th = hl; th < hh; th++) {
            int64_t row = (h0 + th) * p->in[2] + w0;
            for (int64_t tw = wl; tw < wh; tw++)
                m = pool_max_tap(m, x[row + tw]);
        }
        y[oh * p->out[2] + ow] = m;
    } else {
        float sum = 0.0f;
        for (int64_t th = hl; th < hh; th++) {
            int64_t row = (h0 + th) * p->in[2] + w0;
            for (int64_t tw = wl; tw < wh; tw++)
                sum += x[row + tw];
        }
        int64_t count;
        if (p->include_pad)
            count = p->cnt[0][0] * p->cnt[1][oh] * p->cnt[2][ow];
        else
            count = (p->hi[0][0] - p->lo[0][0]) * (hh - hl) * (wh - wl);
        y[oh * p->out[2] + ow] = sum / (float)count;
    }
}

/* The interior columns [OW0, OW0 + N) of a border row OH: their windows are cut by the top or
 * bottom edge only, so they run as rows of a shorter window (same taps, same order) and, for the
 * average, pool_point's divisor, which is the same for all of them. */
static void pool_clipped_row(const pool_params *p, float *restrict y, const float *restrict x,
                             int64_t oh, int64_t ow0, int64_t n)
{
    int64_t ld = p->in[2];
    int64_t hl = p->lo[1][oh], hh = p->hi[1][oh];
    int kh = (int)(hh - hl), kw = (int)p->kern[2], sw = (int)p->stride[2];
    const float *xr = x + (oh * p->stride[1] - p->pad[1] + hl) * ld + ow0 * sw - p->pad[2];
    if (p->is_max) {
        if (sw == 1)
            pool_max_row(y, xr, ld, n, kh, kw, 1);
        else
            pool_max_row(y, xr, ld, n, kh, kw, sw);
        return;
    }
    int64_t count = p->include_pad ? p->cnt[0][0] * p->cnt[1][oh] * kw
                                   : (p->hi[0][0] - p->lo[0][0]) * (hh - hl) * kw;
    if (sw == 1)
        pool_avg_row(y, xr, ld, n, kh, kw, 1, (float)count);
    else
        pool_avg_row(y, xr, ld, n, kh, kw, sw, (float)count);
}

/* One 2-D plane by the fast path: interior rows and columns (windows clear of padding and of
 * the input's edges) by pool_fast_row, the interior columns of the top and bottom rows by
 * pool_clipped_row, the rest of the border by pool_border_point. */
static void pool_fast_plane(const pool_params *p, const float *x, float *y)
{
    int64_t oh0 = p->inner_lo[1], oh1 = p->inner_hi[1];
    int64_t ow0 = p->inner_lo[2], ow1 = p->inner_hi[2];
    for (int64_t oh = 0; oh < p->out[1]; oh++) {
        int inner = oh >= oh0 && oh < oh1;
        if (ow0 >= ow1 || (!inner && p->hi[1][oh] <= p->lo[1][oh])) {
            for (int64_t ow = 0; ow < p->out[2]; ow++)
                pool_border_point(p, x, y, oh, ow);
            continue;
        }
        for (int64_t ow = 0; ow < ow0; ow++)
            pool_border_point(p, x, y, oh, ow);
        if (inner) {
            const float *xr = x + (oh * p->stride[1] - p->pad[1]) * p->in[2] +
                              (ow0 * p->stride[2] - p->pad[2]);
            pool_fast_row(p, y + oh * p->out[2] + ow0, xr, ow1 - ow0);
        } else {
            pool_clipped_row(p, y + oh * p->out[2] + ow0, x, oh, ow0, ow1 - ow0);
        }
        for (int64_t ow = ow1; ow < p->out[2]; ow++)
            pool_border_point(p, x, y, oh, ow);
    }
}

static void pool_task(void *arg, size_t q0, size_t q1)
{
    const pool_ctx *c = arg;
    const pool_params *p = c->p;
    int64_t in_plane = p->in[0] * p->in[1] * p->in[2];
    int64_t out_plane = p->out[0] * p->out[1] * p->out[2];
    for (size_t q = q0; q < q1; q++) {
        const int64_t base = (int64_t)q * in_plane;
        int64_t *yi = c->idx ? c->idx + (int64_t)q * out_plane : NULL;
        if (p->dt != LOOM_DTYPE_F32) {
            for (int64_t od = 0; od < p->out[0]; od++)
                for (int64_t oh = 0; oh < p->out[1]; oh++)
                    for (int64_t ow = 0; ow < p->out[2]; ow++) {
                        if (p->dt == LOOM_DTYPE_U8)
                            pool_point_u8(p, (const uint8_t *)c->x + base,
                                          (uint8_t *)c->y + q * out_plane, yi, base, od, oh, ow);
                        else
                            pool_point_i8(p, (const int8_t *)c->x + base,
                                          (int8_t *)c->y + q * out_plane, yi, base, od, oh, ow);
                    }
        } else {
            const float *x = (const float *)c->x + base;
            float *y = (float *)c->y + (int64_t)q * out_plane;
            if (p->fast) {
                pool_fast_plane(p, x, y);
                continue;
            }
            for (int64_t od = 0; od < p->out[0]; od++)
                for (int64_t oh = 0; oh < p->out[1]; oh++)
                    for (int64_t ow = 0; ow < p->out[2]; ow++)
                        pool_point(p, x, y, yi, base, od, oh, ow);
        }
        if (yi && p->col_major) /* (d, h, w) row-major -> (w, h, d) */
            for (int64_t o = 0; o < out_plane; o++) {
                if (yi[o] < 0)
                    continue;
                int64_t i = yi[o] - base, w = i % p->in[2], h = i / p->in[2] % p->in[1],
                        d = i / (p->in[2] * p->in[1]);
                yi[o] = base + (w * p->in[1] + h) * p->in[0] + d;
            }
    }
}

static loom_status pool_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                            char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const pool_params *p = k->params;
    pool_ctx c = {.p = p, .x = args->inputs[0], .y = args->outputs[0],
                  .idx = p->has_indices ? args->outputs[1] : NULL};
    int64_t out_plane = p->out[0] * p->out[1] * p->out[2];
    if (p->planes == 0 || out_plane == 0)
        return LOOM_OK;
    /* Work per plane: outputs times the taps of an interior window. */
    double taps = 1.0;
    for (int d = 0; d < 3; d++)
        taps *= (double)(p->hi[d][0] - p->lo[d][0] + 1);
    double plane = (double)out_plane * taps;
    size_t grain = plane >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / plane) + 1;
    cpu_parallel_for(pool, (size_t)p->planes, grain, pool_task, &c);
    return LOOM_OK;
}

static loom_status pool_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    const loom_tensor_desc *x = &k->in[0], *y = &k->out[0];
    size_t s = x->rank - 2, off = 3 - s;
    int64_t ks[3], st[3], dl[3], pd[6];
    cpu_get_ints(node, "kernel_shape", s, ks);
    cpu_get_ints(node, "strides", s, st);
    cpu_get_ints(node, "dilations", s, dl);
    cpu_get_ints(node, "pads", 2 * s, pd);
    int64_t kern[3], pad_end[3];
    int64_t in[3], out[3], stride[3], dil[3], pad[3];
    for (size_t d = 0; d < 3; d++) {
        int spatial = d >= off;
        size_t sd = d - off;
        in[d] = spatial ? x->dims[2 + sd] : 1;
        out[d] = spatial ? y->dims[2 + sd] : 1;
        kern[d] = spatial ? ks[sd] : 1;
        stride[d] = spatial ? st[sd] : 1;
        dil[d] = spatial ? dl[sd] : 1;
        pad[d] = spatial ? pd[sd] : 0;
        pad_end[d] = spatial ? pd[s + sd] : 0;
    }
    size_t entries = 3 * (size_t)(out[0] + out[1] + out[2]);
    pool_params *p = calloc(1, sizeof *p + entries * sizeof(int64_t));
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    p->is_max = node->op == LOOM_OP_MAX_POOL;
    p->include_pad = !p->is_max && loom_node_attr_int(node, "count_include_pad", 0) != 0;
    p->has_indices = p->is_max && k->n_out == 2 && k->out[1].dtype == LOOM_DTYPE_I64;
    p->col_major = p->has_indices && loom_node_attr_int(node, "storage_order", 0) != 0;
    p->dt = x->dtype;
    p->planes = x->dims[0] * x->dims[1];
    int64_t *t = p->table;
    for (size_t d = 0; d < 3; d++) {
        p->in[d] = in[d];
        p->out[d] = out[d];
        p->stride[d] = stride[d];
        p->dil[d] = dil[d];
        p->pad[d] = pad[d];
        p->kern[d] = kern[d];
        /* Interior: o * stride - pad >= 0 and o * stride - pad + (kern - 1) * dil < in. */
        int64_t hi = in[d] + pad[d] - (kern[d] - 1) * dil[d] - 1;
        hi = hi < 0 ? 0 : hi / stride[d] + 1;
        hi = hi < out[d] ? hi : out[d];
        int64_t lo = (pad[d] + stride[d] - 1) / stride[d];
        p->inner_lo[d] = lo < hi ? lo : hi;
        p->inner_hi[d] = hi;
        p->lo[d] = t;
        p->hi[d] = t + out[d];
        p->cnt[d] = t + 2 * out[d];
        t += 3 * out[d];
        for (int64_t o = 0; o < out[d]; o++) {
            int64_t start = o * stride[d] - pad[d];
            /* taps t with 0 <= start + t*dil < in */
            cpu_valid_range(start, dil[d], in[d], kern[d], &p->lo[d][o], &p->hi[d][o]);
            /* taps inside the padded input: start + t*dil < in + pad_end (start >= -pad) */
            int64_t lim = in[d] + pad_end[d] - start;
            int64_t c = lim <= 0 ? 0 : (lim - 1) / dil[d] + 1;
            p->cnt[d][o] = c < kern[d] ? c : kern[d];
        }
    }
    /* The fast rows take windows up to 16 x 16 with no dilation, in planes of one depth. */
    p->fast = !p->has_indices && p->dt == LOOM_DTYPE_F32 && in[0] == 1 && out[0] == 1 &&
              kern[0] == 1 && dil[1] == 1 && dil[2] == 1 && kern[1] <= 16 && kern[2] <= 16 &&
              stride[2] <= 16;
    p->avx2 = cpu_avx2_ok();
    k->params = p;
    k->run = pool_run;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- GlobalAveragePool, GlobalMaxPool --------------------------------------------------------- */

typedef struct gap_params {
    int64_t planes, size;
} gap_params;

static int gap_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs != 1 || node->n_outputs != 1) {
        cpu_reason(reason, len, "%s takes 1 input and 1 output", node->op_name);
        return 0;
    }
    if (node->inputs[0].dtype != LOOM_DTYPE_F32 || node->outputs[0].dtype != LOOM_DTYPE_F32) {
        cpu_reason(reason, len, "%s: only f32 is supported", node->op_name);
        return 0;
    }
    if (node->inputs[0].rank < 2) {
        cpu_reason(reason, len, "%s: input rank %u < 2", node->op_name, node->inputs[0].rank);
        return 0;
    }
    return 1;
}

typedef struct gap_ctx {
    const gap_params *p;
    const float *x;
    float *y;
} gap_ctx;

static void gap_task(void *arg, size_t q0, size_t q1)
{
    const gap_ctx *c = arg;
    int64_t n = c->p->size;
    for (size_t q = q0; q < q1; q++) {
        const float *x = c->x + (int64_t)q * n;
        /* Double accumulators keep big planes accurate; four of them keep the adds pipelined. */
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            s0 += x[i];
            s1 += x[i + 1];
            s2 += x[i + 2];
            s3 += x[i + 3];
        }
        for (; i < n; i++)
            s0 += x[i];
        c->y[q] = (float)((s0 + s1 + s2 + s3) / (double)n);
    }
}

/* GlobalMaxPool: the plane's maximum; a NaN never wins (as MaxPool), an empty plane or one of
 * NaNs only gives -inf. */
static void gmp_task(void *arg, size_t q0, size_t q1)
{
    const gap_ctx *c = arg;
    int64_t n = c->p->size;
    for (size_t q = q0; q < q1; q++) {
        const float *x = c->x + (int64_t)q * n;
        float m = -INFINITY;
        for (int64_t i = 0; i < n; i++)
            m = x[i] > m ? x[i] : m;
        c->y[q] = m;
    }
}

static loom_status gap_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const gap_params *p = k->params;
    gap_ctx c = {.p = p, .x = args->inputs[0], .y = args->outputs[0]};
    if (p->planes == 0)
        return LOOM_OK;
    double plane = (double)p->size + 1.0;
    size_t grain = plane >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / plane) + 1;
    cpu_parallel_for(pool, (size_t)p->planes, grain,
                     k->op == LOOM_OP_GLOBAL_MAX_POOL ? gmp_task : gap_task, &c);
    return LOOM_OK;
}

static loom_status gap_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    gap_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    const loom_tensor_desc *x = &k->in[0];
    p->planes = x->dims[0] * x->dims[1];
    p->size = 1;
    for (uint32_t d = 2; d < x->rank; d++)
        p->size *= x->dims[d];
    k->params = p;
    k->run = gap_run;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- MaxUnpool: Y zero, then X[i] at the position I[i] names. I holds flat indices into the
 * tensor MaxPool saw: [N, C, (in - 1) * stride + kernel - pads] (the shape without
 * output_shape); a larger output_shape keeps each position's coordinates (the extra rows and
 * columns stay zero). ---- */

typedef struct unpool_params {
    uint32_t rank;
    int64_t base[LOOM_MAX_RANK], out[LOOM_MAX_RANK]; /* the pooled-from and the output shapes */
    int64_t n_in, n_base;
} unpool_params;

static loom_status unpool_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    (void)pool;
    const unpool_params *p = k->params;
    const float *x = args->inputs[0];
    const int64_t *ix = args->inputs[1];
    float *y = args->outputs[0];
    memset(y, 0, (size_t)loom_tensor_desc_numel(&k->out[0]) * sizeof *y);
    for (int64_t i = 0; i < p->n_in; i++) {
        int64_t f = ix[i];
        if (f < 0 || f >= p->n_base)
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "MaxUnpool: index %lld is outside [0, %lld)", (long long)f,
                            (long long)p->n_base);
        int64_t at = 0, mul = 1;
        for (uint32_t d = p->rank; d-- > 0;) {
            at += f % p->base[d] * mul;
            f /= p->base[d];
            mul *= p->out[d];
        }
        y[at] = x[i];
    }
    return LOOM_OK;
}

static int unpool_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->inputs[0].dtype != LOOM_DTYPE_F32)
        return cpu_no_dtype(node, node->inputs[0].dtype, "float32", reason, len);
    int64_t ks[3];
    if (!cpu_get_ints(node, "kernel_shape", node->inputs[0].rank - 2, ks))
        return cpu_reason(reason, len, "MaxUnpool: canonical attributes missing");
    return 1;
}

static loom_status unpool_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                  size_t err_len)
{
    unpool_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    const size_t s = x->rank - 2;
    int64_t ks[3] = {1, 1, 1}, st[3] = {1, 1, 1}, pd[6] = {0};
    cpu_get_ints(node, "kernel_shape", s, ks);
    cpu_get_ints(node, "strides", s, st);
    cpu_get_ints(node, "pads", 2 * s, pd);
    p->rank = x->rank;
    p->n_in = loom_tensor_desc_numel(x);
    p->n_base = 1;
    for (uint32_t d = 0; d < x->rank; d++) {
        p->out[d] = y->dims[d];
        p->base[d] = d < 2 ? x->dims[d]
                           : (x->dims[d] - 1) * st[d - 2] + ks[d - 2] - pd[d - 2] - pd[s + d - 2];
        p->n_base *= p->base[d];
    }
    k->params = p;
    k->run = unpool_run;
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_pooling(cpu_op_entry *table)
{
    table[LOOM_OP_MAX_POOL] = (cpu_op_entry){pool_supports, pool_prepare};
    table[LOOM_OP_AVERAGE_POOL] = (cpu_op_entry){pool_supports, pool_prepare};
    table[LOOM_OP_GLOBAL_AVERAGE_POOL] = (cpu_op_entry){gap_supports, gap_prepare};
    table[LOOM_OP_GLOBAL_MAX_POOL] = (cpu_op_entry){gap_supports, gap_prepare};
    table[LOOM_OP_MAX_UNPOOL] = (cpu_op_entry){unpool_supports, unpool_prepare};
}
