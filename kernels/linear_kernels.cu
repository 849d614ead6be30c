#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/linear_kernels.h"
#include "quant/blockwise_math.h"

namespace loadstar::kernels {
namespace {

constexpr int kThreads = 256;
constexpr float kInt8MatmulDequant = 6.200012e-5f;  // quant::kInt8MatmulDequant

int GridFor(int64_t elements) {
  return static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>((elements + kThreads - 1) / kThreads, int64_t{1} << 20)));
}

#define LOADSTAR_GRID_STRIDE(i, total)                                                   \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (total); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void MarkOutlierColumnsKernel(const Half* x, int64_t m, int64_t k, float threshold,
                                         int32_t* flags) {
  LOADSTAR_GRID_STRIDE(i, m * k) {
    if (fabsf(ToFloat(x[i])) >= threshold) flags[i % k] = 1;  // benign identical writes
  }
}

__global__ void ZeroFlaggedColumnsKernel(int8_t* q, int64_t m, int64_t k, const int32_t* flags) {
  LOADSTAR_GRID_STRIDE(i, m * k) {
    if (flags[i % k]) q[i] = 0;
  }
}

__global__ void OutlierOperandsKernel(const Half* x, int64_t m, int64_t k, const int8_t* w_q,
                                      const float* scb, int64_t n, const int32_t* flags,
                                      Half* x_out, Half* w_out) {
  LOADSTAR_GRID_STRIDE(i, m * k) { x_out[i] = flags[i % k] ? x[i] : Half{0}; }
  LOADSTAR_GRID_STRIDE(i, n * k) {
    w_out[i] = flags[i % k] ? FromFloat<Half>(quant::Int8Dequantize(w_q[i], scb[i / k]))
                            : Half{0};
  }
}

__global__ void Int8MatmulDequantKernel(const int32_t* acc, const float* row_scale,
                                        const float* scb, int64_t m, int64_t n, Half* y) {
  LOADSTAR_GRID_STRIDE(i, m * n) {
    float v = LOADSTAR_FMUL_RN(static_cast<float>(acc[i]), kInt8MatmulDequant);
    v = LOADSTAR_FMUL_RN(v, row_scale[i / n]);
    v = LOADSTAR_FMUL_RN(v, scb[i % n]);
    y[i] = FromFloat<Half>(v);
  }
}

}  // namespace

cudaError_t LaunchMarkOutlierColumns(const Half* x, int64_t m, int64_t k, float threshold,
                                     int32_t* flags, cudaStream_t stream) {
  if (m < 1 || k < 1 || !(threshold > 0.0f)) return cudaErrorInvalidValue;
  MarkOutlierColumnsKernel<<<GridFor(m * k), kThreads, 0, stream>>>(x, m, k, threshold, flags);
  return cudaGetLastError();
}

cudaError_t LaunchZeroFlaggedColumns(int8_t* q, int64_t m, int64_t k, const int32_t* flags,
                                     cudaStream_t stream) {
  if (m < 1 || k < 1) return cudaErrorInvalidValue;
  ZeroFlaggedColumnsKernel<<<GridFor(m * k), kThreads, 0, stream>>>(q, m, k, flags);
  return cudaGetLastError();
}

cudaError_t LaunchOutlierOperands(const Half* x, int64_t m, int64_t k, const int8_t* w_q,
                                  const float* scb, int64_t n, const int32_t* flags,
                                  Half* x_out, Half* w_out, cudaStream_t stream) {
  if (m < 1 || k < 1 || n < 1) return cudaErrorInvalidValue;
  OutlierOperandsKernel<<<GridFor(std::max(m, n) * k), kThreads, 0, stream>>>(
      x, m, k, w_q, scb, n, flags, x_out, w_out);
  return cudaGetLastError();
}

cudaError_t LaunchInt8MatmulDequant(const int32_t* acc, const float* row_scale,
                                    const float* scb, int64_t m, int64_t n, Half* y,
                                    cudaStream_t stream) {
  if (m < 1 || n < 1) return cudaErrorInvalidValue;
  Int8MatmulDequantKernel<<<GridFor(m * n), kThreads, 0, stream>>>(acc, row_scale, scb, m, n, y);
  return cudaGetLastError();
}

}  // namespace loadstar::kernels
