/*
 * `loom audit verify DB [--key FILE]` and `loom audit query DB [--model M] [--since T]
 * [--request-id ID]`: check and read the audit trail `loom serve --audit DB` writes
 * (docs/serve.md, "Audit trail").
 */
#include <loom/loom.h>
#include <loom/serve.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"

static const char audit_help[] =
    "usage: loom audit verify DB [--key FILE]\n"
    "       loom audit query DB [--model M] [--since T] [--request-id ID]\n"
    "\n"
    "verify  checks the hash chain (and, with --key, each record's HMAC) of the audit\n"
    "        database that 'loom serve --audit DB' writes. Prints the number of records and\n"
    "        exits 0 when all verify; else names the first edited, deleted, inserted or\n"
    "        reordered record and exits 1.\n"
    "query   prints the records as JSON lines, in order: of model M, answered at or after T\n"
    "        (Unix seconds, or UTC YYYY-MM-DDTHH:MM:SS), with request id ID.\n"
    "Exit status 2 for bad usage or a database or key that cannot be read.\n";

static int audit_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int audit_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loom audit: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'loom audit --help')\n");
    va_end(ap);
    return 2;
}

/* Unix seconds, or a UTC date and time. */
static int parse_time(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s && !*end && !errno && v >= 0) {
        *out = v;
        return 1;
    }
    struct tm tm = {0};
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        rest = strptime(s, "%Y-%m-%d", &tm);
    if (!rest || (*rest && strcmp(rest, "Z")))
        return 0;
    *out = (double)timegm(&tm);
    return 1;
}

int cmd_audit(int argc, char **argv)
{
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        fputs(audit_help, stdout);
        return 0;
    }
    if (argc < 2)
        return audit_usage("%s", "wants 'verify DB' or 'query DB'");
    const char *what = argv[0], *db = argv[1];
    int verify = !strcmp(what, "verify");
    if (!verify && strcmp(what, "query"))
        return audit_usage("unknown subcommand '%s' (verify or query)", what);
    const char *key = NULL, *model = NULL, *rid = NULL;
    double since = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return audit_usage("unknown argument or missing value '%s'", a);
        if (verify && !strcmp(a, "--key"))
            key = v;
        else if (!verify && !strcmp(a, "--model"))
            model = v;
        else if (!verify && !strcmp(a, "--request-id"))
            rid = v;
        else if (!verify && !strcmp(a, "--since")) {
            if (!parse_time(v, &since))
                return audit_usage("--since wants Unix seconds or YYYY-MM-DDTHH:MM:SS, got '%s'",
                                   v);
        } else
            return audit_usage("unknown argument '%s'", a);
        i++;
    }
    char msg[1024];
    if (verify) {
        uint64_t count = 0;
        int rc = loom_audit_verify(db, key, &count, msg, sizeof msg);
        if (rc < 0) {
            fprintf(stderr, "loom audit: %s\n", msg);
            return 2;
        }
        if (rc > 0) {
            printf("FAILED: %s (%llu records verified before it)\n", msg,
                   (unsigned long long)count);
            return 1;
        }
        printf("OK: %s\n", msg);
        return 0;
    }
    if (loom_audit_query(db, model, since, rid, stdout, msg, sizeof msg) != 0) {
        fprintf(stderr, "loom audit: %s\n", msg);
        return 2;
    }
    return 0;
}
