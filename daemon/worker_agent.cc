#include "daemon/worker_agent.h"

#include <chrono>

#include "base/logging.h"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

WorkerAgent::WorkerAgent(WorkerManager* manager, const std::string& controller_addresses,
                         ClientSecurity security, std::function<void(bool)> on_registered)
    : manager_(manager),
      auth_(security.auth),
      on_registered_(std::move(on_registered)),
      controllers_(SplitAddresses(controller_addresses).value_or(
                       std::vector<std::string>{controller_addresses}),
                   security) {}

WorkerAgent::~WorkerAgent() { Stop(); }

void WorkerAgent::Start() { thread_ = std::thread([this] { Loop(); }); }

void WorkerAgent::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void WorkerAgent::Loop() {
  bool registered = false;
  int64_t interval_ms = 1000;
  std::string last_error;
  while (true) {
    v1::WorkerInfo info = manager_->Info();
    grpc::ClientContext ctx;
    auth_.Apply(&ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(interval_ms));
    grpc::Status status;
    bool was_registered = registered;
    if (!registered) {
      v1::RegisterWorkerResponse resp;
      status = controllers_.stub()->RegisterWorker(&ctx, info, &resp);
      if (status.ok()) {
        registered = true;
        if (resp.heartbeat_interval_ms() > 0) interval_ms = resp.heartbeat_interval_ms();
        Log(Level::info, "worker", {{"worker", manager_->worker_id()}},
            "registered with the controller at {}", controllers_.current());
      }
    } else {
      v1::HeartbeatResponse resp;
      status = controllers_.stub()->Heartbeat(&ctx, info, &resp);
      registered = status.ok() && !resp.reregister();
    }
    if (!status.ok() && status.error_message() != last_error) {
      Log(Level::warn, "worker", {{"worker", manager_->worker_id()}}, "controller: {}",
          status.error_message());
    }
    last_error = status.ok() ? "" : status.error_message();
    // Another controller may lead now (or this one is gone): register there next.
    if (!status.ok() && controllers_.Follow(status)) registered = false;
    if (registered != was_registered && on_registered_) on_registered_(registered);
    absl::MutexLock lock(&mu_);
    // Retry registration sooner than the heartbeat period so a restarted controller
    // learns about this worker quickly.
    int64_t wait_ms = registered ? interval_ms : std::min<int64_t>(interval_ms, 200);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(wait_ms));
    if (stopping_) return;
  }
}

}  // namespace loadstar::daemon
