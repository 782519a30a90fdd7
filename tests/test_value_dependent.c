/*
 * Operators whose output shape depends on input values (issues 12 and 13): NonZero, Compress,
 * Unique and NonMaxSuppression run through loom_model, each against a naive reference written
 * here (plain loops); a graph chaining two of them with consumers in between, run at two input
 * value patterns that give different output sizes; and the static plan API refusing such a
 * graph with a message naming the node. Models are made by
 * tests/data/value_dependent/make_models.py.
 */
#include "test_support.h"

#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char data_dir[1024];
static uint32_t seed = 12345;

static float frand(void)
{
    seed = seed * 1664525u + 1013904223u;
    return (float)(seed >> 8) / (float)(1u << 24);
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

static loom_tensor *make(loom_dtype dt, uint32_t rank, const int64_t *dims, const void *data)
{
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(dt, rank, dims, &t), LOOM_OK);
    memcpy(loom_tensor_data(t), data, loom_tensor_nbytes(t));
    return t;
}

static loom_status run(loom_model *m, loom_tensor **in, size_t n_in, loom_tensor **out,
                       size_t n_out)
{
    loom_status st = loom_model_run(m, (const loom_tensor *const *)in, n_in, out, n_out, NULL);
    if (st != LOOM_OK)
        fprintf(stderr, "run: %s\n", loom_last_error());
    return st;
}

static void expect_shape(const loom_tensor *t, uint32_t rank, const int64_t *dims)
{
    CU_ASSERT_EQUAL_FATAL(loom_tensor_rank(t), rank);
    int64_t d[LOOM_MAX_RANK];
    loom_tensor_dims(t, d);
    for (uint32_t k = 0; k < rank; k++)
        CU_ASSERT_EQUAL(d[k], dims[k]);
}

static void free_all(loom_tensor **t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        loom_tensor_destroy(t[i]);
}

/* ---- NonZero ------------------------------------------------------------------------------- */

static void check_nonzero_f32(loom_model *m, const int64_t *dims, float density)
{
    int64_t n = dims[0] * dims[1] * dims[2];
    float *x = calloc((size_t)(n ? n : 1), sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = frand() < density ? (frand() < 0.5f ? -1.5f : 2.0f) : (i % 2 ? -0.0f : 0.0f);
    loom_tensor *in = make(LOOM_DTYPE_F32, 3, dims, x), *out = NULL;
    CU_ASSERT_EQUAL_FATAL(run(m, &in, 1, &out, 1), LOOM_OK);
    /* Reference: the coordinates of every non-zero element, row-major order. */
    int64_t nnz = 0;
    for (int64_t i = 0; i < n; i++)
        nnz += x[i] != 0.0f;
    int64_t want_dims[2] = {3, nnz};
    expect_shape(out, 2, want_dims);
    const int64_t *y = loom_tensor_data(out);
    int64_t j = 0;
    for (int64_t a = 0; a < dims[0]; a++)
        for (int64_t b = 0; b < dims[1]; b++)
            for (int64_t c = 0; c < dims[2]; c++) {
                if (x[(a * dims[1] + b) * dims[2] + c] == 0.0f)
                    continue;
                CU_ASSERT_EQUAL(y[0 * nnz + j], a);
                CU_ASSERT_EQUAL(y[1 * nnz + j], b);
                CU_ASSERT_EQUAL(y[2 * nnz + j], c);
                j++;
            }
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    free(x);
}

static void test_nonzero_on_odd_shapes_and_all_zero_input(void)
{
    loom_model *m = load("nonzero_f32");
    static const int64_t shapes[][3] = {{3, 1, 5}, {2, 7, 3}, {1, 1, 1}, {4, 0, 2}, {5, 3, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        check_nonzero_f32(m, shapes[s], 0.4f);
    int64_t d[3] = {2, 3, 4};
    check_nonzero_f32(m, d, 0.0f); /* all zero (and -0.0): [3, 0] */
    check_nonzero_f32(m, d, 1.1f); /* all non-zero */
    loom_model_destroy(m);

    m = load("nonzero_i32");
    int32_t v[9] = {0, 4, 0, -2, 7, 0, 0, 0, 1};
    int64_t n = 9;
    loom_tensor *in = make(LOOM_DTYPE_I32, 1, &n, v), *out = NULL;
    CU_ASSERT_EQUAL_FATAL(run(m, &in, 1, &out, 1), LOOM_OK);
    int64_t want[2] = {1, 4};
    expect_shape(out, 2, want);
    const int64_t *y = loom_tensor_data(out);
    CU_ASSERT(y[0] == 1 && y[1] == 3 && y[2] == 4 && y[3] == 8);
    loom_tensor_destroy(in);
    loom_tensor_destroy(out);
    loom_model_destroy(m);
}

/* ---- Compress ------------------------------------------------------------------------------ */

static void test_compress_with_and_without_axis(void)
{
    loom_model *ma = load("compress_axis"), *mf = load("compress_flat");
    int64_t dims[2] = {3, 5};
    float x[15];
    for (int i = 0; i < 15; i++)
        x[i] = (float)i * 0.5f - 2.0f;
    /* Conditions shorter than, equal to the axis; all false. */
    static const unsigned char conds[][5] = {{1, 0, 1, 0, 0}, {0, 1, 1, 0, 1}, {0, 0, 0, 0, 0}};
    static const int64_t lens[] = {3, 5, 4};
    for (size_t c = 0; c < 3; c++) {
        int64_t k = lens[c];
        loom_tensor *in[2] = {make(LOOM_DTYPE_F32, 2, dims, x),
                              make(LOOM_DTYPE_BOOL, 1, &k, conds[c])};
        loom_tensor *out = NULL;
        CU_ASSERT_EQUAL_FATAL(run(ma, in, 2, &out, 1), LOOM_OK);
        int64_t kept = 0;
        for (int64_t i = 0; i < k; i++)
            kept += conds[c][i];
        int64_t want[2] = {3, kept};
        expect_shape(out, 2, want);
        const float *y = loom_tensor_data(out);
        for (int64_t r = 0; r < 3; r++) {
            int64_t j = 0;
            for (int64_t i = 0; i < k; i++)
                if (conds[c][i])
                    CU_ASSERT_EQUAL(y[r * kept + j++], x[r * 5 + i]);
        }
        loom_tensor_destroy(out);
        out = NULL;
        /* Flattened: the first K elements of x. */
        CU_ASSERT_EQUAL_FATAL(run(mf, in, 2, &out, 1), LOOM_OK);
        expect_shape(out, 1, &kept);
        y = loom_tensor_data(out);
        for (int64_t i = 0, j = 0; i < k; i++)
            if (conds[c][i])
                CU_ASSERT_EQUAL(y[j++], x[i]);
        loom_tensor_destroy(out);
        free_all(in, 2);
    }
    /* A condition longer than the axis is refused, naming the node. */
    int64_t k = 6;
    unsigned char longc[6] = {1, 1, 1, 1, 1, 1};
    loom_tensor *in[2] = {make(LOOM_DTYPE_F32, 2, dims, x), make(LOOM_DTYPE_BOOL, 1, &k, longc)};
    loom_tensor *out = NULL;
    CU_ASSERT_EQUAL(loom_model_run(ma, (const loom_tensor *const *)in, 2, &out, 1, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "cmp"));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "condition"));
    CU_ASSERT_PTR_NULL(out);
    free_all(in, 2);
    loom_model_destroy(ma);
    loom_model_destroy(mf);
}

/* ---- Unique -------------------------------------------------------------------------------- */

/* Rows I and J of X (n x m) compared lexicographically. */
static int row_cmp(const float *x, int64_t m, int64_t i, int64_t j)
{
    for (int64_t k = 0; k < m; k++)
        if (x[i * m + k] != x[j * m + k])
            return x[i * m + k] < x[j * m + k] ? -1 : 1;
    return 0;
}

/* Reference Unique over the N rows of X (M wide): FIRST[U] first occurrences, in sorted order
 * of the rows when SORTED, else in order of appearance; COUNTS; INVERSE[N]. */
static int64_t unique_ref(const float *x, int64_t n, int64_t m, int sorted, int64_t *first,
                          int64_t *counts, int64_t *inverse)
{
    int64_t u = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t j = 0;
        while (j < u && row_cmp(x, m, first[j], i) != 0)
            j++;
        if (j == u)
            first[u++] = i;
    }
    if (sorted) /* selection sort of the distinct rows */
        for (int64_t a = 0; a < u; a++)
            for (int64_t b = a + 1; b < u; b++)
                if (row_cmp(x, m, first[b], first[a]) < 0) {
                    int64_t t = first[a];
                    first[a] = first[b];
                    first[b] = t;
                }
    for (int64_t j = 0; j < u; j++)
        counts[j] = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < u; j++)
            if (row_cmp(x, m, first[j], i) == 0) {
                inverse[i] = j;
                counts[j]++;
            }
    return u;
}

static void check_unique(loom_model *mod, const float *x, int64_t n, int64_t m, int sorted)
{
    int64_t dims[2] = {n, m};
    loom_tensor *in = make(LOOM_DTYPE_F32, m ? 2 : 1, dims, x), *out[4] = {NULL};
    CU_ASSERT_EQUAL_FATAL(run(mod, &in, 1, out, 4), LOOM_OK);
    int64_t first[64], counts[64], inverse[64];
    int64_t mm = m ? m : 1;
    int64_t u = unique_ref(x, n, mm, sorted, first, counts, inverse);
    int64_t ydims[2] = {u, m};
    expect_shape(out[0], m ? 2 : 1, ydims);
    expect_shape(out[1], 1, &u);
    expect_shape(out[2], 1, &n);
    expect_shape(out[3], 1, &u);
    const float *y = loom_tensor_data(out[0]);
    const int64_t *ix = loom_tensor_data(out[1]), *inv = loom_tensor_data(out[2]),
                  *cnt = loom_tensor_data(out[3]);
    for (int64_t j = 0; j < u; j++) {
        for (int64_t k = 0; k < mm; k++)
            CU_ASSERT_EQUAL(y[j * mm + k], x[first[j] * mm + k]);
        CU_ASSERT_EQUAL(ix[j], first[j]);
        CU_ASSERT_EQUAL(cnt[j], counts[j]);
    }
    for (int64_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(inv[i], inverse[i]);
    loom_tensor_destroy(in);
    free_all(out, 4);
}

static void test_unique_sorted_and_unsorted_with_all_four_outputs(void)
{
    loom_model *ms = load("unique_sorted_axis"), *mu = load("unique_unsorted_flat");
    /* Rows with repeats, out of order. */
    float rows[7 * 3] = {2, 1, 0, 1, 5, 5, 2, 1, 0, -1, 0, 0, 1, 5, 5, 1, 5, 4, 2, 1, 0};
    check_unique(ms, rows, 7, 3, 1);
    check_unique(ms, rows, 1, 3, 1);
    float same[4 * 2] = {3, 3, 3, 3, 3, 3, 3, 3};
    check_unique(ms, same, 4, 2, 1);
    float flat[12] = {4, -1, 4, 0, 2.5f, -1, 7, 0, 0, 4, 9, -3};
    check_unique(mu, flat, 12, 0, 0);
    check_unique(mu, flat, 1, 0, 0);
    float rnd[40];
    for (int i = 0; i < 40; i++)
        rnd[i] = (float)(int)(frand() * 9.0f);
    check_unique(mu, rnd, 40, 0, 0);
    check_unique(ms, rnd, 20, 2, 1);
    loom_model_destroy(ms);
    loom_model_destroy(mu);
}

/* ---- NonMaxSuppression ----------------------------------------------------------------------- */

/* IoU of two boxes given as corners (y0, x0, y1, x1) in any order, or as centres
 * (xc, yc, w, h); 0 when either has no area. */
static float iou_ref(const float *a, const float *b, int center)
{
    float ay0, ax0, ay1, ax1, by0, bx0, by1, bx1;
    if (center) {
        ax0 = a[0] - a[2] / 2, ax1 = a[0] + a[2] / 2, ay0 = a[1] - a[3] / 2, ay1 = a[1] + a[3] / 2;
        bx0 = b[0] - b[2] / 2, bx1 = b[0] + b[2] / 2, by0 = b[1] - b[3] / 2, by1 = b[1] + b[3] / 2;
    } else {
        ay0 = fminf(a[0], a[2]), ay1 = fmaxf(a[0], a[2]), ax0 = fminf(a[1], a[3]),
        ax1 = fmaxf(a[1], a[3]);
        by0 = fminf(b[0], b[2]), by1 = fmaxf(b[0], b[2]), bx0 = fminf(b[1], b[3]),
        bx1 = fmaxf(b[1], b[3]);
    }
    float iw = fminf(ax1, bx1) - fmaxf(ax0, bx0), ih = fminf(ay1, by1) - fmaxf(ay0, by0);
    float aa = (ax1 - ax0) * (ay1 - ay0), ab = (bx1 - bx0) * (by1 - by0);
    if (iw <= 0 || ih <= 0 || aa <= 0 || ab <= 0)
        return 0;
    return iw * ih / (aa + ab - iw * ih);
}

/* Reference NMS: per batch and class, repeatedly keep the best remaining box (lowest index on
 * ties) among those above the threshold, and drop every remaining one overlapping it by more
 * than IOU. Writes triples to SEL; returns their count. */
static int64_t nms_ref(const float *boxes, const float *scores, int64_t nb, int64_t nc,
                       int64_t n, int64_t max_out, float iou, int has_thr, float thr, int center,
                       int64_t *sel)
{
    int64_t count = 0;
    unsigned char alive[64];
    for (int64_t b = 0; b < nb; b++)
        for (int64_t c = 0; c < nc; c++) {
            const float *s = scores + (b * nc + c) * n;
            for (int64_t i = 0; i < n; i++)
                alive[i] = !has_thr || s[i] > thr;
            for (int64_t kept = 0; kept < max_out; kept++) {
                int64_t best = -1;
                for (int64_t i = 0; i < n; i++)
                    if (alive[i] && (best < 0 || s[i] > s[best]))
                        best = i;
                if (best < 0)
                    break;
                alive[best] = 0;
                sel[count * 3] = b, sel[count * 3 + 1] = c, sel[count * 3 + 2] = best;
                count++;
                for (int64_t i = 0; i < n; i++)
                    if (alive[i] && iou_ref(boxes + (b * n + best) * 4, boxes + (b * n + i) * 4,
                                            center) > iou)
                        alive[i] = 0;
            }
        }
    return count;
}

static void random_boxes(float *boxes, int64_t count, int center)
{
    for (int64_t i = 0; i < count; i++) {
        float *p = boxes + i * 4;
        float y = frand() * 4, x = frand() * 4, h = 0.5f + frand() * 2, w = 0.5f + frand() * 2;
        if (center) {
            p[0] = x, p[1] = y, p[2] = w, p[3] = h;
        } else if (i % 3 == 0) { /* flipped corners */
            p[0] = y + h, p[1] = x + w, p[2] = y, p[3] = x;
        } else {
            p[0] = y, p[1] = x, p[2] = y + h, p[3] = x + w;
        }
    }
}

static void check_nms(loom_model *m, int center, int64_t nb, int64_t nc, int64_t n,
                      int64_t max_out, float iou, int has_thr, float thr)
{
    float boxes[2 * 16 * 4], scores[2 * 3 * 16];
    random_boxes(boxes, nb * n, center);
    for (int64_t i = 0; i < nb * nc * n; i++)
        scores[i] = (float)(int)(frand() * 10) / 10.0f; /* ties happen */
    int64_t bd[3] = {nb, n, 4}, sd[3] = {nb, nc, n}, one = 1;
    loom_tensor *in[5];
    size_t n_in = 0;
    in[n_in++] = make(LOOM_DTYPE_F32, 3, bd, boxes);
    in[n_in++] = make(LOOM_DTYPE_F32, 3, sd, scores);
    if (!center)
        in[n_in++] = make(LOOM_DTYPE_I64, 1, &one, &max_out);
    in[n_in++] = make(LOOM_DTYPE_F32, 1, &one, &iou);
    if (has_thr)
        in[n_in++] = make(LOOM_DTYPE_F32, 1, &one, &thr);
    loom_tensor *out = NULL;
    CU_ASSERT_EQUAL_FATAL(run(m, in, n_in, &out, 1), LOOM_OK);
    int64_t want[2 * 3 * 16 * 3];
    int64_t k = nms_ref(boxes, scores, nb, nc, n, max_out, iou, has_thr, thr, center, want);
    int64_t wd[2] = {k, 3};
    expect_shape(out, 2, wd);
    const int64_t *got = loom_tensor_data(out);
    for (int64_t i = 0; i < k * 3; i++)
        CU_ASSERT_EQUAL(got[i], want[i]);
    loom_tensor_destroy(out);
    free_all(in, n_in);
}

static void test_nms_box_formats_batches_classes_thresholds_and_zero_max(void)
{
    loom_model *mc = load("nms_corner"), *mm = load("nms_center");
    check_nms(mc, 0, 2, 3, 16, 16, 0.3f, 1, 0.25f);
    check_nms(mc, 0, 1, 1, 9, 3, 0.5f, 1, 0.0f);
    check_nms(mc, 0, 2, 2, 12, 5, 0.0f, 1, 0.55f);
    check_nms(mc, 0, 2, 3, 16, 0, 0.5f, 1, 0.0f); /* max_output_boxes_per_class 0: none */
    check_nms(mc, 0, 1, 2, 10, 4, 0.5f, 1, 2.0f); /* threshold above every score: none */
    check_nms(mm, 1, 2, 3, 16, 2, 0.4f, 0, 0); /* centre boxes, max 2 (a constant) */
    check_nms(mm, 1, 1, 1, 5, 2, 1.0f, 0, 0);
    /* An IoU threshold outside [0, 1]: one message naming the node, no output left. */
    float boxes[4] = {0, 0, 1, 1}, score = 0.5f, iou = 1.5f;
    int64_t bd[3] = {1, 1, 4}, sd[3] = {1, 1, 1}, one = 1;
    loom_tensor *in[3] = {make(LOOM_DTYPE_F32, 3, bd, boxes), make(LOOM_DTYPE_F32, 3, sd, &score),
                          make(LOOM_DTYPE_F32, 1, &one, &iou)};
    loom_tensor *out = NULL;
    CU_ASSERT_EQUAL(loom_model_run(mm, (const loom_tensor *const *)in, 3, &out, 1, NULL),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "'nms' (NonMaxSuppression)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "iou_threshold"));
    CU_ASSERT_PTR_NULL(out);
    free_all(in, 3);
    loom_model_destroy(mc);
    loom_model_destroy(mm);
}

/* ---- a chain through loom_model -------------------------------------------------------------- */

/* chain: nz = NonZero(x > 0.5), y = 2 GatherND(x, nz^T), z = Unique(gathered) + sum(x). */
static void check_chain(loom_model *m, const float *x, int64_t a, int64_t b, int expect_hit)
{
    int64_t dims[2] = {a, b};
    loom_tensor *in = make(LOOM_DTYPE_F32, 2, dims, x), *out[3] = {NULL, NULL, NULL};
    loom_model_run_stats rs = {.struct_size = sizeof rs};
    loom_status st = loom_model_run(m, (const loom_tensor *const *)&in, 1, out, 3, &rs);
    if (st != LOOM_OK)
        fprintf(stderr, "chain: %s\n", loom_last_error());
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    CU_ASSERT_EQUAL(rs.cache_hit, expect_hit);
    float g[64], sum = 0;
    int64_t k = 0, r[64], c[64];
    for (int64_t i = 0; i < a; i++)
        for (int64_t j = 0; j < b; j++) {
            sum += x[i * b + j];
            if (x[i * b + j] > 0.5f) {
                r[k] = i, c[k] = j;
                g[k++] = x[i * b + j];
            }
        }
    int64_t nzd[2] = {2, k};
    expect_shape(out[0], 2, nzd);
    expect_shape(out[1], 1, &k);
    const int64_t *nz = loom_tensor_data(out[0]);
    const float *y = loom_tensor_data(out[1]);
    for (int64_t i = 0; i < k; i++) {
        CU_ASSERT(nz[i] == r[i] && nz[k + i] == c[i]);
        CU_ASSERT_DOUBLE_EQUAL(y[i], 2 * g[i], 1e-6);
    }
    int64_t first[64], counts[64], inverse[64];
    int64_t u = unique_ref(g, k, 1, 1, first, counts, inverse);
    expect_shape(out[2], 1, &u);
    const float *z = loom_tensor_data(out[2]);
    for (int64_t j = 0; j < u; j++)
        CU_ASSERT_DOUBLE_EQUAL(z[j], g[first[j]] + sum, 1e-4);
    loom_tensor_destroy(in);
    free_all(out, 3);
}

static void test_chain_runs_in_stages_at_two_value_patterns(void)
{
    loom_model *m = load("chain");
    float x1[12] = {1, 0, 2, 0.25f, 3, 1, 0, 0, 2, 9, 0.5f, 1}; /* 7 above 0.5, 4 distinct */
    float x2[12] = {0, 0, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0};         /* 2 above, 1 distinct */
    check_chain(m, x1, 3, 4, 0);
    check_chain(m, x2, 3, 4, 0); /* same input shape, other sizes downstream: new stages */
    check_chain(m, x1, 3, 4, 1); /* every unit's specialisation is cached now */
    check_chain(m, x2, 3, 4, 1);
    float x3[12] = {0};
    check_chain(m, x3, 2, 6, 0); /* nothing above: empty tensors all the way */
    loom_model_stats ms = {.struct_size = sizeof ms};
    CU_ASSERT_EQUAL(loom_model_stats_get(m, &ms), LOOM_OK);
    CU_ASSERT_EQUAL(ms.runs, 5);
    CU_ASSERT(ms.hits > 0 && ms.misses > 0);
    loom_model_destroy(m);
}

/* unique_range: r = Range(0, max(Unique(x)), 1); the stage after Unique needs its output's
 * values, which it learns and binds. */
static void test_count_sizing_a_later_tensor_is_bound_as_a_value(void)
{
    loom_model *m = load("unique_range");
    static const int64_t xs[][5] = {{3, 1, 3, 5, 1}, {2, 2, 0, 1, 2}, {3, 1, 3, 5, 1}};
    static const int64_t lens[] = {5, 2, 5};
    for (size_t c = 0; c < 3; c++) {
        int64_t n = 5;
        loom_tensor *in = make(LOOM_DTYPE_I64, 1, &n, xs[c]), *out = NULL;
        CU_ASSERT_EQUAL_FATAL(run(m, &in, 1, &out, 1), LOOM_OK);
        expect_shape(out, 1, &lens[c]);
        const int64_t *r = loom_tensor_data(out);
        for (int64_t i = 0; i < lens[c]; i++)
            CU_ASSERT_EQUAL(r[i], i);
        loom_tensor_destroy(in);
        loom_tensor_destroy(out);
    }
    loom_model_stats ms = {.struct_size = sizeof ms};
    CU_ASSERT_EQUAL(loom_model_stats_get(m, &ms), LOOM_OK);
    CU_ASSERT(ms.hits >= 2); /* the third run repeats the first: every unit hits */
    loom_model_destroy(m);
}

/* ---- the registry's upper bounds --------------------------------------------------------------- */

static void expect_value(loom_graph *g, loom_value v, loom_dtype dt, uint32_t rank,
                         const int64_t *dims)
{
    loom_dtype got;
    uint32_t r;
    int64_t d[LOOM_MAX_RANK];
    CU_ASSERT_EQUAL_FATAL(loom_value_info(g, v, &got, &r, d), LOOM_OK);
    CU_ASSERT_EQUAL(got, dt);
    CU_ASSERT_EQUAL_FATAL(r, rank);
    for (uint32_t k = 0; k < rank; k++)
        CU_ASSERT_EQUAL(d[k], dims[k]);
}

static void test_inference_gives_upper_bounds_and_names_bad_input(void)
{
    loom_graph *g = loom_graph_create("bounds");
    int64_t xd[3] = {2, 3, 5}, bd[3] = {2, 7, 4}, sd[3] = {2, 3, 7}, cd = 4;
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 3, xd);
    loom_value y;
    CU_ASSERT_EQUAL(loom_graph_op(g, "NonZero", "nz", &x, 1, NULL, 0, &y, 1), LOOM_OK);
    int64_t nzd[2] = {3, 30};
    expect_value(g, y, LOOM_DTYPE_I64, 2, nzd);
    loom_value u[4];
    loom_attr ax = loom_attr_int("axis", -2);
    CU_ASSERT_EQUAL(loom_graph_op(g, "Unique", "uq", &x, 1, &ax, 1, u, 4), LOOM_OK);
    int64_t three = 3;
    expect_value(g, u[0], LOOM_DTYPE_F32, 3, xd);
    expect_value(g, u[2], LOOM_DTYPE_I64, 1, &three);
    loom_value cin[2] = {x, loom_input(g, "c", LOOM_DTYPE_BOOL, 1, &cd)};
    CU_ASSERT_EQUAL(loom_graph_op(g, "Compress", "cmp", cin, 2, NULL, 0, &y, 1), LOOM_OK);
    expect_value(g, y, LOOM_DTYPE_F32, 1, &cd);
    /* NMS: max_output_boxes_per_class 2 (a constant) bounds it at 2 x 3 x 2. */
    int64_t two = 2;
    loom_value nin[3] = {loom_input(g, "boxes", LOOM_DTYPE_F32, 3, bd),
                         loom_input(g, "scores", LOOM_DTYPE_F32, 3, sd),
                         loom_constant_i64s(g, 1, &two)};
    CU_ASSERT_EQUAL(loom_graph_op(g, "NonMaxSuppression", "nms", nin, 3, NULL, 0, &y, 1),
                    LOOM_OK);
    int64_t sel[2] = {12, 3};
    expect_value(g, y, LOOM_DTYPE_I64, 2, sel);
    /* Scores that do not match the boxes: one message naming the node. */
    int64_t bad[3] = {2, 3, 6};
    nin[1] = loom_input(g, "bad_scores", LOOM_DTYPE_F32, 3, bad);
    CU_ASSERT_NOT_EQUAL(loom_graph_op(g, "NonMaxSuppression", "nms2", nin, 3, NULL, 0, &y, 1),
                        LOOM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "nms2"));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "scores"));
    loom_graph_destroy(g);
}

/* ---- the static plan API ------------------------------------------------------------------- */

static void test_plan_api_refuses_value_dependent_node_by_name(void)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/chain.onnx", data_dir);
    loom_onnx_dim d[2] = {{"a", 3}, {"b", 4}};
    loom_onnx_options o = {.struct_size = sizeof o, .dims = d, .n_dims = 2};
    loom_graph *g = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_onnx_load(p, &o, &g), LOOM_OK);
    loom_plan *plan = NULL;
    CU_ASSERT_EQUAL(loom_plan_create(test_rt, g, NULL, &plan), LOOM_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NULL(plan);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "'nz' (NonZero)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "loom_model"));
    loom_graph_destroy(g);
}

/* The models' folder, then the shared runtime (test_support.c). */
static int suite_init(void)
{
    const char *d = getenv("LOOM_VALUE_DEPENDENT_DATA");
    snprintf(data_dir, sizeof data_dir, "%s", d ? d : "tests/data/value_dependent");
    return test_rt_open_default();
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        TEST_ENTRY(test_nonzero_on_odd_shapes_and_all_zero_input),
        TEST_ENTRY(test_compress_with_and_without_axis),
        TEST_ENTRY(test_unique_sorted_and_unsorted_with_all_four_outputs),
        TEST_ENTRY(test_nms_box_formats_batches_classes_thresholds_and_zero_max),
        TEST_ENTRY(test_chain_runs_in_stages_at_two_value_patterns),
        TEST_ENTRY(test_count_sizing_a_later_tensor_is_bound_as_a_value),
        TEST_ENTRY(test_inference_gives_upper_bounds_and_names_bad_input),
        TEST_ENTRY(test_plan_api_refuses_value_dependent_node_by_name),
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"value_dependent", tests, suite_init, test_rt_close, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
