// ggml dequantization (quant/ggml_dequant.h): hand-computed blocks against the reference,
// and every SIMD kernel equal to the reference bit for bit on random blocks. (Equality
// with gguf-py's numpy dequantize is tests/store/gguf_reference_test.cc.)
#include "quant/ggml_dequant.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "quant/float16.h"
#include "quant/ggml_blocks.h"
#include "tests/util/gguf_builder.h"

namespace loadstar::quant {
namespace {

constexpr GgmlType kAllTypes[] = {
    GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0,
    GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ2_K, GgmlType::kQ3_K,
    GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

void PutHalf(uint8_t* p, float v) {
  uint16_t h = FloatToHalfBits(v);
  p[0] = h & 0xFF;
  p[1] = h >> 8;
}

std::vector<uint8_t> RandomBlocks(GgmlType type, int64_t blocks, uint32_t seed) {
  std::string bytes = loadstar::testing::RandomGgmlBlocks(type, blocks, seed);
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

TEST(GgmlDequantTest, Q8_0IsScaleTimesValue) {
  uint8_t block[34];
  PutHalf(block, 0.5f);
  for (int i = 0; i < 32; ++i) block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
  float y[32];
  DequantizeGgmlRef(GgmlType::kQ8_0, block, 1, y);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.5f * (i - 16)) << i;
}

TEST(GgmlDequantTest, Q4_0LowNibblesFirst) {
  uint8_t block[18];
  PutHalf(block, 2.0f);
  for (int j = 0; j < 16; ++j) block[2 + j] = static_cast<uint8_t>((15 - j) << 4 | j);
  float y[32];
  DequantizeGgmlRef(GgmlType::kQ4_0, block, 1, y);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 2.0f * (j - 8)) << j;
    EXPECT_EQ(y[j + 16], 2.0f * (15 - j - 8)) << j;
  }
}

TEST(GgmlDequantTest, Q4_KScaleAndMinUnpacking) {
  uint8_t block[144] = {};
  PutHalf(block, 1.0f);      // d
  PutHalf(block + 2, 0.5f);  // dmin
  uint8_t* s = block + 4;
  // Sub-block 0: scale 3, min 2; sub-block 5: scale 0x3F (low 4 bits from s[9], high 2
  // from s[1] bits 6..7), min 0x22 (low 4 from s[9] high nibble, high 2 from s[5]).
  s[0] = 3;
  s[4] = 2;
  s[9] = 0x2F;
  s[1] = 0xC0;
  s[5] = 0x80;
  uint8_t* qs = block + 16;
  for (int l = 0; l < 32; ++l) qs[l] = 0x07;       // sub-blocks 0 (low) and 1 (high)
  for (int l = 0; l < 32; ++l) qs[64 + l] = 0x90;  // sub-block 5 = high nibbles of chunk 2
  float y[256];
  DequantizeGgmlRef(GgmlType::kQ4_K, block, 1, y);
  EXPECT_EQ(y[0], 3.0f * 7 - 0.5f * 2);
  EXPECT_EQ(y[32], 0.0f);  // sub-block 1: scale 0, min 0 from s[1] low bits & s[5] low bits
  EXPECT_EQ(y[5 * 32 + 3], 63.0f * 9 - 0.5f * 0x22);
}

TEST(GgmlDequantTest, SimdEqualsReferenceForEveryType) {
  for (internal::Isa isa : {internal::Isa::kAvx2, internal::Isa::kAvx512}) {
    if (!internal::IsaSupported(isa)) continue;
    internal::GgmlDequantizeFn kernel = internal::GgmlDequantizeKernel(isa);
    for (GgmlType type : kAllTypes) {
      const GgmlTypeInfo info = GgmlInfo(type);
      for (int64_t blocks : {int64_t{1}, int64_t{3}, int64_t{37}}) {
        std::vector<uint8_t> in = RandomBlocks(type, blocks, 7 + static_cast<uint32_t>(blocks));
        // Misaligned input: blocks need not start at any alignment.
        std::vector<uint8_t> shifted(in.size() + 1);
        std::memcpy(shifted.data() + 1, in.data(), in.size());
        std::vector<float> want(blocks * info.block_elems), got(want.size(), -1.0f);
        DequantizeGgmlRef(type, in.data(), blocks, want.data());
        kernel(type, shifted.data() + 1, blocks, got.data());
        ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * 4), 0)
            << info.name << " blocks " << blocks << " isa " << internal::IsaName(isa);
      }
    }
  }
}

TEST(GgmlDequantTest, ThreadsAndOutputDtypes) {
  for (GgmlType type : {GgmlType::kQ4_K, GgmlType::kQ8_0, GgmlType::kF16}) {
    const GgmlTypeInfo info = GgmlInfo(type);
    const int64_t blocks = 70000 / info.block_elems + 3;
    std::vector<uint8_t> in = RandomBlocks(type, blocks, 99);
    std::vector<float> want(blocks * info.block_elems), got(want.size());
    DequantizeGgmlRef(type, in.data(), blocks, want.data());
    DequantizeGgml(type, in.data(), blocks, got.data(), /*threads=*/2);
    ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * 4), 0) << info.name;
    std::vector<uint16_t> half(want.size()), bf(want.size());
    ASSERT_TRUE(DequantizeGgmlTo(type, in.data(), blocks, DType::kF16, half.data()).ok());
    ASSERT_TRUE(DequantizeGgmlTo(type, in.data(), blocks, DType::kBF16, bf.data()).ok());
    for (size_t i = 0; i < want.size(); i += 97) {
      EXPECT_EQ(half[i], FloatToHalfBits(want[i])) << i;
      EXPECT_EQ(bf[i], FloatToBFloat16Bits(want[i])) << i;
    }
    EXPECT_FALSE(DequantizeGgmlTo(type, in.data(), blocks, DType::kI8, half.data()).ok());
  }
}

}  // namespace
}  // namespace loadstar::quant
