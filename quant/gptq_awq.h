// GPTQ and AWQ (gemm) packed Linear weights (SPEC §6.1) and their dequantization to the
// HF weight layout [out, in] in fp32. Facts (SPEC §6.1; AutoGPTQ / AutoAWQ layouts):
//   GPTQ: qweight int32 [in*bits/32, out], each column a little-endian bit stream of `in`
//         `bits`-bit values (LSB first; 3-bit values straddle words); qzeros int32
//         [groups, out*bits/32], each row a bit stream of `out` values; scales fp16
//         [groups, out]; g_idx int32 [in] (group of each input row; without it
//         g = k / group_size). W[n, k] = scale[g, n] * (q[k, n] - zero[g, n]) with
//         zero = stored + 1 for checkpoint_format gptq (v1 stores zero - 1) and stored for
//         gptq_v2.
//   AWQ gemm: qweight int32 [in, out/8], word c of row k holds columns 8c + order[i] in
//         nibble i, order = [0, 2, 4, 6, 1, 3, 5, 7]; qzeros int32 [in/group, out/8] the
//         same way; scales fp16 [in/group, out]; W[n, k] = (q - z) * s.
// Arithmetic: one fp32 multiply of the widened fp16 scale and the exact integer
// difference, rounded once (then to torch_dtype by the caller), as the numpy reference
// in tests/data/gptq_reference.py.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>

namespace loadstar::quant {

struct GptqShape {
  int bits = 4;            // 2, 3, 4 or 8 (GPTQ); 4 (AWQ)
  int64_t in = 0;          // in_features
  int64_t out = 0;         // out_features
  int64_t group_size = 0;  // resolved: `in` for group_size -1
  int64_t groups() const { return (in + group_size - 1) / group_size; }
};

// Value `i` of a little-endian bit stream of `bits`-bit values held in 32-bit words
// `stride` words apart (stride 1: consecutive words).
inline uint32_t PackedValue(const int32_t* words, int64_t stride, int bits, int64_t i) {
  const int64_t bit = i * bits;
  const int64_t w = bit / 32;
  const int shift = static_cast<int>(bit % 32);
  uint64_t v = static_cast<uint32_t>(words[w * stride]) >> shift;
  if (shift + bits > 32) v |= static_cast<uint64_t>(static_cast<uint32_t>(words[(w + 1) * stride])) << (32 - shift);
  return static_cast<uint32_t>(v & ((1u << bits) - 1u));
}

// out: [shape.out, shape.in] fp32. g_idx may be null. v2: checkpoint_format gptq_v2.
void DequantizeGptq(const GptqShape& shape, bool v2, const int32_t* qweight,
                    const int32_t* qzeros, const uint16_t* scales, const int32_t* g_idx,
                    float* out);

// out: [shape.out, shape.in] fp32. REQUIRES: shape.bits == 4, shape.out % 8 == 0.
void DequantizeAwq(const GptqShape& shape, const int32_t* qweight, const int32_t* qzeros,
                   const uint16_t* scales, float* out);

}  // namespace loadstar::quant
