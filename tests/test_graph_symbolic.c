/*
 * Symbolic dimensions in graphs built through the C API (issue 12, item 1): inputs with named
 * unknown dims (loom_input_symbolic), the expressions shape inference carries for them, the
 * contradictions it reports at check time and at run time naming the symbols, and models made
 * of such graphs (loom_model_from_graph): runs at several shapes against naive loops, the
 * specialisation cache's hits, misses and evictions, constants held once, and bad input.
 */
#include <loom/loom.h>

#include "test_support.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HID 8  /* x's last dim */
#define OUTF 4 /* W's columns */
#define EXTRA 2

static float w_data[HID * OUTF], b_data[OUTF];

static void fill_weights(void)
{
    for (int k = 0; k < HID; k++)
        for (int j = 0; j < OUTF; j++)
            w_data[k * OUTF + j] = 0.05f * (float)((k * 7 + j * 3) % 11) - 0.2f;
    for (int j = 0; j < OUTF; j++)
        b_data[j] = 0.1f * (float)j - 0.15f;
}

static void expect_msg(const char *needle)
{
    const char *msg = loom_last_error();
    if (!strstr(msg, needle))
        fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", msg, needle);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, needle));
}

static void expect_expr(const loom_graph *g, loom_value v, uint32_t axis, const char *want)
{
    char buf[128];
    CU_ASSERT_EQUAL_FATAL(loom_value_dim_expr(g, v, axis, buf, sizeof buf), LOOM_OK);
    if (strcmp(buf, want) != 0)
        fprintf(stderr, "\n  dim %u of '%s' is \"%s\", expected \"%s\"\n", axis,
                loom_value_name(g, v), buf, want);
    CU_ASSERT_STRING_EQUAL(buf, want);
}

/* The graph under test: x [batch, seq, 8], e [batch, 2, 4];
 *   h = Relu(x @ W + B)              [batch, seq, 4]
 *   c = Concat(h, e, axis 1)         [batch, seq+2, 4]
 *   r = Reshape(c, [0, -1])          [batch, 4*seq+8]     (output "r")
 *   s = Slice(x, 1:, axis 1)         [batch, seq-1, 8]    (output "s")
 *   f = Flatten(h, axis 2)           [batch*seq, 4]       (output "f")
 * W and B are constants (copied into the graph), so the model owns them. */
static loom_graph *build_mlp_graph(loom_value *vals)
{
    loom_graph *g = loom_graph_create("sym_mlp");
    const int64_t xd[3] = {-1, -1, HID}, ed[3] = {-1, EXTRA, OUTF};
    const char *xn[3] = {"batch", "seq", NULL}, *en[3] = {"batch", NULL, NULL};
    loom_value x = loom_input_symbolic(g, "x", LOOM_DTYPE_F32, 3, xd, xn);
    loom_value e = loom_input_symbolic(g, "e", LOOM_DTYPE_F32, 3, ed, en);
    const int64_t wd[2] = {HID, OUTF}, bd[1] = {OUTF};
    loom_value w = loom_constant(g, "W", LOOM_DTYPE_F32, 2, wd, w_data);
    loom_value b = loom_constant(g, "B", LOOM_DTYPE_F32, 1, bd, b_data);
    loom_value h = loom_relu(g, loom_add(g, loom_matmul(g, x, w), b));
    loom_value parts[2] = {h, e};
    loom_value c = loom_concat(g, parts, 2, 1);
    const int64_t shape[2] = {0, -1};
    loom_value r = loom_reshape(g, c, 2, shape);
    const int64_t st[1] = {1}, en1[1] = {INT64_MAX}, ax[1] = {1};
    loom_value s = loom_slice(g, x, 1, st, en1, ax, NULL);
    loom_value f = loom_flatten(g, h, 2);
    loom_output(g, r, "r");
    loom_output(g, s, "s");
    loom_output(g, f, "f");
    if (vals) {
        vals[0] = x;
        vals[1] = h;
        vals[2] = c;
        vals[3] = r;
        vals[4] = s;
        vals[5] = f;
    }
    return g;
}

static loom_tensor *make_f32(uint32_t rank, const int64_t *dims, float seed)
{
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, rank, dims, &t), LOOM_OK);
    float *p = loom_tensor_data(t);
    size_t n = loom_tensor_nbytes(t) / sizeof *p;
    for (size_t i = 0; i < n; i++)
        p[i] = seed + 0.125f * (float)((i * 5 + 3) % 17) - 1.0f;
    return t;
}

static void expect_close(const float *got, const float *want, size_t n, const char *what)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(got[i] - want[i]) > 1e-5f + 1e-5f * fabsf(want[i])) {
            if (!bad)
                fprintf(stderr, "\n  %s[%zu] = %g, expected %g\n", what, i, got[i], want[i]);
            bad++;
        }
    CU_ASSERT_EQUAL(bad, 0);
}

static void expect_shape(const loom_tensor *t, uint32_t rank, const int64_t *dims)
{
    int64_t d[LOOM_MAX_RANK];
    CU_ASSERT_EQUAL_FATAL(loom_tensor_rank(t), rank);
    loom_tensor_dims(t, d);
    for (uint32_t k = 0; k < rank; k++)
        CU_ASSERT_EQUAL(d[k], dims[k]);
}

/* Outputs r, s, f of build_mlp_graph for X [bt, sq, 8] and E [bt, 2, 4], by naive loops. */
static void check_mlp(int64_t bt, int64_t sq, const loom_tensor *x, const loom_tensor *e,
                      loom_tensor *const *out)
{
    const float *xp = loom_tensor_data(x), *ep = loom_tensor_data(e);
    size_t hn = (size_t)(bt * sq * OUTF);
    float *h = malloc((hn + 1) * sizeof *h);
    for (int64_t i = 0; i < bt * sq; i++)
        for (int j = 0; j < OUTF; j++) {
            double acc = b_data[j];
            for (int k = 0; k < HID; k++)
                acc += (double)xp[i * HID + k] * w_data[k * OUTF + j];
            h[i * OUTF + j] = acc > 0 ? (float)acc : 0.0f;
        }
    /* r: per batch, the seq rows of h then the 2 rows of e, flattened. */
    int64_t rcols = (sq + EXTRA) * OUTF;
    float *r = malloc((size_t)(bt * rcols + 1) * sizeof *r);
    for (int64_t b = 0; b < bt; b++) {
        for (int64_t q = 0; q < sq; q++)
            for (int j = 0; j < OUTF; j++)
                r[b * rcols + q * OUTF + j] = h[(b * sq + q) * OUTF + j];
        for (int64_t q = 0; q < EXTRA; q++)
            for (int j = 0; j < OUTF; j++)
                r[b * rcols + (sq + q) * OUTF + j] = ep[(b * EXTRA + q) * OUTF + j];
    }
    const int64_t rd[2] = {bt, rcols};
    expect_shape(out[0], 2, rd);
    expect_close(loom_tensor_data(out[0]), r, (size_t)(bt * rcols), "r");
    /* s = x[:, 1:, :] */
    int64_t sl = sq > 1 ? sq - 1 : 0;
    float *s = malloc((size_t)(bt * sl * HID + 1) * sizeof *s);
    for (int64_t b = 0; b < bt; b++)
        for (int64_t q = 0; q < sl; q++)
            for (int k = 0; k < HID; k++)
                s[(b * sl + q) * HID + k] = xp[(b * sq + q + 1) * HID + k];
    const int64_t sd[3] = {bt, sl, HID};
    expect_shape(out[1], 3, sd);
    expect_close(loom_tensor_data(out[1]), s, (size_t)(bt * sl * HID), "s");
    const int64_t fd[2] = {bt * sq, OUTF};
    expect_shape(out[2], 2, fd);
    expect_close(loom_tensor_data(out[2]), h, hn, "f");
    free(h);
    free(r);
    free(s);
}

/* Bytes of every constant GRAPH's nodes read (each once). */
static size_t constant_bytes(const loom_graph *g)
{
    size_t bytes = 0;
    loom_value seen[64];
    size_t n_seen = 0;
    for (size_t i = 0; i < loom_graph_node_count(g); i++)
        for (size_t k = 0; k < loom_graph_node_input_count(g, i); k++) {
            loom_value v = loom_graph_node_input(g, i, k);
            if (v == LOOM_NO_VALUE || loom_graph_value_producer(g, v) >= 0)
                continue;
            int is_input = 0;
            for (size_t q = 0; q < loom_graph_input_count(g); q++)
                is_input |= loom_graph_input(g, q) == v;
            int dup = 0;
            for (size_t q = 0; q < n_seen; q++)
                dup |= seen[q] == v;
            if (is_input || dup || n_seen == 64)
                continue;
            seen[n_seen++] = v;
            loom_dtype dt;
            uint32_t rank;
            int64_t dims[LOOM_MAX_RANK];
            loom_value_info(g, v, &dt, &rank, dims);
            size_t n = loom_dtype_size(dt);
            for (uint32_t q = 0; q < rank; q++)
                n *= (size_t)dims[q];
            bytes += n;
        }
    return bytes;
}

/* ---- check time -------------------------------------------------------------------------------- */

static void test_symbols_carried_through_inference(void)
{
    fill_weights();
    loom_value v[6];
    loom_graph *g = build_mlp_graph(v);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    CU_ASSERT_EQUAL(loom_graph_symbol_count(g), 2);
    CU_ASSERT_STRING_EQUAL(loom_graph_symbol_name(g, 0), "batch");
    CU_ASSERT_STRING_EQUAL(loom_graph_symbol_name(g, 1), "seq");
    CU_ASSERT_PTR_NULL(loom_graph_symbol_name(g, 2));
    expect_expr(g, v[0], 0, "batch");
    expect_expr(g, v[0], 1, "seq");
    expect_expr(g, v[0], 2, "8");
    expect_expr(g, v[1], 1, "seq");      /* MatMul, Add, Relu copy it */
    expect_expr(g, v[2], 1, "seq+2");    /* Concat adds */
    expect_expr(g, v[3], 1, "4*seq+8");  /* Reshape's -1 divides the element count */
    expect_expr(g, v[4], 1, "seq-1");    /* Slice from 1 to the end */
    expect_expr(g, v[5], 0, "batch*seq"); /* Flatten multiplies */
    expect_expr(g, v[5], 1, "4");
    /* value_info: -1 where the dim is symbolic. */
    loom_dtype dt;
    uint32_t rank = 0;
    int64_t dims[LOOM_MAX_RANK];
    CU_ASSERT_EQUAL(loom_value_info(g, v[3], &dt, &rank, dims), LOOM_OK);
    CU_ASSERT_EQUAL(rank, 2);
    CU_ASSERT_EQUAL(dims[0], -1);
    CU_ASSERT_EQUAL(dims[1], -1);
    CU_ASSERT_EQUAL(loom_value_info(g, v[0], &dt, &rank, dims), LOOM_OK);
    CU_ASSERT_EQUAL(dims[2], HID);
    char buf[16];
    CU_ASSERT_EQUAL(loom_value_dim_expr(g, v[0], 3, buf, sizeof buf), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_value_dim_expr(g, v[0], 0, NULL, 4), LOOM_ERR_INVALID_ARGUMENT);
    loom_graph_destroy(g);
}

static void test_conv_and_pool_windows_as_floor_divisions(void)
{
    loom_graph *g = loom_graph_create("sym_conv");
    const int64_t xd[3] = {-1, 1, -1};
    const char *xn[3] = {"n", NULL, "len"};
    loom_value x = loom_input_symbolic(g, "x", LOOM_DTYPE_F32, 3, xd, xn);
    const int64_t wd[3] = {2, 1, 3};
    const float w[6] = {0.5f, -1.0f, 0.25f, 1.0f, 0.75f, -0.5f};
    loom_value wv = loom_constant(g, "Wc", LOOM_DTYPE_F32, 3, wd, w);
    loom_window_params p = {.n_spatial = 1, .strides = {2}, .pads = {1, 1}};
    loom_value y = loom_conv(g, x, wv, LOOM_NO_VALUE, &p);
    loom_window_params mp = {.n_spatial = 1, .kernel_shape = {2}, .strides = {2}};
    loom_value z = loom_max_pool(g, y, &mp);
    loom_output(g, z, "z");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    expect_expr(g, y, 0, "n");
    expect_expr(g, y, 1, "2");
    expect_expr(g, y, 2, "(len+1)/2"); /* floor((len + 2 - 3) / 2) + 1 */
    expect_expr(g, z, 2, "(len+1)/4"); /* floor(that / 2) */
    /* And it runs: the model checks lengths of both parities against a naive loop. */
    loom_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_model_from_graph(test_rt, g, NULL, &m), LOOM_OK);
    for (int64_t len = 5; len <= 8; len++) {
        const int64_t d[3] = {2, 1, len};
        loom_tensor *xt = make_f32(3, d, 0.1f * (float)len), *out[1] = {NULL};
        const loom_tensor *in[1] = {xt};
        CU_ASSERT_EQUAL_FATAL(loom_model_run(m, in, 1, out, 1, NULL), LOOM_OK);
        int64_t ol = (len + 2 - 3) / 2 + 1, pl = ol / 2;
        const int64_t zd[3] = {2, 2, pl};
        expect_shape(out[0], 3, zd);
        const float *xp = loom_tensor_data(xt), *zp = loom_tensor_data(out[0]);
        for (int64_t b = 0; b < 2; b++)
            for (int64_t c = 0; c < 2; c++)
                for (int64_t i = 0; i < pl; i++) {
                    float best = -INFINITY;
                    for (int64_t q = 2 * i; q < 2 * i + 2; q++) {
                        double acc = 0;
                        for (int64_t t = 0; t < 3; t++) {
                            int64_t at = q * 2 - 1 + t;
                            if (at >= 0 && at < len)
                                acc += (double)xp[b * len + at] * w[c * 3 + t];
                        }
                        if ((float)acc > best)
                            best = (float)acc;
                    }
                    CU_ASSERT_DOUBLE_EQUAL(zp[(b * 2 + c) * pl + i], best, 1e-5);
                }
        loom_tensor_destroy(xt);
        loom_tensor_destroy(out[0]);
    }
    loom_model_destroy(m); /* frees g */
}

static void test_symbol_against_constant_refused_at_check(void)
{
    loom_graph *g = loom_graph_create("bad_matmul");
    const int64_t xd[2] = {-1, -1};
    const char *xn[2] = {"batch", "sequence"};
    loom_value x = loom_input_symbolic(g, "input_ids", LOOM_DTYPE_F32, 2, xd, xn);
    const int64_t wd[2] = {3, 4};
    float w[12] = {0};
    loom_value wv = loom_constant(g, "W", LOOM_DTYPE_F32, 2, wd, w);
    loom_value y = loom_matmul(g, x, wv);
    CU_ASSERT_EQUAL(y, LOOM_NO_VALUE);
    loom_output(g, y, "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
    expect_msg("'sequence'");
    expect_msg("MatMul");
    expect_msg("'input_ids' [batch, sequence]");
    expect_msg("'W' [3, 4]");
    loom_graph_destroy(g);
}

static void test_two_symbols_forced_equal_refused_at_check(void)
{
    loom_graph *g = loom_graph_create("bad_add");
    const int64_t d[2] = {-1, 4};
    const char *an[2] = {"batch", NULL}, *bn[2] = {"seq", NULL};
    loom_value a = loom_input_symbolic(g, "a", LOOM_DTYPE_F32, 2, d, an);
    loom_value b = loom_input_symbolic(g, "b", LOOM_DTYPE_F32, 2, d, bn);
    loom_output(g, loom_add(g, a, b), "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
    expect_msg("[batch, 4] and [seq, 4]");
    expect_msg("Add");
    loom_graph_destroy(g);
    /* A symbol equal to twice another matches at one placeholder assignment only: the second
     * one shows the contradiction. */
    g = loom_graph_create("bad_concat");
    const int64_t sd[1] = {-1};
    const char *s1[1] = {"n"}, *s2[1] = {"m"};
    loom_value p = loom_input_symbolic(g, "p", LOOM_DTYPE_F32, 1, sd, s1);
    loom_value q = loom_input_symbolic(g, "q", LOOM_DTYPE_F32, 1, sd, s2);
    loom_value pp[2] = {p, p};
    loom_output(g, loom_add(g, loom_concat(g, pp, 2, 0), q), "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
    expect_msg("[2*n]");
    expect_msg("[m]");
    expect_msg("cannot be broadcast");
    loom_graph_destroy(g);
}

static void test_reshape_fixing_a_symbol_refused_at_check(void)
{
    loom_graph *g = loom_graph_create("bad_reshape");
    const int64_t d[1] = {-1};
    const char *n[1] = {"seq"};
    loom_value x = loom_input_symbolic(g, "x", LOOM_DTYPE_F32, 1, d, n);
    const int64_t shape[2] = {2, 3};
    loom_output(g, loom_reshape(g, x, 2, shape), "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
    expect_msg("Reshape");
    expect_msg("seq");
    loom_graph_destroy(g);
}

static void test_bad_symbolic_inputs_refused(void)
{
    struct {
        uint32_t rank;
        int64_t dims[3];
        const char *names[3];
        int names_null;
        const char *want;
    } cases[] = {
        {2, {-2, 3}, {NULL, NULL}, 0, "dimension 0 is -2"},
        {2, {-1, 3}, {NULL, NULL}, 0, "has no name"},
        {2, {-1, 3}, {NULL, NULL}, 1, "has no name"},
        {2, {4, 3}, {"batch", NULL}, 0, "must be -1"},
        {1, {-1}, {"a b"}, 0, "not a valid symbol name"},
        {1, {-1}, {""}, 0, "not a valid symbol name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        loom_graph *g = loom_graph_create("bad_inputs");
        loom_value x = loom_input_symbolic(g, "x", LOOM_DTYPE_F32, cases[i].rank, cases[i].dims,
                                           cases[i].names_null ? NULL : cases[i].names);
        CU_ASSERT_EQUAL(x, LOOM_NO_VALUE);
        CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
        expect_msg(cases[i].want);
        expect_msg("'x'");
        loom_graph_destroy(g);
    }
    loom_graph *g = loom_graph_create("bad_inputs");
    const int64_t d[1] = {-1};
    const char *n[1] = {"s"};
    CU_ASSERT_EQUAL(loom_input_symbolic(g, NULL, LOOM_DTYPE_F32, 1, d, n), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
    loom_graph_destroy(g);
    g = loom_graph_create("bad_inputs");
    CU_ASSERT_EQUAL(loom_input_symbolic(g, "x", LOOM_DTYPE_F32, 2, NULL, n), LOOM_NO_VALUE);
    expect_msg("dims is NULL");
    loom_graph_destroy(g);
    g = loom_graph_create("bad_inputs");
    int64_t big[LOOM_MAX_RANK + 1];
    for (int k = 0; k <= LOOM_MAX_RANK; k++)
        big[k] = 1;
    CU_ASSERT_EQUAL(loom_input_symbolic(g, "x", LOOM_DTYPE_F32, LOOM_MAX_RANK + 1, big, NULL),
                    LOOM_NO_VALUE);
    expect_msg("exceeds the maximum");
    loom_graph_destroy(g);
    /* Seventeen symbols: one too many. */
    g = loom_graph_create("many");
    loom_value last = LOOM_NO_VALUE;
    for (int k = 0; k < 17; k++) {
        char in[16], sym[16];
        snprintf(in, sizeof in, "x%d", k);
        snprintf(sym, sizeof sym, "s%d", k);
        const char *nm[1] = {sym};
        last = loom_input_symbolic(g, in, LOOM_DTYPE_F32, 1, d, nm);
    }
    CU_ASSERT_EQUAL(last, LOOM_NO_VALUE);
    expect_msg("at most 16");
    loom_graph_destroy(g);
}

static void test_plan_create_refuses_symbolic_graph(void)
{
    fill_weights();
    loom_graph *g = build_mlp_graph(NULL);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *plan = NULL;
    CU_ASSERT_EQUAL(loom_plan_create(test_rt, g, NULL, &plan), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(plan);
    expect_msg("loom_model_from_graph");
    expect_msg("'batch'");
    loom_graph_destroy(g);
    /* An unchecked graph is not a model's. */
    g = build_mlp_graph(NULL);
    loom_model *m = NULL;
    CU_ASSERT_EQUAL(loom_model_from_graph(test_rt, g, NULL, &m), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(m);
    expect_msg("not checked");
    CU_ASSERT_EQUAL(loom_model_from_graph(NULL, g, NULL, &m), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_model_from_graph(test_rt, NULL, NULL, &m), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_model_from_graph(test_rt, g, NULL, NULL), LOOM_ERR_INVALID_ARGUMENT);
    loom_graph_destroy(g);
}

/* ---- models of symbolic graphs ------------------------------------------------------------------ */

static loom_model *mlp_model(size_t max_specs, loom_graph **graph_out)
{
    fill_weights();
    loom_graph *g = build_mlp_graph(NULL);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu:0"};
    loom_model_options mo = {.struct_size = sizeof mo, .plan = &po,
                             .max_specialisations = max_specs};
    loom_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_model_from_graph(test_rt, g, &mo, &m), LOOM_OK);
    if (graph_out)
        *graph_out = g;
    return m;
}

static loom_status run_mlp(loom_model *m, int64_t bt, int64_t sq, int check,
                           loom_model_run_stats *rs)
{
    const int64_t xd[3] = {bt, sq, HID}, ed[3] = {bt, EXTRA, OUTF};
    loom_tensor *x = make_f32(3, xd, 0.01f * (float)sq), *e = make_f32(3, ed, 0.5f);
    const loom_tensor *in[2] = {x, e};
    loom_tensor *out[3] = {NULL, NULL, NULL};
    loom_status st = loom_model_run(m, in, 2, out, 3, rs);
    if (st == LOOM_OK && check)
        check_mlp(bt, sq, x, e, out);
    else if (st != LOOM_OK && check)
        fprintf(stderr, "\n  run %lldx%lld: %s\n", (long long)bt, (long long)sq,
                loom_last_error());
    for (int i = 0; i < 3; i++)
        loom_tensor_destroy(out[i]);
    loom_tensor_destroy(x);
    loom_tensor_destroy(e);
    return st;
}

static void test_model_runs_every_shape_against_loops(void)
{
    loom_graph *g = NULL;
    loom_model *m = mlp_model(0, &g);
    CU_ASSERT_EQUAL(loom_model_input_count(m), 2);
    CU_ASSERT_EQUAL(loom_model_output_count(m), 3);
    loom_model_io io = {.struct_size = sizeof io};
    CU_ASSERT_EQUAL(loom_model_input_info(m, 0, &io), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(io.name, "x");
    CU_ASSERT_EQUAL(io.rank, 3);
    CU_ASSERT_EQUAL(io.dims[0], -1);
    CU_ASSERT_EQUAL(io.dims[2], HID);
    CU_ASSERT_STRING_EQUAL(io.dim_params[0], "batch");
    CU_ASSERT_STRING_EQUAL(io.dim_params[1], "seq");
    CU_ASSERT_PTR_NULL(io.dim_params[2]);
    CU_ASSERT_EQUAL(loom_model_output_info(m, 0, &io), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(io.name, "r");
    CU_ASSERT_STRING_EQUAL(io.dim_params[1], "4*seq+8");
    const int64_t shapes[][2] = {{1, 3}, {2, 5}, {3, 1}, {2, 5}, {1, 3}, {4, 16}};
    const int hits[] = {0, 0, 0, 1, 1, 0};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        loom_model_run_stats rs = {.struct_size = sizeof rs};
        CU_ASSERT_EQUAL(run_mlp(m, shapes[i][0], shapes[i][1], 1, &rs), LOOM_OK);
        CU_ASSERT_EQUAL(rs.cache_hit, hits[i]);
    }
    loom_model_stats s = {.struct_size = sizeof s};
    CU_ASSERT_EQUAL(loom_model_stats_get(m, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.runs, 6);
    CU_ASSERT_EQUAL(s.misses, 4);
    CU_ASSERT_EQUAL(s.hits, 2);
    CU_ASSERT_EQUAL(s.evictions, 0);
    CU_ASSERT_EQUAL(s.live, 4);
    loom_model_destroy(m);
}

static void test_specialisations_share_constants_once(void)
{
    loom_graph *g = NULL;
    loom_model *m = mlp_model(0, &g);
    size_t want = constant_bytes(g); /* W, B and the Reshape/Slice parameters */
    CU_ASSERT(want >= sizeof w_data + sizeof b_data);
    loom_model_stats s = {.struct_size = sizeof s};
    CU_ASSERT_EQUAL(loom_model_stats_get(m, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.weight_bytes, want);
    CU_ASSERT_EQUAL(s.live, 0);
    CU_ASSERT_EQUAL(s.borrowed_bytes, 0);
    for (int64_t sq = 1; sq <= 3; sq++)
        CU_ASSERT_EQUAL(run_mlp(m, 2, sq, 1, NULL), LOOM_OK);
    CU_ASSERT_EQUAL(loom_model_stats_get(m, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.live, 3);
    /* Still held once; every specialisation borrows all of them and copies none. */
    CU_ASSERT_EQUAL(s.weight_bytes, want);
    CU_ASSERT_EQUAL(s.borrowed_bytes, 3 * want);
    CU_ASSERT_EQUAL(s.copied_const_bytes, 0);
    /* A held plan of one specialisation runs like loom_model_run. */
    const int64_t xd[3] = {2, 2, HID}, ed[3] = {2, EXTRA, OUTF};
    loom_tensor *x = make_f32(3, xd, 0.02f), *e = make_f32(3, ed, 0.5f);
    const loom_tensor *in[2] = {x, e};
    loom_model_held_plan held;
    CU_ASSERT_EQUAL_FATAL(loom_model_acquire_plan(m, in, 2, &held), LOOM_OK);
    CU_ASSERT_EQUAL(held.n_inputs, 2);
    const loom_tensor *pin[2];
    for (size_t k = 0; k < held.n_inputs; k++)
        pin[k] = in[held.inputs[k]];
    loom_tensor *out[3] = {NULL, NULL, NULL};
    CU_ASSERT_EQUAL_FATAL(loom_plan_make_outputs(held.plan, out, 3), LOOM_OK);
    CU_ASSERT_EQUAL(loom_plan_run(held.plan, pin, held.n_inputs, out, 3, NULL), LOOM_OK);
    check_mlp(2, 2, x, e, out);
    loom_model_release_plan(m, &held);
    CU_ASSERT_EQUAL(loom_model_stats_get(m, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.hits, 1);
    for (int i = 0; i < 3; i++)
        loom_tensor_destroy(out[i]);
    loom_tensor_destroy(x);
    loom_tensor_destroy(e);
    loom_model_destroy(m);
}

static void test_cache_evicts_least_recently_used(void)
{
    loom_model *m = mlp_model(2, NULL);
    CU_ASSERT_EQUAL(run_mlp(m, 1, 2, 1, NULL), LOOM_OK); /* A: miss */
    CU_ASSERT_EQUAL(run_mlp(m, 1, 3, 1, NULL), LOOM_OK); /* B: miss */
    CU_ASSERT_EQUAL(run_mlp(m, 1, 2, 1, NULL), LOOM_OK); /* A: hit, now most recent */
    CU_ASSERT_EQUAL(run_mlp(m, 1, 4, 1, NULL), LOOM_OK); /* C: miss, evicts B */
    loom_model_run_stats rs = {.struct_size = sizeof rs};
    CU_ASSERT_EQUAL(run_mlp(m, 1, 2, 1, &rs), LOOM_OK); /* A: still cached */
    CU_ASSERT_EQUAL(rs.cache_hit, 1);
    CU_ASSERT_EQUAL(run_mlp(m, 1, 3, 1, &rs), LOOM_OK); /* B again: made anew */
    CU_ASSERT_EQUAL(rs.cache_hit, 0);
    CU_ASSERT(rs.create_ms > 0);
    loom_model_stats s = {.struct_size = sizeof s};
    CU_ASSERT_EQUAL(loom_model_stats_get(m, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.misses, 4);
    CU_ASSERT_EQUAL(s.hits, 2);
    CU_ASSERT_EQUAL(s.evictions, 2);
    CU_ASSERT_EQUAL(s.live, 2);
    CU_ASSERT_EQUAL(s.borrowed_bytes, 2 * s.weight_bytes);
    loom_model_destroy(m);
}

static void test_symbol_bound_two_ways_refused_at_run(void)
{
    loom_graph *g = loom_graph_create("two_inputs");
    const int64_t d[2] = {-1, -1};
    const char *n[2] = {"batch", "sequence"};
    loom_value a = loom_input_symbolic(g, "input_ids", LOOM_DTYPE_F32, 2, d, n);
    loom_value b = loom_input_symbolic(g, "attention_mask", LOOM_DTYPE_F32, 2, d, n);
    loom_output(g, loom_mul(g, a, b), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_model_from_graph(test_rt, g, NULL, &m), LOOM_OK);
    const int64_t da[2] = {2, 48}, db[2] = {2, 47};
    loom_tensor *ta = make_f32(2, da, 0), *tb = make_f32(2, db, 0), *out[1] = {NULL};
    const loom_tensor *in[2] = {ta, tb};
    CU_ASSERT_EQUAL(loom_model_run(m, in, 2, out, 1, NULL), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(out[0]);
    expect_msg("dimension 'sequence' is 48 in input_ids but 47 in attention_mask");
    loom_model_held_plan held;
    CU_ASSERT_EQUAL(loom_model_acquire_plan(m, in, 2, &held), LOOM_ERR_INVALID_ARGUMENT);
    expect_msg("'sequence'");
    /* Rank, dtype and NULL inputs. */
    loom_tensor *t1 = NULL, *ti = NULL;
    const int64_t d1[1] = {48};
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 1, d1, &t1), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_I64, 2, da, &ti), LOOM_OK);
    const loom_tensor *bad_rank[2] = {ta, t1}, *bad_type[2] = {ti, ta}, *bad_null[2] = {ta, NULL};
    CU_ASSERT_EQUAL(loom_model_run(m, bad_rank, 2, out, 1, NULL), LOOM_ERR_INVALID_ARGUMENT);
    expect_msg("attention_mask");
    expect_msg("rank");
    CU_ASSERT_EQUAL(loom_model_run(m, bad_type, 2, out, 1, NULL), LOOM_ERR_INVALID_ARGUMENT);
    expect_msg("input_ids");
    expect_msg("dtype");
    CU_ASSERT_EQUAL(loom_model_run(m, bad_null, 2, out, 1, NULL), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_model_run(m, in, 1, out, 1, NULL), LOOM_ERR_INVALID_ARGUMENT);
    /* Consistent shapes run. */
    const loom_tensor *good[2] = {ta, ta};
    CU_ASSERT_EQUAL(loom_model_run(m, good, 2, out, 1, NULL), LOOM_OK);
    const float *pa = loom_tensor_data(ta), *py = loom_tensor_data(out[0]);
    for (int i = 0; i < 96; i++)
        CU_ASSERT_DOUBLE_EQUAL(py[i], pa[i] * pa[i], 1e-6);
    loom_tensor_destroy(out[0]);
    loom_tensor_destroy(ta);
    loom_tensor_destroy(tb);
    loom_tensor_destroy(t1);
    loom_tensor_destroy(ti);
    loom_model_destroy(m);
}

static void test_fixed_dim_and_operator_refusals_at_run(void)
{
    /* x [batch, seq, 8]: a run with a last dim of 7 contradicts the fixed dim. */
    loom_model *m = mlp_model(0, NULL);
    const int64_t xd[3] = {2, 3, 7}, ed[3] = {2, EXTRA, OUTF};
    loom_tensor *x = make_f32(3, xd, 0), *e = make_f32(3, ed, 0), *out[3] = {NULL};
    const loom_tensor *in[2] = {x, e};
    CU_ASSERT_EQUAL(loom_model_run(m, in, 2, out, 3, NULL), LOOM_ERR_INVALID_ARGUMENT);
    expect_msg("input 'x'");
    expect_msg("7");
    loom_tensor_destroy(x);
    loom_tensor_destroy(e);
    /* batch bound to 2 by x and 3 by e. */
    const int64_t xd2[3] = {2, 3, HID}, ed2[3] = {3, EXTRA, OUTF};
    x = make_f32(3, xd2, 0);
    e = make_f32(3, ed2, 0);
    in[0] = x;
    in[1] = e;
    CU_ASSERT_EQUAL(loom_model_run(m, in, 2, out, 3, NULL), LOOM_ERR_INVALID_ARGUMENT);
    expect_msg("dimension 'batch' is 2 in x but 3 in e");
    loom_tensor_destroy(x);
    loom_tensor_destroy(e);
    loom_model_destroy(m);
    /* Reshape [batch, seq] -> [-1, 4]: admissible for the placeholders, refused at run time for
     * a seq that 4 does not divide, naming the node and the symbols' values. */
    loom_graph *g = loom_graph_create("reshape4");
    const int64_t d[2] = {-1, -1};
    const char *n[2] = {"batch", "seq"};
    loom_value xv = loom_input_symbolic(g, "x", LOOM_DTYPE_F32, 2, d, n);
    const int64_t shape[2] = {-1, 4};
    loom_value r = loom_reshape(g, xv, 2, shape);
    loom_output(g, r, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    expect_expr(g, r, 0, "batch*seq/4");
    CU_ASSERT_EQUAL_FATAL(loom_model_from_graph(test_rt, g, NULL, &m), LOOM_OK);
    const int64_t ok[2] = {2, 6}, bad[2] = {1, 3};
    x = make_f32(2, ok, 0);
    const loom_tensor *in1[1] = {x};
    CU_ASSERT_EQUAL(loom_model_run(m, in1, 1, out, 1, NULL), LOOM_OK);
    const int64_t yd[2] = {3, 4};
    expect_shape(out[0], 2, yd);
    CU_ASSERT_EQUAL(memcmp(loom_tensor_data(out[0]), loom_tensor_data(x), 12 * sizeof(float)),
                    0);
    loom_tensor_destroy(out[0]);
    loom_tensor_destroy(x);
    x = make_f32(2, bad, 0);
    in1[0] = x;
    out[0] = NULL;
    CU_ASSERT_EQUAL(loom_model_run(m, in1, 1, out, 1, NULL), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(out[0]);
    expect_msg("batch=1, seq=3");
    expect_msg("Reshape");
    loom_tensor_destroy(x);
    loom_model_stats s = {.struct_size = sizeof s};
    CU_ASSERT_EQUAL(loom_model_stats_get(m, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.live, 1); /* the refused shape left nothing cached */
    loom_model_destroy(m);
}

/* Self-attention over [batch, seq, 4]: scores [batch, seq, seq], softmax, times V. */
static void test_attention_with_seq_by_seq_scores(void)
{
    enum { D = 4 };
    float wq[D * D], wk[D * D], wv[D * D];
    for (int i = 0; i < D * D; i++) {
        wq[i] = 0.1f * (float)((i * 3) % 7) - 0.3f;
        wk[i] = 0.1f * (float)((i * 5) % 9) - 0.4f;
        wv[i] = 0.1f * (float)((i * 2) % 5) - 0.2f;
    }
    loom_graph *g = loom_graph_create("sym_attention");
    const int64_t xd[3] = {-1, -1, D}, wd[2] = {D, D};
    const char *xn[3] = {"batch", "seq", NULL};
    loom_value x = loom_input_symbolic(g, "x", LOOM_DTYPE_F32, 3, xd, xn);
    loom_value q = loom_matmul(g, x, loom_constant(g, "Wq", LOOM_DTYPE_F32, 2, wd, wq));
    loom_value k = loom_matmul(g, x, loom_constant(g, "Wk", LOOM_DTYPE_F32, 2, wd, wk));
    loom_value v = loom_matmul(g, x, loom_constant(g, "Wv", LOOM_DTYPE_F32, 2, wd, wv));
    const int64_t perm[3] = {0, 2, 1};
    loom_value scores = loom_matmul(g, q, loom_transpose(g, k, perm));
    loom_value y = loom_matmul(g, loom_softmax(g, scores, -1), v);
    loom_output(g, y, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    expect_expr(g, scores, 0, "batch");
    expect_expr(g, scores, 1, "seq");
    expect_expr(g, scores, 2, "seq");
    expect_expr(g, y, 2, "4");
    loom_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_model_from_graph(test_rt, g, NULL, &m), LOOM_OK);
    const int64_t shapes[][2] = {{1, 1}, {2, 5}, {3, 7}};
    for (size_t r = 0; r < 3; r++) {
        int64_t bt = shapes[r][0], sq = shapes[r][1];
        const int64_t d[3] = {bt, sq, D};
        loom_tensor *xt = make_f32(3, d, 0.05f * (float)r), *out[1] = {NULL};
        const loom_tensor *in[1] = {xt};
        CU_ASSERT_EQUAL_FATAL(loom_model_run(m, in, 1, out, 1, NULL), LOOM_OK);
        expect_shape(out[0], 3, d);
        const float *xp = loom_tensor_data(xt), *yp = loom_tensor_data(out[0]);
        for (int64_t b = 0; b < bt; b++) {
            double qq[8][D], kk[8][D], vv[8][D];
            for (int64_t i = 0; i < sq; i++)
                for (int j = 0; j < D; j++) {
                    qq[i][j] = kk[i][j] = vv[i][j] = 0;
                    for (int t = 0; t < D; t++) {
                        double xv = xp[(b * sq + i) * D + t];
                        qq[i][j] += xv * wq[t * D + j];
                        kk[i][j] += xv * wk[t * D + j];
                        vv[i][j] += xv * wv[t * D + j];
                    }
                }
            for (int64_t i = 0; i < sq; i++) {
                double p[8], mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < sq; j++) {
                    p[j] = 0;
                    for (int t = 0; t < D; t++)
                        p[j] += qq[i][t] * kk[j][t];
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int64_t j = 0; j < sq; j++)
                    sum += (p[j] = exp(p[j] - mx));
                for (int c = 0; c < D; c++) {
                    double want = 0;
                    for (int64_t j = 0; j < sq; j++)
                        want += p[j] / sum * vv[j][c];
                    CU_ASSERT_DOUBLE_EQUAL(yp[(b * sq + i) * D + c], want, 1e-5);
                }
            }
        }
        loom_tensor_destroy(out[0]);
        loom_tensor_destroy(xt);
    }
    loom_model_destroy(m);
}

static void test_graph_without_symbols_as_model(void)
{
    loom_graph *g = loom_graph_create("fixed");
    const int64_t d[2] = {2, 3};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, d);
    loom_output(g, loom_relu(g, x), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    CU_ASSERT_EQUAL(loom_graph_symbol_count(g), 0);
    loom_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_model_from_graph(test_rt, g, NULL, &m), LOOM_OK);
    loom_tensor *xt = make_f32(2, d, 0), *out[1] = {NULL};
    const loom_tensor *in[1] = {xt};
    CU_ASSERT_EQUAL(loom_model_run(m, in, 1, out, 1, NULL), LOOM_OK);
    const float *px = loom_tensor_data(xt), *py = loom_tensor_data(out[0]);
    for (int i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(py[i], px[i] > 0 ? px[i] : 0.0f);
    loom_tensor_destroy(out[0]);
    const int64_t d2[2] = {3, 3};
    loom_tensor *x2 = make_f32(2, d2, 0);
    in[0] = x2;
    CU_ASSERT_EQUAL(loom_model_run(m, in, 1, out, 1, NULL), LOOM_ERR_INVALID_ARGUMENT);
    expect_msg("fixes it at 2");
    loom_tensor_destroy(x2);
    loom_tensor_destroy(xt);
    loom_model_destroy(m);
}

int main(int argc, char **argv)
{
    static const test_entry check_tests[] = {
        TEST_ENTRY(test_symbols_carried_through_inference),
        TEST_ENTRY(test_conv_and_pool_windows_as_floor_divisions),
        TEST_ENTRY(test_symbol_against_constant_refused_at_check),
        TEST_ENTRY(test_two_symbols_forced_equal_refused_at_check),
        TEST_ENTRY(test_reshape_fixing_a_symbol_refused_at_check),
        TEST_ENTRY(test_bad_symbolic_inputs_refused),
        TEST_ENTRY(test_plan_create_refuses_symbolic_graph),
        {NULL, NULL},
    };
    static const test_entry model_tests[] = {
        TEST_ENTRY(test_model_runs_every_shape_against_loops),
        TEST_ENTRY(test_specialisations_share_constants_once),
        TEST_ENTRY(test_cache_evicts_least_recently_used),
        TEST_ENTRY(test_symbol_bound_two_ways_refused_at_run),
        TEST_ENTRY(test_fixed_dim_and_operator_refusals_at_run),
        TEST_ENTRY(test_attention_with_seq_by_seq_scores),
        TEST_ENTRY(test_graph_without_symbols_as_model),
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"graph_symbolic_check", check_tests, test_rt_open_default, test_rt_close, NULL, NULL},
        {"graph_symbolic_model", model_tests, test_rt_open_default, test_rt_close, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
