/*
 * The audit journal's frames (serve/audit_journal.h): encoding a sealed record, decoding one
 * with its checks (torn tail vs corruption), and reading a journal file.
 */
#include "audit_journal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AJ_MAGIC 0x314a414cu /* "LAJ1" read as a little-endian u32 */
#define AJ_HEAD 16
#define AJ_FIXED (2 * 8 + 6 * 8)
#define AJ_N_STR (3 + AJ_N_TEXT)
#define AJ_MAX_PAYLOAD (64u << 20)

char **aj_text(rec *r, int i)
{
    char **f[AJ_N_TEXT] = {&r->kind, &r->request_id, &r->model, &r->version, &r->model_sha256,
                           &r->variant, &r->path, &r->qos, &r->devices, &r->plan,
                           &r->input_sha256, &r->output_sha256, &r->status, &r->message};
    return f[i];
}

static const char *str_at(rec *r, int i)
{
    const char *s = i == 0 ? r->prev_hash : i == 1 ? r->hash : i == 2 ? r->mac
                                                                       : *aj_text(r, i - 3);
    return s ? s : "";
}

/* FNV-1a-64 over the payload's 8-byte words (native order; the last one zero-padded), the
 * length mixed in last: a frame's check, not a cryptographic one (the chain is that). */
static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull, w;
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        memcpy(&w, p + k, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, p + k, n - k);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
    return (h ^ n) * 0x100000001b3ull;
}

size_t aj_frame_size(rec *r)
{
    size_t n = AJ_HEAD + AJ_FIXED;
    for (int i = 0; i < AJ_N_STR; i++)
        n += 4 + strlen(str_at(r, i)) + 1;
    return n;
}

size_t aj_encode(rec *r, unsigned char *buf)
{
    unsigned char *p = buf + AJ_HEAD;
    memcpy(p, &r->seq, 8);
    memcpy(p + 8, &r->segment, 8);
    double d[6] = {r->t_submit, r->t_answer, r->confidence, r->latency_s, r->queue_s, r->run_s};
    memcpy(p + 16, d, sizeof d);
    p += AJ_FIXED;
    for (int i = 0; i < AJ_N_STR; i++) {
        const char *s = str_at(r, i);
        uint32_t l = (uint32_t)strlen(s);
        memcpy(p, &l, 4);
        memcpy(p + 4, s, (size_t)l + 1);
        p += 4 + (size_t)l + 1;
    }
    uint32_t magic = AJ_MAGIC, len = (uint32_t)(p - buf - AJ_HEAD);
    uint64_t sum = fnv1a(buf + AJ_HEAD, len);
    atomic_signal_fence(memory_order_seq_cst); /* the payload before the header */
    memcpy(buf, &magic, 4);
    memcpy(buf + 4, &len, 4);
    memcpy(buf + 8, &sum, 8);
    return (size_t)(p - buf);
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (p[k])
            return 0;
    return 1;
}

int aj_decode(const unsigned char *buf, size_t len, size_t *off, rec *r, char *why,
              size_t why_len)
{
    size_t o = *off, rest = len - o;
    if (rest == 0)
        return AJ_END;
    uint32_t magic = AJ_MAGIC, plen;
    if (rest < AJ_HEAD) {
        /* A header cut short: torn, unless what there is of it is not a header. */
        if (all_zero(buf + o, rest) || !memcmp(buf + o, &magic, rest < 4 ? rest : 4))
            return AJ_TORN;
        snprintf(why, why_len, "no record starts there (not an audit journal, or damaged)");
        return AJ_CORRUPT;
    }
    uint64_t sum;
    memcpy(&magic, buf + o, 4);
    memcpy(&plen, buf + o + 4, 4);
    memcpy(&sum, buf + o + 8, 8);
    if (magic != AJ_MAGIC) {
        if (all_zero(buf + o, rest))
            return AJ_TORN;
        snprintf(why, why_len, "no record starts there (not an audit journal, or damaged)");
        return AJ_CORRUPT;
    }
    if (plen > AJ_MAX_PAYLOAD) {
        snprintf(why, why_len, "its length (%u bytes) is impossible", plen);
        return AJ_CORRUPT;
    }
    if (plen > rest - AJ_HEAD)
        return AJ_TORN;
    const unsigned char *p = buf + o + AJ_HEAD, *end = p + plen;
    if (fnv1a(p, plen) != sum) {
        if (plen == rest - AJ_HEAD || all_zero(end, rest - AJ_HEAD - plen))
            return AJ_TORN;
        snprintf(why, why_len, "its bytes do not match its checksum");
        return AJ_CORRUPT;
    }
    memset(r, 0, sizeof *r);
    if (plen < AJ_FIXED)
        goto malformed;
    memcpy(&r->seq, p, 8);
    memcpy(&r->segment, p + 8, 8);
    double d[6];
    memcpy(d, p + 16, sizeof d);
    r->t_submit = d[0];
    r->t_answer = d[1];
    r->confidence = d[2];
    r->latency_s = d[3];
    r->queue_s = d[4];
    r->run_s = d[5];
    p += AJ_FIXED;
    for (int i = 0; i < AJ_N_STR; i++) {
        uint32_t l;
        if ((size_t)(end - p) < 5)
            goto malformed;
        memcpy(&l, p, 4);
        if ((size_t)(end - p) - 4 < (size_t)l + 1 || p[4 + l] != '\0')
            goto malformed;
        const char *s = (const char *)p + 4;
        if (i < 3) {
            if (l > 64)
                goto malformed;
            memcpy(i == 0 ? r->prev_hash : i == 1 ? r->hash : r->mac, s, (size_t)l + 1);
        } else {
            *aj_text(r, i - 3) = (char *)s;
        }
        p += 4 + (size_t)l + 1;
    }
    if (p != end)
        goto malformed;
    *off = o + AJ_HEAD + plen;
    return AJ_RECORD;
malformed:
    memset(r, 0, sizeof *r);
    snprintf(why, why_len, "its checksum holds but its fields are malformed");
    return AJ_CORRUPT;
}

int aj_read_file(const char *path, unsigned char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    unsigned char *b = malloc(cap);
    if (!b) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        if (n == cap) {
            unsigned char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                close(fd);
                errno = ENOMEM;
                return -1;
            }
            b = nb;
            cap *= 2;
        }
        ssize_t got = read(fd, b + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            free(b);
            close(fd);
            errno = e;
            return -1;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    if (n == 0) {
        free(b);
        b = NULL;
    }
    *buf = b;
    *len = n;
    return 0;
}

/* Exactly what "%.17g" writes for V, without printf, when V is finite, positive and between
 * 1e-6 and 2^53 with a fraction (the times and figures of a record): V = M * 2^E exactly (M <
 * 2^53, -127 < E <= 0), so V * 10^K for the K giving 17 significant digits is M * 10^K / 2^-E
 * with M * 10^K < 2^128, rounded to nearest, ties to even (as glibc rounds). */
size_t aj_format_g17(double v, char *out)
{
    out[0] = '\0';
    if (!(v >= 1e-6 && v < 9007199254740992.0))
        return 0;
    int e2;
    double fr = frexp(v, &e2);
    uint64_t m = (uint64_t)ldexp(fr, 53);
    int e = e2 - 53;
    if (e > 0 || e < -127)
        return 0;
    static const uint64_t p10[20] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull,
                                     1000000ull, 10000000ull, 100000000ull, 1000000000ull,
                                     10000000000ull, 100000000000ull, 1000000000000ull,
                                     10000000000000ull, 100000000000000ull,
                                     1000000000000000ull, 10000000000000000ull,
                                     100000000000000000ull, 1000000000000000000ull,
                                     10000000000000000000ull};
    int x = (int)floor(log10(v)); /* the decimal exponent, perhaps off by one */
    uint64_t q = 0;
    for (int tries = 0; tries < 3; tries++) {
        int k = 16 - x;
        if (k < 0 || k > 22)
            return 0;
        unsigned __int128 n = (unsigned __int128)m;
        if (k > 19)
            n *= p10[19], n *= p10[k - 19];
        else
            n *= p10[k];
        unsigned s = (unsigned)-e;
        unsigned __int128 qq = s ? n >> s : n;
        if (s) {
            unsigned __int128 rem = n - (qq << s), half = (unsigned __int128)1 << (s - 1);
            if (rem > half || (rem == half && (qq & 1)))
                qq++;
        }
        if (qq >= p10[17]) {
            if (qq == p10[17] && tries > 0) { /* rounded up to 10^17: one more digit place */
                q = p10[16];
                x++;
                break;
            }
            x++;
            continue;
        }
        if (qq < p10[16]) {
            x--;
            continue;
        }
        q = (uint64_t)qq;
        break;
    }
    if (q < p10[16] || q >= p10[17])
        return 0;
    char d[17];
    for (int i = 16; i >= 0; i--, q /= 10)
        d[i] = (char)('0' + q % 10);
    int nd = 17;
    while (nd > 1 && d[nd - 1] == '0')
        nd--;
    size_t o = 0;
    if (x < -4 || x >= 17) {
        out[o++] = d[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int i = 1; i < nd; i++)
                out[o++] = d[i];
        }
        int ax = x < 0 ? -x : x;
        out[o++] = 'e';
        out[o++] = x < 0 ? '-' : '+';
        if (ax >= 100)
            out[o++] = (char)('0' + ax / 100);
        out[o++] = (char)('0' + ax / 10 % 10);
        out[o++] = (char)('0' + ax % 10);
    } else if (x >= 0) {
        for (int i = 0; i <= x; i++)
            out[o++] = d[i];
        if (nd > x + 1) {
            out[o++] = '.';
            for (int i = x + 1; i < nd; i++)
                out[o++] = d[i];
        }
    } else {
        out[o++] = '0';
        out[o++] = '.';
        for (int i = 0; i < -x - 1; i++)
            out[o++] = '0';
        for (int i = 0; i < nd; i++)
            out[o++] = d[i];
    }
    out[o] = '\0';
    return o;
}
