/*
 * The OpenCL backend's devices: discovery over every platform the ICD loader lists, each
 * device's context and in-order queue, its facts for loom_device_info (kind, compute units,
 * memory, peak FLOPs, fp16/fp64, UUID, PCI bus, driver), and closing it.
 */
#include "ocl_internal.h"

#include <CL/cl_ext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void ocl_dev_string(cl_device_id id, cl_device_info what, char *out, size_t len)
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
    ocl_dev_string(id, CL_DEVICE_NAME, info->name, sizeof info->name);
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
    ocl_dev_string(id, CL_DEVICE_EXTENSIONS, exts, sizeof exts);
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
    /* prepare() keeps the host's device copies of shared constants (a model's weights) rather
     * than copying them per kernel (ocl_buffer_shared). */
    info->device_constants = 1;
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
    ocl_dev_string(id, CL_DRIVER_VERSION, drv, sizeof drv);
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
        ocl_log(s, LOOM_LOG_WARNING, "opencl: a device cannot start (clCreateContext: %s); "
                "skipped", ocl_error_name(e));
        return -1;
    }
    d->queue = clCreateCommandQueue(d->context, id, 0, &e);
    if (!d->queue) {
        ocl_log(s, LOOM_LOG_WARNING, "opencl: a device cannot start (clCreateCommandQueue: "
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

void ocl_device_close(ocl_device *d)
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

void ocl_discover(ocl_state *s)
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

