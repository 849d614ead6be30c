// End to end (issue 8 item 3): a {layer-prefix: gpu} device_map and max_memory reach the
// worker through LoadSpec, the instance reaches ready on a host:4 worker, and
// `loadstar instance -o json` shows on which device each tensor went.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

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
  // Starts a host:4 worker on the test's store and waits for it to register.
  std::unique_ptr<testing::Daemon> StartHost4Worker(const std::string& addr) {
    auto worker = std::make_unique<testing::Daemon>(
        std::vector<std::string>{"--log-level", "info", "worker", "--controller", addr, "--store",
                                 store_dir_, "--devices", "host:4", "--device-memory", "64MiB",
                                 "--id", "w1"},
        dir_.Join("daemons.log"));
    EXPECT_TRUE(worker->ok());
    EXPECT_TRUE(Eventually([&] { return WorkersRegistered(addr, 1); }));
    return worker;
  }

  // Deploys `yaml` (waiting for ready) and returns tensor name -> the devices holding it
  // (one each, or every shard's under tensor_parallel) in `loadstar instance -o json`.
  std::map<std::string, std::set<int>> DeployAndShard(const std::string& addr,
                                                      const std::string& yaml) {
    std::string path = dir_.Join("deploy.yaml");
    std::ofstream(path) << yaml;
    CliResult r = Cli(addr, {"deploy", "--config", path, "--wait-seconds", "30"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    nlohmann::json instances = Instances(addr);
    if (instances.size() != 1 || instances[0]["state"] != "ready") {
      ADD_FAILURE() << "instances: " << instances.dump();
      return {};
    }
    CliResult shown = Cli(addr, {"instance", instances[0]["instance_id"], "-o", "json"});
    EXPECT_EQ(shown.exit_code, 0) << shown.err;
    nlohmann::json handle = nlohmann::json::parse(shown.out, nullptr, false);
    EXPECT_EQ(handle["devices"].size(), 4u);
    std::map<std::string, std::set<int>> devices;
    for (const auto& t : handle["tensors"]) devices[t["name"]].insert(t["device"].get<int>());
    return devices;
  }

  // As DeployAndShard for a placement that puts each tensor on one device.
  std::map<std::string, int> DeployAndPlace(const std::string& addr, const std::string& yaml) {
    std::map<std::string, int> device;
    for (const auto& [name, on] : DeployAndShard(addr, yaml)) {
      EXPECT_EQ(on.size(), 1u) << name;
      device[name] = *on.begin();
    }
    return device;
  }
};

TEST_F(PlacementFieldsTest, LayerMapAndMaxMemoryReachTheWorker) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  auto worker = StartHost4Worker(addr);
  ASSERT_TRUE(worker->ok());

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

  // tensor_parallel, unquantized and nf4: every weight is sharded over the 4 devices.
  for (const char* quantization : {"", "quantization: nf4\n"}) {
    std::map<std::string, std::set<int>> shards = DeployAndShard(addr,
        std::string("model: org/tiny\nnum_gpus: 4\nauto_scaling_config: {min_instances: 1}\n"
                    "backend_config: {device_map: tensor_parallel}\n") + quantization);
    EXPECT_EQ(shards["model.layers.0.mlp.up_proj.weight"], (std::set<int>{0, 1, 2, 3}))
        << quantization;
    EXPECT_EQ(shards["model.layers.0.mlp.down_proj.weight"], (std::set<int>{0, 1, 2, 3}))
        << quantization;
    ASSERT_EQ(Cli(addr, {"delete", "org/tiny"}).exit_code, 0);
    ASSERT_TRUE(Eventually([&] { return Instances(addr).empty(); }, 8));
  }
}

// What the worker's plan refuses is refused at Deploy (issue 8 items 3 and 5), with the
// key path or the tensor, and nothing is deployed.
TEST_F(PlacementFieldsTest, ConfigsThePlanRefusesAreRefusedAtDeploy) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  auto worker = StartHost4Worker(addr);
  ASSERT_TRUE(worker->ok());
  const std::string head = "model: org/tiny\nauto_scaling_config: {min_instances: 1}\n";
  const std::vector<std::pair<std::string, std::string>> refused = {
      // A layer map that leaves a tensor uncovered.
      {"num_gpus: 2\nbackend_config:\n  device_map: {model.layers: 0, model.embed_tokens: 1}\n",
       "'model.norm.weight' is covered by no prefix"},
      // Caps below what the plan puts on the devices.
      {"num_gpus: 2\nbackend_config:\n  device_map: auto\n  max_memory: {0: 64KiB, 1: 64KiB}\n",
       "backend_config.max_memory"},
      // 256 vocab rows do not split over 3 devices.
      {"num_gpus: 3\nbackend_config: {device_map: tensor_parallel}\n"
       "quantization: nf4\n",
       "model.embed_tokens.weight dim 0 (256) does not divide into 3 shards"},
  };
  for (const auto& [config, reason] : refused) {
    std::string path = dir_.Join("bad.yaml");
    std::ofstream(path) << head << config;
    CliResult bad = Cli(addr, {"deploy", "--config", path, "--wait-seconds", "30"});
    EXPECT_NE(bad.exit_code, 0) << config;
    EXPECT_THAT(bad.out + bad.err, HasSubstr(reason)) << config;
    EXPECT_THAT(bad.out + bad.err, HasSubstr("deployment 'org/tiny' cannot load")) << config;
    nlohmann::json status = Status(addr);
    EXPECT_TRUE(!status.contains("deployments") || status["deployments"].empty())
        << config << status.dump();
  }
}

}  // namespace
}  // namespace loadstar
