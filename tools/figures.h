/*
 * Latency figures shared by the `loom` subcommands: sorting and nearest-rank percentiles, so that
 * `loom run` and `loom profile` report the same median/p95/p99 for the same runs.
 */
#ifndef LOOM_TOOLS_FIGURES_H
#define LOOM_TOOLS_FIGURES_H

/* qsort comparator for doubles. */
static inline int loom_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile Q (0..1) of N sorted values; 0 when N is 0. */
static inline double loom_percentile(const double *sorted, int n, double q)
{
    if (n <= 0)
        return 0;
    int i = (int)(q * (n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

#endif /* LOOM_TOOLS_FIGURES_H */
