/*
 * Tests of experts as placement units (issue 14, item 4): the split_moe_experts pass turns a MoE
 * with constant expert weights into MoERoute + one MoEExpert per expert + Sum. Pinned down:
 * the split graph's output equals naive loops written from ONNX Runtime's MoE semantics and the
 * fused MoE kernel (odd sizes, k = 1, k = number of experts, experts that receive no token,
 * gated FFN, 3-D input, no biases); when the pass splits and when it leaves the fused node
 * (one device, LOOM_MOE_SPLIT, weights not constant); the pieces' names and pins; experts
 * placed on different devices (cpu:0 and opencl:0, when an OpenCL device exists) with the copies
 * between them and the explanation naming why; experts on cpu:0 and the npu-sim plugin (split
 * by itself: two devices can run them; fp16 on the NPU); the OpenCL expert kernel on every case; the cost
 * of an expert (tokens * k / num_experts routed FFNs); and the refusals of the new ops, each
 * naming the node.
 */
#include <loom/loom.h>

#include "graph/ops_defs.h"
#include "test_support.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static loom_runtime *rt;
static int have_opencl;

static int suite_init(void)
{
    if (loom_runtime_create(NULL, &rt) != LOOM_OK)
        return 1;
    for (size_t d = 0; d < loom_runtime_device_count(rt); d++) {
        char id[64];
        loom_device_info info;
        if (loom_runtime_device(rt, d, id, sizeof id, &info) == LOOM_OK &&
            strcmp(id, "opencl:0") == 0)
            have_opencl = 1;
    }
    return 0;
}

static int suite_clean(void)
{
    loom_runtime_destroy(rt);
    unsetenv("LOOM_MOE_SPLIT");
    return 0;
}

static uint64_t rng = 0x853c49e6748fea9bull;

static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / (float)0x800000 - 1.0f; /* [-1, 1) */
}

static float *rand_array(size_t n, float scale)
{
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = frand() * scale;
    return a;
}

static double act_ref(const char *act, double v)
{
    if (strcmp(act, "relu") == 0)
        return v > 0 ? v : 0;
    if (strcmp(act, "gelu") == 0)
        return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    if (strcmp(act, "silu") == 0)
        return v / (1.0 + exp(-v));
    return v;
}

/* One MoE layer in naive loops (double): softmax, top k (ties: lower expert), optional
 * renormalisation, each chosen expert's FFN, weighted sum. w1/w3 [E, I, H], w2 [E, H, I].
 * TOKENS[e] counts the tokens routed to expert e. */
static void moe_ref(const float *x, const float *logits, const float *w1, const float *b1,
                    const float *w2, const float *b2, const float *w3, const float *b3,
                    int64_t t_n, int64_t h_n, int64_t i_n, int64_t e_n, int64_t k,
                    const char *act, int norm, double *y, int *tokens)
{
    double *p = malloc((size_t)e_n * sizeof *p), *hid = malloc((size_t)i_n * sizeof *hid);
    int *taken = malloc((size_t)e_n * sizeof *taken);
    int64_t *sel = malloc((size_t)k * sizeof *sel);
    double *w = malloc((size_t)k * sizeof *w);
    for (int64_t t = 0; t < t_n; t++) {
        double mx = -INFINITY, sum = 0, wsum = 0;
        for (int64_t e = 0; e < e_n; e++)
            mx = fmax(mx, logits[t * e_n + e]);
        for (int64_t e = 0; e < e_n; e++)
            sum += p[e] = exp(logits[t * e_n + e] - mx);
        memset(taken, 0, (size_t)e_n * sizeof *taken);
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < e_n; e++)
                if (!taken[e] && (best < 0 || p[e] > p[best]))
                    best = e;
            taken[best] = 1;
            sel[j] = best;
            w[j] = p[best] / sum;
            wsum += w[j];
        }
        for (int64_t c = 0; c < h_n; c++)
            y[t * h_n + c] = 0;
        for (int64_t j = 0; j < k; j++) {
            int64_t e = sel[j];
            double wj = norm ? w[j] / wsum : w[j];
            tokens[e]++;
            for (int64_t i = 0; i < i_n; i++) {
                double a = b1 ? b1[e * i_n + i] : 0, g = b3 ? b3[e * i_n + i] : 0;
                for (int64_t c = 0; c < h_n; c++) {
                    a += (double)w1[(e * i_n + i) * h_n + c] * x[t * h_n + c];
                    if (w3)
                        g += (double)w3[(e * i_n + i) * h_n + c] * x[t * h_n + c];
                }
                hid[i] = act_ref(act, a) * (w3 ? g : 1.0);
            }
            for (int64_t c = 0; c < h_n; c++) {
                double o = b2 ? b2[e * h_n + c] : 0;
                for (int64_t i = 0; i < i_n; i++)
                    o += (double)w2[(e * h_n + c) * i_n + i] * hid[i];
                y[t * h_n + c] += wj * o;
            }
        }
    }
    free(p), free(hid), free(taken), free(sel), free(w);
}

typedef struct moe_case {
    int64_t batch; /* 0: input [T, H]; else [batch, T / batch, H] */
    int64_t t, h, i, e, k;
    const char *act;
    int norm, biases, fc3;
    int64_t starve; /* experts [0, starve) get logits so low that no token picks them */
    int inputs;     /* weights and biases are graph inputs (not constants): the pass leaves it */
} moe_case;

/* A case's data and graph: the MoE node is named "moe", its output "y". */
typedef struct moe_built {
    moe_case c;
    float *x, *lg, *w[6];
    double *want;
    int *tokens;
    loom_graph *g;
    loom_tensor *ti[8];
    size_t n_in;
    int64_t xd[3];
    size_t xr;
} moe_built;

static void build(moe_built *b, moe_case c)
{
    memset(b, 0, sizeof *b);
    b->c = c;
    const int64_t T = c.t, H = c.h, I = c.i, E = c.e;
    b->x = rand_array((size_t)(T * H), 1.0f);
    b->lg = rand_array((size_t)(T * E), 2.0f);
    for (int64_t t = 0; t < T; t++)
        for (int64_t e = 0; e < c.starve; e++)
            b->lg[t * E + e] = -40.0f;
    b->w[0] = rand_array((size_t)(E * I * H), 0.3f);
    b->w[1] = c.biases ? rand_array((size_t)(E * I), 0.5f) : NULL;
    b->w[2] = rand_array((size_t)(E * H * I), 0.3f);
    b->w[3] = c.biases ? rand_array((size_t)(E * H), 0.5f) : NULL;
    b->w[4] = c.fc3 ? rand_array((size_t)(E * I * H), 0.3f) : NULL;
    b->w[5] = c.biases && c.fc3 ? rand_array((size_t)(E * I), 0.5f) : NULL;
    b->want = malloc((size_t)(T * H) * sizeof *b->want);
    b->tokens = calloc((size_t)E, sizeof *b->tokens);
    moe_ref(b->x, b->lg, b->w[0], b->w[1], b->w[2], b->w[3], b->w[4], b->w[5], T, H, I, E, c.k,
            c.act, c.norm, b->want, b->tokens);
    for (int64_t e = 0; e < c.starve; e++)
        CU_ASSERT_EQUAL(b->tokens[e], 0); /* the case does have experts with no token */

    loom_graph *g = b->g = loom_graph_create("moe_split");
    if (c.batch) {
        b->xd[0] = c.batch, b->xd[1] = T / c.batch, b->xd[2] = H, b->xr = 3;
    } else {
        b->xd[0] = T, b->xd[1] = H, b->xr = 2;
    }
    int64_t ld[2] = {T, E}, d1[3] = {E, I, H}, d2[3] = {E, H, I}, db1[2] = {E, I}, db2[2] = {E, H};
    loom_value in[8] = {loom_input(g, "x", LOOM_DTYPE_F32, b->xr, b->xd),
                        loom_input(g, "router", LOOM_DTYPE_F32, 2, ld)};
    loom_tensor_wrap(LOOM_DTYPE_F32, b->xr, b->xd, b->x, &b->ti[0]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, ld, b->lg, &b->ti[1]);
    b->n_in = 2;
    static const char *const wname[6] = {"w1", "b1", "w2", "b2", "w3", "b3"};
    const int64_t *wdims[6] = {d1, db1, d2, db2, d1, db1};
    for (int j = 0; j < 6; j++) {
        size_t rank = j % 2 ? 2 : 3;
        in[2 + j] = LOOM_NO_VALUE;
        if (!b->w[j])
            continue;
        if (!c.inputs) {
            in[2 + j] = loom_constant(g, wname[j], LOOM_DTYPE_F32, rank, wdims[j], b->w[j]);
            continue;
        }
        in[2 + j] = loom_input(g, wname[j], LOOM_DTYPE_F32, rank, wdims[j]);
        loom_tensor_wrap(LOOM_DTYPE_F32, rank, wdims[j], b->w[j], &b->ti[b->n_in++]);
    }
    loom_attr attrs[3] = {loom_attr_int("k", c.k), loom_attr_string("activation_type", c.act),
                          loom_attr_int("normalize_routing_weights", c.norm)};
    loom_value y;
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "MoE", "moe", in, c.fc3 ? (b->w[5] ? 8 : 7) : 6, attrs,
                                        3, &y, 1),
                          LOOM_OK);
    loom_output(g, y, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
}

static void built_free(moe_built *b)
{
    for (size_t j = 0; j < b->n_in; j++)
        loom_tensor_destroy(b->ti[j]);
    loom_graph_destroy(b->g);
    free(b->x), free(b->lg), free(b->want), free(b->tokens);
    for (int j = 0; j < 6; j++)
        free(b->w[j]);
}

/* Run plan P on B's inputs into a new array (the caller frees it). */
static float *run_plan(const moe_built *b, loom_plan *p)
{
    float *got = calloc((size_t)(b->c.t * b->c.h), sizeof *got);
    loom_tensor *to;
    loom_tensor_wrap(LOOM_DTYPE_F32, b->xr, b->xd, got, &to);
    CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)b->ti, b->n_in, &to, 1, NULL),
                    LOOM_OK);
    loom_tensor_destroy(to);
    return got;
}

/* How many elements of GOT are off WANT by more than RTOL relative (+ RTOL absolute); prints the
 * first few. */
static int count_bad(const char *what, const moe_case *c, const float *got, const double *want,
                     double rtol)
{
    int bad = 0;
    for (int64_t n = 0; n < c->t * c->h; n++)
        if (!(fabs(got[n] - want[n]) <= rtol * (1.0 + fabs(want[n])))) {
            if (bad++ < 4)
                printf("\n  %s T=%lld H=%lld I=%lld E=%lld k=%lld %s: y[%lld] = %.6f, want %.6f",
                       what, (long long)c->t, (long long)c->h, (long long)c->i, (long long)c->e,
                       (long long)c->k, c->act, (long long)n, got[n], want[n]);
        }
    return bad;
}

/* The summary of stage NAME of P ("" when absent). */
static const char *pass_summary(const loom_plan *p, const char *name)
{
    for (size_t i = 0; i < loom_plan_pass_count(p); i++) {
        loom_pass_info info = {.struct_size = sizeof info};
        if (loom_plan_pass_info(p, i, &info) == LOOM_OK && strcmp(info.name, name) == 0)
            return info.summary;
    }
    return "";
}

/* Index of the plan node named NAME, or -1. */
static long node_index(const loom_plan *p, const char *name)
{
    for (size_t i = 0; i < loom_plan_node_count(p); i++)
        if (!loom_plan_node_is_copy(p, i) && strcmp(loom_plan_node_name(p, i), name) == 0)
            return (long)i;
    return -1;
}

static size_t count_op(const loom_plan *p, const char *op)
{
    size_t n = 0;
    for (size_t i = 0; i < loom_plan_node_count(p); i++)
        n += !loom_plan_node_is_copy(p, i) && strcmp(loom_plan_node_op(p, i), op) == 0;
    return n;
}

/* Plan B's graph with PINS (none: NULL) and the split forced, check the pieces, compare with the
 * naive loops and with the fused kernel; returns the plan (the caller destroys it). */
static loom_plan *check_split(moe_built *b, const char *const *pins, size_t n_pins)
{
    const moe_case *c = &b->c;
    setenv("LOOM_MOE_SPLIT", "0", 1);
    loom_plan *fused = NULL, *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, b->g, NULL, &fused), LOOM_OK);
    CU_ASSERT_EQUAL(count_op(fused, "MoE"), 1);
    setenv("LOOM_MOE_SPLIT", "1", 1);
    loom_plan_options po = {.struct_size = sizeof po, .pins = pins, .n_pins = n_pins};
    loom_status st = loom_plan_create(rt, b->g, &po, &p);
    unsetenv("LOOM_MOE_SPLIT");
    if (st != LOOM_OK)
        printf("\n  plan: %s", loom_last_error());
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    CU_ASSERT_EQUAL(count_op(p, "MoE"), 0);
    CU_ASSERT_EQUAL(count_op(p, "MoERoute"), 1);
    CU_ASSERT_EQUAL(count_op(p, "MoEExpert"), (size_t)c->e);
    CU_ASSERT_EQUAL(count_op(p, "Sum"), 1);
    long sum = node_index(p, "moe");
    CU_ASSERT(sum >= 0 && strcmp(loom_plan_node_op(p, (size_t)sum), "Sum") == 0);
    CU_ASSERT(node_index(p, "moe/router") >= 0);
    char name[64];
    snprintf(name, sizeof name, "moe/expert%lld", (long long)(c->e - 1));
    CU_ASSERT(node_index(p, name) >= 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(pass_summary(p, "split_moe_experts"), "split 1 MoE"));
    float *f = run_plan(b, fused);
    /* Twice: the second run reuses what the first left in scratch and outputs. */
    for (int rep = 0; rep < 2; rep++) {
        float *got = run_plan(b, p);
        CU_ASSERT_EQUAL(count_bad("split vs naive", c, got, b->want, 1e-4), 0);
        double *fd = malloc((size_t)(c->t * c->h) * sizeof *fd);
        for (int64_t n = 0; n < c->t * c->h; n++)
            fd[n] = f[n];
        CU_ASSERT_EQUAL(count_bad("split vs fused", c, got, fd, 1e-5), 0);
        free(fd);
        free(got);
    }
    free(f);
    loom_plan_destroy(fused);
    return p;
}

static const moe_case k_cases[] = {
    {.t = 7, .h = 13, .i = 19, .e = 5, .k = 2, .act = "relu", .biases = 1},
    {.t = 11, .h = 9, .i = 17, .e = 4, .k = 1, .act = "gelu", .biases = 1},
    {.t = 6, .h = 10, .i = 14, .e = 3, .k = 3, .act = "silu", .norm = 1},
    {.t = 5, .h = 8, .i = 12, .e = 6, .k = 2, .act = "identity"},
    {.t = 9, .h = 11, .i = 21, .e = 7, .k = 2, .act = "relu", .norm = 1, .biases = 1,
     .starve = 4},
    {.t = 1, .h = 16, .i = 32, .e = 8, .k = 1, .act = "silu", .biases = 1},
    {.batch = 2, .t = 10, .h = 12, .i = 18, .e = 4, .k = 2, .act = "silu", .norm = 1, .biases = 1,
     .fc3 = 1},
    {.t = 6, .h = 7, .i = 9, .e = 3, .k = 1, .act = "gelu", .fc3 = 1},
    {.t = 33, .h = 130, .i = 70, .e = 6, .k = 2, .act = "gelu", .biases = 1},
};
#define N_CASES (sizeof k_cases / sizeof k_cases[0])

static void test_split_matches_naive_loops_and_fused_kernel(void)
{
    for (size_t i = 0; i < N_CASES; i++) {
        moe_built b;
        build(&b, k_cases[i]);
        loom_plan_destroy(check_split(&b, NULL, 0));
        built_free(&b);
    }
}

static void test_one_device_keeps_the_fused_node(void)
{
    moe_built b;
    build(&b, k_cases[0]);
    /* The default runtime: the CPU, and at most an OpenCL device on the host's own cores (kept
     * out of automatic placement), so the experts have no second device. */
    loom_plan *p = NULL;
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu:0"};
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, b.g, &po, &p), LOOM_OK);
    CU_ASSERT_EQUAL(count_op(p, "MoE"), 1);
    CU_ASSERT_STRING_EQUAL(pass_summary(p, "split_moe_experts"),
                           "off: one device can run its experts (cpu:0)");
    loom_plan_destroy(p);
    setenv("LOOM_MOE_SPLIT", "0", 1);
    const char *pin[1] = {"node:moe/expert1=cpu:0"};
    loom_plan_options pp = {.struct_size = sizeof pp, .pins = pin, .n_pins = 1};
    /* Not split, so the pin names no node: refused, naming it. */
    CU_ASSERT_EQUAL(loom_plan_create(rt, b.g, &pp, &p), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "moe/expert1"));
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, b.g, NULL, &p), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(pass_summary(p, "split_moe_experts"), "off: LOOM_MOE_SPLIT=0");
    CU_ASSERT_EQUAL(count_op(p, "MoE"), 1);
    unsetenv("LOOM_MOE_SPLIT");
    loom_plan_destroy(p);
    built_free(&b);
}

static void test_weights_not_constant_stay_fused(void)
{
    moe_case c = k_cases[0];
    c.inputs = 1;
    moe_built b;
    build(&b, c);
    setenv("LOOM_MOE_SPLIT", "1", 1);
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, b.g, NULL, &p), LOOM_OK);
    unsetenv("LOOM_MOE_SPLIT");
    CU_ASSERT_EQUAL(count_op(p, "MoE"), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(pass_summary(p, "split_moe_experts"), "left fused"));
    float *got = run_plan(&b, p);
    CU_ASSERT_EQUAL(count_bad("fused", &b.c, got, b.want, 1e-4), 0);
    free(got);
    loom_plan_destroy(p);
    built_free(&b);
}

static void test_pin_naming_an_expert_splits(void)
{
    moe_built b;
    build(&b, k_cases[4]);
    const char *pin[1] = {"node:moe/expert5=cpu:0"};
    loom_plan_options po = {.struct_size = sizeof po, .pins = pin, .n_pins = 1};
    loom_plan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, b.g, &po, &p), LOOM_OK);
    CU_ASSERT_EQUAL(count_op(p, "MoEExpert"), 7);
    CU_ASSERT_PTR_NOT_NULL(strstr(pass_summary(p, "split_moe_experts"), "names its pieces"));
    long e5 = node_index(p, "moe/expert5");
    CU_ASSERT_FATAL(e5 >= 0);
    loom_node_explain ex = {.struct_size = sizeof ex};
    CU_ASSERT_EQUAL(loom_plan_explain(p, (size_t)e5, &ex), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(ex.decided_by, "pin");
    float *got = run_plan(&b, p);
    CU_ASSERT_EQUAL(count_bad("pinned", &b.c, got, b.want, 1e-4), 0);
    free(got);
    loom_plan_destroy(p);
    built_free(&b);
}

/* Experts on two devices: some pinned to opencl:0, the others where placement puts them. */
static void test_experts_on_cpu_and_opencl(void)
{
    if (!have_opencl) {
        printf(" (no OpenCL device: skipped)");
        return;
    }
    for (size_t i = 0; i < N_CASES; i++) {
        moe_built b;
        build(&b, k_cases[i]);
        /* Even experts on the OpenCL device, the others on the CPU. */
        char pins_buf[8][48];
        const char *pins[8];
        size_t n_pins = 0;
        for (int64_t e = 0; e < b.c.e && n_pins < 8; e++) {
            snprintf(pins_buf[n_pins], sizeof pins_buf[0], "node:moe/expert%lld=%s",
                     (long long)e, e % 2 ? "cpu:0" : "opencl:0");
            pins[n_pins] = pins_buf[n_pins];
            n_pins++;
        }
        loom_plan *p = check_split(&b, pins, n_pins);
        long e0 = node_index(p, "moe/expert0"), e1 = node_index(p, "moe/expert1");
        CU_ASSERT_FATAL(e0 >= 0);
        CU_ASSERT_STRING_EQUAL(loom_plan_node_device(p, (size_t)e0), "opencl:0");
        if (e1 >= 0)
            CU_ASSERT_STRING_EQUAL(loom_plan_node_device(p, (size_t)e1), "cpu:0");
        /* The input and routing go up to the device, the contribution comes back: copies. */
        loom_plan_summary s = {.struct_size = sizeof s};
        CU_ASSERT_EQUAL(loom_plan_summary_get(p, &s), LOOM_OK);
        CU_ASSERT(s.n_copies >= 3);
        loom_node_explain ex = {.struct_size = sizeof ex};
        CU_ASSERT_EQUAL(loom_plan_explain(p, (size_t)e0, &ex), LOOM_OK);
        CU_ASSERT_STRING_EQUAL(ex.decided_by, "pin");
        CU_ASSERT(isfinite(ex.cost_s[0]) && ex.cost_s[0] > 0);
        loom_plan_destroy(p);
        built_free(&b);
    }
}

/* Every expert on the OpenCL device (an op pin): its kernel on each case. */
static void test_opencl_expert_kernel(void)
{
    if (!have_opencl) {
        printf(" (no OpenCL device: skipped)");
        return;
    }
    const char *pin[1] = {"MoEExpert=opencl:0"};
    for (size_t i = 0; i < N_CASES; i++) {
        moe_built b;
        build(&b, k_cases[i]);
        loom_plan *p = check_split(&b, pin, 1);
        for (size_t n = 0; n < loom_plan_node_count(p); n++)
            if (!loom_plan_node_is_copy(p, n) && strcmp(loom_plan_node_op(p, n), "MoEExpert") == 0)
                CU_ASSERT_STRING_EQUAL(loom_plan_node_device(p, n), "opencl:0");
        loom_plan_destroy(p);
        built_free(&b);
    }
}

/* cpu:0 + the npu-sim plugin ($LOOM_NPU_SIM_PLUGIN), fp16 precision: the plan splits by itself
 * (two devices can run the experts), every expert has a finite predicted cost on both devices
 * and an explanation; pinned experts run on the NPU in fp16 (tolerance of fp16), the others on
 * the CPU. */
static void test_experts_on_cpu_and_npu_sim(void)
{
    const char *path = getenv("LOOM_NPU_SIM_PLUGIN");
    if (!path || !*path) {
        printf(" (LOOM_NPU_SIM_PLUGIN not set: skipped)");
        return;
    }
    const char *paths[1] = {path};
    loom_runtime_options o = {.struct_size = sizeof o, .cpu_threads = 2, .plugin_paths = paths,
                              .n_plugin_paths = 1, .no_default_plugins = 1};
    loom_runtime *nrt = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_runtime_create(&o, &nrt), LOOM_OK);
    moe_built b;
    build(&b, (moe_case){.t = 24, .h = 32, .i = 48, .e = 4, .k = 2, .act = "silu", .norm = 1,
                         .biases = 1, .fc3 = 1});
    for (int pinned = 0; pinned < 2; pinned++) {
        const char *pins[2] = {"node:moe/expert0=npu-sim:0", "node:moe/expert3=npu-sim:0"};
        loom_plan_options po = {.struct_size = sizeof po, .precision = LOOM_PRECISION_F16,
                                .pins = pinned ? pins : NULL, .n_pins = pinned ? 2 : 0};
        loom_plan *p = NULL;
        loom_status st = loom_plan_create(nrt, b.g, &po, &p);
        if (st != LOOM_OK)
            printf("\n  plan: %s", loom_last_error());
        CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
        CU_ASSERT_EQUAL(count_op(p, "MoEExpert"), 4);
        if (!pinned)
            CU_ASSERT_STRING_EQUAL(pass_summary(p, "split_moe_experts"),
                                   "split 1 MoE into router + 4 expert nodes + sum (experts can "
                                   "run on cpu:0, npu-sim:0)");
        size_t on_npu = 0;
        for (size_t n = 0; n < loom_plan_node_count(p); n++) {
            if (loom_plan_node_is_copy(p, n) || strcmp(loom_plan_node_op(p, n), "MoEExpert"))
                continue;
            loom_node_explain ex = {.struct_size = sizeof ex};
            CU_ASSERT_EQUAL(loom_plan_explain(p, n, &ex), LOOM_OK);
            CU_ASSERT_EQUAL(ex.cost_count, loom_runtime_device_count(nrt));
            for (size_t d = 0; d < ex.cost_count; d++) {
                char id[64];
                loom_device_info info;
                if (loom_runtime_device(nrt, d, id, sizeof id, &info) == LOOM_OK &&
                    (!strcmp(id, "cpu:0") || !strcmp(id, "npu-sim:0")))
                    CU_ASSERT(isfinite(ex.cost_s[d]) && ex.cost_s[d] > 0);
            }
            CU_ASSERT(ex.reason && ex.reason[0]);
            on_npu += strcmp(loom_plan_node_device(p, n), "npu-sim:0") == 0;
        }
        if (pinned) {
            CU_ASSERT(on_npu >= 2);
            CU_ASSERT_STRING_EQUAL(loom_plan_node_device(p, (size_t)node_index(p, "moe/expert0")),
                                   "npu-sim:0");
        }
        float *got = run_plan(&b, p);
        CU_ASSERT_EQUAL(count_bad("cpu + npu-sim (fp16)", &b.c, got, b.want, 2e-2), 0);
        free(got);
        loom_plan_destroy(p);
    }
    /* What the NPU does not run it refuses, with its reason: an expert in int8, the router. */
    const char *pin8[1] = {"node:moe/expert0=npu-sim:0"};
    loom_plan_options p8 = {.struct_size = sizeof p8, .precision = LOOM_PRECISION_INT8,
                            .pins = pin8, .n_pins = 1, .strict = 1};
    loom_plan *p = NULL;
    CU_ASSERT_NOT_EQUAL(loom_plan_create(nrt, b.g, &p8, &p), LOOM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "MoEExpert runs in fp16 only"));
    const char *pinr[1] = {"node:moe/router=npu-sim:0"};
    loom_plan_options pr = {.struct_size = sizeof pr, .precision = LOOM_PRECISION_F16,
                            .pins = pinr, .n_pins = 1, .strict = 1};
    CU_ASSERT_NOT_EQUAL(loom_plan_create(nrt, b.g, &pr, &p), LOOM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "MoERoute is not supported"));
    built_free(&b);
    loom_runtime_destroy(nrt);
}

/* The pieces built by hand, each expert's weights graph inputs (the CPU kernel packs them at
 * run instead of at prepare): MoERoute + MoEExpert per expert + Sum equals the MoE. */
static void test_pieces_with_weights_given_at_run(void)
{
    moe_built b;
    build(&b, (moe_case){.t = 13, .h = 21, .i = 37, .e = 5, .k = 2, .act = "gelu", .norm = 1,
                         .biases = 1, .fc3 = 1, .starve = 1});
    const int64_t T = b.c.t, H = b.c.h, I = b.c.i, E = b.c.e;
    loom_graph *g = loom_graph_create("pieces");
    int64_t xd[2] = {T, H}, ld[2] = {T, E}, d1[2] = {I, H}, d2[2] = {H, I}, dI[1] = {I},
            dH[1] = {H};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd);
    loom_value lg = loom_input(g, "router", LOOM_DTYPE_F32, 2, ld), routing, parts[5], y;
    loom_attr ra[2] = {loom_attr_int("k", b.c.k), loom_attr_int("normalize_routing_weights", 1)};
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "MoERoute", "router", &lg, 1, ra, 2, &routing, 1),
                          LOOM_OK);
    /* Inputs: x, router, then per expert w1, b1, w2, b2, w3, b3 (slices of the MoE's). */
    loom_tensor *ti[2 + 5 * 6];
    size_t n_in = 0;
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, xd, b.x, &ti[n_in++]);
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, ld, b.lg, &ti[n_in++]);
    const int64_t *dims[6] = {d1, dI, d2, dH, d1, dI};
    const int64_t per[6] = {I * H, I, H * I, H, I * H, I};
    for (int64_t e = 0; e < E; e++) {
        loom_value in[8] = {x, routing};
        for (int j = 0; j < 6; j++) {
            char name[32];
            snprintf(name, sizeof name, "e%lld.%d", (long long)e, j);
            in[2 + j] = loom_input(g, name, LOOM_DTYPE_F32, j % 2 ? 1 : 2, dims[j]);
            loom_tensor_wrap(LOOM_DTYPE_F32, j % 2 ? 1 : 2, dims[j], b.w[j] + e * per[j],
                             &ti[n_in++]);
        }
        loom_attr ea[3] = {loom_attr_int("expert", e), loom_attr_string("activation_type", "gelu"),
                           loom_attr_int("k", b.c.k)};
        CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "MoEExpert", NULL, in, 8, ea, 3, &parts[e], 1),
                              LOOM_OK);
    }
    CU_ASSERT_EQUAL_FATAL(loom_graph_op(g, "Sum", "sum", parts, (size_t)E, NULL, 0, &y, 1),
                          LOOM_OK);
    loom_output(g, y, "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan *p = NULL;
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu:0", .strict = 1};
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &po, &p), LOOM_OK);
    float *got = calloc((size_t)(T * H), sizeof *got);
    loom_tensor *to;
    loom_tensor_wrap(LOOM_DTYPE_F32, 2, xd, got, &to);
    for (int rep = 0; rep < 2; rep++) {
        CU_ASSERT_EQUAL(loom_plan_run(p, (const loom_tensor *const *)ti, n_in, &to, 1, NULL),
                        LOOM_OK);
        CU_ASSERT_EQUAL(count_bad("pieces", &b.c, got, b.want, 1e-4), 0);
    }
    loom_tensor_destroy(to);
    for (size_t j = 0; j < n_in; j++)
        loom_tensor_destroy(ti[j]);
    free(got);
    loom_plan_destroy(p);
    loom_graph_destroy(g);
    built_free(&b);
}

/* The cost the registry gives an expert: tokens * k / num_experts routed FFNs, so the experts
 * of a MoE together cost what the fused node costs, less its routing. */
static void test_expert_cost_is_its_share_of_the_tokens(void)
{
    const int64_t T = 64, H = 32, I = 48, E = 8, K = 2;
    loom_tensor_desc moe_in[6] = {
        {LOOM_DTYPE_F32, 2, {T, H}},    {LOOM_DTYPE_F32, 2, {T, E}},
        {LOOM_DTYPE_F32, 3, {E, I, H}}, {LOOM_DTYPE_F32, 2, {E, I}},
        {LOOM_DTYPE_F32, 3, {E, H, I}}, {LOOM_DTYPE_F32, 2, {E, H}}};
    loom_tensor_desc ex_in[6] = {moe_in[0], moe_in[1], {LOOM_DTYPE_F32, 2, {I, H}},
                                 {LOOM_DTYPE_F32, 1, {I}}, {LOOM_DTYPE_F32, 2, {H, I}},
                                 {LOOM_DTYPE_F32, 1, {H}}};
    loom_tensor_desc out[1] = {moe_in[0]};
    loom_attr moe_attrs[1] = {loom_attr_int("k", K)};
    loom_attr ex_attrs[2] = {loom_attr_int("expert", 3), loom_attr_int("k", K)};
    loom_node_desc moe = {.op = LOOM_OP_MOE, .op_name = "MoE", .n_inputs = 6, .inputs = moe_in,
                          .n_outputs = 1, .outputs = out, .n_attrs = 1, .attrs = moe_attrs};
    loom_node_desc ex = {.op = LOOM_OP_MOE_EXPERT, .op_name = "MoEExpert", .n_inputs = 6,
                         .inputs = ex_in, .n_outputs = 1, .outputs = out, .n_attrs = 2,
                         .attrs = ex_attrs};
    loom_op_cost cm = {0}, ce = {0};
    loom_op_find("MoE")->cost(&moe, &cm);
    loom_op_find("MoEExpert")->cost(&ex, &ce);
    /* One routed FFN: 2 GEMMs of H x I multiply-adds, the activation, the weighted add. */
    const double per_route = 2.0 * H * I * 2.0 + I * LOOM_FLOPS_TRANSCENDENTAL + 2.0 * H;
    CU_ASSERT_DOUBLE_EQUAL(ce.flops, (double)T * K / E * per_route + T, 1e-6 * ce.flops);
    CU_ASSERT(fabs(E * ce.flops - cm.flops) < 0.05 * cm.flops);
}

static void test_refusals_name_the_node(void)
{
    loom_graph *g = loom_graph_create("bad");
    int64_t xd[2] = {4, 6}, rd[2] = {4, 3}, w1d[2] = {5, 6}, w2d[2] = {6, 5}, bad[2] = {5, 5};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd);
    loom_value r = loom_input(g, "routing", LOOM_DTYPE_F32, 2, rd);
    loom_value w1 = loom_input(g, "w1", LOOM_DTYPE_F32, 2, w1d);
    loom_value w2 = loom_input(g, "w2", LOOM_DTYPE_F32, 2, w2d);
    loom_value wb = loom_input(g, "wb", LOOM_DTYPE_F32, 2, bad);
    loom_value in[5] = {x, r, w1, LOOM_NO_VALUE, w2}, y;
    loom_attr a[2] = {loom_attr_int("expert", 3), loom_attr_int("k", 1)};
    CU_ASSERT_EQUAL(loom_graph_op(g, "MoEExpert", "e3", in, 5, a, 2, &y, 1),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "'e3'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "expert = 3"));
    loom_graph_destroy(g);

    g = loom_graph_create("bad2");
    x = loom_input(g, "x", LOOM_DTYPE_F32, 2, xd);
    r = loom_input(g, "routing", LOOM_DTYPE_F32, 2, rd);
    w1 = loom_input(g, "w1", LOOM_DTYPE_F32, 2, w1d);
    wb = loom_input(g, "wb", LOOM_DTYPE_F32, 2, bad);
    loom_value in2[5] = {x, r, w1, LOOM_NO_VALUE, wb};
    a[0] = loom_attr_int("expert", 1);
    CU_ASSERT_EQUAL(loom_graph_op(g, "MoEExpert", "e1", in2, 5, a, 2, &y, 1),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "'e1'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "fc2_weights"));
    loom_graph_destroy(g);

    g = loom_graph_create("bad3");
    r = loom_input(g, "logits", LOOM_DTYPE_F32, 2, rd);
    loom_attr k4[1] = {loom_attr_int("k", 4)};
    CU_ASSERT_EQUAL(loom_graph_op(g, "MoERoute", "router", &r, 1, k4, 1, &y, 1),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "'router'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "k = 4"));
    loom_graph_destroy(g);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"split matches naive loops and the fused kernel",
         test_split_matches_naive_loops_and_fused_kernel},
        {"one device keeps the fused node", test_one_device_keeps_the_fused_node},
        {"weights not constant stay fused", test_weights_not_constant_stay_fused},
        {"a pin naming an expert splits", test_pin_naming_an_expert_splits},
        {"experts on cpu:0 and opencl:0", test_experts_on_cpu_and_opencl},
        {"opencl expert kernel on every case", test_opencl_expert_kernel},
        {"experts on cpu:0 and npu-sim:0", test_experts_on_cpu_and_npu_sim},
        {"pieces with weights given at run", test_pieces_with_weights_given_at_run},
        {"expert cost is its share of the tokens", test_expert_cost_is_its_share_of_the_tokens},
        {"refusals name the node", test_refusals_name_the_node},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"moe_split", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
