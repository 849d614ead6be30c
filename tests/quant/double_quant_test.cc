#include "quant/double_quant.h"

#include <cmath>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "quant/blockwise_math.h"

namespace loadstar::quant {
namespace {

TEST(DoubleQuantTest, FastSearchEqualsDQuantizeEverywhere) {
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
  for (float x : xs) {
    ASSERT_EQ(QuantizeDynamicFast(x), QuantizeDynamic(kDynamicMapSigned, x)) << x;
  }
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
