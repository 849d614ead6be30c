// Builds small Hugging Face checkpoint directories for tests: config.json plus
// model.safetensors, or N shards model-0000i-of-0000N.safetensors with
// model.safetensors.index.json, as `save_pretrained` writes them.
//
//   loadstar::testing::CheckpointBuilder builder;
//   builder.Add("model.embed.weight", DType::kF16, {16, 8})
//          .Add("model.norm.bias", DType::kF32, {8})
//          .Shards(2);
//   ASSERT_TRUE(builder.Write(dir.path()).ok());
//   std::string expected = builder.Bytes("model.norm.bias");  // what the file holds
//
// Contents are deterministic pseudo-random functions of (seed, tensor name): the same
// builder always writes the same bytes. Floating dtypes hold finite values in [-1, 1)
// (no NaN/Inf), BOOL holds 0/1, integer dtypes hold arbitrary bits.
//
// Thread safety: thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/dtype.h"

namespace loadstar::testing {

struct BuilderTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Deterministic bytes for a tensor (see above); `elements` values of `dtype`.
std::string PseudoRandomTensorBytes(DType dtype, uint64_t elements, uint64_t seed);

class CheckpointBuilder {
 public:
  explicit CheckpointBuilder(uint64_t seed = 1) : seed_(seed) {}

  // A tensor with pseudo-random contents. Tensors are written in the order added.
  CheckpointBuilder& Add(const std::string& name, DType dtype, std::vector<int64_t> shape);
  // A tensor with the given contents (size must match dtype and shape).
  CheckpointBuilder& AddBytes(const std::string& name, DType dtype, std::vector<int64_t> shape,
                              std::string bytes);
  // Split into `n` shards (tensors dealt out consecutively, roughly equal counts) with an
  // index; 1 (the default) writes a single model.safetensors without an index. Shards
  // may end up empty when n > tensor count (still valid files).
  CheckpointBuilder& Shards(int n);
  // Replaces the default config.json ({"model_type": "test", "torch_dtype": ...}).
  CheckpointBuilder& Config(std::string json);
  // Adds another file to the directory (generation_config.json, tokenizer.json, ...).
  CheckpointBuilder& ExtraFile(const std::string& name, std::string contents);
  // `__metadata__` of every shard (default {"format": "pt"}).
  CheckpointBuilder& Metadata(std::map<std::string, std::string> metadata);

  // Writes the checkpoint into `dir` (created if missing).
  absl::Status Write(const std::string& dir) const;

  const std::vector<BuilderTensor>& tensors() const { return tensors_; }
  // Contents of tensor `name`; empty string for an unknown name.
  const std::string& Bytes(const std::string& name) const;
  // Shard file name holding tensor `name` ("model.safetensors" when unsharded).
  std::string ShardOf(const std::string& name) const;

 private:
  std::vector<std::vector<const BuilderTensor*>> Split() const;
  std::string ShardName(int index) const;

  uint64_t seed_;
  int shards_ = 1;
  std::vector<BuilderTensor> tensors_;
  std::string config_;
  std::map<std::string, std::string> extra_files_;
  std::map<std::string, std::string> metadata_ = {{"format", "pt"}};
};

}  // namespace loadstar::testing
