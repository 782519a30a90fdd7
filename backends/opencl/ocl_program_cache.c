/*
 * The OpenCL backend's on-disk cache of program binaries ($XDG_CACHE_HOME/loom/opencl, else
 * ~/.cache/loom/opencl): one file per program, named by a hash of its key (device, driver,
 * platform, source hash, build options), with a SHA-256 of the binary checked before any driver
 * sees it. Every failure leaves the cache off or the entry rebuilt, never an error.
 */
#include "ocl_internal.h"

#include <openssl/sha.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

void ocl_cache_dir_init(ocl_state *s)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char dir[900];
    if (xdg && *xdg)
        snprintf(dir, sizeof dir, "%s", xdg);
    else if (home && *home)
        snprintf(dir, sizeof dir, "%s/.cache", home);
    else
        return;
    /* mkdir -p DIR/loom/opencl: failures leave the cache off, never an error. */
    const char *parts[] = {"", "/loom", "/opencl"};
    char path[1024];
    path[0] = '\0';
    for (int i = 0; i < 3; i++) {
        size_t used = strlen(path);
        snprintf(path + used, sizeof path - used, "%s", i == 0 ? dir : parts[i]);
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return;
    }
    snprintf(s->cache_dir, sizeof s->cache_dir, "%s", path);
}

/* The cache key of a program of D: device, driver, platform, the hash of its source SRC and
 * its build options OPTS (one source gives a different binary per set of -D options). */
void ocl_cache_key(const ocl_device *d, const char *src, size_t src_len, const char *opts,
                   char *key, size_t len, char *file, size_t file_len, const char *dir)
{
    char drv[128] = "";
    ocl_dev_string(d->id, CL_DRIVER_VERSION, drv, sizeof drv);
    uint64_t hs = fnv1a(0xcbf29ce484222325ull, src, src_len);
    snprintf(key, len, "%s|%s|%s|%016llx|%s", d->info.name, drv, d->platform_version,
             (unsigned long long)hs, opts);
    uint64_t hk = fnv1a(0xcbf29ce484222325ull, key, strlen(key));
    snprintf(file, file_len, "%s/%016llx.bin", dir, (unsigned long long)hk);
}

/* A cache entry: magic, key length (u32), key, body length (u64), SHA-256 of the body (32
 * bytes), body. The checksum is verified before a driver sees the body: a driver handed a
 * damaged binary may abort the process (PoCL asserts). Entries of the earlier format
 * (LOOMCLB1, no checksum) are stale and rebuilt without a word. */
static const char k_cache_magic[8] = {'L', 'O', 'O', 'M', 'C', 'L', 'B', '2'};
static const char k_cache_magic_v1[8] = {'L', 'O', 'O', 'M', 'C', 'L', 'B', '1'};

/* The cached binary under KEY in FILE, built for D with OPTS; NULL when absent or unusable
 * (then rebuilt), with V->corrupt saying why when the entry is damaged. */
cl_program ocl_cache_load(const ocl_device *d, const char *key, const char *file,
                          const char *opts, ocl_cache_verdict *v)
{
    v->corrupt = NULL;
    FILE *f = fopen(file, "rb");
    if (!f)
        return NULL;
    cl_program prog = NULL;
    char magic[8], stored[1024];
    uint32_t klen = 0;
    uint64_t blen = 0;
    unsigned char *bin = NULL, sum[SHA256_DIGEST_LENGTH], want[SHA256_DIGEST_LENGTH];
    if (fread(magic, 1, 8, f) != 8) {
        v->corrupt = "truncated header";
        goto out;
    }
    if (memcmp(magic, k_cache_magic_v1, 8) == 0)
        goto out;
    if (memcmp(magic, k_cache_magic, 8) != 0) {
        v->corrupt = "not a Loom cache entry";
        goto out;
    }
    if (fread(&klen, sizeof klen, 1, f) != 1 || klen >= sizeof stored ||
        fread(stored, 1, klen, f) != klen) {
        v->corrupt = "damaged header";
        goto out;
    }
    stored[klen] = '\0';
    if (strcmp(stored, key) != 0)
        goto out;
    if (fread(&blen, sizeof blen, 1, f) != 1 || blen == 0 || blen > ((uint64_t)256 << 20) ||
        fread(want, 1, sizeof want, f) != sizeof want) {
        v->corrupt = "damaged header";
        goto out;
    }
    bin = malloc(blen);
    if (!bin)
        goto out;
    if (fread(bin, 1, blen, f) != blen) {
        v->corrupt = "truncated body";
        goto out;
    }
    if (fgetc(f) != EOF) {
        v->corrupt = "trailing bytes";
        goto out;
    }
    if (!SHA256(bin, blen, sum) || memcmp(sum, want, sizeof sum) != 0) {
        v->corrupt = "checksum mismatch";
        goto out;
    }
    size_t len = blen;
    const unsigned char *bp = bin;
    cl_int bst = CL_SUCCESS, e = CL_SUCCESS;
    prog = clCreateProgramWithBinary(d->context, 1, &d->id, &len, &bp, &bst, &e);
    if (prog && (e != CL_SUCCESS || bst != CL_SUCCESS ||
                 clBuildProgram(prog, 1, &d->id, opts, NULL, NULL) != CL_SUCCESS)) {
        clReleaseProgram(prog);
        prog = NULL;
    }
    if (!prog)
        v->corrupt = "the driver refused the binary";
out:
    free(bin);
    fclose(f);
    return prog;
}

/* Write PROG's binary to FILE through a temporary file and a rename (readers never see half). */
void ocl_cache_store(cl_program prog, const char *key, const char *file)
{
    size_t len = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof len, &len, NULL) != CL_SUCCESS ||
        !len)
        return;
    unsigned char *bin = malloc(len);
    if (!bin)
        return;
    unsigned char *bins[1] = {bin}, sum[SHA256_DIGEST_LENGTH];
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", file, (long)getpid());
    FILE *f = NULL;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) == CL_SUCCESS &&
        SHA256(bin, len, sum) && (f = fopen(tmp, "wb")) != NULL) {
        uint32_t klen = (uint32_t)strlen(key);
        uint64_t blen = len;
        int ok = fwrite(k_cache_magic, 1, 8, f) == 8 && fwrite(&klen, sizeof klen, 1, f) == 1 &&
                 fwrite(key, 1, klen, f) == klen && fwrite(&blen, sizeof blen, 1, f) == 1 &&
                 fwrite(sum, 1, sizeof sum, f) == sizeof sum && fwrite(bin, 1, len, f) == len;
        ok = (fclose(f) == 0) && ok;
        if (!ok || rename(tmp, file) != 0)
            unlink(tmp);
    }
    free(bin);
}

