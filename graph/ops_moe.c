/*
 * The Mixture-of-Experts operator of the registry (MoE): what ONNX Runtime's `com.microsoft`
 * `MoE` computes, in the weight layout ONNX Runtime documents (1.23 and later; each expert's
 * weights stored as PyTorch's nn.Linear keeps them, [out_features, in_features]):
 *
 *   inputs  0 input                [tokens, hidden] or [batch, seq, hidden]
 *           1 router_probs         [tokens, num_experts]   router LOGITS (softmax taken here)
 *           2 fc1_experts_weights  [num_experts, inter, hidden]
 *           3 fc1_experts_bias     [num_experts, inter]            (optional)
 *           4 fc2_experts_weights  [num_experts, hidden, inter]
 *           5 fc2_experts_bias     [num_experts, hidden]           (optional)
 *           6 fc3_experts_weights  [num_experts, inter, hidden]    (optional: gated FFN)
 *           7 fc3_experts_bias     [num_experts, inter]            (optional, needs 6)
 *   output  0 Y, input's shape and dtype.
 *
 * For each token t: p = softmax(router_probs[t]); the k experts of largest p (ties: the lower
 * expert index first); weights w_j = p_j, divided by their sum when normalize_routing_weights
 * is 1; Y[t] = sum_j w_j * FFN_{e_j}(x[t]) with FFN_e(x) = W2_e act(W1_e x + b1_e) + b2_e, or
 * W2_e (act(W1_e x + b1_e) * (W3_e x + b3_e)) + b2_e when fc3 is given (Mixtral's gate).
 * act: relu, gelu (tanh approximation, as ONNX Runtime's MoE), silu (x * sigmoid(x)), identity.
 *
 * CANONICAL ATTRIBUTES: k:i (1 <= k <= num_experts; default 1), activation_type:s (one of the
 * four above; default "relu"), normalize_routing_weights:i (0 or 1; default 0). ONNX Runtime's
 * use_sparse_mixer is accepted when 0 and dropped; its SwiGLU-only attributes (swiglu_fusion,
 * swiglu_limit, activation_alpha, activation_beta) are accepted and dropped, since the swiglu
 * activation itself is refused.
 *
 * Cost: the work of the routed tokens only (tokens * k FFN evaluations), which is what the
 * sparse CPU kernel does; the bytes are every input once (each expert's weights are read when
 * at least one token reaches it, which for more tokens than experts is nearly all of them).
 */

#include "ops_defs.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The activations the MoE kernels implement, in the attribute's spelling. */
static const char *const k_moe_activations[] = {"relu", "gelu", "silu", "identity", NULL};

static int moe_activation_known(const char *s)
{
    for (size_t i = 0; k_moe_activations[i]; i++)
        if (strcmp(s, k_moe_activations[i]) == 0)
            return 1;
    return 0;
}

/* "[a, b, c]" of DESC into BUF. */
static const char *dims_str(const loom_tensor_desc *d, char *buf, size_t len)
{
    size_t at = 0;
    at += (size_t)snprintf(buf, len, "[");
    for (uint32_t i = 0; i < d->rank && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? ", " : "", (long long)d->dims[i]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
    return buf;
}

/* Fail unless input IDX (ONNX Runtime's name WHAT) has exactly the RANK dims WANT; DIMS_DOC
 * spells them out ("num_experts, inter_size, hidden_size") for the message. */
static loom_status moe_check_shape(loom_infer_ctx *ctx, uint32_t idx, const char *what,
                                   uint32_t rank, const int64_t *want, const char *dims_doc)
{
    const loom_tensor_desc *d = &ctx->inputs[idx];
    int ok = d->rank == rank;
    for (uint32_t i = 0; ok && i < rank; i++)
        ok = d->dims[i] == want[i];
    if (ok)
        return LOOM_OK;
    loom_tensor_desc w = {.rank = rank};
    for (uint32_t i = 0; i < rank; i++)
        w.dims[i] = want[i];
    char got[96], exp[96];
    return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                           "%s must be %s (%s), got %s", what, dims_str(&w, exp, sizeof exp),
                           dims_doc, dims_str(d, got, sizeof got));
}

/* The input checks MoE and MoEExpert share, IN_NAMES naming their 8 inputs (x, the routing,
 * fc1 w/b, fc2 w/b, fc3 w/b): present where required, one float dtype, no fc3 bias without its
 * weights, x [tokens, hidden] or [batch, seq, hidden]. Sets *TOKENS and *HIDDEN. */
static loom_status moe_check_inputs(loom_infer_ctx *ctx, const char *const in_names[8],
                                    int64_t *tokens, int64_t *hidden)
{
    loom_status st;
    if ((st = loom_ops_require(ctx, 0, in_names[0])) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, in_names[0], LOOM_DTS_FLOAT)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 1, in_names[1])) != LOOM_OK ||
        (st = loom_ops_require(ctx, 2, in_names[2])) != LOOM_OK ||
        (st = loom_ops_require(ctx, 4, in_names[4])) != LOOM_OK)
        return st;
    for (uint32_t i = 1; i < ctx->n_inputs && i < 8; i++)
        if (loom_ops_has(ctx, i) && (st = loom_ops_same_dtype(ctx, i, in_names[i], 0)) != LOOM_OK)
            return st;
    if (loom_ops_has(ctx, 7) && !loom_ops_has(ctx, 6))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "%s is given without %s",
                               in_names[7], in_names[6]);
    const loom_tensor_desc *x = &ctx->inputs[0];
    if (x->rank != 2 && x->rank != 3)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input must be [tokens, hidden] or [batch, seq, hidden], got "
                               "rank %u",
                               x->rank);
    *hidden = x->dims[x->rank - 1];
    *tokens = x->rank == 2 ? x->dims[0] : x->dims[0] * x->dims[1];
    return LOOM_OK;
}

static loom_status infer_moe(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"k", "activation_type", "normalize_routing_weights",
                                        "use_sparse_mixer", "swiglu_fusion", "swiglu_limit",
                                        "activation_alpha", "activation_beta", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT,   LOOM_ATTR_STRING, LOOM_ATTR_INT,
                                           LOOM_ATTR_INT,   LOOM_ATTR_INT,    LOOM_ATTR_FLOAT,
                                           LOOM_ATTR_FLOAT, LOOM_ATTR_FLOAT};
    static const char *const canonical[] = {"k", "activation_type", "normalize_routing_weights",
                                            NULL};
    static const char *const in_names[] = {"input",               "router_probs",
                                           "fc1_experts_weights", "fc1_experts_bias",
                                           "fc2_experts_weights", "fc2_experts_bias",
                                           "fc3_experts_weights", "fc3_experts_bias"};
    loom_status st;
    int64_t hidden = 0, tokens = 0;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = moe_check_inputs(ctx, in_names, &tokens, &hidden)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0], *r = &ctx->inputs[1], *w1 = &ctx->inputs[2];
    if (r->rank != 2 || r->dims[0] != tokens)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "router_probs must be [%lld, num_experts] (one row per token), "
                               "got rank %u with %lld rows",
                               (long long)tokens, r->rank, (long long)(r->rank ? r->dims[0] : 0));
    const int64_t experts = r->dims[1];
    if (experts < 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "router_probs has no experts (num_experts is 0)");
    if (w1->rank != 3)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "fc1_experts_weights must have rank 3 (num_experts, inter_size, "
                               "hidden_size), got rank %u",
                               w1->rank);
    const int64_t inter = w1->dims[1];
    if (w1->dims[0] == experts && w1->dims[1] == hidden && w1->dims[2] != hidden)
        /* ONNX Runtime 1.22 and older documented [num_experts, hidden_size, inter_size]. */
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "fc1_experts_weights is [%lld, %lld, %lld]: the layout of ONNX "
                               "Runtime 1.22 and older ([num_experts, hidden_size, inter_size]); "
                               "Loom reads [num_experts, inter_size, hidden_size]",
                               (long long)w1->dims[0], (long long)w1->dims[1],
                               (long long)w1->dims[2]);
    const int64_t s1[3] = {experts, inter, hidden}, s2[3] = {experts, hidden, inter};
    if ((st = moe_check_shape(ctx, 2, "fc1_experts_weights", 3, s1,
                              "num_experts, inter_size, hidden_size")) != LOOM_OK ||
        (st = moe_check_shape(ctx, 4, "fc2_experts_weights", 3, s2,
                              "num_experts, hidden_size, inter_size")) != LOOM_OK)
        return st;
    if (loom_ops_has(ctx, 3) &&
        (st = moe_check_shape(ctx, 3, "fc1_experts_bias", 2, s1, "num_experts, inter_size")) !=
            LOOM_OK)
        return st;
    const int64_t b2[2] = {experts, hidden};
    if (loom_ops_has(ctx, 5) &&
        (st = moe_check_shape(ctx, 5, "fc2_experts_bias", 2, b2, "num_experts, hidden_size")) !=
            LOOM_OK)
        return st;
    if (loom_ops_has(ctx, 6) &&
        (st = moe_check_shape(ctx, 6, "fc3_experts_weights", 3, s1,
                              "num_experts, inter_size, hidden_size")) != LOOM_OK)
        return st;
    if (loom_ops_has(ctx, 7) &&
        (st = moe_check_shape(ctx, 7, "fc3_experts_bias", 2, s1, "num_experts, inter_size")) !=
            LOOM_OK)
        return st;

    const int64_t k = loom_infer_get_int(ctx, "k", 1);
    if (k < 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "k = %lld: at least 1 expert per "
                               "token", (long long)k);
    if (k > experts)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "k = %lld is larger than the number of experts (%lld)",
                               (long long)k, (long long)experts);
    const char *act = loom_infer_get_string(ctx, "activation_type", "relu");
    if (!moe_activation_known(act))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "activation_type '%.40s' is not supported (relu, gelu, silu, "
                               "identity)",
                               act);
    const int64_t norm = loom_infer_get_int(ctx, "normalize_routing_weights", 0);
    if (norm != 0 && norm != 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "normalize_routing_weights must be 0 or 1, got %lld",
                               (long long)norm);
    if (loom_infer_get_int(ctx, "use_sparse_mixer", 0) != 0)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "use_sparse_mixer = 1 is not supported (only softmax top-k "
                               "routing)");
    /* The string is the list's own: copy it before set_string replaces the attribute. */
    char act_copy[16];
    snprintf(act_copy, sizeof act_copy, "%s", act);
    if ((st = loom_infer_set_int(ctx, "k", k)) != LOOM_OK ||
        (st = loom_infer_set_string(ctx, "activation_type", act_copy)) != LOOM_OK ||
        (st = loom_infer_set_int(ctx, "normalize_routing_weights", norm)) != LOOM_OK)
        return st;
    loom_ops_keep_only(ctx, canonical);
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

/* tokens * k routed FFN evaluations: 2 * hidden * inter multiply-adds each for fc1 and fc2 (and
 * fc3 when given), the activation, and the weighted sum back; plus the routing softmax. */
static void cost_moe(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *x = &node->inputs[0], *r = &node->inputs[1], *w1 = &node->inputs[2];
    double hidden = (double)x->dims[x->rank - 1];
    double tokens = loom_ops_numel(x) / (hidden > 0 ? hidden : 1.0);
    double experts = (double)r->dims[1], inter = (double)w1->dims[1];
    double k = 1.0;
    for (uint32_t a = 0; a < node->n_attrs; a++)
        if (strcmp(node->attrs[a].name, "k") == 0)
            k = (double)node->attrs[a].i;
    int gated = node->n_inputs > 6 && node->inputs[6].dtype != LOOM_DTYPE_UNDEFINED;
    double per_route = 2.0 * hidden * inter * (gated ? 3.0 : 2.0) +
                       inter * LOOM_FLOPS_TRANSCENDENTAL + 2.0 * hidden;
    cost->flops = tokens * (k * per_route + experts * (LOOM_FLOPS_TRANSCENDENTAL + 2.0));
}

LOOM_OPS_DEF(loom_op_def_moe, LOOM_OP_MOE, "MoE", 5, 8, 1, 1, infer_moe, cost_moe, 0);

/* ---- a MoE split into placement units (passes/split_moe_experts.c) ------------------------
 *
 * MoERoute: the routing of a MoE, as a tensor of fixed size.
 *   input   0 router_probs  [tokens, num_experts]  router LOGITS
 *   output  0 routing       [tokens, num_experts]  the weight with which each expert takes each
 *                                                  token: MoE's w_j in the columns of the k
 *                                                  experts chosen for the token, 0 elsewhere
 *   CANONICAL ATTRIBUTES: k:i (1 <= k <= num_experts; default 1),
 *   normalize_routing_weights:i (0 or 1; default 0), as MoE's.
 *
 * MoEExpert: one expert's feed-forward over the tokens routed to it.
 *   inputs  0 input        [tokens, hidden] or [batch, seq, hidden]
 *           1 routing      [tokens, num_experts]  MoERoute's output
 *           2 fc1_weights  [inter, hidden]
 *           3 fc1_bias     [inter]                (optional)
 *           4 fc2_weights  [hidden, inter]
 *           5 fc2_bias     [hidden]               (optional)
 *           6 fc3_weights  [inter, hidden]        (optional: gated FFN)
 *           7 fc3_bias     [inter]                (optional, needs 6)
 *   output  0 Y, input's shape: Y[t] = routing[t, expert] * FFN(x[t]) where routing[t, expert]
 *           > 0, else 0 (MoE's FFN, the same activations and gate).
 *   CANONICAL ATTRIBUTES: expert:i (the routing column, 0 <= expert < num_experts),
 *   activation_type:s (as MoE's; default "relu"), k:i (the MoE's k, 1 <= k <= num_experts;
 *   default 1: only the cost reads it).
 * The sum of the num_experts MoEExpert outputs is the MoE's output.
 *
 * Cost of an expert: the tokens it is expected to receive, tokens * k / num_experts (what is
 * known before the router runs), times one routed FFN evaluation; so placement sees every
 * expert as 1/num_experts of the MoE's work and may spread them over devices.
 */

static loom_status moe_k_attr(loom_infer_ctx *ctx, int64_t experts, int64_t *k)
{
    *k = loom_infer_get_int(ctx, "k", 1);
    if (*k < 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "k = %lld: at least 1 expert per "
                               "token", (long long)*k);
    if (*k > experts)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "k = %lld is larger than the number of experts (%lld)",
                               (long long)*k, (long long)experts);
    return loom_infer_set_int(ctx, "k", *k);
}

static loom_status infer_moe_route(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"k", "normalize_routing_weights", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_INT};
    loom_status st;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = loom_ops_require(ctx, 0, "router_probs")) != LOOM_OK ||
        (st = loom_ops_check_dtype(ctx, 0, "router_probs", LOOM_DTS_FLOAT)) != LOOM_OK)
        return st;
    const loom_tensor_desc *r = &ctx->inputs[0];
    if (r->rank != 2 || r->dims[1] < 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "router_probs must be [tokens, num_experts] with at least one "
                               "expert, got rank %u",
                               r->rank);
    int64_t k;
    if ((st = moe_k_attr(ctx, r->dims[1], &k)) != LOOM_OK)
        return st;
    const int64_t norm = loom_infer_get_int(ctx, "normalize_routing_weights", 0);
    if (norm != 0 && norm != 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "normalize_routing_weights must be 0 or 1, got %lld",
                               (long long)norm);
    if ((st = loom_infer_set_int(ctx, "normalize_routing_weights", norm)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, r->dtype, 2, r->dims);
    return loom_ops_finish(ctx);
}

/* Per token: the softmax, k passes of selection over the experts, the dense row written. */
static void cost_moe_route(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *r = &node->inputs[0];
    double tokens = (double)r->dims[0], experts = (double)r->dims[1], k = 1.0;
    for (uint32_t a = 0; a < node->n_attrs; a++)
        if (strcmp(node->attrs[a].name, "k") == 0)
            k = (double)node->attrs[a].i;
    cost->flops = tokens * experts * (LOOM_FLOPS_TRANSCENDENTAL + 3.0 + k);
}

static loom_status infer_moe_expert(loom_infer_ctx *ctx)
{
    static const char *const names[] = {"expert", "activation_type", "k", NULL};
    static const loom_attr_kind kinds[] = {LOOM_ATTR_INT, LOOM_ATTR_STRING, LOOM_ATTR_INT};
    static const char *const in_names[] = {"input",       "routing",     "fc1_weights",
                                           "fc1_bias",    "fc2_weights", "fc2_bias",
                                           "fc3_weights", "fc3_bias"};
    loom_status st;
    int64_t hidden = 0, tokens = 0;
    if ((st = loom_infer_check_attrs(ctx, names, kinds)) != LOOM_OK ||
        (st = moe_check_inputs(ctx, in_names, &tokens, &hidden)) != LOOM_OK)
        return st;
    const loom_tensor_desc *x = &ctx->inputs[0], *r = &ctx->inputs[1], *w1 = &ctx->inputs[2];
    if (r->rank != 2 || r->dims[0] != tokens || r->dims[1] < 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "routing must be [%lld, num_experts] (one row per token), got "
                               "rank %u with %lld rows",
                               (long long)tokens, r->rank, (long long)(r->rank ? r->dims[0] : 0));
    const int64_t experts = r->dims[1];
    if (w1->rank != 2)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "fc1_weights must be [inter_size, hidden_size], got rank %u",
                               w1->rank);
    const int64_t inter = w1->dims[0];
    const int64_t s1[2] = {inter, hidden}, s2[2] = {hidden, inter};
    if ((st = moe_check_shape(ctx, 2, "fc1_weights", 2, s1, "inter_size, hidden_size")) !=
            LOOM_OK ||
        (st = moe_check_shape(ctx, 4, "fc2_weights", 2, s2, "hidden_size, inter_size")) !=
            LOOM_OK ||
        (loom_ops_has(ctx, 3) &&
         (st = moe_check_shape(ctx, 3, "fc1_bias", 1, s1, "inter_size")) != LOOM_OK) ||
        (loom_ops_has(ctx, 5) &&
         (st = moe_check_shape(ctx, 5, "fc2_bias", 1, s2, "hidden_size")) != LOOM_OK) ||
        (loom_ops_has(ctx, 6) &&
         (st = moe_check_shape(ctx, 6, "fc3_weights", 2, s1, "inter_size, hidden_size")) !=
             LOOM_OK) ||
        (loom_ops_has(ctx, 7) &&
         (st = moe_check_shape(ctx, 7, "fc3_bias", 1, s1, "inter_size")) != LOOM_OK))
        return st;
    const int64_t e = loom_infer_get_int(ctx, "expert", -1);
    if (e < 0 || e >= experts)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "expert = %lld is not a column of routing (0 to %lld)",
                               (long long)e, (long long)experts - 1);
    int64_t k;
    if ((st = moe_k_attr(ctx, experts, &k)) != LOOM_OK)
        return st;
    const char *act = loom_infer_get_string(ctx, "activation_type", "relu");
    if (!moe_activation_known(act))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "activation_type '%.40s' is not supported (relu, gelu, silu, "
                               "identity)",
                               act);
    char act_copy[16];
    snprintf(act_copy, sizeof act_copy, "%s", act);
    if ((st = loom_infer_set_string(ctx, "activation_type", act_copy)) != LOOM_OK)
        return st;
    loom_ops_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    return loom_ops_finish(ctx);
}

/* The expected tokens of the expert (tokens * k / num_experts) times one routed FFN, plus the
 * scan of its routing column and the zeroed rows of the tokens it does not take. */
static void cost_moe_expert(const loom_node_desc *node, loom_op_cost *cost)
{
    loom_ops_cost_io(node, cost);
    const loom_tensor_desc *x = &node->inputs[0], *r = &node->inputs[1], *w1 = &node->inputs[2];
    double hidden = (double)x->dims[x->rank - 1];
    double tokens = loom_ops_numel(x) / (hidden > 0 ? hidden : 1.0);
    double experts = (double)r->dims[1], inter = (double)w1->dims[0], k = 1.0;
    for (uint32_t a = 0; a < node->n_attrs; a++)
        if (strcmp(node->attrs[a].name, "k") == 0)
            k = (double)node->attrs[a].i;
    int gated = node->n_inputs > 6 && node->inputs[6].dtype != LOOM_DTYPE_UNDEFINED;
    double per_route = 2.0 * hidden * inter * (gated ? 3.0 : 2.0) +
                       inter * LOOM_FLOPS_TRANSCENDENTAL + 2.0 * hidden;
    cost->flops = tokens * k / (experts > 0 ? experts : 1.0) * per_route + tokens;
}

LOOM_OPS_DEF(loom_op_def_moe_route, LOOM_OP_MOE_ROUTE, "MoERoute", 1, 1, 1, 1, infer_moe_route,
             cost_moe_route, 0);
LOOM_OPS_DEF(loom_op_def_moe_expert, LOOM_OP_MOE_EXPERT, "MoEExpert", 5, 8, 1, 1,
             infer_moe_expert, cost_moe_expert, 0);
