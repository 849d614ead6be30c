#include "quant/double_quant.h"

#include <algorithm>

#include "quant/blockwise_math.h"
#include "quant/quant_types.h"

namespace loadstar {
namespace quant {

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
  out.codes.resize(static_cast<size_t>(n));
  out.nested_absmax.resize(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kNestedBlocksize;
    const int64_t len = std::min<int64_t>(kNestedBlocksize, n - begin);
    Quantize8bitBlock(kDynamicMapSigned, centered.data() + begin, len, &out.nested_absmax[b],
                      out.codes.data() + begin);
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
