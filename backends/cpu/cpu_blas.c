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
 */
#include "cpu_blas.h"

#include <cblas.h>

#include <stdatomic.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

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
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}
