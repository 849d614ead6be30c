#include "quant/quant_state.h"

#include <map>
#include <random>

#include <gtest/gtest.h>

#include "quant/float16.h"

namespace loadstar::quant {
namespace {

TensorLookup LookupIn(const std::vector<NamedTensor>& tensors) {
  return [&tensors](std::string_view name) -> const NamedTensor* {
    for (const NamedTensor& t : tensors) {
      if (t.name == name) return &t;
    }
    return nullptr;
  };
}

std::vector<Half> RandomHalf(int64_t n) {
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0, 0.05f);
  std::vector<Half> v(n);
  for (auto& h : v) h = FromFloat<Half>(normal(rng));
  return v;
}

TEST(QuantStateTest, PythonFloatRepr) {
  EXPECT_EQ(PythonFloatRepr(0.3088116943836212), "0.3088116943836212");
  EXPECT_EQ(PythonFloatRepr(1e-05), "1e-05");
  EXPECT_EQ(PythonFloatRepr(1.5e-05), "1.5e-05");
  EXPECT_EQ(PythonFloatRepr(0.0001), "0.0001");
  EXPECT_EQ(PythonFloatRepr(2.0), "2.0");
  EXPECT_EQ(PythonFloatRepr(-0.5), "-0.5");
  EXPECT_EQ(PythonFloatRepr(0.0), "0.0");
  EXPECT_EQ(PythonFloatRepr(1e16), "1e+16");
  EXPECT_EQ(PythonFloatRepr(123456789012345.0), "123456789012345.0");
  EXPECT_EQ(PythonFloatRepr(static_cast<double>(0.1f)), "0.10000000149011612");
}

TEST(QuantStateTest, FourBitRoundTrip) {
  for (bool dq : {false, true}) {
    const auto w = RandomHalf(300 * 70);
    auto q = Quantize4bit({QuantType::kNf4, 64, dq}, DType::kF16, w.data(), {300, 70});
    ASSERT_TRUE(q.ok());
    const auto tensors = Serialize4bit("model.layers.0.mlp.up_proj.weight", *q);
    EXPECT_EQ(tensors.size(), dq ? 6u : 4u);
    for (const auto& t : tensors) {
      if (t.name != "model.layers.0.mlp.up_proj.weight") {
        EXPECT_TRUE(IsQuantStateTensorName(t.name)) << t.name;
      }
    }
    auto back = Parse4bit("model.layers.0.mlp.up_proj.weight", LookupIn(tensors));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->packed, q->packed);
    EXPECT_EQ(back->absmax, q->absmax);
    EXPECT_EQ(back->nested.codes, q->nested.codes);
    EXPECT_EQ(back->nested.nested_absmax, q->nested.nested_absmax);
    EXPECT_EQ(back->nested.offset, q->nested.offset);  // repr round-trips exactly
    EXPECT_EQ(back->shape, q->shape);
    EXPECT_EQ(back->dtype, DType::kF16);
    EXPECT_EQ(back->spec.double_quant, dq);
  }
}

TEST(QuantStateTest, FourBitParseErrors) {
  const auto w = RandomHalf(64 * 4);
  auto q = Quantize4bit({QuantType::kFp4, 64, false}, DType::kF16, w.data(), {4, 64});
  ASSERT_TRUE(q.ok());
  auto tensors = Serialize4bit("a.weight", *q);
  EXPECT_EQ(tensors.back().name, "a.weight.quant_state.bitsandbytes__fp4");
  EXPECT_EQ(Parse4bit("b.weight", LookupIn(tensors)).status().code(),
            absl::StatusCode::kNotFound);
  auto broken = tensors;
  broken[1].data.resize(4);  // absmax too short
  broken[1].shape = {1};
  auto s = Parse4bit("a.weight", LookupIn(broken)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("a.weight.absmax"), std::string::npos) << s;
}

// quant_state_fuzzer findings: JSON that used to overflow, throw or silently misread.
TEST(QuantStateTest, FourBitHostileJson) {
  const auto w = RandomHalf(64 * 4);
  auto q = Quantize4bit({QuantType::kNf4, 64, true}, DType::kF16, w.data(), {4, 64});
  ASSERT_TRUE(q.ok());
  auto with_json = [&](const std::string& json) {
    auto tensors = Serialize4bit("a.weight", *q);
    tensors.back().data.assign(json.begin(), json.end());
    tensors.back().shape = {static_cast<int64_t>(json.size())};
    return Parse4bit("a.weight", LookupIn(tensors)).status();
  };
  const std::string head = R"({"quant_type": "nf4", "dtype": "float16", )";
  const std::string nested = R"(, "nested_dtype": "float32", "nested_offset": 0.5})";
  ASSERT_TRUE(with_json(head + R"("blocksize": 64, "shape": [4, 64], "nested_blocksize": 256)" +
                        nested).ok());
  for (const std::string& bad : {
           // The element count overflowed int64 (undefined behaviour).
           head + R"("blocksize": 64, "shape": [4294967296, 4294967296], "nested_blocksize": 256)" + nested,
           head + R"("blocksize": 64, "shape": [9223372036854775807], "nested_blocksize": 256)" + nested,
           head + R"("blocksize": 64, "shape": [18446744073709551615], "nested_blocksize": 256)" + nested,
           // Read as int, 2^32 + 64 was taken for 64.
           head + R"("blocksize": 4294967360, "shape": [4, 64], "nested_blocksize": 256)" + nested,
           // json::value() threw on a string.
           head + R"("blocksize": 64, "shape": [4, 64], "nested_blocksize": "256")" + nested,
       }) {
    absl::Status s = with_json(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad << "\n" << s;
  }
}

TEST(QuantStateTest, Int8RoundTrip) {
  const auto w = RandomHalf(30 * 17);
  auto q = QuantizeInt8(DType::kF16, w.data(), {30, 17});
  ASSERT_TRUE(q.ok());
  const auto tensors = SerializeInt8("m.fc1.weight", *q);
  ASSERT_EQ(tensors.size(), 3u);
  EXPECT_EQ(tensors[0].name, "m.fc1.weight");
  EXPECT_EQ(tensors[0].dtype, DType::kI8);
  EXPECT_EQ(tensors[1].name, "m.fc1.SCB");
  EXPECT_EQ(tensors[2].name, "m.fc1.weight_format");
  EXPECT_TRUE(tensors[2].shape.empty());
  EXPECT_EQ(tensors[2].data, std::vector<uint8_t>{0});
  auto back = ParseInt8("m.fc1.weight", LookupIn(tensors));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->weight, q->weight);
  EXPECT_EQ(back->scb, q->scb);
}

}  // namespace
}  // namespace loadstar::quant
