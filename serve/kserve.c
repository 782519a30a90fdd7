/*
 * The KServe v2 / Open Inference Protocol request and response bodies: JSON tensors (data flat
 * or nested, row-major) and the binary tensor data extension (a JSON header of
 * Inference-Header-Content-Length bytes, then raw little-endian tensors in the order of the
 * inputs or outputs that declare parameters.binary_data_size). Requests are parsed with jansson
 * and checked against the model's inputs; responses are written directly, floating-point numbers
 * as the shortest text that reads back to the same value (serve/float_text.h).
 */
#include "serve_internal.h"

#include "float_text.h"

#include "core/core_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    loom_dtype dt;
} dtype_names[] = {
    {"BOOL", LOOM_DTYPE_BOOL}, {"UINT8", LOOM_DTYPE_U8},  {"INT8", LOOM_DTYPE_I8},
    {"INT32", LOOM_DTYPE_I32}, {"INT64", LOOM_DTYPE_I64}, {"FP16", LOOM_DTYPE_F16},
    {"FP32", LOOM_DTYPE_F32},  {"BF16", LOOM_DTYPE_BF16},
};

const char *sv_kserve_dtype_name(loom_dtype dt)
{
    for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
        if (dtype_names[i].dt == dt)
            return dtype_names[i].name;
    return NULL;
}

loom_dtype sv_kserve_dtype(const char *name)
{
    for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
        if (!strcmp(dtype_names[i].name, name))
            return dtype_names[i].dt;
    return LOOM_DTYPE_UNDEFINED;
}

/* The protocol's other datatypes: known names that Loom has no dtype for. */
static int known_datatype(const char *name)
{
    static const char *const others[] = {"UINT16", "UINT32", "UINT64", "INT16", "FP64",
                                         "BYTES"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (!strcmp(others[i], name))
            return 1;
    return sv_kserve_dtype(name) != LOOM_DTYPE_UNDEFINED;
}

/* ---- half precision ---------------------------------------------------------------------- */

static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffffu;
    if (((x >> 23) & 0xff) == 0xff) /* Inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t h = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++; /* may carry into the exponent, which is right */
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else {
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                exp--;
            }
            x = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        x = sign | 0x7f800000u | (mant << 13);
    } else {
        x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* ---- requests ---------------------------------------------------------------------------- */

void sv_parsed_free(sv_parsed *p)
{
    if (!p)
        return;
    for (size_t k = 0; k < p->n_inputs; k++) {
        if (p->inputs)
            loom_tensor_destroy(p->inputs[k]);
        if (p->input_names)
            free(p->input_names[k]);
    }
    for (size_t k = 0; k < p->n_outputs; k++)
        if (p->output_names)
            free(p->output_names[k]);
    free(p->inputs);
    free(p->input_names);
    free(p->output_names);
    free(p->output_binary);
    free(p->id);
    free(p->variant);
    memset(p, 0, sizeof *p);
}

typedef struct fill {
    loom_dtype dt;
    char *data;
    size_t n, filled;
    const char *name;
    char *err;
    size_t err_len;
} fill;

static int fill_error(fill *f, const char *what)
{
    snprintf(f->err, f->err_len, "input '%s': %s at element %zu", f->name, what, f->filled);
    return -1;
}

/* Write the leaves of V (a number, a boolean or nested arrays of them) into F, in order. */
/* Scalars in V, nested arrays flattened (jansson bounds the nesting while parsing). */
static size_t count_values(const json_t *v)
{
    if (!json_is_array(v))
        return 1;
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(v); i++)
        n += count_values(json_array_get(v, i));
    return n;
}

static int fill_values(fill *f, const json_t *v, int depth)
{
    if (depth > LOOM_MAX_RANK + 1)
        return fill_error(f, "data nested deeper than any shape");
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            if (fill_values(f, e, depth + 1) != 0)
                return -1;
        }
        return 0;
    }
    if (f->filled >= f->n) {
        snprintf(f->err, f->err_len, "input '%s': more data elements than its shape holds (%zu)",
                 f->name, f->n);
        return -1;
    }
    size_t i = f->filled;
    switch (f->dt) {
    case LOOM_DTYPE_BOOL:
        if (!json_is_boolean(v))
            return fill_error(f, "BOOL data must be true or false");
        ((uint8_t *)f->data)[i] = json_is_true(v);
        break;
    case LOOM_DTYPE_F32:
    case LOOM_DTYPE_F16:
    case LOOM_DTYPE_BF16: {
        if (!json_is_number(v))
            return fill_error(f, "not a number");
        double d = json_number_value(v);
        if (f->dt == LOOM_DTYPE_F32)
            ((float *)f->data)[i] = (float)d;
        else if (f->dt == LOOM_DTYPE_F16)
            ((uint16_t *)f->data)[i] = f32_to_f16((float)d);
        else
            ((uint16_t *)f->data)[i] = f32_to_bf16((float)d);
        break;
    }
    default: {
        if (!json_is_integer(v))
            return fill_error(f, "not an integer");
        json_int_t x = json_integer_value(v);
        json_int_t lo = 0, hi = 0;
        switch (f->dt) {
        case LOOM_DTYPE_U8: lo = 0; hi = 255; break;
        case LOOM_DTYPE_I8: lo = -128; hi = 127; break;
        case LOOM_DTYPE_I32: lo = INT32_MIN; hi = INT32_MAX; break;
        default: lo = INT64_MIN; hi = INT64_MAX; break;
        }
        if (x < lo || x > hi)
            return fill_error(f, "integer out of the datatype's range");
        switch (f->dt) {
        case LOOM_DTYPE_U8: ((uint8_t *)f->data)[i] = (uint8_t)x; break;
        case LOOM_DTYPE_I8: ((int8_t *)f->data)[i] = (int8_t)x; break;
        case LOOM_DTYPE_I32: ((int32_t *)f->data)[i] = (int32_t)x; break;
        default: ((int64_t *)f->data)[i] = (int64_t)x; break;
        }
    }
    }
    f->filled++;
    return 0;
}

static int bad(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return -1;
}

/* parameters.NAME as a boolean: 1, 0, or -1 when absent; -2 when not a boolean. */
static int param_bool(const json_t *obj, const char *name)
{
    const json_t *p = json_object_get(obj, "parameters");
    if (!p)
        return -1;
    const json_t *v = json_object_get(p, name);
    if (!v)
        return -1;
    return json_is_boolean(v) ? json_is_true(v) : -2;
}

static int parse_input(const json_t *in, size_t idx, const loom_serve_tensor_info *inputs,
                       size_t n_inputs, const unsigned char *bin, size_t bin_len,
                       size_t *bin_used, sv_parsed *out, char *err, size_t err_len)
{
    if (!json_is_object(in))
        return bad(err, err_len, "inputs[%zu] is not an object", idx);
    const json_t *jn = json_object_get(in, "name");
    if (!json_is_string(jn))
        return bad(err, err_len, "inputs[%zu] has no string 'name'", idx);
    const char *name = json_string_value(jn);
    for (size_t k = 0; k < idx; k++)
        if (!strcmp(out->input_names[k], name))
            return bad(err, err_len, "input '%s' is given twice", name);
    size_t mi;
    for (mi = 0; mi < n_inputs && strcmp(inputs[mi].name, name); mi++)
        ;
    if (mi == n_inputs)
        return bad(err, err_len, "the model has no input named '%s'", name);
    const json_t *jd = json_object_get(in, "datatype");
    if (!json_is_string(jd))
        return bad(err, err_len, "input '%s' has no string 'datatype'", name);
    const char *dtn = json_string_value(jd);
    if (!known_datatype(dtn))
        return bad(err, err_len, "input '%s': unknown datatype '%s'", name, dtn);
    loom_dtype dt = sv_kserve_dtype(dtn);
    if (dt != inputs[mi].dtype)
        return bad(err, err_len, "input '%s': datatype %s, the model wants %s", name, dtn,
                   sv_kserve_dtype_name(inputs[mi].dtype) ? sv_kserve_dtype_name(inputs[mi].dtype)
                                                          : "a type KServe cannot name");
    const json_t *js = json_object_get(in, "shape");
    if (!json_is_array(js))
        return bad(err, err_len, "input '%s' has no 'shape' array", name);
    size_t rank = json_array_size(js);
    if (rank > LOOM_MAX_RANK)
        return bad(err, err_len, "input '%s': rank %zu is over %d", name, rank, LOOM_MAX_RANK);
    int64_t dims[LOOM_MAX_RANK];
    size_t numel = 1;
    for (size_t d = 0; d < rank; d++) {
        const json_t *e = json_array_get(js, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return bad(err, err_len, "input '%s': shape[%zu] is not a non-negative integer",
                       name, d);
        dims[d] = json_integer_value(e);
        /* Bounded by the body: every element needs at least one byte of it. */
        if (dims[d] > (int64_t)(1u << 30) || (numel *= (size_t)dims[d]) > (size_t)1 << 34)
            return bad(err, err_len, "input '%s': shape too large", name);
    }
    size_t es = loom_dtype_size(dt);
    int64_t bsize = -1;
    const json_t *params = json_object_get(in, "parameters");
    if (params) {
        if (!json_is_object(params))
            return bad(err, err_len, "input '%s': 'parameters' is not an object", name);
        const json_t *b = json_object_get(params, "binary_data_size");
        if (b) {
            if (!json_is_integer(b) || json_integer_value(b) < 0)
                return bad(err, err_len, "input '%s': binary_data_size is not a non-negative "
                           "integer", name);
            bsize = json_integer_value(b);
        }
    }
    const json_t *data = json_object_get(in, "data");
    if (bsize >= 0 && data)
        return bad(err, err_len, "input '%s' has both 'data' and binary_data_size", name);
    if (bsize < 0 && !data)
        return bad(err, err_len, "input '%s' has no 'data' (nor binary_data_size)", name);
    if (bsize >= 0) {
        if ((size_t)bsize != numel * es)
            return bad(err, err_len, "input '%s': binary_data_size %lld, its shape and datatype "
                       "need %zu bytes", name, (long long)bsize, numel * es);
        if ((size_t)bsize > bin_len - *bin_used)
            return bad(err, err_len, "input '%s': binary data shorter than announced (%lld "
                       "bytes wanted, %zu left)", name, (long long)bsize, bin_len - *bin_used);
    } else if (numel > 0 && !json_is_array(data)) {
        return bad(err, err_len, "input '%s': 'data' is not an array", name);
    } else {
        /* Count before allocating: the shape may claim far more than the body holds (too many
         * elements are reported by fill_values, which stops at the shape's count). */
        size_t have = count_values(data);
        if (have < numel)
            return bad(err, err_len, "input '%s': %zu data elements, its shape holds %zu", name,
                       have, numel);
    }
    loom_tensor *t; /* every element is written below (or the tensor is dropped) */
    if (loom_tensor_create_uninit(dt, (uint32_t)rank, dims, &t) != LOOM_OK)
        return bad(err, err_len, "input '%s': cannot allocate a tensor of that shape", name);
    if (bsize >= 0) {
        memcpy(loom_tensor_data(t), bin + *bin_used, (size_t)bsize);
        *bin_used += (size_t)bsize;
    } else {
        fill f = {.dt = dt, .data = loom_tensor_data(t), .n = numel, .name = name, .err = err,
                  .err_len = err_len};
        if (fill_values(&f, data, 0) != 0) {
            loom_tensor_destroy(t);
            return -1;
        }
        if (f.filled != numel) {
            loom_tensor_destroy(t);
            return bad(err, err_len, "input '%s': %zu data elements, its shape holds %zu", name,
                       f.filled, numel);
        }
    }
    out->input_names[idx] = strdup(name);
    out->inputs[idx] = t;
    out->n_inputs = idx + 1;
    if (!out->input_names[idx])
        return bad(err, err_len, "out of memory");
    return 0;
}

int sv_kserve_parse(const char *body, size_t len, size_t header_len,
                    const loom_serve_tensor_info *inputs, size_t n_inputs, sv_parsed *out,
                    char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    out->binary_default = -1;
    size_t json_len = header_len ? header_len : len;
    if (header_len > len)
        return bad(err, err_len, "Inference-Header-Content-Length %zu is over the body's %zu "
                   "bytes", header_len, len);
    json_error_t je;
    json_t *root = json_loadb(body, json_len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return bad(err, err_len, "malformed JSON at line %d column %d: %s", je.line, je.column,
                   je.text);
    int rc = -1;
    const unsigned char *bin = (const unsigned char *)body + json_len;
    size_t bin_len = len - json_len, bin_used = 0;
    if (!json_is_object(root)) {
        bad(err, err_len, "the request is not a JSON object");
        goto done;
    }
    const json_t *id = json_object_get(root, "id");
    if (id && !json_is_string(id)) {
        bad(err, err_len, "'id' is not a string");
        goto done;
    }
    out->id = strdup(id ? json_string_value(id) : "");
    const json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params)) {
        bad(err, err_len, "'parameters' is not an object");
        goto done;
    }
    out->binary_default = param_bool(root, "binary_data_output");
    if (out->binary_default == -2) {
        bad(err, err_len, "parameters.binary_data_output is not a boolean");
        goto done;
    }
    if (params) {
        const json_t *t = json_object_get(params, "timeout");
        if (t) {
            if (!json_is_integer(t) || json_integer_value(t) < 0) {
                bad(err, err_len, "parameters.timeout (microseconds) is not a non-negative "
                    "integer");
                goto done;
            }
            out->timeout_s = (double)json_integer_value(t) * 1e-6;
        }
        const json_t *p = json_object_get(params, "priority");
        if (p) {
            if (!json_is_integer(p) || json_integer_value(p) < INT32_MIN ||
                json_integer_value(p) > INT32_MAX) {
                bad(err, err_len, "parameters.priority is not an integer");
                goto done;
            }
            out->priority = (int)json_integer_value(p);
        }
        const json_t *v = json_object_get(params, "variant");
        if (v) {
            const char *vs = json_string_value(v);
            if (!vs || (strcmp(vs, "auto") && strcmp(vs, "full") && strcmp(vs, "lite") &&
                        strcmp(vs, "cascade"))) {
                bad(err, err_len, "parameters.variant is not one of \"auto\", \"full\", "
                    "\"lite\", \"cascade\"");
                goto done;
            }
            out->variant = strdup(vs);
        }
    }
    const json_t *ins = json_object_get(root, "inputs");
    if (!json_is_array(ins) || json_array_size(ins) == 0) {
        bad(err, err_len, "'inputs' is missing or not a non-empty array");
        goto done;
    }
    size_t n = json_array_size(ins);
    if (n > n_inputs) {
        bad(err, err_len, "%zu inputs given, the model has %zu", n, n_inputs);
        goto done;
    }
    out->inputs = calloc(n, sizeof *out->inputs);
    out->input_names = calloc(n, sizeof *out->input_names);
    if (!out->id || !out->inputs || !out->input_names) {
        bad(err, err_len, "out of memory");
        goto done;
    }
    for (size_t k = 0; k < n; k++)
        if (parse_input(json_array_get(ins, k), k, inputs, n_inputs, bin, bin_len, &bin_used,
                        out, err, err_len) != 0)
            goto done;
    if (n < n_inputs) {
        for (size_t mi = 0; mi < n_inputs; mi++) {
            size_t k;
            for (k = 0; k < n && strcmp(out->input_names[k], inputs[mi].name); k++)
                ;
            if (k == n) {
                bad(err, err_len, "input '%s' is missing", inputs[mi].name);
                goto done;
            }
        }
    }
    if (bin_used != bin_len) {
        bad(err, err_len, "%zu bytes of binary data follow the JSON, the inputs announce %zu",
            bin_len, bin_used);
        goto done;
    }
    const json_t *outs = json_object_get(root, "outputs");
    if (outs) {
        if (!json_is_array(outs)) {
            bad(err, err_len, "'outputs' is not an array");
            goto done;
        }
        size_t no = json_array_size(outs);
        out->output_names = calloc(no ? no : 1, sizeof *out->output_names);
        out->output_binary = calloc(no ? no : 1, sizeof *out->output_binary);
        if (!out->output_names || !out->output_binary) {
            bad(err, err_len, "out of memory");
            goto done;
        }
        for (size_t k = 0; k < no; k++) {
            const json_t *o = json_array_get(outs, k);
            const json_t *on = json_is_object(o) ? json_object_get(o, "name") : NULL;
            if (!json_is_string(on)) {
                bad(err, err_len, "outputs[%zu] has no string 'name'", k);
                goto done;
            }
            out->output_names[k] = strdup(json_string_value(on));
            out->n_outputs = k + 1;
            out->output_binary[k] = param_bool(o, "binary_data");
            if (!out->output_names[k] || out->output_binary[k] == -2) {
                bad(err, err_len, "output '%s': parameters.binary_data is not a boolean",
                    json_string_value(on));
                goto done;
            }
        }
    }
    rc = 0;
done:
    json_decref(root);
    if (rc != 0)
        sv_parsed_free(out);
    return rc;
}

/* ---- responses --------------------------------------------------------------------------- */

typedef struct obuf {
    char *p;
    size_t len, cap;
    int failed;
} obuf;

static int ob_reserve(obuf *b, size_t more)
{
    if (b->failed)
        return -1;
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + more)
        cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) {
        b->failed = 1;
        return -1;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

static void ob_put(obuf *b, const void *s, size_t n)
{
    if (ob_reserve(b, n) == 0) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

static void ob_str(obuf *b, const char *s)
{
    ob_put(b, s, strlen(s));
}

/* A JSON string literal of S. */
static void ob_json_string(obuf *b, const char *s)
{
    ob_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            ob_put(b, esc, 2);
        } else if (*c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            ob_put(b, esc, 6);
        } else {
            ob_put(b, c, 1);
        }
    }
    ob_put(b, "\"", 1);
}

/* V as the shortest number that reads back to the same float (IS_F32) or double; "null" for
 * NaN and infinity, which JSON has no numbers for. Written in place: this runs per element. */
static void ob_number(obuf *b, double v, int is_f32)
{
    if (ob_reserve(b, SV_FLOAT_TEXT_MAX) == 0)
        b->len += sv_float_text(v, is_f32, b->p + b->len, b->cap - b->len);
}

static void ob_data(obuf *b, const loom_tensor *t)
{
    size_t n = loom_tensor_nbytes(t) / (loom_dtype_size(loom_tensor_dtype(t)) ?
                                        loom_dtype_size(loom_tensor_dtype(t)) : 1);
    const void *d = loom_tensor_data(t);
    loom_dtype dt = loom_tensor_dtype(t);
    if (ob_reserve(b, n * 4 + 2) != 0)
        return;
    ob_put(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            ob_put(b, ",", 1);
        char tmp[32];
        int w = 0;
        switch (dt) {
        case LOOM_DTYPE_F32: ob_number(b, ((const float *)d)[i], 1); continue;
        case LOOM_DTYPE_F16: ob_number(b, f16_to_f32(((const uint16_t *)d)[i]), 1); continue;
        case LOOM_DTYPE_BF16: ob_number(b, bf16_to_f32(((const uint16_t *)d)[i]), 1); continue;
        case LOOM_DTYPE_BOOL:
            ob_str(b, ((const uint8_t *)d)[i] ? "true" : "false");
            continue;
        case LOOM_DTYPE_U8: w = snprintf(tmp, sizeof tmp, "%u", ((const uint8_t *)d)[i]); break;
        case LOOM_DTYPE_I8: w = snprintf(tmp, sizeof tmp, "%d", ((const int8_t *)d)[i]); break;
        case LOOM_DTYPE_I32: w = snprintf(tmp, sizeof tmp, "%d", ((const int32_t *)d)[i]); break;
        case LOOM_DTYPE_I64:
            w = snprintf(tmp, sizeof tmp, "%lld", (long long)((const int64_t *)d)[i]);
            break;
        default: w = snprintf(tmp, sizeof tmp, "0"); break;
        }
        ob_put(b, tmp, (size_t)w);
    }
    ob_put(b, "]", 1);
}

int sv_kserve_response(const loom_serve_result *r, const sv_parsed *p, char **body, size_t *len,
                       size_t *header_len, char *err, size_t err_len)
{
    *body = NULL;
    *len = *header_len = 0;
    size_t n = r->n_outputs;
    /* Which outputs, in which form: those asked for in the request's order, else all. */
    size_t sel[64];
    int binary[64];
    size_t n_sel = 0;
    if (n > 64)
        return bad(err, err_len, "too many outputs");
    if (p && p->n_outputs) {
        if (p->n_outputs > 64)
            return bad(err, err_len, "too many outputs asked for");
        for (size_t k = 0; k < p->n_outputs; k++) {
            size_t j;
            for (j = 0; j < n && strcmp(r->output_names[j], p->output_names[k]); j++)
                ;
            if (j == n)
                return bad(err, err_len, "the model has no output named '%s'",
                           p->output_names[k]);
            sel[n_sel] = j;
            binary[n_sel++] = p->output_binary[k] >= 0 ? p->output_binary[k]
                                                       : p->binary_default == 1;
        }
    } else {
        for (size_t j = 0; j < n; j++) {
            sel[n_sel] = j;
            binary[n_sel++] = p && p->binary_default == 1;
        }
    }
    obuf b = {0};
    ob_str(&b, "{\"model_name\":");
    ob_json_string(&b, r->model);
    ob_str(&b, ",\"model_version\":");
    ob_json_string(&b, r->version);
    if (r->id && *r->id) {
        ob_str(&b, ",\"id\":");
        ob_json_string(&b, r->id);
    }
    if (r->variant && *r->variant) {
        /* Which variant answered, the cascade path, the lite confidence, why an edge answer
         * stood, and the QoS decision's inputs. */
        ob_str(&b, ",\"parameters\":{\"variant\":");
        ob_json_string(&b, r->variant);
        ob_str(&b, ",\"path\":");
        ob_json_string(&b, r->path ? r->path : r->variant);
        if (r->confidence >= 0) {
            ob_str(&b, ",\"confidence\":");
            ob_number(&b, r->confidence, 0);
        }
        if (r->message && *r->message) {
            ob_str(&b, ",\"edge_answer\":true,\"note\":");
            ob_json_string(&b, r->message);
        }
        if (r->qos && *r->qos) {
            ob_str(&b, ",\"qos\":");
            ob_str(&b, r->qos);
        }
        ob_str(&b, "}");
    }
    ob_str(&b, ",\"outputs\":[");
    int any_binary = 0;
    for (size_t k = 0; k < n_sel; k++) {
        const loom_tensor *t = r->outputs[sel[k]];
        if (k)
            ob_str(&b, ",");
        ob_str(&b, "{\"name\":");
        ob_json_string(&b, r->output_names[sel[k]]);
        ob_str(&b, ",\"datatype\":");
        const char *dtn = sv_kserve_dtype_name(loom_tensor_dtype(t));
        ob_json_string(&b, dtn ? dtn : "FP32");
        ob_str(&b, ",\"shape\":[");
        int64_t dims[LOOM_MAX_RANK];
        loom_tensor_dims(t, dims);
        for (uint32_t d = 0; d < loom_tensor_rank(t); d++) {
            char tmp[24];
            int w = snprintf(tmp, sizeof tmp, "%s%lld", d ? "," : "", (long long)dims[d]);
            ob_put(&b, tmp, (size_t)w);
        }
        ob_str(&b, "]");
        if (binary[k]) {
            char tmp[64];
            int w = snprintf(tmp, sizeof tmp, ",\"parameters\":{\"binary_data_size\":%zu}}",
                             loom_tensor_nbytes(t));
            ob_put(&b, tmp, (size_t)w);
            any_binary = 1;
        } else {
            ob_str(&b, ",\"data\":");
            ob_data(&b, t);
            ob_str(&b, "}");
        }
    }
    ob_str(&b, "]}");
    if (any_binary) {
        *header_len = b.len;
        for (size_t k = 0; k < n_sel; k++)
            if (binary[k])
                ob_put(&b, loom_tensor_data(r->outputs[sel[k]]),
                       loom_tensor_nbytes(r->outputs[sel[k]]));
    }
    if (b.failed) {
        free(b.p);
        *header_len = 0;
        return bad(err, err_len, "out of memory writing the response");
    }
    *body = b.p;
    *len = b.len;
    return 0;
}
