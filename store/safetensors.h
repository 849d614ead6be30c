// Reads and validates safetensors files (https://github.com/huggingface/safetensors):
//   [u64 little-endian N][N bytes of JSON header][data]
// with every rule of SPEC §4, as the reference reader applies them: the header is a UTF-8
// JSON object of {"dtype", "shape", "data_offsets"} entries plus an optional
// "__metadata__" string->string map; sorted by offsets the entries tile the data exactly
// from 0; element count x dtype size equals END-BEGIN without overflow; the data ends
// exactly at EOF. Only the header is read; tensor bytes stay on disk.
//
// Every error is InvalidArgument naming the file (and the tensor when one is at fault);
// nothing allocates more than the (bounded, checked) header length.
//
// Thread safety: free functions, safe to call concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "base/env.h"

namespace loadstar::store {

// The reference reader's limit on the header length N.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;  // empty for a scalar
  uint64_t begin = 0;          // byte offsets relative to the start of the data section
  uint64_t end = 0;

  uint64_t size() const { return end - begin; }
};

struct SafetensorsFile {
  std::string path;                             // as given (used in messages)
  uint64_t data_offset = 0;                     // 8 + N: file offset of the data section
  uint64_t file_size = 0;
  std::vector<SafetensorsTensor> tensors;       // sorted by begin (file order)
  std::map<std::string, std::string> metadata;  // "__metadata__", if any

  const SafetensorsTensor* Find(std::string_view name) const;
};

// Opens `path` through `env` and validates its header against the file size.
absl::StatusOr<SafetensorsFile> ReadSafetensors(Env* env, const std::string& path);

// The same validation on a whole file held in memory (fuzzers, tests). `source` is used
// as the path in messages and in the result.
absl::StatusOr<SafetensorsFile> ParseSafetensors(std::string_view file_bytes,
                                                 std::string_view source);

// Validates the N bytes of header JSON of a file of `file_size` bytes (so the data section
// starts at 8 + header.size()).
absl::StatusOr<SafetensorsFile> ParseSafetensorsHeader(std::string_view header,
                                                       uint64_t file_size,
                                                       std::string_view source);

}  // namespace loadstar::store
