/*
 * The transformer operators of ONNX Runtime's com.microsoft domain that the importer lowers
 * into registry operators (issue 13, third part), as docs/ContribOperators.md of ONNX Runtime
 * defines them and its CPU kernels compute them:
 *   EmbedLayerNormalization  Gather of word, position (and segment) embeddings, their sum,
 *                            LayerNormalization; mask_index = how many mask entries are 1. Ids
 *                            past a table's end fail the run (Gather), as in ONNX Runtime;
 *                            negative ones count from the end, as Gather's do (ONNX Runtime
 *                            refuses them).
 *   Attention                Q, K and V projections by the packed weights' column ranges
 *                            (+ bias; sliced at import when constant), per-head scaled dot
 *                            products, an additive mask (key lengths, [end, start]
 *                            pairs, 2-D or 3-D 0/1 masks; causal when unidirectional), Softmax,
 *                            MatMul with V.
 *   MultiHeadAttention       the same from separate Q, K and V (+ bias), key_padding_mask.
 *   RotaryEmbedding          out = x * cos + partner(x) * (+-sin), partner(x) the halves (or
 *                            the pairs' columns) swapped by Slice and Concat, the caches
 *                            regathered into one [max_seq, head_size] table each (pass-through
 *                            columns get cos 1, sin 0; folded at import when they are
 *                            constants), rows gathered by position at run time.
 *   MatMulNBits              the 4- or 8-bit block-quantized weight (an initializer) dequantized
 *                            here into a [K, N] constant of A's type, then MatMul (+ bias).
 * Masked scores get mask_filter_value added (not -inf), as ONNX Runtime does, so a row whose keys
 * are all masked averages over them as ONNX Runtime's does; causally masked keys are excluded
 * whatever mask_filter_value says, as there. Forms these lowerings do not cover
 * (past and present states, attention_bias, packed QKV, rotary inside Attention, 3B+2 mask
 * indices, g_idx) are refused with a message naming the node and the input or attribute.
 */
#include "graph/onnx/onnx_import.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One com.microsoft node being lowered: what onnx_nodes.c resolved (inputs, attributes). */
typedef struct cx {
    onnx_import *im;
    onnx_scope *sc;
    const Onnx__NodeProto *node;
    const char *name; /* "" when the node has none */
    const char *op;
    loom_value *in;
    size_t n_in;
    loom_attr *attrs;
    size_t n_attrs;
    const char *special;
} cx;

static loom_status fail(cx *c, loom_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static loom_status fail(cx *c, loom_status st, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return onnx_fail(c->im, st, "node '%.200s' (%.100s): com.microsoft %s %s", c->name, c->op,
                     c->op, msg);
}

/* ---- attributes ------------------------------------------------------------------------------ */

static int take(cx *c, const char *name, loom_attr *out)
{
    for (size_t i = 0; i < c->n_attrs; i++)
        if (strcmp(c->attrs[i].name, name) == 0) {
            *out = c->attrs[i];
            memmove(&c->attrs[i], &c->attrs[i + 1], (c->n_attrs - i - 1) * sizeof *c->attrs);
            c->n_attrs--;
            return 1;
        }
    return 0;
}

static loom_status attr_int(cx *c, const char *name, int64_t def, int64_t *out)
{
    loom_attr a;
    *out = def;
    if (!take(c, name, &a))
        return LOOM_OK;
    if (a.kind != LOOM_ATTR_INT)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute '%s' must be an int", name);
    *out = a.i;
    return LOOM_OK;
}

static loom_status attr_float(cx *c, const char *name, float def, float *out)
{
    loom_attr a;
    *out = def;
    if (!take(c, name, &a))
        return LOOM_OK;
    if (a.kind != LOOM_ATTR_FLOAT)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute '%s' must be a float", name);
    *out = a.f;
    return LOOM_OK;
}

/* An int attribute that must be 0 (absent) for the lowering: WHY says what it would ask for. */
static loom_status attr_zero(cx *c, const char *name, const char *why)
{
    int64_t v;
    loom_status st = attr_int(c, name, 0, &v);
    if (st == LOOM_OK && v != 0)
        st = fail(c, LOOM_ERR_UNSUPPORTED, "attribute '%s' is %lld (%s); Loom supports only 0",
                  name, (long long)v, why);
    return st;
}

/* Refuse attributes the lowering did not take. */
static loom_status attrs_done(cx *c)
{
    if (c->special)
        return fail(c, LOOM_ERR_UNSUPPORTED, "attribute '%s' is not supported", c->special);
    if (c->n_attrs)
        return fail(c, LOOM_ERR_UNSUPPORTED, "attribute '%s' is not supported",
                    c->attrs[0].name);
    return LOOM_OK;
}

/* ---- inputs and outputs ---------------------------------------------------------------------- */

static loom_value input(const cx *c, size_t k)
{
    return k < c->n_in ? c->in[k] : LOOM_NO_VALUE;
}

static loom_tensor_desc desc(const cx *c, loom_value v)
{
    return onnx_desc(c->im, v);
}

static loom_status need(cx *c, size_t k, const char *what)
{
    if (input(c, k) == LOOM_NO_VALUE)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input %zu ('%s') is required", k, what);
    return LOOM_OK;
}

/* Refuse optional input K when given: WHY names the form Loom does not lower. */
static loom_status refuse_input(cx *c, size_t k, const char *what, const char *why)
{
    if (input(c, k) != LOOM_NO_VALUE)
        return fail(c, LOOM_ERR_UNSUPPORTED, "input %zu ('%s') is given: %s, which Loom does "
                    "not support", k, what, why);
    return LOOM_OK;
}

/* Refuse inputs past MAX. */
static loom_status inputs_at_most(cx *c, size_t max)
{
    size_t n = c->n_in;
    while (n > 0 && c->in[n - 1] == LOOM_NO_VALUE)
        n--;
    if (n > max)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "takes at most %zu inputs, %zu given", max, n);
    return LOOM_OK;
}

static int output_read(const cx *c, size_t k)
{
    if (k >= c->node->n_output || !c->node->output[k] || !*c->node->output[k])
        return 0;
    return onnx_smap_get(&c->sc->used, c->node->output[k], NULL);
}

static loom_status refuse_output(cx *c, size_t k, const char *what)
{
    if (output_read(c, k))
        return fail(c, LOOM_ERR_UNSUPPORTED, "output %zu ('%s', named '%.200s') is read by "
                    "the graph; Loom does not compute it", k, what, c->node->output[k]);
    return LOOM_OK;
}

static loom_status bind(cx *c, size_t k, loom_value v)
{
    if (v == LOOM_NO_VALUE)
        return c->im->status != LOOM_OK ? c->im->status
                                        : onnx_fail(c->im, LOOM_ERR_INTERNAL, "node '%.200s': "
                                                    "lowering gave no value", c->name);
    if (k >= c->node->n_output || !*c->node->output[k])
        return LOOM_OK;
    const char *name = c->node->output[k];
    loom_status st = onnx_define(c->im, c->sc, name, v);
    return st == LOOM_OK ? onnx_name_value(c->im, v, name) : st;
}

/* ---- building ---------------------------------------------------------------------------------
 * Each returns the new value, or LOOM_NO_VALUE after recording the failure in c->im (and does
 * nothing when given LOOM_NO_VALUE among its inputs, so calls chain). */

static loom_value op(cx *c, const char *type, const char *suffix, const loom_value *in, size_t n,
                     const loom_attr *attrs, size_t n_attrs)
{
    if (c->im->status != LOOM_OK)
        return LOOM_NO_VALUE;
    for (size_t k = 0; k < n; k++)
        if (in[k] == LOOM_NO_VALUE) {
            onnx_fail(c->im, LOOM_ERR_INTERNAL, "node '%.200s': a lowering input is missing",
                      c->name);
            return LOOM_NO_VALUE;
        }
    size_t len = strlen(c->name) + strlen(c->op) + strlen(suffix) + 2;
    char *name = onnx_alloc(c->im, len);
    if (!name) {
        onnx_fail(c->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        return LOOM_NO_VALUE;
    }
    snprintf(name, len, "%s%s", *c->name ? c->name : c->op, suffix);
    loom_value out;
    loom_status st = loom_graph_op(c->im->g, type, name, in, n, attrs, n_attrs, &out, 1);
    if (st != LOOM_OK) {
        onnx_fail_builder(c->im, st);
        return LOOM_NO_VALUE;
    }
    return out;
}

static loom_value op2(cx *c, const char *type, const char *suffix, loom_value a, loom_value b)
{
    if (a == LOOM_NO_VALUE || b == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    loom_value in[2] = {a, b};
    return op(c, type, suffix, in, 2, NULL, 0);
}

static loom_value i64s(cx *c, size_t n, const int64_t *v)
{
    return onnx_const_i64s(c->im, n, v);
}

static loom_value reshape(cx *c, loom_value x, size_t rank, const int64_t *dims, const char *sfx)
{
    if (x == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    return op2(c, "Reshape", sfx, x, i64s(c, rank, dims));
}

static loom_value transpose(cx *c, loom_value x, size_t rank, const int64_t *perm,
                            const char *sfx)
{
    if (x == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    loom_attr a = loom_attr_ints("perm", rank, perm);
    return op(c, "Transpose", sfx, &x, 1, &a, 1);
}

/* X[..., start:end] on axis AXIS. */
static loom_value slice(cx *c, loom_value x, int64_t axis, int64_t start, int64_t end,
                        const char *sfx)
{
    if (x == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    loom_value in[4] = {x, i64s(c, 1, &start), i64s(c, 1, &end), i64s(c, 1, &axis)};
    if (in[1] == LOOM_NO_VALUE || in[2] == LOOM_NO_VALUE || in[3] == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    return op(c, "Slice", sfx, in, 4, NULL, 0);
}

static loom_value gather(cx *c, loom_value data, loom_value idx, int64_t axis, const char *sfx)
{
    if (data == LOOM_NO_VALUE || idx == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    loom_value in[2] = {data, idx};
    loom_attr a = loom_attr_int("axis", axis);
    return op(c, "Gather", sfx, in, 2, &a, 1);
}

static loom_value scalar(cx *c, loom_dtype dt, double v)
{
    return onnx_scalar_const(c->im, dt, v);
}

/* A constant the graph owns, from a malloc'd buffer (taken over, freed on failure too). */
static loom_value owned(cx *c, const char *sfx, loom_dtype dt, uint32_t rank, const int64_t *dims,
                        void *data)
{
    onnx_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.rank = rank;
    size_t n = 1;
    for (uint32_t k = 0; k < rank; k++) {
        t.dims[k] = dims[k];
        n *= (size_t)dims[k];
    }
    t.data = data;
    t.nbytes = n * loom_dtype_size(dt);
    size_t len = strlen(c->name) + strlen(c->op) + strlen(sfx) + 2;
    char *name = onnx_alloc(c->im, len);
    if (!name) {
        free(data);
        onnx_fail(c->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        return LOOM_NO_VALUE;
    }
    snprintf(name, len, "%s%s", *c->name ? c->name : c->op, sfx);
    return onnx_own_constant(c->im, name, &t);
}

/* 0, 1, ..., N - 1 as a constant of the integer dtype DT (int32 or int64). */
static loom_value arange(cx *c, const char *sfx, loom_dtype dt, int64_t n)
{
    size_t es = loom_dtype_size(dt);
    unsigned char *p = malloc((size_t)n * es + 1);
    if (!p) {
        onnx_fail(c->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        return LOOM_NO_VALUE;
    }
    for (int64_t i = 0; i < n; i++) {
        if (dt == LOOM_DTYPE_I64) {
            int64_t v = i;
            memcpy(p + (size_t)i * es, &v, es);
        } else {
            int32_t v = (int32_t)i;
            memcpy(p + (size_t)i * es, &v, es);
        }
    }
    return owned(c, sfx, dt, 1, &n, p);
}

static int float_dtype(loom_dtype dt)
{
    return dt == LOOM_DTYPE_F32 || dt == LOOM_DTYPE_F16 || dt == LOOM_DTYPE_BF16;
}

static int int_dtype(loom_dtype dt)
{
    return dt == LOOM_DTYPE_I32 || dt == LOOM_DTYPE_I64;
}

static loom_status check_rank(cx *c, size_t k, const char *what, uint32_t lo, uint32_t hi)
{
    loom_tensor_desc d = desc(c, input(c, k));
    if (d.rank < lo || d.rank > hi) {
        if (lo == hi)
            return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input %zu ('%s') must have rank %u, "
                        "not %u", k, what, lo, d.rank);
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input %zu ('%s') must have rank %u to %u, "
                    "not %u", k, what, lo, hi, d.rank);
    }
    return LOOM_OK;
}

static loom_status check_float(cx *c, size_t k, const char *what, loom_dtype want)
{
    loom_tensor_desc d = desc(c, input(c, k));
    if (want != LOOM_DTYPE_UNDEFINED ? d.dtype != want : !float_dtype(d.dtype))
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input %zu ('%s') has dtype %s; it must be %s",
                    k, what, loom_dtype_name(d.dtype),
                    want != LOOM_DTYPE_UNDEFINED ? loom_dtype_name(want)
                                                 : "float, float16 or bfloat16");
    return LOOM_OK;
}

/* ---- attention, shared by Attention and MultiHeadAttention ------------------------------------ */

/* The additive mask of MASK (input K, integer) for B batches, S queries and T keys, shaped to
 * broadcast over [B, N, S, T]: FILTER where a key is masked, 0 elsewhere. Forms: [B] key
 * lengths (keys from the length on are masked), [2B] (ALLOW_2B: ends then starts; keys before
 * the start are masked too), [B, T] and [B, S, T] of 1 (attend) and 0 (masked; any value > 0
 * attends). */
static loom_value padding_mask(cx *c, size_t k, const char *what, int allow_2b, int64_t B,
                               int64_t S, int64_t T, loom_dtype dt, float filter)
{
    loom_value m = input(c, k);
    loom_tensor_desc d = desc(c, m);
    if (!int_dtype(d.dtype)) {
        fail(c, LOOM_ERR_INVALID_ARGUMENT, "input %zu ('%s') has dtype %s; it must be int32", k,
             what, loom_dtype_name(d.dtype));
        return LOOM_NO_VALUE;
    }
    loom_value fv = scalar(c, dt, filter), zero = scalar(c, dt, 0.0);
    loom_value cond = LOOM_NO_VALUE;
    int64_t shape4[4] = {B, 1, 1, T};
    if (d.rank == 1 && (d.dims[0] == B || (allow_2b && d.dims[0] == 2 * B))) {
        loom_value pos = arange(c, "/mask_positions", d.dtype, T);
        int64_t b1[2] = {B, 1};
        loom_value end = reshape(c, d.dims[0] == B ? m : slice(c, m, 0, 0, B, "/mask_end"), 2,
                                 b1, "/mask_end_column");
        cond = op2(c, "GreaterOrEqual", "/mask_past_end", pos, end);
        if (d.dims[0] == 2 * B) {
            loom_value start = reshape(c, slice(c, m, 0, B, 2 * B, "/mask_start"), 2, b1,
                                       "/mask_start_column");
            cond = op2(c, "Or", "/mask_outside",
                       cond, op2(c, "Less", "/mask_before_start", pos, start));
        }
    } else if ((d.rank == 2 && d.dims[0] == B && d.dims[1] == T) ||
               (d.rank == 3 && d.dims[0] == B && d.dims[1] == S && d.dims[2] == T)) {
        cond = op2(c, "LessOrEqual", "/mask_zero", m, scalar(c, d.dtype, 0.0));
        if (d.rank == 3)
            shape4[2] = S;
    } else {
        char ds[128];
        loom_dims_format(d.rank, d.dims, ds, sizeof ds);
        fail(c, LOOM_ERR_UNSUPPORTED, "input %zu ('%s') has shape %s; Loom supports [batch] key "
             "lengths%s, [batch, %lld] and [batch, %lld, %lld] 0/1 masks (batch %lld)", k, what,
             ds, allow_2b ? ", [2 * batch] ends and starts" : "", (long long)T, (long long)S,
             (long long)T, (long long)B);
        return LOOM_NO_VALUE;
    }
    loom_value in3[3] = {cond, fv, zero};
    if (cond == LOOM_NO_VALUE || fv == LOOM_NO_VALUE || zero == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    return reshape(c, op(c, "Where", "/mask_add", in3, 3, NULL, 0), 4, shape4, "/mask_bnst");
}

/* True where key j comes after query i (j > i): [S, T], a constant. */
static loom_value causal_keys(cx *c, int64_t S, int64_t T)
{
    int64_t dims[2] = {S, T};
    unsigned char *m = malloc((size_t)(S * T) + 1);
    if (!m) {
        onnx_fail(c->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        return LOOM_NO_VALUE;
    }
    for (int64_t i = 0; i < S; i++)
        for (int64_t j = 0; j < T; j++)
            m[i * T + j] = j > i;
    return owned(c, "/causal", LOOM_DTYPE_BOOL, 2, dims, m);
}

/* [B, L, N * H] -> [B, N, L, H] (KEY_T: [B, N, H, L], ready for Q K^T). */
static loom_value heads(cx *c, loom_value x, int64_t B, int64_t L, int64_t N, int64_t H,
                        int key_t, const char *sfx)
{
    char s1[64], s2[64];
    snprintf(s1, sizeof s1, "%s_heads", sfx);
    snprintf(s2, sizeof s2, "%s_bnsh", sfx);
    int64_t dims[4] = {B, L, N, H};
    static const int64_t perm_q[4] = {0, 2, 1, 3}, perm_k[4] = {0, 2, 3, 1};
    return transpose(c, reshape(c, x, 4, dims, s1), 4, key_t ? perm_k : perm_q, s2);
}

/* Softmax(Q K^T * SCALE + MASK) V for Q [B, N, S, Hq], KT [B, N, Hq, T], V [B, N, T, Hv], MASK
 * (LOOM_NO_VALUE: none) broadcasting to [B, N, S, T]; the result as [B, S, N * Hv]. */
static loom_value attend(cx *c, loom_value q, loom_value kt, loom_value v, loom_value mask,
                         float scale, int64_t B, int64_t S, int64_t N, int64_t Hv, loom_dtype dt)
{
    loom_value s = op2(c, "MatMul", "/scores", q, kt);
    s = op2(c, "Mul", "/scaled", s, scalar(c, dt, scale));
    if (mask != LOOM_NO_VALUE)
        s = op2(c, "Add", "/masked", s, mask);
    loom_attr axis = loom_attr_int("axis", -1);
    loom_value p = s == LOOM_NO_VALUE ? s : op(c, "Softmax", "/probs", &s, 1, &axis, 1);
    loom_value o = op2(c, "MatMul", "/context", p, v);
    static const int64_t perm[4] = {0, 2, 1, 3};
    int64_t dims[3] = {B, S, N * Hv};
    return reshape(c, transpose(c, o, 4, perm, "/context_bsnh"), 3, dims, "");
}

/* The additive mask: the padding mask of input K (when given), with the keys after each query
 * set to -inf when CAUSAL and S > 1 (set, not added: ONNX Runtime ignores mask_filter_value for
 * causal masking and sets its lowest float, so a causally masked key never counts, even in a row
 * whose keys the padding mask masks all; -inf gives the same Softmax, since a query always
 * attends to its own position). */
static loom_value both_masks(cx *c, size_t k, const char *what, int allow_2b, int causal,
                             int64_t B, int64_t S, int64_t T, loom_dtype dt, float filter)
{
    loom_value mask = LOOM_NO_VALUE;
    if (input(c, k) != LOOM_NO_VALUE &&
        (mask = padding_mask(c, k, what, allow_2b, B, S, T, dt, filter)) == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    if (causal && S > 1) {
        loom_value in3[3] = {causal_keys(c, S, T), scalar(c, dt, -INFINITY),
                             mask != LOOM_NO_VALUE ? mask : scalar(c, dt, 0.0)};
        if (in3[0] == LOOM_NO_VALUE || in3[1] == LOOM_NO_VALUE || in3[2] == LOOM_NO_VALUE)
            return LOOM_NO_VALUE;
        mask = op(c, "Where", "/causal", in3, 3, NULL, 0);
    }
    return mask;
}

static loom_status attention(cx *c)
{
    loom_status st;
    int64_t heads_n, uni;
    float scale, filter;
    loom_attr sizes = {0};
    int has_sizes = take(c, "qkv_hidden_sizes", &sizes);
    if ((st = attr_int(c, "num_heads", 0, &heads_n)) != LOOM_OK ||
        (st = attr_int(c, "unidirectional", 0, &uni)) != LOOM_OK ||
        (st = attr_float(c, "scale", 0.0f, &scale)) != LOOM_OK ||
        (st = attr_float(c, "mask_filter_value", -10000.0f, &filter)) != LOOM_OK ||
        (st = attr_zero(c, "do_rotary", "rotary embedding inside Attention")) != LOOM_OK ||
        (st = attr_zero(c, "past_present_share_buffer", "a shared past/present buffer")) !=
            LOOM_OK)
        return st;
    int64_t rot;
    if ((st = attr_int(c, "rotary_embedding_dim", 0, &rot)) != LOOM_OK || /* only with do_rotary */
        (st = attrs_done(c)) != LOOM_OK || (st = inputs_at_most(c, 7)) != LOOM_OK ||
        (st = need(c, 0, "input")) != LOOM_OK || (st = need(c, 1, "weights")) != LOOM_OK ||
        (st = refuse_input(c, 4, "past", "a past key/value state")) != LOOM_OK ||
        (st = refuse_input(c, 5, "attention_bias", "an additive attention bias")) != LOOM_OK ||
        (st = refuse_input(c, 6, "past_sequence_length", "a past state")) != LOOM_OK ||
        (st = refuse_output(c, 1, "present")) != LOOM_OK ||
        (st = check_rank(c, 0, "input", 3, 3)) != LOOM_OK ||
        (st = check_rank(c, 1, "weights", 2, 2)) != LOOM_OK ||
        (st = check_float(c, 0, "input", LOOM_DTYPE_UNDEFINED)) != LOOM_OK)
        return st;
    if (heads_n <= 0)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'num_heads' must be given and "
                    "positive, not %lld", (long long)heads_n);
    loom_tensor_desc x = desc(c, input(c, 0)), w = desc(c, input(c, 1));
    int64_t B = x.dims[0], S = x.dims[1], W = w.dims[1], dq, dk, dv;
    if (w.dims[0] != x.dims[2])
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 1 ('weights') has %lld rows; input 0 "
                    "has hidden size %lld", (long long)w.dims[0], (long long)x.dims[2]);
    if (has_sizes) {
        if (sizes.kind != LOOM_ATTR_INTS || sizes.count != 3)
            return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'qkv_hidden_sizes' must be "
                        "three ints");
        dq = sizes.ints[0], dk = sizes.ints[1], dv = sizes.ints[2];
        if (dq <= 0 || dk != dq || dv <= 0 || dq + dk + dv != W)
            return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'qkv_hidden_sizes' is [%lld, "
                        "%lld, %lld]: Q and K sizes must be equal, all positive, summing to "
                        "the %lld columns of input 1 ('weights')", (long long)dq, (long long)dk,
                        (long long)dv, (long long)W);
    } else {
        if (W % 3 != 0)
            return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 1 ('weights') has %lld columns, "
                        "not 3 * hidden size (give 'qkv_hidden_sizes')", (long long)W);
        dq = dk = dv = W / 3;
    }
    if (dq % heads_n != 0 || dv % heads_n != 0)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'num_heads' (%lld) does not divide "
                    "the Q/K hidden size %lld and the V hidden size %lld", (long long)heads_n,
                    (long long)dq, (long long)dv);
    int64_t hq = dq / heads_n, hv = dv / heads_n;
    if (scale == 0.0f)
        scale = 1.0f / sqrtf((float)hq);
    /* Three projections with the weights' (and bias's) columns sliced, rather than one and its
     * result sliced: constant weights fold into three constants at import, and no activation
     * is copied. */
    static const char *const wn[3] = {"/q_weights", "/k_weights", "/v_weights"};
    static const char *const bn[3] = {"/q_bias", "/k_bias", "/v_bias"};
    static const char *const pn[3] = {"/q", "/k", "/v"};
    const int64_t lo[3] = {0, dq, dq + dk}, hi[3] = {dq, dq + dk, W};
    loom_value proj[3];
    for (int j = 0; j < 3; j++) {
        proj[j] = op2(c, "MatMul", input(c, 2) != LOOM_NO_VALUE ? wn[j] : pn[j], input(c, 0),
                      slice(c, input(c, 1), 1, lo[j], hi[j], wn[j]));
        if (input(c, 2) != LOOM_NO_VALUE)
            proj[j] = op2(c, "Add", pn[j], proj[j], slice(c, input(c, 2), 0, lo[j], hi[j], bn[j]));
    }
    loom_value q = proj[0], k = proj[1], v = proj[2];
    loom_value mask = both_masks(c, 3, "mask_index", 1, uni != 0, B, S, S, x.dtype, filter);
    if (c->im->status != LOOM_OK)
        return c->im->status;
    return bind(c, 0, attend(c, heads(c, q, B, S, heads_n, hq, 0, "/q"),
                             heads(c, k, B, S, heads_n, hq, 1, "/k"),
                             heads(c, v, B, S, heads_n, hv, 0, "/v"), mask, scale, B, S,
                             heads_n, hv, x.dtype));
}

static loom_status multi_head_attention(cx *c)
{
    loom_status st;
    int64_t heads_n, uni;
    float scale, filter;
    if ((st = attr_int(c, "num_heads", 0, &heads_n)) != LOOM_OK ||
        (st = attr_int(c, "unidirectional", 0, &uni)) != LOOM_OK ||
        (st = attr_float(c, "scale", 0.0f, &scale)) != LOOM_OK ||
        (st = attr_float(c, "mask_filter_value", -10000.0f, &filter)) != LOOM_OK ||
        (st = attrs_done(c)) != LOOM_OK || (st = inputs_at_most(c, 10)) != LOOM_OK ||
        (st = need(c, 0, "query")) != LOOM_OK)
        return st;
    loom_tensor_desc qd = desc(c, input(c, 0));
    if (qd.rank == 5)
        return fail(c, LOOM_ERR_UNSUPPORTED, "input 0 ('query') has rank 5: packed QKV, which "
                    "Loom does not support (give query, key and value separately)");
    if ((st = need(c, 1, "key")) != LOOM_OK)
        return st;
    loom_tensor_desc kd = desc(c, input(c, 1));
    if (kd.rank == 5)
        return fail(c, LOOM_ERR_UNSUPPORTED, "input 1 ('key') has rank 5: packed KV, which Loom "
                    "does not support (give key and value separately)");
    if (kd.rank == 4)
        return fail(c, LOOM_ERR_UNSUPPORTED, "input 1 ('key') has rank 4: a past key in "
                    "[batch, heads, length, head_size] form, which Loom does not support");
    if ((st = need(c, 2, "value")) != LOOM_OK)
        return st;
    loom_tensor_desc vd = desc(c, input(c, 2));
    if ((st = refuse_input(c, 5, "attention_bias", "an additive attention bias")) != LOOM_OK ||
        (st = refuse_input(c, 6, "past_key", "a past key state")) != LOOM_OK ||
        (st = refuse_input(c, 7, "past_value", "a past value state")) != LOOM_OK ||
        (st = refuse_input(c, 8, "past_sequence_length", "a shared past buffer")) != LOOM_OK ||
        (st = refuse_input(c, 9, "cache_indirection", "beam search cache indirection")) !=
            LOOM_OK ||
        (st = refuse_output(c, 1, "present_key")) != LOOM_OK ||
        (st = refuse_output(c, 2, "present_value")) != LOOM_OK ||
        (st = refuse_output(c, 3, "qk")) != LOOM_OK ||
        (st = check_rank(c, 0, "query", 3, 3)) != LOOM_OK ||
        (st = check_rank(c, 1, "key", 3, 3)) != LOOM_OK ||
        (st = check_rank(c, 2, "value", 3, 3)) != LOOM_OK ||
        (st = check_float(c, 0, "query", LOOM_DTYPE_UNDEFINED)) != LOOM_OK)
        return st;
    if (heads_n <= 0)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'num_heads' must be given and "
                    "positive, not %lld", (long long)heads_n);
    int64_t B = qd.dims[0], S = qd.dims[1], D = qd.dims[2], L = kd.dims[1], Dv = vd.dims[2];
    if (kd.dims[0] != B || vd.dims[0] != B || vd.dims[1] != L || kd.dims[2] != D)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "query, key and value must be [batch, "
                    "length, hidden] with one batch, key and value one length, query and key "
                    "one hidden size");
    if (D % heads_n != 0 || Dv % heads_n != 0)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'num_heads' (%lld) does not divide "
                    "the hidden sizes %lld (query, key) and %lld (value)", (long long)heads_n,
                    (long long)D, (long long)Dv);
    int64_t hq = D / heads_n, hv = Dv / heads_n;
    if (scale == 0.0f)
        scale = 1.0f / sqrtf((float)hq);
    loom_value q = input(c, 0), k = input(c, 1), v = input(c, 2);
    if (input(c, 3) != LOOM_NO_VALUE) {
        loom_tensor_desc bd = desc(c, input(c, 3));
        if (bd.rank != 1 || bd.dims[0] != 2 * D + Dv)
            return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 3 ('bias') must be [%lld] (query, "
                        "key and value hidden sizes summed)", (long long)(2 * D + Dv));
        q = op2(c, "Add", "/q_bias", q, slice(c, input(c, 3), 0, 0, D, "/bias_q"));
        k = op2(c, "Add", "/k_bias", k, slice(c, input(c, 3), 0, D, 2 * D, "/bias_k"));
        v = op2(c, "Add", "/v_bias", v, slice(c, input(c, 3), 0, 2 * D, 2 * D + Dv, "/bias_v"));
    }
    loom_value mask = both_masks(c, 4, "key_padding_mask", 0, uni != 0, B, S, L, qd.dtype,
                                 filter);
    if (c->im->status != LOOM_OK)
        return c->im->status;
    return bind(c, 0, attend(c, heads(c, q, B, S, heads_n, hq, 0, "/q"),
                             heads(c, k, B, L, heads_n, hq, 1, "/k"),
                             heads(c, v, B, L, heads_n, hv, 0, "/v"), mask, scale, B, S,
                             heads_n, hv, qd.dtype));
}

/* ---- EmbedLayerNormalization ------------------------------------------------------------------ */

static loom_status embed_layer_norm(cx *c)
{
    loom_status st;
    float eps;
    int64_t mit;
    if ((st = attr_float(c, "epsilon", 1e-12f, &eps)) != LOOM_OK ||
        (st = attr_int(c, "mask_index_type", 1, &mit)) != LOOM_OK || (st = attrs_done(c)) != LOOM_OK ||
        (st = inputs_at_most(c, 9)) != LOOM_OK || (st = need(c, 0, "input_ids")) != LOOM_OK ||
        (st = need(c, 2, "word_embedding")) != LOOM_OK ||
        (st = need(c, 3, "position_embedding")) != LOOM_OK ||
        (st = need(c, 5, "gamma")) != LOOM_OK || (st = need(c, 6, "beta")) != LOOM_OK ||
        (st = check_rank(c, 0, "input_ids", 2, 2)) != LOOM_OK ||
        (st = check_rank(c, 2, "word_embedding", 2, 2)) != LOOM_OK ||
        (st = check_rank(c, 3, "position_embedding", 2, 2)) != LOOM_OK)
        return st;
    if (mit != 0 && mit != 1)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'mask_index_type' is %lld; it must "
                    "be 0 or 1", (long long)mit);
    if ((input(c, 1) == LOOM_NO_VALUE) != (input(c, 4) == LOOM_NO_VALUE))
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 1 ('segment_ids') and input 4 "
                    "('segment_embedding') must be given together");
    loom_tensor_desc ids = desc(c, input(c, 0));
    if (!int_dtype(ids.dtype))
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 0 ('input_ids') has dtype %s; it must "
                    "be int32", loom_dtype_name(ids.dtype));
    int64_t B = ids.dims[0], S = ids.dims[1];
    loom_value sum = gather(c, input(c, 2), input(c, 0), 0, "/word");
    loom_value pos;
    if (input(c, 8) != LOOM_NO_VALUE) {
        loom_tensor_desc pd = desc(c, input(c, 8));
        if (pd.rank != 2 || (pd.dims[0] != B && pd.dims[0] != 1) || pd.dims[1] != S)
            return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 8 ('position_ids') must be [%lld, "
                        "%lld] or [1, %lld]", (long long)B, (long long)S, (long long)S);
        pos = gather(c, input(c, 3), input(c, 8), 0, "/position");
    } else {
        loom_tensor_desc pe = desc(c, input(c, 3));
        if (pe.dims[0] < S)
            return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 3 ('position_embedding') has %lld "
                        "rows, fewer than the sequence length %lld", (long long)pe.dims[0],
                        (long long)S);
        pos = slice(c, input(c, 3), 0, 0, S, "/position");
    }
    /* Both lookups before the sums, as exporters order them: the plan then reuses buffers as
     * it does for the unfused graph. */
    loom_value segment = input(c, 1) != LOOM_NO_VALUE
                             ? gather(c, input(c, 4), input(c, 1), 0, "/segment")
                             : LOOM_NO_VALUE;
    sum = op2(c, "Add", "/word_position", sum, pos);
    if (input(c, 1) != LOOM_NO_VALUE)
        sum = op2(c, "Add", "/embedding_sum", sum, segment);
    loom_value in3[3] = {sum, input(c, 5), input(c, 6)};
    loom_attr la[2] = {loom_attr_int("axis", -1), loom_attr_float("epsilon", eps)};
    loom_value y = sum == LOOM_NO_VALUE ? sum : op(c, "LayerNormalization", "", in3, 3, la, 2);
    if ((st = bind(c, 0, y)) != LOOM_OK)
        return st;
    if (output_read(c, 1)) {
        loom_value mi;
        if (input(c, 7) != LOOM_NO_VALUE) {
            loom_tensor_desc md = desc(c, input(c, 7));
            if (md.rank != 2 || md.dims[0] != B || md.dims[1] != S || !int_dtype(md.dtype))
                return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 7 ('mask') must be int32 "
                            "[%lld, %lld]", (long long)B, (long long)S);
            loom_value ones = op2(c, "Equal", "/mask_ones", input(c, 7),
                                  scalar(c, md.dtype, 1.0));
            loom_attr to = loom_attr_int("to", LOOM_DTYPE_I32);
            loom_value n = ones == LOOM_NO_VALUE ? ones
                                                 : op(c, "Cast", "/mask_ones_i32", &ones, 1, &to, 1);
            int64_t axis1 = 1;
            loom_attr keep = loom_attr_int("keepdims", 0);
            loom_value in2[2] = {n, i64s(c, 1, &axis1)};
            mi = n == LOOM_NO_VALUE ? n : op(c, "ReduceSum", "/mask_index", in2, 2, &keep, 1);
        } else {
            int32_t *z = calloc((size_t)B + 1, sizeof *z);
            if (!z)
                return onnx_fail(c->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            mi = owned(c, "/mask_index", LOOM_DTYPE_I32, 1, &B, z);
        }
        if ((st = bind(c, 1, mi)) != LOOM_OK)
            return st;
    }
    return output_read(c, 2) ? bind(c, 2, sum) : LOOM_OK;
}

/* ---- RotaryEmbedding -------------------------------------------------------------------------- */

/* CACHE [M, half] regathered into [M, D]: column i takes cache column COL[i] (COL[i] == half is
 * a column of PAD, for the dimensions past the rotary ones), times SIGN[i] when SIGN is given. */
static loom_value rotary_table(cx *c, size_t k, const char *sfx, int64_t M, int64_t half,
                               int64_t D, const int64_t *col, const float *sign, double pad,
                               loom_dtype dt)
{
    loom_value t = input(c, k);
    char s[64];
    if (col[D - 1] == half) { /* pass-through columns: append one of PAD */
        int64_t dims[2] = {M, 1};
        snprintf(s, sizeof s, "%s_pad", sfx);
        loom_value p = op(c, "Expand", s, (loom_value[]){scalar(c, dt, pad), i64s(c, 2, dims)},
                          2, NULL, 0);
        loom_value in2[2] = {t, p};
        loom_attr axis = loom_attr_int("axis", 1);
        snprintf(s, sizeof s, "%s_padded", sfx);
        t = p == LOOM_NO_VALUE ? p : op(c, "Concat", s, in2, 2, &axis, 1);
    }
    snprintf(s, sizeof s, "%s_columns", sfx);
    t = gather(c, t, i64s(c, (size_t)D, col), 1, s);
    if (sign) {
        float *sg = malloc((size_t)D * sizeof *sg);
        if (!sg) {
            onnx_fail(c->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            return LOOM_NO_VALUE;
        }
        memcpy(sg, sign, (size_t)D * sizeof *sg);
        snprintf(s, sizeof s, "%s_sign", sfx);
        loom_value sv = owned(c, s, LOOM_DTYPE_F32, 1, &D, sg);
        if (dt != LOOM_DTYPE_F32 && sv != LOOM_NO_VALUE) {
            loom_attr to = loom_attr_int("to", dt);
            snprintf(s, sizeof s, "%s_sign_cast", sfx);
            sv = op(c, "Cast", s, &sv, 1, &to, 1);
        }
        snprintf(s, sizeof s, "%s_signed", sfx);
        t = op2(c, "Mul", s, t, sv);
    }
    return t;
}

/* X [..., D] with each rotary column's partner in its place: the halves of the first R columns
 * swapped, or (INTERLEAVED) the columns of each pair swapped; columns from R on stay. Slices and
 * a Concat (which copy runs of columns) rather than a Gather of single columns. */
static loom_value rotary_partner(cx *c, loom_value x, int64_t D, int64_t R, int interleaved)
{
    loom_value parts[3];
    size_t n = 0;
    loom_attr axis = loom_attr_int("axis", -1);
    if (interleaved) {
        loom_tensor_desc d = desc(c, x);
        int64_t pairs[5] = {d.dims[0], d.dims[1], d.dims[2], R / 2, 2};
        loom_value p = reshape(c, R < D ? slice(c, x, 3, 0, R, "/rotary_columns") : x, 5, pairs,
                               "/pairs");
        loom_value sw[2] = {slice(c, p, 4, 1, 2, "/pair_second"),
                            slice(c, p, 4, 0, 1, "/pair_first")};
        int64_t back[4] = {d.dims[0], d.dims[1], d.dims[2], R};
        parts[n++] = sw[0] == LOOM_NO_VALUE || sw[1] == LOOM_NO_VALUE
                         ? LOOM_NO_VALUE
                         : reshape(c, op(c, "Concat", "/pairs_swapped", sw, 2, &axis, 1), 4, back,
                                   "/partner_rotary");
    } else {
        parts[n++] = slice(c, x, 3, R / 2, R, "/second_half");
        parts[n++] = slice(c, x, 3, 0, R / 2, "/first_half");
    }
    if (R < D)
        parts[n++] = slice(c, x, 3, R, D, "/pass_through");
    for (size_t k = 0; k < n; k++)
        if (parts[k] == LOOM_NO_VALUE)
            return LOOM_NO_VALUE;
    return n == 1 ? parts[0] : op(c, "Concat", "/partner", parts, n, &axis, 1);
}

static loom_status rotary_embedding(cx *c)
{
    loom_status st;
    int64_t inter, nh, rot;
    float scale;
    if ((st = attr_int(c, "interleaved", 0, &inter)) != LOOM_OK ||
        (st = attr_int(c, "num_heads", 0, &nh)) != LOOM_OK ||
        (st = attr_int(c, "rotary_embedding_dim", 0, &rot)) != LOOM_OK ||
        /* scale only matters when the caches must be extended past max_sequence_length,
         * which ONNX Runtime does not implement either: refused below. */
        (st = attr_float(c, "scale", 1.0f, &scale)) != LOOM_OK ||
        (st = attr_zero(c, "is_packed_batching", "ragged batches")) != LOOM_OK ||
        (st = attrs_done(c)) != LOOM_OK || (st = inputs_at_most(c, 4)) != LOOM_OK ||
        (st = need(c, 0, "input")) != LOOM_OK || (st = need(c, 1, "position_ids")) != LOOM_OK ||
        (st = need(c, 2, "cos_cache")) != LOOM_OK || (st = need(c, 3, "sin_cache")) != LOOM_OK ||
        (st = check_rank(c, 0, "input", 3, 4)) != LOOM_OK ||
        (st = check_rank(c, 2, "cos_cache", 2, 2)) != LOOM_OK ||
        (st = check_rank(c, 3, "sin_cache", 2, 2)) != LOOM_OK ||
        (st = check_float(c, 0, "input", LOOM_DTYPE_UNDEFINED)) != LOOM_OK)
        return st;
    loom_tensor_desc x = desc(c, input(c, 0)), cd = desc(c, input(c, 2)),
                     sd = desc(c, input(c, 3)), pd = desc(c, input(c, 1));
    if (inter != 0 && inter != 1)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'interleaved' is %lld; it must be "
                    "0 or 1", (long long)inter);
    if (cd.dims[0] != sd.dims[0] || cd.dims[1] != sd.dims[1] || cd.dtype != sd.dtype ||
        cd.dtype != x.dtype)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 2 ('cos_cache') and input 3 "
                    "('sin_cache') must have one shape and the input's dtype");
    if (rot < 0 || nh < 0 || (rot > 0 && nh == 0))
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'rotary_embedding_dim' (%lld) needs "
                    "a positive 'num_heads' (%lld)", (long long)rot, (long long)nh);
    int four = x.rank == 4;
    int64_t B = x.dims[0], S = four ? x.dims[2] : x.dims[1],
            hidden = four ? x.dims[1] * x.dims[3] : x.dims[2], M = cd.dims[0], half = cd.dims[1];
    int64_t D = rot == 0 ? 2 * half : hidden / nh;
    int64_t R = rot > 0 ? rot : D;
    if (D <= 0 || hidden % D != 0 || (nh > 0 && nh * D != hidden) || (four && x.dims[3] != D))
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "the input's hidden size %lld does not split "
                    "into heads of %lld (from %s)", (long long)hidden, (long long)D,
                    rot == 0 ? "the caches' 2 * columns" : "'num_heads'");
    if (R > D || R % 2 != 0 || R / 2 != half)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'rotary_embedding_dim' %lld: the "
                    "rotary dimension must be even, at most the head size %lld, and twice the "
                    "caches' %lld columns", (long long)R, (long long)D, (long long)half);
    if (S > M)
        return fail(c, LOOM_ERR_UNSUPPORTED, "sequence length %lld exceeds the caches' %lld rows "
                    "(max_sequence_length); extending them is not supported", (long long)S,
                    (long long)M);
    int64_t N = hidden / D;
    int pos_scalar = loom_tensor_desc_numel(&pd) == 1 && pd.rank <= 1;
    if (pd.dtype != LOOM_DTYPE_I64 ||
        !(pos_scalar || (pd.rank == 2 && pd.dims[0] == B && pd.dims[1] == S)))
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 1 ('position_ids') must be int64, "
                    "[1] (the first position) or [%lld, %lld]", (long long)B, (long long)S);
    /* out[i] = x[i] * cos[col[i]] + partner(x)[i] * sign[i] * sin[col[i]] (rotary_partner). */
    int64_t *col = malloc((size_t)D * sizeof *col);
    float *sign = malloc((size_t)D * sizeof *sign);
    if (!col || !sign) {
        free(col), free(sign);
        return onnx_fail(c->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (int64_t i = 0; i < D; i++) {
        if (i >= R) {
            col[i] = half, sign[i] = 1.0f;
        } else if (inter) {
            col[i] = i / 2, sign[i] = i % 2 ? 1.0f : -1.0f;
        } else {
            col[i] = i % half, sign[i] = i < half ? -1.0f : 1.0f;
        }
    }
    loom_value cosd = rotary_table(c, 2, "/cos", M, half, D, col, NULL, 1.0, x.dtype);
    loom_value sind = rotary_table(c, 3, "/sin", M, half, D, col, sign, 0.0, x.dtype);
    free(col), free(sign);
    loom_value positions = input(c, 1);
    if (pos_scalar) {
        int64_t one = 1;
        positions = op2(c, "Add", "/positions", arange(c, "/steps", LOOM_DTYPE_I64, S),
                        reshape(c, positions, 1, &one, "/first_position"));
    }
    loom_value cr = gather(c, cosd, positions, 0, "/cos_rows"),
               sr = gather(c, sind, positions, 0, "/sin_rows");
    /* Rows [B, S, D] or [S, D] broadcast over the heads' axis. */
    int64_t bshape[4];
    size_t brank = 0;
    if (!pos_scalar)
        bshape[brank++] = B;
    if (four) {
        if (!pos_scalar)
            bshape[brank++] = 1;
        bshape[brank++] = S, bshape[brank++] = D;
    } else {
        bshape[brank++] = S, bshape[brank++] = 1, bshape[brank++] = D;
    }
    if (!four || !pos_scalar) {
        cr = reshape(c, cr, brank, bshape, "/cos_heads");
        sr = reshape(c, sr, brank, bshape, "/sin_heads");
    }
    loom_value xh = input(c, 0);
    int64_t hshape[4] = {B, S, N, D};
    if (!four)
        xh = reshape(c, xh, 4, hshape, "/heads");
    loom_value y = op2(c, "Add", four ? "" : "/rotated",
                       op2(c, "Mul", "/x_cos", xh, cr),
                       op2(c, "Mul", "/partner_sin", rotary_partner(c, xh, D, R, inter), sr));
    if (!four)
        y = reshape(c, y, 3, x.dims, "");
    (void)scale;
    return bind(c, 0, y);
}

/* ---- MatMulNBits ------------------------------------------------------------------------------ */

static float half_to_float(uint16_t h, int bf)
{
    uint32_t bits;
    if (bf) {
        bits = (uint32_t)h << 16;
    } else {
        uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023;
        if (e == 0 && m == 0) {
            bits = sign;
        } else if (e == 0) { /* subnormal: normalise */
            int sh = 0;
            while (!(m & 1024))
                m <<= 1, sh++;
            bits = sign | ((uint32_t)(127 - 15 + 1 - sh) << 23) | ((m & 1023) << 13);
        } else if (e == 31) {
            bits = sign | 0x7f800000u | (m << 13);
        } else {
            bits = sign | ((e + 127 - 15) << 23) | (m << 13);
        }
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Element I of a float constant of dtype DT. */
static float float_at(const void *p, loom_dtype dt, size_t i)
{
    if (dt == LOOM_DTYPE_F32)
        return ((const float *)p)[i];
    return half_to_float(((const uint16_t *)p)[i], dt == LOOM_DTYPE_BF16);
}

/* The constant data of input K, or NULL after refusing it as not constant. */
static const void *constant_input(cx *c, size_t k, const char *what)
{
    const void *p = onnx_const_data(c->im, input(c, k));
    if (!p)
        fail(c, LOOM_ERR_UNSUPPORTED, "input %zu ('%s') is not a constant (an initializer); "
             "Loom dequantizes it when the model is loaded", k, what);
    return p;
}

static loom_status matmul_nbits(cx *c)
{
    loom_status st;
    int64_t K, N, bits, bs, acc;
    if ((st = attr_int(c, "K", 0, &K)) != LOOM_OK || (st = attr_int(c, "N", 0, &N)) != LOOM_OK ||
        (st = attr_int(c, "bits", 4, &bits)) != LOOM_OK ||
        (st = attr_int(c, "block_size", 0, &bs)) != LOOM_OK ||
        (st = attr_int(c, "accuracy_level", 0, &acc)) != LOOM_OK ||
        (st = attr_zero(c, "weight_prepacked", "a prepacked GPU weight layout")) != LOOM_OK ||
        (st = attrs_done(c)) != LOOM_OK || (st = inputs_at_most(c, 6)) != LOOM_OK ||
        (st = need(c, 0, "A")) != LOOM_OK || (st = need(c, 1, "B")) != LOOM_OK ||
        (st = need(c, 2, "scales")) != LOOM_OK ||
        (st = refuse_input(c, 4, "g_idx", "a group index (deprecated)")) != LOOM_OK ||
        (st = check_float(c, 0, "A", LOOM_DTYPE_UNDEFINED)) != LOOM_OK)
        return st;
    /* The bounds keep the size arithmetic below within int64. */
    if (K <= 0 || N <= 0 || K > ((int64_t)1 << 31) || N > ((int64_t)1 << 31))
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attributes 'K' and 'N' must be given, "
                    "positive and at most 2^31 (K %lld, N %lld)", (long long)K, (long long)N);
    if (bits != 4 && bits != 8)
        return fail(c, LOOM_ERR_UNSUPPORTED, "attribute 'bits' is %lld; Loom supports 4 and 8",
                    (long long)bits);
    if (bs < 16 || bs > ((int64_t)1 << 24) || (bs & (bs - 1)) != 0)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "attribute 'block_size' is %lld; it must be a "
                    "power of 2 from 16 to 2^24", (long long)bs);
    /* Every level is a minimum accuracy: computing in the input's float type meets them all. */
    if (acc < 0 || acc > 4)
        return fail(c, LOOM_ERR_UNSUPPORTED, "attribute 'accuracy_level' is %lld; Loom supports "
                    "0 to 4 (it computes in float whatever the level)", (long long)acc);
    loom_tensor_desc a = desc(c, input(c, 0)), bd = desc(c, input(c, 1)),
                     sd = desc(c, input(c, 2));
    if (a.rank < 1 || a.dims[a.rank - 1] != K)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 0 ('A') must end in K = %lld",
                    (long long)K);
    int64_t nblk = (K + bs - 1) / bs, blob = bs * bits / 8;
    if (bd.dtype != LOOM_DTYPE_U8 || loom_tensor_desc_numel(&bd) != N * nblk * blob)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 1 ('B') must be uint8 [N, k_blocks, "
                    "blob_size] = [%lld, %lld, %lld]", (long long)N, (long long)nblk,
                    (long long)blob);
    if (sd.dtype != a.dtype || loom_tensor_desc_numel(&sd) != N * nblk)
        return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 2 ('scales') must be [N, k_blocks] = "
                    "[%lld, %lld] of A's dtype", (long long)N, (long long)nblk);
    const uint8_t *bq = constant_input(c, 1, "B");
    const void *sc = bq ? constant_input(c, 2, "scales") : NULL;
    if (!sc)
        return c->im->status;
    const void *zp = NULL;
    loom_tensor_desc zd = desc(c, input(c, 3));
    int zp_packed = 0;
    if (input(c, 3) != LOOM_NO_VALUE) {
        int64_t zrow = (nblk * bits + 7) / 8;
        if (zd.dtype == LOOM_DTYPE_U8 && loom_tensor_desc_numel(&zd) == N * zrow)
            zp_packed = 1;
        else if (zd.dtype != a.dtype || loom_tensor_desc_numel(&zd) != N * nblk)
            return fail(c, LOOM_ERR_INVALID_ARGUMENT, "input 3 ('zero_points') must be uint8 "
                        "[N, ceil(k_blocks * bits / 8)] = [%lld, %lld] or A's dtype [N, "
                        "k_blocks] = [%lld, %lld]", (long long)N, (long long)zrow, (long long)N,
                        (long long)nblk);
        if (!(zp = constant_input(c, 3, "zero_points")))
            return c->im->status;
    }
    float *w = malloc((size_t)(K * N) * sizeof *w);
    if (!w)
        return onnx_fail(c->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    const unsigned per_byte = (unsigned)(8 / bits), mask = (1u << bits) - 1;
    const float def_zp = (float)(1 << (bits - 1));
    for (int64_t n = 0; n < N; n++)
        for (int64_t kb = 0; kb < nblk; kb++) {
            float scale = float_at(sc, sd.dtype, (size_t)(n * nblk + kb)), z = def_zp;
            if (zp_packed) {
                int64_t zrow = (nblk * bits + 7) / 8, e = kb;
                uint8_t byte = ((const uint8_t *)zp)[n * zrow + e / per_byte];
                z = (float)((byte >> ((unsigned)(e % per_byte) * bits)) & mask);
            } else if (zp) {
                z = float_at(zp, zd.dtype, (size_t)(n * nblk + kb));
            }
            const uint8_t *blk = bq + (n * nblk + kb) * blob;
            for (int64_t i = 0; i < bs && kb * bs + i < K; i++) {
                unsigned q = (blk[i / per_byte] >> ((unsigned)(i % per_byte) * bits)) & mask;
                w[(kb * bs + i) * N + n] = ((float)q - z) * scale;
            }
        }
    void *data = w;
    if (a.dtype != LOOM_DTYPE_F32) { /* f16 / bf16 A: weights in its type */
        uint16_t *h = malloc((size_t)(K * N) * sizeof *h);
        if (!h) {
            free(w);
            return onnx_fail(c->im, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        }
        for (size_t i = 0; i < (size_t)(K * N); i++)
            h[i] = a.dtype == LOOM_DTYPE_F16 ? onnx_f32_to_f16(w[i]) : onnx_f32_to_bf16(w[i]);
        free(w);
        data = h;
    }
    int64_t wdims[2] = {K, N};
    loom_value wv = owned(c, "/dequantized_B", a.dtype, 2, wdims, data);
    if (wv == LOOM_NO_VALUE)
        return c->im->status;
    /* B, scales and zero points live on in the dequantized weight only. */
    onnx_mark_read(c->im, input(c, 1));
    onnx_mark_read(c->im, input(c, 2));
    if (zp)
        onnx_mark_read(c->im, input(c, 3));
    loom_value y = op2(c, "MatMul", input(c, 5) != LOOM_NO_VALUE ? "/matmul" : "", input(c, 0),
                       wv);
    if (input(c, 5) != LOOM_NO_VALUE)
        y = op2(c, "Add", "", y, input(c, 5));
    return bind(c, 0, y);
}

/* ---- entry ------------------------------------------------------------------------------------ */

static const struct {
    const char *op;
    loom_status (*lower)(cx *c);
    const char *needs[8];
} k_lowered[] = {
    {"EmbedLayerNormalization", embed_layer_norm,
     {"Gather", "Slice", "Add", "LayerNormalization", "Equal", "Cast", "ReduceSum"}},
    {"Attention", attention,
     {"MatMul", "Slice", "Reshape", "Transpose", "Softmax", "Where", "GreaterOrEqual", "Less"}},
    {"MultiHeadAttention", multi_head_attention,
     {"MatMul", "Slice", "Reshape", "Transpose", "Softmax", "Where", "GreaterOrEqual", "Add"}},
    {"RotaryEmbedding", rotary_embedding,
     {"Gather", "Concat", "Expand", "Mul", "Add", "Reshape", "Cast"}},
    {"MatMulNBits", matmul_nbits, {"MatMul", "Add"}},
};

int onnx_contrib_attention_lowering(const char *op)
{
    for (size_t i = 0; i < sizeof k_lowered / sizeof k_lowered[0]; i++) {
        if (strcmp(op, k_lowered[i].op) != 0)
            continue;
        for (size_t k = 0; k < 8 && k_lowered[i].needs[k]; k++)
            if (!loom_op_find(k_lowered[i].needs[k]))
                return -1;
        return 1;
    }
    return 0;
}

loom_status onnx_contrib_attention_lower(onnx_import *im, onnx_scope *sc,
                                         const Onnx__NodeProto *node, const char *name,
                                         loom_value *in, size_t n_in, loom_attr *attrs,
                                         size_t n_attrs, const char *special)
{
    cx c = {im, sc, node, name, onnx_str(node->op_type), in, n_in, attrs, n_attrs, special};
    for (size_t i = 0; i < sizeof k_lowered / sizeof k_lowered[0]; i++)
        if (strcmp(c.op, k_lowered[i].op) == 0) {
            loom_status st = k_lowered[i].lower(&c);
            return st != LOOM_OK ? st : im->status;
        }
    return onnx_fail(im, LOOM_ERR_INTERNAL, "node '%.200s': %s is not lowered here", name, c.op);
}
