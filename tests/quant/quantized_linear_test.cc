#include "quant/quantized_linear.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace loadstar::quant {
namespace {

// Error bounds of the quantized layers against the fp32 reference, on Gaussian-like
// weights and activations (k = 256). int8 row-wise keeps ~7 bits; 4-bit keeps ~3.
constexpr double kInt8RelativeL2Tolerance = 0.02;
constexpr double kNf4RelativeL2Tolerance = 0.15;
constexpr double kFp4RelativeL2Tolerance = 0.25;
// One fp16 ulp relative (2^-10) plus slack for the fp16 rounding of the output.
constexpr double kHalfRoundingTolerance = 1.0 / 1024;

std::vector<Half> Halves(const std::vector<float>& v) {
  std::vector<Half> out;
  for (float f : v) out.push_back(FromFloat<Half>(f));
  return out;
}

// Deterministic approximately-normal values (sum of uniforms), scaled.
std::vector<float> Noise(int64_t n, uint64_t seed, float scale) {
  std::vector<float> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& x : v) {
    float sum = 0;
    for (int i = 0; i < 4; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      sum += static_cast<float>((s >> 40) & 0xFFFFFF) / 16777216.0f - 0.5f;
    }
    x = sum * scale * 1.7f;
  }
  return v;
}

QuantizedInt8 QuantizeWeightInt8(const std::vector<float>& w, int64_t n, int64_t k) {
  auto q = QuantizeInt8Ref(DType::kF32, w.data(), {n, k});
  EXPECT_TRUE(q.ok()) << q.status();
  return *q;
}

TEST(LinearReferenceTest, SmallMatrixByHand) {
  const std::vector<Half> x = Halves({1, 2, 3, 4});           // [2, 2]
  const std::vector<float> w = {1, 0, 0, 1, 1, 1};            // [3, 2]
  auto y = LinearReference(x.data(), 2, 2, DType::kF32, w.data(), 3);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(*y, (std::vector<float>{1, 2, 3, 3, 4, 7}));
}

TEST(QuantizeActivationsInt8Test, RowScalesSkipOutliersAndOutlierColumnsAreZeroed) {
  // Column 1 holds an outlier (8 >= 6) in row 0 only; row 1's -1 there is not an outlier
  // but its column is still zeroed, and it still counts toward row 1's scale.
  const std::vector<Half> x = Halves({1, 8, 0.5f, 0.25f, -1, 2});
  auto a = QuantizeActivationsInt8(x.data(), 2, 3, 6.0f);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->outlier_cols, std::vector<int64_t>({1}));
  EXPECT_EQ(a->row_scale, std::vector<float>({1.0f, 2.0f}));
  // Row 0: 127/1 * [1, -, 0.5] = [127, 0, 63.5 -> 64 (half to even)].
  // Row 1: 127/2 * [0.25, -, 2] = [15.875 -> 16, 0, 127].
  EXPECT_EQ(a->q, std::vector<int8_t>({127, 0, 64, 16, 0, 127}));
}

TEST(QuantizeActivationsInt8Test, ZeroThresholdHasNoOutliers) {
  const std::vector<Half> x = Halves({100, -50});
  auto a = QuantizeActivationsInt8(x.data(), 1, 2, 0.0f);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->outlier_cols.empty());
  EXPECT_EQ(a->q, std::vector<int8_t>({127, -64}));  // -63.5 -> -64
}

TEST(Int8LinearTest, NoOutliersByHand) {
  // x = [1, -0.5, 0.25, 0] -> q = [127, -64, 32, 0] (scale 1); w = [1, 1, 1, 1] -> q = 127s,
  // SCB 1. int32 = 127 * (127 - 64 + 32) = 127 * 95; y = 95/127 (reference: 0.75).
  const std::vector<Half> x = Halves({1, -0.5f, 0.25f, 0});
  const QuantizedInt8 w = QuantizeWeightInt8({1, 1, 1, 1}, 1, 4);
  ASSERT_EQ(w.weight, std::vector<int8_t>({127, 127, 127, 127}));
  auto y = Int8Linear(x.data(), 1, 4, w, 6.0f);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_NEAR((*y)[0], 95.0 / 127.0, kHalfRoundingTolerance);
}

TEST(Int8LinearTest, OutlierColumnComputedInFp16ByHand) {
  const std::vector<Half> x = Halves({1, 8, 0.5f, 0.25f, -1, 2});  // [2, 3]
  const QuantizedInt8 w = QuantizeWeightInt8({1, 1, 1}, 1, 3);
  auto y = Int8Linear(x.data(), 2, 3, w, 6.0f);
  ASSERT_TRUE(y.ok()) << y.status();
  // Row 0: int8 part 127 * (127 + 64) / 127² * 1 * 1 = 191/127, plus 8 * 1.0 in fp16.
  EXPECT_NEAR((*y)[0], 191.0 / 127.0 + 8.0, 8 * kHalfRoundingTolerance);
  // Row 1: 127 * (16 + 127) / 127² * 2 = 286/127, plus -1 * 1.0.
  EXPECT_NEAR((*y)[1], 286.0 / 127.0 - 1.0, 2 * kHalfRoundingTolerance);
}

TEST(Int8LinearTest, OutlierPathKeepsLargeActivationsExact) {
  // A single huge activation: row-wise int8 without the outlier path crushes the small
  // ones to zero; with it, the result is close to the reference.
  const int64_t k = 64;
  std::vector<float> xf = Noise(k, 1, 1.0f);
  xf[5] = 60.0f;
  const std::vector<Half> x = Halves(xf);
  const std::vector<float> wf = Noise(16 * k, 2, 0.05f);
  const QuantizedInt8 w = QuantizeWeightInt8(wf, 16, k);
  auto ref = LinearReference(x.data(), 1, k, DType::kF32, wf.data(), 16);
  auto with = Int8Linear(x.data(), 1, k, w, 6.0f);
  auto without = Int8Linear(x.data(), 1, k, w, 0.0f);
  ASSERT_TRUE(ref.ok() && with.ok() && without.ok());
  auto e_with = CompareToReference(*with, *ref);
  auto e_without = CompareToReference(*without, *ref);
  ASSERT_TRUE(e_with.ok() && e_without.ok());
  EXPECT_LT(e_with->relative_l2, kInt8RelativeL2Tolerance);
  EXPECT_LT(e_with->relative_l2, e_without->relative_l2);
}

TEST(Int8LinearTest, RandomWithinTolerance) {
  const int64_t m = 8, k = 256, n = 64;
  const std::vector<Half> x = Halves(Noise(m * k, 3, 1.0f));
  const std::vector<float> wf = Noise(n * k, 4, 0.05f);
  auto y = Int8Linear(x.data(), m, k, QuantizeWeightInt8(wf, n, k));
  auto ref = LinearReference(x.data(), m, k, DType::kF32, wf.data(), n);
  ASSERT_TRUE(y.ok() && ref.ok());
  auto e = CompareToReference(*y, *ref);
  ASSERT_TRUE(e.ok());
  EXPECT_LT(e->relative_l2, kInt8RelativeL2Tolerance) << e->max_abs;
  EXPECT_GT(e->relative_l2, 0.0);
}

class Fp4LinearTest : public ::testing::TestWithParam<QuantType> {};

TEST_P(Fp4LinearTest, CodeValuesRoundTripExactly) {
  // Weights in {-2, 0, 2}: every block's absmax is 2 and -1, 0, 1 are codes of both NF4
  // and FP4, so the dequantized weight is exact and y equals the reference.
  const int64_t k = 64, n = 2;
  std::vector<float> wf(n * k);
  for (int64_t i = 0; i < n * k; ++i) wf[i] = (i % 3 == 0) ? 2.0f : (i % 3 == 1 ? -2.0f : 0.0f);
  auto w = Quantize4bitRef({GetParam(), 64, false}, DType::kF32, wf.data(), {n, k});
  ASSERT_TRUE(w.ok()) << w.status();
  const std::vector<Half> x = Halves(Noise(3 * k, 5, 0.5f));
  auto y = Fp4Linear(x.data(), 3, k, *w);
  auto ref = LinearReference(x.data(), 3, k, DType::kF32, wf.data(), n);
  ASSERT_TRUE(y.ok() && ref.ok()) << y.status();
  for (size_t i = 0; i < y->size(); ++i) {
    EXPECT_NEAR((*y)[i], (*ref)[i], std::fabs((*ref)[i]) * kHalfRoundingTolerance) << i;
  }
}

TEST_P(Fp4LinearTest, RandomWithinTolerance) {
  const int64_t m = 8, k = 256, n = 64;
  const std::vector<Half> x = Halves(Noise(m * k, 6, 1.0f));
  const std::vector<float> wf = Noise(n * k, 7, 0.05f);
  for (bool nested : {false, true}) {
    auto w = Quantize4bitRef({GetParam(), 64, nested}, DType::kF32, wf.data(), {n, k});
    ASSERT_TRUE(w.ok()) << w.status();
    auto y = Fp4Linear(x.data(), m, k, *w);
    auto ref = LinearReference(x.data(), m, k, DType::kF32, wf.data(), n);
    ASSERT_TRUE(y.ok() && ref.ok());
    auto e = CompareToReference(*y, *ref);
    ASSERT_TRUE(e.ok());
    const double tolerance =
        GetParam() == QuantType::kNf4 ? kNf4RelativeL2Tolerance : kFp4RelativeL2Tolerance;
    EXPECT_LT(e->relative_l2, tolerance) << "nested=" << nested;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, Fp4LinearTest,
                         ::testing::Values(QuantType::kNf4, QuantType::kFp4),
                         [](const auto& info) { return std::string(QuantTypeName(info.param)); });

TEST(QuantizedLinearTest, BadShapesAreInvalidArgument) {
  const std::vector<Half> x = Halves({1, 2});
  const QuantizedInt8 w = QuantizeWeightInt8({1, 1, 1}, 1, 3);
  EXPECT_TRUE(absl::IsInvalidArgument(Int8Linear(x.data(), 1, 2, w).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Int8Linear(nullptr, 1, 3, w).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(QuantizeActivationsInt8(x.data(), 1, 2, -1).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(CompareToReference({1}, {1, 2}).status()));
}

TEST(CompareToReferenceTest, Metrics) {
  auto e = CompareToReference({1, 2, 4}, {1, 2, 3});
  ASSERT_TRUE(e.ok());
  EXPECT_DOUBLE_EQ(e->max_abs, 1.0);
  EXPECT_DOUBLE_EQ(e->max_rel, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(e->relative_l2, 1.0 / std::sqrt(14.0));
  EXPECT_EQ(e->count, 3);
  auto nan = CompareToReference({NAN}, {1});
  ASSERT_TRUE(nan.ok());
  EXPECT_TRUE(std::isinf(nan->max_abs));
}

}  // namespace
}  // namespace loadstar::quant
