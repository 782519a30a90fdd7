/*
 * The OpenCL backend's subgraph claims (backend ABI 1.0): over the graph the host offers, the
 * chains one device runs with fewer launches, and their compilation.
 *
 *  1. MatMul / Gemm + epilogue (the rules of passes/fuse_epilogue.c: a bias Add of a constant
 *     row, a residual Add, an activation among Relu, LeakyRelu, Clip with constant bounds,
 *     HardSigmoid, HardSwish, Sigmoid, x * Sigmoid(x), Gelu): the GEMM as for the node alone
 *     (CLBlast, ocl_kernels_gemm.c), then ONE epilogue kernel for bias, residual and
 *     activation instead of a launch per Add and activation. A residual Add whose only reader
 *     is a LayerNormalization is left to chain 2.
 *  2. Add + LayerNormalization: one kernel (the sum, its statistics and the normalisation, a
 *     work-group per row).
 *  3. The decomposed LayerNorm of pre-opset-17 exports (ReduceMean, Sub, Pow 2 or Mul d d,
 *     ReduceMean, Add eps, Sqrt, Div [, Mul gamma] [, Add beta]): the same kernel, 7 to 9
 *     launches become one.
 *  4. Scale (Mul/Div by a constant scalar) and/or mask Add, then Softmax over the last axis:
 *     one kernel.
 * Intermediates must be read only inside the chain and not be outputs of the offered graph.
 * The matcher is the CPU backend's (backends/cpu/cpu_claims.c), repeated here because a backend
 * sees only loom/backend.h and its own folder. Estimates are left to the host (negative).
 */
#include "ocl_kernels.h"

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

/* Whether device D runs every node of C (and the chain is one this backend compiles). */
static int oc_device_runs(const ocl_state *s, const ocl_device *d, const cc_view *v,
                          const cc_chain *c)
{
    char why[256];
    if (c->kind == CC_GEMM && cc_node(v, c->head)->op == LOOM_OP_CONV)
        return 0; /* Conv adds its bias per channel itself; not claimed here */
    for (uint32_t i = 0; i < c->n; i++)
        if (!ocl_kernels_supports(s, d, cc_node(v, c->nodes[i]), why, sizeof why))
            return 0;
    return loom_tensor_desc_numel(cc_desc(v, c->out)) > 0;
}

static int oc_match_at(const ocl_state *s, const ocl_device *d, const cc_view *v, uint32_t h,
                       cc_chain *c)
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
        if (free_nodes && cc_internal_ok(v, c) && oc_device_runs(s, d, v, c))
            return 1;
    }
    return 0;
}

uint32_t ocl_claim(void *ctx, uint32_t dev, const loom_subgraph_desc *graph, uint32_t *nodes,
                   uint32_t max_nodes, loom_claim *claims, uint32_t max_claims)
{
    ocl_state *s = ctx;
    cc_view v;
    if (!s || dev >= s->n_devs || !nodes || !claims || cc_view_init(&v, graph) != 0)
        return 0;
    uint32_t n_claims = 0, used = 0;
    for (uint32_t h = 0; h < graph->n_nodes && n_claims < max_claims; h++) {
        cc_chain c;
        if (!oc_match_at(s, &s->devs[dev], &v, h, &c) || used + c.n > max_nodes)
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

/* ---- compiled chains ------------------------------------------------------------------------- */

typedef struct oc_params {
    cc_kind kind;
    /* CC_GEMM: the head's own kernel, which set input each of its inputs is, the epilogue */
    ocl_kernel *inner;
    int32_t map[3];
    uint32_t n_head_in;
    int32_t bias, z;
    int act;
    float alpha, beta;
    int64_t cols, numel;
    /* CC_ADD_LN, CC_LN_DECOMP */
    int32_t x, r, scale, lbias;
    int rmode;
    int64_t rows, n;
    float eps;
    size_t local;
    /* CC_SOFTMAX */
    int32_t mask;
    int has_scale, div;
    float c;
} oc_params;

static void oc_kernel_free(ocl_kernel *k);

static void oc_params_free(void *params)
{
    oc_params *p = params;
    if (!p)
        return;
    oc_kernel_free(p->inner);
    free(p);
}

/* ocl_backend.c's kernel_free, for the handles made here. */
static void oc_kernel_free(ocl_kernel *k)
{
    if (!k)
        return;
    if (k->consts)
        for (uint32_t i = 0; i < k->n_in; i++)
            if (k->consts[i])
                clReleaseMemObject(k->consts[i]);
    if (k->meta)
        clReleaseMemObject(k->meta);
    if (k->meta2)
        clReleaseMemObject(k->meta2);
    free(k->consts);
    free(k->in);
    free(k->out);
    if (k->free_params)
        k->free_params(k->params);
    else
        free(k->params);
    free(k);
}

static int oc_act_code(const char *act)
{
    static const char *const names[] = {"", "Relu", "LeakyRelu", "Clip", "HardSigmoid",
                                        "HardSwish", "Sigmoid", "SiLU", "Gelu", "GeluTanh"};
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(names[i], act))
            return i;
    return -1;
}

static ocl_buf oc_in(ocl_run *r, int32_t v)
{
    return v >= 0 ? r->in[v] : (ocl_buf){NULL, 0};
}

static loom_status oc_run_gemm(ocl_run *r, const ocl_kernel *k, const oc_params *p)
{
    ocl_buf hb[3];
    for (uint32_t j = 0; j < p->n_head_in && j < 3; j++)
        hb[j] = oc_in(r, p->map[j]);
    ocl_run r2 = *r;
    r2.k = p->inner;
    r2.in = hb;
    loom_status st = p->inner->run(&r2, p->inner);
    r->last = r2.last; /* the sub-run took over (and released) the chain's previous event */
    if (st != LOOM_OK || (p->bias < 0 && p->z < 0 && p->act == 0))
        return st;
    (void)k;
    cl_kernel ker = ocl_get_kernel(r, OCL_K_EPILOGUE);
    ocl_buf b = oc_in(r, p->bias), z = oc_in(r, p->z);
    cl_ulong yo = ocl_eoff(r->out[0], 4), n = (cl_ulong)p->numel;
    cl_long cols = p->cols;
    cl_ulong bo = b.mem ? ocl_eoff(b, 4) : 0, zo = z.mem ? ocl_eoff(z, 4) : 0;
    cl_int has_b = b.mem != NULL, has_z = z.mem != NULL, act = p->act;
    cl_float alpha = p->alpha, beta = p->beta;
    cl_mem bm = b.mem ? b.mem : r->out[0].mem, zm = z.mem ? z.mem : r->out[0].mem;
    ARG(ker, 0, r->out[0].mem);
    ARG(ker, 1, yo);
    ARG(ker, 2, n);
    ARG(ker, 3, cols);
    ARG(ker, 4, bm);
    ARG(ker, 5, bo);
    ARG(ker, 6, has_b);
    ARG(ker, 7, zm);
    ARG(ker, 8, zo);
    ARG(ker, 9, has_z);
    ARG(ker, 10, act);
    ARG(ker, 11, alpha);
    ARG(ker, 12, beta);
    return ocl_launch(r, ker, (size_t)n, 0);
}

static loom_status oc_run_ln(ocl_run *r, const oc_params *p)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_ADD_LAYERNORM);
    ocl_buf x = oc_in(r, p->x), rr = oc_in(r, p->r), sc = oc_in(r, p->scale),
            bi = oc_in(r, p->lbias);
    cl_ulong xo = ocl_eoff(x, 4), ro = rr.mem ? ocl_eoff(rr, 4) : 0,
             so = sc.mem ? ocl_eoff(sc, 4) : 0, bo = bi.mem ? ocl_eoff(bi, 4) : 0,
             yo = ocl_eoff(r->out[0], 4);
    cl_int rmode = p->rmode, has_sc = sc.mem != NULL, has_b = bi.mem != NULL;
    cl_long n = p->n, rows = p->rows;
    cl_float eps = p->eps;
    cl_mem rm = rr.mem ? rr.mem : x.mem, sm = sc.mem ? sc.mem : x.mem, bm = bi.mem ? bi.mem : x.mem;
    ARG(ker, 0, x.mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, rm);
    ARG(ker, 3, ro);
    ARG(ker, 4, rmode);
    ARG(ker, 5, sm);
    ARG(ker, 6, so);
    ARG(ker, 7, has_sc);
    ARG(ker, 8, bm);
    ARG(ker, 9, bo);
    ARG(ker, 10, has_b);
    ARG(ker, 11, r->out[0].mem);
    ARG(ker, 12, yo);
    ARG(ker, 13, n);
    ARG(ker, 14, eps);
    ARG(ker, 15, rows);
    if (ocl_arg(r, ker, 16, p->local * sizeof(float), NULL))
        return LOOM_ERR_INTERNAL;
    return rows && n ? ocl_launch(r, ker, ocl_row_groups(r->d, rows) * p->local, p->local)
                     : LOOM_OK;
}

static loom_status oc_run_softmax(ocl_run *r, const ocl_kernel *k, const oc_params *p)
{
    cl_kernel ker = ocl_get_kernel(r, OCL_K_SCALE_MASK_SOFTMAX);
    ocl_buf x = oc_in(r, p->x), m = oc_in(r, p->mask);
    cl_ulong xo = ocl_eoff(x, 4), yo = ocl_eoff(r->out[0], 4), mo = m.mem ? ocl_eoff(m, 4) : 0;
    cl_long n = p->n, rows = p->rows;
    cl_int has_scale = p->has_scale, sdiv = p->div, has_mask = m.mem != NULL;
    cl_float c = p->c;
    cl_mem mm = m.mem ? m.mem : x.mem;
    ARG(ker, 0, x.mem);
    ARG(ker, 1, xo);
    ARG(ker, 2, r->out[0].mem);
    ARG(ker, 3, yo);
    ARG(ker, 4, n);
    ARG(ker, 5, rows);
    ARG(ker, 6, has_scale);
    ARG(ker, 7, sdiv);
    ARG(ker, 8, c);
    ARG(ker, 9, mm);
    ARG(ker, 10, mo);
    ARG(ker, 11, has_mask);
    ARG(ker, 12, k->meta);
    if (ocl_arg(r, ker, 13, p->local * sizeof(float), NULL))
        return LOOM_ERR_INTERNAL;
    return rows && n ? ocl_launch(r, ker, ocl_row_groups(r->d, rows) * p->local, p->local)
                     : LOOM_OK;
}

static loom_status oc_run(ocl_run *r, const ocl_kernel *k)
{
    const oc_params *p = k->params;
    switch (p->kind) {
    case CC_GEMM:
        return oc_run_gemm(r, k, p);
    case CC_ADD_LN:
    case CC_LN_DECOMP:
        return oc_run_ln(r, p);
    case CC_SOFTMAX:
        return oc_run_softmax(r, k, p);
    }
    return ocl_run_fail(r, LOOM_ERR_INTERNAL, "unknown chain kind");
}

/* The head's own kernel (MatMul or Gemm as ocl_kernels_gemm.c prepares it) into P. */
static loom_status oc_prepare_gemm(ocl_state *s, ocl_device *d, const cc_view *v,
                                   const cc_chain *c, oc_params *p, char *err, size_t len)
{
    const loom_node_desc *h = cc_node(v, c->head);
    ocl_kernel *in = calloc(1, sizeof *in);
    if (!in)
        return ocl_fail(err, len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    p->inner = in;
    in->dev = d->index;
    in->op = h->op;
    snprintf(in->name, sizeof in->name, "%s", h->name ? h->name : "");
    snprintf(in->op_name, sizeof in->op_name, "%s", h->op_name ? h->op_name : "?");
    in->n_in = h->op == LOOM_OP_MATMUL ? 2 : (h->n_inputs < 3 ? h->n_inputs : 3);
    in->n_out = 1;
    in->in = calloc(in->n_in + 1, sizeof *in->in);
    in->out = calloc(2, sizeof *in->out);
    in->consts = calloc(in->n_in + 1, sizeof *in->consts);
    if (!in->in || !in->out || !in->consts)
        return ocl_fail(err, len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(in->in, h->inputs, in->n_in * sizeof *in->in);
    in->out[0] = h->outputs[0];
    p->n_head_in = in->n_in;
    for (uint32_t j = 0; j < 3; j++)
        p->map[j] = j < in->n_in ? cc_in(v, c->head, j) : -1;
    loom_node_desc hd = *h;
    hd.n_inputs = in->n_in;
    loom_status st = ocl_kernels_prepare(s, d, &hd, in, err, len);
    if (st != LOOM_OK)
        return st;
    if (!in->run)
        return ocl_fail(err, len, LOOM_ERR_INTERNAL, "%s: prepare set no kernel", h->op_name);
    p->bias = c->bias;
    p->z = c->z;
    p->act = oc_act_code(c->act);
    if (p->act < 0)
        return ocl_fail(err, len, LOOM_ERR_UNSUPPORTED, "activation %s", c->act);
    p->alpha = c->alpha;
    p->beta = c->beta;
    const loom_tensor_desc *y = &h->outputs[0];
    p->cols = y->dims[y->rank - 1];
    p->numel = loom_tensor_desc_numel(y);
    return LOOM_OK;
}

static void oc_prepare_ln(ocl_device *d, const cc_view *v, const cc_chain *c, oc_params *p)
{
    const loom_tensor_desc *y = cc_desc(v, c->out);
    p->n = 1;
    for (uint32_t i = c->axis; i < y->rank; i++)
        p->n *= y->dims[i];
    p->rows = p->n ? loom_tensor_desc_numel(y) / p->n : 0;
    p->x = c->x;
    p->r = c->r;
    p->scale = c->scale;
    p->lbias = c->lbias;
    p->eps = c->eps;
    p->rmode = c->r < 0 ? 0
               : loom_tensor_desc_numel(cc_desc(v, c->r)) == loom_tensor_desc_numel(y) ? 1
                                                                                       : 2;
    p->local = ocl_row_local(d, d->kernels[OCL_K_ADD_LAYERNORM], p->n, 256);
}

static loom_status oc_prepare_softmax(ocl_state *s, ocl_device *d, const cc_view *v,
                                      const cc_chain *c, oc_params *p, ocl_kernel *k, char *err,
                                      size_t len)
{
    const loom_tensor_desc *y = cc_desc(v, c->out);
    p->n = y->dims[y->rank - 1];
    p->rows = p->n ? loom_tensor_desc_numel(y) / p->n : 0;
    p->x = c->x;
    p->mask = c->mask;
    p->has_scale = c->has_scale;
    p->div = c->div;
    p->c = c->c;
    p->local = ocl_row_local(d, d->kernels[OCL_K_SCALE_MASK_SOFTMAX], p->n, 256);
    /* META = [orank, outer dims, mask strides over them, mask stride along the row] */
    int64_t meta[2 + 2 * LOOM_MAX_RANK];
    uint32_t orank = y->rank - 1;
    memset(meta, 0, sizeof meta);
    meta[0] = orank;
    for (uint32_t i = 0; i < orank; i++)
        meta[1 + i] = y->dims[i];
    if (c->mask >= 0) {
        const loom_tensor_desc *m = cc_desc(v, c->mask);
        int64_t st = 1;
        for (uint32_t i = y->rank; i-- > 0;) {
            int64_t md = i + m->rank >= y->rank ? m->dims[i + m->rank - y->rank] : 1;
            int64_t stride = md == 1 ? 0 : st;
            if (i == orank)
                meta[1 + 2 * orank] = stride ? 1 : 0;
            else
                meta[1 + orank + i] = stride;
            st *= md;
        }
    }
    return ocl_put_meta(s, d, k, meta, 2 + 2 * (size_t)orank, 0, err, len);
}

/* Whether every value the chain C takes from outside is an input of the set. */
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

loom_status ocl_prepare_subgraph(void *ctx, uint32_t dev, const loom_subgraph_desc *sg,
                                 void **kernel, size_t *scratch_bytes, char *err,
                                 size_t err_len)
{
    ocl_state *s = ctx;
    *kernel = NULL;
    const char *name = sg && sg->name ? sg->name : "subgraph";
    if (dev >= s->n_devs)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: no device %u", dev);
    ocl_device *d = &s->devs[dev];
    pthread_mutex_lock(&d->lock);
    loom_status st = ocl_ensure_program(s, d, err, err_len);
    pthread_mutex_unlock(&d->lock);
    if (st != LOOM_OK)
        return st;
    cc_view v;
    if (!sg || cc_view_init(&v, sg) != 0)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "opencl:%u: %s: malformed subgraph (a value id out of range or used "
                        "before it is produced)", dev, name);
    cc_chain c;
    int found = 0;
    for (uint32_t h = 0; h < sg->n_nodes && !found; h++)
        found = oc_match_at(s, d, &v, h, &c);
    if (!found || c.n != sg->n_nodes)
        st = ocl_fail(err, err_len, LOOM_ERR_UNSUPPORTED,
                      "opencl:%u: %s: its %u nodes are not one chain this backend compiles (%s)",
                      dev, name, sg->n_nodes, found ? "a chain covers only part of them"
                                                    : "none found");
    else if (!cc_reads_inputs_only(&v, &c))
        st = ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                      "opencl:%u: %s: the chain %s reads a value that is not an input of the set",
                      dev, name, c.ops);
    else if (sg->n_outputs != 1 || sg->output_values[0] != (uint32_t)c.out)
        st = ocl_fail(err, err_len, LOOM_ERR_UNSUPPORTED,
                      "opencl:%u: %s: the chain %s must produce exactly its last value (the set "
                      "has %u outputs)", dev, name, c.ops, sg->n_outputs);
    ocl_kernel *k = NULL;
    oc_params *p = NULL;
    if (st == LOOM_OK) {
        k = calloc(1, sizeof *k);
        p = calloc(1, sizeof *p);
        if (k) {
            k->params = p;
            k->free_params = oc_params_free;
            k->in = calloc(sg->n_inputs + 1, sizeof *k->in);
            k->out = calloc(2, sizeof *k->out);
            k->consts = calloc(sg->n_inputs + 1, sizeof *k->consts);
        }
        if (!k || !p || !k->in || !k->out || !k->consts) {
            if (!k)
                free(p);
            st = ocl_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "opencl:%u: %s: out of memory",
                          dev, name);
        }
    }
    if (st == LOOM_OK) {
        k->dev = dev;
        k->op = cc_node(&v, c.nodes[c.n - 1])->op;
        snprintf(k->name, sizeof k->name, "%s", name);
        snprintf(k->op_name, sizeof k->op_name, "%.39s", c.ops);
        k->n_in = sg->n_inputs;
        k->n_out = 1;
        if (sg->n_inputs)
            memcpy(k->in, sg->inputs, sg->n_inputs * sizeof *k->in);
        k->out[0] = sg->outputs[0];
        /* Constants (weights, biases, LayerNorm's scale) live in this handle's buffers. */
        for (uint32_t i = 0; sg->input_constants && i < sg->n_inputs && st == LOOM_OK; i++) {
            if (!sg->input_constants[i] || sg->inputs[i].dtype == LOOM_DTYPE_UNDEFINED)
                continue;
            size_t bytes = (size_t)loom_tensor_desc_numel(&sg->inputs[i]) *
                           loom_dtype_size(sg->inputs[i].dtype);
            k->consts[i] = ocl_buffer_from_host(s, d, sg->input_constants[i], bytes, err,
                                                err_len);
            if (!k->consts[i])
                st = LOOM_ERR_OUT_OF_MEMORY;
        }
    }
    if (st == LOOM_OK) {
        char msg[300] = "";
        p->kind = c.kind;
        p->bias = p->z = p->x = p->r = p->scale = p->lbias = p->mask = -1;
        switch (c.kind) {
        case CC_GEMM:
            st = oc_prepare_gemm(s, d, &v, &c, p, msg, sizeof msg);
            break;
        case CC_ADD_LN:
        case CC_LN_DECOMP:
            oc_prepare_ln(d, &v, &c, p);
            break;
        case CC_SOFTMAX:
            st = oc_prepare_softmax(s, d, &v, &c, p, k, msg, sizeof msg);
            break;
        }
        if (st != LOOM_OK)
            ocl_fail(err, err_len, st, "opencl:%u: %s (%s): %s", dev, name, c.ops, msg);
        k->run = oc_run;
        k->scratch_bytes = p->inner ? p->inner->scratch_bytes : 0;
    }
    cc_view_free(&v);
    if (st != LOOM_OK) {
        oc_kernel_free(k);
        return st;
    }
    *kernel = k;
    *scratch_bytes = k->scratch_bytes;
    return LOOM_OK;
}
