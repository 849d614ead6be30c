#include "quant/gptq_awq.h"

#include <cstddef>
#include <vector>

#include "quant/float16.h"

namespace loadstar::quant {

void DequantizeGptq(const GptqShape& s, bool v2, const int32_t* qweight, const int32_t* qzeros,
                    const uint16_t* scales, const int32_t* g_idx, float* out) {
  const int64_t zero_words = s.out * s.bits / 32;
  // Zeros and scales per (group, column), decoded once.
  std::vector<int32_t> zeros(static_cast<size_t>(s.groups() * s.out));
  std::vector<float> scale(zeros.size());
  for (int64_t g = 0; g < s.groups(); ++g) {
    for (int64_t n = 0; n < s.out; ++n) {
      const int32_t stored =
          static_cast<int32_t>(PackedValue(qzeros + g * zero_words, 1, s.bits, n));
      zeros[g * s.out + n] = v2 ? stored : stored + 1;
      scale[g * s.out + n] = HalfBitsToFloat(scales[g * s.out + n]);
    }
  }
  for (int64_t k = 0; k < s.in; ++k) {
    const int64_t g = g_idx != nullptr ? g_idx[k] : k / s.group_size;
    for (int64_t n = 0; n < s.out; ++n) {
      const int32_t q = static_cast<int32_t>(PackedValue(qweight + n, s.out, s.bits, k));
      out[n * s.in + k] = scale[g * s.out + n] * static_cast<float>(q - zeros[g * s.out + n]);
    }
  }
}

void DequantizeAwq(const GptqShape& s, const int32_t* qweight, const int32_t* qzeros,
                   const uint16_t* scales, float* out) {
  static constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  const int64_t words = s.out / 8;
  for (int64_t k = 0; k < s.in; ++k) {
    const int64_t g = k / s.group_size;
    for (int64_t c = 0; c < words; ++c) {
      const uint32_t qw = static_cast<uint32_t>(qweight[k * words + c]);
      const uint32_t zw = static_cast<uint32_t>(qzeros[g * words + c]);
      for (int i = 0; i < 8; ++i) {
        const int64_t n = 8 * c + kOrder[i];
        const int32_t q = static_cast<int32_t>((qw >> (4 * i)) & 0xF);
        const int32_t z = static_cast<int32_t>((zw >> (4 * i)) & 0xF);
        out[n * s.in + k] = static_cast<float>(q - z) * HalfBitsToFloat(scales[g * s.out + n]);
      }
    }
  }
}

}  // namespace loadstar::quant
