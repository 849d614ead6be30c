// A fixture for end-to-end tests on loopback: a store holding a small model
// ("org/tiny"), and helpers that start `loadstar controller` / `loadstar worker` processes
// and run CLI commands against them. Tests only.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "store/store.h"
#include "tests/deploy/process.h"
#include "tests/util/checkpoint_builder.h"

namespace loadstar::testing {

// Polls `pred` every 50 ms for up to `seconds`.
inline bool Eventually(const std::function<bool()>& pred, double seconds = 10) {
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_dir_ = dir_.Join("store");
    // A small model: 4 tensors, 3 MiB.
    builder_.Add("model.embed_tokens.weight", DType::kF16, {256, 1024})
        .Add("model.layers.0.mlp.up_proj.weight", DType::kF16, {512, 1024})
        .Add("model.layers.0.mlp.down_proj.weight", DType::kF16, {512, 1024})
        .Add("model.norm.weight", DType::kF32, {1024});
    ASSERT_TRUE(builder_.Write(dir_.Join("hf")).ok());
    auto store = store::Store::Open({store_dir_});
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Save(dir_.Join("hf"), "org/tiny").ok());
  }

  void TearDown() override {
    if (HasFailure()) {
      std::ifstream log(dir_.Join("daemons.log"));
      std::string text((std::istreambuf_iterator<char>(log)), {});
      std::fprintf(stderr, "---- daemon logs ----\n%s\n", text.c_str());
    }
  }

  std::unique_ptr<Daemon> StartController(const std::string& addr, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--log-level", "info", "controller", "--addr", addr,
                                     "--state", "sqlite:" + dir_.Join("state.db"),
                                     "--heartbeat-interval", "0.2", "--heartbeat-timeout", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto d = std::make_unique<Daemon>(args, dir_.Join("daemons.log"));
    EXPECT_TRUE(d->ok()) << "controller did not start";
    return d;
  }

  std::unique_ptr<Daemon> StartWorker(const std::string& controller, const std::string& id,
                                      std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--log-level", "info", "worker", "--controller", controller,
                                     "--store", store_dir_, "--devices", "host:2",
                                     "--device-memory", "256MiB", "--id", id};
    args.insert(args.end(), extra.begin(), extra.end());
    auto d = std::make_unique<Daemon>(args, dir_.Join("daemons.log"));
    EXPECT_TRUE(d->ok()) << "worker did not start";
    return d;
  }

  CliResult Cli(const std::string& addr, std::vector<std::string> args) {
    args.push_back("--addr");
    args.push_back(addr);
    return RunCli(args);
  }

  nlohmann::json Status(const std::string& addr) {
    CliResult r = Cli(addr, {"status", "-o", "json"});
    if (r.exit_code != 0) return nlohmann::json::object();
    return nlohmann::json::parse(r.out, nullptr, false);
  }

  // The instances of the first deployment in `status -o json`.
  nlohmann::json Instances(const std::string& addr) {
    nlohmann::json s = Status(addr);
    if (!s.contains("deployments") || s["deployments"].empty() ||
        !s["deployments"][0].contains("instances")) {
      return nlohmann::json::array();
    }
    return s["deployments"][0]["instances"];
  }

  bool WorkersRegistered(const std::string& addr, size_t n) {
    nlohmann::json s = Status(addr);
    return s.contains("workers") && s["workers"].size() == n;
  }

  loadstar::testing::TempDir dir_;
  std::string store_dir_;
  loadstar::testing::CheckpointBuilder builder_;
};

}  // namespace loadstar::testing
