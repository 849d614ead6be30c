#include "kernels/ggml_dequant_kernels.h"

#include "quant/ggml_blocks.h"

namespace loadstar::kernels {
namespace {

namespace g = quant::ggml;
using quant::GgmlType;

// One thread per block: blocks are small (at most 256 outputs) and independent.
template <int kBlockBytes, int kBlockElems, void (*kDequantize)(const uint8_t*, float*)>
__global__ void DequantizeBlocksKernel(const uint8_t* in, int64_t blocks, float* out) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= blocks) return;
  kDequantize(in + b * kBlockBytes, out + b * kBlockElems);
}

__device__ void F32(const uint8_t* p, float* y) {
  *y = BitsToFloat(static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                   (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24));
}
__device__ void F16(const uint8_t* p, float* y) { *y = g::Fp16At(p); }
__device__ void BF16(const uint8_t* p, float* y) {
  *y = BFloat16BitsToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

template <int kBlockBytes, int kBlockElems, void (*kDequantize)(const uint8_t*, float*)>
cudaError_t Launch(const uint8_t* in, int64_t blocks, float* out, cudaStream_t stream) {
  constexpr int kThreads = 128;
  const int64_t grid = (blocks + kThreads - 1) / kThreads;
  DequantizeBlocksKernel<kBlockBytes, kBlockElems, kDequantize>
      <<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(in, blocks, out);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchDequantizeGgml(GgmlType type, const uint8_t* in, int64_t blocks, float* out,
                                 cudaStream_t stream) {
  if (blocks <= 0) return cudaSuccess;
  switch (type) {
    case GgmlType::kF32: return Launch<4, 1, F32>(in, blocks, out, stream);
    case GgmlType::kF16: return Launch<2, 1, F16>(in, blocks, out, stream);
    case GgmlType::kBF16: return Launch<2, 1, BF16>(in, blocks, out, stream);
    case GgmlType::kQ4_0: return Launch<18, 32, g::DequantizeBlockQ4_0>(in, blocks, out, stream);
    case GgmlType::kQ4_1: return Launch<20, 32, g::DequantizeBlockQ4_1>(in, blocks, out, stream);
    case GgmlType::kQ5_0: return Launch<22, 32, g::DequantizeBlockQ5_0>(in, blocks, out, stream);
    case GgmlType::kQ5_1: return Launch<24, 32, g::DequantizeBlockQ5_1>(in, blocks, out, stream);
    case GgmlType::kQ8_0: return Launch<34, 32, g::DequantizeBlockQ8_0>(in, blocks, out, stream);
    case GgmlType::kQ2_K: return Launch<84, 256, g::DequantizeBlockQ2_K>(in, blocks, out, stream);
    case GgmlType::kQ3_K: return Launch<110, 256, g::DequantizeBlockQ3_K>(in, blocks, out, stream);
    case GgmlType::kQ4_K: return Launch<144, 256, g::DequantizeBlockQ4_K>(in, blocks, out, stream);
    case GgmlType::kQ5_K: return Launch<176, 256, g::DequantizeBlockQ5_K>(in, blocks, out, stream);
    case GgmlType::kQ6_K: return Launch<210, 256, g::DequantizeBlockQ6_K>(in, blocks, out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace loadstar::kernels
