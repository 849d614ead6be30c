#include <cstdio>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/checksum.h"
#include "store/store.h"
#include "tests/store/store_test_util.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

using ::loadstar::testing::CheckpointBuilder;
using ::loadstar::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

VariantSpec Spec(const std::string& model, const std::string& key, bool overwrite = false) {
  VariantSpec spec;
  spec.model = model;
  spec.key = key;
  spec.overwrite = overwrite;
  return spec;
}

class VariantTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = Store::Open({.root = dir_.Join("store")}).value();
    CheckpointBuilder builder;
    builder.Add("w", DType::kF16, {64, 64});
    ASSERT_TRUE(builder.Write(dir_.Join("src")).ok());
    ASSERT_TRUE(store_->Save(dir_.Join("src"), "org/m").ok());
  }

  // A tensor streamed in pieces: byte i is (i * 7) mod 251.
  static TensorInput Streamed(const std::string& name, int64_t bytes) {
    TensorInput input;
    input.spec = {name, DType::kU8, {bytes}};
    input.fill = [](uint64_t offset, char* dst, size_t n) {
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<char>(((offset + i) * 7) % 251);
      return absl::OkStatus();
    };
    return input;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(VariantTest, WritesListsReadsAndVerifies) {
  std::vector<TensorInput> tensors;
  tensors.push_back(Streamed("w.weight", 5000));
  tensors.push_back(TensorInput::FromBytes({"w.absmax", DType::kF32, {2}}, "12345678"));
  tensors.push_back(TensorInput::FromBytes({"w.empty", DType::kF32, {0}}, ""));
  VariantSpec spec{.model = "org/m", .key = "nf4-bs64-dq",
                   .quantization_json = R"({"quant_type":"nf4"})"};
  absl::StatusOr<Manifest> written = store_->WriteVariant(spec, std::move(tensors));
  ASSERT_TRUE(written.ok()) << written.status();

  absl::StatusOr<Manifest> read = store_->GetManifest("org/m", "nf4-bs64-dq");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, *written);
  EXPECT_EQ(read->variant, "nf4-bs64-dq");
  EXPECT_EQ(read->quantization_json, R"({"quant_type":"nf4"})");
  ASSERT_EQ(read->tensors.size(), 3u);
  EXPECT_EQ(read->tensors[0].name, "w.weight");  // written in the given order
  EXPECT_EQ(read->tensors[1].offset, 8192u);     // 4 KiB-aligned after 5000 bytes
  std::string expected(5000, '\0');
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = static_cast<char>((i * 7) % 251);
  EXPECT_EQ(ReadStoredTensor(*store_, *read, "w.weight"), expected);
  EXPECT_EQ(ReadStoredTensor(*store_, *read, "w.absmax"), "12345678");
  EXPECT_EQ(store_->DataFilePath(*read, 0).value(),
            dir_.Join("store/org/m/variants/nf4-bs64-dq/data-00000.bin"));

  EXPECT_THAT(store_->List().value()[0].variants, ElementsAre("nf4-bs64-dq"));
  EXPECT_TRUE(store_->Verify("org/m").ok());
  // The original is untouched.
  EXPECT_EQ(store_->GetManifest("org/m")->tensors.size(), 1u);
}

TEST_F(VariantTest, VerifyCoversVariants) {
  std::vector<TensorInput> tensors;
  tensors.push_back(Streamed("q", 100));
  ASSERT_TRUE(store_->WriteVariant(Spec("org/m", "int8"), std::move(tensors)).ok());
  std::string path = dir_.Join("store/org/m/variants/int8/data-00000.bin");
  std::string bytes = ReadFileToString(Env::Default(), path).value();
  bytes[3] ^= 1;
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), path, bytes).ok());
  absl::Status status = store_->Verify("org/m");
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("model org/m variant int8: tensor \"q\" in " + path));
}

TEST_F(VariantTest, ExistingVariantNeedsOverwrite) {
  std::vector<TensorInput> first;
  first.push_back(Streamed("q", 10));
  ASSERT_TRUE(store_->WriteVariant(Spec("org/m", "int8"), std::move(first)).ok());
  std::vector<TensorInput> second;
  second.push_back(Streamed("q", 20));
  EXPECT_EQ(store_->WriteVariant(Spec("org/m", "int8"), std::move(second))
                .status()
                .code(),
            absl::StatusCode::kAlreadyExists);
  std::vector<TensorInput> third;
  third.push_back(Streamed("q", 30));
  ASSERT_TRUE(store_->WriteVariant(Spec("org/m", "int8", /*overwrite=*/true),
                                   std::move(third))
                  .ok());
  EXPECT_EQ(store_->GetManifest("org/m", "int8")->tensors[0].size, 30u);
  ASSERT_TRUE(store_->RemoveVariant("org/m", "int8").ok());
  EXPECT_EQ(store_->GetManifest("org/m", "int8").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(VariantTest, Errors) {
  EXPECT_EQ(store_->WriteVariant(Spec("other", "int8"), {}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->WriteVariant(Spec("org/m", "../x"), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<TensorInput> dup;
  dup.push_back(Streamed("q", 1));
  dup.push_back(Streamed("q", 1));
  EXPECT_THAT(std::string(store_->WriteVariant(Spec("org/m", "k"), std::move(dup))
                              .status()
                              .message()),
              HasSubstr("tensor \"q\" appears twice"));
  std::vector<TensorInput> failing;
  failing.push_back(Streamed("q", 10));
  failing[0].fill = [](uint64_t, char*, size_t) { return absl::CancelledError("stop"); };
  EXPECT_EQ(store_->WriteVariant(Spec("org/m", "k"), std::move(failing))
                .status()
                .code(),
            absl::StatusCode::kCancelled);
  EXPECT_TRUE(Env::Default()->GetChildren(dir_.Join("store/.tmp")).value().empty());
}

TEST_F(VariantTest, TensorsLargerThanAChunkGetOneChecksumPerChunk) {
  const int64_t size = static_cast<int64_t>(kChecksumChunkBytes) + 100;
  std::vector<TensorInput> tensors;
  tensors.push_back(Streamed("big", size));
  ASSERT_TRUE(store_->WriteVariant(Spec("org/m", "big"), std::move(tensors)).ok());
  Manifest manifest = store_->GetManifest("org/m", "big").value();
  const ManifestTensor& big = manifest.tensors[0];
  ASSERT_EQ(big.checksums.size(), 2u);
  std::string bytes = ReadStoredTensor(*store_, manifest, "big");
  EXPECT_EQ(big.checksums, ChunkChecksums(bytes));
  EXPECT_EQ(big.checksums[1], Checksum(std::string_view(bytes).substr(kChecksumChunkBytes)));

  // Corrupt a byte of the second chunk: Verify names chunk 1.
  std::string path = store_->DataFilePath(manifest, 0).value();
  FILE* file = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(file, nullptr);
  std::fseek(file, static_cast<long>(big.offset + kChecksumChunkBytes + 50), SEEK_SET);
  std::fputc(bytes[kChecksumChunkBytes + 50] ^ 1, file);
  std::fclose(file);
  EXPECT_THAT(std::string(store_->Verify("org/m").message()),
              HasSubstr("checksum mismatch in chunk 1"));
}

TEST(GroupBySizeTest, SplitsWithoutSplittingTensors) {
  std::vector<TensorInput> tensors;
  for (int i = 0; i < 5; ++i) {
    tensors.push_back(TensorInput::FromBytes({"t" + std::to_string(i), DType::kU8, {5000}},
                                             std::string(5000, 'x')));
  }
  auto groups = GroupBySize(std::move(tensors), 16384);  // two aligned tensors per file
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0].size(), 2u);
  EXPECT_EQ(groups[2].size(), 1u);
}

}  // namespace
}  // namespace loadstar::store
