/*
 * The cost model (scheduler/cost/): roofline figures against a hand computation, the history's
 * median and its robustness to spikes, persistence of profiles and history in a temporary
 * cache folder (corrupt files reported and ignored), a quick calibration of the CPU, links,
 * signatures and the error statistics. No assertion depends on how fast anything runs.
 */
#include <loom/loom.h>

#include "test_support.h"

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

    cost_profile p;
    memset(&p, 0, sizeof p);
    p.flops[0] = 1e10;
    p.mem_bandwidth = 1e9;
    p.launch_s = 1e-5;
    /* memory bound: 57344 B / 1e9 B/s = 57.344 us > 524288 / 1e10 = 52.4288 us */
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &n, &cost), 1e-5 + 57.344e-6, 1e-12);
    p.flops[0] = 1e9; /* compute bound: 524.288 us */
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &n, &cost), 1e-5 + 524.288e-6, 1e-12);
    /* fp16 precision uses the f16 column when known, f32 otherwise. */
    loom_node_desc h = matmul_node(LOOM_PRECISION_F16);
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &h, &cost), 1e-5 + 524.288e-6, 1e-12);
    p.flops[1] = 4e9;
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &h, &cost), 1e-5 + 131.072e-6, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &n, &cost), 1e-5 + 524.288e-6, 1e-12);

    /* A layout-only op costs a copy of its output: 64*32*4 bytes read and written. */
    loom_node_desc r = matmul_node(0);
    r.op = LOOM_OP_RESHAPE;
    r.op_name = "Reshape";
    r.n_inputs = 1;
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &r, &cost), 1e-5 + 16384.0 / 1e9, 1e-12);
}

static void test_fit_line_minimises_relative_error(void)
{
    double a = -1, b = -1;
    /* On a line: recovered exactly. */
    double x1[3] = {0, 1, 2}, t1[3] = {1, 2, 3};
    CU_ASSERT_EQUAL(cost_fit_line(x1, t1, 3, &a, &b), 1);
    CU_ASSERT_DOUBLE_EQUAL(a, 1, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(b, 1, 1e-12);
    /* t = -1 + 2x would need a negative fixed part: refitted through the origin. In relative
     * terms b*x/t = 1 at v = x/t = (1, 2/3): b = sum v / sum v^2 = (5/3) / (13/9) = 15/13. */
    double x2[2] = {1, 2}, t2[2] = {1, 3};
    CU_ASSERT_EQUAL(cost_fit_line(x2, t2, 2, &a, &b), 1);
    CU_ASSERT_DOUBLE_EQUAL(a, 0, 0);
    CU_ASSERT_DOUBLE_EQUAL(b, 15.0 / 13.0, 1e-12);
    /* Time falling with size: flat, at the constant a minimising sum (a/t - 1)^2: u = 1/t =
     * (1/2, 1): a = sum u / sum u^2 = 1.5 / 1.25 = 1.2. */
    double t3[2] = {2, 1};
    CU_ASSERT_EQUAL(cost_fit_line(x2, t3, 2, &a, &b), 1);
    CU_ASSERT_DOUBLE_EQUAL(a, 1.2, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(b, 0, 0);
    /* Relative weighting: (10, 20 us), (1000, 1 ms), (2000, 2.2 ms) lie near no line; the
     * small point is kept within 0.1% where plain least squares would miss it by 175% (its
     * intercept is negative). Closed form of the 2x2 normal equations in u = 1/t, v = x/t. */
    double x4[3] = {10, 1000, 2000}, t4[3] = {2e-5, 1e-3, 2.2e-3};
    CU_ASSERT_EQUAL(cost_fit_line(x4, t4, 3, &a, &b), 1);
    double u[3], w[3], su = 0, sv = 0, suu = 0, suv = 0, svv = 0;
    for (int i = 0; i < 3; i++) {
        u[i] = 1 / t4[i];
        w[i] = x4[i] / t4[i];
        su += u[i], sv += w[i], suu += u[i] * u[i], suv += u[i] * w[i], svv += w[i] * w[i];
    }
    double det = suu * svv - suv * suv;
    CU_ASSERT_DOUBLE_EQUAL(a, (su * svv - sv * suv) / det, 1e-15);
    CU_ASSERT_DOUBLE_EQUAL(b, (suu * sv - suv * su) / det, 1e-15);
    CU_ASSERT(a > 9e-6 && a < 1e-5); /* 9.611e-6 */
    CU_ASSERT(fabs((a + 10 * b) / 2e-5 - 1) < 1e-3);
    /* Unusable points are skipped; none usable: 0. */
    double t5[2] = {NAN, -1};
    CU_ASSERT_EQUAL(cost_fit_line(x2, t5, 2, &a, &b), 0);
    CU_ASSERT_DOUBLE_EQUAL(a, 0, 0);
    CU_ASSERT_DOUBLE_EQUAL(b, 0, 0);
    CU_ASSERT_EQUAL(cost_fit_line(x2, t5, 0, &a, &b), 0);
}

static void test_class_fits_replace_the_roofline_where_measured(void)
{
    CU_ASSERT_EQUAL(cost_op_class_of(LOOM_OP_MATMUL), COST_CLASS_MATMUL);
    CU_ASSERT_EQUAL(cost_op_class_of(LOOM_OP_GEMM), COST_CLASS_MATMUL);
    CU_ASSERT_EQUAL(cost_op_class_of(LOOM_OP_ADD), COST_CLASS_BINARY);
    CU_ASSERT_EQUAL(cost_op_class_of(LOOM_OP_ERF), COST_CLASS_TRANSCENDENTAL);
    CU_ASSERT_EQUAL(cost_op_class_of(LOOM_OP_LAYER_NORMALIZATION), COST_CLASS_NORM);
    CU_ASSERT_EQUAL(cost_op_class_of(LOOM_OP_TRANSPOSE), COST_CLASS_COPY);
    CU_ASSERT_EQUAL(cost_op_class_of(LOOM_OP_RESHAPE), COST_CLASS_VIEW);
    CU_ASSERT_EQUAL(cost_op_class_of(LOOM_OP_SHAPE), COST_CLASS_COUNT);
    CU_ASSERT(cost_op_class_counts_flops(COST_CLASS_CONV));
    CU_ASSERT_FALSE(cost_op_class_counts_flops(COST_CLASS_SOFTMAX));

    cost_profile p;
    memset(&p, 0, sizeof p);
    p.flops[0] = 1e10;
    p.mem_bandwidth = 1e9;
    p.launch_s = 1e-5;
    p.cache_bytes = 1e6;
    p.class_fixed_s[COST_CLASS_MATMUL] = 2e-6;
    p.class_rate[COST_CLASS_MATMUL] = 5e10;
    p.class_fixed_s[COST_CLASS_BINARY] = 1e-6;
    p.class_rate[COST_CLASS_BINARY] = 1e10;
    /* MatMul [64,128] x [128,32]: 524288 FLOPs at the fitted 5e10 plus its fixed 2 us. */
    loom_node_desc n = matmul_node(LOOM_PRECISION_F32);
    loom_op_cost cost;
    loom_op_get(LOOM_OP_MATMUL)->cost(&n, &cost);
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &n, &cost), 2e-6 + 524288.0 / 5e10, 1e-15);
    /* In fp16 the fitted rate scales with flops[1] / flops[0] = 4. */
    p.flops[1] = 4e10;
    loom_node_desc h = matmul_node(LOOM_PRECISION_F16);
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &h, &cost), 2e-6 + 524288.0 / 2e11, 1e-15);
    /* Add of 1024 floats: 12288 bytes, in cache: 1 us + 12288 / 1e10. */
    loom_tensor_desc v[2] = {{LOOM_DTYPE_F32, 1, {1024}}, {LOOM_DTYPE_F32, 1, {1024}}};
    loom_node_desc a = matmul_node(0);
    a.op = LOOM_OP_ADD;
    a.op_name = "Add";
    a.inputs = v;
    a.outputs = v;
    loom_op_cost ac = {1024, 8192, 4096};
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &a, &ac), 1e-6 + 12288.0 / 1e10, 1e-15);
    /* 12 MB does not fit in 1 MB of cache: it streams at mem_bandwidth, 1e9. */
    loom_op_cost big = {1 << 20, 8e6, 4e6};
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &a, &big), 1e-6 + 12e6 / 1e9, 1e-12);
    /* A class without a fit keeps the plain roofline: Relu, launch + bytes / bandwidth. */
    a.op = LOOM_OP_RELU;
    a.op_name = "Relu";
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &a, &ac), 1e-5 + 12288.0 / 1e9, 1e-15);
    /* A fixed cost without a rate (no size dependence measured): the fixed cost, in cache. */
    p.class_fixed_s[COST_CLASS_UNARY] = 3e-7;
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &a, &ac), 3e-7, 1e-18);
    /* A flat fit of a class that counts flops (every size calibrated took the same time: a
     * launch that dwarfs a small GEMM) does not make larger work free: the profile's
     * arithmetic rate prices its flops. PoCL's quick calibration fitted MatMul flat at 79 us,
     * and a 33 MFLOP MatMul that took it 2.2 ms was predicted at 0.09 ms. */
    p.class_fixed_s[COST_CLASS_MATMUL] = 8e-5;
    p.class_rate[COST_CLASS_MATMUL] = 0;
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &n, &cost), 8e-5 + 524288.0 / 1e10, 1e-15);
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &h, &cost), 8e-5 + 524288.0 / 4e10, 1e-15);
    p.class_fixed_s[COST_CLASS_MATMUL] = 2e-6;
    p.class_rate[COST_CLASS_MATMUL] = 5e10;

    /* A device without f32 arithmetic (an NPU) fitted its classes in fp16 (class_column 1):
     * an fp16 node uses the fitted rate as it is, not scaled by flops[1] / flops[0] (which,
     * flops[0] being the facts' 3 TFLOP/s and flops[1] the measured 2.7 GFLOP/s, made npu-sim's
     * MatMuls 1000x too slow), and an f32 node scales by flops[0] / flops[1]. */
    p.flops[0] = 3e12;
    p.flops[1] = 2.7e9;
    p.class_column = 1;
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &h, &cost), 2e-6 + 524288.0 / 5e10, 1e-15);
    CU_ASSERT_DOUBLE_EQUAL(cost_roofline_seconds(&p, &n, &cost),
                           2e-6 + 524288.0 / (5e10 * 3e12 / 2.7e9), 1e-15);
}

static void test_signature_is_deterministic_text(void)
{
    loom_tensor_desc in[2] = {{LOOM_DTYPE_F32, 3, {1, 128, 768}}, {LOOM_DTYPE_F32, 2, {768, 768}}};
    loom_tensor_desc out[1] = {{LOOM_DTYPE_F32, 3, {1, 128, 768}}};
    loom_node_desc n = matmul_node(0);
    n.inputs = in;
    n.outputs = out;
    char a[COST_SIG_MAX], b[COST_SIG_MAX];
    uint64_t ha = cost_sig(&n, 0, a), hb = cost_sig(&n, 0, b);
    CU_ASSERT_STRING_EQUAL(a, "MatMul|f32[1,128,768];f32[768,768]|f32[1,128,768]|p0");
    CU_ASSERT_EQUAL(ha, hb);
    CU_ASSERT_EQUAL(ha, cost_sig_hash(a, 0));
    CU_ASSERT_NOT_EQUAL(cost_sig(&n, 1, b), ha); /* another device group */
    /* Attributes that change the work without changing shapes are part of the signature. */
    int64_t perm1[2] = {0, 1}, perm2[2] = {1, 0};
    loom_attr at = loom_attr_ints("perm", 2, perm1);
    n.n_attrs = 1;
    n.attrs = &at;
    cost_sig(&n, 0, a);
    at = loom_attr_ints("perm", 2, perm2);
    cost_sig(&n, 0, b);
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
    uint64_t h1 = cost_sig(&c, 0, a);
    CU_ASSERT(strlen(a) < COST_SIG_MAX);
    CU_ASSERT_PTR_NOT_NULL(strchr(a, '~'));
    many[299].dims[3] = 57;
    uint64_t h2 = cost_sig(&c, 0, b);
    CU_ASSERT(strcmp(a, b) != 0);
    CU_ASSERT_NOT_EQUAL(h1, h2);
    CU_ASSERT_EQUAL(h2, cost_sig_hash(b, 0));
}

static void test_history_median_used_after_three_samples(void)
{
    char dir[4096];
    fresh_dir(dir, sizeof dir, "history");
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    loom_node_desc n = matmul_node(0);
    loom_op_cost cost;
    loom_op_get(LOOM_OP_MATMUL)->cost(&n, &cost);
    double roof = cost_roofline_seconds(cost_profile_of(m, 0), &n, &cost);
    CU_ASSERT_STRING_EQUAL(cost_node_source(m, 0, &n), "roofline");
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, 0, &n, &cost), roof, 0);
    cost_record(m, 0, &n, 1e-3);
    cost_record(m, 0, &n, 1.2e-3);
    CU_ASSERT_STRING_EQUAL(cost_node_source(m, 0, &n), "roofline"); /* two are not enough */
    cost_record(m, 0, &n, 0.8e-3);
    CU_ASSERT_STRING_EQUAL(cost_node_source(m, 0, &n), "history");
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, 0, &n, &cost), 1e-3, 1e-12);
    /* All devices at once agree with one at a time. */
    double *all = calloc(cost_device_count(m), sizeof *all);
    CU_ASSERT_PTR_NOT_NULL_FATAL(all);
    cost_node_seconds_all(m, &n, &cost, all);
    for (uint32_t d = 0; d < cost_device_count(m); d++)
        CU_ASSERT_DOUBLE_EQUAL(all[d], cost_node_seconds(m, d, &n, &cost), 0);
    free(all);
    /* A 100x spike does not move the prediction by more than 10%. */
    cost_record(m, 0, &n, 0.1);
    double after = cost_node_seconds(m, 0, &n, &cost);
    CU_ASSERT(fabs(after - 1e-3) <= 0.1 * 1e-3);
    /* Another precision is another signature. */
    loom_node_desc h = matmul_node(LOOM_PRECISION_F16);
    CU_ASSERT_STRING_EQUAL(cost_node_source(m, 0, &h), "roofline");
    /* Invalid samples are ignored. */
    cost_record(m, 0, &h, NAN);
    cost_record(m, 0, &h, -1);
    cost_record(m, 0, &h, INFINITY);
    cost_record(m, 99, &h, 1);
    CU_ASSERT_STRING_EQUAL(cost_node_source(m, 0, &h), "roofline");
    CU_ASSERT(isinf(cost_node_seconds(m, 99, &n, &cost)));
    cost_model_close(m);
}

static void test_history_and_profiles_round_trip_through_the_cache(void)
{
    char dir[4096];
    fresh_dir(dir, sizeof dir, "roundtrip/nested/deeper"); /* created like mkdir -p */
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(cost_cache_dir(m), dir);
    loom_node_desc n = matmul_node(0);
    for (int i = 0; i < 40; i++) /* more than are kept */
        cost_record(m, 0, &n, i < 20 ? 5e-3 : 2e-3);
    /* A calibrated profile with class fits (set by hand) is saved with them. */
    m->profiles[0].calibrated = 1;
    m->profiles[0].cache_bytes = 32 << 20;
    m->profiles[0].class_fixed_s[COST_CLASS_SOFTMAX] = 3.5e-6;
    m->profiles[0].class_rate[COST_CLASS_SOFTMAX] = 2.5e9;
    m->profile_dirty[0] = 1;
    CU_ASSERT_EQUAL(cost_model_save(m), LOOM_OK);
    cost_model_close(m);
    CU_ASSERT(file_exists(dir, "history.json"));
    CU_ASSERT(file_exists(dir, "profiles.json"));

    m = NULL;
    size_t before = loom_runtime_message_count(rt);
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    CU_ASSERT_FALSE(message_since(before, "corrupt"));
    CU_ASSERT_STRING_EQUAL(cost_node_source(m, 0, &n), "history");
    /* The last 32 samples were kept: 12 of 5 ms, 20 of 2 ms. */
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, 0, &n, NULL), 2e-3, 1e-12);
    const cost_profile *p = cost_profile_of(m, 0);
    CU_ASSERT_EQUAL(p->calibrated, 1);
    CU_ASSERT_DOUBLE_EQUAL(p->cache_bytes, 32 << 20, 0);
    CU_ASSERT_DOUBLE_EQUAL(p->class_fixed_s[COST_CLASS_SOFTMAX], 3.5e-6, 1e-18);
    CU_ASSERT_DOUBLE_EQUAL(p->class_rate[COST_CLASS_SOFTMAX], 2.5e9, 1e-3);
    CU_ASSERT_DOUBLE_EQUAL(p->class_rate[COST_CLASS_MATMUL], 0, 0);
    cost_model_close(m);
}

static void test_corrupt_cache_files_are_reported_and_ignored(void)
{
    char dir[4096];
    fresh_dir(dir, sizeof dir, "corrupt");
    write_text(dir, "profiles.json", "{\"version\": 1, \"profiles\": {\"x\": ");
    write_text(dir, "history.json", "[1, 2, 3]");
    size_t before = loom_runtime_message_count(rt);
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    CU_ASSERT(message_since(before, "profiles.json is corrupt"));
    CU_ASSERT(message_since(before, "history.json is corrupt"));
    CU_ASSERT_EQUAL(cost_profile_of(m, 0)->calibrated, 0);
    CU_ASSERT(cost_profile_of(m, 0)->flops[0] > 0);
    loom_node_desc n = matmul_node(0);
    for (int i = 0; i < 3; i++)
        cost_record(m, 0, &n, 4e-3);
    cost_model_close(m); /* saves over the corrupt history */

    /* A malformed entry in an otherwise good file is skipped, the rest kept. */
    char key[512];
    cost_model *k = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &k), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(cost_node_source(k, 0, &n), "history");
    snprintf(key, sizeof key, "{\"version\": 1, \"profiles\": {\"%s\": {\"calibrated\": true, "
             "\"flops_f32\": \"fast\"}}}", cost_profile_of(k, 0)->key);
    cost_model_close(k);
    write_text(dir, "profiles.json", key);
    before = loom_runtime_message_count(rt);
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &k), LOOM_OK);
    CU_ASSERT(message_since(before, "malformed"));
    CU_ASSERT_EQUAL(cost_profile_of(k, 0)->calibrated, 0);
    CU_ASSERT_STRING_EQUAL(cost_node_source(k, 0, &n), "history");
    cost_model_close(k);
}

/* How many runtime messages from index FROM on contain NEEDLE. */
static size_t messages_since(size_t from, const char *needle)
{
    size_t n = 0;
    for (size_t i = from; i < loom_runtime_message_count(rt); i++)
        n += strstr(loom_runtime_message(rt, i), needle) != NULL;
    return n;
}

/* Whether DIR holds an entry whose name starts with PREFIX (a quarantined file). */
static int has_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)))
        found |= strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return found;
}

/* Open and close a model on DIR; the number of messages naming NEEDLE it gave. */
static size_t open_close_messages(const char *dir, const char *needle)
{
    size_t before = loom_runtime_message_count(rt);
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    cost_model_close(m);
    return messages_since(before, needle);
}

static void test_damaged_cache_files_are_said_once_and_quarantined(void)
{
    char dir[4096], path[8192];
    fresh_dir(dir, sizeof dir, "damaged");
    /* A folder where the file should be; NaN (not JSON); a file cut in the middle. */
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/history.json", dir);
    CU_ASSERT_EQUAL_FATAL(mkdir(path, 0755), 0);
    write_text(dir, "profiles.json", "{\"version\": 1, \"profiles\": {\"k\": {\"flops_f32\": NaN}}}");
    CU_ASSERT_EQUAL(open_close_messages(dir, "corrupt"), 2);
    CU_ASSERT(has_prefixed(dir, "history.json.bad-"));
    CU_ASSERT(has_prefixed(dir, "profiles.json.bad-"));
    CU_ASSERT_EQUAL(open_close_messages(dir, "corrupt"), 0); /* said once */

    fresh_dir(dir, sizeof dir, "truncated");
    write_text(dir, "history.json", "{\"version\": 1, \"history\": {\"cpu|x\": {\"MatMul|f32[");
    CU_ASSERT_EQUAL(open_close_messages(dir, "history.json is corrupt"), 1);
    CU_ASSERT(has_prefixed(dir, "history.json.bad-"));
    CU_ASSERT_EQUAL(open_close_messages(dir, "corrupt"), 0);
}

static void test_poisoned_cache_entries_are_dropped_and_the_file_rewritten(void)
{
    char dir[4096], text[4096];
    fresh_dir(dir, sizeof dir, "poisoned");
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    char key[sizeof cost_profile_of(m, 0)->key];
    snprintf(key, sizeof key, "%s", cost_profile_of(m, 0)->key);
    double facts = cost_profile_of(m, 0)->flops[0];
    cost_model_close(m);
    /* A profile 1e300 times too slow (positive, finite: passes a plain sanity check), and
     * history samples negative, beyond a day and fine. */
    snprintf(text, sizeof text, "{\"version\": 1, \"profiles\": {\"%s\": {\"calibrated\": true, "
             "\"flops_f32\": 1e-300, \"mem_bandwidth\": 1e10, \"launch_s\": 1e-6}}}", key);
    write_text(dir, "profiles.json", text);
    snprintf(text, sizeof text, "{\"version\": 1, \"history\": {\"%s\": {"
             "\"neg\": {\"samples\": [1e-3, -1e-3, 1e-3]}, \"huge\": {\"samples\": [1e300]}, "
             "\"fine\": {\"samples\": [2e-3, 2e-3, 2e-3]}}}}", key);
    write_text(dir, "history.json", text);
    size_t before = loom_runtime_message_count(rt);
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    CU_ASSERT_EQUAL(messages_since(before, "profiles.json: the entry"), 1);
    CU_ASSERT_EQUAL(messages_since(before, "history.json: 2 malformed entries"), 1);
    CU_ASSERT_EQUAL(cost_profile_of(m, 0)->calibrated, 0);
    CU_ASSERT_DOUBLE_EQUAL(cost_profile_of(m, 0)->flops[0], facts, 0);
    cost_model_close(m);
    /* Rewritten without them: the next start says nothing and keeps the good entry. */
    before = loom_runtime_message_count(rt);
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    CU_ASSERT_EQUAL(loom_runtime_message_count(rt), before);
    pthread_rwlock_wrlock(&m->lock);
    cost_hist *fine = cost_hist_add(m, "fine", 0, cost_sig_hash("fine", 0), 2e-3);
    CU_ASSERT(fine && fine->n == 4);
    pthread_rwlock_unlock(&m->lock);
    cost_model_close(m);
}

static void test_observation_far_off_the_prediction_is_warned_once_and_not_learned(void)
{
    char dir[4096];
    fresh_dir(dir, sizeof dir, "outlier");
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    loom_node_desc n = matmul_node(0);
    for (int i = 0; i < 5; i++)
        cost_record(m, 0, &n, 1e-3);
    size_t before = loom_runtime_message_count(rt);
    cost_record(m, 0, &n, 1e4); /* 10^7 x the prediction */
    CU_ASSERT_EQUAL(messages_since(before, "not learned"), 1);
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, 0, &n, NULL), 1e-3, 1e-12);
    cost_record(m, 0, &n, 1e-3);
    cost_record(m, 0, &n, 1e-10); /* 10^7 x below */
    cost_record(m, 0, &n, 1e4);
    CU_ASSERT_EQUAL(messages_since(before, "not learned"), 1); /* once per signature */
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, 0, &n, NULL), 1e-3, 1e-12);
    /* Non-finite and negative figures: refused, said once. */
    cost_record(m, 0, &n, NAN);
    cost_record(m, 0, &n, -1);
    cost_record(m, 0, &n, INFINITY);
    CU_ASSERT_EQUAL(messages_since(before, "is not a time"), 1);
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, 0, &n, NULL), 1e-3, 1e-12);
    /* Held back three times in a row on one side: the device changed, the history restarts. */
    cost_record(m, 0, &n, 1e-3);
    cost_record(m, 0, &n, 2.0);
    cost_record(m, 0, &n, 2.0);
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, 0, &n, NULL), 1e-3, 1e-12);
    cost_record(m, 0, &n, 2.0);
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, 0, &n, NULL), 2.0, 1e-12);
    cost_model_close(m);
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
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    int calls = 0;
    CU_ASSERT_EQUAL_FATAL(cost_calibrate(m, 0, 1, progress_count, &calls), LOOM_OK);
    CU_ASSERT(calls > 0);
    const cost_profile *p = cost_profile_of(m, 0);
    CU_ASSERT_EQUAL(p->calibrated, 1);
    CU_ASSERT(positive_finite(p->flops[0]));
    CU_ASSERT(positive_finite(p->mem_bandwidth));
    CU_ASSERT(positive_finite(p->launch_s));
    CU_ASSERT(p->host_visible);
    /* Every class the CPU runs got a line; its cache size is known or 0. */
    for (int k = 0; k < COST_CLASS_COUNT; k++) {
        CU_ASSERT(p->class_fixed_s[k] > 0 || p->class_rate[k] > 0);
        CU_ASSERT(p->class_fixed_s[k] >= 0 && isfinite(p->class_fixed_s[k]));
        CU_ASSERT(p->class_rate[k] >= 0 && isfinite(p->class_rate[k]));
    }
    CU_ASSERT(p->cache_bytes >= 0);
    char line[512];
    cost_profile_summary(p, line, sizeof line);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "GFLOP/s"));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "calibrated"));
    cost_profile saved = *p;
    cost_model_close(m);
    CU_ASSERT(file_exists(dir, "profiles.json"));

    /* Reopened: the cached profile comes back, and only_missing measures nothing. */
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    p = cost_profile_of(m, 0);
    CU_ASSERT_EQUAL(p->calibrated, 1);
    CU_ASSERT_DOUBLE_EQUAL(p->flops[0], saved.flops[0], saved.flops[0] * 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(p->mem_bandwidth, saved.mem_bandwidth, saved.mem_bandwidth * 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(p->launch_s, saved.launch_s, saved.launch_s * 1e-9);
    for (int k = 0; k < COST_CLASS_COUNT; k++) {
        CU_ASSERT_DOUBLE_EQUAL(p->class_fixed_s[k], saved.class_fixed_s[k],
                               saved.class_fixed_s[k] * 1e-9);
        CU_ASSERT_DOUBLE_EQUAL(p->class_rate[k], saved.class_rate[k], saved.class_rate[k] * 1e-9);
    }
    calls = 0;
    CU_ASSERT_EQUAL(cost_calibrate(m, 1, 1, progress_count, &calls), LOOM_OK);
    CU_ASSERT_EQUAL(calls, 0);
    cost_model_close(m);
}

static void test_links_between_host_visible_memories_are_free(void)
{
    cost_model *m = NULL;
    char dir[4096];
    fresh_dir(dir, sizeof dir, "links");
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    uint32_t ends[2] = {0, COST_HOST};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            double lat = -1, bw = -1, lat2 = -1, bw2 = -1;
            cost_link(m, ends[i], ends[j], &lat, &bw);
            cost_link(m, ends[j], ends[i], &lat2, &bw2);
            CU_ASSERT_DOUBLE_EQUAL(lat, 0, 0);
            CU_ASSERT(isinf(bw) && bw > 0);
            CU_ASSERT_DOUBLE_EQUAL(lat, lat2, 0);
            CU_ASSERT_EQUAL(bw, bw2);
        }
    cost_model_close(m);
}

static void test_run_timeline_feeds_the_history(void)
{
    loom_graph *g = loom_graph_create("timeline");
    int64_t dims[2] = {16, 16};
    loom_value a = loom_input(g, "a", LOOM_DTYPE_F32, 2, dims);
    /* Softmax, not an activation the fusion pass would fold into the MatMul: two plan nodes. */
    loom_value y = loom_softmax(g, loom_matmul(g, a, a), -1);
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
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    loom_node_timing tl[8];
    for (int r = 0; r < 3; r++) {
        loom_run_stats st = {.struct_size = sizeof st, .timeline = tl, .timeline_capacity = 8};
        CU_ASSERT_EQUAL(loom_plan_run(plan, (const loom_tensor *const *)&in, 1, &out, 1, &st),
                        LOOM_OK);
        CU_ASSERT_EQUAL(cost_record_timeline(m, g, plan, &st, LOOM_PRECISION_F32), 2);
    }
    loom_tensor_desc i2[2] = {{LOOM_DTYPE_F32, 2, {16, 16}}, {LOOM_DTYPE_F32, 2, {16, 16}}};
    loom_tensor_desc o1[1] = {{LOOM_DTYPE_F32, 2, {16, 16}}};
    loom_node_desc n = matmul_node(0);
    n.inputs = i2;
    n.outputs = o1;
    CU_ASSERT_STRING_EQUAL(cost_node_source(m, 0, &n), "history");
    CU_ASSERT(positive_finite(cost_node_seconds(m, 0, &n, NULL)));
    cost_model_close(m);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
}

static void test_robust_median_and_error_stats(void)
{
    double v[4] = {1, 100, 1, 1};
    CU_ASSERT_DOUBLE_EQUAL(cost_robust_median(v, 4), 1, 0);
    double w[5] = {60, 2, 3, 50, 1}; /* median 3: 50 and 60 are spikes */
    CU_ASSERT_DOUBLE_EQUAL(cost_robust_median(w, 5), 2, 0);
    CU_ASSERT_DOUBLE_EQUAL(cost_robust_median(w, 0), 0, 0);
    double pred[4] = {1, 2, 3, 5}, meas[4] = {1, 1, 1, 0};
    double med = 0, p90 = 0;
    cost_error_stats(pred, meas, 4, &med, &p90); /* errors 0, 1, 2; the 0 measurement skipped */
    CU_ASSERT_DOUBLE_EQUAL(med, 1, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(p90, 2, 1e-12);
    cost_error_stats(pred, meas, 0, &med, &p90);
    CU_ASSERT(isnan(med) && isnan(p90));
}

static void test_without_cache_folder_nothing_persists(void)
{
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    char *xdg = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    unsetenv("HOME");
    unsetenv("XDG_CACHE_HOME");
    cost_model *m = NULL;
    CU_ASSERT_EQUAL(cost_model_open(rt, NULL, &m), LOOM_OK);
    if (m) {
        CU_ASSERT_STRING_EQUAL(cost_cache_dir(m), "");
        CU_ASSERT_EQUAL(cost_model_save(m), LOOM_ERR_IO);
        cost_model_close(m);
    }
    if (home)
        setenv("HOME", home, 1);
    if (xdg)
        setenv("XDG_CACHE_HOME", xdg, 1);
    free(home);
    free(xdg);
}

/* ---- a fake backend: one device whose facts and estimate() the tests set ------------------ */

static struct {
    uint32_t host_visible;
    double estimate_s; /* what estimate() says for any MatMul; < 0: none */
} fake = {1, -1};

static const loom_backend_option fake_options[] = {{"mode", "a test option", "a"}};

static uint32_t fake_count(void *ctx)
{
    (void)ctx;
    return 1;
}

static loom_status fake_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    (void)ctx;
    (void)dev;
    snprintf(info->name, sizeof info->name, "fake accelerator");
    info->kind = LOOM_DEVICE_NPU;
    info->compute_units = 1;
    info->threads = 1;
    info->memory_bytes = 1ull << 30;
    info->numa_node = -1;
    info->host_visible = fake.host_visible;
    return LOOM_OK;
}

static int fake_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                         size_t reason_len)
{
    (void)ctx;
    (void)dev;
    if (node->op == LOOM_OP_MATMUL)
        return 1;
    snprintf(reason, reason_len, "fake: MatMul only");
    return 0;
}

static int fake_kernel;

static loom_status fake_prepare(void *ctx, uint32_t dev, const loom_node_desc *node,
                                void **kernel, size_t *scratch, char *err, size_t err_len)
{
    (void)ctx, (void)dev, (void)node, (void)err, (void)err_len;
    *kernel = &fake_kernel;
    *scratch = 0;
    return LOOM_OK;
}

static loom_status fake_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *a,
                                char *err, size_t err_len)
{
    (void)ctx, (void)dev, (void)kernel, (void)a;
    snprintf(err, err_len, "fake: never runs");
    return LOOM_ERR_UNSUPPORTED;
}

static void fake_release(void *ctx, void *kernel)
{
    (void)ctx, (void)kernel;
}

static void *fake_alloc(void *ctx, uint32_t dev, size_t size, size_t align)
{
    (void)ctx, (void)dev, (void)align;
    return malloc(size ? size : 1);
}

static void fake_free(void *ctx, uint32_t dev, void *p, size_t size)
{
    (void)ctx, (void)dev, (void)size;
    free(p);
}

static loom_status fake_copy(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                             char *err, size_t err_len)
{
    (void)ctx, (void)dev, (void)err, (void)err_len;
    memcpy(dst, src, bytes);
    return LOOM_OK;
}

static double fake_estimate(void *ctx, uint32_t dev, const loom_node_desc *node)
{
    (void)ctx, (void)dev;
    return node->op == LOOM_OP_MATMUL ? fake.estimate_s : -1;
}

static loom_status fake_set_option(void *ctx, const char *key, const char *value, char *err,
                                   size_t err_len)
{
    (void)ctx, (void)key, (void)value, (void)err, (void)err_len;
    return LOOM_OK;
}

static const loom_backend fake_table = {
    .abi_version = LOOM_ABI_VERSION,
    .struct_size = sizeof(loom_backend),
    .name = "fake",
    .device_count = fake_count,
    .device_info = fake_info,
    .supports = fake_supports,
    .prepare = fake_prepare,
    .execute = fake_execute,
    .release_kernel = fake_release,
    .alloc = fake_alloc,
    .free = fake_free,
    .estimate = fake_estimate,
    .upload = fake_copy,
    .download = fake_copy,
    .options = fake_options,
    .n_options = 1,
    .set_option = fake_set_option,
};

/* A runtime with the usual devices plus the fake one (OPTIONS: backend options, may be NULL);
 * *FAKE_DEV gets its runtime device index. */
static loom_runtime *runtime_with_fake(const char *const *options, size_t n_options,
                                       uint32_t *fake_dev)
{
    loom_runtime_options o = {.struct_size = sizeof o, .no_default_plugins = 1};
    loom_runtime *r = NULL;
    if (loom_runtime_create(&o, &r) != LOOM_OK)
        return NULL;
    if (n_options) {
        loom_runtime_options fo = {.struct_size = sizeof fo, .backend_options = options,
                                   .n_backend_options = n_options};
        CU_ASSERT_EQUAL(backend_options_parse(&fo, &r->options), LOOM_OK);
    }
    *fake_dev = (uint32_t)r->n_devices;
    if (runtime_add_backend(r, &fake_table, NULL, NULL) != LOOM_OK ||
        r->n_devices != *fake_dev + 1) {
        loom_runtime_destroy(r);
        return NULL;
    }
    return r;
}

/* profiles.json in DIR with a calibrated entry for KEY whose MatMul class is fitted as
 * 100 us + FLOPs / 1e9. */
static void write_calibrated_profile(const char *dir, const char *key)
{
    char text[4096];
    snprintf(text, sizeof text, "{\"version\": 1, \"profiles\": {\"%s\": {\"calibrated\": true, "
             "\"flops_f32\": 1e10, \"mem_bandwidth\": 1e10, \"launch_s\": 1e-5, "
             "\"fixed_s_matmul\": 1e-4, \"rate_matmul\": 1e9}}}", key);
    write_text(dir, "profiles.json", text);
}

/* Defect (issue 15): the cached profile's key ignored whether the device's memory is
 * host-visible, so a profile measured on host memory was reused for device memory. */
static void test_profile_key_includes_what_changes_its_meaning(void)
{
    uint32_t fd;
    fake.host_visible = 1;
    loom_runtime *a = runtime_with_fake(NULL, 0, &fd);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    char key_hv[sizeof ((cost_profile *)0)->key], key_dev[sizeof key_hv], key_opt[sizeof key_hv];
    cost_profile_key(a, &a->devices[fd], key_hv, sizeof key_hv);
    /* Same backend, same name, same driver: only host_visible differs. */
    runtime_device flipped = a->devices[fd];
    flipped.info.host_visible = 0;
    cost_profile_key(a, &flipped, key_dev, sizeof key_dev);
    CU_ASSERT(strcmp(key_hv, key_dev) != 0);
    runtime_device other = a->devices[fd];
    /* The other facts that change a measurement's meaning change the key too. */
    uint32_t *facts[] = {&other.info.unified_memory, &other.info.in_order,
                         &other.info.shares_host_cpu, &other.info.has_fp16};
    for (size_t k = 0; k < sizeof facts / sizeof *facts; k++) {
        char kk[sizeof key_hv];
        *facts[k] = 1;
        cost_profile_key(a, &other, kk, sizeof kk);
        CU_ASSERT(strcmp(kk, key_hv) != 0);
        *facts[k] = 0;
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(key_hv, "|abi1."));

    /* A calibration of the host-visible device is not reused for the device-memory one. */
    char dir[4096];
    fresh_dir(dir, sizeof dir, "key-host-visible");
    write_calibrated_profile(dir, key_hv);
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(a, dir, &m), LOOM_OK);
    CU_ASSERT_EQUAL(cost_profile_of(m, fd)->calibrated, 1); /* the same device: reused */
    cost_model_close(m);
    loom_runtime_destroy(a);
    fake.host_visible = 0;
    loom_runtime *b = runtime_with_fake(NULL, 0, &fd);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL_FATAL(cost_model_open(b, dir, &m), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(cost_profile_of(m, fd)->key, key_dev);
    CU_ASSERT_EQUAL(cost_profile_of(m, fd)->calibrated, 0);
    cost_model_close(m);
    loom_runtime_destroy(b);
    fake.host_visible = 1;

    /* An option given to the backend changes the key (npu-sim's profile=, say). */
    const char *opt[] = {"fake:mode=b"};
    loom_runtime *c = runtime_with_fake(opt, 1, &fd);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    cost_profile_key(c, &c->devices[fd], key_opt, sizeof key_opt);
    CU_ASSERT(strcmp(key_opt, key_hv) != 0);
    loom_runtime_destroy(c);
}

/* Defect (issue 15): a backend's estimate() 20x below what calibration measured for the node's
 * class won over the measurement. */
static void test_measurement_beats_an_estimate_twenty_times_off(void)
{
    uint32_t fd;
    fake.host_visible = 1;
    loom_runtime *r = runtime_with_fake(NULL, 0, &fd);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    char dir[4096], key[sizeof ((cost_profile *)0)->key];
    fresh_dir(dir, sizeof dir, "estimate-off");
    cost_profile_key(r, &r->devices[fd], key, sizeof key);
    write_calibrated_profile(dir, key);
    /* MatMul [64,128] x [128,32]: 524288 FLOPs; the calibrated class line says
     * 100 us + 524288 / 1e9 s = 624.288 us (by hand). */
    const double measured = 1e-4 + 524288.0 / 1e9;
    loom_node_desc n = matmul_node(LOOM_PRECISION_F32);
    loom_op_cost cost;
    loom_op_get(LOOM_OP_MATMUL)->cost(&n, &cost);

    fake.estimate_s = measured / 20;
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(r, dir, &m), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(cost_profile_of(m, fd)->calibrated, 1);
    size_t before = loom_runtime_message_count(r);
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, fd, &n, &cost), measured, 1e-12);
    CU_ASSERT_STRING_EQUAL(cost_node_source(m, fd, &n), "calibration");
    double all[64];
    CU_ASSERT_FATAL(cost_device_count(m) <= sizeof all / sizeof *all);
    cost_node_seconds_all(m, &n, &cost, all);
    CU_ASSERT_DOUBLE_EQUAL(all[fd], measured, 1e-12);
    cost_choice c;
    cost_node_choose(m, fd, &n, &cost, &c);
    CU_ASSERT_DOUBLE_EQUAL(c.estimate_s, measured / 20, 1e-15);
    CU_ASSERT_DOUBLE_EQUAL(c.measured_s, measured, 1e-12);
    char *note = cost_choice_note(m, fd, &c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(note);
    CU_ASSERT_PTR_NOT_NULL(strstr(note, "cost from measurement (0.624 ms"));
    CU_ASSERT_PTR_NOT_NULL(strstr(note, "fake:0's estimate 0.0312 ms was 20x off"));
    free(note);
    /* The disagreement is said once for the device and op class, not per node. */
    size_t said = 0;
    for (size_t i = before; i < loom_runtime_message_count(r); i++)
        said += strstr(loom_runtime_message(r, i), "fake:0's own estimate of MatMul") != NULL;
    CU_ASSERT_EQUAL(said, 1);
    cost_model_close(m);

    /* Within 2x the backend's estimate stands: it knows the node, the class line is coarse. */
    fake.estimate_s = measured / 1.5;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(r, dir, &m), LOOM_OK);
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, fd, &n, &cost), measured / 1.5, 1e-15);
    CU_ASSERT_STRING_EQUAL(cost_node_source(m, fd, &n), "backend");
    cost_node_choose(m, fd, &n, &cost, &c);
    CU_ASSERT_PTR_NULL(cost_choice_note(m, fd, &c));
    cost_model_close(m);

    /* Without a calibration there is nothing to trust more than the estimate. */
    fake.estimate_s = measured / 20;
    char empty[4096];
    fresh_dir(empty, sizeof empty, "estimate-uncalibrated");
    CU_ASSERT_EQUAL_FATAL(cost_model_open(r, empty, &m), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(cost_node_source(m, fd, &n), "backend");
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(m, fd, &n, &cost), measured / 20, 1e-15);
    /* History of the node itself wins, and a far-off estimate is noted against it too. */
    for (int k = 0; k < COST_HISTORY_MIN; k++)
        cost_record(m, fd, &n, 5e-4);
    cost_node_choose(m, fd, &n, &cost, &c);
    CU_ASSERT_STRING_EQUAL(c.source, "history");
    CU_ASSERT_DOUBLE_EQUAL(c.seconds, 5e-4, 1e-15);
    note = cost_choice_note(m, fd, &c);
    CU_ASSERT_PTR_NOT_NULL(note);
    CU_ASSERT_PTR_NOT_NULL(note ? strstr(note, "measured history") : NULL);
    free(note);
    cost_model_close(m);

    /* The plan's explanation says which source won and by how much. */
    fake.estimate_s = measured / 20;
    loom_graph *g = loom_graph_create("estimate-off");
    int64_t da[2] = {64, 128}, db[2] = {128, 32};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, da);
    loom_value w = loom_input(g, "w", LOOM_DTYPE_F32, 2, db);
    loom_output(g, loom_matmul(g, x, w), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options po = {.struct_size = sizeof po, .device = "fake:0", .strict = 1,
                            .cache_dir = dir};
    loom_plan *plan = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(r, g, &po, &plan), LOOM_OK);
    int found = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++) {
        loom_node_explain e = {.struct_size = sizeof e};
        CU_ASSERT_EQUAL_FATAL(loom_plan_explain(plan, i, &e), LOOM_OK);
        if (strcmp(e.op, "MatMul") != 0)
            continue;
        found = 1;
        CU_ASSERT_STRING_EQUAL(e.cost_source, "calibration");
        CU_ASSERT_DOUBLE_EQUAL(e.cost_s[fd], measured, 1e-12);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.reason, "cost from measurement (0.624 ms"));
        CU_ASSERT_PTR_NOT_NULL(strstr(e.reason, "was 20x off"));
    }
    CU_ASSERT(found);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    loom_runtime_destroy(r);
    fake.estimate_s = -1;
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"roofline_matches_hand_computation", test_roofline_matches_hand_computation},
        {"fit_line_minimises_relative_error", test_fit_line_minimises_relative_error},
        {"class_fits_replace_the_roofline_where_measured",
         test_class_fits_replace_the_roofline_where_measured},
        {"signature_is_deterministic_text", test_signature_is_deterministic_text},
        {"history_median_used_after_three_samples", test_history_median_used_after_three_samples},
        {"history_and_profiles_round_trip_through_the_cache",
         test_history_and_profiles_round_trip_through_the_cache},
        {"corrupt_cache_files_are_reported_and_ignored",
         test_corrupt_cache_files_are_reported_and_ignored},
        {"damaged_cache_files_are_said_once_and_quarantined",
         test_damaged_cache_files_are_said_once_and_quarantined},
        {"poisoned_cache_entries_are_dropped_and_the_file_rewritten",
         test_poisoned_cache_entries_are_dropped_and_the_file_rewritten},
        {"observation_far_off_the_prediction_is_warned_once_and_not_learned",
         test_observation_far_off_the_prediction_is_warned_once_and_not_learned},
        {"quick_calibration_of_cpu_gives_positive_finite_figures",
         test_quick_calibration_of_cpu_gives_positive_finite_figures},
        {"links_between_host_visible_memories_are_free",
         test_links_between_host_visible_memories_are_free},
        {"run_timeline_feeds_the_history", test_run_timeline_feeds_the_history},
        {"robust_median_and_error_stats", test_robust_median_and_error_stats},
        {"without_cache_folder_nothing_persists", test_without_cache_folder_nothing_persists},
        {"profile_key_includes_what_changes_its_meaning",
         test_profile_key_includes_what_changes_its_meaning},
        {"measurement_beats_an_estimate_twenty_times_off",
         test_measurement_beats_an_estimate_twenty_times_off},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"cost", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
