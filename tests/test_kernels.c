/*
 * Kernel conformance of the CPU backend: every operator of the foundation set is run through the
 * public API (graph -> check -> plan on "cpu" -> run) and its output compared with naive
 * reference loops written in this file from the ONNX opset-18 specification, never with the
 * library's own kernels. Inputs come from a fixed-seed xorshift generator, reseeded before every
 * test so that a test's data does not depend on which tests ran before it.
 *
 * Run all tests: ./test_kernels; only tests whose name contains WORD: ./test_kernels WORD.
 * Exit status is 0 only when every assertion passed.
 */
#include <loom/graph.h>
#include <loom/runtime.h>

#include "test_support.h"

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double k_pi = 3.14159265358979323846;

/* Every test starts the shared generator (test_support.h) from the same seed. */
static void rng_reset(void)
{
    rng_seed(0x2545F4914F6CDD1Dull);
}

/* ---- one graph run: the helper layer ----------------------------------------------------- */

/* The case itself (tc, tc_init, tc_buf, tc_rand, tc_data, ...) is in test_support.h. */

/* An f32 operand holding DATA: a graph input, or a constant when AS_CONST. */
static loom_value tc_operand(tc *c, int as_const, shp s, float *data)
{
    return as_const ? tc_const_data(c, F32, s, data) : tc_data(c, 0, F32, s, data);
}

static loom_value tc_rand_input(tc *c, shp s, float lo, float hi, float **data)
{
    *data = tc_rand(c, s, lo, hi);
    return tc_data(c, 0, F32, s, *data);
}

/* Integer (or bool) storage of DT holding VALS. */
static void *tc_ints(tc *c, loom_dtype dt, shp s, const int64_t *vals)
{
    int64_t n = numel(s);
    void *p = tc_buf(c, (size_t)n * loom_dtype_size(dt));
    for (int64_t i = 0; i < n; i++)
        elem_store_int(p, dt, i, vals[i]);
    return p;
}

/* One generic node with a single output. */
static loom_value tc_op(tc *c, const char *op, const char *node, const loom_value *ins, size_t n_ins,
                        const loom_attr *attrs, size_t n_attrs)
{
    loom_value y = LOOM_NO_VALUE;
    loom_graph_op(c->g, op, node, ins, n_ins, attrs, n_attrs, &y, 1);
    return y;
}

/* Combinations that ONNX allows but the library may not support (a dtype, an optional form):
 * a clean refusal while checking or planning is noted and printed at the end, not failed; once
 * the graph is accepted, the run must succeed and be right. */
#define MAX_NOTES 256
static char g_notes[MAX_NOTES][200];
static size_t g_n_notes;

static int tc_run_if_supported(tc *c, const char *what, int line)
{
    loom_status st = tc_run_status(c, line, 1);
    if (st == LOOM_OK)
        return 1;
    if (c->run_stage <= 1 && (st == LOOM_ERR_UNSUPPORTED || st == LOOM_ERR_INVALID_ARGUMENT)) {
        char note[sizeof g_notes[0]];
        snprintf(note, sizeof note, "%s: %s", what, loom_last_error());
        size_t k = 0;
        while (k < g_n_notes && strncmp(g_notes[k], what, strlen(what)))
            k++;
        if (k == g_n_notes && g_n_notes < MAX_NOTES)
            memcpy(g_notes[g_n_notes++], note, sizeof note);
        return 0;
    }
    fprintf(stderr, "\n    line %d: %s accepted but failed to run: %s: %s\n", line, what,
            loom_status_name(st), loom_last_error());
    CU_assertImplementation(CU_FALSE, (unsigned)line, "an accepted graph runs", __FILE__, "",
                            CU_FALSE);
    return 0;
}

/* Build-plan-run; on failure free the case and leave the (void) function. */
#define RUN_OK(c)                          \
    do {                                   \
        if (!tc_run((c), line)) {       \
            tc_free(c);                    \
            return;                        \
        }                                  \
    } while (0)

/* ---- comparisons ------------------------------------------------------------------------- */

#define CHECK_F32(c, i, want, ref, atol, rtol) check_tensor((c)->out[i], F32, want, ref, atol, rtol, line)
#define CHECK_EXACT(c, i, dt, want, ref) check_tensor((c)->out[i], dt, want, ref, 0, 0, line)

static double k_tol(int64_t k)
{
    return 1e-4 * sqrt((double)(k > 1 ? k : 1));
}

/* ===========================================================================================
 * Reference implementations, from the ONNX operator specification.
 * =========================================================================================== */

static double ref_relu(double x) { return x > 0 ? x : 0; }
static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static double ref_neg(double x) { return -x; }
static double ref_identity(double x) { return x; }
static double ref_gelu(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double ref_gelu_tanh(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / k_pi) * (x + 0.044715 * x * x * x)));
}

static double ref_add(double a, double b) { return a + b; }
static double ref_sub(double a, double b) { return a - b; }
static double ref_mul(double a, double b) { return a * b; }
static double ref_div(double a, double b) { return a / b; }
static double ref_min(double a, double b) { return a < b ? a : b; }
static double ref_max(double a, double b) { return a > b ? a : b; }

/* numpy.matmul: 1-D operands are promoted (A to [1,K], B to [K,1]) and the added dim removed. */
static double *ref_matmul(tc *c, const float *a, shp as, const float *b, shp bs, shp *ys)
{
    shp A = as, B = bs;
    if (as.rank == 1)
        A = SHP(1, as.d[0]);
    if (bs.rank == 1)
        B = SHP(bs.d[0], 1);
    int64_t M = A.d[A.rank - 2], K = A.d[A.rank - 1], N = B.d[B.rank - 1];
    shp ab = shp_make(A.d, A.rank - 2), bb = shp_make(B.d, B.rank - 2);
    shp batch = bcast(ab, bb);
    *ys = batch;
    if (as.rank > 1)
        ys->d[ys->rank++] = M;
    if (bs.rank > 1)
        ys->d[ys->rank++] = N;
    int64_t nb = numel(batch);
    double *y = tc_dbuf(c, nb * M * N);
    int64_t idx[LOOM_MAX_RANK];
    for (int64_t bi = 0; bi < nb; bi++) {
        unravel(bi, batch, idx);
        const float *pa = a + bcast_off(batch.rank, idx, ab) * M * K;
        const float *pb = b + bcast_off(batch.rank, idx, bb) * K * N;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++)
                    acc += (double)pa[i * K + k] * pb[k * N + j];
                y[(bi * M + i) * N + j] = acc;
            }
    }
    return y;
}

/* Y = alpha * op(A) op(B) + beta * C, C unidirectionally broadcast to [M, N]. */
static double *ref_gemm(tc *c, const float *a, const float *b, const float *cc, shp cs, int64_t M,
                        int64_t K, int64_t N, double alpha, double beta, int ta, int tb)
{
    double *y = tc_dbuf(c, M * N);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) {
                double av = ta ? a[k * M + i] : a[i * K + k];
                double bv = tb ? b[j * K + k] : b[k * N + j];
                acc += av * bv;
            }
            double v = alpha * acc;
            if (cc) {
                int64_t idx[2] = {i, j};
                v += beta * cc[bcast_off(2, idx, cs)];
            }
            y[i * N + j] = v;
        }
    return y;
}

/* Resolved window parameters for Conv and pooling. */
typedef struct win {
    uint32_t S;
    int64_t k[3], s[3], d[3], pb[3], pe[3];
    int64_t group;
    int ceil_mode, cip;
} win;

/* Explicit parameters; every array fully given. */
static win win_make(uint32_t S, const int64_t *k, const int64_t *s, const int64_t *d,
                    const int64_t *pads)
{
    win w;
    memset(&w, 0, sizeof w);
    w.S = S;
    w.group = 1;
    for (uint32_t i = 0; i < S; i++) {
        w.k[i] = k ? k[i] : 1;
        w.s[i] = s ? s[i] : 1;
        w.d[i] = d ? d[i] : 1;
        w.pb[i] = pads ? pads[i] : 0;
        w.pe[i] = pads ? pads[S + i] : 0;
    }
    return w;
}

/* auto_pad SAME_UPPER / SAME_LOWER: output = ceil(in / stride); the odd pad goes to the end
 * (UPPER) or the beginning (LOWER). */
static void win_same(win *w, const int64_t *in, int upper)
{
    for (uint32_t i = 0; i < w->S; i++) {
        int64_t out = (in[i] + w->s[i] - 1) / w->s[i];
        int64_t total = (out - 1) * w->s[i] + (w->k[i] - 1) * w->d[i] + 1 - in[i];
        if (total < 0)
            total = 0;
        if (upper) {
            w->pb[i] = total / 2;
            w->pe[i] = total - w->pb[i];
        } else {
            w->pe[i] = total / 2;
            w->pb[i] = total - w->pe[i];
        }
    }
}

static int64_t win_out(const win *w, uint32_t i, int64_t in)
{
    int64_t span = w->d[i] * (w->k[i] - 1) + 1;
    int64_t num = in + w->pb[i] + w->pe[i] - span;
    if (num < 0)
        return 0;
    int64_t o = w->ceil_mode ? (num + w->s[i] - 1) / w->s[i] + 1 : num / w->s[i] + 1;
    /* ceil mode: a window that would start in the end padding is dropped */
    if (w->ceil_mode && (o - 1) * w->s[i] >= in + w->pb[i])
        o--;
    return o;
}

static double *ref_conv(tc *c, const float *x, shp xs, const float *wt, shp ws, const float *b,
                        win w, shp *ys)
{
    uint32_t S = xs.rank - 2;
    int64_t N = xs.d[0], C = xs.d[1], M = ws.d[0], Cg = ws.d[1], G = w.group, Mg = M / G;
    shp in_sp = shp_make(xs.d + 2, S), k_sp = shp_make(ws.d + 2, S), o_sp = in_sp;
    for (uint32_t i = 0; i < S; i++) {
        w.k[i] = ws.d[2 + i];
        o_sp.d[i] = win_out(&w, i, xs.d[2 + i]);
    }
    *ys = SHP(N, M);
    for (uint32_t i = 0; i < S; i++)
        ys->d[ys->rank++] = o_sp.d[i];
    int64_t n_in = numel(in_sp), n_k = numel(k_sp), n_o = numel(o_sp);
    double *y = tc_dbuf(c, N * M * n_o);
    int64_t oi[3], ki[3], pos[3];
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++) {
            int64_t g = m / Mg;
            for (int64_t o = 0; o < n_o; o++) {
                unravel(o, o_sp, oi);
                double acc = b ? b[m] : 0.0;
                for (int64_t cg = 0; cg < Cg; cg++) {
                    int64_t ch = g * Cg + cg;
                    for (int64_t kk = 0; kk < n_k; kk++) {
                        unravel(kk, k_sp, ki);
                        int inside = 1;
                        for (uint32_t i = 0; i < S; i++) {
                            pos[i] = oi[i] * w.s[i] - w.pb[i] + ki[i] * w.d[i];
                            if (pos[i] < 0 || pos[i] >= in_sp.d[i])
                                inside = 0;
                        }
                        if (!inside)
                            continue;
                        acc += (double)x[(n * C + ch) * n_in + ravel(in_sp, pos)] *
                               wt[(m * Cg + cg) * n_k + kk];
                    }
                }
                y[(n * M + m) * n_o + o] = acc;
            }
        }
    return y;
}

enum { POOL_MAX, POOL_AVG };

/* MaxPool ignores padding; AveragePool divides by the valid elements of the window, or with
 * count_include_pad by the window's elements inside the padded input. */
static double *ref_pool(tc *c, int kind, const float *x, shp xs, win w, shp *ys)
{
    uint32_t S = xs.rank - 2;
    int64_t N = xs.d[0], C = xs.d[1];
    shp in_sp = shp_make(xs.d + 2, S), k_sp = shp_make(w.k, S), o_sp = in_sp;
    for (uint32_t i = 0; i < S; i++)
        o_sp.d[i] = win_out(&w, i, xs.d[2 + i]);
    *ys = SHP(N, C);
    for (uint32_t i = 0; i < S; i++)
        ys->d[ys->rank++] = o_sp.d[i];
    int64_t n_in = numel(in_sp), n_k = numel(k_sp), n_o = numel(o_sp);
    double *y = tc_dbuf(c, N * C * n_o);
    int64_t oi[3], ki[3], pos[3];
    for (int64_t nc = 0; nc < N * C; nc++)
        for (int64_t o = 0; o < n_o; o++) {
            unravel(o, o_sp, oi);
            double acc = kind == POOL_MAX ? -INFINITY : 0.0;
            int64_t valid = 0, padded = 0;
            for (int64_t kk = 0; kk < n_k; kk++) {
                unravel(kk, k_sp, ki);
                int inside = 1, in_padded = 1;
                for (uint32_t i = 0; i < S; i++) {
                    pos[i] = oi[i] * w.s[i] - w.pb[i] + ki[i] * w.d[i];
                    if (pos[i] < 0 || pos[i] >= in_sp.d[i])
                        inside = 0;
                    if (pos[i] < -w.pb[i] || pos[i] >= in_sp.d[i] + w.pe[i])
                        in_padded = 0;
                }
                padded += in_padded;
                if (!inside)
                    continue;
                double v = x[nc * n_in + ravel(in_sp, pos)];
                valid++;
                if (kind == POOL_MAX)
                    acc = v > acc ? v : acc;
                else
                    acc += v;
            }
            if (kind == POOL_AVG)
                acc /= (double)(w.cip ? padded : valid);
            y[nc * n_o + o] = acc;
        }
    return y;
}

static double *ref_softmax(tc *c, const float *x, shp s, int64_t axis)
{
    if (axis < 0)
        axis += s.rank;
    int64_t outer = 1, inner = 1, n = s.d[axis];
    for (int64_t k = 0; k < axis; k++)
        outer *= s.d[k];
    for (int64_t k = axis + 1; k < (int64_t)s.rank; k++)
        inner *= s.d[k];
    double *y = tc_dbuf(c, numel(s));
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < n; j++)
                mx = fmax(mx, x[(o * n + j) * inner + i]);
            for (int64_t j = 0; j < n; j++)
                sum += exp(x[(o * n + j) * inner + i] - mx);
            for (int64_t j = 0; j < n; j++)
                y[(o * n + j) * inner + i] = exp(x[(o * n + j) * inner + i] - mx) / sum;
        }
    return y;
}

/* LayerNormalization: statistics over the dims from AXIS on; SCALE/BIAS have those dims. */
static double *ref_layer_norm(tc *c, const float *x, shp s, const float *scale, const float *bias,
                              int64_t axis, double eps)
{
    if (axis < 0)
        axis += s.rank;
    int64_t outer = 1, inner = 1;
    for (int64_t k = 0; k < (int64_t)s.rank; k++)
        *(k < axis ? &outer : &inner) *= s.d[k];
    double *y = tc_dbuf(c, numel(s));
    for (int64_t o = 0; o < outer; o++) {
        const float *row = x + o * inner;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < inner; i++)
            mean += row[i];
        mean /= (double)inner;
        for (int64_t i = 0; i < inner; i++)
            var += (row[i] - mean) * (row[i] - mean);
        var /= (double)inner;
        for (int64_t i = 0; i < inner; i++)
            y[o * inner + i] =
                (row[i] - mean) / sqrt(var + eps) * scale[i] + (bias ? bias[i] : 0.0);
    }
    return y;
}

static double *ref_batch_norm(tc *c, const float *x, shp s, const float *scale, const float *bias,
                              const float *mean, const float *var, double eps)
{
    int64_t N = s.d[0], C = s.d[1], inner = 1;
    for (uint32_t k = 2; k < s.rank; k++)
        inner *= s.d[k];
    double *y = tc_dbuf(c, numel(s));
    for (int64_t n = 0; n < N; n++)
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t i = 0; i < inner; i++) {
                int64_t at = (n * C + ch) * inner + i;
                y[at] = (x[at] - mean[ch]) / sqrt(var[ch] + eps) * scale[ch] + bias[ch];
            }
    return y;
}

/* Transpose: Y[i_0..] = X[j] with j[perm[k]] = i_k. PERM NULL reverses. */
static double *ref_transpose(tc *c, const void *x, loom_dtype dt, shp s, const int64_t *perm,
                             shp *ys)
{
    int64_t p[LOOM_MAX_RANK];
    for (uint32_t k = 0; k < s.rank; k++)
        p[k] = perm ? perm[k] : (int64_t)(s.rank - 1 - k);
    *ys = s;
    for (uint32_t k = 0; k < s.rank; k++)
        ys->d[k] = s.d[p[k]];
    int64_t n = numel(s), oi[LOOM_MAX_RANK], ii[LOOM_MAX_RANK];
    double *y = tc_dbuf(c, n);
    for (int64_t o = 0; o < n; o++) {
        unravel(o, *ys, oi);
        for (uint32_t k = 0; k < s.rank; k++)
            ii[p[k]] = oi[k];
        y[o] = elem_load(x, dt, ravel(s, ii));
    }
    return y;
}

/* Concat along AXIS (non-negative) of N tensors. */
static double *ref_concat(tc *c, const void *const *xs, loom_dtype dt, const shp *ss, size_t n,
                          int64_t axis, shp *ys)
{
    *ys = ss[0];
    ys->d[axis] = 0;
    for (size_t t = 0; t < n; t++)
        ys->d[axis] += ss[t].d[axis];
    int64_t outer = 1, inner = 1;
    for (int64_t k = 0; k < axis; k++)
        outer *= ys->d[k];
    for (int64_t k = axis + 1; k < (int64_t)ys->rank; k++)
        inner *= ys->d[k];
    double *y = tc_dbuf(c, numel(*ys));
    int64_t at = 0;
    for (int64_t o = 0; o < outer; o++)
        for (size_t t = 0; t < n; t++) {
            int64_t chunk = ss[t].d[axis] * inner;
            for (int64_t i = 0; i < chunk; i++)
                y[at++] = elem_load(xs[t], dt, o * chunk + i);
        }
    return y;
}

/* The part of X along AXIS from OFFSET of LENGTH elements (for Split). */
static double *ref_narrow(tc *c, const float *x, shp s, int64_t axis, int64_t offset,
                          int64_t length, shp *ys)
{
    *ys = s;
    ys->d[axis] = length;
    int64_t n = numel(*ys), idx[LOOM_MAX_RANK];
    double *y = tc_dbuf(c, n);
    for (int64_t o = 0; o < n; o++) {
        unravel(o, *ys, idx);
        idx[axis] += offset;
        y[o] = x[ravel(s, idx)];
    }
    return y;
}

/* Slice with ONNX clamping: a negative start/end counts from the end; for a positive step
 * start and end clamp to [0, dim]; for a negative step start clamps to [0, dim-1] and end to
 * [-1, dim-1]. */
static double *ref_slice(tc *c, const float *x, shp s, size_t n, const int64_t *starts,
                         const int64_t *ends, const int64_t *axes, const int64_t *steps, shp *ys)
{
    int64_t first[LOOM_MAX_RANK], step[LOOM_MAX_RANK];
    *ys = s;
    for (uint32_t k = 0; k < s.rank; k++) {
        first[k] = 0;
        step[k] = 1;
    }
    for (size_t j = 0; j < n; j++) {
        int64_t ax = axes ? axes[j] : (int64_t)j;
        if (ax < 0)
            ax += s.rank;
        int64_t st = steps ? steps[j] : 1, dim = s.d[ax];
        int64_t b = starts[j], e = ends[j], len;
        if (b < 0)
            b += dim;
        if (e < 0)
            e += dim;
        if (st > 0) {
            b = b < 0 ? 0 : b > dim ? dim : b;
            e = e < 0 ? 0 : e > dim ? dim : e;
            len = e > b ? (e - b + st - 1) / st : 0;
        } else {
            b = b < 0 ? 0 : b > dim - 1 ? dim - 1 : b;
            e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
            len = b > e ? (b - e + (-st) - 1) / (-st) : 0;
        }
        first[ax] = b;
        step[ax] = st;
        ys->d[ax] = len;
    }
    int64_t total = numel(*ys), idx[LOOM_MAX_RANK];
    double *y = tc_dbuf(c, total);
    for (int64_t o = 0; o < total; o++) {
        unravel(o, *ys, idx);
        for (uint32_t k = 0; k < s.rank; k++)
            idx[k] = first[k] + idx[k] * step[k];
        y[o] = x[ravel(s, idx)];
    }
    return y;
}

/* Gather: Y = data[:axis] + indices.shape + data[axis+1:], negative indices count from the end. */
static double *ref_gather(tc *c, const float *x, shp s, const int64_t *ind, shp is, int64_t axis,
                          shp *ys)
{
    if (axis < 0)
        axis += s.rank;
    int64_t outer = 1, inner = 1, A = s.d[axis], ni = numel(is);
    for (int64_t k = 0; k < axis; k++)
        outer *= s.d[k];
    for (int64_t k = axis + 1; k < (int64_t)s.rank; k++)
        inner *= s.d[k];
    ys->rank = 0;
    for (int64_t k = 0; k < axis; k++)
        ys->d[ys->rank++] = s.d[k];
    for (uint32_t k = 0; k < is.rank; k++)
        ys->d[ys->rank++] = is.d[k];
    for (int64_t k = axis + 1; k < (int64_t)s.rank; k++)
        ys->d[ys->rank++] = s.d[k];
    double *y = tc_dbuf(c, outer * ni * inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < ni; j++) {
            int64_t i = ind[j] < 0 ? ind[j] + A : ind[j];
            for (int64_t k = 0; k < inner; k++)
                y[(o * ni + j) * inner + k] = x[(o * A + i) * inner + k];
        }
    return y;
}

enum { RED_SUM, RED_MEAN, RED_MAX };

/* Reduce over AXES (N of them; N = 0: all). */
static double *ref_reduce(tc *c, int kind, const float *x, shp s, size_t n, const int64_t *axes,
                          int keepdims, shp *ys)
{
    int mask[LOOM_MAX_RANK] = {0};
    for (uint32_t k = 0; k < s.rank; k++)
        mask[k] = n == 0;
    for (size_t j = 0; j < n; j++)
        mask[axes[j] < 0 ? axes[j] + s.rank : axes[j]] = 1;
    shp kd = s;
    int64_t count = 1;
    ys->rank = 0;
    for (uint32_t k = 0; k < s.rank; k++) {
        if (mask[k]) {
            count *= s.d[k];
            kd.d[k] = 1;
            if (keepdims)
                ys->d[ys->rank++] = 1;
        } else {
            ys->d[ys->rank++] = s.d[k];
        }
    }
    int64_t no = numel(kd), ni = numel(s), idx[LOOM_MAX_RANK];
    double *y = tc_dbuf(c, no);
    for (int64_t o = 0; o < no; o++)
        y[o] = kind == RED_MAX ? -INFINITY : 0.0;
    for (int64_t i = 0; i < ni; i++) {
        unravel(i, s, idx);
        for (uint32_t k = 0; k < s.rank; k++)
            if (mask[k])
                idx[k] = 0;
        int64_t o = ravel(kd, idx);
        if (kind == RED_MAX)
            y[o] = fmax(y[o], x[i]);
        else
            y[o] += x[i];
    }
    if (kind == RED_MEAN)
        for (int64_t o = 0; o < no; o++)
            y[o] /= (double)count;
    return y;
}

/* ===========================================================================================
 * Elementwise unary operators
 * =========================================================================================== */

typedef loom_value (*unary_builder)(loom_graph *, loom_value);
typedef double (*unary_ref)(double);

static shp unary_shape(int i)
{
    switch (i) {
    case 0: return SHP(7, 13);
    case 1: return SHP(33, 65);
    case 2: return SHP(1);
    case 3: return SCALAR;
    case 4: return SHP(2, 3, 4, 5);
    case 5: return SHP(0, 3);
    case 6: return SHP(4, 0, 2);
    default: return SHP(1000);
    }
}
#define N_UNARY_SHAPES 8

/* One unary case through the generic form. */
static void unary_one(const char *op, unary_ref ref, shp s, float lo, float hi, double atol,
                      double rtol, int line)
{
    tc c;
    tc_init(&c);
    float *x;
    loom_value vx = tc_rand_input(&c, s, lo, hi, &x);
    loom_output(c.g, tc_op(&c, op, NULL, &vx, 1, NULL, 0), "y");
    RUN_OK(&c);
    int64_t n = numel(s);
    double *r = tc_dbuf(&c, n);
    for (int64_t k = 0; k < n; k++)
        r[k] = ref(x[k]);
    CHECK_F32(&c, 0, s, r, atol, rtol);
    tc_free(&c);
}

/* OP over every test shape; even cases use BUILD, odd cases the generic loom_graph_op. */
static void unary_all_shapes(const char *op, unary_builder build, unary_ref ref, float lo,
                             float hi, double atol, double rtol, int line)
{
    for (int i = 0; i < N_UNARY_SHAPES; i++) {
        shp s = unary_shape(i);
        tc c;
        tc_init(&c);
        float *x;
        loom_value vx = tc_rand_input(&c, s, lo, hi, &x);
        loom_value vy = (i % 2 == 0 && build) ? build(c.g, vx) : tc_op(&c, op, NULL, &vx, 1, NULL, 0);
        loom_output(c.g, vy, "y");
        RUN_OK(&c);
        int64_t n = numel(s);
        double *r = tc_dbuf(&c, n);
        for (int64_t k = 0; k < n; k++)
            r[k] = ref(x[k]);
        CHECK_F32(&c, 0, s, r, atol, rtol);
        tc_free(&c);
    }
}

static void test_relu_zeroes_negatives_and_keeps_positives(void)
{
    unary_all_shapes("Relu", loom_relu, ref_relu, -2, 2, 0, 0, __LINE__);
}

static void test_sigmoid_matches_logistic_function(void)
{
    unary_all_shapes("Sigmoid", loom_sigmoid, ref_sigmoid, -20, 20, 1e-5, 1e-4, __LINE__);
}

static void test_tanh_matches_reference(void)
{
    unary_all_shapes("Tanh", loom_tanh, tanh, -6, 6, 1e-5, 1e-4, __LINE__);
}

static void test_erf_matches_reference(void)
{
    unary_all_shapes("Erf", loom_erf, erf, -4, 4, 1e-5, 1e-4, __LINE__);
}

static void test_sqrt_matches_reference_on_nonnegative_inputs(void)
{
    unary_all_shapes("Sqrt", loom_sqrt, sqrt, 0, 100, 1e-5, 1e-4, __LINE__);
}

static void test_exp_matches_reference(void)
{
    unary_all_shapes("Exp", loom_exp, exp, -10, 10, 1e-5, 1e-4, __LINE__);
}

static void test_log_matches_reference_on_positive_inputs(void)
{
    unary_all_shapes("Log", loom_log, log, 1e-3f, 1e3f, 1e-5, 1e-4, __LINE__);
}

static void test_neg_flips_sign(void)
{
    unary_all_shapes("Neg", loom_neg, ref_neg, -5, 5, 0, 0, __LINE__);
}

static void test_abs_drops_sign(void)
{
    unary_all_shapes("Abs", loom_abs, fabs, -5, 5, 0, 0, __LINE__);
}

static void test_identity_copies_values_unchanged(void)
{
    unary_all_shapes("Identity", loom_identity, ref_identity, -5, 5, 0, 0, __LINE__);
}

static void test_gelu_exact_matches_erf_formula(void)
{
    unary_all_shapes("Gelu", NULL, ref_gelu, -6, 6, 1e-5, 1e-4, __LINE__);
    /* and through the builder with approximate NULL and "none" */
    for (int i = 0; i < 2; i++) {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        float *x;
        shp s = SHP(7, 13);
        loom_value vx = tc_rand_input(&c, s, -6, 6, &x);
        loom_output(c.g, loom_gelu(c.g, vx, i ? "none" : NULL), "y");
        RUN_OK(&c);
        double *r = tc_dbuf(&c, numel(s));
        for (int64_t k = 0; k < numel(s); k++)
            r[k] = ref_gelu(x[k]);
        CHECK_F32(&c, 0, s, r, 1e-5, 1e-4);
        tc_free(&c);
    }
}

static void test_gelu_tanh_approximation_matches_formula(void)
{
    for (int i = 0; i < 3; i++) {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        float *x;
        shp s = i == 2 ? SHP(0, 4) : i ? SHP(33, 65) : SHP(7, 13);
        loom_value vx = tc_rand_input(&c, s, -6, 6, &x);
        loom_value vy;
        if (i == 1) {
            loom_attr a = loom_attr_string("approximate", "tanh");
            vy = tc_op(&c, "Gelu", NULL, &vx, 1, &a, 1);
        } else {
            vy = loom_gelu(c.g, vx, "tanh");
        }
        loom_output(c.g, vy, "y");
        RUN_OK(&c);
        double *r = tc_dbuf(&c, numel(s));
        for (int64_t k = 0; k < numel(s); k++)
            r[k] = ref_gelu_tanh(x[k]);
        CHECK_F32(&c, 0, s, r, 1e-5, 1e-4);
        tc_free(&c);
    }
}

static void test_leaky_relu_scales_negatives_by_alpha(void)
{
    for (int i = 0; i < N_UNARY_SHAPES; i++) {
        int line = __LINE__;
        shp s = unary_shape(i);
        tc c;
        tc_init(&c);
        float *x;
        loom_value vx = tc_rand_input(&c, s, -3, 3, &x);
        double alpha;
        loom_value vy;
        if (i % 3 == 0) {
            alpha = 0.01; /* ONNX default when the attribute is absent */
            vy = tc_op(&c, "LeakyRelu", NULL, &vx, 1, NULL, 0);
        } else if (i % 3 == 1) {
            alpha = 0.2f;
            loom_attr a = loom_attr_float("alpha", 0.2f);
            vy = tc_op(&c, "LeakyRelu", NULL, &vx, 1, &a, 1);
        } else {
            alpha = 0.1f;
            vy = loom_leaky_relu(c.g, vx, 0.1f);
        }
        loom_output(c.g, vy, "y");
        RUN_OK(&c);
        double *r = tc_dbuf(&c, numel(s));
        for (int64_t k = 0; k < numel(s); k++)
            r[k] = x[k] >= 0 ? x[k] : alpha * x[k];
        CHECK_F32(&c, 0, s, r, 1e-6, 1e-5);
        tc_free(&c);
    }
}

static void test_sqrt_of_negative_is_nan_and_log_of_zero_is_minus_infinity(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float x[4] = {-1.0f, 0.0f, 4.0f, -0.0f};
    shp s = SHP(4);
    loom_value vx = tc_data(&c, 0, F32, s, x);
    loom_output(c.g, loom_sqrt(c.g, vx), "sqrt");
    loom_output(c.g, loom_log(c.g, vx), "log");
    RUN_OK(&c);
    double rs[4] = {NAN, 0.0, 2.0, 0.0};
    double rl[4] = {NAN, -INFINITY, log(4.0), -INFINITY};
    CHECK_F32(&c, 0, s, rs, 0, 0);
    CHECK_F32(&c, 1, s, rl, 1e-6, 1e-6);
    tc_free(&c);
}

static void test_exp_saturates_to_infinity_and_zero(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float x[3] = {100.0f, -200.0f, 0.0f};
    shp s = SHP(3);
    loom_value vx = tc_data(&c, 0, F32, s, x);
    loom_output(c.g, loom_exp(c.g, vx), "y");
    RUN_OK(&c);
    double r[3] = {INFINITY, 0.0, 1.0};
    CHECK_F32(&c, 0, s, r, 1e-30, 0);
    tc_free(&c);
}

static void clip_ref(const float *x, int64_t n, double lo, double hi, double *r)
{
    for (int64_t k = 0; k < n; k++)
        r[k] = x[k] < lo ? lo : x[k] > hi ? hi : x[k];
}

static void test_clip_builder_clamps_to_bounds_and_open_sides(void)
{
    const float bounds[4][2] = {{-0.5f, 0.75f}, {-INFINITY, 0.25f}, {-1.0f, INFINITY}, {0, 0}};
    for (int i = 0; i < 4; i++) {
        int line = __LINE__;
        shp s = i == 3 ? SHP(0, 5) : SHP(7, 13);
        tc c;
        tc_init(&c);
        float *x;
        loom_value vx = tc_rand_input(&c, s, -2, 2, &x);
        loom_output(c.g, loom_clip(c.g, vx, bounds[i][0], bounds[i][1]), "y");
        RUN_OK(&c);
        double *r = tc_dbuf(&c, numel(s));
        clip_ref(x, numel(s), bounds[i][0], bounds[i][1], r);
        CHECK_F32(&c, 0, s, r, 0, 0);
        tc_free(&c);
    }
}

static void test_clip_bounds_from_constant_inputs_and_absent_max(void)
{
    for (int i = 0; i < 3; i++) {
        int line = __LINE__;
        shp s = SHP(33, 65);
        tc c;
        tc_init(&c);
        float *x;
        loom_value ins[3];
        ins[0] = tc_rand_input(&c, s, -2, 2, &x);
        float lo = -0.3f, hi = 1.1f;
        ins[1] = i == 2 ? LOOM_NO_VALUE : tc_const_data(&c, F32, SCALAR, &lo);
        ins[2] = i == 1 ? LOOM_NO_VALUE : tc_const_data(&c, F32, SCALAR, &hi);
        loom_output(c.g, tc_op(&c, "Clip", NULL, ins, i == 1 ? 2 : 3, NULL, 0), "y");
        RUN_OK(&c);
        double *r = tc_dbuf(&c, numel(s));
        clip_ref(x, numel(s), i == 2 ? -INFINITY : lo, i == 1 ? INFINITY : hi, r);
        CHECK_F32(&c, 0, s, r, 0, 0);
        tc_free(&c);
    }
}

static void test_clip_reads_bounds_given_as_runtime_inputs(void)
{
    int line = __LINE__;
    shp s = SHP(7, 13);
    tc c;
    tc_init(&c);
    float *x;
    float lo = -0.25f, hi = 0.5f;
    loom_value ins[3];
    ins[0] = tc_rand_input(&c, s, -2, 2, &x);
    ins[1] = tc_data(&c, 0, F32, SCALAR, &lo);
    ins[2] = tc_data(&c, 0, F32, SCALAR, &hi);
    loom_output(c.g, tc_op(&c, "Clip", NULL, ins, 3, NULL, 0), "y");
    RUN_OK(&c);
    double *r = tc_dbuf(&c, numel(s));
    clip_ref(x, numel(s), lo, hi, r);
    CHECK_F32(&c, 0, s, r, 0, 0);
    tc_free(&c);
}

/* ===========================================================================================
 * Elementwise binary operators with broadcasting
 * =========================================================================================== */

typedef loom_value (*binary_builder)(loom_graph *, loom_value, loom_value);
typedef double (*binary_ref)(double, double);

#define N_BCAST_PAIRS 15
static void bcast_pair(int i, shp *a, shp *b)
{
    switch (i) {
    case 0: *a = SHP(7, 13); *b = SHP(7, 13); break;        /* same shape */
    case 1: *a = SHP(7, 13); *b = SCALAR; break;            /* scalar right */
    case 2: *a = SCALAR; *b = SHP(7, 13); break;            /* scalar left */
    case 3: *a = SHP(7, 13); *b = SHP(13); break;           /* row */
    case 4: *a = SHP(7, 13); *b = SHP(7, 1); break;         /* column */
    case 5: *a = SHP(7, 1); *b = SHP(1, 13); break;         /* both sides */
    case 6: *a = SHP(1, 13); *b = SHP(7, 1); break;
    case 7: *a = SHP(2, 3, 4, 5); *b = SHP(4, 5); break;    /* rank mismatch */
    case 8: *a = SHP(4, 5); *b = SHP(2, 3, 4, 5); break;
    case 9: *a = SHP(2, 1, 4, 1); *b = SHP(3, 1, 5); break; /* both sides, rank mismatch */
    case 10: *a = SHP(33, 65); *b = SHP(65); break;
    case 11: *a = SHP(0, 3); *b = SHP(3); break;            /* empty */
    case 12: *a = SHP(3, 0); *b = SHP(3, 1); break;
    case 13: *a = SHP(1); *b = SHP(0); break;
    default: *a = SHP(1000); *b = SHP(1); break;
    }
}

/* Every broadcast pair; alternates builder / generic form and input / constant operands. B's
 * values are drawn in [blo, bhi] and given a random sign when B_SIGNED. */
/* One binary case: A of AS in [alo, ahi], B of BS in [blo, bhi] (random sign when B_SIGNED);
 * BUILD NULL uses the generic form. */
static void binary_one(const char *op, binary_builder build, binary_ref ref, shp as, shp bs,
                       float alo, float ahi, float blo, float bhi, int b_signed, int a_const,
                       int b_const, double atol, double rtol, int line)
{
    shp ys = bcast(as, bs);
    tc c;
    tc_init(&c);
    float *a = tc_rand(&c, as, alo, ahi), *b = tc_rand(&c, bs, blo, bhi);
    if (b_signed)
        for (int64_t k = 0; k < numel(bs); k++)
            if (rng_u64() & 1)
                b[k] = -b[k];
    loom_value ins[2] = {tc_operand(&c, a_const, as, a), tc_operand(&c, b_const, bs, b)};
    loom_value vy = build ? build(c.g, ins[0], ins[1]) : tc_op(&c, op, NULL, ins, 2, NULL, 0);
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    int64_t n = numel(ys), idx[LOOM_MAX_RANK];
    double *r = tc_dbuf(&c, n);
    for (int64_t k = 0; k < n; k++) {
        unravel(k, ys, idx);
        r[k] = ref(a[bcast_off(ys.rank, idx, as)], b[bcast_off(ys.rank, idx, bs)]);
    }
    CHECK_F32(&c, 0, ys, r, atol, rtol);
    tc_free(&c);
}

/* Every broadcast pair; alternates builder / generic form and input / constant operands. */
static void binary_all_pairs(const char *op, binary_builder build, binary_ref ref, float alo,
                             float ahi, float blo, float bhi, int b_signed, double atol,
                             double rtol, int line)
{
    for (int i = 0; i < N_BCAST_PAIRS; i++) {
        shp as, bs;
        bcast_pair(i, &as, &bs);
        binary_one(op, i % 2 ? NULL : build, ref, as, bs, alo, ahi, blo, bhi, b_signed,
                   i % 5 == 4, i % 3 == 2, atol, rtol, line);
    }
}

static void test_add_broadcasts_scalar_row_column_both_sides_and_rank_mismatch(void)
{
    binary_all_pairs("Add", loom_add, ref_add, -2, 2, -2, 2, 0, 1e-6, 1e-6, __LINE__);
}

static void test_sub_broadcasts_scalar_row_column_both_sides_and_rank_mismatch(void)
{
    binary_all_pairs("Sub", loom_sub, ref_sub, -2, 2, -2, 2, 0, 1e-6, 1e-6, __LINE__);
}

static void test_mul_broadcasts_scalar_row_column_both_sides_and_rank_mismatch(void)
{
    binary_all_pairs("Mul", loom_mul, ref_mul, -2, 2, -2, 2, 0, 1e-6, 1e-6, __LINE__);
}

static void test_div_broadcasts_scalar_row_column_both_sides_and_rank_mismatch(void)
{
    binary_all_pairs("Div", loom_div, ref_div, -2, 2, 0.5f, 2, 1, 1e-6, 1e-5, __LINE__);
}

static void test_pow_positive_base_real_exponent_broadcasts(void)
{
    binary_all_pairs("Pow", loom_pow, pow, 0.1f, 3, -2, 2, 0, 1e-5, 1e-4, __LINE__);
}

static void test_min_broadcasts_elementwise(void)
{
    binary_all_pairs("Min", loom_min, ref_min, -1, 1, -1, 1, 0, 0, 0, __LINE__);
}

static void test_max_broadcasts_elementwise(void)
{
    binary_all_pairs("Max", loom_max, ref_max, -1, 1, -1, 1, 0, 0, 0, __LINE__);
}

static void test_pow_negative_base_with_integral_exponents(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float a[6] = {-2.0f, -1.5f, -3.0f, 2.0f, -0.5f, 0.0f};
    float b[6] = {2.0f, 3.0f, -1.0f, 0.5f, 0.0f, 2.0f};
    shp s = SHP(2, 3);
    loom_value va = tc_data(&c, 0, F32, s, a);
    loom_value vb = tc_const_data(&c, F32, s, b);
    loom_output(c.g, loom_pow(c.g, va, vb), "y");
    RUN_OK(&c);
    double r[6];
    for (int k = 0; k < 6; k++)
        r[k] = pow(a[k], b[k]);
    CHECK_F32(&c, 0, s, r, 1e-6, 1e-5);
    tc_free(&c);
}

static void test_div_f32_by_zero_gives_ieee_infinities_and_nan(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float a[3] = {1.0f, -1.0f, 0.0f};
    float b = 0.0f;
    shp s = SHP(3);
    loom_value va = tc_data(&c, 0, F32, s, a);
    loom_value vb = tc_data(&c, 0, F32, SCALAR, &b);
    loom_output(c.g, loom_div(c.g, va, vb), "y");
    RUN_OK(&c);
    double r[3] = {INFINITY, -INFINITY, NAN};
    CHECK_F32(&c, 0, s, r, 0, 0);
    tc_free(&c);
}

static void test_min_max_accept_three_variadic_inputs(void)
{
    for (int i = 0; i < 2; i++) {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        shp s0 = SHP(7, 13), s1 = SHP(13), s2 = SHP(7, 1);
        float *x0, *x1, *x2;
        loom_value ins[3] = {tc_rand_input(&c, s0, -1, 1, &x0), tc_rand_input(&c, s1, -1, 1, &x1),
                             tc_rand_input(&c, s2, -1, 1, &x2)};
        loom_output(c.g, tc_op(&c, i ? "Max" : "Min", NULL, ins, 3, NULL, 0), "y");
        RUN_OK(&c);
        double *r = tc_dbuf(&c, numel(s0));
        int64_t idx[2];
        for (int64_t k = 0; k < numel(s0); k++) {
            unravel(k, s0, idx);
            double v0 = x0[k], v1 = x1[idx[1]], v2 = x2[idx[0]];
            r[k] = i ? ref_max(ref_max(v0, v1), v2) : ref_min(ref_min(v0, v1), v2);
        }
        CHECK_F32(&c, 0, s0, r, 0, 0);
        tc_free(&c);
    }
}

/* Integer arithmetic: exact, with C's truncating division. */
static void int_binary_case(const char *op, loom_dtype dt, shp as, shp bs, const int64_t *a,
                            const int64_t *b, int line)
{
    shp ys = bcast(as, bs);
    tc c;
    tc_init(&c);
    loom_value va = tc_data(&c, 0, dt, as, tc_ints(&c, dt, as, a));
    loom_value vb = tc_data(&c, 0, dt, bs, tc_ints(&c, dt, bs, b));
    loom_value vy;
    if (!strcmp(op, "Add"))
        vy = loom_add(c.g, va, vb);
    else if (!strcmp(op, "Mul"))
        vy = loom_mul(c.g, va, vb);
    else
        vy = tc_op(&c, op, NULL, (loom_value[]){va, vb}, 2, NULL, 0);
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    int64_t n = numel(ys), idx[LOOM_MAX_RANK];
    double *r = tc_dbuf(&c, n);
    for (int64_t k = 0; k < n; k++) {
        unravel(k, ys, idx);
        int64_t x = a[bcast_off(ys.rank, idx, as)], z = b[bcast_off(ys.rank, idx, bs)], v;
        if (!strcmp(op, "Add"))
            v = x + z;
        else if (!strcmp(op, "Mul"))
            v = x * z;
        else if (!strcmp(op, "Sub"))
            v = x - z;
        else
            v = x / z; /* C99: truncates toward zero, as ONNX integer Div */
        if (dt == I32)
            v = (int32_t)v;
        r[k] = (double)v;
    }
    CHECK_EXACT(&c, 0, dt, ys, r);
    tc_free(&c);
}

static void test_add_mul_int32_int64_are_exact_with_broadcasting(void)
{
    const char *ops[2] = {"Add", "Mul"};
    const loom_dtype dts[2] = {I32, I64};
    for (int o = 0; o < 2; o++)
        for (int d = 0; d < 2; d++)
            for (int p = 0; p < N_BCAST_PAIRS; p++) {
                shp as, bs;
                bcast_pair(p, &as, &bs);
                int64_t na = numel(as), nb = numel(bs);
                int64_t *a = malloc(sizeof(int64_t) * (size_t)(na ? na : 1));
                int64_t *b = malloc(sizeof(int64_t) * (size_t)(nb ? nb : 1));
                for (int64_t k = 0; k < na; k++)
                    a[k] = rng_int(-1000, 1000);
                for (int64_t k = 0; k < nb; k++)
                    b[k] = rng_int(-1000, 1000);
                if (dts[d] == I64 && na)
                    a[0] = (int64_t)1 << 40; /* needs 64 bits */
                int_binary_case(ops[o], dts[d], as, bs, a, b, __LINE__);
                free(a);
                free(b);
            }
}

static void test_div_integer_truncates_toward_zero(void)
{
    const int64_t a[8] = {7, -7, 7, -7, 1, -1, 0, 100};
    const int64_t b[8] = {2, 2, -2, -2, 3, 3, 5, -7};
    int_binary_case("Div", I32, SHP(8), SHP(8), a, b, __LINE__);
    int_binary_case("Div", I64, SHP(2, 4), SHP(2, 4), a, b, __LINE__);
    /* broadcast: a column divided by a row */
    const int64_t col[3] = {-9, 10, 11};
    const int64_t row[4] = {2, -3, 4, -5};
    int_binary_case("Div", I32, SHP(3, 1), SHP(4), col, row, __LINE__);
    int_binary_case("Div", I64, SHP(3, 1), SHP(4), col, row, __LINE__);
}

static void test_div_integer_by_zero_reports_error_not_crash(void)
{
    const loom_dtype dts[2] = {I32, I64};
    for (int d = 0; d < 2; d++) {
        tc c;
        tc_init(&c);
        const int64_t a[3] = {6, 5, 4}, b[3] = {3, 0, 2};
        loom_value va = tc_data(&c, 0, dts[d], SHP(3), tc_ints(&c, dts[d], SHP(3), a));
        loom_value vb = tc_data(&c, 0, dts[d], SHP(3), tc_ints(&c, dts[d], SHP(3), b));
        loom_output(c.g, tc_op(&c, "Div", "int_div", (loom_value[]){va, vb}, 2, NULL, 0), "y");
        loom_status st = tc_run_status(&c, __LINE__, 1);
        const char *msg = loom_last_error();
        if (st == LOOM_OK || !strstr(msg, "int_div"))
            fprintf(stderr, "\n    integer Div by zero (%s): status %s, message \"%s\"\n",
                    loom_dtype_name(dts[d]), loom_status_name(st), msg);
        CU_ASSERT_NOT_EQUAL(st, LOOM_OK);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "int_div"));
        tc_free(&c);
    }
}

static void test_binary_constant_operand_on_either_side(void)
{
    for (int side = 0; side < 2; side++) {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        shp xs = SHP(33, 65), ks = SHP(65);
        float *x, *k = tc_rand(&c, ks, -1, 1);
        loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
        loom_value vk = tc_const_data(&c, F32, ks, k);
        loom_value vy = side ? loom_sub(c.g, vk, vx) : loom_sub(c.g, vx, vk);
        loom_output(c.g, vy, "y");
        RUN_OK(&c);
        double *r = tc_dbuf(&c, numel(xs));
        for (int64_t i = 0; i < numel(xs); i++)
            r[i] = side ? (double)k[i % 65] - x[i] : (double)x[i] - k[i % 65];
        CHECK_F32(&c, 0, xs, r, 1e-6, 1e-6);
        tc_free(&c);
    }
}

static void test_where_selects_by_condition_with_broadcasting(void)
{
    const shp cs_[5] = {SHP(7, 13), SHP(7, 1), SHP(1), SHP(2, 1, 4), SHP(0, 3)};
    const shp as_[5] = {SHP(7, 13), SHP(13), SHP(2, 3), SHP(3, 1), SHP(3)};
    const shp bs_[5] = {SHP(7, 13), SCALAR, SHP(3), SHP(4), SHP(1, 1)};
    for (int i = 0; i < 5; i++) {
        int line = __LINE__;
        shp cs = cs_[i], as = as_[i], bs = bs_[i], ys = bcast(bcast(cs, as), bs);
        tc c;
        tc_init(&c);
        uint8_t *cond = tc_buf(&c, (size_t)numel(cs));
        for (int64_t k = 0; k < numel(cs); k++)
            cond[k] = (uint8_t)(rng_u64() & 1);
        float *a, *b;
        loom_value vc = tc_data(&c, 0, BOOL, cs, cond);
        loom_value va = tc_rand_input(&c, as, -1, 1, &a);
        loom_value vb = tc_rand_input(&c, bs, 2, 3, &b);
        loom_value vy = i % 2 ? tc_op(&c, "Where", NULL, (loom_value[]){vc, va, vb}, 3, NULL, 0)
                              : loom_where(c.g, vc, va, vb);
        loom_output(c.g, vy, "y");
        RUN_OK(&c);
        int64_t idx[LOOM_MAX_RANK];
        double *r = tc_dbuf(&c, numel(ys));
        for (int64_t k = 0; k < numel(ys); k++) {
            unravel(k, ys, idx);
            r[k] = cond[bcast_off(ys.rank, idx, cs)] ? a[bcast_off(ys.rank, idx, as)]
                                                       : b[bcast_off(ys.rank, idx, bs)];
        }
        CHECK_F32(&c, 0, ys, r, 0, 0);
        tc_free(&c);
    }
}

static void test_where_selects_int64_values(void)
{
    int line = __LINE__;
    shp cs = SHP(4, 1), as = SHP(1, 5), bs = SHP(4, 5), ys = SHP(4, 5);
    tc c;
    tc_init(&c);
    int64_t cv[4] = {1, 0, 0, 1}, av[5], bv[20];
    for (int k = 0; k < 5; k++)
        av[k] = ((int64_t)1 << 40) + k;
    for (int k = 0; k < 20; k++)
        bv[k] = -k;
    loom_value vc = tc_data(&c, 0, BOOL, cs, tc_ints(&c, BOOL, cs, cv));
    loom_value va = tc_data(&c, 0, I64, as, av);
    loom_value vb = tc_data(&c, 0, I64, bs, bv);
    loom_output(c.g, loom_where(c.g, vc, va, vb), "y");
    RUN_OK(&c);
    double r[20];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++)
            r[i * 5 + j] = (double)(cv[i] ? av[j] : bv[i * 5 + j]);
    CHECK_EXACT(&c, 0, I64, ys, r);
    tc_free(&c);
}

/* ===========================================================================================
 * MatMul and Gemm
 * =========================================================================================== */

static void matmul_case(shp as, shp bs, shp want, int b_const, int generic, int line)
{
    tc c;
    tc_init(&c);
    float *a, *b = tc_rand(&c, bs, -1, 1);
    loom_value va = tc_rand_input(&c, as, -1, 1, &a);
    loom_value vb = tc_operand(&c, b_const, bs, b);
    loom_value vy = generic ? tc_op(&c, "MatMul", NULL, (loom_value[]){va, vb}, 2, NULL, 0)
                            : loom_matmul(c.g, va, vb);
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    shp ys;
    double *r = ref_matmul(&c, a, as, b, bs, &ys);
    CU_ASSERT(shp_eq(ys, want)); /* guards the test itself */
    CHECK_F32(&c, 0, want, r, k_tol(as.d[as.rank - 1]), 1e-4);
    tc_free(&c);
}

static void test_matmul_2d_odd_sizes_match_naive_product(void)
{
    matmul_case(SHP(7, 13), SHP(13, 5), SHP(7, 5), 0, 0, __LINE__);
    matmul_case(SHP(33, 65), SHP(65, 17), SHP(33, 17), 0, 1, __LINE__);
    matmul_case(SHP(1, 1), SHP(1, 1), SHP(1, 1), 0, 0, __LINE__);
    matmul_case(SHP(64, 129), SHP(129, 63), SHP(64, 63), 1, 0, __LINE__);
    matmul_case(SHP(1, 300), SHP(300, 1), SHP(1, 1), 0, 1, __LINE__);
}

static void test_matmul_batched_and_broadcast_batch(void)
{
    matmul_case(SHP(3, 4, 5), SHP(3, 5, 6), SHP(3, 4, 6), 0, 0, __LINE__);
    matmul_case(SHP(2, 1, 4, 5), SHP(3, 5, 6), SHP(2, 3, 4, 6), 0, 1, __LINE__);
    matmul_case(SHP(4, 5), SHP(2, 5, 3), SHP(2, 4, 3), 0, 0, __LINE__);
    matmul_case(SHP(2, 3, 4, 5), SHP(5, 7), SHP(2, 3, 4, 7), 1, 0, __LINE__);
    matmul_case(SHP(1, 3, 7, 13), SHP(2, 1, 13, 5), SHP(2, 3, 7, 5), 0, 1, __LINE__);
}

static void test_matmul_1d_operands_drop_the_promoted_dim(void)
{
    matmul_case(SHP(5), SHP(5, 3), SHP(3), 0, 0, __LINE__);
    matmul_case(SHP(2, 4, 5), SHP(5), SHP(2, 4), 0, 1, __LINE__);
    matmul_case(SHP(13), SHP(13), SCALAR, 0, 0, __LINE__);
    matmul_case(SHP(5), SHP(2, 5, 3), SHP(2, 3), 1, 1, __LINE__);
}

static void test_matmul_empty_dims_give_empty_or_zero_output(void)
{
    matmul_case(SHP(0, 5), SHP(5, 3), SHP(0, 3), 0, 0, __LINE__);
    matmul_case(SHP(4, 5), SHP(5, 0), SHP(4, 0), 0, 1, __LINE__);
    matmul_case(SHP(4, 0), SHP(0, 3), SHP(4, 3), 0, 0, __LINE__); /* K = 0: all zeros */
    matmul_case(SHP(2, 0, 4, 5), SHP(5, 3), SHP(2, 0, 4, 3), 0, 1, __LINE__);
}

/* C_RANK < 0: no C. */
static void gemm_case(int64_t M, int64_t K, int64_t N, int ta, int tb, float alpha, float beta,
                      shp cs, int has_c, int c_const, int generic, int line)
{
    tc c;
    tc_init(&c);
    shp as = ta ? SHP(K, M) : SHP(M, K), bs = tb ? SHP(N, K) : SHP(K, N), ys = SHP(M, N);
    float *a, *b, *cc = NULL;
    loom_value va = tc_rand_input(&c, as, -1, 1, &a);
    loom_value vb = tc_rand_input(&c, bs, -1, 1, &b);
    loom_value vc = LOOM_NO_VALUE;
    if (has_c) {
        cc = tc_rand(&c, cs, -1, 1);
        vc = tc_operand(&c, c_const, cs, cc);
    }
    loom_value vy;
    if (generic) {
        loom_attr at[4] = {loom_attr_float("alpha", alpha), loom_attr_float("beta", beta),
                           loom_attr_int("transA", ta), loom_attr_int("transB", tb)};
        vy = tc_op(&c, "Gemm", NULL, (loom_value[]){va, vb, vc}, has_c ? 3 : 2, at, 4);
    } else {
        vy = loom_gemm(c.g, va, vb, vc, alpha, beta, ta, tb);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    double *r = ref_gemm(&c, a, b, cc, cs, M, K, N, alpha, beta, ta, tb);
    CHECK_F32(&c, 0, ys, r, k_tol(K) * 2, 1e-4);
    tc_free(&c);
}

static void test_gemm_transpose_flags_with_alpha_beta(void)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            gemm_case(7, 13, 5, ta, tb, 0.5f, 2.0f, SHP(7, 5), 1, 0, 0, __LINE__);
            gemm_case(33, 65, 17, ta, tb, -1.25f, 0.75f, SHP(33, 17), 1, 1, 1, __LINE__);
        }
}

/* 2 to 48 rows (cpu_gemm_small.c on AVX2 machines takes those with B transposed): both B
 * layouts, K and N tails, alpha and beta, batched MatMul. */
static void test_small_m_gemm_and_matmul_match_naive(void)
{
    static const int64_t ms[] = {2, 5, 8, 21, 48}, ks[] = {32, 37, 100}, ns[] = {8, 9, 33, 100};
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < 3; j++)
            for (int tb = 0; tb < 2; tb++) {
                const int64_t M = ms[i], K = ks[j], N = ns[(i + j) % 4];
                gemm_case(M, K, N, 0, tb, 1.0f, 1.0f, SHP(N), 1, 1, 0, __LINE__);
                gemm_case(M, K, N, 0, tb, -0.75f, 0.5f, SHP(M, N), 1, 0, 1, __LINE__);
                gemm_case(M, K, N, 0, tb, 2.0f, 0.0f, SCALAR, 0, 0, 0, __LINE__);
            }
    matmul_case(SHP(4, 64), SHP(64, 40), SHP(4, 40), 1, 0, __LINE__);
    matmul_case(SHP(2, 3, 50), SHP(2, 50, 17), SHP(2, 3, 17), 0, 1, __LINE__);
    matmul_case(SHP(7, 1024), SHP(1024, 1000), SHP(7, 1000), 1, 0, __LINE__);
}

static void test_gemm_c_broadcasts_as_row_column_and_scalar(void)
{
    gemm_case(7, 13, 5, 0, 0, 1.0f, 1.0f, SHP(5), 1, 0, 0, __LINE__);     /* [N] */
    gemm_case(7, 13, 5, 1, 0, 0.5f, 3.0f, SHP(7, 1), 1, 1, 0, __LINE__);  /* [M,1] */
    gemm_case(7, 13, 5, 0, 1, 2.0f, -1.0f, SCALAR, 1, 0, 1, __LINE__);    /* scalar */
    gemm_case(7, 13, 5, 1, 1, 1.0f, 0.5f, SHP(1), 1, 1, 1, __LINE__);     /* [1] */
    gemm_case(7, 13, 5, 0, 0, 1.0f, 2.0f, SHP(1, 5), 1, 0, 1, __LINE__);  /* [1,N] */
    gemm_case(33, 65, 17, 0, 1, 1.0f, 1.0f, SHP(17), 1, 1, 0, __LINE__);
}

static void test_gemm_without_c_and_with_onnx_default_attributes(void)
{
    gemm_case(7, 13, 5, 0, 0, 1.5f, 1.0f, SCALAR, 0, 0, 0, __LINE__);
    gemm_case(7, 13, 5, 0, 1, 1.0f, 1.0f, SCALAR, 0, 0, 1, __LINE__);
    /* no attributes at all: alpha = beta = 1, no transposes */
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float *a, *b, *cc;
    loom_value va = tc_rand_input(&c, SHP(4, 6), -1, 1, &a);
    loom_value vb = tc_rand_input(&c, SHP(6, 3), -1, 1, &b);
    loom_value vc = tc_rand_input(&c, SHP(3), -1, 1, &cc);
    loom_output(c.g, tc_op(&c, "Gemm", NULL, (loom_value[]){va, vb, vc}, 3, NULL, 0), "y");
    RUN_OK(&c);
    double *r = ref_gemm(&c, a, b, cc, SHP(3), 4, 6, 3, 1, 1, 0, 0);
    CHECK_F32(&c, 0, SHP(4, 3), r, k_tol(6), 1e-4);
    tc_free(&c);
}

static void test_gemm_empty_m_and_zero_k(void)
{
    gemm_case(0, 4, 3, 0, 0, 1.0f, 1.0f, SHP(3), 1, 0, 0, __LINE__);
    gemm_case(3, 0, 4, 0, 0, 1.0f, 2.0f, SHP(3, 4), 1, 0, 1, __LINE__); /* Y = beta * C */
    gemm_case(3, 0, 4, 1, 1, 1.0f, 1.0f, SCALAR, 0, 0, 0, __LINE__);    /* Y = 0 */
}

/* ===========================================================================================
 * Conv
 * =========================================================================================== */

typedef struct conv_spec {
    uint32_t S;
    int64_t strides[3], dilations[3], pads[6], group;
    const char *auto_pad; /* generic form only */
    int explicit_params;  /* 0: leave everything at the ONNX defaults */
} conv_spec;

static void conv_case(shp xs, shp ws, int has_bias, conv_spec sp, int w_const, int generic,
                      shp want, int line)
{
    tc c;
    tc_init(&c);
    float *x, *w = tc_rand(&c, ws, -1, 1), *b = NULL;
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    loom_value vw = tc_operand(&c, w_const, ws, w);
    loom_value vb = LOOM_NO_VALUE;
    if (has_bias) {
        b = tc_rand(&c, SHP(ws.d[0]), -1, 1);
        vb = tc_operand(&c, w_const, SHP(ws.d[0]), b);
    }
    uint32_t S = xs.rank - 2;
    loom_value vy;
    if (generic) {
        loom_attr at[6];
        size_t na = 0;
        if (sp.explicit_params) {
            at[na++] = loom_attr_ints("strides", S, sp.strides);
            at[na++] = loom_attr_ints("dilations", S, sp.dilations);
            if (!sp.auto_pad)
                at[na++] = loom_attr_ints("pads", 2 * S, sp.pads);
            at[na++] = loom_attr_ints("kernel_shape", S, ws.d + 2);
        }
        if (sp.auto_pad)
            at[na++] = loom_attr_string("auto_pad", sp.auto_pad);
        if (sp.group > 1)
            at[na++] = loom_attr_int("group", sp.group);
        loom_value ins[3] = {vx, vw, vb};
        vy = tc_op(&c, "Conv", NULL, ins, has_bias ? 3 : 2, at, na);
    } else {
        loom_window_params p;
        memset(&p, 0, sizeof p);
        if (sp.explicit_params) {
            p.n_spatial = S;
            for (uint32_t i = 0; i < S; i++) {
                p.strides[i] = sp.strides[i];
                p.dilations[i] = sp.dilations[i];
                p.pads[i] = sp.pads[i];
                p.pads[S + i] = sp.pads[S + i];
            }
        }
        p.group = sp.group;
        vy = loom_conv(c.g, vx, vw, vb, &p);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    win wn = sp.explicit_params ? win_make(S, ws.d + 2, sp.strides, sp.dilations, sp.pads)
                                : win_make(S, ws.d + 2, NULL, NULL, NULL);
    wn.group = sp.group ? sp.group : 1;
    if (sp.auto_pad && strcmp(sp.auto_pad, "VALID") && strcmp(sp.auto_pad, "NOTSET"))
        win_same(&wn, xs.d + 2, !strcmp(sp.auto_pad, "SAME_UPPER"));
    shp ys;
    double *r = ref_conv(&c, x, xs, w, ws, b, wn, &ys);
    CU_ASSERT(shp_eq(ys, want));
    int64_t K = ws.d[1];
    for (uint32_t i = 2; i < ws.rank; i++)
        K *= ws.d[i];
    CHECK_F32(&c, 0, want, r, k_tol(K), 1e-4);
    tc_free(&c);
}

static conv_spec cspec2(int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pl,
                        int64_t pb, int64_t pr, int64_t group)
{
    conv_spec s;
    memset(&s, 0, sizeof s);
    s.S = 2;
    s.explicit_params = 1;
    s.strides[0] = sh;
    s.strides[1] = sw;
    s.dilations[0] = dh;
    s.dilations[1] = dw;
    s.pads[0] = pt;
    s.pads[1] = pl;
    s.pads[2] = pb;
    s.pads[3] = pr;
    s.group = group;
    return s;
}

static conv_spec cspec_default(int64_t group)
{
    conv_spec s;
    memset(&s, 0, sizeof s);
    s.group = group;
    return s;
}

static void test_conv2d_pads_strides_and_bias(void)
{
    conv_case(SHP(2, 3, 7, 9), SHP(4, 3, 3, 3), 1, cspec2(1, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0,
              SHP(2, 4, 7, 9), __LINE__);
    conv_case(SHP(2, 3, 7, 9), SHP(4, 3, 3, 3), 1, cspec2(2, 2, 1, 1, 1, 1, 1, 1, 1), 1, 1,
              SHP(2, 4, 4, 5), __LINE__);
    conv_case(SHP(1, 16, 33, 17), SHP(8, 16, 3, 3), 1, cspec2(1, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0,
              SHP(1, 8, 33, 17), __LINE__);
    conv_case(SHP(1, 2, 6, 6), SHP(3, 2, 3, 3), 1, cspec_default(0), 1, 0, SHP(1, 3, 4, 4),
              __LINE__);
}

static void test_conv2d_dilation_asymmetric_pads_without_bias(void)
{
    /* H: (11 + 0 + 2 - 5) / 2 + 1 = 5; W: (10 + 1 + 1 - 2) / 3 + 1 = 4 */
    conv_case(SHP(1, 3, 11, 10), SHP(5, 3, 3, 2), 0, cspec2(2, 3, 2, 1, 0, 1, 2, 1, 1), 1, 0,
              SHP(1, 5, 5, 4), __LINE__);
    /* H: (9 + 3 - 5) / 1 + 1 = 8; W: (8 + 3 - 7) / 1 + 1 = 5 */
    conv_case(SHP(2, 2, 9, 8), SHP(3, 2, 3, 3), 0, cspec2(1, 1, 2, 3, 2, 0, 1, 3, 1), 0, 1,
              SHP(2, 3, 8, 5), __LINE__);
}

static void test_conv2d_groups_and_depthwise(void)
{
    conv_case(SHP(2, 6, 8, 8), SHP(9, 2, 3, 3), 1, cspec2(1, 1, 1, 1, 1, 1, 1, 1, 3), 1, 0,
              SHP(2, 9, 8, 8), __LINE__);
    /* depthwise */
    conv_case(SHP(1, 4, 7, 7), SHP(4, 1, 3, 3), 1, cspec2(2, 2, 1, 1, 1, 1, 1, 1, 4), 1, 1,
              SHP(1, 4, 4, 4), __LINE__);
    /* depthwise with channel multiplier 2 */
    conv_case(SHP(1, 3, 6, 5), SHP(6, 1, 3, 3), 0, cspec_default(3), 1, 0, SHP(1, 6, 4, 3),
              __LINE__);
    conv_case(SHP(2, 32, 9, 9), SHP(32, 1, 3, 3), 1, cspec2(1, 1, 1, 1, 1, 1, 1, 1, 32), 0, 1,
              SHP(2, 32, 9, 9), __LINE__);
}

static void test_conv2d_1x1_is_a_channel_matmul(void)
{
    conv_case(SHP(2, 8, 5, 7), SHP(16, 8, 1, 1), 1, cspec_default(0), 1, 0, SHP(2, 16, 5, 7),
              __LINE__);
    conv_case(SHP(2, 8, 5, 7), SHP(16, 8, 1, 1), 0, cspec2(2, 2, 1, 1, 0, 0, 0, 0, 1), 1, 1,
              SHP(2, 16, 3, 4), __LINE__);
}

static void test_conv1d_strides_dilation_pads(void)
{
    conv_spec s;
    memset(&s, 0, sizeof s);
    s.S = 1;
    s.explicit_params = 1;
    s.strides[0] = 2;
    s.dilations[0] = 2;
    s.pads[0] = 2;
    s.pads[1] = 1;
    /* (17 + 3 - 9) / 2 + 1 = 6 */
    conv_case(SHP(2, 3, 17), SHP(4, 3, 5), 1, s, 1, 0, SHP(2, 4, 6), __LINE__);
    conv_case(SHP(2, 3, 17), SHP(4, 3, 5), 0, s, 0, 1, SHP(2, 4, 6), __LINE__);
    conv_case(SHP(1, 2, 10), SHP(3, 2, 3), 1, cspec_default(0), 1, 0, SHP(1, 3, 8), __LINE__);
    s.strides[0] = 1;
    s.dilations[0] = 1;
    s.pads[0] = s.pads[1] = 1;
    s.group = 2;
    conv_case(SHP(1, 4, 13), SHP(6, 2, 3), 1, s, 1, 1, SHP(1, 6, 13), __LINE__);
}

static void test_conv_auto_pad_same_upper_and_same_lower(void)
{
    for (int upper = 0; upper < 2; upper++) {
        conv_spec s = cspec2(2, 2, 1, 1, 0, 0, 0, 0, 1);
        s.auto_pad = upper ? "SAME_UPPER" : "SAME_LOWER";
        /* kernel 4, stride 2 on 7: output 4, total pad 3, split 1/2 (UPPER) or 2/1 (LOWER) */
        conv_case(SHP(1, 2, 7, 8), SHP(3, 2, 4, 4), 1, s, 1, 1, SHP(1, 3, 4, 4), __LINE__);
    }
    conv_spec v = cspec_default(0);
    v.auto_pad = "VALID";
    conv_case(SHP(1, 2, 7, 8), SHP(3, 2, 3, 3), 0, v, 1, 1, SHP(1, 3, 5, 6), __LINE__);
}

static void test_conv_weights_as_runtime_inputs(void)
{
    conv_case(SHP(2, 3, 7, 9), SHP(4, 3, 3, 3), 1, cspec2(1, 1, 1, 1, 1, 1, 1, 1, 1), 0, 0,
              SHP(2, 4, 7, 9), __LINE__);
    conv_case(SHP(1, 4, 7, 7), SHP(4, 1, 3, 3), 0, cspec2(1, 1, 1, 1, 1, 1, 1, 1, 4), 0, 1,
              SHP(1, 4, 7, 7), __LINE__);
}

static void test_conv_empty_batch_gives_empty_output(void)
{
    conv_case(SHP(0, 3, 5, 5), SHP(2, 3, 3, 3), 1, cspec_default(0), 1, 0, SHP(0, 2, 3, 3),
              __LINE__);
}

/* ===========================================================================================
 * Pooling
 * =========================================================================================== */

typedef struct pool_spec {
    uint32_t S;
    int64_t k[3], s[3], d[3], pads[6];
    int ceil_mode, cip;
} pool_spec;

static void pool_case(int kind, shp xs, pool_spec sp, int generic, float lo, float hi, shp want,
                      int line)
{
    tc c;
    tc_init(&c);
    float *x;
    loom_value vx = tc_rand_input(&c, xs, lo, hi, &x);
    uint32_t S = sp.S;
    for (uint32_t i = 0; i < S; i++)
        if (!sp.d[i])
            sp.d[i] = 1;
    loom_value vy;
    if (generic) {
        loom_attr at[6];
        size_t na = 0;
        at[na++] = loom_attr_ints("kernel_shape", S, sp.k);
        at[na++] = loom_attr_ints("strides", S, sp.s);
        at[na++] = loom_attr_ints("pads", 2 * S, sp.pads);
        if (kind == POOL_MAX) {
            at[na++] = loom_attr_ints("dilations", S, sp.d);
        } else {
            at[na++] = loom_attr_int("count_include_pad", sp.cip);
        }
        at[na++] = loom_attr_int("ceil_mode", sp.ceil_mode);
        vy = tc_op(&c, kind == POOL_MAX ? "MaxPool" : "AveragePool", NULL, &vx, 1, at, na);
    } else {
        loom_window_params p;
        memset(&p, 0, sizeof p);
        p.n_spatial = S;
        for (uint32_t i = 0; i < S; i++) {
            p.kernel_shape[i] = sp.k[i];
            p.strides[i] = sp.s[i];
            p.dilations[i] = sp.d[i];
            p.pads[i] = sp.pads[i];
            p.pads[S + i] = sp.pads[S + i];
        }
        p.ceil_mode = sp.ceil_mode;
        p.count_include_pad = sp.cip;
        vy = kind == POOL_MAX ? loom_max_pool(c.g, vx, &p) : loom_average_pool(c.g, vx, &p);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    win w = win_make(S, sp.k, sp.s, sp.d, sp.pads);
    w.ceil_mode = sp.ceil_mode;
    w.cip = sp.cip;
    shp ys;
    double *r = ref_pool(&c, kind, x, xs, w, &ys);
    CU_ASSERT(shp_eq(ys, want));
    CHECK_F32(&c, 0, want, r, 1e-5, 1e-4);
    tc_free(&c);
}

static pool_spec pspec2(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                        int64_t pb, int64_t pr)
{
    pool_spec s;
    memset(&s, 0, sizeof s);
    s.S = 2;
    s.k[0] = kh;
    s.k[1] = kw;
    s.s[0] = sh;
    s.s[1] = sw;
    s.pads[0] = pt;
    s.pads[1] = pl;
    s.pads[2] = pb;
    s.pads[3] = pr;
    return s;
}

static void test_max_pool_2d_strides_pads_dilation(void)
{
    pool_case(POOL_MAX, SHP(2, 3, 9, 9), pspec2(3, 3, 2, 2, 0, 0, 0, 0), 0, -1, 1,
              SHP(2, 3, 4, 4), __LINE__);
    pool_case(POOL_MAX, SHP(1, 2, 8, 7), pspec2(3, 3, 1, 1, 1, 1, 1, 1), 1, -1, 1,
              SHP(1, 2, 8, 7), __LINE__);
    pool_case(POOL_MAX, SHP(1, 3, 7, 13), pspec2(2, 2, 2, 2, 0, 0, 0, 0), 1, -1, 1,
              SHP(1, 3, 3, 6), __LINE__);
    /* 2x2 at stride 2 on rows of 8+ outputs (the AVX2 rows: 8 at a time, then the rest) */
    pool_case(POOL_MAX, SHP(2, 3, 10, 37), pspec2(2, 2, 2, 2, 0, 0, 0, 0), 1, -1, 1,
              SHP(2, 3, 5, 18), __LINE__);
    pool_case(POOL_MAX, SHP(1, 2, 9, 35), pspec2(2, 2, 2, 2, 1, 1, 1, 1), 0, -2, 2,
              SHP(1, 2, 5, 18), __LINE__);
    pool_spec d = pspec2(2, 3, 2, 1, 1, 0, 0, 1);
    d.d[0] = 2;
    d.d[1] = 2;
    /* H: (10 + 1 - 3) / 2 + 1 = 5; W: (9 + 1 - 5) / 1 + 1 = 6 */
    pool_case(POOL_MAX, SHP(1, 2, 10, 9), d, 0, -1, 1, SHP(1, 2, 5, 6), __LINE__);
    pool_case(POOL_MAX, SHP(1, 2, 10, 9), d, 1, -1, 1, SHP(1, 2, 5, 6), __LINE__);
}

static void test_max_pool_padding_never_wins_over_negative_inputs(void)
{
    pool_case(POOL_MAX, SHP(1, 2, 5, 5), pspec2(3, 3, 2, 2, 1, 1, 1, 1), 0, -3, -1,
              SHP(1, 2, 3, 3), __LINE__);
}

static void test_max_pool_ceil_mode_keeps_partial_last_window(void)
{
    pool_spec s = pspec2(3, 3, 2, 2, 0, 0, 0, 0);
    s.ceil_mode = 1;
    /* (8 - 3) / 2 = 2.5: floor gives 3 windows, ceil gives 4 (the last one starts at 6) */
    pool_case(POOL_MAX, SHP(1, 1, 8, 8), s, 0, -1, 1, SHP(1, 1, 4, 4), __LINE__);
    pool_case(POOL_MAX, SHP(2, 3, 8, 11), s, 1, -1, 1, SHP(2, 3, 4, 5), __LINE__);
    s.ceil_mode = 0;
    pool_case(POOL_MAX, SHP(1, 1, 8, 8), s, 0, -1, 1, SHP(1, 1, 3, 3), __LINE__);
}

static void test_max_pool_1d(void)
{
    pool_spec s;
    memset(&s, 0, sizeof s);
    s.S = 1;
    s.k[0] = 3;
    s.s[0] = 2;
    s.pads[0] = 1;
    s.pads[1] = 1;
    pool_case(POOL_MAX, SHP(2, 3, 11), s, 0, -1, 1, SHP(2, 3, 6), __LINE__);
    pool_case(POOL_MAX, SHP(2, 3, 11), s, 1, -1, 1, SHP(2, 3, 6), __LINE__);
}

static void test_average_pool_excludes_padding_by_default(void)
{
    pool_case(POOL_AVG, SHP(1, 2, 7, 7), pspec2(3, 3, 2, 2, 1, 1, 1, 1), 0, -1, 1,
              SHP(1, 2, 4, 4), __LINE__);
    pool_case(POOL_AVG, SHP(2, 3, 6, 6), pspec2(2, 2, 2, 2, 0, 0, 0, 0), 1, -1, 1,
              SHP(2, 3, 3, 3), __LINE__);
    pool_case(POOL_AVG, SHP(1, 3, 9, 13), pspec2(3, 2, 2, 3, 2, 0, 1, 1), 1, -1, 1,
              SHP(1, 3, 5, 5), __LINE__);
    /* generic form without count_include_pad at all: ONNX default 0 */
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float *x;
    shp xs = SHP(1, 1, 4, 4);
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    const int64_t k[2] = {3, 3}, pads[4] = {1, 1, 1, 1};
    loom_attr at[2] = {loom_attr_ints("kernel_shape", 2, k), loom_attr_ints("pads", 4, pads)};
    loom_output(c.g, tc_op(&c, "AveragePool", NULL, &vx, 1, at, 2), "y");
    RUN_OK(&c);
    const int64_t ones[2] = {1, 1};
    win w = win_make(2, k, ones, ones, pads);
    shp ys;
    double *r = ref_pool(&c, POOL_AVG, x, xs, w, &ys);
    CHECK_F32(&c, 0, SHP(1, 1, 4, 4), r, 1e-5, 1e-4);
    tc_free(&c);
}

static void test_average_pool_count_include_pad_divides_by_kernel_size(void)
{
    pool_spec s = pspec2(3, 3, 2, 2, 1, 1, 1, 1);
    s.cip = 1;
    pool_case(POOL_AVG, SHP(1, 2, 7, 7), s, 0, -1, 1, SHP(1, 2, 4, 4), __LINE__);
    pool_case(POOL_AVG, SHP(2, 2, 7, 7), s, 1, -1, 1, SHP(2, 2, 4, 4), __LINE__);
    pool_spec t = pspec2(3, 2, 1, 2, 0, 1, 2, 1);
    t.cip = 1;
    pool_case(POOL_AVG, SHP(1, 3, 5, 6), t, 0, -1, 1, SHP(1, 3, 5, 4), __LINE__);
}

static void test_average_pool_ceil_mode_averages_partial_window(void)
{
    pool_spec s = pspec2(3, 3, 2, 2, 0, 0, 0, 0);
    s.ceil_mode = 1;
    pool_case(POOL_AVG, SHP(1, 2, 8, 8), s, 0, -1, 1, SHP(1, 2, 4, 4), __LINE__);
    pool_case(POOL_AVG, SHP(1, 2, 8, 9), s, 1, -1, 1, SHP(1, 2, 4, 4), __LINE__);
}

static void test_average_pool_1d_asymmetric_pads(void)
{
    pool_spec s;
    memset(&s, 0, sizeof s);
    s.S = 1;
    s.k[0] = 4;
    s.s[0] = 3;
    s.pads[0] = 2;
    s.pads[1] = 1;
    /* (10 + 3 - 4) / 3 + 1 = 4 */
    pool_case(POOL_AVG, SHP(1, 2, 10), s, 0, -1, 1, SHP(1, 2, 4), __LINE__);
    s.cip = 1;
    pool_case(POOL_AVG, SHP(1, 2, 10), s, 1, -1, 1, SHP(1, 2, 4), __LINE__);
}

static void test_global_average_pool_2d_and_1d(void)
{
    const shp xs_[4] = {SHP(2, 3, 7, 5), SHP(2, 3, 7), SHP(1, 4, 1, 1), SHP(1, 8, 33, 17)};
    const shp ys_[4] = {SHP(2, 3, 1, 1), SHP(2, 3, 1), SHP(1, 4, 1, 1), SHP(1, 8, 1, 1)};
    for (int i = 0; i < 4; i++) {
        int line = __LINE__;
        shp xs = xs_[i];
        tc c;
        tc_init(&c);
        float *x;
        loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
        loom_value vy = i % 2 ? tc_op(&c, "GlobalAveragePool", NULL, &vx, 1, NULL, 0)
                              : loom_global_average_pool(c.g, vx);
        loom_output(c.g, vy, "y");
        RUN_OK(&c);
        int64_t nc = xs.d[0] * xs.d[1], inner = numel(xs) / nc;
        double *r = tc_dbuf(&c, nc);
        for (int64_t k = 0; k < nc; k++) {
            double s = 0;
            for (int64_t j = 0; j < inner; j++)
                s += x[k * inner + j];
            r[k] = s / (double)inner;
        }
        CHECK_F32(&c, 0, ys_[i], r, 1e-5, 1e-4);
        tc_free(&c);
    }
}

/* ===========================================================================================
 * Normalisation
 * =========================================================================================== */

static void softmax_case(shp s, int64_t axis, int generic, float lo, float hi, int line)
{
    tc c;
    tc_init(&c);
    float *x;
    loom_value vx = tc_rand_input(&c, s, lo, hi, &x);
    loom_value vy;
    if (generic) {
        loom_attr a = loom_attr_int("axis", axis);
        vy = tc_op(&c, "Softmax", NULL, &vx, 1, &a, 1);
    } else {
        vy = loom_softmax(c.g, vx, axis);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    double *r = ref_softmax(&c, x, s, axis);
    if (!CHECK_F32(&c, 0, s, r, 1e-6, 1e-4)) {
        tc_free(&c);
        return;
    }
    /* each slice along AXIS sums to one */
    int64_t ax = axis < 0 ? axis + s.rank : axis, outer = 1, inner = 1, n = s.d[ax];
    for (int64_t k = 0; k < ax; k++)
        outer *= s.d[k];
    for (int64_t k = ax + 1; k < (int64_t)s.rank; k++)
        inner *= s.d[k];
    const float *y = numel(s) ? loom_tensor_data(c.out[0]) : NULL;
    int bad = 0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double sum = 0;
            for (int64_t j = 0; j < n; j++)
                sum += y[(o * n + j) * inner + i];
            if (n && fabs(sum - 1.0) > 1e-5 * (double)(n > 10 ? n : 10))
                bad++;
        }
    CU_assertImplementation(bad == 0, (unsigned)line, "softmax slices sum to one", __FILE__, "",
                            CU_FALSE);
    tc_free(&c);
}

static void test_softmax_every_axis_sums_to_one_and_matches_reference(void)
{
    const int64_t axes[5] = {0, 1, 2, -1, -3};
    for (int i = 0; i < 5; i++)
        softmax_case(SHP(3, 4, 5), axes[i], i % 2, -3, 3, __LINE__);
    softmax_case(SHP(7, 13), 1, 0, -3, 3, __LINE__);
    softmax_case(SHP(7, 13), 0, 1, -3, 3, __LINE__);
    softmax_case(SHP(33, 65), -1, 0, -10, 10, __LINE__);
    softmax_case(SHP(1, 1000), -1, 1, -10, 10, __LINE__);
    softmax_case(SHP(2, 3, 4, 5), 2, 0, -3, 3, __LINE__);
}

static void test_softmax_default_axis_is_last(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float *x;
    shp s = SHP(3, 4, 5);
    loom_value vx = tc_rand_input(&c, s, -3, 3, &x);
    loom_output(c.g, tc_op(&c, "Softmax", NULL, &vx, 1, NULL, 0), "y");
    RUN_OK(&c);
    CHECK_F32(&c, 0, s, ref_softmax(&c, x, s, -1), 1e-6, 1e-4);
    tc_free(&c);
}

static void test_softmax_large_inputs_do_not_overflow(void)
{
    softmax_case(SHP(4, 33), -1, 0, 1000, 1010, __LINE__);
    softmax_case(SHP(4, 33), 0, 1, -1010, -1000, __LINE__);
}

static void test_softmax_empty_tensor_gives_empty_output(void)
{
    softmax_case(SHP(0, 5), 1, 0, -1, 1, __LINE__);
    softmax_case(SHP(4, 0), 1, 1, -1, 1, __LINE__);
}

static void layer_norm_case(shp xs, int64_t axis, int has_bias, int params_const, int generic,
                            float eps, int line)
{
    tc c;
    tc_init(&c);
    int64_t ax = axis < 0 ? axis + xs.rank : axis;
    shp ps = shp_make(xs.d + ax, xs.rank - (uint32_t)ax);
    float *x, *scale = tc_rand(&c, ps, 0.5f, 1.5f), *bias = has_bias ? tc_rand(&c, ps, -1, 1) : NULL;
    loom_value vx = tc_rand_input(&c, xs, -1, 3, &x);
    loom_value vs = tc_operand(&c, params_const, ps, scale);
    loom_value vb = has_bias ? tc_operand(&c, params_const, ps, bias) : LOOM_NO_VALUE;
    loom_value vy;
    if (generic) {
        loom_attr at[2] = {loom_attr_int("axis", axis), loom_attr_float("epsilon", eps)};
        vy = tc_op(&c, "LayerNormalization", NULL, (loom_value[]){vx, vs, vb}, has_bias ? 3 : 2,
                   at, 2);
    } else {
        vy = loom_layer_norm(c.g, vx, vs, vb, axis, eps);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    double *r = ref_layer_norm(&c, x, xs, scale, bias, axis, eps);
    CHECK_F32(&c, 0, xs, r, 1e-4, 1e-4);
    tc_free(&c);
}

static void test_layer_norm_last_axis_with_and_without_bias(void)
{
    layer_norm_case(SHP(2, 3, 8), -1, 1, 1, 0, 1e-5f, __LINE__);
    layer_norm_case(SHP(2, 3, 8), -1, 0, 1, 1, 1e-5f, __LINE__);
    layer_norm_case(SHP(4, 65), 1, 1, 0, 0, 1e-3f, __LINE__);
    layer_norm_case(SHP(7, 13), -1, 0, 0, 1, 1e-5f, __LINE__);
    layer_norm_case(SHP(0, 8), -1, 1, 1, 0, 1e-5f, __LINE__);
}

static void test_layer_norm_earlier_axis_normalizes_the_trailing_block(void)
{
    layer_norm_case(SHP(2, 3, 8), 1, 0, 0, 0, 1e-5f, __LINE__);
    layer_norm_case(SHP(2, 3, 4, 5), 2, 1, 1, 1, 1e-5f, __LINE__);
    layer_norm_case(SHP(2, 3, 4, 5), -3, 1, 0, 0, 1e-5f, __LINE__);
    layer_norm_case(SHP(3, 5), 0, 1, 1, 1, 1e-5f, __LINE__);
}

static void test_layer_norm_default_epsilon_and_axis(void)
{
    /* generic form with no attributes: axis -1, epsilon 1e-5 */
    int line = __LINE__;
    tc c;
    tc_init(&c);
    shp xs = SHP(3, 4, 6), ps = SHP(6);
    float *x, *scale = tc_rand(&c, ps, 0.5f, 1.5f), *bias = tc_rand(&c, ps, -1, 1);
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    loom_value ins[3] = {vx, tc_const_data(&c, F32, ps, scale), tc_const_data(&c, F32, ps, bias)};
    loom_output(c.g, tc_op(&c, "LayerNormalization", NULL, ins, 3, NULL, 0), "y");
    RUN_OK(&c);
    CHECK_F32(&c, 0, xs, ref_layer_norm(&c, x, xs, scale, bias, -1, 1e-5), 1e-4, 1e-4);
    tc_free(&c);
}

static void batch_norm_case(shp xs, int params_const, int generic, float eps, int line)
{
    tc c;
    tc_init(&c);
    shp ps = SHP(xs.d[1]);
    float *x;
    float *scale = tc_rand(&c, ps, 0.5f, 1.5f), *bias = tc_rand(&c, ps, -1, 1);
    float *mean = tc_rand(&c, ps, -1, 1), *var = tc_rand(&c, ps, 0.25f, 2);
    loom_value vx = tc_rand_input(&c, xs, -2, 2, &x);
    loom_value ins[5] = {vx, tc_operand(&c, params_const, ps, scale),
                         tc_operand(&c, params_const, ps, bias),
                         tc_operand(&c, params_const, ps, mean),
                         tc_operand(&c, params_const, ps, var)};
    loom_value vy;
    if (generic) {
        loom_attr a = loom_attr_float("epsilon", eps);
        vy = tc_op(&c, "BatchNormalization", NULL, ins, 5, &a, 1);
    } else {
        vy = loom_batch_norm(c.g, ins[0], ins[1], ins[2], ins[3], ins[4], eps);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    CHECK_F32(&c, 0, xs, ref_batch_norm(&c, x, xs, scale, bias, mean, var, eps), 1e-5, 1e-4);
    tc_free(&c);
}

static void test_batch_norm_applies_per_channel_statistics(void)
{
    batch_norm_case(SHP(2, 3, 4, 5), 1, 0, 1e-5f, __LINE__);
    batch_norm_case(SHP(5, 3), 1, 1, 1e-3f, __LINE__);
    batch_norm_case(SHP(1, 4, 7), 0, 0, 1e-5f, __LINE__);
    batch_norm_case(SHP(2, 16, 7, 13), 1, 1, 1e-5f, __LINE__);
    batch_norm_case(SHP(0, 3, 2, 2), 1, 0, 1e-5f, __LINE__);
}

/* ===========================================================================================
 * Layout operators
 * =========================================================================================== */

static double *copy_as_double(tc *c, const float *x, int64_t n)
{
    double *r = tc_dbuf(c, n);
    for (int64_t k = 0; k < n; k++)
        r[k] = x[k];
    return r;
}

static void reshape_case(shp xs, shp shape, shp want, int generic, int line)
{
    tc c;
    tc_init(&c);
    float *x;
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    loom_value vy;
    if (generic) {
        loom_value vs = loom_constant_i64s(c.g, shape.rank, shape.d);
        vy = tc_op(&c, "Reshape", NULL, (loom_value[]){vx, vs}, 2, NULL, 0);
    } else {
        vy = loom_reshape(c.g, vx, shape.rank, shape.d);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    CHECK_F32(&c, 0, want, copy_as_double(&c, x, numel(xs)), 0, 0);
    tc_free(&c);
}

static void test_reshape_zero_copies_dim_and_minus_one_infers(void)
{
    reshape_case(SHP(2, 3, 4), SHP(0, -1), SHP(2, 12), 0, __LINE__);
    reshape_case(SHP(6, 4), SHP(-1), SHP(24), 1, __LINE__);
    reshape_case(SHP(2, 3, 4), SHP(4, 0, -1), SHP(4, 3, 2), 0, __LINE__);
    reshape_case(SHP(2, 3, 4), SHP(-1, 2, 3, 2), SHP(2, 2, 3, 2), 1, __LINE__);
    reshape_case(SHP(2, 3, 4), SHP(3, 8), SHP(3, 8), 1, __LINE__);
    reshape_case(SHP(7, 13), SHP(1, 91, 1), SHP(1, 91, 1), 0, __LINE__);
    reshape_case(SHP(1), SCALAR, SCALAR, 0, __LINE__);
}

static void test_reshape_empty_tensor(void)
{
    reshape_case(SHP(4, 0, 3), SHP(2, 0, 6), SHP(2, 0, 6), 0, __LINE__);
    reshape_case(SHP(4, 0, 3), SHP(0, 0, 3, 1), SHP(4, 0, 3, 1), 1, __LINE__);
}

static void transpose_case(loom_dtype dt, shp xs, const int64_t *perm, int generic, shp want,
                           int line)
{
    tc c;
    tc_init(&c);
    void *x;
    int64_t n = numel(xs);
    if (dt == F32) {
        x = tc_rand(&c, xs, -1, 1);
    } else {
        int64_t *v = tc_buf(&c, sizeof(int64_t) * (size_t)n);
        for (int64_t k = 0; k < n; k++)
            v[k] = ((int64_t)1 << 33) * (k % 3) + k;
        x = tc_ints(&c, dt, xs, v);
    }
    loom_value vx = tc_data(&c, 0, dt, xs, x);
    loom_value vy;
    if (generic) {
        loom_attr a = loom_attr_ints("perm", xs.rank, perm);
        vy = tc_op(&c, "Transpose", NULL, &vx, 1, &a, perm ? 1 : 0);
    } else {
        vy = loom_transpose(c.g, vx, perm);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    shp ys;
    double *r = ref_transpose(&c, x, dt, xs, perm, &ys);
    CU_ASSERT(shp_eq(ys, want));
    CHECK_EXACT(&c, 0, dt, want, r);
    tc_free(&c);
}

static void test_transpose_default_reverses_dims(void)
{
    transpose_case(F32, SHP(2, 3), NULL, 0, SHP(3, 2), __LINE__);
    transpose_case(F32, SHP(7, 13), NULL, 1, SHP(13, 7), __LINE__);
    transpose_case(F32, SHP(2, 3, 4), NULL, 0, SHP(4, 3, 2), __LINE__);
    transpose_case(F32, SHP(33, 65), NULL, 0, SHP(65, 33), __LINE__);
}

static void test_transpose_rank3_and_rank4_permutations(void)
{
    transpose_case(F32, SHP(2, 3, 4), (const int64_t[]){1, 0, 2}, 0, SHP(3, 2, 4), __LINE__);
    transpose_case(F32, SHP(2, 3, 4), (const int64_t[]){2, 0, 1}, 1, SHP(4, 2, 3), __LINE__);
    transpose_case(F32, SHP(2, 3, 4), (const int64_t[]){0, 1, 2}, 0, SHP(2, 3, 4), __LINE__);
    transpose_case(F32, SHP(2, 3, 4, 5), (const int64_t[]){0, 2, 3, 1}, 0, SHP(2, 4, 5, 3),
                   __LINE__);
    transpose_case(F32, SHP(2, 3, 4, 5), (const int64_t[]){0, 3, 1, 2}, 1, SHP(2, 5, 3, 4),
                   __LINE__);
    transpose_case(F32, SHP(2, 3, 4, 5), (const int64_t[]){3, 1, 0, 2}, 0, SHP(5, 3, 2, 4),
                   __LINE__);
    transpose_case(F32, SHP(2, 1, 3, 2, 2), (const int64_t[]){4, 2, 0, 3, 1}, 1,
                   SHP(2, 3, 2, 2, 1), __LINE__);
}

static void test_transpose_int64_and_empty(void)
{
    transpose_case(I64, SHP(3, 5), NULL, 0, SHP(5, 3), __LINE__);
    transpose_case(I32, SHP(2, 3, 4), (const int64_t[]){2, 0, 1}, 1, SHP(4, 2, 3), __LINE__);
    transpose_case(F32, SHP(0, 3, 2), (const int64_t[]){2, 0, 1}, 0, SHP(2, 0, 3), __LINE__);
}

static void test_flatten_splits_dims_at_axis(void)
{
    const int64_t axes[6] = {0, 1, 2, -1, 4, -3};
    const shp want[6] = {SHP(1, 120), SHP(2, 60), SHP(6, 20), SHP(24, 5), SHP(120, 1),
                         SHP(2, 60)};
    for (int i = 0; i < 7; i++) {
        int line = __LINE__;
        shp xs = i == 6 ? SHP(0, 3, 4) : SHP(2, 3, 4, 5);
        shp ys = i == 6 ? SHP(0, 12) : want[i];
        tc c;
        tc_init(&c);
        float *x;
        loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
        loom_value vy;
        if (i == 6) {
            vy = tc_op(&c, "Flatten", NULL, &vx, 1, NULL, 0); /* default axis 1 */
        } else if (i % 2) {
            loom_attr a = loom_attr_int("axis", axes[i]);
            vy = tc_op(&c, "Flatten", NULL, &vx, 1, &a, 1);
        } else {
            vy = loom_flatten(c.g, vx, axes[i]);
        }
        loom_output(c.g, vy, "y");
        RUN_OK(&c);
        CHECK_F32(&c, 0, ys, copy_as_double(&c, x, numel(xs)), 0, 0);
        tc_free(&c);
    }
}

static void concat_case(loom_dtype dt, const shp *ss, size_t n, int64_t axis, int generic,
                        int const_mask, shp want, int line)
{
    tc c;
    tc_init(&c);
    void *xs[4];
    loom_value vs[4];
    for (size_t t = 0; t < n; t++) {
        if (dt == F32) {
            xs[t] = tc_rand(&c, ss[t], -1, 1);
        } else {
            int64_t m = numel(ss[t]);
            int64_t *v = tc_buf(&c, sizeof(int64_t) * (size_t)(m ? m : 1));
            for (int64_t k = 0; k < m; k++)
                v[k] = rng_int(-100000, 100000);
            xs[t] = tc_ints(&c, dt, ss[t], v);
        }
        vs[t] = (const_mask >> t) & 1 ? tc_const_data(&c, dt, ss[t], xs[t]) : tc_data(&c, 0, dt, ss[t], xs[t]);
    }
    loom_value vy;
    if (generic) {
        loom_attr a = loom_attr_int("axis", axis);
        vy = tc_op(&c, "Concat", NULL, vs, n, &a, 1);
    } else {
        vy = loom_concat(c.g, vs, n, axis);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    shp ys;
    double *r = ref_concat(&c, (const void *const *)xs, dt, ss, n,
                           axis < 0 ? axis + ss[0].rank : axis, &ys);
    CU_ASSERT(shp_eq(ys, want));
    CHECK_EXACT(&c, 0, dt, want, r);
    tc_free(&c);
}

static void test_concat_along_each_axis_with_empty_and_constant_inputs(void)
{
    const shp a[3] = {SHP(2, 3), SHP(4, 3), SHP(1, 3)};
    concat_case(F32, a, 3, 0, 0, 0, SHP(7, 3), __LINE__);
    const shp b[3] = {SHP(2, 3), SHP(2, 5), SHP(2, 1)};
    concat_case(F32, b, 3, 1, 1, 2, SHP(2, 9), __LINE__);
    const shp e[3] = {SHP(2, 3, 4), SHP(2, 3, 0), SHP(2, 3, 2)};
    concat_case(F32, e, 3, -1, 1, 0, SHP(2, 3, 6), __LINE__);
    const shp d[2] = {SHP(1, 2, 3, 3), SHP(1, 5, 3, 3)};
    concat_case(F32, d, 2, 1, 0, 1, SHP(1, 7, 3, 3), __LINE__);
    const shp one[1] = {SHP(7, 13)};
    concat_case(F32, one, 1, 0, 0, 0, SHP(7, 13), __LINE__);
    const shp z[2] = {SHP(0, 4), SHP(0, 4)};
    concat_case(F32, z, 2, 0, 1, 0, SHP(0, 4), __LINE__);
}

static void test_concat_integer_tensors(void)
{
    const shp a[2] = {SHP(2, 2), SHP(1, 2)};
    concat_case(I32, a, 2, 0, 0, 0, SHP(3, 2), __LINE__);
    const shp b[3] = {SHP(3, 1), SHP(3, 4), SHP(3, 2)};
    concat_case(I64, b, 3, -1, 1, 4, SHP(3, 7), __LINE__);
}

/* Split X along AXIS into SIZES (N parts); MODE 0: builder with sizes, 1: builder with equal
 * parts (sizes NULL), 2: generic with a constant split input, 3: generic with num_outputs. */
static void split_case(shp xs, int64_t axis, size_t n, const int64_t *sizes, int mode, int line)
{
    tc c;
    tc_init(&c);
    float *x;
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    loom_value outs[TC_MAX];
    for (size_t k = 0; k < TC_MAX; k++)
        outs[k] = LOOM_NO_VALUE;
    if (mode == 0 || mode == 1) {
        loom_split(c.g, vx, axis, n, mode == 0 ? sizes : NULL, outs);
    } else if (mode == 2) {
        loom_value vs = loom_constant_i64s(c.g, n, sizes);
        loom_attr a = loom_attr_int("axis", axis);
        loom_graph_op(c.g, "Split", NULL, (loom_value[]){vx, vs}, 2, &a, 1, outs, n);
    } else {
        loom_attr a[2] = {loom_attr_int("axis", axis), loom_attr_int("num_outputs", (int64_t)n)};
        loom_graph_op(c.g, "Split", NULL, &vx, 1, a, 2, outs, n);
    }
    for (size_t k = 0; k < n; k++) {
        char name[32];
        snprintf(name, sizeof name, "y%zu", k);
        loom_output(c.g, outs[k], name);
    }
    RUN_OK(&c);
    int64_t ax = axis < 0 ? axis + xs.rank : axis, off = 0;
    CU_ASSERT_EQUAL(c.n_out, n);
    for (size_t k = 0; k < n && k < c.n_out; k++) {
        shp ys;
        double *r = ref_narrow(&c, x, xs, ax, off, sizes[k], &ys);
        CHECK_F32(&c, k, ys, r, 0, 0);
        off += sizes[k];
    }
    tc_free(&c);
}

static void test_split_equal_parts_and_explicit_sizes(void)
{
    split_case(SHP(6, 4), 0, 3, (const int64_t[]){2, 2, 2}, 1, __LINE__);
    split_case(SHP(3, 8), 1, 3, (const int64_t[]){2, 5, 1}, 0, __LINE__);
    split_case(SHP(2, 3, 6), -1, 2, (const int64_t[]){3, 3}, 1, __LINE__);
    split_case(SHP(4, 5), 0, 2, (const int64_t[]){1, 3}, 2, __LINE__);
    split_case(SHP(2, 7, 3), 1, 3, (const int64_t[]){0, 7, 0}, 0, __LINE__);
    split_case(SHP(33, 65), -1, 2, (const int64_t[]){64, 1}, 2, __LINE__);
}

static void test_split_num_outputs_uneven_last_chunk_is_smaller(void)
{
    split_case(SHP(2, 7), 1, 3, (const int64_t[]){3, 3, 1}, 3, __LINE__);
    split_case(SHP(6, 2), 0, 3, (const int64_t[]){2, 2, 2}, 3, __LINE__);
}

static void slice_case(shp xs, size_t n, const int64_t *starts, const int64_t *ends,
                       const int64_t *axes, const int64_t *steps, int generic, shp want, int line)
{
    tc c;
    tc_init(&c);
    float *x;
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    loom_value vy;
    if (generic) {
        loom_value ins[5] = {vx, loom_constant_i64s(c.g, n, starts),
                             loom_constant_i64s(c.g, n, ends),
                             axes ? loom_constant_i64s(c.g, n, axes) : LOOM_NO_VALUE,
                             steps ? loom_constant_i64s(c.g, n, steps) : LOOM_NO_VALUE};
        size_t nin = steps ? 5 : axes ? 4 : 3;
        vy = tc_op(&c, "Slice", NULL, ins, nin, NULL, 0);
    } else {
        vy = loom_slice(c.g, vx, n, starts, ends, axes, steps);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    shp ys;
    double *r = ref_slice(&c, x, xs, n, starts, ends, axes, steps, &ys);
    CU_ASSERT(shp_eq(ys, want));
    CHECK_F32(&c, 0, want, r, 0, 0);
    tc_free(&c);
}

static void test_slice_negative_starts_and_clamped_ends(void)
{
    shp s = SHP(7, 13);
    slice_case(s, 1, (const int64_t[]){-3}, (const int64_t[]){INT64_MAX}, (const int64_t[]){0},
               NULL, 0, SHP(3, 13), __LINE__);
    slice_case(s, 2, (const int64_t[]){2, -5}, (const int64_t[]){100, -1}, NULL, NULL, 1,
               SHP(5, 4), __LINE__);
    slice_case(s, 1, (const int64_t[]){-100}, (const int64_t[]){4}, (const int64_t[]){-1}, NULL,
               0, SHP(7, 4), __LINE__);
    slice_case(s, 2, (const int64_t[]){0, 0}, (const int64_t[]){7, 13}, (const int64_t[]){0, 1},
               NULL, 1, SHP(7, 13), __LINE__);
}

static void test_slice_positive_and_negative_steps(void)
{
    shp s = SHP(7, 13);
    slice_case(s, 1, (const int64_t[]){1}, (const int64_t[]){13}, (const int64_t[]){1},
               (const int64_t[]){2}, 0, SHP(7, 6), __LINE__);
    slice_case(s, 1, (const int64_t[]){-1}, (const int64_t[]){INT64_MIN}, (const int64_t[]){1},
               (const int64_t[]){-1}, 1, SHP(7, 13), __LINE__);
    slice_case(s, 1, (const int64_t[]){10}, (const int64_t[]){1}, (const int64_t[]){-1},
               (const int64_t[]){-2}, 0, SHP(7, 5), __LINE__);
    slice_case(s, 1, (const int64_t[]){100}, (const int64_t[]){-100}, (const int64_t[]){0},
               (const int64_t[]){-3}, 1, SHP(3, 13), __LINE__);
    slice_case(s, 2, (const int64_t[]){0, 1}, (const int64_t[]){-1, 12}, (const int64_t[]){0, 1},
               (const int64_t[]){3, 4}, 1, SHP(2, 3), __LINE__);
}

static void test_slice_multi_axis_rank4_and_empty_result(void)
{
    slice_case(SHP(2, 3, 4, 5), 3, (const int64_t[]){1, 0, -1}, (const int64_t[]){2, 100, 0},
               (const int64_t[]){1, 3, 2}, (const int64_t[]){1, 2, -1}, 0, SHP(2, 1, 3, 3),
               __LINE__);
    slice_case(SHP(2, 3, 4, 5), 3, (const int64_t[]){1, 0, -1}, (const int64_t[]){2, 100, 0},
               (const int64_t[]){1, 3, 2}, (const int64_t[]){1, 2, -1}, 1, SHP(2, 1, 3, 3),
               __LINE__);
    slice_case(SHP(7, 13), 1, (const int64_t[]){5}, (const int64_t[]){2}, (const int64_t[]){0},
               NULL, 0, SHP(0, 13), __LINE__);
    slice_case(SHP(7, 13), 1, (const int64_t[]){2}, (const int64_t[]){5}, (const int64_t[]){1},
               (const int64_t[]){-1}, 1, SHP(7, 0), __LINE__);
    slice_case(SHP(0, 5), 1, (const int64_t[]){1}, (const int64_t[]){4}, (const int64_t[]){1},
               NULL, 0, SHP(0, 3), __LINE__);
}

static void test_slice_accepts_int32_index_inputs(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    shp xs = SHP(7, 13);
    float *x;
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    int32_t st[2] = {1, -2}, en[2] = {6, 0}, ax[2] = {0, 1}, sp[2] = {2, -3};
    loom_value ins[5] = {vx, tc_const_data(&c, I32, SHP(2), st), tc_const_data(&c, I32, SHP(2), en),
                         tc_const_data(&c, I32, SHP(2), ax), tc_const_data(&c, I32, SHP(2), sp)};
    loom_output(c.g, tc_op(&c, "Slice", NULL, ins, 5, NULL, 0), "y");
    RUN_OK(&c);
    const int64_t st64[2] = {1, -2}, en64[2] = {6, 0}, ax64[2] = {0, 1}, sp64[2] = {2, -3};
    shp ys;
    double *r = ref_slice(&c, x, xs, 2, st64, en64, ax64, sp64, &ys);
    CU_ASSERT(shp_eq(ys, SHP(3, 4)));
    CHECK_F32(&c, 0, SHP(3, 4), r, 0, 0);
    tc_free(&c);
}

static void gather_case(shp xs, loom_dtype it, shp is, const int64_t *ind, int64_t axis,
                        int ind_const, int generic, shp want, int line)
{
    tc c;
    tc_init(&c);
    float *x;
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    void *iv = tc_ints(&c, it, is, ind);
    loom_value vi = ind_const ? tc_const_data(&c, it, is, iv) : tc_data(&c, 0, it, is, iv);
    loom_value vy;
    if (generic) {
        loom_attr a = loom_attr_int("axis", axis);
        vy = tc_op(&c, "Gather", NULL, (loom_value[]){vx, vi}, 2, &a, 1);
    } else {
        vy = loom_gather(c.g, vx, vi, axis);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    shp ys;
    double *r = ref_gather(&c, x, xs, ind, is, axis, &ys);
    CU_ASSERT(shp_eq(ys, want));
    CHECK_F32(&c, 0, want, r, 0, 0);
    tc_free(&c);
}

static void test_gather_axis0_with_negative_int64_and_int32_indices(void)
{
    gather_case(SHP(5, 4), I64, SHP(3), (const int64_t[]){4, -1, 0}, 0, 0, 0, SHP(3, 4),
                __LINE__);
    gather_case(SHP(5, 4), I32, SHP(2, 2), (const int64_t[]){0, -5, 3, 2}, 0, 1, 1,
                SHP(2, 2, 4), __LINE__);
    gather_case(SHP(33, 65), I64, SHP(4), (const int64_t[]){32, 0, -33, 17}, 0, 1, 0,
                SHP(4, 65), __LINE__);
}

static void test_gather_axis1_with_2d_indices(void)
{
    gather_case(SHP(3, 7), I32, SHP(2, 2), (const int64_t[]){6, -7, 0, -1}, 1, 0, 0,
                SHP(3, 2, 2), __LINE__);
    gather_case(SHP(2, 5, 3), I64, SHP(4), (const int64_t[]){1, -2, 4, 0}, 1, 1, 1,
                SHP(2, 4, 3), __LINE__);
    gather_case(SHP(3, 6), I64, SHP(2), (const int64_t[]){5, -6}, -1, 0, 1, SHP(3, 2),
                __LINE__);
}

static void test_gather_scalar_index_drops_axis_and_empty_indices_give_empty_output(void)
{
    gather_case(SHP(5, 4), I64, SCALAR, (const int64_t[]){2}, 0, 0, 0, SHP(4), __LINE__);
    gather_case(SHP(5, 4), I32, SCALAR, (const int64_t[]){-1}, 1, 1, 1, SHP(5), __LINE__);
    gather_case(SHP(5, 4), I64, SHP(0), (const int64_t[]){0}, 0, 0, 0, SHP(0, 4), __LINE__);
}

static void test_gather_out_of_range_index_is_reported_with_node_name(void)
{
    const int64_t bad[2] = {5, -6};
    for (int i = 0; i < 2; i++) {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        float *x;
        shp xs = SHP(5, 3), is = SHP(2);
        int64_t ind[2] = {1, bad[i]};
        loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
        loom_value vi = tc_data(&c, 0, I64, is, ind);
        loom_attr a = loom_attr_int("axis", 0);
        loom_output(c.g, tc_op(&c, "Gather", "gather_oob", (loom_value[]){vx, vi}, 2, &a, 1), "y");
        loom_status st = tc_run_status(&c, line, 1);
        const char *msg = loom_last_error();
        if (st != LOOM_ERR_INVALID_ARGUMENT || !strstr(msg, "gather_oob"))
            fprintf(stderr, "\n    Gather index %lld on dim 5: status %s, message \"%s\"\n",
                    (long long)bad[i], loom_status_name(st), msg);
        CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "gather_oob"));
        /* the plan stays usable: a valid index afterwards runs and is right */
        if (c.plan && c.n_out == 1) {
            ind[1] = -5;
            st = loom_plan_run(c.plan, (const loom_tensor *const *)c.in, c.n_in, c.out, 1, NULL);
            CU_ASSERT_EQUAL(st, LOOM_OK);
            if (st == LOOM_OK) {
                shp ys;
                double *r = ref_gather(&c, x, xs, ind, is, 0, &ys);
                CHECK_F32(&c, 0, ys, r, 0, 0);
            }
        }
        tc_free(&c);
    }
}

static void squeeze_case(shp xs, size_t n, const int64_t *axes, int generic, int unsq, shp want,
                         int line)
{
    tc c;
    tc_init(&c);
    float *x;
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    loom_value vy;
    if (generic) {
        loom_value ins[2] = {vx, n ? loom_constant_i64s(c.g, n, axes) : LOOM_NO_VALUE};
        vy = tc_op(&c, unsq ? "Unsqueeze" : "Squeeze", NULL, ins, n ? 2 : 1, NULL, 0);
    } else {
        vy = unsq ? loom_unsqueeze(c.g, vx, n, axes) : loom_squeeze(c.g, vx, n, axes);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    CHECK_F32(&c, 0, want, copy_as_double(&c, x, numel(xs)), 0, 0);
    tc_free(&c);
}

static void test_squeeze_explicit_negative_and_all_unit_axes(void)
{
    squeeze_case(SHP(1, 3, 1, 5), 2, (const int64_t[]){0, 2}, 0, 0, SHP(3, 5), __LINE__);
    squeeze_case(SHP(1, 3, 1, 5), 0, NULL, 0, 0, SHP(3, 5), __LINE__);
    squeeze_case(SHP(1, 3, 1, 5), 1, (const int64_t[]){-2}, 1, 0, SHP(1, 3, 5), __LINE__);
    squeeze_case(SHP(2, 3, 4, 1), 1, (const int64_t[]){3}, 1, 0, SHP(2, 3, 4), __LINE__);
    squeeze_case(SHP(1, 1, 4), 0, NULL, 1, 0, SHP(4), __LINE__);
    squeeze_case(SHP(1, 1), 0, NULL, 0, 0, SCALAR, __LINE__);
    squeeze_case(SHP(0, 1, 3), 1, (const int64_t[]){1}, 0, 0, SHP(0, 3), __LINE__);
}

static void test_unsqueeze_axes_refer_to_output_rank(void)
{
    squeeze_case(SHP(3, 5), 2, (const int64_t[]){0, 3}, 0, 1, SHP(1, 3, 5, 1), __LINE__);
    squeeze_case(SHP(3, 5), 1, (const int64_t[]){-1}, 1, 1, SHP(3, 5, 1), __LINE__);
    squeeze_case(SHP(3, 5), 1, (const int64_t[]){1}, 0, 1, SHP(3, 1, 5), __LINE__);
    squeeze_case(SCALAR, 1, (const int64_t[]){0}, 1, 1, SHP(1), __LINE__);
    squeeze_case(SHP(3, 5), 2, (const int64_t[]){2, 0}, 1, 1, SHP(1, 3, 1, 5), __LINE__);
    squeeze_case(SHP(3, 5), 2, (const int64_t[]){-1, -4}, 0, 1, SHP(1, 3, 5, 1), __LINE__);
    squeeze_case(SHP(0, 5), 1, (const int64_t[]){1}, 0, 1, SHP(0, 1, 5), __LINE__);
}

static void expand_case(shp xs, shp shape, shp want, int generic, int line)
{
    tc c;
    tc_init(&c);
    float *x;
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    loom_value vy;
    if (generic) {
        loom_value vs = loom_constant_i64s(c.g, shape.rank, shape.d);
        vy = tc_op(&c, "Expand", NULL, (loom_value[]){vx, vs}, 2, NULL, 0);
    } else {
        vy = loom_expand(c.g, vx, shape.rank, shape.d);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    shp ys = bcast(xs, shape);
    CU_ASSERT(shp_eq(ys, want));
    int64_t idx[LOOM_MAX_RANK];
    double *r = tc_dbuf(&c, numel(ys));
    for (int64_t k = 0; k < numel(ys); k++) {
        unravel(k, ys, idx);
        r[k] = x[bcast_off(ys.rank, idx, xs)];
    }
    CHECK_F32(&c, 0, want, r, 0, 0);
    tc_free(&c);
}

static void test_expand_broadcasts_in_both_directions(void)
{
    expand_case(SHP(3, 1), SHP(2, 1, 6), SHP(2, 3, 6), 0, __LINE__);
    expand_case(SHP(1), SHP(4, 5), SHP(4, 5), 1, __LINE__);
    expand_case(SHP(3, 4), SHP(1, 4), SHP(3, 4), 0, __LINE__); /* shape smaller than input */
    expand_case(SHP(2, 1, 5), SHP(3, 1), SHP(2, 3, 5), 1, __LINE__);
    expand_case(SHP(1, 5), SHP(3, 1), SHP(3, 5), 1, __LINE__);
    expand_case(SCALAR, SHP(2, 3), SHP(2, 3), 0, __LINE__);
    expand_case(SHP(7, 1), SHP(7, 13), SHP(7, 13), 0, __LINE__);
    expand_case(SHP(0, 1), SHP(1, 4), SHP(0, 4), 1, __LINE__);
}

/* ===========================================================================================
 * Reductions
 * =========================================================================================== */

static void reduce_case(int kind, shp xs, size_t n, const int64_t *axes, int keepdims,
                        int generic, shp want, int line)
{
    static const char *names[3] = {"ReduceSum", "ReduceMean", "ReduceMax"};
    tc c;
    tc_init(&c);
    float *x;
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    loom_value vy;
    if (generic) {
        loom_value ins[2] = {vx, n ? loom_constant_i64s(c.g, n, axes) : LOOM_NO_VALUE};
        loom_attr a = loom_attr_int("keepdims", keepdims);
        vy = tc_op(&c, names[kind], NULL, ins, n ? 2 : 1, &a, 1);
    } else if (kind == RED_SUM) {
        vy = loom_reduce_sum(c.g, vx, n, axes, keepdims);
    } else if (kind == RED_MEAN) {
        vy = loom_reduce_mean(c.g, vx, n, axes, keepdims);
    } else {
        vy = loom_reduce_max(c.g, vx, n, axes, keepdims);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    shp ys;
    double *r = ref_reduce(&c, kind, x, xs, n, axes, keepdims, &ys);
    CU_ASSERT(shp_eq(ys, want));
    int64_t count = numel(ys) ? numel(xs) / numel(ys) : 1;
    CHECK_F32(&c, 0, want, r, kind == RED_SUM ? k_tol(count) : 1e-5, 1e-4);
    tc_free(&c);
}

static void reduce_all_cases(int kind)
{
    shp s = SHP(3, 4, 5);
    reduce_case(kind, s, 1, (const int64_t[]){1}, 1, 0, SHP(3, 1, 5), __LINE__);
    reduce_case(kind, s, 1, (const int64_t[]){1}, 0, 1, SHP(3, 5), __LINE__);
    reduce_case(kind, s, 2, (const int64_t[]){0, 2}, 1, 1, SHP(1, 4, 1), __LINE__);
    reduce_case(kind, s, 2, (const int64_t[]){2, 0}, 0, 0, SHP(4), __LINE__);
    reduce_case(kind, s, 1, (const int64_t[]){-1}, 0, 0, SHP(3, 4), __LINE__);
    reduce_case(kind, s, 0, NULL, 1, 0, SHP(1, 1, 1), __LINE__);
    reduce_case(kind, s, 0, NULL, 0, 1, SCALAR, __LINE__);
    reduce_case(kind, s, 3, (const int64_t[]){0, 1, 2}, 0, 0, SCALAR, __LINE__);
    reduce_case(kind, SHP(7, 13), 1, (const int64_t[]){0}, 1, 1, SHP(1, 13), __LINE__);
    reduce_case(kind, SHP(33, 65), 1, (const int64_t[]){1}, 0, 0, SHP(33), __LINE__);
    reduce_case(kind, SHP(2, 3, 4, 5), 2, (const int64_t[]){1, 3}, 0, 1, SHP(2, 4), __LINE__);
    reduce_case(kind, SHP(2, 3, 4, 5), 2, (const int64_t[]){-3, -1}, 1, 0, SHP(2, 1, 4, 1),
                __LINE__);
    reduce_case(kind, SHP(0, 4), 1, (const int64_t[]){1}, 0, 0, SHP(0), __LINE__);
    reduce_case(kind, SHP(0, 4), 1, (const int64_t[]){1}, 1, 1, SHP(0, 1), __LINE__);
}

static void test_reduce_sum_axis_sets_and_keepdims(void)
{
    reduce_all_cases(RED_SUM);
}

static void test_reduce_mean_axis_sets_and_keepdims(void)
{
    reduce_all_cases(RED_MEAN);
}

static void test_reduce_max_axis_sets_and_keepdims(void)
{
    reduce_all_cases(RED_MAX);
}

static void test_reduce_sum_over_an_empty_axis_is_zero(void)
{
    reduce_case(RED_SUM, SHP(3, 0), 1, (const int64_t[]){1}, 0, 0, SHP(3), __LINE__);
    reduce_case(RED_SUM, SHP(3, 0), 1, (const int64_t[]){1}, 1, 1, SHP(3, 1), __LINE__);
}

static void test_reduce_noop_with_empty_axes_is_identity_and_default_keepdims_is_one(void)
{
    /* noop_with_empty_axes = 1 and no axes: the input unchanged */
    {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        float *x;
        shp xs = SHP(3, 4);
        loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
        loom_attr a = loom_attr_int("noop_with_empty_axes", 1);
        loom_output(c.g, tc_op(&c, "ReduceSum", NULL, &vx, 1, &a, 1), "y");
        RUN_OK(&c);
        CHECK_F32(&c, 0, xs, copy_as_double(&c, x, numel(xs)), 0, 0);
        tc_free(&c);
    }
    /* no attributes: keepdims = 1, all axes */
    {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        float *x;
        shp xs = SHP(3, 4);
        loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
        loom_output(c.g, tc_op(&c, "ReduceMax", NULL, &vx, 1, NULL, 0), "y");
        RUN_OK(&c);
        shp ys;
        double *r = ref_reduce(&c, RED_MAX, x, xs, 0, NULL, 1, &ys);
        CHECK_F32(&c, 0, SHP(1, 1), r, 0, 0);
        tc_free(&c);
    }
}

/* ===========================================================================================
 * Cast
 * =========================================================================================== */

/* Cast N values of FROM (raw bytes IN) to TO and compare the raw bytes with WANT. */
static void cast_case(loom_dtype from, loom_dtype to, int64_t n, const void *in, const void *want,
                      int generic, int line)
{
    tc c;
    tc_init(&c);
    shp s = SHP(n);
    size_t fsz = loom_dtype_size(from), tsz = loom_dtype_size(to);
    void *x = tc_buf(&c, (size_t)n * fsz);
    memcpy(x, in, (size_t)n * fsz);
    loom_value vx = tc_data(&c, 0, from, s, x);
    loom_value vy;
    if (generic) {
        loom_attr a = loom_attr_int("to", to);
        vy = tc_op(&c, "Cast", NULL, &vx, 1, &a, 1);
    } else {
        vy = loom_cast(c.g, vx, to);
    }
    loom_output(c.g, vy, "y");
    RUN_OK(&c);
    if (check_shape(c.out[0], to, s, line)) {
        const unsigned char *got = n ? loom_tensor_data(c.out[0]) : NULL;
        const unsigned char *exp = want;
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            if (memcmp(got + (size_t)i * tsz, exp + (size_t)i * tsz, tsz)) {
                if (bad < 6) {
                    fprintf(stderr, "\n    line %d: Cast %s->%s element %lld (input %.9g): got %.9g,"
                                    " expected %.9g (bytes ",
                            line, loom_dtype_name(from), loom_dtype_name(to), (long long)i,
                            elem_load(in, from, i), elem_load(got, to, i), elem_load(exp, to, i));
                    for (size_t b = tsz; b-- > 0;)
                        fprintf(stderr, "%02x", got[(size_t)i * tsz + b]);
                    fprintf(stderr, " vs ");
                    for (size_t b = tsz; b-- > 0;)
                        fprintf(stderr, "%02x", exp[(size_t)i * tsz + b]);
                    fprintf(stderr, ")");
                }
                bad++;
            }
        }
        if (bad)
            fprintf(stderr, "\n");
        CU_assertImplementation(bad == 0, (unsigned)line, "cast output bytes as expected",
                                __FILE__, "", CU_FALSE);
    }
    tc_free(&c);
}

static void test_cast_f32_to_f16_exact_values(void)
{
    const float in[14] = {0.0f, -0.0f, 1.0f, -2.0f, 0.5f, 1.5f, 65504.0f, -65504.0f,
                          6.103515625e-05f, 5.9604644775390625e-08f, 0.333251953125f,
                          INFINITY, -INFINITY, 1.0009765625f};
    const uint16_t want[14] = {0x0000, 0x8000, 0x3C00, 0xC000, 0x3800, 0x3E00, 0x7BFF, 0xFBFF,
                               0x0400, 0x0001, 0x3555, 0x7C00, 0xFC00, 0x3C01};
    cast_case(F32, F16, 14, in, want, 0, __LINE__);
    cast_case(F32, F16, 14, in, want, 1, __LINE__);
}

static void test_cast_f32_to_f16_rounds_to_nearest_even_and_overflows_to_infinity(void)
{
    const float in[6] = {1.00048828125f,            /* 1 + 2^-11: tie, to even -> 1 */
                         1.00146484375f,            /* 1 + 3*2^-11: tie, to even -> 1 + 2^-9 */
                         1.00048828125f + 9.5367431640625e-07f, /* above the tie -> up */
                         1e6f, -1e6f, 65520.0f};    /* beyond the largest half -> inf */
    const uint16_t want[6] = {0x3C00, 0x3C02, 0x3C01, 0x7C00, 0xFC00, 0x7C00};
    cast_case(F32, F16, 6, in, want, 0, __LINE__);
}

static void test_cast_f16_to_f32_including_subnormals(void)
{
    const uint16_t in[10] = {0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0x0400,
                             0x0001, 0x03FF, 0x7C00, 0x3555};
    const float want[10] = {0.0f, -0.0f, 1.0f, -2.0f, 65504.0f, 6.103515625e-05f,
                            5.9604644775390625e-08f, 6.097555160522461e-05f, INFINITY,
                            0.333251953125f};
    cast_case(F16, F32, 10, in, want, 0, __LINE__);
    cast_case(F16, F32, 10, in, want, 1, __LINE__);
}

static void test_cast_f32_to_bf16_exact_and_round_to_nearest_even(void)
{
    const float in[11] = {0.0f, -0.0f, 1.0f, -2.0f, 0.5f, 3.140625f, 1048576.0f, INFINITY,
                          1.00390625f,                       /* 1 + 2^-8: tie -> 1 */
                          1.01171875f,                       /* 1 + 3*2^-8: tie -> even */
                          1.00390625f + 9.5367431640625e-07f /* above the tie -> up */};
    const uint16_t want[11] = {0x0000, 0x8000, 0x3F80, 0xC000, 0x3F00, 0x4049, 0x4980, 0x7F80,
                               0x3F80, 0x3F82, 0x3F81};
    cast_case(F32, BF16, 8, in, want, 0, __LINE__);  /* exact values */
    cast_case(F32, BF16, 11, in, want, 1, __LINE__); /* and the rounding */
}

static void test_cast_bf16_to_f32(void)
{
    const uint16_t in[7] = {0x0000, 0x8000, 0x3F80, 0xC000, 0x4049, 0x7F80, 0x0001};
    const float want[7] = {0.0f, -0.0f, 1.0f, -2.0f, 3.140625f, INFINITY,
                           9.18354961579912115600575419705e-41f};
    cast_case(BF16, F32, 7, in, want, 0, __LINE__);
}

static void test_cast_f32_to_and_from_integer_types_exact_values(void)
{
    const float f_i32[6] = {0.0f, 1.0f, -1.0f, 123456.0f, -2147483648.0f, 16777216.0f};
    const int32_t i32[6] = {0, 1, -1, 123456, INT32_MIN, 16777216};
    cast_case(F32, I32, 6, f_i32, i32, 0, __LINE__);
    cast_case(I32, F32, 6, i32, f_i32, 1, __LINE__);

    const float f_i64[5] = {0.0f, -5.0f, 1e10f, -1099511627776.0f, 4611686018427387904.0f};
    const int64_t i64[5] = {0, -5, 10000000000LL, -1099511627776LL, 4611686018427387904LL};
    cast_case(F32, I64, 5, f_i64, i64, 1, __LINE__);
    cast_case(I64, F32, 5, i64, f_i64, 0, __LINE__);

    const float f_i8[5] = {-128.0f, -1.0f, 0.0f, 1.0f, 127.0f};
    const int8_t i8[5] = {-128, -1, 0, 1, 127};
    cast_case(F32, I8, 5, f_i8, i8, 0, __LINE__);
    cast_case(I8, F32, 5, i8, f_i8, 1, __LINE__);

    const float f_u8[4] = {0.0f, 1.0f, 128.0f, 255.0f};
    const uint8_t u8[4] = {0, 1, 128, 255};
    cast_case(F32, U8, 4, f_u8, u8, 1, __LINE__);
    cast_case(U8, F32, 4, u8, f_u8, 0, __LINE__);

    /* int -> float rounds to nearest */
    const int32_t big[2] = {INT32_MAX, 16777217};
    const float big_f[2] = {2147483648.0f, 16777216.0f};
    cast_case(I32, F32, 2, big, big_f, 0, __LINE__);
}

static void test_cast_f32_to_int_truncates_toward_zero(void)
{
    const float in[6] = {2.7f, -2.7f, 0.9f, -0.9f, 7.5f, -7.5f};
    const int32_t want32[6] = {2, -2, 0, 0, 7, -7};
    const int64_t want64[6] = {2, -2, 0, 0, 7, -7};
    const int8_t want8[6] = {2, -2, 0, 0, 7, -7};
    cast_case(F32, I32, 6, in, want32, 0, __LINE__);
    cast_case(F32, I64, 6, in, want64, 1, __LINE__);
    cast_case(F32, I8, 6, in, want8, 0, __LINE__);
}

static void test_cast_bool_is_nonzero_and_converts_back_to_zero_or_one(void)
{
    const float f[7] = {0.0f, -0.0f, 1.0f, -2.5f, 0.001f, INFINITY, 1e-30f};
    const uint8_t b[7] = {0, 0, 1, 1, 1, 1, 1};
    cast_case(F32, BOOL, 7, f, b, 0, __LINE__);
    const uint8_t bin[3] = {0, 1, 1};
    const float bf[3] = {0.0f, 1.0f, 1.0f};
    cast_case(BOOL, F32, 3, bin, bf, 1, __LINE__);
    const int64_t iv[4] = {0, 5, -1, 0};
    const uint8_t ib[4] = {0, 1, 1, 0};
    cast_case(I64, BOOL, 4, iv, ib, 0, __LINE__);
    const int32_t bi[3] = {0, 1, 1};
    cast_case(BOOL, I32, 3, bin, bi, 1, __LINE__);
}

static void test_cast_between_integer_widths(void)
{
    const int64_t a[4] = {5, -5, 2147483647, -2147483648LL};
    const int32_t b[4] = {5, -5, 2147483647, INT32_MIN};
    cast_case(I64, I32, 4, a, b, 0, __LINE__);
    cast_case(I32, I64, 4, b, a, 1, __LINE__);
    const int8_t c8[3] = {-128, -1, 127};
    const int64_t c64[3] = {-128, -1, 127};
    cast_case(I8, I64, 3, c8, c64, 0, __LINE__);
    const uint8_t u[2] = {0, 255};
    const int32_t u32[2] = {0, 255};
    cast_case(U8, I32, 2, u, u32, 1, __LINE__);
}

static void test_cast_to_same_type_and_empty_tensor(void)
{
    const float f[3] = {1.5f, -0.0f, INFINITY};
    cast_case(F32, F32, 3, f, f, 0, __LINE__);
    cast_case(F32, F16, 0, f, f, 1, __LINE__);
    cast_case(I64, F32, 0, f, f, 0, __LINE__);
}

/* ===========================================================================================
 * Edge values
 * =========================================================================================== */

/* Values where naive formulas overflow: exp(-x) for large negative x, (e^2x-1)/(e^2x+1) for
 * large x, and infinities. The reference is rounded to f32 first, as the kernel's result is. */
static void extreme_case(const char *op, unary_ref ref, int with_inf, double atol, double rtol,
                         int line)
{
    const float v[17] = {-INFINITY, -1e30f, -1e4f, -100.0f, -88.0f, -50.0f, -20.0f, -1e-30f, 0.0f,
                         1e-30f,    20.0f,  50.0f, 88.0f,   100.0f, 1e4f,   1e30f,  INFINITY};
    int64_t n = with_inf ? 17 : 15;
    tc c;
    tc_init(&c);
    float *x = tc_buf(&c, sizeof v);
    memcpy(x, with_inf ? v : v + 1, (size_t)n * sizeof(float));
    shp s = SHP(n);
    loom_value vx = tc_data(&c, 0, F32, s, x);
    loom_output(c.g, tc_op(&c, op, NULL, &vx, 1, NULL, 0), "y");
    RUN_OK(&c);
    double *r = tc_dbuf(&c, n);
    for (int64_t k = 0; k < n; k++)
        r[k] = (double)(float)ref(x[k]);
    CHECK_F32(&c, 0, s, r, atol, rtol);
    tc_free(&c);
}

static double ref_leaky_01(double x) { return x >= 0 ? x : 0.01 * x; }

static void test_unary_ops_stay_finite_and_right_for_huge_and_infinite_inputs(void)
{
    extreme_case("Relu", ref_relu, 1, 0, 0, __LINE__);
    extreme_case("LeakyRelu", ref_leaky_01, 1, 0, 1e-6, __LINE__);
    extreme_case("Sigmoid", ref_sigmoid, 1, 1e-6, 1e-4, __LINE__);
    extreme_case("Tanh", tanh, 1, 1e-6, 1e-4, __LINE__);
    extreme_case("Erf", erf, 1, 1e-6, 1e-4, __LINE__);
    extreme_case("Abs", fabs, 1, 0, 0, __LINE__);
    extreme_case("Neg", ref_neg, 1, 0, 0, __LINE__);
    /* Gelu(-inf) is 0 * inf in the formula: left out */
    extreme_case("Gelu", ref_gelu, 0, 1e-6, 1e-4, __LINE__);
}

static void test_gelu_tanh_stays_finite_for_huge_inputs(void)
{
    int line = __LINE__;
    const float v[8] = {-1e30f, -1e4f, -100.0f, -20.0f, 20.0f, 100.0f, 1e4f, 1e30f};
    tc c;
    tc_init(&c);
    float *x = tc_buf(&c, sizeof v);
    memcpy(x, v, sizeof v);
    loom_value vx = tc_data(&c, 0, F32, SHP(8), x);
    loom_output(c.g, loom_gelu(c.g, vx, "tanh"), "y");
    RUN_OK(&c);
    double r[8];
    for (int k = 0; k < 8; k++)
        r[k] = (double)(float)ref_gelu_tanh(x[k]);
    CHECK_F32(&c, 0, SHP(8), r, 1e-6, 1e-4);
    tc_free(&c);
}

static void test_exp_log_sqrt_at_range_limits(void)
{
    struct {
        const char *op;
        unary_ref ref;
        float v[6];
    } t[3] = {
        {"Exp", exp, {88.0f, -87.0f, 80.0f, -80.0f, INFINITY, -INFINITY}},
        {"Log", log, {1e-40f, 3e38f, 1e-30f, 1e30f, INFINITY, 1.0f}},
        {"Sqrt", sqrt, {1e-40f, 3e38f, 1e-30f, 1e30f, INFINITY, 2.0f}},
    };
    for (int i = 0; i < 3; i++) {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        float *x = tc_buf(&c, sizeof t[i].v);
        memcpy(x, t[i].v, sizeof t[i].v);
        loom_value vx = tc_data(&c, 0, F32, SHP(6), x);
        loom_output(c.g, tc_op(&c, t[i].op, NULL, &vx, 1, NULL, 0), "y");
        RUN_OK(&c);
        double r[6];
        for (int k = 0; k < 6; k++)
            r[k] = (double)(float)t[i].ref(x[k]);
        CHECK_F32(&c, 0, SHP(6), r, 1e-37, 1e-4);
        tc_free(&c);
    }
}

static void test_pow_special_cases_follow_ieee(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float a[9] = {0.0f, 0.0f, -8.0f, 2.0f, 0.5f, 2.0f, 4.0f, -0.5f, -1.0f};
    float b[9] = {0.0f, -1.0f, 1.0f / 3.0f, INFINITY, INFINITY, -INFINITY, 0.5f, 2.0f, INFINITY};
    shp s = SHP(9);
    loom_value va = tc_data(&c, 0, F32, s, a), vb = tc_data(&c, 0, F32, s, b);
    loom_output(c.g, loom_pow(c.g, va, vb), "y");
    RUN_OK(&c);
    double r[9];
    for (int k = 0; k < 9; k++)
        r[k] = pow(a[k], b[k]); /* 1, inf, nan, inf, 0, 0, 2, 0.25, 1 */
    CHECK_F32(&c, 0, s, r, 0, 1e-6);
    tc_free(&c);
}

static void test_clip_with_min_above_max_gives_max_everywhere(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float *x;
    shp s = SHP(7, 13);
    loom_value vx = tc_rand_input(&c, s, -3, 3, &x);
    loom_output(c.g, loom_clip(c.g, vx, 1.0f, -1.0f), "y");
    RUN_OK(&c);
    double *r = tc_dbuf(&c, numel(s));
    for (int64_t k = 0; k < numel(s); k++)
        r[k] = -1.0; /* ONNX Clip-13: Min(max, Max(input, min)) */
    CHECK_F32(&c, 0, s, r, 0, 0);
    tc_free(&c);
}

static void test_softmax_gives_zero_weight_to_minus_infinity(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float x[8] = {-INFINITY, 0.0f, 1.0f, -INFINITY, 3.0f, -INFINITY, -INFINITY, -INFINITY};
    shp s = SHP(2, 4);
    loom_value vx = tc_data(&c, 0, F32, s, x);
    loom_output(c.g, loom_softmax(c.g, vx, -1), "y");
    RUN_OK(&c);
    double e = exp(1.0);
    double r[8] = {0, 1 / (1 + e), e / (1 + e), 0, 1, 0, 0, 0};
    CHECK_F32(&c, 0, s, r, 1e-7, 1e-5);
    tc_free(&c);
}

static void test_layer_norm_of_constant_rows_gives_bias(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    shp xs = SHP(3, 16), ps = SHP(16);
    float *x = tc_buf(&c, sizeof(float) * 48);
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < 16; k++)
            x[r * 16 + k] = (float)(r * 10 - 7);
    float *scale = tc_rand(&c, ps, 0.5f, 1.5f), *bias = tc_rand(&c, ps, -1, 1);
    loom_value vx = tc_data(&c, 0, F32, xs, x);
    loom_output(c.g, loom_layer_norm(c.g, vx, tc_const_data(&c, F32, ps, scale),
                                     tc_const_data(&c, F32, ps, bias), -1, 1e-5f),
                "y");
    RUN_OK(&c);
    CHECK_F32(&c, 0, xs, ref_layer_norm(&c, x, xs, scale, bias, -1, 1e-5), 1e-6, 1e-6);
    tc_free(&c);
}

static void test_layer_norm_is_accurate_for_large_mean_and_small_variance(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    shp xs = SHP(8, 256), ps = SHP(256);
    float *x = tc_rand(&c, xs, -1, 1);
    for (int64_t k = 0; k < numel(xs); k++)
        x[k] += 300.0f;
    float *scale = tc_rand(&c, ps, 0.5f, 1.5f);
    loom_value vx = tc_data(&c, 0, F32, xs, x);
    loom_output(c.g, loom_layer_norm(c.g, vx, tc_const_data(&c, F32, ps, scale), LOOM_NO_VALUE, -1,
                                     1e-5f),
                "y");
    RUN_OK(&c);
    CHECK_F32(&c, 0, xs, ref_layer_norm(&c, x, xs, scale, NULL, -1, 1e-5), 1e-3, 1e-3);
    tc_free(&c);
}

static void test_div_integer_overflow_does_not_crash(void)
{
    const loom_dtype dts[2] = {I32, I64};
    for (int d = 0; d < 2; d++) {
        tc c;
        tc_init(&c);
        const int64_t a[2] = {dts[d] == I32 ? INT32_MIN : INT64_MIN, 9};
        const int64_t b[2] = {-1, -1};
        loom_value va = tc_data(&c, 0, dts[d], SHP(2), tc_ints(&c, dts[d], SHP(2), a));
        loom_value vb = tc_data(&c, 0, dts[d], SHP(2), tc_ints(&c, dts[d], SHP(2), b));
        loom_output(c.g, tc_op(&c, "Div", "int_div_overflow", (loom_value[]){va, vb}, 2, NULL, 0),
                    "y");
        loom_status st = tc_run_status(&c, __LINE__, 1);
        /* ONNX leaves the value undefined: a result or a reported error, never a trap */
        CU_ASSERT(st == LOOM_OK || st == LOOM_ERR_INVALID_ARGUMENT);
        tc_free(&c);
    }
}

static void test_gather_out_of_range_int32_index_is_reported(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    float *x;
    int32_t ind[3] = {0, 2, 3};
    loom_value vx = tc_rand_input(&c, SHP(2, 3), -1, 1, &x);
    loom_value vi = tc_data(&c, 0, I32, SHP(3), ind);
    loom_attr a = loom_attr_int("axis", 1);
    loom_output(c.g, tc_op(&c, "Gather", "gather_oob32", (loom_value[]){vx, vi}, 2, &a, 1), "y");
    loom_status st = tc_run_status(&c, line, 1);
    const char *msg = loom_last_error();
    if (st != LOOM_ERR_INVALID_ARGUMENT || !strstr(msg, "gather_oob32"))
        fprintf(stderr, "\n    Gather int32 index 3 on dim 3: status %s, message \"%s\"\n",
                loom_status_name(st), msg);
    CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "gather_oob32"));
    tc_free(&c);
}

static void test_empty_batches_through_pooling_gather_and_flatten_of_rank1(void)
{
    pool_case(POOL_MAX, SHP(0, 3, 5, 5), pspec2(3, 3, 2, 2, 1, 1, 1, 1), 0, -1, 1,
              SHP(0, 3, 3, 3), __LINE__);
    pool_case(POOL_AVG, SHP(0, 3, 5, 5), pspec2(3, 3, 2, 2, 1, 1, 1, 1), 1, -1, 1,
              SHP(0, 3, 3, 3), __LINE__);
    gather_case(SHP(5, 0), I64, SHP(3), (const int64_t[]){4, -1, 0}, 0, 0, 0, SHP(3, 0),
                __LINE__);
    {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        float *x;
        loom_value vx = tc_rand_input(&c, SHP(0, 3, 4, 4), -1, 1, &x);
        loom_output(c.g, loom_global_average_pool(c.g, vx), "y");
        RUN_OK(&c);
        CHECK_F32(&c, 0, SHP(0, 3, 1, 1), NULL, 0, 0);
        tc_free(&c);
    }
    for (int axis = 0; axis < 2; axis++) {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        float *x;
        loom_value vx = tc_rand_input(&c, SHP(5), -1, 1, &x);
        loom_output(c.g, loom_flatten(c.g, vx, axis), "y");
        RUN_OK(&c);
        CHECK_F32(&c, 0, axis ? SHP(5, 1) : SHP(1, 5), copy_as_double(&c, x, 5), 0, 0);
        tc_free(&c);
    }
}

static void test_conv_groups_with_strides_pads_and_kernel_as_large_as_input(void)
{
    /* (5 + 4 - 5) / 2 + 1 = 3 */
    conv_case(SHP(1, 4, 5, 5), SHP(8, 2, 5, 5), 1, cspec2(2, 2, 1, 1, 2, 2, 2, 2, 2), 1, 0,
              SHP(1, 8, 3, 3), __LINE__);
    /* dilation 2 spans 9: (5 + 4 - 9) + 1 = 1 */
    conv_case(SHP(2, 4, 5, 5), SHP(4, 2, 5, 5), 0, cspec2(1, 1, 2, 2, 2, 2, 2, 2, 2), 1, 1,
              SHP(2, 4, 1, 1), __LINE__);
    /* kernel equal to the input: one output per channel */
    conv_case(SHP(3, 3, 4, 6), SHP(5, 3, 4, 6), 1, cspec_default(0), 1, 0, SHP(3, 5, 1, 1),
              __LINE__);
}

/* ===========================================================================================
 * Large tensors (the CPU backend splits these across its threads) and high ranks
 * =========================================================================================== */

static void test_large_elementwise_tensors_match_reference(void)
{
    shp big = SHP(257, 1031);
    unary_one("Exp", exp, big, -10, 10, 1e-5, 1e-4, __LINE__);
    unary_one("Tanh", tanh, big, -6, 6, 1e-5, 1e-4, __LINE__);
    unary_one("Sigmoid", ref_sigmoid, big, -20, 20, 1e-5, 1e-4, __LINE__);
    unary_one("Erf", erf, big, -4, 4, 1e-5, 1e-4, __LINE__);
    unary_one("Gelu", ref_gelu, big, -6, 6, 1e-5, 1e-4, __LINE__);
    unary_one("Relu", ref_relu, big, -1, 1, 0, 0, __LINE__);
    binary_one("Add", NULL, ref_add, SHP(16, 1, 1031), SHP(1, 129, 1), -1, 1, -1, 1, 0, 0, 0,
               1e-6, 1e-6, __LINE__);
    binary_one("Mul", loom_mul, ref_mul, big, SHP(1031), -1, 1, -1, 1, 0, 0, 1, 1e-6, 1e-6,
               __LINE__);
    binary_one("Div", NULL, ref_div, big, SHP(257, 1), -1, 1, 0.5f, 2, 1, 0, 0, 1e-6, 1e-5,
               __LINE__);
    binary_one("Sub", loom_sub, ref_sub, SCALAR, big, -1, 1, -1, 1, 0, 1, 0, 1e-6, 1e-6,
               __LINE__);
    binary_one("Max", NULL, ref_max, big, big, -1, 1, -1, 1, 0, 0, 0, 0, 0, __LINE__);
    binary_one("Pow", NULL, pow, SHP(3, 1, 70001), SHP(3, 1), 0.1f, 3, -2, 2, 0, 0, 0, 1e-5,
               1e-4, __LINE__);
}

static void test_large_matmul_gemm_and_conv_match_reference(void)
{
    matmul_case(SHP(8, 96, 130), SHP(130, 70), SHP(8, 96, 70), 1, 0, __LINE__);
    matmul_case(SHP(4, 1, 64, 100), SHP(3, 100, 50), SHP(4, 3, 64, 50), 0, 1, __LINE__);
    matmul_case(SHP(2, 2048), SHP(2048, 64), SHP(2, 64), 1, 0, __LINE__);
    gemm_case(256, 300, 200, 0, 1, 1.0f, 1.0f, SHP(200), 1, 1, 0, __LINE__);
    gemm_case(129, 65, 257, 1, 0, 0.5f, -1.0f, SHP(129, 1), 1, 0, 1, __LINE__);
    conv_case(SHP(2, 32, 28, 28), SHP(64, 32, 3, 3), 1, cspec2(1, 1, 1, 1, 1, 1, 1, 1, 1), 1, 0,
              SHP(2, 64, 28, 28), __LINE__);
    conv_case(SHP(1, 64, 30, 30), SHP(64, 1, 3, 3), 1, cspec2(2, 2, 1, 1, 1, 1, 1, 1, 64), 1, 1,
              SHP(1, 64, 15, 15), __LINE__);
    conv_case(SHP(1, 3, 64, 64), SHP(16, 3, 7, 7), 1, cspec2(2, 2, 1, 1, 3, 3, 3, 3, 1), 1, 0,
              SHP(1, 16, 32, 32), __LINE__);
}

static void test_large_normalisation_pooling_and_reductions_match_reference(void)
{
    softmax_case(SHP(512, 1000), -1, 0, -10, 10, __LINE__);
    softmax_case(SHP(300, 257), 0, 1, -10, 10, __LINE__);
    layer_norm_case(SHP(256, 1024), -1, 1, 1, 0, 1e-5f, __LINE__);
    batch_norm_case(SHP(4, 64, 33, 33), 1, 0, 1e-5f, __LINE__);
    pool_case(POOL_MAX, SHP(4, 16, 56, 56), pspec2(3, 3, 2, 2, 1, 1, 1, 1), 0, -1, 1,
              SHP(4, 16, 28, 28), __LINE__);
    pool_case(POOL_AVG, SHP(4, 16, 56, 56), pspec2(3, 3, 2, 2, 1, 1, 1, 1), 1, -1, 1,
              SHP(4, 16, 28, 28), __LINE__);
    reduce_case(RED_SUM, SHP(128, 4096), 1, (const int64_t[]){1}, 0, 0, SHP(128), __LINE__);
    reduce_case(RED_MEAN, SHP(128, 4096), 1, (const int64_t[]){0}, 1, 1, SHP(1, 4096), __LINE__);
    reduce_case(RED_MAX, SHP(64, 65, 66), 2, (const int64_t[]){0, 2}, 0, 0, SHP(65), __LINE__);
    reduce_case(RED_SUM, SHP(300, 1001), 0, NULL, 0, 0, SCALAR, __LINE__);
}

static void test_large_layout_ops_match_reference(void)
{
    transpose_case(F32, SHP(64, 129, 33), (const int64_t[]){2, 0, 1}, 0, SHP(33, 64, 129),
                   __LINE__);
    transpose_case(F32, SHP(8, 64, 35, 37), (const int64_t[]){0, 2, 3, 1}, 1, SHP(8, 35, 37, 64),
                   __LINE__);
    const shp cs[3] = {SHP(64, 1000), SHP(64, 1), SHP(64, 2047)};
    concat_case(F32, cs, 3, 1, 0, 0, SHP(64, 3048), __LINE__);
    slice_case(SHP(513, 1025), 2, (const int64_t[]){-1, 3}, (const int64_t[]){INT64_MIN, 1000},
               NULL, (const int64_t[]){-3, 5}, 0, SHP(171, 200), __LINE__);
    int64_t ind[1000];
    for (int k = 0; k < 1000; k++)
        ind[k] = rng_int(-30000, 29999);
    gather_case(SHP(30000, 64), I64, SHP(20, 50), ind, 0, 0, 0, SHP(20, 50, 64), __LINE__);
    expand_case(SHP(1, 1031), SHP(513, 1), SHP(513, 1031), 1, __LINE__);
    split_case(SHP(64, 3001), 1, 3, (const int64_t[]){1000, 1, 2000}, 0, __LINE__);
}

static void test_high_rank_tensors_up_to_the_rank_limit(void)
{
    binary_one("Add", loom_add, ref_add, SHP(2, 1, 3, 1, 2, 1, 2, 3), SHP(1, 2, 1, 2, 1, 3, 2, 1),
               -1, 1, -1, 1, 0, 0, 0, 1e-6, 1e-6, __LINE__);
    binary_one("Mul", NULL, ref_mul, SHP(3, 1, 2, 1, 2, 1, 2), SHP(2, 1, 2, 2, 1), -1, 1, -1, 1,
               0, 0, 1, 1e-6, 1e-6, __LINE__);
    transpose_case(F32, SHP(2, 3, 1, 2, 3, 2), (const int64_t[]){5, 3, 1, 0, 4, 2}, 0,
                   SHP(2, 2, 3, 2, 3, 1), __LINE__);
    transpose_case(F32, SHP(2, 1, 2, 1, 2, 1, 2, 3), NULL, 1, SHP(3, 2, 1, 2, 1, 2, 1, 2),
                   __LINE__);
    transpose_case(I64, SHP(2, 3, 2, 3, 2, 3, 2, 2), (const int64_t[]){7, 0, 6, 1, 5, 2, 4, 3}, 0,
                   SHP(2, 2, 2, 3, 3, 2, 2, 3), __LINE__);
    reduce_case(RED_SUM, SHP(2, 3, 2, 3, 2, 2), 2, (const int64_t[]){1, 4}, 0, 0,
                SHP(2, 2, 3, 2), __LINE__);
    reduce_case(RED_MAX, SHP(2, 3, 2, 3, 2, 2, 2, 2), 3, (const int64_t[]){0, 3, 7}, 1, 1,
                SHP(1, 3, 2, 1, 2, 2, 2, 1), __LINE__);
    slice_case(SHP(3, 4, 2, 5, 3), 3, (const int64_t[]){-1, 1, 0}, (const int64_t[]){0, 5, 2},
               (const int64_t[]){0, 3, 4}, (const int64_t[]){-2, 2, 1}, 1, SHP(1, 4, 2, 2, 2),
               __LINE__);
    const shp cc[2] = {SHP(2, 1, 3, 2, 2), SHP(2, 1, 3, 1, 2)};
    concat_case(F32, cc, 2, 3, 0, 0, SHP(2, 1, 3, 3, 2), __LINE__);
    squeeze_case(SHP(2, 3), 6, (const int64_t[]){0, 2, 3, 5, 6, 7}, 0, 1,
                 SHP(1, 2, 1, 1, 3, 1, 1, 1), __LINE__);
    softmax_case(SHP(2, 3, 4, 2, 3), 2, 1, -3, 3, __LINE__);
    expand_case(SHP(3, 1, 2), SHP(2, 1, 2, 1, 2, 1, 4, 1), SHP(2, 1, 2, 1, 2, 3, 4, 2), 0,
                __LINE__);
}

/* ===========================================================================================
 * 16-bit floats: the registry accepts float16 and bfloat16 for the float operators. Where a
 * graph is accepted the results must be right (inputs are exactly representable; the
 * reference computes on them in double).
 * =========================================================================================== */

/* Round to nearest even, as IEEE 754 conversion does; NaN stays NaN, overflow gives infinity. */
static uint16_t f32_to_f16_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return sign | 0x7e00;
    if (ax >= 0x477ff000u) /* >= 65520: rounds past the largest half */
        return sign | 0x7c00;
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half, in units of 2^-24 */
        float a;
        memcpy(&a, &ax, sizeof a);
        return sign | (uint16_t)nearbyint((double)a * 16777216.0);
    }
    uint32_t e = (ax >> 23) - 127 + 15, mant = ax & 0x7fffff;
    uint32_t h = (e << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return sign | (uint16_t)h;
}

static uint16_t f32_to_bf16_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x0040);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static const loom_dtype k_lowp[2] = {F16, BF16};

static double lp_eps(loom_dtype dt)
{
    return dt == F16 ? 1.0 / 1024 : 1.0 / 128;
}
static double lp_rtol(loom_dtype dt) { return 3 * lp_eps(dt); }
static double lp_atol(loom_dtype dt) { return dt == F16 ? 1e-4 : 1e-3; }

/* An input (or constant) of DT holding random values in [lo, hi] rounded to DT; *VALS gets the
 * same values as f32 (exactly) for the reference. */
static loom_value lp_operand_signed(tc *c, loom_dtype dt, shp s, float lo, float hi,
                                    int random_sign, float **vals, int as_const)
{
    int64_t n = numel(s);
    float *v = tc_rand(c, s, lo, hi);
    uint16_t *bits = tc_buf(c, (size_t)n * 2);
    for (int64_t k = 0; k < n; k++) {
        if (random_sign && (rng_u64() & 1))
            v[k] = -v[k];
        bits[k] = dt == F16 ? f32_to_f16_bits(v[k]) : f32_to_bf16_bits(v[k]);
        v[k] = (float)elem_load(bits, dt, k);
    }
    *vals = v;
    return as_const ? tc_const_data(c, dt, s, bits) : tc_data(c, 0, dt, s, bits);
}

static loom_value lp_operand(tc *c, loom_dtype dt, shp s, float lo, float hi, float **vals,
                             int as_const)
{
    return lp_operand_signed(c, dt, s, lo, hi, 0, vals, as_const);
}

static void lp_what(char *buf, size_t len, const char *op, loom_dtype dt)
{
    snprintf(buf, len, "%s on %s", op, loom_dtype_name(dt));
}

static void test_lowp_unary_ops_match_reference(void)
{
    const struct {
        const char *op;
        unary_ref ref;
        float lo, hi;
    } u[11] = {{"Relu", ref_relu, -2, 2},   {"Sigmoid", ref_sigmoid, -8, 8},
               {"Tanh", tanh, -4, 4},       {"Erf", erf, -3, 3},
               {"Gelu", ref_gelu, -4, 4},   {"Sqrt", sqrt, 0, 100},
               {"Exp", exp, -5, 5},         {"Log", log, 0.01f, 100},
               {"Neg", ref_neg, -5, 5},     {"Abs", fabs, -5, 5},
               {"Identity", ref_identity, -5, 5}};
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < 11; i++)
            for (int e = 0; e < 2; e++) {
                int line = __LINE__;
                loom_dtype dt = k_lowp[d];
                shp s = e ? SHP(0, 3) : SHP(7, 13);
                tc c;
                tc_init(&c);
                float *x;
                loom_value vx = lp_operand(&c, dt, s, u[i].lo, u[i].hi, &x, 0);
                loom_output(c.g, tc_op(&c, u[i].op, NULL, &vx, 1, NULL, 0), "y");
                char what[64];
                lp_what(what, sizeof what, u[i].op, dt);
                if (tc_run_if_supported(&c, what, line)) {
                    double *r = tc_dbuf(&c, numel(s));
                    for (int64_t k = 0; k < numel(s); k++)
                        r[k] = u[i].ref(x[k]);
                    check_tensor(c.out[0], dt, s, r, lp_atol(dt), lp_rtol(dt), line);
                }
                tc_free(&c);
            }
}

static void test_lowp_binary_ops_broadcast_and_match_reference(void)
{
    const struct {
        const char *op;
        binary_ref ref;
        float alo, ahi, blo, bhi;
        int b_signed;
    } b[7] = {{"Add", ref_add, -2, 2, -2, 2, 0}, {"Sub", ref_sub, -2, 2, -2, 2, 0},
              {"Mul", ref_mul, -2, 2, -2, 2, 0}, {"Div", ref_div, -2, 2, 0.5f, 2, 1},
              {"Min", ref_min, -1, 1, -1, 1, 0}, {"Max", ref_max, -1, 1, -1, 1, 0},
              {"Pow", pow, 0.1f, 3, -2, 2, 0}};
    const int pairs[7] = {0, 1, 3, 4, 5, 9, 11};
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < 7; i++)
            for (int p = 0; p < 7; p++) {
                int line = __LINE__;
                loom_dtype dt = k_lowp[d];
                shp as, bs;
                bcast_pair(pairs[p], &as, &bs);
                shp ys = bcast(as, bs);
                tc c;
                tc_init(&c);
                float *a, *bv;
                loom_value va = lp_operand(&c, dt, as, b[i].alo, b[i].ahi, &a, 0);
                loom_value vb = lp_operand_signed(&c, dt, bs, b[i].blo, b[i].bhi, b[i].b_signed,
                                                  &bv, p == 2);
                loom_output(c.g, tc_op(&c, b[i].op, NULL, (loom_value[]){va, vb}, 2, NULL, 0),
                            "y");
                char what[64];
                lp_what(what, sizeof what, b[i].op, dt);
                if (tc_run_if_supported(&c, what, line)) {
                    int64_t idx[LOOM_MAX_RANK];
                    double *r = tc_dbuf(&c, numel(ys));
                    for (int64_t k = 0; k < numel(ys); k++) {
                        unravel(k, ys, idx);
                        r[k] = b[i].ref(a[bcast_off(ys.rank, idx, as)],
                                        bv[bcast_off(ys.rank, idx, bs)]);
                    }
                    check_tensor(c.out[0], dt, ys, r, lp_atol(dt), lp_rtol(dt), line);
                }
                tc_free(&c);
            }
}

static void test_lowp_matmul_gemm_and_conv_match_reference(void)
{
    for (int d = 0; d < 2; d++) {
        loom_dtype dt = k_lowp[d];
        char what[64];
        for (int m = 0; m < 2; m++) {
            int line = __LINE__;
            shp as = m ? SHP(2, 1, 4, 5) : SHP(7, 13), bs = m ? SHP(3, 5, 6) : SHP(13, 5);
            tc c;
            tc_init(&c);
            float *a, *b;
            loom_value va = lp_operand(&c, dt, as, -1, 1, &a, 0);
            loom_value vb = lp_operand(&c, dt, bs, -1, 1, &b, m);
            loom_output(c.g, loom_matmul(c.g, va, vb), "y");
            lp_what(what, sizeof what, "MatMul", dt);
            if (tc_run_if_supported(&c, what, line)) {
                shp ys;
                double *r = ref_matmul(&c, a, as, b, bs, &ys);
                int64_t K = as.d[as.rank - 1];
                check_tensor(c.out[0], dt, ys, r, 3 * lp_eps(dt) * sqrt((double)K), lp_rtol(dt),
                          line);
            }
            tc_free(&c);
        }
        {
            int line = __LINE__;
            tc c;
            tc_init(&c);
            float *a, *b, *cc;
            loom_value va = lp_operand(&c, dt, SHP(7, 13), -1, 1, &a, 0);
            loom_value vb = lp_operand(&c, dt, SHP(5, 13), -1, 1, &b, 1);
            loom_value vc = lp_operand(&c, dt, SHP(5), -1, 1, &cc, 1);
            loom_output(c.g, loom_gemm(c.g, va, vb, vc, 0.5f, 2.0f, 0, 1), "y");
            lp_what(what, sizeof what, "Gemm", dt);
            if (tc_run_if_supported(&c, what, line)) {
                double *r = ref_gemm(&c, a, b, cc, SHP(5), 7, 13, 5, 0.5, 2.0, 0, 1);
                check_tensor(c.out[0], dt, SHP(7, 5), r, 6 * lp_eps(dt) * sqrt(13.0), lp_rtol(dt),
                          line);
            }
            tc_free(&c);
        }
        {
            int line = __LINE__;
            tc c;
            tc_init(&c);
            float *x, *w, *b;
            shp xs = SHP(1, 3, 7, 9), ws = SHP(4, 3, 3, 3);
            loom_value vx = lp_operand(&c, dt, xs, -1, 1, &x, 0);
            loom_value vw = lp_operand(&c, dt, ws, -1, 1, &w, 1);
            loom_value vb = lp_operand(&c, dt, SHP(4), -1, 1, &b, 1);
            loom_window_params p;
            memset(&p, 0, sizeof p);
            p.n_spatial = 2;
            for (int i = 0; i < 2; i++) {
                p.strides[i] = p.dilations[i] = 1;
                p.pads[i] = p.pads[2 + i] = 1;
            }
            loom_output(c.g, loom_conv(c.g, vx, vw, vb, &p), "y");
            lp_what(what, sizeof what, "Conv", dt);
            if (tc_run_if_supported(&c, what, line)) {
                const int64_t ones[2] = {1, 1}, pads[4] = {1, 1, 1, 1};
                shp ys;
                double *r = ref_conv(&c, x, xs, w, ws, b, win_make(2, ws.d + 2, ones, ones, pads),
                                     &ys);
                check_tensor(c.out[0], dt, ys, r, 3 * lp_eps(dt) * sqrt(27.0), lp_rtol(dt), line);
            }
            tc_free(&c);
        }
    }
}

static void test_lowp_normalisation_pooling_and_reductions_match_reference(void)
{
    for (int d = 0; d < 2; d++) {
        loom_dtype dt = k_lowp[d];
        double rt = lp_rtol(dt), at = lp_atol(dt);
        char what[64];
        for (int ax = 0; ax < 2; ax++) {
            int line = __LINE__;
            shp s = SHP(7, 13);
            tc c;
            tc_init(&c);
            float *x;
            loom_value vx = lp_operand(&c, dt, s, -4, 4, &x, 0);
            loom_output(c.g, loom_softmax(c.g, vx, ax ? -1 : 0), "y");
            lp_what(what, sizeof what, "Softmax", dt);
            if (tc_run_if_supported(&c, what, line))
                check_tensor(c.out[0], dt, s, ref_softmax(&c, x, s, ax ? -1 : 0), at, rt, line);
            tc_free(&c);
        }
        {
            int line = __LINE__;
            shp xs = SHP(4, 16), ps = SHP(16);
            tc c;
            tc_init(&c);
            float *x, *sc, *bi;
            loom_value vx = lp_operand(&c, dt, xs, -2, 2, &x, 0);
            loom_value vs = lp_operand(&c, dt, ps, 0.5f, 1.5f, &sc, 1);
            loom_value vb = lp_operand(&c, dt, ps, -1, 1, &bi, 1);
            loom_output(c.g, loom_layer_norm(c.g, vx, vs, vb, -1, 1e-5f), "y");
            lp_what(what, sizeof what, "LayerNormalization", dt);
            if (tc_run_if_supported(&c, what, line))
                check_tensor(c.out[0], dt, xs, ref_layer_norm(&c, x, xs, sc, bi, -1, 1e-5),
                          10 * at, rt, line);
            tc_free(&c);
        }
        {
            int line = __LINE__;
            shp xs = SHP(2, 3, 4, 5), ps = SHP(3);
            tc c;
            tc_init(&c);
            float *x, *sc, *bi, *mn, *vr;
            loom_value vx = lp_operand(&c, dt, xs, -2, 2, &x, 0);
            loom_value vs = lp_operand(&c, dt, ps, 0.5f, 1.5f, &sc, 1);
            loom_value vb = lp_operand(&c, dt, ps, -1, 1, &bi, 1);
            loom_value vm = lp_operand(&c, dt, ps, -1, 1, &mn, 1);
            loom_value vv = lp_operand(&c, dt, ps, 0.25f, 2, &vr, 1);
            loom_output(c.g, loom_batch_norm(c.g, vx, vs, vb, vm, vv, 1e-5f), "y");
            lp_what(what, sizeof what, "BatchNormalization", dt);
            if (tc_run_if_supported(&c, what, line))
                check_tensor(c.out[0], dt, xs, ref_batch_norm(&c, x, xs, sc, bi, mn, vr, 1e-5),
                          10 * at, rt, line);
            tc_free(&c);
        }
        for (int kind = 0; kind < 3; kind++) {
            int line = __LINE__;
            shp xs = SHP(1, 2, 7, 7);
            tc c;
            tc_init(&c);
            float *x;
            loom_value vx = lp_operand(&c, dt, xs, -1, 1, &x, 0);
            loom_window_params p;
            memset(&p, 0, sizeof p);
            p.n_spatial = 2;
            for (int i = 0; i < 2; i++) {
                p.kernel_shape[i] = 3;
                p.strides[i] = 2;
                p.dilations[i] = 1;
                p.pads[i] = p.pads[2 + i] = 1;
            }
            const char *op = kind == 0 ? "MaxPool" : kind == 1 ? "AveragePool" : "GlobalAveragePool";
            loom_value vy = kind == 0   ? loom_max_pool(c.g, vx, &p)
                            : kind == 1 ? loom_average_pool(c.g, vx, &p)
                                        : loom_global_average_pool(c.g, vx);
            loom_output(c.g, vy, "y");
            lp_what(what, sizeof what, op, dt);
            if (tc_run_if_supported(&c, what, line)) {
                shp ys;
                const int64_t k3[2] = {3, 3}, s2[2] = {2, 2}, ones[2] = {1, 1},
                              pads[4] = {1, 1, 1, 1}, k7[2] = {7, 7};
                win w = kind == 2 ? win_make(2, k7, ones, ones, NULL)
                                  : win_make(2, k3, s2, ones, pads);
                double *r = ref_pool(&c, kind == 0 ? POOL_MAX : POOL_AVG, x, xs, w, &ys);
                check_tensor(c.out[0], dt, ys, r, at, rt, line);
            }
            tc_free(&c);
        }
        for (int kind = 0; kind < 3; kind++) {
            int line = __LINE__;
            static const char *names[3] = {"ReduceSum", "ReduceMean", "ReduceMax"};
            shp xs = SHP(3, 4, 5);
            tc c;
            tc_init(&c);
            float *x;
            loom_value vx = lp_operand(&c, dt, xs, -1, 1, &x, 0);
            loom_value vy = kind == RED_SUM    ? loom_reduce_sum(c.g, vx, 1, (const int64_t[]){1}, 0)
                            : kind == RED_MEAN ? loom_reduce_mean(c.g, vx, 1, (const int64_t[]){1}, 0)
                                               : loom_reduce_max(c.g, vx, 1, (const int64_t[]){1}, 0);
            loom_output(c.g, vy, "y");
            lp_what(what, sizeof what, names[kind], dt);
            if (tc_run_if_supported(&c, what, line)) {
                shp ys;
                double *r = ref_reduce(&c, kind, x, xs, 1, (const int64_t[]){1}, 0, &ys);
                check_tensor(c.out[0], dt, ys, r, 3 * at, rt, line);
            }
            tc_free(&c);
        }
    }
}

static void test_lowp_parameterised_elementwise_ops_match_reference(void)
{
    for (int d = 0; d < 2; d++) {
        loom_dtype dt = k_lowp[d];
        char what[64];
        shp s = SHP(7, 13);
        for (int op = 0; op < 4; op++) {
            int line = __LINE__;
            tc c;
            tc_init(&c);
            float *x;
            loom_value vx = lp_operand(&c, dt, s, -3, 3, &x, 0);
            loom_value vy;
            const char *name;
            if (op == 0) {
                name = "LeakyRelu";
                vy = loom_leaky_relu(c.g, vx, 0.125f);
            } else if (op == 1) {
                name = "Gelu(tanh)";
                vy = loom_gelu(c.g, vx, "tanh");
            } else if (op == 2) {
                name = "Clip";
                vy = loom_clip(c.g, vx, -1.5f, 0.75f);
            } else {
                name = "Clip(constant 16-bit bounds)";
                uint16_t lo = dt == F16 ? f32_to_f16_bits(-0.5f) : f32_to_bf16_bits(-0.5f);
                uint16_t hi = dt == F16 ? f32_to_f16_bits(1.25f) : f32_to_bf16_bits(1.25f);
                loom_value ins[3] = {vx, tc_const_data(&c, dt, SCALAR, &lo), tc_const_data(&c, dt, SCALAR, &hi)};
                vy = tc_op(&c, "Clip", NULL, ins, 3, NULL, 0);
            }
            loom_output(c.g, vy, "y");
            lp_what(what, sizeof what, name, dt);
            if (tc_run_if_supported(&c, what, line)) {
                double *r = tc_dbuf(&c, numel(s));
                for (int64_t k = 0; k < numel(s); k++) {
                    double v = x[k];
                    r[k] = op == 0   ? (v >= 0 ? v : 0.125 * v)
                           : op == 1 ? ref_gelu_tanh(v)
                           : op == 2 ? fmin(fmax(v, -1.5), 0.75)
                                     : fmin(fmax(v, -0.5), 1.25);
                }
                check_tensor(c.out[0], dt, s, r, lp_atol(dt), lp_rtol(dt), line);
            }
            tc_free(&c);
        }
    }
}

/* Layout operators only move elements: 16-bit floats must come out bit-exact. */
static void test_lowp_layout_ops_move_values_exactly(void)
{
    for (int d = 0; d < 2; d++) {
        loom_dtype dt = k_lowp[d];
        char what[64];
        for (int op = 0; op < 9; op++) {
            int line = __LINE__;
            shp xs = SHP(3, 4, 5);
            tc c;
            tc_init(&c);
            float *x, *x2 = NULL;
            loom_value vx = lp_operand(&c, dt, xs, -4, 4, &x, 0), vy = LOOM_NO_VALUE;
            static const char *names[9] = {"Transpose", "Concat",  "Slice",
                                           "Gather",    "Expand",  "Reshape",
                                           "Where",     "Flatten", "Unsqueeze"};
            const int64_t perm[3] = {2, 0, 1}, st[1] = {-1}, en[1] = {INT64_MIN}, axs[1] = {2},
                          sp[1] = {-2}, ind[4] = {2, -1, 0, 0}, shape[2] = {10, 6};
            uint8_t cond[5] = {1, 0, 0, 1, 1};
            switch (op) {
            case 0: vy = loom_transpose(c.g, vx, perm); break;
            case 1: {
                loom_value v2 = lp_operand(&c, dt, SHP(3, 2, 5), -4, 4, &x2, 1);
                vy = loom_concat(c.g, (loom_value[]){vx, v2}, 2, 1);
                break;
            }
            case 2: vy = loom_slice(c.g, vx, 1, st, en, axs, sp); break;
            case 3: {
                loom_value vi = tc_const_data(&c, I64, SHP(2, 2), ind);
                vy = loom_gather(c.g, vx, vi, 1);
                break;
            }
            case 4: vy = loom_expand(c.g, vx, 4, (const int64_t[]){2, 3, 1, 5}); break;
            case 5: vy = loom_reshape(c.g, vx, 2, shape); break;
            case 6: {
                loom_value v2 = lp_operand(&c, dt, SCALAR, -4, 4, &x2, 0);
                vy = loom_where(c.g, tc_const_data(&c, BOOL, SHP(5), cond), vx, v2);
                break;
            }
            case 7: vy = loom_flatten(c.g, vx, 2); break;
            default: vy = loom_unsqueeze(c.g, vx, 1, (const int64_t[]){1}); break;
            }
            loom_output(c.g, vy, "y");
            lp_what(what, sizeof what, names[op], dt);
            if (tc_run_if_supported(&c, what, line)) {
                shp ys;
                double *r = NULL;
                int64_t idx[LOOM_MAX_RANK];
                switch (op) {
                case 0: r = ref_transpose(&c, x, F32, xs, perm, &ys); break;
                case 1: {
                    const void *parts[2] = {x, x2};
                    const shp ss[2] = {xs, SHP(3, 2, 5)};
                    r = ref_concat(&c, parts, F32, ss, 2, 1, &ys);
                    break;
                }
                case 2: r = ref_slice(&c, x, xs, 1, st, en, axs, sp, &ys); break;
                case 3: r = ref_gather(&c, x, xs, ind, SHP(2, 2), 1, &ys); break;
                case 4:
                    ys = SHP(2, 3, 4, 5);
                    r = tc_dbuf(&c, numel(ys));
                    for (int64_t k = 0; k < numel(ys); k++) {
                        unravel(k, ys, idx);
                        r[k] = x[bcast_off(4, idx, xs)];
                    }
                    break;
                case 5: ys = SHP(10, 6); r = copy_as_double(&c, x, 60); break;
                case 6:
                    ys = xs;
                    r = tc_dbuf(&c, 60);
                    for (int64_t k = 0; k < 60; k++)
                        r[k] = cond[k % 5] ? x[k] : x2[0];
                    break;
                case 7: ys = SHP(12, 5); r = copy_as_double(&c, x, 60); break;
                default: ys = SHP(3, 1, 4, 5); r = copy_as_double(&c, x, 60); break;
                }
                check_tensor(c.out[0], dt, ys, r, 0, 0, line);
            }
            tc_free(&c);
        }
    }
}

/* ===========================================================================================
 * More integer coverage: ONNX allows integer tensors for these operators. Where a graph is
 * accepted, results must be exact.
 * =========================================================================================== */

static void test_integer_sub_min_max_neg_abs_clip_where_are_exact(void)
{
    const loom_dtype dts[2] = {I32, I64};
    const char *bin[3] = {"Sub", "Min", "Max"};
    const char *un[4] = {"Neg", "Abs", "Relu", "Clip"};
    for (int d = 0; d < 2; d++) {
        loom_dtype dt = dts[d];
        char what[64];
        for (int o = 0; o < 3; o++) {
            int line = __LINE__;
            shp as = SHP(4, 1, 3), bs = SHP(5, 1), ys = SHP(4, 5, 3);
            int64_t a[12], b[5];
            for (int k = 0; k < 12; k++)
                a[k] = rng_int(-1000, 1000) + (dt == I64 ? ((int64_t)1 << 40) * (k % 3 - 1) : 0);
            for (int k = 0; k < 5; k++)
                b[k] = rng_int(-1000, 1000);
            tc c;
            tc_init(&c);
            loom_value va = tc_data(&c, 0, dt, as, tc_ints(&c, dt, as, a));
            loom_value vb = tc_data(&c, 0, dt, bs, tc_ints(&c, dt, bs, b));
            loom_output(c.g, tc_op(&c, bin[o], NULL, (loom_value[]){va, vb}, 2, NULL, 0), "y");
            lp_what(what, sizeof what, bin[o], dt);
            if (tc_run_if_supported(&c, what, line)) {
                int64_t idx[3];
                double *r = tc_dbuf(&c, numel(ys));
                for (int64_t k = 0; k < numel(ys); k++) {
                    unravel(k, ys, idx);
                    int64_t x = a[bcast_off(3, idx, as)], z = b[bcast_off(3, idx, bs)];
                    r[k] = (double)(o == 0 ? x - z : o == 1 ? (x < z ? x : z) : (x > z ? x : z));
                }
                CHECK_EXACT(&c, 0, dt, ys, r);
            }
            tc_free(&c);
        }
        for (int o = 0; o < 4; o++) {
            int line = __LINE__;
            shp s = SHP(13);
            int64_t a[13];
            for (int k = 0; k < 13; k++)
                a[k] = rng_int(-100, 100);
            tc c;
            tc_init(&c);
            loom_value va = tc_data(&c, 0, dt, s, tc_ints(&c, dt, s, a));
            loom_value vy;
            if (o == 3) {
                int64_t lo = -20, hi = 30;
                loom_value ins[3] = {va, tc_const_data(&c, dt, SCALAR, tc_ints(&c, dt, SCALAR, &lo)),
                                     tc_const_data(&c, dt, SCALAR, tc_ints(&c, dt, SCALAR, &hi))};
                vy = tc_op(&c, "Clip", NULL, ins, 3, NULL, 0);
            } else {
                vy = tc_op(&c, un[o], NULL, &va, 1, NULL, 0);
            }
            loom_output(c.g, vy, "y");
            lp_what(what, sizeof what, un[o], dt);
            if (tc_run_if_supported(&c, what, line)) {
                double r[13];
                for (int k = 0; k < 13; k++) {
                    int64_t v = a[k];
                    r[k] = (double)(o == 0   ? -v
                                    : o == 1 ? (v < 0 ? -v : v)
                                    : o == 2 ? (v > 0 ? v : 0)
                                             : (v < -20 ? -20 : v > 30 ? 30 : v));
                }
                CHECK_EXACT(&c, 0, dt, s, r);
            }
            tc_free(&c);
        }
        {
            int line = __LINE__;
            tc c;
            tc_init(&c);
            int64_t cv[3] = {1, 0, 1}, av[6] = {1, 2, 3, 4, 5, 6}, bv = -9;
            loom_value vc = tc_data(&c, 0, BOOL, SHP(3), tc_ints(&c, BOOL, SHP(3), cv));
            loom_value va = tc_data(&c, 0, dt, SHP(2, 3), tc_ints(&c, dt, SHP(2, 3), av));
            loom_value vb = tc_data(&c, 0, dt, SCALAR, tc_ints(&c, dt, SCALAR, &bv));
            loom_output(c.g, loom_where(c.g, vc, va, vb), "y");
            lp_what(what, sizeof what, "Where", dt);
            if (tc_run_if_supported(&c, what, line)) {
                double r[6] = {1, -9, 3, 4, -9, 6};
                CHECK_EXACT(&c, 0, dt, SHP(2, 3), r);
            }
            tc_free(&c);
        }
    }
}

static void test_integer_matmul_and_reductions_are_exact(void)
{
    const loom_dtype dts[2] = {I32, I64};
    for (int d = 0; d < 2; d++) {
        loom_dtype dt = dts[d];
        char what[64];
        /* MatMul, 2-D and broadcast batch */
        for (int m = 0; m < 3; m++) {
            int line = __LINE__;
            shp as = m == 0 ? SHP(7, 13) : m == 1 ? SHP(2, 1, 4, 5) : SHP(5),
                bs = m == 0 ? SHP(13, 5) : m == 1 ? SHP(3, 5, 6) : SHP(5, 3);
            int64_t na = numel(as), nb = numel(bs);
            tc c;
            tc_init(&c);
            int64_t *a = tc_buf(&c, sizeof(int64_t) * (size_t)na),
                    *b = tc_buf(&c, sizeof(int64_t) * (size_t)nb);
            float *af = tc_buf(&c, sizeof(float) * (size_t)na),
                  *bf = tc_buf(&c, sizeof(float) * (size_t)nb);
            for (int64_t k = 0; k < na; k++)
                af[k] = (float)(a[k] = rng_int(-50, 50));
            for (int64_t k = 0; k < nb; k++)
                bf[k] = (float)(b[k] = rng_int(-50, 50));
            loom_value va = tc_data(&c, 0, dt, as, tc_ints(&c, dt, as, a));
            loom_value vb = tc_data(&c, 0, dt, bs, tc_ints(&c, dt, bs, b));
            loom_output(c.g, loom_matmul(c.g, va, vb), "y");
            lp_what(what, sizeof what, "MatMul", dt);
            if (tc_run_if_supported(&c, what, line)) {
                shp ys;
                double *r = ref_matmul(&c, af, as, bf, bs, &ys); /* small ints: exact */
                CHECK_EXACT(&c, 0, dt, ys, r);
            }
            tc_free(&c);
        }
        /* ReduceSum / ReduceMax / ReduceMean */
        for (int kind = 0; kind < 3; kind++) {
            static const char *names[3] = {"ReduceSum", "ReduceMean", "ReduceMax"};
            for (int ax = 0; ax < 3; ax++) {
                int line = __LINE__;
                shp xs = SHP(3, 4, 5);
                tc c;
                tc_init(&c);
                int64_t v[60];
                float *xf = tc_buf(&c, sizeof(float) * 60);
                for (int k = 0; k < 60; k++)
                    xf[k] = (float)(v[k] = rng_int(-1000, 1000) * (kind == RED_MEAN ? 60 : 1));
                loom_value vx = tc_data(&c, 0, dt, xs, tc_ints(&c, dt, xs, v));
                const int64_t axes1[1] = {1}, axes2[2] = {0, 2};
                size_t n = ax == 0 ? 1 : ax == 1 ? 2 : 0;
                const int64_t *axes = ax == 0 ? axes1 : ax == 1 ? axes2 : NULL;
                loom_value vy = kind == RED_SUM    ? loom_reduce_sum(c.g, vx, n, axes, ax == 1)
                                : kind == RED_MEAN ? loom_reduce_mean(c.g, vx, n, axes, ax == 1)
                                                   : loom_reduce_max(c.g, vx, n, axes, ax == 1);
                loom_output(c.g, vy, "y");
                lp_what(what, sizeof what, names[kind], dt);
                if (tc_run_if_supported(&c, what, line)) {
                    shp ys;
                    double *r = ref_reduce(&c, kind, xf, xs, n, axes, ax == 1, &ys);
                    if (kind == RED_MEAN) /* integer mean: truncated like integer Div */
                        for (int64_t k = 0; k < numel(ys); k++)
                            r[k] = trunc(r[k]);
                    CHECK_EXACT(&c, 0, dt, ys, r);
                }
                tc_free(&c);
            }
        }
    }
}

/* Layout operators on integer and bool tensors (shape computations in ONNX models run on
 * int64). Values stay below 2^24 so the f32 references carry them exactly. */
static void test_integer_and_bool_layout_ops_move_values_exactly(void)
{
    const loom_dtype dts[4] = {I64, I32, U8, BOOL};
    for (int d = 0; d < 4; d++) {
        loom_dtype dt = dts[d];
        char what[64];
        shp xs = SHP(3, 4, 5);
        for (int op = 0; op < 8; op++) {
            int line = __LINE__;
            static const char *names[8] = {"Gather", "Slice",   "Expand",    "Reshape",
                                           "Split",  "Squeeze", "Unsqueeze", "Identity"};
            tc c;
            tc_init(&c);
            int64_t vals[60];
            float *x = tc_buf(&c, sizeof(float) * 60);
            for (int k = 0; k < 60; k++) {
                vals[k] = dt == BOOL ? (k * 7) % 3 == 0 : dt == U8 ? (k * 37) % 256 : k * 7919 - 200000;
                x[k] = (float)vals[k];
            }
            loom_value vx = tc_data(&c, 0, dt, xs, tc_ints(&c, dt, xs, vals));
            const int64_t ind[3] = {-1, 0, 2}, st[2] = {2, 1}, en[2] = {-100, 5},
                          ax[2] = {0, 2}, sp[2] = {-1, 2};
            loom_value outs[2] = {LOOM_NO_VALUE, LOOM_NO_VALUE};
            size_t n_out = 1;
            switch (op) {
            case 0: outs[0] = loom_gather(c.g, vx, tc_const_data(&c, I64, SHP(3), ind), 2); break;
            case 1: outs[0] = loom_slice(c.g, vx, 2, st, en, ax, sp); break;
            case 2: outs[0] = loom_expand(c.g, vx, 4, (const int64_t[]){2, 1, 1, 1}); break;
            case 3: outs[0] = loom_reshape(c.g, vx, 2, (const int64_t[]){-1, 4}); break;
            case 4:
                loom_split(c.g, vx, 1, 2, (const int64_t[]){1, 3}, outs);
                n_out = 2;
                break;
            case 5: {
                loom_value u = loom_reshape(c.g, vx, 4, (const int64_t[]){3, 1, 4, 5});
                outs[0] = loom_squeeze(c.g, u, 1, (const int64_t[]){1});
                break;
            }
            case 6: outs[0] = loom_unsqueeze(c.g, vx, 1, (const int64_t[]){-1}); break;
            default: outs[0] = loom_identity(c.g, vx); break;
            }
            for (size_t k = 0; k < n_out; k++)
                loom_output(c.g, outs[k], k ? "y1" : "y0");
            lp_what(what, sizeof what, names[op], dt);
            if (tc_run_if_supported(&c, what, line)) {
                shp ys;
                double *r;
                switch (op) {
                case 0:
                    r = ref_gather(&c, x, xs, ind, SHP(3), 2, &ys);
                    CHECK_EXACT(&c, 0, dt, ys, r);
                    break;
                case 1:
                    r = ref_slice(&c, x, xs, 2, st, en, ax, sp, &ys);
                    CHECK_EXACT(&c, 0, dt, ys, r);
                    break;
                case 2: {
                    ys = SHP(2, 3, 4, 5);
                    r = tc_dbuf(&c, 120);
                    for (int k = 0; k < 120; k++)
                        r[k] = x[k % 60];
                    CHECK_EXACT(&c, 0, dt, ys, r);
                    break;
                }
                case 3: CHECK_EXACT(&c, 0, dt, SHP(15, 4), copy_as_double(&c, x, 60)); break;
                case 4:
                    r = ref_narrow(&c, x, xs, 1, 0, 1, &ys);
                    CHECK_EXACT(&c, 0, dt, ys, r);
                    r = ref_narrow(&c, x, xs, 1, 1, 3, &ys);
                    CHECK_EXACT(&c, 1, dt, ys, r);
                    break;
                case 5: CHECK_EXACT(&c, 0, dt, SHP(3, 4, 5), copy_as_double(&c, x, 60)); break;
                case 6: CHECK_EXACT(&c, 0, dt, SHP(3, 4, 5, 1), copy_as_double(&c, x, 60)); break;
                default: CHECK_EXACT(&c, 0, dt, xs, copy_as_double(&c, x, 60)); break;
                }
            }
            tc_free(&c);
        }
    }
}

/* ===========================================================================================
 * Cast, exhaustively and at random, against the conversions written above
 * =========================================================================================== */

static void test_cast_every_f16_and_bf16_bit_pattern_to_f32(void)
{
    for (int d = 0; d < 2; d++) {
        int line = __LINE__;
        loom_dtype dt = k_lowp[d];
        tc c;
        tc_init(&c);
        shp s = SHP(65536);
        uint16_t *bits = tc_buf(&c, 65536 * 2);
        for (int k = 0; k < 65536; k++)
            bits[k] = (uint16_t)k;
        loom_value vx = tc_data(&c, 0, dt, s, bits);
        loom_output(c.g, loom_cast(c.g, vx, F32), "y");
        RUN_OK(&c);
        double *r = tc_dbuf(&c, 65536);
        for (int k = 0; k < 65536; k++)
            r[k] = elem_load(bits, dt, k); /* NaN patterns: any NaN */
        CHECK_F32(&c, 0, s, r, 0, 0);
        tc_free(&c);
    }
}

static void test_cast_random_f32_to_f16_and_bf16_rounds_to_nearest_even(void)
{
    for (int d = 0; d < 2; d++) {
        int line = __LINE__;
        loom_dtype dt = k_lowp[d];
        const int64_t n = 100000;
        tc c;
        tc_init(&c);
        float *x = tc_buf(&c, (size_t)n * sizeof(float));
        uint16_t *want = tc_buf(&c, (size_t)n * 2);
        for (int64_t k = 0; k < n; k++) {
            /* every exponent the target can reach and a little beyond, random mantissa bits */
            int e = dt == F16 ? (int)rng_int(-28, 17) : (int)rng_int(-140, 128);
            uint32_t bits = (uint32_t)(rng_u64() >> 41); /* 23 random bits */
            float v = ldexpf(1.0f + (float)bits / 8388608.0f, e);
            if (rng_u64() & 1)
                v = -v;
            if (k % 1000 == 7) /* exact ties */
                v = dt == F16 ? ldexpf(1.0f + (2 * (float)rng_int(0, 511) + 1) / 2048.0f, (int)rng_int(-14, 15))
                              : ldexpf(1.0f + (2 * (float)rng_int(0, 63) + 1) / 256.0f, (int)rng_int(-126, 127));
            x[k] = v;
            want[k] = dt == F16 ? f32_to_f16_bits(v) : f32_to_bf16_bits(v);
        }
        loom_value vx = tc_data(&c, 0, F32, SHP(n), x);
        loom_output(c.g, loom_cast(c.g, vx, dt), "y");
        RUN_OK(&c);
        if (check_shape(c.out[0], dt, SHP(n), line)) {
            const uint16_t *got = loom_tensor_data(c.out[0]);
            int64_t bad = 0;
            for (int64_t k = 0; k < n; k++)
                if (got[k] != want[k]) {
                    if (bad < 6)
                    {
                        uint32_t xb;
                        memcpy(&xb, &x[k], sizeof xb);
                        fprintf(stderr, "\n    line %d: Cast float->%s of %.9g (0x%08x): got 0x%04x, "
                                        "expected 0x%04x",
                                line, loom_dtype_name(dt), x[k], xb, got[k], want[k]);
                    }
                    bad++;
                }
            if (bad)
                fprintf(stderr, "\n    line %d: %lld of %lld casts differ\n", line, (long long)bad,
                        (long long)n);
            CU_assertImplementation(bad == 0, (unsigned)line, "casts round to nearest even",
                                    __FILE__, "", CU_FALSE);
        }
        tc_free(&c);
    }
}

static void test_cast_nan_stays_nan_and_overflow_becomes_infinity(void)
{
    const uint32_t nan_bits[4] = {0x7fc00000u, 0x7f800001u, 0xffc00000u, 0x7fa00000u};
    float in[6];
    for (int k = 0; k < 4; k++)
        memcpy(&in[k], &nan_bits[k], sizeof(float));
    in[4] = 3.4028234663852886e38f; /* FLT_MAX: beyond bfloat16's largest, rounds to inf */
    in[5] = -3.4028234663852886e38f;
    for (int d = 0; d < 2; d++) {
        int line = __LINE__;
        loom_dtype dt = k_lowp[d];
        tc c;
        tc_init(&c);
        float *x = tc_buf(&c, sizeof in);
        memcpy(x, in, sizeof in);
        loom_value vx = tc_data(&c, 0, F32, SHP(6), x);
        loom_output(c.g, loom_cast(c.g, vx, dt), "y");
        RUN_OK(&c);
        double r[6] = {NAN, NAN, NAN, NAN, INFINITY, -INFINITY};
        check_tensor(c.out[0], dt, SHP(6), r, 0, 0, line);
        tc_free(&c);
    }
}

static void test_cast_f16_subnormals_round_to_nearest_even(void)
{
    const float in[6] = {
        2.98023223876953125e-08f,  /* 2^-25: tie between 0 and the smallest subnormal -> 0 */
        8.94069671630859375e-08f,  /* 1.5 * 2^-24: tie -> 2 * 2^-24 */
        1.490116119384765625e-08f, /* 2^-26 -> 0 */
        6.100535392761230469e-05f, /* 1023.5 * 2^-24: tie -> even 1024 * 2^-24 = 2^-14 */
        -5.9604644775390625e-08f,  /* -2^-24 */
        4.470348358154296875e-08f, /* 0.75 * 2^-24 -> 2^-24 */
    };
    const uint16_t want[6] = {0x0000, 0x0002, 0x0000, 0x0400, 0x8001, 0x0001};
    cast_case(F32, F16, 6, in, want, 0, __LINE__);
}

static void test_cast_between_f16_and_bf16(void)
{
    const uint16_t h[4] = {0x3C00, 0xC000, 0x3555, 0x7C00}; /* 1, -2, 0.333251953125, inf */
    const uint16_t b[4] = {0x3F80, 0xC000, 0x3EAB, 0x7F80}; /* 0.333251953125 rounds to 0x3EAB */
    for (int dir = 0; dir < 2; dir++) {
        int line = __LINE__;
        tc c;
        tc_init(&c);
        loom_dtype from = dir ? BF16 : F16, to = dir ? F16 : BF16;
        uint16_t *x = tc_buf(&c, 8);
        memcpy(x, dir ? b : h, 8);
        loom_value vx = tc_data(&c, 0, from, SHP(4), x);
        loom_output(c.g, loom_cast(c.g, vx, to), "y");
        char what[64];
        snprintf(what, sizeof what, "Cast %s->%s", loom_dtype_name(from), loom_dtype_name(to));
        if (tc_run_if_supported(&c, what, line)) {
            /* bf16 -> f16: 0x3EAB is 0.333984375, exactly 0x3558 in half */
            const uint16_t *want = dir ? (const uint16_t[]){0x3C00, 0xC000, 0x3558, 0x7C00} : b;
            const uint16_t *got = loom_tensor_data(c.out[0]);
            int bad = memcmp(got, want, 8) != 0;
            if (bad)
                fprintf(stderr, "\n    line %d: %s: got %04x %04x %04x %04x\n", line, what, got[0],
                        got[1], got[2], got[3]);
            CU_assertImplementation(!bad, (unsigned)line, "16-bit casts exact", __FILE__, "",
                                    CU_FALSE);
        }
        tc_free(&c);
    }
}

/* ===========================================================================================
 * Kernels inside bigger graphs: re-runs, shared operands, values read by several nodes
 * =========================================================================================== */

/* Run C's plan again after the caller changed the wrapped input data. */
static int tc_rerun_ok(tc *c, int line)
{
    loom_status st = loom_plan_run(c->plan, (const loom_tensor *const *)c->in, c->n_in, c->out,
                                   c->n_out, NULL);
    if (st != LOOM_OK)
        fprintf(stderr, "\n    line %d: second run failed: %s: %s\n", line, loom_status_name(st),
                loom_last_error());
    CU_assertImplementation(st == LOOM_OK, (unsigned)line, "second run succeeds", __FILE__, "",
                            CU_FALSE);
    return st == LOOM_OK;
}

static void refill(float *p, shp s, float lo, float hi)
{
    for (int64_t k = 0; k < numel(s); k++)
        p[k] = rng_f32(lo, hi);
}

static void test_weights_given_as_inputs_are_read_again_on_every_run(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    shp xs = SHP(2, 3, 7, 9), ws = SHP(4, 3, 3, 3), as = SHP(7, 13), bs = SHP(13, 5), cs = SHP(5),
        ls = SHP(13);
    float *x, *w, *b, *a, *mb, *gc, *sc, *lo;
    loom_value vx = tc_rand_input(&c, xs, -1, 1, &x);
    loom_value vw = tc_rand_input(&c, ws, -1, 1, &w);
    loom_value vb = tc_rand_input(&c, SHP(4), -1, 1, &b);
    loom_value va = tc_rand_input(&c, as, -1, 1, &a);
    loom_value vmb = tc_rand_input(&c, bs, -1, 1, &mb);
    loom_value vgc = tc_rand_input(&c, cs, -1, 1, &gc);
    loom_value vsc = tc_rand_input(&c, ls, 0.5f, 1.5f, &sc);
    loom_value vlo = tc_rand_input(&c, SCALAR, -0.5f, 0.0f, &lo);
    loom_window_params p;
    memset(&p, 0, sizeof p);
    p.n_spatial = 2;
    for (int i = 0; i < 2; i++) {
        p.strides[i] = p.dilations[i] = 1;
        p.pads[i] = p.pads[2 + i] = 1;
    }
    loom_output(c.g, loom_conv(c.g, vx, vw, vb, &p), "conv");
    loom_output(c.g, loom_matmul(c.g, va, vmb), "matmul");
    loom_output(c.g, loom_gemm(c.g, va, vmb, vgc, 1.0f, 1.0f, 0, 0), "gemm");
    loom_output(c.g, loom_layer_norm(c.g, va, vsc, LOOM_NO_VALUE, -1, 1e-5f), "ln");
    float hi = 0.5f;
    loom_output(c.g, tc_op(&c, "Clip", NULL, (loom_value[]){va, vlo, tc_const_data(&c, F32, SCALAR, &hi)}, 3, NULL, 0),
                "clip");
    RUN_OK(&c);
    for (int run = 0; run < 2; run++) {
        if (run) {
            refill(w, ws, -1, 1);
            refill(b, SHP(4), -1, 1);
            refill(mb, bs, -1, 1);
            refill(gc, cs, -1, 1);
            refill(sc, ls, 0.5f, 1.5f);
            *lo = -0.1f;
            if (!tc_rerun_ok(&c, line))
                break;
        }
        const int64_t ones[2] = {1, 1}, pads[4] = {1, 1, 1, 1};
        shp ys;
        double *r = ref_conv(&c, x, xs, w, ws, b, win_make(2, ws.d + 2, ones, ones, pads), &ys);
        CHECK_F32(&c, 0, ys, r, k_tol(27), 1e-4);
        r = ref_matmul(&c, a, as, mb, bs, &ys);
        CHECK_F32(&c, 1, ys, r, k_tol(13), 1e-4);
        r = ref_gemm(&c, a, mb, gc, cs, 7, 13, 5, 1, 1, 0, 0);
        CHECK_F32(&c, 2, SHP(7, 5), r, k_tol(13), 1e-4);
        CHECK_F32(&c, 3, as, ref_layer_norm(&c, a, as, sc, NULL, -1, 1e-5), 1e-4, 1e-4);
        r = tc_dbuf(&c, numel(as));
        clip_ref(a, numel(as), *lo, hi, r);
        CHECK_F32(&c, 4, as, r, 0, 0);
    }
    tc_free(&c);
}

static void test_same_value_feeds_both_operands(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    shp s = SHP(9, 9);
    float *x;
    loom_value vx = tc_rand_input(&c, s, -1, 1, &x);
    loom_output(c.g, loom_add(c.g, vx, vx), "add");
    loom_output(c.g, loom_mul(c.g, vx, vx), "mul");
    loom_output(c.g, loom_matmul(c.g, vx, vx), "matmul");
    loom_output(c.g, loom_concat(c.g, (loom_value[]){vx, vx}, 2, 1), "concat");
    loom_output(c.g, loom_gemm(c.g, vx, vx, vx, 0.5f, 2.0f, 1, 0), "gemm");
    RUN_OK(&c);
    double *r = tc_dbuf(&c, 81);
    for (int k = 0; k < 81; k++)
        r[k] = 2.0 * x[k];
    CHECK_F32(&c, 0, s, r, 1e-6, 1e-6);
    r = tc_dbuf(&c, 81);
    for (int k = 0; k < 81; k++)
        r[k] = (double)x[k] * x[k];
    CHECK_F32(&c, 1, s, r, 1e-6, 1e-6);
    shp ys;
    CHECK_F32(&c, 2, s, ref_matmul(&c, x, s, x, s, &ys), k_tol(9), 1e-4);
    const void *parts[2] = {x, x};
    const shp ss[2] = {s, s};
    CHECK_F32(&c, 3, SHP(9, 18), ref_concat(&c, parts, F32, ss, 2, 1, &ys), 0, 0);
    CHECK_F32(&c, 4, s, ref_gemm(&c, x, x, x, s, 9, 9, 9, 0.5, 2.0, 1, 0), k_tol(9), 1e-4);
    tc_free(&c);
}

/* One intermediate read by several nodes, through reshapes and transposes: a kernel that
 * wrote into its input, or a view that was overwritten, shows up here. */
static void test_values_read_by_several_nodes_are_not_overwritten(void)
{
    int line = __LINE__;
    tc c;
    tc_init(&c);
    shp s = SHP(6, 10);
    float *x;
    loom_value vx = tc_rand_input(&c, s, -2, 2, &x);
    loom_value a = loom_neg(c.g, vx);
    loom_value b = loom_relu(c.g, a);
    loom_value e = loom_exp(c.g, a);
    loom_value d = loom_add(c.g, b, e);
    loom_value r1 = loom_reshape(c.g, a, 1, (const int64_t[]){-1});
    loom_value sg = loom_sigmoid(c.g, r1);
    loom_value r2 = loom_reshape(c.g, sg, 2, (const int64_t[]){6, 10});
    loom_value t = loom_transpose(c.g, a, NULL);
    loom_value tt = loom_transpose(c.g, loom_tanh(c.g, t), NULL);
    loom_value sum = loom_add(c.g, loom_add(c.g, d, r2), tt);
    loom_output(c.g, loom_mul(c.g, sum, a), "y");
    loom_output(c.g, a, "a");
    RUN_OK(&c);
    double *r = tc_dbuf(&c, 60), *ra = tc_dbuf(&c, 60);
    for (int k = 0; k < 60; k++) {
        double av = -(double)x[k];
        ra[k] = av;
        r[k] = (ref_relu(av) + exp(av) + ref_sigmoid(av) + tanh(av)) * av;
    }
    CHECK_F32(&c, 0, s, r, 1e-5, 1e-4);
    CHECK_F32(&c, 1, s, ra, 0, 0);
    tc_free(&c);
}

/* ===========================================================================================
 * Registration
 * =========================================================================================== */

static int suite_init(void)
{
    return loom_runtime_create(NULL, &test_rt) == LOOM_OK ? 0 : 1;
}

static int suite_clean(void)
{
    loom_runtime_destroy(test_rt);
    test_rt = NULL;
    return 0;
}

#define T(fn) {#fn, fn}

static const test_entry elementwise_tests[] = {
    T(test_relu_zeroes_negatives_and_keeps_positives),
    T(test_leaky_relu_scales_negatives_by_alpha),
    T(test_sigmoid_matches_logistic_function),
    T(test_tanh_matches_reference),
    T(test_erf_matches_reference),
    T(test_gelu_exact_matches_erf_formula),
    T(test_gelu_tanh_approximation_matches_formula),
    T(test_sqrt_matches_reference_on_nonnegative_inputs),
    T(test_exp_matches_reference),
    T(test_log_matches_reference_on_positive_inputs),
    T(test_neg_flips_sign),
    T(test_abs_drops_sign),
    T(test_identity_copies_values_unchanged),
    T(test_sqrt_of_negative_is_nan_and_log_of_zero_is_minus_infinity),
    T(test_exp_saturates_to_infinity_and_zero),
    T(test_clip_builder_clamps_to_bounds_and_open_sides),
    T(test_clip_bounds_from_constant_inputs_and_absent_max),
    T(test_clip_reads_bounds_given_as_runtime_inputs),
    T(test_add_broadcasts_scalar_row_column_both_sides_and_rank_mismatch),
    T(test_sub_broadcasts_scalar_row_column_both_sides_and_rank_mismatch),
    T(test_mul_broadcasts_scalar_row_column_both_sides_and_rank_mismatch),
    T(test_div_broadcasts_scalar_row_column_both_sides_and_rank_mismatch),
    T(test_pow_positive_base_real_exponent_broadcasts),
    T(test_pow_negative_base_with_integral_exponents),
    T(test_min_broadcasts_elementwise),
    T(test_max_broadcasts_elementwise),
    T(test_min_max_accept_three_variadic_inputs),
    T(test_div_f32_by_zero_gives_ieee_infinities_and_nan),
    T(test_binary_constant_operand_on_either_side),
    T(test_add_mul_int32_int64_are_exact_with_broadcasting),
    T(test_div_integer_truncates_toward_zero),
    T(test_div_integer_by_zero_reports_error_not_crash),
    T(test_where_selects_by_condition_with_broadcasting),
    T(test_where_selects_int64_values),
    T(test_unary_ops_stay_finite_and_right_for_huge_and_infinite_inputs),
    T(test_gelu_tanh_stays_finite_for_huge_inputs),
    T(test_exp_log_sqrt_at_range_limits),
    T(test_pow_special_cases_follow_ieee),
    T(test_clip_with_min_above_max_gives_max_everywhere),
    T(test_div_integer_overflow_does_not_crash),
    T(test_integer_sub_min_max_neg_abs_clip_where_are_exact),
    T(test_integer_matmul_and_reductions_are_exact),
    T(test_large_elementwise_tensors_match_reference),
    T(test_high_rank_tensors_up_to_the_rank_limit),
    {NULL, NULL},
};

static const test_entry linalg_tests[] = {
    T(test_matmul_2d_odd_sizes_match_naive_product),
    T(test_matmul_batched_and_broadcast_batch),
    T(test_matmul_1d_operands_drop_the_promoted_dim),
    T(test_matmul_empty_dims_give_empty_or_zero_output),
    T(test_gemm_transpose_flags_with_alpha_beta),
    T(test_gemm_c_broadcasts_as_row_column_and_scalar),
    T(test_small_m_gemm_and_matmul_match_naive),
    T(test_gemm_without_c_and_with_onnx_default_attributes),
    T(test_gemm_empty_m_and_zero_k),
    T(test_conv2d_pads_strides_and_bias),
    T(test_conv2d_dilation_asymmetric_pads_without_bias),
    T(test_conv2d_groups_and_depthwise),
    T(test_conv2d_1x1_is_a_channel_matmul),
    T(test_conv1d_strides_dilation_pads),
    T(test_conv_auto_pad_same_upper_and_same_lower),
    T(test_conv_weights_as_runtime_inputs),
    T(test_conv_empty_batch_gives_empty_output),
    T(test_conv_groups_with_strides_pads_and_kernel_as_large_as_input),
    T(test_large_matmul_gemm_and_conv_match_reference),
    {NULL, NULL},
};

static const test_entry nn_tests[] = {
    T(test_max_pool_2d_strides_pads_dilation),
    T(test_max_pool_padding_never_wins_over_negative_inputs),
    T(test_max_pool_ceil_mode_keeps_partial_last_window),
    T(test_max_pool_1d),
    T(test_average_pool_excludes_padding_by_default),
    T(test_average_pool_count_include_pad_divides_by_kernel_size),
    T(test_average_pool_ceil_mode_averages_partial_window),
    T(test_average_pool_1d_asymmetric_pads),
    T(test_global_average_pool_2d_and_1d),
    T(test_softmax_every_axis_sums_to_one_and_matches_reference),
    T(test_softmax_default_axis_is_last),
    T(test_softmax_large_inputs_do_not_overflow),
    T(test_softmax_empty_tensor_gives_empty_output),
    T(test_layer_norm_last_axis_with_and_without_bias),
    T(test_layer_norm_earlier_axis_normalizes_the_trailing_block),
    T(test_layer_norm_default_epsilon_and_axis),
    T(test_batch_norm_applies_per_channel_statistics),
    T(test_softmax_gives_zero_weight_to_minus_infinity),
    T(test_layer_norm_of_constant_rows_gives_bias),
    T(test_layer_norm_is_accurate_for_large_mean_and_small_variance),
    T(test_large_normalisation_pooling_and_reductions_match_reference),
    {NULL, NULL},
};

static const test_entry layout_tests[] = {
    T(test_reshape_zero_copies_dim_and_minus_one_infers),
    T(test_reshape_empty_tensor),
    T(test_transpose_default_reverses_dims),
    T(test_transpose_rank3_and_rank4_permutations),
    T(test_transpose_int64_and_empty),
    T(test_flatten_splits_dims_at_axis),
    T(test_concat_along_each_axis_with_empty_and_constant_inputs),
    T(test_concat_integer_tensors),
    T(test_split_equal_parts_and_explicit_sizes),
    T(test_split_num_outputs_uneven_last_chunk_is_smaller),
    T(test_slice_negative_starts_and_clamped_ends),
    T(test_slice_positive_and_negative_steps),
    T(test_slice_multi_axis_rank4_and_empty_result),
    T(test_slice_accepts_int32_index_inputs),
    T(test_gather_axis0_with_negative_int64_and_int32_indices),
    T(test_gather_axis1_with_2d_indices),
    T(test_gather_scalar_index_drops_axis_and_empty_indices_give_empty_output),
    T(test_gather_out_of_range_index_is_reported_with_node_name),
    T(test_squeeze_explicit_negative_and_all_unit_axes),
    T(test_unsqueeze_axes_refer_to_output_rank),
    T(test_expand_broadcasts_in_both_directions),
    T(test_gather_out_of_range_int32_index_is_reported),
    T(test_empty_batches_through_pooling_gather_and_flatten_of_rank1),
    T(test_integer_and_bool_layout_ops_move_values_exactly),
    T(test_large_layout_ops_match_reference),
    {NULL, NULL},
};

static const test_entry reduce_tests[] = {
    T(test_reduce_sum_axis_sets_and_keepdims),
    T(test_reduce_mean_axis_sets_and_keepdims),
    T(test_reduce_max_axis_sets_and_keepdims),
    T(test_reduce_sum_over_an_empty_axis_is_zero),
    T(test_reduce_noop_with_empty_axes_is_identity_and_default_keepdims_is_one),
    {NULL, NULL},
};

static const test_entry cast_tests[] = {
    T(test_cast_f32_to_f16_exact_values),
    T(test_cast_f32_to_f16_rounds_to_nearest_even_and_overflows_to_infinity),
    T(test_cast_f16_to_f32_including_subnormals),
    T(test_cast_f32_to_bf16_exact_and_round_to_nearest_even),
    T(test_cast_bf16_to_f32),
    T(test_cast_f32_to_and_from_integer_types_exact_values),
    T(test_cast_f32_to_int_truncates_toward_zero),
    T(test_cast_bool_is_nonzero_and_converts_back_to_zero_or_one),
    T(test_cast_between_integer_widths),
    T(test_cast_to_same_type_and_empty_tensor),
    T(test_cast_every_f16_and_bf16_bit_pattern_to_f32),
    T(test_cast_random_f32_to_f16_and_bf16_rounds_to_nearest_even),
    T(test_cast_nan_stays_nan_and_overflow_becomes_infinity),
    T(test_cast_f16_subnormals_round_to_nearest_even),
    T(test_cast_between_f16_and_bf16),
    {NULL, NULL},
};

static const test_entry graph_tests[] = {
    T(test_weights_given_as_inputs_are_read_again_on_every_run),
    T(test_same_value_feeds_both_operands),
    T(test_values_read_by_several_nodes_are_not_overwritten),
    {NULL, NULL},
};

static const test_entry lowp_tests[] = {
    T(test_lowp_unary_ops_match_reference),
    T(test_lowp_binary_ops_broadcast_and_match_reference),
    T(test_lowp_parameterised_elementwise_ops_match_reference),
    T(test_lowp_matmul_gemm_and_conv_match_reference),
    T(test_lowp_normalisation_pooling_and_reductions_match_reference),
    T(test_lowp_layout_ops_move_values_exactly),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        const test_entry *tests;
    } groups[] = {
        {"kernels_elementwise", elementwise_tests}, {"kernels_linalg", linalg_tests},
        {"kernels_nn", nn_tests},                   {"kernels_layout", layout_tests},
        {"kernels_reduce", reduce_tests},           {"kernels_cast", cast_tests},
        {"kernels_16bit_float", lowp_tests},        {"kernels_in_graphs", graph_tests},
    };
    test_suite suites[sizeof groups / sizeof groups[0]];
    for (size_t k = 0; k < sizeof groups / sizeof groups[0]; k++)
        suites[k] = (test_suite){groups[k].name, groups[k].tests, suite_init, suite_clean,
                                 rng_reset, NULL};
    int rc = test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
    if (g_n_notes) {
        printf("\nNot supported by the library (refused cleanly, not counted as failures):\n");
        for (size_t k = 0; k < g_n_notes; k++)
            printf("  %s\n", g_notes[k]);
    }
    return rc;
}
