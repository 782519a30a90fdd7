/*
 * FusedMatMul and FusedGemm on the CPU (graph/ops_fused.c): the MatMul or Gemm kernel of
 * kernels_linalg.c, unchanged, then the epilogue (bias for FusedMatMul, residual Z, activation)
 * over the output, one row block per thread, while the blocks the GEMM has just written are
 * still warm. What fusing saves here is the separate Add and activation nodes (their dispatch,
 * and a full read and write of the output each). The base kernel is looked up through
 * cpu_register_linalg into a table on the stack, so this file needs nothing of linalg's but its
 * registration.
 */
#include "cpu_epilogue.h"
#include "cpu_kernels.h"

#include <stdlib.h>
#include <string.h>

typedef struct fg_params {
    cpu_kernel inner;       /* the MatMul/Gemm kernel; its in/out borrowed from the outer one */
    cpu_epilogue ep;
    int has_bias, has_z;    /* FusedMatMul's bias (input 2); the residual (input 3) */
    int64_t rows, cols;     /* output as [rows, cols] */
} fg_params;

/* The base operator's entry and a descriptor of NODE as that operator. */
static cpu_op_entry fg_base(const loom_node_desc *node, loom_node_desc *base)
{
    cpu_op_entry table[CPU_OP_TABLE_SIZE];
    memset(table, 0, sizeof table);
    cpu_register_linalg(table);
    *base = *node;
    if (node->op == LOOM_OP_FUSED_MAT_MUL) {
        base->op = LOOM_OP_MATMUL;
        base->op_name = "MatMul";
        base->n_inputs = 2;
    } else {
        base->op = LOOM_OP_GEMM;
        base->op_name = "Gemm";
        base->n_inputs = node->n_inputs < 3 ? node->n_inputs : 3;
    }
    return table[base->op];
}

static int fg_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs < 2 || node->n_inputs > 4 || node->n_outputs != 1)
        return cpu_reason(reason, len, "%s takes 2 to 4 inputs and 1 output", node->op_name);
    if (node->outputs[0].dtype != LOOM_DTYPE_F32)
        return cpu_no_dtype(node, node->outputs[0].dtype, "float32", reason, len);
    for (uint32_t i = 2; i < node->n_inputs; i++)
        if (cpu_present(node, i) && node->inputs[i].dtype != LOOM_DTYPE_F32)
            return cpu_no_dtype(node, node->inputs[i].dtype, "float32", reason, len);
    cpu_epilogue ep;
    if (!cpu_epilogue_parse(node, &ep, reason, len))
        return 0;
    loom_node_desc base;
    cpu_op_entry e = fg_base(node, &base);
    if (!e.supports)
        return cpu_reason(reason, len, "%s: no base kernel", node->op_name);
    return e.supports(&base, reason, len);
}

typedef struct fg_ctx {
    const fg_params *p;
    float *y;
    const float *bias, *z;
} fg_ctx;

static void fg_epilogue_task(void *arg, size_t r0, size_t r1)
{
    const fg_ctx *c = arg;
    const fg_params *p = c->p;
    for (size_t r = r0; r < r1; r++) {
        const int64_t off = (int64_t)r * p->cols;
        cpu_epilogue_apply(&p->ep, c->y + off, (size_t)p->cols, 0.0f, c->bias,
                           c->z ? c->z + off : NULL);
    }
}

static loom_status fg_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                          char *err, size_t err_len)
{
    const fg_params *p = k->params;
    loom_status st = p->inner.run(&p->inner, args, pool, err, err_len);
    if (st != LOOM_OK || p->rows == 0 || p->cols == 0)
        return st;
    fg_ctx c = {p, args->outputs[0], p->has_bias ? args->inputs[2] : NULL,
                p->has_z ? args->inputs[3] : NULL};
    if (!c.bias && !c.z && p->ep.act == CPU_ACT_NONE)
        return LOOM_OK;
    cpu_parallel_for(pool, (size_t)p->rows, cpu_grain(p->cols), fg_epilogue_task, &c);
    return LOOM_OK;
}

static void fg_free(void *params)
{
    fg_params *p = params;
    if (!p)
        return;
    if (p->inner.free_params)
        p->inner.free_params(p->inner.params);
    else
        free(p->inner.params);
    free(p);
}

static loom_status fg_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                              size_t err_len)
{
    fg_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_oom(node, err, err_len);
    loom_node_desc base;
    cpu_op_entry e = fg_base(node, &base);
    cpu_epilogue_parse(node, &p->ep, NULL, 0);
    p->inner = *k;
    p->inner.op = base.op;
    p->inner.n_in = base.n_inputs;
    p->inner.params = NULL;
    p->inner.free_params = NULL;
    p->inner.scratch_bytes = 0;
    loom_status st = e.prepare(&base, &p->inner, err, err_len);
    if (st != LOOM_OK) {
        fg_free(p);
        return st;
    }
    const loom_tensor_desc *y = &node->outputs[0];
    p->cols = y->rank ? y->dims[y->rank - 1] : 1;
    p->rows = p->cols ? cpu_prod(y->dims, 0, y->rank) / p->cols : 0;
    p->has_bias = node->op == LOOM_OP_FUSED_MAT_MUL && cpu_present(node, 2);
    p->has_z = cpu_present(node, 3);
    k->params = p;
    k->free_params = fg_free;
    k->scratch_bytes = p->inner.scratch_bytes;
    k->run = fg_run;
    return LOOM_OK;
}

void cpu_register_fused_gemm(cpu_op_entry *table)
{
    table[LOOM_OP_FUSED_MAT_MUL] = (cpu_op_entry){fg_supports, fg_prepare};
    table[LOOM_OP_FUSED_GEMM] = (cpu_op_entry){fg_supports, fg_prepare};
}
