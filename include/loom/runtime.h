/*
 * Running graphs: the runtime (devices found on this machine), host tensors for inputs and
 * outputs, plans (a checked graph placed on devices, compiled, with a static memory plan) and
 * runs with their figures.
 *
 * Threading: a runtime may be used from several threads. A plan is immutable once created and
 * loom_plan_run may be called on one plan from several threads at once; each concurrent run gets
 * its own intermediate memory.
 */
#ifndef LOOM_RUNTIME_H
#define LOOM_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "graph.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_runtime loom_runtime; /* opaque: devices and their backends */
typedef struct loom_plan loom_plan;       /* opaque: a graph placed on devices, ready to run */

/* ---- the runtime ------------------------------------------------------------------------- */

typedef struct loom_runtime_options {
    uint32_t struct_size;  /* sizeof(loom_runtime_options): lets the struct grow */
    uint32_t cpu_threads;  /* threads of the CPU backend; 0: LOOM_CPU_THREADS, else all cores */
    /* Backend plugins to load first: shared objects, or folders whose *.so files are tried. */
    const char *const *plugin_paths;
    size_t n_plugin_paths;
    /* Non-zero: load only PLUGIN_PATHS, not LOOM_BACKEND_PATH nor the installed folder. */
    int no_default_plugins;
} loom_runtime_options;

/* Find the devices of this machine and start their backends. OPTIONS may be NULL (defaults).
 * On success *OUT is owned by the caller: free with loom_runtime_destroy after every plan made
 * from it. Fails with LOOM_ERR_DEVICE_LOST when no device at all could start. */
loom_status loom_runtime_create(const loom_runtime_options *options, loom_runtime **out);

/* Messages from starting the runtime: plugins refused (with the file and the reason), devices
 * skipped. Strings owned by the runtime. A refused plugin never stops the others. */
size_t loom_runtime_message_count(const loom_runtime *runtime);
const char *loom_runtime_message(const loom_runtime *runtime, size_t i);

/* Stop the backends' threads and free RUNTIME. Every plan must be destroyed first. NULL is
 * allowed. */
void loom_runtime_destroy(loom_runtime *runtime);

/* Number of devices, and facts about the I-th (id "cpu:0" into ID, at most ID_LEN bytes with
 * the NUL). Returns LOOM_ERR_INVALID_ARGUMENT when I is out of range. */
size_t loom_runtime_device_count(const loom_runtime *runtime);
loom_status loom_runtime_device(const loom_runtime *runtime, size_t i, char *id, size_t id_len,
                                loom_device_info *info);

/* Measure the devices of RUNTIME for the cost model (sustained GFLOP/s, memory bandwidth,
 * launch latency, host links) and save their profiles in CACHE_DIR (NULL: $XDG_CACHE_HOME/loom,
 * else $HOME/.cache/loom), where plans find them. ONLY_MISSING: only devices without a cached
 * profile; QUICK: fewer sizes and repeats. PROGRESS (may be NULL) receives a label and the
 * fraction done. *N_MEASURED (may be NULL) gets the number of devices measured. Fails naming
 * the device whose measurement failed, or with LOOM_ERR_IO naming the cache file. */
loom_status loom_runtime_calibrate(loom_runtime *runtime, const char *cache_dir, int only_missing,
                                   int quick,
                                   void (*progress)(void *user, const char *label,
                                                    double fraction),
                                   void *user, size_t *n_measured);

/* ---- plans ------------------------------------------------------------------------------- */

typedef struct loom_plan_options {
    uint32_t struct_size; /* sizeof(loom_plan_options) */
    /* Run every node on this device ("cpu:0", or "cpu" for the backend's first device); NULL
     * lets the placement policy decide. */
    const char *device;
    /* Fail plan creation when a node cannot run where it was asked to, instead of placing it on
     * another device that supports it; and fail a run when a node's device fails, instead of
     * re-running the node on another device. */
    int strict;
    /* The lowest precision accepted for float32 nodes (loom_precision): LOOM_PRECISION_F32
     * (default) keeps them exact; F16 or INT8 lets devices such as NPUs take them. */
    uint32_t precision;
    /* Sample inputs to calibrate int8 scales of activations (used when PRECISION is
     * LOOM_PRECISION_INT8, ignored otherwise): N_CALIBRATION_SETS sets of the graph's inputs,
     * set s being CALIBRATION_INPUTS[s * n_inputs .. s * n_inputs + n_inputs - 1] in the order
     * of the graph's inputs, each of the input's dtype and shape. The plan evaluates the graph
     * on each set with the CPU reference kernels and gives each node the largest |value| of
     * each of its inputs (loom_node_desc.input_absmax). NULL / 0: not calibrated (devices
     * quantise activations dynamically). Borrowed for the call only. */
    const loom_tensor *const *calibration_inputs;
    size_t n_calibration_sets;
    /* ---- placement (the cost model and the placement policies) ---- */
    /* "default" (NULL): Loom's search (lookahead, portfolio, local search, exact when tiny);
     * "heft", "peft", "exact", or "first" (each node on the first device that supports it). */
    const char *policy;
    /* > 0: meet this end-to-end latency (seconds) at least energy (device power weights from
     * the profiles) instead of minimising latency; loom_plan_summary says whether the plan is
     * predicted to meet it. */
    double target_latency_s;
    /* Pins, each "OP=DEVICE" (every node of that op type, e.g. "Conv=npu-sim") or
     * "node:NAME=DEVICE" (one node). A device that cannot run a pinned node is an error with
     * STRICT, else the pin is ignored for that node (and said so in its explanation). */
    const char *const *pins;
    size_t n_pins;
    /* Seconds the placement search may take; 0: the policy's default (0.5 s at most, far less
     * for small graphs). */
    double budget_s;
    /* Where device profiles and measured history are cached; NULL: $XDG_CACHE_HOME/loom, else
     * $HOME/.cache/loom. */
    const char *cache_dir;
    /* Non-zero: record every run's measured per-node times into the cost model's history
     * (saved to the cache when the plan is destroyed). */
    int learn;
} loom_plan_options;

/* Place a checked GRAPH on RUNTIME's devices, compile every node and make the static memory
 * plan. OPTIONS may be NULL. The plan copies what it needs from GRAPH (constants it borrowed
 * stay borrowed), so GRAPH may be destroyed afterwards. On success *OUT is owned by the caller:
 * free with loom_plan_destroy. Fails with LOOM_ERR_INVALID_ARGUMENT when GRAPH was not checked
 * or OPTIONS names an unknown device, LOOM_ERR_UNSUPPORTED when some node can run on no
 * device (the message names the node and each device's reason). */
loom_status loom_plan_create(loom_runtime *runtime, const loom_graph *graph,
                             const loom_plan_options *options, loom_plan **out);

/* Free PLAN; no run of it may be in progress. NULL is allowed. */
void loom_plan_destroy(loom_plan *plan);

/* Bytes of intermediate memory one run of PLAN needs (the static memory plan's peak, all
 * devices together), and what it would need without reuse (the sum of all intermediates). */
size_t loom_plan_peak_bytes(const loom_plan *plan);
size_t loom_plan_unshared_bytes(const loom_plan *plan);

/* Number of nodes in PLAN, and the device id and node name of the I-th (in execution order);
 * strings are owned by the plan. Return NULL when I is out of range. */
size_t loom_plan_node_count(const loom_plan *plan);
const char *loom_plan_node_name(const loom_plan *plan, size_t i);
const char *loom_plan_node_op(const loom_plan *plan, size_t i);
const char *loom_plan_node_device(const loom_plan *plan, size_t i);

/* Whether the I-th node of PLAN is a transfer the plan inserted (op "Copy") rather than a
 * node of the graph; loom_plan_node_device then gives its link, "host->opencl:0" (upload) or
 * "opencl:0->host" (download), and its name is "copy:TENSOR->DEVICE". */
int loom_plan_node_is_copy(const loom_plan *plan, size_t i);

/* Why the I-th node of PLAN runs where it does. Strings and arrays are owned by the plan. */
typedef struct loom_node_explain {
    uint32_t struct_size;      /* set by the caller to sizeof(loom_node_explain) */
    const char *name, *op, *device;
    double predicted_s;        /* predicted time on its device */
    double start_s, finish_s;  /* in the predicted schedule */
    /* Predicted seconds on each runtime device (loom_runtime_device order), INFINITY where the
     * device cannot run it; COST_COUNT entries. */
    const double *cost_s;
    size_t cost_count;
    const char *cost_source;   /* where its device's figure came from: history, backend, roofline */
    const char *decided_by;    /* pin, only-device, requested-device, earliest-finish, search,
                                * energy, capacity, first, copy, one-device (spreading over
                                * devices was predicted less than 10% faster than the best one
                                * alone, which runs it all), shared-cores (a device on the
                                * host's own cores kept out while the cpu backend can run it) */
    const char *reason;        /* one line for people */
    double bytes_in_moved;     /* input bytes that had to move from another device */
    double transfer_in_s;      /* predicted seconds of those transfers */
    double bytes_kept_local;   /* input bytes that stayed on its device (transfers saved) */
} loom_node_explain;

/* Fill OUT for the I-th node of PLAN. Fails with LOOM_ERR_INVALID_ARGUMENT when I is out of
 * range or OUT->struct_size is too small. */
loom_status loom_plan_explain(const loom_plan *plan, size_t i, loom_node_explain *out);

/* The plan as a whole, as placed: predictions, not measurements. */
typedef struct loom_plan_summary {
    uint32_t struct_size;      /* set by the caller to sizeof(loom_plan_summary) */
    const char *policy;        /* the policy that placed it */
    double predicted_s;        /* predicted end-to-end latency */
    double heft_predicted_s;   /* HEFT's on the same costs (0 when the policy was "first") */
    double target_latency_s;   /* 0: none */
    int target_met;            /* predicted: 1 met (or no target), 0 missed */
    double predicted_energy_j; /* sum over nodes of time x device power */
    const char *best_single_device; /* the device that alone would finish soonest (predicted) */
    double best_single_s;      /* its predicted latency */
    size_t n_copies;           /* transfer nodes inserted */
    double placement_ms;       /* time the placement took */
} loom_plan_summary;

/* Fill OUT with PLAN's summary. Fails with LOOM_ERR_INVALID_ARGUMENT on a small struct_size. */
loom_status loom_plan_summary_get(const loom_plan *plan, loom_plan_summary *out);

/* Write PLAN's placement and explanations as JSON (docs/profile.md describes it) into a new
 * NUL-terminated string *OUT, owned by the caller: free with loom_string_free. */
loom_status loom_plan_explain_json(const loom_plan *plan, char **out);
void loom_string_free(char *s);

/* Timing of one node in one run: nanoseconds since the run's start. */
typedef struct loom_node_timing {
    uint32_t node;   /* index as in loom_plan_node_name */
    uint32_t device; /* index as in loom_runtime_device */
    uint64_t start_ns;
    uint64_t end_ns;
} loom_node_timing;

/* Figures of one run. Filled by loom_plan_run when the caller passes one; plain data. */
typedef struct loom_run_stats {
    uint32_t struct_size; /* set by the caller to sizeof(loom_run_stats): lets the struct grow */
    double latency_ms;    /* wall time of the run, from start to the last node's end */
    size_t peak_bytes;    /* peak of intermediate memory across all devices */
    /* Per-node timeline: when TIMELINE is non-NULL and TIMELINE_CAPACITY >= the plan's node
     * count, the run writes one entry per node (in plan order) and sets TIMELINE_COUNT. The
     * caller owns the array. */
    loom_node_timing *timeline;
    size_t timeline_capacity;
    size_t timeline_count;
    /* Nodes whose device failed and that were re-run on another device (never with a strict
     * plan); loom_runtime_message says which and why. */
    size_t fallback_count;
} loom_run_stats;

/* Run PLAN once. INPUTS and OUTPUTS are the graph's, in declaration order; the caller owns
 * both and keeps them alive until the call returns. Thread-safe: one plan may run from several
 * threads at once. STATS may be NULL.
 * Fails with LOOM_ERR_INVALID_ARGUMENT when a count, dtype or shape differs from the graph's
 * (the message names the input or output), and with the failing node's status (its name in the
 * message) when a kernel fails. */
loom_status loom_plan_run(loom_plan *plan, const loom_tensor *const *inputs, size_t n_inputs,
                          loom_tensor *const *outputs, size_t n_outputs, loom_run_stats *stats);

/* Create, for each output of PLAN's graph, a zero-filled tensor of its dtype and shape, into
 * OUTPUTS[N] (N must equal the output count). On success the caller owns them all (free each
 * with loom_tensor_destroy); on failure none is left allocated. */
loom_status loom_plan_make_outputs(const loom_plan *plan, loom_tensor **outputs, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_RUNTIME_H */
