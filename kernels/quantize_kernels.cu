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
// 4-bit quantize: each thread holds 8 consecutive elements (one 16-byte load of fp16,
// one 4-byte store of packed codes), so a thread block covers 2048 elements per pass.
constexpr int kPerThread = 8;
constexpr int kTile = kThreads * kPerThread;
constexpr int kMaxPasses = 4096 / kTile;  // blocksize 4096 = two passes
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

// Eight consecutive elements as floats from a 16-byte-aligned address (little-endian:
// element 2j is the low half of 32-bit word j).
__device__ __forceinline__ void Load8(const Half* p, float* v) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    v[2 * j] = ToFloat(Half{static_cast<uint16_t>(w[j] & 0xFFFFu)});
    v[2 * j + 1] = ToFloat(Half{static_cast<uint16_t>(w[j] >> 16)});
  }
}
__device__ __forceinline__ void Load8(const BFloat16* p, float* v) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    v[2 * j] = ToFloat(BFloat16{static_cast<uint16_t>(w[j] & 0xFFFFu)});
    v[2 * j + 1] = ToFloat(BFloat16{static_cast<uint16_t>(w[j] >> 16)});
  }
}
__device__ __forceinline__ void Load8(const float* p, float* v) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

// One thread block handles a tile of max(blocksize, 2048) elements: for blocksize < 2048
// that is 2048 / blocksize quant blocks, each owned by blocksize / 8 threads; for 4096
// one quant block in two passes. Values stay in registers between the absmax reduction
// and the encoding. `vector_io`: `in` is 16-byte and `packed` 4-byte aligned, so whole
// groups of 8 use vector loads and stores (uniform per launch).
template <Fp4Kind kKind, typename T>
__global__ void Quantize4bitKernel(const T* in, int64_t n, int blocksize, bool vector_io,
                                   float* absmax, uint8_t* packed) {
  __shared__ float smax[kThreads];
  const int t = threadIdx.x;
  const int64_t tile = blocksize > kTile ? blocksize : kTile;
  const int passes = static_cast<int>(tile / kTile);
  const int group = blocksize >= kTile ? kThreads : blocksize / kPerThread;
  for (int64_t base = blockIdx.x * tile; base < n; base += static_cast<int64_t>(gridDim.x) * tile) {
    float v[kMaxPasses][kPerThread];
    float m = quant::kMinusFltMax;
#pragma unroll
    for (int p = 0; p < kMaxPasses; ++p) {
      if (p >= passes) break;
      const int64_t e = base + (t + static_cast<int64_t>(p) * kThreads) * kPerThread;
      if (vector_io && e + kPerThread <= n) {
        Load8(in + e, v[p]);
      } else {
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) v[p][j] = e + j < n ? ToFloat(in[e + j]) : 0.0f;
      }
#pragma unroll
      for (int j = 0; j < kPerThread; ++j) {
        if (e + j < n) m = fmaxf(m, fabsf(v[p][j]));
      }
    }
    smax[t] = m;
    __syncthreads();
    GroupMax(smax, group);
    const float block_absmax = smax[t & ~(group - 1)];
    const int64_t first = base + static_cast<int64_t>(t) * kPerThread;
    if ((t & (group - 1)) == 0 && first < n) absmax[first / blocksize] = block_absmax;
    const float inv = 1.0f / block_absmax;
#pragma unroll
    for (int p = 0; p < kMaxPasses; ++p) {
      if (p >= passes) break;
      const int64_t e = base + (t + static_cast<int64_t>(p) * kThreads) * kPerThread;
      if (e >= n) break;
      // Elements past n are 0 in v: the odd tail's pad is encoded as 0 * inv, as the CPU.
      uint8_t bytes[kPerThread / 2];
#pragma unroll
      for (int j = 0; j < kPerThread / 2; ++j) {
        const uint8_t hi = quant::Encode4bit<kKind>(v[p][2 * j] * inv);
        const uint8_t lo = quant::Encode4bit<kKind>(v[p][2 * j + 1] * inv);
        bytes[j] = static_cast<uint8_t>((hi << 4) | lo);
      }
      if (vector_io && e + kPerThread <= n) {
        *reinterpret_cast<uint32_t*>(packed + e / 2) =
            static_cast<uint32_t>(bytes[0]) | (static_cast<uint32_t>(bytes[1]) << 8) |
            (static_cast<uint32_t>(bytes[2]) << 16) | (static_cast<uint32_t>(bytes[3]) << 24);
      } else {
#pragma unroll
        for (int j = 0; j < kPerThread / 2; ++j) {
          if (e + 2 * j < n) packed[e / 2 + j] = bytes[j];
        }
      }
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

template <typename From, typename To>
__global__ void CastKernel(const From* in, int64_t n, To* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = FromFloat<To>(ToFloat(in[i]));
  }
}

template <typename From>
cudaError_t CastFrom(const From* in, int64_t n, GpuElement to, void* out, cudaStream_t stream) {
  const int grid = GridFor((n + kThreads - 1) / kThreads);
  switch (to) {
    case GpuElement::kF32:
      CastKernel<<<grid, kThreads, 0, stream>>>(in, n, static_cast<float*>(out));
      break;
    case GpuElement::kF16:
      CastKernel<<<grid, kThreads, 0, stream>>>(in, n, static_cast<Half*>(out));
      break;
    case GpuElement::kBF16:
      CastKernel<<<grid, kThreads, 0, stream>>>(in, n, static_cast<BFloat16*>(out));
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <Fp4Kind kKind>
cudaError_t Quantize4bitAs(GpuElement element, const void* in, int64_t n, int blocksize,
                           float* absmax, uint8_t* packed, cudaStream_t stream) {
  const int64_t tile = std::max(blocksize, kTile);
  const int grid = GridFor((n + tile - 1) / tile);
  const bool vector_io = reinterpret_cast<uintptr_t>(in) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(packed) % 4 == 0;
  switch (element) {
    case GpuElement::kF32:
      Quantize4bitKernel<kKind, float><<<grid, kThreads, 0, stream>>>(
          static_cast<const float*>(in), n, blocksize, vector_io, absmax, packed);
      break;
    case GpuElement::kF16:
      Quantize4bitKernel<kKind, Half><<<grid, kThreads, 0, stream>>>(
          static_cast<const Half*>(in), n, blocksize, vector_io, absmax, packed);
      break;
    case GpuElement::kBF16:
      Quantize4bitKernel<kKind, BFloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const BFloat16*>(in), n, blocksize, vector_io, absmax, packed);
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

cudaError_t LaunchCast(GpuElement from, const void* in, int64_t n, GpuElement to, void* out,
                       cudaStream_t stream) {
  if (n < 1) return cudaErrorInvalidValue;
  switch (from) {
    case GpuElement::kF32:
      return CastFrom(static_cast<const float*>(in), n, to, out, stream);
    case GpuElement::kF16:
      return CastFrom(static_cast<const Half*>(in), n, to, out, stream);
    case GpuElement::kBF16:
      return CastFrom(static_cast<const BFloat16*>(in), n, to, out, stream);
    default:
      return cudaErrorInvalidValue;
  }
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
