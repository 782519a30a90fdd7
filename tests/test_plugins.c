/*
 * Tests of the plugin loader and of isolation from failing plugins: refused plugins (another ABI
 * major, no entry symbol, a failing start, a missing file) are named with their reason and leave
 * the CPU working; a plugin whose execute fails has its nodes re-run on the CPU, unless the plan
 * is strict. Backend ABI 1.0 (issue 15): a plugin built for 0.4 loads through the adapter and
 * runs; the runtime's messages are a bounded ring with a drain; a plugin's log lines keep its
 * prefix at run time; a slow loom_backend_query is reported; a device the host cannot reach is
 * refused at load; a status outside the enum becomes LOOM_ERR_DEVICE_LOST keeping its number.
 * Usage: test_plugins FAIL_EXECUTE.so BAD_ABI.so NO_SYMBOL.so FAIL_INIT.so OLD_ABI_0_4.so
 *        QUIRKS.so NO_COPY.so
 */
#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *p_fail_execute, *p_bad_abi, *p_no_symbol, *p_fail_init, *p_old_abi, *p_quirks,
    *p_no_copy;

static int any_message(const loom_runtime *rt, const char *a, const char *b)
{
    for (size_t i = 0; i < loom_runtime_message_count(rt); i++) {
        const char *m = loom_runtime_message(rt, i);
        if (strstr(m, a) && (!b || strstr(m, b)))
            return 1;
    }
    return 0;
}

/* How many messages contain A (and B when not NULL). */
static size_t count_messages(const loom_runtime *rt, const char *a, const char *b)
{
    size_t n = 0;
    for (size_t i = 0; i < loom_runtime_message_count(rt); i++) {
        const char *m = loom_runtime_message(rt, i);
        n += strstr(m, a) && (!b || strstr(m, b));
    }
    return n;
}

static void print_messages(const loom_runtime *rt)
{
    for (size_t i = 0; i < loom_runtime_message_count(rt); i++)
        fprintf(stderr, "  message %zu: %s\n", i, loom_runtime_message(rt, i));
}

static loom_runtime *start(const char *path)
{
    const char *paths[1] = {path};
    loom_runtime_options o = {.struct_size = sizeof o, .plugin_paths = paths, .n_plugin_paths = 1,
                              .no_default_plugins = 1};
    loom_runtime *rt = NULL;
    CU_ASSERT_EQUAL(loom_runtime_create(&o, &rt), LOOM_OK);
    return rt;
}

static void assert_only_cpu(const loom_runtime *rt)
{
    CU_ASSERT_EQUAL(loom_runtime_device_count(rt), 1);
    char id[64];
    loom_runtime_device(rt, 0, id, sizeof id, NULL);
    CU_ASSERT_STRING_EQUAL(id, "cpu:0");
}

static void test_plugin_of_another_abi_major_is_refused_by_name(void)
{
    loom_runtime *rt = start(p_bad_abi);
    CU_ASSERT_FATAL(rt != NULL);
    CU_ASSERT(any_message(rt, p_bad_abi, "ABI 99"));
    /* one message naming both versions */
    CU_ASSERT(any_message(rt, p_bad_abi, "built for backend ABI 99.0, this Loom speaks 1.0"));
    assert_only_cpu(rt);
    loom_runtime_destroy(rt);
}

static void test_plugin_without_entry_symbol_is_refused(void)
{
    loom_runtime *rt = start(p_no_symbol);
    CU_ASSERT_FATAL(rt != NULL);
    CU_ASSERT(any_message(rt, p_no_symbol, "loom_backend_query"));
    assert_only_cpu(rt);
    loom_runtime_destroy(rt);
}

static void test_plugin_failing_to_start_is_refused_with_its_reason(void)
{
    loom_runtime *rt = start(p_fail_init);
    CU_ASSERT_FATAL(rt != NULL);
    CU_ASSERT(any_message(rt, p_fail_init, "returned NULL"));
    /* what the plugin logged through the host callback is kept, naming the file */
    CU_ASSERT(loom_runtime_message_count(rt) >= 2);
    CU_ASSERT(any_message(rt, p_fail_init, "error"));
    /* asked twice (1.0, then 0.4 for the adapter), its reason is said once */
    CU_ASSERT_EQUAL(count_messages(rt, p_fail_init, "no device here"), 1);
    CU_ASSERT(any_message(rt, p_fail_init, "returned NULL for backend ABI 1.0 and for 0.4"));
    assert_only_cpu(rt);
    loom_runtime_destroy(rt);
}

static void test_missing_plugin_file_is_reported(void)
{
    loom_runtime *rt = start("/nonexistent/loom-nothing.so");
    CU_ASSERT_FATAL(rt != NULL);
    CU_ASSERT(any_message(rt, "/nonexistent/loom-nothing.so", "no such file"));
    assert_only_cpu(rt);
    loom_runtime_destroy(rt);
}

/* The fail-execute plugin's device id (its only device). */
static int plugin_device(const loom_runtime *rt, char *id, size_t len)
{
    for (size_t d = 0; d < loom_runtime_device_count(rt); d++) {
        loom_runtime_device(rt, d, id, len, NULL);
        if (strncmp(id, "cpu:", 4) != 0)
            return 1;
    }
    return 0;
}

static loom_graph *relu_add_graph(void)
{
    loom_graph *g = loom_graph_create("relu_add");
    int64_t d[1] = {8};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_value y = loom_add(g, loom_relu(g, x), x);
    loom_output(g, y, "y");
    return g;
}

/* WANT_OK: the run must succeed with the right numbers; otherwise it must fail. */
static void run_relu_add(loom_plan *p, int want_ok, size_t *fallbacks)
{
    float xv[8] = {-4, -3, -2, -1, 0, 1, 2, 3};
    int64_t d[1] = {8};
    loom_tensor *in, *out;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, xv, &in);
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &out);
    loom_run_stats st = {.struct_size = sizeof st};
    loom_status got = loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, &st);
    CU_ASSERT_EQUAL(got == LOOM_OK, want_ok);
    if (want_ok) {
        const float *y = loom_tensor_data(out);
        for (int i = 0; i < 8; i++)
            CU_ASSERT_DOUBLE_EQUAL(y[i], (xv[i] > 0 ? xv[i] : 0) + xv[i], 0);
    }
    *fallbacks = st.fallback_count;
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
}

static void test_failing_execute_falls_back_to_cpu_and_finishes(void)
{
    loom_runtime *rt = start(p_fail_execute);
    CU_ASSERT_FATAL(rt != NULL);
    char id[64];
    CU_ASSERT_FATAL(plugin_device(rt, id, sizeof id));
    loom_graph *g = relu_add_graph();
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .device = id};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    for (size_t i = 0; i < loom_plan_node_count(p); i++)
        CU_ASSERT_STRING_EQUAL(loom_plan_node_device(p, i), id);
    size_t fallbacks = 0;
    run_relu_add(p, 1, &fallbacks);
    CU_ASSERT_EQUAL(fallbacks, loom_plan_node_count(p));
    CU_ASSERT(any_message(rt, id, "re-ran on cpu:0"));
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void test_strict_plan_reports_the_failing_device_instead(void)
{
    loom_runtime *rt = start(p_fail_execute);
    CU_ASSERT_FATAL(rt != NULL);
    char id[64];
    CU_ASSERT_FATAL(plugin_device(rt, id, sizeof id));
    loom_graph *g = relu_add_graph();
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .device = id, .strict = 1};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    size_t fallbacks = 99;
    run_relu_add(p, 0, &fallbacks);
    CU_ASSERT(strstr(loom_last_error(), id) != NULL);
    CU_ASSERT_EQUAL(fallbacks, 0);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void test_async_submit_completes_and_its_failures_fall_back(void)
{
    /* The plugin offers submit() and runs each node on a thread of its own; its first two
     * executions succeed, later ones fail (reported through the completion). */
    setenv("LOOM_TEST_ASYNC", "1", 1);
    setenv("LOOM_TEST_FAIL_AFTER", "2", 1);
    loom_runtime *rt = start(p_fail_execute);
    unsetenv("LOOM_TEST_ASYNC");
    unsetenv("LOOM_TEST_FAIL_AFTER");
    CU_ASSERT_FATAL(rt != NULL);
    char id[64];
    CU_ASSERT_FATAL(plugin_device(rt, id, sizeof id));
    loom_graph *g = relu_add_graph();
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .device = id};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    size_t fallbacks = 99;
    run_relu_add(p, 1, &fallbacks); /* both nodes through submit, both succeed */
    CU_ASSERT_EQUAL(fallbacks, 0);
    run_relu_add(p, 1, &fallbacks); /* both fail asynchronously and re-run on the CPU */
    CU_ASSERT_EQUAL(fallbacks, 2);
    CU_ASSERT(any_message(rt, "injected failure", "re-ran on cpu:0"));
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

/* A one-Relu graph planned strictly on DEVICE and run: the outputs must be right. */
static void run_relu_on(loom_runtime *rt, const char *device)
{
    loom_graph *g = loom_graph_create("relu");
    int64_t d[1] = {8};
    loom_output(g, loom_relu(g, loom_input(g, "x", LOOM_DTYPE_F32, 1, d)), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .device = device, .strict = 1};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_device(p, 0), device);
    float xv[8] = {-4, -3, -2, -1, 0, 1, 2, 3};
    loom_tensor *in, *out;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, xv, &in);
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, NULL), LOOM_OK);
    const float *y = loom_tensor_data(out);
    for (int i = 0; i < 8; i++)
        CU_ASSERT_DOUBLE_EQUAL(y[i], xv[i] > 0 ? xv[i] : 0, 0);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static int has_device(const loom_runtime *rt, const char *want)
{
    for (size_t d = 0; d < loom_runtime_device_count(rt); d++) {
        char id[64];
        loom_runtime_device(rt, d, id, sizeof id, NULL);
        if (!strcmp(id, want))
            return 1;
    }
    return 0;
}

static void test_abi_0_4_plugin_loads_through_the_adapter_and_runs(void)
{
    loom_runtime *rt = start(p_old_abi);
    CU_ASSERT_FATAL(rt != NULL);
    if (!has_device(rt, "old04:0"))
        print_messages(rt);
    CU_ASSERT_FATAL(has_device(rt, "old04:0"));
    CU_ASSERT(!any_message(rt, "refused", NULL));
    /* what it said refusing the 1.0 query is not kept: the 0.4 query answered */
    CU_ASSERT(!any_message(rt, "refusing a host of another major", NULL));
    loom_device_info info = {.abi_version = LOOM_ABI_VERSION, .struct_size = sizeof info};
    CU_ASSERT_EQUAL(loom_runtime_device(rt, 1, NULL, 0, &info), LOOM_OK);
    CU_ASSERT(strstr(info.name, "old04") != NULL);
    run_relu_on(rt, "old04:0");
    loom_runtime_destroy(rt);
}

typedef struct drained {
    size_t n;
    char first[128], last[4200];
} drained;

static void on_drained(void *user, const char *m)
{
    drained *d = user;
    if (d->n++ == 0)
        snprintf(d->first, sizeof d->first, "%s", m);
    snprintf(d->last, sizeof d->last, "%s", m);
}

static void test_messages_are_a_bounded_ring_with_a_drain(void)
{
    /* The quirks plugin logs 1000 lines while it is queried; the ring keeps the newest 255 and
     * a first line that counts the others. */
    setenv("LOOM_TEST_QUIRKS_LOG", "1000", 1);
    loom_runtime *rt = start(p_quirks);
    unsetenv("LOOM_TEST_QUIRKS_LOG");
    CU_ASSERT_FATAL(rt != NULL);
    CU_ASSERT_EQUAL(loom_runtime_message_count(rt), LOOM_RUNTIME_MESSAGES_MAX);
    const char *first = loom_runtime_message(rt, 0);
    CU_ASSERT_FATAL(first != NULL);
    size_t dropped = 0;
    CU_ASSERT(sscanf(first, "%zu messages dropped", &dropped) == 1);
    CU_ASSERT(dropped >= 1000 - (LOOM_RUNTIME_MESSAGES_MAX - 1));
    /* logged while loom_backend_query ran: prefixed with the plugin's file */
    char want[4200];
    snprintf(want, sizeof want, "plugin %s: info: line 746 of 1000", p_quirks);
    CU_ASSERT_STRING_EQUAL(loom_runtime_message(rt, 1), want);
    snprintf(want, sizeof want, "plugin %s: info: line 1000 of 1000", p_quirks);
    CU_ASSERT_STRING_EQUAL(loom_runtime_message(rt, LOOM_RUNTIME_MESSAGES_MAX - 1), want);
    CU_ASSERT_PTR_NULL(loom_runtime_message(rt, LOOM_RUNTIME_MESSAGES_MAX));
    drained d = {0};
    CU_ASSERT_EQUAL(loom_runtime_messages_drain(rt, on_drained, &d), LOOM_RUNTIME_MESSAGES_MAX);
    CU_ASSERT_EQUAL(d.n, LOOM_RUNTIME_MESSAGES_MAX);
    CU_ASSERT(strstr(d.first, "messages dropped") != NULL);
    CU_ASSERT_STRING_EQUAL(d.last, want);
    CU_ASSERT_EQUAL(loom_runtime_message_count(rt), 0);
    CU_ASSERT_PTR_NULL(loom_runtime_message(rt, 0));
    CU_ASSERT_EQUAL(loom_runtime_messages_drain(rt, NULL, NULL), 0);
    /* After a drain the ring starts over: no "dropped" line until it fills again. */
    run_relu_on(rt, "quirks:0");
    CU_ASSERT_EQUAL(loom_runtime_message_count(rt), 1);
    CU_ASSERT(!any_message(rt, "dropped", NULL));
    CU_ASSERT_EQUAL(loom_runtime_messages_drain(rt, NULL, NULL), 1);
    loom_runtime_destroy(rt);
}

static void test_run_time_log_lines_keep_the_plugin_prefix(void)
{
    loom_runtime *rt = start(p_quirks);
    CU_ASSERT_FATAL(rt != NULL);
    loom_runtime_messages_drain(rt, NULL, NULL);
    run_relu_on(rt, "quirks:0"); /* its execute() logs a warning */
    CU_ASSERT_EQUAL(loom_runtime_message_count(rt), 1);
    const char *m = loom_runtime_message(rt, 0);
    CU_ASSERT_FATAL(m != NULL);
    CU_ASSERT_STRING_EQUAL(m, "quirks: warning: relu of 8 elements ran");
    loom_runtime_destroy(rt);
}

static void test_slow_query_is_reported_with_its_seconds(void)
{
    loom_runtime *rt = start(p_quirks);
    CU_ASSERT_FATAL(rt != NULL);
    CU_ASSERT(!any_message(rt, "in loom_backend_query", NULL));
    loom_runtime_destroy(rt);
    setenv("LOOM_TEST_QUIRKS_SLEEP_MS", "1200", 1); /* the threshold is 1 s */
    rt = start(p_quirks);
    unsetenv("LOOM_TEST_QUIRKS_SLEEP_MS");
    CU_ASSERT_FATAL(rt != NULL);
    CU_ASSERT(any_message(rt, p_quirks, "took 1."));
    CU_ASSERT(any_message(rt, p_quirks, "s in loom_backend_query"));
    CU_ASSERT(has_device(rt, "quirks:0")); /* slow, not refused */
    loom_runtime_destroy(rt);
}

static void test_status_outside_the_enum_becomes_device_lost_with_its_number(void)
{
    setenv("LOOM_TEST_QUIRKS_PREPARE_STATUS", "77", 1);
    loom_runtime *rt = start(p_quirks);
    unsetenv("LOOM_TEST_QUIRKS_PREPARE_STATUS");
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = loom_graph_create("relu");
    int64_t d[1] = {8};
    loom_output(g, loom_relu(g, loom_input(g, "x", LOOM_DTYPE_F32, 1, d)), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    /* strict: the plan fails with LOOM_ERR_DEVICE_LOST, the message keeps 77 and its text */
    loom_plan_options o = {.struct_size = sizeof o, .device = "quirks:0", .strict = 1};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, &o, &p), LOOM_ERR_DEVICE_LOST);
    CU_ASSERT(strstr(loom_last_error(), "77") != NULL);
    CU_ASSERT(strstr(loom_last_error(), "prepare fails on purpose") != NULL);
    CU_ASSERT_PTR_NULL(p);
    /* not strict: the node goes to the CPU, and the message says why, with the number */
    o.strict = 0;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_device(p, 0), "cpu:0");
    CU_ASSERT(any_message(rt, "returned status 77", "placed on cpu:0"));
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void test_device_the_host_cannot_reach_is_refused_at_load(void)
{
    loom_runtime *rt = start(p_no_copy);
    CU_ASSERT_FATAL(rt != NULL);
    CU_ASSERT(has_device(rt, "no-copy:0"));
    CU_ASSERT(!has_device(rt, "no-copy:1"));
    CU_ASSERT(any_message(rt, "device no-copy:1 refused", "host_visible = 0"));
    CU_ASSERT(any_message(rt, "device no-copy:1 refused", "no upload or download slots"));
    run_relu_on(rt, "no-copy:0");
    loom_runtime_destroy(rt);
    /* none of its devices usable: the backend itself is refused, naming the file */
    setenv("LOOM_TEST_NO_COPY_ALL_HIDDEN", "1", 1);
    rt = start(p_no_copy);
    unsetenv("LOOM_TEST_NO_COPY_ALL_HIDDEN");
    CU_ASSERT_FATAL(rt != NULL);
    CU_ASSERT(any_message(rt, "device no-copy:0 refused", "upload"));
    CU_ASSERT(any_message(rt, p_no_copy, "none of its 2 devices can be used"));
    assert_only_cpu(rt);
    loom_runtime_destroy(rt);
}

static void test_backend_path_folder_loads_good_plugins_and_refuses_bad_ones(void)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", p_fail_execute);
    setenv("LOOM_BACKEND_PATH", dirname(dir), 1);
    loom_runtime *rt = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_runtime_create(NULL, &rt), LOOM_OK);
    char id[64];
    CU_ASSERT(plugin_device(rt, id, sizeof id));
    CU_ASSERT(any_message(rt, "ABI 99", NULL));
    CU_ASSERT(any_message(rt, "loom_backend_query", NULL));
    loom_runtime_destroy(rt);
    unsetenv("LOOM_BACKEND_PATH");
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s FAIL_EXECUTE.so BAD_ABI.so NO_SYMBOL.so FAIL_INIT.so "
                "OLD_ABI_0_4.so QUIRKS.so NO_COPY.so\n", argv[0]);
        return 2;
    }
    setenv("LOOM_OPENCL", "0", 1); /* the plugins under test and the CPU only */
    p_fail_execute = argv[1];
    p_bad_abi = argv[2];
    p_no_symbol = argv[3];
    p_fail_init = argv[4];
    p_old_abi = argv[5];
    p_quirks = argv[6];
    p_no_copy = argv[7];
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("plugins", NULL, NULL);
    CU_add_test(s, "plugin_of_another_abi_major_is_refused_by_name",
                test_plugin_of_another_abi_major_is_refused_by_name);
    CU_add_test(s, "plugin_without_entry_symbol_is_refused",
                test_plugin_without_entry_symbol_is_refused);
    CU_add_test(s, "plugin_failing_to_start_is_refused_with_its_reason",
                test_plugin_failing_to_start_is_refused_with_its_reason);
    CU_add_test(s, "missing_plugin_file_is_reported", test_missing_plugin_file_is_reported);
    CU_add_test(s, "failing_execute_falls_back_to_cpu_and_finishes",
                test_failing_execute_falls_back_to_cpu_and_finishes);
    CU_add_test(s, "strict_plan_reports_the_failing_device_instead",
                test_strict_plan_reports_the_failing_device_instead);
    CU_add_test(s, "async_submit_completes_and_its_failures_fall_back",
                test_async_submit_completes_and_its_failures_fall_back);
    CU_add_test(s, "abi_0_4_plugin_loads_through_the_adapter_and_runs",
                test_abi_0_4_plugin_loads_through_the_adapter_and_runs);
    CU_add_test(s, "messages_are_a_bounded_ring_with_a_drain",
                test_messages_are_a_bounded_ring_with_a_drain);
    CU_add_test(s, "run_time_log_lines_keep_the_plugin_prefix",
                test_run_time_log_lines_keep_the_plugin_prefix);
    CU_add_test(s, "slow_query_is_reported_with_its_seconds",
                test_slow_query_is_reported_with_its_seconds);
    CU_add_test(s, "status_outside_the_enum_becomes_device_lost_with_its_number",
                test_status_outside_the_enum_becomes_device_lost_with_its_number);
    CU_add_test(s, "device_the_host_cannot_reach_is_refused_at_load",
                test_device_the_host_cannot_reach_is_refused_at_load);
    CU_add_test(s, "backend_path_folder_loads_good_plugins_and_refuses_bad_ones",
                test_backend_path_folder_loads_good_plugins_and_refuses_bad_ones);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
