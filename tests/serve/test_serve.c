/*
 * The serving layer: the batching policy driven by a fake clock (dispatch at max batch, when
 * waiting would miss the deadline, when a bigger batch is not cheaper per row; the size picked
 * by cost per useful row), the result cache (LRU eviction by bytes, coalescing of identical
 * requests in flight, counters), the KServe v2 parser and response writer, and the server in
 * process on a graph built in C (outputs split back per request checked against the formula,
 * cache hits, refusals, deadlines, drain, metrics text).
 */
#include <CUnit/Basic.h>

#include <loom/loom.h>
#include <loom/serve.h>

#include "serve/serve_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

/* ---- policy ------------------------------------------------------------------------------ */

static void test_sizes_are_powers_of_two_up_to_max(void)
{
    sv_estimates e;
    sv_estimates_init(&e, 12, 0);
    CU_ASSERT_EQUAL(e.n_sizes, 5);
    uint32_t want[] = {1, 2, 4, 8, 12};
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(e.sizes[i], want[i]);
    CU_ASSERT_EQUAL(sv_size_index(&e, 5), 3);
    CU_ASSERT_EQUAL(sv_size_index(&e, 13), 5);
    sv_estimates_init(&e, 6, 1);
    CU_ASSERT_EQUAL(e.n_sizes, 6);
    CU_ASSERT_EQUAL(e.sizes[5], 6);
    sv_estimates_init(&e, 1, 0);
    CU_ASSERT_EQUAL(e.n_sizes, 1);
    CU_ASSERT_EQUAL(e.sizes[0], 1);
}

static void test_estimates_scale_from_nearest_known_size(void)
{
    sv_estimates e;
    sv_estimates_init(&e, 8, 0);
    CU_ASSERT_EQUAL(sv_estimate(&e, 2), 0); /* nothing known */
    sv_estimate_seed(&e, 0, 0.001);
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 2), 0.004, 1e-12); /* 4 rows: 4 x batch 1 */
    sv_estimate_measure(&e, 3, 0.005);
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 3), 0.005, 1e-12);
    /* Once something is measured, seeds are ignored: 4 rows as the measured 8. */
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 2), 0.005, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 0), 0.005, 1e-12);
    /* A measurement replaces the seed, then moves by a fifth of the difference. */
    sv_estimate_measure(&e, 0, 0.002);
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 0), 0.002, 1e-12);
    sv_estimate_measure(&e, 0, 0.003);
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 0), 0.0022, 1e-12);
    /* A seed never overrides a measurement. */
    sv_estimate_seed(&e, 0, 1.0);
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 0), 0.0022, 1e-12);
}

/* Batch 1: 1 ms, 2: 1.1, 4: 1.3, 8: 2 ms: bigger batches are much cheaper per row. */
static void sublinear(sv_estimates *e)
{
    sv_estimates_init(e, 8, 0);
    double t[] = {0.001, 0.0011, 0.0013, 0.002};
    for (int i = 0; i < 4; i++)
        sv_estimate_measure(e, (uint32_t)i, t[i]);
}

static void test_dispatches_at_max_batch(void)
{
    sv_estimates e;
    sublinear(&e);
    sv_queue_view q = {.now = 10, .deadline = 10.05, .rows = 8, .max_batch = 8,
                       .arrival_rate = 1000, .slack_s = 0.002};
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 8);
    CU_ASSERT_EQUAL(d.rows, 8);
    q.rows = 20; /* more waiting than one batch takes */
    d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(d.rows, 8);
}

static void test_waits_when_bigger_batch_is_cheaper_and_deadline_allows(void)
{
    sv_estimates e;
    sublinear(&e);
    sv_queue_view q = {.now = 10, .deadline = 10.05, .rows = 3, .max_batch = 8,
                       .arrival_rate = 1000, .slack_s = 0.002};
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_FALSE(d.go);
    /* Wakes when the 8 rows should be there (5 more at 1000/s), never past the last start
     * that still meets the deadline. */
    CU_ASSERT_TRUE(d.wake_at > q.now);
    CU_ASSERT_TRUE(d.wake_at <= q.now + 0.005 + 1e-12);
    CU_ASSERT_TRUE(d.wake_at <= q.deadline - 0.002 - 0.002 + 1e-12);
}

static void test_dispatches_when_waiting_would_miss_the_deadline(void)
{
    sv_estimates e;
    sublinear(&e);
    /* 4 more rows (for a batch of 8) need 4 ms at 1000/s; the deadline is 4 ms away. */
    sv_queue_view q = {.now = 10, .deadline = 10.004, .rows = 4, .max_batch = 8,
                       .arrival_rate = 1000, .slack_s = 0.0005};
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(d.rows, 4);
    /* 3 rows run padded to 4: waiting 1 ms for the fourth row still meets it. */
    q.rows = 3;
    d = sv_decide(&q, &e);
    CU_ASSERT_FALSE(d.go);
    q.rows = 4;
    /* The same queue later, with the clock moved past the latest start. */
    q.deadline = 10.05;
    q.now = 10.0475;
    d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
}

static void test_dispatches_at_once_without_arrivals_or_gain(void)
{
    sv_estimates e;
    sublinear(&e);
    sv_queue_view q = {.now = 10, .deadline = 10.05, .rows = 1, .max_batch = 8,
                       .arrival_rate = 0, .slack_s = 0.002};
    CU_ASSERT_TRUE(sv_decide(&q, &e).go); /* nobody else is coming */
    /* Linear cost: a bigger batch is not cheaper per row, so never wait for one. */
    sv_estimates_init(&e, 8, 0);
    double t[] = {0.001, 0.002, 0.004, 0.008};
    for (int i = 0; i < 4; i++)
        sv_estimate_measure(&e, (uint32_t)i, t[i]);
    q.arrival_rate = 100000;
    q.rows = 2;
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(d.rows, 2);
    q.rows = 0;
    CU_ASSERT_FALSE(sv_decide(&q, &e).go);
}

static void test_picks_size_by_cost_per_useful_row(void)
{
    sv_estimates e;
    sv_estimates_init(&e, 8, 0);
    double lin[] = {0.001, 0.002, 0.004, 0.008};
    for (int i = 0; i < 4; i++)
        sv_estimate_measure(&e, (uint32_t)i, lin[i]);
    /* 5 rows, linear cost: 4 rows now (1 ms/row) beats 8 padded (1.6 ms/row). */
    sv_queue_view q = {.now = 1, .deadline = 1.05, .rows = 5, .max_batch = 8, .slack_s = 0};
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 4);
    CU_ASSERT_EQUAL(d.rows, 4);
    /* When 8 costs 4.5 ms, padding 5 rows to 8 (0.9 ms/row) wins. */
    sv_estimate_measure(&e, 3, 0.0045);
    e.seconds[3] = 0.0045;
    d = sv_decide(&q, &e);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 8);
    CU_ASSERT_EQUAL(d.rows, 5);
}

static void test_never_picks_a_size_that_would_miss_the_deadline(void)
{
    sv_estimates e;
    sv_estimates_init(&e, 32, 0);
    /* A CPU-bound encoder: 21 ms at 1, 40 at 2, 57 at 4, 270 at 32; 50 ms to the deadline. */
    double t[] = {0.021, 0.040, 0.057, 0.071, 0.109, 0.269};
    for (int i = 0; i < 6; i++)
        sv_estimate_measure(&e, (uint32_t)i, t[i]);
    sv_queue_view q = {.now = 0, .deadline = 0.05, .rows = 40, .max_batch = 32, .slack_s = 0.001};
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 2);
    CU_ASSERT_EQUAL(d.rows, 2);
    /* With 300 ms to go, the cheapest per row (16) is taken. */
    q.deadline = 0.3;
    d = sv_decide(&q, &e);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 16);
    /* Already too late for anything: the smallest still runs. */
    q.deadline = 0.01;
    d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 1);
    /* Overloaded: batches sized for the target of the requests behind. */
    q.target_s = 0.05;
    d = sv_decide(&q, &e);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 2);
}

static void test_stale_estimate_is_bounded_by_fresher_ones(void)
{
    sv_estimates e;
    sv_estimates_init(&e, 8, 0);
    /* Batch 2 measured once during a slow spell (60 ms), then batch 1 at 10 ms. */
    sv_estimate_measure(&e, 1, 0.060);
    sv_estimate_measure(&e, 0, 0.010);
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 1), 0.020, 1e-12); /* at most two batches of 1 */
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 0), 0.010, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 3), 0.080, 1e-12); /* 8 rows: linear from 1 */
    /* So batch 2 is chosen again within a 50 ms deadline (the stale 60 ms would rule it
     * out for ever, leaving batch 1). */
    sv_queue_view q = {.now = 0, .deadline = 0.05, .rows = 2, .max_batch = 8, .slack_s = 0.002};
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 2);
    /* Measured again, batch 2's own figure (the mean, 60 -> 54 ms) is the fresher one. */
    sv_estimate_measure(&e, 1, 0.030);
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 1), 0.054, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(sv_estimate(&e, 0), 0.010, 1e-12);
}

/* A CPU-bound encoder measured on 2 cores: 3.6, 6.2, 11.8, 22.4, 43, 87 ms at 1..32. */
static void encoder(sv_estimates *e)
{
    sv_estimates_init(e, 32, 0);
    double t[] = {0.0036, 0.0062, 0.0118, 0.0224, 0.043, 0.087};
    for (int i = 0; i < 6; i++)
        sv_estimate_measure(e, (uint32_t)i, t[i]);
}

static void test_waits_only_when_the_idle_wait_pays(void)
{
    sv_estimates e;
    sv_estimates_init(&e, 8, 0);
    double t[] = {0.004, 0.007, 0.013, 0.025};
    for (int i = 0; i < 4; i++)
        sv_estimate_measure(&e, (uint32_t)i, t[i]);
    /* One row, the next expected in 5 ms (200/s): waiting 5 ms and running 2 rows (7 ms)
     * ends at 12 ms; running now (4 ms) and the next row when it comes (5 + 4) at 9 ms. Batch
     * 2 is cheaper per row, but the device would idle longer than that saves. */
    sv_queue_view q = {.now = 1, .deadline = 1.05, .rows = 1, .max_batch = 8,
                       .arrival_rate = 200, .slack_s = 0.002, .target_s = 0.05};
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(d.rows, 1);
    /* The next row expected in 0.5 ms (2000/s): 0.5 + 7 ms beats 4 + 4: wait for it. */
    q.arrival_rate = 2000;
    d = sv_decide(&q, &e);
    CU_ASSERT_FALSE(d.go);
    CU_ASSERT_DOUBLE_EQUAL(d.wake_at, 1.0005, 1e-9);
}

/* A closed loop: the one client waits for its answer, so the row the arrival rate promises
 * never comes. The oldest request waits in all no longer than the batch it could run in now. */
static void test_total_wait_bounded_by_the_run_now(void)
{
    sv_estimates e;
    sv_estimates_init(&e, 8, 0);
    double t[] = {0.004, 0.007, 0.013, 0.025};
    for (int i = 0; i < 4; i++)
        sv_estimate_measure(&e, (uint32_t)i, t[i]);
    /* As above, the next row expected in 0.5 ms pays: a request just queued waits for it. */
    sv_queue_view q = {.now = 1, .deadline = 1.05, .rows = 1, .max_batch = 8,
                       .arrival_rate = 2000, .slack_s = 0.002, .target_s = 0.05,
                       .oldest_s = 1};
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_FALSE(d.go);
    /* Woken 0.5 ms later, nothing came, the rate still says 0.5 ms: waits again, 1 ms in all. */
    q.now = 1.0005;
    d = sv_decide(&q, &e);
    CU_ASSERT_FALSE(d.go);
    /* 3.6 ms waited: another 0.5 ms would pass the 4 ms run it could have had: it runs. */
    q.now = 1.0036;
    d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(d.rows, 1);
    /* Unknown queueing time (0): no bound, as before. */
    q.oldest_s = 0;
    d = sv_decide(&q, &e);
    CU_ASSERT_FALSE(d.go);
}

static void test_leaves_room_for_the_requests_behind(void)
{
    sv_estimates e;
    encoder(&e);
    /* 16 rows waiting, the oldest 3 ms old (47 ms left of 50), 300 rows/s arriving. Batch 16
     * (43 ms, the cheapest per row) would still meet the oldest's deadline, but the 13 rows
     * arriving meanwhile would then wait 43 ms and run 43 more. Batch 8 (22.4 ms) leaves
     * them room: its 7 arrivals run as the next batch of 8 by 46.8 ms. */
    sv_queue_view q = {.now = 0, .deadline = 0.047, .rows = 16, .max_batch = 32,
                       .arrival_rate = 300, .slack_s = 0.002, .target_s = 0.05};
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 8);
    CU_ASSERT_EQUAL(d.rows, 8);
    /* Nobody arriving: batch 16. */
    q.arrival_rate = 0;
    d = sv_decide(&q, &e);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 16);
    /* Overload (1000/s: no size keeps up and leaves room): holding batches small would only
     * let the queue grow faster, so the cheapest per row within the deadline runs. */
    q.arrival_rate = 1000;
    d = sv_decide(&q, &e);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 16);
}

static void test_pads_to_a_size_that_runs_faster(void)
{
    sv_estimates e;
    sv_estimates_init(&e, 4, 0);
    /* Batch 1's plan placed worse than batch 2's (7.4 ms against 6.2). */
    sv_estimate_measure(&e, 1, 0.0062);
    sv_estimate_measure(&e, 0, 0.0074);
    sv_estimate_measure(&e, 2, 0.0118);
    sv_queue_view q = {.now = 0, .deadline = 0.05, .rows = 1, .max_batch = 4, .slack_s = 0.002};
    sv_decision d = sv_decide(&q, &e);
    CU_ASSERT_TRUE(d.go);
    CU_ASSERT_EQUAL(e.sizes[d.size_index], 2);
    CU_ASSERT_EQUAL(d.rows, 1);
}

static void test_histogram_buckets_are_upper_bounds(void)
{
    static const double b[] = {1, 2, 4};
    sv_hist h;
    sv_hist_init(&h, b, 3);
    sv_hist_add(&h, 1);
    sv_hist_add(&h, 1.5);
    sv_hist_add(&h, 4);
    sv_hist_add(&h, 9);
    CU_ASSERT_EQUAL(h.counts[0], 1);
    CU_ASSERT_EQUAL(h.counts[1], 1);
    CU_ASSERT_EQUAL(h.counts[2], 1);
    CU_ASSERT_EQUAL(h.counts[3], 1);
    CU_ASSERT_EQUAL(h.count, 4);
    CU_ASSERT_DOUBLE_EQUAL(h.sum, 15.5, 1e-12);
}

/* ---- cache ------------------------------------------------------------------------------- */

static sv_blob *blob_of(size_t n, unsigned char fill)
{
    sv_blob *b = sv_blob_new(n);
    memset(b->data, fill, n);
    return b;
}

static void test_cache_coalesces_identical_requests_in_flight(void)
{
    sv_cache *c = sv_cache_create(1000);
    sv_key k = {1, 2};
    sv_blob *hit = NULL;
    int a, b, d;
    CU_ASSERT_EQUAL(sv_cache_begin(c, k, &a, &hit), SV_CACHE_LEAD);
    CU_ASSERT_EQUAL(sv_cache_begin(c, k, &b, &hit), SV_CACHE_FOLLOW);
    CU_ASSERT_EQUAL(sv_cache_begin(c, k, &d, &hit), SV_CACHE_FOLLOW);
    sv_blob *v = blob_of(10, 7);
    void **waiters;
    size_t n = sv_cache_finish(c, k, v, &waiters);
    CU_ASSERT_EQUAL(n, 2);
    if (n == 2) {
        CU_ASSERT_PTR_EQUAL(waiters[0], &b);
        CU_ASSERT_PTR_EQUAL(waiters[1], &d);
    }
    free(waiters);
    sv_blob_release(v); /* the cache keeps its own reference */
    CU_ASSERT_EQUAL(sv_cache_begin(c, k, &a, &hit), SV_CACHE_HIT);
    CU_ASSERT_PTR_NOT_NULL_FATAL(hit);
    CU_ASSERT_EQUAL(hit->size, 10);
    CU_ASSERT_EQUAL(hit->data[9], 7);
    sv_blob_release(hit);
    sv_cache_stats st;
    sv_cache_get_stats(c, &st);
    CU_ASSERT_EQUAL(st.misses, 1);
    CU_ASSERT_EQUAL(st.coalesced, 2);
    CU_ASSERT_EQUAL(st.hits, 3);
    CU_ASSERT_EQUAL(st.bytes, 10);
    sv_cache_destroy(c);
}

static void test_cache_evicts_least_recently_used_by_bytes(void)
{
    sv_cache *c = sv_cache_create(100);
    sv_key k1 = {1, 0}, k2 = {2, 0}, k3 = {3, 0};
    sv_blob *hit;
    void **w;
    int x;
    sv_key keys[] = {k1, k2};
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(sv_cache_begin(c, keys[i], &x, &hit), SV_CACHE_LEAD);
        sv_blob *v = blob_of(40, (unsigned char)i);
        sv_cache_finish(c, keys[i], v, &w);
        free(w);
        sv_blob_release(v);
    }
    /* Touch k1: k2 becomes the least recently used. */
    CU_ASSERT_EQUAL(sv_cache_begin(c, k1, &x, &hit), SV_CACHE_HIT);
    sv_blob_release(hit);
    CU_ASSERT_EQUAL(sv_cache_begin(c, k3, &x, &hit), SV_CACHE_LEAD);
    sv_blob *v = blob_of(40, 3);
    sv_cache_finish(c, k3, v, &w);
    free(w);
    sv_blob_release(v);
    sv_cache_stats st;
    sv_cache_get_stats(c, &st);
    CU_ASSERT_EQUAL(st.evictions, 1);
    CU_ASSERT_EQUAL(st.bytes, 80);
    CU_ASSERT_EQUAL(sv_cache_begin(c, k1, &x, &hit), SV_CACHE_HIT);
    sv_blob_release(hit);
    CU_ASSERT_EQUAL(sv_cache_begin(c, k2, &x, &hit), SV_CACHE_LEAD); /* evicted */
    sv_cache_finish(c, k2, NULL, &w);
    free(w);
    sv_cache_destroy(c);
}

static void test_cache_drops_failed_and_oversized_values(void)
{
    sv_cache *c = sv_cache_create(16);
    sv_key k = {5, 5};
    sv_blob *hit;
    void **w;
    int a, b;
    CU_ASSERT_EQUAL(sv_cache_begin(c, k, &a, &hit), SV_CACHE_LEAD);
    CU_ASSERT_EQUAL(sv_cache_begin(c, k, &b, &hit), SV_CACHE_FOLLOW);
    CU_ASSERT_EQUAL(sv_cache_finish(c, k, NULL, &w), 1); /* the follower learns of the failure */
    free(w);
    CU_ASSERT_EQUAL(sv_cache_begin(c, k, &a, &hit), SV_CACHE_LEAD);
    sv_blob *big = blob_of(17, 1);
    CU_ASSERT_EQUAL(sv_cache_finish(c, k, big, &w), 0);
    free(w);
    sv_blob_release(big);
    sv_cache_stats st;
    sv_cache_get_stats(c, &st);
    CU_ASSERT_EQUAL(st.bytes, 0);
    CU_ASSERT_EQUAL(st.entries, 0);
    CU_ASSERT_EQUAL(sv_cache_begin(c, k, &a, &hit), SV_CACHE_LEAD);
    sv_cache_finish(c, k, NULL, &w);
    free(w);
    sv_cache_destroy(c);
}

/* ---- KServe v2 --------------------------------------------------------------------------- */

static const loom_serve_tensor_info model_in[] = {
    {.name = "x", .dtype = LOOM_DTYPE_F32, .rank = 2, .dims = {-1, 3}},
    {.name = "ids", .dtype = LOOM_DTYPE_I64, .rank = 2, .dims = {-1, 2}},
};

static int parse(const char *body, size_t header_len, sv_parsed *p, char *err)
{
    return sv_kserve_parse(body, strlen(body), header_len, model_in, 2, p, err, 512);
}

static void test_parses_flat_and_nested_json_tensors(void)
{
    sv_parsed p;
    char err[512];
    const char *body =
        "{\"id\":\"r1\",\"inputs\":[{\"name\":\"ids\",\"datatype\":\"INT64\",\"shape\":[1,2],"
        "\"data\":[[7,-3]]},{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2,3],"
        "\"data\":[1,2,3,4.5,5,6]}],\"outputs\":[{\"name\":\"y\",\"parameters\":"
        "{\"binary_data\":true}}],\"parameters\":{\"timeout\":2500,\"priority\":3}}";
    CU_ASSERT_EQUAL_FATAL(parse(body, 0, &p, err), 0);
    CU_ASSERT_STRING_EQUAL(p.id, "r1");
    CU_ASSERT_EQUAL(p.n_inputs, 2);
    CU_ASSERT_STRING_EQUAL(p.input_names[0], "ids");
    const int64_t *ids = loom_tensor_data(p.inputs[0]);
    CU_ASSERT_EQUAL(ids[0], 7);
    CU_ASSERT_EQUAL(ids[1], -3);
    const float *x = loom_tensor_data(p.inputs[1]);
    CU_ASSERT_DOUBLE_EQUAL(x[3], 4.5, 0);
    int64_t dims[LOOM_MAX_RANK];
    loom_tensor_dims(p.inputs[1], dims);
    CU_ASSERT_EQUAL(dims[0], 2);
    CU_ASSERT_EQUAL(p.n_outputs, 1);
    CU_ASSERT_EQUAL(p.output_binary[0], 1);
    CU_ASSERT_DOUBLE_EQUAL(p.timeout_s, 0.0025, 1e-12);
    CU_ASSERT_EQUAL(p.priority, 3);
    sv_parsed_free(&p);
}

static void test_parses_binary_tensor_data(void)
{
    const char *json = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,3],"
                       "\"parameters\":{\"binary_data_size\":12}},{\"name\":\"ids\","
                       "\"datatype\":\"INT64\",\"shape\":[1,2],\"data\":[1,2]}]}";
    float xs[3] = {0.5f, -1.0f, 3.25f};
    size_t jl = strlen(json);
    char *body = malloc(jl + sizeof xs);
    memcpy(body, json, jl);
    memcpy(body + jl, xs, sizeof xs);
    sv_parsed p;
    char err[512];
    CU_ASSERT_EQUAL_FATAL(sv_kserve_parse(body, jl + sizeof xs, jl, model_in, 2, &p, err, 512), 0);
    const float *x = loom_tensor_data(p.inputs[0]);
    CU_ASSERT_EQUAL(x[2], 3.25f);
    sv_parsed_free(&p);
    /* Shorter than announced. */
    CU_ASSERT_EQUAL(sv_kserve_parse(body, jl + 8, jl, model_in, 2, &p, err, 512), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "shorter than announced"));
    /* Longer than announced. */
    char *body2 = malloc(jl + sizeof xs + 4);
    memcpy(body2, body, jl + sizeof xs);
    memset(body2 + jl + sizeof xs, 0, 4);
    CU_ASSERT_EQUAL(sv_kserve_parse(body2, jl + sizeof xs + 4, jl, model_in, 2, &p, err, 512), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "binary data"));
    free(body);
    free(body2);
}

static void expect_error(const char *body, const char *text)
{
    sv_parsed p;
    char err[512] = "";
    int rc = parse(body, 0, &p, err);
    CU_ASSERT_EQUAL(rc, -1);
    if (!strstr(err, text))
        fprintf(stderr, "\n  wanted '%s' in '%s'\n", text, err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, text));
}

static void test_names_what_is_wrong_in_a_bad_request(void)
{
    expect_error("{\"inputs\":[", "malformed JSON");
    expect_error("[1,2]", "not a JSON object");
    expect_error("{}", "'inputs'");
    expect_error("{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}",
                 "no input named 'z'");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[1,3],"
                 "\"data\":[1,2,3]}]}", "datatype FP64, the model wants FP32");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FLOAT\",\"shape\":[1,3],"
                 "\"data\":[1,2,3]}]}", "unknown datatype 'FLOAT'");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,3],"
                 "\"data\":[1,2]}]}", "2 data elements, its shape holds 3");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,3],"
                 "\"data\":[1,2,3,4]}]}", "more data elements");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,3],"
                 "\"data\":[1,\"a\",3]}]}", "not a number");
    expect_error("{\"inputs\":[{\"name\":\"ids\",\"datatype\":\"INT64\",\"shape\":[1,2],"
                 "\"data\":[1,2.5]}]}", "not an integer");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,-3],"
                 "\"data\":[]}]}", "shape[1]");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,3],"
                 "\"data\":[1,2,3]}]}", "input 'ids' is missing");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,3],"
                 "\"data\":[1,2,3]},{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,3],"
                 "\"data\":[1,2,3]}]}", "given twice");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,3],"
                 "\"parameters\":{\"binary_data_size\":12}},{\"name\":\"ids\",\"datatype\":"
                 "\"INT64\",\"shape\":[1,2],\"data\":[1,2]}]}", "shorter than announced");
}

static void test_writes_json_and_binary_responses(void)
{
    int64_t d[2] = {1, 2};
    loom_tensor *t;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, d, &t), LOOM_OK);
    float *v = loom_tensor_data(t);
    v[0] = 0.1f;
    v[1] = -2.0f;
    const char *names[1] = {"y"};
    loom_tensor *outs[1] = {t};
    loom_serve_result r = {.code = LOOM_SERVE_OK, .id = "q\"1", .model = "m", .version = "1",
                           .n_outputs = 1, .outputs = outs, .output_names = names};
    char *body, err[256];
    size_t len, hl;
    CU_ASSERT_EQUAL_FATAL(sv_kserve_response(&r, NULL, &body, &len, &hl, err, sizeof err), 0);
    CU_ASSERT_EQUAL(hl, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"id\":\"q\\\"1\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"shape\":[1,2]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"datatype\":\"FP32\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "[0.1,-2]")); /* the shortest text that reads back */
    free(body);
    sv_parsed p = {.binary_default = 1};
    CU_ASSERT_EQUAL_FATAL(sv_kserve_response(&r, &p, &body, &len, &hl, err, sizeof err), 0);
    CU_ASSERT_EQUAL(len, hl + 8);
    CU_ASSERT_EQUAL(memcmp(body + hl, v, 8), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"binary_data_size\":8"));
    free(body);
    char *on[1] = {"nope"};
    int ob[1] = {-1};
    sv_parsed q = {.n_outputs = 1, .output_names = on, .output_binary = ob};
    CU_ASSERT_EQUAL(sv_kserve_response(&r, &q, &body, &len, &hl, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no output named 'nope'"));
    loom_tensor_destroy(t);
}

/* ---- the server in process --------------------------------------------------------------- */

/* y = 2x + 1 and s = x + x, x: [batch, 4] float32. */
static loom_graph *build_affine(int64_t batch, void *user)
{
    int *calls = user;
    __atomic_add_fetch(calls, 1, __ATOMIC_RELAXED);
    loom_graph *g = loom_graph_create("affine");
    int64_t dims[2] = {batch, 4};
    loom_value x = loom_input(g, "x", LOOM_DTYPE_F32, 2, dims);
    loom_value y = loom_add(g, loom_mul(g, x, loom_constant_f32(g, 2.0f)),
                            loom_constant_f32(g, 1.0f));
    loom_output(g, y, "y");
    loom_output(g, loom_add(g, x, x), "s");
    if (loom_graph_check(g) != LOOM_OK) {
        loom_graph_destroy(g);
        return NULL;
    }
    return g;
}

typedef struct collector {
    pthread_mutex_t mu;
    int answered, wrong, ok, hits, deadline;
    uint32_t max_batch_seen;
} collector;

typedef struct pending {
    collector *c;
    float base;
    int rows;
} pending;

static void on_done(loom_serve_result *r, void *user)
{
    pending *p = user;
    collector *c = p->c;
    int wrong = 0;
    if (r->code == LOOM_SERVE_OK) {
        if (r->n_outputs != 2) {
            wrong = 1;
        } else {
            int64_t dims[LOOM_MAX_RANK];
            loom_tensor_dims(r->outputs[0], dims);
            if (dims[0] != p->rows || dims[1] != 4)
                wrong = 1;
            const float *y = loom_tensor_data(r->outputs[0]);
            const float *s = loom_tensor_data(r->outputs[1]);
            for (int k = 0; !wrong && k < p->rows * 4; k++) {
                float x = p->base + (float)k;
                if (fabsf(y[k] - (2 * x + 1)) > 1e-4f || fabsf(s[k] - 2 * x) > 1e-4f)
                    wrong = 1;
            }
        }
    }
    pthread_mutex_lock(&c->mu);
    c->answered++;
    c->wrong += wrong;
    c->ok += r->code == LOOM_SERVE_OK;
    c->hits += r->cache_hit;
    c->deadline += r->code == LOOM_SERVE_DEADLINE;
    if (r->batch_rows > c->max_batch_seen)
        c->max_batch_seen = r->batch_rows;
    pthread_mutex_unlock(&c->mu);
    loom_serve_result_free(r);
    free(p);
}

static loom_tensor *input_rows(int rows, float base)
{
    int64_t d[2] = {rows, 4};
    loom_tensor *t;
    if (loom_tensor_create(LOOM_DTYPE_F32, 2, d, &t) != LOOM_OK)
        return NULL;
    float *v = loom_tensor_data(t);
    for (int k = 0; k < rows * 4; k++)
        v[k] = base + (float)k;
    return t;
}

static loom_runtime *rt;

static loom_serve_code submit(loom_server *s, collector *c, int rows, float base, double timeout,
                              int no_cache)
{
    loom_tensor *t = input_rows(rows, base);
    pending *p = malloc(sizeof *p);
    *p = (pending){c, base, rows};
    const loom_tensor *ins[1] = {t};
    loom_serve_request rq = {.struct_size = sizeof rq, .model = "affine", .inputs = ins,
                             .n_inputs = 1, .timeout_s = timeout, .no_cache = no_cache};
    loom_serve_code code = loom_serve_submit(s, &rq, on_done, p);
    if (code != LOOM_SERVE_OK)
        free(p);
    loom_tensor_destroy(t); /* the server copied it */
    return code;
}

/* A server of WORKERS workers serving the affine graph on the CPU with MAX_BATCH (WARM: its
 * plans made first); CALLS counts the graph's builds. */
static loom_server *affine_server(uint32_t workers, uint32_t max_batch, int warm, int *calls)
{
    loom_server *s;
    loom_server_options so = {.struct_size = sizeof so, .workers = workers};
    CU_ASSERT_EQUAL_FATAL(loom_server_create(rt, &so, &s), LOOM_OK);
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu"};
    loom_serve_model_options mo = {.struct_size = sizeof mo, .max_batch = max_batch, .warm = warm,
                                   .plan_options = &po};
    CU_ASSERT_EQUAL_FATAL(loom_server_add_graph(s, "affine", build_affine, calls, &mo), LOOM_OK);
    return s;
}

static void test_server_batches_and_splits_outputs_per_request(void)
{
    loom_server *s;
    char trace[] = "/tmp/loom-serve-trace-XXXXXX";
    int fd = mkstemp(trace);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    loom_server_options so = {.struct_size = sizeof so, .workers = 2, .trace_path = trace};
    CU_ASSERT_EQUAL_FATAL(loom_server_create(rt, &so, &s), LOOM_OK);
    int calls = 0;
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu"};
    loom_serve_model_options mo = {.struct_size = sizeof mo, .max_batch = 8,
                                   .plan_options = &po};
    CU_ASSERT_EQUAL_FATAL(loom_server_add_graph(s, "affine", build_affine, &calls, &mo), LOOM_OK);
    loom_serve_tensor_info in[2];
    CU_ASSERT_EQUAL(loom_server_model_inputs(s, "affine", NULL, in, 2), 1);
    CU_ASSERT_EQUAL(in[0].dims[0], -1);
    CU_ASSERT_EQUAL(in[0].dims[1], 4);
    collector c = {.answered = 0};
    pthread_mutex_init(&c.mu, NULL);
    int n = 0, rows_total = 0;
    for (int i = 0; i < 200; i++) {
        int rows = 1 + i % 3;
        if (submit(s, &c, rows, (float)i * 10, 0, 1) == LOOM_SERVE_OK) {
            n++;
            rows_total += rows;
        }
    }
    CU_ASSERT_EQUAL(n, 200);
    loom_server_drain(s);
    CU_ASSERT_EQUAL(c.answered, n);
    CU_ASSERT_EQUAL(c.ok, n);
    CU_ASSERT_EQUAL(c.wrong, 0);
    loom_serve_model_stats st = {.struct_size = sizeof st};
    CU_ASSERT_EQUAL_FATAL(loom_server_model_stats(s, "affine", NULL, &st), LOOM_OK);
    CU_ASSERT_EQUAL(st.requests, (uint64_t)n);
    CU_ASSERT_EQUAL(st.ok, (uint64_t)n);
    CU_ASSERT_EQUAL(st.rows_run, (uint64_t)rows_total);
    CU_ASSERT_TRUE(st.batches >= 1 && st.batches <= (uint64_t)n);
    /* After the drain nothing more is accepted. */
    CU_ASSERT_EQUAL(submit(s, &c, 1, 0, 0, 1), LOOM_SERVE_UNAVAILABLE);
    char *text;
    CU_ASSERT_EQUAL_FATAL(loom_server_metrics_text(s, &text), LOOM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# TYPE loom_batch_size histogram\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "loom_batch_size_bucket{model=\"affine\",version=\"1\","
                                        "le=\"+Inf\"}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# TYPE loom_requests_total counter\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "loom_request_duration_seconds_count{model=\"affine\""));
    loom_string_free(text);
    loom_server_destroy(s);
    pthread_mutex_destroy(&c.mu);

    /* The trace: one JSON array; every request a begin/end pair whose end says ok, and the
     * batches' rows add up to the rows submitted. */
    json_error_t je;
    json_t *tr = json_load_file(trace, 0, &je);
    CU_ASSERT_FATAL(json_is_array(tr));
    int begins = 0, ends = 0, ends_ok = 0, batch_rows = 0;
    size_t i;
    json_t *e;
    json_array_foreach(tr, i, e) {
        const char *ph = json_string_value(json_object_get(e, "ph"));
        const char *cat = json_string_value(json_object_get(e, "cat"));
        json_t *args = json_object_get(e, "args");
        if (!ph || !cat)
            continue;
        if (!strcmp(cat, "request") && !strcmp(ph, "b"))
            begins++;
        if (!strcmp(cat, "request") && !strcmp(ph, "e")) {
            ends++;
            ends_ok += !strcmp(json_string_value(json_object_get(args, "status")), "ok") &&
                       !strcmp(json_string_value(json_object_get(args, "model")), "affine");
        }
        if (!strcmp(cat, "batch") && !strcmp(ph, "X")) {
            batch_rows += (int)json_integer_value(json_object_get(args, "rows"));
            CU_ASSERT_TRUE(json_real_value(json_object_get(e, "dur")) >= 0);
        }
    }
    CU_ASSERT_EQUAL(begins, n);
    CU_ASSERT_EQUAL(ends, n);
    CU_ASSERT_EQUAL(ends_ok, n);
    CU_ASSERT_EQUAL(batch_rows, rows_total);
    json_decref(tr);
    unlink(trace);
    /* A trace that cannot be created: the server does not start, and says why. */
    so.trace_path = "/nonexistent-dir/trace.json";
    CU_ASSERT_EQUAL(loom_server_create(rt, &so, &s), LOOM_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "/nonexistent-dir/trace.json"));
}

/* loom_serve_request.borrow_inputs: the server runs the caller's tensors in place (kept alive
 * by the caller until each answer), answers every request right, pads batches, and never frees
 * them (ASan would see a double free); a struct_size that ends before the flag means copy (the
 * tensor is destroyed right after submit, as the copying contract allows). */
static void test_server_borrowed_inputs_are_used_in_place(void)
{
    int calls = 0;
    loom_server *s = affine_server(2, 8, 0, &calls);
    collector c = {.answered = 0};
    pthread_mutex_init(&c.mu, NULL);
    enum { N = 120 };
    loom_tensor *kept[N];
    int n = 0;
    for (int i = 0; i < N; i++) {
        int rows = 1 + i % 3;
        kept[i] = input_rows(rows, (float)i * 7);
        CU_ASSERT_PTR_NOT_NULL_FATAL(kept[i]);
        pending *p = malloc(sizeof *p);
        *p = (pending){&c, (float)i * 7, rows};
        const loom_tensor *ins[1] = {kept[i]};
        loom_serve_request rq = {.struct_size = sizeof rq, .model = "affine", .inputs = ins,
                                 .n_inputs = 1, .no_cache = 1, .borrow_inputs = 1};
        if (i % 4 == 3) /* an older caller's struct: no flag, so copied */
            rq.struct_size = (uint32_t)offsetof(loom_serve_request, borrow_inputs);
        if (loom_serve_submit(s, &rq, on_done, p) == LOOM_SERVE_OK)
            n++;
        else
            free(p);
        if (i % 4 == 3) {
            loom_tensor_destroy(kept[i]);
            kept[i] = NULL;
        }
    }
    CU_ASSERT_EQUAL(n, N);
    loom_server_drain(s);
    CU_ASSERT_EQUAL(c.answered, N);
    CU_ASSERT_EQUAL(c.ok, N);
    CU_ASSERT_EQUAL(c.wrong, 0);
    /* The inputs are the caller's, untouched. */
    int changed = 0;
    for (int i = 0; i < N; i++) {
        if (!kept[i])
            continue;
        const float *v = loom_tensor_data(kept[i]);
        for (int k = 0; k < (1 + i % 3) * 4; k++)
            changed += v[k] != (float)i * 7 + (float)k;
        loom_tensor_destroy(kept[i]);
    }
    CU_ASSERT_EQUAL(changed, 0);
    loom_server_destroy(s);
    pthread_mutex_destroy(&c.mu);
}

/* Batches whose plans run on the same cores never run at once beyond what the CPU backend
 * has cores for (cores / threads: one batch with the default pool), however many workers. */
static void test_batches_on_one_device_do_not_overlap(void)
{
    uint32_t cap = 1;
    for (size_t d = 0; d < loom_runtime_device_count(rt); d++) {
        loom_device_info info = {.struct_size = sizeof info};
        char id[64];
        if (loom_runtime_device(rt, d, id, sizeof id, &info) == LOOM_OK &&
            info.kind == LOOM_DEVICE_CPU && info.threads > 0 &&
            info.compute_units / info.threads > cap)
            cap = info.compute_units / info.threads;
    }
    loom_server *s;
    char trace[] = "/tmp/loom-serve-trace-XXXXXX";
    int fd = mkstemp(trace);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    loom_server_options so = {.struct_size = sizeof so, .workers = 4, .trace_path = trace};
    CU_ASSERT_EQUAL_FATAL(loom_server_create(rt, &so, &s), LOOM_OK);
    int calls = 0;
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu"};
    loom_serve_model_options mo = {.struct_size = sizeof mo, .max_batch = 2, .warm = 1,
                                   .plan_options = &po};
    CU_ASSERT_EQUAL_FATAL(loom_server_add_graph(s, "affine", build_affine, &calls, &mo), LOOM_OK);
    collector c = {.answered = 0};
    pthread_mutex_init(&c.mu, NULL);
    for (int i = 0; i < 300; i++)
        CU_ASSERT_EQUAL(submit(s, &c, 1, (float)i, 0, 1), LOOM_SERVE_OK);
    loom_server_drain(s);
    CU_ASSERT_EQUAL(c.ok, 300);
    CU_ASSERT_EQUAL(c.wrong, 0);
    loom_server_destroy(s);
    pthread_mutex_destroy(&c.mu);
    /* The most batches in progress at any instant, from the trace's begin and end times. */
    json_error_t je;
    json_t *tr = json_load_file(trace, 0, &je);
    CU_ASSERT_FATAL(json_is_array(tr));
    size_t n = 0, i;
    json_t *e;
    double *start = calloc(json_array_size(tr), sizeof *start);
    double *end = calloc(json_array_size(tr), sizeof *end);
    CU_ASSERT_FATAL(start && end);
    json_array_foreach(tr, i, e) {
        const char *cat = json_string_value(json_object_get(e, "cat"));
        if (cat && !strcmp(cat, "batch")) {
            start[n] = json_number_value(json_object_get(e, "ts"));
            end[n] = start[n] + json_number_value(json_object_get(e, "dur"));
            n++;
        }
    }
    CU_ASSERT_TRUE(n >= 150); /* max_batch 2 */
    uint32_t most = 0;
    for (size_t a = 0; a < n; a++) {
        uint32_t at_once = 0; /* batches running at A's start (times printed to 1 ns) */
        for (size_t b = 0; b < n; b++)
            at_once += start[b] <= start[a] + 0.002 && end[b] > start[a] + 0.002;
        if (at_once > most)
            most = at_once;
    }
    CU_ASSERT_TRUE(most >= 1);
    CU_ASSERT_TRUE(most <= cap);
    free(start);
    free(end);
    json_decref(tr);
    remove(trace);
}

static void test_server_refuses_bad_requests_and_answers_expired_ones(void)
{
    loom_server *s;
    CU_ASSERT_EQUAL_FATAL(loom_server_create(rt, NULL, &s), LOOM_OK);
    int calls = 0;
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu"};
    loom_serve_model_options mo = {.struct_size = sizeof mo, .max_batch = 4,
                                   .plan_options = &po};
    CU_ASSERT_EQUAL_FATAL(loom_server_add_graph(s, "affine", build_affine, &calls, &mo), LOOM_OK);
    CU_ASSERT_EQUAL(loom_server_add_graph(s, "affine", build_affine, &calls, &mo),
                    LOOM_ERR_INVALID_ARGUMENT);
    collector c = {.answered = 0};
    pthread_mutex_init(&c.mu, NULL);
    /* Too many rows for the model's max batch. */
    CU_ASSERT_EQUAL(submit(s, &c, 5, 0, 0, 1), LOOM_SERVE_BAD_REQUEST);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "batch of 5"));
    /* Wrong dtype and shape, unknown model and version. */
    int64_t d[2] = {1, 3};
    loom_tensor *t;
    loom_tensor_create(LOOM_DTYPE_F32, 2, d, &t);
    const loom_tensor *ins[1] = {t};
    const char *names[1] = {"x"};
    loom_serve_request rq = {.struct_size = sizeof rq, .model = "affine", .inputs = ins,
                             .input_names = names, .n_inputs = 1};
    loom_serve_result *r;
    CU_ASSERT_EQUAL(loom_serve_infer(s, &rq, &r), LOOM_SERVE_BAD_REQUEST);
    CU_ASSERT_PTR_NOT_NULL(strstr(r->message, "shape [1,3]"));
    loom_serve_result_free(r);
    names[0] = "nope";
    CU_ASSERT_EQUAL(loom_serve_infer(s, &rq, &r), LOOM_SERVE_BAD_REQUEST);
    CU_ASSERT_PTR_NOT_NULL(strstr(r->message, "no input named 'nope'"));
    loom_serve_result_free(r);
    rq.model = "other";
    CU_ASSERT_EQUAL(loom_serve_infer(s, &rq, &r), LOOM_SERVE_NOT_FOUND);
    loom_serve_result_free(r);
    rq.model = "affine";
    rq.version = "7";
    CU_ASSERT_EQUAL(loom_serve_infer(s, &rq, &r), LOOM_SERVE_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(r->message, "no version '7'"));
    loom_serve_result_free(r);
    loom_tensor_destroy(t);
    /* A deadline of a nanosecond has passed before any worker can look: answered, not run. */
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(submit(s, &c, 1, 0, 1e-9, 1), LOOM_SERVE_OK);
    loom_server_drain(s);
    CU_ASSERT_EQUAL(c.answered, 5);
    CU_ASSERT_EQUAL(c.deadline, 5);
    loom_serve_model_stats st = {.struct_size = sizeof st};
    loom_server_model_stats(s, "affine", NULL, &st);
    CU_ASSERT_EQUAL(st.deadline_missed, 5);
    CU_ASSERT_EQUAL(st.batches, 0);
    loom_server_destroy(s);
    pthread_mutex_destroy(&c.mu);
}

/* Requests with their own deadline or a priority queued among plain ones (the workers walk
 * the queue only while such requests are in it): the expired ones are answered with the
 * deadline error, every other one runs, each exactly once. */
static void test_server_mixed_queue_expires_only_the_late(void)
{
    int calls = 0;
    loom_server *s = affine_server(2, 4, 0, &calls);
    collector c = {.answered = 0};
    pthread_mutex_init(&c.mu, NULL);
    int late = 0, plain = 0;
    for (int i = 0; i < 300; i++) {
        int rows = 1 + i % 2;
        if (i % 7 == 3) {
            CU_ASSERT_EQUAL(submit(s, &c, rows, (float)i, 1e-9, 1), LOOM_SERVE_OK);
            late++;
            continue;
        }
        loom_tensor *t = input_rows(rows, (float)i);
        pending *p = malloc(sizeof *p);
        *p = (pending){&c, (float)i, rows};
        const loom_tensor *ins[1] = {t};
        /* Some with a priority (queued ahead), some with a deadline that is easily met. */
        loom_serve_request rq = {.struct_size = sizeof rq, .model = "affine", .inputs = ins,
                                 .n_inputs = 1, .no_cache = 1, .priority = i % 5 == 0 ? 3 : 0,
                                 .timeout_s = i % 11 == 0 ? 60 : 0};
        CU_ASSERT_EQUAL(loom_serve_submit(s, &rq, on_done, p), LOOM_SERVE_OK);
        loom_tensor_destroy(t);
        plain++;
    }
    loom_server_drain(s);
    CU_ASSERT_EQUAL(c.answered, late + plain);
    CU_ASSERT_EQUAL(c.deadline, late);
    CU_ASSERT_EQUAL(c.ok, plain);
    CU_ASSERT_EQUAL(c.wrong, 0);
    loom_server_destroy(s);
    pthread_mutex_destroy(&c.mu);
}

/* Closed loops on several threads (each waits for its answer before sending the next): a
 * submit wakes a worker only when one waits, and none may be missed, or a request would wait
 * for ever (this test would then time out). */
typedef struct closed_loop {
    loom_server *s;
    int base, n, ok, wrong;
} closed_loop;

static void *closed_loop_main(void *arg)
{
    closed_loop *cl = arg;
    for (int i = 0; i < cl->n; i++) {
        float base = (float)(cl->base + i);
        loom_tensor *t = input_rows(1, base);
        const loom_tensor *ins[1] = {t};
        loom_serve_request rq = {.struct_size = sizeof rq, .model = "affine", .inputs = ins,
                                 .n_inputs = 1, .no_cache = 1};
        loom_serve_result *r = NULL;
        if (loom_serve_infer(cl->s, &rq, &r) == LOOM_SERVE_OK && r->n_outputs == 2) {
            const float *y = loom_tensor_data(r->outputs[0]);
            int good = 1;
            for (int k = 0; k < 4; k++)
                good &= fabsf(y[k] - (2 * (base + (float)k) + 1)) <= 1e-4f;
            cl->ok += good;
            cl->wrong += !good;
        }
        loom_serve_result_free(r);
        loom_tensor_destroy(t);
    }
    return NULL;
}

static void test_server_closed_loops_are_all_answered(void)
{
    int calls = 0;
    loom_server *s = affine_server(2, 8, 1, &calls);
    enum { THREADS = 5, EACH = 200 };
    pthread_t th[THREADS];
    closed_loop cl[THREADS];
    for (int k = 0; k < THREADS; k++) {
        cl[k] = (closed_loop){s, k * 1000, EACH, 0, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[k], NULL, closed_loop_main, &cl[k]), 0);
    }
    for (int k = 0; k < THREADS; k++) {
        pthread_join(th[k], NULL);
        CU_ASSERT_EQUAL(cl[k].ok, EACH);
        CU_ASSERT_EQUAL(cl[k].wrong, 0);
    }
    loom_server_destroy(s);
}

static void test_server_cache_answers_repeats_without_running(void)
{
    loom_server *s;
    CU_ASSERT_EQUAL_FATAL(loom_server_create(rt, NULL, &s), LOOM_OK);
    int calls = 0;
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu"};
    loom_serve_model_options mo = {.struct_size = sizeof mo, .max_batch = 4,
                                   .cache_bytes = 1 << 20, .plan_options = &po};
    CU_ASSERT_EQUAL_FATAL(loom_server_add_graph(s, "affine", build_affine, &calls, &mo), LOOM_OK);
    collector c = {.answered = 0};
    pthread_mutex_init(&c.mu, NULL);
    /* 50 identical requests: at most one runs per moment, the others coalesce or hit. */
    for (int i = 0; i < 50; i++)
        CU_ASSERT_EQUAL(submit(s, &c, 2, 3.0f, 0, 0), LOOM_SERVE_OK);
    loom_server_drain(s);
    CU_ASSERT_EQUAL(c.answered, 50);
    CU_ASSERT_EQUAL(c.ok, 50);
    CU_ASSERT_EQUAL(c.wrong, 0);
    loom_serve_model_stats st = {.struct_size = sizeof st};
    loom_server_model_stats(s, "affine", NULL, &st);
    CU_ASSERT_EQUAL(st.cache_misses, 1);
    CU_ASSERT_EQUAL(st.cache_hits, 49);
    CU_ASSERT_EQUAL(st.rows_run, 2);
    CU_ASSERT_TRUE(st.cache_bytes > 0);
    CU_ASSERT_EQUAL(c.hits, 49);
    loom_server_destroy(s);

    /* With the cache turned off every request runs. */
    CU_ASSERT_EQUAL_FATAL(loom_server_create(rt, NULL, &s), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_server_add_graph(s, "affine", build_affine, &calls, &mo), LOOM_OK);
    CU_ASSERT_EQUAL(loom_server_set_cache(s, "affine", NULL, 0), LOOM_OK);
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(submit(s, &c, 1, 3.0f, 0, 0), LOOM_SERVE_OK);
    loom_server_drain(s);
    loom_server_model_stats(s, "affine", NULL, &st);
    CU_ASSERT_EQUAL(st.rows_run, 10);
    CU_ASSERT_EQUAL(st.cache_hits, 0);
    loom_server_destroy(s);
    pthread_mutex_destroy(&c.mu);
}

static void test_model_without_batch_axis_is_refused(void)
{
    loom_server *s;
    CU_ASSERT_EQUAL_FATAL(loom_server_create(rt, NULL, &s), LOOM_OK);
    int calls = 0;
    loom_serve_model_options mo = {.struct_size = sizeof mo, .batch_axis = 2};
    CU_ASSERT_EQUAL(loom_server_add_graph(s, "affine", build_affine, &calls, &mo),
                    LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_serve_last_error(), "batch axis 2"));
    CU_ASSERT_EQUAL(loom_server_model_count(s), 0);
    loom_server_destroy(s);
}

/* A device that fails during batches (the fail-execute test plugin: its first 3 executions
 * work, every later one fails): each failed node is re-run on the CPU by the plan's fallback
 * and every request is still answered, correctly. */
static const char *fail_plugin;

static void test_device_failure_mid_batch_is_answered_by_fallback(void)
{
    if (!fail_plugin)
        return;
    setenv("LOOM_TEST_FAIL_AFTER", "3", 1);
    const char *paths[1] = {fail_plugin};
    loom_runtime_options ro = {.struct_size = sizeof ro, .plugin_paths = paths,
                               .n_plugin_paths = 1, .no_default_plugins = 1};
    loom_runtime *frt = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_runtime_create(&ro, &frt), LOOM_OK);
    unsetenv("LOOM_TEST_FAIL_AFTER");
    loom_server *s;
    CU_ASSERT_EQUAL_FATAL(loom_server_create(frt, NULL, &s), LOOM_OK);
    int calls = 0;
    /* Not strict: nodes the plugin cannot run go to the CPU, and so do failed ones. */
    loom_plan_options po = {.struct_size = sizeof po, .device = "fail-execute:0"};
    loom_serve_model_options mo = {.struct_size = sizeof mo, .max_batch = 4,
                                   .plan_options = &po};
    loom_status ast = loom_server_add_graph(s, "affine", build_affine, &calls, &mo);
    if (ast != LOOM_OK)
        fprintf(stderr, "add_graph: %s\n", loom_serve_last_error());
    CU_ASSERT_EQUAL_FATAL(ast, LOOM_OK);
    collector c = {.answered = 0};
    pthread_mutex_init(&c.mu, NULL);
    int n = 0;
    for (int i = 0; i < 40; i++)
        n += submit(s, &c, 1 + i % 2, (float)i, 0, 1) == LOOM_SERVE_OK;
    loom_server_drain(s);
    CU_ASSERT_EQUAL(n, 40);
    CU_ASSERT_EQUAL(c.answered, n);
    CU_ASSERT_EQUAL(c.ok, n);
    CU_ASSERT_EQUAL(c.wrong, 0);
    loom_server_destroy(s);
    pthread_mutex_destroy(&c.mu);
    /* The runtime said what failed and where the work went. */
    int said = 0;
    for (size_t i = 0; i < loom_runtime_message_count(frt); i++) {
        const char *msg = loom_runtime_message(frt, i);
        said += msg && strstr(msg, "fail-execute") != NULL;
    }
    CU_ASSERT_TRUE(said > 0);
    loom_runtime_destroy(frt);
}

int main(int argc, char **argv)
{
    fail_plugin = argc > 1 ? argv[1] : NULL;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite p = CU_add_suite("serve_policy", NULL, NULL);
    CU_add_test(p, "sizes are powers of two up to max", test_sizes_are_powers_of_two_up_to_max);
    CU_add_test(p, "estimates scale from the nearest known size",
                test_estimates_scale_from_nearest_known_size);
    CU_add_test(p, "dispatches at max batch", test_dispatches_at_max_batch);
    CU_add_test(p, "waits when a bigger batch is cheaper and the deadline allows",
                test_waits_when_bigger_batch_is_cheaper_and_deadline_allows);
    CU_add_test(p, "dispatches when waiting would miss the deadline",
                test_dispatches_when_waiting_would_miss_the_deadline);
    CU_add_test(p, "dispatches at once without arrivals or gain",
                test_dispatches_at_once_without_arrivals_or_gain);
    CU_add_test(p, "picks the size by cost per useful row", test_picks_size_by_cost_per_useful_row);
    CU_add_test(p, "never picks a size that would miss the deadline",
                test_never_picks_a_size_that_would_miss_the_deadline);
    CU_add_test(p, "a stale estimate is bounded by fresher ones",
                test_stale_estimate_is_bounded_by_fresher_ones);
    CU_add_test(p, "waits only when the idle wait pays", test_waits_only_when_the_idle_wait_pays);
    CU_add_test(p, "a request's whole wait is bounded by its run now",
                test_total_wait_bounded_by_the_run_now);
    CU_add_test(p, "leaves room for the requests behind",
                test_leaves_room_for_the_requests_behind);
    CU_add_test(p, "pads to a size that runs faster", test_pads_to_a_size_that_runs_faster);
    CU_add_test(p, "histogram buckets are upper bounds", test_histogram_buckets_are_upper_bounds);
    CU_pSuite c = CU_add_suite("serve_cache", NULL, NULL);
    CU_add_test(c, "coalesces identical requests in flight",
                test_cache_coalesces_identical_requests_in_flight);
    CU_add_test(c, "evicts the least recently used by bytes",
                test_cache_evicts_least_recently_used_by_bytes);
    CU_add_test(c, "drops failed and oversized values", test_cache_drops_failed_and_oversized_values);
    CU_pSuite k = CU_add_suite("serve_kserve", NULL, NULL);
    CU_add_test(k, "parses flat and nested JSON tensors", test_parses_flat_and_nested_json_tensors);
    CU_add_test(k, "parses binary tensor data", test_parses_binary_tensor_data);
    CU_add_test(k, "names what is wrong in a bad request", test_names_what_is_wrong_in_a_bad_request);
    CU_add_test(k, "writes JSON and binary responses", test_writes_json_and_binary_responses);
    CU_pSuite s = CU_add_suite("serve_server", NULL, NULL);
    CU_add_test(s, "batches and splits outputs per request",
                test_server_batches_and_splits_outputs_per_request);
    CU_add_test(s, "borrowed inputs are used in place",
                test_server_borrowed_inputs_are_used_in_place);
    CU_add_test(s, "batches on one device do not overlap",
                test_batches_on_one_device_do_not_overlap);
    CU_add_test(s, "refuses bad requests and answers expired ones",
                test_server_refuses_bad_requests_and_answers_expired_ones);
    CU_add_test(s, "a mixed queue expires only the late",
                test_server_mixed_queue_expires_only_the_late);
    CU_add_test(s, "closed loops on several threads are all answered",
                test_server_closed_loops_are_all_answered);
    CU_add_test(s, "cache answers repeats without running",
                test_server_cache_answers_repeats_without_running);
    CU_add_test(s, "a model without the batch axis is refused",
                test_model_without_batch_axis_is_refused);
    CU_add_test(s, "a device failure mid-batch is answered by the fallback",
                test_device_failure_mid_batch_is_answered_by_fallback);
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
    return failed ? 1 : 0;
}
