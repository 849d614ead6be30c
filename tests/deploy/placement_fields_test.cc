// End to end (issue 8 item 3): a {layer-prefix: gpu} device_map and max_memory reach the
// worker through LoadSpec, the instance reaches ready on a host:4 worker, and
// `loadstar instance -o json` shows on which device each tensor went.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "nlohmann/json.hpp"
#include "tests/deploy/cluster_test.h"
#include "tests/deploy/process.h"

namespace loadstar {
namespace {

using ::testing::HasSubstr;
using testing::CliResult;
using testing::Eventually;

class PlacementFieldsTest : public testing::ClusterTest {
 protected:
  // Deploys `yaml` (waiting for ready) and returns tensor name -> device of its instance.
  std::map<std::string, int> DeployAndPlace(const std::string& addr, const std::string& yaml) {
    std::string path = dir_.Join("deploy.yaml");
    std::ofstream(path) << yaml;
    CliResult r = Cli(addr, {"deploy", "--config", path, "--wait-seconds", "30"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    nlohmann::json instances = Instances(addr);
    if (instances.size() != 1) {
      ADD_FAILURE() << "instances: " << instances.dump();
      return {};
    }
    EXPECT_EQ(instances[0]["state"], "ready");
    CliResult shown = Cli(addr, {"instance", instances[0]["instance_id"], "-o", "json"});
    EXPECT_EQ(shown.exit_code, 0) << shown.err;
    nlohmann::json handle = nlohmann::json::parse(shown.out, nullptr, false);
    std::map<std::string, int> device;
    for (const auto& t : handle["tensors"]) device[t["name"]] = t["device"].get<int>();
    EXPECT_EQ(handle["devices"].size(), 4u);
    return device;
  }
};

TEST_F(PlacementFieldsTest, LayerMapAndMaxMemoryReachTheWorker) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  testing::Daemon worker({"--log-level", "info", "worker", "--controller", addr, "--store",
                          store_dir_, "--devices", "host:4", "--device-memory", "64MiB", "--id",
                          "w1"},
                         dir_.Join("daemons.log"));
  ASSERT_TRUE(worker.ok());
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 1); }));

  // Longest prefix wins: up_proj has its own entry, down_proj falls under the layer.
  std::map<std::string, int> custom = DeployAndPlace(addr,
      "model: org/tiny\nnum_gpus: 4\nauto_scaling_config: {min_instances: 1}\n"
      "backend_config:\n"
      "  device_map: {model.embed_tokens: 0, model.layers.0.mlp.up_proj: 1, model.layers.0: 2,"
      " model.norm: 3}\n");
  EXPECT_EQ(custom["model.embed_tokens.weight"], 0);
  EXPECT_EQ(custom["model.layers.0.mlp.up_proj.weight"], 1);
  EXPECT_EQ(custom["model.layers.0.mlp.down_proj.weight"], 2);
  EXPECT_EQ(custom["model.norm.weight"], 3);
  ASSERT_EQ(Cli(addr, {"delete", "org/tiny"}).exit_code, 0);
  ASSERT_TRUE(Eventually([&] { return Instances(addr).empty(); }, 8));

  // auto + max_memory fills in order within the caps: the 512 KiB embeddings fill GPU 0's
  // 600 KiB, the 2 MiB block and the norm go to GPU 1.
  std::map<std::string, int> capped = DeployAndPlace(addr,
      "model: org/tiny\nnum_gpus: 4\nauto_scaling_config: {min_instances: 1}\n"
      "backend_config:\n  device_map: auto\n  max_memory: {0: 600KiB, 1: 3MiB}\n");
  EXPECT_EQ(capped["model.embed_tokens.weight"], 0);
  EXPECT_EQ(capped["model.layers.0.mlp.up_proj.weight"], 1);
  EXPECT_EQ(capped["model.layers.0.mlp.down_proj.weight"], 1);
  EXPECT_EQ(capped["model.norm.weight"], 1);
  ASSERT_EQ(Cli(addr, {"delete", "org/tiny"}).exit_code, 0);
  ASSERT_TRUE(Eventually([&] { return Instances(addr).empty(); }, 8));

  // A layer map that leaves a tensor uncovered fails the load, naming the tensor.
  std::string path = dir_.Join("bad.yaml");
  std::ofstream(path) << "model: org/tiny\nnum_gpus: 2\nauto_scaling_config: {min_instances: 1}\n"
                         "backend_config:\n  device_map: {model.layers: 0, model.embed_tokens: 1}\n";
  CliResult bad = Cli(addr, {"deploy", "--config", path, "--wait-seconds", "30"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.out + bad.err, HasSubstr("'model.norm.weight' is covered by no prefix"));
}

}  // namespace
}  // namespace loadstar
