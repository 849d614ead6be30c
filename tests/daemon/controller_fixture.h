// The fixture of controller tests: a Controller over in-process fake workers, a
// ManualClock the test advances, and an in-memory state store unless a test passes its
// own. Tests only.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "daemon/controller.h"
#include "tests/daemon/fake_worker_client.h"

namespace loadstar::daemon::testing {

constexpr uint64_t MiB = 1ull << 20;

// Polls `pred` for up to 5 s of real time (loads and unloads run on controller threads).
template <typename Pred>
bool Eventually(Pred pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override { state_ = NewMemoryStateStore(); }

  std::unique_ptr<Controller> Make(StateStore* state = nullptr,
                                   const std::function<void(ControllerOptions&)>& tweak = {}) {
    ControllerOptions o;
    o.state = state != nullptr ? state : state_.get();
    o.workers = &workers_;
    o.clock = &clock_;
    o.tick_seconds = 0;  // the test drives Tick()
    o.load_retry_backoff_seconds = 0;
    if (tweak) tweak(o);
    auto c = Controller::Create(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return std::move(*c);
  }

  FakeWorkers::Node* AddWorker(Controller& c, const std::string& id, int devices = 2) {
    FakeWorkers::Node* node = workers_.Add(id, devices, 100 * MiB);
    node->loader->AddModel("m", 10 * MiB);
    EXPECT_TRUE(c.RegisterWorker(node->manager->Info()).ok());
    nodes_.push_back(node);
    return node;
  }

  // Advances the clock in 1 s steps, with a heartbeat from every worker that is up (as
  // their agents would send) and a Tick after each step.
  void Pass(Controller& c, double seconds) {
    for (double t = 0; t < seconds; t += 1) {
      clock_.Advance(std::min(1.0, seconds - t));
      for (FakeWorkers::Node* n : nodes_) {
        if (!n->down) Heartbeat(c, n);
      }
      c.Tick();
    }
  }

  void Heartbeat(Controller& c, FakeWorkers::Node* node) {
    ASSERT_TRUE(c.Heartbeat(node->manager->Info()).ok());
  }

  int64_t Deadline() { return clock_.NowMillis() + 60'000; }

  ManualClock clock_;
  FakeWorkers workers_;
  std::vector<FakeWorkers::Node*> nodes_;
  std::unique_ptr<StateStore> state_;
};

}  // namespace loadstar::daemon::testing
