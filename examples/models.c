/*
 * Graph construction of the example models (see models.h). Weights are drawn the way common
 * frameworks initialise linear layers, uniform in +-1/sqrt(fan_in), so activations keep a sane
 * scale through the layers and the softmax outputs are not saturated.
 */
#include "models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* splitmix64: tiny, good enough for weights, and identical everywhere. */
static uint64_t next_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void example_fill_uniform(float *data, size_t n, uint64_t seed, float lo, float hi)
{
    uint64_t state = seed;
    for (size_t i = 0; i < n; i++) {
        /* 24 random bits: exactly representable in a float, so the result stays below HI. */
        float u = (float)(next_u64(&state) >> 40) * (1.0f / 16777216.0f);
        data[i] = lo + (hi - lo) * u;
    }
}

/* What building one model needs besides the graph: a seed that changes for every constant, and
 * whether an allocation of ours failed (the graph's sticky error covers the library's). */
typedef struct builder {
    loom_graph *g;
    uint64_t seed;
    int out_of_memory;
} builder;

/* A constant NAME of shape DIMS[RANK] filled uniformly in [LO, HI). */
static loom_value random_constant(builder *b, const char *name, uint32_t rank, const int64_t *dims,
                                  float lo, float hi)
{
    size_t n = 1;
    for (uint32_t k = 0; k < rank; k++)
        n *= (size_t)dims[k];
    float *data = malloc(n * sizeof *data);
    if (!data) {
        b->out_of_memory = 1;
        return LOOM_NO_VALUE;
    }
    example_fill_uniform(data, n, b->seed++, lo, hi);
    /* Copied into the graph, so our buffer can go at once. */
    loom_value v = loom_constant(b->g, name, LOOM_DTYPE_F32, rank, dims, data);
    free(data);
    return v;
}

/* Weights of a linear layer FAN_IN -> FAN_OUT, laid out [FAN_IN, FAN_OUT] for X·W. */
static loom_value linear_weight(builder *b, const char *name, int64_t fan_in, int64_t fan_out)
{
    const int64_t dims[2] = {fan_in, fan_out};
    float bound = 1.0f / sqrtf((float)fan_in);
    return random_constant(b, name, 2, dims, -bound, bound);
}

static loom_value linear_bias(builder *b, const char *name, int64_t fan_in, int64_t fan_out)
{
    const int64_t dims[1] = {fan_out};
    float bound = 1.0f / sqrtf((float)fan_in);
    return random_constant(b, name, 1, dims, -bound, bound);
}

/* Y = X·W + B as one Gemm node. */
static loom_value dense(builder *b, loom_value x, const char *name, int64_t fan_in,
                        int64_t fan_out)
{
    char wname[64], bname[64];
    snprintf(wname, sizeof wname, "%s.weight", name);
    snprintf(bname, sizeof bname, "%s.bias", name);
    loom_value w = linear_weight(b, wname, fan_in, fan_out);
    loom_value bias = linear_bias(b, bname, fan_in, fan_out);
    loom_value y = loom_gemm(b->g, x, w, bias, 1.0f, 1.0f, 0, 0);
    /* Naming and marking outputs fail only after an earlier builder error, which
     * loom_graph_check reports; their statuses add nothing, so they are not kept. */
    (void)loom_value_set_name(b->g, y, name);
    return y;
}

/* Drop the graph when one of our own allocations failed; otherwise hand it over, errors and
 * all, for loom_graph_check to report. */
static loom_graph *finish(builder *b)
{
    if (b->out_of_memory) {
        loom_graph_destroy(b->g);
        return NULL;
    }
    return b->g;
}

loom_graph *example_mlp(void)
{
    builder b = {loom_graph_create("mlp"), 0x4D4C50ull, 0};
    if (!b.g)
        return NULL;

    const int64_t in_dims[2] = {EXAMPLE_MLP_BATCH, EXAMPLE_MLP_IN};
    loom_value x = loom_input(b.g, "x", LOOM_DTYPE_F32, 2, in_dims);
    loom_value h = loom_relu(b.g, dense(&b, x, "fc1", EXAMPLE_MLP_IN, EXAMPLE_MLP_HIDDEN1));
    h = loom_relu(b.g, dense(&b, h, "fc2", EXAMPLE_MLP_HIDDEN1, EXAMPLE_MLP_HIDDEN2));
    loom_value logits = dense(&b, h, "fc3", EXAMPLE_MLP_HIDDEN2, EXAMPLE_MLP_OUT);
    loom_value probs = loom_softmax(b.g, logits, 1);
    (void)loom_output(b.g, probs, "probs");
    return finish(&b);
}

/* [1, S, D] -> [1, H, S, D/H]: the heads become a batch dimension for MatMul. */
static loom_value split_heads(loom_graph *g, loom_value x)
{
    const int64_t shape[4] = {1, EXAMPLE_ATTN_SEQ, EXAMPLE_ATTN_HEADS,
                              EXAMPLE_ATTN_DMODEL / EXAMPLE_ATTN_HEADS};
    const int64_t perm[4] = {0, 2, 1, 3};
    return loom_transpose(g, loom_reshape(g, x, 4, shape), perm);
}

loom_graph *example_attention(void)
{
    builder b = {loom_graph_create("attention"), 0x415454ull, 0};
    if (!b.g)
        return NULL;
    loom_graph *g = b.g;
    const int64_t d = EXAMPLE_ATTN_DMODEL;
    const int64_t d_head = EXAMPLE_ATTN_DMODEL / EXAMPLE_ATTN_HEADS;

    const int64_t x_dims[3] = {1, EXAMPLE_ATTN_SEQ, EXAMPLE_ATTN_DMODEL};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 3, x_dims);

    const int64_t vec_dims[1] = {d};
    loom_value gamma = random_constant(&b, "ln.scale", 1, vec_dims, 0.9f, 1.1f);
    loom_value beta = random_constant(&b, "ln.bias", 1, vec_dims, -0.1f, 0.1f);
    loom_value h = loom_layer_norm(g, x, gamma, beta, 2, 1e-5f);
    (void)loom_value_set_name(g, h, "ln");

    loom_value q = split_heads(g, loom_matmul(g, h, linear_weight(&b, "wq", d, d)));
    loom_value k = split_heads(g, loom_matmul(g, h, linear_weight(&b, "wk", d, d)));
    loom_value v = split_heads(g, loom_matmul(g, h, linear_weight(&b, "wv", d, d)));

    /* Kᵀ per head: [1, H, S, dh] -> [1, H, dh, S]. */
    const int64_t kt_perm[4] = {0, 1, 3, 2};
    loom_value kt = loom_transpose(g, k, kt_perm);
    loom_value scores = loom_matmul(g, q, kt);
    scores = loom_mul(g, scores, loom_constant_f32(g, 1.0f / sqrtf((float)d_head)));
    loom_value attn = loom_softmax(g, scores, 3);
    (void)loom_value_set_name(g, attn, "attn");
    loom_value ctx = loom_matmul(g, attn, v); /* [1, H, S, dh] */

    /* Merge the heads back: [1, H, S, dh] -> [1, S, H, dh] -> [1, S, D]. */
    const int64_t merge_perm[4] = {0, 2, 1, 3};
    ctx = loom_reshape(g, loom_transpose(g, ctx, merge_perm), 3, x_dims);

    loom_value proj = loom_matmul(g, ctx, linear_weight(&b, "wo", d, d));
    loom_value y = loom_add(g, x, proj);
    (void)loom_output(g, y, "y");
    return finish(&b);
}

/* One tower: IN -> WIDTH -> IN, each layer a Gemm and a Relu, layers named PREFIX.fc1/.fc2. */
static loom_value tower(builder *b, loom_value x, const char *prefix, int64_t width)
{
    char n1[32], n2[32];
    snprintf(n1, sizeof n1, "%s.fc1", prefix);
    snprintf(n2, sizeof n2, "%s.fc2", prefix);
    loom_value h = loom_relu(b->g, dense(b, x, n1, EXAMPLE_TOWERS_IN, width));
    return loom_relu(b->g, dense(b, h, n2, width, EXAMPLE_TOWERS_IN));
}

loom_graph *example_towers(void)
{
    builder b = {loom_graph_create("towers"), 0x544F57ull, 0};
    if (!b.g)
        return NULL;
    loom_graph *g = b.g;
    const int64_t in_dims[2] = {EXAMPLE_TOWERS_BATCH, EXAMPLE_TOWERS_IN};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, in_dims);
    loom_value wide = tower(&b, x, "wide", EXAMPLE_TOWERS_WIDE);
    loom_value mid = tower(&b, x, "mid", EXAMPLE_TOWERS_MID);
    loom_value narrow = tower(&b, x, "narrow", EXAMPLE_TOWERS_NARROW);
    loom_value sum = loom_add(g, wide, mid);
    (void)loom_value_set_name(g, sum, "wide+mid");
    const loom_value parts[2] = {sum, narrow};
    loom_value joined = loom_concat(g, parts, 2, 1);
    (void)loom_value_set_name(g, joined, "joined");
    loom_value logits = dense(&b, joined, "head", 2 * EXAMPLE_TOWERS_IN, EXAMPLE_TOWERS_OUT);
    loom_value probs = loom_softmax(g, logits, 1);
    (void)loom_output(g, probs, "probs");
    return finish(&b);
}

loom_graph *example_moe(void)
{
    builder b = {loom_graph_create("moe"), 0x4D6F45ull, 0};
    if (!b.g)
        return NULL;
    loom_graph *g = b.g;
    const int64_t T = EXAMPLE_MOE_TOKENS, H = EXAMPLE_MOE_HIDDEN, I = EXAMPLE_MOE_INTER,
                  E = EXAMPLE_MOE_EXPERTS;
    const int64_t in_dims[2] = {T, H};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, in_dims);
    loom_value logits = dense(&b, x, "router", H, E);
    /* Each expert's weights as PyTorch's nn.Linear stores them ([out, in]), drawn as a linear
     * layer's: uniform in +-1/sqrt(fan_in). */
    const float r1 = 1.0f / sqrtf((float)H), r2 = 1.0f / sqrtf((float)I);
    const int64_t w1_dims[3] = {E, I, H}, b1_dims[2] = {E, I};
    const int64_t w2_dims[3] = {E, H, I}, b2_dims[2] = {E, H};
    loom_value w1 = random_constant(&b, "experts.fc1.weight", 3, w1_dims, -r1, r1);
    loom_value b1 = random_constant(&b, "experts.fc1.bias", 2, b1_dims, -r1, r1);
    loom_value w2 = random_constant(&b, "experts.fc2.weight", 3, w2_dims, -r2, r2);
    loom_value b2 = random_constant(&b, "experts.fc2.bias", 2, b2_dims, -r2, r2);
    loom_value y = loom_moe(g, x, logits, w1, b1, w2, b2, EXAMPLE_MOE_K, "relu");
    (void)loom_value_set_name(g, y, "moe");
    (void)loom_output(g, loom_add(g, x, y), "y");
    return finish(&b);
}

/* ---- BERT-like encoders ------------------------------------------------------------------- */

/* Y = X·W + B as MatMul then Add (as the fixture and PyTorch's exporter write a linear layer on
 * a 3-D input), the output named NAME. */
static loom_value linear3(builder *b, loom_value x, const char *name, int64_t fan_in,
                          int64_t fan_out)
{
    char wname[64], bname[64], mname[64];
    snprintf(wname, sizeof wname, "%s.weight", name);
    snprintf(bname, sizeof bname, "%s.bias", name);
    snprintf(mname, sizeof mname, "%s.matmul", name);
    loom_value w = linear_weight(b, wname, fan_in, fan_out);
    const int64_t bias_dims[1] = {fan_out};
    loom_value bias = random_constant(b, bname, 1, bias_dims, -0.02f, 0.02f);
    loom_value m = loom_matmul(b->g, x, w);
    (void)loom_value_set_name(b->g, m, mname);
    loom_value y = loom_add(b->g, m, bias);
    (void)loom_value_set_name(b->g, y, name);
    return y;
}

/* LayerNormalization over the last axis with scale near 1 and bias near 0, output named NAME. */
static loom_value layer_norm(builder *b, loom_value x, const char *name, int64_t width)
{
    char sname[64], bname[64];
    snprintf(sname, sizeof sname, "%s.scale", name);
    snprintf(bname, sizeof bname, "%s.bias", name);
    const int64_t dims[1] = {width};
    loom_value gamma = random_constant(b, sname, 1, dims, 0.9f, 1.1f);
    loom_value beta = random_constant(b, bname, 1, dims, -0.1f, 0.1f);
    loom_value y = loom_layer_norm(b->g, x, gamma, beta, -1, 1e-5f);
    (void)loom_value_set_name(b->g, y, name);
    return y;
}

/* Name VALUE "PREFIX.WHAT" and return it. */
static loom_value named(builder *b, loom_value v, const char *prefix, const char *what)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%s", prefix, what);
    (void)loom_value_set_name(b->g, v, name);
    return v;
}

/* One encoder layer over H [batch, seq, hidden] (33 nodes), values named "lN.*". */
static loom_value encoder_layer(builder *b, const example_transformer_config *c, int layer,
                                loom_value h, loom_value inv_sqrt_dh, loom_value sqrt2,
                                loom_value one, loom_value half)
{
    loom_graph *g = b->g;
    const int64_t d = c->hidden, dh = c->hidden / c->heads;
    const int64_t split[4] = {0, 0, c->heads, dh}, merge[3] = {0, 0, d};
    const int64_t to_heads[4] = {0, 2, 1, 3}, to_heads_t[4] = {0, 2, 3, 1};
    char p[16], n[64];
    snprintf(p, sizeof p, "l%d", layer);

    snprintf(n, sizeof n, "%s.q", p);
    loom_value q = linear3(b, h, n, d, d);
    snprintf(n, sizeof n, "%s.k", p);
    loom_value k = linear3(b, h, n, d, d);
    snprintf(n, sizeof n, "%s.v", p);
    loom_value v = linear3(b, h, n, d, d);
    q = named(b, loom_transpose(g, named(b, loom_reshape(g, q, 4, split), p, "q_heads"),
                                to_heads), p, "qt");                       /* B H S Dh */
    k = named(b, loom_transpose(g, named(b, loom_reshape(g, k, 4, split), p, "k_heads"),
                                to_heads_t), p, "kt");                     /* B H Dh S */
    v = named(b, loom_transpose(g, named(b, loom_reshape(g, v, 4, split), p, "v_heads"),
                                to_heads), p, "vt");                       /* B H S Dh */
    loom_value s = named(b, loom_matmul(g, q, k), p, "qk");
    s = named(b, loom_mul(g, s, inv_sqrt_dh), p, "scores");
    loom_value a = named(b, loom_softmax(g, s, -1), p, "probs");
    loom_value ctx = named(b, loom_matmul(g, a, v), p, "ctx");             /* B H S Dh */
    ctx = named(b, loom_transpose(g, ctx, to_heads), p, "ctx_t");          /* B S H Dh */
    ctx = named(b, loom_reshape(g, ctx, 3, merge), p, "ctx_merged");
    snprintf(n, sizeof n, "%s.o", p);
    loom_value o = linear3(b, ctx, n, d, d);
    snprintf(n, sizeof n, "%s.ln1", p);
    h = layer_norm(b, named(b, loom_add(g, o, h), p, "res1"), n, d);

    snprintf(n, sizeof n, "%s.ffn1", p);
    loom_value f = linear3(b, h, n, d, c->ffn);
    loom_value e = named(b, loom_erf(g, named(b, loom_div(g, f, sqrt2), p, "gelu_div")), p,
                         "gelu_erf");
    e = named(b, loom_add(g, e, one), p, "gelu_add");
    loom_value gelu = named(b, loom_mul(g, named(b, loom_mul(g, f, e), p, "gelu_mul"), half), p,
                            "gelu");
    snprintf(n, sizeof n, "%s.ffn2", p);
    loom_value f2 = linear3(b, gelu, n, c->ffn, d);
    snprintf(n, sizeof n, "%s.ln2", p);
    return layer_norm(b, named(b, loom_add(g, f2, h), p, "res2"), n, d);
}

loom_graph *example_transformer(const example_transformer_config *c)
{
    if (!c || c->layers < 1 || c->hidden < 1 || c->heads < 1 || c->ffn < 1 || c->seq < 1 ||
        c->batch < 1 || c->vocab < 1 || c->hidden % c->heads || c->layers > 1000)
        return NULL;
    builder b = {loom_graph_create("transformer"), 0x424552ull, 0};
    if (!b.g)
        return NULL;
    loom_graph *g = b.g;
    const int64_t d = c->hidden;

    const int64_t ids_dims[2] = {c->batch, c->seq};
    loom_value ids = loom_input(g, "input_ids", LOOM_DTYPE_I64, 2, ids_dims);
    const int64_t tok_dims[2] = {c->vocab, d}, pos_dims[2] = {c->seq, d};
    loom_value tok = random_constant(&b, "tok_emb", 2, tok_dims, -1.0f, 1.0f);
    loom_value pos = random_constant(&b, "pos_emb", 2, pos_dims, -0.5f, 0.5f);
    loom_value h = loom_gather(g, tok, ids, 0);
    (void)loom_value_set_name(g, h, "embed");
    h = loom_add(g, h, pos);
    (void)loom_value_set_name(g, h, "embed_pos");
    h = layer_norm(&b, h, "embed_ln", d);

    loom_value inv_sqrt_dh = loom_constant_f32(g, 1.0f / sqrtf((float)(d / c->heads)));
    loom_value sqrt2 = loom_constant_f32(g, sqrtf(2.0f));
    loom_value one = loom_constant_f32(g, 1.0f);
    loom_value half = loom_constant_f32(g, 0.5f);
    for (int layer = 0; layer < (int)c->layers && !b.out_of_memory; layer++)
        h = encoder_layer(&b, c, layer, h, inv_sqrt_dh, sqrt2, one, half);
    (void)loom_output(g, h, "hidden");
    return finish(&b);
}

loom_graph *example_bert(void)
{
    const example_transformer_config c = EXAMPLE_BERT_BASE;
    return example_transformer(&c);
}

loom_graph *example_bert_tiny(void)
{
    const example_transformer_config c = EXAMPLE_BERT_TINY;
    return example_transformer(&c);
}
