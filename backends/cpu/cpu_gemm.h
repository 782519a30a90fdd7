/*
 * f32 GEMM cut into blocks over the CPU backend's pool, shared by MatMul and Gemm
 * (kernels_linalg.c) and Conv (kernels_conv.c). OpenBLAS runs single-threaded; a GEMM (or a batch
 * of them) is cut into blocks of rows or columns of C on multiples of CPU_GEMM_ALIGN, one
 * single-threaded cblas call per block on a sub-matrix of the caller's arrays (nothing is copied).
 * kernels_linalg.c's header comment describes the threading.
 */
#ifndef LOOM_CPU_GEMM_H
#define LOOM_CPU_GEMM_H

#include <stddef.h>
#include <stdint.h>

/* Below this many multiply-adds a GEMM (or a batch of them) is not worth a fork. */
#define CPU_GEMM_SMALL_MACS (64.0 * 64.0 * 64.0)
/* Block boundaries of a split GEMM fall on multiples of this many rows or columns. */
#define CPU_GEMM_ALIGN 16

/* One f32 GEMM C = alpha*op(A)*op(B) + beta*C, row-major, as cblas sees it. */
typedef struct cpu_gemm {
    int trans_a, trans_b;
    int64_t m, n, k;
    int64_t lda, ldb, ldc;
    float alpha;
    size_t nb;   /* blocks this GEMM is cut into */
    int split_n; /* blocks are column ranges of C (else row ranges) */
} cpu_gemm;

/* Decide how to cut BATCH GEMMs of shape G over THREADS threads: sets G->nb and G->split_n, and
 * returns the grain (tasks per chunk) to give cpu_parallel_for over batch*nb tasks. */
size_t cpu_gemm_plan(cpu_gemm *g, size_t batch, unsigned threads);

/* Start of block B of NB over EXTENT, on a multiple of CPU_GEMM_ALIGN (except the ends). */
int64_t cpu_gemm_block_start(int64_t extent, size_t nb, size_t b);

/* C = alpha*op(A)*op(B) + beta*C on rows or columns [LO, HI) of C (G->split_n says which), one
 * single-threaded call; vector shapes go to sgemv. */
void cpu_gemm_block(const cpu_gemm *g, const float *a, const float *b, float *c, int64_t lo,
                    int64_t hi, float beta);

/* Whether cpu_gemm_small takes an M x N block of G (cpu_gemm_small.c): 2 to 48 rows, A not
 * transposed, B transposed, N >= 8, K >= 32, on a CPU with AVX2 and FMA (and LOOM_CPU_NO_AVX2
 * unset). */
int cpu_gemm_small_ok(const cpu_gemm *g, int64_t m, int64_t n);

/* C = alpha*A*B^T + beta*C for an M x N block of G (A, B, C already offset to it; C not read
 * when BETA is 0), single-threaded, without packing B. Only when cpu_gemm_small_ok. */
void cpu_gemm_small(const cpu_gemm *g, int64_t m, int64_t n, const float *a, const float *b,
                    float *c, float beta);

#endif /* LOOM_CPU_GEMM_H */
