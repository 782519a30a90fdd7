/*
 * What every benchmark shares: a monotonic clock, the median of a set of timings, the machine's
 * core count, and one way to die on a failed Loom call. Benchmarks print figures; they never
 * assert on time.
 */
#ifndef LOOM_BENCH_COMMON_H
#define LOOM_BENCH_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime, sysconf */
#endif

#include <loom/loom.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Seconds on the monotonic clock. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of V[N] (N >= 1); sorts V in place. */
static inline double bench_median(double *v, size_t n)
{
    qsort(v, n, sizeof v[0], bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Cores online, at least 1. */
static inline int bench_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Exit 1 with Loom's message when STATUS is not LOOM_OK. */
static inline void bench_check(loom_status status, const char *what)
{
    if (status != LOOM_OK) {
        fprintf(stderr, "%s failed (%s): %s\n", what, loom_status_name(status),
                loom_last_error());
        exit(1);
    }
}

#endif /* LOOM_BENCH_COMMON_H */
