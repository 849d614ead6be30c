// Reads and validates GGUF files (llama.cpp's container; SPEC §6.1), as strictly as
// safetensors.h validates safetensors. Layout (little-endian; facts from gguf-py's
// gguf_reader.py / gguf_writer.py and ggml's docs/gguf.md):
//   u32 magic "GGUF" | u32 version (2 or 3) | u64 tensor_count | u64 kv_count
//   kv_count x { string key | u32 value type | value }
//   tensor_count x { string name | u32 n_dims | u64 dims[n_dims] | u32 ggml type |
//                    u64 offset }
//   padding to `general.alignment` (u32, default 32) | tensor data
// where string = u64 length + bytes, and an array value = u32 element type + u64 count +
// elements. Tensor offsets are relative to the data section, multiples of the alignment.
//
// Checked, each with an InvalidArgument error naming the file and the field (key index
// and name, tensor index and name): magic, version, counts against the bytes left (no
// allocation from an unchecked count or length), UTF-8 keys and names, known value
// types, no nested arrays, duplicate keys and names, general.alignment's type and value
// (a power of two), 1..4 dims, dims and byte sizes without overflow, the row length a
// multiple of the type's block, supported ggml types (quant/ggml_types.h), aligned
// offsets, every tensor inside the file, no two tensors overlapping, and nothing after
// the last tensor but padding.
//
// Only the header is read; tensor bytes stay on disk.
//
// Thread safety: free functions, safe to call concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "quant/ggml_types.h"

namespace loadstar::store {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t kGgufDefaultAlignment = 32;
// magic, version, tensor_count (u64), kv_count (u64); the key-value section follows.
inline constexpr uint64_t kGgufHeaderBytes = 24;
inline constexpr int kGgufMaxDims = 4;  // GGML_MAX_DIMS

enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

std::string_view GgufValueTypeName(GgufValueType type);

// One metadata value. Integers (and bools) are kept in `ints` (u64 values above INT64_MAX
// in `u64_bits`), floats in `floats`, strings in `strings`; a scalar has one element, an
// array `count` elements of `elem_type`.
struct GgufValue {
  GgufValueType type = GgufValueType::kU8;       // kArray for arrays
  GgufValueType elem_type = GgufValueType::kU8;  // the scalar type (== type for scalars)
  std::vector<int64_t> ints;
  std::vector<uint64_t> u64_bits;  // kU64 only: the exact values
  std::vector<double> floats;
  std::vector<std::string> strings;

  bool is_array() const { return type == GgufValueType::kArray; }
  size_t count() const;
};

struct GgufTensor {
  std::string name;
  quant::GgmlType type = quant::GgmlType::kF32;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the contiguous (row) dimension
  uint64_t offset = 0;        // relative to the data section
  uint64_t size = 0;          // bytes

  // The torch/HF shape: dims reversed ([rows..., row_elems]).
  std::vector<int64_t> TorchShape() const;
  int64_t row_elems() const { return dims[0]; }
  int64_t rows() const;  // product of dims[1..]
};

struct GgufFile {
  std::string path;
  uint32_t version = 3;
  uint32_t alignment = kGgufDefaultAlignment;
  uint64_t data_offset = 0;  // file offset of the data section (aligned; past the end of
                             // the file only when there are no tensors)
  uint64_t file_size = 0;
  // The key-value section is bytes [kGgufHeaderBytes, metadata_end) of the file.
  uint64_t metadata_end = 0;
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensor> tensors;  // in file (header) order

  const GgufTensor* Find(std::string_view name) const;
  const GgufValue* Get(std::string_view key) const;
  // Typed lookups; nullopt when absent or of another kind (an integer key read as a
  // float converts).
  std::optional<int64_t> GetInt(std::string_view key) const;
  std::optional<double> GetFloat(std::string_view key) const;
  std::optional<std::string> GetString(std::string_view key) const;
};

// Opens `path` through `env` and validates its header against the file size.
absl::StatusOr<GgufFile> ReadGguf(Env* env, const std::string& path);

// The same validation on a whole file held in memory (fuzzers, tests). `source` names the
// file in messages and in the result.
absl::StatusOr<GgufFile> ParseGguf(std::string_view file_bytes, std::string_view source);

// True when the file at `path` starts with the GGUF magic.
bool LooksLikeGguf(Env* env, const std::string& path);

}  // namespace loadstar::store
