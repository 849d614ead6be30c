// Controller over in-process fake workers and a ManualClock: cold/warm acquire,
// keep-alive scale to zero, lease expiry, lost workers, restart recovery, delete during a
// load, and the errors clients see.
#include "daemon/controller.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "tests/daemon/controller_fixture.h"
#include "tests/daemon/fake_worker_client.h"
#include "tests/util/test_util.h"

namespace loadstar::daemon {
namespace {

using ::testing::HasSubstr;
using testing::ControllerTest;
using testing::Eventually;
using testing::FakeWorkers;
using testing::MiB;

TEST_F(ControllerTest, ColdThenWarmAcquireThenScaleToZero) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {target: 2, keep_alive: 10}\n").ok());
  EXPECT_EQ(c->GetDeployment("m")->instances_size(), 0);  // min 0: nothing loaded yet

  auto first = c->Acquire("m", 30, Deadline());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->cold_start());
  EXPECT_EQ(first->instance().state(), "ready");
  EXPECT_EQ(first->instance().worker_id(), "w1");
  auto second = c->Acquire("m", 30, Deadline());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->cold_start());
  EXPECT_EQ(second->instance().instance_id(), first->instance().instance_id());
  EXPECT_EQ(w->loader->live_instances(), 1);

  ASSERT_TRUE(c->Release(first->lease_id()).ok());
  ASSERT_TRUE(c->Release(second->lease_id()).ok());
  Pass(*c, 5);
  EXPECT_EQ(c->GetDeployment("m")->instances_size(), 1);  // idle, but within keep_alive
  Pass(*c, 6);
  EXPECT_EQ(c->GetDeployment("m")->instances_size(), 0);
  EXPECT_TRUE(Eventually([&] { return w->loader->live_instances() == 0; }));
  EXPECT_EQ(w->loader->used(0) + w->loader->used(1), 0u);
}

TEST_F(ControllerTest, ScalesOutPastTargetUpToMax) {
  auto c = Make();
  AddWorker(*c, "w1");
  ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {target: 1, max_instances: 2}\n").ok());
  auto a = c->Acquire("m", 30, Deadline());
  auto b = c->Acquire("m", 30, Deadline());
  auto d = c->Acquire("m", 30, Deadline());  // at max: shares the least-leased instance
  ASSERT_TRUE(a.ok() && b.ok() && d.ok());
  EXPECT_NE(a->instance().instance_id(), b->instance().instance_id());
  EXPECT_EQ(c->GetDeployment("m")->instances_size(), 2);
  // The two instances went to different devices.
  EXPECT_NE(a->instance().devices(0), b->instance().devices(0));
}

TEST_F(ControllerTest, ExpiredLeaseIsReclaimed) {
  auto c = Make();
  AddWorker(*c, "w1");
  ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {keep_alive: 0}\n").ok());
  auto lease = c->Acquire("m", 5, Deadline());
  ASSERT_TRUE(lease.ok());
  Pass(*c, 3);
  ASSERT_TRUE(c->RenewLease(lease->lease_id()).ok());
  Pass(*c, 3);
  EXPECT_EQ(c->GetDeployment("m")->instances(0).leases(), 1u);  // renewed: still held
  Pass(*c, 3);  // expires the lease; the instance is now idle past keep_alive 0
  EXPECT_EQ(c->RenewLease(lease->lease_id()).status().code(), absl::StatusCode::kNotFound);
  c->Tick();
  EXPECT_EQ(c->GetDeployment("m")->instances_size(), 0);
}

TEST_F(ControllerTest, LostWorkerInstancesAreRescheduled) {
  auto c = Make();
  FakeWorkers::Node* w1 = AddWorker(*c, "w1");
  ASSERT_TRUE(c->Deploy("model: m\nplacement_config: {memory_pool: [w1, w2]}\n"
                        "auto_scaling_config: {min_instances: 1}\n").ok());
  ASSERT_TRUE(Eventually([&] {
    auto d = c->GetDeployment("m");
    return d->instances_size() == 1 && d->instances(0).state() == "ready";
  }));
  std::vector<std::string> messages;
  std::atomic<bool> watching{false};
  std::thread watcher([&] {
    c->WatchDeployment("m", [&](const loadstar::v1::DeploymentEvent& e) {
      watching = true;  // the first call replays the current instances
      if (e.state() == "failed") messages.push_back(e.message());
      return messages.empty();
    }).IgnoreError();
  });
  ASSERT_TRUE(Eventually([&] { return watching.load(); }));
  AddWorker(*c, "w2");
  w1->down = true;
  Pass(*c, 4);
  watcher.join();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0], "worker w1 lost with it; rescheduling");
  EXPECT_EQ(c->ListWorkers()[0].state(), "lost");
  ASSERT_TRUE(Eventually([&] {
    auto d = c->GetDeployment("m");
    return d->instances_size() == 1 && d->instances(0).worker_id() == "w2" &&
           d->instances(0).state() == "ready";
  }));
}

TEST_F(ControllerTest, OnlyLostWorkersIsNotNoWorkerRegistered) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  w->down = true;
  Pass(*c, 4);
  ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {min_instances: 1}\n").ok());
  c->Tick();
  EXPECT_THAT(c->GetDeployment("m")->message(), HasSubstr("no worker is alive"));
}

TEST_F(ControllerTest, RestartRecoversDeploymentsInstancesAndLeases) {
  loadstar::testing::TempDir dir;
  auto state = OpenSqliteStateStore(dir.Join("state.db"));
  ASSERT_TRUE(state.ok());
  std::string lease_id, instance_id;
  FakeWorkers::Node* w;
  {
    auto c = Make(state->get());
    w = AddWorker(*c, "w1");
    ASSERT_TRUE(c->Deploy("model: m\n").ok());
    auto lease = c->Acquire("m", 60, Deadline());
    ASSERT_TRUE(lease.ok());
    lease_id = lease->lease_id();
    instance_id = lease->instance().instance_id();
  }
  state->reset();
  auto reopened = OpenSqliteStateStore(dir.Join("state.db"));
  auto c = Make(reopened->get());
  auto d = c->GetDeployment("m");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->instances_size(), 1);
  EXPECT_EQ(d->instances(0).instance_id(), instance_id);
  EXPECT_EQ(d->instances(0).leases(), 1u);
  ASSERT_TRUE(c->RenewLease(lease_id).ok());
  // The worker still holds it: the first heartbeat confirms the instance.
  Heartbeat(*c, w);
  EXPECT_EQ(c->GetDeployment("m")->instances(0).state(), "ready");
  auto warm = c->Acquire("m", 60, Deadline());
  ASSERT_TRUE(warm.ok());
  EXPECT_FALSE(warm->cold_start());
}

TEST_F(ControllerTest, RecoveredInstanceMissingOnWorkerIsDropped) {
  loadstar::testing::TempDir dir;
  auto state = OpenSqliteStateStore(dir.Join("state.db"));
  FakeWorkers::Node* w;
  {
    auto c = Make(state->get());
    w = AddWorker(*c, "w1");
    ASSERT_TRUE(c->Deploy("model: m\n").ok());
    ASSERT_TRUE(c->Acquire("m", 60, Deadline()).ok());
  }
  // The worker restarted meanwhile and lost its memory.
  for (const auto& r : w->manager->Instances()) ASSERT_TRUE(w->manager->Unload(r.instance_id()).ok());
  auto c = Make(state->get());
  Heartbeat(*c, w);
  EXPECT_EQ(c->GetDeployment("m")->instances_size(), 0);
}

TEST_F(ControllerTest, DeleteDuringLoadCancelsItAndFreesMemory) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  w->loader->set_load_seconds(3);
  ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {min_instances: 1}\n").ok());
  ASSERT_TRUE(Eventually([&] { return w->loader->used(0) + w->loader->used(1) > 0; }));
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(c->Delete("m").ok());
  EXPECT_TRUE(Eventually([&] {
    return w->manager->Instances().empty() && w->loader->used(0) + w->loader->used(1) == 0;
  }));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(w->loader->live_instances(), 0);
  EXPECT_EQ(c->GetDeployment("m").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ControllerTest, ClearErrors) {
  auto c = Make();
  AddWorker(*c, "w1");
  auto bad = c->Deploy("model: m\nnum_gpus: 0\n");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("num_gpus"));
  auto unknown = c->Deploy("model: nope\n");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("'nope'"));
  auto too_many = c->Deploy("model: m\nnum_gpus: 4\n");
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(c->Acquire("ghost", 1, Deadline()).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(c->Deploy("model: m\n").ok());
  EXPECT_TRUE(c->Deploy("model: m\n").ok());  // same config: idempotent
  EXPECT_EQ(c->Deploy("model: m\nnum_gpus: 2\n").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(c->Release("lease-nope").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(c->Delete("ghost").code(), absl::StatusCode::kNotFound);
}

TEST_F(ControllerTest, FailedLoadIsReportedToTheWaitingAcquire) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  ASSERT_TRUE(c->Deploy("model: m\n").ok());
  // The model disappears from the worker's store after deploy.
  w->loader = nullptr;  // keep the node's manager pointing at a loader without "m"
  auto fresh = std::make_unique<testing::FakeInstanceLoader>(2, 100 * MiB);
  auto manager = std::make_unique<WorkerManager>("w1", "w1:1", fresh.get());
  w->manager.swap(manager);
  w->loader = std::move(fresh);
  auto lease = c->Acquire("m", 1, Deadline());
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(lease.status().message()), HasSubstr("loading 'm' on worker w1"));
}

TEST_F(ControllerTest, WatchStreamsProgressUntilDeleted) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  w->loader->set_load_seconds(0.2);
  ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {min_instances: 1}\n").ok());
  std::vector<std::string> states;
  std::thread deleter([&] {
    Eventually([&] {
      auto d = c->GetDeployment("m");
      return d.ok() && d->instances_size() == 1 && d->instances(0).state() == "ready";
    });
    c->Delete("m").IgnoreError();
  });
  absl::Status s = c->WatchDeployment("m", [&](const loadstar::v1::DeploymentEvent& e) {
    if (e.state() != "watching") states.push_back(e.state());
    return true;
  });
  deleter.join();
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(states, ::testing::Contains("ready"));
  EXPECT_EQ(states.back(), "deleted");
}

// SPEC §3.5: an instance's memory is never freed while a lease on it is live.
TEST_F(ControllerTest, DeleteWhileLeasedWaitsForTheLastRelease) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {keep_alive: 0}\n").ok());
  auto a = c->Acquire("m", 30, Deadline());
  auto b = c->Acquire("m", 30, Deadline());
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(c->Delete("m").ok());
  EXPECT_EQ(c->GetDeployment("m").status().code(), absl::StatusCode::kNotFound);
  Pass(*c, 3);
  // Still loaded: two consumers are attached to its memory.
  EXPECT_EQ(w->loader->live_instances(), 1);
  ASSERT_TRUE(c->RenewLease(a->lease_id()).ok());
  ASSERT_TRUE(c->Release(a->lease_id()).ok());
  Pass(*c, 2);
  EXPECT_EQ(w->loader->live_instances(), 1);
  ASSERT_TRUE(c->Release(b->lease_id()).ok());
  EXPECT_TRUE(Eventually([&] { return w->loader->live_instances() == 0; }));
  // A new deployment of the same name loads afresh.
  ASSERT_TRUE(c->Deploy("model: m\n").ok());
  auto fresh = c->Acquire("m", 30, Deadline());
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_TRUE(fresh->cold_start());
  EXPECT_NE(fresh->instance().instance_id(), a->instance().instance_id());
}

TEST_F(ControllerTest, DeletedLeasedInstanceUnloadsWhenTheLeaseExpires) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  ASSERT_TRUE(c->Deploy("model: m\n").ok());
  auto lease = c->Acquire("m", 4, Deadline());
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(c->Delete("m").ok());
  Pass(*c, 2);
  EXPECT_EQ(w->loader->live_instances(), 1);
  EXPECT_TRUE(c->GetLease(lease->lease_id()).ok());
  Pass(*c, 4);  // the consumer stopped renewing
  EXPECT_EQ(c->GetLease(lease->lease_id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Eventually([&] { return w->loader->live_instances() == 0; }));
}

TEST_F(ControllerTest, DrainingInstanceSurvivesARestart) {
  loadstar::testing::TempDir dir;
  auto state = OpenSqliteStateStore(dir.Join("state.db"));
  ASSERT_TRUE(state.ok());
  FakeWorkers::Node* w;
  std::string lease_id;
  {
    auto c = Make(state->get());
    w = AddWorker(*c, "w1");
    ASSERT_TRUE(c->Deploy("model: m\n").ok());
    auto lease = c->Acquire("m", 60, Deadline());
    ASSERT_TRUE(lease.ok());
    lease_id = lease->lease_id();
    ASSERT_TRUE(c->Delete("m").ok());
  }
  auto c = Make(state->get());
  Heartbeat(*c, w);
  c->Tick();
  // The recovered controller neither drops the leased memory nor serves it again.
  EXPECT_EQ(w->loader->live_instances(), 1);
  EXPECT_EQ(c->GetDeployment("m").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(c->Release(lease_id).ok());
  EXPECT_TRUE(Eventually([&] { return w->loader->live_instances() == 0; }));
}

TEST_F(ControllerTest, GetLeaseDoesNotRenew) {
  auto c = Make();
  AddWorker(*c, "w1");
  ASSERT_TRUE(c->Deploy("model: m\n").ok());
  auto lease = c->Acquire("m", 3, Deadline());
  ASSERT_TRUE(lease.ok());
  Pass(*c, 2);
  auto got = c->GetLease(lease->lease_id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->expires_unix_ms(), lease->expires_unix_ms());
  EXPECT_EQ(got->instance().instance_id(), lease->instance().instance_id());
  Pass(*c, 2);
  EXPECT_EQ(c->GetLease(lease->lease_id()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ControllerTest, ReplicasSpreadOverWorkers) {
  auto c = Make();
  FakeWorkers::Node* w1 = AddWorker(*c, "w1");
  FakeWorkers::Node* w2 = AddWorker(*c, "w2");
  ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {target: 1, max_instances: 4}\n").ok());
  std::vector<std::string> leases;
  for (int i = 0; i < 4; ++i) {
    auto lease = c->Acquire("m", 30, Deadline());
    ASSERT_TRUE(lease.ok()) << lease.status();
    leases.push_back(lease->lease_id());
  }
  EXPECT_EQ(w1->manager->Instances().size(), 2u);
  EXPECT_EQ(w2->manager->Instances().size(), 2u);
}

TEST_F(ControllerTest, OneModelUnderSeveralNames) {
  auto c = Make();
  AddWorker(*c, "w1");
  ASSERT_TRUE(c->Deploy("model: m\n").ok());
  auto nf4 = c->Deploy("name: m-nf4\nmodel: m\nquantization: nf4\n");
  ASSERT_TRUE(nf4.ok()) << nf4.status();
  EXPECT_EQ(nf4->name(), "m-nf4");
  EXPECT_EQ(nf4->model(), "m");
  auto a = c->Acquire("m", 30, Deadline());
  auto b = c->Acquire("m-nf4", 30, Deadline());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->instance().instance_id(), b->instance().instance_id());
  EXPECT_EQ(b->instance().quantization(), "nf4-bs64");
  EXPECT_EQ(a->instance().quantization(), "none");
  EXPECT_EQ(c->Deploy("name: ../x\nmodel: m\n").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ControllerTest, UpdateRollsWithoutDroppingBelowMinInstances) {
  auto c = Make();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {min_instances: 1, max_instances: 2}\n").ok());
  ASSERT_TRUE(Eventually([&] { return c->GetDeployment("m")->instances(0).state() == "ready"; }));
  std::string old_id = c->GetDeployment("m")->instances(0).instance_id();
  const std::string next =
      "model: m\nquantization: int8\nauto_scaling_config: {min_instances: 1, max_instances: 2}\n";
  auto refused = c->Deploy(next);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("loadstar update m"));

  w->loader->set_load_seconds(0.3);
  ASSERT_TRUE(c->Deploy(next, /*replace=*/true).ok());
  // While the new instance loads, the old one keeps serving.
  auto during = c->Acquire("m", 30, Deadline());
  ASSERT_TRUE(during.ok());
  EXPECT_EQ(during->instance().instance_id(), old_id);
  EXPECT_TRUE(during->instance().outdated());
  ASSERT_TRUE(Eventually([&] {
    c->Tick();
    auto d = c->GetDeployment("m");
    int ready_new = 0;
    for (const auto& i : d->instances()) ready_new += !i.outdated() && i.state() == "ready";
    return ready_new == 1;
  }));
  c->Tick();
  // The leased old instance stays until released; new acquires get the new config.
  EXPECT_EQ(c->GetDeployment("m")->instances_size(), 2);
  auto after = c->Acquire("m", 30, Deadline());
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->instance().outdated());
  EXPECT_EQ(after->instance().quantization(), "int8");
  ASSERT_TRUE(c->Release(during->lease_id()).ok());
  c->Tick();
  ASSERT_TRUE(Eventually([&] { return w->loader->live_instances() == 1; }));
  auto d = c->GetDeployment("m");
  ASSERT_EQ(d->instances_size(), 1);
  EXPECT_NE(d->instances(0).instance_id(), old_id);
}

TEST_F(ControllerTest, UpdatedConfigSurvivesARestart) {
  loadstar::testing::TempDir dir;
  auto state = OpenSqliteStateStore(dir.Join("state.db"));
  ASSERT_TRUE(state.ok());
  FakeWorkers::Node* w;
  {
    auto c = Make(state->get());
    w = AddWorker(*c, "w1");
    ASSERT_TRUE(c->Deploy("model: m\nauto_scaling_config: {min_instances: 1}\n").ok());
    ASSERT_TRUE(Eventually([&] { return c->GetDeployment("m")->instances(0).state() == "ready"; }));
    w->loader->set_load_seconds(5);  // the new instance is still loading when we stop
    ASSERT_TRUE(c->Deploy("model: m\nquantization: nf4\nauto_scaling_config: {min_instances: 1}\n",
                          true).ok());
  }
  auto c = Make(state->get());
  auto d = c->GetDeployment("m");
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(d->config_yaml(), HasSubstr("nf4"));
  bool old_outdated = false;
  for (const auto& i : d->instances()) old_outdated |= i.outdated() && i.state() == "ready";
  EXPECT_TRUE(old_outdated);  // the roll goes on after the restart
}

}  // namespace
}  // namespace loadstar::daemon
