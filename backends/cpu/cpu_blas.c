/*
 * The CPU backend's one single-threaded float32 GEMM entry (cpu_blas.h): oneDNN's sgemm
 * (Debian's libdnnl) where the build has it, OpenBLAS's cblas_sgemm otherwise, when
 * LOOM_CPU_GEMM=openblas asks for it, or under an address-space limit (below).
 *
 * Why two: on the development machine (AMD EPYC, Zen 4), one thread, oneDNN 2.6 measured 11-21%
 * faster than OpenBLAS 0.3.21 on the shapes a BERT encoder runs (128 rows by 768-3072) and on
 * 1024^3 (a throwaway program calling both; BERT-base end to end 0.97x ONNX Runtime against
 * 1.14x with LOOM_CPU_GEMM=openblas: bench/RESULTS.md). OpenBLAS stays the reference the
 * benchmarks compare with (bench_gemm), and runs the GEMVs.
 *
 * Threads: the backend cuts each GEMM into blocks and runs them on its own pool, so every call
 * here must stay on the calling thread. Debian's oneDNN is built with OpenMP and would otherwise
 * start a team of one thread per core on each call, so each calling thread sets its OpenMP
 * thread count to 1 once (an OpenMP ICV is per thread); OpenBLAS runs with one thread already
 * (OPENBLAS_NUM_THREADS=1, see tools/loom.c).
 *
 * Under an address-space limit (ulimit -v): OpenBLAS 0.3.21 gives a calling thread that finds
 * no free buffer a new one of BUFFER_SIZE (128 MiB on this machine's target) and, when that
 * allocation fails, retries it forever (blas_memory_alloc): a hang, not an error. So under a
 * limit every OpenBLAS call is serialised (then one buffer is all it ever needs, reused by every
 * later call), and until one call has succeeded each first checks that the buffer fits by
 * reserving the room and giving it back at once. When it does not fit the product is computed
 * by the plain loop below instead: slow, right, and never a hang. Without a limit none of this
 * runs (one relaxed load per call).
 */
#include "cpu_blas.h"

#include <cblas.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#ifdef LOOM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>

void omp_set_num_threads(int n); /* libgomp, which oneDNN links */

static int blas_use_dnnl(void)
{
    /* Every thread that finds it unset computes the same answer. */
    static _Atomic int use = -1;
    int u = atomic_load_explicit(&use, memory_order_relaxed);
    if (u < 0) {
        const char *v = getenv("LOOM_CPU_GEMM");
        u = !(v && strcmp(v, "openblas") == 0);
        /* Under an address-space limit (ulimit -v) oneDNN 2.6 crashes inside its JIT set-up
         * when it cannot map a code buffer (SIGSEGV in gemm_info_t::jit_init, reproduced with
         * tests/test_memory_limit.sh at 400 MB); OpenBLAS fails cleanly there. */
        struct rlimit as;
        if (u && getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY)
            u = 0;
        atomic_store_explicit(&use, u, memory_order_relaxed);
    }
    return u;
}
#endif

/* Room reserved to check that OpenBLAS's buffer fits: its BUFFER_SIZE, 128 MiB for the
 * largest targets Debian builds, plus what its allocator and glibc's add. */
#define BLAS_BUFFER_ROOM (((size_t)128 << 20) + ((size_t)1 << 20))

/* 1 when the process has a finite address-space limit (read once: a limit lowered later is
 * not seen, as OpenBLAS itself would not see it either). */
static int blas_as_limited(void)
{
    static _Atomic int limited = -1;
    int l = atomic_load_explicit(&limited, memory_order_relaxed);
    if (l < 0) {
        struct rlimit as;
        l = getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY;
        atomic_store_explicit(&limited, l, memory_order_relaxed);
    }
    return l;
}

static pthread_mutex_t blas_limited_mu = PTHREAD_MUTEX_INITIALIZER;
static int blas_has_buffer; /* under blas_limited_mu: an OpenBLAS call has returned */

/* Under a limit: take the lock and say whether OpenBLAS may be called (its buffer exists, or
 * its room can be reserved now). The caller calls blas_limited_leave() after the call or the
 * plain loop. */
static int blas_limited_enter(void)
{
    pthread_mutex_lock(&blas_limited_mu);
    if (blas_has_buffer)
        return 1;
    void *p = mmap(NULL, BLAS_BUFFER_ROOM, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return 0;
    munmap(p, BLAS_BUFFER_ROOM);
    return 1;
}

static void blas_limited_leave(int called)
{
    if (called)
        blas_has_buffer = 1;
    pthread_mutex_unlock(&blas_limited_mu);
}

/* C = alpha * op(A) op(B) + beta * C by definition, row-major, in double sums: the fallback
 * for when OpenBLAS cannot be called. beta == 0 ignores C's old values (NaN included), as
 * BLAS does. */
static void plain_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                        float *c, int64_t ldc)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double sum = 0;
            for (int64_t q = 0; q < k; q++)
                sum += (double)(ta ? a[q * lda + i] : a[i * lda + q]) *
                       (double)(tb ? b[j * ldb + q] : b[q * ldb + j]);
            float v = (float)(alpha * sum);
            c[i * ldc + j] = beta == 0.0f ? v : v + beta * c[i * ldc + j];
        }
}

void cpu_blas_sgemv(int trans, int64_t m, int64_t n, float alpha, const float *a, int64_t lda,
                    const float *x, int64_t incx, float beta, float *y, int64_t incy)
{
    int limited = blas_as_limited();
    if (limited && !blas_limited_enter()) {
        /* y = alpha * op(A) x + beta * y is a product with one column: A is [m, n] as in
         * cblas_sgemv (op(A) its transpose under trans), x a [cols, 1] matrix of row stride
         * incx, y a [rows, 1] one of incy. */
        plain_sgemm(trans, 0, trans ? n : m, 1, trans ? m : n, alpha, a, lda, x, incx, beta, y,
                    incy);
        blas_limited_leave(0);
        return;
    }
    cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, (int)m, (int)n, alpha, a,
                (int)lda, x, (int)incx, beta, y, (int)incy);
    if (limited)
        blas_limited_leave(1);
}

void cpu_blas_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                    int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
#ifdef LOOM_HAVE_DNNL
    if (blas_use_dnnl()) {
        static _Thread_local int omp_single;
        if (!omp_single) {
            omp_set_num_threads(1);
            omp_single = 1;
        }
        if (dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c,
                       ldc) == dnnl_success)
            return;
        /* oneDNN refused (it checks the same things cblas does): the reference below. */
    }
#endif
    int limited = blas_as_limited();
    if (limited && !blas_limited_enter()) {
        plain_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        blas_limited_leave(0);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
    if (limited)
        blas_limited_leave(1);
}
