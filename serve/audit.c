/*
 * The audit trail: one record per answered request, hash-chained (each record's SHA-256 covers
 * the previous record's hash and its own fields) and, with a key, HMAC-SHA-256'd so that a
 * chain recomputed without the key is detected as well, kept in an SQLite database (WAL mode).
 *
 * The answer path does not touch SQLite. The worker that finished a request seals its record
 * (the next seq, the chain hash, the MAC) under a short mutex and copies it into the journal
 * DB + "-pending" (serve/audit_journal.h) in chain order, through a shared mapping of the file:
 * once copied the record is in the kernel's page cache (no system call on the way) and the
 * answer is delivered from that same thread. A
 * background thread (the ingester) moves the journal's records into the database every
 * AUDIT_INGEST_NS in one transaction (records and the head row, audit_meta), and starts a
 * fresh journal with what is left once the journal is large enough. At start the server moves
 * a journal left by a crash into the database first; `loom audit verify` and `query` read it
 * too. A head row names the last record in the database, so records deleted at the end are
 * seen. docs/serve.md, "Audit trail", says what a crash can lose.
 */
#include "audit_journal.h"
#include "server_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* The ingester's period: records reach the database within about this long. */
#define AUDIT_INGEST_NS 200000000LL
/* A fully ingested journal of at least this many bytes is replaced by an empty one; one of
 * 32 times as many bytes by one holding its not yet ingested tail, when that tail is no
 * larger (it is copied under the writers' lock). */
#define AUDIT_ROTATE_MIN (256u << 10)
/* The ingester's nice value (its thread's only). */
#define AUDIT_INGEST_NICE 10
/* The journal is written ahead with zeros this far, and frames written over them: a write
 * then neither extends the file nor allocates blocks, and with --audit-sync full its
 * fdatasync has no size change to commit. Readers take zeros for the end. */
#define AUDIT_PREALLOC (64u << 10)
/* For tests (the same limits as the defaults, made small or large): the environment's
 * LOOM_AUDIT_INGEST_MS (milliseconds, 0.1 to 1e9) and LOOM_AUDIT_ROTATE_BYTES (1 to 2^40)
 * replace the period and AUDIT_ROTATE_MIN. */

static void rec_clear(rec *r)
{
    for (int i = 0; i < AJ_N_TEXT; i++) {
        free(*aj_text(r, i));
        *aj_text(r, i) = NULL;
    }
}

struct sv_audit {
    sqlite3 *db;             /* the opener's, then the ingester's only */
    sqlite3_stmt *ins, *head, *begin, *end; /* prepared once: BEGIN IMMEDIATE, COMMIT */
    unsigned char key[1024];
    size_t key_len;
    int sync_full;
    char *jpath, *jtmp;      /* the journal, and the name its replacement is written under */

    /* Under MU: the chain's end and the journal (workers append, the ingester rotates). */
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* wakes the ingester to stop */
    EVP_MD_CTX *md;          /* sealing, reused */
    int jfd;
    uint64_t jsize;          /* bytes of whole frames in the journal */
    uint64_t jalloc;         /* bytes in the file: the frames, then zeros written ahead */
    unsigned char *map;      /* the file's first MAPLEN bytes, shared: frames are copied in */
    size_t maplen;
    int64_t seq, segment;    /* the last record's */
    char last_hash[65];
    int broken;              /* the journal could not be restored after a failed write */
    int lock_fd;             /* the database file, flock'ed: one server per database */
    int stop;

    /* The ingester's own. */
    uint64_t ingested;       /* journal bytes in the database */
    unsigned char *ibuf;
    size_t icap;
    int ingest_failing;      /* said once on stderr per run of failures */
    long long ingest_ns;
    uint64_t rotate_min, rotate_max;
    pthread_t ingester;
    int started;
};

/* ---- hashing ----------------------------------------------------------------------------- */

static void hex(const unsigned char *md, unsigned n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned k = 0; k < n; k++) {
        out[2 * k] = digits[md[k] >> 4];
        out[2 * k + 1] = digits[md[k] & 15];
    }
    out[2 * n] = '\0';
}

/* SHA-256, fetched once: an implicit fetch on every EVP_DigestInit_ex is the costliest part of
 * hashing a small record with OpenSSL 3. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}
static const EVP_MD *sha256(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256_md ? sha256_md : EVP_sha256();
}

/* Decimal digits of V into BUF (at least 21 bytes); returns the length. */
static size_t put_u64(char *buf, uint64_t v)
{
    char t[24];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = t[n - 1 - i];
    return n;
}

/* The canonical form hashed for a record: "NAME:LEN:VALUE\n" per field (unchanged since the
 * first record format), built in a buffer (without printf where it can: it runs ~25 times per
 * record) so that the digest sees it in one or two updates. */
typedef struct canon {
    unsigned char *p;
    size_t n, cap;
    int oom;
    unsigned char small[1024];
} canon;

static void canon_init(canon *c)
{
    c->p = c->small;
    c->n = 0;
    c->cap = sizeof c->small;
    c->oom = 0;
}

static void canon_free(canon *c)
{
    if (c->p != c->small)
        free(c->p);
}

static void canon_put(canon *c, const void *p, size_t n)
{
    if (c->n + n > c->cap) {
        size_t cap = 2 * (c->n + n);
        unsigned char *b = c->p == c->small ? malloc(cap) : realloc(c->p, cap);
        if (!b) {
            c->oom = 1;
            return;
        }
        if (c->p == c->small)
            memcpy(b, c->small, c->n);
        c->p = b;
        c->cap = cap;
    }
    memcpy(c->p + c->n, p, n);
    c->n += n;
}

/* "NAME:LEN:VALUE\n" for a value of VL bytes; NL: NAME's length (at most 64). */
static void put_field(canon *c, const char *name, size_t nl, const char *v, size_t vl)
{
    if (c->n + nl + vl + 24 > c->cap) { /* the slow path: grows the buffer */
        char head[96];
        memcpy(head, name, nl);
        head[nl] = ':';
        size_t w = nl + 1 + put_u64(head + nl + 1, vl);
        head[w++] = ':';
        canon_put(c, head, w);
        canon_put(c, v, vl);
        canon_put(c, "\n", 1);
        return;
    }
    unsigned char *p = c->p + c->n;
    memcpy(p, name, nl);
    p += nl;
    *p++ = ':';
    p += put_u64((char *)p, vl);
    *p++ = ':';
    memcpy(p, v, vl);
    p += vl;
    *p++ = '\n';
    c->n = (size_t)(p - c->p);
}

static void put_str(canon *c, const char *name, const char *v)
{
    v = v ? v : "";
    size_t nl = strlen(name);
    put_field(c, name, nl > 64 ? 64 : nl, v, strlen(v));
}

/* A number as "%.17g" writes it; integral values of magnitude below 2^53 (sequence numbers,
 * segments, a confidence of -1, 0 or 1) and the times and figures (aj_format_g17) take the
 * exact same digits without printf, which cost ~0.7 us a number. */
static void put_num(canon *c, const char *name, double v)
{
    char buf[64];
    if (v >= 0 && v < 9007199254740992.0 && v == floor(v) && !(v == 0 && signbit(v)))
        buf[put_u64(buf, (uint64_t)v)] = '\0';
    else if (v < 0 && v > -9007199254740992.0 && v == floor(v))
        buf[0] = '-', buf[1 + put_u64(buf + 1, (uint64_t)-v)] = '\0';
    else if (!aj_format_g17(v, buf))
        snprintf(buf, sizeof buf, "%.17g", v);
    put_str(c, name, buf);
}

/* Every field after prev, seq and segment, in their order. */
static void canon_fields(canon *c, rec *r)
{
#define NAME(s) {s, sizeof s - 1}
    static const struct {
        const char *s;
        size_t n;
    } names[AJ_N_TEXT] = {NAME("kind"), NAME("request_id"), NAME("model"), NAME("version"),
                          NAME("model_sha256"), NAME("variant"), NAME("path"), NAME("qos"),
                          NAME("devices"), NAME("plan"), NAME("input_sha256"),
                          NAME("output_sha256"), NAME("status"), NAME("message")};
#undef NAME
    for (int i = 0; i < AJ_N_TEXT; i++) {
        const char *v = *aj_text(r, i);
        v = v ? v : "";
        put_field(c, names[i].s, names[i].n, v, strlen(v));
    }
    put_num(c, "t_submit", r->t_submit);
    put_num(c, "t_answer", r->t_answer);
    put_num(c, "confidence", r->confidence);
    put_num(c, "latency_s", r->latency_s);
    put_num(c, "queue_s", r->queue_s);
    put_num(c, "run_s", r->run_s);
}

/* HASH = SHA-256(prev_hash, seq, segment, every field); MAC = HMAC(key, HASH) or "". FIELDS:
 * canon_fields(R), built beforehand (outside the writers' lock). C: a digest context to
 * reuse, or NULL for one made for this call. */
static void rec_seal_fields(rec *r, const canon *fields, const unsigned char *key,
                            size_t key_len, EVP_MD_CTX *reuse)
{
    EVP_MD_CTX *c = reuse ? reuse : EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned mdl = 0;
    canon h;
    canon_init(&h);
    put_str(&h, "prev", r->prev_hash);
    put_num(&h, "seq", (double)r->seq);
    put_num(&h, "segment", (double)r->segment);
    if (c && !fields->oom && EVP_DigestInit_ex(c, sha256(), NULL) == 1 &&
        EVP_DigestUpdate(c, h.p, h.n) == 1 && EVP_DigestUpdate(c, fields->p, fields->n) == 1)
        EVP_DigestFinal_ex(c, md, &mdl);
    canon_free(&h);
    if (!reuse)
        EVP_MD_CTX_free(c);
    if (mdl == 32)
        hex(md, 32, r->hash);
    else
        snprintf(r->hash, sizeof r->hash, "error");
    r->mac[0] = '\0';
    if (key_len) {
        unsigned int ml = 0;
        if (HMAC(sha256(), key, (int)key_len, (const unsigned char *)r->hash, 64, md, &ml) &&
            ml == 32)
            hex(md, 32, r->mac);
    }
}

static void rec_seal(rec *r, const unsigned char *key, size_t key_len, EVP_MD_CTX *reuse)
{
    canon f;
    canon_init(&f);
    canon_fields(&f, r);
    rec_seal_fields(r, &f, key, key_len, reuse);
    canon_free(&f);
}

/* SHA-256 over tensors: per tensor its name, dtype, shape and bytes. */
/* A digest context per thread that hashes tensors (the workers), made on its first use and
 * freed when the thread ends: none allocated per answer. */
static pthread_key_t md_key;
static pthread_once_t md_key_once = PTHREAD_ONCE_INIT;
static int md_key_ok;
static void md_key_free(void *c)
{
    EVP_MD_CTX_free(c);
}
static void md_key_make(void)
{
    md_key_ok = pthread_key_create(&md_key, md_key_free) == 0;
}

static void tensors_sha(char out[65], loom_tensor *const *t, const char *const *names, size_t n)
{
    pthread_once(&md_key_once, md_key_make);
    EVP_MD_CTX *c = md_key_ok ? pthread_getspecific(md_key) : NULL;
    int own = 0;
    if (!c) {
        c = EVP_MD_CTX_new();
        own = !md_key_ok || pthread_setspecific(md_key, c) != 0;
    }
    unsigned char md[32];
    unsigned mdl = 0;
    if (c && EVP_DigestInit_ex(c, sha256(), NULL) == 1) {
        for (size_t k = 0; k < n; k++) {
            /* The name with its NUL, then the dtype, rank and dims as int64 (unused dims
             * zero): one update for them when the name is short, as the bytes hashed are the
             * same either way. */
            const char *nm = names && names[k] ? names[k] : "";
            size_t nl = strlen(nm) + 1;
            int64_t head[2 + LOOM_MAX_RANK] = {0};
            head[0] = loom_tensor_dtype(t[k]);
            head[1] = loom_tensor_rank(t[k]);
            loom_tensor_dims(t[k], head + 2);
            unsigned char meta[256 + sizeof head];
            if (nl <= 256) {
                memcpy(meta, nm, nl);
                memcpy(meta + nl, head, sizeof head);
                EVP_DigestUpdate(c, meta, nl + sizeof head);
            } else {
                EVP_DigestUpdate(c, nm, nl);
                EVP_DigestUpdate(c, head, sizeof head);
            }
            EVP_DigestUpdate(c, loom_tensor_data(t[k]), loom_tensor_nbytes(t[k]));
        }
        EVP_DigestFinal_ex(c, md, &mdl);
    }
    if (own)
        EVP_MD_CTX_free(c);
    if (mdl == 32)
        hex(md, 32, out);
    else
        out[0] = '\0';
}

/* ---- the database ------------------------------------------------------------------------ */

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS audit_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS audit(seq INTEGER PRIMARY KEY, segment INTEGER NOT NULL,"
    " kind TEXT NOT NULL, request_id TEXT, t_submit REAL, t_answer REAL, model TEXT,"
    " version TEXT, model_sha256 TEXT, variant TEXT, path TEXT, qos TEXT, confidence REAL,"
    " devices TEXT, plan TEXT, input_sha256 TEXT, output_sha256 TEXT, latency_s REAL,"
    " queue_s REAL, run_s REAL, status TEXT, message TEXT, prev_hash TEXT NOT NULL,"
    " hash TEXT NOT NULL, mac TEXT NOT NULL);";
/* No index on request_id: records are appended in seq order (one B-tree page written per batch
 * of records), while an index on a random key would add a page per record to every commit;
 * `loom audit query --request-id` scans instead. */

#define COLS "seq, segment, kind, request_id, t_submit, t_answer, model, version, " \
             "model_sha256, variant, path, qos, confidence, devices, plan, input_sha256, " \
             "output_sha256, latency_s, queue_s, run_s, status, message, prev_hash, hash, mac"

static int open_db(const char *path, int create, sqlite3 **out, char *err, size_t err_len)
{
    sqlite3 *db = NULL;
    /* One thread at a time uses a connection (the opener, then the ingester thread only). */
    int flags = create ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "audit database '%s': %s", path,
                 db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, 5000);
    char *e = NULL;
    if (create && (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL,
                                NULL, &e) != SQLITE_OK ||
                   sqlite3_exec(db, schema, NULL, NULL, &e) != SQLITE_OK)) {
        snprintf(err, err_len, "audit database '%s': %s", path, e ? e : sqlite3_errmsg(db));
        sqlite3_free(e);
        sqlite3_close(db);
        return -1;
    }
    /* A file that is not an audit database (or not SQLite at all) says so here. */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT " COLS " FROM audit LIMIT 0", -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "audit database '%s': %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_finalize(st);
    *out = db;
    return 0;
}

static char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return sv_strdup(t ? (const char *)t : "");
}

/* Read the row of ST (selected with COLS) into R. */
static void rec_read(sqlite3_stmt *st, rec *r)
{
    memset(r, 0, sizeof *r);
    r->seq = sqlite3_column_int64(st, 0);
    r->segment = sqlite3_column_int64(st, 1);
    static const int text_cols[AJ_N_TEXT] = {2, 3, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 20, 21};
    for (int i = 0; i < AJ_N_TEXT; i++)
        *aj_text(r, i) = col_text(st, text_cols[i]);
    r->t_submit = sqlite3_column_double(st, 4);
    r->t_answer = sqlite3_column_double(st, 5);
    r->confidence = sqlite3_column_double(st, 12);
    r->latency_s = sqlite3_column_double(st, 17);
    r->queue_s = sqlite3_column_double(st, 18);
    r->run_s = sqlite3_column_double(st, 19);
    const unsigned char *p = sqlite3_column_text(st, 22), *h = sqlite3_column_text(st, 23),
                        *m = sqlite3_column_text(st, 24);
    snprintf(r->prev_hash, sizeof r->prev_hash, "%s", p ? (const char *)p : "");
    snprintf(r->hash, sizeof r->hash, "%s", h ? (const char *)h : "");
    snprintf(r->mac, sizeof r->mac, "%s", m ? (const char *)m : "");
}


typedef struct verdict {
    uint64_t count;          /* records that verified */
    int64_t first_bad;       /* seq of the first bad record; 0: none */
    char message[700];       /* about the first bad record */
    int last_ok;             /* the latest segment verifies */
    int journal_damaged;     /* a frame of the journal is damaged (or was being written) */
    int64_t last_seq, last_segment;
    char last_hash[65];
} verdict;

/* Walking a chain: what the next record must be. */
typedef struct chain {
    char expect_prev[65];
    int64_t expect_seq;
    int seg_bad;             /* the current segment is broken */
} chain;

static void note(verdict *v, int64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(verdict *v, int64_t seq, const char *fmt, ...)
{
    if (v->first_bad)
        return;
    v->first_bad = seq ? seq : -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->message, sizeof v->message, fmt, ap);
    va_end(ap);
}
#define bad(v, c, seq, ...) ((c)->seg_bad = 1, note((v), (seq), __VA_ARGS__))

/* Check R (as read, with its stored hash and MAC; R's hash and MAC are recomputed in place)
 * against the chain C. WHERE ("" or " (...)") ends each message about it. A segment record
 * after a break starts the chain afresh from the hash it names (the break stays reported);
 * one reached with the chain intact is reported too (something made the server start it:
 * what, its message says) but does not break the segment it starts. */
static void check_rec(verdict *v, chain *c, rec *r, const unsigned char *key, size_t key_len,
                      const char *where)
{
    int is_segment = r->kind && !strcmp(r->kind, "segment");
    if (c->seg_bad && is_segment) {
        c->seg_bad = 0;
        snprintf(c->expect_prev, sizeof c->expect_prev, "%s", r->prev_hash);
        c->expect_seq = r->seq;
    } else if (is_segment && r->seq == c->expect_seq &&
               !strcmp(r->prev_hash, c->expect_prev)) {
        note(v, r->seq, "record %lld%s: a new segment starts here: %s", (long long)r->seq, where,
             r->message ? r->message : "");
    }
    char stored[65];
    snprintf(stored, sizeof stored, "%s", r->hash);
    if (!c->seg_bad) {
        char mac[65];
        snprintf(mac, sizeof mac, "%s", r->mac);
        if (r->seq != c->expect_seq)
            bad(v, c, r->seq, "record %lld%s: expected record %lld here: %s", (long long)r->seq,
                where, (long long)c->expect_seq,
                r->seq > c->expect_seq ? "records were deleted"
                                       : "records were reordered or inserted");
        else if (strcmp(r->prev_hash, c->expect_prev))
            bad(v, c, r->seq, "record %lld%s: does not follow record %lld (a record was deleted, "
                "inserted or reordered)", (long long)r->seq, where, (long long)r->seq - 1);
        if (!c->seg_bad) {
            rec_seal(r, key, key_len, NULL);
            if (strcmp(r->hash, stored))
                bad(v, c, r->seq, "record %lld%s: edited (its hash does not match its fields)",
                    (long long)r->seq, where);
            else if (key_len && strcmp(r->mac, mac))
                bad(v, c, r->seq, "record %lld%s: its MAC does not match (the chain was "
                    "recomputed without the key, or the key is wrong)", (long long)r->seq,
                    where);
        }
        if (!c->seg_bad)
            v->count++;
        snprintf(c->expect_prev, sizeof c->expect_prev, "%s", stored);
    }
    c->expect_seq = r->seq + 1;
    v->last_seq = r->seq;
    v->last_segment = r->segment;
    snprintf(v->last_hash, sizeof v->last_hash, "%s", r->hash);
}

/* How often verify and query read the journal again when a frame looks damaged: a reader
 * may see a frame that a running server is writing in part (the file is written ahead with
 * zeros, and write() is not atomic against read()); real damage stays. */
#define AUDIT_READ_RETRIES 5

/* Records the server re-checks when it opens a database (the chain's tail and the head):
 * the full pass is `loom audit verify`'s, and would make start-up grow with the database. */
#define AUDIT_OPEN_TAIL 10000

/* Walk the database's records in order: every one (TAIL 0), or the last TAIL, taking the
 * first of them as given; then its head. C (may be NULL) gets the chain's state at the end,
 * to go on with the journal's records. */
static int verify_db(sqlite3 *db, const unsigned char *key, size_t key_len, int64_t tail,
                     verdict *v, chain *out)
{
    memset(v, 0, sizeof *v);
    snprintf(v->last_hash, sizeof v->last_hash, ZERO_HASH);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT " COLS " FROM audit WHERE seq > ?1 ORDER BY seq", -1,
                           &st, NULL) != SQLITE_OK)
        return -1;
    int64_t from = 0;
    if (tail > 0) {
        /* The tail by position: the seq-th row from the end, whatever the seqs say. */
        sqlite3_stmt *q;
        if (sqlite3_prepare_v2(db, "SELECT seq FROM audit ORDER BY seq DESC LIMIT 1 OFFSET ?1",
                               -1, &q, NULL) != SQLITE_OK) {
            sqlite3_finalize(st);
            return -1;
        }
        sqlite3_bind_int64(q, 1, tail);
        if (sqlite3_step(q) == SQLITE_ROW)
            from = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
    }
    sqlite3_bind_int64(st, 1, from);
    chain c = {.expect_prev = ZERO_HASH, .expect_seq = 1};
    int rc, first = 1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        rec r;
        rec_read(st, &r);
        if (first && from > 0) {
            /* The window's first record is taken as the chain's start. */
            snprintf(c.expect_prev, sizeof c.expect_prev, "%s", r.prev_hash);
            c.expect_seq = r.seq;
        }
        first = 0;
        check_rec(v, &c, &r, key, key_len, "");
        rec_clear(&r);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return -1;
    /* The head names the last record written: anything after it deleted shows here. */
    if (sqlite3_prepare_v2(db, "SELECT value FROM audit_meta WHERE key = 'head'", -1, &st,
                           NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            long long hs = 0;
            char hh[65] = "";
            const unsigned char *t = sqlite3_column_text(st, 0);
            if (!t || sscanf((const char *)t, "%lld %64s", &hs, hh) != 2)
                bad(v, &c, v->last_seq + 1, "the head record of the database is malformed");
            else if (hs != v->last_seq || strcmp(hh, v->last_hash))
                bad(v, &c, hs > v->last_seq ? v->last_seq + 1 : hs,
                    "the database's head names record %lld but the last record is %lld: %s", hs,
                    (long long)v->last_seq, hs > v->last_seq ? "records at the end were deleted"
                                                             : "records were added past it");
        } else if (v->last_seq > 0) {
            bad(v, &c, 1, "the database has records but no head");
        }
        sqlite3_finalize(st);
    }
    v->last_ok = !c.seg_bad;
    if (out)
        *out = c;
    return 0;
}

/* The journal's name for the database PATH (malloc'd; NULL: out of memory). */
static char *journal_path(const char *path, const char *suffix)
{
    size_t n = strlen(path) + strlen("-pending") + strlen(suffix) + 1;
    char *j = malloc(n);
    if (j)
        snprintf(j, n, "%s-pending%s", path, suffix);
    return j;
}

/* Go on checking with the journal BUF (LEN bytes, read from JPATH) the chain that V and C
 * ended the database with: its records past V->last_seq (those up to it are in the database
 * already) must follow. Calls EACH(ARG, record) for every record checked (may be NULL).
 * *PENDING: how many were past the database's end. A torn last frame (a write cut short:
 * never answered) is left out; a damaged one is reported at its byte. */
static void check_journal(verdict *v, chain *c, const unsigned char *buf, size_t len,
                          const char *jpath, const unsigned char *key, size_t key_len,
                          int (*each)(void *, rec *), void *arg, uint64_t *pending)
{
    size_t off = 0;
    int64_t db_last = v->last_seq;
    *pending = 0;
    for (;;) {
        size_t at = off;
        rec r;
        char why[160] = "";
        int k = aj_decode(buf, len, &off, &r, why, sizeof why);
        if (k == AJ_CORRUPT) {
            bad(v, c, v->last_seq + 1, "the audit journal '%s' is damaged at byte %zu (%s): "
                "the records from there on cannot be read", jpath, at, why);
            v->journal_damaged = 1;
            return;
        }
        if (k != AJ_RECORD)
            return;
        if (r.seq <= db_last)
            continue;
        char where[600];
        snprintf(where, sizeof where, " (in the audit journal '%s' at byte %zu)", jpath, at);
        uint64_t verified = v->count;
        check_rec(v, c, &r, key, key_len, where);
        ++*pending;
        if (each && v->count > verified && each(arg, &r) != 0)
            return;
        if (c->seg_bad)
            return;
    }
}

static int read_key(const char *path, unsigned char *key, size_t cap, size_t *len, char *err,
                    size_t err_len)
{
    *len = 0;
    if (!path)
        return 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return snprintf(err, err_len, "audit key '%s': cannot be read", path), -1;
    size_t n = fread(key, 1, cap, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    if (n == 0 || more)
        return snprintf(err, err_len, "audit key '%s': %s", path,
                        n == 0 ? "empty" : "over 1024 bytes"), -1;
    *len = n;
    return 0;
}


/* ---- writing ----------------------------------------------------------------------------- */

/* Insert the sealed record R with ST (an INSERT of COLS; its bindings are cleared after). */
static int insert_row(sqlite3_stmt *st, rec *r)
{
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, r->seq);
    sqlite3_bind_int64(st, 2, r->segment);
    static const int text_cols[AJ_N_TEXT] = {2, 3, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 20, 21};
    for (int i = 0; i < AJ_N_TEXT; i++) {
        const char *t = *aj_text(r, i);
        sqlite3_bind_text(st, text_cols[i] + 1, t ? t : "", -1, SQLITE_STATIC);
    }
    sqlite3_bind_double(st, 5, r->t_submit);
    sqlite3_bind_double(st, 6, r->t_answer);
    sqlite3_bind_double(st, 13, r->confidence);
    sqlite3_bind_double(st, 18, r->latency_s);
    sqlite3_bind_double(st, 19, r->queue_s);
    sqlite3_bind_double(st, 20, r->run_s);
    sqlite3_bind_text(st, 23, r->prev_hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 24, r->hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 25, r->mac, -1, SQLITE_STATIC);
    /* SQLITE_STATIC: R outlives the step; the bindings are cleared before R goes. */
    int done = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return done ? 0 : -1;
}

static int set_head(sv_audit *a, int64_t seq, const char *hash)
{
    char v[128];
    snprintf(v, sizeof v, "%lld %s", (long long)seq, hash);
    sqlite3_reset(a->head);
    sqlite3_bind_text(a->head, 1, v, -1, SQLITE_TRANSIENT);
    int done = sqlite3_step(a->head) == SQLITE_DONE;
    sqlite3_reset(a->head);
    return done ? 0 : -1;
}

static int begin(sv_audit *a)
{
    int ok = sqlite3_step(a->begin) == SQLITE_DONE;
    sqlite3_reset(a->begin);
    return ok ? 0 : -1;
}

/* Commit (OK) or roll back the transaction begun; 0 when committed. */
static int finish(sv_audit *a, int ok)
{
    ok = ok && sqlite3_step(a->end) == SQLITE_DONE;
    sqlite3_reset(a->end);
    if (!ok)
        sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
    return ok ? 0 : -1;
}

/* At start, before the journal: append R (a segment record) straight to the database. */
static int append_direct(sv_audit *a, rec *r)
{
    r->seq = a->seq + 1;
    r->segment = a->segment;
    snprintf(r->prev_hash, sizeof r->prev_hash, "%s", a->last_hash);
    rec_seal(r, a->key, a->key_len, a->md);
    if (begin(a) != 0)
        return -1;
    int ok = insert_row(a->ins, r) == 0 && set_head(a, r->seq, r->hash) == 0;
    if (finish(a, ok) != 0)
        return -1;
    a->seq = r->seq;
    snprintf(a->last_hash, sizeof a->last_hash, "%s", r->hash);
    return 0;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int write_all(int fd, const unsigned char *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        off += (uint64_t)w;
        n -= (size_t)w;
    }
    return 0;
}

/* Zeros ahead of the journal's end, so that N more bytes fit. Under MU. */
static int prealloc(sv_audit *a, size_t n)
{
    static const unsigned char zeros[65536];
    uint64_t want = a->jsize + n + AUDIT_PREALLOC;
    while (a->jalloc < want) {
        size_t k = want - a->jalloc < sizeof zeros ? (size_t)(want - a->jalloc) : sizeof zeros;
        if (write_all(a->jfd, zeros, k, a->jalloc) != 0)
            return -1;
        a->jalloc += k;
    }
    /* Written zeros, not a hole or a bigger size: every byte mapped has its block on the
     * disk, so a full disk fails this write (the answer is withheld) and never a copy into
     * the mapping (SIGBUS). */
    if (a->maplen < a->jalloc) {
        void *m = a->map ? mremap(a->map, a->maplen, (size_t)a->jalloc, MREMAP_MAYMOVE)
                         : mmap(NULL, (size_t)a->jalloc, PROT_READ | PROT_WRITE, MAP_SHARED,
                                a->jfd, 0);
        if (m == MAP_FAILED)
            return -1;
        a->map = m;
        a->maplen = (size_t)a->jalloc;
    }
    return 0;
}

static void unmap_journal(sv_audit *a)
{
    if (a->map)
        munmap(a->map, a->maplen);
    a->map = NULL;
    a->maplen = 0;
}

static void withhold(loom_serve_result *res, const char *why)
{
    char msg[300];
    snprintf(msg, sizeof msg, "the audit trail could not be written (%s): the answer is withheld",
             why);
    sv_result_fail(res, msg);
}

void sv_audit_record(sv_audit *a, const sv_req *r, const figures *f, loom_serve_result *res)
{
    const sv_model *m = r->model;
    char in_sha[65], out_sha[65] = "";
    const char *in_names[64];
    for (size_t k = 0; k < m->n_in && k < 64; k++)
        in_names[k] = m->in[k].name;
    tensors_sha(in_sha, r->inputs, in_names, m->n_in < 64 ? m->n_in : 64);
    if (res->n_outputs)
        tensors_sha(out_sha, res->outputs, res->output_names, res->n_outputs);
    /* The record's text fields point at the request's and the result's own strings: only
     * read (sealed and copied into the frame) while they live. */
    rec x = {0};
    double now = wall_now();
    x.kind = (char *)"answer";
    x.request_id = (char *)(r->id ? r->id : "");
    x.t_answer = now;
    x.t_submit = now - res->total_s;
    x.model = (char *)m->name;
    x.version = (char *)m->version;
    x.model_sha256 = (char *)m->sha256;
    x.variant = (char *)(res->variant ? res->variant : "");
    x.path = (char *)(res->path ? res->path : "");
    x.qos = (char *)(r->qos ? r->qos : "");
    x.confidence = res->confidence;
    x.devices = (char *)(res->devices ? res->devices : "");
    x.plan = (char *)(f && f->plan_id ? f->plan_id : "");
    x.input_sha256 = in_sha;
    x.output_sha256 = out_sha;
    x.latency_s = res->total_s;
    x.queue_s = res->queue_s;
    x.run_s = res->run_s;
    x.status = (char *)loom_serve_code_name(res->code);
    x.message = (char *)(res->message ? res->message : "");

    canon fields;
    canon_init(&fields);
    canon_fields(&fields, &x);
    const char *why = fields.oom ? "out of memory" : NULL;
    int err = 0;
    pthread_mutex_lock(&a->mu);
    if (a->broken) {
        why = "an earlier write failed and the journal could not be restored";
    } else if (!why) {
        x.seq = a->seq + 1;
        x.segment = a->segment;
        memcpy(x.prev_hash, a->last_hash, sizeof x.prev_hash);
        rec_seal_fields(&x, &fields, a->key, a->key_len, a->md);
        size_t n = aj_frame_size(&x);
        if (a->jsize + n > a->jalloc && prealloc(a, n) != 0) {
            err = errno;
            /* Take back zeros written in part; the frames before stay as they are. */
            if (ftruncate(a->jfd, (off_t)a->jsize) != 0)
                a->broken = 1;
            a->jalloc = a->jsize;
        } else {
            /* Straight into the page cache through the mapping, no system call: the record
             * survives the process (a crash, SIGKILL) as a write would; aj_encode writes the
             * header last, so a frame cut short reads as the end. */
            aj_encode(&x, a->map + a->jsize);
            a->seq = x.seq;
            memcpy(a->last_hash, x.hash, sizeof a->last_hash);
            a->jsize += n;
            /* --audit-sync full: on the disk before the answer leaves. */
            if (a->sync_full && fdatasync(a->jfd) != 0)
                err = errno;
        }
    }
    pthread_mutex_unlock(&a->mu);
    canon_free(&fields);
    if (err)
        why = strerror(err);
    if (why)
        withhold(res, why);
}

/* ---- the ingester ------------------------------------------------------------------------ */

/* Move the journal's bytes [FROM, TO) (whole frames) into the database in one transaction. */
static int ingest(sv_audit *a, uint64_t from, uint64_t to)
{
    size_t n = (size_t)(to - from);
    if (n > a->icap) {
        unsigned char *b = realloc(a->ibuf, n);
        if (!b)
            return -1;
        a->ibuf = b;
        a->icap = n;
    }
    for (size_t got = 0; got < n;) {
        ssize_t k = pread(a->jfd, a->ibuf + got, n - got, (off_t)(from + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    if (begin(a) != 0)
        return -1;
    size_t off = 0;
    rec r, last = {0};
    char why[160];
    int ok = 1, k;
    while (ok && (k = aj_decode(a->ibuf, n, &off, &r, why, sizeof why)) == AJ_RECORD) {
        ok = insert_row(a->ins, &r) == 0;
        last.seq = r.seq;
        memcpy(last.hash, r.hash, sizeof last.hash);
    }
    ok = ok && k == AJ_END && last.seq && set_head(a, last.seq, last.hash) == 0;
    return finish(a, ok);
}

/* Replace the journal (fully or nearly ingested) by one holding its not yet ingested tail.
 * Under MU; by the ingester. A reader that opened the old one goes on reading it whole. */
static void rotate(sv_audit *a)
{
    size_t tail = (size_t)(a->jsize - a->ingested);
    int fd = open(a->jtmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return;
    int ok = 1;
    if (tail) {
        if (tail > a->icap) {
            unsigned char *b = realloc(a->ibuf, tail);
            ok = b != NULL;
            if (b) {
                a->ibuf = b;
                a->icap = tail;
            }
        }
        ok = ok && pread(a->jfd, a->ibuf, tail, (off_t)a->ingested) == (ssize_t)tail &&
             write_all(fd, a->ibuf, tail, 0) == 0;
    }
    if (ok && a->sync_full)
        ok = fdatasync(fd) == 0;
    ok = ok && rename(a->jtmp, a->jpath) == 0;
    if (!ok) {
        close(fd);
        unlink(a->jtmp);
        return;
    }
    if (a->sync_full) {
        /* The rename itself on the disk (the directory's entry). */
        char *dir = sv_strdup(a->jpath);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        int dfd = -1;
        if (dir) {
            if (slash)
                slash[slash == dir] = '\0';
            dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    unmap_journal(a);
    close(a->jfd);
    a->jfd = fd;
    a->jsize = a->jalloc = tail;
    a->ingested = 0;
}

static void *ingester_main(void *arg)
{
    sv_audit *a = arg;
    pthread_setname_np(pthread_self(), "loom-audit");
    /* Background work (the records are safe in the journal already): the workers and the
     * HTTP threads go first when the CPUs are busy; it catches up when they are not. (Linux:
     * a thread's own nice value.) */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), AUDIT_INGEST_NICE);
    pthread_mutex_lock(&a->mu);
    for (;;) {
        if (!a->stop) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            long long ns = until.tv_nsec + a->ingest_ns;
            until.tv_sec += (time_t)(ns / 1000000000LL);
            until.tv_nsec = (long)(ns % 1000000000LL);
            pthread_cond_timedwait(&a->cv, &a->mu, &until);
        }
        int stop = a->stop;
        uint64_t end = a->jsize;
        pthread_mutex_unlock(&a->mu);
        int failed = 0;
        if (end > a->ingested) {
            /* The journal's fd changes only here (rotate): safe to read without MU. */
            failed = ingest(a, a->ingested, end) != 0;
            if (!failed) {
                a->ingested = end;
                a->ingest_failing = 0;
            } else if (!a->ingest_failing) {
                /* The records stay in the journal (the answers were sent): tried again. */
                a->ingest_failing = 1;
                fprintf(stderr, "loom serve: the audit journal could not be moved into the "
                        "database (%s); it keeps the records and is tried again\n",
                        sqlite3_errmsg(a->db));
            }
        }
        pthread_mutex_lock(&a->mu);
        if (!failed && ((a->ingested == a->jsize && a->jsize >= a->rotate_min) ||
                        (a->jsize >= a->rotate_max && a->jsize - a->ingested <= a->rotate_min)))
            rotate(a);
        if (stop && (failed || a->ingested == a->jsize))
            break;
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- opening and closing ----------------------------------------------------------------- */

typedef struct replay {
    sv_audit *a;
    int64_t seq;
    char hash[65];
    int failed;
} replay;

static int replay_one(void *arg, rec *r)
{
    replay *p = arg;
    if (insert_row(p->a->ins, r) != 0) {
        p->failed = 1;
        return -1;
    }
    p->seq = r->seq;
    memcpy(p->hash, r->hash, sizeof p->hash);
    return 0;
}

/* Move a journal left by a crash into the database: its records past the database's last one,
 * checked as they go on the chain, in one transaction. 0; 1 when the journal is damaged or
 * does not follow (PROBLEM says where; the records before that point were moved); -1 on an
 * error (ERR). */
static int replay_journal(sv_audit *a, const char *path, char *problem, size_t problem_len,
                          char *err, size_t err_len)
{
    unsigned char *buf;
    size_t len;
    if (aj_read_file(a->jpath, &buf, &len) != 0)
        return snprintf(err, err_len, "audit journal '%s': %s", a->jpath, strerror(errno)), -1;
    if (!len)
        return 0;
    /* The database's last record, as the chain's end to go on from. */
    verdict v;
    memset(&v, 0, sizeof v);
    chain c = {.expect_prev = ZERO_HASH, .expect_seq = 1};
    sqlite3_stmt *st;
    int rc = -1;
    if (sqlite3_prepare_v2(a->db, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", -1,
                           &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            const unsigned char *h = sqlite3_column_text(st, 1);
            v.last_seq = sqlite3_column_int64(st, 0);
            snprintf(c.expect_prev, sizeof c.expect_prev, "%s", h ? (const char *)h : "");
            c.expect_seq = v.last_seq + 1;
        }
        sqlite3_finalize(st);
        replay p = {.a = a};
        uint64_t pending;
        if (begin(a) == 0) {
            check_journal(&v, &c, buf, len, a->jpath, a->key, a->key_len, replay_one, &p,
                          &pending);
            int ok = !p.failed && (!p.seq || set_head(a, p.seq, p.hash) == 0);
            if (finish(a, ok) == 0)
                rc = v.first_bad ? 1 : 0;
        }
    }
    free(buf);
    if (rc < 0)
        snprintf(err, err_len, "audit database '%s': %s", path, sqlite3_errmsg(a->db));
    else if (rc > 0)
        snprintf(problem, problem_len, "%s", v.message);
    return rc;
}

loom_status sv_audit_open(const char *path, const char *key_path, int new_segment,
                          int sync_full, sv_audit **out)
{
    *out = NULL;
    char err[900];
    sv_audit *a = calloc(1, sizeof *a);
    if (!a)
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    a->jfd = -1;
    a->lock_fd = -1;
    a->sync_full = sync_full;
    a->ingest_ns = AUDIT_INGEST_NS;
    a->rotate_min = AUDIT_ROTATE_MIN;
    const char *e = getenv("LOOM_AUDIT_INGEST_MS");
    if (e && strtod(e, NULL) >= 0.1 && strtod(e, NULL) <= 1e9)
        a->ingest_ns = (long long)(strtod(e, NULL) * 1e6);
    e = getenv("LOOM_AUDIT_ROTATE_BYTES");
    if (e && strtod(e, NULL) >= 1 && strtod(e, NULL) <= 1099511627776.0)
        a->rotate_min = (uint64_t)strtod(e, NULL);
    a->rotate_max = 32 * a->rotate_min;
    if (read_key(key_path, a->key, sizeof a->key, &a->key_len, err, sizeof err) != 0) {
        free(a);
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "%s", err);
    }
    if (open_db(path, 1, &a->db, err, sizeof err) != 0) {
        free(a);
        return sv_error(LOOM_ERR_IO, "%s", err);
    }
    /* One server per database: a second one would take the first one's journal. (flock, not
     * fcntl: SQLite's own fcntl locks are not disturbed; this fd stays open until after
     * sqlite3_close, since closing any fd of the file would drop those.) */
    a->lock_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (a->lock_fd < 0 || flock(a->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int busy = a->lock_fd >= 0 && errno == EWOULDBLOCK;
        snprintf(err, sizeof err, "audit database '%s': %s", path,
                 busy ? "another server is appending to it" : strerror(errno));
        sv_audit_close(a);
        return sv_error(busy ? LOOM_ERR_INVALID_ARGUMENT : LOOM_ERR_IO, "%s", err);
    }
    if (!sync_full)
        sqlite3_exec(a->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    /* Checkpoint the WAL into the database every ~16 MB rather than every 4 MB: fewer
     * checkpoints (each one syncs) for the same pages. */
    sqlite3_exec(a->db, "PRAGMA wal_autocheckpoint=4000", NULL, NULL, NULL);
    a->md = EVP_MD_CTX_new();
    a->jpath = journal_path(path, "");
    a->jtmp = journal_path(path, ".tmp");
    if (!a->md || !a->jpath || !a->jtmp) {
        sv_audit_close(a);
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (sqlite3_prepare_v2(a->db, "INSERT INTO audit(" COLS ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,"
                           "?,?,?,?,?,?,?,?,?,?,?,?)", -1, &a->ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(a->db, "INSERT OR REPLACE INTO audit_meta(key, value) VALUES('head',"
                           " ?)", -1, &a->head, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(a->db, "BEGIN IMMEDIATE", -1, &a->begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(a->db, "COMMIT", -1, &a->end, NULL) != SQLITE_OK) {
        snprintf(err, sizeof err, "audit database '%s': %s", path, sqlite3_errmsg(a->db));
        sv_audit_close(a);
        return sv_error(LOOM_ERR_IO, "%s", err);
    }
    /* First what a crash left in the journal: those answers were sent. */
    char problem[700] = "";
    int rp = replay_journal(a, path, problem, sizeof problem, err, sizeof err);
    if (rp < 0) {
        sv_audit_close(a);
        return sv_error(LOOM_ERR_IO, "%s", err);
    }
    if (rp > 0 && !new_segment) {
        loom_status st = sv_error(LOOM_ERR_INVALID_ARGUMENT, "audit database '%s': %s; refusing "
                                  "to append (the records before that point were moved into the "
                                  "database; start a new segment to go on: the journal is then "
                                  "kept as '%s.bad')", path, problem, a->jpath);
        sv_audit_close(a);
        return st;
    }
    if (rp > 0) {
        char bad_path[700];
        snprintf(bad_path, sizeof bad_path, "%s.bad", a->jpath);
        if (rename(a->jpath, bad_path) != 0) {
            snprintf(err, sizeof err, "audit journal '%s': cannot be set aside as '%s': %s",
                     a->jpath, bad_path, strerror(errno));
            sv_audit_close(a);
            return sv_error(LOOM_ERR_IO, "%s", err);
        }
    }
    verdict v;
    if (verify_db(a->db, a->key, a->key_len, AUDIT_OPEN_TAIL, &v, NULL) != 0) {
        snprintf(err, sizeof err, "audit database '%s': %s", path, sqlite3_errmsg(a->db));
        sv_audit_close(a);
        return sv_error(LOOM_ERR_IO, "%s", err);
    }
    a->seq = v.last_seq;
    a->segment = v.last_segment ? v.last_segment : 1;
    snprintf(a->last_hash, sizeof a->last_hash, "%s", v.last_hash);
    if (!v.last_ok && !new_segment) {
        sv_audit_close(a);
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "audit database '%s': the chain is broken at "
                        "%s; refusing to append (start a new segment to go on)", path,
                        v.message);
    }
    if (!v.last_ok || rp > 0) {
        /* A new segment, recorded: it follows the last record as it is now. */
        rec r = {0};
        char msg[1600];
        if (rp > 0)
            snprintf(msg, sizeof msg, "new segment: %s (kept as '%s.bad')", problem, a->jpath);
        else
            snprintf(msg, sizeof msg, "new segment: the chain was broken at %s", v.message);
        a->segment++;
        r.kind = (char *)"segment";
        r.status = (char *)"segment";
        r.message = msg;
        r.t_submit = r.t_answer = wall_now();
        if (append_direct(a, &r) != 0) {
            snprintf(err, sizeof err, "audit database '%s': %s", path, sqlite3_errmsg(a->db));
            sv_audit_close(a);
            return sv_error(LOOM_ERR_IO, "%s", err);
        }
    }
    /* A fresh journal: everything before is in the database now. */
    a->jfd = open(a->jpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (a->jfd < 0) {
        snprintf(err, sizeof err, "audit journal '%s': %s", a->jpath, strerror(errno));
        sv_audit_close(a);
        return sv_error(LOOM_ERR_IO, "%s", err);
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &ca);
    pthread_condattr_destroy(&ca);
    a->started = 1;
    if (pthread_create(&a->ingester, NULL, ingester_main, a) != 0) {
        a->started = 0;
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        sv_audit_close(a);
        return sv_error(LOOM_ERR_INTERNAL, "cannot start the audit ingester thread");
    }
    *out = a;
    return LOOM_OK;
}

void sv_audit_close(sv_audit *a)
{
    if (!a)
        return;
    int all_in = 1;
    if (a->started) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->ingester, NULL);
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        all_in = a->ingested == a->jsize;
    }
    unmap_journal(a);
    if (a->jfd >= 0) {
        close(a->jfd);
        /* Every record is in the database: no journal left behind. Else it stays, for the
         * next start (and verify, query) to read. */
        if (all_in)
            unlink(a->jpath);
    }
    sqlite3_finalize(a->ins);
    sqlite3_finalize(a->head);
    sqlite3_finalize(a->begin);
    sqlite3_finalize(a->end);
    sqlite3_close(a->db);
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    EVP_MD_CTX_free(a->md);
    free(a->ibuf);
    free(a->jpath);
    free(a->jtmp);
    free(a);
}

/* ---- the public verify and query --------------------------------------------------------- */

/* What verify and query read, in this order: the journal JPATH into *JBUF (*JLEN bytes,
 * malloc'ed; whatever a running server moves out of it after this read is in the database when
 * that is read next, docs/serve.md), then the database PATH opened into *DB. 0, or -1 with
 * MESSAGE set and nothing left open. */
static int read_snapshot(const char *path, const char *jpath, unsigned char **jbuf, size_t *jlen,
                         sqlite3 **db, char *message, size_t message_len)
{
    *jbuf = NULL;
    *jlen = 0;
    if (aj_read_file(jpath, jbuf, jlen) != 0) {
        snprintf(message, message_len, "audit journal '%s': %s", jpath, strerror(errno));
        return -1;
    }
    if (open_db(path, 0, db, message, message_len) != 0) {
        free(*jbuf);
        *jbuf = NULL;
        return -1;
    }
    return 0;
}

int loom_audit_verify(const char *path, const char *key_path, uint64_t *count, char *message,
                      size_t message_len)
{
    unsigned char key[1024];
    size_t key_len = 0;
    sqlite3 *db = NULL;
    *count = 0;
    if (read_key(key_path, key, sizeof key, &key_len, message, message_len) != 0)
        return -1;
    char *jpath = journal_path(path, "");
    if (!jpath)
        return snprintf(message, message_len, "out of memory"), -1;
    verdict v;
    uint64_t pending = 0;
    int rc;
    for (int attempt = 0;; attempt++) {
        unsigned char *jbuf;
        size_t jlen;
        if (read_snapshot(path, jpath, &jbuf, &jlen, &db, message, message_len) != 0) {
            free(jpath);
            return -1;
        }
        chain c;
        /* One read transaction: the records and the head as of one moment. */
        rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK &&
                     verify_db(db, key, key_len, 0, &v, &c) == 0
                 ? 0
                 : -1;
        if (rc == 0)
            check_journal(&v, &c, jbuf, jlen, jpath, key, key_len, NULL, NULL, &pending);
        else
            snprintf(message, message_len, "audit database '%s': %s", path, sqlite3_errmsg(db));
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(db);
        free(jbuf);
        /* A frame a running server was writing while it was read looks damaged: read again. */
        if (rc == 0 && v.journal_damaged && attempt < AUDIT_READ_RETRIES) {
            usleep(2000);
            continue;
        }
        break;
    }
    if (rc == 0) {
        *count = v.count;
        if (v.first_bad) {
            snprintf(message, message_len, "%s", v.message);
            rc = 1;
        } else {
            char in_journal[700] = "";
            if (pending)
                snprintf(in_journal, sizeof in_journal, ", %llu of them in the journal '%s'",
                         (unsigned long long)pending, jpath);
            snprintf(message, message_len, "%llu records verified%s%s",
                     (unsigned long long)v.count,
                     key_len ? " (hash chain and MACs)" : " (hash chain; no key: MACs not checked)",
                     in_journal);
        }
    }
    free(jpath);
    return rc;
}

/* For query: the journal's records past the database's last, in the table temp.pending.
 * 0; -1 on an error, -2 when the journal is damaged (MESSAGE says which). */
static int load_pending(sqlite3 *db, const char *jpath, const unsigned char *buf, size_t len,
                        char *message, size_t message_len)
{
    sqlite3_stmt *st = NULL, *ins = NULL;
    int64_t last = 0;
    int rc = -1;
    if (sqlite3_exec(db, "CREATE TEMP TABLE pending AS SELECT * FROM main.audit WHERE 0", NULL,
                     NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT max(seq) FROM main.audit", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW ||
        sqlite3_prepare_v2(db, "INSERT INTO temp.pending(" COLS ") VALUES(?,?,?,?,?,?,?,?,?,?,?,"
                           "?,?,?,?,?,?,?,?,?,?,?,?,?,?)", -1, &ins, NULL) != SQLITE_OK) {
        snprintf(message, message_len, "reading the audit journal '%s': %s", jpath,
                 sqlite3_errmsg(db));
        goto out;
    }
    last = sqlite3_column_int64(st, 0);
    size_t off = 0;
    for (;;) {
        size_t at = off;
        rec r;
        char why[160] = "";
        int k = aj_decode(buf, len, &off, &r, why, sizeof why);
        if (k == AJ_CORRUPT) {
            snprintf(message, message_len, "the audit journal '%s' is damaged at byte %zu (%s); "
                     "'loom audit verify' says more", jpath, at, why);
            rc = -2;
            goto out;
        }
        if (k != AJ_RECORD)
            break;
        if (r.seq > last && insert_row(ins, &r) != 0) {
            snprintf(message, message_len, "reading the audit journal '%s': %s", jpath,
                     sqlite3_errmsg(db));
            goto out;
        }
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_finalize(ins);
    return rc;
}

int loom_audit_query(const char *path, const char *model, double since, const char *request_id,
                     FILE *out, char *message, size_t message_len)
{
    sqlite3 *db = NULL;
    if (message_len)
        message[0] = '\0';
    /* The journal first, then the database in one read transaction (as verify). */
    char *jpath = journal_path(path, "");
    unsigned char *jbuf = NULL;
    size_t jlen = 0;
    if (!jpath)
        return snprintf(message, message_len, "out of memory"), -1;
    int pending;
    for (int attempt = 0;; attempt++) {
        if (read_snapshot(path, jpath, &jbuf, &jlen, &db, message, message_len) != 0) {
            free(jpath);
            return -1;
        }
        pending = jlen > 0;
        int lp = 0;
        if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
            (pending && (lp = load_pending(db, jpath, jbuf, jlen, message, message_len)) != 0)) {
            if (!pending || !*message)
                snprintf(message, message_len, "audit database '%s': %s", path,
                         sqlite3_errmsg(db));
            sqlite3_close(db);
            free(jbuf);
            jbuf = NULL;
            if (lp == -2 && attempt < AUDIT_READ_RETRIES) {
                /* Perhaps a frame being written: read again (as verify). */
                usleep(2000);
                continue;
            }
            free(jpath);
            return -1;
        }
        break;
    }
    free(jbuf);
    free(jpath);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, pending ? "SELECT " COLS " FROM (SELECT " COLS " FROM main.audit "
                           "UNION ALL SELECT " COLS " FROM temp.pending) WHERE (?1 IS NULL OR "
                           "model = ?1) AND t_answer >= ?2 AND (?3 IS NULL OR request_id = ?3) "
                           "ORDER BY seq"
                           : "SELECT " COLS " FROM audit WHERE (?1 IS NULL OR model = ?1) AND "
                           "t_answer >= ?2 AND (?3 IS NULL OR request_id = ?3) ORDER BY seq", -1,
                           &st, NULL) != SQLITE_OK) {
        snprintf(message, message_len, "audit database '%s': %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    if (model)
        sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, since);
    if (request_id)
        sqlite3_bind_text(st, 3, request_id, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fputc('{', out);
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            fprintf(out, "%s\"%s\":", c ? "," : "", sqlite3_column_name(st, c));
            switch (sqlite3_column_type(st, c)) {
            case SQLITE_INTEGER:
                fprintf(out, "%lld", (long long)sqlite3_column_int64(st, c));
                break;
            case SQLITE_FLOAT: {
                double d = sqlite3_column_double(st, c);
                if (isfinite(d))
                    fprintf(out, "%.17g", d);
                else
                    fputs("null", out);
                break;
            }
            case SQLITE_NULL: fputs("null", out); break;
            default: {
                const char *t = (const char *)sqlite3_column_text(st, c);
                /* The QoS inputs are JSON already. */
                if (!strcmp(sqlite3_column_name(st, c), "qos") && t && *t == '{') {
                    fputs(t, out);
                    break;
                }
                fputc('"', out);
                for (; t && *t; t++) {
                    unsigned char ch = (unsigned char)*t;
                    if (ch == '"' || ch == '\\')
                        fprintf(out, "\\%c", ch);
                    else if (ch < 0x20)
                        fprintf(out, "\\u%04x", ch);
                    else
                        fputc(ch, out);
                }
                fputc('"', out);
            }
            }
        }
        fputs("}\n", out);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(message, message_len, "audit database '%s': %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_close(db);
    return 0;
}

int sv_audit_reseal(const char *path, const char *key_path)
{
    unsigned char key[1024];
    size_t key_len = 0;
    char err[700];
    sqlite3 *db;
    if (read_key(key_path, key, sizeof key, &key_len, err, sizeof err) != 0 ||
        open_db(path, 1, &db, err, sizeof err) != 0)
        return -1;
    sqlite3_stmt *st, *up;
    if (sqlite3_prepare_v2(db, "SELECT " COLS " FROM audit ORDER BY seq", -1, &st, NULL) !=
        SQLITE_OK)
        return sqlite3_close(db), -1;
    sqlite3_prepare_v2(db, "UPDATE audit SET prev_hash = ?, hash = ?, mac = ? WHERE seq = ?", -1,
                       &up, NULL);
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    char prev[65] = ZERO_HASH;
    int64_t last = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rec r;
        rec_read(st, &r);
        snprintf(r.prev_hash, sizeof r.prev_hash, "%s", prev);
        rec_seal(&r, key, key_len, NULL);
        sqlite3_reset(up);
        sqlite3_bind_text(up, 1, r.prev_hash, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(up, 2, r.hash, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(up, 3, r.mac, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(up, 4, r.seq);
        sqlite3_step(up);
        snprintf(prev, sizeof prev, "%s", r.hash);
        last = r.seq;
        rec_clear(&r);
    }
    sqlite3_finalize(st);
    sqlite3_finalize(up);
    char head[256];
    snprintf(head, sizeof head, "INSERT OR REPLACE INTO audit_meta(key, value) VALUES('head', "
             "'%lld %s')", (long long)last, prev);
    sqlite3_exec(db, head, NULL, NULL, NULL);
    int rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    sqlite3_close(db);
    return rc;
}
