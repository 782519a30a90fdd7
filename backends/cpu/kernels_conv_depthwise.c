/*
 * Direct depthwise convolution (one input channel per group: MobileNet's 3x3 and 5x5 layers),
 * NCHW. im2col would copy each input pixel kh*kw times for a GEMM whose K is 9 or 25, all
 * overhead; instead each output row is built in place (it stays in L1): for every kernel row, all
 * kw taps are summed along the row in one sweep, the interior (where every tap reads inside the
 * input) as straight vectorisable code specialised for 3 and 5 taps at strides 1 and 2, the edges
 * with bounds. The epilogue (bias, residual, activation) runs on each row, or on the whole plane
 * when rows are short, right after it is written.
 */
#include "cpu_conv.h"
#include "cpu_simd.h"

#include <stddef.h>

int cpu_conv_dw_prepare(conv_params *p)
{
    if (p->cg != 1 || p->group < 2 || p->kw > CONV_DW_MAX_KW)
        return 0;
    for (int64_t kj = 0; kj < p->kw; kj++)
        cpu_valid_range(kj * p->dw - p->pl, p->sw, p->w, p->ow, &p->lo[kj], &p->hi[kj]);
    /* The first tap starts latest, the last one ends first. */
    p->in_lo = p->lo[0];
    p->in_hi = p->hi[p->kw - 1];
    if (p->in_hi < p->in_lo)
        p->in_hi = p->in_lo;
    return 1;
}

/* d[i] += sum over taps t of w[t] * s[i * ST + t * DL], i in [0, n): the interior of a row. */
#define DW_ROW(NAME, KW, ST)                                                                      \
    static inline void NAME(float *restrict d, const float *restrict s, const float *w,          \
                            int64_t dl, size_t n)                                                 \
    {                                                                                             \
        float wt[KW];                                                                             \
        const float *restrict st[KW];                                                             \
        for (int t = 0; t < KW; t++) {                                                            \
            wt[t] = w[t];                                                                         \
            st[t] = s + t * dl;                                                                   \
        }                                                                                         \
        CPU_LOOP(n, float acc = d[i]; for (int t = 0; t < KW; t++) acc += wt[t] * st[t][i * ST];  \
                 d[i] = acc;);                                                                    \
    }
DW_ROW(dw_row_k3s1, 3, 1)
DW_ROW(dw_row_k5s1, 5, 1)
DW_ROW(dw_row_k3s2, 3, 2)
DW_ROW(dw_row_k5s2, 5, 2)

/* Adds one kernel row (taps W[0..kw)) of input row SROW to output row D. */
static inline void dw_row(const conv_params *p, float *d, const float *srow, const float *w)
{
    const int64_t kw = p->kw, sw = p->sw, dw = p->dw, pl = p->pl;
    /* Edges: each tap over the part of its range outside the interior. */
    for (int64_t kj = 0; kj < kw; kj++) {
        const float wv = w[kj];
        const float *s = srow + kj * dw - pl;
        int64_t a = p->lo[kj], b = p->in_lo < p->hi[kj] ? p->in_lo : p->hi[kj];
        for (int64_t o = a; o < b; o++)
            d[o] += wv * s[o * sw];
        a = p->in_hi > p->lo[kj] ? p->in_hi : p->lo[kj];
        for (int64_t o = a; o < p->hi[kj]; o++)
            d[o] += wv * s[o * sw];
    }
    const int64_t n = p->in_hi - p->in_lo;
    if (n <= 0)
        return;
    float *di = d + p->in_lo;
    const float *s = srow + p->in_lo * sw - pl;
    if (kw == 3 && sw == 1)
        dw_row_k3s1(di, s, w, dw, (size_t)n);
    else if (kw == 5 && sw == 1)
        dw_row_k5s1(di, s, w, dw, (size_t)n);
    else if (kw == 3 && sw == 2)
        dw_row_k3s2(di, s, w, dw, (size_t)n);
    else if (kw == 5 && sw == 2)
        dw_row_k5s2(di, s, w, dw, (size_t)n);
    else
        for (int64_t kj = 0; kj < kw; kj++) {
            const float wv = w[kj];
            const float *sk = s + kj * dw;
            for (int64_t o = 0; o < n; o++)
                di[o] += wv * sk[o * sw];
        }
}

typedef struct dw_ctx {
    const conv_params *p;
    const float *x, *w, *bias, *z;
    float *y;
} dw_ctx;

/* Padded planes up to this many floats (16 KiB) go through the stack copy. */
#define DW_PAD_MAX 4096
/* Rows shorter than this get their epilogue once per plane instead of once per row. */
#define DW_ROW_EPILOGUE_MIN 32

CPU_CLONES
static void dw_plane(const dw_ctx *c, size_t q)
{
    const conv_params *p = c->p;
    const int64_t n = (int64_t)q / p->m, oc = (int64_t)q % p->m, ic = oc / p->mg;
    const float *xc = c->x + (n * p->c + ic) * p->h * p->w;
    const float *wc = c->w + oc * p->kh * p->kw;
    float *y = c->y + (int64_t)q * p->p;
    const float *z = c->z ? c->z + (int64_t)q * p->p : NULL;
    const float b = c->bias ? c->bias[oc] : 0.0f;
    const int per_row = p->ow >= DW_ROW_EPILOGUE_MIN;
    /* Small planes (MobileNet's 14x14 and 7x7): copy the input plane into a zero-padded one on
     * the stack, so that every tap of every output column reads inside it and each row is one
     * straight sweep, with no edge loops on rows of a few columns. */
    const int64_t pw = (p->ow - 1) * p->sw + (p->kw - 1) * p->dw + 1;
    const int64_t ph = (p->oh - 1) * p->sh + (p->kh - 1) * p->dh + 1;
    if (pw * ph <= DW_PAD_MAX && (p->kw == 3 || p->kw == 5) && p->sw <= 2) {
        float buf[DW_PAD_MAX];
        for (int64_t r = 0; r < ph; r++) {
            float *br = buf + r * pw;
            const int64_t ih = r - p->pt;
            for (int64_t col = 0; col < pw; col++) {
                const int64_t iw = col - p->pl;
                br[col] = ih >= 0 && ih < p->h && iw >= 0 && iw < p->w ? xc[ih * p->w + iw] : 0.0f;
            }
        }
        for (int64_t oh = 0; oh < p->oh; oh++) {
            float *d = y + oh * p->ow;
            for (int64_t o = 0; o < p->ow; o++)
                d[o] = b;
            for (int64_t ki = 0; ki < p->kh; ki++) {
                const float *srow = buf + (oh * p->sh + ki * p->dh) * pw;
                const float *wk = wc + ki * p->kw;
                const size_t n = (size_t)p->ow;
                if (p->kw == 3 && p->sw == 1)
                    dw_row_k3s1(d, srow, wk, p->dw, n);
                else if (p->kw == 5 && p->sw == 1)
                    dw_row_k5s1(d, srow, wk, p->dw, n);
                else if (p->kw == 3)
                    dw_row_k3s2(d, srow, wk, p->dw, n);
                else
                    dw_row_k5s2(d, srow, wk, p->dw, n);
            }
        }
        if (z || p->ep.act != CPU_ACT_NONE)
            cpu_epilogue_apply(&p->ep, y, (size_t)p->p, 0.0f, NULL, z);
        return;
    }
    for (int64_t oh = 0; oh < p->oh; oh++) {
        float *d = y + oh * p->ow;
        for (int64_t o = 0; o < p->ow; o++)
            d[o] = b;
        for (int64_t ki = 0; ki < p->kh; ki++) {
            const int64_t ih = oh * p->sh - p->pt + ki * p->dh;
            if (ih < 0 || ih >= p->h)
                continue;
            dw_row(p, d, xc + ih * p->w, wc + ki * p->kw);
        }
        if (per_row && (z || p->ep.act != CPU_ACT_NONE))
            cpu_epilogue_apply(&p->ep, d, (size_t)p->ow, 0.0f, NULL, z ? z + oh * p->ow : NULL);
    }
    if (!per_row && (z || p->ep.act != CPU_ACT_NONE))
        cpu_epilogue_apply(&p->ep, y, (size_t)p->p, 0.0f, NULL, z);
}

static void dw_task(void *arg, size_t q0, size_t q1)
{
    const dw_ctx *c = arg;
    for (size_t q = q0; q < q1; q++)
        dw_plane(c, q);
}

void cpu_conv_dw_run(const conv_params *p, const float *x, const float *w, const float *bias,
                     const float *z, float *y, cpu_pool *pool)
{
    dw_ctx c = {p, x, w, bias, z, y};
    const double plane = (double)p->kh * (double)p->kw * (double)p->p + 1.0;
    const size_t grain = plane >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / plane) + 1;
    cpu_parallel_for(pool, (size_t)(p->n * p->m), grain, dw_task, &c);
}
