#include "store/manifest.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "store/checksum.h"

namespace loadstar::store {
namespace {

using ::testing::HasSubstr;

Manifest SampleManifest() {
  Manifest m;
  m.name = "org/model";
  m.files = {"data-00000.bin", "data-00001.bin"};
  m.extra_files = {"config.json"};
  ManifestTensor a{"a.weight", DType::kF16, {2, 3}, 0, 0, 12, {Checksum("abc")}};
  ManifestTensor b{"b.bias", DType::kF32, {}, 0, 4096, 4, {7}};
  ManifestTensor c{"c", DType::kI8, {0}, 1, 0, 0, {Checksum("")}};
  m.tensors = {a, b, c};
  return m;
}

// Applies `edit` to the serialized sample and returns the parse error message.
template <typename Edit>
std::string ParseError(Edit edit) {
  nlohmann::json j = nlohmann::json::parse(SerializeManifest(SampleManifest()));
  edit(j);
  absl::StatusOr<Manifest> parsed = ParseManifest(j.dump(), "m.json");
  EXPECT_FALSE(parsed.ok());
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  std::string message(parsed.status().message());
  EXPECT_THAT(message, HasSubstr("m.json"));
  return message;
}

TEST(ManifestTest, RoundTrip) {
  Manifest m = SampleManifest();
  m.variant = "nf4-bs64";
  m.quantization_json = R"({"quant_type": "nf4"})";
  absl::StatusOr<Manifest> parsed = ParseManifest(SerializeManifest(m), "m.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, m);
  EXPECT_EQ(parsed->TotalBytes(), 16u);
  ASSERT_NE(parsed->Find("b.bias"), nullptr);
  EXPECT_EQ(parsed->Find("b.bias")->offset, 4096u);
  EXPECT_EQ(parsed->Find("missing"), nullptr);
}

TEST(ManifestTest, LargeTensorHasOneChecksumPerChunk) {
  Manifest m;
  m.name = "big";
  m.files = {"data-00000.bin"};
  uint64_t elements = kChecksumChunkBytes * 2 + 1;
  m.tensors = {{"t", DType::kU8, {static_cast<int64_t>(elements)}, 0, 0, elements, {1, 2, 3}}};
  absl::StatusOr<Manifest> parsed = ParseManifest(SerializeManifest(m), "m.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  m.tensors[0].checksums = {1, 2};
  EXPECT_THAT(std::string(ParseManifest(SerializeManifest(m), "m.json").status().message()),
              HasSubstr("2 checksums, expected 3"));
}

TEST(ManifestTest, RejectsInvalidJson) {
  EXPECT_THAT(std::string(ParseManifest("{", "m.json").status().message()),
              HasSubstr("not valid JSON"));
  EXPECT_THAT(std::string(ParseManifest("[]", "m.json").status().message()),
              HasSubstr("must be a JSON object"));
}

TEST(ManifestTest, RejectsDuplicateKeys) {
  EXPECT_THAT(std::string(ParseManifest(R"({"version":1,"version":1})", "m.json")
                              .status()
                              .message()),
              HasSubstr("duplicate JSON key \"version\""));
}

TEST(ManifestTest, RejectsWrongVersion) {
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["version"] = 2; }),
              HasSubstr("unsupported manifest version 2"));
}

TEST(ManifestTest, RejectsUnknownAndMissingKeys) {
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["extra"] = 1; }),
              HasSubstr("unknown key \"extra\""));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j.erase("files"); }),
              HasSubstr("missing key \"files\""));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][0].erase("checksums"); }),
              HasSubstr("missing key \"checksums\""));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][0]["x"] = 1; }),
              HasSubstr("unknown key \"x\""));
}

TEST(ManifestTest, RejectsBadName) {
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["name"] = "../evil"; }),
              HasSubstr("invalid model name \"../evil\""));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["name"] = 5; }),
              HasSubstr("\"name\" must be a string"));
}

TEST(ManifestTest, RejectsBadVariantKey) {
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["variant"] = "a/b"; }),
              HasSubstr("variant: invalid variant key \"a/b\""));
}

TEST(ManifestTest, RejectsFileNamesThatLeaveTheDirectory) {
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["files"][0] = "../x.bin"; }),
              HasSubstr("invalid file name \"../x.bin\""));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["files"][0] = "/etc/passwd"; }),
              HasSubstr("invalid file name"));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["files"][1] = "data-00000.bin"; }),
              HasSubstr("duplicate file name"));
}

TEST(ManifestTest, KeptFilesMayBeOneDirectoryDeepButNeverLeave) {
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["extra_files"] = {"../config.json"}; }),
              HasSubstr("invalid file name \"../config.json\""));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["extra_files"] = {"a/b/c.json"}; }),
              HasSubstr("invalid file name"));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["extra_files"] = {"/etc/passwd"}; }),
              HasSubstr("invalid file name"));
  // Data files stay one plain name.
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["files"][0] = "sub/data.bin"; }),
              HasSubstr("invalid file name"));
}

TEST(ManifestTest, RejectsBadTensorFields) {
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][0]["dtype"] = "F12"; }),
              HasSubstr("tensor \"a.weight\": unknown dtype \"F12\""));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][0]["shape"] = {2, -3}; }),
              HasSubstr("shape dimensions must be non-negative integers"));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][0]["size"] = 13; }),
              HasSubstr("size 13 does not match F16 [2, 3] (12 bytes)"));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][0]["file"] = 2; }),
              HasSubstr("file index 2 out of range (2 files)"));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][1]["offset"] = 100; }),
              HasSubstr("offset 100 is not a multiple of 4096"));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][0]["checksums"][0] = "xyz"; }),
              HasSubstr("checksums must be 16 lowercase hex digits"));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][0]["name"] = ""; }),
              HasSubstr("empty tensor name"));
}

TEST(ManifestTest, RejectsShapeOverflow) {
  EXPECT_THAT(ParseError([](nlohmann::json& j) {
                j["tensors"][0]["shape"] = {1ull << 40, 1ull << 40};
              }),
              HasSubstr("overflows"));
}

TEST(ManifestTest, RejectsOverlapsUnsortedAndDuplicates) {
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][1]["offset"] = 0; }),
              HasSubstr("overlaps or precedes tensor \"a.weight\""));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { std::swap(j["tensors"][0], j["tensors"][2]); }),
              HasSubstr("overlaps or precedes"));
  EXPECT_THAT(ParseError([](nlohmann::json& j) { j["tensors"][1]["name"] = "a.weight"; }),
              HasSubstr("duplicate tensor name"));
}

}  // namespace
}  // namespace loadstar::store
