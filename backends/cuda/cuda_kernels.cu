/*
 * The CUDA backend's own kernels (cuBLAS does the GEMMs): element-wise functions, broadcasting
 * binary ops, strided gathers (Transpose, Expand, Gemm's C), row-wise Softmax, LayerNorm and
 * reductions, and a general reduction. Launched through the extern "C" functions declared in
 * cuda_kernels.h, so that the rest of the backend stays C. Index arithmetic is cuda_index.h's,
 * shared with the host-side self-test. Compiled without --use_fast_math: the results are
 * compared with the CPU reference in float32, so expf, erff, tanhf and division stay IEEE-exact
 * to within CUDA's documented ulp bounds.
 */
#include "cuda_kernels.h"

#include <cuda_runtime.h>
#include <math.h>

namespace {

/* Threads per block of the element-wise kernels. */
constexpr int kThreads = 256;
/* Grid-stride loops need no more blocks than this, whatever the element count. */
constexpr int64_t kMaxBlocks = 1 << 20;

unsigned blocks_for(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < kMaxBlocks ? b : kMaxBlocks);
}

/* Threads per block of a row kernel: a power of two from 32 (one warp: the block reductions
 * shuffle whole warps) to 256, no more than a row needs. */
int row_threads(int64_t cols)
{
    int t = 32;
    while (t < 256 && t < cols)
        t *= 2;
    return t;
}

int launched()
{
    return (int)cudaGetLastError();
}

__device__ __forceinline__ int64_t first_index()
{
    return (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t grid_step()
{
    return (int64_t)gridDim.x * blockDim.x;
}

__device__ __forceinline__ float unary_f(int op, float x, float alpha)
{
    switch (op) {
    case CUDA_UNARY_RELU:
        return x > 0.0f ? x : 0.0f;
    case CUDA_UNARY_LEAKY_RELU:
        return x >= 0.0f ? x : alpha * x;
    case CUDA_UNARY_SIGMOID:
        return 1.0f / (1.0f + expf(-x));
    case CUDA_UNARY_TANH:
        return tanhf(x);
    case CUDA_UNARY_ERF:
        return erff(x);
    case CUDA_UNARY_GELU:
        return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case CUDA_UNARY_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case CUDA_UNARY_SQRT:
        return sqrtf(x);
    case CUDA_UNARY_EXP:
        return expf(x);
    case CUDA_UNARY_LOG:
        return logf(x);
    case CUDA_UNARY_NEG:
        return -x;
    case CUDA_UNARY_ABS:
        return fabsf(x);
    case CUDA_UNARY_RECIPROCAL:
        return 1.0f / x;
    default:
        return x;
    }
}

__device__ __forceinline__ float binary_f(int op, float a, float b)
{
    switch (op) {
    case CUDA_BINARY_ADD:
        return a + b;
    case CUDA_BINARY_SUB:
        return a - b;
    case CUDA_BINARY_MUL:
        return a * b;
    case CUDA_BINARY_DIV:
        return a / b;
    case CUDA_BINARY_POW:
        return powf(a, b);
    default:
        return a;
    }
}

__global__ void unary_kernel(int op, float alpha, const float *__restrict__ x,
                             float *__restrict__ y, int64_t n)
{
    for (int64_t i = first_index(); i < n; i += grid_step())
        y[i] = unary_f(op, x[i], alpha);
}

/* Rank <= 1 after collapsing: each operand is contiguous (stride 1) or one value (stride 0). */
__global__ void binary_flat_kernel(int op, const float *__restrict__ a, int64_t sa,
                                   const float *__restrict__ b, int64_t sb,
                                   float *__restrict__ y, int64_t n)
{
    for (int64_t i = first_index(); i < n; i += grid_step())
        y[i] = binary_f(op, a[i * sa], b[i * sb]);
}

__global__ void binary_walk_kernel(int op, const float *__restrict__ a,
                                   const float *__restrict__ b, float *__restrict__ y,
                                   cuda_walk w, int64_t n)
{
    for (int64_t i = first_index(); i < n; i += grid_step()) {
        int64_t off[CUDA_MAX_OPERANDS];
        cuda_walk_offsets(&w, i, off);
        y[i] = binary_f(op, a[off[0]], b[off[1]]);
    }
}

template <typename T>
__global__ void gather_kernel(const T *__restrict__ x, T *__restrict__ y, cuda_walk w, int64_t n)
{
    for (int64_t i = first_index(); i < n; i += grid_step()) {
        int64_t off[CUDA_MAX_OPERANDS];
        cuda_walk_offsets(&w, i, off);
        y[i] = x[off[0]];
    }
}

__global__ void gather_scaled_kernel(float scale, const float *__restrict__ x,
                                     float *__restrict__ y, cuda_walk w, int64_t n)
{
    for (int64_t i = first_index(); i < n; i += grid_step()) {
        int64_t off[CUDA_MAX_OPERANDS];
        cuda_walk_offsets(&w, i, off);
        y[i] = scale * x[off[0]];
    }
}

/* The block's sum (or maximum) of every thread's V, returned to every thread. blockDim.x is a
 * multiple of 32 (row_threads), so every shuffle has a full warp. The first barrier keeps a
 * previous call's readers of SH[0] ahead of this call's writers. */
template <bool kMax>
__device__ float block_reduce(float v)
{
    __shared__ float sh[32];
    for (int o = 16; o > 0; o >>= 1) {
        float t = __shfl_xor_sync(0xffffffffu, v, o);
        v = kMax ? fmaxf(v, t) : v + t;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        const int n_warps = blockDim.x >> 5;
        v = lane < n_warps ? sh[lane] : (kMax ? -INFINITY : 0.0f);
        for (int o = 16; o > 0; o >>= 1) {
            float t = __shfl_xor_sync(0xffffffffu, v, o);
            v = kMax ? fmaxf(v, t) : v + t;
        }
        if (lane == 0)
            sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

/* One block per row (grid-stride over rows: every thread of a block takes the same rows, so
 * the barriers inside block_reduce are reached by all of them). */
__global__ void softmax_kernel(const float *__restrict__ x, float *__restrict__ y, int64_t rows,
                               int64_t cols)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float m = -INFINITY;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
            m = fmaxf(m, xr[j]);
        m = block_reduce<true>(m);
        float s = 0.0f;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
            s += expf(xr[j] - m);
        s = block_reduce<false>(s);
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
            yr[j] = expf(xr[j] - m) / s;
    }
}

/* Two passes over the row (mean, then the squared deviations) rather than sum and sum of
 * squares: the variance of values far from zero keeps its digits, as in the CPU reference. */
__global__ void layernorm_kernel(const float *__restrict__ x, const float *__restrict__ scale,
                                 const float *__restrict__ bias, float *__restrict__ y,
                                 int64_t rows, int64_t cols, float eps)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float s = 0.0f;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
            s += xr[j];
        const float mean = block_reduce<false>(s) / (float)cols;
        float q = 0.0f;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
            float d = xr[j] - mean;
            q += d * d;
        }
        const float var = block_reduce<false>(q) / (float)cols;
        const float inv = 1.0f / sqrtf(var + eps);
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
            float v = (xr[j] - mean) * inv * scale[j];
            yr[j] = bias ? v + bias[j] : v;
        }
    }
}

__global__ void reduce_rows_kernel(int op, const float *__restrict__ x, float *__restrict__ y,
                                   int64_t rows, int64_t cols)
{
    const bool is_max = op == CUDA_REDUCE_MAX;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float acc = is_max ? -INFINITY : 0.0f;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
            acc = is_max ? fmaxf(acc, xr[j]) : acc + xr[j];
        acc = is_max ? block_reduce<true>(acc) : block_reduce<false>(acc);
        if (threadIdx.x == 0)
            y[r] = op == CUDA_REDUCE_MEAN ? acc / (float)cols : acc;
    }
}

/* One thread per output: for the reductions the row kernel cannot take (reduced axes that are
 * not a trailing run), which real models rarely have. */
__global__ void reduce_walk_kernel(int op, const float *__restrict__ x, float *__restrict__ y,
                                   cuda_walk kept, cuda_walk red, int64_t n_out, int64_t n_red)
{
    const bool is_max = op == CUDA_REDUCE_MAX;
    for (int64_t o = first_index(); o < n_out; o += grid_step()) {
        int64_t base[CUDA_MAX_OPERANDS], off[CUDA_MAX_OPERANDS];
        cuda_walk_offsets(&kept, o, base);
        float acc = is_max ? -INFINITY : 0.0f;
        for (int64_t r = 0; r < n_red; r++) {
            cuda_walk_offsets(&red, r, off);
            float v = x[base[0] + off[0]];
            acc = is_max ? fmaxf(acc, v) : acc + v;
        }
        y[o] = op == CUDA_REDUCE_MEAN ? acc / (float)n_red : acc;
    }
}

} // namespace

extern "C" int cuda_launch_unary(void *stream, cuda_unary_op op, float alpha, const float *x,
                                 float *y, int64_t n)
{
    if (n <= 0)
        return 0;
    unary_kernel<<<blocks_for(n, kThreads), kThreads, 0, (cudaStream_t)stream>>>((int)op, alpha,
                                                                                 x, y, n);
    return launched();
}

extern "C" int cuda_launch_binary(void *stream, cuda_binary_op op, const float *a, const float *b,
                                  float *y, const cuda_walk *w)
{
    const int64_t n = cuda_walk_numel(w);
    if (n <= 0)
        return 0;
    cudaStream_t s = (cudaStream_t)stream;
    if (w->rank <= 1) {
        const int64_t sa = w->rank ? w->strides[0][0] : 0, sb = w->rank ? w->strides[1][0] : 0;
        binary_flat_kernel<<<blocks_for(n, kThreads), kThreads, 0, s>>>((int)op, a, sa, b, sb, y,
                                                                        n);
    } else {
        binary_walk_kernel<<<blocks_for(n, kThreads), kThreads, 0, s>>>((int)op, a, b, y, *w, n);
    }
    return launched();
}

extern "C" int cuda_launch_gather(void *stream, size_t elem_size, const void *x, void *y,
                                  const cuda_walk *w)
{
    const int64_t n = cuda_walk_numel(w);
    if (n <= 0)
        return 0;
    cudaStream_t s = (cudaStream_t)stream;
    const unsigned g = blocks_for(n, kThreads);
    switch (elem_size) {
    case 1:
        gather_kernel<uint8_t><<<g, kThreads, 0, s>>>((const uint8_t *)x, (uint8_t *)y, *w, n);
        break;
    case 2:
        gather_kernel<uint16_t><<<g, kThreads, 0, s>>>((const uint16_t *)x, (uint16_t *)y, *w, n);
        break;
    case 4:
        gather_kernel<uint32_t><<<g, kThreads, 0, s>>>((const uint32_t *)x, (uint32_t *)y, *w, n);
        break;
    case 8:
        gather_kernel<uint64_t><<<g, kThreads, 0, s>>>((const uint64_t *)x, (uint64_t *)y, *w, n);
        break;
    default:
        return (int)cudaErrorInvalidValue;
    }
    return launched();
}

extern "C" int cuda_launch_gather_scaled(void *stream, float scale, const float *x, float *y,
                                         const cuda_walk *w)
{
    const int64_t n = cuda_walk_numel(w);
    if (n <= 0)
        return 0;
    gather_scaled_kernel<<<blocks_for(n, kThreads), kThreads, 0, (cudaStream_t)stream>>>(
        scale, x, y, *w, n);
    return launched();
}

extern "C" int cuda_launch_softmax(void *stream, const float *x, float *y, int64_t rows,
                                   int64_t cols)
{
    if (rows <= 0 || cols <= 0)
        return 0;
    const unsigned g = (unsigned)(rows < kMaxBlocks ? rows : kMaxBlocks);
    softmax_kernel<<<g, row_threads(cols), 0, (cudaStream_t)stream>>>(x, y, rows, cols);
    return launched();
}

extern "C" int cuda_launch_layernorm(void *stream, const float *x, const float *scale,
                                     const float *bias, float *y, int64_t rows, int64_t cols,
                                     float eps)
{
    if (rows <= 0 || cols <= 0)
        return 0;
    const unsigned g = (unsigned)(rows < kMaxBlocks ? rows : kMaxBlocks);
    layernorm_kernel<<<g, row_threads(cols), 0, (cudaStream_t)stream>>>(x, scale, bias, y, rows,
                                                                        cols, eps);
    return launched();
}

extern "C" int cuda_launch_reduce_rows(void *stream, cuda_reduce_op op, const float *x, float *y,
                                       int64_t rows, int64_t cols)
{
    if (rows <= 0)
        return 0;
    const unsigned g = (unsigned)(rows < kMaxBlocks ? rows : kMaxBlocks);
    reduce_rows_kernel<<<g, row_threads(cols), 0, (cudaStream_t)stream>>>((int)op, x, y, rows,
                                                                          cols);
    return launched();
}

extern "C" int cuda_launch_reduce_walk(void *stream, cuda_reduce_op op, const float *x, float *y,
                                       const cuda_walk *kept, const cuda_walk *red)
{
    const int64_t n_out = cuda_walk_numel(kept), n_red = cuda_walk_numel(red);
    if (n_out <= 0)
        return 0;
    reduce_walk_kernel<<<blocks_for(n_out, kThreads), kThreads, 0, (cudaStream_t)stream>>>(
        (int)op, x, y, *kept, *red, n_out, n_red);
    return launched();
}
