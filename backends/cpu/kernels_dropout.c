/*
 * CPU kernel of Dropout (ONNX opset 13 semantics; canonical attributes: graph/ops_elementwise.c).
 *
 * Outside training (training_mode absent or false at run time), or with ratio 0, Y is a copy of X
 * and the mask all true. In training, element i is kept when u_i >= ratio, u_i uniform in [0, 1),
 * and then Y = X / (1 - ratio); dropped elements are 0 and false in the mask.
 *
 * The uniforms come from a counter-based generator: u_i is a 64-bit mix (the SplitMix64 output
 * function) of a per-run key and i, its top 53 bits as a fraction. Every element's draw depends
 * on the key and its index alone, so the result does not depend on how the work is split over
 * threads. With the 'seed' attribute the key is derived from the seed and every run draws the same
 * mask; without it each run takes a fresh key (a per-kernel base from the clock, advanced by an
 * atomic counter, so concurrent runs of one plan differ too). The stream is Loom's own: a seed
 * does not reproduce another framework's masks.
 */
#include "cpu_kernels.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DROPOUT_GRAIN 16384

typedef struct dropout_params {
    int64_t numel;
    size_t esize;
    loom_dtype dt, ratio_dt;
    int has_ratio, has_training, has_mask, has_seed;
    uint64_t seed_key; /* the key of every run, with a seed */
    uint64_t base;     /* without one: the first run's key */
    atomic_uint_fast64_t runs;
} dropout_params;

/* The SplitMix64 output function: a bijective 64-bit mix. */
static inline uint64_t dropout_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Whether element I is kept under KEY at drop probability RATIO. */
static inline int dropout_keep(uint64_t key, int64_t i, double ratio)
{
    const uint64_t h = dropout_mix(key + (uint64_t)i * 0x9e3779b97f4a7c15ull);
    return (double)(h >> 11) * 0x1p-53 >= ratio;
}

typedef struct dropout_job {
    const dropout_params *p;
    const void *x;
    void *y;
    uint8_t *mask;
    uint64_t key;
    double ratio;
    float scale;
} dropout_job;

static void dropout_task(void *arg, size_t i0, size_t i1)
{
    const dropout_job *j = arg;
    const dropout_params *p = j->p;
    for (size_t i = i0; i < i1; i++) {
        const int keep = dropout_keep(j->key, (int64_t)i, j->ratio);
        if (j->mask)
            j->mask[i] = (uint8_t)keep;
        switch (p->dt) {
        case LOOM_DTYPE_F32:
            ((float *)j->y)[i] = keep ? ((const float *)j->x)[i] * j->scale : 0.0f;
            break;
        case LOOM_DTYPE_F16:
            ((uint16_t *)j->y)[i] =
                cpu_f32_to_f16(keep ? cpu_f16_to_f32(((const uint16_t *)j->x)[i]) * j->scale
                                    : 0.0f);
            break;
        default: /* bf16 */
            ((uint16_t *)j->y)[i] =
                cpu_f32_to_bf16(keep ? cpu_bf16_to_f32(((const uint16_t *)j->x)[i]) * j->scale
                                     : 0.0f);
            break;
        }
    }
}

/* The scalar ratio input of dtype T at P, widened. */
static double dropout_ratio(loom_dtype t, const void *p)
{
    if (t == LOOM_DTYPE_F32) {
        float f;
        memcpy(&f, p, sizeof f);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return t == LOOM_DTYPE_F16 ? cpu_f16_to_f32(h) : cpu_bf16_to_f32(h);
}

static loom_status dropout_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                               char *err, size_t err_len)
{
    dropout_params *p = k->params;
    uint8_t *mask = p->has_mask ? args->outputs[1] : NULL; /* may be NULL: unread */
    const int training = p->has_training && *(const uint8_t *)args->inputs[2] != 0;
    /* ONNX's default ratio, read only in training */
    const double ratio =
        training && p->has_ratio ? dropout_ratio(p->ratio_dt, args->inputs[1]) : 0.5;
    if (training && !(ratio >= 0.0 && ratio < 1.0))
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "Dropout: ratio %g is outside [0, 1)", ratio);
    if (p->numel == 0)
        return LOOM_OK;
    if (!training || ratio == 0.0) {
        if (args->outputs[0] != args->inputs[0])
            memcpy(args->outputs[0], args->inputs[0], (size_t)p->numel * p->esize);
        if (mask)
            memset(mask, 1, (size_t)p->numel);
        return LOOM_OK;
    }
    uint64_t key = p->seed_key;
    if (!p->has_seed)
        key = dropout_mix(p->base + atomic_fetch_add_explicit(&p->runs, 1, memory_order_relaxed));
    dropout_job j = {p,   args->inputs[0], args->outputs[0], mask,
                     key, ratio,           (float)(1.0 / (1.0 - ratio))};
    cpu_parallel_for(pool, (size_t)p->numel, DROPOUT_GRAIN, dropout_task, &j);
    return LOOM_OK;
}

static int dropout_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs < 1 || node->n_outputs < 1 || !cpu_present(node, 0))
        return cpu_reason(reason, len, "Dropout: expects an input and an output");
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    if (x->dtype != LOOM_DTYPE_F32 && x->dtype != LOOM_DTYPE_F16 && x->dtype != LOOM_DTYPE_BF16)
        return cpu_no_dtype(node, x->dtype, "float32, float16, bfloat16", reason, len);
    if (x->dtype != y->dtype || !cpu_same_shape(x, y))
        return cpu_reason(reason, len, "Dropout: the output must be like the input");
    if (node->n_outputs > 1 &&
        (node->outputs[1].dtype != LOOM_DTYPE_BOOL || !cpu_same_shape(x, &node->outputs[1])))
        return cpu_reason(reason, len, "Dropout: the mask must be bool of the input's shape");
    if (cpu_present(node, 1)) {
        const loom_tensor_desc *r = &node->inputs[1];
        if ((r->dtype != LOOM_DTYPE_F32 && r->dtype != LOOM_DTYPE_F16 &&
             r->dtype != LOOM_DTYPE_BF16) ||
            loom_tensor_desc_numel(r) != 1)
            return cpu_reason(reason, len, "Dropout: ratio must be a float scalar");
    }
    if (cpu_present(node, 2) && (node->inputs[2].dtype != LOOM_DTYPE_BOOL ||
                                 loom_tensor_desc_numel(&node->inputs[2]) != 1))
        return cpu_reason(reason, len, "Dropout: training_mode must be a bool scalar");
    return 1;
}

static loom_status dropout_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                   size_t err_len)
{
    (void)err, (void)err_len;
    dropout_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    p->numel = loom_tensor_desc_numel(&node->outputs[0]);
    p->dt = node->outputs[0].dtype;
    p->esize = loom_dtype_size(p->dt);
    p->has_ratio = cpu_present(node, 1);
    p->ratio_dt = p->has_ratio ? node->inputs[1].dtype : LOOM_DTYPE_F32;
    p->has_training = cpu_present(node, 2);
    p->has_mask = node->n_outputs > 1;
    const loom_attr *seed = loom_node_attr(node, "seed");
    p->has_seed = seed && seed->kind == LOOM_ATTR_INT;
    if (p->has_seed)
        p->seed_key = dropout_mix((uint64_t)seed->i ^ 0x6a09e667f3bcc909ull);
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    p->base = dropout_mix((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
              (uint64_t)(uintptr_t)p;
    atomic_init(&p->runs, 0);
    k->params = p;
    k->run = dropout_run;
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_dropout(cpu_op_entry *table)
{
    table[LOOM_OP_DROPOUT] = (cpu_op_entry){dropout_supports, dropout_prepare};
}
