/*
 * Tensors (copies, slices along the batch axis), results, and outputs as one cache blob.
 */
#include "server_internal.h"

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
    if (loom_tensor_create(loom_tensor_dtype(t), loom_tensor_rank(t), dims, &c) != LOOM_OK)
        return NULL;
    memcpy(loom_tensor_data(c), loom_tensor_data(t), loom_tensor_nbytes(t));
    return c;
}

/* Copy ROWS rows along AXIS from SRC starting at row SRC_ROW into DST at DST_ROW. Both have the
 * same shape except along AXIS. */
void sv_copy_rows(loom_tensor *dst, int64_t dst_row, const loom_tensor *src, int64_t src_row,
                      int64_t rows, uint32_t axis)
{
    int64_t dd[LOOM_MAX_RANK], sd[LOOM_MAX_RANK];
    loom_tensor_dims(dst, dd);
    loom_tensor_dims(src, sd);
    uint32_t rank = loom_tensor_rank(dst);
    size_t es = loom_dtype_size(loom_tensor_dtype(dst));
    size_t outer = 1, inner = es;
    for (uint32_t k = 0; k < axis; k++)
        outer *= (size_t)dd[k];
    for (uint32_t k = axis + 1; k < rank; k++)
        inner *= (size_t)dd[k];
    char *d = loom_tensor_data(dst);
    const char *s = loom_tensor_data(src);
    for (size_t o = 0; o < outer; o++)
        memcpy(d + (o * (size_t)dd[axis] + (size_t)dst_row) * inner,
               s + (o * (size_t)sd[axis] + (size_t)src_row) * inner, (size_t)rows * inner);
}

loom_tensor *sv_tensor_with_rows(const loom_tensor *like, uint32_t axis, int64_t rows)
{
    int64_t dims[LOOM_MAX_RANK];
    loom_tensor_dims(like, dims);
    dims[axis] = rows;
    loom_tensor *t;
    if (loom_tensor_create(loom_tensor_dtype(like), loom_tensor_rank(like), dims, &t) != LOOM_OK)
        return NULL;
    return t;
}

/* ---- results ----------------------------------------------------------------------------- */

loom_serve_result *sv_result_new(const sv_model *m, const char *model_name, const char *id,
                                     loom_serve_code code, const char *message)
{
    loom_serve_result *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->code = code;
    r->message = sv_strdup(message ? message : "");
    r->id = sv_strdup(id ? id : "");
    r->model = sv_strdup(m ? m->name : model_name ? model_name : "");
    r->version = sv_strdup(m ? m->version : "");
    r->devices = sv_strdup("");
    r->variant = sv_strdup("");
    r->path = sv_strdup("");
    r->qos = sv_strdup("");
    r->confidence = -1;
    if (!r->message || !r->id || !r->model || !r->version || !r->devices || !r->variant ||
        !r->path || !r->qos) {
        loom_serve_result_free(r);
        return NULL;
    }
    return r;
}

/* Give R the outputs OUTS (ownership taken, even on failure). Returns 0 or -1. */
int sv_result_set_outputs(loom_serve_result *r, const sv_model *m, loom_tensor **outs)
{
    r->outputs = calloc(m->n_out, sizeof *r->outputs);
    r->output_names = calloc(m->n_out, sizeof *r->output_names);
    if (!r->outputs || !r->output_names) {
        for (size_t k = 0; k < m->n_out; k++)
            loom_tensor_destroy(outs[k]);
        return -1;
    }
    r->n_outputs = m->n_out;
    int ok = 0;
    for (size_t k = 0; k < m->n_out; k++) {
        r->outputs[k] = outs[k];
        r->output_names[k] = sv_strdup(m->out[k].name);
        if (!r->output_names[k])
            ok = -1;
    }
    return ok;
}

void loom_serve_result_free(loom_serve_result *r)
{
    if (!r)
        return;
    for (size_t k = 0; k < r->n_outputs; k++) {
        if (r->outputs)
            loom_tensor_destroy(r->outputs[k]);
        if (r->output_names)
            free((char *)r->output_names[k]);
    }
    free(r->outputs);
    free(r->output_names);
    free((char *)r->message);
    free((char *)r->id);
    free((char *)r->model);
    free((char *)r->version);
    free((char *)r->devices);
    free((char *)r->variant);
    free((char *)r->path);
    free((char *)r->qos);
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

