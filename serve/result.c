/*
 * Tensors (copies, slices along the batch axis), results, and outputs as one cache blob.
 */
#include "server_internal.h"

#include "core/core_internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *sv_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- tensors: shapes, copies, slices ----------------------------------------------------- */

loom_tensor *sv_tensor_copy(const loom_tensor *t)
{
    int64_t dims[LOOM_MAX_RANK];
    loom_tensor_dims(t, dims);
    loom_tensor *c;
    if (loom_tensor_create_uninit(loom_tensor_dtype(t), loom_tensor_rank(t), dims, &c) != LOOM_OK)
        return NULL;
    memcpy(loom_tensor_data(c), loom_tensor_data(t), loom_tensor_nbytes(t));
    return c;
}

/* Copy ROWS rows along AXIS from SRC starting at row SRC_ROW into DST at DST_ROW. Both have the
 * same shape except along AXIS. SRC NULL: zero those rows of DST (a batch's padding). */
void sv_copy_rows(loom_tensor *dst, int64_t dst_row, const loom_tensor *src, int64_t src_row,
                      int64_t rows, uint32_t axis)
{
    int64_t dd[LOOM_MAX_RANK], sd[LOOM_MAX_RANK];
    loom_tensor_dims(dst, dd);
    loom_tensor_dims(src ? src : dst, sd);
    uint32_t rank = loom_tensor_rank(dst);
    size_t es = loom_dtype_size(loom_tensor_dtype(dst));
    size_t outer = 1, inner = es;
    for (uint32_t k = 0; k < axis; k++)
        outer *= (size_t)dd[k];
    for (uint32_t k = axis + 1; k < rank; k++)
        inner *= (size_t)dd[k];
    char *d = loom_tensor_data(dst);
    const char *s = src ? loom_tensor_data(src) : NULL;
    for (size_t o = 0; o < outer; o++) {
        char *to = d + (o * (size_t)dd[axis] + (size_t)dst_row) * inner;
        if (s)
            memcpy(to, s + (o * (size_t)sd[axis] + (size_t)src_row) * inner, (size_t)rows * inner);
        else
            memset(to, 0, (size_t)rows * inner);
    }
}

loom_tensor *sv_tensor_with_rows(const loom_tensor *like, uint32_t axis, int64_t rows)
{
    int64_t dims[LOOM_MAX_RANK];
    loom_tensor_dims(like, dims);
    dims[axis] = rows;
    loom_tensor *t;
    if (loom_tensor_create_uninit(loom_tensor_dtype(like), loom_tensor_rank(like), dims, &t) !=
        LOOM_OK)
        return NULL;
    return t;
}

/* ---- results ----------------------------------------------------------------------------- */

/* A result and everything it points to but its output tensors, in one allocation: the strings
 * and the output arrays follow the struct. Only the message is ever replaced afterwards
 * (sv_result_fail); the replacement is held here and freed with the result. */
typedef struct result_block {
    loom_serve_result pub; /* first: a result's pointer is its block's */
    char *replaced_message;
} result_block;

loom_serve_result *sv_result_make(const sv_result_text *t, const sv_model *m, loom_tensor **outs)
{
    const char *str[8] = {t->message, t->id, t->model, t->version,
                          t->devices, t->variant, t->path, t->qos};
    size_t len[8], n_out = outs ? m->n_out : 0;
    size_t size = sizeof(result_block) + n_out * (sizeof(loom_tensor *) + sizeof(char *));
    for (int i = 0; i < 8; i++)
        size += (len[i] = strlen(str[i] ? str[i] : "")) + 1;
    for (size_t k = 0; k < n_out; k++)
        size += strlen(m->out[k].name) + 1;
    result_block *b = malloc(size);
    if (!b)
        return NULL;
    memset(b, 0, sizeof *b);
    loom_serve_result *r = &b->pub;
    char *at = (char *)(b + 1);
    if (n_out) {
        r->n_outputs = n_out;
        r->outputs = (loom_tensor **)at;
        at += n_out * sizeof(loom_tensor *);
        r->output_names = (const char **)at;
        at += n_out * sizeof(char *);
        for (size_t k = 0; k < n_out; k++) {
            size_t nl = strlen(m->out[k].name) + 1;
            r->outputs[k] = outs[k];
            memcpy(at, m->out[k].name, nl);
            r->output_names[k] = at;
            at += nl;
        }
    }
    const char **field[8] = {&r->message, &r->id, &r->model, &r->version,
                             &r->devices, &r->variant, &r->path, &r->qos};
    for (int i = 0; i < 8; i++) {
        memcpy(at, str[i] ? str[i] : "", len[i] + 1);
        *field[i] = at;
        at += len[i] + 1;
    }
    r->code = t->code;
    r->confidence = -1;
    return r;
}

loom_serve_result *sv_result_new(const sv_model *m, const char *model_name, const char *id,
                                 loom_serve_code code, const char *message)
{
    sv_result_text t = {.code = code, .message = message, .id = id,
                        .model = m ? m->name : model_name, .version = m ? m->version : ""};
    return sv_result_make(&t, NULL, NULL);
}

void sv_result_fail(loom_serve_result *r, const char *message)
{
    for (size_t k = 0; k < r->n_outputs; k++)
        loom_tensor_destroy(r->outputs[k]);
    r->n_outputs = 0;
    r->code = LOOM_SERVE_FAILED;
    char *msg = sv_strdup(message);
    if (msg) { /* out of memory: the old message stays, the code says it failed */
        result_block *b = (result_block *)r;
        free(b->replaced_message);
        b->replaced_message = msg;
        r->message = msg;
    }
}

void loom_serve_result_free(loom_serve_result *r)
{
    if (!r)
        return;
    for (size_t k = 0; k < r->n_outputs; k++)
        loom_tensor_destroy(r->outputs[k]);
    free(((result_block *)r)->replaced_message);
    free(r);
}

/* Outputs as one blob for the cache: per output dtype, rank, dims, byte count, data. */
sv_blob *sv_outputs_to_blob(loom_tensor *const *outs, size_t n)
{
    size_t size = sizeof(uint64_t);
    for (size_t k = 0; k < n; k++)
        size += 2 * sizeof(uint32_t) + (LOOM_MAX_RANK + 1) * sizeof(int64_t) +
                ((loom_tensor_nbytes(outs[k]) + 7) & ~(size_t)7);
    sv_blob *b = sv_blob_new(size);
    if (!b)
        return NULL;
    unsigned char *p = b->data;
    uint64_t count = n;
    memcpy(p, &count, sizeof count);
    p += sizeof count;
    for (size_t k = 0; k < n; k++) {
        uint32_t head[2] = {(uint32_t)loom_tensor_dtype(outs[k]), loom_tensor_rank(outs[k])};
        int64_t dims[LOOM_MAX_RANK + 1] = {0};
        loom_tensor_dims(outs[k], dims);
        dims[LOOM_MAX_RANK] = (int64_t)loom_tensor_nbytes(outs[k]);
        memcpy(p, head, sizeof head);
        p += sizeof head;
        memcpy(p, dims, sizeof dims);
        p += sizeof dims;
        memcpy(p, loom_tensor_data(outs[k]), (size_t)dims[LOOM_MAX_RANK]);
        p += ((size_t)dims[LOOM_MAX_RANK] + 7) & ~(size_t)7;
    }
    return b;
}

/* New tensors from BLOB into OUTS[N]; 0, or -1 (none left allocated). */
int sv_blob_to_outputs(const sv_blob *b, loom_tensor **outs, size_t n)
{
    const unsigned char *p = b->data;
    uint64_t count;
    memcpy(&count, p, sizeof count);
    p += sizeof count;
    if (count != n)
        return -1;
    for (size_t k = 0; k < n; k++) {
        uint32_t head[2];
        int64_t dims[LOOM_MAX_RANK + 1];
        memcpy(head, p, sizeof head);
        p += sizeof head;
        memcpy(dims, p, sizeof dims);
        p += sizeof dims;
        if (loom_tensor_create((loom_dtype)head[0], head[1], dims, &outs[k]) != LOOM_OK) {
            for (size_t j = 0; j < k; j++)
                loom_tensor_destroy(outs[j]);
            return -1;
        }
        memcpy(loom_tensor_data(outs[k]), p, (size_t)dims[LOOM_MAX_RANK]);
        p += ((size_t)dims[LOOM_MAX_RANK] + 7) & ~(size_t)7;
    }
    return 0;
}

