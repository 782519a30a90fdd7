/*
 * The OpenCL backend's operator families and the helpers they share. The op table
 * (ocl_kernels.c: ocl_kernels_supports, ocl_kernels_prepare) sends each op to its family:
 *   ocl_kernels_elementwise.c  unary and binary elementwise ops (IsNaN, IsInf, Mod and
 *                              BitShift among them), Where, Cast
 *   ocl_kernels_layout.c       Identity/Reshape family, Transpose, Expand, Slice, Concat, Split,
 *                              Gather
 *   ocl_kernels_reduce.c       Softmax, LogSoftmax, Layer/BatchNormalization, Reduce* (all ten),
 *                              GlobalAveragePool, MaxPool, AveragePool
 *   ocl_kernels_gemm.c         MatMul, Gemm, Conv (CLBlast)
 *   ocl_kernels_scan.c         Trilu, CumSum
 *   ocl_kernels_indexing.c     GatherElements, ScatterElements, GatherND, ScatterND
 * A family's supports(NODE, REASON, LEN) returns 1, or 0 with a one-line reason (ocl_reason);
 * its prepare fills K (whose common fields the caller set) and returns LOOM_OK or a message in
 * ERR. Not a public header.
 */
#ifndef LOOM_OCL_KERNELS_H
#define LOOM_OCL_KERNELS_H

#include "ocl_internal.h"

/* Set argument I of KER to V inside a run function (R in scope); returns on failure. */
#define ARG(ker, i, v)                                                                             \
    do {                                                                                           \
        if (ocl_arg(r, ker, (cl_uint)(i), sizeof(v), &(v)))                                        \
            return LOOM_ERR_INTERNAL;                                                              \
    } while (0)

/* ---- small helpers --------------------------------------------------------------------------- */

static inline int64_t ocl_numel(const loom_tensor_desc *t)
{
    return loom_tensor_desc_numel(t);
}

static inline size_t ocl_esize(loom_dtype dt)
{
    return loom_dtype_size(dt);
}

/* Element offset of B for elements of size ES. */
static inline cl_ulong ocl_eoff(ocl_buf b, size_t es)
{
    return (cl_ulong)(b.off / es);
}

static inline int ocl_same_shape(const loom_tensor_desc *a, const loom_tensor_desc *b)
{
    if (a->rank != b->rank)
        return 0;
    for (uint32_t d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d])
            return 0;
    return 1;
}

static inline int ocl_is_float(loom_dtype dt)
{
    return dt == LOOM_DTYPE_F32 || dt == LOOM_DTYPE_F16;
}

/* Whether input I of NODE is present. */
static inline int ocl_has_in(const loom_node_desc *node, uint32_t i)
{
    return i < node->n_inputs && node->inputs[i].dtype != LOOM_DTYPE_UNDEFINED;
}

static inline int ocl_is_const(const loom_node_desc *node, uint32_t i)
{
    return node->input_constants && i < node->n_inputs && node->input_constants[i];
}

/* Only the first output is produced: the others must be absent. */
static inline int ocl_one_output(const loom_node_desc *node)
{
    for (uint32_t i = 1; i < node->n_outputs; i++)
        if (node->outputs[i].dtype != LOOM_DTYPE_UNDEFINED)
            return 0;
    return node->n_outputs >= 1;
}

/* Index of an element size among the sized kernels (OCL_K_COPY_1 + i ...): 1, 2, 4, 8 bytes
 * give 0..3, anything else -1. */
static inline int ocl_size_index(size_t es)
{
    return es == 1 ? 0 : es == 2 ? 1 : es == 4 ? 2 : es == 8 ? 3 : -1;
}

/* Whether D is a CPU device (PoCL and the like): there every work-group costs a scheduling
 * step of microseconds, so kernels get a few large groups instead of one per row. */
static inline int ocl_cpu_like(const ocl_device *d)
{
    return d->cpu_layout;
}

/* ---- shared helpers (ocl_kernels.c) ---------------------------------------------------------- */

/* Write "opencl: node 'NAME' (OP): <message>" into ERR and return ST (for prepare). */
loom_status ocl_kfail(char *err, size_t len, loom_status st, const loom_node_desc *node,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Upload N int64 values as K's shape table (META, or META2 when SECOND); K owns the buffer.
 * LOOM_ERR_OUT_OF_MEMORY with a message in ERR when the buffer cannot be made. */
loom_status ocl_put_meta(ocl_state *s, ocl_device *d, ocl_kernel *k, const int64_t *v, size_t n,
                         int second, char *err, size_t len);

/* Strides (elements) of IN read as OUT's shape under numpy broadcasting (right-aligned) into
 * ST[OUT->rank]. */
void ocl_bcast_strides(const loom_tensor_desc *in, const loom_tensor_desc *out, int64_t *st);

/* Row-major strides (elements) of T into ST[T->rank]. */
void ocl_contiguous_strides(const loom_tensor_desc *t, int64_t *st);

/* The work-group size for KER on D: at most CAP, the kernel's and the device's limits. */
size_t ocl_kernel_local(const ocl_device *d, cl_kernel ker, size_t cap);

/* The largest power of two <= the limits of KER on D (and CAP) that is not above WANT's next
 * power of two (1 on a CPU device). */
size_t ocl_row_local(const ocl_device *d, cl_kernel ker, int64_t want, size_t cap);

/* Work-groups for a kernel whose groups loop over ROWS rows: a row per group on a GPU (up to 64
 * per compute unit), four groups per compute unit on a CPU device. At least 1. */
size_t ocl_row_groups(const ocl_device *d, int64_t rows);

/* Whether a windowed op (pool, or Conv when CONV) fits the kernels: f32, one output, 1 to 3
 * spatial dims (1 or 2 for Conv). */
int ocl_window_supports(const loom_node_desc *node, char *reason, size_t len, int conv);

/* Spatial attribute NAME of NODE padded in front to 3 dims with FILL into OUT3; for pads,
 * WHICH_HALF 0 reads the begins and 1 the ends. */
void ocl_spatial3(const loom_node_desc *node, const char *name, int64_t fill, int64_t *out3,
                  int which_half);

/* ---- families -------------------------------------------------------------------------------- */

/* ocl_kernels_elementwise.c */
int ocl_unary_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_unary_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                              ocl_kernel *k, char *err, size_t len);
int ocl_binary_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_binary_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                               ocl_kernel *k, char *err, size_t len);
int ocl_where_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_where_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                              ocl_kernel *k, char *err, size_t len);
int ocl_cast_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_cast_prepare(const loom_node_desc *node, ocl_kernel *k);

/* ocl_kernels_layout.c */
int ocl_copy_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_copy_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                             ocl_kernel *k, char *err, size_t len);
int ocl_gather_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_gather_prepare(const loom_node_desc *node, ocl_kernel *k, char *err, size_t len);

/* ocl_kernels_reduce.c: Softmax, LogSoftmax, LayerNormalization, BatchNormalization (norm);
 * Reduce* and GlobalAveragePool (reduce); MaxPool, AveragePool (pool; supports is
 * ocl_window_supports). */
int ocl_norm_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_norm_prepare(ocl_device *d, const loom_node_desc *node, ocl_kernel *k);
int ocl_reduce_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_reduce_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                               ocl_kernel *k, char *err, size_t len);
loom_status ocl_pool_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                             ocl_kernel *k, char *err, size_t len);

/* ocl_kernels_gemm.c */
/* ocl_kernels_int8.c: MatMulInt8Dynamic (symmetric per-row activations) */
int ocl_int8_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_int8_prepare(ocl_device *d, const loom_node_desc *node, ocl_kernel *k);

int ocl_matmul_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_matmul_prepare(const loom_node_desc *node, ocl_kernel *k, char *err, size_t len);
int ocl_gemm_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_gemm_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                             ocl_kernel *k, char *err, size_t len);
int ocl_conv_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_conv_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                             ocl_kernel *k, char *err, size_t len);

/* ocl_kernels_moe.c: MoEExpert (one expert of a split MoE) */
int ocl_moe_expert_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_moe_expert_prepare(const loom_node_desc *node, ocl_kernel *k);

/* ocl_kernels_scan.c: Trilu (any element size), CumSum (f32, i32, i64; constant or computed
 * axis) */
int ocl_trilu_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_trilu_prepare(const loom_node_desc *node, ocl_kernel *k);
int ocl_cumsum_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_cumsum_prepare(const loom_node_desc *node, ocl_kernel *k);

/* ocl_kernels_indexing.c: GatherElements and ScatterElements (elements), GatherND and ScatterND
 * (nd); moves of any element size, reductions in f32, i32, i64. Prepare fails with
 * LOOM_ERR_INVALID_ARGUMENT naming a constant index out of range. */
int ocl_elements_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_elements_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                                 ocl_kernel *k, char *err, size_t len);
int ocl_nd_supports(const loom_node_desc *node, char *reason, size_t len);
loom_status ocl_nd_prepare(ocl_state *s, ocl_device *d, const loom_node_desc *node,
                           ocl_kernel *k, char *err, size_t len);

#endif /* LOOM_OCL_KERNELS_H */
