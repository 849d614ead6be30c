// WorkerAgent: keeps a worker known to its controller — registers (retrying until the
// controller answers), then heartbeats the worker's full report every interval the
// controller asked for; after a failed heartbeat it registers again.
//
// Thread safety: Start/Stop from one thread; the loop runs on its own.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/controller_endpoints.h"
#include "daemon/rpc_util.h"
#include "daemon/worker_manager.h"
#include "loadstar/v1/controller.grpc.pb.h"

namespace loadstar::daemon {

class WorkerAgent {
 public:
  // `on_registered(true)` when the controller accepts the worker, `(false)` when a
  // heartbeat fails or the controller forgot it (the health service follows it); called
  // from the agent's thread, on changes only.
  // `controller_addresses`: one or more (comma-separated); the agent follows the leader.
  WorkerAgent(WorkerManager* manager, const std::string& controller_addresses,
              ClientSecurity security, std::function<void(bool)> on_registered = nullptr);
  ~WorkerAgent();  // Stop()
  void Start();
  void Stop();

 private:
  void Loop();

  WorkerManager* const manager_;
  const TokenAuth auth_;
  const std::function<void(bool)> on_registered_;
  ControllerEndpoints controllers_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace loadstar::daemon
