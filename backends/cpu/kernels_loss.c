/*
 * CPU kernels of the losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (ONNX opset
 * 13), float32 scores, int32/int64 targets. X is viewed as [N, C, D] (D the product of the
 * trailing dims), the target as [N, D]. SoftmaxCrossEntropyLoss first takes the log-softmax
 * over C (into its log_prob output, or scratch), then the NLL of that. Sums are in double.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { LOSS_NONE, LOSS_SUM, LOSS_MEAN };

typedef struct loss_params {
    int64_t n, c, d;
    int reduction;
    int has_ignore;
    int64_t ignore;
    int softmax;
    loom_dtype tdt;
} loss_params;

typedef struct lsm_job {
    const loss_params *p;
    const float *x;
    float *y;
} lsm_job;

/* Log-softmax over C for the batch rows [n0, n1): max, then the log of the sum of exp. */
static void lsm_task(void *arg, size_t n0, size_t n1)
{
    const lsm_job *j = arg;
    const int64_t C = j->p->c, D = j->p->d;
    for (size_t n = n0; n < n1; n++) {
        const float *x = j->x + (int64_t)n * C * D;
        float *y = j->y + (int64_t)n * C * D;
        for (int64_t d = 0; d < D; d++) {
            float m = -INFINITY;
            for (int64_t c = 0; c < C; c++)
                m = x[c * D + d] > m ? x[c * D + d] : m;
            double s = 0.0;
            for (int64_t c = 0; c < C; c++)
                s += exp((double)x[c * D + d] - (double)m);
            const double ls = log(s) + (double)m;
            for (int64_t c = 0; c < C; c++)
                y[c * D + d] = (float)((double)x[c * D + d] - ls);
        }
    }
}

static loom_status loss_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                            char *err, size_t err_len)
{
    const loss_params *p = k->params;
    const int64_t C = p->c, D = p->d, N = p->n;
    const float *lp = args->inputs[0];
    if (p->softmax) {
        float *y = k->n_out > 1 ? args->outputs[1] : args->scratch;
        lsm_job j = {p, args->inputs[0], y};
        if (N * C * D > 0)
            cpu_parallel_for(pool, (size_t)N, cpu_grain(C * D * 8), lsm_task, &j);
        lp = y;
    }
    const void *t = args->inputs[1];
    const float *w = cpu_kernel_present(k, 2) ? args->inputs[2] : NULL;
    float *out = args->outputs[0];
    double sum = 0.0, wsum = 0.0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            const int64_t at = n * D + d;
            const int64_t cls = p->tdt == LOOM_DTYPE_I64 ? ((const int64_t *)t)[at]
                                                         : ((const int32_t *)t)[at];
            double l = 0.0, wt = 0.0;
            if (!(p->has_ignore && cls == p->ignore)) {
                if (cls < 0 || cls >= C)
                    return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                                    "%s: target %lld at element %lld is outside [0, %lld)",
                                    p->softmax ? "SoftmaxCrossEntropyLoss"
                                               : "NegativeLogLikelihoodLoss",
                                    (long long)cls, (long long)at, (long long)C);
                wt = w ? (double)w[cls] : 1.0;
                l = -(double)lp[(n * C + cls) * D + d] * wt;
            }
            if (p->reduction == LOSS_NONE)
                out[at] = (float)l;
            sum += l;
            wsum += wt;
        }
    if (p->reduction == LOSS_SUM)
        out[0] = (float)sum;
    else if (p->reduction == LOSS_MEAN)
        out[0] = (float)(sum / wsum); /* no weight left: 0/0, NaN, as numpy */
    return LOOM_OK;
}

static int loss_supports(const loom_node_desc *node, char *reason, size_t len)
{
    const loom_tensor_desc *x = &node->inputs[0];
    if (x->dtype != LOOM_DTYPE_F32)
        return cpu_no_dtype(node, x->dtype, "float32", reason, len);
    if (x->rank < 2 || node->inputs[1].rank + 1 != x->rank)
        return cpu_reason(reason, len, "%s: expects X [N, C, ...] and a target [N, ...]",
                          node->op_name);
    const loom_attr *r = loom_node_attr(node, "reduction");
    if (!r || r->kind != LOOM_ATTR_STRING ||
        (strcmp(r->s, "none") && strcmp(r->s, "sum") && strcmp(r->s, "mean")))
        return cpu_reason(reason, len, "%s: canonical reduction missing", node->op_name);
    if (cpu_present(node, 2) && node->inputs[2].dtype != LOOM_DTYPE_F32)
        return cpu_no_dtype(node, node->inputs[2].dtype, "float32", reason, len);
    return 1;
}

static loom_status loss_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    loss_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->d = cpu_prod(x->dims, 2, x->rank);
    const char *r = cpu_str_attr(node, "reduction", "mean");
    p->reduction = !strcmp(r, "none") ? LOSS_NONE : !strcmp(r, "sum") ? LOSS_SUM : LOSS_MEAN;
    const loom_attr *ig = loom_node_attr(node, "ignore_index");
    p->has_ignore = ig && ig->kind == LOOM_ATTR_INT;
    p->ignore = p->has_ignore ? ig->i : 0;
    p->softmax = node->op == LOOM_OP_SOFTMAX_CROSS_ENTROPY_LOSS;
    p->tdt = node->inputs[1].dtype;
    if (p->softmax && node->n_outputs < 2)
        k->scratch_bytes = (size_t)(p->n * p->c * p->d) * sizeof(float);
    (void)err_len;
    k->params = p;
    k->run = loss_run;
    return LOOM_OK;
}

void cpu_register_loss(cpu_op_entry *table)
{
    table[LOOM_OP_NEGATIVE_LOG_LIKELIHOOD_LOSS] = (cpu_op_entry){loss_supports, loss_prepare};
    table[LOOM_OP_SOFTMAX_CROSS_ENTROPY_LOSS] = (cpu_op_entry){loss_supports, loss_prepare};
}
