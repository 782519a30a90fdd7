/*
 * The CPU backend's thread pool: one worker per core, pinned with hwloc, plus the calling
 * thread. Workers spin briefly after a job (back-to-back kernels then start without a wake-up)
 * and then block on a condition variable, so an idle pool costs no CPU.
 *
 * A job is published under the pool mutex (one lock per parallel kernel, never per element or
 * per node); chunks are then claimed with one atomic increment each. Concurrent runs of a plan
 * may call cpu_parallel_for at the same time: the first one owns the pool and the others run
 * their loop serially on their own thread instead of waiting.
 */
#include "cpu_pool.h"

#include <hwloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long an idle worker spins before it sleeps, and how long the caller spins waiting for the
 * last chunks before it yields its core: by the clock, since one PAUSE takes from ~5 ns to
 * 25 ns (measured on this project's AMD EPYC VM: 20,000 of them were 0.5 ms, ten times what was
 * meant, and a server's idle pool spent a fifth of its CPU there). 50 us covers the gap between
 * back-to-back kernels of a plan. */
#define POOL_SPIN_NS 50000
#define POOL_WAIT_SPIN_NS 50000

typedef struct pool_job {
    void (*fn)(void *arg, size_t begin, size_t end);
    void *arg;
    size_t n, chunk, nchunks;
} pool_job;

struct cpu_pool {
    unsigned n_threads; /* workers + the caller */
    pthread_t *workers;
    unsigned n_started;
    hwloc_topology_t topo; /* borrowed from the backend */
    hwloc_cpuset_t *bind;  /* per worker, NULL entries when pinning is not possible */
    int pinned;            /* workers actually pinned */
    hwloc_cpuset_t worker_cpus; /* every PU a worker is pinned to */
    hwloc_cpuset_t caller_cpus; /* core 0: where a caller that sits on a worker's core moves */
    hwloc_cpuset_t restore;     /* the moved caller's own binding; used under BUSY only */

    atomic_flag busy;        /* owned by the run that is using the pool */
    pthread_mutex_t mutex;
    pthread_cond_t wake;     /* workers wait here for a new generation */
    atomic_uint_fast64_t generation;
    int stop;
    int open;                /* the current job still accepts workers */
    atomic_uint active;      /* workers inside the current job (they join under the mutex) */
    pool_job job;
    atomic_size_t next;      /* next chunk to claim */
    atomic_size_t done;      /* chunks finished */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline uint64_t pool_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Spins (PAUSE, the clock read every 16) until *GEN differs from SEEN or NS have passed;
 * returns whether it changed. */
static int pool_spin_until_changed(atomic_uint_fast64_t *gen, uint_fast64_t seen, uint64_t ns)
{
    const uint64_t end = pool_now_ns() + ns;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(gen, memory_order_acquire) != seen)
            return 1;
        cpu_relax();
        if ((i & 15) == 0 && pool_now_ns() >= end)
            return 0;
    }
}

/* One step of a wait: spin until the clock passes END, then yield the core between looks (the
 * clock read every 16 steps). */
static inline void pool_backoff(unsigned i, uint64_t end)
{
    if ((i & 15) != 0 || pool_now_ns() < end)
        cpu_relax();
    else
        sched_yield();
}

static void run_chunks(cpu_pool *p, const pool_job *job)
{
    for (;;) {
        size_t c = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (c >= job->nchunks)
            return;
        size_t b = c * job->chunk, e = b + job->chunk;
        if (e > job->n)
            e = job->n;
        job->fn(job->arg, b, e);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
}

typedef struct worker_arg {
    cpu_pool *pool;
    unsigned index;
} worker_arg;

static void *worker_main(void *argp)
{
    worker_arg wa = *(worker_arg *)argp;
    free(argp);
    cpu_pool *p = wa.pool;
    pthread_setname_np(pthread_self(), "loom-cpu");
    if (p->bind && p->bind[wa.index])
        hwloc_set_cpubind(p->topo, p->bind[wa.index], HWLOC_CPUBIND_THREAD);
    uint_fast64_t seen = atomic_load(&p->generation);
    for (;;) {
        /* Spin a little first: kernels often come back to back. */
        pool_spin_until_changed(&p->generation, seen, POOL_SPIN_NS);
        pthread_mutex_lock(&p->mutex);
        while (!p->stop && atomic_load(&p->generation) == seen)
            pthread_cond_wait(&p->wake, &p->mutex);
        if (p->stop) {
            pthread_mutex_unlock(&p->mutex);
            return NULL;
        }
        seen = atomic_load(&p->generation);
        if (!p->open) {
            pthread_mutex_unlock(&p->mutex);
            continue;
        }
        pool_job job = p->job;
        atomic_fetch_add_explicit(&p->active, 1, memory_order_relaxed);
        pthread_mutex_unlock(&p->mutex);

        run_chunks(p, &job);

        /* Leaving takes no lock: the caller spins for it (it follows the last chunk at once);
         * a condition variable here could put the caller to sleep for a futex wake-up at the
         * end of every parallel loop. */
        atomic_fetch_sub_explicit(&p->active, 1, memory_order_release);
    }
}

cpu_pool *cpu_pool_create(unsigned n_threads, hwloc_topology_t topo, char *err, size_t err_len)
{
    cpu_pool *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, err_len, "out of memory creating the CPU thread pool");
        return NULL;
    }
    p->n_threads = n_threads ? n_threads : 1;
    p->topo = topo;
    atomic_flag_clear(&p->busy);
    atomic_init(&p->generation, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->done, 0);
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->wake, NULL);
    unsigned nw = p->n_threads - 1;
    if (nw == 0)
        return p;
    p->workers = calloc(nw, sizeof *p->workers);
    p->bind = calloc(nw, sizeof *p->bind);
    if (!p->workers || !p->bind) {
        snprintf(err, err_len, "out of memory creating the CPU thread pool");
        cpu_pool_destroy(p);
        return NULL;
    }
    /* Worker i goes on core i+1 (modulo the cores there are): core 0 is left to the thread
     * that calls into Loom, which takes part in every parallel loop. */
    int n_cores = topo ? hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) : 0;
    for (unsigned i = 0; i < nw && n_cores > 0; i++) {
        hwloc_obj_t core = hwloc_get_obj_by_type(topo, HWLOC_OBJ_CORE, (int)((i + 1) % (unsigned)n_cores));
        if (core && core->cpuset) {
            p->bind[i] = hwloc_bitmap_dup(core->cpuset);
            if (p->bind[i])
                hwloc_bitmap_singlify(p->bind[i]);
        }
    }
    p->pinned = n_cores > 0;
    if (p->pinned) {
        p->worker_cpus = hwloc_bitmap_alloc();
        hwloc_obj_t core0 = hwloc_get_obj_by_type(topo, HWLOC_OBJ_CORE, 0);
        p->caller_cpus = core0 && core0->cpuset ? hwloc_bitmap_dup(core0->cpuset) : NULL;
        for (unsigned i = 0; i < nw && p->worker_cpus; i++)
            if (p->bind[i])
                hwloc_bitmap_or(p->worker_cpus, p->worker_cpus, p->bind[i]);
        p->restore = hwloc_bitmap_alloc();
        /* With more workers than cores, core 0 holds workers too: no place to move to. */
        if (p->caller_cpus && (!p->worker_cpus || !p->restore ||
                               hwloc_bitmap_intersects(p->caller_cpus, p->worker_cpus))) {
            hwloc_bitmap_free(p->caller_cpus);
            p->caller_cpus = NULL;
        }
    }
    for (unsigned i = 0; i < nw; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->pool = p;
            wa->index = i;
        }
        if (!wa || pthread_create(&p->workers[i], NULL, worker_main, wa) != 0) {
            free(wa);
            snprintf(err, err_len, "cannot start CPU pool thread %u of %u", i + 1, nw);
            cpu_pool_destroy(p);
            return NULL;
        }
        p->n_started++;
    }
    return p;
}

void cpu_pool_destroy(cpu_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mutex);
    p->stop = 1;
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    for (unsigned i = 0; i < p->n_started; i++)
        pthread_join(p->workers[i], NULL);
    if (p->bind)
        for (unsigned i = 0; i + 1 < p->n_threads; i++)
            if (p->bind[i])
                hwloc_bitmap_free(p->bind[i]);
    free(p->bind);
    if (p->worker_cpus)
        hwloc_bitmap_free(p->worker_cpus);
    if (p->caller_cpus)
        hwloc_bitmap_free(p->caller_cpus);
    if (p->restore)
        hwloc_bitmap_free(p->restore);
    free(p->workers);
    pthread_mutex_destroy(&p->mutex);
    pthread_cond_destroy(&p->wake);
    free(p);
}

unsigned cpu_pool_threads(const cpu_pool *p)
{
    return p ? p->n_threads : 1;
}

int cpu_pool_pinned(const cpu_pool *p)
{
    return p ? p->pinned : 0;
}

void cpu_parallel_for(cpu_pool *p, size_t n, size_t grain,
                      void (*fn)(void *arg, size_t begin, size_t end), void *arg)
{
    if (n == 0)
        return;
    if (grain == 0)
        grain = 1;
    if (!p || p->n_threads <= 1 || n <= grain ||
        atomic_flag_test_and_set_explicit(&p->busy, memory_order_acquire)) {
        fn(arg, 0, n);
        return;
    }
    /* About four chunks per thread balances uneven cores without tiny chunks. */
    size_t target = (size_t)p->n_threads * 4;
    size_t chunk = (n + target - 1) / target;
    if (chunk < grain)
        chunk = grain;
    pool_job job = {fn, arg, n, chunk, (n + chunk - 1) / chunk};

    /* A caller that happens to sit on a worker's core would share it with that worker while
     * core 0 idles (measured: a 512^3 GEMM at half speed). Move it to core 0 for this loop and
     * give it its own binding back afterwards; the caller's thread is the user's, so the move
     * never outlives the call. */
    /* sched_getcpu is a vDSO read and the saved binding lives in the pool (this run owns it
     * while BUSY is set): nothing is allocated per loop. */
    int moved = 0;
    if (p->caller_cpus) {
        int cpu = sched_getcpu();
        moved = cpu >= 0 && hwloc_bitmap_isset(p->worker_cpus, (unsigned)cpu) &&
                hwloc_get_cpubind(p->topo, p->restore, HWLOC_CPUBIND_THREAD) == 0 &&
                hwloc_set_cpubind(p->topo, p->caller_cpus, HWLOC_CPUBIND_THREAD) == 0;
    }

    pthread_mutex_lock(&p->mutex);
    p->job = job;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    p->open = 1;
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);

    run_chunks(p, &job);
    /* The last chunks are the workers': spin for them a while, then give the core away between
     * looks (a worker may have lost its core to another process). */
    const uint64_t end = pool_now_ns() + POOL_WAIT_SPIN_NS;
    for (unsigned i = 1; atomic_load_explicit(&p->done, memory_order_acquire) < job.nchunks; i++)
        pool_backoff(i, end);
    /* Close the job (no worker joins it after this) and wait the same way for the workers still
     * inside it (they only have to notice that no chunk is left), so that the next job cannot
     * be mixed with this one. */
    pthread_mutex_lock(&p->mutex);
    p->open = 0;
    pthread_mutex_unlock(&p->mutex);
    for (unsigned i = 1; atomic_load_explicit(&p->active, memory_order_acquire) != 0; i++)
        pool_backoff(i, end);
    if (moved)
        hwloc_set_cpubind(p->topo, p->restore, HWLOC_CPUBIND_THREAD);
    atomic_flag_clear_explicit(&p->busy, memory_order_release);
}
