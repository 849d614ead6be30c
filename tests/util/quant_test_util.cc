#include "tests/util/quant_test_util.h"

#include <utility>

#include "gtest/gtest.h"

namespace loadstar::testing {

quant::QuantConfig QuantConfigOf(quant::QuantType type, int blocksize, bool double_quant,
                                 DType torch_dtype) {
  quant::QuantConfig c;
  c.type = type;
  c.blocksize = blocksize;
  c.double_quant = double_quant;
  c.torch_dtype = torch_dtype;
  return c;
}

std::map<std::string, quant::NamedTensor> PreparedTensors(const CheckpointBuilder& b,
                                                          const quant::QuantConfig& config,
                                                          const std::string& model_type) {
  std::map<std::string, quant::NamedTensor> out;
  for (const auto& t : b.tensors()) {
    auto p = quant::PrepareTensor(config, t.name, t.dtype, t.shape, t.bytes.data(), {},
                                  quant::IsConv1DWeight(model_type, t.name, t.shape));
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) continue;
    for (auto& n : p->tensors) out[n.name] = std::move(n);
  }
  return out;
}

CheckpointBuilder MixedLlama() {
  CheckpointBuilder b(7);
  b.Add("model.embed_tokens.weight", DType::kF16, {96, 64});
  for (int i = 0; i < 2; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    b.Add(p + "input_layernorm.weight", DType::kF32, {64})
        .Add(p + "self_attn.q_proj.weight", DType::kF16, {64, 64})
        .Add(p + "self_attn.o_proj.bias", DType::kF32, {64})
        .Add(p + "mlp.up_proj.weight", DType::kBF16, {130, 64})
        .Add(p + "mlp.down_proj.weight", DType::kF32, {64, 130});
  }
  b.Add("model.norm.weight", DType::kF32, {64}).Add("lm_head.weight", DType::kF16, {96, 64});
  b.ExtraFile("generation_config.json", "{\"do_sample\": false}\n");
  return b;
}

}  // namespace loadstar::testing
