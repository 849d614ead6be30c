// Quantization through the `loadstar` binary: `store save --quantize`, `store export`,
// `load --quantization` (reports, errors), and the exported checkpoints loaded by
// transformers + bitsandbytes (tests/data/check_export_transformers.py).
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/test_util.h"

namespace loadstar {
namespace {

using ::loadstar::testing::CheckpointBuilder;
using ::loadstar::testing::TempDir;
using ::testing::HasSubstr;

using Result = ::loadstar::testing::CommandResult;

Result Shell(const std::string& command) { return ::loadstar::testing::RunShell(command); }

Result RunCli(const std::string& args) { return ::loadstar::testing::RunLoadstar(args); }

int Lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

class QuantCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(loadstar::testing::LoadstarBinary().c_str(), X_OK) != 0) {
      GTEST_SKIP() << "loadstar binary not found (run through ctest, which sets LOADSTAR_BIN)";
    }
    CheckpointBuilder b;
    b.Add("model.embed_tokens.weight", DType::kF16, {64, 64})
        .Add("model.layers.0.self_attn.q_proj.weight", DType::kF16, {64, 64})
        .Add("model.layers.0.mlp.up_proj.weight", DType::kF32, {128, 64})
        .Add("model.norm.weight", DType::kF32, {64})
        .Add("lm_head.weight", DType::kF16, {64, 64});
    ASSERT_TRUE(b.Write(dir_.Join("src")).ok());
    store_ = " --store " + dir_.Join("store");
  }
  TempDir dir_;
  std::string store_;
};

TEST_F(QuantCliTest, SaveWithVariantsListInspectLoadExport) {
  Result saved = RunCli("store save " + dir_.Join("src") + " --name m --quantize nf4 " +
                        "--double-quant --quantize int8 --quantize fp4-bs128" + store_);
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  EXPECT_THAT(saved.output, HasSubstr("saved variant nf4-bs64-dq of m"));
  EXPECT_THAT(saved.output, HasSubstr("saved variant int8 of m"));
  EXPECT_THAT(saved.output, HasSubstr("saved variant fp4-bs128 of m"));
  Result listed = RunCli("store ls -o json" + store_);
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  nlohmann::json ls = nlohmann::json::parse(listed.stdout_only);
  EXPECT_EQ(ls[0]["variants"], nlohmann::json({"fp4-bs128", "int8", "nf4-bs64-dq"}));
  Result inspected = RunCli("store inspect m --variant nf4-bs64-dq" + store_);
  ASSERT_EQ(inspected.exit_code, 0) << inspected.output;
  EXPECT_THAT(inspected.output, HasSubstr("\"quant_method\":\"bitsandbytes\""));
  EXPECT_THAT(inspected.output, HasSubstr("model.layers.0.self_attn.q_proj.weight.absmax"));

  // load --quantization: from the artifact, or quantized while loading.
  for (const auto& [flags, source] :
       std::vector<std::pair<std::string, std::string>>{
           {"--quantization nf4 --double-quant", "artifact"},
           {"--quantization nf4-bs64-dq --no-artifact", "checkpoint"},
           {"--quantization nf4", "checkpoint"},  // no plain nf4-bs64 variant stored
           {"--quantization int8", "artifact"}}) {
    Result loaded = RunCli("load m --devices host:1 -o json " + flags + store_);
    ASSERT_EQ(loaded.exit_code, 0) << flags << ": " << loaded.output;
    nlohmann::json j = nlohmann::json::parse(loaded.stdout_only);
    EXPECT_EQ(j["source"], source) << flags;
    EXPECT_GT(j["quantized_bytes"].get<uint64_t>(), 0u);
    EXPECT_LT(j["quantized_bytes"].get<uint64_t>(), 64 * 64 * 2 * 3 + 128 * 64 * 4 + 64 * 4);
    for (const char* k : {"bytes", "seconds", "gbps", "tensors", "devices", "io"}) {
      EXPECT_TRUE(j.contains(k)) << k;
    }
  }
  Result plain = RunCli("load m --devices host:1 -o json" + store_);
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_FALSE(nlohmann::json::parse(plain.stdout_only).contains("quantized_bytes"));

  Result exported = RunCli("store export m --quantization nf4 --double-quant --out " +
                           dir_.Join("out") + " -o json" + store_);
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  nlohmann::json e = nlohmann::json::parse(exported.stdout_only);
  EXPECT_EQ(e["source"], "artifact");
  EXPECT_EQ(e["files"], nlohmann::json({"model.safetensors", "config.json"}));
  Result again = RunCli("store export m --quantization nf4 --double-quant --out " +
                        dir_.Join("out") + store_);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_THAT(again.output, HasSubstr("already exists"));
  Result fresh = RunCli("store export m --quantization fp4 --blocksize 256 --out " +
                        dir_.Join("out2") + store_);
  ASSERT_EQ(fresh.exit_code, 0) << fresh.output;
  EXPECT_THAT(fresh.output, HasSubstr("from checkpoint"));
}

TEST_F(QuantCliTest, BadFlagsFailWithOneLine) {
  ASSERT_EQ(RunCli("store save " + dir_.Join("src") + " --name m" + store_).exit_code, 0);
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"store save " + dir_.Join("src") + " --name m2 --quantize nf4 --blocksize 48",
            "--blocksize 48"},
           {"store save " + dir_.Join("src") + " --name m2 --quantize nf5", "nf5"},
           {"store save " + dir_.Join("src") + " --name m2 --quantize nf4-bs8192", "8192"},
           {"store save " + dir_.Join("src") + " --name m2 --quantize int8-dq", "int8-dq"},
           {"store export m --quantization nf4 --blocksize 100 --out " + dir_.Join("o"),
            "--blocksize 100"},
           {"store export m --quantization none --out " + dir_.Join("o"), "none"},
           {"store export nope --quantization nf4 --out " + dir_.Join("o"), "nope"},
           {"load m --devices host:1 --quantization nf4 --blocksize 4097", "--blocksize 4097"},
           {"load m --devices host:1 --quantization nf4 --torch-dtype float64", "float64"},
           {"load m --devices host:1 --quantization nf4 --variant int8", "--variant"}}) {
    Result r = RunCli(args + store_);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_EQ(Lines(r.output), 1) << args << ": " << r.output;
    EXPECT_THAT(r.output, HasSubstr(needle)) << args;
    EXPECT_THAT(r.output, HasSubstr("loadstar: ")) << args;
  }
  // Nothing was saved by the failed saves, nothing exported.
  EXPECT_FALSE(Shell("test -e " + dir_.Join("store/m2")).exit_code == 0);
  EXPECT_FALSE(Shell("test -e " + dir_.Join("o")).exit_code == 0);
}

// A python with torch, bitsandbytes and transformers: $LOADSTAR_PYTHON, the quant
// engineer's <source>/.venv-bnb, or <build>/pyenv.
std::string FindBnbPython() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("LOADSTAR_PYTHON")) candidates.push_back(env);
  candidates.push_back(std::string(LOADSTAR_SOURCE_DIR) + "/.venv-bnb/bin/python");
  candidates.push_back(std::string(LOADSTAR_BINARY_DIR) + "/pyenv/bin/python3");
  for (const std::string& python : candidates) {
    if (Shell("CUDA_VISIBLE_DEVICES= '" + python +
              "' -c 'import torch, bitsandbytes, transformers, safetensors' >/dev/null")
            .exit_code == 0) {
      return python;
    }
  }
  return "";
}

TEST_F(QuantCliTest, ExportLoadsInTransformers) {
  const std::string python = FindBnbPython();
  if (python.empty()) {
    GTEST_SKIP() << "no python with torch, bitsandbytes and transformers (set LOADSTAR_PYTHON "
                    "or create .venv-bnb)";
  }
  const std::string script =
      std::string(LOADSTAR_SOURCE_DIR) + "/tests/data/check_export_transformers.py";
  const std::string py = "CUDA_VISIBLE_DEVICES= '" + python + "' " + script;
  Result made = Shell(py + " make " + dir_.Join("llama"));
  ASSERT_EQ(made.exit_code, 0) << made.output;
  // nf4 double quant from a stored artifact; nf4, fp4 and int8 quantized while exporting.
  Result saved = RunCli("store save " + dir_.Join("llama") +
                        " --name tiny --quantize nf4-bs64-dq" + store_);
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  for (const std::string kind : {"nf4-bs64-dq", "nf4", "fp4", "int8"}) {
    SCOPED_TRACE(kind);
    const std::string out = dir_.Join("export-" + kind);
    Result exported = RunCli("store export tiny --quantization " + kind + " --out " + out + store_);
    ASSERT_EQ(exported.exit_code, 0) << exported.output;
    Result checked = Shell(py + " check " + dir_.Join("llama") + " " + out + " " + kind);
    EXPECT_EQ(checked.exit_code, 0) << checked.output;
    EXPECT_THAT(checked.output, HasSubstr("OK " + kind));
  }
}

}  // namespace
}  // namespace loadstar
