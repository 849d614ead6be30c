// A real `loadstar controller --state sqlite:...` process killed with SIGKILL the moment
// it has answered OK keeps what it answered for: the answers come only after the state
// write is durable (SPEC §7). Deploys and Acquires are sent over gRPC back to back and the
// kill follows the last answer with no pause, so a write left queued behind an answer
// would be lost.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "loadstar/v1/controller.grpc.pb.h"
#include "tests/deploy/cluster_test.h"
#include "tests/deploy/process.h"

namespace loadstar {
namespace {

namespace v1 = loadstar::v1;

class ControllerCrashTest : public testing::ClusterTest {
 protected:
  void Connect(const std::string& addr) {
    stub_ = v1::Controller::NewStub(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  }

  void Context(grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  }

  grpc::Status Deploy(const std::string& yaml) {
    grpc::ClientContext ctx;
    Context(ctx);
    v1::DeployRequest req;
    req.set_config_yaml(yaml);
    v1::DeployResponse resp;
    return stub_->Deploy(&ctx, req, &resp);
  }

  std::set<std::string> DeploymentNames() {
    grpc::ClientContext ctx;
    Context(ctx);
    v1::ListDeploymentsResponse resp;
    std::set<std::string> names;
    if (!stub_->ListDeployments(&ctx, v1::ListDeploymentsRequest(), &resp).ok()) return names;
    for (const v1::Deployment& d : resp.deployments()) names.insert(d.name());
    return names;
  }

  size_t Workers() {
    grpc::ClientContext ctx;
    Context(ctx);
    v1::ListWorkersResponse resp;
    return stub_->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp).ok() ? resp.workers_size() : 0;
  }

  std::unique_ptr<v1::Controller::Stub> stub_;
};

TEST_F(ControllerCrashTest, KilledRightAfterOkAnswersKeepsDeploysAndLeases) {
  std::string addr = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto controller = StartController(addr);
  auto worker = StartWorker(addr, "w1");
  Connect(addr);
  ASSERT_TRUE(testing::Eventually([&] { return Workers() == 1; }));

  std::set<std::string> deployed;
  for (int i = 0; i < 10; ++i) {
    std::string name = "d" + std::to_string(i);
    grpc::Status s = Deploy("model: org/tiny\nname: " + name + "\n");
    ASSERT_TRUE(s.ok()) << s.error_message();
    deployed.insert(name);
  }
  controller->Stop(SIGKILL);
  controller = StartController(addr);
  Connect(addr);
  EXPECT_EQ(DeploymentNames(), deployed);

  grpc::Status s =
      Deploy("model: org/tiny\nname: leased\nauto_scaling_config: {min_instances: 1, target: 1000}\n");
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::vector<v1::Lease> leases;
  for (int i = 0; i < 20; ++i) {
    grpc::ClientContext ctx;
    Context(ctx);
    v1::AcquireRequest req;
    req.set_deployment("leased");
    req.set_ttl_seconds(300);
    v1::Lease lease;
    grpc::Status a = stub_->Acquire(&ctx, req, &lease);
    ASSERT_TRUE(a.ok()) << a.error_message();  // the first one waits for the cold start
    leases.push_back(lease);
  }
  controller->Stop(SIGKILL);
  controller = StartController(addr);
  Connect(addr);
  for (const v1::Lease& lease : leases) {
    grpc::ClientContext ctx;
    Context(ctx);
    v1::LeaseRequest req;
    req.set_lease_id(lease.lease_id());
    v1::Lease got;
    grpc::Status g = stub_->GetLease(&ctx, req, &got);
    ASSERT_TRUE(g.ok()) << lease.lease_id() << ": " << g.error_message();
    EXPECT_EQ(got.instance().instance_id(), lease.instance().instance_id());
    EXPECT_EQ(got.expires_unix_ms(), lease.expires_unix_ms());
  }
  grpc::ClientContext ctx;
  Context(ctx);
  v1::LeaseRequest req;
  req.set_lease_id(leases[0].lease_id());
  v1::ReleaseResponse resp;
  grpc::Status r = stub_->Release(&ctx, req, &resp);
  EXPECT_TRUE(r.ok()) << r.error_message();
}

}  // namespace
}  // namespace loadstar
