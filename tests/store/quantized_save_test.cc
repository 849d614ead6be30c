// The one-pass `store save --quantize` (store/quantized_save.h): the variants quantized
// from the source bytes while the checkpoint is copied are, file for file and byte for
// byte, what the two-pass path (Store::Save, then SaveQuantizedVariant reading the
// stored copy back) writes; keys, refusals and overwrite as the two-pass CLI had them.
// Nothing read back and each weight quantized once: quantized_artifact_test.cc. Faults:
// store_fault_test.cc.
#include "store/quantized_save.h"

#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/quantized_artifact.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/quant_test_util.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

using loadstar::testing::CheckpointBuilder;
using loadstar::testing::QuantConfigOf;
using loadstar::testing::TempDir;
using ::testing::HasSubstr;

// Every file under `dir`, recursively: relative path -> bytes.
void ReadTree(const std::string& dir, const std::string& prefix,
              std::map<std::string, std::string>* out) {
  Env* env = Env::Default();
  const std::vector<std::string> children = env->GetChildren(dir).value();
  for (const std::string& child : children) {
    const std::string path = JoinPath(dir, child);
    if (env->IsDirectory(path)) {
      ReadTree(path, prefix + child + "/", out);
    } else {
      (*out)[prefix + child] = ReadFileToString(env, path, 1ull << 30).value();
    }
  }
}

std::map<std::string, std::string> Tree(const std::string& dir) {
  std::map<std::string, std::string> out;
  ReadTree(dir, "", &out);
  return out;
}

// MixedLlama in two shards (two data files).
CheckpointBuilder Llama() {
  CheckpointBuilder b = loadstar::testing::MixedLlama();
  b.Shards(2);
  return b;
}

// GPT-2: Conv1D weights (transposed before quantizing), a non-floating tensor kept as
// it is, and a zero-byte tensor (the copy never hands it over).
CheckpointBuilder Gpt2() {
  CheckpointBuilder b(11);
  b.Config("{\"model_type\": \"gpt2\", \"torch_dtype\": \"float16\"}");
  b.Add("transformer.wte.weight", DType::kF16, {96, 64})
      .Add("transformer.h.0.ln_1.weight", DType::kF32, {64})
      .Add("transformer.h.0.attn.c_attn.weight", DType::kF16, {64, 192})
      .Add("transformer.h.0.attn.c_attn.bias", DType::kF16, {192})
      .Add("transformer.h.0.attn.empty", DType::kF32, {0})
      .Add("transformer.h.0.attn.c_proj.weight", DType::kF16, {64, 64})
      .Add("transformer.h.0.attn.positions", DType::kI64, {16})
      .Add("transformer.h.0.mlp.c_fc.weight", DType::kF32, {64, 256})
      .Add("transformer.h.0.mlp.c_proj.weight", DType::kF16, {256, 64});
  return b;
}

std::vector<quant::QuantConfig> Configs() {
  return {QuantConfigOf(quant::QuantType::kNf4),
          QuantConfigOf(quant::QuantType::kNf4, 128, true),
          QuantConfigOf(quant::QuantType::kFp4, 32, false, DType::kBF16),
          QuantConfigOf(quant::QuantType::kFp4, 64, true, DType::kF32),
          QuantConfigOf(quant::QuantType::kInt8)};
}

class QuantizedSaveTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    builder_ = GetParam() == "gpt2" ? Gpt2() : Llama();
    ASSERT_TRUE(builder_.Write(dir_.Join("src")).ok());
  }

  std::unique_ptr<Store> Open(const std::string& root) {
    return Store::Open({.root = dir_.Join(root)}).value();
  }

  // The two-pass reference: save, then each variant read back from the stored copy.
  std::map<std::string, std::string> TwoPass(const std::vector<quant::QuantConfig>& configs) {
    auto store = Open("two-pass-" + std::to_string(round_++));
    EXPECT_TRUE(store->Save(dir_.Join("src"), "org/m").ok());
    for (const quant::QuantConfig& config : configs) {
      absl::StatusOr<Manifest> v = SaveQuantizedVariant(*store, "org/m", config);
      EXPECT_TRUE(v.ok()) << v.status();
    }
    return Tree(store->ModelDir("org/m").value());
  }

  TempDir dir_;
  CheckpointBuilder builder_;
  int round_ = 0;
};

TEST_P(QuantizedSaveTest, OnePassEqualsTwoPassByteForByte) {
  // All variants fed by one copy, and each alone.
  std::vector<std::vector<quant::QuantConfig>> cases = {Configs()};
  for (const quant::QuantConfig& c : Configs()) cases.push_back({c});
  for (const std::vector<quant::QuantConfig>& configs : cases) {
    SCOPED_TRACE(configs.size() == 1 ? configs[0].VariantKey() : "all");
    std::map<std::string, std::string> expected = TwoPass(configs);
    auto store = Open("one-pass-" + std::to_string(round_++));
    std::vector<QuantizedInputsStats> stats;
    absl::StatusOr<ModelWithVariants> saved =
        SaveQuantized(*store, dir_.Join("src"), "org/m", configs, {}, {}, &stats);
    ASSERT_TRUE(saved.ok()) << saved.status();
    ASSERT_EQ(saved->variants.size(), configs.size());
    for (size_t i = 0; i < configs.size(); ++i) {
      EXPECT_EQ(saved->variants[i].variant, configs[i].VariantKey());
      EXPECT_EQ(saved->variants[i], store->GetManifest("org/m", configs[i].VariantKey()).value());
      // Each source tensor prepared once (the zero-byte one has no output to fill).
      EXPECT_EQ(stats[i].sizing_quantizations, 0);
      int64_t nonempty = 0;
      for (const ManifestTensor& t : saved->model.tensors) nonempty += t.size > 0;
      EXPECT_EQ(stats[i].fill_quantizations(), nonempty);
    }
    EXPECT_EQ(saved->model, store->GetManifest("org/m").value());
    std::map<std::string, std::string> got = Tree(store->ModelDir("org/m").value());
    ASSERT_EQ(got.size(), expected.size());
    for (const auto& entry : expected) {
      ASSERT_TRUE(got.count(entry.first)) << entry.first;
      EXPECT_TRUE(got[entry.first] == entry.second) << entry.first << " differs";
    }
    EXPECT_TRUE(store->Verify("org/m").ok());
    EXPECT_TRUE(Env::Default()->GetChildren(dir_.Join("one-pass-" + std::to_string(round_ - 1) +
                                                      "/.tmp"))
                    .value()
                    .empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Models, QuantizedSaveTest, ::testing::Values("llama", "gpt2"));

class QuantizedSaveRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Llama().Write(dir_.Join("src")).ok());
    store_ = Store::Open({.root = dir_.Join("store")}).value();
  }
  TempDir dir_;
  std::unique_ptr<Store> store_;
};

// Refusals come before anything is written.
TEST_F(QuantizedSaveRulesTest, RepeatedKeyAndNoneAreRefusedUpFront) {
  absl::StatusOr<ModelWithVariants> twice = SaveQuantized(
      *store_, dir_.Join("src"), "m",
      {QuantConfigOf(quant::QuantType::kNf4), QuantConfigOf(quant::QuantType::kNf4, 64)});
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(twice.status().message()),
              HasSubstr("variant nf4-bs64 of model m requested twice"));
  absl::StatusOr<ModelWithVariants> none =
      SaveQuantized(*store_, dir_.Join("src"), "m", {QuantConfigOf(quant::QuantType::kNone)});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetManifest("m").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Env::Default()->GetChildren(dir_.Join("store/.tmp")).value().empty());
  // No configs: a plain save.
  absl::StatusOr<ModelWithVariants> plain = SaveQuantized(*store_, dir_.Join("src"), "m", {});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(plain->variants.empty());
  EXPECT_TRUE(store_->List().value()[0].variants.empty());
}

// An existing model: AlreadyExists (nothing changed) unless overwrite, which replaces
// the model and its variants with the new ones, as Save + SaveQuantizedVariant did.
TEST_F(QuantizedSaveRulesTest, OverwriteReplacesTheModelAndItsVariants) {
  ASSERT_TRUE(store_->Save(dir_.Join("src"), "m").ok());
  ASSERT_TRUE(SaveQuantizedVariant(*store_, "m", QuantConfigOf(quant::QuantType::kInt8)).ok());
  const std::vector<quant::QuantConfig> nf4 = {QuantConfigOf(quant::QuantType::kNf4)};
  EXPECT_EQ(SaveQuantized(*store_, dir_.Join("src"), "m", nf4).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->List().value()[0].variants, std::vector<std::string>{"int8"});
  absl::StatusOr<ModelWithVariants> replaced =
      SaveQuantized(*store_, dir_.Join("src"), "m", nf4, {}, {.overwrite = true});
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(store_->List().value()[0].variants, std::vector<std::string>{"nf4-bs64"});
  EXPECT_TRUE(store_->Verify("m").ok());
}

}  // namespace
}  // namespace loadstar::store
