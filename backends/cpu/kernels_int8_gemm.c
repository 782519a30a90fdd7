/*
 * MatMulInt8Dynamic on the CPU: Y[m][n] = (sum_k qa[m][k] * B[k][n]) * sa[m] * sb[n] + bias[n],
 * where each row of A is quantised when the node runs (symmetric, qa in [-127, 127], one scale
 * sa[m] = max|A[m]| / 127) and B is int8 with one scale per column. Sums are exact int32.
 *
 * The inner loop is AVX-512 VNNI's vpdpbusd (u8 x s8, four products summed into each int32
 * lane, no saturation): A's rows are stored as u8 (qa + 128) and the 128 * column sum of B is
 * taken back out in the epilogue. B is packed once at prepare into panels of 64 columns, each
 * k-group of 4 holding 64 x 4 bytes, so the micro-kernel (4 rows x 64 columns, 16 accumulators)
 * reads B contiguously. Machines without VNNI run the same packed layout with portable integer
 * code (exact, slower). The ISA is chosen once, at prepare (LOOM_CPU_NO_VNNI=1: portable).
 */
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define I8G_HAVE_X86 1
#endif

#define I8G_PANEL 64 /* columns per packed panel */
#define I8G_ROWS 4   /* rows per micro-kernel */

typedef struct i8g_params {
    int64_t m, k, n;
    int64_t kg;         /* k-groups of 4 (K rounded up) */
    int64_t panels;     /* ceil(N / 64) */
    int8_t *packed;     /* panels x kg x 64 x 4 bytes, zero-padded */
    int32_t *colsum128; /* 128 * sum_k B[k][n], per padded column */
    float *scale;       /* per padded column (0 in the padding) */
    float *bias;        /* per padded column, or NULL */
    int vnni;
} i8g_params;

static void i8g_free(void *p)
{
    i8g_params *q = p;
    if (!q)
        return;
    free(q->packed);
    free(q->colsum128);
    free(q->scale);
    free(q->bias);
    free(q);
}

static int i8g_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs < 3 || node->inputs[0].dtype != LOOM_DTYPE_F32 ||
        node->inputs[1].dtype != LOOM_DTYPE_I8 || node->inputs[2].dtype != LOOM_DTYPE_F32)
        return cpu_reason(reason, len, "MatMulInt8Dynamic wants f32 A, int8 B, f32 scales");
    if (!node->input_constants || !node->input_constants[1] || !node->input_constants[2] ||
        (cpu_present(node, 3) && !node->input_constants[3]))
        return cpu_reason(reason, len, "MatMulInt8Dynamic wants constant B, scales and bias");
    return 1;
}

/* Where a scratch region of BYTES starts, 64-byte aligned, after OFF bytes. */
static size_t align64(size_t off)
{
    return (off + 63) & ~(size_t)63;
}

typedef struct i8g_run {
    const i8g_params *p;
    const float *a;
    float *y;
    uint8_t *qa;    /* m x (kg * 4) */
    float *sa;      /* m */
} i8g_run;

/* Quantise rows [b, e) of A. */
static void quant_rows(void *arg, size_t b, size_t e)
{
    const i8g_run *r = arg;
    const int64_t k = r->p->k, kp = r->p->kg * 4;
    for (size_t m = b; m < e; m++) {
        const float *a = r->a + m * (size_t)k;
        uint8_t *q = r->qa + m * (size_t)kp;
        float amax = 0.0f;
        for (int64_t i = 0; i < k; i++) {
            float v = fabsf(a[i]);
            amax = v > amax ? v : amax; /* NaN rows quantise as 0 below */
        }
        const float s = amax > 0.0f && isfinite(amax) ? amax / 127.0f : 1.0f;
        const float inv = 1.0f / s;
        for (int64_t i = 0; i < k; i++) {
            float v = nearbyintf(a[i] * inv);
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            q[i] = (uint8_t)((int)(v == v ? v : 0.0f) + 128);
        }
        for (int64_t i = k; i < kp; i++)
            q[i] = 128; /* B is zero there: any value, but keep the column sums right */
        r->sa[m] = s;
    }
}

/* The epilogue of one row and ACC[0..cols) of panel P: dequantise, add the bias, store. */
static void store_row(const i8g_run *r, int64_t m, int64_t p, const int32_t *acc, int64_t cols)
{
    const i8g_params *q = r->p;
    const int64_t c0 = p * I8G_PANEL;
    float *y = r->y + m * q->n + c0;
    const float sa = r->sa[m];
    const int32_t *cs = q->colsum128 + c0;
    const float *sb = q->scale + c0;
    if (q->bias) {
        const float *bias = q->bias + c0;
        for (int64_t j = 0; j < cols; j++)
            y[j] = (float)(acc[j] - cs[j]) * (sa * sb[j]) + bias[j];
    } else {
        for (int64_t j = 0; j < cols; j++)
            y[j] = (float)(acc[j] - cs[j]) * (sa * sb[j]);
    }
}

/* Portable: rows [m0, m0 + rows) x panel P. */
static void tile_generic(const i8g_run *r, int64_t m0, int64_t rows, int64_t p)
{
    const i8g_params *q = r->p;
    const int64_t kp = q->kg * 4;
    const int64_t cols = q->n - p * I8G_PANEL < I8G_PANEL ? q->n - p * I8G_PANEL : I8G_PANEL;
    const int8_t *panel = q->packed + (size_t)p * (size_t)q->kg * I8G_PANEL * 4;
    for (int64_t i = 0; i < rows; i++) {
        int32_t acc[I8G_PANEL] = {0};
        const uint8_t *a = r->qa + (m0 + i) * kp;
        for (int64_t g = 0; g < q->kg; g++) {
            const int8_t *b = panel + g * I8G_PANEL * 4;
            for (int64_t j = 0; j < I8G_PANEL; j++)
                for (int t = 0; t < 4; t++)
                    acc[j] += (int32_t)a[g * 4 + t] * (int32_t)b[j * 4 + t];
        }
        store_row(r, m0 + i, p, acc, cols);
    }
}

#ifdef I8G_HAVE_X86
/* VNNI: up to 4 rows x one panel of 64 columns, 16 accumulators. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
tile_vnni(const i8g_run *r, int64_t m0, int64_t rows, int64_t p)
{
    const i8g_params *q = r->p;
    const int64_t kp = q->kg * 4;
    const int64_t cols = q->n - p * I8G_PANEL < I8G_PANEL ? q->n - p * I8G_PANEL : I8G_PANEL;
    const int8_t *panel = q->packed + (size_t)p * (size_t)q->kg * I8G_PANEL * 4;
    __m512i acc[I8G_ROWS][4];
    for (int i = 0; i < I8G_ROWS; i++)
        for (int v = 0; v < 4; v++)
            acc[i][v] = _mm512_setzero_si512();
    const uint8_t *a0 = r->qa + m0 * kp;
    if (rows == I8G_ROWS) {
        for (int64_t g = 0; g < q->kg; g++) {
            const int8_t *b = panel + g * I8G_PANEL * 4;
            const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
            const __m512i b2 = _mm512_loadu_si512(b + 128), b3 = _mm512_loadu_si512(b + 192);
            for (int i = 0; i < I8G_ROWS; i++) {
                int32_t w;
                memcpy(&w, a0 + i * kp + g * 4, 4);
                const __m512i av = _mm512_set1_epi32(w);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], av, b0);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], av, b1);
                acc[i][2] = _mm512_dpbusd_epi32(acc[i][2], av, b2);
                acc[i][3] = _mm512_dpbusd_epi32(acc[i][3], av, b3);
            }
        }
    } else {
        for (int64_t g = 0; g < q->kg; g++) {
            const int8_t *b = panel + g * I8G_PANEL * 4;
            const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
            const __m512i b2 = _mm512_loadu_si512(b + 128), b3 = _mm512_loadu_si512(b + 192);
            for (int i = 0; i < rows; i++) {
                int32_t w;
                memcpy(&w, a0 + i * kp + g * 4, 4);
                const __m512i av = _mm512_set1_epi32(w);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], av, b0);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], av, b1);
                acc[i][2] = _mm512_dpbusd_epi32(acc[i][2], av, b2);
                acc[i][3] = _mm512_dpbusd_epi32(acc[i][3], av, b3);
            }
        }
    }
    for (int i = 0; i < rows; i++) {
        int32_t out[I8G_PANEL] __attribute__((aligned(64)));
        for (int v = 0; v < 4; v++)
            _mm512_store_si512((void *)(out + 16 * v), acc[i][v]);
        store_row(r, m0 + i, p, out, cols);
    }
}
#endif

/* Tiles [b, e): tile t is row block t / panels, panel t % panels. */
static void tiles(void *arg, size_t b, size_t e)
{
    const i8g_run *r = arg;
    const i8g_params *q = r->p;
    for (size_t t = b; t < e; t++) {
        int64_t rb = (int64_t)t / q->panels, p = (int64_t)t % q->panels;
        int64_t m0 = rb * I8G_ROWS;
        int64_t rows = q->m - m0 < I8G_ROWS ? q->m - m0 : I8G_ROWS;
#ifdef I8G_HAVE_X86
        if (q->vnni) {
            tile_vnni(r, m0, rows, p);
            continue;
        }
#endif
        tile_generic(r, m0, rows, p);
    }
}

static loom_status i8g_run_fn(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const i8g_params *q = k->params;
    if (q->m == 0 || q->n == 0)
        return LOOM_OK;
    i8g_run r = {.p = q, .a = args->inputs[0], .y = args->outputs[0]};
    r.qa = args->scratch;
    r.sa = (float *)((char *)args->scratch + align64((size_t)q->m * (size_t)q->kg * 4));
    cpu_parallel_for(pool, (size_t)q->m, 16, quant_rows, &r);
    size_t n_tiles = (size_t)((q->m + I8G_ROWS - 1) / I8G_ROWS) * (size_t)q->panels;
    cpu_parallel_for(pool, n_tiles, 1, tiles, &r);
    return LOOM_OK;
}

/* LOOM_CPU_NO_VNNI=1 forces the portable code (tests run both). */
static int cpu_has_vnni(void)
{
    const char *off = getenv("LOOM_CPU_NO_VNNI");
    if (off && *off && strcmp(off, "0") != 0)
        return 0;
#if defined(I8G_HAVE_X86) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

static loom_status i8g_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    const loom_tensor_desc *a = &node->inputs[0], *b = &node->inputs[1];
    i8g_params *q = calloc(1, sizeof *q);
    if (!q)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    q->k = b->dims[0];
    q->n = b->dims[1];
    q->m = q->k ? loom_tensor_desc_numel(a) / q->k : 0;
    q->kg = (q->k + 3) / 4;
    q->panels = (q->n + I8G_PANEL - 1) / I8G_PANEL;
    const size_t padn = (size_t)q->panels * I8G_PANEL;
    q->packed = calloc((size_t)q->panels * (size_t)q->kg * I8G_PANEL * 4 + 64, 1);
    q->colsum128 = calloc(padn + 1, sizeof *q->colsum128);
    q->scale = calloc(padn + 1, sizeof *q->scale);
    q->bias = cpu_present(node, 3) ? calloc(padn + 1, sizeof *q->bias) : NULL;
    if (!q->packed || !q->colsum128 || !q->scale || (cpu_present(node, 3) && !q->bias)) {
        i8g_free(q);
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory packing weights");
    }
    const int8_t *bs = node->input_constants[1];
    const float *sc = node->input_constants[2];
    for (int64_t j = 0; j < q->n; j++) {
        int64_t p = j / I8G_PANEL, c = j % I8G_PANEL;
        int32_t sum = 0;
        for (int64_t kk = 0; kk < q->k; kk++) {
            int8_t v = bs[kk * q->n + j];
            sum += v;
            q->packed[((size_t)(p * q->kg + kk / 4) * I8G_PANEL + (size_t)c) * 4 + (size_t)(kk % 4)] =
                v;
        }
        q->colsum128[j] = 128 * sum;
        q->scale[j] = sc[j];
        if (q->bias)
            q->bias[j] = ((const float *)node->input_constants[3])[j];
    }
    q->vnni = cpu_has_vnni();
    k->run = i8g_run_fn;
    k->params = q;
    k->free_params = i8g_free;
    k->scratch_bytes = align64((size_t)q->m * (size_t)q->kg * 4) + (size_t)q->m * sizeof(float);
    return LOOM_OK;
}

void cpu_register_int8_gemm(cpu_op_entry *table)
{
    table[LOOM_OP_MAT_MUL_INT8_DYNAMIC].supports = i8g_supports;
    table[LOOM_OP_MAT_MUL_INT8_DYNAMIC].prepare = i8g_prepare;
}
