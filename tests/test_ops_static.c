/*
 * Operator coverage (issue 13), static-shape operators: GridSample, RNN, MaxPool's Indices and
 * integer MaxPool, GlobalMaxPool, LRN, MaxUnpool, MeanVarianceNormalization, Det,
 * ReverseSequence, Scatter, the window generators and RoiAlign, through the public API. Each
 * graph is built with loom_graph_op, planned on "cpu" with strict=1 and run, and its outputs
 * compared with naive reference loops written here from the ONNX specification (and, where the
 * specification leaves it open, PyTorch's definition that the ONNX test data comes from).
 * Malformed nodes must fail with a clear message.
 *
 * Run all tests: ./test_ops_static; only tests whose name contains WORD: ./test_ops_static WORD.
 */
#include <loom/graph.h>
#include <loom/runtime.h>

#include "test_support.h"

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void rng_reset(void) { rng_seed(0x5DEECE66Dull); }

/* ===========================================================================================
 * GridSample (graph/ops_sampling.c, backends/cpu/kernels_sampling.c)
 * =========================================================================================== */

/* PyTorch's grid_sampler: the coordinate is unnormalised, then (linear, nearest) clipped to the
 * border or reflected and clipped; taps outside the input read 0. Cubic reads each of its taps
 * through the padding instead (the same as ONNX Runtime's for zeros padding). */
static double gs_reflect_ref(double x, double lo, double hi)
{
    /* mirror into [lo, hi] by unfolding the period 2 * (hi - lo) */
    const double span = hi - lo;
    if (span <= 0)
        return 0;
    double v = fmod(fabs(x - lo), 2 * span);
    return v <= span ? lo + v : lo + 2 * span - v;
}

static double gs_coord(double g, int64_t size, int align, int pad, int cubic)
{
    double x = align ? (g + 1) / 2 * (double)(size - 1) : ((g + 1) * (double)size - 1) / 2;
    if (cubic)
        return x;
    if (pad == 1)
        x = fmin(fmax(x, 0), (double)(size - 1));
    else if (pad == 2) {
        x = align ? gs_reflect_ref(x, 0, (double)(size - 1))
                  : gs_reflect_ref(x, -0.5, (double)size - 0.5);
        x = fmin(fmax(x, 0), (double)(size - 1));
    }
    return x;
}

/* The value of X (one channel, R spatial dims SIZES) at integer position IDX, through PAD. */
static double gs_read(const double *x, uint32_t r, const int64_t *sizes, const int64_t *idx,
                      int pad, int align)
{
    int64_t at = 0;
    for (uint32_t k = 0; k < r; k++) {
        int64_t i = idx[k];
        if (i < 0 || i >= sizes[k]) {
            if (pad == 0)
                return 0;
            if (pad == 1)
                i = i < 0 ? 0 : sizes[k] - 1;
            else {
                double v = align ? gs_reflect_ref((double)i, 0, (double)(sizes[k] - 1))
                                 : gs_reflect_ref((double)i, -0.5, (double)sizes[k] - 0.5);
                i = (int64_t)fmin(fmax(v, 0), (double)(sizes[k] - 1));
            }
        }
        at = at * sizes[k] + i;
    }
    return x[at];
}

static double cubic_w(double t, int q)
{
    const double a = -0.75;
    double x = fabs(t + 1 - q); /* distance from tap q (at floor - 1 + q) */
    if (x <= 1)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2)
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0;
}

static void check_grid_sample(shp x, shp grid, const char *mode, const char *pad_mode, int align,
                              double grid_lo, double grid_hi, int line)
{
    tc c;
    tc_init(&c);
    const uint32_t r = x.rank - 2;
    double *xv = tc_random(&c, F32, numel(x), -2, 2);
    double *gv = tc_random(&c, F32, numel(grid), grid_lo, grid_hi);
    loom_value ins[2] = {tc_input(&c, F32, x, xv), tc_input(&c, F32, grid, gv)};
    loom_attr a[3] = {loom_attr_string("mode", mode), loom_attr_string("padding_mode", pad_mode),
                      loom_attr_int("align_corners", align)};
    CU_ASSERT_EQUAL(tc_node(&c, "GridSample", ins, 2, a, 3, 1), LOOM_OK);
    const int pad = strcmp(pad_mode, "zeros") == 0 ? 0 : strcmp(pad_mode, "border") == 0 ? 1 : 2;
    const int near = strcmp(mode, "nearest") == 0;
    const int cubic = strcmp(mode, "bicubic") == 0 || strcmp(mode, "cubic") == 0;
    shp y = x;
    for (uint32_t k = 0; k < r; k++)
        y.d[2 + k] = grid.d[1 + k];
    int64_t plane_in = 1, plane_out = 1, sizes[LOOM_MAX_RANK];
    for (uint32_t k = 0; k < r; k++) {
        sizes[k] = x.d[2 + k];
        plane_in *= x.d[2 + k];
        plane_out *= y.d[2 + k];
    }
    double *want = tc_dbuf(&c, numel(y));
    for (int64_t n = 0; n < x.d[0]; n++)
        for (int64_t o = 0; o < plane_out; o++) {
            const double *g = gv + (n * plane_out + o) * r;
            double pos[LOOM_MAX_RANK];
            for (uint32_t k = 0; k < r; k++)
                pos[k] = gs_coord(g[r - 1 - k], sizes[k], align, pad, cubic);
            for (int64_t ch = 0; ch < x.d[1]; ch++) {
                const double *xp = xv + (n * x.d[1] + ch) * plane_in;
                double v = 0;
                if (near) {
                    int64_t idx[LOOM_MAX_RANK];
                    for (uint32_t k = 0; k < r; k++)
                        idx[k] = (int64_t)nearbyint(pos[k]);
                    v = gs_read(xp, r, sizes, idx, pad == 0 ? 0 : 1, align);
                } else {
                    const int taps = cubic ? 4 : 2;
                    int total = 1;
                    for (uint32_t k = 0; k < r; k++)
                        total *= taps;
                    for (int t = 0; t < total; t++) {
                        int64_t idx[LOOM_MAX_RANK];
                        double w = 1;
                        int rest = t;
                        for (uint32_t k = 0; k < r; k++) {
                            const int q = rest % taps;
                            rest /= taps;
                            const double fl = floor(pos[k]), f = pos[k] - fl;
                            idx[k] = (int64_t)fl + (cubic ? q - 1 : q);
                            w *= cubic ? cubic_w(f, q) : (q ? f : 1 - f);
                        }
                        v += w * gs_read(xp, r, sizes, idx, pad, align);
                    }
                }
                want[(n * x.d[1] + ch) * plane_out + o] = v;
            }
        }
    if (tc_run(&c, line))
        check_out(&c, 0, F32, y, want, 1e-5, 1e-4, line);
    tc_free(&c);
}

static void test_grid_sample_modes_paddings_align(void)
{
    static const char *const modes[] = {"bilinear", "nearest", "linear"};
    static const char *const pads[] = {"zeros", "border", "reflection"};
    for (int m = 0; m < 3; m++)
        for (int p = 0; p < 3; p++)
            for (int al = 0; al < 2; al++) {
                /* inside the input, and far outside it (every padding path) */
                check_grid_sample(SHP(2, 3, 5, 7), SHP(2, 4, 6, 2), modes[m], pads[p], al, -1, 1,
                                  __LINE__);
                check_grid_sample(SHP(1, 2, 4, 3), SHP(1, 5, 3, 2), modes[m], pads[p], al, -4.5,
                                  4.5, __LINE__);
            }
    for (int al = 0; al < 2; al++) {
        check_grid_sample(SHP(2, 2, 6, 5), SHP(2, 3, 4, 2), "bicubic", "zeros", al, -1.2, 1.2,
                          __LINE__);
        check_grid_sample(SHP(1, 1, 4, 4), SHP(1, 6, 6, 2), "cubic", "zeros", al, -3, 3,
                          __LINE__);
        /* opset 20's N-D form: 3-D volumes, and one spatial axis */
        check_grid_sample(SHP(1, 2, 3, 4, 5), SHP(1, 2, 3, 4, 3), "linear", "border", al, -1.3,
                          1.3, __LINE__);
        check_grid_sample(SHP(2, 1, 3, 4, 2), SHP(2, 3, 2, 2, 3), "nearest", "reflection", al, -3,
                          3, __LINE__);
        check_grid_sample(SHP(2, 3, 9), SHP(2, 7, 1), "linear", "zeros", al, -1.5, 1.5,
                          __LINE__);
    }
}

static void test_grid_sample_bad_shapes_fail_clearly(void)
{
    tc c;
    tc_init(&c);
    double xv[16] = {0}, gv[12] = {0};
    loom_value ins[2] = {tc_input(&c, F32, SHP(1, 1, 4, 4), xv),
                         tc_input(&c, F32, SHP(1, 2, 2, 3), gv)};
    expect_build_error(&c, tc_node(&c, "GridSample", ins, 2, NULL, 0, 1),
                       LOOM_ERR_INVALID_ARGUMENT, "GridSample", "grid", __LINE__);
    tc_free(&c);
    tc_init(&c);
    loom_value ins2[2] = {tc_input(&c, F32, SHP(1, 1, 4, 4), xv),
                          tc_input(&c, F32, SHP(1, 2, 3, 2), gv)};
    loom_attr a = loom_attr_string("mode", "area");
    expect_build_error(&c, tc_node(&c, "GridSample", ins2, 2, &a, 1, 1),
                       LOOM_ERR_INVALID_ARGUMENT, "GridSample", "mode", __LINE__);
    tc_free(&c);
}

/* ===========================================================================================
 * RNN (graph/ops_recurrent.c, backends/cpu/kernels_recurrent.c)
 * =========================================================================================== */

/* H_t = tanh(X_t W^T + H_{t-1} R^T + Wb + Rb), per direction; a batch row stops at its
 * sequence length (Y zero beyond it, Y_h its last state). */
static void check_rnn(int64_t T_, int64_t B, int64_t I, int64_t H, const char *dir, int layout,
                      int with_b, int with_h0, int with_len, float clip, int line)
{
    tc c;
    tc_init(&c);
    const int64_t nd = strcmp(dir, "bidirectional") == 0 ? 2 : 1;
    shp xs = layout ? SHP(B, T_, I) : SHP(T_, B, I);
    double *xv = tc_random(&c, F32, numel(xs), -1, 1);
    double *wv = tc_random(&c, F32, nd * H * I, -0.6, 0.6);
    double *rv = tc_random(&c, F32, nd * H * H, -0.6, 0.6);
    double *bv = tc_random(&c, F32, nd * 2 * H, -0.5, 0.5);
    double *hv = tc_random(&c, F32, nd * B * H, -1, 1);
    double *lens = tc_dbuf(&c, B);
    for (int64_t b = 0; b < B; b++)
        lens[b] = with_len ? (double)rng_int(0, T_) : (double)T_;
    loom_value none = LOOM_NO_VALUE;
    loom_value ins[6] = {tc_input(&c, F32, xs, xv), tc_const(&c, F32, SHP(nd, H, I), wv),
                         tc_const(&c, F32, SHP(nd, H, H), rv),
                         with_b ? tc_const(&c, F32, SHP(nd, 2 * H), bv) : none,
                         with_len ? tc_input(&c, I32, SHP(B), lens) : none,
                         with_h0 ? tc_input(&c, F32, layout ? SHP(B, nd, H) : SHP(nd, B, H), hv)
                                 : none};
    loom_attr a[4] = {loom_attr_string("direction", dir), loom_attr_int("hidden_size", H),
                      loom_attr_int("layout", layout), loom_attr_float("clip", clip)};
    CU_ASSERT_EQUAL(tc_node(&c, "RNN", ins, 6, a, isinf(clip) ? 3 : 4, 2), LOOM_OK);
    shp ys = layout ? SHP(B, T_, nd, H) : SHP(T_, nd, B, H);
    shp hs = layout ? SHP(B, nd, H) : SHP(nd, B, H);
    double *y = tc_dbuf(&c, numel(ys)), *yh = tc_dbuf(&c, numel(hs)), *h = tc_dbuf(&c, H),
           *hn = tc_dbuf(&c, H);
    for (int64_t d = 0; d < nd; d++)
        for (int64_t b = 0; b < B; b++) {
            const int rev = nd == 2 ? d == 1 : strcmp(dir, "reverse") == 0;
            const int64_t len = (int64_t)lens[b];
            for (int64_t i = 0; i < H; i++)
                h[i] = with_h0 ? hv[layout ? (b * nd + d) * H + i : (d * B + b) * H + i] : 0;
            for (int64_t s = 0; s < len; s++) {
                const int64_t t = rev ? len - 1 - s : s;
                const double *xt = xv + (layout ? b * T_ + t : t * B + b) * I;
                for (int64_t i = 0; i < H; i++) {
                    double v = 0;
                    for (int64_t k = 0; k < I; k++)
                        v += xt[k] * wv[(d * H + i) * I + k];
                    for (int64_t k = 0; k < H; k++)
                        v += h[k] * rv[(d * H + i) * H + k];
                    if (with_b)
                        v += bv[d * 2 * H + i] + bv[d * 2 * H + H + i];
                    v = fmin(fmax(v, -(double)clip), (double)clip);
                    hn[i] = tanh(v);
                }
                memcpy(h, hn, (size_t)H * sizeof *h);
                for (int64_t i = 0; i < H; i++)
                    y[layout ? ((b * T_ + t) * nd + d) * H + i : ((t * nd + d) * B + b) * H + i] =
                        h[i];
            }
            for (int64_t i = 0; i < H; i++)
                yh[layout ? (b * nd + d) * H + i : (d * B + b) * H + i] = h[i];
        }
    if (tc_run(&c, line)) {
        check_out(&c, 0, F32, ys, y, 1e-5, 1e-4, line);
        check_out(&c, 1, F32, hs, yh, 1e-5, 1e-4, line);
    }
    tc_free(&c);
}

static void test_rnn_directions_layouts_lengths(void)
{
    static const char *const dirs[] = {"forward", "reverse", "bidirectional"};
    for (int d = 0; d < 3; d++)
        for (int layout = 0; layout < 2; layout++) {
            check_rnn(5, 3, 4, 6, dirs[d], layout, 1, 1, 0, INFINITY, __LINE__);
            check_rnn(4, 5, 3, 2, dirs[d], layout, 0, 0, 1, INFINITY, __LINE__);
            check_rnn(6, 2, 7, 5, dirs[d], layout, 1, 0, 1, 0.5f, __LINE__);
        }
}

static void test_rnn_rejects_other_activations(void)
{
    tc c;
    tc_init(&c);
    double xv[12] = {0}, wv[8] = {0}, rv[4] = {0};
    loom_value ins[3] = {tc_input(&c, F32, SHP(2, 2, 3), xv), tc_const(&c, F32, SHP(1, 2, 3), wv),
                         tc_const(&c, F32, SHP(1, 2, 2), rv)};
    loom_attr a[2] = {loom_attr_int("hidden_size", 2), loom_attr_string("activations", "Relu")};
    expect_build_error(&c, tc_node(&c, "RNN", ins, 3, a, 2, 2), LOOM_ERR_UNSUPPORTED, "RNN",
                       "activations", __LINE__);
    tc_free(&c);
}

/* ===========================================================================================
 * MaxPool's Indices and integer inputs, GlobalMaxPool (graph/ops_conv_pool.c,
 * backends/cpu/kernels_pooling.c)
 * =========================================================================================== */

/* 2-D MaxPool: the first maximum of each window (taps row by row), its flat index into X
 * (row-major spatial order, or column-major with storage_order 1); padding never wins. */
static void check_max_pool(loom_dtype dt, shp x, int64_t k, int64_t stride, int64_t pad,
                           int64_t dil, int storage_order, int line)
{
    tc c;
    tc_init(&c);
    double *xv = tc_random(&c, dt, numel(x), dt == U8 ? 0 : -100, 100);
    loom_value in = tc_input(&c, dt, x, xv);
    const int64_t ks[2] = {k, k}, st[2] = {stride, stride}, pd[4] = {pad, pad, pad, pad},
                  dl[2] = {dil, dil};
    loom_attr a[5] = {loom_attr_ints("kernel_shape", 2, ks), loom_attr_ints("strides", 2, st),
                      loom_attr_ints("pads", 4, pd), loom_attr_ints("dilations", 2, dl),
                      loom_attr_int("storage_order", storage_order)};
    CU_ASSERT_EQUAL(tc_node(&c, "MaxPool", &in, 1, a, 5, 2), LOOM_OK);
    const int64_t H = x.d[2], W = x.d[3];
    const int64_t OH = (H + 2 * pad - dil * (k - 1) - 1) / stride + 1;
    const int64_t OW = (W + 2 * pad - dil * (k - 1) - 1) / stride + 1;
    shp y = SHP(x.d[0], x.d[1], OH, OW);
    double *want = tc_dbuf(&c, numel(y)), *wi = tc_dbuf(&c, numel(y));
    for (int64_t p = 0; p < x.d[0] * x.d[1]; p++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                double best = 0;
                int64_t at = -1, ah = 0, aw = 0;
                for (int64_t i = 0; i < k; i++)
                    for (int64_t j = 0; j < k; j++) {
                        int64_t h = oh * stride - pad + i * dil, w = ow * stride - pad + j * dil;
                        if (h < 0 || h >= H || w < 0 || w >= W)
                            continue;
                        double v = xv[p * H * W + h * W + w];
                        if (at < 0 || v > best)
                            best = v, at = 1, ah = h, aw = w;
                    }
                const int64_t o = (p * OH + oh) * OW + ow;
                want[o] = best;
                wi[o] = (double)(p * H * W + (storage_order ? aw * H + ah : ah * W + aw));
            }
    if (tc_run(&c, line)) {
        check_out(&c, 0, dt, y, want, 0, 0, line);
        check_out(&c, 1, I64, y, wi, 0, 0, line);
    }
    tc_free(&c);
}

static void test_max_pool_indices_and_integer_inputs(void)
{
    const loom_dtype dts[3] = {F32, U8, I8};
    for (int t = 0; t < 3; t++)
        for (int so = 0; so < 2; so++) {
            check_max_pool(dts[t], SHP(2, 3, 7, 6), 3, 2, 1, 1, so, __LINE__);
            check_max_pool(dts[t], SHP(1, 2, 5, 5), 2, 1, 0, 1, so, __LINE__);
            check_max_pool(dts[t], SHP(1, 1, 9, 8), 2, 1, 1, 2, so, __LINE__);
        }
    /* uint8 without Indices */
    tc c;
    tc_init(&c);
    double xv[16];
    for (int i = 0; i < 16; i++)
        xv[i] = (double)((i * 37) % 256);
    loom_value in = tc_input(&c, U8, SHP(1, 1, 4, 4), xv);
    const int64_t ks[2] = {2, 2}, st[2] = {2, 2};
    loom_attr a[2] = {loom_attr_ints("kernel_shape", 2, ks), loom_attr_ints("strides", 2, st)};
    CU_ASSERT_EQUAL(tc_node(&c, "MaxPool", &in, 1, a, 2, 1), LOOM_OK);
    double want[4];
    for (int oh = 0; oh < 2; oh++)
        for (int ow = 0; ow < 2; ow++) {
            double m = 0;
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++)
                    m = fmax(m, xv[(oh * 2 + i) * 4 + ow * 2 + j]);
            want[oh * 2 + ow] = m;
        }
    if (tc_run(&c, __LINE__))
        check_out(&c, 0, U8, SHP(1, 1, 2, 2), want, 0, 0, __LINE__);
    tc_free(&c);
}

static void test_global_max_pool(void)
{
    const shp shapes[3] = {SHP(2, 3, 5, 7), SHP(1, 4, 9), SHP(2, 2, 3, 2, 4)};
    for (int s = 0; s < 3; s++) {
        tc c;
        tc_init(&c);
        shp x = shapes[s];
        double *xv = tc_random(&c, F32, numel(x), -50, 50);
        loom_value in = tc_input(&c, F32, x, xv);
        CU_ASSERT_EQUAL(tc_node(&c, "GlobalMaxPool", &in, 1, NULL, 0, 1), LOOM_OK);
        shp y = x;
        for (uint32_t k = 2; k < x.rank; k++)
            y.d[k] = 1;
        const int64_t planes = x.d[0] * x.d[1], n = numel(x) / planes;
        double *want = tc_dbuf(&c, planes);
        for (int64_t p = 0; p < planes; p++) {
            want[p] = -INFINITY;
            for (int64_t i = 0; i < n; i++)
                want[p] = fmax(want[p], xv[p * n + i]);
        }
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, F32, y, want, 0, 0, __LINE__);
        tc_free(&c);
    }
}

/* ===========================================================================================
 * LRN, MeanVarianceNormalization (graph/ops_normalization.c, kernels_normalization.c)
 * =========================================================================================== */

static void test_lrn_matches_reference(void)
{
    const int64_t sizes[3] = {1, 3, 4};
    for (int t = 0; t < 3; t++) {
        tc c;
        tc_init(&c);
        shp x = SHP(2, 5, 3, 4);
        double *xv = tc_random(&c, F32, numel(x), -3, 3);
        loom_value in = tc_input(&c, F32, x, xv);
        const double alpha = 2e-3, beta = 0.6, bias = 1.5;
        loom_attr a[4] = {loom_attr_float("alpha", (float)alpha),
                          loom_attr_float("beta", (float)beta),
                          loom_attr_float("bias", (float)bias), loom_attr_int("size", sizes[t])};
        CU_ASSERT_EQUAL(tc_node(&c, "LRN", &in, 1, a, 4, 1), LOOM_OK);
        double *want = tc_dbuf(&c, numel(x));
        const int64_t C = 5, inner = 12, sz = sizes[t];
        for (int64_t n = 0; n < 2; n++)
            for (int64_t ch = 0; ch < C; ch++)
                for (int64_t i = 0; i < inner; i++) {
                    double sq = 0;
                    for (int64_t q = ch - (sz - 1) / 2; q <= ch + sz / 2; q++)
                        if (q >= 0 && q < C)
                            sq += pow(xv[(n * C + q) * inner + i], 2);
                    const int64_t at = (n * C + ch) * inner + i;
                    want[at] = xv[at] / pow(bias + (double)(float)alpha / (double)sz * sq,
                                            (double)(float)beta);
                }
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, F32, x, want, 1e-6, 1e-5, __LINE__);
        tc_free(&c);
    }
}

static void check_mvn(shp x, const int64_t *axes, size_t n_axes, int line)
{
    tc c;
    tc_init(&c);
    double *xv = tc_random(&c, F32, numel(x), -4, 6);
    loom_value in = tc_input(&c, F32, x, xv);
    loom_attr a = loom_attr_ints("axes", n_axes, axes);
    CU_ASSERT_EQUAL(tc_node(&c, "MeanVarianceNormalization", &in, 1, &a, axes ? 1 : 0, 1),
                    LOOM_OK);
    int red[LOOM_MAX_RANK] = {0};
    static const int64_t def[3] = {0, 2, 3};
    for (size_t i = 0; i < (axes ? n_axes : 3); i++) {
        int64_t ax = axes ? axes[i] : def[i];
        red[ax < 0 ? ax + x.rank : ax] = 1;
    }
    double *want = tc_dbuf(&c, numel(x));
    int64_t idx[LOOM_MAX_RANK], jdx[LOOM_MAX_RANK];
    for (int64_t i = 0; i < numel(x); i++) {
        unravel(i, x, idx);
        double s = 0, s2 = 0, cnt = 0;
        for (int64_t j = 0; j < numel(x); j++) {
            unravel(j, x, jdx);
            int same = 1;
            for (uint32_t d = 0; d < x.rank; d++)
                same &= red[d] || jdx[d] == idx[d];
            if (same)
                s += xv[j], s2 += xv[j] * xv[j], cnt++;
        }
        const double mean = s / cnt;
        want[i] = (xv[i] - mean) / (sqrt(s2 / cnt - mean * mean) + 1e-9);
    }
    if (tc_run(&c, line))
        check_out(&c, 0, F32, x, want, 1e-5, 1e-4, line);
    tc_free(&c);
}

static void test_mvn_default_and_given_axes(void)
{
    check_mvn(SHP(2, 3, 4, 5), NULL, 0, __LINE__);
    const int64_t a1[2] = {1, -1}, a2[1] = {0};
    check_mvn(SHP(3, 4, 5), a1, 2, __LINE__);
    check_mvn(SHP(6, 2), a2, 1, __LINE__);
}

/* ===========================================================================================
 * MaxUnpool (graph/ops_conv_pool.c, kernels_pooling.c): the inverse of MaxPool's Indices
 * =========================================================================================== */

static void check_max_unpool(int with_shape, int line)
{
    tc c;
    tc_init(&c);
    /* pooled [1, 2, 3, 3] from a [1, 2, 6, 5] input (kernel 2, stride 2, pads end 0/1) */
    const int64_t H = 6, W = 5, OH = 3, OW = 3, YH = with_shape ? 8 : 6, YW = with_shape ? 9 : 5;
    shp xs = SHP(1, 2, OH, OW);
    double *xv = tc_random(&c, F32, numel(xs), -5, 5), *iv = tc_dbuf(&c, numel(xs));
    for (int64_t p = 0; p < 2; p++)
        for (int64_t i = 0; i < OH * OW; i++) {
            int64_t h = i / OW * 2 + rng_int(0, 1), w = i % OW * 2 + rng_int(0, 1);
            w = w < W ? w : W - 1;
            iv[p * OH * OW + i] = (double)(p * H * W + h * W + w);
        }
    double shape[4] = {1, 2, (double)YH, (double)YW};
    loom_value ins[3] = {tc_input(&c, F32, xs, xv), tc_input(&c, I64, xs, iv),
                         with_shape ? tc_const(&c, I64, SHP(4), shape) : LOOM_NO_VALUE};
    const int64_t ks[2] = {2, 2}, st[2] = {2, 2}, pd[4] = {0, 0, 0, 1};
    loom_attr a[3] = {loom_attr_ints("kernel_shape", 2, ks), loom_attr_ints("strides", 2, st),
                      loom_attr_ints("pads", 4, pd)};
    CU_ASSERT_EQUAL(tc_node(&c, "MaxUnpool", ins, with_shape ? 3 : 2, a, 3, 1), LOOM_OK);
    shp ys = SHP(1, 2, YH, YW);
    double *want = tc_dbuf(&c, numel(ys));
    for (int64_t i = 0; i < numel(xs); i++) {
        int64_t f = (int64_t)iv[i], p = f / (H * W), h = f % (H * W) / W, w = f % W;
        want[(p * YH + h) * YW + w] = xv[i];
    }
    if (tc_run(&c, line))
        check_out(&c, 0, F32, ys, want, 0, 0, line);
    tc_free(&c);
}

static void test_max_unpool_with_and_without_output_shape(void)
{
    check_max_unpool(0, __LINE__);
    check_max_unpool(1, __LINE__);
}

/* ===========================================================================================
 * Det, ReverseSequence, the windows
 * =========================================================================================== */

/* Determinant by cofactor expansion along the first row. */
static double det_ref(const double *a, int64_t m)
{
    if (m == 1)
        return a[0];
    double d = 0, sub[64];
    for (int64_t j = 0; j < m; j++) {
        int64_t k = 0;
        for (int64_t r = 1; r < m; r++)
            for (int64_t q = 0; q < m; q++)
                if (q != j)
                    sub[k++] = a[r * m + q];
        d += (j % 2 ? -1 : 1) * a[j] * det_ref(sub, m - 1);
    }
    return d;
}

static void test_det_batches_and_singular(void)
{
    const shp shapes[3] = {SHP(4, 4), SHP(2, 3, 3, 3), SHP(5, 1, 1)};
    for (int s = 0; s < 3; s++) {
        tc c;
        tc_init(&c);
        shp x = shapes[s];
        const int64_t m = x.d[x.rank - 1], count = numel(x) / (m * m);
        double *xv = tc_random(&c, F32, numel(x), -2, 2);
        if (m > 1) /* one singular matrix: two equal rows */
            memcpy(xv + m, xv, (size_t)m * sizeof *xv);
        loom_value in = tc_input(&c, F32, x, xv);
        CU_ASSERT_EQUAL(tc_node(&c, "Det", &in, 1, NULL, 0, 1), LOOM_OK);
        shp y = x;
        y.rank -= 2;
        double *want = tc_dbuf(&c, count);
        for (int64_t b = 0; b < count; b++)
            want[b] = det_ref(xv + b * m * m, m);
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, F32, y, want, 1e-5, 1e-4, __LINE__);
        tc_free(&c);
    }
}

static void test_reverse_sequence_both_layouts(void)
{
    for (int time_first = 0; time_first < 2; time_first++) {
        tc c;
        tc_init(&c);
        const int64_t T_ = 5, B = 4, inner = 3;
        shp x = time_first ? SHP(T_, B, inner) : SHP(B, T_, inner);
        double *xv = tc_random(&c, I32, numel(x), -100, 100), lens[4] = {5, 0, 3, 1};
        loom_value ins[2] = {tc_input(&c, I32, x, xv), tc_input(&c, I64, SHP(4), lens)};
        loom_attr a[2] = {loom_attr_int("batch_axis", time_first ? 1 : 0),
                          loom_attr_int("time_axis", time_first ? 0 : 1)};
        CU_ASSERT_EQUAL(tc_node(&c, "ReverseSequence", ins, 2, a, 2, 1), LOOM_OK);
        double *want = tc_dbuf(&c, numel(x));
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T_; t++) {
                int64_t src = t < (int64_t)lens[b] ? (int64_t)lens[b] - 1 - t : t;
                for (int64_t i = 0; i < inner; i++) {
                    int64_t yo = (time_first ? t * B + b : b * T_ + t) * inner + i;
                    int64_t xo = (time_first ? src * B + b : b * T_ + src) * inner + i;
                    want[yo] = xv[xo];
                }
            }
        if (tc_run(&c, __LINE__))
            check_out(&c, 0, I32, x, want, 0, 0, __LINE__);
        tc_free(&c);
    }
}

static void test_windows_periodic_and_symmetric(void)
{
    static const char *const ops[3] = {"HannWindow", "HammingWindow", "BlackmanWindow"};
    const double pi = 3.14159265358979323846;
    for (int o = 0; o < 3; o++)
        for (int periodic = 0; periodic < 2; periodic++)
            for (int64_t size = 1; size <= 9; size += 4) {
                tc c;
                tc_init(&c);
                loom_value in = tc_scalar(&c, I64, (double)size);
                loom_attr a = loom_attr_int("periodic", periodic);
                CU_ASSERT_EQUAL(tc_node(&c, ops[o], &in, 1, &a, 1, 1), LOOM_OK);
                double *want = tc_dbuf(&c, size);
                const double nd = periodic ? (double)size : (double)(size - 1);
                for (int64_t i = 0; i < size; i++) {
                    const double t = nd > 0 ? 2 * pi * (double)i / nd : 0;
                    want[i] = o == 0   ? 0.5 - 0.5 * cos(t)
                              : o == 1 ? 25.0 / 46 - 21.0 / 46 * cos(t)
                                       : 0.42 - 0.5 * cos(t) + 0.08 * cos(2 * t);
                    if (nd <= 0)
                        want[i] = 1;
                }
                if (tc_run(&c, __LINE__))
                    check_out(&c, 0, F32, SHP(size), want, 1e-6, 1e-5, __LINE__);
                tc_free(&c);
            }
}

/* ===========================================================================================
 * RoiAlign (graph/ops_sampling.c, kernels_sampling.c)
 * =========================================================================================== */

static double ra_bilinear(const double *x, int64_t H, int64_t W, double y, double xx, int max)
{
    if (y < -1 || y > (double)H || xx < -1 || xx > (double)W)
        return 0;
    y = y <= 0 ? 0 : y;
    xx = xx <= 0 ? 0 : xx;
    int64_t y0 = (int64_t)y, x0 = (int64_t)xx, y1 = y0 + 1, x1 = x0 + 1;
    if (y0 >= H - 1)
        y0 = y1 = H - 1, y = (double)y0;
    if (x0 >= W - 1)
        x0 = x1 = W - 1, xx = (double)x0;
    double ly = y - (double)y0, lx = xx - (double)x0;
    double t[4] = {(1 - ly) * (1 - lx) * x[y0 * W + x0], (1 - ly) * lx * x[y0 * W + x1],
                   ly * (1 - lx) * x[y1 * W + x0], ly * lx * x[y1 * W + x1]};
    return max ? fmax(fmax(t[0], t[1]), fmax(t[2], t[3])) : t[0] + t[1] + t[2] + t[3];
}

static void check_roi_align(const char *mode, const char *ctm, int64_t sr, int line)
{
    tc c;
    tc_init(&c);
    const int64_t N = 2, C = 3, H = 7, W = 9, R = 4, OH = 3, OW = 2;
    const double scale = 0.75;
    shp xs = SHP(N, C, H, W);
    double *xv = tc_random(&c, F32, numel(xs), -2, 2), *rv = tc_dbuf(&c, R * 4),
           bi[4] = {1, 0, 1, 0};
    for (int64_t r = 0; r < R; r++) {
        double x1 = rng_uniform(-2, 8), y1 = rng_uniform(-2, 6);
        rv[r * 4] = (float)x1, rv[r * 4 + 1] = (float)y1;
        rv[r * 4 + 2] = (float)(x1 + rng_uniform(0.2, 6));
        rv[r * 4 + 3] = (float)(y1 + rng_uniform(0.2, 5));
    }
    loom_value ins[3] = {tc_input(&c, F32, xs, xv), tc_input(&c, F32, SHP(R, 4), rv),
                         tc_input(&c, I64, SHP(R), bi)};
    loom_attr a[6] = {loom_attr_string("mode", mode),
                      loom_attr_string("coordinate_transformation_mode", ctm),
                      loom_attr_int("output_height", OH), loom_attr_int("output_width", OW),
                      loom_attr_int("sampling_ratio", sr),
                      loom_attr_float("spatial_scale", (float)scale)};
    CU_ASSERT_EQUAL(tc_node(&c, "RoiAlign", ins, 3, a, 6, 1), LOOM_OK);
    const int half = strcmp(ctm, "half_pixel") == 0, max = strcmp(mode, "max") == 0;
    shp ys = SHP(R, C, OH, OW);
    double *want = tc_dbuf(&c, numel(ys));
    for (int64_t r = 0; r < R; r++) {
        const double off = half ? 0.5 : 0;
        double x0 = rv[r * 4] * scale - off, y0 = rv[r * 4 + 1] * scale - off;
        double rw = rv[r * 4 + 2] * scale - off - x0, rh = rv[r * 4 + 3] * scale - off - y0;
        if (!half)
            rw = fmax(rw, 1), rh = fmax(rh, 1);
        const int64_t gh = sr ? sr : (int64_t)ceil(rh / OH), gw = sr ? sr : (int64_t)ceil(rw / OW);
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t ph = 0; ph < OH; ph++)
                for (int64_t pw = 0; pw < OW; pw++) {
                    double acc = max ? -INFINITY : 0;
                    for (int64_t iy = 0; iy < gh; iy++)
                        for (int64_t ix = 0; ix < gw; ix++) {
                            double yy = y0 + ph * rh / OH + (iy + 0.5) * rh / OH / gh;
                            double xx = x0 + pw * rw / OW + (ix + 0.5) * rw / OW / gw;
                            double v = ra_bilinear(xv + ((int64_t)bi[r] * C + ch) * H * W, H, W,
                                                   yy, xx, max);
                            acc = max ? fmax(acc, v) : acc + v;
                        }
                    want[((r * C + ch) * OH + ph) * OW + pw] =
                        max ? acc : acc / (double)(gh * gw > 1 ? gh * gw : 1);
                }
    }
    if (tc_run(&c, line))
        check_out(&c, 0, F32, ys, want, 1e-5, 1e-4, line);
    tc_free(&c);
}

static void test_roi_align_modes(void)
{
    check_roi_align("avg", "half_pixel", 2, __LINE__);
    check_roi_align("avg", "output_half_pixel", 0, __LINE__);
    check_roi_align("max", "half_pixel", 0, __LINE__);
    check_roi_align("max", "output_half_pixel", 3, __LINE__);
}

/* ===========================================================================================
 * The suite
 * =========================================================================================== */

#define T(f) {#f, f}
static const test_entry k_tests[] = {
    T(test_grid_sample_modes_paddings_align),
    T(test_grid_sample_bad_shapes_fail_clearly),
    T(test_rnn_directions_layouts_lengths),
    T(test_rnn_rejects_other_activations),
    T(test_max_pool_indices_and_integer_inputs),
    T(test_global_max_pool),
    T(test_lrn_matches_reference),
    T(test_mvn_default_and_given_axes),
    T(test_max_unpool_with_and_without_output_shape),
    T(test_det_batches_and_singular),
    T(test_reverse_sequence_both_layouts),
    T(test_windows_periodic_and_symmetric),
    T(test_roi_align_modes),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    const test_suite suite = {"ops_static", k_tests, test_rt_open_default, test_rt_close,
                              rng_reset, NULL};
    return test_run_suites(&suite, 1, argc, argv);
}
