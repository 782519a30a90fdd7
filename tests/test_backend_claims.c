/*
 * Subgraph claims of the CPU and OpenCL backends (backend ABI 1.0, issue 15), through their
 * tables: subgraph descriptors built by hand as the host builds them (value numbering of
 * loom_subgraph_desc), claim() checked for what it takes and what it must leave (an
 * intermediate read elsewhere), prepare_subgraph + execute compared with the same nodes run one
 * by one on the same backend and with naive loops here. OpenCL parts skip with a note when
 * there is no OpenCL device (run with LOOM_OPENCL=1 and PoCL, as tests/meson.build does).
 */
#include "../backends/cpu/cpu_backend.h"
#include "../backends/opencl/ocl_backend.h"

#include <loom/graph.h>
#include <loom/runtime.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32
#define MAXV 48
#define MAXN 16

static const loom_backend *g_cpu, *g_ocl;

/* ---- deterministic data -------------------------------------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static float rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

static float *rnd_buf(size_t n)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = rnd();
    return p;
}

/* ---- a subgraph descriptor built by hand ------------------------------------------------------ */

typedef struct tb {
    uint32_t n_inputs, n_nodes, n_values, n_outputs;
    loom_tensor_desc vdesc[MAXV];
    const void *vconst[MAXV];
    loom_node_desc nodes[MAXN];
    int32_t ins[MAXN][4];
    const int32_t *node_inputs[MAXN];
    loom_tensor_desc nin[MAXN][4];
    const void *ncon[MAXN][4];
    loom_attr attrs[MAXN][8];
    int64_t ints[MAXN][8][8];
    uint32_t outputs[8];
    loom_tensor_desc out_desc[8];
} tb;

static loom_tensor_desc td(uint32_t rank, const int64_t *dims)
{
    loom_tensor_desc d;
    memset(&d, 0, sizeof d);
    d.dtype = F32;
    d.rank = rank;
    for (uint32_t i = 0; i < rank; i++)
        d.dims[i] = dims[i];
    return d;
}

#define TD(...) td(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t), (int64_t[]){__VA_ARGS__})

/* An input of the set (all inputs come before the nodes); DATA non-NULL makes it a constant. */
static int32_t tb_input(tb *b, loom_tensor_desc d, const void *data)
{
    CU_ASSERT_FATAL(b->n_nodes == 0 && b->n_values < MAXV);
    b->vdesc[b->n_values] = d;
    b->vconst[b->n_values] = data;
    b->n_inputs++;
    return (int32_t)b->n_values++;
}

typedef struct ta {
    const char *name;
    loom_attr_kind kind;
    int64_t i;
    float f;
    const char *s;
    int64_t ints[8];
    size_t count;
} ta;

/* A node OP reading INS, with output OUT; returns its output's value id. */
static int32_t tb_node(tb *b, loom_op_id op, const char *op_name, const int32_t *ins, uint32_t n,
                       loom_tensor_desc out, const ta *attrs, uint32_t n_attrs)
{
    CU_ASSERT_FATAL(b->n_nodes < MAXN && b->n_values < MAXV && n <= 4 && n_attrs <= 8);
    uint32_t k = b->n_nodes++;
    loom_node_desc *nd = &b->nodes[k];
    memset(nd, 0, sizeof *nd);
    nd->abi_version = LOOM_ABI_VERSION;
    nd->struct_size = sizeof *nd;
    nd->op = op;
    nd->op_name = op_name;
    nd->name = op_name;
    nd->n_inputs = n;
    nd->n_outputs = 1;
    for (uint32_t j = 0; j < n; j++) {
        b->ins[k][j] = ins[j];
        if (ins[j] >= 0) {
            b->nin[k][j] = b->vdesc[ins[j]];
            b->ncon[k][j] = b->vconst[ins[j]];
        }
    }
    b->node_inputs[k] = b->ins[k];
    nd->inputs = b->nin[k];
    nd->input_constants = b->ncon[k];
    b->vdesc[b->n_values] = out;
    b->vconst[b->n_values] = NULL;
    nd->outputs = &b->vdesc[b->n_values];
    for (uint32_t a = 0; a < n_attrs; a++) {
        loom_attr *at = &b->attrs[k][a];
        memset(at, 0, sizeof *at);
        at->name = attrs[a].name;
        at->kind = attrs[a].kind;
        at->i = attrs[a].i;
        at->f = attrs[a].f;
        at->s = attrs[a].s;
        if (attrs[a].kind == LOOM_ATTR_INTS) {
            memcpy(b->ints[k][a], attrs[a].ints, sizeof b->ints[k][a]);
            at->ints = b->ints[k][a];
            at->count = attrs[a].count;
        }
    }
    nd->n_attrs = n_attrs;
    nd->attrs = b->attrs[k];
    return (int32_t)b->n_values++;
}

static void tb_output(tb *b, int32_t v)
{
    b->out_desc[b->n_outputs] = b->vdesc[v];
    b->outputs[b->n_outputs++] = (uint32_t)v;
}

static loom_subgraph_desc tb_desc(const tb *b)
{
    loom_subgraph_desc g;
    memset(&g, 0, sizeof g);
    g.abi_version = LOOM_ABI_VERSION;
    g.struct_size = sizeof g;
    g.name = "test";
    g.n_nodes = b->n_nodes;
    g.nodes = b->nodes;
    g.node_inputs = b->node_inputs;
    g.n_inputs = b->n_inputs;
    g.inputs = b->vdesc;
    g.input_constants = b->vconst;
    g.n_outputs = b->n_outputs;
    g.outputs = b->out_desc;
    g.output_values = b->outputs;
    return g;
}

/* ---- running on a backend: node by node, or the compiled subgraph ---------------------------- */

static size_t nbytes(const loom_tensor_desc *d)
{
    return (size_t)loom_tensor_desc_numel(d) * sizeof(float);
}

static int host_visible(const loom_backend *be)
{
    loom_device_info info;
    memset(&info, 0, sizeof info);
    info.abi_version = LOOM_ABI_VERSION;
    info.struct_size = sizeof info;
    be->device_info(be->ctx, 0, &info);
    return info.host_visible || !be->alloc;
}

/* Memory for a value on BE's device 0 (host memory when host-visible), holding SRC if given. */
static void *dev_put(const loom_backend *be, const void *src, size_t bytes)
{
    if (host_visible(be)) {
        void *p = calloc(1, bytes ? bytes : 1);
        if (src)
            memcpy(p, src, bytes);
        return p;
    }
    void *p = be->alloc(be->ctx, 0, bytes ? bytes : 1, 64);
    char err[256];
    if (p && src)
        CU_ASSERT_EQUAL(be->upload(be->ctx, 0, p, src, bytes, err, sizeof err), LOOM_OK);
    return p;
}

static void dev_get(const loom_backend *be, void *dst, const void *p, size_t bytes)
{
    char err[256];
    if (host_visible(be))
        memcpy(dst, p, bytes);
    else
        CU_ASSERT_EQUAL(be->download(be->ctx, 0, dst, p, bytes, err, sizeof err), LOOM_OK);
}

static void dev_free(const loom_backend *be, void *p, size_t bytes)
{
    if (host_visible(be))
        free(p);
    else
        be->free(be->ctx, 0, p, bytes ? bytes : 1);
}

/* Run kernel K (from prepare or prepare_subgraph) with INS/OUTS device pointers. */
static loom_status exec_kernel(const loom_backend *be, void *k, size_t scratch_bytes,
                               const void *const *ins, void *const *outs, char *err, size_t len)
{
    void *scratch = scratch_bytes ? dev_put(be, NULL, scratch_bytes) : NULL;
    loom_exec_args a = {sizeof a, ins, outs, scratch};
    loom_status st = be->execute(be->ctx, 0, k, &a, err, len);
    if (scratch)
        dev_free(be, scratch, scratch_bytes);
    return st;
}

/* Inputs of the set: constants by their host pointer (what the host passes for them), the
 * others in device memory. */
static void **put_inputs(const loom_backend *be, const tb *b, float *const *data)
{
    void **v = calloc(MAXV, sizeof *v);
    for (uint32_t i = 0; i < b->n_inputs; i++)
        v[i] = b->vconst[i] ? (void *)b->vconst[i] : dev_put(be, data[i], nbytes(&b->vdesc[i]));
    return v;
}

static void free_values(const loom_backend *be, const tb *b, void **v, uint32_t upto)
{
    for (uint32_t i = 0; i < upto; i++)
        if (v[i] && !(i < b->n_inputs && b->vconst[i]))
            dev_free(be, v[i], nbytes(&b->vdesc[i]));
    free(v);
}

/* Every node of B one by one on BE; the value OUT into RESULT. */
static void run_nodes(const loom_backend *be, const tb *b, float *const *data, int32_t out,
                      float *result)
{
    void **v = put_inputs(be, b, data);
    char err[512] = "";
    for (uint32_t k = 0; k < b->n_nodes; k++) {
        const loom_node_desc *nd = &b->nodes[k];
        int32_t o = (int32_t)b->n_inputs + (int32_t)k;
        v[o] = dev_put(be, NULL, nbytes(&b->vdesc[o]));
        const void *ins[4] = {NULL, NULL, NULL, NULL};
        for (uint32_t j = 0; j < nd->n_inputs; j++)
            ins[j] = b->ins[k][j] >= 0 ? v[b->ins[k][j]] : NULL;
        void *kern = NULL;
        size_t scratch = 0;
        loom_status st = be->prepare(be->ctx, 0, nd, &kern, &scratch, err, sizeof err);
        CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
        void *outs[1] = {v[o]};
        st = exec_kernel(be, kern, scratch, ins, outs, err, sizeof err);
        if (st != LOOM_OK)
            printf("\n  node %s: %s\n", nd->op_name, err);
        CU_ASSERT_EQUAL(st, LOOM_OK);
        be->release_kernel(be->ctx, kern);
    }
    dev_get(be, result, v[out], nbytes(&b->vdesc[out]));
    free_values(be, b, v, b->n_values);
}

/* The whole of B as one compiled subgraph on BE (B's one output into RESULT). */
static loom_status run_compiled(const loom_backend *be, const tb *b, float *const *data,
                                float *result, char *err, size_t len)
{
    loom_subgraph_desc sg = tb_desc(b);
    void *kern = NULL;
    size_t scratch = 0;
    loom_status st = be->prepare_subgraph(be->ctx, 0, &sg, &kern, &scratch, err, len);
    if (st != LOOM_OK)
        return st;
    void **v = put_inputs(be, b, data);
    size_t ob = nbytes(&b->out_desc[0]);
    void *o = dev_put(be, NULL, ob);
    void *outs[1] = {o};
    st = exec_kernel(be, kern, scratch, (const void *const *)v, outs, err, len);
    if (st == LOOM_OK)
        dev_get(be, result, o, ob);
    dev_free(be, o, ob);
    free_values(be, b, v, b->n_inputs);
    be->release_kernel(be->ctx, kern);
    return st;
}

/* claim() on the whole of B: the number of claims, the first one's nodes into NODES. */
static uint32_t claim_all(const loom_backend *be, const tb *b, uint32_t *nodes, loom_claim *c)
{
    loom_subgraph_desc g = tb_desc(b);
    uint32_t all[64];
    loom_claim cl[8];
    uint32_t n = be->claim(be->ctx, 0, &g, all, 64, cl, 8);
    if (n) {
        *c = cl[0];
        memcpy(nodes, all + cl[0].first_node, cl[0].node_count * sizeof *nodes);
    }
    return n;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m))
            m = d; /* NaN wins */
    }
    return m;
}

/* Claim, compile and run B on BE: one claim of all EXPECT_NODES nodes labelled LABEL; the
 * result against the node-by-node run (TOL_NODES) and REF (TOL_REF). */
static void check_chain(const loom_backend *be, const tb *b, float *const *data, int32_t out,
                        uint32_t expect_nodes, const char *label, const float *ref,
                        double tol_nodes, double tol_ref)
{
    uint32_t nodes[16];
    loom_claim c;
    uint32_t n = claim_all(be, b, nodes, &c);
    CU_ASSERT_EQUAL(n, 1);
    if (n != 1)
        return;
    CU_ASSERT_EQUAL(c.node_count, expect_nodes);
    CU_ASSERT(c.estimate_s < 0);
    if (label && strcmp(c.label, label) != 0) {
        printf("\n  %s: label '%s', expected '%s'\n", be->name, c.label, label);
        CU_FAIL("claim label");
    }
    size_t numel = (size_t)loom_tensor_desc_numel(&b->vdesc[out]);
    float *byn = calloc(numel, sizeof *byn), *comp = calloc(numel, sizeof *comp);
    run_nodes(be, b, data, out, byn);
    char err[512] = "";
    loom_status st = run_compiled(be, b, data, comp, err, sizeof err);
    if (st != LOOM_OK)
        printf("\n  %s: prepare_subgraph/execute: %s\n", be->name, err);
    CU_ASSERT_EQUAL(st, LOOM_OK);
    double dn = max_diff(byn, comp, numel), dr = max_diff(ref, comp, numel);
    if (!(dn <= tol_nodes) || !(dr <= tol_ref))
        printf("\n  %s %s: |compiled - nodes| %.3g (tol %.3g), |compiled - naive| %.3g (tol "
               "%.3g)\n", be->name, label ? label : "", dn, tol_nodes, dr, tol_ref);
    CU_ASSERT(dn <= tol_nodes);
    CU_ASSERT(dr <= tol_ref);
    free(byn);
    free(comp);
}

/* ---- the graphs -------------------------------------------------------------------------------- */

static const ta k_gemm_attrs[] = {{"alpha", LOOM_ATTR_FLOAT, 0, 1.0f, NULL, {0}, 0},
                                  {"beta", LOOM_ATTR_FLOAT, 0, 1.0f, NULL, {0}, 0},
                                  {"transA", LOOM_ATTR_INT, 0, 0, NULL, {0}, 0},
                                  {"transB", LOOM_ATTR_INT, 0, 0, NULL, {0}, 0}};

/* MatMul [M,K]x[K,N] + bias [N] + Relu (ACT 0), or + residual + SiLU (ACT 1). */
enum { M_ = 5, K_ = 12, N_ = 7 };

static void mlp_case(const loom_backend *be, int silu, int gemm)
{
    tb *b = calloc(1, sizeof *b);
    float *a = rnd_buf(M_ * K_), *w = rnd_buf(K_ * N_), *bias = rnd_buf(N_), *z = rnd_buf(M_ * N_);
    int32_t va = tb_input(b, TD(M_, K_), NULL);
    int32_t vw = tb_input(b, TD(K_, N_), w);
    int32_t vb = tb_input(b, TD(N_), bias);
    int32_t vz = silu ? tb_input(b, TD(M_, N_), NULL) : -1;
    int32_t t = gemm ? tb_node(b, LOOM_OP_GEMM, "Gemm", (int32_t[]){va, vw, -1}, 3, TD(M_, N_),
                               k_gemm_attrs, 4)
                     : tb_node(b, LOOM_OP_MATMUL, "MatMul", (int32_t[]){va, vw}, 2, TD(M_, N_),
                               NULL, 0);
    t = tb_node(b, LOOM_OP_ADD, "Add", (int32_t[]){t, vb}, 2, TD(M_, N_), NULL, 0);
    int32_t out;
    if (silu) {
        t = tb_node(b, LOOM_OP_ADD, "Add", (int32_t[]){vz, t}, 2, TD(M_, N_), NULL, 0);
        int32_t s = tb_node(b, LOOM_OP_SIGMOID, "Sigmoid", (int32_t[]){t}, 1, TD(M_, N_), NULL, 0);
        out = tb_node(b, LOOM_OP_MUL, "Mul", (int32_t[]){t, s}, 2, TD(M_, N_), NULL, 0);
    } else {
        out = tb_node(b, LOOM_OP_RELU, "Relu", (int32_t[]){t}, 1, TD(M_, N_), NULL, 0);
    }
    tb_output(b, out);
    float ref[M_ * N_];
    for (int i = 0; i < M_; i++)
        for (int j = 0; j < N_; j++) {
            double s = bias[j];
            for (int k = 0; k < K_; k++)
                s += (double)a[i * K_ + k] * w[k * N_ + j];
            if (silu) {
                s += z[i * N_ + j];
                s = s / (1.0 + exp(-s));
            } else {
                s = s > 0 ? s : 0;
            }
            ref[i * N_ + j] = (float)s;
        }
    float *data[MAXV] = {a, w, bias, z};
    char label[64];
    snprintf(label, sizeof label, "%s+Add%s", gemm ? "Gemm" : "MatMul",
             silu ? "+Add+Sigmoid+Mul" : "+Relu");
    check_chain(be, b, data, out, silu ? 5 : 3, label, ref, 1e-5, 1e-4);
    free(a);
    free(w);
    free(bias);
    free(z);
    free(b);
}

static void test_cpu_matmul_bias_relu(void)
{
    mlp_case(g_cpu, 0, 0);
}

static void test_cpu_gemm_bias_residual_silu(void)
{
    mlp_case(g_cpu, 1, 1);
}

/* Conv [1,2,5,5] * W [3,2,3,3] (pads 1) + bias [3,1,1] + Relu. */
static void test_cpu_conv_bias_relu(void)
{
    tb *b = calloc(1, sizeof *b);
    float *x = rnd_buf(50), *w = rnd_buf(54), *bias = rnd_buf(3);
    int32_t vx = tb_input(b, TD(1, 2, 5, 5), NULL);
    int32_t vw = tb_input(b, TD(3, 2, 3, 3), w);
    int32_t vb = tb_input(b, TD(3, 1, 1), bias);
    const ta attrs[] = {{"kernel_shape", LOOM_ATTR_INTS, 0, 0, NULL, {3, 3}, 2},
                        {"strides", LOOM_ATTR_INTS, 0, 0, NULL, {1, 1}, 2},
                        {"dilations", LOOM_ATTR_INTS, 0, 0, NULL, {1, 1}, 2},
                        {"pads", LOOM_ATTR_INTS, 0, 0, NULL, {1, 1, 1, 1}, 4},
                        {"group", LOOM_ATTR_INT, 1, 0, NULL, {0}, 0}};
    int32_t t = tb_node(b, LOOM_OP_CONV, "Conv", (int32_t[]){vx, vw}, 2, TD(1, 3, 5, 5), attrs, 5);
    t = tb_node(b, LOOM_OP_ADD, "Add", (int32_t[]){t, vb}, 2, TD(1, 3, 5, 5), NULL, 0);
    int32_t out = tb_node(b, LOOM_OP_RELU, "Relu", (int32_t[]){t}, 1, TD(1, 3, 5, 5), NULL, 0);
    tb_output(b, out);
    float ref[75];
    for (int m = 0; m < 3; m++)
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 5; j++) {
                double s = bias[m];
                for (int c = 0; c < 2; c++)
                    for (int ki = 0; ki < 3; ki++)
                        for (int kj = 0; kj < 3; kj++) {
                            int ii = i + ki - 1, jj = j + kj - 1;
                            if (ii >= 0 && ii < 5 && jj >= 0 && jj < 5)
                                s += (double)x[c * 25 + ii * 5 + jj] * w[((m * 2 + c) * 3 + ki) * 3 + kj];
                        }
                ref[m * 25 + i * 5 + j] = (float)(s > 0 ? s : 0);
            }
    float *data[MAXV] = {x, w, bias};
    check_chain(g_cpu, b, data, out, 3, "Conv+Add+Relu", ref, 1e-5, 1e-4);
    free(x);
    free(w);
    free(bias);
    free(b);
}

/* An intermediate read outside the chain stops it there: MatMul + Add (its sum also read by a
 * Sigmoid outside) + Relu claims MatMul+Add only; a MatMul whose product is an output of the
 * graph claims nothing. */
static void test_cpu_intermediate_read_elsewhere(void)
{
    float w[K_ * N_] = {0}, bias[N_] = {0};
    tb *b = calloc(1, sizeof *b);
    int32_t va = tb_input(b, TD(M_, K_), NULL);
    int32_t vw = tb_input(b, TD(K_, N_), w);
    int32_t vb = tb_input(b, TD(N_), bias);
    int32_t t = tb_node(b, LOOM_OP_MATMUL, "MatMul", (int32_t[]){va, vw}, 2, TD(M_, N_), NULL, 0);
    int32_t s = tb_node(b, LOOM_OP_ADD, "Add", (int32_t[]){t, vb}, 2, TD(M_, N_), NULL, 0);
    int32_t r = tb_node(b, LOOM_OP_RELU, "Relu", (int32_t[]){s}, 1, TD(M_, N_), NULL, 0);
    int32_t g = tb_node(b, LOOM_OP_SIGMOID, "Sigmoid", (int32_t[]){s}, 1, TD(M_, N_), NULL, 0);
    tb_output(b, r);
    tb_output(b, g);
    uint32_t nodes[16];
    loom_claim c;
    CU_ASSERT_EQUAL(claim_all(g_cpu, b, nodes, &c), 1);
    CU_ASSERT_EQUAL(c.node_count, 2);
    CU_ASSERT_STRING_EQUAL(c.label, "MatMul+Add");
    free(b);

    b = calloc(1, sizeof *b);
    va = tb_input(b, TD(M_, K_), NULL);
    vw = tb_input(b, TD(K_, N_), w);
    vb = tb_input(b, TD(N_), bias);
    t = tb_node(b, LOOM_OP_MATMUL, "MatMul", (int32_t[]){va, vw}, 2, TD(M_, N_), NULL, 0);
    s = tb_node(b, LOOM_OP_ADD, "Add", (int32_t[]){t, vb}, 2, TD(M_, N_), NULL, 0);
    tb_output(b, t);
    tb_output(b, s);
    CU_ASSERT_EQUAL(claim_all(g_cpu, b, nodes, &c), 0);
    free(b);
}

/* Add (X + R) + LayerNormalization over the last axis. */
enum { LR = 6, LN = 40 };

static void skip_ln_case(const loom_backend *be, int r_is_row)
{
    tb *b = calloc(1, sizeof *b);
    float *x = rnd_buf(LR * LN), *r = rnd_buf(LR * LN), *g = rnd_buf(LN), *bb = rnd_buf(LN);
    int32_t vx = tb_input(b, TD(2, 3, LN), NULL);
    int32_t vr = r_is_row ? tb_input(b, TD(LN), r) : tb_input(b, TD(2, 3, LN), NULL);
    int32_t vg = tb_input(b, TD(LN), g);
    int32_t vb = tb_input(b, TD(LN), bb);
    int32_t s = tb_node(b, LOOM_OP_ADD, "Add", (int32_t[]){vx, vr}, 2, TD(2, 3, LN), NULL, 0);
    const ta attrs[] = {{"axis", LOOM_ATTR_INT, 2, 0, NULL, {0}, 0},
                        {"epsilon", LOOM_ATTR_FLOAT, 0, 1e-5f, NULL, {0}, 0},
                        {"stash_type", LOOM_ATTR_INT, 1, 0, NULL, {0}, 0}};
    int32_t out = tb_node(b, LOOM_OP_LAYER_NORMALIZATION, "LayerNormalization",
                          (int32_t[]){s, vg, vb}, 3, TD(2, 3, LN), attrs, 3);
    tb_output(b, out);
    float ref[LR * LN];
    for (int row = 0; row < LR; row++) {
        double v[LN], m = 0, q = 0;
        for (int i = 0; i < LN; i++) {
            v[i] = (double)x[row * LN + i] + r[(r_is_row ? 0 : row * LN) + i];
            m += v[i];
        }
        m /= LN;
        for (int i = 0; i < LN; i++)
            q += (v[i] - m) * (v[i] - m);
        double inv = 1.0 / sqrt(q / LN + 1e-5);
        for (int i = 0; i < LN; i++)
            ref[row * LN + i] = (float)((v[i] - m) * inv * g[i] + bb[i]);
    }
    float *data[MAXV] = {x, r, g, bb};
    check_chain(be, b, data, out, 2, "Add+LayerNormalization", ref, 1e-5, 1e-4);
    free(x);
    free(r);
    free(g);
    free(bb);
    free(b);
}

static void test_cpu_add_layernorm(void)
{
    skip_ln_case(g_cpu, 0);
    skip_ln_case(g_cpu, 1);
}

/* LayerNorm as exported before opset 17: ReduceMean, Sub, Pow 2 (or Mul d d), ReduceMean, Add
 * eps, Sqrt, Div, Mul gamma, Add beta. */
static void decomposed_ln_case(const loom_backend *be, int mul_square)
{
    tb *b = calloc(1, sizeof *b);
    float *x = rnd_buf(LR * LN), *g = rnd_buf(LN), *bb = rnd_buf(LN);
    static const float two = 2.0f, eps = 1e-5f;
    int32_t vx = tb_input(b, TD(LR, LN), NULL);
    int32_t vtwo = tb_input(b, TD(0), &two);
    b->vdesc[vtwo].rank = 0;
    int32_t veps = tb_input(b, TD(0), &eps);
    b->vdesc[veps].rank = 0;
    int32_t vg = tb_input(b, TD(LN), g);
    int32_t vb = tb_input(b, TD(LN), bb);
    const ta rm[] = {{"axes", LOOM_ATTR_INTS, 0, 0, NULL, {1}, 1},
                     {"keepdims", LOOM_ATTR_INT, 1, 0, NULL, {0}, 0}};
    int32_t m = tb_node(b, LOOM_OP_REDUCE_MEAN, "ReduceMean", (int32_t[]){vx}, 1, TD(LR, 1), rm, 2);
    int32_t d = tb_node(b, LOOM_OP_SUB, "Sub", (int32_t[]){vx, m}, 2, TD(LR, LN), NULL, 0);
    int32_t sq = mul_square
                     ? tb_node(b, LOOM_OP_MUL, "Mul", (int32_t[]){d, d}, 2, TD(LR, LN), NULL, 0)
                     : tb_node(b, LOOM_OP_POW, "Pow", (int32_t[]){d, vtwo}, 2, TD(LR, LN), NULL, 0);
    int32_t var = tb_node(b, LOOM_OP_REDUCE_MEAN, "ReduceMean", (int32_t[]){sq}, 1, TD(LR, 1), rm, 2);
    int32_t ve = tb_node(b, LOOM_OP_ADD, "Add", (int32_t[]){var, veps}, 2, TD(LR, 1), NULL, 0);
    int32_t sd = tb_node(b, LOOM_OP_SQRT, "Sqrt", (int32_t[]){ve}, 1, TD(LR, 1), NULL, 0);
    int32_t nrm = tb_node(b, LOOM_OP_DIV, "Div", (int32_t[]){d, sd}, 2, TD(LR, LN), NULL, 0);
    int32_t sc = tb_node(b, LOOM_OP_MUL, "Mul", (int32_t[]){nrm, vg}, 2, TD(LR, LN), NULL, 0);
    int32_t out = tb_node(b, LOOM_OP_ADD, "Add", (int32_t[]){sc, vb}, 2, TD(LR, LN), NULL, 0);
    tb_output(b, out);
    float ref[LR * LN];
    for (int row = 0; row < LR; row++) {
        double mean = 0, q = 0;
        for (int i = 0; i < LN; i++)
            mean += x[row * LN + i];
        mean /= LN;
        for (int i = 0; i < LN; i++)
            q += (x[row * LN + i] - mean) * (x[row * LN + i] - mean);
        double sdv = sqrt(q / LN + 1e-5);
        for (int i = 0; i < LN; i++)
            ref[row * LN + i] = (float)((x[row * LN + i] - mean) / sdv * g[i] + bb[i]);
    }
    float *data[MAXV] = {x, NULL, NULL, g, bb};
    check_chain(be, b, data, out, 9, NULL, ref, 1e-5, 1e-4);
    free(x);
    free(g);
    free(bb);
    free(b);
}

static void test_cpu_decomposed_layernorm(void)
{
    decomposed_ln_case(g_cpu, 0);
    decomposed_ln_case(g_cpu, 1);
}

/* Scores [2,2,4,SL] * c (or / c) + mask [2,1,1,SL] -> Softmax over the last axis. */
enum { SL = 37 };

static void softmax_case(const loom_backend *be, int div, int with_mask, int with_scale)
{
    tb *b = calloc(1, sizeof *b);
    size_t n = 2 * 2 * 4 * SL;
    float *x = rnd_buf(n), *mask = rnd_buf(2 * SL);
    static const float c = 0.125f;
    for (int i = 0; i < 2 * SL; i++)
        mask[i] = mask[i] < -0.7f ? -10000.0f : 0.0f;
    int32_t vx = tb_input(b, TD(2, 2, 4, SL), NULL);
    int32_t vc = tb_input(b, TD(1), &c);
    int32_t vm = tb_input(b, TD(2, 1, 1, SL), NULL);
    int32_t t = vx;
    int expect = 1;
    if (with_scale) {
        t = tb_node(b, div ? LOOM_OP_DIV : LOOM_OP_MUL, div ? "Div" : "Mul", (int32_t[]){t, vc}, 2,
                    TD(2, 2, 4, SL), NULL, 0);
        expect++;
    }
    if (with_mask) {
        t = tb_node(b, LOOM_OP_ADD, "Add", (int32_t[]){t, vm}, 2, TD(2, 2, 4, SL), NULL, 0);
        expect++;
    }
    const ta ax[] = {{"axis", LOOM_ATTR_INT, 3, 0, NULL, {0}, 0}};
    int32_t out = tb_node(b, LOOM_OP_SOFTMAX, "Softmax", (int32_t[]){t}, 1, TD(2, 2, 4, SL), ax, 1);
    tb_output(b, out);
    float *ref = malloc(n * sizeof *ref);
    for (size_t row = 0; row < n / SL; row++) {
        size_t batch = row / 8;
        double v[SL], mx = -INFINITY, s = 0;
        for (int i = 0; i < SL; i++) {
            v[i] = x[row * SL + i];
            if (with_scale)
                v[i] = div ? v[i] / c : v[i] * c;
            if (with_mask)
                v[i] += mask[batch * SL + i];
            mx = v[i] > mx ? v[i] : mx;
        }
        for (int i = 0; i < SL; i++)
            s += exp(v[i] - mx);
        for (int i = 0; i < SL; i++)
            ref[row * SL + i] = (float)(exp(v[i] - mx) / s);
    }
    float *data[MAXV] = {x, NULL, mask};
    if (expect == 1) { /* a Softmax alone is no chain */
        uint32_t nodes[16];
        loom_claim cl;
        CU_ASSERT_EQUAL(claim_all(be, b, nodes, &cl), 0);
    } else {
        check_chain(be, b, data, out, (uint32_t)expect, NULL, ref, 1e-6, 1e-5);
    }
    free(ref);
    free(x);
    free(mask);
    free(b);
}

static void test_cpu_scale_mask_softmax(void)
{
    softmax_case(g_cpu, 0, 1, 1);
    softmax_case(g_cpu, 1, 1, 1);
    softmax_case(g_cpu, 0, 0, 1);
    softmax_case(g_cpu, 0, 1, 0);
    softmax_case(g_cpu, 0, 0, 0);
}

/* prepare_subgraph refuses, with a message naming the set, what is not one chain: a Relu and a
 * Sigmoid side by side, and a chain whose intermediate the set must also produce. */
static void test_cpu_prepare_refusals(void)
{
    tb *b = calloc(1, sizeof *b);
    int32_t vx = tb_input(b, TD(4, 4), NULL);
    int32_t r = tb_node(b, LOOM_OP_RELU, "Relu", (int32_t[]){vx}, 1, TD(4, 4), NULL, 0);
    int32_t s = tb_node(b, LOOM_OP_SIGMOID, "Sigmoid", (int32_t[]){vx}, 1, TD(4, 4), NULL, 0);
    tb_output(b, r);
    tb_output(b, s);
    loom_subgraph_desc sg = tb_desc(b);
    void *k = NULL;
    size_t scratch = 0;
    char err[512] = "";
    CU_ASSERT_EQUAL(g_cpu->prepare_subgraph(g_cpu->ctx, 0, &sg, &k, &scratch, err, sizeof err),
                    LOOM_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NULL(k);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "test"));
    free(b);

    float w[16] = {0};
    b = calloc(1, sizeof *b);
    int32_t va = tb_input(b, TD(4, 4), NULL);
    int32_t vw = tb_input(b, TD(4, 4), w);
    int32_t t = tb_node(b, LOOM_OP_MATMUL, "MatMul", (int32_t[]){va, vw}, 2, TD(4, 4), NULL, 0);
    r = tb_node(b, LOOM_OP_RELU, "Relu", (int32_t[]){t}, 1, TD(4, 4), NULL, 0);
    tb_output(b, r);
    tb_output(b, t);
    sg = tb_desc(b);
    err[0] = '\0';
    CU_ASSERT_NOT_EQUAL(g_cpu->prepare_subgraph(g_cpu->ctx, 0, &sg, &k, &scratch, err, sizeof err),
                        LOOM_OK);
    CU_ASSERT(err[0] != '\0');
    /* A value id out of range: refused, not read. */
    b->ins[1][0] = 40;
    sg = tb_desc(b);
    CU_ASSERT_EQUAL(g_cpu->prepare_subgraph(g_cpu->ctx, 0, &sg, &k, &scratch, err, sizeof err),
                    LOOM_ERR_INVALID_ARGUMENT);
    uint32_t nodes[8];
    loom_claim cl[2];
    CU_ASSERT_EQUAL(g_cpu->claim(g_cpu->ctx, 0, &sg, nodes, 8, cl, 2), 0);
    free(b);
}

/* ---- OpenCL --------------------------------------------------------------------------------- */

static int ocl_missing(void)
{
    static int noted;
    if (g_ocl)
        return 0;
    if (!noted++)
        printf("\n  note: no OpenCL device: OpenCL claim tests skipped\n");
    return 1;
}

static void test_ocl_matmul_bias_relu(void)
{
    if (ocl_missing())
        return;
    CU_ASSERT_PTR_NOT_NULL_FATAL(g_ocl->claim);
    mlp_case(g_ocl, 0, 0);
    mlp_case(g_ocl, 0, 1);
    mlp_case(g_ocl, 1, 1);
}

static void test_ocl_add_layernorm(void)
{
    if (ocl_missing())
        return;
    skip_ln_case(g_ocl, 0);
    skip_ln_case(g_ocl, 1);
    decomposed_ln_case(g_ocl, 0);
    decomposed_ln_case(g_ocl, 1);
}

static void test_ocl_scale_mask_softmax(void)
{
    if (ocl_missing())
        return;
    softmax_case(g_ocl, 0, 1, 1);
    softmax_case(g_ocl, 1, 1, 1);
    softmax_case(g_ocl, 0, 0, 1);
}

/* ---- end to end: a plan the host builds with claims ----------------------------------------- */

/* The plan's node ops joined by spaces. */
static void plan_ops(const loom_plan *p, char *buf, size_t len)
{
    buf[0] = '\0';
    for (size_t i = 0; i < loom_plan_node_count(p); i++) {
        size_t at = strlen(buf);
        snprintf(buf + at, len - at, "%s%s@%s", i ? " " : "", loom_plan_node_op(p, i),
                 loom_plan_node_device(p, i));
    }
}

/* An MLP layer y = Relu(x W + b) and an attention block: Softmax(q k * c + mask) and
 * LayerNorm(x2 + r), planned by the default policy on every device the runtime has (cpu, and
 * opencl:0 with PoCL under LOOM_OPENCL=1): each chain is one plan node (a kept claim, or on a
 * CPU-only runtime the fuse_epilogue pass's FusedMatMul for the MLP) and the numbers are the
 * naive loops'. */
static void test_e2e_plan(void)
{
    loom_runtime *rt = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_runtime_create(NULL, &rt), LOOM_OK);
    loom_graph *g = loom_graph_create("claims_e2e");
    enum { B = 6, D = 24, F = 20, T = 16, HD = 8, NH = 2 };
    float *w = rnd_buf(D * F), *bias = rnd_buf(F), *gam = rnd_buf(D), *bet = rnd_buf(D);
    int64_t xd[2] = {B, D}, wd[2] = {D, F}, bd[1] = {F}, qd[4] = {1, NH, T, HD},
            kd[4] = {1, NH, HD, T}, md[4] = {1, 1, 1, T}, ld[2] = {T, D}, gd[1] = {D}, cd[1] = {1};
    static const float c = 0.35f;
    loom_value x = loom_input(g, "x", F32, 2, xd), q = loom_input(g, "q", F32, 4, qd),
               k = loom_input(g, "k", F32, 4, kd), mask = loom_input(g, "mask", F32, 4, md),
               x2 = loom_input(g, "x2", F32, 2, ld), r2 = loom_input(g, "r2", F32, 2, ld);
    loom_value t, y, ins[3];
    ins[0] = x;
    ins[1] = loom_constant(g, "w", F32, 2, wd, w);
    loom_graph_op(g, "MatMul", "mm", ins, 2, NULL, 0, &t, 1);
    ins[0] = t;
    ins[1] = loom_constant(g, "b", F32, 1, bd, bias);
    loom_graph_op(g, "Add", "bias", ins, 2, NULL, 0, &t, 1);
    loom_graph_op(g, "Relu", "relu", &t, 1, NULL, 0, &y, 1);
    loom_output(g, y, "y");
    ins[0] = q;
    ins[1] = k;
    loom_graph_op(g, "MatMul", "qk", ins, 2, NULL, 0, &t, 1);
    ins[0] = t;
    ins[1] = loom_constant(g, "c", F32, 1, cd, &c);
    loom_graph_op(g, "Mul", "scale", ins, 2, NULL, 0, &t, 1);
    ins[0] = t;
    ins[1] = mask;
    loom_graph_op(g, "Add", "mask_add", ins, 2, NULL, 0, &t, 1);
    loom_attr ax = loom_attr_int("axis", -1);
    loom_value p;
    loom_graph_op(g, "Softmax", "softmax", &t, 1, &ax, 1, &p, 1);
    loom_output(g, p, "p");
    ins[0] = x2;
    ins[1] = r2;
    loom_graph_op(g, "Add", "residual", ins, 2, NULL, 0, &t, 1);
    ins[0] = t;
    ins[1] = loom_constant(g, "gamma", F32, 1, gd, gam);
    ins[2] = loom_constant(g, "beta", F32, 1, gd, bet);
    loom_value ln;
    loom_graph_op(g, "LayerNormalization", "ln", ins, 3, NULL, 0, &ln, 1);
    loom_output(g, ln, "ln");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);

    float *xv = rnd_buf(B * D), *qv = rnd_buf(NH * T * HD), *kv = rnd_buf(NH * T * HD),
          *mv = rnd_buf(T), *x2v = rnd_buf(T * D), *r2v = rnd_buf(T * D);
    float yv[B * F], pv[NH * T * T], lv[T * D];
    loom_tensor *in[6], *out[3];
    loom_tensor_wrap(F32, 2, xd, xv, &in[0]);
    loom_tensor_wrap(F32, 4, qd, qv, &in[1]);
    loom_tensor_wrap(F32, 4, kd, kv, &in[2]);
    loom_tensor_wrap(F32, 4, md, mv, &in[3]);
    loom_tensor_wrap(F32, 2, ld, x2v, &in[4]);
    loom_tensor_wrap(F32, 2, ld, r2v, &in[5]);
    int64_t yd[2] = {B, F}, pd[4] = {1, NH, T, T};
    loom_tensor_wrap(F32, 2, yd, yv, &out[0]);
    loom_tensor_wrap(F32, 4, pd, pv, &out[1]);
    loom_tensor_wrap(F32, 2, ld, lv, &out[2]);
    loom_plan_options o = {.struct_size = sizeof o};
    loom_plan *plan = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &o, &plan), LOOM_OK);
    CU_ASSERT_EQUAL(loom_plan_run(plan, (const loom_tensor *const *)in, 6, out, 3, NULL), LOOM_OK);
    char ops[2048];
    plan_ops(plan, ops, sizeof ops);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops, "MatMul+Add+Relu"));
    if (g_ocl) { /* a multi-device plan: the attention chains come as claims */
        CU_ASSERT_PTR_NOT_NULL(strstr(ops, "Mul+Add+Softmax"));
        CU_ASSERT_PTR_NOT_NULL(strstr(ops, "Add+LayerNormalization"));
    }
    if (!strstr(ops, "MatMul+Add+Relu"))
        printf("\n  plan: %s\n", ops);
    double dy = 0, dp = 0, dl = 0;
    for (int i = 0; i < B; i++)
        for (int j = 0; j < F; j++) {
            double s = bias[j];
            for (int kk = 0; kk < D; kk++)
                s += (double)xv[i * D + kk] * w[kk * F + j];
            dy = fmax(dy, fabs((s > 0 ? s : 0) - yv[i * F + j]));
        }
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < T; i++) {
            double v[T], mx = -INFINITY, sum = 0;
            for (int j = 0; j < T; j++) {
                double s = 0;
                for (int kk = 0; kk < HD; kk++)
                    s += (double)qv[(h * T + i) * HD + kk] * kv[(h * HD + kk) * T + j];
                v[j] = (double)(float)s * c + mv[j];
                mx = fmax(mx, v[j]);
            }
            for (int j = 0; j < T; j++)
                sum += exp(v[j] - mx);
            for (int j = 0; j < T; j++)
                dp = fmax(dp, fabs(exp(v[j] - mx) / sum - pv[(h * T + i) * T + j]));
        }
    for (int i = 0; i < T; i++) {
        double m = 0, var = 0, v[D];
        for (int j = 0; j < D; j++)
            m += v[j] = (double)x2v[i * D + j] + r2v[i * D + j];
        m /= D;
        for (int j = 0; j < D; j++)
            var += (v[j] - m) * (v[j] - m);
        double inv = 1 / sqrt(var / D + 1e-5);
        for (int j = 0; j < D; j++)
            dl = fmax(dl, fabs((v[j] - m) * inv * gam[j] + bet[j] - lv[i * D + j]));
    }
    if (!(dy <= 1e-4 && dp <= 1e-5 && dl <= 1e-4))
        printf("\n  |diff| mlp %.3g softmax %.3g layernorm %.3g; plan: %s\n", dy, dp, dl, ops);
    CU_ASSERT(dy <= 1e-4);
    CU_ASSERT(dp <= 1e-5);
    CU_ASSERT(dl <= 1e-4);
    loom_plan_destroy(plan);
    for (int i = 0; i < 6; i++)
        loom_tensor_destroy(in[i]);
    for (int i = 0; i < 3; i++)
        loom_tensor_destroy(out[i]);
    free(w);
    free(bias);
    free(gam);
    free(bet);
    free(xv);
    free(qv);
    free(kv);
    free(mv);
    free(x2v);
    free(r2v);
    loom_graph_destroy(g);
    loom_runtime_destroy(rt);
}

int main(void)
{
    char err[512] = "";
    g_cpu = loom_cpu_backend_create(2, err, sizeof err);
    if (!g_cpu) {
        fprintf(stderr, "cpu backend: %s\n", err);
        return 1;
    }
    g_ocl = loom_opencl_backend_create(NULL, err, sizeof err);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("backend_claims", NULL, NULL);
    CU_add_test(s, "cpu: MatMul+Add+Relu", test_cpu_matmul_bias_relu);
    CU_add_test(s, "cpu: Gemm+Add+Add+Sigmoid+Mul", test_cpu_gemm_bias_residual_silu);
    CU_add_test(s, "cpu: Conv+Add+Relu", test_cpu_conv_bias_relu);
    CU_add_test(s, "cpu: intermediate read elsewhere", test_cpu_intermediate_read_elsewhere);
    CU_add_test(s, "cpu: Add+LayerNormalization", test_cpu_add_layernorm);
    CU_add_test(s, "cpu: decomposed LayerNorm", test_cpu_decomposed_layernorm);
    CU_add_test(s, "cpu: scale+mask+Softmax", test_cpu_scale_mask_softmax);
    CU_add_test(s, "cpu: prepare_subgraph refusals", test_cpu_prepare_refusals);
    CU_add_test(s, "opencl: MatMul/Gemm+Add+Relu", test_ocl_matmul_bias_relu);
    CU_add_test(s, "opencl: Add+LayerNormalization, decomposed LayerNorm", test_ocl_add_layernorm);
    CU_add_test(s, "opencl: scale+mask+Softmax", test_ocl_scale_mask_softmax);
    CU_add_test(s, "end to end: plan with claims", test_e2e_plan);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    if (g_ocl)
        g_ocl->shutdown(g_ocl->ctx);
    g_cpu->shutdown(g_cpu->ctx);
    return failed ? 1 : 0;
}
