/*
 * The cost model (scheduler/cost/): roofline figures against a hand computation, the history's
 * median and its robustness to spikes, persistence of profiles and history in a temporary
 * cache folder (corrupt files reported and ignored), a quick calibration of the CPU, links,
 * signatures and the error statistics. No assertion depends on how fast anything runs.
 */
#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scheduler/cost/cost_internal.h"

static loom_runtime *rt;
static char tmp_root[] = "/tmp/loom-test-cost-XXXXXX";

static int suite_init(void)
{
    if (!mkdtemp(tmp_root))
        return 1;
    return loom_runtime_create(NULL, &rt) == LOOM_OK ? 0 : 1;
}

/* rm -r of the (flat, two-level at most) folders the tests made. */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[8192];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            remove_tree(path);
    }
    closedir(d);
    rmdir(dir);
}

static int suite_clean(void)
{
    loom_runtime_destroy(rt);
    remove_tree(tmp_root);
    return 0;
}

/* A fresh cache folder under the suite's temporary root. */
static void fresh_dir(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmp_root, name);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[8192];
    snprintf(path, sizeof path, "%s", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

static int file_exists(const char *dir, const char *name)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, R_OK) == 0;
}

/* Whether a runtime message from index FROM on contains NEEDLE. */
static int message_since(size_t from, const char *needle)
{
    for (size_t i = from; i < loom_runtime_message_count(rt); i++)
        if (strstr(loom_runtime_message(rt, i), needle))
            return 1;
    return 0;
}

/* A MatMul [64,128] x [128,32] node descriptor (borrowing the static descs). */
static loom_tensor_desc mm_in[2] = {{LOOM_DTYPE_F32, 2, {64, 128}}, {LOOM_DTYPE_F32, 2, {128, 32}}};
static loom_tensor_desc mm_out[1] = {{LOOM_DTYPE_F32, 2, {64, 32}}};

static loom_node_desc matmul_node(uint32_t precision)
{
    loom_node_desc n;
    memset(&n, 0, sizeof n);
    n.abi_version = LOOM_ABI_VERSION;
    n.struct_size = sizeof n;
    n.op = LOOM_OP_MATMUL;
    n.op_name = "MatMul";
    n.name = "mm";
    n.n_inputs = 2;
    n.n_outputs = 1;
    n.inputs = mm_in;
    n.outputs = mm_out;
    n.precision = precision;
    return n;
}

static void test_roofline_matches_hand_computation(void)
{
    loom_node_desc n = matmul_node(LOOM_PRECISION_F32);
    loom_op_cost cost;
    loom_op_get(LOOM_OP_MATMUL)->cost(&n, &cost);
    /* 2*M*N*K = 2*64*32*128; reads (64*128 + 128*32)*4; writes 64*32*4. */
    CU_ASSERT_DOUBLE_EQUAL(cost.flops, 524288.0, 0);
    CU_ASSERT_DOUBLE_EQUAL(cost.bytes_read + cost.bytes_written, 57344.0, 0);

    lc_profile p;
    memset(&p, 0, sizeof p);
    p.flops[0] = 1e10;
    p.mem_bandwidth = 1e9;
    p.launch_s = 1e-5;
    /* memory bound: 57344 B / 1e9 B/s = 57.344 us > 524288 / 1e10 = 52.4288 us */
    CU_ASSERT_DOUBLE_EQUAL(lc_roofline_seconds(&p, &n, &cost), 1e-5 + 57.344e-6, 1e-12);
    p.flops[0] = 1e9; /* compute bound: 524.288 us */
    CU_ASSERT_DOUBLE_EQUAL(lc_roofline_seconds(&p, &n, &cost), 1e-5 + 524.288e-6, 1e-12);
    /* fp16 precision uses the f16 column when known, f32 otherwise. */
    loom_node_desc h = matmul_node(LOOM_PRECISION_F16);
    CU_ASSERT_DOUBLE_EQUAL(lc_roofline_seconds(&p, &h, &cost), 1e-5 + 524.288e-6, 1e-12);
    p.flops[1] = 4e9;
    CU_ASSERT_DOUBLE_EQUAL(lc_roofline_seconds(&p, &h, &cost), 1e-5 + 131.072e-6, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(lc_roofline_seconds(&p, &n, &cost), 1e-5 + 524.288e-6, 1e-12);

    /* A layout-only op costs a copy of its output: 64*32*4 bytes read and written. */
    loom_node_desc r = matmul_node(0);
    r.op = LOOM_OP_RESHAPE;
    r.op_name = "Reshape";
    r.n_inputs = 1;
    CU_ASSERT_DOUBLE_EQUAL(lc_roofline_seconds(&p, &r, &cost), 1e-5 + 16384.0 / 1e9, 1e-12);
}

static void test_signature_is_deterministic_text(void)
{
    loom_tensor_desc in[2] = {{LOOM_DTYPE_F32, 3, {1, 128, 768}}, {LOOM_DTYPE_F32, 2, {768, 768}}};
    loom_tensor_desc out[1] = {{LOOM_DTYPE_F32, 3, {1, 128, 768}}};
    loom_node_desc n = matmul_node(0);
    n.inputs = in;
    n.outputs = out;
    char a[LC_SIG_MAX], b[LC_SIG_MAX];
    uint64_t ha = lc_sig(&n, 0, a), hb = lc_sig(&n, 0, b);
    CU_ASSERT_STRING_EQUAL(a, "MatMul|f32[1,128,768];f32[768,768]|f32[1,128,768]|p0");
    CU_ASSERT_EQUAL(ha, hb);
    CU_ASSERT_EQUAL(ha, lc_sig_hash(a, 0));
    CU_ASSERT_NOT_EQUAL(lc_sig(&n, 1, b), ha); /* another device group */
    /* Attributes that change the work without changing shapes are part of the signature. */
    int64_t perm1[2] = {0, 1}, perm2[2] = {1, 0};
    loom_attr at = loom_attr_ints("perm", 2, perm1);
    n.n_attrs = 1;
    n.attrs = &at;
    lc_sig(&n, 0, a);
    at = loom_attr_ints("perm", 2, perm2);
    lc_sig(&n, 0, b);
    CU_ASSERT(strcmp(a, b) != 0);

    /* A signature too long to keep whole is cut and ends in a hash of the whole: still
     * deterministic and still different for different shapes. */
    static loom_tensor_desc many[300];
    for (int k = 0; k < 300; k++)
        many[k] = (loom_tensor_desc){LOOM_DTYPE_F32, 4, {1, 64, 56, 56}};
    loom_node_desc c = matmul_node(0);
    c.op = LOOM_OP_CONCAT;
    c.op_name = "Concat";
    c.n_inputs = 300;
    c.inputs = many;
    uint64_t h1 = lc_sig(&c, 0, a);
    CU_ASSERT(strlen(a) < LC_SIG_MAX);
    CU_ASSERT_PTR_NOT_NULL(strchr(a, '~'));
    many[299].dims[3] = 57;
    uint64_t h2 = lc_sig(&c, 0, b);
    CU_ASSERT(strcmp(a, b) != 0);
    CU_ASSERT_NOT_EQUAL(h1, h2);
    CU_ASSERT_EQUAL(h2, lc_sig_hash(b, 0));
}

static void test_history_median_used_after_three_samples(void)
{
    char dir[4096];
    fresh_dir(dir, sizeof dir, "history");
    lc_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(lc_model_open(rt, dir, &m), LOOM_OK);
    loom_node_desc n = matmul_node(0);
    loom_op_cost cost;
    loom_op_get(LOOM_OP_MATMUL)->cost(&n, &cost);
    double roof = lc_roofline_seconds(lc_profile_of(m, 0), &n, &cost);
    CU_ASSERT_STRING_EQUAL(lc_node_source(m, 0, &n), "roofline");
    CU_ASSERT_DOUBLE_EQUAL(lc_node_seconds(m, 0, &n, &cost), roof, 0);
    lc_record(m, 0, &n, 1e-3);
    lc_record(m, 0, &n, 1.2e-3);
    CU_ASSERT_STRING_EQUAL(lc_node_source(m, 0, &n), "roofline"); /* two are not enough */
    lc_record(m, 0, &n, 0.8e-3);
    CU_ASSERT_STRING_EQUAL(lc_node_source(m, 0, &n), "history");
    CU_ASSERT_DOUBLE_EQUAL(lc_node_seconds(m, 0, &n, &cost), 1e-3, 1e-12);
    /* All devices at once agree with one at a time. */
    double *all = calloc(lc_device_count(m), sizeof *all);
    CU_ASSERT_PTR_NOT_NULL_FATAL(all);
    lc_node_seconds_all(m, &n, &cost, all);
    for (uint32_t d = 0; d < lc_device_count(m); d++)
        CU_ASSERT_DOUBLE_EQUAL(all[d], lc_node_seconds(m, d, &n, &cost), 0);
    free(all);
    /* A 100x spike does not move the prediction by more than 10%. */
    lc_record(m, 0, &n, 0.1);
    double after = lc_node_seconds(m, 0, &n, &cost);
    CU_ASSERT(fabs(after - 1e-3) <= 0.1 * 1e-3);
    /* Another precision is another signature. */
    loom_node_desc h = matmul_node(LOOM_PRECISION_F16);
    CU_ASSERT_STRING_EQUAL(lc_node_source(m, 0, &h), "roofline");
    /* Invalid samples are ignored. */
    lc_record(m, 0, &h, NAN);
    lc_record(m, 0, &h, -1);
    lc_record(m, 0, &h, INFINITY);
    lc_record(m, 99, &h, 1);
    CU_ASSERT_STRING_EQUAL(lc_node_source(m, 0, &h), "roofline");
    CU_ASSERT(isinf(lc_node_seconds(m, 99, &n, &cost)));
    lc_model_close(m);
}

static void test_history_and_profiles_round_trip_through_the_cache(void)
{
    char dir[4096];
    fresh_dir(dir, sizeof dir, "roundtrip/nested/deeper"); /* created like mkdir -p */
    lc_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(lc_model_open(rt, dir, &m), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(lc_cache_dir(m), dir);
    loom_node_desc n = matmul_node(0);
    for (int i = 0; i < 20; i++) /* more than are kept */
        lc_record(m, 0, &n, i < 10 ? 5e-3 : 2e-3);
    CU_ASSERT_EQUAL(lc_model_save(m), LOOM_OK);
    lc_model_close(m);
    CU_ASSERT(file_exists(dir, "history.json"));

    m = NULL;
    size_t before = loom_runtime_message_count(rt);
    CU_ASSERT_EQUAL_FATAL(lc_model_open(rt, dir, &m), LOOM_OK);
    CU_ASSERT_FALSE(message_since(before, "corrupt"));
    CU_ASSERT_STRING_EQUAL(lc_node_source(m, 0, &n), "history");
    /* The last 16 samples were kept: 6 of 5 ms, 10 of 2 ms. */
    CU_ASSERT_DOUBLE_EQUAL(lc_node_seconds(m, 0, &n, NULL), 2e-3, 1e-12);
    lc_model_close(m);
}

static void test_corrupt_cache_files_are_reported_and_ignored(void)
{
    char dir[4096];
    fresh_dir(dir, sizeof dir, "corrupt");
    write_text(dir, "profiles.json", "{\"version\": 1, \"profiles\": {\"x\": ");
    write_text(dir, "history.json", "[1, 2, 3]");
    size_t before = loom_runtime_message_count(rt);
    lc_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(lc_model_open(rt, dir, &m), LOOM_OK);
    CU_ASSERT(message_since(before, "profiles.json is corrupt"));
    CU_ASSERT(message_since(before, "history.json is corrupt"));
    CU_ASSERT_EQUAL(lc_profile_of(m, 0)->calibrated, 0);
    CU_ASSERT(lc_profile_of(m, 0)->flops[0] > 0);
    loom_node_desc n = matmul_node(0);
    for (int i = 0; i < 3; i++)
        lc_record(m, 0, &n, 4e-3);
    lc_model_close(m); /* saves over the corrupt history */

    /* A malformed entry in an otherwise good file is skipped, the rest kept. */
    char key[512];
    lc_model *k = NULL;
    CU_ASSERT_EQUAL_FATAL(lc_model_open(rt, dir, &k), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(lc_node_source(k, 0, &n), "history");
    snprintf(key, sizeof key, "{\"version\": 1, \"profiles\": {\"%s\": {\"calibrated\": true, "
             "\"flops_f32\": \"fast\"}}}", lc_profile_of(k, 0)->key);
    lc_model_close(k);
    write_text(dir, "profiles.json", key);
    before = loom_runtime_message_count(rt);
    CU_ASSERT_EQUAL_FATAL(lc_model_open(rt, dir, &k), LOOM_OK);
    CU_ASSERT(message_since(before, "malformed"));
    CU_ASSERT_EQUAL(lc_profile_of(k, 0)->calibrated, 0);
    CU_ASSERT_STRING_EQUAL(lc_node_source(k, 0, &n), "history");
    lc_model_close(k);
}

static void progress_count(void *user, const char *label, double fraction)
{
    int *calls = user;
    (*calls)++;
    CU_ASSERT_PTR_NOT_NULL(label);
    CU_ASSERT(fraction >= 0 && fraction <= 1);
}

static int positive_finite(double x)
{
    return x > 0 && isfinite(x);
}

static void test_quick_calibration_of_cpu_gives_positive_finite_figures(void)
{
    char dir[4096];
    fresh_dir(dir, sizeof dir, "calibrate");
    lc_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(lc_model_open(rt, dir, &m), LOOM_OK);
    int calls = 0;
    CU_ASSERT_EQUAL_FATAL(lc_calibrate(m, 0, 1, progress_count, &calls), LOOM_OK);
    CU_ASSERT(calls > 0);
    const lc_profile *p = lc_profile_of(m, 0);
    CU_ASSERT_EQUAL(p->calibrated, 1);
    CU_ASSERT(positive_finite(p->flops[0]));
    CU_ASSERT(positive_finite(p->mem_bandwidth));
    CU_ASSERT(positive_finite(p->launch_s));
    CU_ASSERT(p->host_visible);
    char line[512];
    lc_profile_summary(p, line, sizeof line);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "GFLOP/s"));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "calibrated"));
    lc_profile saved = *p;
    lc_model_close(m);
    CU_ASSERT(file_exists(dir, "profiles.json"));

    /* Reopened: the cached profile comes back, and only_missing measures nothing. */
    CU_ASSERT_EQUAL_FATAL(lc_model_open(rt, dir, &m), LOOM_OK);
    p = lc_profile_of(m, 0);
    CU_ASSERT_EQUAL(p->calibrated, 1);
    CU_ASSERT_DOUBLE_EQUAL(p->flops[0], saved.flops[0], saved.flops[0] * 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(p->mem_bandwidth, saved.mem_bandwidth, saved.mem_bandwidth * 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(p->launch_s, saved.launch_s, saved.launch_s * 1e-9);
    calls = 0;
    CU_ASSERT_EQUAL(lc_calibrate(m, 1, 1, progress_count, &calls), LOOM_OK);
    CU_ASSERT_EQUAL(calls, 0);
    lc_model_close(m);
}

static void test_links_between_host_visible_memories_are_free(void)
{
    lc_model *m = NULL;
    char dir[4096];
    fresh_dir(dir, sizeof dir, "links");
    CU_ASSERT_EQUAL_FATAL(lc_model_open(rt, dir, &m), LOOM_OK);
    uint32_t ends[2] = {0, LC_HOST};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            double lat = -1, bw = -1, lat2 = -1, bw2 = -1;
            lc_link(m, ends[i], ends[j], &lat, &bw);
            lc_link(m, ends[j], ends[i], &lat2, &bw2);
            CU_ASSERT_DOUBLE_EQUAL(lat, 0, 0);
            CU_ASSERT(isinf(bw) && bw > 0);
            CU_ASSERT_DOUBLE_EQUAL(lat, lat2, 0);
            CU_ASSERT_EQUAL(bw, bw2);
        }
    lc_model_close(m);
}

static void test_run_timeline_feeds_the_history(void)
{
    loom_graph *g = loom_graph_create("timeline");
    int64_t dims[2] = {16, 16};
    loom_value a = loom_input(g, "a", LOOM_DTYPE_F32, 2, dims);
    loom_value y = loom_relu(g, loom_matmul(g, a, a));
    loom_output(g, y, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu:0", .strict = 1};
    loom_plan *plan = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &po, &plan), LOOM_OK);
    loom_tensor *in = NULL, *out = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, dims, &in), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_plan_make_outputs(plan, &out, 1), LOOM_OK);
    char dir[4096];
    fresh_dir(dir, sizeof dir, "timeline");
    lc_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(lc_model_open(rt, dir, &m), LOOM_OK);
    loom_node_timing tl[8];
    for (int r = 0; r < 3; r++) {
        loom_run_stats st = {.struct_size = sizeof st, .timeline = tl, .timeline_capacity = 8};
        CU_ASSERT_EQUAL(loom_plan_run(plan, (const loom_tensor *const *)&in, 1, &out, 1, &st),
                        LOOM_OK);
        CU_ASSERT_EQUAL(lc_record_timeline(m, g, plan, &st, LOOM_PRECISION_F32), 2);
    }
    loom_tensor_desc i2[2] = {{LOOM_DTYPE_F32, 2, {16, 16}}, {LOOM_DTYPE_F32, 2, {16, 16}}};
    loom_tensor_desc o1[1] = {{LOOM_DTYPE_F32, 2, {16, 16}}};
    loom_node_desc n = matmul_node(0);
    n.inputs = i2;
    n.outputs = o1;
    CU_ASSERT_STRING_EQUAL(lc_node_source(m, 0, &n), "history");
    CU_ASSERT(positive_finite(lc_node_seconds(m, 0, &n, NULL)));
    lc_model_close(m);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
}

static void test_robust_median_and_error_stats(void)
{
    double v[4] = {1, 100, 1, 1};
    CU_ASSERT_DOUBLE_EQUAL(lc_robust_median(v, 4), 1, 0);
    double w[5] = {60, 2, 3, 50, 1}; /* median 3: 50 and 60 are spikes */
    CU_ASSERT_DOUBLE_EQUAL(lc_robust_median(w, 5), 2, 0);
    CU_ASSERT_DOUBLE_EQUAL(lc_robust_median(w, 0), 0, 0);
    double pred[4] = {1, 2, 3, 5}, meas[4] = {1, 1, 1, 0};
    double med = 0, p90 = 0;
    lc_error_stats(pred, meas, 4, &med, &p90); /* errors 0, 1, 2; the 0 measurement skipped */
    CU_ASSERT_DOUBLE_EQUAL(med, 1, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(p90, 2, 1e-12);
    lc_error_stats(pred, meas, 0, &med, &p90);
    CU_ASSERT(isnan(med) && isnan(p90));
}

static void test_without_cache_folder_nothing_persists(void)
{
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    char *xdg = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    unsetenv("HOME");
    unsetenv("XDG_CACHE_HOME");
    lc_model *m = NULL;
    CU_ASSERT_EQUAL(lc_model_open(rt, NULL, &m), LOOM_OK);
    if (m) {
        CU_ASSERT_STRING_EQUAL(lc_cache_dir(m), "");
        CU_ASSERT_EQUAL(lc_model_save(m), LOOM_ERR_IO);
        lc_model_close(m);
    }
    if (home)
        setenv("HOME", home, 1);
    if (xdg)
        setenv("XDG_CACHE_HOME", xdg, 1);
    free(home);
    free(xdg);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("cost", suite_init, suite_clean);
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"roofline_matches_hand_computation", test_roofline_matches_hand_computation},
        {"signature_is_deterministic_text", test_signature_is_deterministic_text},
        {"history_median_used_after_three_samples", test_history_median_used_after_three_samples},
        {"history_and_profiles_round_trip_through_the_cache",
         test_history_and_profiles_round_trip_through_the_cache},
        {"corrupt_cache_files_are_reported_and_ignored",
         test_corrupt_cache_files_are_reported_and_ignored},
        {"quick_calibration_of_cpu_gives_positive_finite_figures",
         test_quick_calibration_of_cpu_gives_positive_finite_figures},
        {"links_between_host_visible_memories_are_free",
         test_links_between_host_visible_memories_are_free},
        {"run_timeline_feeds_the_history", test_run_timeline_feeds_the_history},
        {"robust_median_and_error_stats", test_robust_median_and_error_stats},
        {"without_cache_folder_nothing_persists", test_without_cache_folder_nothing_persists},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    failed += CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
