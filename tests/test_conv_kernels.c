/*
 * The CPU backend's convolution kernels (issue 16) against naive loops, one Conv or FusedConv
 * node at a time on cpu:0, over the shapes that pick each kernel: depthwise (group == channels,
 * channel multipliers 1 and 2, 3x3 and 5x5 and 7x1 taps, strides 1 to 3, dilations, asymmetric
 * padding, rows shorter and longer than the vector width, 1-D), pointwise 1x1 as a GEMM (with a
 * batch, and 1x1 with a stride or padding, which must not take that path), grouped convs with
 * tiny and large groups, and im2col + GEMM for the rest (odd sizes, stride 2, dilation 2). Every
 * case runs as Conv and as FusedConv with a residual and each activation of the epilogue.
 * 3-D convs (im2col + GEMM over depth, height and width) have their own cases and loops.
 */
#include <loom/loom.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static loom_runtime *rt;

static int suite_init(void)
{
    return loom_runtime_create(NULL, &rt) == LOOM_OK ? 0 : 1;
}

static int suite_clean(void)
{
    loom_runtime_destroy(rt);
    return 0;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;

static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / (float)0x800000 - 1.0f; /* [-1, 1) */
}

typedef struct conv_case {
    int64_t n, c, h, w, m, kh, kw, sh, sw, dh, dw, group;
    int64_t pt, pl, pb, pr;
    int bias;
    int one_d; /* a 1-D conv: h and kh are 1, no vertical stride/dilation/padding */
} conv_case;

/* Not inlined: GCC at -O3 otherwise warns that comparing a known "Relu" with "LeakyRelu" is
 * always nonzero (-Wstring-compare). */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static double act_ref(const char *act, double x, double alpha, double beta)
{
    if (!act || !*act)
        return x;
    if (!strcmp(act, "Relu"))
        return x < 0 ? 0 : x;
    if (!strcmp(act, "LeakyRelu"))
        return x < 0 ? alpha * x : x;
    if (!strcmp(act, "Clip"))
        return x < alpha ? alpha : x > beta ? beta : x;
    if (!strcmp(act, "HardSigmoid"))
        return fmax(0, fmin(1, alpha * x + beta));
    if (!strcmp(act, "HardSwish"))
        return x * fmax(0, fmin(1, x / 6 + 0.5));
    if (!strcmp(act, "Sigmoid"))
        return 1 / (1 + exp(-x));
    if (!strcmp(act, "SiLU"))
        return x / (1 + exp(-x));
    if (!strcmp(act, "Gelu"))
        return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    if (!strcmp(act, "GeluTanh"))
        return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    return NAN;
}

/* One conv as a graph (FusedConv when ACT is not NULL, with a residual when RESIDUAL, max-pooled
 * when POOL, {kh, kw, sh, sw}, is not NULL), run on cpu:0 and compared with naive loops in
 * double. */
static void check_pool(const conv_case *cc, const char *act, int residual, const int64_t *pool)
{
    const int64_t oh = (cc->h + cc->pt + cc->pb - cc->dh * (cc->kh - 1) - 1) / cc->sh + 1;
    const int64_t ow = (cc->w + cc->pl + cc->pr - cc->dw * (cc->kw - 1) - 1) / cc->sw + 1;
    const int64_t cg = cc->c / cc->group, mg = cc->m / cc->group;
    const size_t nx = (size_t)(cc->n * cc->c * cc->h * cc->w), nw = (size_t)(cc->m * cg * cc->kh * cc->kw);
    const size_t ny = (size_t)(cc->n * cc->m * oh * ow);
    const int64_t ph = pool ? (oh - pool[0]) / pool[2] + 1 : oh;
    const int64_t pw = pool ? (ow - pool[1]) / pool[3] + 1 : ow;
    const size_t npy = (size_t)(cc->n * cc->m * ph * pw);
    float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w), *b = malloc((size_t)cc->m * 4);
    float *z = malloc(ny * sizeof *z), *y = malloc(npy * sizeof *y);
    double *ref = malloc(ny * sizeof *ref), *refmag = malloc(ny * sizeof *refmag);
    for (size_t i = 0; i < nx; i++)
        x[i] = frand();
    for (size_t i = 0; i < nw; i++)
        w[i] = frand();
    for (int64_t i = 0; i < cc->m; i++)
        b[i] = frand();
    for (size_t i = 0; i < ny; i++)
        z[i] = frand();
    const float alpha = act && !strcmp(act, "Clip") ? -0.5f : act && !strcmp(act, "HardSigmoid") ? 0.2f : 0.1f;
    const float beta = act && !strcmp(act, "Clip") ? 2.0f : 0.5f;

    loom_graph *g = loom_graph_create("conv");
    const uint32_t rank = cc->one_d ? 3 : 4;
    int64_t xd[4], wd[4], bd[1] = {cc->m};
    if (cc->one_d) {
        int64_t a[3] = {cc->n, cc->c, cc->w}, bw[3] = {cc->m, cg, cc->kw};
        memcpy(xd, a, sizeof a);
        memcpy(wd, bw, sizeof bw);
    } else {
        int64_t a[4] = {cc->n, cc->c, cc->h, cc->w}, bw[4] = {cc->m, cg, cc->kh, cc->kw};
        memcpy(xd, a, sizeof a);
        memcpy(wd, bw, sizeof bw);
    }
    int64_t yd[4] = {cc->n, cc->m, cc->one_d ? ow : oh, ow}, pyd[4] = {cc->n, cc->m, ph, pw};
    loom_value ins[4] = {loom_input(g, "x", LOOM_DTYPE_F32, rank, xd),
                         loom_constant(g, "w", LOOM_DTYPE_F32, rank, wd, w),
                         cc->bias ? loom_constant(g, "b", LOOM_DTYPE_F32, 1, bd, b) : LOOM_NO_VALUE,
                         residual ? loom_input(g, "z", LOOM_DTYPE_F32, rank, yd) : LOOM_NO_VALUE};
    int64_t strides[2] = {cc->sh, cc->sw}, dil[2] = {cc->dh, cc->dw};
    int64_t pads[4] = {cc->pt, cc->pl, cc->pb, cc->pr};
    int64_t s1[1] = {cc->sw}, d1[1] = {cc->dw}, p1[2] = {cc->pl, cc->pr};
    loom_attr attrs[10];
    size_t na = 0;
    attrs[na++] = cc->one_d ? loom_attr_ints("strides", 1, s1) : loom_attr_ints("strides", 2, strides);
    attrs[na++] = cc->one_d ? loom_attr_ints("dilations", 1, d1) : loom_attr_ints("dilations", 2, dil);
    attrs[na++] = cc->one_d ? loom_attr_ints("pads", 2, p1) : loom_attr_ints("pads", 4, pads);
    attrs[na++] = loom_attr_int("group", cc->group);
    if (act) {
        attrs[na++] = loom_attr_string("activation", act);
        attrs[na++] = loom_attr_float("activation_alpha", alpha);
        attrs[na++] = loom_attr_float("activation_beta", beta);
    }
    if (pool) {
        attrs[na++] = loom_attr_string("pool", "MaxPool");
        attrs[na++] = loom_attr_ints("pool_kernel", 2, pool);
        attrs[na++] = loom_attr_ints("pool_strides", 2, pool + 2);
    }
    loom_value out;
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, act ? "FusedConv" : "Conv", "conv", ins,
                                        residual ? 4 : cc->bias ? 3 : 2, attrs, na, &out, 1),
                          LOOM_OK);
    loom_output(g, out, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .device = "cpu:0", .strict = 1};
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    loom_tensor *tin[2], *tout;
    loom_tensor_wrap(LOOM_DTYPE_F32, rank, xd, x, &tin[0]);
    if (residual)
        loom_tensor_wrap(LOOM_DTYPE_F32, rank, yd, z, &tin[1]);
    loom_tensor_wrap(LOOM_DTYPE_F32, rank, pool ? pyd : yd, y, &tout);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)tin, residual ? 2 : 1, &tout, 1,
                                  NULL), LOOM_OK);
    int bad = 0;
    for (int64_t n = 0; n < cc->n; n++)
        for (int64_t oc = 0; oc < cc->m; oc++) {
            const int64_t grp = oc / mg;
            for (int64_t i = 0; i < oh; i++)
                for (int64_t j = 0; j < ow; j++) {
                    double acc = cc->bias ? b[oc] : 0.0, mag = fabs(acc);
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t ki = 0; ki < cc->kh; ki++)
                            for (int64_t kj = 0; kj < cc->kw; kj++) {
                                int64_t ih = i * cc->sh - cc->pt + ki * cc->dh;
                                int64_t iw = j * cc->sw - cc->pl + kj * cc->dw;
                                if (ih < 0 || ih >= cc->h || iw < 0 || iw >= cc->w)
                                    continue;
                                double t = (double)x[((n * cc->c + grp * cg + c) * cc->h + ih) * cc->w + iw] *
                                           w[((oc * cg + c) * cc->kh + ki) * cc->kw + kj];
                                acc += t;
                                mag += fabs(t);
                            }
                    size_t at = (size_t)(((n * cc->m + oc) * oh + i) * ow + j);
                    if (residual)
                        acc += z[at];
                    ref[at] = act_ref(act, acc, alpha, beta);
                    refmag[at] = mag;
                }
        }
    /* The pooled reference: the window's largest conv output, with the tolerance of the
     * largest magnitude in the window. */
    for (int64_t q = 0; q < cc->n * cc->m; q++)
        for (int64_t i = 0; i < ph; i++)
            for (int64_t j = 0; j < pw; j++) {
                double want = -INFINITY, mag = 0.0;
                for (int64_t a = 0; a < (pool ? pool[0] : 1); a++)
                    for (int64_t e = 0; e < (pool ? pool[1] : 1); e++) {
                        const int64_t r = (pool ? i * pool[2] : i) + a;
                        const int64_t col = (pool ? j * pool[3] : j) + e;
                        const size_t at = (size_t)((q * oh + r) * ow + col);
                        want = ref[at] > want ? ref[at] : want;
                        mag = refmag[at] > mag ? refmag[at] : mag;
                    }
                const size_t at = (size_t)((q * ph + i) * pw + j);
                if (!(fabs(y[at] - want) <= 1e-5 * (1.0 + mag) + 1e-6 * fabs(want))) {
                    if (bad < 4)
                        printf("\n  %s%s%s n%lld c%lld %lldx%lld k%lldx%lld s%lld,%lld d%lld,%lld "
                               "g%lld: y[%lld,%lld,%lld,%lld] = %.7g, want %.7g",
                               act ? act : "Conv", residual ? "+Z" : "", pool ? "+MaxPool" : "",
                               (long long)cc->n, (long long)cc->c, (long long)cc->h,
                               (long long)cc->w, (long long)cc->kh, (long long)cc->kw,
                               (long long)cc->sh, (long long)cc->sw, (long long)cc->dh,
                               (long long)cc->dw, (long long)cc->group, (long long)(q / cc->m),
                               (long long)(q % cc->m), (long long)i, (long long)j, y[at], want);
                    bad++;
                }
            }
    CU_ASSERT_EQUAL(bad, 0);
    loom_tensor_destroy(tin[0]);
    if (residual)
        loom_tensor_destroy(tin[1]);
    loom_tensor_destroy(tout);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(x);
    free(w);
    free(b);
    free(z);
    free(y);
    free(ref);
    free(refmag);
}

static void check(const conv_case *cc, const char *act, int residual)
{
    check_pool(cc, act, residual, NULL);
}

static const char *const k_acts[] = {"Relu", "LeakyRelu", "Clip", "HardSigmoid", "HardSwish",
                                     "Sigmoid", "SiLU", "Gelu", "GeluTanh"};

/* Conv, then FusedConv with no activation and a residual, then each activation (with and
 * without a residual, alternately). */
static void check_all(const conv_case *cc)
{
    check(cc, NULL, 0);
    check(cc, "", 1);
    for (size_t a = 0; a < sizeof k_acts / sizeof k_acts[0]; a++)
        check(cc, k_acts[a], (int)(a & 1));
}

#define CASE(...) case_of((int64_t[]){__VA_ARGS__, -1})

/* n c h w m kh kw sh sw dh dw group pt pl pb pr bias [one_d], terminated by -1. */
static conv_case case_of(const int64_t *v)
{
    conv_case c = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11],
                   v[12], v[13], v[14], v[15], (int)v[16], v[17] == 1};
    return c;
}

static void test_depthwise_matches_naive(void)
{
    conv_case cs[] = {
        /* n c h w m kh kw sh sw dh dw group pt pl pb pr bias */
        CASE(1, 8, 13, 17, 8, 3, 3, 1, 1, 1, 1, 8, 1, 1, 1, 1, 1),      /* 3x3, same padding */
        CASE(2, 6, 11, 40, 6, 3, 3, 2, 2, 1, 1, 6, 1, 1, 1, 1, 1),      /* stride 2, long rows */
        CASE(1, 5, 9, 9, 5, 5, 5, 1, 1, 1, 1, 5, 2, 2, 2, 2, 0),        /* 5x5, no bias */
        CASE(1, 7, 15, 37, 7, 5, 5, 2, 2, 1, 1, 7, 2, 2, 2, 2, 1),      /* 5x5 stride 2 */
        CASE(1, 4, 12, 35, 4, 3, 3, 1, 1, 2, 2, 4, 2, 2, 2, 2, 1),      /* dilation 2 */
        CASE(1, 3, 10, 19, 6, 3, 3, 1, 1, 1, 1, 3, 0, 1, 2, 0, 1),      /* multiplier 2, asym pads */
        CASE(1, 4, 8, 70, 4, 7, 1, 3, 3, 1, 1, 4, 3, 0, 3, 0, 1),       /* 7x1, stride 3 */
        CASE(1, 3, 2, 3, 3, 3, 3, 1, 1, 1, 1, 3, 1, 1, 1, 1, 1),        /* input smaller than kernel */
        CASE(1, 4, 1, 33, 4, 1, 5, 1, 2, 1, 1, 4, 0, 2, 0, 1, 1, 1),    /* 1-D */
        CASE(1, 2, 70, 75, 2, 3, 3, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1),      /* big plane: by rows */
        CASE(1, 3, 67, 90, 3, 5, 5, 2, 2, 1, 1, 3, 2, 2, 2, 2, 1),      /* big, 5x5 stride 2 */
        /* channel blocks of 8 (kernels_conv_depthwise_blocked.c): a partial last block, planes
         * of 7 and 14 columns, 7x7 taps (more than the row kernel takes), bands of rows on a
         * wide plane, few items split into bands, the batch, 1-D */
        CASE(2, 13, 7, 7, 13, 5, 5, 1, 1, 1, 1, 13, 2, 2, 2, 2, 1),     /* 13 channels, 7x7 */
        CASE(1, 24, 14, 14, 24, 3, 3, 2, 2, 1, 1, 24, 1, 1, 1, 1, 1),   /* stride 2, 14 -> 7 */
        CASE(1, 16, 11, 12, 16, 7, 7, 1, 1, 1, 1, 16, 3, 3, 3, 3, 1),   /* 7x7 taps */
        CASE(1, 9, 9, 10, 9, 7, 7, 2, 1, 1, 2, 9, 3, 6, 2, 5, 0),       /* 7x7 dilated, asym */
        CASE(1, 8, 40, 300, 8, 3, 3, 1, 1, 1, 1, 8, 1, 1, 1, 1, 1),     /* wide: many bands */
        CASE(1, 8, 33, 161, 8, 5, 5, 2, 2, 1, 1, 8, 2, 2, 2, 2, 1),     /* wide, stride 2 */
        CASE(3, 17, 5, 6, 17, 3, 3, 1, 1, 1, 1, 17, 0, 0, 0, 0, 1),     /* no padding */
        CASE(1, 10, 1, 41, 10, 1, 7, 1, 3, 1, 1, 10, 0, 3, 0, 2, 1, 1), /* 1-D, stride 3 */
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        check_all(&cs[i]);
}

static void test_pointwise_matches_naive(void)
{
    conv_case cs[] = {
        CASE(1, 24, 7, 9, 40, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),      /* GEMM on the input */
        CASE(3, 17, 5, 5, 33, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),      /* batch, odd sizes */
        CASE(1, 64, 14, 14, 96, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),    /* split over the pool */
        /* register-tiled pointwise (kernels_conv_pointwise.c, 24 to 320 input channels): pixel
         * tails, output channels not a multiple of 6 (and 1), several 48-row chunks, a batch */
        CASE(2, 24, 7, 7, 13, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),      /* 49 pixels, M 13 */
        CASE(1, 40, 3, 7, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),       /* 21 pixels, M 1 */
        CASE(3, 30, 4, 5, 100, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),     /* M 100, batch 3 */
        CASE(1, 320, 4, 4, 50, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),     /* K 320, 16 pixels */
        /* 1x1 planes over a batch (squeeze-excitation): one GEMM X W^T for the batch */
        CASE(8, 144, 1, 1, 576, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),    /* 8 x 144 -> 576 */
        CASE(3, 30, 1, 1, 7, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),       /* few outputs */
        CASE(50, 33, 1, 1, 20, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),     /* batch 50 */
        CASE(1, 8, 9, 9, 12, 1, 1, 2, 2, 1, 1, 1, 0, 0, 0, 0, 1),       /* 1x1 stride 2: im2col */
        CASE(1, 8, 6, 6, 12, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),       /* 1x1 padded: im2col */
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        check_all(&cs[i]);
}

static void test_grouped_and_im2col_match_naive(void)
{
    conv_case cs[] = {
        CASE(1, 3, 33, 31, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1),     /* stem: 3x3/2 */
        CASE(2, 5, 13, 11, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),      /* odd everything */
        CASE(1, 6, 16, 17, 9, 3, 5, 2, 1, 2, 1, 1, 2, 3, 1, 0, 0),      /* dilation, asym */
        CASE(1, 8, 10, 10, 8, 3, 3, 1, 1, 1, 1, 4, 1, 1, 1, 1, 1),      /* tiny groups: direct */
        CASE(2, 32, 9, 9, 64, 3, 3, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1),      /* large groups: GEMM */
        CASE(1, 16, 40, 40, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),    /* by columns */
        CASE(1, 64, 6, 6, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),     /* by output channels */
        /* direct with output channels in the lanes (kernels_conv_direct_blocked.c; "odd
         * everything" and "by columns" above take it too): 16 and a partial pair of output
         * channels, strides, dilations, asymmetric, wide and no padding, rows that 6 does not
         * divide, 1-D */
        CASE(2, 3, 20, 37, 20, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1),     /* M 20, stride 2 */
        CASE(1, 7, 9, 40, 13, 5, 3, 1, 2, 2, 1, 1, 2, 1, 3, 0, 0),      /* dilated rows, asym */
        CASE(1, 5, 6, 50, 32, 3, 5, 1, 1, 1, 2, 1, 1, 4, 1, 4, 1),      /* dilated columns */
        CASE(1, 2, 5, 30, 8, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),       /* no padding, M 8 */
        CASE(1, 4, 1, 64, 24, 1, 7, 1, 1, 1, 1, 1, 0, 3, 0, 3, 1, 1),   /* 1-D */
        CASE(1, 48, 12, 23, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),    /* FPN-like, M 16 */
        CASE(1, 9, 10, 9, 100, 3, 3, 1, 1, 1, 1, 1, 2, 2, 2, 2, 1),     /* M 100, wide pads */
        CASE(1, 3, 12, 20, 16, 7, 7, 1, 1, 1, 1, 1, 3, 3, 3, 3, 1),     /* 7x7 taps */
        /* its padded mode (rows under 16 pixels): strips across rows, planes under one strip,
         * several bands, an input smaller than the kernel, 1-D */
        CASE(2, 32, 8, 8, 40, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1),      /* 8x8 -> 4x4 */
        CASE(1, 64, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),    /* 2 bands */
        CASE(1, 4, 2, 3, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),        /* 2x3 plane */
        CASE(1, 5, 1, 9, 18, 1, 3, 1, 2, 1, 1, 1, 0, 1, 0, 1, 1, 1),    /* 1-D, 5 pixels */
        CASE(1, 6, 9, 7, 12, 3, 3, 1, 1, 2, 2, 1, 2, 2, 2, 2, 0),       /* dilated, 7 wide */
        /* its row mode (a padded row of every input channel does not fit its buffer) */
        CASE(1, 48, 5, 100, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),
        /* few input channels (kernels_conv_stem.c; the stems above take it too): strips of
         * 32, 24, 16 and 8 pixels with an overlapping last one, a partial group of output
         * channels, stride 2 with odd and even kernel widths, vertical stride and dilation,
         * asymmetric padding, 1-D */
        CASE(2, 3, 17, 70, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),     /* 70 = 32+32+overlap */
        CASE(1, 1, 9, 26, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),       /* 26: 24 + overlap */
        CASE(1, 4, 21, 41, 7, 5, 4, 2, 2, 1, 1, 1, 2, 1, 1, 2, 1),      /* kw 4 at stride 2 */
        CASE(2, 2, 15, 36, 8, 7, 7, 2, 2, 2, 1, 1, 3, 3, 3, 3, 0),      /* 7x7/2, dh 2 */
        CASE(1, 3, 6, 17, 11, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),      /* 15 wide: 8 + 8 */
        CASE(1, 3, 1, 90, 6, 1, 5, 1, 2, 1, 1, 1, 0, 2, 0, 2, 1, 1),    /* 1-D, stride 2 */
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        check_all(&cs[i]);
}

/* FusedConv with a max pooling (graph/ops_fused.c): the stem and padded direct kernels pool
 * each band they compute (windows = strides, no residual), every other case computes the conv
 * into scratch and pools it after; odd planes whose last row or column no window reads. */
static void test_pooled_match_naive(void)
{
    static const int64_t p22[4] = {2, 2, 2, 2}, p33[4] = {3, 3, 3, 3}, p32[4] = {3, 3, 2, 2},
                         p21[4] = {2, 3, 1, 2};
    conv_case cs[] = {
        CASE(8, 3, 32, 32, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),     /* the CNN's stem */
        CASE(8, 16, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),    /* its 16 -> 32 conv */
        CASE(2, 3, 17, 70, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),      /* stem, 17 rows, M 7 */
        CASE(1, 5, 15, 23, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0),     /* direct, odd plane */
        CASE(2, 32, 8, 8, 40, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1),      /* 4x4: strips of 8 */
        CASE(1, 48, 5, 100, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),    /* direct row mode */
        CASE(1, 8, 10, 10, 8, 3, 3, 1, 1, 1, 1, 4, 1, 1, 1, 1, 1),      /* grouped: direct loops */
        CASE(1, 16, 40, 40, 200, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),   /* im2col + GEMM */
        CASE(1, 24, 7, 9, 40, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),      /* pointwise */
        CASE(1, 8, 13, 17, 8, 3, 3, 1, 1, 1, 1, 8, 1, 1, 1, 1, 1),      /* depthwise */
    };
    const int64_t *const pools[] = {p22, p33, p32, p21};
    const char *const acts[] = {NULL, "Relu", "HardSwish", "Gelu", ""};
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        for (size_t k = 0; k < sizeof pools / sizeof pools[0]; k++) {
            const char *act = acts[(i + k) % (sizeof acts / sizeof acts[0])];
            check_pool(&cs[i], act ? act : "", 0, pools[k]);
            if (act && !*act) /* a residual, which only the scratch path takes */
                check_pool(&cs[i], "Relu", 1, pools[k]);
        }
}

/* ---- 3-D ----------------------------------------------------------------------------------- */

typedef struct conv3_case {
    int64_t n, c, m, group, in[3], k[3], st[3], dil[3], pads[6];
    int bias;
} conv3_case;

/* One 3-D conv (FusedConv with a residual and ACT when ACT is not NULL) on cpu:0 against naive
 * loops in double. */
static void check3(const conv3_case *cc, const char *act)
{
    int64_t out[3];
    for (int d = 0; d < 3; d++)
        out[d] = (cc->in[d] + cc->pads[d] + cc->pads[3 + d] - cc->dil[d] * (cc->k[d] - 1) - 1) /
                     cc->st[d] + 1;
    const int64_t cg = cc->c / cc->group, mg = cc->m / cc->group;
    const int64_t isp = cc->in[0] * cc->in[1] * cc->in[2], osp = out[0] * out[1] * out[2];
    const int64_t ksp = cc->k[0] * cc->k[1] * cc->k[2];
    const size_t nx = (size_t)(cc->n * cc->c * isp), nw = (size_t)(cc->m * cg * ksp);
    const size_t ny = (size_t)(cc->n * cc->m * osp);
    float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w), *b = malloc((size_t)cc->m * 4);
    float *z = malloc(ny * sizeof *z), *y = malloc(ny * sizeof *y);
    for (size_t i = 0; i < nx; i++)
        x[i] = frand();
    for (size_t i = 0; i < nw; i++)
        w[i] = frand();
    for (int64_t i = 0; i < cc->m; i++)
        b[i] = frand();
    for (size_t i = 0; i < ny; i++)
        z[i] = frand();
    loom_graph *g = loom_graph_create("conv3d");
    int64_t xd[5] = {cc->n, cc->c, cc->in[0], cc->in[1], cc->in[2]};
    int64_t wd[5] = {cc->m, cg, cc->k[0], cc->k[1], cc->k[2]}, bd[1] = {cc->m};
    int64_t yd[5] = {cc->n, cc->m, out[0], out[1], out[2]};
    loom_value ins[4] = {loom_input(g, "x", LOOM_DTYPE_F32, 5, xd),
                         loom_constant(g, "w", LOOM_DTYPE_F32, 5, wd, w),
                         cc->bias ? loom_constant(g, "b", LOOM_DTYPE_F32, 1, bd, b) : LOOM_NO_VALUE,
                         act ? loom_input(g, "z", LOOM_DTYPE_F32, 5, yd) : LOOM_NO_VALUE};
    loom_attr attrs[5] = {loom_attr_ints("strides", 3, cc->st),
                          loom_attr_ints("dilations", 3, cc->dil),
                          loom_attr_ints("pads", 6, cc->pads), loom_attr_int("group", cc->group),
                          loom_attr_string("activation", act ? act : "")};
    loom_value o;
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, act ? "FusedConv" : "Conv", "conv", ins,
                                        act ? 4 : cc->bias ? 3 : 2, attrs, act ? 5 : 4, &o, 1),
                          LOOM_OK);
    loom_output(g, o, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options opt = {.struct_size = sizeof opt, .device = "cpu:0", .strict = 1};
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &opt, &p), LOOM_OK);
    loom_tensor *tin[2], *tout;
    loom_tensor_wrap(LOOM_DTYPE_F32, 5, xd, x, &tin[0]);
    if (act)
        loom_tensor_wrap(LOOM_DTYPE_F32, 5, yd, z, &tin[1]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 5, yd, y, &tout);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)tin, act ? 2 : 1, &tout, 1, NULL),
                    LOOM_OK);
    int bad = 0;
    for (int64_t n = 0; n < cc->n; n++)
        for (int64_t oc = 0; oc < cc->m; oc++)
            for (int64_t q = 0; q < osp; q++) {
                const int64_t o0 = q / (out[1] * out[2]), o1 = q / out[2] % out[1], o2 = q % out[2];
                const int64_t grp = oc / mg;
                double acc = cc->bias ? b[oc] : 0.0, mag = fabs(acc);
                for (int64_t c = 0; c < cg; c++)
                    for (int64_t k0 = 0; k0 < cc->k[0]; k0++)
                        for (int64_t k1 = 0; k1 < cc->k[1]; k1++)
                            for (int64_t k2 = 0; k2 < cc->k[2]; k2++) {
                                int64_t i0 = o0 * cc->st[0] - cc->pads[0] + k0 * cc->dil[0];
                                int64_t i1 = o1 * cc->st[1] - cc->pads[1] + k1 * cc->dil[1];
                                int64_t i2 = o2 * cc->st[2] - cc->pads[2] + k2 * cc->dil[2];
                                if (i0 < 0 || i0 >= cc->in[0] || i1 < 0 || i1 >= cc->in[1] ||
                                    i2 < 0 || i2 >= cc->in[2])
                                    continue;
                                const int64_t xo =
                                    (((n * cc->c + grp * cg + c) * cc->in[0] + i0) * cc->in[1] +
                                     i1) * cc->in[2] + i2;
                                const int64_t wo =
                                    (((oc * cg + c) * cc->k[0] + k0) * cc->k[1] + k1) * cc->k[2] +
                                    k2;
                                double t = (double)x[xo] * w[wo];
                                acc += t;
                                mag += fabs(t);
                            }
                size_t at = (size_t)((n * cc->m + oc) * osp + q);
                if (act)
                    acc += z[at];
                double want = act_ref(act, acc, 0.1, 0.5);
                if (!(fabs(y[at] - want) <= 1e-5 * (1.0 + mag) + 1e-6 * fabs(want))) {
                    if (bad < 4)
                        printf("\n  3-D %s n%lld c%lld m%lld g%lld in %lldx%lldx%lld: "
                               "y[%lld,%lld,%lld] = %.7g, want %.7g",
                               act ? act : "Conv", (long long)cc->n, (long long)cc->c,
                               (long long)cc->m, (long long)cc->group, (long long)cc->in[0],
                               (long long)cc->in[1], (long long)cc->in[2], (long long)n,
                               (long long)oc, (long long)q, y[at], want);
                    bad++;
                }
            }
    CU_ASSERT_EQUAL(bad, 0);
    loom_tensor_destroy(tin[0]);
    if (act)
        loom_tensor_destroy(tin[1]);
    loom_tensor_destroy(tout);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(x);
    free(w);
    free(b);
    free(z);
    free(y);
}

static void test_conv3d_matches_naive(void)
{
    const conv3_case cs[] = {
        /* n c m group in k strides dilations pads (front top left back bottom right) bias */
        {1, 3, 4, 1, {5, 6, 7}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1, 1, 1, 1}, 1},
        {2, 2, 5, 1, {7, 5, 9}, {3, 2, 3}, {2, 1, 2}, {1, 1, 1}, {1, 0, 2, 0, 1, 1}, 0},
        {1, 3, 2, 1, {9, 7, 8}, {2, 3, 2}, {1, 2, 1}, {2, 1, 3}, {0, 1, 2, 1, 1, 0}, 1},
        {2, 4, 6, 2, {4, 5, 6}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1, 1, 1, 1}, 1},
        {1, 4, 8, 4, {5, 5, 5}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1, 1, 1, 1}, 1},
        {1, 6, 6, 6, {3, 4, 5}, {1, 3, 3}, {1, 1, 1}, {1, 1, 1}, {0, 1, 1, 0, 1, 1}, 0},
        {2, 8, 5, 1, {3, 4, 5}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0, 0, 0, 0}, 1},
        {1, 5, 3, 1, {5, 4, 7}, {1, 1, 1}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0, 0, 0, 0}, 1},
        {1, 2, 3, 1, {2, 2, 3}, {3, 4, 3}, {1, 1, 1}, {1, 1, 1}, {1, 2, 1, 1, 2, 1}, 1},
        {1, 16, 24, 1, {10, 12, 14}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1, 1, 1, 1}, 1},
        {1, 32, 64, 1, {3, 4, 4}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1, 1, 1, 1}, 0},
        {8, 4, 4, 2, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0, 1, 1, 1}, 1},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        check3(&cs[i], NULL);
        check3(&cs[i], i % 2 ? "Relu" : "");
    }
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"depthwise_matches_naive", test_depthwise_matches_naive},
        {"pointwise_matches_naive", test_pointwise_matches_naive},
        {"grouped_and_im2col_match_naive", test_grouped_and_im2col_match_naive},
        {"conv3d_matches_naive", test_conv3d_matches_naive},
        {"pooled_match_naive", test_pooled_match_naive},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"conv_kernels", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
