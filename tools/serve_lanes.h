/*
 * `--cpu-threads auto` for `loom serve` and `loom loadgen` in process: which CPU thread count
 * serves more on this machine, measured before the server starts (docs/serve.md, "Batches and
 * devices"). The answer depends on the model and the machine: where batching pays on the
 * pool, one batch spread over every core wins; where it does not, one one-thread batch per
 * core does (BERT-tiny on two cores: 66% against 89% of the ceiling, on another VM the
 * reverse).
 */
#ifndef LOOM_TOOLS_SERVE_LANES_H
#define LOOM_TOOLS_SERVE_LANES_H

#include <loom/loom.h>
#include <loom/serve.h>

#include <stddef.h>
#include <stdint.h>

/* One model to measure: its ONNX file and the serving options that matter here (batch_axis,
 * max_batch, latency_target_s, plan_options; the rest is ignored). Both borrowed. */
typedef struct serve_lanes_model {
    const char *path;
    const loom_serve_model_options *options;
} serve_lanes_model;

/*
 * Run each of MODELS[N] directly (loom_model_run on zero-filled inputs) at batch sizes 1, 2,
 * 4, ... up to its max_batch (a model whose batch dimension is fixed: that size only) under
 * the two ways of using the host's cores that `loom serve` has: the default thread count
 * (LOOM_CPU_THREADS, else a thread per core), one run at a time, and one thread per run, a
 * run per core at once (each lane's runs timed while the others run). For each, the model's ceiling is the
 * best samples/s among sizes whose median run time is at most half its latency target (as
 * bench/bench_serve.sh defines it); the way whose ceilings are higher (geometric mean of the
 * ratios over the models) wins. Runtimes are made with tool_runtime_create (the command line's
 * backend options apply) and destroyed before returning.
 * Returns the thread count to serve with: 1 for one-thread runs, 0 for the default (a thread
 * per core). WHY (WHY_LEN bytes, always NUL-terminated) receives one line saying what was
 * measured and chosen. A machine with one core, or a measurement that fails (a model that does
 * not load or run on zero-filled inputs: it is refused with its own error when served), gives
 * 0 and says why in WHY; nothing fails.
 * Cost: each model's plans for every size are made twice and run ~7 times per size and way:
 * about 2 s for a BERT-tiny-sized model with max_batch 8, a fraction of it for a small CNN.
 */
uint32_t serve_pick_cpu_threads(const serve_lanes_model *models, size_t n, char *why,
                                size_t why_len);

#endif /* LOOM_TOOLS_SERVE_LANES_H */
