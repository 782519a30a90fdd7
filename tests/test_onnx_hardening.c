/*
 * Hostile and invalid ONNX models (issue 17): each is written here, byte by byte, with a small
 * protobuf writer, so that no model generator is needed and the shapes of the attack are plain
 * to read: subgraphs nested thousands deep, external data that claims terabytes or escapes the
 * model's folder through symlinks, graphs that break single assignment or form a cycle, names
 * with terminal control characters, dimensions left unresolved. Every one must give one clear
 * error with the right status, never a crash, an escape or a silent acceptance.
 */
#include <loom/loom.h>
#include <loom/onnx.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a protobuf writer ---------------------------------------------------------------------- */

typedef struct buf {
    unsigned char *b;
    size_t n, cap;
} buf;

static void put(buf *o, const void *p, size_t n)
{
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->n + n)
            cap *= 2;
        unsigned char *q = realloc(o->b, cap);
        CU_ASSERT_PTR_NOT_NULL_FATAL(q);
        o->b = q;
        o->cap = cap;
    }
    if (n)
        memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void varint(buf *o, uint64_t v)
{
    unsigned char c[10];
    size_t n = 0;
    do {
        c[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            c[n] |= 0x80;
        n++;
    } while (v);
    put(o, c, n);
}

static void f_int(buf *o, unsigned field, uint64_t v)
{
    varint(o, (uint64_t)field << 3);
    varint(o, v);
}

static void f_bytes(buf *o, unsigned field, const void *p, size_t n)
{
    varint(o, (uint64_t)field << 3 | 2);
    varint(o, n);
    put(o, p, n);
}

static void f_str(buf *o, unsigned field, const char *s)
{
    f_bytes(o, field, s, strlen(s));
}

/* Append SUB as message field FIELD of O; SUB is consumed. */
static void f_msg(buf *o, unsigned field, buf sub)
{
    f_bytes(o, field, sub.b, sub.n);
    free(sub.b);
}

/* onnx.proto field numbers used below. */
enum {
    MODEL_IR_VERSION = 1, MODEL_GRAPH = 7, MODEL_OPSET = 8, OPSET_VERSION = 2,
    GRAPH_NODE = 1, GRAPH_NAME = 2, GRAPH_INIT = 5, GRAPH_INPUT = 11, GRAPH_OUTPUT = 12,
    NODE_INPUT = 1, NODE_OUTPUT = 2, NODE_NAME = 3, NODE_OP = 4, NODE_ATTR = 5,
    ATTR_NAME = 1, ATTR_I = 3, ATTR_G = 6, ATTR_INTS = 8, ATTR_TYPE = 20,
    ATTR_INT = 2, ATTR_GRAPH = 5, ATTR_INTS_TYPE = 7,
    VI_NAME = 1, VI_TYPE = 2, TYPE_TENSOR = 1, TYPE_SEQUENCE = 4, TENSOR_ELEM = 1,
    TENSOR_SHAPE = 2, SHAPE_DIM = 1, DIM_VALUE = 1, DIM_PARAM = 2, SEQ_ELEM = 1,
    TP_DIMS = 1, TP_DATA_TYPE = 2, TP_NAME = 8, TP_RAW = 9, TP_EXTERNAL = 13, TP_LOCATION = 14,
    KV_KEY = 1, KV_VALUE = 2,
    FLOAT = 1, ONNX_BOOL = 9 /* BOOL is test_support.h's loom dtype */
};

/* A tensor type; DIMS[k] >= 0 is a value, -1 a dimension without value or name, and PARAMS[k]
 * (when PARAMS is non-NULL and it is) a symbolic name. */
static buf tensor_type(int elem, int rank, const int64_t *dims, const char *const *params)
{
    buf shape = {0}, tt = {0}, type = {0};
    for (int k = 0; k < rank; k++) {
        buf d = {0};
        if (params && params[k])
            f_str(&d, DIM_PARAM, params[k]);
        else if (dims[k] >= 0)
            f_int(&d, DIM_VALUE, (uint64_t)dims[k]);
        f_msg(&shape, SHAPE_DIM, d);
    }
    f_int(&tt, TENSOR_ELEM, (uint64_t)elem);
    f_msg(&tt, TENSOR_SHAPE, shape);
    f_msg(&type, TYPE_TENSOR, tt);
    return type;
}

static buf value_info(const char *name, buf type)
{
    buf v = {0};
    f_str(&v, VI_NAME, name);
    f_msg(&v, VI_TYPE, type);
    return v;
}

/* A float [4] value. */
static buf vec4(const char *name)
{
    static const int64_t four[] = {4};
    return value_info(name, tensor_type(FLOAT, 1, four, NULL));
}

/* Append the comma-separated NAMES ("a,,b": an empty optional name in the middle) as FIELD. */
static void names(buf *o, unsigned field, const char *list)
{
    if (!list)
        return;
    for (const char *p = list;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        f_bytes(o, field, p, n);
        if (!e)
            break;
        p = e + 1;
    }
}

/* A node; ATTR (may have n == 0) is consumed. */
static buf node(const char *op, const char *name, const char *inputs, const char *outputs,
                buf attrs)
{
    buf n = {0};
    names(&n, NODE_INPUT, inputs);
    names(&n, NODE_OUTPUT, outputs);
    if (name)
        f_str(&n, NODE_NAME, name);
    f_str(&n, NODE_OP, op);
    put(&n, attrs.b, attrs.n);
    free(attrs.b);
    return n;
}

static buf no_attrs(void)
{
    return (buf){0};
}

/* One attribute (as a NodeProto field, ready to go into node()'s ATTRS). */
static buf attr_graph(const char *name, buf g)
{
    buf a = {0}, out = {0};
    f_str(&a, ATTR_NAME, name);
    f_int(&a, ATTR_TYPE, ATTR_GRAPH);
    f_msg(&a, ATTR_G, g);
    f_msg(&out, NODE_ATTR, a);
    return out;
}

static buf attr_int(const char *name, int64_t v)
{
    buf a = {0}, out = {0};
    f_str(&a, ATTR_NAME, name);
    f_int(&a, ATTR_TYPE, ATTR_INT);
    f_int(&a, ATTR_I, (uint64_t)v);
    f_msg(&out, NODE_ATTR, a);
    return out;
}

static buf model(buf graph, int opset)
{
    buf m = {0}, op = {0};
    f_int(&m, MODEL_IR_VERSION, 8);
    f_int(&op, OPSET_VERSION, (uint64_t)opset);
    f_msg(&m, MODEL_OPSET, op);
    f_msg(&m, MODEL_GRAPH, graph);
    return m;
}

/* ---- loading and checking ------------------------------------------------------------------- */

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

/* Load M (consumed) from memory with BASE_DIR; expect STATUS and each of the NULL-terminated
 * NEEDLES in the message. Returns the graph when STATUS is LOOM_OK (the caller destroys it). */
static loom_graph *expect(buf m, const char *base_dir, const loom_onnx_options *opt,
                          loom_status status, const char *const *needles)
{
    loom_graph *g = NULL;
    loom_status st = loom_onnx_load_memory(m.b, m.n, base_dir, opt, &g);
    free(m.b);
    const char *msg = loom_last_error();
    if (st != status)
        fprintf(stderr, "\n  got %s (%s), want %s\n", loom_status_name(st), msg,
                loom_status_name(status));
    CU_ASSERT_EQUAL(st, status);
    for (size_t i = 0; needles && needles[i]; i++) {
        CU_ASSERT(contains(msg, needles[i]));
        if (!contains(msg, needles[i]))
            fprintf(stderr, "\n  message '%s' lacks '%s'\n", msg, needles[i]);
    }
    if (st != LOOM_OK) {
        CU_ASSERT_PTR_NULL(g);
        return NULL;
    }
    return g;
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- item: nesting deep enough to overflow a recursive unpacker ---------------------------- */

/* N If (or Loop) nodes, each the only node of the previous one's branch (or body). */
static buf nested(const char *op, const char *attr, int levels)
{
    buf inner = {0};
    f_msg(&inner, GRAPH_OUTPUT, vec4("x"));
    for (int k = 0; k < levels; k++) {
        buf g = {0};
        f_msg(&g, GRAPH_NODE, node(op, NULL, strcmp(op, "If") ? ",c" : "c", "o",
                                   attr_graph(attr, inner)));
        f_msg(&g, GRAPH_OUTPUT, vec4("o"));
        inner = g;
    }
    static const int64_t one[] = {1};
    f_msg(&inner, GRAPH_INPUT, value_info("c", tensor_type(ONNX_BOOL, 1, one, NULL)));
    f_msg(&inner, GRAPH_INPUT, vec4("x"));
    return model(inner, 13);
}

static void test_thousands_of_nested_ifs_are_refused_before_unpacking(void)
{
    expect(nested("If", "then_branch", 3000), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("nested", "deep"));
    expect(nested("If", "then_branch", 5000), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("nested", "deep"));
}

static void test_thousands_of_nested_loops_are_refused_before_unpacking(void)
{
    expect(nested("Loop", "body", 3000), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("nested", "deep"));
}

static void test_deeply_nested_sequence_types_are_refused(void)
{
    static const int64_t four[] = {4};
    buf type = tensor_type(FLOAT, 1, four, NULL);
    for (int k = 0; k < 40000; k++) {
        buf seq = {0}, t = {0};
        f_msg(&seq, SEQ_ELEM, type);
        f_msg(&t, TYPE_SEQUENCE, seq);
        type = t;
    }
    buf g = {0};
    f_msg(&g, GRAPH_NODE, node("Identity", NULL, "x", "y", no_attrs()));
    f_msg(&g, GRAPH_INPUT, value_info("x", type));
    f_msg(&g, GRAPH_OUTPUT, vec4("y"));
    expect(model(g, 13), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT, NEEDLES("nested"));
}

/* Nesting of a depth real models have still reaches the importer (whose own limit on If
 * subgraphs then speaks), rather than being refused by the scan. */
static void test_moderate_nesting_passes_the_scan(void)
{
    loom_graph *g = NULL;
    buf m = nested("If", "then_branch", 20);
    loom_status st = loom_onnx_load_memory(m.b, m.n, NULL, NULL, &g);
    free(m.b);
    CU_ASSERT_NOT_EQUAL(st, LOOM_OK);
    CU_ASSERT(!contains(loom_last_error(), "protobuf messages deep"));
    loom_graph_destroy(g);
}

/* A corrupt length deep inside a nesting is refused by the scan as corrupt. */
static void test_corrupt_bytes_inside_deep_nesting_are_refused(void)
{
    buf m = nested("If", "then_branch", 30);
    for (size_t i = m.n / 2; i < m.n / 2 + 8 && i < m.n; i++)
        m.b[i] = 0xff;
    loom_graph *g = NULL;
    loom_status st = loom_onnx_load_memory(m.b, m.n, NULL, NULL, &g);
    free(m.b);
    CU_ASSERT_EQUAL(st, LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(g);
}

/* ---- item: external data -------------------------------------------------------------------- */

static char tmp_root[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static const char *tpath(const char *rel)
{
    static char bufs[4][512];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", tmp_root, rel);
    return b;
}

static void write_file(const char *rel, size_t n)
{
    FILE *f = fopen(tpath(rel), "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (size_t i = 0; i < n; i++) {
        float v = (float)(i + 1);
        /* whole floats while they fit, then single bytes */
        if (n - i >= 4 && i % 4 == 0) {
            fwrite(&v, 4, 1, f);
            i += 3;
        } else {
            fputc(0x41, f);
        }
    }
    fclose(f);
}

/* A model whose only output is the initializer 'w' of DIMS, stored in external file LOCATION. */
static buf external_model(const char *location, int rank, const int64_t *dims)
{
    buf t = {0}, loc = {0}, g = {0};
    for (int k = 0; k < rank; k++)
        f_int(&t, TP_DIMS, (uint64_t)dims[k]);
    f_int(&t, TP_DATA_TYPE, FLOAT);
    f_str(&t, TP_NAME, "w");
    f_str(&loc, KV_KEY, "location");
    f_str(&loc, KV_VALUE, location);
    f_msg(&t, TP_EXTERNAL, loc);
    f_int(&t, TP_LOCATION, 1);
    f_msg(&g, GRAPH_NODE, node("Identity", "id", "w", "y", no_attrs()));
    f_msg(&g, GRAPH_INIT, t);
    f_msg(&g, GRAPH_OUTPUT, value_info("y", tensor_type(FLOAT, rank, dims, NULL)));
    return model(g, 13);
}

static int external_init(void)
{
    snprintf(tmp_root, sizeof tmp_root, "%s/loom-onnx-hardening-XXXXXX",
             getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp_root))
        return 1;
    /* tmp_root/model: the model's folder; tmp_root/secret.bin and tmp_root/outside/: not. */
    if (mkdir(tpath("model"), 0700) || mkdir(tpath("outside"), 0700))
        return 1;
    return 0;
}

static int external_clean(void)
{
    if (tmp_root[0])
        nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static const int64_t four[] = {4};

static void test_external_data_beside_the_model_still_loads(void)
{
    write_file("model/w.bin", 16);
    loom_graph *g = expect(external_model("w.bin", 1, four), tpath("model"), NULL, LOOM_OK, NULL);
    loom_graph_destroy(g);
    /* A symlink that stays inside the folder is fine. */
    unlink(tpath("model/inside.bin"));
    CU_ASSERT_EQUAL(symlink("w.bin", tpath("model/inside.bin")), 0);
    g = expect(external_model("inside.bin", 1, four), tpath("model"), NULL, LOOM_OK, NULL);
    loom_graph_destroy(g);
}

static void test_external_data_claiming_terabytes_is_bad_input(void)
{
    write_file("model/small.bin", 16);
    static const int64_t huge[] = {1 << 20, 1 << 20}; /* 2^40 floats */
    expect(external_model("small.bin", 2, huge), tpath("model"), NULL,
           LOOM_ERR_INVALID_ARGUMENT, NEEDLES("small.bin", "too short"));
}

static void test_external_data_error_does_not_reveal_the_file_size(void)
{
    write_file("model/short.bin", 13);
    expect(external_model("short.bin", 1, four), tpath("model"), NULL,
           LOOM_ERR_INVALID_ARGUMENT, NEEDLES("short.bin", "too short"));
    CU_ASSERT(!contains(loom_last_error(), "13"));
}

static void test_external_data_symlink_out_of_the_folder_is_refused(void)
{
    write_file("secret.bin", 16);
    unlink(tpath("model/rel.bin"));
    unlink(tpath("model/abs.bin"));
    CU_ASSERT_EQUAL(symlink("../secret.bin", tpath("model/rel.bin")), 0);
    CU_ASSERT_EQUAL(symlink(tpath("secret.bin"), tpath("model/abs.bin")), 0);
    expect(external_model("rel.bin", 1, four), tpath("model"), NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("rel.bin", "outside the model's folder"));
    expect(external_model("abs.bin", 1, four), tpath("model"), NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("abs.bin", "outside the model's folder"));
    /* A directory symlink out of the folder is refused too. */
    write_file("outside/w.bin", 16);
    unlink(tpath("model/dir"));
    CU_ASSERT_EQUAL(symlink(tpath("outside"), tpath("model/dir")), 0);
    expect(external_model("dir/w.bin", 1, four), tpath("model"), NULL,
           LOOM_ERR_INVALID_ARGUMENT, NEEDLES("dir/w.bin", "outside the model's folder"));
}

static void test_external_data_that_is_a_fifo_is_refused_without_waiting(void)
{
    unlink(tpath("model/fifo.bin"));
    CU_ASSERT_EQUAL_FATAL(mkfifo(tpath("model/fifo.bin"), 0600), 0);
    expect(external_model("fifo.bin", 1, four), tpath("model"), NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("fifo.bin", "not a regular file"));
}

/* ---- item: invalid graphs ------------------------------------------------------------------- */

/* A graph with input x (float[4]), the given nodes, and outputs OUTS (comma-separated). */
static buf graph_of(buf nodes, const char *outs)
{
    buf g = {0};
    put(&g, nodes.b, nodes.n);
    free(nodes.b);
    f_msg(&g, GRAPH_INPUT, vec4("x"));
    for (const char *p = outs;;) {
        const char *e = strchr(p, ',');
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(e ? e - p : (long)strlen(p)), p);
        f_msg(&g, GRAPH_OUTPUT, vec4(name));
        if (!e)
            break;
        p = e + 1;
    }
    return model(g, 13);
}

static void add_node(buf *nodes, buf n)
{
    f_msg(nodes, GRAPH_NODE, n);
}

static void test_two_nodes_writing_one_name_are_refused(void)
{
    buf n = {0};
    add_node(&n, node("Relu", "first", "x", "y", no_attrs()));
    add_node(&n, node("Neg", "second", "x", "y", no_attrs()));
    expect(graph_of(n, "y"), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("'second'", "'first'", "'y'"));
}

static void test_split_with_the_same_output_twice_is_refused(void)
{
    buf n = {0};
    static const int64_t two[] = {2, 2};
    buf a = {0}, attrs = attr_int("axis", 0);
    f_str(&a, ATTR_NAME, "split");
    f_int(&a, ATTR_TYPE, ATTR_INTS_TYPE);
    for (int k = 0; k < 2; k++)
        f_int(&a, ATTR_INTS, (uint64_t)two[k]);
    f_msg(&attrs, NODE_ATTR, a);
    add_node(&n, node("Split", "sp", "x", "y,y", attrs));
    /* opset 11: split is an attribute */
    buf g = {0};
    put(&g, n.b, n.n);
    free(n.b);
    f_msg(&g, GRAPH_INPUT, vec4("x"));
    static const int64_t d2[] = {2};
    f_msg(&g, GRAPH_OUTPUT, value_info("y", tensor_type(FLOAT, 1, d2, NULL)));
    expect(model(g, 11), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("'sp'", "'y'", "twice"));
}

static void test_node_writing_its_own_input_is_refused(void)
{
    buf n = {0};
    add_node(&n, node("Relu", "self", "x", "a", no_attrs()));
    add_node(&n, node("Neg", "loop", "a,y", "y", no_attrs()));
    expect(graph_of(n, "y"), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT, NEEDLES("'loop'", "'y'"));
    n = (buf){0};
    add_node(&n, node("Relu", "over", "x", "x", no_attrs()));
    expect(graph_of(n, "x"), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT, NEEDLES("'over'", "'x'"));
}

static void test_node_writing_a_graph_input_is_refused(void)
{
    buf n = {0};
    add_node(&n, node("Relu", "a", "x", "t", no_attrs()));
    add_node(&n, node("Neg", "clobber", "t", "x", no_attrs()));
    add_node(&n, node("Abs", "b", "t", "y", no_attrs()));
    expect(graph_of(n, "y"), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("'clobber'", "'x'", "input"));
}

static void test_graph_output_listed_twice_is_refused(void)
{
    buf n = {0};
    add_node(&n, node("Relu", "r", "x", "y", no_attrs()));
    expect(graph_of(n, "y,y"), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("output 'y'", "twice"));
}

static void test_cycle_is_reported_as_a_cycle(void)
{
    buf n = {0};
    add_node(&n, node("Relu", "A", "b", "a", no_attrs()));
    add_node(&n, node("Neg", "B", "a", "b", no_attrs()));
    add_node(&n, node("Abs", "C", "a", "y", no_attrs()));
    expect(graph_of(n, "y"), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("cycle through nodes", "'A'", "'B'"));
    CU_ASSERT(!contains(loom_last_error(), "not defined"));
}

/* Nodes out of order but without a cycle: ONNX asks for topological order, ONNX Runtime sorts;
 * so does Loom. */
static void test_acyclic_nodes_out_of_order_are_sorted(void)
{
    buf n = {0};
    add_node(&n, node("Abs", "C", "b", "y", no_attrs()));
    add_node(&n, node("Neg", "B", "a", "b", no_attrs()));
    add_node(&n, node("Relu", "A", "x", "a", no_attrs()));
    loom_graph *g = expect(graph_of(n, "y"), NULL, NULL, LOOM_OK, NULL);
    if (g)
        CU_ASSERT_EQUAL(loom_graph_output_count(g), 1);
    loom_graph_destroy(g);
}

/* ---- item: control characters in messages --------------------------------------------------- */

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return 1;
    return 0;
}

static void test_control_characters_in_names_are_escaped(void)
{
    buf n = {0};
    add_node(&n, node("Bogus\x1b]0;owned\x07", "n\x1b[31m", "x", "y", no_attrs()));
    expect(graph_of(n, "y"), NULL, NULL, LOOM_ERR_UNSUPPORTED, NEEDLES("Bogus\\x1b]0;owned\\x07"));
    CU_ASSERT(!has_control(loom_last_error()));

    n = (buf){0};
    add_node(&n, node("Add", "evil\x1b[2J", "x,q\x1b[H", "y", no_attrs()));
    expect(graph_of(n, "y"), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("q\\x1b[H"));
    CU_ASSERT(!has_control(loom_last_error()));

    n = (buf){0};
    add_node(&n, node("Relu", "dup\x1b", "x", "y\r", no_attrs()));
    add_node(&n, node("Neg", "dup2\x1b", "x", "y\r", no_attrs()));
    expect(graph_of(n, "y"), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT, NEEDLES("y\\x0d"));
    CU_ASSERT(!has_control(loom_last_error()));

    /* UTF-8 passes as it is; its C1 controls (U+009B, a CSI) and stray bytes do not. */
    n = (buf){0};
    add_node(&n, node("Nix\xc3\xa9\xc2\x9b\xff", NULL, "x", "y", no_attrs()));
    expect(graph_of(n, "y"), NULL, NULL, LOOM_ERR_UNSUPPORTED,
           NEEDLES("Nix\xc3\xa9\\xc2\\x9b\\xff"));
}

/* ---- item: dimensions left unresolved ------------------------------------------------------- */

static buf dims_model(const char *param, int64_t dim0)
{
    const int64_t dims[] = {dim0, 3};
    const char *const params[] = {param, NULL};
    buf g = {0};
    f_msg(&g, GRAPH_NODE, node("Relu", "r", "x", "y", no_attrs()));
    f_msg(&g, GRAPH_INPUT, value_info("x", tensor_type(FLOAT, 2, dims, params)));
    f_msg(&g, GRAPH_OUTPUT, value_info("y", tensor_type(FLOAT, 2, dims, params)));
    return model(g, 13);
}

static void test_unresolved_dims_name_both_remedies(void)
{
    expect(dims_model("batch", 0), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("input 'x'", "dimension 0", "'batch'", "--dim batch=", "options.dims"));
    CU_ASSERT(!contains(loom_last_error(), "options->"));
    expect(dims_model(NULL, -1), NULL, NULL, LOOM_ERR_INVALID_ARGUMENT,
           NEEDLES("input 'x'", "dimension 0", "options.shapes"));
    CU_ASSERT(!contains(loom_last_error(), "options->"));
}

int main(int argc, char **argv)
{
    static const test_entry tests_onnx_hardening[] = {
        TEST_ENTRY(test_thousands_of_nested_ifs_are_refused_before_unpacking),
        TEST_ENTRY(test_thousands_of_nested_loops_are_refused_before_unpacking),
        TEST_ENTRY(test_deeply_nested_sequence_types_are_refused),
        TEST_ENTRY(test_moderate_nesting_passes_the_scan),
        TEST_ENTRY(test_corrupt_bytes_inside_deep_nesting_are_refused),
        TEST_ENTRY(test_two_nodes_writing_one_name_are_refused),
        TEST_ENTRY(test_split_with_the_same_output_twice_is_refused),
        TEST_ENTRY(test_node_writing_its_own_input_is_refused),
        TEST_ENTRY(test_node_writing_a_graph_input_is_refused),
        TEST_ENTRY(test_graph_output_listed_twice_is_refused),
        TEST_ENTRY(test_cycle_is_reported_as_a_cycle),
        TEST_ENTRY(test_acyclic_nodes_out_of_order_are_sorted),
        TEST_ENTRY(test_control_characters_in_names_are_escaped),
        TEST_ENTRY(test_unresolved_dims_name_both_remedies),
        {NULL, NULL},
    };
    static const test_entry tests_onnx_external_data[] = {
        TEST_ENTRY(test_external_data_beside_the_model_still_loads),
        TEST_ENTRY(test_external_data_claiming_terabytes_is_bad_input),
        TEST_ENTRY(test_external_data_error_does_not_reveal_the_file_size),
        TEST_ENTRY(test_external_data_symlink_out_of_the_folder_is_refused),
        TEST_ENTRY(test_external_data_that_is_a_fifo_is_refused_without_waiting),
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"onnx_hardening", tests_onnx_hardening, NULL, NULL, NULL, NULL},
        {"onnx_external_data", tests_onnx_external_data, external_init, external_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
