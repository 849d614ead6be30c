// Double quantization ("nested" quant state, bnb_4bit_use_double_quant) of the fp32 absmax
// vector of a 4-bit tensor, as bitsandbytes' quantize_4bit(compress_statistics=True):
//   offset  = absmax.mean()                       (fp32)
//   codes   = 8-bit blockwise(absmax - offset, blocksize 256, signed dynamic map)
//             i.e. per 256 values: nested_absmax = max|v|, code = dQuantize(map, v * (1/nested_absmax))
//   rebuilt = map[code] * nested_absmax[i / 256] + offset   (two roundings, never an FMA)
//
// The mean: torch computes it as a float sum (CPU: cascade sum, then / n; CUDA: a tree sum,
// then * (1/n)). MeanOfAbsmax sums in double (exact for any realistic count), rounds the sum
// to fp32 and divides by n in fp32, which equals torch's CPU result whenever torch's float
// sum is the correctly rounded sum (true for every golden vector); a CUDA-built state can
// differ in the last bit of `offset`. Measured against torch 2.15 CPU on 3000 random
// vectors, torch's float cascade sum is not correctly rounded about a third of the time, so
// the offset differs from torch's by 1 ulp in those cases (tests allow 1 ulp and check the
// rest of the pipeline bit for bit with torch's offset via NestAbsmaxWithOffset). The offset is stored with the state, so a rebuild is
// always consistent with the state it reads.
#pragma once

#include <cstdint>
#include <vector>

namespace loadstar {
namespace quant {

// bitsandbytes' create_dynamic_map(signed=True): 256 sorted fp32 values, [0] = -0.99296875,
// [127] = 0, [255] = 1 (dynamic_map.cc).
extern const float kDynamicMapSigned[256];

struct NestedAbsmax {
  std::vector<uint8_t> codes;          // one 8-bit code per 4-bit block (absmax - offset)
  std::vector<float> nested_absmax;    // one fp32 absmax per 256 codes (tail covers its real values)
  float offset = 0.0f;                 // mean of the original absmax vector
};

// QuantizeDynamic(kDynamicMapSigned, x) (blockwise_math.h), bit-identical, faster on the
// host.
uint8_t QuantizeDynamicFast(float x);

// fp32 mean as described above; 0 for n == 0.
float MeanOfAbsmax(const float* absmax, int64_t n);

// Quantizes an absmax vector (double quant). REQUIRES: n >= 1.
NestedAbsmax NestAbsmax(const float* absmax, int64_t n);

// Same with a given offset (e.g. one computed by torch, to reproduce a state bit for bit).
NestedAbsmax NestAbsmaxWithOffset(const float* absmax, int64_t n, float offset);

// Rebuilds the fp32 absmax vector (codes.size() values) into `out`.
void UnnestAbsmax(const NestedAbsmax& nested, float* out);

}  // namespace quant
}  // namespace loadstar
