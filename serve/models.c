/*
 * Models: adding them (ONNX files or C builders), plans per batch size made on first use, look-ups
 * by name and version, freeing.
 */
#include "server_internal.h"

#include <loom/onnx.h>
#include <openssl/evp.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const double latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                        0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
#define N_LAT (sizeof latency_bounds / sizeof latency_bounds[0])
#define N_BATCH (sizeof batch_bounds / sizeof batch_bounds[0])

/* ---- plans per batch size ---------------------------------------------------------------- */

static loom_graph *model_graph(loom_server *s, sv_model *m, int64_t batch)
{
    (void)s;
    if (m->build) {
        loom_graph *g = m->build(batch, m->user);
        if (!g)
            sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': the graph builder failed for batch "
                     "%lld: %s", m->name, (long long)batch, loom_last_error());
        return g;
    }
    loom_onnx_options o = {.struct_size = sizeof o, .default_dim = 1};
    loom_onnx_shape shapes[64];
    int64_t dims[64][LOOM_MAX_RANK];
    if (m->n_in > 0 && m->n_in <= 64) {
        for (size_t k = 0; k < m->n_in; k++) {
            for (uint32_t d = 0; d < m->in[k].rank; d++)
                dims[k][d] = d == m->batch_axis ? batch : m->in[k].dims[d];
            shapes[k] = (loom_onnx_shape){m->in[k].name, m->in[k].rank, dims[k]};
        }
        o.shapes = shapes;
        o.n_shapes = m->n_in;
    }
    loom_graph *g = NULL;
    if (loom_onnx_load(m->path, &o, &g) != LOOM_OK) {
        sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s' at batch %lld: %s", m->name,
                 (long long)batch, loom_last_error());
        return NULL;
    }
    return g;
}

/* Load M's ONNX file once as a loom_model whose specialisations are the plans per batch size
 * (they share its weights); leaves M->LM NULL when its inputs do not match the description or
 * the file fixes the batch axis (then each size is imported with its shapes forced). */
static void open_shared(loom_server *s, sv_model *m)
{
    loom_model_options mo = {.struct_size = sizeof mo, .plan = &m->plan_opts,
                             .max_specialisations = 2 * SV_MAX_SIZES + 2,
                             .idle_bytes = SIZE_MAX};
    if (loom_model_load_onnx(s->rt, m->path, &mo, &m->lm) != LOOM_OK) {
        m->lm = NULL;
        return;
    }
    size_t n = loom_model_input_count(m->lm);
    m->lm_in = calloc(n ? n : 1, sizeof *m->lm_in);
    int ok = m->lm_in && n == m->n_in;
    for (size_t k = 0; ok && k < n; k++) {
        loom_model_io io = {.struct_size = sizeof io};
        ok = loom_model_input_info(m->lm, k, &io) == LOOM_OK;
        size_t j = 0;
        while (ok && j < m->n_in && strcmp(m->in[j].name, io.name))
            j++;
        ok = ok && j < m->n_in;
        /* A batch axis the file fixes is overridden by the per-size import only. */
        ok = ok && io.rank == (int32_t)m->in[j].rank && io.dims[m->batch_axis] == -1;
        if (ok)
            m->lm_in[k] = (uint32_t)j;
    }
    if (!ok) {
        loom_model_destroy(m->lm);
        m->lm = NULL;
        free(m->lm_in);
        m->lm_in = NULL;
    }
}

/* M's specialisation for BATCH rows held in SL: LOOM_OK, LOOM_ERR_UNSUPPORTED when the model
 * cannot be served that way (the caller imports the size alone), or another error. */
static loom_status hold_plan(sv_model *m, int64_t batch, plan_slot *sl)
{
    size_t n = loom_model_input_count(m->lm);
    loom_tensor *t[64] = {0};
    loom_status st = n <= 64 ? LOOM_OK : LOOM_ERR_UNSUPPORTED;
    for (size_t k = 0; st == LOOM_OK && k < n; k++) {
        const loom_serve_tensor_info *in = &m->in[m->lm_in[k]];
        int64_t dims[LOOM_MAX_RANK];
        for (uint32_t d = 0; d < in->rank; d++)
            dims[d] = d == m->batch_axis ? batch : in->dims[d];
        st = loom_tensor_create(in->dtype, in->rank, dims, &t[k]);
        if (st == LOOM_OK)
            memset(loom_tensor_data(t[k]), 0, loom_tensor_nbytes(t[k]));
    }
    if (st == LOOM_OK)
        st = loom_model_acquire_plan(m->lm, (const loom_tensor *const *)t, n, &sl->held);
    for (size_t k = 0; k < n && k < 64; k++)
        loom_tensor_destroy(t[k]);
    if (st != LOOM_OK)
        return st;
    /* The outputs must carry the batch along the batch axis, as in the per-size import. */
    loom_tensor *outs[64] = {0};
    int fits = m->n_out <= 64 &&
               loom_plan_make_outputs(sl->held.plan, outs, m->n_out) == LOOM_OK;
    for (size_t k = 0; fits && k < m->n_out; k++) {
        int64_t dims[LOOM_MAX_RANK];
        uint32_t rank = loom_tensor_rank(outs[k]);
        loom_tensor_dims(outs[k], dims);
        fits = rank > m->batch_axis && dims[m->batch_axis] == batch;
    }
    for (size_t k = 0; k < m->n_out && k < 64; k++)
        loom_tensor_destroy(outs[k]);
    if (!fits) {
        loom_model_release_plan(m->lm, &sl->held);
        return LOOM_ERR_UNSUPPORTED;
    }
    sl->plan = sl->held.plan;
    return LOOM_OK;
}

size_t sv_plan_inputs(const sv_model *m, const plan_slot *sl, loom_tensor *const *ins,
                      const loom_tensor **out)
{
    if (!sl->held.plan) {
        for (size_t k = 0; k < m->n_in; k++)
            out[k] = ins[k];
        return m->n_in;
    }
    for (size_t k = 0; k < sl->held.n_inputs; k++)
        out[k] = ins[m->lm_in[sl->held.inputs[k]]];
    return sl->held.n_inputs;
}

static int outputs_fit(sv_model *m, loom_graph *g, int64_t batch)
{
    size_t n = loom_graph_output_count(g);
    if (n != m->n_out)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %zu outputs at batch %lld, %zu "
                        "at batch 1", m->name, n, (long long)batch, m->n_out), 0;
    for (size_t k = 0; k < n; k++) {
        loom_dtype dt;
        uint32_t rank;
        int64_t dims[LOOM_MAX_RANK];
        loom_value_info(g, loom_graph_output(g, k), &dt, &rank, dims);
        if (rank <= m->batch_axis || dims[m->batch_axis] != batch)
            return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': output '%s' does not have "
                            "the batch (%lld) along axis %u", m->name, m->out[k].name,
                            (long long)batch, m->batch_axis), 0;
    }
    return 1;
}

/* "b<BATCH>-<16 hex>": the first 64 bits of the SHA-256 over each node's index, device and
 * whether it is a copy, so two plans that place nodes alike have one identity. */
static void plan_identity(loom_plan *p, int64_t batch, char *out, size_t len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned int mdl = 0;
    if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1) {
        for (size_t i = 0; i < loom_plan_node_count(p); i++) {
            const char *d = loom_plan_node_device(p, i);
            char line[160];
            int w = snprintf(line, sizeof line, "%zu %s %d\n", i, d ? d : "-",
                             loom_plan_node_is_copy(p, i));
            EVP_DigestUpdate(ctx, line, (size_t)(w > 0 ? w : 0));
        }
        EVP_DigestFinal_ex(ctx, md, &mdl);
    }
    EVP_MD_CTX_free(ctx);
    int w = snprintf(out, len, "b%lld-", (long long)batch);
    for (unsigned k = 0; k < 8 && w > 0 && (size_t)w + 2 < len; k++, w += 2)
        snprintf(out + w, len - (size_t)w, "%02x", mdl == 32 ? md[k] : 0);
}

/* A variant must take and give what the primary does. */
static loom_status same_io(const sv_model *p, const sv_model *m)
{
    if (p->n_in != m->n_in || p->n_out != m->n_out || p->batch_axis != m->batch_axis)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': the %s variant has %zu inputs "
                        "and %zu outputs, the %s one %zu and %zu", m->name,
                        m->variant ? "lite" : "full", m->n_in, m->n_out,
                        p->variant ? "lite" : "full", p->n_in, p->n_out);
    for (int io = 0; io < 2; io++) {
        const loom_serve_tensor_info *a = io ? p->out : p->in, *b = io ? m->out : m->in;
        for (size_t k = 0; k < (io ? p->n_out : p->n_in); k++) {
            int same = !strcmp(a[k].name, b[k].name) && a[k].dtype == b[k].dtype &&
                       a[k].rank == b[k].rank;
            for (uint32_t d = 0; same && d < a[k].rank; d++)
                same = a[k].dims[d] == b[k].dims[d];
            if (!same)
                return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %s %zu ('%s') of the %s "
                                "variant differs from the %s variant's ('%s')", m->name,
                                io ? "output" : "input", k, b[k].name,
                                m->variant ? "lite" : "full", p->variant ? "lite" : "full",
                                a[k].name);
        }
    }
    return LOOM_OK;
}

int sv_file_sha256(const char *path, char hex[65])
{
    hex[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    unsigned char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0)
        ok = EVP_DigestUpdate(ctx, buf, n) == 1;
    ok = ok && !ferror(f);
    unsigned char md[32];
    unsigned int mdl = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, md, &mdl) == 1 && mdl == 32;
    EVP_MD_CTX_free(ctx);
    fclose(f);
    if (!ok)
        return -1;
    for (int k = 0; k < 32; k++)
        snprintf(hex + 2 * k, 3, "%02x", md[k]);
    return 0;
}

static char *plan_devices(loom_plan *p)
{
    char buf[512] = "";
    size_t len = 0;
    for (size_t i = 0; i < loom_plan_node_count(p); i++) {
        if (loom_plan_node_is_copy(p, i))
            continue;
        const char *d = loom_plan_node_device(p, i);
        if (!d || strstr(buf, d))
            continue;
        int w = snprintf(buf + len, sizeof buf - len, "%s%s", len ? "," : "", d);
        if (w < 0 || (size_t)w >= sizeof buf - len)
            break;
        len += (size_t)w;
    }
    return sv_strdup(buf);
}

/* With WARM: run size index I's plan on zero-filled inputs, once to settle (the first touch of
 * its memory) and three times measured, and give the batcher the median run time, so that it
 * decides from the first request on with this machine's measured times rather than the cost
 * model's predictions (and sizes it has not chosen yet are not guessed from others). A run
 * that fails (a model that needs real input values) leaves the prediction in place. */
static void warm_measure(loom_server *s, sv_model *m, uint32_t i, const plan_slot *sl)
{
    size_t n_in = m->n_in, n_out = m->n_out;
    loom_tensor **ins = calloc(n_in ? n_in : 1, sizeof *ins);
    loom_tensor **outs = calloc(n_out ? n_out : 1, sizeof *outs);
    const loom_tensor **pin = calloc(n_in ? n_in : 1, sizeof *pin);
    int ok = ins && outs && pin && sl->plan;
    for (size_t k = 0; ok && k < n_in; k++) {
        int64_t dims[LOOM_MAX_RANK];
        for (uint32_t d = 0; d < m->in[k].rank && d < LOOM_MAX_RANK; d++)
            dims[d] = d == m->batch_axis ? (int64_t)m->est.sizes[i]
                      : m->in[k].dims[d] > 0 ? m->in[k].dims[d] : 1;
        ok = loom_tensor_create(m->in[k].dtype, m->in[k].rank, dims, &ins[k]) == LOOM_OK;
    }
    ok = ok && loom_plan_make_outputs(sl->plan, outs, n_out) == LOOM_OK;
    double t[4];
    int runs = 0;
    if (ok) {
        size_t n_pin = sv_plan_inputs(m, sl, ins, pin);
        for (; runs < 4; runs++) {
            double t0 = sv_now();
            if (loom_plan_run(sl->plan, pin, n_pin, outs, n_out, NULL) != LOOM_OK)
                break;
            t[runs] = sv_now() - t0;
        }
    }
    if (runs == 4) {
        double a = t[1], b = t[2], c = t[3]; /* the median of the three measured */
        double med = a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
        pthread_mutex_lock(&s->mu);
        sv_estimate_measure(&m->est, i, med);
        pthread_mutex_unlock(&s->mu);
    }
    for (size_t k = 0; ins && k < n_in; k++)
        loom_tensor_destroy(ins[k]);
    for (size_t k = 0; outs && k < n_out; k++)
        loom_tensor_destroy(outs[k]);
    free(ins);
    free(outs);
    free(pin);
}

/* The plan for size index I of M, made on first use ("plan for batch size B": the one place
 * that knows how a batch size becomes a plan). */
loom_status sv_model_plan(loom_server *s, sv_model *m, uint32_t i, plan_slot **out)
{
    plan_slot *sl = &m->slots[i];
    pthread_mutex_lock(&m->plan_mu);
    while (sl->state == 1)
        pthread_cond_wait(&m->plan_cv, &m->plan_mu);
    if (sl->state == 2 || sl->state == -1) {
        loom_status st = sl->state == 2 ? LOOM_OK : sl->status;
        if (st != LOOM_OK)
            sv_error(st, "%s", sl->message ? sl->message : "plan failed");
        pthread_mutex_unlock(&m->plan_mu);
        *out = sl;
        return st;
    }
    sl->state = 1;
    pthread_mutex_unlock(&m->plan_mu);

    int64_t batch = m->est.sizes[i];
    loom_status st = LOOM_ERR_UNSUPPORTED;
    loom_plan *plan = NULL;
    if (m->lm) {
        /* One copy of the weights for every size; the per-size import is the fallback. */
        st = hold_plan(m, batch, sl);
        if (st == LOOM_OK)
            plan = sl->plan;
    }
    if (st == LOOM_ERR_UNSUPPORTED) {
        st = LOOM_OK;
        loom_graph *g = model_graph(s, m, batch);
        if (!g) {
            st = LOOM_ERR_INVALID_ARGUMENT;
        } else if (!outputs_fit(m, g, batch)) {
            st = LOOM_ERR_INVALID_ARGUMENT;
        } else if ((st = loom_plan_create(s->rt, g, &m->plan_opts, &plan)) != LOOM_OK) {
            sv_error(st, "model '%s' at batch %lld: %s", m->name, (long long)batch,
                     loom_last_error());
        }
        loom_graph_destroy(g);
    } else if (st != LOOM_OK) {
        sv_error(st, "model '%s' at batch %lld: %s", m->name, (long long)batch,
                 loom_last_error());
    }
    double predicted = 0;
    if (plan) {
        loom_plan_summary sum = {.struct_size = sizeof sum};
        if (loom_plan_summary_get(plan, &sum) == LOOM_OK)
            predicted = sum.predicted_s;
    }
    pthread_mutex_lock(&m->plan_mu);
    sl->plan = plan;
    sl->status = st;
    sl->state = st == LOOM_OK ? 2 : -1;
    if (plan) {
        sl->devices = plan_devices(plan);
        plan_identity(plan, batch, sl->plan_id, sizeof sl->plan_id);
        sl->n_nodes = loom_plan_node_count(plan);
    } else {
        sl->message = sv_strdup(loom_serve_last_error());
    }
    pthread_cond_broadcast(&m->plan_cv);
    pthread_mutex_unlock(&m->plan_mu);
    uint64_t res = plan ? sv_server_plan_resources(s, plan) : 0;
    pthread_mutex_lock(&s->mu);
    if (predicted > 0)
        sv_estimate_seed(&m->est, i, predicted);
    m->size_res[i] = res;
    pthread_mutex_unlock(&s->mu);
    *out = sl;
    return st;
}

void sv_model_free(sv_model *m)
{
    if (!m)
        return;
    if (m->qos) {
        sv_remote_destroy(m->qos->remote);
        free(m->qos);
    }
    for (uint32_t i = 0; i < SV_MAX_SIZES; i++) {
        if (m->slots[i].held.plan)
            loom_model_release_plan(m->lm, &m->slots[i].held);
        else
            loom_plan_destroy(m->slots[i].plan);
        free(m->slots[i].devices);
        free(m->slots[i].message);
    }
    for (size_t k = 0; k < m->n_in; k++)
        free((char *)m->in[k].name);
    for (size_t k = 0; k < m->n_out; k++)
        free((char *)m->out[k].name);
    loom_model_destroy(m->lm);
    free(m->lm_in);
    free(m->in);
    free(m->out);
    sv_cache_destroy(m->cache);
    free(m->name);
    free(m->version);
    free(m->path);
    free(m->opt_device);
    free(m->opt_policy);
    free(m->opt_cache_dir);
    if (m->opt_pins)
        for (size_t k = 0; k < m->plan_opts.n_pins; k++)
            free(m->opt_pins[k]);
    free(m->opt_pins);
    pthread_mutex_destroy(&m->plan_mu);
    pthread_cond_destroy(&m->plan_cv);
    pthread_mutex_destroy(&m->stats_mu);
    free(m);
}


sv_model *sv_find_model(const loom_server *s, const char *name, const char *version)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < s->n_models; i++) {
        sv_model *m = s->models[i];
        if (!m->primary && !strcmp(m->name, name) && (!version || !*version || !strcmp(m->version, version)))
            return m;
    }
    return NULL;
}

/* Describe the values of G (inputs or outputs) with the batch dim as -1. */
static loom_status describe(sv_model *m, const loom_graph *g, int outputs)
{
    size_t n = outputs ? loom_graph_output_count(g) : loom_graph_input_count(g);
    loom_serve_tensor_info *info = calloc(n ? n : 1, sizeof *info);
    if (!info)
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    if (outputs) {
        m->out = info;
        m->n_out = n;
    } else {
        m->in = info;
        m->n_in = n;
    }
    for (size_t k = 0; k < n; k++) {
        loom_value v = outputs ? loom_graph_output(g, k) : loom_graph_input(g, k);
        loom_value_info(g, v, &info[k].dtype, &info[k].rank, info[k].dims);
        info[k].name = sv_strdup(loom_value_name(g, v));
        if (!info[k].name)
            return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        if (info[k].rank <= m->batch_axis)
            return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %s '%s' (rank %u) has no "
                            "batch axis %u", m->name, outputs ? "output" : "input",
                            info[k].name, info[k].rank, m->batch_axis);
        if (info[k].dims[m->batch_axis] != 1)
            return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %s '%s' has %lld along the "
                            "batch axis %u at batch 1", m->name, outputs ? "output" : "input",
                            info[k].name, (long long)info[k].dims[m->batch_axis], m->batch_axis);
        info[k].dims[m->batch_axis] = -1;
    }
    return LOOM_OK;
}

static loom_status add_model(loom_server *s, const char *name, const char *path,
                             loom_serve_build_fn build, void *user,
                             const loom_serve_model_options *o)
{
    if (!s || !name || !*name)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "a model needs a name");
    if (o && o->struct_size < offsetof(loom_serve_model_options, plan_options))
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': options.struct_size too small",
                        name);
    loom_serve_model_options d = {.struct_size = sizeof d};
    if (o)
        memcpy(&d, o, o->struct_size < sizeof d ? o->struct_size : sizeof d);
    const char *version = d.version && *d.version ? d.version : "1";
    if (d.max_batch > 256)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': max_batch %u is over 256", name,
                        d.max_batch);
    if (d.exact_sizes && d.max_batch > SV_MAX_SIZES)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': exact sizes need max_batch <= "
                        "%d", name, SV_MAX_SIZES);
    if (d.latency_target_s < 0 || d.batch_axis >= LOOM_MAX_RANK)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': bad latency target or batch "
                        "axis", name);
    int variant = SV_FULL;
    if (d.variant && strcmp(d.variant, "full")) {
        if (strcmp(d.variant, "lite"))
            return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': unknown variant '%s' (full "
                            "or lite)", name, d.variant);
        variant = SV_LITE;
    }
    pthread_mutex_lock(&s->mu);
    sv_model *primary = sv_find_model(s, name, version);
    int dup = primary && primary->var[variant];
    pthread_mutex_unlock(&s->mu);
    if (dup)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s' version '%s'%s%s is already served",
                        name, version, primary->var[variant] ? " variant " : "",
                        primary->var[variant] ? (variant ? "lite" : "full") : "");
    sv_model *m = calloc(1, sizeof *m);
    if (!m)
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    pthread_mutex_init(&m->plan_mu, NULL);
    pthread_cond_init(&m->plan_cv, NULL);
    pthread_mutex_init(&m->stats_mu, NULL);
    m->name = sv_strdup(name);
    m->version = sv_strdup(version);
    m->path = sv_strdup(path);
    m->build = build;
    m->user = user;
    m->variant = variant;
    if (path && sv_file_sha256(path, m->sha256) != 0) {
        sv_model_free(m);
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': cannot read '%s'", name, path);
    }
    m->batch_axis = d.batch_axis;
    m->max_batch = d.max_batch ? d.max_batch : 8;
    m->queue_limit = d.queue_limit ? d.queue_limit : 1024;
    m->target_s = d.latency_target_s > 0 ? d.latency_target_s : 0.05;
    m->exact = d.exact_sizes;
    sv_estimates_init(&m->est, m->max_batch, m->exact);
    sv_hist_init(&m->met.latency, latency_bounds, N_LAT);
    sv_hist_init(&m->met.queue, latency_bounds, N_LAT);
    sv_hist_init(&m->met.run, latency_bounds, N_LAT);
    sv_hist_init(&m->met.batch, batch_bounds, N_BATCH);
    m->plan_opts.struct_size = sizeof m->plan_opts;
    loom_status st = LOOM_OK;
    if (d.plan_options) {
        const loom_plan_options *po = d.plan_options;
        memcpy(&m->plan_opts, po, po->struct_size < sizeof m->plan_opts ? po->struct_size
                                                                          : sizeof m->plan_opts);
        m->plan_opts.struct_size = sizeof m->plan_opts;
        m->plan_opts.calibration_inputs = NULL; /* borrowed for the call only */
        m->plan_opts.n_calibration_sets = 0;
        m->opt_device = sv_strdup(po->device);
        m->opt_policy = sv_strdup(po->policy);
        m->opt_cache_dir = sv_strdup(po->cache_dir);
        m->plan_opts.device = m->opt_device;
        m->plan_opts.policy = m->opt_policy;
        m->plan_opts.cache_dir = m->opt_cache_dir;
        if (po->n_pins) {
            m->opt_pins = calloc(po->n_pins, sizeof *m->opt_pins);
            if (!m->opt_pins)
                st = LOOM_ERR_OUT_OF_MEMORY;
            for (size_t k = 0; st == LOOM_OK && k < po->n_pins; k++)
                m->opt_pins[k] = sv_strdup(po->pins[k]);
            m->plan_opts.pins = (const char *const *)m->opt_pins;
        }
    }
    if (!m->name || !m->version || (path && !m->path))
        st = LOOM_ERR_OUT_OF_MEMORY;
    if (st == LOOM_OK && d.cache_bytes) {
        m->cache = sv_cache_create(d.cache_bytes);
        m->cache_on = m->cache != NULL;
        if (!m->cache)
            st = LOOM_ERR_OUT_OF_MEMORY;
    }
    if (st != LOOM_OK) {
        sv_model_free(m);
        return sv_error(st, "out of memory");
    }
    /* The batch-1 graph says what the inputs and outputs are. For an ONNX file the inputs are
     * first read as the model declares them (symbolic dims as 1). */
    loom_graph *g = NULL;
    if (path) {
        loom_onnx_options oo = {.struct_size = sizeof oo, .default_dim = 1};
        if (loom_onnx_load(path, &oo, &g) != LOOM_OK)
            st = sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %s", name, loom_last_error());
        if (st == LOOM_OK) {
            /* Describe with the batch forced to 1 (the model may declare another). */
            size_t n = loom_graph_input_count(g);
            m->in = calloc(n ? n : 1, sizeof *m->in);
            m->n_in = m->in ? n : 0;
            for (size_t k = 0; m->in && k < n; k++) {
                loom_value v = loom_graph_input(g, k);
                loom_value_info(g, v, &m->in[k].dtype, &m->in[k].rank, m->in[k].dims);
                m->in[k].name = sv_strdup(loom_value_name(g, v));
                if (m->in[k].rank <= m->batch_axis) {
                    st = sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': input '%s' (rank %u) "
                                  "has no batch axis %u", name, m->in[k].name, m->in[k].rank,
                                  m->batch_axis);
                    break;
                }
            }
            loom_graph_destroy(g);
            g = NULL;
            if (st == LOOM_OK)
                g = model_graph(s, m, 1);
            if (st == LOOM_OK && !g)
                st = LOOM_ERR_INVALID_ARGUMENT;
            for (size_t k = 0; k < m->n_in; k++)
                free((char *)m->in[k].name);
            free(m->in);
            m->in = NULL;
            m->n_in = 0;
        }
    } else {
        g = model_graph(s, m, 1);
        if (!g)
            st = LOOM_ERR_INVALID_ARGUMENT;
        else if (loom_graph_check(g) != LOOM_OK)
            st = sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %s", name, loom_last_error());
    }
    if (st == LOOM_OK)
        st = describe(m, g, 0);
    if (st == LOOM_OK)
        st = describe(m, g, 1);
    loom_graph_destroy(g);
    if (st == LOOM_OK && path)
        open_shared(s, m);
    /* The batch-1 plan now, so a model that cannot run is refused here; the others when
     * first needed, or now with WARM. */
    plan_slot *sl;
    for (uint32_t i = 0; st == LOOM_OK && i < (d.warm ? m->est.n_sizes : 1); i++)
        st = sv_model_plan(s, m, i, &sl);
    for (uint32_t i = 0; st == LOOM_OK && d.warm && i < m->est.n_sizes; i++)
        warm_measure(s, m, i, &m->slots[i]);
    if (st == LOOM_OK && primary)
        st = same_io(primary, m);
    if (st != LOOM_OK) {
        sv_model_free(m);
        return st;
    }
    pthread_mutex_lock(&s->mu);
    if (primary) {
        m->primary = primary;
        primary->var[variant] = m;
    } else {
        m->var[variant] = m;
    }
    if (s->n_models == s->cap_models) {
        size_t cap = s->cap_models ? 2 * s->cap_models : 4;
        sv_model **nm = realloc(s->models, cap * sizeof *nm);
        if (!nm) {
            pthread_mutex_unlock(&s->mu);
            sv_model_free(m);
            return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        }
        s->models = nm;
        s->cap_models = cap;
    }
    s->models[s->n_models++] = m;
    pthread_mutex_unlock(&s->mu);
    return LOOM_OK;
}

loom_status loom_server_add_onnx(loom_server *s, const char *name, const char *path,
                                 const loom_serve_model_options *o)
{
    if (!path)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': no path", name ? name : "");
    return add_model(s, name, path, NULL, NULL, o);
}

loom_status loom_server_add_graph(loom_server *s, const char *name, loom_serve_build_fn build,
                                  void *user, const loom_serve_model_options *o)
{
    if (!build)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': no graph builder",
                        name ? name : "");
    return add_model(s, name, NULL, build, user, o);
}

size_t loom_server_model_count(const loom_server *s)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    size_t n = 0;
    for (size_t i = 0; i < s->n_models; i++)
        n += !s->models[i]->primary;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return n;
}

sv_model *sv_model_at(const loom_server *s, size_t i)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    sv_model *m = NULL;
    for (size_t k = 0; k < s->n_models; k++) {
        if (s->models[k]->primary)
            continue;
        if (i-- == 0) {
            m = s->models[k];
            break;
        }
    }
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return m;
}

const char *loom_server_model_name(const loom_server *s, size_t i)
{
    sv_model *m = sv_model_at(s, i);
    return m ? m->name : NULL;
}

const char *loom_server_model_version(const loom_server *s, size_t i)
{
    sv_model *m = sv_model_at(s, i);
    return m ? m->version : NULL;
}

sv_model *sv_model_lookup(const loom_server *s, const char *name, const char *version)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    sv_model *m = sv_find_model(s, name, version);
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return m;
}

size_t loom_server_model_inputs(const loom_server *s, const char *name, const char *version,
                                loom_serve_tensor_info *info, size_t capacity)
{
    sv_model *m = sv_model_lookup(s, name, version);
    if (!m)
        return 0;
    for (size_t k = 0; k < m->n_in && k < capacity; k++)
        info[k] = m->in[k];
    return m->n_in;
}

size_t loom_server_model_outputs(const loom_server *s, const char *name, const char *version,
                                 loom_serve_tensor_info *info, size_t capacity)
{
    sv_model *m = sv_model_lookup(s, name, version);
    if (!m)
        return 0;
    for (size_t k = 0; k < m->n_out && k < capacity; k++)
        info[k] = m->out[k];
    return m->n_out;
}

loom_status loom_server_set_cache(loom_server *s, const char *name, const char *version,
                                  int enable)
{
    sv_model *m = sv_model_lookup(s, name, version);
    if (!m)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "no model '%s'", name ? name : "");
    pthread_mutex_lock(&s->mu);
    m->cache_on = enable && m->cache;
    pthread_mutex_unlock(&s->mu);
    return LOOM_OK;
}

int sv_server_accepting(const loom_server *s)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    int a = !s->draining;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return a;
}

int sv_server_find_model(const loom_server *s, const char *name, const char *version,
                         const char **canonical_version, uint32_t *max_batch)
{
    sv_model *m = sv_model_lookup(s, name, version);
    if (!m)
        return 0;
    if (canonical_version)
        *canonical_version = m->version;
    if (max_batch)
        *max_batch = m->max_batch;
    return 1;
}

void sv_server_count_refusal(loom_server *s, const char *model, loom_serve_code code)
{
    sv_model *m = sv_model_lookup(s, model, NULL);
    if (m) {
        pthread_mutex_lock(&m->stats_mu);
        m->met.answers[code]++;
        pthread_mutex_unlock(&m->stats_mu);
    } else {
        pthread_mutex_lock(&s->stats_mu);
        s->refused_unknown++;
        pthread_mutex_unlock(&s->stats_mu);
    }
}

