// The README's "Using it" block, run top to bottom as written (only the port differs), with
// the built `loadstar` first on PATH and a small OPT-shaped checkpoint as ./opt-125m. If the
// README and the CLI drift apart, this fails.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "base/env.h"
#include "tests/deploy/process.h"
#include "tests/util/checkpoint_builder.h"
#include "tests/util/test_util.h"

namespace loadstar {
namespace {

// The first ```sh block after the heading `## Using it`.
std::string UsingItBlock() {
  std::ifstream in(std::string(LOADSTAR_SOURCE_DIR) + "/README.md");
  std::stringstream text;
  text << in.rdbuf();
  std::string readme = text.str();
  size_t section = readme.find("\n## Using it\n");
  if (section == std::string::npos) return "";
  size_t start = readme.find("```sh\n", section);
  if (start == std::string::npos) return "";
  start += 6;
  size_t end = readme.find("```", start);
  return readme.substr(start, end - start);
}

TEST(ReadmeTest, UsingItRunsTopToBottom) {
  std::string block = UsingItBlock();
  ASSERT_FALSE(block.empty()) << "README.md has no ```sh block under ## Using it";
  const std::string port = std::to_string(testing::FreePort());
  for (size_t at; (at = block.find("127.0.0.1:7070")) != std::string::npos;) {
    block.replace(at, 14, "127.0.0.1:" + port);
  }
  testing::TempDir dir;
  testing::CheckpointBuilder opt;
  opt.Add("model.decoder.embed_tokens.weight", DType::kF16, {512, 256})
      .Add("model.decoder.layers.0.self_attn.q_proj.weight", DType::kF16, {256, 256})
      .Add("model.decoder.layers.0.self_attn.q_proj.bias", DType::kF16, {256})
      .Add("model.decoder.layers.0.fc1.weight", DType::kF16, {1024, 256})
      .Add("model.decoder.layers.0.fc2.weight", DType::kF16, {256, 1024})
      .Add("model.decoder.final_layer_norm.weight", DType::kF16, {256})
      .Config(R"({"model_type": "opt", "torch_dtype": "float16"})")
      .ExtraFile("tokenizer.json", "{}");
  ASSERT_TRUE(opt.Write(dir.Join("opt-125m")).ok());
  ASSERT_TRUE(WriteFileAtomically(Env::Default(), dir.Join("using-it.sh"), block).ok());
  // A failed step must not leave the cluster behind: stop every job on exit. The trap's
  // text is quoted so that $(jobs -p) runs at exit (in double quotes it ran when the trap
  // was set, before any job existed, and a failed step left `loadstar up` holding the
  // output pipe: the test hung).
  std::string command = "cd '" + dir.path() + "' && PATH='" + DirName(testing::LoadstarBinary()) +
                        "':$PATH bash -c 'set -euo pipefail; trap '\\''kill $(jobs -p) "
                        "2>/dev/null || true'\\'' EXIT; source ./using-it.sh' 2>&1";
  testing::CommandResult r = testing::RunShell(command);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("updated opt-125m"));
  EXPECT_THAT(r.output, ::testing::HasSubstr("deleted opt-125m-nf4"));
}

}  // namespace
}  // namespace loadstar
