/*
 * The C API as a program written from the headers alone uses it (issue 17): memory shared
 * between run arguments, NULL arrays with counts and NULL required arguments at every entry
 * point, a runtime destroyed before its plans, value handles of another graph, the CPU thread
 * limit, builder calls on a checked graph, the last error after successful calls, naming nodes
 * for pins, a plan's inputs and outputs after its graph is gone, and names used twice.
 */
#define _POSIX_C_SOURCE 200809L
#include <loom/loom.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static loom_runtime *rt;

static int suite_init(void)
{
    unsetenv("LOOM_CPU_THREADS");
    loom_runtime_options o = {.struct_size = sizeof o, .cpu_threads = 2, .no_default_plugins = 1};
    return loom_runtime_create(&o, &rt) == LOOM_OK ? 0 : 1;
}

static int suite_clean(void)
{
    loom_runtime_destroy(rt);
    return 0;
}

static int contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

/* x[n] -> Relu -> y, checked. */
static loom_graph *relu_graph(int64_t n)
{
    loom_graph *g = loom_graph_create("relu");
    int64_t d[1] = {n};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_output(g, loom_relu(g, x), "y");
    return g;
}

static loom_plan *plan_of(loom_graph *g)
{
    loom_plan *p = NULL;
    if (loom_graph_check(g) != LOOM_OK || loom_plan_create(rt, g, NULL, &p) != LOOM_OK)
        return NULL;
    return p;
}

/* ---- 1. memory shared between inputs and outputs ------------------------------------------- */

static void test_output_partly_overlapping_an_input_is_refused(void)
{
    loom_graph *g = relu_graph(6);
    loom_plan *p = plan_of(g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    float buf[9] = {-1, 2, -3, 4, -5, 6, 0, 0, 0};
    int64_t d[1] = {6};
    loom_tensor *in, *out;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, buf, &in);
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, buf + 3, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "'y'"));
    CU_ASSERT(contains(loom_last_error(), "'x'"));
    /* nothing was written */
    CU_ASSERT_EQUAL(buf[3], 4);
    CU_ASSERT_EQUAL(buf[8], 0);
    /* the other way round: the output starts before the input */
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, buf + 3, &in);
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, buf, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_adjacent_input_and_output_are_accepted(void)
{
    loom_graph *g = relu_graph(6);
    loom_plan *p = plan_of(g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    float buf[12] = {-1, 2, -3, 4, -5, 6};
    int64_t d[1] = {6};
    loom_tensor *in, *out;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, buf, &in);
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, buf + 6, &out);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, NULL), LOOM_OK);
    const float want[6] = {0, 2, 0, 4, 0, 6};
    CU_ASSERT_EQUAL(memcmp(buf + 6, want, sizeof want), 0);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_two_outputs_bound_to_one_tensor_are_refused(void)
{
    loom_graph *g = loom_graph_create("two");
    int64_t d[1] = {4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_output(g, loom_relu(g, x), "r");
    loom_output(g, loom_neg(g, x), "n");
    loom_plan *p = plan_of(g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    loom_tensor *in, *outs[2];
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &in);
    CU_ASSERT_EQUAL_FATAL(loom_plan_make_outputs(p, outs, 2), LOOM_OK);
    loom_tensor *same[2] = {outs[0], outs[0]};
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, same, 2, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "'r'"));
    CU_ASSERT(contains(loom_last_error(), "'n'"));
    /* two tensors over overlapping memory are the same mistake */
    float buf[6];
    loom_tensor *a, *b;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, buf, &a);
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, buf + 2, &b);
    loom_tensor *ab[2] = {a, b};
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, ab, 2, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    /* distinct outputs run */
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)&in, 1, outs, 2, NULL), LOOM_OK);
    loom_tensor_destroy(a);
    loom_tensor_destroy(b);
    loom_tensor_destroy(in);
    loom_tensor_destroy(outs[0]);
    loom_tensor_destroy(outs[1]);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_one_input_passed_twice_is_accepted(void)
{
    loom_graph *g = loom_graph_create("add");
    int64_t d[1] = {3};
    loom_value a = loom_input(g, "a", LOOM_DTYPE_F32, 1, d);
    loom_value b = loom_input(g, "b", LOOM_DTYPE_F32, 1, d);
    loom_output(g, loom_add(g, a, b), "s");
    loom_plan *p = plan_of(g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    float xv[3] = {1, 2, 3}, sv[3];
    loom_tensor *x, *s;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, xv, &x);
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, sv, &s);
    const loom_tensor *ins[2] = {x, x}; /* reading one buffer twice is fine */
    CU_ASSERT_EQUAL(loom_plan_run(p, ins, 2, &s, 1, NULL), LOOM_OK);
    CU_ASSERT_EQUAL(sv[2], 6);
    loom_tensor_destroy(x);
    loom_tensor_destroy(s);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

/* ---- 2. NULL arrays with counts, NULL required arguments -------------------------------------- */

#define REFUSED(call)                                                                              \
    do {                                                                                           \
        loom_status st_ = (call);                                                                  \
        CU_ASSERT_EQUAL(st_, LOOM_ERR_INVALID_ARGUMENT);                                           \
        if (st_ != LOOM_ERR_INVALID_ARGUMENT)                                                      \
            fprintf(stderr, "\n  not refused: %s -> %s\n", #call, loom_status_name(st_));         \
        CU_ASSERT(loom_last_error()[0] != '\0');                                                   \
    } while (0)

static void test_null_arrays_with_counts_are_refused_at_run(void)
{
    loom_graph *g = relu_graph(4);
    loom_plan *p = plan_of(g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    loom_tensor *in, *out;
    CU_ASSERT_EQUAL_FATAL(loom_plan_make_outputs(p, &out, 1), LOOM_OK);
    int64_t d[1] = {4};
    loom_tensor_create(LOOM_DTYPE_F32, 1, d, &in);
    REFUSED(loom_plan_run(p, NULL, 1, &out, 1, NULL));
    CU_ASSERT(contains(loom_last_error(), "inputs"));
    REFUSED(loom_plan_run(p, (const loom_tensor *const *)&in, 1, NULL, 1, NULL));
    CU_ASSERT(contains(loom_last_error(), "outputs"));
    REFUSED(loom_plan_run(NULL, (const loom_tensor *const *)&in, 1, &out, 1, NULL));
    REFUSED(loom_plan_make_outputs(p, NULL, 1));
    REFUSED(loom_plan_make_outputs(NULL, &out, 1));
    loom_run_stats small = {.struct_size = 2};
    REFUSED(loom_plan_run(p, (const loom_tensor *const *)&in, 1, &out, 1, &small));
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_null_arguments_of_plans_are_refused(void)
{
    loom_graph *g = relu_graph(4);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p = NULL;
    REFUSED(loom_plan_create(NULL, g, NULL, &p));
    REFUSED(loom_plan_create(rt, NULL, NULL, &p));
    REFUSED(loom_plan_create(rt, g, NULL, NULL));
    loom_plan_options po = {.struct_size = sizeof po, .n_pins = 2};
    REFUSED(loom_plan_create(rt, g, &po, &p));
    const char *pins[2] = {"Relu=cpu:0", NULL};
    po.pins = pins;
    REFUSED(loom_plan_create(rt, g, &po, &p));
    CU_ASSERT(contains(loom_last_error(), "pins[1]"));
    loom_plan_options cal = {.struct_size = sizeof cal, .precision = LOOM_PRECISION_INT8,
                             .n_calibration_sets = 1};
    REFUSED(loom_plan_create(rt, g, &cal, &p));
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    REFUSED(loom_plan_explain(p, 0, NULL));
    REFUSED(loom_plan_explain(NULL, 0, NULL));
    loom_node_explain e = {.struct_size = 0};
    REFUSED(loom_plan_explain(p, 0, &e));
    REFUSED(loom_plan_summary_get(p, NULL));
    REFUSED(loom_plan_summary_get(NULL, NULL));
    char *json = NULL;
    REFUSED(loom_plan_explain_json(p, NULL));
    REFUSED(loom_plan_explain_json(NULL, &json));
    CU_ASSERT_PTR_NULL(loom_plan_node_name(NULL, 0));
    CU_ASSERT_EQUAL(loom_plan_node_count(NULL), 0);
    CU_ASSERT_EQUAL(loom_plan_peak_bytes(NULL), 0);
    loom_string_free(NULL);
    loom_plan_destroy(NULL);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_null_arguments_of_runtimes_are_refused(void)
{
    REFUSED(loom_runtime_create(NULL, NULL));
    loom_runtime *r = NULL;
    loom_runtime_options o = {.struct_size = sizeof o, .n_plugin_paths = 2,
                              .no_default_plugins = 1};
    REFUSED(loom_runtime_create(&o, &r));
    CU_ASSERT(contains(loom_last_error(), "plugin_paths"));
    CU_ASSERT_PTR_NULL(r);
    const char *paths[1] = {NULL};
    o.plugin_paths = paths;
    o.n_plugin_paths = 1;
    REFUSED(loom_runtime_create(&o, &r));
    CU_ASSERT(contains(loom_last_error(), "plugin_paths[0]"));
    CU_ASSERT_PTR_NULL(r);
    REFUSED(loom_runtime_device(NULL, 0, NULL, 0, NULL));
    REFUSED(loom_runtime_calibrate(NULL, NULL, 1, 1, NULL, NULL, NULL));
    CU_ASSERT_EQUAL(loom_runtime_device_count(NULL), 0);
    CU_ASSERT_PTR_NULL(loom_runtime_message(NULL, 0));
    loom_runtime_destroy(NULL);
}

static void test_null_arguments_of_tensors_are_refused(void)
{
    loom_tensor *t = NULL;
    REFUSED(loom_tensor_create(LOOM_DTYPE_F32, 2, NULL, &t));
    REFUSED(loom_tensor_wrap(LOOM_DTYPE_F32, 2, NULL, &t, &t));
    int64_t d[1] = {2};
    REFUSED(loom_tensor_create(LOOM_DTYPE_F32, 1, d, NULL));
    REFUSED(loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, NULL, &t));
    CU_ASSERT_PTR_NULL(t);
    REFUSED(loom_tensor_load_npy(NULL, &t));
    REFUSED(loom_tensor_load_npy("/nonexistent.npy", NULL));
    REFUSED(loom_tensor_save_npy("/tmp/loom-never-written.npy", NULL));
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 1, d, &t), LOOM_OK);
    REFUSED(loom_tensor_save_npy(NULL, t));
    loom_tensor_dims(t, NULL);
    loom_tensor_destroy(t);
    CU_ASSERT_PTR_NULL(loom_tensor_data(NULL));
    CU_ASSERT_EQUAL(loom_tensor_nbytes(NULL), 0);
    loom_tensor_destroy(NULL);
    char name[8];
    REFUSED(loom_tensor_load_pb(NULL, &t, name, sizeof name));
    REFUSED(loom_tensor_load_pb("/nonexistent.pb", NULL, name, sizeof name));
}

static void test_null_arguments_of_onnx_loading_are_refused(void)
{
    loom_graph *g = NULL;
    REFUSED(loom_onnx_load(NULL, NULL, &g));
    REFUSED(loom_onnx_load("/nonexistent.onnx", NULL, NULL));
    REFUSED(loom_onnx_load_memory(NULL, 16, NULL, NULL, &g));
    char junk[4] = {0};
    REFUSED(loom_onnx_load_memory(junk, sizeof junk, NULL, NULL, NULL));
    loom_onnx_options o = {.struct_size = sizeof o, .n_dims = 1};
    REFUSED(loom_onnx_load_memory(junk, sizeof junk, NULL, &o, &g));
    loom_onnx_options s = {.struct_size = sizeof s, .n_shapes = 1};
    REFUSED(loom_onnx_load_memory(junk, sizeof junk, NULL, &s, &g));
    loom_onnx_options b = {.struct_size = sizeof b, .n_bindings = 1};
    REFUSED(loom_onnx_load_memory(junk, sizeof junk, NULL, &b, &g));
    CU_ASSERT_PTR_NULL(g);
}

/* A builder call with a NULL array (or graph) records a sticky error instead of crashing. */
static void expect_builder_refused(loom_graph *g, loom_value got, const char *what)
{
    CU_ASSERT_EQUAL(got, LOOM_NO_VALUE);
    if (got != LOOM_NO_VALUE)
        fprintf(stderr, "\n  builder not refused: %s\n", what);
    CU_ASSERT(loom_last_error()[0] != '\0');
    CU_ASSERT_NOT_EQUAL(loom_graph_check(g), LOOM_OK);
}

static void test_null_arrays_of_builders_are_refused(void)
{
    int64_t d[2] = {2, 3};
    struct {
        const char *what;
        int k;
    } cases[] = {{"concat", 0},  {"reshape", 1}, {"slice", 2},     {"squeeze", 3},
                 {"unsqueeze", 4}, {"expand", 5}, {"reduce", 6},   {"op-inputs", 7},
                 {"op-attrs", 8}, {"op-outputs", 9}, {"attr-ints", 10}, {"input-dims", 11},
                 {"constant-data", 12}, {"i64s", 13}, {"split-outs", 14}, {"input-name", 15},
                 {"constant-dims", 16}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        loom_graph *g = loom_graph_create(cases[c].what);
        loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, d), y = LOOM_NO_VALUE, outs[2];
        loom_attr bad = loom_attr_ints("perm", 2, NULL);
        switch (cases[c].k) {
        case 0: y = loom_concat(g, NULL, 2, 0); break;
        case 1: y = loom_reshape(g, x, 2, NULL); break;
        case 2: y = loom_slice(g, x, 1, NULL, NULL, NULL, NULL); break;
        case 3: y = loom_squeeze(g, x, 1, NULL); break;
        case 4: y = loom_unsqueeze(g, x, 1, NULL); break;
        case 5: y = loom_expand(g, x, 2, NULL); break;
        case 6: y = loom_reduce_sum(g, x, 1, NULL, 1); break;
        case 7:
            y = loom_graph_op(g, "Add", NULL, NULL, 2, NULL, 0, outs, 1) == LOOM_OK ? outs[0]
                                                                             : LOOM_NO_VALUE;
            break;
        case 8:
            y = loom_graph_op(g, "Relu", NULL, &x, 1, NULL, 1, outs, 1) == LOOM_OK ? outs[0]
                                                                            : LOOM_NO_VALUE;
            break;
        case 9:
            y = loom_graph_op(g, "Relu", NULL, &x, 1, NULL, 0, NULL, 1) == LOOM_OK ? 0
                                                                           : LOOM_NO_VALUE;
            break;
        case 10:
            y = loom_graph_op(g, "Transpose", NULL, &x, 1, &bad, 1, outs, 1) == LOOM_OK
                    ? outs[0] : LOOM_NO_VALUE;
            break;
        case 11: y = loom_input(g, "z", LOOM_DTYPE_F32, 2, NULL); break;
        case 12: y = loom_constant(g, "c", LOOM_DTYPE_F32, 2, d, NULL); break;
        case 13: y = loom_constant_i64s(g, 3, NULL); break;
        case 14: y = loom_split(g, x, 0, 2, NULL, NULL) == LOOM_OK ? 0 : LOOM_NO_VALUE; break;
        case 15: y = loom_input(g, NULL, LOOM_DTYPE_F32, 2, d); break;
        case 16: y = loom_constant(g, "c", LOOM_DTYPE_F32, 2, NULL, &d); break;
        }
        expect_builder_refused(g, y, cases[c].what);
        loom_graph_destroy(g);
    }
    /* a NULL graph: no crash, no value */
    CU_ASSERT_EQUAL(loom_relu(NULL, 0), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_input(NULL, "x", LOOM_DTYPE_F32, 2, d), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_constant_f32(NULL, 1), LOOM_NO_VALUE);
    REFUSED(loom_output(NULL, 0, "y"));
    REFUSED(loom_value_set_name(NULL, 0, "y"));
    REFUSED(loom_value_info(NULL, 0, NULL, NULL, NULL));
    REFUSED(loom_graph_check(NULL));
    REFUSED(loom_graph_set_folding(NULL, 1));
    REFUSED(loom_graph_replace_uses(NULL, 0, 1));
    REFUSED(loom_graph_op(NULL, "Relu", NULL, NULL, 0, NULL, 0, NULL, 0));
    CU_ASSERT_PTR_NULL(loom_value_name(NULL, 0));
    CU_ASSERT_EQUAL(loom_graph_find_value(NULL, "x"), LOOM_NO_VALUE);
    loom_graph *g = relu_graph(2);
    CU_ASSERT_EQUAL(loom_graph_find_value(g, NULL), LOOM_NO_VALUE);
    REFUSED(loom_value_set_name(g, loom_graph_input(g, 0), NULL));
    loom_graph_destroy(g);
    loom_graph_destroy(NULL);
}

/* ---- 3. the runtime lives until its last plan goes ----------------------------------------- */

static void test_runtime_destroyed_before_its_plans_stays_alive_for_them(void)
{
    loom_runtime *r = NULL;
    loom_runtime_options o = {.struct_size = sizeof o, .cpu_threads = 2, .no_default_plugins = 1};
    CU_ASSERT_EQUAL_FATAL(loom_runtime_create(&o, &r), LOOM_OK);
    loom_graph *g = relu_graph(5);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p1 = NULL, *p2 = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(r, g, NULL, &p1), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(r, g, NULL, &p2), LOOM_OK);
    loom_graph_destroy(g);
    loom_runtime_destroy(r); /* drops the caller's reference: the plans keep the devices */
    float xv[5] = {-1, 1, -2, 2, 3}, yv[5];
    int64_t d[1] = {5};
    loom_tensor *x, *y;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, xv, &x);
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, yv, &y);
    CU_ASSERT_EQUAL(loom_plan_run(p1, (const loom_tensor *const *)&x, 1, &y, 1, NULL), LOOM_OK);
    CU_ASSERT_EQUAL(yv[4], 3);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_device(p1, 0), "cpu:0");
    loom_plan_destroy(p1);
    memset(yv, 0, sizeof yv);
    CU_ASSERT_EQUAL(loom_plan_run(p2, (const loom_tensor *const *)&x, 1, &y, 1, NULL), LOOM_OK);
    CU_ASSERT_EQUAL(yv[3], 2);
    loom_plan_destroy(p2); /* the last reference: the runtime goes now (LeakSanitizer checks) */
    loom_tensor_destroy(x);
    loom_tensor_destroy(y);
}

/* ---- 4. value handles of another graph ----------------------------------------------------- */

static void test_value_of_another_graph_is_refused_even_when_the_index_exists(void)
{
    int64_t d[1] = {4};
    loom_graph *g1 = loom_graph_create("first");
    loom_value x1 = loom_input(g1, "x", LOOM_DTYPE_F32, 1, d);
    loom_graph *g2 = loom_graph_create("second");
    loom_value x2 = loom_input(g2, "x", LOOM_DTYPE_F32, 1, d);
    loom_value r2 = loom_relu(g2, x2);
    CU_ASSERT_NOT_EQUAL(r2, LOOM_NO_VALUE);
    /* g2 has values 0 and 1, so x1's position exists there */
    CU_ASSERT_EQUAL(loom_value_info(g2, x1, NULL, NULL, NULL), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "'second'"));
    CU_ASSERT_PTR_NULL(loom_value_name(g2, x1));
    CU_ASSERT_EQUAL(loom_graph_value_producer(g1, r2), -1);
    CU_ASSERT_EQUAL(loom_relu(g2, x1), LOOM_NO_VALUE);
    CU_ASSERT(contains(loom_last_error(), "graph 'second'"));
    CU_ASSERT_EQUAL(loom_graph_check(g2), LOOM_ERR_INVALID_ARGUMENT); /* sticky */
    CU_ASSERT(contains(loom_last_error(), "graph 'second'"));
    /* the first graph is untouched and its own handles still work */
    loom_output(g1, loom_neg(g1, x1), "y");
    CU_ASSERT_EQUAL(loom_graph_check(g1), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_value_name(g1, x1), "x");
    /* handles read back from a graph are that graph's */
    CU_ASSERT_EQUAL(loom_graph_input(g1, 0), x1);
    CU_ASSERT_EQUAL(loom_graph_find_value(g1, "x"), x1);
    CU_ASSERT_EQUAL(loom_graph_node_input(g1, 0, 0), x1);
    CU_ASSERT_EQUAL(loom_graph_output(g1, 0), loom_graph_node_output(g1, 0, 0));
    CU_ASSERT_EQUAL(loom_graph_value_producer(g1, loom_graph_output(g1, 0)), 0);
    loom_graph *g3 = loom_graph_create("third");
    loom_value x3 = loom_input(g3, "x", LOOM_DTYPE_F32, 1, d);
    CU_ASSERT_EQUAL(loom_output(g3, x1, "z"), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "graph 'third'"));
    (void)x3;
    loom_graph_destroy(g1);
    loom_graph_destroy(g2);
    loom_graph_destroy(g3);
}

/* ---- 5. the CPU thread limit --------------------------------------------------------------- */

static void test_cpu_threads_beyond_the_limit_are_refused(void)
{
    loom_runtime *r = NULL;
    loom_runtime_options o = {.struct_size = sizeof o, .cpu_threads = 100000,
                              .no_default_plugins = 1};
    CU_ASSERT_EQUAL(loom_runtime_create(&o, &r), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT(contains(loom_last_error(), "100000"));
    o.cpu_threads = LOOM_MAX_CPU_THREADS + 1;
    CU_ASSERT_EQUAL(loom_runtime_create(&o, &r), LOOM_ERR_INVALID_ARGUMENT);
    o.cpu_threads = 0;
    setenv("LOOM_CPU_THREADS", "100000", 1);
    CU_ASSERT_EQUAL(loom_runtime_create(&o, &r), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "LOOM_CPU_THREADS"));
    CU_ASSERT(contains(loom_last_error(), "100000"));
    CU_ASSERT_PTR_NULL(r);
    setenv("LOOM_CPU_THREADS", "3", 1);
    CU_ASSERT_EQUAL_FATAL(loom_runtime_create(&o, &r), LOOM_OK);
    loom_device_info info = {.abi_version = LOOM_ABI_VERSION, .struct_size = sizeof info};
    loom_runtime_device(r, 0, NULL, 0, &info);
    CU_ASSERT_EQUAL(info.threads, 3);
    loom_runtime_destroy(r);
    unsetenv("LOOM_CPU_THREADS");
}

/* ---- 6. checked graphs and the last error --------------------------------------------------- */

static void test_failed_builder_call_on_checked_graph_keeps_it_plannable(void)
{
    loom_graph *g = relu_graph(4);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_value x = loom_graph_input(g, 0);
    CU_ASSERT_EQUAL(loom_neg(g, x), LOOM_NO_VALUE);
    CU_ASSERT(contains(loom_last_error(), "read-only"));
    CU_ASSERT_EQUAL(loom_reshape(g, x, 2, NULL), LOOM_NO_VALUE);
    CU_ASSERT(contains(loom_last_error(), "read-only"));
    CU_ASSERT_EQUAL(loom_value_set_name(g, x, "renamed"), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_output(g, x, "again"), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_input(g, "late", LOOM_DTYPE_F32, 0, NULL), LOOM_NO_VALUE);
    CU_ASSERT_EQUAL(loom_graph_check(g), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_value_name(g, x), "x");
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

#define CLEARED(call)                                                                              \
    do {                                                                                           \
        loom_tensor *junk_ = NULL;                                                                 \
        loom_tensor_create((loom_dtype)99, 0, NULL, &junk_); /* leaves an error behind */        \
        CU_ASSERT(loom_last_error()[0] != '\0');                                                   \
        CU_ASSERT((call));                                                                         \
        if (loom_last_error()[0])                                                                  \
            fprintf(stderr, "\n  not cleared by %s: %s\n", #call, loom_last_error());            \
        CU_ASSERT_STRING_EQUAL(loom_last_error(), "");                                             \
    } while (0)

static void test_successful_calls_clear_the_last_error(void)
{
    int64_t d[1] = {3};
    loom_tensor *t = NULL, *w = NULL;
    float buf[3] = {1, -2, 3};
    CLEARED(loom_tensor_create(LOOM_DTYPE_F32, 1, d, &t) == LOOM_OK);
    CLEARED(loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, buf, &w) == LOOM_OK);
    loom_graph *g = loom_graph_create("clear");
    loom_value x = LOOM_NO_VALUE, y = LOOM_NO_VALUE;
    CLEARED((x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d)) != LOOM_NO_VALUE);
    CLEARED((y = loom_relu(g, x)) != LOOM_NO_VALUE);
    loom_value z = LOOM_NO_VALUE;
    CLEARED(loom_graph_op(g, "Neg", "negate", &y, 1, NULL, 0, &z, 1) == LOOM_OK);
    CLEARED(loom_value_set_name(g, z, "z") == LOOM_OK);
    CLEARED(loom_value_info(g, z, NULL, NULL, NULL) == LOOM_OK);
    CLEARED(loom_output(g, z, NULL) == LOOM_OK);
    CLEARED(loom_graph_check(g) == LOOM_OK);
    loom_plan *p = NULL;
    CLEARED(loom_plan_create(rt, g, NULL, &p) == LOOM_OK);
    loom_tensor *out = NULL;
    CLEARED(loom_plan_make_outputs(p, &out, 1) == LOOM_OK);
    CLEARED(loom_plan_run(p, (const loom_tensor *const *)&w, 1, &out, 1, NULL) == LOOM_OK);
    loom_node_explain e = {.struct_size = sizeof e};
    CLEARED(loom_plan_explain(p, 0, &e) == LOOM_OK);
    loom_plan_summary s = {.struct_size = sizeof s};
    CLEARED(loom_plan_summary_get(p, &s) == LOOM_OK);
    char *json = NULL;
    CLEARED(loom_plan_explain_json(p, &json) == LOOM_OK);
    loom_string_free(json);
    char id[32];
    CLEARED(loom_runtime_device(rt, 0, id, sizeof id, NULL) == LOOM_OK);
    loom_runtime *r = NULL;
    loom_runtime_options o = {.struct_size = sizeof o, .cpu_threads = 1, .no_default_plugins = 1};
    CLEARED(loom_runtime_create(&o, &r) == LOOM_OK);
    loom_runtime_destroy(r);
    /* files: .npy both ways, an ONNX model (the fixtures, when the suite is given them) */
    char tmp[] = "/tmp/loom-api-clear-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmp));
    char path[128];
    snprintf(path, sizeof path, "%s/t.npy", tmp);
    CLEARED(loom_tensor_save_npy(path, w) == LOOM_OK);
    loom_tensor *back = NULL;
    CLEARED(loom_tensor_load_npy(path, &back) == LOOM_OK);
    loom_tensor_destroy(back);
    remove(path);
    rmdir(tmp);
    const char *fixtures = getenv("LOOM_FIXTURES");
    if (fixtures) {
        char model[512];
        snprintf(model, sizeof model, "%s/mlp/model.onnx", fixtures);
        loom_graph *m = NULL;
        CLEARED(loom_onnx_load(model, NULL, &m) == LOOM_OK);
        loom_graph_destroy(m);
    }
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    loom_tensor_destroy(out);
    loom_tensor_destroy(t);
    loom_tensor_destroy(w);
}

/* ---- 7. naming nodes; a plan's inputs and outputs ------------------------------------------- */

static void test_named_nodes_of_typed_builders_can_be_pinned(void)
{
    loom_graph *g = loom_graph_create("named");
    int64_t d[1] = {4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_value r = loom_relu(g, x);
    loom_value n = loom_neg(g, r);
    CU_ASSERT_EQUAL(loom_node_set_name(g, r, "act"), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(loom_graph_node_name(g, 0), "act");
    CU_ASSERT_EQUAL(loom_node_set_name(g, r, "act"), LOOM_OK); /* the same name again: no-op */
    loom_output(g, n, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    const char *pins[1] = {"node:act=cpu:0"};
    loom_plan_options po = {.struct_size = sizeof po, .pins = pins, .n_pins = 1};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &po, &p), LOOM_OK);
    int found = 0;
    for (size_t i = 0; i < loom_plan_node_count(p); i++)
        if (strcmp(loom_plan_node_name(p, i), "act") == 0) {
            loom_node_explain e = {.struct_size = sizeof e};
            CU_ASSERT_EQUAL(loom_plan_explain(p, i, &e), LOOM_OK);
            CU_ASSERT(contains(e.decided_by, "pin"));
            found = 1;
        }
    CU_ASSERT(found);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

static void test_node_names_must_be_unique_and_name_a_node(void)
{
    int64_t d[1] = {4};
    loom_graph *g = loom_graph_create("dup");
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_value r = loom_relu(g, x), n = loom_neg(g, r);
    CU_ASSERT_EQUAL(loom_node_set_name(g, r, "act"), LOOM_OK);
    CU_ASSERT_EQUAL(loom_node_set_name(g, n, "act"), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "'act'"));
    CU_ASSERT_NOT_EQUAL(loom_graph_check(g), LOOM_OK);
    loom_graph_destroy(g);

    g = loom_graph_create("made-up");
    x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    r = loom_relu(g, x);
    n = loom_neg(g, r);
    /* a name the builder made up for another node is taken too */
    CU_ASSERT_EQUAL(loom_node_set_name(g, n, loom_graph_node_name(g, 0)),
                    LOOM_ERR_INVALID_ARGUMENT);
    loom_graph_destroy(g);

    g = loom_graph_create("not-a-node");
    x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    CU_ASSERT_EQUAL(loom_node_set_name(g, x, "in"), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "'x'"));
    loom_graph_destroy(g);

    g = loom_graph_create("empty");
    x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    r = loom_relu(g, x);
    CU_ASSERT_EQUAL(loom_node_set_name(g, r, ""), LOOM_ERR_INVALID_ARGUMENT);
    loom_graph_destroy(g);
    CU_ASSERT_EQUAL(loom_node_set_name(NULL, 0, "a"), LOOM_ERR_INVALID_ARGUMENT);
}

static void test_plan_describes_its_inputs_and_outputs_after_the_graph_is_gone(void)
{
    loom_graph *g = loom_graph_create("io");
    int64_t da[2] = {2, 3}, db[1] = {3};
    loom_value a = loom_input(g, "a", LOOM_DTYPE_F32, 2, da);
    loom_value b = loom_input(g, "b", LOOM_DTYPE_F32, 1, db);
    loom_output(g, loom_add(g, a, b), "sum");
    loom_output(g, loom_reduce_sum(g, a, 0, NULL, 0), "total");
    loom_plan *p = plan_of(g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    loom_graph_destroy(g);
    CU_ASSERT_EQUAL(loom_plan_input_count(p), 2);
    CU_ASSERT_EQUAL(loom_plan_output_count(p), 2);
    const char *name = NULL;
    loom_dtype dtype = LOOM_DTYPE_UNDEFINED;
    uint32_t rank = 99;
    int64_t dims[LOOM_MAX_RANK] = {0};
    CU_ASSERT_EQUAL(loom_plan_input_info(p, 0, &name, &dtype, &rank, dims), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(name, "a");
    CU_ASSERT_EQUAL(dtype, LOOM_DTYPE_F32);
    CU_ASSERT_EQUAL(rank, 2);
    CU_ASSERT_EQUAL(dims[0], 2);
    CU_ASSERT_EQUAL(dims[1], 3);
    CU_ASSERT_EQUAL(loom_plan_input_info(p, 1, &name, NULL, &rank, NULL), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(name, "b");
    CU_ASSERT_EQUAL(rank, 1);
    CU_ASSERT_EQUAL(loom_plan_output_info(p, 0, &name, &dtype, &rank, dims), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(name, "sum");
    CU_ASSERT_EQUAL(rank, 2);
    CU_ASSERT_EQUAL(loom_plan_output_info(p, 1, &name, &dtype, &rank, dims), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(name, "total");
    CU_ASSERT_EQUAL(rank, 0);
    CU_ASSERT_EQUAL(loom_plan_input_info(p, 2, &name, NULL, NULL, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "2"));
    CU_ASSERT_EQUAL(loom_plan_output_info(p, 2, NULL, NULL, NULL, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_plan_output_info(NULL, 0, NULL, NULL, NULL, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_plan_input_count(NULL), 0);
    loom_plan_destroy(p);
}

/* ---- 8. names used twice -------------------------------------------------------------------- */

static void test_names_used_twice_are_refused_naming_the_value(void)
{
    int64_t d[1] = {4};
    loom_graph *g = loom_graph_create("names");
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_value r = loom_relu(g, x);
    CU_ASSERT_EQUAL(loom_value_set_name(g, r, "x"), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "'x'"));
    CU_ASSERT_NOT_EQUAL(loom_graph_check(g), LOOM_OK);
    loom_graph_destroy(g);

    g = loom_graph_create("outputs");
    x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    r = loom_relu(g, x);
    loom_value n = loom_neg(g, x);
    CU_ASSERT_EQUAL(loom_output(g, r, "y"), LOOM_OK);
    CU_ASSERT_EQUAL(loom_output(g, n, "y"), LOOM_ERR_INVALID_ARGUMENT); /* name of another */
    CU_ASSERT(contains(loom_last_error(), "'y'"));
    loom_graph_destroy(g);

    g = loom_graph_create("twice");
    x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    r = loom_relu(g, x);
    CU_ASSERT_EQUAL(loom_output(g, r, "y"), LOOM_OK);
    CU_ASSERT_EQUAL(loom_output(g, r, "y2"), LOOM_ERR_INVALID_ARGUMENT); /* listed twice */
    CU_ASSERT(contains(loom_last_error(), "'y'"));
    CU_ASSERT_STRING_EQUAL(loom_value_name(g, r), "y"); /* not renamed by the refused call */
    loom_graph_destroy(g);

    g = loom_graph_create("renamed-output");
    x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    r = loom_relu(g, x);
    CU_ASSERT_EQUAL(loom_output(g, r, NULL), LOOM_OK);
    CU_ASSERT_EQUAL(loom_output(g, r, NULL), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), loom_value_name(g, r)));
    loom_graph_destroy(g);

    /* a node named like an existing value: its output gets a made-up name, never a duplicate */
    g = loom_graph_create("node-named-like-a-value");
    x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_value o;
    CU_ASSERT_EQUAL(loom_graph_op(g, "Relu", "x", &x, 1, NULL, 0, &o, 1), LOOM_OK);
    CU_ASSERT_STRING_NOT_EQUAL(loom_value_name(g, o), "x");
    CU_ASSERT_EQUAL(loom_graph_find_value(g, "x"), x);
    loom_graph_destroy(g);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"output_partly_overlapping_an_input_is_refused",
         test_output_partly_overlapping_an_input_is_refused},
        {"adjacent_input_and_output_are_accepted", test_adjacent_input_and_output_are_accepted},
        {"two_outputs_bound_to_one_tensor_are_refused",
         test_two_outputs_bound_to_one_tensor_are_refused},
        {"one_input_passed_twice_is_accepted", test_one_input_passed_twice_is_accepted},
        {"null_arrays_with_counts_are_refused_at_run",
         test_null_arrays_with_counts_are_refused_at_run},
        {"null_arguments_of_plans_are_refused", test_null_arguments_of_plans_are_refused},
        {"null_arguments_of_runtimes_are_refused", test_null_arguments_of_runtimes_are_refused},
        {"null_arguments_of_tensors_are_refused", test_null_arguments_of_tensors_are_refused},
        {"null_arguments_of_onnx_loading_are_refused",
         test_null_arguments_of_onnx_loading_are_refused},
        {"null_arrays_of_builders_are_refused", test_null_arrays_of_builders_are_refused},
        {"runtime_destroyed_before_its_plans_stays_alive_for_them",
         test_runtime_destroyed_before_its_plans_stays_alive_for_them},
        {"value_of_another_graph_is_refused_even_when_the_index_exists",
         test_value_of_another_graph_is_refused_even_when_the_index_exists},
        {"cpu_threads_beyond_the_limit_are_refused", test_cpu_threads_beyond_the_limit_are_refused},
        {"failed_builder_call_on_checked_graph_keeps_it_plannable",
         test_failed_builder_call_on_checked_graph_keeps_it_plannable},
        {"successful_calls_clear_the_last_error", test_successful_calls_clear_the_last_error},
        {"named_nodes_of_typed_builders_can_be_pinned",
         test_named_nodes_of_typed_builders_can_be_pinned},
        {"node_names_must_be_unique_and_name_a_node",
         test_node_names_must_be_unique_and_name_a_node},
        {"plan_describes_its_inputs_and_outputs_after_the_graph_is_gone",
         test_plan_describes_its_inputs_and_outputs_after_the_graph_is_gone},
        {"names_used_twice_are_refused_naming_the_value",
         test_names_used_twice_are_refused_naming_the_value},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"api_hardening", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
