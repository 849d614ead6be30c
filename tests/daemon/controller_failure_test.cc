// Failing loads (issue 8 item 4): exponential backoff per deployment on the injected
// clock, the "failed" state after max_load_failures with the last error in the status and
// WatchDeployment, and what clears it (redeploy, a worker registering, the model changing
// in a worker's store).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "daemon/controller.h"
#include "tests/daemon/controller_fixture.h"

namespace loadstar::daemon {
namespace {

namespace v1 = loadstar::v1;
using ::testing::HasSubstr;
using testing::ControllerTest;
using testing::Eventually;
using testing::FakeWorkers;
using testing::MiB;

constexpr char kConfig[] = "model: m\nauto_scaling_config: {min_instances: 1}\n";

class ControllerFailureTest : public ControllerTest {
 protected:
  std::unique_ptr<Controller> MakeWithBackoff() {
    return Make(nullptr, [](ControllerOptions& o) {
      o.load_retry_backoff_seconds = 0.5;
      o.load_retry_backoff_max_seconds = 30;
      o.max_load_failures = 5;
    });
  }

  // Waits for the load_calls()-th load to have failed (its result applied).
  void WaitFailures(Controller& c, uint32_t n) {
    ASSERT_TRUE(Eventually([&] {
      auto d = c.GetDeployment("m");
      return d.ok() && d->consecutive_failures() == n && d->instances_size() == 0;
    })) << c.GetDeployment("m")->DebugString();
  }

  // Lets the 5 loads of a deployment whose every load fails happen, past each backoff.
  void FailUntilFailed(Controller& c) {
    for (uint32_t n = 1; n <= 5; ++n) {
      WaitFailures(c, n);
      Step(c, 30'000);
    }
  }

  // Advances the clock by `ms` in one step, heartbeats every worker (unchanged listings)
  // and ticks once.
  void Step(Controller& c, int64_t ms) {
    clock_.Advance(ms / 1000.0);
    for (FakeWorkers::Node* n : nodes_) Heartbeat(c, n);
    c.Tick();
  }
};

TEST_F(ControllerFailureTest, DeletedModelFileBacksOffThenFailsUntilRedeployed) {
  auto c = MakeWithBackoff();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  // The model still lists, but a weight file is gone: every load fails.
  w->loader->SetLoadError("m", absl::NotFoundError("model-00001.safetensors: No such file"));

  std::vector<v1::DeploymentEvent> events;
  std::atomic<bool> watch_ended{false};
  std::thread watcher;
  ASSERT_TRUE(c->Deploy(kConfig).ok());
  watcher = std::thread([&] {
    c->WatchDeployment("m", [&](const v1::DeploymentEvent& e) {
      if (e.state() != "watching") events.push_back(e);
      return !(e.instance_id().empty() && e.state() == "failed");
    }).IgnoreError();
    watch_ended = true;
  });
  // Deploy placed the first load at once.
  WaitFailures(*c, 1);
  EXPECT_EQ(w->loader->load_calls(), 1);
  EXPECT_DOUBLE_EQ(c->GetDeployment("m")->retry_in_seconds(), 0.5);

  // Retries wait 0.5 s, 1 s, 2 s, 4 s: nothing a tick before, a load at the step.
  const int64_t backoff_ms[] = {500, 1000, 2000, 4000};
  for (int i = 0; i < 4; ++i) {
    Step(*c, backoff_ms[i] - 1);
    // Placement is synchronous in Tick: no instance means no load was started.
    EXPECT_EQ(c->GetDeployment("m")->instances_size(), 0) << "retry " << i << " came early";
    EXPECT_EQ(w->loader->load_calls(), i + 1) << "retry " << i << " came early";
    Step(*c, 1);
    EXPECT_TRUE(Eventually([&] { return w->loader->load_calls() == i + 2; }))
        << "retry " << i << " did not come";
    WaitFailures(*c, i + 2);
  }

  // Five in a row: failed, with the last error; no retry however long we wait.
  auto d = c->GetDeployment("m");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->state(), "failed");
  EXPECT_THAT(d->last_error(), HasSubstr("NOT_FOUND"));
  EXPECT_THAT(d->last_error(), HasSubstr("model-00001.safetensors: No such file"));
  EXPECT_THAT(d->message(), HasSubstr("5 consecutive loads failed"));
  Pass(*c, 120);  // heartbeats with an unchanged listing do not clear it
  EXPECT_EQ(w->loader->load_calls(), 5);
  EXPECT_EQ(c->GetDeployment("m")->state(), "failed");
  if (!Eventually([&] { return watch_ended.load(); })) {
    ADD_FAILURE() << "WatchDeployment never reported the failed state";
    ASSERT_TRUE(c->Delete("m").ok());  // ends the watch
  }
  watcher.join();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), "failed");
  EXPECT_THAT(events.back().message(), HasSubstr("No such file"));
  // A consumer is told at once instead of waiting for its deadline.
  auto lease = c->Acquire("m", 30, Deadline());
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kFailedPrecondition) << lease.status();
  EXPECT_THAT(std::string(lease.status().message()), HasSubstr("No such file"));

  // The operator restores the file and deploys again: retried with a fresh count.
  w->loader->SetLoadError("m", absl::OkStatus());
  ASSERT_TRUE(c->Deploy(kConfig).ok());
  EXPECT_EQ(c->GetDeployment("m")->state(), "active");
  ASSERT_TRUE(Eventually([&] {
    auto r = c->GetDeployment("m");
    return r->instances_size() == 1 && r->instances(0).state() == "ready";
  }));
  EXPECT_EQ(w->loader->load_calls(), 6);
  EXPECT_EQ(c->GetDeployment("m")->consecutive_failures(), 0u);
}

// The failed state is durable: a controller restarted on the same state store reports
// it and does not start the load sequence again; a redeploy still clears it.
TEST_F(ControllerFailureTest, TheFailedStateSurvivesARestart) {
  FakeWorkers::Node* w;
  {
    auto c = MakeWithBackoff();
    w = AddWorker(*c, "w1");
    w->loader->SetLoadError("m", absl::DataLossError("checksum mismatch in chunk 3"));
    ASSERT_TRUE(c->Deploy(kConfig).ok());
    FailUntilFailed(*c);
    ASSERT_EQ(c->GetDeployment("m")->state(), "failed");
  }
  EXPECT_EQ(w->loader->load_calls(), 5);
  auto c = MakeWithBackoff();  // the same state store
  auto d = c->GetDeployment("m");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->state(), "failed");
  EXPECT_THAT(d->last_error(), HasSubstr("DATA_LOSS"));
  EXPECT_THAT(d->last_error(), HasSubstr("checksum mismatch in chunk 3"));
  EXPECT_THAT(d->message(), HasSubstr("5 consecutive loads failed"));
  Heartbeat(*c, w);  // the worker's unchanged listing, as it re-registers with the new one
  Step(*c, 60'000);
  Step(*c, 60'000);
  EXPECT_EQ(w->loader->load_calls(), 5);
  EXPECT_EQ(c->Acquire("m", 30, Deadline()).status().code(),
            absl::StatusCode::kFailedPrecondition);

  w->loader->SetLoadError("m", absl::OkStatus());
  ASSERT_TRUE(c->Deploy(kConfig).ok());  // same config: "the cause is fixed"
  ASSERT_TRUE(Eventually([&] {
    auto r = c->GetDeployment("m");
    return r->instances_size() == 1 && r->instances(0).state() == "ready";
  }));
  auto again = MakeWithBackoff();  // cleared durably too
  EXPECT_EQ(again->GetDeployment("m")->state(), "active");
}

TEST_F(ControllerFailureTest, SuccessResetsTheBackoff) {
  auto c = MakeWithBackoff();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  w->loader->SetLoadError("m", absl::DataLossError("checksum mismatch"));
  ASSERT_TRUE(c->Deploy(kConfig).ok());
  WaitFailures(*c, 1);
  Step(*c, 500);
  WaitFailures(*c, 2);
  w->loader->SetLoadError("m", absl::OkStatus());
  Step(*c, 1000);
  ASSERT_TRUE(Eventually([&] {
    auto r = c->GetDeployment("m");
    return r->instances_size() == 1 && r->instances(0).state() == "ready";
  }));
  EXPECT_EQ(c->GetDeployment("m")->consecutive_failures(), 0u);
  EXPECT_EQ(c->GetDeployment("m")->retry_in_seconds(), 0);
}

TEST_F(ControllerFailureTest, NewWorkerOrChangedModelRetriesAFailedDeployment) {
  auto c = MakeWithBackoff();
  FakeWorkers::Node* w = AddWorker(*c, "w1");
  w->loader->SetLoadError("m", absl::DataLossError("checksum mismatch"));
  ASSERT_TRUE(c->Deploy(kConfig).ok());
  FailUntilFailed(*c);
  ASSERT_EQ(c->GetDeployment("m")->state(), "failed");
  EXPECT_EQ(w->loader->load_calls(), 5);

  // The model is saved again (another size) on w1: its heartbeat retries the deployment.
  w->loader->AddModel("m", 11 * MiB);
  Heartbeat(*c, w);
  EXPECT_EQ(c->GetDeployment("m")->state(), "active");
  c->Tick();
  WaitFailures(*c, 1);  // still broken: counted from one again
  EXPECT_EQ(w->loader->load_calls(), 6);
  for (uint32_t n = 2; n <= 5; ++n) {
    Step(*c, 30'000);
    WaitFailures(*c, n);
  }
  ASSERT_EQ(c->GetDeployment("m")->state(), "failed");

  // A new worker registers: retried; it loads there or on w1.
  w->loader->SetLoadError("m", absl::OkStatus());
  AddWorker(*c, "w2");
  EXPECT_EQ(c->GetDeployment("m")->state(), "active");
  c->Tick();
  ASSERT_TRUE(Eventually([&] {
    auto r = c->GetDeployment("m");
    return r->instances_size() == 1 && r->instances(0).state() == "ready";
  }));
}

}  // namespace
}  // namespace loadstar::daemon
