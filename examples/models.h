/*
 * The small models the examples, the benchmarks and the `loom` tool's bundled models are built
 * from: a 3-layer MLP (the default), one transformer attention block, three parallel MLP
 * towers (branches a placement can spread over devices) and BERT-like encoders (BERT-base and a
 * tiny one), all with seeded random weights held as constants of the graph, so every program
 * that builds them gets the same graph.
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

/* Sizes of the MoE layer (example_moe). */
#define EXAMPLE_MOE_TOKENS 256
#define EXAMPLE_MOE_HIDDEN 512
#define EXAMPLE_MOE_INTER 2048
#define EXAMPLE_MOE_EXPERTS 8
#define EXAMPLE_MOE_K 2

/* Build a mixture-of-experts feed-forward layer, as in Mixtral or Switch Transformer:
 *   logits = x·Wr + br [256, 8]; y = x + MoE(x, logits), where each token goes to its 2
 *   experts of highest router probability and expert e is Relu(x·W1eᵀ + b1e)·W2eᵀ + b2e,
 *   512 -> 2048 -> 512 (loom_moe, weights [8, 2048, 512] and [8, 512, 2048]).
 * Only routed tokens are computed: about 2.1 GFLOP a run (512 token-expert pairs, 4.2 MFLOP
 * each). Where a plan has more than one device the experts could run on, the split_moe_experts
 * pass makes each expert a placement unit of its own, so a placement may spread them over
 * devices. About 64 MiB of weights.
 * The graph is built but NOT checked (see example_mlp). Returns NULL only when out of memory.
 * The caller frees it with loom_graph_destroy. */
loom_graph *example_moe(void);

/* Sizes of a BERT-like encoder (example_transformer): LAYERS encoder layers of width HIDDEN
 * with HEADS attention heads (HIDDEN must be a multiple of HEADS) and an FFN of width FFN, over
 * BATCH sequences of SEQ tokens drawn from a vocabulary of VOCAB. */
typedef struct example_transformer_config {
    int64_t layers, hidden, heads, ffn, seq, batch, vocab;
} example_transformer_config;

/* BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072, sequence 128, batch 1, vocabulary
 * 30522 (the sizes of bench/make_bert.py): about 110 M weights, 435 MB of float32 constants. */
#define EXAMPLE_BERT_BASE {.layers = 12, .hidden = 768, .heads = 12, .ffn = 3072, .seq = 128, \
                           .batch = 1, .vocab = 30522}
/* A small one for quick runs and tests: 4 layers, hidden 256, 4 heads, FFN 1024, sequence 64,
 * batch 1, vocabulary 1000: about 3.4 M weights, 13 MB. */
#define EXAMPLE_BERT_TINY {.layers = 4, .hidden = 256, .heads = 4, .ffn = 1024, .seq = 64, \
                           .batch = 1, .vocab = 1000}
/* Nodes of an encoder of LAYERS layers: 3 for the embeddings, 33 per layer. */
#define EXAMPLE_TRANSFORMER_NODES(layers) (3 + 33 * (layers))

/* Build a BERT-like post-norm encoder with the structure of the transformer fixture
 * (tests/fixtures/make_fixtures.py, transformer_encoder), so the graph is what the ONNX importer
 * makes of that model:
 *   input "input_ids" int64 [batch, seq];
 *   h = LayerNorm(Gather(tok_emb [vocab, hidden], input_ids) + pos_emb [seq, hidden]);
 *   per layer: Q, K, V = h·W + b (MatMul, Add), each Reshape [0, 0, heads, hidden/heads] and
 *   Transpose to heads (K to [b, h, dh, s]); A = Softmax(Q·Kᵀ * 1/sqrt(dh)) (MatMul, Mul,
 *   Softmax); ctx = A·V, Transpose, Reshape [0, 0, hidden]; h = LayerNorm(ctx·Wo + bo + h);
 *   f = h·W1 + b1; GELU with Erf: f * (Erf(f / sqrt 2) + 1) * 0.5 (Div, Erf, Add, Mul, Mul);
 *   h = LayerNorm(f·W2 + b2 + h);
 *   output "hidden" float32 [batch, seq, hidden].
 * Weights are seeded random (linear layers uniform in +-1/sqrt(fan_in)), the same on every
 * machine. EXAMPLE_TRANSFORMER_NODES(layers) nodes; no folding. The graph is built but NOT
 * checked (see example_mlp). Returns NULL when out of memory or when CONFIG is NULL or invalid
 * (a size below 1, HIDDEN not a multiple of HEADS). The caller frees it with loom_graph_destroy. */
loom_graph *example_transformer(const example_transformer_config *config);

/* example_transformer with EXAMPLE_BERT_BASE (the graph holds 435 MB of weights) and with
 * EXAMPLE_BERT_TINY. */
loom_graph *example_bert(void);
loom_graph *example_bert_tiny(void);

/* Fill DATA[N] with uniform numbers in [LO, HI) from a generator seeded with SEED: the same seed
 * gives the same numbers on every machine. */
void example_fill_uniform(float *data, size_t n, uint64_t seed, float lo, float hi);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_EXAMPLES_MODELS_H */
