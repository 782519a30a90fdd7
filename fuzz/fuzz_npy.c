/*
 * libFuzzer target for the .npy reader: any bytes in a file given to loom_tensor_load_npy must
 * give a tensor or an error, never a crash, a leak, undefined behaviour or an allocation the file
 * cannot back (run.sh caps malloc, so a header that claims gigabytes and is believed fails).
 * The reader takes a path, so each input is written to one temporary file of this process.
 * Built and run by fuzz/run.sh.
 */
#include <loom/core.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The process's temporary file: created on first use, removed at exit. */
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
        snprintf(tmp_path, sizeof tmp_path, "%s/loom-fuzz-npy-XXXXXX.npy",
                 dir && *dir ? dir : "/tmp");
        tmp_fd = mkstemps(tmp_path, 4);
        if (tmp_fd < 0)
            abort();
        atexit(remove_tmp);
    }
    if (ftruncate(tmp_fd, 0) != 0 || pwrite(tmp_fd, data, size, 0) != (ssize_t)size)
        abort();
    loom_tensor *t = NULL;
    if (loom_tensor_load_npy(tmp_path, &t) == LOOM_OK) {
        /* A tensor read must be whole: touch every byte. */
        volatile unsigned char sum = 0;
        const unsigned char *p = loom_tensor_data(t);
        for (size_t i = 0; i < loom_tensor_nbytes(t); i++)
            sum ^= p[i];
        (void)sum;
        loom_tensor_destroy(t);
    }
    return 0;
}
