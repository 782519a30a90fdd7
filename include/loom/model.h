/*
 * Models: an ONNX file (or a C-API graph with symbolic dims: loom_model_from_graph) loaded once
 * and run with inputs of any admissible shape. Each new
 * combination of input shapes (and of the values of inputs the model needs as values: a
 * Reshape's shape, a TopK's K, ...) gets a shape-specialised plan, made on demand (imported
 * with those shapes, constant-folded, placed with the cost model, compiled, memory-planned) and
 * cached; every specialisation borrows one copy of the weights, owned by the model.
 *
 * Output shapes that depend on input VALUES (NonZero, Compress, Unique, NonMaxSuppression): such
 * a model runs in stages, split at those nodes once at load (loom_model_is_staged). The first
 * stage runs up to them; each of them then runs on the host, and the real shapes of its outputs
 * key the specialisation of the stages after it, cached like any input shape (so two counts of
 * detections make two specialisations of what follows, each made once). Values a later stage
 * reads from an earlier one are handed on, never recomputed. The specialisation counters of
 * loom_model_stats and the cache bounds then count each stage's specialisations (the bounds
 * apply per stage). loom_plan_create refuses such graphs, naming the node.
 *
 * Threading: loom_model_run may be called from several threads at once on one model. The cache
 * lookup takes a lock; specialisations are created one at a time; runs of cached ones proceed in
 * parallel (plans are thread-safe to run).
 */
#ifndef LOOM_MODEL_H
#define LOOM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "graph.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_model loom_model; /* opaque */

typedef struct loom_model_options {
    uint32_t struct_size; /* sizeof(loom_model_options) */
    /* Plan options for every specialisation (NULL: defaults). Copied at load: device, policy,
     * pins and cache_dir included; calibration inputs are not used (they have one shape). */
    const loom_plan_options *plan;
    /* Cache bounds: most specialisations kept (0: 16) and most bytes they may hold together,
     * counting each one's intermediate memory (plan peak), the constants folded for it and its
     * plan's own tables (0: no byte bound). The least recently used one goes first. */
    size_t max_specialisations;
    size_t max_bytes;
    /* Largest memory one run may need: any tensor, or a specialisation's intermediates, bigger
     * than this is refused (LOOM_ERR_INVALID_ARGUMENT) before anything of that size is
     * allocated. 0: half of the machine's physical memory. */
    size_t memory_cap;
    /* Intermediate memory that idle specialisations may keep between runs (their execution
     * arenas), besides the one that ran last: 0 frees the others' as soon as another shape
     * runs, SIZE_MAX keeps them all. */
    size_t idle_bytes;
} loom_model_options;

/* Load the ONNX model at PATH: read and unpack the file once and decode every initializer into
 * the model's weight store. Nothing is planned yet (no shape is known). OPTIONS may be NULL.
 * RUNTIME must outlive the model. On success *OUT is owned by the caller: free with
 * loom_model_destroy. Fails as loom_onnx_load does (LOOM_ERR_IO, LOOM_ERR_INVALID_ARGUMENT,
 * LOOM_ERR_UNSUPPORTED for ops Loom lacks, all named), LOOM_ERR_OUT_OF_MEMORY. */
loom_status loom_model_load_onnx(loom_runtime *runtime, const char *path,
                                 const loom_model_options *options, loom_model **out);

/* Make a model of GRAPH, a checked graph built through the C API, typically with symbolic input
 * dims (loom_input_symbolic, loom/graph.h): it then runs, like an ONNX model, with inputs of any
 * admissible shape, each new combination of input shapes getting its specialisation (the graph
 * re-inferred at those shapes with constant folding, placed with the cost model, compiled,
 * memory-planned), cached as OPTIONS bound (NULL: defaults). loom_model_run,
 * loom_model_acquire_plan, loom_model_stats_get and the info calls work on it as on an ONNX
 * model; an input's dim_params name its symbols, an output's give the expression of each
 * symbolic dim ("batch*seq"). A graph without symbols is allowed (one specialisation).
 * OWNERSHIP: on success the model takes GRAPH (loom_model_destroy frees it; the caller must not
 * destroy it, and may still read it until then); its constants, loom_constant copies and
 * borrowed buffers alike, are shared by every specialisation, never copied per specialisation
 * (loom_model_stats: weight_bytes counts them once; borrowed_bytes counts what the live
 * specialisations borrow). Borrowed constants (loom_constant_borrowed) must outlive the model.
 * On failure GRAPH stays the caller's. RUNTIME must outlive the model.
 * Cost: nothing is planned here. A run with new shapes re-infers every node and plans (see
 * loom_model_run); a cached one costs a lookup on top of the plan's run.
 * A run whose inputs bind one symbol two ways fails before anything runs with
 * LOOM_ERR_INVALID_ARGUMENT ("dimension 'seq' is 48 in input_ids but 47 in attention_mask"); one
 * whose shapes an operator rejects fails naming the node and the symbols' values ("graph 'g' with
 * batch=2, seq=5: node 'r' (Reshape): ...").
 * Fails with LOOM_ERR_INVALID_ARGUMENT on NULLs, a graph that is not checked (or failed: its
 * first error is reported) or a bad options->struct_size; LOOM_ERR_UNSUPPORTED when the graph
 * has operators whose output shape depends on values (NonZero...: only ONNX models run those
 * in stages); LOOM_ERR_OUT_OF_MEMORY. */
loom_status loom_model_from_graph(loom_runtime *runtime, loom_graph *graph,
                                  const loom_model_options *options, loom_model **out);

/* Free MODEL, its specialisations and its weights; no run may be in progress. NULL is allowed. */
void loom_model_destroy(loom_model *model);

/* One input or output as the model declares it. */
typedef struct loom_model_io {
    uint32_t struct_size;  /* set by the caller to sizeof(loom_model_io) */
    const char *name;      /* owned by the model */
    loom_dtype dtype;      /* LOOM_DTYPE_UNDEFINED when the model does not say (outputs) */
    int32_t rank;          /* -1: the model gives no shape */
    int64_t dims[LOOM_MAX_RANK];        /* -1: dynamic */
    const char *dim_params[LOOM_MAX_RANK]; /* the symbol ("batch") of a dynamic dim, else NULL */
    /* Inputs: 1 when the model needs this input's values, not only its shape (a shape, an axis
     * or a count fed as a tensor): each distinct value gets its own specialisation. Learnt on
     * the first run that needed it. */
    int needs_value;
} loom_model_io;

/* The model's inputs (the graph inputs that are not initializers, in model order) and
 * outputs. Strings live as long as MODEL. Fail with LOOM_ERR_INVALID_ARGUMENT on NULLs, I out
 * of range or a small struct_size. */
size_t loom_model_input_count(const loom_model *model);
size_t loom_model_output_count(const loom_model *model);
loom_status loom_model_input_info(const loom_model *model, size_t i, loom_model_io *out);
loom_status loom_model_output_info(const loom_model *model, size_t i, loom_model_io *out);

/* Figures of one loom_model_run; plain data. A staged model sums them over its stages
 * (cache_hit: 1 when every stage hit). */
typedef struct loom_model_run_stats {
    uint32_t struct_size;  /* set by the caller to sizeof(loom_model_run_stats) */
    int cache_hit;         /* 1: a cached specialisation ran; 0: this call created one */
    double create_ms;      /* time to create the specialisation (0 on a hit) */
    double latency_ms;     /* the whole call: lookup, creation, run, outputs */
    double run_ms;         /* the plan's run alone */
    size_t specialisation_bytes; /* its intermediate memory plus folded constants */
} loom_model_run_stats;

/* Run MODEL on INPUTS (N_INPUTS = loom_model_input_count, model order, each of the declared
 * dtype and rank, dynamic dims of any size; borrowed for the call). OUTPUTS[N_OUTPUTS]
 * receives new tensors, owned by the caller (free each with loom_tensor_destroy); on failure
 * none is left allocated. STATS may be NULL.
 * Cost: when no cached specialisation fits the inputs' shapes (and the values of the inputs the
 * model needs as values), this call creates one: imports the model with those shapes from the
 * unpacked protobuf (no file read, no weight decoding: weights are borrowed), folds, places,
 * compiles and plans memory (milliseconds for a BERT-sized model); the least recently used
 * specialisation may be evicted. A cached one costs a lookup (a hash of the shapes) on top of
 * the plan's run and the outputs' allocation.
 * Fails with LOOM_ERR_INVALID_ARGUMENT, before anything runs, when the inputs contradict the
 * model: count, a NULL tensor, dtype, rank, a fixed dim, a symbol bound two ways ("dimension
 * 'sequence' is 48 in input_ids but 47 in attention_mask"), shapes that the graph's operators
 * reject, or a computed size over the memory cap; one line names the input, the dimension and
 * the values. LOOM_ERR_UNSUPPORTED when the model cannot run with those shapes on any device.
 * Otherwise as loom_plan_run. */
loom_status loom_model_run(loom_model *model, const loom_tensor *const *inputs, size_t n_inputs,
                           loom_tensor **outputs, size_t n_outputs, loom_model_run_stats *stats);

/* 1 when MODEL runs in stages because it holds operators whose output shape depends on input
 * values (see the header comment), 0 otherwise and for NULL. */
int loom_model_is_staged(const loom_model *model);

/* Counters of MODEL since it was loaded. */
typedef struct loom_model_stats {
    uint32_t struct_size;    /* set by the caller to sizeof(loom_model_stats) */
    uint64_t runs;           /* successful loom_model_run calls */
    uint64_t hits, misses;   /* specialisations found in the cache, and created */
    uint64_t evictions;      /* specialisations dropped to stay within the bounds */
    size_t live;             /* specialisations cached now */
    size_t bytes;            /* what they hold (intermediates + folded constants) */
    size_t weight_bytes;     /* the weight store: held once, whatever LIVE is */
    size_t weight_tensors;
    /* Bytes of weights the live specialisations borrow from the store, all counted together:
     * LIVE times the weights they use, none of it copied. */
    size_t borrowed_bytes;
    /* Bytes of constants the live specialisations hold copies of (folded ones): weights are
     * never among them. */
    size_t copied_const_bytes;
    /* Weights on devices whose memory the host cannot address (OpenCL), when their backend
     * takes the host's device copies (loom_device_info.device_constants): every weight a
     * specialisation reads on such a device is uploaded there once and shared by all the
     * specialisations, never copied per specialisation. The copies held now (bytes and
     * tensors; a weight on two devices counts twice) and the uploads made since the model was
     * loaded: a weight is uploaded again only after no live specialisation used it any more
     * (evictions). All 0 when the model runs on host-visible devices only. */
    size_t device_weight_bytes;
    size_t device_weight_tensors;
    uint64_t device_weight_uploads;
} loom_model_stats;

/* Fill OUT (struct_size set by the caller). Fails with LOOM_ERR_INVALID_ARGUMENT on NULLs or a
 * small struct_size. */
loom_status loom_model_stats_get(const loom_model *model, loom_model_stats *out);

/* A specialisation's plan held by a caller that runs it directly (a server that forms batches
 * and keeps one plan per batch size, say). Filled by loom_model_acquire_plan. */
typedef struct loom_model_held_plan {
    loom_plan *plan;        /* borrowed: valid until loom_model_release_plan */
    const uint32_t *inputs; /* for each of the plan's inputs, the model input feeding it */
    size_t n_inputs;        /* the plan's inputs (model inputs used only for their shape or
                             * not at all are not among them) */
    void *handle;           /* Loom's */
} loom_model_held_plan;

/* Find or create the specialisation of MODEL for inputs shaped like INPUTS (N_INPUTS =
 * loom_model_input_count, model order; only their dtypes and shapes are read) and hold it: its
 * plan stays valid, shares the model's weights like every specialisation, and may be run with
 * loom_plan_run (from several threads at once; inputs in the order OUT->inputs gives) until
 * loom_model_release_plan, even if the cache evicts it meanwhile (it then counts against no
 * bound and is freed at the release). Costs what loom_model_run costs on a miss.
 * Fails as loom_model_run does on bad inputs; LOOM_ERR_UNSUPPORTED when the model needs the
 * values of an input (a plan per value, not per shape) or cannot be planned as one plan (it has
 * operators whose output shapes depend on values): run such models with loom_model_run. */
loom_status loom_model_acquire_plan(loom_model *model, const loom_tensor *const *inputs,
                                    size_t n_inputs, loom_model_held_plan *out);

/* Let go of a plan held by loom_model_acquire_plan; HELD is cleared. NULLs are ignored. Every
 * held plan must be released before loom_model_destroy. */
void loom_model_release_plan(loom_model *model, loom_model_held_plan *held);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_MODEL_H */
