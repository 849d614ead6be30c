// The manifest of a model in the loadstar store: which tensors it has and where each one's
// bytes lie in the model's data files. It is the contract between store/ (which writes
// it) and loader/ (which reads the bytes it points to).
//
// Layout of a model directory `<store root>/<name>/`:
//   manifest.json          this structure, as JSON (SerializeManifest)
//   config.json            the checkpoint's original config.json, byte for byte
//   data-00000.bin ...     tensor bytes; every tensor starts at a 4 KiB-aligned offset so
//                          O_DIRECT reads land straight in their destination
//   variants/<key>/        quantized artifacts: the same layout (manifest.json + data
//                          files) holding the quantized tensors and their quant state
//
// manifest.json (SerializeManifest) looks like:
//   {"version": 1, "name": "org/model", "variant": "", "quantization_json": "",
//    "files": ["data-00000.bin"], "extra_files": ["config.json"],
//    "tensors": [{"name": "w", "dtype": "F16", "shape": [2, 3], "file": 0,
//                 "offset": 0, "size": 12, "checksums": ["0123456789abcdef"]}]}
// Checksums are 16 lowercase hex digits; quantization_json is a string holding JSON.
// To read tensor bytes use store::Store::GetManifest + Store::DataFilePath (store.h);
// to check a chunk, store::Checksum (checksum.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/dtype.h"

namespace loadstar::store {

inline constexpr int kManifestVersion = 1;
// Tensor data offsets inside data files are multiples of this.
inline constexpr uint64_t kTensorAlignment = 4096;
// Tensors larger than this get one checksum per chunk of this many bytes, so a loader can
// verify a chunk as soon as it arrives instead of waiting for the whole tensor.
inline constexpr uint64_t kChecksumChunkBytes = 64ull << 20;

struct ManifestTensor {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;  // empty for a scalar
  uint32_t file = 0;           // index into Manifest::files
  uint64_t offset = 0;         // byte offset in that file; a multiple of kTensorAlignment
  uint64_t size = 0;           // bytes; product(shape) * DTypeSize(dtype)
  // xxh3-64 of each kChecksumChunkBytes piece of the tensor, in order (the last piece may
  // be shorter); exactly one entry (the hash of zero bytes) for an empty tensor.
  std::vector<uint64_t> checksums;

  bool operator==(const ManifestTensor&) const = default;
};

struct Manifest {
  int version = kManifestVersion;
  std::string name;                 // store name, e.g. "facebook/opt-125m"
  std::vector<std::string> files;   // data file names, relative to the manifest's dir
  std::vector<ManifestTensor> tensors;  // sorted by (file, offset)
  // For a quantized variant: its canonical key (e.g. "nf4-bs64-dq") and the quantization
  // config as a JSON object string; both empty for the original checkpoint.
  std::string variant;
  std::string quantization_json;
  // Small files copied verbatim from the source checkpoint beside the manifest
  // (config.json, generation_config.json, tokenizer files); plain names, sorted.
  std::vector<std::string> extra_files;

  bool operator==(const Manifest&) const = default;
  uint64_t TotalBytes() const;
  const ManifestTensor* Find(std::string_view tensor_name) const;
};

// JSON text of `manifest`; ParseManifest(SerializeManifest(m)) == m.
std::string SerializeManifest(const Manifest& manifest);

// Parses and validates manifest JSON (types, dtype names, sizes consistent with shapes,
// aligned non-overlapping extents, checksum counts, plain data file names that cannot
// point outside the model directory, unique tensor names). Unknown keys and duplicate
// keys are errors. `source` names the file in errors; every error is InvalidArgument.
absl::StatusOr<Manifest> ParseManifest(std::string_view json, std::string_view source);

}  // namespace loadstar::store
