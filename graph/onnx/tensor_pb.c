/*
 * ONNX TensorProto decoding, shared by the model importer (initializers, Constant values) and
 * loom_tensor_load_pb (the .pb inputs and outputs of the ONNX backend test suite): typed fields,
 * raw_data (little-endian) and external data files beside the model.
 */
#include <loom/onnx.h>

#include "graph/graph_internal.h"
#include "graph/onnx/onnx_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__linux__) && defined(__has_include)
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#endif
#endif

/* ---- dtypes ----------------------------------------------------------------------------- */

loom_dtype onnx_dtype_from_onnx(int32_t t)
{
    switch (t) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return LOOM_DTYPE_F32;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: return LOOM_DTYPE_U8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: return LOOM_DTYPE_I8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return LOOM_DTYPE_I32;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return LOOM_DTYPE_I64;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return LOOM_DTYPE_BOOL;
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16: return LOOM_DTYPE_F16;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16: return LOOM_DTYPE_BF16;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return LOOM_DTYPE_F64;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16: return LOOM_DTYPE_I16;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16: return LOOM_DTYPE_U16;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32: return LOOM_DTYPE_U32;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64: return LOOM_DTYPE_U64;
    default: return LOOM_DTYPE_UNDEFINED;
    }
}

const char *onnx_onnx_type_name(int32_t t)
{
    static const char *const names[] = {
        "undefined", "float",  "uint8",     "int8",       "uint16",  "int16",
        "int32",     "int64",  "string",    "bool",       "float16", "double",
        "uint32",    "uint64", "complex64", "complex128", "bfloat16", "float8e4m3fn",
        "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "uint4", "int4"};
    if (t >= 0 && (size_t)t < sizeof names / sizeof names[0])
        return names[t];
    return "unknown";
}

uint16_t onnx_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    int32_t exp = (int32_t)((x >> 23) & 0xffu);
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xff) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    int32_t e = exp - 127 + 15;
    if (e >= 0x1f)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++; /* may carry into the exponent, up to inf: that is the right rounding */
    return (uint16_t)(sign | h);
}

uint16_t onnx_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); /* quiet nan */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ---- messages ----------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at P (1 to 4), or 0 when P does not start one. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xbf; /* the second byte's range, narrower for some lead bytes */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if (p[k] < 0x80 || p[k] > 0xbf)
            return 0;
    return n;
}

char *onnx_escape(char *dst, size_t cap, const char *src)
{
    if (!cap)
        return dst;
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p;) {
        size_t n = utf8_len(p);
        /* C0 controls, DEL, C1 controls (U+0080 to U+009F) and stray bytes are escaped. */
        int esc = n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f)) || (n == 2 && p[0] == 0xc2 &&
                                                                     p[1] < 0xa0);
        size_t out = esc ? 4 * (n ? n : 1) : n;
        if (w + out >= cap)
            break;
        if (esc) {
            for (size_t k = 0; k < (n ? n : 1); k++)
                w += (size_t)snprintf(dst + w, cap - w, "\\x%02x", p[k]);
            p += n ? n : 1;
        } else {
            memcpy(dst + w, p, n);
            w += n;
            p += n;
        }
    }
    dst[w] = '\0';
    return dst;
}

loom_status onnx_error(loom_status st, const char *fmt, ...)
{
    char raw[1024], msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    return loom_set_error(st, "%s", onnx_escape(msg, sizeof msg, raw));
}

/* ---- files ------------------------------------------------------------------------------ */

loom_status onnx_read_file(const char *path, void **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return onnx_error(LOOM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        int e = errno;
        fclose(f);
        return onnx_error(LOOM_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        fclose(f);
        return onnx_error(LOOM_ERR_IO, "%s: not a regular file%s", path,
                              S_ISDIR(sb.st_mode) ? " (a directory)" : "");
    }
    size_t n = (size_t)sb.st_size;
    unsigned char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return onnx_error(LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory reading %zu bytes", path,
                              n);
    }
    size_t got = n ? fread(buf, 1, n, f) : 0;
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (got != n) {
        free(buf);
        return onnx_error(LOOM_ERR_IO, "%s: read failed: %s", path,
                              err ? strerror(err) : "file shrank while reading");
    }
    *data = buf;
    *size = n;
    return LOOM_OK;
}

/* ---- decoding ----------------------------------------------------------------------------- */

/* A non-negative decimal integer that fills the whole string. */
static int parse_size(const char *s, int64_t *out)
{
    if (!s || !*s)
        return 0;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        if (v > (INT64_MAX - 9) / 10)
            return 0;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 1;
}

/* Refuse a location that could name a file outside the base directory: absolute paths and any
 * ".." component. */
static int location_is_safe(const char *loc)
{
    if (!*loc || loc[0] == '/' || loc[0] == '\\')
        return 0;
    const char *p = loc;
    while (*p) {
        const char *end = p;
        while (*end && *end != '/' && *end != '\\')
            end++;
        if (end - p == 2 && p[0] == '.' && p[1] == '.')
            return 0;
        p = *end ? end + 1 : end;
    }
    return 1;
}

/* Open LOCATION for reading, beneath the folder DIR_FD: no symlink (of the file or of a folder
 * on the way) may lead out of it. openat2's RESOLVE_BENEATH checks this in the kernel, against
 * the same path walk that opens the file; without it (Linux before 5.6, or a seccomp filter that
 * refuses it) both real paths are compared and the file then opened without following a final
 * symlink, its identity checked against the resolved one. O_NONBLOCK: a FIFO must not wait for
 * a writer. Returns the fd, or -1 with errno (EXDEV: the path leads out of the folder). */
static int open_beneath(int dir_fd, const char *dir, const char *location)
{
    int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
#if defined(SYS_openat2) && defined(RESOLVE_BENEATH)
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)flags;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    long got = syscall(SYS_openat2, dir_fd, location, &how, sizeof how);
    if (got >= 0 || (errno != ENOSYS && errno != EPERM))
        return (int)got;
#endif
    char *real_dir = realpath(dir, NULL);
    size_t plen = strlen(dir) + strlen(location) + 2;
    char *path = malloc(plen);
    char *real = NULL;
    if (path) {
        snprintf(path, plen, "%s/%s", dir, location);
        real = realpath(path, NULL);
    }
    int fd = -1, err = real_dir && path ? errno : ENOMEM;
    if (real_dir && real) {
        size_t n = strlen(real_dir);
        int beneath = strncmp(real, real_dir, n) == 0 &&
                      (real[n] == '/' || (n == 1 && real_dir[0] == '/'));
        err = EXDEV;
        if (beneath) {
            fd = open(real, flags | O_NOFOLLOW);
            err = errno;
            struct stat a, b;
            if (fd >= 0 && (fstatat(dir_fd, location, &a, 0) != 0 || fstat(fd, &b) != 0 ||
                            a.st_dev != b.st_dev || a.st_ino != b.st_ino)) {
                close(fd);
                fd = -1;
                err = EXDEV; /* replaced while we looked */
            }
        }
    }
    free(real_dir);
    free(real);
    free(path);
    if (fd < 0)
        errno = err;
    return fd;
}

/* Read the external data of T (NBYTES of it) into a new buffer *DATA (malloc'd, NBYTES + 1),
 * allocated only once the file is known to hold that many bytes. */
static loom_status read_external(const Onnx__TensorProto *t, const onnx_source *src,
                                 const char *what, size_t nbytes, void **data)
{
    *data = NULL;
    const char *location = NULL, *offset_s = NULL, *length_s = NULL;
    for (size_t i = 0; i < t->n_external_data; i++) {
        const Onnx__StringStringEntryProto *e = t->external_data[i];
        if (!e || !e->key)
            continue;
        if (strcmp(e->key, "location") == 0)
            location = e->value;
        else if (strcmp(e->key, "offset") == 0)
            offset_s = e->value;
        else if (strcmp(e->key, "length") == 0)
            length_s = e->value;
    }
    if (!location || !*location)
        return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                          "%s: %s: external data without a 'location'", src->file, what);
    if (!location_is_safe(location))
        return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                          "%s: %s: external data location '%s' is refused: it must be a "
                          "relative path inside the model's folder (no '..', not absolute)",
                          src->file, what, location);
    int64_t offset = 0, length = -1;
    if (offset_s && !parse_size(offset_s, &offset))
        return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                          "%s: %s: external data offset '%s' is not a byte count", src->file,
                          what, offset_s);
    if (length_s && !parse_size(length_s, &length))
        return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                          "%s: %s: external data length '%s' is not a byte count", src->file,
                          what, length_s);
    if (length >= 0 && (uint64_t)length != (uint64_t)nbytes)
        return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                          "%s: %s: external data length %lld differs from the %zu bytes its "
                          "shape and type need",
                          src->file, what, (long long)length, nbytes);
    const char *dir = src->base_dir && *src->base_dir ? src->base_dir : ".";
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                          "%s: %s: the model's folder '%s' cannot be opened for its external "
                          "data: %s", src->file, what, dir, strerror(errno));
    int fd = open_beneath(dir_fd, dir, location);
    int e = errno;
    close(dir_fd);
    /* Messages name the location as the model gave it, and never say how big a file is: the
     * model is not to learn anything about files it may not read. */
    if (fd < 0)
        return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                          "%s: %s: external data file '%s' %s%s", src->file, what, location,
                          e == EXDEV || e == ELOOP ? "is refused: it leads outside the model's "
                                                     "folder (through a symlink)"
                                                   : "cannot be opened: ",
                          e == EXDEV || e == ELOOP ? "" : strerror(e));
    struct stat sb;
    loom_status st = LOOM_OK;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                        "%s: %s: external data file '%s' is not a regular file", src->file, what,
                        location);
    } else if ((uint64_t)sb.st_size < (uint64_t)offset ||
               (uint64_t)sb.st_size - (uint64_t)offset < (uint64_t)nbytes) {
        st = onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                        "%s: %s: external data file '%s' is too short: %zu bytes needed at "
                        "offset %lld",
                        src->file, what, location, nbytes, (long long)offset);
    } else if (!(*data = malloc(nbytes + 1))) {
        st = onnx_error(LOOM_ERR_OUT_OF_MEMORY, "%s: %s: out of memory (%zu bytes)", src->file,
                        what, nbytes);
    } else {
        unsigned char *p = *data;
        size_t got = 0;
        while (got < nbytes) {
            ssize_t r = pread(fd, p + got, nbytes - got, (off_t)offset + (off_t)got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                st = onnx_error(LOOM_ERR_IO, "%s: %s: reading external data file '%s' failed: "
                                "%s", src->file, what, location,
                                r < 0 ? strerror(errno) : "the file shrank while reading");
                break;
            }
            got += (size_t)r;
        }
        if (st != LOOM_OK) {
            free(*data);
            *data = NULL;
        }
    }
    close(fd);
    return st;
}

/* Copy COUNT typed values of one protobuf field into DST of DTYPE. */
static void from_i32(const int32_t *v, size_t n, loom_dtype dtype, void *dst)
{
    for (size_t i = 0; i < n; i++) {
        switch (dtype) {
        case LOOM_DTYPE_I32: ((int32_t *)dst)[i] = v[i]; break;
        case LOOM_DTYPE_U8: ((uint8_t *)dst)[i] = (uint8_t)v[i]; break;
        case LOOM_DTYPE_I8: ((int8_t *)dst)[i] = (int8_t)v[i]; break;
        case LOOM_DTYPE_BOOL: ((uint8_t *)dst)[i] = v[i] != 0; break;
        /* float16 and bfloat16 keep their bits in the low 16 bits of int32_data */
        case LOOM_DTYPE_F16: case LOOM_DTYPE_BF16: ((uint16_t *)dst)[i] = (uint16_t)v[i]; break;
        case LOOM_DTYPE_I16: ((int16_t *)dst)[i] = (int16_t)v[i]; break;
        case LOOM_DTYPE_U16: ((uint16_t *)dst)[i] = (uint16_t)v[i]; break;
        default: break;
        }
    }
}

loom_status onnx_tensor_decode(const Onnx__TensorProto *t, const onnx_source *src, const char *what,
                             onnx_tensor *out)
{
    memset(out, 0, sizeof *out);
    int32_t onnx_type = t->has_data_type ? t->data_type : 0;
    loom_dtype dtype = onnx_dtype_from_onnx(onnx_type);
    if (dtype == LOOM_DTYPE_UNDEFINED) {
        if (onnx_type == 0)
            return onnx_error(LOOM_ERR_INVALID_ARGUMENT, "%s: %s has no data type",
                                  src->file, what);
        return onnx_error(LOOM_ERR_UNSUPPORTED,
                              "%s: %s has dtype %s (%d), which Loom does not support", src->file,
                              what, onnx_onnx_type_name(onnx_type), (int)onnx_type);
    }
    if (t->n_dims > LOOM_MAX_RANK)
        return onnx_error(LOOM_ERR_UNSUPPORTED, "%s: %s has rank %zu; Loom's maximum is %d",
                              src->file, what, t->n_dims, LOOM_MAX_RANK);
    if (t->segment)
        return onnx_error(LOOM_ERR_UNSUPPORTED, "%s: %s is segmented, which Loom does not "
                              "support", src->file, what);
    for (size_t k = 0; k < t->n_dims; k++) {
        if (t->dims[k] < 0)
            return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "%s: %s has a negative dimension (%lld)", src->file, what,
                                  (long long)t->dims[k]);
        out->dims[k] = t->dims[k];
    }
    size_t esize = loom_dtype_size(dtype);
    int64_t numel;
    if (!loom_dims_numel_checked((uint32_t)t->n_dims, out->dims, esize, &numel))
        return onnx_error(LOOM_ERR_INVALID_ARGUMENT, "%s: %s: its shape overflows",
                              src->file, what);
    size_t nbytes = (size_t)numel * esize, n = (size_t)numel;
    int external = t->has_data_location &&
                   t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;

    /* Check the data's size before allocating, so a corrupt shape cannot ask for terabytes. */
    size_t have = 0;
    const char *field = NULL;
    if (!external) {
        if (t->has_raw_data) {
            have = t->raw_data.len / esize;
            field = "raw_data";
            if (t->raw_data.len != nbytes)
                return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "%s: %s: raw_data has %zu bytes, its shape %s needs %zu",
                                      src->file, what, t->raw_data.len,
                                      loom_dims_format((uint32_t)t->n_dims, out->dims,
                                                       (char[160]){0}, 160),
                                      nbytes);
        } else {
            switch (dtype) {
            case LOOM_DTYPE_F32: have = t->n_float_data; field = "float_data"; break;
            case LOOM_DTYPE_I64: have = t->n_int64_data; field = "int64_data"; break;
            case LOOM_DTYPE_F64: have = t->n_double_data; field = "double_data"; break;
            /* uint32 and uint64 live in uint64_data */
            case LOOM_DTYPE_U32: case LOOM_DTYPE_U64:
                have = t->n_uint64_data;
                field = "uint64_data";
                break;
            default: have = t->n_int32_data; field = "int32_data"; break;
            }
            if (have != n)
                return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                                      "%s: %s: %s has %zu values, its shape %s needs %zu",
                                      src->file, what, have ? field : "its data",
                                      have, loom_dims_format((uint32_t)t->n_dims, out->dims,
                                                       (char[160]){0}, 160),
                                      n);
        }
    }
    void *data = NULL;
    if (external) {
        loom_status st = read_external(t, src, what, nbytes, &data);
        if (st != LOOM_OK)
            return st;
    } else if (!(data = malloc(nbytes + 1))) {
        return onnx_error(LOOM_ERR_OUT_OF_MEMORY, "%s: %s: out of memory (%zu bytes)", src->file,
                          what, nbytes);
    } else if (t->has_raw_data) {
        if (nbytes)
            memcpy(data, t->raw_data.data, nbytes);
    } else if (dtype == LOOM_DTYPE_F32) {
        if (nbytes)
            memcpy(data, t->float_data, nbytes);
    } else if (dtype == LOOM_DTYPE_I64) {
        if (nbytes)
            memcpy(data, t->int64_data, nbytes);
    } else if (dtype == LOOM_DTYPE_F64) {
        if (nbytes)
            memcpy(data, t->double_data, nbytes);
    } else if (dtype == LOOM_DTYPE_U64) {
        if (nbytes)
            memcpy(data, t->uint64_data, nbytes);
    } else if (dtype == LOOM_DTYPE_U32) {
        for (size_t i = 0; i < n; i++)
            ((uint32_t *)data)[i] = (uint32_t)t->uint64_data[i];
    } else {
        from_i32(t->int32_data, n, dtype, data);
    }
    if (dtype == LOOM_DTYPE_BOOL) /* any non-zero byte is true; Loom's bools are 0 or 1 */
        for (size_t i = 0; i < n; i++)
            ((uint8_t *)data)[i] = ((uint8_t *)data)[i] != 0;
    out->dtype = dtype;
    out->rank = (uint32_t)t->n_dims;
    out->data = data;
    out->nbytes = nbytes;
    return LOOM_OK;
}

/* ---- loom_tensor_load_pb ------------------------------------------------------------------ */

loom_status loom_tensor_load_pb(const char *path, loom_tensor **out, char *name, size_t name_len)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_tensor_load_pb: out is NULL");
    *out = NULL;
    if (name && name_len)
        name[0] = '\0';
    if (!path)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_tensor_load_pb: path is NULL");
    loom_clear_error();
    void *bytes;
    size_t size;
    loom_status st = onnx_read_file(path, &bytes, &size);
    if (st != LOOM_OK)
        return st;
    Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, size, bytes);
    free(bytes);
    if (!t)
        return onnx_error(LOOM_ERR_INVALID_ARGUMENT,
                              "%s: not a valid ONNX TensorProto (truncated or corrupt)", path);
    /* External data of a .pb lies beside it. */
    char *dir = strdup(path);
    if (!dir) {
        onnx__tensor_proto__free_unpacked(t, NULL);
        return onnx_error(LOOM_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    onnx_source src = {path, slash ? dir : "."};
    char what[160];
    snprintf(what, sizeof what, "tensor '%s'", t->name ? t->name : "");
    onnx_tensor lt;
    st = onnx_tensor_decode(t, &src, what, &lt);
    free(dir);
    if (st == LOOM_ERR_UNSUPPORTED) /* as loom/onnx.h says: a dtype Loom lacks is bad input */
        st = LOOM_ERR_INVALID_ARGUMENT;
    if (st == LOOM_OK) {
        loom_tensor *tensor;
        st = loom_tensor_create(lt.dtype, lt.rank, lt.dims, &tensor);
        if (st == LOOM_OK) {
            if (lt.nbytes)
                memcpy(loom_tensor_data(tensor), lt.data, lt.nbytes);
            *out = tensor;
            if (name && name_len)
                snprintf(name, name_len, "%s", t->name ? t->name : "");
        }
        free(lt.data);
    }
    onnx__tensor_proto__free_unpacked(t, NULL);
    return st;
}
