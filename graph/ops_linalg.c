/*
 * Linear algebra of the registry: MatMul, Gemm, Einsum and Det. Shape and dtype inference,
 * attribute canonicalisation (graph/ops.h) and cost (2 FLOPs per multiply-add). The integer and
 * quantised GEMMs (MatMulInteger, QLinearMatMul) are in ops_quantization.c.
 *
 * CANONICAL ATTRIBUTES (besides Gemm's, in graph/ops.h):
 *   Einsum               equation:s, explicit ("ij,jk->ik"): no spaces, an output term always,
 *                        ellipses replaced by upper-case labels the equation did not use. A
 *                        label of an ellipsis dim may be 1 in one operand and n in another
 *                        (broadcast); every other label has one size everywhere.
 */

#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_no_names[] = {NULL};

static const loom_attr_kind k_no_kinds[] = {LOOM_ATTR_INT}; /* unused: no names */

/* numpy matmul: a 1-D A is a row [1, K] and a 1-D B a column [K, 1], the promoted dim being
 * dropped from the result; every leading dim is a batch dim and broadcasts. */
static loom_status infer_matmul(loom_infer_ctx *ctx)
{
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, k_no_names, k_no_kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "A")) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "B")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "A", LOOM_DTS_FLOAT | LOOM_DTS_INDEX)) != LOOM_OK ||
        (st = loom_ops_same_dtype(ctx, 1, "B", 0)) != LOOM_OK)
        return st;
    const loom_tensor_desc *a = &ctx->inputs[0], *b = &ctx->inputs[1];
    if (a->rank == 0 || b->rank == 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input %d (%s) is a scalar; MatMul needs rank 1 or more",
                               a->rank == 0 ? 0 : 1, a->rank == 0 ? "A" : "B");
    int64_t ka = a->dims[a->rank - 1];
    int64_t kb = b->rank >= 2 ? b->dims[b->rank - 2] : b->dims[0];
    if (ka != kb) {
        char sa[160], sb[160];
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "inner dimensions %lld and %lld differ (shapes %s and %s)",
                               (long long)ka, (long long)kb,
                               loom_dims_format(a->rank, a->dims, sa, sizeof sa),
                               loom_dims_format(b->rank, b->dims, sb, sizeof sb));
    }
    loom_tensor_desc ba = {.rank = a->rank > 2 ? a->rank - 2 : 0};
    loom_tensor_desc bb = {.rank = b->rank > 2 ? b->rank - 2 : 0};
    memcpy(ba.dims, a->dims, ba.rank * sizeof ba.dims[0]);
    memcpy(bb.dims, b->dims, bb.rank * sizeof bb.dims[0]);
    loom_tensor_desc y;
    if (!loom_broadcast_shapes(&ba, &bb, &y)) {
        char sa[160], sb[160];
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "batch dimensions %s and %s cannot be broadcast together",
                               loom_dims_format(ba.rank, ba.dims, sa, sizeof sa),
                               loom_dims_format(bb.rank, bb.dims, sb, sizeof sb));
    }
    /* The batch part has at most LOOM_MAX_RANK - 2 dims, so M and N always fit. */
    if (a->rank >= 2)
        y.dims[y.rank++] = a->dims[a->rank - 2];
    if (b->rank >= 2)
        y.dims[y.rank++] = b->dims[b->rank - 1];
    loom_ops_set_output(ctx, 0, a->dtype, y.rank, y.dims);
    return loom_ops_finish(ctx);
}

/* 2 * |Y| * K: each output element is a dot product of length K. */
static void cost_matmul(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *a = &node->inputs[0];
    cost->flops = 2.0 * loom_ops_numel(&node->outputs[0]) * (double)a->dims[a->rank - 1];
}

static loom_status infer_gemm(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"alpha", "beta", "transA", "transB", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT, LOOM_ATTR_INT,
                                           LOOM_ATTR_INT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "A")) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, "B")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "A", LOOM_DTS_FLOAT | LOOM_DTS_INDEX)) != LOOM_OK ||
        (st = loom_ops_same_dtype(ctx, 1, "B", 0)) != LOOM_OK)
        return st;
    const loom_tensor_desc *a = &ctx->inputs[0], *b = &ctx->inputs[1];
    for (uint32_t i = 0; i < 2; i++)
        if (ctx->inputs[i].rank != 2)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input %u (%s) must be 2-D, not of rank %u", i,
                                   i ? "B" : "A", ctx->inputs[i].rank);
    int trans_a = loom_infer_get_int(ctx, "transA", 0) != 0;
    int trans_b = loom_infer_get_int(ctx, "transB", 0) != 0;
    int64_t m = a->dims[trans_a ? 1 : 0], ka = a->dims[trans_a ? 0 : 1];
    int64_t kb = b->dims[trans_b ? 1 : 0], n = b->dims[trans_b ? 0 : 1];
    if (ka != kb)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "inner dimensions %lld and %lld differ (transA=%d, transB=%d)",
                               (long long)ka, (long long)kb, trans_a, trans_b);
    loom_tensor_desc y = {.dtype = a->dtype, .rank = 2, .dims = {m, n}};
    if (loom_ops_has(ctx, 2)) {
        /* C broadcasts one way only: to [M, N], never the other way round. */
        loom_tensor_desc bc;
        const loom_tensor_desc *c = &ctx->inputs[2];
        if ((st = loom_ops_same_dtype(ctx, 2, "C", 0)) != LOOM_OK)
            return st;
        if (!loom_broadcast_shapes(c, &y, &bc) || bc.rank != 2 || bc.dims[0] != m ||
            bc.dims[1] != n) {
            char sc[160];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "input 2 (C) of shape %s does not broadcast to [%lld, %lld]",
                                   loom_dims_format(c->rank, c->dims, sc, sizeof sc),
                                   (long long)m, (long long)n);
        }
    }
    if ((st = loom_infer_set_float(ctx, "alpha", loom_infer_get_float(ctx, "alpha", 1.0f))) !=
            LOOM_OK ||
        (st = loom_infer_set_float(ctx, "beta", loom_infer_get_float(ctx, "beta", 1.0f))) !=
            LOOM_OK ||
        (st = loom_infer_set_int(ctx, "transA", trans_a)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "transB", trans_b)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, names);
    loom_ops_set_output(ctx, 0, y.dtype, 2, y.dims);
    return loom_ops_finish(ctx);
}

/* 2 * M * N * K, plus a multiply-add per output element for beta * C. */
static void cost_gemm(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *a = &node->inputs[0];
    double k = (double)a->dims[loom_node_attr_int(node, "transA", 0) ? 0 : 1];
    double mn = loom_ops_numel(&node->outputs[0]);
    int has_c = node->n_inputs > 2 && node->inputs[2].dtype != LOOM_DTYPE_UNDEFINED;
    cost->flops = 2.0 * mn * k + (has_c ? 2.0 * mn : 0.0);
}

#define INVALID LOOM_ERR_INVALID_ARGUMENT

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

#define EIN_MAX_OPS 2

/* Parse EQ for the inputs of CTX into the canonical explicit form CANON. */
static loom_status einsum_parse(loom_infer_ctx *ctx, const char *eq, char *canon, size_t cap,
                                int64_t *out_dims, uint32_t *out_rank)
{
    char terms[EIN_MAX_OPS + 1][64];
    int ell[EIN_MAX_OPS + 1]; /* position of "..." in each term, -1 when none */
    size_t n_terms = 0, len = 0;
    int explicit_out = 0;
    int used[128] = {0};
    memset(terms, 0, sizeof terms);
    for (int k = 0; k <= EIN_MAX_OPS; k++)
        ell[k] = -1;
    for (const char *p = eq; *p; p++) {
        char c = *p;
        if (c == ' ' || c == '\t')
            continue;
        if (c == ',' || (c == '-' && p[1] == '>')) {
            if (explicit_out)
                return loom_infer_fail(ctx, INVALID, "equation '%s': ',' or '->' after '->'",
                                       eq);
            if (c == '-') {
                explicit_out = 1;
                p++;
            }
            if (++n_terms > EIN_MAX_OPS)
                return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                                       "equation '%s': more than %d operands are not supported",
                                       eq, EIN_MAX_OPS);
            len = 0;
            continue;
        }
        if (c == '.') {
            if (strncmp(p, "...", 3) != 0 || ell[n_terms] >= 0)
                return loom_infer_fail(ctx, INVALID, "equation '%s': bad ellipsis", eq);
            ell[n_terms] = (int)len;
            p += 2;
            continue;
        }
        if (!isalpha((unsigned char)c))
            return loom_infer_fail(ctx, INVALID, "equation '%s': invalid character '%c'", eq, c);
        if (len + 1 >= sizeof terms[0])
            return loom_infer_fail(ctx, INVALID, "equation '%s': term too long", eq);
        terms[n_terms][len++] = c;
        used[(unsigned char)c] = 1;
    }
    size_t n_ops = explicit_out ? n_terms : n_terms + 1;
    if (n_ops != ctx->n_inputs)
        return loom_infer_fail(ctx, INVALID, "equation '%s' has %zu operands but %u inputs given",
                               eq, n_ops, ctx->n_inputs);
    /* Ellipsis dims: as many as the largest count over operands, labelled from 'Z' down. */
    uint32_t n_ell = 0;
    for (size_t i = 0; i < n_ops; i++) {
        size_t l = strlen(terms[i]);
        uint32_t rank = ctx->inputs[i].rank;
        if (ell[i] < 0) {
            if (l != rank)
                return loom_infer_fail(ctx, INVALID,
                                       "equation '%s': term %zu has %zu labels for an input of "
                                       "rank %u",
                                       eq, i, l, rank);
        } else {
            if (l > rank)
                return loom_infer_fail(ctx, INVALID,
                                       "equation '%s': term %zu has %zu labels for an input of "
                                       "rank %u",
                                       eq, i, l, rank);
            if (rank - l > n_ell)
                n_ell = (uint32_t)(rank - l);
        }
    }
    char ell_labels[LOOM_MAX_RANK + 1] = {0};
    for (uint32_t e = 0, c = 'Z'; e < n_ell; c--) {
        if (c < 'A')
            return loom_infer_fail(ctx, INVALID, "equation '%s': out of labels", eq);
        if (!used[c])
            ell_labels[e++] = (char)c;
    }
    char full[EIN_MAX_OPS + 1][64];
    for (size_t i = 0; i < n_ops; i++) {
        size_t l = strlen(terms[i]);
        if (ell[i] < 0) {
            memcpy(full[i], terms[i], l + 1);
            continue;
        }
        uint32_t ne = ctx->inputs[i].rank - (uint32_t)l;
        size_t at = 0;
        for (int k = 0; k < ell[i]; k++)
            full[i][at++] = terms[i][k];
        for (uint32_t e = 0; e < ne; e++) /* right-aligned, as broadcasting is */
            full[i][at++] = ell_labels[n_ell - ne + e];
        for (size_t k = (size_t)ell[i]; k < l; k++)
            full[i][at++] = terms[i][k];
        full[i][at] = 0;
    }
    /* Sizes per label; ellipsis labels broadcast (1 against n). */
    int64_t size[128];
    for (int c = 0; c < 128; c++)
        size[c] = -1;
    for (size_t i = 0; i < n_ops; i++) {
        for (uint32_t d = 0; full[i][d]; d++) {
            unsigned c = (unsigned char)full[i][d];
            int64_t v = ctx->inputs[i].dims[d];
            /* Upper-case labels are those of the canonical form's ellipses. */
            int is_ell = strchr(ell_labels, (int)c) != NULL || (c >= 'A' && c <= 'Z');
            if (size[c] < 0 || (is_ell && size[c] == 1))
                size[c] = v;
            else if (size[c] != v && !(is_ell && v == 1))
                return loom_infer_fail(ctx, INVALID,
                                       "equation '%s': label '%c' has sizes %lld and %lld", eq,
                                       (char)c, (long long)size[c], (long long)v);
        }
    }
    char outt[64];
    if (explicit_out) {
        const char *o = terms[n_terms];
        size_t at = 0, l = strlen(o);
        int oell = ell[n_terms];
        if (oell < 0 && n_ell > 0) {
            /* numpy drops nothing silently: ellipsis dims must appear in the output */
            return loom_infer_fail(ctx, INVALID,
                                   "equation '%s': the output must contain '...'", eq);
        }
        for (int k = 0; k < (oell < 0 ? (int)l : oell); k++)
            outt[at++] = o[k];
        if (oell >= 0) {
            for (uint32_t e = 0; e < n_ell; e++)
                outt[at++] = ell_labels[e];
            for (size_t k = (size_t)oell; k < l; k++)
                outt[at++] = o[k];
        }
        outt[at] = 0;
        for (size_t k = 0; k < at; k++) {
            if (size[(unsigned char)outt[k]] < 0)
                return loom_infer_fail(ctx, INVALID,
                                       "equation '%s': output label '%c' is in no input", eq,
                                       outt[k]);
            if (strchr(outt + k + 1, outt[k]))
                return loom_infer_fail(ctx, INVALID,
                                       "equation '%s': output label '%c' appears twice", eq,
                                       outt[k]);
        }
    } else {
        /* Implicit: ellipsis dims, then labels seen exactly once, in alphabetical order. */
        size_t at = 0;
        for (uint32_t e = 0; e < n_ell; e++)
            outt[at++] = ell_labels[e];
        for (int c = 'A'; c <= 'z'; c++) {
            if (!isalpha(c) || !used[c])
                continue;
            int count = 0;
            for (size_t i = 0; i < n_ops; i++)
                for (const char *q = terms[i]; *q; q++)
                    count += *q == c;
            if (count == 1)
                outt[at++] = (char)c;
        }
        outt[at] = 0;
    }
    size_t orank = strlen(outt);
    if (orank > LOOM_MAX_RANK)
        return loom_infer_fail(ctx, INVALID, "equation '%s': output rank %zu exceeds %d", eq,
                               orank, LOOM_MAX_RANK);
    for (size_t k = 0; k < orank; k++)
        out_dims[k] = size[(unsigned char)outt[k]];
    *out_rank = (uint32_t)orank;
    size_t at = 0;
    canon[0] = 0;
    for (size_t i = 0; i < n_ops; i++)
        at += (size_t)snprintf(canon + at, cap - at, "%s%s", i ? "," : "", full[i]);
    snprintf(canon + at, cap - at, "->%s", outt);
    return LOOM_OK;
}

static loom_status infer_einsum(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"equation", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_STRING};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    const char *eq = loom_infer_get_string(ctx, "equation", NULL);
    if (!eq)
        return loom_infer_fail(ctx, INVALID, "attribute 'equation' is required");
    for (uint32_t i = 0; i < ctx->n_inputs; i++) {
        TRY(loom_ops_require(ctx, i, "Inputs"));
        TRY(loom_ops_check_dtype(ctx, i, "Inputs",
                                 LOOM_DTS(LOOM_DTYPE_F32) | LOOM_DTS(LOOM_DTYPE_F64) |
                                     LOOM_DTS_INDEX));
        TRY(loom_ops_same_dtype(ctx, i, "Inputs", 0));
    }
    char canon[256];
    int64_t dims[LOOM_MAX_RANK];
    uint32_t rank = 0;
    TRY(einsum_parse(ctx, eq, canon, sizeof canon, dims, &rank));
    TRY(loom_infer_set_string(ctx, "equation", canon));
    loom_ops_set_output(ctx, 0, ctx->inputs[0].dtype, rank, dims);
    return loom_ops_finish(ctx);
}

/* A multiply-add per point of the full label space (what a GEMM of the contraction does). */
static void cost_einsum(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_attr *a = loom_node_attr(node, "equation");
    int64_t size[128] = {0};
    int seen[128] = {0};
    double space = 1.0;
    uint32_t op = 0, d = 0;
    for (const char *p = a && a->s ? a->s : ""; *p && *p != '-'; p++) {
        if (*p == ',') {
            op++;
            d = 0;
            continue;
        }
        unsigned c = (unsigned char)*p & 127u;
        if (op < node->n_inputs && d < node->inputs[op].rank &&
            node->inputs[op].dims[d] > size[c])
            size[c] = node->inputs[op].dims[d];
        d++;
        seen[c] = 1;
    }
    for (int c = 0; c < 128; c++)
        if (seen[c])
            space *= (double)size[c];
    cost->flops = 2.0 * space;
}

/* Det: X [*, M, M] -> Y [*]. */
static loom_status infer_det(loom_infer_ctx *ctx)
{
    static const char *const names[] = {NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT};
    TRY(loom_infer_check_attrs(ctx, names, kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS_FLOAT | LOOM_DTS(LOOM_DTYPE_F64)));
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank < 2 || x->dims[x->rank - 1] != x->dims[x->rank - 2])
        return loom_infer_fail(ctx, INVALID, "input 0 (X) must be [*, M, M], square matrices");
    loom_ops_set_output(ctx, 0, x->dtype, x->rank - 2, x->dims);
    return loom_ops_finish(ctx);
}

/* LU factorisation: about 2/3 M^3 per matrix. */
static void cost_det(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *x = &node->inputs[0];
    const double m = (double)x->dims[x->rank - 1];
    cost->flops = loom_ops_numel(&node->outputs[0]) * (2.0 / 3.0) * m * m * m;
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_matmul, LOOM_OP_MATMUL, "MatMul",
             2, 2, 1, 1, infer_matmul, cost_matmul, 0);
LOOM_OPS_DEF(loom_op_def_gemm, LOOM_OP_GEMM, "Gemm", 2, 3, 1, 1, infer_gemm, cost_gemm, 0);
LOOM_OPS_DEF(loom_op_def_einsum, LOOM_OP_EINSUM, "Einsum",
             1, EIN_MAX_OPS, 1, 1, infer_einsum, cost_einsum, 0);
LOOM_OPS_DEF(loom_op_def_det, LOOM_OP_DET, "Det", 1, 1, 1, 1, infer_det, cost_det, 0);
