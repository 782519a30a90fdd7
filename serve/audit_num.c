/*
 * "%.17g" without printf, for the audit trail's hashed record text (audit_num.h). A double is
 * m * 2^e exactly; its 17 significant decimal digits are m * 10^s / 2^-e rounded to nearest,
 * ties to even (as glibc rounds under the default mode), which fits in 128-bit integers for
 * every value from 1e-6 to 2^52 — the times, latencies and confidences an audit record holds.
 * Anything else goes to snprintf.
 */
#include "audit_num.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

__extension__ typedef unsigned __int128 u128;

static const uint64_t pow10_u64[20] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
    1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
    100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
    1000000000000000000ull, 10000000000000000000ull};

/* Decimal digits of V into BUF; returns the length. */
static size_t put_u64(char *buf, uint64_t v)
{
    char t[24];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = t[n - 1 - i];
    return n;
}

/* The 17 significant digits of V (finite, >= 1e-6, < 2^52, not integral-only) and the
 * decimal exponent X of the first one: V ~ D * 10^(X-16) with 10^16 <= D < 10^17. 0, or -1
 * when V is out of the exact path's range. */
static int digits17(double v, uint64_t *d_out, int *x_out)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    int bexp = (int)((u >> 52) & 0x7ff);
    if (bexp == 0 || bexp == 0x7ff)
        return -1; /* zero, subnormal, infinity, NaN */
    uint64_t m = (u & ((1ull << 52) - 1)) | (1ull << 52);
    int e = bexp - 1075; /* v = m * 2^e */
    if (e >= 0)
        return -1;       /* v >= 2^52 */
    int sh = -e;
    int x = (int)floor(log10(v));
    for (int tries = 0; tries < 3; tries++) {
        int s = 16 - x;
        if (s < 0 || s > 22 || sh >= 128)
            return -1;
        u128 p = s <= 19 ? (u128)pow10_u64[s] : (u128)pow10_u64[19] * pow10_u64[s - 19];
        u128 n = (u128)m * p; /* < 2^53 * 10^22 < 2^127 */
        u128 q = n >> sh, r = n & ((((u128)1) << sh) - 1), half = ((u128)1) << (sh - 1);
        /* The estimate of x is checked on the digits before rounding. */
        if (q < (u128)pow10_u64[16]) {
            x--;
            continue;
        }
        if (q >= (u128)pow10_u64[17]) {
            x++;
            continue;
        }
        if (r > half || (r == half && (q & 1)))
            q++;
        if (q == (u128)pow10_u64[17]) {
            /* 99...9.5 rounds up to the next power of ten. */
            q = pow10_u64[16];
            x++;
        }
        *d_out = (uint64_t)q;
        *x_out = x;
        return 0;
    }
    return -1;
}

size_t sv_audit_g17(char *buf, double v)
{
    /* Integral values below 2^53 (sequence numbers, a confidence of 0 or 1): their digits. */
    if (v >= 0 && v < 9007199254740992.0 && v == floor(v) && !(v == 0 && signbit(v))) {
        size_t n = put_u64(buf, (uint64_t)v);
        buf[n] = '\0';
        return n;
    }
    size_t w = 0;
    double a = v;
    if (v < 0) {
        buf[w++] = '-';
        a = -v;
    }
    uint64_t d;
    int x;
    if (!(a >= 1e-6) || digits17(a, &d, &x) != 0) {
        int n = snprintf(buf, 32, "%.17g", v);
        return n > 0 ? (size_t)n : 0;
    }
    char dig[17];
    for (int i = 16; i >= 0; i--) {
        dig[i] = (char)('0' + d % 10);
        d /= 10;
    }
    int last = 16; /* the last digit kept: %g drops trailing zeros */
    while (last > 0 && dig[last] == '0')
        last--;
    if (x >= 0) {
        /* Fixed: x + 1 integer digits (x <= 16 here), then the fraction. */
        memcpy(buf + w, dig, (size_t)x + 1);
        w += (size_t)x + 1;
        if (last > x) {
            buf[w++] = '.';
            memcpy(buf + w, dig + x + 1, (size_t)(last - x));
            w += (size_t)(last - x);
        }
    } else if (x >= -4) {
        /* Fixed below 1: "0." and -x-1 zeros, then the digits. */
        buf[w++] = '0';
        buf[w++] = '.';
        for (int i = 0; i < -x - 1; i++)
            buf[w++] = '0';
        memcpy(buf + w, dig, (size_t)last + 1);
        w += (size_t)last + 1;
    } else {
        /* Exponent style: d[.ddd]e-XX (x is -5 or -6 here). */
        buf[w++] = dig[0];
        if (last > 0) {
            buf[w++] = '.';
            memcpy(buf + w, dig + 1, (size_t)last);
            w += (size_t)last;
        }
        buf[w++] = 'e';
        buf[w++] = '-';
        buf[w++] = (char)('0' + (-x) / 10);
        buf[w++] = (char)('0' + (-x) % 10);
    }
    buf[w] = '\0';
    return w;
}
