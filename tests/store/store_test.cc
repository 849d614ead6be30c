#include "store/store.h"

#include <fstream>
#include <string>

#include <fmt/format.h>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/checksum.h"
#include "store/model_writer.h"
#include "tests/store/store_test_util.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

using ::loadstar::testing::CheckpointBuilder;
using ::loadstar::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Store>> opened = Store::Open({.root = dir_.Join("store")});
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(opened).value();
  }

  // Writes `builder` under a fresh source dir and returns its path.
  std::string WriteSource(const CheckpointBuilder& builder, const std::string& name = "src") {
    std::string src = dir_.Join(name);
    absl::Status status = builder.Write(src);
    EXPECT_TRUE(status.ok()) << status;
    return src;
  }

  void ExpectSameTensors(const CheckpointBuilder& builder, const Manifest& manifest) {
    ASSERT_EQ(manifest.tensors.size(), builder.tensors().size());
    for (const auto& tensor : builder.tensors()) {
      const ManifestTensor* entry = manifest.Find(tensor.name);
      ASSERT_NE(entry, nullptr) << tensor.name;
      EXPECT_EQ(entry->dtype, tensor.dtype) << tensor.name;
      EXPECT_EQ(entry->shape, tensor.shape) << tensor.name;
      EXPECT_EQ(entry->offset % kTensorAlignment, 0u) << tensor.name;
      EXPECT_EQ(entry->checksums, ChunkChecksums(tensor.bytes)) << tensor.name;
      EXPECT_EQ(ReadStoredTensor(*store_, manifest, tensor.name), tensor.bytes) << tensor.name;
    }
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, SaveRoundTripsEveryDtypeIncludingEmptyAndScalar) {
  CheckpointBuilder builder;
  const DType dtypes[] = {DType::kBool, DType::kU8,     DType::kI8,     DType::kI16,
                          DType::kU16,  DType::kI32,    DType::kU32,    DType::kI64,
                          DType::kU64,  DType::kF8E4M3, DType::kF8E5M2, DType::kF16,
                          DType::kBF16, DType::kF32,    DType::kF64};
  for (DType dtype : dtypes) {
    std::string base(DTypeName(dtype));
    builder.Add(base + ".matrix", dtype, {3, 5});
    builder.Add(base + ".scalar", dtype, {});
    builder.Add(base + ".empty", dtype, {0, 4});
  }
  std::string src = WriteSource(builder);
  absl::StatusOr<Manifest> saved = store_->Save(src, "all-dtypes");
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->files, std::vector<std::string>{"data-00000.bin"});
  ExpectSameTensors(builder, *saved);

  absl::StatusOr<Manifest> read = store_->GetManifest("all-dtypes");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, *saved);
  EXPECT_TRUE(store_->Verify("all-dtypes").ok());
}

TEST_F(StoreTest, SaveShardedCheckpointWritesOneDataFilePerShard) {
  CheckpointBuilder builder;
  for (int i = 0; i < 7; ++i) {
    builder.Add("layers." + std::to_string(i) + ".weight", DType::kF16, {33, 17});
  }
  builder.Shards(3)
      .ExtraFile("tokenizer.json", R"({"model": {}})")
      .ExtraFile("1_Pooling/config.json", R"({"pooling_mode_mean_tokens": true})");
  std::string src = WriteSource(builder);
  absl::StatusOr<Manifest> saved = store_->Save(src, "org/sharded");
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_THAT(saved->files, ElementsAre("data-00000.bin", "data-00001.bin", "data-00002.bin"));
  EXPECT_THAT(saved->extra_files,
              ElementsAre("1_Pooling/config.json", "config.json", "tokenizer.json"));
  // The manifest with a nested kept file reads back.
  EXPECT_THAT(store_->GetManifest("org/sharded")->extra_files,
              ElementsAre("1_Pooling/config.json", "config.json", "tokenizer.json"));
  ExpectSameTensors(builder, *saved);
  absl::StatusOr<std::string> dir = store_->ModelDir("org/sharded");
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(ReadFileToString(Env::Default(), *dir + "/config.json").value(),
            ReadFileToString(Env::Default(), src + "/config.json").value());
  EXPECT_EQ(ReadFileToString(Env::Default(), *dir + "/tokenizer.json").value(),
            R"({"model": {}})");
  EXPECT_EQ(ReadFileToString(Env::Default(), *dir + "/1_Pooling/config.json").value(),
            R"({"pooling_mode_mean_tokens": true})");
}

TEST_F(StoreTest, ProgressReachesTotal) {
  CheckpointBuilder builder;
  builder.Add("a", DType::kF32, {100}).Add("b", DType::kF32, {50});
  uint64_t last_done = 0, last_total = 0;
  absl::StatusOr<Manifest> saved =
      store_->Save(WriteSource(builder), "m", [&](uint64_t done, uint64_t total, std::string_view) {
        EXPECT_GE(done, last_done);
        last_done = done;
        last_total = total;
      });
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(last_total, 600u);
  EXPECT_EQ(last_done, 600u);
}

TEST_F(StoreTest, SaveOverExistingNameFailsUnlessOverwrite) {
  CheckpointBuilder first(1), second(2);
  first.Add("w", DType::kF32, {4});
  second.Add("w", DType::kF32, {8});
  ASSERT_TRUE(store_->Save(WriteSource(first, "a"), "m").ok());
  absl::StatusOr<Manifest> again = store_->Save(WriteSource(second, "b"), "m");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("model m already exists"));
  absl::StatusOr<Manifest> replaced =
      store_->Save(dir_.Join("b"), "m", {}, SaveOptions{.overwrite = true});
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(store_->GetManifest("m")->Find("w")->shape, std::vector<int64_t>{8});
  EXPECT_EQ(Env::Default()->GetChildren(dir_.Join("store/.tmp")).value().size(), 0u);
}

TEST_F(StoreTest, RejectsBadNamesAndTraversal) {
  CheckpointBuilder builder;
  builder.Add("w", DType::kU8, {1});
  std::string src = WriteSource(builder);
  for (const char* bad : {"", ".", "..", "../x", "a/../../x", "a/b/c", "/abs", "a/", "/a",
                          ".tmp", "a/.hidden", "sp ace", "a\\b", "x/..", "é"}) {
    absl::StatusOr<Manifest> saved = store_->Save(src, bad);
    EXPECT_EQ(saved.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(saved.status().message()),
                HasSubstr(std::string("invalid model name \"") + bad + "\""));
    EXPECT_EQ(store_->GetManifest(bad).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Remove(bad).code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(store_->GetManifest("m", "../x").status().code(),
            absl::StatusCode::kInvalidArgument);
  for (const char* good : {"a", "A-b_c.1", "facebook/opt-125m", "x.y/z_w-1"}) {
    EXPECT_TRUE(store_->Save(src, good).ok()) << good;
  }
}

TEST_F(StoreTest, ModelAndNamespaceCannotCollide) {
  CheckpointBuilder builder;
  builder.Add("w", DType::kU8, {1});
  std::string src = WriteSource(builder);
  ASSERT_TRUE(store_->Save(src, "org").ok());
  EXPECT_THAT(std::string(store_->Save(src, "org/model").status().message()),
              HasSubstr("\"org\" is already a model"));
  ASSERT_TRUE(store_->Save(src, "team/model").ok());
  EXPECT_EQ(store_->Save(src, "team").status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(StoreTest, ListAndRemove) {
  CheckpointBuilder builder;
  builder.Add("w", DType::kF16, {8, 8}).Add("b", DType::kF16, {8});
  std::string src = WriteSource(builder);
  ASSERT_TRUE(store_->Save(src, "zeta").ok());
  ASSERT_TRUE(store_->Save(src, "org/alpha").ok());
  absl::StatusOr<std::vector<ModelInfo>> models = store_->List();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].name, "org/alpha");
  EXPECT_EQ((*models)[0].bytes, 144u);
  EXPECT_EQ((*models)[0].tensors, 2u);
  EXPECT_EQ((*models)[1].name, "zeta");

  ASSERT_TRUE(store_->Remove("org/alpha").ok());
  EXPECT_EQ(store_->GetManifest("org/alpha").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Remove("org/alpha").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->List()->size(), 1u);
  EXPECT_EQ(Env::Default()->GetChildren(dir_.Join("store/.tmp")).value().size(), 0u);
}

TEST_F(StoreTest, GetManifestNotFound) {
  absl::StatusOr<Manifest> missing = store_->GetManifest("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("model nope not found"));
  CheckpointBuilder builder;
  builder.Add("w", DType::kU8, {1});
  ASSERT_TRUE(store_->Save(WriteSource(builder), "m").ok());
  EXPECT_EQ(store_->GetManifest("m", "nf4").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, DataFilePathRejectsOutOfRange) {
  Manifest manifest;
  manifest.name = "m";
  manifest.files = {"data-00000.bin"};
  EXPECT_EQ(store_->DataFilePath(manifest, 0).value(), dir_.Join("store/m/data-00000.bin"));
  EXPECT_EQ(store_->DataFilePath(manifest, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  manifest.variant = "int8";
  EXPECT_EQ(store_->DataFilePath(manifest, 0).value(),
            dir_.Join("store/m/variants/int8/data-00000.bin"));
}

TEST_F(StoreTest, VerifyDetectsCorruption) {
  CheckpointBuilder builder;
  builder.Add("first", DType::kF32, {1000}).Add("second", DType::kF32, {1000});
  ASSERT_TRUE(store_->Save(WriteSource(builder), "m").ok());
  ASSERT_TRUE(store_->Verify("m").ok());
  Manifest manifest = store_->GetManifest("m").value();
  const ManifestTensor* second = manifest.Find("second");
  std::string path = store_->DataFilePath(manifest, second->file).value();
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(second->offset + 10));
    file.put('\x5a' ^ builder.Bytes("second")[10]);
  }
  absl::Status status = store_->Verify("m");
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("tensor \"second\" in " + path + ": checksum mismatch in chunk 0"));
}

// A save larger than the writer's blocks (store/model_writer.h: several O_DIRECT blocks,
// written behind the filler, and an unaligned tail through the page cache): every byte
// lands, checksums match, and a byte flipped in the second block is caught by Verify.
TEST_F(StoreTest, SaveAcrossWriteBlocksKeepsEveryByteAndChecksum) {
  CheckpointBuilder builder(3);
  // 40 MiB + 3 KiB + a 1000-byte tail: the file ends off a 4 KiB boundary.
  builder.Add("big", DType::kF32, {10 << 20})
      .Add("odd", DType::kU8, {3 * 1024 + 5})
      .Add("last", DType::kF32, {250});
  auto manifest = store_->Save(WriteSource(builder), "m");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ExpectSameTensors(builder, *manifest);
  std::string path = store_->DataFilePath(*manifest, 0).value();
  const ManifestTensor* last = manifest->Find("last");
  EXPECT_EQ(Env::Default()->GetFileSize(path).value(), last->offset + last->size);
  ASSERT_TRUE(store_->Verify("m").ok());
  const ManifestTensor* big = manifest->Find("big");
  const uint64_t at = kWriteBlockBytes + 12345;  // inside the second write block
  ASSERT_LT(at, big->size);
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(big->offset + at));
    file.put(static_cast<char>(builder.Bytes("big")[at] ^ 0x01));
  }
  absl::Status status = store_->Verify("m");
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr(fmt::format("tensor \"big\" in {}: checksum mismatch in chunk {}", path,
                                    at / kChecksumChunkBytes)));
}

TEST_F(StoreTest, TruncatedDataFileIsDataLoss) {
  CheckpointBuilder builder;
  builder.Add("w", DType::kF32, {1000});
  Manifest manifest = store_->Save(WriteSource(builder), "m").value();
  std::string path = store_->DataFilePath(manifest, 0).value();
  ASSERT_EQ(::truncate(path.c_str(), 100), 0);
  absl::StatusOr<Manifest> read = store_->GetManifest("m");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("is 100 bytes, tensors need 4000"));
}

TEST_F(StoreTest, CorruptManifestIsReported) {
  CheckpointBuilder builder;
  builder.Add("w", DType::kF32, {4});
  ASSERT_TRUE(store_->Save(WriteSource(builder), "m").ok());
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), dir_.Join("store/m/manifest.json"), "{").ok());
  absl::StatusOr<Manifest> read = store_->GetManifest("m");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("manifest.json: not valid JSON"));
}

TEST_F(StoreTest, OpenClearsTempEntriesOfDeadProcesses) {
  std::string stale = dir_.Join("store/.tmp/999999999-0-save");
  ASSERT_TRUE(Env::Default()->CreateDirs(stale).ok());
  ASSERT_TRUE(Store::Open({.root = dir_.Join("store")}).ok());
  EXPECT_FALSE(Env::Default()->FileExists(stale));
}

}  // namespace
}  // namespace loadstar::store
