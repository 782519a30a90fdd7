/*
 * Tests of .npy reading and writing: files NumPy wrote (formats 1.0, 2.0 and 3.0) read back
 * exactly, what Loom writes is byte for byte what NumPy writes, every dtype survives a round
 * trip (bfloat16 as float32), and each kind of malformed file is refused with
 * LOOM_ERR_INVALID_ARGUMENT (or LOOM_ERR_IO when unreadable) naming the file and the problem.
 */
#include <loom/loom.h>

#include "test_support.h"

#include <CUnit/Basic.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <signal.h>

/* Byte strings written by NumPy 1.24 (np.lib.format.write_array): the independent reference. */
/* array([[-1. , -0.5, 0. ],    [ 0.5, 1. , 1.5]], dtype=float32), format 1.0 */
static const char np_f32_2x3[] =
    "\x93""NUMPY\x01""\x00""v\x00"
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
    "                                                          \n"
    "\x00""\x00""\x80""\xbf""\x00""\x00""\x00""\xbf""\x00""\x00""\x00""\x00"
    "\x00""\x00""\x00""\x3f""\x00""\x00""\x80""\x3f""\x00""\x00""\xc0""\x3f";
#define NP_F32_2X3_LEN 152
/* array([ 1, -2, 3]), format 2.0 */
static const char np_i64_v2[] =
    "\x93""NUMPY\x02""\x00""t\x00""\x00""\x00"
    "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"
    "                                                          \n"
    "\x01""\x00""\x00""\x00""\x00""\x00""\x00""\x00""\xfe""\xff""\xff""\xff"
    "\xff""\xff""\xff""\xff""\x03""\x00""\x00""\x00""\x00""\x00""\x00""\x00";
#define NP_I64_V2_LEN 152
/* array([ True, False]), format 3.0 */
static const char np_bool_v3[] =
    "\x93""NUMPY\x03""\x00""t\x00""\x00""\x00"
    "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }"
    "                                                          \n"
    "\x01""\x00";
#define NP_BOOL_V3_LEN 130
/* 1.5, format 1.0 */
static const char np_f16_scalar[] =
    "\x93""NUMPY\x01""\x00""v\x00"
    "{'descr': '<f2', 'fortran_order': False, 'shape': (), }"
    "                                                              \n"
    "\x00"">";
#define NP_F16_SCALAR_LEN 130

static char tmpdir[] = "/tmp/loom-test-npy-XXXXXX";
static char path[512];

static int suite_init(void)
{
    return mkdtemp(tmpdir) ? 0 : 1;
}

static int suite_clean(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : 1;
}

static const char *tmp_path(const char *name)
{
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

static void write_bytes(const char *p, const void *data, size_t n)
{
    FILE *f = fopen(p, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* Contents of file P into a malloc'ed buffer (*N bytes); NULL when unreadable. */
static unsigned char *read_bytes(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len + 1);
    *n = fread(buf, 1, (size_t)len, f);
    fclose(f);
    return buf;
}

/* A .npy file of format MAJOR.0 with header dict DICT (padded like NumPy pads it) followed by
 * N bytes of DATA. */
static void write_npy_raw(const char *p, int major, const char *dict, const void *data, size_t n)
{
    size_t prefix = major == 1 ? 10 : 12, len = strlen(dict);
    size_t total = (prefix + len + 1 + 63) / 64 * 64;
    size_t hl = total - prefix;
    unsigned char *buf = calloc(1, total + n + 1);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    buf[8] = (unsigned char)(hl & 0xff);
    buf[9] = (unsigned char)(hl >> 8);
    memcpy(buf + prefix, dict, len);
    memset(buf + prefix + len, ' ', hl - len - 1);
    buf[total - 1] = '\n';
    if (n)
        memcpy(buf + total, data, n);
    write_bytes(p, buf, total + n);
    free(buf);
}

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

/* ---- reading what NumPy wrote -------------------------------------------------------------- */

static void test_reads_numpy_f32_format_1(void)
{
    const char *p = tmp_path("np_f32.npy");
    write_bytes(p, np_f32_2x3, NP_F32_2X3_LEN);
    loom_tensor *t;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(p, &t), LOOM_OK);
    CU_ASSERT_EQUAL(loom_tensor_dtype(t), LOOM_DTYPE_F32);
    CU_ASSERT_EQUAL(loom_tensor_rank(t), 2);
    int64_t d[LOOM_MAX_RANK];
    loom_tensor_dims(t, d);
    CU_ASSERT(d[0] == 2 && d[1] == 3);
    const float *v = loom_tensor_data(t);
    const float want[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
    for (int i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(v[i], want[i]);
    loom_tensor_destroy(t);
}

static void test_reads_numpy_i64_format_2(void)
{
    const char *p = tmp_path("np_i64.npy");
    write_bytes(p, np_i64_v2, NP_I64_V2_LEN);
    loom_tensor *t;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(p, &t), LOOM_OK);
    CU_ASSERT_EQUAL(loom_tensor_dtype(t), LOOM_DTYPE_I64);
    CU_ASSERT_EQUAL(loom_tensor_rank(t), 1);
    const int64_t *v = loom_tensor_data(t);
    CU_ASSERT(v[0] == 1 && v[1] == -2 && v[2] == 3);
    loom_tensor_destroy(t);
}

static void test_reads_numpy_bool_format_3(void)
{
    const char *p = tmp_path("np_bool.npy");
    write_bytes(p, np_bool_v3, NP_BOOL_V3_LEN);
    loom_tensor *t;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(p, &t), LOOM_OK);
    CU_ASSERT_EQUAL(loom_tensor_dtype(t), LOOM_DTYPE_BOOL);
    const unsigned char *v = loom_tensor_data(t);
    CU_ASSERT(v[0] == 1 && v[1] == 0);
    loom_tensor_destroy(t);
}

static void test_reads_numpy_f16_scalar(void)
{
    const char *p = tmp_path("np_f16.npy");
    write_bytes(p, np_f16_scalar, NP_F16_SCALAR_LEN);
    loom_tensor *t;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(p, &t), LOOM_OK);
    CU_ASSERT_EQUAL(loom_tensor_dtype(t), LOOM_DTYPE_F16);
    CU_ASSERT_EQUAL(loom_tensor_rank(t), 0);
    CU_ASSERT_EQUAL(loom_tensor_nbytes(t), 2);
    uint16_t h;
    memcpy(&h, loom_tensor_data(t), 2);
    CU_ASSERT_EQUAL(h, 0x3e00); /* 1.5 in IEEE half */
    loom_tensor_destroy(t);
}

static void test_accepts_header_variants_numpy_accepts(void)
{
    /* Keys in another order, double quotes, no trailing comma, a Fortran flag on a row. */
    const char *p = tmp_path("variant.npy");
    const unsigned char data[3] = {7, 8, 9};
    write_npy_raw(p, 1, "{\"shape\": (1, 3), \"fortran_order\": True, \"descr\": \"|u1\"}", data,
                  3);
    loom_tensor *t;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(p, &t), LOOM_OK);
    CU_ASSERT_EQUAL(loom_tensor_dtype(t), LOOM_DTYPE_U8);
    CU_ASSERT_EQUAL(((unsigned char *)loom_tensor_data(t))[2], 9);
    loom_tensor_destroy(t);
}

/* ---- writing ------------------------------------------------------------------------------- */

static void check_same_as_numpy(const loom_tensor *t, const char *ref, size_t ref_len)
{
    const char *p = tmp_path("written.npy");
    CU_ASSERT_EQUAL_FATAL(loom_tensor_save_npy(p, t), LOOM_OK);
    size_t n;
    unsigned char *got = read_bytes(p, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_EQUAL(n, ref_len);
    CU_ASSERT(n == ref_len && memcmp(got, ref, n) == 0);
    free(got);
}

static void test_writes_what_numpy_writes(void)
{
    const float v[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
    int64_t d[2] = {2, 3};
    loom_tensor *t;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_wrap(LOOM_DTYPE_F32, 2, d, (void *)v, &t), LOOM_OK);
    check_same_as_numpy(t, np_f32_2x3, NP_F32_2X3_LEN);
    loom_tensor_destroy(t);

    uint16_t h = 0x3e00;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_wrap(LOOM_DTYPE_F16, 0, NULL, &h, &t), LOOM_OK);
    check_same_as_numpy(t, np_f16_scalar, NP_F16_SCALAR_LEN);
    loom_tensor_destroy(t);
}

static void test_header_is_padded_to_64_bytes(void)
{
    int64_t d[3] = {123456, 0, 7};
    loom_tensor *t;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_I32, 3, d, &t), LOOM_OK);
    const char *p = tmp_path("padded.npy");
    CU_ASSERT_EQUAL_FATAL(loom_tensor_save_npy(p, t), LOOM_OK);
    size_t n = 0;
    unsigned char *got = read_bytes(p, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_EQUAL(n % 64, 0); /* no data: the whole file is the header */
    CU_ASSERT_EQUAL(got[6], 1);
    CU_ASSERT_EQUAL(got[7], 0);
    CU_ASSERT_EQUAL((size_t)(got[8] | got[9] << 8) + 10, n);
    CU_ASSERT_EQUAL(got[n - 1], '\n');
    CU_ASSERT(contains((const char *)got + 10, "'shape': (123456, 0, 7)"));
    free(got);
    loom_tensor *back;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(p, &back), LOOM_OK);
    int64_t bd[LOOM_MAX_RANK];
    loom_tensor_dims(back, bd);
    CU_ASSERT(loom_tensor_rank(back) == 3 && bd[0] == 123456 && bd[1] == 0 && bd[2] == 7);
    CU_ASSERT_EQUAL(loom_tensor_nbytes(back), 0);
    loom_tensor_destroy(back);
    loom_tensor_destroy(t);
}

static void round_trip(loom_dtype dtype, uint32_t rank, const int64_t *dims)
{
    loom_tensor *t, *back = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(dtype, rank, dims, &t), LOOM_OK);
    unsigned char *b = loom_tensor_data(t);
    size_t n = loom_tensor_nbytes(t);
    for (size_t i = 0; i < n; i++) /* bools must stay 0/1; other bytes any pattern */
        b[i] = dtype == LOOM_DTYPE_BOOL ? (unsigned char)(i % 3 == 0)
                                        : (unsigned char)(i * 37 + 11);
    if (dtype == LOOM_DTYPE_F16) /* keep halves finite so NaN payloads are not the question */
        for (size_t i = 1; i < n; i += 2)
            b[i] &= 0x3f;
    const char *p = tmp_path("round.npy");
    CU_ASSERT_EQUAL_FATAL(loom_tensor_save_npy(p, t), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(p, &back), LOOM_OK);
    CU_ASSERT_EQUAL(loom_tensor_dtype(back), dtype);
    CU_ASSERT_EQUAL(loom_tensor_rank(back), rank);
    int64_t d[LOOM_MAX_RANK];
    loom_tensor_dims(back, d);
    for (uint32_t k = 0; k < rank; k++)
        CU_ASSERT_EQUAL(d[k], dims[k]);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_nbytes(back), n);
    CU_ASSERT(memcmp(loom_tensor_data(back), b, n) == 0);
    loom_tensor_destroy(back);
    loom_tensor_destroy(t);
}

static void test_every_dtype_round_trips(void)
{
    const loom_dtype dts[] = {LOOM_DTYPE_F32, LOOM_DTYPE_F16, LOOM_DTYPE_I8,  LOOM_DTYPE_U8,
                              LOOM_DTYPE_I32, LOOM_DTYPE_I64, LOOM_DTYPE_BOOL};
    const int64_t d3[3] = {2, 3, 5}, d1[1] = {7}, d8[8] = {1, 2, 1, 2, 1, 2, 1, 3},
                  empty[2] = {4, 0};
    for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
        round_trip(dts[i], 0, NULL);
        round_trip(dts[i], 1, d1);
        round_trip(dts[i], 3, d3);
        round_trip(dts[i], 8, d8);
        round_trip(dts[i], 2, empty);
    }
}

static void test_bf16_is_written_as_f32(void)
{
    /* 1.0, -2.5, 3.140625 (exact in bfloat16) */
    uint16_t v[3] = {0x3f80, 0xc020, 0x4049};
    int64_t d[1] = {3};
    loom_tensor *t, *back;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_wrap(LOOM_DTYPE_BF16, 1, d, v, &t), LOOM_OK);
    const char *p = tmp_path("bf16.npy");
    CU_ASSERT_EQUAL_FATAL(loom_tensor_save_npy(p, t), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(p, &back), LOOM_OK);
    CU_ASSERT_EQUAL(loom_tensor_dtype(back), LOOM_DTYPE_F32);
    const float *f = loom_tensor_data(back);
    CU_ASSERT(f[0] == 1.0f && f[1] == -2.5f && f[2] == 3.140625f);
    loom_tensor_destroy(back);
    loom_tensor_destroy(t);
}

static void test_save_to_unwritable_path_is_io_error(void)
{
    int64_t d[1] = {1};
    loom_tensor *t;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 1, d, &t), LOOM_OK);
    const char *p = tmp_path("no-such-dir/x.npy");
    CU_ASSERT_EQUAL(loom_tensor_save_npy(p, t), LOOM_ERR_IO);
    CU_ASSERT(contains(loom_last_error(), p));
    CU_ASSERT(contains(loom_last_error(), "No such file or directory"));
    loom_tensor_destroy(t);
}

/* ---- refusing malformed files -------------------------------------------------------------- */

/* Load P, expect STATUS with a message naming P and containing WHAT. */
static void expect_refused(const char *p, loom_status status, const char *what)
{
    loom_tensor *t = (loom_tensor *)&t; /* must be reset to NULL */
    loom_status st = loom_tensor_load_npy(p, &t);
    CU_ASSERT_EQUAL(st, status);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT(contains(loom_last_error(), p));
    if (!contains(loom_last_error(), what)) {
        fprintf(stderr, "\n  message '%s' lacks '%s'\n", loom_last_error(), what);
        CU_FAIL("message does not say what is wrong");
    }
}

static void refused_dict(const char *name, const char *dict, size_t data_bytes, const char *what)
{
    static const unsigned char zeros[64];
    const char *p = tmp_path(name);
    write_npy_raw(p, 1, dict, zeros, data_bytes);
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, what);
}

static void test_missing_file_is_io_error_with_errno_text(void)
{
    expect_refused(tmp_path("absent.npy"), LOOM_ERR_IO, "No such file or directory");
}

static void test_directory_is_io_error(void)
{
    expect_refused(tmpdir, LOOM_ERR_IO, "Is a directory");
}

static void test_refuses_bad_magic(void)
{
    const char *p = tmp_path("magic.npy");
    static const char zip[] = "PK\x03\x04 not an npy file at all";
    write_bytes(p, zip, sizeof zip - 1);
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, "magic");
}

static void test_refuses_empty_file(void)
{
    const char *p = tmp_path("empty.npy");
    write_bytes(p, "", 0);
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, "magic");
}

static void test_refuses_unknown_format_version(void)
{
    const char *p = tmp_path("v4.npy");
    char buf[NP_F32_2X3_LEN];
    memcpy(buf, np_f32_2x3, sizeof buf);
    buf[6] = 4;
    write_bytes(p, buf, sizeof buf);
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, "version 4.0");
}

static void test_refuses_file_ending_in_header(void)
{
    const char *p = tmp_path("short-header.npy");
    write_bytes(p, np_f32_2x3, 40);
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, "ends inside the header");
    write_bytes(p, np_f32_2x3, 9);
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, "ends inside the header length");
}

static void test_refuses_huge_header_length(void)
{
    const char *p = tmp_path("huge.npy");
    write_bytes(p, "\x93NUMPY\x02\x00\xff\xff\xff\x7f{", 13);
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, "header length");
}

static void test_refuses_truncated_data(void)
{
    const char *p = tmp_path("short-data.npy");
    write_bytes(p, np_f32_2x3, NP_F32_2X3_LEN - 5);
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, "truncated (19 of 24 bytes)");
}

static void test_refuses_trailing_bytes(void)
{
    const char *p = tmp_path("long.npy");
    char buf[NP_F32_2X3_LEN + 4] = {0};
    memcpy(buf, np_f32_2x3, NP_F32_2X3_LEN);
    write_bytes(p, buf, sizeof buf);
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, "bytes after the data");
}

static void test_refuses_fortran_order(void)
{
    refused_dict("fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24,
                 "Fortran");
}

static void test_refuses_big_endian(void)
{
    refused_dict("big.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8,
                 "big-endian");
    refused_dict("big-i8.npy", "{'descr': '>i8', 'fortran_order': False, 'shape': (1,), }", 8,
                 "big-endian");
}

static void test_refuses_unsupported_dtypes(void)
{
    refused_dict("c16.npy", "{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", 16,
                 "dtype '<c16' is not supported");
    refused_dict("c8.npy", "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", 8,
                 "dtype '<c8' is not supported");
    refused_dict("str.npy", "{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }", 12,
                 "dtype '<U3' is not supported");
    refused_dict("v2.npy", "{'descr': '<V2', 'fortran_order': False, 'shape': (1,), }", 2,
                 "bfloat16");
    refused_dict("rec.npy",
                 "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", 4,
                 "structured");
}

static void test_refuses_malformed_headers(void)
{
    refused_dict("notdict.npy", "['descr', '<f4']", 0, "not a Python dict");
    refused_dict("nocolon.npy", "{'descr' '<f4', 'fortran_order': False, 'shape': (1,), }", 4,
                 "malformed header");
    refused_dict("noshape.npy", "{'descr': '<f4', 'fortran_order': False, }", 4,
                 "lacks 'shape'");
    refused_dict("nodescr.npy", "{'fortran_order': False, 'shape': (1,), }", 4,
                 "lacks 'descr'");
    refused_dict("noorder.npy", "{'descr': '<f4', 'shape': (1,), }", 4, "lacks 'fortran_order'");
    refused_dict("unknownkey.npy",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1, }", 4,
                 "unknown key 'x'");
    refused_dict("badorder.npy", "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }", 4,
                 "neither True nor False");
    refused_dict("listshape.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': [1], }", 4,
                 "not a tuple");
    refused_dict("negshape.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                 4, "non-negative integers");
    refused_dict("floatshape.npy",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,), }", 4,
                 "not a tuple of integers");
    refused_dict("rank9.npy",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4,
                 "more than 8 dimensions");
    refused_dict("hugedim.npy",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                 4, "too large");
    refused_dict("overflow.npy",
                 "{'descr': '<i8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
                 0, "overflows");
    refused_dict("trailing.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x",
                 4, "after the header's dict");
}

/* ---- atomic writing (issue 17) ---------------------------------------------------------------- */

/* Temporary files ("*.tmp") left in DIR. */
static int leftover_temporaries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        n += l > 4 && !strcmp(e->d_name + l - 4, ".tmp");
    }
    if (d)
        closedir(d);
    return n;
}

/* A float32 tensor of COUNT elements, each VALUE. */
static loom_tensor *filled(size_t count, float value)
{
    int64_t d[1] = {(int64_t)count};
    loom_tensor *t = NULL;
    if (loom_tensor_create(LOOM_DTYPE_F32, 1, d, &t) != LOOM_OK)
        return NULL;
    float *f = loom_tensor_data(t);
    for (size_t i = 0; i < count; i++)
        f[i] = value;
    return t;
}

static void test_save_replaces_an_existing_file_whole(void)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/replace", tmpdir);
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0700), 0);
    char p[700];
    snprintf(p, sizeof p, "%s/out.npy", dir);
    write_bytes(p, "old contents, longer than nothing", 33);
    loom_tensor *t = filled(3, 2.0f), *back = NULL;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_save_npy(p, t), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_load_npy(p, &back), LOOM_OK);
    CU_ASSERT(loom_tensor_nbytes(back) == 12 && ((float *)loom_tensor_data(back))[2] == 2.0f);
    CU_ASSERT_EQUAL(leftover_temporaries(dir), 0);
    loom_tensor_destroy(back);
    loom_tensor_destroy(t);
}

static void test_save_refuses_a_symlink_at_the_target(void)
{
    const char *victim = tmp_path("victim.txt");
    write_bytes(victim, "precious", 8);
    char link[600];
    snprintf(link, sizeof link, "%s/link.npy", tmpdir);
    CU_ASSERT_EQUAL_FATAL(symlink(victim, link), 0);
    loom_tensor *t = filled(4, 1.0f);
    CU_ASSERT_EQUAL(loom_tensor_save_npy(link, t), LOOM_ERR_IO);
    CU_ASSERT(contains(loom_last_error(), link));
    CU_ASSERT(contains(loom_last_error(), "symbolic link"));
    size_t n = 0;
    unsigned char *b = read_bytes(victim, &n);
    CU_ASSERT(b && n == 8 && !memcmp(b, "precious", 8));
    free(b);
    struct stat sb;
    CU_ASSERT(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode));
    CU_ASSERT_EQUAL(leftover_temporaries(tmpdir), 0);
    /* A folder at the target is refused too, by name. */
    const char *d = tmp_path("a-folder.npy");
    CU_ASSERT_EQUAL_FATAL(mkdir(d, 0700), 0);
    CU_ASSERT_EQUAL(loom_tensor_save_npy(d, t), LOOM_ERR_IO);
    CU_ASSERT(contains(loom_last_error(), "is a directory"));
    loom_tensor_destroy(t);
}

/* A write that fails part way (here the file-size limit, as a full disk would): the save
 * reports LOOM_ERR_IO naming the file, the old file is intact and no partial file remains. The
 * save runs in a child, whose RLIMIT_FSIZE is 4 KiB and which ignores SIGXFSZ. */
static void test_failed_write_leaves_the_old_file_and_no_partial_file(void)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/full", tmpdir);
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0700), 0);
    char p[700];
    snprintf(p, sizeof p, "%s/out.npy", dir);
    loom_tensor *old = filled(8, 7.0f);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_save_npy(p, old), LOOM_OK);
    size_t n0 = 0;
    unsigned char *before = read_bytes(p, &n0);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(255);
        loom_tensor *big = filled(16384, 1.0f); /* 64 KiB */
        loom_status st = loom_tensor_save_npy(p, big);
        int named = contains(loom_last_error(), p) && contains(loom_last_error(), "too large");
        loom_tensor_destroy(big);
        _exit(st == LOOM_ERR_IO && named ? 0 : 1);
    }
    int ws = 0;
    CU_ASSERT_FATAL(pid > 0 && waitpid(pid, &ws, 0) == pid);
    CU_ASSERT(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    size_t n1 = 0;
    unsigned char *after = read_bytes(p, &n1);
    CU_ASSERT(before && after && n0 == n1 && !memcmp(before, after, n0));
    CU_ASSERT_EQUAL(leftover_temporaries(dir), 0);
    free(before);
    free(after);
    loom_tensor_destroy(old);
}

/* The new file's mode is 0666 less the umask, as fopen would make it (not mkstemp's 0600). */
static void test_saved_file_mode_follows_the_umask(void)
{
    const char *p = tmp_path("mode.npy");
    pid_t pid = fork();
    if (pid == 0) {
        umask(027);
        loom_tensor *t = filled(2, 1.0f);
        loom_status st = loom_tensor_save_npy(p, t);
        loom_tensor_destroy(t);
        _exit(st == LOOM_OK ? 0 : 1);
    }
    int ws = 0;
    CU_ASSERT_FATAL(pid > 0 && waitpid(pid, &ws, 0) == pid);
    CU_ASSERT(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    struct stat sb;
    CU_ASSERT(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0640);
}

/* ---- sizes checked against the file before allocating (issue 17) --------------------------- */

/* A header claiming 2^40 float32 elements over no data: bad input, not an allocation failure. */
static void test_refuses_claim_of_2_to_40_elements_as_bad_input(void)
{
    refused_dict("claim-2e40.npy",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }", 0,
                 "truncated (0 of 4398046511104 bytes)");
    refused_dict("claim-2e40-2d.npy",
                 "{'descr': '<i8', 'fortran_order': False, 'shape': (1048576, 1048576), }", 64,
                 "truncated (64 of 8796093022208 bytes)");
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#ifndef UNDER_ASAN
/* Load P in a child whose address space is capped at 512 MiB; the child's exit status is the
 * loom_status it got (255 when it could not run). A loader that allocates what the header
 * claims fails there with LOOM_ERR_OUT_OF_MEMORY instead of refusing the file. */
static int load_status_under_512mib(const char *p)
{
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {512ul << 20, 512ul << 20};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(255);
        loom_tensor *t = NULL;
        loom_status st = loom_tensor_load_npy(p, &t);
        loom_tensor_destroy(t);
        _exit((int)st);
    }
    int ws = 0;
    if (pid < 0 || waitpid(pid, &ws, 0) != pid || !WIFEXITED(ws))
        return 255;
    return WEXITSTATUS(ws);
}
#endif

/* A 640-byte file whose header claims 2 GiB: refused from the file's size, never allocated
 * (the check is made in a child with a 512 MiB address space; not under ASan, whose shadow
 * memory needs more). */
static void test_short_file_claiming_2_gib_is_refused_before_allocating(void)
{
#ifdef UNDER_ASAN
    CU_PASS("address-space limit not usable under ASan");
#else
    static const unsigned char zeros[576];
    const char *p = tmp_path("claim-2gib.npy");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (536870912,), }",
                  zeros, sizeof zeros);
    CU_ASSERT_EQUAL(load_status_under_512mib(p), LOOM_ERR_INVALID_ARGUMENT);
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, "truncated (576 of 2147483648 bytes)");
#endif
}

/* Write LEN bytes of DATA into the FIFO P from a child; returns its pid. */
static pid_t fifo_writer(const char *p, const void *data, size_t len)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(p, O_WRONLY);
        if (fd < 0)
            _exit(1);
        const unsigned char *b = data;
        while (len) {
            ssize_t w = write(fd, b, len);
            if (w <= 0)
                _exit(errno == EPIPE ? 0 : 1);
            b += w, len -= (size_t)w;
        }
        close(fd);
        _exit(0);
    }
    return pid;
}

/* A pipe has no size to check first: what arrives is read, memory growing with it, and a short
 * stream claiming 2 GiB is refused as truncated. */
static void test_pipe_is_read_and_short_pipe_refused(void)
{
    const char *p = tmp_path("pipe.npy");
    CU_ASSERT_EQUAL_FATAL(mkfifo(p, 0600), 0);
    pid_t w = fifo_writer(p, np_f32_2x3, NP_F32_2X3_LEN);
    loom_tensor *t = NULL;
    CU_ASSERT_EQUAL(loom_tensor_load_npy(p, &t), LOOM_OK);
    if (t) {
        const float *f = loom_tensor_data(t);
        CU_ASSERT(loom_tensor_nbytes(t) == 24 && f[0] == -1.0f && f[5] == 1.5f);
    }
    loom_tensor_destroy(t);
    waitpid(w, NULL, 0);

    /* 128-byte header, then 512 bytes of data, claiming 2 GiB. */
    unsigned char buf[640] = {0};
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (536870912,), }";
    memcpy(buf, "\x93NUMPY\x01\x00\x76\x00", 10);
    memset(buf + 10, ' ', 118);
    memcpy(buf + 10, dict, strlen(dict));
    buf[127] = '\n';
    w = fifo_writer(p, buf, sizeof buf);
#ifdef UNDER_ASAN
    expect_refused(p, LOOM_ERR_INVALID_ARGUMENT, "truncated (512 of 2147483648 bytes)");
#else
    CU_ASSERT_EQUAL(load_status_under_512mib(p), LOOM_ERR_INVALID_ARGUMENT);
#endif
    waitpid(w, NULL, 0);
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        {"reads_numpy_f32_format_1", test_reads_numpy_f32_format_1},
        {"reads_numpy_i64_format_2", test_reads_numpy_i64_format_2},
        {"reads_numpy_bool_format_3", test_reads_numpy_bool_format_3},
        {"reads_numpy_f16_scalar", test_reads_numpy_f16_scalar},
        {"accepts_header_variants_numpy_accepts", test_accepts_header_variants_numpy_accepts},
        {"writes_what_numpy_writes", test_writes_what_numpy_writes},
        {"header_is_padded_to_64_bytes", test_header_is_padded_to_64_bytes},
        {"every_dtype_round_trips", test_every_dtype_round_trips},
        {"bf16_is_written_as_f32", test_bf16_is_written_as_f32},
        {"save_to_unwritable_path_is_io_error", test_save_to_unwritable_path_is_io_error},
        {"missing_file_is_io_error_with_errno_text", test_missing_file_is_io_error_with_errno_text},
        {"directory_is_io_error", test_directory_is_io_error},
        {"refuses_bad_magic", test_refuses_bad_magic},
        {"refuses_empty_file", test_refuses_empty_file},
        {"refuses_unknown_format_version", test_refuses_unknown_format_version},
        {"refuses_file_ending_in_header", test_refuses_file_ending_in_header},
        {"refuses_huge_header_length", test_refuses_huge_header_length},
        {"refuses_truncated_data", test_refuses_truncated_data},
        {"refuses_trailing_bytes", test_refuses_trailing_bytes},
        {"refuses_fortran_order", test_refuses_fortran_order},
        {"refuses_big_endian", test_refuses_big_endian},
        {"refuses_unsupported_dtypes", test_refuses_unsupported_dtypes},
        {"refuses_malformed_headers", test_refuses_malformed_headers},
        {"refuses_claim_of_2_to_40_elements_as_bad_input",
         test_refuses_claim_of_2_to_40_elements_as_bad_input},
        {"short_file_claiming_2_gib_is_refused_before_allocating",
         test_short_file_claiming_2_gib_is_refused_before_allocating},
        {"pipe_is_read_and_short_pipe_refused", test_pipe_is_read_and_short_pipe_refused},
        {"save_replaces_an_existing_file_whole", test_save_replaces_an_existing_file_whole},
        {"save_refuses_a_symlink_at_the_target", test_save_refuses_a_symlink_at_the_target},
        {"failed_write_leaves_the_old_file_and_no_partial_file",
         test_failed_write_leaves_the_old_file_and_no_partial_file},
        {"saved_file_mode_follows_the_umask", test_saved_file_mode_follows_the_umask},
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"npy", tests, suite_init, suite_clean, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
