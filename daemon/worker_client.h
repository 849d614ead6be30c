// WorkerClient: the controller's calls into one worker. GrpcWorkerClientFactory
// (grpc_worker_client.cc) is the real one; controller tests use an in-process fake.
//
// Thread safety: every method is thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "loadstar/v1/worker.pb.h"

namespace loadstar::daemon {

// Cancels an in-flight call from another thread: the call installs a hook (e.g. gRPC
// ClientContext::TryCancel); Cancel runs it, now or as soon as it is installed. A hook
// must not call back into its CallCanceller.
class CallCanceller {
 public:
  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (hook_) hook_();
  }
  // The hook runs under mu_, so SetHook(nullptr) returns only once no hook call is in
  // flight: the call's context can then be destroyed safely.
  void SetHook(std::function<void()> hook) {
    absl::MutexLock lock(&mu_);
    hook_ = std::move(hook);
    if (cancelled_ && hook_) hook_();
  }
  bool cancelled() const {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

 private:
  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> hook_ ABSL_GUARDED_BY(mu_);
};

class WorkerClient {
 public:
  virtual ~WorkerClient() = default;
  // Blocks until the worker reports the instance ready (its final report) or fails.
  virtual absl::StatusOr<loadstar::v1::InstanceReport> LoadInstance(
      const loadstar::v1::LoadInstanceRequest& request,
      const std::function<void(const loadstar::v1::LoadProgress&)>& progress,
      CallCanceller* canceller) = 0;
  virtual absl::Status UnloadInstance(const std::string& instance_id) = 0;
  // The worker's plan of `spec` (InstanceLoader::PlanLoad): the exact footprint.
  virtual absl::StatusOr<loadstar::v1::PlanLoadResponse> PlanLoad(
      const loadstar::v1::LoadSpec& spec) = 0;
};

class WorkerClientFactory {
 public:
  virtual ~WorkerClientFactory() = default;
  virtual std::shared_ptr<WorkerClient> ForAddress(const std::string& address) = 0;
};

}  // namespace loadstar::daemon
