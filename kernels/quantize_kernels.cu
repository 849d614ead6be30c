// Quantization kernels. Each per-element decision is a call into quant/blockwise_math.h
// (the CPU reference's own functions); the kernels only decide which thread handles which
// elements. Block absmax is a max, which does not depend on reduction order, so the
// parallel reduction gives the CPU's value bit for bit.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/quantize_kernels.h"
#include "quant/blockwise_math.h"

namespace loadstar::kernels {
namespace {

using quant::Fp4Kind;

constexpr int kThreads = 256;
// Elements one pass of a thread block covers: two per thread (one packed byte).
constexpr int kPairTile = 2 * kThreads;
constexpr int kNestedBlock = 256;
constexpr int64_t kMaxGrid = 1 << 20;

int GridFor(int64_t units) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(units, kMaxGrid)));
}

// Max-reduces smax[] within aligned groups of `group` threads (a power of two <= kThreads).
__device__ void GroupMax(float* smax, int group) {
  const int t = threadIdx.x;
  for (int s = group / 2; s > 0; s >>= 1) {
    if ((t & (group - 1)) < s) smax[t] = fmaxf(smax[t], smax[t + s]);
    __syncthreads();
  }
}

// One thread block handles a tile of max(blocksize, 512) elements: for blocksize < 512
// that is 512 / blocksize quant blocks, each owned by blocksize / 2 threads; for larger
// blocksizes one quant block, swept in blocksize / 512 passes.
template <Fp4Kind kKind, typename T>
__global__ void Quantize4bitKernel(const T* in, int64_t n, int blocksize, float* absmax,
                                   uint8_t* packed) {
  __shared__ float smax[kThreads];
  const int t = threadIdx.x;
  const int64_t tile = blocksize > kPairTile ? blocksize : kPairTile;
  const int passes = static_cast<int>(tile / kPairTile);
  const int group = blocksize >= kPairTile ? kThreads : blocksize / 2;
  for (int64_t base = blockIdx.x * tile; base < n; base += static_cast<int64_t>(gridDim.x) * tile) {
    float m = quant::kMinusFltMax;
    for (int p = 0; p < passes; ++p) {
      const int64_t e = base + 2 * (t + static_cast<int64_t>(p) * kThreads);
      if (e < n) m = fmaxf(m, fabsf(ToFloat(in[e])));
      if (e + 1 < n) m = fmaxf(m, fabsf(ToFloat(in[e + 1])));
    }
    smax[t] = m;
    __syncthreads();
    GroupMax(smax, group);
    const float block_absmax = smax[t & ~(group - 1)];
    const int64_t first = base + 2 * static_cast<int64_t>(t);
    if ((t & (group - 1)) == 0 && first < n) absmax[first / blocksize] = block_absmax;
    const float inv = 1.0f / block_absmax;
    for (int p = 0; p < passes; ++p) {
      const int64_t e = base + 2 * (t + static_cast<int64_t>(p) * kThreads);
      if (e >= n) break;
      const uint8_t hi = quant::Encode4bit<kKind>(ToFloat(in[e]) * inv);
      const float next = e + 1 < n ? ToFloat(in[e + 1]) : 0.0f;  // tail pads with 0
      const uint8_t lo = quant::Encode4bit<kKind>(next * inv);
      packed[e / 2] = static_cast<uint8_t>((hi << 4) | lo);
    }
    __syncthreads();  // smax is reused by the next tile
  }
}

template <Fp4Kind kKind, typename T>
__global__ void Dequantize4bitKernel(const uint8_t* packed, const float* absmax, int64_t n,
                                     int blocksize, T* out) {
  const int64_t bytes = (n + 1) / 2;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < bytes;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = 2 * j;
    const int64_t count = n - e < 2 ? n - e : 2;
    quant::Dequantize4bitBlock<kKind, T>(packed + j, count, absmax[e / blocksize], out + e);
  }
}

__global__ void QuantizeNestedKernel(const float* absmax, int64_t n, float offset,
                                     const float* code, uint8_t* q, float* nested_absmax) {
  __shared__ float code_s[kNestedBlock];
  __shared__ float smax[kNestedBlock];
  const int t = threadIdx.x;
  code_s[t] = code[t];
  for (int64_t b = blockIdx.x; b * kNestedBlock < n; b += gridDim.x) {
    const int64_t i = b * kNestedBlock + t;
    const float x = i < n ? absmax[i] - offset : 0.0f;
    smax[t] = i < n ? fabsf(x) : quant::kMinusFltMax;
    __syncthreads();
    GroupMax(smax, kNestedBlock);
    const float block_absmax = smax[0];
    if (t == 0) nested_absmax[b] = block_absmax;
    if (i < n) q[i] = quant::QuantizeDynamic(code_s, x * (1.0f / block_absmax));
    __syncthreads();
  }
}

__global__ void DequantizeNestedKernel(const uint8_t* q, const float* nested_absmax, int64_t n,
                                       float offset, const float* code, float* absmax) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    absmax[i] =
        quant::DequantizeNestedAbsmax(code, q[i], nested_absmax[i / kNestedBlock], offset);
  }
}

// LLM.int8 works on fp16: other inputs are cast to fp16 first (RNE), as quant/int8.cc does.
template <typename T>
__device__ __forceinline__ float AsHalfValue(T x) {
  return ToFloat(FromFloat<Half>(ToFloat(x)));
}

template <typename T>
__global__ void QuantizeInt8RowsKernel(const T* in, int64_t rows, int64_t cols, float threshold,
                                       int8_t* q, float* row_scale) {
  __shared__ float smax[kThreads];
  const int t = threadIdx.x;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = in + r * cols;
    float m = 0.0f;
    for (int64_t c = t; c < cols; c += kThreads) {
      const float a = fabsf(AsHalfValue(row[c]));
      if (!(threshold > 0.0f && a >= threshold)) m = fmaxf(m, a);
    }
    smax[t] = m;
    __syncthreads();
    GroupMax(smax, kThreads);
    const float scb = smax[0];
    if (t == 0) row_scale[r] = scb;
    const float scale = quant::Int8RowScale(scb);
    for (int64_t c = t; c < cols; c += kThreads) {
      const float x = AsHalfValue(row[c]);
      const bool outlier = threshold > 0.0f && fabsf(x) >= threshold;
      q[r * cols + c] = outlier ? int8_t{0} : quant::Int8Quantize(x, scale);
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void DequantizeInt8RowsKernel(const int8_t* q, const float* row_scale, int64_t rows,
                                         int64_t cols, T* out) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = FromFloat<T>(quant::Int8Dequantize(q[i], row_scale[i / cols]));
  }
}

template <Fp4Kind kKind>
cudaError_t Quantize4bitAs(GpuElement element, const void* in, int64_t n, int blocksize,
                           float* absmax, uint8_t* packed, cudaStream_t stream) {
  const int64_t tile = std::max(blocksize, kPairTile);
  const int grid = GridFor((n + tile - 1) / tile);
  switch (element) {
    case GpuElement::kF32:
      Quantize4bitKernel<kKind, float><<<grid, kThreads, 0, stream>>>(
          static_cast<const float*>(in), n, blocksize, absmax, packed);
      break;
    case GpuElement::kF16:
      Quantize4bitKernel<kKind, Half><<<grid, kThreads, 0, stream>>>(
          static_cast<const Half*>(in), n, blocksize, absmax, packed);
      break;
    case GpuElement::kBF16:
      Quantize4bitKernel<kKind, BFloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const BFloat16*>(in), n, blocksize, absmax, packed);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <Fp4Kind kKind>
cudaError_t Dequantize4bitAs(GpuElement element, const uint8_t* packed, const float* absmax,
                             int64_t n, int blocksize, void* out, cudaStream_t stream) {
  const int grid = GridFor(((n + 1) / 2 + kThreads - 1) / kThreads);
  switch (element) {
    case GpuElement::kF32:
      Dequantize4bitKernel<kKind, float><<<grid, kThreads, 0, stream>>>(
          packed, absmax, n, blocksize, static_cast<float*>(out));
      break;
    case GpuElement::kF16:
      Dequantize4bitKernel<kKind, Half><<<grid, kThreads, 0, stream>>>(
          packed, absmax, n, blocksize, static_cast<Half*>(out));
      break;
    case GpuElement::kBF16:
      Dequantize4bitKernel<kKind, BFloat16><<<grid, kThreads, 0, stream>>>(
          packed, absmax, n, blocksize, static_cast<BFloat16*>(out));
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

bool IsSupportedBlocksize(int64_t blocksize) {
  return blocksize >= 32 && blocksize <= 4096 && (blocksize & (blocksize - 1)) == 0;
}

cudaError_t LaunchQuantize4bit(Gpu4bit kind, GpuElement element, const void* in, int64_t n,
                               int blocksize, float* absmax, uint8_t* packed,
                               cudaStream_t stream) {
  if (n < 1 || !IsSupportedBlocksize(blocksize)) return cudaErrorInvalidValue;
  return kind == Gpu4bit::kNf4
             ? Quantize4bitAs<Fp4Kind::kNf4>(element, in, n, blocksize, absmax, packed, stream)
             : Quantize4bitAs<Fp4Kind::kFp4>(element, in, n, blocksize, absmax, packed, stream);
}

cudaError_t LaunchDequantize4bit(Gpu4bit kind, GpuElement element, const uint8_t* packed,
                                 const float* absmax, int64_t n, int blocksize, void* out,
                                 cudaStream_t stream) {
  if (n < 1 || !IsSupportedBlocksize(blocksize)) return cudaErrorInvalidValue;
  return kind == Gpu4bit::kNf4
             ? Dequantize4bitAs<Fp4Kind::kNf4>(element, packed, absmax, n, blocksize, out, stream)
             : Dequantize4bitAs<Fp4Kind::kFp4>(element, packed, absmax, n, blocksize, out, stream);
}

cudaError_t LaunchQuantizeNestedAbsmax(const float* absmax, int64_t n, float offset,
                                       const float* code, uint8_t* q, float* nested_absmax,
                                       cudaStream_t stream) {
  if (n < 1) return cudaErrorInvalidValue;
  const int grid = GridFor((n + kNestedBlock - 1) / kNestedBlock);
  QuantizeNestedKernel<<<grid, kNestedBlock, 0, stream>>>(absmax, n, offset, code, q,
                                                          nested_absmax);
  return cudaGetLastError();
}

cudaError_t LaunchDequantizeNestedAbsmax(const uint8_t* q, const float* nested_absmax,
                                         int64_t n, float offset, const float* code,
                                         float* absmax, cudaStream_t stream) {
  if (n < 1) return cudaErrorInvalidValue;
  DequantizeNestedKernel<<<GridFor((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      q, nested_absmax, n, offset, code, absmax);
  return cudaGetLastError();
}

cudaError_t LaunchQuantizeInt8Rows(GpuElement element, const void* in, int64_t rows,
                                   int64_t cols, float threshold, int8_t* q, float* row_scale,
                                   cudaStream_t stream) {
  if (rows < 1 || cols < 1) return cudaErrorInvalidValue;
  const int grid = GridFor(rows);
  switch (element) {
    case GpuElement::kF32:
      QuantizeInt8RowsKernel<float><<<grid, kThreads, 0, stream>>>(
          static_cast<const float*>(in), rows, cols, threshold, q, row_scale);
      break;
    case GpuElement::kF16:
      QuantizeInt8RowsKernel<Half><<<grid, kThreads, 0, stream>>>(
          static_cast<const Half*>(in), rows, cols, threshold, q, row_scale);
      break;
    case GpuElement::kBF16:
      QuantizeInt8RowsKernel<BFloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const BFloat16*>(in), rows, cols, threshold, q, row_scale);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t LaunchDequantizeInt8Rows(const int8_t* q, const float* row_scale, int64_t rows,
                                     int64_t cols, GpuElement element, void* out,
                                     cudaStream_t stream) {
  if (rows < 1 || cols < 1) return cudaErrorInvalidValue;
  const int grid = GridFor((rows * cols + kThreads - 1) / kThreads);
  switch (element) {
    case GpuElement::kF32:
      DequantizeInt8RowsKernel<float><<<grid, kThreads, 0, stream>>>(
          q, row_scale, rows, cols, static_cast<float*>(out));
      break;
    case GpuElement::kF16:
      DequantizeInt8RowsKernel<Half><<<grid, kThreads, 0, stream>>>(
          q, row_scale, rows, cols, static_cast<Half*>(out));
      break;
    case GpuElement::kBF16:
      DequantizeInt8RowsKernel<BFloat16><<<grid, kThreads, 0, stream>>>(
          q, row_scale, rows, cols, static_cast<BFloat16*>(out));
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace loadstar::kernels
