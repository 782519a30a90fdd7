/*
 * The backend ABI of Loom: the one table of functions through which the host talks to every
 * device backend, built in (cpu) or loaded from a plugin. This header stands alone (it needs only
 * <stdint.h> and <stddef.h>) so that a vendor can build a backend against it and nothing else.
 *
 * Rules that keep the ABI stable:
 *  - every table and struct that crosses the boundary starts with abi_version and struct_size and
 *    only ever grows at its end; a NULL function slot means "optional, use the host's default";
 *  - operator identifiers (loom_op_id) and dtypes (loom_dtype) are append-only;
 *  - memory and messages never cross the boundary to be freed on the other side: each side frees
 *    what it allocated, and error texts are written into caller-provided buffers.
 *
 * Versions: 0.1 was the foundation's shape (synchronous execute on host-visible memory); 0.2
 * added precision, calibration, estimate() and asynchronous submit(); 0.3 adds device memory
 * the host cannot address (upload/download) and more device facts; 0.4 adds operator ids only
 * (MatMulInt8Dynamic): a 0.3 plugin never sees them unless it claims them.
 *
 * 1.0 is the first stable version: semantic versioning from here on (a 1.y host loads every
 * 1.x plugin, older minors included; new minors only append). It appends subgraph claims and
 * their compilation (claim, prepare_subgraph), the 1.0 submission with a message buffer
 * (enqueue), events between queues, asynchronous and peer copies, pinned host staging
 * buffers, a free-memory query, and per-plugin options. A 1.x host still loads 0.x plugins
 * through an adapter: their tables are prefixes of the 1.0 table (they only ever grew at the
 * end), so the host treats every slot past their struct_size as absent. Plugins of any other
 * major version are refused with a message naming both versions. Appended to 1.0 since, found
 * through struct_size (LOOM_*_HAS_DEVICE_CONSTANTS): constants the host keeps on a device and
 * shares between kernels (loom_device_info.device_constants, input_device_constants).
 */
#ifndef LOOM_BACKEND_H
#define LOOM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOOM_ABI_VERSION_MAJOR 1u
#define LOOM_ABI_VERSION_MINOR 0u
/* Packed as (major << 16) | minor in every abi_version field. */
#define LOOM_ABI_VERSION ((LOOM_ABI_VERSION_MAJOR << 16) | LOOM_ABI_VERSION_MINOR)
/* The last 0.x version, which a 1.x host offers (as HOST_ABI_VERSION of loom_backend_query) to
 * a plugin that refused the 1.x version: a 0.x plugin accepts it and is run through the
 * adapter. A plugin built for 1.x never needs it. */
#define LOOM_ABI_VERSION_0_COMPAT ((0u << 16) | 4u)

/* Largest tensor rank Loom handles. */
#define LOOM_MAX_RANK 8

/* Every fallible call returns one of these; loom_last_error() (loom/graph.h) adds the details.
 * Part of the ABI: append-only. A backend that returns a value outside this enum is a bug in the
 * backend: the host turns it into LOOM_ERR_DEVICE_LOST and keeps the plugin's number in the
 * message ("returned status 77, not a loom_status"). */
typedef enum loom_status {
    LOOM_OK = 0,
    LOOM_ERR_INVALID_ARGUMENT = 1, /* the caller passed something malformed */
    LOOM_ERR_UNSUPPORTED = 2,      /* valid, but no device or kernel can do it */
    LOOM_ERR_OUT_OF_MEMORY = 3,    /* host or device memory exhausted */
    LOOM_ERR_DEVICE_LOST = 4,      /* a device or plugin failed while working */
    LOOM_ERR_IO = 5,               /* a file could not be read or written */
    LOOM_ERR_INTERNAL = 6,         /* a bug in Loom: please report it */
} loom_status;

/* Element types. The numbering is ONNX's TensorProto.DataType, so importers map them 1:1.
 * Part of the ABI: append-only. */
typedef enum loom_dtype {
    LOOM_DTYPE_UNDEFINED = 0,
    LOOM_DTYPE_F32 = 1,
    LOOM_DTYPE_U8 = 2,
    LOOM_DTYPE_I8 = 3,
    LOOM_DTYPE_I32 = 6,
    LOOM_DTYPE_I64 = 7,
    LOOM_DTYPE_BOOL = 9, /* one byte per element, 0 or 1 */
    LOOM_DTYPE_F16 = 10,
    LOOM_DTYPE_BF16 = 16,
    /* Appended (issue 13): the remaining ONNX numeric types, mostly for storage and data
     * movement; which kernels compute in them is each backend's supports() answer. */
    LOOM_DTYPE_U16 = 4,
    LOOM_DTYPE_I16 = 5,
    LOOM_DTYPE_F64 = 11,
    LOOM_DTYPE_U32 = 12,
    LOOM_DTYPE_U64 = 13,
} loom_dtype;

/* Operator identifiers. Part of the ABI: append-only, never renumbered. The semantics are ONNX's
 * (opset 18) unless the operator registry (graph/ops.h) says otherwise. */
typedef enum loom_op_id {
    LOOM_OP_INVALID = 0,
    LOOM_OP_MATMUL = 1,
    LOOM_OP_GEMM = 2,
    LOOM_OP_CONV = 3,
    LOOM_OP_RELU = 4,
    LOOM_OP_LEAKY_RELU = 5,
    LOOM_OP_SIGMOID = 6,
    LOOM_OP_TANH = 7,
    LOOM_OP_ERF = 8,
    LOOM_OP_GELU = 9,
    LOOM_OP_ADD = 10,
    LOOM_OP_SUB = 11,
    LOOM_OP_MUL = 12,
    LOOM_OP_DIV = 13,
    LOOM_OP_POW = 14,
    LOOM_OP_SQRT = 15,
    LOOM_OP_EXP = 16,
    LOOM_OP_LOG = 17,
    LOOM_OP_NEG = 18,
    LOOM_OP_ABS = 19,
    LOOM_OP_MIN = 20,
    LOOM_OP_MAX = 21,
    LOOM_OP_CLIP = 22,
    LOOM_OP_SOFTMAX = 23,
    LOOM_OP_LAYER_NORMALIZATION = 24,
    LOOM_OP_BATCH_NORMALIZATION = 25,
    LOOM_OP_MAX_POOL = 26,
    LOOM_OP_AVERAGE_POOL = 27,
    LOOM_OP_GLOBAL_AVERAGE_POOL = 28,
    LOOM_OP_RESHAPE = 29,
    LOOM_OP_TRANSPOSE = 30,
    LOOM_OP_FLATTEN = 31,
    LOOM_OP_CONCAT = 32,
    LOOM_OP_SPLIT = 33,
    LOOM_OP_SLICE = 34,
    LOOM_OP_GATHER = 35,
    LOOM_OP_SQUEEZE = 36,
    LOOM_OP_UNSQUEEZE = 37,
    LOOM_OP_REDUCE_MEAN = 38,
    LOOM_OP_REDUCE_SUM = 39,
    LOOM_OP_REDUCE_MAX = 40,
    LOOM_OP_CAST = 41,
    LOOM_OP_IDENTITY = 42,
    LOOM_OP_WHERE = 43,
    LOOM_OP_EXPAND = 44,
    LOOM_OP_COUNT_V0_1, /* one past the last id of ABI 0.1; not itself an operator */
    /* ABI 0.2: the ONNX import set */
    LOOM_OP_CONV_TRANSPOSE = 45,
    LOOM_OP_RESIZE = 46,
    LOOM_OP_PAD = 47,
    LOOM_OP_HARD_SIGMOID = 48,
    LOOM_OP_HARD_SWISH = 49,
    LOOM_OP_RECIPROCAL = 50,
    LOOM_OP_FLOOR = 51,
    LOOM_OP_CEIL = 52,
    LOOM_OP_ROUND = 53,
    LOOM_OP_NOT = 54,
    LOOM_OP_AND = 55,
    LOOM_OP_OR = 56,
    LOOM_OP_EQUAL = 57,
    LOOM_OP_LESS = 58,
    LOOM_OP_GREATER = 59,
    LOOM_OP_SHAPE = 60,
    LOOM_OP_CONSTANT_OF_SHAPE = 61,
    LOOM_OP_RANGE = 62,
    LOOM_OP_TILE = 63,
    LOOM_OP_ARG_MAX = 64,
    LOOM_OP_TOP_K = 65,
    LOOM_OP_SCATTER_ELEMENTS = 66,
    LOOM_OP_GATHER_ELEMENTS = 67,
    LOOM_OP_EINSUM = 68,
    LOOM_OP_INSTANCE_NORMALIZATION = 69,
    LOOM_OP_DROPOUT = 70,
    LOOM_OP_SUM = 71,
    LOOM_OP_MEAN = 72,
    LOOM_OP_LSTM = 73,
    LOOM_OP_GRU = 74,
    LOOM_OP_QUANTIZE_LINEAR = 75,
    LOOM_OP_DEQUANTIZE_LINEAR = 76,
    LOOM_OP_MAT_MUL_INTEGER = 77,
    LOOM_OP_QLINEAR_MAT_MUL = 78,
    LOOM_OP_QLINEAR_CONV = 79,
    LOOM_OP_LESS_OR_EQUAL = 80,
    LOOM_OP_GREATER_OR_EQUAL = 81,
    LOOM_OP_XOR = 82,
    LOOM_OP_ARG_MIN = 83,
    LOOM_OP_REDUCE_MIN = 84,
    LOOM_OP_REDUCE_PROD = 85,
    LOOM_OP_SIN = 86,
    LOOM_OP_COS = 87,
    LOOM_OP_SOFTPLUS = 88,
    LOOM_OP_ELU = 89,
    LOOM_OP_PRELU = 90,
    LOOM_OP_SELU = 91,
    LOOM_OP_LOG_SOFTMAX = 92,
    LOOM_OP_SIGN = 93,
    LOOM_OP_COUNT_V0_2, /* one past the last id of ABI 0.2 */
    /* ---- ABI 0.4 ---- */
    /* Loom's own (not ONNX): Y[.., N] = dequant(quant_rows(A[.., K]) x B[K, N]) + bias, with B
     * int8 per output column (scale[N]), each row of A quantised on the fly, int32 sums. What
     * the int8-dynamic pass turns MatMul/Gemm with constant weights into. */
    LOOM_OP_MAT_MUL_INT8_DYNAMIC = 94,
    LOOM_OP_DYNAMIC_QUANTIZE_LINEAR = 95,
    /* Mixture of Experts, ONNX Runtime's com.microsoft MoE (graph/ops_moe.c documents it): router
     * logits -> softmax -> top-k experts per token -> each expert's FFN on its tokens only. */
    LOOM_OP_MOE = 96,
    /* Loom's own, made by the fuse_epilogue pass (graph/ops_fused.c documents them): Conv, MatMul
     * and Gemm with their epilogue, Y = act(op(...) + bias + Z): an optional residual input Z
     * (input 3) and the string attribute activation. A backend that does not claim them never
     * sees an epilogue it would ignore. */
    LOOM_OP_FUSED_CONV = 97,
    LOOM_OP_FUSED_MAT_MUL = 98,
    LOOM_OP_FUSED_GEMM = 99,
    /* ONNX operators (issue 13, operator coverage) */
    LOOM_OP_NEGATIVE_LOG_LIKELIHOOD_LOSS = 100,
    LOOM_OP_SOFTMAX_CROSS_ENTROPY_LOSS = 101,
    LOOM_OP_REDUCE_L1 = 102,
    LOOM_OP_REDUCE_L2 = 103,
    LOOM_OP_REDUCE_LOG_SUM = 104,
    LOOM_OP_REDUCE_LOG_SUM_EXP = 105,
    LOOM_OP_REDUCE_SUM_SQUARE = 106,
    LOOM_OP_TAN = 107,
    LOOM_OP_ASIN = 108,
    LOOM_OP_ACOS = 109,
    LOOM_OP_ATAN = 110,
    LOOM_OP_SINH = 111,
    LOOM_OP_COSH = 112,
    LOOM_OP_ASINH = 113,
    LOOM_OP_ACOSH = 114,
    LOOM_OP_ATANH = 115,
    LOOM_OP_SOFTSIGN = 116,
    LOOM_OP_THRESHOLDED_RELU = 117,
    LOOM_OP_SHRINK = 118,
    LOOM_OP_CELU = 119,
    LOOM_OP_IS_NAN = 120,
    LOOM_OP_IS_INF = 121,
    LOOM_OP_MOD = 122,
    LOOM_OP_BIT_SHIFT = 123,
    LOOM_OP_TRILU = 124,
    LOOM_OP_CUM_SUM = 125,
    LOOM_OP_HARDMAX = 126,
    LOOM_OP_DEPTH_TO_SPACE = 127,
    LOOM_OP_SPACE_TO_DEPTH = 128,
    LOOM_OP_EYE_LIKE = 129,
    LOOM_OP_ONE_HOT = 130,
    LOOM_OP_GATHER_ND = 131,
    LOOM_OP_SCATTER_ND = 132,
    LOOM_OP_CONV_INTEGER = 133,
    LOOM_OP_GRID_SAMPLE = 134, /* graph/ops_sampling.c */
    /* Output shape depends on input values (graph/ops_value_dependent.c): loom_model runs them
     * on the host between stages; a backend is never offered them. */
    LOOM_OP_NON_ZERO = 135,
    LOOM_OP_COMPRESS = 136,
    LOOM_OP_UNIQUE = 137,
    LOOM_OP_NON_MAX_SUPPRESSION = 138,
    LOOM_OP_RNN = 139, /* issue 13, helper opsstatic: ops 139-149 */
    LOOM_OP_GLOBAL_MAX_POOL = 140,
    LOOM_OP_LRN = 141,
    LOOM_OP_MAX_UNPOOL = 142,
    LOOM_OP_MEAN_VARIANCE_NORMALIZATION = 143,
    LOOM_OP_DET = 144,
    LOOM_OP_REVERSE_SEQUENCE = 145,
    LOOM_OP_HANN_WINDOW = 146,
    LOOM_OP_HAMMING_WINDOW = 147,
    LOOM_OP_BLACKMAN_WINDOW = 148,
    LOOM_OP_ROI_ALIGN = 149,
    LOOM_OP_MOE_ROUTE = 150,  /* issue 14: a MoE split into placement units */
    LOOM_OP_MOE_EXPERT = 151, /* (graph/ops_moe.c, passes/split_moe_experts.c) */
    LOOM_OP_COUNT_V0_4 /* one past the last id of ABI 0.4 */
} loom_op_id;

/* Kinds of attribute values. */
typedef enum loom_attr_kind {
    LOOM_ATTR_INT = 1,
    LOOM_ATTR_FLOAT = 2,
    LOOM_ATTR_STRING = 3,
    LOOM_ATTR_INTS = 4,
    LOOM_ATTR_FLOATS = 5,
} loom_attr_kind;

/* One named attribute of a node. Which field holds the value depends on kind: i, f, s, or the
 * ints/floats array with count elements. All pointers are borrowed from whoever built the
 * attribute and stay valid for the duration of the call they are passed to (for nodes of a
 * graph: for the life of the graph). */
typedef struct loom_attr {
    const char *name;
    loom_attr_kind kind;
    int64_t i;
    float f;
    const char *s;
    const int64_t *ints;
    const float *floats;
    size_t count;
} loom_attr;

/* Type and shape of a tensor. Dimensions are all known (>= 0) by the time a backend sees them;
 * a dimension of 0 makes an empty tensor. Scalars have rank 0. Layout is dense, C order. */
typedef struct loom_tensor_desc {
    loom_dtype dtype;
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK];
} loom_tensor_desc;

/* A node as a backend sees it: the operator, its checked and canonicalised attributes (defaults
 * filled in and axes made non-negative by the operator registry, as graph/ops.h documents per
 * op), and the type and shape of every input and output. Everything is borrowed from the host
 * and valid only during the call that receives it; a backend copies what it keeps. */
typedef struct loom_node_desc {
    uint32_t abi_version;
    uint32_t struct_size;
    loom_op_id op;
    const char *op_name;    /* "MatMul" */
    const char *name;       /* the node's name in its graph, for messages */
    uint32_t n_inputs;      /* absent optional inputs have dtype LOOM_DTYPE_UNDEFINED */
    uint32_t n_outputs;
    const loom_tensor_desc *inputs;
    const loom_tensor_desc *outputs;
    /* For each input, its data when it is a constant of the graph (weights), else NULL: lets a
     * backend pre-pack weights at prepare time. */
    const void *const *input_constants;
    uint32_t n_attrs;
    const loom_attr *attrs;
    /* ---- ABI 0.2 ---- */
    /* The lowest precision the user accepts for this node's float32 arithmetic (like OpenVINO's
     * inference-precision hint): a backend may claim and compute an f32 node in fp16 or int8
     * only when this allows it. */
    uint32_t precision; /* a loom_precision */
    /* ---- ABI 0.2, appended ---- */
    /* For each input, the largest |value| seen while the host calibrated the plan on sample
     * inputs (loom_plan_options.calibration_inputs, INT8 precision only); NaN or <= 0 when
     * unknown for that input (non-f32 values, absent inputs). NULL when the plan was not
     * calibrated. A backend may derive static int8 scales from it (absmax / 127) instead of
     * quantising activations per run; it copies what it keeps at prepare. */
    const float *input_absmax;
    /* ---- ABI 1.0, appended: constants the host keeps on the device ---- */
    /* For each input, NULL or, when input_constants[i] is a constant the host shares between
     * kernels (a model's weights, read by every shape specialisation of the model), an address
     * in DEV's memory (the start of a block from alloc() on DEV) that already holds exactly the
     * constant's bytes. The host keeps that memory there, unchanged, until every kernel prepared
     * with it is released. A backend that uses it reads the constant from there instead of
     * making a copy of its own; input_constants[i] still points to the host data (to read values
     * or pre-pack at prepare), and at execute the host still passes the host pointer for that
     * input, as for any constant. Given only to devices that set
     * loom_device_info.device_constants, and NULL otherwise (the pointer or every entry). */
    const void *const *input_device_constants;
} loom_node_desc;

/* Precision a user accepts for float32 nodes. */
typedef enum loom_precision {
    LOOM_PRECISION_F32 = 0,  /* exact: f32 arithmetic only (the default) */
    LOOM_PRECISION_F16 = 1,  /* f32 nodes may run in fp16 */
    LOOM_PRECISION_INT8 = 2, /* f32 nodes may run in int8 (scales from weights and activations) */
    /* A plan option, never seen by a backend: MatMul/Gemm with constant f32 weights become
     * MatMulInt8Dynamic nodes (int8 weights per output channel, activations quantised per row at
     * run time); every other node stays f32 (backends see LOOM_PRECISION_F32). */
    LOOM_PRECISION_INT8_DYNAMIC = 3,
} loom_precision;

/* Whether DESC has the ABI 0.2 fields (the host that built it may be older). */
#define LOOM_NODE_DESC_HAS_PRECISION(desc)                                                     \
    ((desc)->struct_size >= offsetof(loom_node_desc, precision) + sizeof(uint32_t))

/* Whether DESC has the input_absmax field (it may still be NULL: not calibrated). */
#define LOOM_NODE_DESC_HAS_ABSMAX(desc)                                                        \
    ((desc)->struct_size >= offsetof(loom_node_desc, input_absmax) + sizeof(const float *))

/* Whether DESC has the input_device_constants field (it may still be NULL). */
#define LOOM_NODE_DESC_HAS_DEVICE_CONSTANTS(desc)                                              \
    ((desc)->struct_size >=                                                                    \
     offsetof(loom_node_desc, input_device_constants) + sizeof(const void *const *))

/* Device categories, as `loom devices` reports them. */
typedef enum loom_device_kind {
    LOOM_DEVICE_CPU = 1,
    LOOM_DEVICE_GPU = 2,
    LOOM_DEVICE_NPU = 3,
    LOOM_DEVICE_OTHER = 4,
} loom_device_kind;

/* Facts about one device, with units. A backend fills what it knows and leaves the rest 0. */
typedef struct loom_device_info {
    uint32_t abi_version;
    uint32_t struct_size;
    char name[128];            /* human-readable, e.g. "AMD EPYC 7B13 (2 cores)" */
    loom_device_kind kind;
    uint32_t compute_units;    /* cores for a CPU, compute units or SMs for a GPU */
    uint32_t threads;          /* hardware threads the backend will use */
    uint64_t memory_bytes;     /* memory the device can allocate from */
    int32_t numa_node;         /* NUMA node of its memory, -1 when unknown or not applicable */
    uint32_t host_visible;     /* 1 when its buffers are ordinary host memory */
    double peak_flops_f32;     /* operations per second, 0 when unknown */
    double mem_bandwidth;      /* bytes per second, 0 when unknown */
    double launch_latency_s;   /* seconds per kernel dispatch, 0 when unknown */
    /* ---- ABI 0.3: fields a backend writes only when struct_size says the host has them ---- */
    double peak_flops_f16;     /* operations per second in fp16, 0 when unknown or absent */
    uint64_t max_alloc_bytes;  /* largest single allocation, 0 when unknown */
    uint64_t local_memory_bytes; /* on-chip memory per compute unit (OpenCL local), 0 unknown */
    uint32_t clock_mhz;        /* maximum clock, 0 when unknown */
    uint32_t has_fp16;         /* 1 when the device computes in fp16 natively */
    uint32_t has_fp64;         /* 1 when the device computes in fp64 */
    uint32_t unified_memory;   /* 1 when device and host share physical memory */
    /* 1 when the device computes on the host's own CPU cores (e.g. PoCL): it competes with the
     * cpu backend for the same hardware, so the scheduler does not count both as parallel. */
    uint32_t shares_host_cpu;
    /* 1 when work submitted to the device (submit()) runs in submission order, each node
     * seeing the results of those submitted before it (an in-order queue): the host then
     * submits a node without waiting for its predecessors on the same device, and the device
     * overlaps the launches. 0: the host waits for each completion first. */
    uint32_t in_order;
    char uuid[40];             /* device UUID as hex, "" when the driver does not tell */
    char pci_bus[32];          /* "0000:3b:00.0", "" when unknown */
    char driver[64];           /* driver name and version, "" when unknown */
    /* ---- ABI 1.0, appended; written only when struct_size says the host has it ---- */
    /* 1 when prepare() and prepare_subgraph() of a device whose memory the host cannot address
     * use the device copies of constants the host gives them (loom_node_desc and
     * loom_subgraph_desc input_device_constants) instead of copying those constants themselves:
     * the host then uploads each shared constant once per device (a model's weights once,
     * whatever its number of shape specialisations). 0: the host never gives any. */
    uint32_t device_constants;
} loom_device_info;

/* Whether INFO has the ABI 0.3 fields (the host that passed it may be older). */
#define LOOM_DEVICE_INFO_HAS_V03(info)                                                         \
    ((info)->struct_size >= offsetof(loom_device_info, driver) + sizeof((info)->driver))

/* Whether INFO has the device_constants field. */
#define LOOM_DEVICE_INFO_HAS_DEVICE_CONSTANTS(info)                                            \
    ((info)->struct_size >= offsetof(loom_device_info, device_constants) + sizeof(uint32_t))

/* What the host passes to execute(): the data of each input and output of one node, in the
 * order of the node's descriptor, plus a scratch area of the size prepare() asked for. Inputs
 * are read-only; outputs never alias inputs. */
typedef struct loom_exec_args {
    uint32_t struct_size;
    const void *const *inputs;  /* n_inputs pointers; NULL for absent optional inputs */
    void *const *outputs;       /* n_outputs pointers */
    void *scratch;              /* scratch_bytes from prepare, 64-byte aligned, or NULL */
} loom_exec_args;

/* ---- ABI 1.0: subgraphs ---- */

/* A set of nodes with the values that connect them: the whole graph a backend is offered for
 * claims (claim), or one claimed subgraph to compile (prepare_subgraph).
 *
 * Values are numbered: [0, n_inputs) are the set's inputs (tensors that come from outside it:
 * graph inputs, constants, outputs of nodes outside the set), then the outputs of the nodes in
 * order: node k's output j is value n_inputs + (outputs of nodes 0..k-1) + j. NODE_INPUTS[k][j]
 * is the value that node k reads as its input j, or -1 for an absent optional input. Nodes are
 * in a topological order (every node comes after the producers of its inputs).
 *
 * OUTPUTS lists the values the set must produce for the outside world (graph outputs and values
 * read by nodes outside the set), as value ids in OUTPUT_VALUES; for a compiled subgraph, the
 * kernel's loom_exec_args.outputs are these, in this order, and its inputs are the set's inputs
 * in value order. Every other value is internal: a compiled kernel may keep it in registers or
 * never materialise it. Everything is borrowed from the host for the duration of the call. */
typedef struct loom_subgraph_desc {
    uint32_t abi_version;
    uint32_t struct_size;
    const char *name;                   /* for messages: "claim 3 of npu:0 (Gemm+Add+Relu)" */
    uint32_t n_nodes;
    const loom_node_desc *nodes;        /* topological order */
    const int32_t *const *node_inputs;  /* per node: its n_inputs value ids (-1: absent) */
    uint32_t n_inputs;
    const loom_tensor_desc *inputs;     /* the set's inputs, in value order */
    const void *const *input_constants; /* per input: its data when a constant, else NULL */
    uint32_t n_outputs;
    const loom_tensor_desc *outputs;    /* the values the set produces for the outside */
    const uint32_t *output_values;      /* their value ids */
    /* ---- ABI 1.0, appended ---- */
    /* Per input: NULL, or the device copy of the constant input_constants[i], exactly as
     * loom_node_desc.input_device_constants (the nodes' own descriptors carry none). NULL for
     * claim() and for devices without loom_device_info.device_constants. */
    const void *const *input_device_constants;
} loom_subgraph_desc;

/* Whether SG has the input_device_constants field (it may still be NULL). */
#define LOOM_SUBGRAPH_DESC_HAS_DEVICE_CONSTANTS(sg)                                            \
    ((sg)->struct_size >=                                                                      \
     offsetof(loom_subgraph_desc, input_device_constants) + sizeof(const void *const *))

/* One claim: NODE_COUNT node indices (into the offered loom_subgraph_desc) at FIRST_NODE of the
 * index array claim() fills, which the backend wants to compile into one kernel. The nodes must
 * be connected and convex (no path leaves the set and comes back into it), each supported alone
 * or not, and claims of one call must not overlap; the host drops (with a message naming the
 * claim) any claim that breaks these rules. ESTIMATE_S is the backend's estimate of the whole
 * unit's time in seconds, negative when it has none (the host then sums its node estimates). */
typedef struct loom_claim {
    uint32_t first_node;
    uint32_t node_count;
    double estimate_s;
    char label[64];   /* "Gemm+Add+Relu" for profiles and explanations; "" lets the host make it */
} loom_claim;

/* ---- ABI 1.0: options ---- */

/* One option a backend accepts, declared in its table (loom_backend.options), listed by
 * `loom devices --json` and set by the user as BACKEND:KEY=VALUE (loom_runtime_options.
 * backend_options, `--backend-option`). Strings are the plugin's, valid until its shutdown. */
typedef struct loom_backend_option {
    const char *key;           /* "profile" */
    const char *help;          /* one line: "JSON file with the simulated device's facts" */
    const char *default_value; /* as text, "" when none */
} loom_backend_option;

/* Completion callback of asynchronous work (enqueue, upload_async, download_async): called
 * exactly once, from any thread, with the outcome; MESSAGE may be NULL on success and is only
 * valid during the call. */
typedef void (*loom_done_fn)(void *token, loom_status status, const char *message);

/* The table a backend exposes; ctx is the backend's own state. The host calls functions of one
 * device from one thread at a time except where noted, and except for the copies of ABI 0.3:
 * upload and download run on transfer threads of their own, so they may be called concurrently
 * with execute and submit of the same device, and with one another. */
typedef struct loom_backend {
    uint32_t abi_version; /* LOOM_ABI_VERSION the backend was built against */
    uint32_t struct_size; /* sizeof(loom_backend) as the backend saw it */
    const char *name;     /* short, lowercase: "cpu", "opencl"; prefixes device ids */
    void *ctx;

    /* Number of devices this backend drives. Required. */
    uint32_t (*device_count)(void *ctx);

    /* Fill INFO (whose abi_version and struct_size the host has set) for device DEV. Required. */
    loom_status (*device_info)(void *ctx, uint32_t dev, loom_device_info *info);

    /* Whether DEV can run NODE. Pure: same answer for the same node, no side effects. When it
     * says no (returns 0) it writes a one-line reason into REASON (REASON_LEN bytes including
     * the terminating NUL). Required. Thread-safe. */
    int (*supports)(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                    size_t reason_len);

    /* Compile NODE for DEV: parse its attributes, pre-pack constants, pick a kernel. On success
     * *KERNEL is the backend's handle (freed with release_kernel) and *SCRATCH_BYTES the scratch
     * memory each execution needs. On failure writes a message into ERR. Required. */
    loom_status (*prepare)(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                           size_t *scratch_bytes, char *err, size_t err_len);

    /* Run a prepared kernel once, to completion. Must be safe to call concurrently for
     * different ARGS (concurrent runs of one plan share kernels). On failure writes a message
     * into ERR; the host decides what happens next. Required. */
    loom_status (*execute)(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                           char *err, size_t err_len);

    /* Release a handle from prepare. Required. */
    void (*release_kernel)(void *ctx, void *kernel);

    /* Allocate SIZE bytes of DEV's memory for intermediate tensors, ALIGN-aligned (a power of
     * two, at most 4096). Optional: NULL means host memory from the host's allocator. Returns
     * NULL on failure. */
    void *(*alloc)(void *ctx, uint32_t dev, size_t size, size_t align);

    /* Free memory from alloc; SIZE is the size asked for. Required when alloc is given. */
    void (*free)(void *ctx, uint32_t dev, void *ptr, size_t size);

    /* Join the backend's threads and free its state; ctx is dead afterwards. Optional. */
    void (*shutdown)(void *ctx);

    /* ---- ABI 0.2 ---- */

    /* The backend's own estimate of NODE's time on DEV in seconds, or a negative value when it
     * has none. Optional: the host's cost model uses the device facts otherwise. Pure. */
    double (*estimate)(void *ctx, uint32_t dev, const loom_node_desc *node);

    /* Asynchronous execution: enqueue a prepared kernel and return at once; the backend calls
     * DONE(TOKEN, status, message) exactly once when it has finished (from any thread; MESSAGE
     * may be NULL on success and is only valid during the call). Returning an error instead
     * means nothing was enqueued and DONE will not be called. Optional: when NULL the host calls
     * execute() synchronously. */
    loom_status (*submit)(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                          void (*done)(void *token, loom_status status, const char *message),
                          void *token);
    /* ---- ABI 0.3: devices whose memory the host cannot address ---- */
    /* A device whose loom_device_info.host_visible is 0 gives alloc(): the addresses it returns
     * are opaque to the host (never dereferenced; the host only adds offsets inside a block),
     * and every pointer in loom_exec_args (inputs, outputs, scratch) is such an address, except
     * inputs that were constants at prepare time (loom_node_desc.input_constants non-NULL): for
     * those the host passes the constant's host pointer and the backend uses the copy it made
     * at prepare. The host moves data in and out with the two calls below, as explicit copy
     * steps of the plan. */
    /* Copy BYTES from host memory SRC to DST (an address inside a block from alloc on DEV).
     * When it returns, any kernel the host executes or submits on DEV afterwards sees the data,
     * and SRC may be reused. On failure writes a message into ERR. Required when the device is
     * not host-visible. Thread-safe (see the table's threading rule above). */
    loom_status (*upload)(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                          char *err, size_t err_len);
    /* Copy BYTES from SRC (an address inside a block from alloc on DEV) to host memory DST and
     * wait for the data: everything DEV finished before the call (every node whose completion
     * the host saw) is visible. On failure writes a message into ERR. Required when the device
     * is not host-visible. Thread-safe, like upload. */
    loom_status (*download)(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                            char *err, size_t err_len);

    /* ---- ABI 1.0: subgraph claims and their compilation ---- */
    /* Offered GRAPH (every node of the graph after Loom's passes, in a topological order, once
     * per plan, to each device placement may use), say which connected subgraphs DEV wants to
     * run as single compiled kernels: write up to MAX_CLAIMS claims into CLAIMS and their node
     * indices into NODES (MAX_NODES entries; the host gives room for every node twice and a
     * claim per node); return how many claims were written (0: none). A node need not be
     * supported alone to be claimed. Placement treats each claim as one unit with its estimate,
     * but may still split it when other devices are predicted faster for part of it; the plan's
     * explanation says which it did and why. Optional (NULL: node by node only). Pure and
     * thread-safe, like supports(). */
    uint32_t (*claim)(void *ctx, uint32_t dev, const loom_subgraph_desc *graph, uint32_t *nodes,
                      uint32_t max_nodes, loom_claim *claims, uint32_t max_claims);
    /* Compile claimed subgraph SG for DEV into one kernel, as prepare() does for a node: the
     * kernel runs with execute()/enqueue()/submit() and is freed with release_kernel(); its
     * loom_exec_args hold SG's inputs and outputs (see loom_subgraph_desc). On failure writes a
     * message into ERR; the host then runs the nodes one by one. Required when claim is given. */
    loom_status (*prepare_subgraph)(void *ctx, uint32_t dev, const loom_subgraph_desc *sg,
                                    void **kernel, size_t *scratch_bytes, char *err,
                                    size_t err_len);

    /* ---- ABI 1.0: submission with a message ---- */
    /* submit() with a message buffer for a refusal: when it returns an error nothing was
     * enqueued, DONE will not be called, and ERR says why. Preferred over submit() when both
     * are given. Optional. */
    loom_status (*enqueue)(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                           loom_done_fn done, void *token, char *err, size_t err_len);

    /* ---- ABI 1.0: events (device-to-device dependencies) ---- */
    /* Events let one queue wait for another without waking the host. Requires an in-order
     * device with enqueue or submit. event_create makes an event usable on every device of this
     * backend (*EVENT is the backend's handle); event_record marks the point after everything
     * submitted to DEV so far; event_wait makes everything submitted to DEV afterwards wait
     * until the event's point is reached (the event may have been recorded on another device of
     * this backend, or by upload_async); event_destroy frees it (nothing may still wait on it).
     * A recorded event can be recorded again for the next run once its waiters completed.
     * Optional, all four or none; the host falls back to waking itself up. */
    loom_status (*event_create)(void *ctx, uint32_t dev, void **event, char *err, size_t err_len);
    loom_status (*event_record)(void *ctx, uint32_t dev, void *event, char *err, size_t err_len);
    loom_status (*event_wait)(void *ctx, uint32_t dev, void *event, char *err, size_t err_len);
    void (*event_destroy)(void *ctx, void *event);

    /* ---- ABI 1.0: memory ---- */
    /* upload()/download() without waiting: start the copy and return; DONE(TOKEN, ...) follows
     * once the data has arrived (download: is in DST; upload: every kernel submitted to DEV
     * afterwards sees it, and SRC may be reused). EVENT, when not NULL, is recorded at the copy's
     * completion point for event_wait. Returning an error means nothing started and DONE will
     * not be called. Optional (the host calls upload()/download() on a transfer thread). */
    loom_status (*upload_async)(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                                void *event, loom_done_fn done, void *token, char *err,
                                size_t err_len);
    loom_status (*download_async)(void *ctx, uint32_t dev, void *dst, const void *src,
                                  size_t bytes, void *event, loom_done_fn done, void *token,
                                  char *err, size_t err_len);
    /* Whether DEV_SRC's memory can be copied straight to DEV_DST (two devices of this backend),
     * and the copy itself, synchronous like download(). Optional, both or none: the host stages
     * device-to-device copies through host memory otherwise. */
    int (*can_copy_peer)(void *ctx, uint32_t dev_dst, uint32_t dev_src);
    loom_status (*copy_peer)(void *ctx, uint32_t dev_dst, void *dst, uint32_t dev_src,
                             const void *src, size_t bytes, char *err, size_t err_len);
    /* Pinned (page-locked, DMA-able) host memory for staging DEV's transfers: ordinary host
     * memory the host reads and writes, from which upload/download run faster. Optional, both
     * or none; NULL return means "use ordinary memory". */
    void *(*alloc_host)(void *ctx, uint32_t dev, size_t size);
    void (*free_host)(void *ctx, uint32_t dev, void *ptr, size_t size);
    /* The device's memory now: *FREE_BYTES available to alloc(), *TOTAL_BYTES in all. The
     * host's capacity check uses it instead of loom_device_info.memory_bytes. Optional. */
    loom_status (*memory_info)(void *ctx, uint32_t dev, uint64_t *free_bytes,
                               uint64_t *total_bytes);

    /* ---- ABI 1.0: options ---- */
    /* The options this backend accepts (N_OPTIONS entries; may be NULL when none). */
    const loom_backend_option *options;
    uint32_t n_options;
    /* Apply option KEY (one of OPTIONS) = VALUE. The host calls it after loom_backend_query and
     * before device_count, for each option the user gave for this backend; a refusal (an error
     * and a message in ERR: a bad value, an unreadable file) refuses the backend with that
     * message. Required when n_options > 0. */
    loom_status (*set_option)(void *ctx, const char *key, const char *value, char *err,
                              size_t err_len);
} loom_backend;

/* Severity of a message a backend sends to the host. */
typedef enum loom_log_level {
    LOOM_LOG_ERROR = 1,
    LOOM_LOG_WARNING = 2,
    LOOM_LOG_INFO = 3,
    LOOM_LOG_DEBUG = 4,
} loom_log_level;

/* What the host offers a backend (ABI 0.2). Owned by the host, valid until the backend's
 * shutdown returns. Every slot may be NULL in older hosts: check struct_size first. */
typedef struct loom_host {
    uint32_t abi_version;
    uint32_t struct_size;
    void *host_ctx;
    /* Report MESSAGE (copied by the host during the call) at LEVEL. Thread-safe. The host
     * prefixes it with the plugin's backend name (or its file while loom_backend_query runs),
     * at load time and at run time alike. */
    void (*log)(void *host_ctx, loom_log_level level, const char *message);
} loom_host;

/* The one symbol a plugin exports:
 *     const loom_backend *loom_backend_query(uint32_t host_abi_version, const loom_host *host);
 * HOST_ABI_VERSION is the host's LOOM_ABI_VERSION (a plugin refuses, returning NULL, a host of
 * another major version; a 1.x host then asks once more with LOOM_ABI_VERSION_0_COMPAT, so that a
 * 0.x plugin loads through the adapter); HOST offers callbacks (see loom_host). Returns the backend's table,
 * owned by the plugin and valid until its shutdown, or NULL when it cannot run here (after
 * logging why through HOST). Each call makes a new, independent backend instance. */
typedef const loom_backend *(*loom_backend_query_fn)(uint32_t host_abi_version,
                                                     const loom_host *host);
#define LOOM_BACKEND_QUERY_SYMBOL "loom_backend_query"

/* Look up attribute NAME of NODE; NULL when absent. Written without <string.h> so this header
 * stays standalone. */
static inline const loom_attr *loom_node_attr(const loom_node_desc *node, const char *name)
{
    for (uint32_t k = 0; k < node->n_attrs; k++) {
        const char *a = node->attrs[k].name, *b = name;
        while (*a && *a == *b) {
            a++;
            b++;
        }
        if (*a == *b)
            return &node->attrs[k];
    }
    return NULL;
}

/* Integer attribute NAME of NODE, or DEFAULT_VALUE when absent. */
static inline int64_t loom_node_attr_int(const loom_node_desc *node, const char *name,
                                         int64_t default_value)
{
    const loom_attr *a = loom_node_attr(node, name);
    return a && a->kind == LOOM_ATTR_INT ? a->i : default_value;
}

/* Float attribute NAME of NODE, or DEFAULT_VALUE when absent. */
static inline float loom_node_attr_float(const loom_node_desc *node, const char *name,
                                         float default_value)
{
    const loom_attr *a = loom_node_attr(node, name);
    return a && a->kind == LOOM_ATTR_FLOAT ? a->f : default_value;
}

/* Bytes per element of DTYPE; 0 for LOOM_DTYPE_UNDEFINED or an unknown value. */
static inline size_t loom_dtype_size(loom_dtype dtype)
{
    switch (dtype) {
    case LOOM_DTYPE_F32: case LOOM_DTYPE_I32: case LOOM_DTYPE_U32: return 4;
    case LOOM_DTYPE_I64: case LOOM_DTYPE_U64: case LOOM_DTYPE_F64: return 8;
    case LOOM_DTYPE_F16: case LOOM_DTYPE_BF16: case LOOM_DTYPE_I16: case LOOM_DTYPE_U16: return 2;
    case LOOM_DTYPE_U8: case LOOM_DTYPE_I8: case LOOM_DTYPE_BOOL: return 1;
    default: return 0;
    }
}

/* Number of elements of DESC (1 for a scalar). */
static inline int64_t loom_tensor_desc_numel(const loom_tensor_desc *desc)
{
    int64_t n = 1;
    for (uint32_t k = 0; k < desc->rank; k++)
        n *= desc->dims[k];
    return n;
}

#ifdef __cplusplus
}
#endif
#endif /* LOOM_BACKEND_H */
