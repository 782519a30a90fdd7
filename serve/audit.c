/*
 * The audit trail: one record per answered request in an SQLite database (WAL mode,
 * synchronous NORMAL, or FULL on request), hash-chained (each record's SHA-256 covers the previous record's hash and
 * its own fields) and, with a key, HMAC-SHA-256'd so that a chain recomputed without the key
 * is detected as well. A writer thread commits the records queued by the workers in batches
 * (one transaction each) and only then delivers their answers: an answer that was sent has
 * its record on disk. A head row (audit_meta) names the last record, so records deleted at the
 * end are seen too. docs/serve.md, "Audit trail", says what a crash can lose.
 */
#include "server_internal.h"

#include <math.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* One record's fields, in the order they are hashed. */
typedef struct rec {
    int64_t seq, segment;
    char *kind, *request_id;
    double t_submit, t_answer;
    char *model, *version, *model_sha256, *variant, *path, *qos;
    double confidence;
    char *devices, *plan, *input_sha256, *output_sha256;
    double latency_s, queue_s, run_s;
    char *status, *message;
    char prev_hash[65], hash[65], mac[65];
} rec;

#define N_TEXT 14
static char **rec_text(rec *r, int i)
{
    char **f[N_TEXT] = {&r->kind, &r->request_id, &r->model, &r->version, &r->model_sha256,
                        &r->variant, &r->path, &r->qos, &r->devices, &r->plan, &r->input_sha256,
                        &r->output_sha256, &r->status, &r->message};
    return f[i];
}

static void rec_clear(rec *r)
{
    for (int i = 0; i < N_TEXT; i++) {
        free(*rec_text(r, i));
        *rec_text(r, i) = NULL;
    }
}

typedef struct item {
    struct item *next;
    rec r;
    loom_server *s;
    loom_serve_result *res;
    loom_serve_done_fn done;
    void *user;
} item;

struct sv_audit {
    sqlite3 *db;
    sqlite3_stmt *ins, *head, *begin, *end; /* prepared once: BEGIN IMMEDIATE, COMMIT */
    EVP_MD_CTX *md;          /* the writer's, reused for every record */
    unsigned char key[1024];
    size_t key_len;
    int64_t seq, segment;    /* the last record's */
    char last_hash[65];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item *head_q, *tail_q;
    size_t queued;           /* items in head_q */
    int idle;                /* the writer waits for the first item: wake it on one */
    int stop;
    pthread_t writer;
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

/* The canonical form hashed for a field: "NAME:LEN:VALUE\n" (unchanged since the first record
 * format; built without printf because it runs ~25 times per record). */
static void put_str(EVP_MD_CTX *c, const char *name, const char *v)
{
    char head[96];
    v = v ? v : "";
    size_t nl = strlen(name), vl = strlen(v);
    if (nl > 64)
        nl = 64;
    memcpy(head, name, nl);
    head[nl] = ':';
    size_t w = nl + 1 + put_u64(head + nl + 1, vl);
    head[w++] = ':';
    EVP_DigestUpdate(c, head, w);
    EVP_DigestUpdate(c, v, vl);
    EVP_DigestUpdate(c, "\n", 1);
}

/* A number as "%.17g" writes it; integral values below 2^53 (sequence numbers, segments, a
 * confidence of 0 or 1) take the exact same digits without printf. */
static void put_num(EVP_MD_CTX *c, const char *name, double v)
{
    char buf[64];
    if (v >= 0 && v < 9007199254740992.0 && v == floor(v) && !(v == 0 && signbit(v)))
        buf[put_u64(buf, (uint64_t)v)] = '\0';
    else
        snprintf(buf, sizeof buf, "%.17g", v);
    put_str(c, name, buf);
}

/* HASH = SHA-256(prev_hash, seq, segment, every field); MAC = HMAC(key, HASH) or "". */
/* C: a digest context to reuse (the writer's), or NULL for one made for this call. */
static void rec_seal(rec *r, const unsigned char *key, size_t key_len, EVP_MD_CTX *reuse)
{
    static const char *const names[N_TEXT] = {"kind", "request_id", "model", "version",
                                              "model_sha256", "variant", "path", "qos",
                                              "devices", "plan", "input_sha256",
                                              "output_sha256", "status", "message"};
    EVP_MD_CTX *c = reuse ? reuse : EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned mdl = 0;
    if (c && EVP_DigestInit_ex(c, sha256(), NULL) == 1) {
        put_str(c, "prev", r->prev_hash);
        put_num(c, "seq", (double)r->seq);
        put_num(c, "segment", (double)r->segment);
        for (int i = 0; i < N_TEXT; i++)
            put_str(c, names[i], *rec_text(r, i));
        put_num(c, "t_submit", r->t_submit);
        put_num(c, "t_answer", r->t_answer);
        put_num(c, "confidence", r->confidence);
        put_num(c, "latency_s", r->latency_s);
        put_num(c, "queue_s", r->queue_s);
        put_num(c, "run_s", r->run_s);
        EVP_DigestFinal_ex(c, md, &mdl);
    }
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

/* SHA-256 over tensors: per tensor its name, dtype, shape and bytes. */
static void tensors_sha(char out[65], loom_tensor *const *t, const char *const *names, size_t n)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned mdl = 0;
    if (c && EVP_DigestInit_ex(c, sha256(), NULL) == 1) {
        for (size_t k = 0; k < n; k++) {
            const char *nm = names && names[k] ? names[k] : "";
            EVP_DigestUpdate(c, nm, strlen(nm) + 1);
            int64_t head[2 + LOOM_MAX_RANK] = {0};
            head[0] = loom_tensor_dtype(t[k]);
            head[1] = loom_tensor_rank(t[k]);
            loom_tensor_dims(t[k], head + 2);
            EVP_DigestUpdate(c, head, sizeof head);
            EVP_DigestUpdate(c, loom_tensor_data(t[k]), loom_tensor_nbytes(t[k]));
        }
        EVP_DigestFinal_ex(c, md, &mdl);
    }
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
    /* One thread at a time uses a connection (the opener, then the writer thread only). */
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
    static const int text_cols[N_TEXT] = {2, 3, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 20, 21};
    for (int i = 0; i < N_TEXT; i++)
        *rec_text(r, i) = col_text(st, text_cols[i]);
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
    char message[600];       /* about the first bad record */
    int last_ok;             /* the latest segment verifies */
    int64_t last_seq, last_segment;
    char last_hash[65];
} verdict;

static void bad(verdict *v, int64_t seq, int *seg_bad, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void bad(verdict *v, int64_t seq, int *seg_bad, const char *fmt, ...)
{
    *seg_bad = 1;
    if (v->first_bad)
        return;
    v->first_bad = seq ? seq : -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->message, sizeof v->message, fmt, ap);
    va_end(ap);
}

/* Records the server re-checks when it opens a database (the chain's tail and the head):
 * the full pass is `loom audit verify`'s, and would make start-up grow with the database. */
#define AUDIT_OPEN_TAIL 10000

/* Walk the records in order: every one (TAIL 0), or the last TAIL, taking the first of them
 * as given. A segment record after a break starts the chain afresh from the hash it names
 * (the break stays reported). */
static int verify_db(sqlite3 *db, const unsigned char *key, size_t key_len, int64_t tail,
                     verdict *v)
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
    char expect_prev[65] = ZERO_HASH;
    int64_t expect_seq = 1;
    int seg_bad = 0, rc, first = 1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        rec r;
        rec_read(st, &r);
        if (first && from > 0) {
            /* The window's first record is taken as the chain's start. */
            snprintf(expect_prev, sizeof expect_prev, "%s", r.prev_hash);
            expect_seq = r.seq;
        }
        first = 0;
        int is_segment = r.kind && !strcmp(r.kind, "segment");
        if (seg_bad && is_segment) {
            /* A new segment, started after a break: verify from here. */
            seg_bad = 0;
            snprintf(expect_prev, sizeof expect_prev, "%s", r.prev_hash);
            expect_seq = r.seq;
        }
        if (!seg_bad) {
            char stored[65], mac[65];
            snprintf(stored, sizeof stored, "%s", r.hash);
            snprintf(mac, sizeof mac, "%s", r.mac);
            if (r.seq != expect_seq)
                bad(v, r.seq, &seg_bad, "record %lld: expected record %lld here: %s",
                    (long long)r.seq, (long long)expect_seq,
                    r.seq > expect_seq ? "records were deleted" : "records were reordered or "
                                                                  "inserted");
            else if (strcmp(r.prev_hash, expect_prev))
                bad(v, r.seq, &seg_bad, "record %lld: does not follow record %lld (a record was "
                    "deleted, inserted or reordered)", (long long)r.seq, (long long)r.seq - 1);
            if (!seg_bad) {
                rec_seal(&r, key, key_len, NULL);
                if (strcmp(r.hash, stored))
                    bad(v, r.seq, &seg_bad, "record %lld: edited (its hash does not match its "
                        "fields)", (long long)r.seq);
                else if (key_len && strcmp(r.mac, mac))
                    bad(v, r.seq, &seg_bad, "record %lld: its MAC does not match (the chain was "
                        "recomputed without the key, or the key is wrong)", (long long)r.seq);
            }
            if (!seg_bad)
                v->count++;
            snprintf(expect_prev, sizeof expect_prev, "%s", stored);
        }
        expect_seq = r.seq + 1;
        v->last_seq = r.seq;
        v->last_segment = r.segment;
        snprintf(v->last_hash, sizeof v->last_hash, "%s", r.hash);
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
                bad(v, v->last_seq + 1, &seg_bad, "the head record of the database is "
                    "malformed");
            else if (hs != v->last_seq || strcmp(hh, v->last_hash))
                bad(v, hs > v->last_seq ? v->last_seq + 1 : hs, &seg_bad,
                    "the database's head names record %lld but the last record is %lld: %s", hs,
                    (long long)v->last_seq, hs > v->last_seq ? "records at the end were deleted"
                                                             : "records were added past it");
        } else if (v->last_seq > 0) {
            bad(v, 1, &seg_bad, "the database has records but no head");
        }
        sqlite3_finalize(st);
    }
    v->last_ok = !seg_bad;
    return 0;
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

/* ---- the writer -------------------------------------------------------------------------- */

static int insert(sv_audit *a, rec *r)
{
    r->seq = ++a->seq;
    r->segment = a->segment;
    snprintf(r->prev_hash, sizeof r->prev_hash, "%s", a->last_hash);
    rec_seal(r, a->key, a->key_len, a->md);
    sqlite3_stmt *st = a->ins;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, r->seq);
    sqlite3_bind_int64(st, 2, r->segment);
    static const int text_cols[N_TEXT] = {2, 3, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 20, 21};
    for (int i = 0; i < N_TEXT; i++) {
        const char *t = *rec_text(r, i);
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
    /* SQLITE_STATIC: R outlives the step; the bindings are cleared before R is freed. */
    int done = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (!done) {
        a->seq--;
        return -1;
    }
    snprintf(a->last_hash, sizeof a->last_hash, "%s", r->hash);
    return 0;
}

static int set_head(sv_audit *a)
{
    char v[128];
    snprintf(v, sizeof v, "%lld %s", (long long)a->seq, a->last_hash);
    sqlite3_reset(a->head);
    sqlite3_bind_text(a->head, 1, v, -1, SQLITE_TRANSIENT);
    int done = sqlite3_step(a->head) == SQLITE_DONE;
    sqlite3_reset(a->head);
    return done ? 0 : -1;
}

/* Append the records of LIST in one transaction; 0, or -1 (nothing appended). */
static int commit(sv_audit *a, item *list)
{
    int64_t seq0 = a->seq;
    char hash0[65];
    snprintf(hash0, sizeof hash0, "%s", a->last_hash);
    int ok = sqlite3_step(a->begin) == SQLITE_DONE;
    sqlite3_reset(a->begin);
    for (item *it = list; ok && it; it = it->next)
        ok = insert(a, &it->r) == 0;
    ok = ok && set_head(a) == 0;
    ok = ok && sqlite3_step(a->end) == SQLITE_DONE;
    sqlite3_reset(a->end);
    if (!ok) {
        sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
        a->seq = seq0;
        snprintf(a->last_hash, sizeof a->last_hash, "%s", hash0);
    }
    return ok ? 0 : -1;
}

/* Group commit. Each transaction costs far more than a record (the WAL frames, the head row,
 * a checkpoint now and then), so under load the writer gathers records for a short while
 * before committing them together: when records arrived while it committed the previous
 * group (the server is busy), it waits up to AUDIT_GROUP_WAIT_NS or AUDIT_GROUP_MAX records.
 * An idle server's record is committed at once. */
#define AUDIT_GROUP_WAIT_NS 500000L
#define AUDIT_GROUP_MAX 256

static void *writer_main(void *arg)
{
    sv_audit *a = arg;
    int busy = 0;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        a->idle = 1;
        while (!a->head_q && !a->stop)
            pthread_cond_wait(&a->cv, &a->mu);
        a->idle = 0;
        if (busy && !a->stop && a->queued < AUDIT_GROUP_MAX) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += AUDIT_GROUP_WAIT_NS;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            while (!a->stop && a->queued < AUDIT_GROUP_MAX &&
                   pthread_cond_timedwait(&a->cv, &a->mu, &until) == 0) {
            }
        }
        if (!a->head_q)
            break;
        item *list = a->head_q;
        a->head_q = a->tail_q = NULL;
        a->queued = 0;
        pthread_mutex_unlock(&a->mu);
        int ok = commit(a, list) == 0;
        char msg[512] = "";
        if (!ok)
            snprintf(msg, sizeof msg, "the audit trail could not be written (%s): the answer is "
                     "withheld", sqlite3_errmsg(a->db));
        while (list) {
            item *next = list->next;
            loom_serve_result *res = list->res;
            if (!ok && res) {
                /* No record, no answer: the request fails instead. */
                for (size_t k = 0; k < res->n_outputs; k++) {
                    loom_tensor_destroy(res->outputs[k]);
                    free((char *)res->output_names[k]);
                }
                res->n_outputs = 0;
                res->code = LOOM_SERVE_FAILED;
                free((char *)res->message);
                res->message = sv_strdup(msg);
            }
            list->done(res, list->user);
            sv_server_finished(list->s);
            rec_clear(&list->r);
            free(list);
            list = next;
        }
        pthread_mutex_lock(&a->mu);
        busy = a->head_q != NULL;
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void sv_audit_deliver(sv_audit *a, loom_server *s, const sv_req *r, const figures *f,
                      loom_serve_result *res, loom_serve_done_fn done, void *user)
{
    item *it = calloc(1, sizeof *it);
    if (!it) {
        /* Out of memory: the request fails rather than going unrecorded. */
        res->code = LOOM_SERVE_FAILED;
        for (size_t k = 0; k < res->n_outputs; k++) {
            loom_tensor_destroy(res->outputs[k]);
            free((char *)res->output_names[k]);
        }
        res->n_outputs = 0;
        done(res, user);
        sv_server_finished(s);
        return;
    }
    const sv_model *m = r->model;
    rec *x = &it->r;
    double now = wall_now();
    char in_sha[65], out_sha[65] = "";
    const char *in_names[64];
    for (size_t k = 0; k < m->n_in && k < 64; k++)
        in_names[k] = m->in[k].name;
    tensors_sha(in_sha, r->inputs, in_names, m->n_in < 64 ? m->n_in : 64);
    if (res->n_outputs)
        tensors_sha(out_sha, res->outputs, res->output_names, res->n_outputs);
    x->kind = sv_strdup("answer");
    x->request_id = sv_strdup(r->id ? r->id : "");
    x->t_answer = now;
    x->t_submit = now - res->total_s;
    x->model = sv_strdup(m->name);
    x->version = sv_strdup(m->version);
    x->model_sha256 = sv_strdup(m->sha256);
    x->variant = sv_strdup(res->variant ? res->variant : "");
    x->path = sv_strdup(res->path ? res->path : "");
    x->qos = sv_strdup(r->qos ? r->qos : "");
    x->confidence = res->confidence;
    x->devices = sv_strdup(res->devices ? res->devices : "");
    x->plan = sv_strdup(f && f->plan_id ? f->plan_id : "");
    x->input_sha256 = sv_strdup(in_sha);
    x->output_sha256 = sv_strdup(out_sha);
    x->latency_s = res->total_s;
    x->queue_s = res->queue_s;
    x->run_s = res->run_s;
    x->status = sv_strdup(loom_serve_code_name(res->code));
    x->message = sv_strdup(res->message ? res->message : "");
    it->s = s;
    it->res = res;
    it->done = done;
    it->user = user;
    pthread_mutex_lock(&a->mu);
    if (a->tail_q)
        a->tail_q->next = it;
    else
        a->head_q = it;
    a->tail_q = it;
    a->queued++;
    if (a->idle || a->queued >= AUDIT_GROUP_MAX)
        pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

loom_status sv_audit_open(const char *path, const char *key_path, int new_segment,
                          int sync_full, sv_audit **out)
{
    *out = NULL;
    char err[700];
    sv_audit *a = calloc(1, sizeof *a);
    if (!a)
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    if (read_key(key_path, a->key, sizeof a->key, &a->key_len, err, sizeof err) != 0) {
        free(a);
        return sv_error(LOOM_ERR_INVALID_ARGUMENT, "%s", err);
    }
    if (open_db(path, 1, &a->db, err, sizeof err) != 0) {
        free(a);
        return sv_error(LOOM_ERR_IO, "%s", err);
    }
    if (!sync_full)
        sqlite3_exec(a->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    /* Checkpoint the WAL into the database every ~16 MB rather than every 4 MB: fewer
     * checkpoints (each one syncs) for the same pages. */
    sqlite3_exec(a->db, "PRAGMA wal_autocheckpoint=4000", NULL, NULL, NULL);
    a->md = EVP_MD_CTX_new();
    if (!a->md) {
        sv_audit_close(a);
        return sv_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    verdict v;
    if (verify_db(a->db, a->key, a->key_len, AUDIT_OPEN_TAIL, &v) != 0) {
        snprintf(err, sizeof err, "audit database '%s': %s", path, sqlite3_errmsg(a->db));
        sv_audit_close(a);
        return sv_error(LOOM_ERR_IO, "%s", err);
    }
    a->seq = v.last_seq;
    a->segment = v.last_segment ? v.last_segment : 1;
    snprintf(a->last_hash, sizeof a->last_hash, "%s", v.last_hash);
    loom_status st = LOOM_OK;
    if (sqlite3_prepare_v2(a->db, "INSERT INTO audit(" COLS ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,"
                           "?,?,?,?,?,?,?,?,?,?,?,?)", -1, &a->ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(a->db, "INSERT OR REPLACE INTO audit_meta(key, value) VALUES('head',"
                           " ?)", -1, &a->head, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(a->db, "BEGIN IMMEDIATE", -1, &a->begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(a->db, "COMMIT", -1, &a->end, NULL) != SQLITE_OK) {
        snprintf(err, sizeof err, "audit database '%s': %s", path, sqlite3_errmsg(a->db));
        st = sv_error(LOOM_ERR_IO, "%s", err);
    } else if (!v.last_ok && !new_segment) {
        st = sv_error(LOOM_ERR_INVALID_ARGUMENT, "audit database '%s': the chain is broken at "
                      "%s; refusing to append (start a new segment to go on)", path, v.message);
    } else if (!v.last_ok) {
        /* A new segment, recorded: it follows the last record as it is now. */
        item it = {0};
        a->segment++;
        it.r.kind = sv_strdup("segment");
        char msg[800];
        snprintf(msg, sizeof msg, "new segment: the chain was broken at %s", v.message);
        it.r.message = sv_strdup(msg);
        it.r.status = sv_strdup("segment");
        it.r.t_submit = it.r.t_answer = wall_now();
        if (commit(a, &it) != 0) {
            snprintf(err, sizeof err, "audit database '%s': %s", path, sqlite3_errmsg(a->db));
            st = sv_error(LOOM_ERR_IO, "%s", err);
        }
        rec_clear(&it.r);
    }
    if (st == LOOM_OK) {
        pthread_mutex_init(&a->mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&a->cv, &ca);
        pthread_condattr_destroy(&ca);
        a->started = 1;
        if (pthread_create(&a->writer, NULL, writer_main, a) != 0) {
            a->started = 0;
            pthread_mutex_destroy(&a->mu);
            pthread_cond_destroy(&a->cv);
            st = sv_error(LOOM_ERR_INTERNAL, "cannot start the audit writer thread");
        }
    }
    if (st != LOOM_OK) {
        sv_audit_close(a);
        return st;
    }
    *out = a;
    return LOOM_OK;
}

void sv_audit_close(sv_audit *a)
{
    if (!a)
        return;
    if (a->started) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->writer, NULL);
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
    }
    sqlite3_finalize(a->ins);
    sqlite3_finalize(a->head);
    sqlite3_finalize(a->begin);
    sqlite3_finalize(a->end);
    sqlite3_close(a->db);
    EVP_MD_CTX_free(a->md);
    free(a);
}

/* ---- the public verify and query --------------------------------------------------------- */

int loom_audit_verify(const char *path, const char *key_path, uint64_t *count, char *message,
                      size_t message_len)
{
    unsigned char key[1024];
    size_t key_len = 0;
    sqlite3 *db = NULL;
    *count = 0;
    if (read_key(key_path, key, sizeof key, &key_len, message, message_len) != 0)
        return -1;
    if (open_db(path, 0, &db, message, message_len) != 0)
        return -1;
    verdict v;
    if (verify_db(db, key, key_len, 0, &v) != 0) {
        snprintf(message, message_len, "audit database '%s': %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_close(db);
    *count = v.count;
    if (v.first_bad) {
        snprintf(message, message_len, "%s", v.message);
        return 1;
    }
    snprintf(message, message_len, "%llu records verified%s", (unsigned long long)v.count,
             key_len ? " (hash chain and MACs)" : " (hash chain; no key: MACs not checked)");
    return 0;
}

int loom_audit_query(const char *path, const char *model, double since, const char *request_id,
                     FILE *out, char *message, size_t message_len)
{
    sqlite3 *db = NULL;
    if (open_db(path, 0, &db, message, message_len) != 0)
        return -1;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT " COLS " FROM audit WHERE (?1 IS NULL OR model = ?1) AND "
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
