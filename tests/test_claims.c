/*
 * Subgraph claims (backend ABI 1.0, scheduler/claims.c) through the devmem test plugin, which
 * claims MatMul(+bias Add)(+Relu) and Gemm(+Relu) chains and computes each as one kernel: a
 * kept claim is one plan node with the right numbers and fewer copies; a claim predicted slower
 * than its nodes is split; broken claims (overlapping, out of range, disconnected, not convex,
 * a NaN estimate) are dropped with a message naming the rule and the plan still runs right;
 * a prepare_subgraph failure runs the nodes one by one; the explanation names each choice.
 * argv[1] is the devmem plugin. Numbers are compared with naive loops in double precision.
 */
#include <loom/loom.h>

#include <CUnit/Basic.h>
#include <jansson.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *p_devmem;
static char cache_dir[64];

enum { LAYERS = 3, B = 64, W = 256 };
static float wts[LAYERS][W * W], bias[LAYERS][W];

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
    }
}

/* A runtime with the devmem plugin, created with the environment ENV ("NAME=VALUE" pairs,
 * NULL-terminated), which the plugin reads when it is loaded. */
static loom_runtime *start(const char *const *env)
{
    for (size_t i = 0; env && env[i]; i++)
        putenv((char *)env[i]);
    const char *paths[1] = {p_devmem};
    loom_runtime_options o = {.struct_size = sizeof o, .plugin_paths = paths, .n_plugin_paths = 1,
                              .no_default_plugins = 1};
    loom_runtime *rt = NULL;
    CU_ASSERT_EQUAL(loom_runtime_create(&o, &rt), LOOM_OK);
    unsetenv("LOOM_TEST_DEVMEM_CLAIMS");
    unsetenv("LOOM_TEST_DEVMEM_CLAIM_S");
    unsetenv("LOOM_TEST_DEVMEM_SG_FAIL");
    unsetenv("LOOM_TEST_DEVMEM_FAIL");
    unsetenv("LOOM_TEST_DEVMEM_DEVICES");
    unsetenv("LOOM_TEST_DEVMEM_SHARES_HOST");
    return rt;
}

/* y = relu(...relu(relu(x W0 + b0) W1 + b1)... ), LAYERS layers of width W, batch B. */
static loom_graph *mlp(void)
{
    loom_graph *g = loom_graph_create("mlp");
    int64_t dx[2] = {B, W}, dw[2] = {W, W}, db[1] = {W};
    loom_value h = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    for (int l = 0; l < LAYERS; l++) {
        fill(wts[l], W * W, 10 + l);
        fill(bias[l], W, 20 + l);
        for (int i = 0; i < W * W; i++)
            wts[l][i] *= 0.2f;
        char wn[16], bn[16];
        snprintf(wn, sizeof wn, "w%d", l);
        snprintf(bn, sizeof bn, "b%d", l);
        loom_value mm = loom_matmul(g, h, loom_constant(g, wn, LOOM_DTYPE_F32, 2, dw, wts[l]));
        h = loom_relu(g, loom_add(g, mm, loom_constant(g, bn, LOOM_DTYPE_F32, 1, db, bias[l])));
    }
    loom_output(g, h, "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    return g;
}

static void mlp_reference(const float *x, float *y)
{
    static double h[B * W], t[B * W];
    for (int i = 0; i < B * W; i++)
        h[i] = x[i];
    for (int l = 0; l < LAYERS; l++) {
        for (int i = 0; i < B; i++)
            for (int j = 0; j < W; j++) {
                double s = bias[l][j];
                for (int q = 0; q < W; q++)
                    s += h[i * W + q] * wts[l][q * W + j];
                t[i * W + j] = s > 0 ? s : 0;
            }
        memcpy(h, t, sizeof h);
    }
    for (int i = 0; i < B * W; i++)
        y[i] = (float)h[i];
}

/* Run PLAN (one input, one output of [B, W]) on seeded data against REF. */
static void run_and_check(loom_plan *plan, void (*ref)(const float *, float *))
{
    int64_t dx[2] = {B, W};
    loom_tensor *x, *y;
    CU_ASSERT_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, dx, &x) == LOOM_OK);
    fill(loom_tensor_data(x), B * W, 7);
    CU_ASSERT_FATAL(loom_plan_make_outputs(plan, &y, 1) == LOOM_OK);
    loom_status s = loom_plan_run(plan, (const loom_tensor *const *)&x, 1, &y, 1, NULL);
    CU_ASSERT_EQUAL(s, LOOM_OK);
    if (s != LOOM_OK)
        fprintf(stderr, "run: %s\n", loom_last_error());
    static float want[B * W];
    ref(loom_tensor_data(x), want);
    const float *got = loom_tensor_data(y);
    double worst = 0;
    for (int i = 0; i < B * W; i++)
        worst = fmax(worst, fabs(got[i] - want[i]) / (1 + fabs(want[i])));
    CU_ASSERT(worst < 1e-4);
    if (worst >= 1e-4)
        fprintf(stderr, "worst relative error %g\n", worst);
    loom_tensor_destroy(x);
    loom_tensor_destroy(y);
}

static loom_plan *make_plan(loom_runtime *rt, loom_graph *g)
{
    loom_plan_options o = {.struct_size = sizeof o, .cache_dir = cache_dir};
    loom_plan *plan = NULL;
    loom_status s = loom_plan_create(rt, g, &o, &plan);
    CU_ASSERT_EQUAL(s, LOOM_OK);
    if (s != LOOM_OK)
        fprintf(stderr, "plan: %s\n", loom_last_error());
    return plan;
}

static size_t count_op(const loom_plan *plan, const char *op)
{
    size_t n = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++)
        n += !strcmp(loom_plan_node_op(plan, i), op);
    return n;
}

/* Nodes of op OP on device DEV (the CPU may claim the same chains: units are counted where
 * they run). */
static size_t count_on(const loom_plan *plan, const char *op, const char *dev)
{
    size_t n = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++)
        n += !strcmp(loom_plan_node_op(plan, i), op) &&
             !strcmp(loom_plan_node_device(plan, i), dev);
    return n;
}

/* Claims of device DEV in the JSON claims array CL with state STATE (NULL: any). */
static size_t claims_of(json_t *cl, const char *dev, const char *state)
{
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(cl); i++) {
        json_t *c = json_array_get(cl, i);
        n += !strcmp(json_string_value(json_object_get(c, "device")), dev) &&
             (!state || !strcmp(json_string_value(json_object_get(c, "state")), state));
    }
    return n;
}

static size_t n_copies(const loom_plan *plan)
{
    loom_plan_summary sm = {.struct_size = sizeof sm};
    CU_ASSERT_EQUAL(loom_plan_summary_get(plan, &sm), LOOM_OK);
    return sm.n_copies;
}

/* Whether some runtime message contains every one of A and B. */
static int said(const loom_runtime *rt, const char *a, const char *b)
{
    for (size_t i = 0; i < loom_runtime_message_count(rt); i++) {
        const char *m = loom_runtime_message(rt, i);
        if (m && strstr(m, a) && (!b || strstr(m, b)))
            return 1;
    }
    return 0;
}

/* The JSON explanation's claims array, parsed (caller decrefs ROOT). */
static json_t *claims_json(const loom_plan *plan, json_t **root)
{
    char *js = NULL;
    CU_ASSERT_FATAL(loom_plan_explain_json(plan, &js) == LOOM_OK);
    json_error_t jerr;
    *root = json_loads(js, 0, &jerr);
    loom_string_free(js);
    CU_ASSERT_FATAL(*root != NULL);
    return json_object_get(*root, "claims");
}

static void test_a_kept_claim_is_one_node_with_right_numbers_and_fewer_copies(void)
{
    loom_runtime *rt = start(NULL);
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = mlp();
    loom_plan *plan = make_plan(rt, g);
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), LAYERS);
    CU_ASSERT_EQUAL(count_op(plan, "Add"), 0);
    CU_ASSERT_EQUAL(count_op(plan, "Relu"), 0);
    size_t with = n_copies(plan);
    CU_ASSERT_EQUAL(with, 2); /* x up, y down */
    for (size_t i = 0; i < loom_plan_node_count(plan); i++) {
        if (strcmp(loom_plan_node_op(plan, i), "MatMul+Add+Relu"))
            continue;
        CU_ASSERT_STRING_EQUAL(loom_plan_node_device(plan, i), "devmem:0");
        loom_node_explain e = {.struct_size = sizeof e};
        CU_ASSERT_EQUAL(loom_plan_explain(plan, i, &e), LOOM_OK);
        CU_ASSERT_STRING_EQUAL(e.decided_by, "claim");
        CU_ASSERT_PTR_NOT_NULL(strstr(e.reason, "kept as a unit on devmem:0"));
        CU_ASSERT_PTR_NOT_NULL(strstr(e.reason, "vs split"));
        CU_ASSERT_PTR_NOT_NULL(strstr(e.reason, "it covers"));
    }
    run_and_check(plan, mlp_reference);
    run_and_check(plan, mlp_reference); /* a second run reuses the context */
    json_t *root;
    json_t *cl = claims_json(plan, &root);
    CU_ASSERT_EQUAL(claims_of(cl, "devmem:0", "kept"), LAYERS);
    for (size_t i = 0; i < json_array_size(cl); i++) {
        json_t *c = json_array_get(cl, i);
        if (strcmp(json_string_value(json_object_get(c, "state")), "kept"))
            continue;
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(c, "label")), "MatMul+Add+Relu");
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(c, "node_count")), 3);
        /* "nodes": an array of the node names, the unit's head first (the plan node's name). */
        json_t *names = json_object_get(c, "nodes");
        CU_ASSERT_FATAL(json_is_array(names));
        CU_ASSERT_EQUAL(json_array_size(names), 3);
        for (size_t k = 0; k < json_array_size(names); k++)
            CU_ASSERT(json_is_string(json_array_get(names, k)));
        int head_is_a_unit = 0;
        for (size_t k = 0; k < loom_plan_node_count(plan); k++)
            head_is_a_unit |= !strcmp(loom_plan_node_op(plan, k), "MatMul+Add+Relu") &&
                              json_is_string(json_array_get(names, 0)) &&
                              !strcmp(loom_plan_node_name(plan, k),
                                      json_string_value(json_array_get(names, 0)));
        CU_ASSERT(head_is_a_unit);
        CU_ASSERT(json_real_value(json_object_get(c, "unit_s")) <=
                  json_real_value(json_object_get(c, "split_s")));
    }
    json_decref(root);
    loom_plan_destroy(plan);
    /* The same graph without the claim stage (and without the CPU's own fusion, which would
     * keep every node on the CPU): the nodes one by one, more copies. */
    setenv("LOOM_CLAIMS", "0", 1);
    setenv("LOOM_FUSE", "0", 1);
    plan = make_plan(rt, g);
    unsetenv("LOOM_CLAIMS");
    unsetenv("LOOM_FUSE");
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), 0);
    cl = claims_json(plan, &root);
    CU_ASSERT_EQUAL(json_array_size(cl), 0);
    json_decref(root);
    CU_ASSERT(n_copies(plan) > with);
    run_and_check(plan, mlp_reference);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

/* Gemm (transB, alpha, beta, a [1, N] C) + Relu as one unit. */
enum { GK = 256, GN = 192 };
static float gw[GN * GK], gc[GN];

static void gemm_reference(const float *x, float *y)
{
    for (int i = 0; i < B; i++)
        for (int j = 0; j < GN; j++) {
            double s = 2.0 * gc[j];
            for (int q = 0; q < GK; q++)
                s += 0.5 * (double)x[i * GK + q] * gw[j * GK + q];
            y[i * GN + j] = s > 0 ? (float)s : 0.0f;
        }
}

static void test_a_gemm_relu_claim_runs_right(void)
{
    loom_runtime *rt = start(NULL);
    CU_ASSERT_FATAL(rt != NULL);
    fill(gw, GN * GK, 3);
    fill(gc, GN, 4);
    loom_graph *g = loom_graph_create("gemm");
    int64_t dx[2] = {B, GK}, dw[2] = {GN, GK}, dc[2] = {1, GN};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    loom_value y = loom_gemm(g, x, loom_constant(g, "w", LOOM_DTYPE_F32, 2, dw, gw),
                             loom_constant(g, "c", LOOM_DTYPE_F32, 2, dc, gc), 0.5f, 2.0f, 0, 1);
    loom_output(g, loom_relu(g, y), "y");
    CU_ASSERT_FATAL(loom_graph_check(g) == LOOM_OK);
    loom_plan *plan = make_plan(rt, g);
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_EQUAL(count_on(plan, "Gemm+Relu", "devmem:0"), 1);
    /* B x GK in, B x GN out: run_and_check's shapes are B x W, so check by hand. */
    loom_tensor *tx, *ty;
    CU_ASSERT_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, dx, &tx) == LOOM_OK);
    fill(loom_tensor_data(tx), B * GK, 9);
    CU_ASSERT_FATAL(loom_plan_make_outputs(plan, &ty, 1) == LOOM_OK);
    CU_ASSERT_EQUAL(loom_plan_run(plan, (const loom_tensor *const *)&tx, 1, &ty, 1, NULL),
                    LOOM_OK);
    static float want[B * GN];
    gemm_reference(loom_tensor_data(tx), want);
    const float *got = loom_tensor_data(ty);
    double worst = 0;
    for (int i = 0; i < B * GN; i++)
        worst = fmax(worst, fabs(got[i] - want[i]) / (1 + fabs(want[i])));
    CU_ASSERT(worst < 1e-4);
    loom_tensor_destroy(tx);
    loom_tensor_destroy(ty);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

/* Conv + Relu + MaxPool when another device claims subgraphs: the CPU's own claim takes the
 * pooling too (backends/common/chain_match.c), one node, the same numbers as naive loops. */
static void test_a_conv_relu_pool_chain_is_one_cpu_claim(void)
{
    loom_runtime *rt = start(NULL);
    CU_ASSERT_FATAL(rt != NULL);
    enum { N = 2, C = 3, H = 12, W = 14, M = 16, PH = H / 2, PW = W / 2 };
    static float w[M * C * 9], b[M], xv[N * C * H * W], want[N * M * PH * PW];
    fill(w, M * C * 9, 5);
    fill(b, M, 6);
    fill(xv, N * C * H * W, 7);
    loom_graph *g = loom_graph_create("conv_pool");
    int64_t dx[4] = {N, C, H, W}, dw[4] = {M, C, 3, 3}, db[1] = {M};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 4, dx);
    loom_window_params cp = {0}, pp = {0};
    cp.n_spatial = pp.n_spatial = 2;
    cp.pads[0] = cp.pads[1] = cp.pads[2] = cp.pads[3] = 1;
    pp.kernel_shape[0] = pp.kernel_shape[1] = pp.strides[0] = pp.strides[1] = 2;
    loom_value y = loom_conv(g, x, loom_constant(g, "w", LOOM_DTYPE_F32, 4, dw, w),
                             loom_constant(g, "b", LOOM_DTYPE_F32, 1, db, b), &cp);
    loom_output(g, loom_max_pool(g, loom_relu(g, y), &pp), "y");
    CU_ASSERT_FATAL(loom_graph_check(g) == LOOM_OK);
    loom_plan *plan = make_plan(rt, g);
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_EQUAL(count_on(plan, "Conv+Relu+MaxPool", "cpu:0"), 1);
    CU_ASSERT_EQUAL(loom_plan_node_count(plan), 1);
    loom_tensor *tx, *ty;
    CU_ASSERT_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 4, dx, &tx) == LOOM_OK);
    memcpy(loom_tensor_data(tx), xv, sizeof xv);
    CU_ASSERT_FATAL(loom_plan_make_outputs(plan, &ty, 1) == LOOM_OK);
    CU_ASSERT_EQUAL(loom_plan_run(plan, (const loom_tensor *const *)&tx, 1, &ty, 1, NULL),
                    LOOM_OK);
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++)
            for (int i = 0; i < PH; i++)
                for (int j = 0; j < PW; j++) {
                    double best = -INFINITY;
                    for (int a = 0; a < 4; a++) {
                        const int oh = 2 * i + a / 2, ow = 2 * j + a % 2;
                        double acc = b[m];
                        for (int c = 0; c < C; c++)
                            for (int ki = 0; ki < 3; ki++)
                                for (int kj = 0; kj < 3; kj++) {
                                    const int ih = oh - 1 + ki, iw = ow - 1 + kj;
                                    if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                        acc += (double)xv[((n * C + c) * H + ih) * W + iw] *
                                               w[((m * C + c) * 3 + ki) * 3 + kj];
                                }
                        best = fmax(best, acc > 0 ? acc : 0);
                    }
                    want[((n * M + m) * PH + i) * PW + j] = (float)best;
                }
    const float *got = loom_tensor_data(ty);
    double worst = 0;
    for (int i = 0; i < N * M * PH * PW; i++)
        worst = fmax(worst, fabs(got[i] - want[i]) / (1 + fabs(want[i])));
    CU_ASSERT(worst < 1e-5);
    loom_tensor_destroy(tx);
    loom_tensor_destroy(ty);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void test_a_claim_predicted_slower_than_its_nodes_is_split(void)
{
    const char *env[] = {"LOOM_TEST_DEVMEM_CLAIM_S=10", NULL}; /* 10 s per unit */
    loom_runtime *rt = start(env);
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = mlp();
    loom_plan *plan = make_plan(rt, g);
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), 0);
    int explained = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++) {
        loom_node_explain e = {.struct_size = sizeof e};
        CU_ASSERT_EQUAL(loom_plan_explain(plan, i, &e), LOOM_OK);
        explained |= strstr(e.reason, "was split") && strstr(e.reason, "predicted faster");
    }
    CU_ASSERT(explained);
    json_t *root;
    json_t *cl = claims_json(plan, &root);
    CU_ASSERT_EQUAL(claims_of(cl, "devmem:0", "split"), LAYERS);
    CU_ASSERT_EQUAL(claims_of(cl, "devmem:0", NULL), LAYERS);
    json_decref(root);
    run_and_check(plan, mlp_reference);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

/* A kept unit's measured time replaces its backend's estimate at the next placement, as a
 * single node's does: devmem estimates its MatMul+Add+Relu units at 0.1 us and runs them in
 * naive loops (milliseconds); after runs that record them (learn), the next plan splits them,
 * saying the unit's figure was measured, and still computes the right numbers. */
static void test_a_units_measured_time_replaces_its_estimate(void)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/loom-test-claims-learn-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    const char *env[] = {"LOOM_TEST_DEVMEM_CLAIM_S=1e-7", NULL};
    loom_runtime *rt = start(env);
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = mlp();
    loom_plan_options o = {.struct_size = sizeof o, .cache_dir = dir, .learn = 1};
    loom_plan *plan = NULL;
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), LAYERS);
    for (int r = 0; r < 4; r++)
        run_and_check(plan, mlp_reference);
    loom_plan_destroy(plan); /* saves what it measured */
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), 0);
    int measured = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++) {
        loom_node_explain e = {.struct_size = sizeof e};
        CU_ASSERT_EQUAL(loom_plan_explain(plan, i, &e), LOOM_OK);
        measured |= strstr(e.reason, "was split") && strstr(e.reason, "as one unit on devmem:0, "
                                                                      "measured)");
    }
    CU_ASSERT(measured);
    run_and_check(plan, mlp_reference);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

/* A device that computes on the host CPU's own cores (PoCL is one) stays out of automatic
 * placement while the CPU device runs the same nodes, its claims too: they are split, saying
 * why, however cheap their units are predicted (PoCL's MatMul+Add units, predicted at 0.09 ms
 * from a flat calibration, took 2.2 ms where the CPU took 0.15 ms). Asked for by name, the
 * device keeps them. */
static void test_claims_of_a_device_on_the_hosts_cores_are_split_unless_it_is_asked_for(void)
{
    const char *env[] = {"LOOM_TEST_DEVMEM_SHARES_HOST=1", "LOOM_TEST_DEVMEM_CLAIM_S=1e-7", NULL};
    loom_runtime *rt = start(env);
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = mlp();
    loom_plan *plan = make_plan(rt, g);
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), 0);
    int explained = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++) {
        CU_ASSERT_STRING_NOT_EQUAL(loom_plan_node_device(plan, i), "devmem:0");
        loom_node_explain e = {.struct_size = sizeof e};
        CU_ASSERT_EQUAL(loom_plan_explain(plan, i, &e), LOOM_OK);
        explained |= strstr(e.reason, "was split") && strstr(e.reason, "host's CPU cores");
    }
    CU_ASSERT(explained);
    json_t *root;
    json_t *cl = claims_json(plan, &root);
    CU_ASSERT_EQUAL(claims_of(cl, "devmem:0", "split"), LAYERS);
    json_decref(root);
    run_and_check(plan, mlp_reference);
    loom_plan_destroy(plan);
    loom_runtime_destroy(rt);

    rt = start(env);
    CU_ASSERT_FATAL(rt != NULL);
    loom_plan_options o = {.struct_size = sizeof o, .cache_dir = cache_dir, .device = "devmem:0"};
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), LAYERS);
    run_and_check(plan, mlp_reference);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

/* h = x W; y = h + relu(h): a diamond, for a claim {MatMul, Add} that is not convex. */
static float dw_[W * W];

static void diamond_reference(const float *x, float *y)
{
    for (int i = 0; i < B; i++)
        for (int j = 0; j < W; j++) {
            double s = 0;
            for (int q = 0; q < W; q++)
                s += (double)x[i * W + q] * dw_[q * W + j];
            y[i * W + j] = (float)(s + (s > 0 ? s : 0));
        }
}

static loom_graph *diamond(void)
{
    fill(dw_, W * W, 5);
    loom_graph *g = loom_graph_create("diamond");
    int64_t dx[2] = {B, W}, dw[2] = {W, W};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    loom_value h = loom_matmul(g, x, loom_constant(g, "w", LOOM_DTYPE_F32, 2, dw, dw_));
    loom_output(g, loom_add(g, h, loom_relu(g, h)), "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    return g;
}

static void test_broken_claims_are_dropped_with_a_message_and_the_plan_runs_right(void)
{
    static const struct {
        const char *env;
        const char *label, *rule;
        int diamond;
        size_t kept;
    } cases[] = {
        {"LOOM_TEST_DEVMEM_CLAIMS=overlap", "overlapping", "overlaps an earlier claim", 0, LAYERS},
        {"LOOM_TEST_DEVMEM_CLAIMS=range", "out-of-range", "out of range", 0, LAYERS},
        {"LOOM_TEST_DEVMEM_CLAIMS=disconnected", "disconnected", "not connected", 0, 1},
        {"LOOM_TEST_DEVMEM_CLAIMS=nan", "nan-estimate", "estimate", 0, LAYERS - 1},
        {"LOOM_TEST_DEVMEM_CLAIMS=nonconvex", "nonconvex", "not convex", 1, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const char *env[] = {cases[c].env, NULL};
        loom_runtime *rt = start(env);
        CU_ASSERT_FATAL(rt != NULL);
        loom_graph *g = cases[c].diamond ? diamond() : mlp();
        loom_plan *plan = make_plan(rt, g);
        CU_ASSERT_FATAL(plan != NULL);
        int named = said(rt, cases[c].label, cases[c].rule) && said(rt, "dropped", NULL);
        CU_ASSERT(named);
        if (!named) {
            fprintf(stderr, "case %s: messages:\n", cases[c].env);
            for (size_t i = 0; i < loom_runtime_message_count(rt); i++)
                fprintf(stderr, "  %s\n", loom_runtime_message(rt, i));
        }
        if (!cases[c].diamond) {
            CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), cases[c].kept);
            run_and_check(plan, mlp_reference);
        } else {
            run_and_check(plan, diamond_reference);
        }
        json_t *root;
        claims_json(plan, &root);
        CU_ASSERT(json_integer_value(json_object_get(root, "claims_dropped")) >= 1);
        json_decref(root);
        loom_plan_destroy(plan);
        loom_graph_destroy(g);
        loom_runtime_destroy(rt);
    }
}

static void test_a_claim_that_does_not_compile_runs_node_by_node(void)
{
    const char *env[] = {"LOOM_TEST_DEVMEM_SG_FAIL=1", NULL};
    loom_runtime *rt = start(env);
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = mlp();
    loom_plan *plan = make_plan(rt, g);
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), 0);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul", "devmem:0"), LAYERS);
    CU_ASSERT_EQUAL(count_op(plan, "Add"), LAYERS);
    CU_ASSERT(said(rt, "could not be compiled", "injected prepare_subgraph failure"));
    int explained = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++) {
        loom_node_explain e = {.struct_size = sizeof e};
        CU_ASSERT_EQUAL(loom_plan_explain(plan, i, &e), LOOM_OK);
        explained |= strstr(e.reason, "could not be compiled") != NULL;
    }
    CU_ASSERT(explained);
    json_t *root;
    json_t *cl = claims_json(plan, &root);
    CU_ASSERT_EQUAL(claims_of(cl, "devmem:0", "failed"), LAYERS);
    json_decref(root);
    run_and_check(plan, mlp_reference);
    run_and_check(plan, mlp_reference);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void test_pins_split_claims_and_the_requested_device_alone_keeps_them(void)
{
    loom_runtime *rt = start(NULL);
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = mlp();
    const char *pins[] = {"Relu=cpu"};
    loom_plan_options o = {.struct_size = sizeof o, .cache_dir = cache_dir, .pins = pins,
                           .n_pins = 1};
    loom_plan *plan = NULL;
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
    CU_ASSERT_EQUAL(count_op(plan, "MatMul+Add+Relu"), 0);
    CU_ASSERT_EQUAL(count_op(plan, "Relu"), LAYERS);
    run_and_check(plan, mlp_reference);
    loom_plan_destroy(plan);
    /* Every node on the CPU: devmem is not offered the graph. */
    loom_plan_options oc = {.struct_size = sizeof oc, .cache_dir = cache_dir, .device = "cpu:0"};
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &oc, &plan) == LOOM_OK);
    json_t *root;
    CU_ASSERT_EQUAL(claims_of(claims_json(plan, &root), "devmem:0", NULL), 0);
    json_decref(root);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), 0);
    run_and_check(plan, mlp_reference);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

/* A kept unit whose kernel fails at run time re-runs on the CPU's own compiled unit of the
 * same nodes (its run-time fallback, compiled at plan time): the run succeeds with the right
 * numbers and one fallback record naming the unit, devmem:0 and cpu:0. */
static void test_a_failing_unit_reruns_on_the_cpus_compiled_unit(void)
{
    const char *env[] = {"LOOM_TEST_DEVMEM_FAIL=2", NULL}; /* the second execution fails */
    loom_runtime *rt = start(env);
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = mlp();
    loom_plan *plan = make_plan(rt, g);
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), LAYERS);
    for (size_t i = 0; i < loom_plan_node_count(plan); i++) {
        if (strcmp(loom_plan_node_op(plan, i), "MatMul+Add+Relu"))
            continue;
        loom_node_explain e = {.struct_size = sizeof e};
        CU_ASSERT_EQUAL(loom_plan_explain(plan, i, &e), LOOM_OK);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.reason, "run-time fallback: cpu:0"));
    }
    json_t *root;
    json_t *cl = claims_json(plan, &root);
    for (size_t i = 0; i < json_array_size(cl); i++) {
        json_t *c = json_array_get(cl, i);
        if (!strcmp(json_string_value(json_object_get(c, "state")), "kept"))
            CU_ASSERT(json_is_string(json_object_get(c, "fallback")) &&
                      !strncmp(json_string_value(json_object_get(c, "fallback")), "cpu:0", 5));
    }
    json_decref(root);
    int64_t dx[2] = {B, W};
    loom_tensor *x, *y;
    CU_ASSERT_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, dx, &x) == LOOM_OK);
    fill(loom_tensor_data(x), B * W, 7);
    CU_ASSERT_FATAL(loom_plan_make_outputs(plan, &y, 1) == LOOM_OK);
    loom_fallback_info fb[4];
    memset(fb, 0, sizeof fb);
    loom_run_stats st = {.struct_size = sizeof st, .fallbacks = fb, .fallbacks_capacity = 4};
    loom_status s = loom_plan_run(plan, (const loom_tensor *const *)&x, 1, &y, 1, &st);
    CU_ASSERT_EQUAL(s, LOOM_OK);
    if (s != LOOM_OK)
        fprintf(stderr, "run: %s\n", loom_last_error());
    CU_ASSERT_EQUAL(st.fallback_count, 1);
    CU_ASSERT_EQUAL(st.fallbacks_written, 1);
    if (st.fallbacks_written == 1) {
        char dev[64];
        CU_ASSERT_STRING_EQUAL(loom_plan_node_op(plan, fb[0].node), "MatMul+Add+Relu");
        CU_ASSERT_EQUAL(loom_runtime_device(rt, fb[0].failed_device, dev, sizeof dev, NULL),
                        LOOM_OK);
        CU_ASSERT_STRING_EQUAL(dev, "devmem:0");
        CU_ASSERT_EQUAL(loom_runtime_device(rt, fb[0].ran_device, dev, sizeof dev, NULL),
                        LOOM_OK);
        CU_ASSERT_STRING_EQUAL(dev, "cpu:0");
        CU_ASSERT_PTR_NOT_NULL(strstr(fb[0].message, "injected failure"));
    }
    static float want[B * W];
    mlp_reference(loom_tensor_data(x), want);
    const float *got = loom_tensor_data(y);
    double worst = 0;
    for (int i = 0; i < B * W; i++)
        worst = fmax(worst, fabs(got[i] - want[i]) / (1 + fabs(want[i])));
    CU_ASSERT(worst < 1e-4);
    loom_tensor_destroy(x);
    loom_tensor_destroy(y);
    run_and_check(plan, mlp_reference); /* the next run is whole on devmem again */
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

/* y = x W + c with c a column [B, 1]: devmem claims MatMul+Add (its bias broadcasts either
 * way), the CPU does not claim that chain whole (its bias is a row), so the unit has no
 * run-time fallback and the explanation says so; it still runs right. */
static float col[B];

static void column_reference(const float *x, float *y)
{
    for (int i = 0; i < B; i++)
        for (int j = 0; j < W; j++) {
            double s = col[i];
            for (int q = 0; q < W; q++)
                s += (double)x[i * W + q] * wts[0][q * W + j];
            y[i * W + j] = (float)s;
        }
}

static void test_a_unit_no_other_device_compiles_says_it_has_no_fallback(void)
{
    loom_runtime *rt = start(NULL);
    CU_ASSERT_FATAL(rt != NULL);
    fill(wts[0], W * W, 10);
    fill(col, B, 21);
    loom_graph *g = loom_graph_create("column_bias");
    int64_t dx[2] = {B, W}, dw[2] = {W, W}, dc[2] = {B, 1};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    loom_value mm = loom_matmul(g, x, loom_constant(g, "w", LOOM_DTYPE_F32, 2, dw, wts[0]));
    loom_output(g, loom_add(g, mm, loom_constant(g, "c", LOOM_DTYPE_F32, 2, dc, col)), "y");
    CU_ASSERT_FATAL(loom_graph_check(g) == LOOM_OK);
    loom_plan *plan = make_plan(rt, g);
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add", "devmem:0"), 1);
    for (size_t i = 0; i < loom_plan_node_count(plan); i++) {
        if (strcmp(loom_plan_node_op(plan, i), "MatMul+Add"))
            continue;
        loom_node_explain e = {.struct_size = sizeof e};
        CU_ASSERT_EQUAL(loom_plan_explain(plan, i, &e), LOOM_OK);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.reason, "run-time fallback: none ("));
        if (!strstr(e.reason, "run-time fallback: none ("))
            fprintf(stderr, "reason: %s\n", e.reason);
    }
    run_and_check(plan, column_reference);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

/* y = relu(x W + b) with W and b declared before x: the unit's inputs are in value order, so
 * its activation is input 2. In the devmem plugin's queued mode (enqueue) it is still kept and
 * runs right. */
static void mlp1_reference(const float *x, float *y)
{
    for (int i = 0; i < B; i++)
        for (int j = 0; j < W; j++) {
            double s = bias[0][j];
            for (int q = 0; q < W; q++)
                s += (double)x[i * W + q] * wts[0][q * W + j];
            y[i * W + j] = s > 0 ? (float)s : 0.0f;
        }
}

static void test_a_queued_unit_whose_activation_is_input_2_runs(void)
{
    const char *env[] = {"LOOM_TEST_DEVMEM_DEVICES=1", NULL};
    loom_runtime *rt = start(env);
    CU_ASSERT_FATAL(rt != NULL);
    fill(wts[0], W * W, 10);
    fill(bias[0], W, 20);
    for (int i = 0; i < W * W; i++)
        wts[0][i] *= 0.2f;
    loom_graph *g = loom_graph_create("late_input");
    int64_t dx[2] = {B, W}, dw[2] = {W, W}, db[1] = {W};
    loom_value w = loom_constant(g, "w", LOOM_DTYPE_F32, 2, dw, wts[0]);
    loom_value b = loom_constant(g, "b", LOOM_DTYPE_F32, 1, db, bias[0]);
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    loom_output(g, loom_relu(g, loom_add(g, loom_matmul(g, x, w), b)), "y");
    CU_ASSERT_FATAL(loom_graph_check(g) == LOOM_OK);
    loom_plan *plan = make_plan(rt, g);
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), 1);
    json_t *root;
    json_t *cl = claims_json(plan, &root);
    CU_ASSERT_EQUAL(claims_of(cl, "devmem:0", "kept"), 1);
    CU_ASSERT_EQUAL(claims_of(cl, "devmem:0", "failed"), 0);
    json_decref(root);
    run_and_check(plan, mlp1_reference);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

/* The summary of plan stage NAME (NULL when the plan has none). */
static const char *stage_summary(const loom_plan *plan, const char *name)
{
    for (size_t i = 0; i < loom_plan_pass_count(plan); i++) {
        loom_pass_info pi = {.struct_size = sizeof pi};
        if (loom_plan_pass_info(plan, i, &pi) == LOOM_OK && !strcmp(pi.name, name))
            return pi.summary;
    }
    return NULL;
}

/* fuse_epilogue is off when another device claims subgraphs, and its summary says that (not
 * "no CPU"); with the CPU alone it fuses; LOOM_FUSE=0 and pins are named too. */
static void test_the_fuse_pass_says_why_it_is_off(void)
{
    loom_runtime *rt = start(NULL);
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = mlp();
    loom_plan *plan = make_plan(rt, g);
    CU_ASSERT_FATAL(plan != NULL);
    const char *sm = stage_summary(plan, "fuse_epilogue");
    CU_ASSERT_FATAL(sm != NULL);
    CU_ASSERT_STRING_EQUAL(sm, "off: devmem:0 claims subgraphs; the CPU fuses through its own "
                               "claims");
    loom_plan_destroy(plan);
    setenv("LOOM_FUSE", "0", 1);
    plan = make_plan(rt, g);
    unsetenv("LOOM_FUSE");
    CU_ASSERT_FATAL(plan != NULL);
    CU_ASSERT_STRING_EQUAL(stage_summary(plan, "fuse_epilogue"), "off: LOOM_FUSE=0");
    loom_plan_destroy(plan);
    const char *pins[] = {"Relu=cpu"};
    loom_plan_options o = {.struct_size = sizeof o, .cache_dir = cache_dir, .pins = pins,
                           .n_pins = 1};
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
    CU_ASSERT_STRING_EQUAL(stage_summary(plan, "fuse_epilogue"),
                           "off: pins name the graph's nodes as written");
    loom_plan_destroy(plan);
    loom_plan_options oc = {.struct_size = sizeof oc, .cache_dir = cache_dir, .device = "cpu:0"};
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &oc, &plan) == LOOM_OK);
    sm = stage_summary(plan, "fuse_epilogue");
    CU_ASSERT(sm && strncmp(sm, "off", 3) != 0);
    loom_plan_destroy(plan);
    oc.device = "devmem:0";
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &oc, &plan) == LOOM_OK);
    CU_ASSERT_STRING_EQUAL(stage_summary(plan, "fuse_epilogue"),
                           "off (no CPU among the devices the plan may use)");
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void remove_cache(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", cache_dir);
}

/* A strict plan on devmem:0 alone: the bias Add devmem cannot run alone is run inside its kept
 * claim (was refused: "cannot run on devmem:0 (strict placement)" before the claims were
 * decided), and its split is priced on devmem:0, where a strict plan would put it, not on the
 * CPU, so a claim predicted slow (1 s) is still kept: it cannot be split there. A pin that splits
 * the claim refuses the strict plan, naming the node and the claim. */
static void test_a_strict_plan_runs_what_the_device_runs_only_inside_its_claim(void)
{
    loom_runtime *rt = start(NULL);
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = mlp();
    loom_plan_options o = {.struct_size = sizeof o, .cache_dir = cache_dir,
                           .device = "devmem:0", .strict = 1};
    loom_plan *plan = NULL;
    loom_status st = loom_plan_create(rt, g, &o, &plan);
    CU_ASSERT_EQUAL(st, LOOM_OK);
    if (st != LOOM_OK)
        fprintf(stderr, "strict plan: %s\n", loom_last_error());
    if (plan) {
        CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), LAYERS);
        run_and_check(plan, mlp_reference);
        loom_plan_destroy(plan);
    }
    loom_runtime_destroy(rt);
    const char *env[] = {"LOOM_TEST_DEVMEM_CLAIM_S=1", NULL};
    rt = start(env);
    CU_ASSERT_FATAL(rt != NULL);
    plan = NULL;
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, &o, &plan), LOOM_OK);
    CU_ASSERT_EQUAL(count_on(plan, "MatMul+Add+Relu", "devmem:0"), LAYERS);
    loom_plan_destroy(plan);
    const char *pins[] = {"Relu=cpu"};
    o.pins = pins;
    o.n_pins = 1;
    plan = NULL;
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, &o, &plan), LOOM_ERR_UNSUPPORTED);
    CU_ASSERT(strstr(loom_last_error(), "cannot run on devmem:0 (strict placement)") != NULL);
    CU_ASSERT(strstr(loom_last_error(), "its claim was not kept") != NULL);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_claims DEVMEM_PLUGIN\n");
        return 2;
    }
    p_devmem = argv[1];
    setenv("LOOM_OPENCL", "0", 1); /* the devmem device and the CPU only: deterministic */
    unsetenv("LOOM_CLAIMS");
    snprintf(cache_dir, sizeof cache_dir, "/tmp/loom-test-claims-XXXXXX");
    if (!mkdtemp(cache_dir))
        return 1;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("claims", NULL, NULL);
    CU_add_test(s, "a kept claim is one node with right numbers and fewer copies",
                test_a_kept_claim_is_one_node_with_right_numbers_and_fewer_copies);
    CU_add_test(s, "a Gemm+Relu claim runs right", test_a_gemm_relu_claim_runs_right);
    CU_add_test(s, "a Conv+Relu+MaxPool chain is one CPU claim",
                test_a_conv_relu_pool_chain_is_one_cpu_claim);
    CU_add_test(s, "a claim predicted slower than its nodes is split",
                test_a_claim_predicted_slower_than_its_nodes_is_split);
    CU_add_test(s, "a unit's measured time replaces its estimate",
                test_a_units_measured_time_replaces_its_estimate);
    CU_add_test(s, "claims of a device on the host's cores are split unless it is asked for",
                test_claims_of_a_device_on_the_hosts_cores_are_split_unless_it_is_asked_for);
    CU_add_test(s, "broken claims are dropped with a message and the plan runs right",
                test_broken_claims_are_dropped_with_a_message_and_the_plan_runs_right);
    CU_add_test(s, "a claim that does not compile runs node by node",
                test_a_claim_that_does_not_compile_runs_node_by_node);
    CU_add_test(s, "pins split claims; the requested device alone keeps them out",
                test_pins_split_claims_and_the_requested_device_alone_keeps_them);
    CU_add_test(s, "the fuse pass says why it is off", test_the_fuse_pass_says_why_it_is_off);
    CU_add_test(s, "a failing unit re-runs on the CPU's compiled unit",
                test_a_failing_unit_reruns_on_the_cpus_compiled_unit);
    CU_add_test(s, "a unit no other device compiles says it has no fallback",
                test_a_unit_no_other_device_compiles_says_it_has_no_fallback);
    CU_add_test(s, "a queued unit whose activation is input 2 runs",
                test_a_queued_unit_whose_activation_is_input_2_runs);
    CU_add_test(s, "a strict plan runs what the device runs only inside its claim",
                test_a_strict_plan_runs_what_the_device_runs_only_inside_its_claim);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    remove_cache();
    return failed ? 1 : 0;
}
