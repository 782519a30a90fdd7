/*
 * ONNX control flow and sequences (issue 13, second item), which the importer unrolls and
 * resolves while it builds the graph (graph/onnx/onnx_control_flow.c, onnx_sequences.c). Every
 * model is built here in C with protobuf-c (the same onnx.proto the importer reads), run through
 * loom_model on the CPU, and compared with a naive reference loop written in this file: Loop as
 * a for loop with loop-carried values and scan outputs, Loop ended by its condition (alone, with
 * a trip count, never entered), a trip count fed as an input (bound by the model), nested
 * loops, Scan with axes and directions (opsets 11 and 16) and Scan-8's batch form, the sequence
 * operators, and a Loop carrying a sequence. Then the refusals: each malformed or unsupported
 * node must fail with the right status and a message naming the node and the reason.
 */
#include "test_support.h"

#include <loom/loom.h>
#include <loom/model.h>
#include <loom/onnx.h>

#include "onnx.pb-c.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { T_FLOAT = 1, T_INT32 = 6, T_INT64 = 7, T_BOOL = 9 };

/* ---- building models with protobuf-c --------------------------------------------------------
 * Everything a model is made of comes from one arena, freed after each model is packed. */

static void **arena;
static size_t n_arena, cap_arena;

static void *amalloc(size_t n)
{
    if (n_arena == cap_arena) {
        cap_arena = cap_arena ? cap_arena * 2 : 256;
        arena = realloc(arena, cap_arena * sizeof *arena);
        if (!arena)
            abort();
    }
    void *p = calloc(1, n ? n : 1);
    if (!p)
        abort();
    arena[n_arena++] = p;
    return p;
}

static void arena_free(void)
{
    while (n_arena)
        free(arena[--n_arena]);
}

static char *astr(const char *s)
{
    char *c = amalloc(strlen(s) + 1);
    strcpy(c, s);
    return c;
}

/* "a,,b" -> {"a", "", "b"}; "" -> none. */
static char **names(const char *csv, size_t *n)
{
    *n = 0;
    if (!*csv)
        return NULL;
    size_t count = 1;
    for (const char *p = csv; *p; p++)
        count += *p == ',';
    char **v = amalloc(count * sizeof *v);
    const char *start = csv;
    for (size_t k = 0; k < count; k++) {
        const char *end = strchr(start, ',');
        size_t len = end ? (size_t)(end - start) : strlen(start);
        v[k] = amalloc(len + 1);
        memcpy(v[k], start, len);
        start = end ? end + 1 : start + len;
    }
    *n = count;
    return v;
}

static size_t count_null(void *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

#define NODES(...) ((Onnx__NodeProto *[]){__VA_ARGS__, NULL})
#define VIS(...) ((Onnx__ValueInfoProto *[]){__VA_ARGS__, NULL})
#define INITS(...) ((Onnx__TensorProto *[]){__VA_ARGS__, NULL})

/* A node; attributes follow, NULL-terminated. */
static Onnx__NodeProto *node(const char *op, const char *name, const char *ins, const char *outs,
                             ...)
{
    Onnx__NodeProto *n = amalloc(sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = astr(op);
    n->name = astr(name);
    n->input = names(ins, &n->n_input);
    n->output = names(outs, &n->n_output);
    va_list ap;
    va_start(ap, outs);
    Onnx__AttributeProto *a;
    Onnx__AttributeProto *list[16];
    while ((a = va_arg(ap, Onnx__AttributeProto *)) != NULL && n->n_attribute < 16)
        list[n->n_attribute++] = a;
    va_end(ap);
    n->attribute = amalloc((n->n_attribute + 1) * sizeof *n->attribute);
    memcpy(n->attribute, list, n->n_attribute * sizeof *list);
    return n;
}

static Onnx__AttributeProto *attr(const char *name, Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = amalloc(sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = astr(name);
    a->has_type = 1;
    a->type = type;
    return a;
}

static Onnx__AttributeProto *a_int(const char *name, int64_t v)
{
    Onnx__AttributeProto *a = attr(name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
    return a;
}

static Onnx__AttributeProto *a_ints(const char *name, size_t n, const int64_t *v)
{
    Onnx__AttributeProto *a = attr(name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = n;
    a->ints = amalloc(n * sizeof *v);
    memcpy(a->ints, v, n * sizeof *v);
    return a;
}

static Onnx__AttributeProto *a_graph(const char *name, Onnx__GraphProto *g)
{
    Onnx__AttributeProto *a = attr(name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    a->g = g;
    return a;
}

static size_t onnx_elem_size(int32_t type)
{
    return type == T_FLOAT || type == T_INT32 ? 4 : type == T_INT64 ? 8 : 1;
}

static Onnx__TensorProto *tensor(const char *name, int32_t type, size_t rank, const int64_t *dims,
                                 const void *data)
{
    Onnx__TensorProto *t = amalloc(sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = astr(name);
    t->has_data_type = 1;
    t->data_type = type;
    t->n_dims = rank;
    t->dims = amalloc((rank + 1) * sizeof *t->dims);
    size_t n = 1;
    for (size_t k = 0; k < rank; k++) {
        t->dims[k] = dims[k];
        n *= (size_t)dims[k];
    }
    t->has_raw_data = 1;
    t->raw_data.len = n * onnx_elem_size(type);
    t->raw_data.data = amalloc(t->raw_data.len);
    memcpy(t->raw_data.data, data, t->raw_data.len);
    return t;
}

static Onnx__TensorProto *scalar_i64(const char *name, int64_t v)
{
    return tensor(name, T_INT64, 0, NULL, &v);
}

static Onnx__TensorProto *scalar_f32(const char *name, float v)
{
    return tensor(name, T_FLOAT, 0, NULL, &v);
}

static Onnx__TensorProto *scalar_bool(const char *name, int v)
{
    uint8_t b = v != 0;
    return tensor(name, T_BOOL, 0, NULL, &b);
}

/* A Constant node giving T as OUT. */
static Onnx__NodeProto *constant(const char *out, Onnx__TensorProto *t)
{
    Onnx__AttributeProto *a = attr("value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    a->t = t;
    return node("Constant", out, "", out, a, NULL);
}

static Onnx__TypeProto *tensor_type(int32_t elem, int rank, const int64_t *dims)
{
    Onnx__TypeProto *tp = amalloc(sizeof *tp);
    onnx__type_proto__init(tp);
    Onnx__TypeProto__Tensor *tt = amalloc(sizeof *tt);
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = elem;
    if (rank >= 0) {
        Onnx__TensorShapeProto *sp = amalloc(sizeof *sp);
        onnx__tensor_shape_proto__init(sp);
        sp->n_dim = (size_t)rank;
        sp->dim = amalloc(((size_t)rank + 1) * sizeof *sp->dim);
        for (int k = 0; k < rank; k++) {
            sp->dim[k] = amalloc(sizeof *sp->dim[k]);
            onnx__tensor_shape_proto__dimension__init(sp->dim[k]);
            sp->dim[k]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            sp->dim[k]->dim_value = dims[k];
        }
        tt->shape = sp;
    }
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    return tp;
}

/* A value info: a tensor of ELEM with RANK dims (-1: no shape; ELEM 0: no type at all). */
static Onnx__ValueInfoProto *vi(const char *name, int32_t elem, int rank, const int64_t *dims)
{
    Onnx__ValueInfoProto *v = amalloc(sizeof *v);
    onnx__value_info_proto__init(v);
    v->name = astr(name);
    if (elem)
        v->type = tensor_type(elem, rank, dims);
    return v;
}

/* A value info: a sequence of ELEM tensors. */
static Onnx__ValueInfoProto *vi_seq(const char *name, int32_t elem)
{
    Onnx__ValueInfoProto *v = vi(name, 0, -1, NULL);
    Onnx__TypeProto *tp = amalloc(sizeof *tp);
    onnx__type_proto__init(tp);
    Onnx__TypeProto__Sequence *s = amalloc(sizeof *s);
    onnx__type_proto__sequence__init(s);
    s->elem_type = tensor_type(elem, -1, NULL);
    tp->value_case = ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE;
    tp->sequence_type = s;
    v->type = tp;
    return v;
}

/* A copy in the arena of the NULL-terminated array V (the lists are compound literals, which
 * die with the block that wrote them); its length in *N. */
static void *list_copy(void *const *v, size_t *n)
{
    *n = count_null(v);
    void **c = amalloc((*n + 1) * sizeof *c);
    if (*n && v)
        memcpy(c, v, *n * sizeof *c);
    return c;
}

static Onnx__GraphProto *graph(const char *name, Onnx__NodeProto **nodes,
                               Onnx__ValueInfoProto **ins, Onnx__ValueInfoProto **outs,
                               Onnx__TensorProto **inits)
{
    Onnx__GraphProto *g = amalloc(sizeof *g);
    onnx__graph_proto__init(g);
    g->name = astr(name);
    g->node = list_copy((void *const *)nodes, &g->n_node);
    g->input = list_copy((void *const *)ins, &g->n_input);
    g->output = list_copy((void *const *)outs, &g->n_output);
    g->initializer = list_copy((void *const *)inits, &g->n_initializer);
    return g;
}

/* The model of G at OPSET, serialized (malloc'd, the caller frees); the arena is freed. */
static uint8_t *pack(Onnx__GraphProto *g, int64_t opset, size_t *size)
{
    Onnx__ModelProto m;
    onnx__model_proto__init(&m);
    Onnx__OperatorSetIdProto os;
    onnx__operator_set_id_proto__init(&os);
    os.domain = "";
    os.has_version = 1;
    os.version = opset;
    Onnx__OperatorSetIdProto *ops[1] = {&os};
    m.has_ir_version = 1;
    m.ir_version = 8;
    m.n_opset_import = 1;
    m.opset_import = ops;
    m.graph = g;
    *size = onnx__model_proto__get_packed_size(&m);
    uint8_t *buf = malloc(*size + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    onnx__model_proto__pack(&m, buf);
    arena_free();
    return buf;
}

/* G at OPSET as a loom_model (through a temporary file, which the model reads at once). */
static loom_model *model_of(Onnx__GraphProto *g, int64_t opset)
{
    size_t size;
    uint8_t *buf = pack(g, opset, &size);
    const char *tmp = getenv("TMPDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/loom_cf_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, buf, size) == (ssize_t)size);
    close(fd);
    free(buf);
    loom_model *m = NULL;
    loom_status st = loom_model_load_onnx(test_rt, path, NULL, &m);
    unlink(path);
    if (st != LOOM_OK)
        fprintf(stderr, "\n  load: %s\n", loom_last_error());
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    return m;
}

/* Importing G at OPSET must fail with WANT and a message holding each of WORDS. */
static void expect_refused(Onnx__GraphProto *g, int64_t opset, loom_status want,
                           const char *const *words)
{
    size_t size;
    uint8_t *buf = pack(g, opset, &size);
    loom_graph *out = NULL;
    loom_status st = loom_onnx_load_memory(buf, size, NULL, NULL, &out);
    free(buf);
    CU_ASSERT_PTR_NULL(out);
    loom_graph_destroy(out);
    CU_ASSERT_EQUAL(st, want);
    if (st != want)
        fprintf(stderr, "\n  status %s, want %s: %s\n", loom_status_name(st),
                loom_status_name(want), loom_last_error());
    for (size_t k = 0; words[k]; k++)
        if (!strstr(loom_last_error(), words[k])) {
            fprintf(stderr, "\n  '%s' not in: %s\n", words[k], loom_last_error());
            CU_FAIL("the message lacks a word");
        }
}

/* ---- tensors and checks ---------------------------------------------------------------------- */

static loom_tensor *f32_tensor(uint32_t rank, const int64_t *dims, const float *data)
{
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, rank, dims, &t), LOOM_OK);
    memcpy(loom_tensor_data(t), data, loom_tensor_nbytes(t));
    return t;
}

static loom_tensor *i64_scalar(int64_t v)
{
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_I64, 0, NULL, &t), LOOM_OK);
    *(int64_t *)loom_tensor_data(t) = v;
    return t;
}

static void random_floats(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rng_f32(-2.0f, 2.0f);
}

static void run(loom_model *m, loom_tensor **in, size_t n_in, loom_tensor **out, size_t n_out)
{
    loom_status st = loom_model_run(m, (const loom_tensor *const *)in, n_in, out, n_out, NULL);
    if (st != LOOM_OK)
        fprintf(stderr, "\n  run: %s\n", loom_last_error());
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
}

/* OUT is a float tensor of shape DIMS holding WANT (N values) within 1e-5 relative. */
static void expect_f32(const loom_tensor *out, uint32_t rank, const int64_t *dims,
                       const double *want, size_t n)
{
    CU_ASSERT_EQUAL_FATAL(loom_tensor_dtype(out), LOOM_DTYPE_F32);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_rank(out), rank);
    int64_t d[LOOM_MAX_RANK];
    loom_tensor_dims(out, d);
    for (uint32_t k = 0; k < rank; k++) {
        if (d[k] != dims[k])
            fprintf(stderr, "\n  dim %u: got %lld, want %lld\n", k, (long long)d[k],
                    (long long)dims[k]);
        CU_ASSERT_EQUAL_FATAL(d[k], dims[k]);
    }
    CU_ASSERT_EQUAL_FATAL(loom_tensor_nbytes(out), n * sizeof(float));
    const float *y = loom_tensor_data(out);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)y[i] - want[i]) <= 1e-5 * fmax(fabs(want[i]), 1.0)) && bad++ < 3)
            fprintf(stderr, "\n  element %zu: got %.8g, want %.8g\n", i, (double)y[i], want[i]);
    CU_ASSERT_EQUAL(bad, 0);
}

static void expect_i64(const loom_tensor *out, int64_t want)
{
    CU_ASSERT_EQUAL_FATAL(loom_tensor_dtype(out), LOOM_DTYPE_I64);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_nbytes(out), sizeof(int64_t));
    CU_ASSERT_EQUAL(*(const int64_t *)loom_tensor_data(out), want);
}

static void free_all(loom_tensor **t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        loom_tensor_destroy(t[i]);
        t[i] = NULL;
    }
}

/* ---- Loop as a for loop ---------------------------------------------------------------------- */

/* y, k carried; x and half read from the outer graph; scan output y * k:
 *     for i < 5: y = 0.5 * y + x[i]; k = k + 1; scan[i] = y * k */
static void test_loop_for_with_carried_values_and_scan_output(void)
{
    static const int64_t dx[2] = {5, 3}, d3[1] = {3}, d1[1] = {1};
    float one = 1.0f, zero = 0.0f;
    Onnx__GraphProto *body = graph(
        "body",
        NODES(node("Gather", "xi", "x,i", "xi", a_int("axis", 0), NULL),
              node("Mul", "yh", "y_in,half", "yh", NULL),
              node("Add", "y_out", "yh,xi", "y_out", NULL),
              node("Add", "k_out", "k_in,one", "k_out", NULL),
              node("Identity", "c_out", "c_in", "c_out", NULL),
              node("Mul", "sc", "y_out,k_out", "sc", NULL)),
        VIS(vi("i", T_INT64, 0, NULL), vi("c_in", T_BOOL, 0, NULL), vi("y_in", T_FLOAT, 1, d3),
            vi("k_in", T_FLOAT, 1, d1)),
        VIS(vi("c_out", T_BOOL, 0, NULL), vi("y_out", T_FLOAT, -1, NULL),
            vi("k_out", T_FLOAT, -1, NULL), vi("sc", T_FLOAT, -1, NULL)),
        NULL);
    Onnx__GraphProto *g = graph(
        "loop_for",
        NODES(node("Loop", "loop1", "M,,y0,k0", "y_final,k_final,scan", a_graph("body", body),
                   NULL)),
        VIS(vi("x", T_FLOAT, 2, dx), vi("y0", T_FLOAT, 1, d3)),
        VIS(vi("y_final", T_FLOAT, -1, NULL), vi("k_final", T_FLOAT, -1, NULL),
            vi("scan", T_FLOAT, -1, NULL)),
        INITS(scalar_i64("M", 5), tensor("k0", T_FLOAT, 1, d1, &zero), scalar_f32("half", 0.5f),
              tensor("one", T_FLOAT, 1, d1, &one)));
    loom_model *m = model_of(g, 16);
    float x[15], y0[3];
    random_floats(x, 15);
    random_floats(y0, 3);
    loom_tensor *in[2] = {f32_tensor(2, dx, x), f32_tensor(1, d3, y0)}, *out[3] = {0};
    run(m, in, 2, out, 3);
    double y[3] = {y0[0], y0[1], y0[2]}, k = 0, scan[15];
    for (int i = 0; i < 5; i++) {
        k += 1;
        for (int j = 0; j < 3; j++) {
            y[j] = 0.5 * y[j] + x[i * 3 + j];
            scan[i * 3 + j] = y[j] * k;
        }
    }
    static const int64_t ds[2] = {5, 3};
    expect_f32(out[0], 1, d3, y, 3);
    expect_f32(out[1], 1, d1, &k, 1);
    expect_f32(out[2], 2, ds, scan, 15);
    free_all(in, 2);
    free_all(out, 3);
    loom_model_destroy(m);
}

/* ---- Loop ended by its condition ------------------------------------------------------------- */

/* Loop(M?, c0, y0): y = 2y + 1 each iteration, scan output y, the body's condition i < LIM.
 * HAS_M: a trip count M; DECLARE: the body declares its scan output's shape [2]. */
static Onnx__GraphProto *while_model(int has_m, int64_t m, int c0, int64_t lim, int declare)
{
    static const int64_t d2[1] = {2};
    Onnx__GraphProto *body = graph(
        "body",
        NODES(node("Mul", "twice", "y_in,two", "twice", NULL),
              node("Add", "y_out", "twice,one", "y_out", NULL),
              node("Identity", "y_scan", "y_out", "y_scan", NULL),
              node("Less", "c_out", "i,lim", "c_out", NULL)),
        VIS(vi("i", T_INT64, 0, NULL), vi("c_in", T_BOOL, 0, NULL), vi("y_in", T_FLOAT, 1, d2)),
        VIS(vi("c_out", T_BOOL, 0, NULL), vi("y_out", T_FLOAT, 1, d2),
            declare ? vi("y_scan", T_FLOAT, 1, d2) : vi("y_scan", 0, -1, NULL)),
        NULL);
    return graph("loop_while",
                 NODES(node("Loop", "loop_w", has_m ? "M,c0,y0" : ",c0,y0", "y_final,ys",
                            a_graph("body", body), NULL)),
                 VIS(vi("y0", T_FLOAT, 1, d2)),
                 VIS(vi("y_final", T_FLOAT, -1, NULL), vi("ys", T_FLOAT, -1, NULL)),
                 INITS(scalar_i64("M", m), scalar_bool("c0", c0), scalar_i64("lim", lim),
                       scalar_f32("two", 2.0f), scalar_f32("one", 1.0f)));
}

static void check_while(int has_m, int64_t m, int c0, int64_t lim, int declare)
{
    static const int64_t d2[1] = {2};
    loom_model *model = model_of(while_model(has_m, m, c0, lim, declare), 13);
    float y0[2];
    random_floats(y0, 2);
    loom_tensor *in[1] = {f32_tensor(1, d2, y0)}, *out[2] = {0};
    run(model, in, 1, out, 2);
    /* ONNX's Loop: for (i = 0; (no M or i < M) && cond; i++) cond = body(...). */
    double y[2] = {y0[0], y0[1]}, scan[64];
    int64_t n = 0;
    int cond = c0;
    for (int64_t i = 0; (!has_m || i < m) && cond && n < 32; i++) {
        for (int j = 0; j < 2; j++) {
            y[j] = 2 * y[j] + 1;
            scan[n * 2 + j] = y[j];
        }
        n++;
        cond = i < lim;
    }
    int64_t ds[2] = {n, 2};
    expect_f32(out[0], 1, d2, y, 2);
    expect_f32(out[1], 2, ds, scan, (size_t)n * 2);
    free_all(in, 1);
    free_all(out, 2);
    loom_model_destroy(model);
}

static void test_loop_condition_ends_it(void)
{
    check_while(0, 0, 1, 3, 1);  /* a while loop: 4 iterations */
    check_while(1, 10, 1, 5, 1); /* the condition ends it before M: 7 iterations */
    check_while(1, 2, 1, 5, 1);  /* M ends it: 2 iterations */
    check_while(1, 5, 0, 5, 1);  /* never entered: an empty scan output of the declared shape */
    check_while(0, 0, 0, 5, 0);  /* ... and of the shape one iteration would give */
    check_while(1, 0, 1, 5, 1);  /* M = 0 */
}

/* ---- a trip count fed as an input ------------------------------------------------------------ */

static Onnx__GraphProto *for_input_model(void)
{
    static const int64_t d2[1] = {2};
    Onnx__GraphProto *body = graph(
        "body",
        NODES(constant("two", scalar_f32("two", 2.0f)),
              node("Mul", "twice", "y_in,two", "twice", NULL),
              node("Add", "y_out", "twice,one", "y_out", NULL),
              node("Identity", "y_scan", "y_out", "y_scan", NULL),
              node("Identity", "c_out", "c_in", "c_out", NULL)),
        VIS(vi("i", T_INT64, 0, NULL), vi("c_in", T_BOOL, 0, NULL), vi("y_in", T_FLOAT, 1, d2)),
        VIS(vi("c_out", T_BOOL, 0, NULL), vi("y_out", T_FLOAT, 1, d2), vi("y_scan", T_FLOAT, 1, d2)),
        NULL);
    return graph("loop_for_input",
                 NODES(node("Loop", "loop_m", "M,,y0", "y_final,ys", a_graph("body", body), NULL)),
                 VIS(vi("M", T_INT64, 0, NULL), vi("y0", T_FLOAT, 1, d2)),
                 VIS(vi("y_final", T_FLOAT, -1, NULL), vi("ys", T_FLOAT, -1, NULL)),
                 INITS(scalar_f32("one", 1.0f)));
}

static void test_loop_trip_count_from_an_input_is_bound_by_the_model(void)
{
    static const int64_t d2[1] = {2};
    /* A plain import cannot unroll it, and says why. */
    static const char *const words[] = {"'loop_m'", "(Loop)", "trip count ('M')", "run time",
                                        NULL};
    expect_refused(for_input_model(), 13, LOOM_ERR_UNSUPPORTED, words);
    /* loom_model learns that M is needed as a value and specialises per value. */
    loom_model *model = model_of(for_input_model(), 13);
    static const int64_t trips[] = {3, 6, 0, 3};
    for (size_t t = 0; t < sizeof trips / sizeof trips[0]; t++) {
        float y0[2];
        random_floats(y0, 2);
        loom_tensor *in[2] = {i64_scalar(trips[t]), f32_tensor(1, d2, y0)}, *out[2] = {0};
        run(model, in, 2, out, 2);
        double y[2] = {y0[0], y0[1]}, scan[16];
        for (int64_t i = 0; i < trips[t]; i++)
            for (int j = 0; j < 2; j++)
                scan[i * 2 + j] = y[j] = 2 * y[j] + 1;
        int64_t ds[2] = {trips[t], 2};
        expect_f32(out[0], 1, d2, y, 2);
        expect_f32(out[1], 2, ds, scan, (size_t)trips[t] * 2);
        free_all(in, 2);
        free_all(out, 2);
    }
    loom_model_io io = {.struct_size = sizeof io};
    CU_ASSERT_EQUAL(loom_model_input_info(model, 0, &io), LOOM_OK);
    CU_ASSERT_EQUAL(io.needs_value, 1);
    loom_model_destroy(model);
}

/* ---- nested loops ---------------------------------------------------------------------------- */

/* for i < 4: for j < i + 1: acc += (float)j * x  (the inner trip count from the outer iteration
 * number). */
static void test_nested_loops_with_inner_trip_count_from_the_outer_iteration(void)
{
    static const int64_t d2[1] = {2};
    Onnx__GraphProto *inner = graph(
        "inner",
        NODES(node("Cast", "jf", "j", "jf", a_int("to", T_FLOAT), NULL),
              node("Mul", "jx", "jf,x", "jx", NULL),
              node("Add", "a_out", "a_in,jx", "a_out", NULL),
              node("Identity", "ic_out", "ic_in", "ic_out", NULL)),
        VIS(vi("j", T_INT64, 0, NULL), vi("ic_in", T_BOOL, 0, NULL), vi("a_in", T_FLOAT, -1, NULL)),
        VIS(vi("ic_out", T_BOOL, 0, NULL), vi("a_out", T_FLOAT, -1, NULL)), NULL);
    Onnx__GraphProto *outer = graph(
        "outer",
        NODES(node("Add", "mi", "i,one_i", "mi", NULL),
              node("Loop", "inner_loop", "mi,,acc_in", "acc_out", a_graph("body", inner), NULL),
              node("Identity", "oc_out", "oc_in", "oc_out", NULL)),
        VIS(vi("i", T_INT64, 0, NULL), vi("oc_in", T_BOOL, 0, NULL),
            vi("acc_in", T_FLOAT, -1, NULL)),
        VIS(vi("oc_out", T_BOOL, 0, NULL), vi("acc_out", T_FLOAT, -1, NULL)), NULL);
    float zero2[2] = {0, 0};
    Onnx__GraphProto *g = graph(
        "nested",
        NODES(node("Loop", "outer_loop", "M,,acc0", "acc", a_graph("body", outer), NULL)),
        VIS(vi("x", T_FLOAT, 1, d2)), VIS(vi("acc", T_FLOAT, -1, NULL)),
        INITS(scalar_i64("M", 4), scalar_i64("one_i", 1), tensor("acc0", T_FLOAT, 1, d2, zero2)));
    loom_model *m = model_of(g, 13);
    float x[2];
    random_floats(x, 2);
    loom_tensor *in[1] = {f32_tensor(1, d2, x)}, *out[1] = {0};
    run(m, in, 1, out, 1);
    double acc[2] = {0, 0};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < i + 1; j++)
            for (int k = 0; k < 2; k++)
                acc[k] += (double)j * x[k];
    expect_f32(out[0], 1, d2, acc, 2);
    free_all(in, 1);
    free_all(out, 1);
    loom_model_destroy(m);
}

/* ---- Scan ------------------------------------------------------------------------------------ */

/* Scan(s0 [2], A [4, 2] along axis 0 forward, B [2, 4] along axis -1 reversed):
 *     s += a_t * b_t; o1 = s (stacked on axis 0); o2 = a_t - b_t (stacked on axis -1, reversed) */
static void check_scan(int64_t opset)
{
    static const int64_t d2[1] = {2}, da[2] = {4, 2}, db[2] = {2, 4};
    static const int64_t in_axes[2] = {0, -1}, in_dirs[2] = {0, 1}, out_axes[2] = {0, -1},
                         out_dirs[2] = {0, 1};
    Onnx__GraphProto *body = graph(
        "scan_body",
        NODES(node("Mul", "ab", "a_t,b_t", "ab", NULL),
              node("Add", "s_out", "s_in,ab", "s_out", NULL),
              node("Identity", "o1", "s_out", "o1", NULL),
              node("Sub", "o2", "a_t,b_t", "o2", NULL)),
        VIS(vi("s_in", T_FLOAT, 1, d2), vi("a_t", T_FLOAT, 1, d2), vi("b_t", T_FLOAT, 1, d2)),
        VIS(vi("s_out", T_FLOAT, 1, d2), vi("o1", T_FLOAT, 1, d2), vi("o2", T_FLOAT, 1, d2)),
        NULL);
    Onnx__GraphProto *g = graph(
        "scan",
        NODES(node("Scan", "scan1", "s0,A,B", "s_final,O1,O2", a_graph("body", body),
                   a_int("num_scan_inputs", 2), a_ints("scan_input_axes", 2, in_axes),
                   a_ints("scan_input_directions", 2, in_dirs),
                   a_ints("scan_output_axes", 2, out_axes),
                   a_ints("scan_output_directions", 2, out_dirs), NULL)),
        VIS(vi("s0", T_FLOAT, 1, d2), vi("A", T_FLOAT, 2, da), vi("B", T_FLOAT, 2, db)),
        VIS(vi("s_final", T_FLOAT, -1, NULL), vi("O1", T_FLOAT, -1, NULL),
            vi("O2", T_FLOAT, -1, NULL)),
        NULL);
    loom_model *m = model_of(g, opset);
    float s0[2], a[8], b[8];
    random_floats(s0, 2);
    random_floats(a, 8);
    random_floats(b, 8);
    loom_tensor *in[3] = {f32_tensor(1, d2, s0), f32_tensor(2, da, a), f32_tensor(2, db, b)};
    loom_tensor *out[3] = {0};
    run(m, in, 3, out, 3);
    double s[2] = {s0[0], s0[1]}, o1[8], o2[8];
    for (int t = 0; t < 4; t++) {
        int tb = 3 - t; /* B scanned in reverse along its last axis */
        for (int k = 0; k < 2; k++) {
            double at = a[t * 2 + k], bt = b[k * 4 + tb];
            s[k] += at * bt;
            o1[t * 2 + k] = s[k];
            o2[k * 4 + (3 - t)] = at - bt; /* stacked on the last axis, reversed */
        }
    }
    expect_f32(out[0], 1, d2, s, 2);
    expect_f32(out[1], 2, da, o1, 8);
    expect_f32(out[2], 2, db, o2, 8);
    free_all(in, 3);
    free_all(out, 3);
    loom_model_destroy(m);
}

static void test_scan_axes_and_directions(void)
{
    check_scan(11);
    check_scan(16);
}

/* Scan-8: sequence_lens (absent, or all full), a batch of 2, X [2, 3, 2] scanned in reverse:
 *     per batch b: s += X[b, 2 - t]; O[b, t] = s */
static void check_scan8(int with_lens)
{
    static const int64_t ds[2] = {2, 2}, dx[3] = {2, 3, 2}, d2[1] = {2}, dl[1] = {2};
    static const int64_t dirs[1] = {1}, lens[2] = {3, 3};
    Onnx__GraphProto *body = graph(
        "scan8_body",
        NODES(node("Add", "s_out", "s_in,x_t", "s_out", NULL),
              node("Identity", "o", "s_out", "o", NULL)),
        VIS(vi("s_in", T_FLOAT, 1, d2), vi("x_t", T_FLOAT, 1, d2)),
        VIS(vi("s_out", T_FLOAT, 1, d2), vi("o", T_FLOAT, 1, d2)), NULL);
    Onnx__GraphProto *g = graph(
        "scan8",
        NODES(node("Scan", "scan8", with_lens ? "lens,s0,X" : ",s0,X", "S,O",
                   a_graph("body", body), a_int("num_scan_inputs", 1),
                   a_ints("directions", 1, dirs), NULL)),
        VIS(vi("s0", T_FLOAT, 2, ds), vi("X", T_FLOAT, 3, dx)),
        VIS(vi("S", T_FLOAT, -1, NULL), vi("O", T_FLOAT, -1, NULL)),
        INITS(tensor("lens", T_INT64, 1, dl, lens)));
    loom_model *m = model_of(g, 8);
    float s0[4], x[12];
    random_floats(s0, 4);
    random_floats(x, 12);
    loom_tensor *in[2] = {f32_tensor(2, ds, s0), f32_tensor(3, dx, x)}, *out[2] = {0};
    run(m, in, 2, out, 2);
    double s[4], o[12];
    for (int b = 0; b < 2; b++) {
        for (int k = 0; k < 2; k++)
            s[b * 2 + k] = s0[b * 2 + k];
        for (int t = 0; t < 3; t++)
            for (int k = 0; k < 2; k++) {
                s[b * 2 + k] += x[b * 6 + (2 - t) * 2 + k];
                o[b * 6 + t * 2 + k] = s[b * 2 + k];
            }
    }
    expect_f32(out[0], 2, ds, s, 4);
    expect_f32(out[1], 3, dx, o, 12);
    free_all(in, 2);
    free_all(out, 2);
    loom_model_destroy(m);
}

static void test_scan8_batch_form(void)
{
    check_scan8(0);
    check_scan8(1);
}

/* ---- sequences ------------------------------------------------------------------------------- */

static void test_sequence_operators(void)
{
    static const int64_t dx[2] = {5, 2}, dy[2] = {3, 2}, d2[1] = {2}, d2s[1] = {2};
    static const int64_t split14[2] = {1, 4};
    Onnx__GraphProto *g = graph(
        "sequences",
        NODES(node("SplitToSequence", "split2", "X,two", "s1", a_int("axis", 0), NULL),
              node("SequenceLength", "len", "s1", "n", NULL),
              node("SequenceErase", "erase", "s1,m2", "s2", NULL),
              node("SequenceInsert", "insert", "s2,Y,p1", "s3", NULL),
              node("ConcatFromSequence", "cat", "s3", "cat", a_int("axis", 0), NULL),
              node("SequenceAt", "at", "s3,m1", "last", NULL),
              node("SplitToSequence", "columns", "X", "s4", a_int("axis", 1),
                   a_int("keepdims", 0), NULL),
              node("ConcatFromSequence", "restack", "s4", "restacked", a_int("axis", -1),
                   a_int("new_axis", 1), NULL),
              node("SequenceConstruct", "construct", "Z1,Z2", "s5", NULL),
              node("ConcatFromSequence", "pair", "s5", "pair", a_int("axis", 0),
                   a_int("new_axis", 1), NULL),
              node("SplitToSequence", "split14", "X,sizes", "s6", NULL),
              node("SequenceAt", "at1", "s6,p1", "tail", NULL),
              node("SequenceErase", "erase_last", "s6", "s7", NULL),
              node("SequenceLength", "len7", "s7", "n7", NULL)),
        VIS(vi("X", T_FLOAT, 2, dx), vi("Y", T_FLOAT, 2, dy), vi("Z1", T_FLOAT, 1, d2),
            vi("Z2", T_FLOAT, 1, d2)),
        VIS(vi("n", T_INT64, 0, NULL), vi("cat", T_FLOAT, -1, NULL), vi("last", T_FLOAT, -1, NULL),
            vi("restacked", T_FLOAT, -1, NULL), vi("pair", T_FLOAT, -1, NULL),
            vi("tail", T_FLOAT, -1, NULL), vi("n7", T_INT64, 0, NULL)),
        INITS(scalar_i64("two", 2), scalar_i64("m2", -2), scalar_i64("p1", 1),
              scalar_i64("m1", -1), tensor("sizes", T_INT64, 1, d2s, split14)));
    loom_model *m = model_of(g, 13);
    float x[10], y[6], z1[2], z2[2];
    random_floats(x, 10);
    random_floats(y, 6);
    random_floats(z1, 2);
    random_floats(z2, 2);
    loom_tensor *in[4] = {f32_tensor(2, dx, x), f32_tensor(2, dy, y), f32_tensor(1, d2, z1),
                          f32_tensor(1, d2, z2)};
    loom_tensor *out[7] = {0};
    run(m, in, 4, out, 7);
    /* s1 = [X[0:2], X[2:4], X[4:5]]; s2 = [X[0:2], X[4:5]]; s3 = [X[0:2], Y, X[4:5]]. */
    expect_i64(out[0], 3);
    double cat[12], last[2], restacked[10], pair[4], tail[8];
    for (int i = 0; i < 4; i++)
        cat[i] = x[i];
    for (int i = 0; i < 6; i++)
        cat[4 + i] = y[i];
    cat[10] = x[8];
    cat[11] = x[9];
    last[0] = x[8];
    last[1] = x[9];
    for (int i = 0; i < 10; i++)
        restacked[i] = x[i];
    pair[0] = z1[0];
    pair[1] = z1[1];
    pair[2] = z2[0];
    pair[3] = z2[1];
    for (int i = 0; i < 8; i++)
        tail[i] = x[2 + i];
    static const int64_t dcat[2] = {6, 2}, dlast[2] = {1, 2}, dpair[2] = {2, 2},
                         dtail[2] = {4, 2};
    expect_f32(out[1], 2, dcat, cat, 12);
    expect_f32(out[2], 2, dlast, last, 2);
    expect_f32(out[3], 2, dx, restacked, 10);
    expect_f32(out[4], 2, dpair, pair, 4);
    expect_f32(out[5], 2, dtail, tail, 8);
    expect_i64(out[6], 1);
    free_all(in, 4);
    free_all(out, 7);
    loom_model_destroy(m);
}

/* SequenceEmpty, then a Loop inserting x * i for i < 3, then ConcatFromSequence (new axis). */
static void test_loop_carrying_a_sequence(void)
{
    static const int64_t d2[1] = {2};
    Onnx__GraphProto *body = graph(
        "seq_body",
        NODES(node("Cast", "fi", "i", "fi", a_int("to", T_FLOAT), NULL),
              node("Mul", "e", "x,fi", "e", NULL),
              node("SequenceInsert", "push", "s_in,e", "s_out", NULL),
              node("Identity", "c_out", "c_in", "c_out", NULL)),
        VIS(vi("i", T_INT64, 0, NULL), vi("c_in", T_BOOL, 0, NULL), vi_seq("s_in", T_FLOAT)),
        VIS(vi("c_out", T_BOOL, 0, NULL), vi_seq("s_out", T_FLOAT)), NULL);
    Onnx__GraphProto *g = graph(
        "loop_seq",
        NODES(node("SequenceEmpty", "empty", "", "s0", a_int("dtype", T_FLOAT), NULL),
              node("Loop", "fill", "M,,s0", "s_final", a_graph("body", body), NULL),
              node("ConcatFromSequence", "stack", "s_final", "stacked", a_int("axis", 0),
                   a_int("new_axis", 1), NULL),
              node("SequenceLength", "len", "s_final", "n", NULL)),
        VIS(vi("x", T_FLOAT, 1, d2)),
        VIS(vi("stacked", T_FLOAT, -1, NULL), vi("n", T_INT64, 0, NULL)),
        INITS(scalar_i64("M", 3)));
    loom_model *m = model_of(g, 13);
    float x[2];
    random_floats(x, 2);
    loom_tensor *in[1] = {f32_tensor(1, d2, x)}, *out[2] = {0};
    run(m, in, 1, out, 2);
    double want[6];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++)
            want[i * 2 + k] = (double)x[k] * i;
    static const int64_t ds[2] = {3, 2};
    expect_f32(out[0], 2, ds, want, 6);
    expect_i64(out[1], 3);
    free_all(in, 1);
    free_all(out, 2);
    loom_model_destroy(m);
}

/* If with a constant condition choosing between sequences, Identity of a sequence, then
 * SequenceAt; and a Scan over an empty axis, whose outputs take the shape one iteration on zeros
 * gives (the body declares none). */
static void test_sequences_through_if_and_identity_and_an_empty_scan(void)
{
    static const int64_t d2[1] = {2}, d02[2] = {0, 2};
    Onnx__GraphProto *then_g = graph("then", NODES(node("SequenceConstruct", "t", "a,b", "ts",
                                                        NULL)),
                                     NULL, VIS(vi_seq("ts", T_FLOAT)), NULL);
    Onnx__GraphProto *else_g = graph("else", NODES(node("SequenceConstruct", "e", "b,a", "es",
                                                        NULL)),
                                     NULL, VIS(vi_seq("es", T_FLOAT)), NULL);
    Onnx__AttributeProto *ta = attr("then_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    ta->g = then_g;
    Onnx__AttributeProto *ea = attr("else_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    ea->g = else_g;
    Onnx__GraphProto *body = graph(
        "empty_body", NODES(node("Add", "s_out", "s_in,x_t", "s_out", NULL),
                            node("Mul", "o", "x_t,x_t", "o", NULL)),
        VIS(vi("s_in", T_FLOAT, -1, NULL), vi("x_t", T_FLOAT, -1, NULL)),
        VIS(vi("s_out", 0, -1, NULL), vi("o", 0, -1, NULL)), NULL);
    Onnx__GraphProto *g = graph(
        "if_seq",
        NODES(node("If", "choose", "flag", "s", ta, ea, NULL),
              node("Identity", "same", "s", "s_copy", NULL),
              node("SequenceAt", "first", "s_copy,zero", "first", NULL),
              node("Scan", "empty_scan", "a,E", "s_final,O", a_graph("body", body),
                   a_int("num_scan_inputs", 1), NULL)),
        VIS(vi("a", T_FLOAT, 1, d2), vi("b", T_FLOAT, 1, d2), vi("E", T_FLOAT, 2, d02)),
        VIS(vi("first", T_FLOAT, -1, NULL), vi("s_final", T_FLOAT, -1, NULL),
            vi("O", T_FLOAT, -1, NULL)),
        INITS(scalar_bool("flag", 0), scalar_i64("zero", 0)));
    loom_model *m = model_of(g, 16);
    float a[2], b[2];
    random_floats(a, 2);
    random_floats(b, 2);
    loom_tensor *in[3] = {f32_tensor(1, d2, a), f32_tensor(1, d2, b), f32_tensor(2, d02, a)};
    loom_tensor *out[3] = {0};
    run(m, in, 3, out, 3);
    double want_first[2] = {b[0], b[1]}, want_state[2] = {a[0], a[1]};
    expect_f32(out[0], 1, d2, want_first, 2); /* the else branch: (b, a) */
    expect_f32(out[1], 1, d2, want_state, 2); /* no iteration: the initial state */
    expect_f32(out[2], 2, d02, NULL, 0);
    free_all(in, 3);
    free_all(out, 3);
    loom_model_destroy(m);

    /* A condition known only at run time cannot choose between sequences. */
    then_g = graph("then", NODES(node("SequenceConstruct", "t", "a,b", "ts", NULL)), NULL,
                   VIS(vi_seq("ts", T_FLOAT)), NULL);
    else_g = graph("else", NODES(node("SequenceConstruct", "e", "b,a", "es", NULL)), NULL,
                   VIS(vi_seq("es", T_FLOAT)), NULL);
    ta = attr("then_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    ta->g = then_g;
    ea = attr("else_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    ea->g = else_g;
    g = graph("if_seq",
              NODES(node("If", "choose_late", "flag", "s", ta, ea, NULL),
                    node("SequenceAt", "first", "s,zero", "first", NULL)),
              VIS(vi("a", T_FLOAT, 1, d2), vi("b", T_FLOAT, 1, d2), vi("flag", T_BOOL, 0, NULL)),
              VIS(vi("first", T_FLOAT, -1, NULL)), INITS(scalar_i64("zero", 0)));
    static const char *const words[] = {"'choose_late'", "(If)", "branches give sequences",
                                        NULL};
    expect_refused(g, 16, LOOM_ERR_UNSUPPORTED, words);
}

/* ---- refusals -------------------------------------------------------------------------------- */

/* A Loop node "bad_loop" over BODY with inputs INS and outputs OUTS; graph input x [2]. */
static Onnx__GraphProto *loop_graph(Onnx__GraphProto *body, const char *ins, const char *outs,
                                    int with_body, int64_t m)
{
    static const int64_t d2[1] = {2};
    Onnx__NodeProto *loop = with_body ? node("Loop", "bad_loop", ins, outs,
                                             a_graph("body", body), NULL)
                                      : node("Loop", "bad_loop", ins, outs, NULL);
    return graph("bad", NODES(loop), VIS(vi("x", T_FLOAT, 1, d2), vi("Mi", T_INT64, 0, NULL)),
                 VIS(vi("y", T_FLOAT, -1, NULL)),
                 INITS(scalar_i64("M", m), scalar_bool("c0", 1)));
}

/* body(i, c, y_in) -> (c, y_in + x): N_IN inputs, the condition from COND_FROM. */
static Onnx__GraphProto *simple_body(int n_in, const char *cond_from)
{
    Onnx__ValueInfoProto *ins[4] = {vi("i", T_INT64, 0, NULL), vi("c_in", T_BOOL, 0, NULL),
                                    vi("y_in", T_FLOAT, -1, NULL), NULL};
    if (n_in < 3)
        ins[n_in] = NULL;
    return graph("simple_body",
                 NODES(node("Add", "y_out", "y_in,x", "y_out", NULL),
                       node("Identity", "c_out", cond_from, "c_out", NULL)),
                 ins, VIS(vi("c_out", T_BOOL, 0, NULL), vi("y_out", T_FLOAT, -1, NULL)),
                 NULL);
}

static void test_malformed_and_unsupported_loops_are_refused_by_name(void)
{
    static const char *const no_body[] = {"'bad_loop'", "(Loop)", "'body'", NULL};
    expect_refused(loop_graph(NULL, "M,,x", "y", 0, 3), 13, LOOM_ERR_INVALID_ARGUMENT, no_body);

    static const char *const n_in[] = {"'bad_loop'", "body takes 2 inputs", "must take 3",
                                       NULL};
    expect_refused(loop_graph(simple_body(2, "c_in"), "M,,x", "y", 1, 3), 13,
                   LOOM_ERR_INVALID_ARGUMENT, n_in);

    static const char *const n_out[] = {"'bad_loop'", "has 2 outputs", "must have 1", NULL};
    expect_refused(loop_graph(simple_body(3, "c_in"), "M,,x", "y,z", 1, 3), 13,
                   LOOM_ERR_INVALID_ARGUMENT, n_out);

    static const char *const too_long[] = {"'bad_loop'", "1000000 iterations", "4096", NULL};
    expect_refused(loop_graph(simple_body(3, "c_in"), "M,,x", "y", 1, 1000000), 13,
                   LOOM_ERR_UNSUPPORTED, too_long);

    static const char *const run_time[] = {"'bad_loop'", "trip count ('Mi')", "run time", NULL};
    expect_refused(loop_graph(simple_body(3, "c_in"), "Mi,,x", "y", 1, 3), 13,
                   LOOM_ERR_UNSUPPORTED, run_time);

    static const char *const endless[] = {"'bad_loop'", "neither a trip count nor a condition",
                                          NULL};
    expect_refused(loop_graph(simple_body(3, "c_in"), ",,x", "y", 1, 3), 13,
                   LOOM_ERR_UNSUPPORTED, endless);

    /* A condition the body computes from run-time data. */
    static const int64_t d2[1] = {2};
    Onnx__GraphProto *body = graph(
        "cond_body",
        NODES(node("Add", "y_out", "y_in,x", "y_out", NULL),
              node("ReduceSum", "total", "y_out", "total", a_int("keepdims", 0), NULL),
              node("Less", "c_out", "total,limit", "c_out", NULL)),
        VIS(vi("i", T_INT64, 0, NULL), vi("c_in", T_BOOL, 0, NULL), vi("y_in", T_FLOAT, -1, NULL)),
        VIS(vi("c_out", T_BOOL, 0, NULL), vi("y_out", T_FLOAT, -1, NULL)), NULL);
    Onnx__GraphProto *g = graph(
        "bad", NODES(node("Loop", "data_loop", "M,c0,x", "y", a_graph("body", body), NULL)),
        VIS(vi("x", T_FLOAT, 1, d2)), VIS(vi("y", T_FLOAT, -1, NULL)),
        INITS(scalar_i64("M", 5), scalar_bool("c0", 1), scalar_f32("limit", 10.0f)));
    static const char *const data_cond[] = {"'data_loop'", "condition its body computes",
                                            "run time", NULL};
    expect_refused(g, 13, LOOM_ERR_UNSUPPORTED, data_cond);

    /* Nested loops whose copies together pass the limit. */
    Onnx__GraphProto *inner = simple_body(3, "c_in");
    Onnx__GraphProto *outer = graph(
        "outer",
        NODES(node("Loop", "inner_loop", "M,,y_in", "y_out", a_graph("body", inner), NULL),
              node("Identity", "c_out", "c_in", "c_out", NULL)),
        VIS(vi("i", T_INT64, 0, NULL), vi("c_in", T_BOOL, 0, NULL), vi("y_in", T_FLOAT, -1, NULL)),
        VIS(vi("c_out", T_BOOL, 0, NULL), vi("y_out", T_FLOAT, -1, NULL)), NULL);
    static const char *const nested[] = {"4096", "Loop", NULL};
    expect_refused(loop_graph(outer, "M,,x", "y", 1, 1000), 13, LOOM_ERR_UNSUPPORTED, nested);

    /* Loops nested past the importer's depth. */
    Onnx__GraphProto *deep = simple_body(3, "c_in");
    for (int level = 0; level < 20; level++)
        deep = graph("level",
                     NODES(node("Loop", "deep_loop", "M,,y_in", "y_out", a_graph("body", deep),
                                NULL),
                           node("Identity", "c_out", "c_in", "c_out", NULL)),
                     VIS(vi("i", T_INT64, 0, NULL), vi("c_in", T_BOOL, 0, NULL),
                         vi("y_in", T_FLOAT, -1, NULL)),
                     VIS(vi("c_out", T_BOOL, 0, NULL), vi("y_out", T_FLOAT, -1, NULL)), NULL);
    static const char *const too_deep[] = {"nested deeper", NULL};
    expect_refused(loop_graph(deep, "M,,x", "y", 1, 1), 13, LOOM_ERR_UNSUPPORTED, too_deep);
}

static void test_malformed_scans_and_sequences_are_refused_by_name(void)
{
    static const int64_t d2[1] = {2}, d32[2] = {3, 2}, d42[2] = {4, 2};
    Onnx__GraphProto *body = graph(
        "scan_body", NODES(node("Add", "s_out", "s_in,a_t", "s_out", NULL),
                           node("Add", "o", "a_t,b_t", "o", NULL)),
        VIS(vi("s_in", T_FLOAT, -1, NULL), vi("a_t", T_FLOAT, -1, NULL),
            vi("b_t", T_FLOAT, -1, NULL)),
        VIS(vi("s_out", T_FLOAT, -1, NULL), vi("o", T_FLOAT, -1, NULL)), NULL);
    Onnx__GraphProto *g = graph(
        "bad", NODES(node("Scan", "bad_scan", "s0,A,B", "s,o", a_graph("body", body),
                          a_int("num_scan_inputs", 2), NULL)),
        VIS(vi("s0", T_FLOAT, 1, d2), vi("A", T_FLOAT, 2, d32), vi("B", T_FLOAT, 2, d42)),
        VIS(vi("s", T_FLOAT, -1, NULL), vi("o", T_FLOAT, -1, NULL)), NULL);
    static const char *const lengths[] = {"'bad_scan'", "(Scan)", "different lengths", NULL};
    expect_refused(g, 11, LOOM_ERR_INVALID_ARGUMENT, lengths);

    body = graph("scan_body", NODES(node("Add", "s_out", "s_in,a_t", "s_out", NULL)),
                 VIS(vi("s_in", T_FLOAT, -1, NULL), vi("a_t", T_FLOAT, -1, NULL)),
                 VIS(vi("s_out", T_FLOAT, -1, NULL)), NULL);
    g = graph("bad", NODES(node("Scan", "bad_scan", "s0,A", "s,o", a_graph("body", body),
                                a_int("num_scan_inputs", 1), NULL)),
              VIS(vi("s0", T_FLOAT, 1, d2), vi("A", T_FLOAT, 2, d32)),
              VIS(vi("s", T_FLOAT, -1, NULL), vi("o", T_FLOAT, -1, NULL)), NULL);
    static const char *const outs[] = {"'bad_scan'", "has 2 outputs", "its body gives 1", NULL};
    expect_refused(g, 11, LOOM_ERR_INVALID_ARGUMENT, outs);

    body = graph("scan_body", NODES(node("Add", "s_out", "s_in,a_t", "s_out", NULL)),
                 VIS(vi("s_in", T_FLOAT, -1, NULL), vi("a_t", T_FLOAT, -1, NULL)),
                 VIS(vi("s_out", T_FLOAT, -1, NULL)), NULL);
    g = graph("bad", NODES(node("Scan", "bad_scan", "s0,A", "s", a_graph("body", body), NULL)),
              VIS(vi("s0", T_FLOAT, 1, d2), vi("A", T_FLOAT, 2, d32)),
              VIS(vi("s", T_FLOAT, -1, NULL)), NULL);
    static const char *const no_count[] = {"'bad_scan'", "num_scan_inputs", NULL};
    expect_refused(g, 11, LOOM_ERR_INVALID_ARGUMENT, no_count);

    /* Sequences: a position out of range, a sequence as a graph output or an Add's input. */
    g = graph("bad",
              NODES(node("SequenceConstruct", "make", "x,x", "s", NULL),
                    node("SequenceAt", "far", "s,five", "y", NULL)),
              VIS(vi("x", T_FLOAT, 1, d2)), VIS(vi("y", T_FLOAT, -1, NULL)),
              INITS(scalar_i64("five", 5)));
    static const char *const range[] = {"'far'", "(SequenceAt)", "position 5 is out of range",
                                        NULL};
    expect_refused(g, 13, LOOM_ERR_INVALID_ARGUMENT, range);

    g = graph("bad", NODES(node("SequenceConstruct", "make", "x,x", "s", NULL)),
              VIS(vi("x", T_FLOAT, 1, d2)), VIS(vi_seq("s", T_FLOAT)), NULL);
    static const char *const seq_out[] = {"graph output 's' is a sequence", NULL};
    expect_refused(g, 13, LOOM_ERR_UNSUPPORTED, seq_out);

    g = graph("bad",
              NODES(node("SequenceConstruct", "make", "x,x", "s", NULL),
                    node("Add", "add_seq", "s,x", "y", NULL)),
              VIS(vi("x", T_FLOAT, 1, d2)), VIS(vi("y", T_FLOAT, -1, NULL)), NULL);
    static const char *const seq_in[] = {"'add_seq'", "(Add)", "input 0 ('s') is a sequence",
                                         NULL};
    expect_refused(g, 13, LOOM_ERR_UNSUPPORTED, seq_in);

    g = graph("bad",
              NODES(node("SequenceEmpty", "empty", "", "s", NULL),
                    node("SequenceInsert", "mixed", "s,xi", "s2", NULL),
                    node("SequenceLength", "len", "s2", "n", NULL)),
              VIS(vi("xi", T_INT64, 1, d2)), VIS(vi("n", T_INT64, -1, NULL)), NULL);
    static const char *const dtype[] = {"'mixed'", "inserts a int64 tensor into a sequence of "
                                        "float", NULL};
    expect_refused(g, 13, LOOM_ERR_INVALID_ARGUMENT, dtype);
}

static int suite_init(void)
{
    rng_seed(1313);
    return test_rt_open_default();
}

static int suite_clean(void)
{
    arena_free();
    free(arena);
    arena = NULL;
    cap_arena = 0;
    return test_rt_close();
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        TEST_ENTRY(test_loop_for_with_carried_values_and_scan_output),
        TEST_ENTRY(test_loop_condition_ends_it),
        TEST_ENTRY(test_loop_trip_count_from_an_input_is_bound_by_the_model),
        TEST_ENTRY(test_nested_loops_with_inner_trip_count_from_the_outer_iteration),
        TEST_ENTRY(test_scan_axes_and_directions),
        TEST_ENTRY(test_scan8_batch_form),
        TEST_ENTRY(test_sequence_operators),
        TEST_ENTRY(test_loop_carrying_a_sequence),
        TEST_ENTRY(test_sequences_through_if_and_identity_and_an_empty_scan),
        TEST_ENTRY(test_malformed_and_unsupported_loops_are_refused_by_name),
        TEST_ENTRY(test_malformed_scans_and_sequences_are_refused_by_name),
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"onnx_control_flow", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
