/*
 * Broadcast plans shared by the CPU kernel families: N operands broadcasting (ONNX,
 * right-aligned) to an output, coalesced at prepare time into the fewest dims, with byte strides
 * (0 where an operand repeats), so that run() walks contiguous innermost runs.
 */
#ifndef LOOM_CPU_BCAST_H
#define LOOM_CPU_BCAST_H

#include <loom/backend.h>

#define CPU_BCAST_MAX_OPS 3

typedef struct cpu_bcast_plan {
    uint32_t rank;  /* >= 1; dims[rank - 1] is the innermost run */
    uint32_t n_ops;
    int64_t dims[LOOM_MAX_RANK];
    int64_t strides[CPU_BCAST_MAX_OPS][LOOM_MAX_RANK]; /* bytes; 0 where the operand repeats */
    unsigned inner_mask; /* bit k: operand k advances along the innermost run */
} cpu_bcast_plan;

/* Build the plan of N (<= CPU_BCAST_MAX_OPS) operands OPS, each of which must broadcast to OUT
 * (the caller checked it), for an output shaped OUT. Never fails. */
void cpu_bcast_build(cpu_bcast_plan *p, const loom_tensor_desc *out, uint32_t n,
                     const loom_tensor_desc *const *ops);

#endif /* LOOM_CPU_BCAST_H */
