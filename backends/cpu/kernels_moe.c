/*
 * MoE on the CPU, sparse: each expert's feed-forward runs on the tokens routed to it and on no
 * other; an expert that receives no token costs nothing. graph/ops_moe.c has the semantics
 * (ONNX Runtime's com.microsoft MoE, weights [num_experts, out, in]).
 *
 * One run, in phases, each over the pool:
 *   1. routing, per token: softmax of the router logits, the top k (ties: lower expert first),
 *      weights renormalised when asked; routes of weight 0 are dropped (as ONNX Runtime does);
 *   2. grouping (serial, O(tokens * k)): tokens per expert, their offsets, and each route's row
 *      in the expert-ordered buffers; rows of one expert are in token order;
 *   3. gather: the routed rows of the input, expert by expert (rows x hidden);
 *   4. fc1 (+ fc3), bias and activation: one task per (expert, block of inter columns), one
 *      single-threaded cblas_sgemm of that expert's rows against that block of its weights
 *      (blocks sized per run: about three tasks per thread over the experts that have tokens;
 *      on one thread, one GEMM per expert);
 *   5. fc2 and bias: one task per (expert, block of hidden columns);
 *   6. combine, per token: the weighted sum of its k rows, in routing order (deterministic, no
 *      atomics).
 * Everything temporary lives in the scratch sized at prepare (tokens * k rows at most); run()
 * allocates nothing.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Columns of an fc1/fc2 task are a multiple of this (but the last), and at least this many. */
#define MOE_COL_ALIGN 32

enum { MOE_RELU, MOE_GELU, MOE_SILU, MOE_IDENTITY };

typedef struct moe_params {
    int64_t tokens, hidden, inter, experts, k;
    int act;
    int normalize;
    int has_b1, has_b2, has_w3, has_b3;
    /* scratch offsets, in bytes */
    size_t o_probs, o_rw, o_re, o_rpos, o_count, o_off, o_cur, o_rtok, o_xg, o_h, o_h3, o_y;
} moe_params;

typedef struct moe_run {
    const moe_params *p;
    const float *x, *logits, *w1, *b1, *w2, *b2, *w3, *b3;
    float *y;
    float *probs, *rw, *xg, *h, *h3, *yb;
    int32_t *re, *rpos, *count, *off, *cur, *rtok;
    /* Column blocks per expert of fc1 (over inter) and fc2 (over hidden), and their widths:
     * chosen per run from the threads and the experts that received tokens. */
    int64_t nb1, cw1, nb2, cw2;
} moe_run;

/* Cut EXTENT columns into blocks so that ACTIVE experts give about 3 tasks per thread: one
 * block per expert on one thread (a single GEMM per expert); never narrower than
 * MOE_COL_ALIGN. Sets *NB and *CW. */
static void moe_blocks(int64_t extent, int64_t active, unsigned threads, int64_t *nb, int64_t *cw)
{
    int64_t want = threads <= 1 || active <= 0 ? 1 : (3 * (int64_t)threads + active - 1) / active;
    int64_t max_nb = (extent + MOE_COL_ALIGN - 1) / MOE_COL_ALIGN;
    if (want > max_nb)
        want = max_nb;
    if (want < 1)
        want = 1;
    int64_t w = (extent + want - 1) / want;
    w = (w + MOE_COL_ALIGN - 1) / MOE_COL_ALIGN * MOE_COL_ALIGN;
    if (w < 1)
        w = 1;
    *cw = w;
    *nb = (extent + w - 1) / w;
}

static size_t moe_align(size_t v)
{
    return (v + 63) & ~(size_t)63;
}

static int moe_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (cpu_present(node, i) && node->inputs[i].dtype != LOOM_DTYPE_F32)
            return cpu_no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
    const loom_tensor_desc *x = &node->inputs[0], *w1 = &node->inputs[2];
    if (!cpu_fits_int(x->dims[x->rank - 1]) || !cpu_fits_int(w1->dims[1]))
        return cpu_reason(reason, len, "MoE: hidden or inter size beyond a BLAS dimension");
    return 1;
}

/* ---- 1. routing --------------------------------------------------------------------------- */

static void route_tokens(void *arg, size_t b, size_t e)
{
    const moe_run *r = arg;
    const moe_params *p = r->p;
    const int64_t n_exp = p->experts, k = p->k;
    for (size_t t = b; t < e; t++) {
        const float *l = r->logits + (int64_t)t * n_exp;
        float *pr = r->probs + (int64_t)t * n_exp;
        float mx = cpu_max_f32(l, (size_t)n_exp), sum = 0.0f;
        for (int64_t j = 0; j < n_exp; j++) {
            pr[j] = expf(l[j] - mx);
            sum += pr[j];
        }
        for (int64_t j = 0; j < n_exp; j++)
            pr[j] /= sum;
        /* Top k by repeated selection: k passes over the experts. A chosen expert is marked
         * with -1 (probabilities are >= 0), so it is never chosen twice. */
        float *w = r->rw + (int64_t)t * k;
        int32_t *ex = r->re + (int64_t)t * k;
        float wsum = 0.0f;
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t c = 0; c < n_exp; c++)
                if (pr[c] != -1.0f && (best < 0 || pr[c] > pr[best]))
                    best = c;
            ex[j] = (int32_t)best;
            w[j] = pr[best];
            wsum += w[j];
            pr[best] = -1.0f;
        }
        if (p->normalize && wsum > 0.0f)
            for (int64_t j = 0; j < k; j++)
                w[j] /= wsum;
    }
}

/* ---- 3. gather ---------------------------------------------------------------------------- */

static void gather_rows(void *arg, size_t b, size_t e)
{
    const moe_run *r = arg;
    const int64_t h = r->p->hidden;
    for (size_t row = b; row < e; row++)
        memcpy(r->xg + (int64_t)row * h, r->x + (int64_t)r->rtok[row] * h,
               (size_t)h * sizeof(float));
}

/* ---- 4. fc1 (+ fc3) and the activation ---------------------------------------------------- */

static inline float moe_act(int act, float v)
{
    switch (act) {
    case MOE_RELU:
        return v > 0.0f ? v : 0.0f;
    case MOE_GELU: /* tanh approximation, as ONNX Runtime's MoE */
        return 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
    case MOE_SILU:
        return v / (1.0f + expf(-v));
    default:
        return v;
    }
}

/* The activation over N values in place: one loop per kind, so that each vectorises. */
static void moe_act_row(int act, float *restrict v, int64_t n)
{
    switch (act) {
    case MOE_RELU:
        for (int64_t c = 0; c < n; c++)
            v[c] = v[c] > 0.0f ? v[c] : 0.0f;
        break;
    case MOE_GELU:
    case MOE_SILU:
        for (int64_t c = 0; c < n; c++)
            v[c] = moe_act(act, v[c]);
        break;
    default:
        break;
    }
}

static void fc1_tasks(void *arg, size_t b, size_t e)
{
    const moe_run *r = arg;
    const moe_params *p = r->p;
    const int64_t H = p->hidden, I = p->inter;
    for (size_t task = b; task < e; task++) {
        int64_t ex = (int64_t)task / r->nb1, blk = (int64_t)task % r->nb1;
        int64_t rows = r->count[ex];
        if (rows == 0)
            continue;
        int64_t c0 = blk * r->cw1, cols = I - c0 < r->cw1 ? I - c0 : r->cw1;
        int64_t r0 = r->off[ex];
        float *hb = r->h + r0 * I + c0;
        cpu_sgemm(0, 1, rows, cols, H, r->xg + r0 * H, H, r->w1 + (ex * I + c0) * H, H, 0.0f, hb,
                  I);
        float *h3 = NULL;
        if (p->has_w3) {
            h3 = r->h3 + r0 * I + c0;
            cpu_sgemm(0, 1, rows, cols, H, r->xg + r0 * H, H, r->w3 + (ex * I + c0) * H, H, 0.0f,
                      h3, I);
        }
        const float *b1 = p->has_b1 ? r->b1 + ex * I + c0 : NULL;
        const float *b3 = p->has_b3 ? r->b3 + ex * I + c0 : NULL;
        for (int64_t i = 0; i < rows; i++) {
            float *row = hb + i * I;
            if (b1)
                for (int64_t c = 0; c < cols; c++)
                    row[c] += b1[c];
            moe_act_row(p->act, row, cols);
            if (h3) {
                const float *g = h3 + i * I;
                if (b3)
                    for (int64_t c = 0; c < cols; c++)
                        row[c] *= g[c] + b3[c];
                else
                    for (int64_t c = 0; c < cols; c++)
                        row[c] *= g[c];
            }
        }
    }
}

/* ---- 5. fc2 ------------------------------------------------------------------------------- */

static void fc2_tasks(void *arg, size_t b, size_t e)
{
    const moe_run *r = arg;
    const moe_params *p = r->p;
    const int64_t H = p->hidden, I = p->inter;
    for (size_t task = b; task < e; task++) {
        int64_t ex = (int64_t)task / r->nb2, blk = (int64_t)task % r->nb2;
        int64_t rows = r->count[ex];
        if (rows == 0)
            continue;
        int64_t c0 = blk * r->cw2, cols = H - c0 < r->cw2 ? H - c0 : r->cw2;
        int64_t r0 = r->off[ex];
        float *yb = r->yb + r0 * H + c0;
        cpu_sgemm(0, 1, rows, cols, I, r->h + r0 * I, I, r->w2 + (ex * H + c0) * I, I, 0.0f, yb,
                  H);
        if (p->has_b2) {
            const float *b2 = r->b2 + ex * H + c0;
            for (int64_t i = 0; i < rows; i++)
                for (int64_t c = 0; c < cols; c++)
                    yb[i * H + c] += b2[c];
        }
    }
}

/* ---- 6. combine --------------------------------------------------------------------------- */

static void combine_tokens(void *arg, size_t b, size_t e)
{
    const moe_run *r = arg;
    const int64_t H = r->p->hidden, k = r->p->k;
    for (size_t t = b; t < e; t++) {
        float *y = r->y + (int64_t)t * H;
        memset(y, 0, (size_t)H * sizeof(float));
        for (int64_t j = 0; j < k; j++) {
            int32_t pos = r->rpos[(int64_t)t * k + j];
            if (pos < 0)
                continue;
            const float w = r->rw[(int64_t)t * k + j], *src = r->yb + (int64_t)pos * H;
            for (int64_t c = 0; c < H; c++)
                y[c] += w * src[c];
        }
    }
}

static loom_status moe_run_fn(const cpu_kernel *kern, const loom_exec_args *args, cpu_pool *pool,
                              char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const moe_params *p = kern->params;
    if (p->tokens == 0 || p->hidden == 0)
        return LOOM_OK;
    char *s = args->scratch;
    moe_run r = {
        .p = p,
        .x = args->inputs[0],
        .logits = args->inputs[1],
        .w1 = args->inputs[2],
        .b1 = p->has_b1 ? args->inputs[3] : NULL,
        .w2 = args->inputs[4],
        .b2 = p->has_b2 ? args->inputs[5] : NULL,
        .w3 = p->has_w3 ? args->inputs[6] : NULL,
        .b3 = p->has_b3 ? args->inputs[7] : NULL,
        .y = args->outputs[0],
        .probs = (float *)(s + p->o_probs),
        .rw = (float *)(s + p->o_rw),
        .re = (int32_t *)(s + p->o_re),
        .rpos = (int32_t *)(s + p->o_rpos),
        .count = (int32_t *)(s + p->o_count),
        .off = (int32_t *)(s + p->o_off),
        .cur = (int32_t *)(s + p->o_cur),
        .rtok = (int32_t *)(s + p->o_rtok),
        .xg = (float *)(s + p->o_xg),
        .h = (float *)(s + p->o_h),
        .h3 = p->has_w3 ? (float *)(s + p->o_h3) : NULL,
        .yb = (float *)(s + p->o_y),
    };
    const int64_t T = p->tokens, k = p->k, E = p->experts;
    cpu_parallel_for(pool, (size_t)T, cpu_grain(E * 8 + k * E), route_tokens, &r);

    /* 2. grouping: counts, offsets, then each route's row (token order within an expert). */
    memset(r.count, 0, (size_t)E * sizeof *r.count);
    for (int64_t i = 0; i < T * k; i++)
        if (r.rw[i] > 0.0f)
            r.count[r.re[i]]++;
    int32_t rows = 0;
    for (int64_t e = 0; e < E; e++) {
        r.off[e] = rows;
        r.cur[e] = rows;
        rows += r.count[e];
    }
    r.off[E] = rows;
    for (int64_t i = 0; i < T * k; i++) {
        if (!(r.rw[i] > 0.0f)) {
            r.rpos[i] = -1;
            continue;
        }
        int32_t pos = r.cur[r.re[i]]++;
        r.rpos[i] = pos;
        r.rtok[pos] = (int32_t)(i / k);
    }

    cpu_parallel_for(pool, (size_t)rows, cpu_grain_bytes((size_t)p->hidden * sizeof(float)),
                     gather_rows, &r);
    int64_t active = 0;
    for (int64_t e = 0; e < E; e++)
        active += r.count[e] > 0;
    const unsigned threads = cpu_pool_threads(pool);
    moe_blocks(p->inter, active, threads, &r.nb1, &r.cw1);
    moe_blocks(p->hidden, active, threads, &r.nb2, &r.cw2);
    cpu_parallel_for(pool, (size_t)(E * r.nb1), 1, fc1_tasks, &r);
    cpu_parallel_for(pool, (size_t)(E * r.nb2), 1, fc2_tasks, &r);
    cpu_parallel_for(pool, (size_t)T, cpu_grain(k * p->hidden), combine_tokens, &r);
    return LOOM_OK;
}

static loom_status moe_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    moe_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0], *r = &node->inputs[1], *w1 = &node->inputs[2];
    p->hidden = x->dims[x->rank - 1];
    p->tokens = r->dims[0];
    p->experts = r->dims[1];
    p->inter = w1->dims[1];
    p->k = 1;
    p->act = MOE_RELU;
    for (uint32_t a = 0; a < node->n_attrs; a++) {
        const loom_attr *at = &node->attrs[a];
        if (strcmp(at->name, "k") == 0)
            p->k = at->i;
        else if (strcmp(at->name, "normalize_routing_weights") == 0)
            p->normalize = at->i != 0;
    }
    const char *act = cpu_str_attr(node, "activation_type", "relu");
    p->act = strcmp(act, "gelu") == 0       ? MOE_GELU
             : strcmp(act, "silu") == 0     ? MOE_SILU
             : strcmp(act, "identity") == 0 ? MOE_IDENTITY
                                            : MOE_RELU;
    p->has_b1 = cpu_present(node, 3);
    p->has_b2 = cpu_present(node, 5);
    p->has_w3 = cpu_present(node, 6);
    p->has_b3 = cpu_present(node, 7);
    if (p->tokens > INT32_MAX / (p->k ? p->k : 1)) {
        long long t = (long long)p->tokens, kk = (long long)p->k;
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "MoE: %lld tokens x k = %lld routes "
                        "is more than the kernel indexes", t, kk);
    }
    const size_t T = (size_t)p->tokens, K = (size_t)p->k, E = (size_t)p->experts;
    const size_t R = T * K, H = (size_t)p->hidden, I = (size_t)p->inter;
    if ((double)R * (double)(E + 3 * H + 2 * I + 8) * sizeof(float) > (double)((size_t)1 << 46)) {
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_UNSUPPORTED, "MoE: scratch for %zu routes of "
                        "%zu x %zu is beyond what the kernel allocates", R, H, I);
    }
    size_t at = 0;
#define MOE_AREA(field, bytes)                                                                   \
    do {                                                                                         \
        p->field = at;                                                                           \
        at += moe_align(bytes);                                                                  \
    } while (0)
    MOE_AREA(o_probs, T * E * sizeof(float));
    MOE_AREA(o_rw, R * sizeof(float));
    MOE_AREA(o_re, R * sizeof(int32_t));
    MOE_AREA(o_rpos, R * sizeof(int32_t));
    MOE_AREA(o_count, E * sizeof(int32_t));
    MOE_AREA(o_off, (E + 1) * sizeof(int32_t));
    MOE_AREA(o_cur, E * sizeof(int32_t));
    MOE_AREA(o_rtok, R * sizeof(int32_t));
    MOE_AREA(o_xg, R * H * sizeof(float));
    MOE_AREA(o_h, R * I * sizeof(float));
    MOE_AREA(o_h3, p->has_w3 ? R * I * sizeof(float) : 0);
    MOE_AREA(o_y, R * H * sizeof(float));
#undef MOE_AREA
    k->run = moe_run_fn;
    k->params = p;
    k->scratch_bytes = at;
    return LOOM_OK;
}

void cpu_register_moe(cpu_op_entry *table)
{
    table[LOOM_OP_MOE].supports = moe_supports;
    table[LOOM_OP_MOE].prepare = moe_prepare;
}
