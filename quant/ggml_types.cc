#include "quant/ggml_types.h"

namespace loadstar::quant {
namespace {

// QK_K = 256 elements per K-quant super-block; sizes as gguf-py's GGML_QUANT_SIZES.
constexpr int kQK = 256;
constexpr GgmlTypeInfo kSupported[] = {
    {GgmlType::kF32, "F32", 1, 4},
    {GgmlType::kF16, "F16", 1, 2},
    {GgmlType::kBF16, "BF16", 1, 2},
    {GgmlType::kQ8_0, "Q8_0", 32, 2 + 32},
    {GgmlType::kQ4_0, "Q4_0", 32, 2 + 16},
    {GgmlType::kQ4_1, "Q4_1", 32, 2 + 2 + 16},
    {GgmlType::kQ5_0, "Q5_0", 32, 2 + 4 + 16},
    {GgmlType::kQ5_1, "Q5_1", 32, 2 + 2 + 4 + 16},
    {GgmlType::kQ2_K, "Q2_K", kQK, 2 + 2 + kQK / 16 + kQK / 4},
    {GgmlType::kQ3_K, "Q3_K", kQK, 2 + kQK / 4 + kQK / 8 + 12},
    {GgmlType::kQ4_K, "Q4_K", kQK, 2 + 2 + kQK / 2 + 12},
    {GgmlType::kQ5_K, "Q5_K", kQK, 2 + 2 + kQK / 2 + kQK / 8 + 12},
    {GgmlType::kQ6_K, "Q6_K", kQK, 2 + kQK / 2 + kQK / 4 + kQK / 16},
};

// Every id gguf-py 0.19 knows, for messages about the ones loadstar does not read.
struct KnownId {
  uint32_t id;
  std::string_view name;
};
constexpr KnownId kKnown[] = {
    {0, "F32"},      {1, "F16"},      {2, "Q4_0"},    {3, "Q4_1"},     {6, "Q5_0"},
    {7, "Q5_1"},     {8, "Q8_0"},     {9, "Q8_1"},    {10, "Q2_K"},    {11, "Q3_K"},
    {12, "Q4_K"},    {13, "Q5_K"},    {14, "Q6_K"},   {15, "Q8_K"},    {16, "IQ2_XXS"},
    {17, "IQ2_XS"},  {18, "IQ3_XXS"}, {19, "IQ1_S"},  {20, "IQ4_NL"},  {21, "IQ3_S"},
    {22, "IQ2_S"},   {23, "IQ4_XS"},  {24, "I8"},     {25, "I16"},     {26, "I32"},
    {27, "I64"},     {28, "F64"},     {29, "IQ1_M"},  {30, "BF16"},    {34, "TQ1_0"},
    {35, "TQ2_0"},   {39, "MXFP4"},   {40, "NVFP4"},  {41, "Q1_0"},
};

}  // namespace

std::optional<GgmlTypeInfo> SupportedGgmlType(uint32_t id) {
  for (const GgmlTypeInfo& info : kSupported) {
    if (static_cast<uint32_t>(info.type) == id) return info;
  }
  return std::nullopt;
}

GgmlTypeInfo GgmlInfo(GgmlType type) { return *SupportedGgmlType(static_cast<uint32_t>(type)); }

std::string_view GgmlTypeIdName(uint32_t id) {
  for (const KnownId& known : kKnown) {
    if (known.id == id) return known.name;
  }
  return "";
}

std::optional<GgmlType> ParseGgmlTypeName(std::string_view name) {
  for (const GgmlTypeInfo& info : kSupported) {
    if (info.name == name) return info.type;
  }
  return std::nullopt;
}

std::string SupportedGgmlTypeList() {
  std::string out;
  for (const GgmlTypeInfo& info : kSupported) {
    if (!out.empty()) out += ", ";
    out += info.name;
  }
  return out;
}

}  // namespace loadstar::quant
