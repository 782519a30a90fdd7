/*
 * The operator registry's common parts: the one table of every operator, the attribute list
 * that inference canonicalises, the getters and setters infer() functions use, broadcasting,
 * overflow-checked element counts, and the helpers the op families share (ops_defs.h).
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

/* In loom_op_id order, so listings come out in ABI order. Read-only: the registry has no state. */
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
};

/* Every operator of ABI 0.1 is registered: a new id without a definition fails the build. */
_Static_assert(sizeof k_ops / sizeof k_ops[0] == LOOM_OP_COUNT_V0_1 - 1,
               "every loom_op_id needs an entry in the registry");

static const loom_op_set k_core_set = {k_ops, sizeof k_ops / sizeof k_ops[0]};

/* The core set, then the sets of later ABI versions, each defined beside its operators. */
static const loom_op_set *const k_sets[] = {&k_core_set, &loom_ops_nn2, &loom_ops_ew2};
#define N_SETS (sizeof k_sets / sizeof k_sets[0])

const loom_op_def *loom_op_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t k = 0; k < N_SETS; k++)
        for (size_t i = 0; i < k_sets[k]->count; i++)
            if (strcmp(k_sets[k]->ops[i]->name, name) == 0)
                return k_sets[k]->ops[i];
    return NULL;
}

const loom_op_def *loom_op_get(loom_op_id id)
{
    /* A scan rather than indexing by id: it stays right even if the tables' order drifts. */
    for (size_t k = 0; k < N_SETS; k++)
        for (size_t i = 0; i < k_sets[k]->count; i++)
            if (k_sets[k]->ops[i]->id == id)
                return k_sets[k]->ops[i];
    return NULL;
}

size_t loom_op_count(void)
{
    size_t n = 0;
    for (size_t k = 0; k < N_SETS; k++)
        n += k_sets[k]->count;
    return n;
}

const loom_op_def *loom_op_at(size_t i)
{
    for (size_t k = 0; k < N_SETS; k++) {
        if (i < k_sets[k]->count)
            return k_sets[k]->ops[i];
        i -= k_sets[k]->count;
    }
    return NULL;
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

/* ---- shapes --------------------------------------------------------------------------------- */

int loom_broadcast_shapes(const loom_tensor_desc *a, const loom_tensor_desc *b,
                          loom_tensor_desc *out)
{
    if (a->rank > LOOM_MAX_RANK || b->rank > LOOM_MAX_RANK)
        return 0;
    uint32_t rank = a->rank > b->rank ? a->rank : b->rank;
    int64_t dims[LOOM_MAX_RANK];
    /* Right-aligned: a missing leading dim acts as 1. A 1 stretches to the other side's dim,
     * including 0 (numpy: [1] with [0] gives [0]). */
    for (uint32_t k = 0; k < rank; k++) {
        int64_t da = k < rank - a->rank ? 1 : a->dims[k - (rank - a->rank)];
        int64_t db = k < rank - b->rank ? 1 : b->dims[k - (rank - b->rank)];
        if (da == db || db == 1)
            dims[k] = da;
        else if (da == 1)
            dims[k] = db;
        else
            return 0;
    }
    /* OUT may alias A or B, hence the local array. */
    out->rank = rank;
    for (uint32_t k = 0; k < LOOM_MAX_RANK; k++)
        out->dims[k] = k < rank ? dims[k] : 0;
    return 1;
}

/* ---- helpers shared by the families (ops_defs.h) -------------------------------------------- */

int loom_ops_has(const loom_infer_ctx *ctx, uint32_t idx)
{
    return idx < ctx->n_inputs && ctx->inputs[idx].dtype != LOOM_DTYPE_UNDEFINED;
}

loom_status loom_ops_require(loom_infer_ctx *ctx, uint32_t idx, const char *what)
{
    if (!loom_ops_has(ctx, idx))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "input %u (%s) is required",
                               idx, what);
    return LOOM_OK;
}

/* "float, float16, bfloat16" for a dtype set, for messages. */
static const char *dtype_set_format(uint32_t mask, char *buf, size_t len)
{
    static const loom_dtype all[] = {LOOM_DTYPE_F32, LOOM_DTYPE_F16, LOOM_DTYPE_BF16,
                                     LOOM_DTYPE_I8,  LOOM_DTYPE_U8,  LOOM_DTYPE_I32,
                                     LOOM_DTYPE_I64, LOOM_DTYPE_BOOL};
    size_t used = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        if (!(mask & LOOM_DTS(all[k])) || used >= len)
            continue;
        int w = snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
                         loom_dtype_name(all[k]));
        used = w < 0 ? len : used + (size_t)w;
    }
    return buf;
}

loom_status loom_ops_check_dtype(loom_infer_ctx *ctx, uint32_t idx, const char *what,
                                 uint32_t mask)
{
    loom_dtype dt = ctx->inputs[idx].dtype;
    if ((unsigned)dt < 32 && (mask & LOOM_DTS(dt)))
        return LOOM_OK;
    char set[128];
    return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                           "input %u (%s) has dtype %s; expected one of: %s", idx, what,
                           loom_dtype_name(dt), dtype_set_format(mask, set, sizeof set));
}

loom_status loom_ops_same_dtype(loom_infer_ctx *ctx, uint32_t idx, const char *what, uint32_t ref)
{
    if (ctx->inputs[idx].dtype == ctx->inputs[ref].dtype)
        return LOOM_OK;
    return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                           "dtype mismatch: input %u (%s) is %s but input %u is %s", idx, what,
                           loom_dtype_name(ctx->inputs[idx].dtype), ref,
                           loom_dtype_name(ctx->inputs[ref].dtype));
}

loom_status loom_ops_axis(loom_infer_ctx *ctx, const char *what, int64_t axis, int64_t rank,
                          int64_t *out)
{
    if (rank <= 0 || axis < -rank || axis >= rank) {
        if (rank <= 0)
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "%s %lld is out of range: the input is a scalar", what,
                                   (long long)axis);
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "%s %lld is out of range for rank %lld (expected %lld..%lld)",
                               what, (long long)axis, (long long)rank, (long long)-rank,
                               (long long)(rank - 1));
    }
    *out = axis < 0 ? axis + rank : axis;
    return LOOM_OK;
}

loom_status loom_ops_const_ints(loom_infer_ctx *ctx, uint32_t idx, const char *what, size_t cap,
                                int64_t *out, size_t *count)
{
    if (!loom_ops_has(ctx, idx))
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT, "input %u (%s) is required",
                               idx, what);
    const loom_tensor_desc *d = &ctx->inputs[idx];
    const void *data = ctx->input_constants ? ctx->input_constants[idx] : NULL;
    /* Valid ONNX that Loom cannot run: shapes are static, so this is unsupported, not wrong. */
    if (!data)
        return loom_infer_fail(ctx, LOOM_ERR_UNSUPPORTED,
                               "input %u (%s) must be a constant", idx, what);
    if (d->dtype != LOOM_DTYPE_I64 && d->dtype != LOOM_DTYPE_I32)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input %u (%s) must be int64 or int32, not %s", idx, what,
                               loom_dtype_name(d->dtype));
    /* ONNX says 1-D; a scalar is read as one value, which is what every user means by it. */
    if (d->rank > 1)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input %u (%s) must be 1-D, not of rank %u", idx, what, d->rank);
    int64_t n = d->rank ? d->dims[0] : 1;
    if (n < 0 || (uint64_t)n > cap)
        return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                               "input %u (%s) has %lld values, more than the %zu allowed", idx,
                               what, (long long)n, cap);
    for (int64_t k = 0; k < n; k++)
        out[k] = d->dtype == LOOM_DTYPE_I64 ? ((const int64_t *)data)[k]
                                            : ((const int32_t *)data)[k];
    *count = (size_t)n;
    return LOOM_OK;
}

void loom_ops_set_output(loom_infer_ctx *ctx, uint32_t idx, loom_dtype dtype, uint32_t rank,
                         const int64_t *dims)
{
    loom_tensor_desc *o = &ctx->outputs[idx];
    o->dtype = dtype;
    o->rank = rank;
    for (uint32_t k = 0; k < LOOM_MAX_RANK; k++)
        o->dims[k] = k < rank ? dims[k] : 0;
}

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

loom_status loom_ops_finish(loom_infer_ctx *ctx)
{
    for (uint32_t i = 0; i < ctx->n_outputs; i++) {
        const loom_tensor_desc *o = &ctx->outputs[i];
        if (!loom_dims_numel_checked(o->rank, o->dims, loom_dtype_size(o->dtype), NULL)) {
            char shape[256];
            return loom_infer_fail(ctx, LOOM_ERR_INVALID_ARGUMENT,
                                   "output %u would have shape %s: its element count "
                                   "overflows (dimension product too large)",
                                   i, loom_dims_format(o->rank, o->dims, shape, sizeof shape));
        }
    }
    return LOOM_OK;
}

/* IEEE half to float, exact (every half is a float). */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    float f;
    if (exp == 0)
        f = ldexpf((float)man, -24); /* zero and subnormals */
    else if (exp == 31)
        f = man ? NAN : INFINITY;
    else
        f = ldexpf((float)(man | 0x400u), (int)exp - 25);
    return sign ? -f : f;
}

float loom_ops_scalar_to_float(loom_dtype dtype, const void *data)
{
    switch (dtype) {
    case LOOM_DTYPE_F32: {
        float v;
        memcpy(&v, data, sizeof v);
        return v;
    }
    case LOOM_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, data, sizeof h);
        return half_to_float(h);
    }
    case LOOM_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, data, sizeof h);
        uint32_t bits = (uint32_t)h << 16;
        float v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    case LOOM_DTYPE_U8: return (float)*(const uint8_t *)data;
    case LOOM_DTYPE_I8: return (float)*(const int8_t *)data;
    case LOOM_DTYPE_BOOL: return *(const uint8_t *)data ? 1.0f : 0.0f;
    case LOOM_DTYPE_I32: {
        int32_t v;
        memcpy(&v, data, sizeof v);
        return (float)v;
    }
    case LOOM_DTYPE_I64: {
        int64_t v;
        memcpy(&v, data, sizeof v);
        return (float)v;
    }
    default: return 0.0f;
    }
}

double loom_ops_numel(const loom_tensor_desc *desc)
{
    if (desc->dtype == LOOM_DTYPE_UNDEFINED)
        return 0.0;
    double n = 1.0;
    for (uint32_t k = 0; k < desc->rank; k++)
        n *= (double)desc->dims[k];
    return n;
}

void loom_ops_cost_io(const loom_node_desc *node, loom_op_cost *cost)
{
    cost->flops = 0.0;
    cost->bytes_read = 0.0;
    cost->bytes_written = 0.0;
    for (uint32_t i = 0; i < node->n_inputs; i++)
        cost->bytes_read +=
            loom_ops_numel(&node->inputs[i]) * (double)loom_dtype_size(node->inputs[i].dtype);
    for (uint32_t i = 0; i < node->n_outputs; i++)
        cost->bytes_written +=
            loom_ops_numel(&node->outputs[i]) * (double)loom_dtype_size(node->outputs[i].dtype);
}
