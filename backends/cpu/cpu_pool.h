/*
 * The CPU backend's pinned thread pool (cpu_parallel_for itself is declared in cpu_kernels.h,
 * where the kernels see it).
 */
#ifndef LOOM_CPU_POOL_H
#define LOOM_CPU_POOL_H

#include "cpu_kernels.h"

#include <hwloc.h>

/* Start a pool of N_THREADS threads, the caller of cpu_parallel_for included (so N_THREADS - 1
 * workers), each pinned to one core of TOPO (borrowed; must outlive the pool). Returns NULL with
 * a message in ERR when a thread cannot start. Free with cpu_pool_destroy. */
cpu_pool *cpu_pool_create(unsigned n_threads, hwloc_topology_t topo, char *err, size_t err_len);

/* Join the workers and free the pool; no cpu_parallel_for may be running. NULL is allowed. */
void cpu_pool_destroy(cpu_pool *pool);

/* 1 when the workers were pinned to cores. */
int cpu_pool_pinned(const cpu_pool *pool);

#endif /* LOOM_CPU_POOL_H */
