/*
 * The transformer operators of ONNX Runtime's com.microsoft domain that the ONNX importer lowers
 * into registry operators (issue 13, third part; graph/onnx/onnx_contrib_attention.c):
 * Attention (no mask, key lengths, [end, start] pairs, 2-D and 3-D 0/1 masks, causal,
 * qkv_hidden_sizes, scale, mask_filter_value), MultiHeadAttention (bias, 2-D and key-length
 * masks, causal, cross attention with another key length), EmbedLayerNormalization (segments,
 * mask_index, embedding_sum; position_ids), RotaryEmbedding (half-split and interleaved, partial
 * rotary dimension, a first position or per-token positions, 3-D and 4-D inputs) and MatMulNBits
 * (4 and 8 bits, packed, float and default zero points, K not a multiple of the block, bias),
 * each run through loom_model on odd shapes against naive loops written here; and the refusals
 * (past, attention_bias, a 3B+2 mask index, heads not dividing the hidden size, packed KV, a
 * read present_key, packed batching, a segment input without its table, 3 bits, a B that is not
 * an initializer) naming the node and the input or attribute. Models are made by
 * tests/data/contrib_attention/make_models.py.
 */
#include "test_support.h"

#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char data_dir[1024];
static uint32_t seed = 777;

static uint32_t next(void)
{
    seed = seed * 1664525u + 1013904223u;
    return seed;
}

static float frand(void) /* in [-2, 2) */
{
    return (float)(next() >> 8) / (float)(1u << 24) * 4.0f - 2.0f;
}

static int irand(int lo, int hi) /* in [lo, hi] */
{
    return lo + (int)((next() >> 8) % (uint32_t)(hi - lo + 1));
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

static loom_tensor *tensor(loom_dtype dt, uint32_t rank, const int64_t *dims)
{
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(dt, rank, dims, &t), LOOM_OK);
    return t;
}

/* A random float tensor; its data in *DATA. */
static loom_tensor *rnd(uint32_t rank, const int64_t *dims, float **data)
{
    loom_tensor *t = tensor(LOOM_DTYPE_F32, rank, dims);
    float *d = loom_tensor_data(t);
    for (size_t i = 0; i < loom_tensor_nbytes(t) / sizeof(float); i++)
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

/* OUT holds N floats within TOL * max(|want|, 1) of WANT, with the shape DIMS. */
static void expect(const loom_tensor *out, uint32_t rank, const int64_t *dims, const double *want,
                   size_t n, double tol)
{
    CU_ASSERT_EQUAL_FATAL(loom_tensor_rank(out), rank);
    int64_t d[LOOM_MAX_RANK];
    loom_tensor_dims(out, d);
    for (uint32_t k = 0; k < rank; k++)
        CU_ASSERT_EQUAL_FATAL(d[k], dims[k]);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_nbytes(out), n * sizeof(float));
    const float *y = loom_tensor_data(out);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)y[i] - want[i]) <= tol * fmax(fabs(want[i]), 1.0)) && bad++ < 3)
            fprintf(stderr, "element %zu: got %.8g, want %.8g\n", i, (double)y[i], want[i]);
    CU_ASSERT_EQUAL(bad, 0);
}

static void free_all(loom_tensor **t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        loom_tensor_destroy(t[i]);
}

/* ---- attention reference --------------------------------------------------------------------- */

enum { NO_MASK, LENGTHS, ENDS_STARTS, RAW2D, RAW3D };

/* Softmax(Q K^T * scale + mask) V per head, Q [B, S, N*hq], K [B, T, N*hq], V [B, T, N*hv]
 * (row strides QS, KS, VS: columns of a wider matrix), the mask as ONNX Runtime applies it:
 * FILTER added for each masked key, causal keys (j > i) excluded. */
static void attention_ref(const double *q, size_t qs, const double *k, size_t ks,
                          const double *v, size_t vs, int64_t B, int64_t S, int64_t T, int64_t N,
                          int64_t hq, int64_t hv, double scale, int kind, const int32_t *mask,
                          int causal, double filter, double *out)
{
    double *sc = malloc((size_t)T * sizeof *sc);
    for (int64_t b = 0; b < B; b++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < S; i++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < T; j++) {
                    double acc = 0;
                    for (int64_t d = 0; d < hq; d++)
                        acc += q[(b * S + i) * qs + n * hq + d] * k[(b * T + j) * ks + n * hq + d];
                    acc *= scale;
                    int masked = 0;
                    if (kind == LENGTHS)
                        masked = j >= mask[b];
                    else if (kind == ENDS_STARTS)
                        masked = j >= mask[b] || j < mask[B + b];
                    else if (kind == RAW2D)
                        masked = mask[b * T + j] <= 0;
                    else if (kind == RAW3D)
                        masked = mask[(b * S + i) * T + j] <= 0;
                    if (masked)
                        acc += filter;
                    if (causal && S > 1 && j > i)
                        acc = -INFINITY; /* never attended, whatever the padding mask says */
                    sc[j] = acc;
                    mx = fmax(mx, acc);
                }
                for (int64_t j = 0; j < T; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int64_t e = 0; e < hv; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < T; j++)
                        acc += sc[j] / sum * v[(b * T + j) * vs + n * hv + e];
                    out[(b * S + i) * (N * hv) + n * hv + e] = acc;
                }
            }
    free(sc);
}

/* A random mask of KIND for B batches, S queries, T keys (int32, in *DATA). Every row keeps at
 * least one key except, for 2-D masks, batch 0's when ALL_MASKED (a row ONNX Runtime averages). */
static loom_tensor *mask_tensor(int kind, int64_t B, int64_t S, int64_t T, int all_masked,
                                int32_t **data)
{
    int64_t dims[3] = {B, S, T};
    loom_tensor *t;
    if (kind == LENGTHS || kind == ENDS_STARTS) {
        int64_t n = kind == LENGTHS ? B : 2 * B;
        t = tensor(LOOM_DTYPE_I32, 1, &n);
    } else if (kind == RAW2D) {
        int64_t d2[2] = {B, T};
        t = tensor(LOOM_DTYPE_I32, 2, d2);
    } else {
        t = tensor(LOOM_DTYPE_I32, 3, dims);
    }
    int32_t *m = loom_tensor_data(t);
    if (kind == LENGTHS || kind == ENDS_STARTS) {
        for (int64_t b = 0; b < B; b++) {
            m[b] = irand(1, (int)T);
            if (kind == ENDS_STARTS)
                m[B + b] = irand(0, m[b] - 1);
        }
    } else {
        size_t rows = (size_t)(kind == RAW2D ? B : B * S);
        for (size_t r = 0; r < rows; r++) {
            for (int64_t j = 0; j < T; j++)
                m[r * (size_t)T + (size_t)j] = irand(0, 2) ? 1 : 0;
            m[r * (size_t)T + (size_t)irand(0, (int)T - 1)] = 1;
        }
        if (all_masked && kind == RAW2D)
            for (int64_t j = 0; j < T; j++)
                m[j] = 0;
    }
    *data = m;
    return t;
}

/* ---- Attention ------------------------------------------------------------------------------- */

typedef struct att_case {
    const char *model;
    int kind, causal, has_bias;
    int64_t heads, dq, dv;
    double scale, filter; /* scale 0: 1 / sqrt(head size) */
} att_case;

static void check_attention(const att_case *tc, int64_t B, int64_t S, int all_masked)
{
    loom_model *m = load(tc->model);
    const int64_t H = 12, W = 2 * tc->dq + tc->dv;
    int64_t xd[3] = {B, S, H}, wd[2] = {H, W};
    float *x, *w, *bias = NULL;
    int32_t *mask = NULL;
    loom_tensor *in[4];
    size_t n_in = 0;
    in[n_in++] = rnd(3, xd, &x);
    in[n_in++] = rnd(2, wd, &w);
    if (tc->has_bias)
        in[n_in++] = rnd(1, &W, &bias);
    if (tc->kind != NO_MASK)
        in[n_in++] = mask_tensor(tc->kind, B, S, S, all_masked, &mask);
    loom_tensor *out = NULL;
    run(m, in, n_in, &out, 1);
    double *qkv = calloc((size_t)(B * S * W), sizeof *qkv);
    for (int64_t r = 0; r < B * S; r++)
        for (int64_t col = 0; col < W; col++) {
            double acc = bias ? bias[col] : 0.0;
            for (int64_t h = 0; h < H; h++)
                acc += (double)x[r * H + h] * w[h * W + col];
            qkv[r * W + col] = acc;
        }
    int64_t hq = tc->dq / tc->heads, hv = tc->dv / tc->heads;
    double scale = tc->scale != 0 ? tc->scale : 1.0 / sqrt((double)hq);
    double *want = calloc((size_t)(B * S * tc->dv), sizeof *want);
    attention_ref(qkv, (size_t)W, qkv + tc->dq, (size_t)W, qkv + 2 * tc->dq, (size_t)W, B, S, S,
                  tc->heads, hq, hv, scale, tc->kind, mask, tc->causal, tc->filter, want);
    int64_t yd[3] = {B, S, tc->dv};
    expect(out, 3, yd, want, (size_t)(B * S * tc->dv), 2e-5);
    free(qkv);
    free(want);
    free_all(in, n_in);
    loom_tensor_destroy(out);
    loom_model_destroy(m);
}

static void test_attention_masks_causal_qkv_sizes_and_scale(void)
{
    static const att_case cases[] = {
        {"attention", NO_MASK, 0, 1, 3, 12, 12, 0, -10000},
        {"attention_lengths", LENGTHS, 0, 1, 3, 12, 12, 0, -10000},
        {"attention_2d_causal", RAW2D, 1, 1, 3, 12, 6, 0.3, -7},
        {"attention_ends_starts", ENDS_STARTS, 0, 1, 2, 12, 12, 0, -10000},
        {"attention_no_bias", NO_MASK, 0, 0, 2, 12, 12, 0, -10000},
        {"attention_3d_mask", RAW3D, 1, 1, 3, 12, 12, 0, -10000},
    };
    static const int64_t shapes[][2] = {{2, 5}, {1, 1}, {3, 7}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_attention(&cases[c], shapes[s][0], shapes[s][1], 0);
    /* A row whose keys are all masked: ONNX Runtime adds the filter to each, so the row is the
     * softmax of the scores of the keys the causal mask leaves. */
    check_attention(&cases[2], 2, 5, 1);
}

/* ---- MultiHeadAttention ---------------------------------------------------------------------- */

static void check_mha(const char *model, int64_t B, int64_t S, int64_t L, int64_t heads,
                      int64_t Dv, int has_bias, int kind, int causal, double scale)
{
    loom_model *m = load(model);
    const int64_t D = 12;
    int64_t qd[3] = {B, S, D}, kd[3] = {B, L, D}, vd[3] = {B, L, Dv}, nb = 2 * D + Dv;
    float *q, *k, *v, *bias = NULL;
    int32_t *mask = NULL;
    loom_tensor *in[5];
    size_t n_in = 0;
    in[n_in++] = rnd(3, qd, &q);
    in[n_in++] = rnd(3, kd, &k);
    in[n_in++] = rnd(3, vd, &v);
    if (has_bias)
        in[n_in++] = rnd(1, &nb, &bias);
    if (kind != NO_MASK)
        in[n_in++] = mask_tensor(kind, B, S, L, 0, &mask);
    loom_tensor *out = NULL;
    run(m, in, n_in, &out, 1);
    double *qq = malloc((size_t)(B * S * D) * sizeof *qq), *kk = malloc((size_t)(B * L * D) * sizeof *kk),
           *vv = malloc((size_t)(B * L * Dv) * sizeof *vv);
    for (int64_t i = 0; i < B * S * D; i++)
        qq[i] = q[i] + (bias ? (double)bias[i % D] : 0.0);
    for (int64_t i = 0; i < B * L * D; i++)
        kk[i] = k[i] + (bias ? (double)bias[D + i % D] : 0.0);
    for (int64_t i = 0; i < B * L * Dv; i++)
        vv[i] = v[i] + (bias ? (double)bias[2 * D + i % Dv] : 0.0);
    int64_t hq = D / heads, hv = Dv / heads;
    double *want = calloc((size_t)(B * S * Dv), sizeof *want);
    attention_ref(qq, (size_t)D, kk, (size_t)D, vv, (size_t)Dv, B, S, L, heads, hq, hv,
                  scale != 0 ? scale : 1.0 / sqrt((double)hq), kind, mask, causal, -10000.0,
                  want);
    int64_t yd[3] = {B, S, Dv};
    expect(out, 3, yd, want, (size_t)(B * S * Dv), 2e-5);
    free(qq), free(kk), free(vv), free(want);
    free_all(in, n_in);
    loom_tensor_destroy(out);
    loom_model_destroy(m);
}

static void test_multi_head_attention_bias_masks_causal_and_cross_lengths(void)
{
    check_mha("mha", 2, 5, 7, 3, 6, 1, RAW2D, 0, 0);
    check_mha("mha", 3, 1, 4, 3, 6, 1, RAW2D, 0, 0);
    check_mha("mha_causal_lengths", 2, 5, 5, 3, 6, 0, LENGTHS, 1, 0.5);
    check_mha("mha_causal_lengths", 1, 6, 6, 3, 6, 0, LENGTHS, 1, 0.5);
    check_mha("mha_plain", 2, 3, 6, 2, 8, 0, NO_MASK, 0, 0);
}

/* ---- EmbedLayerNormalization ----------------------------------------------------------------- */

static void layer_norm_ref(const double *x, size_t rows, size_t h, const float *gamma,
                           const float *beta, double eps, double *y)
{
    for (size_t r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (size_t j = 0; j < h; j++)
            mean += x[r * h + j];
        mean /= (double)h;
        for (size_t j = 0; j < h; j++)
            var += (x[r * h + j] - mean) * (x[r * h + j] - mean);
        var /= (double)h;
        for (size_t j = 0; j < h; j++)
            y[r * h + j] = (x[r * h + j] - mean) / sqrt(var + eps) * gamma[j] + beta[j];
    }
}

static loom_tensor *ints(uint32_t rank, const int64_t *dims, int lo, int hi, int32_t **data)
{
    loom_tensor *t = tensor(LOOM_DTYPE_I32, rank, dims);
    int32_t *d = loom_tensor_data(t);
    for (size_t i = 0; i < loom_tensor_nbytes(t) / sizeof(int32_t); i++)
        d[i] = irand(lo, hi);
    *data = d;
    return t;
}

static void check_embed_ln(int full, int64_t B, int64_t S)
{
    loom_model *m = load(full ? "embed_ln" : "embed_ln_position_ids");
    const int64_t H = 12, V = 11, P = 9, G = 2;
    int64_t bs[2] = {B, S}, wd[2] = {V, H}, pd[2] = {P, H}, gd[2] = {G, H}, pid[2] = {1, S};
    int32_t *ids, *seg = NULL, *mask = NULL, *pos_ids = NULL;
    float *word, *pos, *sege = NULL, *gamma, *beta;
    loom_tensor *in[9];
    size_t n = 0;
    in[n++] = ints(2, bs, 0, (int)V - 1, &ids);
    if (full)
        in[n++] = ints(2, bs, 0, (int)G - 1, &seg);
    in[n++] = rnd(2, wd, &word);
    in[n++] = rnd(2, pd, &pos);
    if (full)
        in[n++] = rnd(2, gd, &sege);
    in[n++] = rnd(1, &H, &gamma);
    in[n++] = rnd(1, &H, &beta);
    if (full)
        in[n++] = ints(2, bs, 0, 1, &mask);
    else
        in[n++] = ints(2, pid, 0, (int)P - 1, &pos_ids);
    loom_tensor *out[3] = {NULL, NULL, NULL};
    size_t n_out = full ? 3 : 2;
    run(m, in, n, out, n_out);
    size_t rows = (size_t)(B * S);
    double *sum = calloc(rows * (size_t)H, sizeof *sum), *y = calloc(rows * (size_t)H, sizeof *y);
    double mi[8] = {0};
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < S; s++) {
            size_t r = (size_t)(b * S + s);
            int64_t p = pos_ids ? pos_ids[s] : s;
            for (int64_t j = 0; j < H; j++)
                sum[r * (size_t)H + (size_t)j] =
                    (double)word[ids[r] * H + j] + pos[p * H + j] + (seg ? sege[seg[r] * H + j] : 0.0);
            if (mask)
                mi[b] += mask[r] == 1;
        }
    layer_norm_ref(sum, rows, (size_t)H, gamma, beta, full ? 1e-5 : 1e-12, y);
    int64_t yd[3] = {B, S, H};
    expect(out[0], 3, yd, y, rows * (size_t)H, 1e-5);
    CU_ASSERT_EQUAL(loom_tensor_rank(out[1]), 1);
    CU_ASSERT_EQUAL(loom_tensor_nbytes(out[1]), (size_t)B * sizeof(int32_t));
    CU_ASSERT_EQUAL(loom_tensor_dtype(out[1]), LOOM_DTYPE_I32);
    const int32_t *got = loom_tensor_data(out[1]);
    for (int64_t b = 0; b < B && loom_tensor_nbytes(out[1]) == (size_t)B * 4; b++)
        CU_ASSERT_EQUAL(got[b], (int32_t)mi[b]);
    if (full)
        expect(out[2], 3, yd, sum, rows * (size_t)H, 1e-6);
    free(sum), free(y);
    free_all(in, n);
    free_all(out, n_out);
    loom_model_destroy(m);
}

static void test_embed_layer_normalization_segments_mask_index_and_position_ids(void)
{
    check_embed_ln(1, 2, 5);
    check_embed_ln(1, 3, 9);
    check_embed_ln(1, 1, 1);
    check_embed_ln(0, 2, 5);
    check_embed_ln(0, 4, 3);
}

/* ---- RotaryEmbedding ------------------------------------------------------------------------- */

static void check_rotary(const char *model, int four, int64_t B, int64_t S, int64_t N,
                         int64_t D, int64_t R, int interleaved, int first_position)
{
    loom_model *m = load(model);
    const int64_t M = 9, half = R / 2;
    int64_t xd[4], cd[2] = {M, half}, pd[2] = {B, S}, one = 1;
    uint32_t xr = four ? 4 : 3;
    if (four)
        xd[0] = B, xd[1] = N, xd[2] = S, xd[3] = D;
    else
        xd[0] = B, xd[1] = S, xd[2] = N * D;
    float *x, *cs, *sn;
    loom_tensor *in[4];
    in[0] = rnd(xr, xd, &x);
    in[1] = first_position ? tensor(LOOM_DTYPE_I64, 1, &one) : tensor(LOOM_DTYPE_I64, 2, pd);
    int64_t *pos = loom_tensor_data(in[1]);
    if (first_position)
        pos[0] = irand(0, (int)(M - S));
    else
        for (int64_t i = 0; i < B * S; i++)
            pos[i] = irand(0, (int)M - 1);
    in[2] = rnd(2, cd, &cs);
    in[3] = rnd(2, cd, &sn);
    loom_tensor *out = NULL;
    run(m, in, 4, &out, 1);
    size_t total = (size_t)(B * S * N * D);
    double *want = calloc(total, sizeof *want);
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < S; s++)
            for (int64_t n = 0; n < N; n++) {
                size_t base = four ? (size_t)(((b * N + n) * S + s) * D)
                                   : (size_t)(((b * S + s) * N + n) * D);
                int64_t p = first_position ? pos[0] + s : pos[b * S + s];
                const float *c = cs + p * half, *sv = sn + p * half;
                for (int64_t i = 0; i < D; i++) {
                    double xi = x[base + (size_t)i];
                    if (i >= R) {
                        want[base + (size_t)i] = xi;
                        continue;
                    }
                    /* pairs: (2j, 2j+1) interleaved, (j, j + R/2) otherwise */
                    int64_t j = interleaved ? i / 2 : i % half;
                    int first = interleaved ? i % 2 == 0 : i < half;
                    int64_t other = interleaved ? (first ? i + 1 : i - 1) : (first ? i + half : i - half);
                    double xo = x[base + (size_t)other];
                    want[base + (size_t)i] = first ? xi * c[j] - xo * sv[j] : xi * c[j] + xo * sv[j];
                }
            }
    expect(out, xr, xd, want, total, 1e-5);
    free(want);
    free_all(in, 4);
    loom_tensor_destroy(out);
    loom_model_destroy(m);
}

static void test_rotary_embedding_half_interleaved_partial_and_4d(void)
{
    check_rotary("rotary", 0, 2, 5, 3, 4, 4, 0, 0);
    check_rotary("rotary", 0, 1, 9, 3, 4, 4, 0, 0);
    check_rotary("rotary_interleaved_partial", 0, 2, 5, 3, 8, 4, 1, 1);
    check_rotary("rotary_interleaved_partial", 0, 3, 1, 3, 8, 4, 1, 1);
    check_rotary("rotary_4d", 1, 2, 5, 3, 6, 6, 0, 0);
    check_rotary("rotary_4d", 1, 1, 7, 3, 6, 6, 0, 0);
}

/* ---- MatMulNBits ------------------------------------------------------------------------------ */

enum { ZP_DEFAULT, ZP_PACKED, ZP_FLOAT };

/* The generator of make_models.py's lcg(): the top byte of each step. */
static void lcg_bytes(uint32_t s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        out[i] = (uint8_t)(s >> 24);
    }
}

static void check_nbits(const char *model, int64_t K, int64_t N, int bits, int64_t block, int zp,
                        int has_bias, uint32_t gen, int64_t B, int64_t S)
{
    loom_model *m = load(model);
    int64_t nblk = (K + block - 1) / block, blob = block * bits / 8, zrow = (nblk * bits + 7) / 8;
    size_t nb = (size_t)(N * nblk * blob), ns = (size_t)(N * nblk);
    size_t nz = zp == ZP_PACKED ? (size_t)(N * zrow) : zp == ZP_FLOAT ? ns : 0;
    uint8_t *r = malloc(nb + ns + nz);
    lcg_bytes(gen, nb + ns + nz, r);
    /* W[k][n], unpacked independently of the importer: element e of a block is bits-wide
     * field e of the block's bytes, low bits first. */
    double *w = calloc((size_t)(K * N), sizeof *w);
    for (int64_t n = 0; n < N; n++)
        for (int64_t kb = 0; kb < nblk; kb++) {
            double scale = (double)(float)(r[nb + (size_t)(n * nblk + kb)] / 255.0 * 0.1 + 0.01);
            double z = (double)(1 << (bits - 1));
            if (zp == ZP_PACKED) {
                uint64_t bitpos = (uint64_t)kb * (uint64_t)bits;
                z = (r[nb + ns + (size_t)(n * zrow) + bitpos / 8] >> (bitpos % 8)) & ((1 << bits) - 1);
            } else if (zp == ZP_FLOAT) {
                z = (double)(float)(r[nb + ns + (size_t)(n * nblk + kb)] / 17.0);
            }
            for (int64_t e = 0; e < block && kb * block + e < K; e++) {
                uint64_t bitpos = (uint64_t)e * (uint64_t)bits;
                unsigned q = (r[(size_t)((n * nblk + kb) * blob) + bitpos / 8] >> (bitpos % 8)) &
                             ((1u << bits) - 1);
                w[(kb * block + e) * N + n] = ((double)q - z) * scale;
            }
        }
    int64_t ad[3] = {B, S, K};
    float *a, *bias = NULL;
    loom_tensor *in[2] = {rnd(3, ad, &a), NULL}, *out = NULL;
    if (has_bias)
        in[1] = rnd(1, &N, &bias);
    run(m, in, has_bias ? 2 : 1, &out, 1);
    double *want = calloc((size_t)(B * S * N), sizeof *want);
    for (int64_t i = 0; i < B * S; i++)
        for (int64_t n = 0; n < N; n++) {
            double acc = bias ? bias[n] : 0.0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)a[i * K + k] * w[k * N + n];
            want[i * N + n] = acc;
        }
    int64_t yd[3] = {B, S, N};
    expect(out, 3, yd, want, (size_t)(B * S * N), 2e-5);
    free(r), free(w), free(want);
    free_all(in, has_bias ? 2 : 1);
    loom_tensor_destroy(out);
    loom_model_destroy(m);
}

static void test_matmul_nbits_zero_points_bits_ragged_blocks_and_bias(void)
{
    check_nbits("matmul_nbits", 40, 7, 4, 16, ZP_PACKED, 1, 11, 2, 5);
    check_nbits("matmul_nbits", 40, 7, 4, 16, ZP_PACKED, 1, 11, 1, 1);
    check_nbits("matmul_nbits_default_zp", 32, 5, 4, 32, ZP_DEFAULT, 0, 12, 3, 2);
    check_nbits("matmul_nbits_float_zp", 48, 6, 4, 16, ZP_FLOAT, 0, 13, 2, 3);
    check_nbits("matmul_nbits_8bit", 20, 3, 8, 16, ZP_PACKED, 1, 14, 2, 5);
}

/* ---- refusals --------------------------------------------------------------------------------- */

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
            fprintf(stderr, "%s: '%s' not in: %s\n", name, words[k], loom_last_error());
            CU_FAIL("message lacks a word");
        }
}

static void test_unsupported_forms_are_refused_naming_node_and_input(void)
{
    static const char *const past[] = {"'attention'", "com.microsoft Attention", "'past'", NULL};
    static const char *const bias[] = {"'attention'", "'attention_bias'", NULL};
    static const char *const mask[] = {"'attention'", "'mask_index'", "[8]", NULL};
    static const char *const heads[] = {"'attention'", "'num_heads'", NULL};
    static const char *const kv[] = {"'multiheadattention'", "'key'", "packed KV", NULL};
    static const char *const present[] = {"'multiheadattention'", "'present_key'", NULL};
    static const char *const packed[] = {"'rotaryembedding'", "'is_packed_batching'", NULL};
    static const char *const seg[] = {"'embedlayernormalization'", "'segment_embedding'", NULL};
    static const char *const bits[] = {"'matmulnbits'", "'bits'", "3", NULL};
    static const char *const dyn[] = {"'matmulnbits'", "'B'", "not a constant", NULL};
    expect_refused("bad_attention_past", LOOM_ERR_UNSUPPORTED, past);
    expect_refused("bad_attention_bias", LOOM_ERR_UNSUPPORTED, bias);
    expect_refused("bad_attention_mask", LOOM_ERR_UNSUPPORTED, mask);
    expect_refused("bad_attention_heads", LOOM_ERR_INVALID_ARGUMENT, heads);
    expect_refused("bad_mha_packed_kv", LOOM_ERR_UNSUPPORTED, kv);
    expect_refused("bad_mha_present", LOOM_ERR_UNSUPPORTED, present);
    expect_refused("bad_rotary_packed", LOOM_ERR_UNSUPPORTED, packed);
    expect_refused("bad_embed_segment", LOOM_ERR_INVALID_ARGUMENT, seg);
    expect_refused("bad_nbits_bits", LOOM_ERR_UNSUPPORTED, bits);
    expect_refused("bad_nbits_dynamic_b", LOOM_ERR_UNSUPPORTED, dyn);
}

/* The models' folder, then the shared runtime (test_support.c). */
static int suite_init(void)
{
    const char *d = getenv("LOOM_CONTRIB_ATTENTION_DATA");
    snprintf(data_dir, sizeof data_dir, "%s", d ? d : "tests/data/contrib_attention");
    return test_rt_open_default();
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        TEST_ENTRY(test_attention_masks_causal_qkv_sizes_and_scale),
        TEST_ENTRY(test_multi_head_attention_bias_masks_causal_and_cross_lengths),
        TEST_ENTRY(test_embed_layer_normalization_segments_mask_index_and_position_ids),
        TEST_ENTRY(test_rotary_embedding_half_interleaved_partial_and_4d),
        TEST_ENTRY(test_matmul_nbits_zero_points_bits_ragged_blocks_and_bias),
        TEST_ENTRY(test_unsupported_forms_are_refused_naming_node_and_input),
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"onnx_contrib_attention", tests, suite_init, test_rt_close, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
