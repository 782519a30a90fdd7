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
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
