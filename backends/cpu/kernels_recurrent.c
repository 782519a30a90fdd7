/*
 * CPU kernels of the recurrent operators: LSTM, GRU and RNN, with ONNX opset-18 semantics
 * (canonical attributes: graph/ops_recurrent.c). OpenBLAS runs single-threaded inside the pool's
 * threads.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define F32 LOOM_DTYPE_F32
#define I32 LOOM_DTYPE_I32

/* ===========================================================================================
 * LSTM, GRU and RNN: per direction, one GEMM of every time step's input projection, then per step
 * one GEMM of the recurrence and the gates. Directions run in parallel.
 * =========================================================================================== */

typedef struct rnn_params {
    int lstm, plain; /* LSTM; RNN (one gate: H_t = tanh(X W^T + H R^T + Wb + Rb)) */
    int64_t seq, batch, in, h, nd, gates;
    int layout, reverse, input_forget, lbr;
    float clip;
    int has_b, has_len, has_h0, has_c0, has_p;
    size_t per_dir; /* floats of scratch per direction */
} rnn_params;

typedef struct rnn_job {
    const rnn_params *p;
    const loom_exec_args *args;
    float *scratch;
    const int32_t *lens;
} rnn_job;

static inline float sigm(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

static inline float clipf(float v, float c)
{
    return v > c ? c : v < -c ? -c : v;
}

static void rnn_dir(void *arg, size_t d0, size_t d1)
{
    const rnn_job *j = arg;
    const rnn_params *p = j->p;
    const int64_t T_ = p->seq, B = p->batch, IN = p->in, H = p->h, G = p->gates, GH = G * H;
    const float *x = j->args->inputs[0];
    const float *w_all = j->args->inputs[1], *r_all = j->args->inputs[2];
    const float *b_all = p->has_b ? j->args->inputs[3] : NULL;
    const float *h0 = p->has_h0 ? j->args->inputs[5] : NULL;
    const float *c0 = p->lstm && p->has_c0 ? j->args->inputs[6] : NULL;
    const float *p_all = p->lstm && p->has_p ? j->args->inputs[7] : NULL;
    float *y = j->args->outputs[0], *yh = j->args->outputs[1];
    float *yc = p->lstm ? j->args->outputs[2] : NULL;
    for (size_t dd = d0; dd < d1; dd++) {
        const int64_t d = (int64_t)dd;
        const int rev = p->nd == 2 ? d == 1 : p->reverse;
        const float *W = w_all + d * GH * IN, *R = r_all + d * GH * H;
        const float *Wb = b_all ? b_all + d * 2 * GH : NULL, *Rb = Wb ? Wb + GH : NULL;
        const float *P = p_all ? p_all + d * 3 * H : NULL;
        float *xw = j->scratch + dd * p->per_dir;
        float *hr = xw + T_ * B * GH;
        float *hs = hr + B * GH, *cs = hs + B * H, *rh = cs + B * H;
        /* input projection of every (t, b): X rows are [t*B + b] (layout 0) or [b*T + t] */
        cpu_sgemm(0, 1, T_ * B, GH, IN, x, IN, W, IN, 0.0f, xw, GH);
        if (Wb) {
            for (int64_t r = 0; r < T_ * B; r++) {
                float *row = xw + r * GH;
                for (int64_t g = 0; g < GH; g++) {
                    /* GRU's recurrent h bias goes inside r (*) (...) when linear_before_reset */
                    const int keep_rb = !p->lstm && p->lbr && g >= 2 * H;
                    row[g] += Wb[g] + (keep_rb ? 0.0f : Rb[g]);
                }
            }
        }
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < H; i++) {
                const int64_t at = p->layout ? (b * p->nd + d) * H + i : (d * B + b) * H + i;
                hs[b * H + i] = h0 ? h0[at] : 0.0f;
                cs[b * H + i] = c0 ? c0[at] : 0.0f;
            }
        for (int64_t s = 0; s < T_; s++) {
            /* recurrence: HR = H_prev R^T (GRU without lbr: only the z and r gates here) */
            const int64_t rg = !p->lstm && !p->plain && !p->lbr ? 2 * H : GH;
            cpu_sgemm(0, 1, B, rg, H, hs, H, R, H, 0.0f, hr, GH);
            for (int64_t b = 0; b < B; b++) {
                const int64_t len = j->lens ? j->lens[b] : T_;
                if (s >= len)
                    continue;
                const int64_t t = rev ? len - 1 - s : s;
                const int64_t row = p->layout ? b * T_ + t : t * B + b;
                const float *xr = xw + row * GH;
                float *g = hr + b * GH;
                /* GRU's h gate adds its input part later, inside or outside r (*) (...) */
                const int64_t add = p->lstm || p->plain ? GH : 2 * H;
                for (int64_t q = 0; q < add; q++)
                    g[q] += xr[q];
                if (!p->lstm && !p->plain && !p->lbr)
                    for (int64_t i = 0; i < H; i++)
                        rh[b * H + i] = sigm(clipf(g[H + i], p->clip)) * hs[b * H + i];
            }
            if (!p->lstm && !p->plain && !p->lbr) /* (r (*) H_prev) Rh^T */
                cpu_sgemm(0, 1, B, H, H, rh, H, R + 2 * H * H, H, 0.0f, hr + 2 * H, GH);
            for (int64_t b = 0; b < B; b++) {
                const int64_t len = j->lens ? j->lens[b] : T_;
                if (s >= len)
                    continue;
                const int64_t t = rev ? len - 1 - s : s;
                const int64_t row = p->layout ? b * T_ + t : t * B + b;
                const float *xr = xw + row * GH;
                float *g = hr + b * GH, *hb = hs + b * H, *cb = cs + b * H;
                if (p->plain) {
                    for (int64_t i = 0; i < H; i++)
                        hb[i] = tanhf(clipf(g[i], p->clip));
                } else if (p->lstm) {
                    /* gates i, o, f, c; peepholes P = [Pi, Po, Pf] */
                    for (int64_t i = 0; i < H; i++) {
                        const float c_prev = cb[i];
                        float gi = g[i], go = g[H + i], gf = g[2 * H + i], gc = g[3 * H + i];
                        if (P) {
                            gi += P[i] * c_prev;
                            gf += P[2 * H + i] * c_prev;
                        }
                        const float it = sigm(clipf(gi, p->clip));
                        const float ft = p->input_forget ? 1.0f - it : sigm(clipf(gf, p->clip));
                        const float c = ft * c_prev + it * tanhf(clipf(gc, p->clip));
                        if (P)
                            go += P[H + i] * c;
                        const float o = sigm(clipf(go, p->clip));
                        cb[i] = c;
                        hb[i] = o * tanhf(c);
                    }
                } else {
                    for (int64_t i = 0; i < H; i++) {
                        const float z = sigm(clipf(g[i], p->clip));
                        float hh;
                        if (p->lbr) {
                            const float r = sigm(clipf(g[H + i], p->clip));
                            const float rec = g[2 * H + i] + (Rb ? Rb[2 * H + i] : 0.0f);
                            hh = tanhf(clipf(xr[2 * H + i] + r * rec, p->clip));
                        } else {
                            hh = tanhf(clipf(xr[2 * H + i] + g[2 * H + i], p->clip));
                        }
                        hb[i] = (1.0f - z) * hh + z * hb[i];
                    }
                }
                if (y) {
                    float *yo = y + (p->layout ? ((b * T_ + t) * p->nd + d) * H
                                               : ((t * p->nd + d) * B + b) * H);
                    memcpy(yo, hb, (size_t)H * sizeof *yo);
                }
            }
        }
        for (int64_t b = 0; b < B; b++) {
            const int64_t at = p->layout ? (b * p->nd + d) * H : (d * B + b) * H;
            if (yh)
                memcpy(yh + at, hs + b * H, (size_t)H * sizeof *yh);
            if (yc)
                memcpy(yc + at, cs + b * H, (size_t)H * sizeof *yc);
        }
    }
}

static loom_status rnn_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                           char *err, size_t err_len)
{
    const rnn_params *p = k->params;
    const int32_t *lens = p->has_len ? args->inputs[4] : NULL;
    for (int64_t b = 0; lens && b < p->batch; b++)
        if (lens[b] < 0 || lens[b] > p->seq)
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "%s: sequence_lens[%lld] = %d is out of range [0, %lld]",
                            p->lstm ? "LSTM" : p->plain ? "RNN" : "GRU", (long long)b, (int)lens[b],
                            (long long)p->seq);
    /* The outputs the kernel writes: 1 to 3 of them; absent ones are skipped. */
    void *outs[3] = {NULL, NULL, NULL};
    for (uint32_t o = 0; o < k->n_out && o < 3; o++)
        outs[o] = args->outputs[o];
    if (outs[0])
        memset(outs[0], 0, (size_t)loom_tensor_desc_numel(&k->out[0]) * sizeof(float));
    if (p->batch == 0)
        return LOOM_OK;
    loom_exec_args a = *args;
    a.outputs = outs;
    rnn_job j = {p, &a, args->scratch, lens};
    cpu_parallel_for(pool, (size_t)p->nd, 1, rnn_dir, &j);
    return LOOM_OK;
}

static int rnn_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (i != 4 && cpu_present(node, i) && node->inputs[i].dtype != F32)
            return cpu_no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
    if (cpu_present(node, 4) && node->inputs[4].dtype != I32)
        return cpu_reason(reason, len, "%s: sequence_lens must be int32", node->op_name);
    const loom_tensor_desc *x = &node->inputs[0];
    int64_t h = loom_node_attr_int(node, "hidden_size", 0);
    int64_t g = node->op == LOOM_OP_LSTM ? 4 : node->op == LOOM_OP_RNN ? 1 : 3;
    if (x->rank != 3 || h < 1 || !cpu_fits_int(x->dims[0] * x->dims[1]) || !cpu_fits_int(g * h) ||
        !cpu_fits_int(x->dims[2]))
        return cpu_reason(reason, len, "%s: shapes too large or malformed", node->op_name);
    return 1;
}

static loom_status rnn_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    rnn_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    p->lstm = node->op == LOOM_OP_LSTM;
    p->plain = node->op == LOOM_OP_RNN;
    p->layout = loom_node_attr_int(node, "layout", 0) != 0;
    p->seq = p->layout ? x->dims[1] : x->dims[0];
    p->batch = p->layout ? x->dims[0] : x->dims[1];
    p->in = x->dims[2];
    p->h = loom_node_attr_int(node, "hidden_size", 1);
    p->gates = p->lstm ? 4 : p->plain ? 1 : 3;
    const char *dir = cpu_str_attr(node, "direction", "forward");
    p->nd = strcmp(dir, "bidirectional") == 0 ? 2 : 1;
    p->reverse = strcmp(dir, "reverse") == 0;
    p->input_forget = loom_node_attr_int(node, "input_forget", 0) != 0;
    p->lbr = loom_node_attr_int(node, "linear_before_reset", 0) != 0;
    p->clip = loom_node_attr_float(node, "clip", INFINITY);
    p->has_b = cpu_present(node, 3);
    p->has_len = cpu_present(node, 4);
    p->has_h0 = cpu_present(node, 5);
    p->has_c0 = cpu_present(node, 6);
    p->has_p = cpu_present(node, 7);
    const int64_t gh = p->gates * p->h;
    p->per_dir = (size_t)(p->seq * p->batch * gh + p->batch * gh + 3 * p->batch * p->h);
    p->per_dir = (p->per_dir + 15) / 16 * 16;
    k->params = p;
    k->run = rnn_run;
    k->scratch_bytes = (size_t)p->nd * p->per_dir * sizeof(float);
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_recurrent(cpu_op_entry *table)
{
    table[LOOM_OP_LSTM] = (cpu_op_entry){rnn_supports, rnn_prepare};
    table[LOOM_OP_GRU] = (cpu_op_entry){rnn_supports, rnn_prepare};
    table[LOOM_OP_RNN] = (cpu_op_entry){rnn_supports, rnn_prepare};
}
