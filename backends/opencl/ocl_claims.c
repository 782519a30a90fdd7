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
 * The chains are found by backends/common/chain_match.c (shared with the CPU backend; its
 * header gives their rules); this file keeps what is OpenCL's: which chains a device runs (not
 * Conv heads; every node supported by the device) and their kernels. Estimates are left to the
 * host (negative).
 */
#include "ocl_kernels.h"
#include "backends/common/chain_match.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- matching over a graph ------------------------------------------------------------------- */

/* The device a chain is matched for: chain_runs_fn's context. */
typedef struct oc_target {
    const ocl_state *s;
    const ocl_device *d;
} oc_target;

/* chain_runs_fn (CTX: an oc_target): whether the device runs every node of C (and the chain is
 * one this backend compiles). */
static int oc_device_runs(void *ctx, const chain_view *v, const chain_match *c)
{
    const oc_target *t = ctx;
    const ocl_state *s = t->s;
    const ocl_device *d = t->d;
    char why[256];
    if (c->kind == CHAIN_GEMM && chain_node(v, c->head)->op == LOOM_OP_CONV)
        return 0; /* Conv adds its bias per channel itself; not claimed here */
    for (uint32_t i = 0; i < c->n; i++)
        if (!ocl_kernels_supports(s, d, chain_node(v, c->nodes[i]), why, sizeof why))
            return 0;
    return loom_tensor_desc_numel(chain_desc(v, c->out)) > 0;
}

uint32_t ocl_claim(void *ctx, uint32_t dev, const loom_subgraph_desc *graph, uint32_t *nodes,
                   uint32_t max_nodes, loom_claim *claims, uint32_t max_claims)
{
    ocl_state *s = ctx;
    if (!s || dev >= s->n_devs)
        return 0;
    oc_target t = {s, &s->devs[dev]};
    return chain_claims_find(graph, oc_device_runs, &t, nodes, max_nodes, claims, max_claims);
}

/* ---- compiled chains ------------------------------------------------------------------------- */

typedef struct oc_params {
    chain_kind kind;
    /* CHAIN_GEMM: the head's own kernel, which set input each of its inputs is, the epilogue */
    ocl_kernel *inner;
    int32_t map[3];
    uint32_t n_head_in;
    int32_t bias, z;
    int act;
    float alpha, beta;
    int64_t cols, numel;
    /* CHAIN_ADD_LN, CHAIN_LN_DECOMP */
    int32_t x, r, scale, lbias;
    int rmode;
    int64_t rows, n;
    float eps;
    size_t local;
    /* CHAIN_SOFTMAX */
    int32_t mask;
    int has_scale, div;
    float c;
} oc_params;

static void oc_params_free(void *params)
{
    oc_params *p = params;
    if (!p)
        return;
    ocl_kernel_free(p->inner);
    free(p);
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
    case CHAIN_GEMM:
        return oc_run_gemm(r, k, p);
    case CHAIN_ADD_LN:
    case CHAIN_LN_DECOMP:
        return oc_run_ln(r, p);
    case CHAIN_SOFTMAX:
        return oc_run_softmax(r, k, p);
    }
    return ocl_run_fail(r, LOOM_ERR_INTERNAL, "unknown chain kind");
}

/* The head's own kernel (MatMul or Gemm as ocl_kernels_gemm.c prepares it) into P. */
static loom_status oc_prepare_gemm(ocl_state *s, ocl_device *d, const chain_view *v,
                                   const chain_match *c, oc_params *p, char *err, size_t len)
{
    const loom_node_desc *h = chain_node(v, c->head);
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
        p->map[j] = j < in->n_in ? chain_in(v, c->head, j) : -1;
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

static void oc_prepare_ln(ocl_device *d, const chain_view *v, const chain_match *c, oc_params *p)
{
    const loom_tensor_desc *y = chain_desc(v, c->out);
    chain_rows(v, c, &p->rows, &p->n);
    p->x = c->x;
    p->r = c->r;
    p->scale = c->scale;
    p->lbias = c->lbias;
    p->eps = c->eps;
    p->rmode = c->r < 0 ? 0
               : loom_tensor_desc_numel(chain_desc(v, c->r)) == loom_tensor_desc_numel(y) ? 1
                                                                                       : 2;
    p->local = ocl_row_local(d, d->kernels[OCL_K_ADD_LAYERNORM], p->n, 256);
}

static loom_status oc_prepare_softmax(ocl_state *s, ocl_device *d, const chain_view *v,
                                      const chain_match *c, oc_params *p, ocl_kernel *k, char *err,
                                      size_t len)
{
    const loom_tensor_desc *y = chain_desc(v, c->out);
    chain_rows(v, c, &p->rows, &p->n);
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
    chain_mask_strides(v, c, &meta[1 + orank], &meta[1 + 2 * orank]);
    return ocl_put_meta(s, d, k, meta, 2 + 2 * (size_t)orank, 0, err, len);
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
    chain_view v;
    if (!sg || chain_view_init(&v, sg) != 0)
        return ocl_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "opencl:%u: %s: malformed subgraph (a value id out of range or used "
                        "before it is produced)", dev, name);
    chain_match c;
    char why[256] = "";
    oc_target t = {s, d};
    st = chain_match_whole(&v, oc_device_runs, &t, "this backend", &c, why, sizeof why);
    if (st != LOOM_OK)
        ocl_fail(err, err_len, st, "opencl:%u: %s: %s", dev, name, why);
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
        k->op = chain_node(&v, c.nodes[c.n - 1])->op;
        snprintf(k->name, sizeof k->name, "%s", name);
        snprintf(k->op_name, sizeof k->op_name, "%.39s", c.ops);
        k->n_in = sg->n_inputs;
        k->n_out = 1;
        if (sg->n_inputs)
            memcpy(k->in, sg->inputs, sg->n_inputs * sizeof *k->in);
        k->out[0] = sg->outputs[0];
        /* Constants (weights, biases, LayerNorm's scale) live in this handle's buffers, or in
         * the host's device copies of shared ones (retained). */
        const void *const *shared = LOOM_SUBGRAPH_DESC_HAS_DEVICE_CONSTANTS(sg)
                                        ? sg->input_device_constants
                                        : NULL;
        for (uint32_t i = 0; sg->input_constants && i < sg->n_inputs && st == LOOM_OK; i++) {
            if (!sg->input_constants[i] || sg->inputs[i].dtype == LOOM_DTYPE_UNDEFINED)
                continue;
            size_t bytes = (size_t)loom_tensor_desc_numel(&sg->inputs[i]) *
                           loom_dtype_size(sg->inputs[i].dtype);
            if (shared && shared[i] && (k->consts[i] = ocl_buffer_shared(d, shared[i], bytes)))
                continue;
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
        case CHAIN_GEMM:
            st = oc_prepare_gemm(s, d, &v, &c, p, msg, sizeof msg);
            break;
        case CHAIN_ADD_LN:
        case CHAIN_LN_DECOMP:
            oc_prepare_ln(d, &v, &c, p);
            break;
        case CHAIN_SOFTMAX:
            st = oc_prepare_softmax(s, d, &v, &c, p, k, msg, sizeof msg);
            break;
        }
        if (st != LOOM_OK)
            ocl_fail(err, err_len, st, "opencl:%u: %s (%s): %s", dev, name, c.ops, msg);
        k->run = oc_run;
        k->scratch_bytes = p->inner ? p->inner->scratch_bytes : 0;
    }
    chain_view_free(&v);
    if (st != LOOM_OK) {
        ocl_kernel_free(k);
        return st;
    }
    *kernel = k;
    *scratch_bytes = k->scratch_bytes;
    return LOOM_OK;
}
