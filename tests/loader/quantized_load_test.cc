// Quantize while streaming (loader/quantize_transform.h) and loads of stored quantized
// artifacts (loader/quantized_load.h): both give, tensor for tensor, the bytes of
// quant::PrepareTensor on the whole checkpoint tensor.
#include "loader/quantized_load.h"

#include <map>

#include "gtest/gtest.h"
#include "loader/host_device.h"
#include "loader/quantize_transform.h"
#include "nlohmann/json.hpp"
#include "quant/prepare.h"
#include "store/quantized_artifact.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/quant_test_util.h"

namespace loadstar::loader {
namespace {

using loadstar::testing::CheckpointBuilder;
using loadstar::testing::PreparedTensors;
using loadstar::testing::QuantConfigOf;
using testing::TestStore;
using testing::TinyLlama;

void ExpectModelEquals(const LoadedModel& model,
                       const std::map<std::string, quant::NamedTensor>& expected) {
  ASSERT_EQ(model.tensors().size(), expected.size());
  uint64_t total = 0;
  for (const LoadedTensor& t : model.tensors()) {
    auto it = expected.find(t.name);
    ASSERT_NE(it, expected.end()) << t.name;
    EXPECT_EQ(t.dtype, it->second.dtype) << t.name;
    EXPECT_EQ(t.shape, it->second.shape) << t.name;
    auto bytes = model.ReadTensor(t);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_TRUE(*bytes == std::string(it->second.data.begin(), it->second.data.end()))
        << t.name;
    total += it->second.data.size();
  }
  EXPECT_EQ(model.tensor_bytes(), total);
}

std::unique_ptr<LoadPipeline> SmallChunkPipeline() {
  LoadPipeline::Options options;
  options.chunk_bytes = 8192;  // many chunks per tensor: exercises the streaming quantizer
  options.ring_bytes = 1 << 20;
  options.threads = 2;
  auto p = LoadPipeline::Create(options);
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

class QuantizedLoadTest : public ::testing::TestWithParam<quant::QuantConfig> {};

TEST_P(QuantizedLoadTest, StreamingEqualsArtifactEqualsPrepareTensor) {
  const quant::QuantConfig config = GetParam();
  TestStore ts;
  CheckpointBuilder builder = TinyLlama(2, 128, 200);
  ts.Save(builder, "org/llama");
  auto expected = PreparedTensors(builder, config);
  auto pipeline = SmallChunkPipeline();
  HostDevice device(0, 1ull << 30);

  // 1. No artifact: quantized while streaming.
  auto streamed = LoadQuantized(*pipeline, ts.store(), "org/llama", config, {&device}, {});
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->source, "checkpoint");
  ExpectModelEquals(*streamed->model, expected);
  EXPECT_EQ(streamed->quantized_bytes, streamed->model->tensor_bytes());

  // 2. The stored artifact is read directly.
  ASSERT_TRUE(store::SaveQuantizedVariant(ts.store(), "org/llama", config).ok());
  EXPECT_EQ(MatchingVariant(ts.store(), "org/llama", config), config.VariantKey());
  LoadStats stats;
  auto artifact = LoadQuantized(*pipeline, ts.store(), "org/llama", config, {&device}, {}, {},
                                nullptr, {}, &stats);
  ASSERT_TRUE(artifact.ok()) << artifact.status();
  EXPECT_EQ(artifact->source, "artifact");
  EXPECT_EQ(artifact->variant, config.VariantKey());
  ExpectModelEquals(*artifact->model, expected);
  EXPECT_EQ(stats.bytes, artifact->quantized_bytes);  // read exactly the quantized bytes

  // Same table (names, dtypes, shapes, quant-state info) either way.
  ASSERT_EQ(streamed->model->tensors().size(), artifact->model->tensors().size());
  std::map<std::string, std::string> info;
  for (const LoadedTensor& t : artifact->model->tensors()) info[t.name] = t.transform_info;
  for (const LoadedTensor& t : streamed->model->tensors()) {
    nlohmann::json a = nlohmann::json::parse(info[t.name].empty() ? "{}" : info[t.name]);
    nlohmann::json s = nlohmann::json::parse(t.transform_info.empty() ? "{}" : t.transform_info);
    // Offsets differ between the layouts; the quant state must not.
    for (auto* j : {&a, &s}) {
      for (const char* k : {"absmax_offset", "quant_map_offset", "nested_absmax_offset",
                            "nested_quant_map_offset", "scb_offset"}) {
        j->erase(k);
      }
    }
    EXPECT_EQ(a, s) << t.name;
  }
  const LoadedTensor* q = streamed->model->Find("model.layers.1.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  nlohmann::json qi = nlohmann::json::parse(q->transform_info);
  EXPECT_EQ(qi["quant_type"], std::string(quant::QuantTypeName(config.type)));
  if (config.type != quant::QuantType::kInt8) {
    EXPECT_EQ(qi["absmax_offset"],
              streamed->model->Find("model.layers.1.self_attn.q_proj.weight.absmax")->offset);
  }

  // 3. use_artifact = false quantizes again even with the artifact there.
  auto forced = LoadQuantized(*pipeline, ts.store(), "org/llama", config, {&device}, {},
                              {.use_artifact = false});
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(forced->source, "checkpoint");
  ASSERT_TRUE(streamed->model->Free().ok());
  ASSERT_TRUE(artifact->model->Free().ok());
  ASSERT_TRUE(forced->model->Free().ok());
  EXPECT_EQ(device.free_memory(), device.total_memory());
}

INSTANTIATE_TEST_SUITE_P(
    Configs, QuantizedLoadTest,
    ::testing::Values(QuantConfigOf(quant::QuantType::kNf4),
                      QuantConfigOf(quant::QuantType::kNf4, 128, true),
                      QuantConfigOf(quant::QuantType::kFp4, 32, false, DType::kBF16),
                      QuantConfigOf(quant::QuantType::kFp4, 4096, true, DType::kF32),
                      QuantConfigOf(quant::QuantType::kInt8)),
    [](const ::testing::TestParamInfo<quant::QuantConfig>& info) {
      std::string key = info.param.VariantKey() + "_" +
                        std::string(TorchDTypeName(info.param.torch_dtype));
      for (char& c : key) {
        if (c == '-') c = '_';
      }
      return key;
    });

TEST(QuantizedLoadTest, Conv1DWeightsAreTransposedLikeTransformers) {
  TestStore ts;
  CheckpointBuilder b(3);
  b.Config("{\"model_type\": \"gpt2\", \"torch_dtype\": \"float16\"}");
  b.Add("transformer.wte.weight", DType::kF16, {100, 64})
      .Add("transformer.h.0.attn.c_attn.weight", DType::kF16, {64, 192})
      .Add("transformer.h.0.attn.c_attn.bias", DType::kF16, {192})
      .Add("transformer.h.0.mlp.c_fc.weight", DType::kF32, {64, 256});
  ts.Save(b, "gpt2ish");
  auto pipeline = SmallChunkPipeline();
  HostDevice device(0, 1ull << 30);
  for (const quant::QuantConfig& config :
       {QuantConfigOf(quant::QuantType::kNf4, 64, true), QuantConfigOf(quant::QuantType::kInt8)}) {
    auto loaded = LoadQuantized(*pipeline, ts.store(), "gpt2ish", config, {&device}, {});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ExpectModelEquals(*loaded->model, PreparedTensors(b, config, "gpt2"));
    if (config.type == quant::QuantType::kInt8) {
      EXPECT_EQ(loaded->model->Find("transformer.h.0.attn.c_attn.weight")->shape,
                (std::vector<int64_t>{192, 64}));
    }
  }
}

TEST(QuantizedLoadTest, NoneLoadsTheCheckpointUnchanged) {
  TestStore ts;
  CheckpointBuilder builder = TinyLlama(1, 64, 64);
  ts.Save(builder, "m");
  auto pipeline = SmallChunkPipeline();
  HostDevice device(0, 1ull << 30);
  auto loaded = LoadQuantized(*pipeline, ts.store(), "m", quant::QuantConfig{}, {&device}, {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->source, "checkpoint");
  for (const auto& t : builder.tensors()) {
    EXPECT_EQ(*loaded->model->ReadTensor(*loaded->model->Find(t.name)), t.bytes) << t.name;
  }
}

TEST(QuantizedLoadTest, ArtifactOfAnotherTorchDtypeIsNotUsed) {
  TestStore ts;
  ts.Save(TinyLlama(1, 64, 64), "m");
  ASSERT_TRUE(
      store::SaveQuantizedVariant(ts.store(), "m", QuantConfigOf(quant::QuantType::kNf4)).ok());
  EXPECT_EQ(MatchingVariant(ts.store(), "m", QuantConfigOf(quant::QuantType::kNf4)), "nf4-bs64");
  EXPECT_EQ(MatchingVariant(ts.store(), "m",
                            QuantConfigOf(quant::QuantType::kNf4, 64, false, DType::kBF16)),
            "");
  quant::QuantConfig compute = QuantConfigOf(quant::QuantType::kNf4);
  compute.compute_dtype = DType::kBF16;  // does not change the bytes
  EXPECT_EQ(MatchingVariant(ts.store(), "m", compute), "nf4-bs64");
}

// tensor_parallel + quantization: every shard is quantized on its own blocks, as if it
// were its own tensor (its own absmax and quant state), on host:2 and host:4; a stored
// variant (blocks over whole tensors) is not used for shards.
struct TensorParallelCase {
  quant::QuantConfig config;
  int devices;
};

class TensorParallelQuantizedTest : public ::testing::TestWithParam<TensorParallelCase> {};

TEST_P(TensorParallelQuantizedTest, EachShardIsQuantizedOnItsOwn) {
  const auto [config, n] = GetParam();
  TestStore ts;
  CheckpointBuilder builder = TinyLlama(2, 128, 256);
  ts.Save(builder, "m");
  if (config.type != quant::QuantType::kNone) {
    ASSERT_TRUE(store::SaveQuantizedVariant(ts.store(), "m", config).ok());
  }
  auto manifest = ts.store().GetManifest("m");
  ASSERT_TRUE(manifest.ok());
  auto pipeline = SmallChunkPipeline();  // 8 KiB chunks: column shards cut mid-row
  std::vector<std::unique_ptr<HostDevice>> owned;
  std::vector<Device*> devices;
  for (int d = 0; d < n; ++d) {
    owned.push_back(std::make_unique<HostDevice>(d, 1ull << 30));
    devices.push_back(owned.back().get());
  }
  PlanOptions plan;
  plan.placement = Placement::kTensorParallel;
  auto loaded = LoadQuantized(*pipeline, ts.store(), "m", config, devices, plan,
                              {.cast_to_torch_dtype = true});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->source, "checkpoint");
  EXPECT_EQ(loaded->variant, "");
  testing::ExpectShardsEqual(*loaded->model,
                             testing::ExpectedShards(builder, *manifest, n, &config));
  // Each shard's quant state points at its own companions, on its own device.
  int annotated = 0;
  for (const LoadedTensor& t : loaded->model->tensors()) {
    if (t.transform_info.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(t.transform_info);
    const std::string key = config.type == quant::QuantType::kInt8 ? "scb_offset" : "absmax_offset";
    const std::string companion =
        config.type == quant::QuantType::kInt8
            ? t.name.substr(0, t.name.size() - std::string(".weight").size()) + ".SCB"
            : t.name + ".absmax";
    const LoadedTensor* found = nullptr;
    for (const LoadedTensor& c : loaded->model->tensors()) {
      if (c.name == companion && c.device == t.device) found = &c;
    }
    ASSERT_NE(found, nullptr) << companion;
    EXPECT_EQ(j[key], found->offset) << t.name << " on device " << t.device;
    ++annotated;
  }
  if (config.type != quant::QuantType::kNone) {
    EXPECT_GT(annotated, n);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Configs, TensorParallelQuantizedTest,
    ::testing::Values(TensorParallelCase{QuantConfigOf(quant::QuantType::kNf4), 2},
                      TensorParallelCase{QuantConfigOf(quant::QuantType::kNf4, 64, true), 4},
                      TensorParallelCase{QuantConfigOf(quant::QuantType::kFp4, 128), 2},
                      TensorParallelCase{QuantConfigOf(quant::QuantType::kInt8), 2},
                      TensorParallelCase{QuantConfigOf(quant::QuantType::kInt8), 4},
                      // No quantization, floating tensors cast to bf16 while streaming.
                      TensorParallelCase{
                          QuantConfigOf(quant::QuantType::kNone, 64, false, DType::kBF16), 4}),
    [](const ::testing::TestParamInfo<TensorParallelCase>& info) {
      const quant::QuantConfig& q = info.param.config;
      return std::string(quant::QuantTypeName(q.type)) + "_bs" + std::to_string(q.blocksize) +
             (q.double_quant ? "_dq" : "") + "_" + std::to_string(info.param.devices) + "dev";
    });

TEST(QuantizedLoadTest, TensorParallelSplitThatDoesNotDivideNamesTheTensor) {
  TestStore ts;
  CheckpointBuilder builder = TinyLlama(1, 64, 64);
  builder.Add("model.layers.0.mlp.gate_proj.weight", DType::kF16, {66, 64});
  ts.Save(builder, "m");
  auto pipeline = SmallChunkPipeline();
  std::vector<std::unique_ptr<HostDevice>> owned;
  std::vector<Device*> devices;
  for (int d = 0; d < 4; ++d) {
    owned.push_back(std::make_unique<HostDevice>(d, 1ull << 30));
    devices.push_back(owned.back().get());
  }
  PlanOptions plan;
  plan.placement = Placement::kTensorParallel;
  auto loaded = LoadQuantized(*pipeline, ts.store(), "m", QuantConfigOf(quant::QuantType::kNf4),
                              devices, plan);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(loaded.status().message()).find("model.layers.0.mlp.gate_proj.weight"),
            std::string::npos)
      << loaded.status();
}

}  // namespace
}  // namespace loadstar::loader
