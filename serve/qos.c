/*
 * Variants and automatic QoS switching: which variant (full or lite) answers a request, the
 * switch's decision with hysteresis (a pure function over a view of the full variant's queue,
 * so tests drive it with a fake clock and a fake cost model), the confidence of class scores
 * for cascades, and a model's QoS settings.
 */
#include "server_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the decision ------------------------------------------------------------------------ */

sv_qos_decision sv_qos_decide(sv_qos_state *st, const sv_qos_params *p, const sv_qos_view *v)
{
    sv_qos_decision d = {.lite = st->lite, .predicted_finish = v->now};
    uint32_t mb = v->max_batch ? v->max_batch : 1, w = v->workers ? v->workers : 1;
    if (v->batch_s > 0) {
        /* The work ahead of this request on the full variant, in batches of MAX_BATCH spread
         * over the workers in waves: rows waiting and running plus its own. The last batch
         * may be partial; it takes REST_S unless a full batch runs in the same wave. */
        uint64_t rows = (uint64_t)v->queued_rows + v->running_rows + v->rows;
        uint64_t rem = rows % mb, batches = rows / mb + (rem > 0);
        uint64_t waves = (batches + w - 1) / w;
        uint64_t in_last = batches - (waves ? waves - 1 : 0) * w;
        double rest = v->rest_s > 0 ? v->rest_s : v->batch_s;
        double last = rem == 0 || in_last > 1 ? v->batch_s : rest;
        d.predicted_finish = waves ? v->now + (double)(waves - 1) * v->batch_s + last : v->now;
        d.utilisation = v->arrival_rate * (v->batch_s / mb) / w;
    }
    double budget = v->deadline - v->now;
    if (!(budget > 0))
        budget = 0;
    double late = d.predicted_finish - v->now;
    if (!st->lite) {
        if (late > p->enter * budget) {
            st->lite = 1;
            st->since = v->now;
            st->switches++;
            d.switched = 1;
        }
    } else if (v->now - st->since >= p->min_dwell_s && late <= p->leave * budget &&
               d.utilisation < p->leave_util) {
        st->lite = 0;
        st->since = v->now;
        st->switches++;
        d.switched = 1;
    }
    d.lite = st->lite;
    return d;
}

void sv_qos_json(char *buf, size_t len, const sv_qos_view *v, const sv_qos_decision *d)
{
    snprintf(buf, len, "{\"queued_rows\":%u,\"running_rows\":%u,\"rows\":%u,\"batch_s\":%.6g,"
             "\"rest_s\":%.6g,"
             "\"predicted_finish_s\":%.6g,\"deadline_s\":%.6g,\"utilisation\":%.4g,"
             "\"choice\":\"%s\",\"switched\":%s}", v->queued_rows, v->running_rows, v->rows,
             v->batch_s, v->rest_s, d->predicted_finish - v->now,
             isfinite(v->deadline) ? v->deadline - v->now : -1.0, d->utilisation,
             d->lite ? "lite" : "full", d->switched ? "true" : "false");
}

/* ---- confidence -------------------------------------------------------------------------- */

double sv_confidence(const float *x, int64_t rows, int64_t classes, int margin)
{
    double worst = 1.0;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * classes;
        double sum = 0, mx = -INFINITY;
        int dist = 1;
        for (int64_t c = 0; c < classes; c++) {
            if (!(row[c] >= 0 && row[c] <= 1))
                dist = 0;
            sum += row[c];
            if (row[c] > mx)
                mx = row[c];
        }
        if (fabs(sum - 1.0) > 1e-3)
            dist = 0;
        double p1 = 0, p2 = 0, total = dist ? 1.0 : 0;
        if (!dist)
            for (int64_t c = 0; c < classes; c++)
                total += exp(row[c] - mx);
        for (int64_t c = 0; c < classes; c++) {
            double pc = dist ? row[c] : exp(row[c] - mx) / total;
            if (pc > p1) {
                p2 = p1;
                p1 = pc;
            } else if (pc > p2) {
                p2 = pc;
            }
        }
        double conf = margin ? p1 - p2 : p1;
        if (!(conf >= 0))
            conf = 0; /* NaN scores: not confident */
        if (conf < worst)
            worst = conf;
    }
    return worst;
}

/* ---- routing ----------------------------------------------------------------------------- */

static int mode_of(const char *s)
{
    if (!s || !*s || !strcmp(s, "auto"))
        return SV_MODE_AUTO;
    if (!strcmp(s, "full"))
        return SV_MODE_FULL;
    if (!strcmp(s, "lite"))
        return SV_MODE_LITE;
    if (!strcmp(s, "cascade"))
        return SV_MODE_CASCADE;
    return -1;
}

sv_model *sv_route(loom_server *s, sv_model *m, const char *variant, sv_req *r, double now)
{
    int mode = mode_of(variant);
    if (mode < 0) {
        sv_refuse(LOOM_SERVE_BAD_REQUEST, "unknown variant '%s' (full, lite, auto or cascade)",
                  variant);
        return NULL;
    }
    sv_qos *q = m->qos;
    if (mode == SV_MODE_AUTO)
        mode = q ? q->mode : SV_MODE_AUTO;
    sv_model *full = m->var[SV_FULL], *lite = m->var[SV_LITE];
    if (q) {
        /* Arrivals at the model, all variants together. */
        if (q->last_arrival > 0) {
            double gap = now - q->last_arrival;
            if (gap > 1.0 || q->mean_gap <= 0) {
                q->mean_gap = gap > 1.0 ? 0 : gap;
                q->mean_rows = r->rows;
            } else {
                q->mean_gap += 0.1 * (gap - q->mean_gap);
                q->mean_rows += 0.1 * (r->rows - q->mean_rows);
            }
        }
        q->last_arrival = now;
    }
    switch (mode) {
    case SV_MODE_FULL:
        if (!full) {
            sv_refuse(LOOM_SERVE_BAD_REQUEST, "model '%s' has no full variant here", m->name);
            return NULL;
        }
        return full;
    case SV_MODE_LITE:
        if (!lite) {
            sv_refuse(LOOM_SERVE_BAD_REQUEST, "model '%s' has no lite variant", m->name);
            return NULL;
        }
        return lite;
    case SV_MODE_CASCADE:
        if (!lite || !q || (!full && !q->remote)) {
            sv_refuse(LOOM_SERVE_BAD_REQUEST, "model '%s' has no cascade (it needs a lite "
                      "variant and a threshold: loom_server_set_qos)", m->name);
            return NULL;
        }
        r->stage = SV_STAGE_LITE_FIRST;
        return lite;
    default:
        break;
    }
    /* Auto: without QoS settings or a lite variant, the only variant there is. */
    if (!q || !lite || !full)
        return full ? full : lite;
    sv_qos_view v = {.now = now, .deadline = r->batch_deadline, .rows = r->rows,
                     .running_rows = full->running_rows, .workers = s->lanes,
                     .max_batch = full->max_batch,
                     .batch_s = sv_estimate(&full->est, full->est.n_sizes - 1)};
    for (sv_req *x = full->head; x; x = x->next)
        v.queued_rows += x->rows;
    uint32_t rem = (v.queued_rows + v.running_rows + v.rows) % (v.max_batch ? v.max_batch : 1);
    if (rem)
        v.rest_s = sv_estimate(&full->est, sv_size_index(&full->est, rem));
    if (q->mean_gap > 0)
        v.arrival_rate = q->mean_rows / q->mean_gap;
    sv_qos_decision d = sv_qos_decide(&q->st, &q->p, &v);
    char buf[384];
    sv_qos_json(buf, sizeof buf, &v, &d);
    if (d.switched)
        sv_trace_switch(s->trace, m->name, now, buf);
    free(r->qos);
    r->qos = sv_strdup(buf);
    return d.lite ? lite : full;
}

void sv_qos_count(sv_model *m, int variant, int escalated, int fallback)
{
    sv_model *p = m->primary ? m->primary : m;
    if (!p->qos)
        return;
    pthread_mutex_lock(&p->stats_mu);
    if (variant == SV_FULL || variant == SV_LITE)
        p->qos->answered[variant]++;
    p->qos->escalated += (uint64_t)escalated;
    p->qos->fallbacks += (uint64_t)fallback;
    pthread_mutex_unlock(&p->stats_mu);
}

/* ---- settings ---------------------------------------------------------------------------- */

loom_status loom_server_set_qos(loom_server *s, const char *name, const char *version,
                                const loom_serve_qos_options *o)
{
    sv_model *m = s ? sv_model_lookup(s, name, version) : NULL;
    if (!m)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "no model '%s'", name ? name : "");
    if (!o || o->struct_size < offsetof(loom_serve_qos_options, remote_connections))
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': no QoS options or a small "
                        "struct_size", m->name);
    loom_serve_qos_options d = {.struct_size = sizeof d};
    memcpy(&d, o, o->struct_size < sizeof d ? o->struct_size : sizeof d);
    int mode = mode_of(d.mode);
    if (mode < 0)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': unknown QoS mode '%s' (auto, "
                        "cascade, full or lite)", m->name, d.mode);
    sv_model *full = m->var[SV_FULL], *lite = m->var[SV_LITE];
    double enter = d.enter ? d.enter : 1.0, leave = d.leave ? d.leave : 0.5;
    double util = d.leave_util ? d.leave_util : 0.8;
    double dwell = d.min_dwell_s ? d.min_dwell_s : 0.25;
    if (!(enter > 0 && enter <= 100) || !(leave > 0 && leave <= enter) ||
        !(util > 0 && util <= 10) || !(dwell >= 0 && dwell <= 3600))
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': QoS ratios out of range (0 < "
                        "leave <= enter, leave_util > 0, min_dwell_s >= 0)", m->name);
    if (!(d.threshold >= 0 && d.threshold <= 1))
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': cascade threshold %g is not in "
                        "[0, 1]", m->name, d.threshold);
    if ((mode == SV_MODE_AUTO || mode == SV_MODE_CASCADE || mode == SV_MODE_LITE) && !lite)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': mode '%s' needs a lite variant",
                        m->name, d.mode ? d.mode : "auto");
    if (mode == SV_MODE_AUTO && !full)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': mode 'auto' needs a local full "
                        "variant", m->name);
    if (mode == SV_MODE_FULL && !full)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': mode 'full' needs a full "
                        "variant", m->name);
    if (mode == SV_MODE_CASCADE && !full && !d.remote_url)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': a cascade needs a full variant "
                        "or a remote URL", m->name);
    int margin = 0;
    if (d.confidence && strcmp(d.confidence, "max_prob")) {
        if (strcmp(d.confidence, "margin"))
            return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': unknown confidence '%s' "
                            "(max_prob or margin)", m->name, d.confidence);
        margin = 1;
    }
    uint32_t conf = 0;
    const sv_model *cm = lite ? lite : m;
    if (d.confidence_output) {
        for (conf = 0; conf < cm->n_out && strcmp(cm->out[conf].name, d.confidence_output);
             conf++)
            ;
        if (conf == cm->n_out)
            return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': no output named '%s' for "
                            "the confidence", m->name, d.confidence_output);
    }
    if (cm->out[conf].dtype != LOOM_DTYPE_F32)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': confidence output '%s' is %s, "
                        "not float32", m->name, cm->out[conf].name,
                        loom_dtype_name(cm->out[conf].dtype));
    sv_qos *q = calloc(1, sizeof *q);
    if (!q)
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    q->mode = mode;
    q->p = (sv_qos_params){enter, leave, util, dwell};
    q->conf_output = conf;
    q->margin = margin;
    q->threshold = d.threshold;
    if (d.remote_url) {
        char err[512];
        q->remote = sv_remote_create(d.remote_url, d.remote_timeout_s ? d.remote_timeout_s : 1.0,
                                     d.remote_connections ? d.remote_connections : 4, cm, err,
                                     sizeof err);
        if (!q->remote) {
            free(q);
            return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': %s", m->name, err);
        }
    }
    pthread_mutex_lock(&s->mu);
    sv_qos *old = m->qos;
    int busy = old != NULL;
    if (!busy)
        m->qos = q;
    pthread_mutex_unlock(&s->mu);
    if (busy) {
        sv_remote_destroy(q->remote);
        free(q);
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "model '%s': QoS settings are already set",
                        m->name);
    }
    return LOOM_OK;
}
