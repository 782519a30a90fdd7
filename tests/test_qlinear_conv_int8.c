/*
 * Tests of the int8 convolution kernel (backends/cpu/kernels_conv_int8.c) behind QLinearConv and
 * ConvInteger with constant weights within int8 of their zero point: every output byte (or
 * int32 sum) against naive integer loops written here over the ONNX definitions (sums of (x -
 * x_zp) (w - w_zp) in int64, the bias, acc * float(x_scale * w_scale / y_scale) in double
 * rounded half to even, plus y_zp, saturated). The shapes are chosen to reach every branch of
 * the kernel: odd sizes, K not a multiple of 4, channels not a multiple of 4, several 64-pixel
 * panels and a ragged last one, strides 1 to 3 (the phase-split image), asymmetric pads,
 * dilations, groups and depthwise, 1x1 convs read in place, 1-D, batches, uint8 and int8
 * activations and outputs, per-tensor and per-channel weight scales and zero points, a Relu-like
 * output zero point at the bottom of the range; on one thread and on two (the work split).
 * And the fuse_qdq pass's Conv with a float output (no QuantizeLinear after it): ConvInteger
 * on this kernel + DequantizeLinear, against the unfused graph and naive loops.
 * meson runs the suite three times: as the CPU is (AVX-512 VNNI here), with LOOM_CPU_NO_VNNI=1
 * and with LOOM_CPU_NO_AVX512=1 (the portable kernel).
 */
#include <loom/loom.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static loom_runtime *rt1, *rt2;

static int suite_init(void)
{
    loom_runtime_options o1 = {.struct_size = sizeof o1, .cpu_threads = 1};
    loom_runtime_options o2 = {.struct_size = sizeof o2, .cpu_threads = 2};
    return loom_runtime_create(&o1, &rt1) == LOOM_OK && loom_runtime_create(&o2, &rt2) == LOOM_OK
               ? 0
               : 1;
}

static int suite_clean(void)
{
    loom_runtime_destroy(rt1);
    loom_runtime_destroy(rt2);
    return 0;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;

static int64_t irand(int64_t lo, int64_t hi) /* [lo, hi] */
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return lo + (int64_t)((rng * 0x2545f4914f6cdd1dull) >> 33) % (hi - lo + 1);
}

typedef struct qcase {
    loom_dtype xdt, wdt, ydt; /* ydt I32: ConvInteger */
    int64_t n, c, h, w, m, kh, kw; /* h = 0: 1-D */
    int64_t group, sh, sw, dh, dw;
    int64_t pt, pl, pb, pr; /* pads: top, left, bottom, right */
    int per_channel, bias;
    int relu_zp;            /* y's zero point at the bottom of its range */
} qcase;

static int64_t lo_of(loom_dtype t) { return t == LOOM_DTYPE_U8 ? 0 : -128; }
static int64_t hi_of(loom_dtype t) { return t == LOOM_DTYPE_U8 ? 255 : 127; }

static void put(loom_dtype t, void *p, int64_t i, int64_t v)
{
    if (t == LOOM_DTYPE_U8)
        ((uint8_t *)p)[i] = (uint8_t)v;
    else if (t == LOOM_DTYPE_I8)
        ((int8_t *)p)[i] = (int8_t)v;
    else
        ((int32_t *)p)[i] = (int32_t)v;
}

static int64_t get(loom_dtype t, const void *p, int64_t i)
{
    return t == LOOM_DTYPE_U8 ? ((const uint8_t *)p)[i]
           : t == LOOM_DTYPE_I8 ? ((const int8_t *)p)[i]
                                : ((const int32_t *)p)[i];
}

static size_t esize(loom_dtype t)
{
    return t == LOOM_DTYPE_I32 ? 4 : 1;
}

/* Build, plan and run case Q on runtime RT; compare with the naive loops. */
static void run_case(const qcase *q, loom_runtime *rt, int line)
{
    const int one_d = q->h == 0, integer = q->ydt == LOOM_DTYPE_I32;
    const int64_t H = one_d ? 1 : q->h, KH = one_d ? 1 : q->kh, Cg = q->c / q->group;
    const int64_t Mg = q->m / q->group, CKK = Cg * KH * q->kw;
    const int64_t pt = one_d ? 0 : q->pt, pb = one_d ? 0 : q->pb;
    const int64_t sh = one_d ? 1 : q->sh, dh = one_d ? 1 : q->dh;
    const int64_t OH = (H + pt + pb - ((KH - 1) * dh + 1)) / sh + 1;
    const int64_t OW = (q->w + q->pl + q->pr - ((q->kw - 1) * q->dw + 1)) / q->sw + 1;
    const int64_t nx = q->n * q->c * H * q->w, nw = q->m * CKK, ny = q->n * q->m * OH * OW;
    const int64_t nm = q->per_channel ? q->m : 1;
    void *x = malloc((size_t)nx), *w = malloc((size_t)nw), *y = calloc((size_t)ny, 4);
    void *zw = malloc((size_t)nm);
    float *sw = malloc((size_t)nm * sizeof *sw);
    int32_t *bias = malloc((size_t)q->m * sizeof *bias);
    for (int64_t i = 0; i < nx; i++)
        put(q->xdt, x, i, irand(lo_of(q->xdt), hi_of(q->xdt)));
    for (int64_t i = 0; i < nm; i++) {
        /* Zero points that keep w - w_zp within int8 for weights in [zw - 127, zw + 127]. */
        put(q->wdt, zw, i, q->wdt == LOOM_DTYPE_U8 ? irand(120, 135) : irand(-3, 3));
        sw[i] = (float)irand(5, 50) * 0.001f;
    }
    for (int64_t i = 0; i < nw; i++) {
        const int64_t z = get(q->wdt, zw, q->per_channel ? i / CKK : 0);
        int64_t v = z + irand(-127, 127);
        v = v < lo_of(q->wdt) ? lo_of(q->wdt) : v > hi_of(q->wdt) ? hi_of(q->wdt) : v;
        put(q->wdt, w, i, v);
    }
    for (int64_t i = 0; i < q->m; i++)
        bias[i] = (int32_t)irand(-30000, 30000);
    const int64_t zx = q->xdt == LOOM_DTYPE_U8 ? irand(0, 255) : irand(-128, 127);
    const int64_t zy = integer ? 0 : q->relu_zp ? lo_of(q->ydt) : q->ydt == LOOM_DTYPE_U8 ? 97 : -7;
    const float sx = 0.021f, sy = integer ? 1.0f : 2.5f;
    const uint8_t zx8 = (uint8_t)zx, zy8 = (uint8_t)zy;

    loom_graph *g = loom_graph_create("qconv8");
    int64_t xd[4], wd[4], one[1] = {1}, md[1] = {nm}, mb[1] = {q->m};
    uint32_t r = one_d ? 3 : 4;
    xd[0] = q->n, xd[1] = q->c, wd[0] = q->m, wd[1] = Cg;
    if (one_d) {
        xd[2] = q->w, wd[2] = q->kw;
    } else {
        xd[2] = H, xd[3] = q->w, wd[2] = KH, wd[3] = q->kw;
    }
    const loom_value xin = loom_input(g, "x", q->xdt, r, xd);
    const loom_value wc = loom_constant(g, "w", q->wdt, r, wd, w);
    const loom_value zwc = loom_constant(g, "w_zp", q->wdt, q->per_channel ? 1 : 0,
                                         q->per_channel ? md : one, zw);
    const loom_value zxc = loom_constant(g, "x_zp", q->xdt, 0, one, &zx8);
    loom_value ins[9];
    uint32_t n_in;
    if (integer) {
        ins[0] = xin, ins[1] = wc, ins[2] = zxc, ins[3] = zwc;
        n_in = 4;
    } else {
        ins[0] = xin;
        ins[1] = loom_constant(g, "sx", LOOM_DTYPE_F32, 0, one, &sx);
        ins[2] = zxc;
        ins[3] = wc;
        ins[4] = loom_constant(g, "sw", LOOM_DTYPE_F32, q->per_channel ? 1 : 0,
                               q->per_channel ? md : one, sw);
        ins[5] = zwc;
        ins[6] = loom_constant(g, "sy", LOOM_DTYPE_F32, 0, one, &sy);
        ins[7] = loom_constant(g, "y_zp", q->ydt, 0, one, &zy8);
        ins[8] = q->bias ? loom_constant(g, "b", LOOM_DTYPE_I32, 1, mb, bias) : LOOM_NO_VALUE;
        n_in = q->bias ? 9 : 8;
    }
    const int64_t st[2] = {sh, q->sw}, dl[2] = {dh, q->dw};
    const int64_t pd2[4] = {pt, q->pl, pb, q->pr}, pd1[2] = {q->pl, q->pr};
    const size_t s = one_d ? 1 : 2;
    loom_attr attrs[4] = {one_d ? loom_attr_ints("strides", 1, st + 1)
                                : loom_attr_ints("strides", 2, st),
                          one_d ? loom_attr_ints("dilations", 1, dl + 1)
                                : loom_attr_ints("dilations", 2, dl),
                          loom_attr_ints("pads", 2 * s, one_d ? pd1 : pd2),
                          loom_attr_int("group", q->group)};
    loom_value out;
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, integer ? "ConvInteger" : "QLinearConv", "conv", ins,
                                        n_in, attrs, 4, &out, 1),
                          LOOM_OK);
    loom_output(g, out, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p = NULL;
    loom_plan_options po = {.struct_size = sizeof po, .strict = 1};
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &po, &p), LOOM_OK);
    loom_tensor *tin, *tout;
    int64_t yd[4] = {q->n, q->m, one_d ? OW : OH, OW};
    loom_tensor_wrap(q->xdt, r, xd, x, &tin);
    loom_tensor_wrap(q->ydt, r, yd, y, &tout);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&tin, 1, &tout, 1, NULL),
                    LOOM_OK);
    int bad = 0;
    for (int64_t n = 0; n < q->n; n++)
        for (int64_t m = 0; m < q->m; m++) {
            const int64_t gi = m / Mg, ch = q->per_channel ? m : 0;
            const int64_t zwm = get(q->wdt, zw, ch);
            const float mult = sx * sw[ch] / sy;
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    int64_t acc = 0;
                    for (int64_t ci = 0; ci < Cg; ci++)
                        for (int64_t kh = 0; kh < KH; kh++)
                            for (int64_t kw = 0; kw < q->kw; kw++) {
                                const int64_t ih = oh * sh - pt + kh * dh;
                                const int64_t iw = ow * q->sw - q->pl + kw * q->dw;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= q->w)
                                    continue;
                                const int64_t xv = get(
                                    q->xdt, x, ((n * q->c + gi * Cg + ci) * H + ih) * q->w + iw);
                                const int64_t wv =
                                    get(q->wdt, w, ((m * Cg + ci) * KH + kh) * q->kw + kw);
                                acc += (xv - zx) * (wv - zwm);
                            }
                    int64_t want;
                    if (integer) {
                        want = acc;
                    } else {
                        if (q->bias)
                            acc += bias[m];
                        double v = nearbyint((double)acc * (double)mult) + (double)zy;
                        v = v < (double)lo_of(q->ydt) ? (double)lo_of(q->ydt)
                            : v > (double)hi_of(q->ydt) ? (double)hi_of(q->ydt) : v;
                        want = (int64_t)v;
                    }
                    const int64_t at = ((n * q->m + m) * OH + oh) * OW + ow;
                    const int64_t got = get(q->ydt, y, at);
                    if (got != want && bad++ < 5)
                        printf("\n  line %d: y[%lld,%lld,%lld,%lld] = %lld, want %lld", line,
                               (long long)n, (long long)m, (long long)oh, (long long)ow,
                               (long long)got, (long long)want);
                }
        }
    CU_ASSERT_EQUAL(bad, 0);
    (void)esize;
    loom_tensor_destroy(tin);
    loom_tensor_destroy(tout);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(x);
    free(w);
    free(y);
    free(zw);
    free(sw);
    free(bias);
}


/* x w y  n c h w m kh kw  group sh sw dh dw  pt pl pb pr  per_channel bias relu_zp */
static const qcase k_cases[] = {
    /* The benchmark CNN's shapes (3x3 pad 1, stride 1 and 2), smaller. */
    {U8, I8, U8, 1, 3, 20, 21, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {U8, I8, U8, 1, 32, 17, 19, 64, 3, 3, 1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    /* 1x1 read in place (stride 1, no pads), channels and pixels not multiples of 4 / 64. */
    {U8, I8, U8, 2, 13, 9, 15, 37, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0},
    {I8, I8, I8, 1, 64, 8, 8, 24, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0},
    /* 1x1 with a stride or a pad: the phase-split image. */
    {U8, U8, U8, 1, 10, 11, 13, 6, 1, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, 0, 0},
    {I8, I8, U8, 1, 5, 7, 6, 9, 1, 1, 1, 1, 1, 1, 1, 1, 2, 0, 1, 1, 1, 0},
    /* Asymmetric pads, odd kernels, dilation, stride 3, rectangular strides. */
    {U8, I8, I8, 2, 7, 23, 17, 11, 5, 3, 1, 1, 2, 2, 1, 2, 0, 1, 3, 1, 1, 0},
    {I8, U8, U8, 1, 6, 31, 29, 5, 3, 3, 1, 3, 3, 2, 2, 2, 2, 0, 1, 0, 1, 0},
    {U8, I8, U8, 1, 4, 19, 40, 70, 2, 4, 1, 2, 1, 1, 3, 0, 3, 1, 0, 1, 0, 0},
    /* Groups, and depthwise (one channel per group). */
    {U8, I8, U8, 1, 12, 10, 14, 18, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0},
    {I8, I8, I8, 2, 16, 12, 12, 16, 3, 3, 16, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0},
    {U8, I8, U8, 1, 8, 9, 70, 16, 5, 5, 8, 1, 1, 2, 2, 4, 4, 4, 4, 0, 1, 1},
    /* 1-D. */
    {U8, I8, U8, 2, 6, 0, 150, 10, 0, 5, 2, 1, 2, 1, 2, 0, 3, 0, 1, 1, 1, 0},
    {I8, U8, I8, 1, 3, 0, 64, 4, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0},
    /* One pixel; a kernel that covers the whole padded input. */
    {U8, I8, U8, 1, 5, 1, 1, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0},
    {U8, I8, U8, 1, 3, 4, 4, 5, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0},
    /* Stride 2 over wide rows (the phase split in several 64-byte steps), odd and even pads. */
    {U8, I8, U8, 1, 5, 9, 150, 7, 3, 3, 1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0},
    {I8, I8, I8, 1, 3, 8, 131, 6, 1, 3, 1, 1, 2, 1, 1, 0, 0, 0, 2, 0, 1, 0},
    {U8, U8, U8, 1, 2, 5, 200, 3, 2, 2, 1, 2, 2, 1, 2, 0, 3, 1, 0, 1, 1, 0},
    /* Many input channels (long k), int8 in, uint8 out at the bottom of the range. */
    {I8, I8, U8, 1, 130, 6, 7, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
};

static void run_all(loom_dtype ydt_override, loom_runtime *rt)
{
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
        qcase q = k_cases[i];
        if (ydt_override)
            q.ydt = ydt_override;
        run_case(&q, rt, (int)i);
    }
}

static void test_qlinear_conv_matches_naive_integer_loops(void)
{
    run_all(0, rt1);
}

static void test_qlinear_conv_on_two_threads_matches(void)
{
    run_all(0, rt2);
}

static void test_conv_integer_sums_match_naive_loops(void)
{
    run_all(I32, rt1);
    qcase q = k_cases[1];
    q.ydt = I32;
    run_case(&q, rt2, __LINE__);
}

/* Every output dtype combination on one shape with each path through the kernel. */
static void test_every_dtype_combination(void)
{
    const loom_dtype dts[] = {U8, I8};
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 2; c++)
                for (int pc = 0; pc < 2; pc++) {
                    qcase q = {dts[a], dts[b], dts[c], 1, 7, 9, 11, 6, 3, 3, 1, 2, 1, 1, 1,
                               1, 1, 1, 1, pc, pc, 0};
                    run_case(&q, rt1, __LINE__);
                    qcase p = {dts[a], dts[b], dts[c], 1, 9, 5, 14, 5, 1, 1, 1, 1, 1, 1, 1,
                               0, 0, 0, 0, pc, 1 - pc, 0};
                    run_case(&p, rt1, __LINE__);
                }
}

/* ---- the fuse_qdq pass: a QDQ Conv whose output stays float ---------------------------------
 * x (float) -> QuantizeLinear -> DequantizeLinear -> Conv (weights DequantizeLinear of int8
 * constants per output channel, the bias DequantizeLinear of int32 at s_x * s_w or a float
 * constant) [-> Relu] -> graph output, no QuantizeLinear after it. The pass makes it
 * ConvInteger + DequantizeLinear (the int8 kernel, a float output); the result must match the
 * same graph run unfused (LOOM_FUSE_QDQ=0: float Conv over the dequantised values) to float
 * rounding, and naive double loops over the dequantised values. */
typedef struct qdq_float_case {
    int x_int8, relu, float_bias, per_tensor, one_d, wide_weights;
    int64_t n, c, h, w, m, k, stride, group;
} qdq_float_case;

static float quantize_ref(float v, float s, int zp, int x_int8)
{
    float q = nearbyintf(v / s) + (float)zp;
    const float lo = x_int8 ? -128.0f : 0.0f, hi = x_int8 ? 127.0f : 255.0f;
    return q < lo ? lo : q > hi ? hi : q;
}

/* Plans and runs G on X into Y (YN floats); returns whether any node is op OP. */
static int plan_run(loom_graph *g, const int64_t *xd, uint32_t r, float *x, const int64_t *yd,
                    float *y, const char *op)
{
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt1, g, NULL, &p), LOOM_OK);
    int has = 0;
    for (size_t i = 0; i < loom_plan_node_count(p); i++)
        has |= strcmp(loom_plan_node_op(p, i), op) == 0;
    loom_tensor *tin, *tout;
    loom_tensor_wrap(LOOM_DTYPE_F32, r, xd, x, &tin);
    loom_tensor_wrap(LOOM_DTYPE_F32, r, yd, y, &tout);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&tin, 1, &tout, 1, NULL),
                    LOOM_OK);
    loom_tensor_destroy(tin);
    loom_tensor_destroy(tout);
    loom_plan_destroy(p);
    return has;
}

static void check_qdq_float_conv(const qdq_float_case *q)
{
    const int64_t H = q->one_d ? 1 : q->h, KH = q->one_d ? 1 : q->k, Cg = q->c / q->group;
    const int64_t sh = q->one_d ? 1 : q->stride, ph = q->one_d ? 0 : 1;
    const int64_t OH = (H + 2 * ph - KH) / sh + 1, OW = (q->w + 2 - q->k) / q->stride + 1;
    const int64_t nx = q->n * q->c * H * q->w, nwt = q->m * Cg * KH * q->k;
    const int64_t ny = q->n * q->m * OH * OW, ns = q->per_tensor ? 1 : q->m;
    const int zx = q->x_int8 ? -3 : 120;
    const float sx = 0.013f;
    float *x = malloc((size_t)nx * sizeof *x), *y = malloc((size_t)ny * sizeof *y);
    float *yu = malloc((size_t)ny * sizeof *yu), *sw = malloc((size_t)q->m * sizeof *sw);
    float *bf = malloc((size_t)q->m * sizeof *bf), *bs = malloc((size_t)q->m * sizeof *bs);
    int32_t *bq = malloc((size_t)q->m * sizeof *bq);
    void *wq = malloc((size_t)nwt);
    for (int64_t i = 0; i < nx; i++)
        x[i] = (float)irand(-1000, 1000) * 0.0015f;
    for (int64_t i = 0; i < q->m; i++) {
        sw[i] = (float)irand(2, 9) * 0.001f;
        bq[i] = (int32_t)irand(-5000, 5000);
        bf[i] = (float)irand(-100, 100) * 0.001f;
    }
    for (int64_t i = 0; i < q->m; i++)
        bs[i] = sx * sw[q->per_tensor ? 0 : i];
    for (int64_t i = 0; i < nwt; i++) {
        if (q->wide_weights)
            ((uint8_t *)wq)[i] = (uint8_t)irand(0, 255); /* zero point 0: W' up to 255 */
        else
            ((int8_t *)wq)[i] = (int8_t)irand(-127, 127);
    }
    const loom_dtype xt = q->x_int8 ? LOOM_DTYPE_I8 : LOOM_DTYPE_U8;
    const loom_dtype wt = q->wide_weights ? LOOM_DTYPE_U8 : LOOM_DTYPE_I8;
    const uint32_t r = q->one_d ? 3 : 4;
    int64_t xd[4] = {q->n, q->c, q->one_d ? q->w : H, q->w};
    int64_t wd[4] = {q->m, Cg, q->one_d ? q->k : KH, q->k};
    int64_t yd[4] = {q->n, q->m, q->one_d ? OW : OH, OW};
    for (int fused = 1; fused >= 0; fused--) {
        loom_graph *g = loom_graph_create("qdq_float_conv");
        const int64_t one[1] = {1}, md[1] = {q->m}, msd[1] = {ns};
        const uint8_t zx8 = (uint8_t)zx;
        const loom_value xin = loom_input(g, "x", LOOM_DTYPE_F32, r, xd);
        loom_value qi[3] = {xin, loom_constant(g, "sx", LOOM_DTYPE_F32, 0, one, &sx),
                            loom_constant(g, "zx", xt, 0, one, &zx8)};
        loom_value xq, xdq, wdq, bdq, cv, yv;
        CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "QuantizeLinear", "q", qi, 3, NULL, 0, &xq, 1),
                              LOOM_OK);
        qi[0] = xq;
        loom_graph_op(g, "DequantizeLinear", "dq", qi, 3, NULL, 0, &xdq, 1);
        const loom_attr ax0 = loom_attr_int("axis", 0);
        loom_value wi[2] = {loom_constant(g, "wq", wt, r, wd, wq),
                            loom_constant(g, "sw", LOOM_DTYPE_F32, q->per_tensor ? 0 : 1,
                                          q->per_tensor ? one : msd, sw)};
        loom_graph_op(g, "DequantizeLinear", "wdq", wi, 2, &ax0, 1, &wdq, 1);
        if (q->float_bias) {
            bdq = loom_constant(g, "b", LOOM_DTYPE_F32, 1, md, bf);
        } else {
            loom_value bi[2] = {loom_constant(g, "bq", LOOM_DTYPE_I32, 1, md, bq),
                                loom_constant(g, "bs", LOOM_DTYPE_F32, 1, md, bs)};
            loom_graph_op(g, "DequantizeLinear", "bdq", bi, 2, &ax0, 1, &bdq, 1);
        }
        const int64_t st[2] = {sh, q->stride}, pads[4] = {ph, 1, ph, 1}, pads1[2] = {1, 1};
        loom_attr at[3] = {q->one_d ? loom_attr_ints("strides", 1, st + 1)
                                    : loom_attr_ints("strides", 2, st),
                           q->one_d ? loom_attr_ints("pads", 2, pads1)
                                    : loom_attr_ints("pads", 4, pads),
                           loom_attr_int("group", q->group)};
        loom_value ci[3] = {xdq, wdq, bdq};
        CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "Conv", "conv", ci, 3, at, 3, &cv, 1), LOOM_OK);
        if (q->relu)
            loom_graph_op(g, "Relu", "relu", &cv, 1, NULL, 0, &yv, 1);
        else
            yv = cv;
        loom_output(g, yv, "y");
        CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
        if (!fused)
            setenv("LOOM_FUSE_QDQ", "0", 1);
        const int has = plan_run(g, xd, r, x, yd, fused ? y : yu, "ConvInteger");
        unsetenv("LOOM_FUSE_QDQ");
        /* Fused exactly when the weights fit int8; never when the pass is off. */
        CU_ASSERT_EQUAL(has, fused && !q->wide_weights);
        loom_graph_destroy(g);
    }
    /* Naive double loops over the dequantised values. */
    double worst_ref = 0, worst_unf = 0, top = 0;
    const int64_t Mg = q->m / q->group;
    for (int64_t n = 0; n < q->n; n++)
        for (int64_t m = 0; m < q->m; m++) {
            const double swm = sw[q->per_tensor ? 0 : m];
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double acc = q->float_bias ? bf[m] : (double)((float)bq[m] * bs[m]);
                    for (int64_t ci = 0; ci < Cg; ci++)
                        for (int64_t kh = 0; kh < KH; kh++)
                            for (int64_t kw = 0; kw < q->k; kw++) {
                                const int64_t ih = oh * sh - ph + kh, iw = ow * q->stride - 1 + kw;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= q->w)
                                    continue;
                                const int64_t c = m / Mg * Cg + ci;
                                const float xv = x[((n * q->c + c) * H + ih) * q->w + iw];
                                const double xdv = (quantize_ref(xv, sx, zx, q->x_int8) - zx) * sx;
                                const int64_t wi = ((m * Cg + ci) * KH + kh) * q->k + kw;
                                const double wv = q->wide_weights ? ((uint8_t *)wq)[wi]
                                                                  : ((int8_t *)wq)[wi];
                                acc += xdv * wv * swm;
                            }
                    if (q->relu && acc < 0)
                        acc = 0;
                    const int64_t at = ((n * q->m + m) * OH + oh) * OW + ow;
                    worst_ref = fmax(worst_ref, fabs(y[at] - acc));
                    worst_unf = fmax(worst_unf, fabs(y[at] - yu[at]));
                    top = fmax(top, fabs(acc));
                }
        }
    /* A float bias is rounded to the sums' grid (half a step, s_x * s_w / 2) when fused. */
    const double tol = 1e-5 * (1.0 + top) + (q->float_bias ? 0.5 * sx * 0.009 : 0.0);
    if (worst_ref > tol || worst_unf > tol)
        printf("\n  float-output QDQ conv: max |fused - naive| %.3g, |fused - unfused| %.3g, "
               "tolerance %.3g", worst_ref, worst_unf, tol);
    CU_ASSERT(worst_ref <= tol);
    CU_ASSERT(worst_unf <= tol);
    free(x);
    free(y);
    free(yu);
    free(sw);
    free(bf);
    free(bs);
    free(bq);
    free(wq);
}

static void test_qdq_conv_with_float_output_runs_on_the_int8_kernel(void)
{
    /* x_int8 relu float_bias per_tensor one_d wide   n  c  h  w  m  k stride group */
    const qdq_float_case cases[] = {
        {0, 1, 0, 0, 0, 0, 1, 3, 11, 13, 8, 3, 1, 1},
        {1, 0, 0, 0, 0, 0, 2, 6, 9, 10, 6, 3, 2, 2},
        {0, 0, 1, 1, 0, 0, 1, 5, 7, 7, 7, 1, 1, 1},
        {1, 1, 0, 0, 1, 0, 2, 4, 0, 40, 5, 5, 2, 1},
        {0, 1, 0, 0, 0, 1, 1, 3, 8, 8, 4, 3, 1, 1}, /* W' beyond int8: left as a float Conv */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_qdq_float_conv(&cases[i]);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        TEST_ENTRY(test_qlinear_conv_matches_naive_integer_loops),
        TEST_ENTRY(test_qlinear_conv_on_two_threads_matches),
        TEST_ENTRY(test_conv_integer_sums_match_naive_loops),
        TEST_ENTRY(test_every_dtype_combination),
        TEST_ENTRY(test_qdq_conv_with_float_output_runs_on_the_int8_kernel),
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"qlinear_conv_int8", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
