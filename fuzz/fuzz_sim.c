/*
 * libFuzzer target for `loom sim` instances (DESIGN.md, "Abstract DAG instances"): any bytes as
 * INSTANCE.json must give a schedule or one error line (exit status 1 or 2), never a crash, a
 * leak, undefined behaviour or a hang. The instance parser lives in the command itself
 * (tools/cmd_sim.c), which run.sh compiles into this target: each input is written to a
 * temporary file and placed by the command with a list policy (HEFT or PEFT, chosen by the
 * input's length), so placement of strange instances (huge costs, overflowing makespans) is
 * fuzzed too. The report goes to stdout, which run.sh closes.
 */
#include "tools/commands.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char tmp_path[256];
static int tmp_fd = -1;

static void remove_tmp(void)
{
    if (tmp_fd >= 0)
        unlink(tmp_path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (tmp_fd < 0) {
        const char *dir = getenv("TMPDIR");
        snprintf(tmp_path, sizeof tmp_path, "%s/loom-fuzz-sim-XXXXXX.json",
                 dir && *dir ? dir : "/tmp");
        tmp_fd = mkstemps(tmp_path, 5);
        if (tmp_fd < 0)
            abort();
        atexit(remove_tmp);
    }
    if (ftruncate(tmp_fd, 0) != 0 || pwrite(tmp_fd, data, size, 0) != (ssize_t)size)
        abort();
    char *argv[] = {tmp_path, "--policy", size % 2 ? "peft" : "heft", NULL};
    int rc = cmd_sim(3, argv);
    if (rc < 0 || rc > 2)
        abort(); /* the documented exit statuses are 0, 1 and 2 */
    return 0;
}
