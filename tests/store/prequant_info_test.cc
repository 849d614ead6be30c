// prequant.json parsing (store/prequant_info.h): round trip of each format, and the
// hostile values prequant_info_fuzzer turned up.
#include "store/prequant_info.h"

#include <gtest/gtest.h>

#include <string>

namespace loadstar::store {
namespace {

TEST(PrequantInfoTest, EachFormatRoundTrips) {
  for (const std::string& text : {
           std::string(R"({"format": "gguf", "tensors": {"m.q.weight": {"ggml_type": "Q4_K",)"
                       R"( "shape": [64, 256], "source_name": "blk.0.attn_q.weight",)"
                       R"( "permute_heads": 4}}})"),
           std::string(R"({"format": "gptq", "linears": {"m.up": {"bits": 4, "in": 64,)"
                       R"( "out": 128, "group_size": 32, "g_idx": true}}})"),
           std::string(R"({"format": "bitsandbytes", "quantization": {"load_in_8bit": true}})"),
       }) {
    auto info = ParsePrequantInfo(text, "p.json");
    ASSERT_TRUE(info.ok()) << info.status();
    auto again = ParsePrequantInfo(SerializePrequantInfo(*info), "again.json");
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, *info);
  }
}

TEST(PrequantInfoTest, HostileValuesAreInvalidArgument) {
  const std::string linear = R"({"format": "gptq", "linears": {"m": )";
  const std::string tensor = R"({"format": "gguf", "tensors": {"t": )";
  for (const std::string& bad : {
           // e.value() threw on a non-boolean.
           linear + R"({"bits": 4, "in": 64, "out": 64, "group_size": 32, "g_idx": "yes"}}})",
           // Read as int, bits 2^32 + 4 was 4.
           linear + R"({"bits": 4294967300, "in": 64, "out": 64, "group_size": 32}}})",
           // in * bits overflowed int64.
           linear + R"({"bits": 8, "in": 4611686018427387904, "out": 64, "group_size": 32}}})",
           // The element count overflowed int64.
           tensor + R"({"ggml_type": "F32", "shape": [4294967296, 4294967296, 4294967296],)"
                    R"( "source_name": "x", "permute_heads": 0}}})",
           // 2 * permute_heads overflowed.
           tensor + R"({"ggml_type": "F32", "shape": [64, 64], "source_name": "x",)"
                    R"( "permute_heads": 9223372036854775807}}})",
       }) {
    auto info = ParsePrequantInfo(bad, "p.json");
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace loadstar::store
