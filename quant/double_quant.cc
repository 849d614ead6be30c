#include "quant/double_quant.h"

#include <algorithm>

#include "quant/blockwise_math.h"
#include "quant/cpu_kernels.h"
#include "quant/quant_types.h"

namespace loadstar {
namespace quant {
namespace {

// kDynamicMapSigned midpoints as dQuantize computes them ((code[k] + code[k+1]) * 0.5f),
// padded with +inf.
struct Midpoints {
  float m[256];
  Midpoints() {
    for (int k = 0; k < 255; ++k) m[k] = (kDynamicMapSigned[k] + kDynamicMapSigned[k + 1]) * 0.5f;
    m[255] = __builtin_inff();
  }
};

const Midpoints& DynamicMidpoints() {
  static const Midpoints mids;
  return mids;
}

}  // namespace

uint8_t QuantizeDynamicFast(float x) {
  // The branch-free count is ~7x faster than the data-dependent branches of the search
  // (tests/quant/double_quant_test.cc checks equality on every midpoint and code value).
  return internal::DynamicCode(kDynamicMapSigned, DynamicMidpoints().m, x);
}

float MeanOfAbsmax(const float* absmax, int64_t n) {
  if (n <= 0) return 0.0f;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += absmax[i];
  const float sum_f = static_cast<float>(sum);
  return sum_f / static_cast<float>(n);
}

NestedAbsmax NestAbsmax(const float* absmax, int64_t n) {
  return NestAbsmaxWithOffset(absmax, n, MeanOfAbsmax(absmax, n));
}

NestedAbsmax NestAbsmaxWithOffset(const float* absmax, int64_t n, float offset) {
  NestedAbsmax out;
  out.offset = offset;
  std::vector<float> centered(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) centered[i] = absmax[i] - out.offset;
  const int64_t blocks = (n + kNestedBlocksize - 1) / kNestedBlocksize;
  const internal::CpuKernels& kernels = internal::BestKernels();
  out.codes.resize(static_cast<size_t>(n));
  out.nested_absmax.resize(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kNestedBlocksize;
    const int64_t len = std::min<int64_t>(kNestedBlocksize, n - begin);
    // Quantize8bitBlock with the fast (bit-identical) code search.
    const float absmax = BlockAbsmax(centered.data() + begin, len);
    out.nested_absmax[b] = absmax;
    // The code search is most of double quant's time: the SIMD kernels run it 8 or 16
    // values at a time (the same bits as QuantizeDynamicFast; tested per ISA).
    kernels.dynamic_codes(kDynamicMapSigned, DynamicMidpoints().m, centered.data() + begin, len,
                          1.0f / absmax, out.codes.data() + begin);
  }
  return out;
}

void UnnestAbsmax(const NestedAbsmax& nested, float* out) {
  const int64_t n = static_cast<int64_t>(nested.codes.size());
  for (int64_t i = 0; i < n; ++i) {
    out[i] = DequantizeNestedAbsmax(kDynamicMapSigned, nested.codes[i],
                                    nested.nested_absmax[i / kNestedBlocksize], nested.offset);
  }
}

}  // namespace quant
}  // namespace loadstar
