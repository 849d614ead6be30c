// The quantized formats as plain structs (ggml style): what one block, one row or one
// nested group occupies. bitsandbytes stores the parts of a block in separate tensors
// (packed codes in `weight`, scales in `absmax`), so these describe one element of each
// array rather than an interleaved record; the whole-tensor containers are Quantized4bit
// (blockwise.h) and QuantizedInt8 (int8.h), and the state-dict layout is quant_state.h.
#pragma once

#include <cstdint>

#include "quant/quant_types.h"

namespace loadstar {
namespace quant {

// NF4 / FP4 codes of one block of kBlocksize elements (blockwise_math.h's math).
template <int kBlocksize>
struct Packed4bitBlock {
  static_assert(IsValidBlocksize(kBlocksize), "blocksize must be a power of two in [32, 4096]");
  uint8_t qs[kBlocksize / 2];  // element 2j: high nibble of qs[j]; element 2j+1: low nibble
};
static_assert(sizeof(Packed4bitBlock<64>) == 32, "64 codes in 32 bytes");
static_assert(sizeof(Packed4bitBlock<4096>) == 2048, "4096 codes in 2048 bytes");

// The per-block scale without double quant (one `absmax` entry).
struct Absmax4bit {
  float absmax;  // max |x| over the block's real elements, fp32
};
static_assert(sizeof(Absmax4bit) == 4, "fp32 absmax");

// One nested group of double quant: 256 consecutive block scales.
struct NestedAbsmaxGroup {
  uint8_t codes[kNestedBlocksize];  // dynamic-map index of (absmax - offset) * (1 / nested_absmax)
  float nested_absmax;              // max |absmax - offset| over the group's real entries
};
static_assert(sizeof(NestedAbsmaxGroup) == kNestedBlocksize + 4, "256 codes + fp32 scale");

// One LLM.int8 weight row of kCols elements.
template <int kCols>
struct Int8Row {
  int8_t q[kCols];  // round-half-even(w * 127 / scb), row-major
  float scb;        // max |w| of the row after the fp16 cast (the `SCB` entry)
};
static_assert(sizeof(Int8Row<4>) == 8, "4 codes + fp32 SCB");

// Bits per weight including the scale: 4 + 32 / blocksize (no double quant) or
// 4 + 8 / blocksize + 32 / (256 * blocksize) (double quant).
constexpr double BitsPerWeight4bit(int blocksize, bool double_quant) {
  return double_quant ? 4.0 + 8.0 / blocksize + 32.0 / (256.0 * blocksize)
                      : 4.0 + 32.0 / blocksize;
}
static_assert(BitsPerWeight4bit(64, false) == 4.5, "nf4 bs64: 4.5 bits per weight");

}  // namespace quant
}  // namespace loadstar
