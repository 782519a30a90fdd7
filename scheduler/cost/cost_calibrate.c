/*
 * Calibration: measure each device through the same path real work takes, a strict plan on
 * that device run by the executor, and read the node's own time from the run's timeline.
 *
 *   f32 GEMM     MatMul [n,n] x [n,n], n = 128, 256, 512, 1024 (quick: 128, 256); sustained
 *                ops/s = 2n^3 / median time, best size kept. Sizes stop growing once one run
 *                would take over a second.
 *   f16 GEMM     the same with plan precision F16, on devices that say they compute in fp16
 *                (has_fp16, peak_flops_f16) or that cannot run the f32 GEMM at all (NPUs).
 *   bandwidth    Add of two vectors of 8 Mi floats (quick: 4 Mi), 3 x 4 bytes per element.
 *   launch       Relu of one element: its whole node time.
 *   host links   devices that are not host-visible: upload() and download() of 4 KiB, 1 MiB
 *                and 16 MiB (quick: 4 KiB and 4 MiB), fitted to latency + bytes / bandwidth.
 *   op classes   one representative operator per cost_op_class at four sizes (quick: two) of
 *                the scale of real models' nodes (1 Ki to 64 Ki elements, MatMul 16 to 128,
 *                Conv 3x3 of 8 channels on 8x8 to 64x64), fitted by cost_fit_line to fixed
 *                seconds + work / rate: the launch and fork/join cost of a real node of that
 *                class and its in-cache speed, which neither a 1-element Relu nor an 8 Mi
 *                streaming Add tells. Each size runs as a chain of 8 such nodes (median per
 *                run), as nodes run inside a model. A class the device cannot run keeps no
 *                fit.
 *   cache        devices that compute on host cores: the host's last-level cache bytes
 *                (hwloc), the working set below which the class fits apply unbounded.
 * Each figure is the robust median (cost_robust_median) of several runs after warm-up runs, so
 * one slow run never poisons the profile. A device that cannot run a calibration graph keeps
 * its facts' figure for it.
 */
#include "cost_internal.h"

#include <hwloc.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum cal_kind {
    CAL_GEMM, CAL_ADD, CAL_RELU, CAL_CONV, CAL_DIV, CAL_ERF, CAL_SOFTMAX, CAL_NORM, CAL_REDUCE,
    CAL_POOL, CAL_TRANSPOSE, CAL_RESHAPE
} cal_kind;

/* The operator each calibration graph times (its node's own time is read from the timeline). */
static const char *const op_names[] = {"MatMul", "Add", "Relu", "Conv", "Div", "Erf", "Softmax",
                                       "LayerNormalization", "ReduceMean", "MaxPool",
                                       "Transpose", "Reshape"};

typedef struct cal_ctx {
    cost_model *m;
    uint32_t dev;
    int quick;
    cost_progress_fn progress;
    void *user;
    int step, total;
} cal_ctx;

static void report(cal_ctx *c, const char *what)
{
    if (!c->progress)
        return;
    char label[160];
    snprintf(label, sizeof label, "%s %s", c->m->rt->devices[c->dev].id, what);
    c->progress(c->user, label, c->total ? (double)c->step / c->total : 1.0);
}

/* Most nodes a class calibration chains (see build). */
#define CAL_CHAIN 8

/* A graph of KIND over N: the matrix side (GEMM), the image side (CONV: [1,8,N,N] with 8 3x3
 * filters, padding 1; POOL: [1,16,N,N], 2x2 windows of stride 2), else the element count
 * (SOFTMAX, NORM, REDUCE: rows of 256; TRANSPOSE, RESHAPE: [N/64, 64]). Every operand is a
 * graph input. With CHAIN > 1 (at most CAL_CHAIN) the op is applied CHAIN times, each node to
 * the previous one's output (POOL and REDUCE, which shrink their input, stay one node): nodes
 * inside a graph pay what a lone node does not (their input was just written, by another
 * node, into the plan's arena), and that is what a model's nodes pay. */
static loom_graph *build(cal_kind kind, int64_t n, int chain)
{
    loom_graph *g = loom_graph_create("lc-calibrate");
    if (!g)
        return NULL;
    int64_t sq[2] = {n, n}, vec[1] = {n}, rows[2] = {n / 256 ? n / 256 : 1, 256};
    int64_t tall[2] = {n / 64 ? n / 64 : 1, 64}, row[1] = {256};
    loom_value y;
    loom_window_params wp;
    memset(&wp, 0, sizeof wp);
    switch (kind) {
    case CAL_GEMM: {
        loom_value a = loom_input(g, "a", LOOM_DTYPE_F32, 2, sq);
        loom_value b = loom_input(g, "b", LOOM_DTYPE_F32, 2, sq);
        y = loom_matmul(g, a, b);
        break;
    }
    case CAL_ADD:
    case CAL_DIV: {
        loom_value a = loom_input(g, "a", LOOM_DTYPE_F32, 1, vec);
        loom_value b = loom_input(g, "b", LOOM_DTYPE_F32, 1, vec);
        y = kind == CAL_ADD ? loom_add(g, a, b) : loom_div(g, a, b);
        break;
    }
    case CAL_RELU:
        y = loom_relu(g, loom_input(g, "a", LOOM_DTYPE_F32, 1, vec));
        break;
    case CAL_ERF:
        y = loom_erf(g, loom_input(g, "a", LOOM_DTYPE_F32, 1, vec));
        break;
    case CAL_CONV: {
        int64_t xd[4] = {1, 8, n, n}, wd[4] = {8, 8, 3, 3}, bd[1] = {8};
        loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 4, xd);
        loom_value w = loom_input(g, "w", LOOM_DTYPE_F32, 4, wd);
        loom_value b = loom_input(g, "b", LOOM_DTYPE_F32, 1, bd);
        wp.n_spatial = 2;
        for (int k = 0; k < 4; k++)
            wp.pads[k] = 1;
        y = loom_conv(g, x, w, b, &wp);
        break;
    }
    case CAL_POOL: {
        int64_t xd[4] = {1, 16, n, n};
        wp.n_spatial = 2;
        wp.kernel_shape[0] = wp.kernel_shape[1] = 2;
        wp.strides[0] = wp.strides[1] = 2;
        y = loom_max_pool(g, loom_input(g, "x", LOOM_DTYPE_F32, 4, xd), &wp);
        break;
    }
    case CAL_SOFTMAX:
        y = loom_softmax(g, loom_input(g, "x", LOOM_DTYPE_F32, 2, rows), -1);
        break;
    case CAL_NORM: {
        loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, rows);
        loom_value sc = loom_input(g, "scale", LOOM_DTYPE_F32, 1, row);
        loom_value bi = loom_input(g, "bias", LOOM_DTYPE_F32, 1, row);
        y = loom_layer_norm(g, x, sc, bi, -1, 1e-5f);
        break;
    }
    case CAL_REDUCE: {
        int64_t axes[1] = {1};
        y = loom_reduce_mean(g, loom_input(g, "x", LOOM_DTYPE_F32, 2, rows), 1, axes, 1);
        break;
    }
    case CAL_TRANSPOSE:
        y = loom_transpose(g, loom_input(g, "x", LOOM_DTYPE_F32, 2, tall), NULL);
        break;
    case CAL_RESHAPE:
    default:
        y = loom_reshape(g, loom_input(g, "x", LOOM_DTYPE_F32, 1, vec), 2, tall);
        break;
    }
    /* The rest of the chain reuses the first node's other operands (graph inputs 1 and 2). */
    loom_value b = loom_graph_input_count(g) > 1 ? loom_graph_input(g, 1) : y;
    loom_value c = loom_graph_input_count(g) > 2 ? loom_graph_input(g, 2) : y;
    for (int k = 1; k < chain && k < CAL_CHAIN; k++) {
        switch (kind) {
        case CAL_GEMM: y = loom_matmul(g, y, b); break;
        case CAL_ADD: y = loom_add(g, y, b); break;
        case CAL_DIV: y = loom_div(g, y, b); break;
        case CAL_RELU: y = loom_relu(g, y); break;
        case CAL_ERF: y = loom_erf(g, y); break;
        case CAL_CONV: y = loom_conv(g, y, b, c, &wp); break;
        case CAL_SOFTMAX: y = loom_softmax(g, y, -1); break;
        case CAL_NORM: y = loom_layer_norm(g, y, b, c, -1, 1e-5f); break;
        case CAL_TRANSPOSE: y = loom_transpose(g, y, NULL); break;
        case CAL_RESHAPE: y = loom_reshape(g, y, k % 2 ? 1 : 2, k % 2 ? vec : tall); break;
        default: k = chain; break; /* POOL, REDUCE: one node */
        }
    }
    loom_output(g, y, "y");
    if (loom_graph_check(g) != LOOM_OK) {
        loom_graph_destroy(g);
        return NULL;
    }
    return g;
}

/* The work (FLOPs, bytes) of G's node of operator OP into *WORK (zeros when not found). */
static void node_work(const loom_graph *g, const char *op, loom_op_cost *work)
{
    memset(work, 0, sizeof *work);
    for (size_t i = 0; i < g->n_nodes; i++) {
        if (strcmp(g->nodes[i].def->name, op) != 0 || !g->nodes[i].def->cost ||
            g->nodes[i].n_inputs > 4 || g->nodes[i].n_outputs > 1)
            continue;
        loom_tensor_desc in[4], out[1];
        const void *cst[4];
        loom_node_desc d;
        graph_node_desc(g, i, &d, in, out, cst);
        g->nodes[i].def->cost(&d, work);
        return;
    }
}

/* Run the KIND graph over N (CHAIN nodes, see build) on the device with PRECISION: WARMUP
 * runs, then between 3 and MAX_RUNS runs (stopping once BUDGET_S seconds were spent); the
 * node's robust median time (per run, the median over the chain's nodes) into *SECONDS, and
 * one node's FLOPs and bytes into *WORK when not NULL. Returns
 * LOOM_ERR_UNSUPPORTED when the device cannot run it (no message added), another status on a
 * failure (the thread's error says why). */
static loom_status measure_work(cal_ctx *c, cal_kind kind, int64_t n, int chain,
                                uint32_t precision, double *seconds, loom_op_cost *work)
{
    const runtime_device *dev = &c->m->rt->devices[c->dev];
    int warmup = c->quick ? 1 : 2, max_runs = c->quick ? 5 : 9;
    double budget_s = c->quick ? 0.3 : 1.5;
    loom_graph *g = build(kind, n, chain);
    if (!g)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory building a graph");
    loom_plan *plan = NULL;
    loom_tensor *in[3] = {NULL, NULL, NULL}, *out[1] = {NULL};
    size_t n_in = loom_graph_input_count(g);
    if (work)
        node_work(g, op_names[kind], work);
    loom_plan_options po = {.struct_size = sizeof po, .device = dev->id, .strict = 1,
                            .precision = precision};
    loom_status st = loom_plan_create(c->m->rt, g, &po, &plan);
    if (st != LOOM_OK)
        goto out;
    for (size_t i = 0; i < n_in && i < 3 && st == LOOM_OK; i++) {
        int64_t dims[LOOM_MAX_RANK];
        uint32_t rank = 0;
        loom_dtype dt = LOOM_DTYPE_F32;
        loom_value_info(g, loom_graph_input(g, i), &dt, &rank, dims);
        st = loom_tensor_create(LOOM_DTYPE_F32, rank, dims, &in[i]);
        if (st != LOOM_OK)
            break;
        float *x = loom_tensor_data(in[i]);
        size_t count = loom_tensor_nbytes(in[i]) / sizeof *x;
        for (size_t k = 0; k < count; k++) /* small normal values: no denormal slow paths */
            x[k] = 0.25f + (float)(k % 17) * 0.03125f;
    }
    if (st == LOOM_OK)
        st = loom_plan_make_outputs(plan, out, 1);
    if (st != LOOM_OK)
        goto out;

    size_t cap = loom_plan_node_count(plan);
    loom_node_timing *tl = calloc(cap ? cap : 1, sizeof *tl);
    double samples[16];
    int n_samples = 0;
    if (!tl) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        goto out;
    }
    double spent = 0;
    for (int r = 0; r < warmup + max_runs && st == LOOM_OK; r++) {
        loom_run_stats stats = {.struct_size = sizeof stats, .timeline = tl,
                                .timeline_capacity = cap};
        st = loom_plan_run(plan, (const loom_tensor *const *)in, n_in, out, 1, &stats);
        if (st != LOOM_OK)
            break;
        double t = -1, nodes[CAL_CHAIN];
        size_t n_nodes = 0;
        for (size_t k = 0; k < stats.timeline_count; k++) {
            const char *op = loom_plan_node_op(plan, tl[k].node);
            if (op && strcmp(op, op_names[kind]) == 0 && n_nodes < CAL_CHAIN)
                nodes[n_nodes++] = (double)(tl[k].end_ns - tl[k].start_ns) * 1e-9;
        }
        if (n_nodes) /* a chain's nodes: their median */
            t = cost_robust_median(nodes, n_nodes);
        else /* no timeline for the node: the whole run */
            t = stats.latency_ms * 1e-3;
        if (!(t > 0))
            t = 1e-9; /* below the clock's resolution */
        spent += t;
        if (r >= warmup)
            samples[n_samples++] = t;
        if (n_samples >= 3 && spent > budget_s)
            break;
    }
    free(tl);
    if (st == LOOM_OK)
        *seconds = cost_robust_median(samples, (size_t)n_samples);
out:
    for (size_t i = 0; i < 3; i++)
        loom_tensor_destroy(in[i]);
    loom_tensor_destroy(out[0]);
    loom_plan_destroy(plan);
    loom_graph_destroy(g);
    return st;
}

/* measure_work of a lone node, without the work. */
static loom_status measure(cal_ctx *c, cal_kind kind, int64_t n, uint32_t precision,
                           double *seconds)
{
    return measure_work(c, kind, n, 1, precision, seconds, NULL);
}

/* Whether plan creation said the device cannot run the graph (rather than failing). */
static int unsupported(loom_status st)
{
    return st == LOOM_ERR_UNSUPPORTED;
}

/* Best sustained GEMM ops/s over SIZES with PRECISION into *FLOPS (left alone when the
 * device cannot run it). */
static loom_status gemm_flops(cal_ctx *c, const int64_t *sizes, int n_sizes, uint32_t precision,
                              double *flops, int *supported)
{
    double best = 0;
    *supported = 1;
    for (int i = 0; i < n_sizes; i++) {
        char what[64];
        snprintf(what, sizeof what, "GEMM %s %lld", precision ? "f16" : "f32",
                 (long long)sizes[i]);
        report(c, what);
        c->step++;
        double t;
        loom_status st = measure(c, CAL_GEMM, sizes[i], precision, &t);
        if (unsupported(st) && i == 0) {
            *supported = 0;
            c->step += n_sizes - 1;
            return LOOM_OK;
        }
        if (unsupported(st)) /* too large for it: keep what the smaller sizes gave */
            break;
        if (st != LOOM_OK)
            return loom_set_error(st, "calibrating %s: GEMM %lld: %s",
                                  c->m->rt->devices[c->dev].id, (long long)sizes[i],
                                  loom_last_error());
        double n = (double)sizes[i], f = 2 * n * n * n / t;
        if (f > best)
            best = f;
        if (t * 8 > 1.0) { /* the next size would take over a second per run */
            c->step += n_sizes - 1 - i;
            break;
        }
    }
    if (best > 0)
        *flops = best;
    return LOOM_OK;
}

/* Median seconds of one upload (UP) or download of BYTES on the device. */
static loom_status time_copy(cal_ctx *c, int up, size_t bytes, double *seconds)
{
    const runtime_device *dev = &c->m->rt->devices[c->dev];
    const loom_backend *be = dev->backend;
    loom_status (*copy)(void *, uint32_t, void *, const void *, size_t, char *, size_t) =
        up ? RUNTIME_SLOT(be, upload) : RUNTIME_SLOT(be, download);
    void *dbuf = be->alloc(be->ctx, dev->index, bytes, 64);
    void *hbuf = calloc(1, bytes);
    loom_status st = LOOM_OK;
    double samples[16];
    int n = 0, runs = c->quick ? 5 : 9;
    if (!dbuf || !hbuf) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "calibrating %s: cannot allocate %zu bytes",
                            dev->id, bytes);
        goto out;
    }
    for (int r = 0; r < runs + 1; r++) {
        char err[256] = "";
        uint64_t t0 = loom_now_ns();
        int raw = up ? (int)copy(be->ctx, dev->index, dbuf, hbuf, bytes, err, sizeof err)
                     : (int)copy(be->ctx, dev->index, hbuf, dbuf, bytes, err, sizeof err);
        uint64_t t1 = loom_now_ns();
        /* A status outside the enum becomes LOOM_ERR_DEVICE_LOST, the plugin's number kept in
         * the message, as on every other call into a backend. */
        st = runtime_backend_status(be, raw, err, sizeof err);
        if (st != LOOM_OK) {
            st = loom_set_error(st, "calibrating %s: %s of %zu bytes: %s", dev->id,
                                up ? "upload" : "download", bytes, err[0] ? err : "failed");
            goto out;
        }
        if (r > 0) /* the first one warms up */
            samples[n++] = t1 > t0 ? (double)(t1 - t0) * 1e-9 : 1e-9;
    }
    *seconds = cost_robust_median(samples, (size_t)n);
out:
    if (dbuf)
        be->free(be->ctx, dev->index, dbuf, bytes);
    free(hbuf);
    return st;
}

/* Least-squares fit of t = latency + bytes / bandwidth to N points. */
static void fit_link(const double *bytes, const double *t, int n, double *latency,
                     double *bandwidth)
{
    double mx = 0, my = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        mx += bytes[i] / n;
        my += t[i] / n;
    }
    for (int i = 0; i < n; i++) {
        sxx += (bytes[i] - mx) * (bytes[i] - mx);
        sxy += (bytes[i] - mx) * (t[i] - my);
    }
    double slope = sxx > 0 ? sxy / sxx : 0;
    double lat = my - slope * mx;
    if (!(slope > 0)) { /* flat or noisy: the largest copy's plain rate */
        *latency = t[0];
        *bandwidth = bytes[n - 1] / t[n - 1];
        return;
    }
    /* Noise can put the intercept below zero: the smallest copy's time less its bytes at the
     * fitted bandwidth, or failing that its whole time, bounds the latency instead. */
    if (!(lat > 0))
        lat = t[0] - bytes[0] * slope > 0 ? t[0] - bytes[0] * slope : t[0];
    *latency = lat;
    *bandwidth = 1.0 / slope;
}

static loom_status calibrate_links(cal_ctx *c, cost_profile *p)
{
    const runtime_device *dev = &c->m->rt->devices[c->dev];
    const loom_backend *be = dev->backend;
    if (!be->alloc || !be->free || !RUNTIME_SLOT(be, upload) || !RUNTIME_SLOT(be, download))
        return LOOM_OK; /* the facts' defaults stay */
    static const size_t full[] = {4096, 1u << 20, 16u << 20}, quick[] = {4096, 4u << 20};
    const size_t *sizes = c->quick ? quick : full;
    int n = c->quick ? 2 : 3;
    for (int up = 0; up < 2; up++) {
        double x[3], t[3];
        for (int i = 0; i < n; i++) {
            char what[64];
            snprintf(what, sizeof what, "%s %zu KiB", up ? "upload" : "download",
                     sizes[i] / 1024);
            report(c, what);
            c->step++;
            x[i] = (double)sizes[i];
            loom_status st = time_copy(c, up, sizes[i], &t[i]);
            if (st != LOOM_OK)
                return st;
        }
        if (up)
            fit_link(x, t, n, &p->from_host_latency_s, &p->from_host_bandwidth);
        else
            fit_link(x, t, n, &p->to_host_latency_s, &p->to_host_bandwidth);
    }
    return LOOM_OK;
}

/* The calibration of each op class: its graph and sizes (full, then quick). */
typedef struct class_cal {
    cost_op_class cls;
    cal_kind kind;
    const char *label;
    int64_t full[4], quick[2];
} class_cal;

#define ELEMS {1024, 4096, 16384, 65536}, {1024, 16384}
static const class_cal class_cals[] = {
    {COST_CLASS_MATMUL, CAL_GEMM, "MatMul", {16, 32, 64, 128}, {16, 64}},
    {COST_CLASS_CONV, CAL_CONV, "Conv", {8, 16, 32, 64}, {8, 32}},
    {COST_CLASS_BINARY, CAL_ADD, "Add", ELEMS},
    {COST_CLASS_DIV, CAL_DIV, "Div", ELEMS},
    {COST_CLASS_UNARY, CAL_RELU, "Relu", ELEMS},
    {COST_CLASS_TRANSCENDENTAL, CAL_ERF, "Erf", ELEMS},
    {COST_CLASS_SOFTMAX, CAL_SOFTMAX, "Softmax", ELEMS},
    {COST_CLASS_NORM, CAL_NORM, "LayerNormalization", ELEMS},
    {COST_CLASS_REDUCE, CAL_REDUCE, "ReduceMean", ELEMS},
    {COST_CLASS_POOL, CAL_POOL, "MaxPool", {8, 16, 32, 64}, {8, 32}},
    {COST_CLASS_COPY, CAL_TRANSPOSE, "Transpose", ELEMS},
    {COST_CLASS_VIEW, CAL_RESHAPE, "Reshape", ELEMS},
};
#undef ELEMS
#define N_CLASS_CALS (sizeof class_cals / sizeof class_cals[0])

/* Fit the line of class CC on P from its sizes run with PRECISION. A class the device cannot
 * run, or whose measurement fails, keeps no fit (a failure is noted through runtime_message: the
 * class then falls back to the roofline, which is no reason to lose the whole profile). */
static void fit_class(cal_ctx *c, cost_profile *p, const class_cal *cc, uint32_t precision)
{
    int n_sizes = c->quick ? 2 : 4;
    const int64_t *sizes = c->quick ? cc->quick : cc->full;
    double x[4], t[4];
    size_t n = 0;
    for (int i = 0; i < n_sizes; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s %lld", cc->label, (long long)sizes[i]);
        report(c, what);
        c->step++;
        loom_op_cost w;
        double sec;
        loom_status st = measure_work(c, cc->kind, sizes[i], CAL_CHAIN, precision, &sec, &w);
        if (st == LOOM_ERR_UNSUPPORTED)
            continue;
        if (st != LOOM_OK) {
            runtime_message(c->m->rt, "calibrating %s: %s: %s (the class keeps the roofline)",
                       c->m->rt->devices[c->dev].id, what, loom_last_error());
            continue;
        }
        x[n] = cost_op_class_counts_flops(cc->cls) ? w.flops : w.bytes_read + w.bytes_written;
        t[n++] = sec;
    }
    double fixed = 0, per_unit = 0;
    if (!cost_fit_line(x, t, n, &fixed, &per_unit))
        return;
    p->class_fixed_s[cc->cls] = fixed;
    p->class_rate[cc->cls] = per_unit > 0 ? 1 / per_unit : 0;
}

/* Bytes of the host's last-level caches, all of them (L3, else L2), from hwloc; 0 unknown. */
static double host_cache_bytes(void)
{
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0)
        return 0;
    double total = 0;
    static const hwloc_obj_type_t levels[] = {HWLOC_OBJ_L3CACHE, HWLOC_OBJ_L2CACHE};
    if (hwloc_topology_load(topo) == 0)
        for (int k = 0; k < 2 && total == 0; k++) {
            int n = hwloc_get_nbobjs_by_type(topo, levels[k]);
            for (int i = 0; i < n; i++) {
                hwloc_obj_t o = hwloc_get_obj_by_type(topo, levels[k], (unsigned)i);
                if (o && o->attr)
                    total += (double)o->attr->cache.size;
            }
        }
    hwloc_topology_destroy(topo);
    return total;
}

loom_status cost_calibrate_device(cost_model *m, uint32_t dev, int quick, cost_progress_fn progress,
                                void *user)
{
    if (!m || dev >= m->n_devices)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "calibrate: no device %u", dev);
    const runtime_device *d = &m->rt->devices[dev];
    const loom_device_info *info = &d->info;
    int v03 = LOOM_DEVICE_INFO_HAS_V03(info);
    static const int64_t full[] = {128, 256, 512, 1024}, quick_sizes[] = {128, 256};
    const int64_t *sizes = quick ? quick_sizes : full;
    int n_sizes = quick ? 2 : 4;
    cal_ctx c = {m, dev, quick, progress, user, 0, 0};
    int want_f16 = v03 && (info->has_fp16 || info->peak_flops_f16 > 0);
    /* The f16 sizes are counted up front; they are skipped (and stepped over) when not run. */
    c.total = 2 * n_sizes + 2 + (info->host_visible ? 0 : (quick ? 4 : 6)) +
              (int)N_CLASS_CALS * (quick ? 2 : 4);

    cost_profile p = m->profiles[dev];
    int f32_ok, f16_ok = 0;
    loom_status st = gemm_flops(&c, sizes, n_sizes, LOOM_PRECISION_F32, &p.flops[0], &f32_ok);
    if (st == LOOM_OK && (want_f16 || !f32_ok))
        st = gemm_flops(&c, sizes, n_sizes, LOOM_PRECISION_F16, &p.flops[1], &f16_ok);
    else
        c.step += n_sizes;
    /* A device without f32 arithmetic runs the streaming and launch graphs in fp16. */
    uint32_t prec = f32_ok || !f16_ok ? LOOM_PRECISION_F32 : LOOM_PRECISION_F16;

    if (st == LOOM_OK) {
        int64_t n = quick ? (4 << 20) : (8 << 20);
        /* Three vectors must fit comfortably in the device's memory. */
        while (info->memory_bytes && (uint64_t)n * 4 * 3 * 4 > info->memory_bytes && n > 65536)
            n /= 2;
        report(&c, "bandwidth");
        c.step++;
        double t;
        st = measure(&c, CAL_ADD, n, prec, &t);
        if (st == LOOM_OK)
            p.mem_bandwidth = 3.0 * 4.0 * (double)n / t;
        else if (unsupported(st))
            st = LOOM_OK;
        else
            st = loom_set_error(st, "calibrating %s: bandwidth: %s", d->id, loom_last_error());
    }
    if (st == LOOM_OK) {
        report(&c, "launch latency");
        c.step++;
        double t;
        st = measure(&c, CAL_RELU, 1, prec, &t);
        if (st == LOOM_OK)
            p.launch_s = t;
        else if (unsupported(st))
            st = LOOM_OK;
        else
            st = loom_set_error(st, "calibrating %s: launch latency: %s", d->id,
                                loom_last_error());
    }
    if (st == LOOM_OK && !info->host_visible)
        st = calibrate_links(&c, &p);
    if (st == LOOM_OK) {
        for (size_t k = 0; k < N_CLASS_CALS; k++)
            fit_class(&c, &p, &class_cals[k], prec);
        p.class_column = prec == LOOM_PRECISION_F16 ? 1 : 0;
        if (info->kind == LOOM_DEVICE_CPU || p.shares_host_cpu)
            p.cache_bytes = host_cache_bytes();
    }
    if (st != LOOM_OK)
        return st;
    p.calibrated = 1;
    m->profiles[dev] = p;
    m->profile_dirty[dev] = 1;
    c.step = c.total;
    report(&c, "done");
    return LOOM_OK;
}

/* Progress of one device mapped into the whole calibration's [0, 1]. */
typedef struct cal_span {
    cost_progress_fn progress;
    void *user;
    double first, width;
} cal_span;

static void span_progress(void *user, const char *label, double fraction)
{
    cal_span *s = user;
    s->progress(s->user, label, s->first + s->width * fraction);
}

loom_status cost_calibrate(cost_model *m, int only_missing, int quick,
                         void (*progress)(void *user, const char *label, double fraction),
                         void *user)
{
    if (!m)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "calibrate: model is NULL");
    uint32_t todo = 0, done = 0;
    for (uint32_t d = 0; d < m->n_devices; d++)
        todo += m->group[d] == d && !(only_missing && m->profiles[d].calibrated);
    loom_status first = LOOM_OK;
    char first_msg[1024] = "";
    for (uint32_t d = 0; d < m->n_devices; d++) {
        /* Devices with one key (identical devices) share the leader's measurement. */
        if (m->group[d] != d) {
            if (m->profiles[m->group[d]].calibrated && !(only_missing && m->profiles[d].calibrated)) {
                m->profiles[d] = m->profiles[m->group[d]];
                m->profile_dirty[d] = 1;
            }
            continue;
        }
        if (only_missing && m->profiles[d].calibrated)
            continue;
        cal_span span = {progress, user, todo ? (double)done / todo : 0, todo ? 1.0 / todo : 1};
        loom_status st = cost_calibrate_device(m, d, quick, progress ? span_progress : NULL, &span);
        done++;
        if (st != LOOM_OK && first == LOOM_OK) {
            first = st;
            snprintf(first_msg, sizeof first_msg, "%s", loom_last_error());
        }
    }
    /* Followers of a leader calibrated later in the list. */
    for (uint32_t d = 0; d < m->n_devices; d++)
        if (m->group[d] != d && !m->profiles[d].calibrated && m->profiles[m->group[d]].calibrated) {
            m->profiles[d] = m->profiles[m->group[d]];
            m->profile_dirty[d] = 1;
        }
    if (first != LOOM_OK)
        return loom_set_error(first, "%s", first_msg);
    return LOOM_OK;
}
