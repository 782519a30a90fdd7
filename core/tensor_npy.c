/*
 * Host tensors on disk as NumPy .npy files: reading formats 1.0 to 3.0 (C order, little-endian)
 * and writing format 1.0. The header is a Python dict literal; only what NumPy itself writes is
 * accepted, and every departure is reported with the file's name and what is wrong with it.
 * Sizes are checked against the file before anything is allocated; writes are atomic (a
 * temporary file beside the target, synced, renamed over it).
 */
#include "core_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* NumPy refuses headers longer than this unless told otherwise; so do we (a corrupt length
 * field must not make us allocate gigabytes). */
#define NPY_MAX_HEADER (1u << 20)

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Swap each ELEM_SIZE-byte element of DATA in place: .npy data is little-endian, and a
 * big-endian host has to convert on the way in and out. */
static void swap_elements(unsigned char *data, size_t nbytes, size_t elem_size)
{
    for (size_t off = 0; elem_size > 1 && off + elem_size <= nbytes; off += elem_size)
        for (size_t i = 0; i < elem_size / 2; i++) {
            unsigned char t = data[off + i];
            data[off + i] = data[off + elem_size - 1 - i];
            data[off + elem_size - 1 - i] = t;
        }
}

/* ---- header parsing ------------------------------------------------------------------------ */

typedef struct npy_header {
    char descr[32];
    int have_descr, have_fortran, have_shape;
    int fortran;
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK];
} npy_header;

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_space(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int accept(cursor *c, char ch)
{
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted Python string without escapes into OUT (at most OUT_LEN bytes with the NUL). */
static int parse_string(cursor *c, char *out, size_t out_len)
{
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return 0;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= out_len)
            return 0;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return 0;
    c->p++;
    out[n] = '\0';
    return 1;
}

static int parse_word(cursor *c, const char *word)
{
    skip_space(c);
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return 0;
    const char *after = c->p + n;
    if (after < c->end && (isalnum((unsigned char)*after) || *after == '_'))
        return 0;
    c->p = after;
    return 1;
}

/* Parse the dict in [P, END) into H; on failure writes what is wrong into WHY. */
static int parse_header(const char *p, const char *end, npy_header *h, char *why, size_t why_len)
{
    cursor c = {p, end};
    memset(h, 0, sizeof *h);
    if (!accept(&c, '{')) {
        snprintf(why, why_len, "header is not a Python dict");
        return 0;
    }
    for (;;) {
        if (accept(&c, '}'))
            break;
        char key[32];
        if (!parse_string(&c, key, sizeof key) || !accept(&c, ':')) {
            snprintf(why, why_len, "malformed header (expected 'key': value)");
            return 0;
        }
        if (!strcmp(key, "descr")) {
            if (!parse_string(&c, h->descr, sizeof h->descr)) {
                snprintf(why, why_len, "header's 'descr' is not a plain dtype string "
                                       "(structured dtypes are not supported)");
                return 0;
            }
            h->have_descr = 1;
        } else if (!strcmp(key, "fortran_order")) {
            if (parse_word(&c, "True"))
                h->fortran = 1;
            else if (parse_word(&c, "False"))
                h->fortran = 0;
            else {
                snprintf(why, why_len, "header's 'fortran_order' is neither True nor False");
                return 0;
            }
            h->have_fortran = 1;
        } else if (!strcmp(key, "shape")) {
            if (!accept(&c, '(')) {
                snprintf(why, why_len, "header's 'shape' is not a tuple");
                return 0;
            }
            h->rank = 0;
            for (;;) {
                if (accept(&c, ')'))
                    break;
                skip_space(&c);
                if (c.p >= c.end || !isdigit((unsigned char)*c.p)) {
                    snprintf(why, why_len, "header's 'shape' holds something other than "
                                           "non-negative integers");
                    return 0;
                }
                int64_t v = 0;
                while (c.p < c.end && isdigit((unsigned char)*c.p)) {
                    if (v > (INT64_MAX - 9) / 10) {
                        snprintf(why, why_len, "a dimension in 'shape' is too large");
                        return 0;
                    }
                    v = v * 10 + (*c.p++ - '0');
                }
                if (c.p < c.end && (*c.p == 'L' || *c.p == 'l')) /* Python 2's long */
                    c.p++;
                if (h->rank >= LOOM_MAX_RANK) {
                    snprintf(why, why_len, "'shape' has more than %d dimensions",
                             LOOM_MAX_RANK);
                    return 0;
                }
                h->dims[h->rank++] = v;
                if (accept(&c, ')'))
                    break;
                if (!accept(&c, ',')) {
                    snprintf(why, why_len, "header's 'shape' is not a tuple of integers");
                    return 0;
                }
            }
            h->have_shape = 1;
        } else {
            snprintf(why, why_len, "header has an unknown key '%s'", key);
            return 0;
        }
        if (accept(&c, '}'))
            break;
        if (!accept(&c, ',')) {
            snprintf(why, why_len, "malformed header (expected ',' or '}')");
            return 0;
        }
    }
    skip_space(&c);
    if (c.p != c.end) {
        snprintf(why, why_len, "unexpected text after the header's dict");
        return 0;
    }
    if (!h->have_descr || !h->have_fortran || !h->have_shape) {
        snprintf(why, why_len, "header lacks '%s'",
                 !h->have_descr ? "descr" : !h->have_fortran ? "fortran_order" : "shape");
        return 0;
    }
    return 1;
}

/* Map a NumPy dtype string to a Loom dtype, or explain why not. */
static loom_dtype dtype_of_descr(const char *descr, char *why, size_t why_len)
{
    static const struct {
        const char *kind; /* without the byte-order character */
        loom_dtype dtype;
    } known[] = {
        {"f4", LOOM_DTYPE_F32}, {"f2", LOOM_DTYPE_F16}, {"i1", LOOM_DTYPE_I8},
        {"u1", LOOM_DTYPE_U8},  {"i4", LOOM_DTYPE_I32}, {"i8", LOOM_DTYPE_I64},
        {"b1", LOOM_DTYPE_BOOL}, {"f8", LOOM_DTYPE_F64}, {"i2", LOOM_DTYPE_I16},
        {"u2", LOOM_DTYPE_U16}, {"u4", LOOM_DTYPE_U32}, {"u8", LOOM_DTYPE_U64},
    };
    char order = descr[0];
    const char *kind = descr + 1;
    if (order != '<' && order != '>' && order != '|' && order != '=') {
        order = '=';
        kind = descr;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(kind, known[i].kind) != 0)
            continue;
        int one_byte = loom_dtype_size(known[i].dtype) == 1;
        if (order == '>' && !one_byte) {
            snprintf(why, why_len, "big-endian data ('%s') is not supported; convert it "
                                   "with arr.astype(arr.dtype.newbyteorder('<'))", descr);
            return LOOM_DTYPE_UNDEFINED;
        }
        if (order == '=' && !one_byte && !host_is_little_endian()) {
            snprintf(why, why_len, "native-order dtype '%s' from an unknown machine", descr);
            return LOOM_DTYPE_UNDEFINED;
        }
        return known[i].dtype;
    }
    if (!strcmp(kind, "V2"))
        snprintf(why, why_len, "dtype '%s' (raw 2-byte values, as bfloat16 is stored) is not "
                               "supported; save bfloat16 data as float32", descr);
    else
        snprintf(why, why_len, "dtype '%s' is not supported (Loom reads <f4 <f2 |i1 |u1 <i4 "
                               "<i8 |b1; convert with arr.astype(np.float32) or similar)",
                 descr);
    return LOOM_DTYPE_UNDEFINED;
}

/* ---- reading ------------------------------------------------------------------------------- */

static loom_status bad_file(const char *path, const char *why)
{
    return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "'%s': not a valid .npy file: %s", path,
                          why);
}

loom_status loom_tensor_load_npy(const char *path, loom_tensor **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_tensor_load_npy: out is NULL");
    *out = NULL;
    if (!path)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "loom_tensor_load_npy: path is NULL");
    loom_clear_error();
    FILE *f = fopen(path, "rb");
    if (!f)
        return loom_set_error(LOOM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));

    loom_status st = LOOM_OK;
    char *header = NULL;
    loom_tensor *t = NULL;
    char why[256];
    unsigned char pre[12];
    size_t got = fread(pre, 1, 8, f);
    if (ferror(f)) {
        st = loom_set_error(LOOM_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
        goto done;
    }
    if (got < 8 || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        st = bad_file(path, "it does not start with the .npy magic string");
        goto done;
    }
    unsigned major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0) {
        snprintf(why, sizeof why, "format version %u.%u is not supported (1.0 to 3.0 are)",
                 major, minor);
        st = bad_file(path, why);
        goto done;
    }
    size_t len_bytes = major == 1 ? 2 : 4;
    if (fread(pre + 8, 1, len_bytes, f) != len_bytes) {
        st = ferror(f) ? loom_set_error(LOOM_ERR_IO, "cannot read '%s': %s", path,
                                        strerror(errno))
                       : bad_file(path, "it ends inside the header length");
        goto done;
    }
    uint32_t header_len = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
    if (len_bytes == 4)
        header_len |= (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
    if (header_len > NPY_MAX_HEADER) {
        snprintf(why, sizeof why, "header length %u is implausibly large", header_len);
        st = bad_file(path, why);
        goto done;
    }
    header = malloc(header_len + 1);
    if (!header) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "'%s': cannot allocate the header", path);
        goto done;
    }
    if (fread(header, 1, header_len, f) != header_len) {
        st = ferror(f) ? loom_set_error(LOOM_ERR_IO, "cannot read '%s': %s", path,
                                        strerror(errno))
                       : bad_file(path, "it ends inside the header");
        goto done;
    }
    header[header_len] = '\0';
    if (memchr(header, '\0', header_len)) {
        st = bad_file(path, "the header holds a NUL byte");
        goto done;
    }
    npy_header h;
    if (!parse_header(header, header + header_len, &h, why, sizeof why)) {
        st = bad_file(path, why);
        goto done;
    }
    loom_dtype dtype = dtype_of_descr(h.descr, why, sizeof why);
    if (dtype == LOOM_DTYPE_UNDEFINED) {
        st = bad_file(path, why);
        goto done;
    }
    /* Fortran order is the same bytes as C order for rank <= 1 or when at most one dim exceeds
     * 1; NumPy still flags some of those, and refusing them would be pedantic. */
    if (h.fortran) {
        uint32_t big = 0;
        for (uint32_t k = 0; k < h.rank; k++)
            big += h.dims[k] > 1;
        if (big > 1) {
            st = bad_file(path, "Fortran-order arrays are not supported; save a C-order copy "
                                "(np.ascontiguousarray)");
            goto done;
        }
    }
    /* The shape's byte count, checked against the file before anything that size is
     * allocated: a 640-byte file claiming 2 GiB (or 2^40 elements) is bad input, refused here,
     * not an allocation of its claim that fails or succeeds and zero-fills gigabytes. */
    size_t elem = loom_dtype_size(dtype);
    int64_t numel;
    if (!loom_dims_numel_checked(h.rank, h.dims, elem, &numel)) {
        st = bad_file(path, "the number of elements in 'shape' overflows");
        goto done;
    }
    size_t nbytes = (size_t)numel * elem;
    struct stat sb;
    long data_at = ftell(f);
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && data_at >= 0) {
        uint64_t have = (uint64_t)sb.st_size > (uint64_t)data_at
                            ? (uint64_t)sb.st_size - (uint64_t)data_at
                            : 0;
        if (have < nbytes) {
            snprintf(why, sizeof why, "data is truncated (%llu of %zu bytes)",
                     (unsigned long long)have, nbytes);
            st = bad_file(path, why);
            goto done;
        }
        if (have > nbytes) {
            st = bad_file(path, "there are bytes after the data (more than the shape holds)");
            goto done;
        }
    } else if (nbytes) {
        /* A pipe or a device: its length is unknown until read. Read into a buffer that grows
         * with what arrives, so that memory follows the bytes there are, not the claim. */
        size_t cap = 0, got_bytes = 0;
        unsigned char *buf = NULL;
        while (got_bytes < nbytes) {
            if (got_bytes == cap) {
                size_t ncap = cap ? (cap > nbytes / 2 ? nbytes : cap * 2)
                                  : (nbytes < 65536 ? nbytes : 65536);
                unsigned char *nb = realloc(buf, ncap);
                if (!nb) {
                    free(buf);
                    st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "'%s': cannot allocate %zu bytes",
                                        path, ncap);
                    goto done;
                }
                buf = nb, cap = ncap;
            }
            size_t r = fread(buf + got_bytes, 1, cap - got_bytes, f);
            got_bytes += r;
            if (r == 0)
                break;
        }
        if (got_bytes != nbytes) {
            free(buf);
            if (ferror(f)) {
                st = loom_set_error(LOOM_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
            } else {
                snprintf(why, sizeof why, "data is truncated (%zu of %zu bytes)", got_bytes,
                         nbytes);
                st = bad_file(path, why);
            }
            goto done;
        }
        loom_status cst = loom_tensor_create(dtype, h.rank, h.dims, &t);
        if (cst == LOOM_OK)
            memcpy(loom_tensor_data(t), buf, nbytes);
        free(buf);
        if (cst != LOOM_OK) {
            st = cst;
            goto done;
        }
    }
    if (!t) {
        loom_status cst = loom_tensor_create(dtype, h.rank, h.dims, &t);
        if (cst != LOOM_OK) {
            snprintf(why, sizeof why, "%s", loom_last_error());
            st = cst == LOOM_ERR_OUT_OF_MEMORY
                     ? loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "'%s': %s", path, why)
                     : bad_file(path, why);
            goto done;
        }
        size_t n = nbytes ? fread(loom_tensor_data(t), 1, nbytes, f) : 0;
        if (n != nbytes) {
            if (ferror(f)) {
                st = loom_set_error(LOOM_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
            } else {
                snprintf(why, sizeof why, "data is truncated (%zu of %zu bytes)", n, nbytes);
                st = bad_file(path, why);
            }
            goto done;
        }
    }
    unsigned char *data = loom_tensor_data(t);
    unsigned char extra;
    if (fread(&extra, 1, 1, f) == 1) {
        st = bad_file(path, "there are bytes after the data (more than the shape holds)");
        goto done;
    }
    if (!host_is_little_endian() && h.descr[0] != '>')
        swap_elements(data, nbytes, loom_dtype_size(dtype));
    if (dtype == LOOM_DTYPE_BOOL) /* Loom's bools are 0 or 1; NumPy's are too, but be sure */
        for (size_t i = 0; i < nbytes; i++)
            data[i] = data[i] != 0;
    *out = t;
    t = NULL;
done:
    loom_tensor_destroy(t);
    free(header);
    fclose(f);
    return st;
}

static const char *descr_of(loom_dtype dtype)
{
    switch (dtype) {
    case LOOM_DTYPE_F32: return "<f4";
    case LOOM_DTYPE_BF16: return "<f4"; /* NumPy has no bfloat16: widened on the way out */
    case LOOM_DTYPE_F16: return "<f2";
    case LOOM_DTYPE_I8: return "|i1";
    case LOOM_DTYPE_U8: return "|u1";
    case LOOM_DTYPE_I32: return "<i4";
    case LOOM_DTYPE_I64: return "<i8";
    case LOOM_DTYPE_BOOL: return "|b1";
    case LOOM_DTYPE_F64: return "<f8";
    case LOOM_DTYPE_I16: return "<i2";
    case LOOM_DTYPE_U16: return "<u2";
    case LOOM_DTYPE_U32: return "<u4";
    case LOOM_DTYPE_U64: return "<u8";
    default: return NULL;
    }
}

/* ---- writing, atomically ------------------------------------------------------------------- */

/* The bytes of a .npy file go to a new temporary file beside the target, are checked write by
 * write and synced, and only then is the temporary renamed over the target: a reader sees the
 * old file or the whole new one, never a truncated file with a valid header (a full disk, a
 * kill mid-write). A symbolic link at the target is refused, not followed. */

/* Write all N bytes of DATA to FD (retrying short writes). 0 with errno set on failure. */
static int write_all(int fd, const void *data, size_t n)
{
    const unsigned char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        if (w == 0) {
            errno = EIO;
            return 0;
        }
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

/* Write N bytes of DATA, element-swapped to little-endian on a big-endian host. */
static int write_data(int fd, const unsigned char *data, size_t n, size_t elem_size)
{
    if (host_is_little_endian() || elem_size == 1)
        return write_all(fd, data, n);
    unsigned char buf[4096];
    for (size_t off = 0; off < n;) {
        size_t chunk = n - off < sizeof buf ? n - off : sizeof buf;
        memcpy(buf, data + off, chunk);
        swap_elements(buf, chunk, elem_size);
        if (!write_all(fd, buf, chunk))
            return 0;
        off += chunk;
    }
    return 1;
}

/* Create a new file beside PATH, named ".BASE.XXXXXXXX.tmp" (hidden, random part), with
 * O_EXCL and mode 0666 less the umask, as the target would get from fopen. Returns its fd with
 * the name in TMP (TMP_LEN bytes), or -1 with errno set. */
static int create_temp_beside(const char *path, char *tmp, size_t tmp_len)
{
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    const char *base = slash ? slash + 1 : path;
    for (int attempt = 0; attempt < 100; attempt++) {
        uint32_t r;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            r = (uint32_t)getpid() * 2654435761u + (uint32_t)attempt;
        /* The base is cut so that the name stays within NAME_MAX. */
        int n = snprintf(tmp, tmp_len, "%.*s.%.200s.%08x.tmp", (int)dir_len, path, base,
                         (unsigned)r);
        if (n < 0 || (size_t)n >= tmp_len) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

/* Make a rename in PATH's folder durable; failure to sync a folder is not an error (some file
 * systems refuse it). */
static void sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* LOOM_ERR_IO with the message, errno left at ERR for the caller (loom/core.h). */
static loom_status io_failed(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static loom_status io_failed(int err, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    loom_status st = loom_set_error(LOOM_ERR_IO, "%s", msg);
    errno = err;
    return st;
}

loom_status loom_tensor_save_npy(const char *path, const loom_tensor *tensor)
{
    if (!path || !tensor)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "loom_tensor_save_npy: path or tensor is NULL");
    loom_clear_error();
    loom_dtype dtype = loom_tensor_dtype(tensor);
    const char *descr = descr_of(dtype);
    if (!descr)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "'%s': cannot save dtype %s as .npy",
                              path, loom_dtype_name(dtype));
    uint32_t rank = loom_tensor_rank(tensor);
    int64_t dims[LOOM_MAX_RANK];
    loom_tensor_dims(tensor, dims);

    /* Format 1.0: magic, version, 2-byte header length, then the dict padded with spaces and
     * ended by a newline so that the data starts on a 64-byte boundary. */
    char dict[256];
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                       descr);
    for (uint32_t k = 0; k < rank; k++)
        len += snprintf(dict + len, sizeof dict - (size_t)len, "%s%lld", k ? ", " : "",
                        (long long)dims[k]);
    len += snprintf(dict + len, sizeof dict - (size_t)len, "%s), }", rank == 1 ? "," : "");
    size_t prefix = NPY_MAGIC_LEN + 2 + 2;
    size_t total = (prefix + (size_t)len + 1 + 63) / 64 * 64;
    size_t header_len = total - prefix;
    unsigned char head[sizeof dict + 80];
    memcpy(head, NPY_MAGIC, NPY_MAGIC_LEN);
    head[6] = 1;
    head[7] = 0;
    head[8] = (unsigned char)(header_len & 0xff);
    head[9] = (unsigned char)(header_len >> 8);
    memcpy(head + prefix, dict, (size_t)len);
    memset(head + prefix + len, ' ', header_len - (size_t)len - 1);
    head[total - 1] = '\n';

    /* What is at the target now: nothing, or a regular file to replace. A symlink would let
     * whoever can write the folder point the output anywhere; a device or a folder is not an
     * output file. */
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        if (S_ISLNK(sb.st_mode))
            return io_failed(ELOOP, "cannot write '%s': it is a symbolic link (refused, not "
                                    "followed)", path);
        if (S_ISDIR(sb.st_mode))
            return io_failed(EISDIR, "cannot write '%s': it is a directory", path);
        if (!S_ISREG(sb.st_mode))
            return io_failed(EINVAL, "cannot write '%s': it exists and is not a regular file",
                             path);
    } else if (errno != ENOENT) {
        return io_failed(errno, "cannot write '%s': %s", path, strerror(errno));
    }

    char tmp[4400];
    int fd = create_temp_beside(path, tmp, sizeof tmp);
    if (fd < 0)
        return io_failed(errno, "cannot create '%s': %s", path, strerror(errno));
    int ok = write_all(fd, head, total);
    const unsigned char *data = loom_tensor_data(tensor);
    size_t nbytes = loom_tensor_nbytes(tensor);
    if (ok && dtype == LOOM_DTYPE_BF16) {
        float buf[1024];
        size_t count = nbytes / 2;
        for (size_t i = 0; ok && i < count;) {
            size_t chunk = count - i < 1024 ? count - i : 1024;
            for (size_t k = 0; k < chunk; k++) {
                uint16_t h;
                memcpy(&h, data + 2 * (i + k), 2);
                uint32_t bits = (uint32_t)h << 16; /* bfloat16 is float32's upper half */
                memcpy(&buf[k], &bits, 4);
            }
            ok = write_data(fd, (const unsigned char *)buf, chunk * 4, 4);
            i += chunk;
        }
    } else if (ok && nbytes) {
        ok = write_data(fd, data, nbytes, loom_dtype_size(dtype));
    }
    /* Synced before the rename: after a crash the name holds the old bytes or all the new. */
    ok = ok && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        return io_failed(e, "cannot write '%s': %s", path, strerror(e));
    }
    sync_parent(path);
    return LOOM_OK;
}
