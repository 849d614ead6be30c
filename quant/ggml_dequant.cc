#include "quant/ggml_dequant.h"

#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "quant/ggml_blocks.h"
#include "quant/policy.h"

namespace loadstar::quant {

void DequantizeGgmlRef(GgmlType type, const uint8_t* in, int64_t blocks, float* out) {
  const GgmlTypeInfo info = GgmlInfo(type);
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* p = in + b * info.block_bytes;
    float* y = out + b * info.block_elems;
    switch (type) {
      case GgmlType::kF32:
        std::memcpy(y, p, 4);
        break;
      case GgmlType::kF16:
        *y = ggml::Fp16At(p);
        break;
      case GgmlType::kBF16:
        *y = BFloat16BitsToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8)));
        break;
      case GgmlType::kQ4_0: ggml::DequantizeBlockQ4_0(p, y); break;
      case GgmlType::kQ4_1: ggml::DequantizeBlockQ4_1(p, y); break;
      case GgmlType::kQ5_0: ggml::DequantizeBlockQ5_0(p, y); break;
      case GgmlType::kQ5_1: ggml::DequantizeBlockQ5_1(p, y); break;
      case GgmlType::kQ8_0: ggml::DequantizeBlockQ8_0(p, y); break;
      case GgmlType::kQ2_K: ggml::DequantizeBlockQ2_K(p, y); break;
      case GgmlType::kQ3_K: ggml::DequantizeBlockQ3_K(p, y); break;
      case GgmlType::kQ4_K: ggml::DequantizeBlockQ4_K(p, y); break;
      case GgmlType::kQ5_K: ggml::DequantizeBlockQ5_K(p, y); break;
      case GgmlType::kQ6_K: ggml::DequantizeBlockQ6_K(p, y); break;
    }
  }
}

namespace internal {
GgmlDequantizeFn GgmlDequantizeKernel(Isa isa) {
  return isa == Isa::kGeneric ? &DequantizeGgmlRef : &DequantizeGgmlAvx2;
}
}  // namespace internal

void DequantizeGgml(GgmlType type, const uint8_t* in, int64_t blocks, float* out,
                    int threads) {
  static const internal::GgmlDequantizeFn kernel =
      internal::GgmlDequantizeKernel(internal::BestIsa());
  const GgmlTypeInfo info = GgmlInfo(type);
  // Grain: about 64 KiB of output per task.
  const int64_t grain = std::max<int64_t>(1, 16384 / info.block_elems);
  internal::ParallelFor(blocks, grain, threads, [&](int64_t begin, int64_t end) {
    kernel(type, in + begin * info.block_bytes, end - begin, out + begin * info.block_elems);
  });
}

absl::Status DequantizeGgmlTo(GgmlType type, const uint8_t* in, int64_t blocks,
                              DType out_dtype, void* out, int threads) {
  if (out_dtype == DType::kF32) {
    DequantizeGgml(type, in, blocks, static_cast<float*>(out), threads);
    return absl::OkStatus();
  }
  if (out_dtype != DType::kF16 && out_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(fmt::format(
        "ggml dequantization writes F32, F16 or BF16, not {}", DTypeName(out_dtype)));
  }
  // Through an fp32 buffer in pieces that stay in cache.
  const GgmlTypeInfo info = GgmlInfo(type);
  const int64_t step = std::max<int64_t>(1, 65536 / info.block_elems);
  std::unique_ptr<float[]> buffer(new float[step * info.block_elems]);
  char* dst = static_cast<char*>(out);
  for (int64_t b = 0; b < blocks; b += step) {
    const int64_t n = std::min(step, blocks - b);
    DequantizeGgml(type, in + b * info.block_bytes, n, buffer.get(), threads);
    const int64_t elems = n * info.block_elems;
    absl::Status cast = CastFloatTensor(DType::kF32, buffer.get(), elems, out_dtype, dst);
    if (!cast.ok()) return cast;
    dst += elems * DTypeSize(out_dtype);
  }
  return absl::OkStatus();
}

}  // namespace loadstar::quant
