/*
 * The CUDA kernels of the CUDA backend, as C-callable launchers (cuda_kernels.cu). Each enqueues
 * its work on STREAM and returns at once with the launch's status (a cudaError_t as int: 0 is
 * success); errors of the work itself surface at the stream's next synchronisation. Every
 * pointer is device memory; element counts of 0 launch nothing. float32 throughout except the
 * data-movement kernels, which move elements of 1, 2, 4 or 8 bytes.
 */
#ifndef LOOM_CUDA_KERNELS_H
#define LOOM_CUDA_KERNELS_H

#include "cuda_index.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element-wise functions of one operand. ALPHA is LeakyRelu's slope. */
typedef enum cuda_unary_op {
    CUDA_UNARY_RELU = 1,
    CUDA_UNARY_LEAKY_RELU,
    CUDA_UNARY_SIGMOID,
    CUDA_UNARY_TANH,
    CUDA_UNARY_ERF,
    CUDA_UNARY_GELU,      /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
    CUDA_UNARY_GELU_TANH, /* approximate="tanh" */
    CUDA_UNARY_SQRT,
    CUDA_UNARY_EXP,
    CUDA_UNARY_LOG,
    CUDA_UNARY_NEG,
    CUDA_UNARY_ABS,
    CUDA_UNARY_RECIPROCAL,
} cuda_unary_op;

/* Element-wise functions of two operands, with numpy broadcasting through a walk. */
typedef enum cuda_binary_op {
    CUDA_BINARY_ADD = 1,
    CUDA_BINARY_SUB,
    CUDA_BINARY_MUL,
    CUDA_BINARY_DIV,
    CUDA_BINARY_POW,
} cuda_binary_op;

/* Reductions. */
typedef enum cuda_reduce_op {
    CUDA_REDUCE_SUM = 1,
    CUDA_REDUCE_MEAN,
    CUDA_REDUCE_MAX,
} cuda_reduce_op;

/* Y[i] = f(X[i]) for N elements. */
int cuda_launch_unary(void *stream, cuda_unary_op op, float alpha, const float *x, float *y,
                      int64_t n);

/* Y[i] = A[off0(i)] op B[off1(i)] for the N = numel(W) elements of Y; W has two operands. */
int cuda_launch_binary(void *stream, cuda_binary_op op, const float *a, const float *b, float *y,
                       const cuda_walk *w);

/* Y[i] = X[off0(i)] for the numel(W) elements of Y, each ELEM_SIZE bytes (1, 2, 4 or 8):
 * Transpose, Expand. */
int cuda_launch_gather(void *stream, size_t elem_size, const void *x, void *y, const cuda_walk *w);

/* Y[i] = SCALE * X[off0(i)] (float32): Gemm's beta * C broadcast to [M, N]. */
int cuda_launch_gather_scaled(void *stream, float scale, const float *x, float *y,
                              const cuda_walk *w);

/* Softmax over each of ROWS contiguous rows of COLS elements. */
int cuda_launch_softmax(void *stream, const float *x, float *y, int64_t rows, int64_t cols);

/* LayerNormalization of each of ROWS contiguous rows of COLS elements:
 * Y = (X - mean) / sqrt(var + EPS) * SCALE + BIAS, SCALE and BIAS (NULL: none) of COLS. */
int cuda_launch_layernorm(void *stream, const float *x, const float *scale, const float *bias,
                          float *y, int64_t rows, int64_t cols, float eps);

/* Reduction of each of ROWS contiguous rows of COLS elements into Y[ROWS]. */
int cuda_launch_reduce_rows(void *stream, cuda_reduce_op op, const float *x, float *y,
                            int64_t rows, int64_t cols);

/* General reduction: Y[o] = reduce over r of X[off(KEPT, o) + off(RED, r)], for the numel(KEPT)
 * outputs and numel(RED) elements per group (see cuda_reduce_walks). */
int cuda_launch_reduce_walk(void *stream, cuda_reduce_op op, const float *x, float *y,
                            const cuda_walk *kept, const cuda_walk *red);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_CUDA_KERNELS_H */
