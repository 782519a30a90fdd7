/*
 * Small pieces the `loom` subcommands share: one-line error messages, byte counts for people,
 * and closing an output file so that a write error is not lost.
 */
#ifndef LOOM_TOOLS_UTIL_H
#define LOOM_TOOLS_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Print "PREFIX: MESSAGE" as one line on stderr: newlines inside MESSAGE (the library's
 * messages may hold some) become spaces. */
void tool_vsay(const char *prefix, const char *fmt, va_list ap);

/* B bytes as "512 B", "12.5 KiB" or "3.0 MiB" into BUF (LEN bytes); returns BUF. */
const char *tool_bytes_text(double b, char *buf, size_t len);

/* Close F (always) and say whether everything written to it reached the file: 1 yes; 0 no,
 * with errno set (EIO when the stream's error flag was all there was to go on). */
int tool_close(FILE *f);

#endif /* LOOM_TOOLS_UTIL_H */
