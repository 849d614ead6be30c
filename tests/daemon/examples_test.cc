// Every YAML example shipped in deploy/examples/ parses.
#include <gtest/gtest.h>

#include <filesystem>

#include "base/env.h"
#include "daemon/cluster_config.h"
#include "daemon/deployment_config.h"

namespace loadstar::daemon {
namespace {

TEST(ExamplesTest, AllParse) {
  std::string dir = std::string(LOADSTAR_SOURCE_DIR) + "/deploy/examples";
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".yaml") continue;
    auto text = ReadFileToString(Env::Default(), entry.path().string());
    ASSERT_TRUE(text.ok()) << name;
    absl::Status s;
    if (name == "controller.yaml") {
      s = ParseControllerConfig(*text).status();
    } else if (name == "worker.yaml") {
      s = ParseWorkerConfig(*text).status();
    } else {
      s = ParseDeploymentConfig(*text).status();
    }
    EXPECT_TRUE(s.ok()) << name << ": " << s;
    ++n;
  }
  EXPECT_GE(n, 5);
}

}  // namespace
}  // namespace loadstar::daemon
