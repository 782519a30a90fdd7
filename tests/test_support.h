/*
 * Test support: the op-test harness shared by the CUnit suites that build a small graph through
 * the public API, run it strictly on the CPU and compare its outputs with reference loops written
 * in the test (test_ops_coverage, test_ops_elementwise_quant, test_ops_layers, test_kernels),
 * and the CUnit runner (test_run_suites) that most suites' main() now is. Linked into the test
 * executables that use it (test_support_users and test_runner_deps in tests/meson.build); never
 * part of libloom.
 *
 * What it holds:
 *   - a deterministic generator (xorshift64*), one stream per process, reseeded by each suite's
 *     set-up function with the seed that suite always used;
 *   - shapes (`shp`, SHP(...), SCALAR) with numpy broadcasting and C-order indexing;
 *   - element access by dtype (elem_load / elem_store);
 *   - `tc`, one test case: a graph, its plan, the input and output tensors and the host buffers
 *     they use, all owned by the case and freed by tc_free;
 *   - checks that record CUnit assertions at the caller's file and line;
 *   - test_run_suites, the main() every suite had: register suites, filter tests by name, run.
 *
 * The short names (shp, numel, tc_...) are the ones the suites already used; they are test-only.
 * Every check that takes LINE is a macro that passes the caller's __FILE__, so a failure names
 * the test file and line, as before. No function here frees what it did not allocate, except
 * tc_free (everything the case owns). Failures to allocate abort the test program (a test
 * helper has no caller to report to).
 */
#ifndef LOOM_TEST_SUPPORT_H
#define LOOM_TEST_SUPPORT_H

#include <loom/graph.h>
#include <loom/runtime.h>

#include <CUnit/CUnit.h>

#include <stddef.h>
#include <stdint.h>

/* Short dtype names for the tests' tables and reference loops. */
#define F32 LOOM_DTYPE_F32
#define F16 LOOM_DTYPE_F16
#define BF16 LOOM_DTYPE_BF16
#define U8 LOOM_DTYPE_U8
#define I8 LOOM_DTYPE_I8
#define I32 LOOM_DTYPE_I32
#define I64 LOOM_DTYPE_I64
#define BOOL LOOM_DTYPE_BOOL

/* ---- the runtime --------------------------------------------------------------------------- */

/* The runtime the cases plan on: created by a suite's init (test_rt_open), destroyed by its
 * cleanup (test_rt_close). tc_run fails (with a message) while it is NULL. */
extern loom_runtime *test_rt;

/* Create test_rt with default options and CPU_THREADS CPU threads (0: the library's default).
 * Returns 0 on success, 1 on failure (CUnit's init convention). */
int test_rt_open(uint32_t cpu_threads);
/* CUnit init/cleanup functions: test_rt_open(0), and destroying test_rt (always returns 0). */
int test_rt_open_default(void);
int test_rt_close(void);

/* ---- deterministic data -------------------------------------------------------------------- */

/* Restart the generator at SEED (nonzero). Each suite reseeds before every test. */
void rng_seed(uint64_t seed);
/* The next 64 random bits (xorshift64*). */
uint64_t rng_u64(void);
/* Uniform double in [LO, HI) (computed in double). */
double rng_uniform(double lo, double hi);
/* Uniform float in [LO, HI): HI - LO is taken in float, the rest in double, then rounded. */
float rng_f32(float lo, float hi);
/* Uniform integer in [LO, HI]. */
int64_t rng_int(int64_t lo, int64_t hi);

/* ---- shapes ------------------------------------------------------------------------------ */

typedef struct shp {
    uint32_t rank;
    int64_t d[LOOM_MAX_RANK];
} shp;

/* The shape of RANK dims DIMS (DIMS may be NULL when RANK is 0); unused dims are zero. */
shp shp_make(const int64_t *dims, size_t rank);
#define SHP(...)                                                                                  \
    shp_make((const int64_t[]){__VA_ARGS__},                                                      \
             sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define SCALAR shp_make(NULL, 0)

/* Number of elements (1 for a scalar, 0 with an empty dim). */
int64_t numel(shp s);
/* Same rank and dims. */
int shp_eq(shp a, shp b);
/* "[d0, d1, ...]" into BUF (LEN bytes, always terminated). */
void shp_format(shp s, char *buf, size_t len);
/* Numpy multidirectional broadcast of A and B (the shapes must be compatible). */
shp bcast(shp a, shp b);
/* C-order multi-index IDX of FLAT in S. */
void unravel(int64_t flat, shp s, int64_t *idx);
/* C-order flat offset of IDX in S. */
int64_t ravel(shp s, const int64_t *idx);
/* Offset in a tensor of shape IN of the element an output index IDX (rank OUT_RANK) reads under
 * numpy broadcasting (right-aligned). */
int64_t bcast_off(uint32_t out_rank, const int64_t *idx, shp in);

/* ---- element access by dtype ------------------------------------------------------------- */

/* Element I of P (dtype DT) as a double: every numeric dtype, F16 and BF16 included; NaN for
 * a dtype it does not know. */
double elem_load(const void *p, loom_dtype dt, int64_t i);
/* Store V, converted by C's rules, as element I of P (dtype DT); F16/BF16 and unknown dtypes
 * are left untouched. */
void elem_store(void *p, loom_dtype dt, int64_t i, double v);
/* Store the integer V exactly (no round trip through double) into an integer or bool dtype. */
void elem_store_int(void *p, loom_dtype dt, int64_t i, int64_t v);

/* ---- one test case: a graph, its plan, its tensors and buffers -------------------------- */

#define TC_MAX 16  /* graph inputs and outputs a case can hold */
#define TC_BUFS 64 /* host buffers a case can hold */

typedef struct tc {
    loom_graph *g;
    loom_plan *plan;
    loom_tensor *in[TC_MAX];
    size_t n_in;
    loom_tensor *out[TC_MAX];
    size_t n_out;
    void *bufs[TC_BUFS];
    size_t n_bufs;
    int run_stage; /* how far tc_run_status got: 0 check, 1 plan, 2 outputs, 3 run, 4 done */
} tc;

/* Start a case with an empty graph named NAME. tc_open records no assertion (c->g is NULL when
 * the graph could not be made); tc_init asserts (fatally) that the graph exists. */
void tc_open(tc *c, const char *name);
#define tc_init(c) tc_init_at((c), __FILE__, __LINE__)
void tc_init_at(tc *c, const char *file, int line);
/* Free everything the case owns (plan, graph, tensors, buffers) and zero it. */
void tc_free(tc *c);

/* BYTES of zeroed host memory owned by the case (at least 1 byte). */
void *tc_buf(tc *c, size_t bytes);
/* N doubles (at least one), zeroed, owned by the case. */
double *tc_dbuf(tc *c, int64_t n);
/* Storage of dtype DT holding VALS (N values, converted by elem_store), owned by the case. */
void *tc_typed(tc *c, loom_dtype dt, int64_t n, const double *vals);
/* N random values in [LO, HI] as doubles: float-rounded for F32, 0/1 for BOOL, integers for the
 * other dtypes. */
double *tc_random(tc *c, loom_dtype dt, int64_t n, double lo, double hi);
/* numel(S) random floats in [LO, HI), owned by the case. */
float *tc_rand(tc *c, shp s, float lo, float hi);

/* A graph input of DT and shape S whose run-time data is DATA (wrapped, not copied: DATA must
 * live until tc_free), or with AS_CONST a constant holding DATA. Asserts that the wrap works. */
loom_value tc_data(tc *c, int as_const, loom_dtype dt, shp s, void *data);
/* A constant of DT and shape S holding DATA. */
loom_value tc_const_data(tc *c, loom_dtype dt, shp s, const void *data);
/* Typed-from-double forms: a graph input / constant of DT and shape S holding VALS (numel(S)
 * doubles, converted into storage the case owns); tc_value picks one with AS_CONST. */
loom_value tc_value(tc *c, int as_const, loom_dtype dt, shp s, const double *vals);
loom_value tc_input(tc *c, loom_dtype dt, shp s, const double *vals);
loom_value tc_const(tc *c, loom_dtype dt, shp s, const double *vals);
loom_value tc_scalar(tc *c, loom_dtype dt, double v);

/* One node OP with N_OUT (at most TC_MAX) outputs, all marked as graph outputs. Returns the
 * builder's status (the graph error is sticky, as loom_graph_op leaves it). */
loom_status tc_node(tc *c, const char *op, const loom_value *ins, size_t n_ins,
                    const loom_attr *attrs, size_t n_attrs, size_t n_out);

/* Check the graph, plan it strictly on "cpu" with test_rt, make the outputs and run once.
 * Returns the first failing status and, unless QUIET, prints the stage, status and message at
 * LINE. Records no assertion; c->run_stage says how far it got. */
loom_status tc_run_status(tc *c, int line, int quiet);
/* tc_run_status, and one assertion that it succeeded. Returns 1 when it did. */
#define tc_run(c, line) tc_run_at((c), __FILE__, (line))
int tc_run_at(tc *c, const char *file, int line);

/* ---- checks ------------------------------------------------------------------------------ */

/* How many of the N elements of DATA (dtype DT) are not within ATOL + RTOL * |ref| of REF (NaN
 * must match NaN, infinities must match exactly). Prints the first few mismatches and a summary
 * (tolerances, worst error) at LINE. Records no assertion. */
int64_t count_mismatches(const void *data, loom_dtype dt, int64_t n, const double *ref,
                         double atol, double rtol, int line);

/* One assertion: T exists and has dtype DT and shape WANT (prints what it got otherwise). */
#define check_shape(t, dt, want, line) check_shape_at((t), (dt), (want), __FILE__, (line))
int check_shape_at(const loom_tensor *t, loom_dtype dt, shp want, const char *file, int line);
/* Two assertions: check_shape, then (when the shape is right) every value matches REF within
 * ATOL + RTOL * |ref| (see count_mismatches). Returns 1 when both hold. */
#define check_tensor(t, dt, want, ref, atol, rtol, line)                                          \
    check_tensor_at((t), (dt), (want), (ref), (atol), (rtol), __FILE__, (line))
int check_tensor_at(const loom_tensor *t, loom_dtype dt, shp want, const double *ref, double atol,
                    double rtol, const char *file, int line);
/* check_tensor on output I of the case (a missing output fails the shape assertion). */
#define check_out(c, i, dt, want, ref, atol, rtol, line)                                          \
    check_tensor_at(tc_output((c), (i)), (dt), (want), (ref), (atol), (rtol), __FILE__, (line))
/* Output I of the case, NULL when it has fewer outputs. */
const loom_tensor *tc_output(const tc *c, size_t i);

/* Two assertions: building failed with STATUS and a message containing WANT and OP, and the
 * error is sticky (loom_graph_check still fails). GOT is what the builder returned. */
#define expect_build_error(c, got, status, op, want, line)                                        \
    expect_build_error_at((c), (got), (status), (op), (want), __FILE__, (line))
void expect_build_error_at(tc *c, loom_status got, loom_status status, const char *op,
                           const char *want, const char *file, int line);

/* ---- the runner ---------------------------------------------------------------------------- */

typedef struct test_entry {
    const char *name;
    CU_TestFunc fn;
} test_entry;
#define TEST_ENTRY(f) {#f, f}

/* One CUnit suite: TESTS ends with {NULL, NULL}; INIT/CLEAN run around the suite, SETUP and
 * TEARDOWN around each test (any may be NULL). */
typedef struct test_suite {
    const char *name;
    const test_entry *tests;
    CU_InitializeFunc init;
    CU_CleanupFunc clean;
    CU_SetUpFunc setup;
    CU_TearDownFunc teardown;
} test_suite;

/* The main() of a suite program: register the N SUITES (only the tests whose name contains
 * argv[1] when given; a suite with none is left out), run them with CUnit's verbose basic
 * runner. Returns the exit status: 0 all passed, 1 a test or a suite's init failed, 2 CUnit
 * could not be set up or no test matches the filter (said on stderr). */
int test_run_suites(const test_suite *suites, size_t n, int argc, char **argv);

#endif
