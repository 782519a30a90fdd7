/*
 * Internals of the npu-sim plugin shared by its table (npu_sim.c), its support rules
 * (npu_support.c) and its kernels (npu_kernels.c, npu_kernels_quant.c): the compute modes, the
 * compiled kernel, and the fp16/int8 helpers. Nothing
 * here is part of Loom's ABI; the plugin sees Loom only through <loom/backend.h>.
 */
#ifndef LOOM_NPU_SIM_H
#define LOOM_NPU_SIM_H

#include <loom/backend.h>

#include <stddef.h>
#include <stdint.h>

/* How a node is computed. */
typedef enum npu_mode {
    NPU_MODE_F16 = 1,   /* fp16 operands and results, f32 accumulation */
    NPU_MODE_INT8 = 2,  /* int8 operands (dynamic per-tensor activations), int32 accumulation */
    NPU_MODE_EXACT = 3, /* integer (Q/DQ, QLinear*) ops and copies: no rounding of their own */
} npu_mode;

#define NPU_MAX_IN 9

/* A node compiled for the device. Read-only after prepare: executions share it. */
typedef struct npu_kernel {
    loom_op_id op;
    npu_mode mode;
    uint32_t n_in, n_out;
    loom_tensor_desc in[NPU_MAX_IN], out[2];
    int in_present[NPU_MAX_IN];
    /* Conv, pools: 2-D windows */
    int64_t k[2], stride[2], dil[2], pad[4], group;
    int count_include_pad;
    /* Gemm */
    float alpha, beta;
    int trans_a, trans_b;
    /* Clip */
    float lo, hi;
    /* Quantize/Dequantize axis */
    int64_t axis;
    /* MoEExpert: its routing column, activation (0 relu, 1 gelu, 2 silu, 3 identity), and the
     * scratch of one token's hidden row */
    int64_t moe_expert;
    int moe_act;
    size_t s_hid;
    /* int8 mode: the weight input (Conv W, MatMul/Gemm B) quantised at prepare time when it is
     * a constant: one symmetric scale per output channel. */
    int w_input;        /* index of the weight input, -1 when none */
    int8_t *wq;         /* quantised constant weights, or NULL (then quantised per run) */
    float *wscale;      /* one per output channel */
    int64_t n_ch;       /* output channels of the weight */
    /* int8 mode: static activation scales (absmax / 127) calibrated by the host from sample
     * inputs (loom_node_desc.input_absmax), one per input; 0 when unknown (then the input is
     * quantised dynamically, from its max-abs at run time). */
    float in_scale[NPU_MAX_IN];
    /* scratch layout: offsets into the scratch area, (size_t)-1 when unused */
    size_t s_in[NPU_MAX_IN], s_out, s_qa, s_qw, s_ws;
    size_t scratch_bytes;
} npu_kernel;

/* fp16 conversion with round-to-nearest-even, independent of the compiler's _Float16. */
uint16_t npu_f32_to_f16(float f);
float npu_f16_to_f32(uint16_t h);
static inline float npu_round_f16(float f)
{
    return npu_f16_to_f32(npu_f32_to_f16(f));
}

static inline int64_t npu_numel(const loom_tensor_desc *d)
{
    return loom_tensor_desc_numel(d);
}

static inline int npu_is_float(loom_dtype t)
{
    return t == LOOM_DTYPE_F32 || t == LOOM_DTYPE_F16;
}

/* Whether input K of NODE is present. */
static inline int npu_input_present(const loom_node_desc *node, uint32_t k)
{
    return k < node->n_inputs && node->inputs[k].dtype != LOOM_DTYPE_UNDEFINED;
}

/* Whether the device takes NODE, and how (into *MODE); else writes REASON and returns 0. */
int npu_check(const loom_node_desc *node, npu_mode *mode, char *reason, size_t reason_len);

/* Arithmetic operations and bytes moved of NODE in MODE, for estimate(). */
void npu_work(const loom_node_desc *node, npu_mode mode, double *flops, double *bytes);

/* Compile NODE (already checked) into K; writes ERR and returns a status on failure. */
loom_status npu_kernel_prepare(const loom_node_desc *node, npu_mode mode, npu_kernel *k,
                               char *err, size_t err_len);
void npu_kernel_free(npu_kernel *k);
loom_status npu_kernel_run(const npu_kernel *k, const loom_exec_args *args, char *err,
                           size_t err_len);


/* Conv's dims from K's shapes: input N, C, H, W, output channels M and spatial OH, OW. */
void npu_conv_out(const npu_kernel *k, int64_t *N, int64_t *C, int64_t *H, int64_t *W,
                  int64_t *M, int64_t *OH, int64_t *OW);

/* The exact integer kernels (npu_kernels_quant.c): K's op run on the buffers of A (inputs
 * checked present by the caller). */
void npu_run_quantize(const npu_kernel *k, const loom_exec_args *a);
void npu_run_dequantize(const npu_kernel *k, const loom_exec_args *a);
void npu_run_qlinear_matmul(const npu_kernel *k, const loom_exec_args *a);
void npu_run_qlinear_conv(const npu_kernel *k, const loom_exec_args *a);

#endif /* LOOM_NPU_SIM_H */
