// Controller: deployments (desired state), instances placed on workers, leases, and the
// worker registry, reconciled by a periodic Tick (background thread, or called directly
// by tests with a ManualClock). The gRPC Controller service (controller_service.h) is a
// thin adapter over it.
//
// Life of an instance: pending (placed, load starting) -> loading -> ready -> unloading ->
// gone; a failed load or a lost worker removes it and the autoscaler places a new one.
// Memory under a live lease is never unloaded (SPEC §3.5): scale-down only picks instances
// without leases, and Delete leaves leased instances "unloading" (draining) until their
// last lease is released or expires.
// Every change is written through to the StateStore (via StateWriter); Create() recovers
// from it and the first heartbeat of each worker reconciles what it really holds.
//
// Durability (SPEC §7): a call that changes state (Deploy, Delete, Acquire, RenewLease,
// Release, RegisterWorker, a Heartbeat that (re)registers) answers OK only once its write
// is durable. It decides its change under mu_, queues the write, releases mu_ while the
// write commits, and applies the change to memory only after the write succeeded; a
// failed write fails the call (UNAVAILABLE or INTERNAL, the store's reason in the
// message) and leaves memory as it was. A deployment or lease with a write in flight is
// "busy": other calls that would write the same record wait for it, so the store sees
// each record's writes in the order memory applies them. Background changes (placement,
// load results, expiry, scale-down, lost workers) apply at once and write behind, errors
// logged. The store may so hold a record memory no longer has (a lease whose instance
// went away during its write); Recover drops such orphans.
//
// Thread safety: every public method is thread-safe. Neither calls to workers nor state
// writes happen under mu_ (workers: threads of `tasks_`; writes: the StateWriter thread).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <utility>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/clock.h"
#include "daemon/deployment_config.h"
#include "daemon/lease_table.h"
#include "daemon/scheduler_policy.h"
#include "daemon/state_store.h"
#include "daemon/state_writer.h"
#include "daemon/thread_group.h"
#include "daemon/worker_client.h"
#include "daemon/worker_registry.h"
#include "loadstar/v1/controller.pb.h"

namespace loadstar::daemon {

struct ControllerOptions {
  StateStore* state = nullptr;                 // required
  WorkerClientFactory* workers = nullptr;      // required
  Clock* clock = Clock::Real();
  std::shared_ptr<const PlacementPolicy> policy;  // default LoadTimePolicy
  double heartbeat_interval_seconds = 1;
  double heartbeat_timeout_seconds = 3;
  double default_lease_ttl_seconds = 30;
  // After a failed load, how long a deployment waits before placing again: this after
  // the first failure, doubling with each consecutive one up to the max (no hot retry
  // loop). A lost worker is not the deployment's failure: it waits the first step only.
  double load_retry_backoff_seconds = 0.5;
  double load_retry_backoff_max_seconds = 30;
  // After this many consecutive failed loads the deployment is "failed": no more loads
  // until it is redeployed or updated, a worker registers, or a worker's listing of the
  // model changes (re-saved, or back after it was deleted). 0: retry forever.
  uint32_t max_load_failures = 5;
  // Period of the background reconcile loop; 0 runs none (tests call Tick()).
  double tick_seconds = 0.1;
};

class Controller {
 public:
  static absl::StatusOr<std::unique_ptr<Controller>> Create(ControllerOptions options);
  ~Controller();  // stops the loop, cancels in-flight worker calls, joins their threads

  // Creates the deployment named by the config (`name:`, default the model). The same
  // config again is a no-op. A different config for an existing name is ALREADY_EXISTS,
  // unless `replace`: then its instances are rolled to the new config (new ones loaded
  // before old ones go, never below min_instances while capacity allows; leased old
  // instances stay until their leases end).
  absl::StatusOr<loadstar::v1::Deployment> Deploy(const std::string& config_yaml,
                                                  bool replace = false);
  absl::Status Delete(const std::string& name);
  absl::StatusOr<loadstar::v1::Deployment> GetDeployment(const std::string& name);
  std::vector<loadstar::v1::Deployment> ListDeployments();
  // Streams the deployment's current instances, then every change, until the deployment
  // is deleted (OK) or `sink` returns false.
  absl::Status WatchDeployment(const std::string& name,
                               const std::function<bool(const loadstar::v1::DeploymentEvent&)>& sink);

  // Returns a lease on a ready instance, cold-starting one if needed; waits until
  // `deadline_ms` (unix ms) at most.
  absl::StatusOr<loadstar::v1::Lease> Acquire(const std::string& deployment, double ttl_seconds,
                                              int64_t deadline_ms);
  absl::StatusOr<loadstar::v1::Lease> RenewLease(const std::string& lease_id);
  absl::StatusOr<loadstar::v1::Lease> GetLease(const std::string& lease_id);
  absl::Status Release(const std::string& lease_id);

  std::vector<loadstar::v1::WorkerStatus> ListWorkers();
  // Registration and heartbeat both carry the worker's full report.
  absl::Status RegisterWorker(const loadstar::v1::WorkerInfo& info);
  absl::Status Heartbeat(const loadstar::v1::WorkerInfo& info);
  uint32_t heartbeat_interval_ms() const {
    return static_cast<uint32_t>(options_.heartbeat_interval_seconds * 1000);
  }

  // One reconcile pass: lost workers, expired leases, autoscaling and placement.
  void Tick();
  // Makes waiting Acquire and WatchDeployment calls return UNAVAILABLE and stops placing;
  // call before shutting the server down so its handlers finish.
  void Stop();

  // How the state writes were grouped into commits (bench, tests).
  StateWriter::Stats state_write_stats() const { return writer_.stats(); }

 private:
  struct Instance {
    std::string id;
    std::string deployment;
    std::string worker_id;
    std::string state;  // pending | loading | ready | unloading
    std::vector<uint32_t> devices;
    std::vector<std::string> device_names;
    uint64_t bytes_per_device = 0;  // reserved on each of `devices`
    uint64_t bytes_done = 0;
    uint64_t bytes_total = 0;
    double load_seconds = 0;
    uint32_t leases = 0;
    uint32_t pending_leases = 0;  // Acquires whose lease write is in flight
    int64_t idle_since_ms = 0;
    int64_t ready_since_ms = 0;
    bool recovered = false;  // restored from the state store; no load call of ours is running
    // Its deployment was deleted while it was leased: unloaded when the last lease ends.
    bool draining = false;
    std::string config_digest;  // ConfigDigest of the config it was loaded with
    std::string source;         // as the worker reported it when ready
    std::string tier;           // disk | host_cache | device_copy (ditto)
    double gbps = 0;
    std::string spread;
    std::shared_ptr<CallCanceller> canceller = std::make_shared<CallCanceller>();
  };
  struct Deployment {
    DeploymentConfig config;
    std::string yaml;
    int64_t created_ms = 0;
    uint32_t waiting = 0;  // Acquire calls waiting for an instance
    uint32_t desired = 0;
    std::string digest;    // ConfigDigest(yaml): instances with another one are outdated
    bool placement_blocked = false;  // the last placement had to wait for memory
    std::string message;   // why it is not progressing
    absl::Status last_error;        // of the last failed load or placement
    uint64_t error_seq = 0;         // bumped with last_error
    int64_t retry_after_ms = 0;
    uint32_t failures = 0;          // consecutive failed loads (reset by a success)
    bool failed = false;            // failures reached max_load_failures: not placed
    // The exact footprint (bytes per GPU index of the load), planned by a worker that holds
    // the model (Worker.PlanLoad); empty: not known (placement falls back to
    // EstimateLoadedBytes). Kept until a worker's listing of the model changes.
    std::vector<uint64_t> footprint;
    bool footprint_planned = false;    // a worker answered (a plan or a refusal)
    bool footprint_pending = false;    // a PlanLoad of it is in flight
    int64_t footprint_retry_ms = 0;    // a worker could not tell: not asked again before
  };



  explicit Controller(ControllerOptions options);
  absl::Status Recover();
  void Loop();

  // REQUIRES: mu_ held. Helpers of Tick/Acquire/Heartbeat.
  void ReconcileLocked(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ClusterSnapshot SnapshotLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  PlacementRequest PlacementRequestLocked(const std::string& name, const Deployment& d)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartLoadLocked(const std::string& name, Deployment& d, const Placement& placement,
                       uint64_t bytes_per_device) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StopInstanceLocked(Instance& inst) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Unloads an instance nobody needs any more and forgets it (scale-down, rolled away).
  void RetireInstanceLocked(const std::string& id, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Replaced outdated instances of a rolling update, as min_instances and leases allow.
  void RollLocked(const std::string& name, Deployment& d, uint32_t current_ready)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveInstanceLocked(const std::string& id, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReconcileWorkerLocked(const loadstar::v1::WorkerInfo& info)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLeaseLocked(const LeaseRecord& lease) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A failed load of `d` (not a lost worker): the next backoff step, and the failed state
  // after max_load_failures.
  void LoadFailedLocked(const std::string& name, Deployment& d, const absl::Status& status,
                        int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The cause of failures may have gone away (`why`): failed deployments of `model` (all
  // when empty; only deployment `only` when given) are retried with a fresh count.
  void ClearFailuresLocked(const std::string& model, const std::string& why,
                           const std::string& only = "") ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Models whose listing on worker `info` differs from what it reported before (`before`,
  // null for a new worker): appeared, or changed size or variants.
  static std::set<std::string> ChangedModels(const loadstar::v1::WorkerInfo* before,
                                             const loadstar::v1::WorkerInfo& info);
  // ChangedModels against the registry's current entry of the worker (a lost one counts
  // as known: its listing is compared too).
  std::set<std::string> ChangedModelsLocked(const loadstar::v1::WorkerInfo& info)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const WorkerRegistry::Entry* e = workers_.Find(info.worker_id());
    return ChangedModels(e == nullptr ? nullptr : &e->info, info);
  }
  void EventLocked(const Instance& inst, const std::string& message = "")
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues a background write (no caller waits on it); a failure is logged.
  void PersistLocked(StateBatch batch, const std::string& what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistInstanceLocked(const Instance& inst) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static InstanceRecord RecordOf(const Instance& inst);
  // The durable part of a deployment: its config, and its failed state when failed.
  static DeploymentRecord RecordOf(const std::string& name, const Deployment& d);
  // Queues `batch`, releases mu_ until it is committed, takes mu_ again: anything may have
  // changed meanwhile, except what the caller marked busy.
  absl::Status DurableWriteLocked(StateBatch batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The worker record of `info`, written and waited for (registration; a heartbeat that
  // registers again). REQUIRES: mu_ is not held.
  absl::Status WriteWorkerRecord(const loadstar::v1::WorkerInfo& info) ABSL_LOCKS_EXCLUDED(mu_);
  // True while a lease write of deployment `name` is in flight (a renewal, release or
  // new lease).
  bool LeaseWriteInFlightLocked(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  loadstar::v1::Deployment ToProtoLocked(const std::string& name, const Deployment& d)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  loadstar::v1::Instance InstanceProtoLocked(const Instance& inst)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  loadstar::v1::Lease LeaseProtoLocked(const LeaseRecord& lease, bool cold)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The largest listing of `model` among live workers and the address of a worker with it;
  // {0, ""} when none lists it.
  std::pair<uint64_t, std::string> ModelListingLocked(const std::string& model)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks the worker at `address` to plan `config` (controller_footprint.cc). A refusal (the
  // config can never load: INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION) is
  // returned as that error; nullopt when the worker cannot tell (unreachable, the model
  // gone meanwhile), so placement estimates. REQUIRES: mu_ is not held.
  // The plan is the bytes per GPU index of the load.
  absl::StatusOr<std::optional<std::vector<uint64_t>>> PlanFootprint(
      const DeploymentConfig& config, const std::string& address)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A worker's listing of `model` changed (appeared, re-saved): its deployments' plans are
  // stale and are made again.
  void ForgetFootprintsLocked(const std::string& model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Plans `d` in the background when it has no plan (recovered after a restart, planned
  // while no worker could answer, or forgotten because its model changed).
  void RefreshFootprintLocked(const std::string& name, Deployment& d)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Runs on a task thread: the LoadInstance call and its outcome.
  void RunLoad(std::string instance_id, std::string address,
               loadstar::v1::LoadInstanceRequest request, std::shared_ptr<CallCanceller> canceller);
  void RunUnload(std::string worker_id, std::string address, std::string instance_id);

  const ControllerOptions options_;
  // Declared before everything that submits to it, so it is destroyed (and drained) last.
  StateWriter writer_;
  absl::Mutex mu_;
  absl::CondVar changed_;  // signalled on every instance/deployment change
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, Deployment> deployments_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Instance> instances_ ABSL_GUARDED_BY(mu_);
  LeaseTable leases_ ABSL_GUARDED_BY(mu_);
  // Records with a write in flight from a caller that applies it once durable.
  std::set<std::string> busy_deployments_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> busy_leases_ ABSL_GUARDED_BY(mu_);
  WorkerRegistry workers_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<uint64_t, loadstar::v1::DeploymentEvent>> events_ ABSL_GUARDED_BY(mu_);
  uint64_t next_event_seq_ ABSL_GUARDED_BY(mu_) = 1;
  ThreadGroup tasks_;
  std::thread loop_;
};

}  // namespace loadstar::daemon
