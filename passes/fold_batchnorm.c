/*
 * The fold_batchnorm pass: a Conv (or ConvTranspose) whose output is read only by an inference
 * BatchNormalization becomes one Conv with the normalisation folded into its weights and bias.
 * With s[o] = scale[o] / sqrt(var[o] + epsilon) per output channel o:
 *   W'[o-slice] = W[o-slice] * s[o]      B'[o] = (B[o] - mean[o]) * s[o] + beta[o]   (B = 0 if absent)
 * Conv's W is [M, C/group, k...]: output channel o is W's axis 0, whatever the group.
 * ConvTranspose's W is [C, M/group, k...]: input channel c of group c / (C/group) writes output
 * channel (c / (C/group)) * (M/group) + j through W[c, j, ...].
 * Conditions: f32 throughout; W, B (when present) and the four BatchNormalization parameters are
 * constants; the Conv's output is not a graph output and has no reader but the normalisation;
 * every s[o] and folded value is finite (otherwise the two nodes stay, and compute as before).
 * The folded node keeps the Conv's name and takes the normalisation's output (and its name), so
 * fuse_epilogue, which runs after, sees Conv + activation. LOOM_FOLD_BN=0 turns the pass off.
 */
#include "passes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fold_state {
    const loom_graph *g;
    int32_t *bn_of;  /* per node: for a Conv that folds, its BatchNormalization; else -1 */
    int32_t *conv_of; /* per node: for a BatchNormalization that folds, its Conv; else -1 */
} fold_state;

/* A constant f32 vector of M elements, or NULL. */
static const float *vec_f32(const loom_graph *g, loom_value v, int64_t m)
{
    const graph_value *c = passes_const_f32(g, v);
    if (!c || c->desc.rank != 1 || c->desc.dims[0] != m)
        return NULL;
    return c->data;
}

/* Whether Conv node C (index CI) folds into its only reader, a BatchNormalization; returns the
 * reader's index or -1. */
static int32_t foldable(const loom_graph *g, const int32_t *reader, uint32_t ci)
{
    const graph_node *c = &g->nodes[ci];
    int transpose = c->def->id == LOOM_OP_CONV_TRANSPOSE;
    if ((c->def->id != LOOM_OP_CONV && !transpose) || c->n_outputs != 1 || c->n_inputs < 2)
        return -1;
    loom_value y = c->outputs[0];
    const graph_value *yv = &g->values[y];
    int32_t b = passes_only_reader(g, reader, y);
    if (b < 0 || yv->desc.dtype != LOOM_DTYPE_F32 || yv->desc.rank < 3)
        return -1;
    if (g->values[c->inputs[0]].desc.dtype != LOOM_DTYPE_F32)
        return -1;
    const graph_value *w = passes_const_f32(g, c->inputs[1]);
    if (!w || w->desc.rank != yv->desc.rank)
        return -1;
    int64_t m = yv->desc.dims[1];
    if (c->n_inputs > 2 && c->inputs[2] != LOOM_NO_VALUE && !vec_f32(g, c->inputs[2], m))
        return -1;
    if (transpose) {
        const loom_attr *ga = loom_attr_list_get(&c->attrs, "group");
        int64_t group = ga ? ga->i : 1;
        if (group < 1 || w->desc.dims[0] % group != 0 || w->desc.dims[1] * group != m)
            return -1;
    } else if (w->desc.dims[0] != m) {
        return -1;
    }
    const graph_node *bn = &g->nodes[b];
    if (bn->def->id != LOOM_OP_BATCH_NORMALIZATION || bn->n_inputs != 5 || bn->n_outputs != 1 ||
        bn->inputs[0] != y)
        return -1;
    const float *p[4];
    for (uint32_t k = 0; k < 4; k++)
        if (!(p[k] = vec_f32(g, bn->inputs[k + 1], m)))
            return -1;
    const loom_attr *ea = loom_attr_list_get(&bn->attrs, "epsilon");
    double eps = ea ? ea->f : 1e-5;
    for (int64_t o = 0; o < m; o++) {
        double s = p[0][o] / sqrt((double)p[3][o] + eps);
        if (!isfinite(s) || !isfinite(p[1][o]) || !isfinite(p[2][o]))
            return -1;
    }
    return b;
}

/* Name NAME if free in G, else NULL (the builder makes one up). */
static const char *free_name(loom_graph *g, const char *name)
{
    return loom_graph_find_value(g, name) == LOOM_NO_VALUE ? name : NULL;
}

/* Make the folded Conv for source Conv C and BatchNormalization BN in the new graph. */
static int make_folded(graph_rebuild_ctx *rc, const loom_graph *src, const graph_node *c,
                       const graph_node *bn, loom_value *out)
{
    loom_graph *g = graph_rebuild_dst(rc);
    int transpose = c->def->id == LOOM_OP_CONV_TRANSPOSE;
    const graph_value *w = &src->values[c->inputs[1]];
    int64_t m = src->values[c->outputs[0]].desc.dims[1];
    const float *scale = src->values[bn->inputs[1]].data, *beta = src->values[bn->inputs[2]].data,
                *mean = src->values[bn->inputs[3]].data, *var = src->values[bn->inputs[4]].data;
    const float *bias = c->n_inputs > 2 && c->inputs[2] != LOOM_NO_VALUE
                            ? src->values[c->inputs[2]].data
                            : NULL;
    const loom_attr *ea = loom_attr_list_get(&bn->attrs, "epsilon");
    double eps = ea ? ea->f : 1e-5;
    size_t wn = (size_t)loom_tensor_desc_numel(&w->desc);
    double *s = malloc((size_t)m * sizeof *s);
    float *nw = malloc(wn * sizeof *nw), *nb = malloc((size_t)m * sizeof *nb);
    if (!s || !nw || !nb) {
        free(s);
        free(nw);
        free(nb);
        loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory folding node '%s'", bn->name);
        return -1;
    }
    for (int64_t o = 0; o < m; o++) {
        s[o] = scale[o] / sqrt((double)var[o] + eps);
        nb[o] = (float)(((bias ? (double)bias[o] : 0.0) - mean[o]) * s[o] + beta[o]);
    }
    const float *wd = w->data;
    if (!transpose) {
        size_t per = wn / (size_t)m; /* C/group * prod(kernel) */
        for (int64_t o = 0; o < m; o++)
            for (size_t i = 0; i < per; i++)
                nw[(size_t)o * per + i] = (float)(wd[(size_t)o * per + i] * s[o]);
    } else {
        const loom_attr *ga = loom_attr_list_get(&c->attrs, "group");
        int64_t group = ga ? ga->i : 1, cin = w->desc.dims[0], mg = w->desc.dims[1];
        size_t k = wn / (size_t)(cin * mg); /* prod(kernel) */
        for (int64_t ci = 0; ci < cin; ci++)
            for (int64_t j = 0; j < mg; j++) {
                double so = s[(ci / (cin / group)) * mg + j];
                size_t at = ((size_t)ci * (size_t)mg + (size_t)j) * k;
                for (size_t i = 0; i < k; i++)
                    nw[at + i] = (float)(wd[at + i] * so);
            }
    }
    char wname[300], bname[300];
    snprintf(wname, sizeof wname, "%s.W_bn", c->name);
    snprintf(bname, sizeof bname, "%s.B_bn", c->name);
    int64_t bd[1] = {m};
    loom_value ins[3];
    ins[0] = graph_rebuild_map(rc, c->inputs[0]);
    ins[1] = loom_constant(g, free_name(g, wname), LOOM_DTYPE_F32, w->desc.rank, w->desc.dims, nw);
    ins[2] = loom_constant(g, free_name(g, bname), LOOM_DTYPE_F32, 1, bd, nb);
    free(s);
    free(nw);
    free(nb);
    loom_status st = loom_graph_op(g, c->def->name, c->name, ins, 3, c->attrs.items,
                                   c->attrs.count, out, 1);
    return st == LOOM_OK ? 1 : -1;
}

static int rewrite(void *user, graph_rebuild_ctx *rc, const graph_node *nd, loom_value *out)
{
    fold_state *fs = user;
    uint32_t idx = (uint32_t)(nd - fs->g->nodes);
    if (fs->bn_of[idx] >= 0)
        return 2; /* the Conv: made when its BatchNormalization comes */
    if (fs->conv_of[idx] < 0)
        return 0;
    return make_folded(rc, fs->g, &fs->g->nodes[fs->conv_of[idx]], nd, out);
}

loom_status pass_fold_batchnorm(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                char *summary, size_t summary_len)
{
    *out = NULL;
    const char *env = getenv("LOOM_FOLD_BN");
    if (env && strcmp(env, "0") == 0) {
        snprintf(summary, summary_len, "off: LOOM_FOLD_BN=0");
        return LOOM_OK;
    }
    fold_state fs = {.g = in};
    int32_t *reader = malloc((in->n_values + 1) * sizeof *reader);
    fs.bn_of = malloc((in->n_nodes + 1) * sizeof *fs.bn_of);
    fs.conv_of = malloc((in->n_nodes + 1) * sizeof *fs.conv_of);
    if (!reader || !fs.bn_of || !fs.conv_of) {
        free(reader);
        free(fs.bn_of);
        free(fs.conv_of);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory folding graph '%s'",
                              in->name);
    }
    passes_first_readers(in, reader);
    for (size_t i = 0; i < in->n_nodes; i++)
        fs.bn_of[i] = fs.conv_of[i] = -1;
    size_t n_conv = 0, n_tconv = 0;
    for (size_t i = 0; i < in->n_nodes; i++) {
        int32_t b = foldable(in, reader, (uint32_t)i);
        if (b < 0)
            continue;
        fs.bn_of[i] = b;
        fs.conv_of[b] = (int32_t)i;
        if (in->nodes[i].def->id == LOOM_OP_CONV)
            n_conv++;
        else
            n_tconv++;
    }
    free(reader);
    if (!n_conv && !n_tconv) {
        free(fs.bn_of);
        free(fs.conv_of);
        snprintf(summary, summary_len, "nothing to fold");
        return LOOM_OK;
    }
    loom_graph *g;
    loom_status st = graph_rebuild_with(in, ctx->order, ctx->eval, rewrite, &fs, &g);
    free(fs.bn_of);
    free(fs.conv_of);
    if (st != LOOM_OK)
        return st;
    if (n_tconv)
        snprintf(summary, summary_len,
                 "folded %zu BatchNormalization into Conv, %zu into ConvTranspose",
                 n_conv, n_tconv);
    else
        snprintf(summary, summary_len, "folded %zu BatchNormalization into Conv", n_conv);
    *out = g;
    return LOOM_OK;
}
