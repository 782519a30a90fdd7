/*
 * The int8 convolution of QLinearConv and ConvInteger with constant int8-ranged weights
 * (cpu_conv_int8.h): an implicit GEMM C[m][pixel] = sum_k W'[m][k] * X[k][pixel], k = (c, kh,
 * kw) in the weights' own order, with the output channels as the rows (weights broadcast) and
 * 64 output pixels as the columns (activations in the vector lanes). Written this way round, a
 * channel's sums for 64 consecutive pixels are one row of the NCHW output, and the epilogue
 * (zero-point correction, bias, requantisation in double with round-half-even, the saturation
 * that is also a fused Relu's clamp) stores them straight into it.
 *
 * Strides and padding become plain offsets: each run first copies x once into a padded,
 * phase-split image (for strides sh x sw, sh * sw phase planes per channel: phase (a, b) holds
 * padded rows a, a + sh, ... and columns b, b + sw, ..., padding holding x's zero point), on
 * which every tap (kh, kw) of a convolution is a stride-1 read at a fixed offset. The output
 * pixels are then numbered on a virtual grid as wide as a phase plane (Wh >= OW; the columns
 * past OW are computed and dropped at the store), so that the 64 input bytes a tap contributes
 * to 64 consecutive output pixels are 64 consecutive bytes: the activation panel of an item
 * (image, group, 64 virtual pixels) is built from direct loads, with no per-pixel index
 * arithmetic and no bounds checks. 1x1 stride-1 unpadded convs read x itself. The AVX-512
 * VNNI path interleaves four k's per pixel ([k/4][64 pixels][4] bytes, what vpdpbusd
 * multiplies: u8 activations x s8 weights, four products summed per int32 lane) with byte
 * unpacks and a 128-bit-lane transpose; the portable path keeps [k][64] rows, which GCC
 * vectorises. int8 x is stored as x + 128 (its top bit
 * flipped) and the zero point times the weights' row sum is taken out in the epilogue, so the
 * sums are exact int32 either way and both paths give the same bytes as ONNX's reference
 * arithmetic.
 */
#include "cpu_conv_int8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define Q8_HAVE_X86 1
#endif

#define Q8_NP 64    /* virtual output pixels per panel (four 16-lane vectors) */
#define Q8_MR 4     /* output channels per micro-kernel */
#define Q8_SLOTS 16 /* items are dealt round-robin to at most this many scratch slots */

struct cpu_qconv8 {
    cpu_qconv8_geom g;
    int64_t Cg, Mg, KHW, CKK, KP;
    int64_t Hh, Wh;        /* a phase plane's rows and columns; Wh is the virtual grid's width */
    int64_t chan_bytes;    /* one channel of the phase-split image: sh * sw planes of Hh x Wh */
    int64_t Pv, panels, items, slots;
    int64_t *off;          /* [KP]: where tap k reads, from its group's first channel; -1: none */
    int8_t *w;             /* [M][KP]: W' with zero columns past CKK */
    int32_t *wsum;         /* [M]: sum_k W'[m][k] */
    size_t img_bytes, panel_bytes;
    int x_signed, y_signed, integer;
    int vnni, vbmi;
    int direct;            /* 1x1, stride 1, no padding: x itself is the image */
};

typedef struct q8_job {
    const cpu_qconv8 *k;
    const cpu_qconv8_args *a;
    const uint8_t *img;    /* the phase-split image (or x) */
    uint8_t xz_raw;        /* x's zero point as x's byte */
    uint8_t flip;          /* 0x80 for int8 x (stored as x + 128), else 0 */
    int32_t xzu;           /* the zero point as stored: x_zp (+ 128 for int8) */
} q8_job;

/* Panel columns [t, t + len) are real output pixels OUT, OUT + 1, ... of a channel's plane. */
typedef struct q8_seg {
    int32_t t, len;
    int64_t out;
} q8_seg;

static int env_off(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

#ifdef Q8_HAVE_X86
/* CNT bytes at stride 2 from SRC into DST (CNT <= 64), with AVX-512 VBMI: two masked loads and
 * one byte permute (no read past SRC[2 * (CNT - 1)]). */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void
gather2_vbmi(const uint8_t *src, int64_t cnt, uint8_t *dst)
{
    static const uint8_t idx[64] = {
        0,   2,   4,   6,   8,   10,  12,  14,  16,  18,  20,  22,  24,  26,  28,  30,
        32,  34,  36,  38,  40,  42,  44,  46,  48,  50,  52,  54,  56,  58,  60,  62,
        64,  66,  68,  70,  72,  74,  76,  78,  80,  82,  84,  86,  88,  90,  92,  94,
        96,  98,  100, 102, 104, 106, 108, 110, 112, 114, 116, 118, 120, 122, 124, 126};
    const int64_t need = 2 * cnt - 1;
    const __mmask64 m0 = need >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << need) - 1);
    const __mmask64 m1 = need <= 64 ? 0 : (((__mmask64)1 << (need - 64)) - 1);
    const __m512i lo = _mm512_maskz_loadu_epi8(m0, src);
    const __m512i hi = _mm512_maskz_loadu_epi8(m1, src + 64);
    const __m512i v = _mm512_permutex2var_epi8(lo, _mm512_loadu_si512(idx), hi);
    const __mmask64 mo = cnt >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << cnt) - 1);
    _mm512_mask_storeu_epi8(dst, mo, v);
}
#endif

#ifdef Q8_HAVE_X86
/* Lanes [lo, hi) of a 16-lane vector (0 <= lo <= hi <= 16). */
static inline __mmask16 lanes16(int64_t lo, int64_t hi)
{
    return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

/* Lanes [lo, hi) of a 64-lane vector (0 <= lo, hi <= 64; none when lo >= hi). */
static inline __mmask64 lanes64(int64_t lo, int64_t hi)
{
    const __mmask64 below_hi = hi >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << hi) - 1);
    const __mmask64 below_lo = lo >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << lo) - 1);
    return below_hi & ~below_lo;
}

/* One channel's phase planes for a column stride of 2 (VBMI): each padded row's even and odd
 * columns in one pass, 128 source bytes (masked: padding lanes read nothing, they take the zero
 * point) into 64 of each phase per step. */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void
q8_image_s2(const q8_job *j, const uint8_t *src, uint8_t *dst)
{
    const cpu_qconv8 *k = j->k;
    const cpu_qconv8_geom *g = &k->g;
    static const uint8_t even[64] = {
        0,   2,   4,   6,   8,   10,  12,  14,  16,  18,  20,  22,  24,  26,  28,  30,
        32,  34,  36,  38,  40,  42,  44,  46,  48,  50,  52,  54,  56,  58,  60,  62,
        64,  66,  68,  70,  72,  74,  76,  78,  80,  82,  84,  86,  88,  90,  92,  94,
        96,  98,  100, 102, 104, 106, 108, 110, 112, 114, 116, 118, 120, 122, 124, 126};
    const __m512i ie = _mm512_loadu_si512(even);
    const __m512i io = _mm512_add_epi8(ie, _mm512_set1_epi8(1));
    const __m512i fill = _mm512_set1_epi8((char)j->xz_raw);
    const size_t plane = (size_t)(k->Hh * k->Wh);
    for (int64_t pa = 0; pa < g->sh; pa++)
        for (int64_t i = 0; i < k->Hh; i++) {
            uint8_t *d0 = dst + (size_t)(pa * 2) * plane + (size_t)(i * k->Wh);
            uint8_t *d1 = d0 + plane;
            const int64_t r = i * g->sh + pa - g->ph;
            if (r < 0 || r >= g->H) {
                memset(d0, j->xz_raw, (size_t)k->Wh);
                memset(d1, j->xz_raw, (size_t)k->Wh);
                continue;
            }
            const uint8_t *row = src + r * g->W;
            for (int64_t j0 = 0; j0 < k->Wh; j0 += 64) {
                /* Source columns [c0, c0 + 128): phase b's column j is x column 2j + b - pw. */
                const int64_t c0 = 2 * j0 - g->pw;
                const int64_t a0 = c0 < 0 ? -c0 : 0, e0 = g->W - c0; /* valid lanes [a0, e0) */
                const __mmask64 m0 = lanes64(a0 < 64 ? a0 : 64, e0 < 0 ? 0 : e0 > 64 ? 64 : e0);
                const __mmask64 m1 =
                    lanes64(a0 - 64 < 0 ? 0 : a0 - 64 > 64 ? 64 : a0 - 64,
                            e0 - 64 < 0 ? 0 : e0 - 64 > 64 ? 64 : e0 - 64);
                const uintptr_t base = (uintptr_t)row + (uintptr_t)c0;
                const __m512i lo = _mm512_mask_loadu_epi8(fill, m0, (const void *)base);
                const __m512i hi = _mm512_mask_loadu_epi8(fill, m1, (const void *)(base + 64));
                const __mmask64 mo = lanes64(0, k->Wh - j0 < 64 ? k->Wh - j0 : 64);
                _mm512_mask_storeu_epi8(d0 + j0, mo, _mm512_permutex2var_epi8(lo, ie, hi));
                _mm512_mask_storeu_epi8(d1 + j0, mo, _mm512_permutex2var_epi8(lo, io, hi));
            }
        }
}
#endif

#ifdef Q8_HAVE_X86
/* One channel's padded copy for a column stride of 1 (AVX-512BW): per padded row, masked
 * 64-byte loads (the padding lanes read nothing and take the zero point) and stores, instead of
 * three libc calls per row. */
__attribute__((target("avx512f,avx512bw"))) static void
q8_image_s1(const q8_job *j, const uint8_t *src, uint8_t *dst)
{
    const cpu_qconv8 *k = j->k;
    const cpu_qconv8_geom *g = &k->g;
    const __m512i fill = _mm512_set1_epi8((char)j->xz_raw);
    for (int64_t pa = 0; pa < g->sh; pa++)
        for (int64_t i = 0; i < k->Hh; i++, dst += k->Wh) {
            const int64_t r = i * g->sh + pa - g->ph;
            if (r < 0 || r >= g->H) {
                memset(dst, j->xz_raw, (size_t)k->Wh);
                continue;
            }
            const uint8_t *row = src + r * g->W;
            for (int64_t j0 = 0; j0 < k->Wh; j0 += 64) {
                const int64_t c0 = j0 - g->pw; /* x columns [c0, c0 + 64) */
                const int64_t a0 = c0 < 0 ? -c0 : 0, e0 = g->W - c0;
                const __mmask64 m = lanes64(a0 < 64 ? a0 : 64, e0 < 0 ? 0 : e0 > 64 ? 64 : e0);
                const __m512i v =
                    _mm512_mask_loadu_epi8(fill, m, (const void *)((uintptr_t)row + (uintptr_t)c0));
                _mm512_mask_storeu_epi8(dst + j0, lanes64(0, k->Wh - j0 < 64 ? k->Wh - j0 : 64),
                                        v);
            }
        }
}
#endif

/* Channels [BEGIN, END) (of all N x C) of x into the phase-split image, raw bytes, padding as
 * x's zero point. */
static void q8_image(void *arg, size_t begin, size_t end)
{
    const q8_job *j = arg;
    const cpu_qconv8 *k = j->k;
    const cpu_qconv8_geom *g = &k->g;
    const uint8_t xz = j->xz_raw;
    for (size_t nc = begin; nc < end; nc++) {
        const uint8_t *src = (const uint8_t *)j->a->x + nc * (size_t)(g->H * g->W);
        uint8_t *dst = (uint8_t *)j->img + nc * (size_t)k->chan_bytes;
#ifdef Q8_HAVE_X86
        if (g->sw == 2 && k->vbmi) {
            q8_image_s2(j, src, dst);
            continue;
        }
        if (g->sw == 1 && k->vnni) {
            q8_image_s1(j, src, dst);
            continue;
        }
#endif
        for (int64_t pa = 0; pa < g->sh; pa++)
            for (int64_t pb = 0; pb < g->sw; pb++) {
                /* Phase columns j whose x column j * sw + pb - pw lies in [0, W). */
                const int64_t o = pb - g->pw;
                int64_t jlo = o >= 0 ? 0 : (-o + g->sw - 1) / g->sw;
                int64_t jhi = g->W - 1 - o < 0 ? -1 : (g->W - 1 - o) / g->sw;
                jhi = jhi < k->Wh - 1 ? jhi : k->Wh - 1;
                jlo = jlo < k->Wh ? jlo : k->Wh;
                for (int64_t i = 0; i < k->Hh; i++, dst += k->Wh) {
                    const int64_t r = i * g->sh + pa - g->ph;
                    if (r < 0 || r >= g->H || jlo > jhi) {
                        memset(dst, xz, (size_t)k->Wh);
                        continue;
                    }
                    memset(dst, xz, (size_t)jlo);
                    const uint8_t *s = src + r * g->W + jlo * g->sw + o;
                    const int64_t cnt = jhi - jlo + 1;
                    if (g->sw == 1) {
                        memcpy(dst + jlo, s, (size_t)cnt);
                    }
#ifdef Q8_HAVE_X86
                    else if (g->sw == 2 && k->vbmi) {
                        for (int64_t c0 = 0; c0 < cnt; c0 += 64)
                            gather2_vbmi(s + 2 * c0, cnt - c0 < 64 ? cnt - c0 : 64,
                                         dst + jlo + c0);
                    }
#endif
                    else {
                        for (int64_t t = 0; t < cnt; t++)
                            dst[jlo + t] = s[t * g->sw];
                    }
                    memset(dst + jhi + 1, xz, (size_t)(k->Wh - 1 - jhi));
                }
            }
    }
}

/* The real output pixels among virtual pixels [P0, P0 + NP): at most one run per grid row. */
static int q8_segments(const cpu_qconv8 *k, int64_t p0, int64_t np, q8_seg *seg)
{
    int n = 0;
    for (int64_t q = p0; q < p0 + np;) {
        const int64_t oh = q / k->Wh, ow = q % k->Wh;
        const int64_t len = k->Wh - ow < p0 + np - q ? k->Wh - ow : p0 + np - q;
        if (ow < k->g.OW)
            seg[n++] = (q8_seg){(int32_t)(q - p0),
                                (int32_t)(k->g.OW - ow < len ? k->g.OW - ow : len),
                                oh * k->g.OW + ow};
        q += len;
    }
    return n;
}

/* Portable panel: [KP][64] bytes, x + 128 for int8 x; columns past NP hold the zero point. */
static void q8_pack_rows(const q8_job *j, const uint8_t *base, int64_t p0, int64_t np,
                         uint8_t *panel)
{
    const cpu_qconv8 *k = j->k;
    for (int64_t kk = 0; kk < k->KP; kk++) {
        uint8_t *restrict dst = panel + kk * Q8_NP;
        if (k->off[kk] < 0) {
            memset(dst, j->xzu, Q8_NP);
            continue;
        }
        const uint8_t *restrict src = base + k->off[kk] + p0;
        int64_t t = 0;
        for (; t < np; t++)
            dst[t] = (uint8_t)(src[t] ^ j->flip);
        for (; t < Q8_NP; t++)
            dst[t] = (uint8_t)j->xzu;
    }
}

/* One channel's requantised (or int32) values VAL[0..NP) of a panel into the output: straight
 * when the grid has no extra columns, else run by run. */
static void q8_scatter(const q8_job *j, int64_t n, int64_t m, int64_t p0, int64_t np,
                       const void *val, size_t esz, const q8_seg *seg, int nseg)
{
    const cpu_qconv8 *k = j->k;
    const int64_t P = k->g.OH * k->g.OW;
    char *y = (char *)j->a->y + (size_t)((n * k->g.M + m) * P) * esz;
    if (k->Wh == k->g.OW) {
        memcpy(y + (size_t)p0 * esz, val, (size_t)np * esz);
        return;
    }
    for (int s = 0; s < nseg; s++)
        memcpy(y + (size_t)seg[s].out * esz, (const char *)val + (size_t)seg[s].t * esz,
               (size_t)seg[s].len * esz);
}

#ifdef Q8_HAVE_X86
/* Four rows of 64 bytes (NP valid, the rest FILL) into 64 pixels x 4 bytes, top bits XORed
 * with FLIP: byte unpacks within 128-bit lanes, then a 4 x 4 transpose of the lanes. */
__attribute__((target("avx512f,avx512bw"))) static void
q8_interleave_avx512(const uint8_t *const src[4], __mmask64 mk, __m512i fv, __m512i xf,
                     uint8_t *dst)
{
    const __m512i r0 = _mm512_xor_si512(_mm512_mask_loadu_epi8(fv, mk, src[0]), xf);
    const __m512i r1 = _mm512_xor_si512(_mm512_mask_loadu_epi8(fv, mk, src[1]), xf);
    const __m512i r2 = _mm512_xor_si512(_mm512_mask_loadu_epi8(fv, mk, src[2]), xf);
    const __m512i r3 = _mm512_xor_si512(_mm512_mask_loadu_epi8(fv, mk, src[3]), xf);
    const __m512i a = _mm512_unpacklo_epi8(r0, r1), b = _mm512_unpackhi_epi8(r0, r1);
    const __m512i c = _mm512_unpacklo_epi8(r2, r3), d = _mm512_unpackhi_epi8(r2, r3);
    /* Lane L of e0..e3: pixels 16L + 0..3, 4..7, 8..11, 12..15, four bytes each. */
    const __m512i e0 = _mm512_unpacklo_epi16(a, c), e1 = _mm512_unpackhi_epi16(a, c);
    const __m512i e2 = _mm512_unpacklo_epi16(b, d), e3 = _mm512_unpackhi_epi16(b, d);
    const __m512i t0 = _mm512_shuffle_i64x2(e0, e1, 0x44), t1 = _mm512_shuffle_i64x2(e2, e3, 0x44);
    const __m512i t2 = _mm512_shuffle_i64x2(e0, e1, 0xEE), t3 = _mm512_shuffle_i64x2(e2, e3, 0xEE);
    _mm512_storeu_si512(dst, _mm512_shuffle_i64x2(t0, t1, 0x88));
    _mm512_storeu_si512(dst + 64, _mm512_shuffle_i64x2(t0, t1, 0xDD));
    _mm512_storeu_si512(dst + 128, _mm512_shuffle_i64x2(t2, t3, 0x88));
    _mm512_storeu_si512(dst + 192, _mm512_shuffle_i64x2(t2, t3, 0xDD));
}

/* VNNI panel: [KP / 4][64 pixels][4] bytes. Pixels past NP are x's zero point (flipped):
 * masked loads, so nothing is read past the image. */
__attribute__((target("avx512f,avx512bw"))) static void
q8_pack_vnni(const q8_job *j, const uint8_t *base, int64_t p0, int64_t np, uint8_t *panel)
{
    const cpu_qconv8 *k = j->k;
    const __mmask64 mk = np >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << np) - 1);
    const __m512i fv = _mm512_set1_epi8((char)j->xz_raw), xf = _mm512_set1_epi8((char)j->flip);
    for (int64_t kg = 0; kg < k->KP / 4; kg++) {
        const uint8_t *src[4];
        for (int r = 0; r < 4; r++) {
            const int64_t o = k->off[kg * 4 + r];
            /* Past CKK the weights are 0: any bytes do; read the first tap's. */
            src[r] = base + (o < 0 ? k->off[0] : o) + p0;
        }
        q8_interleave_avx512(src, mk, fv, xf, panel + kg * Q8_NP * 4);
    }
}

/* The address lane 0 of a vector would be stored to so that lane T lands on output pixel OUT
 * (elements of ESZ bytes): a masked store from there writes only the run's own lanes. An
 * integer, not a pointer, since it may lie before the plane. */
static inline uintptr_t run_base(const void *plane, int64_t out, int64_t t, size_t esz)
{
    return (uintptr_t)plane + (uintptr_t)((out - t) * (int64_t)esz);
}

/* The epilogue of one channel M over the panel's NP pixels: ACC (4 x 16 int32 sums) minus the
 * zero point times the weights' row sum, plus the bias; stored as int32, or requantised as
 * requant() in kernels_quantization.c does (double, half to even) into bytes. Stores go from
 * registers straight to the output, run by run where the grid has extra columns (masked stores
 * with the lanes shifted by the address: a copy through memory stalled on store forwarding). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) static void
q8_store_avx512(const q8_job *j, int64_t n, int64_t m, int64_t p0, int64_t np, const __m512i *acc,
                const q8_seg *seg, int nseg)
{
    const cpu_qconv8 *k = j->k;
    const cpu_qconv8_args *a = j->a;
    const int64_t corr = (int64_t)j->xzu * k->wsum[m] - (a->bias ? a->bias[m] : 0);
    const __m512i cv = _mm512_set1_epi32((int32_t)(uint32_t)(uint64_t)corr);
    const int straight = k->Wh == k->g.OW;
    const size_t plane = (size_t)((n * k->g.M + m) * k->g.OH * k->g.OW);
    if (k->integer) {
        int32_t *y = (int32_t *)a->y + plane;
        for (int v = 0; v < 4 && v * 16 < np; v++) {
            const __m512i t = _mm512_sub_epi32(acc[v], cv);
            if (straight) {
                const int64_t hi = np - v * 16 < 16 ? np - v * 16 : 16;
                _mm512_mask_storeu_epi32(y + p0 + v * 16, lanes16(0, hi), t);
                continue;
            }
            for (int s = 0; s < nseg; s++) {
                const int64_t lo = seg[s].t - v * 16, hi = lo + seg[s].len;
                if (hi <= 0 || lo >= 16)
                    continue;
                _mm512_mask_storeu_epi32(
                    (void *)run_base(y, seg[s].out, seg[s].t - v * 16, sizeof *y),
                    lanes16(lo < 0 ? 0 : lo, hi > 16 ? 16 : hi), t);
            }
        }
        return;
    }
    /* rint(acc * mult) + zp saturated to [lo, hi] is rint(acc * mult clamped to [lo - zp,
     * hi - zp]) + zp: the bounds are integers, so the clamp and the rounding commute, and the
     * conversion rounds (half to even) by itself. */
    const int32_t lo = k->y_signed ? -128 : 0, hi = k->y_signed ? 127 : 255;
    const double mult_d = (double)a->mult[m];
    /* With |mult| <= 1/2, |acc * mult| <= 2^30: the rounded value plus the zero point fits
     * int32, and the saturating narrowing (after a max with 0 for uint8) is the clamp. */
    const int small = fabs(mult_d) <= 0.5;
    const __m512d mult = _mm512_set1_pd(mult_d);
    const __m512d dlo = _mm512_set1_pd((double)(lo - a->y_zp));
    const __m512d dhi = _mm512_set1_pd((double)(hi - a->y_zp));
    const __m512i zp = _mm512_set1_epi32(a->y_zp);
    __m512i bytes = _mm512_setzero_si512();
    for (int v = 0; v < 4; v++) {
        const __m512i t = _mm512_sub_epi32(acc[v], cv);
        __m512d d0 = _mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(t)), mult);
        __m512d d1 = _mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(t, 1)), mult);
        if (!small) {
            d0 = _mm512_min_pd(_mm512_max_pd(d0, dlo), dhi);
            d1 = _mm512_min_pd(_mm512_max_pd(d1, dlo), dhi);
        }
        const __m256i i0 =
            _mm512_cvt_roundpd_epi32(d0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256i i1 =
            _mm512_cvt_roundpd_epi32(d1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512i q =
            _mm512_add_epi32(_mm512_inserti64x4(_mm512_castsi256_si512(i0), i1, 1), zp);
        const __m128i b = !small ? _mm512_cvtepi32_epi8(q)
                          : k->y_signed ? _mm512_cvtsepi32_epi8(q)
                                        : _mm512_cvtusepi32_epi8(
                                              _mm512_max_epi32(q, _mm512_setzero_si512()));
        bytes = v == 0   ? _mm512_inserti32x4(bytes, b, 0)
                : v == 1 ? _mm512_inserti32x4(bytes, b, 1)
                : v == 2 ? _mm512_inserti32x4(bytes, b, 2)
                         : _mm512_inserti32x4(bytes, b, 3);
        if ((v + 1) * 16 >= np)
            break;
    }
    uint8_t *y = (uint8_t *)a->y + plane;
    if (straight) {
        _mm512_mask_storeu_epi8(y + p0, lanes64(0, np), bytes);
        return;
    }
    for (int s = 0; s < nseg; s++)
        _mm512_mask_storeu_epi8((void *)run_base(y, seg[s].out, seg[s].t, 1),
                                lanes64(seg[s].t, seg[s].t + seg[s].len), bytes);
}

/* VNNI: channels [m0, m0 + rows) (rows <= 4; a short block repeats its last channel and stores
 * only the ones it has) x the panel's 64 pixels, 16 accumulators in registers (spelled out: an
 * array of them stayed in memory). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))) static void
q8_tile_vnni(const q8_job *j, int64_t n, int64_t m0, int64_t rows, int64_t p0, int64_t np,
             const uint8_t *panel, const q8_seg *seg, int nseg)
{
    typedef int32_t i32a __attribute__((may_alias));
    const cpu_qconv8 *k = j->k;
    const int64_t kp = k->KP;
    const int8_t *w0 = k->w + m0 * kp;
    const int8_t *w1 = w0 + (rows > 1 ? kp : 0);
    const int8_t *w2 = w0 + (rows > 2 ? 2 * kp : rows > 1 ? kp : 0);
    const int8_t *w3 = w0 + (rows > 3 ? 3 * kp : rows > 2 ? 2 * kp : rows > 1 ? kp : 0);
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00;
    __m512i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00;
    __m512i c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    const uint8_t *x = panel;
    for (int64_t kk = 0; kk < kp; kk += 4, x += Q8_NP * 4) {
        const __m512i x0 = _mm512_loadu_si512(x), x1 = _mm512_loadu_si512(x + 64);
        const __m512i x2 = _mm512_loadu_si512(x + 128), x3 = _mm512_loadu_si512(x + 192);
        __m512i wv = _mm512_set1_epi32(*(const i32a *)(w0 + kk));
        c00 = _mm512_dpbusd_epi32(c00, x0, wv);
        c01 = _mm512_dpbusd_epi32(c01, x1, wv);
        c02 = _mm512_dpbusd_epi32(c02, x2, wv);
        c03 = _mm512_dpbusd_epi32(c03, x3, wv);
        wv = _mm512_set1_epi32(*(const i32a *)(w1 + kk));
        c10 = _mm512_dpbusd_epi32(c10, x0, wv);
        c11 = _mm512_dpbusd_epi32(c11, x1, wv);
        c12 = _mm512_dpbusd_epi32(c12, x2, wv);
        c13 = _mm512_dpbusd_epi32(c13, x3, wv);
        wv = _mm512_set1_epi32(*(const i32a *)(w2 + kk));
        c20 = _mm512_dpbusd_epi32(c20, x0, wv);
        c21 = _mm512_dpbusd_epi32(c21, x1, wv);
        c22 = _mm512_dpbusd_epi32(c22, x2, wv);
        c23 = _mm512_dpbusd_epi32(c23, x3, wv);
        wv = _mm512_set1_epi32(*(const i32a *)(w3 + kk));
        c30 = _mm512_dpbusd_epi32(c30, x0, wv);
        c31 = _mm512_dpbusd_epi32(c31, x1, wv);
        c32 = _mm512_dpbusd_epi32(c32, x2, wv);
        c33 = _mm512_dpbusd_epi32(c33, x3, wv);
    }
    const __m512i r0[4] = {c00, c01, c02, c03}, r1[4] = {c10, c11, c12, c13};
    const __m512i r2[4] = {c20, c21, c22, c23}, r3[4] = {c30, c31, c32, c33};
    q8_store_avx512(j, n, m0, p0, np, r0, seg, nseg);
    if (rows > 1)
        q8_store_avx512(j, n, m0 + 1, p0, np, r1, seg, nseg);
    if (rows > 2)
        q8_store_avx512(j, n, m0 + 2, p0, np, r2, seg, nseg);
    if (rows > 3)
        q8_store_avx512(j, n, m0 + 3, p0, np, r3, seg, nseg);
}
#endif

/* Portable: channels [m0, m0 + rows) x the panel's pixels, then the same epilogue in scalar
 * code (requant() of kernels_quantization.c: double, half to even, saturated). */
static void q8_tile_generic(const q8_job *j, int64_t n, int64_t m0, int64_t rows, int64_t p0,
                            int64_t np, const uint8_t *panel, const q8_seg *seg, int nseg)
{
    const cpu_qconv8 *k = j->k;
    const cpu_qconv8_args *a = j->a;
    int32_t acc[Q8_MR][Q8_NP];
    memset(acc, 0, sizeof acc);
    for (int64_t kk = 0; kk < k->KP; kk++) {
        const uint8_t *restrict x = panel + kk * Q8_NP;
        for (int64_t i = 0; i < rows; i++) {
            const int32_t wv = k->w[(m0 + i) * k->KP + kk];
            int32_t *restrict c = acc[i];
            for (int t = 0; t < Q8_NP; t++)
                c[t] += wv * (int32_t)x[t];
        }
    }
    const int32_t lo = k->y_signed ? -128 : 0, hi = k->y_signed ? 127 : 255;
    for (int64_t i = 0; i < rows; i++) {
        const int64_t m = m0 + i;
        const int64_t corr = (int64_t)j->xzu * k->wsum[m] - (a->bias ? a->bias[m] : 0);
        const uint32_t cu = (uint32_t)(uint64_t)corr;
        if (k->integer) {
            int32_t v[Q8_NP];
            for (int64_t t = 0; t < np; t++)
                v[t] = (int32_t)((uint32_t)acc[i][t] - cu);
            q8_scatter(j, n, m, p0, np, v, sizeof v[0], seg, nseg);
            continue;
        }
        const double mult = a->mult[m];
        uint8_t b[Q8_NP];
        for (int64_t t = 0; t < np; t++) {
            const int32_t s = (int32_t)((uint32_t)acc[i][t] - cu);
            const double v = rint((double)s * mult) + (double)a->y_zp;
            const int32_t q = v < lo ? lo : v > hi ? hi : (int32_t)v;
            b[t] = (uint8_t)q; /* int8 output: the low byte of the two's complement value */
        }
        q8_scatter(j, n, m, p0, np, b, 1, seg, nseg);
    }
}

static void q8_walk(void *arg, size_t begin, size_t end)
{
    const q8_job *j = arg;
    const cpu_qconv8 *k = j->k;
    q8_seg seg[Q8_NP];
    for (size_t s = begin; s < end; s++) {
        uint8_t *panel = (uint8_t *)j->a->scratch + k->img_bytes + s * k->panel_bytes;
        for (int64_t it = (int64_t)s; it < k->items; it += k->slots) {
            const int64_t pi = it % k->panels, ng = it / k->panels;
            const int64_t grp = ng % k->g.G, n = ng / k->g.G;
            const int64_t p0 = pi * Q8_NP, np = k->Pv - p0 < Q8_NP ? k->Pv - p0 : Q8_NP;
            const uint8_t *base = j->img + (n * k->g.C + grp * k->Cg) * k->chan_bytes;
            const int nseg = q8_segments(k, p0, np, seg);
#ifdef Q8_HAVE_X86
            if (k->vnni) {
                q8_pack_vnni(j, base, p0, np, panel);
                for (int64_t mb = 0; mb < k->Mg; mb += Q8_MR)
                    q8_tile_vnni(j, n, grp * k->Mg + mb, k->Mg - mb < Q8_MR ? k->Mg - mb : Q8_MR,
                                 p0, np, panel, seg, nseg);
                continue;
            }
#endif
            q8_pack_rows(j, base, p0, np, panel);
            for (int64_t mb = 0; mb < k->Mg; mb += Q8_MR)
                q8_tile_generic(j, n, grp * k->Mg + mb, k->Mg - mb < Q8_MR ? k->Mg - mb : Q8_MR,
                                p0, np, panel, seg, nseg);
        }
    }
}

void cpu_qconv8_run(const cpu_qconv8 *k, const cpu_qconv8_args *a, cpu_pool *pool)
{
    if (k->items == 0 || k->g.M == 0)
        return;
    q8_job j = {.k = k, .a = a, .flip = k->x_signed ? 0x80 : 0};
    j.xz_raw = (uint8_t)a->x_zp;
    j.xzu = k->x_signed ? a->x_zp + 128 : a->x_zp;
    if (k->direct) {
        j.img = a->x;
    } else {
        uint8_t *img = a->scratch;
        const size_t body = (size_t)(k->g.N * k->g.C * k->chan_bytes);
        memset(img + body, j.xz_raw, k->img_bytes - body); /* what the grid's last columns read */
        j.img = img;
        cpu_parallel_for(pool, (size_t)(k->g.N * k->g.C), 4, q8_image, &j);
    }
    cpu_parallel_for(pool, (size_t)k->slots, 1, q8_walk, &j);
}

cpu_qconv8 *cpu_qconv8_create(const cpu_qconv8_geom *geom, const int8_t *w, int x_signed,
                              int y_signed, int integer_out)
{
    cpu_qconv8 *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    const cpu_qconv8_geom *g = geom;
    k->g = *geom;
    k->Cg = g->C / g->G;
    k->Mg = g->M / g->G;
    k->KHW = g->KH * g->KW;
    k->CKK = k->Cg * k->KHW;
    k->KP = (k->CKK + 3) / 4 * 4;
    k->x_signed = x_signed;
    k->y_signed = y_signed;
    k->integer = integer_out;
    k->direct = g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 &&
                g->pw == 0 && g->OH == g->H && g->OW == g->W;
    if (k->direct) {
        k->Hh = g->H;
        k->Wh = g->W;
        k->chan_bytes = g->H * g->W;
    } else {
        /* The padded extent the outputs read, split into sh x sw phases. */
        const int64_t hp = g->OH > 0 ? (g->OH - 1) * g->sh + (g->KH - 1) * g->dh + 1 : 0;
        const int64_t wp = g->OW > 0 ? (g->OW - 1) * g->sw + (g->KW - 1) * g->dw + 1 : 0;
        k->Hh = (hp + g->sh - 1) / g->sh;
        k->Wh = (wp + g->sw - 1) / g->sw;
        k->chan_bytes = g->sh * g->sw * k->Hh * k->Wh;
        /* Reads of the grid's extra columns run past the last plane by at most Wh bytes. */
        k->img_bytes = (((size_t)(g->N * g->C * k->chan_bytes) + (size_t)k->Wh + 64) + 63) &
                       ~(size_t)63;
    }
    k->Pv = g->OH * k->Wh;
    k->panels = (k->Pv + Q8_NP - 1) / Q8_NP;
    k->items = g->N * g->G * k->panels;
    k->slots = k->items < Q8_SLOTS ? k->items : Q8_SLOTS;
    if (k->slots < 1)
        k->slots = 1;
    k->panel_bytes = ((size_t)k->KP * Q8_NP + 63) & ~(size_t)63;
    k->w = calloc((size_t)(g->M * k->KP) + 4, 1);
    k->wsum = calloc((size_t)g->M + 1, sizeof *k->wsum);
    k->off = malloc(((size_t)k->KP + 1) * sizeof *k->off);
    if (!k->w || !k->wsum || !k->off) {
        cpu_qconv8_free(k);
        return NULL;
    }
    for (int64_t m = 0; m < g->M; m++) {
        int32_t s = 0;
        for (int64_t i = 0; i < k->CKK; i++) {
            const int8_t v = w[m * k->CKK + i];
            k->w[m * k->KP + i] = v;
            s += v;
        }
        k->wsum[m] = s;
    }
    for (int64_t kk = 0; kk < k->KP; kk++) {
        if (kk >= k->CKK) {
            k->off[kk] = -1;
            continue;
        }
        const int64_t c = kk / k->KHW, kh = kk / g->KW % g->KH, kw = kk % g->KW;
        const int64_t ph = kh * g->dh % g->sh, pw = kw * g->dw % g->sw;
        k->off[kk] = c * k->chan_bytes + (ph * g->sw + pw) * k->Hh * k->Wh +
                     kh * g->dh / g->sh * k->Wh + kw * g->dw / g->sw;
    }
#ifdef Q8_HAVE_X86
    if (!env_off("LOOM_CPU_NO_VNNI") && !env_off("LOOM_CPU_NO_AVX512")) {
        __builtin_cpu_init();
        k->vnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vnni");
        k->vbmi = k->vnni && __builtin_cpu_supports("avx512vbmi");
    }
#else
    (void)env_off;
#endif
    return k;
}

void cpu_qconv8_free(cpu_qconv8 *k)
{
    if (!k)
        return;
    free(k->w);
    free(k->wsum);
    free(k->off);
    free(k);
}

size_t cpu_qconv8_scratch_bytes(const cpu_qconv8 *k)
{
    return k->img_bytes + (size_t)k->slots * k->panel_bytes;
}
