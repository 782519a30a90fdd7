/*
 * Operators beyond elementwise maps, by family, through the public API: conv (ConvTranspose),
 * resize (Resize), layout (Pad, Tile), linalg (Einsum), normalization (InstanceNormalization),
 * activations (LogSoftmax, PRelu), indexing (TopK, ScatterElements, GatherElements), reductions
 * (ArgMax, ArgMin, ReduceMin, ReduceProd) and recurrent (LSTM, GRU); the registry of each family
 * is graph/ops_<family>.c, its CPU kernels backends/cpu/kernels_<family>.c. Each op is built
 * with loom_graph_op, planned strictly on the CPU and run, and its outputs compared with naive
 * reference loops written here from the ONNX opset-18 specification (never with the library's
 * kernels). Also: bad inputs give clear errors, and
 * every node's canonical attributes infer to themselves.
 *
 * Run all tests: ./test_ops_layers; only tests whose name contains WORD: ./test_ops_layers WORD.
 */
#include <loom/graph.h>
#include <loom/runtime.h>

#include "../graph/graph_internal.h"
#include "test_support.h"

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOV LOOM_NO_VALUE

/* Every test starts the shared generator (test_support.h) from the same seed. */
static void rng_reset(void)
{
    rng_seed(0x9E3779B97F4A7C15ull);
}

#define I64S(...) (const int64_t[]){__VA_ARGS__}, sizeof((const int64_t[]){__VA_ARGS__}) / 8

/* ---- one graph, one node (the case itself: tc in test_support.h) ------------------------- */

static loom_value tc_i64(tc *c, const int64_t *v, size_t n)
{
    int64_t *p = tc_buf(c, n * sizeof *p);
    memcpy(p, v, n * sizeof *p);
    return loom_constant(c->g, NULL, I64, 1, (const int64_t[]){(int64_t)n}, p);
}

static int same_attr(const loom_attr *a, const loom_attr *b)
{
    if (a->kind != b->kind || strcmp(a->name, b->name) != 0)
        return 0;
    switch (a->kind) {
    case LOOM_ATTR_INT: return a->i == b->i;
    case LOOM_ATTR_FLOAT: return a->f == b->f || (isnan(a->f) && isnan(b->f));
    case LOOM_ATTR_STRING: return strcmp(a->s, b->s) == 0;
    case LOOM_ATTR_INTS:
        return a->count == b->count &&
               (!a->count || !memcmp(a->ints, b->ints, a->count * sizeof *a->ints));
    case LOOM_ATTR_FLOATS:
        return a->count == b->count &&
               (!a->count || !memcmp(a->floats, b->floats, a->count * sizeof(float)));
    }
    return 0;
}

/* Add the node; on success check that its canonical attributes infer to themselves (a second
 * node, built from them, has the same attributes and outputs), then mark its outputs. */
static loom_status tc_node_canon(tc *c, const char *op, const loom_value *ins, size_t n_ins,
                           const loom_attr *attrs, size_t n_attrs, size_t n_outs)
{
    loom_value outs[TC_MAX];
    loom_status st = loom_graph_op(c->g, op, NULL, ins, n_ins, attrs, n_attrs, outs, n_outs);
    if (st != LOOM_OK)
        return st;
    const graph_node *node = &c->g->nodes[c->g->n_nodes - 1];
    /* A second graph with the same inputs (constants copied) takes the canonical node. */
    loom_graph *g2 = loom_graph_create("reinfer");
    loom_value in2[TC_MAX], again[TC_MAX];
    for (uint32_t i = 0; i < node->n_inputs && i < TC_MAX; i++) {
        loom_value v = node->inputs[i];
        if (v == LOOM_NO_VALUE) {
            in2[i] = LOOM_NO_VALUE;
            continue;
        }
        const graph_value *val = &c->g->values[v];
        char name[16];
        snprintf(name, sizeof name, "i%u", i);
        in2[i] = val->kind == GRAPH_VALUE_CONSTANT
                     ? loom_constant(g2, NULL, val->desc.dtype, val->desc.rank, val->desc.dims,
                                     val->data)
                     : loom_input(g2, name, val->desc.dtype, val->desc.rank, val->desc.dims);
    }
    st = loom_graph_op(g2, op, NULL, in2, node->n_inputs, node->attrs.items, node->attrs.count,
                       again, n_outs);
    CU_ASSERT_EQUAL(st, LOOM_OK);
    if (st == LOOM_OK && g2->n_nodes == 1) {
        const graph_node *b = &g2->nodes[0];
        int same = node->attrs.count == b->attrs.count;
        for (size_t k = 0; same && k < node->attrs.count; k++) {
            const loom_attr *x = loom_attr_list_get(&b->attrs, node->attrs.items[k].name);
            same = x && same_attr(&node->attrs.items[k], x);
        }
        for (size_t o = 0; same && o < n_outs; o++)
            same = !memcmp(&c->g->values[node->outputs[o]].desc,
                           &g2->values[b->outputs[o]].desc, sizeof(loom_tensor_desc));
        if (!same)
            fprintf(stderr, "\n    %s: canonical attributes do not re-infer to themselves\n", op);
        CU_ASSERT(same);
    } else if (st != LOOM_OK) {
        fprintf(stderr, "\n    %s: re-inference failed: %s\n", op, loom_last_error());
    }
    loom_graph_destroy(g2);
    for (size_t o = 0; o < n_outs; o++)
        loom_output(c->g, outs[o], NULL);
    return LOOM_OK;
}

/* Build + run must succeed; otherwise print why and fail the test at LINE. */
static int tc_ok(tc *c, loom_status built, int line)
{
    loom_status st = built == LOOM_OK ? tc_run_status(c, line, 1) : built;
    if (st != LOOM_OK)
        fprintf(stderr, "\n    line %d: %s: %s\n", line, loom_status_name(st), loom_last_error());
    CU_assertImplementation(st == LOOM_OK, (unsigned)line, "node builds, plans and runs",
                            __FILE__, "", CU_FALSE);
    return st == LOOM_OK;
}

/* Output O has dtype DT, shape WANT and values within ATOL + RTOL |ref| of REF: one assertion
 * (the shape, when it is wrong; the values otherwise). */
static int check_out_once(tc *c, size_t o, loom_dtype dt, shp want, const double *ref,
                          double atol, double rtol, int line)
{
    const loom_tensor *t = tc_output(c, o);
    int ok = t && loom_tensor_dtype(t) == dt && loom_tensor_rank(t) == want.rank;
    int64_t dims[LOOM_MAX_RANK];
    if (ok) {
        loom_tensor_dims(t, dims);
        ok = !memcmp(dims, want.d, want.rank * sizeof *dims);
    }
    if (!ok) {
        fprintf(stderr, "\n    line %d: output %zu has the wrong dtype or shape\n", line, o);
        CU_assertImplementation(CU_FALSE, (unsigned)line, "output shape", __FILE__, "", CU_FALSE);
        return 0;
    }
    int64_t n = numel(want);
    int64_t bad = count_mismatches(n ? loom_tensor_data(t) : NULL, dt, n, ref, atol, rtol, line);
    CU_assertImplementation(bad == 0, (unsigned)line, "output values match the reference",
                            __FILE__, "", CU_FALSE);
    return bad == 0;
}

#define CHECK(c, o, dt, want, ref, atol) check_out_once(c, o, dt, want, ref, atol, 1e-4, __LINE__)
#define RUN_OK(c, built)                                                                           \
    do {                                                                                           \
        if (!tc_ok(c, built, __LINE__)) {                                                          \
            tc_free(c);                                                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* The node must be refused while building with STATUS and a message containing WANT. */
static void expect_refused(tc *c, loom_status got, loom_status status, const char *want,
                           int line)
{
    const char *msg = loom_last_error();
    int ok = got == status && msg && strstr(msg, want);
    if (!ok)
        fprintf(stderr, "\n    line %d: expected %s containing \"%s\", got %s: %s\n", line,
                loom_status_name(status), want, loom_status_name(got), msg ? msg : "(none)");
    CU_assertImplementation(ok, (unsigned)line, "clear build error", __FILE__, "", CU_FALSE);
    tc_free(c);
}
#define EXPECT_ERR(c, built, status, want) expect_refused(c, built, status, want, __LINE__)

/* ============================================================================================
 * ConvTranspose
 * ============================================================================================ */

typedef struct ct_case {
    shp x, w;
    int64_t group;
    int64_t strides[2], dil[2], pads[4], opad[2], oshape[2];
    int has_oshape, bias;
    const char *auto_pad;
} ct_case;

static void ct_check(const ct_case *cs, int line)
{
    tc c;
    tc_open(&c, "layers_test");
    const uint32_t s = cs->x.rank - 2;
    float *x = tc_rand(&c, cs->x, -1, 1), *w = tc_rand(&c, cs->w, -1, 1);
    const int64_t m = cs->w.d[1] * cs->group;
    float *b = tc_rand(&c, SHP(m), -1, 1);
    loom_value ins[3] = {tc_data(&c, 0, F32, cs->x, x), tc_data(&c, 1, F32, cs->w, w),
                         cs->bias ? tc_data(&c, 1, F32, SHP(m), b) : NOV};
    loom_attr at[8];
    size_t na = 0;
    at[na++] = loom_attr_int("group", cs->group);
    at[na++] = loom_attr_ints("strides", s, cs->strides);
    at[na++] = loom_attr_ints("dilations", s, cs->dil);
    at[na++] = loom_attr_ints("output_padding", s, cs->opad);
    if (cs->auto_pad)
        at[na++] = loom_attr_string("auto_pad", cs->auto_pad);
    else
        at[na++] = loom_attr_ints("pads", 2 * s, cs->pads);
    if (cs->has_oshape)
        at[na++] = loom_attr_ints("output_shape", s, cs->oshape);
    /* Expected output size and pads, from the spec. */
    int64_t pb[2], out[2];
    for (uint32_t i = 0; i < s; i++) {
        int64_t in = cs->x.d[2 + i], k = cs->w.d[2 + i];
        int64_t natural = cs->strides[i] * (in - 1) + cs->opad[i] + (k - 1) * cs->dil[i] + 1;
        int upper = cs->auto_pad && !strcmp(cs->auto_pad, "SAME_UPPER");
        if (cs->has_oshape || cs->auto_pad) {
            out[i] = cs->has_oshape ? cs->oshape[i] : in * cs->strides[i];
            int64_t total = natural - out[i];
            int64_t half = (int64_t)floor(total / 2.0);
            pb[i] = upper ? half : total - half;
        } else {
            pb[i] = cs->pads[i];
            out[i] = natural - cs->pads[i] - cs->pads[s + i];
        }
    }
    shp ys = cs->x;
    ys.d[1] = m;
    for (uint32_t i = 0; i < s; i++)
        ys.d[2 + i] = out[i];
    RUN_OK(&c, tc_node_canon(&c, "ConvTranspose", ins, 3, at, na, 1));
    double *ref = tc_dbuf(&c, numel(ys));
    const int64_t cg = cs->x.d[1] / cs->group, mg = cs->w.d[1];
    const int64_t kh = s == 2 ? cs->w.d[2] : 1, kw = cs->w.d[1 + s];
    const int64_t ih = s == 2 ? cs->x.d[2] : 1, iw = cs->x.d[1 + s];
    const int64_t oh = s == 2 ? out[0] : 1, ow = out[s - 1];
    const int64_t sh = s == 2 ? cs->strides[0] : 1, sw = cs->strides[s - 1];
    const int64_t dh = s == 2 ? cs->dil[0] : 1, dw = cs->dil[s - 1];
    const int64_t ph = s == 2 ? pb[0] : 0, pw = pb[s - 1];
    for (int64_t n = 0; n < cs->x.d[0]; n++)
        for (int64_t oc = 0; oc < m; oc++) {
            const int64_t g = oc / mg, mo = oc % mg;
            for (int64_t i = 0; i < oh * ow; i++)
                ref[(n * m + oc) * oh * ow + i] = cs->bias ? b[oc] : 0.0;
            for (int64_t ci = 0; ci < cg; ci++) {
                const int64_t ch = g * cg + ci;
                for (int64_t y0 = 0; y0 < ih; y0++)
                    for (int64_t x0 = 0; x0 < iw; x0++)
                        for (int64_t a = 0; a < kh; a++)
                            for (int64_t bb = 0; bb < kw; bb++) {
                                int64_t o0 = y0 * sh + a * dh - ph, o1 = x0 * sw + bb * dw - pw;
                                if (o0 < 0 || o0 >= oh || o1 < 0 || o1 >= ow)
                                    continue;
                                ref[((n * m + oc) * oh + o0) * ow + o1] +=
                                    (double)x[((n * cs->x.d[1] + ch) * ih + y0) * iw + x0] *
                                    w[((ch * mg + mo) * kh + a) * kw + bb];
                            }
            }
        }
    check_out_once(&c, 0, F32, ys, ref, 1e-4, 1e-4, line);
    tc_free(&c);
}

static void test_conv_transpose_matches_reference(void)
{
    const ct_case cases[] = {
        /* 1-D: strides, dilation, asymmetric pads, output_padding, bias */
        {SHP(2, 3, 5), SHP(3, 4, 3), 1, {2}, {2}, {1, 0}, {1}, {0}, 0, 1, NULL},
        /* 2-D, groups, odd sizes */
        {SHP(1, 4, 5, 3), SHP(4, 3, 3, 2), 2, {2, 3}, {1, 1}, {1, 0, 0, 2}, {0, 1}, {0}, 0, 1, NULL},
        /* output_shape larger than the natural size (negative end pads) */
        {SHP(1, 1, 3, 3), SHP(1, 2, 3, 3), 1, {3, 2}, {1, 1}, {0}, {0, 0}, {10, 8}, 1, 0, NULL},
        /* auto_pad SAME_UPPER and SAME_LOWER */
        {SHP(1, 2, 3, 4), SHP(2, 2, 3, 3), 1, {2, 2}, {1, 1}, {0}, {0, 0}, {0}, 0, 0, "SAME_UPPER"},
        {SHP(1, 2, 3, 4), SHP(2, 2, 3, 3), 1, {2, 2}, {1, 1}, {0}, {0, 0}, {0}, 0, 1, "SAME_LOWER"},
        /* a large enough 2-D one to split over threads */
        {SHP(2, 8, 17, 19), SHP(8, 6, 4, 4), 1, {2, 2}, {1, 1}, {1, 1, 1, 1}, {0, 0}, {0}, 0, 1, NULL},
        /* empty batch */
        {SHP(0, 2, 3, 3), SHP(2, 2, 2, 2), 1, {1, 1}, {1, 1}, {0, 0, 0, 0}, {0, 0}, {0}, 0, 1, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ct_check(&cases[i], __LINE__ + (int)i);
}

static void test_conv_transpose_rejects_bad_attributes(void)
{
    tc c;
    tc_open(&c, "layers_test");
    float *x = tc_rand(&c, SHP(1, 2, 3, 3), 0, 1), *w = tc_rand(&c, SHP(2, 1, 2, 2), 0, 1);
    loom_value ins[2] = {tc_data(&c, 0, F32, SHP(1, 2, 3, 3), x), tc_data(&c, 1, F32, SHP(2, 1, 2, 2), w)};
    loom_attr at[] = {loom_attr_ints("pads", 3, (const int64_t[]){0, 0, 0})};
    EXPECT_ERR(&c, tc_node_canon(&c, "ConvTranspose", ins, 2, at, 1, 1), LOOM_ERR_INVALID_ARGUMENT,
               "pads must have 4 values, got 3");
    tc_open(&c, "layers_test");
    x = tc_rand(&c, SHP(1, 3, 3, 3), 0, 1);
    w = tc_rand(&c, SHP(2, 1, 2, 2), 0, 1);
    loom_value ins2[2] = {tc_data(&c, 0, F32, SHP(1, 3, 3, 3), x), tc_data(&c, 1, F32, SHP(2, 1, 2, 2), w)};
    EXPECT_ERR(&c, tc_node_canon(&c, "ConvTranspose", ins2, 2, NULL, 0, 1), LOOM_ERR_INVALID_ARGUMENT,
               "channels");
}

/* ============================================================================================
 * Resize
 * ============================================================================================ */

/* Source coordinate per the spec; LR is the resized length as the reference computes it. */
static double ref_coord(const char *ctm, double o, double scale, double in, double lr)
{
    if (!strcmp(ctm, "align_corners"))
        return lr == 1.0 ? 0.0 : o * (in - 1) / (lr - 1);
    if (!strcmp(ctm, "asymmetric"))
        return o / scale;
    if (!strcmp(ctm, "pytorch_half_pixel"))
        return lr > 1.0 ? (o + 0.5) / scale - 0.5 : 0.0;
    if (!strcmp(ctm, "tf_half_pixel_for_nn"))
        return (o + 0.5) / scale;
    return (o + 0.5) / scale - 0.5;
}

static int64_t clampi(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* One resize reference: X of shape XS to YS; SCALE per axis (out/in when sizes were given). */
static void ref_resize(const float *x, shp xs, shp ys, const double *scale, int linear,
                       const char *ctm, const char *nmode, double *ref)
{
    for (int64_t f = 0; f < numel(ys); f++) {
        int64_t o[LOOM_MAX_RANK], lo[LOOM_MAX_RANK], hi[LOOM_MAX_RANK];
        double w[LOOM_MAX_RANK];
        unravel(f, ys, o);
        for (uint32_t d = 0; d < xs.rank; d++) {
            double c = ref_coord(ctm, (double)o[d], scale[d], (double)xs.d[d],
                                 scale[d] * (double)xs.d[d]);
            double fl = floor(c), r = c - fl;
            if (linear) {
                lo[d] = clampi((int64_t)fl, 0, xs.d[d] - 1);
                hi[d] = clampi((int64_t)fl + 1, 0, xs.d[d] - 1);
                w[d] = r;
            } else {
                int64_t i = (int64_t)fl;
                if (r != 0.0) {
                    if (!strcmp(nmode, "ceil") || (!strcmp(nmode, "round_prefer_floor") && r > 0.5) ||
                        (!strcmp(nmode, "round_prefer_ceil") && r >= 0.5))
                        i++;
                }
                lo[d] = hi[d] = clampi(i, 0, xs.d[d] - 1);
                w[d] = 0.0;
            }
        }
        double acc = 0.0;
        for (int corner = 0; corner < (1 << xs.rank); corner++) {
            double wt = 1.0;
            int64_t idx[LOOM_MAX_RANK];
            for (uint32_t d = 0; d < xs.rank; d++) {
                int up = (corner >> d) & 1;
                wt *= up ? w[d] : 1.0 - w[d];
                idx[d] = up ? hi[d] : lo[d];
            }
            if (wt != 0.0)
                acc += wt * x[ravel(xs, idx)];
        }
        ref[f] = acc;
    }
}

typedef struct rs_case {
    shp x;
    int linear;
    const char *ctm, *nmode;
    int use_sizes;
    float scales[4];
    int64_t sizes[4];
} rs_case;

static void test_resize_matches_reference(void)
{
    const rs_case cases[] = {
        {SHP(1, 2, 2, 3), 0, "half_pixel", "round_prefer_floor", 0, {1, 1, 2, 3}, {0}},
        {SHP(1, 1, 3, 5), 0, "asymmetric", "floor", 0, {1, 1, 1.5f, 0.6f}, {0}},
        {SHP(1, 1, 4, 4), 0, "align_corners", "ceil", 1, {0}, {1, 1, 7, 3}},
        {SHP(2, 1, 3, 4), 0, "half_pixel", "round_prefer_ceil", 1, {0}, {2, 1, 5, 9}},
        {SHP(1, 1, 5, 4), 0, "tf_half_pixel_for_nn", "round_prefer_floor", 1, {0}, {1, 1, 3, 2}},
        {SHP(1, 2, 4, 4), 1, "half_pixel", "", 0, {1, 1, 2, 2}, {0}},
        {SHP(1, 1, 5, 7), 1, "half_pixel", "", 1, {0}, {1, 1, 3, 4}},
        {SHP(1, 1, 5, 7), 1, "align_corners", "", 1, {0}, {1, 1, 9, 2}},
        {SHP(1, 3, 5, 7), 1, "pytorch_half_pixel", "", 1, {0}, {1, 3, 1, 4}},
        {SHP(1, 1, 4, 3), 1, "asymmetric", "", 0, {1, 1, 0.5f, 2.5f}, {0}},
        {SHP(2, 3, 7), 1, "half_pixel", "", 0, {1, 1, 1.5f}, {0}},  /* 1-D linear */
        {SHP(2, 0, 3, 3), 1, "half_pixel", "", 0, {1, 1, 2, 2}, {0}}, /* empty */
        {SHP(3, 7), 0, "half_pixel", "round_prefer_floor", 1, {0}, {6, 0}}, /* to empty */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const rs_case *cs = &cases[i];
        tc c;
        tc_open(&c, "layers_test");
        float *x = tc_rand(&c, cs->x, -2, 2);
        const uint32_t r = cs->x.rank;
        loom_value ins[4] = {tc_data(&c, 0, F32, cs->x, x), NOV, NOV, NOV};
        double scale[4];
        shp ys = cs->x;
        if (cs->use_sizes) {
            ins[3] = tc_i64(&c, cs->sizes, r);
            for (uint32_t d = 0; d < r; d++) {
                ys.d[d] = cs->sizes[d];
                scale[d] = (double)cs->sizes[d] / (double)cs->x.d[d];
            }
        } else {
            float *sc = tc_buf(&c, r * sizeof(float));
            memcpy(sc, cs->scales, r * sizeof(float));
            ins[2] = tc_data(&c, 1, F32, SHP(r), sc);
            for (uint32_t d = 0; d < r; d++) {
                ys.d[d] = (int64_t)floor((double)cs->scales[d] * (double)cs->x.d[d]);
                scale[d] = cs->scales[d];
            }
        }
        loom_attr at[3] = {loom_attr_string("mode", cs->linear ? "linear" : "nearest"),
                           loom_attr_string("coordinate_transformation_mode", cs->ctm),
                           loom_attr_string("nearest_mode",
                                            cs->linear ? "round_prefer_floor" : cs->nmode)};
        RUN_OK(&c, tc_node_canon(&c, "Resize", ins, 4, at, 3, 1));
        double *ref = tc_dbuf(&c, numel(ys));
        ref_resize(x, cs->x, ys, scale, cs->linear, cs->ctm, cs->nmode, ref);
        check_out_once(&c, 0, F32, ys, ref, 1e-5, 1e-5, __LINE__ + (int)i);
        tc_free(&c);
    }
}

static void test_resize_nearest_moves_integers(void)
{
    tc c;
    tc_open(&c, "layers_test");
    int64_t *x = tc_buf(&c, 6 * sizeof *x);
    for (int i = 0; i < 6; i++)
        x[i] = (int64_t)1 << (40 + i);
    loom_value ins[4] = {tc_data(&c, 0, I64, SHP(2, 3), x), NOV, NOV, tc_i64(&c, I64S(4, 2))};
    RUN_OK(&c, tc_node_canon(&c, "Resize", ins, 4, NULL, 0, 1));
    double ref[8];
    /* half_pixel, round_prefer_floor: rows 0,0,1,1 (x=-0.25,0.25,0.75,1.25 -> 0,0,1,1) and
     * columns (o+0.5)*1.5-0.5 = 0.25, 1.75 -> 0, 2 */
    const int rows[4] = {0, 0, 1, 1}, cols[2] = {0, 2};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            ref[i * 2 + j] = (double)x[rows[i] * 3 + cols[j]];
    CHECK(&c, 0, I64, SHP(4, 2), ref, 0);
    tc_free(&c);
}

static void test_resize_rejects_unsupported_and_bad_inputs(void)
{
    tc c;
    tc_open(&c, "layers_test");
    float *x = tc_rand(&c, SHP(1, 1, 2, 2), 0, 1);
    float *sc = tc_buf(&c, 4 * sizeof(float));
    for (int i = 0; i < 4; i++)
        sc[i] = 2.0f;
    loom_value ins[3] = {tc_data(&c, 0, F32, SHP(1, 1, 2, 2), x), NOV, tc_data(&c, 1, F32, SHP(4), sc)};
    loom_attr bicubic = loom_attr_string("mode", "bicubic");
    EXPECT_ERR(&c, tc_node_canon(&c, "Resize", ins, 3, &bicubic, 1, 1), LOOM_ERR_INVALID_ARGUMENT,
               "mode is 'bicubic'");
    tc_open(&c, "layers_test");
    int32_t *xi = tc_buf(&c, 4 * sizeof *xi);
    memset(xi, 0, 4 * sizeof *xi);
    sc = tc_buf(&c, 4 * sizeof(float));
    for (int i = 0; i < 4; i++)
        sc[i] = 2.0f;
    loom_value insi[3] = {tc_data(&c, 0, I32, SHP(1, 1, 2, 2), xi), NOV,
                          tc_data(&c, 1, F32, SHP(4), sc)};
    loom_attr cubic = loom_attr_string("mode", "cubic");
    EXPECT_ERR(&c, tc_node_canon(&c, "Resize", insi, 3, &cubic, 1, 1), LOOM_ERR_UNSUPPORTED,
               "cubic mode needs float32 X, not int32");
    tc_open(&c, "layers_test");
    x = tc_rand(&c, SHP(1, 1, 2, 2), 0, 1);
    sc = tc_buf(&c, 4 * sizeof(float));
    for (int i = 0; i < 4; i++)
        sc[i] = 2.0f;
    loom_value insx[3] = {tc_data(&c, 0, F32, SHP(1, 1, 2, 2), x), NOV,
                          tc_data(&c, 1, F32, SHP(4), sc)};
    loom_attr bad_ex[2] = {loom_attr_string("mode", "cubic"), loom_attr_int("exclude_outside", 2)};
    EXPECT_ERR(&c, tc_node_canon(&c, "Resize", insx, 3, bad_ex, 2, 1), LOOM_ERR_INVALID_ARGUMENT,
               "exclude_outside must be 0 or 1, got 2");
    tc_open(&c, "layers_test");
    x = tc_rand(&c, SHP(1, 1, 2, 2), 0, 1);
    loom_value ins2[4] = {tc_data(&c, 0, F32, SHP(1, 1, 2, 2), x), NOV, NOV, tc_i64(&c, I64S(4, 4))};
    EXPECT_ERR(&c, tc_node_canon(&c, "Resize", ins2, 4, NULL, 0, 1), LOOM_ERR_INVALID_ARGUMENT,
               "sizes must have 4 values, got 2");
    tc_open(&c, "layers_test");
    x = tc_rand(&c, SHP(1, 1, 2, 2), 0, 1);
    loom_value ins3[1] = {tc_data(&c, 0, F32, SHP(1, 1, 2, 2), x)};
    EXPECT_ERR(&c, tc_node_canon(&c, "Resize", ins3, 1, NULL, 0, 1), LOOM_ERR_INVALID_ARGUMENT,
               "one of scales");
    tc_open(&c, "layers_test");
    x = tc_rand(&c, SHP(1, 1, 2, 2), 0, 1);
    loom_value ins4[4] = {tc_data(&c, 0, F32, SHP(1, 1, 2, 2), x), NOV, NOV,
                          tc_i64(&c, I64S(1, 1, 4, 4))};
    loom_attr crop = loom_attr_string("coordinate_transformation_mode", "tf_crop_and_resize");
    EXPECT_ERR(&c, tc_node_canon(&c, "Resize", ins4, 4, &crop, 1, 1), LOOM_ERR_INVALID_ARGUMENT,
               "tf_crop_and_resize needs roi (input 1)");
    tc_open(&c, "layers_test");
    x = tc_rand(&c, SHP(1, 1, 2, 2), 0, 1);
    float *roi = tc_buf(&c, 4 * sizeof(float));
    for (int i = 0; i < 4; i++)
        roi[i] = 0.5f;
    loom_value ins5[4] = {tc_data(&c, 0, F32, SHP(1, 1, 2, 2), x), tc_data(&c, 1, F32, SHP(4), roi),
                          NOV, tc_i64(&c, I64S(1, 1, 4, 4))};
    EXPECT_ERR(&c, tc_node_canon(&c, "Resize", ins5, 4, &crop, 1, 1), LOOM_ERR_INVALID_ARGUMENT,
               "roi must have 8 values (a start and an end per axis), got 4");
}

/* Coefficients and (clamped) source indices of one cubic coordinate C along an axis of IN
 * elements, as the specification's reference computes them: the 4 integers nearest C (ties to
 * the lower one), the ratio C - floor(C) (1 when C is integral), Keys' kernel with A; with
 * EXCLUDE, taps outside the axis get weight 0 and the rest are renormalised. */
static void ref_cubic_taps(double c, int64_t in, double a, int exclude, int64_t idx[4],
                           double w[4])
{
    int64_t cand[8];
    const int64_t fl = (int64_t)floor(c);
    for (int k = 0; k < 8; k++)
        cand[k] = fl - 3 + k;
    /* selection sort by (distance, index) */
    for (int i = 0; i < 8; i++)
        for (int j = i + 1; j < 8; j++) {
            double di = fabs(c - (double)cand[i]), dj = fabs(c - (double)cand[j]);
            if (dj < di || (dj == di && cand[j] < cand[i])) {
                int64_t t = cand[i];
                cand[i] = cand[j];
                cand[j] = t;
            }
        }
    for (int i = 0; i < 4; i++) /* the chosen four, ascending */
        for (int j = i + 1; j < 4; j++)
            if (cand[j] < cand[i]) {
                int64_t t = cand[i];
                cand[i] = cand[j];
                cand[j] = t;
            }
    const double r = c == floor(c) ? 1.0 : c - floor(c), q = 1.0 - r;
    w[0] = ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a;
    w[1] = ((a + 2) * r - (a + 3)) * r * r + 1;
    w[2] = ((a + 2) * q - (a + 3)) * q * q + 1;
    w[3] = ((a * (q + 1) - 5 * a) * (q + 1) + 8 * a) * (q + 1) - 4 * a;
    double sum = 0.0;
    for (int k = 0; k < 4; k++) {
        if (exclude && (cand[k] < 0 || cand[k] >= in))
            w[k] = 0.0;
        sum += w[k];
        idx[k] = clampi(cand[k], 0, in - 1);
    }
    if (exclude)
        for (int k = 0; k < 4; k++)
            w[k] /= sum;
}

/* The spec's source coordinate with the tf_crop_and_resize and one-element cases: LR is
 * scale * in, as the reference computes the resized length; START, END the axis's roi. */
static double ref_coord_full(const char *ctm, double o, double scale, double in, double lr,
                             double start, double end)
{
    if (!strcmp(ctm, "tf_crop_and_resize"))
        return lr == 1.0 ? (end - start) * (in - 1) / 2 + start * (in - 1)
                         : o * (end - start) * (in - 1) / (lr - 1) + start * (in - 1);
    if (!strcmp(ctm, "pytorch_half_pixel") && lr == 1.0)
        return -0.5;
    return ref_coord(ctm, o, scale, in, lr);
}

typedef struct rs_full_case {
    shp x;
    const char *mode, *ctm;
    int use_sizes;
    float scales[4];
    int64_t sizes[4];
    float a;
    int exclude;
    float roi[8];
    float extrapolation;
} rs_full_case;

/* Cubic (coefficient, exclude_outside) and tf_crop_and_resize (all three modes) against the
 * reference written from the specification, one output element at a time. */
static void test_resize_cubic_and_crop_match_reference(void)
{
    const rs_full_case cases[] = {
        {SHP(1, 2, 5, 7), "cubic", "half_pixel", 0, {1, 1, 1.6f, 0.6f}, {0}, -0.75f, 0, {0}, 0},
        {SHP(1, 1, 4, 4), "cubic", "half_pixel", 1, {0}, {1, 1, 3, 3}, -0.75f, 0, {0}, 0},
        {SHP(1, 1, 5, 6), "cubic", "align_corners", 1, {0}, {1, 1, 9, 4}, -0.5f, 1, {0}, 0},
        {SHP(1, 1, 4, 3), "cubic", "asymmetric", 0, {1, 1, 2, 1.7f}, {0}, -0.6f, 0, {0}, 0},
        {SHP(1, 1, 6, 5), "cubic", "half_pixel", 0, {1, 1, 0.5f, 2.2f}, {0}, -0.5f, 1, {0}, 0},
        {SHP(2, 3, 6, 5), "cubic", "pytorch_half_pixel", 1, {0}, {2, 3, 1, 8}, -0.75f, 0, {0}, 0},
        {SHP(3, 4, 5), "cubic", "half_pixel", 1, {0}, {5, 2, 8}, -0.75f, 1, {0}, 0}, /* 3 axes */
        {SHP(9), "cubic", "tf_half_pixel_for_nn", 0, {0.7f}, {0}, -0.75f, 0, {0}, 0}, /* 1-D */
        {SHP(1, 1, 4, 4), "linear", "tf_crop_and_resize", 1, {0}, {1, 1, 3, 3}, 0, 0,
         {0, 0, 0.4f, 0.6f, 1, 1, 0.6f, 0.8f}, 0},
        {SHP(1, 2, 5, 6), "linear", "tf_crop_and_resize", 0, {1, 1, 1.4f, 0.9f}, {0}, 0, 0,
         {0, 0, -0.2f, 0.3f, 1, 1, 0.9f, 1.3f}, 10.0f}, /* partly outside */
        {SHP(1, 1, 4, 5), "cubic", "tf_crop_and_resize", 1, {0}, {1, 1, 5, 1}, -0.5f, 1,
         {0, 0, -0.1f, 0.2f, 1, 1, 0.8f, 0.6f}, -3.0f},
        {SHP(2, 3, 4, 5), "linear", "tf_crop_and_resize", 1, {0}, {2, 4, 4, 3}, 0, 0,
         {0, -0.5f, 0.1f, 0.0f, 1, 1.2f, 0.9f, 1.0f}, 7.0f}, /* an outer axis outside */
        {SHP(1, 1, 5, 5), "nearest", "tf_crop_and_resize", 1, {0}, {1, 1, 4, 6}, 0, 0,
         {0, 0, -0.3f, 0.25f, 1, 1, 0.9f, 1.4f}, 5.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const rs_full_case *cs = &cases[i];
        const int crop = !strcmp(cs->ctm, "tf_crop_and_resize");
        const int cubic = !strcmp(cs->mode, "cubic"), linear = !strcmp(cs->mode, "linear");
        tc c;
        tc_open(&c, "layers_test");
        float *x = tc_rand(&c, cs->x, -2, 2);
        const uint32_t r = cs->x.rank;
        loom_value ins[4] = {tc_data(&c, 0, F32, cs->x, x), NOV, NOV, NOV};
        double scale[4];
        shp ys = cs->x;
        if (cs->use_sizes) {
            ins[3] = tc_i64(&c, cs->sizes, r);
            for (uint32_t d = 0; d < r; d++) {
                ys.d[d] = cs->sizes[d];
                scale[d] = (double)cs->sizes[d] / (double)cs->x.d[d];
            }
        } else {
            float *sc = tc_buf(&c, r * sizeof(float));
            memcpy(sc, cs->scales, r * sizeof(float));
            ins[2] = tc_data(&c, 1, F32, SHP(r), sc);
            for (uint32_t d = 0; d < r; d++) {
                ys.d[d] = (int64_t)floor((double)cs->scales[d] * (double)cs->x.d[d]);
                scale[d] = cs->scales[d];
            }
        }
        if (crop) {
            float *roi = tc_buf(&c, 2 * r * sizeof(float));
            memcpy(roi, cs->roi, 2 * r * sizeof(float));
            ins[1] = tc_data(&c, 1, F32, SHP(2 * r), roi);
        }
        loom_attr at[5] = {loom_attr_string("mode", cs->mode),
                           loom_attr_string("coordinate_transformation_mode", cs->ctm),
                           loom_attr_float("cubic_coeff_a", cs->a),
                           loom_attr_int("exclude_outside", cs->exclude),
                           loom_attr_float("extrapolation_value", cs->extrapolation)};
        RUN_OK(&c, tc_node_canon(&c, "Resize", ins, 4, at, 5, 1));
        double *ref = tc_dbuf(&c, numel(ys));
        for (int64_t f = 0; f < numel(ys); f++) {
            int64_t o[LOOM_MAX_RANK], idx[LOOM_MAX_RANK][4];
            double w[LOOM_MAX_RANK][4];
            int outside = 0;
            unravel(f, ys, o);
            for (uint32_t d = 0; d < r; d++) {
                const double in = (double)cs->x.d[d];
                double cd = ref_coord_full(cs->ctm, (double)o[d], scale[d], in,
                                           scale[d] * in, cs->roi[d],
                                           cs->roi[r + d]);
                if (crop && (cd < 0 || cd > in - 1))
                    outside = 1;
                for (int k = 0; k < 4; k++)
                    idx[d][k] = 0, w[d][k] = 0.0;
                if (cubic) {
                    ref_cubic_taps(cd, cs->x.d[d], cs->a, cs->exclude, idx[d], w[d]);
                } else if (linear) {
                    double fl = floor(cd);
                    idx[d][0] = clampi((int64_t)fl, 0, cs->x.d[d] - 1);
                    idx[d][1] = clampi((int64_t)fl + 1, 0, cs->x.d[d] - 1);
                    w[d][0] = 1.0 - (cd - fl);
                    w[d][1] = cd - fl;
                } else { /* nearest, round_prefer_floor */
                    double fl = floor(cd);
                    idx[d][0] = clampi(cd - fl > 0.5 ? (int64_t)fl + 1 : (int64_t)fl, 0,
                                       cs->x.d[d] - 1);
                    w[d][0] = 1.0;
                }
            }
            if (outside) {
                ref[f] = cs->extrapolation;
                continue;
            }
            double acc = 0.0;
            int64_t combos = 1;
            for (uint32_t d = 0; d < r; d++)
                combos *= 4;
            for (int64_t t = 0; t < combos; t++) {
                double wt = 1.0;
                int64_t src[LOOM_MAX_RANK], rem = t;
                for (uint32_t d = 0; d < r; d++, rem /= 4) {
                    wt *= w[d][rem % 4];
                    src[d] = idx[d][rem % 4];
                }
                if (wt != 0.0)
                    acc += wt * x[ravel(cs->x, src)];
            }
            ref[f] = acc;
        }
        check_out_once(&c, 0, F32, ys, ref, 1e-5, 1e-4, __LINE__ + (int)i);
        tc_free(&c);
    }
}

/* Nearest tf_crop_and_resize on integers: the extrapolation value saturates to the dtype. */
static void test_resize_crop_nearest_fills_integers(void)
{
    tc c;
    tc_open(&c, "layers_test");
    uint8_t *x = tc_buf(&c, 6);
    for (int i = 0; i < 6; i++)
        x[i] = (uint8_t)(10 * (i + 1));
    float *roi = tc_buf(&c, 4 * sizeof(float));
    memcpy(roi, (const float[]){0.0f, -1.0f, 1.0f, 1.0f}, 4 * sizeof(float));
    loom_value ins[4] = {tc_data(&c, 0, U8, SHP(2, 3), x), tc_data(&c, 1, F32, SHP(4), roi), NOV,
                         tc_i64(&c, I64S(2, 3))};
    loom_attr at[2] = {loom_attr_string("coordinate_transformation_mode", "tf_crop_and_resize"),
                       loom_attr_float("extrapolation_value", 300.0f)};
    RUN_OK(&c, tc_node_canon(&c, "Resize", ins, 4, at, 2, 1));
    /* columns: -1*2 + o*(2)*2/2 = -2, 0, 2: the first is outside (255, saturated) */
    const double ref[6] = {255, 10, 30, 255, 40, 60};
    CHECK(&c, 0, U8, SHP(2, 3), ref, 0);
    tc_free(&c);
}

/* ============================================================================================
 * Pad and Tile
 * ============================================================================================ */

static int64_t ref_pad_src(const char *mode, int64_t o, int64_t pb, int64_t n)
{
    int64_t i = o - pb;
    if (i >= 0 && i < n)
        return i;
    if (!strcmp(mode, "constant"))
        return -1;
    if (!strcmp(mode, "edge"))
        return i < 0 ? 0 : n - 1;
    /* reflect, one bounce at a time (numpy's rule) */
    while (i < 0 || i >= n) {
        if (n == 1)
            return 0;
        i = i < 0 ? -i : 2 * (n - 1) - i;
    }
    return i;
}

static void pad_check(loom_dtype dt, shp xs, const char *mode, const int64_t *pads, size_t n_pads,
                      const int64_t *axes, size_t n_axes, double value, int line)
{
    tc c;
    tc_open(&c, "layers_test");
    const int64_t n = numel(xs);
    void *x = tc_buf(&c, (size_t)n * 8);
    for (int64_t i = 0; i < n; i++) {
        if (dt == F32)
            ((float *)x)[i] = rng_f32(-5, 5);
        else if (dt == I32)
            ((int32_t *)x)[i] = (int32_t)rng_int(-1000, 1000);
        else if (dt == U8)
            ((uint8_t *)x)[i] = (uint8_t)rng_int(0, 255);
        else
            ((int64_t *)x)[i] = rng_int(-((int64_t)1 << 60), (int64_t)1 << 60);
    }
    void *v = tc_buf(&c, 8);
    if (dt == F32)
        *(float *)v = (float)value;
    else if (dt == I32)
        *(int32_t *)v = (int32_t)value;
    else if (dt == U8)
        *(uint8_t *)v = (uint8_t)value;
    else
        *(int64_t *)v = (int64_t)value;
    loom_value ins[4] = {tc_data(&c, 0, dt, xs, x), tc_i64(&c, pads, n_pads),
                         value != 0 ? tc_data(&c, 1, dt, SHP(1), v) : NOV,
                         axes ? tc_i64(&c, axes, n_axes) : NOV};
    loom_attr at = loom_attr_string("mode", mode);
    RUN_OK(&c, tc_node_canon(&c, "Pad", ins, axes ? 4 : 3, &at, 1, 1));
    int64_t pb[LOOM_MAX_RANK] = {0}, pe[LOOM_MAX_RANK] = {0};
    size_t na = axes ? n_axes : xs.rank;
    for (size_t k = 0; k < na; k++) {
        int64_t a = axes ? (axes[k] < 0 ? axes[k] + xs.rank : axes[k]) : (int64_t)k;
        pb[a] = pads[k];
        pe[a] = pads[na + k];
    }
    shp ys = xs;
    for (uint32_t d = 0; d < xs.rank; d++)
        ys.d[d] = xs.d[d] + pb[d] + pe[d];
    double *ref = tc_dbuf(&c, numel(ys));
    for (int64_t f = 0; f < numel(ys); f++) {
        int64_t o[LOOM_MAX_RANK], s[LOOM_MAX_RANK];
        int fill = 0;
        unravel(f, ys, o);
        for (uint32_t d = 0; d < xs.rank; d++) {
            s[d] = ref_pad_src(mode, o[d], pb[d], xs.d[d]);
            fill |= s[d] < 0;
        }
        ref[f] = fill ? (dt == U8 ? (double)(uint8_t)value : value)
                      : elem_load(x, dt, ravel(xs, s));
    }
    check_out_once(&c, 0, dt, ys, ref, 0, 0, line);
    tc_free(&c);
}

static void test_pad_modes_match_reference(void)
{
    pad_check(F32, SHP(2, 3, 4), "constant", I64S(0, 1, 2, 1, 0, 3), NULL, 0, 1.5, __LINE__);
    pad_check(F32, SHP(3, 5), "reflect", I64S(2, 4, 2, 3), NULL, 0, 0, __LINE__);
    pad_check(F32, SHP(3, 5), "edge", I64S(3, 1, 0, 6), NULL, 0, 0, __LINE__);
    pad_check(F32, SHP(4, 6), "constant", I64S(-1, 2, 1, -3), NULL, 0, 0, __LINE__); /* crop */
    pad_check(F32, SHP(4, 6), "reflect", I64S(-1, 2, 1, -2), NULL, 0, 0, __LINE__);
    pad_check(I32, SHP(2, 3, 5), "edge", I64S(1, 2, 3, 4), I64S(0, -1), 0, __LINE__);
    pad_check(I64, SHP(3, 3), "constant", I64S(1, 1, 1, 1), NULL, 0, 123456789012.0, __LINE__);
    pad_check(U8, SHP(2, 7), "reflect", I64S(1, 3), I64S(1), 0, __LINE__);
    pad_check(F32, SHP(2, 0, 3), "constant", I64S(0, 2, 1, 1, 1, 0), NULL, 0, -2, __LINE__);
    pad_check(F32, SHP(1, 2), "reflect", I64S(0, 5, 0, 5), NULL, 0, 0, __LINE__); /* bounces */
}

static void test_pad_rejects_bad_pads(void)
{
    tc c;
    tc_open(&c, "layers_test");
    float *x = tc_rand(&c, SHP(2, 3, 4), 0, 1);
    loom_value ins[2] = {tc_data(&c, 0, F32, SHP(2, 3, 4), x), tc_i64(&c, I64S(1, 1, 1, 1))};
    EXPECT_ERR(&c, tc_node_canon(&c, "Pad", ins, 2, NULL, 0, 1), LOOM_ERR_INVALID_ARGUMENT,
               "pads must have 6 values, got 4");
    tc_open(&c, "layers_test");
    x = tc_rand(&c, SHP(2, 0), 0, 1);
    loom_value ins2[2] = {tc_data(&c, 0, F32, SHP(2, 0), x), tc_i64(&c, I64S(0, 1, 0, 1))};
    loom_attr at = loom_attr_string("mode", "edge");
    EXPECT_ERR(&c, tc_node_canon(&c, "Pad", ins2, 2, &at, 1, 1), LOOM_ERR_INVALID_ARGUMENT,
               "cannot pad the empty axis");
    tc_open(&c, "layers_test");
    x = tc_rand(&c, SHP(2, 3), 0, 1);
    loom_value ins3[2] = {tc_data(&c, 0, F32, SHP(2, 3), x), tc_data(&c, 0, I64, SHP(4), x)};
    EXPECT_ERR(&c, tc_node_canon(&c, "Pad", ins3, 2, NULL, 0, 1), LOOM_ERR_UNSUPPORTED,
               "must be a constant");
}

static void test_tile_matches_reference(void)
{
    const struct {
        shp x;
        int64_t rep[4];
        loom_dtype dt;
    } cases[] = {
        {SHP(2, 3), {3, 2}, F32},
        {SHP(1, 3, 1), {2, 1, 5}, I64},
        {SHP(3, 2), {0, 2}, F32},
        {SHP(4), {1}, U8},
        {SHP(2, 0, 2), {2, 3, 1}, I32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc c;
        tc_open(&c, "layers_test");
        shp xs = cases[i].x;
        loom_dtype dt = cases[i].dt;
        size_t es = loom_dtype_size(dt);
        char *x = tc_buf(&c, (size_t)numel(xs) * es);
        for (size_t b = 0; b < (size_t)numel(xs) * es; b++)
            x[b] = (char)rng_int(0, 100);
        loom_value ins[2] = {tc_data(&c, 0, dt, xs, x), tc_i64(&c, cases[i].rep, xs.rank)};
        RUN_OK(&c, tc_node_canon(&c, "Tile", ins, 2, NULL, 0, 1));
        shp ys = xs;
        for (uint32_t d = 0; d < xs.rank; d++)
            ys.d[d] = xs.d[d] * cases[i].rep[d];
        double *ref = tc_dbuf(&c, numel(ys));
        for (int64_t f = 0; f < numel(ys); f++) {
            int64_t o[LOOM_MAX_RANK];
            unravel(f, ys, o);
            for (uint32_t d = 0; d < xs.rank; d++)
                o[d] %= xs.d[d];
            ref[f] = elem_load(x, dt, ravel(xs, o));
        }
        check_out_once(&c, 0, dt, ys, ref, 0, 0, __LINE__ + (int)i);
        tc_free(&c);
    }
    tc c;
    tc_open(&c, "layers_test");
    float *x = tc_rand(&c, SHP(2, 3), 0, 1);
    loom_value ins[2] = {tc_data(&c, 0, F32, SHP(2, 3), x), tc_i64(&c, I64S(2, 2, 2))};
    EXPECT_ERR(&c, tc_node_canon(&c, "Tile", ins, 2, NULL, 0, 1), LOOM_ERR_INVALID_ARGUMENT,
               "repeats must have 2 values");
}

/* ============================================================================================
 * Einsum: the reference walks the whole label space of an explicit, ellipsis-free equation.
 * ============================================================================================ */

static void ref_einsum(const char *eq, const float *const *ops, const shp *shapes, size_t n_ops,
                       double *ref, shp *ys)
{
    char terms[3][16] = {{0}};
    size_t t = 0, at = 0;
    for (const char *p = eq; *p; p++) {
        if (*p == ',' || *p == '-') {
            p += *p == '-';
            t++, at = 0;
            continue;
        }
        terms[t][at++] = *p;
    }
    const char *out = terms[n_ops];
    int64_t size[128] = {0};
    char labels[32];
    size_t nl = 0;
    for (size_t i = 0; i < n_ops; i++)
        for (size_t k = 0; terms[i][k]; k++) {
            unsigned char l = (unsigned char)terms[i][k];
            if (!size[l])
                labels[nl++] = (char)l;
            if (shapes[i].d[k] > size[l])
                size[l] = shapes[i].d[k];
        }
    ys->rank = (uint32_t)strlen(out);
    for (uint32_t k = 0; k < ys->rank; k++)
        ys->d[k] = size[(unsigned char)out[k]];
    for (int64_t f = 0; f < numel(*ys); f++)
        ref[f] = 0;
    int64_t total = 1;
    for (size_t l = 0; l < nl; l++)
        total *= size[(unsigned char)labels[l]];
    for (int64_t f = 0; f < total; f++) {
        int64_t val[128] = {0}, rem = f;
        for (size_t l = nl; l-- > 0;) {
            int64_t s = size[(unsigned char)labels[l]];
            val[(unsigned char)labels[l]] = rem % s;
            rem /= s;
        }
        double v = 1.0;
        for (size_t i = 0; i < n_ops; i++) {
            int64_t idx[LOOM_MAX_RANK];
            for (uint32_t k = 0; k < shapes[i].rank; k++)
                idx[k] = val[(unsigned char)terms[i][k]];
            v *= ops[i][ravel(shapes[i], idx)];
        }
        int64_t oi[LOOM_MAX_RANK];
        for (uint32_t k = 0; k < ys->rank; k++)
            oi[k] = val[(unsigned char)out[k]];
        ref[ravel(*ys, oi)] += v;
    }
}

static void test_einsum_matches_reference(void)
{
    const struct {
        const char *eq;
        shp a, b;
        size_t n;
    } cases[] = {
        {"ij,jk->ik", SHP(5, 7), SHP(7, 3), 2},
        {"bij,bjk->bik", SHP(3, 4, 5), SHP(3, 5, 6), 2},
        {"bhqd,bhkd->bhqk", SHP(2, 3, 5, 4), SHP(2, 3, 7, 4), 2},
        {"ij,kj->ik", SHP(4, 6), SHP(5, 6), 2},
        {"ij,jk->ki", SHP(3, 2), SHP(2, 5), 2},
        {"ik,k->i", SHP(4, 9), SHP(9), 2},
        {"i,i->", SHP(11), SHP(11), 2},
        {"i,j->ij", SHP(3), SHP(4), 2},
        {"ij,ij->ij", SHP(3, 4), SHP(3, 4), 2},
        {"ij,jk->i", SHP(3, 4), SHP(4, 2), 2}, /* k summed in B alone */
        {"ij->ji", SHP(3, 5), SHP(0), 1},
        {"ij->i", SHP(4, 6), SHP(0), 1},
        {"ij->", SHP(4, 6), SHP(0), 1},
        {"ii->i", SHP(5, 5), SHP(0), 1},
        {"bii->bi", SHP(2, 4, 4), SHP(0), 1},
        {"ij,jk->ik", SHP(3, 0), SHP(0, 4), 2}, /* empty contraction: zeros */
        {"ij,jk->ik", SHP(0, 3), SHP(3, 4), 2},
        {"bmk,bkn->bmn", SHP(4, 33, 65), SHP(4, 65, 47), 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc c;
        tc_open(&c, "layers_test");
        shp sh[2] = {cases[i].a, cases[i].b};
        const float *ops[2] = {tc_rand(&c, sh[0], -1, 1), cases[i].n > 1 ? tc_rand(&c, sh[1], -1, 1)
                                                                          : NULL};
        loom_value ins[2] = {tc_data(&c, 0, F32, sh[0], (void *)ops[0]),
                             cases[i].n > 1 ? tc_data(&c, 0, F32, sh[1], (void *)ops[1]) : NOV};
        loom_attr at = loom_attr_string("equation", cases[i].eq);
        RUN_OK(&c, tc_node_canon(&c, "Einsum", ins, cases[i].n, &at, 1, 1));
        shp ys;
        memset(&ys, 0, sizeof ys);
        double *ref = tc_dbuf(&c, 1 << 16);
        ref_einsum(cases[i].eq, ops, sh, cases[i].n, ref, &ys);
        check_out_once(&c, 0, F32, ys, ref, 1e-4, 1e-4, __LINE__ + (int)i);
        tc_free(&c);
    }
}

static void test_einsum_ellipsis_broadcast_and_integers(void)
{
    /* "...ij,...jk->...ik" with batch dims [2, 1] against [3]: numpy broadcasting */
    tc c;
    tc_open(&c, "layers_test");
    shp as = SHP(2, 1, 3, 4), bs = SHP(3, 4, 2);
    float *a = tc_rand(&c, as, -1, 1), *b = tc_rand(&c, bs, -1, 1);
    loom_value ins[2] = {tc_data(&c, 0, F32, as, a), tc_data(&c, 0, F32, bs, b)};
    loom_attr at = loom_attr_string("equation", "...ij,...jk->...ik");
    RUN_OK(&c, tc_node_canon(&c, "Einsum", ins, 2, &at, 1, 1));
    shp ys = SHP(2, 3, 3, 2);
    double *ref = tc_dbuf(&c, numel(ys));
    for (int64_t p = 0; p < 2; p++)
        for (int64_t q = 0; q < 3; q++)
            for (int64_t i = 0; i < 3; i++)
                for (int64_t k = 0; k < 2; k++) {
                    double s = 0;
                    for (int64_t j = 0; j < 4; j++)
                        s += (double)a[(p * 3 + i) * 4 + j] * b[(q * 4 + j) * 2 + k];
                    ref[((p * 3 + q) * 3 + i) * 2 + k] = s;
                }
    CHECK(&c, 0, F32, ys, ref, 1e-5);
    tc_free(&c);

    tc_open(&c, "layers_test");
    int32_t *ia = tc_buf(&c, 12 * 4), *ib = tc_buf(&c, 12 * 4);
    for (int i = 0; i < 12; i++) {
        ia[i] = (int32_t)rng_int(-9, 9);
        ib[i] = (int32_t)rng_int(-9, 9);
    }
    loom_value ins2[2] = {tc_data(&c, 0, I32, SHP(3, 4), ia), tc_data(&c, 0, I32, SHP(4, 3), ib)};
    loom_attr at2 = loom_attr_string("equation", "ij,jk");
    RUN_OK(&c, tc_node_canon(&c, "Einsum", ins2, 2, &at2, 1, 1));
    double ref2[9];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            ref2[i * 3 + k] = 0;
            for (int j = 0; j < 4; j++)
                ref2[i * 3 + k] += ia[i * 4 + j] * ib[j * 3 + k];
        }
    CHECK(&c, 0, I32, SHP(3, 3), ref2, 0);
    tc_free(&c);

    tc_open(&c, "layers_test");
    a = tc_rand(&c, SHP(3, 4), 0, 1);
    b = tc_rand(&c, SHP(5, 3), 0, 1);
    loom_value ins3[2] = {tc_data(&c, 0, F32, SHP(3, 4), a), tc_data(&c, 0, F32, SHP(5, 3), b)};
    loom_attr at3 = loom_attr_string("equation", "ij,jk->ik");
    EXPECT_ERR(&c, tc_node_canon(&c, "Einsum", ins3, 2, &at3, 1, 1), LOOM_ERR_INVALID_ARGUMENT,
               "label 'j' has sizes 4 and 5");
    tc_open(&c, "layers_test");
    a = tc_rand(&c, SHP(3, 4), 0, 1);
    loom_value ins4[1] = {tc_data(&c, 0, F32, SHP(3, 4), a)};
    loom_attr at4 = loom_attr_string("equation", "ij,jk->ik");
    EXPECT_ERR(&c, tc_node_canon(&c, "Einsum", ins4, 1, &at4, 1, 1), LOOM_ERR_INVALID_ARGUMENT,
               "has 2 operands but 1 inputs");
}

/* ============================================================================================
 * InstanceNormalization, LogSoftmax, PRelu
 * ============================================================================================ */

static void test_instance_norm_matches_reference(void)
{
    const shp shapes[] = {SHP(2, 3, 5, 7), SHP(1, 4, 9), SHP(3, 2, 2, 3, 2), SHP(2, 3, 0)};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        tc c;
        tc_open(&c, "layers_test");
        shp xs = shapes[i];
        const int64_t ch = xs.d[1];
        float *x = tc_rand(&c, xs, -3, 5), *s = tc_rand(&c, SHP(ch), 0.5f, 2),
              *b = tc_rand(&c, SHP(ch), -1, 1);
        loom_value ins[3] = {tc_data(&c, 0, F32, xs, x), tc_data(&c, 1, F32, SHP(ch), s),
                             tc_data(&c, 0, F32, SHP(ch), b)};
        loom_attr eps = loom_attr_float("epsilon", 1e-3f);
        RUN_OK(&c, tc_node_canon(&c, "InstanceNormalization", ins, 3, &eps, 1, 1));
        const int64_t plane = numel(xs) / (xs.d[0] * ch > 0 ? xs.d[0] * ch : 1);
        double *ref = tc_dbuf(&c, numel(xs));
        for (int64_t q = 0; q < xs.d[0] * ch && plane > 0; q++) {
            double m = 0, v = 0;
            for (int64_t k = 0; k < plane; k++)
                m += x[q * plane + k];
            m /= (double)plane;
            for (int64_t k = 0; k < plane; k++)
                v += (x[q * plane + k] - m) * (x[q * plane + k] - m);
            v /= (double)plane;
            for (int64_t k = 0; k < plane; k++)
                ref[q * plane + k] = (x[q * plane + k] - m) / sqrt(v + 1e-3) * s[q % ch] + b[q % ch];
        }
        check_out_once(&c, 0, F32, xs, ref, 1e-4, 1e-4, __LINE__ + (int)i);
        tc_free(&c);
    }
}

static void test_log_softmax_matches_reference(void)
{
    const struct {
        shp x;
        int64_t axis;
        float scale;
    } cases[] = {{SHP(3, 5), -1, 1}, {SHP(2, 3, 4), 1, 1}, {SHP(4, 3, 2), 0, 1},
                 {SHP(2, 7), 1, 1e4f}, {SHP(0, 3), 1, 1}, {SHP(5), 0, 10}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc c;
        tc_open(&c, "layers_test");
        shp xs = cases[i].x;
        float *x = tc_rand(&c, xs, -cases[i].scale, cases[i].scale);
        loom_value in = tc_data(&c, 0, F32, xs, x);
        loom_attr at = loom_attr_int("axis", cases[i].axis);
        RUN_OK(&c, tc_node_canon(&c, "LogSoftmax", &in, 1, &at, 1, 1));
        const uint32_t ax = (uint32_t)(cases[i].axis < 0 ? cases[i].axis + xs.rank : cases[i].axis);
        double *ref = tc_dbuf(&c, numel(xs));
        for (int64_t f = 0; f < numel(xs); f++) {
            int64_t idx[LOOM_MAX_RANK];
            unravel(f, xs, idx);
            double m = -INFINITY, s = 0;
            for (int64_t l = 0; l < xs.d[ax]; l++) {
                idx[ax] = l;
                m = fmax(m, x[ravel(xs, idx)]);
            }
            for (int64_t l = 0; l < xs.d[ax]; l++) {
                idx[ax] = l;
                s += exp(x[ravel(xs, idx)] - m);
            }
            ref[f] = x[f] - m - log(s);
        }
        check_out_once(&c, 0, F32, xs, ref, 1e-4, 1e-5, __LINE__ + (int)i);
        tc_free(&c);
    }
}

static void test_prelu_broadcasts_slope(void)
{
    const struct {
        shp x, s;
        loom_dtype dt;
    } cases[] = {{SHP(2, 3, 4, 5), SHP(3, 1, 1), F32}, {SHP(3, 4), SHP(1), F32},
                 {SHP(2, 3, 5), SHP(2, 3, 5), F32},    {SHP(4, 5), SHP(5), I32},
                 {SHP(0, 3), SHP(3), F32},             {SHP(2, 3, 4), SHP(3, 1), I64}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc c;
        tc_open(&c, "layers_test");
        shp xs = cases[i].x, ss = cases[i].s;
        loom_dtype dt = cases[i].dt;
        void *x = tc_buf(&c, (size_t)numel(xs) * 8), *s = tc_buf(&c, (size_t)numel(ss) * 8);
        for (int64_t k = 0; k < numel(xs); k++) {
            if (dt == F32)
                ((float *)x)[k] = rng_f32(-2, 2);
            else if (dt == I32)
                ((int32_t *)x)[k] = (int32_t)rng_int(-50, 50);
            else
                ((int64_t *)x)[k] = rng_int(-50, 50);
        }
        for (int64_t k = 0; k < numel(ss); k++) {
            if (dt == F32)
                ((float *)s)[k] = rng_f32(0, 1);
            else if (dt == I32)
                ((int32_t *)s)[k] = (int32_t)rng_int(0, 5);
            else
                ((int64_t *)s)[k] = rng_int(0, 5);
        }
        loom_value ins[2] = {tc_data(&c, 0, dt, xs, x), tc_data(&c, 1, dt, ss, s)};
        RUN_OK(&c, tc_node_canon(&c, "PRelu", ins, 2, NULL, 0, 1));
        double *ref = tc_dbuf(&c, numel(xs));
        for (int64_t f = 0; f < numel(xs); f++) {
            int64_t idx[LOOM_MAX_RANK], si[LOOM_MAX_RANK];
            unravel(f, xs, idx);
            for (uint32_t d = 0; d < ss.rank; d++)
                si[d] = ss.d[d] == 1 ? 0 : idx[xs.rank - ss.rank + d];
            double v = elem_load(x, dt, f);
            ref[f] = v < 0 ? v * elem_load(s, dt, ravel(ss, si)) : v;
        }
        check_out_once(&c, 0, dt, xs, ref, 1e-6, 1e-6, __LINE__ + (int)i);
        tc_free(&c);
    }
    tc c;
    tc_open(&c, "layers_test");
    float *x = tc_rand(&c, SHP(2, 3), 0, 1), *s = tc_rand(&c, SHP(2), 0, 1);
    loom_value ins[2] = {tc_data(&c, 0, F32, SHP(2, 3), x), tc_data(&c, 1, F32, SHP(2), s)};
    EXPECT_ERR(&c, tc_node_canon(&c, "PRelu", ins, 2, NULL, 0, 1), LOOM_ERR_INVALID_ARGUMENT,
               "does not broadcast");
}

/* ============================================================================================
 * TopK, ArgMax, ArgMin
 * ============================================================================================ */

static void test_top_k_sorted_with_ties_by_lower_index(void)
{
    const struct {
        shp x;
        int64_t axis, k, largest;
        loom_dtype dt;
    } cases[] = {{SHP(3, 10), -1, 4, 1, F32}, {SHP(2, 7, 3), 1, 3, 0, F32},
                 {SHP(4, 6), 0, 4, 1, I64},   {SHP(5, 9), 1, 0, 1, F32},
                 {SHP(2, 50), 1, 50, 0, I32}, {SHP(0, 5), 1, 2, 1, F32}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc c;
        tc_open(&c, "layers_test");
        shp xs = cases[i].x;
        loom_dtype dt = cases[i].dt;
        void *x = tc_buf(&c, (size_t)numel(xs) * 8);
        for (int64_t k = 0; k < numel(xs); k++) {
            int64_t v = rng_int(0, 5); /* many ties */
            if (dt == F32)
                ((float *)x)[k] = (float)v * 0.5f;
            else if (dt == I32)
                ((int32_t *)x)[k] = (int32_t)v;
            else
                ((int64_t *)x)[k] = v << 40;
        }
        loom_value ins[2] = {tc_data(&c, 0, dt, xs, x), tc_i64(&c, &cases[i].k, 1)};
        loom_attr at[2] = {loom_attr_int("axis", cases[i].axis),
                           loom_attr_int("largest", cases[i].largest)};
        RUN_OK(&c, tc_node_canon(&c, "TopK", ins, 2, at, 2, 2));
        const uint32_t ax = (uint32_t)(cases[i].axis < 0 ? cases[i].axis + xs.rank : cases[i].axis);
        shp ys = xs;
        ys.d[ax] = cases[i].k;
        double *rv = tc_dbuf(&c, numel(ys)), *ri = tc_dbuf(&c, numel(ys));
        for (int64_t f = 0; f < numel(ys); f++) {
            int64_t idx[LOOM_MAX_RANK];
            unravel(f, ys, idx);
            const int64_t want = idx[ax];
            /* the element of rank WANT: count how many rank strictly before each candidate */
            for (int64_t l = 0; l < xs.d[ax]; l++) {
                idx[ax] = l;
                double v = elem_load(x, dt, ravel(xs, idx));
                int64_t before = 0;
                for (int64_t m = 0; m < xs.d[ax]; m++) {
                    idx[ax] = m;
                    double u = elem_load(x, dt, ravel(xs, idx));
                    if ((cases[i].largest ? u > v : u < v) || (u == v && m < l))
                        before++;
                }
                if (before == want) {
                    rv[f] = v;
                    ri[f] = (double)l;
                }
            }
        }
        CHECK(&c, 0, dt, ys, rv, 0);
        CHECK(&c, 1, I64, ys, ri, 0);
        tc_free(&c);
    }
    tc c;
    tc_open(&c, "layers_test");
    float *x = tc_rand(&c, SHP(2, 3), 0, 1);
    loom_value ins[2] = {tc_data(&c, 0, F32, SHP(2, 3), x), tc_i64(&c, I64S(4))};
    EXPECT_ERR(&c, tc_node_canon(&c, "TopK", ins, 2, NULL, 0, 2), LOOM_ERR_INVALID_ARGUMENT,
               "k = 4 is out of range");
}

static void test_arg_max_min_first_and_last_index(void)
{
    const struct {
        const char *op;
        shp x;
        int64_t axis, keep, last;
        loom_dtype dt;
    } cases[] = {{"ArgMax", SHP(3, 8), 1, 1, 0, F32},    {"ArgMax", SHP(3, 8), 1, 0, 1, F32},
                 {"ArgMin", SHP(4, 5, 3), -2, 1, 0, I32}, {"ArgMin", SHP(4, 5, 3), 0, 0, 1, I64},
                 {"ArgMax", SHP(7), 0, 0, 0, I64},        {"ArgMin", SHP(0, 4), 1, 1, 0, F32}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc c;
        tc_open(&c, "layers_test");
        shp xs = cases[i].x;
        loom_dtype dt = cases[i].dt;
        void *x = tc_buf(&c, (size_t)numel(xs) * 8);
        for (int64_t k = 0; k < numel(xs); k++) {
            int64_t v = rng_int(-3, 3);
            if (dt == F32)
                ((float *)x)[k] = (float)v;
            else if (dt == I32)
                ((int32_t *)x)[k] = (int32_t)v;
            else
                ((int64_t *)x)[k] = v;
        }
        loom_value in = tc_data(&c, 0, dt, xs, x);
        loom_attr at[3] = {loom_attr_int("axis", cases[i].axis),
                           loom_attr_int("keepdims", cases[i].keep),
                           loom_attr_int("select_last_index", cases[i].last)};
        RUN_OK(&c, tc_node_canon(&c, cases[i].op, &in, 1, at, 3, 1));
        const uint32_t ax = (uint32_t)(cases[i].axis < 0 ? cases[i].axis + xs.rank : cases[i].axis);
        shp red = xs;
        red.d[ax] = 1;
        double *ref = tc_dbuf(&c, numel(red));
        const int is_max = !strcmp(cases[i].op, "ArgMax");
        for (int64_t f = 0; f < numel(red); f++) {
            int64_t idx[LOOM_MAX_RANK], best = 0;
            unravel(f, red, idx);
            double bv = 0;
            for (int64_t l = 0; l < xs.d[ax]; l++) {
                idx[ax] = l;
                double v = elem_load(x, dt, ravel(xs, idx));
                int take = l == 0 || (is_max ? v > bv : v < bv) || (cases[i].last && v == bv);
                if (take) {
                    bv = v;
                    best = l;
                }
            }
            ref[f] = (double)best;
        }
        shp ys;
        memset(&ys, 0, sizeof ys);
        for (uint32_t d = 0; d < xs.rank; d++)
            if (d != ax || cases[i].keep)
                ys.d[ys.rank++] = d == ax ? 1 : xs.d[d];
        check_out_once(&c, 0, I64, ys, ref, 0, 0, __LINE__ + (int)i);
        tc_free(&c);
    }
    tc c;
    tc_open(&c, "layers_test");
    float *x = tc_rand(&c, SHP(2, 3), 0, 1);
    loom_value in = tc_data(&c, 0, F32, SHP(2, 3), x);
    loom_attr at = loom_attr_int("axis", 2);
    EXPECT_ERR(&c, tc_node_canon(&c, "ArgMax", &in, 1, &at, 1, 1), LOOM_ERR_INVALID_ARGUMENT,
               "axis 2 is out of range");
}

/* ============================================================================================
 * ScatterElements, GatherElements
 * ============================================================================================ */

static void test_scatter_elements_reductions(void)
{
    const char *reds[] = {"none", "add", "mul", "max", "min"};
    for (size_t r = 0; r < 5; r++)
        for (int axis = -2; axis < 2; axis++) {
            tc c;
            tc_open(&c, "layers_test");
            shp ds = SHP(4, 5), is = SHP(3, 4);
            const int64_t ax = axis < 0 ? axis + 2 : axis;
            float *data = tc_rand(&c, ds, -2, 2), *upd = tc_rand(&c, is, -2, 2);
            int64_t *idx = tc_buf(&c, (size_t)numel(is) * 8);
            int32_t *idx32 = tc_buf(&c, (size_t)numel(is) * 4);
            for (int64_t k = 0; k < numel(is); k++) {
                idx[k] = rng_int(-ds.d[ax], ds.d[ax] - 1); /* duplicates and negatives */
                idx32[k] = (int32_t)idx[k];
            }
            int use32 = axis == 1;
            loom_value ins[3] = {tc_data(&c, 0, F32, ds, data),
                                 use32 ? tc_data(&c, 0, I32, is, idx32) : tc_data(&c, 0, I64, is, idx),
                                 tc_data(&c, 0, F32, is, upd)};
            loom_attr at[2] = {loom_attr_int("axis", axis), loom_attr_string("reduction", reds[r])};
            RUN_OK(&c, tc_node_canon(&c, "ScatterElements", ins, 3, at, 2, 1));
            double *ref = tc_dbuf(&c, numel(ds));
            for (int64_t k = 0; k < numel(ds); k++)
                ref[k] = data[k];
            for (int64_t k = 0; k < numel(is); k++) {
                int64_t p[2];
                unravel(k, is, p);
                p[ax] = idx[k] < 0 ? idx[k] + ds.d[ax] : idx[k];
                double *d = &ref[ravel(ds, p)], u = upd[k];
                /* f32 rounding of each step, as the kernel accumulates in f32 */
                *d = r == 0 ? u
                     : r == 1 ? (float)(*d + u)
                     : r == 2 ? (float)(*d * u)
                     : r == 3 ? fmax(*d, u)
                              : fmin(*d, u);
            }
            check_out_once(&c, 0, F32, ds, ref, 1e-6, 1e-6, __LINE__);
            tc_free(&c);
        }
}

static void test_scatter_and_gather_elements_report_bad_indices_at_run(void)
{
    for (int gather = 0; gather < 2; gather++) {
        tc c;
        tc_open(&c, "layers_test");
        float *data = tc_rand(&c, SHP(3, 3), 0, 1), *upd = tc_rand(&c, SHP(1, 2), 0, 1);
        int64_t *idx = tc_buf(&c, 16);
        idx[0] = 1;
        idx[1] = 3; /* out of range for an axis of 3 */
        loom_value ins[3] = {tc_data(&c, 0, F32, SHP(3, 3), data), tc_data(&c, 0, I64, SHP(1, 2), idx),
                             gather ? NOV : tc_data(&c, 0, F32, SHP(1, 2), upd)};
        loom_status st = tc_node_canon(&c, gather ? "GatherElements" : "ScatterElements", ins,
                                 gather ? 2 : 3, NULL, 0, 1);
        if (st == LOOM_OK)
            st = tc_run_status(&c, __LINE__, 1);
        const char *msg = loom_last_error();
        if (!strstr(msg, "index 3"))
            fprintf(stderr, "\n    message: %s\n", msg);
        CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, gather ? "GatherElements" : "ScatterElements"));
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "index 3"));
        tc_free(&c);
    }
}

static void test_gather_elements_matches_reference(void)
{
    const struct {
        shp d, i;
        int64_t axis;
        loom_dtype it;
    } cases[] = {{SHP(3, 4), SHP(5, 4), 0, I64},
                 {SHP(2, 3, 4), SHP(2, 3, 7), -1, I32},
                 {SHP(4, 3), SHP(2, 2), 1, I64},
                 {SHP(4, 3), SHP(0, 3), 0, I64}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc c;
        tc_open(&c, "layers_test");
        shp ds = cases[i].d, is = cases[i].i;
        const int64_t ax = cases[i].axis < 0 ? cases[i].axis + ds.rank : cases[i].axis;
        float *data = tc_rand(&c, ds, -5, 5);
        int64_t *idx = tc_buf(&c, (size_t)numel(is) * 8);
        int32_t *idx32 = tc_buf(&c, (size_t)numel(is) * 4);
        for (int64_t k = 0; k < numel(is); k++) {
            idx[k] = rng_int(-ds.d[ax], ds.d[ax] - 1);
            idx32[k] = (int32_t)idx[k];
        }
        loom_value ins[2] = {tc_data(&c, 0, F32, ds, data),
                             cases[i].it == I32 ? tc_data(&c, 0, I32, is, idx32)
                                                : tc_data(&c, 0, I64, is, idx)};
        loom_attr at = loom_attr_int("axis", cases[i].axis);
        RUN_OK(&c, tc_node_canon(&c, "GatherElements", ins, 2, &at, 1, 1));
        double *ref = tc_dbuf(&c, numel(is));
        for (int64_t k = 0; k < numel(is); k++) {
            int64_t p[LOOM_MAX_RANK];
            unravel(k, is, p);
            p[ax] = idx[k] < 0 ? idx[k] + ds.d[ax] : idx[k];
            ref[k] = data[ravel(ds, p)];
        }
        check_out_once(&c, 0, F32, is, ref, 0, 0, __LINE__ + (int)i);
        tc_free(&c);
    }
}

/* ============================================================================================
 * ReduceMin, ReduceProd
 * ============================================================================================ */

static void test_reduce_min_prod_match_reference(void)
{
    const struct {
        const char *op;
        shp x;
        int64_t axes[3];
        size_t n_axes;
        int keep, from_input, noop;
        loom_dtype dt;
    } cases[] = {
        {"ReduceMin", SHP(3, 4, 5), {1}, 1, 1, 1, 0, F32},
        {"ReduceMin", SHP(3, 4, 5), {-1, 0}, 2, 0, 0, 0, I32},
        {"ReduceProd", SHP(2, 3, 4), {0, 2}, 2, 1, 1, 0, F32},
        {"ReduceProd", SHP(5, 3), {0}, 0, 0, 0, 0, I64}, /* all axes */
        {"ReduceMin", SHP(4, 3), {0}, 0, 1, 0, 1, F32},  /* noop */
        {"ReduceMin", SHP(2, 0, 3), {1}, 1, 1, 1, 0, F32}, /* empty: +inf */
        {"ReduceProd", SHP(2, 0, 3), {1}, 1, 0, 1, 0, F32}, /* empty: 1 */
        {"ReduceMin", SHP(0, 3), {1}, 1, 1, 1, 0, I64},    /* empty output */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc c;
        tc_open(&c, "layers_test");
        shp xs = cases[i].x;
        loom_dtype dt = cases[i].dt;
        void *x = tc_buf(&c, (size_t)numel(xs) * 8);
        for (int64_t k = 0; k < numel(xs); k++) {
            if (dt == F32)
                ((float *)x)[k] = rng_f32(0.5f, 1.5f) * (rng_int(0, 1) ? 1 : -1);
            else if (dt == I32)
                ((int32_t *)x)[k] = (int32_t)rng_int(-100, 100);
            else
                ((int64_t *)x)[k] = rng_int(-3, 3);
        }
        loom_value ins[2] = {tc_data(&c, 0, dt, xs, x),
                             cases[i].from_input ? tc_i64(&c, cases[i].axes, cases[i].n_axes) : NOV};
        loom_attr at[3];
        size_t na = 0;
        at[na++] = loom_attr_int("keepdims", cases[i].keep);
        if (cases[i].noop)
            at[na++] = loom_attr_int("noop_with_empty_axes", 1);
        if (!cases[i].from_input && cases[i].n_axes)
            at[na++] = loom_attr_ints("axes", cases[i].n_axes, cases[i].axes);
        RUN_OK(&c, tc_node_canon(&c, cases[i].op, ins, cases[i].from_input ? 2 : 1, at, na, 1));
        int red[LOOM_MAX_RANK] = {0};
        for (size_t k = 0; k < cases[i].n_axes; k++)
            red[cases[i].axes[k] < 0 ? cases[i].axes[k] + xs.rank : cases[i].axes[k]] = 1;
        if (cases[i].n_axes == 0 && !cases[i].noop)
            for (uint32_t d = 0; d < xs.rank; d++)
                red[d] = 1;
        shp ks = xs, ys;
        memset(&ys, 0, sizeof ys);
        for (uint32_t d = 0; d < xs.rank; d++) {
            if (red[d])
                ks.d[d] = 1;
            if (!red[d] || cases[i].keep)
                ys.d[ys.rank++] = ks.d[d];
        }
        const int is_min = !strcmp(cases[i].op, "ReduceMin");
        double *ref = tc_dbuf(&c, numel(ks));
        for (int64_t f = 0; f < numel(ks); f++)
            ref[f] = is_min ? (dt == F32 ? INFINITY : dt == I32 ? 2147483647.0 : 9.2233720368547758e18)
                            : 1.0;
        for (int64_t f = 0; f < numel(xs); f++) {
            int64_t idx[LOOM_MAX_RANK];
            unravel(f, xs, idx);
            for (uint32_t d = 0; d < xs.rank; d++)
                if (red[d])
                    idx[d] = 0;
            double *r = &ref[ravel(ks, idx)], v = elem_load(x, dt, f);
            *r = is_min ? fmin(*r, v) : *r * v;
        }
        check_out_once(&c, 0, dt, ys, ref, 1e-6, 1e-5, __LINE__ + (int)i);
        tc_free(&c);
    }
    tc c;
    tc_open(&c, "layers_test");
    float *x = tc_rand(&c, SHP(2, 3), 0, 1);
    loom_value ins[2] = {tc_data(&c, 0, F32, SHP(2, 3), x), tc_i64(&c, I64S(1, -1))};
    EXPECT_ERR(&c, tc_node_canon(&c, "ReduceProd", ins, 2, NULL, 0, 1), LOOM_ERR_INVALID_ARGUMENT,
               "appears twice");
}

/* ============================================================================================
 * LSTM and GRU: references in double, from the ONNX equations (default activations).
 * ============================================================================================ */

static double sg(double v)
{
    return 1.0 / (1.0 + exp(-v));
}

typedef struct rnn_case {
    int lstm;
    const char *dir;
    int64_t seq, batch, in, h;
    int bias, init, peep, lens, layout, lbr;
} rnn_case;

static void rnn_check(const rnn_case *cs, int line)
{
    tc c;
    tc_open(&c, "layers_test");
    const int64_t nd = !strcmp(cs->dir, "bidirectional") ? 2 : 1, G = cs->lstm ? 4 : 3;
    const int64_t T = cs->seq, B = cs->batch, I = cs->in, H = cs->h;
    shp xs = cs->layout ? SHP(B, T, I) : SHP(T, B, I);
    shp hs = cs->layout ? SHP(B, nd, H) : SHP(nd, B, H);
    float *x = tc_rand(&c, xs, -1, 1), *w = tc_rand(&c, SHP(nd, G * H, I), -0.7f, 0.7f),
          *r = tc_rand(&c, SHP(nd, G * H, H), -0.7f, 0.7f),
          *b = tc_rand(&c, SHP(nd, 2 * G * H), -0.5f, 0.5f), *h0 = tc_rand(&c, hs, -1, 1),
          *c0 = tc_rand(&c, hs, -1, 1), *p = tc_rand(&c, SHP(nd, 3 * H), -0.5f, 0.5f);
    int32_t *lens = tc_buf(&c, (size_t)B * 4);
    for (int64_t k = 0; k < B; k++)
        lens[k] = cs->lens ? (int32_t)((k * 7 + 3) % (T + 1)) : (int32_t)T;
    loom_value ins[8] = {tc_data(&c, 0, F32, xs, x),
                         tc_data(&c, 1, F32, SHP(nd, G * H, I), w),
                         tc_data(&c, 1, F32, SHP(nd, G * H, H), r),
                         cs->bias ? tc_data(&c, 1, F32, SHP(nd, 2 * G * H), b) : NOV,
                         cs->lens ? tc_data(&c, 0, I32, SHP(B), lens) : NOV,
                         cs->init ? tc_data(&c, 0, F32, hs, h0) : NOV,
                         cs->init && cs->lstm ? tc_data(&c, 0, F32, hs, c0) : NOV,
                         cs->peep ? tc_data(&c, 1, F32, SHP(nd, 3 * H), p) : NOV};
    loom_attr at[4];
    size_t na = 0;
    at[na++] = loom_attr_string("direction", cs->dir);
    at[na++] = loom_attr_int("hidden_size", H);
    at[na++] = loom_attr_int("layout", cs->layout);
    if (!cs->lstm)
        at[na++] = loom_attr_int("linear_before_reset", cs->lbr);
    const size_t n_outs = cs->lstm ? 3 : 2;
    RUN_OK(&c, tc_node_canon(&c, cs->lstm ? "LSTM" : "GRU", ins, cs->lstm ? 8 : 6, at, na, n_outs));
    shp ys = cs->layout ? SHP(B, T, nd, H) : SHP(T, nd, B, H);
    double *y = tc_dbuf(&c, numel(ys)), *yh = tc_dbuf(&c, numel(hs)), *yc = tc_dbuf(&c, numel(hs));
    for (int64_t k = 0; k < numel(ys); k++)
        y[k] = 0;
    double *hv = tc_dbuf(&c, H), *cv = tc_dbuf(&c, H), *gt = tc_dbuf(&c, G * H), *hn = tc_dbuf(&c, H);
    for (int64_t d = 0; d < nd; d++)
        for (int64_t bb = 0; bb < B; bb++) {
            const int rev = nd == 2 ? d == 1 : !strcmp(cs->dir, "reverse");
            const int64_t len = lens[bb];
#define HIDX(i) (cs->layout ? (bb * nd + d) * H + (i) : (d * B + bb) * H + (i))
            for (int64_t i = 0; i < H; i++) {
                hv[i] = cs->init ? h0[HIDX(i)] : 0.0;
                cv[i] = cs->init && cs->lstm ? c0[HIDX(i)] : 0.0;
            }
            for (int64_t s = 0; s < len; s++) {
                const int64_t t = rev ? len - 1 - s : s;
                const float *xt = x + (cs->layout ? (bb * T + t) : (t * B + bb)) * I;
                const float *W = w + d * G * H * I, *R = r + d * G * H * H;
                const float *Wb = b + d * 2 * G * H, *Rb = Wb + G * H;
                for (int64_t q = 0; q < G * H; q++) {
                    double v = 0;
                    for (int64_t k = 0; k < I; k++)
                        v += (double)W[q * I + k] * xt[k];
                    if (cs->bias)
                        v += Wb[q];
                    gt[q] = v;
                }
                if (cs->lstm) {
                    for (int64_t q = 0; q < G * H; q++) {
                        double v = cs->bias ? Rb[q] : 0.0;
                        for (int64_t k = 0; k < H; k++)
                            v += (double)R[q * H + k] * hv[k];
                        gt[q] += v;
                    }
                    const float *P = p + d * 3 * H;
                    for (int64_t i = 0; i < H; i++) {
                        double pi = cs->peep ? P[i] : 0, po = cs->peep ? P[H + i] : 0,
                               pf = cs->peep ? P[2 * H + i] : 0;
                        double it = sg(gt[i] + pi * cv[i]), ft = sg(gt[2 * H + i] + pf * cv[i]);
                        double ct = ft * cv[i] + it * tanh(gt[3 * H + i]);
                        double ot = sg(gt[H + i] + po * ct);
                        cv[i] = ct;
                        hn[i] = ot * tanh(ct);
                    }
                } else {
                    double zr[2][64], rec[64];
                    for (int g = 0; g < 2; g++)
                        for (int64_t i = 0; i < H; i++) {
                            int64_t q = g * H + i;
                            double v = gt[q] + (cs->bias ? Rb[q] : 0.0);
                            for (int64_t k = 0; k < H; k++)
                                v += (double)R[q * H + k] * hv[k];
                            zr[g][i] = sg(v);
                        }
                    for (int64_t i = 0; i < H; i++) {
                        int64_t q = 2 * H + i;
                        double v = 0;
                        for (int64_t k = 0; k < H; k++)
                            v += (double)R[q * H + k] * (cs->lbr ? hv[k] : zr[1][k] * hv[k]);
                        rec[i] = v + (cs->bias ? Rb[q] : 0.0);
                    }
                    for (int64_t i = 0; i < H; i++) {
                        double hh = tanh(gt[2 * H + i] + (cs->lbr ? zr[1][i] * rec[i] : rec[i]));
                        hn[i] = (1 - zr[0][i]) * hh + zr[0][i] * hv[i];
                    }
                }
                for (int64_t i = 0; i < H; i++) {
                    hv[i] = hn[i];
                    y[(cs->layout ? ((bb * T + t) * nd + d) : ((t * nd + d) * B + bb)) * H + i] = hn[i];
                }
            }
            for (int64_t i = 0; i < H; i++) {
                yh[HIDX(i)] = hv[i];
                yc[HIDX(i)] = cv[i];
            }
#undef HIDX
        }
    check_out_once(&c, 0, F32, ys, y, 2e-5, 1e-4, line);
    check_out_once(&c, 1, F32, hs, yh, 2e-5, 1e-4, line);
    if (cs->lstm)
        check_out_once(&c, 2, F32, hs, yc, 2e-5, 1e-4, line);
    tc_free(&c);
}

static void test_lstm_matches_reference(void)
{
    const rnn_case cases[] = {
        {1, "forward", 5, 3, 4, 6, 1, 1, 1, 0, 0, 0},
        {1, "reverse", 4, 2, 3, 5, 1, 0, 0, 0, 0, 0},
        {1, "bidirectional", 6, 4, 3, 4, 1, 1, 0, 1, 0, 0},
        {1, "bidirectional", 3, 2, 5, 3, 0, 1, 1, 0, 1, 0},
        {1, "forward", 7, 1, 2, 33, 1, 0, 0, 0, 0, 0},
        {1, "forward", 3, 0, 2, 3, 1, 0, 0, 0, 0, 0}, /* empty batch */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        rnn_check(&cases[i], __LINE__ + (int)i);
}

static void test_gru_matches_reference(void)
{
    const rnn_case cases[] = {
        {0, "forward", 5, 3, 4, 6, 1, 1, 0, 0, 0, 0},
        {0, "forward", 5, 3, 4, 6, 1, 1, 0, 0, 0, 1},
        {0, "reverse", 4, 2, 3, 5, 0, 0, 0, 0, 0, 1},
        {0, "bidirectional", 6, 5, 3, 4, 1, 1, 0, 1, 0, 0},
        {0, "bidirectional", 3, 2, 5, 3, 1, 1, 0, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        rnn_check(&cases[i], __LINE__ + (int)i);
}

static void test_rnn_rejects_bad_shapes_and_activations(void)
{
    tc c;
    tc_open(&c, "layers_test");
    float *x = tc_rand(&c, SHP(2, 1, 3), 0, 1), *w = tc_rand(&c, SHP(1, 12, 3), 0, 1),
          *r = tc_rand(&c, SHP(1, 12, 4), 0, 1);
    loom_value ins[3] = {tc_data(&c, 0, F32, SHP(2, 1, 3), x), tc_data(&c, 1, F32, SHP(1, 12, 3), w),
                         tc_data(&c, 1, F32, SHP(1, 12, 4), r)};
    loom_attr h = loom_attr_int("hidden_size", 3);
    EXPECT_ERR(&c, tc_node_canon(&c, "LSTM", ins, 3, &h, 1, 3), LOOM_ERR_INVALID_ARGUMENT,
               "input 2 (R) has shape [1, 12, 4]; expected [1, 12, 3]");
    tc_open(&c, "layers_test");
    x = tc_rand(&c, SHP(2, 1, 3), 0, 1);
    w = tc_rand(&c, SHP(1, 9, 3), 0, 1);
    r = tc_rand(&c, SHP(1, 9, 3), 0, 1);
    loom_value ins2[3] = {tc_data(&c, 0, F32, SHP(2, 1, 3), x), tc_data(&c, 1, F32, SHP(1, 9, 3), w),
                          tc_data(&c, 1, F32, SHP(1, 9, 3), r)};
    loom_attr acts = loom_attr_string("activations", "Relu,Tanh");
    EXPECT_ERR(&c, tc_node_canon(&c, "GRU", ins2, 3, &acts, 1, 2), LOOM_ERR_UNSUPPORTED,
               "only the defaults");
    /* sequence_lens out of range: a run-time error */
    tc_open(&c, "layers_test");
    x = tc_rand(&c, SHP(2, 1, 3), 0, 1);
    w = tc_rand(&c, SHP(1, 9, 3), 0, 1);
    r = tc_rand(&c, SHP(1, 9, 3), 0, 1);
    int32_t *lens = tc_buf(&c, 4);
    lens[0] = 5;
    loom_value ins3[5] = {tc_data(&c, 0, F32, SHP(2, 1, 3), x), tc_data(&c, 1, F32, SHP(1, 9, 3), w),
                          tc_data(&c, 1, F32, SHP(1, 9, 3), r), NOV, tc_data(&c, 0, I32, SHP(1), lens)};
    loom_status st = tc_node_canon(&c, "GRU", ins3, 5, NULL, 0, 2);
    if (st == LOOM_OK)
        st = tc_run_status(&c, __LINE__, 1);
    CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "sequence_lens"));
    tc_free(&c);
}

/* ---- main ----------------------------------------------------------------------------------- */

static int suite_init(void)
{
    return test_rt_open(2); /* parallel paths run even on one core */
}

static const test_entry k_tests[] = {
    TEST_ENTRY(test_conv_transpose_matches_reference),
    TEST_ENTRY(test_conv_transpose_rejects_bad_attributes),
    TEST_ENTRY(test_resize_matches_reference),
    TEST_ENTRY(test_resize_nearest_moves_integers),
    TEST_ENTRY(test_resize_rejects_unsupported_and_bad_inputs),
    TEST_ENTRY(test_resize_cubic_and_crop_match_reference),
    TEST_ENTRY(test_resize_crop_nearest_fills_integers),
    TEST_ENTRY(test_pad_modes_match_reference),
    TEST_ENTRY(test_pad_rejects_bad_pads),
    TEST_ENTRY(test_tile_matches_reference),
    TEST_ENTRY(test_einsum_matches_reference),
    TEST_ENTRY(test_einsum_ellipsis_broadcast_and_integers),
    TEST_ENTRY(test_instance_norm_matches_reference),
    TEST_ENTRY(test_log_softmax_matches_reference),
    TEST_ENTRY(test_prelu_broadcasts_slope),
    TEST_ENTRY(test_top_k_sorted_with_ties_by_lower_index),
    TEST_ENTRY(test_arg_max_min_first_and_last_index),
    TEST_ENTRY(test_scatter_elements_reductions),
    TEST_ENTRY(test_scatter_and_gather_elements_report_bad_indices_at_run),
    TEST_ENTRY(test_gather_elements_matches_reference),
    TEST_ENTRY(test_reduce_min_prod_match_reference),
    TEST_ENTRY(test_lstm_matches_reference),
    TEST_ENTRY(test_gru_matches_reference),
    TEST_ENTRY(test_rnn_rejects_bad_shapes_and_activations),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    const test_suite suite = {"ops_layers", k_tests, suite_init, test_rt_close, rng_reset, NULL};
    return test_run_suites(&suite, 1, argc, argv);
}
