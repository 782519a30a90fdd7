/*
 * The audit trail's record and its journal (serve/audit.c, serve/audit_journal.c).
 *
 * A server with `--audit DB` seals every answer's record on the worker that finished it and
 * appends it to the journal, the file DB + "-pending", before the answer leaves; a background
 * thread moves the journal's records into the SQLite database in large transactions and then
 * starts a fresh journal. The journal is a sequence of frames, each one record:
 *
 *   u32 magic "LAJ1" | u32 payload length | u64 check (FNV-1a-64 over its 8-byte words) | payload
 *
 * and the payload (native byte order: the journal is a local, transient file):
 *
 *   i64 seq, i64 segment, f64 t_submit, t_answer, confidence, latency_s, queue_s, run_s,
 *   then 17 strings, each u32 length | bytes | NUL: prev_hash, hash, mac and the 14 text fields
 *   in AJ_TEXT order.
 *
 * A frame cut short by a crash in the middle of its write() (it was never answered) is a torn
 * tail; a frame whose bytes do not match its checksum with frames after it is corruption.
 */
#ifndef LOOM_SERVE_AUDIT_JOURNAL_H
#define LOOM_SERVE_AUDIT_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

/* One record's fields, in the order they are hashed (serve/audit.c, rec_seal). */
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

#define AJ_N_TEXT 14
/* The I-th text field of R (0 <= I < AJ_N_TEXT): kind, request_id, model, version,
 * model_sha256, variant, path, qos, devices, plan, input_sha256, output_sha256, status,
 * message. */
char **aj_text(rec *r, int i);

/* Bytes the frame of R takes (NULL text fields count as ""). */
size_t aj_frame_size(rec *r);

/* Write R's frame into BUF, which holds aj_frame_size(R) bytes; returns that size. The
 * payload is written first and the header (magic, length, checksum) last, so BUF may be the
 * journal's own mapped zeros: a writer killed mid-frame leaves zeros where the header goes,
 * which readers take for the end. */
size_t aj_encode(rec *r, unsigned char *buf);

enum { AJ_RECORD = 1, AJ_END = 0, AJ_TORN = -1, AJ_CORRUPT = -2 };

/* Decode the frame at *OFF of BUF (LEN bytes) into R, whose text fields then point into BUF
 * (nothing allocated; BUF must outlive R's use and is not modified). Returns AJ_RECORD (and
 * advances *OFF past the frame), AJ_END at the end of BUF, AJ_TORN when the rest of BUF is
 * an incomplete last frame (cut short, or a last frame that does not check out, or zeros),
 * AJ_CORRUPT when the frame at *OFF is damaged and more follows it; then WHY (WHY_LEN bytes)
 * says how. */
int aj_decode(const unsigned char *buf, size_t len, size_t *off, rec *r, char *why,
              size_t why_len);

/* Read the whole file PATH into *BUF (malloc'd, owned by the caller; NULL when empty) and
 * *LEN. A missing file reads as empty. 0, or -1 (errno set) when it cannot be read. */
int aj_read_file(const char *path, unsigned char **buf, size_t *len);

/* Write into OUT (at least 32 bytes) exactly what snprintf's "%.17g" writes for V (the form a
 * record's numbers are hashed in), when V is in the range this does without printf: finite,
 * with a fraction, from 1e-6 to 2^53. Returns the length, or 0 (OUT "") for any other V. */
size_t aj_format_g17(double v, char *out);

#endif
