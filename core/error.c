/*
 * The calling thread's last error message (loom_last_error) and the names of statuses and
 * dtypes. The message is thread-local by design: each thread reads what its own calls did.
 */
#include "core_internal.h"

#include <loom/loom.h>

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

const char *loom_last_error(void)
{
    return last_error;
}

loom_status loom_set_error(loom_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

void loom_clear_error(void)
{
    last_error[0] = '\0';
}

const char *loom_status_name(loom_status status)
{
    switch (status) {
    case LOOM_OK: return "LOOM_OK";
    case LOOM_ERR_INVALID_ARGUMENT: return "LOOM_ERR_INVALID_ARGUMENT";
    case LOOM_ERR_UNSUPPORTED: return "LOOM_ERR_UNSUPPORTED";
    case LOOM_ERR_OUT_OF_MEMORY: return "LOOM_ERR_OUT_OF_MEMORY";
    case LOOM_ERR_DEVICE_LOST: return "LOOM_ERR_DEVICE_LOST";
    case LOOM_ERR_IO: return "LOOM_ERR_IO";
    case LOOM_ERR_INTERNAL: return "LOOM_ERR_INTERNAL";
    }
    return "LOOM_ERR_UNKNOWN";
}

const char *loom_dtype_name(loom_dtype dtype)
{
    switch (dtype) {
    case LOOM_DTYPE_F32: return "float";
    case LOOM_DTYPE_U8: return "uint8";
    case LOOM_DTYPE_I8: return "int8";
    case LOOM_DTYPE_I32: return "int32";
    case LOOM_DTYPE_I64: return "int64";
    case LOOM_DTYPE_BOOL: return "bool";
    case LOOM_DTYPE_F16: return "float16";
    case LOOM_DTYPE_BF16: return "bfloat16";
    case LOOM_DTYPE_U16: return "uint16";
    case LOOM_DTYPE_I16: return "int16";
    case LOOM_DTYPE_F64: return "double";
    case LOOM_DTYPE_U32: return "uint32";
    case LOOM_DTYPE_U64: return "uint64";
    case LOOM_DTYPE_UNDEFINED: break;
    }
    return "undefined";
}

#include "loom_config.h"

const char *loom_version(void)
{
    return LOOM_VERSION;
}
