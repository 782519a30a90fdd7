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

typedef int (*cpu_supports_fn)(const loom_node_desc *node, char *reason, size_t reason_len);
typedef loom_status (*cpu_prepare_fn)(const loom_node_desc *node, cpu_kernel *k, char *err,
                                      size_t err_len);

typedef struct cpu_op_entry {
    cpu_supports_fn supports;
    cpu_prepare_fn prepare;
} cpu_op_entry;

/* Size of the table the families register into: one entry per loom_op_id. */
#define CPU_OP_TABLE_SIZE 256

/* Each family sets the entries of the ops it implements. */
void cpu_register_elementwise(cpu_op_entry *table); /* unary, binary, Clip, Where, Cast, Expand,
                                                       Identity */
void cpu_register_normalize(cpu_op_entry *table);   /* Softmax, LayerNorm, BatchNorm, Reduce* */
void cpu_register_linalg(cpu_op_entry *table);      /* MatMul, Gemm, Conv, pooling */
void cpu_register_layout(cpu_op_entry *table);      /* Reshape, Transpose, Flatten, Concat, Split,
                                                       Slice, Gather, Squeeze, Unsqueeze */
void cpu_register_nn2(cpu_op_entry *table);         /* ABI 0.2: ConvTranspose, Resize, Pad, Tile,
                                                       Einsum, InstanceNorm, LSTM, GRU, TopK,
                                                       ArgMax/Min, Scatter/GatherElements, ... */
void cpu_register_compare_logic_round(cpu_op_entry *table); /* comparisons, logic, rounding,
                                                       HardSigmoid ... Selu, Sum, Mean */
void cpu_register_generators(cpu_op_entry *table);  /* Shape, ConstantOfShape, Range, Dropout */
void cpu_register_quantization(cpu_op_entry *table); /* QuantizeLinear, DequantizeLinear,
                                                       MatMulInteger, QLinearMatMul, QLinearConv */

/* Helpers shared by families (cpu_util.c). */
int cpu_reason(char *reason, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
loom_status cpu_fail(char *err, size_t len, loom_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Name of a dtype in messages ("float32"). */
const char *cpu_dtype_name(loom_dtype t);
/* Whether input I of NODE was given (not an absent optional input). */
int cpu_present(const loom_node_desc *node, uint32_t i);
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

#endif /* LOOM_CPU_KERNELS_H */
