#include "base/dtype.h"

#include <array>
#include <utility>

namespace loadstar {
namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
  std::string_view torch_name;
};

constexpr std::array<DTypeInfo, 15> kDTypes = {{
    {DType::kBool, "BOOL", 1, "bool"},
    {DType::kU8, "U8", 1, "uint8"},
    {DType::kI8, "I8", 1, "int8"},
    {DType::kI16, "I16", 2, "int16"},
    {DType::kU16, "U16", 2, "uint16"},
    {DType::kI32, "I32", 4, "int32"},
    {DType::kU32, "U32", 4, "uint32"},
    {DType::kI64, "I64", 8, "int64"},
    {DType::kU64, "U64", 8, "uint64"},
    {DType::kF8E4M3, "F8_E4M3", 1, "float8_e4m3fn"},
    {DType::kF8E5M2, "F8_E5M2", 1, "float8_e5m2"},
    {DType::kF16, "F16", 2, "float16"},
    {DType::kBF16, "BF16", 2, "bfloat16"},
    {DType::kF32, "F32", 4, "float32"},
    {DType::kF64, "F64", 8, "float64"},
}};

const DTypeInfo& Info(DType dtype) { return kDTypes[static_cast<size_t>(dtype)]; }

}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }
std::string_view DTypeName(DType dtype) { return Info(dtype).name; }
std::string_view TorchDTypeName(DType dtype) { return Info(dtype).torch_name; }

std::optional<DType> ParseDType(std::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return std::nullopt;
}

std::optional<DType> ParseTorchDType(std::string_view name) {
  if (name.starts_with("torch.")) name.remove_prefix(6);
  if (name == "half") return DType::kF16;
  if (name == "float") return DType::kF32;
  for (const DTypeInfo& info : kDTypes) {
    if (info.torch_name == name) return info.dtype;
  }
  return std::nullopt;
}

bool IsFloating(DType dtype) {
  switch (dtype) {
    case DType::kF8E4M3:
    case DType::kF8E5M2:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF32:
    case DType::kF64:
      return true;
    default:
      return false;
  }
}

}  // namespace loadstar
