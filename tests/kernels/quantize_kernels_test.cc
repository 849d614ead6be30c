// The kernel launchers of kernels/quantize_kernels.h over device pointers, against the
// CPU reference (quant/ *Ref functions), on the inputs the host-memory conveniences of
// GpuQuantizer never produce: unaligned device pointers (a tensor at a safetensors
// offset 2 bytes into a mapped buffer takes the scalar path), NaN, +-Inf, subnormals,
// and the two launchers nothing else in the tests calls (LaunchDequantizeNestedAbsmax,
// LaunchDequantizeInt8Rows).
#include "kernels/quantize_kernels.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "quant/blockwise.h"
#include "quant/double_quant.h"
#include "quant/float16.h"
#include "quant/int8.h"
#include "tests/kernels/gpu_test_util.h"

namespace loadstar::kernels {
namespace {

using quant::QuantType;

// cudaMalloc'd bytes, freed on scope exit.
class DeviceBytes {
 public:
  explicit DeviceBytes(uint64_t n) { EXPECT_EQ(cudaMalloc(&ptr_, n), cudaSuccess); }
  ~DeviceBytes() { cudaFree(ptr_); }
  char* at(uint64_t offset) const { return static_cast<char*>(ptr_) + offset; }
  void Upload(uint64_t offset, const void* src, uint64_t n) {
    ASSERT_EQ(cudaMemcpy(at(offset), src, n, cudaMemcpyHostToDevice), cudaSuccess);
  }
  template <typename T>
  std::vector<T> Download(uint64_t offset, uint64_t count) const {
    std::vector<T> v(count);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(v.data(), at(offset), count * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return v;
  }

 private:
  void* ptr_ = nullptr;
};

GpuElement ElementFor(DType d) {
  return d == DType::kF16 ? GpuElement::kF16
                          : d == DType::kBF16 ? GpuElement::kBF16 : GpuElement::kF32;
}

void Put(DType dtype, float v, uint8_t* out) {
  if (dtype == DType::kF16) {
    const Half h = FromFloat<Half>(v);
    std::memcpy(out, &h, 2);
  } else if (dtype == DType::kBF16) {
    const BFloat16 b = FromFloat<BFloat16>(v);
    std::memcpy(out, &b, 2);
  } else {
    std::memcpy(out, &v, 4);
  }
}

// Ordinary values with special ones mixed in, and whole blocks of them: one block of
// subnormals of `dtype`, one holding +Inf, one all NaN, one with -Inf and NaN among finite
// values (blocksize `bs`, at least 6 blocks).
std::vector<uint8_t> SpecialValues(DType dtype, int64_t n, int bs) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Smallest subnormal of each type: fp16 2^-24, bf16 2^-133, fp32 2^-149.
  const float tiny = std::ldexp(1.0f, dtype == DType::kF16    ? -24
                                      : dtype == DType::kBF16 ? -133
                                                              : -149);
  std::vector<uint8_t> bytes(n * DTypeSize(dtype));
  uint64_t s = 12345;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    float v = (static_cast<float>((s >> 40) & 0xFFFF) / 32768.0f - 1.0f) * 3.0f;
    const int64_t block = i / bs;
    if (block == 1) v = tiny * static_cast<float>(1 + (s >> 33) % 7);
    if (block == 2 && i % bs == 5) v = inf;
    if (block == 3) v = nan;
    if (block == 4 && i % bs == 0) v = -inf;
    if (block == 4 && i % bs == 1) v = nan;
    if (block == 5 && i % 3 == 0) v = tiny;  // subnormals beside normal values
    if (i % 97 == 0) v = -0.0f;
    Put(dtype, v, bytes.data() + i * DTypeSize(dtype));
  }
  return bytes;
}

std::vector<uint8_t> OrdinaryValues(DType dtype, int64_t n, uint64_t seed) {
  std::vector<uint8_t> bytes(n * DTypeSize(dtype));
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 3;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    Put(dtype, (static_cast<float>((s >> 40) & 0xFFFF) / 32768.0f - 1.0f) * 2.0f,
        bytes.data() + i * DTypeSize(dtype));
  }
  return bytes;
}

float ValueAt(DType dtype, const uint8_t* p) {
  if (dtype == DType::kF16) return HalfBitsToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8)));
  if (dtype == DType::kBF16) {
    return BFloat16BitsToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8)));
  }
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

// Byte-equal, except that a NaN matches any NaN: the hardware conversions return their
// canonical NaN, the host ones keep the payload (quant/float16.h).
::testing::AssertionResult SameValues(DType dtype, const std::vector<uint8_t>& want,
                                      const std::vector<uint8_t>& got) {
  if (want.size() != got.size()) return ::testing::AssertionFailure() << "size differs";
  const size_t es = DTypeSize(dtype);
  for (size_t i = 0; i < want.size(); i += es) {
    if (std::memcmp(&want[i], &got[i], es) == 0) continue;
    const float a = ValueAt(dtype, &want[i]), b = ValueAt(dtype, &got[i]);
    if (std::isnan(a) && std::isnan(b)) continue;
    return ::testing::AssertionFailure() << "element " << i / es << ": want " << a << " got "
                                         << b;
  }
  return ::testing::AssertionSuccess();
}

bool SameFloatBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

std::string Describe(QuantType type, DType dtype, int bs, uint64_t in_off, uint64_t out_off) {
  return std::string(quant::QuantTypeName(type)) + " " + std::string(DTypeName(dtype)) +
         " bs=" + std::to_string(bs) + " in+" + std::to_string(in_off) + " packed+" +
         std::to_string(out_off);
}

// Quantizes `data` with the kernel from device memory at (in_off, out_off) and compares
// packed bytes and absmax with the reference; then dequantizes the reference's state on
// the GPU into every dtype and compares with Dequantize4bitRef.
void ExpectQuantizeMatches(QuantType type, DType dtype, int bs, const std::vector<uint8_t>& data,
                           uint64_t in_off, uint64_t out_off) {
  const int64_t n = static_cast<int64_t>(data.size() / DTypeSize(dtype));
  const int64_t blocks = (n + bs - 1) / bs;
  const std::string what = Describe(type, dtype, bs, in_off, out_off);
  const quant::Fp4Spec spec{type, bs, false};
  auto ref = quant::Quantize4bitRef(spec, dtype, data.data(), {n});
  ASSERT_TRUE(ref.ok()) << ref.status();
  const Gpu4bit kind = type == QuantType::kNf4 ? Gpu4bit::kNf4 : Gpu4bit::kFp4;
  DeviceBytes in(data.size() + 16), packed((n + 1) / 2 + 16), absmax(blocks * 4);
  in.Upload(in_off, data.data(), data.size());
  ASSERT_EQ(LaunchQuantize4bit(kind, ElementFor(dtype), in.at(in_off), n, bs,
                               reinterpret_cast<float*>(absmax.at(0)),
                               reinterpret_cast<uint8_t*>(packed.at(out_off)), nullptr),
            cudaSuccess)
      << what;
  EXPECT_EQ(packed.Download<uint8_t>(out_off, (n + 1) / 2), ref->packed) << what;
  EXPECT_TRUE(SameFloatBits(absmax.Download<float>(0, blocks), ref->absmax)) << what;

  packed.Upload(out_off, ref->packed.data(), ref->packed.size());
  absmax.Upload(0, ref->absmax.data(), ref->absmax.size() * 4);
  for (DType out : {DType::kF16, DType::kBF16, DType::kF32}) {
    std::vector<uint8_t> want(n * DTypeSize(out));
    ASSERT_TRUE(quant::Dequantize4bitRef(*ref, out, want.data()).ok());
    const uint64_t out_at = out == DType::kF32 ? 4 : 2;  // unaligned for vector stores
    DeviceBytes d_out(want.size() + 16);
    ASSERT_EQ(LaunchDequantize4bit(kind, ElementFor(out),
                                   reinterpret_cast<const uint8_t*>(packed.at(out_off)),
                                   reinterpret_cast<const float*>(absmax.at(0)), n, bs,
                                   d_out.at(out_at), nullptr),
              cudaSuccess);
    EXPECT_TRUE(SameValues(out, want, d_out.Download<uint8_t>(out_at, want.size())))
        << what << " -> " << DTypeName(out);
  }
}

TEST(QuantizeKernelsTest, UnalignedPointersTakeTheScalarPathWithTheSameBits) {
  SKIP_WITHOUT_GPU();
  for (QuantType type : {QuantType::kNf4, QuantType::kFp4}) {
    for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
      for (int bs : {32, 64, 2048, 4096}) {
        const int64_t n = 2 * bs + bs / 2 + 1;
        const std::vector<uint8_t> data = OrdinaryValues(dtype, n, bs);
        // A 16-bit tensor 2 bytes into its buffer (a safetensors offset); fp32 must stay
        // 4-byte aligned, so 4. Then aligned input with packed output 1 byte in.
        const uint64_t in_off = dtype == DType::kF32 ? 4 : 2;
        ExpectQuantizeMatches(type, dtype, bs, data, in_off, 0);
        ExpectQuantizeMatches(type, dtype, bs, data, 0, 1);
        ExpectQuantizeMatches(type, dtype, bs, data, 0, 0);  // vector path, same inputs
      }
    }
  }
}

TEST(QuantizeKernelsTest, NanInfAndSubnormalsMatchReference) {
  SKIP_WITHOUT_GPU();
  for (QuantType type : {QuantType::kNf4, QuantType::kFp4}) {
    for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
      for (int bs : {64, 256}) {
        const std::vector<uint8_t> data = SpecialValues(dtype, 7 * bs + 3, bs);
        ExpectQuantizeMatches(type, dtype, bs, data, 0, 0);
        ExpectQuantizeMatches(type, dtype, bs, data, dtype == DType::kF32 ? 4 : 2, 0);
      }
    }
  }
}

// The torch_dtype cast: every fp16 bit pattern, and fp32 values around every rounding
// boundary kind (ties, subnormals, overflow), through the hardware conversions, against
// the host's.
TEST(QuantizeKernelsTest, CastMatchesHostConversions) {
  SKIP_WITHOUT_GPU();
  std::vector<uint8_t> halves(65536 * 2);
  for (uint32_t i = 0; i < 65536; ++i) {
    halves[2 * i] = static_cast<uint8_t>(i & 0xFF);
    halves[2 * i + 1] = static_cast<uint8_t>(i >> 8);
  }
  std::vector<float> floats;
  for (uint32_t e = 0; e < 256; ++e) {
    for (uint32_t m : {0u, 1u, 0xFFFu, 0x1000u, 0x1001u, 0x3000u, 0x7FFFu, 0x8000u, 0x8001u,
                       0x18000u, 0x7FFFFFu, 0x400000u}) {
      for (uint32_t sign : {0u, 0x80000000u}) {
        const uint32_t u = sign | (e << 23) | m;
        float f;
        std::memcpy(&f, &u, 4);
        floats.push_back(f);
      }
    }
  }
  std::vector<uint8_t> f32(floats.size() * 4);
  std::memcpy(f32.data(), floats.data(), f32.size());
  struct Case {
    DType from;
    const std::vector<uint8_t>* in;
  };
  for (const Case& c : {Case{DType::kF16, &halves}, Case{DType::kF32, &f32}}) {
    const int64_t n = static_cast<int64_t>(c.in->size() / DTypeSize(c.from));
    DeviceBytes in(c.in->size());
    in.Upload(0, c.in->data(), c.in->size());
    for (DType to : {DType::kF16, DType::kBF16, DType::kF32}) {
      if (to == c.from) continue;
      std::vector<uint8_t> want(n * DTypeSize(to));
      for (int64_t i = 0; i < n; ++i) {
        Put(to, ValueAt(c.from, c.in->data() + i * DTypeSize(c.from)),
            want.data() + i * DTypeSize(to));
      }
      DeviceBytes out(want.size());
      ASSERT_EQ(LaunchCast(ElementFor(c.from), in.at(0), n, ElementFor(to), out.at(0), nullptr),
                cudaSuccess);
      EXPECT_TRUE(SameValues(to, want, out.Download<uint8_t>(0, want.size())))
          << DTypeName(c.from) << " -> " << DTypeName(to);
    }
  }
}

TEST(QuantizeKernelsTest, DequantizeNestedAbsmaxMatchesReference) {
  SKIP_WITHOUT_GPU();
  for (int64_t blocks : {1, 255, 256, 257, 1000}) {
    const int64_t n = blocks * 64 - 5;
    const std::vector<uint8_t> data = OrdinaryValues(DType::kF16, n, blocks);
    auto ref = quant::Quantize4bitRef({QuantType::kNf4, 64, true}, DType::kF16, data.data(),
                                      {n});
    ASSERT_TRUE(ref.ok()) << ref.status();
    const quant::NestedAbsmax& nested = ref->nested;
    ASSERT_EQ(static_cast<int64_t>(nested.codes.size()), blocks);
    DeviceBytes codes(blocks), nested_absmax(nested.nested_absmax.size() * 4),
        map(sizeof(quant::kDynamicMapSigned)), out(blocks * 4);
    codes.Upload(0, nested.codes.data(), blocks);
    nested_absmax.Upload(0, nested.nested_absmax.data(), nested.nested_absmax.size() * 4);
    map.Upload(0, quant::kDynamicMapSigned, sizeof(quant::kDynamicMapSigned));
    ASSERT_EQ(LaunchDequantizeNestedAbsmax(
                  reinterpret_cast<const uint8_t*>(codes.at(0)),
                  reinterpret_cast<const float*>(nested_absmax.at(0)), blocks, nested.offset,
                  reinterpret_cast<const float*>(map.at(0)),
                  reinterpret_cast<float*>(out.at(0)), nullptr),
              cudaSuccess);
    EXPECT_TRUE(SameFloatBits(out.Download<float>(0, blocks), ref->Absmax())) << blocks;
  }
}

TEST(QuantizeKernelsTest, DequantizeInt8RowsMatchesReference) {
  SKIP_WITHOUT_GPU();
  const int64_t rows = 29, cols = 301;
  std::vector<uint8_t> data = OrdinaryValues(DType::kF16, rows * cols, 8);
  std::memset(data.data() + 4 * cols * 2, 0, cols * 2);  // an all-zero row: SCB 0
  auto ref = quant::QuantizeInt8Ref(DType::kF16, data.data(), {rows, cols});
  ASSERT_TRUE(ref.ok()) << ref.status();
  DeviceBytes q(rows * cols), scb(rows * 4);
  q.Upload(0, ref->weight.data(), rows * cols);
  scb.Upload(0, ref->scb.data(), rows * 4);
  for (DType out : {DType::kF16, DType::kBF16, DType::kF32}) {
    std::vector<uint8_t> want(rows * cols * DTypeSize(out));
    ASSERT_TRUE(quant::DequantizeInt8(*ref, out, want.data()).ok());
    DeviceBytes d_out(want.size());
    ASSERT_EQ(LaunchDequantizeInt8Rows(reinterpret_cast<const int8_t*>(q.at(0)),
                                       reinterpret_cast<const float*>(scb.at(0)), rows, cols,
                                       ElementFor(out), d_out.at(0), nullptr),
              cudaSuccess);
    EXPECT_TRUE(SameValues(out, want, d_out.Download<uint8_t>(0, want.size())))
        << DTypeName(out);
  }
}

}  // namespace
}  // namespace loadstar::kernels
