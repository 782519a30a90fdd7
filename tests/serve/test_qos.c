/*
 * Variants, QoS switching, cascades and the audit trail (issue 20): the switch's decision with
 * a fake clock and a fake cost model (and its hysteresis), confidence measures, cascades in
 * process (local full variant; a remote one behind a second server's HTTP front end; a remote
 * that is down), and the audit chain (edit, delete, reorder, truncate, a chain recomputed
 * without the key, a broken chain refused or continued in a new segment).
 */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <loom/loom.h>
#include <loom/serve.h>

#include <math.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve/audit_journal.h"
#include "serve/server_internal.h"

static loom_runtime *rt;

/* ---- the switch: fake clock, fake cost model --------------------------------------------- */

static sv_qos_view view(double now, uint32_t queued, double batch_s, double rate)
{
    /* Each request may take 50 ms; a batch of 8 rows takes BATCH_S on one of 2 workers. */
    sv_qos_view v = {.now = now, .deadline = now + 0.050, .rows = 1, .queued_rows = queued,
                     .workers = 2, .max_batch = 8, .batch_s = batch_s, .arrival_rate = rate};
    return v;
}

static sv_qos_decision decide(sv_qos_state *st, const sv_qos_params *p, double now,
                              uint32_t queued, double batch_s, double rate)
{
    sv_qos_view v = view(now, queued, batch_s, rate);
    return sv_qos_decide(st, p, &v);
}

static void test_switches_to_lite_when_queued_work_misses_deadlines(void)
{
    sv_qos_params p = {.enter = 1.0, .leave = 0.5, .leave_util = 0.8, .min_dwell_s = 0.25};
    sv_qos_state st = {0};
    /* 15 rows waiting + 1: 2 batches, one wave on 2 workers: 10 ms, well within 50 ms. */
    sv_qos_decision d = decide(&st, &p, 1.0, 15, 0.010, 100);
    CU_ASSERT_EQUAL(d.lite, 0);
    CU_ASSERT_DOUBLE_EQUAL(d.predicted_finish, 1.010, 1e-9);
    /* 95 rows: 12 batches, 6 waves: 60 ms > 50 ms: lite. */
    d = decide(&st, &p, 1.1, 95, 0.010, 1000);
    CU_ASSERT_EQUAL(d.lite, 1);
    CU_ASSERT_EQUAL(d.switched, 1);
    CU_ASSERT_EQUAL(st.switches, 1);
    /* A single row does not wait for a full batch's time: with a batch of 8 predicted at
     * 60 ms (more than the 50 ms budget) but one row at 2 ms, the full variant answers in
     * time and the switch stays on full (it used to predict a full batch's time here). */
    sv_qos_state st3 = {0};
    sv_qos_view one = view(1.0, 0, 0.060, 10);
    one.rest_s = 0.002;
    d = sv_qos_decide(&st3, &p, &one);
    CU_ASSERT_EQUAL(d.lite, 0);
    CU_ASSERT_DOUBLE_EQUAL(d.predicted_finish, 1.002, 1e-9);
    /* 8 + 8 + 3 rows on 2 workers: one wave of two full batches, then the partial one. */
    one.queued_rows = 18;
    d = sv_qos_decide(&st3, &p, &one);
    CU_ASSERT_DOUBLE_EQUAL(d.predicted_finish, 1.062, 1e-9);
    /* 8 + 3 rows: one wave holding a full batch: the full batch's time. */
    one.queued_rows = 10;
    d = sv_qos_decide(&st3, &p, &one);
    CU_ASSERT_DOUBLE_EQUAL(d.predicted_finish, 1.060, 1e-9);
    /* Unknown cost (nothing measured yet): full. */
    sv_qos_state st2 = {0};
    d = decide(&st2, &p, 1.0, 1000, 0, 0);
    CU_ASSERT_EQUAL(d.lite, 0);
}

static void test_switch_back_has_hysteresis(void)
{
    sv_qos_params p = {.enter = 1.0, .leave = 0.5, .leave_util = 0.8, .min_dwell_s = 0.25};
    sv_qos_state st = {0};
    decide(&st, &p, 1.0, 95, 0.010, 1000);
    CU_ASSERT_EQUAL_FATAL(st.lite, 1);
    /* The full queue drained (lite takes the load) but within the dwell time: stays lite. */
    sv_qos_decision d = decide(&st, &p, 1.1, 0, 0.010, 100);
    CU_ASSERT_EQUAL(d.lite, 1);
    /* Past the dwell, queue empty, but arrivals still need 125% of the full variant: lite. */
    d = decide(&st, &p, 1.5, 0, 0.010, 2000);
    CU_ASSERT_EQUAL(d.lite, 1);
    /* Predicted 30 ms: between leave (25 ms) and enter (50 ms): no change either way. */
    d = decide(&st, &p, 1.6, 40, 0.010, 100);
    CU_ASSERT_EQUAL(d.lite, 1);
    /* Load fell: 10 ms predicted, 6% utilisation: back to full. */
    d = decide(&st, &p, 1.7, 3, 0.010, 100);
    CU_ASSERT_EQUAL(d.lite, 0);
    CU_ASSERT_EQUAL(d.switched, 1);
    /* And at 30 ms predicted in full mode it stays full (no flapping in the band). */
    d = decide(&st, &p, 1.8, 40, 0.010, 100);
    CU_ASSERT_EQUAL(d.lite, 0);
    CU_ASSERT_EQUAL(st.switches, 2);
    char buf[384];
    sv_qos_view v = view(2.0, 40, 0.010, 100);
    sv_qos_json(buf, sizeof buf, &v, &d);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"queued_rows\":40"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"deadline_s\":0.05"));
}

static void test_confidence_measures(void)
{
    float probs[2][4] = {{0.7f, 0.2f, 0.05f, 0.05f}, {0.4f, 0.35f, 0.2f, 0.05f}};
    CU_ASSERT_DOUBLE_EQUAL(sv_confidence(probs[0], 1, 4, 0), 0.7, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(sv_confidence(probs[0], 1, 4, 1), 0.5, 1e-6);
    /* The least confident row counts. */
    CU_ASSERT_DOUBLE_EQUAL(sv_confidence(&probs[0][0], 2, 4, 0), 0.4, 1e-6);
    /* Logits are soft-maxed: equal logits, 1/4. */
    float logits[4] = {3, 3, 3, 3};
    CU_ASSERT_DOUBLE_EQUAL(sv_confidence(logits, 1, 4, 0), 0.25, 1e-6);
    float nan[2] = {NAN, 1};
    CU_ASSERT(sv_confidence(nan, 1, 2, 0) <= 0.5);
}

/* ---- cascades in process ----------------------------------------------------------------- */

/* "p" = x * SCALE, x: [batch, 4] float32: lite is the identity, full doubles. */
static loom_graph *build_scaled(int64_t batch, float scale)
{
    loom_graph *g = loom_graph_create("scaled");
    int64_t dims[2] = {batch, 4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dims);
    loom_output(g, loom_mul(g, x, loom_constant_f32(g, scale)), "p");
    if (loom_graph_check(g) != LOOM_OK) {
        loom_graph_destroy(g);
        return NULL;
    }
    return g;
}
static loom_graph *build_lite(int64_t batch, void *user)
{
    (void)user;
    return build_scaled(batch, 1.0f);
}
static loom_graph *build_full(int64_t batch, void *user)
{
    (void)user;
    return build_scaled(batch, 2.0f);
}

static loom_server *make_server(const char *mode, double threshold, const char *remote,
                                int with_full, const loom_server_options *so)
{
    loom_server *s;
    if (loom_server_create(rt, so, &s) != LOOM_OK)
        return NULL;
    loom_serve_model_options full = {.struct_size = sizeof full, .max_batch = 4};
    loom_serve_model_options lite = full;
    lite.variant = "lite";
    if ((with_full && loom_server_add_graph(s, "m", build_full, NULL, &full) != LOOM_OK) ||
        loom_server_add_graph(s, "m", build_lite, NULL, &lite) != LOOM_OK) {
        loom_server_destroy(s);
        return NULL;
    }
    loom_serve_qos_options q = {.struct_size = sizeof q, .mode = mode, .threshold = threshold,
                                .remote_url = remote, .remote_timeout_s = 2.0};
    if (loom_server_set_qos(s, "m", NULL, &q) != LOOM_OK) {
        fprintf(stderr, "set_qos: %s\n", loom_serve_last_error());
        loom_server_destroy(s);
        return NULL;
    }
    return s;
}

static loom_serve_result *ask(loom_server *s, float top, const char *variant, const char *id)
{
    int64_t dims[2] = {1, 4};
    loom_tensor *x;
    loom_tensor_create(LOOM_DTYPE_F32, 2, dims, &x);
    float *d = loom_tensor_data(x);
    d[0] = top;
    d[1] = d[2] = d[3] = (1 - top) / 3;
    const loom_tensor *in[1] = {x};
    loom_serve_request rq = {.struct_size = sizeof rq, .model = "m", .inputs = in, .n_inputs = 1,
                             .variant = variant, .id = id};
    loom_serve_result *r = NULL;
    loom_serve_infer(s, &rq, &r);
    loom_tensor_destroy(x);
    return r;
}

static float first(const loom_serve_result *r)
{
    return r && r->n_outputs ? ((const float *)loom_tensor_data(r->outputs[0]))[0] : -1;
}

/* A switch in a real server reaches the trace with its inputs: a request whose budget (1 us)
 * is below the full variant's predicted run moves "auto" to lite. */
static void test_switch_is_traced_with_its_inputs(void)
{
    char trace[] = "/tmp/loom-qos-trace-XXXXXX";
    int fd = mkstemp(trace);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    loom_server_options so = {.struct_size = sizeof so, .trace_path = trace};
    loom_server *s = make_server("auto", 0.5, NULL, 1, &so);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    loom_serve_result *r = ask(s, 0.9f, "full", "warm"); /* plans made: estimates known */
    CU_ASSERT_STRING_EQUAL(r->variant, "full");
    loom_serve_result_free(r);
    int64_t dims[2] = {1, 4};
    loom_tensor *x;
    loom_tensor_create(LOOM_DTYPE_F32, 2, dims, &x);
    memset(loom_tensor_data(x), 0, 4 * sizeof(float));
    const loom_tensor *in[1] = {x};
    loom_serve_request rq = {.struct_size = sizeof rq, .model = "m", .inputs = in, .n_inputs = 1,
                             .timeout_s = 1e-6, .id = "tight"};
    r = NULL;
    loom_serve_infer(s, &rq, &r);
    loom_tensor_destroy(x);
    CU_ASSERT_PTR_NOT_NULL(r);
    loom_serve_result_free(r);
    loom_server_destroy(s);
    json_error_t je;
    json_t *tr = json_load_file(trace, 0, &je);
    CU_ASSERT_FATAL(json_is_array(tr));
    int switches = 0;
    size_t i;
    json_t *e;
    json_array_foreach(tr, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!name || strcmp(name, "qos switch"))
            continue;
        switches++;
        json_t *d = json_object_get(json_object_get(e, "args"), "decision");
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d, "choice")), "lite");
        CU_ASSERT_TRUE(json_real_value(json_object_get(d, "predicted_finish_s")) >
                       json_number_value(json_object_get(d, "deadline_s")));
        CU_ASSERT_PTR_NOT_NULL(json_object_get(d, "queued_rows"));
    }
    CU_ASSERT_EQUAL(switches, 1);
    json_decref(tr);
    unlink(trace);
}

static void test_variants_are_chosen_per_request(void)
{
    loom_server *s = make_server("full", 0.5, NULL, 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(loom_server_model_count(s), 1); /* the lite variant is not a model */
    loom_serve_result *r = ask(s, 0.9f, NULL, "a");
    CU_ASSERT_STRING_EQUAL(r->variant, "full");
    CU_ASSERT_DOUBLE_EQUAL(first(r), 1.8, 1e-6);
    loom_serve_result_free(r);
    r = ask(s, 0.9f, "lite", "b");
    CU_ASSERT_STRING_EQUAL(r->variant, "lite");
    CU_ASSERT_DOUBLE_EQUAL(first(r), 0.9, 1e-6);
    loom_serve_result_free(r);
    r = ask(s, 0.9f, "fastest", "c");
    CU_ASSERT_EQUAL(r->code, LOOM_SERVE_BAD_REQUEST);
    CU_ASSERT_PTR_NOT_NULL(strstr(r->message, "unknown variant 'fastest'"));
    loom_serve_result_free(r);
    loom_serve_model_stats st = {.struct_size = sizeof st};
    CU_ASSERT_EQUAL(loom_server_model_stats(s, "m", NULL, &st), LOOM_OK);
    CU_ASSERT_EQUAL(st.answered_full, 1);
    CU_ASSERT_EQUAL(st.answered_lite, 1);
    char *text;
    CU_ASSERT_EQUAL_FATAL(loom_server_metrics_text(s, &text), LOOM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "loom_variant_answers_total{model=\"m\",version=\"1\","
                                        "variant=\"lite\"} 1\n"));
    loom_string_free(text);
    loom_server_destroy(s);
}

static void test_bad_qos_settings_are_refused(void)
{
    loom_server *s;
    CU_ASSERT_EQUAL_FATAL(loom_server_create(rt, NULL, &s), LOOM_OK);
    loom_serve_model_options mo = {.struct_size = sizeof mo, .max_batch = 4};
    CU_ASSERT_EQUAL_FATAL(loom_server_add_graph(s, "m", build_full, NULL, &mo), LOOM_OK);
    loom_serve_qos_options q = {.struct_size = sizeof q, .mode = "cascade", .threshold = 0.5};
    CU_ASSERT_EQUAL(loom_server_set_qos(s, "m", NULL, &q), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "needs a lite variant"));
    mo.variant = "medium";
    CU_ASSERT_EQUAL(loom_server_add_graph(s, "m", build_lite, NULL, &mo),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "unknown variant 'medium'"));
    mo.variant = "lite";
    CU_ASSERT_EQUAL_FATAL(loom_server_add_graph(s, "m", build_lite, NULL, &mo), LOOM_OK);
    q.threshold = 1.5;
    CU_ASSERT_EQUAL(loom_server_set_qos(s, "m", NULL, &q), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "threshold 1.5 is not in [0, 1]"));
    q.threshold = 0.5;
    q.confidence_output = "logits";
    CU_ASSERT_EQUAL(loom_server_set_qos(s, "m", NULL, &q), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "no output named 'logits'"));
    q.confidence_output = NULL;
    q.remote_url = "ftp://x";
    CU_ASSERT_EQUAL(loom_server_set_qos(s, "m", NULL, &q), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "ftp://x"));
    loom_server_destroy(s);
}

static void test_local_cascade_escalates_unsure_answers(void)
{
    loom_server *s = make_server("cascade", 0.8, NULL, 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    loom_serve_result *r = ask(s, 0.9f, NULL, "sure");
    CU_ASSERT_EQUAL(r->code, LOOM_SERVE_OK);
    CU_ASSERT_STRING_EQUAL(r->path, "lite");
    CU_ASSERT_STRING_EQUAL(r->variant, "lite");
    CU_ASSERT_DOUBLE_EQUAL(r->confidence, 0.9, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(first(r), 0.9, 1e-6);
    loom_serve_result_free(r);
    r = ask(s, 0.6f, NULL, "unsure");
    CU_ASSERT_EQUAL(r->code, LOOM_SERVE_OK);
    CU_ASSERT_STRING_EQUAL(r->path, "lite>full");
    CU_ASSERT_STRING_EQUAL(r->variant, "full");
    CU_ASSERT_DOUBLE_EQUAL(r->confidence, 0.6, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(first(r), 1.2, 1e-6);
    loom_serve_result_free(r);
    loom_serve_model_stats st = {.struct_size = sizeof st};
    loom_server_model_stats(s, "m", NULL, &st);
    CU_ASSERT_EQUAL(st.escalated, 1);
    CU_ASSERT_EQUAL(st.edge_fallbacks, 0);
    loom_server_destroy(s);
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd); /* nothing listens there now */
    return ntohs(a.sin_port);
}

static void test_remote_cascade_and_remote_down(void)
{
    /* The cloud: the full model alone behind HTTP. */
    loom_server *cloud;
    CU_ASSERT_EQUAL_FATAL(loom_server_create(rt, NULL, &cloud), LOOM_OK);
    loom_serve_model_options mo = {.struct_size = sizeof mo, .max_batch = 4};
    CU_ASSERT_EQUAL_FATAL(loom_server_add_graph(cloud, "m", build_full, NULL, &mo), LOOM_OK);
    loom_serve_http *http;
    loom_serve_http_options ho = {.struct_size = sizeof ho, .port = 0};
    CU_ASSERT_EQUAL_FATAL(loom_serve_http_start(cloud, &ho, &http), LOOM_OK);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/v2/models/m", loom_serve_http_port(http));
    /* The edge: lite only, the full model remote. */
    loom_server *edge = make_server("cascade", 0.8, url, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(edge);
    loom_serve_result *r = ask(edge, 0.6f, NULL, "to-cloud");
    CU_ASSERT_EQUAL(r->code, LOOM_SERVE_OK);
    CU_ASSERT_STRING_EQUAL(r->path, "lite>remote");
    CU_ASSERT_STRING_EQUAL(r->variant, "full");
    CU_ASSERT_DOUBLE_EQUAL(first(r), 1.2, 1e-6);
    loom_serve_result_free(r);
    r = ask(edge, 0.95f, NULL, "edge-sure");
    CU_ASSERT_STRING_EQUAL(r->path, "lite");
    loom_serve_result_free(r);
    loom_server_destroy(edge);
    loom_serve_http_stop(http, 5);
    loom_server_destroy(cloud);

    /* The cloud is down: the edge answer stands, marked, and the edge keeps serving. */
    snprintf(url, sizeof url, "http://127.0.0.1:%u/v2/models/m", free_port());
    edge = make_server("cascade", 0.8, url, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(edge);
    for (int k = 0; k < 2; k++) {
        r = ask(edge, 0.6f, NULL, "cloud-down");
        CU_ASSERT_EQUAL(r->code, LOOM_SERVE_OK);
        CU_ASSERT_STRING_EQUAL(r->path, "lite>remote-failed");
        CU_ASSERT_STRING_EQUAL(r->variant, "lite");
        CU_ASSERT_PTR_NOT_NULL(strstr(r->message, "no answer within"));
        CU_ASSERT_DOUBLE_EQUAL(first(r), 0.6, 1e-6);
        loom_serve_result_free(r);
    }
    loom_serve_model_stats st = {.struct_size = sizeof st};
    loom_server_model_stats(edge, "m", NULL, &st);
    CU_ASSERT_EQUAL(st.edge_fallbacks, 2);
    loom_server_destroy(edge);
}

/* ---- the audit trail --------------------------------------------------------------------- */

static char tmpdir[256];

static void audit_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", tmpdir, name);
}

/* A database of N answered requests (ids r0..), sealed with KEY_PATH (may be NULL). */
static int make_db(const char *db, const char *key_path, int n)
{
    loom_server_options so = {.struct_size = sizeof so, .audit_path = db,
                              .audit_key_path = key_path};
    loom_server *s = make_server("cascade", 0.8, NULL, 1, &so);
    if (!s)
        return -1;
    for (int k = 0; k < n; k++) {
        char id[16];
        snprintf(id, sizeof id, "r%d", k);
        loom_serve_result *r = ask(s, k % 2 ? 0.6f : 0.9f, NULL, id);
        if (!r || r->code != LOOM_SERVE_OK)
            return -1;
        loom_serve_result_free(r);
    }
    loom_server_destroy(s);
    return 0;
}

static void sql(const char *db, const char *stmt)
{
    sqlite3 *h;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(db, &h), SQLITE_OK);
    char *err = NULL;
    CU_ASSERT_EQUAL(sqlite3_exec(h, stmt, NULL, NULL, &err), SQLITE_OK);
    if (err)
        fprintf(stderr, "sql: %s\n", err);
    sqlite3_free(err);
    sqlite3_close(h);
}

static int verify(const char *db, const char *key, uint64_t *count, char *msg)
{
    return loom_audit_verify(db, key, count, msg, 1024);
}

static void test_audit_chain_detects_edits_deletes_reorders(void)
{
    char db[512], msg[1024];
    uint64_t n;
    audit_path(db, sizeof db, "chain.db");
    CU_ASSERT_EQUAL_FATAL(make_db(db, NULL, 6), 0);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 0);
    CU_ASSERT_EQUAL(n, 6);
    /* Every record says what answered it. */
    FILE *f = tmpfile();
    CU_ASSERT_EQUAL(loom_audit_query(db, "m", 0, "r1", f, msg, sizeof msg), 0);
    rewind(f);
    char line[4096] = "";
    CU_ASSERT_PTR_NOT_NULL(fgets(line, sizeof line, f));
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"path\":\"lite>full\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"input_sha256\":\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"plan\":\"b1-"));

    sql(db, "UPDATE audit SET status = 'failed' WHERE seq = 3");
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "record 3: edited"));
    CU_ASSERT_EQUAL(n, 2);

    audit_path(db, sizeof db, "delete.db");
    CU_ASSERT_EQUAL_FATAL(make_db(db, NULL, 6), 0);
    sql(db, "DELETE FROM audit WHERE seq = 3");
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "record 4: expected record 3"));

    audit_path(db, sizeof db, "reorder.db");
    CU_ASSERT_EQUAL_FATAL(make_db(db, NULL, 6), 0);
    sql(db, "UPDATE audit SET seq = -2 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3;"
            "UPDATE audit SET seq = 3 WHERE seq = -2");
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "record 2:"));

    audit_path(db, sizeof db, "truncate.db");
    CU_ASSERT_EQUAL_FATAL(make_db(db, NULL, 6), 0);
    sql(db, "DELETE FROM audit WHERE seq = 6");
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "records at the end were deleted"));
}

static void test_audit_key_detects_a_recomputed_chain(void)
{
    char db[512], key[512], wrong[512], msg[1024];
    uint64_t n;
    audit_path(db, sizeof db, "keyed.db");
    audit_path(key, sizeof key, "key");
    audit_path(wrong, sizeof wrong, "wrong-key");
    FILE *f = fopen(key, "wb");
    fputs("the real secret", f);
    fclose(f);
    f = fopen(wrong, "wb");
    fputs("a guess", f);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(make_db(db, key, 4), 0);
    CU_ASSERT_EQUAL(verify(db, key, &n, msg), 0);
    CU_ASSERT_EQUAL(n, 4);
    /* An editor who knows the format but not the key recomputes every hash (and MAC, with
     * another key) after changing record 2: the chain holds, the MACs do not. */
    sql(db, "UPDATE audit SET status = 'deadline' WHERE seq = 2");
    CU_ASSERT_EQUAL_FATAL(sv_audit_reseal(db, wrong), 0);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 0); /* without the key it looks fine */
    CU_ASSERT_EQUAL(verify(db, key, &n, msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "record 1: its MAC does not match"));
}

static void test_broken_chain_refused_unless_new_segment(void)
{
    char db[512], msg[1024];
    uint64_t n;
    audit_path(db, sizeof db, "broken.db");
    CU_ASSERT_EQUAL_FATAL(make_db(db, NULL, 3), 0);
    sql(db, "UPDATE audit SET request_id = 'forged' WHERE seq = 2");
    loom_server_options so = {.struct_size = sizeof so, .audit_path = db};
    loom_server *s;
    CU_ASSERT_EQUAL(loom_server_create(rt, &so, &s), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "record 2: edited"));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "new segment"));
    so.audit_new_segment = 1;
    s = make_server("full", 0.5, NULL, 1, &so);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    loom_serve_result_free(ask(s, 0.9f, NULL, "after"));
    loom_server_destroy(s);
    /* The break stays reported; the new segment verifies, so the server appends again. */
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "record 2: edited"));
    so.audit_new_segment = 0;
    s = make_server("full", 0.5, NULL, 1, &so);
    CU_ASSERT_PTR_NOT_NULL(s);
    loom_server_destroy(s);
    FILE *f = tmpfile();
    CU_ASSERT_EQUAL(loom_audit_query(db, NULL, 0, NULL, f, msg, sizeof msg), 0);
    rewind(f);
    char line[4096];
    int segments = 0, lines = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        segments += strstr(line, "\"kind\":\"segment\"") != NULL;
    }
    fclose(f);
    CU_ASSERT_EQUAL(segments, 1);
    CU_ASSERT_EQUAL(lines, 5);
}

/* ---- the audit journal: crash images, torn and damaged journals, concurrent readers ------ */

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static int copy_file(const char *from, const char *to)
{
    unlink(to);
    FILE *in = fopen(from, "rb");
    if (!in)
        return 0; /* nothing to copy (no -wal, say) */
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out) == 0 ? 0 : -1;
}

/* What the files of DB are after a crash: copy them (the database, its WAL, the journal) to
 * CRASH, taken while DB's server is idle between requests (nothing half-written), which is
 * what SIGKILL would leave at that instant. */
static int crash_image(const char *db, const char *crash)
{
    const char *sfx[] = {"", "-wal", "-pending"};
    for (int k = 0; k < 3; k++) {
        char a[600], b[600];
        snprintf(a, sizeof a, "%s%s", db, sfx[k]);
        snprintf(b, sizeof b, "%s%s", crash, sfx[k]);
        if (copy_file(a, b) != 0)
            return -1;
    }
    char shm[600];
    snprintf(shm, sizeof shm, "%s-shm", crash);
    unlink(shm);
    return 0;
}

/* A crash image CRASH of a database that had N0 records moved in, then N answered requests
 * (ids c0..) that are only in the journal: the ingester is held off (LOOM_AUDIT_INGEST_MS),
 * as a crash within its period would find them. */
static int crashed_db(const char *crash, const char *key, int n0, int n)
{
    char live[600];
    snprintf(live, sizeof live, "%s.live", crash);
    if (make_db(live, key, n0) != 0)
        return -1;
    setenv("LOOM_AUDIT_INGEST_MS", "1000000000", 1);
    loom_server_options so = {.struct_size = sizeof so, .audit_path = live, .audit_key_path = key};
    loom_server *s = make_server("full", 0.5, NULL, 1, &so);
    unsetenv("LOOM_AUDIT_INGEST_MS");
    if (!s)
        return -1;
    int rc = 0;
    for (int k = 0; k < n && rc == 0; k++) {
        char id[16];
        snprintf(id, sizeof id, "c%d", k);
        loom_serve_result *r = ask(s, 0.9f, NULL, id);
        rc = r && r->code == LOOM_SERVE_OK ? 0 : -1;
        loom_serve_result_free(r);
    }
    if (rc == 0)
        rc = crash_image(live, crash);
    loom_server_destroy(s);
    return rc;
}

static int64_t db_rows(const char *db)
{
    sqlite3 *h;
    sqlite3_stmt *st;
    int64_t n = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(h, "SELECT count(*) FROM audit", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    return n;
}

/* Lines `loom audit query` prints for DB (every record), or -1. */
static int query_lines(const char *db, const char *request_id)
{
    char msg[1024];
    FILE *f = tmpfile();
    if (!f)
        return -1;
    int rc = loom_audit_query(db, NULL, 0, request_id, f, msg, sizeof msg);
    rewind(f);
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n++;
    fclose(f);
    return rc == 0 ? n : -1;
}

/* The frame offsets of the journal JBUF (whole frames only; the server writes zeros ahead of
 * them) and AT[count], where the last one ends; returns their count. */
static int frames(const unsigned char *jbuf, size_t len, size_t *at, int cap)
{
    size_t off = 0;
    int n = 0;
    rec r;
    char why[160];
    while (n < cap - 1) {
        size_t here = off;
        if (aj_decode(jbuf, len, &off, &r, why, sizeof why) != AJ_RECORD)
            break;
        at[n++] = here;
    }
    at[n] = off;
    return n;
}

static int write_bytes(const char *path, const unsigned char *p, size_t n, const char *mode)
{
    FILE *f = fopen(path, mode);
    if (!f)
        return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void test_journal_replayed_after_a_crash(void)
{
    char db[512], key[512], jpath[600], msg[1024];
    uint64_t n;
    audit_path(db, sizeof db, "crash.db");
    audit_path(key, sizeof key, "crash-key");
    FILE *f = fopen(key, "wb");
    fputs("crash key", f);
    fclose(f);
    snprintf(jpath, sizeof jpath, "%s-pending", db);
    CU_ASSERT_EQUAL_FATAL(crashed_db(db, key, 3, 20), 0);
    /* The answered requests' records are in the journal only; verify and query read it. */
    CU_ASSERT_EQUAL(db_rows(db), 3);
    CU_ASSERT(file_size(jpath) > 0);
    CU_ASSERT_EQUAL(verify(db, key, &n, msg), 0);
    CU_ASSERT_EQUAL(n, 23);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "20 of them in the journal"));
    CU_ASSERT_EQUAL(query_lines(db, NULL), 23);
    CU_ASSERT_EQUAL(query_lines(db, "c19"), 1);
    /* The next start moves them into the database and goes on from the last. */
    loom_server_options so = {.struct_size = sizeof so, .audit_path = db, .audit_key_path = key};
    loom_server *s = make_server("full", 0.5, NULL, 1, &so);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(db_rows(db), 23);
    /* A second server on the same database would take this one's journal: refused. */
    loom_server *s2 = NULL;
    CU_ASSERT_EQUAL(loom_server_create(rt, &so, &s2), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "another server is appending"));
    loom_serve_result_free(ask(s, 0.9f, NULL, "after"));
    loom_server_destroy(s);
    CU_ASSERT_EQUAL(file_size(jpath), -1); /* a clean stop leaves no journal */
    CU_ASSERT_EQUAL(db_rows(db), 24);
    CU_ASSERT_EQUAL(verify(db, key, &n, msg), 0);
    CU_ASSERT_EQUAL(n, 24);
    /* Records the ingester had moved before the crash are in the journal still: skipped. */
    audit_path(db, sizeof db, "crash2.db");
    snprintf(jpath, sizeof jpath, "%s-pending", db);
    CU_ASSERT_EQUAL_FATAL(crashed_db(db, NULL, 0, 5), 0);
    char live[600];
    snprintf(live, sizeof live, "%s.live", db);
    CU_ASSERT_EQUAL_FATAL(copy_file(live, db), 0); /* all 5 moved (clean stop) ... */
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", db);
    unlink(wal);
    CU_ASSERT_EQUAL(db_rows(db), 5); /* ... and the journal of the crash image holds them */
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 0);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_PTR_NULL(strstr(msg, "journal"));
    so.audit_path = db;
    so.audit_key_path = NULL;
    s = make_server("full", 0.5, NULL, 1, &so);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    loom_server_destroy(s);
    CU_ASSERT_EQUAL(db_rows(db), 5);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 0);
}

static void test_journal_torn_last_record_is_dropped(void)
{
    char db[512], jpath[600], msg[1024];
    uint64_t n;
    audit_path(db, sizeof db, "torn.db");
    snprintf(jpath, sizeof jpath, "%s-pending", db);
    CU_ASSERT_EQUAL_FATAL(crashed_db(db, NULL, 2, 6), 0);
    unsigned char *j;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(aj_read_file(jpath, &j, &len), 0);
    size_t at[16];
    CU_ASSERT_EQUAL_FATAL(frames(j, len, at, 16), 6);
    /* A seventh record cut short in its write(): never answered. Its first half (where the
     * next frame goes, over the zeros)... */
    size_t last = at[6] - at[5];
    CU_ASSERT_EQUAL(write_bytes(jpath, j, at[6], "wb"), 0);
    CU_ASSERT_EQUAL(write_bytes(jpath, j + at[5], last / 2, "ab"), 0);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 0);
    CU_ASSERT_EQUAL(n, 8);
    CU_ASSERT_EQUAL(query_lines(db, NULL), 8);
    /* ... or, after a power cut, its whole length but zeros (a checksum that fails last). */
    CU_ASSERT_EQUAL(write_bytes(jpath, j, at[6], "wb"), 0);
    unsigned char *z = calloc(1, last);
    memcpy(z, j + at[5], 16); /* a header, then zeros */
    CU_ASSERT_EQUAL(write_bytes(jpath, z, last, "ab"), 0);
    free(z);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 0);
    CU_ASSERT_EQUAL(n, 8);
    /* The server starts: the six are moved in, the torn one dropped; the next is record 9. */
    loom_server_options so = {.struct_size = sizeof so, .audit_path = db};
    loom_server *s = make_server("full", 0.5, NULL, 1, &so);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    loom_serve_result_free(ask(s, 0.9f, NULL, "next"));
    loom_server_destroy(s);
    CU_ASSERT_EQUAL(db_rows(db), 9);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 0);
    CU_ASSERT_EQUAL(n, 9);
    free(j);
}

/* A journal that cannot grow (here the file-size limit; a full disk alike) withholds the
 * answer with a clear message and kills nothing: the journal is mapped, and a copy into a
 * mapped page without its disk block would be SIGBUS. Every request answered before has its
 * record. The soft limit is lowered for the asks only (no fork: the sanitizers' runs too). */
static void test_journal_write_failure_withholds_the_answer(void)
{
    char db[512], msg[1024];
    audit_path(db, sizeof db, "full-disk.db");
    /* No ingestion while the limit holds: the journal alone grows. */
    setenv("LOOM_AUDIT_INGEST_MS", "1000000000", 1);
    loom_server_options so = {.struct_size = sizeof so, .audit_path = db};
    loom_server *s = make_server("full", 0.5, NULL, 1, &so);
    unsetenv("LOOM_AUDIT_INGEST_MS");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct rlimit old, rl;
    CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &old), 0);
    rl = old;
    rl.rlim_cur = 200u << 10;
    void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
    CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &rl), 0);
    int ok = 0, failed = 0, wrong = 0;
    for (int k = 0; k < 2000 && failed < 5; k++) {
        char id[16];
        snprintf(id, sizeof id, "f%d", k);
        loom_serve_result *r = ask(s, 0.9f, NULL, id);
        if (r && r->code == LOOM_SERVE_OK && !failed)
            ok++;
        else if (r && r->code == LOOM_SERVE_FAILED && r->n_outputs == 0 && r->message &&
                 strstr(r->message, "the audit trail could not be written"))
            failed++;
        else
            wrong++;
        loom_serve_result_free(r);
    }
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, was);
    CU_ASSERT(ok > 50);        /* answered while the journal could grow */
    CU_ASSERT_EQUAL(failed, 5); /* then withheld, each with the reason */
    CU_ASSERT_EQUAL(wrong, 0);
    loom_server_destroy(s); /* moves the journal in */
    uint64_t n = 0;
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 0);
    CU_ASSERT(n >= (uint64_t)ok); /* every answered request's record (and the segment's) */
}

static void test_journal_damage_is_reported_where(void)
{
    char db[512], pristine[512], jpath[600], want[700], msg[1024];
    uint64_t n;
    audit_path(pristine, sizeof pristine, "damaged-pristine.db");
    CU_ASSERT_EQUAL_FATAL(crashed_db(pristine, NULL, 1, 5), 0);
    snprintf(jpath, sizeof jpath, "%s-pending", pristine);
    unsigned char *j;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(aj_read_file(jpath, &j, &len), 0);
    size_t at[16];
    CU_ASSERT_EQUAL_FATAL(frames(j, len, at, 16), 5);

    /* A flipped byte in the journal's second record (seq 3): its checksum fails and more
     * follows, so this is damage, not a torn end. */
    audit_path(db, sizeof db, "damaged.db");
    CU_ASSERT_EQUAL_FATAL(crash_image(pristine, db), 0);
    snprintf(jpath, sizeof jpath, "%s-pending", db);
    j[at[1] + 40] ^= 0x5a;
    CU_ASSERT_EQUAL(write_bytes(jpath, j, len, "wb"), 0);
    j[at[1] + 40] ^= 0x5a;
    snprintf(want, sizeof want, "the audit journal '%s' is damaged at byte %zu", jpath, at[1]);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, want));
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(query_lines(db, NULL), -1);
    /* The server refuses to append, naming the journal and the byte... */
    loom_server_options so = {.struct_size = sizeof so, .audit_path = db};
    loom_server *s;
    CU_ASSERT_EQUAL(loom_server_create(rt, &so, &s), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), want));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "-pending.bad'"));
    CU_ASSERT_EQUAL(db_rows(db), 2); /* the record before the damage was moved in */
    /* ... unless told to start a new segment: the journal is kept aside, the segment record
     * says why, and verify keeps reporting it. */
    so.audit_new_segment = 1;
    s = make_server("full", 0.5, NULL, 1, &so);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    loom_serve_result_free(ask(s, 0.9f, NULL, "after"));
    loom_server_destroy(s);
    char bad_path[700];
    snprintf(bad_path, sizeof bad_path, "%s.bad", jpath);
    CU_ASSERT_EQUAL(file_size(bad_path), (long)len);
    CU_ASSERT_EQUAL(db_rows(db), 4);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "record 3: a new segment starts here"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, want));
    CU_ASSERT_EQUAL(n, 4);

    /* A record edited in the journal by someone who recomputed its frame's checksum: the
     * chain says which and where. */
    audit_path(db, sizeof db, "edited.db");
    CU_ASSERT_EQUAL_FATAL(crash_image(pristine, db), 0);
    snprintf(jpath, sizeof jpath, "%s-pending", db);
    rec r;
    char why[160];
    size_t off = at[2];
    CU_ASSERT_EQUAL_FATAL(aj_decode(j, len, &off, &r, why, sizeof why), AJ_RECORD);
    r.request_id = (char *)"forged";
    size_t fl = aj_frame_size(&r);
    unsigned char *e = malloc(at[2] + fl + (len - at[3]));
    memcpy(e, j, at[2]);
    aj_encode(&r, e + at[2]);
    memcpy(e + at[2] + fl, j + at[3], len - at[3]);
    CU_ASSERT_EQUAL(write_bytes(jpath, e, at[2] + fl + (len - at[3]), "wb"), 0);
    free(e);
    snprintf(want, sizeof want, "record 4 (in the audit journal '%s' at byte %zu): edited",
             jpath, at[2]);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, want));
    CU_ASSERT_EQUAL(loom_server_create(rt, &so, &s) == LOOM_OK, 1); /* new segment: starts */
    loom_server_destroy(s);
    so.audit_new_segment = 0;
    /* Not a journal at all: damaged at byte 0. */
    audit_path(db, sizeof db, "notjournal.db");
    CU_ASSERT_EQUAL_FATAL(crash_image(pristine, db), 0);
    snprintf(jpath, sizeof jpath, "%s-pending", db);
    CU_ASSERT_EQUAL(write_bytes(jpath, (const unsigned char *)"hello, world\n", 13, "wb"), 0);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "damaged at byte 0"));
    so.audit_path = db;
    CU_ASSERT_EQUAL(loom_server_create(rt, &so, &s), LOOM_ERR_INVALID_ARGUMENT);
    free(j);
}

typedef struct asker {
    loom_server *s;
    int n, failed;
    atomic_int verifies, done;
} asker;

static void *ask_many(void *arg)
{
    asker *k = arg;
    for (int i = 0; i < k->n; i++) {
        if (i % 100 == 99) {
            /* Let a verify run in between, however fast this goes. */
            int v0 = atomic_load(&k->verifies);
            while (atomic_load(&k->verifies) == v0)
                usleep(100);
        }
        char id[16];
        snprintf(id, sizeof id, "x%d", i);
        loom_serve_result *r = ask(k->s, i % 2 ? 0.6f : 0.9f, NULL, id);
        k->failed += !r || r->code != LOOM_SERVE_OK;
        loom_serve_result_free(r);
    }
    atomic_store(&k->done, 1);
    return NULL;
}

/* verify and query while the server appends, moves records into the database every
 * millisecond and replaces its journal every few records: each one sees a whole chain. */
static void test_journal_ingestion_interleaved_with_verify(void)
{
    char db[512], msg[1024];
    uint64_t n, last = 0;
    audit_path(db, sizeof db, "interleaved.db");
    setenv("LOOM_AUDIT_INGEST_MS", "1", 1);
    setenv("LOOM_AUDIT_ROTATE_BYTES", "2000", 1);
    loom_server_options so = {.struct_size = sizeof so, .audit_path = db};
    loom_server *s = make_server("cascade", 0.8, NULL, 1, &so);
    unsetenv("LOOM_AUDIT_INGEST_MS");
    unsetenv("LOOM_AUDIT_ROTATE_BYTES");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    asker k = {.s = s, .n = 1500};
    atomic_init(&k.verifies, 0);
    atomic_init(&k.done, 0);
    pthread_t th;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, ask_many, &k), 0);
    int verifies = 0, bad_verifies = 0, backwards = 0, bad_queries = 0;
    for (int i = 0; !atomic_load(&k.done); i++) {
        int rc = verify(db, NULL, &n, msg);
        verifies++;
        atomic_fetch_add(&k.verifies, 1);
        if (rc != 0) {
            bad_verifies++;
            fprintf(stderr, "interleaved verify: %s\n", msg);
        }
        backwards += n < last;
        last = n;
        if (i % 8 == 0)
            bad_queries += query_lines(db, NULL) < (int)last;
    }
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(k.failed, 0);
    CU_ASSERT(verifies >= 14);
    CU_ASSERT_EQUAL(bad_verifies, 0);
    CU_ASSERT_EQUAL(backwards, 0);
    CU_ASSERT_EQUAL(bad_queries, 0);
    loom_server_destroy(s);
    CU_ASSERT_EQUAL(verify(db, NULL, &n, msg), 0);
    CU_ASSERT_EQUAL(n, 1500);
    CU_ASSERT_EQUAL(db_rows(db), 1500);
}

/* The record's numbers are hashed as "%.17g" writes them; aj_format_g17 writes them without
 * printf: the same bytes for a million doubles of every kind (random bits, Unix times, dyadic
 * fractions, decimal ties at the 17th digit, 1e-9 to 1e8), or 0 where it leaves them to printf. */
static void test_g17_matches_printf(void)
{
    uint64_t st = 88172645463325252ull;
    long handled = 0, mismatches = 0;
    char a[64], b[64];
    for (long i = 0; i < 1000000; i++) {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        double v;
        switch (i % 5) {
        case 0: memcpy(&v, &st, 8); v = fabs(v); break;
        case 1: v = 1.7e9 + (double)(st % 1000000000) / 1e3; break;
        case 2: v = ldexp((double)(st >> 11), -(int)(st % 80)); break;
        case 3: v = (double)(st >> 11) / (double)(2u << (st % 4)); break;
        default: v = exp((double)(st % 4000) / 100.0 - 20.0); break;
        }
        if (!aj_format_g17(v, a))
            continue;
        handled++;
        snprintf(b, sizeof b, "%.17g", v);
        if (strcmp(a, b) && mismatches++ < 5)
            fprintf(stderr, "g17 %a: %s, printf %s\n", v, a, b);
    }
    CU_ASSERT_EQUAL(mismatches, 0);
    CU_ASSERT(handled > 500000);
    CU_ASSERT_EQUAL(aj_format_g17(1e-7, a), 0);
    CU_ASSERT_EQUAL(aj_format_g17(-0.5, a), 0);
    CU_ASSERT_EQUAL(aj_format_g17(1e300, a), 0);
    CU_ASSERT_EQUAL(aj_format_g17(NAN, a), 0);
    CU_ASSERT(aj_format_g17(0.1, a) > 0 && !strcmp(a, "0.10000000000000001"));
    CU_ASSERT(aj_format_g17(1.5e-5, a) > 0 && !strcmp(a, "1.5e-05"));
    CU_ASSERT(aj_format_g17(1234567890123456.75, a) > 0 && !strcmp(a, "1234567890123456.8"));
    CU_ASSERT(aj_format_g17(1234567890123456.25, a) > 0 && !strcmp(a, "1234567890123456.2"));
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/loom_test_qos_XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    CU_pSuite q = CU_add_suite("qos", NULL, NULL);
    CU_add_test(q, "a switch is traced with its inputs", test_switch_is_traced_with_its_inputs);
    CU_add_test(q, "switches to lite when queued work misses deadlines",
                test_switches_to_lite_when_queued_work_misses_deadlines);
    CU_add_test(q, "switch back has hysteresis", test_switch_back_has_hysteresis);
    CU_add_test(q, "confidence measures", test_confidence_measures);
    CU_pSuite c = CU_add_suite("variants_cascades", NULL, NULL);
    CU_add_test(c, "variants are chosen per request", test_variants_are_chosen_per_request);
    CU_add_test(c, "bad QoS settings are refused", test_bad_qos_settings_are_refused);
    CU_add_test(c, "local cascade escalates unsure answers",
                test_local_cascade_escalates_unsure_answers);
    CU_add_test(c, "remote cascade, and remote down", test_remote_cascade_and_remote_down);
    CU_pSuite a = CU_add_suite("audit", NULL, NULL);
    CU_add_test(a, "chain detects edits, deletes, reorders, truncation",
                test_audit_chain_detects_edits_deletes_reorders);
    CU_add_test(a, "key detects a recomputed chain", test_audit_key_detects_a_recomputed_chain);
    CU_add_test(a, "broken chain refused unless a new segment",
                test_broken_chain_refused_unless_new_segment);
    CU_add_test(a, "numbers hashed as %.17g writes them", test_g17_matches_printf);
    CU_add_test(a, "journal replayed after a crash", test_journal_replayed_after_a_crash);
    CU_add_test(a, "journal: a torn last record is dropped",
                test_journal_torn_last_record_is_dropped);
    CU_add_test(a, "journal: damage is reported where", test_journal_damage_is_reported_where);
    CU_add_test(a, "journal: a failed write withholds the answer",
                test_journal_write_failure_withholds_the_answer);
    CU_add_test(a, "journal: ingestion interleaved with verify and query",
                test_journal_ingestion_interleaved_with_verify);
    loom_runtime_options ro = {.struct_size = sizeof ro, .no_default_plugins = 1};
    if (loom_runtime_create(&ro, &rt) != LOOM_OK) {
        fprintf(stderr, "runtime: %s\n", loom_last_error());
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    loom_runtime_destroy(rt);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return failed ? 1 : 0;
}
