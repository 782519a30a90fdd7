/*
 * The fold_batchnorm pass (issue 16): Conv / ConvTranspose + inference BatchNormalization
 * (+ Relu) becomes one Conv (then one Conv+Relu node through fuse_epilogue), over groups,
 * depthwise, strides and with or without the Conv's bias; numbers against the same graph planned
 * with LOOM_FOLD_BN=0 LOOM_FUSE=0 (node by node) and against naive loops in double (rtol 1e-4).
 * What must stay: a Conv output with a second reader, one that is a graph output, statistics
 * that are not constants. The stage's summary ("folded 1 BatchNormalization into Conv") is what
 * loom profile --passes prints.
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

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / (float)0x800000 - 1.0f;
}

static float *rand_array(size_t n, float lo_abs)
{
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = lo_abs > 0 ? lo_abs + fabsf(frand()) : frand();
    return a;
}

/* One case: X [N, C, H, W] -> Conv or ConvTranspose (3x3, GROUP, STRIDE, pads P) -> BN -> Relu?
 * The parameters are kept for the naive reference. */
typedef struct bn_case {
    int transpose, group, stride, pad, with_b, relu;
    int stats_input;  /* the BN's mean is a graph input: not constant */
    int extra_reader; /* the conv's output is also read by a Neg that is a second output */
    int conv_output;  /* the conv's output is a graph output too */
    int64_t n, c, h, w, m, oh, ow;
    float *x, *wt, *b, *scale, *beta, *mean, *var;
    size_t wn, yn;
} bn_case;

static const float eps = 1e-3f;

static void case_init(bn_case *k)
{
    k->n = 2;
    k->h = 7;
    k->w = 9;
    if (!k->transpose) {
        k->oh = (k->h + 2 * k->pad - 3) / k->stride + 1;
        k->ow = (k->w + 2 * k->pad - 3) / k->stride + 1;
        k->wn = (size_t)(k->m * (k->c / k->group) * 9);
    } else {
        k->oh = (k->h - 1) * k->stride - 2 * k->pad + 3;
        k->ow = (k->w - 1) * k->stride - 2 * k->pad + 3;
        k->wn = (size_t)(k->c * (k->m / k->group) * 9);
    }
    k->yn = (size_t)(k->n * k->m * k->oh * k->ow);
    k->x = rand_array((size_t)(k->n * k->c * k->h * k->w), 0);
    k->wt = rand_array(k->wn, 0);
    k->b = rand_array((size_t)k->m, 0);
    k->scale = rand_array((size_t)k->m, 0);
    k->beta = rand_array((size_t)k->m, 0);
    k->mean = rand_array((size_t)k->m, 0);
    k->var = rand_array((size_t)k->m, 0.25f);
}

static void case_free(bn_case *k)
{
    free(k->x);
    free(k->wt);
    free(k->b);
    free(k->scale);
    free(k->beta);
    free(k->mean);
    free(k->var);
}

static loom_graph *case_graph(const bn_case *k)
{
    loom_graph *g = loom_graph_create("bn");
    int64_t xd[4] = {k->n, k->c, k->h, k->w}, md[1] = {k->m};
    int64_t wd[4] = {k->transpose ? k->c : k->m,
                     k->transpose ? k->m / k->group : k->c / k->group, 3, 3};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 4, xd);
    loom_value mean = k->stats_input ? loom_input(g, "mean", LOOM_DTYPE_F32, 1, md)
                                     : loom_constant(g, "mean", LOOM_DTYPE_F32, 1, md, k->mean);
    int64_t pads[4] = {k->pad, k->pad, k->pad, k->pad}, strides[2] = {k->stride, k->stride};
    loom_attr a[3] = {loom_attr_ints("pads", 4, pads), loom_attr_ints("strides", 2, strides),
                      loom_attr_int("group", k->group)};
    loom_value ins[3] = {x, loom_constant(g, "w", LOOM_DTYPE_F32, 4, wd, k->wt),
                         k->with_b ? loom_constant(g, "b", LOOM_DTYPE_F32, 1, md, k->b)
                                   : LOOM_NO_VALUE};
    loom_value y;
    CU_ASSERT_EQUAL(loom_graph_op(g, k->transpose ? "ConvTranspose" : "Conv", "conv", ins,
                                  k->with_b ? 3 : 2, a, 3, &y, 1),
                    LOOM_OK);
    if (k->extra_reader) {
        loom_value z;
        CU_ASSERT_EQUAL(loom_graph_op(g, "Neg", "neg", &y, 1, NULL, 0, &z, 1), LOOM_OK);
        loom_output(g, z, "z");
    }
    if (k->conv_output)
        loom_output(g, y, "conv_out");
    loom_value bn = loom_batch_norm(g, y, loom_constant(g, "scale", LOOM_DTYPE_F32, 1, md, k->scale),
                                    loom_constant(g, "beta", LOOM_DTYPE_F32, 1, md, k->beta), mean,
                                    loom_constant(g, "var", LOOM_DTYPE_F32, 1, md, k->var), eps);
    if (k->relu)
        bn = loom_relu(g, bn);
    loom_output(g, bn, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    return g;
}

/* The naive reference of output "y", in double. */
static void case_reference(const bn_case *k, double *y)
{
    int64_t cg = k->c / k->group, mg = k->m / k->group;
    for (size_t i = 0; i < k->yn; i++)
        y[i] = 0.0;
#define X(n_, c_, h_, w_) ((double)k->x[(((n_) * k->c + (c_)) * k->h + (h_)) * k->w + (w_)])
#define Y(n_, o_, h_, w_) y[(((n_) * k->m + (o_)) * k->oh + (h_)) * k->ow + (w_)]
    for (int64_t n = 0; n < k->n; n++) {
        if (!k->transpose) {
            for (int64_t o = 0; o < k->m; o++)
                for (int64_t oh = 0; oh < k->oh; oh++)
                    for (int64_t ow = 0; ow < k->ow; ow++) {
                        double acc = 0.0;
                        int64_t gi = o / mg;
                        for (int64_t ci = 0; ci < cg; ci++)
                            for (int64_t kh = 0; kh < 3; kh++)
                                for (int64_t kw = 0; kw < 3; kw++) {
                                    int64_t ih = oh * k->stride - k->pad + kh,
                                            iw = ow * k->stride - k->pad + kw;
                                    if (ih < 0 || ih >= k->h || iw < 0 || iw >= k->w)
                                        continue;
                                    acc += X(n, gi * cg + ci, ih, iw) *
                                           k->wt[((o * cg + ci) * 3 + kh) * 3 + kw];
                                }
                        Y(n, o, oh, ow) = acc;
                    }
        } else {
            for (int64_t c = 0; c < k->c; c++)
                for (int64_t j = 0; j < mg; j++) {
                    int64_t o = (c / cg) * mg + j;
                    for (int64_t ih = 0; ih < k->h; ih++)
                        for (int64_t iw = 0; iw < k->w; iw++)
                            for (int64_t kh = 0; kh < 3; kh++)
                                for (int64_t kw = 0; kw < 3; kw++) {
                                    int64_t oh = ih * k->stride - k->pad + kh,
                                            ow = iw * k->stride - k->pad + kw;
                                    if (oh < 0 || oh >= k->oh || ow < 0 || ow >= k->ow)
                                        continue;
                                    Y(n, o, oh, ow) += X(n, c, ih, iw) *
                                                       k->wt[((c * mg + j) * 3 + kh) * 3 + kw];
                                }
                }
        }
        for (int64_t o = 0; o < k->m; o++)
            for (int64_t i = 0; i < k->oh * k->ow; i++) {
                double *v = &y[(n * k->m + o) * k->oh * k->ow + i];
                double t = *v + (k->with_b ? k->b[o] : 0.0);
                t = (t - k->mean[o]) / sqrt((double)k->var[o] + eps) * k->scale[o] + k->beta[o];
                *v = k->relu && t < 0 ? 0.0 : t;
            }
    }
#undef X
#undef Y
}

/* Plan G on cpu:0 with the pass on or off (then node by node: no fusion either), run it and
 * write output "y" (the graph's last output) into Y. Returns the plan. */
static loom_plan *plan_run(loom_graph *g, const bn_case *k, int fold, float *y)
{
    if (!fold) {
        setenv("LOOM_FOLD_BN", "0", 1);
        setenv("LOOM_FUSE", "0", 1);
    }
    loom_plan_options o = {.struct_size = sizeof o, .device = "cpu:0", .strict = 1};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    unsetenv("LOOM_FOLD_BN");
    unsetenv("LOOM_FUSE");
    int64_t xd[4] = {k->n, k->c, k->h, k->w}, md[1] = {k->m}, yd[4] = {k->n, k->m, k->oh, k->ow};
    loom_tensor *in[2], *out[3] = {NULL, NULL, NULL};
    size_t n_in = 0, n_out = 0;
    loom_tensor_wrap(LOOM_DTYPE_F32, 4, xd, k->x, &in[n_in++]);
    if (k->stats_input)
        loom_tensor_wrap(LOOM_DTYPE_F32, 1, md, k->mean, &in[n_in++]);
    float *scratch = malloc(2 * k->yn * sizeof *scratch);
    for (int e = 0; e < k->extra_reader + k->conv_output; e++)
        loom_tensor_wrap(LOOM_DTYPE_F32, 4, yd, scratch + (size_t)e * k->yn, &out[n_out++]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 4, yd, y, &out[n_out++]);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)in, n_in, out, n_out, NULL),
                    LOOM_OK);
    for (size_t i = 0; i < n_in; i++)
        loom_tensor_destroy(in[i]);
    for (size_t i = 0; i < n_out; i++)
        loom_tensor_destroy(out[i]);
    free(scratch);
    return p;
}

static void plan_ops(const loom_plan *p, char *buf, size_t len)
{
    buf[0] = '\0';
    for (size_t i = 0; i < loom_plan_node_count(p); i++) {
        size_t at = strlen(buf);
        snprintf(buf + at, len - at, "%s%s", i ? " " : "", loom_plan_node_op(p, i));
    }
}

static const char *stage_summary(const loom_plan *p, const char *name)
{
    static loom_pass_info info;
    for (size_t i = 0; i < loom_plan_pass_count(p); i++) {
        info.struct_size = sizeof info;
        if (loom_plan_pass_info(p, i, &info) == LOOM_OK && strcmp(info.name, name) == 0)
            return info.summary;
    }
    return "";
}

/* Runs case K folded and not; checks both against the reference, the folded plan's ops against
 * WANT_OPS and its fold_batchnorm summary against WANT_SUMMARY (a substring). */
static void run_case(const char *what, bn_case *k, const char *want_ops, const char *want_summary)
{
    case_init(k);
    loom_graph *g = case_graph(k);
    float *y0 = calloc(k->yn, sizeof *y0), *y1 = calloc(k->yn, sizeof *y1);
    double *ref = malloc(k->yn * sizeof *ref);
    case_reference(k, ref);
    loom_plan *p0 = plan_run(g, k, 0, y0);
    loom_plan *p1 = plan_run(g, k, 1, y1);
    int bad = 0;
    for (size_t i = 0; i < k->yn; i++) {
        double tol = 1e-4 * (1.0 + fabs(ref[i]));
        if (!(fabs(y1[i] - ref[i]) <= tol && fabs(y0[i] - ref[i]) <= tol &&
              fabs((double)y1[i] - y0[i]) <= tol) &&
            bad++ < 3)
            printf("\n  %s [%zu]: folded %.7g, node by node %.7g, reference %.7g", what, i,
                   y1[i], y0[i], ref[i]);
    }
    CU_ASSERT_EQUAL(bad, 0);
    char ops[256];
    plan_ops(p1, ops, sizeof ops);
    if (strcmp(ops, want_ops) != 0)
        printf("\n  %s: plan ops '%s', want '%s'", what, ops, want_ops);
    CU_ASSERT_STRING_EQUAL(ops, want_ops);
    const char *sum = stage_summary(p1, "fold_batchnorm");
    if (!strstr(sum, want_summary))
        printf("\n  %s: summary '%s', want '%s'", what, sum, want_summary);
    CU_ASSERT_PTR_NOT_NULL(strstr(sum, want_summary));
    CU_ASSERT_PTR_NOT_NULL(strstr(stage_summary(p0, "fold_batchnorm"), "off: LOOM_FOLD_BN=0"));
    loom_plan_destroy(p0);
    loom_plan_destroy(p1);
    loom_graph_destroy(g);
    free(y0);
    free(y1);
    free(ref);
    case_free(k);
}

static const char *folded = "folded 1 BatchNormalization into Conv";

static void test_conv_bn_relu_folds_into_one_node(void)
{
    bn_case k = {.group = 1, .stride = 1, .pad = 1, .with_b = 1, .relu = 1, .c = 4, .m = 6};
    run_case("conv_b_relu", &k, "Conv+Relu", folded);
    k = (bn_case){.group = 1, .stride = 2, .pad = 1, .with_b = 0, .relu = 1, .c = 4, .m = 6};
    run_case("conv_nob_relu_s2", &k, "Conv+Relu", folded);
    k = (bn_case){.group = 1, .stride = 1, .pad = 0, .with_b = 1, .relu = 0, .c = 3, .m = 5};
    run_case("conv_b", &k, "Conv", folded);
}

static void test_grouped_and_depthwise_conv_fold(void)
{
    bn_case k = {.group = 2, .stride = 1, .pad = 1, .with_b = 1, .relu = 1, .c = 4, .m = 6};
    run_case("group2_b", &k, "Conv+Relu", folded);
    k = (bn_case){.group = 2, .stride = 2, .pad = 1, .with_b = 0, .relu = 0, .c = 6, .m = 4};
    run_case("group2_nob", &k, "Conv", folded);
    k = (bn_case){.group = 8, .stride = 1, .pad = 1, .with_b = 0, .relu = 1, .c = 8, .m = 8};
    run_case("depthwise", &k, "Conv+Relu", folded);
    k = (bn_case){.group = 4, .stride = 2, .pad = 1, .with_b = 1, .relu = 1, .c = 4, .m = 8};
    run_case("depthwise_x2", &k, "Conv+Relu", folded);
}

static void test_conv_transpose_folds(void)
{
    bn_case k = {.transpose = 1, .group = 1, .stride = 2, .pad = 0, .with_b = 1, .relu = 1,
                 .c = 4, .m = 6};
    run_case("tconv_b", &k, "ConvTranspose Relu", "into ConvTranspose");
    k = (bn_case){.transpose = 1, .group = 2, .stride = 2, .pad = 1, .with_b = 0, .relu = 0,
                  .c = 4, .m = 6};
    run_case("tconv_group2_nob", &k, "ConvTranspose", "folded 0 BatchNormalization into Conv, 1");
}

static void test_what_must_stay_is_left_alone(void)
{
    bn_case k = {.group = 1, .stride = 1, .pad = 1, .with_b = 1, .relu = 1, .c = 4, .m = 6,
                 .extra_reader = 1};
    run_case("second_reader", &k, "Conv Neg BatchNormalization Relu", "nothing to fold");
    k = (bn_case){.group = 1, .stride = 1, .pad = 1, .with_b = 1, .relu = 1, .c = 4, .m = 6,
                  .conv_output = 1};
    run_case("conv_is_output", &k, "Conv BatchNormalization Relu", "nothing to fold");
    k = (bn_case){.group = 2, .stride = 1, .pad = 1, .with_b = 1, .relu = 1, .c = 4, .m = 6,
                  .stats_input = 1};
    run_case("stats_not_constant", &k, "Conv BatchNormalization Relu", "nothing to fold");
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"conv_bn_relu_folds_into_one_node", test_conv_bn_relu_folds_into_one_node},
        {"grouped_and_depthwise_conv_fold", test_grouped_and_depthwise_conv_fold},
        {"conv_transpose_folds", test_conv_transpose_folds},
        {"what_must_stay_is_left_alone", test_what_must_stay_is_left_alone},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"fold_batchnorm", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
