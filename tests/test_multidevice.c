/*
 * Plans across several devices: the placement's choices, the copy nodes it inserts for a device
 * whose memory the host cannot address (the devmem test plugin), pins, explanations, the staged
 * fallback when such a device fails, learning into the cost model's history, and numbers
 * against naive loops. argv[1] is the devmem plugin.
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

static loom_runtime *start(void)
{
    const char *paths[1] = {p_devmem};
    loom_runtime_options o = {.struct_size = sizeof o, .plugin_paths = paths, .n_plugin_paths = 1,
                              .no_default_plugins = 1};
    loom_runtime *rt = NULL;
    CU_ASSERT_EQUAL(loom_runtime_create(&o, &rt), LOOM_OK);
    return rt;
}

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
    }
}

/* y = relu(x W1) W2 + relu(x W3) W4 (two towers), sizes M x K -> H -> N */
enum { M = 64, K = 256, H = 256, N = 64 };
static float w1[K * H], w2[H * N], w3[K * H], w4[H * N];

static loom_graph *two_towers(void)
{
    fill(w1, K * H, 1);
    fill(w2, H * N, 2);
    fill(w3, K * H, 3);
    fill(w4, H * N, 4);
    loom_graph *g = loom_graph_create("towers");
    int64_t dx[2] = {M, K}, d1[2] = {K, H}, d2[2] = {H, N};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    loom_value a = loom_relu(g, loom_matmul(g, x, loom_constant(g, "w1", LOOM_DTYPE_F32, 2, d1, w1)));
    loom_value b = loom_relu(g, loom_matmul(g, x, loom_constant(g, "w3", LOOM_DTYPE_F32, 2, d1, w3)));
    a = loom_matmul(g, a, loom_constant(g, "w2", LOOM_DTYPE_F32, 2, d2, w2));
    b = loom_matmul(g, b, loom_constant(g, "w4", LOOM_DTYPE_F32, 2, d2, w4));
    loom_output(g, loom_add(g, a, b), "y");
    loom_output(g, a, "a");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    return g;
}

static void reference(const float *x, float *y, float *a_out)
{
    static float h[M * H], a[M * N], b[M * N];
    const float *ws[2][2] = {{w1, w2}, {w3, w4}};
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < H; j++) {
                double s = 0;
                for (int q = 0; q < K; q++)
                    s += (double)x[i * K + q] * ws[t][0][q * H + j];
                h[i * H + j] = s > 0 ? (float)s : 0.0f;
            }
        float *o = t ? b : a;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0;
                for (int q = 0; q < H; q++)
                    s += (double)h[i * H + q] * ws[t][1][q * N + j];
                o[i * N + j] = (float)s;
            }
    }
    for (int i = 0; i < M * N; i++) {
        y[i] = a[i] + b[i];
        a_out[i] = a[i];
    }
}

/* Run PLAN on seeded input; compare both outputs with the reference. */
static void run_and_check(loom_plan *plan, loom_run_stats *st)
{
    int64_t dx[2] = {M, K};
    loom_tensor *x, *outs[2];
    CU_ASSERT_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, dx, &x) == LOOM_OK);
    fill(loom_tensor_data(x), M * K, 7);
    CU_ASSERT_FATAL(loom_plan_make_outputs(plan, outs, 2) == LOOM_OK);
    loom_status s = loom_plan_run(plan, (const loom_tensor *const *)&x, 1, outs, 2, st);
    CU_ASSERT_EQUAL(s, LOOM_OK);
    if (s != LOOM_OK)
        fprintf(stderr, "run: %s\n", loom_last_error());
    static float y[M * N], a[M * N];
    reference(loom_tensor_data(x), y, a);
    const float *gy = loom_tensor_data(outs[0]), *ga = loom_tensor_data(outs[1]);
    double worst = 0;
    for (int i = 0; i < M * N; i++) {
        worst = fmax(worst, fabs(gy[i] - y[i]) / (1 + fabs(y[i])));
        worst = fmax(worst, fabs(ga[i] - a[i]) / (1 + fabs(a[i])));
    }
    CU_ASSERT(worst < 1e-4);
    if (worst >= 1e-4) {
        fprintf(stderr, "worst relative error %g in this plan:\n", worst);
        for (size_t i = 0; i < loom_plan_node_count(plan); i++)
            fprintf(stderr, "  %s (%s) on %s\n", loom_plan_node_name(plan, i),
                    loom_plan_node_op(plan, i), loom_plan_node_device(plan, i));
    }
    loom_tensor_destroy(x);
    loom_tensor_destroy(outs[0]);
    loom_tensor_destroy(outs[1]);
}

static loom_plan_options base_options(void)
{
    loom_plan_options o = {.struct_size = sizeof o, .cache_dir = cache_dir};
    return o;
}

static size_t count_on(const loom_plan *plan, const char *prefix, int copies)
{
    size_t n = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++)
        if (!!loom_plan_node_is_copy(plan, i) == copies &&
            !strncmp(loom_plan_node_device(plan, i), prefix, strlen(prefix)))
            n++;
    return n;
}

static void test_matmuls_go_to_the_fast_device_with_copy_nodes_and_right_numbers(void)
{
    loom_runtime *rt = start();
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = two_towers();
    loom_plan_options o = base_options();
    loom_plan *plan = NULL;
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
    /* devmem does MatMul at 50 GFLOP/s by its estimate: far ahead of a naive CPU roofline on
     * this size, so at least one MatMul goes there, and its data moves through copy nodes. */
    CU_ASSERT(count_on(plan, "devmem:0", 0) >= 1);
    CU_ASSERT(count_on(plan, "host->devmem:0", 1) >= 1);
    CU_ASSERT(count_on(plan, "devmem:0->host", 1) >= 1);
    for (size_t i = 0; i < loom_plan_node_count(plan); i++) {
        loom_node_explain e = {.struct_size = sizeof e};
        CU_ASSERT_EQUAL(loom_plan_explain(plan, i, &e), LOOM_OK);
        CU_ASSERT(e.reason && e.reason[0]);
        CU_ASSERT(e.decided_by && e.decided_by[0]);
        CU_ASSERT_EQUAL(e.cost_count, loom_runtime_device_count(rt));
        CU_ASSERT(e.finish_s >= e.start_s);
        if (loom_plan_node_is_copy(plan, i))
            CU_ASSERT(e.bytes_in_moved > 0);
    }
    loom_node_timing tl[64];
    loom_run_stats st = {.struct_size = sizeof st, .timeline = tl, .timeline_capacity = 64};
    run_and_check(plan, &st);
    CU_ASSERT_EQUAL(st.fallback_count, 0);
    CU_ASSERT_EQUAL(st.timeline_count, loom_plan_node_count(plan));
    run_and_check(plan, &st); /* a second run reuses the context */
    loom_plan_summary sm = {.struct_size = sizeof sm};
    CU_ASSERT_EQUAL(loom_plan_summary_get(plan, &sm), LOOM_OK);
    CU_ASSERT(sm.predicted_s > 0);
    CU_ASSERT(sm.n_copies >= 2);
    CU_ASSERT_STRING_EQUAL(sm.policy, "default");
    /* The JSON explanation parses and lists every node. */
    char *js = NULL;
    CU_ASSERT_FATAL(loom_plan_explain_json(plan, &js) == LOOM_OK);
    if (getenv("LOOM_TEST_VERBOSE"))
        puts(js);
    json_error_t jerr;
    json_t *root = json_loads(js, 0, &jerr);
    CU_ASSERT_FATAL(root != NULL);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(root, "nodes")), loom_plan_node_count(plan));
    json_decref(root);
    loom_string_free(js);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void test_every_policy_gives_a_correct_plan(void)
{
    loom_runtime *rt = start();
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = two_towers();
    const char *policies[] = {"heft", "peft", "first", "default", "exact"};
    for (size_t i = 0; i < sizeof policies / sizeof *policies; i++) {
        loom_plan_options o = base_options();
        o.policy = policies[i];
        loom_plan *plan = NULL;
        CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
        run_and_check(plan, NULL);
        loom_plan_destroy(plan);
    }
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void test_pins_by_op_and_by_node_are_obeyed(void)
{
    loom_runtime *rt = start();
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = two_towers();
    const char *pins[] = {"MatMul=cpu"};
    loom_plan_options o = base_options();
    o.pins = pins;
    o.n_pins = 1;
    loom_plan *plan = NULL;
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
    for (size_t i = 0; i < loom_plan_node_count(plan); i++)
        if (!strcmp(loom_plan_node_op(plan, i), "MatMul")) {
            CU_ASSERT_STRING_EQUAL(loom_plan_node_device(plan, i), "cpu:0");
            loom_node_explain e = {.struct_size = sizeof e};
            loom_plan_explain(plan, i, &e);
            CU_ASSERT_STRING_EQUAL(e.decided_by, "pin");
        }
    run_and_check(plan, NULL);
    loom_plan_destroy(plan);
    /* A node pin wins over the placement: find a node the default plan puts on devmem and
     * pin it to the CPU. */
    loom_plan_options od = base_options();
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &od, &plan) == LOOM_OK);
    char pin[160] = "";
    for (size_t i = 0; i < loom_plan_node_count(plan) && !pin[0]; i++)
        if (!loom_plan_node_is_copy(plan, i) &&
            !strcmp(loom_plan_node_device(plan, i), "devmem:0"))
            snprintf(pin, sizeof pin, "node:%s=cpu:0", loom_plan_node_name(plan, i));
    loom_plan_destroy(plan);
    CU_ASSERT_FATAL(pin[0] != '\0');
    const char *node_pin[] = {pin};
    od.pins = node_pin;
    od.n_pins = 1;
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &od, &plan) == LOOM_OK);
    const char *pinned_name = pin + 5;
    size_t pinned_len = strlen(pinned_name) - strlen("=cpu:0");
    int seen = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++)
        if (strlen(loom_plan_node_name(plan, i)) == pinned_len &&
            !strncmp(loom_plan_node_name(plan, i), pinned_name, pinned_len)) {
            CU_ASSERT_STRING_EQUAL(loom_plan_node_device(plan, i), "cpu:0");
            seen = 1;
        }
    CU_ASSERT(seen);
    run_and_check(plan, NULL);
    loom_plan_destroy(plan);
    loom_plan_options o2 = base_options();
    const char *all_cpu[] = {"MatMul=cpu", "Relu=cpu", "Add=cpu"};
    o2.pins = all_cpu;
    o2.n_pins = 3;
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o2, &plan) == LOOM_OK);
    CU_ASSERT_EQUAL(count_on(plan, "devmem", 0), 0);
    CU_ASSERT_EQUAL(count_on(plan, "host->", 1), 0);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void test_bad_pins_and_policies_are_named(void)
{
    loom_runtime *rt = start();
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = two_towers();
    loom_plan *plan = NULL;
    const char *bad[][1] = {{"MatMul"}, {"Frobnicate=cpu"}, {"MatMul=gpu:7"}, {"node:nope=cpu"}};
    const char *want[] = {"OP=DEVICE", "Frobnicate", "gpu:7", "nope"};
    for (int i = 0; i < 4; i++) {
        loom_plan_options o = base_options();
        o.pins = bad[i];
        o.n_pins = 1;
        CU_ASSERT_EQUAL(loom_plan_create(rt, g, &o, &plan), LOOM_ERR_INVALID_ARGUMENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), want[i]));
        CU_ASSERT_PTR_NULL(plan);
    }
    loom_plan_options o = base_options();
    o.policy = "fastest";
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, &o, &plan), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "fastest"));
    /* A strict pin to a device that cannot run the node names node and device. */
    loom_graph *g2 = loom_graph_create("sig");
    int64_t d[1] = {8};
    loom_output(g2, loom_sigmoid(g2, loom_input(g2, "x", LOOM_DTYPE_F32, 1, d)), "y");
    CU_ASSERT_EQUAL(loom_graph_check(g2), LOOM_OK);
    const char *sig_pin[] = {"Sigmoid=devmem"};
    o = base_options();
    o.pins = sig_pin;
    o.n_pins = 1;
    o.strict = 1;
    CU_ASSERT_EQUAL(loom_plan_create(rt, g2, &o, &plan), LOOM_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "devmem:0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "Sigmoid"));
    /* Not strict: the pin is ignored for that node, and its explanation says so. */
    o.strict = 0;
    CU_ASSERT_FATAL(loom_plan_create(rt, g2, &o, &plan) == LOOM_OK);
    loom_node_explain e = {.struct_size = sizeof e};
    CU_ASSERT_EQUAL(loom_plan_explain(plan, 0, &e), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(e.device, "cpu:0");
    CU_ASSERT_PTR_NOT_NULL(strstr(e.reason, "pin to devmem:0 was ignored"));
    loom_plan_destroy(plan);
    loom_graph_destroy(g2);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void test_a_failing_device_is_staged_through_the_host_and_the_run_is_right(void)
{
    setenv("LOOM_TEST_DEVMEM_FAIL", "1", 1);
    loom_runtime *rt = start();
    unsetenv("LOOM_TEST_DEVMEM_FAIL");
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = two_towers();
    const char *pins[] = {"MatMul=devmem", "Relu=devmem"};
    loom_plan_options o = base_options();
    o.pins = pins;
    o.n_pins = 2;
    loom_plan *plan = NULL;
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
    loom_run_stats st = {.struct_size = sizeof st};
    run_and_check(plan, &st);
    CU_ASSERT_EQUAL(st.fallback_count, 1);
    int said = 0;
    for (size_t i = 0; i < loom_runtime_message_count(rt); i++)
        said |= strstr(loom_runtime_message(rt, i), "devmem: injected failure") != NULL;
    CU_ASSERT(said);
    loom_plan_destroy(plan);
    /* Strict: the failure fails the run, naming node and device. */
    setenv("LOOM_TEST_DEVMEM_FAIL", "1", 1);
    loom_runtime *rt2 = start();
    unsetenv("LOOM_TEST_DEVMEM_FAIL");
    o.strict = 1;
    CU_ASSERT_FATAL(loom_plan_create(rt2, g, &o, &plan) == LOOM_OK);
    int64_t dx[2] = {M, K};
    loom_tensor *x, *outs[2];
    loom_tensor_create(LOOM_DTYPE_F32, 2, dx, &x);
    loom_plan_make_outputs(plan, outs, 2);
    CU_ASSERT_EQUAL(loom_plan_run(plan, (const loom_tensor *const *)&x, 1, outs, 2, NULL),
                    LOOM_ERR_DEVICE_LOST);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "devmem:0"));
    loom_tensor_destroy(x);
    loom_tensor_destroy(outs[0]);
    loom_tensor_destroy(outs[1]);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt2);
    loom_runtime_destroy(rt);
}

static void test_learning_plans_write_history_to_the_cache(void)
{
    loom_runtime *rt = start();
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = two_towers();
    loom_plan_options o = base_options();
    o.learn = 1;
    loom_plan *plan = NULL;
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
    for (int r = 0; r < 4; r++)
        run_and_check(plan, NULL);
    loom_plan_destroy(plan); /* saves */
    char path[128];
    snprintf(path, sizeof path, "%s/history.json", cache_dir);
    struct stat sb;
    CU_ASSERT_EQUAL(stat(path, &sb), 0);
    /* A new plan now takes measured figures for what ran: every node ran on a device in
     * those runs, so a plan putting each node back there predicts it from history. */
    o.learn = 0;
    const char *devs[] = {"devmem:0", "cpu:0"};
    int from_history = 0;
    for (int d = 0; d < 2; d++) {
        o.device = devs[d];
        CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
        for (size_t i = 0; i < loom_plan_node_count(plan); i++) {
            loom_node_explain e = {.struct_size = sizeof e};
            loom_plan_explain(plan, i, &e);
            from_history |= !strcmp(e.cost_source, "history");
        }
        run_and_check(plan, NULL);
        loom_plan_destroy(plan);
    }
    CU_ASSERT(from_history);
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

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_multidevice DEVMEM_PLUGIN\n");
        return 2;
    }
    p_devmem = argv[1];
    setenv("LOOM_OPENCL", "0", 1); /* the devmem device and the CPU only: deterministic */
    snprintf(cache_dir, sizeof cache_dir, "/tmp/loom-test-multidevice-XXXXXX");
    if (!mkdtemp(cache_dir))
        return 1;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("multidevice", NULL, NULL);
    CU_add_test(s, "matmuls go to the fast device, with copy nodes and right numbers",
                test_matmuls_go_to_the_fast_device_with_copy_nodes_and_right_numbers);
    CU_add_test(s, "every policy gives a correct plan", test_every_policy_gives_a_correct_plan);
    CU_add_test(s, "pins by op and by node are obeyed", test_pins_by_op_and_by_node_are_obeyed);
    CU_add_test(s, "bad pins and policies are named", test_bad_pins_and_policies_are_named);
    CU_add_test(s, "a failing device is staged through the host and the run is right",
                test_a_failing_device_is_staged_through_the_host_and_the_run_is_right);
    CU_add_test(s, "learning plans write history to the cache",
                test_learning_plans_write_history_to_the_cache);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    remove_cache();
    return failed ? 1 : 0;
}
