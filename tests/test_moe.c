/*
 * Tests of the Mixture-of-Experts operator (issue 14): the CPU kernel against naive loops written
 * from ONNX Runtime's documented semantics (softmax of the router logits, top k, optional
 * renormalisation, each expert's FFN, weighted sum) on odd sizes, k = 1 and k = number of
 * experts, experts that receive no token, every activation, biases or none, the gated FFN (fc3),
 * 3-D input, several column blocks, row counts around the kernel's tiles, weights given at run
 * instead of constants, the same bits on 1 and 3 threads; the builder; and the refusals at
 * shape inference (k out of range, expert weights of the wrong shape, ONNX Runtime 1.22's
 * transposed layout, an unsupported activation), each one line naming the node; and
 * com.microsoft MoE models imported from ONNX against the outputs of ONNX Runtime 1.24's CPU
 * MoE (tests/fixtures/moe/make_moe.py).
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

static float *rand_array(size_t n, float scale)
{
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = frand() * scale;
    return a;
}

static double act_ref(const char *act, double v)
{
    if (strcmp(act, "relu") == 0)
        return v > 0 ? v : 0;
    if (strcmp(act, "gelu") == 0)
        return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    if (strcmp(act, "silu") == 0)
        return v / (1.0 + exp(-v));
    return v;
}

/* One MoE layer, naive loops in double. w1/w3 [E, I, H], w2 [E, H, I]; biases may be NULL. */
static void moe_ref(const float *x, const float *logits, const float *w1, const float *b1,
                    const float *w2, const float *b2, const float *w3, const float *b3, int64_t t_n,
                    int64_t h_n, int64_t i_n, int64_t e_n, int64_t k, const char *act, int norm,
                    double *y, int *used)
{
    double *p = malloc((size_t)e_n * sizeof *p), *hid = malloc((size_t)i_n * sizeof *hid);
    int *taken = malloc((size_t)e_n * sizeof *taken);
    for (int64_t t = 0; t < t_n; t++) {
        double mx = -INFINITY, sum = 0;
        for (int64_t e = 0; e < e_n; e++)
            mx = fmax(mx, logits[t * e_n + e]);
        for (int64_t e = 0; e < e_n; e++)
            sum += p[e] = exp(logits[t * e_n + e] - mx);
        int64_t sel[64];
        double w[64], wsum = 0;
        memset(taken, 0, (size_t)e_n * sizeof *taken);
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < e_n; e++)
                if (!taken[e] && (best < 0 || p[e] > p[best]))
                    best = e;
            taken[best] = 1;
            sel[j] = best;
            w[j] = p[best] / sum;
            wsum += w[j];
        }
        for (int64_t c = 0; c < h_n; c++)
            y[t * h_n + c] = 0;
        for (int64_t j = 0; j < k; j++) {
            int64_t e = sel[j];
            double wj = norm ? w[j] / wsum : w[j];
            used[e] = 1;
            for (int64_t i = 0; i < i_n; i++) {
                double a = b1 ? b1[e * i_n + i] : 0, g = b3 ? b3[e * i_n + i] : 0;
                for (int64_t c = 0; c < h_n; c++) {
                    a += (double)w1[(e * i_n + i) * h_n + c] * x[t * h_n + c];
                    if (w3)
                        g += (double)w3[(e * i_n + i) * h_n + c] * x[t * h_n + c];
                }
                hid[i] = act_ref(act, a) * (w3 ? g : 1.0);
            }
            for (int64_t c = 0; c < h_n; c++) {
                double o = b2 ? b2[e * h_n + c] : 0;
                for (int64_t i = 0; i < i_n; i++)
                    o += (double)w2[(e * h_n + c) * i_n + i] * hid[i];
                y[t * h_n + c] += wj * o;
            }
        }
    }
    free(p);
    free(hid);
    free(taken);
}

typedef struct moe_case {
    int64_t batch; /* 0: input [T, H]; else [batch, T / batch, H] */
    int64_t t, h, i, e, k;
    const char *act;
    int norm, biases, fc3;
    int64_t starve; /* experts [0, starve) get logits so low that no token picks them */
    int inputs;     /* weights and biases are graph inputs given at run, not constants */
} moe_case;

/* Builds the case on the runtime RT, runs it twice against moe_ref and returns the output
 * (the caller frees it). */
static float *check_case_got(moe_case c)
{
    const int64_t T = c.t, H = c.h, I = c.i, E = c.e;
    float *x = rand_array((size_t)(T * H), 1.0f), *lg = rand_array((size_t)(T * E), 2.0f);
    for (int64_t t = 0; t < T; t++)
        for (int64_t e = 0; e < c.starve; e++)
            lg[t * E + e] = -40.0f;
    float *w1 = rand_array((size_t)(E * I * H), 0.3f), *w2 = rand_array((size_t)(E * H * I), 0.3f);
    float *w3 = c.fc3 ? rand_array((size_t)(E * I * H), 0.3f) : NULL;
    float *b1 = c.biases ? rand_array((size_t)(E * I), 0.5f) : NULL;
    float *b2 = c.biases ? rand_array((size_t)(E * H), 0.5f) : NULL;
    float *b3 = c.biases && c.fc3 ? rand_array((size_t)(E * I), 0.5f) : NULL;
    double *want = malloc((size_t)(T * H) * sizeof *want);
    int *used = calloc((size_t)E, sizeof *used);
    moe_ref(x, lg, w1, b1, w2, b2, w3, b3, T, H, I, E, c.k, c.act, c.norm, want, used);
    for (int64_t e = 0; e < c.starve; e++)
        CU_ASSERT_EQUAL(used[e], 0); /* the case does have experts with no token */

    loom_graph *g = loom_graph_create("moe");
    int64_t xd[3], xr;
    if (c.batch) {
        xd[0] = c.batch, xd[1] = T / c.batch, xd[2] = H, xr = 3;
    } else {
        xd[0] = T, xd[1] = H, xr = 2;
    }
    int64_t ld[2] = {T, E}, d1[3] = {E, I, H}, d2[3] = {E, H, I}, db1[2] = {E, I}, db2[2] = {E, H};
    /* The graph inputs first, in the order runs pass them. */
    loom_value vx = loom_input(g, "x", LOOM_DTYPE_F32, (size_t)xr, xd);
    loom_value vr = loom_input(g, "router", LOOM_DTYPE_F32, 2, ld);
    /* Weights and biases: constants (packed at prepare), or more graph inputs, in this order
     * (packed at run). */
    const char *wname[6] = {"w1", "b1", "w2", "b2", "w3", "b3"};
    const float *wdata[6] = {w1, b1, w2, b2, w3, b3};
    const int64_t *wdims[6] = {d1, db1, d2, db2, d1, db1};
    loom_value in[8] = {vx, vr};
    loom_tensor *ti[8], *to;
    size_t n_in = 2;
    for (int j = 0; j < 6; j++) {
        size_t rank = j % 2 ? 2 : 3;
        in[2 + j] = LOOM_NO_VALUE;
        if (!wdata[j])
            continue;
        if (!c.inputs) {
            in[2 + j] = loom_constant(g, wname[j], LOOM_DTYPE_F32, rank, wdims[j], wdata[j]);
            continue;
        }
        in[2 + j] = loom_input(g, wname[j], LOOM_DTYPE_F32, rank, wdims[j]);
        loom_tensor_wrap(LOOM_DTYPE_F32, rank, wdims[j], (void *)wdata[j], &ti[n_in++]);
    }
    loom_attr attrs[3] = {loom_attr_int("k", c.k), loom_attr_string("activation_type", c.act),
                          loom_attr_int("normalize_routing_weights", c.norm)};
    loom_value y;
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "MoE", "moe", in, c.fc3 ? (b3 ? 8 : 7) : 6, attrs, 3,
                                        &y, 1),
                          LOOM_OK);
    loom_output(g, y, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "MoE");
    float *got = calloc((size_t)(T * H), sizeof *got);
    loom_tensor_wrap(LOOM_DTYPE_F32, (size_t)xr, xd, x, &ti[0]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, ld, lg, &ti[1]);
    loom_tensor_wrap(LOOM_DTYPE_F32, (size_t)xr, xd, got, &to);
    /* Twice: the second run reuses the scratch the first left behind. */
    for (int rep = 0; rep < 2; rep++) {
        CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)ti, n_in, &to, 1, NULL),
                        LOOM_OK);
        int bad = 0;
        for (int64_t n = 0; n < T * H && bad < 5; n++)
            if (fabs(got[n] - want[n]) > 1e-4 * (1.0 + fabs(want[n]))) {
                printf("\n  T=%lld H=%lld I=%lld E=%lld k=%lld %s: y[%lld] = %.6f, want %.6f",
                       (long long)T, (long long)H, (long long)I, (long long)E, (long long)c.k,
                       c.act, (long long)n, got[n], want[n]);
                bad++;
            }
        CU_ASSERT_EQUAL(bad, 0);
    }
    for (size_t j = 0; j < n_in; j++)
        loom_tensor_destroy(ti[j]);
    loom_tensor_destroy(to);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(x), free(lg), free(w1), free(w2), free(w3), free(b1), free(b2), free(b3);
    free(want), free(used);
    return got;
}

static void check_case(moe_case c)
{
    free(check_case_got(c));
}

static void test_odd_sizes_top2_relu(void)
{
    check_case((moe_case){.t = 7, .h = 13, .i = 19, .e = 5, .k = 2, .act = "relu", .biases = 1});
}

static void test_k1_gelu(void)
{
    check_case((moe_case){.t = 11, .h = 9, .i = 17, .e = 4, .k = 1, .act = "gelu", .biases = 1});
}

static void test_k_equals_experts_silu_normalised(void)
{
    check_case((moe_case){.t = 6, .h = 10, .i = 14, .e = 3, .k = 3, .act = "silu", .norm = 1});
}

static void test_identity_without_biases(void)
{
    check_case((moe_case){.t = 5, .h = 8, .i = 12, .e = 6, .k = 2, .act = "identity"});
}

static void test_experts_with_no_token(void)
{
    /* Experts 0..3 of 7 are never chosen; the others share every token. */
    check_case((moe_case){.t = 9, .h = 11, .i = 21, .e = 7, .k = 2, .act = "relu", .norm = 1,
                          .biases = 1, .starve = 4});
    /* One token, top-1 of 8: seven experts idle. */
    check_case((moe_case){.t = 1, .h = 16, .i = 32, .e = 8, .k = 1, .act = "silu", .biases = 1});
}

static void test_gated_fc3_and_3d_input(void)
{
    check_case((moe_case){.batch = 2, .t = 10, .h = 12, .i = 18, .e = 4, .k = 2, .act = "silu",
                          .norm = 1, .biases = 1, .fc3 = 1});
    check_case((moe_case){.t = 6, .h = 7, .i = 9, .e = 3, .k = 1, .act = "gelu", .fc3 = 1});
}

static void test_several_column_blocks(void)
{
    /* inter and hidden above the kernel's 128-column blocks, with a partial last block. */
    check_case((moe_case){.t = 33, .h = 130, .i = 300, .e = 6, .k = 2, .act = "gelu",
                          .biases = 1});
}

static void test_weights_given_at_run(void)
{
    /* Weights that are graph inputs are packed into scratch at run (constants at prepare). */
    check_case((moe_case){.t = 13, .h = 21, .i = 37, .e = 5, .k = 2, .act = "silu", .norm = 1,
                          .biases = 1, .fc3 = 1, .inputs = 1});
    check_case((moe_case){.t = 9, .h = 11, .i = 21, .e = 7, .k = 2, .act = "relu", .biases = 1,
                          .starve = 4, .inputs = 1});
}

static void test_row_blocks_and_panels(void)
{
    /* Rows per expert around and beyond the kernel's 6-row tiles (every remainder 1..5 shows
     * up over the experts), inter and hidden not multiples of the 16-column panels (8 + 8
     * gated), a single column. */
    check_case((moe_case){.t = 41, .h = 35, .i = 70, .e = 3, .k = 2, .act = "relu", .biases = 1});
    check_case((moe_case){.t = 29, .h = 17, .i = 23, .e = 4, .k = 3, .act = "gelu", .norm = 1,
                          .biases = 1, .fc3 = 1});
    check_case((moe_case){.t = 64, .h = 64, .i = 96, .e = 8, .k = 2, .act = "identity",
                          .norm = 1, .fc3 = 1});
    check_case((moe_case){.t = 5, .h = 1, .i = 1, .e = 2, .k = 1, .act = "relu", .biases = 1});
}

static void test_same_result_on_any_thread_count(void)
{
    /* Bit for bit: work is split by columns, each output element summed in one fixed order. */
    static const uint32_t counts[2] = {1, 3};
    float *out[2] = {NULL, NULL};
    loom_runtime *saved = rt;
    const moe_case c = {.t = 64, .h = 48, .i = 80, .e = 8, .k = 2, .act = "silu", .norm = 1,
                        .biases = 1};
    for (int n = 0; n < 2; n++) {
        loom_runtime_options o = {.struct_size = sizeof o, .cpu_threads = counts[n]};
        CU_ASSERT_EQUAL_FATAL(loom_runtime_create(&o, &rt), LOOM_OK);
        rng = 0x9e3779b97f4a7c15ull; /* the same weights and inputs both times */
        out[n] = check_case_got(c);
        loom_runtime_destroy(rt);
    }
    rt = saved;
    CU_ASSERT_EQUAL(memcmp(out[0], out[1], (size_t)(c.t * c.h) * sizeof(float)), 0);
    free(out[0]);
    free(out[1]);
}

static void test_builder(void)
{
    const int64_t T = 4, H = 6, I = 10, E = 3;
    float *x = rand_array((size_t)(T * H), 1), *lg = rand_array((size_t)(T * E), 1);
    float *w1 = rand_array((size_t)(E * I * H), 0.3f), *w2 = rand_array((size_t)(E * H * I), 0.3f);
    float *b2 = rand_array((size_t)(E * H), 0.3f);
    loom_graph *g = loom_graph_create("b");
    int64_t xd[2] = {T, H}, ld[2] = {T, E}, d1[3] = {E, I, H}, d2[3] = {E, H, I}, db2[2] = {E, H};
    /* Inputs declared in order (argument evaluation order is unspecified in C). */
    loom_value vx = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd);
    loom_value vr = loom_input(g, "r", LOOM_DTYPE_F32, 2, ld);
    loom_value y = loom_moe(g, vx, vr, loom_constant(g, "w1", LOOM_DTYPE_F32, 3, d1, w1),
                            LOOM_NO_VALUE, loom_constant(g, "w2", LOOM_DTYPE_F32, 3, d2, w2),
                            loom_constant(g, "b2", LOOM_DTYPE_F32, 2, db2, b2), 2, NULL);
    CU_ASSERT_NOT_EQUAL_FATAL(y, LOOM_NO_VALUE);
    loom_output(g, y, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    float got[4 * 6];
    double want[4 * 6];
    int used[3] = {0};
    moe_ref(x, lg, w1, NULL, w2, b2, NULL, NULL, T, H, I, E, 2, "relu", 0, want, used);
    loom_tensor *ti[2], *to;
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, xd, x, &ti[0]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, ld, lg, &ti[1]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, xd, got, &to);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)ti, 2, &to, 1, NULL), LOOM_OK);
    for (int n = 0; n < T * H; n++)
        CU_ASSERT(fabs(got[n] - want[n]) <= 1e-4 * (1.0 + fabs(want[n])));
    loom_tensor_destroy(ti[0]);
    loom_tensor_destroy(ti[1]);
    loom_tensor_destroy(to);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    free(x), free(lg), free(w1), free(w2), free(b2);
}

/* Build a MoE node "bad_moe" with the given shapes and attributes; expect the graph to refuse it
 * with LOOM_ERR_INVALID_ARGUMENT and one line that names the node and contains NEEDLE. */
static void expect_refusal(const int64_t *d1, const int64_t *d2, int64_t k, const char *act,
                           int fc3_bias_only, const char *needle)
{
    const int64_t T = 3, H = 4, E = 3;
    loom_graph *g = loom_graph_create("bad");
    int64_t xd[2] = {T, H}, ld[2] = {T, E}, db[2] = {d1[0], d1[1]};
    loom_value in[8] = {loom_input(g, "x", LOOM_DTYPE_F32, 2, xd),
                        loom_input(g, "r", LOOM_DTYPE_F32, 2, ld),
                        loom_input(g, "w1", LOOM_DTYPE_F32, 3, d1),
                        LOOM_NO_VALUE,
                        loom_input(g, "w2", LOOM_DTYPE_F32, 3, d2),
                        LOOM_NO_VALUE,
                        LOOM_NO_VALUE,
                        fc3_bias_only ? loom_input(g, "b3", LOOM_DTYPE_F32, 2, db) : LOOM_NO_VALUE};
    loom_attr attrs[2] = {loom_attr_int("k", k), loom_attr_string("activation_type", act)};
    loom_value y;
    loom_status st = loom_graph_op(g, "MoE", "bad_moe", in, fc3_bias_only ? 8 : 5, attrs, 2, &y, 1);
    CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
    const char *msg = loom_last_error();
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    if (!strstr(msg, "bad_moe") || !strstr(msg, needle) || strchr(msg, '\n'))
        printf("\n  message: %s (wanted '%s')", msg, needle);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "bad_moe"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, needle));
    CU_ASSERT_PTR_NULL(strchr(msg, '\n'));
    loom_graph_destroy(g);
}

static void test_refusals_name_the_node(void)
{
    const int64_t ok1[3] = {3, 8, 4}, ok2[3] = {3, 4, 8};
    expect_refusal(ok1, ok2, 4, "relu", 0, "k = 4 is larger than the number of experts (3)");
    expect_refusal(ok1, ok2, 0, "relu", 0, "k = 0");
    expect_refusal(ok1, ok2, 2, "swiglu", 0, "activation_type 'swiglu' is not supported");
    expect_refusal(ok1, ok2, 2, "tanh", 0, "is not supported");
    const int64_t bad2[3] = {3, 8, 4}; /* fc2 transposed */
    expect_refusal(ok1, bad2, 2, "relu", 0, "fc2_experts_weights must be [3, 4, 8]");
    const int64_t few[3] = {2, 8, 4}; /* fewer experts than the router has */
    expect_refusal(few, ok2, 2, "relu", 0, "fc1_experts_weights must be [3, 8, 4]");
    const int64_t old1[3] = {3, 4, 8}, old2[3] = {3, 8, 4}; /* ORT <= 1.22's layout */
    expect_refusal(old1, old2, 2, "relu", 0, "ONNX Runtime 1.22");
    expect_refusal(ok1, ok2, 2, "relu", 1, "fc3_experts_bias is given without");
}

/* ---- ONNX: com.microsoft MoE against ONNX Runtime's outputs (tests/fixtures/moe) ---------- */

static char fixture_buf[4096];

static const char *fixture(const char *dir, const char *file)
{
    const char *root = getenv("LOOM_FIXTURES");
    snprintf(fixture_buf, sizeof fixture_buf, "%s/moe/%s/%s", root ? root : "tests/fixtures", dir,
             file);
    return fixture_buf;
}

/* Imports CASE/model.onnx, runs it on the CPU on its inputs and compares with the output ONNX
 * Runtime 1.24's CPU MoE computed (rtol 1e-4; make_moe.py checked ORT against numpy too). */
static void check_onnx_case(const char *name)
{
    loom_graph *g = NULL;
    loom_status st = loom_onnx_load(fixture(name, "model.onnx"), NULL, &g);
    if (st != LOOM_OK)
        printf("\n  %s", loom_last_error());
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_graph_input_count(g), 2);
    loom_plan *p = NULL;
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu", .strict = 1};
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &po, &p), LOOM_OK);
    loom_tensor *in[2] = {NULL, NULL}, *want = NULL, *out = NULL;
    for (size_t i = 0; i < 2; i++) {
        char file[256];
        snprintf(file, sizeof file, "input_%s.npy", loom_value_name(g, loom_graph_input(g, i)));
        CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(fixture(name, file), &in[i]), LOOM_OK);
    }
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(fixture(name, "expected_output.npy"), &want),
                          LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_plan_make_outputs(p, &out, 1), LOOM_OK);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)in, 2, &out, 1, NULL), LOOM_OK);
    size_t n = loom_tensor_nbytes(want) / sizeof(float);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_nbytes(out), loom_tensor_nbytes(want));
    const float *got = loom_tensor_data(out), *w = loom_tensor_data(want);
    int bad = 0;
    for (size_t i = 0; i < n && bad < 5; i++)
        if (fabsf(got[i] - w[i]) > 1e-4f * (1.0f + fabsf(w[i]))) {
            printf("\n  %s: output[%zu] = %.6f, ONNX Runtime %.6f", name, i, got[i], w[i]);
            bad++;
        }
    CU_ASSERT_EQUAL(bad, 0);
    loom_tensor_destroy(in[0]);
    loom_tensor_destroy(in[1]);
    loom_tensor_destroy(want);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_onnx_matches_onnx_runtime(void)
{
    check_onnx_case("silu_k2");     /* top-2 renormalised, biases, an expert never chosen */
    check_onnx_case("gelu_k1_3d");  /* [batch, seq, hidden], top-1, fc1 bias only */
    check_onnx_case("relu_k_all");  /* k = number of experts */
    check_onnx_case("identity_k2"); /* hidden = inter, two experts never chosen */
}

static void test_onnx_refusals_name_the_node(void)
{
    static const struct {
        const char *dir, *needle;
    } cases[] = {{"bad_k", "k = 9 is larger than the number of experts (3)"},
                 {"bad_activation", "activation_type 'swiglu' is not supported"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        loom_graph *g = NULL;
        loom_status st = loom_onnx_load(fixture(cases[i].dir, "model.onnx"), NULL, &g);
        CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
        const char *msg = loom_last_error();
        CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
        if (!strstr(msg, cases[i].dir) || !strstr(msg, cases[i].needle))
            printf("\n  message: %s", msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, cases[i].dir)); /* the node is moe_<dir> */
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, cases[i].needle));
        CU_ASSERT_PTR_NULL(strchr(msg, '\n'));
        loom_graph_destroy(g);
    }
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"odd sizes, top-2, relu, biases", test_odd_sizes_top2_relu},
        {"k = 1, gelu", test_k1_gelu},
        {"k = number of experts, silu, renormalised", test_k_equals_experts_silu_normalised},
        {"identity without biases", test_identity_without_biases},
        {"experts that receive no token", test_experts_with_no_token},
        {"gated FFN (fc3) and 3-D input", test_gated_fc3_and_3d_input},
        {"several column blocks", test_several_column_blocks},
        {"weights given at run (not constants)", test_weights_given_at_run},
        {"row blocks and panels", test_row_blocks_and_panels},
        {"same result on any thread count", test_same_result_on_any_thread_count},
        {"loom_moe builder", test_builder},
        {"refusals name the node", test_refusals_name_the_node},
        {"ONNX com.microsoft MoE matches ONNX Runtime", test_onnx_matches_onnx_runtime},
        {"ONNX refusals name the node", test_onnx_refusals_name_the_node},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"moe", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
