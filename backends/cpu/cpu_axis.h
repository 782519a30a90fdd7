/*
 * Rows along one axis, shared by the CPU kernels that work on one (outer, inner) column of X
 * viewed as [outer, len, inner] at a time: InstanceNormalization (kernels_normalization.c),
 * LogSoftmax (kernels_activations.c), ArgMax/ArgMin (kernels_reductions.c) and TopK
 * (kernels_indexing.c).
 */
#ifndef LOOM_CPU_AXIS_H
#define LOOM_CPU_AXIS_H

#include <loom/backend.h>

#include <stdint.h>

typedef struct cpu_axis_params {
    int64_t outer, len, inner;
    loom_dtype dt;
    /* InstanceNorm */
    int64_t c;
    float eps;
    /* Arg */
    int is_max, last;
    /* TopK */
    int64_t k, chunks;
    int largest;
} cpu_axis_params;

typedef struct cpu_axis_job {
    const cpu_axis_params *p;
    const void *x, *scale, *bias;
    void *y, *y2;
    int64_t *heap;
} cpu_axis_job;

/* A zeroed cpu_axis_params for X split at AXIS (0 <= AXIS < rank), with outer, len, inner and
 * dt set; freed with free(). NULL when out of memory. */
cpu_axis_params *cpu_axis_make(const loom_tensor_desc *x, int64_t axis);

/* NaN tests for the typed loops: a float's, and one that is never true for integers. */
#define CPU_IS_NAN_F(v) ((v) != (v))
#define CPU_NEVER_NAN(v) ((void)(v), 0)

#endif /* LOOM_CPU_AXIS_H */
