/*
 * The BERT-like encoders of examples/models.c (what `loom profile --model bert|bert-tiny`
 * builds): the graph has the fixture encoder's structure (tests/fixtures/make_fixtures.py,
 * transformer_encoder): its input and output, 3 + 33 nodes per layer with the operator counts
 * of that model, the weights' shapes, and the same weights on every build. The tiny encoder is
 * also planned on the CPU and run once (finite output of the right shape). BERT-base itself
 * (435 MB) is not built here: its sizes are only checked through the config macro.
 */
#define _POSIX_C_SOURCE 200809L
#include <loom/loom.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models.h"

/* Nodes of G whose op is OP. */
static size_t count_op(const loom_graph *g, const char *op)
{
    size_t n = 0;
    for (size_t i = 0; i < loom_graph_node_count(g); i++)
        n += !strcmp(loom_graph_node_op(g, i), op);
    return n;
}

/* Shape of the value named NAME as "d0xd1x..." into BUF (empty when there is none). */
static const char *shape_of(const loom_graph *g, const char *name, char *buf, size_t len)
{
    uint32_t rank = 0;
    int64_t dims[LOOM_MAX_RANK];
    buf[0] = '\0';
    loom_value v = loom_graph_find_value(g, name);
    if (v == LOOM_NO_VALUE || loom_value_info(g, v, NULL, &rank, dims) != LOOM_OK)
        return buf;
    size_t k = 0;
    for (uint32_t i = 0; i < rank && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? "x" : "", (long long)dims[i]);
    return buf;
}

static void check_structure(const example_transformer_config *c)
{
    loom_graph *g = example_transformer(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    CU_ASSERT_EQUAL(loom_graph_node_count(g), (size_t)EXAMPLE_TRANSFORMER_NODES(c->layers));
    const size_t l = (size_t)c->layers;
    CU_ASSERT_EQUAL(count_op(g, "Gather"), 1);
    CU_ASSERT_EQUAL(count_op(g, "LayerNormalization"), 1 + 2 * l);
    CU_ASSERT_EQUAL(count_op(g, "MatMul"), 8 * l);   /* q k v o ffn1 ffn2, QKᵀ, AV */
    CU_ASSERT_EQUAL(count_op(g, "Softmax"), l);
    CU_ASSERT_EQUAL(count_op(g, "Erf"), l);
    CU_ASSERT_EQUAL(count_op(g, "Div"), l);
    CU_ASSERT_EQUAL(count_op(g, "Mul"), 3 * l);      /* scale, two of GELU */
    CU_ASSERT_EQUAL(count_op(g, "Add"), 1 + 9 * l);  /* pos; 6 biases, 2 residuals, GELU's */
    CU_ASSERT_EQUAL(count_op(g, "Reshape"), 4 * l);
    CU_ASSERT_EQUAL(count_op(g, "Transpose"), 4 * l);

    CU_ASSERT_EQUAL(loom_graph_input_count(g), 1);
    CU_ASSERT_EQUAL(loom_graph_output_count(g), 1);
    loom_dtype dt;
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK];
    CU_ASSERT_STRING_EQUAL(loom_value_name(g, loom_graph_input(g, 0)), "input_ids");
    CU_ASSERT_EQUAL(loom_value_info(g, loom_graph_input(g, 0), &dt, &rank, dims), LOOM_OK);
    CU_ASSERT(dt == LOOM_DTYPE_I64 && rank == 2 && dims[0] == c->batch && dims[1] == c->seq);
    CU_ASSERT_STRING_EQUAL(loom_value_name(g, loom_graph_output(g, 0)), "hidden");
    CU_ASSERT_EQUAL(loom_value_info(g, loom_graph_output(g, 0), &dt, &rank, dims), LOOM_OK);
    CU_ASSERT(dt == LOOM_DTYPE_F32 && rank == 3 && dims[0] == c->batch && dims[1] == c->seq &&
              dims[2] == c->hidden);

    char got[64], want[64];
    snprintf(want, sizeof want, "%lldx%lld", (long long)c->vocab, (long long)c->hidden);
    CU_ASSERT_STRING_EQUAL(shape_of(g, "tok_emb", got, sizeof got), want);
    snprintf(want, sizeof want, "%lldx%lld", (long long)c->hidden, (long long)c->ffn);
    CU_ASSERT_STRING_EQUAL(shape_of(g, "l0.ffn1.weight", got, sizeof got), want);
    snprintf(want, sizeof want, "%lldx%lldx%lldx%lld", (long long)c->batch, (long long)c->heads,
             (long long)c->seq, (long long)c->seq);
    CU_ASSERT_STRING_EQUAL(shape_of(g, "l0.probs", got, sizeof got), want);
    snprintf(want, sizeof want, "%lldx%lldx%lldx%lld", (long long)c->batch, (long long)c->heads,
             (long long)(c->hidden / c->heads), (long long)c->seq);
    CU_ASSERT_STRING_EQUAL(shape_of(g, "l0.kt", got, sizeof got), want);
    loom_graph_destroy(g);
}

static void test_tiny_structure(void)
{
    const example_transformer_config c = EXAMPLE_BERT_TINY;
    check_structure(&c);
}

/* Batch 2, 2 layers, 2 heads: the batch and head dims are not hard-wired to 1 and 4. */
static void test_other_sizes(void)
{
    const example_transformer_config c = {.layers = 2, .hidden = 32, .heads = 2, .ffn = 48,
                                          .seq = 5, .batch = 2, .vocab = 7};
    check_structure(&c);
}

static void test_base_sizes(void)
{
    const example_transformer_config c = EXAMPLE_BERT_BASE;
    CU_ASSERT(c.layers == 12 && c.hidden == 768 && c.heads == 12 && c.ffn == 3072 &&
              c.seq == 128 && c.batch == 1 && c.vocab == 30522);
    CU_ASSERT_EQUAL(EXAMPLE_TRANSFORMER_NODES(c.layers), 399);
}

static void test_bad_config(void)
{
    example_transformer_config c = EXAMPLE_BERT_TINY;
    CU_ASSERT_PTR_NULL(example_transformer(NULL));
    c.heads = 3; /* 256 is not a multiple of 3 */
    CU_ASSERT_PTR_NULL(example_transformer(&c));
    c.heads = 4;
    c.seq = 0;
    CU_ASSERT_PTR_NULL(example_transformer(&c));
}

/* Two builds give the same weights (seeded), and the tiny encoder runs on the CPU. */
static void test_tiny_runs(void)
{
    loom_graph *g = example_bert_tiny(), *g2 = example_bert_tiny();
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g2);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g2), LOOM_OK);
    loom_graph_destroy(g2);

    setenv("LOOM_OPENCL", "0", 1); /* the CPU only: no driver started for nothing */
    loom_runtime *rt = NULL;
    loom_runtime_options ro = {.struct_size = sizeof ro, .cpu_threads = 2,
                               .no_default_plugins = 1};
    CU_ASSERT_EQUAL_FATAL(loom_runtime_create(&ro, &rt), LOOM_OK);
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu:0"};
    loom_plan *plan = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &po, &plan), LOOM_OK);
    const example_transformer_config c = EXAMPLE_BERT_TINY;
    const int64_t ids_dims[2] = {c.batch, c.seq};
    loom_tensor *ids = NULL, *out = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_I64, 2, ids_dims, &ids), LOOM_OK);
    int64_t *id = loom_tensor_data(ids);
    for (int64_t i = 0; i < c.batch * c.seq; i++)
        id[i] = (i * 37) % c.vocab;
    const int64_t out_dims[3] = {c.batch, c.seq, c.hidden};
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 3, out_dims, &out), LOOM_OK);
    const loom_tensor *in[1] = {ids};
    CU_ASSERT_EQUAL_FATAL(loom_plan_run(plan, in, 1, &out, 1, NULL), LOOM_OK);
    const float *y = loom_tensor_data(out);
    int finite = 1;
    double sum_sq = 0;
    for (int64_t i = 0; i < c.batch * c.seq * c.hidden; i++) {
        finite &= isfinite(y[i]) != 0;
        sum_sq += (double)y[i] * y[i];
    }
    CU_ASSERT(finite);
    /* The last LayerNorm makes each row about unit variance (scale near 1). */
    double rms = sqrt(sum_sq / (double)(c.batch * c.seq * c.hidden));
    CU_ASSERT(rms > 0.5 && rms < 2.0);
    loom_tensor_destroy(out);
    loom_tensor_destroy(ids);
    loom_plan_destroy(plan);
    loom_runtime_destroy(rt);
    loom_graph_destroy(g);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"tiny encoder structure", test_tiny_structure},
        {"other sizes", test_other_sizes},
        {"BERT-base sizes", test_base_sizes},
        {"bad configurations", test_bad_config},
        {"tiny encoder runs on the CPU", test_tiny_runs},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"models", tests, NULL, NULL, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
