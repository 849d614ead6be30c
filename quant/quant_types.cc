#include "quant/quant_types.h"

#include <string>

#include <fmt/format.h>

namespace loadstar {
namespace quant {

std::string_view QuantTypeName(QuantType type) {
  switch (type) {
    case QuantType::kNone:
      return "none";
    case QuantType::kInt8:
      return "int8";
    case QuantType::kFp4:
      return "fp4";
    case QuantType::kNf4:
      return "nf4";
  }
  return "unknown";
}

std::optional<QuantType> ParseQuantType(std::string_view name) {
  for (QuantType t : {QuantType::kNone, QuantType::kInt8, QuantType::kFp4, QuantType::kNf4}) {
    if (QuantTypeName(t) == name) return t;
  }
  return std::nullopt;
}

absl::Status CheckBlocksize(int64_t blocksize, std::string_view key) {
  if (IsValidBlocksize(blocksize)) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format(
      "{}: blocksize {} is invalid; must be a power of two in [{}, {}]", key, blocksize,
      kMinBlocksize, kMaxBlocksize));
}

}  // namespace quant
}  // namespace loadstar
