// The GGUF reader's validation (store/gguf.h): a valid file round-trips its header, and
// every malformed field gets one InvalidArgument naming the file and the field.
#include "store/gguf.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/gguf_builder.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

using ::testing::HasSubstr;
using loadstar::testing::GgufBuilder;

constexpr uint32_t kF32 = 0, kQ8_0 = 8, kQ4_K = 12;

GgufBuilder ValidBuilder() {
  GgufBuilder b;
  b.AddString("general.architecture", "llama");
  b.AddU32("llama.block_count", 1);
  b.AddF32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  b.AddStringArray("tokenizer.ggml.tokens", {"<s>", "</s>", "a"});
  b.AddTensor({"token_embd.weight", {4, 3}, kF32, std::string(48, '\1')});
  b.AddTensor({"blk.0.attn_q.weight", {32, 2}, kQ8_0, std::string(68, '\2')});
  return b;
}

absl::Status ParseStatus(const std::string& bytes) {
  return ParseGguf(bytes, "m.gguf").status();
}

TEST(GgufTest, ParsesAValidFile) {
  std::string bytes = ValidBuilder().Build();
  absl::StatusOr<GgufFile> f = ParseGguf(bytes, "m.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version, 3u);
  EXPECT_EQ(f->alignment, 32u);
  EXPECT_EQ(f->GetString("general.architecture"), "llama");
  EXPECT_EQ(f->GetInt("llama.block_count"), 1);
  EXPECT_FLOAT_EQ(static_cast<float>(*f->GetFloat("llama.attention.layer_norm_rms_epsilon")),
                  1e-5f);
  EXPECT_THAT(f->Get("tokenizer.ggml.tokens")->strings,
              ::testing::ElementsAre("<s>", "</s>", "a"));
  ASSERT_EQ(f->tensors.size(), 2u);
  EXPECT_EQ(f->tensors[0].name, "token_embd.weight");
  EXPECT_EQ(f->tensors[0].TorchShape(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(f->tensors[0].size, 48u);
  EXPECT_EQ(f->tensors[1].type, quant::GgmlType::kQ8_0);
  EXPECT_EQ(f->tensors[1].size, 68u);
  EXPECT_EQ(f->tensors[1].offset, 64u);
  EXPECT_EQ(f->data_offset % 32, 0u);
  EXPECT_EQ(bytes.substr(f->data_offset + f->tensors[1].offset, 68), std::string(68, '\2'));
}

TEST(GgufTest, ReadsThroughEnvLikeInMemory) {
  loadstar::testing::TempDir dir;
  std::string bytes = ValidBuilder().Build();
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), dir.Join("m.gguf"), bytes).ok());
  absl::StatusOr<GgufFile> f = ReadGguf(Env::Default(), dir.Join("m.gguf"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors.size(), 2u);
  EXPECT_TRUE(LooksLikeGguf(Env::Default(), dir.Join("m.gguf")));
  EXPECT_FALSE(LooksLikeGguf(Env::Default(), dir.path()));
}

TEST(GgufTest, HonorsGeneralAlignment) {
  GgufBuilder b;
  b.alignment = 64;
  b.AddU32("general.alignment", 64);
  b.AddTensor({"a", {8}, kF32, std::string(32, 'a')});
  b.AddTensor({"b", {8}, kF32, std::string(32, 'b')});
  absl::StatusOr<GgufFile> f = ParseGguf(b.Build(), "m.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->alignment, 64u);
  EXPECT_EQ(f->tensors[1].offset, 64u);
  EXPECT_EQ(f->data_offset % 64, 0u);
}

TEST(GgufTest, TruncatedFilesNameWhatIsMissing) {
  std::string bytes = ValidBuilder().Build();
  for (size_t cut : {size_t{0}, size_t{3}, size_t{8}, size_t{20}, size_t{60}, size_t{200},
                     bytes.size() - 40}) {
    absl::Status s = ParseStatus(bytes.substr(0, cut));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << cut << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("m.gguf")) << cut;
  }
  EXPECT_THAT(std::string(ParseStatus(bytes.substr(0, 3)).message()),
              HasSubstr("truncated: magic"));
  EXPECT_THAT(std::string(ParseStatus(bytes.substr(0, bytes.size() - 40)).message()),
              HasSubstr("blk.0.attn_q.weight"));
}

TEST(GgufTest, RejectsBadMagicAndVersion) {
  std::string bytes = ValidBuilder().Build();
  std::string bad = bytes;
  bad[0] = 'X';
  EXPECT_THAT(std::string(ParseStatus(bad).message()), HasSubstr("not a GGUF file"));
  GgufBuilder b = ValidBuilder();
  b.version = 1;
  EXPECT_THAT(std::string(ParseStatus(b.Build()).message()), HasSubstr("version 1"));
}

TEST(GgufTest, RejectsHugeCountsAndLengths) {
  GgufBuilder b = ValidBuilder();
  b.kv_count_override = int64_t{1} << 60;
  EXPECT_THAT(std::string(ParseStatus(b.Build()).message()), HasSubstr("kv_count"));
  b = ValidBuilder();
  b.tensor_count_override = int64_t{1} << 60;
  EXPECT_THAT(std::string(ParseStatus(b.Build()).message()), HasSubstr("tensor_count"));

  GgufBuilder s;
  s.AddRaw("general.name", 8, GgufBuilder::Le(uint64_t{1} << 62, 8) + "abc");
  absl::Status st = ParseStatus(s.Build());
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("metadata key 0 (\"general.name\"): string length"));

  GgufBuilder a;
  a.AddRaw("tokenizer.ggml.scores", 9,
           GgufBuilder::Le(6, 4) + GgufBuilder::Le(uint64_t{1} << 61, 8));
  EXPECT_THAT(std::string(ParseStatus(a.Build()).message()),
              HasSubstr("(\"tokenizer.ggml.scores\"): array count"));
}

TEST(GgufTest, RejectsBadValueTypes) {
  GgufBuilder b;
  b.AddRaw("x", 13, "");
  EXPECT_THAT(std::string(ParseStatus(b.Build()).message()),
              HasSubstr("metadata key 0 (\"x\"): unknown value type 13"));
  GgufBuilder n;
  n.AddRaw("nested", 9, GgufBuilder::Le(9, 4) + GgufBuilder::Le(1, 8));
  EXPECT_THAT(std::string(ParseStatus(n.Build()).message()), HasSubstr("arrays of arrays"));
  GgufBuilder d;
  d.AddU32("k", 1);
  d.AddU32("k", 2);
  EXPECT_THAT(std::string(ParseStatus(d.Build()).message()), HasSubstr("duplicate key"));
  GgufBuilder bo;
  bo.AddRaw("flag", 7, std::string(1, '\x02'));
  EXPECT_THAT(std::string(ParseStatus(bo.Build()).message()), HasSubstr("bool value 2"));
}

TEST(GgufTest, RejectsBadAlignment) {
  GgufBuilder b;
  b.AddU32("general.alignment", 48);
  EXPECT_THAT(std::string(ParseStatus(b.Build()).message()),
              HasSubstr("general.alignment 48 is not a power of two"));
  GgufBuilder t;
  t.AddI32("general.alignment", 32);
  EXPECT_THAT(std::string(ParseStatus(t.Build()).message()),
              HasSubstr("general.alignment must be a u32"));
}

TEST(GgufTest, RejectsBadTensorInfos) {
  GgufBuilder dims;
  dims.AddTensor({"w", {1, 1, 1, 1, 1}, kF32, std::string(4, 0)});
  EXPECT_THAT(std::string(ParseStatus(dims.Build()).message()),
              HasSubstr("tensor 0 (\"w\"): n_dims 5"));

  GgufBuilder huge_dims;
  huge_dims.AddTensor({"w", {uint64_t{1} << 63}, kF32, ""});
  EXPECT_THAT(std::string(ParseStatus(huge_dims.Build()).message()), HasSubstr("too large"));

  GgufBuilder overflow;
  overflow.AddTensor({"w", {uint64_t{1} << 40, uint64_t{1} << 40}, kF32, ""});
  EXPECT_THAT(std::string(ParseStatus(overflow.Build()).message()), HasSubstr("overflows"));

  GgufBuilder unknown;
  unknown.AddTensor({"w", {32}, 99, std::string(34, 0)});
  EXPECT_THAT(std::string(ParseStatus(unknown.Build()).message()),
              HasSubstr("tensor 0 (\"w\"): unknown ggml type 99"));

  GgufBuilder unsupported;
  unsupported.AddTensor({"w", {256}, 16, std::string(66, 0)});
  EXPECT_THAT(std::string(ParseStatus(unsupported.Build()).message()),
              HasSubstr("ggml type IQ2_XXS (16) is not supported"));

  GgufBuilder row;
  row.AddTensor({"w", {100, 2}, kQ4_K, std::string(144, 0)});
  EXPECT_THAT(std::string(ParseStatus(row.Build()).message()),
              HasSubstr("row length 100 is not a multiple of the Q4_K block size 256"));

  GgufBuilder dup;
  dup.AddTensor({"w", {8}, kF32, std::string(32, 0)});
  dup.AddTensor({"w", {8}, kF32, std::string(32, 0)});
  EXPECT_THAT(std::string(ParseStatus(dup.Build()).message()),
              HasSubstr("tensor 1 (\"w\"): duplicate name"));

  GgufBuilder unaligned;
  unaligned.AddTensor({"w", {8}, kF32, std::string(32, 0), 4});
  EXPECT_THAT(std::string(ParseStatus(unaligned.Build()).message()),
              HasSubstr("offset 4 is not a multiple of the alignment 32"));
}

TEST(GgufTest, RejectsTensorsPastEofAndOverlaps) {
  GgufBuilder past;
  past.AddTensor({"a", {8}, kF32, std::string(32, 0)});
  std::string bytes = past.Build();
  bytes.resize(bytes.size() - 32);  // the data section is gone
  EXPECT_THAT(std::string(ParseStatus(bytes).message()),
              HasSubstr("tensor \"a\": bytes [0, 32) of the data section run past the end"));

  GgufBuilder far;
  far.AddTensor({"a", {8}, kF32, std::string(32, 0), int64_t{1} << 40});
  EXPECT_THAT(std::string(ParseStatus(far.Build()).message()), HasSubstr("run past the end"));

  GgufBuilder overlap;
  overlap.AddTensor({"a", {16}, kF32, std::string(64, 0), 0});
  overlap.AddTensor({"b", {8}, kF32, std::string(32, 0), 32});
  EXPECT_THAT(std::string(ParseStatus(overlap.Build()).message()),
              HasSubstr("tensor \"b\" at [32, 64) overlaps tensor \"a\" at [0, 64)"));

  GgufBuilder trailing;
  trailing.AddTensor({"a", {8}, kF32, std::string(32, 0)});
  std::string extra = trailing.Build() + std::string(64, 0);
  EXPECT_THAT(std::string(ParseStatus(extra).message()), HasSubstr("after the last tensor"));
}

// Found by tests/fuzz/gguf_fuzzer.cc: a header with no tensors and no KVs that ends before
// the padding is valid, with an aligned data_offset past the end.
TEST(GgufTest, EmptyFileEndingBeforeThePadding) {
  std::string bytes = GgufBuilder().Build().substr(0, 26);
  absl::StatusOr<GgufFile> f = ParseGguf(bytes, "m.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->tensors.empty());
  EXPECT_EQ(f->data_offset % f->alignment, 0u);
}

TEST(GgufTest, NeverCrashesOnAnyPrefixOrByteFlip) {
  std::string bytes = ValidBuilder().Build();
  // Cutting only the last tensor's padding leaves a valid file.
  const GgufFile whole = ParseGguf(bytes, "m.gguf").value();
  const size_t data_end = whole.data_offset + whole.tensors[1].offset + whole.tensors[1].size;
  for (size_t cut = 0; cut < data_end; ++cut) {
    EXPECT_FALSE(ParseGguf(bytes.substr(0, cut), "m.gguf").ok()) << cut;
  }
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string flipped = bytes;
    flipped[i] = static_cast<char>(flipped[i] ^ 0xFF);
    (void)ParseGguf(flipped, "m.gguf");  // any status, no crash (ASan build checks)
  }
}

}  // namespace
}  // namespace loadstar::store
