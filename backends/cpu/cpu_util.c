/*
 * Helpers shared by the CPU kernel families: message formatting and half-precision conversions.
 */
#include "cpu_kernels.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int cpu_reason(char *reason, size_t len, const char *fmt, ...)
{
    if (reason && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, len, fmt, ap);
        va_end(ap);
    }
    return 0;
}

loom_status cpu_fail(char *err, size_t len, loom_status status, const char *fmt, ...)
{
    if (err && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
    }
    return status;
}

const char *cpu_dtype_name(loom_dtype t)
{
    switch (t) {
    case LOOM_DTYPE_F32: return "float32";
    case LOOM_DTYPE_F16: return "float16";
    case LOOM_DTYPE_BF16: return "bfloat16";
    case LOOM_DTYPE_I8: return "int8";
    case LOOM_DTYPE_U8: return "uint8";
    case LOOM_DTYPE_I32: return "int32";
    case LOOM_DTYPE_I64: return "int64";
    case LOOM_DTYPE_BOOL: return "bool";
    case LOOM_DTYPE_UNDEFINED: return "undefined";
    }
    return "unknown";
}

int cpu_present(const loom_node_desc *node, uint32_t i)
{
    return i < node->n_inputs && node->inputs[i].dtype != LOOM_DTYPE_UNDEFINED;
}

int cpu_same_shape(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    if (a->rank != b->rank)
        return 0;
    for (uint32_t d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d])
            return 0;
    return 1;
}

int cpu_broadcasts_to(const loom_tensor_desc *in, const loom_tensor_desc *out)
{
    if (in->rank > out->rank)
        return 0;
    const uint32_t lead = out->rank - in->rank;
    for (uint32_t d = 0; d < in->rank; d++)
        if (in->dims[d] != 1 && in->dims[d] != out->dims[lead + d])
            return 0;
    return 1;
}

int64_t cpu_prod(const int64_t *dims, uint32_t from, uint32_t to)
{
    int64_t n = 1;
    for (uint32_t d = from; d < to; d++)
        n *= dims[d];
    return n;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float cpu_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* inf or NaN */
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t cpu_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* inf or NaN (keep NaN quiet and non-zero) */
        return (uint16_t)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
    if (abs >= 0x477ff000u) /* rounds to >= 65536: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (abs < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (abs < 0x33000000u) /* below half the smallest subnormal */
            return sign;
        uint32_t e = abs >> 23, m = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14 + (112 - (e - 127)) ... = bits to drop */
        uint32_t half = (uint32_t)1 << (shift - 1);
        uint32_t rest = m & ((half << 1) - 1);
        uint32_t r = m >> shift;
        if (rest > half || (rest == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = abs - 0x38000000u; /* rebias exponent: 127 -> 15 */
    uint32_t lower = r & 0x1fffu;
    r >>= 13;
    if (lower > 0x1000u || (lower == 0x1000u && (r & 1)))
        r++;
    return (uint16_t)(sign | r);
}

float cpu_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t cpu_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a NaN */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
