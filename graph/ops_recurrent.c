/*
 * Recurrent operators of the registry: LSTM, GRU and RNN. Shape and dtype inference, attribute
 * canonicalisation and cost, with ONNX opset-18 semantics.
 *
 * CANONICAL ATTRIBUTES:
 *   LSTM                 direction:s ("forward" | "reverse" | "bidirectional") hidden_size:i
 *                        layout:i clip:f (+inf: none) input_forget:i
 *   GRU                  direction:s hidden_size:i layout:i clip:f linear_before_reset:i
 *                        (LSTM and GRU: default activations only; an 'activations' attribute,
 *                        ONNX's list of strings, may be given as one comma-separated string and
 *                        must name the defaults. sequence_lens, when given, is read at run time.)
 *   RNN                  direction:s hidden_size:i layout:i clip:f (default activation Tanh only)
 */

#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T LOOM_FLOPS_TRANSCENDENTAL

#define INVALID LOOM_ERR_INVALID_ARGUMENT

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        loom_status st_ = (expr);                                                                  \
        if (st_ != LOOM_OK)                                                                        \
            return st_;                                                                            \
    } while (0)

static int is_one_of(const char *s, const char *const *set)
{
    for (size_t k = 0; set[k]; k++)
        if (strcmp(s, set[k]) == 0)
            return 1;
    return 0;
}

/* Whether the comma-separated names in LIST (case-insensitive, blanks ignored) are DEFS
 * repeated for each of DIRS directions. */
static int default_activations(const char *list, const char *const *defs, size_t n_defs,
                               int64_t dirs)
{
    const char *p = list;
    for (int64_t d = 0; d < dirs; d++) {
        for (size_t k = 0; k < n_defs; k++) {
            while (*p == ' ' || *p == ',')
                p++;
            size_t l = strlen(defs[k]);
            for (size_t j = 0; j < l; j++)
                if (tolower((unsigned char)p[j]) != tolower((unsigned char)defs[k][j]))
                    return 0;
            p += l;
            if (*p && *p != ',' && *p != ' ')
                return 0;
        }
    }
    while (*p == ' ' || *p == ',')
        p++;
    return *p == 0;
}

/* KIND: 0 GRU, 1 LSTM, 2 RNN (the plain Elman cell). */
static loom_status infer_rnn(loom_infer_ctx *ctx, int kind)
{
    const int lstm = kind == 1, plain = kind == 2;
    static const char *const lstm_names[] = {"activation_alpha", "activation_beta",
                                             "activations",      "clip",
                                             "direction",        "hidden_size",
                                             "input_forget",     "layout",
                                             NULL};
    static const loom_attr_kind lstm_kinds[] = {LOOM_ATTR_FLOATS, LOOM_ATTR_FLOATS,
                                                LOOM_ATTR_STRING, LOOM_ATTR_FLOAT,
                                                LOOM_ATTR_STRING, LOOM_ATTR_INT,
                                                LOOM_ATTR_INT,    LOOM_ATTR_INT};
    static const char *const gru_names[] = {"activation_alpha", "activation_beta",
                                            "activations",      "clip",
                                            "direction",        "hidden_size",
                                            "linear_before_reset", "layout",
                                            NULL};
    static const char *const lstm_canon[] = {"direction", "hidden_size", "layout", "clip",
                                             "input_forget", NULL};
    static const char *const gru_canon[] = {"direction", "hidden_size", "layout", "clip",
                                            "linear_before_reset", NULL};
    static const char *const rnn_names[] = {"activation_alpha", "activation_beta", "activations",
                                            "clip", "direction", "hidden_size", "layout", NULL};
    static const loom_attr_kind rnn_kinds[] = {LOOM_ATTR_FLOATS, LOOM_ATTR_FLOATS,
                                               LOOM_ATTR_STRING, LOOM_ATTR_FLOAT,
                                               LOOM_ATTR_STRING, LOOM_ATTR_INT, LOOM_ATTR_INT};
    static const char *const rnn_canon[] = {"direction", "hidden_size", "layout", "clip", NULL};
    static const char *const rnn_acts[] = {"Tanh"};
    static const char *const lstm_acts[] = {"Sigmoid", "Tanh", "Tanh"};
    static const char *const gru_acts[] = {"Sigmoid", "Tanh"};
    static const char *const dirs_names[] = {"forward", "reverse", "bidirectional", NULL};
    static const char *const lstm_in[] = {"X", "W", "R", "B", "sequence_lens", "initial_h",
                                          "initial_c", "P"};
    static const char *const gru_in[] = {"X", "W", "R", "B", "sequence_lens", "initial_h"};
    const char *const *in_names = lstm ? lstm_in : gru_in;
    const int64_t gates = lstm ? 4 : plain ? 1 : 3;
    TRY(loom_infer_check_attrs(ctx, lstm ? lstm_names : plain ? rnn_names : gru_names,
                               plain ? rnn_kinds : lstm_kinds));
    TRY(loom_ops_require(ctx, 0, "X"));
    TRY(loom_ops_require(ctx, 1, "W"));
    TRY(loom_ops_require(ctx, 2, "R"));
    TRY(loom_ops_check_dtype(ctx, 0, "X", LOOM_DTS(LOOM_DTYPE_F32)));
    const char *dir = loom_infer_get_string(ctx, "direction", "forward");
    if (!is_one_of(dir, dirs_names))
        return loom_infer_fail(ctx, INVALID,
                               "direction is '%s'; expected forward, reverse or bidirectional",
                               dir);
    const int64_t nd = strcmp(dir, "bidirectional") == 0 ? 2 : 1;
    const char *acts = loom_infer_get_string(ctx, "activations", NULL);
    if (acts && !default_activations(acts, lstm ? lstm_acts : plain ? rnn_acts : gru_acts,
                                     lstm ? 3 : plain ? 1 : 2, nd))
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "activations '%s' are not supported: only the defaults (%s)",
                               acts,
                               lstm ? "Sigmoid, Tanh, Tanh" : plain ? "Tanh" : "Sigmoid, Tanh");
    int64_t layout = loom_infer_get_int(ctx, "layout", 0);
    if (layout != 0 && layout != 1)
        return loom_infer_fail(ctx, INVALID, "layout is %lld; expected 0 or 1",
                               (long long)layout);
    const loom_tensor_desc *x = &ctx->inputs[0], *w = &ctx->inputs[1], *r = &ctx->inputs[2];
    if (x->rank != 3)
        return loom_infer_fail(ctx, INVALID, "input 0 (X) must be 3-D, not of rank %u", x->rank);
    const int64_t seq = layout ? x->dims[1] : x->dims[0];
    const int64_t batch = layout ? x->dims[0] : x->dims[1];
    const int64_t in_size = x->dims[2];
    int64_t h = loom_infer_get_int(ctx, "hidden_size", -1);
    if (r->rank == 3 && h < 0)
        h = r->dims[2];
    if (h < 1)
        return loom_infer_fail(ctx, INVALID, "hidden_size must be at least 1");
    char want[128];
    const int64_t wd[3] = {nd, gates * h, in_size}, rd[3] = {nd, gates * h, h};
    for (uint32_t i = 1; i < ctx->n_inputs && i < (lstm ? 8u : 6u); i++) {
        if (!loom_ops_has(ctx, i))
            continue;
        const loom_tensor_desc *t = &ctx->inputs[i];
        int64_t e[3];
        uint32_t er = 3;
        switch (i) {
        case 1: memcpy(e, wd, sizeof e); break;
        case 2: memcpy(e, rd, sizeof e); break;
        case 3: er = 2, e[0] = nd, e[1] = 2 * gates * h; break;
        case 4: er = 1, e[0] = batch; break;
        case 5:
        case 6:
            e[0] = layout ? batch : nd, e[1] = layout ? nd : batch, e[2] = h;
            break;
        default: er = 2, e[0] = nd, e[1] = 3 * h; break;
        }
        if (i == 4)
            TRY(loom_ops_check_dtype(ctx, i, in_names[i], LOOM_DTS(LOOM_DTYPE_I32)));
        else
            TRY(loom_ops_same_dtype(ctx, i, in_names[i], 0));
        int ok = t->rank == er;
        for (uint32_t k = 0; ok && k < er; k++)
            ok = t->dims[k] == e[k];
        if (!ok) {
            char got[128];
            return loom_infer_fail(ctx, INVALID, "input %u (%s) has shape %s; expected %s", i,
                                   in_names[i], loom_dims_format(t->rank, t->dims, got, sizeof got),
                                   loom_dims_format(er, e, want, sizeof want));
        }
    }
    (void)w;
    float clip = loom_infer_get_float(ctx, "clip", INFINITY);
    if (!(clip > 0.0f))
        return loom_infer_fail(ctx, INVALID, "clip must be positive, got %g", (double)clip);
    TRY(loom_infer_set_string(ctx, "direction", dir));
    TRY(loom_infer_set_int(ctx, "hidden_size", h));
    TRY(loom_infer_set_int(ctx, "layout", layout));
    TRY(loom_infer_set_float(ctx, "clip", clip));
    if (lstm)
        TRY(loom_infer_set_int(ctx, "input_forget",
                               loom_infer_get_int(ctx, "input_forget", 0) != 0));
    else if (!plain)
        TRY(loom_infer_set_int(ctx, "linear_before_reset",
                               loom_infer_get_int(ctx, "linear_before_reset", 0) != 0));
    loom_ops_keep_only(ctx, lstm ? lstm_canon : plain ? rnn_canon : gru_canon);
    const int64_t y[4] = {layout ? batch : seq, layout ? seq : nd, layout ? nd : batch, h};
    const int64_t yh[3] = {layout ? batch : nd, layout ? nd : batch, h};
    for (uint32_t o = 0; o < ctx->n_outputs; o++) {
        if (o == 0)
            loom_ops_set_output(ctx, 0, x->dtype, 4, y);
        else
            loom_ops_set_output(ctx, o, x->dtype, 3, yh);
    }
    return loom_ops_finish(ctx);
}

static loom_status infer_lstm(loom_infer_ctx *ctx) { return infer_rnn(ctx, 1); }

static loom_status infer_gru(loom_infer_ctx *ctx) { return infer_rnn(ctx, 0); }

static loom_status infer_plain_rnn(loom_infer_ctx *ctx) { return infer_rnn(ctx, 2); }

/* Per step and direction: the input and recurrent GEMMs (2 * gates*H * (I + H) per batch row)
 * and the gates' activations. */
static void cost_rnn(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *x = &node->inputs[0], *w = &node->inputs[1];
    double steps = (double)x->dims[0] * (double)x->dims[1] * (double)w->dims[0];
    double gh = (double)w->dims[1];
    double h = gh / (node->op == LOOM_OP_LSTM ? 4.0 : node->op == LOOM_OP_RNN ? 1.0 : 3.0);
    cost->flops = steps * (2.0 * gh * ((double)x->dims[2] + h) + gh * (T + 2.0));
}

/* ---- the definitions ------------------------------------------------------------------------ */

LOOM_OPS_DEF(loom_op_def_lstm, LOOM_OP_LSTM, "LSTM", 3, 8, 1, 3, infer_lstm, cost_rnn, 0);
LOOM_OPS_DEF(loom_op_def_gru, LOOM_OP_GRU, "GRU", 3, 6, 1, 2, infer_gru, cost_rnn, 0);
LOOM_OPS_DEF(loom_op_def_rnn, LOOM_OP_RNN, "RNN", 3, 6, 1, 2, infer_plain_rnn, cost_rnn, 0);
