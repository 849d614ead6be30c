// The controller of the current leadership term. A single controller holds one for its
// whole life; under etcd leader election (leader_election.h) a controller is created when
// this process is elected (it loads the state then) and dropped when it is deposed. RPC
// handlers and metrics take a reference per call, so a term can end under a running call.
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/controller.h"

namespace loadstar::daemon {

class ControllerSlot {
 public:
  std::shared_ptr<Controller> Get() const {
    absl::MutexLock lock(&mu_);
    return controller_;
  }
  // Replaces the controller; returns the previous one (to Stop() outside the lock).
  std::shared_ptr<Controller> Set(std::shared_ptr<Controller> controller) {
    absl::MutexLock lock(&mu_);
    std::swap(controller_, controller);
    return controller;
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<Controller> controller_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::daemon
