/*
 * Index arithmetic of the CUDA backend's strided kernels (broadcasting binary ops, Transpose,
 * Expand, Gemm's C, the batch loop of MatMul, ReduceMean over arbitrary axes), in plain C that
 * compiles both as host code and as CUDA device code. The kernels and the host-side self-test
 * (tests/test_cuda_index.c, which runs on every machine, GPU or not) use the very same
 * functions, so what cannot be executed on a GPU here is still checked against naive loops.
 * Only <stdint.h>: the header must compile under nvcc and under a plain C compiler alike.
 */
#ifndef LOOM_CUDA_INDEX_H
#define LOOM_CUDA_INDEX_H

#include <stdint.h>

#ifdef __CUDACC__
/* Not static under nvcc: the host half of a .cu file would warn about every unused one. */
#define CUDA_HD inline __host__ __device__
#else
#define CUDA_HD static inline
#endif

/* Largest rank (loom/backend.h's LOOM_MAX_RANK) and operand count of one walk. */
#define CUDA_MAX_RANK 8
#define CUDA_MAX_OPERANDS 3

/* A walk over the elements of a dense, C-order output of shape DIMS (RANK dimensions; rank 0
 * is one element): for the output's linear index i, operand k is read at element offset
 * sum_d coord_d(i) * STRIDES[k][d]. A stride of 0 repeats the operand along that axis
 * (broadcasting); permuted strides make a transpose. Passed by value to the kernels. */
typedef struct cuda_walk {
    int32_t rank;
    int32_t n_operands;
    int64_t dims[CUDA_MAX_RANK];
    int64_t strides[CUDA_MAX_OPERANDS][CUDA_MAX_RANK];
} cuda_walk;

/* Element offsets OFF[k] of every operand for the output's linear index I (0 <= I < numel). */
CUDA_HD void cuda_walk_offsets(const cuda_walk *w, int64_t i, int64_t *off)
{
    for (int k = 0; k < w->n_operands; k++)
        off[k] = 0;
    for (int d = w->rank - 1; d >= 0; d--) {
        int64_t n = w->dims[d];
        int64_t c = i % n;
        i /= n;
        for (int k = 0; k < w->n_operands; k++)
            off[k] += c * w->strides[k][d];
    }
}

/* Number of elements of the walk's output. */
CUDA_HD int64_t cuda_walk_numel(const cuda_walk *w)
{
    int64_t n = 1;
    for (int d = 0; d < w->rank; d++)
        n *= w->dims[d];
    return n;
}

/* Element strides of a dense C-order tensor of shape IN_DIMS (IN_RANK dims) read as if it had
 * shape OUT_DIMS (OUT_RANK dims) under numpy broadcasting (shapes aligned at the right; an axis
 * of extent 1, or one IN lacks, gets stride 0). Writes OUT_RANK strides into STRIDES. Returns 1,
 * or 0 when IN does not broadcast to OUT (an extent that is neither 1 nor the output's, or
 * IN_RANK > OUT_RANK). */
CUDA_HD int cuda_bcast_strides(int32_t in_rank, const int64_t *in_dims, int32_t out_rank,
                               const int64_t *out_dims, int64_t *strides)
{
    if (in_rank > out_rank || out_rank > CUDA_MAX_RANK)
        return 0;
    int64_t s = 1;
    for (int32_t d = out_rank - 1; d >= 0; d--) {
        int32_t e = d - (out_rank - in_rank); /* IN's axis aligned with output axis d */
        if (e < 0) {
            strides[d] = 0;
            continue;
        }
        if (in_dims[e] == out_dims[d] && in_dims[e] != 1) {
            strides[d] = s;
        } else if (in_dims[e] == 1) {
            strides[d] = 0;
        } else {
            return 0;
        }
        s *= in_dims[e];
    }
    return 1;
}

/* Makes W as short as possible without changing any offset it yields: axes of extent 1 go
 * (their coordinate is always 0), and neighbours d, d+1 merge when every operand steps over
 * axis d exactly as over a whole run of axis d+1 (stride[d] == stride[d+1] * dims[d+1]), which
 * holds for contiguous runs and for broadcast runs (0 == 0 * n) alike. An element-wise op on
 * same-shaped tensors becomes rank 1 with unit strides; a bias Add [rows, n] + [n] rank 2. A
 * walk with an axis of extent 0 is left with that axis (it has no elements anyway). */
CUDA_HD void cuda_walk_collapse(cuda_walk *w)
{
    int32_t r = 0;
    for (int32_t d = 0; d < w->rank; d++) {
        if (w->dims[d] == 1)
            continue;
        int merge = r > 0;
        for (int k = 0; merge && k < w->n_operands; k++)
            if (w->strides[k][r - 1] != w->strides[k][d] * w->dims[d])
                merge = 0;
        if (merge) {
            w->dims[r - 1] *= w->dims[d];
            for (int k = 0; k < w->n_operands; k++)
                w->strides[k][r - 1] = w->strides[k][d];
        } else {
            w->dims[r] = w->dims[d];
            for (int k = 0; k < w->n_operands; k++)
                w->strides[k][r] = w->strides[k][d];
            r++;
        }
    }
    w->rank = r;
}

/* The walk of a Transpose: output shape IN_DIMS permuted by PERM (output axis d is input axis
 * PERM[d]), one operand, the input, read with its dense strides permuted. PERM must be a
 * permutation of 0..RANK-1 (the operator registry checked it). Collapsed. */
CUDA_HD void cuda_transpose_walk(int32_t rank, const int64_t *in_dims, const int64_t *perm,
                                 cuda_walk *w)
{
    int64_t in_strides[CUDA_MAX_RANK];
    int64_t s = 1;
    for (int32_t d = rank - 1; d >= 0; d--) {
        in_strides[d] = s;
        s *= in_dims[d];
    }
    w->rank = rank;
    w->n_operands = 1;
    for (int32_t d = 0; d < rank; d++) {
        w->dims[d] = in_dims[perm[d]];
        w->strides[0][d] = in_strides[perm[d]];
    }
    cuda_walk_collapse(w);
}

/* The two walks of a reduction of a dense tensor of shape DIMS (RANK dims) over the axes with
 * REDUCED[d] != 0: KEPT walks the output (the kept axes in order; reading the input's offset of
 * the reduced group's first element), RED walks one group (the reduced axes, with the input's
 * strides). Input offset of output o, group element r: offsets(KEPT, o) + offsets(RED, r). Both
 * collapsed, one operand each. */
CUDA_HD void cuda_reduce_walks(int32_t rank, const int64_t *dims, const uint8_t *reduced,
                               cuda_walk *kept, cuda_walk *red)
{
    int64_t strides[CUDA_MAX_RANK];
    int64_t s = 1;
    for (int32_t d = rank - 1; d >= 0; d--) {
        strides[d] = s;
        s *= dims[d];
    }
    kept->rank = red->rank = 0;
    kept->n_operands = red->n_operands = 1;
    for (int32_t d = 0; d < rank; d++) {
        cuda_walk *w = reduced[d] ? red : kept;
        w->dims[w->rank] = dims[d];
        w->strides[0][w->rank] = strides[d];
        w->rank++;
    }
    cuda_walk_collapse(kept);
    cuda_walk_collapse(red);
}

#endif /* LOOM_CUDA_INDEX_H */
