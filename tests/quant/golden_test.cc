// Bit-exact comparison with golden vectors from bitsandbytes (tests/data/bnb_golden, made
// by tests/data/make_bnb_golden.py; see its docstring for which vectors come from bnb
// itself and which from the CUDA-semantics re-implementation checked against bnb-CPU).
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "quant/blockwise.h"
#include "quant/double_quant.h"
#include "quant/float16.h"
#include "quant/int8.h"
#include "quant/quant_state.h"

namespace loadstar::quant {
namespace {

const std::string kDir = std::string(LOADSTAR_SOURCE_DIR) + "/tests/data/bnb_golden/";

std::vector<uint8_t> ReadBytes(const std::string& name) {
  std::ifstream in(kDir + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

template <typename T>
std::vector<T> Read(const std::string& name) {
  const std::vector<uint8_t> bytes = ReadBytes(name);
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

// Bitwise equality of two arrays, reporting the first difference.
template <typename T>
::testing::AssertionResult SameBits(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      uint64_t g = 0, w = 0;
      std::memcpy(&g, &got[i], sizeof(T));
      std::memcpy(&w, &want[i], sizeof(T));
      std::ostringstream msg;
      msg << "first difference at " << i << ": got bits 0x" << std::hex << g << ", want 0x"
          << w;
      return ::testing::AssertionFailure() << msg.str();
    }
  }
  return ::testing::AssertionSuccess();
}

const nlohmann::json& Manifest() {
  static const nlohmann::json m = [] {
    std::ifstream in(kDir + "manifest.json");
    return nlohmann::json::parse(in);
  }();
  return m;
}

DType ParseDt(const std::string& s) { return *ParseDType(s); }

std::vector<int64_t> ShapeOf(const nlohmann::json& c) {
  return c["shape"].get<std::vector<int64_t>>();
}

TEST(GoldenTest, DynamicMapIsBitsandbytes) {
  const auto want = Read<float>(Manifest()["dynamic_map"]);
  ASSERT_EQ(want.size(), 256u);
  EXPECT_TRUE(SameBits(std::vector<float>(kDynamicMapSigned, kDynamicMapSigned + 256), want));
}

TEST(GoldenTest, QuantMapsAreBitsandbytes) {
  EXPECT_TRUE(SameBits(QuantMap(QuantType::kNf4), Read<float>(Manifest()["nf4_quant_map"])));
  EXPECT_TRUE(SameBits(QuantMap(QuantType::kFp4), Read<float>(Manifest()["fp4_quant_map"])));
}

TEST(GoldenTest, HalfAndBFloat16ConversionsMatchTorch) {
  const auto& c = Manifest()["conversions"];
  const auto f32 = Read<float>(c["f32"]);
  const auto f16 = Read<uint16_t>(c["f16"]);
  const auto bf16 = Read<uint16_t>(c["bf16"]);
  ASSERT_EQ(f32.size(), f16.size());
  std::vector<uint16_t> got16, gotbf;
  for (float f : f32) {
    got16.push_back(FloatToHalfBits(f));
    gotbf.push_back(FloatToBFloat16Bits(f));
    // Round trip: widening is exact.
    const float back = HalfBitsToFloat(FloatToHalfBits(f));
    EXPECT_EQ(FloatToHalfBits(back), FloatToHalfBits(f));
  }
  EXPECT_TRUE(SameBits(got16, f16));
  EXPECT_TRUE(SameBits(gotbf, bf16));
}

class Golden4bitTest : public ::testing::TestWithParam<int> {};

TEST_P(Golden4bitTest, QuantizeAndDequantizeBitExact) {
  const auto& cases = Manifest()["cases"];
  int index = -1;
  for (size_t i = 0, k = 0; i < cases.size(); ++i) {
    if (cases[i]["kind"] != "4bit") continue;
    if (static_cast<int>(k++) == GetParam()) index = static_cast<int>(i);
  }
  if (index < 0) GTEST_SKIP() << "no such case";
  const auto& c = cases[index];
  SCOPED_TRACE(c["name"].get<std::string>());
  Fp4Spec spec;
  spec.type = c["quant_type"] == "nf4" ? QuantType::kNf4 : QuantType::kFp4;
  spec.blocksize = c["blocksize"];
  spec.double_quant = c["nested"];
  const DType dtype = ParseDt(c["dtype"]);
  const std::vector<uint8_t> input = ReadBytes(c["input"]);
  const std::vector<int64_t> shape = ShapeOf(c);

  for (int impl = 0; impl < 2; ++impl) {
    SCOPED_TRACE(impl == 0 ? "reference" : "optimized");
    absl::StatusOr<Quantized4bit> q =
        impl == 0 ? Quantize4bitRef(spec, dtype, input.data(), shape)
                  : Quantize4bit(spec, dtype, input.data(), shape, {.threads = 2});
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_TRUE(SameBits(q->packed, Read<uint8_t>(c["packed"])));
    if (spec.double_quant) {
      // The offset is torch's fp32 mean; ours may differ by one ulp (double_quant.h).
      uint32_t offset_bits;
      std::memcpy(&offset_bits, &q->nested.offset, 4);
      const uint32_t want_offset = c["offset_bits"].get<uint32_t>();
      EXPECT_LE(offset_bits > want_offset ? offset_bits - want_offset : want_offset - offset_bits,
                1u);
      // With torch's offset, everything else is bit-exact.
      const std::vector<float> absmax = Read<float>(c["absmax"]);
      float torch_offset;
      std::memcpy(&torch_offset, &want_offset, 4);
      q->nested = NestAbsmaxWithOffset(absmax.data(), static_cast<int64_t>(absmax.size()),
                                       torch_offset);
      EXPECT_TRUE(SameBits(q->nested.codes, Read<uint8_t>(c["absmax_codes"])));
      EXPECT_TRUE(SameBits(q->nested.nested_absmax, Read<float>(c["nested_absmax"])));
      EXPECT_TRUE(SameBits(q->Absmax(), Read<float>(c["absmax_rebuilt"])));
      // The un-nested absmax is bit-exact too.
      Fp4Spec flat = spec;
      flat.double_quant = false;
      auto q_flat = Quantize4bitRef(flat, dtype, input.data(), shape);
      ASSERT_TRUE(q_flat.ok());
      EXPECT_TRUE(SameBits(q_flat->absmax, absmax));
    } else {
      EXPECT_TRUE(SameBits(q->absmax, Read<float>(c["absmax"])));
    }
    if (impl == 0) {
      // Serialized exactly as bitsandbytes' QuantState.as_dict(packed=True).
      const std::vector<NamedTensor> tensors = Serialize4bit("m.weight", *q);
      const auto& want = c["state_dict"];
      EXPECT_EQ(tensors.size(), want.size() + 1);  // + the packed weight itself
      EXPECT_EQ(tensors[0].name, "m.weight");
      EXPECT_EQ(tensors[0].shape, (std::vector<int64_t>{(q->num_elements() + 1) / 2, 1}));
      for (size_t i = 1; i < tensors.size(); ++i) {
        const std::string key = tensors[i].name.substr(std::string("m.weight.").size());
        ASSERT_TRUE(want.contains(key)) << key;
        EXPECT_EQ(tensors[i].shape, want[key]["shape"].get<std::vector<int64_t>>()) << key;
        const std::string torch_dtype = want[key]["dtype"];
        EXPECT_EQ(tensors[i].dtype, torch_dtype == "uint8" ? DType::kU8 : DType::kF32) << key;
        if (key.rfind("quant_state.", 0) == 0) {
          const std::vector<uint8_t> json = ReadBytes(c["quant_state_json"]);
          EXPECT_EQ(std::string(tensors[i].data.begin(), tensors[i].data.end()),
                    std::string(json.begin(), json.end()));
        }
      }
    }
    const DType out_dtype = ParseDt(c["dequant_dtype"]);
    std::vector<uint8_t> out(q->num_elements() * DTypeSize(out_dtype));
    const absl::Status s = impl == 0 ? Dequantize4bitRef(*q, out_dtype, out.data())
                                     : Dequantize4bit(*q, out_dtype, out.data(), {.threads = 2});
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_TRUE(SameBits(out, ReadBytes(c["dequant"])));
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, Golden4bitTest, ::testing::Range(0, 38));

TEST(GoldenTest, AllFourBitCasesCovered) {
  int n = 0;
  for (const auto& c : Manifest()["cases"]) n += c["kind"] == "4bit";
  EXPECT_EQ(n, 38) << "keep the Range() of Golden4bitTest equal to the 4-bit case count";
}

TEST(GoldenTest, Int8RowsBitExact) {
  int seen = 0;
  for (const auto& c : Manifest()["cases"]) {
    if (c["kind"] != "int8") continue;
    ++seen;
    SCOPED_TRACE(c["name"].get<std::string>());
    const DType dtype = ParseDt(c["dtype"]);
    const std::vector<uint8_t> input = ReadBytes(c["input"]);
    for (int impl = 0; impl < 2; ++impl) {
      absl::StatusOr<QuantizedInt8> q = impl == 0
                                            ? QuantizeInt8Ref(dtype, input.data(), ShapeOf(c))
                                            : QuantizeInt8(dtype, input.data(), ShapeOf(c));
      ASSERT_TRUE(q.ok()) << q.status();
      EXPECT_TRUE(SameBits(q->weight, Read<int8_t>(c["weight"])));
      EXPECT_TRUE(SameBits(q->scb, Read<float>(c["scb"])));
      std::vector<float> deq(q->weight.size());
      ASSERT_TRUE(DequantizeInt8(*q, DType::kF32, deq.data()).ok());
      EXPECT_TRUE(SameBits(deq, Read<float>(c["dequant_f32"])));
    }
  }
  EXPECT_EQ(seen, 3);
}

}  // namespace
}  // namespace loadstar::quant
