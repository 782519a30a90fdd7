/*
 * The CPU backend's subgraph claims (backend ABI 1.0): over the graph the host offers
 * (loom_subgraph_desc), the chains the CPU runs as one kernel, and their compilation.
 *
 *  1. Conv / MatMul / Gemm + epilogue, the chains passes/fuse_epilogue.c fuses on CPU-only
 *     plans, with the same rules: in this order after the head, a bias Add of a constant
 *     (per channel for a Conv without B, a row [N] for MatMul, a row for a Gemm without C), a
 *     residual Add of a value of the output's shape, and an activation (Relu, LeakyRelu, Clip
 *     with constant bounds, HardSigmoid, HardSwish, Sigmoid, x * Sigmoid(x), Gelu). Compiled by
 *     building the FusedConv / FusedMatMul / FusedGemm node (graph/ops_fused.c) and preparing it
 *     with the CPU's own kernels: the same code and speed as the pass. A residual Add whose only
 *     reader is a LayerNormalization is left to chain 2.
 *  2. Add + LayerNormalization (skip-layernorm: the sum, its statistics and the normalisation in
 *     one pass over each row; the other addend of the Add is of the output's shape or a row of
 *     the normalised size).
 *  3. LayerNorm as PyTorch exports it before opset 17: ReduceMean, Sub, Pow 2 (or Mul d d),
 *     ReduceMean, Add eps, Sqrt, Div, then optionally Mul gamma and Add beta (constants), over
 *     the last axis: one LayerNorm kernel call.
 *  4. Attention scores: a scale (Mul or Div by a constant scalar) and/or a mask Add (the mask
 *     broadcast to the scores), then Softmax over the last axis: one pass per row.
 * Every value inside a chain but its last must be read only by the chain's nodes and not be an
 * output of the offered graph; claims never overlap (heads are taken in topological order).
 * Estimates are left to the host (negative): it sums its cost of the claimed nodes.
 *
 * The matcher works on the subgraph descriptor alone, so prepare_subgraph runs it again on the
 * claimed subgraph and compiles what it finds.
 */
#include "cpu_claims.h"
#include "cpu_simd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32
#define CC_MAX_NODES 12

/* ---- a view of the offered graph: producers, readers, outputs ------------------------------ */

typedef struct cc_view {
    const loom_subgraph_desc *g;
    uint32_t n_values;
    int32_t *prod;      /* value -> producing node, -1 for the set's inputs */
    uint32_t *slot;     /* value -> output index in its producer */
    uint32_t *out_base; /* node -> value id of its output 0 */
    uint32_t *rd_start; /* readers of value v: rd[rd_start[v] .. rd_start[v + 1]), per slot */
    uint32_t *rd;
    uint8_t *is_out;    /* value is an output of the set */
    uint8_t *taken;     /* node already in a claim */
} cc_view;

static void cc_view_free(cc_view *v)
{
    free(v->prod);
    free(v->slot);
    free(v->out_base);
    free(v->rd_start);
    free(v->rd);
    free(v->is_out);
    free(v->taken);
}

/* Build V over G; 0 on success, -1 when G is malformed or memory runs out (V freed). */
static int cc_view_init(cc_view *v, const loom_subgraph_desc *g)
{
    memset(v, 0, sizeof *v);
    v->g = g;
    if (!g || (g->n_nodes && (!g->nodes || !g->node_inputs)))
        return -1;
    uint64_t nv = g->n_inputs, slots = 0;
    for (uint32_t k = 0; k < g->n_nodes; k++) {
        nv += g->nodes[k].n_outputs;
        slots += g->nodes[k].n_inputs;
    }
    if (nv > 0x7fffffff)
        return -1;
    v->n_values = (uint32_t)nv;
    v->prod = malloc((nv + 1) * sizeof *v->prod);
    v->slot = malloc((nv + 1) * sizeof *v->slot);
    v->out_base = malloc((g->n_nodes + 1) * sizeof *v->out_base);
    v->rd_start = calloc(nv + 2, sizeof *v->rd_start);
    v->rd = malloc((slots + 1) * sizeof *v->rd);
    v->is_out = calloc(nv + 1, 1);
    v->taken = calloc(g->n_nodes + 1, 1);
    if (!v->prod || !v->slot || !v->out_base || !v->rd_start || !v->rd || !v->is_out ||
        !v->taken) {
        cc_view_free(v);
        return -1;
    }
    uint32_t next = g->n_inputs;
    for (uint32_t i = 0; i < g->n_inputs; i++)
        v->prod[i] = -1;
    for (uint32_t k = 0; k < g->n_nodes; k++) {
        const loom_node_desc *n = &g->nodes[k];
        if (n->n_inputs && !g->node_inputs[k])
            goto bad;
        for (uint32_t j = 0; j < n->n_inputs; j++) {
            int32_t x = g->node_inputs[k][j];
            if (x < -1 || (x >= 0 && (uint32_t)x >= next))
                goto bad; /* out of range, or not produced before node k */
            if (x >= 0)
                v->rd_start[x + 1]++;
        }
        v->out_base[k] = next;
        for (uint32_t j = 0; j < n->n_outputs; j++, next++) {
            v->prod[next] = (int32_t)k;
            v->slot[next] = j;
        }
    }
    for (uint32_t i = 0; i < v->n_values; i++)
        v->rd_start[i + 1] += v->rd_start[i];
    {
        uint32_t *fill = malloc((nv + 1) * sizeof *fill);
        if (!fill)
            goto bad;
        memcpy(fill, v->rd_start, nv * sizeof *fill);
        for (uint32_t k = 0; k < g->n_nodes; k++)
            for (uint32_t j = 0; j < g->nodes[k].n_inputs; j++) {
                int32_t x = g->node_inputs[k][j];
                if (x >= 0)
                    v->rd[fill[x]++] = k;
            }
        free(fill);
    }
    for (uint32_t o = 0; o < g->n_outputs; o++) {
        if (!g->output_values || g->output_values[o] >= v->n_values)
            goto bad;
        v->is_out[g->output_values[o]] = 1;
    }
    return 0;
bad:
    cc_view_free(v);
    return -1;
}

static const loom_tensor_desc *cc_desc(const cc_view *v, int32_t x)
{
    if (x < 0 || (uint32_t)x >= v->n_values)
        return NULL;
    if ((uint32_t)x < v->g->n_inputs)
        return &v->g->inputs[x];
    return &v->g->nodes[v->prod[x]].outputs[v->slot[x]];
}

/* The constant data of value X (an input of the set that is a constant), else NULL. */
static const void *cc_const(const cc_view *v, int32_t x)
{
    if (x < 0 || (uint32_t)x >= v->g->n_inputs || !v->g->input_constants)
        return NULL;
    return v->g->input_constants[x];
}

/* A constant f32 scalar (one element) of value X into *OUT; 0 when X is not one. */
static int cc_const_scalar(const cc_view *v, int32_t x, float *out)
{
    const void *p = cc_const(v, x);
    const loom_tensor_desc *d = cc_desc(v, x);
    if (!p || d->dtype != F32 || loom_tensor_desc_numel(d) != 1)
        return 0;
    memcpy(out, p, sizeof *out);
    return 1;
}

static int32_t cc_in(const cc_view *v, uint32_t node, uint32_t j)
{
    return j < v->g->nodes[node].n_inputs ? v->g->node_inputs[node][j] : -1;
}

static int32_t cc_out(const cc_view *v, uint32_t node)
{
    return (int32_t)v->out_base[node];
}

static const loom_node_desc *cc_node(const cc_view *v, uint32_t node)
{
    return &v->g->nodes[node];
}

/* The one node reading X through one input slot, or -1 (none, several, or X is an output). */
static int32_t cc_only_reader(const cc_view *v, int32_t x)
{
    if (x < 0 || v->is_out[x] || v->rd_start[x + 1] - v->rd_start[x] != 1)
        return -1;
    return (int32_t)v->rd[v->rd_start[x]];
}

/* The distinct nodes reading X into OUT (at most MAX); returns their number (may exceed MAX). */
static uint32_t cc_reader_nodes(const cc_view *v, int32_t x, uint32_t *out, uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t r = v->rd_start[x]; r < v->rd_start[x + 1]; r++) {
        uint32_t node = v->rd[r], seen = 0;
        for (uint32_t i = 0; i < n && i < max; i++)
            seen |= out[i] == node;
        if (seen)
            continue;
        if (n < max)
            out[n] = node;
        n++;
    }
    return n;
}

static int cc_same_desc(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    return a && b && a->dtype == b->dtype && a->rank == b->rank &&
           memcmp(a->dims, b->dims, a->rank * sizeof a->dims[0]) == 0;
}

/* The other input of a two-input Add NODE one of whose inputs is X, or -1. */
static int32_t cc_add_other(const cc_view *v, uint32_t node, int32_t x)
{
    const loom_node_desc *n = cc_node(v, node);
    if (n->op != LOOM_OP_ADD || n->n_inputs != 2)
        return -1;
    int32_t a = cc_in(v, node, 0), b = cc_in(v, node, 1);
    if (a == x && b != x)
        return b;
    if (b == x && a != x)
        return a;
    return -1;
}

/* ---- the chains ------------------------------------------------------------------------------ */

typedef enum cc_kind { CC_GEMM = 1, CC_ADD_LN, CC_LN_DECOMP, CC_SOFTMAX } cc_kind;

typedef struct cc_chain {
    cc_kind kind;
    uint32_t nodes[CC_MAX_NODES];
    uint32_t n;
    int32_t out;         /* the value the chain produces */
    char ops[96];        /* "MatMul+Add+Relu" */
    /* CC_GEMM */
    uint32_t head;
    int32_t bias, z;     /* values, -1 when absent */
    const char *act;
    float alpha, beta;
    /* CC_ADD_LN, CC_LN_DECOMP: X (+ R), then scale and bias (-1: absent) */
    int32_t x, r, scale, lbias;
    float eps;
    uint32_t axis;       /* first normalised axis */
    /* CC_SOFTMAX: X (* or / c) (+ mask) */
    int32_t mask;
    int has_scale, div;
    float c;
} cc_chain;

static void cc_push(cc_chain *c, const cc_view *v, uint32_t node)
{
    if (c->n < CC_MAX_NODES)
        c->nodes[c->n++] = node;
    size_t l = strlen(c->ops);
    snprintf(c->ops + l, sizeof c->ops - l, "%s%s", l ? "+" : "",
             cc_node(v, node)->op_name ? cc_node(v, node)->op_name : "?");
}

/* fuse_epilogue's bias_fits on the descriptor. */
static int cc_bias_fits(const cc_view *v, uint32_t head, int32_t bias)
{
    const loom_node_desc *h = cc_node(v, head);
    const loom_tensor_desc *y = &h->outputs[0], *c = cc_desc(v, bias);
    int64_t numel = loom_tensor_desc_numel(c);
    if (h->op == LOOM_OP_CONV) {
        if (cc_in(v, head, 2) >= 0)
            return 0;
        if (numel != y->dims[1] || c->rank > y->rank || c->rank < 1)
            return 0;
        int64_t ch_axis = (int64_t)c->rank - (int64_t)(y->rank - 1);
        if (ch_axis < 0)
            return 0;
        for (uint32_t i = 0; i < c->rank; i++)
            if ((int64_t)i != ch_axis && c->dims[i] != 1)
                return 0;
        return c->dims[ch_axis] == y->dims[1];
    }
    int64_t n = y->dims[y->rank - 1];
    if (c->rank < 1 || numel != n || c->dims[c->rank - 1] != n || c->rank > y->rank)
        return 0;
    if (h->op == LOOM_OP_GEMM) {
        if (cc_in(v, head, 2) >= 0)
            return 0;
        return loom_node_attr_float(h, "beta", 1.0f) == 1.0f;
    }
    return 1;
}

/* fuse_epilogue's activation_of: NODE applied to X as (name, alpha, beta) in C; 0 if none. */
static int cc_activation(const cc_view *v, uint32_t node, int32_t x, cc_chain *c)
{
    const loom_node_desc *n = cc_node(v, node);
    if (n->n_inputs < 1 || cc_in(v, node, 0) != x)
        return 0;
    c->alpha = c->beta = 0.0f;
    switch (n->op) {
    case LOOM_OP_RELU:
        c->act = "Relu";
        return 1;
    case LOOM_OP_LEAKY_RELU:
        c->act = "LeakyRelu";
        c->alpha = loom_node_attr_float(n, "alpha", 0.01f);
        return 1;
    case LOOM_OP_HARD_SIGMOID:
        c->act = "HardSigmoid";
        c->alpha = loom_node_attr_float(n, "alpha", 0.2f);
        c->beta = loom_node_attr_float(n, "beta", 0.5f);
        return 1;
    case LOOM_OP_HARD_SWISH:
        c->act = "HardSwish";
        return 1;
    case LOOM_OP_GELU: {
        const loom_attr *a = loom_node_attr(n, "approximate");
        if (a && a->kind == LOOM_ATTR_STRING && a->s && strcmp(a->s, "tanh") == 0)
            c->act = "GeluTanh";
        else if (!a || a->kind != LOOM_ATTR_STRING || !a->s || strcmp(a->s, "none") == 0)
            c->act = "Gelu";
        else
            return 0;
        return 1;
    }
    case LOOM_OP_CLIP: {
        float lo = -INFINITY, hi = INFINITY;
        for (uint32_t k = 1; k < n->n_inputs && k < 3; k++) {
            int32_t b = cc_in(v, node, k);
            if (b < 0)
                continue;
            if (!cc_const_scalar(v, b, k == 1 ? &lo : &hi))
                return 0;
        }
        c->act = "Clip";
        c->alpha = lo;
        c->beta = hi;
        return 1;
    }
    case LOOM_OP_SIGMOID:
        c->act = "Sigmoid";
        return 1;
    default:
        return 0;
    }
}

/* Chain 1 from head H (fuse_epilogue's plan_chain). */
static int cc_match_gemm(const cc_view *v, uint32_t h, cc_chain *c)
{
    const loom_node_desc *head = cc_node(v, h);
    if (!(head->op == LOOM_OP_CONV || head->op == LOOM_OP_MATMUL || head->op == LOOM_OP_GEMM) ||
        head->n_outputs != 1 || head->n_inputs < 2)
        return 0;
    int32_t cur = cc_out(v, h);
    const loom_tensor_desc *y = &head->outputs[0];
    if (y->dtype != F32 || y->rank < 1)
        return 0;
    if (head->op == LOOM_OP_CONV && (y->rank < 3 || y->rank > 4))
        return 0;
    if (head->op == LOOM_OP_MATMUL && (head->inputs[0].rank < 2 || head->inputs[1].rank != 2))
        return 0;
    c->kind = CC_GEMM;
    c->head = h;
    c->bias = c->z = -1;
    c->act = "";
    cc_push(c, v, h);
    int step = 0;
    for (;;) {
        int32_t r = cc_only_reader(v, cur);
        /* x * Sigmoid(x): two readers of cur, the Sigmoid's only reader the Mul. */
        if (r < 0 && step < 3 && !v->is_out[cur] && v->rd_start[cur + 1] - v->rd_start[cur] == 2) {
            uint32_t rn[2];
            if (cc_reader_nodes(v, cur, rn, 2) != 2)
                break;
            int32_t s = -1, m = -1;
            for (int i = 0; i < 2; i++) {
                if (cc_node(v, rn[i])->op != LOOM_OP_SIGMOID || cc_in(v, rn[i], 0) != cur ||
                    v->taken[rn[i]])
                    continue;
                int32_t mm = cc_only_reader(v, cc_out(v, rn[i]));
                if (mm != (int32_t)rn[1 - i] || cc_node(v, (uint32_t)mm)->op != LOOM_OP_MUL ||
                    cc_node(v, (uint32_t)mm)->n_inputs != 2)
                    continue;
                int32_t a = cc_in(v, (uint32_t)mm, 0), b = cc_in(v, (uint32_t)mm, 1);
                int32_t so = cc_out(v, rn[i]);
                if ((a == cur && b == so) || (b == cur && a == so)) {
                    s = (int32_t)rn[i];
                    m = mm;
                }
            }
            if (m < 0 || v->taken[m] || !cc_same_desc(&cc_node(v, (uint32_t)m)->outputs[0], y))
                break;
            c->act = "SiLU";
            c->alpha = c->beta = 0.0f;
            cc_push(c, v, (uint32_t)s);
            cc_push(c, v, (uint32_t)m);
            cur = cc_out(v, (uint32_t)m);
            break;
        }
        if (r < 0 || v->taken[r])
            break;
        const loom_node_desc *n = cc_node(v, (uint32_t)r);
        if (n->n_outputs != 1 || !cc_same_desc(&n->outputs[0], y))
            break;
        int32_t other = cc_add_other(v, (uint32_t)r, cur);
        const loom_tensor_desc *od = cc_desc(v, other);
        if (step < 1 && other >= 0 && cc_const(v, other) && od->dtype == F32 &&
            cc_bias_fits(v, h, other)) {
            c->bias = other;
            step = 1;
        } else if (step < 2 && other >= 0 && cc_same_desc(od, y)) {
            /* Left to Add + LayerNormalization when that is what reads the sum. */
            int32_t after = cc_only_reader(v, cc_out(v, (uint32_t)r));
            if (after >= 0 && cc_node(v, (uint32_t)after)->op == LOOM_OP_LAYER_NORMALIZATION)
                break;
            c->z = other;
            step = 2;
        } else if (step < 3 && cc_activation(v, (uint32_t)r, cur, c)) {
            step = 3;
        } else {
            break;
        }
        cc_push(c, v, (uint32_t)r);
        cur = cc_out(v, (uint32_t)r);
        if (step == 3)
            break;
    }
    c->out = cur;
    return c->n > 1;
}

/* Whether SCALE (or LayerNorm's B) of N elements applies per normalised element: its numel is
 * N and its dims, right-aligned, are X's normalised dims (leading 1s allowed). */
static int cc_row_param(const cc_view *v, int32_t p, const loom_tensor_desc *x, uint32_t axis)
{
    const loom_tensor_desc *d = cc_desc(v, p);
    if (!d || d->dtype != F32 || d->rank > x->rank)
        return 0;
    for (uint32_t i = 0; i < d->rank; i++) {
        uint32_t xd = x->rank - d->rank + i;
        if (xd < axis ? d->dims[i] != 1 : d->dims[i] != x->dims[xd])
            return 0;
    }
    return 1;
}

/* Chain 2: Add H + LayerNormalization. */
static int cc_match_add_ln(const cc_view *v, uint32_t h, cc_chain *c)
{
    const loom_node_desc *add = cc_node(v, h);
    if (add->op != LOOM_OP_ADD || add->n_inputs != 2 || add->n_outputs != 1 ||
        add->outputs[0].dtype != F32)
        return 0;
    int32_t s = cc_out(v, h), ln = cc_only_reader(v, s);
    if (ln < 0 || v->taken[ln])
        return 0;
    const loom_node_desc *n = cc_node(v, (uint32_t)ln);
    if (n->op != LOOM_OP_LAYER_NORMALIZATION || n->n_outputs != 1 || cc_in(v, (uint32_t)ln, 0) != s)
        return 0;
    const loom_tensor_desc *y = &add->outputs[0];
    int64_t axis = loom_node_attr_int(n, "axis", -1);
    if (y->rank < 1 || axis < 0 || axis >= (int64_t)y->rank || !cc_same_desc(&n->outputs[0], y))
        return 0;
    int32_t a = cc_in(v, h, 0), b = cc_in(v, h, 1);
    /* X is the addend of the output's shape; R the other (same shape or a normalised row). */
    if (!cc_same_desc(cc_desc(v, a), y)) {
        int32_t t = a;
        a = b;
        b = t;
    }
    if (!cc_same_desc(cc_desc(v, a), y) ||
        !(cc_same_desc(cc_desc(v, b), y) || cc_row_param(v, b, y, (uint32_t)axis)))
        return 0;
    int32_t sc = cc_in(v, (uint32_t)ln, 1), bi = cc_in(v, (uint32_t)ln, 2);
    if (sc < 0 || !cc_row_param(v, sc, y, (uint32_t)axis) ||
        (bi >= 0 && !cc_row_param(v, bi, y, (uint32_t)axis)))
        return 0;
    c->kind = CC_ADD_LN;
    c->x = a;
    c->r = b;
    c->scale = sc;
    c->lbias = bi;
    c->axis = (uint32_t)axis;
    c->eps = loom_node_attr_float(n, "epsilon", 1e-5f);
    cc_push(c, v, h);
    cc_push(c, v, (uint32_t)ln);
    c->out = cc_out(v, (uint32_t)ln);
    return 1;
}

/* Whether reduce NODE is a ReduceMean of X over its last axis only, keeping dims. */
static int cc_mean_last(const cc_view *v, uint32_t node, int32_t x)
{
    const loom_node_desc *n = cc_node(v, node);
    const loom_tensor_desc *d = cc_desc(v, x);
    if (n->op != LOOM_OP_REDUCE_MEAN || cc_in(v, node, 0) != x || n->n_outputs != 1 || !d ||
        d->rank < 1 || d->dtype != F32)
        return 0;
    const loom_attr *ax = loom_node_attr(n, "axes");
    if (!ax || ax->kind != LOOM_ATTR_INTS || ax->count != 1 || ax->ints[0] != (int64_t)d->rank - 1)
        return 0;
    return loom_node_attr_int(n, "keepdims", 1) == 1;
}

/* The single reader of X when it is an op OP node, else -1. */
static int32_t cc_next(const cc_view *v, int32_t x, loom_op_id op)
{
    int32_t r = cc_only_reader(v, x);
    return r >= 0 && !v->taken[r] && cc_node(v, (uint32_t)r)->op == op &&
                   cc_node(v, (uint32_t)r)->n_outputs == 1
               ? r
               : -1;
}

/* Chain 3: the decomposed LayerNorm from ReduceMean H. */
static int cc_match_ln_decomp(const cc_view *v, uint32_t h, cc_chain *c)
{
    const loom_node_desc *r1 = cc_node(v, h);
    if (r1->op != LOOM_OP_REDUCE_MEAN)
        return 0;
    int32_t x = cc_in(v, h, 0);
    if (!cc_mean_last(v, h, x))
        return 0;
    const loom_tensor_desc *xd = cc_desc(v, x);
    int32_t sub = cc_next(v, cc_out(v, h), LOOM_OP_SUB);
    if (sub < 0 || cc_in(v, (uint32_t)sub, 0) != x || cc_in(v, (uint32_t)sub, 1) != cc_out(v, h) ||
        !cc_same_desc(&cc_node(v, (uint32_t)sub)->outputs[0], xd))
        return 0;
    int32_t d = cc_out(v, (uint32_t)sub);
    uint32_t rn[2];
    if (v->is_out[d] || cc_reader_nodes(v, d, rn, 2) != 2)
        return 0;
    int32_t sq = -1, div = -1;
    for (int i = 0; i < 2; i++) {
        const loom_node_desc *n = cc_node(v, rn[i]);
        float p;
        if (n->op == LOOM_OP_POW && cc_in(v, rn[i], 0) == d &&
            cc_const_scalar(v, cc_in(v, rn[i], 1), &p) && p == 2.0f)
            sq = (int32_t)rn[i];
        else if (n->op == LOOM_OP_MUL && cc_in(v, rn[i], 0) == d && cc_in(v, rn[i], 1) == d)
            sq = (int32_t)rn[i];
        else if (n->op == LOOM_OP_DIV && cc_in(v, rn[i], 0) == d)
            div = (int32_t)rn[i];
    }
    /* d's reader slots: the square's one or two and the Div's one. */
    uint32_t slots = v->rd_start[d + 1] - v->rd_start[d];
    if (sq < 0 || div < 0 || v->taken[sq] || v->taken[div] ||
        slots != (cc_node(v, (uint32_t)sq)->op == LOOM_OP_MUL ? 3u : 2u))
        return 0;
    int32_t r2 = cc_only_reader(v, cc_out(v, (uint32_t)sq));
    if (r2 < 0 || v->taken[r2] || !cc_mean_last(v, (uint32_t)r2, cc_out(v, (uint32_t)sq)))
        return 0;
    int32_t add = cc_next(v, cc_out(v, (uint32_t)r2), LOOM_OP_ADD);
    float eps;
    if (add < 0 || cc_add_other(v, (uint32_t)add, cc_out(v, (uint32_t)r2)) < 0 ||
        !cc_const_scalar(v, cc_add_other(v, (uint32_t)add, cc_out(v, (uint32_t)r2)), &eps))
        return 0;
    int32_t sqrt_n = cc_next(v, cc_out(v, (uint32_t)add), LOOM_OP_SQRT);
    if (sqrt_n < 0 || cc_only_reader(v, cc_out(v, (uint32_t)sqrt_n)) != div ||
        cc_in(v, (uint32_t)div, 1) != cc_out(v, (uint32_t)sqrt_n) ||
        !cc_same_desc(&cc_node(v, (uint32_t)div)->outputs[0], xd))
        return 0;
    c->kind = CC_LN_DECOMP;
    c->x = x;
    c->r = -1;
    c->scale = c->lbias = -1;
    c->eps = eps;
    c->axis = xd->rank - 1;
    uint32_t seq[7] = {h, (uint32_t)sub, (uint32_t)sq, (uint32_t)r2, (uint32_t)add,
                       (uint32_t)sqrt_n, (uint32_t)div};
    for (int i = 0; i < 7; i++)
        cc_push(c, v, seq[i]);
    int32_t cur = cc_out(v, (uint32_t)div);
    /* Optional Mul gamma, then Add beta: constants of the normalised row. */
    int32_t m = cc_next(v, cur, LOOM_OP_MUL);
    if (m >= 0) {
        int32_t a = cc_in(v, (uint32_t)m, 0), b = cc_in(v, (uint32_t)m, 1);
        int32_t g = a == cur ? b : b == cur ? a : -1;
        if (g >= 0 && g != cur && cc_const(v, g) && cc_row_param(v, g, xd, c->axis) &&
            cc_same_desc(&cc_node(v, (uint32_t)m)->outputs[0], xd)) {
            c->scale = g;
            cc_push(c, v, (uint32_t)m);
            cur = cc_out(v, (uint32_t)m);
        }
    }
    int32_t ab = cc_next(v, cur, LOOM_OP_ADD);
    if (ab >= 0) {
        int32_t b = cc_add_other(v, (uint32_t)ab, cur);
        if (b >= 0 && cc_const(v, b) && cc_row_param(v, b, xd, c->axis) &&
            cc_same_desc(&cc_node(v, (uint32_t)ab)->outputs[0], xd)) {
            c->lbias = b;
            cc_push(c, v, (uint32_t)ab);
            cur = cc_out(v, (uint32_t)ab);
        }
    }
    c->out = cur;
    return 1;
}

/* Whether MASK (dims right-aligned) broadcasts to Y. */
static int cc_broadcasts(const loom_tensor_desc *mask, const loom_tensor_desc *y)
{
    if (!mask || mask->dtype != y->dtype || mask->rank > y->rank)
        return 0;
    for (uint32_t i = 0; i < mask->rank; i++) {
        int64_t md = mask->dims[i], yd = y->dims[y->rank - mask->rank + i];
        if (md != 1 && md != yd)
            return 0;
    }
    return 1;
}

/* Chain 4: [Mul/Div by a constant scalar] [Add mask] Softmax over the last axis, from H. */
static int cc_match_softmax(const cc_view *v, uint32_t h, cc_chain *c)
{
    const loom_node_desc *n = cc_node(v, h);
    if (n->n_outputs != 1 || n->outputs[0].dtype != F32 || n->outputs[0].rank < 1 ||
        n->n_inputs != 2)
        return 0;
    const loom_tensor_desc *y = &n->outputs[0];
    c->kind = CC_SOFTMAX;
    c->mask = -1;
    c->c = 1.0f;
    uint32_t node = h;
    int32_t cur;
    if (n->op == LOOM_OP_MUL || n->op == LOOM_OP_DIV) {
        int32_t a = cc_in(v, h, 0), b = cc_in(v, h, 1);
        if (cc_const_scalar(v, b, &c->c) && cc_same_desc(cc_desc(v, a), y)) {
            c->x = a;
        } else if (n->op == LOOM_OP_MUL && cc_const_scalar(v, a, &c->c) &&
                   cc_same_desc(cc_desc(v, b), y)) {
            c->x = b;
        } else {
            return 0;
        }
        c->has_scale = 1;
        c->div = n->op == LOOM_OP_DIV;
        cc_push(c, v, h);
        cur = cc_out(v, h);
        int32_t r = cc_only_reader(v, cur);
        if (r < 0 || v->taken[r])
            return 0;
        node = (uint32_t)r;
    } else if (n->op != LOOM_OP_ADD) {
        return 0;
    } else {
        cur = -1;
    }
    const loom_node_desc *m = cc_node(v, node);
    if (m->op == LOOM_OP_ADD && m->n_inputs == 2 && m->n_outputs == 1 &&
        cc_same_desc(&m->outputs[0], y)) {
        int32_t a = cc_in(v, node, 0), b = cc_in(v, node, 1);
        if (cur < 0) { /* the Add is the head: X is the addend of the output's shape */
            if (!cc_same_desc(cc_desc(v, a), y)) {
                int32_t t = a;
                a = b;
                b = t;
            }
            if (!cc_same_desc(cc_desc(v, a), y))
                return 0;
            c->x = a;
        } else if (b == cur) {
            b = a;
        } else if (a != cur) {
            return 0;
        }
        if (b < 0 || b == cur || !cc_broadcasts(cc_desc(v, b), y))
            return 0;
        c->mask = b;
        cc_push(c, v, node);
        cur = cc_out(v, node);
        int32_t r = cc_only_reader(v, cur);
        if (r < 0 || v->taken[r])
            return 0;
        node = (uint32_t)r;
    } else if (cur < 0) {
        return 0;
    }
    const loom_node_desc *sm = cc_node(v, node);
    if (sm->op != LOOM_OP_SOFTMAX || sm->n_outputs != 1 || cc_in(v, node, 0) != cur ||
        loom_node_attr_int(sm, "axis", -1) != (int64_t)y->rank - 1 ||
        !cc_same_desc(&sm->outputs[0], y))
        return 0;
    cc_push(c, v, node);
    c->out = cc_out(v, node);
    return 1;
}

/* ---- the fused Conv/MatMul/Gemm node of a CC_GEMM chain -------------------------------------- */

#define CC_MAX_ATTRS 48

typedef struct cc_fused {
    loom_node_desc node;
    loom_tensor_desc in[4];
    const void *consts[4];
    int32_t map[4]; /* the set's input (value) each input of the node reads; -1 absent */
    loom_attr attrs[CC_MAX_ATTRS];
} cc_fused;

/* The FusedConv/FusedMatMul/FusedGemm node of chain C into F; 0 when it cannot be built. */
static int cc_build_fused(const cc_view *v, const cc_chain *c, cc_fused *f)
{
    const loom_node_desc *h = cc_node(v, c->head);
    memset(f, 0, sizeof *f);
    if (h->n_attrs + 4 > CC_MAX_ATTRS)
        return 0;
    f->node = *h;
    f->node.abi_version = LOOM_ABI_VERSION;
    f->node.struct_size = sizeof f->node;
    f->node.input_absmax = NULL;
    for (int j = 0; j < 4; j++)
        f->map[j] = -1;
    uint32_t n_base = h->op == LOOM_OP_MATMUL ? 2 : (h->n_inputs < 3 ? h->n_inputs : 3);
    for (uint32_t j = 0; j < n_base; j++) {
        f->map[j] = cc_in(v, c->head, j);
        if (f->map[j] >= 0)
            f->in[j] = *cc_desc(v, f->map[j]);
    }
    if (c->bias >= 0) {
        f->map[2] = c->bias;
        f->in[2] = *cc_desc(v, c->bias);
        if (h->op != LOOM_OP_GEMM) { /* Conv's B [M], MatMul's bias [N]: the same data, rank 1 */
            int64_t numel = loom_tensor_desc_numel(&f->in[2]);
            memset(f->in[2].dims, 0, sizeof f->in[2].dims);
            f->in[2].rank = 1;
            f->in[2].dims[0] = numel;
        }
    }
    uint32_t n_in = n_base;
    if (f->map[2] >= 0)
        n_in = 3;
    if (c->z >= 0) {
        f->map[3] = c->z;
        f->in[3] = *cc_desc(v, c->z);
        n_in = 4;
    }
    for (uint32_t j = 0; j < n_in; j++) {
        if (f->map[j] < 0) {
            f->in[j].dtype = LOOM_DTYPE_UNDEFINED;
            f->in[j].rank = 0;
        } else {
            f->consts[j] = cc_const(v, f->map[j]);
        }
    }
    f->node.n_inputs = n_in;
    f->node.inputs = f->in;
    f->node.input_constants = f->consts;
    f->node.n_outputs = 1;
    f->node.outputs = &cc_node(v, c->nodes[c->n - 1])->outputs[0];
    f->node.op = h->op == LOOM_OP_CONV     ? LOOM_OP_FUSED_CONV
                 : h->op == LOOM_OP_MATMUL ? LOOM_OP_FUSED_MAT_MUL
                                           : LOOM_OP_FUSED_GEMM;
    f->node.op_name = h->op == LOOM_OP_CONV     ? "FusedConv"
                      : h->op == LOOM_OP_MATMUL ? "FusedMatMul"
                                                : "FusedGemm";
    if (h->n_attrs)
        memcpy(f->attrs, h->attrs, h->n_attrs * sizeof *f->attrs);
    uint32_t na = h->n_attrs;
    f->attrs[na++] = (loom_attr){.name = "activation", .kind = LOOM_ATTR_STRING, .s = c->act};
    f->attrs[na++] = (loom_attr){.name = "activation_alpha", .kind = LOOM_ATTR_FLOAT,
                                 .f = c->alpha};
    f->attrs[na++] = (loom_attr){.name = "activation_beta", .kind = LOOM_ATTR_FLOAT, .f = c->beta};
    f->attrs[na++] = (loom_attr){.name = "fused_ops", .kind = LOOM_ATTR_STRING, .s = c->ops};
    f->node.n_attrs = na;
    f->node.attrs = f->attrs;
    return 1;
}

/* ---- matching over a graph ------------------------------------------------------------------- */

/* Whether every value the chain's nodes produce, but its last, is read only by them and is not
 * an output of the set. */
static int cc_internal_ok(const cc_view *v, const cc_chain *c)
{
    for (uint32_t i = 0; i < c->n; i++) {
        const loom_node_desc *n = cc_node(v, c->nodes[i]);
        for (uint32_t j = 0; j < n->n_outputs; j++) {
            int32_t x = cc_out(v, c->nodes[i]) + (int32_t)j;
            if (x == c->out)
                continue;
            if (v->is_out[x])
                return 0;
            for (uint32_t r = v->rd_start[x]; r < v->rd_start[x + 1]; r++) {
                int in = 0;
                for (uint32_t k = 0; k < c->n && !in; k++)
                    in = c->nodes[k] == v->rd[r];
                if (!in)
                    return 0;
            }
        }
    }
    return 1;
}

/* Whether the CPU runs every node of C, and for CC_GEMM the fused node. */
static int cc_cpu_runs(const cpu_op_entry *ops, const cc_view *v, const cc_chain *c)
{
    char why[256];
    for (uint32_t i = 0; i < c->n; i++) {
        const loom_node_desc *n = cc_node(v, c->nodes[i]);
        if ((unsigned)n->op >= CPU_OP_TABLE_SIZE || !ops[n->op].prepare ||
            (ops[n->op].supports && !ops[n->op].supports(n, why, sizeof why)))
            return 0;
    }
    if (c->kind == CC_GEMM) {
        cc_fused f;
        if (!cc_build_fused(v, c, &f))
            return 0;
        const cpu_op_entry *e = &ops[f.node.op];
        return e->prepare && (!e->supports || e->supports(&f.node, why, sizeof why));
    }
    return 1;
}

/* The chain that starts at node H, if any: 1 with C filled. */
static int cc_match_at(const cpu_op_entry *ops, const cc_view *v, uint32_t h, cc_chain *c)
{
    int (*const matchers[])(const cc_view *, uint32_t, cc_chain *) = {
        cc_match_gemm, cc_match_add_ln, cc_match_ln_decomp, cc_match_softmax};
    if (v->taken[h])
        return 0;
    for (size_t m = 0; m < sizeof matchers / sizeof matchers[0]; m++) {
        memset(c, 0, sizeof *c);
        c->x = c->r = c->scale = c->lbias = c->mask = c->bias = c->z = -1;
        if (!matchers[m](v, h, c) || c->n < 2 || c->n > CC_MAX_NODES)
            continue;
        int free_nodes = 1;
        for (uint32_t i = 0; i < c->n; i++)
            free_nodes &= !v->taken[c->nodes[i]];
        if (free_nodes && cc_internal_ok(v, c) && cc_cpu_runs(ops, v, c))
            return 1;
    }
    return 0;
}

uint32_t cpu_claims_find(const cpu_op_entry *ops, const loom_subgraph_desc *graph,
                         uint32_t *nodes, uint32_t max_nodes, loom_claim *claims,
                         uint32_t max_claims)
{
    cc_view v;
    if (!ops || !nodes || !claims || cc_view_init(&v, graph) != 0)
        return 0;
    uint32_t n_claims = 0, used = 0;
    for (uint32_t h = 0; h < graph->n_nodes && n_claims < max_claims; h++) {
        cc_chain c;
        if (!cc_match_at(ops, &v, h, &c) || used + c.n > max_nodes)
            continue;
        loom_claim *cl = &claims[n_claims++];
        memset(cl, 0, sizeof *cl);
        cl->first_node = used;
        cl->node_count = c.n;
        cl->estimate_s = -1.0; /* the host sums its node estimates */
        snprintf(cl->label, sizeof cl->label, "%.63s", c.ops);
        for (uint32_t i = 0; i < c.n; i++) {
            nodes[used++] = c.nodes[i];
            v.taken[c.nodes[i]] = 1;
        }
    }
    cc_view_free(&v);
    return n_claims;
}

/* ---- compiled chains ---------------------------------------------------------------------- */

static void cc_inner_free(cpu_kernel *k)
{
    if (k->free_params)
        k->free_params(k->params);
    else
        free(k->params);
    free(k->in);
    free(k->out);
}

/* CC_GEMM: the fused node's kernel, its inputs picked from the set's. */
typedef struct cc_gemm_params {
    cpu_kernel inner;
    int32_t map[4];
    uint32_t n_in;
} cc_gemm_params;

static loom_status cc_gemm_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                               char *err, size_t err_len)
{
    const cc_gemm_params *p = k->params;
    const void *ins[4] = {NULL, NULL, NULL, NULL};
    for (uint32_t j = 0; j < p->n_in; j++)
        ins[j] = p->map[j] >= 0 ? args->inputs[p->map[j]] : NULL;
    loom_exec_args a = {sizeof a, ins, args->outputs, args->scratch};
    return p->inner.run(&p->inner, &a, pool, err, err_len);
}

static void cc_gemm_free(void *params)
{
    cc_gemm_params *p = params;
    if (!p)
        return;
    cc_inner_free(&p->inner);
    free(p);
}

/* CC_ADD_LN, CC_LN_DECOMP: Y = LayerNorm(X [+ R]) over rows of N, Scale and B per element. */
typedef struct cc_ln_params {
    int64_t rows, n;
    float eps;
    int32_t x, r, scale, bias; /* the set's inputs; r, scale, bias -1 when absent */
    int r_row;                 /* R is one row of N repeated (else of X's shape) */
} cc_ln_params;

typedef struct cc_ln_job {
    const cc_ln_params *p;
    const float *x, *r, *g, *b;
    float *y;
} cc_ln_job;

CPU_CLONES
static void cc_add_row(float *restrict y, const float *restrict a, const float *restrict b,
                       size_t n)
{
    CPU_LOOP(n, y[i] = a[i] + b[i];);
}

/* Y = (X - MEAN) * INV * G + B (G, B may be NULL). Two versions, in place and not, so that
 * each loop has no aliasing for the vectoriser to fear. */
#define CC_LN_APPLY(X)                                                                            \
    do {                                                                                          \
        if (g && b)                                                                               \
            CPU_LOOP(n, y[i] = (X[i] - mean) * inv * g[i] + b[i];);                               \
        else if (g)                                                                               \
            CPU_LOOP(n, y[i] = (X[i] - mean) * inv * g[i];);                                      \
        else if (b)                                                                               \
            CPU_LOOP(n, y[i] = (X[i] - mean) * inv + b[i];);                                      \
        else                                                                                      \
            CPU_LOOP(n, y[i] = (X[i] - mean) * inv;);                                             \
    } while (0)

CPU_CLONES
static void cc_ln_apply(float *restrict y, const float *restrict x, size_t n,
                        const float *restrict g, const float *restrict b, float mean, float inv)
{
    CC_LN_APPLY(x);
}

CPU_CLONES
static void cc_ln_apply_inplace(float *restrict y, size_t n, const float *restrict g,
                                const float *restrict b, float mean, float inv)
{
    CC_LN_APPLY(y);
}

static void cc_ln_rows(void *arg, size_t begin, size_t end)
{
    const cc_ln_job *j = arg;
    const size_t n = (size_t)j->p->n;
    for (size_t row = begin; row < end; row++) {
        float *y = j->y + row * n;
        const float *x = j->x + row * n;
        if (j->r) { /* the sum goes to Y, and is normalised there while still in cache */
            cc_add_row(y, x, j->p->r_row ? j->r : j->r + row * n, n);
            x = y;
        }
        float mean, inv;
        cpu_layernorm_stats(x, n, j->p->eps, &mean, &inv);
        if (x == y)
            cc_ln_apply_inplace(y, n, j->g, j->b, mean, inv);
        else
            cc_ln_apply(y, x, n, j->g, j->b, mean, inv);
    }
}

static loom_status cc_ln_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                             char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const cc_ln_params *p = k->params;
    if (p->rows == 0 || p->n == 0)
        return LOOM_OK;
    cc_ln_job j = {p, args->inputs[p->x], p->r >= 0 ? args->inputs[p->r] : NULL,
                   p->scale >= 0 ? args->inputs[p->scale] : NULL,
                   p->bias >= 0 ? args->inputs[p->bias] : NULL, args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->rows, cpu_grain_items(p->n * 4, CPU_GRAIN), cc_ln_rows, &j);
    return LOOM_OK;
}

/* CC_SOFTMAX: Y = Softmax(X * c (or / c) + mask) over rows of LEN. */
typedef struct cc_sm_params {
    int64_t rows, len;
    int32_t x, mask;
    int has_scale, div;
    float c;
    uint32_t orank;                    /* the outer (row) dims of Y */
    int64_t odims[LOOM_MAX_RANK];
    int64_t mstride[LOOM_MAX_RANK];    /* the mask's element strides over them (0: repeat) */
    int64_t mlast;                     /* its stride along the row: 1, or 0 when broadcast */
} cc_sm_params;

typedef struct cc_sm_job {
    const cc_sm_params *p;
    const float *x, *mask;
    float *y;
} cc_sm_job;

/* Elements whose exponentials are summed in float before the running total takes them in
 * double, as the Softmax kernel does (kernels_activations.c), so the results match it. */
#define CC_SM_CHUNK 1024

/* Y[i] = e^(Y[i] - M) in place; returns their sum (the Softmax kernel's exp_sum_f32). */
CPU_CLONES
static double cc_exp_sum(float *y, size_t n, float m)
{
    double total = 0.0;
    for (size_t c = 0; c < n; c += CC_SM_CHUNK) {
        const size_t end = n - c < CC_SM_CHUNK ? n : c + CC_SM_CHUNK;
        float acc[CPU_BLK] = {0};
        size_t i = c;
        for (; i + CPU_BLK <= end; i += CPU_BLK)
            for (size_t k = 0; k < CPU_BLK; k++) {
                const float e = cpu_exp_neg(y[i + k] - m);
                y[i + k] = e;
                acc[k] += e;
            }
        float s = 0.0f;
        for (; i < end; i++) {
            const float e = cpu_exp_neg(y[i] - m);
            y[i] = e;
            s += e;
        }
        for (size_t w = CPU_BLK / 2; w > 0; w /= 2)
            for (size_t k = 0; k < w; k++)
                acc[k] += acc[k + w];
        total += (double)(acc[0] + s);
    }
    return total;
}

CPU_CLONES
static void cc_sm_prologue(float *restrict y, const float *restrict x, const float *restrict m,
                           int64_t mstep, size_t n, int has_scale, int div, float c)
{
    if (!m) {
        if (div)
            CPU_LOOP(n, y[i] = x[i] / c;);
        else
            CPU_LOOP(n, y[i] = x[i] * c;);
    } else if (mstep == 0) {
        const float mv = m[0];
        if (!has_scale)
            CPU_LOOP(n, y[i] = x[i] + mv;);
        else if (div)
            CPU_LOOP(n, y[i] = x[i] / c + mv;);
        else
            CPU_LOOP(n, y[i] = x[i] * c + mv;);
    } else {
        if (!has_scale)
            CPU_LOOP(n, y[i] = x[i] + m[i];);
        else if (div)
            CPU_LOOP(n, y[i] = x[i] / c + m[i];);
        else
            CPU_LOOP(n, y[i] = x[i] * c + m[i];);
    }
}

CPU_CLONES
static void cc_scale_row(float *y, size_t n, float s)
{
    CPU_LOOP(n, y[i] *= s;);
}

static void cc_sm_rows(void *arg, size_t begin, size_t end)
{
    const cc_sm_job *j = arg;
    const cc_sm_params *p = j->p;
    const size_t len = (size_t)p->len;
    for (size_t row = begin; row < end; row++) {
        const float *m = NULL;
        if (j->mask) {
            int64_t off = 0, rem = (int64_t)row;
            for (uint32_t d = p->orank; d-- > 0;) {
                off += (rem % p->odims[d]) * p->mstride[d];
                rem /= p->odims[d];
            }
            m = j->mask + off;
        }
        float *y = j->y + row * len;
        cc_sm_prologue(y, j->x + row * len, m, p->mlast, len, p->has_scale, p->div, p->c);
        const float mx = cpu_max_f32(y, len);
        const double s = cc_exp_sum(y, len, mx);
        cc_scale_row(y, len, (float)(1.0 / s));
    }
}

static loom_status cc_sm_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                             char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const cc_sm_params *p = k->params;
    if (p->rows == 0 || p->len == 0)
        return LOOM_OK;
    cc_sm_job j = {p, args->inputs[p->x], p->mask >= 0 ? args->inputs[p->mask] : NULL,
                   args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->rows, cpu_grain_items(p->len * 2, 8192), cc_sm_rows, &j);
    return LOOM_OK;
}

/* ---- prepare_subgraph ------------------------------------------------------------------------ */

static loom_status cc_prepare_gemm(const cpu_op_entry *ops, const cc_view *v, const cc_chain *c,
                                   cpu_kernel *k, char *err, size_t err_len)
{
    cc_fused f;
    if (!cc_build_fused(v, c, &f))
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "too many attributes on the head");
    cc_gemm_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(p->map, f.map, sizeof p->map);
    p->n_in = f.node.n_inputs;
    cpu_kernel *in = &p->inner;
    in->op = f.node.op;
    in->n_in = f.node.n_inputs;
    in->n_out = 1;
    in->in = calloc(in->n_in + 1, sizeof *in->in);
    in->out = calloc(2, sizeof *in->out);
    loom_status st = LOOM_OK;
    char why[256] = "";
    const cpu_op_entry *e = &ops[f.node.op];
    if (!in->in || !in->out) {
        st = cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    } else if (!e->prepare || (e->supports && !e->supports(&f.node, why, sizeof why))) {
        st = cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "%s: %s", f.node.op_name, why);
    } else {
        memcpy(in->in, f.in, in->n_in * sizeof *in->in);
        in->out[0] = f.node.outputs[0];
        st = e->prepare(&f.node, in, err, err_len);
        if (st == LOOM_OK && !in->run)
            st = cpu_fail(err, err_len, LOOM_ERR_INTERNAL, "%s: prepare set no kernel",
                          f.node.op_name);
    }
    if (st != LOOM_OK) {
        cc_gemm_free(p);
        return st;
    }
    k->params = p;
    k->free_params = cc_gemm_free;
    k->scratch_bytes = in->scratch_bytes;
    k->run = cc_gemm_run;
    return LOOM_OK;
}

static loom_status cc_prepare_ln(const cc_view *v, const cc_chain *c, cpu_kernel *k, char *err,
                                 size_t err_len)
{
    cc_ln_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    const loom_tensor_desc *y = cc_desc(v, c->out);
    p->n = cpu_prod(y->dims, c->axis, y->rank);
    p->rows = p->n ? cpu_prod(y->dims, 0, y->rank) / p->n : 0;
    p->eps = c->eps;
    p->x = c->x;
    p->r = c->r;
    p->scale = c->scale;
    p->bias = c->lbias;
    p->r_row = c->r >= 0 && loom_tensor_desc_numel(cc_desc(v, c->r)) != loom_tensor_desc_numel(y);
    k->params = p;
    k->run = cc_ln_run;
    return LOOM_OK;
}

static loom_status cc_prepare_softmax(const cc_view *v, const cc_chain *c, cpu_kernel *k,
                                      char *err, size_t err_len)
{
    cc_sm_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    const loom_tensor_desc *y = cc_desc(v, c->out);
    p->len = y->dims[y->rank - 1];
    p->rows = p->len ? loom_tensor_desc_numel(y) / p->len : 0;
    p->x = c->x;
    p->mask = c->mask;
    p->has_scale = c->has_scale;
    p->div = c->div;
    p->c = c->c;
    p->orank = y->rank - 1;
    for (uint32_t d = 0; d < p->orank; d++)
        p->odims[d] = y->dims[d];
    if (c->mask >= 0) {
        const loom_tensor_desc *m = cc_desc(v, c->mask);
        int64_t st = 1;
        for (uint32_t d = y->rank; d-- > 0;) {
            int64_t md = d + m->rank >= y->rank ? m->dims[d + m->rank - y->rank] : 1;
            int64_t s = md == 1 ? 0 : st;
            if (d == y->rank - 1)
                p->mlast = s;
            else
                p->mstride[d] = s;
            st *= md;
        }
        if (p->mlast != 0)
            p->mlast = 1;
    }
    k->params = p;
    k->run = cc_sm_run;
    return LOOM_OK;
}

/* Whether every value the compiled chain C takes from outside is an input of the set (what
 * the kernels index args->inputs with). */
static int cc_reads_inputs_only(const cc_view *v, const cc_chain *c)
{
    for (uint32_t i = 0; i < c->n; i++)
        for (uint32_t j = 0; j < cc_node(v, c->nodes[i])->n_inputs; j++) {
            int32_t x = cc_in(v, c->nodes[i], j);
            if (x < 0 || (uint32_t)x < v->g->n_inputs)
                continue;
            int in = 0;
            for (uint32_t k = 0; k < c->n && !in; k++)
                in = (uint32_t)v->prod[x] == c->nodes[k];
            if (!in)
                return 0;
        }
    return 1;
}

loom_status cpu_claims_prepare(const cpu_op_entry *ops, const loom_subgraph_desc *sg,
                               cpu_kernel **kernel, char *err, size_t err_len)
{
    *kernel = NULL;
    const char *name = sg && sg->name ? sg->name : "subgraph";
    cc_view v;
    if (!ops || !sg || cc_view_init(&v, sg) != 0)
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "cpu: %s: malformed subgraph (a value id out of range or used before "
                        "it is produced)", name);
    cc_chain c;
    int found = 0;
    for (uint32_t h = 0; h < sg->n_nodes && !found; h++)
        found = cc_match_at(ops, &v, h, &c);
    loom_status st = LOOM_OK;
    if (!found || c.n != sg->n_nodes) {
        st = cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED,
                      "cpu: %s: its %u nodes are not one chain the CPU compiles (%s)", name,
                      sg->n_nodes, found ? "a chain covers only part of them" : "none found");
    } else if (!cc_reads_inputs_only(&v, &c)) {
        st = cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                      "cpu: %s: the chain %s reads a value that is not an input of the set",
                      name, c.ops);
    } else if (sg->n_outputs != 1 || sg->output_values[0] != (uint32_t)c.out) {
        st = cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED,
                      "cpu: %s: the chain %s must produce exactly its last value (the set has %u "
                      "outputs)", name, c.ops, sg->n_outputs);
    }
    cpu_kernel *k = NULL;
    if (st == LOOM_OK && !(k = calloc(1, sizeof *k)))
        st = cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "cpu: %s: out of memory", name);
    if (st == LOOM_OK) {
        k->op = cc_node(&v, c.nodes[c.n - 1])->op;
        k->n_in = sg->n_inputs;
        k->n_out = 1;
        k->in = calloc(sg->n_inputs + 1, sizeof *k->in);
        k->out = calloc(2, sizeof *k->out);
        if (!k->in || !k->out) {
            st = cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "cpu: %s: out of memory", name);
        } else {
            if (sg->n_inputs)
                memcpy(k->in, sg->inputs, sg->n_inputs * sizeof *k->in);
            k->out[0] = sg->outputs[0];
            char msg[256] = "";
            switch (c.kind) {
            case CC_GEMM:
                st = cc_prepare_gemm(ops, &v, &c, k, msg, sizeof msg);
                break;
            case CC_ADD_LN:
            case CC_LN_DECOMP:
                st = cc_prepare_ln(&v, &c, k, msg, sizeof msg);
                break;
            case CC_SOFTMAX:
                st = cc_prepare_softmax(&v, &c, k, msg, sizeof msg);
                break;
            }
            if (st != LOOM_OK)
                cpu_fail(err, err_len, st, "cpu: %s (%s): %s", name, c.ops, msg);
        }
    }
    cc_view_free(&v);
    if (st != LOOM_OK) {
        if (k) {
            free(k->in);
            free(k->out);
            free(k);
        }
        return st;
    }
    *kernel = k;
    return LOOM_OK;
}
