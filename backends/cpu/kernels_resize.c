/*
 * CPU kernel of Resize, with ONNX opset-18 semantics (canonical attributes: graph/ops_resize.c):
 * nearest through the per-axis index maps of cpu_index_map.c; linear as separable 2-tap weights
 * per axis.
 */
#include "cpu_index_map.h"
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32

/* ===========================================================================================
 * Resize: nearest through index maps; linear as separable 2-tap weights per axis.
 * =========================================================================================== */

enum { CT_HALF, CT_PYTORCH, CT_ALIGN, CT_ASYM, CT_TF_NN };
enum { NM_RPF, NM_RPC, NM_FLOOR, NM_CEIL };

static int rs_ctm(const char *s)
{
    return strcmp(s, "pytorch_half_pixel") == 0     ? CT_PYTORCH
           : strcmp(s, "align_corners") == 0        ? CT_ALIGN
           : strcmp(s, "asymmetric") == 0           ? CT_ASYM
           : strcmp(s, "tf_half_pixel_for_nn") == 0 ? CT_TF_NN
                                                    : CT_HALF;
}

/* Source coordinate of output index O along an axis of IN -> OUT elements at SCALE. */
static double rs_coord(int ctm, double o, double scale, int64_t in, int64_t out)
{
    /* ONNX's reference uses length_resized = scale * in; when that is OUT up to float rounding
     * (sizes given, or an exact scale) the exact ratio OUT / IN is used. */
    double lr = scale * (double)in;
    if (in > 0 && fabs(lr - (double)out) <= 1e-5 * (double)(out > 1 ? out : 1)) {
        lr = (double)out;
        scale = (double)out / (double)in;
    }
    switch (ctm) {
    case CT_PYTORCH: return lr > 1.0 ? (o + 0.5) / scale - 0.5 : 0.0;
    case CT_ALIGN: return lr > 1.0 ? o * (double)(in - 1) / (lr - 1.0) : 0.0;
    case CT_ASYM: return o / scale;
    case CT_TF_NN: return (o + 0.5) / scale;
    default: return (o + 0.5) / scale - 0.5;
    }
}

static int64_t clamp_i64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

typedef struct rs_params {
    uint32_t rank;
    int64_t out[LOOM_MAX_RANK], istride[LOOM_MAX_RANK];
    int active[LOOM_MAX_RANK];  /* outer axis that interpolates (2 taps) */
    int64_t *i0[LOOM_MAX_RANK], *i1[LOOM_MAX_RANK]; /* element offsets */
    float *w1[LOOM_MAX_RANK];
    void *block;
    int64_t rows, row_len;
} rs_params;

static void rs_free(void *params)
{
    rs_params *p = params;
    if (p)
        free(p->block);
    free(p);
}

typedef struct rs_job {
    const rs_params *p;
    const float *x;
    float *y;
} rs_job;

static void rs_task(void *arg, size_t r0, size_t r1)
{
    const rs_job *j = arg;
    const rs_params *p = j->p;
    const uint32_t last = p->rank - 1;
    const int64_t n = p->row_len;
    const int64_t *a0 = p->i0[last], *a1 = p->i1[last];
    const float *wl = p->w1[last];
    int64_t idx[LOOM_MAX_RANK] = {0};
    size_t rem = r0;
    for (uint32_t d = last; d-- > 0;) {
        idx[d] = (int64_t)(rem % (size_t)p->out[d]);
        rem /= (size_t)p->out[d];
    }
    int64_t toff[128];
    float tw[128];
    for (size_t r = r0; r < r1; r++) {
        /* taps of the outer axes: offsets and weights */
        int nt = 1;
        toff[0] = 0;
        tw[0] = 1.0f;
        for (uint32_t d = 0; d < last; d++) {
            const int64_t o = idx[d];
            if (!p->active[d]) {
                for (int t = 0; t < nt; t++)
                    toff[t] += p->i0[d][o];
                continue;
            }
            const float w = p->w1[d][o];
            for (int t = 0; t < nt; t++) {
                toff[nt + t] = toff[t] + p->i1[d][o];
                tw[nt + t] = tw[t] * w;
                toff[t] += p->i0[d][o];
                tw[t] *= 1.0f - w;
            }
            nt *= 2;
        }
        float *y = j->y + r * (size_t)n;
        for (int64_t i = 0; i < n; i++)
            y[i] = 0.0f;
        for (int t = 0; t < nt; t++) {
            const float *xs = j->x + toff[t];
            const float wt = tw[t];
            for (int64_t i = 0; i < n; i++)
                y[i] += wt * ((1.0f - wl[i]) * xs[a0[i]] + wl[i] * xs[a1[i]]);
        }
        for (uint32_t d = last; d-- > 0;) {
            if (++idx[d] < p->out[d])
                break;
            idx[d] = 0;
        }
    }
}

static loom_status rs_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const rs_params *p = k->params;
    if (p->rows == 0 || p->row_len == 0)
        return LOOM_OK;
    rs_job j = {p, args->inputs[0], args->outputs[0]};
    cpu_parallel_for(pool, (size_t)p->rows, cpu_grain(p->row_len * 4), rs_task, &j);
    return LOOM_OK;
}

static int rs_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_attr *sc = loom_node_attr(node, "scales");
    const loom_tensor_desc *x = &node->inputs[0];
    if (!sc || sc->kind != LOOM_ATTR_FLOATS || sc->count != x->rank)
        return cpu_reason(reason, len, "Resize: canonical scales missing");
    const char *mode = cpu_str_attr(node, "mode", "nearest");
    if (strcmp(mode, "linear") == 0) {
        if (x->dtype != F32)
            return cpu_no_dtype(node, x->dtype, "float32 for linear", reason, len);
        int active = 0;
        for (uint32_t d = 0; d + 1 < x->rank; d++)
            active += x->dims[d] != node->outputs[0].dims[d] || sc->floats[d] != 1.0f;
        if (active > 7)
            return cpu_reason(reason, len, "Resize: linear over more than 8 axes");
        return 1;
    }
    if (strcmp(mode, "nearest") != 0)
        return cpu_reason(reason, len, "Resize: mode '%s' has no CPU kernel", mode);
    return cpu_map_supports(node, reason, len);
}

static loom_status rs_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    const float *scales = loom_node_attr(node, "scales")->floats;
    const int ctm = rs_ctm(cpu_str_attr(node, "coordinate_transformation_mode", "half_pixel"));
    const char *nm = cpu_str_attr(node, "nearest_mode", "round_prefer_floor");
    const int nmode = strcmp(nm, "round_prefer_ceil") == 0 ? NM_RPC
                      : strcmp(nm, "floor") == 0         ? NM_FLOOR
                      : strcmp(nm, "ceil") == 0          ? NM_CEIL
                                                         : NM_RPF;
    if (strcmp(cpu_str_attr(node, "mode", "nearest"), "nearest") == 0) {
        cpu_map_params *p = cpu_map_alloc(node);
        if (!p)
            return cpu_oom(node, err, err_len);
        for (uint32_t d = 0; d < x->rank; d++) {
            for (int64_t o = 0; o < p->out[d]; o++) {
                double c = rs_coord(ctm, (double)o, scales[d], x->dims[d], y->dims[d]);
                double f = floor(c), frac = c - f;
                int64_t i;
                if (frac == 0.0)
                    i = (int64_t)f;
                else if (nmode == NM_FLOOR)
                    i = (int64_t)f;
                else if (nmode == NM_CEIL)
                    i = (int64_t)f + 1;
                else if (nmode == NM_RPF)
                    i = frac <= 0.5 ? (int64_t)f : (int64_t)f + 1;
                else
                    i = frac < 0.5 ? (int64_t)f : (int64_t)f + 1;
                p->map[d][o] = clamp_i64(i, 0, x->dims[d] - 1) * p->istride[d];
            }
        }
        if (x->rank == 0)
            p->map[0][0] = 0;
        k->params = p;
        k->free_params = cpu_map_free;
        k->run = cpu_map_run;
        return LOOM_OK;
    }
    rs_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    p->rank = x->rank ? x->rank : 1;
    int64_t total = 0, s = 1;
    for (uint32_t d = p->rank; d-- > 0;) {
        p->out[d] = x->rank ? y->dims[d] : 1;
        p->istride[d] = s;
        s *= x->rank ? x->dims[d] : 1;
        total += p->out[d];
    }
    p->block = malloc((size_t)(total ? total : 1) * (2 * sizeof(int64_t) + sizeof(float)));
    if (!p->block) {
        free(p);
        return cpu_oom(node, err, err_len);
    }
    int64_t *ip = p->block;
    float *wp = (float *)(ip + 2 * total);
    for (uint32_t d = 0; d < p->rank; d++) {
        p->i0[d] = ip;
        p->i1[d] = ip + p->out[d];
        p->w1[d] = wp;
        ip += 2 * p->out[d];
        wp += p->out[d];
        const int64_t in = x->rank ? x->dims[d] : 1;
        const int identity = in == p->out[d] && (x->rank == 0 || scales[d] == 1.0f);
        p->active[d] = !identity;
        for (int64_t o = 0; o < p->out[d]; o++) {
            if (identity) {
                p->i0[d][o] = p->i1[d][o] = o * p->istride[d];
                p->w1[d][o] = 0.0f;
                continue;
            }
            double c = rs_coord(ctm, (double)o, scales[d], in, p->out[d]);
            double f = floor(c);
            int64_t a = (int64_t)f;
            p->i0[d][o] = clamp_i64(a, 0, in - 1) * p->istride[d];
            p->i1[d][o] = clamp_i64(a + 1, 0, in - 1) * p->istride[d];
            p->w1[d][o] = (float)(c - f);
        }
    }
    p->row_len = p->out[p->rank - 1];
    p->rows = cpu_prod(p->out, 0, p->rank - 1);
    k->params = p;
    k->free_params = rs_free;
    k->run = rs_run;
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_resize(cpu_op_entry *table)
{
    table[LOOM_OP_RESIZE] = (cpu_op_entry){rs_supports, rs_prepare};
}
