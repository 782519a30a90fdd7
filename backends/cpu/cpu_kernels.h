/*
 * Inside the CPU backend: the kernel record every op family fills at prepare time, the thread
 * pool kernels split their work over, and the registration functions of the op families.
 * Only include/loom/backend.h is visible from here, exactly as for a third-party plugin.
 *
 * Contract for a kernel family:
 *  - supports(node) is pure and says why not in REASON (dtype, rank, attribute it lacks);
 *  - prepare(node, k) is called only for a node its supports() accepted (cpu_backend.c checks,
 *    once), so it does not check again; it reads the node's canonical attributes (graph/ops.h documents them), sets
 *    k->run and k->params (freed with k->free_params, or plain free() when that is NULL) and
 *    k->scratch_bytes; k->in/k->out already hold copies of the node's descriptors;
 *  - run() must not allocate or lock: everything it needs was sized at prepare time, and
 *    temporary memory comes from args->scratch. It may call cpu_parallel_for.
 */
#ifndef LOOM_CPU_KERNELS_H
#define LOOM_CPU_KERNELS_H

#include <loom/backend.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct cpu_pool cpu_pool;

/* Split [0, N) into chunks of at least GRAIN items and call FN(ARG, begin, end) on each, across
 * the pool's threads and the calling thread; returns when all are done. Runs everything on the
 * calling thread when N <= GRAIN, when the pool has one thread, or when another run is using the
 * pool at this moment (never blocks waiting for it). POOL may be NULL (serial). */
void cpu_parallel_for(cpu_pool *pool, size_t n, size_t grain,
                      void (*fn)(void *arg, size_t begin, size_t end), void *arg);

/* Number of threads (the caller included) cpu_parallel_for may use. */
unsigned cpu_pool_threads(const cpu_pool *pool);

typedef struct cpu_kernel cpu_kernel;

/* Runs one prepared node. Returns LOOM_OK, or an error with a message in ERR (e.g. a Gather
 * index out of range). */
typedef loom_status (*cpu_run_fn)(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                                  char *err, size_t err_len);

struct cpu_kernel {
    cpu_run_fn run;
    loom_op_id op;
    uint32_t n_in, n_out;
    loom_tensor_desc *in;  /* n_in copies of the node's input descriptors */
    loom_tensor_desc *out; /* n_out copies */
    size_t scratch_bytes;  /* set by prepare when run needs args->scratch */
    void *params;          /* op-specific, owned by the kernel */
    void (*free_params)(void *params); /* NULL: free(params) */
};

/* Frees what K owns (its params, with free_params when set, and its in/out descriptors) but not
 * K itself, which may be embedded in another record; K's pointers may be NULL. Used for the
 * backend's own handles and for the inner kernels of compiled chains (cpu_backend.c). */
void cpu_kernel_release(cpu_kernel *k);

typedef int (*cpu_supports_fn)(const loom_node_desc *node, char *reason, size_t reason_len);
typedef loom_status (*cpu_prepare_fn)(const loom_node_desc *node, cpu_kernel *k, char *err,
                                      size_t err_len);

typedef struct cpu_op_entry {
    cpu_supports_fn supports;
    cpu_prepare_fn prepare;
} cpu_op_entry;

/* Size of the table the families register into: one entry per loom_op_id. */
#define CPU_OP_TABLE_SIZE 256

/* Each family (backends/cpu/kernels_<family>.c) sets the entries of the ops it implements. */
/* kernels_elementwise.c: Relu ... Log, Add ... Max, Pow, Clip, Where, Cast, Expand, Identity */
void cpu_register_elementwise(cpu_op_entry *table);
/* kernels_compare_logic_round.c: Equal ... GreaterOrEqual, And, Or, Xor, Not, Floor, Ceil, Round,
 * Reciprocal, Sign, Sin, Cos, HardSigmoid, HardSwish, Softplus, Elu, Selu, Sum, Mean */
void cpu_register_compare_logic_round(cpu_op_entry *table);
/* kernels_activations.c: Softmax, LogSoftmax, PRelu */
void cpu_register_activations(cpu_op_entry *table);
/* kernels_normalization.c: LayerNormalization, BatchNormalization, InstanceNormalization,
 * LRN, MeanVarianceNormalization */
void cpu_register_normalization(cpu_op_entry *table);
/* kernels_reductions.c: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1,
 * ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare, ArgMax, ArgMin */
void cpu_register_reductions(cpu_op_entry *table);
/* kernels_linalg.c: MatMul, Gemm, Einsum, Det */
void cpu_register_linalg(cpu_op_entry *table);
/* kernels_fused_gemm.c: FusedMatMul, FusedGemm (linalg's kernels + the epilogue) */
void cpu_register_fused_gemm(cpu_op_entry *table);
/* kernels_conv.c: Conv, FusedConv, ConvTranspose (kernels_conv_depthwise.c: depthwise Conv) */
void cpu_register_conv(cpu_op_entry *table);
/* kernels_pooling.c: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, MaxUnpool */
void cpu_register_pooling(cpu_op_entry *table);
/* kernels_layout.c: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Slice, Concat, Split, Pad,
 * Tile */
void cpu_register_layout(cpu_op_entry *table);
/* kernels_indexing.c: Gather, GatherElements, ScatterElements, TopK */
void cpu_register_indexing(cpu_op_entry *table);
/* kernels_resize.c: Resize */
void cpu_register_resize(cpu_op_entry *table);
/* kernels_recurrent.c: LSTM, GRU, RNN */
void cpu_register_recurrent(cpu_op_entry *table);
/* kernels_generators.c: Shape, ConstantOfShape, Range, HannWindow, HammingWindow,
 * BlackmanWindow */
void cpu_register_generators(cpu_op_entry *table);
/* kernels_dropout.c: Dropout (inference and training) */
void cpu_register_dropout(cpu_op_entry *table);
/* kernels_loss.c: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss */
void cpu_register_loss(cpu_op_entry *table);
/* kernels_math.c: Tan ... Atanh, Softsign, ThresholdedRelu, Shrink, Celu, IsNaN, IsInf, Mod,
 * BitShift */
void cpu_register_math(cpu_op_entry *table);
/* kernels_tensor.c: Trilu, CumSum, Hardmax, DepthToSpace, SpaceToDepth, EyeLike, OneHot,
 * GatherND, ScatterND, ReverseSequence */
void cpu_register_tensor(cpu_op_entry *table);
/* kernels_sampling.c: GridSample, RoiAlign */
void cpu_register_sampling(cpu_op_entry *table);
/* kernels_quantization.c: QuantizeLinear, DequantizeLinear, MatMulInteger, QLinearMatMul,
 * QLinearConv, ConvInteger, DynamicQuantizeLinear */
void cpu_register_quantization(cpu_op_entry *table);
/* kernels_int8_gemm.c: MatMulInt8Dynamic (AVX-512 VNNI, portable fallback) */
void cpu_register_int8_gemm(cpu_op_entry *table);

/* The u8 x s8 GEMM of kernels_int8_gemm.c for other kernels (QLinearConv, ConvInteger): B
 * int8 [K x N] packed once, A uint8 rows quantised by the caller. */
typedef struct i8g_params cpu_int8_packed;
/* Pack B, element (k, n) at B[k * LDK + n * LDN]; the ISA is chosen here (VNNI, or portable
 * with LOOM_CPU_NO_VNNI=1). Returns NULL when out of memory; free with cpu_int8_packed_free. */
cpu_int8_packed *cpu_int8_pack(const int8_t *b, int64_t k, int64_t n, int64_t ldk, int64_t ldn);
void cpu_int8_packed_free(cpu_int8_packed *p);
/* Bytes per row of A: K rounded up to 4; the bytes past K must hold A_ZP. */
int64_t cpu_int8_row_bytes(const cpu_int8_packed *p);
/* C[r][n] (row stride LDC) = sum_k (A[r][k] - A_ZP) * B[k][n], exact in int32, for ROWS rows of
 * A (row stride cpu_int8_row_bytes). Runs on the calling thread. */
void cpu_int8_gemm_i32(const cpu_int8_packed *p, const uint8_t *a, int64_t rows, int32_t a_zp,
                       int32_t *c, int64_t ldc);
/* kernels_moe.c: MoE (sparse: each expert's FFN on the tokens routed to it only), and the
 * pieces of a split MoE: MoERoute, MoEExpert */
void cpu_register_moe(cpu_op_entry *table);

/* Helpers shared by families (cpu_util.c). */
int cpu_reason(char *reason, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
loom_status cpu_fail(char *err, size_t len, loom_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Name of a dtype in messages ("float32"). */
const char *cpu_dtype_name(loom_dtype t);
/* Whether input I of NODE was given (not an absent optional input). */
int cpu_present(const loom_node_desc *node, uint32_t i);
/* The same for input I of a prepared kernel K. */
int cpu_kernel_present(const cpu_kernel *k, uint32_t i);
/* Writes "<op>: dtype <t> has no CPU kernel (only ONLY)" into REASON; returns 0 (unsupported). */
int cpu_no_dtype(const loom_node_desc *node, loom_dtype t, const char *only, char *reason,
                 size_t len);
/* Writes "<op>: out of memory" into ERR; returns LOOM_ERR_OUT_OF_MEMORY. */
loom_status cpu_oom(const loom_node_desc *node, char *err, size_t len);
/* Elements of work per parallel chunk: below this a node runs on the calling thread. */
#define CPU_GRAIN 16384
/* Items per cpu_parallel_for chunk when each item is WORK_PER_ITEM elements of work: GRAIN /
 * work, at least 1 (GRAIN when the work is unknown, <= 0). cpu_grain() uses CPU_GRAIN. */
size_t cpu_grain_items(int64_t work_per_item, size_t grain);
size_t cpu_grain(int64_t work_per_item);
/* Work, in bytes moved, worth handing to a thread as one chunk, and the items per chunk when
 * each item moves BYTES_PER_ITEM bytes (at least 1). */
#define CPU_CHUNK_BYTES ((size_t)32 << 10)
size_t cpu_grain_bytes(size_t bytes_per_item);
/* The least work, in multiply-adds, worth handing to a thread as one chunk. */
#define CPU_CHUNK_MACS (32.0 * 1024.0)
/* Whether V is in [0, INT_MAX] (a BLAS dimension). */
int cpu_fits_int(int64_t v);
/* Whether T is float32, int32 or int64. */
int cpu_is_f32_i32_i64(loom_dtype t);
/* Copies the ints attribute NAME of NODE into OUT when it holds exactly COUNT values; returns 1,
 * else 0 (OUT untouched). */
int cpu_get_ints(const loom_node_desc *node, const char *name, size_t count, int64_t *out);
/* The string attribute NAME of NODE (owned by the node), or DEF when absent. */
const char *cpu_str_attr(const loom_node_desc *node, const char *name, const char *def);
/* Outputs o in [0, N_OUT) with 0 <= o * STRIDE + OFF < N_IN lie in [*LO, *HI). */
void cpu_valid_range(int64_t off, int64_t stride, int64_t n_in, int64_t n_out, int64_t *lo,
                     int64_t *hi);
/* The canonical window attributes of Conv and pooling over S spatial dims (kernel_shape,
 * strides, dilations, pads), checked for sizes the loops can use; 0 with REASON when not. */
int cpu_window_attrs_ok(const loom_node_desc *node, size_t s, char *reason, size_t len);
/* C[m, n] (ldc) = op(A) * op(B) + beta * C, row-major, one single-threaded cpu_blas_sgemm; K == 0
 * gives beta * C (zeros when beta is 0). */
void cpu_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
               const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
/* LayerNormalization's statistics of one row X[0..N) (N > 0), as its kernel computes them
 * (kernels_normalization.c: two passes): *MEAN and *INV = 1 / sqrt(variance + EPS). */
void cpu_layernorm_stats(const float *x, size_t n, float eps, float *mean, float *inv);
/* Softmax's exponent sum (kernels_activations.c): Y[i] = e^(X[i] - M) for i < N, returns their
 * sum (float partial sums per chunk of 1024 elements, the chunks' totals added in double, so any
 * caller matches the Softmax kernel bit for bit). Y may be X (in place); otherwise the two must
 * not overlap. */
double cpu_exp_sum_f32(float *y, const float *x, size_t n, float m);
/* Max of X[0..N) that lets a NaN win (CPU_MAXF); -inf when N is 0. */
float cpu_max_f32(const float *restrict x, size_t n);
int cpu_same_shape(const loom_tensor_desc *a, const loom_tensor_desc *b);
/* Whether IN broadcasts (ONNX, right-aligned) to OUT. */
int cpu_broadcasts_to(const loom_tensor_desc *in, const loom_tensor_desc *out);
/* Product of DIMS[FROM..TO). */
int64_t cpu_prod(const int64_t *dims, uint32_t from, uint32_t to);
/* f16 and bf16 conversions (round to nearest even). */
float cpu_f16_to_f32(uint16_t h);
uint16_t cpu_f32_to_f16(float f);
float cpu_bf16_to_f32(uint16_t h);
uint16_t cpu_f32_to_bf16(float f);
/* Copy N bytes; element-sized copies (1, 2, 4, 8) avoid a call. */
static inline void cpu_copy_bytes(void *dst, const void *src, size_t n)
{
    switch (n) {
    case 1: *(uint8_t *)dst = *(const uint8_t *)src; break;
    case 2: memcpy(dst, src, 2); break;
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    default: memcpy(dst, src, n);
    }
}

#endif /* LOOM_CPU_KERNELS_H */
