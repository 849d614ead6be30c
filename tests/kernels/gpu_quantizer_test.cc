// The GPU kernels must produce the CPU reference's bytes (quant/ *Ref functions).
#include "kernels/gpu_quantizer.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "quant/float16.h"
#include "tests/kernels/gpu_test_util.h"

namespace loadstar::kernels {
namespace {

using quant::QuantType;

// Deterministic values with a spread of magnitudes, exact zeros, an all-zero block and
// negative zeros, as `dtype` bytes.
std::vector<uint8_t> Values(DType dtype, int64_t n, uint64_t seed, int64_t zero_block = -1,
                            int64_t blocksize = 64) {
  std::vector<uint8_t> bytes(n * DTypeSize(dtype));
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 7;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    float v = (static_cast<float>((s >> 40) & 0xFFFF) / 32768.0f - 1.0f) *
              static_cast<float>(1 + ((s >> 20) & 7));
    if ((s >> 8) % 17 == 0) v = 0.0f;
    if ((s >> 8) % 29 == 0) v = -0.0f;
    if (zero_block >= 0 && i / blocksize == zero_block) v = 0.0f;
    switch (dtype) {
      case DType::kF16:
        reinterpret_cast<Half*>(bytes.data())[i] = FromFloat<Half>(v);
        break;
      case DType::kBF16:
        reinterpret_cast<BFloat16*>(bytes.data())[i] = FromFloat<BFloat16>(v);
        break;
      default:
        reinterpret_cast<float*>(bytes.data())[i] = v;
    }
  }
  return bytes;
}

bool SameFloats(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class GpuQuantizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    auto q = GpuQuantizer::Create(0);
    ASSERT_TRUE(q.ok()) << q.status();
    gpu_ = std::move(q).value();
  }
  std::unique_ptr<GpuQuantizer> gpu_;
};

TEST(GpuQuantizerNoGpuTest, CreateIsFailedPrecondition) {
  if (UsableGpuCount().ok()) GTEST_SKIP() << "a GPU is usable here";
  auto q = GpuQuantizer::Create(0);
  EXPECT_TRUE(absl::IsFailedPrecondition(q.status())) << q.status();
}

TEST_F(GpuQuantizerTest, FourBitMatchesReferenceForEveryBlocksizeTypeAndDtype) {
  for (QuantType type : {QuantType::kNf4, QuantType::kFp4}) {
    for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
      for (int bs = 32; bs <= 4096; bs *= 2) {
        // A tail block and an odd element count; an all-zero block in the middle.
        const int64_t n = 3 * bs + bs / 2 + 1;
        const std::vector<uint8_t> data = Values(dtype, n, bs, /*zero_block=*/1, bs);
        const quant::Fp4Spec spec{type, bs, false};
        auto ref = quant::Quantize4bitRef(spec, dtype, data.data(), {n});
        auto got = gpu_->Quantize4bit(spec, dtype, data.data(), {n});
        ASSERT_TRUE(ref.ok() && got.ok()) << got.status();
        const std::string what = std::string(quant::QuantTypeName(type)) + " " +
                                 std::string(DTypeName(dtype)) + " bs=" + std::to_string(bs);
        ASSERT_EQ(got->packed, ref->packed) << what;
        ASSERT_TRUE(SameFloats(got->absmax, ref->absmax)) << what;
        // Dequantize back to every dtype: same bytes as the reference.
        for (DType out : {DType::kF16, DType::kBF16, DType::kF32}) {
          std::vector<uint8_t> a(n * DTypeSize(out)), b(n * DTypeSize(out));
          ASSERT_TRUE(quant::Dequantize4bitRef(*ref, out, a.data()).ok());
          ASSERT_TRUE(gpu_->Dequantize4bit(*ref, out, b.data()).ok());
          ASSERT_EQ(a, b) << what << " -> " << DTypeName(out);
        }
      }
    }
  }
}

TEST_F(GpuQuantizerTest, DoubleQuantMatchesReference) {
  for (int64_t blocks : {1, 255, 256, 257, 1000}) {
    const int64_t n = blocks * 64 - 3;
    const std::vector<uint8_t> data = Values(DType::kF16, n, blocks);
    const quant::Fp4Spec spec{QuantType::kNf4, 64, true};
    auto ref = quant::Quantize4bitRef(spec, DType::kF16, data.data(), {n});
    auto got = gpu_->Quantize4bit(spec, DType::kF16, data.data(), {n});
    ASSERT_TRUE(ref.ok() && got.ok()) << got.status();
    EXPECT_EQ(got->packed, ref->packed);
    EXPECT_EQ(got->nested.codes, ref->nested.codes) << blocks;
    EXPECT_TRUE(SameFloats(got->nested.nested_absmax, ref->nested.nested_absmax)) << blocks;
    EXPECT_EQ(got->nested.offset, ref->nested.offset);
    EXPECT_TRUE(SameFloats(got->Absmax(), ref->Absmax()));
  }
}

TEST_F(GpuQuantizerTest, ChunkedQuantizeEqualsWhole) {
  const int64_t bs = 128, n = 10 * bs + 7;
  const std::vector<uint8_t> data = Values(DType::kF16, n, 99);
  const quant::Fp4Spec spec{QuantType::kNf4, static_cast<int>(bs), false};
  auto ref = quant::Quantize4bitRef(spec, DType::kF16, data.data(), {n});
  ASSERT_TRUE(ref.ok());
  void *d_in = nullptr, *d_packed = nullptr, *d_absmax = nullptr;
  ASSERT_EQ(cudaMalloc(&d_in, data.size()), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_packed, (n + 1) / 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_absmax, 11 * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_in, data.data(), data.size(), cudaMemcpyHostToDevice), cudaSuccess);
  // Chunks of 3 blocks, then the tail.
  for (int64_t off = 0; off < n; off += 3 * bs) {
    const int64_t count = std::min<int64_t>(3 * bs, n - off);
    ASSERT_TRUE(gpu_->Quantize4bitChunk(spec, DType::kF16,
                                        static_cast<const Half*>(d_in) + off, off, count, n,
                                        static_cast<uint8_t*>(d_packed),
                                        static_cast<float*>(d_absmax), nullptr)
                    .ok());
  }
  // A chunk not on a block boundary is refused.
  EXPECT_TRUE(absl::IsInvalidArgument(gpu_->Quantize4bitChunk(
      spec, DType::kF16, d_in, 5, bs, n, static_cast<uint8_t*>(d_packed),
      static_cast<float*>(d_absmax), nullptr)));
  std::vector<uint8_t> packed((n + 1) / 2);
  std::vector<float> absmax(11);
  ASSERT_EQ(cudaMemcpy(packed.data(), d_packed, packed.size(), cudaMemcpyDeviceToHost),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(absmax.data(), d_absmax, 11 * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(packed, ref->packed);
  EXPECT_TRUE(SameFloats(absmax, ref->absmax));
  cudaFree(d_in);
  cudaFree(d_packed);
  cudaFree(d_absmax);
}

TEST_F(GpuQuantizerTest, Int8RowsMatchReference) {
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    const int64_t rows = 37, cols = 300;
    std::vector<uint8_t> data = Values(dtype, rows * cols, 5);
    // An all-zero row.
    std::memset(data.data() + 3 * cols * DTypeSize(dtype), 0, cols * DTypeSize(dtype));
    auto ref = quant::QuantizeInt8Ref(dtype, data.data(), {rows, cols});
    auto got = gpu_->QuantizeInt8(dtype, data.data(), {rows, cols});
    ASSERT_TRUE(ref.ok() && got.ok()) << got.status();
    EXPECT_EQ(got->weight, ref->weight) << DTypeName(dtype);
    EXPECT_TRUE(SameFloats(got->scb, ref->scb)) << DTypeName(dtype);
  }
}

TEST_F(GpuQuantizerTest, BadInputsAreInvalidArgument) {
  const std::vector<uint8_t> data = Values(DType::kF16, 64, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(
      gpu_->Quantize4bit({QuantType::kNf4, 48, false}, DType::kF16, data.data(), {64}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      gpu_->Quantize4bit({QuantType::kNf4, 64, false}, DType::kI32, data.data(), {16}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(gpu_->QuantizeInt8(DType::kF16, data.data(), {64}).status()));
}

}  // namespace
}  // namespace loadstar::kernels
