/*
 * The audit trail's number text (serve internal): a double exactly as printf("%.17g") writes
 * it, without printf. Every real field of an audit record is hashed in this form (the record
 * format fixed by the first databases), and printf's exact conversion was the costliest part
 * of sealing a record.
 */
#ifndef LOOM_SERVE_AUDIT_NUM_H
#define LOOM_SERVE_AUDIT_NUM_H

#include <stddef.h>

/* Write V into BUF (at least 32 bytes) as "%.17g" does in the C locale under the default
 * rounding mode, byte for byte, NUL-terminated; returns the length. Values whose conversion
 * does not fit the exact 128-bit integer path (below 1e-6 or from 2^52 up, infinities, NaN,
 * subnormals, -0) are handed to snprintf. Cannot fail. */
size_t sv_audit_g17(char *buf, double v);

#endif
