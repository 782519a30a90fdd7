/*
 * Backend ABI 1.0 events and memory, through two devices of the devmem test plugin
 * (LOOM_TEST_DEVMEM_DEVICES=2: in-order queues, events, asynchronous and peer copies, pinned
 * staging, memory_info): a chain that crosses both devices and comes back to the CPU gives the
 * numbers of naive loops; uploads signal the compute queues through events (fewer host wake-ups
 * than with LOOM_EVENTS=0); tensors move between the devices with copy_peer (one copy node, not
 * two through the host); the host arena the copies read and write comes from alloc_host; and
 * the capacity check refuses a plan that memory_info says does not fit. argv[1] is the devmem
 * plugin.
 */
#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *p_devmem;
static char cache_dir[64];

enum { M = 16, K = 32, H = 24 };
static float w1[K * H], w2[H * H], w3[H * H], w4[K * H];

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
    }
}

/* The plugin's count NAME (devmem_test_count), read from the copy the runtime loaded. */
static long plugin_count(const char *name)
{
    void *h = dlopen(p_devmem, RTLD_NOW);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    long (*fn)(const char *) = (long (*)(const char *))dlsym(h, "devmem_test_count");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fn);
    long v = fn(name);
    dlclose(h);
    return v;
}

static loom_runtime *start(void)
{
    setenv("LOOM_TEST_DEVMEM_DEVICES", "2", 1);
    const char *paths[1] = {p_devmem};
    loom_runtime_options o = {.struct_size = sizeof o, .plugin_paths = paths, .n_plugin_paths = 1,
                              .no_default_plugins = 1};
    loom_runtime *rt = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_runtime_create(&o, &rt), LOOM_OK);
    return rt;
}

static loom_value named(loom_graph *g, loom_value v, const char *name)
{
    CU_ASSERT_EQUAL(loom_node_set_name(g, v, name), LOOM_OK);
    return v;
}

/* h1 = relu(x W1) on devmem:0; h2 = relu(h1 W2) and z = x W4 on devmem:1; s = h2 + z there;
 * y = s W3 back on devmem:0; out = relu(y) on the CPU. */
static loom_graph *chain(void)
{
    fill(w1, K * H, 1);
    fill(w2, H * H, 2);
    fill(w3, H * H, 3);
    fill(w4, K * H, 4);
    loom_graph *g = loom_graph_create("chain");
    int64_t dx[2] = {M, K}, d1[2] = {K, H}, d2[2] = {H, H};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    loom_value h1 = named(g, loom_matmul(g, x, loom_constant(g, "w1", LOOM_DTYPE_F32, 2, d1, w1)),
                          "mm1");
    h1 = named(g, loom_relu(g, h1), "r1");
    loom_value h2 = named(g, loom_matmul(g, h1, loom_constant(g, "w2", LOOM_DTYPE_F32, 2, d2, w2)),
                          "mm2");
    h2 = named(g, loom_relu(g, h2), "r2");
    loom_value z = named(g, loom_matmul(g, x, loom_constant(g, "w4", LOOM_DTYPE_F32, 2, d1, w4)),
                         "mm4");
    loom_value s = named(g, loom_add(g, h2, z), "add");
    loom_value y = named(g, loom_matmul(g, s, loom_constant(g, "w3", LOOM_DTYPE_F32, 2, d2, w3)),
                         "mm3");
    loom_output(g, named(g, loom_relu(g, y), "out"), "out");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    return g;
}

static const char *const pins[] = {"node:mm1=devmem:0", "node:r1=devmem:0",
                                   "node:mm2=devmem:1", "node:r2=devmem:1",
                                   "node:mm4=devmem:1", "node:add=devmem:1",
                                   "node:mm3=devmem:0", "node:out=cpu:0"};

static loom_plan *make_plan_with(loom_runtime *rt, loom_graph *g, int strict, int pinned)
{
    loom_plan_options o = {.struct_size = sizeof o, .cache_dir = cache_dir,
                           .pins = pinned ? pins : NULL,
                           .n_pins = pinned ? sizeof pins / sizeof *pins : 0, .strict = strict};
    loom_plan *plan = NULL;
    loom_status st = loom_plan_create(rt, g, &o, &plan);
    if (st != LOOM_OK)
        fprintf(stderr, "plan: %s\n", loom_last_error());
    return plan;
}

static loom_plan *make_plan(loom_runtime *rt, loom_graph *g, int strict)
{
    return make_plan_with(rt, g, strict, 1);
}

static void matmul(const float *a, const float *b, float *c, int m, int k, int n)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int q = 0; q < k; q++)
                acc += (double)a[i * k + q] * b[q * n + j];
            c[i * n + j] = (float)acc;
        }
}

static void reference(const float *x, float *out)
{
    static float h1[M * H], h2[M * H], z[M * H], y[M * H];
    matmul(x, w1, h1, M, K, H);
    for (int i = 0; i < M * H; i++)
        h1[i] = h1[i] > 0 ? h1[i] : 0;
    matmul(h1, w2, h2, M, H, H);
    matmul(x, w4, z, M, K, H);
    for (int i = 0; i < M * H; i++)
        h2[i] = (h2[i] > 0 ? h2[i] : 0) + z[i];
    matmul(h2, w3, y, M, H, H);
    for (int i = 0; i < M * H; i++)
        out[i] = y[i] > 0 ? y[i] : 0;
}

/* Run PLAN RUNS times on seeded input, checking every run against the reference; STATS of the
 * last run. */
static void run_and_check(loom_plan *plan, int runs, loom_run_stats *stats)
{
    int64_t dx[2] = {M, K};
    loom_tensor *x, *out;
    CU_ASSERT_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, dx, &x) == LOOM_OK);
    CU_ASSERT_FATAL(loom_plan_make_outputs(plan, &out, 1) == LOOM_OK);
    static float want[M * H];
    for (int r = 0; r < runs; r++) {
        fill(loom_tensor_data(x), M * K, 7 + (unsigned)r);
        reference(loom_tensor_data(x), want);
        memset(stats, 0, sizeof *stats);
        stats->struct_size = sizeof *stats;
        loom_status st = loom_plan_run(plan, (const loom_tensor *const *)&x, 1, &out, 1, stats);
        CU_ASSERT_EQUAL(st, LOOM_OK);
        if (st != LOOM_OK)
            fprintf(stderr, "run: %s\n", loom_last_error());
        const float *got = loom_tensor_data(out);
        double worst = 0;
        for (int i = 0; i < M * H; i++)
            worst = fmax(worst, fabs(got[i] - want[i]) / (1 + fabs(want[i])));
        CU_ASSERT(worst < 1e-4);
        if (worst >= 1e-4)
            fprintf(stderr, "run %d: worst relative error %g\n", r, worst);
    }
    loom_tensor_destroy(x);
    loom_tensor_destroy(out);
}

static size_t count_copies(const loom_plan *plan, const char *device)
{
    size_t n = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++)
        if (loom_plan_node_is_copy(plan, i) && (!device || !strcmp(loom_plan_node_device(plan, i),
                                                                  device)))
            n++;
    return n;
}

static void print_plan(const loom_plan *plan)
{
    for (size_t i = 0; i < loom_plan_node_count(plan); i++)
        fprintf(stderr, "  %s (%s) on %s\n", loom_plan_node_name(plan, i),
                loom_plan_node_op(plan, i), loom_plan_node_device(plan, i));
}

static void test_events_signal_uploads_and_fewer_host_wakeups(void)
{
    loom_graph *g = chain();
    loom_run_stats with = {0}, without = {0};
    long waits0 = plugin_count("wait"), records0 = plugin_count("record");
    unsetenv("LOOM_EVENTS");
    loom_runtime *rt = start();
    loom_plan *plan = make_plan(rt, g, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plan);
    run_and_check(plan, 5, &with);
    loom_plan_destroy(plan);
    /* Two uploads of x, each waited for by its device's queue through the event it records. */
    CU_ASSERT_EQUAL(with.event_waits, 2);
    CU_ASSERT(plugin_count("wait") - waits0 == 5 * 2);
    CU_ASSERT(plugin_count("upload_async") > 0);
    CU_ASSERT(plugin_count("download_async") > 0);
    (void)records0;

    setenv("LOOM_EVENTS", "0", 1);
    plan = make_plan(rt, g, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plan);
    run_and_check(plan, 3, &without);
    loom_plan_destroy(plan);
    unsetenv("LOOM_EVENTS");
    CU_ASSERT_EQUAL(without.event_waits, 0);
    CU_ASSERT(with.host_wakeups < without.host_wakeups);
    CU_ASSERT_EQUAL(with.host_wakeups + with.event_waits, without.host_wakeups);
    CU_ASSERT_EQUAL(with.copies, without.copies);
    fprintf(stderr, "\n  events: %zu host wake-ups + %zu event waits; LOOM_EVENTS=0: %zu host "
            "wake-ups; %zu copies (%zu peer)\n", with.host_wakeups, with.event_waits,
            without.host_wakeups, with.copies, with.peer_copies);
    loom_runtime_destroy(rt);
    loom_graph_destroy(g);
}

static void test_peer_copies_move_between_the_devices_without_the_host(void)
{
    loom_graph *g = chain();
    loom_runtime *rt = start();
    long peer0 = plugin_count("peer");
    loom_plan *plan = make_plan(rt, g, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plan);
    /* h1 to devmem:1 and s back to devmem:0, one node each. */
    CU_ASSERT_EQUAL(count_copies(plan, "devmem:0->devmem:1"), 1);
    CU_ASSERT_EQUAL(count_copies(plan, "devmem:1->devmem:0"), 1);
    size_t with_peer = count_copies(plan, NULL);
    loom_run_stats st;
    run_and_check(plan, 2, &st);
    CU_ASSERT_EQUAL(st.peer_copies, 2);
    CU_ASSERT_EQUAL(st.copies, with_peer);
    CU_ASSERT_EQUAL(plugin_count("peer") - peer0, 2 * 2);
    loom_plan_destroy(plan);
    size_t peer_wakeups = st.host_wakeups, peer_waits = st.event_waits;

    /* Through the host instead: a download and an upload for each. */
    setenv("LOOM_PEER_COPY", "0", 1);
    plan = make_plan(rt, g, 1);
    unsetenv("LOOM_PEER_COPY");
    CU_ASSERT_PTR_NOT_NULL_FATAL(plan);
    CU_ASSERT_EQUAL(count_copies(plan, NULL), with_peer + 2);
    CU_ASSERT_EQUAL(count_copies(plan, "devmem:0->devmem:1"), 0);
    if (count_copies(plan, NULL) != with_peer + 2)
        print_plan(plan);
    run_and_check(plan, 2, &st);
    CU_ASSERT_EQUAL(st.peer_copies, 0);
    CU_ASSERT_EQUAL(st.copies, with_peer + 2);
    fprintf(stderr, "\n  peer: %zu copies, %zu host wake-ups + %zu event waits; LOOM_PEER_COPY=0: "
            "%zu copies, %zu host wake-ups + %zu event waits\n", with_peer, peer_wakeups,
            peer_waits, st.copies, st.host_wakeups, st.event_waits);
    loom_plan_destroy(plan);
    loom_runtime_destroy(rt);
    loom_graph_destroy(g);
}

static void test_pinned_staging_holds_the_host_side_of_transfers(void)
{
    loom_graph *g = chain();
    loom_runtime *rt = start();
    long a0 = plugin_count("alloc_host"), f0 = plugin_count("free_host");
    loom_plan *plan = make_plan(rt, g, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plan);
    loom_run_stats st;
    run_and_check(plan, 2, &st);
    /* y is downloaded into the CPU's arena for the last Relu: that arena is pinned memory. */
    CU_ASSERT(plugin_count("alloc_host") - a0 >= 1);
    loom_plan_destroy(plan);
    CU_ASSERT_EQUAL(plugin_count("free_host") - f0, plugin_count("alloc_host") - a0);
    loom_runtime_destroy(rt);
    loom_graph_destroy(g);
}

static void test_capacity_check_uses_the_free_memory_the_device_reports(void)
{
    loom_graph *g = chain();
    setenv("LOOM_TEST_DEVMEM_FREE", "1000", 1);
    loom_runtime *rt = start();
    unsetenv("LOOM_TEST_DEVMEM_FREE");
    /* Pinned there and strict: refused, naming the device and both sizes. */
    loom_plan *plan = make_plan(rt, g, 1);
    CU_ASSERT_PTR_NULL(plan);
    const char *msg = loom_last_error();
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "devmem:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "1000 bytes free"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "bytes of intermediate memory"));
    fprintf(stderr, "\n  refused: %s\n", msg);
    loom_plan_destroy(plan);
    /* Free placement: the nodes go to a device with room (the CPU), and the run is right. */
    plan = make_plan_with(rt, g, 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plan);
    for (size_t i = 0; i < loom_plan_node_count(plan); i++)
        CU_ASSERT(strncmp(loom_plan_node_device(plan, i), "devmem", 6) != 0);
    loom_run_stats st;
    run_and_check(plan, 1, &st);
    loom_plan_destroy(plan);
    loom_runtime_destroy(rt);
    /* Enough free memory: the same strict plan is made. */
    setenv("LOOM_TEST_DEVMEM_FREE", "100000000", 1);
    rt = start();
    unsetenv("LOOM_TEST_DEVMEM_FREE");
    plan = make_plan(rt, g, 1);
    CU_ASSERT_PTR_NOT_NULL(plan);
    loom_plan_destroy(plan);
    loom_runtime_destroy(rt);
    loom_graph_destroy(g);
}

static void test_concurrent_runs_share_the_devices(void);

/* A kernel fails on a device while events are in flight: the run starts over without
 * pipelining (and so without events), the failing node re-runs on the CPU, and the numbers are
 * right; the next runs use events again. */
static void test_a_failure_with_events_in_flight_starts_over_and_is_right(void)
{
    loom_graph *g = chain();
    setenv("LOOM_TEST_DEVMEM_FAIL", "3", 1);
    loom_runtime *rt = start();
    unsetenv("LOOM_TEST_DEVMEM_FAIL");
    loom_plan *plan = make_plan(rt, g, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plan);
    loom_run_stats st;
    run_and_check(plan, 1, &st);
    CU_ASSERT(st.fallback_count >= 1);
    run_and_check(plan, 2, &st);
    CU_ASSERT_EQUAL(st.fallback_count, 0);
    CU_ASSERT_EQUAL(st.event_waits, 2);
    loom_plan_destroy(plan);
    loom_runtime_destroy(rt);
    loom_graph_destroy(g);
}

/* The OpenCL backend (PoCL in the tests): x W1 on opencl:0, relu on the CPU, then W2 on
 * opencl:0 again: both uploads signal the OpenCL queue through events, the copies run
 * asynchronously, and the numbers are right. */
static void test_opencl_events_and_async_copies(void)
{
    setenv("LOOM_OPENCL", "1", 1);
    loom_runtime_options o = {.struct_size = sizeof o, .no_default_plugins = 1};
    loom_runtime *rt = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_runtime_create(&o, &rt), LOOM_OK);
    int have = 0;
    for (size_t d = 0; d < loom_runtime_device_count(rt); d++) {
        char id[64];
        loom_device_info info = {.struct_size = sizeof info};
        if (loom_runtime_device(rt, d, id, sizeof id, &info) == LOOM_OK)
            have |= !strcmp(id, "opencl:0");
    }
    if (!have) {
        fprintf(stderr, "\n  no OpenCL device: skipped\n");
        loom_runtime_destroy(rt);
        return;
    }
    fill(w1, K * H, 1);
    fill(w2, H * H, 2);
    loom_graph *g = loom_graph_create("ocl");
    int64_t dx[2] = {M, K}, d1[2] = {K, H}, d2[2] = {H, H};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    loom_value h = named(g, loom_matmul(g, x, loom_constant(g, "w1", LOOM_DTYPE_F32, 2, d1, w1)),
                         "mm1");
    h = named(g, loom_relu(g, h), "r1");
    h = named(g, loom_matmul(g, h, loom_constant(g, "w2", LOOM_DTYPE_F32, 2, d2, w2)), "mm2");
    loom_output(g, h, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    const char *const ocl_pins[] = {"node:mm1=opencl:0", "node:r1=cpu:0", "node:mm2=opencl:0"};
    loom_plan_options po = {.struct_size = sizeof po, .cache_dir = cache_dir, .pins = ocl_pins,
                            .n_pins = 3, .strict = 1};
    loom_plan *plan = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &po, &plan), LOOM_OK);
    int64_t dy[2] = {M, H};
    loom_tensor *xt, *yt;
    CU_ASSERT_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, dx, &xt) == LOOM_OK);
    CU_ASSERT_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, dy, &yt) == LOOM_OK);
    static float h1[M * H], want[M * H];
    for (int r = 0; r < 3; r++) {
        fill(loom_tensor_data(xt), M * K, 20 + (unsigned)r);
        matmul(loom_tensor_data(xt), w1, h1, M, K, H);
        for (int i = 0; i < M * H; i++)
            h1[i] = h1[i] > 0 ? h1[i] : 0;
        matmul(h1, w2, want, M, H, H);
        loom_run_stats st = {.struct_size = sizeof st};
        CU_ASSERT_EQUAL(loom_plan_run(plan, (const loom_tensor *const *)&xt, 1, &yt, 1, &st),
                        LOOM_OK);
        CU_ASSERT_EQUAL(st.event_waits, 2);
        CU_ASSERT_EQUAL(st.copies, 4);
        const float *got = loom_tensor_data(yt);
        double worst = 0;
        for (int i = 0; i < M * H; i++)
            worst = fmax(worst, fabs(got[i] - want[i]) / (1 + fabs(want[i])));
        CU_ASSERT(worst < 1e-4);
        if (r == 0)
            fprintf(stderr, "\n  opencl: %zu event waits, %zu host wake-ups, %zu copies\n",
                    st.event_waits, st.host_wakeups, st.copies);
    }
    size_t n_event = 0;
    for (size_t i = 0; i < loom_plan_dependency_count(plan); i++) {
        loom_dependency_kind kind;
        CU_ASSERT_EQUAL(loom_plan_dependency(plan, i, NULL, NULL, &kind), LOOM_OK);
        n_event += kind == LOOM_DEPENDENCY_EVENT;
    }
    CU_ASSERT_EQUAL(n_event, 2);
    loom_tensor_destroy(xt);
    loom_tensor_destroy(yt);
    loom_plan_destroy(plan);
    loom_runtime_destroy(rt);
    loom_graph_destroy(g);
    setenv("LOOM_OPENCL", "0", 1);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_events DEVMEM_PLUGIN\n");
        return 2;
    }
    p_devmem = argv[1];
    int opencl = argc > 2 && !strcmp(argv[2], "--opencl");
    setenv("LOOM_OPENCL", "0", 1);
    snprintf(cache_dir, sizeof cache_dir, "/tmp/loom-test-events-XXXXXX");
    if (!mkdtemp(cache_dir))
        return 1;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("events", NULL, NULL);
    if (opencl) {
        CU_add_test(s, "opencl: events and asynchronous copies",
                    test_opencl_events_and_async_copies);
        goto run;
    }
    CU_add_test(s, "events signal uploads, fewer host wake-ups",
                test_events_signal_uploads_and_fewer_host_wakeups);
    CU_add_test(s, "peer copies move between the devices without the host",
                test_peer_copies_move_between_the_devices_without_the_host);
    CU_add_test(s, "pinned staging holds the host side of transfers",
                test_pinned_staging_holds_the_host_side_of_transfers);
    CU_add_test(s, "the capacity check uses the free memory the device reports",
                test_capacity_check_uses_the_free_memory_the_device_reports);
    CU_add_test(s, "concurrent runs share the devices", test_concurrent_runs_share_the_devices);
    CU_add_test(s, "a failure with events in flight starts over and is right",
                test_a_failure_with_events_in_flight_starts_over_and_is_right);
run:
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", cache_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", cache_dir);
    return failed ? 1 : 0;
}

/* ---- several runs of one plan at once: each context has its own events --------------------- */

#include <pthread.h>

static float conc_want[M * H]; /* the answer for seed 11, filled before the threads start */

typedef struct conc_arg {
    loom_plan *plan;
    int ok;
} conc_arg;

static void *conc_main(void *p)
{
    conc_arg *a = p;
    int64_t dx[2] = {M, K};
    loom_tensor *x = NULL, *out = NULL;
    a->ok = loom_tensor_create(LOOM_DTYPE_F32, 2, dx, &x) == LOOM_OK &&
            loom_plan_make_outputs(a->plan, &out, 1) == LOOM_OK;
    const float *want = conc_want;
    for (int r = 0; r < 20 && a->ok; r++) {
        fill(loom_tensor_data(x), M * K, 11);
        a->ok = loom_plan_run(a->plan, (const loom_tensor *const *)&x, 1, &out, 1, NULL) ==
                LOOM_OK;
        const float *got = loom_tensor_data(out);
        for (int i = 0; i < M * H && a->ok; i++)
            a->ok = fabs(got[i] - want[i]) <= 1e-4 * (1 + fabs(want[i]));
    }
    loom_tensor_destroy(x);
    loom_tensor_destroy(out);
    return NULL;
}

static void test_concurrent_runs_share_the_devices(void)
{
    loom_graph *g = chain();
    loom_runtime *rt = start();
    loom_plan *plan = make_plan(rt, g, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plan);
    static float x[M * K];
    fill(x, M * K, 11);
    reference(x, conc_want);
    pthread_t th[3];
    conc_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (conc_arg){plan, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, conc_main, &args[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT(args[i].ok);
    }
    loom_plan_destroy(plan);
    loom_runtime_destroy(rt);
    loom_graph_destroy(g);
}
