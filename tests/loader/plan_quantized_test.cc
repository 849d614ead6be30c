// PlanQuantized (the exact footprint the scheduler reserves, issue 8 item 5): for every
// placement x quantization it plans, without reading a tensor, exactly the allocation
// each device then gets from LoadQuantized, the same source and variant, and it fails
// as the load fails, with the same code.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "loader/host_device.h"
#include "loader/quantized_load.h"
#include "store/quantized_artifact.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/quant_test_util.h"

namespace loadstar::loader {
namespace {

using loadstar::testing::CheckpointBuilder;
using loadstar::testing::QuantConfigOf;
using testing::TestStore;
using testing::TinyLlama;

struct PlanCase {
  std::string name;
  quant::QuantConfig config;
  bool cast = false;      // cast_to_torch_dtype
  bool variant = false;   // a stored variant of `config` exists
  Placement placement = Placement::kSingle;
  int devices = 1;
};

std::vector<PlanCase> Cases() {
  quant::QuantConfig none;
  quant::QuantConfig to_fp16;
  to_fp16.torch_dtype = DType::kF16;  // the checkpoint has bf16 and f32 tensors
  quant::QuantConfig nf4 = QuantConfigOf(quant::QuantType::kNf4);
  quant::QuantConfig nf4_dq = nf4;
  nf4_dq.double_quant = true;
  quant::QuantConfig fp4 = QuantConfigOf(quant::QuantType::kFp4, 128);
  quant::QuantConfig int8 = QuantConfigOf(quant::QuantType::kInt8);
  std::vector<PlanCase> out;
  const std::vector<std::pair<Placement, int>> placements = {{Placement::kSingle, 1},
                                                             {Placement::kAuto, 2},
                                                             {Placement::kAuto, 4},
                                                             {Placement::kCustom, 2},
                                                             {Placement::kTensorParallel, 2},
                                                             {Placement::kTensorParallel, 4}};
  const std::vector<std::tuple<std::string, quant::QuantConfig, bool>> configs = {
      {"none", none, false}, {"fp16", to_fp16, true}, {"nf4", nf4, false},
      {"nf4dq", nf4_dq, false}, {"fp4bs128", fp4, false}, {"int8", int8, false}};
  for (const auto& [placement, n] : placements) {
    for (const auto& [qname, config, cast] : configs) {
      for (bool variant : {false, true}) {
        if (variant && config.type == quant::QuantType::kNone) continue;
        const char* pname = placement == Placement::kSingle           ? "single"
                            : placement == Placement::kAuto           ? "auto"
                            : placement == Placement::kCustom         ? "custom"
                                                                      : "tp";
        out.push_back({std::string(pname) + std::to_string(n) + "_" + qname +
                           (variant ? "_variant" : ""),
                       config, cast, variant, placement, n});
      }
    }
  }
  return out;
}

class PlanQuantizedTest : public ::testing::TestWithParam<PlanCase> {};

TEST_P(PlanQuantizedTest, PlansExactlyWhatTheLoadAllocates) {
  const PlanCase& c = GetParam();
  TestStore ts;
  ts.Save(TinyLlama(4, 128, 256), "m");
  if (c.variant) {
    ASSERT_TRUE(store::SaveQuantizedVariant(ts.store(), "m", c.config).ok());
  }
  PlanOptions options;
  options.placement = c.placement;
  if (c.placement == Placement::kCustom) {
    options.layer_map = {{"", 0}, {"model.layers.2", 1}, {"model.layers.3", 1},
                         {"lm_head", 1}};
  }
  const QuantizedLoadOptions load_options{.cast_to_torch_dtype = c.cast};

  auto planned = PlanQuantized(ts.store(), "m", c.config, c.devices, options, load_options);
  ASSERT_TRUE(planned.ok()) << planned.status();

  std::vector<std::unique_ptr<HostDevice>> owned;
  std::vector<Device*> devices;
  for (int d = 0; d < c.devices; ++d) {
    owned.push_back(std::make_unique<HostDevice>(d, 1ull << 30));
    devices.push_back(owned.back().get());
  }
  LoadPipeline::Options pipeline_options;
  pipeline_options.threads = 2;
  auto pipeline = LoadPipeline::Create(pipeline_options);
  ASSERT_TRUE(pipeline.ok());
  auto loaded = LoadQuantized(**pipeline, ts.store(), "m", c.config, devices, options,
                              load_options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();

  EXPECT_EQ(planned->source, loaded->source);
  EXPECT_EQ(planned->variant, loaded->variant);
  ASSERT_EQ(planned->plan.device_bytes.size(), static_cast<size_t>(c.devices));
  uint64_t total = 0;
  for (int d = 0; d < c.devices; ++d) {
    EXPECT_EQ(planned->plan.device_bytes[d], loaded->model->allocation(d).size) << "device " << d;
    total += planned->plan.device_bytes[d];
  }
  EXPECT_GE(total, loaded->quantized_bytes);  // the tensors plus alignment padding
  // Every tensor where the plan put it...
  // (Tensor parallel: a name has one shard per device.)
  std::set<std::string> planned_names;
  std::set<std::pair<std::string, int>> planned_at;
  for (const PlannedTensor& t : planned->plan.tensors) {
    planned_names.insert(t.name);
    planned_at.insert({t.name, t.device});
  }
  for (const LoadedTensor& t : loaded->model->tensors()) {
    if (planned_names.contains(t.name)) {
      EXPECT_TRUE(planned_at.contains({t.name, t.device})) << t.name << " on " << t.device;
    }
  }
  // ...with the bytes a one-device load of the same config gives (whole tensors are
  // quantized alike wherever they land; tensor-parallel shards are checked shard by shard
  // in quantized_load_test.cc).
  if (c.placement != Placement::kTensorParallel && c.devices > 1) {
    HostDevice one(9, 1ull << 30);
    auto reference = LoadQuantized(**pipeline, ts.store(), "m", c.config, {&one}, {},
                                   load_options);
    ASSERT_TRUE(reference.ok()) << reference.status();
    std::map<std::string, const LoadedTensor*> by_name;
    for (const LoadedTensor& t : reference->model->tensors()) by_name[t.name] = &t;
    std::set<int> used;
    ASSERT_EQ(loaded->model->tensors().size(), by_name.size());
    for (const LoadedTensor& t : loaded->model->tensors()) {
      ASSERT_TRUE(by_name.contains(t.name)) << t.name;
      auto got = loaded->model->ReadTensor(t);
      auto want = reference->model->ReadTensor(*by_name[t.name]);
      ASSERT_TRUE(got.ok() && want.ok()) << t.name;
      EXPECT_TRUE(*got == *want) << t.name << " on device " << t.device;
      used.insert(t.device);
    }
    EXPECT_EQ(static_cast<int>(used.size()), c.devices);  // really spread
  }
  if (c.placement == Placement::kCustom) {
    for (const LoadedTensor& t : loaded->model->tensors()) {
      const bool on_one = t.name.starts_with("model.layers.2.") ||
                          t.name.starts_with("model.layers.3.") || t.name.starts_with("lm_head");
      EXPECT_EQ(t.device, on_one ? 1 : 0) << t.name;
    }
  }
  if (c.config.type != quant::QuantType::kNone) {
    // Quantized: under the fp16/bf16/f32 checkpoint the old estimate priced.
    auto checkpoint = ts.store().GetManifest("m");
    ASSERT_TRUE(checkpoint.ok());
    EXPECT_LT(total, checkpoint->TotalBytes());
  }
}

INSTANTIATE_TEST_SUITE_P(Placements, PlanQuantizedTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

// What the load refuses, the plan refuses with the same code, before any read.
TEST(PlanQuantizedRefusalTest, FailsAsTheLoadWould) {
  TestStore ts;
  ts.Save(TinyLlama(2, 128, 256), "m");
  const quant::QuantConfig nf4 = QuantConfigOf(quant::QuantType::kNf4);

  PlanOptions uncovered;
  uncovered.placement = Placement::kCustom;
  uncovered.layer_map = {{"model.layers", 0}};  // embeddings, norm and lm_head uncovered
  auto a = PlanQuantized(ts.store(), "m", nf4, 1, uncovered);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << a.status();
  EXPECT_NE(a.status().message().find("model.embed_tokens.weight"), std::string::npos)
      << a.status();

  PlanOptions capped;
  capped.placement = Placement::kAuto;
  capped.max_memory = {4096, 4096};
  auto b = PlanQuantized(ts.store(), "m", nf4, 2, capped);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted) << b.status();
  EXPECT_NE(b.status().message().find("max_memory"), std::string::npos) << b.status();

  PlanOptions tp;
  tp.placement = Placement::kTensorParallel;
  auto c = PlanQuantized(ts.store(), "m", nf4, 3, tp);  // 128 rows do not split in 3
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_NE(c.status().message().find("model."), std::string::npos) << c.status();

  auto d = PlanQuantized(ts.store(), "absent", nf4, 1, {});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound) << d.status();
}

}  // namespace
}  // namespace loadstar::loader
