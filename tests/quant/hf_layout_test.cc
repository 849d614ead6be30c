// The whole-model layout against transformers' own quantized save_pretrained() of tiny
// random llama / gpt2 models (tests/data/bnb_golden/hf_layouts.json, written by
// make_bnb_golden.py): which tensors are quantized, every state-dict name, dtype and
// shape, the quant_state JSON, the parsed quantization_config and the parameter footprint.
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "quant/policy.h"
#include "quant/prepare.h"

namespace loadstar::quant {
namespace {

DType FromTorchName(const std::string& s) {
  if (s == "uint8") return DType::kU8;
  if (s == "int8") return DType::kI8;
  if (s == "int64") return DType::kI64;
  return *ParseTorchDType(s);
}

// Drops the data-dependent ", \"nested_offset\": <v>" from a quant_state JSON.
std::string WithoutOffset(std::string json) {
  const size_t pos = json.find(", \"nested_offset\"");
  if (pos != std::string::npos) json = json.substr(0, pos) + "}";
  return json;
}

TEST(HfLayoutTest, MatchesTransformersSavePretrained) {
  std::ifstream in(std::string(LOADSTAR_SOURCE_DIR) + "/tests/data/bnb_golden/hf_layouts.json");
  if (!in.good()) GTEST_SKIP() << "hf_layouts.json not generated (needs transformers)";
  const nlohmann::json layouts = nlohmann::json::parse(in);
  ASSERT_GE(layouts.size(), 4u);
  for (const auto& layout : layouts) {
    SCOPED_TRACE(layout["name"].get<std::string>());
    auto config = ParseQuantizationConfig(layout["quantization_config"],
                                          "config.json.quantization_config");
    ASSERT_TRUE(config.ok()) << config.status();
    config->torch_dtype = *ParseTorchDType(layout["torch_dtype"].get<std::string>());
    const std::string model_type = layout["model_type"];

    std::map<std::string, nlohmann::json> got;
    std::vector<TensorInfo> infos;
    for (const auto& [name, t] : layout["source"].items()) {
      const DType dtype = FromTorchName(t["dtype"]);
      const std::vector<int64_t> shape = t["shape"].get<std::vector<int64_t>>();
      infos.push_back({name, dtype, shape});
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      std::vector<uint8_t> zeros(n * DTypeSize(dtype));
      auto p = PrepareTensor(*config, name, dtype, shape, zeros.data(), {},
                             IsConv1DWeight(model_type, name, shape));
      ASSERT_TRUE(p.ok()) << name << ": " << p.status();
      for (const NamedTensor& out : p->tensors) {
        nlohmann::json e = {{"dtype", std::string(DTypeName(out.dtype))}, {"shape", out.shape}};
        if (out.name.find(".quant_state.") != std::string::npos) {
          e["json"] = WithoutOffset(std::string(out.data.begin(), out.data.end()));
        }
        got[out.name] = e;
      }
    }
    const auto& want = layout["quantized"];
    EXPECT_EQ(got.size(), want.size());
    for (const auto& [name, w] : want.items()) {
      ASSERT_TRUE(got.count(name)) << "missing " << name;
      const auto& g = got[name];
      EXPECT_EQ(g["dtype"], std::string(DTypeName(FromTorchName(w["dtype"])))) << name;
      // A nested quant_state's length depends on the data (nested_offset's digits).
      const bool data_dependent = w.contains("json") &&
                                  w["json"].get<std::string>().find("nested_offset") != std::string::npos;
      if (!data_dependent) {
        EXPECT_EQ(g["shape"], w["shape"]) << name;
      }
      if (w.contains("json")) {
        EXPECT_EQ(g["json"], WithoutOffset(w["json"])) << name;
      }
    }
    EXPECT_EQ(ModelFootprint(*config, infos).weights,
              layout["memory_footprint_params"].get<int64_t>());
  }
}

}  // namespace
}  // namespace loadstar::quant
