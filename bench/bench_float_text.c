/*
 * JSON numbers of `loom serve` (serve/float_text.h): the time and bytes of writing float32
 * values as text, snprintf("%.9g") (what serve/kserve.c did) against sv_float_text
 * (double-conversion's shortest round-trip text), over the same values in one run. Two sets:
 *   bits     random bit patterns, every finite float equally likely (exponents from 1e-45 to
 *            3e38: mostly exponent form);
 *   outputs  what a model answers: normally distributed, mean 0, deviation 1.
 * Each way writes every value, NUL-separated, into one buffer, as the answer writer does; the
 * figure is the median over TIMED_RUNS runs (after one warm-up) divided by the count. Every text
 * is then read back with strtof and must give the same bits, or the benchmark exits 1.
 *
 * Usage: bench_float_text [COUNT]   (default 1000000 values per set)
 */
#include "bench_common.h"

#include "serve/float_text.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define TIMED_RUNS 5

enum method { PRINTF_G9, SHORTEST };

static const char *method_name(enum method m)
{
    return m == PRINTF_G9 ? "snprintf %.9g" : "sv_float_text";
}

static uint64_t rng_state = 0x2545f4914f6cdd1du;

static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]. */
static double next_unit(void)
{
    return (double)((next_u64() >> 11) + 1) * 0x1p-53;
}

static void fill(float *v, size_t n, int outputs)
{
    for (size_t i = 0; i < n; i++) {
        if (outputs) { /* Box-Muller */
            v[i] = (float)(sqrt(-2.0 * log(next_unit())) * cos(6.283185307179586 * next_unit()));
        } else {
            uint32_t u;
            do
                u = (uint32_t)next_u64();
            while ((u & 0x7f800000u) == 0x7f800000u);
            memcpy(&v[i], &u, 4);
        }
    }
}

/* Write V[N] into OUT, each text followed by its NUL; returns the text bytes (NULs not
 * counted). OUT holds N * SV_FLOAT_TEXT_MAX bytes. */
static size_t write_all(enum method m, const float *v, size_t n, char *out)
{
    size_t pos = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t w = m == PRINTF_G9
                       ? (size_t)snprintf(out + pos, SV_FLOAT_TEXT_MAX, "%.9g", (double)v[i])
                       : sv_float_text(v[i], 1, out + pos, SV_FLOAT_TEXT_MAX);
        pos += w + 1;
        bytes += w;
    }
    return bytes;
}

/* Every text in OUT reads back to V's bits. Exits on the first that does not. */
static void verify(enum method m, const float *v, size_t n, const char *out)
{
    for (size_t i = 0; i < n; i++) {
        char *end;
        float back = strtof(out, &end);
        if (*end || memcmp(&back, &v[i], 4)) {
            fprintf(stderr, "bench_float_text: %s: value %zu (%.9g) written \"%s\"\n",
                    method_name(m), i, (double)v[i], out);
            exit(1);
        }
        out = end + 1;
    }
}

static void bench(const char *set, const float *v, size_t n, char *out)
{
    double ns[2];
    size_t bytes[2];
    for (int m = PRINTF_G9; m <= SHORTEST; m++) {
        double t[TIMED_RUNS];
        bytes[m] = write_all((enum method)m, v, n, out);
        for (int r = 0; r < TIMED_RUNS; r++) {
            double t0 = bench_now();
            write_all((enum method)m, v, n, out);
            t[r] = bench_now() - t0;
        }
        verify((enum method)m, v, n, out);
        ns[m] = bench_median(t, TIMED_RUNS) / (double)n * 1e9;
    }
    for (int m = PRINTF_G9; m <= SHORTEST; m++)
        printf("%-8s  %-14s  %8.1f  %11zu  %11.2f\n", set, method_name((enum method)m), ns[m],
               bytes[m], (double)bytes[m] / (double)n);
    printf("%-8s  sv_float_text: %.2fx as fast, %.1f%% of the bytes\n", set,
           ns[PRINTF_G9] / ns[SHORTEST], 100.0 * (double)bytes[SHORTEST] / (double)bytes[PRINTF_G9]);
}

int main(int argc, char **argv)
{
    long count = argc > 1 ? strtol(argv[1], NULL, 10) : 1000000;
    if (count < 1) {
        fprintf(stderr, "usage: bench_float_text [COUNT]\n");
        return 2;
    }
    size_t n = (size_t)count;
    float *v = malloc(n * sizeof *v);
    char *out = malloc(n * SV_FLOAT_TEXT_MAX);
    if (!v || !out) {
        fprintf(stderr, "bench_float_text: out of memory\n");
        return 1;
    }
    printf("bench_float_text: %zu float32 values per set, median of %d runs\n", n, TIMED_RUNS);
    printf("%-8s  %-14s  %8s  %11s  %11s\n", "set", "method", "ns/value", "bytes",
           "bytes/value");
    fill(v, n, 0);
    bench("bits", v, n, out);
    fill(v, n, 1);
    bench("outputs", v, n, out);
    free(out);
    free(v);
    return 0;
}
