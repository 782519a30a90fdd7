/*
 * Gathers through per-axis index maps (cpu_index_map.h): the kernel behind Pad, Tile and nearest
 * Resize. Y[o] = X[sum_d map_d[o_d] * stride_d], or the constant when some map_d[o_d] is -1.
 */
#include "cpu_index_map.h"

#include <stdlib.h>
#include <string.h>

void cpu_map_free(void *params)
{
    cpu_map_params *p = params;
    if (p)
        free(p->maps);
    free(p);
}

typedef struct map_job {
    const cpu_map_params *p;
    const char *x;
    char *y;
    const char *value;
} map_job;

#define MAP_ROW(T)                                                                                 \
    do {                                                                                           \
        const T *xs = (const T *)(j->x) + base;                                                    \
        T *yd = (T *)y;                                                                            \
        T v;                                                                                       \
        memcpy(&v, j->value, sizeof v);                                                            \
        for (int64_t i = 0; i < n; i++)                                                            \
            yd[i] = inner[i] < 0 ? v : xs[inner[i]];                                               \
    } while (0)

static void map_task(void *arg, size_t r0, size_t r1)
{
    const map_job *j = arg;
    const cpu_map_params *p = j->p;
    const uint32_t last = p->rank - 1;
    const int64_t n = p->row_len;
    const int64_t *inner = p->map[last];
    int64_t idx[LOOM_MAX_RANK] = {0};
    /* multi-index of row r0 over the outer axes */
    size_t rem = r0;
    for (uint32_t d = last; d-- > 0;) {
        idx[d] = (int64_t)(rem % (size_t)p->out[d]);
        rem /= (size_t)p->out[d];
    }
    for (size_t r = r0; r < r1; r++) {
        char *y = j->y + r * (size_t)n * p->esize;
        int64_t base = 0;
        int fill = 0;
        for (uint32_t d = 0; d < last; d++) {
            int64_t m = p->map[d][idx[d]];
            if (m < 0)
                fill = 1;
            base += m;
        }
        if (fill) {
            for (int64_t i = 0; i < n; i++)
                cpu_copy_bytes(y + (size_t)i * p->esize, j->value, p->esize);
        } else {
            switch (p->esize) {
            case 1: MAP_ROW(uint8_t); break;
            case 2: MAP_ROW(uint16_t); break;
            case 4: MAP_ROW(uint32_t); break;
            default: MAP_ROW(uint64_t); break;
            }
        }
        for (uint32_t d = last; d-- > 0;) {
            if (++idx[d] < p->out[d])
                break;
            idx[d] = 0;
        }
    }
}

loom_status cpu_map_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                               char *err, size_t err_len)
{
    (void)err, (void)err_len;
    const cpu_map_params *p = k->params;
    if (p->rows == 0 || p->row_len == 0)
        return LOOM_OK;
    map_job j = {p, args->inputs[0], args->outputs[0], p->value};
    if (p->value_input && args->inputs[2])
        j.value = args->inputs[2];
    cpu_parallel_for(pool, (size_t)p->rows, cpu_grain(p->row_len), map_task, &j);
    return LOOM_OK;
}

/* A cpu_map_params for X -> Y of NODE, maps unfilled: one block of sum(out) entries. */
cpu_map_params *cpu_map_alloc(const loom_node_desc *node)
{
    const loom_tensor_desc *x = &node->inputs[0], *y = &node->outputs[0];
    cpu_map_params *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    /* A scalar is a tensor of shape [1]. */
    p->rank = x->rank ? x->rank : 1;
    p->esize = loom_dtype_size(x->dtype);
    int64_t total = 0, s = 1;
    for (uint32_t d = p->rank; d-- > 0;) {
        p->out[d] = x->rank ? y->dims[d] : 1;
        p->istride[d] = s;
        s *= x->rank ? x->dims[d] : 1;
        total += p->out[d];
    }
    p->maps = malloc((size_t)(total ? total : 1) * sizeof *p->maps);
    if (!p->maps) {
        free(p);
        return NULL;
    }
    int64_t at = 0;
    for (uint32_t d = 0; d < p->rank; d++) {
        p->map[d] = p->maps + at;
        at += p->out[d];
    }
    p->row_len = p->out[p->rank - 1];
    p->rows = cpu_prod(p->out, 0, p->rank - 1);
    return p;
}

int cpu_map_supports(const loom_node_desc *node, char *reason, size_t len)
{
    size_t es = loom_dtype_size(node->inputs[0].dtype);
    if (es == 0 || es > 8 || node->outputs[0].dtype != node->inputs[0].dtype)
        return cpu_no_dtype(node, node->inputs[0].dtype, "fixed-size dtypes", reason, len);
    if (node->op == LOOM_OP_PAD) {
        const loom_attr *a = loom_node_attr(node, "pads");
        if (!a || a->kind != LOOM_ATTR_INTS || a->count != 2 * (size_t)node->inputs[0].rank)
            return cpu_reason(reason, len, "Pad: canonical pads missing");
    }
    if (node->op == LOOM_OP_TILE) {
        const loom_attr *a = loom_node_attr(node, "repeats");
        if (!a || a->kind != LOOM_ATTR_INTS || a->count != node->inputs[0].rank)
            return cpu_reason(reason, len, "Tile: canonical repeats missing");
    }
    return 1;
}
