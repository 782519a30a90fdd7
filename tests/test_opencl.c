/*
 * The OpenCL backend, driven through its loom_backend table as the host would drive it: every
 * node of a small graph is prepared on opencl:0, its tensors live in blocks from alloc(), graph
 * inputs go in with upload() and outputs come back with download(). Results are compared with
 * the same graph planned strictly on cpu:0 (the reference backend), with tolerances. Also pins
 * down device facts, memory addressing, submit(), constants, the binary cache, LOOM_OPENCL=0 and
 * the LOOM_FAULT injections. Every test passes with a printed note when no OpenCL device exists.
 *
 * Run all tests: ./test_opencl; only tests whose name contains WORD: ./test_opencl WORD.
 */
#include <loom/graph.h>
#include <loom/runtime.h>

#include "../backends/opencl/ocl_backend.h"
#include "../graph/graph_internal.h"

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define F32 LOOM_DTYPE_F32
#define F16 LOOM_DTYPE_F16
#define I32 LOOM_DTYPE_I32
#define I64 LOOM_DTYPE_I64
#define BOOL LOOM_DTYPE_BOOL

static const loom_backend *g_be; /* the OpenCL backend under test, NULL when none */
static loom_runtime *g_rt;       /* for the CPU reference */
static int g_noted;

static int no_device(void)
{
    if (g_be)
        return 0;
    if (!g_noted++)
        printf("\n  note: no OpenCL device found: OpenCL tests skipped\n");
    return 1;
}

/* ---- deterministic inputs ------------------------------------------------------------------- */

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

static double rng_unit(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 53);
}

static uint16_t f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u, exp = (u >> 23) & 0xff, man = (u >> 13) & 0x3ff;
    return exp < 113 ? (uint16_t)sign : (uint16_t)(sign | ((exp - 112) << 10) | man);
}

/* Fill N elements: floats in [-1, 1) (or [0.5, 2) when POSITIVE), integers in [-50, 50),
 * bools 0/1. */
static void fill(void *data, loom_dtype dt, size_t n, int positive)
{
    for (size_t i = 0; i < n; i++) {
        double u = rng_unit();
        float v = positive ? (float)(0.5 + 1.5 * u) : (float)(2.0 * u - 1.0);
        switch (dt) {
        case F32: ((float *)data)[i] = v; break;
        case F16: ((uint16_t *)data)[i] = f32_to_f16(v); break;
        case I32: ((int32_t *)data)[i] = (int32_t)(v * 50); break;
        case I64: ((int64_t *)data)[i] = (int64_t)(v * 50); break;
        case BOOL: ((uint8_t *)data)[i] = u < 0.5; break;
        default: memset(data, 0, n * loom_dtype_size(dt)); return;
        }
    }
}

/* ---- the direct runner: the host's part, written against the table --------------------------- */

typedef struct dev_value {
    void *ptr;
    size_t bytes;
} dev_value;

static size_t value_bytes(const loom_tensor_desc *t)
{
    return (size_t)loom_tensor_desc_numel(t) * loom_dtype_size(t->dtype);
}

/* Run every node of G (checked) on opencl:0; INPUTS are host data per graph input, OUTPUTS host
 * buffers per graph output. Uses submit() when USE_SUBMIT. Returns the first failure with its
 * message in ERR. */
typedef struct submit_wait {
    int calls;
    loom_status status;
    char msg[512];
} submit_wait;

static void on_done(void *token, loom_status status, const char *message)
{
    submit_wait *w = token;
    w->status = status;
    snprintf(w->msg, sizeof w->msg, "%s", message ? message : "");
    __atomic_add_fetch(&w->calls, 1, __ATOMIC_SEQ_CST);
}

static loom_status run_direct(const loom_graph *g, void *const *inputs, void *const *outputs,
                              int use_submit, char *err, size_t err_len)
{
    const loom_backend *be = g_be;
    loom_status st = LOOM_OK;
    dev_value *vals = calloc(g->n_values, sizeof *vals);
    uint32_t *order = calloc(g->n_nodes + 1, sizeof *order);
    err[0] = '\0';
    if (!vals || !order || graph_topo_order(g, order) != LOOM_OK) {
        snprintf(err, err_len, "setup failed");
        st = LOOM_ERR_INTERNAL;
        goto out;
    }
    for (size_t i = 0; i < g->n_inputs && st == LOOM_OK; i++) {
        const graph_value *v = &g->values[g->inputs[i]];
        dev_value *dv = &vals[g->inputs[i]];
        dv->bytes = value_bytes(&v->desc);
        dv->ptr = be->alloc(be->ctx, 0, dv->bytes, 64);
        if (!dv->ptr) {
            snprintf(err, err_len, "alloc failed");
            st = LOOM_ERR_OUT_OF_MEMORY;
        } else {
            st = be->upload(be->ctx, 0, dv->ptr, inputs[i], dv->bytes, err, err_len);
        }
    }
    for (size_t p = 0; p < g->n_nodes && st == LOOM_OK; p++) {
        const graph_node *n = &g->nodes[order[p]];
        loom_tensor_desc in_d[16], out_d[16];
        const void *in_c[16];
        loom_node_desc desc;
        graph_node_desc(g, order[p], &desc, in_d, out_d, in_c);
        void *kernel = NULL;
        size_t scratch_bytes = 0;
        st = be->prepare(be->ctx, 0, &desc, &kernel, &scratch_bytes, err, err_len);
        if (st != LOOM_OK)
            break;
        const void *ins[16];
        void *outs[16];
        for (uint32_t k = 0; k < n->n_inputs; k++)
            ins[k] = n->inputs[k] == LOOM_NO_VALUE ? NULL
                     : in_c[k]                     ? in_c[k]
                                                   : vals[n->inputs[k]].ptr;
        for (uint32_t k = 0; k < n->n_outputs && st == LOOM_OK; k++) {
            dev_value *dv = &vals[n->outputs[k]];
            dv->bytes = value_bytes(&g->values[n->outputs[k]].desc);
            dv->ptr = be->alloc(be->ctx, 0, dv->bytes, 64);
            outs[k] = dv->ptr;
            if (!dv->ptr)
                st = LOOM_ERR_OUT_OF_MEMORY;
        }
        void *scratch = scratch_bytes ? be->alloc(be->ctx, 0, scratch_bytes, 64) : NULL;
        if (st == LOOM_OK) {
            loom_exec_args args = {sizeof args, ins, outs, scratch};
            if (use_submit) {
                submit_wait w = {0, LOOM_OK, ""};
                st = be->submit(be->ctx, 0, kernel, &args, on_done, &w);
                while (st == LOOM_OK && __atomic_load_n(&w.calls, __ATOMIC_SEQ_CST) == 0)
                    usleep(100);
                if (st == LOOM_OK) {
                    st = w.status;
                    snprintf(err, err_len, "%s", w.msg);
                }
                usleep(1000);
                CU_ASSERT_EQUAL(__atomic_load_n(&w.calls, __ATOMIC_SEQ_CST), 1);
            } else {
                st = be->execute(be->ctx, 0, kernel, &args, err, err_len);
            }
        }
        if (scratch)
            be->free(be->ctx, 0, scratch, scratch_bytes);
        be->release_kernel(be->ctx, kernel);
    }
    for (size_t i = 0; i < g->n_outputs && st == LOOM_OK; i++) {
        const graph_value *v = &g->values[g->outputs[i]];
        if (v->kind != GRAPH_VALUE_NODE) {
            snprintf(err, err_len, "graph output is not computed");
            st = LOOM_ERR_INTERNAL;
            break;
        }
        st = be->download(be->ctx, 0, outputs[i], vals[g->outputs[i]].ptr,
                          vals[g->outputs[i]].bytes, err, err_len);
    }
out:
    for (size_t i = 0; vals && i < g->n_values; i++)
        if (vals[i].ptr)
            be->free(be->ctx, 0, vals[i].ptr, vals[i].bytes);
    free(vals);
    free(order);
    return st;
}

/* ---- cases: a graph per case, compared with the CPU ---------------------------------------- */

typedef struct in_spec {
    loom_dtype dtype;
    uint32_t rank;
    int64_t dims[4];
    int positive;
    int constant;
} in_spec;

typedef struct tcase {
    const char *name;
    int n_in;
    in_spec in[5];
    loom_value (*build)(loom_graph *g, const loom_value *x);
    double tol; /* absolute and relative */
} tcase;

#define IN(dt, r, a, b, c, d) {dt, r, {a, b, c, d}, 0, 0}
#define INP(dt, r, a, b, c, d) {dt, r, {a, b, c, d}, 1, 0}
#define W(dt, r, a, b, c, d) {dt, r, {a, b, c, d}, 0, 1}
#define WP(dt, r, a, b, c, d) {dt, r, {a, b, c, d}, 1, 1}

/* Compare and report; returns 1 when OUT matches REF within TOL. */
static int compare(const char *name, const void *out, const void *ref, loom_dtype dt, size_t n,
                   double tol)
{
    double worst = 0, worst_abs = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double a, b;
        switch (dt) {
        case F32: a = ((const float *)out)[i]; b = ((const float *)ref)[i]; break;
        case I32: a = ((const int32_t *)out)[i]; b = ((const int32_t *)ref)[i]; break;
        case I64: a = (double)((const int64_t *)out)[i]; b = (double)((const int64_t *)ref)[i]; break;
        default: {
            size_t es = loom_dtype_size(dt);
            a = memcmp((const char *)out + i * es, (const char *)ref + i * es, es) != 0;
            b = 0;
        }
        }
        double e = fabs(a - b);
        if (isnan(a) != isnan(b))
            e = INFINITY;
        else if (isnan(a))
            e = 0;
        double scaled = e / (tol + tol * fabs(b));
        if (scaled > worst) {
            worst = scaled;
            worst_abs = e;
            at = i;
        }
    }
    if (worst > 1.0) {
        printf("\n  %s: max error %.3g at element %zu\n", name, worst_abs, at);
        return 0;
    }
    return 1;
}

/* Build, run on OpenCL and on the CPU, compare. Returns 1 on a match. */
static int check_case(const tcase *tc, int use_submit)
{
    loom_graph *g = loom_graph_create(tc->name);
    loom_value x[5];
    void *data[5] = {0};
    loom_tensor *ins[5] = {0};
    void *in_host[5];
    size_t n_ins = 0;
    for (int k = 0; k < tc->n_in; k++) {
        const in_spec *in = &tc->in[k];
        loom_tensor_desc d = {in->dtype, in->rank, {0}};
        memcpy(d.dims, in->dims, sizeof in->dims);
        size_t n = (size_t)loom_tensor_desc_numel(&d);
        data[k] = calloc(n + 1, loom_dtype_size(in->dtype));
        fill(data[k], in->dtype, n, in->positive);
        char name[16];
        snprintf(name, sizeof name, "x%d", k);
        if (in->constant) {
            x[k] = loom_constant(g, name, in->dtype, in->rank, in->dims, data[k]);
        } else {
            x[k] = loom_input(g, name, in->dtype, in->rank, in->dims);
            loom_tensor_wrap(in->dtype, in->rank, in->dims, data[k], &ins[n_ins]);
            in_host[n_ins++] = data[k];
        }
    }
    loom_output(g, tc->build(g, x), "y");
    int ok = 0;
    if (loom_graph_check(g) != LOOM_OK) {
        printf("\n  %s: graph: %s\n", tc->name, loom_last_error());
        goto done;
    }
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu:0", .strict = 1};
    loom_plan *plan = NULL;
    loom_tensor *ref = NULL;
    if (loom_plan_create(g_rt, g, &po, &plan) != LOOM_OK ||
        loom_plan_make_outputs(plan, &ref, 1) != LOOM_OK ||
        loom_plan_run(plan, (const loom_tensor *const *)ins, n_ins, &ref, 1, NULL) != LOOM_OK) {
        printf("\n  %s: CPU reference: %s\n", tc->name, loom_last_error());
        loom_tensor_destroy(ref);
        loom_plan_destroy(plan);
        goto done;
    }
    size_t bytes = loom_tensor_nbytes(ref);
    void *out = calloc(bytes + 1, 1);
    void *outs[1] = {out};
    char err[512];
    loom_status st = run_direct(g, in_host, outs, use_submit, err, sizeof err);
    if (st != LOOM_OK)
        printf("\n  %s: opencl: %s\n", tc->name, err);
    else
        ok = compare(tc->name, out, loom_tensor_data(ref), loom_tensor_dtype(ref),
                     bytes / loom_dtype_size(loom_tensor_dtype(ref)), tc->tol);
    free(out);
    loom_tensor_destroy(ref);
    loom_plan_destroy(plan);
done:
    for (size_t k = 0; k < n_ins; k++)
        loom_tensor_destroy(ins[k]);
    for (int k = 0; k < tc->n_in; k++)
        free(data[k]);
    loom_graph_destroy(g);
    return ok;
}

static void run_cases(const tcase *cases, size_t n)
{
    if (no_device())
        return;
    for (size_t i = 0; i < n; i++) {
        int ok = check_case(&cases[i], 0);
        if (!ok)
            printf("  FAILED: %s\n", cases[i].name);
        CU_ASSERT(ok);
    }
}

/* Builders. */
static loom_value op1(loom_graph *g, const char *op, loom_value a, const loom_attr *at, size_t na)
{
    loom_value y = LOOM_NO_VALUE;
    loom_graph_op(g, op, NULL, &a, 1, at, na, &y, 1);
    return y;
}
static loom_value op2(loom_graph *g, const char *op, loom_value a, loom_value b)
{
    loom_value y = LOOM_NO_VALUE, in[2] = {a, b};
    loom_graph_op(g, op, NULL, in, 2, NULL, 0, &y, 1);
    return y;
}
#define UN(fn, expr) static loom_value fn(loom_graph *g, const loom_value *x) { return expr; }
UN(b_relu, loom_relu(g, x[0]))
UN(b_leaky, loom_leaky_relu(g, x[0], 0.1f))
UN(b_sigmoid, loom_sigmoid(g, x[0]))
UN(b_tanh, loom_tanh(g, x[0]))
UN(b_erf, loom_erf(g, x[0]))
UN(b_gelu, loom_gelu(g, x[0], NULL))
UN(b_gelu_tanh, loom_gelu(g, x[0], "tanh"))
UN(b_sqrt, loom_sqrt(g, x[0]))
UN(b_exp, loom_exp(g, x[0]))
UN(b_log, loom_log(g, x[0]))
UN(b_neg, loom_neg(g, x[0]))
UN(b_abs, loom_abs(g, x[0]))
UN(b_clip, loom_clip(g, x[0], -0.5f, 0.25f))
UN(b_recip, op1(g, "Reciprocal", x[0], NULL, 0))
UN(b_floor, op1(g, "Floor", loom_mul(g, x[0], loom_constant_f32(g, 7.0f)), NULL, 0))
UN(b_ceil, op1(g, "Ceil", loom_mul(g, x[0], loom_constant_f32(g, 7.0f)), NULL, 0))
UN(b_hsig, op1(g, "HardSigmoid", x[0], NULL, 0))
UN(b_hswish, op1(g, "HardSwish", loom_mul(g, x[0], loom_constant_f32(g, 4.0f)), NULL, 0))
UN(b_sin, op1(g, "Sin", x[0], NULL, 0))
UN(b_cos, op1(g, "Cos", x[0], NULL, 0))
UN(b_softplus, op1(g, "Softplus", x[0], NULL, 0))
UN(b_elu, op1(g, "Elu", x[0], NULL, 0))
UN(b_selu, op1(g, "Selu", x[0], NULL, 0))
UN(b_sign, op1(g, "Sign", x[0], NULL, 0))
UN(b_add, loom_add(g, x[0], x[1]))
UN(b_sub, loom_sub(g, x[0], x[1]))
UN(b_mul, loom_mul(g, x[0], x[1]))
UN(b_div, loom_div(g, x[0], x[1]))
UN(b_pow, loom_pow(g, x[0], x[1]))
UN(b_min, loom_min(g, x[0], x[1]))
UN(b_max, loom_max(g, x[0], x[1]))
UN(b_prelu, op2(g, "PRelu", x[0], x[1]))
UN(b_less, loom_cast(g, op2(g, "Less", x[0], x[1]), F32))
UN(b_equal_i, loom_cast(g, op2(g, "Equal", x[0], x[1]), I32))
UN(b_and, loom_cast(g, op2(g, "And", op2(g, "Greater", x[0], x[1]), op2(g, "Less", x[0], loom_constant_f32(g, 0.5f))), F32))
UN(b_where, loom_where(g, op2(g, "Greater", x[0], x[1]), x[0], x[1]))
UN(b_softmax, loom_softmax(g, x[0], -1))
UN(b_softmax1, loom_softmax(g, x[0], 1))
UN(b_logsoftmax, op1(g, "LogSoftmax", x[0], NULL, 0))
UN(b_layernorm, loom_layer_norm(g, x[0], x[1], x[2], -1, 1e-5f))
UN(b_layernorm2, loom_layer_norm(g, x[0], x[1], x[2], 1, 1e-5f))
UN(b_batchnorm, loom_batch_norm(g, x[0], x[1], x[2], x[3], x[4], 1e-5f))
UN(b_cast_f16, loom_cast(g, loom_cast(g, x[0], F16), F32))
UN(b_cast_i32, loom_cast(g, loom_cast(g, loom_mul(g, x[0], loom_constant_f32(g, 20.0f)), I32), I64))
UN(b_matmul, loom_matmul(g, x[0], x[1]))
UN(b_gap, loom_global_average_pool(g, x[0]))
UN(b_identity, loom_identity(g, x[0]))
UN(b_flatten, loom_flatten(g, x[0], 2))
static loom_value b_gemm(loom_graph *g, const loom_value *x)
{
    return loom_gemm(g, x[0], x[1], x[2], 0.5f, 2.0f, 0, 1);
}
static loom_value b_gemm_ta(loom_graph *g, const loom_value *x)
{
    return loom_gemm(g, x[0], x[1], x[2], 1.5f, 1.0f, 1, 0);
}
static loom_value b_gemm_noc(loom_graph *g, const loom_value *x)
{
    return loom_gemm(g, x[0], x[1], LOOM_NO_VALUE, 1.0f, 0.0f, 1, 1);
}
static loom_value b_conv(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 1;
    p.strides[0] = p.strides[1] = 1;
    return loom_conv(g, x[0], x[1], x[2], &p);
}
static loom_value b_conv_s2(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.strides[0] = p.strides[1] = 2;
    return loom_conv(g, x[0], x[1], LOOM_NO_VALUE, &p);
}
static loom_value b_conv_1x1(loom_graph *g, const loom_value *x)
{
    return loom_conv(g, x[0], x[1], x[2], NULL);
}
static loom_value b_conv_group(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.group = 2;
    p.dilations[0] = p.dilations[1] = 2;
    p.pads[0] = p.pads[1] = 2;
    p.pads[2] = p.pads[3] = 1;
    return loom_conv(g, x[0], x[1], x[2], &p);
}
static loom_value b_conv1d(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 1;
    p.pads[0] = 2;
    p.pads[1] = 0;
    p.strides[0] = 2;
    return loom_conv(g, x[0], x[1], x[2], &p);
}
static loom_value b_maxpool(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.kernel_shape[0] = p.kernel_shape[1] = 3;
    p.strides[0] = p.strides[1] = 2;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 1;
    p.ceil_mode = 1;
    return loom_max_pool(g, x[0], &p);
}
static loom_value b_avgpool(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.kernel_shape[0] = p.kernel_shape[1] = 3;
    p.strides[0] = p.strides[1] = 1;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 1;
    return loom_average_pool(g, x[0], &p);
}
static loom_value b_avgpool_incl(loom_graph *g, const loom_value *x)
{
    loom_window_params p = {0};
    p.n_spatial = 2;
    p.kernel_shape[0] = 2;
    p.kernel_shape[1] = 3;
    p.strides[0] = p.strides[1] = 2;
    p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = 1;
    p.count_include_pad = 1;
    p.ceil_mode = 1;
    return loom_average_pool(g, x[0], &p);
}
static loom_value b_reshape(loom_graph *g, const loom_value *x)
{
    int64_t s[2] = {-1, 6};
    return loom_reshape(g, x[0], 2, s);
}
static loom_value b_transpose(loom_graph *g, const loom_value *x)
{
    int64_t perm[3] = {2, 0, 1};
    return loom_transpose(g, x[0], perm);
}
static loom_value b_transpose4(loom_graph *g, const loom_value *x)
{
    int64_t perm[4] = {0, 2, 3, 1};
    return loom_transpose(g, x[0], perm);
}
static loom_value b_concat(loom_graph *g, const loom_value *x) { return loom_concat(g, x, 3, 1); }
static loom_value b_split(loom_graph *g, const loom_value *x)
{
    loom_value parts[2];
    int64_t sizes[2] = {2, 4};
    if (loom_split(g, x[0], 1, 2, sizes, parts) != LOOM_OK)
        return LOOM_NO_VALUE;
    return loom_concat(g, (loom_value[]){parts[1], parts[0]}, 2, 1);
}
static loom_value b_slice(loom_graph *g, const loom_value *x)
{
    int64_t starts[2] = {1, -1}, ends[2] = {5, -7}, axes[2] = {0, 1}, steps[2] = {2, -2};
    return loom_slice(g, x[0], 2, starts, ends, axes, steps);
}
static loom_value b_gather(loom_graph *g, const loom_value *x)
{
    int64_t idx[3] = {2, 0, -1}, d[1] = {3};
    loom_value i = loom_constant(g, NULL, I64, 1, d, idx);
    return loom_gather(g, x[0], i, 1);
}
static loom_value b_gather_rt(loom_graph *g, const loom_value *x)
{
    /* Computed indices: |x1| * 3 cast to i32, along axis 0 of a [4, 6] table. */
    loom_value ix = loom_cast(g, loom_mul(g, loom_abs(g, x[1]), loom_constant_f32(g, 3.9f)), I32);
    return loom_gather(g, x[0], ix, 0);
}
static loom_value b_squeeze(loom_graph *g, const loom_value *x)
{
    int64_t axes[1] = {1};
    return loom_squeeze(g, x[0], 1, axes);
}
static loom_value b_unsqueeze(loom_graph *g, const loom_value *x)
{
    int64_t axes[1] = {0};
    return loom_unsqueeze(g, x[0], 1, axes);
}
static loom_value b_rmean(loom_graph *g, const loom_value *x)
{
    int64_t axes[1] = {1};
    return loom_reduce_mean(g, x[0], 1, axes, 1);
}
static loom_value b_rsum(loom_graph *g, const loom_value *x)
{
    int64_t axes[2] = {0, 2};
    return loom_reduce_sum(g, x[0], 2, axes, 0);
}
static loom_value b_rmax(loom_graph *g, const loom_value *x) { return loom_reduce_max(g, x[0], 0, NULL, 0); }
static loom_value b_expand(loom_graph *g, const loom_value *x)
{
    int64_t s[3] = {2, 5, 7};
    return loom_expand(g, x[0], 3, s);
}
static loom_value b_rsum_last(loom_graph *g, const loom_value *x)
{
    int64_t axes[1] = {1};
    return loom_reduce_sum(g, x[0], 1, axes, 0);
}
static loom_value b_rmax_last(loom_graph *g, const loom_value *x)
{
    int64_t axes[1] = {1};
    return loom_reduce_max(g, x[0], 1, axes, 1);
}
static loom_value b_rmax_first(loom_graph *g, const loom_value *x)
{
    int64_t axes[1] = {0};
    return loom_reduce_max(g, x[0], 1, axes, 0);
}
static loom_value b_rmean_all(loom_graph *g, const loom_value *x)
{
    return loom_reduce_mean(g, x[0], 0, NULL, 0);
}
static loom_value b_softmax0(loom_graph *g, const loom_value *x) { return loom_softmax(g, x[0], 0); }
static loom_value b_mlp(loom_graph *g, const loom_value *x)
{
    /* A small chain: every intermediate stays in device memory. */
    loom_value h = loom_relu(g, loom_add(g, loom_matmul(g, x[0], x[1]), x[2]));
    return loom_softmax(g, loom_matmul(g, h, x[3]), -1);
}

#define T 1e-4
static const tcase k_unary[] = {
    {"Relu [3,17]", 1, {IN(F32, 2, 3, 17, 0, 0)}, b_relu, T},
    {"LeakyRelu", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_leaky, T},
    {"Sigmoid", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_sigmoid, T},
    {"Tanh", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_tanh, T},
    {"Erf", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_erf, T},
    {"Gelu", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_gelu, T},
    {"Gelu tanh", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_gelu_tanh, T},
    {"Sqrt", 1, {INP(F32, 2, 5, 9, 0, 0)}, b_sqrt, T},
    {"Exp", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_exp, T},
    {"Log", 1, {INP(F32, 2, 5, 9, 0, 0)}, b_log, T},
    {"Neg", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_neg, T},
    {"Neg i64", 1, {IN(I64, 2, 5, 9, 0, 0)}, b_neg, 0},
    {"Abs i32", 1, {IN(I32, 2, 5, 9, 0, 0)}, b_abs, 0},
    {"Abs", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_abs, T},
    {"Clip", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_clip, T},
    {"Reciprocal", 1, {INP(F32, 2, 5, 9, 0, 0)}, b_recip, T},
    {"Floor", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_floor, T},
    {"Ceil", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_ceil, T},
    {"HardSigmoid", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_hsig, T},
    {"HardSwish", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_hswish, T},
    {"Sin", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_sin, T},
    {"Cos", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_cos, T},
    {"Softplus", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_softplus, T},
    {"Elu", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_elu, T},
    {"Selu", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_selu, T},
    {"Sign", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_sign, T},
    {"Cast f32->f16->f32", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_cast_f16, T},
    {"Cast f32->i32->i64", 1, {IN(F32, 2, 5, 9, 0, 0)}, b_cast_i32, 0},
};
static const tcase k_binary[] = {
    {"Add [4,7]+[7]", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 1, 7, 0, 0, 0)}, b_add, T},
    {"Add [2,3,5]+[2,3,5]", 2, {IN(F32, 3, 2, 3, 5, 0), IN(F32, 3, 2, 3, 5, 0)}, b_add, T},
    {"Add [4,1,5]+[3,1] i32", 2, {IN(I32, 3, 4, 1, 5, 0), IN(I32, 2, 3, 1, 0, 0)}, b_add, 0},
    {"Sub [4,7]-[4,1]", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 2, 4, 1, 0, 0)}, b_sub, T},
    {"Mul [4,7]*[1] const", 2, {IN(F32, 2, 4, 7, 0, 0), W(F32, 1, 1, 0, 0, 0)}, b_mul, T},
    {"Mul i64 [4,7]*[7]", 2, {IN(I64, 2, 4, 7, 0, 0), IN(I64, 1, 7, 0, 0, 0)}, b_mul, 0},
    {"Div [4,7]/[7]", 2, {IN(F32, 2, 4, 7, 0, 0), INP(F32, 1, 7, 0, 0, 0)}, b_div, T},
    {"Pow [4,7]^[7]", 2, {INP(F32, 2, 4, 7, 0, 0), IN(F32, 1, 7, 0, 0, 0)}, b_pow, T},
    {"Min", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 1, 7, 0, 0, 0)}, b_min, T},
    {"Max [4,7],[4,1]", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 2, 4, 1, 0, 0)}, b_max, T},
    {"PRelu", 2, {IN(F32, 4, 2, 3, 4, 5), W(F32, 3, 3, 1, 1, 0)}, b_prelu, T},
    {"Less (as f32)", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 1, 7, 0, 0, 0)}, b_less, 0},
    {"Equal i64 (as i32)", 2, {IN(I64, 2, 4, 7, 0, 0), IN(I64, 2, 4, 7, 0, 0)}, b_equal_i, 0},
    {"And of comparisons", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 2, 4, 7, 0, 0)}, b_and, 0},
    {"Where [4,7]", 2, {IN(F32, 2, 4, 7, 0, 0), IN(F32, 1, 7, 0, 0, 0)}, b_where, 0},
};
static const tcase k_layout[] = {
    {"Identity", 1, {IN(F32, 2, 3, 4, 0, 0)}, b_identity, 0},
    {"Reshape", 1, {IN(F32, 3, 4, 3, 2, 0)}, b_reshape, 0},
    {"Flatten", 1, {IN(F32, 3, 2, 3, 4, 0)}, b_flatten, 0},
    {"Transpose (2,0,1)", 1, {IN(F32, 3, 3, 4, 5, 0)}, b_transpose, 0},
    {"Transpose i64 (0,2,3,1)", 1, {IN(I64, 4, 2, 3, 4, 5)}, b_transpose4, 0},
    {"Concat axis 1", 3, {IN(F32, 2, 2, 3, 0, 0), W(F32, 2, 2, 5, 0, 0), IN(F32, 2, 2, 1, 0, 0)},
     b_concat, 0},
    {"Split + Concat", 1, {IN(F32, 2, 3, 6, 0, 0)}, b_split, 0},
    {"Slice steps 2,-2", 1, {IN(F32, 2, 7, 9, 0, 0)}, b_slice, 0},
    {"Gather const idx", 1, {IN(F32, 2, 4, 5, 0, 0)}, b_gather, 0},
    {"Gather computed idx", 2, {IN(F32, 2, 4, 6, 0, 0), IN(F32, 1, 5, 0, 0, 0)}, b_gather_rt, 0},
    {"Squeeze", 1, {IN(F32, 3, 3, 1, 4, 0)}, b_squeeze, 0},
    {"Unsqueeze", 1, {IN(F32, 2, 3, 4, 0, 0)}, b_unsqueeze, 0},
    {"Expand [5,1]->[2,5,7]", 1, {IN(F32, 2, 5, 1, 0, 0)}, b_expand, 0},
};
static const tcase k_nn[] = {
    {"Softmax [5,11] axis -1", 1, {IN(F32, 2, 5, 11, 0, 0)}, b_softmax, T},
    {"Softmax [3,4,5] axis 1", 1, {IN(F32, 3, 3, 4, 5, 0)}, b_softmax1, T},
    {"LogSoftmax", 1, {IN(F32, 2, 5, 11, 0, 0)}, b_logsoftmax, T},
    {"LayerNorm [4,16]", 3, {IN(F32, 2, 4, 16, 0, 0), W(F32, 1, 16, 0, 0, 0), W(F32, 1, 16, 0, 0, 0)},
     b_layernorm, T},
    {"LayerNorm [2,3,300] axis 1", 3,
     {IN(F32, 3, 2, 3, 300, 0), W(F32, 2, 3, 300, 0, 0), W(F32, 2, 3, 300, 0, 0)}, b_layernorm2, T},
    {"BatchNorm [2,3,5,5]", 5,
     {IN(F32, 4, 2, 3, 5, 5), W(F32, 1, 3, 0, 0, 0), W(F32, 1, 3, 0, 0, 0), W(F32, 1, 3, 0, 0, 0),
      WP(F32, 1, 3, 0, 0, 0)}, b_batchnorm, T},
    {"ReduceMean axis 1", 1, {IN(F32, 3, 3, 5, 4, 0)}, b_rmean, T},
    {"ReduceSum axes 0,2", 1, {IN(F32, 3, 3, 5, 4, 0)}, b_rsum, T},
    {"ReduceMax all", 1, {IN(F32, 3, 3, 5, 4, 0)}, b_rmax, T},
    {"MaxPool k3 s2 pad1 ceil", 1, {IN(F32, 4, 1, 3, 8, 8)}, b_maxpool, T},
    {"AveragePool k3 pad1", 1, {IN(F32, 4, 1, 3, 7, 7)}, b_avgpool, T},
    {"AveragePool incl pad ceil", 1, {IN(F32, 4, 2, 2, 7, 8)}, b_avgpool_incl, T},
    {"GlobalAveragePool", 1, {IN(F32, 4, 2, 3, 5, 5)}, b_gap, T},
};
static const tcase k_gemm[] = {
    {"MatMul [7,13]x[13,5]", 2, {IN(F32, 2, 7, 13, 0, 0), W(F32, 2, 13, 5, 0, 0)}, b_matmul, T},
    {"MatMul [2,3,8,16]x[16,4]", 2, {IN(F32, 4, 2, 3, 8, 16), W(F32, 2, 16, 4, 0, 0)}, b_matmul, T},
    {"MatMul batched [3,5,6]x[3,6,4]", 2, {IN(F32, 3, 3, 5, 6, 0), IN(F32, 3, 3, 6, 4, 0)},
     b_matmul, T},
    {"MatMul bcast [2,1,5,6]x[3,6,4]", 2, {IN(F32, 4, 2, 1, 5, 6), IN(F32, 3, 3, 6, 4, 0)},
     b_matmul, T},
    {"MatMul [6]x[6,4]", 2, {IN(F32, 1, 6, 0, 0, 0), IN(F32, 2, 6, 4, 0, 0)}, b_matmul, T},
    {"MatMul [3,6]x[6]", 2, {IN(F32, 2, 3, 6, 0, 0), IN(F32, 1, 6, 0, 0, 0)}, b_matmul, T},
    {"MatMul [130,70]x[70,90]", 2, {IN(F32, 2, 130, 70, 0, 0), IN(F32, 2, 70, 90, 0, 0)}, b_matmul,
     T},
    {"Gemm transB + C[4]", 3, {IN(F32, 2, 6, 9, 0, 0), W(F32, 2, 4, 9, 0, 0), W(F32, 1, 4, 0, 0, 0)},
     b_gemm, T},
    {"Gemm transA + C[6,1]", 3, {IN(F32, 2, 9, 6, 0, 0), IN(F32, 2, 9, 4, 0, 0), IN(F32, 2, 6, 1, 0, 0)},
     b_gemm_ta, T},
    {"Gemm transA transB no C", 2, {IN(F32, 2, 9, 6, 0, 0), IN(F32, 2, 4, 9, 0, 0)}, b_gemm_noc, T},
    {"Conv 3x3 pad1 + bias", 3,
     {IN(F32, 4, 1, 3, 9, 9), W(F32, 4, 4, 3, 3, 3), W(F32, 1, 4, 0, 0, 0)}, b_conv, T},
    {"Conv 1x1 s2", 2, {IN(F32, 4, 2, 8, 10, 10), W(F32, 4, 16, 8, 1, 1)}, b_conv_s2, T},
    {"Conv 1x1 direct + bias", 3,
     {IN(F32, 4, 2, 8, 5, 6), W(F32, 4, 6, 8, 1, 1), W(F32, 1, 6, 0, 0, 0)}, b_conv_1x1, T},
    {"Conv group 2 dilation 2", 3,
     {IN(F32, 4, 2, 4, 9, 8), W(F32, 4, 6, 2, 3, 2), W(F32, 1, 6, 0, 0, 0)}, b_conv_group, T},
    {"Conv 1-D s2", 3, {IN(F32, 3, 2, 3, 17, 0), W(F32, 3, 5, 3, 4, 0), W(F32, 1, 5, 0, 0, 0)},
     b_conv1d, T},
    {"MLP chain", 4,
     {IN(F32, 2, 8, 32, 0, 0), W(F32, 2, 32, 64, 0, 0), W(F32, 1, 64, 0, 0, 0),
      W(F32, 2, 64, 10, 0, 0)}, b_mlp, T},
};

/* The specialised elementwise paths: same shape with counts that are not multiples of 4 (the
 * float4 loop and its tail), each broadcast class (one element, a run of the output's dims,
 * anything else), per dtype. */
static const tcase k_fast_elementwise[] = {
    {"Add same shape [1,1027]", 2, {IN(F32, 2, 1, 1027, 0, 0), IN(F32, 2, 1, 1027, 0, 0)}, b_add, T},
    {"Add same shape [3]", 2, {IN(F32, 1, 3, 0, 0, 0), IN(F32, 1, 3, 0, 0, 0)}, b_add, T},
    {"Mul same shape [4099] i32", 2, {IN(I32, 1, 4099, 0, 0, 0), IN(I32, 1, 4099, 0, 0, 0)}, b_mul, 0},
    {"Sub same shape [2,1001] i64", 2, {IN(I64, 2, 2, 1001, 0, 0), IN(I64, 2, 2, 1001, 0, 0)}, b_sub, 0},
    {"Sigmoid [5,1001]", 1, {IN(F32, 2, 5, 1001, 0, 0)}, b_sigmoid, T},
    {"Abs i32 [4097]", 1, {IN(I32, 1, 4097, 0, 0, 0)}, b_abs, 0},
    {"Less same shape [1023] (as f32)", 2, {IN(F32, 1, 1023, 0, 0, 0), IN(F32, 1, 1023, 0, 0, 0)}, b_less, 0},
    {"Div [37,33] / scalar [1]", 2, {IN(F32, 2, 37, 33, 0, 0), INP(F32, 1, 1, 0, 0, 0)}, b_div, T},
    {"Sub scalar [1,1] - [37,33]", 2, {IN(F32, 2, 1, 1, 0, 0), IN(F32, 2, 37, 33, 0, 0)}, b_sub, T},
    {"Add [2,3,5,7] + [3,1,1] channel", 2, {IN(F32, 4, 2, 3, 5, 7), IN(F32, 3, 3, 1, 1, 0)}, b_add, T},
    {"Add [3,1,1] + [2,3,5,7] channel first", 2, {IN(F32, 3, 3, 1, 1, 0), IN(F32, 4, 2, 3, 5, 7)}, b_add, T},
    {"Mul [2,3,5,7] * [5,7] trailing", 2, {IN(F32, 4, 2, 3, 5, 7), IN(F32, 2, 5, 7, 0, 0)}, b_mul, T},
    {"Max [2,1,5,7] , [3,1,7] table", 2, {IN(F32, 4, 2, 1, 5, 7), IN(F32, 3, 3, 1, 7, 0)}, b_max, T},
    {"Add [6,1] + [1,9] outer", 2, {IN(F32, 2, 6, 1, 0, 0), IN(F32, 2, 1, 9, 0, 0)}, b_add, T},
};

/* Reductions, Softmax and LayerNorm over rows long enough for the work-group paths: lengths
 * that are not multiples of 4, one output (split in parts), axes that are not trailing. */
static const tcase k_fast_rows[] = {
    {"ReduceSum [3,5001] axis 1", 1, {IN(F32, 2, 3, 5001, 0, 0)}, b_rsum_last, 1e-3},
    {"ReduceMax [7,4099] axis 1 keepdims", 1, {IN(F32, 2, 7, 4099, 0, 0)}, b_rmax_last, 0},
    {"ReduceMax [301,37] axis 0", 1, {IN(F32, 2, 301, 37, 0, 0)}, b_rmax_first, 0},
    {"ReduceMean [70001] all", 1, {IN(F32, 1, 70001, 0, 0, 0)}, b_rmean_all, 1e-4},
    {"ReduceMean [2,3,97,101] all", 1, {IN(F32, 4, 2, 3, 97, 101)}, b_rmean_all, 1e-4},
    {"ReduceSum [129,3,4] axes 0,2", 1, {IN(F32, 3, 129, 3, 4, 0)}, b_rsum, 1e-3},
    {"Softmax [6,5003] axis -1", 1, {IN(F32, 2, 6, 5003, 0, 0)}, b_softmax, T},
    {"Softmax [1001,3] axis 0", 1, {IN(F32, 2, 1001, 3, 0, 0)}, b_softmax0, T},
    {"LogSoftmax [4,2050]", 1, {IN(F32, 2, 4, 2050, 0, 0)}, b_logsoftmax, T},
    {"LayerNorm [5,3001]", 3, {IN(F32, 2, 5, 3001, 0, 0), W(F32, 1, 3001, 0, 0, 0), W(F32, 1, 3001, 0, 0, 0)},
     b_layernorm, T},
};

static void test_unary_ops_match_cpu(void) { run_cases(k_unary, sizeof k_unary / sizeof *k_unary); }
static void test_binary_ops_match_cpu(void) { run_cases(k_binary, sizeof k_binary / sizeof *k_binary); }
static void test_layout_ops_match_cpu(void) { run_cases(k_layout, sizeof k_layout / sizeof *k_layout); }
static void test_nn_ops_match_cpu(void) { run_cases(k_nn, sizeof k_nn / sizeof *k_nn); }
static void test_gemm_ops_match_cpu(void) { run_cases(k_gemm, sizeof k_gemm / sizeof *k_gemm); }

static void *prepare_first(const loom_backend *be, const loom_graph *g, loom_status *st, char *err,
                           size_t err_len, size_t *scratch);

static void test_fast_elementwise_paths_match_cpu(void)
{
    run_cases(k_fast_elementwise, sizeof k_fast_elementwise / sizeof *k_fast_elementwise);
}

static void test_row_reductions_of_long_rows_match_cpu(void)
{
    run_cases(k_fast_rows, sizeof k_fast_rows / sizeof *k_fast_rows);
}

/* The launch shapes of the other device kind (LOOM_OPENCL_LAYOUT): on PoCL this runs a GPU's
 * shapes (grid-stride loops, a 256-work-item group per row with its local-memory tree). */
static void test_other_layout_matches_cpu(void)
{
    if (no_device())
        return;
    loom_device_info info = {.abi_version = LOOM_ABI_VERSION, .struct_size = sizeof info};
    g_be->device_info(g_be->ctx, 0, &info);
    setenv("LOOM_OPENCL_LAYOUT", info.kind == LOOM_DEVICE_CPU ? "gpu" : "cpu", 1);
    char err[256] = "";
    const loom_backend *other = loom_opencl_backend_create(NULL, err, sizeof err);
    unsetenv("LOOM_OPENCL_LAYOUT");
    CU_ASSERT_PTR_NOT_NULL_FATAL(other);
    const loom_backend *saved = g_be;
    g_be = other;
    run_cases(k_fast_elementwise, sizeof k_fast_elementwise / sizeof *k_fast_elementwise);
    run_cases(k_fast_rows, sizeof k_fast_rows / sizeof *k_fast_rows);
    run_cases(k_nn, sizeof k_nn / sizeof *k_nn);
    g_be = saved;
    other->shutdown(other->ctx);
}

/* Operands at element offsets that are not multiples of 4 take the scalar same-shape kernel
 * (no float4 loads); compared with a naive loop. */
static void test_elementwise_at_unaligned_offsets_matches_naive_loop(void)
{
    if (no_device())
        return;
    enum { N = 1030 };
    loom_graph *g = loom_graph_create("unaligned");
    int64_t d[1] = {N};
    loom_output(g, loom_sub(g, loom_input(g, "a", F32, 1, d), loom_input(g, "b", F32, 1, d)), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    char err[256];
    size_t scratch;
    loom_status st;
    void *k = prepare_first(g_be, g, &st, err, sizeof err, &scratch);
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    static float ha[N + 8], hb[N + 8], hy[N + 8];
    fill(ha, F32, N + 8, 0);
    fill(hb, F32, N + 8, 0);
    size_t bytes = (N + 8) * sizeof(float);
    char *pa = g_be->alloc(g_be->ctx, 0, bytes, 64), *pb = g_be->alloc(g_be->ctx, 0, bytes, 64);
    char *py = g_be->alloc(g_be->ctx, 0, bytes, 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(py);
    g_be->upload(g_be->ctx, 0, pa, ha, bytes, err, sizeof err);
    g_be->upload(g_be->ctx, 0, pb, hb, bytes, err, sizeof err);
    const size_t offs[3][3] = {{1, 2, 3}, {4, 4, 5}, {0, 8, 4}}; /* a, b, y in elements */
    for (int c = 0; c < 3; c++) {
        const void *ins[2] = {pa + 4 * offs[c][0], pb + 4 * offs[c][1]};
        void *outs[1] = {py + 4 * offs[c][2]};
        loom_exec_args args = {sizeof args, ins, outs, NULL};
        CU_ASSERT_EQUAL(g_be->execute(g_be->ctx, 0, k, &args, err, sizeof err), LOOM_OK);
        CU_ASSERT_EQUAL(g_be->download(g_be->ctx, 0, hy, outs[0], N * sizeof(float), err,
                                       sizeof err), LOOM_OK);
        int bad = 0;
        for (int i = 0; i < N; i++)
            bad += fabsf(hy[i] - (ha[i + offs[c][0]] - hb[i + offs[c][1]])) > 1e-6f;
        CU_ASSERT_EQUAL(bad, 0);
    }
    g_be->release_kernel(g_be->ctx, k);
    g_be->free(g_be->ctx, 0, pa, bytes);
    g_be->free(g_be->ctx, 0, pb, bytes);
    g_be->free(g_be->ctx, 0, py, bytes);
    loom_graph_destroy(g);
}

static void test_submit_calls_done_once_with_the_result(void)
{
    if (no_device())
        return;
    CU_ASSERT_TRUE(check_case(&k_gemm[0], 1));
    CU_ASSERT_TRUE(check_case(&k_nn[0], 1));
}

/* ---- device facts, memory, constants ---------------------------------------------------------- */

static void test_device_facts_are_filled(void)
{
    if (no_device())
        return;
    CU_ASSERT_TRUE(g_be->device_count(g_be->ctx) >= 1);
    CU_ASSERT_STRING_EQUAL(g_be->name, "opencl");
    loom_device_info info;
    memset(&info, 0, sizeof info);
    info.abi_version = LOOM_ABI_VERSION;
    info.struct_size = sizeof info;
    CU_ASSERT_EQUAL(g_be->device_info(g_be->ctx, 0, &info), LOOM_OK);
    CU_ASSERT_TRUE(info.name[0] != '\0');
    CU_ASSERT_EQUAL(info.host_visible, 0);
    CU_ASSERT_TRUE(info.memory_bytes > 0);
    CU_ASSERT_TRUE(info.max_alloc_bytes > 0 && info.max_alloc_bytes <= info.memory_bytes);
    CU_ASSERT_TRUE(info.compute_units > 0);
    CU_ASSERT_TRUE(info.driver[0] != '\0');
    if (info.kind == LOOM_DEVICE_CPU)
        CU_ASSERT_EQUAL(info.shares_host_cpu, 1);
    printf("\n  opencl:0: %s (%s), %u CUs, %u MHz, %.1f GiB, fp16 %u, fp64 %u, uuid '%s', "
           "pci '%s'\n", info.name, info.driver, info.compute_units, info.clock_mhz,
           info.memory_bytes / 1073741824.0, info.has_fp16, info.has_fp64, info.uuid,
           info.pci_bus);
    /* An older host's struct: the ABI 0.3 tail is left alone. */
    loom_device_info old;
    memset(&old, 0xab, sizeof old);
    old.abi_version = (0u << 16) | 2u;
    old.struct_size = (uint32_t)offsetof(loom_device_info, peak_flops_f16);
    CU_ASSERT_EQUAL(g_be->device_info(g_be->ctx, 0, &old), LOOM_OK);
    CU_ASSERT_EQUAL(old.clock_mhz, 0xababababu);
    CU_ASSERT_EQUAL(g_be->device_info(g_be->ctx, 99, &info), LOOM_ERR_INVALID_ARGUMENT);
}

static void test_memory_round_trips_at_offsets(void)
{
    if (no_device())
        return;
    enum { N = 1000 };
    float src[N], back[N];
    for (int i = 0; i < N; i++)
        src[i] = (float)i * 0.5f;
    char *a = g_be->alloc(g_be->ctx, 0, N * sizeof(float), 64);
    char *b = g_be->alloc(g_be->ctx, 0, 100, 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    char err[256];
    CU_ASSERT_EQUAL(g_be->upload(g_be->ctx, 0, a, src, N * sizeof(float), err, sizeof err), LOOM_OK);
    memset(back, 0, sizeof back);
    /* Addresses inside a block map to offsets in its buffer. */
    CU_ASSERT_EQUAL(g_be->download(g_be->ctx, 0, back, a + 400, 200 * sizeof(float), err, sizeof err),
                    LOOM_OK);
    CU_ASSERT_EQUAL(back[0], 50.0f);
    CU_ASSERT_EQUAL(back[199], 149.5f);
    CU_ASSERT_EQUAL(g_be->upload(g_be->ctx, 0, a + 8, src, 4, err, sizeof err), LOOM_OK);
    CU_ASSERT_EQUAL(g_be->download(g_be->ctx, 0, back, a, 16, err, sizeof err), LOOM_OK);
    CU_ASSERT_EQUAL(back[2], 0.0f);
    CU_ASSERT_EQUAL(back[3], 1.5f);
    /* Past the end of a block, or outside every block: one clear error. */
    CU_ASSERT_EQUAL(g_be->download(g_be->ctx, 0, back, b + 50, 51, err, sizeof err),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not inside a block"));
    CU_ASSERT_EQUAL(g_be->upload(g_be->ctx, 0, back, src, 4, err, sizeof err),
                    LOOM_ERR_INVALID_ARGUMENT);
    g_be->free(g_be->ctx, 0, a, N * sizeof(float));
    g_be->free(g_be->ctx, 0, b, 100);
    /* Freed blocks are reused (pool): many alloc/free cycles stay cheap and correct. */
    for (int i = 0; i < 50; i++) {
        void *p = g_be->alloc(g_be->ctx, 0, 4096 + (size_t)i, 64);
        CU_ASSERT_PTR_NOT_NULL(p);
        g_be->free(g_be->ctx, 0, p, 4096 + (size_t)i);
    }
    CU_ASSERT_PTR_NULL(g_be->alloc(g_be->ctx, 0, 16, 8192)); /* alignment over 4096 */
}

/* Prepare node 0 of a checked graph; the caller releases. */
static void *prepare_first(const loom_backend *be, const loom_graph *g, loom_status *st, char *err,
                           size_t err_len, size_t *scratch)
{
    loom_tensor_desc in_d[8], out_d[8];
    const void *in_c[8];
    loom_node_desc desc;
    graph_node_desc(g, 0, &desc, in_d, out_d, in_c);
    void *k = NULL;
    *st = be->prepare(be->ctx, 0, &desc, &k, scratch, err, err_len);
    return k;
}

static void test_constants_come_from_the_prepared_copy(void)
{
    if (no_device())
        return;
    loom_graph *g = loom_graph_create("const");
    int64_t d[1] = {4};
    float w[4] = {1, 2, 3, 4}, xs[4] = {10, 20, 30, 40}, ys[4];
    loom_value x = loom_input(g, "x", F32, 1, d);
    loom_value c = loom_constant(g, "c", F32, 1, d, w);
    loom_output(g, loom_add(g, x, c), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    char err[256];
    size_t scratch;
    loom_status st;
    void *k = prepare_first(g_be, g, &st, err, sizeof err, &scratch);
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    w[0] = 1000; /* the handle holds its own copy */
    void *px = g_be->alloc(g_be->ctx, 0, 16, 64), *py = g_be->alloc(g_be->ctx, 0, 16, 64);
    g_be->upload(g_be->ctx, 0, px, xs, 16, err, sizeof err);
    float junk[4] = {-1, -1, -1, -1};
    const void *ins[2] = {px, junk};
    void *outs[1] = {py};
    loom_exec_args args = {sizeof args, ins, outs, NULL};
    CU_ASSERT_EQUAL(g_be->execute(g_be->ctx, 0, k, &args, err, sizeof err), LOOM_OK);
    g_be->download(g_be->ctx, 0, ys, py, 16, err, sizeof err);
    CU_ASSERT_EQUAL(ys[0], 11.0f);
    CU_ASSERT_EQUAL(ys[3], 44.0f);
    /* A host pointer where a device address belongs: an error, not a crash. */
    const void *bad_ins[2] = {xs, junk};
    loom_exec_args bad = {sizeof bad, bad_ins, outs, NULL};
    CU_ASSERT_EQUAL(g_be->execute(g_be->ctx, 0, k, &bad, err, sizeof err),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "opencl:0: node '"));
    g_be->release_kernel(g_be->ctx, k);
    g_be->free(g_be->ctx, 0, px, 16);
    g_be->free(g_be->ctx, 0, py, 16);
    loom_graph_destroy(g);
}

static void test_supports_says_why_not(void)
{
    if (no_device())
        return;
    loom_graph *g = loom_graph_create("i32mm");
    int64_t d[2] = {3, 3};
    loom_value a = loom_input(g, "a", I32, 2, d), b = loom_input(g, "b", I32, 2, d);
    loom_output(g, loom_matmul(g, a, b), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_tensor_desc in_d[4], out_d[4];
    const void *in_c[4];
    loom_node_desc desc;
    graph_node_desc(g, 0, &desc, in_d, out_d, in_c);
    char reason[256] = "";
    CU_ASSERT_EQUAL(g_be->supports(g_be->ctx, 0, &desc, reason, sizeof reason), 0);
    CU_ASSERT_TRUE(reason[0] != '\0');
    char err[256];
    void *k = NULL;
    size_t scratch;
    CU_ASSERT_EQUAL(g_be->prepare(g_be->ctx, 0, &desc, &k, &scratch, err, sizeof err),
                    LOOM_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "MatMul"));
    loom_graph_destroy(g);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, u;
    if (exp == 0) {
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    u = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* f16 storage (computed in f32): the CPU has no f16 kernels, so naive loops are the reference. */
static void test_f16_elementwise_matches_naive_loops(void)
{
    if (no_device())
        return;
    loom_graph *g = loom_graph_create("f16");
    int64_t da[2] = {4, 7}, db[1] = {7};
    loom_value a = loom_input(g, "a", F16, 2, da), b = loom_input(g, "b", F16, 1, db);
    loom_output(g, loom_relu(g, loom_add(g, a, b)), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    uint16_t ha[28], hb[7], hy[28];
    fill(ha, F16, 28, 0);
    fill(hb, F16, 7, 0);
    void *ins[2] = {ha, hb}, *outs[1] = {hy};
    char err[512];
    CU_ASSERT_EQUAL_FATAL(run_direct(g, ins, outs, 0, err, sizeof err), LOOM_OK);
    for (int i = 0; i < 28; i++) {
        float want = f16_to_f32(ha[i]) + f16_to_f32(hb[i % 7]);
        want = f16_to_f32(f32_to_f16(want)); /* the sum is stored as f16 */
        want = want > 0 ? want : 0;
        CU_ASSERT_DOUBLE_EQUAL(f16_to_f32(hy[i]), want, 2e-3 * (1 + fabsf(want)));
    }
    loom_graph_destroy(g);
}

/* Outputs come from reused (dirty) buffers: a GEMM must overwrite NaNs, never blend them in. */
static void test_gemm_overwrites_a_stale_output(void)
{
    if (no_device())
        return;
    loom_graph *g = loom_graph_create("stale");
    int64_t da[2] = {5, 3}, db[2] = {3, 4};
    loom_value a = loom_input(g, "a", F32, 2, da), b = loom_input(g, "b", F32, 2, db);
    loom_output(g, loom_matmul(g, a, b), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    char err[256];
    size_t scratch;
    loom_status st;
    void *k = prepare_first(g_be, g, &st, err, sizeof err, &scratch);
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    float ha[15], hb[12], hy[20], nan[20];
    for (int i = 0; i < 15; i++)
        ha[i] = (float)i;
    for (int i = 0; i < 12; i++)
        hb[i] = 1.0f;
    for (int i = 0; i < 20; i++)
        nan[i] = NAN;
    void *pa = g_be->alloc(g_be->ctx, 0, sizeof ha, 64), *pb = g_be->alloc(g_be->ctx, 0, sizeof hb, 64);
    void *py = g_be->alloc(g_be->ctx, 0, sizeof hy, 64);
    g_be->upload(g_be->ctx, 0, pa, ha, sizeof ha, err, sizeof err);
    g_be->upload(g_be->ctx, 0, pb, hb, sizeof hb, err, sizeof err);
    g_be->upload(g_be->ctx, 0, py, nan, sizeof nan, err, sizeof err);
    const void *ins[2] = {pa, pb};
    void *outs[1] = {py};
    loom_exec_args args = {sizeof args, ins, outs, NULL};
    CU_ASSERT_EQUAL(g_be->execute(g_be->ctx, 0, k, &args, err, sizeof err), LOOM_OK);
    g_be->download(g_be->ctx, 0, hy, py, sizeof hy, err, sizeof err);
    for (int r = 0; r < 5; r++)
        CU_ASSERT_DOUBLE_EQUAL(hy[r * 4], 9.0 * r + 3.0, 1e-4);
    g_be->release_kernel(g_be->ctx, k);
    g_be->free(g_be->ctx, 0, pa, sizeof ha);
    g_be->free(g_be->ctx, 0, pb, sizeof hb);
    g_be->free(g_be->ctx, 0, py, sizeof hy);
    loom_graph_destroy(g);
}

/* ---- environment switches: LOOM_OPENCL, LOOM_FAULT, the binary cache -------------------------- */

static loom_graph *relu_graph(void)
{
    loom_graph *g = loom_graph_create("fault");
    int64_t d[1] = {8};
    loom_value x = loom_input(g, "x", F32, 1, d);
    loom_value y = LOOM_NO_VALUE;
    loom_graph_op(g, "Relu", "fc1", &x, 1, NULL, 0, &y, 1);
    loom_output(g, y, "y");
    loom_graph_check(g);
    return g;
}

static void test_loom_opencl_0_disables_the_backend(void)
{
    if (no_device())
        return;
    setenv("LOOM_OPENCL", "0", 1);
    char err[256] = "x";
    const loom_backend *be = loom_opencl_backend_create(NULL, err, sizeof err);
    unsetenv("LOOM_OPENCL");
    CU_ASSERT_PTR_NULL(be);
    CU_ASSERT_STRING_EQUAL(err, "");
    if (be)
        be->shutdown(be->ctx);
}

static void test_injected_enqueue_failure_names_device_and_node(void)
{
    if (no_device())
        return;
    setenv("LOOM_FAULT", "cpu:x:1,opencl:enqueue:2", 1);
    char err[512] = "";
    const loom_backend *be = loom_opencl_backend_create(NULL, err, sizeof err);
    unsetenv("LOOM_FAULT");
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    loom_graph *g = relu_graph();
    loom_status st;
    size_t scratch;
    void *k = prepare_first(be, g, &st, err, sizeof err, &scratch);
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    void *px = be->alloc(be->ctx, 0, 32, 64), *py = be->alloc(be->ctx, 0, 32, 64);
    const void *ins[1] = {px};
    void *outs[1] = {py};
    loom_exec_args args = {sizeof args, ins, outs, NULL};
    CU_ASSERT_EQUAL(be->execute(be->ctx, 0, k, &args, err, sizeof err), LOOM_OK); /* 1st */
    CU_ASSERT_EQUAL(be->execute(be->ctx, 0, k, &args, err, sizeof err), LOOM_ERR_DEVICE_LOST);
    CU_ASSERT_STRING_EQUAL(err, "opencl:0: node 'fc1' (Relu): clEnqueueNDRangeKernel failed: "
                                "CL_OUT_OF_RESOURCES (injected)");
    CU_ASSERT_EQUAL(be->execute(be->ctx, 0, k, &args, err, sizeof err), LOOM_OK); /* 3rd */
    be->release_kernel(be->ctx, k);
    be->free(be->ctx, 0, px, 32);
    be->free(be->ctx, 0, py, 32);
    be->shutdown(be->ctx);
    loom_graph_destroy(g);
}

static void test_injected_build_and_alloc_failures_are_clean_errors(void)
{
    if (no_device())
        return;
    setenv("LOOM_FAULT", "opencl:build:1,opencl:alloc:1", 1);
    char err[512] = "";
    const loom_backend *be = loom_opencl_backend_create(NULL, err, sizeof err);
    unsetenv("LOOM_FAULT");
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    CU_ASSERT_PTR_NULL(be->alloc(be->ctx, 0, 64, 64));
    void *p = be->alloc(be->ctx, 0, 64, 64);
    CU_ASSERT_PTR_NOT_NULL(p);
    be->free(be->ctx, 0, p, 64);
    loom_graph *g = relu_graph();
    loom_status st;
    size_t scratch;
    void *k = prepare_first(be, g, &st, err, sizeof err, &scratch);
    CU_ASSERT_EQUAL(st, LOOM_ERR_DEVICE_LOST);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "clBuildProgram failed"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "(injected)"));
    /* The next prepare builds for real. */
    k = prepare_first(be, g, &st, err, sizeof err, &scratch);
    CU_ASSERT_EQUAL(st, LOOM_OK);
    if (k)
        be->release_kernel(be->ctx, k);
    be->shutdown(be->ctx);
    loom_graph_destroy(g);
}

/* An injected build failure (LOOM_FAULT=opencl:build:1) on a node placed on OpenCL: a non-strict
 * plan moves that node to the CPU with a message, and the run gives Relu's numbers; a strict
 * plan fails naming the node. A fresh cache folder, so that the kernel is really built. */
static void test_build_failure_replaces_the_node_unless_strict(void)
{
    if (no_device())
        return;
    char dir[] = "/tmp/loom-ocl-fault-XXXXXX", cmd[256];
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    const char *old = getenv("XDG_CACHE_HOME");
    char *saved = old ? strdup(old) : NULL;
    setenv("XDG_CACHE_HOME", dir, 1);
    loom_graph *g = relu_graph();
    for (int strict = 0; strict < 2; strict++) {
        setenv("LOOM_FAULT", "opencl:build:1", 1);
        loom_runtime *rt = NULL;
        loom_runtime_options ro = {.struct_size = sizeof ro};
        loom_status st = loom_runtime_create(&ro, &rt);
        unsetenv("LOOM_FAULT");
        CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
        size_t before = loom_runtime_message_count(rt);
        loom_plan_options po = {.struct_size = sizeof po, .device = "opencl", .strict = strict};
        loom_plan *plan = NULL;
        st = loom_plan_create(rt, g, &po, &plan);
        if (strict) {
            CU_ASSERT_EQUAL(st, LOOM_ERR_DEVICE_LOST);
            CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "'fc1'"));
        } else {
            CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
            int said = 0;
            for (size_t i = before; i < loom_runtime_message_count(rt); i++)
                said |= strstr(loom_runtime_message(rt, i), "'fc1'") &&
                        strstr(loom_runtime_message(rt, i), "placed on cpu:0 instead");
            CU_ASSERT(said);
            float xv[8] = {-3, -1, 0, 1, 2, -0.5f, 4, -7}, yv[8];
            int64_t d[1] = {8};
            loom_tensor *x = NULL, *y = NULL;
            CU_ASSERT_EQUAL_FATAL(loom_tensor_wrap(F32, 1, d, xv, &x), LOOM_OK);
            CU_ASSERT_EQUAL_FATAL(loom_tensor_wrap(F32, 1, d, yv, &y), LOOM_OK);
            const loom_tensor *ins[1] = {x};
            loom_tensor *outs[1] = {y};
            CU_ASSERT_EQUAL(loom_plan_run(plan, ins, 1, outs, 1, NULL), LOOM_OK);
            for (int i = 0; i < 8; i++)
                CU_ASSERT_DOUBLE_EQUAL(yv[i], xv[i] > 0 ? xv[i] : 0, 0);
            loom_tensor_destroy(x);
            loom_tensor_destroy(y);
        }
        loom_plan_destroy(plan);
        loom_runtime_destroy(rt);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
    if (saved) {
        setenv("XDG_CACHE_HOME", saved, 1);
        free(saved);
    } else {
        unsetenv("XDG_CACHE_HOME");
    }
    loom_graph_destroy(g);
}

/* The host's log, for the cache's warnings: how many warnings name a damaged cache entry. */
static void count_cache_warnings(void *ctx, loom_log_level level, const char *message)
{
    if (level == LOOM_LOG_WARNING && strstr(message, "program cache entry") &&
        strstr(message, "rebuilt"))
        (*(int *)ctx)++;
}

/* A damaged binary cache entry is found by its checksum before the driver sees it (PoCL aborts
 * the process on a flipped byte), said once as a warning, rebuilt and rewritten: bytes flipped in
 * the body, a truncated entry, garbage, then a clean round that says nothing. */
static void test_corrupt_binary_cache_is_rebuilt(void)
{
    if (no_device())
        return;
    char dir[] = "/tmp/loom-ocl-cache-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    const char *old = getenv("XDG_CACHE_HOME");
    char *saved = old ? strdup(old) : NULL;
    setenv("XDG_CACHE_HOME", dir, 1);
    loom_graph *g = relu_graph();
    char err[512], cmd[1024];
    static const char *const damage[] = {
        /* flip 64 bytes in the middle of the body, the length unchanged */
        "for f in %s/loom/opencl/*.bin; do n=$(stat -c %%s $f); "
        "head -c 64 /dev/zero | tr '\\0' '\\377' | "
        "dd of=$f bs=1 seek=$((n / 2)) conv=notrunc status=none; done",
        "for f in %s/loom/opencl/*.bin; do head -c 40 $f > $f.x && mv $f.x $f; done",
        "for f in %s/loom/opencl/*.bin; do printf garbage > $f; done",
    };
    for (int round = 0; round < 5; round++) {
        int warnings = 0;
        loom_host host = {LOOM_ABI_VERSION, sizeof host, &warnings, count_cache_warnings};
        const loom_backend *be = loom_opencl_backend_create(&host, err, sizeof err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(be);
        loom_status st;
        size_t scratch;
        void *k = prepare_first(be, g, &st, err, sizeof err, &scratch);
        CU_ASSERT_EQUAL(st, LOOM_OK);
        /* Round 0 builds from source; rounds 1-3 find the entries damaged the round before
         * (one warning each); round 4 finds the rewritten entries sound. */
        if (round >= 1 && round <= 3) {
            CU_ASSERT(warnings >= 1);
        } else {
            CU_ASSERT_EQUAL(warnings, 0);
        }
        if (k)
            be->release_kernel(be->ctx, k);
        be->shutdown(be->ctx);
        /* A binary is cached (rewritten after a damaged one); damage it for the next round. */
        snprintf(cmd, sizeof cmd, "ls %s/loom/opencl/*.bin >/dev/null 2>&1", dir);
        CU_ASSERT_EQUAL(system(cmd), 0);
        if (round < 3) {
            snprintf(cmd, sizeof cmd, damage[round], dir);
            CU_ASSERT_EQUAL(system(cmd), 0);
        }
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
    if (saved) {
        setenv("XDG_CACHE_HOME", saved, 1);
        free(saved);
    } else {
        unsetenv("XDG_CACHE_HOME");
    }
    loom_graph_destroy(g);
}

/* ---- suite ------------------------------------------------------------------------------------ */

static int suite_init(void)
{
    char err[256] = "";
    g_be = loom_opencl_backend_create(NULL, err, sizeof err);
    if (!g_be && err[0])
        printf("opencl backend: %s\n", err);
    loom_runtime_options ro = {.struct_size = sizeof ro};
    return loom_runtime_create(&ro, &g_rt) == LOOM_OK ? 0 : -1;
}

static int suite_cleanup(void)
{
    if (g_be)
        g_be->shutdown(g_be->ctx);
    loom_runtime_destroy(g_rt);
    return 0;
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("opencl", suite_init, suite_cleanup);
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"test_device_facts_are_filled", test_device_facts_are_filled},
        {"test_memory_round_trips_at_offsets", test_memory_round_trips_at_offsets},
        {"test_constants_come_from_the_prepared_copy", test_constants_come_from_the_prepared_copy},
        {"test_supports_says_why_not", test_supports_says_why_not},
        {"test_unary_ops_match_cpu", test_unary_ops_match_cpu},
        {"test_binary_ops_match_cpu", test_binary_ops_match_cpu},
        {"test_layout_ops_match_cpu", test_layout_ops_match_cpu},
        {"test_nn_ops_match_cpu", test_nn_ops_match_cpu},
        {"test_gemm_ops_match_cpu", test_gemm_ops_match_cpu},
        {"test_fast_elementwise_paths_match_cpu", test_fast_elementwise_paths_match_cpu},
        {"test_row_reductions_of_long_rows_match_cpu", test_row_reductions_of_long_rows_match_cpu},
        {"test_other_layout_matches_cpu", test_other_layout_matches_cpu},
        {"test_elementwise_at_unaligned_offsets_matches_naive_loop",
         test_elementwise_at_unaligned_offsets_matches_naive_loop},
        {"test_submit_calls_done_once_with_the_result", test_submit_calls_done_once_with_the_result},
        {"test_f16_elementwise_matches_naive_loops", test_f16_elementwise_matches_naive_loops},
        {"test_gemm_overwrites_a_stale_output", test_gemm_overwrites_a_stale_output},
        {"test_loom_opencl_0_disables_the_backend", test_loom_opencl_0_disables_the_backend},
        {"test_injected_enqueue_failure_names_device_and_node",
         test_injected_enqueue_failure_names_device_and_node},
        {"test_injected_build_and_alloc_failures_are_clean_errors",
         test_injected_build_and_alloc_failures_are_clean_errors},
        {"test_corrupt_binary_cache_is_rebuilt", test_corrupt_binary_cache_is_rebuilt},
        {"test_build_failure_replaces_the_node_unless_strict",
         test_build_failure_replaces_the_node_unless_strict},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++)
        if (!only || strstr(tests[i].name, only))
            CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
