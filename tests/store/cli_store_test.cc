// `loadstar store ...` end to end through the built binary ($LOADSTAR_BIN, set by ctest).
#include <unistd.h>

#include <cstdio>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "base/env.h"
#include "nlohmann/json.hpp"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/gguf_builder.h"
#include "tests/util/test_util.h"

namespace loadstar::store {
namespace {

using ::loadstar::testing::CheckpointBuilder;
using ::loadstar::testing::TempDir;
using ::testing::HasSubstr;

using Result = ::loadstar::testing::CommandResult;

Result RunCli(const std::string& args) { return ::loadstar::testing::RunLoadstar(args); }

class CliStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(loadstar::testing::LoadstarBinary().c_str(), X_OK) != 0) {
      GTEST_SKIP() << "loadstar binary not found (run through ctest, which sets LOADSTAR_BIN)";
    }
    CheckpointBuilder builder;
    builder.Add("model.embed.weight", DType::kF16, {32, 8}).Add("model.norm", DType::kF32, {8});
    ASSERT_TRUE(builder.Write(dir_.Join("src")).ok());
    flags_ = " --store " + dir_.Join("store");
  }

  TempDir dir_;
  std::string flags_;
};

TEST_F(CliStoreTest, SaveListInspectVerifyRemove) {
  Result saved = RunCli("store save " + dir_.Join("src") + " --name org/m" + flags_);
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  EXPECT_THAT(saved.output, HasSubstr("saved org/m: 2 tensors"));

  Result listed = RunCli("store ls -o json" + flags_);
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  nlohmann::json models = nlohmann::json::parse(listed.stdout_only);
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0]["name"], "org/m");
  EXPECT_EQ(models[0]["bytes"], 544);

  Result inspected = RunCli("store inspect org/m -o json" + flags_);
  ASSERT_EQ(inspected.exit_code, 0) << inspected.output;
  nlohmann::json manifest = nlohmann::json::parse(inspected.stdout_only);
  EXPECT_EQ(manifest["tensors"][0]["name"], "model.embed.weight");
  EXPECT_EQ(manifest["tensors"][0]["shape"], nlohmann::json({32, 8}));
  Result text = RunCli("store inspect org/m" + flags_);
  EXPECT_THAT(text.output, HasSubstr("model.norm"));

  Result verified = RunCli("store verify org/m" + flags_);
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  EXPECT_THAT(verified.output, HasSubstr("org/m: OK"));

  Result removed = RunCli("store rm org/m" + flags_);
  EXPECT_EQ(removed.exit_code, 0) << removed.output;
  EXPECT_EQ(RunCli("store inspect org/m" + flags_).exit_code, 1);
}

// `--quantize` values are written in the same pass as the copy; a key given twice is
// refused before anything is written.
TEST_F(CliStoreTest, SaveQuantizeWritesEveryVariantInOnePass) {
  Result twice = RunCli("store save " + dir_.Join("src") + " --name m --quantize nf4 "
                        "--quantize nf4-bs64" + flags_);
  EXPECT_NE(twice.exit_code, 0);
  EXPECT_THAT(twice.output, HasSubstr("variant nf4-bs64 of model m requested twice"));
  Result none = RunCli("store ls -o json" + flags_);
  ASSERT_EQ(none.exit_code, 0) << none.output;
  EXPECT_EQ(nlohmann::json::parse(none.stdout_only).size(), 0u);

  Result saved = RunCli("store save " + dir_.Join("src") + " --name m --quantize nf4 "
                        "--quantize int8" + flags_);
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  EXPECT_THAT(saved.output, HasSubstr("saved m: 2 tensors"));
  EXPECT_THAT(saved.output, HasSubstr("saved variant nf4-bs64 of m: 2 tensors"));
  EXPECT_THAT(saved.output, HasSubstr("saved variant int8 of m: 2 tensors"));
  Result listed = RunCli("store ls -o json" + flags_);
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  EXPECT_EQ(nlohmann::json::parse(listed.stdout_only)[0]["variants"],
            nlohmann::json({"int8", "nf4-bs64"}));
  EXPECT_EQ(RunCli("store verify m" + flags_).exit_code, 0);
}

TEST_F(CliStoreTest, ErrorsAreOneLineAndNonZero) {
  Result bad_name = RunCli("store save " + dir_.Join("src") + " --name ../evil" + flags_);
  EXPECT_EQ(bad_name.exit_code, 2);
  EXPECT_EQ(bad_name.output.find('\n'), bad_name.output.size() - 1) << bad_name.output;
  EXPECT_THAT(bad_name.output, HasSubstr("loadstar: invalid model name \"../evil\""));

  Result missing = RunCli("store verify nope" + flags_);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.output, HasSubstr("loadstar: model nope not found"));

  Result not_hf = RunCli("store save " + dir_.Join("nowhere") + " --name x" + flags_);
  EXPECT_NE(not_hf.exit_code, 0);
  EXPECT_THAT(not_hf.output, HasSubstr("not a directory"));
}

TEST_F(CliStoreTest, VerifyFailsOnCorruption) {
  ASSERT_EQ(RunCli("store save " + dir_.Join("src") + " --name m" + flags_).exit_code, 0);
  std::string data = dir_.Join("store/m/data-00000.bin");
  FILE* file = std::fopen(data.c_str(), "r+b");
  ASSERT_NE(file, nullptr);
  std::fseek(file, 5, SEEK_SET);
  int c = std::fgetc(file);
  std::fseek(file, 5, SEEK_SET);
  std::fputc(c ^ 0xFF, file);
  std::fclose(file);
  Result verified = RunCli("store verify m" + flags_);
  EXPECT_EQ(verified.exit_code, 1);
  EXPECT_THAT(verified.output, HasSubstr("checksum mismatch"));
}

// A GGUF file through the CLI: `store save` takes it, `load` serves it keep / none / nf4,
// and `--quantize` (a stored variant) is refused for it before anything is written.
TEST_F(CliStoreTest, GgufSaveAndLoadEachQuantization) {
  const std::string gguf = dir_.Join("tiny.gguf");
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), gguf,
                                  ::loadstar::testing::TinyLlamaGguf().Build()).ok());
  Result refused = RunCli("store save " + gguf + " --name g --quantize nf4" + flags_);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.output, HasSubstr("is a GGUF file, already quantized"));

  Result saved = RunCli("store save " + gguf + " --name org/tiny" + flags_);
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  EXPECT_THAT(saved.output, HasSubstr("saved org/tiny: 12 tensors"));
  ASSERT_EQ(RunCli("store verify org/tiny" + flags_).exit_code, 0);

  // Elements of the tiny llama: embeddings and head 11 x 256, q/o 256 x 256, k/v 128 x 256,
  // gate/up/down 512 x 256 each, three norms of 256.
  const uint64_t elems = 2 * 11 * 256 + 2 * 256 * 256 + 2 * 128 * 256 + 3 * 512 * 256 + 3 * 256;
  Result keep = RunCli("load org/tiny --devices host:1 --quantization keep -o json" + flags_);
  ASSERT_EQ(keep.exit_code, 0) << keep.output;
  nlohmann::json k = nlohmann::json::parse(keep.stdout_only);
  EXPECT_EQ(k["quantization"], "keep");
  EXPECT_EQ(k["quantized_bytes"], k["bytes"]);  // the packed bytes as stored

  Result none = RunCli("load org/tiny --devices host:1 --torch-dtype float32 -o json" + flags_);
  ASSERT_EQ(none.exit_code, 0) << none.output;
  EXPECT_EQ(nlohmann::json::parse(none.stdout_only)["quantized_bytes"], elems * 4);

  Result nf4 = RunCli("load org/tiny --devices host:1 --quantization nf4 -o json" + flags_);
  ASSERT_EQ(nf4.exit_code, 0) << nf4.output;
  nlohmann::json n = nlohmann::json::parse(nf4.stdout_only);
  EXPECT_EQ(n["quantization"], "nf4-bs64");
  EXPECT_LT(n["quantized_bytes"].get<uint64_t>(), elems * 2);
}

}  // namespace
}  // namespace loadstar::store
