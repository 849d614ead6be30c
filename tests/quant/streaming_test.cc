#include "quant/streaming.h"

#include <random>

#include <gtest/gtest.h>

#include "quant/float16.h"
#include "quant/policy.h"
#include "quant/prepare.h"

namespace loadstar::quant {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, 0.05f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Feeds `bytes` in random-sized pieces (1 byte .. a few blocks).
void Feed(StreamingQuantizer& s, const uint8_t* bytes, size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  size_t off = 0;
  while (off < size) {
    size_t len = std::min<size_t>(size - off, 1 + rng() % 700);
    ASSERT_TRUE(s.Append(bytes + off, len).ok());
    off += len;
  }
}

TEST(StreamingTest, FourBitEqualsWholeTensorWithCast) {
  for (bool dq : {false, true}) {
    const std::vector<int64_t> shape = {37, 101};  // odd: a tail block and an odd byte
    const auto w = Random(37 * 101, 3);
    StreamingQuantizer::Options o;
    o.type = QuantType::kNf4;
    o.spec = {QuantType::kNf4, 64, dq};
    o.in_dtype = DType::kF32;
    o.quantize_dtype = DType::kBF16;
    o.shape = shape;
    auto s = StreamingQuantizer::Create(o);
    ASSERT_TRUE(s.ok()) << s.status();
    Feed(**s, reinterpret_cast<const uint8_t*>(w.data()), w.size() * 4, 9);
    auto got = (*s)->Finish4bit();
    ASSERT_TRUE(got.ok()) << got.status();
    std::vector<BFloat16> bf(w.size());
    ASSERT_TRUE(CastFloatTensor(DType::kF32, w.data(), w.size(), DType::kBF16, bf.data()).ok());
    auto want = Quantize4bitRef(o.spec, DType::kBF16, bf.data(), shape);
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(got->packed, want->packed);
    EXPECT_EQ(got->absmax, want->absmax);
    EXPECT_EQ(got->nested.codes, want->nested.codes);
    EXPECT_EQ(got->dtype, DType::kBF16);
  }
}

TEST(StreamingTest, Int8EqualsWholeTensor) {
  const auto w = Random(29 * 300, 4);
  std::vector<Half> h(w.size());
  ASSERT_TRUE(CastFloatTensor(DType::kF32, w.data(), w.size(), DType::kF16, h.data()).ok());
  StreamingQuantizer::Options o;
  o.type = QuantType::kInt8;
  o.in_dtype = DType::kF16;
  o.quantize_dtype = DType::kF16;
  o.shape = {29, 300};
  auto s = StreamingQuantizer::Create(o);
  ASSERT_TRUE(s.ok());
  Feed(**s, reinterpret_cast<const uint8_t*>(h.data()), h.size() * 2, 5);
  auto got = (*s)->FinishInt8();
  ASSERT_TRUE(got.ok()) << got.status();
  auto want = QuantizeInt8Ref(DType::kF16, h.data(), {29, 300});
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(got->weight, want->weight);
  EXPECT_EQ(got->scb, want->scb);
}

TEST(StreamingTest, Conv1DTransposedLikePrepareTensor) {
  const auto w = Random(48 * 80, 8);  // GPT-2 Conv1D layout [in=48, out=80]
  std::vector<Half> h(w.size());
  ASSERT_TRUE(CastFloatTensor(DType::kF32, w.data(), w.size(), DType::kF16, h.data()).ok());
  QuantConfig c;
  c.type = QuantType::kNf4;
  const std::string name = "transformer.h.0.mlp.c_fc.weight";
  ASSERT_TRUE(IsConv1DWeight("gpt2", name, {48, 80}));
  EXPECT_FALSE(IsConv1DWeight("llama", name, {48, 80}));
  EXPECT_FALSE(IsConv1DWeight("gpt2", "transformer.wte.weight", {48, 80}));
  auto p = PrepareTensor(c, name, DType::kF16, {48, 80}, h.data(), {}, /*transpose_conv1d=*/true);
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string json(p->tensors.back().data.begin(), p->tensors.back().data.end());
  EXPECT_NE(json.find("\"shape\": [80, 48]"), std::string::npos) << json;
  // By hand: transpose, then quantize.
  std::vector<Half> t(h.size());
  Transpose2D(h.data(), 48, 80, 2, t.data());
  auto want = Quantize4bitRef(c.fp4_spec(), DType::kF16, t.data(), {80, 48});
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(p->tensors[0].data, want->packed);
  // Streaming gives the same.
  StreamingQuantizer::Options o;
  o.type = QuantType::kNf4;
  o.spec = c.fp4_spec();
  o.in_dtype = DType::kF16;
  o.quantize_dtype = DType::kF16;
  o.shape = {48, 80};
  o.transpose_conv1d = true;
  auto s = StreamingQuantizer::Create(o);
  ASSERT_TRUE(s.ok());
  Feed(**s, reinterpret_cast<const uint8_t*>(h.data()), h.size() * 2, 6);
  auto got = (*s)->Finish4bit();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->packed, want->packed);
  EXPECT_EQ(got->shape, (std::vector<int64_t>{80, 48}));
}

TEST(StreamingTest, Errors) {
  StreamingQuantizer::Options o;
  o.type = QuantType::kNf4;
  o.spec.blocksize = 48;
  o.shape = {64};
  EXPECT_EQ(StreamingQuantizer::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.spec.blocksize = 64;
  auto s = StreamingQuantizer::Create(o);
  ASSERT_TRUE(s.ok());
  std::vector<uint8_t> bytes(200);
  EXPECT_TRUE((*s)->Append(bytes.data(), 100).ok());
  EXPECT_EQ((*s)->Finish4bit().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*s)->Append(bytes.data(), 200).code(), absl::StatusCode::kInvalidArgument);
  o.type = QuantType::kInt8;
  EXPECT_EQ(StreamingQuantizer::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loadstar::quant
