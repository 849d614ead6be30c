#include "quant/policy.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "quant/float16.h"

namespace loadstar::quant {
namespace {

using nlohmann::json;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(PolicyTest, ParsesHfBitsAndBytesConfig) {
  auto c = ParseQuantizationConfig(json::parse(R"({
      "load_in_8bit": false, "load_in_4bit": true, "bnb_4bit_quant_type": "nf4",
      "bnb_4bit_use_double_quant": true, "bnb_4bit_compute_dtype": "bfloat16",
      "bnb_4bit_blocksize": 128, "llm_int8_threshold": 6.0,
      "llm_int8_skip_modules": ["lm_head", "classifier"]})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->type, QuantType::kNf4);
  EXPECT_EQ(c->blocksize, 128);
  EXPECT_TRUE(c->double_quant);
  EXPECT_EQ(c->compute_dtype, DType::kBF16);
  EXPECT_EQ(c->skip_modules, (std::vector<std::string>{"lm_head", "classifier"}));
  EXPECT_EQ(c->VariantKey(), "nf4-bs128-dq");
}

TEST(PolicyTest, ParsesSavedConfigJsonSpelling) {
  // transformers writes "_load_in_4bit" and quant_method into config.json.
  auto c = ParseQuantizationConfig(json::parse(R"({
      "_load_in_4bit": true, "_load_in_8bit": false, "quant_method": "bitsandbytes",
      "bnb_4bit_quant_type": "fp4", "bnb_4bit_quant_storage": "uint8",
      "llm_int8_skip_modules": null, "llm_int8_has_fp16_weight": false,
      "llm_int8_enable_fp32_cpu_offload": false, "bnb_4bit_compute_dtype": "float32"})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->VariantKey(), "fp4-bs64");
  EXPECT_EQ(c->skip_modules, std::vector<std::string>{"lm_head"});
  // And our own export round-trips.
  auto again = ParseQuantizationConfig(c->ToHfJson());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->VariantKey(), "fp4-bs64");
}

TEST(PolicyTest, Int8AndDefaults) {
  auto c = ParseQuantizationConfig(json::parse(R"({"load_in_8bit": true})"));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->type, QuantType::kInt8);
  EXPECT_EQ(c->VariantKey(), "int8");
  EXPECT_FLOAT_EQ(c->llm_int8_threshold, 6.0f);
  auto none = ParseQuantizationConfig(json::object());
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->VariantKey(), "none");
}

TEST(PolicyTest, RejectsInvalidWithKeyPath) {
  const std::string path = "backend_config.quantization_config";
  struct Case {
    const char* json;
    const char* want;
  } cases[] = {
      {R"({"load_in_4bit": true, "bnb_4bit_blocksize": 48})",
       "backend_config.quantization_config.bnb_4bit_blocksize: blocksize 48 is invalid"},
      {R"({"load_in_4bit": true, "load_in_8bit": true})",
       "backend_config.quantization_config: load_in_4bit and load_in_8bit are both true"},
      {R"({"load_in_4bit": true, "bnb_4bit_quant_type": "int4"})",
       "backend_config.quantization_config.bnb_4bit_quant_type: unknown quant type \"int4\""},
      {R"({"load_in_4bit": "yes"})",
       "backend_config.quantization_config.load_in_4bit: expected a boolean"},
      {R"({"load_in_4bit": true, "bnb_4bit_compute_dtype": "float64"})",
       "backend_config.quantization_config.bnb_4bit_compute_dtype: unknown dtype"},
      {R"({"load_in_4bit": true, "frobnicate": 1})",
       "backend_config.quantization_config.frobnicate: unknown key"},
      {R"({"load_in_8bit": true, "llm_int8_skip_modules": ["lm_head", 3]})",
       "backend_config.quantization_config.llm_int8_skip_modules[1]: expected a string"},
      {R"({"load_in_8bit": true, "bnb_4bit_blocksize": 64})",
       "bnb_4bit_blocksize: only applies with load_in_4bit"},
      {R"({"load_in_8bit": true, "llm_int8_threshold": -1})",
       "llm_int8_threshold: must be a finite number >= 0"},
  };
  for (const Case& c : cases) {
    auto r = ParseQuantizationConfig(json::parse(c.json), path);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(Message(r.status()).find(c.want), std::string::npos)
        << Message(r.status()) << "\n  want: " << c.want;
  }
}

TEST(PolicyTest, Shorthands) {
  EXPECT_EQ(ParseQuantizationShorthand("nf4")->VariantKey(), "nf4-bs64");
  EXPECT_EQ(ParseQuantizationShorthand("bitsandbytes-nf4")->VariantKey(), "nf4-bs64");
  EXPECT_EQ(ParseQuantizationShorthand("bitsandbytes-fp4")->VariantKey(), "fp4-bs64");
  EXPECT_EQ(ParseQuantizationShorthand("bitsandbytes")->VariantKey(), "int8");
  EXPECT_EQ(ParseQuantizationShorthand("none")->VariantKey(), "none");
  auto bad = ParseQuantizationShorthand("gptq", "deploy.quantization");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(Message(bad.status()).find("deploy.quantization: unknown quantization \"gptq\""),
            std::string::npos);
  EXPECT_EQ(*ParseTorchDtype("bfloat16"), DType::kBF16);
  EXPECT_FALSE(ParseTorchDtype("float8").ok());
}

TEST(PolicyTest, ShouldQuantize) {
  QuantConfig c;
  c.type = QuantType::kNf4;
  const std::vector<int64_t> mat = {4096, 4096};
  EXPECT_EQ(ShouldQuantize(c, "model.layers.0.self_attn.q_proj.weight", mat), QuantType::kNf4);
  EXPECT_EQ(ShouldQuantize(c, "transformer.h.3.mlp.c_fc.weight", mat), QuantType::kNf4);
  EXPECT_EQ(ShouldQuantize(c, "model.layers.0.self_attn.q_proj.bias", {4096}), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "model.layers.0.self_attn.q_proj.weight", {4096}),
            QuantType::kNone);  // 1-D
  EXPECT_EQ(ShouldQuantize(c, "model.embed_tokens.weight", mat), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "transformer.wte.weight", mat), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "transformer.wpe.weight", mat), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "bert.embeddings.word_embeddings.weight", mat), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "model.layers.0.input_layernorm.weight", mat), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "transformer.h.0.ln_1.weight", mat), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "model.norm.weight", mat), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "lm_head.weight", mat), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "model.lm_head.weight", mat), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "model.lm_head_extra.weight", mat), QuantType::kNf4);
  EXPECT_EQ(ShouldQuantize(c, "model.layers.0.mlp.up_proj.weight_scale", mat), QuantType::kNone);
  c.skip_modules = {"mlp"};
  EXPECT_EQ(ShouldQuantize(c, "model.layers.0.mlp.up_proj.weight", mat), QuantType::kNone);
  EXPECT_EQ(ShouldQuantize(c, "lm_head.weight", mat), QuantType::kNf4);
  c.type = QuantType::kNone;
  EXPECT_EQ(ShouldQuantize(c, "model.layers.0.self_attn.q_proj.weight", mat), QuantType::kNone);
}

TEST(PolicyTest, CastIsRoundToNearestEven) {
  const float in[] = {1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 65520.0f, -0.0f, 1e-8f};
  uint16_t out[5];
  ASSERT_TRUE(CastFloatTensor(DType::kF32, in, 5, DType::kF16, out).ok());
  EXPECT_EQ(out[0], 0x3C00);  // tie -> even
  EXPECT_EQ(out[1], 0x3C02);  // tie -> even (up)
  EXPECT_EQ(out[2], 0x7C00);  // overflow -> inf
  EXPECT_EQ(out[3], 0x8000);
  EXPECT_EQ(out[4], 0x0000);
  uint16_t bf[5];
  ASSERT_TRUE(CastFloatTensor(DType::kF16, out, 5, DType::kBF16, bf).ok());
  EXPECT_EQ(bf[0], 0x3F80);
  EXPECT_FALSE(CastFloatTensor(DType::kI32, in, 5, DType::kF16, out).ok());
}

TEST(PolicyTest, MemoryFootprint) {
  QuantConfig c;
  c.type = QuantType::kNf4;
  c.torch_dtype = DType::kF16;
  const std::vector<TensorInfo> model = {
      {"model.embed_tokens.weight", DType::kF32, {1000, 64}},
      {"model.layers.0.mlp.up_proj.weight", DType::kF32, {256, 64}},
      {"model.layers.0.mlp.up_proj.bias", DType::kF32, {256}},
      {"lm_head.weight", DType::kF32, {1000, 64}},
  };
  Footprint f = ModelFootprint(c, model);
  // fp16 embed + head + bias, packed nf4 up_proj.
  EXPECT_EQ(f.weights, 1000 * 64 * 2 * 2 + 256 * 2 + 256 * 64 / 2);
  EXPECT_EQ(f.quant_state, 256 * 64 / 64 * 4 + 16 * 4);
  c.double_quant = true;
  f = ModelFootprint(c, model);
  EXPECT_EQ(f.quant_state, 256 + 4 + 256 * 4 + 4 + 16 * 4);
  c.type = QuantType::kInt8;
  f = ModelFootprint(c, model);
  EXPECT_EQ(f.weights, 1000 * 64 * 2 * 2 + 256 * 2 + 256 * 64);
  EXPECT_EQ(f.quant_state, 256 * 4);
}

}  // namespace
}  // namespace loadstar::quant
