/*
 * Tests of the npu-sim plugin (argv[1]: the path of loom-npu-sim.so). Two suites:
 *  - "npu_sim_table": the plugin's table called directly after dlopen, as the loader would:
 *    refusal of another ABI major, supports() reasons, the roofline estimate, device facts,
 *    and kernels on hand-made node descriptors;
 *  - "npu_sim_runtime": the plugin loaded through the public API (plugin_paths), plans on
 *    "npu-sim" in fp16 and int8 against naive f32 references, the precision rule (strict plans
 *    fail naming the reason, others fall back to cpu:0), and a bad profile refused with a
 *    message naming the file.
 * References are naive loops written here, never the code under test.
 */
#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *plugin_path;
static void *handle;
static loom_backend_query_fn query;
static char logged[1024];

static void test_log(void *ctx, loom_log_level level, const char *message)
{
    (void)ctx;
    (void)level;
    snprintf(logged, sizeof logged, "%s", message);
}

static const loom_host host = {LOOM_ABI_VERSION, sizeof(loom_host), NULL, test_log};

static int contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

static uint32_t rng = 12345u;
static float frand(void) /* uniform in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / (float)(1u << 23) - 1.0f;
}

/* A value on the int8 grid of scale 1/127: k/127, k in [-127, 127]. */
static float grid(void)
{
    rng = rng * 1664525u + 1013904223u;
    return (float)((int)(rng >> 8) % 255 - 127) / 127.0f;
}

static int is_fp16_value(float v)
{
    /* exactly representable in fp16 (normal range): at most 11 significant bits */
    if (v == 0 || !isfinite(v))
        return 1;
    int e;
    float m = frexpf(fabsf(v), &e);
    if (e < -13)
        return 1; /* subnormal territory: not checked */
    float scaled = ldexpf(m, 11);
    return scaled == floorf(scaled);
}

/* ---- naive references (NCHW, group 1) ---------------------------------------------------- */

static void ref_conv(const float *x, int64_t N, int64_t C, int64_t H, int64_t W, const float *w,
                     int64_t M, int64_t KH, int64_t KW, const float *b, int64_t pad, int64_t st,
                     float *y, int64_t OH, int64_t OW)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double acc = b ? b[m] : 0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t i = 0; i < KH; i++)
                            for (int64_t j = 0; j < KW; j++) {
                                int64_t ih = oh * st - pad + i, iw = ow * st - pad + j;
                                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                    acc += (double)x[((n * C + c) * H + ih) * W + iw] *
                                           w[((m * C + c) * KH + i) * KW + j];
                            }
                    y[((n * M + m) * OH + oh) * OW + ow] = (float)acc;
                }
}

static void ref_matmul(const float *a, const float *b, int64_t M, int64_t K, int64_t N, float *y)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)a[m * K + k] * b[k * N + n];
            y[m * N + n] = (float)acc;
        }
}

static void ref_pool(const float *x, int64_t planes, int64_t H, int64_t W, int64_t k, int64_t s,
                     int64_t p, int is_max, float *y, int64_t OH, int64_t OW)
{
    for (int64_t q = 0; q < planes; q++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                double acc = is_max ? -INFINITY : 0;
                int cnt = 0;
                for (int64_t i = 0; i < k; i++)
                    for (int64_t j = 0; j < k; j++) {
                        int64_t ih = oh * s - p + i, iw = ow * s - p + j;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                            continue;
                        double v = x[(q * H + ih) * W + iw];
                        cnt++;
                        acc = is_max ? (v > acc ? v : acc) : acc + v;
                    }
                y[(q * OH + oh) * OW + ow] = (float)(is_max ? acc : acc / cnt);
            }
}

/* Largest |got - want| / max(1, |want|) over N values. */
static double max_rel_err(const float *got, const float *want, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]) / fmax(1.0, fabs((double)want[i]));
        if (!(d <= worst))
            worst = d;
    }
    return worst;
}

/* ---- suite 1: the table, directly ---------------------------------------------------------- */

static const loom_backend *table;

static int table_init(void)
{
    handle = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        fprintf(stderr, "dlopen %s: %s\n", plugin_path, dlerror());
        return 1;
    }
    *(void **)&query = dlsym(handle, LOOM_BACKEND_QUERY_SYMBOL);
    if (!query)
        return 1;
    unsetenv("LOOM_NPU_SIM_PROFILE");
    table = query(LOOM_ABI_VERSION, &host);
    return table ? 0 : 1;
}

static int table_clean(void)
{
    if (table && table->shutdown)
        table->shutdown(table->ctx);
    table = NULL;
    return 0;
}

/* A node descriptor over caller-owned arrays. */
typedef struct desc_buf {
    loom_node_desc d;
    loom_tensor_desc in[4], out[1];
    const void *consts[4];
    loom_attr attrs[8];
} desc_buf;

static void tdesc(loom_tensor_desc *t, loom_dtype dt, uint32_t rank, const int64_t *dims)
{
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->rank = rank;
    for (uint32_t i = 0; i < rank; i++)
        t->dims[i] = dims[i];
}

static void desc_init(desc_buf *b, loom_op_id op, const char *op_name, uint32_t n_in,
                      uint32_t precision)
{
    memset(b, 0, sizeof *b);
    b->d.abi_version = LOOM_ABI_VERSION;
    b->d.struct_size = sizeof b->d;
    b->d.op = op;
    b->d.op_name = op_name;
    b->d.name = "n";
    b->d.n_inputs = n_in;
    b->d.n_outputs = 1;
    b->d.inputs = b->in;
    b->d.outputs = b->out;
    b->d.input_constants = b->consts;
    b->d.attrs = b->attrs;
    b->d.precision = precision;
}

static void test_refuses_other_abi_major(void)
{
    logged[0] = '\0';
    CU_ASSERT_PTR_NULL(query((99u << 16) | 0u, &host));
    CU_ASSERT(contains(logged, "ABI"));
}

static void test_device_facts_come_from_default_profile(void)
{
    CU_ASSERT_EQUAL(table->device_count(table->ctx), 1);
    CU_ASSERT_STRING_EQUAL(table->name, "npu-sim");
    loom_device_info info;
    memset(&info, 0, sizeof info);
    info.abi_version = LOOM_ABI_VERSION;
    info.struct_size = sizeof info;
    CU_ASSERT_EQUAL(table->device_info(table->ctx, 0, &info), LOOM_OK);
    CU_ASSERT_EQUAL(info.kind, LOOM_DEVICE_NPU);
    CU_ASSERT_EQUAL(info.host_visible, 1);
    CU_ASSERT_EQUAL(info.memory_bytes, UINT64_C(1024) << 20);
    CU_ASSERT_DOUBLE_EQUAL(info.peak_flops_f32, 5e12, 1);
    CU_ASSERT_DOUBLE_EQUAL(info.mem_bandwidth, 40e9, 1);
    CU_ASSERT_DOUBLE_EQUAL(info.launch_latency_s, 20e-6, 1e-12);
    CU_ASSERT(contains(info.name, "edge-npu-10tops"));
    CU_ASSERT_EQUAL(table->device_info(table->ctx, 1, &info), LOOM_ERR_INVALID_ARGUMENT);
}

static void test_supports_gives_reasons(void)
{
    char why[256];
    desc_buf b;
    int64_t d2[2] = {4, 8}, w2[2] = {8, 3}, o2[2] = {4, 3};
    desc_init(&b, LOOM_OP_SOFTMAX, "Softmax", 1, LOOM_PRECISION_F16);
    tdesc(&b.in[0], LOOM_DTYPE_F32, 2, d2);
    tdesc(&b.out[0], LOOM_DTYPE_F32, 2, d2);
    CU_ASSERT_FALSE(table->supports(table->ctx, 0, &b.d, why, sizeof why));
    CU_ASSERT_STRING_EQUAL(why, "npu-sim: Softmax is not supported");

    desc_init(&b, LOOM_OP_MATMUL, "MatMul", 2, LOOM_PRECISION_F32);
    tdesc(&b.in[0], LOOM_DTYPE_F32, 2, d2);
    tdesc(&b.in[1], LOOM_DTYPE_F32, 2, w2);
    tdesc(&b.out[0], LOOM_DTYPE_F32, 2, o2);
    CU_ASSERT_FALSE(table->supports(table->ctx, 0, &b.d, why, sizeof why));
    CU_ASSERT_STRING_EQUAL(why, "npu-sim: float32 MatMul needs --precision fp16 or int8");
    /* a host of ABI 0.1 has no precision field: f32 is then never claimed */
    b.d.precision = LOOM_PRECISION_F16;
    b.d.struct_size = (uint32_t)offsetof(loom_node_desc, precision);
    CU_ASSERT_FALSE(table->supports(table->ctx, 0, &b.d, why, sizeof why));
    b.d.struct_size = sizeof b.d;
    CU_ASSERT_TRUE(table->supports(table->ctx, 0, &b.d, why, sizeof why));
    b.d.precision = LOOM_PRECISION_INT8;
    CU_ASSERT_TRUE(table->supports(table->ctx, 0, &b.d, why, sizeof why));
    /* fp16 tensors need no precision hint */
    b.d.precision = LOOM_PRECISION_F32;
    tdesc(&b.in[0], LOOM_DTYPE_F16, 2, d2);
    tdesc(&b.in[1], LOOM_DTYPE_F16, 2, w2);
    tdesc(&b.out[0], LOOM_DTYPE_F16, 2, o2);
    CU_ASSERT_TRUE(table->supports(table->ctx, 0, &b.d, why, sizeof why));
    /* rank 5 */
    int64_t d5[5] = {1, 1, 1, 2, 2};
    desc_init(&b, LOOM_OP_RELU, "Relu", 1, LOOM_PRECISION_F16);
    tdesc(&b.in[0], LOOM_DTYPE_F32, 5, d5);
    tdesc(&b.out[0], LOOM_DTYPE_F32, 5, d5);
    CU_ASSERT_FALSE(table->supports(table->ctx, 0, &b.d, why, sizeof why));
    CU_ASSERT(contains(why, "rank 5"));
}

static void test_estimate_is_roofline(void)
{
    desc_buf b;
    int64_t d[2] = {256, 256};
    desc_init(&b, LOOM_OP_MATMUL, "MatMul", 2, LOOM_PRECISION_F16);
    tdesc(&b.in[0], LOOM_DTYPE_F32, 2, d);
    tdesc(&b.in[1], LOOM_DTYPE_F32, 2, d);
    tdesc(&b.out[0], LOOM_DTYPE_F32, 2, d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(table->estimate);
    /* fp16: 2*256^3 flops / 5e12 = 6.7 us; 3 * 256^2 * 2 bytes / 40e9 = 9.8 us; + 20 us */
    double want = fmax(2.0 * 256 * 256 * 256 / 5e12, 3.0 * 256 * 256 * 2 / 40e9) + 20e-6;
    CU_ASSERT_DOUBLE_EQUAL(table->estimate(table->ctx, 0, &b.d), want, want * 1e-9);
    /* int8: peak 10e12, one byte per element */
    b.d.precision = LOOM_PRECISION_INT8;
    want = fmax(2.0 * 256 * 256 * 256 / 10e12, 3.0 * 256 * 256 / 40e9) + 20e-6;
    CU_ASSERT_DOUBLE_EQUAL(table->estimate(table->ctx, 0, &b.d), want, want * 1e-9);
    /* nothing to say about a node it does not take */
    b.d.precision = LOOM_PRECISION_F32;
    CU_ASSERT(table->estimate(table->ctx, 0, &b.d) < 0);
}

/* Prepare, run once with scratch, release. */
static loom_status run_desc(const loom_node_desc *d, const void *const *in, void *out,
                            char *err, size_t err_len)
{
    void *k = NULL;
    size_t scratch = 0;
    loom_status st = table->prepare(table->ctx, 0, d, &k, &scratch, err, err_len);
    if (st != LOOM_OK)
        return st;
    void *s = NULL;
    if (scratch && posix_memalign(&s, 64, scratch) != 0)
        return LOOM_ERR_OUT_OF_MEMORY;
    void *outs[1] = {out};
    loom_exec_args args = {sizeof args, in, outs, s};
    st = table->execute(table->ctx, 0, k, &args, err, err_len);
    free(s);
    table->release_kernel(table->ctx, k);
    return st;
}

static void test_table_gemm_trans_b_fp16_and_clip(void)
{
    enum { M = 5, K = 33, N = 7 };
    float a[M * K], bt[N * K], c[N], y[M * N], ref[M * N], bn[K * N];
    for (int i = 0; i < M * K; i++)
        a[i] = frand();
    for (int i = 0; i < N * K; i++)
        bt[i] = frand();
    for (int i = 0; i < N; i++)
        c[i] = frand();
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++)
            bn[k * N + n] = bt[n * K + k];
    ref_matmul(a, bn, M, K, N, ref);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++)
            ref[m * N + n] = 0.5f * ref[m * N + n] + 2.0f * c[n];
    desc_buf b;
    int64_t da[2] = {M, K}, db[2] = {N, K}, dc[1] = {N}, dy[2] = {M, N};
    desc_init(&b, LOOM_OP_GEMM, "Gemm", 3, LOOM_PRECISION_F16);
    tdesc(&b.in[0], LOOM_DTYPE_F32, 2, da);
    tdesc(&b.in[1], LOOM_DTYPE_F32, 2, db);
    tdesc(&b.in[2], LOOM_DTYPE_F32, 1, dc);
    tdesc(&b.out[0], LOOM_DTYPE_F32, 2, dy);
    b.attrs[0] = (loom_attr){.name = "alpha", .kind = LOOM_ATTR_FLOAT, .f = 0.5f};
    b.attrs[1] = (loom_attr){.name = "beta", .kind = LOOM_ATTR_FLOAT, .f = 2.0f};
    b.attrs[2] = (loom_attr){.name = "transA", .kind = LOOM_ATTR_INT, .i = 0};
    b.attrs[3] = (loom_attr){.name = "transB", .kind = LOOM_ATTR_INT, .i = 1};
    b.d.n_attrs = 4;
    const void *in[3] = {a, bt, c};
    char err[256] = "";
    CU_ASSERT_EQUAL_FATAL(run_desc(&b.d, in, y, err, sizeof err), LOOM_OK);
    CU_ASSERT(max_rel_err(y, ref, M * N) < 1e-2);
    int all_fp16 = 1;
    for (int i = 0; i < M * N; i++)
        all_fp16 &= is_fp16_value(y[i]);
    CU_ASSERT(all_fp16);
    /* int8 with B a constant (per-channel weights), transposed */
    b.d.precision = LOOM_PRECISION_INT8;
    b.consts[1] = bt;
    CU_ASSERT_EQUAL_FATAL(run_desc(&b.d, in, y, err, sizeof err), LOOM_OK);
    CU_ASSERT(max_rel_err(y, ref, M * N) < 0.1);

    /* Clip in fp16 */
    float x[16], cy[16];
    int64_t dx[1] = {16};
    for (int i = 0; i < 16; i++)
        x[i] = 3 * frand();
    desc_init(&b, LOOM_OP_CLIP, "Clip", 1, LOOM_PRECISION_F16);
    tdesc(&b.in[0], LOOM_DTYPE_F32, 1, dx);
    tdesc(&b.out[0], LOOM_DTYPE_F32, 1, dx);
    b.attrs[0] = (loom_attr){.name = "min", .kind = LOOM_ATTR_FLOAT, .f = -1.0f};
    b.attrs[1] = (loom_attr){.name = "max", .kind = LOOM_ATTR_FLOAT, .f = 0.5f};
    b.d.n_attrs = 2;
    const void *cin[1] = {x};
    CU_ASSERT_EQUAL_FATAL(run_desc(&b.d, cin, cy, err, sizeof err), LOOM_OK);
    for (int i = 0; i < 16; i++)
        CU_ASSERT(fabsf(cy[i] - fminf(fmaxf(x[i], -1.0f), 0.5f)) < 2e-3f);
}

static void test_table_fp16_tensors_convert(void)
{
    /* Relu on float16 tensors: 1.5 -> 1.5 (0x3e00), -2 -> 0, 65504 stays */
    uint16_t x[3] = {0x3e00, 0xc000, 0x7bff}, y[3] = {0, 1, 2};
    int64_t d[1] = {3};
    desc_buf b;
    desc_init(&b, LOOM_OP_RELU, "Relu", 1, LOOM_PRECISION_F32);
    tdesc(&b.in[0], LOOM_DTYPE_F16, 1, d);
    tdesc(&b.out[0], LOOM_DTYPE_F16, 1, d);
    const void *in[1] = {x};
    char err[256];
    CU_ASSERT_EQUAL_FATAL(run_desc(&b.d, in, y, err, sizeof err), LOOM_OK);
    CU_ASSERT_EQUAL(y[0], 0x3e00);
    CU_ASSERT_EQUAL(y[1], 0x0000);
    CU_ASSERT_EQUAL(y[2], 0x7bff);
    /* f32 in fp16 mode: 1 + 2^-12 rounds (to even) to 1; 70000 overflows to +inf */
    float fx[3] = {1.0f + 0x1p-12f, 70000.0f, 1.0f + 3 * 0x1p-12f}, fy[3];
    desc_init(&b, LOOM_OP_RELU, "Relu", 1, LOOM_PRECISION_F16);
    tdesc(&b.in[0], LOOM_DTYPE_F32, 1, d);
    tdesc(&b.out[0], LOOM_DTYPE_F32, 1, d);
    const void *fin[1] = {fx};
    CU_ASSERT_EQUAL_FATAL(run_desc(&b.d, fin, fy, err, sizeof err), LOOM_OK);
    CU_ASSERT_EQUAL(fy[0], 1.0f);
    CU_ASSERT(isinf(fy[1]));
    CU_ASSERT_EQUAL(fy[2], 1.0f + 0x1p-10f);
}

/* ---- suite 2: through the runtime ---------------------------------------------------------- */

static loom_runtime *rt;

static loom_status make_runtime(loom_runtime **out)
{
    const char *paths[1] = {plugin_path};
    loom_runtime_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.cpu_threads = 2;
    o.plugin_paths = paths;
    o.n_plugin_paths = 1;
    o.no_default_plugins = 1;
    return loom_runtime_create(&o, out);
}

static int find_device(loom_runtime *r, const char *want, loom_device_info *info)
{
    for (size_t i = 0; i < loom_runtime_device_count(r); i++) {
        char id[64];
        loom_device_info tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.abi_version = LOOM_ABI_VERSION;
        tmp.struct_size = sizeof tmp;
        if (loom_runtime_device(r, i, id, sizeof id, &tmp) == LOOM_OK && strcmp(id, want) == 0) {
            if (info)
                *info = tmp;
            return 1;
        }
    }
    return 0;
}

static int runtime_init(void)
{
    unsetenv("LOOM_NPU_SIM_PROFILE");
    if (make_runtime(&rt) != LOOM_OK) {
        fprintf(stderr, "runtime: %s\n", loom_last_error());
        return 1;
    }
    return 0;
}

static int runtime_clean(void)
{
    loom_runtime_destroy(rt);
    rt = NULL;
    return 0;
}

static void test_runtime_lists_npu_device(void)
{
    loom_device_info info;
    int found = find_device(rt, "npu-sim:0", &info);
    if (!found)
        for (size_t i = 0; i < loom_runtime_message_count(rt); i++)
            fprintf(stderr, "runtime message: %s\n", loom_runtime_message(rt, i));
    CU_ASSERT_TRUE_FATAL(found);
    CU_ASSERT_EQUAL(info.kind, LOOM_DEVICE_NPU);
    CU_ASSERT_EQUAL(info.memory_bytes, UINT64_C(1024) << 20);
    CU_ASSERT(find_device(rt, "cpu:0", NULL));
}

/* The small CNN + MLP the runtime tests place on the NPU. */
enum { CN = 1, CC = 3, CH = 8, CW = 8, CM = 4, F_IN = 64, F_OUT = 16, F_ROWS = 8, FC2 = 5 };
typedef struct cnn_data {
    float x[CN * CC * CH * CW], w[CM * CC * 9], b[CM], w2[CM * FC2];
    float a[F_ROWS * F_IN], wf[F_IN * F_OUT];
} cnn_data;

static void cnn_fill(cnn_data *d, int on_grid)
{
    float (*gen)(void) = on_grid ? grid : frand;
    for (size_t i = 0; i < sizeof d->x / sizeof *d->x; i++)
        d->x[i] = gen();
    for (size_t i = 0; i < sizeof d->w / sizeof *d->w; i++)
        d->w[i] = gen();
    for (size_t i = 0; i < sizeof d->b / sizeof *d->b; i++)
        d->b[i] = on_grid ? 0 : gen();
    for (size_t i = 0; i < sizeof d->w2 / sizeof *d->w2; i++)
        d->w2[i] = gen();
    for (size_t i = 0; i < sizeof d->a / sizeof *d->a; i++)
        d->a[i] = gen();
    for (size_t i = 0; i < sizeof d->wf / sizeof *d->wf; i++)
        d->wf[i] = gen();
    if (on_grid) { /* max-abs exactly 1 in each tensor and each weight channel */
        d->x[5] = 1.0f;
        d->a[3] = -1.0f;
        for (int m = 0; m < CM; m++)
            d->w[m * CC * 9 + 4] = 1.0f;
        for (int n = 0; n < F_OUT; n++)
            d->wf[n] = -1.0f;
    }
}

/* Outputs: r = relu(conv(x)) [1,4,8,8]; s = maxpool2(r) + avgpool2(r) [1,4,4,4];
 * m = matmul(flatten(gap(s)), w2) [1,5]; f = matmul(a, wf) [8,16]; c = conv(x) [1,4,8,8]
 * (the Relu's input, also an output). */
static loom_graph *cnn_graph(const cnn_data *d)
{
    loom_graph *g = loom_graph_create("npu_cnn");
    int64_t dx[4] = {CN, CC, CH, CW}, dw[4] = {CM, CC, 3, 3}, db[1] = {CM}, dw2[2] = {CM, FC2};
    int64_t da[2] = {F_ROWS, F_IN}, dwf[2] = {F_IN, F_OUT};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 4, dx);
    loom_value a = loom_input(g, "a", LOOM_DTYPE_F32, 2, da);
    loom_value w = loom_constant(g, "w", LOOM_DTYPE_F32, 4, dw, d->w);
    loom_value b = loom_constant(g, "b", LOOM_DTYPE_F32, 1, db, d->b);
    loom_value w2 = loom_constant(g, "w2", LOOM_DTYPE_F32, 2, dw2, d->w2);
    loom_value wf = loom_constant(g, "wf", LOOM_DTYPE_F32, 2, dwf, d->wf);
    loom_window_params cp = {.n_spatial = 2, .pads = {1, 1, 1, 1}};
    loom_value c = loom_conv(g, x, w, b, &cp);
    loom_value r = loom_relu(g, c);
    loom_window_params pp = {.n_spatial = 2, .kernel_shape = {2, 2}, .strides = {2, 2}};
    loom_value s = loom_add(g, loom_max_pool(g, r, &pp), loom_average_pool(g, r, &pp));
    loom_value m = loom_matmul(g, loom_flatten(g, loom_global_average_pool(g, s), 1), w2);
    loom_value f = loom_matmul(g, a, wf);
    loom_output(g, r, "r");
    loom_output(g, s, "s");
    loom_output(g, m, "m");
    loom_output(g, f, "f");
    loom_output(g, c, "c");
    if (loom_graph_check(g) != LOOM_OK) {
        fprintf(stderr, "cnn_graph: %s\n", loom_last_error());
        loom_graph_destroy(g);
        return NULL;
    }
    return g;
}

typedef struct cnn_ref {
    float r[CM * CH * CW], s[CM * 16], m[FC2], f[F_ROWS * F_OUT], c[CM * CH * CW];
} cnn_ref;

static void cnn_reference(const cnn_data *d, cnn_ref *o)
{
    ref_conv(d->x, CN, CC, CH, CW, d->w, CM, 3, 3, d->b, 1, 1, o->c, CH, CW);
    for (int i = 0; i < CM * CH * CW; i++)
        o->r[i] = o->c[i] > 0 ? o->c[i] : 0;
    float mp[CM * 16], ap[CM * 16], gap[CM];
    ref_pool(o->r, CM, CH, CW, 2, 2, 0, 1, mp, 4, 4);
    ref_pool(o->r, CM, CH, CW, 2, 2, 0, 0, ap, 4, 4);
    for (int i = 0; i < CM * 16; i++)
        o->s[i] = mp[i] + ap[i];
    for (int c = 0; c < CM; c++) {
        double acc = 0;
        for (int i = 0; i < 16; i++)
            acc += o->s[c * 16 + i];
        gap[c] = (float)(acc / 16);
    }
    ref_matmul(gap, d->w2, 1, CM, FC2, o->m);
    ref_matmul(d->a, d->wf, F_ROWS, F_IN, F_OUT, o->f);
}

/* Plan the CNN on DEVICE at PRECISION and run it; outputs into O. Returns the plan status. */
static loom_status cnn_run(const cnn_data *d, const char *device, uint32_t precision, int strict,
                           cnn_ref *o, char *placed, size_t placed_len)
{
    loom_graph *g = cnn_graph(d);
    if (!g)
        return LOOM_ERR_INTERNAL;
    loom_plan_options po;
    memset(&po, 0, sizeof po);
    po.struct_size = sizeof po;
    po.device = device;
    po.strict = strict;
    po.precision = precision;
    loom_plan *plan = NULL;
    loom_status st = loom_plan_create(rt, g, &po, &plan);
    loom_graph_destroy(g);
    if (st != LOOM_OK)
        return st;
    /* every node's device, as "dev,dev,..." */
    size_t len = 0;
    placed[0] = '\0';
    for (size_t i = 0; i < loom_plan_node_count(plan) && len < placed_len; i++)
        len += (size_t)snprintf(placed + len, placed_len - len, "%s%s", i ? "," : "",
                                loom_plan_node_device(plan, i));
    int64_t dx[4] = {CN, CC, CH, CW}, da[2] = {F_ROWS, F_IN};
    loom_tensor *in[2] = {NULL, NULL}, *out[5] = {NULL, NULL, NULL, NULL, NULL};
    loom_tensor_wrap(LOOM_DTYPE_F32, 4, dx, (void *)d->x, &in[0]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, da, (void *)d->a, &in[1]);
    st = loom_plan_make_outputs(plan, out, 5);
    if (st == LOOM_OK)
        st = loom_plan_run(plan, (const loom_tensor *const *)in, 2, out, 5, NULL);
    if (st == LOOM_OK) {
        memcpy(o->r, loom_tensor_data(out[0]), sizeof o->r);
        memcpy(o->s, loom_tensor_data(out[1]), sizeof o->s);
        memcpy(o->m, loom_tensor_data(out[2]), sizeof o->m);
        memcpy(o->f, loom_tensor_data(out[3]), sizeof o->f);
        memcpy(o->c, loom_tensor_data(out[4]), sizeof o->c);
    } else {
        fprintf(stderr, "cnn_run: %s\n", loom_last_error());
    }
    for (int i = 0; i < 5; i++)
        loom_tensor_destroy(out[i]);
    loom_tensor_destroy(in[0]);
    loom_tensor_destroy(in[1]);
    loom_plan_destroy(plan);
    return st;
}

static int only_device(const char *placed, const char *dev)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", placed);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (strcmp(t, dev) != 0)
            return 0;
    return placed[0] != '\0';
}

static void test_fp16_plan_matches_reference(void)
{
    cnn_data d;
    cnn_ref want, got;
    char placed[1024];
    cnn_fill(&d, 0);
    cnn_reference(&d, &want);
    CU_ASSERT_EQUAL_FATAL(cnn_run(&d, "npu-sim", LOOM_PRECISION_F16, 1, &got, placed,
                                  sizeof placed), LOOM_OK);
    CU_ASSERT(only_device(placed, "npu-sim:0"));
    CU_ASSERT(max_rel_err(got.r, want.r, sizeof want.r / sizeof *want.r) < 1e-2);
    CU_ASSERT(max_rel_err(got.s, want.s, sizeof want.s / sizeof *want.s) < 1e-2);
    CU_ASSERT(max_rel_err(got.m, want.m, sizeof want.m / sizeof *want.m) < 1e-2);
    CU_ASSERT(max_rel_err(got.f, want.f, sizeof want.f / sizeof *want.f) < 1e-2);
    /* the results went through fp16: each is an fp16 value */
    int all_fp16 = 1;
    for (size_t i = 0; i < sizeof got.f / sizeof *got.f; i++)
        all_fp16 &= is_fp16_value(got.f[i]);
    for (size_t i = 0; i < sizeof got.r / sizeof *got.r; i++)
        all_fp16 &= is_fp16_value(got.r[i]);
    CU_ASSERT(all_fp16);
}

static void test_int8_plan_matches_reference(void)
{
    cnn_data d;
    cnn_ref want, got;
    char placed[1024];
    cnn_fill(&d, 0);
    cnn_reference(&d, &want);
    CU_ASSERT_EQUAL_FATAL(cnn_run(&d, "npu-sim", LOOM_PRECISION_INT8, 1, &got, placed,
                                  sizeof placed), LOOM_OK);
    CU_ASSERT(only_device(placed, "npu-sim:0"));
    /* int8 tolerances: a few quantisation steps (1/127 of the max-abs) per reduction */
    CU_ASSERT(max_rel_err(got.r, want.r, sizeof want.r / sizeof *want.r) < 0.05);
    CU_ASSERT(max_rel_err(got.s, want.s, sizeof want.s / sizeof *want.s) < 0.08);
    CU_ASSERT(max_rel_err(got.m, want.m, sizeof want.m / sizeof *want.m) < 0.08);
    CU_ASSERT(max_rel_err(got.f, want.f, sizeof want.f / sizeof *want.f) < 0.1);
}

static void test_int8_plan_is_exact_on_the_grid(void)
{
    /* Values that are multiples of max-abs/127 quantise without error: Conv and MatMul then
     * equal the f32 reference up to f32 rounding, which pins down the scales and the int32
     * accumulation. */
    cnn_data d;
    cnn_ref want, got;
    char placed[1024];
    cnn_fill(&d, 1);
    cnn_reference(&d, &want);
    CU_ASSERT_EQUAL_FATAL(cnn_run(&d, "npu-sim", LOOM_PRECISION_INT8, 1, &got, placed,
                                  sizeof placed), LOOM_OK);
    CU_ASSERT(max_rel_err(got.c, want.c, sizeof want.c / sizeof *want.c) < 1e-5);
    CU_ASSERT(max_rel_err(got.f, want.f, sizeof want.f / sizeof *want.f) < 1e-5);
}

/* ---- int8 scales calibrated from sample inputs ---- */
enum { CAL_SETS = 4 };

/* c = conv(x, w, b), f = matmul(a, wf) planned strictly on npu-sim in int8, calibrated with
 * CAL_SETS sets (x then a per set; a set's a may have shape A_DIMS); runs on X, A. */
static loom_status cal_run(const cnn_data *d, float (*cal_x)[CN * CC * CH * CW],
                           float (*cal_a)[F_ROWS * F_IN], const int64_t *a_dims, const float *x,
                           const float *a, cnn_ref *o)
{
    loom_graph *g = loom_graph_create("npu_cal");
    int64_t dx[4] = {CN, CC, CH, CW}, dw[4] = {CM, CC, 3, 3}, db[1] = {CM};
    int64_t da[2] = {F_ROWS, F_IN}, dwf[2] = {F_IN, F_OUT};
    loom_value vx = loom_input(g, "x", LOOM_DTYPE_F32, 4, dx);
    loom_value va = loom_input(g, "a", LOOM_DTYPE_F32, 2, da);
    loom_value w = loom_constant(g, "w", LOOM_DTYPE_F32, 4, dw, d->w);
    loom_value b = loom_constant(g, "b", LOOM_DTYPE_F32, 1, db, d->b);
    loom_value wf = loom_constant(g, "wf", LOOM_DTYPE_F32, 2, dwf, d->wf);
    loom_window_params cp = {.n_spatial = 2, .pads = {1, 1, 1, 1}};
    loom_output(g, loom_conv(g, vx, w, b, &cp), "c");
    loom_output(g, loom_matmul(g, va, wf), "f");
    if (loom_graph_check(g) != LOOM_OK) {
        fprintf(stderr, "cal_run: %s\n", loom_last_error());
        loom_graph_destroy(g);
        return LOOM_ERR_INTERNAL;
    }
    loom_tensor *sets[2 * CAL_SETS] = {NULL};
    for (int s = 0; s < CAL_SETS; s++) {
        loom_tensor_wrap(LOOM_DTYPE_F32, 4, dx, cal_x[s], &sets[2 * s]);
        loom_tensor_wrap(LOOM_DTYPE_F32, 2, a_dims, cal_a[s], &sets[2 * s + 1]);
    }
    loom_plan_options po;
    memset(&po, 0, sizeof po);
    po.struct_size = sizeof po;
    po.device = "npu-sim";
    po.strict = 1;
    po.precision = LOOM_PRECISION_INT8;
    po.calibration_inputs = (const loom_tensor *const *)sets;
    po.n_calibration_sets = CAL_SETS;
    loom_plan *plan = NULL;
    loom_status st = loom_plan_create(rt, g, &po, &plan);
    loom_graph_destroy(g);
    for (int i = 0; i < 2 * CAL_SETS; i++)
        loom_tensor_destroy(sets[i]);
    if (st != LOOM_OK)
        return st;
    loom_tensor *in[2] = {NULL, NULL}, *out[2] = {NULL, NULL};
    loom_tensor_wrap(LOOM_DTYPE_F32, 4, dx, (void *)x, &in[0]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, da, (void *)a, &in[1]);
    st = loom_plan_make_outputs(plan, out, 2);
    if (st == LOOM_OK)
        st = loom_plan_run(plan, (const loom_tensor *const *)in, 2, out, 2, NULL);
    if (st == LOOM_OK) {
        memcpy(o->c, loom_tensor_data(out[0]), sizeof o->c);
        memcpy(o->f, loom_tensor_data(out[1]), sizeof o->f);
    } else {
        fprintf(stderr, "cal_run: %s\n", loom_last_error());
    }
    for (int i = 0; i < 2; i++) {
        loom_tensor_destroy(out[i]);
        loom_tensor_destroy(in[i]);
    }
    loom_plan_destroy(plan);
    return st;
}

static void test_int8_calibrated_scales(void)
{
    static cnn_data d;
    static float cx[CAL_SETS][CN * CC * CH * CW], ca[CAL_SETS][F_ROWS * F_IN];
    float mx = 0, ma = 0;
    cnn_fill(&d, 0);
    for (int s = 0; s < CAL_SETS; s++) {
        for (int i = 0; i < CN * CC * CH * CW; i++)
            mx = fmaxf(mx, fabsf(cx[s][i] = frand()));
        for (int i = 0; i < F_ROWS * F_IN; i++)
            ma = fmaxf(ma, fabsf(ca[s][i] = frand()));
    }
    int64_t da[2] = {F_ROWS, F_IN};
    cnn_ref want, got;

    /* (a) inputs within the calibrated range: int8 tolerance of the f32 reference */
    CU_ASSERT_EQUAL_FATAL(cal_run(&d, cx, ca, da, d.x, d.a, &got), LOOM_OK);
    ref_conv(d.x, CN, CC, CH, CW, d.w, CM, 3, 3, d.b, 1, 1, want.c, CH, CW);
    ref_matmul(d.a, d.wf, F_ROWS, F_IN, F_OUT, want.f);
    CU_ASSERT(max_rel_err(got.c, want.c, sizeof want.c / sizeof *want.c) < 0.05);
    CU_ASSERT(max_rel_err(got.f, want.f, sizeof want.f / sizeof *want.f) < 0.1);

    /* (b) inputs 4x larger than anything calibrated: the static scales saturate them at the
     * calibrated max-abs, so the results are those of the clipped inputs (dynamic scales would
     * follow the larger inputs and match the unclipped reference) */
    static float bx[CN * CC * CH * CW], ba[F_ROWS * F_IN], clx[CN * CC * CH * CW],
        cla[F_ROWS * F_IN];
    for (int i = 0; i < CN * CC * CH * CW; i++) {
        bx[i] = 4 * d.x[i];
        clx[i] = fmaxf(-mx, fminf(mx, bx[i]));
    }
    for (int i = 0; i < F_ROWS * F_IN; i++) {
        ba[i] = 4 * d.a[i];
        cla[i] = fmaxf(-ma, fminf(ma, ba[i]));
    }
    CU_ASSERT_EQUAL_FATAL(cal_run(&d, cx, ca, da, bx, ba, &got), LOOM_OK);
    cnn_ref clipped, full;
    ref_conv(clx, CN, CC, CH, CW, d.w, CM, 3, 3, d.b, 1, 1, clipped.c, CH, CW);
    ref_matmul(cla, d.wf, F_ROWS, F_IN, F_OUT, clipped.f);
    ref_conv(bx, CN, CC, CH, CW, d.w, CM, 3, 3, d.b, 1, 1, full.c, CH, CW);
    ref_matmul(ba, d.wf, F_ROWS, F_IN, F_OUT, full.f);
    CU_ASSERT(max_rel_err(got.c, clipped.c, sizeof got.c / sizeof *got.c) < 0.05);
    CU_ASSERT(max_rel_err(got.f, clipped.f, sizeof got.f / sizeof *got.f) < 0.1);
    CU_ASSERT(max_rel_err(got.c, full.c, sizeof got.c / sizeof *got.c) > 0.3);
    CU_ASSERT(max_rel_err(got.f, full.f, sizeof got.f / sizeof *got.f) > 0.3);

    /* (c) a calibration set of the wrong shape fails plan creation naming the input */
    int64_t bad[2] = {F_ROWS, F_IN / 2};
    CU_ASSERT_EQUAL(cal_run(&d, cx, ca, bad, d.x, d.a, &got), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT(contains(loom_last_error(), "input 'a'"));
    CU_ASSERT(contains(loom_last_error(), "shape"));
}

static void test_f32_strict_plan_fails_naming_reason(void)
{
    cnn_data d;
    cnn_ref got;
    char placed[1024];
    cnn_fill(&d, 0);
    CU_ASSERT_EQUAL(cnn_run(&d, "npu-sim", LOOM_PRECISION_F32, 1, &got, placed, sizeof placed),
                    LOOM_ERR_UNSUPPORTED);
    CU_ASSERT(contains(loom_last_error(), "npu-sim: float32 Conv needs --precision fp16 or int8"));
}

static void test_f32_plan_falls_back_to_cpu(void)
{
    cnn_data d;
    cnn_ref want, got;
    char placed[1024];
    cnn_fill(&d, 0);
    cnn_reference(&d, &want);
    CU_ASSERT_EQUAL_FATAL(cnn_run(&d, "npu-sim", LOOM_PRECISION_F32, 0, &got, placed,
                                  sizeof placed), LOOM_OK);
    CU_ASSERT(only_device(placed, "cpu:0"));
    CU_ASSERT(max_rel_err(got.r, want.r, sizeof want.r / sizeof *want.r) < 1e-5);
    CU_ASSERT(max_rel_err(got.f, want.f, sizeof want.f / sizeof *want.f) < 1e-5);
}

static void test_unsupported_op_is_named(void)
{
    loom_graph *g = loom_graph_create("sm");
    int64_t dx[2] = {2, 8};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dx);
    loom_output(g, loom_softmax(g, x, 1), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options po;
    memset(&po, 0, sizeof po);
    po.struct_size = sizeof po;
    po.device = "npu-sim:0";
    po.strict = 1;
    po.precision = LOOM_PRECISION_F16;
    loom_plan *plan = NULL;
    CU_ASSERT_EQUAL(loom_plan_create(rt, g, &po, &plan), LOOM_ERR_UNSUPPORTED);
    CU_ASSERT(contains(loom_last_error(), "npu-sim: Softmax is not supported"));
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
}

static void test_quantize_dequantize_round_trip(void)
{
    enum { N = 32 };
    float x[N], scale = 0.05f, y[N];
    int8_t zp = 3;
    for (int i = 0; i < N; i++)
        x[i] = 8 * frand();
    x[0] = 1000.0f; /* saturates */
    x[1] = 0.025f;  /* a tie: rounds to even */
    loom_graph *g = loom_graph_create("qdq");
    int64_t dx[1] = {N}, one[1] = {1};
    loom_value in = loom_input(g, "x", LOOM_DTYPE_F32, 1, dx);
    loom_value s = loom_constant(g, "s", LOOM_DTYPE_F32, 1, one, &scale);
    loom_value z = loom_constant(g, "z", LOOM_DTYPE_I8, 1, one, &zp);
    loom_value q, dq;
    loom_value qin[3] = {in, s, z};
    CU_ASSERT_EQUAL(loom_graph_op(g, "QuantizeLinear", "q", qin, 3, NULL, 0, &q, 1), LOOM_OK);
    loom_value dqin[3] = {q, s, z};
    CU_ASSERT_EQUAL(loom_graph_op(g, "DequantizeLinear", "dq", dqin, 3, NULL, 0, &dq, 1),
                    LOOM_OK);
    loom_output(g, dq, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options po;
    memset(&po, 0, sizeof po);
    po.struct_size = sizeof po;
    po.device = "npu-sim";
    po.strict = 1;
    loom_plan *plan = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &po, &plan), LOOM_OK);
    loom_tensor *tin, *tout;
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, dx, x, &tin);
    loom_tensor_wrap(LOOM_DTYPE_F32, 1, dx, y, &tout);
    CU_ASSERT_EQUAL(loom_plan_run(plan, (const loom_tensor *const *)&tin, 1, &tout, 1, NULL),
                    LOOM_OK);
    for (int i = 0; i < N; i++) {
        float qv = nearbyintf(x[i] / scale) + zp;
        qv = fminf(fmaxf(qv, -128), 127);
        CU_ASSERT_EQUAL(y[i], (qv - zp) * scale);
    }
    CU_ASSERT_EQUAL(y[0], (127 - 3) * scale);
    loom_tensor_destroy(tin);
    loom_tensor_destroy(tout);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
}

/* Plan G strictly on npu-sim and run it on one input; returns the run status. */
static loom_status run_on_npu(loom_graph *g, loom_tensor *in, loom_tensor *out)
{
    loom_plan_options po;
    memset(&po, 0, sizeof po);
    po.struct_size = sizeof po;
    po.device = "npu-sim";
    po.strict = 1;
    loom_plan *plan = NULL;
    loom_status st = loom_plan_create(rt, g, &po, &plan);
    if (st == LOOM_OK)
        st = loom_plan_run(plan, (const loom_tensor *const *)&in, 1, &out, 1, NULL);
    if (st != LOOM_OK)
        fprintf(stderr, "run_on_npu: %s\n", loom_last_error());
    loom_plan_destroy(plan);
    return st;
}

static int32_t requant_ref(int32_t acc, float mult, int32_t zp, int32_t lo, int32_t hi)
{
    double v = nearbyint((double)acc * (double)mult) + zp;
    return v < lo ? lo : v > hi ? hi : (int32_t)v;
}

static void test_qlinear_matmul_matches_reference(void)
{
    enum { M = 3, K = 7, N = 4 };
    uint8_t a[M * K], y[M * N];
    int8_t b[K * N];
    float sa = 0.02f, sb[N] = {0.01f, 0.03f, 0.005f, 0.02f}, sy = 0.05f;
    uint8_t za = 120, zy = 128;
    int8_t zb = 0;
    for (int i = 0; i < M * K; i++)
        a[i] = (uint8_t)(rng = rng * 1664525u + 1013904223u, rng >> 24);
    for (int i = 0; i < K * N; i++)
        b[i] = (int8_t)(int)((rng = rng * 1664525u + 1013904223u, rng >> 24) - 128);
    loom_graph *g = loom_graph_create("qmm");
    int64_t da[2] = {M, K}, db[2] = {K, N}, one[1] = {1}, dn[1] = {N};
    loom_value in[8] = {
        loom_input(g, "a", LOOM_DTYPE_U8, 2, da),
        loom_constant(g, "sa", LOOM_DTYPE_F32, 1, one, &sa),
        loom_constant(g, "za", LOOM_DTYPE_U8, 1, one, &za),
        loom_constant(g, "b", LOOM_DTYPE_I8, 2, db, b),
        loom_constant(g, "sb", LOOM_DTYPE_F32, 1, dn, sb),
        loom_constant(g, "zb", LOOM_DTYPE_I8, 1, one, &zb),
        loom_constant(g, "sy", LOOM_DTYPE_F32, 1, one, &sy),
        loom_constant(g, "zy", LOOM_DTYPE_U8, 1, one, &zy),
    };
    loom_value out;
    CU_ASSERT_EQUAL(loom_graph_op(g, "QLinearMatMul", "qmm", in, 8, NULL, 0, &out, 1), LOOM_OK);
    loom_output(g, out, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    int64_t dy[2] = {M, N};
    loom_tensor *ta, *ty;
    loom_tensor_wrap(LOOM_DTYPE_U8, 2, da, a, &ta);
    loom_tensor_wrap(LOOM_DTYPE_U8, 2, dy, y, &ty);
    CU_ASSERT_EQUAL(run_on_npu(g, ta, ty), LOOM_OK);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            int32_t acc = 0;
            for (int k = 0; k < K; k++)
                acc += ((int32_t)a[m * K + k] - za) * ((int32_t)b[k * N + n] - zb);
            CU_ASSERT_EQUAL(y[m * N + n], requant_ref(acc, sa * sb[n] / sy, zy, 0, 255));
        }
    loom_tensor_destroy(ta);
    loom_tensor_destroy(ty);
    loom_graph_destroy(g);
}

static void test_qlinear_conv_matches_reference(void)
{
    enum { C = 2, H = 5, W = 5, M = 3 };
    int8_t x[C * H * W], w[M * C * 9], y[M * H * W];
    int32_t bias[M] = {100, -50, 0};
    float sx = 0.03f, sw[M] = {0.01f, 0.02f, 0.015f}, sy = 0.1f;
    int8_t zx = -3, zw = 0, zy = 5;
    for (int i = 0; i < C * H * W; i++)
        x[i] = (int8_t)(int)((rng = rng * 1664525u + 1013904223u, rng >> 24) - 128);
    for (int i = 0; i < M * C * 9; i++)
        w[i] = (int8_t)(int)((rng = rng * 1664525u + 1013904223u, rng >> 24) - 128);
    loom_graph *g = loom_graph_create("qconv");
    int64_t dx[4] = {1, C, H, W}, dw[4] = {M, C, 3, 3}, one[1] = {1}, dm[1] = {M};
    loom_value in[9] = {
        loom_input(g, "x", LOOM_DTYPE_I8, 4, dx),
        loom_constant(g, "sx", LOOM_DTYPE_F32, 1, one, &sx),
        loom_constant(g, "zx", LOOM_DTYPE_I8, 1, one, &zx),
        loom_constant(g, "w", LOOM_DTYPE_I8, 4, dw, w),
        loom_constant(g, "sw", LOOM_DTYPE_F32, 1, dm, sw),
        loom_constant(g, "zw", LOOM_DTYPE_I8, 1, one, &zw),
        loom_constant(g, "sy", LOOM_DTYPE_F32, 1, one, &sy),
        loom_constant(g, "zy", LOOM_DTYPE_I8, 1, one, &zy),
        loom_constant(g, "bias", LOOM_DTYPE_I32, 1, dm, bias),
    };
    int64_t pads[4] = {1, 1, 1, 1};
    loom_attr at[1] = {loom_attr_ints("pads", 4, pads)};
    loom_value out;
    CU_ASSERT_EQUAL(loom_graph_op(g, "QLinearConv", "qconv", in, 9, at, 1, &out, 1), LOOM_OK);
    loom_output(g, out, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    int64_t dy[4] = {1, M, H, W};
    loom_tensor *tx, *ty;
    loom_tensor_wrap(LOOM_DTYPE_I8, 4, dx, x, &tx);
    loom_tensor_wrap(LOOM_DTYPE_I8, 4, dy, y, &ty);
    CU_ASSERT_EQUAL(run_on_npu(g, tx, ty), LOOM_OK);
    int bad = 0;
    for (int m = 0; m < M; m++)
        for (int oh = 0; oh < H; oh++)
            for (int ow = 0; ow < W; ow++) {
                int32_t acc = bias[m];
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < 3; i++)
                        for (int j = 0; j < 3; j++) {
                            int ih = oh - 1 + i, iw = ow - 1 + j;
                            if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                acc += ((int32_t)x[(c * H + ih) * W + iw] - zx) *
                                       ((int32_t)w[((m * C + c) * 3 + i) * 3 + j] - zw);
                        }
                bad += y[(m * H + oh) * W + ow] !=
                       requant_ref(acc, sx * sw[m] / sy, zy, -128, 127);
            }
    CU_ASSERT_EQUAL(bad, 0);
    loom_tensor_destroy(tx);
    loom_tensor_destroy(ty);
    loom_graph_destroy(g);
}

static void check_bad_profile(const char *text, const char *needle)
{
    char path[] = "/tmp/loom-npu-profile-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    setenv("LOOM_NPU_SIM_PROFILE", path, 1);
    loom_runtime *r2 = NULL;
    CU_ASSERT_EQUAL_FATAL(make_runtime(&r2), LOOM_OK); /* the CPU still starts */
    unsetenv("LOOM_NPU_SIM_PROFILE");
    CU_ASSERT_FALSE(find_device(r2, "npu-sim:0", NULL));
    int named = 0;
    for (size_t i = 0; i < loom_runtime_message_count(r2); i++) {
        const char *m = loom_runtime_message(r2, i);
        if (contains(m, path) && contains(m, needle))
            named = 1;
    }
    if (!named)
        for (size_t i = 0; i < loom_runtime_message_count(r2); i++)
            fprintf(stderr, "runtime message: %s\n", loom_runtime_message(r2, i));
    CU_ASSERT(named);
    loom_runtime_destroy(r2);
    unlink(path);
}

static void test_bad_profile_refuses_plugin(void)
{
    check_bad_profile("{\"name\": \"x\", \"tops_int8\": \"fast\"}", "tops_int8");
    check_bad_profile("{\"name\": \"x\", \"tops_int8\": 4,", "profile");
    check_bad_profile("{\"bandwith_gbs\": 10}", "unknown key");
}

static void test_good_profile_sets_device_facts(void)
{
    char path[] = "/tmp/loom-npu-profile-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    const char *text = "{\"name\": \"big-npu\", \"tops_int8\": 100, \"tflops_fp16\": 50, "
                       "\"bandwidth_gbs\": 200, \"dispatch_latency_us\": 5, \"memory_mb\": 2048, "
                       "\"power_w\": 30}";
    CU_ASSERT_FATAL(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    setenv("LOOM_NPU_SIM_PROFILE", path, 1);
    setenv("LOOM_NPU_SIM_DEVICES", "2", 1);
    loom_runtime *r2 = NULL;
    CU_ASSERT_EQUAL_FATAL(make_runtime(&r2), LOOM_OK);
    unsetenv("LOOM_NPU_SIM_PROFILE");
    unsetenv("LOOM_NPU_SIM_DEVICES");
    loom_device_info info;
    CU_ASSERT_TRUE(find_device(r2, "npu-sim:1", NULL));
    CU_ASSERT_TRUE_FATAL(find_device(r2, "npu-sim:0", &info));
    CU_ASSERT(contains(info.name, "big-npu"));
    CU_ASSERT_DOUBLE_EQUAL(info.peak_flops_f32, 50e12, 1);
    CU_ASSERT_DOUBLE_EQUAL(info.mem_bandwidth, 200e9, 1);
    CU_ASSERT_DOUBLE_EQUAL(info.launch_latency_s, 5e-6, 1e-12);
    CU_ASSERT_EQUAL(info.memory_bytes, UINT64_C(2048) << 20);
    loom_runtime_destroy(r2);
    unlink(path);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH/loom-npu-sim.so\n", argv[0]);
        return 2;
    }
    plugin_path = argv[1];
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    struct {
        const char *name;
        void (*fn)(void);
    } t1[] = {
        {"refuses_other_abi_major", test_refuses_other_abi_major},
        {"device_facts_come_from_default_profile", test_device_facts_come_from_default_profile},
        {"supports_gives_reasons", test_supports_gives_reasons},
        {"estimate_is_roofline", test_estimate_is_roofline},
        {"gemm_trans_b_fp16_int8_and_clip", test_table_gemm_trans_b_fp16_and_clip},
        {"fp16_tensors_convert_with_rounding", test_table_fp16_tensors_convert},
    }, t2[] = {
        {"runtime_lists_npu_device", test_runtime_lists_npu_device},
        {"fp16_plan_matches_reference", test_fp16_plan_matches_reference},
        {"int8_plan_matches_reference", test_int8_plan_matches_reference},
        {"int8_plan_is_exact_on_the_grid", test_int8_plan_is_exact_on_the_grid},
        {"int8_calibrated_scales", test_int8_calibrated_scales},
        {"f32_strict_plan_fails_naming_reason", test_f32_strict_plan_fails_naming_reason},
        {"f32_plan_falls_back_to_cpu", test_f32_plan_falls_back_to_cpu},
        {"unsupported_op_is_named", test_unsupported_op_is_named},
        {"quantize_dequantize_round_trip", test_quantize_dequantize_round_trip},
        {"qlinear_matmul_matches_reference", test_qlinear_matmul_matches_reference},
        {"qlinear_conv_matches_reference", test_qlinear_conv_matches_reference},
        {"bad_profile_refuses_plugin", test_bad_profile_refuses_plugin},
        {"good_profile_sets_device_facts", test_good_profile_sets_device_facts},
    };
    CU_pSuite s1 = CU_add_suite("npu_sim_table", table_init, table_clean);
    for (size_t i = 0; i < sizeof t1 / sizeof *t1; i++)
        CU_add_test(s1, t1[i].name, t1[i].fn);
    CU_pSuite s2 = CU_add_suite("npu_sim_runtime", runtime_init, runtime_clean);
    for (size_t i = 0; i < sizeof t2 / sizeof *t2; i++)
        CU_add_test(s2, t2[i].name, t2[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    if (handle)
        dlclose(handle);
    return failed ? 1 : 0;
}
