// In-memory StateStore: the reference semantics the SQLite store must match.
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/state_store.h"

namespace loadstar::daemon {
namespace {

template <typename T>
std::vector<T> Values(const std::map<std::string, T>& map) {
  std::vector<T> out;
  for (const auto& [key, value] : map) out.push_back(value);
  return out;
}

class MemoryStateStore : public StateStore {
 public:
  absl::Status PutDeployment(const DeploymentRecord& r) override {
    absl::MutexLock lock(&mu_);
    deployments_[r.name] = r;
    return absl::OkStatus();
  }
  absl::Status DeleteDeployment(const std::string& name) override {
    absl::MutexLock lock(&mu_);
    deployments_.erase(name);
    std::erase_if(instances_, [&](const auto& kv) { return kv.second.deployment == name; });
    std::erase_if(leases_, [&](const auto& kv) { return kv.second.deployment == name; });
    return absl::OkStatus();
  }
  absl::Status PutInstance(const InstanceRecord& r) override {
    absl::MutexLock lock(&mu_);
    instances_[r.instance_id] = r;
    return absl::OkStatus();
  }
  absl::Status DeleteInstance(const std::string& id) override {
    absl::MutexLock lock(&mu_);
    instances_.erase(id);
    std::erase_if(leases_, [&](const auto& kv) { return kv.second.instance_id == id; });
    return absl::OkStatus();
  }
  absl::Status PutLease(const LeaseRecord& r) override {
    absl::MutexLock lock(&mu_);
    leases_[r.lease_id] = r;
    return absl::OkStatus();
  }
  absl::Status DeleteLease(const std::string& id) override {
    absl::MutexLock lock(&mu_);
    leases_.erase(id);
    return absl::OkStatus();
  }
  absl::Status PutWorker(const WorkerRecord& r) override {
    absl::MutexLock lock(&mu_);
    workers_[r.worker_id] = r;
    return absl::OkStatus();
  }
  absl::Status DeleteWorker(const std::string& id) override {
    absl::MutexLock lock(&mu_);
    workers_.erase(id);
    return absl::OkStatus();
  }
  absl::StatusOr<StateSnapshot> Load() override {
    absl::MutexLock lock(&mu_);
    return StateSnapshot{Values(deployments_), Values(instances_), Values(leases_),
                         Values(workers_)};
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, DeploymentRecord> deployments_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, InstanceRecord> instances_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, LeaseRecord> leases_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, WorkerRecord> workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<StateStore> NewMemoryStateStore() { return std::make_unique<MemoryStateStore>(); }

absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(const std::string& spec) {
  if (spec == "memory") return NewMemoryStateStore();
  if (spec.rfind("sqlite:", 0) == 0 && spec.size() > 7) return OpenSqliteStateStore(spec.substr(7));
  return absl::InvalidArgumentError("state: '" + spec + "' is not memory or sqlite:PATH");
}

}  // namespace loadstar::daemon
