/*
 * What the ONNX importer (onnx_import.c) and the TensorProto reader (tensor_pb.c) share: the
 * dtype mapping, reading a whole file, and decoding one TensorProto (typed fields, raw_data or
 * external data) into a dense buffer. Not a public header.
 */
#ifndef LOOM_GRAPH_ONNX_INTERNAL_H
#define LOOM_GRAPH_ONNX_INTERNAL_H

#include <loom/graph.h>

#include "onnx.pb-c.h"

#include <stddef.h>
#include <stdint.h>

/* The Loom dtype of ONNX element type T, or LOOM_DTYPE_UNDEFINED when Loom lacks it. */
loom_dtype onnx_dtype_from_onnx(int32_t t);

/* ONNX's name of element type T ("double", "string"), for messages. */
const char *onnx_onnx_type_name(int32_t t);

/* Read the whole file PATH into *DATA (malloc'd, freed by the caller) and *SIZE. Fails with
 * LOOM_ERR_IO naming PATH and the system's reason. */
loom_status onnx_read_file(const char *path, void **data, size_t *size);

/* Where a tensor comes from, for messages and for external data. */
typedef struct onnx_source {
    const char *file;     /* the model or .pb file as the user named it, prefixing messages */
    const char *base_dir; /* where external data files are looked up; NULL: "." */
} onnx_source;

/* A decoded tensor: dense, C order, little-endian; DATA is malloc'd (at least one byte, so an
 * empty tensor still has a pointer) and owned by whoever received it. */
typedef struct onnx_tensor {
    loom_dtype dtype;
    uint32_t rank;
    int64_t dims[LOOM_MAX_RANK];
    void *data;
    size_t nbytes;
} onnx_tensor;

/* Decode T (WHAT names it in messages, e.g. "initializer 'w'"). Fails with LOOM_ERR_UNSUPPORTED
 * for a dtype Loom lacks (named), LOOM_ERR_INVALID_ARGUMENT for a malformed tensor or external
 * data that is missing, unsafe or too short, LOOM_ERR_OUT_OF_MEMORY. Messages start with
 * SRC->file. */
loom_status onnx_tensor_decode(const Onnx__TensorProto *t, const onnx_source *src, const char *what,
                             onnx_tensor *out);

/* Copy SRC into DST (CAP bytes, always NUL-terminated; cut short when full) with what a terminal
 * would act on escaped as \xNN: C0 controls, DEL, C1 controls (U+0080 to U+009F) and bytes that
 * are not valid UTF-8. Other UTF-8 and backslashes pass as they are, so escaping twice changes
 * nothing. Returns DST. Every message the importer builds from a model's strings goes through
 * it (model names must not reach a terminal raw). */
char *onnx_escape(char *dst, size_t cap, const char *src);

/* loom_set_error with the formatted message escaped by onnx_escape; returns ST. */
loom_status onnx_error(loom_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* IEEE half and bfloat16 bits from a float (round to nearest even). */
uint16_t onnx_f32_to_f16(float f);
uint16_t onnx_f32_to_bf16(float f);

#endif /* LOOM_GRAPH_ONNX_INTERNAL_H */
