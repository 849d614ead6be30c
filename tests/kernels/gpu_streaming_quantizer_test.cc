// The GPU streaming quantizer must give quant::StreamingQuantizer's bits for any chunking.
#include "kernels/gpu_streaming_quantizer.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/gpu_quantizer.h"
#include "quant/float16.h"
#include "tests/kernels/gpu_test_util.h"

namespace loadstar::kernels {
namespace {

using quant::QuantType;

std::vector<uint8_t> Floats(int64_t n, uint64_t seed) {
  std::vector<uint8_t> bytes(n * sizeof(float));
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 11;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const float v = (static_cast<float>((s >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f) * 0.3f;
    std::memcpy(bytes.data() + i * sizeof(float), &v, sizeof(float));
  }
  return bytes;
}

std::vector<uint8_t> AsBf16(const std::vector<uint8_t>& f32) {
  const int64_t n = f32.size() / sizeof(float);
  std::vector<uint8_t> out(n * 2);
  for (int64_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, f32.data() + i * sizeof(float), sizeof(float));
    const BFloat16 b = FromFloat<BFloat16>(v);
    std::memcpy(out.data() + i * 2, &b, 2);
  }
  return out;
}

// Appends `data` in irregular chunks (not multiples of the unit, some tiny).
template <typename Q>
void Feed(Q& q, const std::vector<uint8_t>& data) {
  const size_t sizes[] = {1, 7, 4096, 333, 65536, 2, 12345};
  size_t off = 0;
  for (int i = 0; off < data.size(); ++i) {
    const size_t n = std::min(sizes[i % 7], data.size() - off);
    ASSERT_TRUE(q.Append(data.data() + off, n).ok());
    off += n;
  }
}

class GpuStreamingQuantizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    auto q = GpuQuantizer::Create(0);
    ASSERT_TRUE(q.ok()) << q.status();
    gpu_ = std::move(q).value();
  }
  std::unique_ptr<GpuQuantizer> gpu_;
};

TEST_F(GpuStreamingQuantizerTest, FourBitWithCastAndDoubleQuantMatchesCpuStream) {
  const std::vector<int64_t> shape = {96, 333};  // tail block, odd count
  const std::vector<uint8_t> f32 = Floats(96 * 333, 1);
  for (QuantType type : {QuantType::kNf4, QuantType::kFp4}) {
    quant::StreamingQuantizer::Options o;
    o.type = type;
    o.spec = {type, 128, true};
    o.in_dtype = DType::kF32;
    o.quantize_dtype = DType::kF16;
    o.shape = shape;
    auto cpu = quant::StreamingQuantizer::Create(o);
    auto gpu = GpuStreamingQuantizer::Create(gpu_.get(), o, nullptr);
    ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status();
    Feed(**cpu, f32);
    Feed(**gpu, f32);
    auto a = (*cpu)->Finish4bit();
    auto b = (*gpu)->Finish4bit();
    ASSERT_TRUE(a.ok() && b.ok()) << b.status();
    EXPECT_EQ(b->packed, a->packed);
    EXPECT_EQ(b->nested.codes, a->nested.codes);
    EXPECT_EQ(b->nested.offset, a->nested.offset);
    ASSERT_EQ(b->nested.nested_absmax.size(), a->nested.nested_absmax.size());
    EXPECT_EQ(0, std::memcmp(b->nested.nested_absmax.data(), a->nested.nested_absmax.data(),
                             a->nested.nested_absmax.size() * sizeof(float)));
  }
}

TEST_F(GpuStreamingQuantizerTest, Int8FromBf16MatchesCpuStream) {
  const std::vector<uint8_t> bf16 = AsBf16(Floats(40 * 300, 2));
  quant::StreamingQuantizer::Options o;
  o.type = QuantType::kInt8;
  o.in_dtype = DType::kBF16;
  o.quantize_dtype = DType::kF16;
  o.shape = {40, 300};
  auto cpu = quant::StreamingQuantizer::Create(o);
  auto gpu = GpuStreamingQuantizer::Create(gpu_.get(), o, nullptr);
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status();
  Feed(**cpu, bf16);
  Feed(**gpu, bf16);
  auto a = (*cpu)->FinishInt8();
  auto b = (*gpu)->FinishInt8();
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  EXPECT_EQ(b->weight, a->weight);
  EXPECT_EQ(0, std::memcmp(b->scb.data(), a->scb.data(), a->scb.size() * sizeof(float)));
}

TEST_F(GpuStreamingQuantizerTest, MisuseIsAnError) {
  quant::StreamingQuantizer::Options o;
  o.shape = {4, 64};
  auto gpu = GpuStreamingQuantizer::Create(gpu_.get(), o, nullptr);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  std::vector<uint8_t> data(4 * 64 * 2 + 1);
  EXPECT_TRUE(absl::IsInvalidArgument((*gpu)->Append(data.data(), data.size())));
  EXPECT_TRUE(absl::IsFailedPrecondition((*gpu)->Finish4bit().status()));
  EXPECT_TRUE(absl::IsFailedPrecondition((*gpu)->FinishInt8().status()));
  EXPECT_TRUE(absl::IsInvalidArgument(GpuStreamingQuantizer::Create(nullptr, o, nullptr).status()));
}

}  // namespace
}  // namespace loadstar::kernels
