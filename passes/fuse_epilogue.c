/*
 * The fuse_epilogue pass: a Conv, MatMul or Gemm followed by what the CPU can apply to its output
 * while it is still in cache becomes one FusedConv / FusedMatMul / FusedGemm node
 * (graph/ops_fused.c): Y = act(op(...) + bias + Z). In the order they may follow the head:
 *   1. a bias Add of a constant: per output channel ([M], [M,1,1], [1,M,1,1]) for a Conv without
 *      B (it becomes B), a row [N] for a MatMul (its bias input), a row for a Gemm without C (its
 *      C; beta 1);
 *   2. a residual Add of a value of the output's shape and dtype (input Z);
 *   3. an activation: Relu, LeakyRelu, Clip with constant bounds, HardSigmoid, HardSwish,
 *      Sigmoid, x * Sigmoid(x) (SiLU, two nodes), Gelu (erf or tanh);
 *   4. for a 2-D Conv, a MaxPool without padding, dilation, ceil rounding or Indices (the
 *      pooled output is written while the conv's rows are in cache; not after SiLU).
 * Every intermediate value must have no other reader and not be a graph output: otherwise the
 * chain stops before it. A head with nothing to absorb stays as it is. The fused node keeps the
 * head's name; its attribute fused_ops ("Conv+Add+HardSwish") names what it was made of, and the
 * plan shows that as the node's op (loom profile, explanations).
 *
 * The fused ops run on the CPU only (other backends do not claim them), so the plan asks for
 * this pass only when the CPU may take them (pass_ctx.fuse_epilogue; scheduler/plan.c), and
 * when it does not, gives the reason the summary shows (pass_ctx.fuse_epilogue_off).
 */
#include "passes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one chain turns into. */
typedef struct fuse_chain {
    uint32_t head, last;       /* node indices */
    loom_value bias;           /* source constant that becomes B / bias / C, or NO_VALUE */
    loom_value z;              /* residual, or NO_VALUE */
    const char *act;           /* "" when none */
    float alpha, beta;
    char ops[96];              /* fused_ops */
    int pool;                  /* a MaxPool at the end (Conv only) */
    int64_t pool_k[2], pool_s[2];
} fuse_chain;

typedef struct fuse_state {
    const loom_graph *g;
    int32_t *role;     /* per node: -1 untouched, else the chain index */
    fuse_chain *chains;
    size_t n_chains;
    size_t absorbed;
} fuse_state;

static int same_desc(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    return a->dtype == b->dtype && a->rank == b->rank &&
           memcmp(a->dims, b->dims, a->rank * sizeof a->dims[0]) == 0;
}

static int op_is(const graph_node *n, loom_op_id id)
{
    return n->def->id == id;
}


/* Whether constant C is a bias the head can take: per output channel for Conv (dims all 1 but
 * the channel axis, right-aligned against [N, M, spatial...]), a row of N for MatMul and Gemm. */
static int bias_fits(const loom_graph *g, const graph_node *head, const graph_value *c)
{
    const loom_tensor_desc *y = &g->values[head->outputs[0]].desc;
    int64_t numel = loom_tensor_desc_numel(&c->desc);
    if (op_is(head, LOOM_OP_CONV)) {
        if (head->n_inputs > 2 && head->inputs[2] != LOOM_NO_VALUE)
            return 0;
        if (numel != y->dims[1] || c->desc.rank > y->rank || c->desc.rank < 1)
            return 0;
        /* right-aligned: the channel axis of Y is at c's rank - (y->rank - 1) */
        int64_t ch_axis = (int64_t)c->desc.rank - (int64_t)(y->rank - 1);
        if (ch_axis < 0)
            return 0;
        for (uint32_t i = 0; i < c->desc.rank; i++)
            if ((int64_t)i != ch_axis && c->desc.dims[i] != 1)
                return 0;
        return c->desc.dims[ch_axis] == y->dims[1];
    }
    int64_t n = y->dims[y->rank - 1];
    if (numel != n || c->desc.dims[c->desc.rank - 1] != n || c->desc.rank > y->rank)
        return 0;
    if (op_is(head, LOOM_OP_GEMM)) {
        if (head->n_inputs > 2 && head->inputs[2] != LOOM_NO_VALUE)
            return 0;
        const loom_attr *b = loom_attr_list_get(&head->attrs, "beta");
        return !b || b->f == 1.0f;
    }
    return 1;
}

/* The activation node N applied to V, as (name, alpha, beta); 0 when it is none we fuse. Sets
 * *SILU_MUL to the Mul of x * Sigmoid(x) when N is that Sigmoid. */
static int activation_of(const loom_graph *g, const int32_t *reader, const graph_node *n,
                         loom_value v, fuse_chain *c, int32_t *silu_mul)
{
    *silu_mul = -1;
    if (n->n_inputs < 1 || n->inputs[0] != v)
        return 0;
    c->alpha = c->beta = 0.0f;
    switch (n->def->id) {
    case LOOM_OP_RELU:
        c->act = "Relu";
        return 1;
    case LOOM_OP_LEAKY_RELU: {
        const loom_attr *a = loom_attr_list_get(&n->attrs, "alpha");
        c->act = "LeakyRelu";
        c->alpha = a ? a->f : 0.01f;
        return 1;
    }
    case LOOM_OP_HARD_SIGMOID: {
        const loom_attr *a = loom_attr_list_get(&n->attrs, "alpha"),
                        *b = loom_attr_list_get(&n->attrs, "beta");
        c->act = "HardSigmoid";
        c->alpha = a ? a->f : 0.2f;
        c->beta = b ? b->f : 0.5f;
        return 1;
    }
    case LOOM_OP_HARD_SWISH:
        c->act = "HardSwish";
        return 1;
    case LOOM_OP_GELU: {
        const loom_attr *a = loom_attr_list_get(&n->attrs, "approximate");
        if (a && a->s && strcmp(a->s, "tanh") == 0)
            c->act = "GeluTanh";
        else if (!a || !a->s || strcmp(a->s, "none") == 0)
            c->act = "Gelu";
        else
            return 0;
        return 1;
    }
    case LOOM_OP_CLIP: {
        float lo = -INFINITY, hi = INFINITY;
        for (uint32_t k = 1; k < n->n_inputs && k < 3; k++) {
            if (n->inputs[k] == LOOM_NO_VALUE)
                continue;
            const graph_value *b = passes_const_f32(g, n->inputs[k]);
            if (!b || loom_tensor_desc_numel(&b->desc) != 1)
                return 0;
            *(k == 1 ? &lo : &hi) = *(const float *)b->data;
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
    (void)reader;
}

/* Whether ints attribute NAME of N is absent or all VALUE. */
static int ints_all(const graph_node *n, const char *name, int64_t value)
{
    const loom_attr *a = loom_attr_list_get(&n->attrs, name);
    if (!a)
        return 1;
    if (a->kind != LOOM_ATTR_INTS)
        return 0;
    for (size_t i = 0; i < a->count; i++)
        if (a->ints[i] != value)
            return 0;
    return 1;
}

/* 4. A MaxPool of a 2-D Conv chain's last output (node LAST): absorbed when it is the value's
 * only reader, has no Indices output, no padding, dilation or ceil rounding (FusedConv's pool
 * attributes, graph/ops_fused.c). Not after SiLU (two nodes read its input). */
static int pool_of(const loom_graph *g, const int32_t *reader, const int32_t *role,
                   const graph_node *head, fuse_chain *c, uint32_t last)
{
    if (!op_is(head, LOOM_OP_CONV) || strcmp(c->act, "SiLU") == 0)
        return 0;
    const loom_value cur = g->nodes[last].outputs[0];
    if (g->values[cur].desc.rank != 4)
        return 0;
    const int32_t r = passes_only_reader(g, reader, cur);
    if (r < 0 || role[r] >= 0)
        return 0;
    const graph_node *n = &g->nodes[r];
    if (!op_is(n, LOOM_OP_MAX_POOL) || n->n_inputs != 1 || n->n_outputs != 1 ||
        g->values[n->outputs[0]].desc.dtype != LOOM_DTYPE_F32)
        return 0;
    const loom_attr *k = loom_attr_list_get(&n->attrs, "kernel_shape");
    const loom_attr *s = loom_attr_list_get(&n->attrs, "strides");
    const loom_attr *ap = loom_attr_list_get(&n->attrs, "auto_pad");
    if (!k || k->kind != LOOM_ATTR_INTS || k->count != 2 ||
        (s && (s->kind != LOOM_ATTR_INTS || s->count != 2)) || !ints_all(n, "pads", 0) ||
        !ints_all(n, "dilations", 1) ||
        (ap && (ap->kind != LOOM_ATTR_STRING || !ap->s ||
                (strcmp(ap->s, "NOTSET") != 0 && strcmp(ap->s, "VALID") != 0))))
        return 0;
    const loom_attr *cm = loom_attr_list_get(&n->attrs, "ceil_mode");
    if (cm && (cm->kind != LOOM_ATTR_INT || cm->i != 0))
        return 0;
    for (int i = 0; i < 2; i++) {
        c->pool_k[i] = k->ints[i];
        c->pool_s[i] = s ? s->ints[i] : 1;
        if (c->pool_k[i] < 1 || c->pool_s[i] < 1)
            return 0;
    }
    c->pool = 1;
    snprintf(c->ops + strlen(c->ops), sizeof c->ops - strlen(c->ops), "+MaxPool");
    c->last = (uint32_t)r;
    return 1;
}

/* The chain that starts at node H, if it absorbs anything. */
static int plan_chain(const loom_graph *g, const int32_t *reader, const int32_t *role,
                      uint32_t h, fuse_chain *c)
{
    const graph_node *head = &g->nodes[h];
    memset(c, 0, sizeof *c);
    c->head = c->last = h;
    c->bias = c->z = LOOM_NO_VALUE;
    c->act = "";
    if (!(op_is(head, LOOM_OP_CONV) || op_is(head, LOOM_OP_MATMUL) || op_is(head, LOOM_OP_GEMM)) ||
        head->n_outputs != 1 || role[h] >= 0)
        return 0;
    loom_value cur = head->outputs[0];
    const loom_tensor_desc *y = &g->values[cur].desc;
    if (y->dtype != LOOM_DTYPE_F32 || y->rank < 1)
        return 0;
    if (op_is(head, LOOM_OP_CONV) && (y->rank < 3 || y->rank > 4))
        return 0;
    if (op_is(head, LOOM_OP_MATMUL) &&
        (g->values[head->inputs[0]].desc.rank < 2 || g->values[head->inputs[1]].desc.rank != 2))
        return 0;
    snprintf(c->ops, sizeof c->ops, "%s", head->def->name);
    int absorbed = 0, step = 0;
    for (;;) {
        int32_t r = passes_only_reader(g, reader, cur);
        int32_t r2 = -1;
        /* x * Sigmoid(x): two readers of cur, the Sigmoid's only reader the Mul. */
        if (r < 0 && step < 3 && g->values[cur].output_index < 0 &&
            g->values[cur].n_consumers == 2) {
            /* reader[] keeps the first reader; find the Sigmoid among the nodes reading cur. */
            for (size_t i = 0; i < g->n_nodes && r2 < 0; i++) {
                const graph_node *s = &g->nodes[i];
                if (!op_is(s, LOOM_OP_SIGMOID) || s->inputs[0] != cur || role[i] >= 0)
                    continue;
                int32_t m = passes_only_reader(g, reader, s->outputs[0]);
                if (m < 0 || !op_is(&g->nodes[m], LOOM_OP_MUL))
                    continue;
                const graph_node *mn = &g->nodes[m];
                if ((mn->inputs[0] == cur && mn->inputs[1] == s->outputs[0]) ||
                    (mn->inputs[1] == cur && mn->inputs[0] == s->outputs[0])) {
                    r = (int32_t)i;
                    r2 = m;
                }
            }
            if (r2 < 0)
                break;
            c->act = "SiLU";
            snprintf(c->ops + strlen(c->ops), sizeof c->ops - strlen(c->ops), "+Sigmoid+Mul");
            c->last = (uint32_t)r2;
            absorbed += 2;
            break;
        }
        if (r < 0 || role[r] >= 0)
            break;
        const graph_node *n = &g->nodes[r];
        if (n->n_outputs != 1 || !same_desc(&g->values[n->outputs[0]].desc, y))
            break;
        loom_value other = passes_other_input(n, LOOM_OP_ADD, cur);
        if (step < 1 && other != LOOM_NO_VALUE && passes_const_f32(g, other) &&
            bias_fits(g, head, passes_const_f32(g, other))) {
            c->bias = other;
            step = 1;
        } else if (step < 2 && other != LOOM_NO_VALUE && same_desc(&g->values[other].desc, y)) {
            c->z = other;
            step = 2;
        } else if (step < 3 && activation_of(g, reader, n, cur, c, &r2)) {
            step = 3;
        } else {
            break;
        }
        snprintf(c->ops + strlen(c->ops), sizeof c->ops - strlen(c->ops), "+%s", n->def->name);
        c->last = (uint32_t)r;
        cur = n->outputs[0];
        absorbed++;
        if (step == 3)
            break;
    }
    if (pool_of(g, reader, role, head, c, c->last))
        absorbed++;
    return absorbed > 0;
}

static int rewrite(void *user, graph_rebuild_ctx *rc, const graph_node *nd, loom_value *out)
{
    fuse_state *fs = user;
    const loom_graph *src = fs->g;
    uint32_t idx = (uint32_t)(nd - src->nodes);
    if (fs->role[idx] < 0)
        return 0;
    const fuse_chain *c = &fs->chains[fs->role[idx]];
    if (idx != c->last)
        return 2; /* absorbed: the chain's last node makes the fused one */
    const graph_node *head = &src->nodes[c->head];
    loom_graph *g = graph_rebuild_dst(rc);
    loom_value ins[4] = {LOOM_NO_VALUE, LOOM_NO_VALUE, LOOM_NO_VALUE, LOOM_NO_VALUE};
    uint32_t n_base = op_is(head, LOOM_OP_MATMUL) ? 2 : head->n_inputs;
    for (uint32_t k = 0; k < n_base && k < 3; k++)
        ins[k] = graph_rebuild_map(rc, head->inputs[k]);
    if (c->bias != LOOM_NO_VALUE) {
        /* As the head's B (Conv: [M]), bias ([N]) or C (as it is). */
        const graph_value *b = &src->values[c->bias];
        if (op_is(head, LOOM_OP_GEMM)) {
            ins[2] = graph_rebuild_map(rc, c->bias);
        } else {
            int64_t d[1] = {loom_tensor_desc_numel(&b->desc)};
            char name[300];
            snprintf(name, sizeof name, "%s.bias", head->name);
            ins[2] = loom_constant(g, loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL,
                                   LOOM_DTYPE_F32, 1, d, b->data);
        }
    }
    if (c->z != LOOM_NO_VALUE)
        ins[3] = graph_rebuild_map(rc, c->z);
    uint32_t n_in = c->z != LOOM_NO_VALUE ? 4 : ins[2] != LOOM_NO_VALUE ? 3 : 2;
    loom_attr *attrs = malloc((head->attrs.count + 7) * sizeof *attrs);
    if (!attrs) {
        loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory fusing node '%s'", head->name);
        return -1;
    }
    if (head->attrs.count) /* MatMul has none: memcpy from NULL is undefined even for 0 bytes */
        memcpy(attrs, head->attrs.items, head->attrs.count * sizeof *attrs);
    size_t na = head->attrs.count;
    attrs[na++] = loom_attr_string("activation", c->act);
    attrs[na++] = loom_attr_float("activation_alpha", c->alpha);
    attrs[na++] = loom_attr_float("activation_beta", c->beta);
    attrs[na++] = loom_attr_string("fused_ops", c->ops);
    if (c->pool) {
        attrs[na++] = loom_attr_string("pool", "MaxPool");
        attrs[na++] = loom_attr_ints("pool_kernel", 2, c->pool_k);
        attrs[na++] = loom_attr_ints("pool_strides", 2, c->pool_s);
    }
    const char *op = op_is(head, LOOM_OP_CONV)     ? "FusedConv"
                     : op_is(head, LOOM_OP_MATMUL) ? "FusedMatMul"
                                                   : "FusedGemm";
    loom_status st = loom_graph_op(g, op, head->name, ins, n_in, attrs, na, out, 1);
    free(attrs);
    return st == LOOM_OK ? 1 : -1;
}

loom_status pass_fuse_epilogue(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                               char *summary, size_t summary_len)
{
    *out = NULL;
    if (!ctx->fuse_epilogue) {
        if (ctx->fuse_epilogue_off[0])
            snprintf(summary, summary_len, "off: %s", ctx->fuse_epilogue_off);
        else
            snprintf(summary, summary_len, "off (no CPU among the devices the plan may use)");
        return LOOM_OK;
    }
    fuse_state fs = {.g = in};
    int32_t *reader;
    void *chains;
    loom_status sst = passes_chain_scratch(in, sizeof *fs.chains, "fusing", &reader, &fs.role,
                                           &chains);
    if (sst != LOOM_OK)
        return sst;
    fs.chains = chains;
    /* Heads in topological order, so that a chain never starts inside another. */
    size_t counts[3] = {0, 0, 0};
    for (size_t p = 0; p < in->n_nodes; p++) {
        uint32_t h = ctx->order[p];
        fuse_chain c;
        if (!plan_chain(in, reader, fs.role, h, &c))
            continue;
        int32_t id = (int32_t)fs.n_chains;
        fs.chains[fs.n_chains++] = c;
        /* Mark the chain: follow it from the head to the last node. */
        fs.role[h] = id;
        loom_value cur = in->nodes[h].outputs[0];
        while (1) {
            int32_t r = reader[cur];
            if (r < 0)
                break;
            /* SiLU: both readers of cur (the Sigmoid and the Mul) belong to the chain. */
            if (strcmp(c.act, "SiLU") == 0 && in->values[cur].n_consumers == 2) {
                for (size_t i = 0; i < in->n_nodes; i++) {
                    const graph_node *s = &in->nodes[i];
                    for (uint32_t k = 0; k < s->n_inputs; k++)
                        if (s->inputs[k] == cur && fs.role[i] < 0)
                            fs.role[i] = id;
                }
                break;
            }
            fs.role[r] = id;
            fs.absorbed++;
            if ((uint32_t)r == c.last)
                break;
            cur = in->nodes[r].outputs[0];
        }
        if (strcmp(c.act, "SiLU") == 0)
            fs.absorbed += 2;
        counts[op_is(&in->nodes[h], LOOM_OP_CONV) ? 0 : op_is(&in->nodes[h], LOOM_OP_MATMUL) ? 1 : 2]++;
    }
    free(reader);
    if (!fs.n_chains) {
        free(fs.role);
        free(fs.chains);
        snprintf(summary, summary_len, "nothing to fuse");
        return LOOM_OK;
    }
    loom_graph *g;
    loom_status st = graph_rebuild_with(in, ctx->order, ctx->eval, rewrite, &fs, &g);
    free(fs.role);
    free(fs.chains);
    if (st != LOOM_OK)
        return st;
    snprintf(summary, summary_len,
             "%zu nodes absorbed into %zu Conv, %zu MatMul, %zu Gemm (bias, residual, activation, "
             "pooling)",
             fs.absorbed, counts[0], counts[1], counts[2]);
    *out = g;
    return LOOM_OK;
}
