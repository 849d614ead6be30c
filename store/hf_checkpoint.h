// A Hugging Face model directory as `save_pretrained` writes it (SPEC §4 "Input"):
//   config.json + model.safetensors, or
//   config.json + model-0000x-of-0000y.safetensors + model.safetensors.index.json
// plus optional small files (generation_config.json, tokenizer files) the store keeps.
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

// Small files copied from a checkpoint next to the manifest when present (config.json is
// required and always copied).
inline constexpr const char* kExtraFileNames[] = {
    "config.json",          "generation_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json",           "merges.txt",             "vocab.txt",
    "added_tokens.json",
};

struct HfCheckpoint {
  std::string dir;
  std::vector<SafetensorsFile> shards;    // in index order (shard file name order)
  std::vector<std::string> extra_files;   // names (in `dir`) of kExtraFileNames present

  size_t TensorCount() const;
  uint64_t TotalBytes() const;
};

// Reads and validates the checkpoint in `dir`. Errors (InvalidArgument unless the Env
// says otherwise) name the directory, file and tensor: missing config.json, no weights,
// a shard missing, a tensor listed in the index but not in its shard, a tensor in a shard
// but not in the index, the same tensor in two shards, invalid safetensors.
absl::StatusOr<HfCheckpoint> OpenHfCheckpoint(Env* env, const std::string& dir);

}  // namespace loadstar::store
