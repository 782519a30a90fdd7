/*
 * Agreement with ONNX Runtime: each model under tests/fixtures/ (an MLP, a small CNN, a 4-layer
 * transformer encoder, built by tests/fixtures/make_fixtures.py) is imported with
 * loom_onnx_load, run on the CPU on its committed inputs, and compared with the outputs ONNX
 * Runtime computed for the same inputs. Needs only the committed files (no node, no python).
 *
 * The folder comes from LOOM_FIXTURES (set by tests/meson.build) or the first argument.
 * LOOM_TEST_DEVICE picks where the models run: "cpu" (the default, strict), a device id such as
 * "opencl" (what it cannot run goes to the CPU; at least one node must run on it; the test is
 * skipped, exit 77, when no such device exists), or "auto" (the placement policy decides).
 * With LOOM_TEST_EXPECT_FALLBACK=1 (set with a LOOM_FAULT injection) at least one node must
 * have failed on its device and been re-run elsewhere, the outputs still matching. With
 * LOOM_TEST_EXPECT_MOVED=1 (an injected device-memory failure) a plan must have been placed away
 * from the device when its memory could not be had (the runtime says so), so "at least one node
 * on the device" is not asked of every model.
 * Files of one model: model.onnx, input_<graph input name>.npy, expected_<graph output name>.npy.
 *
 * Tolerance: |loom - ort| <= ATOL + RTOL * |ort| per element, with ATOL 1e-4 and RTOL 1e-3.
 * Both sides compute in float32 but differ legitimately: OpenBLAS and ORT's MLAS sum GEMM and
 * convolution dot products (K up to 576 here) in different orders, with or without FMA, and
 * exp/erf/sqrt come from different approximations; that is a few float32 ulps per op, and the
 * LayerNormalizations keep it from growing across layers (ORT itself is within 2.1e-6 of a
 * float64 NumPy forward pass on these fixtures). ATOL covers outputs near zero, where a relative
 * bound means nothing; RTOL (~2^-10) stays two orders of magnitude above rounding noise yet far
 * below what a real mistake costs (a wrong axis, epsilon, transpose or a dropped bias moves
 * outputs by 1e-2 or more).
 */
#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATOL 1e-4
#define RTOL 1e-3

static const char *fixtures_dir;
static loom_runtime *rt;
static const char *run_device = "cpu"; /* NULL: placed by the policy */
static size_t total_fallbacks;         /* nodes re-run on another device, all models */
static int expect_moved;               /* LOOM_TEST_EXPECT_MOVED=1 */

static int suite_init(void)
{
    if (!fixtures_dir) {
        fprintf(stderr, "test_fixtures: set LOOM_FIXTURES (or pass the folder) to tests/fixtures\n");
        return 1;
    }
    return loom_runtime_create(NULL, &rt) == LOOM_OK ? 0 : 1;
}

static int suite_clean(void)
{
    loom_runtime_destroy(rt);
    return 0;
}

static void fixture_path(char *buf, size_t len, const char *model, const char *prefix,
                         const char *name, const char *suffix)
{
    snprintf(buf, len, "%s/%s/%s%s%s", fixtures_dir, model, prefix, name, suffix);
}

static int64_t element_count(const loom_tensor *t)
{
    int64_t dims[LOOM_MAX_RANK], n = 1;
    loom_tensor_dims(t, dims);
    for (uint32_t k = 0; k < loom_tensor_rank(t); k++)
        n *= dims[k];
    return n;
}

/* Whether GOT and WANT have one dtype and shape; prints what differs. */
static int same_layout(const char *what, const loom_tensor *got, const loom_tensor *want)
{
    int64_t dg[LOOM_MAX_RANK], dw[LOOM_MAX_RANK];
    loom_tensor_dims(got, dg);
    loom_tensor_dims(want, dw);
    int same = loom_tensor_dtype(got) == loom_tensor_dtype(want) &&
               loom_tensor_rank(got) == loom_tensor_rank(want);
    for (uint32_t k = 0; same && k < loom_tensor_rank(got); k++)
        same = dg[k] == dw[k];
    if (!same)
        printf("\n    %s: Loom gives %s rank %u, ONNX Runtime %s rank %u (or dims differ)",
               what, loom_dtype_name(loom_tensor_dtype(got)), loom_tensor_rank(got),
               loom_dtype_name(loom_tensor_dtype(want)), loom_tensor_rank(want));
    return same;
}

/* Counts the elements of GOT outside the tolerance around WANT (NaN counts as outside) and
 * prints the worst one. Non-float outputs must match exactly. */
static int64_t count_mismatches(const char *what, const loom_tensor *got, const loom_tensor *want)
{
    int64_t n = element_count(want), bad = 0, worst = -1;
    if (loom_tensor_dtype(want) != LOOM_DTYPE_F32)
        return memcmp(loom_tensor_data(got), loom_tensor_data(want), loom_tensor_nbytes(want)) != 0;
    const float *g = loom_tensor_data(got), *w = loom_tensor_data(want);
    double worst_excess = 0, max_abs = 0;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)g[i] - (double)w[i]);
        double tol = ATOL + RTOL * fabs((double)w[i]);
        if (!(err <= tol)) {
            bad++;
            if (worst < 0 || isnan(err) || err - tol > worst_excess) {
                worst = i;
                worst_excess = isnan(err) ? INFINITY : err - tol;
            }
        }
        if (err > max_abs)
            max_abs = err;
    }
    if (bad)
        printf("\n    %s: %lld of %lld elements outside atol %g + rtol %g; worst at flat index "
               "%lld: Loom %.7g, ONNX Runtime %.7g",
               what, (long long)bad, (long long)n, ATOL, RTOL, (long long)worst, g[worst], w[worst]);
    else
        printf("\n    %s: %lld elements, max |Loom - ORT| %.3g", what, (long long)n, max_abs);
    return bad;
}

/* Imports MODEL, runs it twice on the CPU (the second run reuses the plan's memory) and compares
 * every output with ONNX Runtime's. */
static void check_fixture(const char *model)
{
    char path[4096];
    loom_graph *g = NULL;
    loom_plan *plan = NULL;
    loom_tensor *inputs[16] = {0}, *outputs[16] = {0}, *expected[16] = {0};
    size_t n_in = 0, n_out = 0;

    fixture_path(path, sizeof path, model, "model", "", ".onnx");
    loom_status st = loom_onnx_load(path, NULL, &g);
    if (st != LOOM_OK)
        printf("\n    %s", loom_last_error()); /* names the file */
    CU_ASSERT_EQUAL(st, LOOM_OK);
    if (st != LOOM_OK)
        goto out;

    n_in = loom_graph_input_count(g);
    n_out = loom_graph_output_count(g);
    CU_ASSERT(n_in >= 1 && n_in <= 16 && n_out >= 1 && n_out <= 16);
    if (n_in < 1 || n_in > 16 || n_out < 1 || n_out > 16)
        goto out;

    loom_plan_options po = {.struct_size = sizeof po, .device = run_device,
                            .strict = run_device && !strcmp(run_device, "cpu")};
    st = loom_plan_create(rt, g, &po, &plan);
    if (st != LOOM_OK)
        printf("\n    %s: plan: %s", model, loom_last_error());
    CU_ASSERT_EQUAL(st, LOOM_OK);
    if (st != LOOM_OK)
        goto out;
    if (run_device && strcmp(run_device, "cpu")) {
        size_t on = 0;
        for (size_t i = 0; i < loom_plan_node_count(plan); i++)
            on += !loom_plan_node_is_copy(plan, i) &&
                  !strncmp(loom_plan_node_device(plan, i), run_device, strlen(run_device));
        printf(" [%zu of %zu nodes on %s]", on, loom_plan_node_count(plan), run_device);
        if (!expect_moved)
            CU_ASSERT(on > 0);
    }

    int files_loaded = 1;
    for (size_t i = 0; i < n_in && files_loaded; i++) {
        fixture_path(path, sizeof path, model, "input_",
                     loom_value_name(g, loom_graph_input(g, i)), ".npy");
        files_loaded = loom_tensor_load_npy(path, &inputs[i]) == LOOM_OK;
        if (!files_loaded)
            printf("\n    %s", loom_last_error());
    }
    for (size_t i = 0; i < n_out && files_loaded; i++) {
        fixture_path(path, sizeof path, model, "expected_",
                     loom_value_name(g, loom_graph_output(g, i)), ".npy");
        files_loaded = loom_tensor_load_npy(path, &expected[i]) == LOOM_OK;
        if (!files_loaded)
            printf("\n    %s", loom_last_error());
    }
    CU_ASSERT(files_loaded);
    if (!files_loaded)
        goto out;
    CU_ASSERT_EQUAL(loom_plan_make_outputs(plan, outputs, n_out), LOOM_OK);

    for (int run = 0; run < 2; run++) {
        loom_run_stats rs = {.struct_size = sizeof rs};
        st = loom_plan_run(plan, (const loom_tensor *const *)inputs, n_in, outputs, n_out, &rs);
        total_fallbacks += rs.fallback_count;
        if (st != LOOM_OK)
            printf("\n    %s: run: %s", model, loom_last_error());
        CU_ASSERT_EQUAL(st, LOOM_OK);
        if (st != LOOM_OK)
            break;
        for (size_t i = 0; i < n_out; i++) {
            char what[256];
            snprintf(what, sizeof what, "%s/%s (run %d)", model,
                     loom_value_name(g, loom_graph_output(g, i)), run + 1);
            int same = same_layout(what, outputs[i], expected[i]);
            CU_ASSERT(same);
            if (same)
                CU_ASSERT_EQUAL(count_mismatches(what, outputs[i], expected[i]), 0);
        }
    }

out:
    printf("\n  "); /* CUnit's verdict on its own line */
    for (size_t i = 0; i < 16; i++) {
        loom_tensor_destroy(inputs[i]);
        loom_tensor_destroy(outputs[i]);
        loom_tensor_destroy(expected[i]);
    }
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
}

static void test_mlp_matches_onnx_runtime(void)
{
    check_fixture("mlp");
}

static void test_cnn_matches_onnx_runtime(void)
{
    check_fixture("cnn");
}

static void test_transformer_encoder_matches_onnx_runtime(void)
{
    check_fixture("transformer");
}

static void test_injected_fault_was_survived(void)
{
    printf(" [%zu node(s) re-run elsewhere]", total_fallbacks);
    CU_ASSERT(total_fallbacks > 0);
}

static void test_device_without_memory_was_placed_around(void)
{
    int said = 0;
    for (size_t i = 0; i < loom_runtime_message_count(rt); i++)
        said |= strstr(loom_runtime_message(rt, i), "its nodes are placed on other devices") != NULL;
    CU_ASSERT(said);
}

int main(int argc, char **argv)
{
    fixtures_dir = argc > 1 ? argv[1] : getenv("LOOM_FIXTURES");
    const char *dev = getenv("LOOM_TEST_DEVICE");
    if (dev && *dev)
        run_device = strcmp(dev, "auto") ? dev : NULL;
    if (run_device && strcmp(run_device, "cpu")) {
        /* Skip, as meson understands it, where the device does not exist. */
        loom_runtime *probe;
        int found = 0;
        if (loom_runtime_create(NULL, &probe) == LOOM_OK) {
            for (size_t i = 0; i < loom_runtime_device_count(probe) && !found; i++) {
                char id[64];
                loom_runtime_device(probe, i, id, sizeof id, NULL);
                found = !strncmp(id, run_device, strlen(run_device));
            }
            loom_runtime_destroy(probe);
        }
        if (!found) {
            printf("SKIP: no device '%s' here\n", run_device);
            return 77;
        }
    } else if (run_device) {
        setenv("LOOM_OPENCL", "0", 0); /* not needed for a CPU run */
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("fixtures", suite_init, suite_clean);
    CU_add_test(s, "mlp_matches_onnx_runtime", test_mlp_matches_onnx_runtime);
    CU_add_test(s, "cnn_matches_onnx_runtime", test_cnn_matches_onnx_runtime);
    CU_add_test(s, "transformer_encoder_matches_onnx_runtime",
                test_transformer_encoder_matches_onnx_runtime);
    const char *expect_fb = getenv("LOOM_TEST_EXPECT_FALLBACK");
    if (expect_fb && !strcmp(expect_fb, "1"))
        CU_add_test(s, "injected_fault_was_survived", test_injected_fault_was_survived);
    const char *moved = getenv("LOOM_TEST_EXPECT_MOVED");
    expect_moved = moved && !strcmp(moved, "1");
    if (expect_moved)
        CU_add_test(s, "device_without_memory_was_placed_around",
                    test_device_without_memory_was_placed_around);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    failed += CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
