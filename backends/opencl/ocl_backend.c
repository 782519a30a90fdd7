/*
 * The OpenCL backend's table: devices of every platform the ICD loader lists, their memory as
 * opaque addresses backed by cl_mem blocks, one in-order queue per device, the program of
 * kernels built per device at first use (binary cached on disk), execute/submit, and the
 * test-only failure injection of LOOM_FAULT. Written against loom/backend.h only, as a
 * third-party plugin would be; GEMMs go to CLBlast (ocl_kernels.c).
 */
#include "ocl_backend.h"
#include "ocl_internal.h"

#include <CL/cl_ext.h>
#include <openssl/sha.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Released cl_mem kept for reuse per device, in bytes. */
#define OCL_POOL_BYTES ((size_t)256 << 20)

static const char *const k_kernel_names[OCL_K_COUNT] = {
    "where_uchar", "where_ushort", "where_uint", "where_ulong",
    "copy_uchar", "copy_ushort", "copy_uint", "copy_ulong",
    "gather_uchar", "gather_ushort", "gather_uint", "gather_ulong",
    "cast_any", "softmax_f32", "layernorm_f32", "batchnorm_f32", "reduce_f32", "reduce_rows_f32",
    "pool_f32",
    "im2col_f32", "bias_channel_f32", "scale_f32", "noop",
};

static const char *const k_ew_names[OCL_EW_COUNT] = {"ew_flat", "ew_vec4", "ew_bcast"};

/* ---- messages ------------------------------------------------------------------------------ */

const char *ocl_error_name(cl_int code)
{
    switch (code) {
#define E(x) case x: return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_BUILD_PROGRAM_FAILURE) E(CL_INVALID_VALUE) E(CL_INVALID_DEVICE) E(CL_INVALID_CONTEXT)
    E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_BINARY)
    E(CL_INVALID_BUILD_OPTIONS) E(CL_INVALID_PROGRAM) E(CL_INVALID_PROGRAM_EXECUTABLE)
    E(CL_INVALID_KERNEL_NAME) E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX) E(CL_INVALID_ARG_VALUE)
    E(CL_INVALID_ARG_SIZE) E(CL_INVALID_KERNEL_ARGS) E(CL_INVALID_WORK_DIMENSION)
    E(CL_INVALID_WORK_GROUP_SIZE) E(CL_INVALID_WORK_ITEM_SIZE) E(CL_INVALID_GLOBAL_OFFSET)
    E(CL_INVALID_EVENT_WAIT_LIST) E(CL_INVALID_EVENT) E(CL_INVALID_OPERATION)
    E(CL_INVALID_BUFFER_SIZE) E(CL_INVALID_GLOBAL_WORK_SIZE) E(CL_MISALIGNED_SUB_BUFFER_OFFSET)
    E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST) E(CL_INVALID_PLATFORM)
    E(CL_PLATFORM_NOT_FOUND_KHR)
#undef E
    default: return "unknown OpenCL error";
    }
}

int ocl_reason(char *reason, size_t len, const char *fmt, ...)
{
    if (reason && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, len, fmt, ap);
        va_end(ap);
    }
    return 0;
}

static loom_status fail(char *err, size_t err_len, loom_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static loom_status fail(char *err, size_t err_len, loom_status st, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return st;
}

static void host_log(const ocl_state *s, loom_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void host_log(const ocl_state *s, loom_log_level level, const char *fmt, ...)
{
    if (!s->have_host || !s->host.log)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s->host.log(s->host.host_ctx, level, buf);
}

loom_status ocl_run_fail(ocl_run *r, loom_status status, const char *fmt, ...)
{
    if (r->err && r->err_len) {
        char msg[384];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(r->err, r->err_len, "opencl:%u: node '%s' (%s): %s", r->d->index, r->k->name,
                 r->k->op_name, msg);
    }
    return status;
}

static loom_status cl_status(cl_int code)
{
    switch (code) {
    case CL_OUT_OF_HOST_MEMORY:
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
        return LOOM_ERR_OUT_OF_MEMORY;
    case CL_INVALID_VALUE:
    case CL_INVALID_BUFFER_SIZE:
        return LOOM_ERR_INVALID_ARGUMENT;
    default:
        return LOOM_ERR_DEVICE_LOST;
    }
}

/* ---- failure injection ------------------------------------------------------------------- */

/* LOOM_FAULT=opencl:KIND:N[,opencl:KIND:N...]; entries of other backends are ignored. */
static void parse_faults(ocl_state *s)
{
    const char *env = getenv("LOOM_FAULT");
    if (!env || !*env)
        return;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", env);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char kind[32];
        long n;
        if (sscanf(tok, "opencl:%31[a-z]:%ld", kind, &n) != 2 || n < 1) {
            if (!strncmp(tok, "opencl:", 7))
                host_log(s, LOOM_LOG_WARNING, "LOOM_FAULT entry '%s' ignored (opencl:enqueue|"
                         "build|alloc:N with N >= 1)", tok);
            continue;
        }
        if (!strcmp(kind, "enqueue"))
            s->faults.enqueue_at = n;
        else if (!strcmp(kind, "build"))
            s->faults.build_at = n;
        else if (!strcmp(kind, "alloc"))
            s->faults.alloc_at = n;
        else
            host_log(s, LOOM_LOG_WARNING, "LOOM_FAULT kind '%s' unknown (enqueue, build, alloc)",
                     kind);
    }
}

/* Whether this event of a kind (counter C, fault at AT) is the one to fail. */
static int fault_hits(atomic_long *c, long at)
{
    if (at <= 0)
        return 0;
    return atomic_fetch_add(c, 1) + 1 == at;
}

/* ---- device discovery ---------------------------------------------------------------------- */

static void dev_string(cl_device_id id, cl_device_info what, char *out, size_t len)
{
    out[0] = '\0';
    size_t got = 0;
    if (clGetDeviceInfo(id, what, len, out, &got) != CL_SUCCESS)
        out[0] = '\0';
    out[len - 1] = '\0';
    /* Drivers pad names with spaces. */
    size_t n = strlen(out);
    while (n && (out[n - 1] == ' ' || out[n - 1] == '\n'))
        out[--n] = '\0';
}

static int has_extension(const char *exts, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = exts; (p = strstr(p, name)) != NULL; p += n)
        if ((p == exts || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    return 0;
}

#ifndef CL_DEVICE_PCI_BUS_ID_NV
#define CL_DEVICE_PCI_BUS_ID_NV 0x4008
#define CL_DEVICE_PCI_SLOT_ID_NV 0x4009
#endif
#ifndef CL_DEVICE_PCI_DOMAIN_ID_NV
#define CL_DEVICE_PCI_DOMAIN_ID_NV 0x400A
#endif

static void describe(ocl_device *d, cl_platform_id plat)
{
    loom_device_info *info = &d->info;
    memset(info, 0, sizeof *info);
    info->abi_version = LOOM_ABI_VERSION;
    info->struct_size = sizeof *info;
    cl_device_id id = d->id;
    dev_string(id, CL_DEVICE_NAME, info->name, sizeof info->name);
    cl_device_type type = 0;
    clGetDeviceInfo(id, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    info->kind = type & CL_DEVICE_TYPE_GPU   ? LOOM_DEVICE_GPU
                 : type & CL_DEVICE_TYPE_CPU ? LOOM_DEVICE_CPU
                                             : LOOM_DEVICE_OTHER;
    cl_uint cu = 0, clock = 0, vec = 0;
    clGetDeviceInfo(id, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
    clGetDeviceInfo(id, CL_DEVICE_MAX_CLOCK_FREQUENCY, sizeof clock, &clock, NULL);
    clGetDeviceInfo(id, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT, sizeof vec, &vec, NULL);
    info->compute_units = cu;
    info->threads = cu;
    cl_ulong mem = 0, max_alloc = 0, local = 0;
    clGetDeviceInfo(id, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
    clGetDeviceInfo(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    clGetDeviceInfo(id, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
    info->memory_bytes = mem;
    info->numa_node = -1;
    info->host_visible = 0; /* addressed only through upload/download, even when unified */
    /* A rough peak: a fused multiply-add per lane per cycle. CPU devices: the native vector
     * width is the lane count; GPUs: 64 lanes per compute unit, the common figure. */
    double lanes = info->kind == LOOM_DEVICE_GPU ? 64.0 : (vec ? (double)vec : 1.0);
    info->peak_flops_f32 = (double)cu * clock * 1e6 * 2.0 * lanes;
    info->max_alloc_bytes = max_alloc;
    info->local_memory_bytes = local;
    info->clock_mhz = clock;
    char exts[8192];
    dev_string(id, CL_DEVICE_EXTENSIONS, exts, sizeof exts);
    info->has_fp16 = (uint32_t)has_extension(exts, "cl_khr_fp16");
    cl_device_fp_config fp64 = 0;
    clGetDeviceInfo(id, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp64, &fp64, NULL);
    info->has_fp64 = has_extension(exts, "cl_khr_fp64") || fp64 != 0;
    info->peak_flops_f16 = info->has_fp16 && info->kind == LOOM_DEVICE_GPU
                               ? 2.0 * info->peak_flops_f32
                               : 0.0;
    cl_bool unified = CL_FALSE;
    clGetDeviceInfo(id, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof unified, &unified, NULL);
    info->unified_memory = unified == CL_TRUE || (type & CL_DEVICE_TYPE_CPU);
    info->shares_host_cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
    info->in_order = 1; /* one in-order command queue per device */
    if (has_extension(exts, "cl_khr_device_uuid")) {
        unsigned char uuid[CL_UUID_SIZE_KHR];
        if (clGetDeviceInfo(id, CL_DEVICE_UUID_KHR, sizeof uuid, uuid, NULL) == CL_SUCCESS)
            for (int i = 0; i < CL_UUID_SIZE_KHR; i++)
                snprintf(info->uuid + 2 * i, sizeof info->uuid - 2 * (size_t)i, "%02x", uuid[i]);
    }
    if (has_extension(exts, "cl_khr_pci_bus_info")) {
        cl_device_pci_bus_info_khr pci;
        if (clGetDeviceInfo(id, CL_DEVICE_PCI_BUS_INFO_KHR, sizeof pci, &pci, NULL) ==
            CL_SUCCESS)
            snprintf(info->pci_bus, sizeof info->pci_bus, "%04x:%02x:%02x.%x",
                     pci.pci_domain & 0xffff, pci.pci_bus & 0xff, pci.pci_device & 0x1f,
                     pci.pci_function & 0x7);
    } else if (has_extension(exts, "cl_nv_device_attribute_query")) {
        cl_uint bus = 0, slot = 0, domain = 0;
        if (clGetDeviceInfo(id, CL_DEVICE_PCI_BUS_ID_NV, sizeof bus, &bus, NULL) == CL_SUCCESS &&
            clGetDeviceInfo(id, CL_DEVICE_PCI_SLOT_ID_NV, sizeof slot, &slot, NULL) ==
                CL_SUCCESS) {
            clGetDeviceInfo(id, CL_DEVICE_PCI_DOMAIN_ID_NV, sizeof domain, &domain, NULL);
            snprintf(info->pci_bus, sizeof info->pci_bus, "%04x:%02x:%02x.%x", domain & 0xffff,
                     bus & 0xff, (slot >> 3) & 0x1f, slot & 0x7);
        }
    }
    char pname[64] = "", drv[64] = "";
    clGetPlatformInfo(plat, CL_PLATFORM_NAME, sizeof pname, pname, NULL);
    pname[sizeof pname - 1] = '\0';
    dev_string(id, CL_DRIVER_VERSION, drv, sizeof drv);
    snprintf(info->driver, sizeof info->driver, "%.40s %.22s", pname, drv);
    clGetPlatformInfo(plat, CL_PLATFORM_VERSION, sizeof d->platform_version,
                      d->platform_version, NULL);
    d->platform_version[sizeof d->platform_version - 1] = '\0';
    size_t wg = 0;
    clGetDeviceInfo(id, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
    d->max_wg = wg ? wg : 1;
}

/* Create the context and queue of device ID; 0 on success, else logs why. */
static int device_open(ocl_state *s, ocl_device *d, cl_platform_id plat, cl_device_id id)
{
    cl_int e;
    d->platform = plat;
    d->id = id;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)plat, 0};
    d->context = clCreateContext(props, 1, &id, NULL, NULL, &e);
    if (!d->context) {
        host_log(s, LOOM_LOG_WARNING, "opencl: a device cannot start (clCreateContext: %s); "
                 "skipped", ocl_error_name(e));
        return -1;
    }
    d->queue = clCreateCommandQueue(d->context, id, 0, &e);
    if (!d->queue) {
        host_log(s, LOOM_LOG_WARNING, "opencl: a device cannot start (clCreateCommandQueue: "
                 "%s); skipped", ocl_error_name(e));
        clReleaseContext(d->context);
        d->context = NULL;
        return -1;
    }
    describe(d, plat);
    pthread_mutex_init(&d->lock, NULL);
    pthread_rwlock_init(&d->blocks_lock, NULL);
    return 0;
}

static void device_close(ocl_device *d)
{
    if (!d->context)
        return;
    if (d->queue)
        clFinish(d->queue);
    for (int k = 0; k < OCL_K_COUNT; k++)
        if (d->kernels[k])
            clReleaseKernel(d->kernels[k]);
    if (d->program)
        clReleaseProgram(d->program);
    for (size_t v = 0; v < d->n_variants; v++) {
        for (int k = 0; k < OCL_EW_COUNT; k++)
            clReleaseKernel(d->variants[v].kernels[k]);
        clReleaseProgram(d->variants[v].program);
    }
    free(d->variants);
    for (size_t i = 0; i < d->n_blocks; i++) {
        clReleaseMemObject(d->blocks[i].mem);
        munmap((void *)d->blocks[i].base, d->blocks[i].span);
    }
    for (size_t i = 0; i < d->n_pool; i++)
        clReleaseMemObject(d->pool[i]);
    free(d->blocks);
    free(d->pool);
    free(d->pool_size);
    if (d->queue)
        clReleaseCommandQueue(d->queue);
    clReleaseContext(d->context);
    pthread_mutex_destroy(&d->lock);
    pthread_rwlock_destroy(&d->blocks_lock);
}

static void discover(ocl_state *s)
{
    cl_uint np = 0;
    if (clGetPlatformIDs(0, NULL, &np) != CL_SUCCESS || np == 0)
        return; /* no platform: a backend without devices, not an error */
    cl_platform_id *plats = calloc(np, sizeof *plats);
    if (!plats || clGetPlatformIDs(np, plats, NULL) != CL_SUCCESS) {
        free(plats);
        return;
    }
    for (cl_uint p = 0; p < np; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || !nd)
            continue;
        cl_device_id *ids = calloc(nd, sizeof *ids);
        ocl_device *grown = realloc(s->devs, (s->n_devs + nd) * sizeof *grown);
        if (!ids || !grown) {
            free(ids);
            if (grown)
                s->devs = grown;
            break;
        }
        s->devs = grown;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, ids, NULL) == CL_SUCCESS) {
            for (cl_uint i = 0; i < nd; i++) {
                ocl_device *d = &s->devs[s->n_devs];
                memset(d, 0, sizeof *d);
                d->index = s->n_devs;
                if (device_open(s, d, plats[p], ids[i]) == 0)
                    s->n_devs++;
            }
        }
        free(ids);
    }
    free(plats);
}

/* ---- program build and binary cache ------------------------------------------------------ */

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void cache_dir_init(ocl_state *s)
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
static void cache_key(const ocl_device *d, const char *src, size_t src_len, const char *opts,
                      char *key, size_t len, char *file, size_t file_len, const char *dir)
{
    char drv[128] = "";
    dev_string(d->id, CL_DRIVER_VERSION, drv, sizeof drv);
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

/* Why a present cache entry was not used, for the warning; NULL when it was fine or merely
 * stale (another format, another key: a different program under a colliding name). */
typedef struct cache_verdict {
    const char *corrupt;
} cache_verdict;

/* The cached binary under KEY in FILE, built for D with OPTS; NULL when absent or unusable
 * (then rebuilt), with V->corrupt saying why when the entry is damaged. */
static cl_program cache_load(const ocl_device *d, const char *key, const char *file,
                             const char *opts, cache_verdict *v)
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
static void cache_store(cl_program prog, const char *key, const char *file)
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

/* The program of SRC built for D with OPTS: from the binary cache when it holds one, else from
 * the source (then stored in the cache). NULL on failure with a one-line reason in MSG.
 * Caller holds d->lock. */
static cl_program build_program(ocl_state *s, ocl_device *d, const char *src, size_t src_len,
                                const char *opts, char *msg, size_t msg_len)
{
    char key[1024], file[1100] = "";
    cl_program prog = NULL;
    if (s->cache_dir[0]) {
        cache_key(d, src, src_len, opts, key, sizeof key, file, sizeof file, s->cache_dir);
        cache_verdict v;
        prog = cache_load(d, key, file, opts, &v);
        if (v.corrupt)
            host_log(s, LOOM_LOG_WARNING, "opencl:%u: program cache entry %s is damaged (%s): "
                     "rebuilt from source", d->index, file, v.corrupt);
    }
    if (prog)
        return prog;
    cl_int e;
    prog = clCreateProgramWithSource(d->context, 1, &src, &src_len, &e);
    if (!prog) {
        snprintf(msg, msg_len, "opencl:%u: clCreateProgramWithSource failed: %s", d->index,
                 ocl_error_name(e));
        return NULL;
    }
    e = clBuildProgram(prog, 1, &d->id, opts, NULL, NULL);
    if (e != CL_SUCCESS) {
        char log[300] = "";
        clGetProgramBuildInfo(prog, d->id, CL_PROGRAM_BUILD_LOG, sizeof log, log, NULL);
        log[sizeof log - 1] = '\0';
        for (char *c = log; *c; c++)
            if (*c == '\n')
                *c = ' ';
        snprintf(msg, msg_len, "opencl:%u: clBuildProgram%s%s failed: %s: %s", d->index,
                 opts[0] ? " " : "", opts, ocl_error_name(e), log);
        clReleaseProgram(prog);
        return NULL;
    }
    if (file[0])
        cache_store(prog, key, file);
    return prog;
}

/* Whether this build is LOOM_FAULT's injected build failure (then the message is in ERR). */
static int build_fault(ocl_state *s, const ocl_device *d, char *err, size_t err_len)
{
    if (!fault_hits(&s->faults.builds, s->faults.build_at))
        return 0;
    fail(err, err_len, LOOM_ERR_DEVICE_LOST, "opencl:%u: clBuildProgram failed: "
         "CL_BUILD_PROGRAM_FAILURE (injected)", d->index);
    return 1;
}

/* Create N kernels NAMES of PROG into OUT; 0 on success, else releases those made and writes
 * why into MSG. */
static int create_kernels(const ocl_device *d, cl_program prog, const char *const *names,
                          int n, cl_kernel *out, char *msg, size_t msg_len)
{
    for (int k = 0; k < n; k++) {
        cl_int e;
        out[k] = clCreateKernel(prog, names[k], &e);
        if (!out[k]) {
            snprintf(msg, msg_len, "opencl:%u: clCreateKernel('%s') failed: %s", d->index,
                     names[k], ocl_error_name(e));
            for (int j = 0; j < k; j++) {
                clReleaseKernel(out[j]);
                out[j] = NULL;
            }
            return -1;
        }
    }
    return 0;
}

/* Build D's program if it is not yet (caller holds d->lock). Returns LOOM_OK or a message. A
 * real build failure is remembered; an injected one is not (the next call builds for real). */
static loom_status ensure_program(ocl_state *s, ocl_device *d, char *err, size_t err_len)
{
    if (d->prog_state == 1)
        return LOOM_OK;
    if (d->prog_state == -1)
        return fail(err, err_len, LOOM_ERR_DEVICE_LOST, "%s", d->prog_err);
    if (build_fault(s, d, err, err_len))
        return LOOM_ERR_DEVICE_LOST;
    cl_program prog = build_program(s, d, ocl_program_source, ocl_program_source_len, "",
                                    d->prog_err, sizeof d->prog_err);
    if (!prog) {
        d->prog_state = -1;
        return fail(err, err_len, LOOM_ERR_DEVICE_LOST, "%s", d->prog_err);
    }
    if (create_kernels(d, prog, k_kernel_names, OCL_K_COUNT, d->kernels, d->prog_err,
                       sizeof d->prog_err) != 0) {
        clReleaseProgram(prog);
        d->prog_state = -1;
        return fail(err, err_len, LOOM_ERR_DEVICE_LOST, "%s", d->prog_err);
    }
    d->program = prog;
    d->prog_state = 1;
    return LOOM_OK;
}

loom_status ocl_variant_kernels(ocl_state *s, ocl_device *d, const char *opts, cl_kernel *out,
                                char *err, size_t err_len)
{
    if (strlen(opts) >= sizeof d->variants[0].opts)
        return fail(err, err_len, LOOM_ERR_INTERNAL, "opencl:%u: build options too long: %s",
                    d->index, opts);
    pthread_mutex_lock(&d->lock);
    for (size_t v = 0; v < d->n_variants; v++) {
        if (!strcmp(d->variants[v].opts, opts)) {
            memcpy(out, d->variants[v].kernels, sizeof d->variants[v].kernels);
            pthread_mutex_unlock(&d->lock);
            return LOOM_OK;
        }
    }
    loom_status st = LOOM_OK;
    char msg[512];
    if (d->n_variants == d->cap_variants) {
        size_t cap = d->cap_variants ? 2 * d->cap_variants : 16;
        ocl_variant *nv = realloc(d->variants, cap * sizeof *nv);
        if (!nv) {
            pthread_mutex_unlock(&d->lock);
            return fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
        }
        d->variants = nv;
        d->cap_variants = cap;
    }
    if (build_fault(s, d, err, err_len)) {
        pthread_mutex_unlock(&d->lock);
        return LOOM_ERR_DEVICE_LOST;
    }
    ocl_variant *v = &d->variants[d->n_variants];
    memset(v, 0, sizeof *v);
    snprintf(v->opts, sizeof v->opts, "%s", opts);
    v->program = build_program(s, d, ocl_ew_source, ocl_ew_source_len, opts, msg, sizeof msg);
    if (!v->program) {
        st = fail(err, err_len, LOOM_ERR_DEVICE_LOST, "%s", msg);
    } else if (create_kernels(d, v->program, k_ew_names, OCL_EW_COUNT, v->kernels, msg,
                              sizeof msg) != 0) {
        clReleaseProgram(v->program);
        st = fail(err, err_len, LOOM_ERR_DEVICE_LOST, "%s", msg);
    } else {
        memcpy(out, v->kernels, sizeof v->kernels);
        d->n_variants++;
    }
    pthread_mutex_unlock(&d->lock);
    return st;
}

/* ---- memory -------------------------------------------------------------------------------- */

/* Index of the block holding address P, or -1 (caller holds blocks_lock). */
static long block_find(const ocl_device *d, uintptr_t p)
{
    size_t lo = 0, hi = d->n_blocks;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (d->blocks[mid].base <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return -1;
    const ocl_block *b = &d->blocks[lo - 1];
    return p < b->base + b->span ? (long)(lo - 1) : -1;
}

static void *ocl_alloc(void *ctx, uint32_t dev, size_t size, size_t align)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs || align > 4096 || (align & (align - 1)))
        return NULL;
    ocl_device *d = &s->devs[dev];
    if (fault_hits(&s->faults.allocs, s->faults.alloc_at)) {
        host_log(s, LOOM_LOG_WARNING, "opencl:%u: clCreateBuffer failed: "
                 "CL_MEM_OBJECT_ALLOCATION_FAILURE (injected, %zu bytes)", dev, size);
        return NULL;
    }
    size_t want = size ? size : 1;
    if (d->info.max_alloc_bytes && want > d->info.max_alloc_bytes)
        return NULL;
    long page = sysconf(_SC_PAGESIZE);
    size_t span = (want + (size_t)page - 1) / (size_t)page * (size_t)page;
    /* The address range is reserved, never backed: it only names the block. */
    void *base = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    cl_mem mem = NULL;
    size_t mem_size = 0;
    pthread_rwlock_wrlock(&d->blocks_lock);
    /* Reuse a pooled cl_mem at most twice the size asked for. */
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < d->n_pool; i++)
        if (d->pool_size[i] >= want && d->pool_size[i] <= 2 * want &&
            (best == SIZE_MAX || d->pool_size[i] < d->pool_size[best]))
            best = i;
    if (best != SIZE_MAX) {
        mem = d->pool[best];
        mem_size = d->pool_size[best];
        d->pool_bytes -= mem_size;
        d->pool[best] = d->pool[d->n_pool - 1];
        d->pool_size[best] = d->pool_size[d->n_pool - 1];
        d->n_pool--;
    }
    pthread_rwlock_unlock(&d->blocks_lock);
    if (!mem) {
        cl_int e;
        mem = clCreateBuffer(d->context, CL_MEM_READ_WRITE, want, NULL, &e);
        mem_size = want;
        if (!mem) {
            munmap(base, span);
            host_log(s, LOOM_LOG_WARNING, "opencl:%u: clCreateBuffer(%zu bytes) failed: %s",
                     dev, want, ocl_error_name(e));
            return NULL;
        }
    }
    pthread_rwlock_wrlock(&d->blocks_lock);
    if (d->n_blocks == d->cap_blocks) {
        size_t cap = d->cap_blocks ? 2 * d->cap_blocks : 16;
        ocl_block *nb = realloc(d->blocks, cap * sizeof *nb);
        if (!nb) {
            pthread_rwlock_unlock(&d->blocks_lock);
            clReleaseMemObject(mem);
            munmap(base, span);
            return NULL;
        }
        d->blocks = nb;
        d->cap_blocks = cap;
    }
    size_t at = 0;
    while (at < d->n_blocks && d->blocks[at].base < (uintptr_t)base)
        at++;
    memmove(&d->blocks[at + 1], &d->blocks[at], (d->n_blocks - at) * sizeof *d->blocks);
    d->blocks[at] = (ocl_block){(uintptr_t)base, want, span, mem_size, mem};
    d->n_blocks++;
    pthread_rwlock_unlock(&d->blocks_lock);
    return base;
}

static void ocl_free(void *ctx, uint32_t dev, void *ptr, size_t size)
{
    ocl_state *s = ctx;
    (void)size;
    if (!ptr || dev >= s->n_devs)
        return;
    ocl_device *d = &s->devs[dev];
    pthread_rwlock_wrlock(&d->blocks_lock);
    long i = block_find(d, (uintptr_t)ptr);
    if (i < 0 || d->blocks[i].base != (uintptr_t)ptr) {
        pthread_rwlock_unlock(&d->blocks_lock);
        host_log(s, LOOM_LOG_ERROR, "opencl:%u: free of %p, which alloc did not return", dev,
                 ptr);
        return;
    }
    ocl_block b = d->blocks[i];
    memmove(&d->blocks[i], &d->blocks[i + 1], (d->n_blocks - (size_t)i - 1) * sizeof *d->blocks);
    d->n_blocks--;
    cl_mem release = b.mem;
    if (d->pool_bytes + b.mem_size <= OCL_POOL_BYTES) {
        if (d->n_pool == d->cap_pool) {
            size_t cap = d->cap_pool ? 2 * d->cap_pool : 16;
            cl_mem *np = realloc(d->pool, cap * sizeof *np);
            if (np)
                d->pool = np;
            size_t *ns = np ? realloc(d->pool_size, cap * sizeof *ns) : NULL;
            if (ns) {
                d->pool_size = ns;
                d->cap_pool = cap;
            }
        }
        if (d->n_pool < d->cap_pool) {
            d->pool[d->n_pool] = b.mem;
            d->pool_size[d->n_pool++] = b.mem_size;
            d->pool_bytes += b.mem_size;
            release = NULL;
        }
    }
    pthread_rwlock_unlock(&d->blocks_lock);
    if (release)
        clReleaseMemObject(release);
    munmap((void *)b.base, b.span);
}

/* The cl_mem and offset of [P, P + BYTES) on D; 0 on success. */
static int resolve(ocl_device *d, const void *p, size_t bytes, ocl_buf *out)
{
    pthread_rwlock_rdlock(&d->blocks_lock);
    long i = block_find(d, (uintptr_t)p);
    int bad = i < 0;
    if (!bad) {
        const ocl_block *b = &d->blocks[i];
        size_t off = (uintptr_t)p - b->base;
        bad = off > b->size || bytes > b->size - off;
        out->mem = b->mem;
        out->off = off;
    }
    pthread_rwlock_unlock(&d->blocks_lock);
    return bad ? -1 : 0;
}

static loom_status ocl_upload(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                              char *err, size_t err_len)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs)
        return fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: no device %u", dev);
    if (!bytes)
        return LOOM_OK;
    ocl_device *d = &s->devs[dev];
    ocl_buf b;
    if (!src || resolve(d, dst, bytes, &b) != 0)
        return fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                    "opencl:%u: upload of %zu bytes to %p: not inside a block from alloc", dev,
                    bytes, dst);
    /* Blocking: SRC may be reused as soon as this returns. */
    cl_int e = clEnqueueWriteBuffer(d->queue, b.mem, CL_TRUE, b.off, bytes, src, 0, NULL, NULL);
    if (e != CL_SUCCESS)
        return fail(err, err_len, cl_status(e), "opencl:%u: clEnqueueWriteBuffer (%zu bytes) "
                    "failed: %s", dev, bytes, ocl_error_name(e));
    return LOOM_OK;
}

static loom_status ocl_download(void *ctx, uint32_t dev, void *dst, const void *src, size_t bytes,
                                char *err, size_t err_len)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs)
        return fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: no device %u", dev);
    if (!bytes)
        return LOOM_OK;
    ocl_device *d = &s->devs[dev];
    ocl_buf b;
    if (!dst || resolve(d, src, bytes, &b) != 0)
        return fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT,
                    "opencl:%u: download of %zu bytes from %p: not inside a block from alloc",
                    dev, bytes, src);
    cl_int e = clEnqueueReadBuffer(d->queue, b.mem, CL_TRUE, b.off, bytes, dst, 0, NULL, NULL);
    if (e != CL_SUCCESS)
        return fail(err, err_len, cl_status(e), "opencl:%u: clEnqueueReadBuffer (%zu bytes) "
                    "failed: %s", dev, bytes, ocl_error_name(e));
    return LOOM_OK;
}

cl_mem ocl_buffer_from_host(ocl_state *s, ocl_device *d, const void *data, size_t bytes,
                            char *err, size_t err_len)
{
    (void)s;
    cl_int e;
    cl_mem m = clCreateBuffer(d->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                              bytes ? bytes : 1, (void *)data, &e);
    if (!m && !data)
        m = clCreateBuffer(d->context, CL_MEM_READ_ONLY, bytes ? bytes : 1, NULL, &e);
    if (!m)
        fail(err, err_len, cl_status(e), "opencl:%u: clCreateBuffer (%zu bytes) failed: %s",
             d->index, bytes, ocl_error_name(e));
    return m;
}

/* ---- enqueue helpers the kernel families use ------------------------------------------------ */

cl_kernel ocl_get_kernel(ocl_run *r, ocl_kid id)
{
    return r->d->kernels[id];
}

int ocl_arg(ocl_run *r, cl_kernel ker, cl_uint i, size_t size, const void *value)
{
    cl_int e = clSetKernelArg(ker, i, size, value);
    if (e != CL_SUCCESS) {
        ocl_run_fail(r, LOOM_ERR_INTERNAL, "clSetKernelArg(%u) failed: %s", i, ocl_error_name(e));
        return -1;
    }
    return 0;
}

static void take_event(ocl_run *r, cl_event ev)
{
    if (r->last)
        clReleaseEvent(r->last);
    r->last = ev;
}

loom_status ocl_launch(ocl_run *r, cl_kernel ker, size_t global, size_t local)
{
    if (!global)
        return LOOM_OK;
    if (fault_hits(&r->s->faults.enqueues, r->s->faults.enqueue_at))
        return ocl_run_fail(r, LOOM_ERR_DEVICE_LOST,
                            "clEnqueueNDRangeKernel failed: CL_OUT_OF_RESOURCES (injected)");
    if (local)
        global = (global + local - 1) / local * local;
    cl_event ev = NULL;
    cl_int e = clEnqueueNDRangeKernel(r->d->queue, ker, 1, NULL, &global, local ? &local : NULL,
                                      0, NULL, &ev);
    if (e != CL_SUCCESS)
        return ocl_run_fail(r, cl_status(e), "clEnqueueNDRangeKernel failed: %s",
                            ocl_error_name(e));
    take_event(r, ev);
    return LOOM_OK;
}

loom_status ocl_copy(ocl_run *r, ocl_buf src, ocl_buf dst, size_t bytes)
{
    if (!bytes)
        return LOOM_OK;
    if (fault_hits(&r->s->faults.enqueues, r->s->faults.enqueue_at))
        return ocl_run_fail(r, LOOM_ERR_DEVICE_LOST,
                            "clEnqueueCopyBuffer failed: CL_OUT_OF_RESOURCES (injected)");
    cl_event ev = NULL;
    cl_int e = clEnqueueCopyBuffer(r->d->queue, src.mem, dst.mem, src.off, dst.off, bytes, 0,
                                   NULL, &ev);
    if (e != CL_SUCCESS)
        return ocl_run_fail(r, cl_status(e), "clEnqueueCopyBuffer (%zu bytes) failed: %s", bytes,
                            ocl_error_name(e));
    take_event(r, ev);
    return LOOM_OK;
}

loom_status ocl_blas_done(ocl_run *r, int status, cl_event ev, const char *what)
{
    if (status != 0) {
        if (ev)
            clReleaseEvent(ev);
        return ocl_run_fail(r, status == CL_OUT_OF_RESOURCES || status == -4 ? LOOM_ERR_OUT_OF_MEMORY
                                                                            : LOOM_ERR_DEVICE_LOST,
                            "%s failed: CLBlast status %d%s%s", what, status,
                            status < 0 && status > -70 ? " " : "",
                            status < 0 && status > -70 ? ocl_error_name(status) : "");
    }
    if (ev)
        take_event(r, ev);
    return LOOM_OK;
}

loom_status ocl_fault_check(ocl_run *r, const char *what)
{
    if (fault_hits(&r->s->faults.enqueues, r->s->faults.enqueue_at))
        return ocl_run_fail(r, LOOM_ERR_DEVICE_LOST, "%s failed: CL_OUT_OF_RESOURCES (injected)",
                            what);
    return LOOM_OK;
}

/* ---- the table ------------------------------------------------------------------------------ */

static uint32_t ocl_device_count(void *ctx)
{
    return ((ocl_state *)ctx)->n_devs;
}

static loom_status ocl_device_info(void *ctx, uint32_t dev, loom_device_info *info)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs || !info)
        return LOOM_ERR_INVALID_ARGUMENT;
    /* Copy only what the host's struct has room for: it may be older than ours (the ABI 0.3
     * fields are written only when its struct_size includes them). */
    size_t n = info->struct_size && info->struct_size < sizeof *info ? info->struct_size
                                                                      : sizeof *info;
    uint32_t abi = info->abi_version, size = info->struct_size;
    memcpy(info, &s->devs[dev].info, n);
    info->abi_version = abi;
    info->struct_size = size;
    return LOOM_OK;
}

static int ocl_supports(void *ctx, uint32_t dev, const loom_node_desc *node, char *reason,
                        size_t reason_len)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs)
        return ocl_reason(reason, reason_len, "no OpenCL device %u", dev);
    return ocl_kernels_supports(s, &s->devs[dev], node, reason, reason_len);
}

static void kernel_free(ocl_kernel *k)
{
    if (!k)
        return;
    if (k->consts)
        for (uint32_t i = 0; i < k->n_in; i++)
            if (k->consts[i])
                clReleaseMemObject(k->consts[i]);
    if (k->meta)
        clReleaseMemObject(k->meta);
    if (k->meta2)
        clReleaseMemObject(k->meta2);
    free(k->consts);
    free(k->in);
    free(k->out);
    free(k->params);
    free(k);
}

static loom_status ocl_prepare(void *ctx, uint32_t dev, const loom_node_desc *node, void **kernel,
                               size_t *scratch_bytes, char *err, size_t err_len)
{
    ocl_state *s = ctx;
    if (dev >= s->n_devs)
        return fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: no device %u", dev);
    ocl_device *d = &s->devs[dev];
    char why[256] = "";
    if (!ocl_kernels_supports(s, d, node, why, sizeof why))
        return fail(err, err_len, LOOM_ERR_UNSUPPORTED, "opencl:%u: node '%s' (%s): %s", dev,
                    node->name ? node->name : "", node->op_name, why);
    pthread_mutex_lock(&d->lock);
    loom_status st = ensure_program(s, d, err, err_len);
    pthread_mutex_unlock(&d->lock);
    if (st != LOOM_OK)
        return st;
    ocl_kernel *k = calloc(1, sizeof *k);
    if (!k)
        return fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    k->dev = dev;
    k->op = node->op;
    snprintf(k->name, sizeof k->name, "%s", node->name ? node->name : "");
    snprintf(k->op_name, sizeof k->op_name, "%s", node->op_name ? node->op_name : "?");
    k->n_in = node->n_inputs;
    k->n_out = node->n_outputs;
    k->in = calloc(node->n_inputs + 1, sizeof *k->in);
    k->out = calloc(node->n_outputs + 1, sizeof *k->out);
    k->consts = calloc(node->n_inputs + 1, sizeof *k->consts);
    if (!k->in || !k->out || !k->consts) {
        kernel_free(k);
        return fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(k->in, node->inputs, node->n_inputs * sizeof *k->in);
    memcpy(k->out, node->outputs, node->n_outputs * sizeof *k->out);
    /* Constants (weights) live in this handle's own buffers; at execute the host passes their
     * host pointers, which are ignored. */
    for (uint32_t i = 0; node->input_constants && i < node->n_inputs; i++) {
        if (!node->input_constants[i] || node->inputs[i].dtype == LOOM_DTYPE_UNDEFINED)
            continue;
        size_t bytes = (size_t)loom_tensor_desc_numel(&node->inputs[i]) *
                       loom_dtype_size(node->inputs[i].dtype);
        k->consts[i] = ocl_buffer_from_host(s, d, node->input_constants[i], bytes, err, err_len);
        if (!k->consts[i]) {
            kernel_free(k);
            return LOOM_ERR_OUT_OF_MEMORY;
        }
    }
    st = ocl_kernels_prepare(s, d, node, k, err, err_len);
    if (st == LOOM_OK && !k->run)
        st = fail(err, err_len, LOOM_ERR_INTERNAL, "opencl: %s: prepare set no kernel",
                  node->op_name);
    if (st != LOOM_OK) {
        kernel_free(k);
        return st;
    }
    *kernel = k;
    *scratch_bytes = k->scratch_bytes;
    return LOOM_OK;
}

static void ocl_release_kernel(void *ctx, void *kernel)
{
    (void)ctx;
    kernel_free(kernel);
}

/* Resolve ARGS and enqueue K; on success *EV is the event of the last command (a marker when
 * the node enqueued nothing), owned by the caller. */
static loom_status enqueue_node(ocl_state *s, uint32_t dev, ocl_kernel *k,
                                const loom_exec_args *args, char *err, size_t err_len,
                                cl_event *ev)
{
    *ev = NULL;
    if (dev >= s->n_devs || !k || k->dev != dev || !args)
        return fail(err, err_len, LOOM_ERR_INVALID_ARGUMENT, "opencl: bad execute arguments");
    ocl_device *d = &s->devs[dev];
    ocl_buf stack_bufs[16], *bufs = stack_bufs;
    size_t nb = (size_t)k->n_in + k->n_out;
    if (nb > 16 && !(bufs = calloc(nb, sizeof *bufs)))
        return fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
    ocl_run r = {.s = s, .d = d, .k = k, .in = bufs, .out = bufs + k->n_in, .err = err,
                 .err_len = err_len};
    loom_status st = LOOM_OK;
    for (uint32_t i = 0; i < k->n_in + k->n_out && st == LOOM_OK; i++) {
        int is_in = i < k->n_in;
        const loom_tensor_desc *t = is_in ? &k->in[i] : &k->out[i - k->n_in];
        const void *p = is_in ? (args->inputs ? args->inputs[i] : NULL)
                              : (args->outputs ? args->outputs[i - k->n_in] : NULL);
        bufs[i].mem = NULL;
        bufs[i].off = 0;
        if (is_in && k->consts[i]) {
            bufs[i].mem = k->consts[i];
            continue;
        }
        if (t->dtype == LOOM_DTYPE_UNDEFINED || !p)
            continue;
        size_t bytes = (size_t)loom_tensor_desc_numel(t) * loom_dtype_size(t->dtype);
        if (resolve(d, p, bytes, &bufs[i]) != 0)
            st = ocl_run_fail(&r, LOOM_ERR_INVALID_ARGUMENT,
                              "%s %u at %p (%zu bytes) is not inside a block from alloc",
                              is_in ? "input" : "output", is_in ? i : i - k->n_in, p, bytes);
        else if (bufs[i].off % loom_dtype_size(t->dtype))
            st = ocl_run_fail(&r, LOOM_ERR_INVALID_ARGUMENT,
                              "%s %u at offset %zu is not aligned to its element size",
                              is_in ? "input" : "output", is_in ? i : i - k->n_in, bufs[i].off);
    }
    if (st == LOOM_OK && k->scratch_bytes) {
        if (!args->scratch || resolve(d, args->scratch, k->scratch_bytes, &r.scratch) != 0)
            st = ocl_run_fail(&r, LOOM_ERR_INVALID_ARGUMENT,
                              "scratch (%zu bytes) is not inside a block from alloc",
                              k->scratch_bytes);
    }
    if (st == LOOM_OK) {
        pthread_mutex_lock(&d->lock);
        st = k->run(&r, k);
        if (st == LOOM_OK && !r.last) {
            cl_int e = clEnqueueMarkerWithWaitList(d->queue, 0, NULL, &r.last);
            if (e != CL_SUCCESS)
                st = ocl_run_fail(&r, cl_status(e), "clEnqueueMarkerWithWaitList failed: %s",
                                  ocl_error_name(e));
        }
        if (st != LOOM_OK) {
            /* Let what was enqueued before the failure finish: nothing of this node stays in
             * flight once we return. */
            clFinish(d->queue);
        } else {
            clFlush(d->queue);
        }
        pthread_mutex_unlock(&d->lock);
    }
    if (bufs != stack_bufs)
        free(bufs);
    if (st != LOOM_OK) {
        if (r.last)
            clReleaseEvent(r.last);
        return st;
    }
    *ev = r.last;
    return LOOM_OK;
}

static loom_status event_status(ocl_state *s, uint32_t dev, ocl_kernel *k, cl_int exec,
                                char *err, size_t err_len)
{
    (void)s;
    if (exec >= 0)
        return LOOM_OK;
    return fail(err, err_len, cl_status(exec), "opencl:%u: node '%s' (%s): the device failed "
                "running it: %s", dev, k->name, k->op_name, ocl_error_name(exec));
}

static loom_status ocl_execute(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                               char *err, size_t err_len)
{
    ocl_state *s = ctx;
    cl_event ev;
    loom_status st = enqueue_node(s, dev, kernel, args, err, err_len, &ev);
    if (st != LOOM_OK)
        return st;
    cl_int e = clWaitForEvents(1, &ev);
    cl_int exec = CL_COMPLETE;
    if (clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL) !=
        CL_SUCCESS)
        exec = e != CL_SUCCESS ? e : CL_COMPLETE;
    clReleaseEvent(ev);
    return event_status(s, dev, kernel, exec, err, err_len);
}

typedef struct ocl_pending {
    ocl_state *s;
    uint32_t dev;
    ocl_kernel *k;
    void (*done)(void *token, loom_status status, const char *message);
    void *token;
} ocl_pending;

static void CL_CALLBACK on_complete(cl_event ev, cl_int exec, void *user)
{
    ocl_pending *p = user;
    char msg[512] = "";
    loom_status st = event_status(p->s, p->dev, p->k, exec, msg, sizeof msg);
    void (*done)(void *, loom_status, const char *) = p->done;
    void *token = p->token;
    free(p);
    clReleaseEvent(ev);
    done(token, st, st == LOOM_OK ? NULL : msg);
}

static loom_status ocl_submit(void *ctx, uint32_t dev, void *kernel, const loom_exec_args *args,
                              void (*done)(void *token, loom_status status, const char *message),
                              void *token)
{
    ocl_state *s = ctx;
    if (!done)
        return LOOM_ERR_INVALID_ARGUMENT;
    ocl_pending *p = malloc(sizeof *p);
    if (!p)
        return LOOM_ERR_OUT_OF_MEMORY;
    *p = (ocl_pending){s, dev, kernel, done, token};
    char err[512] = "";
    cl_event ev;
    loom_status st = enqueue_node(s, dev, kernel, args, err, sizeof err, &ev);
    if (st != LOOM_OK) {
        /* Nothing is left in flight (enqueue_node waited): report through done() so that the
         * message reaches the host, which submit's status alone could not carry. */
        free(p);
        done(token, st, err);
        return LOOM_OK;
    }
    cl_int e = clSetEventCallback(ev, CL_COMPLETE, on_complete, p);
    if (e != CL_SUCCESS) {
        /* No callback: wait here and report synchronously. */
        clWaitForEvents(1, &ev);
        cl_int exec = CL_COMPLETE;
        clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
        clReleaseEvent(ev);
        free(p);
        st = event_status(s, dev, kernel, exec, err, sizeof err);
        done(token, st, st == LOOM_OK ? NULL : err);
    }
    return LOOM_OK;
}

static double ocl_estimate(void *ctx, uint32_t dev, const loom_node_desc *node)
{
    (void)ctx;
    (void)dev;
    (void)node;
    return -1.0;
}

static void ocl_shutdown(void *ctx)
{
    ocl_state *s = ctx;
    for (uint32_t i = 0; i < s->n_devs; i++)
        device_close(&s->devs[i]);
    free(s->devs);
    free(s);
}

/* Address space an OpenCL driver needs to start: PoCL, for one, aborts the whole process when
 * it cannot start its threads (measured: 300 MB under `ulimit -v` aborts, 400 MB runs). */
#define OCL_ADDRESS_ROOM ((size_t)256 << 20)

/* Whether a finite address-space limit (RLIMIT_AS, `ulimit -v`) leaves too little room to start
 * a driver, probed by reserving that room (never touched, given back at once). No limit, no
 * probe. */
static int address_space_short(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 0;
    void *p = mmap(NULL, OCL_ADDRESS_ROOM, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return 1;
    munmap(p, OCL_ADDRESS_ROOM);
    return 0;
}

const loom_backend *loom_opencl_backend_create(const loom_host *host, char *err, size_t err_len)
{
    if (err && err_len)
        err[0] = '\0';
    const char *env = getenv("LOOM_OPENCL");
    if (env && !strcmp(env, "0"))
        return NULL;
    if (address_space_short()) {
        fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "the address-space limit (ulimit -v) leaves "
             "less than %zu MiB for the OpenCL driver", OCL_ADDRESS_ROOM >> 20);
        return NULL;
    }
    ocl_state *s = calloc(1, sizeof *s);
    if (!s) {
        fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory starting the OpenCL backend");
        return NULL;
    }
    if (host && host->struct_size >= offsetof(loom_host, log) + sizeof host->log) {
        s->host = *host;
        s->have_host = 1;
    }
    parse_faults(s);
    discover(s);
    if (s->n_devs == 0) {
        free(s->devs);
        free(s);
        return NULL;
    }
    cache_dir_init(s);
    const char *layout = getenv("LOOM_OPENCL_LAYOUT");
    for (uint32_t i = 0; i < s->n_devs; i++) {
        ocl_device *d = &s->devs[i];
        d->cpu_layout = layout && !strcmp(layout, "gpu")   ? 0
                        : layout && !strcmp(layout, "cpu") ? 1
                                                           : d->info.kind == LOOM_DEVICE_CPU;
    }
    loom_backend *t = &s->table;
    t->abi_version = LOOM_ABI_VERSION;
    t->struct_size = sizeof *t;
    t->name = "opencl";
    t->ctx = s;
    t->device_count = ocl_device_count;
    t->device_info = ocl_device_info;
    t->supports = ocl_supports;
    t->prepare = ocl_prepare;
    t->execute = ocl_execute;
    t->release_kernel = ocl_release_kernel;
    t->alloc = ocl_alloc;
    t->free = ocl_free;
    t->shutdown = ocl_shutdown;
    t->estimate = ocl_estimate;
    t->submit = ocl_submit;
    t->upload = ocl_upload;
    t->download = ocl_download;
    return t;
}
