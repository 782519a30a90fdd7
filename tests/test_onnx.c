/*
 * Tests of the ONNX importer and the TensorProto reader, on the small models that
 * tests/data/onnx/make_models.py writes (expected outputs computed there with numpy): numbers
 * of imported models against those references, folding of shape arithmetic, symbolic dims,
 * external data, If, older opset forms, and one clear error (right status, no crash, no leak)
 * for each kind of bad input.
 */
#include <loom/loom.h>
#include <loom/onnx.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static loom_runtime *rt;
static char data_dir[4096];

/* The directory of the test models: $LOOM_ONNX_DATA, else beside the fixtures the test runner
 * names, else relative to this source file. */
static void find_data_dir(void)
{
    const char *env = getenv("LOOM_ONNX_DATA");
    const char *fx = getenv("LOOM_FIXTURES");
    if (env && *env)
        snprintf(data_dir, sizeof data_dir, "%s", env);
    else if (fx && *fx)
        snprintf(data_dir, sizeof data_dir, "%s/../data/onnx", fx);
    else {
        snprintf(data_dir, sizeof data_dir, "%s", __FILE__);
        char *slash = strrchr(data_dir, '/');
        if (slash)
            strcpy(slash, "/data/onnx");
        else
            strcpy(data_dir, "data/onnx");
    }
}

static int suite_init(void)
{
    find_data_dir();
    return loom_runtime_create(NULL, &rt) == LOOM_OK ? 0 : 1;
}

static int suite_clean(void)
{
    loom_runtime_destroy(rt);
    return 0;
}

/* Path of a data file (a few rotating buffers, so two can be used in one call). */
static const char *data(const char *name)
{
    static char bufs[4][4400];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", data_dir, name);
    return b;
}

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

static int exists(const char *path)
{
    return access(path, R_OK) == 0;
}

static loom_graph *load_ok(const char *model, const loom_onnx_options *opt)
{
    loom_graph *g = NULL;
    loom_status st = loom_onnx_load(data(model), opt, &g);
    if (st != LOOM_OK)
        fprintf(stderr, "\n  loading %s: %s: %s\n", model, loom_status_name(st),
                loom_last_error());
    CU_ASSERT_EQUAL(st, LOOM_OK);
    return st == LOOM_OK ? g : NULL;
}

/* Expect loading MODEL to fail with STATUS, and the message to contain each of NEEDLES
 * (NULL-terminated). */
static void expect_load_error(const char *model, const loom_onnx_options *opt, loom_status status,
                              const char *const *needles)
{
    loom_graph *g = (loom_graph *)&g; /* must be reset to NULL */
    loom_status st = loom_onnx_load(data(model), opt, &g);
    CU_ASSERT_EQUAL(st, status);
    CU_ASSERT_PTR_NULL(g);
    const char *msg = loom_last_error();
    for (size_t i = 0; needles[i]; i++) {
        CU_ASSERT(contains(msg, needles[i]));
        if (!contains(msg, needles[i]))
            fprintf(stderr, "\n  %s: message '%s' lacks '%s'\n", model, msg, needles[i]);
    }
    if (st == LOOM_OK)
        loom_graph_destroy(g);
}

static loom_tensor *load_pb(const char *name)
{
    loom_tensor *t = NULL;
    loom_status st = loom_tensor_load_pb(data(name), &t, NULL, 0);
    if (st != LOOM_OK)
        fprintf(stderr, "\n  %s: %s\n", name, loom_last_error());
    CU_ASSERT_EQUAL(st, LOOM_OK);
    return t;
}

/* |got - want| <= atol + rtol * |want| for every element, same shape. */
static void compare_f32(const loom_tensor *got, const loom_tensor *want, double atol, double rtol)
{
    CU_ASSERT_EQUAL_FATAL(loom_tensor_dtype(got), LOOM_DTYPE_F32);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_dtype(want), LOOM_DTYPE_F32);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_rank(got), loom_tensor_rank(want));
    int64_t a[LOOM_MAX_RANK], b[LOOM_MAX_RANK];
    loom_tensor_dims(got, a);
    loom_tensor_dims(want, b);
    for (uint32_t k = 0; k < loom_tensor_rank(got); k++)
        CU_ASSERT_EQUAL_FATAL(a[k], b[k]);
    const float *x = loom_tensor_data(got), *y = loom_tensor_data(want);
    size_t n = loom_tensor_nbytes(want) / sizeof(float), bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)x[i] - y[i]) <= atol + rtol * fabs((double)y[i]))) {
            if (!bad++)
                fprintf(stderr, "\n  element %zu: got %g, want %g\n", i, x[i], y[i]);
        }
    CU_ASSERT_EQUAL(bad, 0);
}

/* Run G (consumed) on PREFIX.in<k>.pb and compare with PREFIX.out<k>.pb. */
static void run_and_compare(loom_graph *g, const char *prefix, double tol)
{
    if (!g)
        return;
    loom_plan *plan = NULL;
    loom_status st = loom_plan_create(rt, g, NULL, &plan);
    if (st != LOOM_OK)
        fprintf(stderr, "\n  plan of %s: %s\n", prefix, loom_last_error());
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    size_t n_in = loom_graph_input_count(g), n_out = loom_graph_output_count(g);
    loom_tensor *ins[8] = {0}, *outs[8] = {0};
    CU_ASSERT_FATAL(n_in <= 8 && n_out <= 8);
    char name[256];
    for (size_t k = 0; k < n_in; k++) {
        snprintf(name, sizeof name, "%s.in%zu.pb", prefix, k);
        ins[k] = load_pb(name);
    }
    CU_ASSERT_EQUAL_FATAL(loom_plan_make_outputs(plan, outs, n_out), LOOM_OK);
    st = loom_plan_run(plan, (const loom_tensor *const *)ins, n_in, outs, n_out, NULL);
    if (st != LOOM_OK)
        fprintf(stderr, "\n  run of %s: %s\n", prefix, loom_last_error());
    CU_ASSERT_EQUAL(st, LOOM_OK);
    for (size_t k = 0; k < n_out && st == LOOM_OK; k++) {
        snprintf(name, sizeof name, "%s.out%zu.pb", prefix, k);
        loom_tensor *want = load_pb(name);
        if (want)
            compare_f32(outs[k], want, tol, tol);
        loom_tensor_destroy(want);
    }
    for (size_t k = 0; k < n_in; k++)
        loom_tensor_destroy(ins[k]);
    for (size_t k = 0; k < n_out; k++)
        loom_tensor_destroy(outs[k]);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
}

/* Some tests need operators other engineers are adding to the registry; until then the import
 * must fail cleanly naming them, and the test says it was skipped. */
static int skip_if_ops_missing(const char *model, const loom_onnx_options *opt, loom_graph **g)
{
    *g = NULL;
    loom_status st = loom_onnx_load(data(model), opt, g);
    if (st == LOOM_ERR_UNSUPPORTED && contains(loom_last_error(), "unsupported ops")) {
        fprintf(stderr, "\n  (skipped %s: %s)\n", model, loom_last_error());
        CU_ASSERT_PTR_NULL(*g);
        return 1;
    }
    if (st != LOOM_OK)
        fprintf(stderr, "\n  loading %s: %s\n", model, loom_last_error());
    CU_ASSERT_EQUAL(st, LOOM_OK);
    return st != LOOM_OK;
}

/* ---- models that import and compute the right numbers ------------------------------------ */

static void test_mlp_matches_numpy(void)
{
    loom_graph *g = load_ok("mlp.onnx", NULL);
    if (!g)
        return;
    CU_ASSERT_EQUAL(loom_graph_input_count(g), 1);
    CU_ASSERT_STRING_EQUAL(loom_value_name(g, loom_graph_input(g, 0)), "x");
    CU_ASSERT_EQUAL(loom_graph_output_count(g), 1);
    CU_ASSERT_STRING_EQUAL(loom_value_name(g, loom_graph_output(g, 0)), "y");
    CU_ASSERT_EQUAL(loom_graph_node_count(g), 3);
    /* intermediate values carry the model's tensor names */
    CU_ASSERT_NOT_EQUAL(loom_graph_find_value(g, "xwb"), LOOM_NO_VALUE);
    run_and_compare(g, "mlp", 1e-5);
}

static void test_typed_initializers_and_constant_nodes(void)
{
    loom_graph *g = load_ok("constants.onnx", NULL);
    if (g)
        CU_ASSERT_EQUAL(loom_graph_node_count(g), 3); /* Gather, Add, Mul */
    run_and_compare(g, "constants", 1e-6);
}

static void test_slice_attribute_form_equals_input_form(void)
{
    loom_graph *g9 = load_ok("slice_opset9.onnx", NULL);
    run_and_compare(g9, "slice", 0);
    loom_graph *g13 = load_ok("slice_opset13.onnx", NULL);
    run_and_compare(g13, "slice", 0);
}

static void test_softmax_opset11_flattens_from_axis(void)
{
    loom_graph *g = load_ok("softmax_opset11.onnx", NULL);
    if (!g)
        return;
    int64_t dims[LOOM_MAX_RANK];
    uint32_t rank;
    CU_ASSERT_EQUAL(loom_value_info(g, loom_graph_output(g, 0), NULL, &rank, dims), LOOM_OK);
    CU_ASSERT_EQUAL(rank, 3);
    CU_ASSERT(dims[0] == 2 && dims[1] == 3 && dims[2] == 4);
    run_and_compare(g, "softmax_opset11", 1e-5);
}

static void test_shape_chain_folds_into_constant_shape(void)
{
    loom_graph *g = load_ok("shape_chain.onnx", NULL);
    if (!g)
        return;
    /* Shape, Gather, Unsqueeze and Concat were evaluated while building: Reshape and Relu are
     * all that is left to run. */
    CU_ASSERT_EQUAL(loom_graph_node_count(g), 2);
    run_and_compare(g, "shape_chain", 0);
}

static void test_old_reduce_and_unsqueeze_axes_attributes(void)
{
    run_and_compare(load_ok("reduce_opset11.onnx", NULL), "reduce_opset11", 1e-5);
}

static void test_old_split_attribute_and_unused_output(void)
{
    run_and_compare(load_ok("split_opset11.onnx", NULL), "split_opset11", 0);
}

static void test_opset7_pad_dropout_upsample(void)
{
    loom_graph *g;
    if (skip_if_ops_missing("old_opset7.onnx", NULL, &g))
        return;
    run_and_compare(g, "old_opset7", 0);
}

/* ---- symbolic dims --------------------------------------------------------------------------- */

static void test_symbolic_dim_resolved_by_name(void)
{
    loom_onnx_dim d = {"batch", 5};
    loom_onnx_options o = {.struct_size = sizeof o, .dims = &d, .n_dims = 1};
    loom_graph *g = load_ok("symbolic.onnx", &o);
    if (!g)
        return;
    int64_t dims[LOOM_MAX_RANK];
    uint32_t rank;
    loom_value_info(g, loom_graph_input(g, 0), NULL, &rank, dims);
    CU_ASSERT(rank == 2 && dims[0] == 5 && dims[1] == 3);
    loom_graph_destroy(g);
}

static void test_symbolic_dim_from_shape_or_default(void)
{
    int64_t shape[2] = {7, 3};
    loom_onnx_shape s = {"x", 2, shape};
    loom_onnx_options o = {.struct_size = sizeof o, .shapes = &s, .n_shapes = 1};
    loom_graph *g = load_ok("symbolic.onnx", &o);
    int64_t dims[LOOM_MAX_RANK];
    uint32_t rank;
    if (g) {
        loom_value_info(g, loom_graph_input(g, 0), NULL, &rank, dims);
        CU_ASSERT(rank == 2 && dims[0] == 7);
        loom_graph_destroy(g);
    }
    loom_onnx_options d = {.struct_size = sizeof d, .default_dim = 4};
    g = load_ok("symbolic.onnx", &d);
    if (g) {
        loom_value_info(g, loom_graph_input(g, 0), NULL, &rank, dims);
        CU_ASSERT(rank == 2 && dims[0] == 4);
        loom_graph_destroy(g);
    }
}

static void test_symbolic_dim_unresolved_is_named(void)
{
    static const char *const needles[] = {"symbolic.onnx", "input 'x'", "'batch'", NULL};
    expect_load_error("symbolic.onnx", NULL, LOOM_ERR_INVALID_ARGUMENT, needles);
    loom_onnx_dim other = {"sequence", 9};
    loom_onnx_options o = {.struct_size = sizeof o, .dims = &other, .n_dims = 1};
    expect_load_error("symbolic.onnx", &o, LOOM_ERR_INVALID_ARGUMENT, needles);
}

/* ---- external data --------------------------------------------------------------------------- */

static void test_external_data_beside_model(void)
{
    run_and_compare(load_ok("external.onnx", NULL), "external", 1e-5);
}

static void test_external_data_missing_file_is_named(void)
{
    static const char *const needles[] = {"external_missing.onnx", "missing_weights.bin",
                                          "initializer 'W'", NULL};
    expect_load_error("external_missing.onnx", NULL, LOOM_ERR_INVALID_ARGUMENT, needles);
}

static void test_external_data_outside_model_dir_is_refused(void)
{
    static const char *const needles[] = {"external_escape.onnx", "../external.bin", "refused",
                                          NULL};
    expect_load_error("external_escape.onnx", NULL, LOOM_ERR_INVALID_ARGUMENT, needles);
}

static void test_load_memory_finds_external_data_in_base_dir(void)
{
    FILE *f = fopen(data("external.onnx"), "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    loom_graph *g = NULL;
    CU_ASSERT_EQUAL(loom_onnx_load_memory(buf, n, data_dir, NULL, &g), LOOM_OK);
    run_and_compare(g, "external", 1e-5);
    /* without the base directory the data file is not found */
    if (!exists("external.bin")) {
        CU_ASSERT_EQUAL(loom_onnx_load_memory(buf, n, NULL, NULL, &g),
                        LOOM_ERR_INVALID_ARGUMENT);
        CU_ASSERT(contains(loom_last_error(), "external.bin"));
        CU_ASSERT_PTR_NULL(g);
    }
}

/* ---- If -------------------------------------------------------------------------------------- */

static void test_if_with_constant_condition_inlines_taken_branch(void)
{
    loom_graph *g = load_ok("if_const.onnx", NULL);
    if (g)
        CU_ASSERT_EQUAL(loom_graph_node_count(g), 2); /* then's Add, and Neg */
    run_and_compare(g, "if_const", 1e-6);
}

static void test_if_with_runtime_condition_selects_with_where(void)
{
    loom_graph *g = load_ok("if_dynamic.onnx", NULL);
    if (g)
        CU_ASSERT_EQUAL(loom_graph_input_count(g), 2);
    run_and_compare(g, "if_dynamic", 1e-6);
}

static void test_values_read_only_by_shape_or_untaken_branch_are_dropped(void)
{
    loom_graph *g = load_ok("dead_values.onnx", NULL);
    if (g)
        CU_ASSERT_EQUAL(loom_graph_node_count(g), 2); /* then's Identity and the final Add */
    run_and_compare(g, "dead_values", 1e-6);
}

static void test_outputs_that_are_constants_or_inputs(void)
{
    loom_graph *g = load_ok("odd_outputs.onnx", NULL);
    if (!g)
        return;
    CU_ASSERT_EQUAL(loom_graph_output_count(g), 4);
    CU_ASSERT_STRING_EQUAL(loom_value_name(g, loom_graph_input(g, 0)), "x");
    CU_ASSERT_STRING_EQUAL(loom_value_name(g, loom_graph_output(g, 1)), "c");
    CU_ASSERT_STRING_EQUAL(loom_value_name(g, loom_graph_output(g, 3)), "r2");
    run_and_compare(g, "odd_outputs", 0);
}

/* ---- bad input: one clear error each --------------------------------------------------------- */

static void test_unknown_ops_are_all_named_at_once(void)
{
    static const char *const needles[] = {"unknown_ops.onnx", "unsupported ops (opset 13)",
                                          "FancyOp, OtherOp", "(3 nodes)", NULL};
    expect_load_error("unknown_ops.onnx", NULL, LOOM_ERR_UNSUPPORTED, needles);
}

static void test_undefined_node_input_is_named(void)
{
    static const char *const needles[] = {"undefined_input.onnx", "node 'add' (Add)",
                                          "input 'foo' is not defined", NULL};
    expect_load_error("undefined_input.onnx", NULL, LOOM_ERR_INVALID_ARGUMENT, needles);
}

static void test_unsupported_dtype_is_named(void)
{
    static const char *const in_needles[] = {"input 'x'", "complex64", NULL};
    expect_load_error("complex_input.onnx", NULL, LOOM_ERR_UNSUPPORTED, in_needles);
    static const char *const init_needles[] = {"initializer 'd'", "complex64", NULL};
    expect_load_error("complex_initializer.onnx", NULL, LOOM_ERR_UNSUPPORTED, init_needles);
}

static void test_builder_error_is_prefixed_with_file(void)
{
    static const char *const needles[] = {"bad_shapes.onnx: ", "node 'mm' (MatMul)", NULL};
    expect_load_error("bad_shapes.onnx", NULL, LOOM_ERR_INVALID_ARGUMENT, needles);
}

static void test_truncated_model_is_rejected(void)
{
    FILE *f = fopen(data("mlp.onnx"), "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    char tmp[] = "/tmp/loom_truncated_XXXXXX";
    int fd = mkstemp(tmp);
    CU_ASSERT_FATAL(fd >= 0);
    size_t cut = n * 4 / 10;
    CU_ASSERT_EQUAL(write(fd, buf, cut), (ssize_t)cut);
    close(fd);
    loom_graph *g = NULL;
    CU_ASSERT_EQUAL(loom_onnx_load(tmp, NULL, &g), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(g);
    CU_ASSERT(contains(loom_last_error(), tmp));
    CU_ASSERT(contains(loom_last_error(), "not a valid ONNX model"));
    unlink(tmp);
}

static void test_every_prefix_of_a_model_fails_cleanly(void)
{
    static const char *const models[] = {"mlp.onnx", "if_const.onnx", "shape_chain.onnx"};
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        FILE *f = fopen(data(models[m]), "rb");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        unsigned char buf[4096];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        for (size_t cut = 0; cut < n; cut++) {
            loom_graph *g = NULL;
            loom_status st = loom_onnx_load_memory(buf, cut, NULL, NULL, &g);
            CU_ASSERT_NOT_EQUAL(st, LOOM_OK);
            CU_ASSERT(st == LOOM_ERR_INVALID_ARGUMENT || st == LOOM_ERR_UNSUPPORTED);
            CU_ASSERT_PTR_NULL(g);
            CU_ASSERT(loom_last_error()[0] != '\0');
            loom_graph_destroy(g);
        }
    }
}

static void test_garbage_bytes_are_rejected(void)
{
    unsigned char junk[256];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(0xff - (i * 37) % 13);
    loom_graph *g = NULL;
    CU_ASSERT_EQUAL(loom_onnx_load_memory(junk, sizeof junk, NULL, NULL, &g),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(g);
    CU_ASSERT(contains(loom_last_error(), "not a valid ONNX model"));
    /* an empty buffer parses as an empty model: no graph */
    CU_ASSERT_EQUAL(loom_onnx_load_memory(junk, 0, NULL, NULL, &g), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "no graph"));
}

static void test_nonexistent_path_is_io_error(void)
{
    loom_graph *g = NULL;
    CU_ASSERT_EQUAL(loom_onnx_load("/nonexistent/dir/model.onnx", NULL, &g), LOOM_ERR_IO);
    CU_ASSERT_PTR_NULL(g);
    CU_ASSERT(contains(loom_last_error(), "/nonexistent/dir/model.onnx"));
    CU_ASSERT(contains(loom_last_error(), "No such file"));
    CU_ASSERT_EQUAL(loom_onnx_load(data_dir, NULL, &g), LOOM_ERR_IO); /* a directory */
    CU_ASSERT_EQUAL(loom_onnx_load(NULL, NULL, &g), LOOM_ERR_INVALID_ARGUMENT);
}

static void test_bad_options_are_rejected(void)
{
    loom_graph *g = NULL;
    loom_onnx_options o = {0};
    CU_ASSERT_EQUAL(loom_onnx_load(data("mlp.onnx"), &o, &g), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "struct_size"));
    o.struct_size = sizeof o;
    o.n_dims = 1;
    CU_ASSERT_EQUAL(loom_onnx_load(data("mlp.onnx"), &o, &g), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(g);
    int64_t dims[2] = {2, 3};
    loom_onnx_shape typo = {"X", 2, dims};
    loom_onnx_options t = {.struct_size = sizeof t, .shapes = &typo, .n_shapes = 1};
    CU_ASSERT_EQUAL(loom_onnx_load(data("mlp.onnx"), &t, &g), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "'X', which is not an input"));
    CU_ASSERT_PTR_NULL(g);
}

/* ---- TensorProto files ----------------------------------------------------------------------- */

static void test_pb_float16_raw_and_typed(void)
{
    char name[32];
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_pb(data("t_f16.pb"), &t, name, sizeof name), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(name, "half");
    CU_ASSERT_EQUAL(loom_tensor_dtype(t), LOOM_DTYPE_F16);
    CU_ASSERT_EQUAL(loom_tensor_rank(t), 2);
    const uint16_t *h = loom_tensor_data(t);
    CU_ASSERT(h[0] == 0x3e00 && h[1] == 0xc000 && h[2] == 0x3400 && h[3] == 0x7bff);
    loom_tensor_destroy(t);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_pb(data("t_f16_typed.pb"), &t, NULL, 0), LOOM_OK);
    h = loom_tensor_data(t);
    CU_ASSERT(h[0] == 0x3c00 && h[1] == 0xb800);
    loom_tensor_destroy(t);
}

static void test_pb_integer_and_bool_tensors(void)
{
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_pb(data("t_i32.pb"), &t, NULL, 0), LOOM_OK);
    const int32_t *i = loom_tensor_data(t);
    CU_ASSERT(loom_tensor_dtype(t) == LOOM_DTYPE_I32 && i[0] == 1 && i[1] == -2 && i[2] == 3);
    loom_tensor_destroy(t);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_pb(data("t_u8_typed.pb"), &t, NULL, 0), LOOM_OK);
    const uint8_t *u = loom_tensor_data(t);
    CU_ASSERT(loom_tensor_dtype(t) == LOOM_DTYPE_U8 && u[0] == 0 && u[1] == 7 && u[2] == 255);
    loom_tensor_destroy(t);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_pb(data("t_bool.pb"), &t, NULL, 0), LOOM_OK);
    u = loom_tensor_data(t);
    CU_ASSERT(loom_tensor_dtype(t) == LOOM_DTYPE_BOOL && u[0] == 1 && u[1] == 0 && u[2] == 1);
    loom_tensor_destroy(t);
}

static void test_pb_errors(void)
{
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL(loom_tensor_load_pb(data("t_c64.pb"), &t, NULL, 0),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "complex64"));
    CU_ASSERT(contains(loom_last_error(), "t_c64.pb"));
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_EQUAL(loom_tensor_load_pb("/nonexistent.pb", &t, NULL, 0), LOOM_ERR_IO);
    CU_ASSERT(contains(loom_last_error(), "/nonexistent.pb"));
    /* a model is not a tensor: its fields do not fit */
    loom_status st = loom_tensor_load_pb(data("mlp.onnx"), &t, NULL, 0);
    CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
    loom_tensor_destroy(t);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        TEST_ENTRY(test_mlp_matches_numpy),
        TEST_ENTRY(test_typed_initializers_and_constant_nodes),
        TEST_ENTRY(test_slice_attribute_form_equals_input_form),
        TEST_ENTRY(test_softmax_opset11_flattens_from_axis),
        TEST_ENTRY(test_shape_chain_folds_into_constant_shape),
        TEST_ENTRY(test_old_reduce_and_unsqueeze_axes_attributes),
        TEST_ENTRY(test_old_split_attribute_and_unused_output),
        TEST_ENTRY(test_opset7_pad_dropout_upsample),
        TEST_ENTRY(test_symbolic_dim_resolved_by_name),
        TEST_ENTRY(test_symbolic_dim_from_shape_or_default),
        TEST_ENTRY(test_symbolic_dim_unresolved_is_named),
        TEST_ENTRY(test_external_data_beside_model),
        TEST_ENTRY(test_external_data_missing_file_is_named),
        TEST_ENTRY(test_external_data_outside_model_dir_is_refused),
        TEST_ENTRY(test_load_memory_finds_external_data_in_base_dir),
        TEST_ENTRY(test_if_with_constant_condition_inlines_taken_branch),
        TEST_ENTRY(test_if_with_runtime_condition_selects_with_where),
        TEST_ENTRY(test_values_read_only_by_shape_or_untaken_branch_are_dropped),
        TEST_ENTRY(test_outputs_that_are_constants_or_inputs),
        TEST_ENTRY(test_unknown_ops_are_all_named_at_once),
        TEST_ENTRY(test_undefined_node_input_is_named),
        TEST_ENTRY(test_unsupported_dtype_is_named),
        TEST_ENTRY(test_builder_error_is_prefixed_with_file),
        TEST_ENTRY(test_truncated_model_is_rejected),
        TEST_ENTRY(test_every_prefix_of_a_model_fails_cleanly),
        TEST_ENTRY(test_garbage_bytes_are_rejected),
        TEST_ENTRY(test_nonexistent_path_is_io_error),
        TEST_ENTRY(test_bad_options_are_rejected),
        TEST_ENTRY(test_pb_float16_raw_and_typed),
        TEST_ENTRY(test_pb_integer_and_bool_tensors),
        TEST_ENTRY(test_pb_errors),
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"onnx", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
