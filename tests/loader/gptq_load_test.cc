// GPTQ (v1 and v2; 2, 3, 4, 8 bits; act-order; group_size -1) and AWQ gemm checkpoints
// packed by a numpy packer written from the format facts (tests/data/gptq_reference.py):
// `store save` takes them, `keep` serves every stored tensor byte for byte with its format
// in the tensor table, `none` gives the numpy dequantization exactly (fp32) as
// `<module>.weight`, nf4 quantizes that weight bnb-exact; malformed layers get one error
// naming the file and the field. Skipped without a Python with numpy + safetensors.
#include <cstring>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loader/host_device.h"
#include "loader/quantized_load.h"
#include "nlohmann/json.hpp"
#include "quant/prepare.h"
#include "store/safetensors.h"
#include "tests/loader/loader_test_util.h"
#include "tests/util/quant_test_util.h"
#include "tests/util/test_util.h"

namespace loadstar::loader {
namespace {

using ::testing::HasSubstr;

class GptqLoadTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Writes CASE with the reference script; "" when Python is missing (test skips).
  std::string Make(const std::string& c) {
    std::string python = loadstar::testing::FindPython("numpy, safetensors");
    if (python.empty()) return "";
    std::string out = ts_.dir().Join(c);
    std::string command = "'" + python + "' " + LOADSTAR_SOURCE_DIR +
                          "/tests/data/gptq_reference.py '" + out + "' " + c;
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    return out;
  }
  std::unique_ptr<LoadPipeline> Pipeline() {
    LoadPipeline::Options options;
    options.chunk_bytes = 4096;
    options.ring_bytes = 1 << 20;
    options.threads = 2;
    return LoadPipeline::Create(options).value();
  }
  testing::TestStore ts_;
  HostDevice device_{0, 1ull << 30};
};

TEST_P(GptqLoadTest, KeepNoneAndNf4) {
  const std::string out = Make(GetParam());
  if (out.empty()) GTEST_SKIP() << "no python3 with numpy and safetensors";
  absl::StatusOr<store::Manifest> saved = ts_.store().Save(out + "/hf", "q");
  ASSERT_TRUE(saved.ok()) << saved.status();
  auto file = store::ReadSafetensors(Env::Default(), out + "/hf/model.safetensors").value();
  std::string bytes = ReadFileToString(Env::Default(), out + "/hf/model.safetensors").value();
  auto pipeline = Pipeline();
  const std::string format = GetParam().starts_with("awq") ? "awq" : "gptq";

  // keep: every tensor as in the file; each qweight says how to read it.
  quant::QuantConfig keep = quant::ParseQuantizationShorthand("keep").value();
  auto kept = LoadQuantized(*pipeline, ts_.store(), "q", keep, {&device_}, {});
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_EQ(kept->model->tensors().size(), file.tensors.size());
  for (const store::SafetensorsTensor& t : file.tensors) {
    const LoadedTensor* l = kept->model->Find(t.name);
    ASSERT_NE(l, nullptr) << t.name;
    EXPECT_TRUE(kept->model->ReadTensor(*l).value() ==
                bytes.substr(file.data_offset + t.begin, t.size()))
        << t.name;
  }
  const LoadedTensor* qw = kept->model->Find("model.layers.0.mlp.up_proj.qweight");
  nlohmann::json info = nlohmann::json::parse(qw->transform_info);
  EXPECT_EQ(info["format"], format);
  EXPECT_EQ(info["in"], 64);
  EXPECT_EQ(info["out"], 96);
  ASSERT_TRUE(kept->model->Free().ok());

  // none (fp32): <module>.weight equals the numpy dequantization; companions are gone.
  quant::QuantConfig none;
  none.torch_dtype = DType::kF32;
  auto deq = LoadQuantized(*pipeline, ts_.store(), "q", none, {&device_}, {});
  ASSERT_TRUE(deq.ok()) << deq.status();
  for (const char* m : {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"}) {
    const LoadedTensor* w = deq->model->Find(std::string(m) + ".weight");
    ASSERT_NE(w, nullptr) << m;
    EXPECT_EQ(w->dtype, DType::kF32);
    std::string want = ReadFileToString(Env::Default(), out + "/expected/" + m + ".f32").value();
    EXPECT_TRUE(deq->model->ReadTensor(*w).value() == want) << m;
    EXPECT_EQ(deq->model->Find(std::string(m) + ".qweight"), nullptr);
    EXPECT_EQ(deq->model->Find(std::string(m) + ".scales"), nullptr);
    EXPECT_EQ(deq->model->Find(std::string(m) + ".qzeros"), nullptr);
  }
  EXPECT_EQ(deq->model->tensors().size(), 4u);  // 2 weights, the norm and the bias
  EXPECT_EQ(deq->model->Find("model.norm.weight")->dtype, DType::kF32);  // cast to torch_dtype
  ASSERT_TRUE(deq->model->Free().ok());

  // nf4: PrepareTensor of the dequantized weight, bit for bit.
  quant::QuantConfig nf4 = loadstar::testing::QuantConfigOf(quant::QuantType::kNf4);
  auto q4 = LoadQuantized(*pipeline, ts_.store(), "q", nf4, {&device_}, {});
  ASSERT_TRUE(q4.ok()) << q4.status();
  const std::string m = "model.layers.0.mlp.up_proj";
  std::string w32 = ReadFileToString(Env::Default(), out + "/expected/" + m + ".f32").value();
  auto prepared = quant::PrepareTensor(nf4, m + ".weight", DType::kF32, {96, 64}, w32.data());
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  for (const quant::NamedTensor& t : prepared->tensors) {
    const LoadedTensor* l = q4->model->Find(t.name);
    ASSERT_NE(l, nullptr) << t.name;
    EXPECT_TRUE(q4->model->ReadTensor(*l).value() == std::string(t.data.begin(), t.data.end()))
        << t.name;
  }
  ASSERT_TRUE(q4->model->Free().ok());
}

INSTANTIATE_TEST_SUITE_P(Cases, GptqLoadTest,
                         ::testing::Values("gptq-v1-4bit", "gptq-v2-3bit-actorder",
                                           "gptq-v1-2bit-nogroup", "gptq-v2-8bit",
                                           "gptq-v1-4bit-sym", "gptq-v2-3bit-actorder-sym",
                                           "awq-gemm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           for (char& c : n) c = std::isalnum(c) ? c : '_';
                           return n;
                         });

TEST(GptqErrorsTest, MalformedLayersNameTheFileAndField) {
  std::string python = loadstar::testing::FindPython("numpy, safetensors");
  if (python.empty()) GTEST_SKIP() << "no python3 with numpy and safetensors";
  testing::TestStore ts;
  struct Case {
    const char* name;
    const char* want;
  };
  for (const Case& c : {Case{"bad-qweight-shape", "model.layers.0.mlp.up_proj.scales\": scales "
                                                  "[2, 96] do not match qweight [4, 96]: expected [1, 96] for "
                                                  "in_features 32"},
                        Case{"missing-scales", "its model.layers.0.self_attn.q_proj.scales is "
                                               "missing"},
                        Case{"sym-broken", "model.layers.0.mlp.up_proj.qzeros\": qzeros["},
                        Case{"sym-broken", "but quantization_config says sym: true (every "
                                           "stored zero point is 7 in checkpoint_format gptq)"}}) {
    std::string out = ts.dir().Join(c.name);
    std::string command = "'" + python + "' " + LOADSTAR_SOURCE_DIR +
                          "/tests/data/gptq_reference.py '" + out + "' " + c.name;
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    absl::Status s = ts.store().Save(out + "/hf", "bad").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.want)) << c.name;
    EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors")) << c.name;
  }
  // Refused layouts and values name the config field.
  for (const auto& [config, want] : std::vector<std::pair<std::string, std::string>>{
           {R"({"quantization_config": {"quant_method": "awq", "bits": 4, "version": "gemv"}})",
            "quantization_config.version: AWQ \"gemv\" layouts are not supported"},
           {R"({"quantization_config": {"quant_method": "awq", "bits": 4, "zero_point": false}})",
            "quantization_config.zero_point: AWQ without zero points is not supported"},
           {R"({"quantization_config": {"quant_method": "gptq", "bits": 4, "sym": "yes"}})",
            "quantization_config.sym: must be true or false"},
           {R"({"quantization_config": {"quant_method": "gptq", "bits": 5}})",
            "quantization_config.bits: 5 is not supported"},
           {R"({"quantization_config": {"quant_method": "gptq", "bits": 4, "checkpoint_format": "marlin"}})",
            "quantization_config.checkpoint_format: \"marlin\" is not supported"}}) {
    std::string out = ts.dir().Join("cfg");
    std::string command = "'" + python + "' " + LOADSTAR_SOURCE_DIR +
                          "/tests/data/gptq_reference.py '" + out + "' gptq-v1-4bit";
    ASSERT_EQ(std::system(command.c_str()), 0);
    ASSERT_TRUE(WriteFileAtomically(Env::Default(), out + "/hf/config.json", config).ok());
    absl::Status s = ts.store().Save(out + "/hf", "cfg").status();
    EXPECT_THAT(std::string(s.message()), HasSubstr(want));
    EXPECT_THAT(std::string(s.message()), HasSubstr("config.json"));
  }
}

}  // namespace
}  // namespace loadstar::loader
