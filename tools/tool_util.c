/* Shared helpers of the `loom` subcommands (tool_util.h). */
#include "tool_util.h"

#include <errno.h>

void tool_vsay(const char *prefix, const char *fmt, va_list ap)
{
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n')
            *p = ' ';
    fprintf(stderr, "%s: %s\n", prefix, buf);
}

const char *tool_bytes_text(double b, char *buf, size_t len)
{
    if (b < 1024)
        snprintf(buf, len, "%.0f B", b);
    else if (b < 1024.0 * 1024)
        snprintf(buf, len, "%.1f KiB", b / 1024);
    else
        snprintf(buf, len, "%.1f MiB", b / (1024.0 * 1024));
    return buf;
}

int tool_close(FILE *f)
{
    int bad = ferror(f);
    int e = errno;
    if (fclose(f) != 0 || bad) {
        if (bad)
            errno = e ? e : EIO;
        return 0;
    }
    return 1;
}
