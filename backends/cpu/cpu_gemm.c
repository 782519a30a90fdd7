/*
 * f32 GEMM cut into blocks over the CPU backend's pool (cpu_gemm.h), shared by MatMul, Gemm and
 * Conv.
 */
#include "cpu_gemm.h"
#include "cpu_blas.h"
#include "cpu_kernels.h"


static size_t gcd_size(size_t a, size_t b)
{
    while (b) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Decide how to cut BATCH GEMMs of shape G over the pool: sets G->nb and G->split_n, and returns
 * the grain (tasks per chunk) to give cpu_parallel_for over batch*nb tasks. */
size_t cpu_gemm_plan(cpu_gemm *g, size_t batch, unsigned threads)
{
    double macs = (double)g->m * (double)g->n * (double)g->k;
    size_t tasks;
    g->nb = 1;
    g->split_n = g->n > g->m;
    if (batch == 0 || macs * (double)batch < CPU_GEMM_SMALL_MACS || threads <= 1)
        return batch ? batch : 1;
    int64_t extent = g->split_n ? g->n : g->m;
    /* Enough blocks per GEMM that the task count is a multiple of the threads. */
    size_t nb = threads / gcd_size(batch, threads);
    if (nb > 1 && extent / (int64_t)nb < CPU_GEMM_ALIGN)
        nb = extent / CPU_GEMM_ALIGN > 1 ? (size_t)(extent / CPU_GEMM_ALIGN) : 1;
    g->nb = nb;
    tasks = batch * nb;
    double per_task = macs / (double)nb;
    size_t grain = per_task >= CPU_CHUNK_MACS ? 1 : (size_t)(CPU_CHUNK_MACS / per_task) + 1;
    /* Never coarser than an even share per thread. */
    size_t share = (tasks + threads - 1) / threads;
    return grain < share ? grain : share;
}

/* Start of block B of NB over EXTENT, on a multiple of CPU_GEMM_ALIGN (except the ends). */
int64_t cpu_gemm_block_start(int64_t extent, size_t nb, size_t b)
{
    if (b == 0)
        return 0;
    if (b >= nb)
        return extent;
    int64_t p = (int64_t)(((double)extent * (double)b) / (double)nb + 0.5);
    p = (p + CPU_GEMM_ALIGN / 2) / CPU_GEMM_ALIGN * CPU_GEMM_ALIGN;
    return p > extent ? extent : p;
}

/* C = alpha*op(A)*op(B) + beta*C on rows or columns [lo, hi) of C, one single-threaded call.
 * Vector shapes go to sgemv, which OpenBLAS (0.3.21) does not forward to on its own. */
void cpu_gemm_block(const cpu_gemm *g, const float *a, const float *b, float *c, int64_t lo,
                           int64_t hi, float beta)
{
    int64_t m = g->m, n = g->n;
    if (g->split_n) {
        b += g->trans_b ? lo * g->ldb : lo;
        c += lo;
        n = hi - lo;
    } else {
        a += g->trans_a ? lo : lo * g->lda;
        c += lo * g->ldc;
        m = hi - lo;
    }
    if (m <= 0 || n <= 0)
        return;
    if (g->k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                c[i * g->ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * g->ldc + j];
        return;
    }
    if (cpu_gemm_small_ok(g, m, n)) {
        cpu_gemm_small(g, m, n, a, b, c, beta);
        return;
    }
    if ((m == 1 || n == 1) && beta == 0.0f) {
        /* Some OpenBLAS versions scale y by beta in sgemv, and 0 * NaN garbage stays NaN. */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                c[i * g->ldc + j] = 0.0f;
    }
    if (m == 1) {
        /* c[j] = sum_kk a[kk] * opB[kk][j] */
        int inc_a = g->trans_a ? (int)g->lda : 1;
        if (g->trans_b)
            cpu_blas_sgemv(0, n, g->k, g->alpha, b, g->ldb, a, inc_a, beta, c, 1);
        else
            cpu_blas_sgemv(1, g->k, n, g->alpha, b, g->ldb, a, inc_a, beta, c, 1);
        return;
    }
    if (n == 1) {
        /* c[i] = sum_kk opA[i][kk] * b[kk] */
        int inc_b = g->trans_b ? 1 : (int)g->ldb;
        if (g->trans_a)
            cpu_blas_sgemv(1, g->k, m, g->alpha, a, g->lda, b, inc_b, beta, c, g->ldc);
        else
            cpu_blas_sgemv(0, m, g->k, g->alpha, a, g->lda, b, inc_b, beta, c, g->ldc);
        return;
    }
    cpu_blas_sgemm(g->trans_a, g->trans_b, m, n, g->k, g->alpha, a, g->lda, b, g->ldb, beta, c,
                   g->ldc);
}
