/*
 * Fused com.microsoft operators of ONNX Runtime's transformer optimizer, which the ONNX importer
 * lowers into registry operators (issue 13, third part): Gelu, FastGelu (with and without
 * bias), BiasGelu, QuickGelu (default and given alpha), SkipLayerNormalization (every input and
 * the sum output; gamma only with the default epsilon) and FusedMatMul (alpha, transA, transB,
 * batched), each run through loom_model on odd shapes against a naive reference written here;
 * and the refusals (transBatchA, an unknown attribute, a read mean output, a missing input,
 * transA of a vector) naming the node, domain and attribute. Models are made by tests/data/contrib/make_models.py.
 */
#include "test_support.h"

#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char data_dir[1024];
static uint32_t seed = 4242;

static float frand(void) /* in [-3, 3) */
{
    seed = seed * 1664525u + 1013904223u;
    return (float)(seed >> 8) / (float)(1u << 24) * 6.0f - 3.0f;
}

static loom_model *load(const char *name)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s.onnx", data_dir, name);
    loom_model *m = NULL;
    loom_status st = loom_model_load_onnx(test_rt, p, NULL, &m);
    if (st != LOOM_OK)
        fprintf(stderr, "load %s: %s\n", name, loom_last_error());
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    return m;
}

/* A random float tensor; its data in *DATA. */
static loom_tensor *rnd(uint32_t rank, const int64_t *dims, float **data)
{
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, rank, dims, &t), LOOM_OK);
    float *d = loom_tensor_data(t);
    size_t n = loom_tensor_nbytes(t) / sizeof(float);
    for (size_t i = 0; i < n; i++)
        d[i] = frand();
    *data = d;
    return t;
}

static void run(loom_model *m, loom_tensor **in, size_t n_in, loom_tensor **out, size_t n_out)
{
    loom_status st = loom_model_run(m, (const loom_tensor *const *)in, n_in, out, n_out, NULL);
    if (st != LOOM_OK)
        fprintf(stderr, "run: %s\n", loom_last_error());
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
}

/* OUT holds N floats within 1e-5 relative (of max(|want|, 1)) of WANT, with the shape DIMS. */
static void expect(const loom_tensor *out, uint32_t rank, const int64_t *dims, const double *want,
                   size_t n)
{
    CU_ASSERT_EQUAL_FATAL(loom_tensor_rank(out), rank);
    int64_t d[LOOM_MAX_RANK];
    loom_tensor_dims(out, d);
    for (uint32_t k = 0; k < rank; k++)
        CU_ASSERT_EQUAL_FATAL(d[k], dims[k]);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_nbytes(out), n * sizeof(float));
    const float *y = loom_tensor_data(out);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = 1e-5 * fmax(fabs(want[i]), 1.0);
        if (!(fabs((double)y[i] - want[i]) <= tol) && bad++ < 3)
            fprintf(stderr, "element %zu: got %.8g, want %.8g\n", i, (double)y[i], want[i]);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void free_all(loom_tensor **t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        loom_tensor_destroy(t[i]);
}

/* ---- the Gelu family ----------------------------------------------------------------------- */

enum { GELU, FAST, FAST_BIAS, BIAS_GELU, QUICK, QUICK_ALPHA };

static double gelu_ref(int kind, double x)
{
    switch (kind) {
    case GELU:
    case BIAS_GELU:
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case FAST:
    case FAST_BIAS:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case QUICK:
        return x / (1.0 + exp(-1.702 * x));
    default:
        return x / (1.0 + exp(-0.75 * x));
    }
}

static void check_gelu(const char *name, int kind)
{
    static const int64_t shapes[][3] = {{1, 1, 1}, {2, 3, 5}, {3, 1, 7}, {1, 4, 2}};
    loom_model *m = load(name);
    int has_bias = kind == FAST_BIAS || kind == BIAS_GELU;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t *dims = shapes[s];
        size_t n = (size_t)(dims[0] * dims[1] * dims[2]), h = (size_t)dims[2];
        float *x, *bias = NULL;
        loom_tensor *in[2] = {rnd(3, dims, &x), NULL}, *out = NULL;
        if (has_bias)
            in[1] = rnd(1, &dims[2], &bias);
        run(m, in, has_bias ? 2 : 1, &out, 1);
        double *want = calloc(n, sizeof *want);
        for (size_t i = 0; i < n; i++)
            want[i] = gelu_ref(kind, (double)x[i] + (bias ? (double)bias[i % h] : 0.0));
        expect(out, 3, dims, want, n);
        free(want);
        free_all(in, has_bias ? 2 : 1);
        loom_tensor_destroy(out);
    }
    loom_model_destroy(m);
}

static void test_gelu_fast_gelu_bias_gelu_and_quick_gelu(void)
{
    check_gelu("gelu", GELU);
    check_gelu("fast_gelu", FAST);
    check_gelu("fast_gelu_bias", FAST_BIAS);
    check_gelu("bias_gelu", BIAS_GELU);
    check_gelu("quick_gelu", QUICK);
    check_gelu("quick_gelu_alpha", QUICK_ALPHA);
}

/* ---- SkipLayerNormalization ---------------------------------------------------------------- */

static void check_skip_ln(int full, const int64_t *dims)
{
    loom_model *m = load(full ? "skip_ln_full" : "skip_ln_gamma");
    size_t n = (size_t)(dims[0] * dims[1] * dims[2]), h = (size_t)dims[2], rows = n / h;
    float *x, *skip, *gamma, *beta = NULL, *bias = NULL;
    loom_tensor *in[5] = {rnd(3, dims, &x), rnd(3, dims, &skip), rnd(1, &dims[2], &gamma), NULL,
                          NULL};
    size_t n_in = 3;
    if (full) {
        in[3] = rnd(1, &dims[2], &beta);
        in[4] = rnd(1, &dims[2], &bias);
        n_in = 5;
    }
    loom_tensor *out[2] = {NULL, NULL};
    run(m, in, n_in, out, full ? 2 : 1);
    double eps = full ? 1e-5 : 1e-12;
    double *sum = calloc(n, sizeof *sum), *want = calloc(n, sizeof *want);
    for (size_t r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (size_t j = 0; j < h; j++) {
            size_t i = r * h + j;
            sum[i] = (double)x[i] + (double)skip[i] + (bias ? (double)bias[j] : 0.0);
            mean += sum[i];
        }
        mean /= (double)h;
        for (size_t j = 0; j < h; j++)
            var += (sum[r * h + j] - mean) * (sum[r * h + j] - mean);
        var /= (double)h;
        for (size_t j = 0; j < h; j++)
            want[r * h + j] = (sum[r * h + j] - mean) / sqrt(var + eps) * gamma[j] +
                              (beta ? (double)beta[j] : 0.0);
    }
    expect(out[0], 3, dims, want, n);
    if (full)
        expect(out[1], 3, dims, sum, n);
    free(sum);
    free(want);
    free_all(in, n_in);
    free_all(out, full ? 2 : 1);
    loom_model_destroy(m);
}

static void test_skip_layer_normalization_with_and_without_beta_and_bias(void)
{
    static const int64_t shapes[][3] = {{2, 3, 5}, {1, 1, 7}, {3, 2, 1}, {1, 5, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        check_skip_ln(1, shapes[s]);
        check_skip_ln(0, shapes[s]);
    }
}

/* ---- FusedMatMul --------------------------------------------------------------------------- */

/* Y[b] = alpha * op(A[b]) op(B[b]), A [batch_a?, k, m] or [m, k] etc. as the flags say; a batch
 * of 0 means the operand has none and is shared. */
static void check_fused_matmul(const char *name, int ta, int tb, double alpha, int64_t ba,
                               int64_t bb, int64_t M, int64_t K, int64_t N)
{
    loom_model *m = load(name);
    int64_t da[3], db[3];
    uint32_t ra = 0, rbk = 0;
    if (ba)
        da[ra++] = ba;
    da[ra++] = ta ? K : M;
    da[ra++] = ta ? M : K;
    if (bb)
        db[rbk++] = bb;
    db[rbk++] = tb ? N : K;
    db[rbk++] = tb ? K : N;
    float *a, *b;
    loom_tensor *in[2] = {rnd(ra, da, &a), rnd(rbk, db, &b)}, *out = NULL;
    run(m, in, 2, &out, 1);
    int64_t batch = ba > bb ? ba : bb, nb = batch ? batch : 1;
    double *want = calloc((size_t)(nb * M * N), sizeof *want);
    for (int64_t p = 0; p < nb; p++)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                const float *ap = a + (ba ? p * M * K : 0), *bp = b + (bb ? p * K * N : 0);
                double acc = 0;
                for (int64_t q = 0; q < K; q++)
                    acc += (double)(ta ? ap[q * M + i] : ap[i * K + q]) *
                           (double)(tb ? bp[j * K + q] : bp[q * N + j]);
                want[(p * M + i) * N + j] = alpha * acc;
            }
    int64_t dy[3] = {batch, M, N};
    if (batch)
        expect(out, 3, dy, want, (size_t)(nb * M * N));
    else
        expect(out, 2, dy + 1, want, (size_t)(M * N));
    free(want);
    free_all(in, 2);
    loom_tensor_destroy(out);
    loom_model_destroy(m);
}

static void test_fused_matmul_alpha_and_transposes(void)
{
    check_fused_matmul("fused_matmul", 0, 0, 0.5, 0, 0, 3, 5, 2);
    check_fused_matmul("fused_matmul", 0, 0, 0.5, 0, 0, 1, 7, 1);
    check_fused_matmul("fused_matmul_tt", 1, 1, -1.25, 2, 2, 5, 3, 4);
    check_fused_matmul("fused_matmul_tt", 1, 1, -1.25, 1, 1, 1, 9, 3);
    check_fused_matmul("fused_matmul_ta", 1, 0, 1.0, 0, 3, 3, 4, 5);
}

/* ---- refusals ------------------------------------------------------------------------------ */

static void expect_refused(const char *name, loom_status want, const char *const *words)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s.onnx", data_dir, name);
    loom_graph *g = NULL;
    loom_status st = loom_onnx_load(p, NULL, &g);
    CU_ASSERT_PTR_NULL(g);
    loom_graph_destroy(g);
    CU_ASSERT_EQUAL(st, want);
    for (size_t k = 0; words[k]; k++)
        if (!strstr(loom_last_error(), words[k])) {
            fprintf(stderr, "'%s' not in: %s\n", words[k], loom_last_error());
            CU_FAIL("message lacks a word");
        }
}

static void test_unsupported_attributes_inputs_and_outputs_are_refused_by_name(void)
{
    static const char *const batch[] = {"'fusedmatmul'", "com.microsoft", "transBatchA", NULL};
    static const char *const attr[] = {"'quickgelu'", "com.microsoft", "'beta'", NULL};
    static const char *const mean[] = {"'skiplayernormalization'", "com.microsoft", "'mean'",
                                       NULL};
    static const char *const inputs[] = {"'biasgelu'", "com.microsoft", "takes 2 inputs, 1",
                                         NULL};
    static const char *const vector[] = {"'fusedmatmul'", "com.microsoft", "rank 1", NULL};
    expect_refused("bad_trans_batch", LOOM_ERR_UNSUPPORTED, batch);
    expect_refused("bad_attr", LOOM_ERR_UNSUPPORTED, attr);
    expect_refused("bad_skip_mean", LOOM_ERR_UNSUPPORTED, mean);
    expect_refused("bad_bias_gelu_inputs", LOOM_ERR_INVALID_ARGUMENT, inputs);
    expect_refused("bad_trans_vector", LOOM_ERR_UNSUPPORTED, vector);
}

/* The models' folder, then the shared runtime (test_support.c). */
static int suite_init(void)
{
    const char *d = getenv("LOOM_CONTRIB_DATA");
    snprintf(data_dir, sizeof data_dir, "%s", d ? d : "tests/data/contrib");
    return test_rt_open_default();
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        TEST_ENTRY(test_gelu_fast_gelu_bias_gelu_and_quick_gelu),
        TEST_ENTRY(test_skip_layer_normalization_with_and_without_beta_and_bias),
        TEST_ENTRY(test_fused_matmul_alpha_and_transposes),
        TEST_ENTRY(test_unsupported_attributes_inputs_and_outputs_are_refused_by_name),
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"onnx_contrib", tests, suite_init, test_rt_close, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
