/*
 * The operator registry: the one table of every operator (each defined in its family file,
 * graph/ops_<family>.c; ops_defs.h lists which), the attribute list that inference
 * canonicalises, and the getters and setters infer() functions use. The helpers the families
 * share are in ops_infer_util.c.
 */
#include "ops_defs.h"

#include <loom/graph.h> /* loom_dtype_name */

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the registry --------------------------------------------------------------------------- */

/* In loom_op_id order within each ABI version (0.1, then 0.2), so listings come out in ABI
 * order. Read-only: the registry has no state. The definitions live in the family files
 * (ops_defs.h lists which). */
static const loom_op_def *const k_ops[] = {
    &loom_op_def_matmul,
    &loom_op_def_gemm,
    &loom_op_def_conv,
    &loom_op_def_relu,
    &loom_op_def_leaky_relu,
    &loom_op_def_sigmoid,
    &loom_op_def_tanh,
    &loom_op_def_erf,
    &loom_op_def_gelu,
    &loom_op_def_add,
    &loom_op_def_sub,
    &loom_op_def_mul,
    &loom_op_def_div,
    &loom_op_def_pow,
    &loom_op_def_sqrt,
    &loom_op_def_exp,
    &loom_op_def_log,
    &loom_op_def_neg,
    &loom_op_def_abs,
    &loom_op_def_min,
    &loom_op_def_max,
    &loom_op_def_clip,
    &loom_op_def_softmax,
    &loom_op_def_layer_normalization,
    &loom_op_def_batch_normalization,
    &loom_op_def_max_pool,
    &loom_op_def_average_pool,
    &loom_op_def_global_average_pool,
    &loom_op_def_reshape,
    &loom_op_def_transpose,
    &loom_op_def_flatten,
    &loom_op_def_concat,
    &loom_op_def_split,
    &loom_op_def_slice,
    &loom_op_def_gather,
    &loom_op_def_squeeze,
    &loom_op_def_unsqueeze,
    &loom_op_def_reduce_mean,
    &loom_op_def_reduce_sum,
    &loom_op_def_reduce_max,
    &loom_op_def_cast,
    &loom_op_def_identity,
    &loom_op_def_where,
    &loom_op_def_expand,
    &loom_op_def_conv_transpose,
    &loom_op_def_resize,
    &loom_op_def_pad,
    &loom_op_def_tile,
    &loom_op_def_arg_max,
    &loom_op_def_top_k,
    &loom_op_def_scatter_elements,
    &loom_op_def_gather_elements,
    &loom_op_def_einsum,
    &loom_op_def_instance_norm,
    &loom_op_def_lstm,
    &loom_op_def_gru,
    &loom_op_def_arg_min,
    &loom_op_def_reduce_min,
    &loom_op_def_reduce_prod,
    &loom_op_def_prelu,
    &loom_op_def_log_softmax,
    &loom_op_def_hard_sigmoid,
    &loom_op_def_hard_swish,
    &loom_op_def_reciprocal,
    &loom_op_def_floor,
    &loom_op_def_ceil,
    &loom_op_def_round,
    &loom_op_def_not,
    &loom_op_def_and,
    &loom_op_def_or,
    &loom_op_def_equal,
    &loom_op_def_less,
    &loom_op_def_greater,
    &loom_op_def_shape,
    &loom_op_def_constant_of_shape,
    &loom_op_def_range,
    &loom_op_def_dropout,
    &loom_op_def_sum,
    &loom_op_def_mean,
    &loom_op_def_quantize,
    &loom_op_def_dequantize,
    &loom_op_def_matmul_integer,
    &loom_op_def_qlinear_matmul,
    &loom_op_def_qlinear_conv,
    &loom_op_def_less_or_equal,
    &loom_op_def_greater_or_equal,
    &loom_op_def_xor,
    &loom_op_def_sin,
    &loom_op_def_cos,
    &loom_op_def_softplus,
    &loom_op_def_elu,
    &loom_op_def_selu,
    &loom_op_def_sign,
    &loom_op_def_matmul_int8_dynamic,
    &loom_op_def_dynamic_quantize,
    &loom_op_def_moe,
    &loom_op_def_moe_route,
    &loom_op_def_moe_expert,
    &loom_op_def_fused_conv,
    &loom_op_def_fused_matmul,
    &loom_op_def_fused_gemm,
    &loom_op_def_nll_loss,
    &loom_op_def_softmax_cross_entropy_loss,
    &loom_op_def_reduce_l1,
    &loom_op_def_reduce_l2,
    &loom_op_def_reduce_log_sum,
    &loom_op_def_reduce_log_sum_exp,
    &loom_op_def_reduce_sum_square,
    &loom_op_def_tan,
    &loom_op_def_asin,
    &loom_op_def_acos,
    &loom_op_def_atan,
    &loom_op_def_sinh,
    &loom_op_def_cosh,
    &loom_op_def_asinh,
    &loom_op_def_acosh,
    &loom_op_def_atanh,
    &loom_op_def_softsign,
    &loom_op_def_thresholded_relu,
    &loom_op_def_shrink,
    &loom_op_def_celu,
    &loom_op_def_isnan,
    &loom_op_def_isinf,
    &loom_op_def_mod,
    &loom_op_def_bitshift,
    &loom_op_def_trilu,
    &loom_op_def_cumsum,
    &loom_op_def_hardmax,
    &loom_op_def_depth_to_space,
    &loom_op_def_space_to_depth,
    &loom_op_def_eyelike,
    &loom_op_def_onehot,
    &loom_op_def_gather_nd,
    &loom_op_def_scatter_nd,
    &loom_op_def_grid_sample,
    &loom_op_def_rnn,
    &loom_op_def_global_max_pool,
    &loom_op_def_lrn,
    &loom_op_def_max_unpool,
    &loom_op_def_mean_variance_normalization,
    &loom_op_def_det,
    &loom_op_def_reverse_sequence,
    &loom_op_def_hann_window,
    &loom_op_def_hamming_window,
    &loom_op_def_blackman_window,
    &loom_op_def_roi_align,
    &loom_op_def_conv_integer,
    &loom_op_def_non_zero,
    &loom_op_def_compress,
    &loom_op_def_unique,
    &loom_op_def_non_max_suppression,
};
#define N_OPS (sizeof k_ops / sizeof k_ops[0])

/* Every operator of the ABI is registered: a new id without a definition fails the build. */
_Static_assert(N_OPS == LOOM_OP_COUNT_V0_4 - 1, "every loom_op_id needs an entry in the registry");

const loom_op_def *loom_op_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < N_OPS; i++)
        if (strcmp(k_ops[i]->name, name) == 0)
            return k_ops[i];
    return NULL;
}

const loom_op_def *loom_op_get(loom_op_id id)
{
    /* A scan rather than indexing by id: it stays right even if the table's order drifts. */
    for (size_t i = 0; i < N_OPS; i++)
        if (k_ops[i]->id == id)
            return k_ops[i];
    return NULL;
}

const char *loom_op_domain(const loom_op_def *def)
{
    static const char *const internal[] = {"FusedConv", "FusedMatMul", "FusedGemm",
                                           "MatMulInt8Dynamic", "MoERoute", "MoEExpert", NULL};
    if (strcmp(def->name, "MoE") == 0)
        return "com.microsoft";
    for (size_t i = 0; internal[i]; i++)
        if (strcmp(def->name, internal[i]) == 0)
            return "loom";
    return "ai.onnx";
}

uint32_t loom_op_input0_dtypes(const loom_op_def *def)
{
    /* Placeholder inputs: float32 [1, 1, 1, 1] (in range for any rank-dependent read), none a
     * constant; the fewest inputs and outputs the op takes. */
    enum { PROBE_IO = 16 };
    loom_tensor_desc in[PROBE_IO], out[PROBE_IO];
    const void *consts[PROBE_IO] = {NULL};
    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    for (size_t i = 0; i < PROBE_IO; i++) {
        in[i].dtype = LOOM_DTYPE_F32;
        in[i].rank = 4;
        for (uint32_t d = 0; d < 4; d++)
            in[i].dims[d] = 1;
    }
    uint32_t n_in = def->min_inputs ? def->min_inputs : 1, n_out = def->min_outputs;
    n_in = n_in < PROBE_IO ? n_in : PROBE_IO;
    n_out = n_out < 1 ? 1 : n_out < PROBE_IO ? n_out : PROBE_IO;
    loom_attr_list list;
    memset(&list, 0, sizeof list);
    char err[256];
    uint32_t mask = 0;
    loom_infer_ctx ctx = {
        .node_name = def->name,
        .n_inputs = n_in,
        .inputs = in,
        .input_constants = consts,
        .n_outputs = n_out,
        .outputs = out,
        .attrs = &list,
        .err = err,
        .err_len = sizeof err,
        .probe_input0 = &mask,
    };
    (void)def->infer(&ctx);
    loom_attr_list_free(&list);
    return mask;
}

size_t loom_op_count(void)
{
    return N_OPS;
}

const loom_op_def *loom_op_at(size_t i)
{
    return i < N_OPS ? k_ops[i] : NULL;
}

/* ---- the attribute list --------------------------------------------------------------------- */

/* The list owns every pointer of its items; loom_attr's fields are const for borrowers. */
static void attr_release(loom_attr *a)
{
    free((char *)a->name);
    free((char *)a->s);
    free((int64_t *)a->ints);
    free((float *)a->floats);
    memset(a, 0, sizeof *a);
}

static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

/* Deep copy of SRC into DST (fields that SRC's kind does not use are left empty). The caller has
 * checked SRC's shape (named, known kind, arrays present). */
static loom_status attr_copy(loom_attr *dst, const loom_attr *src)
{
    memset(dst, 0, sizeof *dst);
    dst->kind = src->kind;
    dst->name = dup_string(src->name);
    if (!dst->name)
        return LOOM_ERR_OUT_OF_MEMORY;
    switch (src->kind) {
    case LOOM_ATTR_INT:
        dst->i = src->i;
        break;
    case LOOM_ATTR_FLOAT:
        dst->f = src->f;
        break;
    case LOOM_ATTR_STRING:
        dst->s = dup_string(src->s);
        if (!dst->s)
            goto oom;
        break;
    case LOOM_ATTR_INTS:
        dst->count = src->count;
        if (src->count) {
            if (src->count > SIZE_MAX / sizeof(int64_t))
                goto oom;
            int64_t *v = malloc(src->count * sizeof *v);
            if (!v)
                goto oom;
            memcpy(v, src->ints, src->count * sizeof *v);
            dst->ints = v;
        }
        break;
    case LOOM_ATTR_FLOATS:
        dst->count = src->count;
        if (src->count) {
            if (src->count > SIZE_MAX / sizeof(float))
                goto oom;
            float *v = malloc(src->count * sizeof *v);
            if (!v)
                goto oom;
            memcpy(v, src->floats, src->count * sizeof *v);
            dst->floats = v;
        }
        break;
    }
    return LOOM_OK;
oom:
    attr_release(dst);
    return LOOM_ERR_OUT_OF_MEMORY;
}

static int attr_kind_known(loom_attr_kind kind)
{
    return kind == LOOM_ATTR_INT || kind == LOOM_ATTR_FLOAT || kind == LOOM_ATTR_STRING ||
           kind == LOOM_ATTR_INTS || kind == LOOM_ATTR_FLOATS;
}

static loom_status list_reserve(loom_attr_list *list, size_t need)
{
    if (need <= list->capacity)
        return LOOM_OK;
    size_t cap = list->capacity ? list->capacity : 8;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / sizeof(loom_attr))
            return LOOM_ERR_OUT_OF_MEMORY;
        cap *= 2;
    }
    loom_attr *items = realloc(list->items, cap * sizeof *items);
    if (!items)
        return LOOM_ERR_OUT_OF_MEMORY;
    list->items = items;
    list->capacity = cap;
    return LOOM_OK;
}

static void write_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void write_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || !err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

loom_status loom_attr_list_init(loom_attr_list *list, const loom_attr *attrs, size_t n, char *err,
                                size_t err_len)
{
    memset(list, 0, sizeof *list);
    if (n && !attrs) {
        write_err(err, err_len, "%zu attributes given but no array", n);
        return LOOM_ERR_INVALID_ARGUMENT;
    }
    /* Validate everything first, so that a malformed list fails before any allocation. */
    for (size_t k = 0; k < n; k++) {
        const loom_attr *a = &attrs[k];
        if (!a->name || !a->name[0]) {
            write_err(err, err_len, "attribute %zu has no name", k);
            return LOOM_ERR_INVALID_ARGUMENT;
        }
        if (!attr_kind_known(a->kind)) {
            write_err(err, err_len, "attribute '%s' has an unknown kind %d", a->name,
                      (int)a->kind);
            return LOOM_ERR_INVALID_ARGUMENT;
        }
        if (a->kind == LOOM_ATTR_STRING && !a->s) {
            write_err(err, err_len, "attribute '%s' is a string but has none", a->name);
            return LOOM_ERR_INVALID_ARGUMENT;
        }
        if ((a->kind == LOOM_ATTR_INTS && a->count && !a->ints) ||
            (a->kind == LOOM_ATTR_FLOATS && a->count && !a->floats)) {
            write_err(err, err_len, "attribute '%s' has %zu values but no array", a->name,
                      a->count);
            return LOOM_ERR_INVALID_ARGUMENT;
        }
        for (size_t j = 0; j < k; j++) {
            if (strcmp(attrs[j].name, a->name) == 0) {
                write_err(err, err_len, "duplicate attribute '%s'", a->name);
                return LOOM_ERR_INVALID_ARGUMENT;
            }
        }
    }
    if (list_reserve(list, n) != LOOM_OK) {
        write_err(err, err_len, "out of memory copying %zu attributes", n);
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    for (size_t k = 0; k < n; k++) {
        if (attr_copy(&list->items[k], &attrs[k]) != LOOM_OK) {
            loom_attr_list_free(list);
            write_err(err, err_len, "out of memory copying attribute '%s'", attrs[k].name);
            return LOOM_ERR_OUT_OF_MEMORY;
        }
        list->count = k + 1;
    }
    return LOOM_OK;
}

void loom_attr_list_free(loom_attr_list *list)
{
    if (!list)
        return;
    for (size_t k = 0; k < list->count; k++)
        attr_release(&list->items[k]);
    free(list->items);
    memset(list, 0, sizeof *list);
}

const loom_attr *loom_attr_list_get(const loom_attr_list *list, const char *name)
{
    if (!list || !name)
        return NULL;
    for (size_t k = 0; k < list->count; k++)
        if (strcmp(list->items[k].name, name) == 0)
            return &list->items[k];
    return NULL;
}

/* Add A (deep copy) or replace the attribute of the same name. The list is unchanged on
 * failure. */
static loom_status list_set(loom_attr_list *list, const loom_attr *a)
{
    loom_attr copy;
    loom_status st = attr_copy(&copy, a);
    if (st != LOOM_OK)
        return st;
    for (size_t k = 0; k < list->count; k++) {
        if (strcmp(list->items[k].name, a->name) == 0) {
            attr_release(&list->items[k]);
            list->items[k] = copy;
            return LOOM_OK;
        }
    }
    if (list_reserve(list, list->count + 1) != LOOM_OK) {
        attr_release(&copy);
        return LOOM_ERR_OUT_OF_MEMORY;
    }
    list->items[list->count++] = copy;
    return LOOM_OK;
}

/* ---- getters and setters for infer() -------------------------------------------------------- */

static const loom_attr *get_kind(const loom_infer_ctx *ctx, const char *name,
                                 loom_attr_kind kind)
{
    const loom_attr *a = loom_attr_list_get(ctx->attrs, name);
    return a && a->kind == kind ? a : NULL;
}

int64_t loom_infer_get_int(const loom_infer_ctx *ctx, const char *name, int64_t default_value)
{
    const loom_attr *a = get_kind(ctx, name, LOOM_ATTR_INT);
    return a ? a->i : default_value;
}

float loom_infer_get_float(const loom_infer_ctx *ctx, const char *name, float default_value)
{
    const loom_attr *a = get_kind(ctx, name, LOOM_ATTR_FLOAT);
    return a ? a->f : default_value;
}

const char *loom_infer_get_string(const loom_infer_ctx *ctx, const char *name,
                                  const char *default_value)
{
    const loom_attr *a = get_kind(ctx, name, LOOM_ATTR_STRING);
    return a ? a->s : default_value;
}

size_t loom_infer_get_ints(const loom_infer_ctx *ctx, const char *name, const int64_t **values)
{
    const loom_attr *a = get_kind(ctx, name, LOOM_ATTR_INTS);
    if (values)
        *values = a ? a->ints : NULL;
    return a ? a->count : 0;
}

static loom_status set_attr(loom_infer_ctx *ctx, const loom_attr *a)
{
    loom_status st = list_set(ctx->attrs, a);
    if (st != LOOM_OK)
        return loom_infer_fail(ctx, st, "out of memory setting attribute '%s'", a->name);
    return LOOM_OK;
}

loom_status loom_infer_set_int(loom_infer_ctx *ctx, const char *name, int64_t value)
{
    loom_attr a = {.name = name, .kind = LOOM_ATTR_INT, .i = value};
    return set_attr(ctx, &a);
}

loom_status loom_infer_set_float(loom_infer_ctx *ctx, const char *name, float value)
{
    loom_attr a = {.name = name, .kind = LOOM_ATTR_FLOAT, .f = value};
    return set_attr(ctx, &a);
}

loom_status loom_infer_set_string(loom_infer_ctx *ctx, const char *name, const char *value)
{
    loom_attr a = {.name = name, .kind = LOOM_ATTR_STRING, .s = value ? value : ""};
    return set_attr(ctx, &a);
}

loom_status loom_infer_set_ints(loom_infer_ctx *ctx, const char *name, size_t count,
                                const int64_t *values)
{
    /* VALUES may point into the attribute being replaced: attr_copy copies before release. */
    loom_attr a = {.name = name, .kind = LOOM_ATTR_INTS, .ints = values, .count = count};
    return set_attr(ctx, &a);
}

static void list_remove_at(loom_attr_list *list, size_t k)
{
    attr_release(&list->items[k]);
    memmove(&list->items[k], &list->items[k + 1], (list->count - k - 1) * sizeof list->items[0]);
    list->count--;
}

void loom_infer_remove(loom_infer_ctx *ctx, const char *name)
{
    loom_attr_list *list = ctx->attrs;
    for (size_t k = 0; k < list->count; k++) {
        if (strcmp(list->items[k].name, name) == 0) {
            list_remove_at(list, k);
            return;
        }
    }
}

static const char *kind_name(loom_attr_kind kind)
{
    switch (kind) {
    case LOOM_ATTR_INT: return "an int";
    case LOOM_ATTR_FLOAT: return "a float";
    case LOOM_ATTR_STRING: return "a string";
    case LOOM_ATTR_INTS: return "a list of ints";
    case LOOM_ATTR_FLOATS: return "a list of floats";
    }
    return "of an unknown kind";
}

loom_status loom_infer_check_attrs(loom_infer_ctx *ctx, const char *const *names,
                                   const loom_attr_kind *kinds)
{
    for (size_t k = 0; k < ctx->attrs->count; k++) {
        const loom_attr *a = &ctx->attrs->items[k];
        size_t j = 0;
        while (names && names[j] && strcmp(names[j], a->name) != 0)
            j++;
        if (!names || !names[j])
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "unknown attribute '%s'",
                                   a->name);
        if (a->kind != kinds[j])
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "attribute '%s' must be %s, not %s", a->name,
                                   kind_name(kinds[j]), kind_name(a->kind));
    }
    return LOOM_OK;
}

loom_status loom_infer_fail(loom_infer_ctx *ctx, loom_status status, const char *fmt, ...)
{
    if (ctx->err && ctx->err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err, ctx->err_len, fmt, ap);
        va_end(ap);
    }
    return status;
}

/* Canonicalisation's last step (ops_defs.h); here because it edits the attribute list. */
void loom_ops_keep_only(loom_infer_ctx *ctx, const char *const *keep)
{
    loom_attr_list *list = ctx->attrs;
    size_t k = 0;
    while (k < list->count) {
        size_t j = 0;
        while (keep && keep[j] && strcmp(keep[j], list->items[k].name) != 0)
            j++;
        if (keep && keep[j])
            k++;
        else
            list_remove_at(list, k);
    }
}
