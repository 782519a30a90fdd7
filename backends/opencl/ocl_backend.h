/*
 * The built-in OpenCL backend's entry point. The backend itself is written as a plugin (it sees
 * only loom/backend.h); the host creates one instance per runtime through this function rather
 * than through dlopen. Devices come from every platform the ICD loader (libOpenCL) lists; GEMMs
 * run on CLBlast. Environment: LOOM_OPENCL=0 disables the backend; LOOM_FAULT=opencl:KIND:N
 * (KIND enqueue, build or alloc) makes the N-th such event fail, for tests only.
 */
#ifndef LOOM_OCL_BACKEND_H
#define LOOM_OCL_BACKEND_H

#include <loom/backend.h>

/* Create an OpenCL backend: one device per OpenCL device found (a device that cannot start is
 * skipped with a warning through HOST's log). HOST (may be NULL) is copied and must stay valid
 * until the table's shutdown. Returns a table owned by the caller, released by its shutdown()
 * slot; NULL when there is nothing to run on: LOOM_OPENCL=0, no platform, no device (ERR is then
 * ""), or on a failure such as out of memory (ERR says why). Never aborts. */
const loom_backend *loom_opencl_backend_create(const loom_host *host, char *err, size_t err_len);

#endif /* LOOM_OCL_BACKEND_H */
