// Helpers for the loader tests: a small transformer-shaped checkpoint saved into a
// temporary store, and an Env whose files have no OS descriptor.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/env.h"
#include "gtest/gtest.h"
#include "loader/load_plan.h"
#include "loader/loaded_model.h"
#include "loader/model_source.h"
#include "quant/prepare.h"
#include "store/store.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/test_util.h"

namespace loadstar::loader::testing {

// A checkpoint shaped like a small Llama: embeddings, `layers` blocks, final norm and
// lm_head. `hidden` is the model width.
inline loadstar::testing::CheckpointBuilder TinyLlama(int layers = 4, int64_t hidden = 64,
                                                      int64_t vocab = 128, uint64_t seed = 1) {
  loadstar::testing::CheckpointBuilder b(seed);
  b.Add("model.embed_tokens.weight", DType::kF16, {vocab, hidden});
  for (int i = 0; i < layers; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    b.Add(p + "input_layernorm.weight", DType::kF32, {hidden})
        .Add(p + "self_attn.q_proj.weight", DType::kF16, {hidden, hidden})
        .Add(p + "self_attn.k_proj.weight", DType::kF16, {hidden, hidden})
        .Add(p + "self_attn.v_proj.weight", DType::kF16, {hidden, hidden})
        .Add(p + "self_attn.o_proj.weight", DType::kF16, {hidden, hidden})
        .Add(p + "mlp.up_proj.weight", DType::kBF16, {2 * hidden, hidden})
        .Add(p + "mlp.down_proj.weight", DType::kBF16, {hidden, 2 * hidden});
  }
  b.Add("model.norm.weight", DType::kF32, {hidden})
      .Add("lm_head.weight", DType::kF16, {vocab, hidden});
  return b;
}

// A store in a temp dir holding checkpoints saved from builders.
class TestStore {
 public:
  TestStore() {
    store::Store::Options options;
    options.root = dir_.Join("store");
    auto s = store::Store::Open(options);
    EXPECT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }

  // Writes the checkpoint, saves it as `name` and returns its source.
  ModelSource Save(const loadstar::testing::CheckpointBuilder& builder,
                   const std::string& name) {
    std::string src = dir_.Join("src-" + std::to_string(saved_++));
    absl::Status written = builder.Write(src);
    EXPECT_TRUE(written.ok()) << written;
    auto manifest = store_->Save(src, name);
    EXPECT_TRUE(manifest.ok()) << manifest.status();
    auto source = ModelSourceFromStore(*store_, name);
    EXPECT_TRUE(source.ok()) << source.status();
    return *std::move(source);
  }

  store::Store& store() { return *store_; }
  const loadstar::testing::TempDir& dir() const { return dir_; }

 private:
  loadstar::testing::TempDir dir_;
  std::unique_ptr<store::Store> store_;
  int saved_ = 0;
};

// Files opened through this Env report fd() == -1, as a wrapped or in-memory file does:
// I/O engines must read them through RandomAccessFile::Read.
class NoFdEnv : public EnvWrapper {
 public:
  explicit NoFdEnv(Env* target) : EnvWrapper(target) {}

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path, const OpenOptions& options) override {
    auto file = target()->NewRandomAccessFile(path, options);
    if (!file.ok()) return file.status();
    ++opened_;
    return std::unique_ptr<RandomAccessFile>(new File(*std::move(file)));
  }
  int opened() const { return opened_; }

 private:
  class File : public RandomAccessFile {
   public:
    explicit File(std::unique_ptr<RandomAccessFile> base)
        : RandomAccessFile(base->path()), base_(std::move(base)) {}
    absl::StatusOr<size_t> Read(uint64_t offset, size_t n, char* dst) const override {
      return base_->Read(offset, n, dst);
    }
    uint64_t Size() const override { return base_->Size(); }
    bool direct() const override { return base_->direct(); }

   private:
    std::unique_ptr<RandomAccessFile> base_;
  };
  std::atomic<int> opened_{0};
};

// The bytes of shard `shard` of `n` of a row-major tensor cut as `kind` (load_plan.h):
// rows a contiguous range, columns the shard's slice of every row, whole all of it.
inline std::string ShardBytes(const std::string& bytes, const std::vector<int64_t>& shape,
                              ShardKind kind, int shard, int n) {
  if (kind == ShardKind::kWhole) return bytes;
  if (kind == ShardKind::kRows) {
    const size_t size = bytes.size() / n;
    return bytes.substr(shard * size, size);
  }
  const size_t rows = static_cast<size_t>(shape[0]);
  const size_t row = rows == 0 ? 0 : bytes.size() / rows, width = row / n;
  std::string out;
  for (size_t r = 0; r < rows; ++r) out += bytes.substr(r * row + shard * width, width);
  return out;
}

// What each device of a tensor-parallel load over `n` devices must hold, keyed by
// (device, state-dict name): the shard of every checkpoint tensor the plan gives that
// device, passed through quant::PrepareTensor as a tensor of its own (`config` nullptr:
// the shard bytes unchanged, in the checkpoint's dtypes).
inline std::map<std::pair<int, std::string>, quant::NamedTensor> ExpectedShards(
    const loadstar::testing::CheckpointBuilder& builder, const store::Manifest& manifest,
    int n, const quant::QuantConfig* config) {
  std::map<std::pair<int, std::string>, quant::NamedTensor> out;
  PlanOptions options;
  options.placement = Placement::kTensorParallel;
  auto plan = MakeLoadPlan(manifest, n, options);
  EXPECT_TRUE(plan.ok()) << plan.status();
  if (!plan.ok()) return out;
  std::map<std::string, const loadstar::testing::BuilderTensor*> by_name;
  for (const auto& t : builder.tensors()) by_name[t.name] = &t;
  for (const PlannedTensor& p : plan->tensors) {
    const auto& t = *by_name.at(p.name);
    std::string shard = ShardBytes(t.bytes, t.shape, p.shard_kind, p.shard, n);
    store::ManifestTensor mt = ShardTensor(manifest.tensors[p.source], p.shard_kind, n);
    if (config == nullptr) {
      out[{p.device, t.name}] =
          quant::NamedTensor{t.name, t.dtype, mt.shape, std::vector<uint8_t>(shard.begin(), shard.end())};
      continue;
    }
    auto prepared = quant::PrepareTensor(*config, t.name, t.dtype, mt.shape, shard.data());
    EXPECT_TRUE(prepared.ok()) << prepared.status();
    if (!prepared.ok()) continue;
    for (auto& named : prepared->tensors) out[{p.device, named.name}] = std::move(named);
  }
  return out;
}

// Every tensor of `model` equals ExpectedShards' entry for its device, and every expected
// entry is there.
inline void ExpectShardsEqual(
    const LoadedModel& model,
    const std::map<std::pair<int, std::string>, quant::NamedTensor>& expected) {
  ASSERT_EQ(model.tensors().size(), expected.size());
  for (const LoadedTensor& t : model.tensors()) {
    auto it = expected.find({t.device, t.name});
    ASSERT_NE(it, expected.end()) << t.name << " on device " << t.device;
    EXPECT_EQ(t.dtype, it->second.dtype) << t.name;
    EXPECT_EQ(t.shape, it->second.shape) << t.name;
    auto bytes = model.ReadTensor(t);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_TRUE(*bytes == std::string(it->second.data.begin(), it->second.data.end()))
        << t.name << " on device " << t.device;
  }
}

// Every byte of `m`'s allocation on its device `d` (padding included), read back to host.
inline std::string AllocationBytes(const LoadedModel& m, int d) {
  const Allocation& a = m.allocation(d);
  std::string out(a.size, '\0');
  if (a.size > 0) {
    EXPECT_TRUE(m.device(d)->CopyToHost(out.data(), a, 0, a.size).ok());
  }
  return out;
}

}  // namespace loadstar::loader::testing
