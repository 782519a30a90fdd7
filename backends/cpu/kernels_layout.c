/*
 * CPU kernels of the layout family: Reshape, Flatten, Squeeze, Unsqueeze (byte copies), Transpose,
 * Concat, Split, Slice, Pad and Tile, for every dtype (they move elements of 1, 2, 4 or 8 bytes
 * and never look at their values). Identity, also a plain copy, is registered by the elementwise
 * family; Gather is in kernels_indexing.c.
 *
 * Prepare reduces each op to the fewest dims that describe it (size-1 dims dropped, dims that stay
 * adjacent merged), so that run() is a handful of loops over large contiguous runs: memcpy where
 * the innermost dim is contiguous on both sides, a blocked 2-D transpose where it is not. Pad and
 * Tile fill the per-axis index maps of cpu_index_map.c (canonical pads / repeats:
 * graph/ops_layout.c).
 */
#include "cpu_index_map.h"
#include "cpu_kernels.h"

#include <stdlib.h>
#include <string.h>

/* Tile edge of the blocked transpose, in bytes: one cache line. */
#define LY_TILE_BYTES 64

static int same_dtype_supported(const loom_node_desc *node, char *reason, size_t len)
{
    if (node->n_inputs < 1 || node->n_outputs < 1) {
        cpu_reason(reason, len, "%s: missing input or output", node->op_name);
        return 0;
    }
    loom_dtype t = node->inputs[0].dtype;
    if (loom_dtype_size(t) == 0) {
        cpu_reason(reason, len, "%s: dtype %d not supported", node->op_name, (int)t);
        return 0;
    }
    for (uint32_t i = 0; i < node->n_outputs; i++)
        if (node->outputs[i].dtype != t) {
            cpu_reason(reason, len, "%s: output %u has another dtype than the input",
                       node->op_name, i);
            return 0;
        }
    return 1;
}

static size_t desc_bytes(const loom_tensor_desc *d)
{
    return (size_t)loom_tensor_desc_numel(d) * loom_dtype_size(d->dtype);
}

/* ---- Reshape, Flatten, Squeeze, Unsqueeze: the bytes as they are ------------------------------ */

typedef struct copy_params {
    size_t bytes;
} copy_params;

static int copy_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (!same_dtype_supported(node, reason, len))
        return 0;
    if (node->n_outputs != 1 ||
        loom_tensor_desc_numel(&node->inputs[0]) != loom_tensor_desc_numel(&node->outputs[0])) {
        cpu_reason(reason, len, "%s: output must hold as many elements as the input",
                   node->op_name);
        return 0;
    }
    return 1;
}

typedef struct copy_ctx {
    const char *src;
    char *dst;
    size_t bytes, block;
} copy_ctx;

static void copy_task(void *arg, size_t b0, size_t b1)
{
    const copy_ctx *c = arg;
    size_t lo = b0 * c->block, hi = b1 * c->block < c->bytes ? b1 * c->block : c->bytes;
    memcpy(c->dst + lo, c->src + lo, hi - lo);
}

static loom_status copy_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                            char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const copy_params *p = k->params;
    /* The memory plan may give a Reshape's output its input's bytes (scheduler/memplan.c). */
    if (p->bytes == 0 || args->outputs[0] == args->inputs[0])
        return LOOM_OK;
    /* One core rarely saturates memory bandwidth: big copies go in blocks over the pool. */
    copy_ctx c = {.src = args->inputs[0], .dst = args->outputs[0], .bytes = p->bytes,
                  .block = (size_t)256 << 10};
    size_t blocks = (p->bytes + c.block - 1) / c.block;
    cpu_parallel_for(pool, blocks, 4, copy_task, &c);
    return LOOM_OK;
}

static loom_status copy_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    copy_params *p = malloc(sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    p->bytes = desc_bytes(&k->in[0]);
    k->params = p;
    k->run = copy_run;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- strided copies: the machinery Transpose and Slice share ---------------------------------- */

/* Y (dense, dims odims) = X viewed with element strides istr from element offset base.
 * mode ROWS: istr[rank-1] == 1, rows of odims[rank-1] elements are memcpy'd;
 * mode TILE: output dim q has input stride 1 and the last has not: blocked 2-D transposes;
 * mode ELEMS: neither side is contiguous innermost (a Slice with steps): element loops. */
enum { LY_ROWS = 1, LY_TILE_MODE = 2, LY_ELEMS = 3 };

typedef struct strided_params {
    size_t es;
    int mode;
    uint32_t rank;
    int64_t numel;
    int64_t base;
    int64_t odims[LOOM_MAX_RANK];
    int64_t istr[LOOM_MAX_RANK]; /* input element stride of each output dim; may be negative */
    int64_t ostr[LOOM_MAX_RANK]; /* dense output strides */
    /* the loops over "outer" dims: all dims but the innermost (ROWS, ELEMS) or but q and the
     * innermost (TILE) */
    uint32_t n_outer;
    int64_t outer_dims[LOOM_MAX_RANK], outer_istr[LOOM_MAX_RANK], outer_ostr[LOOM_MAX_RANK];
    int64_t n_outer_items;
    uint32_t q;        /* TILE: output dim read contiguously */
    int64_t tile;      /* TILE: tile edge in elements */
    int64_t q_strips;  /* TILE: strips of tile rows along q per outer index */
    int64_t j_chunk, j_chunks; /* the innermost dim in chunks, so one long row still splits */
} strided_params;

/* Fill the derived fields of P from es, rank, odims, istr, base (already coalesced). */
static void strided_finish(strided_params *p)
{
    p->numel = 1;
    for (uint32_t d = p->rank; d-- > 0;) {
        p->ostr[d] = p->numel;
        p->numel *= p->odims[d];
    }
    if (p->rank == 0) {
        /* a single element; treat as one row of one element */
        p->rank = 1;
        p->odims[0] = 1;
        p->istr[0] = 1;
        p->ostr[0] = 1;
    }
    uint32_t last = p->rank - 1;
    p->q = last;
    if (p->istr[last] == 1) {
        p->mode = LY_ROWS;
    } else {
        p->mode = LY_ELEMS;
        for (uint32_t d = 0; d < last; d++)
            if (p->istr[d] == 1 && p->odims[d] > 1) {
                p->mode = LY_TILE_MODE;
                p->q = d;
            }
    }
    p->n_outer = 0;
    p->n_outer_items = 1;
    for (uint32_t d = 0; d < last; d++) {
        if (p->mode == LY_TILE_MODE && d == p->q)
            continue;
        p->outer_dims[p->n_outer] = p->odims[d];
        p->outer_istr[p->n_outer] = p->istr[d];
        p->outer_ostr[p->n_outer] = p->ostr[d];
        p->n_outer++;
        p->n_outer_items *= p->odims[d];
    }
    p->tile = (int64_t)(LY_TILE_BYTES / p->es);
    p->q_strips = 1;
    if (p->mode == LY_TILE_MODE)
        p->q_strips = (p->odims[p->q] + p->tile - 1) / p->tile;
    int64_t n = p->odims[last];
    if (p->mode == LY_ROWS)
        p->j_chunk = (int64_t)(4 * CPU_CHUNK_BYTES / p->es);
    else
        p->j_chunk = p->mode == LY_TILE_MODE ? 16 * p->tile : 4096;
    if (p->j_chunk >= n)
        p->j_chunk = n > 0 ? n : 1;
    p->j_chunks = (n + p->j_chunk - 1) / p->j_chunk;
}

/* Input and output element offsets of outer index I. */
static void outer_offsets(const strided_params *p, int64_t i, int64_t *in_off, int64_t *out_off)
{
    int64_t io = p->base, oo = 0;
    for (uint32_t d = p->n_outer; d-- > 0;) {
        int64_t v = i % p->outer_dims[d];
        i /= p->outer_dims[d];
        io += v * p->outer_istr[d];
        oo += v * p->outer_ostr[d];
    }
    *in_off = io;
    *out_off = oo;
}

#define DEFINE_STRIDED(SUFFIX, T)                                                                 \
    /* rows of the innermost dim read with stride s */                                            \
    static void elems_##SUFFIX(T *dst, const T *src, int64_t n, int64_t s)                        \
    {                                                                                             \
        for (int64_t j = 0; j < n; j++)                                                           \
            dst[j] = src[j * s];                                                                  \
    }                                                                                             \
    /* One strip of up to TB rows of q (TB elements make a cache line), all of the innermost   \
     * dim, in TB x TB tiles: a tile reads TB input lines and writes TB output lines, each     \
     * whole, while they are all in L1. */                                                     \
    static void tile_##SUFFIX(T *dst, const T *src, int64_t rows, int64_t n, int64_t sj,          \
                              int64_t osq)                                                        \
    {                                                                                             \
        enum { TB = LY_TILE_BYTES / sizeof(T) };                                                  \
        for (int64_t j0 = 0; j0 < n; j0 += TB) {                                                  \
            int64_t j1 = j0 + TB < n ? j0 + TB : n;                                               \
            for (int64_t i = 0; i < rows; i++) {                                                  \
                T *d = dst + i * osq;                                                             \
                const T *s = src + i;                                                             \
                for (int64_t j = j0; j < j1; j++)                                                 \
                    d[j] = s[j * sj];                                                             \
            }                                                                                     \
        }                                                                                         \
    }
DEFINE_STRIDED(1, uint8_t)
DEFINE_STRIDED(2, uint16_t)
DEFINE_STRIDED(4, uint32_t)
DEFINE_STRIDED(8, uint64_t)

typedef struct strided_ctx {
    const strided_params *p;
    const char *x;
    char *y;
} strided_ctx;

static void strided_elems(size_t es, void *dst, const void *src, int64_t n, int64_t s)
{
    switch (es) {
    case 1: elems_1(dst, src, n, s); break;
    case 2: elems_2(dst, src, n, s); break;
    case 4: elems_4(dst, src, n, s); break;
    default: elems_8(dst, src, n, s); break;
    }
}

static void strided_task(void *arg, size_t i0, size_t i1)
{
    const strided_ctx *c = arg;
    const strided_params *p = c->p;
    size_t es = p->es;
    uint32_t last = p->rank - 1;
    for (size_t it = i0; it < i1; it++) {
        int64_t jc = (int64_t)it % p->j_chunks, rest = (int64_t)it / p->j_chunks;
        int64_t outer = rest / p->q_strips, strip = rest % p->q_strips;
        int64_t io, oo, j0 = jc * p->j_chunk, n = p->odims[last] - j0;
        if (n > p->j_chunk)
            n = p->j_chunk;
        outer_offsets(p, outer, &io, &oo);
        io += j0 * p->istr[last];
        oo += j0;
        if (p->mode == LY_ROWS) {
            cpu_copy_bytes(c->y + oo * (int64_t)es, c->x + io * (int64_t)es, (size_t)n * es);
        } else if (p->mode == LY_ELEMS) {
            strided_elems(es, c->y + oo * (int64_t)es, c->x + io * (int64_t)es, n,
                          p->istr[last]);
        } else {
            int64_t r0 = strip * p->tile, rows = p->odims[p->q] - r0;
            if (rows > p->tile)
                rows = p->tile;
            io += r0; /* q's input stride is 1 */
            oo += r0 * p->ostr[p->q];
            char *dst = c->y + oo * (int64_t)es;
            const char *src = c->x + io * (int64_t)es;
            int64_t sj = p->istr[last], osq = p->ostr[p->q];
            switch (es) {
            case 1: tile_1((uint8_t *)dst, (const uint8_t *)src, rows, n, sj, osq); break;
            case 2: tile_2((uint16_t *)dst, (const uint16_t *)src, rows, n, sj, osq); break;
            case 4: tile_4((uint32_t *)dst, (const uint32_t *)src, rows, n, sj, osq); break;
            default: tile_8((uint64_t *)dst, (const uint64_t *)src, rows, n, sj, osq); break;
            }
        }
    }
}

static loom_status strided_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                               char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const strided_params *p = k->params;
    if (p->numel == 0)
        return LOOM_OK;
    strided_ctx c = {.p = p, .x = args->inputs[0], .y = args->outputs[0]};
    size_t items = (size_t)(p->n_outer_items * p->q_strips * p->j_chunks);
    size_t per_item = (size_t)p->numel / items * p->es;
    cpu_parallel_for(pool, items, cpu_grain_bytes(per_item), strided_task, &c);
    return LOOM_OK;
}

/* Merge neighbouring output dims a (outer) and b = a+1 wherever istr[a] == odims[b]*istr[b]:
 * together they walk the input as one dim would. Drops size-1 dims first. */
static void strided_coalesce(strided_params *p)
{
    uint32_t r = 0;
    for (uint32_t d = 0; d < p->rank; d++) {
        if (p->odims[d] == 1)
            continue;
        if (r > 0 && p->istr[r - 1] == p->odims[d] * p->istr[d]) {
            p->odims[r - 1] *= p->odims[d];
            p->istr[r - 1] = p->istr[d];
            continue;
        }
        p->odims[r] = p->odims[d];
        p->istr[r] = p->istr[d];
        r++;
    }
    p->rank = r;
}

/* ---- Transpose --------------------------------------------------------------------------------- */

static int transpose_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (!same_dtype_supported(node, reason, len))
        return 0;
    uint32_t rank = node->inputs[0].rank;
    const loom_attr *perm = loom_node_attr(node, "perm");
    if (!perm || perm->kind != LOOM_ATTR_INTS || perm->count != rank) {
        cpu_reason(reason, len, "Transpose: canonical 'perm' of %u axes missing", rank);
        return 0;
    }
    unsigned seen = 0;
    for (uint32_t d = 0; d < rank; d++) {
        int64_t a = perm->ints[d];
        if (a < 0 || a >= (int64_t)rank || (seen >> a & 1u)) {
            cpu_reason(reason, len, "Transpose: 'perm' is not a permutation");
            return 0;
        }
        seen |= 1u << a;
    }
    return 1;
}

static loom_status transpose_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                     size_t err_len)
{
    strided_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "Transpose: out of memory");
    const loom_tensor_desc *x = &k->in[0];
    const loom_attr *perm = loom_node_attr(node, "perm");
    int64_t istride[LOOM_MAX_RANK], s = 1;
    for (uint32_t d = x->rank; d-- > 0;) {
        istride[d] = s;
        s *= x->dims[d];
    }
    p->es = loom_dtype_size(x->dtype);
    p->rank = x->rank;
    for (uint32_t d = 0; d < x->rank; d++) {
        p->odims[d] = x->dims[perm->ints[d]];
        p->istr[d] = istride[perm->ints[d]];
    }
    strided_coalesce(p);
    strided_finish(p);
    if (x->rank > 0 && loom_tensor_desc_numel(x) == 0)
        p->numel = 0;
    k->params = p;
    k->run = strided_run;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- Slice ------------------------------------------------------------------------------------- */

static int slice_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (!same_dtype_supported(node, reason, len))
        return 0;
    uint32_t rank = node->inputs[0].rank;
    const loom_attr *st = loom_node_attr(node, "starts"), *sp = loom_node_attr(node, "steps");
    if (!st || !sp || st->kind != LOOM_ATTR_INTS || sp->kind != LOOM_ATTR_INTS ||
        st->count != rank || sp->count != rank || node->outputs[0].rank != rank) {
        cpu_reason(reason, len, "Slice: canonical 'starts' and 'steps' of %u axes missing", rank);
        return 0;
    }
    return 1;
}

static loom_status slice_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                 size_t err_len)
{
    const loom_tensor_desc *x = &k->in[0], *y = &k->out[0];
    const loom_attr *st = loom_node_attr(node, "starts"), *sp = loom_node_attr(node, "steps");
    int empty = loom_tensor_desc_numel(y) == 0;
    int64_t istride[LOOM_MAX_RANK], s = 1;
    for (uint32_t d = x->rank; d-- > 0;) {
        istride[d] = s;
        s *= x->dims[d];
    }
    strided_params *p = calloc(1, sizeof *p);
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "Slice: out of memory");
    p->es = loom_dtype_size(x->dtype);
    p->rank = x->rank;
    for (uint32_t d = 0; d < x->rank && !empty; d++) {
        int64_t start = st->ints[d], step = sp->ints[d], n = y->dims[d];
        int64_t end = start + (n - 1) * step;
        /* Never read outside X, whatever inference let through. */
        if (step == 0 || start < 0 || start >= x->dims[d] || end < 0 || end >= x->dims[d]) {
            free(p);
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "Slice: axis %u: %lld elements from %lld by %lld leave [0, %lld)", d,
                            (long long)n, (long long)start, (long long)step,
                            (long long)x->dims[d]);
        }
        p->base += start * istride[d];
        p->odims[d] = n;
        p->istr[d] = step * istride[d];
    }
    strided_coalesce(p);
    strided_finish(p);
    if (empty)
        p->numel = 0;
    k->params = p;
    k->run = strided_run;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

/* ---- Concat and Split: blocks along one axis ---------------------------------------------------- */

/* The tensor on the many side (Concat's inputs, Split's outputs) is cut into OUTER blocks, one
 * per index of the dims before the axis; part i contributes part_bytes[i] of every block of
 * whole_bytes, at offset part_off[i]. */
typedef struct axis_params {
    uint32_t n_parts;
    size_t outer, whole_bytes;
    size_t *part_bytes, *part_off;
    size_t data[]; /* part_bytes then part_off */
} axis_params;

static loom_status axis_prepare(const loom_node_desc *node, cpu_kernel *k,
                                const loom_tensor_desc *whole, const loom_tensor_desc *parts,
                                uint32_t n_parts, char *err, size_t err_len)
{
    int64_t axis = loom_node_attr_int(node, "axis", 0);
    if (axis < 0 || (uint32_t)axis >= whole->rank)
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "%s: axis %lld out of range",
                        node->op_name, (long long)axis);
    axis_params *p = calloc(1, sizeof *p + 2 * (size_t)n_parts * sizeof(size_t));
    if (!p)
        return cpu_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory",
                        node->op_name);
    size_t es = loom_dtype_size(whole->dtype);
    p->n_parts = n_parts;
    p->part_bytes = p->data;
    p->part_off = p->data + n_parts;
    p->outer = 1;
    for (int64_t d = 0; d < axis; d++)
        p->outer *= (size_t)whole->dims[d];
    size_t inner = es;
    for (uint32_t d = (uint32_t)axis + 1; d < whole->rank; d++)
        inner *= (size_t)whole->dims[d];
    int64_t along = 0;
    for (uint32_t i = 0; i < n_parts; i++) {
        const loom_tensor_desc *t = &parts[i];
        int64_t n = t->dtype == LOOM_DTYPE_UNDEFINED ? 0 : t->dims[axis];
        if (t->rank != whole->rank ||
            (size_t)loom_tensor_desc_numel(t) * es != p->outer * (size_t)n * inner) {
            free(p);
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "%s: part %u does not match the whole off axis %lld", node->op_name,
                            i, (long long)axis);
        }
        p->part_off[i] = (size_t)along * inner;
        p->part_bytes[i] = (size_t)n * inner;
        along += n;
    }
    p->whole_bytes = (size_t)along * inner;
    if (along != whole->dims[axis]) {
        free(p);
        return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                        "%s: parts add up to %lld along axis %lld, not %lld", node->op_name,
                        (long long)along, (long long)axis, (long long)whole->dims[axis]);
    }
    k->params = p;
    k->scratch_bytes = 0;
    return LOOM_OK;
}

typedef struct axis_ctx {
    const axis_params *p;
    const void *const *inputs;
    void *const *outputs;
    int split;
} axis_ctx;

static void axis_task(void *arg, size_t t0, size_t t1)
{
    const axis_ctx *c = arg;
    const axis_params *p = c->p;
    for (size_t t = t0; t < t1; t++) {
        size_t o = t / p->n_parts, i = t % p->n_parts, n = p->part_bytes[i];
        if (n == 0)
            continue;
        if (c->split)
            cpu_copy_bytes((char *)c->outputs[i] + o * n,
                           (const char *)c->inputs[0] + o * p->whole_bytes + p->part_off[i], n);
        else
            cpu_copy_bytes((char *)c->outputs[0] + o * p->whole_bytes + p->part_off[i],
                           (const char *)c->inputs[i] + o * n, n);
    }
}

static loom_status axis_run(const cpu_kernel *k, const loom_exec_args *args, cpu_pool *pool,
                            char *err, size_t err_len)
{
    (void)err;
    (void)err_len;
    const axis_params *p = k->params;
    if (p->outer == 0 || p->whole_bytes == 0)
        return LOOM_OK;
    axis_ctx c = {.p = p, .inputs = args->inputs, .outputs = args->outputs,
                  .split = k->op == LOOM_OP_SPLIT};
    size_t items = p->outer * p->n_parts;
    cpu_parallel_for(pool, items, cpu_grain_bytes(p->whole_bytes / p->n_parts), axis_task, &c);
    return LOOM_OK;
}

static int concat_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (!same_dtype_supported(node, reason, len))
        return 0;
    for (uint32_t i = 1; i < node->n_inputs; i++)
        if (node->inputs[i].dtype != node->inputs[0].dtype) {
            cpu_reason(reason, len, "Concat: input %u has another dtype than input 0", i);
            return 0;
        }
    if (node->outputs[0].rank == 0) {
        cpu_reason(reason, len, "Concat: scalars cannot be concatenated");
        return 0;
    }
    return 1;
}

static loom_status concat_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                  size_t err_len)
{
    loom_status st = axis_prepare(node, k, &k->out[0], k->in, k->n_in, err, err_len);
    if (st == LOOM_OK)
        k->run = axis_run;
    return st;
}

static int split_supports(const loom_node_desc *node, char *reason, size_t len)
{
    if (!same_dtype_supported(node, reason, len))
        return 0;
    if (node->inputs[0].rank == 0) {
        cpu_reason(reason, len, "Split: scalars cannot be split");
        return 0;
    }
    const loom_attr *s = loom_node_attr(node, "split");
    if (!s || s->kind != LOOM_ATTR_INTS || s->count != node->n_outputs) {
        cpu_reason(reason, len, "Split: canonical 'split' of %u sizes missing", node->n_outputs);
        return 0;
    }
    return 1;
}

static loom_status split_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                 size_t err_len)
{
    const loom_attr *s = loom_node_attr(node, "split");
    int64_t axis = loom_node_attr_int(node, "axis", 0);
    for (uint32_t i = 0; i < k->n_out && axis >= 0 && (uint32_t)axis < k->in[0].rank; i++)
        if (s->ints[i] != k->out[i].dims[axis])
            return cpu_fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                            "Split: output %u has %lld along axis %lld, 'split' says %lld", i,
                            (long long)k->out[i].dims[axis], (long long)axis,
                            (long long)s->ints[i]);
    loom_status st = axis_prepare(node, k, &k->in[0], k->out, k->n_out, err, err_len);
    if (st == LOOM_OK)
        k->run = axis_run;
    return st;
}

/* Where output index O of an axis of N input elements, padded by PB in front, reads from. */
static int64_t pad_source(int mode, int64_t o, int64_t pb, int64_t n)
{
    int64_t i = o - pb;
    if (i >= 0 && i < n)
        return i;
    if (mode == 0) /* constant */
        return -1;
    if (mode == 2) /* edge */
        return i < 0 ? 0 : n - 1;
    if (n == 1) /* reflect over one element */
        return 0;
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0)
        i += period;
    return i < n ? i : period - i;
}

static void value_from_float(loom_dtype t, float v, char *out)
{
    memset(out, 0, 8);
    switch (t) {
    case LOOM_DTYPE_F32: memcpy(out, &v, 4); break;
    case LOOM_DTYPE_F16: {
        uint16_t h = cpu_f32_to_f16(v);
        memcpy(out, &h, 2);
        break;
    }
    case LOOM_DTYPE_BF16: {
        uint16_t h = cpu_f32_to_bf16(v);
        memcpy(out, &h, 2);
        break;
    }
    case LOOM_DTYPE_I32: {
        int32_t i = (int32_t)v;
        memcpy(out, &i, 4);
        break;
    }
    case LOOM_DTYPE_I64: {
        int64_t i = (int64_t)v;
        memcpy(out, &i, 8);
        break;
    }
    case LOOM_DTYPE_I8: *(int8_t *)out = (int8_t)v; break;
    case LOOM_DTYPE_U8: *(uint8_t *)out = (uint8_t)v; break;
    case LOOM_DTYPE_BOOL: *(uint8_t *)out = v != 0.0f; break;
    default: break;
    }
}

static loom_status pad_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                               size_t err_len)
{
    cpu_map_params *p = cpu_map_alloc(node);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    const loom_attr *pads = loom_node_attr(node, "pads");
    const loom_attr *m = loom_node_attr(node, "mode");
    const char *mode = m && m->kind == LOOM_ATTR_STRING ? m->s : "constant";
    int mi = strcmp(mode, "reflect") == 0 ? 1 : strcmp(mode, "edge") == 0 ? 2 : 0;
    for (uint32_t d = 0; d < x->rank; d++) {
        const int64_t pb = pads->ints[d];
        for (int64_t o = 0; o < p->out[d]; o++) {
            int64_t src = pad_source(mi, o, pb, x->dims[d]);
            p->map[d][o] = src < 0 ? -1 : src * p->istride[d];
        }
    }
    if (x->rank == 0)
        p->map[0][0] = 0;
    value_from_float(x->dtype, loom_node_attr_float(node, "value", 0.0f), p->value);
    p->value_input = cpu_present(node, 2);
    k->params = p;
    k->free_params = cpu_map_free;
    k->run = cpu_map_run;
    return LOOM_OK;
}

static loom_status tile_prepare(const loom_node_desc *node, cpu_kernel *k, char *err,
                                size_t err_len)
{
    cpu_map_params *p = cpu_map_alloc(node);
    if (!p)
        return cpu_oom(node, err, err_len);
    const loom_tensor_desc *x = &node->inputs[0];
    for (uint32_t d = 0; d < x->rank; d++)
        for (int64_t o = 0; o < p->out[d]; o++)
            p->map[d][o] = (o % x->dims[d]) * p->istride[d];
    if (x->rank == 0)
        p->map[0][0] = 0;
    k->params = p;
    k->free_params = cpu_map_free;
    k->run = cpu_map_run;
    return LOOM_OK;
}

/* ---- registration --------------------------------------------------------------------------- */

void cpu_register_layout(cpu_op_entry *table)
{
    table[LOOM_OP_RESHAPE] = (cpu_op_entry){copy_supports, copy_prepare};
    table[LOOM_OP_FLATTEN] = (cpu_op_entry){copy_supports, copy_prepare};
    table[LOOM_OP_SQUEEZE] = (cpu_op_entry){copy_supports, copy_prepare};
    table[LOOM_OP_UNSQUEEZE] = (cpu_op_entry){copy_supports, copy_prepare};
    table[LOOM_OP_TRANSPOSE] = (cpu_op_entry){transpose_supports, transpose_prepare};
    table[LOOM_OP_CONCAT] = (cpu_op_entry){concat_supports, concat_prepare};
    table[LOOM_OP_SPLIT] = (cpu_op_entry){split_supports, split_prepare};
    table[LOOM_OP_SLICE] = (cpu_op_entry){slice_supports, slice_prepare};
    table[LOOM_OP_PAD] = (cpu_op_entry){cpu_map_supports, pad_prepare};
    table[LOOM_OP_TILE] = (cpu_op_entry){cpu_map_supports, tile_prepare};
}
