// A Hugging Face model directory as `save_pretrained` writes it (SPEC §4 "Input"):
//   config.json + model.safetensors, or
//   config.json + model-0000x-of-0000y.safetensors + model.safetensors.index.json
// plus the small non-weight files (generation_config.json, tokenizer files,
// sentence-transformers modules, ...) that the store keeps and serves to consumers.
// Opening validates every shard (safetensors.h) and, when sharded, that the index's
// weight_map matches the shards exactly.
//
// Thread safety: free functions, safe to call concurrently.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "store/safetensors.h"

namespace loadstar::store {

inline constexpr char kSingleFileName[] = "model.safetensors";
inline constexpr char kIndexFileName[] = "model.safetensors.index.json";

// At most this many bytes of non-weight files are kept with a model (SPEC §4).
inline constexpr uint64_t kMaxKeptFileBytes = 64ull << 20;

// The non-weight files of checkpoint directory `dir` that the store keeps, as paths
// relative to `dir`, sorted: every regular file of the directory and of its immediate
// subdirectories (sentence-transformers' "1_Pooling/config.json") except weights in any
// format (safetensors, PyTorch .bin/.pt, ONNX, GGUF, ...), their index files, and hidden
// entries. Names outside [A-Za-z0-9._-] are skipped (they cannot be named safely in a
// manifest). InvalidArgument naming the total and the largest file when the kept files
// exceed kMaxKeptFileBytes.
absl::StatusOr<std::vector<std::string>> ListKeptFiles(Env* env, const std::string& dir);

struct HfCheckpoint {
  std::string dir;
  std::vector<SafetensorsFile> shards;    // in index order (shard file name order)
  std::vector<std::string> extra_files;   // ListKeptFiles(dir); config.json among them

  size_t TensorCount() const;
  uint64_t TotalBytes() const;
};

// Reads and validates the checkpoint in `dir`. Errors (InvalidArgument unless the Env
// says otherwise) name the directory, file and tensor: missing config.json, no weights,
// a shard missing, a tensor listed in the index but not in its shard, a tensor in a shard
// but not in the index, the same tensor in two shards, invalid safetensors.
absl::StatusOr<HfCheckpoint> OpenHfCheckpoint(Env* env, const std::string& dir);

}  // namespace loadstar::store
