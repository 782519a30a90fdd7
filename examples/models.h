/*
 * The small models the examples, the benchmarks and the `loom` tool's bundled models are built
 * from: a 3-layer MLP (the default), one transformer attention block, and three parallel MLP
 * towers (branches a placement can spread over devices), all with seeded random weights held as
 * constants of the graph, so every program that builds them gets the same graph.
 */
#ifndef LOOM_EXAMPLES_MODELS_H
#define LOOM_EXAMPLES_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include <loom/loom.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Shapes of the MLP: input "x" [EXAMPLE_MLP_BATCH, 784], output "probs" [EXAMPLE_MLP_BATCH, 10]
 * (a softmax over the 10 classes of each row). */
#define EXAMPLE_MLP_BATCH 64
#define EXAMPLE_MLP_IN 784
#define EXAMPLE_MLP_HIDDEN1 512
#define EXAMPLE_MLP_HIDDEN2 256
#define EXAMPLE_MLP_OUT 10

/* Shapes of the attention block: input "x" [1, EXAMPLE_ATTN_SEQ, EXAMPLE_ATTN_DMODEL], output "y"
 * of the same shape. */
#define EXAMPLE_ATTN_SEQ 128
#define EXAMPLE_ATTN_DMODEL 256
#define EXAMPLE_ATTN_HEADS 4

/* Shapes of the towers: input "x" [EXAMPLE_TOWERS_BATCH, EXAMPLE_TOWERS_IN], three towers of
 * hidden widths EXAMPLE_TOWERS_WIDE, _MID and _NARROW, output "probs" [EXAMPLE_TOWERS_BATCH,
 * EXAMPLE_TOWERS_OUT]. */
#define EXAMPLE_TOWERS_BATCH 64
#define EXAMPLE_TOWERS_IN 256
#define EXAMPLE_TOWERS_WIDE 1024
#define EXAMPLE_TOWERS_MID 512
#define EXAMPLE_TOWERS_NARROW 256
#define EXAMPLE_TOWERS_OUT 10

/* Build the MLP: x -> Gemm(784x512) -> Relu -> Gemm(512x256) -> Relu -> Gemm(256x10) -> Softmax.
 * The graph is built but NOT checked: call loom_graph_check(), which also reports any builder
 * error. Returns NULL only when out of memory. The caller frees it with loom_graph_destroy. */
loom_graph *example_mlp(void);

/* Build one pre-norm attention block with 4 heads:
 *   h = LayerNorm(x); Q, K, V = h·Wq, h·Wk, h·Wv, each split into heads;
 *   A = Softmax(Q·Kᵀ / sqrt(d_head))·V; y = x + merge_heads(A)·Wo.
 * The graph is built but NOT checked (see example_mlp). Returns NULL only when out of memory.
 * The caller frees it with loom_graph_destroy. */
loom_graph *example_attention(void);

/* Build three parallel MLP towers over one input, joined, then a classifier head:
 *   tower_k = Relu(Relu(x·W1k + b1k)·W2k + b2k), x [64, 256] -> [64, width_k] -> [64, 256],
 *   with widths 1024 (wide), 512 (mid), 256 (narrow);
 *   j = Concat(wide + mid, narrow) [64, 512]; probs = Softmax(j·Wh + bh) [64, 10].
 * The towers depend only on x, so a placement may run them on different devices at once; their
 * different widths give the devices different amounts of work. About 3.5 MiB of weights.
 * The graph is built but NOT checked (see example_mlp). Returns NULL only when out of memory.
 * The caller frees it with loom_graph_destroy. */
loom_graph *example_towers(void);

/* Fill DATA[N] with uniform numbers in [LO, HI) from a generator seeded with SEED: the same seed
 * gives the same numbers on every machine. */
void example_fill_uniform(float *data, size_t n, uint64_t seed, float lo, float hi);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_EXAMPLES_MODELS_H */
