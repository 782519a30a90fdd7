/*
 * Symbolic dimensions in a graph built in C (docs/api.md, "Symbolic dims in C graphs"): a
 * [batch, seq, 4] input, a projection to 3 features, and a Reshape that merges batch and seq;
 * one model runs it at two shapes, each shape getting its own plan over one copy of the weights.
 * Exits 0 when both runs give what a naive loop gives, 1 otherwise. tests/meson.build runs it.
 */
#include <loom/loom.h>

#include <math.h>
#include <stdio.h>

int main(void)
{
    static const float w[4 * 3] = {1, 0, 0.5f, 0, 1, -0.5f, 2, 0, 0, 0, -1, 1};
    loom_runtime *rt = NULL;
    if (loom_runtime_create(NULL, &rt) != LOOM_OK) {
        fprintf(stderr, "runtime: %s\n", loom_last_error());
        return 1;
    }

    /* x: [batch, seq, 4]; y = Reshape(x @ W, [-1, 3]): [batch*seq, 3]. */
    loom_graph *g = loom_graph_create("symbolic_dims");
    const int64_t xd[3] = {-1, -1, 4}, wd[2] = {4, 3}, shape[2] = {-1, 3};
    const char *names[3] = {"batch", "seq", NULL};
    loom_value x = loom_input_symbolic(g, "x", LOOM_DTYPE_F32, 3, xd, names);
    loom_value wv = loom_constant(g, "W", LOOM_DTYPE_F32, 2, wd, w);
    loom_value y = loom_reshape(g, loom_matmul(g, x, wv), 2, shape);
    loom_output(g, y, "y");
    if (loom_graph_check(g) != LOOM_OK) {
        fprintf(stderr, "graph: %s\n", loom_last_error());
        return 1;
    }
    char expr[64];
    loom_value_dim_expr(g, y, 0, expr, sizeof expr); /* "batch*seq" */
    printf("y is [%s, 3]\n", expr);

    loom_model *m = NULL; /* takes the graph: loom_model_destroy frees it */
    if (loom_model_from_graph(rt, g, NULL, &m) != LOOM_OK) {
        fprintf(stderr, "model: %s\n", loom_last_error());
        return 1;
    }
    int bad = 0;
    const int64_t shapes[2][3] = {{1, 5, 4}, {3, 2, 4}};
    for (int r = 0; r < 2; r++) {
        loom_tensor *in = NULL, *out[1] = {NULL};
        loom_tensor_create(LOOM_DTYPE_F32, 3, shapes[r], &in);
        float *xp = loom_tensor_data(in);
        int64_t rows = shapes[r][0] * shapes[r][1];
        for (int64_t i = 0; i < rows * 4; i++)
            xp[i] = (float)(i % 7) - 3.0f;
        const loom_tensor *ins[1] = {in};
        loom_model_run_stats rs = {.struct_size = sizeof rs};
        if (loom_model_run(m, ins, 1, out, 1, &rs) != LOOM_OK) {
            fprintf(stderr, "run: %s\n", loom_last_error());
            return 1;
        }
        const float *yp = loom_tensor_data(out[0]);
        for (int64_t i = 0; i < rows; i++)
            for (int j = 0; j < 3; j++) {
                float want = 0;
                for (int k = 0; k < 4; k++)
                    want += xp[i * 4 + k] * w[k * 3 + j];
                bad += fabsf(yp[i * 3 + j] - want) > 1e-5f;
            }
        printf("batch %lld, seq %lld: y [%lld, 3], new plan: %s (%.2f ms)\n",
               (long long)shapes[r][0], (long long)shapes[r][1], (long long)rows,
               rs.cache_hit ? "no" : "yes", rs.create_ms);
        loom_tensor_destroy(out[0]);
        loom_tensor_destroy(in);
    }
    loom_model_destroy(m);
    loom_runtime_destroy(rt);
    return bad ? 1 : 0;
}
