// In-process workers for controller tests: each address maps to a WorkerManager over a
// FakeInstanceLoader; calls go straight to the manager. An address can be taken "down"
// (calls fail UNAVAILABLE), as a crashed worker would. Tests only.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "daemon/worker_client.h"
#include "daemon/worker_manager.h"
#include "tests/daemon/fake_instance_loader.h"

namespace loadstar::daemon::testing {

class FakeWorkers : public WorkerClientFactory {
 public:
  struct Node {
    std::unique_ptr<FakeInstanceLoader> loader;
    std::unique_ptr<WorkerManager> manager;
    std::atomic<bool> down{false};
  };

  Node* Add(const std::string& id, int devices, uint64_t device_bytes) {
    auto node = std::make_unique<Node>();
    node->loader = std::make_unique<FakeInstanceLoader>(devices, device_bytes);
    node->manager = std::make_unique<WorkerManager>(id, id + ":1", node->loader.get());
    Node* raw = node.get();
    absl::MutexLock lock(&mu_);
    nodes_[id + ":1"] = std::move(node);
    return raw;
  }

  std::shared_ptr<WorkerClient> ForAddress(const std::string& address) override {
    absl::MutexLock lock(&mu_);
    return std::make_shared<Client>(nodes_.at(address).get());
  }

 private:
  class Client : public WorkerClient {
   public:
    explicit Client(Node* node) : node_(node) {}
    absl::StatusOr<loadstar::v1::InstanceReport> LoadInstance(
        const loadstar::v1::LoadInstanceRequest& request,
        const std::function<void(const loadstar::v1::LoadProgress&)>& progress,
        CallCanceller* canceller) override {
      if (node_->down) return absl::UnavailableError("connection refused");
      canceller->SetHook([this, id = request.instance_id()] {
        node_->manager->Unload(id).IgnoreError();
      });
      auto report = node_->manager->Load(request, [&](const LoadProgressInfo& p) {
        loadstar::v1::LoadProgress msg;
        msg.set_bytes_done(p.bytes_done);
        msg.set_bytes_total(p.bytes_total);
        progress(msg);
        return !node_->down;
      });
      canceller->SetHook(nullptr);
      if (node_->down) return absl::UnavailableError("connection reset");
      return report;
    }
    absl::Status UnloadInstance(const std::string& id) override {
      if (node_->down) return absl::UnavailableError("connection refused");
      return node_->manager->Unload(id);
    }
    absl::StatusOr<loadstar::v1::PlanLoadResponse> PlanLoad(
        const loadstar::v1::LoadSpec& spec) override {
      if (node_->down) return absl::UnavailableError("connection refused");
      return node_->loader->PlanLoad(spec);
    }

   private:
    Node* node_;
  };

  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Node>> nodes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loadstar::daemon::testing
