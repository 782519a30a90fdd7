/*
 * Test support: the shared op-test harness and CUnit runner (see test_support.h).
 */
#include "test_support.h"

#include <CUnit/Basic.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

loom_runtime *test_rt;

int test_rt_open(uint32_t cpu_threads)
{
    loom_runtime_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.cpu_threads = cpu_threads;
    return loom_runtime_create(&o, &test_rt) == LOOM_OK ? 0 : 1;
}

int test_rt_open_default(void)
{
    return test_rt_open(0);
}

int test_rt_close(void)
{
    loom_runtime_destroy(test_rt);
    test_rt = NULL;
    return 0;
}

/* ---- deterministic data ---------------------------------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

void rng_seed(uint64_t seed)
{
    g_rng = seed;
}

uint64_t rng_u64(void)
{
    uint64_t x = g_rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g_rng = x;
    return x * 2685821657736338717ull;
}

static double rng_unit(void)
{
    return (double)(rng_u64() >> 11) * (1.0 / 9007199254740992.0);
}

double rng_uniform(double lo, double hi)
{
    return lo + (hi - lo) * rng_unit();
}

float rng_f32(float lo, float hi)
{
    double u = rng_unit();
    return (float)(lo + (hi - lo) * u);
}

int64_t rng_int(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rng_u64() % (uint64_t)(hi - lo + 1));
}

/* ---- shapes ------------------------------------------------------------------------------ */

shp shp_make(const int64_t *dims, size_t rank)
{
    shp s;
    memset(&s, 0, sizeof s);
    s.rank = (uint32_t)rank;
    for (size_t k = 0; k < rank; k++)
        s.d[k] = dims[k];
    return s;
}

int64_t numel(shp s)
{
    int64_t n = 1;
    for (uint32_t k = 0; k < s.rank; k++)
        n *= s.d[k];
    return n;
}

int shp_eq(shp a, shp b)
{
    if (a.rank != b.rank)
        return 0;
    for (uint32_t k = 0; k < a.rank; k++)
        if (a.d[k] != b.d[k])
            return 0;
    return 1;
}

void shp_format(shp s, char *buf, size_t len)
{
    size_t at = 0;
    at += (size_t)snprintf(buf + at, len - at, "[");
    for (uint32_t k = 0; k < s.rank && at < len; k++)
        at += (size_t)snprintf(buf + at, len - at, k ? ", %lld" : "%lld", (long long)s.d[k]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
}

shp bcast(shp a, shp b)
{
    shp o;
    memset(&o, 0, sizeof o);
    o.rank = a.rank > b.rank ? a.rank : b.rank;
    for (uint32_t k = 0; k < o.rank; k++) {
        int64_t da = k + a.rank >= o.rank ? a.d[k + a.rank - o.rank] : 1;
        int64_t db = k + b.rank >= o.rank ? b.d[k + b.rank - o.rank] : 1;
        o.d[k] = da == 1 ? db : da;
    }
    return o;
}

void unravel(int64_t flat, shp s, int64_t *idx)
{
    for (uint32_t k = s.rank; k-- > 0;) {
        idx[k] = s.d[k] ? flat % s.d[k] : 0;
        flat = s.d[k] ? flat / s.d[k] : 0;
    }
}

int64_t ravel(shp s, const int64_t *idx)
{
    int64_t off = 0;
    for (uint32_t k = 0; k < s.rank; k++)
        off = off * s.d[k] + idx[k];
    return off;
}

int64_t bcast_off(uint32_t out_rank, const int64_t *idx, shp in)
{
    int64_t off = 0;
    for (uint32_t k = 0; k < in.rank; k++)
        off = off * in.d[k] + (in.d[k] == 1 ? 0 : idx[out_rank - in.rank + k]);
    return off;
}

/* ---- element access by dtype ------------------------------------------------------------- */

static double half_bits_to_double(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0)
        v = ldexp(m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

static double bf16_bits_to_double(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

double elem_load(const void *p, loom_dtype dt, int64_t i)
{
    switch (dt) {
    case LOOM_DTYPE_F32: return ((const float *)p)[i];
    case LOOM_DTYPE_F64: return ((const double *)p)[i];
    case LOOM_DTYPE_F16: return half_bits_to_double(((const uint16_t *)p)[i]);
    case LOOM_DTYPE_BF16: return bf16_bits_to_double(((const uint16_t *)p)[i]);
    case LOOM_DTYPE_U8:
    case LOOM_DTYPE_BOOL: return ((const uint8_t *)p)[i];
    case LOOM_DTYPE_I8: return ((const int8_t *)p)[i];
    case LOOM_DTYPE_I16: return ((const int16_t *)p)[i];
    case LOOM_DTYPE_U16: return ((const uint16_t *)p)[i];
    case LOOM_DTYPE_I32: return ((const int32_t *)p)[i];
    case LOOM_DTYPE_U32: return ((const uint32_t *)p)[i];
    case LOOM_DTYPE_I64: return (double)((const int64_t *)p)[i];
    case LOOM_DTYPE_U64: return (double)((const uint64_t *)p)[i];
    default: return NAN;
    }
}

void elem_store(void *p, loom_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case LOOM_DTYPE_F32: ((float *)p)[i] = (float)v; break;
    case LOOM_DTYPE_F64: ((double *)p)[i] = v; break;
    case LOOM_DTYPE_U8:
    case LOOM_DTYPE_BOOL: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case LOOM_DTYPE_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case LOOM_DTYPE_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case LOOM_DTYPE_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case LOOM_DTYPE_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case LOOM_DTYPE_U32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    case LOOM_DTYPE_I64: ((int64_t *)p)[i] = (int64_t)v; break;
    case LOOM_DTYPE_U64: ((uint64_t *)p)[i] = (uint64_t)v; break;
    default: break;
    }
}

void elem_store_int(void *p, loom_dtype dt, int64_t i, int64_t v)
{
    switch (dt) {
    case LOOM_DTYPE_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case LOOM_DTYPE_I64: ((int64_t *)p)[i] = v; break;
    case LOOM_DTYPE_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case LOOM_DTYPE_U8:
    case LOOM_DTYPE_BOOL: ((uint8_t *)p)[i] = (uint8_t)v; break;
    default: break;
    }
}

/* ---- one test case ----------------------------------------------------------------------- */

void tc_open(tc *c, const char *name)
{
    memset(c, 0, sizeof *c);
    c->g = loom_graph_create(name);
}

void tc_init_at(tc *c, const char *file, int line)
{
    tc_open(c, "op_test");
    CU_assertImplementation(c->g != NULL, (unsigned)line, "CU_ASSERT_PTR_NOT_NULL_FATAL(c->g)",
                            file, "", CU_TRUE);
}

void tc_free(tc *c)
{
    loom_plan_destroy(c->plan);
    loom_graph_destroy(c->g);
    for (size_t k = 0; k < c->n_in; k++)
        loom_tensor_destroy(c->in[k]);
    for (size_t k = 0; k < c->n_out; k++)
        loom_tensor_destroy(c->out[k]);
    for (size_t k = 0; k < c->n_bufs; k++)
        free(c->bufs[k]);
    memset(c, 0, sizeof *c);
}

void *tc_buf(tc *c, size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p || c->n_bufs == TC_BUFS) {
        fprintf(stderr, "test helper: out of buffers\n");
        abort();
    }
    c->bufs[c->n_bufs++] = p;
    return p;
}

double *tc_dbuf(tc *c, int64_t n)
{
    return tc_buf(c, (size_t)(n > 0 ? n : 1) * sizeof(double));
}

void *tc_typed(tc *c, loom_dtype dt, int64_t n, const double *vals)
{
    void *p = tc_buf(c, (size_t)(n > 0 ? n : 1) * loom_dtype_size(dt));
    for (int64_t i = 0; i < n; i++)
        elem_store(p, dt, i, vals[i]);
    return p;
}

double *tc_random(tc *c, loom_dtype dt, int64_t n, double lo, double hi)
{
    double *v = tc_dbuf(c, n);
    for (int64_t i = 0; i < n; i++) {
        if (dt == LOOM_DTYPE_F32)
            v[i] = (float)rng_uniform(lo, hi);
        else if (dt == LOOM_DTYPE_BOOL)
            v[i] = (double)rng_int(0, 1);
        else
            v[i] = (double)rng_int((int64_t)lo, (int64_t)hi);
    }
    return v;
}

float *tc_rand(tc *c, shp s, float lo, float hi)
{
    int64_t n = numel(s);
    float *p = tc_buf(c, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = rng_f32(lo, hi);
    return p;
}

loom_value tc_data(tc *c, int as_const, loom_dtype dt, shp s, void *data)
{
    if (as_const)
        return loom_constant(c->g, NULL, dt, s.rank, s.d, data);
    char name[32];
    snprintf(name, sizeof name, "x%zu", c->n_in);
    loom_value v = loom_input(c->g, name, dt, s.rank, s.d);
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL(loom_tensor_wrap(dt, s.rank, s.d, data, &t), LOOM_OK);
    if (c->n_in < TC_MAX)
        c->in[c->n_in++] = t;
    else
        loom_tensor_destroy(t);
    return v;
}

loom_value tc_const_data(tc *c, loom_dtype dt, shp s, const void *data)
{
    return loom_constant(c->g, NULL, dt, s.rank, s.d, data);
}

loom_value tc_value(tc *c, int as_const, loom_dtype dt, shp s, const double *vals)
{
    return tc_data(c, as_const, dt, s, tc_typed(c, dt, numel(s), vals));
}

loom_value tc_input(tc *c, loom_dtype dt, shp s, const double *vals)
{
    return tc_value(c, 0, dt, s, vals);
}

loom_value tc_const(tc *c, loom_dtype dt, shp s, const double *vals)
{
    return tc_value(c, 1, dt, s, vals);
}

loom_value tc_scalar(tc *c, loom_dtype dt, double v)
{
    return tc_const(c, dt, SCALAR, &v);
}

loom_status tc_node(tc *c, const char *op, const loom_value *ins, size_t n_ins,
                    const loom_attr *attrs, size_t n_attrs, size_t n_out)
{
    loom_value outs[TC_MAX];
    for (size_t k = 0; k < TC_MAX; k++)
        outs[k] = LOOM_NO_VALUE;
    if (n_out > TC_MAX) {
        fprintf(stderr, "test helper: %s: %zu outputs, at most %d\n", op, n_out, TC_MAX);
        abort();
    }
    loom_status st = loom_graph_op(c->g, op, NULL, ins, n_ins, attrs, n_attrs, outs, n_out);
    if (st != LOOM_OK)
        return st;
    for (size_t k = 0; k < n_out; k++)
        loom_output(c->g, outs[k], NULL);
    return LOOM_OK;
}

loom_status tc_run_status(tc *c, int line, int quiet)
{
    loom_status st = loom_graph_check(c->g);
    const char *stage = "loom_graph_check";
    c->run_stage = 0;
    if (st == LOOM_OK) {
        c->run_stage = 1;
        loom_plan_options opt;
        memset(&opt, 0, sizeof opt);
        opt.struct_size = sizeof opt;
        opt.device = "cpu";
        opt.strict = 1;
        stage = "loom_plan_create";
        st = loom_plan_create(test_rt, c->g, &opt, &c->plan);
    }
    if (st == LOOM_OK) {
        c->run_stage = 2;
        stage = "loom_plan_make_outputs";
        size_t n = loom_graph_output_count(c->g);
        if (n > TC_MAX) {
            st = LOOM_ERR_INTERNAL;
        } else {
            st = loom_plan_make_outputs(c->plan, c->out, n);
            if (st == LOOM_OK)
                c->n_out = n;
        }
    }
    if (st == LOOM_OK) {
        c->run_stage = 3;
        stage = "loom_plan_run";
        st = loom_plan_run(c->plan, (const loom_tensor *const *)c->in, c->n_in, c->out, c->n_out,
                           NULL);
    }
    if (st == LOOM_OK)
        c->run_stage = 4;
    if (st != LOOM_OK && !quiet)
        fprintf(stderr, "\n    line %d: %s failed: %s: %s\n", line, stage, loom_status_name(st),
                loom_last_error());
    return st;
}

int tc_run_at(tc *c, const char *file, int line)
{
    loom_status st = tc_run_status(c, line, 0);
    CU_assertImplementation(st == LOOM_OK, (unsigned)line, "graph builds, plans and runs on cpu",
                            file, "", CU_FALSE);
    return st == LOOM_OK;
}

/* ---- checks ------------------------------------------------------------------------------ */

int64_t count_mismatches(const void *data, loom_dtype dt, int64_t n, const double *ref,
                         double atol, double rtol, int line)
{
    int64_t bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = elem_load(data, dt, i), r = ref[i];
        int ok = isnan(r) ? isnan(g) : isinf(r) ? g == r : fabs(g - r) <= atol + rtol * fabs(r);
        if (ok)
            continue;
        if (bad < 6)
            fprintf(stderr, "\n    line %d: element %lld: got %.9g, expected %.9g", line,
                    (long long)i, g, r);
        if (!isnan(g) && !isnan(r) && fabs(g - r) > worst)
            worst = fabs(g - r);
        bad++;
    }
    if (bad)
        fprintf(stderr,
                "\n    line %d: %lld of %lld elements out of tolerance (atol %g, rtol %g, "
                "worst abs error %g)\n",
                line, (long long)bad, (long long)n, atol, rtol, worst);
    return bad;
}

int check_shape_at(const loom_tensor *t, loom_dtype dt, shp want, const char *file, int line)
{
    if (!t) {
        fprintf(stderr, "\n    line %d: output missing\n", line);
        CU_assertImplementation(CU_FALSE, (unsigned)line, "output tensor exists", file, "",
                                CU_FALSE);
        return 0;
    }
    shp got;
    memset(&got, 0, sizeof got);
    got.rank = loom_tensor_rank(t);
    if (got.rank <= LOOM_MAX_RANK)
        loom_tensor_dims(t, got.d);
    int ok = got.rank <= LOOM_MAX_RANK && shp_eq(got, want) && loom_tensor_dtype(t) == dt;
    if (!ok) {
        char a[128], b[128];
        shp_format(got, a, sizeof a);
        shp_format(want, b, sizeof b);
        fprintf(stderr, "\n    line %d: output is %s %s, expected %s %s\n", line,
                loom_dtype_name(loom_tensor_dtype(t)), a, loom_dtype_name(dt), b);
    }
    CU_assertImplementation(ok, (unsigned)line, "output dtype and shape as expected", file, "",
                            CU_FALSE);
    return ok;
}

int check_tensor_at(const loom_tensor *t, loom_dtype dt, shp want, const double *ref, double atol,
                    double rtol, const char *file, int line)
{
    if (!check_shape_at(t, dt, want, file, line))
        return 0;
    int64_t n = numel(want);
    int64_t bad = count_mismatches(n ? loom_tensor_data(t) : NULL, dt, n, ref, atol, rtol, line);
    CU_assertImplementation(bad == 0, (unsigned)line, "output values match the reference", file,
                            "", CU_FALSE);
    return bad == 0;
}

const loom_tensor *tc_output(const tc *c, size_t i)
{
    return i < c->n_out ? c->out[i] : NULL;
}

void expect_build_error_at(tc *c, loom_status got, loom_status status, const char *op,
                           const char *want, const char *file, int line)
{
    const char *msg = loom_last_error();
    int ok = got == status && msg && strstr(msg, want) != NULL && strstr(msg, op) != NULL;
    if (!ok)
        fprintf(stderr, "\n    line %d: expected %s containing \"%s\", got %s: \"%s\"\n", line,
                loom_status_name(status), want, loom_status_name(got), msg ? msg : "(none)");
    CU_assertImplementation(ok, (unsigned)line, "clear error", file, "", CU_FALSE);
    CU_assertImplementation(loom_graph_check(c->g) != LOOM_OK, (unsigned)line,
                            "the error is sticky", file, "", CU_FALSE);
}

/* ---- the runner ---------------------------------------------------------------------------- */

int test_run_suites(const test_suite *suites, size_t n, int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    size_t added = 0;
    for (size_t k = 0; k < n; k++) {
        const test_suite *su = &suites[k];
        size_t wanted = 0;
        for (const test_entry *t = su->tests; t->name; t++)
            wanted += !filter || strstr(t->name, filter) != NULL;
        if (!wanted)
            continue;
        CU_pSuite s = CU_add_suite_with_setup_and_teardown(su->name, su->init, su->clean,
                                                           su->setup, su->teardown);
        if (!s) {
            CU_cleanup_registry();
            return 2;
        }
        for (const test_entry *t = su->tests; t->name; t++)
            if (!filter || strstr(t->name, filter))
                if (!CU_add_test(s, t->name, t->fn)) {
                    CU_cleanup_registry();
                    return 2;
                }
        added += wanted;
    }
    if (!added) {
        fprintf(stderr, "no test matches \"%s\"\n", filter ? filter : "");
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
