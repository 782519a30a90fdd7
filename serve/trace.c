/*
 * The serving trace: a Chrome trace-event file (the JSON array format that chrome://tracing and
 * Perfetto open) written while the server runs. Each batch is a complete event on the track of
 * the worker that ran it; each request an async span from its arrival to its answer, with its
 * variant, cascade path, figures and the QoS decision's inputs; each QoS switch an instant
 * event. Lines are appended under one lock and flushed by stdio; the array is closed when the
 * server stops (a file cut short by a crash still opens: the format allows a missing "]").
 */
#include "server_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sv_trace {
    uint64_t serial;         /* this trace among all opened in the process */
    FILE *f;
    pthread_mutex_t mu;
    double t0;               /* sv_now() when the trace began: ts 0 */
    uint64_t next_id;        /* async span ids */
    uint32_t next_tid;       /* tracks handed to threads */
};

/* Each thread that writes gets its own track (tid), named at first use. */
static uint64_t trace_serials;
static _Thread_local uint64_t tls_serial;
static _Thread_local uint32_t tls_tid;

/* S as a JSON string body into F: quotes, backslashes and control bytes escaped. */
static void put_escaped(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
}

static double us(const sv_trace *t, double when)
{
    return (when - t->t0) * 1e6;
}

/* Under T->mu: the calling thread's track, announced with its NAME on first use. */
static uint32_t track(sv_trace *t, const char *name)
{
    if (tls_serial != t->serial) {
        tls_serial = t->serial;
        tls_tid = ++t->next_tid;
        fprintf(t->f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%" PRIu32
                ",\"args\":{\"name\":\"%s %" PRIu32 "\"}},\n", tls_tid, name, tls_tid);
    }
    return tls_tid;
}

loom_status sv_trace_open(const char *path, sv_trace **out)
{
    *out = NULL;
    sv_trace *t = calloc(1, sizeof *t);
    if (!t)
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    t->f = fopen(path, "w");
    if (!t->f) {
        free(t);
        return sv_error(LOOM_ERR_IO, "serving trace '%s': cannot create it", path);
    }
    pthread_mutex_init(&t->mu, NULL);
    t->serial = __atomic_add_fetch(&trace_serials, 1, __ATOMIC_RELAXED);
    t->t0 = sv_now();
    fputs("[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":\"loom "
          "serve\"}},\n", t->f);
    *out = t;
    return LOOM_OK;
}

loom_status sv_trace_close(sv_trace *t)
{
    if (!t)
        return LOOM_OK;
    /* A last event without a trailing comma closes the array. */
    fprintf(t->f, "{\"name\":\"stop\",\"ph\":\"i\",\"s\":\"g\",\"pid\":1,\"tid\":0,"
            "\"ts\":%.3f}\n]\n", us(t, sv_now()));
    int bad = ferror(t->f);
    bad |= fclose(t->f) != 0;
    pthread_mutex_destroy(&t->mu);
    free(t);
    return bad ? sv_error(LOOM_ERR_IO, "serving trace: write failed") : LOOM_OK;
}

void sv_trace_batch(sv_trace *t, const sv_model *m, double start, double end, uint32_t rows,
                    uint32_t size, size_t requests, const char *devices, int ok)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    uint32_t tid = track(t, "worker");
    fprintf(t->f, "{\"name\":\"");
    put_escaped(t->f, m->name);
    fprintf(t->f, " b%" PRIu32 "\",\"cat\":\"batch\",\"ph\":\"X\",\"pid\":1,\"tid\":%" PRIu32
            ",\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"model\":\"", size, tid, us(t, start),
            (end - start) * 1e6);
    put_escaped(t->f, m->name);
    fprintf(t->f, "\",\"variant\":\"%s\",\"rows\":%" PRIu32 ",\"batch_size\":%" PRIu32
            ",\"requests\":%zu,\"devices\":\"", m->variant ? "lite" : "full", rows, size,
            requests);
    put_escaped(t->f, devices);
    fprintf(t->f, "\",\"ok\":%s}},\n", ok ? "true" : "false");
    pthread_mutex_unlock(&t->mu);
}

void sv_trace_request(sv_trace *t, const sv_req *r, const loom_serve_result *res, double now)
{
    if (!t || !res)
        return;
    const sv_model *m = r->model;
    pthread_mutex_lock(&t->mu);
    uint64_t id = ++t->next_id;
    fprintf(t->f, "{\"name\":\"request\",\"cat\":\"request\",\"ph\":\"b\",\"pid\":1,\"tid\":0,"
            "\"id\":%" PRIu64 ",\"ts\":%.3f},\n", id, us(t, r->t_submit));
    fprintf(t->f, "{\"name\":\"request\",\"cat\":\"request\",\"ph\":\"e\",\"pid\":1,\"tid\":0,"
            "\"id\":%" PRIu64 ",\"ts\":%.3f,\"args\":{\"id\":\"", id, us(t, now));
    put_escaped(t->f, r->id);
    fputs("\",\"model\":\"", t->f);
    put_escaped(t->f, m->primary ? m->primary->name : m->name);
    fprintf(t->f, "\",\"status\":\"%s\",\"variant\":\"%s\",\"path\":\"",
            loom_serve_code_name(res->code), res->variant ? res->variant : "");
    put_escaped(t->f, res->path);
    fprintf(t->f, "\",\"rows\":%" PRIu32 ",\"queue_ms\":%.3f,\"run_ms\":%.3f,\"batch_size\":%"
            PRIu32 ",\"cache_hit\":%s", r->rows, res->queue_s * 1e3, res->run_s * 1e3,
            res->batch_rows, res->cache_hit ? "true" : "false");
    if (res->confidence >= 0)
        fprintf(t->f, ",\"confidence\":%.6g", res->confidence);
    /* The QoS decision's inputs: already a JSON object (sv_qos_json). */
    if (r->qos && r->qos[0] == '{')
        fprintf(t->f, ",\"qos\":%s", r->qos);
    fputs("}},\n", t->f);
    pthread_mutex_unlock(&t->mu);
}

void sv_trace_switch(sv_trace *t, const char *model, double now, const char *decision)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    fputs("{\"name\":\"qos switch\",\"cat\":\"qos\",\"ph\":\"i\",\"s\":\"g\",\"pid\":1,"
          "\"tid\":0,", t->f);
    fprintf(t->f, "\"ts\":%.3f,\"args\":{\"model\":\"", us(t, now));
    put_escaped(t->f, model);
    fputs("\"", t->f);
    if (decision && decision[0] == '{')
        fprintf(t->f, ",\"decision\":%s", decision);
    fputs("}},\n", t->f);
    pthread_mutex_unlock(&t->mu);
}
