/*
 * Figures of the cost model: robust medians (spikes dropped), prediction error statistics and
 * the one-line profile summary the tools print.
 */
#include "cost_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cost_sort(double *v, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        double x = v[i];
        size_t j = i;
        while (j > 0 && v[j - 1] > x) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of N sorted values. */
static double sorted_median(const double *v, size_t n)
{
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double cost_robust_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    if (n <= 64)
        cost_sort(v, n);
    else
        qsort(v, n, sizeof *v, cmp_double);
    double m = sorted_median(v, n);
    /* Sorted, so the kept values are a prefix: drop the tail above 3x the median. */
    size_t kept = n;
    while (kept > 1 && v[kept - 1] > 3.0 * m)
        kept--;
    return sorted_median(v, kept);
}

int cost_fit_line(const double *x, const double *t, size_t n, double *fixed, double *per_unit)
{
    /* In relative terms each point asks a / t + b * x / t = 1: least squares on that. */
    double su = 0, sv = 0, suu = 0, suv = 0, svv = 0;
    size_t k = 0;
    *fixed = *per_unit = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(t[i] > 0) || !isfinite(t[i]) || !(x[i] >= 0) || !isfinite(x[i]))
            continue;
        double u = 1 / t[i], v = x[i] / t[i];
        su += u, sv += v, suu += u * u, suv += u * v, svv += v * v;
        k++;
    }
    if (!k)
        return 0;
    double det = suu * svv - suv * suv;
    double a = -1, b = -1;
    if (det > 1e-12 * suu * svv) {
        a = (su * svv - sv * suv) / det;
        b = (suu * sv - suv * su) / det;
    }
    if (!(b >= 0)) { /* one size, or no size dependence: flat */
        *fixed = su / suu;
        return 1;
    }
    if (!(a >= 0)) { /* a negative fixed part is noise: through the origin */
        *per_unit = sv / svv;
        return 1;
    }
    *fixed = a;
    *per_unit = b;
    return 1;
}

void cost_error_stats(const double *pred, const double *meas, size_t n, double *median,
                    double *p90)
{
    if (median)
        *median = NAN;
    if (p90)
        *p90 = NAN;
    double *err = n ? malloc(n * sizeof *err) : NULL;
    if (!err)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(meas[i] > 0) || !isfinite(meas[i]) || !isfinite(pred[i]))
            continue;
        err[k++] = fabs(pred[i] - meas[i]) / meas[i];
    }
    if (k) {
        qsort(err, k, sizeof *err, cmp_double);
        if (median)
            *median = sorted_median(err, k);
        if (p90) {
            size_t i = (size_t)(0.9 * (double)(k - 1) + 0.5);
            *p90 = err[i < k ? i : k - 1];
        }
    }
    free(err);
}

/* "52.3 GFLOP/s" style figure of X (ops or bytes per second) into BUF, or "-" when unknown. */
static void rate(char *buf, size_t len, double x, const char *unit)
{
    if (x > 0 && isfinite(x))
        snprintf(buf, len, "%.4g %s", x * 1e-9, unit);
    else
        snprintf(buf, len, "-");
}

void cost_profile_summary(const cost_profile *p, char *buf, size_t len)
{
    if (!buf || !len)
        return;
    if (!p) {
        snprintf(buf, len, "-");
        return;
    }
    char f32[32], f16[32], bw[32], link[96];
    rate(f32, sizeof f32, p->flops[0], "GFLOP/s");
    rate(f16, sizeof f16, p->flops[1], "GFLOP/s");
    rate(bw, sizeof bw, p->mem_bandwidth, "GB/s");
    if (p->host_visible)
        snprintf(link, sizeof link, "host-visible");
    else
        snprintf(link, sizeof link, "to host %.3g us + %.3g GB/s, from host %.3g us + %.3g GB/s",
                 p->to_host_latency_s * 1e6, p->to_host_bandwidth * 1e-9,
                 p->from_host_latency_s * 1e6, p->from_host_bandwidth * 1e-9);
    snprintf(buf, len, "f32 %s, f16 %s, %s, launch %.3g us, link %s, %s%s", f32, f16, bw,
             p->launch_s * 1e6, link, p->calibrated ? "calibrated" : "from device facts",
             p->shares_host_cpu ? ", shares the host CPU" : "");
}
