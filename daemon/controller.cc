// Controller: the client- and worker-facing API. Reconciliation (placement, scaling, load
// calls, recovery) is in controller_reconcile.cc.
#include "daemon/controller.h"

#include <fmt/format.h>

#include "base/logging.h"
#include "base/status_macros.h"
#include "spdlog/spdlog.h"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

namespace {

// A failed state write as the caller sees it: what was not done, and the store's reason.
absl::Status StoreFailure(const std::string& what, const absl::Status& s) {
  absl::StatusCode code = absl::IsUnavailable(s) ? absl::StatusCode::kUnavailable
                                                 : absl::StatusCode::kInternal;
  return absl::Status(code, fmt::format("{}: not done, the state write failed: {}", what,
                                        std::string(s.message())));
}

}  // namespace

Controller::Controller(ControllerOptions options)
    : options_(std::move(options)),
      writer_(options_.state),
      workers_(static_cast<int64_t>(options_.heartbeat_timeout_seconds * 1000)) {}

absl::StatusOr<std::unique_ptr<Controller>> Controller::Create(ControllerOptions options) {
  if (options.state == nullptr || options.workers == nullptr) {
    return absl::InvalidArgumentError("controller needs a state store and a worker factory");
  }
  if (options.policy == nullptr) options.policy = std::make_shared<LoadTimePolicy>();
  std::unique_ptr<Controller> c(new Controller(std::move(options)));
  RETURN_IF_ERROR(c->Recover());
  if (c->options_.tick_seconds > 0) c->loop_ = std::thread([p = c.get()] { p->Loop(); });
  return c;
}

Controller::~Controller() {
  std::vector<std::shared_ptr<CallCanceller>> cancellers;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [id, inst] : instances_) cancellers.push_back(inst.canceller);
    changed_.SignalAll();
  }
  if (loop_.joinable()) loop_.join();
  for (auto& c : cancellers) c->Cancel();
  tasks_.JoinAll();
}

void Controller::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  changed_.SignalAll();
}

void Controller::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.Unlock();
    Tick();
    mu_.Lock();
    // Woken only by Stop, not by changed_: under load every Acquire and Release signals
    // changed_, and a Tick per signal would hold mu_ far more than the reads it serves.
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(options_.tick_seconds));
  }
}

void Controller::PersistLocked(StateBatch batch, const std::string& what) {
  writer_.SubmitLogged(std::move(batch), what);
}

absl::Status Controller::DurableWriteLocked(StateBatch batch) {
  std::shared_ptr<StateWriter::Pending> pending = writer_.Submit(std::move(batch));
  mu_.Unlock();
  absl::Status s = pending->Wait();
  mu_.Lock();
  return s;
}

bool Controller::LeaseWriteInFlightLocked(const std::string& name) {
  for (const std::string& id : busy_leases_) {
    const LeaseRecord* lease = leases_.Find(id);
    if (lease != nullptr && lease->deployment == name) return true;
  }
  for (const auto& [id, inst] : instances_) {
    if (inst.deployment == name && inst.pending_leases > 0) return true;
  }
  return false;
}

absl::StatusOr<v1::Deployment> Controller::Deploy(const std::string& config_yaml,
                                                 bool replace) {
  ASSIGN_OR_RETURN(DeploymentConfig config, ParseDeploymentConfig(config_yaml));
  // The exact footprint, planned by a worker holding the model before anything is
  // written: a config that can never load (an uncovered layer map, a cap below its plan,
  // a split that does not divide) is refused here with the worker's reason.
  std::optional<std::vector<uint64_t>> footprint;
  {
    std::pair<uint64_t, std::string> listing;
    {
      absl::MutexLock lock(&mu_);
      listing = ModelListingLocked(config.model);
    }
    if (listing.first > 0) {
      ASSIGN_OR_RETURN(footprint, PlanFootprint(config, listing.second));
    }
  }
  absl::MutexLock lock(&mu_);
  const std::string name = config.name;
  while (busy_deployments_.contains(name)) changed_.Wait(&mu_);
  auto existing = deployments_.find(name);
  if (existing != deployments_.end()) {
    if (SameDeploymentConfig(existing->second.config, config)) {
      // Deploying it again is how an operator says the cause of its failures is fixed.
      if (existing->second.failed) {
        ClearFailuresLocked(config.model, "redeployed", name);
        ReconcileLocked(name);
      }
      return ToProtoLocked(name, existing->second);
    }
    if (!replace) {
      return absl::AlreadyExistsError(fmt::format(
          "deployment '{}' exists with a different config; `loadstar update {} --config FILE` "
          "(or deploy --replace) rolls it to the new one, or give this one another name:",
          name, name));
    }
  }
  Deployment d;
  d.config = config;
  d.yaml = DeploymentConfigToYaml(config);
  d.digest = ConfigDigest(d.yaml);
  d.created_ms = existing != deployments_.end() ? existing->second.created_ms
                                                 : options_.clock->NowMillis();
  if (footprint) {
    d.footprint = *footprint;
    d.footprint_planned = true;
  }
  // Fail fast on what can never work: an unknown model or a placement no worker can take.
  PlacementRequest request = PlacementRequestLocked(name, d);
  bool any_alive = false;
  for (const auto& [id, w] : workers_.entries()) any_alive |= !w.lost;
  if (any_alive) {
    if (request.checkpoint_bytes == 0) {
      return absl::NotFoundError(fmt::format(
          "model '{}' is not in the store of any registered worker", config.model));
    }
    Placement p = options_.policy->Place(SnapshotLocked(), request);
    if (p.kind == Placement::Kind::kInfeasible && !absl::IsUnavailable(p.reason)) return p.reason;
  }
  busy_deployments_.insert(name);  // no Delete or other Deploy of it until this is applied
  absl::Status written = DurableWriteLocked({RecordOf(name, d)});
  busy_deployments_.erase(name);
  changed_.SignalAll();
  if (!written.ok()) return StoreFailure(fmt::format("deploy '{}'", name), written);
  existing = deployments_.find(name);  // busy kept it as it was; the iterator is refreshed
  const bool updated = existing != deployments_.end();
  if (updated) {
    // Keep what the running deployment knows about demand and errors.
    d.waiting = existing->second.waiting;
    d.error_seq = existing->second.error_seq;
    Log(Level::info, "controller", {{"deployment", name}},
        "updating {}: rolling its instances to the new config", name);
  }
  auto& stored = deployments_[name] = std::move(d);
  v1::DeploymentEvent e;
  e.set_deployment(name);
  e.set_state(updated ? "updated" : "deployed");
  events_.emplace_back(next_event_seq_++, e);
  ReconcileLocked(name);
  changed_.SignalAll();
  return ToProtoLocked(name, stored);
}

absl::Status Controller::Delete(const std::string& name) {
  absl::MutexLock lock(&mu_);
  while (busy_deployments_.contains(name)) changed_.Wait(&mu_);
  if (!deployments_.contains(name)) {
    return absl::NotFoundError(fmt::format("deployment '{}' does not exist", name));
  }
  // The plan below must see every lease of the deployment: busy, no lease write of it
  // starts (Acquire, RenewLease and Release wait), and those in flight finish first.
  busy_deployments_.insert(name);
  while (LeaseWriteInFlightLocked(name)) changed_.Wait(&mu_);
  // One batch: the deployment goes, and its leased instances stay behind as draining with
  // their leases (SPEC §3.5: a leased instance's memory stays until its leases end).
  StateBatch batch{DeploymentDeletion{name}};
  std::set<std::string> draining;
  for (const auto& [id, inst] : instances_) {
    if (inst.deployment != name || inst.leases == 0 || inst.state != "ready") continue;
    draining.insert(id);
    Instance unloading = inst;
    unloading.state = "unloading";
    batch.push_back(RecordOf(unloading));
    for (const auto& [lease_id, lease] : leases_.leases()) {
      if (lease.instance_id == id) batch.push_back(lease);
    }
  }
  absl::Status written = DurableWriteLocked(std::move(batch));
  busy_deployments_.erase(name);
  changed_.SignalAll();
  if (!written.ok()) return StoreFailure(fmt::format("delete '{}'", name), written);

  deployments_.erase(name);
  // Instances changed meanwhile (loads finished, leases expired, workers lost): act on what
  // there is now, and delete the records of what goes in case a background write put one
  // back after the deletion.
  std::vector<std::string> ids;
  for (auto& [id, inst] : instances_) {
    if (inst.deployment == name) ids.push_back(id);
  }
  for (const std::string& id : ids) {
    Instance& inst = instances_.at(id);
    if (draining.contains(id) && inst.leases > 0 && inst.state == "ready") {
      inst.state = "unloading";
      inst.draining = true;
      EventLocked(inst, fmt::format("deleted; unloads when its {} lease(s) end", inst.leases));
      continue;
    }
    for (const LeaseRecord& l : leases_.RemoveInstance(id)) (void)l;
    StopInstanceLocked(inst);  // cancels a running load; the worker frees its memory
    PersistLocked({InstanceDeletion{id}}, "deletion of instance " + id);
    instances_.erase(id);
  }
  v1::DeploymentEvent e;
  e.set_deployment(name);
  e.set_state("deleted");
  events_.emplace_back(next_event_seq_++, e);
  changed_.SignalAll();
  return absl::OkStatus();
}

absl::StatusOr<v1::Deployment> Controller::GetDeployment(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = deployments_.find(name);
  if (it == deployments_.end()) {
    return absl::NotFoundError(fmt::format("deployment '{}' does not exist", name));
  }
  return ToProtoLocked(name, it->second);
}

std::vector<v1::Deployment> Controller::ListDeployments() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Deployment> out;
  for (const auto& [name, d] : deployments_) out.push_back(ToProtoLocked(name, d));
  return out;
}

absl::Status Controller::WatchDeployment(
    const std::string& name, const std::function<bool(const v1::DeploymentEvent&)>& sink) {
  std::vector<v1::DeploymentEvent> batch;
  uint64_t seen;
  {
    absl::MutexLock lock(&mu_);
    if (!deployments_.contains(name)) {
      return absl::NotFoundError(fmt::format("deployment '{}' does not exist", name));
    }
    seen = next_event_seq_ - 1;
    for (const auto& [id, inst] : instances_) {
      if (inst.deployment != name) continue;
      v1::DeploymentEvent& e = batch.emplace_back();
      e.set_deployment(name);
      e.set_instance_id(id);
      e.set_state(inst.state);
      e.set_bytes_done(inst.bytes_done);
      e.set_bytes_total(inst.bytes_total);
    }
  }
  while (true) {
    bool deleted = false;
    for (const v1::DeploymentEvent& e : batch) {
      if (!sink(e)) return absl::CancelledError("watcher went away");
      deleted |= e.instance_id().empty() && e.state() == "deleted";
    }
    if (deleted) return absl::OkStatus();
    batch.clear();
    absl::MutexLock lock(&mu_);
    // Wake up now and then even without events so a gone watcher is noticed (sink false).
    if (events_.empty() || events_.back().first <= seen) {
      changed_.WaitWithTimeout(&mu_, absl::Milliseconds(500));
    }
    if (stopping_) return absl::UnavailableError("controller is shutting down");
    for (const auto& [seq, e] : events_) {
      if (seq > seen && e.deployment() == name) batch.push_back(e);
    }
    if (!events_.empty()) seen = std::max(seen, events_.back().first);
    if (batch.empty()) {
      // A heartbeat-only wake-up: probe the watcher with a no-op keepalive.
      v1::DeploymentEvent ping;
      ping.set_deployment(name);
      ping.set_state("watching");
      batch.push_back(ping);
    }
  }
}

absl::StatusOr<v1::Lease> Controller::Acquire(const std::string& name, double ttl_seconds,
                                              int64_t deadline_ms) {
  if (ttl_seconds <= 0) ttl_seconds = options_.default_lease_ttl_seconds;
  absl::MutexLock lock(&mu_);
  bool waited = false;
  uint64_t error_seq = 0;
  if (auto it = deployments_.find(name); it != deployments_.end()) error_seq = it->second.error_seq;
  while (true) {
    auto it = deployments_.find(name);
    if (it == deployments_.end()) {
      return absl::NotFoundError(fmt::format("deployment '{}' does not exist", name));
    }
    if (stopping_) return absl::UnavailableError("controller is shutting down");
    if (busy_deployments_.contains(name)) {
      // A Deploy or Delete of it is being written: wait for its outcome.
      changed_.WaitWithTimeout(&mu_, absl::Milliseconds(100));
      continue;
    }
    Deployment& d = it->second;
    if (d.failed) {
      return absl::FailedPreconditionError(fmt::format("deployment '{}' {}", name, d.message));
    }
    // The least-leased ready instance, if it is under the concurrency target, or if the
    // deployment is at max_instances with nothing still loading (no better one is coming).
    // During a rolling update an outdated instance serves only until a current one is
    // ready, so consumers never wait for the roll.
    Instance* best = nullptr;
    Instance* best_outdated = nullptr;
    uint32_t alive = 0, loading = 0;
    for (auto& [id, inst] : instances_) {
      if (inst.deployment != name || inst.state == "unloading") continue;
      if (inst.config_digest != d.digest) {
        if (inst.state == "ready" &&
            (best_outdated == nullptr || inst.leases + inst.pending_leases <
                                             best_outdated->leases + best_outdated->pending_leases)) {
          best_outdated = &inst;
        }
        continue;
      }
      ++alive;
      if (inst.state != "ready") {
        ++loading;
        continue;
      }
      if (best == nullptr || inst.leases + inst.pending_leases < best->leases + best->pending_leases) {
        best = &inst;
      }
    }

    bool saturated = loading == 0 && alive >= d.config.auto_scaling.max_instances;
    if (best == nullptr && best_outdated != nullptr) {
      best = best_outdated;
      saturated = true;
    }
    if (best != nullptr &&
        (best->leases + best->pending_leases < d.config.auto_scaling.target || saturated)) {
      // Counted as pending while written, so concurrent Acquires spread as if it were held
      // and scale-down leaves the instance alone.
      LeaseRecord lease =
          LeaseTable::Make(name, best->id, ttl_seconds, options_.clock->NowMillis());
      const std::string instance_id = best->id;
      ++best->pending_leases;
      absl::Status written = DurableWriteLocked({lease});
      auto inst = instances_.find(instance_id);
      if (inst != instances_.end()) --inst->second.pending_leases;
      changed_.SignalAll();
      if (!written.ok()) return StoreFailure(fmt::format("acquire '{}'", name), written);
      if (inst == instances_.end() || inst->second.state != "ready") {
        // Its instance went away (worker lost, unloaded) while the lease was written:
        // take it back out of the store and look again.
        PersistLocked({LeaseDeletion{lease.lease_id}}, "lease " + lease.lease_id);
        continue;
      }
      leases_.Put(lease);
      ++inst->second.leases;
      return LeaseProtoLocked(lease, waited);
    }
    if (d.error_seq != error_seq) {
      // A load or placement failed since we started waiting. Worker loss is retried by
      // rescheduling; anything else is reported to the caller.
      if (!absl::IsUnavailable(d.last_error) && !absl::IsCancelled(d.last_error)) {
        return d.last_error;
      }
      error_seq = d.error_seq;
    }
    int64_t now = options_.clock->NowMillis();
    if (now >= deadline_ms) {
      // Say where it stands: each instance's state and progress, or why none was placed.
      std::string where;
      for (const auto& [id, inst] : instances_) {
        if (inst.deployment != name || inst.state == "unloading") continue;
        where += where.empty() ? "" : "; ";
        where += fmt::format("instance {} {} on {}", id, inst.state, inst.worker_id);
        if (inst.state == "loading" && inst.bytes_total > 0) {
          where += fmt::format(" at {:.0f}%", 100.0 * inst.bytes_done / inst.bytes_total);
        }
      }
      if (!d.message.empty()) where += (where.empty() ? "" : "; ") + d.message;
      return absl::DeadlineExceededError(fmt::format(
          "no instance of '{}' became ready in time{}", name,
          where.empty() ? "" : " (" + where + ")"));
    }
    ++d.waiting;
    ReconcileLocked(name);  // cold start now rather than at the next tick
    waited = true;
    changed_.WaitWithTimeout(&mu_, absl::Milliseconds(std::min<int64_t>(deadline_ms - now, 100)));
    auto again = deployments_.find(name);
    if (again != deployments_.end()) --again->second.waiting;
  }
}

absl::StatusOr<v1::Lease> Controller::RenewLease(const std::string& lease_id) {
  absl::MutexLock lock(&mu_);
  while (true) {
    const LeaseRecord* lease = leases_.Find(lease_id);
    if (lease == nullptr ||
        (!busy_leases_.contains(lease_id) && !busy_deployments_.contains(lease->deployment))) {
      break;
    }
    changed_.Wait(&mu_);
  }
  ASSIGN_OR_RETURN(LeaseRecord renewed, leases_.Renewed(lease_id, options_.clock->NowMillis()));
  busy_leases_.insert(lease_id);  // not expired, released or renewed under this write
  absl::Status written = DurableWriteLocked({renewed});
  busy_leases_.erase(lease_id);
  changed_.SignalAll();
  if (!written.ok()) return StoreFailure(fmt::format("renew lease {}", lease_id), written);
  if (leases_.Find(lease_id) == nullptr) {
    // Its instance was removed meanwhile (worker lost): the record just written is an orphan.
    PersistLocked({LeaseDeletion{lease_id}}, "lease " + lease_id);
    return absl::NotFoundError(
        fmt::format("lease {} ended while renewing: its instance is gone", lease_id));
  }
  leases_.Put(renewed);
  return LeaseProtoLocked(renewed, false);
}

absl::StatusOr<v1::Lease> Controller::GetLease(const std::string& lease_id) {
  absl::MutexLock lock(&mu_);
  auto it = leases_.leases().find(lease_id);
  if (it == leases_.leases().end() || it->second.expires_unix_ms <= options_.clock->NowMillis()) {
    return absl::NotFoundError(fmt::format("lease {} does not exist (released or expired)", lease_id));
  }
  return LeaseProtoLocked(it->second, false);
}

absl::Status Controller::Release(const std::string& lease_id) {
  absl::MutexLock lock(&mu_);
  while (true) {
    const LeaseRecord* lease = leases_.Find(lease_id);
    if (lease == nullptr) {
      return absl::NotFoundError(fmt::format("lease {} is unknown or expired", lease_id));
    }
    if (!busy_leases_.contains(lease_id) && !busy_deployments_.contains(lease->deployment)) break;
    changed_.Wait(&mu_);
  }
  busy_leases_.insert(lease_id);
  absl::Status written = DurableWriteLocked({LeaseDeletion{lease_id}});
  busy_leases_.erase(lease_id);
  changed_.SignalAll();
  if (!written.ok()) return StoreFailure(fmt::format("release lease {}", lease_id), written);
  // Gone already if its instance was removed meanwhile; released either way.
  absl::StatusOr<LeaseRecord> lease = leases_.Release(lease_id);
  if (lease.ok()) ReleaseLeaseLocked(*lease);
  return absl::OkStatus();
}

void Controller::ReleaseLeaseLocked(const LeaseRecord& lease) {
  auto it = instances_.find(lease.instance_id);
  if (it == instances_.end()) return;
  Instance& inst = it->second;
  if (inst.leases > 0 && --inst.leases == 0) {
    inst.idle_since_ms = options_.clock->NowMillis();
    if (inst.draining) {
      Log(Level::info, "controller", {{"deployment", inst.deployment}, {"instance", inst.id}},
          "instance {} of deleted deployment {}: last lease ended, unloading", inst.id,
          inst.deployment);
      EventLocked(inst, "last lease ended");
      StopInstanceLocked(inst);
      PersistLocked({InstanceDeletion{inst.id}}, "deletion of drained instance " + inst.id);
      instances_.erase(it);
    } else {
      PersistInstanceLocked(inst);
    }
  }
  changed_.SignalAll();
}

std::vector<v1::WorkerStatus> Controller::ListWorkers() {
  absl::MutexLock lock(&mu_);
  return workers_.List();
}

absl::Status Controller::RegisterWorker(const v1::WorkerInfo& info) {
  if (info.worker_id().empty() || info.address().empty()) {
    return absl::InvalidArgumentError("worker registration needs worker_id and address");
  }
  // Worker records have no cascade and a later registration or heartbeat rewrites them,
  // so this write needs no busy marker.
  absl::Status written = WriteWorkerRecord(info);
  if (!written.ok()) {
    return StoreFailure(fmt::format("register worker {}", info.worker_id()), written);
  }
  absl::MutexLock lock(&mu_);
  std::set<std::string> changed = ChangedModelsLocked(info);
  if (workers_.Upsert(info, options_.clock->NowMillis())) {
    Log(Level::info, "controller", {{"worker", info.worker_id()}}, "worker {} registered at {}",
        info.worker_id(), info.address());
    ClearFailuresLocked("", fmt::format("worker {} registered", info.worker_id()));
  }
  for (const std::string& model : changed) {
    ClearFailuresLocked(model, fmt::format("model {} changed on worker {}", model, info.worker_id()));
    ForgetFootprintsLocked(model);
  }
  ReconcileWorkerLocked(info);
  changed_.SignalAll();
  return absl::OkStatus();
}

absl::Status Controller::WriteWorkerRecord(const v1::WorkerInfo& info) {
  return writer_
      .Submit({WorkerRecord{info.worker_id(), info.address(), info.SerializeAsString(),
                            options_.clock->NowMillis()}})
      ->Wait();
}

absl::Status Controller::Heartbeat(const v1::WorkerInfo& info) {
  if (info.worker_id().empty()) return absl::InvalidArgumentError("heartbeat needs worker_id");
  bool registers;  // an unknown, lost or moved worker: the heartbeat registers it again
  {
    absl::MutexLock lock(&mu_);
    const WorkerRegistry::Entry* before = workers_.Find(info.worker_id());
    registers = before == nullptr || before->lost || before->info.address() != info.address();
  }
  if (registers) {
    absl::Status written = WriteWorkerRecord(info);
    if (!written.ok()) {
      return StoreFailure(fmt::format("heartbeat of worker {}", info.worker_id()), written);
    }
  }
  absl::MutexLock lock(&mu_);
  std::set<std::string> changed = ChangedModelsLocked(info);
  if (workers_.Upsert(info, options_.clock->NowMillis())) {
    ClearFailuresLocked("", fmt::format("worker {} registered", info.worker_id()));
  }
  for (const std::string& model : changed) {
    ClearFailuresLocked(model, fmt::format("model {} changed on worker {}", model, info.worker_id()));
    ForgetFootprintsLocked(model);
  }
  ReconcileWorkerLocked(info);
  return absl::OkStatus();
}

v1::Instance Controller::InstanceProtoLocked(const Instance& inst) {
  v1::Instance p;
  p.set_instance_id(inst.id);
  p.set_deployment(inst.deployment);
  p.set_worker_id(inst.worker_id);
  if (const WorkerRegistry::Entry* w = workers_.Find(inst.worker_id)) {
    p.set_worker_address(w->info.address());
  }
  p.set_state(inst.state);
  for (const std::string& d : inst.device_names) p.add_devices(d);
  p.set_load_seconds(inst.load_seconds);
  p.set_bytes_done(inst.bytes_done);
  p.set_bytes_total(inst.bytes_total);
  p.set_leases(inst.leases);
  auto d = deployments_.find(inst.deployment);
  p.set_outdated(d != deployments_.end() && d->second.digest != inst.config_digest);
  if (d != deployments_.end()) {
    const quant::QuantConfig& q = d->second.config.quantization;
    p.set_quantization(q.type == quant::QuantType::kNone ? "none" : q.VariantKey());
  }
  p.set_source(inst.source);
  p.set_tier(inst.tier);
  p.set_gbps(inst.gbps);
  p.set_spread(inst.spread);
  p.set_device_bytes(inst.bytes_per_device * inst.devices.size());
  return p;
}

v1::Deployment Controller::ToProtoLocked(const std::string& name, const Deployment& d) {
  v1::Deployment p;
  p.set_name(name);
  p.set_model(d.config.model);
  p.set_config_yaml(d.yaml);
  p.set_min_instances(d.config.auto_scaling.min_instances);
  p.set_max_instances(d.config.auto_scaling.max_instances);
  p.set_target(d.config.auto_scaling.target);
  p.set_keep_alive_seconds(d.config.auto_scaling.keep_alive);
  p.set_desired_instances(d.desired);
  p.set_message(d.message);
  p.set_state(d.failed ? "failed" : "active");
  if (!d.last_error.ok()) {
    p.set_last_error(fmt::format("{}: {}", absl::StatusCodeToString(d.last_error.code()),
                                 std::string(d.last_error.message())));
  }
  p.set_consecutive_failures(d.failures);
  for (uint64_t b : d.footprint) p.add_footprint_bytes(b);
  const int64_t now = options_.clock->NowMillis();
  if (!d.failed && d.retry_after_ms > now) p.set_retry_in_seconds((d.retry_after_ms - now) / 1000.0);
  for (const auto& [id, inst] : instances_) {
    if (inst.deployment == name) *p.add_instances() = InstanceProtoLocked(inst);
  }
  return p;
}

v1::Lease Controller::LeaseProtoLocked(const LeaseRecord& lease, bool cold) {
  v1::Lease p;
  p.set_lease_id(lease.lease_id);
  p.set_deployment(lease.deployment);
  p.set_expires_unix_ms(lease.expires_unix_ms);
  p.set_ttl_seconds(lease.ttl_seconds);
  p.set_cold_start(cold);
  if (auto it = instances_.find(lease.instance_id); it != instances_.end()) {
    *p.mutable_instance() = InstanceProtoLocked(it->second);
  }
  return p;
}

}  // namespace loadstar::daemon
