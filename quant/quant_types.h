// Quantization types and blocksize rules shared by the formats, the policy and the CLI.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/status.h"

namespace loadstar {
namespace quant {

enum class QuantType : uint8_t {
  kNone,  // not quantized: cast to torch_dtype
  kInt8,  // LLM.int8 row-wise weights + SCB
  kFp4,   // bitsandbytes FP4 (bias-3 float, 4 bits), blockwise absmax
  kNf4,   // bitsandbytes NormalFloat4, blockwise absmax
};

// "none", "int8", "fp4", "nf4".
std::string_view QuantTypeName(QuantType type);
// Inverse of QuantTypeName; nullopt for anything else.
std::optional<QuantType> ParseQuantType(std::string_view name);

constexpr int kDefaultBlocksize = 64;    // bitsandbytes' quantize_4bit default
constexpr int kMinBlocksize = 32;        // smallest blocksize bitsandbytes accepts
constexpr int kMaxBlocksize = 4096;      // largest blocksize bitsandbytes accepts
constexpr int kNestedBlocksize = 256;    // double quant: absmax values per nested block
constexpr int kDynamicMapSize = 256;     // entries of the signed dynamic 8-bit map
constexpr int kFp4CodeCount = 16;        // entries of a 4-bit quant_map

// True for the powers of two in [kMinBlocksize, kMaxBlocksize].
constexpr bool IsValidBlocksize(int64_t blocksize) {
  return blocksize >= kMinBlocksize && blocksize <= kMaxBlocksize &&
         (blocksize & (blocksize - 1)) == 0;
}

// InvalidArgument naming `key` ("bnb_4bit_blocksize") unless IsValidBlocksize.
absl::Status CheckBlocksize(int64_t blocksize, std::string_view key = "blocksize");

}  // namespace quant
}  // namespace loadstar
