#include "store/hf_checkpoint.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/safetensors_writer.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

using ::loadstar::testing::CheckpointBuilder;
using ::loadstar::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class HfCheckpointTest : public ::testing::Test {
 protected:
  // A 3-shard checkpoint of 6 tensors, written to dir_/src.
  std::string WriteSharded() {
    builder_.Shards(3);
    for (int i = 0; i < 6; ++i) builder_.Add("t" + std::to_string(i), DType::kBF16, {4, 4});
    EXPECT_TRUE(builder_.Write(src()).ok());
    return src();
  }
  std::string src() const { return dir_.Join("src"); }
  void WriteIndex(const std::string& weight_map_json) {
    ASSERT_TRUE(WriteFileAtomically(Env::Default(), src() + "/model.safetensors.index.json",
                                    R"({"metadata":{},"weight_map":)" + weight_map_json + "}")
                    .ok());
  }
  std::string Error() {
    absl::StatusOr<HfCheckpoint> opened = OpenHfCheckpoint(Env::Default(), src());
    EXPECT_FALSE(opened.ok());
    return std::string(opened.status().message());
  }

  TempDir dir_;
  CheckpointBuilder builder_;
};

TEST_F(HfCheckpointTest, OpensSingleFile) {
  builder_.Add("w", DType::kF16, {2, 2}).ExtraFile("generation_config.json", "{}");
  ASSERT_TRUE(builder_.Write(src()).ok());
  absl::StatusOr<HfCheckpoint> checkpoint = OpenHfCheckpoint(Env::Default(), src());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ASSERT_EQ(checkpoint->shards.size(), 1u);
  EXPECT_EQ(checkpoint->TensorCount(), 1u);
  EXPECT_EQ(checkpoint->TotalBytes(), 8u);
  EXPECT_THAT(checkpoint->extra_files, ElementsAre("config.json", "generation_config.json"));
}

// SPEC §4: the small non-weight files are kept, sentence-transformers modules included;
// weights in any other format and hidden files are not.
TEST_F(HfCheckpointTest, KeepsEveryNonWeightFileOneLevelDeep) {
  builder_.Add("w", DType::kF16, {2, 2})
      .ExtraFile("tokenizer.json", "{}")
      .ExtraFile("modules.json", "[]")
      .ExtraFile("1_Pooling/config.json", "{}")
      .ExtraFile("README.md", "# m")
      .ExtraFile("pytorch_model.bin", "weights")
      .ExtraFile("onnx/model.onnx", "weights")
      .ExtraFile("tf_model.h5", "weights")
      .ExtraFile(".gitattributes", "*.bin lfs")
      .ExtraFile("a/b/deep.json", "{}")
      .ExtraFile("bad name.txt", "?");
  ASSERT_TRUE(builder_.Write(src()).ok());
  absl::StatusOr<HfCheckpoint> checkpoint = OpenHfCheckpoint(Env::Default(), src());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_THAT(checkpoint->extra_files,
              ElementsAre("1_Pooling/config.json", "README.md", "config.json", "modules.json",
                          "tokenizer.json"));
}

TEST_F(HfCheckpointTest, RefusesMoreThan64MiBOfNonWeightFiles) {
  builder_.Add("w", DType::kF16, {2, 2})
      .ExtraFile("notes.txt", std::string(40 << 20, 'n'))
      .ExtraFile("1_Dense/big.json", std::string(30 << 20, 'j'));
  ASSERT_TRUE(builder_.Write(src()).ok());
  std::string error = Error();
  EXPECT_THAT(error, HasSubstr("64 MiB"));
  EXPECT_THAT(error, HasSubstr("largest: notes.txt"));
}

TEST_F(HfCheckpointTest, OpensSharded) {
  WriteSharded();
  absl::StatusOr<HfCheckpoint> checkpoint = OpenHfCheckpoint(Env::Default(), src());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ASSERT_EQ(checkpoint->shards.size(), 3u);
  EXPECT_THAT(checkpoint->shards[1].path, HasSubstr("model-00002-of-00003.safetensors"));
  EXPECT_EQ(checkpoint->TensorCount(), 6u);
}

TEST_F(HfCheckpointTest, MissingConfig) {
  WriteSharded();
  ASSERT_TRUE(Env::Default()->RemoveFile(src() + "/config.json").ok());
  EXPECT_THAT(Error(), HasSubstr("no config.json"));
}

TEST_F(HfCheckpointTest, NoWeights) {
  ASSERT_TRUE(Env::Default()->CreateDirs(src()).ok());
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), src() + "/config.json", "{}").ok());
  EXPECT_THAT(Error(), HasSubstr("no model.safetensors and no model.safetensors.index.json"));
}

TEST_F(HfCheckpointTest, NotADirectory) {
  absl::StatusOr<HfCheckpoint> opened = OpenHfCheckpoint(Env::Default(), dir_.Join("none"));
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(HfCheckpointTest, ShardFileMissing) {
  WriteSharded();
  ASSERT_TRUE(Env::Default()->RemoveFile(src() + "/model-00002-of-00003.safetensors").ok());
  EXPECT_THAT(Error(), HasSubstr("shard model-00002-of-00003.safetensors named in "
                                 "model.safetensors.index.json does not exist"));
}

TEST_F(HfCheckpointTest, IndexTensorMissingFromShard) {
  WriteSharded();
  WriteIndex(R"({"t0":"model-00001-of-00003.safetensors","t1":"model-00001-of-00003.safetensors",
    "t2":"model-00002-of-00003.safetensors","t3":"model-00002-of-00003.safetensors",
    "t4":"model-00003-of-00003.safetensors","t5":"model-00003-of-00003.safetensors",
    "ghost":"model-00003-of-00003.safetensors"})");
  EXPECT_THAT(Error(), HasSubstr("tensor \"ghost\" is listed in model.safetensors.index.json "
                                 "but missing from shard model-00003-of-00003.safetensors"));
}

TEST_F(HfCheckpointTest, ShardTensorMissingFromIndex) {
  WriteSharded();
  WriteIndex(R"({"t0":"model-00001-of-00003.safetensors","t1":"model-00001-of-00003.safetensors",
    "t2":"model-00002-of-00003.safetensors","t3":"model-00002-of-00003.safetensors",
    "t4":"model-00003-of-00003.safetensors"})");
  EXPECT_THAT(Error(), HasSubstr("tensor \"t5\" is in shard model-00003-of-00003.safetensors "
                                 "but not in model.safetensors.index.json"));
}

TEST_F(HfCheckpointTest, IndexPointsToWrongShard) {
  WriteSharded();
  WriteIndex(R"({"t0":"model-00001-of-00003.safetensors","t1":"model-00002-of-00003.safetensors",
    "t2":"model-00002-of-00003.safetensors","t3":"model-00002-of-00003.safetensors",
    "t4":"model-00003-of-00003.safetensors","t5":"model-00003-of-00003.safetensors"})");
  EXPECT_THAT(Error(), HasSubstr("tensor \"t1\" is in shard model-00001-of-00003.safetensors "
                                 "but model.safetensors.index.json puts it in "
                                 "model-00002-of-00003.safetensors"));
}

TEST_F(HfCheckpointTest, DuplicateTensorAcrossShards) {
  WriteSharded();
  // Rewrite shard 2 so it also holds t0.
  std::vector<TensorInput> tensors;
  tensors.push_back(TensorInput::FromBytes({"t0", DType::kU8, {1}}, "x"));
  tensors.push_back(TensorInput::FromBytes({"t2", DType::kU8, {1}}, "x"));
  tensors.push_back(TensorInput::FromBytes({"t3", DType::kU8, {1}}, "x"));
  ASSERT_TRUE(WriteSafetensors(Env::Default(), src() + "/model-00002-of-00003.safetensors",
                               std::move(tensors))
                  .ok());
  EXPECT_THAT(Error(), HasSubstr("tensor \"t0\" appears in two shards, "
                                 "model-00001-of-00003.safetensors and "
                                 "model-00002-of-00003.safetensors"));
}

TEST_F(HfCheckpointTest, IndexWithTraversalShardName) {
  WriteSharded();
  WriteIndex(R"({"t0":"../evil.safetensors"})");
  EXPECT_THAT(Error(), HasSubstr("tensor \"t0\": shard \"../evil.safetensors\" is not a plain "
                                 "file name"));
}

TEST_F(HfCheckpointTest, MalformedIndex) {
  WriteSharded();
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), src() + "/model.safetensors.index.json",
                                  R"({"weight_map": []})")
                  .ok());
  EXPECT_THAT(Error(), HasSubstr("expected an object with a \"weight_map\" object"));
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), src() + "/model.safetensors.index.json",
                                  "{oops")
                  .ok());
  EXPECT_THAT(Error(), HasSubstr("not valid JSON"));
}

TEST_F(HfCheckpointTest, InvalidShardNamesFileAndTensor) {
  WriteSharded();
  std::string shard = src() + "/model-00003-of-00003.safetensors";
  std::string bytes = ReadFileToString(Env::Default(), shard).value();
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), shard, bytes + "junk").ok());
  std::string error = Error();
  EXPECT_THAT(error, HasSubstr(shard));
  EXPECT_THAT(error, HasSubstr("last tensor \"t5\""));
}

}  // namespace
}  // namespace loadstar::store
