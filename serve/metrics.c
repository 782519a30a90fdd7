/*
 * Statistics per model and the Prometheus text exposition of the metrics.
 */
#include "server_internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>

/* ---- statistics and metrics -------------------------------------------------------------- */

loom_status loom_server_model_stats(const loom_server *s, const char *name, const char *version,
                                    loom_serve_model_stats *out)
{
    sv_model *m = sv_model_lookup(s, name, version);
    if (!m || !out || out->struct_size < sizeof *out)
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "no model '%s' or a small struct_size",
                        name ? name : "");
    loom_serve_model_stats r = {.struct_size = sizeof r};
    pthread_mutex_lock(&m->stats_mu);
    r.requests = m->met.accepted;
    r.ok = m->met.answers[LOOM_SERVE_OK];
    r.failed = m->met.answers[LOOM_SERVE_FAILED];
    r.deadline_missed = m->met.answers[LOOM_SERVE_DEADLINE];
    r.rejected = m->met.answers[LOOM_SERVE_BAD_REQUEST] + m->met.answers[LOOM_SERVE_QUEUE_FULL] +
                 m->met.answers[LOOM_SERVE_UNAVAILABLE] + m->met.answers[LOOM_SERVE_NOT_FOUND];
    r.batches = m->met.batches;
    r.rows_run = m->met.rows_run;
    r.rows_padded = m->met.rows_padded;
    if (m->qos) {
        r.answered_full = m->qos->answered[SV_FULL];
        r.answered_lite = m->qos->answered[SV_LITE];
        r.escalated = m->qos->escalated;
        r.edge_fallbacks = m->qos->fallbacks;
    }
    pthread_mutex_unlock(&m->stats_mu);
    if (m->cache) {
        sv_cache_stats cs;
        sv_cache_get_stats(m->cache, &cs);
        r.cache_hits = cs.hits;
        r.cache_misses = cs.misses;
        r.cache_evictions = cs.evictions;
        r.cache_coalesced = cs.coalesced;
        r.cache_bytes = cs.bytes;
    }
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    r.queue_depth = m->depth;
    for (int v = 0; v < 2; v++)
        if (m->var[v] && m->var[v] != m)
            r.queue_depth += m->var[v]->depth;
    if (m->qos) {
        r.qos_switches = m->qos->st.switches;
        r.lite_mode = m->qos->st.lite;
    }
    for (uint32_t k = 0; k < 7; k++) {
        uint32_t i = sv_size_index(&m->est, 1u << k);
        r.predicted_run_s[k] = i < m->est.n_sizes && m->est.sizes[i] == (1u << k)
                                   ? sv_estimate(&m->est, i) : 0;
    }
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    *out = r;
    return LOOM_OK;
}

/* A growable string for the metrics text. */
typedef struct strbuf {
    char *p;
    size_t len, cap;
    int failed;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* Label values are escaped as the format asks: backslash, double quote and newline. */
static void sb_label(strbuf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sb_printf(b, "\\%c", *v);
        else if (*v == '\n')
            sb_printf(b, "\\n");
        else
            sb_printf(b, "%c", *v);
    }
}

static void sb_model_labels(strbuf *b, const sv_model *m)
{
    sb_printf(b, "model=\"");
    sb_label(b, m->name);
    sb_printf(b, "\",version=\"");
    sb_label(b, m->version);
    sb_printf(b, "\"");
}

static void sb_hist(strbuf *b, const char *name, const sv_model *m, const sv_hist *h)
{
    uint64_t cum = 0;
    for (uint32_t k = 0; k <= h->n_bounds; k++) {
        cum += h->counts[k];
        sb_printf(b, "%s_bucket{", name);
        sb_model_labels(b, m);
        if (k < h->n_bounds)
            sb_printf(b, ",le=\"%.6g\"} %llu\n", h->bounds[k], (unsigned long long)cum);
        else
            sb_printf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    sb_printf(b, "%s_sum{", name);
    sb_model_labels(b, m);
    sb_printf(b, "} %.17g\n%s_count{", h->sum, name);
    sb_model_labels(b, m);
    sb_printf(b, "} %llu\n", (unsigned long long)h->count);
}

/* What the metrics show of a model's variants and cascade. */
typedef struct qos_snap {
    int on, lite;
    uint64_t answered[2], escalated, fallbacks, switches;
} qos_snap;

static void qos_metrics(strbuf *b, sv_model **ms, const qos_snap *qs, size_t n)
{
    sb_printf(b, "# HELP loom_variant_answers_total Answers by the variant that gave them (models "
                 "with QoS settings).\n# TYPE loom_variant_answers_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int v = 0; qs[i].on && v < 2; v++) {
            sb_printf(b, "loom_variant_answers_total{");
            sb_model_labels(b, ms[i]);
            sb_printf(b, ",variant=\"%s\"} %llu\n", v ? "lite" : "full",
                      (unsigned long long)qs[i].answered[v]);
        }
    struct {
        const char *name, *help, *type;
        size_t off;
    } one[] = {
        {"loom_qos_switches_total", "Automatic switches between the full and lite variants.",
         "counter", offsetof(qos_snap, switches)},
        {"loom_cascade_escalations_total", "Cascade requests sent on to the full variant.",
         "counter", offsetof(qos_snap, escalated)},
        {"loom_cascade_fallbacks_total", "Escalations whose full answer did not come: the lite "
         "answer stood.", "counter", offsetof(qos_snap, fallbacks)},
    };
    for (size_t q = 0; q < sizeof one / sizeof one[0]; q++) {
        sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", one[q].name, one[q].help, one[q].name,
                  one[q].type);
        for (size_t i = 0; i < n; i++) {
            if (!qs[i].on)
                continue;
            uint64_t v;
            memcpy(&v, (const char *)&qs[i] + one[q].off, sizeof v);
            sb_printf(b, "%s{", one[q].name);
            sb_model_labels(b, ms[i]);
            sb_printf(b, "} %llu\n", (unsigned long long)v);
        }
    }
    sb_printf(b, "# HELP loom_qos_lite_mode 1 while automatic switching sends requests to the "
                 "lite variant.\n# TYPE loom_qos_lite_mode gauge\n");
    for (size_t i = 0; i < n; i++) {
        if (!qs[i].on)
            continue;
        sb_printf(b, "loom_qos_lite_mode{");
        sb_model_labels(b, ms[i]);
        sb_printf(b, "} %d\n", qs[i].lite);
    }
}

loom_status loom_server_metrics_text(const loom_server *s, char **out)
{
    *out = NULL;
    strbuf b = {0};
    size_t n = loom_server_model_count(s);
    sv_model **ms = calloc(n ? n : 1, sizeof *ms);
    model_metrics *mm = calloc(n ? n : 1, sizeof *mm);
    sv_cache_stats *cs = calloc(n ? n : 1, sizeof *cs);
    size_t *depth = calloc(n ? n : 1, sizeof *depth);
    qos_snap *qs = calloc(n ? n : 1, sizeof *qs);
    if (!ms || !mm || !cs || !depth || !qs) {
        free(ms);
        free(mm);
        free(cs);
        free(depth);
        free(qs);
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    /* A consistent copy first, then the text without any lock held. */
    for (size_t i = 0; i < n; i++) {
        ms[i] = sv_model_at(s, i);
        pthread_mutex_lock(&ms[i]->stats_mu);
        mm[i] = ms[i]->met;
        if (ms[i]->qos) {
            qs[i].on = 1;
            qs[i].answered[0] = ms[i]->qos->answered[0];
            qs[i].answered[1] = ms[i]->qos->answered[1];
            qs[i].escalated = ms[i]->qos->escalated;
            qs[i].fallbacks = ms[i]->qos->fallbacks;
        }
        pthread_mutex_unlock(&ms[i]->stats_mu);
        if (ms[i]->cache)
            sv_cache_get_stats(ms[i]->cache, &cs[i]);
        pthread_mutex_lock((pthread_mutex_t *)&s->mu);
        depth[i] = ms[i]->depth;
        if (ms[i]->var[SV_LITE] && ms[i]->var[SV_LITE] != ms[i])
            depth[i] += ms[i]->var[SV_LITE]->depth;
        if (ms[i]->qos) {
            qs[i].switches = ms[i]->qos->st.switches;
            qs[i].lite = ms[i]->qos->st.lite;
        }
        pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    }
    sb_printf(&b, "# HELP loom_requests_total Inference requests answered or refused, by model "
                  "and outcome.\n# TYPE loom_requests_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < N_CODES; c++) {
            sb_printf(&b, "loom_requests_total{");
            sb_model_labels(&b, ms[i]);
            sb_printf(&b, ",status=\"%s\"} %llu\n", loom_serve_code_name((loom_serve_code)c),
                      (unsigned long long)mm[i].answers[c]);
        }
    uint64_t unknown;
    pthread_mutex_lock((pthread_mutex_t *)&s->stats_mu);
    unknown = s->refused_unknown;
    pthread_mutex_unlock((pthread_mutex_t *)&s->stats_mu);
    sb_printf(&b, "# HELP loom_unknown_model_requests_total Requests naming a model that is not "
                  "served.\n# TYPE loom_unknown_model_requests_total counter\n"
                  "loom_unknown_model_requests_total %llu\n", (unsigned long long)unknown);
    struct {
        const char *name, *help;
        size_t off;
    } hists[] = {
        {"loom_request_duration_seconds", "Time from submission to answer.",
         offsetof(model_metrics, latency)},
        {"loom_queue_duration_seconds", "Time requests waited before their batch started.",
         offsetof(model_metrics, queue)},
        {"loom_batch_run_duration_seconds", "Run time of each batch.",
         offsetof(model_metrics, run)},
        {"loom_batch_size", "Rows of each batch run (padding included).",
         offsetof(model_metrics, batch)},
    };
    for (size_t h = 0; h < sizeof hists / sizeof hists[0]; h++) {
        sb_printf(&b, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].name, hists[h].help,
                  hists[h].name);
        for (size_t i = 0; i < n; i++)
            sb_hist(&b, hists[h].name, ms[i],
                    (const sv_hist *)((const char *)&mm[i] + hists[h].off));
    }
    struct {
        const char *name, *help, *type;
    } simple[] = {
        {"loom_batches_total", "Batches run.", "counter"},
        {"loom_padding_rows_total", "Rows of padding added to fill a batch size.", "counter"},
        {"loom_cache_hits_total", "Requests answered from the result cache or by an identical "
                                  "request in flight.", "counter"},
        {"loom_cache_misses_total", "Cache lookups that found nothing.", "counter"},
        {"loom_cache_evictions_total", "Results evicted from the cache for room.", "counter"},
        {"loom_cache_bytes", "Bytes of results held by the cache.", "gauge"},
        {"loom_queue_depth", "Requests waiting now.", "gauge"},
    };
    for (size_t q = 0; q < sizeof simple / sizeof simple[0]; q++) {
        sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", simple[q].name, simple[q].help,
                  simple[q].name, simple[q].type);
        for (size_t i = 0; i < n; i++) {
            unsigned long long v = 0;
            switch (q) {
            case 0: v = mm[i].batches; break;
            case 1: v = mm[i].rows_padded; break;
            case 2: v = cs[i].hits; break;
            case 3: v = cs[i].misses; break;
            case 4: v = cs[i].evictions; break;
            case 5: v = cs[i].bytes; break;
            default: v = depth[i]; break;
            }
            sb_printf(&b, "%s{", simple[q].name);
            sb_model_labels(&b, ms[i]);
            sb_printf(&b, "} %llu\n", v);
        }
    }
    qos_metrics(&b, ms, qs, n);
    sb_printf(&b, "# HELP loom_device_busy_seconds_total Seconds devices spent running nodes of "
                  "served batches.\n# TYPE loom_device_busy_seconds_total counter\n");
    pthread_mutex_lock((pthread_mutex_t *)&s->stats_mu);
    for (size_t d = 0; d < s->n_devices; d++) {
        sb_printf(&b, "loom_device_busy_seconds_total{device=\"");
        sb_label(&b, s->device_ids[d]);
        sb_printf(&b, "\"} %.9f\n", s->device_busy_s[d]);
    }
    pthread_mutex_unlock((pthread_mutex_t *)&s->stats_mu);
    free(ms);
    free(mm);
    free(cs);
    free(depth);
    free(qs);
    if (b.failed) {
        free(b.p);
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    /* loom_string_free is free(); the string is handed over as it is. */
    *out = b.p;
    return LOOM_OK;
}

