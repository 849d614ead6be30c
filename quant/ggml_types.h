// ggml tensor types (llama.cpp's GGUF block formats): the numeric ids a GGUF file stores,
// their names, and the size of one block. Facts from gguf-py (gguf/constants.py:
// GGMLQuantizationType, GGML_QUANT_SIZES). The per-block layouts and their dequantization
// are in quant/ggml_blocks.h.
//
// loadstar dequantizes the 13 types of SPEC §6.1 (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
// Q5_1, Q2_K..Q6_K); every other id is known by name only, so a file that uses one is
// refused with a message naming the type.
//
// Thread safety: constant tables and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace loadstar::quant {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

struct GgmlTypeInfo {
  GgmlType type;
  std::string_view name;  // "Q4_K", as gguf-py names it
  int block_elems;        // elements per block (1 for F32/F16/BF16)
  int block_bytes;        // bytes per block
};

// The info of a supported type id; nullopt for every other id.
std::optional<GgmlTypeInfo> SupportedGgmlType(uint32_t id);

// The info of a supported type. REQUIRES: `type` is one of the enumerators.
GgmlTypeInfo GgmlInfo(GgmlType type);

// gguf-py's name of any known id ("IQ2_XXS"), or "" for an id it does not know.
std::string_view GgmlTypeIdName(uint32_t id);

// Parses a supported type's name ("Q4_K"); nullopt otherwise.
std::optional<GgmlType> ParseGgmlTypeName(std::string_view name);

// "F32, F16, BF16, Q8_0, ..." for error messages.
std::string SupportedGgmlTypeList();

}  // namespace loadstar::quant
