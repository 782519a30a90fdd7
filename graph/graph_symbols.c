/*
 * Symbolic dimensions of C-API graphs (graph_symbols.h explains the method): declaring named
 * unknown input dims, the expressions shape inference carries for them (polynomials over the
 * symbols with integer coefficients, floor-divided by a positive constant), the messages that
 * name symbols when the graph contradicts them, and the specialisation of a symbolic graph to
 * concrete input shapes that scheduler/model.c makes plans of.
 */
#include "graph_symbols.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- expressions ----------------------------------------------------------------------------- */

#define SX_TERMS 8   /* terms a kept expression may have */
#define SX_WORK 72   /* terms while combining (SX_TERMS^2 products, plus a few) */

typedef struct sym_term {
    int64_t c;
    uint8_t e[GRAPH_SYM_MAX]; /* exponent of each symbol */
} sym_term;

enum { SX_POLY = 0, SX_OPAQUE = 1 };

/* floor((sum of t[i].c * prod sym^e) / d), d >= 1; OPAQUE: varies with the symbols, no form. */
typedef struct sym_expr {
    uint8_t kind;
    uint8_t n;
    int64_t d;
    sym_term t[SX_TERMS];
} sym_expr;

typedef struct sx_work {
    int opaque;
    size_t n;
    int64_t d;
    sym_term t[SX_WORK];
} sx_work;

static void sx_const(sym_expr *e, int64_t c)
{
    memset(e, 0, sizeof *e);
    e->d = 1;
    if (c) {
        e->n = 1;
        e->t[0].c = c;
    }
}

static void sx_opaque(sym_expr *e)
{
    memset(e, 0, sizeof *e);
    e->kind = SX_OPAQUE;
    e->d = 1;
}

static void sx_sym(sym_expr *e, size_t k)
{
    sx_const(e, 1);
    e->t[0].e[k] = 1;
}

static int term_is_const(const sym_term *t)
{
    for (int k = 0; k < GRAPH_SYM_MAX; k++)
        if (t->e[k])
            return 0;
    return 1;
}

/* 1 with *C when E is a constant. */
static int sx_is_const(const sym_expr *e, int64_t *c)
{
    if (e->kind != SX_POLY || e->d != 1 || e->n > 1 || (e->n == 1 && !term_is_const(&e->t[0])))
        return 0;
    *c = e->n ? e->t[0].c : 0;
    return 1;
}

static int64_t gcd64(int64_t a, int64_t b)
{
    if (a < 0)
        a = -a;
    if (b < 0)
        b = -b;
    while (b) {
        int64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int term_cmp(const void *pa, const void *pb)
{
    const sym_term *a = pa, *b = pb;
    return -memcmp(a->e, b->e, sizeof a->e); /* higher powers first, the constant last */
}

/* W in canonical form into E: like terms merged, zero terms dropped, sorted, the divisor reduced
 * by the common factor; too many terms or an overflow make it opaque. */
static void sx_finish(sx_work *w, sym_expr *e)
{
    if (w->opaque || w->d <= 0) {
        sx_opaque(e);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++) {
        size_t j = 0;
        while (j < n && memcmp(w->t[j].e, w->t[i].e, sizeof w->t[i].e) != 0)
            j++;
        if (j < n) {
            if (__builtin_add_overflow(w->t[j].c, w->t[i].c, &w->t[j].c)) {
                sx_opaque(e);
                return;
            }
        } else {
            w->t[n++] = w->t[i];
        }
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (w->t[i].c)
            w->t[m++] = w->t[i];
    n = m;
    qsort(w->t, n, sizeof w->t[0], term_cmp);
    int64_t d = w->d;
    if (d > 1) {
        int64_t g = d;
        for (size_t i = 0; i < n; i++)
            g = gcd64(g, w->t[i].c);
        if (g > 1) {
            d /= g;
            for (size_t i = 0; i < n; i++)
                w->t[i].c /= g;
        }
        if (n == 0 || (n == 1 && term_is_const(&w->t[0]))) {
            int64_t c = n ? floordiv(w->t[0].c, d) : 0;
            sx_const(e, c);
            return;
        }
    }
    if (n > SX_TERMS) {
        sx_opaque(e);
        return;
    }
    memset(e, 0, sizeof *e);
    e->kind = SX_POLY;
    e->n = (uint8_t)n;
    e->d = d;
    memcpy(e->t, w->t, n * sizeof w->t[0]);
}

static void sx_load(sx_work *w, const sym_expr *e)
{
    w->opaque = e->kind != SX_POLY;
    w->n = e->n;
    w->d = e->d;
    memcpy(w->t, e->t, e->n * sizeof e->t[0]);
}

/* OUT = A * K (an integer-valued A: d == 1). */
static int work_scale(sx_work *w, int64_t k)
{
    for (size_t i = 0; i < w->n; i++)
        if (__builtin_mul_overflow(w->t[i].c, k, &w->t[i].c))
            return 0;
    return 1;
}

/* OUT = A + B. floor(P/d) + Q = floor((P + d*Q)/d) for an integer Q; two quotients have no
 * exact sum of this form. */
static void sx_add(const sym_expr *a, const sym_expr *b, sym_expr *out)
{
    if (a->kind != SX_POLY || b->kind != SX_POLY || (a->d > 1 && b->d > 1)) {
        sx_opaque(out);
        return;
    }
    if (a->d < b->d) {
        const sym_expr *t = a;
        a = b;
        b = t;
    }
    sx_work w, v;
    sx_load(&w, a);
    sx_load(&v, b);
    if (!work_scale(&v, a->d) || w.n + v.n > SX_WORK) {
        sx_opaque(out);
        return;
    }
    memcpy(w.t + w.n, v.t, v.n * sizeof v.t[0]);
    w.n += v.n;
    sx_finish(&w, out);
}

/* OUT = A * B, for integer-valued A and B (a quotient times anything has no exact form). */
static void sx_mul(const sym_expr *a, const sym_expr *b, sym_expr *out)
{
    if (a->kind != SX_POLY || b->kind != SX_POLY || a->d > 1 || b->d > 1 ||
        (size_t)a->n * b->n > SX_WORK) {
        sx_opaque(out);
        return;
    }
    sx_work w = {.d = 1};
    for (size_t i = 0; i < a->n; i++)
        for (size_t j = 0; j < b->n; j++) {
            sym_term *t = &w.t[w.n++];
            if (__builtin_mul_overflow(a->t[i].c, b->t[j].c, &t->c)) {
                sx_opaque(out);
                return;
            }
            for (int k = 0; k < GRAPH_SYM_MAX; k++) {
                unsigned s = (unsigned)a->t[i].e[k] + b->t[j].e[k];
                if (s > 255) {
                    sx_opaque(out);
                    return;
                }
                t->e[k] = (uint8_t)s;
            }
        }
    sx_finish(&w, out);
}

/* OUT = floor(A / S), S > 0: floor(floor(P/d)/s) = floor(P/(d*s)). */
static void sx_divc(const sym_expr *a, int64_t s, sym_expr *out)
{
    sx_work w;
    sx_load(&w, a);
    if (s <= 0 || __builtin_mul_overflow(w.d, s, &w.d))
        w.opaque = 1;
    sx_finish(&w, out);
}

/* OUT = A / Q where Q is one term c*m dividing A exactly (what Reshape's -1 computes: the
 * element count over the other dims). Anything else is opaque. */
static void sx_div_exact(const sym_expr *a, const sym_expr *q, sym_expr *out)
{
    if (a->kind != SX_POLY || q->kind != SX_POLY || a->d > 1 || q->d > 1 || q->n != 1 ||
        q->t[0].c == 0) {
        sx_opaque(out);
        return;
    }
    sx_work w;
    sx_load(&w, a);
    for (size_t i = 0; i < w.n; i++)
        for (int k = 0; k < GRAPH_SYM_MAX; k++) {
            if (w.t[i].e[k] < q->t[0].e[k]) {
                sx_opaque(out);
                return;
            }
            w.t[i].e[k] = (uint8_t)(w.t[i].e[k] - q->t[0].e[k]);
        }
    w.d = q->t[0].c;
    if (w.d < 0) {
        w.d = -w.d;
        if (!work_scale(&w, -1))
            w.opaque = 1;
    }
    sx_finish(&w, out);
}

/* OUT = A + C for a constant C. */
static void sx_addc(const sym_expr *a, int64_t c, sym_expr *out)
{
    sym_expr k;
    sx_const(&k, c);
    sx_add(a, &k, out);
}

/* OUT = A - B for an integer-valued B. */
static void sx_sub(const sym_expr *a, const sym_expr *b, sym_expr *out)
{
    if (b->kind != SX_POLY || b->d > 1) {
        sx_opaque(out);
        return;
    }
    sym_expr nb = *b;
    for (size_t i = 0; i < nb.n; i++)
        if (__builtin_mul_overflow(nb.t[i].c, -1, &nb.t[i].c)) {
            sx_opaque(out);
            return;
        }
    sx_add(a, &nb, out);
}

/* E at the symbols' values VALS; 0 when opaque or on overflow. */
static int sx_eval(const sym_expr *e, const int64_t *vals, size_t n_syms, int64_t *out)
{
    if (e->kind != SX_POLY)
        return 0;
    int64_t sum = 0;
    for (size_t i = 0; i < e->n; i++) {
        int64_t t = e->t[i].c;
        for (size_t k = 0; k < n_syms; k++)
            for (unsigned p = 0; p < e->t[i].e[k]; p++)
                if (__builtin_mul_overflow(t, vals[k], &t))
                    return 0;
        if (__builtin_add_overflow(sum, t, &sum))
            return 0;
    }
    *out = floordiv(sum, e->d);
    return 1;
}

/* E as text ("batch*seq", "(seq+1)/2" where / is floor division, "?" when opaque). */
static void sx_format(const sym_expr *e, char *const *names, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    buf[0] = '\0';
    if (e->kind != SX_POLY) {
        snprintf(buf, cap, "?");
        return;
    }
    size_t w = 0;
#define PUT(...)                                                                                   \
    do {                                                                                           \
        int r_ = snprintf(buf + w, cap - w, __VA_ARGS__);                                          \
        if (r_ < 0 || (size_t)r_ >= cap - w)                                                       \
            return;                                                                                \
        w += (size_t)r_;                                                                           \
    } while (0)
    int paren = e->d > 1 && e->n > 1;
    if (paren)
        PUT("(");
    if (e->n == 0)
        PUT("0");
    for (size_t i = 0; i < e->n; i++) {
        const sym_term *t = &e->t[i];
        int64_t c = t->c;
        if (i)
            PUT("%s", c < 0 ? "-" : "+");
        else if (c < 0)
            PUT("-");
        int64_t ac = c < 0 ? -c : c;
        int first = 1;
        if (ac != 1 || term_is_const(t)) {
            PUT("%lld", (long long)ac);
            first = 0;
        }
        for (int k = 0; k < GRAPH_SYM_MAX; k++)
            for (unsigned p = 0; p < t->e[k]; p++) {
                PUT("%s%s", first ? "" : "*", names[k] ? names[k] : "?");
                first = 0;
            }
    }
    if (paren)
        PUT(")");
    if (e->d > 1)
        PUT("/%lld", (long long)e->d);
#undef PUT
}

/* ---- the side table -------------------------------------------------------------------------- */

/* What a value with symbolic dims carries: each dim's expression and its values at probes B, C
 * (probe A is the value's own desc). */
typedef struct sym_value {
    sym_expr dim[LOOM_MAX_RANK];
    int64_t probe[2][LOOM_MAX_RANK];
    uint8_t probe_ok[2];
    uint8_t symbolic; /* some dim is not a constant */
} sym_value;

struct graph_symtab {
    char *names[GRAPH_SYM_MAX];
    size_t n_syms;
    sym_value **vals; /* by value index; NULL: every dim concrete */
    size_t cap_vals;
    loom_attr_list **node_attrs; /* by node index: the caller's attributes of symbolic nodes */
    size_t cap_nodes;
};

struct graph_sym_node {
    loom_attr_list attrs;
    size_t n_out;
    sym_value *out[];
};

#define N_PROBES 3

/* Symbol K's value at probe J (0 = A, the desc's; 1 = B; 2 = C). Multiples of 5040 (divisible
 * by 1..10) keep reshapes into small factors admissible; the ratios differ between probes so
 * that two symbols, or a symbol and a multiple of another, never pass for one another at all
 * three; C adds an odd remainder so that floor divisions are pinned down. */
static int64_t probe_value(int j, size_t k)
{
    int64_t kk = (int64_t)k;
    switch (j) {
    case 0:
        return 5040 * (kk + 1);
    case 1:
        return 5040 * (2 * kk + 3);
    default:
        return 5040 * (3 * kk + 2) + 2 * kk + 1;
    }
}

void graph_sym_free(graph_symtab *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_syms; i++)
        free(t->names[i]);
    for (size_t i = 0; i < t->cap_vals; i++)
        free(t->vals[i]);
    for (size_t i = 0; i < t->cap_nodes; i++)
        if (t->node_attrs[i]) {
            loom_attr_list_free(t->node_attrs[i]);
            free(t->node_attrs[i]);
        }
    free(t->vals);
    free(t->node_attrs);
    free(t);
}

void graph_sym_node_free(graph_sym_node *r)
{
    if (!r)
        return;
    loom_attr_list_free(&r->attrs);
    for (size_t k = 0; k < r->n_out; k++)
        free(r->out[k]);
    free(r);
}

static const sym_value *value_sym(const loom_graph *g, int32_t v)
{
    if (!g->sym || v < 0 || (size_t)v >= g->sym->cap_vals)
        return NULL;
    return g->sym->vals[v];
}

int graph_sym_value_is_symbolic(const loom_graph *g, int32_t v)
{
    const sym_value *s = value_sym(g, v);
    return s && s->symbolic;
}

/* Dims of value V at probe J into DIMS; 0 when that probe is unknown for V. */
static int value_probe(const loom_graph *g, int32_t v, int j, int64_t *dims)
{
    const graph_value *val = &g->values[v];
    const sym_value *s = value_sym(g, v);
    if (j == 0 || !s) {
        memcpy(dims, val->desc.dims, sizeof val->desc.dims);
        return 1;
    }
    if (!s->probe_ok[j - 1])
        return 0;
    memcpy(dims, s->probe[j - 1], sizeof s->probe[j - 1]);
    return 1;
}

static void value_expr(const loom_graph *g, int32_t v, uint32_t k, sym_expr *e)
{
    const sym_value *s = value_sym(g, v);
    if (s)
        *e = s->dim[k];
    else
        sx_const(e, g->values[v].desc.dims[k]);
}

static int grow_ptrs(void ***items, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 1;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void **p = realloc(*items, n * sizeof *p);
    if (!p)
        return 0;
    for (size_t i = *cap; i < n; i++)
        p[i] = NULL;
    *items = p;
    *cap = n;
    return 1;
}

int graph_sym_dim_known(const loom_graph *g, int32_t v, uint32_t k)
{
    const sym_value *s = value_sym(g, v);
    int64_t c;
    return !s || k >= LOOM_MAX_RANK || sx_is_const(&s->dim[k], &c);
}

size_t graph_sym_count(const loom_graph *g)
{
    return g && g->sym ? g->sym->n_syms : 0;
}

const char *graph_sym_name(const loom_graph *g, size_t i)
{
    return g && g->sym && i < g->sym->n_syms ? g->sym->names[i] : NULL;
}

int graph_sym_dim_symbol(const loom_graph *g, int32_t v, uint32_t k)
{
    const sym_value *s = value_sym(g, v);
    if (!s || k >= g->values[v].desc.rank)
        return -1;
    const sym_expr *e = &s->dim[k];
    if (e->kind != SX_POLY || e->d != 1 || e->n != 1 || e->t[0].c != 1)
        return -1;
    int found = -1;
    for (int q = 0; q < GRAPH_SYM_MAX; q++) {
        if (e->t[0].e[q] > 1 || (e->t[0].e[q] == 1 && found >= 0))
            return -1;
        if (e->t[0].e[q] == 1)
            found = q;
    }
    return found;
}

/* ---- declaring symbolic inputs ----------------------------------------------------------------- */

static int valid_symbol_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return 0;
    return 1;
}

loom_value loom_input_symbolic(loom_graph *g, const char *name, loom_dtype dtype, uint32_t rank,
                               const int64_t *dims, const char *const *dim_names)
{
    if (graph_unusable(g))
        return LOOM_NO_VALUE;
    const char *n = name ? name : "(unnamed)";
    if (!name) {
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "graph input without a name");
        return LOOM_NO_VALUE;
    }
    if (rank > LOOM_MAX_RANK) {
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "input '%s': rank %u exceeds the maximum of %d",
                   n, rank, LOOM_MAX_RANK);
        return LOOM_NO_VALUE;
    }
    if (rank && !dims) {
        graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "input '%s': dims is NULL for rank %u", n, rank);
        return LOOM_NO_VALUE;
    }
    graph_symtab *t = g->sym;
    if (!t && !(t = calloc(1, sizeof *t))) {
        graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory adding input '%s'", n);
        return LOOM_NO_VALUE;
    }
    g->sym = t; /* a graph with a symbolic input (even one failed) is a symbolic graph */
    int sym_of[LOOM_MAX_RANK];
    int64_t at_a[LOOM_MAX_RANK];
    size_t n_syms = t->n_syms;
    char *added[GRAPH_SYM_MAX];
    size_t n_added = 0;
    for (uint32_t k = 0; k < rank; k++) {
        sym_of[k] = -1;
        at_a[k] = dims[k];
        const char *dn = dim_names ? dim_names[k] : NULL;
        if (dims[k] >= 0) {
            if (dn) {
                graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "input '%s': dimension %u is %lld but "
                           "is named '%s': a named dimension must be -1 (unknown)", n, k,
                           (long long)dims[k], dn);
                goto fail;
            }
            continue;
        }
        if (dims[k] != -1) {
            graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "input '%s': dimension %u is %lld; give a "
                       "size >= 0, or -1 with a name for an unknown one", n, k,
                       (long long)dims[k]);
            goto fail;
        }
        if (!dn) {
            graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "input '%s': dimension %u is -1 (unknown) "
                       "but has no name in dim_names", n, k);
            goto fail;
        }
        if (!valid_symbol_name(dn)) {
            graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "input '%s': dimension %u: '%s' is not a "
                       "valid symbol name (1 to 63 letters, digits, '_', '.', '-')", n, k, dn);
            goto fail;
        }
        size_t s = 0;
        while (s < n_syms && strcmp(t->names[s], dn) != 0)
            s++;
        if (s == n_syms) {
            if (n_syms >= GRAPH_SYM_MAX) {
                graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "input '%s': symbol '%s' would be the "
                           "graph's %d-th; at most %d are allowed", n, dn, GRAPH_SYM_MAX + 1,
                           GRAPH_SYM_MAX);
                goto fail;
            }
            char *copy = malloc(strlen(dn) + 1);
            if (!copy) {
                graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory adding input '%s'", n);
                goto fail;
            }
            strcpy(copy, dn);
            t->names[n_syms++] = copy;
            added[n_added++] = copy;
        }
        sym_of[k] = (int)s;
        at_a[k] = probe_value(0, s);
    }
    sym_value *sv = calloc(1, sizeof *sv);
    if (!sv) {
        graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory adding input '%s'", n);
        goto fail;
    }
    sv->probe_ok[0] = sv->probe_ok[1] = 1;
    for (uint32_t k = 0; k < rank; k++) {
        if (sym_of[k] < 0) {
            sx_const(&sv->dim[k], dims[k]);
            sv->probe[0][k] = sv->probe[1][k] = dims[k];
        } else {
            sx_sym(&sv->dim[k], (size_t)sym_of[k]);
            sv->probe[0][k] = probe_value(1, (size_t)sym_of[k]);
            sv->probe[1][k] = probe_value(2, (size_t)sym_of[k]);
            sv->symbolic = 1;
        }
    }
    t->n_syms = n_syms;
    loom_value h = loom_input(g, name, dtype, rank, at_a);
    int32_t v = graph_index(g, h);
    if (v < 0) {
        free(sv);
        t->n_syms -= n_added;
        for (size_t i = 0; i < n_added; i++)
            free(added[i]);
        return LOOM_NO_VALUE;
    }
    if (!grow_ptrs((void ***)&t->vals, &t->cap_vals, (size_t)v + 1)) {
        free(sv);
        graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "out of memory adding input '%s'", n);
        return LOOM_NO_VALUE;
    }
    t->vals[v] = sv;
    return h;
fail:
    for (size_t i = 0; i < n_added; i++)
        free(added[i]);
    return LOOM_NO_VALUE;
}

/* ---- reading symbolic shapes ------------------------------------------------------------------- */

loom_status loom_value_dim_expr(const loom_graph *g, loom_value handle, uint32_t axis, char *buf,
                                size_t cap)
{
    if (!g || !buf || cap == 0)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_value_dim_expr: %s",
                              !g ? "graph is NULL" : "buf is NULL or cap is 0");
    int32_t v = graph_index(g, handle);
    if (v < 0)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_value_dim_expr: handle %d is not "
                              "a value of graph '%s'", (int)handle, g->name);
    if (axis >= g->values[v].desc.rank)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_value_dim_expr: value '%s' has "
                              "rank %u, axis %u asked for", g->values[v].name,
                              g->values[v].desc.rank, axis);
    sym_expr e;
    value_expr(g, v, axis, &e);
    sx_format(&e, g->sym ? g->sym->names : NULL, buf, cap);
    loom_clear_error();
    return LOOM_OK;
}

size_t loom_graph_symbol_count(const loom_graph *g)
{
    return graph_sym_count(g);
}

const char *loom_graph_symbol_name(const loom_graph *g, size_t i)
{
    return graph_sym_name(g, i);
}

/* The symbolic shape of value V as text: "[batch, seq, 4]". */
static void shape_text(const loom_graph *g, int32_t v, char *buf, size_t cap)
{
    size_t w = 0;
    const loom_tensor_desc *d = &g->values[v].desc;
    w += (size_t)snprintf(buf, cap, "[");
    for (uint32_t k = 0; k < d->rank && w + 2 < cap; k++) {
        char one[96];
        sym_expr e;
        value_expr(g, v, k, &e);
        sx_format(&e, g->sym ? g->sym->names : NULL, one, sizeof one);
        int r = snprintf(buf + w, cap - w, "%s%s", k ? ", " : "", one);
        if (r < 0 || (size_t)r >= cap - w)
            return;
        w += (size_t)r;
    }
    if (w + 2 < cap)
        snprintf(buf + w, cap - w, "]");
}

/* ---- messages ---------------------------------------------------------------------------------- */

/* Replace in MSG every number that equals a symbolic dim of one of the inputs at the probe
 * whose dims PROBE_DIMS gives (PROBE_OK: known for that input) by that dim's expression (quoted
 * outside brackets). */
static void replace_numbers(const loom_graph *g, const loom_value *in, size_t n_in,
                            const int64_t (*probe_dims)[LOOM_MAX_RANK], const uint8_t *probe_ok,
                            char *msg, size_t cap)
{
    char out[1024];
    size_t w = 0, depth = 0;
    const char *p = msg;
    while (*p && w + 1 < sizeof out) {
        if (*p == '[')
            depth++;
        else if (*p == ']' && depth)
            depth--;
        int starts = isdigit((unsigned char)*p) && (p == msg || (!isalnum((unsigned char)p[-1]) &&
                                                                 p[-1] != '_' && p[-1] != '\''));
        if (!starts) {
            out[w++] = *p++;
            continue;
        }
        const char *q = p;
        while (isdigit((unsigned char)*q))
            q++;
        if (isalpha((unsigned char)*q) || *q == '_') {
            while (p < q && w + 1 < sizeof out)
                out[w++] = *p++;
            continue;
        }
        long long num = strtoll(p, NULL, 10);
        char text[128] = "";
        for (size_t i = 0; i < n_in && !text[0]; i++) {
            if (in[i] == LOOM_NO_VALUE || !graph_sym_value_is_symbolic(g, in[i]))
                continue;
            const graph_value *val = &g->values[in[i]];
            if (!probe_ok[i])
                continue;
            for (uint32_t k = 0; k < val->desc.rank && !text[0]; k++) {
                sym_expr e;
                value_expr(g, in[i], k, &e);
                int64_t c;
                if (sx_is_const(&e, &c) || probe_dims[i][k] != num)
                    continue;
                char one[100];
                sx_format(&e, g->sym->names, one, sizeof one);
                snprintf(text, sizeof text, depth ? "%s" : "'%s'", one);
            }
        }
        if (text[0]) {
            size_t l = strlen(text);
            if (w + l + 1 >= sizeof out)
                break;
            memcpy(out + w, text, l);
            w += l;
            p = q;
        } else {
            while (p < q && w + 1 < sizeof out)
                out[w++] = *p++;
        }
    }
    out[w] = '\0';
    snprintf(msg, cap, "%s", out);
}

/* Append " (inputs: x [batch, seq], W [3, 4]; ...)" to MSG. */
static void append_shapes(const loom_graph *g, const loom_value *in, size_t n_in, char *msg,
                          size_t cap)
{
    size_t w = strlen(msg);
    int any = 0;
    for (size_t i = 0; i < n_in && w + 8 < cap; i++) {
        if (in[i] == LOOM_NO_VALUE)
            continue;
        char s[256];
        shape_text(g, in[i], s, sizeof s);
        int r = snprintf(msg + w, cap - w, "%s'%s' %s", any ? ", " : " (inputs: ",
                         g->values[in[i]].name, s);
        if (r < 0 || (size_t)r >= cap - w)
            return;
        w += (size_t)r;
        any = 1;
    }
    if (any)
        snprintf(msg + w, cap - w, "; a symbolic dimension may take any size)");
}

void graph_sym_explain(const loom_graph *g, const loom_value *in, size_t n_in, char *err,
                       size_t err_len)
{
    if (!g->sym || !err || !err_len)
        return;
    int64_t(*dims)[LOOM_MAX_RANK] = calloc(n_in + 1, sizeof *dims);
    uint8_t *ok = calloc(n_in + 1, 1);
    if (dims && ok) {
        for (size_t i = 0; i < n_in; i++)
            ok[i] = in[i] != LOOM_NO_VALUE && value_probe(g, in[i], 0, dims[i]);
        replace_numbers(g, in, n_in, (const int64_t(*)[LOOM_MAX_RANK])dims, ok, err,
                        err_len);
        append_shapes(g, in, n_in, err, err_len);
    }
    free(dims);
    free(ok);
}

/* ---- inference --------------------------------------------------------------------------------- */

static const loom_attr *find_attr(const loom_attr *attrs, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (attrs[i].name && strcmp(attrs[i].name, name) == 0)
            return &attrs[i];
    return NULL;
}

static int64_t attr_int(const loom_attr *attrs, size_t n, const char *name, int64_t dflt)
{
    const loom_attr *a = find_attr(attrs, n, name);
    return a && a->kind == LOOM_ATTR_INT ? a->i : dflt;
}

static int64_t canon_int(const loom_attr_list *canon, const char *name, uint32_t i, int64_t dflt)
{
    const loom_attr *a = canon ? loom_attr_list_get(canon, name) : NULL;
    if (!a)
        return dflt;
    if (a->kind == LOOM_ATTR_INT)
        return a->i;
    return a->kind == LOOM_ATTR_INTS && i < a->count ? a->ints[i] : dflt;
}

/* The I-th of COUNT int64s of constant input IDX (DFLT when absent), 0 when unreadable. */
static int const_i64(const loom_tensor_desc *in_d, const void **in_c, size_t n_in, size_t idx,
                     size_t i, int64_t dflt, int64_t *v)
{
    if (idx >= n_in || in_d[idx].dtype == LOOM_DTYPE_UNDEFINED) {
        *v = dflt;
        return 1;
    }
    if (!in_c[idx] || in_d[idx].rank != 1 || (size_t)in_d[idx].dims[0] <= i)
        return 0;
    if (in_d[idx].dtype == LOOM_DTYPE_I64)
        *v = ((const int64_t *)in_c[idx])[i];
    else if (in_d[idx].dtype == LOOM_DTYPE_I32)
        *v = ((const int32_t *)in_c[idx])[i];
    else
        return 0;
    return 1;
}

/* Slice along an axis of size E (A: its value at probe A) from START to END by STEP, with
 * ONNX's clamping taken for a large E (the expression is verified at every probe anyway). */
static void slice_len(const sym_expr *e, int64_t a, int64_t start, int64_t end, int64_t step,
                      sym_expr *out)
{
    sym_expr st, en, len;
    if (step > 0) {
        if (start < 0)
            sx_addc(e, start, &st);
        else
            sx_const(&st, start);
        if (end < 0)
            sx_addc(e, end, &en);
        else if (end >= a)
            en = *e;
        else
            sx_const(&en, end);
        sx_sub(&en, &st, &len);
    } else {
        if (start < 0)
            sx_addc(e, start, &st);
        else if (start >= a)
            sx_addc(e, -1, &st);
        else
            sx_const(&st, start);
        if (end < -a)
            sx_const(&en, -1);
        else if (end < 0)
            sx_addc(e, end, &en);
        else
            sx_const(&en, end);
        sx_sub(&st, &en, &len);
        step = -step;
    }
    sym_expr t;
    sx_addc(&len, step - 1, &t);
    sx_divc(&t, step, out);
}

/* The expression a rule gives dim K of output O, when the operator combines dims (Reshape's
 * -1, Flatten, Concat) or windows them (Conv and pooling from their canonical attributes CANON,
 * Slice from its constant inputs); 0 when it has none. */
static int rule_expr(const loom_graph *g, const loom_op_def *def, const loom_value *in,
                     size_t n_in, const loom_tensor_desc *in_d, const void **in_c,
                     const loom_attr *attrs, size_t n_attrs, const loom_attr_list *canon,
                     const loom_tensor_desc *out_d, size_t o, uint32_t k, const sym_expr *done,
                     sym_expr *e)
{
    if (n_in == 0 || in[0] == LOOM_NO_VALUE)
        return 0;
    uint32_t r0 = in_d[0].rank;
    const char *op = def->name;
    if ((strcmp(op, "Conv") == 0 || strcmp(op, "MaxPool") == 0 ||
         strcmp(op, "AveragePool") == 0 || strcmp(op, "LpPool") == 0) &&
        o == 0 && k >= 2 && k < r0) {
        uint32_t i = k - 2, ns = r0 - 2;
        sym_expr x, t;
        value_expr(g, in[0], k, &x);
        int64_t s = canon_int(canon, "strides", i, 1);
        const loom_attr *ap = find_attr(attrs, n_attrs, "auto_pad");
        if (s <= 0)
            return 0;
        if (ap && ap->kind == LOOM_ATTR_STRING && ap->s && strncmp(ap->s, "SAME", 4) == 0) {
            sx_addc(&x, s - 1, &t);
            sx_divc(&t, s, e);
            return 1;
        }
        int64_t kern = canon_int(canon, "kernel_shape", i, -1);
        if (kern < 0 && n_in > 1 && in[1] != LOOM_NO_VALUE && in_d[1].rank == r0)
            kern = in_d[1].dims[k]; /* Conv: from the weights */
        int64_t dil = canon_int(canon, "dilations", i, 1);
        int64_t pads = canon_int(canon, "pads", i, 0) + canon_int(canon, "pads", ns + i, 0);
        int64_t ceil_mode = canon_int(canon, "ceil_mode", 0, 0);
        if (kern < 1)
            return 0;
        int64_t c = pads - (kern - 1) * dil - 1 + s + (ceil_mode ? s - 1 : 0);
        sx_addc(&x, c, &t);
        sx_divc(&t, s, e);
        return 1;
    }
    if (strcmp(op, "Slice") == 0 && o == 0 && k < r0 && n_in >= 3) {
        size_t n = in_d[1].rank == 1 ? (size_t)in_d[1].dims[0] : 0;
        for (size_t j = 0; j < n; j++) {
            int64_t axis, start, end, step;
            if (!const_i64(in_d, in_c, n_in, 3, j, (int64_t)j, &axis) ||
                !const_i64(in_d, in_c, n_in, 1, j, 0, &start) ||
                !const_i64(in_d, in_c, n_in, 2, j, 0, &end) ||
                !const_i64(in_d, in_c, n_in, 4, j, 1, &step) || step == 0)
                return 0;
            if (axis < 0)
                axis += r0;
            if (axis != (int64_t)k)
                continue;
            sym_expr x;
            value_expr(g, in[0], k, &x);
            slice_len(&x, in_d[0].dims[k], start, end, step, e);
            return 1;
        }
        value_expr(g, in[0], k, e);
        return 1;
    }
    if (strcmp(def->name, "Flatten") == 0 && o == 0) {
        int64_t axis = attr_int(attrs, n_attrs, "axis", 1);
        if (axis < 0)
            axis += r0;
        if (axis < 0 || axis > (int64_t)r0 || k > 1)
            return 0;
        sx_const(e, 1);
        for (uint32_t q = k == 0 ? 0 : (uint32_t)axis; q < (k == 0 ? (uint32_t)axis : r0); q++) {
            sym_expr d, p;
            value_expr(g, in[0], q, &d);
            sx_mul(e, &d, &p);
            *e = p;
        }
        return 1;
    }
    if (strcmp(def->name, "Concat") == 0 && o == 0) {
        int64_t axis = attr_int(attrs, n_attrs, "axis", 0);
        if (axis < 0)
            axis += r0;
        if (axis != (int64_t)k)
            return 0;
        sx_const(e, 0);
        for (size_t i = 0; i < n_in; i++) {
            if (in[i] == LOOM_NO_VALUE || in_d[i].rank != r0)
                return 0;
            sym_expr d, s;
            value_expr(g, in[i], k, &d);
            sx_add(e, &d, &s);
            *e = s;
        }
        return 1;
    }
    if (strcmp(def->name, "Reshape") == 0 && o == 0 && n_in >= 2 && in_c[1] &&
        in_d[1].dtype == LOOM_DTYPE_I64 && in_d[1].rank == 1 &&
        in_d[1].dims[0] == (int64_t)out_d[0].rank) {
        const int64_t *shape = in_c[1];
        int allowzero = attr_int(attrs, n_attrs, "allowzero", 0) != 0;
        if (shape[k] == 0 && !allowzero && k < r0) {
            value_expr(g, in[0], k, e);
            return 1;
        }
        if (shape[k] != -1)
            return 0;
        sym_expr num, den, t;
        sx_const(&num, 1);
        for (uint32_t q = 0; q < r0; q++) {
            sym_expr d;
            value_expr(g, in[0], q, &d);
            sx_mul(&num, &d, &t);
            num = t;
        }
        sx_const(&den, 1);
        for (uint32_t q = 0; q < out_d[0].rank; q++) {
            if (q == k)
                continue;
            sym_expr d;
            if (shape[q] == 0 && !allowzero && q < r0)
                value_expr(g, in[0], q, &d);
            else if (shape[q] > 0)
                sx_const(&d, shape[q]);
            else
                d = done[q];
            sx_mul(&den, &d, &t);
            den = t;
        }
        sx_div_exact(&num, &den, e);
        return 1;
    }
    return 0;
}

/* 1 when E takes the value O[j] at every probe J in MASK. */
static int fits(const sym_expr *e, const int64_t *o, unsigned mask, size_t n_syms)
{
    if (e->kind != SX_POLY)
        return 0;
    for (int j = 0; j < N_PROBES; j++) {
        if (!(mask >> j & 1))
            continue;
        int64_t vals[GRAPH_SYM_MAX], r;
        for (size_t s = 0; s < n_syms; s++)
            vals[s] = probe_value(j, s);
        if (!sx_eval(e, vals, n_syms, &r) || r != o[j])
            return 0;
    }
    return 1;
}

/* The expression of an output dim whose values at the probes in MASK are O. */
static void fit_dim(const loom_graph *g, const loom_value *in, size_t n_in,
                    const int64_t (*in_p)[N_PROBES][LOOM_MAX_RANK], const unsigned *in_mask,
                    const int64_t *o, unsigned mask, const sym_expr *rule, sym_expr *e)
{
    size_t n_syms = g->sym->n_syms;
    /* Needs A and B at least: with one probe anything fits. */
    if ((mask & 3) != 3) {
        sx_opaque(e);
        return;
    }
    if (rule && fits(rule, o, mask, n_syms)) {
        *e = *rule;
        return;
    }
    int same = 1;
    for (int j = 1; j < N_PROBES; j++)
        if (mask >> j & 1)
            same &= o[j] == o[0];
    if (same) {
        sx_const(e, o[0]);
        return;
    }
    /* floor((k*E + c)/s) for an input dim E: copies (k = s = 1, c = 0), offsets (Slice, Pad),
     * strided windows (Conv, pooling, Slice with steps), repeats (Tile, Resize by 2). */
    for (int64_t s = 1; s <= 8; s++)
        for (int64_t kk = 1; kk <= 4; kk++)
            for (size_t i = 0; i < n_in; i++) {
                if (in[i] == LOOM_NO_VALUE || !graph_sym_value_is_symbolic(g, in[i]))
                    continue;
                unsigned m = mask & in_mask[i];
                if ((m & 3) != 3)
                    continue;
                const graph_value *val = &g->values[in[i]];
                for (uint32_t k = 0; k < val->desc.rank; k++) {
                    sym_expr ek;
                    value_expr(g, in[i], k, &ek);
                    int64_t c0;
                    if (ek.kind != SX_POLY || sx_is_const(&ek, &c0))
                        continue;
                    int64_t lo = INT64_MIN, hi = INT64_MAX;
                    int ok = 1;
                    for (int j = 0; j < N_PROBES && ok; j++) {
                        if (!(m >> j & 1))
                            continue;
                        int64_t ev = in_p[i][j][k], a, b;
                        if (__builtin_mul_overflow(s, o[j], &a) ||
                            __builtin_mul_overflow(kk, ev, &b) ||
                            __builtin_sub_overflow(a, b, &a)) {
                            ok = 0;
                            break;
                        }
                        if (a > lo)
                            lo = a;
                        if (a + s - 1 < hi)
                            hi = a + s - 1;
                    }
                    if (!ok || lo > hi)
                        continue;
                    sym_expr kx, t1, cx, t2;
                    sx_const(&kx, kk);
                    if (kk == 1)
                        t1 = ek; /* a quotient times 1 stays exact */
                    else
                        sx_mul(&ek, &kx, &t1);
                    sx_const(&cx, hi);
                    sx_add(&t1, &cx, &t2);
                    sx_divc(&t2, s, e);
                    if (fits(e, o, mask, n_syms))
                        return;
                }
            }
    sx_opaque(e);
}

static int contains(const char *s, const char *w)
{
    return strstr(s, w) != NULL;
}

loom_status graph_sym_infer(loom_graph *g, const loom_op_def *def, const char *node_name,
                            const loom_value *in, size_t n_in, const loom_tensor_desc *in_d,
                            const void **in_c, const loom_attr *attrs, size_t n_attrs,
                            const loom_attr_list *canon, const loom_tensor_desc *out_d,
                            size_t n_out, graph_sym_node **out)
{
    *out = NULL;
    int any = 0;
    for (size_t i = 0; i < n_in && !any; i++)
        any = in[i] != LOOM_NO_VALUE && graph_sym_value_is_symbolic(g, in[i]);
    if (!any)
        return LOOM_OK;
    char err[512];
    graph_sym_node *r = calloc(1, sizeof *r + n_out * sizeof r->out[0]);
    int64_t(*in_p)[N_PROBES][LOOM_MAX_RANK] = calloc(n_in + 1, sizeof *in_p);
    unsigned *in_mask = calloc(n_in + 1, sizeof *in_mask);
    loom_tensor_desc *pd = calloc(n_in + 1, sizeof *pd);
    loom_tensor_desc *po = calloc(n_out + 1, sizeof *po);
    int64_t(*o_p)[N_PROBES][LOOM_MAX_RANK] = calloc(n_out + 1, sizeof *o_p);
    loom_status st = LOOM_OK;
    if (!r || !in_p || !in_mask || !pd || !po || !o_p) {
        st = graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "node '%s' (%s): out of memory", node_name,
                        def->name);
        goto done;
    }
    r->n_out = n_out;
    if ((st = loom_attr_list_init(&r->attrs, attrs, n_attrs, err, sizeof err)) != LOOM_OK) {
        st = graph_fail(g, st, "node '%s' (%s): %s", node_name, def->name, err);
        goto done;
    }
    for (size_t i = 0; i < n_in; i++) {
        if (in[i] == LOOM_NO_VALUE)
            continue;
        for (int j = 0; j < N_PROBES; j++)
            if (value_probe(g, in[i], j, in_p[i][j]))
                in_mask[i] |= 1u << j;
    }
    unsigned mask = 1; /* probe A: the builder's own inference */
    for (size_t o = 0; o < n_out; o++)
        memcpy(o_p[o][0], out_d[o].dims, sizeof out_d[o].dims);
    for (int j = 1; j < N_PROBES; j++) {
        int avail = 1;
        for (size_t i = 0; i < n_in; i++) {
            pd[i] = in_d[i];
            if (in[i] == LOOM_NO_VALUE)
                continue;
            avail &= (in_mask[i] >> j) & 1;
            memcpy(pd[i].dims, in_p[i][j], sizeof pd[i].dims);
        }
        if (!avail)
            continue;
        loom_attr_list list = {0};
        if (loom_attr_list_init(&list, attrs, n_attrs, err, sizeof err) != LOOM_OK)
            continue;
        memset(po, 0, (n_out + 1) * sizeof *po);
        err[0] = '\0';
        loom_infer_ctx ctx = {.node_name = node_name, .n_inputs = (uint32_t)n_in, .inputs = pd,
                              .input_constants = in_c, .n_outputs = (uint32_t)n_out,
                              .outputs = po, .attrs = &list, .err = err, .err_len = sizeof err};
        loom_status ist = def->infer(&ctx);
        loom_attr_list_free(&list);
        int same_ranks = ist == LOOM_OK;
        for (size_t o = 0; o < n_out && same_ranks; o++)
            same_ranks = po[o].rank == out_d[o].rank;
        if (ist == LOOM_OK && same_ranks) {
            mask |= 1u << j;
            for (size_t o = 0; o < n_out; o++)
                memcpy(o_p[o][j], po[o].dims, sizeof po[o].dims);
            continue;
        }
        /* Probe B failing where A passed: the node accepts the symbols only when they stand in
         * some relation (seq = 2*batch, say), which their declaration as independent unknowns
         * contradicts. C's odd sizes legitimately fail divisibility: it only sharpens fits. */
        if (j == 1 && !contains(err, "overflow")) {
            uint8_t ok[64];
            int64_t(*dims)[LOOM_MAX_RANK] = calloc(n_in + 1, sizeof *dims);
            if (dims && n_in <= 64) {
                for (size_t i = 0; i < n_in; i++) {
                    ok[i] = in[i] != LOOM_NO_VALUE && ((in_mask[i] >> 1) & 1);
                    if (ok[i])
                        memcpy(dims[i], in_p[i][1], sizeof dims[i]);
                }
                if (!err[0] || ist == LOOM_OK)
                    snprintf(err, sizeof err, "its output shapes depend on which values the "
                             "symbols take");
                replace_numbers(g, in, n_in, (const int64_t(*)[LOOM_MAX_RANK])dims, ok, err,
                                sizeof err);
                append_shapes(g, in, n_in, err, sizeof err);
            }
            free(dims);
            st = graph_fail(g, LOOM_ERR_INVALID_ARGUMENT, "node '%s' (%s): %s", node_name,
                            def->name, err);
            goto done;
        }
    }
    for (size_t o = 0; o < n_out; o++) {
        sym_value *sv = calloc(1, sizeof *sv);
        if (!sv) {
            st = graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "node '%s' (%s): out of memory",
                            node_name, def->name);
            goto done;
        }
        r->out[o] = sv;
        for (int j = 1; j < N_PROBES; j++) {
            sv->probe_ok[j - 1] = (mask >> j) & 1;
            if (sv->probe_ok[j - 1])
                memcpy(sv->probe[j - 1], o_p[o][j], sizeof sv->probe[j - 1]);
        }
        for (uint32_t k = 0; k < out_d[o].rank; k++) {
            sym_expr rule;
            int has_rule = rule_expr(g, def, in, n_in, in_d, in_c, attrs, n_attrs, canon, out_d,
                                     o, k, sv->dim, &rule);
            int64_t ov[N_PROBES];
            for (int j = 0; j < N_PROBES; j++)
                ov[j] = o_p[o][j][k];
            fit_dim(g, in, n_in, (const int64_t(*)[N_PROBES][LOOM_MAX_RANK])in_p, in_mask, ov,
                    mask, has_rule ? &rule : NULL, &sv->dim[k]);
            int64_t c;
            if (!sx_is_const(&sv->dim[k], &c))
                sv->symbolic = 1;
        }
    }
    *out = r;
    r = NULL;
done:
    graph_sym_node_free(r);
    free(in_p);
    free(in_mask);
    free(pd);
    free(po);
    free(o_p);
    return st;
}

loom_status graph_sym_attach(loom_graph *g, size_t node, graph_sym_node *r)
{
    if (!r)
        return LOOM_OK;
    graph_symtab *t = g->sym;
    const graph_node *nd = &g->nodes[node];
    loom_attr_list *keep = malloc(sizeof *keep);
    int32_t maxv = -1;
    for (uint32_t k = 0; k < nd->n_outputs; k++)
        if (nd->outputs[k] > maxv)
            maxv = nd->outputs[k];
    if (!keep || !grow_ptrs((void ***)&t->node_attrs, &t->cap_nodes, node + 1) ||
        !grow_ptrs((void ***)&t->vals, &t->cap_vals, (size_t)maxv + 1)) {
        free(keep);
        graph_sym_node_free(r);
        return graph_fail(g, LOOM_ERR_OUT_OF_MEMORY, "node '%s' (%s): out of memory", nd->name,
                          nd->def->name);
    }
    *keep = r->attrs;
    memset(&r->attrs, 0, sizeof r->attrs);
    t->node_attrs[node] = keep;
    for (uint32_t k = 0; k < nd->n_outputs && k < r->n_out; k++) {
        t->vals[nd->outputs[k]] = r->out[k];
        r->out[k] = NULL;
    }
    graph_sym_node_free(r);
    return LOOM_OK;
}

/* ---- specialisation ---------------------------------------------------------------------------- */

/* Give V the name NAME, moving a made-up name out of the way when folding already gave it to
 * another value (as graph_rebuild.c does). */
/* "batch=2, seq=7" for the symbols' values VALS (-1: not bound). */
static void bindings_text(const loom_graph *g, const int64_t *vals, char *buf, size_t cap)
{
    size_t w = 0;
    buf[0] = '\0';
    for (size_t s = 0; s < graph_sym_count(g) && w + 2 < cap; s++) {
        int r = snprintf(buf + w, cap - w, "%s%s=%lld", s ? ", " : "", g->sym->names[s],
                         (long long)vals[s]);
        if (r < 0 || (size_t)r >= cap - w)
            return;
        w += (size_t)r;
    }
}

loom_status graph_sym_specialise(const loom_graph *src, const loom_tensor *const *inputs,
                                 size_t n_inputs, graph_eval_fn eval, loom_graph **out)
{
    *out = NULL;
    if (!src || !src->checked || (n_inputs && !inputs) || n_inputs != src->n_inputs)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "specialising graph '%s': %s",
                              src ? src->name : "?",
                              !src ? "graph is NULL" : !src->checked ? "graph is not checked"
                                                                     : "wrong input count");
    /* Bind every symbol, and refuse inputs that contradict the declared shapes. */
    int64_t vals[GRAPH_SYM_MAX];
    size_t from_in[GRAPH_SYM_MAX];
    for (size_t s = 0; s < GRAPH_SYM_MAX; s++)
        vals[s] = -1;
    for (size_t i = 0; i < n_inputs; i++) {
        const graph_value *val = &src->values[src->inputs[i]];
        const loom_tensor_desc *d = inputs[i] ? loom_tensor_desc_of(inputs[i]) : NULL;
        if (!d)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "input %zu ('%s') is NULL", i,
                                  val->name);
        if (d->dtype != val->desc.dtype || d->rank != val->desc.rank)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "input '%s': %s %u-d tensor, the "
                                  "graph declares %s of rank %u", val->name,
                                  loom_dtype_name(d->dtype), d->rank,
                                  loom_dtype_name(val->desc.dtype), val->desc.rank);
        for (uint32_t k = 0; k < d->rank; k++) {
            int s = graph_sym_dim_symbol(src, src->inputs[i], k);
            if (s < 0) {
                if (d->dims[k] != val->desc.dims[k])
                    return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "input '%s': dimension %u "
                                          "is %lld, the graph fixes it at %lld", val->name, k,
                                          (long long)d->dims[k], (long long)val->desc.dims[k]);
                continue;
            }
            if (vals[s] >= 0 && vals[s] != d->dims[k])
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "dimension '%s' is %lld in %s "
                                      "but %lld in %s", src->sym->names[s], (long long)vals[s],
                                      src->values[src->inputs[from_in[s]]].name,
                                      (long long)d->dims[k], val->name);
            vals[s] = d->dims[k];
            from_in[s] = i;
        }
    }
    loom_graph *g = loom_graph_create(src->name);
    loom_value *map = malloc((src->n_values + 1) * sizeof *map);
    size_t max_io = 1;
    for (size_t i = 0; i < src->n_nodes; i++) {
        if (src->nodes[i].n_inputs > max_io)
            max_io = src->nodes[i].n_inputs;
        if (src->nodes[i].n_outputs > max_io)
            max_io = src->nodes[i].n_outputs;
    }
    loom_value *ins = malloc(max_io * sizeof *ins), *outs = malloc(max_io * sizeof *outs);
    loom_status st = LOOM_OK;
    if (!g || !map || !ins || !outs) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory specialising graph '%s'",
                            src->name);
        goto done;
    }
    graph_raw_handles(g);
    if (eval)
        graph_set_folding(g, 1, eval);
    for (size_t v = 0; v < src->n_values; v++) {
        map[v] = LOOM_NO_VALUE;
        const graph_value *val = &src->values[v];
        if (val->kind != GRAPH_VALUE_CONSTANT || (!val->n_consumers && val->output_index < 0))
            continue;
        /* Borrowed, and the plan borrows too: SRC (owned by the model) outlives every plan
         * made from this graph, so the weights exist once however many specialisations do. */
        loom_value c = loom_constant_borrowed(g, val->name, val->desc.dtype, val->desc.rank,
                                              val->desc.dims, val->data);
        if (c != LOOM_NO_VALUE)
            g->values[c].copy_in_plan = 0;
        map[v] = c;
    }
    for (size_t i = 0; i < src->n_inputs; i++) {
        const graph_value *val = &src->values[src->inputs[i]];
        int64_t dims[LOOM_MAX_RANK];
        loom_tensor_dims(inputs[i], dims);
        map[src->inputs[i]] = loom_input(g, val->name, val->desc.dtype, val->desc.rank, dims);
    }
    for (size_t p = 0; p < src->n_nodes && g->error == LOOM_OK; p++) {
        const graph_node *n = &src->nodes[p];
        for (uint32_t k = 0; k < n->n_inputs; k++)
            ins[k] = n->inputs[k] == LOOM_NO_VALUE ? LOOM_NO_VALUE : map[n->inputs[k]];
        const loom_attr_list *al = src->sym && p < src->sym->cap_nodes && src->sym->node_attrs[p]
                                       ? src->sym->node_attrs[p]
                                       : &n->attrs;
        if (loom_graph_op(g, n->def->name, n->name, ins, n->n_inputs, al->items, al->count, outs,
                          n->n_outputs) != LOOM_OK)
            break;
        for (uint32_t k = 0; k < n->n_outputs; k++) {
            map[n->outputs[k]] = outs[k];
            if (graph_rebuild_take_name(g, outs[k], src->values[n->outputs[k]].name) != LOOM_OK)
                break;
        }
    }
    for (size_t i = 0; i < src->n_outputs && g->error == LOOM_OK; i++) {
        loom_value sv = src->outputs[i];
        loom_value v = map[sv];
        if (v == LOOM_NO_VALUE)
            break;
        graph_rebuild_output(g, v, src->values[sv].name);
    }
    if (g->error != LOOM_OK) {
        char b[256];
        bindings_text(src, vals, b, sizeof b);
        st = loom_set_error(g->error, "graph '%s'%s%s: %s", src->name, b[0] ? " with " : "", b,
                            g->error_msg);
        goto done;
    }
    st = loom_graph_check(g);
done:
    free(map);
    free(ins);
    free(outs);
    if (st != LOOM_OK) {
        loom_graph_destroy(g);
        return st;
    }
    *out = g;
    return LOOM_OK;
}

size_t graph_sym_constant_bytes(const loom_graph *g, size_t *count)
{
    size_t bytes = 0, n = 0;
    for (size_t v = 0; g && v < g->n_values; v++) {
        const graph_value *val = &g->values[v];
        if (val->kind != GRAPH_VALUE_CONSTANT || !val->data ||
            (!val->n_consumers && val->output_index < 0))
            continue;
        bytes += (size_t)loom_tensor_desc_numel(&val->desc) * loom_dtype_size(val->desc.dtype);
        n++;
    }
    if (count)
        *count = n;
    return bytes;
}
