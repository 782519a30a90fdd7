/*
 * The runtime's shared history (scheduler/cost/cost_history_cache.c): a history.json is parsed
 * once per runtime however many cost models (plans) open it, parsed again when it changed on
 * disk (replaced by a rename, or rewritten in place with the same size within the file
 * system's timestamp granularity) or when the runtime itself saved it; what a model learns
 * still lands in the file, and the file keeps at most COST_HISTORY_MAX_SIGS signatures per
 * device key. Counted with cost_history_parses; no assertion depends on time.
 */
#include <loom/loom.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <dirent.h>
#include <math.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scheduler/cost/cost_internal.h"

static loom_runtime *rt;
static char tmp_root[] = "/tmp/loom-test-cost-history-XXXXXX";
static char key[sizeof(((cost_profile *)0)->key)]; /* cpu:0's profile key */

/* A MatMul [64,128] x [128,32] node descriptor and its signature. */
static loom_tensor_desc mm_in[2] = {{LOOM_DTYPE_F32, 2, {64, 128}}, {LOOM_DTYPE_F32, 2, {128, 32}}};
static loom_tensor_desc mm_out[1] = {{LOOM_DTYPE_F32, 2, {64, 32}}};
static char mm_sig[COST_SIGNATURE_MAX];

static loom_node_desc matmul_node(void)
{
    loom_node_desc n;
    memset(&n, 0, sizeof n);
    n.abi_version = LOOM_ABI_VERSION;
    n.struct_size = sizeof n;
    n.op = LOOM_OP_MATMUL;
    n.op_name = "MatMul";
    n.name = "mm";
    n.n_inputs = 2;
    n.n_outputs = 1;
    n.inputs = mm_in;
    n.outputs = mm_out;
    return n;
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[8192];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            remove_tree(path);
    }
    closedir(d);
    rmdir(dir);
}

static int suite_init(void)
{
    if (!mkdtemp(tmp_root) || loom_runtime_create(NULL, &rt) != LOOM_OK)
        return 1;
    cost_model *m = NULL;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/key", tmp_root);
    if (cost_model_open(rt, dir, &m) != LOOM_OK)
        return 1;
    snprintf(key, sizeof key, "%s", cost_profile_of(m, 0)->key);
    cost_model_close(m);
    loom_node_desc n = matmul_node();
    cost_signature(&n, mm_sig);
    return 0;
}

static int suite_clean(void)
{
    loom_runtime_destroy(rt);
    remove_tree(tmp_root);
    return 0;
}

static void make_dir(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmp_root, name);
    mkdir(buf, 0755);
}

/* Write DIR/history.json in place (same inode when it exists) with MatMul's samples at S. */
static void write_history(const char *dir, double s)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/history.json", dir);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f, "{\"version\": 1, \"history\": {\"%s\": {\"%s\": {\"samples\": [%.1e, %.1e, "
            "%.1e], \"median\": %.1e}}}}\n", key, mm_sig, s, s, s, s);
    fclose(f);
}

/* The history figure a freshly opened model of DIR predicts for the MatMul (NAN: none). */
static double predicted(const char *dir)
{
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    loom_node_desc n = matmul_node();
    double s = strcmp(cost_node_source(m, 0, &n), "history") == 0
                   ? cost_node_seconds(m, 0, &n, NULL)
                   : NAN;
    cost_model_close(m);
    return s;
}

static void test_plans_of_one_runtime_parse_the_history_once(void)
{
    char dir[4096];
    make_dir(dir, sizeof dir, "plans");
    write_history(dir, 2e-3);
    loom_graph *g = loom_graph_create("two-plans");
    int64_t da[2] = {64, 128}, db[2] = {128, 32};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, da);
    loom_value w = loom_input(g, "w", LOOM_DTYPE_F32, 2, db);
    loom_output(g, loom_matmul(g, x, w), "y");
    CU_ASSERT_EQUAL_FATAL(loom_graph_check(g), LOOM_OK);
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu:0", .strict = 1,
                            .cache_dir = dir};
    uint64_t before = cost_history_parses(rt);
    loom_plan *p1 = NULL, *p2 = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &po, &p1), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_plan_create(rt, g, &po, &p2), LOOM_OK);
    CU_ASSERT_EQUAL(cost_history_parses(rt) - before, 1);
    /* Both predicted from the history the file holds. */
    for (int k = 0; k < 2; k++) {
        loom_plan *p = k ? p2 : p1;
        int found = 0;
        for (size_t i = 0; i < loom_plan_node_count(p); i++) {
            loom_node_explain e = {.struct_size = sizeof e};
            CU_ASSERT_EQUAL_FATAL(loom_plan_explain(p, i, &e), LOOM_OK);
            if (strcmp(e.op, "MatMul") != 0)
                continue;
            found = 1;
            CU_ASSERT_STRING_EQUAL(e.cost_source, "history");
            CU_ASSERT_DOUBLE_EQUAL(e.cost_s[0], 2e-3, 1e-12);
        }
        CU_ASSERT(found);
    }
    loom_plan_destroy(p1);
    loom_plan_destroy(p2);
    loom_graph_destroy(g);
}

static char threads_dir[4096];

static void *open_many(void *arg)
{
    int *ok = arg;
    for (int k = 0; k < 20; k++) {
        cost_model *m = NULL;
        if (cost_model_open(rt, threads_dir, &m) != LOOM_OK)
            return NULL;
        loom_node_desc n = matmul_node();
        *ok += fabs(cost_node_seconds(m, 0, &n, NULL) - 2e-3) < 1e-12;
        cost_model_close(m);
    }
    return NULL;
}

static void test_models_opened_from_several_threads_share_one_parse(void)
{
    make_dir(threads_dir, sizeof threads_dir, "threads");
    write_history(threads_dir, 2e-3);
    uint64_t before = cost_history_parses(rt);
    pthread_t th[4];
    int ok[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, open_many, &ok[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(ok[i], 20);
    }
    CU_ASSERT_EQUAL(cost_history_parses(rt) - before, 1);
}

static void test_changed_file_is_parsed_again(void)
{
    char dir[4096], path[8192], tmp[8192];
    make_dir(dir, sizeof dir, "changed");
    write_history(dir, 2e-3);
    uint64_t before = cost_history_parses(rt);
    CU_ASSERT_DOUBLE_EQUAL(predicted(dir), 2e-3, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(predicted(dir), 2e-3, 1e-12);
    CU_ASSERT_EQUAL(cost_history_parses(rt) - before, 1);
    /* Rewritten in place with the same size, at once: inode, size and (often) the times are
     * those of the file parsed; its content is not. */
    write_history(dir, 3e-3);
    CU_ASSERT_DOUBLE_EQUAL(predicted(dir), 3e-3, 1e-12);
    CU_ASSERT_EQUAL(cost_history_parses(rt) - before, 2);
    CU_ASSERT_DOUBLE_EQUAL(predicted(dir), 3e-3, 1e-12);
    CU_ASSERT_EQUAL(cost_history_parses(rt) - before, 2);
    /* Replaced by a rename, as another process's save does. */
    char other[4096];
    make_dir(other, sizeof other, "changed-other");
    write_history(other, 4e-3);
    snprintf(tmp, sizeof tmp, "%s/history.json", other);
    snprintf(path, sizeof path, "%s/history.json", dir);
    CU_ASSERT_EQUAL_FATAL(rename(tmp, path), 0);
    CU_ASSERT_DOUBLE_EQUAL(predicted(dir), 4e-3, 1e-12);
    CU_ASSERT_EQUAL(cost_history_parses(rt) - before, 3);
    /* Gone: no history, and nothing is parsed. */
    CU_ASSERT_EQUAL_FATAL(unlink(path), 0);
    CU_ASSERT(isnan(predicted(dir)));
    CU_ASSERT_EQUAL(cost_history_parses(rt) - before, 3);
}

static void test_what_a_model_learns_is_saved_and_seen_by_the_next(void)
{
    char dir[4096];
    make_dir(dir, sizeof dir, "learned");
    write_history(dir, 2e-3);
    cost_model *a = NULL, *b = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &a), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &b), LOOM_OK);
    loom_node_desc n = matmul_node();
    /* A learns on top of the shared snapshot: 3 samples at 2 ms plus 4 at 8 ms. */
    for (int k = 0; k < 4; k++)
        cost_record(a, 0, &n, 8e-3);
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(a, 0, &n, NULL), 8e-3, 1e-12);
    /* B, opened on the same snapshot, does not see A's samples (as when each parsed the file). */
    CU_ASSERT_DOUBLE_EQUAL(cost_node_seconds(b, 0, &n, NULL), 2e-3, 1e-12);
    uint64_t before = cost_history_parses(rt);
    cost_model_close(a); /* saves: the runtime's snapshot is stale */
    cost_model_close(b);
    CU_ASSERT_DOUBLE_EQUAL(predicted(dir), 8e-3, 1e-12);
    CU_ASSERT_EQUAL(cost_history_parses(rt) - before, 1);
    /* The file holds the 7 samples, oldest first, with the time of the save. */
    char path[8192];
    snprintf(path, sizeof path, "%s/history.json", dir);
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    json_t *e = json_object_get(json_object_get(json_object_get(root, "history"), key), mm_sig);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(e, "samples")), 7);
    CU_ASSERT_DOUBLE_EQUAL(json_real_value(json_array_get(json_object_get(e, "samples"), 0)),
                           2e-3, 1e-15);
    CU_ASSERT(json_integer_value(json_object_get(e, "t")) > 0);
    json_decref(root);
}

static void test_history_keeps_the_most_recent_signatures_per_device(void)
{
    char dir[4096], path[8192];
    make_dir(dir, sizeof dir, "bounded");
    snprintf(path, sizeof path, "%s/history.json", dir);
    /* COST_HISTORY_MAX_SIGS + 10 signatures of this device, "t" = their number, and one of
     * another device that this runtime does not have. */
    json_t *sigs = json_object(), *hist = json_object(), *root = json_object();
    for (int i = 0; i < COST_HISTORY_MAX_SIGS + 10; i++) {
        char name[64];
        snprintf(name, sizeof name, "Relu|f32[%d]|f32[%d]|p0", i + 1, i + 1);
        json_t *o = json_pack("{s:[f,f,f], s:f, s:I}", "samples", 1e-6, 1e-6, 1e-6, "median",
                              1e-6, "t", (json_int_t)(i + 1));
        json_object_set_new(sigs, name, o);
    }
    json_object_set_new(hist, key, sigs);
    json_object_set_new(hist, "other|device", json_pack("{s:{s:[f]}}", "x", "samples", 1e-6));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "history", hist);
    CU_ASSERT_EQUAL_FATAL(json_dump_file(root, path, 0), 0);
    json_decref(root);
    cost_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(cost_model_open(rt, dir, &m), LOOM_OK);
    loom_node_desc n = matmul_node();
    cost_record(m, 0, &n, 1e-3);
    cost_model_close(m); /* saves, bounded */
    json_error_t err;
    root = json_load_file(path, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    hist = json_object_get(root, "history");
    sigs = json_object_get(hist, key);
    CU_ASSERT_EQUAL(json_object_size(sigs), COST_HISTORY_MAX_SIGS);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(sigs, mm_sig)); /* the newest stays */
    /* The 11 oldest went ("t" 1..11), the others stayed. */
    CU_ASSERT_PTR_NULL(json_object_get(sigs, "Relu|f32[1]|f32[1]|p0"));
    CU_ASSERT_PTR_NULL(json_object_get(sigs, "Relu|f32[11]|f32[11]|p0"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(sigs, "Relu|f32[12]|f32[12]|p0"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(hist, "other|device"));
    json_decref(root);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"plans_of_one_runtime_parse_the_history_once",
         test_plans_of_one_runtime_parse_the_history_once},
        {"models_opened_from_several_threads_share_one_parse",
         test_models_opened_from_several_threads_share_one_parse},
        {"changed_file_is_parsed_again", test_changed_file_is_parsed_again},
        {"what_a_model_learns_is_saved_and_seen_by_the_next",
         test_what_a_model_learns_is_saved_and_seen_by_the_next},
        {"history_keeps_the_most_recent_signatures_per_device",
         test_history_keeps_the_most_recent_signatures_per_device},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"cost_history_cache", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
