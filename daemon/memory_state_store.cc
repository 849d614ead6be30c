// In-memory StateStore: the reference semantics the SQLite store must match.
#include <map>
#include <variant>

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

// Overloads for std::visit: one per StateWrite alternative.
template <typename... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <typename... F>
Overloaded(F...) -> Overloaded<F...>;

class MemoryStateStore : public StateStore {
 public:
  // Memory writes cannot fail, so every batch is atomic and OK.
  std::vector<absl::Status> Commit(const std::vector<StateBatch>& batches) override {
    absl::MutexLock lock(&mu_);
    for (const StateBatch& batch : batches) {
      for (const StateWrite& w : batch) ApplyLocked(w);
    }
    return std::vector<absl::Status>(batches.size());
  }

  absl::StatusOr<StateSnapshot> Load() override {
    absl::MutexLock lock(&mu_);
    return StateSnapshot{Values(deployments_), Values(instances_), Values(leases_),
                         Values(workers_)};
  }

 private:
  void ApplyLocked(const StateWrite& write) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::visit(
        Overloaded{
            [&](const DeploymentRecord& r) { deployments_[r.name] = r; },
            [&](const DeploymentDeletion& d) {
              deployments_.erase(d.name);
              std::erase_if(instances_, [&](const auto& kv) { return kv.second.deployment == d.name; });
              std::erase_if(leases_, [&](const auto& kv) { return kv.second.deployment == d.name; });
            },
            [&](const InstanceRecord& r) { instances_[r.instance_id] = r; },
            [&](const InstanceDeletion& d) {
              instances_.erase(d.instance_id);
              std::erase_if(leases_, [&](const auto& kv) { return kv.second.instance_id == d.instance_id; });
            },
            [&](const LeaseRecord& r) { leases_[r.lease_id] = r; },
            [&](const LeaseDeletion& d) { leases_.erase(d.lease_id); },
            [&](const WorkerRecord& r) { workers_[r.worker_id] = r; },
            [&](const WorkerDeletion& d) { workers_.erase(d.worker_id); },
        },
        write);
  }

  absl::Mutex mu_;
  std::map<std::string, DeploymentRecord> deployments_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, InstanceRecord> instances_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, LeaseRecord> leases_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, WorkerRecord> workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<StateStore> NewMemoryStateStore() { return std::make_unique<MemoryStateStore>(); }

}  // namespace loadstar::daemon
