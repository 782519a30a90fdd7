/*
 * Tests of the graph core and the scheduler: validation classes, the sticky error, plans,
 * the static memory plan's reuse, run-time argument checks, concurrent runs of one plan,
 * timelines, and failures reported by a kernel.
 */
#include <loom/loom.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

/* ---- validation --------------------------------------------------------------------------- */

static void test_check_rejects_graph_without_outputs(void)
{
    loom_graph *g = loom_graph_create("g");
    int64_t d[1] = {4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_relu(g, x);
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "no outputs"));
    loom_graph_destroy(g);
}

static void test_check_names_unused_input(void)
{
    loom_graph *g = loom_graph_create("g");
    int64_t d[1] = {4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_input(g, "forgotten", LOOM_DTYPE_F32, 1, d);
    loom_output(g, loom_relu(g, x), "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "input 'forgotten' is never used"));
    loom_graph_destroy(g);
}

static void test_check_names_dead_node(void)
{
    loom_graph *g = loom_graph_create("g");
    int64_t d[1] = {4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_value r = loom_relu(g, x);
    loom_value_set_name(g, r, "dead_relu");
    loom_output(g, loom_neg(g, x), "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "never used"));
    CU_ASSERT(contains(loom_last_error(), "Relu"));
    loom_graph_destroy(g);
}

static void test_check_detects_cycle_made_by_rewiring(void)
{
    loom_graph *g = loom_graph_create("g");
    int64_t d[1] = {4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_value a = loom_relu(g, x);
    loom_value b = loom_neg(g, a);
    loom_value c = loom_abs(g, b);
    loom_output(g, c, "y");
    /* a = relu(c) now: a -> b -> c -> a */
    loom_value y2 = loom_identity(g, x);
    CU_ASSERT_NOT_EQUAL(y2, LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_graph_replace_uses(g, x, c), LOOM_OK);
    loom_output(g, y2, "y2");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "cycle"));
    loom_graph_destroy(g);
}

static void test_builder_error_is_sticky_and_reported_first(void)
{
    loom_graph *g = loom_graph_create("g");
    int64_t a_d[2] = {2, 3}, b_d[2] = {4, 5};
    loom_value a = loom_input(g, "a", LOOM_DTYPE_F32, 2, a_d);
    loom_value b = loom_input(g, "b", LOOM_DTYPE_F32, 2, b_d);
    loom_value mm = loom_matmul(g, a, b);
    CU_ASSERT_EQUAL(mm, LOOM_NO_VALUE);
    char first[512];
    snprintf(first, sizeof first, "%s", loom_last_error());
    /* later calls, even valid ones, do nothing */
    CU_ASSERT_EQUAL(loom_relu(g, a), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_input(g, "c", LOOM_DTYPE_F32, 2, a_d), LOOM_NO_VALUE);
    CU_ASSERT_NOT_EQUAL(loom_graph_check(g), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_last_error(), first);
    CU_ASSERT(contains(first, "MatMul"));
    loom_graph_destroy(g);
}

static void test_duplicate_value_names_are_rejected(void)
{
    loom_graph *g = loom_graph_create("g");
    int64_t d[1] = {4};
    loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    CU_ASSERT_EQUAL(loom_input(g, "x", LOOM_DTYPE_F32, 1, d), LOOM_NO_VALUE);
    CU_ASSERT(contains(loom_last_error(), "'x' is already used"));
    loom_graph_destroy(g);
}

static void test_input_shape_overflow_is_rejected(void)
{
    loom_graph *g = loom_graph_create("g");
    int64_t d[3] = {INT64_C(1) << 30, INT64_C(1) << 30, INT64_C(1) << 30};
    CU_ASSERT_EQUAL(loom_input(g, "huge", LOOM_DTYPE_F32, 3, d), LOOM_NO_VALUE);
    CU_ASSERT(contains(loom_last_error(), "overflows"));
    loom_graph_destroy(g);
}

static void test_bad_dtype_rank_and_negative_dim_are_rejected(void)
{
    int64_t d[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    loom_graph *g = loom_graph_create("g");
    CU_ASSERT_EQUAL(loom_input(g, "x", (loom_dtype)99, 1, d), LOOM_NO_VALUE);
    CU_ASSERT(contains(loom_last_error(), "dtype"));
    loom_graph_destroy(g);
    g = loom_graph_create("g");
    CU_ASSERT_EQUAL(loom_input(g, "x", LOOM_DTYPE_F32, 9, d), LOOM_NO_VALUE);
    CU_ASSERT(contains(loom_last_error(), "rank 9"));
    loom_graph_destroy(g);
    g = loom_graph_create("g");
    int64_t neg[2] = {3, -1};
    CU_ASSERT_EQUAL(loom_input(g, "x", LOOM_DTYPE_F32, 2, neg), LOOM_NO_VALUE);
    CU_ASSERT(contains(loom_last_error(), "negative"));
    loom_graph_destroy(g);
}

static void test_value_from_another_graph_is_undefined(void)
{
    loom_graph *g = loom_graph_create("g");
    int64_t d[1] = {4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    CU_ASSERT_EQUAL(loom_relu(g, x + 1000), LOOM_NO_VALUE);
    CU_ASSERT(contains(loom_last_error(), "not a value of graph"));
    loom_graph_destroy(g);
}

static void test_unknown_op_is_named(void)
{
    loom_graph *g = loom_graph_create("g");
    int64_t d[1] = {4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d), y;
    CU_ASSERT_EQUAL(loom_graph_op(g, "FrobnicateV2", "frob", &x, 1, NULL, 0, &y, 1),
                    LOOM_ERR_UNSUPPORTED);
    CU_ASSERT(contains(loom_last_error(), "FrobnicateV2"));
    CU_ASSERT(contains(loom_last_error(), "frob"));
    loom_graph_destroy(g);
}

static void test_checked_graph_is_read_only(void)
{
    loom_graph *g = loom_graph_create("g");
    int64_t d[1] = {4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_output(g, loom_relu(g, x), "y");
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    CU_ASSERT_EQUAL(loom_neg(g, x), LOOM_NO_VALUE);
    CU_ASSERT(contains(loom_last_error(), "read-only"));
    loom_graph_destroy(g);
}

/* ---- plans and runs ----------------------------------------------------------------------- */

static loom_graph *chain_graph(int n, int64_t len)
{
    loom_graph *g = loom_graph_create("chain");
    int64_t d[1] = {len};
    loom_value v = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    for (int i = 0; i < n; i++)
        v = (i % 2) ? loom_neg(g, v) : loom_abs(g, v);
    loom_output(g, v, "y");
    return g;
}

static void test_plan_requires_checked_graph(void)
{
    loom_graph *g = chain_graph(3, 8);
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, NULL, &p), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT(contains(loom_last_error(), "not checked"));
    loom_graph_destroy(g);
}

static void test_plan_rejects_unknown_device_and_lists_known(void)
{
    loom_graph *g = chain_graph(3, 8);
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .device = "tpu:7"};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, &o, &p), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "tpu:7"));
    CU_ASSERT(contains(loom_last_error(), "cpu:0"));
    o.device = "cpu";
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_device(p, 0), "cpu:0");
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_chain_memory_plan_reuses_two_buffers(void)
{
    /* A chain of 10 nodes over 1000 floats: 9 intermediates, but at most two are alive at
     * once, so the arena holds two buffers. */
    loom_graph *g = chain_graph(10, 1000);
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    size_t one = 4032; /* 4000 bytes, 64-byte aligned */
    CU_ASSERT_EQUAL(loom_plan_unshared_bytes(p), 9 * one);
    CU_ASSERT_EQUAL(loom_plan_peak_bytes(p), 2 * one);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

/* y = Reshape(Relu(x)) + Reshape(Neg(x)): the CPU's Reshapes take their inputs' bytes
 * (scheduler/memplan.c), so Relu's output must live until the Add although its only direct
 * reader is the first Reshape; Neg's output must get other bytes. Numbers, and a smaller peak
 * than with LOOM_VIEWS=0. */
static size_t views_case(void)
{
    loom_graph *g = loom_graph_create("views");
    const int64_t xd[2] = {4, 6}, flat[1] = {24};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd);
    loom_value b = loom_reshape(g, loom_relu(g, x), 1, flat);
    loom_value e = loom_reshape(g, loom_neg(g, x), 1, flat);
    loom_output(g, loom_add(g, b, e), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options o = {.struct_size = sizeof o, .device = "cpu:0"};
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &p), LOOM_OK);
    float xv[24], yv[24];
    for (int i = 0; i < 24; i++)
        xv[i] = (float)(i % 7) - 3.0f;
    loom_tensor *tx, *ty;
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, xd, xv, &tx);
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, flat, yv, &ty);
    for (int run = 0; run < 2; run++) {
        memset(yv, 0, sizeof yv);
        CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&tx, 1, &ty, 1, NULL),
                        LOOM_OK);
        for (int i = 0; i < 24; i++)
            CU_ASSERT_EQUAL(yv[i], (xv[i] > 0 ? xv[i] : 0.0f) - xv[i]);
    }
    const size_t peak = loom_plan_peak_bytes(p);
    loom_tensor_destroy(tx);
    loom_tensor_destroy(ty);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    return peak;
}

static void test_reshape_views_share_bytes_and_keep_their_source_alive(void)
{
    const size_t with = views_case();
    setenv("LOOM_VIEWS", "0", 1);
    const size_t without = views_case();
    unsetenv("LOOM_VIEWS");
    CU_ASSERT(with < without);
    CU_ASSERT_EQUAL(with, 2 * 128); /* Relu's and Neg's outputs, 96 bytes each, 64-aligned */
}

static void test_plan_outlives_graph_and_runs_correctly(void)
{
    loom_graph *g = chain_graph(5, 7);
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    loom_graph_destroy(g);
    float x[7] = {-3, -2, -1, 0, 1, 2, 3};
    int64_t d[1] = {7};
    loom_tensor *in, *out;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, x, &in);
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, NULL), LOOM_OK);
    /* abs, neg, abs, neg, abs => |x| */
    const float *y = loom_tensor_data(out);
    for (int i = 0; i < 7; i++)
        CU_ASSERT_DOUBLE_EQUAL(y[i], fabsf(x[i]), 0);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
}

static void test_run_rejects_wrong_count_dtype_and_shape(void)
{
    loom_graph *g = chain_graph(2, 4);
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    int64_t d4[1] = {4}, d5[1] = {5};
    loom_tensor *good, *wrong_shape, *wrong_type, *out;
    loom_tensor_create(LOOM_DTYPE_F32, 1, d4, &good);
    loom_tensor_create(LOOM_DTYPE_F32, 1, d5, &wrong_shape);
    loom_tensor_create(LOOM_DTYPE_I32, 1, d4, &wrong_type);
    loom_tensor_create(LOOM_DTYPE_F32, 1, d4, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, NULL, 0, &out, 1, NULL), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "1 inputs, 0 given"));
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&wrong_shape, 1, &out, 1, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "input 'x'"));
    CU_ASSERT(contains(loom_last_error(), "[5]"));
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&wrong_type, 1, &out, 1, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "int32"));
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&good, 1, &good, 1, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "shares its memory"));
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&good, 1, &out, 1, NULL),
                    LOOM_OK);
    loom_tensor_destroy(good);
    loom_tensor_destroy(wrong_shape);
    loom_tensor_destroy(wrong_type);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_input_returned_as_output_is_copied(void)
{
    loom_graph *g = loom_graph_create("pass");
    int64_t d[1] = {3};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    float cv[3] = {7, 8, 9};
    loom_value c = loom_constant(g, "c", LOOM_DTYPE_F32, 1, d, cv);
    loom_output(g, x, "same");
    loom_output(g, c, "const");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    float xv[3] = {1, 2, 3};
    loom_tensor *in, *outs[2];
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, xv, &in);
    CU_ASSERT_EQUAL_FATAL(loom_plan_make_outputs(p, outs, 2), LOOM_OK);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, outs, 2, NULL), LOOM_OK);
    CU_ASSERT_EQUAL(memcmp(loom_tensor_data(outs[0]), xv, sizeof xv), 0);
    CU_ASSERT_EQUAL(memcmp(loom_tensor_data(outs[1]), cv, sizeof cv), 0);
    loom_tensor_destroy(in);
    loom_tensor_destroy(outs[0]);
    loom_tensor_destroy(outs[1]);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_timeline_has_one_ordered_entry_per_node(void)
{
    loom_graph *g = chain_graph(6, 64);
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    int64_t d[1] = {64};
    loom_tensor *in, *out;
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &in);
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &out);
    loom_node_timing tl[6];
    loom_run_stats st = {.struct_size = sizeof st, .timeline = tl, .timeline_capacity = 6};
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, &st), LOOM_OK);
    CU_ASSERT_EQUAL(st.timeline_count, 6);
    CU_ASSERT(st.latency_ms >= 0);
    CU_ASSERT_EQUAL(st.peak_bytes, loom_plan_peak_bytes(p));
    for (int i = 0; i < 6; i++) {
        CU_ASSERT_EQUAL(tl[i].node, (uint32_t)i);
        CU_ASSERT(tl[i].end_ns >= tl[i].start_ns);
        if (i)
            CU_ASSERT(tl[i].start_ns >= tl[i - 1].end_ns);
    }
    /* Too small a timeline is not written (and not overrun). */
    st.timeline_capacity = 2;
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, &st), LOOM_OK);
    CU_ASSERT_EQUAL(st.timeline_count, 0);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

/* ---- concurrency -------------------------------------------------------------------------- */

typedef struct conc_arg {
    loom_plan *plan;
    int seed;
    int failures;
} conc_arg;

/* y = relu(x * W + b) with W, b constants; each thread checks its own result. */
#define CN 48
static float conc_w[CN * CN], conc_b[CN];

static void *conc_thread(void *argp)
{
    conc_arg *a = argp;
    int64_t d[2] = {CN, CN};
    loom_tensor *in, *out;
    loom_tensor_create(LOOM_DTYPE_F32, 2, d, &in);
    loom_tensor_create(LOOM_DTYPE_F32, 2, d, &out);
    float *x = loom_tensor_data(in);
    for (int iter = 0; iter < 50; iter++) {
        for (int i = 0; i < CN * CN; i++)
            x[i] = (float)(((i * 7 + a->seed * 13 + iter) % 17) - 8) / 8.0f;
        if (loom_plan_run(a->plan, (const loom_tensor *const *)&in, 1, &out, 1, NULL) != LOOM_OK) {
            a->failures++;
            continue;
        }
        const float *y = loom_tensor_data(out);
        for (int i = 0; i < CN; i++)
            for (int j = 0; j < CN; j++) {
                double s = conc_b[j];
                for (int k = 0; k < CN; k++)
                    s += (double)x[i * CN + k] * conc_w[k * CN + j];
                double want = s > 0 ? s : 0;
                if (fabs(y[i * CN + j] - want) > 1e-3 + 1e-4 * fabs(want))
                    a->failures++;
            }
    }
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    return NULL;
}

static void test_concurrent_runs_of_one_plan_are_independent(void)
{
    for (int i = 0; i < CN * CN; i++)
        conc_w[i] = (float)((i * 31 % 23) - 11) / 11.0f;
    for (int i = 0; i < CN; i++)
        conc_b[i] = (float)(i % 5) - 2.0f;
    loom_graph *g = loom_graph_create("conc");
    int64_t d[2] = {CN, CN}, bd[1] = {CN};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, d);
    loom_value w = loom_constant(g, "w", LOOM_DTYPE_F32, 2, d, conc_w);
    loom_value b = loom_constant(g, "b", LOOM_DTYPE_F32, 1, bd, conc_b);
    loom_value h = loom_matmul(g, x, w);
    h = loom_add(g, h, b);
    loom_output(g, loom_relu(g, h), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    pthread_t th[4];
    conc_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (conc_arg){p, t, 0};
        pthread_create(&th[t], NULL, conc_thread, &args[t]);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        CU_ASSERT_EQUAL(args[t].failures, 0);
    }
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

/* ---- failures at run time ----------------------------------------------------------------- */

static void test_kernel_failure_names_node_and_device(void)
{
    loom_graph *g = loom_graph_create("gather");
    int64_t dd[1] = {5}, id[1] = {2};
    loom_value data = loom_input(g, "data", LOOM_DTYPE_F32, 1, dd);
    loom_value idx = loom_input(g, "idx", LOOM_DTYPE_I64, 1, id);
    loom_value y = loom_gather(g, data, idx, 0);
    loom_value_set_name(g, y, "picked");
    loom_output(g, loom_relu(g, y), "out");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    float dv[5] = {1, 2, 3, 4, 5};
    int64_t iv[2] = {1, 9};
    loom_tensor *in[2], *out;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, dd, dv, &in[0]);
    loom_tensor_wrap(LOOM_DTYPE_I64, 1, id, iv, &in[1]);
    loom_tensor_create(LOOM_DTYPE_F32, 1, id, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)in, 2, &out, 1, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "Gather"));
    CU_ASSERT(contains(loom_last_error(), "cpu:0"));
    /* the plan stays usable */
    iv[1] = -1;
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)in, 2, &out, 1, NULL), LOOM_OK);
    CU_ASSERT_DOUBLE_EQUAL(((float *)loom_tensor_data(out))[1], 5.0, 0);
    loom_tensor_destroy(in[0]);
    loom_tensor_destroy(in[1]);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_many_tiny_nodes_run_and_match(void)
{
    /* 20,000 nodes: a long chain must not blow any stack or quadratic path. */
    loom_graph *g = chain_graph(20000, 1);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    CU_ASSERT_EQUAL(loom_plan_peak_bytes(p), 128);
    float x = -2.5f;
    int64_t d[1] = {1};
    loom_tensor *in, *out;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, &x, &in);
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, NULL), LOOM_OK);
    /* abs then neg alternate, ending with neg: -2.5 */
    CU_ASSERT_DOUBLE_EQUAL(*(float *)loom_tensor_data(out), -2.5, 0);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

/* Threads of this process that are running or runnable, the caller excluded. */
static int busy_threads(void)
{
    char path[320];
    int busy = 0;
    pid_t self = (pid_t)syscall(SYS_gettid);
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == self)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        char buf[512];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *paren = strrchr(buf, ')'); /* the state follows "(comm) " */
        if (paren && paren[1] == ' ' && paren[2] == 'R')
            busy++;
    }
    closedir(d);
    return busy;
}

static void test_idle_pool_threads_sleep_instead_of_spinning(void)
{
    loom_graph *g = chain_graph(4, 1 << 20); /* big enough to use the whole pool */
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    int64_t d[1] = {1 << 20};
    loom_tensor *in, *out;
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &in);
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, NULL), LOOM_OK);
    /* After a kernel, workers spin for tens of microseconds and then block. Sample several
     * times, long after that: a spinning pool would show as running in every sample. */
    int always_busy = 1;
    for (int i = 0; i < 5; i++) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (busy_threads() == 0)
            always_busy = 0;
    }
    CU_ASSERT_FALSE(always_busy);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_runtime_lists_cpu_device_with_facts(void)
{
    CU_ASSERT(loom_runtime_device_count(rt) >= 1);
    char id[64];
    loom_device_info info = {.abi_version = LOOM_ABI_VERSION, .struct_size = sizeof info};
    CU_ASSERT_EQUAL(loom_runtime_device(rt, 0, id, sizeof id, &info), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(id, "cpu:0");
    CU_ASSERT_EQUAL(info.kind, LOOM_DEVICE_CPU);
    CU_ASSERT(info.compute_units >= 1);
    CU_ASSERT(info.threads >= 1);
    CU_ASSERT(info.memory_bytes > 0);
    CU_ASSERT_EQUAL(loom_runtime_device(rt, 99, id, sizeof id, &info), LOOM_ERR_INVALID_ARGUMENT);
}

static void test_cpu_threads_env_is_validated(void)
{
    setenv("LOOM_CPU_THREADS", "lots", 1);
    loom_runtime *bad = NULL;
    CU_ASSERT_NOT_EQUAL(loom_runtime_create(NULL, &bad), LOOM_OK);
    CU_ASSERT_PTR_NULL(bad);
    CU_ASSERT(contains(loom_last_error(), "LOOM_CPU_THREADS"));
    setenv("LOOM_CPU_THREADS", "1", 1);
    loom_runtime *one = NULL;
    CU_ASSERT_EQUAL(loom_runtime_create(NULL, &one), LOOM_OK);
    loom_device_info info = {.abi_version = LOOM_ABI_VERSION, .struct_size = sizeof info};
    loom_runtime_device(one, 0, NULL, 0, &info);
    CU_ASSERT_EQUAL(info.threads, 1);
    loom_runtime_destroy(one);
    unsetenv("LOOM_CPU_THREADS");
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"check_rejects_graph_without_outputs", test_check_rejects_graph_without_outputs},
        {"reshape_views_share_bytes_and_keep_their_source_alive",
         test_reshape_views_share_bytes_and_keep_their_source_alive},
        {"check_names_unused_input", test_check_names_unused_input},
        {"check_names_dead_node", test_check_names_dead_node},
        {"check_detects_cycle_made_by_rewiring", test_check_detects_cycle_made_by_rewiring},
        {"builder_error_is_sticky_and_reported_first",
         test_builder_error_is_sticky_and_reported_first},
        {"duplicate_value_names_are_rejected", test_duplicate_value_names_are_rejected},
        {"input_shape_overflow_is_rejected", test_input_shape_overflow_is_rejected},
        {"bad_dtype_rank_and_negative_dim_are_rejected",
         test_bad_dtype_rank_and_negative_dim_are_rejected},
        {"value_from_another_graph_is_undefined", test_value_from_another_graph_is_undefined},
        {"unknown_op_is_named", test_unknown_op_is_named},
        {"checked_graph_is_read_only", test_checked_graph_is_read_only},
        {"plan_requires_checked_graph", test_plan_requires_checked_graph},
        {"plan_rejects_unknown_device_and_lists_known",
         test_plan_rejects_unknown_device_and_lists_known},
        {"chain_memory_plan_reuses_two_buffers", test_chain_memory_plan_reuses_two_buffers},
        {"plan_outlives_graph_and_runs_correctly", test_plan_outlives_graph_and_runs_correctly},
        {"run_rejects_wrong_count_dtype_and_shape", test_run_rejects_wrong_count_dtype_and_shape},
        {"input_returned_as_output_is_copied", test_input_returned_as_output_is_copied},
        {"timeline_has_one_ordered_entry_per_node", test_timeline_has_one_ordered_entry_per_node},
        {"concurrent_runs_of_one_plan_are_independent",
         test_concurrent_runs_of_one_plan_are_independent},
        {"kernel_failure_names_node_and_device", test_kernel_failure_names_node_and_device},
        {"many_tiny_nodes_run_and_match", test_many_tiny_nodes_run_and_match},
        {"idle_pool_threads_sleep_instead_of_spinning",
         test_idle_pool_threads_sleep_instead_of_spinning},
        {"runtime_lists_cpu_device_with_facts", test_runtime_lists_cpu_device_with_facts},
        {"cpu_threads_env_is_validated", test_cpu_threads_env_is_validated},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"runtime", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
