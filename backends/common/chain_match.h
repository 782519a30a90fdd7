/*
 * Helpers any built-in backend may use (backends/common/): this folder includes only
 * <loom/backend.h> and the C library, so a backend that uses it still sees nothing of Loom but
 * the backend ABI (scripts/check-layers.py enforces both).
 *
 * chain_match: find the claimable chains of a loom_subgraph_desc (backend ABI 1.0,
 * loom_backend.claim and prepare_subgraph) and describe each. The chains, their rules the same
 * as passes/fuse_epilogue.c's where they overlap:
 *
 *  1. CHAIN_GEMM: Conv / MatMul / Gemm + epilogue: in this order after the head, a bias Add of a
 *     constant (per channel for a Conv without B, a row [N] for MatMul, a row for a Gemm without
 *     C), a residual Add of a value of the output's shape, and an activation (Relu, LeakyRelu,
 *     Clip with constant bounds, HardSigmoid, HardSwish, Sigmoid, x * Sigmoid(x), Gelu). A
 *     residual Add whose only reader is a LayerNormalization is left to chain 2. After a 2-D
 *     Conv, then a MaxPool without padding, dilation, ceil rounding or Indices output (not
 *     after x * Sigmoid(x)): pool set, its kernel and strides in pool_k and pool_s.
 *  2. CHAIN_ADD_LN: Add + LayerNormalization (the other addend of the Add is of the output's
 *     shape or a row of the normalised size).
 *  3. CHAIN_LN_DECOMP: LayerNorm as PyTorch exports it before opset 17: ReduceMean, Sub, Pow 2
 *     (or Mul d d), ReduceMean, Add eps, Sqrt, Div, then optionally Mul gamma and Add beta
 *     (constants), over the last axis.
 *  4. CHAIN_SOFTMAX: a scale (Mul or Div by a constant scalar) and/or a mask Add (the mask
 *     broadcast to the scores), then Softmax over the last axis.
 * Every value inside a chain but its last must be read only by the chain's nodes and not be an
 * output of the offered graph; claims never overlap (heads are taken in topological order).
 * All f32. What a backend can run, and how it compiles a chain, stay in the backend: it passes a
 * chain_runs_fn that accepts or refuses each chain found.
 *
 * Everything here is pure and thread-safe; it allocates only the view's temporaries.
 */
#ifndef LOOM_BACKENDS_COMMON_CHAIN_MATCH_H
#define LOOM_BACKENDS_COMMON_CHAIN_MATCH_H

#include <loom/backend.h>

#define CHAIN_MAX_NODES 12

/* A view of an offered graph: producers, readers, outputs. Values are numbered as in
 * loom_subgraph_desc: the set's inputs first, then each node's outputs in node order. */
typedef struct chain_view {
    const loom_subgraph_desc *g;
    uint32_t n_values;
    int32_t *prod;      /* value -> producing node, -1 for the set's inputs */
    uint32_t *slot;     /* value -> output index in its producer */
    uint32_t *out_base; /* node -> value id of its output 0 */
    uint32_t *rd_start; /* readers of value v: rd[rd_start[v] .. rd_start[v + 1]), per slot */
    uint32_t *rd;
    uint8_t *is_out;    /* value is an output of the set */
    uint8_t *taken;     /* node already in a claim */
} chain_view;

/* Build V over G (G is borrowed and must outlive V). 0 on success; -1 when G is NULL or
 * malformed (a value id out of range or read before it is produced, an output id out of range,
 * missing arrays) or memory runs out, with V left empty (chain_view_free on it is harmless). */
int chain_view_init(chain_view *v, const loom_subgraph_desc *g);

/* Free what chain_view_init allocated (not the graph). */
void chain_view_free(chain_view *v);

/* The descriptor of value X, or NULL when X is out of range. */
static inline const loom_tensor_desc *chain_desc(const chain_view *v, int32_t x)
{
    if (x < 0 || (uint32_t)x >= v->n_values)
        return NULL;
    if ((uint32_t)x < v->g->n_inputs)
        return &v->g->inputs[x];
    return &v->g->nodes[v->prod[x]].outputs[v->slot[x]];
}

/* The constant data of value X (an input of the set that is a constant; borrowed), else NULL. */
static inline const void *chain_const(const chain_view *v, int32_t x)
{
    if (x < 0 || (uint32_t)x >= v->g->n_inputs || !v->g->input_constants)
        return NULL;
    return v->g->input_constants[x];
}

/* The value input J of NODE reads, or -1 (absent, or J past its inputs). */
static inline int32_t chain_in(const chain_view *v, uint32_t node, uint32_t j)
{
    return j < v->g->nodes[node].n_inputs ? v->g->node_inputs[node][j] : -1;
}

/* The value id of NODE's output 0. */
static inline int32_t chain_out(const chain_view *v, uint32_t node)
{
    return (int32_t)v->out_base[node];
}

static inline const loom_node_desc *chain_node(const chain_view *v, uint32_t node)
{
    return &v->g->nodes[node];
}

typedef enum chain_kind {
    CHAIN_GEMM = 1,
    CHAIN_ADD_LN,
    CHAIN_LN_DECOMP,
    CHAIN_SOFTMAX
} chain_kind;

/* One chain found: its nodes in order (the head first) and what a backend needs to compile it.
 * Value fields are value ids of the view, -1 when absent. */
typedef struct chain_match {
    chain_kind kind;
    uint32_t nodes[CHAIN_MAX_NODES];
    uint32_t n;
    int32_t out;         /* the value the chain produces */
    char ops[96];        /* "MatMul+Add+Relu" */
    /* CHAIN_GEMM: the head node, bias and residual values, the activation (as FusedGemm's
     * "activation" attribute names it: "" for none, "Relu", ..., "SiLU", "Gelu", "GeluTanh")
     * and its alpha and beta */
    uint32_t head;
    int32_t bias, z;
    const char *act;
    float alpha, beta;
    int pool;                     /* a MaxPool ends the chain (FusedConv's pool attributes) */
    int64_t pool_k[2], pool_s[2];
    /* CHAIN_ADD_LN, CHAIN_LN_DECOMP: LayerNorm(X [+ R]) * scale + lbias, eps, the first
     * normalised axis */
    int32_t x, r, scale, lbias;
    float eps;
    uint32_t axis;
    /* CHAIN_SOFTMAX: Softmax(X (* or / c when has_scale; div says which) (+ mask)) */
    int32_t mask;
    int has_scale, div;
    float c;
} chain_match;

/* A backend's word on chain C found in V: nonzero when it runs (and compiles) C. CTX is what
 * the backend passed along. */
typedef int (*chain_runs_fn)(void *ctx, const chain_view *v, const chain_match *c);

/* The chain that starts at node H of V, if any: 1 with C filled, 0 when none (or H is taken).
 * Of the chains that start at H (tried in the order above), the first whose nodes are free,
 * whose intermediates stay inside it and that RUNS accepts. */
int chain_match_at(const chain_view *v, uint32_t h, chain_runs_fn runs, void *ctx,
                   chain_match *c);

/* loom_backend.claim over GRAPH with RUNS as the backend's judge: at most MAX_CLAIMS chains, their
 * node indices in NODES (MAX_NODES entries), labels the chain's ops, estimates left to the host
 * (negative). Returns the number of claims; 0 for a malformed GRAPH, NULL arrays or no memory. */
uint32_t chain_claims_find(const loom_subgraph_desc *graph, chain_runs_fn runs, void *ctx,
                           uint32_t *nodes, uint32_t max_nodes, loom_claim *claims,
                           uint32_t max_claims);

/* For prepare_subgraph: the one chain (RUNS accepting it) that is the whole of V's graph, reads
 * only the set's inputs from outside and produces exactly the set's one output. LOOM_OK with C
 * filled; else LOOM_ERR_UNSUPPORTED or LOOM_ERR_INVALID_ARGUMENT with the reason in WHY
 * ("its 3 nodes are not one chain WHO compiles (none found)"; WHO names the backend, e.g.
 * "the CPU"). */
loom_status chain_match_whole(const chain_view *v, chain_runs_fn runs, void *ctx,
                              const char *who, chain_match *c, char *why, size_t why_len);

/* The rows a CHAIN_ADD_LN, CHAIN_LN_DECOMP or CHAIN_SOFTMAX chain C works on: its output is
 * *ROWS rows of *N elements (LayerNorm: the dims from C->axis on; Softmax: the last dim). *ROWS
 * is 0 when *N is. */
void chain_rows(const chain_view *v, const chain_match *c, int64_t *rows, int64_t *n);

/* For a CHAIN_SOFTMAX chain C with a mask: the mask's element strides over the output's outer
 * dims (rank - 1 entries into OUTER; 0 where the mask repeats along that dim) and along the row
 * (*ROW: 1, or 0 when one mask element serves the whole row). All 0 when C has no mask. */
void chain_mask_strides(const chain_view *v, const chain_match *c, int64_t *outer, int64_t *row);

#endif /* LOOM_BACKENDS_COMMON_CHAIN_MATCH_H */
