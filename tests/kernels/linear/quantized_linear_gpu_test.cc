// GPU quantized linear layers against their CPU twins (quant/quantized_linear.h).
#include "kernels/quantized_linear_gpu.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/gpu_test_util.h"

namespace loadstar::kernels {
namespace {

// The fp16 GEMMs sum in another order than the CPU: allow a few fp16 ulps of the output.
constexpr double kGemmOrderRelativeTolerance = 4.0 / 1024;

std::vector<Half> Activations(int64_t n, uint64_t seed, float outlier = 0) {
  std::vector<Half> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 3;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    float x = static_cast<float>((s >> 40) & 0xFFFF) / 32768.0f - 1.0f;
    if (outlier != 0 && i % 97 == 13) x = outlier;
    v[i] = FromFloat<Half>(x);
  }
  return v;
}

std::vector<float> Weights(int64_t n, uint64_t seed) {
  std::vector<float> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 5;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = (static_cast<float>((s >> 40) & 0xFFFF) / 32768.0f - 1.0f) * 0.1f;
  }
  return v;
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double rel) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 0;
  for (float w : want) scale = std::max(scale, std::fabs(static_cast<double>(w)));
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], rel * std::max(scale, 1e-3)) << i;
  }
}

class QuantizedLinearGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    auto layer = QuantizedLinearGpu::Create(0);
    ASSERT_TRUE(layer.ok()) << layer.status();
    layer_ = std::move(layer).value();
  }
  std::unique_ptr<QuantizedLinearGpu> layer_;
};

TEST(QuantizedLinearGpuNoGpuTest, CreateIsFailedPrecondition) {
  if (UsableGpuCount().ok()) GTEST_SKIP() << "a GPU is usable here";
  EXPECT_TRUE(absl::IsFailedPrecondition(QuantizedLinearGpu::Create(0).status()));
}

TEST(QuantizedLinearGpuShapesTest, CanImplementInt8) {
  EXPECT_TRUE(QuantizedLinearGpu::CanImplementInt8(3, 64, 8).ok());
  EXPECT_TRUE(absl::IsUnimplemented(QuantizedLinearGpu::CanImplementInt8(3, 62, 8)));
  EXPECT_TRUE(absl::IsUnimplemented(QuantizedLinearGpu::CanImplementInt8(3, 64, 6)));
  EXPECT_TRUE(absl::IsInvalidArgument(QuantizedLinearGpu::CanImplementInt8(0, 64, 8)));
}

TEST_F(QuantizedLinearGpuTest, Int8WithoutOutliersEqualsCpuTwinExactly) {
  const int64_t m = 5, k = 256, n = 64;
  const std::vector<Half> x = Activations(m * k, 1);
  const std::vector<float> wf = Weights(n * k, 2);
  auto w = quant::QuantizeInt8Ref(DType::kF32, wf.data(), {n, k});
  ASSERT_TRUE(w.ok());
  auto cpu = quant::Int8Linear(x.data(), m, k, *w, 0.0f);
  auto gpu = layer_->Int8Linear(x.data(), m, k, *w, 0.0f);
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status();
  EXPECT_EQ(*gpu, *cpu);  // int32 GEMM and the dequant are exact
}

TEST_F(QuantizedLinearGpuTest, Int8WithOutliersMatchesCpuTwin) {
  const int64_t m = 7, k = 512, n = 96;
  const std::vector<Half> x = Activations(m * k, 3, /*outlier=*/20.0f);
  const std::vector<float> wf = Weights(n * k, 4);
  auto w = quant::QuantizeInt8Ref(DType::kF32, wf.data(), {n, k});
  ASSERT_TRUE(w.ok());
  auto cpu = quant::Int8Linear(x.data(), m, k, *w, 6.0f);
  auto gpu = layer_->Int8Linear(x.data(), m, k, *w, 6.0f);
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status();
  ExpectClose(*gpu, *cpu, kGemmOrderRelativeTolerance);
}

TEST_F(QuantizedLinearGpuTest, FourBitMatchesCpuTwin) {
  const int64_t m = 6, k = 384, n = 40;
  const std::vector<Half> x = Activations(m * k, 5);
  const std::vector<float> wf = Weights(n * k, 6);
  for (quant::QuantType type : {quant::QuantType::kNf4, quant::QuantType::kFp4}) {
    auto w = quant::Quantize4bitRef({type, 64, true}, DType::kF32, wf.data(), {n, k});
    ASSERT_TRUE(w.ok());
    auto cpu = quant::Fp4Linear(x.data(), m, k, *w);
    auto gpu = layer_->Fp4Linear(x.data(), m, k, *w);
    ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status();
    ExpectClose(*gpu, *cpu, kGemmOrderRelativeTolerance);
  }
}

TEST_F(QuantizedLinearGpuTest, Int8ShapesCuBlasLtCannotTakeAreUnimplemented) {
  const std::vector<Half> x = Activations(2 * 6, 7);
  const std::vector<float> wf = Weights(4 * 6, 8);
  auto w = quant::QuantizeInt8Ref(DType::kF32, wf.data(), {4, 6});
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(absl::IsUnimplemented(layer_->Int8Linear(x.data(), 2, 6, *w).status()));
}

}  // namespace
}  // namespace loadstar::kernels
