// Optimized kernels == scalar reference (every ISA this CPU runs, every blocksize, odd
// sizes, every input/output dtype), round-trip error bounds, chunked quantization and
// invalid requests.
#include "quant/blockwise.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "quant/blockwise_math.h"
#include "quant/cpu_kernels.h"
#include "quant/float16.h"
#include "quant/int8.h"

namespace loadstar::quant {
namespace {

using internal::Isa;

// Named tolerances: the worst |x - dequant(quant(x))| / absmax of the block, in fp32.
// NF4: half the widest gap between neighbouring codes (-1 .. -0.696): 0.152.
constexpr float kNf4MaxRelError = 0.1520f;
// FP4: widest gap 0.667 .. 1.0 -> 0.1667.
constexpr float kFp4MaxRelError = 0.1667f;
// int8: half a step of 1/127 plus fp16 rounding of the input.
constexpr float kInt8MaxRelError = 0.5f / 127.0f + 1e-3f;

std::vector<uint8_t> RandomInput(DType dtype, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.001f, 10.0f);
  std::vector<uint8_t> out(n * DTypeSize(dtype));
  float s = scale(rng);
  for (int64_t i = 0; i < n; ++i) {
    if (i % 97 == 0) s = scale(rng);
    float v = normal(rng) * s;
    if (i % 1013 == 5) v = 0.0f;
    if (i % 2029 == 7) v = -0.0f;
    if (dtype == DType::kF32) {
      std::memcpy(out.data() + 4 * i, &v, 4);
    } else {
      const uint16_t b = dtype == DType::kF16 ? FloatToHalfBits(v) : FloatToBFloat16Bits(v);
      std::memcpy(out.data() + 2 * i, &b, 2);
    }
  }
  // An all-zero block somewhere.
  if (n > 300) std::memset(out.data() + 100 * DTypeSize(dtype), 0, 200 * DTypeSize(dtype));
  return out;
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
    if (internal::IsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

TEST(KernelsTest, EveryIsaMatchesReferenceBitForBit) {
  const DType dtypes[] = {DType::kF16, DType::kBF16, DType::kF32};
  for (Isa isa : SupportedIsas()) {
    const internal::CpuKernels& k = internal::KernelsFor(isa);
    for (QuantType type : {QuantType::kNf4, QuantType::kFp4}) {
      const Fp4Kind kind = type == QuantType::kNf4 ? Fp4Kind::kNf4 : Fp4Kind::kFp4;
      for (int bs = kMinBlocksize; bs <= kMaxBlocksize; bs *= 2) {
        for (DType in : dtypes) {
          SCOPED_TRACE(::testing::Message() << internal::IsaName(isa) << " "
                                            << QuantTypeName(type) << " bs=" << bs << " "
                                            << DTypeName(in));
          const int64_t blocks = std::max(3, 8192 / bs);
          const int64_t n = blocks * bs;
          const auto input = RandomInput(in, n, bs * 31 + static_cast<int>(in));
          Fp4Spec spec{type, bs, false};
          auto ref = Quantize4bitRef(spec, in, input.data(), {n});
          ASSERT_TRUE(ref.ok());
          std::vector<uint8_t> packed(n / 2);
          std::vector<float> absmax(blocks);
          k.quantize_4bit(kind, in, input.data(), blocks, bs, absmax.data(), packed.data());
          ASSERT_EQ(0, std::memcmp(packed.data(), ref->packed.data(), packed.size()));
          ASSERT_EQ(0, std::memcmp(absmax.data(), ref->absmax.data(), absmax.size() * 4));
          for (DType out : dtypes) {
            std::vector<uint8_t> want(n * DTypeSize(out)), got(n * DTypeSize(out));
            ASSERT_TRUE(Dequantize4bitRef(*ref, out, want.data()).ok());
            k.dequantize_4bit(kind, packed.data(), absmax.data(), blocks, bs, out, got.data());
            ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size())) << DTypeName(out);
          }
        }
      }
    }
  }
}

TEST(KernelsTest, EveryIsaInt8RowMatchesReference) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (Isa isa : SupportedIsas()) {
    const internal::CpuKernels& k = internal::KernelsFor(isa);
    for (int64_t cols : {1, 7, 16, 33, 100, 1024, 4099}) {
      std::vector<Half> row(cols);
      for (auto& h : row) h = FromFloat<Half>(normal(rng) * 0.3f);
      row[cols / 2] = FromFloat<Half>(-12.5f);  // outlier
      const float scb = BlockAbsmax(row.data(), cols);
      EXPECT_EQ(scb, k.half_row_absmax(row.data(), cols));
      std::vector<int8_t> got(cols);
      k.int8_row(row.data(), cols, Int8RowScale(scb), got.data());
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(got[c], Int8Quantize(ToFloat(row[c]), Int8RowScale(scb)))
            << internal::IsaName(isa) << " col " << c;
      }
    }
  }
}

TEST(KernelsTest, EveryIsaCastMatchesScalar) {
  const DType dtypes[] = {DType::kF16, DType::kBF16, DType::kF32};
  for (Isa isa : SupportedIsas()) {
    for (DType from : dtypes) {
      const int64_t n = 1037;
      auto in = RandomInput(from, n, 77);
      // Specials: quiet NaN, infinities, overflow to fp16 inf, fp16 subnormals.
      if (from == DType::kF32) {
        float* f = reinterpret_cast<float*>(in.data());
        f[0] = std::numeric_limits<float>::quiet_NaN();
        f[1] = -std::numeric_limits<float>::infinity();
        f[2] = 70000.0f;
        f[3] = 3e-6f;
        f[4] = 65520.0f;
      }
      for (DType to : dtypes) {
        std::vector<uint8_t> want(n * DTypeSize(to)), got(n * DTypeSize(to));
        internal::GenericCast(from, in.data(), n, to, want.data());
        internal::KernelsFor(isa).cast(from, in.data(), n, to, got.data());
        ASSERT_EQ(got, want) << internal::IsaName(isa) << " " << DTypeName(from) << "->"
                             << DTypeName(to);
      }
    }
  }
}

TEST(Blockwise4bitTest, OptimizedMatchesReferenceOddSizesAndThreads) {
  for (QuantType type : {QuantType::kNf4, QuantType::kFp4}) {
    for (int bs : {32, 64, 256, 4096}) {
      for (int64_t n : {int64_t{1}, int64_t{31}, int64_t{bs + 1}, int64_t{5 * bs - 3},
                        int64_t{300001}}) {
        for (bool dq : {false, true}) {
          const auto input = RandomInput(DType::kF16, n, static_cast<uint32_t>(n + bs));
          Fp4Spec spec{type, bs, dq};
          auto ref = Quantize4bitRef(spec, DType::kF16, input.data(), {n});
          auto opt = Quantize4bit(spec, DType::kF16, input.data(), {n}, {.threads = 3});
          ASSERT_TRUE(ref.ok() && opt.ok());
          EXPECT_EQ(ref->packed, opt->packed) << n;
          EXPECT_EQ(ref->absmax, opt->absmax);
          EXPECT_EQ(ref->nested.codes, opt->nested.codes);
          EXPECT_EQ(ref->nested.nested_absmax, opt->nested.nested_absmax);
          std::vector<uint8_t> a(n * 2), b(n * 2);
          ASSERT_TRUE(Dequantize4bitRef(*ref, DType::kBF16, a.data()).ok());
          ASSERT_TRUE(Dequantize4bit(*opt, DType::kBF16, b.data(), {.threads = 3}).ok());
          EXPECT_EQ(a, b);
        }
      }
    }
  }
}

TEST(Blockwise4bitTest, RoundTripErrorWithinNamedBounds) {
  const int64_t n = 64 * 1000 + 17;
  const auto input = RandomInput(DType::kF32, n, 99);
  const float* x = reinterpret_cast<const float*>(input.data());
  for (QuantType type : {QuantType::kNf4, QuantType::kFp4}) {
    const float bound = type == QuantType::kNf4 ? kNf4MaxRelError : kFp4MaxRelError;
    auto q = Quantize4bit({type, 64, false}, DType::kF32, input.data(), {n});
    ASSERT_TRUE(q.ok());
    std::vector<float> out(n);
    ASSERT_TRUE(Dequantize4bit(*q, DType::kF32, out.data()).ok());
    float worst = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float am = q->absmax[i / 64];
      if (am > 0) worst = std::max(worst, std::fabs(x[i] - out[i]) / am);
    }
    EXPECT_LE(worst, bound) << QuantTypeName(type);
    EXPECT_GT(worst, 0.5f * bound) << "suspiciously exact";
  }
}

TEST(Blockwise4bitTest, DoubleQuantAbsmaxErrorIsSmall) {
  const int64_t n = 64 * 5000;
  const auto input = RandomInput(DType::kF16, n, 5);
  auto flat = Quantize4bit({QuantType::kNf4, 64, false}, DType::kF16, input.data(), {n});
  auto nested = Quantize4bit({QuantType::kNf4, 64, true}, DType::kF16, input.data(), {n});
  ASSERT_TRUE(flat.ok() && nested.ok());
  EXPECT_EQ(flat->packed, nested->packed);
  const std::vector<float> rebuilt = nested->Absmax();
  float max_abs = 0, worst = 0;
  for (float a : flat->absmax) max_abs = std::max(max_abs, a);
  for (size_t i = 0; i < rebuilt.size(); ++i) {
    worst = std::max(worst, std::fabs(rebuilt[i] - flat->absmax[i]));
  }
  // 8-bit dynamic code on |absmax - mean| <= max_abs: coarsest step near 1 is ~0.0071.
  EXPECT_LE(worst, 0.01f * max_abs);
}

TEST(Blockwise4bitTest, ChunkedEqualsWhole) {
  const int bs = 128;
  const int64_t n = bs * 37 + 45;
  const auto input = RandomInput(DType::kBF16, n, 3);
  Fp4Spec spec{QuantType::kNf4, bs, true};
  auto whole = Quantize4bit(spec, DType::kBF16, input.data(), {n});
  ASSERT_TRUE(whole.ok());
  std::vector<uint8_t> packed((n + 1) / 2);
  std::vector<float> absmax((n + bs - 1) / bs);
  // Chunks of 5, 1, 20 and the rest blocks, quantized out of order.
  const int64_t cuts[] = {0, 5 * bs, 6 * bs, 26 * bs, n};
  for (int c : {2, 0, 3, 1}) {
    const int64_t b = cuts[c], e = cuts[c + 1];
    ASSERT_TRUE(Quantize4bitChunk(spec, DType::kBF16, input.data() + b * 2, b, e - b, n,
                                  packed.data(), absmax.data())
                    .ok());
  }
  Quantized4bit q = Finish4bit(spec, DType::kBF16, {n}, packed, absmax);
  EXPECT_EQ(q.packed, whole->packed);
  EXPECT_EQ(q.nested.codes, whole->nested.codes);
  EXPECT_EQ(q.nested.offset, whole->nested.offset);
}

TEST(Blockwise4bitTest, MisalignedChunkIsInvalidArgument) {
  std::vector<uint8_t> in(1000 * 2);
  std::vector<uint8_t> packed(500);
  std::vector<float> absmax(16);
  absl::Status s = Quantize4bitChunk({QuantType::kNf4, 64, false}, DType::kF16, in.data(), 32,
                                     64, 1000, packed.data(), absmax.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("blocksize 64"), std::string::npos) << s;
}

TEST(Blockwise4bitTest, InvalidRequests) {
  std::vector<uint8_t> in(256 * 4);
  auto bad_bs = Quantize4bit({QuantType::kNf4, 48, false}, DType::kF16, in.data(), {256});
  EXPECT_EQ(bad_bs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad_bs.status().message()).find("blocksize 48"), std::string::npos);
  for (int bs : {16, 8192, 96}) {
    EXPECT_FALSE(Quantize4bitRef({QuantType::kFp4, bs, false}, DType::kF16, in.data(), {256})
                     .ok());
  }
  auto bad_type = Quantize4bit({QuantType::kInt8, 64, false}, DType::kF16, in.data(), {256});
  EXPECT_EQ(bad_type.status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_dtype = Quantize4bit({QuantType::kNf4, 64, false}, DType::kI32, in.data(), {256});
  EXPECT_EQ(bad_dtype.status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = Quantize4bit({QuantType::kNf4, 64, false}, DType::kF16, in.data(), {0, 4});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  auto one_d = QuantizeInt8(DType::kF16, in.data(), {256});
  EXPECT_EQ(one_d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(one_d.status().message()).find("2-D"), std::string::npos);
  EXPECT_EQ(ParseQuantType("int4"), std::nullopt);
  EXPECT_EQ(ParseQuantType("nf4"), QuantType::kNf4);
}

TEST(Blockwise4bitTest, AllZeroBlockFollowsCudaSemantics) {
  std::vector<float> zeros(64, 0.0f);
  auto nf4 = Quantize4bitRef({QuantType::kNf4, 64, false}, DType::kF32, zeros.data(), {64});
  auto fp4 = Quantize4bitRef({QuantType::kFp4, 64, false}, DType::kF32, zeros.data(), {64});
  ASSERT_TRUE(nf4.ok() && fp4.ok());
  EXPECT_EQ(nf4->absmax[0], 0.0f);
  for (uint8_t b : nf4->packed) EXPECT_EQ(b, 0x00);  // NaN fails every '>' -> code 0
  for (uint8_t b : fp4->packed) EXPECT_EQ(b, 0x00);
  std::vector<float> out(64);
  ASSERT_TRUE(Dequantize4bitRef(*nf4, DType::kF32, out.data()).ok());
  EXPECT_TRUE(std::signbit(out[0]));  // -1.0 * 0 = -0.0
  EXPECT_EQ(out[0], 0.0f);
}

TEST(Int8Test, RoundTripErrorWithinNamedBound) {
  const int64_t rows = 33, cols = 257;
  const auto input = RandomInput(DType::kF32, rows * cols, 11);
  const float* x = reinterpret_cast<const float*>(input.data());
  auto q = QuantizeInt8(DType::kF32, input.data(), {rows, cols});
  auto r = QuantizeInt8Ref(DType::kF32, input.data(), {rows, cols});
  ASSERT_TRUE(q.ok() && r.ok());
  EXPECT_EQ(q->weight, r->weight);
  EXPECT_EQ(q->scb, r->scb);
  std::vector<float> out(rows * cols);
  ASSERT_TRUE(DequantizeInt8(*q, DType::kF32, out.data()).ok());
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float scb = q->scb[i / cols];
    if (scb > 0) {
      ASSERT_LE(std::fabs(x[i] - out[i]) / scb, kInt8MaxRelError) << i;
    }
  }
}

TEST(Int8Test, ThreadedChunksEqualReference) {
  const int64_t rows = 300, cols = 1000;
  const auto input = RandomInput(DType::kF16, rows * cols, 12);
  auto r = QuantizeInt8Ref(DType::kF16, input.data(), {rows, cols});
  auto q = QuantizeInt8(DType::kF16, input.data(), {rows, cols}, {.threads = 4});
  ASSERT_TRUE(r.ok() && q.ok());
  EXPECT_EQ(q->weight, r->weight);
  EXPECT_EQ(q->scb, r->scb);
}

}  // namespace
}  // namespace loadstar::quant
