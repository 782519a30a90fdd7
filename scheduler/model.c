/*
 * Models (include/loom/model.h): an ONNX file unpacked once, its weights decoded once into a
 * store that every specialisation borrows, and a bounded LRU cache of shape-specialised plans.
 * A specialisation's key is every input's dtype and shape, plus the bytes of the inputs the
 * model needs as values (learnt from the importer's report, then bound at once). Creating one
 * imports the unpacked model with those shapes and values (the importer folds the shape
 * arithmetic), checks the sizes it computes against the memory cap, and makes a plan.
 *
 * VALUE-DEPENDENT SHAPES. A model holding NonZero, Compress, Unique or NonMaxSuppression (whose
 * output shape depends on input values) runs in UNITS, decided once at load from the graph
 * alone: each node gets a level (the number of value-dependent nodes on its longest path from
 * the inputs); the nodes of one level form a stage, and each value-dependent node is a unit of
 * its own between its level's stage and the next. Every unit is a model of its own (a
 * loom_model over a derived, borrowed copy of the graph proto: its nodes, its inputs, its
 * outputs; the parent's weights), so it is specialised and cached by the shapes of ITS inputs
 * exactly as a model is by its inputs. A run passes the values between units by name (a
 * boundary value is computed once and handed on, never recomputed); a value-dependent unit runs
 * its node on the host with the CPU reference kernel into bound-sized buffers and hands on
 * tensors of the actual shapes, which then key the next stage's specialisation. Constant nodes
 * are copied into every unit that reads them, so later stages still fold them.
 */
#include <loom/model.h>
#include <loom/onnx.h>

#include "graph/graph_internal.h"
#include "graph/graph_symbols.h"
#include "graph/onnx/onnx_import.h"
#include "sched_internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_MAX_SPECS 16
#define KEY_STACK 1024

typedef struct model_io {
    char *name;
    loom_dtype dtype;
    int32_t rank;
    int64_t dims[LOOM_MAX_RANK];
    char *params[LOOM_MAX_RANK];
} model_io;

typedef struct spec {
    struct spec *prev, *next; /* LRU list: most recently used first */
    uint64_t hash;
    unsigned char *key;
    size_t key_len;
    loom_plan *plan;
    uint32_t *plan_in; /* model input index of each plan input */
    size_t n_plan_in;
    size_t bytes, borrowed, copied, peak;
    int refs;    /* runs in progress */
    int evicted; /* out of the cache: the last run frees it */
    int warm;    /* may hold idle execution memory */
    /* A value-dependent unit's specialisation: its one-node graph (shapes inferred, attributes
     * canonical, outputs at their upper bounds), run on the host instead of a plan. */
    loom_graph *graph;
} spec;

typedef struct model_unit model_unit;

struct loom_model {
    loom_runtime *rt;
    char *file, *base_dir;
    Onnx__ModelProto *proto;
    onnx_weights *weights;
    loom_plan_options popt;
    char *device, *policy, *cache_dir;
    char **pins;
    size_t max_specs, max_bytes, memory_cap, idle_bytes;
    size_t n_in, n_out;
    model_io *in, *out;
    uint32_t *in_of_proto; /* gp->input index -> model input index (UINT32_MAX: initializer) */
    unsigned char *needs_value;
    pthread_mutex_t lock;        /* the cache, the counters and needs_value */
    pthread_mutex_t create_lock; /* one creation (import) at a time: the store is not shared */
    spec *head, *tail;
    size_t live, bytes;
    uint64_t runs, hits, misses, evictions;
    /* A unit of a staged model: PROTO (derived) and WEIGHTS belong to the parent. */
    int borrowed;
    int vd_unit; /* the unit is one value-dependent node, run on the host */
    /* A unit's imports take the parent's create_lock: the weight store they share allows one
     * import at a time. NULL for a model of its own (its create_lock already covers it). */
    pthread_mutex_t *import_lock;
    /* A staged model (one holding value-dependent nodes): its units in run order, the number
     * of boundary values (ids 0..n_in-1 are the model's inputs), the boundary id of each model
     * output, and the last unit that reads each boundary value (freed after it). */
    model_unit *units;
    size_t n_units, n_bound;
    uint32_t *out_ids;
    uint32_t *last_use;
    /* A model made from a C-API graph (loom_model_from_graph): the checked graph, owned, whose
     * constants every specialisation borrows; NULL for an ONNX model. */
    loom_graph *graph_src;
    /* The weights' copies on devices the host cannot address, shared by the specialisations
     * (scheduler/devconst.c); a unit of a staged model uses its parent's. */
    devconst_cache *dconst;
};

struct model_unit {
    loom_model *sub;
    Onnx__ModelProto proto; /* shallow copies of the parent's, with this unit's lists */
    Onnx__GraphProto graph;
    Onnx__NodeProto **nodes;
    Onnx__ValueInfoProto *vin, **vin_p, *vout, **vout_p;
    Onnx__TypeProto *tin;
    Onnx__TypeProto__Tensor *ttin;
    uint32_t *in_ids, *out_ids; /* boundary id of each input / output of SUB */
    size_t n_in, n_out, n_nodes;
    int typed; /* the inputs' elem_type was set from the first run's tensors (model lock) */
};

static char *dup_s(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static double ms_since(uint64_t t0)
{
    return (double)(loom_now_ns() - t0) / 1e6;
}

/* ---- load ---------------------------------------------------------------------------------- */

static loom_status read_io(loom_model *m, model_io *io, const Onnx__ValueInfoProto *vi)
{
    io->name = dup_s(vi->name ? vi->name : "");
    if (!io->name)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory", m->file);
    io->rank = -1;
    io->dtype = LOOM_DTYPE_UNDEFINED;
    const Onnx__TypeProto *tp = vi->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return LOOM_OK;
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    if (tt->has_elem_type)
        io->dtype = onnx_dtype_from_onnx(tt->elem_type);
    if (!tt->shape || tt->shape->n_dim > LOOM_MAX_RANK)
        return LOOM_OK;
    io->rank = (int32_t)tt->shape->n_dim;
    for (int32_t k = 0; k < io->rank; k++) {
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[k];
        io->dims[k] = -1;
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
            d->dim_value >= 0)
            io->dims[k] = d->dim_value;
        else if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
                 d->dim_param && *d->dim_param && !(io->params[k] = dup_s(d->dim_param)))
            return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory", m->file);
    }
    return LOOM_OK;
}

static loom_status copy_plan_options(loom_model *m, const loom_plan_options *p)
{
    m->popt.struct_size = sizeof m->popt;
    if (!p)
        return LOOM_OK;
    if (p->struct_size < sizeof(uint32_t))
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model options: "
                              "options->plan->struct_size is %u", p->struct_size);
    memcpy(&m->popt, p, p->struct_size < sizeof m->popt ? p->struct_size : sizeof m->popt);
    m->popt.struct_size = sizeof m->popt;
    m->popt.calibration_inputs = NULL;
    m->popt.n_calibration_sets = 0;
    if ((m->popt.device && !(m->device = dup_s(m->popt.device))) ||
        (m->popt.policy && !(m->policy = dup_s(m->popt.policy))) ||
        (m->popt.cache_dir && !(m->cache_dir = dup_s(m->popt.cache_dir))))
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    m->popt.device = m->device;
    m->popt.policy = m->policy;
    m->popt.cache_dir = m->cache_dir;
    if (m->popt.n_pins) {
        if (!m->popt.pins)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model options: n_pins is "
                                  "set but pins is NULL");
        m->pins = calloc(m->popt.n_pins, sizeof *m->pins);
        if (!m->pins)
            return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        for (size_t i = 0; i < m->popt.n_pins; i++)
            if (!(m->pins[i] = dup_s(p->pins[i])))
                return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        m->popt.pins = (const char *const *)m->pins;
    }
    return LOOM_OK;
}

static size_t default_memory_cap(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0)
        return (size_t)8 << 30;
    return (size_t)pages * (size_t)page / 2;
}

/* The model's inputs (those of the proto's graph that are not initializers) and outputs. */
static loom_status init_io(loom_model *m)
{
    const Onnx__GraphProto *gp = m->proto->graph;
    m->in = calloc(gp->n_input + 1, sizeof *m->in);
    m->out = calloc(gp->n_output + 1, sizeof *m->out);
    m->in_of_proto = calloc(gp->n_input + 1, sizeof *m->in_of_proto);
    m->needs_value = calloc(gp->n_input + 1, 1);
    if (!m->in || !m->out || !m->in_of_proto || !m->needs_value)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    loom_status st = LOOM_OK;
    for (size_t i = 0; st == LOOM_OK && i < gp->n_input; i++) {
        m->in_of_proto[i] = UINT32_MAX;
        const char *name = gp->input[i]->name ? gp->input[i]->name : "";
        int is_init = 0;
        for (size_t k = 0; k < gp->n_initializer && !is_init; k++)
            is_init = gp->initializer[k]->name && strcmp(gp->initializer[k]->name, name) == 0;
        if (is_init)
            continue;
        m->in_of_proto[i] = (uint32_t)m->n_in;
        st = read_io(m, &m->in[m->n_in++], gp->input[i]);
    }
    for (size_t i = 0; st == LOOM_OK && i < gp->n_output; i++)
        st = read_io(m, &m->out[m->n_out++], gp->output[i]);
    return st;
}

static loom_status build_units(loom_model *m);

/* A new model of RUNTIME with OPTIONS (may be NULL) read as WHO's: bounds, plan options and the
 * device-constant cache set, nothing loaded. On failure nothing is left allocated. */
static loom_status model_new(loom_runtime *runtime, const loom_model_options *options,
                             const char *who, loom_model **out)
{
    loom_model_options o;
    memset(&o, 0, sizeof o);
    if (options) {
        if (options->struct_size < sizeof(uint32_t))
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "%s: options->struct_size is %u; "
                                  "set it to sizeof(loom_model_options)", who,
                                  options->struct_size);
        memcpy(&o, options, options->struct_size < sizeof o ? options->struct_size : sizeof o);
    }
    loom_model *m = calloc(1, sizeof *m);
    if (!m)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->create_lock, NULL);
    m->rt = runtime;
    m->max_specs = o.max_specialisations ? o.max_specialisations : DEFAULT_MAX_SPECS;
    m->max_bytes = o.max_bytes;
    m->memory_cap = o.memory_cap ? o.memory_cap : default_memory_cap();
    m->idle_bytes = o.idle_bytes;
    loom_status st = copy_plan_options(m, o.plan);
    if (st == LOOM_OK)
        st = devconst_cache_create(runtime, &m->dconst);
    if (st != LOOM_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", loom_last_error());
        loom_model_destroy(m);
        return loom_set_error(st, "%s", msg);
    }
    *out = m;
    return LOOM_OK;
}

loom_status loom_model_load_onnx(loom_runtime *runtime, const char *path,
                                 const loom_model_options *options, loom_model **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model_load_onnx: out is NULL");
    *out = NULL;
    if (!runtime || !path)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model_load_onnx: %s is NULL",
                              runtime ? "path" : "runtime");
    loom_model *m;
    loom_status st = model_new(runtime, options, "loom_model_load_onnx", &m);
    if (st != LOOM_OK)
        return st;
    void *data = NULL;
    size_t size = 0;
    if (st == LOOM_OK && !(m->file = dup_s(path)))
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == LOOM_OK) {
        m->base_dir = malloc(strlen(path) + 2);
        if (!m->base_dir) {
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        } else {
            strcpy(m->base_dir, path);
            char *slash = strrchr(m->base_dir, '/');
            if (!slash)
                strcpy(m->base_dir, ".");
            else if (slash == m->base_dir)
                slash[1] = '\0';
            else
                *slash = '\0';
        }
    }
    if (st == LOOM_OK)
        st = onnx_read_file(path, &data, &size);
    if (st == LOOM_OK) {
        st = onnx_unpack(data, size, m->file, &m->proto);
        free(data); /* the unpacked model holds its own copy of every weight */
    }
    if (st == LOOM_OK && !m->proto->graph)
        st = loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "%s: the model has no graph", m->file);
    /* A first import, with every dynamic dim at 1, reports what cannot be imported at all
     * (unsupported ops, all named; a corrupt file) now rather than at the first run. Its graph
     * is dropped; only the verdict on the ops is kept. */
    Onnx__GraphProto *gp = st == LOOM_OK ? m->proto->graph : NULL;
    onnx_source src = {.file = m->file, .base_dir = m->base_dir};
    if (st == LOOM_OK && !(m->weights = onnx_weights_create()))
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == LOOM_OK)
        st = onnx_weights_preload(m->weights, gp, &src);
    if (st == LOOM_OK)
        st = init_io(m);
    if (st == LOOM_OK) {
        /* Unsupported operators are named now, all of them, not at the first run. */
        loom_onnx_options io = {.struct_size = sizeof io, .default_dim = 1};
        loom_graph *g = NULL;
        loom_status ist = onnx_import_unpacked(m->proto, &src, &io, runtime_reference_eval(),
                                               m->weights, NULL, &g);
        loom_graph_destroy(g);
        if (ist == LOOM_ERR_UNSUPPORTED && strstr(loom_last_error(), "unsupported ops"))
            st = ist; /* its message is the one reported below */
        else
            loom_clear_error();
    }
    if (st == LOOM_OK)
        st = build_units(m);
    if (st != LOOM_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", loom_last_error());
        loom_model_destroy(m);
        return loom_set_error(st, "%s", msg);
    }
    *out = m;
    return LOOM_OK;
}

/* ---- models of C-API graphs ------------------------------------------------------------------ */

/* The model's inputs and outputs from GRAPH: symbolic dims are -1 and carry their symbol (inputs)
 * or their expression (outputs) as dim_params. */
static loom_status graph_io(loom_model *m, const loom_graph *g)
{
    m->n_in = g->n_inputs;
    m->n_out = g->n_outputs;
    m->in = calloc(m->n_in + 1, sizeof *m->in);
    m->out = calloc(m->n_out + 1, sizeof *m->out);
    m->needs_value = calloc(m->n_in + 1, 1);
    if (!m->in || !m->out || !m->needs_value)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t w = 0; w < 2; w++) {
        size_t n = w ? m->n_out : m->n_in;
        for (size_t i = 0; i < n; i++) {
            int32_t v = w ? g->outputs[i] : g->inputs[i];
            model_io *io = w ? &m->out[i] : &m->in[i];
            const graph_value *val = &g->values[v];
            if (!(io->name = dup_s(val->name)))
                return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            io->dtype = val->desc.dtype;
            io->rank = (int32_t)val->desc.rank;
            for (uint32_t k = 0; k < val->desc.rank; k++) {
                io->dims[k] = val->desc.dims[k];
                if (graph_sym_dim_known(g, v, k))
                    continue;
                io->dims[k] = -1;
                char e[128];
                loom_value_dim_expr(g, graph_handle(g, v), k, e, sizeof e);
                if (!(io->params[k] = dup_s(e)))
                    return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            }
        }
    }
    loom_clear_error();
    return LOOM_OK;
}

loom_status loom_model_from_graph(loom_runtime *runtime, loom_graph *graph,
                                  const loom_model_options *options, loom_model **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model_from_graph: out is NULL");
    *out = NULL;
    if (!runtime || !graph)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model_from_graph: %s is NULL",
                              runtime ? "graph" : "runtime");
    if (!graph->checked)
        return loom_set_error(graph->error != LOOM_OK ? graph->error : LOOM_ERR_INVALID_ARGUMENT,
                              "loom_model_from_graph: graph '%s' is not checked%s%s",
                              graph->name, graph->error != LOOM_OK ? ": " : " (call "
                              "loom_graph_check first)", graph->error != LOOM_OK
                                                             ? graph->error_msg : "");
    for (size_t i = 0; i < graph->n_nodes; i++)
        if (graph->nodes[i].def->flags & LOOM_OPF_VALUE_DEPENDENT)
            return loom_set_error(LOOM_ERR_UNSUPPORTED, "loom_model_from_graph: node '%s' (%s): "
                                  "operators whose output shape depends on values are run in "
                                  "stages only for ONNX models", graph->nodes[i].name,
                                  graph->nodes[i].def->name);
    loom_model *m;
    loom_status st = model_new(runtime, options, "loom_model_from_graph", &m);
    if (st != LOOM_OK)
        return st;
    if (st == LOOM_OK && !(m->file = dup_s(graph->name ? graph->name : "graph")))
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == LOOM_OK)
        st = graph_io(m, graph);
    if (st != LOOM_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", loom_last_error());
        loom_model_destroy(m); /* the graph stays the caller's */
        return loom_set_error(st, "%s", msg);
    }
    m->graph_src = graph;
    *out = m;
    loom_clear_error();
    return LOOM_OK;
}

static void spec_free(spec *s)
{
    if (!s)
        return;
    loom_plan_destroy(s->plan);
    loom_graph_destroy(s->graph);
    free(s->plan_in);
    free(s->key);
    free(s);
}

void loom_model_destroy(loom_model *m)
{
    if (!m)
        return;
    for (spec *s = m->head; s;) {
        spec *next = s->next;
        spec_free(s);
        s = next;
    }
    for (size_t i = 0; i < m->n_in; i++) {
        free(m->in[i].name);
        for (int k = 0; k < LOOM_MAX_RANK; k++)
            free(m->in[i].params[k]);
    }
    for (size_t i = 0; i < m->n_out; i++) {
        free(m->out[i].name);
        for (int k = 0; k < LOOM_MAX_RANK; k++)
            free(m->out[i].params[k]);
    }
    free(m->in);
    free(m->out);
    free(m->in_of_proto);
    free(m->needs_value);
    for (size_t u = 0; u < m->n_units; u++) {
        model_unit *un = &m->units[u];
        loom_model_destroy(un->sub);
        free(un->nodes);
        free(un->vin);
        free(un->vin_p);
        free(un->vout);
        free(un->vout_p);
        free(un->tin);
        free(un->ttin);
        free(un->in_ids);
        free(un->out_ids);
    }
    free(m->units);
    free(m->out_ids);
    free(m->last_use);
    if (!m->borrowed) /* after every specialisation, the units' included */
        devconst_cache_destroy(m->dconst);
    if (m->proto && !m->borrowed)
        onnx__model_proto__free_unpacked(m->proto, NULL);
    if (!m->borrowed)
        onnx_weights_destroy(m->weights);
    for (size_t i = 0; m->pins && i < m->popt.n_pins; i++)
        free(m->pins[i]);
    free(m->pins);
    free(m->device);
    free(m->policy);
    free(m->cache_dir);
    free(m->file);
    free(m->base_dir);
    loom_graph_destroy(m->graph_src); /* after the specialisations that borrow its constants */
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->create_lock);
    free(m);
}


/* ---- stages: models with value-dependent shapes ----------------------------------------------- */

static int default_domain(const Onnx__NodeProto *n)
{
    return !n->domain || !*n->domain || strcmp(n->domain, "ai.onnx") == 0;
}

static int is_vd_node(const Onnx__NodeProto *n)
{
    const loom_op_def *d = default_domain(n) ? loom_op_find(onnx_str(n->op_type)) : NULL;
    return d && (d->flags & LOOM_OPF_VALUE_DEPENDENT);
}

/* A Constant node: copied into every unit that reads it, so that each one folds it. */
static int is_const_node(const Onnx__NodeProto *n)
{
    return default_domain(n) && n->n_input == 0 && strcmp(onnx_str(n->op_type), "Constant") == 0;
}

/* A unit of M made of NODES (borrowed), reading the names IN_NAMES and writing OUT_NAMES (both
 * borrowed from the proto), as a model of its own. */
static loom_status unit_init(loom_model *m, model_unit *un, int vd, Onnx__NodeProto **nodes,
                             size_t n_nodes, char **in_names, size_t n_in, char **out_names,
                             size_t n_out)
{
    un->nodes = nodes;
    un->n_nodes = n_nodes;
    un->n_in = n_in;
    un->n_out = n_out;
    un->vin = calloc(n_in + 1, sizeof *un->vin);
    un->vin_p = calloc(n_in + 1, sizeof *un->vin_p);
    un->tin = calloc(n_in + 1, sizeof *un->tin);
    un->ttin = calloc(n_in + 1, sizeof *un->ttin);
    un->vout = calloc(n_out + 1, sizeof *un->vout);
    un->vout_p = calloc(n_out + 1, sizeof *un->vout_p);
    loom_model *sub = calloc(1, sizeof *sub);
    if (!un->vin || !un->vin_p || !un->tin || !un->ttin || !un->vout || !un->vout_p || !sub) {
        free(sub);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (size_t k = 0; k < n_in; k++) {
        onnx__value_info_proto__init(&un->vin[k]);
        onnx__type_proto__init(&un->tin[k]);
        onnx__type_proto__tensor__init(&un->ttin[k]);
        un->vin[k].name = in_names[k];
        un->vin[k].type = &un->tin[k];
        un->tin[k].value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
        un->tin[k].tensor_type = &un->ttin[k];
        un->ttin[k].has_elem_type = 1; /* the type itself: set at the first run */
        un->vin_p[k] = &un->vin[k];
    }
    for (size_t k = 0; k < n_out; k++) {
        onnx__value_info_proto__init(&un->vout[k]);
        un->vout[k].name = out_names[k];
        un->vout_p[k] = &un->vout[k];
    }
    un->graph = *m->proto->graph;
    un->graph.n_node = n_nodes;
    un->graph.node = nodes;
    un->graph.n_input = n_in;
    un->graph.input = un->vin_p;
    un->graph.n_output = n_out;
    un->graph.output = un->vout_p;
    un->proto = *m->proto;
    un->proto.graph = &un->graph;

    pthread_mutex_init(&sub->lock, NULL);
    pthread_mutex_init(&sub->create_lock, NULL);
    un->sub = sub;
    sub->borrowed = 1;
    sub->vd_unit = vd;
    sub->import_lock = &m->create_lock;
    sub->rt = m->rt;
    sub->proto = &un->proto;
    sub->weights = m->weights;
    sub->dconst = m->dconst;
    sub->popt = m->popt; /* its strings are the parent's, which outlives it */
    sub->max_specs = m->max_specs;
    sub->max_bytes = m->max_bytes;
    sub->memory_cap = m->memory_cap;
    sub->idle_bytes = m->idle_bytes;
    if (!(sub->file = dup_s(m->file)) || !(sub->base_dir = dup_s(m->base_dir)))
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    return init_io(sub);
}

/* Split M into units when its graph holds value-dependent nodes (the header comment says how);
 * a model without any keeps running as one plan. */
static loom_status build_units(loom_model *m)
{
    const Onnx__GraphProto *gp = m->proto->graph;
    size_t n = gp->n_node, n_vd = 0;
    for (size_t i = 0; i < n; i++)
        n_vd += is_vd_node(gp->node[i]);
    if (!n_vd)
        return LOOM_OK;
    /* Levels, by name: model inputs 0, initializers and Constant outputs -1 (everywhere). A
     * fixpoint, so that a file listing nodes out of order still gets the right levels. */
    onnx_smap lev = {0}, prod = {0};
    int32_t *stage = calloc(n + 1, sizeof *stage);
    int32_t *unit_of = calloc(n + 1, sizeof *unit_of);
    size_t n_names = 0;
    for (size_t i = 0; i < n; i++)
        n_names += gp->node[i]->n_output;
    uint32_t *ids_buf = calloc(2 * (n_names + m->n_in) + 2, sizeof *ids_buf);
    char **name_buf = calloc(2 * (n_names + m->n_in) + 2, sizeof *name_buf);
    loom_status st = LOOM_OK;
    if (!stage || !unit_of || !ids_buf || !name_buf)
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; st == LOOM_OK && i < gp->n_initializer; i++)
        if (gp->initializer[i]->name && !onnx_smap_put(&lev, gp->initializer[i]->name, -1))
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; st == LOOM_OK && i < m->n_in; i++)
        if (!onnx_smap_put(&lev, m->in[i].name, 0))
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    int changed = 1;
    int32_t max_stage = 0;
    for (size_t round = 0; st == LOOM_OK && changed; round++) {
        if (round > n + 1) {
            st = loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "%s: the graph has a cycle", m->file);
            break;
        }
        changed = 0;
        for (size_t i = 0; i < n && st == LOOM_OK; i++) {
            const Onnx__NodeProto *nd = gp->node[i];
            int32_t l = 0, out_l;
            if (is_const_node(nd)) {
                l = -1;
                out_l = -1;
            } else {
                for (size_t k = 0; k < nd->n_input; k++) {
                    int32_t v = 0;
                    if (nd->input[k] && *nd->input[k] && onnx_smap_get(&lev, nd->input[k], &v) &&
                        v > l)
                        l = v;
                }
                out_l = is_vd_node(nd) ? l + 1 : l;
            }
            stage[i] = l;
            if (l > max_stage)
                max_stage = l;
            for (size_t k = 0; k < nd->n_output; k++) {
                int32_t v;
                if (!nd->output[k] || !*nd->output[k] ||
                    (onnx_smap_get(&lev, nd->output[k], &v) && v == out_l))
                    continue;
                changed = 1;
                if (!onnx_smap_put(&lev, nd->output[k], out_l))
                    st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            }
        }
    }
    /* Units in run order: stage 0, the value-dependent nodes of level 0, stage 1, ... */
    m->units = calloc(n + 1, sizeof *m->units);
    if (st == LOOM_OK && !m->units)
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    size_t nu = 0;
    for (int32_t l = 0; st == LOOM_OK && l <= max_stage; l++) {
        int any = 0;
        for (size_t i = 0; i < n; i++)
            if (stage[i] == l && !is_vd_node(gp->node[i]) && !is_const_node(gp->node[i])) {
                unit_of[i] = (int32_t)nu;
                any = 1;
            }
        nu += any;
        for (size_t i = 0; i < n; i++)
            if (stage[i] == l && is_vd_node(gp->node[i]))
                unit_of[i] = (int32_t)nu++;
    }
    for (size_t i = 0; i < n; i++)
        if (is_const_node(gp->node[i]))
            unit_of[i] = -1;
    /* Producers: model inputs -2, initializers and Constant outputs -1, else the unit. */
    for (size_t i = 0; st == LOOM_OK && i < gp->n_initializer; i++)
        if (gp->initializer[i]->name && !onnx_smap_put(&prod, gp->initializer[i]->name, -1))
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; st == LOOM_OK && i < m->n_in; i++)
        if (!onnx_smap_put(&prod, m->in[i].name, -2))
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; st == LOOM_OK && i < n; i++)
        for (size_t k = 0; k < gp->node[i]->n_output && st == LOOM_OK; k++)
            if (gp->node[i]->output[k] && *gp->node[i]->output[k] &&
                !onnx_smap_put(&prod, gp->node[i]->output[k], unit_of[i]))
                st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    /* Boundary values: the model's inputs (ids 0..n_in-1), then every name a unit writes that
     * another unit reads or the model outputs. */
    onnx_smap bid = {0};
    m->n_bound = m->n_in;
    for (size_t i = 0; i < m->n_in; i++) {
        if (st == LOOM_OK && !onnx_smap_put(&bid, m->in[i].name, (int32_t)i))
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (size_t i = 0; st == LOOM_OK && i < n; i++) {
        const Onnx__NodeProto *nd = gp->node[i];
        for (size_t k = 0; k < nd->n_input && st == LOOM_OK; k++) {
            int32_t p, have;
            const char *name = nd->input[k];
            if (!name || !*name || !onnx_smap_get(&prod, name, &p) || p < 0 || p == unit_of[i] ||
                onnx_smap_get(&bid, name, &have))
                continue;
            if (!onnx_smap_put(&bid, name, (int32_t)m->n_bound++))
                st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        }
    }
    m->out_ids = calloc(m->n_out + 1, sizeof *m->out_ids);
    if (st == LOOM_OK && !m->out_ids)
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t o = 0; st == LOOM_OK && o < m->n_out; o++) {
        int32_t p, id;
        const char *name = m->out[o].name;
        if (!onnx_smap_get(&prod, name, &p) || p == -1) {
            st = loom_set_error(LOOM_ERR_UNSUPPORTED, "%s: output '%s' is %s; a model with "
                                "value-dependent shapes needs every output computed", m->file,
                                name, onnx_smap_get(&prod, name, &p) ? "a constant"
                                                                     : "never written");
            break;
        }
        if (!onnx_smap_get(&bid, name, &id)) {
            id = (int32_t)m->n_bound++;
            if (!onnx_smap_put(&bid, name, id))
                st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        }
        m->out_ids[o] = (uint32_t)id;
    }
    m->last_use = calloc(m->n_bound + 1, sizeof *m->last_use);
    if (st == LOOM_OK && !m->last_use)
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t id = 0; st == LOOM_OK && id < m->n_bound; id++)
        m->last_use[id] = UINT32_MAX; /* a model output, or never read: kept to the end */
    /* Each unit: its nodes (with the Constant nodes it reads), inputs and outputs. */
    for (size_t u = 0; st == LOOM_OK && u < nu; u++) {
        onnx_smap reads = {0};
        size_t nn = 0, ni = 0, no = 0;
        int vd = 0;
        Onnx__NodeProto **nodes = calloc(n + 1, sizeof *nodes);
        if (!nodes)
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        for (size_t i = 0; st == LOOM_OK && i < n; i++) {
            const Onnx__NodeProto *nd = gp->node[i];
            if (unit_of[i] != (int32_t)u)
                continue;
            vd |= is_vd_node(nd);
            for (size_t k = 0; k < nd->n_input && st == LOOM_OK; k++) {
                int32_t p, id, seen;
                const char *name = nd->input[k];
                if (!name || !*name || onnx_smap_get(&reads, name, &seen))
                    continue;
                if (!onnx_smap_put(&reads, name, 1)) {
                    st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
                    break;
                }
                if (!onnx_smap_get(&prod, name, &p) || p == -1 || p == (int32_t)u ||
                    !onnx_smap_get(&bid, name, &id))
                    continue;
                name_buf[ni] = (char *)name;
                ids_buf[ni++] = (uint32_t)id;
                int is_out = 0; /* units come in run order: the last reader wins */
                for (size_t o = 0; o < m->n_out; o++)
                    is_out |= m->out_ids[o] == (uint32_t)id;
                if (!is_out)
                    m->last_use[id] = (uint32_t)u;
            }
        }
        for (size_t i = 0; st == LOOM_OK && i < n; i++) {
            Onnx__NodeProto *nd = gp->node[i];
            int take = unit_of[i] == (int32_t)u;
            for (size_t k = 0; !take && unit_of[i] == -1 && k < nd->n_output; k++) {
                int32_t seen;
                take = nd->output[k] && onnx_smap_get(&reads, nd->output[k], &seen);
            }
            if (take)
                nodes[nn++] = nd;
            for (size_t k = 0; unit_of[i] == (int32_t)u && k < nd->n_output; k++) {
                int32_t id;
                if (nd->output[k] && *nd->output[k] && onnx_smap_get(&bid, nd->output[k], &id)) {
                    name_buf[n_names + m->n_in + 1 + no] = nd->output[k];
                    ids_buf[n_names + m->n_in + 1 + no++] = (uint32_t)id;
                }
            }
        }
        onnx_smap_free(&reads);
        model_unit *un = &m->units[u];
        m->n_units = u + 1;
        if (st == LOOM_OK && !no) {
            free(nodes); /* nothing it computes is needed: it stays empty and never runs */
            un->n_out = 0;
            continue;
        }
        if (st == LOOM_OK) {
            un->in_ids = calloc(ni + 1, sizeof *un->in_ids);
            un->out_ids = calloc(no + 1, sizeof *un->out_ids);
            if (!un->in_ids || !un->out_ids)
                st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        }
        if (st == LOOM_OK) {
            memcpy(un->in_ids, ids_buf, ni * sizeof *ids_buf);
            memcpy(un->out_ids, ids_buf + n_names + m->n_in + 1, no * sizeof *ids_buf);
            st = unit_init(m, un, vd, nodes, nn, name_buf, ni, name_buf + n_names + m->n_in + 1, no);
        } else {
            free(nodes);
        }
    }
    onnx_smap_free(&lev);
    onnx_smap_free(&prod);
    onnx_smap_free(&bid);
    free(stage);
    free(unit_of);
    free(ids_buf);
    free(name_buf);
    return st;
}

/* ---- introspection ------------------------------------------------------------------------- */

size_t loom_model_input_count(const loom_model *m)
{
    return m ? m->n_in : 0;
}

size_t loom_model_output_count(const loom_model *m)
{
    return m ? m->n_out : 0;
}

static loom_status io_info(const loom_model *m, const model_io *ios, size_t n, size_t i,
                           loom_model_io *out, const char *what)
{
    if (!m || !out || out->struct_size < sizeof *out || i >= n)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model_%s_info: %s", what,
                              !m || !out ? "NULL argument"
                              : out->struct_size < sizeof *out ? "struct_size is too small"
                                                               : "index out of range");
    const model_io *io = &ios[i];
    memset(out, 0, sizeof *out);
    out->struct_size = sizeof *out;
    out->name = io->name;
    out->dtype = io->dtype;
    out->rank = io->rank;
    for (int32_t k = 0; k < io->rank; k++) {
        out->dims[k] = io->dims[k];
        out->dim_params[k] = io->params[k];
    }
    if (ios == m->in) {
        pthread_mutex_lock((pthread_mutex_t *)&m->lock);
        out->needs_value = m->needs_value[i];
        pthread_mutex_unlock((pthread_mutex_t *)&m->lock);
        /* A staged model: what its units learnt about this input. */
        for (size_t u = 0; u < m->n_units; u++) {
            const loom_model *sub = m->units[u].sub;
            for (size_t k = 0; sub && k < sub->n_in; k++)
                if (strcmp(sub->in[k].name, io->name) == 0) {
                    pthread_mutex_lock((pthread_mutex_t *)&sub->lock);
                    out->needs_value |= sub->needs_value[k];
                    pthread_mutex_unlock((pthread_mutex_t *)&sub->lock);
                }
        }
    }
    return LOOM_OK;
}

loom_status loom_model_input_info(const loom_model *m, size_t i, loom_model_io *out)
{
    return io_info(m, m ? m->in : NULL, m ? m->n_in : 0, i, out, "input");
}

loom_status loom_model_output_info(const loom_model *m, size_t i, loom_model_io *out)
{
    return io_info(m, m ? m->out : NULL, m ? m->n_out : 0, i, out, "output");
}

int loom_model_is_staged(const loom_model *m)
{
    return m && m->n_units > 0;
}

loom_status loom_model_stats_get(const loom_model *m, loom_model_stats *out)
{
    if (!m || !out || out->struct_size < sizeof *out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model_stats_get: %s",
                              !m || !out ? "NULL argument" : "struct_size is too small");
    memset(out, 0, sizeof *out);
    out->struct_size = sizeof *out;
    pthread_mutex_lock((pthread_mutex_t *)&m->lock);
    out->runs = m->runs;
    out->hits = m->hits;
    out->misses = m->misses;
    out->evictions = m->evictions;
    out->live = m->live;
    out->bytes = m->bytes;
    for (const spec *s = m->head; s; s = s->next) {
        out->borrowed_bytes += s->borrowed;
        out->copied_const_bytes += s->copied;
    }
    pthread_mutex_unlock((pthread_mutex_t *)&m->lock);
    /* A staged model: its specialisations are its units'. */
    for (size_t u = 0; u < m->n_units; u++) {
        loom_model *sub = m->units[u].sub;
        if (!sub)
            continue;
        pthread_mutex_lock(&sub->lock);
        out->hits += sub->hits;
        out->misses += sub->misses;
        out->evictions += sub->evictions;
        out->live += sub->live;
        out->bytes += sub->bytes;
        for (const spec *s = sub->head; s; s = s->next) {
            out->borrowed_bytes += s->borrowed;
            out->copied_const_bytes += s->copied;
        }
        pthread_mutex_unlock(&sub->lock);
    }
    pthread_mutex_lock((pthread_mutex_t *)&m->create_lock);
    out->weight_bytes = onnx_weights_bytes(m->weights);
    out->weight_tensors = onnx_weights_count(m->weights);
    pthread_mutex_unlock((pthread_mutex_t *)&m->create_lock);
    if (m->graph_src)
        out->weight_bytes = graph_sym_constant_bytes(m->graph_src, &out->weight_tensors);
    devconst_stats(m->dconst, &out->device_weight_bytes, &out->device_weight_tensors,
                   &out->device_weight_uploads);
    return LOOM_OK;
}

/* ---- the cache ----------------------------------------------------------------------------- */

/* The key of INPUTS into BUF (CAP bytes); returns its length, or 0 when CAP is too small
 * (*NEED then says how much). Called with the lock held (needs_value). */
static size_t make_key(const loom_model *m, const loom_tensor *const *inputs, unsigned char *buf,
                       size_t cap, size_t *need)
{
    size_t len = 0;
    for (size_t i = 0; i < m->n_in; i++) {
        const loom_tensor_desc *d = loom_tensor_desc_of(inputs[i]);
        size_t add = 2 + (size_t)d->rank * 8 + (m->needs_value[i] ? loom_tensor_nbytes(inputs[i])
                                                                   : 0);
        if (len + add <= cap) {
            buf[len] = (unsigned char)d->dtype;
            buf[len + 1] = (unsigned char)d->rank;
            memcpy(buf + len + 2, d->dims, (size_t)d->rank * 8);
            if (m->needs_value[i])
                memcpy(buf + len + 2 + (size_t)d->rank * 8, loom_tensor_data(inputs[i]),
                       loom_tensor_nbytes(inputs[i]));
        }
        len += add;
    }
    *need = len;
    return len <= cap ? len : 0;
}

static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void lru_unlink(loom_model *m, spec *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        m->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        m->tail = s->prev;
    s->prev = s->next = NULL;
}

static void lru_push_front(loom_model *m, spec *s)
{
    s->prev = NULL;
    s->next = m->head;
    if (m->head)
        m->head->prev = s;
    m->head = s;
    if (!m->tail)
        m->tail = s;
}

/* Find the spec of KEY (lock held); on a hit it moves to the front and gains a reference. */
static spec *lookup(loom_model *m, const unsigned char *key, size_t len, uint64_t h)
{
    for (spec *s = m->head; s; s = s->next)
        if (s->hash == h && s->key_len == len && memcmp(s->key, key, len) == 0) {
            if (s != m->head) {
                lru_unlink(m, s);
                lru_push_front(m, s);
            }
            s->refs++;
            return s;
        }
    return NULL;
}

/* Drop least recently used specs until the bounds hold (lock held); KEEP stays. */
static void evict(loom_model *m, const spec *keep)
{
    spec *s = m->tail;
    while (s && (m->live > m->max_specs || (m->max_bytes && m->bytes > m->max_bytes))) {
        spec *prev = s->prev;
        if (s != keep) {
            lru_unlink(m, s);
            m->live--;
            m->bytes -= s->bytes;
            m->evictions++;
            if (s->refs)
                s->evicted = 1; /* its last run frees it */
            else
                spec_free(s);
        }
        s = prev;
    }
}

/* Keep idle execution memory of specs other than CUR within idle_bytes (lock held). */
static void trim_idle(loom_model *m, spec *cur)
{
    size_t held = 0;
    for (spec *s = m->head; s; s = s->next)
        if (s != cur && s->warm)
            held += s->peak;
    for (spec *s = m->tail; s && held > m->idle_bytes; s = s->prev)
        if (s != cur && s->warm) {
            plan_contexts_trim(s->plan);
            s->warm = 0;
            held -= s->peak;
        }
}

/* ---- bad input ----------------------------------------------------------------------------- */

static loom_status check_inputs(const loom_model *m, const loom_tensor *const *inputs)
{
    for (size_t i = 0; i < m->n_in; i++) {
        const model_io *io = &m->in[i];
        const loom_tensor_desc *d = loom_tensor_desc_of(inputs[i]);
        char a[160], b[160];
        if (io->dtype != LOOM_DTYPE_UNDEFINED && d->dtype != io->dtype)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "input '%s': dtype %s, the model "
                                  "declares %s", io->name, loom_dtype_name(d->dtype),
                                  loom_dtype_name(io->dtype));
        if (io->rank < 0)
            continue;
        if ((int32_t)d->rank != io->rank) {
            int64_t shown[LOOM_MAX_RANK];
            for (int32_t k = 0; k < io->rank; k++)
                shown[k] = io->dims[k];
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "input '%s': rank %u (shape %s), "
                                  "the model declares rank %d (%s; -1 is dynamic)", io->name,
                                  d->rank, loom_dims_format(d->rank, d->dims, a, sizeof a),
                                  io->rank, loom_dims_format((uint32_t)io->rank, shown, b,
                                                             sizeof b));
        }
        for (int32_t k = 0; k < io->rank; k++) {
            if (io->dims[k] >= 0 && d->dims[k] != io->dims[k])
                return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "input '%s': dimension %d is "
                                      "%lld, the model fixes it at %lld", io->name, k,
                                      (long long)d->dims[k], (long long)io->dims[k]);
            if (!io->params[k])
                continue;
            /* The same symbol elsewhere, earlier: it must have the same value. */
            for (size_t j = 0; j <= i; j++) {
                const model_io *jo = &m->in[j];
                const loom_tensor_desc *jd = loom_tensor_desc_of(inputs[j]);
                if ((int32_t)jd->rank != jo->rank)
                    continue;
                for (int32_t q = 0; q < jo->rank && (j < i || q < k); q++)
                    if (jo->params[q] && strcmp(jo->params[q], io->params[k]) == 0 &&
                        jd->dims[q] != d->dims[k])
                        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "dimension '%s' is "
                                              "%lld in %s but %lld in %s", io->params[k],
                                              (long long)jd->dims[q], jo->name,
                                              (long long)d->dims[k], io->name);
            }
        }
    }
    return LOOM_OK;
}

/* The run's inputs in one short phrase for messages: "x 2x128, shape [4, -1]". */
static void describe_inputs(const loom_model *m, const loom_tensor *const *inputs, char *buf,
                            size_t cap)
{
    size_t w = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < m->n_in && w + 32 < cap; i++) {
        const loom_tensor_desc *d = loom_tensor_desc_of(inputs[i]);
        char s[128];
        int n = snprintf(buf + w, cap - w, "%s%s %s", i ? ", " : "", m->in[i].name,
                         loom_dims_format(d->rank, d->dims, s, sizeof s));
        if (n < 0 || (size_t)n >= cap - w)
            break;
        w += (size_t)n;
        if (m->needs_value[i] && (d->dtype == LOOM_DTYPE_I64 || d->dtype == LOOM_DTYPE_I32)) {
            size_t cnt = loom_tensor_nbytes(inputs[i]) / loom_dtype_size(d->dtype);
            w += (size_t)snprintf(buf + w, cap - w, " = [");
            for (size_t k = 0; k < cnt && k < 8 && w + 24 < cap; k++) {
                int64_t v = d->dtype == LOOM_DTYPE_I64
                                ? ((const int64_t *)loom_tensor_data(inputs[i]))[k]
                                : ((const int32_t *)loom_tensor_data(inputs[i]))[k];
                w += (size_t)snprintf(buf + w, cap - w, "%s%lld", k ? ", " : "", (long long)v);
            }
            if (w + 8 < cap)
                w += (size_t)snprintf(buf + w, cap - w, "%s]", cnt > 8 ? ", ..." : "");
        }
    }
}

/* Every tensor the graph computes must fit under the memory cap. */
static loom_status check_sizes(const loom_model *m, const loom_graph *g,
                               const loom_tensor *const *inputs)
{
    for (size_t v = 0; v < g->n_values; v++) {
        const graph_value *val = &g->values[v];
        if (val->kind != GRAPH_VALUE_NODE)
            continue;
        size_t bytes = (size_t)loom_tensor_desc_numel(&val->desc) *
                       loom_dtype_size(val->desc.dtype);
        if (bytes <= m->memory_cap)
            continue;
        char in[512], s[128];
        describe_inputs(m, inputs, in, sizeof in);
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "inputs %s: tensor '%s' would have "
                              "shape %s (%zu bytes), over the memory cap of %zu bytes", in,
                              val->name ? val->name : "?",
                              loom_dims_format(val->desc.rank, val->desc.dims, s, sizeof s),
                              bytes, m->memory_cap);
    }
    return LOOM_OK;
}

/* ---- creating a specialisation ------------------------------------------------------------- */

/* Most inputs and outputs a value-dependent operator has (NonMaxSuppression: 5 inputs). */
#define VD_MAX_IO 8

/* Make S the specialisation of a value-dependent unit from its imported graph G (taken on
 * success): one node, its outputs at their upper bounds. */
static loom_status make_vd_spec(loom_model *m, spec *s, loom_graph *g)
{
    if (g->n_nodes != 1 || !(g->nodes[0].def->flags & LOOM_OPF_VALUE_DEPENDENT))
        return loom_set_error(LOOM_ERR_INTERNAL, "%s: a value-dependent unit imported as %zu "
                              "nodes", m->file, g->n_nodes);
    const graph_node *nd = &g->nodes[0];
    if (nd->n_inputs > VD_MAX_IO || nd->n_outputs > VD_MAX_IO)
        return loom_set_error(LOOM_ERR_INTERNAL, "node '%s' (%s): %u inputs, %u outputs",
                              nd->name, nd->def->name, nd->n_inputs, nd->n_outputs);
    s->n_plan_in = g->n_inputs;
    s->plan_in = calloc(s->n_plan_in + 1, sizeof *s->plan_in);
    if (!s->plan_in)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t k = 0; k < g->n_inputs; k++) {
        const char *name = g->values[g->inputs[k]].name;
        size_t i = 0;
        while (i < m->n_in && strcmp(m->in[i].name, name) != 0)
            i++;
        if (i == m->n_in)
            return loom_set_error(LOOM_ERR_INTERNAL, "%s: unit input '%s' is not an input of "
                                  "the unit", m->file, name);
        s->plan_in[k] = (uint32_t)i;
    }
    for (uint32_t k = 0; k < nd->n_outputs; k++) {
        const loom_tensor_desc *d = &g->values[nd->outputs[k]].desc;
        s->bytes += (size_t)loom_tensor_desc_numel(d) * loom_dtype_size(d->dtype);
    }
    s->peak = s->bytes;
    s->graph = g;
    return LOOM_OK;
}

static loom_status create_spec(loom_model *m, const loom_tensor *const *inputs, spec **out)
{
    *out = NULL;
    loom_status st = check_inputs(m, inputs);
    if (st != LOOM_OK)
        return st;
    loom_onnx_shape *shapes = calloc(m->n_in + 1, sizeof *shapes);
    loom_onnx_binding *binds = calloc(m->n_in + 1, sizeof *binds);
    int64_t(*dims)[LOOM_MAX_RANK] = calloc(m->n_in + 1, sizeof *dims);
    spec *s = calloc(1, sizeof *s);
    if (!shapes || !binds || !dims || !s) {
        free(shapes);
        free(binds);
        free(dims);
        free(s);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    onnx_source src = {.file = m->file, .base_dir = m->base_dir};
    loom_graph *g = NULL;
    /* A C-API graph: specialised to the inputs' shapes, its constants borrowed. */
    if (m->graph_src)
        st = graph_sym_specialise(m->graph_src, inputs, m->n_in, runtime_reference_eval(), &g);
    /* Each failed attempt that names inputs needed as values binds them and tries again. */
    for (size_t attempt = 0; !m->graph_src && attempt <= m->n_in; attempt++) {
        size_t ns = 0, nb = 0;
        pthread_mutex_lock(&m->lock);
        for (size_t i = 0; i < m->n_in; i++) {
            if (m->needs_value[i]) {
                binds[nb++] = (loom_onnx_binding){.input = m->in[i].name, .value = inputs[i]};
                continue;
            }
            loom_tensor_dims(inputs[i], dims[i]);
            shapes[ns++] = (loom_onnx_shape){.input = m->in[i].name,
                                             .rank = loom_tensor_rank(inputs[i]),
                                             .dims = dims[i]};
        }
        pthread_mutex_unlock(&m->lock);
        loom_onnx_options opt = {.struct_size = sizeof opt, .shapes = shapes, .n_shapes = ns,
                                 .bindings = binds, .n_bindings = nb};
        onnx_import_report rep;
        memset(&rep, 0, sizeof rep);
        if (m->import_lock)
            pthread_mutex_lock(m->import_lock);
        st = onnx_import_unpacked(m->proto, &src, &opt, runtime_reference_eval(), m->weights,
                                  &rep, &g);
        if (m->import_lock)
            pthread_mutex_unlock(m->import_lock);
        if (st == LOOM_OK)
            break;
        int added = 0;
        pthread_mutex_lock(&m->lock);
        for (size_t k = 0; k < rep.n_need; k++) {
            uint32_t p = rep.need[k];
            if (p < m->proto->graph->n_input && m->in_of_proto[p] != UINT32_MAX &&
                !m->needs_value[m->in_of_proto[p]]) {
                m->needs_value[m->in_of_proto[p]] = 1;
                added = 1;
            }
        }
        pthread_mutex_unlock(&m->lock);
        if (!added)
            break;
    }
    free(shapes);
    free(binds);
    free(dims);
    if (st == LOOM_OK)
        st = check_sizes(m, g, inputs);
    if (st == LOOM_OK && m->vd_unit) {
        st = make_vd_spec(m, s, g);
        if (st == LOOM_OK)
            g = NULL; /* the spec's now */
    }
    if (st == LOOM_OK && !s->graph) {
        /* What the plan will borrow (weights) and copy (folded constants). */
        for (size_t v = 0; v < g->n_values; v++) {
            const graph_value *val = &g->values[v];
            if (val->kind != GRAPH_VALUE_CONSTANT || !val->data ||
                (!val->n_consumers && val->output_index < 0))
                continue;
            size_t b = (size_t)loom_tensor_desc_numel(&val->desc) *
                       loom_dtype_size(val->desc.dtype);
            if (val->data_owned || val->copy_in_plan)
                s->copied += b;
            else
                s->borrowed += b;
        }
        st = plan_create_shared(m->rt, g, &m->popt, m->dconst, &s->plan);
    }
    if (st == LOOM_OK && !s->graph) {
        s->peak = loom_plan_peak_bytes(s->plan);
        /* What the specialisation holds: its intermediates, the constants it copied, and the
         * plan itself (nodes, tensors, kernels' descriptors): a plan whose nodes were all fused
         * away from intermediates still costs memory. */
        const loom_plan *pl = s->plan;
        s->bytes = s->peak + s->copied + sizeof *pl + pl->n_nodes * sizeof *pl->nodes +
                   pl->n_tensors * sizeof *pl->tensors + pl->n_io * sizeof *pl->io;
        if (s->peak > m->memory_cap) {
            char in[512];
            describe_inputs(m, inputs, in, sizeof in);
            st = loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "inputs %s: a run would need %zu "
                                "bytes of intermediate memory, over the memory cap of %zu bytes",
                                in, s->peak, m->memory_cap);
        }
    }
    if (st == LOOM_OK && !s->graph) {
        /* The plan's inputs: the model's, less those bound as values. */
        s->n_plan_in = loom_plan_input_count(s->plan);
        s->plan_in = calloc(s->n_plan_in + 1, sizeof *s->plan_in);
        if (!s->plan_in)
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        for (size_t k = 0; st == LOOM_OK && k < s->n_plan_in; k++) {
            const char *name = NULL;
            loom_plan_input_info(s->plan, k, &name, NULL, NULL, NULL);
            size_t i = 0;
            while (i < m->n_in && strcmp(m->in[i].name, name) != 0)
                i++;
            if (i == m->n_in)
                st = loom_set_error(LOOM_ERR_INTERNAL, "%s: plan input '%s' is not an input of "
                                    "the model", m->file, name);
            s->plan_in[k] = (uint32_t)i;
        }
    }
    loom_graph_destroy(g);
    if (st != LOOM_OK) {
        spec_free(s);
        return st;
    }
    *out = s;
    return LOOM_OK;
}

/* ---- run ----------------------------------------------------------------------------------- */

static void release(loom_model *m, spec *s)
{
    pthread_mutex_lock(&m->lock);
    s->refs--;
    int drop = s->evicted && s->refs == 0;
    pthread_mutex_unlock(&m->lock);
    if (drop)
        spec_free(s);
}

/* Look KEY up; on a miss create the spec (one creation at a time) and insert it. */
static loom_status acquire(loom_model *m, const loom_tensor *const *inputs, spec **out, int *hit,
                           double *create_ms)
{
    unsigned char stack_key[KEY_STACK];
    unsigned char *key = stack_key;
    size_t need, len;
    pthread_mutex_lock(&m->lock);
    len = make_key(m, inputs, key, sizeof stack_key, &need);
    spec *s = NULL;
    if (len)
        s = lookup(m, key, len, hash_bytes(key, len));
    if (s) {
        m->hits++;
        pthread_mutex_unlock(&m->lock);
        *out = s;
        *hit = 1;
        return LOOM_OK;
    }
    pthread_mutex_unlock(&m->lock);

    pthread_mutex_lock(&m->create_lock);
    uint64_t t0 = loom_now_ns();
    /* Another thread may have made it meanwhile, or learnt that an input is needed as a
     * value (the key changes): look again. */
    key = NULL;
    pthread_mutex_lock(&m->lock);
    make_key(m, inputs, stack_key, 0, &need);
    key = malloc(need + 1);
    if (key) {
        len = make_key(m, inputs, key, need, &need);
        s = lookup(m, key, len, hash_bytes(key, len));
    }
    if (s)
        m->hits++;
    pthread_mutex_unlock(&m->lock);
    loom_status st = LOOM_OK;
    if (!key)
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == LOOM_OK && !s) {
        free(key);
        key = NULL;
        st = create_spec(m, inputs, &s);
        if (st == LOOM_OK) {
            /* The key as it is now: creating may have learnt new value inputs. */
            pthread_mutex_lock(&m->lock);
            make_key(m, inputs, stack_key, 0, &need);
            s->key = malloc(need + 1);
            if (s->key) {
                s->key_len = make_key(m, inputs, s->key, need, &need);
                s->hash = hash_bytes(s->key, s->key_len);
                s->refs = 1;
                lru_push_front(m, s);
                m->live++;
                m->bytes += s->bytes;
                m->misses++;
                evict(m, s);
            }
            pthread_mutex_unlock(&m->lock);
            if (!s->key) {
                spec_free(s);
                s = NULL;
                st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            }
        }
        *hit = 0;
        *create_ms = ms_since(t0);
    } else {
        *hit = 1;
    }
    free(key);
    pthread_mutex_unlock(&m->create_lock);
    *out = s;
    return st;
}

/* Run a value-dependent unit's node on the host (S->graph: one node; IN: its graph's inputs in
 * order): bound-sized buffers in, tensors of the actual shapes out, one per graph output. */
static loom_status vd_run(const spec *s, const loom_tensor *const *in, loom_tensor **outputs,
                          size_t n_outputs)
{
    const loom_graph *g = s->graph;
    const graph_node *nd = &g->nodes[0];
    loom_tensor_desc in_descs[VD_MAX_IO], out_descs[VD_MAX_IO], actual[VD_MAX_IO];
    const void *in_consts[VD_MAX_IO];
    loom_node_desc desc;
    graph_node_desc(g, 0, &desc, in_descs, out_descs, in_consts);
    const void *ins[VD_MAX_IO];
    void *outs[VD_MAX_IO] = {NULL};
    for (uint32_t k = 0; k < nd->n_inputs; k++) {
        loom_value v = nd->inputs[k];
        ins[k] = NULL;
        if (v == LOOM_NO_VALUE)
            continue;
        if (g->values[v].kind == GRAPH_VALUE_CONSTANT) {
            ins[k] = g->values[v].data;
            continue;
        }
        for (size_t j = 0; j < g->n_inputs; j++)
            if (g->inputs[j] == v)
                ins[k] = loom_tensor_data(in[j]);
        if (!ins[k])
            return loom_set_error(LOOM_ERR_INTERNAL, "node '%s' (%s): input %u has no data",
                                  nd->name, nd->def->name, k);
    }
    loom_status st = LOOM_OK;
    for (uint32_t k = 0; k < nd->n_outputs && st == LOOM_OK; k++) {
        size_t bytes = (size_t)loom_tensor_desc_numel(&out_descs[k]) *
                       loom_dtype_size(out_descs[k].dtype);
        if (!(outs[k] = malloc(bytes ? bytes : 1)))
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "node '%s' (%s): out of memory (%zu "
                                "bytes)", nd->name, nd->def->name, bytes);
    }
    char err[512] = "";
    if (st == LOOM_OK) {
        st = runtime_reference_eval_value_dependent(&desc, ins, outs, actual, err, sizeof err);
        if (st != LOOM_OK)
            st = loom_set_error(st, "node '%s' (%s): %s", nd->name, nd->def->name, err);
    }
    for (size_t o = 0; o < n_outputs && st == LOOM_OK; o++) {
        uint32_t j = 0;
        while (j < nd->n_outputs && nd->outputs[j] != g->outputs[o])
            j++;
        if (j == nd->n_outputs) {
            st = loom_set_error(LOOM_ERR_INTERNAL, "node '%s' (%s): graph output %zu is not "
                                "one of its outputs", nd->name, nd->def->name, o);
            break;
        }
        st = loom_tensor_create(actual[j].dtype, actual[j].rank, actual[j].dims, &outputs[o]);
        if (st == LOOM_OK)
            memcpy(loom_tensor_data(outputs[o]), outs[j], loom_tensor_nbytes(outputs[o]));
    }
    for (uint32_t k = 0; k < nd->n_outputs; k++)
        free(outs[k]);
    return st;
}

/* One run of M without stages (a plain model, or one unit of a staged one): arguments checked
 * by the caller. */
static loom_status run_flat(loom_model *m, const loom_tensor *const *inputs,
                            loom_tensor **outputs, size_t n_outputs, int *hit_out,
                            double *create_out, double *run_out, size_t *bytes_out)
{
    spec *s = NULL;
    int hit = 0;
    double create_ms = 0;
    loom_status st = acquire(m, inputs, &s, &hit, &create_ms);
    if (st != LOOM_OK)
        return st;
    const loom_tensor *plan_in_stack[16];
    const loom_tensor **plan_in = s->n_plan_in <= 16 ? plan_in_stack
                                                     : malloc(s->n_plan_in * sizeof *plan_in);
    if (!plan_in) {
        release(m, s);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (size_t k = 0; k < s->n_plan_in; k++)
        plan_in[k] = inputs[s->plan_in[k]];
    uint64_t r0 = 0;
    if (s->graph) {
        r0 = loom_now_ns();
        st = vd_run(s, plan_in, outputs, n_outputs);
    } else {
        st = loom_plan_make_outputs(s->plan, outputs, n_outputs);
        if (st == LOOM_OK) {
            r0 = loom_now_ns();
            st = loom_plan_run(s->plan, plan_in, s->n_plan_in, outputs, n_outputs, NULL);
        }
    }
    if (st != LOOM_OK)
        for (size_t i = 0; i < n_outputs; i++) {
            loom_tensor_destroy(outputs[i]);
            outputs[i] = NULL;
        }
    double run_ms = r0 ? ms_since(r0) : 0;
    if (plan_in != plan_in_stack)
        free(plan_in);
    pthread_mutex_lock(&m->lock);
    if (st == LOOM_OK)
        m->runs++;
    s->warm = s->plan != NULL;
    if (!s->evicted)
        trim_idle(m, s);
    size_t sbytes = s->bytes;
    pthread_mutex_unlock(&m->lock);
    release(m, s);
    *hit_out = hit;
    *create_out = create_ms;
    *run_out = run_ms;
    *bytes_out = sbytes;
    return st;
}

/* ONNX's elem_type for DTYPE (0 when it has none). */
static int32_t onnx_type_of(loom_dtype dtype)
{
    for (int32_t t = 1; t < 32; t++)
        if (onnx_dtype_from_onnx(t) == dtype)
            return t;
    return 0;
}

/* A staged run: the units in order, each fed the boundary values it reads. */
static loom_status run_staged(loom_model *m, const loom_tensor *const *inputs,
                              loom_tensor **outputs, loom_model_run_stats *stats)
{
    loom_status st = check_inputs(m, inputs);
    if (st != LOOM_OK)
        return st;
    loom_tensor **vals = calloc(m->n_bound + 1, sizeof *vals);
    if (!vals)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    int all_hit = 1;
    double create_ms = 0, run_ms = 0;
    size_t bytes = 0;
    for (size_t u = 0; u < m->n_units && st == LOOM_OK; u++) {
        model_unit *un = &m->units[u];
        if (!un->sub)
            continue; /* nothing it computes is needed */
        const loom_tensor *in_stack[16];
        loom_tensor *out_stack[16] = {NULL}; /* a failed run frees what it made */
        const loom_tensor **in = un->n_in <= 16 ? in_stack : malloc(un->n_in * sizeof *in);
        loom_tensor **out = un->n_out <= 16 ? out_stack : calloc(un->n_out, sizeof *out);
        if (!in || !out) {
            if (in != in_stack)
                free(in);
            if (out != out_stack)
                free(out);
            st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
            break;
        }
        for (size_t k = 0; k < un->n_in; k++) {
            uint32_t id = un->in_ids[k];
            in[k] = id < m->n_in ? inputs[id] : vals[id];
        }
        pthread_mutex_lock(&m->lock);
        if (!un->typed) {
            /* What the unit's inputs are is known from the first run (dtypes do not change
             * between runs: the model's inputs' are checked). */
            for (size_t k = 0; k < un->n_in; k++)
                un->ttin[k].elem_type = onnx_type_of(loom_tensor_dtype(in[k]));
            un->typed = 1;
        }
        pthread_mutex_unlock(&m->lock);
        int hit = 0;
        double c = 0, r = 0;
        size_t b = 0;
        st = run_flat(un->sub, in, out, un->n_out, &hit, &c, &r, &b);
        all_hit &= hit;
        create_ms += c;
        run_ms += r;
        bytes += b;
        for (size_t k = 0; k < un->n_out && st == LOOM_OK; k++)
            vals[un->out_ids[k]] = out[k];
        if (in != in_stack)
            free(in);
        if (out != out_stack)
            free(out);
        /* Values no later unit reads and no output needs are dropped now. */
        for (size_t id = m->n_in; id < m->n_bound; id++)
            if (vals[id] && m->last_use[id] == u) {
                loom_tensor_destroy(vals[id]);
                vals[id] = NULL;
            }
    }
    for (size_t o = 0; o < m->n_out && st == LOOM_OK; o++) {
        uint32_t id = m->out_ids[o];
        const loom_tensor *t = id < m->n_in ? inputs[id] : vals[id];
        int last = id >= m->n_in;
        for (size_t q = o + 1; q < m->n_out && last; q++)
            last = m->out_ids[q] != id;
        if (last) { /* handed over as it is */
            outputs[o] = vals[id];
            vals[id] = NULL;
            continue;
        }
        const loom_tensor_desc *d = loom_tensor_desc_of(t);
        st = loom_tensor_create(d->dtype, d->rank, d->dims, &outputs[o]);
        if (st == LOOM_OK)
            memcpy(loom_tensor_data(outputs[o]), loom_tensor_data(t), loom_tensor_nbytes(t));
    }
    for (size_t id = m->n_in; id < m->n_bound; id++)
        loom_tensor_destroy(vals[id]);
    free(vals);
    if (st != LOOM_OK) {
        for (size_t o = 0; o < m->n_out; o++) {
            loom_tensor_destroy(outputs[o]);
            outputs[o] = NULL;
        }
        return st;
    }
    pthread_mutex_lock(&m->lock);
    m->runs++;
    pthread_mutex_unlock(&m->lock);
    if (stats) {
        stats->cache_hit = all_hit;
        stats->create_ms = create_ms;
        stats->run_ms = run_ms;
        stats->specialisation_bytes = bytes;
    }
    return LOOM_OK;
}

loom_status loom_model_run(loom_model *m, const loom_tensor *const *inputs, size_t n_inputs,
                           loom_tensor **outputs, size_t n_outputs, loom_model_run_stats *stats)
{
    uint64_t t0 = loom_now_ns();
    if (!m || (!inputs && n_inputs) || (!outputs && n_outputs))
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model_run: %s is NULL",
                              !m ? "model" : !inputs && n_inputs ? "inputs" : "outputs");
    if (stats && stats->struct_size < sizeof *stats)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model_run: stats->struct_size "
                              "is too small");
    for (size_t i = 0; i < n_outputs; i++)
        outputs[i] = NULL;
    if (n_inputs != m->n_in)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "the model has %zu input%s (%s%s), "
                              "the run gives %zu", m->n_in, m->n_in == 1 ? "" : "s",
                              m->n_in ? m->in[0].name : "", m->n_in > 1 ? ", ..." : "",
                              n_inputs);
    if (n_outputs != m->n_out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "the model has %zu outputs, the run "
                              "asks for %zu", m->n_out, n_outputs);
    for (size_t i = 0; i < n_inputs; i++)
        if (!inputs[i])
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "input %zu ('%s') is NULL", i,
                                  m->in[i].name);
    if (m->n_units) {
        loom_status st = run_staged(m, inputs, outputs, stats);
        if (st == LOOM_OK && stats)
            stats->latency_ms = ms_since(t0);
        return st;
    }
    int hit = 0;
    double create_ms = 0, run_ms = 0;
    size_t sbytes = 0;
    loom_status st = run_flat(m, inputs, outputs, n_outputs, &hit, &create_ms, &run_ms, &sbytes);
    if (stats) {
        stats->cache_hit = hit;
        stats->create_ms = create_ms;
        stats->run_ms = run_ms;
        stats->specialisation_bytes = sbytes;
        stats->latency_ms = ms_since(t0);
    }
    return st;
}

/* ---- holding a specialisation's plan (for callers that run plans themselves) -------------- */

loom_status loom_model_acquire_plan(loom_model *m, const loom_tensor *const *inputs,
                                    size_t n_inputs, loom_model_held_plan *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!m || !inputs || !out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_model_acquire_plan: a NULL "
                              "argument");
    if (n_inputs != m->n_in)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "the model has %zu inputs, %zu given",
                              m->n_in, n_inputs);
    for (size_t i = 0; i < n_inputs; i++)
        if (!inputs[i])
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "input %zu ('%s') is NULL", i,
                                  m->in[i].name);
    if (loom_model_is_staged(m))
        return loom_set_error(LOOM_ERR_UNSUPPORTED, "the model runs in stages (it has operators "
                              "whose output shapes depend on values): run it with "
                              "loom_model_run");
    loom_status st = check_inputs(m, inputs);
    if (st != LOOM_OK)
        return st;
    spec *s = NULL;
    int hit = 0;
    double create_ms = 0;
    st = acquire(m, inputs, &s, &hit, &create_ms);
    if (st != LOOM_OK)
        return st;
    /* A plan that depends on input values is not one plan per shape. */
    pthread_mutex_lock(&m->lock);
    size_t needs = m->n_in;
    for (size_t i = 0; i < m->n_in && needs == m->n_in; i++)
        if (m->needs_value[i])
            needs = i;
    pthread_mutex_unlock(&m->lock);
    if (needs < m->n_in) {
        release(m, s);
        return loom_set_error(LOOM_ERR_UNSUPPORTED, "the model needs the values of input '%s', "
                              "not only its shape: run it with loom_model_run",
                              m->in[needs].name);
    }
    out->plan = s->plan;
    out->inputs = s->plan_in;
    out->n_inputs = s->n_plan_in;
    out->handle = s;
    return LOOM_OK;
}

void loom_model_release_plan(loom_model *m, loom_model_held_plan *held)
{
    if (!m || !held || !held->handle)
        return;
    release(m, held->handle);
    memset(held, 0, sizeof *held);
}
