// The fuzzers' seed corpora (tests/fuzz/corpus/) are valid inputs: if a format change
// makes a seed invalid, this fails here rather than silently weakening the fuzzers.
#include <string>

#include "gtest/gtest.h"
#include "base/env.h"
#include "store/manifest.h"
#include "store/gguf.h"
#include "store/safetensors.h"

namespace loadstar::store {
namespace {

std::vector<std::string> Seeds(const std::string& fuzzer) {
  std::string dir = std::string(LOADSTAR_SOURCE_DIR) + "/tests/fuzz/corpus/" + fuzzer;
  std::vector<std::string> paths;
  absl::StatusOr<std::vector<std::string>> names = Env::Default()->GetChildren(dir);
  if (!names.ok()) return paths;
  for (const std::string& name : *names) {
    paths.push_back(dir + "/" + name);
  }
  return paths;
}

TEST(FuzzCorpusTest, SafetensorsSeedsAreValid) {
  std::vector<std::string> seeds = Seeds("safetensors_fuzzer");
  ASSERT_FALSE(seeds.empty());
  for (const std::string& path : seeds) {
    EXPECT_TRUE(ReadSafetensors(Env::Default(), path).ok()) << path;
  }
}

TEST(FuzzCorpusTest, ManifestSeedsAreValid) {
  std::vector<std::string> seeds = Seeds("manifest_fuzzer");
  ASSERT_FALSE(seeds.empty());
  for (const std::string& path : seeds) {
    absl::StatusOr<Manifest> manifest =
        ParseManifest(ReadFileToString(Env::Default(), path).value(), path);
    EXPECT_TRUE(manifest.ok()) << manifest.status();
  }
}

TEST(FuzzCorpusTest, GgufSeedsAreValid) {
  std::vector<std::string> seeds = Seeds("gguf_fuzzer");
  ASSERT_FALSE(seeds.empty());
  for (const std::string& path : seeds) {
    absl::StatusOr<GgufFile> file = ReadGguf(Env::Default(), path);
    EXPECT_TRUE(file.ok()) << file.status();
  }
}

}  // namespace
}  // namespace loadstar::store
