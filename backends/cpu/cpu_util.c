/*
 * Helpers shared by the CPU kernel families: message formatting, attribute and shape helpers,
 * work grains, a single-threaded SGEMM, the float32 row max, and half-precision conversions.
 */
#include "cpu_axis.h"
#include "cpu_blas.h"
#include "cpu_kernels.h"
#include "cpu_simd.h"


#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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
    case LOOM_DTYPE_U16: return "uint16";
    case LOOM_DTYPE_I16: return "int16";
    case LOOM_DTYPE_F64: return "float64";
    case LOOM_DTYPE_U32: return "uint32";
    case LOOM_DTYPE_U64: return "uint64";
    case LOOM_DTYPE_UNDEFINED: return "undefined";
    }
    return "unknown";
}

int cpu_present(const loom_node_desc *node, uint32_t i)
{
    return i < node->n_inputs && node->inputs[i].dtype != LOOM_DTYPE_UNDEFINED;
}

int cpu_kernel_present(const cpu_kernel *k, uint32_t i)
{
    return i < k->n_in && k->in[i].dtype != LOOM_DTYPE_UNDEFINED;
}

int cpu_no_dtype(const loom_node_desc *node, loom_dtype t, const char *only, char *reason,
                 size_t len)
{
    return cpu_reason(reason, len, "%s: dtype %s has no CPU kernel (only %s)", node->op_name,
                      cpu_dtype_name(t), only);
}

loom_status cpu_oom(const loom_node_desc *node, char *err, size_t len)
{
    return cpu_fail(err, len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory", node->op_name);
}

size_t cpu_grain_items(int64_t work_per_item, size_t grain)
{
    if (work_per_item <= 0)
        return grain;
    size_t g = grain / (size_t)work_per_item;
    return g ? g : 1;
}

size_t cpu_grain(int64_t work_per_item)
{
    return cpu_grain_items(work_per_item, CPU_GRAIN);
}

size_t cpu_grain_bytes(size_t bytes_per_item)
{
    return bytes_per_item >= CPU_CHUNK_BYTES ? 1 : CPU_CHUNK_BYTES / (bytes_per_item + 1) + 1;
}

int cpu_fits_int(int64_t v)
{
    return v >= 0 && v <= INT_MAX;
}

int cpu_is_f32_i32_i64(loom_dtype t)
{
    return t == LOOM_DTYPE_F32 || t == LOOM_DTYPE_I32 || t == LOOM_DTYPE_I64;
}

int cpu_get_ints(const loom_node_desc *node, const char *name, size_t count, int64_t *out)
{
    const loom_attr *a = loom_node_attr(node, name);
    if (!a || a->kind != LOOM_ATTR_INTS || a->count != count)
        return 0;
    for (size_t i = 0; i < count; i++)
        out[i] = a->ints[i];
    return 1;
}

const char *cpu_str_attr(const loom_node_desc *node, const char *name, const char *def)
{
    const loom_attr *a = loom_node_attr(node, name);
    return a && a->kind == LOOM_ATTR_STRING ? a->s : def;
}

void cpu_valid_range(int64_t off, int64_t stride, int64_t n_in, int64_t n_out, int64_t *lo,
                     int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t h = n_in - 1 - off < 0 ? 0 : (n_in - 1 - off) / stride + 1;
    if (h > n_out)
        h = n_out;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

int cpu_window_attrs_ok(const loom_node_desc *node, size_t s, char *reason, size_t len)
{
    int64_t ks[LOOM_MAX_RANK], st[LOOM_MAX_RANK], dl[LOOM_MAX_RANK], pd[2 * LOOM_MAX_RANK];
    if (!cpu_get_ints(node, "kernel_shape", s, ks) || !cpu_get_ints(node, "strides", s, st) ||
        !cpu_get_ints(node, "dilations", s, dl) || !cpu_get_ints(node, "pads", 2 * s, pd)) {
        cpu_reason(reason, len, "%s: canonical attributes missing (run shape inference)",
                   node->op_name);
        return 0;
    }
    for (size_t i = 0; i < s; i++)
        if (ks[i] < 1 || st[i] < 1 || dl[i] < 1 || pd[i] < 0 || pd[s + i] < 0) {
            cpu_reason(reason, len, "%s: kernel, strides and dilations must be >= 1, pads >= 0",
                       node->op_name);
            return 0;
        }
    return 1;
}

void cpu_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
               const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    if (m <= 0 || n <= 0)
        return;
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    cpu_blas_sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

CPU_CLONES
float cpu_max_f32(const float *restrict x, size_t n)
{
    float acc[CPU_BLK];
    for (size_t k = 0; k < CPU_BLK; k++)
        acc[k] = -INFINITY;
    size_t i = 0;
    for (; i + CPU_BLK <= n; i += CPU_BLK)
        for (size_t k = 0; k < CPU_BLK; k++)
            acc[k] = CPU_MAXF(x[i + k], acc[k]);
    float m = -INFINITY;
    for (; i < n; i++)
        m = CPU_MAXF(x[i], m);
    for (size_t k = 0; k < CPU_BLK; k++)
        m = CPU_MAXF(acc[k], m);
    return m;
}

cpu_axis_params *cpu_axis_make(const loom_tensor_desc *x, int64_t axis)
{
    cpu_axis_params *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->dt = x->dtype;
    p->outer = cpu_prod(x->dims, 0, (uint32_t)axis);
    p->len = x->dims[axis];
    p->inner = cpu_prod(x->dims, (uint32_t)axis + 1, x->rank);
    return p;
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
