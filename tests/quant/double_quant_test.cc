#include "quant/double_quant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "quant/blockwise_math.h"
#include "quant/cpu_kernels.h"

namespace loadstar::quant {
namespace {

// Every code value and midpoint with their neighbours (the ties), specials, and random
// values over eight decades.
std::vector<float> SearchCases() {
  std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, -2.0f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN()};
  for (int k = 0; k < 256; ++k) {
    const float c = kDynamicMapSigned[k];
    xs.push_back(c);
    xs.push_back(std::nextafter(c, 2.0f));
    xs.push_back(std::nextafter(c, -2.0f));
    if (k < 255) {
      const float mid = (c + kDynamicMapSigned[k + 1]) * 0.5f;  // ties at every midpoint
      xs.push_back(mid);
      xs.push_back(std::nextafter(mid, 2.0f));
      xs.push_back(std::nextafter(mid, -2.0f));
    }
  }
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int i = 0; i < 200000; ++i) xs.push_back(u(rng) * std::pow(10.0f, -(i % 8)));
  return xs;
}

TEST(DoubleQuantTest, FastSearchEqualsDQuantizeEverywhere) {
  for (float x : SearchCases()) {
    ASSERT_EQ(QuantizeDynamicFast(x), QuantizeDynamic(kDynamicMapSigned, x)) << x;
  }
}

// The SIMD code search (8 / 16 lanes, gathers) against dQuantize, on every ISA this CPU
// runs: ties in every lane position (the cases are shuffled), an odd length (the scalar
// tail), and a scale that is not 1 (the multiply happens inside the kernel).
TEST(DoubleQuantTest, DynamicCodeKernelsEqualDQuantizeOnEveryIsa) {
  float midpoints[256];
  for (int k = 0; k < 255; ++k) {
    midpoints[k] = (kDynamicMapSigned[k] + kDynamicMapSigned[k + 1]) * 0.5f;
  }
  midpoints[255] = std::numeric_limits<float>::infinity();
  std::vector<float> xs = SearchCases();
  std::shuffle(xs.begin(), xs.end(), std::mt19937(7));
  xs.push_back(0.5f);  // odd length: 16 * k + 7 values are not all in full vectors
  while (xs.size() % 16 != 7) xs.push_back(-0.25f);
  int ran = 0;
  for (internal::Isa isa :
       {internal::Isa::kGeneric, internal::Isa::kAvx2, internal::Isa::kAvx512}) {
    if (!internal::IsaSupported(isa)) continue;
    ++ran;
    for (float scale : {1.0f, 1.0f / 0.37f}) {
      std::vector<uint8_t> got(xs.size(), 0xAA);
      internal::KernelsFor(isa).dynamic_codes(kDynamicMapSigned, midpoints, xs.data(),
                                              static_cast<int64_t>(xs.size()), scale,
                                              got.data());
      for (size_t i = 0; i < xs.size(); ++i) {
        ASSERT_EQ(got[i], QuantizeDynamic(kDynamicMapSigned, xs[i] * scale))
            << internal::IsaName(isa) << " x=" << xs[i] << " scale=" << scale << " i=" << i;
      }
    }
  }
  EXPECT_GE(ran, 1);
}

TEST(DoubleQuantTest, NestAndUnnestShapes) {
  std::vector<float> absmax(700);
  for (size_t i = 0; i < absmax.size(); ++i) absmax[i] = 0.01f + 0.001f * (i % 37);
  NestedAbsmax n = NestAbsmax(absmax.data(), static_cast<int64_t>(absmax.size()));
  EXPECT_EQ(n.codes.size(), 700u);
  EXPECT_EQ(n.nested_absmax.size(), 3u);
  std::vector<float> back(700);
  UnnestAbsmax(n, back.data());
  for (size_t i = 0; i < absmax.size(); ++i) EXPECT_NEAR(back[i], absmax[i], 2e-4f);
  EXPECT_EQ(MeanOfAbsmax(nullptr, 0), 0.0f);
}

}  // namespace
}  // namespace loadstar::quant
