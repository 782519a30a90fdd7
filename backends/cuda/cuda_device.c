/*
 * The CUDA backend's devices: how many there are (and why none, when so), the facts each
 * reports with their units, and the streams and cuBLAS handle each gets on first use. Facts come
 * from cudaDeviceGetAttribute rather than cudaDeviceProp fields, several of which (clockRate,
 * memoryClockRate, ...) CUDA 13 removed; cudaDeviceProp is read only for the name, the memory
 * size and the UUID, which every CUDA version since 10 has.
 */
#include "cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An attribute's value, 0 when the driver does not tell. */
static int attr(enum cudaDeviceAttr a, int ordinal)
{
    int v = 0;
    if (cudaDeviceGetAttribute(&v, a, ordinal) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return v;
}

/* FP32 lanes per SM by compute capability (the CUDA programming guide's throughput table):
 * what peak_flops_f32 is made of. 64 for the generations not listed. */
static int fp32_lanes_per_sm(int major, int minor)
{
    if (major == 7)
        return 64;
    if (major == 8)
        return minor == 0 ? 64 : 128;
    if (major >= 9)
        return 128;
    return major == 6 && minor == 0 ? 64 : 128;
}

static void describe(cuda_dev *d)
{
    loom_device_info *info = &d->info;
    const int o = d->ordinal;
    memset(info, 0, sizeof *info);
    info->abi_version = LOOM_ABI_VERSION;
    info->struct_size = sizeof *info;
    struct cudaDeviceProp p;
    memset(&p, 0, sizeof p);
    if (cudaGetDeviceProperties(&p, o) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(p.name, sizeof p.name, "CUDA device %d", o);
    }
    const int major = attr(cudaDevAttrComputeCapabilityMajor, o);
    const int minor = attr(cudaDevAttrComputeCapabilityMinor, o);
    const int sms = attr(cudaDevAttrMultiProcessorCount, o);
    const int clock_khz = attr(cudaDevAttrClockRate, o);
    const int mem_khz = attr(cudaDevAttrMemoryClockRate, o);
    const int bus_bits = attr(cudaDevAttrGlobalMemoryBusWidth, o);
    snprintf(info->name, sizeof info->name, "%.100s (sm_%d%d, %d SMs)", p.name, major, minor, sms);
    info->kind = LOOM_DEVICE_GPU;
    info->compute_units = (uint32_t)sms;
    info->threads = (uint32_t)(sms * attr(cudaDevAttrMaxThreadsPerMultiProcessor, o));
    info->memory_bytes = (uint64_t)p.totalGlobalMem;
    info->numa_node = -1;
    info->host_visible = 0;
    /* One FMA (2 operations) per lane per clock: the CUDA-core peak, which the f32 GEMMs reach
     * with TF32 off; calibration measures what they really do. */
    info->peak_flops_f32 = 2.0 * sms * fp32_lanes_per_sm(major, minor) * clock_khz * 1e3;
    /* Double data rate: two transfers per memory clock over the whole bus. */
    info->mem_bandwidth = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0);
    /* A kernel launch plus its completion seen by the host: a few microseconds. */
    info->launch_latency_s = 8e-6;
    info->peak_flops_f16 = 0; /* this backend computes no fp16 */
    info->max_alloc_bytes = (uint64_t)p.totalGlobalMem;
    info->local_memory_bytes = (uint64_t)attr(cudaDevAttrMaxSharedMemoryPerMultiprocessor, o);
    info->clock_mhz = (uint32_t)(clock_khz / 1000);
    info->has_fp16 = 0;
    info->has_fp64 = 1;
    info->unified_memory = (uint32_t)(attr(cudaDevAttrIntegrated, o) != 0);
    info->shares_host_cpu = 0;
    info->in_order = 1;
    const unsigned char *u = (const unsigned char *)p.uuid.bytes;
    snprintf(info->uuid, sizeof info->uuid,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
    snprintf(info->pci_bus, sizeof info->pci_bus, "%04x:%02x:%02x.0",
             (unsigned)attr(cudaDevAttrPciDomainId, o), (unsigned)attr(cudaDevAttrPciBusId, o),
             (unsigned)attr(cudaDevAttrPciDeviceId, o));
    int drv = 0, rt = 0;
    (void)cudaDriverGetVersion(&drv);
    (void)cudaRuntimeGetVersion(&rt);
    snprintf(info->driver, sizeof info->driver, "CUDA driver %d.%d, runtime %d.%d", drv / 1000,
             (drv % 1000) / 10, rt / 1000, (rt % 1000) / 10);
    info->device_constants = 1;
}

loom_status cuda_devices_open(cuda_state *s)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        /* The one line a machine without a GPU (or driver) gets; the backend then offers no
         * device and the host carries on with the others. */
        if (e != cudaSuccess)
            cuda_log(s, LOOM_LOG_WARNING,
                     "cuda: no CUDA device: cudaGetDeviceCount failed: %s (%s); the backend "
                     "offers no device",
                     cudaGetErrorString(e), cudaGetErrorName(e));
        else
            cuda_log(s, LOOM_LOG_WARNING,
                     "cuda: no CUDA device: cudaGetDeviceCount found 0; the backend offers no "
                     "device");
        (void)cudaGetLastError();
        s->n_devices = 0;
        return LOOM_OK;
    }
    s->devs = calloc((size_t)n, sizeof *s->devs);
    if (!s->devs)
        return LOOM_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < n; i++) {
        cuda_dev *d = &s->devs[i];
        d->ordinal = i;
        pthread_mutex_init(&d->lock, NULL);
        pthread_mutex_init(&d->mem_lock, NULL);
        for (int q = 0; q < CUDA_Q_COUNT; q++) {
            pthread_mutex_init(&d->waiter[q].m, NULL);
            pthread_cond_init(&d->waiter[q].cv, NULL);
            d->waiter[q].ordinal = i;
        }
        describe(d);
    }
    s->n_devices = n;
    return LOOM_OK;
}

/* cuBLAS's workspace: Hopper's recommended 32 MiB (cuBLAS documentation, "cublasSetWorkspace"),
 * ample for older GPUs. */
#define CUDA_BLAS_WORKSPACE ((size_t)32 << 20)

static loom_status start_device(cuda_state *s, cuda_dev *d, char *err, size_t err_len)
{
    cudaError_t e;
    for (int q = 0; q < CUDA_Q_COUNT; q++) {
        /* Non-blocking: never synchronised with the legacy default stream (which a program
         * using CUDA itself may use). */
        e = cudaStreamCreateWithFlags(&d->stream[q], cudaStreamNonBlocking);
        if (e != cudaSuccess)
            return cuda_fail(e, "cudaStreamCreateWithFlags", err, err_len);
    }
    cublasStatus_t st = cublasCreate(&d->blas);
    if (st != CUBLAS_STATUS_SUCCESS)
        return cuda_blas_fail(st, "cublasCreate", err, err_len);
    if ((st = cublasSetStream(d->blas, d->stream[CUDA_Q_COMPUTE])) != CUBLAS_STATUS_SUCCESS)
        return cuda_blas_fail(st, "cublasSetStream", err, err_len);
    /* TF32 off unless asked for: float32 GEMMs then round like the CPU reference's. */
    st = cublasSetMathMode(d->blas, s->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    if (st != CUBLAS_STATUS_SUCCESS)
        return cuda_blas_fail(st, "cublasSetMathMode", err, err_len);
    if ((e = cudaMalloc(&d->blas_workspace, CUDA_BLAS_WORKSPACE)) != cudaSuccess)
        return cuda_fail(e, "cudaMalloc (cuBLAS workspace)", err, err_len);
    st = cublasSetWorkspace(d->blas, d->blas_workspace, CUDA_BLAS_WORKSPACE);
    if (st != CUBLAS_STATUS_SUCCESS)
        return cuda_blas_fail(st, "cublasSetWorkspace", err, err_len);
    return LOOM_OK;
}

loom_status cuda_dev_ready(cuda_state *s, cuda_dev *d, char *err, size_t err_len)
{
    cudaError_t e = cudaSetDevice(d->ordinal);
    if (e != cudaSuccess)
        return cuda_fail(e, "cudaSetDevice", err, err_len);
    pthread_mutex_lock(&d->lock);
    loom_status st = LOOM_OK;
    if (!d->ready) {
        st = start_device(s, d, err, err_len);
        d->ready = st == LOOM_OK;
    }
    pthread_mutex_unlock(&d->lock);
    return st;
}

void cuda_devices_close(cuda_state *s)
{
    for (int i = 0; i < s->n_devices; i++) {
        cuda_dev *d = &s->devs[i];
        if (cudaSetDevice(d->ordinal) == cudaSuccess) {
            if (d->blas)
                cublasDestroy(d->blas);
            for (int q = 0; q < CUDA_Q_COUNT; q++)
                if (d->stream[q]) {
                    cudaStreamSynchronize(d->stream[q]);
                    cudaStreamDestroy(d->stream[q]);
                }
            if (d->blas_workspace)
                cudaFree(d->blas_workspace);
        }
        for (cuda_aligned_block *b = d->aligned, *next; b; b = next) {
            next = b->next;
            cudaFree(b->base);
            free(b);
        }
        for (int q = 0; q < CUDA_Q_COUNT; q++) {
            pthread_mutex_destroy(&d->waiter[q].m);
            pthread_cond_destroy(&d->waiter[q].cv);
        }
        pthread_mutex_destroy(&d->lock);
        pthread_mutex_destroy(&d->mem_lock);
    }
    free(s->devs);
    s->devs = NULL;
    s->n_devices = 0;
}
