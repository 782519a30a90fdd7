/*
 * Confidence cascades: a request runs on the lite variant first; when the lite answer's
 * confidence (from a named output: the largest softmax probability or the top-1/top-2 margin)
 * is under the model's threshold it is escalated to the full variant, either the local one
 * (the request goes back into the full variant's queue, keeping the lite answer as a
 * fallback) or a remote `loom serve` over HTTP (a small pool of threads with one keep-alive
 * connection each, every call bounded by a timeout and the request's deadline). When the full
 * answer does not come, the lite one stands, marked ("lite>full-failed",
 * "lite>remote-failed", with the reason as the result's message).
 */
#include "server_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct remote_job {
    struct remote_job *next;
    loom_server *s;
    sv_req *r;
} remote_job;

struct sv_remote {
    char host[256], port[16], path[600];
    char url[600];
    double timeout_s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    remote_job *head, *tail;
    int stop;
    pthread_t *threads;
    uint32_t n_threads;
};

/* ---- the escalation ---------------------------------------------------------------------- */

int sv_cascade_escalate(loom_server *s, sv_req *r, loom_tensor **outs)
{
    sv_model *lite = r->model, *p = lite->primary ? lite->primary : lite;
    sv_qos *q = p->qos;
    r->stage = SV_STAGE_FINAL;
    r->path = "lite";
    if (!q)
        return 0;
    const loom_tensor *t = outs[q->conf_output];
    int64_t dims[LOOM_MAX_RANK];
    loom_tensor_dims(t, dims);
    size_t n = loom_tensor_nbytes(t) / sizeof(float);
    int64_t rows = lite->batch_axis == 0 && loom_tensor_rank(t) > 1 ? dims[0] : 1;
    int64_t classes = rows > 0 ? (int64_t)n / rows : 0;
    r->confidence = classes > 0 ? sv_confidence(loom_tensor_data(t), rows, classes, q->margin)
                                : 0;
    if (r->confidence >= q->threshold)
        return 0;
    sv_model *full = p->var[SV_FULL];
    loom_tensor **fb = malloc(lite->n_out * sizeof *fb);
    if (!fb)
        return 0; /* out of memory: the lite answer stands */
    memcpy(fb, outs, lite->n_out * sizeof *fb);
    r->fallback = fb;
    sv_qos_count(p, -1, 1, 0);
    if (!q->remote && full) {
        r->stage = SV_STAGE_ESCALATED;
        r->path = "lite>full";
        r->model = full;
        sv_requeue(s, r);
        return 1;
    }
    sv_remote *rm = q->remote;
    remote_job *j = calloc(1, sizeof *j);
    if (!j) {
        r->fallback = NULL;
        free(fb);
        return 0;
    }
    j->s = s;
    j->r = r;
    r->path = "lite>remote";
    pthread_mutex_lock(&rm->mu);
    if (rm->tail)
        rm->tail->next = j;
    else
        rm->head = j;
    rm->tail = j;
    pthread_cond_signal(&rm->cv);
    pthread_mutex_unlock(&rm->mu);
    return 1;
}

/* ---- the remote call --------------------------------------------------------------------- */

/* The request as a KServe v2 binary-tensor body asking for the full variant's binary outputs. */
static char *remote_body(const sv_req *r, size_t *len, size_t *header_len)
{
    const sv_model *m = r->model;
    json_t *root = json_object(), *ins = json_array();
    json_object_set_new(root, "id", json_string(r->id ? r->id : ""));
    json_object_set_new(root, "parameters",
                        json_pack("{s:b,s:s}", "binary_data_output", 1, "variant", "full"));
    size_t data = 0;
    for (size_t k = 0; k < m->n_in; k++) {
        const loom_tensor *t = r->inputs[k];
        int64_t dims[LOOM_MAX_RANK];
        loom_tensor_dims(t, dims);
        json_t *shape = json_array();
        for (uint32_t d = 0; d < loom_tensor_rank(t); d++)
            json_array_append_new(shape, json_integer(dims[d]));
        const char *dt = sv_kserve_dtype_name(loom_tensor_dtype(t));
        json_array_append_new(ins, json_pack("{s:s,s:s,s:o,s:{s:I}}", "name", m->in[k].name,
                                             "datatype", dt ? dt : "FP32", "shape", shape,
                                             "parameters", "binary_data_size",
                                             (json_int_t)loom_tensor_nbytes(t)));
        data += loom_tensor_nbytes(t);
    }
    json_object_set_new(root, "inputs", ins);
    char *head = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!head)
        return NULL;
    size_t hl = strlen(head);
    char *body = malloc(hl + data + 1);
    if (body) {
        memcpy(body, head, hl);
        size_t off = hl;
        for (size_t k = 0; k < m->n_in; k++) {
            memcpy(body + off, loom_tensor_data(r->inputs[k]), loom_tensor_nbytes(r->inputs[k]));
            off += loom_tensor_nbytes(r->inputs[k]);
        }
        *len = off;
        *header_len = hl;
    }
    free(head);
    return body;
}

/* Parse the remote's answer into OUTS (model order); 0, or -1 with ERR. */
static int remote_outputs(const sv_model *m, const sv_http_reply *rp, loom_tensor **outs,
                          char *err, size_t err_len)
{
    size_t hl = rp->header_len ? rp->header_len : rp->len;
    if (hl > rp->len)
        return snprintf(err, err_len, "a bad Inference-Header-Content-Length"), -1;
    json_error_t je;
    json_t *root = json_loadb(rp->body, hl, 0, &je);
    json_t *arr = root ? json_object_get(root, "outputs") : NULL;
    if (!json_is_array(arr)) {
        json_decref(root);
        return snprintf(err, err_len, "the answer has no outputs"), -1;
    }
    for (size_t k = 0; k < m->n_out; k++)
        outs[k] = NULL;
    size_t off = hl;
    int ok = 1;
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        const char *dt = json_string_value(json_object_get(o, "datatype"));
        json_t *shape = json_object_get(o, "shape");
        json_int_t size = json_integer_value(
            json_object_get(json_object_get(o, "parameters"), "binary_data_size"));
        size_t k;
        for (k = 0; name && k < m->n_out && strcmp(m->out[k].name, name); k++)
            ;
        if (!name || k == m->n_out || outs[k] || !dt ||
            sv_kserve_dtype(dt) != m->out[k].dtype || !json_is_array(shape) ||
            json_array_size(shape) != m->out[k].rank || size <= 0 ||
            off + (size_t)size > rp->len) {
            snprintf(err, err_len, "output %zu of the answer does not fit the model", i);
            ok = 0;
            break;
        }
        int64_t dims[LOOM_MAX_RANK];
        for (uint32_t d = 0; d < m->out[k].rank; d++)
            dims[d] = json_integer_value(json_array_get(shape, d));
        if (loom_tensor_create(m->out[k].dtype, m->out[k].rank, dims, &outs[k]) != LOOM_OK ||
            loom_tensor_nbytes(outs[k]) != (size_t)size) {
            snprintf(err, err_len, "output '%s' of the answer has a bad shape or size", name);
            ok = 0;
            break;
        }
        memcpy(loom_tensor_data(outs[k]), rp->body + off, (size_t)size);
        off += (size_t)size;
    }
    for (size_t k = 0; ok && k < m->n_out; k++)
        if (!outs[k]) {
            snprintf(err, err_len, "the answer lacks output '%s'", m->out[k].name);
            ok = 0;
        }
    json_decref(root);
    if (!ok) {
        for (size_t k = 0; k < m->n_out; k++)
            loom_tensor_destroy(outs[k]);
        return -1;
    }
    return 0;
}

static void remote_one(sv_remote *rm, sv_http_conn *c, loom_server *s, sv_req *r)
{
    const sv_model *m = r->model;
    char err[1400] = "";
    double t0 = sv_now();
    double budget = rm->timeout_s;
    if (isfinite(r->deadline) && r->deadline - t0 < budget)
        budget = r->deadline - t0;
    loom_tensor **outs = calloc(m->n_out, sizeof *outs);
    int ok = 0;
    if (!outs) {
        snprintf(err, sizeof err, "out of memory");
    } else if (budget <= 0) {
        snprintf(err, sizeof err, "remote %s: the deadline passed before it could be asked",
                 rm->url);
    } else {
        size_t len = 0, hl = 0;
        char *body = remote_body(r, &len, &hl);
        sv_http_reply rp = {.want_body = 1};
        if (!body) {
            snprintf(err, sizeof err, "out of memory");
        } else if (sv_http_request(c, "POST", rm->path, body, len, hl, budget, &rp) != 0) {
            snprintf(err, sizeof err, "remote %s: no answer within %.3g s (down, slow or "
                     "unreachable)", rm->url, budget);
        } else if (rp.status != 200) {
            snprintf(err, sizeof err, "remote %s answered HTTP %d: %.200s", rm->url, rp.status,
                     rp.body ? rp.body : "");
        } else if (remote_outputs(m, &rp, outs, err, sizeof err) == 0) {
            ok = 1;
        }
        free(rp.body);
        free(body);
    }
    figures f = {.run_s = sv_now() - t0, .devices = rm->url};
    if (ok) {
        r->path = "lite>remote";
        sv_answer(s, r, LOOM_SERVE_OK, NULL, outs, &f);
    } else {
        r->path = "lite>remote-failed";
        free(r->note);
        r->note = sv_strdup(err);
        loom_tensor **fb = r->fallback;
        r->fallback = NULL;
        sv_answer(s, r, LOOM_SERVE_OK, NULL, fb, &f);
        free(fb);
    }
    free(outs);
}

static void *remote_main(void *arg)
{
    sv_remote *rm = arg;
    pthread_setname_np(pthread_self(), "loom-remote");
    sv_http_conn *c = malloc(sizeof *c);
    if (c)
        sv_http_init(c, rm->host, rm->port);
    pthread_mutex_lock(&rm->mu);
    for (;;) {
        while (!rm->head && !rm->stop)
            pthread_cond_wait(&rm->cv, &rm->mu);
        if (!rm->head)
            break;
        remote_job *j = rm->head;
        rm->head = j->next;
        if (!rm->head)
            rm->tail = NULL;
        pthread_mutex_unlock(&rm->mu);
        if (c) {
            remote_one(rm, c, j->s, j->r);
        } else {
            sv_req *r = j->r;
            loom_tensor **fb = r->fallback;
            r->fallback = NULL;
            r->path = "lite>remote-failed";
            figures f = {0};
            sv_answer(j->s, r, LOOM_SERVE_OK, NULL, fb, &f);
            free(fb);
        }
        free(j);
        pthread_mutex_lock(&rm->mu);
    }
    pthread_mutex_unlock(&rm->mu);
    if (c) {
        sv_http_close(c);
        free(c);
    }
    return NULL;
}

sv_remote *sv_remote_create(const char *url, double timeout_s, uint32_t connections,
                            const sv_model *m, char *err, size_t err_len)
{
    (void)m;
    sv_remote *rm = calloc(1, sizeof *rm);
    if (!rm) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (sv_http_parse_url(url, rm->host, sizeof rm->host, rm->port, sizeof rm->port, rm->path,
                          sizeof rm->path) != 0 ||
        strlen(rm->path) + 7 >= sizeof rm->path) {
        snprintf(err, err_len, "cascade URL '%s' is not http://HOST:PORT/v2/models/NAME", url);
        free(rm);
        return NULL;
    }
    if (!(timeout_s > 0 && timeout_s <= 3600) || connections > 256) {
        snprintf(err, err_len, "cascade timeout %g s or %u connections out of range", timeout_s,
                 connections);
        free(rm);
        return NULL;
    }
    /* The infer endpoint of the model the URL names. */
    size_t pl = strlen(rm->path);
    while (pl > 1 && rm->path[pl - 1] == '/')
        rm->path[--pl] = '\0';
    if (pl < 6 || strcmp(rm->path + pl - 6, "/infer"))
        snprintf(rm->path + pl, sizeof rm->path - pl, "/infer");
    snprintf(rm->url, sizeof rm->url, "%s", url);
    rm->timeout_s = timeout_s;
    pthread_mutex_init(&rm->mu, NULL);
    pthread_cond_init(&rm->cv, NULL);
    rm->threads = calloc(connections, sizeof *rm->threads);
    for (uint32_t k = 0; rm->threads && k < connections; k++) {
        if (pthread_create(&rm->threads[k], NULL, remote_main, rm) != 0)
            break;
        rm->n_threads++;
    }
    if (rm->n_threads == 0) {
        snprintf(err, err_len, "cannot start the cascade's threads");
        sv_remote_destroy(rm);
        return NULL;
    }
    return rm;
}

void sv_remote_destroy(sv_remote *rm)
{
    if (!rm)
        return;
    pthread_mutex_lock(&rm->mu);
    rm->stop = 1;
    pthread_cond_broadcast(&rm->cv);
    pthread_mutex_unlock(&rm->mu);
    for (uint32_t k = 0; k < rm->n_threads; k++)
        pthread_join(rm->threads[k], NULL);
    free(rm->threads);
    pthread_mutex_destroy(&rm->mu);
    pthread_cond_destroy(&rm->cv);
    free(rm);
}
