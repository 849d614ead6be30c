// Warm scale-out end to end (issue 8 item 1): one worker process, a deployment whose
// second instance is created by load (target 1 lease per instance) while the first is
// resident: the worker copies it device-to-device (tier device_copy, reported in the
// status JSON and the instance handle) and the copy serves the checkpoint's bytes.
#include <gtest/gtest.h>

#include <cstdio>

#include "daemon/rpc_util.h"
#include "loadstar/v1/worker.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/deploy/cluster_test.h"
#include "tests/deploy/process.h"

namespace loadstar {
namespace {

namespace v1 = loadstar::v1;
using testing::CliResult;
using testing::Eventually;

class WarmScaleOutTest : public testing::ClusterTest {};

TEST_F(WarmScaleOutTest, SecondInstanceOnOneWorkerIsADeviceCopy) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  auto worker = StartWorker(addr, "w1");
  ASSERT_TRUE(Eventually([&] { return WorkersRegistered(addr, 1); }));
  CliResult deploy = Cli(addr, {"deploy", "--model", "org/tiny", "--min-instances", "1",
                                "--max-instances", "2", "--target", "1", "--keep-alive", "60"});
  ASSERT_EQ(deploy.exit_code, 0) << deploy.err;
  auto ready = [&](size_t n) {
    nlohmann::json instances = Instances(addr);
    size_t count = 0;
    for (const auto& i : instances) count += i.value("state", "") == "ready";
    return count == n;
  };
  ASSERT_TRUE(Eventually([&] { return ready(1); }, 20));
  // Two leases at target 1: the autoscaler wants a second instance.
  std::vector<std::string> leases;
  for (int i = 0; i < 2; ++i) {
    CliResult a = Cli(addr, {"acquire", "org/tiny", "--timeout", "30", "-o", "json"});
    ASSERT_EQ(a.exit_code, 0) << a.err;
    leases.push_back(nlohmann::json::parse(a.out)["lease_id"]);
  }
  ASSERT_TRUE(Eventually([&] { return ready(2); }, 30)) << Status(addr).dump();
  nlohmann::json instances = Instances(addr);
  std::map<std::string, nlohmann::json> by_tier;
  for (const auto& i : instances) by_tier[i.value("tier", "")] = i;
  ASSERT_TRUE(by_tier.contains("disk")) << instances.dump();
  ASSERT_TRUE(by_tier.contains("device_copy")) << instances.dump();
  const nlohmann::json& copy = by_tier["device_copy"];
  EXPECT_GT(copy.value("gbps", 0.0), 0);
  std::printf("warm scale-out: disk load %.4f s (%.2f GB/s), device copy %.4f s (%.2f GB/s)\n",
              by_tier["disk"].value("load_seconds", 0.0), by_tier["disk"].value("gbps", 0.0),
              copy.value("load_seconds", 0.0), copy.value("gbps", 0.0));

  // The worker's handle says the same, and the copy holds the checkpoint's bytes.
  auto stub = v1::Worker::NewStub(daemon::MakeChannel(copy["worker_address"]));
  grpc::ClientContext ctx;
  v1::InstanceRequest req;
  req.set_instance_id(copy["instance_id"]);
  v1::InstanceHandle handle;
  ASSERT_TRUE(stub->GetInstance(&ctx, req, &handle).ok());
  EXPECT_EQ(handle.tier(), "device_copy");
  EXPECT_EQ(handle.copied_from(), by_tier["disk"]["instance_id"].get<std::string>());
  for (const v1::TensorInfo& t : handle.tensors()) {
    grpc::ClientContext rctx;
    v1::ReadTensorRequest r;
    r.set_instance_id(req.instance_id());
    r.set_tensor(t.name());
    auto reader = stub->ReadTensor(&rctx, r);
    std::string bytes;
    v1::TensorChunk chunk;
    while (reader->Read(&chunk)) bytes += chunk.data();
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_TRUE(bytes == builder_.Bytes(t.name())) << t.name();
  }
  for (const std::string& l : leases) EXPECT_EQ(Cli(addr, {"release", l}).exit_code, 0);
}

}  // namespace
}  // namespace loadstar
