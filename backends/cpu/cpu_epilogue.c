/*
 * The fused epilogue (cpu_epilogue.h): bias and residual, then the activation, in two vectorised
 * sweeps over a stretch the kernel has just written. The activation formulas are copies of the
 * standalone kernels' (kernels_elementwise.c: Sigmoid, Erf GELU, tanh GELU;
 * kernels_compare_logic_round.c: HardSigmoid, HardSwish; Clip as min then max), so that fusing
 * does not change a result.
 */
#include "cpu_epilogue.h"

#include "cpu_kernels.h"
#include "cpu_simd.h"

#include <math.h>
#include <string.h>

static inline float ep_clamp01(float v)
{
    return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
}

static inline float ep_sigmoid(float x)
{
    const float e = cpu_exp_neg(-fabsf(x));
    const float r = 1.0f / (1.0f + e);
    return cpu_sel(x >= 0.0f, r, e * r);
}

static inline float ep_erf(float a)
{
    float x = cpu_sel(a > 4.0f, 4.0f, a);
    x = cpu_sel(x < -4.0f, -4.0f, x);
    const float z = x * x;
    float p = -2.72614225801306e-10f;
    p = p * z + 2.77068142495902e-08f;
    p = p * z + -2.10102402082508e-06f;
    p = p * z + -5.69250639462346e-05f;
    p = p * z + -7.34990630326855e-04f;
    p = p * z + -2.95459980854025e-03f;
    p = p * z + -1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * z + -2.13374055278905e-04f;
    q = q * z + -1.68282697438203e-03f;
    q = q * z + -7.37332916720468e-03f;
    q = q * z + -1.42647390514189e-02f;
    return x * p / q;
}

static inline float ep_tanh(float x)
{
    const float ax = fabsf(x);
    const float z = x * x;
    float s = -5.70498872745e-3f;
    s = s * z + 2.06390887954e-2f;
    s = s * z - 5.37397155531e-2f;
    s = s * z + 1.33314422036e-1f;
    s = s * z - 3.33332819422e-1f;
    s = s * z * ax + ax;
    const float e = cpu_exp_mid(2.0f * cpu_sel(ax > 9.0f, 9.0f, ax));
    const float l = cpu_sel(ax > 9.0f, 1.0f, 1.0f - 2.0f / (e + 1.0f));
    const float t = cpu_sel(ax < 0.625f, s, l);
    return cpu_f_bits(cpu_bits_f(t) | (cpu_bits_f(x) & 0x80000000u));
}

int cpu_epilogue_parse(const loom_node_desc *node, cpu_epilogue *e, char *reason, size_t len)
{
    static const struct {
        const char *name;
        cpu_act_kind kind;
    } k[] = {{"", CPU_ACT_NONE},
             {"Relu", CPU_ACT_RELU},
             {"LeakyRelu", CPU_ACT_LEAKY_RELU},
             {"Clip", CPU_ACT_CLIP},
             {"HardSigmoid", CPU_ACT_HARD_SIGMOID},
             {"HardSwish", CPU_ACT_HARD_SWISH},
             {"Sigmoid", CPU_ACT_SIGMOID},
             {"SiLU", CPU_ACT_SILU},
             {"Gelu", CPU_ACT_GELU},
             {"GeluTanh", CPU_ACT_GELU_TANH}};
    const char *s = cpu_str_attr(node, "activation", "");
    memset(e, 0, sizeof *e);
    e->alpha = loom_node_attr_float(node, "activation_alpha", 0.0f);
    e->beta = loom_node_attr_float(node, "activation_beta", 0.0f);
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (strcmp(s, k[i].name) == 0) {
            e->act = k[i].kind;
            return 1;
        }
    return cpu_reason(reason, len, "%s: activation '%.40s' has no CPU epilogue", node->op_name,
                      s);
}

CPU_CLONES
void cpu_epilogue_apply(const cpu_epilogue *e, float *y_, size_t n, float bias,
                        const float *bvec_, const float *z_)
{
    float *restrict y = y_;
    const float *restrict bvec = bvec_;
    const float *restrict z = z_;
    if (bvec && z)
        CPU_LOOP(n, y[i] = y[i] + bias + bvec[i] + z[i];);
    else if (bvec)
        CPU_LOOP(n, y[i] = y[i] + bias + bvec[i];);
    else if (z)
        CPU_LOOP(n, y[i] = y[i] + bias + z[i];);
    else if (bias != 0.0f)
        CPU_LOOP(n, y[i] = y[i] + bias;);
    const float alpha = e->alpha, beta = e->beta;
    switch (e->act) {
    case CPU_ACT_NONE:
        break;
    case CPU_ACT_RELU:
        CPU_LOOP(n, const float x = y[i]; y[i] = x < 0.0f ? 0.0f : x;);
        break;
    case CPU_ACT_LEAKY_RELU:
        CPU_LOOP(n, const float x = y[i];
                 y[i] = (x < 0.0f ? 0.0f : x) + alpha * (x < 0.0f ? x : 0.0f););
        break;
    case CPU_ACT_CLIP:
        CPU_LOOP(n, float x = y[i]; x = x < alpha ? alpha : x; y[i] = x > beta ? beta : x;);
        break;
    case CPU_ACT_HARD_SIGMOID:
        CPU_LOOP(n, const float x = y[i]; y[i] = ep_clamp01(alpha * x + beta););
        break;
    case CPU_ACT_HARD_SWISH:
        CPU_LOOP(n, const float x = y[i]; y[i] = x * ep_clamp01(x * (1.0f / 6.0f) + 0.5f););
        break;
    case CPU_ACT_SIGMOID:
        CPU_LOOP(n, y[i] = ep_sigmoid(y[i]););
        break;
    case CPU_ACT_SILU:
        CPU_LOOP(n, const float x = y[i]; y[i] = x * ep_sigmoid(x););
        break;
    case CPU_ACT_GELU:
        CPU_LOOP(n, const float x = y[i];
                 y[i] = 0.5f * x * (1.0f + ep_erf(x * 0.70710678118654752440f)););
        break;
    case CPU_ACT_GELU_TANH:
        CPU_LOOP(n, const float x = y[i];
                 y[i] = 0.5f * x *
                        (1.0f + ep_tanh(0.79788456080286535588f * (x + 0.044715f * x * x * x))););
        break;
    }
}
