/*
 * JSON numbers of the serving layer (serve/float_text.h): float32 and float64 values, random bit
 * patterns and the edge cases (zeros, denormals, the extremes, integers past 2^24 and 2^53,
 * neighbours of powers of ten), read back with the C library's strtof/strtod to the identical
 * bits; the text is never longer than "%.9g"/"%.17g" writes, has no more significant digits
 * than the fewest "%.*e" needs to read back, and jansson reads it as a JSON number; NaN and the
 * infinities are "null"; small buffers. Then a KServe v2 answer (serve/kserve.c) with FP32, FP16
 * and a double confidence: jansson reads the body and every element reads back exactly.
 */
#include <CUnit/Basic.h>

#include <loom/loom.h>
#include <loom/serve.h>

#include "serve/float_text.h"
#include "serve/serve_internal.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_RANDOM 300000
/* Of the random values, every CHECK_EVERY-th also gets the slower checks (jansson, digits). */
#define CHECK_EVERY 4

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

/* splitmix64: a fixed sequence, so a failure repeats. */
static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float f32_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint64_t f64_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

static double f64_of(uint64_t u)
{
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* Significant digits of a finite number's text: the mantissa's digits without leading and
 * trailing zeros (0 for a zero). */
static int significant_digits(const char *s)
{
    char digits[64];
    int n = 0;
    for (; *s && *s != 'e' && *s != 'E'; s++)
        if (*s >= '0' && *s <= '9' && n < (int)sizeof digits)
            digits[n++] = *s;
    int lo = 0;
    while (lo < n && digits[lo] == '0')
        lo++;
    while (n > lo && digits[n - 1] == '0')
        n--;
    return n - lo;
}

/* The fewest digits "%.*e" needs for V to read back (strtof when IS_F32), at most MAX. */
static int fewest_digits_e(double v, int is_f32, int max)
{
    char t[64];
    for (int p = 1; p < max; p++) {
        snprintf(t, sizeof t, "%.*e", p - 1, v);
        if (is_f32 ? f32_bits(strtof(t, NULL)) == f32_bits((float)v)
                   : f64_bits(strtod(t, NULL)) == f64_bits(v))
            return p;
    }
    return max;
}

/* jansson reads TEXT, alone, as a JSON number. */
static int is_json_number(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    int ok = j && json_is_number(j);
    json_decref(j);
    return ok;
}

static unsigned failures_f32, failures_f64;

/* Every property of one value's text (float32 when IS_F32, read back with strtof; else
 * float64 and strtod); counts (and prints the first few) failures per type. */
static void check_text(double v, int is_f32, int slow)
{
    char buf[SV_FLOAT_TEXT_MAX], ref[64];
    memset(buf, 'x', sizeof buf);
    size_t n = sv_float_text(v, is_f32, buf, sizeof buf);
    int rn = snprintf(ref, sizeof ref, is_f32 ? "%.9g" : "%.17g", v);
    char *end;
    uint64_t bits = is_f32 ? f32_bits((float)v) : f64_bits(v);
    uint64_t back = is_f32 ? f32_bits(strtof(buf, &end)) : f64_bits(strtod(buf, &end));
    const char *why = NULL;
    if (n == 0 || n != strlen(buf))
        why = "length";
    else if (*end || back != bits)
        why = "does not read back to the same bits";
    else if (n > (size_t)rn)
        why = is_f32 ? "longer than %.9g" : "longer than %.17g";
    else if (strchr(buf, '+') || buf[n - 1] == '.' || strchr(buf, 'E'))
        why = "not the expected form";
    else if (slow && !is_json_number(buf))
        why = "not a JSON number";
    else if (slow && significant_digits(buf) > fewest_digits_e(v, is_f32, is_f32 ? 9 : 17))
        why = "more digits than needed";
    unsigned *failures = is_f32 ? &failures_f32 : &failures_f64;
    if (why && (*failures)++ < 10)
        printf("\n%s 0x%0*llx: \"%s\" (%s: \"%s\"): %s\n", is_f32 ? "float" : "double",
               is_f32 ? 8 : 16, (unsigned long long)bits, buf, is_f32 ? "%.9g" : "%.17g", ref,
               why);
}

static void check_f32(float f, int slow)
{
    check_text(f, 1, slow);
}

static void check_f64(double d, int slow)
{
    check_text(d, 0, slow);
}

static void expect_text(double v, int is_f32, const char *want)
{
    char buf[SV_FLOAT_TEXT_MAX];
    size_t n = sv_float_text(v, is_f32, buf, sizeof buf);
    CU_ASSERT_STRING_EQUAL(buf, want);
    CU_ASSERT_EQUAL(n, strlen(want));
    if (strcmp(buf, want))
        printf("\n%s %.17g: \"%s\", expected \"%s\"\n", is_f32 ? "float" : "double", v, buf,
               want);
}

static void test_known_texts_are_shortest(void)
{
    expect_text(0.1f, 1, "0.1");
    expect_text(0.0f, 1, "0");
    expect_text(-0.0f, 1, "-0");
    expect_text(-2.0f, 1, "-2");
    expect_text(100.0f, 1, "100");
    expect_text(1e-7f, 1, "1e-7");
    expect_text(1e-4f, 1, "0.0001");
    expect_text(1.5e30f, 1, "1.5e30");
    expect_text(16777216.0f, 1, "16777216");
    expect_text(16777217.0, 1, "16777216"); /* not a float: rounds to 2^24 */
    expect_text(123456792.0f, 1, "123456790");
    expect_text(1e9f, 1, "1e9");
    expect_text(FLT_MAX, 1, "3.4028235e38");
    expect_text(FLT_MIN, 1, "1.1754944e-38");
    expect_text(FLT_TRUE_MIN, 1, "1e-45");
    expect_text(0.1, 0, "0.1");
    expect_text(-0.0, 0, "-0");
    expect_text(1.0 / 3.0, 0, "0.3333333333333333");
    expect_text(9007199254740993.0, 0, "9007199254740992"); /* 2^53 + 1 rounds to 2^53 */
    expect_text(1e21, 0, "1e21");
    expect_text(DBL_MAX, 0, "1.7976931348623157e308");
    expect_text(DBL_MIN, 0, "2.2250738585072014e-308");
    expect_text(4.9406564584124654e-324, 0, "5e-324");
    /* A float widened to double is written as the double it is, not as the float. */
    expect_text(0.1f, 0, "0.10000000149011612");
}

static void test_float32_reads_back_exactly_and_no_longer_than_g9(void)
{
    failures_f32 = 0;
    float edges[] = {0.0f, -0.0f, FLT_TRUE_MIN, -FLT_TRUE_MIN, f32_of(0x007fffffu),
                     f32_of(0x00400000u), FLT_MIN, -FLT_MIN, FLT_MAX, -FLT_MAX, 0.1f, 0.2f, 0.3f,
                     1e-7f, 1.0f / 3.0f, 2.0f / 3.0f, 16777215.0f, 16777216.0f, 16777218.0f,
                     16777220.0f, 33554436.0f, 1e-4f, 9.9999997e-5f, 1e8f, 99999999.0f, 1e9f,
                     999999936.0f, 123456789.0f, 3.14159265f, 2.71828183f, 65504.0f, 1e38f};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        check_f32(edges[i], 1);
    /* Powers of ten and of two, and their neighbours on both sides: where the form, the
     * exponent and the rounding interval change. */
    for (int e = -45; e <= 38; e++) {
        char t[16];
        snprintf(t, sizeof t, "1e%d", e);
        float p = strtof(t, NULL);
        for (int s = -1; s <= 1; s += 2) {
            float q = s * p;
            check_f32(q, 1);
            check_f32(nextafterf(q, 0.0f), 1);
            check_f32(nextafterf(q, s * INFINITY), 1);
        }
    }
    for (int e = -149; e <= 127; e++) {
        float p = ldexpf(1.0f, e);
        check_f32(p, 1);
        check_f32(nextafterf(p, 0.0f), 1);
        check_f32(nextafterf(p, INFINITY), 1);
    }
    for (int i = 0; i < N_RANDOM; i++) {
        uint32_t u = (uint32_t)next_u64();
        if ((u & 0x7f800000u) == 0x7f800000u)
            continue; /* NaN and infinity: the next test */
        check_f32(f32_of(u), i % CHECK_EVERY == 0);
    }
    CU_ASSERT_EQUAL(failures_f32, 0);
}

static void test_float64_reads_back_exactly_and_no_longer_than_g17(void)
{
    failures_f64 = 0;
    double edges[] = {0.0, -0.0, 4.9406564584124654e-324, f64_of(0x000fffffffffffffu), DBL_MIN,
                      -DBL_MIN, DBL_MAX, -DBL_MAX, 0.1, 0.2, 0.3, 0.1 + 0.2, 1e-7, 1.0 / 3.0,
                      9007199254740991.0, 9007199254740992.0, 9007199254740994.0, 1e-4,
                      9.9999999999999991e-5, 1e16, 1e17, 99999999999999984.0, 123456789012345678.0,
                      3.141592653589793, FLT_MAX, FLT_TRUE_MIN, (double)0.1f};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        check_f64(edges[i], 1);
    for (int e = -323; e <= 308; e++) {
        char t[16];
        snprintf(t, sizeof t, "1e%d", e);
        double p = strtod(t, NULL);
        for (int s = -1; s <= 1; s += 2) {
            double q = s * p;
            check_f64(q, 1);
            check_f64(nextafter(q, 0.0), 1);
            check_f64(nextafter(q, s * INFINITY), 1);
        }
    }
    for (int e = -1074; e <= 1023; e += 7) {
        double p = ldexp(1.0, e);
        check_f64(p, 1);
        check_f64(nextafter(p, 0.0), 1);
        check_f64(nextafter(p, INFINITY), 1);
    }
    for (int i = 0; i < N_RANDOM; i++) {
        uint64_t u = next_u64();
        if ((u & 0x7ff0000000000000u) == 0x7ff0000000000000u)
            continue;
        check_f64(f64_of(u), i % CHECK_EVERY == 0);
    }
    /* Doubles that are floats (what FP32 outputs widen to) and small integers. */
    for (int i = 0; i < N_RANDOM / 10; i++) {
        uint32_t u = (uint32_t)next_u64();
        if ((u & 0x7f800000u) != 0x7f800000u)
            check_f64(f32_of(u), i % CHECK_EVERY == 0);
        check_f64((double)(int32_t)u, 0);
    }
    CU_ASSERT_EQUAL(failures_f64, 0);
}

static void test_nan_and_infinity_are_null(void)
{
    double specials[] = {NAN, -NAN, INFINITY, -INFINITY, f64_of(0x7ff0000000000001u),
                         f64_of(0xfff8000000000123u)};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        expect_text(specials[i], 1, "null");
        expect_text(specials[i], 0, "null");
    }
    expect_text(f32_of(0x7fc00001u), 1, "null");
    expect_text(f32_of(0xff800000u), 1, "null");
    /* A double beyond float's range is an infinity as a float. */
    expect_text(1e39, 1, "null");
    expect_text(-1e300, 1, "null");
    expect_text(1e39, 0, "1e39");
}

static void test_small_buffers_get_an_empty_string(void)
{
    char buf[8];
    memset(buf, 'x', sizeof buf);
    CU_ASSERT_EQUAL(sv_float_text(0.1f, 1, buf, 4), 3);
    CU_ASSERT_STRING_EQUAL(buf, "0.1");
    memset(buf, 'x', sizeof buf);
    CU_ASSERT_EQUAL(sv_float_text(0.1f, 1, buf, 3), 0);
    CU_ASSERT_EQUAL(buf[0], '\0');
    CU_ASSERT_EQUAL(buf[1], 'x');
    memset(buf, 'x', sizeof buf);
    CU_ASSERT_EQUAL(sv_float_text(NAN, 0, buf, 5), 4);
    CU_ASSERT_STRING_EQUAL(buf, "null");
    memset(buf, 'x', sizeof buf);
    CU_ASSERT_EQUAL(sv_float_text(NAN, 0, buf, 4), 0);
    CU_ASSERT_EQUAL(buf[0], '\0');
    memset(buf, 'x', sizeof buf);
    CU_ASSERT_EQUAL(sv_float_text(1.0, 0, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 'x');
    CU_ASSERT_EQUAL(sv_float_text(-1.17549435e-38f, 1, buf, sizeof buf), 0);
    CU_ASSERT_EQUAL(buf[0], '\0');
}

/* The bits of the IEEE half H as a float, decoded here apart from serve/kserve.c's converter. */
static float half_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float mag = e ? ldexpf((float)(1024 + m), e - 25) : ldexpf((float)m, -24);
    return (h & 0x8000) ? -mag : mag;
}

/* The JSON text of the "data" array after the output named NAME in BODY, or NULL. */
static const char *data_of(const char *body, const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "\"name\":\"%s\"", name);
    const char *o = strstr(body, key);
    const char *d = o ? strstr(o, "\"data\":[") : NULL;
    return d ? d + strlen("\"data\":[") : NULL;
}

static void test_kserve_answer_reads_back_exactly(void)
{
    enum { N = 4096 };
    int64_t dims[2] = {1, N};
    loom_tensor *tf, *th;
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F32, 2, dims, &tf), LOOM_OK);
    CU_ASSERT_EQUAL_FATAL(loom_tensor_create(LOOM_DTYPE_F16, 2, dims, &th), LOOM_OK);
    float *f = loom_tensor_data(tf);
    uint16_t *h = loom_tensor_data(th);
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)next_u64();
        /* Half the elements any bit pattern, half like a model's outputs (|x| < 8). */
        f[i] = i % 2 ? f32_of(u) : ldexpf((float)(int32_t)u, -28);
        h[i] = (uint16_t)(u >> 7);
    }
    f[0] = NAN;
    f[1] = -INFINITY;
    f[2] = -0.0f;
    f[3] = 0.1f;
    const char *names[2] = {"y", "yh"};
    loom_tensor *outs[2] = {tf, th};
    loom_serve_result r = {.code = LOOM_SERVE_OK, .id = "x", .model = "m", .version = "1",
                           .n_outputs = 2, .outputs = outs, .output_names = names,
                           .variant = "full", .path = "full", .confidence = 0.1};
    char *body, err[256];
    size_t len, hl;
    CU_ASSERT_EQUAL_FATAL(sv_kserve_response(&r, NULL, &body, &len, &hl, err, sizeof err), 0);
    CU_ASSERT_EQUAL(hl, 0);
    /* The whole body is JSON, and its numbers are where the outputs say. */
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    json_t *o = json_array_get(json_object_get(j, "outputs"), 0);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(o, "data")), N);
    CU_ASSERT(json_is_null(json_array_get(json_object_get(o, "data"), 0)));
    CU_ASSERT(json_is_null(json_array_get(json_object_get(o, "data"), 1)));
    json_decref(j);
    char *text = malloc(len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    memcpy(text, body, len);
    text[len] = '\0';
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"confidence\":0.1}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"data\":[null,null,-0,0.1,"));
    /* Each element, read with strtof, has the output's bits (NaN and infinity: null). */
    int wrong = 0;
    const char *p = data_of(text, "y");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    for (int i = 0; i < N; i++) {
        char *end;
        if (!isfinite(f[i])) {
            wrong += strncmp(p, "null", 4) != 0;
            end = (char *)p + 4;
        } else {
            wrong += f32_bits(strtof(p, &end)) != f32_bits(f[i]);
        }
        wrong += *end != (i + 1 < N ? ',' : ']');
        p = end + 1;
    }
    CU_ASSERT_EQUAL(wrong, 0);
    p = data_of(text, "yh");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    wrong = 0;
    for (int i = 0; i < N; i++) {
        char *end;
        if (((h[i] >> 10) & 0x1f) == 0x1f) {
            wrong += strncmp(p, "null", 4) != 0;
            end = (char *)p + 4;
        } else {
            wrong += f32_bits(strtof(p, &end)) != f32_bits(half_value(h[i]));
        }
        wrong += *end != (i + 1 < N ? ',' : ']');
        p = end + 1;
    }
    CU_ASSERT_EQUAL(wrong, 0);
    free(text);
    free(body);
    loom_tensor_destroy(tf);
    loom_tensor_destroy(th);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("float_text", NULL, NULL);
    CU_add_test(s, "known texts are the shortest", test_known_texts_are_shortest);
    CU_add_test(s, "float32 reads back exactly, no longer than %.9g",
                test_float32_reads_back_exactly_and_no_longer_than_g9);
    CU_add_test(s, "float64 reads back exactly, no longer than %.17g",
                test_float64_reads_back_exactly_and_no_longer_than_g17);
    CU_add_test(s, "NaN and infinity are null", test_nan_and_infinity_are_null);
    CU_add_test(s, "small buffers get an empty string", test_small_buffers_get_an_empty_string);
    CU_add_test(s, "a KServe answer reads back exactly", test_kserve_answer_reads_back_exactly);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
