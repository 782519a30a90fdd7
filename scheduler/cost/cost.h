/*
 * The cost model: what a node costs on a device, and what moving bytes between devices costs.
 *
 * Three sources, most trusted last: a roofline from the op's FLOPs and bytes (graph/ops.h
 * loom_op_cost) and the device's calibrated profile (sustained FLOP/s per dtype, memory
 * bandwidth, launch latency) or, before calibration, its backend's facts; the backend's own
 * estimate() when it gives one; and the measured history of the same op signature (op, input
 * and output shapes and dtypes, precision, device), robust to outliers (median of the kept
 * samples, spikes rejected). Measurements beat estimates: where a calibration fitted the
 * node's op class on that device and the backend's estimate is more than COST_DISAGREE_RATIO
 * off it, the calibration's figure is used (source "calibration"). Profiles and history persist in $XDG_CACHE_HOME/loom/ (or
 * ~/.cache/loom/), keyed by device name and driver, so a calibration is reused at start.
 */
#ifndef LOOM_COST_H
#define LOOM_COST_H

#include <loom/runtime.h>

#include "graph/ops.h"

typedef struct cost_model cost_model;

/* Operator classes the calibration fits one line (fixed seconds + work / rate) to, each from
 * one representative operator (in brackets) run at several sizes: how fast an operator runs
 * depends far more on what it does per element than on its FLOP count (an Erf costs ten Adds
 * per byte, a Softmax four LayerNorms). The work is the FLOPs for MATMUL and CONV, the bytes
 * read and written for the others. */
typedef enum cost_op_class {
    COST_CLASS_MATMUL,   /* MatMul, Gemm, Einsum, integer MatMuls, LSTM, GRU [MatMul] */
    COST_CLASS_CONV,     /* Conv, ConvTranspose [Conv 3x3] */
    COST_CLASS_BINARY,   /* Add, Sub, Mul, Min, Max, Where, comparisons, logic, Sum, Mean [Add] */
    COST_CLASS_DIV,      /* Div, Pow, Sqrt, Reciprocal [Div] */
    COST_CLASS_UNARY,    /* Relu, Neg, Abs, Clip, Cast, rounding, hard activations [Relu] */
    COST_CLASS_TRANSCENDENTAL, /* Sigmoid, Tanh, Erf, Gelu, Exp, Log [Erf] */
    COST_CLASS_SOFTMAX,  /* Softmax [Softmax over rows of 256] */
    COST_CLASS_NORM,     /* LayerNormalization, BatchNormalization, InstanceNormalization
                        * [LayerNormalization over rows of 256] */
    COST_CLASS_REDUCE,   /* ReduceMean/Sum/Max, GlobalAveragePool, ArgMax, TopK [ReduceMean] */
    COST_CLASS_POOL,     /* MaxPool, AveragePool [MaxPool 2x2] */
    COST_CLASS_COPY,     /* Transpose, Concat, Split, Slice, Gather, Pad, Tile, Expand, Resize
                        * [Transpose of a [n/64, 64] matrix] */
    COST_CLASS_VIEW,     /* Reshape, Squeeze, Unsqueeze, Flatten, Identity [Reshape] */
    COST_CLASS_COUNT     /* not a class: operators outside every class (plain roofline) */
} cost_op_class;

/* The host side of every link: transfers of non-host-visible devices go through it. */
#define COST_HOST UINT32_MAX

/* A device's calibrated profile (or its backend's facts before calibration). */
typedef struct cost_profile {
    /* Cache key: backend, device name, driver, threads, then everything else that changes what
     * a measurement means (cost_profile_from_facts): host-visible and unified memory, in-order
     * queue, shared host cores, fp16/fp64, the backend's ABI version and a hash of the options
     * the user gave its backend. */
    char key[320];
    int calibrated;          /* 1 when measured by cost_calibrate, 0 when from the backend's facts */
    double flops[3];         /* sustained ops/s: [0] f32, [1] f16, [2] int8 (0: unknown) */
    double mem_bandwidth;    /* bytes/s, streaming */
    double launch_s;         /* seconds per dispatched node, the fixed part */
    double to_host_latency_s, to_host_bandwidth;     /* device -> host (0 for host-visible) */
    double from_host_latency_s, from_host_bandwidth; /* host -> device */
    double power_w;          /* watts while busy (the energy objective's weight) */
    int shares_host_cpu;     /* computes on the host's cores */
    /* ---- added by the cost model's implementation ---- */
    int host_visible;        /* its memory is host memory: links to the host are free */
    /* Bytes of cache a node's working set stays in (the host's last-level caches, from hwloc,
     * for devices that compute on host cores); 0 when unknown. Beyond it a node's bytes move
     * at no more than mem_bandwidth. */
    double cache_bytes;
    /* Per class (cost_op_class), fitted at calibration: seconds of a node of that class =
     * class_fixed_s + work / class_rate (work: FLOPs for MATMUL and CONV, else bytes). Both 0:
     * not measured (the plain roofline applies); a rate of 0 with a fixed cost: no size
     * dependence was measurable. */
    double class_fixed_s[COST_CLASS_COUNT];
    double class_rate[COST_CLASS_COUNT];
    /* The flops column (0 f32, 1 f16, 2 int8) the class fits were measured in: 1 on devices
     * without f32 arithmetic (NPUs calibrate in fp16). A FLOP-counted class's rate scales by
     * flops[node's column] / flops[class_column]. A double so that it persists like the rest. */
    double class_column;
} cost_profile;

/* Open the cost model of RT's devices: load cached profiles and history from CACHE_DIR (NULL:
 * $XDG_CACHE_HOME/loom, else $HOME/.cache/loom); devices without a cached profile get one from
 * their backend's facts (calibrated = 0). A missing or corrupt cache is not an error (a corrupt
 * file is reported through runtime_message and ignored). On success *OUT is owned by the caller
 * (cost_model_close). Fails only with LOOM_ERR_OUT_OF_MEMORY. */
loom_status cost_model_open(loom_runtime *rt, const char *cache_dir, cost_model **out);

/* Save what changed (history, profiles) to the cache, then free MODEL. NULL is allowed. */
void cost_model_close(cost_model *model);

/* The profile of runtime device DEV (owned by the model). */
const cost_profile *cost_profile_of(const cost_model *model, uint32_t dev);

/* Predicted seconds of NODE (with COST from the registry) on runtime device DEV; does not
 * check that DEV supports NODE. Thread-safe for concurrent readers. */
double cost_node_seconds(const cost_model *model, uint32_t dev, const loom_node_desc *node,
                       const loom_op_cost *cost);

/* Where cost_node_seconds took its figure from: "history", "calibration", "backend",
 * "roofline" (NODE's FLOPs and bytes from the operator registry). */
const char *cost_node_source(const cost_model *model, uint32_t dev, const loom_node_desc *node);

/* A backend's estimate() and a measurement this many times apart (either way) for a node: the
 * measurement wins (the calibrated fit of the node's op class, or its history). */
#define COST_DISAGREE_RATIO 2.0

/* What the model chose for one node on one device, and why. */
typedef struct cost_choice {
    double seconds;       /* what cost_node_seconds returns */
    const char *source;   /* "history" (this node's measured median), "calibration" (the
                           * calibrated fit of its op class, chosen over a backend estimate
                           * more than COST_DISAGREE_RATIO off it), "backend" (its estimate()),
                           * "roofline" (the profile's figures) */
    double estimate_s;    /* the backend's estimate, -1 when it gave none */
    double measured_s;    /* > 0 only when a measurement overrode an estimate more than
                           * COST_DISAGREE_RATIO off it: that measurement; else -1 */
} cost_choice;

/* cost_node_seconds with its reasons into *CHOICE. The first time, per device and op class,
 * that a measurement overrides an estimate more than COST_DISAGREE_RATIO off it, the runtime
 * gets a message saying so. Thread-safe for concurrent readers; allocation-free. */
void cost_node_choose(const cost_model *model, uint32_t dev, const loom_node_desc *node,
                      const loom_op_cost *cost, cost_choice *choice);

/* For the plan's explanation: when CHOICE is a measurement that overrode DEV's backend estimate,
 * "cost from measurement (0.41 ms, calibration of its op class); npu-sim:0's estimate 0.022 ms
 * was 19x off" as a new string (caller frees); NULL otherwise or when out of memory. */
char *cost_choice_note(const cost_model *model, uint32_t dev, const cost_choice *choice);

/* Latency (seconds) and bandwidth (bytes/s) of moving data from device FROM to device TO
 * (either may be COST_HOST). Free (0 latency, infinite bandwidth) between host-visible memories. */
void cost_link(const cost_model *model, uint32_t from, uint32_t to, double *latency_s,
             double *bandwidth);

/* Bytes of a signature buffer (cost_signature). */
#define COST_SIGNATURE_MAX 512

/* NODE's history signature (op, shapes, dtypes, precision, a hash of its attributes) as text
 * into BUF (COST_SIGNATURE_MAX bytes): lets a plan record measured times once the graph, whose
 * attributes the node borrowed, is gone. */
void cost_signature(const loom_node_desc *node, char *buf);

/* The history signature of a unit of N nodes run as one kernel (a backend's claimed subgraph,
 * labelled LABEL): NODES[WHICH[0..N-1]]'s signatures in that order, into BUF
 * (COST_SIGNATURE_MAX bytes; a text too long keeps a prefix and a hash of the whole). */
void cost_signature_unit(const char *label, const loom_node_desc *nodes, const uint32_t *which,
                         uint32_t n, char *buf);

/* The history median of SIG on DEV into *SECONDS when enough executions were recorded
 * (returns 1), else 0. Thread-safe. */
int cost_history_median(const cost_model *model, uint32_t dev, const char *sig, double *seconds);

/* Record one measured execution (SECONDS) of the node whose signature is SIG on DEV.
 * Thread-safe. */
void cost_record_signature(cost_model *model, uint32_t dev, const char *sig, double seconds);

/* Record one measured execution of NODE on DEV (SECONDS) into the history. Thread-safe. */
void cost_record(cost_model *model, uint32_t dev, const loom_node_desc *node, double seconds);

/* Measure every device (or only those without a calibrated profile when ONLY_MISSING): GEMM
 * f32 at several sizes (and f16 where supported), streaming bandwidth, launch latency, host
 * links. QUICK uses fewer sizes and repeats. PROGRESS (may be NULL) is called with a label and
 * a fraction in [0, 1]. Updates the profiles (saved by cost_model_close or cost_model_save). Fails
 * naming the device whose measurement failed. */
loom_status cost_calibrate(cost_model *model, int only_missing, int quick,
                         void (*progress)(void *user, const char *label, double fraction),
                         void *user);

/* Write profiles and history to the cache now. Fails with LOOM_ERR_IO naming the file. */
loom_status cost_model_save(cost_model *model);

/* Free RT's parsed history snapshots (cost_history_cache.c): at the runtime's end. */
void cost_history_cache_free(loom_runtime *rt);

/* How many times RT parsed a history.json (for tests: opening cost models while the file stays
 * the same parses it once per runtime). Thread-safe. */
uint64_t cost_history_parses(const loom_runtime *rt);

/* The cache folder in use (owned by the model); "" when neither XDG_CACHE_HOME nor HOME is
 * set and none was given (the model then persists nothing and cost_model_save fails). */
const char *cost_cache_dir(const cost_model *model);

/* ---- additions of the implementation (cost_*.c) ------------------------------------------- */

/* Progress callback of cost_calibrate: LABEL ("cpu:0 GEMM f32 256") and FRACTION in [0, 1]. */
typedef void (*cost_progress_fn)(void *user, const char *label, double fraction);

/* Number of runtime devices the model covers (the runtime's device count at open). */
uint32_t cost_device_count(const cost_model *model);

/* cost_node_seconds of NODE on every device at once into SECONDS (cost_device_count entries),
 * building the signature once: the placement's inner loop. Allocation-free; thread-safe for
 * concurrent readers. Does not check that the devices support NODE. */
void cost_node_seconds_all(const cost_model *model, const loom_node_desc *node,
                         const loom_op_cost *cost, double *seconds);

/* The model before history, on profile P. When P has a fit for NODE's class
 * (cost_op_class_of): class_fixed_s + work / class_rate, where work is the FLOPs (MATMUL, CONV;
 * the rate scaled by flops[dtype] / flops[class_column] for another dtype column) or the bytes read and
 * written; and when the bytes exceed cache_bytes (or it is unknown), at least class_fixed_s +
 * bytes / mem_bandwidth. Otherwise the plain roofline: launch_s + max(flops / flops[dtype],
 * bytes / bandwidth). Layout-only ops (Reshape, Squeeze, Unsqueeze, Flatten, Identity) count
 * 0 FLOPs and the output's bytes read and written. The dtype column is f16 for f16 inputs or
 * an f32 node whose precision allows fp16, int8 for 8-bit inputs or INT8 precision, else f32;
 * a column that is 0 (unknown) falls back to f32. COST may be NULL (then 0 FLOPs and the bytes
 * of NODE's inputs and outputs). Pure and allocation-free. */
double cost_roofline_seconds(const cost_profile *p, const loom_node_desc *node,
                           const loom_op_cost *cost);

/* Calibrate runtime device DEV only (see cost_calibrate; always measures). Fails with
 * LOOM_ERR_INVALID_ARGUMENT for an unknown DEV, or with the status of the measurement that
 * failed (the message names the device and what was measured). A device that supports none of
 * the calibration graphs keeps its facts' profile and is not an error. */
loom_status cost_calibrate_device(cost_model *model, uint32_t dev, int quick,
                                cost_progress_fn progress, void *user);

/* Record every node of one run of PLAN (made from GRAPH with precision PRECISION) from the run's
 * timeline in STATS (stats->timeline_count entries; plan node i is matched to GRAPH's node of
 * the same name and op). Nodes that cannot be matched are skipped. Thread-safe like cost_record.
 * Returns the number of samples recorded. */
size_t cost_record_timeline(cost_model *model, const loom_graph *graph, const loom_plan *plan,
                          const loom_run_stats *stats, uint32_t precision);

/* The class of operator OP (COST_CLASS_COUNT: none). Pure. */
cost_op_class cost_op_class_of(loom_op_id op);

/* Whether the work of class C is counted in FLOPs (1) rather than bytes (0). */
int cost_op_class_counts_flops(cost_op_class c);

/* Fit t = *FIXED + x * *PER_UNIT to the N >= 1 points (X[i], T[i]) (T > 0), minimising the
 * squared RELATIVE residuals (a 2 us node off by 1 us matters as much as a 2 ms one off by
 * 1 ms). Constraints: *FIXED >= 0 (else refitted through the origin) and *PER_UNIT >= 0 (else
 * a flat line, at the constant of least relative error). One point, or all X equal: flat.
 * Points whose T is not positive and finite or whose
 * X is negative are skipped. Returns 0 when no point is usable (outputs set to 0), else 1. */
int cost_fit_line(const double *x, const double *t, size_t n, double *fixed, double *per_unit);

/* Robust median of the N values V (sorted in place): the median after dropping values above
 * 3x the plain median (spikes), so one slow run never moves it far. 0 when N is 0. */
double cost_robust_median(double *v, size_t n);

/* Relative prediction error |pred - meas| / meas over N pairs: its median and nearest-rank
 * 90th percentile into *MEDIAN and *P90 (either may be NULL). Pairs whose measurement is not
 * positive and finite are skipped; with no usable pair both are NAN. Allocates a scratch
 * array (on failure both are NAN). */
void cost_error_stats(const double *pred, const double *meas, size_t n, double *median,
                    double *p90);

/* One line describing P into BUF (LEN bytes, always NUL-terminated when LEN > 0), e.g.
 * "f32 52.3 GFLOP/s, f16 -, 14.1 GB/s, launch 2.4 us, link host-visible, calibrated". */
void cost_profile_summary(const cost_profile *p, char *buf, size_t len);

#endif /* LOOM_COST_H */
