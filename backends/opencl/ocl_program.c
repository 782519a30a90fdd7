/*
 * The OpenCL backend's programs: the main program of ocl_source.c built once per device at the
 * first prepare, the elementwise variants built per set of -D options, their kernels, and
 * LOOM_FAULT's injected build failures. Binaries come from the on-disk cache when it holds them
 * (ocl_program_cache.c).
 */
#include "ocl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_kernel_names[OCL_K_COUNT] = {
    "where_uchar", "where_ushort", "where_uint", "where_ulong",
    "copy_uchar", "copy_ushort", "copy_uint", "copy_ulong",
    "gather_uchar", "gather_ushort", "gather_uint", "gather_ulong",
    "cast_any", "softmax_f32", "layernorm_f32", "batchnorm_f32", "reduce_f32", "reduce_rows_f32",
    "pool_f32",
    "im2col_f32", "bias_channel_f32", "scale_f32", "noop",
    "epilogue_f32", "add_layernorm_f32", "scale_mask_softmax_f32",
    "i8_quant_rows_f32", "i8_gemm_f32",
    "moe_fc1_f32", "moe_fc2_f32",
    "trilu_uchar", "trilu_ushort", "trilu_uint", "trilu_ulong",
    "cumsum_float", "cumsum_int", "cumsum_long",
    "gather_el_uchar", "gather_el_ushort", "gather_el_uint", "gather_el_ulong",
    "scatter_el_uchar", "scatter_el_ushort", "scatter_el_uint", "scatter_el_ulong",
    "scatter_el_float", "scatter_el_int", "scatter_el_long",
    "gather_nd_uchar", "gather_nd_ushort", "gather_nd_uint", "gather_nd_ulong",
    "scatter_nd_uchar", "scatter_nd_ushort", "scatter_nd_uint", "scatter_nd_ulong",
    "scatter_nd_float", "scatter_nd_int", "scatter_nd_long",
};

static const char *const k_ew_names[OCL_EW_COUNT] = {"ew_flat", "ew_vec4", "ew_bcast"};


/* The program of SRC built for D with OPTS: from the binary cache when it holds one, else from
 * the source (then stored in the cache). NULL on failure with a one-line reason in MSG.
 * Caller holds d->lock. */
static cl_program build_program(ocl_state *s, ocl_device *d, const char *src, size_t src_len,
                                const char *opts, char *msg, size_t msg_len)
{
    char key[1024], file[1100] = "";
    cl_program prog = NULL;
    if (s->cache_dir[0]) {
        ocl_cache_key(d, src, src_len, opts, key, sizeof key, file, sizeof file, s->cache_dir);
        ocl_cache_verdict v;
        prog = ocl_cache_load(d, key, file, opts, &v);
        if (v.corrupt)
            ocl_log(s, LOOM_LOG_WARNING, "opencl:%u: program cache entry %s is damaged (%s): "
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
        ocl_cache_store(prog, key, file);
    return prog;
}

/* Whether this build is LOOM_FAULT's injected build failure (then the message is in ERR). */
static int build_fault(ocl_state *s, const ocl_device *d, char *err, size_t err_len)
{
    if (!ocl_fault_hits(&s->faults.builds, s->faults.build_at))
        return 0;
    ocl_fail(err, err_len, LOOM_ERR_DEVICE_LOST, "opencl:%u: clBuildProgram failed: "
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
loom_status ocl_ensure_program(ocl_state *s, ocl_device *d, char *err, size_t err_len)
{
    if (d->prog_state == 1)
        return LOOM_OK;
    if (d->prog_state == -1)
        return ocl_fail(err, err_len, LOOM_ERR_DEVICE_LOST, "%s", d->prog_err);
    if (build_fault(s, d, err, err_len))
        return LOOM_ERR_DEVICE_LOST;
    cl_program prog = build_program(s, d, ocl_program_source, ocl_program_source_len, "",
                                    d->prog_err, sizeof d->prog_err);
    if (!prog) {
        d->prog_state = -1;
        return ocl_fail(err, err_len, LOOM_ERR_DEVICE_LOST, "%s", d->prog_err);
    }
    if (create_kernels(d, prog, k_kernel_names, OCL_K_COUNT, d->kernels, d->prog_err,
                       sizeof d->prog_err) != 0) {
        clReleaseProgram(prog);
        d->prog_state = -1;
        return ocl_fail(err, err_len, LOOM_ERR_DEVICE_LOST, "%s", d->prog_err);
    }
    d->program = prog;
    d->prog_state = 1;
    return LOOM_OK;
}

loom_status ocl_variant_kernels(ocl_state *s, ocl_device *d, const char *opts, cl_kernel *out,
                                char *err, size_t err_len)
{
    if (strlen(opts) >= sizeof d->variants[0].opts)
        return ocl_fail(err, err_len, LOOM_ERR_INTERNAL, "opencl:%u: build options too long: %s",
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
            return ocl_fail(err, err_len, LOOM_ERR_OUT_OF_MEMORY, "out of memory");
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
        st = ocl_fail(err, err_len, LOOM_ERR_DEVICE_LOST, "%s", msg);
    } else if (create_kernels(d, v->program, k_ew_names, OCL_EW_COUNT, v->kernels, msg,
                              sizeof msg) != 0) {
        clReleaseProgram(v->program);
        st = ocl_fail(err, err_len, LOOM_ERR_DEVICE_LOST, "%s", msg);
    } else {
        memcpy(out, v->kernels, sizeof v->kernels);
        d->n_variants++;
    }
    pthread_mutex_unlock(&d->lock);
    return st;
}

