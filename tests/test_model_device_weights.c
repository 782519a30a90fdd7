/*
 * A model's weights on a device whose memory the host cannot address (OpenCL; PoCL in CI):
 * uploaded once per device and shared by every shape specialisation of the model, not once per
 * specialisation (scheduler/devconst.c, loom_node_desc.input_device_constants). A two-layer MLP
 * with a symbolic batch runs on opencl:0 at three batch sizes; outputs are checked against
 * naive loops and loom_model_stats against the weights' count and bytes. Skips with a note when
 * there is no OpenCL device. No assertion depends on time.
 */
#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IN 16
#define HID 32
#define OUT 8

static loom_runtime *rt;
static int have_opencl;
static float w1[IN * HID], b1[HID], w2[HID * OUT], b2[OUT];

static int suite_init(void)
{
    if (loom_runtime_create(NULL, &rt) != LOOM_OK)
        return 1;
    for (size_t i = 0; i < loom_runtime_device_count(rt); i++) {
        char id[64];
        if (loom_runtime_device(rt, i, id, sizeof id, NULL) == LOOM_OK && !strcmp(id, "opencl:0"))
            have_opencl = 1;
    }
    if (!have_opencl)
        printf("\n  note: no opencl:0 device (LOOM_OPENCL=1 and an OpenCL driver, e.g. PoCL, "
               "are needed): the device-weight tests check nothing\n");
    unsigned s = 7;
    float *all[4] = {w1, b1, w2, b2};
    size_t n[4] = {IN * HID, HID, HID * OUT, OUT};
    for (int a = 0; a < 4; a++)
        for (size_t i = 0; i < n[a]; i++) {
            s = s * 1103515245u + 12345u;
            all[a][i] = (float)((s >> 8) % 2001) / 1000.0f - 1.0f;
        }
    return 0;
}

static int suite_clean(void)
{
    loom_runtime_destroy(rt);
    return 0;
}

/* y = relu(x w1 + b1) w2 + b2 with x [batch, IN], batch symbolic. */
static loom_graph *mlp_graph(void)
{
    loom_graph *g = loom_graph_create("mlp");
    int64_t xd[2] = {-1, IN}, d1[2] = {IN, HID}, db1[1] = {HID}, d2[2] = {HID, OUT},
            db2[1] = {OUT};
    const char *names[2] = {"batch", NULL};
    loom_value x = loom_input_symbolic(g, "x", LOOM_DTYPE_F32, 2, xd, names);
    loom_value h = loom_relu(g, loom_add(g, loom_matmul(g, x, loom_constant(g, "w1",
                                                                               LOOM_DTYPE_F32, 2,
                                                                               d1, w1)),
                                         loom_constant(g, "b1", LOOM_DTYPE_F32, 1, db1, b1)));
    loom_value y = loom_add(g, loom_matmul(g, h, loom_constant(g, "w2", LOOM_DTYPE_F32, 2, d2, w2)),
                            loom_constant(g, "b2", LOOM_DTYPE_F32, 1, db2, b2));
    loom_output(g, y, "y");
    return g;
}

/* Naive loops, in double. */
static void reference(const float *x, int64_t batch, double *y)
{
    for (int64_t r = 0; r < batch; r++) {
        double h[HID];
        for (int j = 0; j < HID; j++) {
            double acc = b1[j];
            for (int k = 0; k < IN; k++)
                acc += (double)x[r * IN + k] * w1[k * HID + j];
            h[j] = acc > 0 ? acc : 0;
        }
        for (int j = 0; j < OUT; j++) {
            double acc = b2[j];
            for (int k = 0; k < HID; k++)
                acc += h[k] * w2[k * OUT + j];
            y[r * OUT + j] = acc;
        }
    }
}

/* Run MODEL at BATCH and check the output against the naive loops. */
static void run_and_check(loom_model *model, int64_t batch)
{
    int64_t dims[2] = {batch, IN};
    loom_tensor *x = NULL, *y = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, dims, &x), LOOM_OK);
    float *xd = loom_tensor_data(x);
    for (int64_t i = 0; i < batch * IN; i++)
        xd[i] = (float)((i * 37 + batch * 11) % 19) / 9.0f - 1.0f;
    loom_status st = loom_model_run(model, (const loom_tensor *const *)&x, 1, &y, 1, NULL);
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    int64_t od[LOOM_MAX_RANK];
    CU_ASSERT_EQUAL(loom_tensor_rank(y), 2);
    loom_tensor_dims(y, od);
    CU_ASSERT(od[0] == batch && od[1] == OUT);
    double *want = malloc((size_t)batch * OUT * sizeof *want);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    reference(xd, batch, want);
    const float *got = loom_tensor_data(y);
    int bad = 0;
    for (int64_t i = 0; i < batch * OUT; i++)
        bad += !(fabs(got[i] - want[i]) <= 1e-4 + 1e-4 * fabs(want[i]));
    CU_ASSERT_EQUAL(bad, 0);
    free(want);
    loom_tensor_destroy(x);
    loom_tensor_destroy(y);
}

static const size_t weight_bytes = (IN * HID + HID + HID * OUT + OUT) * sizeof(float);

static void test_weights_are_uploaded_once_for_every_specialisation(void)
{
    if (!have_opencl)
        return;
    loom_graph *g = mlp_graph();
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options po = {.struct_size = sizeof po, .device = "opencl:0", .strict = 1};
    loom_model_options mo = {.struct_size = sizeof mo, .plan = &po};
    loom_model *model = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_model_from_graph(rt, g, &mo, &model), LOOM_OK);
    const int64_t batches[3] = {1, 3, 5};
    for (int k = 0; k < 3; k++)
        run_and_check(model, batches[k]);
    run_and_check(model, 3); /* cached */
    loom_model_stats s = {.struct_size = sizeof s};
    CU_ASSERT_EQUAL_FATAL(loom_model_stats_get(model, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.misses, 3);
    CU_ASSERT_EQUAL(s.live, 3);
    /* Four weights on opencl:0, each uploaded once for the three specialisations. */
    CU_ASSERT_EQUAL(s.device_weight_tensors, 4);
    CU_ASSERT_EQUAL(s.device_weight_bytes, weight_bytes);
    CU_ASSERT_EQUAL(s.device_weight_uploads, 4);
    loom_model_destroy(model);
}

static void test_weights_leave_the_device_with_the_last_specialisation(void)
{
    if (!have_opencl)
        return;
    loom_graph *g = mlp_graph();
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    /* One specialisation at a time: each new shape evicts the previous one. */
    loom_plan_options po = {.struct_size = sizeof po, .device = "opencl:0", .strict = 1};
    loom_model_options mo = {.struct_size = sizeof mo, .plan = &po, .max_specialisations = 1};
    loom_model *model = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_model_from_graph(rt, g, &mo, &model), LOOM_OK);
    run_and_check(model, 2);
    run_and_check(model, 4);
    run_and_check(model, 2);
    loom_model_stats s = {.struct_size = sizeof s};
    CU_ASSERT_EQUAL_FATAL(loom_model_stats_get(model, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.live, 1);
    CU_ASSERT(s.evictions >= 2);
    /* Held once whatever happened before; uploaded again only when no specialisation held it
     * in between (at most once per specialisation made). */
    CU_ASSERT_EQUAL(s.device_weight_tensors, 4);
    CU_ASSERT_EQUAL(s.device_weight_bytes, weight_bytes);
    CU_ASSERT(s.device_weight_uploads >= 4 && s.device_weight_uploads <= 12);
    loom_model_destroy(model);
}

/* dyn_mlp.onnx (tests/data/model): y = Relu(x @ W + B) with x [batch, 8], s = 2 z with z
 * [batch, seq]; three initializers (W, B, two). */
static loom_model *load_dyn_mlp(const char *device)
{
    const char *dir = getenv("LOOM_MODEL_DATA");
    char path[1200];
    snprintf(path, sizeof path, "%s/dyn_mlp.onnx", dir ? dir : "tests/data/model");
    loom_plan_options po = {.struct_size = sizeof po, .device = device, .strict = 1};
    loom_model_options mo = {.struct_size = sizeof mo, .plan = &po};
    loom_model *m = NULL;
    loom_status st = loom_model_load_onnx(rt, path, &mo, &m);
    if (st != LOOM_OK)
        fprintf(stderr, "load %s: %s\n", path, loom_last_error());
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    return m;
}

static void test_onnx_model_weights_once_and_outputs_match_the_cpu(void)
{
    if (!have_opencl)
        return;
    loom_model *dev = load_dyn_mlp("opencl:0"), *cpu = load_dyn_mlp("cpu:0");
    const int64_t shapes[3][2] = {{1, 3}, {4, 2}, {7, 5}}; /* batch, seq */
    for (int k = 0; k < 3; k++) {
        int64_t xd[2] = {shapes[k][0], 8}, zd[2] = {shapes[k][0], shapes[k][1]};
        loom_tensor *in[2] = {NULL, NULL}, *yo[2][2] = {{NULL, NULL}, {NULL, NULL}};
        CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, xd, &in[0]), LOOM_OK);
        CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, zd, &in[1]), LOOM_OK);
        for (int t = 0; t < 2; t++) {
            float *p = loom_tensor_data(in[t]);
            for (size_t i = 0; i < loom_tensor_nbytes(in[t]) / sizeof *p; i++)
                p[i] = 0.25f * (float)((i * 7 + (size_t)k) % 13) - 1.5f;
        }
        CU_ASSERT_EQUAL_FATAL(loom_model_run(dev, (const loom_tensor *const *)in, 2, yo[0], 2,
                                             NULL), LOOM_OK);
        CU_ASSERT_EQUAL_FATAL(loom_model_run(cpu, (const loom_tensor *const *)in, 2, yo[1], 2,
                                             NULL), LOOM_OK);
        for (int o = 0; o < 2; o++) {
            CU_ASSERT_EQUAL_FATAL(loom_tensor_nbytes(yo[0][o]), loom_tensor_nbytes(yo[1][o]));
            const float *a = loom_tensor_data(yo[0][o]), *b = loom_tensor_data(yo[1][o]);
            int bad = 0;
            for (size_t i = 0; i < loom_tensor_nbytes(yo[0][o]) / sizeof *a; i++)
                bad += !(fabsf(a[i] - b[i]) <= 1e-5f + 1e-5f * fabsf(b[i]));
            CU_ASSERT_EQUAL(bad, 0);
            loom_tensor_destroy(yo[0][o]);
            loom_tensor_destroy(yo[1][o]);
        }
        loom_tensor_destroy(in[0]);
        loom_tensor_destroy(in[1]);
    }
    loom_model_stats s = {.struct_size = sizeof s};
    CU_ASSERT_EQUAL_FATAL(loom_model_stats_get(dev, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.misses, 3);
    /* W [8,4], B [4] and the scalar 2 on opencl:0, once each for the three specialisations. */
    CU_ASSERT_EQUAL(s.device_weight_tensors, 3);
    CU_ASSERT_EQUAL(s.device_weight_bytes, (8 * 4 + 4 + 1) * sizeof(float));
    CU_ASSERT_EQUAL(s.device_weight_uploads, 3);
    CU_ASSERT_EQUAL_FATAL(loom_model_stats_get(cpu, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.device_weight_uploads, 0);
    loom_model_destroy(dev);
    loom_model_destroy(cpu);
}

static void test_cpu_model_holds_nothing_on_devices(void)
{
    loom_graph *g = mlp_graph();
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu:0", .strict = 1};
    loom_model_options mo = {.struct_size = sizeof mo, .plan = &po};
    loom_model *model = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_model_from_graph(rt, g, &mo, &model), LOOM_OK);
    run_and_check(model, 2);
    run_and_check(model, 6);
    loom_model_stats s = {.struct_size = sizeof s};
    CU_ASSERT_EQUAL_FATAL(loom_model_stats_get(model, &s), LOOM_OK);
    CU_ASSERT_EQUAL(s.device_weight_tensors, 0);
    CU_ASSERT_EQUAL(s.device_weight_bytes, 0);
    CU_ASSERT_EQUAL(s.device_weight_uploads, 0);
    loom_model_destroy(model);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("model_device_weights", suite_init, suite_clean);
    CU_add_test(s, "weights_are_uploaded_once_for_every_specialisation",
                test_weights_are_uploaded_once_for_every_specialisation);
    CU_add_test(s, "weights_leave_the_device_with_the_last_specialisation",
                test_weights_leave_the_device_with_the_last_specialisation);
    CU_add_test(s, "onnx_model_weights_once_and_outputs_match_the_cpu",
                test_onnx_model_weights_once_and_outputs_match_the_cpu);
    CU_add_test(s, "cpu_model_holds_nothing_on_devices", test_cpu_model_holds_nothing_on_devices);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
