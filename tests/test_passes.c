/*
 * Tests of the compile pipeline (passes/): the stages a plan records, in their documented
 * order; constant folding of graphs built in C without folding (shape-only and value nodes),
 * with names kept and results checked against naive loops; folded constants outliving the
 * user's graph; and the pipeline's report through the C API and the plan's JSON.
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

/* Run PLAN on one f32 input X of N elements into Y. */
static loom_status run1(loom_plan *plan, float *x, int64_t n, float *y)
{
    loom_tensor *in, *out;
    int64_t d[1] = {n};
    if (loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, x, &in) != LOOM_OK)
        return LOOM_ERR_INTERNAL;
    if (loom_tensor_wrap(LOOM_DTYPE_F32, 1, d, y, &out) != LOOM_OK) {
        loom_tensor_destroy(in);
        return LOOM_ERR_INTERNAL;
    }
    loom_status st = loom_plan_run(plan, (const loom_tensor *const *)&in, 1, &out, 1, NULL);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    return st;
}

static int find_stage(const loom_plan *plan, const char *name, loom_pass_info *info)
{
    for (size_t i = 0; i < loom_plan_pass_count(plan); i++) {
        info->struct_size = sizeof *info;
        if (loom_plan_pass_info(plan, i, info) == LOOM_OK && strcmp(info->name, name) == 0)
            return (int)i;
    }
    return -1;
}

static void test_stages_are_recorded_in_pipeline_order(void)
{
    loom_graph *g = loom_graph_create("order");
    int64_t d[1] = {4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_output(g, loom_relu(g, x), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    const char *want[] = {"validate",       "fold_constants",        "fuse_qdq",
                          "fuse_quantized_matmul",
                          "quantize_int8_dynamic", "fold_batchnorm", "fuse_epilogue",
                          "split_moe_experts",
                          "calibrate_int8", "claims",
                          "place",
                          "compile",        "insert_copies",         "memory_plan"};
    CU_ASSERT_EQUAL(loom_plan_pass_count(p), sizeof want / sizeof *want);
    for (size_t i = 0; i < sizeof want / sizeof *want && i < loom_plan_pass_count(p); i++) {
        loom_pass_info info = {.struct_size = sizeof info};
        CU_ASSERT_EQUAL(loom_plan_pass_info(p, i, &info), LOOM_OK);
        CU_ASSERT_STRING_EQUAL(info.name, want[i]);
        CU_ASSERT(info.ms >= 0);
        CU_ASSERT_PTR_NOT_NULL(info.summary);
    }
    loom_pass_info info = {.struct_size = sizeof info};
    CU_ASSERT_EQUAL(loom_plan_pass_info(p, 99, &info), LOOM_ERR_INVALID_ARGUMENT);
    info.struct_size = 4;
    CU_ASSERT_EQUAL(loom_plan_pass_info(p, 0, &info), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(find_stage(p, "fold_constants", &info) >= 0);
    CU_ASSERT_EQUAL(info.nodes_before, info.nodes_after);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

/* y = x * (c1 + c2), built without folding: the Add of two constants folds away, the Mul
 * keeps its name, and the plan still answers after the user's graph is gone. */
static void test_fold_pass_folds_constant_subgraph_built_in_c(void)
{
    loom_graph *g = loom_graph_create("fold");
    int64_t d[1] = {5};
    float c1[5] = {1, 2, 3, 4, 5}, c2[5] = {0.5f, -1, 2, 0, 10};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_value a = loom_constant(g, "c1", LOOM_DTYPE_F32, 1, d, c1);
    loom_value b = loom_constant(g, "c2", LOOM_DTYPE_F32, 1, d, c2);
    loom_value ins[2] = {a, b}, t, y;
    CU_ASSERT_EQUAL(loom_graph_op(g, "Add", "sum", ins, 2, NULL, 0, &t, 1), LOOM_OK);
    loom_value ins2[2] = {x, t};
    CU_ASSERT_EQUAL(loom_graph_op(g, "Mul", "scale", ins2, 2, NULL, 0, &y, 1), LOOM_OK);
    CU_ASSERT_EQUAL(loom_output(g, y, "y"), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    CU_ASSERT_EQUAL(loom_graph_node_count(g), 2);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    loom_graph_destroy(g); /* the folded constant must live in the plan, not in a graph */
    CU_ASSERT_EQUAL(loom_plan_node_count(p), 1);
    CU_ASSERT_STRING_EQUAL(loom_plan_node_name(p, 0), "scale");
    CU_ASSERT_STRING_EQUAL(loom_plan_node_op(p, 0), "Mul");
    loom_pass_info info;
    CU_ASSERT_FATAL(find_stage(p, "fold_constants", &info) >= 0);
    CU_ASSERT_EQUAL(info.nodes_before, 2);
    CU_ASSERT_EQUAL(info.nodes_after, 1);
    CU_ASSERT(strstr(info.summary, "1 node folded") != NULL);
    float xs[5] = {1, -2, 0.25f, 8, -1}, ys[5] = {0};
    CU_ASSERT_EQUAL(run1(p, xs, 5, ys), LOOM_OK);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_DOUBLE_EQUAL(ys[i], xs[i] * (c1[i] + c2[i]), 1e-6);
    loom_plan_destroy(p);
}

/* Shape-only nodes fold too: y = x * float(Shape(x)), i.e. every element times the length. */
static void test_fold_pass_folds_shape_only_nodes(void)
{
    loom_graph *g = loom_graph_create("shape");
    int64_t d[1] = {3};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_value s, f, y;
    CU_ASSERT_EQUAL(loom_graph_op(g, "Shape", "shape_of_x", &x, 1, NULL, 0, &s, 1), LOOM_OK);
    loom_attr to = loom_attr_int("to", 1 /* ONNX FLOAT */);
    CU_ASSERT_EQUAL(loom_graph_op(g, "Cast", "as_float", &s, 1, &to, 1, &f, 1), LOOM_OK);
    loom_value ins[2] = {x, f};
    CU_ASSERT_EQUAL(loom_graph_op(g, "Mul", "times_len", ins, 2, NULL, 0, &y, 1), LOOM_OK);
    CU_ASSERT_EQUAL(loom_output(g, y, "y"), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    CU_ASSERT_EQUAL(loom_plan_node_count(p), 1);
    float xs[3] = {1, 2, -4}, ys[3];
    CU_ASSERT_EQUAL(run1(p, xs, 3, ys), LOOM_OK);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_DOUBLE_EQUAL(ys[i], xs[i] * 3.0f, 1e-6);
    char *json = NULL;
    CU_ASSERT_EQUAL(loom_plan_explain_json(p, &json), LOOM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(json);
    CU_ASSERT(strstr(json, "\"passes\":[{\"name\":\"validate\"") != NULL);
    CU_ASSERT(strstr(json, "\"name\":\"fold_constants\",\"nodes_before\":3,\"nodes_after\":1") !=
              NULL);
    loom_string_free(json);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

/* A graph whose foldable node only computes a graph output is left alone: folding would need a
 * copy node for the output again. */
static void test_fold_pass_leaves_output_only_nodes(void)
{
    loom_graph *g = loom_graph_create("outonly");
    int64_t d[1] = {2};
    float c[2] = {3, 4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 1, d);
    loom_value k = loom_constant(g, "k", LOOM_DTYPE_F32, 1, d, c);
    loom_output(g, loom_neg(g, k), "negk");
    loom_output(g, loom_relu(g, x), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, NULL, &p), LOOM_OK);
    CU_ASSERT_EQUAL(loom_plan_node_count(p), 2);
    loom_pass_info info;
    CU_ASSERT_FATAL(find_stage(p, "fold_constants", &info) >= 0);
    CU_ASSERT(strstr(info.summary, "nothing to fold") != NULL);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"stages_are_recorded_in_pipeline_order", test_stages_are_recorded_in_pipeline_order},
        {"fold_pass_folds_constant_subgraph_built_in_c",
         test_fold_pass_folds_constant_subgraph_built_in_c},
        {"fold_pass_folds_shape_only_nodes", test_fold_pass_folds_shape_only_nodes},
        {"fold_pass_leaves_output_only_nodes", test_fold_pass_leaves_output_only_nodes},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"passes", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
