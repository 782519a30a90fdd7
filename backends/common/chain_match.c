/*
 * Find the claimable chains of a loom_subgraph_desc and describe each (chain_match.h lists the
 * chains and their rules). Shared by the built-in backends' claims (backends/cpu/cpu_claims.c,
 * backends/opencl/ocl_claims.c), which keep only what is theirs: what they run and how they
 * compile a chain.
 *
 * backends/common/ includes only <loom/backend.h> and the C library (scripts/check-layers.py).
 */
#include "chain_match.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32

/* ---- a view of the offered graph: producers, readers, outputs ------------------------------ */

void chain_view_free(chain_view *v)
{
    free(v->prod);
    free(v->slot);
    free(v->out_base);
    free(v->rd_start);
    free(v->rd);
    free(v->is_out);
    free(v->taken);
    memset(v, 0, sizeof *v);
}

int chain_view_init(chain_view *v, const loom_subgraph_desc *g)
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
        chain_view_free(v);
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
    chain_view_free(v);
    return -1;
}

/* A constant f32 scalar (one element) of value X into *OUT; 0 when X is not one. */
static int chain_const_scalar(const chain_view *v, int32_t x, float *out)
{
    const void *p = chain_const(v, x);
    const loom_tensor_desc *d = chain_desc(v, x);
    if (!p || d->dtype != F32 || loom_tensor_desc_numel(d) != 1)
        return 0;
    memcpy(out, p, sizeof *out);
    return 1;
}

/* The one node reading X through one input slot, or -1 (none, several, or X is an output). */
static int32_t chain_only_reader(const chain_view *v, int32_t x)
{
    if (x < 0 || v->is_out[x] || v->rd_start[x + 1] - v->rd_start[x] != 1)
        return -1;
    return (int32_t)v->rd[v->rd_start[x]];
}

/* The distinct nodes reading X into OUT (at most MAX); returns their number (may exceed MAX). */
static uint32_t chain_reader_nodes(const chain_view *v, int32_t x, uint32_t *out, uint32_t max)
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

static int chain_same_desc(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    return a && b && a->dtype == b->dtype && a->rank == b->rank &&
           memcmp(a->dims, b->dims, a->rank * sizeof a->dims[0]) == 0;
}

/* The other input of a two-input Add NODE one of whose inputs is X, or -1. */
static int32_t chain_add_other(const chain_view *v, uint32_t node, int32_t x)
{
    const loom_node_desc *n = chain_node(v, node);
    if (n->op != LOOM_OP_ADD || n->n_inputs != 2)
        return -1;
    int32_t a = chain_in(v, node, 0), b = chain_in(v, node, 1);
    if (a == x && b != x)
        return b;
    if (b == x && a != x)
        return a;
    return -1;
}

/* ---- the chains ------------------------------------------------------------------------------ */

static void chain_push(chain_match *c, const chain_view *v, uint32_t node)
{
    if (c->n < CHAIN_MAX_NODES)
        c->nodes[c->n++] = node;
    size_t l = strlen(c->ops);
    snprintf(c->ops + l, sizeof c->ops - l, "%s%s", l ? "+" : "",
             chain_node(v, node)->op_name ? chain_node(v, node)->op_name : "?");
}

/* fuse_epilogue's bias_fits on the descriptor. */
static int chain_bias_fits(const chain_view *v, uint32_t head, int32_t bias)
{
    const loom_node_desc *h = chain_node(v, head);
    const loom_tensor_desc *y = &h->outputs[0], *c = chain_desc(v, bias);
    int64_t numel = loom_tensor_desc_numel(c);
    if (h->op == LOOM_OP_CONV) {
        if (chain_in(v, head, 2) >= 0)
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
        if (chain_in(v, head, 2) >= 0)
            return 0;
        return loom_node_attr_float(h, "beta", 1.0f) == 1.0f;
    }
    return 1;
}

/* fuse_epilogue's activation_of: NODE applied to X as (name, alpha, beta) in C; 0 if none. */
static int chain_activation(const chain_view *v, uint32_t node, int32_t x, chain_match *c)
{
    const loom_node_desc *n = chain_node(v, node);
    if (n->n_inputs < 1 || chain_in(v, node, 0) != x)
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
            int32_t b = chain_in(v, node, k);
            if (b < 0)
                continue;
            if (!chain_const_scalar(v, b, k == 1 ? &lo : &hi))
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

/* Whether ints attribute NAME of N is absent or all VALUE. */
static int chain_ints_all(const loom_node_desc *n, const char *name, int64_t value)
{
    const loom_attr *a = loom_node_attr(n, name);
    if (!a)
        return 1;
    if (a->kind != LOOM_ATTR_INTS)
        return 0;
    for (size_t i = 0; i < a->count; i++)
        if (a->ints[i] != value)
            return 0;
    return 1;
}

/* fuse_epilogue's pool_of: a MaxPool that is X's only reader, without padding, dilation, ceil
 * rounding or Indices output, pushed onto C with its kernel and strides. */
static int chain_max_pool(const chain_view *v, int32_t x, chain_match *c)
{
    const int32_t r = chain_only_reader(v, x);
    if (r < 0 || v->taken[r])
        return 0;
    const loom_node_desc *n = chain_node(v, (uint32_t)r);
    if (n->op != LOOM_OP_MAX_POOL || n->n_inputs != 1 || n->n_outputs != 1 ||
        n->outputs[0].dtype != F32)
        return 0;
    const loom_attr *k = loom_node_attr(n, "kernel_shape"), *s = loom_node_attr(n, "strides");
    const loom_attr *ap = loom_node_attr(n, "auto_pad");
    if (!k || k->kind != LOOM_ATTR_INTS || k->count != 2 ||
        (s && (s->kind != LOOM_ATTR_INTS || s->count != 2)) || !chain_ints_all(n, "pads", 0) ||
        !chain_ints_all(n, "dilations", 1) || loom_node_attr_int(n, "ceil_mode", 0) != 0 ||
        (ap && (ap->kind != LOOM_ATTR_STRING || !ap->s ||
                (strcmp(ap->s, "NOTSET") != 0 && strcmp(ap->s, "VALID") != 0))))
        return 0;
    for (int i = 0; i < 2; i++) {
        c->pool_k[i] = k->ints[i];
        c->pool_s[i] = s ? s->ints[i] : 1;
        if (c->pool_k[i] < 1 || c->pool_s[i] < 1)
            return 0;
    }
    c->pool = 1;
    chain_push(c, v, (uint32_t)r);
    return 1;
}

/* Chain 1 from head H (fuse_epilogue's plan_chain). */
static int chain_match_gemm(const chain_view *v, uint32_t h, chain_match *c)
{
    const loom_node_desc *head = chain_node(v, h);
    if (!(head->op == LOOM_OP_CONV || head->op == LOOM_OP_MATMUL || head->op == LOOM_OP_GEMM) ||
        head->n_outputs != 1 || head->n_inputs < 2)
        return 0;
    int32_t cur = chain_out(v, h);
    const loom_tensor_desc *y = &head->outputs[0];
    if (y->dtype != F32 || y->rank < 1)
        return 0;
    if (head->op == LOOM_OP_CONV && (y->rank < 3 || y->rank > 4))
        return 0;
    if (head->op == LOOM_OP_MATMUL && (head->inputs[0].rank < 2 || head->inputs[1].rank != 2))
        return 0;
    c->kind = CHAIN_GEMM;
    c->head = h;
    c->bias = c->z = -1;
    c->act = "";
    chain_push(c, v, h);
    int step = 0;
    for (;;) {
        int32_t r = chain_only_reader(v, cur);
        /* x * Sigmoid(x): two readers of cur, the Sigmoid's only reader the Mul. */
        if (r < 0 && step < 3 && !v->is_out[cur] && v->rd_start[cur + 1] - v->rd_start[cur] == 2) {
            uint32_t rn[2];
            if (chain_reader_nodes(v, cur, rn, 2) != 2)
                break;
            int32_t s = -1, m = -1;
            for (int i = 0; i < 2; i++) {
                if (chain_node(v, rn[i])->op != LOOM_OP_SIGMOID || chain_in(v, rn[i], 0) != cur ||
                    v->taken[rn[i]])
                    continue;
                int32_t mm = chain_only_reader(v, chain_out(v, rn[i]));
                if (mm != (int32_t)rn[1 - i] || chain_node(v, (uint32_t)mm)->op != LOOM_OP_MUL ||
                    chain_node(v, (uint32_t)mm)->n_inputs != 2)
                    continue;
                int32_t a = chain_in(v, (uint32_t)mm, 0), b = chain_in(v, (uint32_t)mm, 1);
                int32_t so = chain_out(v, rn[i]);
                if ((a == cur && b == so) || (b == cur && a == so)) {
                    s = (int32_t)rn[i];
                    m = mm;
                }
            }
            if (m < 0 || v->taken[m] ||
                !chain_same_desc(&chain_node(v, (uint32_t)m)->outputs[0], y))
                break;
            c->act = "SiLU";
            c->alpha = c->beta = 0.0f;
            chain_push(c, v, (uint32_t)s);
            chain_push(c, v, (uint32_t)m);
            cur = chain_out(v, (uint32_t)m);
            break;
        }
        if (r < 0 || v->taken[r])
            break;
        const loom_node_desc *n = chain_node(v, (uint32_t)r);
        if (n->n_outputs != 1 || !chain_same_desc(&n->outputs[0], y))
            break;
        int32_t other = chain_add_other(v, (uint32_t)r, cur);
        const loom_tensor_desc *od = chain_desc(v, other);
        if (step < 1 && other >= 0 && chain_const(v, other) && od->dtype == F32 &&
            chain_bias_fits(v, h, other)) {
            c->bias = other;
            step = 1;
        } else if (step < 2 && other >= 0 && chain_same_desc(od, y)) {
            /* Left to Add + LayerNormalization when that is what reads the sum. */
            int32_t after = chain_only_reader(v, chain_out(v, (uint32_t)r));
            if (after >= 0 && chain_node(v, (uint32_t)after)->op == LOOM_OP_LAYER_NORMALIZATION)
                break;
            c->z = other;
            step = 2;
        } else if (step < 3 && chain_activation(v, (uint32_t)r, cur, c)) {
            step = 3;
        } else {
            break;
        }
        chain_push(c, v, (uint32_t)r);
        cur = chain_out(v, (uint32_t)r);
        if (step == 3)
            break;
    }
    if (head->op == LOOM_OP_CONV && y->rank == 4 && strcmp(c->act, "SiLU") != 0 &&
        chain_max_pool(v, cur, c))
        cur = chain_out(v, c->nodes[c->n - 1]);
    c->out = cur;
    return c->n > 1;
}

/* Whether SCALE (or LayerNorm's B) of N elements applies per normalised element: its numel is
 * N and its dims, right-aligned, are X's normalised dims (leading 1s allowed). */
static int chain_row_param(const chain_view *v, int32_t p, const loom_tensor_desc *x, uint32_t axis)
{
    const loom_tensor_desc *d = chain_desc(v, p);
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
static int chain_match_add_ln(const chain_view *v, uint32_t h, chain_match *c)
{
    const loom_node_desc *add = chain_node(v, h);
    if (add->op != LOOM_OP_ADD || add->n_inputs != 2 || add->n_outputs != 1 ||
        add->outputs[0].dtype != F32)
        return 0;
    int32_t s = chain_out(v, h), ln = chain_only_reader(v, s);
    if (ln < 0 || v->taken[ln])
        return 0;
    const loom_node_desc *n = chain_node(v, (uint32_t)ln);
    if (n->op != LOOM_OP_LAYER_NORMALIZATION || n->n_outputs != 1 ||
        chain_in(v, (uint32_t)ln, 0) != s)
        return 0;
    const loom_tensor_desc *y = &add->outputs[0];
    int64_t axis = loom_node_attr_int(n, "axis", -1);
    if (y->rank < 1 || axis < 0 || axis >= (int64_t)y->rank || !chain_same_desc(&n->outputs[0], y))
        return 0;
    int32_t a = chain_in(v, h, 0), b = chain_in(v, h, 1);
    /* X is the addend of the output's shape; R the other (same shape or a normalised row). */
    if (!chain_same_desc(chain_desc(v, a), y)) {
        int32_t t = a;
        a = b;
        b = t;
    }
    if (!chain_same_desc(chain_desc(v, a), y) ||
        !(chain_same_desc(chain_desc(v, b), y) || chain_row_param(v, b, y, (uint32_t)axis)))
        return 0;
    int32_t sc = chain_in(v, (uint32_t)ln, 1), bi = chain_in(v, (uint32_t)ln, 2);
    if (sc < 0 || !chain_row_param(v, sc, y, (uint32_t)axis) ||
        (bi >= 0 && !chain_row_param(v, bi, y, (uint32_t)axis)))
        return 0;
    c->kind = CHAIN_ADD_LN;
    c->x = a;
    c->r = b;
    c->scale = sc;
    c->lbias = bi;
    c->axis = (uint32_t)axis;
    c->eps = loom_node_attr_float(n, "epsilon", 1e-5f);
    chain_push(c, v, h);
    chain_push(c, v, (uint32_t)ln);
    c->out = chain_out(v, (uint32_t)ln);
    return 1;
}

/* Whether reduce NODE is a ReduceMean of X over its last axis only, keeping dims. */
static int chain_mean_last(const chain_view *v, uint32_t node, int32_t x)
{
    const loom_node_desc *n = chain_node(v, node);
    const loom_tensor_desc *d = chain_desc(v, x);
    if (n->op != LOOM_OP_REDUCE_MEAN || chain_in(v, node, 0) != x || n->n_outputs != 1 || !d ||
        d->rank < 1 || d->dtype != F32)
        return 0;
    const loom_attr *ax = loom_node_attr(n, "axes");
    if (!ax || ax->kind != LOOM_ATTR_INTS || ax->count != 1 || ax->ints[0] != (int64_t)d->rank - 1)
        return 0;
    return loom_node_attr_int(n, "keepdims", 1) == 1;
}

/* The single reader of X when it is an op OP node, else -1. */
static int32_t chain_next(const chain_view *v, int32_t x, loom_op_id op)
{
    int32_t r = chain_only_reader(v, x);
    return r >= 0 && !v->taken[r] && chain_node(v, (uint32_t)r)->op == op &&
                   chain_node(v, (uint32_t)r)->n_outputs == 1
               ? r
               : -1;
}

/* Chain 3: the decomposed LayerNorm from ReduceMean H. */
static int chain_match_ln_decomp(const chain_view *v, uint32_t h, chain_match *c)
{
    const loom_node_desc *r1 = chain_node(v, h);
    if (r1->op != LOOM_OP_REDUCE_MEAN)
        return 0;
    int32_t x = chain_in(v, h, 0);
    if (!chain_mean_last(v, h, x))
        return 0;
    const loom_tensor_desc *xd = chain_desc(v, x);
    int32_t sub = chain_next(v, chain_out(v, h), LOOM_OP_SUB);
    if (sub < 0 || chain_in(v, (uint32_t)sub, 0) != x ||
        chain_in(v, (uint32_t)sub, 1) != chain_out(v, h) ||
        !chain_same_desc(&chain_node(v, (uint32_t)sub)->outputs[0], xd))
        return 0;
    int32_t d = chain_out(v, (uint32_t)sub);
    uint32_t rn[2];
    if (v->is_out[d] || chain_reader_nodes(v, d, rn, 2) != 2)
        return 0;
    int32_t sq = -1, div = -1;
    for (int i = 0; i < 2; i++) {
        const loom_node_desc *n = chain_node(v, rn[i]);
        float p;
        if (n->op == LOOM_OP_POW && chain_in(v, rn[i], 0) == d &&
            chain_const_scalar(v, chain_in(v, rn[i], 1), &p) && p == 2.0f)
            sq = (int32_t)rn[i];
        else if (n->op == LOOM_OP_MUL && chain_in(v, rn[i], 0) == d && chain_in(v, rn[i], 1) == d)
            sq = (int32_t)rn[i];
        else if (n->op == LOOM_OP_DIV && chain_in(v, rn[i], 0) == d)
            div = (int32_t)rn[i];
    }
    /* d's reader slots: the square's one or two and the Div's one. */
    uint32_t slots = v->rd_start[d + 1] - v->rd_start[d];
    if (sq < 0 || div < 0 || v->taken[sq] || v->taken[div] ||
        slots != (chain_node(v, (uint32_t)sq)->op == LOOM_OP_MUL ? 3u : 2u))
        return 0;
    int32_t r2 = chain_only_reader(v, chain_out(v, (uint32_t)sq));
    if (r2 < 0 || v->taken[r2] || !chain_mean_last(v, (uint32_t)r2, chain_out(v, (uint32_t)sq)))
        return 0;
    int32_t add = chain_next(v, chain_out(v, (uint32_t)r2), LOOM_OP_ADD);
    float eps;
    if (add < 0 || chain_add_other(v, (uint32_t)add, chain_out(v, (uint32_t)r2)) < 0 ||
        !chain_const_scalar(v, chain_add_other(v, (uint32_t)add, chain_out(v, (uint32_t)r2)), &eps))
        return 0;
    int32_t sqrt_n = chain_next(v, chain_out(v, (uint32_t)add), LOOM_OP_SQRT);
    if (sqrt_n < 0 || chain_only_reader(v, chain_out(v, (uint32_t)sqrt_n)) != div ||
        chain_in(v, (uint32_t)div, 1) != chain_out(v, (uint32_t)sqrt_n) ||
        !chain_same_desc(&chain_node(v, (uint32_t)div)->outputs[0], xd))
        return 0;
    c->kind = CHAIN_LN_DECOMP;
    c->x = x;
    c->r = -1;
    c->scale = c->lbias = -1;
    c->eps = eps;
    c->axis = xd->rank - 1;
    uint32_t seq[7] = {h, (uint32_t)sub, (uint32_t)sq, (uint32_t)r2, (uint32_t)add,
                       (uint32_t)sqrt_n, (uint32_t)div};
    for (int i = 0; i < 7; i++)
        chain_push(c, v, seq[i]);
    int32_t cur = chain_out(v, (uint32_t)div);
    /* Optional Mul gamma, then Add beta: constants of the normalised row. */
    int32_t m = chain_next(v, cur, LOOM_OP_MUL);
    if (m >= 0) {
        int32_t a = chain_in(v, (uint32_t)m, 0), b = chain_in(v, (uint32_t)m, 1);
        int32_t g = a == cur ? b : b == cur ? a : -1;
        if (g >= 0 && g != cur && chain_const(v, g) && chain_row_param(v, g, xd, c->axis) &&
            chain_same_desc(&chain_node(v, (uint32_t)m)->outputs[0], xd)) {
            c->scale = g;
            chain_push(c, v, (uint32_t)m);
            cur = chain_out(v, (uint32_t)m);
        }
    }
    int32_t ab = chain_next(v, cur, LOOM_OP_ADD);
    if (ab >= 0) {
        int32_t b = chain_add_other(v, (uint32_t)ab, cur);
        if (b >= 0 && chain_const(v, b) && chain_row_param(v, b, xd, c->axis) &&
            chain_same_desc(&chain_node(v, (uint32_t)ab)->outputs[0], xd)) {
            c->lbias = b;
            chain_push(c, v, (uint32_t)ab);
            cur = chain_out(v, (uint32_t)ab);
        }
    }
    c->out = cur;
    return 1;
}

/* Whether MASK (dims right-aligned) broadcasts to Y. */
static int chain_broadcasts(const loom_tensor_desc *mask, const loom_tensor_desc *y)
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
static int chain_match_softmax(const chain_view *v, uint32_t h, chain_match *c)
{
    const loom_node_desc *n = chain_node(v, h);
    if (n->n_outputs != 1 || n->outputs[0].dtype != F32 || n->outputs[0].rank < 1 ||
        n->n_inputs != 2)
        return 0;
    const loom_tensor_desc *y = &n->outputs[0];
    c->kind = CHAIN_SOFTMAX;
    c->mask = -1;
    c->c = 1.0f;
    uint32_t node = h;
    int32_t cur;
    if (n->op == LOOM_OP_MUL || n->op == LOOM_OP_DIV) {
        int32_t a = chain_in(v, h, 0), b = chain_in(v, h, 1);
        if (chain_const_scalar(v, b, &c->c) && chain_same_desc(chain_desc(v, a), y)) {
            c->x = a;
        } else if (n->op == LOOM_OP_MUL && chain_const_scalar(v, a, &c->c) &&
                   chain_same_desc(chain_desc(v, b), y)) {
            c->x = b;
        } else {
            return 0;
        }
        c->has_scale = 1;
        c->div = n->op == LOOM_OP_DIV;
        chain_push(c, v, h);
        cur = chain_out(v, h);
        int32_t r = chain_only_reader(v, cur);
        if (r < 0 || v->taken[r])
            return 0;
        node = (uint32_t)r;
    } else if (n->op != LOOM_OP_ADD) {
        return 0;
    } else {
        cur = -1;
    }
    const loom_node_desc *m = chain_node(v, node);
    if (m->op == LOOM_OP_ADD && m->n_inputs == 2 && m->n_outputs == 1 &&
        chain_same_desc(&m->outputs[0], y)) {
        int32_t a = chain_in(v, node, 0), b = chain_in(v, node, 1);
        if (cur < 0) { /* the Add is the head: X is the addend of the output's shape */
            if (!chain_same_desc(chain_desc(v, a), y)) {
                int32_t t = a;
                a = b;
                b = t;
            }
            if (!chain_same_desc(chain_desc(v, a), y))
                return 0;
            c->x = a;
        } else if (b == cur) {
            b = a;
        } else if (a != cur) {
            return 0;
        }
        if (b < 0 || b == cur || !chain_broadcasts(chain_desc(v, b), y))
            return 0;
        c->mask = b;
        chain_push(c, v, node);
        cur = chain_out(v, node);
        int32_t r = chain_only_reader(v, cur);
        if (r < 0 || v->taken[r])
            return 0;
        node = (uint32_t)r;
    } else if (cur < 0) {
        return 0;
    }
    const loom_node_desc *sm = chain_node(v, node);
    if (sm->op != LOOM_OP_SOFTMAX || sm->n_outputs != 1 || chain_in(v, node, 0) != cur ||
        loom_node_attr_int(sm, "axis", -1) != (int64_t)y->rank - 1 ||
        !chain_same_desc(&sm->outputs[0], y))
        return 0;
    chain_push(c, v, node);
    c->out = chain_out(v, node);
    return 1;
}

/* ---- matching over a graph ------------------------------------------------------------------- */

/* Whether every value the chain's nodes produce, but its last, is read only by them and is not
 * an output of the set. */
static int chain_internal_ok(const chain_view *v, const chain_match *c)
{
    for (uint32_t i = 0; i < c->n; i++) {
        const loom_node_desc *n = chain_node(v, c->nodes[i]);
        for (uint32_t j = 0; j < n->n_outputs; j++) {
            int32_t x = chain_out(v, c->nodes[i]) + (int32_t)j;
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

int chain_match_at(const chain_view *v, uint32_t h, chain_runs_fn runs, void *ctx,
                   chain_match *c)
{
    int (*const matchers[])(const chain_view *, uint32_t, chain_match *) = {
        chain_match_gemm, chain_match_add_ln, chain_match_ln_decomp, chain_match_softmax};
    if (v->taken[h])
        return 0;
    for (size_t m = 0; m < sizeof matchers / sizeof matchers[0]; m++) {
        memset(c, 0, sizeof *c);
        c->x = c->r = c->scale = c->lbias = c->mask = c->bias = c->z = -1;
        if (!matchers[m](v, h, c) || c->n < 2 || c->n > CHAIN_MAX_NODES)
            continue;
        int free_nodes = 1;
        for (uint32_t i = 0; i < c->n; i++)
            free_nodes &= !v->taken[c->nodes[i]];
        if (free_nodes && chain_internal_ok(v, c) && runs(ctx, v, c))
            return 1;
    }
    return 0;
}

uint32_t chain_claims_find(const loom_subgraph_desc *graph, chain_runs_fn runs, void *ctx,
                           uint32_t *nodes, uint32_t max_nodes, loom_claim *claims,
                           uint32_t max_claims)
{
    chain_view v;
    if (!runs || !nodes || !claims || chain_view_init(&v, graph) != 0)
        return 0;
    uint32_t n_claims = 0, used = 0;
    for (uint32_t h = 0; h < graph->n_nodes && n_claims < max_claims; h++) {
        chain_match c;
        if (!chain_match_at(&v, h, runs, ctx, &c) || used + c.n > max_nodes)
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
    chain_view_free(&v);
    return n_claims;
}

/* Whether every value the chain C takes from outside is an input of the set (what compiled
 * chains index their run's inputs with). */
static int chain_reads_inputs_only(const chain_view *v, const chain_match *c)
{
    for (uint32_t i = 0; i < c->n; i++)
        for (uint32_t j = 0; j < chain_node(v, c->nodes[i])->n_inputs; j++) {
            int32_t x = chain_in(v, c->nodes[i], j);
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

loom_status chain_match_whole(const chain_view *v, chain_runs_fn runs, void *ctx,
                              const char *who, chain_match *c, char *why, size_t why_len)
{
    const loom_subgraph_desc *sg = v->g;
    int found = 0;
    for (uint32_t h = 0; h < sg->n_nodes && !found; h++)
        found = chain_match_at(v, h, runs, ctx, c);
    if (!found || c->n != sg->n_nodes) {
        snprintf(why, why_len, "its %u nodes are not one chain %s compiles (%s)", sg->n_nodes,
                 who, found ? "a chain covers only part of them" : "none found");
        return LOOM_ERR_UNSUPPORTED;
    }
    if (!chain_reads_inputs_only(v, c)) {
        snprintf(why, why_len, "the chain %s reads a value that is not an input of the set",
                 c->ops);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    if (sg->n_outputs != 1 || sg->output_values[0] != (uint32_t)c->out) {
        snprintf(why, why_len,
                 "the chain %s must produce exactly its last value (the set has %u outputs)",
                 c->ops, sg->n_outputs);
        return LOOM_ERR_UNSUPPORTED;
    }
    return LOOM_OK;
}

/* ---- what compiling a chain needs ------------------------------------------------------------ */

void chain_rows(const chain_view *v, const chain_match *c, int64_t *rows, int64_t *n)
{
    const loom_tensor_desc *y = chain_desc(v, c->out);
    uint32_t axis = c->kind == CHAIN_SOFTMAX ? y->rank - 1 : c->axis;
    int64_t len = 1;
    for (uint32_t i = axis; i < y->rank; i++)
        len *= y->dims[i];
    *n = len;
    *rows = len ? loom_tensor_desc_numel(y) / len : 0;
}

void chain_mask_strides(const chain_view *v, const chain_match *c, int64_t *outer, int64_t *row)
{
    const loom_tensor_desc *y = chain_desc(v, c->out);
    *row = 0;
    for (uint32_t i = 0; i + 1 < y->rank; i++)
        outer[i] = 0;
    if (c->mask < 0)
        return;
    const loom_tensor_desc *m = chain_desc(v, c->mask);
    int64_t st = 1;
    for (uint32_t i = y->rank; i-- > 0;) {
        int64_t md = i + m->rank >= y->rank ? m->dims[i + m->rank - y->rank] : 1;
        int64_t stride = md == 1 ? 0 : st;
        if (i == y->rank - 1)
            *row = stride ? 1 : 0;
        else
            outer[i] = stride;
        st *= md;
    }
}
