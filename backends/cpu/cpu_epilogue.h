/*
 * The epilogue of the CPU backend's fused Conv, MatMul and Gemm (graph/ops_fused.c defines the
 * nodes): Y = act(Y + bias + Z) over a stretch of output, applied by the kernel to the block it
 * has just written, while that block is still in cache. The activations use the same formulas as
 * the standalone kernels (kernels_elementwise.c, kernels_compare_logic_round.c), so a fused plan
 * computes what the unfused one computes.
 */
#ifndef LOOM_CPU_EPILOGUE_H
#define LOOM_CPU_EPILOGUE_H

#include <loom/backend.h>

#include <stddef.h>

typedef enum cpu_act_kind {
    CPU_ACT_NONE = 0,
    CPU_ACT_RELU,
    CPU_ACT_LEAKY_RELU,
    CPU_ACT_CLIP,
    CPU_ACT_HARD_SIGMOID,
    CPU_ACT_HARD_SWISH,
    CPU_ACT_SIGMOID,
    CPU_ACT_SILU,
    CPU_ACT_GELU,
    CPU_ACT_GELU_TANH,
} cpu_act_kind;

/* The activation of a fused node: kind and its two parameters (activation_alpha/_beta). */
typedef struct cpu_epilogue {
    cpu_act_kind act;
    float alpha, beta;
} cpu_epilogue;

/* Reads NODE's activation attributes into E (CPU_ACT_NONE when it has none). Returns 1, or 0
 * with REASON when the activation is one this backend does not know. */
int cpu_epilogue_parse(const loom_node_desc *node, cpu_epilogue *e, char *reason, size_t len);

/* Y[i] = act(Y[i] + bias + bvec[i] + Z[i]) for i in [0, N): BVEC (a per-column bias) and Z (the
 * residual) may be NULL. */
void cpu_epilogue_apply(const cpu_epilogue *e, float *y, size_t n, float bias, const float *bvec,
                        const float *z);

/* Whether applying E to values that already include their bias, with no residual, changes
 * nothing (no activation). */
static inline int cpu_epilogue_is_identity(const cpu_epilogue *e)
{
    return e->act == CPU_ACT_NONE;
}

#endif /* LOOM_CPU_EPILOGUE_H */
