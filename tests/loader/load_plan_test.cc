#include "loader/load_plan.h"

#include <map>
#include <set>

#include "gtest/gtest.h"
#include "loader/tensor_transform.h"

namespace loadstar::loader {
namespace {

store::ManifestTensor T(std::string name, std::vector<int64_t> shape, DType dtype = DType::kF16) {
  store::ManifestTensor t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = shape;
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  t.size = n * DTypeSize(dtype);
  t.checksums = {0};
  return t;
}

// Llama-like: embeddings, `layers` blocks of 1 MiB-ish each, norm, lm_head.
store::Manifest Llama(int layers, int64_t h = 256) {
  store::Manifest m;
  m.name = "llama";
  m.files = {"data-00000.bin"};
  m.tensors.push_back(T("model.embed_tokens.weight", {1000, h}));
  for (int i = 0; i < layers; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    m.tensors.push_back(T(p + "input_layernorm.weight", {h}, DType::kF32));
    m.tensors.push_back(T(p + "self_attn.q_proj.weight", {h, h}));
    m.tensors.push_back(T(p + "self_attn.o_proj.weight", {h, h}));
    m.tensors.push_back(T(p + "mlp.up_proj.weight", {4 * h, h}));
    m.tensors.push_back(T(p + "mlp.down_proj.weight", {h, 4 * h}));
  }
  m.tensors.push_back(T("model.norm.weight", {h}, DType::kF32));
  m.tensors.push_back(T("lm_head.weight", {1000, h}));
  return m;
}

TEST(LayerPrefixTest, RecognisesCommonLayouts) {
  EXPECT_EQ(LayerPrefix("model.layers.12.mlp.up_proj.weight"), "model.layers.12.");
  EXPECT_EQ(LayerPrefix("transformer.h.3.attn.c_attn.weight"), "transformer.h.3.");
  EXPECT_EQ(LayerPrefix("encoder.layer.0.attention.self.query.weight"), "encoder.layer.0.");
  EXPECT_EQ(LayerPrefix("model.decoder.layers.7.fc1.bias"), "model.decoder.layers.7.");
  EXPECT_EQ(LayerPrefix("model.embed_tokens.weight"), "");
  EXPECT_EQ(LayerPrefix("lm_head.weight"), "");
  EXPECT_EQ(LayerPrefix("model.layers.x.weight"), "");
}

TEST(LoadPlanTest, SingleDeviceAlignedInOrder) {
  store::Manifest m = Llama(2);
  PlanOptions options;
  options.alignment = 256;
  auto plan = MakeLoadPlan(m, 1, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->tensors.size(), m.tensors.size());
  uint64_t end = 0;
  for (const PlannedTensor& t : plan->tensors) {
    EXPECT_EQ(t.device, 0);
    EXPECT_EQ(t.offset % 256, 0u);
    EXPECT_GE(t.offset, end);
    end = t.offset + t.size;
  }
  EXPECT_GE(plan->device_bytes[0], end);
  EXPECT_EQ(plan->device_bytes[0] % 4096, 0u);
  EXPECT_EQ(plan->source_bytes, m.TotalBytes());
}

TEST(LoadPlanTest, AutoKeepsBlocksWholeAndBalances) {
  store::Manifest m = Llama(8);
  PlanOptions options;
  options.placement = Placement::kAuto;
  auto plan = MakeLoadPlan(m, 3, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::map<std::string, std::set<int>> devices_of_block;
  int last_device = 0;
  for (const PlannedTensor& t : plan->tensors) {
    std::string prefix = LayerPrefix(t.name);
    if (!prefix.empty()) {
      devices_of_block[prefix].insert(t.device);
      EXPECT_GE(t.device, last_device) << "blocks stay in layer order";
      last_device = t.device;
    }
  }
  for (auto& [prefix, devices] : devices_of_block) EXPECT_EQ(devices.size(), 1u) << prefix;
  EXPECT_EQ(plan->tensors.front().device, 0);  // embeddings first
  EXPECT_EQ(plan->tensors.back().device, 2);   // lm_head last
  uint64_t lo = UINT64_MAX, hi = 0;
  for (uint64_t b : plan->device_bytes) {
    lo = std::min(lo, b);
    hi = std::max(hi, b);
  }
  // One block is ~1.25 MiB of 8; balanced to within about one block plus embeddings.
  EXPECT_LT(hi - lo, 2 * (1u << 20)) << lo << " " << hi;
}

TEST(LoadPlanTest, AutoRespectsMaxMemory) {
  store::Manifest m = Llama(8);
  auto total = MakeLoadPlan(m, 1, PlanOptions{});
  ASSERT_TRUE(total.ok());
  const uint64_t all = total->device_bytes[0];
  PlanOptions options;
  options.placement = Placement::kAuto;
  options.max_memory = {all / 5, all, all};
  auto plan = MakeLoadPlan(m, 3, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (int d = 0; d < 3; ++d) EXPECT_LE(plan->device_bytes[d], options.max_memory[d]);
  EXPECT_GT(plan->device_bytes[0], 0u);

  options.max_memory = {all / 4, all / 4, all / 4};
  EXPECT_EQ(MakeLoadPlan(m, 3, options).status().code(), absl::StatusCode::kResourceExhausted);
  options.max_memory = {all};
  EXPECT_EQ(MakeLoadPlan(m, 3, options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LoadPlanTest, AutoWithMaxMemoryFillsDevicesInOrder) {
  // 6 equal blocks, caps of the embeddings + 3.5 blocks: accelerate fills GPU 0 first
  // (embeddings + 3 blocks), then GPU 1 (3 blocks + norm + lm_head); GPU 2 stays empty.
  // Without caps it balances over all 3.
  store::Manifest m = Llama(6);
  auto one = MakeLoadPlan(Llama(1), 1, {});
  auto none = MakeLoadPlan(Llama(0), 1, {});
  ASSERT_TRUE(one.ok() && none.ok());
  const uint64_t block = one->device_bytes[0] - none->device_bytes[0];
  PlanOptions options;
  options.placement = Placement::kAuto;
  const uint64_t cap = none->device_bytes[0] + 3 * block + block / 2;
  options.max_memory = {cap, cap, cap};
  auto plan = MakeLoadPlan(m, 3, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_GT(plan->device_bytes[1], 0u);
  EXPECT_EQ(plan->device_bytes[2], 0u);
  for (const PlannedTensor& t : plan->tensors) {
    std::string prefix = LayerPrefix(t.name);
    int layer = prefix.empty() ? -1 : std::stoi(prefix.substr(std::string("model.layers.").size()));
    if (layer >= 0) EXPECT_EQ(t.device, layer < 3 ? 0 : 1) << t.name;
    if (t.name == "lm_head.weight") EXPECT_EQ(t.device, 1);
  }
  options.max_memory.clear();
  auto balanced = MakeLoadPlan(m, 3, options);
  ASSERT_TRUE(balanced.ok());
  EXPECT_GT(balanced->device_bytes[2], 0u);
}

TEST(LoadPlanTest, CustomLayerMapLongestPrefixWins) {
  store::Manifest m = Llama(12);
  PlanOptions options;
  options.placement = Placement::kCustom;
  options.layer_map = {{"model", 0}, {"model.layers.1", 1}, {"model.layers.10.mlp", 2},
                       {"lm_head", 3}};
  auto plan = MakeLoadPlan(m, 4, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::map<std::string, int> device;
  for (const PlannedTensor& t : plan->tensors) device[t.name] = t.device;
  EXPECT_EQ(device["model.embed_tokens.weight"], 0);
  EXPECT_EQ(device["model.layers.1.mlp.up_proj.weight"], 1);
  // "model.layers.1" names module 1, not 10 or 11.
  EXPECT_EQ(device["model.layers.10.self_attn.q_proj.weight"], 0);
  EXPECT_EQ(device["model.layers.11.mlp.up_proj.weight"], 0);
  EXPECT_EQ(device["model.layers.10.mlp.down_proj.weight"], 2);
  EXPECT_EQ(device["lm_head.weight"], 3);
  for (int d = 0; d < 4; ++d) EXPECT_GT(plan->device_bytes[d], 0u) << d;
  // Offsets stay within each device's allocation.
  for (const PlannedTensor& t : plan->tensors) {
    EXPECT_LE(t.offset + t.size, plan->device_bytes[t.device]) << t.name;
  }

  // A tensor no prefix covers is refused, naming it.
  options.layer_map = {{"model", 0}};
  auto uncovered = MakeLoadPlan(m, 4, options);
  EXPECT_EQ(uncovered.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(uncovered.status().message().find("'lm_head.weight'"), absl::string_view::npos)
      << uncovered.status();
  // A GPU beyond the load's devices.
  options.layer_map = {{"", 4}};
  EXPECT_EQ(MakeLoadPlan(m, 4, options).status().code(), absl::StatusCode::kInvalidArgument);
  // "" covers everything; a cap below what the map puts there names the GPU and bytes.
  options.layer_map = {{"", 1}};
  options.max_memory = {1ull << 40, 1 << 20, 1ull << 40, 1ull << 40};
  auto over = MakeLoadPlan(m, 4, options);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted) << over.status();
  EXPECT_NE(over.status().message().find("backend_config.max_memory.1"), absl::string_view::npos)
      << over.status();
  EXPECT_NE(over.status().message().find("its cap is 1048576"), absl::string_view::npos);
}

TEST(LoadPlanTest, TensorParallelShards) {
  store::Manifest m = Llama(1, 256);
  PlanOptions options;
  options.placement = Placement::kTensorParallel;
  auto plan = MakeLoadPlan(m, 2, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->tensors.size(), 2 * m.tensors.size());
  std::map<std::string, std::vector<const PlannedTensor*>> by_name;
  for (const PlannedTensor& t : plan->tensors) by_name[t.name].push_back(&t);
  auto check = [&](const std::string& name, ShardKind kind, std::vector<int64_t> shape) {
    ASSERT_EQ(by_name[name].size(), 2u) << name;
    for (int s = 0; s < 2; ++s) {
      const PlannedTensor* t = by_name[name][s];
      EXPECT_EQ(t->shard_kind, kind) << name;
      EXPECT_EQ(t->shape, shape) << name;
      EXPECT_EQ(t->device, s);
      EXPECT_EQ(t->shard, s);
    }
  };
  check("model.layers.0.self_attn.q_proj.weight", ShardKind::kRows, {128, 256});
  check("model.layers.0.mlp.up_proj.weight", ShardKind::kRows, {512, 256});
  check("model.layers.0.self_attn.o_proj.weight", ShardKind::kColumns, {256, 128});
  check("model.layers.0.mlp.down_proj.weight", ShardKind::kColumns, {256, 512});
  check("model.embed_tokens.weight", ShardKind::kRows, {500, 256});
  check("model.norm.weight", ShardKind::kWhole, {256});

  m.tensors.push_back(T("model.layers.0.self_attn.k_proj.weight", {3, 256}));
  EXPECT_EQ(MakeLoadPlan(m, 2, options).status().code(), absl::StatusCode::kInvalidArgument);
}

// BERT / MiniLM: a 1-row position_ids buffer, norms named after the embeddings, and
// biases; only the weights of the projections and the vocabulary split.
TEST(LoadPlanTest, TensorParallelReplicatesBuffersNormsAndScalars) {
  store::Manifest m;
  m.name = "minilm";
  m.files = {"data-00000.bin"};
  m.tensors.push_back(T("embeddings.position_ids", {1, 512}, DType::kI64));
  m.tensors.push_back(T("embeddings.word_embeddings.weight", {30522, 384}));
  m.tensors.push_back(T("embeddings.token_type_embeddings.weight", {2, 384}));
  m.tensors.push_back(T("embeddings.LayerNorm.weight", {384}));
  m.tensors.push_back(T("encoder.layer.0.attention.self.query.weight", {384, 384}));
  m.tensors.push_back(T("encoder.layer.0.attention.self.query.bias", {384}));
  m.tensors.push_back(T("encoder.layer.0.attention.output.dense.weight", {384, 384}));
  m.tensors.push_back(T("encoder.layer.0.attention.output.dense.bias", {384}));
  m.tensors.push_back(T("encoder.layer.0.attention.output.LayerNorm.bias", {384}));
  m.tensors.push_back(T("logit_scale", {}, DType::kF32));
  PlanOptions options;
  options.placement = Placement::kTensorParallel;
  auto plan = MakeLoadPlan(m, 2, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::map<std::string, ShardKind> kind;
  std::map<std::string, std::vector<int64_t>> shape;
  for (const PlannedTensor& t : plan->tensors) {
    kind[t.name] = t.shard_kind;
    shape[t.name] = t.shape;
  }
  EXPECT_EQ(kind["embeddings.position_ids"], ShardKind::kWhole);
  EXPECT_EQ(shape["embeddings.position_ids"], (std::vector<int64_t>{1, 512}));
  EXPECT_EQ(kind["embeddings.LayerNorm.weight"], ShardKind::kWhole);
  EXPECT_EQ(kind["encoder.layer.0.attention.output.LayerNorm.bias"], ShardKind::kWhole);
  EXPECT_EQ(kind["logit_scale"], ShardKind::kWhole);
  EXPECT_EQ(kind["embeddings.word_embeddings.weight"], ShardKind::kRows);
  EXPECT_EQ(shape["embeddings.word_embeddings.weight"], (std::vector<int64_t>{15261, 384}));
  EXPECT_EQ(kind["encoder.layer.0.attention.self.query.bias"], ShardKind::kRows);
  EXPECT_EQ(kind["encoder.layer.0.attention.output.dense.weight"], ShardKind::kColumns);
  EXPECT_EQ(kind["encoder.layer.0.attention.output.dense.bias"], ShardKind::kWhole);
  // A weight whose split dimension does not divide is still an error, naming it.
  m.tensors.push_back(T("encoder.layer.0.attention.self.key.weight", {383, 384}));
  auto bad = MakeLoadPlan(m, 2, options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("self.key.weight"), std::string::npos);
}

class HalfSizeTransform : public TransformProvider {
 public:
  std::optional<TransformedTensor> Plan(const store::ManifestTensor& t) override {
    if (t.shape.size() != 2) return std::nullopt;
    return TransformedTensor{DType::kU8, {static_cast<int64_t>(t.size / 2)}, t.size / 2, "half"};
  }
  absl::StatusOr<std::unique_ptr<TensorTransform>> Begin(const store::ManifestTensor&,
                                                         const TransformedTensor&) override {
    return absl::UnimplementedError("plan only");
  }
};

TEST(LoadPlanTest, TransformChangesOutputSize) {
  store::Manifest m = Llama(1);
  HalfSizeTransform half;
  PlanOptions options;
  options.transform = &half;
  auto plan = MakeLoadPlan(m, 1, options);
  ASSERT_TRUE(plan.ok());
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const PlannedTensor& t = plan->tensors[i];
    if (m.tensors[i].shape.size() == 2) {
      EXPECT_TRUE(t.transformed);
      EXPECT_EQ(t.size, m.tensors[i].size / 2);
      EXPECT_EQ(t.dtype, DType::kU8);
      EXPECT_EQ(t.transform_info, "half");
    } else {
      EXPECT_FALSE(t.transformed);
      EXPECT_EQ(t.size, m.tensors[i].size);
    }
  }
  // Under tensor_parallel the transform plans each shard as a tensor of its own: a split
  // weight's shards are half of half its size, a replicated one is planned whole.
  options.placement = Placement::kTensorParallel;
  auto tp = MakeLoadPlan(m, 2, options);
  ASSERT_TRUE(tp.ok()) << tp.status();
  ASSERT_EQ(tp->tensors.size(), 2 * m.tensors.size());
  for (const PlannedTensor& t : tp->tensors) {
    const store::ManifestTensor& src = m.tensors[t.source];
    uint64_t expected = src.size;
    if (src.shape.size() == 2) expected /= 2;                 // the transform
    if (t.shard_kind != ShardKind::kWhole) expected /= 2;     // the split
    EXPECT_EQ(t.size, expected) << t.name;
    EXPECT_EQ(t.transformed, src.shape.size() == 2) << t.name;
  }
  EXPECT_EQ(ShardTensor(m.tensors[3], ShardKind::kColumns, 2).shape[1],  // o_proj
            m.tensors[3].shape[1] / 2);
}

}  // namespace
}  // namespace loadstar::loader
