/*
 * Models with dynamic shapes (include/loom/model.h, issue 12): one load, runs of any admissible
 * shape through shape-specialised plans that share one copy of the weights. Symbols checked
 * against each other, shapes fed as inputs evaluated per run, the cache's hits, misses and
 * evictions, weights held once, and bad inputs refused with one line. Models are made by
 * tests/data/model/make_models.py; expected numbers come from naive loops here.
 */
#include <loom/loom.h>

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static loom_runtime *rt;
static char data_dir[1024];

static void model_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", data_dir, name);
}

static loom_model *load(const char *name, const loom_model_options *opt)
{
    char p[1200];
    model_path(p, sizeof p, name);
    loom_model *m = NULL;
    loom_status st = loom_model_load_onnx(rt, p, opt, &m);
    if (st != LOOM_OK)
        fprintf(stderr, "load %s: %s\n", name, loom_last_error());
    CU_ASSERT_EQUAL_FATAL(st, LOOM_OK);
    return m;
}

static loom_tensor *f32(uint32_t rank, const int64_t *dims, float base)
{
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, rank, dims, &t), LOOM_OK);
    float *p = loom_tensor_data(t);
    size_t n = loom_tensor_nbytes(t) / sizeof *p;
    for (size_t i = 0; i < n; i++)
        p[i] = base + 0.25f * (float)(i % 13) - 1.0f;
    return t;
}

static loom_tensor *i64s(size_t n, const int64_t *v)
{
    loom_tensor *t = NULL;
    int64_t d = (int64_t)n;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_I64, 1, &d, &t), LOOM_OK);
    memcpy(loom_tensor_data(t), v, n * sizeof *v);
    return t;
}

/* dyn_mlp: y = Relu(x @ W + B), s = 2 z; W[k][j] = 0.01 (4k + j) - 0.1, B[j] = 0.5 j - 0.5. */
static void check_mlp(const loom_tensor *x, const loom_tensor *z, loom_tensor *const *out)
{
    int64_t xd[8], zd[8], yd[8];
    loom_tensor_dims(x, xd);
    loom_tensor_dims(z, zd);
    loom_tensor_dims(out[0], yd);
    CU_ASSERT_EQUAL(yd[0], xd[0]);
    CU_ASSERT_EQUAL(yd[1], 4);
    const float *xp = loom_tensor_data(x), *yp = loom_tensor_data(out[0]);
    for (int64_t b = 0; b < xd[0]; b++)
        for (int j = 0; j < 4; j++) {
            double acc = 0.5 * j - 0.5;
            for (int k = 0; k < 8; k++)
                acc += (double)xp[b * 8 + k] * (0.01 * (4 * k + j) - 0.1);
            double want = acc > 0 ? acc : 0;
            CU_ASSERT(fabs(yp[b * 4 + j] - want) <= 1e-5 + 1e-4 * fabs(want));
        }
    CU_ASSERT_EQUAL(loom_tensor_nbytes(out[1]), loom_tensor_nbytes(z));
    const float *zp = loom_tensor_data(z), *sp = loom_tensor_data(out[1]);
    for (size_t i = 0; i < loom_tensor_nbytes(z) / 4; i++)
        CU_ASSERT_EQUAL(sp[i], 2 * zp[i]);
}

/* Run dyn_mlp with batch B and sequence S; returns the status, checks numbers on success. */
static loom_status run_mlp(loom_model *m, int64_t b, int64_t s, loom_model_run_stats *rs)
{
    int64_t xd[2] = {b, 8}, zd[2] = {b, s};
    loom_tensor *x = f32(2, xd, (float)b), *z = f32(2, zd, 0.5f);
    const loom_tensor *in[2] = {x, z};
    loom_tensor *out[2] = {NULL, NULL};
    loom_status st = loom_model_run(m, in, 2, out, 2, rs);
    if (st == LOOM_OK)
        check_mlp(x, z, out);
    else
        CU_ASSERT(out[0] == NULL && out[1] == NULL);
    loom_tensor_destroy(out[0]);
    loom_tensor_destroy(out[1]);
    loom_tensor_destroy(x);
    loom_tensor_destroy(z);
    return st;
}

static loom_model_stats stats_of(const loom_model *m)
{
    loom_model_stats s = {.struct_size = sizeof s};
    CU_ASSERT_EQUAL(loom_model_stats_get(m, &s), LOOM_OK);
    return s;
}

static void test_inputs_report_dynamic_dims_and_symbols(void)
{
    loom_model *m = load("dyn_mlp.onnx", NULL);
    CU_ASSERT_EQUAL(loom_model_input_count(m), 2);
    CU_ASSERT_EQUAL(loom_model_output_count(m), 2);
    loom_model_io io = {.struct_size = sizeof io};
    CU_ASSERT_EQUAL(loom_model_input_info(m, 1, &io), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(io.name, "z");
    CU_ASSERT_EQUAL(io.dtype, LOOM_DTYPE_F32);
    CU_ASSERT_EQUAL(io.rank, 2);
    CU_ASSERT_EQUAL(io.dims[0], -1);
    CU_ASSERT_EQUAL(io.dims[1], -1);
    CU_ASSERT_STRING_EQUAL(io.dim_params[0], "batch");
    CU_ASSERT_STRING_EQUAL(io.dim_params[1], "seq");
    CU_ASSERT_EQUAL(io.needs_value, 0);
    CU_ASSERT_EQUAL(loom_model_input_info(m, 0, &io), LOOM_OK);
    CU_ASSERT_EQUAL(io.dims[1], 8);
    CU_ASSERT_PTR_NULL(io.dim_params[1]);
    CU_ASSERT_EQUAL(loom_model_output_info(m, 0, &io), LOOM_OK);
    CU_ASSERT_STRING_EQUAL(io.name, "y");
    CU_ASSERT_EQUAL(loom_model_input_info(m, 2, &io), LOOM_ERR_INVALID_ARGUMENT);
    loom_model_destroy(m);
}

static void test_each_shape_gets_a_specialisation_and_repeats_hit(void)
{
    loom_model *m = load("dyn_mlp.onnx", NULL);
    loom_model_run_stats rs = {.struct_size = sizeof rs};
    CU_ASSERT_EQUAL(run_mlp(m, 1, 5, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(rs.cache_hit, 0);
    CU_ASSERT(rs.create_ms > 0);
    CU_ASSERT_EQUAL(run_mlp(m, 1, 5, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(rs.cache_hit, 1);
    CU_ASSERT_EQUAL(rs.create_ms, 0);
    CU_ASSERT_EQUAL(run_mlp(m, 4, 5, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(rs.cache_hit, 0);
    CU_ASSERT_EQUAL(run_mlp(m, 4, 7, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(run_mlp(m, 1, 5, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(rs.cache_hit, 1);
    loom_model_stats s = stats_of(m);
    CU_ASSERT_EQUAL(s.runs, 5);
    CU_ASSERT_EQUAL(s.hits, 2);
    CU_ASSERT_EQUAL(s.misses, 3);
    CU_ASSERT_EQUAL(s.live, 3);
    CU_ASSERT_EQUAL(s.evictions, 0);
    loom_model_destroy(m);
}

static void test_cache_evicts_least_recently_used(void)
{
    loom_model_options o = {.struct_size = sizeof o, .max_specialisations = 2};
    loom_model *m = load("dyn_mlp.onnx", &o);
    loom_model_run_stats rs = {.struct_size = sizeof rs};
    CU_ASSERT_EQUAL(run_mlp(m, 1, 3, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(run_mlp(m, 2, 3, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(run_mlp(m, 1, 3, &rs), LOOM_OK); /* batch 1 is now the most recent */
    CU_ASSERT_EQUAL(rs.cache_hit, 1);
    CU_ASSERT_EQUAL(run_mlp(m, 3, 3, &rs), LOOM_OK); /* evicts batch 2 */
    loom_model_stats s = stats_of(m);
    CU_ASSERT_EQUAL(s.evictions, 1);
    CU_ASSERT_EQUAL(s.live, 2);
    CU_ASSERT_EQUAL(run_mlp(m, 1, 3, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(rs.cache_hit, 1);
    CU_ASSERT_EQUAL(run_mlp(m, 2, 3, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(rs.cache_hit, 0);
    s = stats_of(m);
    CU_ASSERT_EQUAL(s.evictions, 2);
    CU_ASSERT_EQUAL(s.misses, 4);
    loom_model_destroy(m);

    /* A byte bound: each specialisation holds its intermediates; one byte keeps only the
     * newest. */
    loom_model_options ob = {.struct_size = sizeof ob, .max_bytes = 1};
    m = load("dyn_mlp.onnx", &ob);
    CU_ASSERT_EQUAL(run_mlp(m, 1, 3, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(run_mlp(m, 2, 3, &rs), LOOM_OK);
    s = stats_of(m);
    CU_ASSERT_EQUAL(s.live, 1);
    CU_ASSERT_EQUAL(s.evictions, 1);
    loom_model_destroy(m);
}

static void test_weights_are_held_once_for_every_specialisation(void)
{
    loom_model *m = load("dyn_mlp.onnx", NULL);
    loom_model_stats s = stats_of(m);
    /* W (8x4), B (4) and the scalar 2: decoded once at load. */
    CU_ASSERT_EQUAL(s.weight_bytes, (32 + 4 + 1) * sizeof(float));
    CU_ASSERT_EQUAL(s.weight_tensors, 3);
    for (int64_t b = 1; b <= 4; b++)
        CU_ASSERT_EQUAL(run_mlp(m, b, 2, NULL), LOOM_OK);
    s = stats_of(m);
    CU_ASSERT_EQUAL(s.live, 4);
    CU_ASSERT_EQUAL(s.weight_bytes, (32 + 4 + 1) * sizeof(float)); /* not one more copy */
    /* Every specialisation borrows all three from the store and copies none. */
    CU_ASSERT_EQUAL(s.borrowed_bytes, 4 * s.weight_bytes);
    CU_ASSERT_EQUAL(s.copied_const_bytes, 0);
    loom_model_destroy(m);
}

static void test_shape_input_is_learnt_as_a_value_and_keys_the_cache(void)
{
    loom_model *m = load("reshape_input.onnx", NULL);
    int64_t n = 12;
    loom_tensor *x = f32(1, &n, 0);
    int64_t s34[2] = {3, 4}, s26[2] = {2, -1};
    loom_tensor *a = i64s(2, s34), *b = i64s(2, s26);
    loom_model_run_stats rs = {.struct_size = sizeof rs};
    const loom_tensor *in[2] = {x, a};
    loom_tensor *out[1] = {NULL};
    CU_ASSERT_EQUAL_FATAL(loom_model_run(m, in, 2, out, 1, &rs), LOOM_OK);
    int64_t d[8];
    loom_tensor_dims(out[0], d);
    CU_ASSERT_EQUAL(loom_tensor_rank(out[0]), 2);
    CU_ASSERT(d[0] == 3 && d[1] == 4);
    const float *xp = loom_tensor_data(x), *yp = loom_tensor_data(out[0]);
    for (int i = 0; i < 12; i++)
        CU_ASSERT_EQUAL(yp[i], xp[i] + 1.0f);
    loom_tensor_destroy(out[0]);
    loom_model_io io = {.struct_size = sizeof io};
    CU_ASSERT_EQUAL(loom_model_input_info(m, 1, &io), LOOM_OK);
    CU_ASSERT_EQUAL(io.needs_value, 1);
    /* Same shapes, another value: another specialisation. */
    in[1] = b;
    CU_ASSERT_EQUAL_FATAL(loom_model_run(m, in, 2, out, 1, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(rs.cache_hit, 0);
    loom_tensor_dims(out[0], d);
    CU_ASSERT(d[0] == 2 && d[1] == 6);
    loom_tensor_destroy(out[0]);
    in[1] = a;
    CU_ASSERT_EQUAL_FATAL(loom_model_run(m, in, 2, out, 1, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(rs.cache_hit, 1);
    loom_tensor_destroy(out[0]);
    /* A shape that does not fit 12 elements: bad input, one line naming the node. */
    int64_t bad[2] = {5, 3};
    loom_tensor *c = i64s(2, bad);
    in[1] = c;
    CU_ASSERT_EQUAL(loom_model_run(m, in, 2, out, 1, &rs), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(out[0]);
    CU_ASSERT_PTR_NULL(strchr(loom_last_error(), '\n'));
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "reshape"));
    loom_model_stats s = stats_of(m);
    CU_ASSERT_EQUAL(s.misses, 2);
    CU_ASSERT_EQUAL(s.hits, 1);
    loom_tensor_destroy(c);
    loom_tensor_destroy(a);
    loom_tensor_destroy(b);
    loom_tensor_destroy(x);
    loom_model_destroy(m);
}

static void expect_bad(loom_model *m, const loom_tensor *const *in, size_t n_in, size_t n_out,
                       const char *const *needles)
{
    loom_tensor *out[4] = {NULL, NULL, NULL, NULL};
    CU_ASSERT_EQUAL(loom_model_run(m, in, n_in, out, n_out, NULL), LOOM_ERR_INVALID_ARGUMENT);
    const char *msg = loom_last_error();
    for (const char *const *s = needles; *s; s++)
        if (!strstr(msg, *s)) {
            fprintf(stderr, "\n  message lacks '%s': %s\n", *s, msg);
            CU_FAIL("message lacks a name");
        }
    CU_ASSERT_PTR_NULL(strchr(msg, '\n'));
    for (size_t i = 0; i < n_out; i++)
        CU_ASSERT_PTR_NULL(out[i]);
}

static void test_symbol_bound_two_ways_is_bad_input(void)
{
    loom_model *m = load("dyn_mlp.onnx", NULL);
    int64_t xd[2] = {48, 8}, zd[2] = {47, 5};
    loom_tensor *x = f32(2, xd, 0), *z = f32(2, zd, 0);
    const loom_tensor *in[2] = {x, z};
    static const char *const n1[] = {"dimension 'batch' is 48 in x but 47 in z", NULL};
    expect_bad(m, in, 2, 2, n1);
    CU_ASSERT_EQUAL(stats_of(m).live, 0);
    loom_tensor_destroy(x);
    loom_tensor_destroy(z);
    loom_model_destroy(m);
}

static void test_wrong_count_rank_dtype_and_fixed_dim_are_bad_input(void)
{
    loom_model *m = load("dyn_mlp.onnx", NULL);
    int64_t xd[2] = {2, 8}, zd[2] = {2, 5}, x3[3] = {2, 8, 1}, x7[2] = {2, 7};
    loom_tensor *x = f32(2, xd, 0), *z = f32(2, zd, 0), *xr = f32(3, x3, 0), *xf = f32(2, x7, 0);
    loom_tensor *xi = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_I32, 2, xd, &xi), LOOM_OK);
    const loom_tensor *one[1] = {x};
    static const char *const count[] = {"2 inputs", "gives 1", NULL};
    expect_bad(m, one, 1, 2, count);
    const loom_tensor *rank[2] = {xr, z};
    static const char *const rk[] = {"input 'x'", "rank 3", "rank 2", NULL};
    expect_bad(m, rank, 2, 2, rk);
    const loom_tensor *dt[2] = {xi, z};
    static const char *const dtn[] = {"input 'x'", "int32", "declares float", NULL};
    expect_bad(m, dt, 2, 2, dtn);
    const loom_tensor *fx[2] = {xf, z};
    static const char *const fxn[] = {"input 'x'", "dimension 1", "7", "8", NULL};
    expect_bad(m, fx, 2, 2, fxn);
    const loom_tensor *nul[2] = {x, NULL};
    static const char *const nn[] = {"'z'", "NULL", NULL};
    expect_bad(m, nul, 2, 2, nn);
    CU_ASSERT_EQUAL(stats_of(m).misses, 0);
    loom_tensor_destroy(x);
    loom_tensor_destroy(z);
    loom_tensor_destroy(xr);
    loom_tensor_destroy(xf);
    loom_tensor_destroy(xi);
    loom_model_destroy(m);
}

static void test_absurd_computed_shape_is_refused_before_allocation(void)
{
    loom_model_options o = {.struct_size = sizeof o, .memory_cap = (size_t)1 << 30};
    loom_model *m = load("expand_input.onnx", &o);
    int64_t one = 1;
    loom_tensor *x = f32(1, &one, 0);
    /* 10^5 x 10^5 floats: 40 GB, over the 1 GiB cap: refused, nothing of that size made. */
    int64_t huge[2] = {100000, 100000};
    loom_tensor *s = i64s(2, huge);
    const loom_tensor *in[2] = {x, s};
    static const char *const cap[] = {"shape [2] = [100000, 100000]", "memory cap", "'y'", NULL};
    expect_bad(m, in, 2, 1, cap);
    /* A negative dimension. */
    int64_t neg[2] = {-3, 2};
    loom_tensor *sn = i64s(2, neg);
    in[1] = sn;
    loom_tensor *out[1] = {NULL};
    CU_ASSERT_EQUAL(loom_model_run(m, in, 2, out, 1, NULL), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(out[0]);
    /* A fitting one still runs. */
    int64_t ok[2] = {3, 2};
    loom_tensor *so = i64s(2, ok);
    in[1] = so;
    CU_ASSERT_EQUAL(loom_model_run(m, in, 2, out, 1, NULL), LOOM_OK);
    CU_ASSERT_EQUAL(loom_tensor_nbytes(out[0]), 6 * sizeof(float));
    loom_tensor_destroy(out[0]);
    loom_tensor_destroy(x);
    loom_tensor_destroy(s);
    loom_tensor_destroy(sn);
    loom_tensor_destroy(so);
    loom_model_destroy(m);
}

/* A held plan is the specialisation loom_model_run uses: the same numbers through loom_plan_run,
 * no second specialisation, weights borrowed, and it survives eviction until released. */
static void test_held_plan_runs_and_survives_eviction(void)
{
    loom_model_options o = {.struct_size = sizeof o, .max_specialisations = 1};
    loom_model *m = load("dyn_mlp.onnx", &o);
    int64_t xd[2] = {3, 8}, zd[2] = {3, 6};
    loom_tensor *x = f32(2, xd, 3.0f), *z = f32(2, zd, 0.5f);
    const loom_tensor *in[2] = {x, z};
    loom_model_held_plan h;
    CU_ASSERT_EQUAL_FATAL(loom_model_acquire_plan(m, in, 2, &h), LOOM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h.plan);
    CU_ASSERT_TRUE(h.n_inputs >= 1 && h.n_inputs <= 2);
    /* Another shape evicts it from the cache (bound 1); the held plan stays runnable. */
    loom_model_run_stats rs = {.struct_size = sizeof rs};
    CU_ASSERT_EQUAL(run_mlp(m, 1, 5, &rs), LOOM_OK);
    CU_ASSERT_EQUAL(stats_of(m).evictions, 1);
    const loom_tensor *pin[2];
    for (size_t k = 0; k < h.n_inputs; k++)
        pin[k] = in[h.inputs[k]];
    loom_tensor *out[2] = {NULL, NULL};
    CU_ASSERT_EQUAL_FATAL(loom_plan_make_outputs(h.plan, out, 2), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_plan_run(h.plan, pin, h.n_inputs, out, 2, NULL), LOOM_OK);
    check_mlp(x, z, out);
    loom_tensor_destroy(out[0]);
    loom_tensor_destroy(out[1]);
    loom_model_release_plan(m, &h);
    CU_ASSERT_PTR_NULL(h.plan);
    loom_model_release_plan(m, &h); /* cleared: a second release is a no-op */
    /* Bad input is refused as by loom_model_run. */
    int64_t bad[2] = {3, 7};
    loom_tensor *xb = f32(2, bad, 0);
    const loom_tensor *inb[2] = {xb, z};
    CU_ASSERT_EQUAL(loom_model_acquire_plan(m, inb, 2, &h), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_model_acquire_plan(m, inb, 1, &h), LOOM_ERR_INVALID_ARGUMENT);
    loom_tensor_destroy(xb);
    loom_tensor_destroy(x);
    loom_tensor_destroy(z);
    loom_model_destroy(m);
    /* A model that needs an input's values has a plan per value, not per shape: refused. */
    m = load("reshape_input.onnx", NULL);
    int64_t n = 12, s34[2] = {3, 4};
    loom_tensor *v = f32(1, &n, 0), *shape = i64s(2, s34);
    const loom_tensor *in2[2] = {v, shape};
    loom_tensor *y[1] = {NULL};
    CU_ASSERT_EQUAL(loom_model_run(m, in2, 2, y, 1, NULL), LOOM_OK); /* learns it */
    loom_tensor_destroy(y[0]);
    CU_ASSERT_EQUAL(loom_model_acquire_plan(m, in2, 2, &h), LOOM_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(loom_last_error(), "values of input"));
    loom_tensor_destroy(v);
    loom_tensor_destroy(shape);
    loom_model_destroy(m);
}

static void test_load_refuses_missing_file_and_null_arguments(void)
{
    loom_model *m = NULL;
    CU_ASSERT_EQUAL(loom_model_load_onnx(rt, "/nonexistent/model.onnx", NULL, &m), LOOM_ERR_IO);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(loom_model_load_onnx(NULL, "x.onnx", NULL, &m), LOOM_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(loom_model_run(NULL, NULL, 0, NULL, 0, NULL), LOOM_ERR_INVALID_ARGUMENT);
    loom_model_destroy(NULL);
}

int main(void)
{
    const char *d = getenv("LOOM_MODEL_DATA");
    snprintf(data_dir, sizeof data_dir, "%s", d ? d : "tests/data/model");
    if (loom_runtime_create(NULL, &rt) != LOOM_OK) {
        fprintf(stderr, "runtime: %s\n", loom_last_error());
        return 1;
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("model", NULL, NULL);
    CU_add_test(s, "inputs report dynamic dims and symbols",
                test_inputs_report_dynamic_dims_and_symbols);
    CU_add_test(s, "each shape gets a specialisation and repeats hit",
                test_each_shape_gets_a_specialisation_and_repeats_hit);
    CU_add_test(s, "cache evicts least recently used", test_cache_evicts_least_recently_used);
    CU_add_test(s, "weights are held once for every specialisation",
                test_weights_are_held_once_for_every_specialisation);
    CU_add_test(s, "shape input is learnt as a value and keys the cache",
                test_shape_input_is_learnt_as_a_value_and_keys_the_cache);
    CU_add_test(s, "symbol bound two ways is bad input", test_symbol_bound_two_ways_is_bad_input);
    CU_add_test(s, "wrong count, rank, dtype and fixed dim are bad input",
                test_wrong_count_rank_dtype_and_fixed_dim_are_bad_input);
    CU_add_test(s, "absurd computed shape is refused before allocation",
                test_absurd_computed_shape_is_refused_before_allocation);
    CU_add_test(s, "a held plan runs and survives eviction",
                test_held_plan_runs_and_survives_eviction);
    CU_add_test(s, "load refuses a missing file and NULL arguments",
                test_load_refuses_missing_file_and_null_arguments);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    loom_runtime_destroy(rt);
    return failed ? 1 : 0;
}
