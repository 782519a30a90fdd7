/*
 * Small pieces the `loom` subcommands share: one-line error messages, the exit status of a
 * failure (one rule for every command), option values, byte counts for people, closing an
 * output file so that a write error is not lost, and a name -> index lookup for big graphs.
 */
#ifndef LOOM_TOOLS_UTIL_H
#define LOOM_TOOLS_UTIL_H

#include <loom/loom.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Exit statuses of every command (DESIGN.md, "The `loom` command"). */
#define TOOL_EXIT_OK 0
#define TOOL_EXIT_RUNTIME 1
#define TOOL_EXIT_USAGE 2

/* Print "PREFIX: MESSAGE" as one line on stderr: newlines inside MESSAGE (the library's
 * messages may hold some) become spaces. */
void tool_vsay(const char *prefix, const char *fmt, va_list ap);

/* What a command was doing when a library call failed, for tool_exit_status. */
typedef enum tool_phase {
    TOOL_LOADING,  /* reading what the user named: a model, an input file, an instance */
    TOOL_PLANNING, /* placing the model on the devices asked for */
    TOOL_RUNNING,  /* running it, measuring it */
} tool_phase;

/* The exit status for STATUS returned while doing PHASE; the one rule every command follows:
 * 0 for LOOM_OK; 2 (bad usage or bad input) for LOOM_ERR_INVALID_ARGUMENT in any phase, and for
 * LOOM_ERR_UNSUPPORTED and LOOM_ERR_IO while loading (an unknown op, opset, dtype or rank, a file
 * that cannot be read: the user's file is at fault); 1 (runtime failure) for everything else
 * (out of memory, a device lost, nothing able to run a node while planning or running, an
 * internal error). */
int tool_exit_status(loom_status status, tool_phase phase);

/* The exit status for a file or folder the user named as an output that could not be written,
 * from ERRNO: 2 when the path itself is at fault (missing or uncreatable folder, not a folder,
 * no permission, read-only file system, a symlink refused, name too long); 1 when the system
 * failed while writing (disk full, quota, file too large, I/O error, out of memory). docs/run.md
 * states the rule. */
int tool_write_exit_status(int err);

/* The value of option ARGV[*I]: ARGV[*I + 1], with *I advanced past it. NULL when there is
 * none or the next argument is itself an option ("--device -o DIR" must not make "-o" the
 * device): a word starting with '-' other than "-" alone or a negative number. The caller then
 * says "option NAME needs a value". */
const char *tool_option_value(int argc, char **argv, int *i);

/* Backend options (`--backend-option BACKEND:KEY=VALUE`, repeatable) and the CPU thread count
 * (`--cpu-threads N`) of every command that starts a runtime. main() takes them out of ARGV
 * before the command parses the rest: tool_backend_options_take removes each "--backend-option
 * VALUE" pair (and "--backend-option=VALUE") from ARGV[0..*ARGC), keeping the strings (borrowed
 * from ARGV, which lives as long as the process), and each "--cpu-threads N" (the last one
 * counts). Returns 1, or 0 after printing what is wrong ("loom CMD: option --backend-option
 * needs a value", "--cpu-threads wants a thread count from 1 to 1024, got 'x'"; the caller
 * exits 2). */
int tool_backend_options_take(const char *cmd, int *argc, char **argv);

/* 1 when the command line said `--cpu-threads auto` (only loom serve and loom loadgen accept
 * it) and the command has not yet chosen; the command measures (serve_lanes.h) and gives its
 * choice to tool_cpu_threads_set (0: one thread per core), which every later
 * tool_runtime_create then uses. */
int tool_cpu_threads_auto(void);
void tool_cpu_threads_set(uint32_t threads);

/* loom_runtime_create with BASE (NULL: defaults) and the backend options and CPU thread count
 * taken from the command line (BASE's cpu_threads, when set, wins). A bad option fails with
 * LOOM_ERR_INVALID_ARGUMENT naming it (exit 2 by tool_exit_status). */
loom_status tool_runtime_create(const loom_runtime_options *base, loom_runtime **out);

/* The exit status of a tool_runtime_create failure STATUS: 2 (bad usage) when a backend option
 * was at fault (LOOM_ERR_INVALID_ARGUMENT with the runtime's "backend option '...'" message),
 * else 1 (the runtime could not start), as before options existed. Call it before any other
 * library call changes loom_last_error. */
int tool_runtime_exit_status(loom_status status);

/* The option text for --help: "  --backend-option BACKEND:KEY=VALUE ..." and
 * "  --cpu-threads N|auto ..." (a paragraph each). */
extern const char tool_backend_option_help[];

/* B bytes as "512 B", "12.5 KiB" or "3.0 MiB" into BUF (LEN bytes); returns BUF. */
const char *tool_bytes_text(double b, char *buf, size_t len);

/* Close F (always) and say whether everything written to it reached the file: 1 yes; 0 no,
 * with errno set (EIO when the stream's error flag was all there was to go on). */
int tool_close(FILE *f);

/* An output file written whole or not at all, like loom_tensor_save_npy writes .npy files: the
 * bytes go to a new temporary file in the target's folder (O_EXCL, mode 0666 less the umask),
 * which tool_out_commit checks, syncs and renames over the target. A symbolic link, folder or
 * device at the target is refused (errno ELOOP, EISDIR, EINVAL), never followed. */
typedef struct tool_out {
    FILE *f;        /* write here between open and commit */
    const char *path;
    char tmp[4400];
} tool_out;

/* Why an output could not be written, from the errno of tool_out_open/commit: the refusals in
 * words ("it is a symbolic link (refused, not followed)"), else strerror(ERR). */
const char *tool_out_error_text(int err);

/* Start writing PATH (borrowed until commit or abort). Returns O->f, or NULL with errno set. */
FILE *tool_out_open(tool_out *o, const char *path);

/* Finish: flush, check, fsync, close and rename over the target. 1 on success; 0 with errno
 * set, the temporary file removed and the target untouched. */
int tool_out_commit(tool_out *o);

/* Give up: close and remove the temporary file (errno kept). */
void tool_out_abort(tool_out *o);

/* NAMES sorted, for lookups in O(log n): the profile of a 200,000-node graph matches the nodes
 * of two plans, and of a plan and its graph, by name. The strings are borrowed: they must
 * outlive the index. */
typedef struct tool_name_entry {
    const char *name;
    size_t index;
} tool_name_entry;

typedef struct tool_name_index {
    tool_name_entry *entries;
    size_t n;
} tool_name_index;

/* Index NAMES[N] (NULL entries are left out) into *IX, freed with tool_name_index_free.
 * Returns 1, or 0 when out of memory (*IX then empty: every lookup misses). */
int tool_name_index_build(tool_name_index *ix, const char *const *names, size_t n);

/* The smallest index I with NAMES[I] equal to NAME (as a linear scan would find it), or -1. */
long tool_name_index_find(const tool_name_index *ix, const char *name);

void tool_name_index_free(tool_name_index *ix);

#endif /* LOOM_TOOLS_UTIL_H */
