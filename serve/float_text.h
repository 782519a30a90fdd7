/*
 * The text of a JSON number for a float32 or float64 value (serve/float_text.cc): the fewest
 * significant digits that read back to the same value, from Google's double-conversion
 * (Debian: libdouble-conversion-dev). 0.1f is written "0.1", not "0.100000001" as "%.9g" writes
 * it, so answers are smaller, and it costs a fraction of snprintf's time: the KServe v2 writer
 * (serve/kserve.c) calls it once per element of every JSON answer.
 */
#ifndef LOOM_SERVE_FLOAT_TEXT_H
#define LOOM_SERVE_FLOAT_TEXT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes that hold the text of any value with its NUL: the longest text is 24 characters
 * ("-2.2250738585072014e-308"; a float's is at most 15, "-1.17549435e-38"). */
#define SV_FLOAT_TEXT_MAX 32

/*
 * Write into BUF the shortest text that reads back to exactly V: with strtof when IS_F32 (V is
 * first rounded to float, which is exact for any float passed widened; a double beyond float's
 * range becomes an infinity), else with strtod. The
 * text is a valid JSON number: an optional '-', digits, and either a decimal point with digits
 * after it or an exponent ("1e-7", "1.5e30": no '+', no leading zeros in the exponent). Like
 * printf's %g with 9 (float) or 17 (double) digits, it is in decimal form when the decimal
 * exponent of its digits is from -4 up to 8 (float) or 16 (double) and in exponent form
 * otherwise, so it is never longer than "%.9g" or "%.17g" writes for the same value. -0 is
 * written "-0". NaN and both infinities, which JSON has no numbers for, are written "null".
 *
 * Always writes a NUL after the text. Returns the text's length without the NUL. CAP is the
 * size of BUF: SV_FLOAT_TEXT_MAX always suffices; when the text and its NUL do not fit in a
 * smaller CAP, writes only a NUL (when CAP > 0) and returns 0. Allocates nothing, cannot fail
 * otherwise, and may be called from any thread.
 */
size_t sv_float_text(double v, int is_f32, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* LOOM_SERVE_FLOAT_TEXT_H */
