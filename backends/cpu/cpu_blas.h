/*
 * The CPU backend's float32 GEMM (cpu_blas.c): oneDNN's sgemm where the build has it, else
 * OpenBLAS. Every call runs on the calling thread only.
 */
#ifndef LOOM_CPU_BLAS_H
#define LOOM_CPU_BLAS_H

#include <stdint.h>

/* C[m, n] (ldc) = alpha * op(A) * op(B) + beta * C, row-major (op transposes when TA / TB),
 * single-threaded. M, N, K >= 1; the arrays belong to the caller. Cannot fail: a refusal by
 * oneDNN falls back to OpenBLAS, and under an address-space limit that leaves OpenBLAS no room
 * for its buffer, a plain loop computes it (cpu_blas.c says why). */
void cpu_blas_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                    int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);


/* y = alpha * op(A) x + beta * y, row-major, single-threaded: OpenBLAS's sgemv with the same
 * address-space guard as cpu_blas_sgemm. A is [m, n] with row stride LDA; op(A) is A, or its
 * transpose when TRANS (then x has m elements and y n). INCX, INCY >= 1. Cannot fail. */
void cpu_blas_sgemv(int trans, int64_t m, int64_t n, float alpha, const float *a, int64_t lda,
                    const float *x, int64_t incx, float beta, float *y, int64_t incy);

#endif
