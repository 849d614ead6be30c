// Tensor element types, named as safetensors names them ("F16", "BF16", ...).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace loadstar {

enum class DType : uint8_t {
  kBool,
  kU8,
  kI8,
  kI16,
  kU16,
  kI32,
  kU32,
  kI64,
  kU64,
  kF8E4M3,
  kF8E5M2,
  kF16,
  kBF16,
  kF32,
  kF64,
};

// Bytes per element.
size_t DTypeSize(DType dtype);

// The safetensors name ("F16"); the inverse of ParseDType.
std::string_view DTypeName(DType dtype);

// Parses a safetensors dtype name; nullopt for anything unknown.
std::optional<DType> ParseDType(std::string_view name);

// Parses a torch_dtype name as used in HF configs ("float16", "bfloat16", "float32").
std::optional<DType> ParseTorchDType(std::string_view name);

// The torch name ("float16") of a floating dtype, as HF configs spell it.
std::string_view TorchDTypeName(DType dtype);

bool IsFloating(DType dtype);

}  // namespace loadstar
