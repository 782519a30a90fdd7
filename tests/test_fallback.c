/*
 * Failure handling in the executor (issue 15): what a run says about each node re-run on another
 * device (loom_run_stats.fallbacks), statuses outside loom_status from a plugin, the message of a
 * refused submission (enqueue vs submit), and the circuit breaker that sets aside a device that
 * fails run after run. Usage: test_fallback DEVMEM.so ODD_STATUS.so
 */
#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *p_devmem, *p_odd;

/* A runtime with plugin PATH, after setting the environment variable NAME=VALUE for its query
 * (both may be NULL); the variable is unset again. */
static loom_runtime *start(const char *path, const char *name, const char *value)
{
    if (name)
        setenv(name, value, 1);
    const char *paths[1] = {path};
    loom_runtime_options o = {.struct_size = sizeof o, .plugin_paths = paths, .n_plugin_paths = 1,
                              .no_default_plugins = 1};
    loom_runtime *rt = NULL;
    CU_ASSERT_EQUAL(loom_runtime_create(&o, &rt), LOOM_OK);
    if (name)
        unsetenv(name);
    return rt;
}

/* How many of RT's messages hold A (and B, when not NULL). */
static int count_messages(const loom_runtime *rt, const char *a, const char *b)
{
    int n = 0;
    for (size_t i = 0; i < loom_runtime_message_count(rt); i++) {
        const char *m = loom_runtime_message(rt, i);
        n += m && strstr(m, a) && (!b || strstr(m, b));
    }
    return n;
}

static const char *device_id(const loom_runtime *rt, uint32_t d, char *buf, size_t len)
{
    if (loom_runtime_device(rt, d, buf, len, NULL) != LOOM_OK)
        snprintf(buf, len, "?");
    return buf;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- graphs -------------------------------------------------------------------------------- */

enum { RN = 64 };

/* y = relu(x), x of RN floats. */
static loom_graph *relu_graph(void)
{
    loom_graph *g = loom_graph_create("relu");
    int64_t d[1] = {RN};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_output(g, loom_relu(g, x), "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    return g;
}

static loom_plan *plan_on(loom_runtime *rt, const loom_graph *g, const char *device, int strict)
{
    loom_plan_options o = {.struct_size = sizeof o, .device = device, .strict = strict};
    loom_plan *plan = NULL;
    loom_status st = loom_plan_create(rt, g, &o, &plan);
    CU_ASSERT_EQUAL(st, LOOM_OK);
    if (st != LOOM_OK)
        fprintf(stderr, "plan: %s\n", loom_last_error());
    return plan;
}

/* Run the Relu plan once; with STATS. Checks the numbers when the run succeeds. */
static loom_status run_relu(loom_plan *plan, loom_run_stats *stats)
{
    int64_t d[1] = {RN};
    loom_tensor *x = NULL, *y = NULL;
    CU_ASSERT_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 1, d, &x) == LOOM_OK);
    CU_ASSERT_FATAL(loom_plan_make_outputs(plan, &y, 1) == LOOM_OK);
    float *xv = loom_tensor_data(x);
    for (int i = 0; i < RN; i++)
        xv[i] = (float)(i - RN / 2) / 4.0f;
    loom_status st = loom_plan_run(plan, (const loom_tensor *const *)&x, 1, &y, 1, stats);
    if (st == LOOM_OK) {
        const float *yv = loom_tensor_data(y);
        int right = 1;
        for (int i = 0; i < RN; i++)
            right &= yv[i] == (xv[i] > 0 ? xv[i] : 0.0f);
        CU_ASSERT(right);
    }
    loom_tensor_destroy(x);
    loom_tensor_destroy(y);
    return st;
}

/* ---- 1. what a run says about its fallbacks ------------------------------------------------ */

/* y = relu(x W), W constant: the MatMul pinned to the devmem device, whose first execution
 * fails; its data is staged through the host to the CPU. */
enum { MM = 8, MK = 16, MNN = 8 };
static float mw[MK * MNN];

static void test_stats_describe_each_fallback(void)
{
    loom_runtime *rt = start(p_devmem, "LOOM_TEST_DEVMEM_FAIL", "1");
    CU_ASSERT_FATAL(rt != NULL);
    for (int i = 0; i < MK * MNN; i++)
        mw[i] = (float)((i * 7) % 11 - 5) / 8.0f;
    loom_graph *g = loom_graph_create("mm");
    int64_t dx[2] = {MM, MK}, dw[2] = {MK, MNN};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    loom_value w = loom_constant(g, "w", LOOM_DTYPE_F32, 2, dw, mw);
    loom_output(g, loom_relu(g, loom_matmul(g, x, w)), "y");
    CU_ASSERT_FATAL(loom_graph_check(g) == LOOM_OK);
    const char *pins[] = {"MatMul=devmem"};
    loom_plan_options o = {.struct_size = sizeof o, .pins = pins, .n_pins = 1};
    loom_plan *plan = NULL;
    CU_ASSERT_FATAL(loom_plan_create(rt, g, &o, &plan) == LOOM_OK);
    loom_tensor *xt, *yt;
    loom_tensor_create(LOOM_DTYPE_F32, 2, dx, &xt);
    loom_plan_make_outputs(plan, &yt, 1);
    float *xv = loom_tensor_data(xt);
    for (int i = 0; i < MM * MK; i++)
        xv[i] = (float)((i * 5) % 9 - 4) / 4.0f;
    loom_fallback_info fb[4];
    memset(fb, 0xab, sizeof fb);
    loom_run_stats st = {.struct_size = sizeof st, .fallbacks = fb, .fallbacks_capacity = 4};
    CU_ASSERT_EQUAL(loom_plan_run(plan, (const loom_tensor *const *)&xt, 1, &yt, 1, &st),
                    LOOM_OK);
    CU_ASSERT_EQUAL(st.fallback_count, 1);
    CU_ASSERT_EQUAL(st.fallbacks_written, 1);
    if (st.fallbacks_written == 1) {
        char a[64], b[64];
        CU_ASSERT_STRING_EQUAL(loom_plan_node_op(plan, fb[0].node), "MatMul");
        CU_ASSERT_STRING_EQUAL(loom_plan_node_device(plan, fb[0].node), "devmem:0");
        CU_ASSERT_STRING_EQUAL(device_id(rt, fb[0].failed_device, a, sizeof a), "devmem:0");
        CU_ASSERT_STRING_EQUAL(device_id(rt, fb[0].ran_device, b, sizeof b), "cpu:0");
        CU_ASSERT_EQUAL(fb[0].status, LOOM_ERR_DEVICE_LOST);
        CU_ASSERT_PTR_NOT_NULL(strstr(fb[0].message, "devmem: injected failure"));
    }
    /* The numbers are right (staged through the host). */
    const float *yv = loom_tensor_data(yt);
    double worst = 0;
    for (int i = 0; i < MM; i++)
        for (int j = 0; j < MNN; j++) {
            double s = 0;
            for (int q = 0; q < MK; q++)
                s += (double)xv[i * MK + q] * mw[q * MNN + j];
            worst = fmax(worst, fabs(yv[i * MNN + j] - (s > 0 ? s : 0)));
        }
    CU_ASSERT(worst < 1e-4);
    /* The next run does not fail: nothing to say, and the count says so. */
    st.fallbacks_written = 99;
    CU_ASSERT_EQUAL(loom_plan_run(plan, (const loom_tensor *const *)&xt, 1, &yt, 1, &st),
                    LOOM_OK);
    CU_ASSERT_EQUAL(st.fallback_count, 0);
    CU_ASSERT_EQUAL(st.fallbacks_written, 0);
    loom_tensor_destroy(xt);
    loom_tensor_destroy(yt);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

/* No array, a zero capacity, a caller built before the fields existed: counted, nothing
 * written where there is no room. */
static void test_stats_without_room_still_count(void)
{
    setenv("LOOM_BREAKER_RUNS", "0", 1);
    loom_runtime *rt = start(p_odd, "LOOM_TEST_ODD_PATTERN", "F");
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = relu_graph();
    loom_plan *plan = plan_on(rt, g, "odd-status:0", 0);
    CU_ASSERT_FATAL(plan != NULL);
    loom_run_stats st = {.struct_size = sizeof st, .fallbacks_written = 99};
    CU_ASSERT_EQUAL(run_relu(plan, &st), LOOM_OK);
    CU_ASSERT_EQUAL(st.fallback_count, 1);
    CU_ASSERT_EQUAL(st.fallbacks_written, 0);
    loom_fallback_info fb[1];
    st = (loom_run_stats){.struct_size = sizeof st, .fallbacks = fb, .fallbacks_capacity = 0};
    CU_ASSERT_EQUAL(run_relu(plan, &st), LOOM_OK);
    CU_ASSERT_EQUAL(st.fallback_count, 1);
    CU_ASSERT_EQUAL(st.fallbacks_written, 0);
    /* An older caller's struct ends at fallback_count: the fields after it are not touched. */
    unsigned char raw[sizeof(loom_run_stats)];
    memset(raw, 0x5a, sizeof raw);
    loom_run_stats *old = (loom_run_stats *)raw;
    old->struct_size = (uint32_t)(offsetof(loom_run_stats, fallback_count) + sizeof(size_t));
    old->timeline = NULL;
    CU_ASSERT_EQUAL(run_relu(plan, old), LOOM_OK);
    CU_ASSERT_EQUAL(old->fallback_count, 1);
    for (size_t k = old->struct_size; k < sizeof raw; k++)
        CU_ASSERT_EQUAL_FATAL(raw[k], 0x5a);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
    unsetenv("LOOM_BREAKER_RUNS");
}

/* Concurrent runs of one plan each get their own record. */
typedef struct runner {
    loom_plan *plan;
    int runs, bad;
} runner;

static void *run_many(void *arg)
{
    runner *r = arg;
    int64_t d[1] = {RN};
    loom_tensor *x = NULL, *y = NULL;
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &x);
    loom_plan_make_outputs(r->plan, &y, 1);
    for (int k = 0; k < r->runs; k++) {
        loom_fallback_info fb[4];
        memset(fb, 0, sizeof fb);
        loom_run_stats st = {.struct_size = sizeof st, .fallbacks = fb, .fallbacks_capacity = 4};
        if (loom_plan_run(r->plan, (const loom_tensor *const *)&x, 1, &y, 1, &st) != LOOM_OK ||
            st.fallback_count != 1 || st.fallbacks_written != 1 || fb[0].node != 0 ||
            !strstr(fb[0].message, "odd-status: execute failed"))
            r->bad++;
    }
    loom_tensor_destroy(x);
    loom_tensor_destroy(y);
    return NULL;
}

static void test_concurrent_runs_keep_their_own_record(void)
{
    setenv("LOOM_BREAKER_RUNS", "0", 1); /* every run tries the device and falls back */
    loom_runtime *rt = start(p_odd, "LOOM_TEST_ODD_PATTERN", "F");
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = relu_graph();
    loom_plan *plan = plan_on(rt, g, "odd-status:0", 0);
    CU_ASSERT_FATAL(plan != NULL);
    runner r[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        r[t] = (runner){plan, 50, 0};
        pthread_create(&th[t], NULL, run_many, &r[t]);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        CU_ASSERT_EQUAL(r[t].bad, 0);
    }
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
    unsetenv("LOOM_BREAKER_RUNS");
}

/* ---- 2. statuses outside the enum; 4. refused submissions ----------------------------------- */

/* With the odd-status plugin in MODE and PATTERN: a strict plan fails with WANT_STATUS and a
 * message holding TEXT; a plan that is not strict re-runs the node on the CPU, and its record
 * keeps the mapped status and TEXT. */
static void check_failure(const char *mode, const char *pattern, loom_status want_status,
                          const char *text)
{
    setenv("LOOM_TEST_ODD", mode, 1);
    setenv("LOOM_BREAKER_RUNS", "0", 1);
    loom_runtime *rt = start(p_odd, "LOOM_TEST_ODD_PATTERN", pattern);
    unsetenv("LOOM_TEST_ODD");
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = relu_graph();
    loom_plan *strict = plan_on(rt, g, "odd-status:0", 1);
    CU_ASSERT_FATAL(strict != NULL);
    CU_ASSERT_EQUAL(run_relu(strict, NULL), want_status);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), text));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "odd-status:0"));
    if (!strstr(loom_last_error(), text))
        fprintf(stderr, "\n%s: '%s' lacks '%s'\n", mode, loom_last_error(), text);
    loom_plan *plan = plan_on(rt, g, "odd-status:0", 0);
    CU_ASSERT_FATAL(plan != NULL);
    loom_fallback_info fb[2];
    loom_run_stats st = {.struct_size = sizeof st, .fallbacks = fb, .fallbacks_capacity = 2};
    CU_ASSERT_EQUAL(run_relu(plan, &st), LOOM_OK);
    CU_ASSERT_EQUAL(st.fallbacks_written, 1);
    if (st.fallbacks_written == 1) {
        CU_ASSERT_EQUAL(fb[0].status, want_status);
        CU_ASSERT_PTR_NOT_NULL(strstr(fb[0].message, text));
        if (!strstr(fb[0].message, text))
            fprintf(stderr, "\n%s: record '%s' lacks '%s'\n", mode, fb[0].message, text);
    }
    loom_plan_destroy(strict);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
    unsetenv("LOOM_BREAKER_RUNS");
}

static void test_status_77_from_execute_is_device_lost_naming_77(void)
{
    check_failure("execute", "7", LOOM_ERR_DEVICE_LOST,
                  "backend 'odd-status' returned status 77, not a loom_status");
    check_failure("execute", "7", LOOM_ERR_DEVICE_LOST, "its own status 77");
}

static void test_status_77_from_a_completion_is_device_lost_naming_77(void)
{
    check_failure("done", "7", LOOM_ERR_DEVICE_LOST,
                  "backend 'odd-status' returned status 77, not a loom_status");
    check_failure("done", "7", LOOM_ERR_DEVICE_LOST, "the completion failed");
}

static void test_status_77_from_enqueue_is_device_lost_naming_77(void)
{
    check_failure("enqueue", "7", LOOM_ERR_DEVICE_LOST, "returned status 77");
}

static void test_enqueue_refusal_keeps_the_backends_message(void)
{
    check_failure("enqueue", "F", LOOM_ERR_DEVICE_LOST, "odd-status: enqueue (queue full) failed");
}

static void test_submit_refusal_names_the_backend(void)
{
    check_failure("submit", "F", LOOM_ERR_DEVICE_LOST,
                  "backend 'odd-status' refused the submission (status LOOM_ERR_DEVICE_LOST)");
    check_failure("submit", "7", LOOM_ERR_DEVICE_LOST, "returned status 77");
}

/* ---- 3. the circuit breaker ---------------------------------------------------------------- */

static void test_breaker_sets_a_failing_device_aside_then_tries_it_again(void)
{
    setenv("LOOM_BREAKER_COOLDOWN_MS", "400", 1);
    loom_runtime *rt = start(p_odd, "LOOM_TEST_ODD_PATTERN", "F");
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = relu_graph();
    loom_plan *plan = plan_on(rt, g, "odd-status:0", 0);
    CU_ASSERT_FATAL(plan != NULL);
    loom_fallback_info fb[2];
    char want[64];
    for (int r = 1; r <= 3; r++) {
        CU_ASSERT_EQUAL(count_messages(rt, "set aside for", NULL), 0);
        loom_run_stats st = {.struct_size = sizeof st, .fallbacks = fb, .fallbacks_capacity = 2};
        CU_ASSERT_EQUAL(run_relu(plan, &st), LOOM_OK);
        CU_ASSERT_EQUAL(st.fallbacks_written, 1);
        snprintf(want, sizeof want, "(call %d)", r); /* the device was tried */
        CU_ASSERT_PTR_NOT_NULL(strstr(fb[0].message, want));
    }
    CU_ASSERT_EQUAL(count_messages(rt, "device odd-status:0 set aside for 0.4 s after 3 failed "
                                       "runs; its nodes run on cpu:0", NULL), 1);
    int failed_said = count_messages(rt, "failed on odd-status:0", NULL);
    /* Set aside: the node runs on the CPU without trying the device. */
    for (int r = 0; r < 2; r++) {
        loom_run_stats st = {.struct_size = sizeof st, .fallbacks = fb, .fallbacks_capacity = 2};
        CU_ASSERT_EQUAL(run_relu(plan, &st), LOOM_OK);
        CU_ASSERT_EQUAL(st.fallback_count, 1);
        CU_ASSERT_EQUAL(st.fallbacks_written, 1);
        CU_ASSERT_EQUAL(fb[0].status, LOOM_ERR_DEVICE_LOST);
        CU_ASSERT_PTR_NOT_NULL(strstr(fb[0].message, "not tried"));
        CU_ASSERT_PTR_NULL(strstr(fb[0].message, "(call"));
    }
    CU_ASSERT_EQUAL(count_messages(rt, "failed on odd-status:0", NULL), failed_said);
    CU_ASSERT_EQUAL(count_messages(rt, "set aside for", NULL), 1); /* said once */
    /* A strict plan has no fallback: it still tries the device, and fails saying why. */
    loom_plan *strict = plan_on(rt, g, "odd-status:0", 1);
    CU_ASSERT_FATAL(strict != NULL);
    CU_ASSERT_EQUAL(run_relu(strict, NULL), LOOM_ERR_DEVICE_LOST);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "(call 4)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "set aside"));
    loom_plan_destroy(strict);
    /* After the cool-down it is tried again (call 5: the runs set aside did not call it); it
     * fails again, so it is set aside at once, for twice as long. */
    sleep_ms(500);
    loom_run_stats st = {.struct_size = sizeof st, .fallbacks = fb, .fallbacks_capacity = 2};
    CU_ASSERT_EQUAL(run_relu(plan, &st), LOOM_OK);
    CU_ASSERT_EQUAL(st.fallbacks_written, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(fb[0].message, "(call 5)"));
    CU_ASSERT_EQUAL(count_messages(rt, "device odd-status:0 tried again after its cool-down",
                                   NULL), 1);
    CU_ASSERT_EQUAL(count_messages(rt, "device odd-status:0 set aside for 0.8 s", NULL), 1);
    st = (loom_run_stats){.struct_size = sizeof st, .fallbacks = fb, .fallbacks_capacity = 2};
    CU_ASSERT_EQUAL(run_relu(plan, &st), LOOM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(fb[0].message, "not tried"));
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
    unsetenv("LOOM_BREAKER_COOLDOWN_MS");
}

static void test_breaker_count_is_reset_by_a_good_run(void)
{
    /* Calls 1, 2 fail, 3 works, 4, 5 fail, 6 on work: never three failed runs in a row. */
    loom_runtime *rt = start(p_odd, "LOOM_TEST_ODD_PATTERN", "FFSFFS");
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = relu_graph();
    loom_plan *plan = plan_on(rt, g, "odd-status:0", 0);
    CU_ASSERT_FATAL(plan != NULL);
    size_t want[] = {1, 1, 0, 1, 1, 0, 0};
    for (int r = 0; r < 7; r++) {
        loom_run_stats st = {.struct_size = sizeof st};
        CU_ASSERT_EQUAL(run_relu(plan, &st), LOOM_OK);
        CU_ASSERT_EQUAL(st.fallback_count, want[r]);
    }
    CU_ASSERT_EQUAL(count_messages(rt, "set aside", NULL), 0);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

static void test_breaker_is_off_with_zero_runs(void)
{
    setenv("LOOM_BREAKER_RUNS", "0", 1);
    loom_runtime *rt = start(p_odd, "LOOM_TEST_ODD_PATTERN", "F");
    CU_ASSERT_FATAL(rt != NULL);
    loom_graph *g = relu_graph();
    loom_plan *plan = plan_on(rt, g, "odd-status:0", 0);
    CU_ASSERT_FATAL(plan != NULL);
    loom_fallback_info fb[1];
    for (int r = 1; r <= 6; r++) {
        loom_run_stats st = {.struct_size = sizeof st, .fallbacks = fb, .fallbacks_capacity = 1};
        CU_ASSERT_EQUAL(run_relu(plan, &st), LOOM_OK);
        char want[32];
        snprintf(want, sizeof want, "(call %d)", r);
        CU_ASSERT_PTR_NOT_NULL(strstr(fb[0].message, want));
    }
    CU_ASSERT_EQUAL(count_messages(rt, "set aside", NULL), 0);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
    unsetenv("LOOM_BREAKER_RUNS");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_fallback DEVMEM_PLUGIN ODD_STATUS_PLUGIN\n");
        return 2;
    }
    p_devmem = argv[1];
    p_odd = argv[2];
    setenv("LOOM_OPENCL", "0", 1); /* the test device and the CPU only */
    unsetenv("LOOM_BREAKER_RUNS");
    unsetenv("LOOM_BREAKER_COOLDOWN_MS");
    unsetenv("LOOM_BREAKER_COOLDOWN_MAX_MS");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("fallback", NULL, NULL);
    CU_add_test(s, "stats describe each fallback", test_stats_describe_each_fallback);
    CU_add_test(s, "stats without room still count", test_stats_without_room_still_count);
    CU_add_test(s, "concurrent runs keep their own record",
                test_concurrent_runs_keep_their_own_record);
    CU_add_test(s, "status 77 from execute is device lost, naming 77",
                test_status_77_from_execute_is_device_lost_naming_77);
    CU_add_test(s, "status 77 from a completion is device lost, naming 77",
                test_status_77_from_a_completion_is_device_lost_naming_77);
    CU_add_test(s, "status 77 from enqueue is device lost, naming 77",
                test_status_77_from_enqueue_is_device_lost_naming_77);
    CU_add_test(s, "an enqueue refusal keeps the backend's message",
                test_enqueue_refusal_keeps_the_backends_message);
    CU_add_test(s, "a submit refusal names the backend", test_submit_refusal_names_the_backend);
    CU_add_test(s, "the breaker sets a failing device aside, then tries it again",
                test_breaker_sets_a_failing_device_aside_then_tries_it_again);
    CU_add_test(s, "the breaker's count is reset by a good run",
                test_breaker_count_is_reset_by_a_good_run);
    CU_add_test(s, "the breaker is off with LOOM_BREAKER_RUNS=0",
                test_breaker_is_off_with_zero_runs);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
