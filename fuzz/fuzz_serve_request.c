/*
 * libFuzzer target for the KServe v2 request parser of `loom serve` (serve/kserve.c) and the
 * response writer it feeds. Input: one byte of mode, then for the binary extension two bytes
 * (little-endian) of Inference-Header-Content-Length, then the body. The model has an FP32
 * input x [-1, 3], an INT64 input ids [-1, 2] and a BOOL input m [-1]. A parsed request is
 * answered with its own inputs as outputs (names of the model's), exercising the writer with
 * the output selection and binary flags the request asked for.
 */
#include <loom/loom.h>

#include "serve/serve_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const loom_serve_tensor_info inputs[] = {
    {.name = "x", .dtype = LOOM_DTYPE_F32, .rank = 2, .dims = {-1, 3}},
    {.name = "ids", .dtype = LOOM_DTYPE_I64, .rank = 2, .dims = {-1, 2}},
    {.name = "m", .dtype = LOOM_DTYPE_BOOL, .rank = 1, .dims = {-1}},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t header_len = 0;
    int binary = data[0] & 1;
    data++;
    size--;
    if (binary) {
        if (size < 2)
            return 0;
        header_len = (size_t)data[0] | ((size_t)data[1] << 8);
        data += 2;
        size -= 2;
        if (header_len == 0)
            header_len = 1;
    }
    /* A copy of exactly SIZE bytes, so reads past the body are caught. */
    char *body = malloc(size ? size : 1);
    if (!body)
        return 0;
    memcpy(body, data, size);
    sv_parsed p;
    char err[512];
    if (sv_kserve_parse(body, size, header_len, inputs, 3, &p, err, sizeof err) == 0) {
        const char *names[3];
        for (size_t k = 0; k < p.n_inputs; k++)
            names[k] = p.input_names[k];
        loom_serve_result r = {.code = LOOM_SERVE_OK, .message = "", .id = p.id, .model = "m",
                               .version = "1", .n_outputs = p.n_inputs, .outputs = p.inputs,
                               .output_names = names};
        char *out;
        size_t len, hl;
        if (sv_kserve_response(&r, &p, &out, &len, &hl, err, sizeof err) == 0) {
            if (hl > len)
                abort();
            free(out);
        }
        sv_parsed_free(&p);
    } else if (!err[0]) {
        abort(); /* a refusal always says why */
    }
    free(body);
    return 0;
}
