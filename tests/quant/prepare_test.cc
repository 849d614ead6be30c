#include "quant/prepare.h"

#include <random>

#include <gtest/gtest.h>

#include "quant/float16.h"

namespace loadstar::quant {
namespace {

TEST(PrepareTest, QuantizesLinearWeightsAfterTorchDtypeCast) {
  QuantConfig c;
  c.type = QuantType::kNf4;
  c.double_quant = true;
  c.torch_dtype = DType::kBF16;
  std::vector<float> w(128 * 64);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0, 0.1f);
  for (float& v : w) v = normal(rng);
  auto p = PrepareTensor(c, "model.layers.0.mlp.up_proj.weight", DType::kF32, {128, 64}, w.data());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->type, QuantType::kNf4);
  ASSERT_EQ(p->tensors.size(), 6u);
  // Same as quantizing the bf16-cast tensor: the state's dtype is torch_dtype.
  std::vector<BFloat16> bf(w.size());
  ASSERT_TRUE(CastFloatTensor(DType::kF32, w.data(), w.size(), DType::kBF16, bf.data()).ok());
  auto q = Quantize4bit(c.fp4_spec(), DType::kBF16, bf.data(), {128, 64});
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(p->tensors[0].data, q->packed);
  const std::string json(p->tensors.back().data.begin(), p->tensors.back().data.end());
  EXPECT_NE(json.find("\"dtype\": \"bfloat16\""), std::string::npos) << json;
}

TEST(PrepareTest, CastsEverythingElse) {
  QuantConfig c;
  c.type = QuantType::kInt8;
  c.torch_dtype = DType::kF16;
  std::vector<float> bias(64, 0.5f);
  auto p = PrepareTensor(c, "model.layers.0.mlp.up_proj.bias", DType::kF32, {64}, bias.data());
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->type, QuantType::kNone);
  ASSERT_EQ(p->tensors.size(), 1u);
  EXPECT_EQ(p->tensors[0].dtype, DType::kF16);
  EXPECT_EQ(p->tensors[0].data.size(), 128u);
  std::vector<int64_t> ids(4, 7);
  auto i = PrepareTensor(c, "model.position_ids", DType::kI64, {4}, ids.data());
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(i->tensors[0].dtype, DType::kI64);  // not floating: untouched
  std::vector<float> w(16 * 32, 1.0f);
  auto q = PrepareTensor(c, "model.layers.0.mlp.up_proj.weight", DType::kF32, {16, 32}, w.data());
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->type, QuantType::kInt8);
  ASSERT_EQ(q->tensors.size(), 3u);
  EXPECT_EQ(q->tensors[1].name, "model.layers.0.mlp.up_proj.SCB");
}

}  // namespace
}  // namespace loadstar::quant
