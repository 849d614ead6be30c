// Controller reconciliation: recovery from the state store, the periodic Tick (lost
// workers, expired leases, autoscaling), placement and the load/unload calls to workers,
// and reconciling the controller's view with what each worker reports.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/autoscaler.h"
#include "daemon/controller.h"
#include "daemon/load_spec.h"
#include "base/logging.h"
#include "spdlog/spdlog.h"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

namespace {

constexpr size_t kMaxEvents = 4096;

// The store artifact a deployment's quantization would load; "" for none.
std::string VariantKey(const quant::QuantConfig& q) {
  return q.type == quant::QuantType::kNone ? "" : q.VariantKey();
}

}  // namespace

absl::Status Controller::Recover() {
  absl::StatusOr<StateSnapshot> snap = options_.state->Load();
  if (!snap.ok()) return snap.status();
  absl::MutexLock lock(&mu_);
  int64_t now = options_.clock->NowMillis();
  for (const WorkerRecord& w : snap->workers) {
    v1::WorkerInfo info;
    if (!info.ParseFromString(w.info)) continue;
    // A grace period of one heartbeat timeout from now: a worker that is still up
    // heartbeats before it runs out; one that died meanwhile is then declared lost.
    workers_.Upsert(info, now);
  }
  for (const DeploymentRecord& r : snap->deployments) {
    absl::StatusOr<DeploymentConfig> config = ParseDeploymentConfig(r.config_yaml);
    if (!config.ok()) {
      Log(Level::err, "controller", {{"deployment", r.name}}, "dropping stored deployment {}: {}",
          r.name, std::string(config.status().message()));
      continue;
    }
    Deployment& d = deployments_[r.name];
    d.config = *config;
    d.yaml = r.config_yaml;
    d.digest = ConfigDigest(d.yaml);
    d.created_ms = r.created_unix_ms;
    if (!r.failed_message.empty()) {  // failed before the restart: stays failed
      d.failed = true;
      d.failures = options_.max_load_failures;
      d.message = r.failed_message;
      d.last_error = absl::Status(static_cast<absl::StatusCode>(r.last_error_code),
                                  r.last_error_message);
    }
  }
  for (const InstanceRecord& r : snap->instances) {
    const WorkerRegistry::Entry* w = workers_.Find(r.worker_id);
    // A leased instance of a deleted deployment is still draining (Controller::Delete).
    const bool draining = r.state == "unloading";
    if ((!deployments_.contains(r.deployment) && !draining) || w == nullptr) {
      PersistLocked({InstanceDeletion{r.instance_id}}, "deletion of stale instance " + r.instance_id);
      continue;
    }
    Instance& inst = instances_[r.instance_id];
    inst.id = r.instance_id;
    inst.deployment = r.deployment;
    inst.worker_id = r.worker_id;
    inst.state = draining ? "unloading" : r.state == "ready" ? "ready" : "loading";
    inst.draining = draining;
    inst.idle_since_ms = r.idle_since_unix_ms;
    inst.ready_since_ms = now;
    inst.bytes_per_device = r.bytes_per_device;
    inst.recovered = true;
    // Records written before rolling updates carry no digest: the current config's.
    auto dit = deployments_.find(r.deployment);
    inst.config_digest = !r.config_digest.empty() ? r.config_digest
                         : dit != deployments_.end() ? dit->second.digest : "";
    for (absl::string_view s : absl::StrSplit(r.devices, ',', absl::SkipEmpty())) {
      uint32_t index = static_cast<uint32_t>(std::stoul(std::string(s)));
      inst.devices.push_back(index);
      if (index < static_cast<uint32_t>(w->info.devices_size())) {
        inst.device_names.push_back(w->info.devices(index).name());
      }
    }
  }
  for (const LeaseRecord& l : snap->leases) {
    auto it = instances_.find(l.instance_id);
    if (it == instances_.end()) {
      // An orphan: its instance was removed while the lease was being written.
      PersistLocked({LeaseDeletion{l.lease_id}}, "deletion of orphan lease " + l.lease_id);
      continue;
    }
    leases_.Put(l);
    ++it->second.leases;
  }
  // Draining instances whose leases ended while no controller ran: unload them now.
  std::vector<std::string> drained;
  for (const auto& [id, inst] : instances_) {
    if (inst.draining && inst.leases == 0) drained.push_back(id);
  }
  for (const std::string& id : drained) {
    StopInstanceLocked(instances_.at(id));
    PersistLocked({InstanceDeletion{id}}, "deletion of drained instance " + id);
    instances_.erase(id);
  }
  if (!deployments_.empty()) {
    Log(Level::info, "controller", {}, "recovered {} deployments, {} instances, {} leases, {} workers",
                 deployments_.size(), instances_.size(), leases_.leases().size(),
                 workers_.entries().size());
  }
  return absl::OkStatus();
}

void Controller::Tick() {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  int64_t now = options_.clock->NowMillis();
  for (const std::string& worker_id : workers_.ExpireLost(now)) {
    Log(Level::warn, "controller", {{"worker", worker_id}}, "worker {} lost: no heartbeat for {} s",
        worker_id,
                 options_.heartbeat_timeout_seconds);
    std::vector<std::string> ids;
    for (const auto& [id, inst] : instances_) {
      if (inst.worker_id == worker_id) ids.push_back(id);
    }
    for (const std::string& id : ids) {
      Instance& inst = instances_.at(id);
      inst.canceller->Cancel();
      RemoveInstanceLocked(id, fmt::format("worker {} lost {}; rescheduling", worker_id,
                                           inst.state == "ready" ? "with it" : "during load"));
    }
  }
  for (const LeaseRecord& lease : leases_.Expire(now, busy_leases_)) {
    Log(Level::info, "controller",
        {{"deployment", lease.deployment}, {"instance", lease.instance_id}, {"lease", lease.lease_id}},
        "lease {} on {} expired", lease.lease_id, lease.deployment);
    PersistLocked({LeaseDeletion{lease.lease_id}}, "expiry of lease " + lease.lease_id);
    ReleaseLeaseLocked(lease);
  }
  std::vector<std::string> names;
  for (const auto& [name, d] : deployments_) names.push_back(name);
  for (const std::string& name : names) ReconcileLocked(name);
  while (events_.size() > kMaxEvents) events_.pop_front();
}

void Controller::ReconcileLocked(const std::string& name) {
  auto dit = deployments_.find(name);
  if (dit == deployments_.end() || stopping_) return;
  Deployment& d = dit->second;
  RefreshFootprintLocked(name, d);  // known before demand comes, for the first placement
  int64_t now = options_.clock->NowMillis();
  std::vector<InstanceLoad> loads;  // on the current config
  uint32_t outdated = 0, outdated_leases = 0, current_ready = 0;
  for (const auto& [id, inst] : instances_) {
    if (inst.deployment != name || inst.state == "unloading") continue;
    if (inst.config_digest != d.digest) {
      ++outdated;
      outdated_leases += inst.leases;
      continue;
    }
    // A lease being written counts: its Acquire is about to hold the instance.
    loads.push_back({id, inst.state == "ready", inst.leases + inst.pending_leases,
                     inst.idle_since_ms});
    current_ready += inst.state == "ready";
  }
  // The consumers of outdated instances are demand on the new config too.
  ScalingDecision decision =
      DecideScaling(d.config.auto_scaling, loads, d.waiting + outdated_leases, now);
  // A rolling update replaces outdated instances one for one, up to max_instances.
  uint32_t want = std::max(decision.desired,
                           std::min(outdated, d.config.auto_scaling.max_instances));
  uint32_t start = want > loads.size() ? want - static_cast<uint32_t>(loads.size()) : 0;
  d.desired = want;
  if (start == 0 && loads.size() >= d.desired && !d.failed) d.message.clear();
  if (!decision.stop.empty() && start == 0) {
    Log(Level::info, "controller", {{"deployment", name}, {"instance", decision.stop}},
        "scaling {} down: instance {} idle for {} s", name, decision.stop,
                 d.config.auto_scaling.keep_alive);
    RetireInstanceLocked(decision.stop, "idle past keep_alive");
  }
  if (outdated > 0) RollLocked(name, d, current_ready);
  if (start == 0 || d.failed || now < d.retry_after_ms) return;
  ClusterSnapshot cluster = SnapshotLocked();
  PlacementRequest request = PlacementRequestLocked(name, d);
  for (uint32_t i = 0; i < start; ++i) {
    Placement p;
    if (request.checkpoint_bytes == 0) {
      p.reason = cluster.workers.empty()
                     ? absl::UnavailableError(workers_.entries().empty()
                                                  ? "no worker is registered"
                                                  : "no worker is alive (every registered one is lost)")
                     : absl::NotFoundError(fmt::format(
                           "model '{}' is not in the store of any registered worker", name));
    } else {
      p = options_.policy->Place(cluster, request);
    }
    d.placement_blocked = p.kind == Placement::Kind::kRetryLater;
    if (p.kind != Placement::Kind::kPlaced) {
      if (d.message != p.reason.message()) {
        Log(Level::warn, "controller", {{"deployment", name}}, "cannot place {}: {}", name,
            std::string(p.reason.message()));
      }
      d.message = std::string(p.reason.message());
      if (p.kind == Placement::Kind::kInfeasible && !absl::IsUnavailable(p.reason)) {
        d.last_error = p.reason;
        ++d.error_seq;
        changed_.SignalAll();
      }
      return;
    }
    const uint64_t per_device = PerDeviceBytes(request);
    StartLoadLocked(name, d, p, per_device);
    // Account for it in the snapshot so the next instance of this pass goes elsewhere.
    for (WorkerSnapshot& w : cluster.workers) {
      if (w.worker_id != p.worker_id) continue;
      for (uint32_t dev : p.devices) w.devices[dev].free_bytes -= per_device;
      w.queue_wait_seconds += p.estimated_seconds;
      ++w.replicas[name];
    }
  }
}

ClusterSnapshot Controller::SnapshotLocked() {
  ClusterSnapshot cluster;
  for (const auto& [id, entry] : workers_.entries()) {
    if (entry.lost || entry.suspect) continue;
    WorkerSnapshot& w = cluster.workers.emplace_back();
    w.worker_id = id;
    const v1::WorkerInfo& info = entry.info;
    for (const v1::DeviceInfo& dev : info.devices()) {
      w.devices.push_back({dev.total_bytes(), dev.total_bytes()});
    }
    if (info.disk_bandwidth() > 0) w.disk_bandwidth = info.disk_bandwidth();
    if (info.copy_bandwidth() > 0) w.copy_bandwidth = info.copy_bandwidth();
    // Measured by the worker's communicator; 0 (none) turns the resident-replica tier off.
    w.device_copy_bandwidth = info.device_copy_bandwidth();
    for (const v1::StoredModel& m : info.models()) {
      w.models_on_disk.insert(m.name());
      if (m.in_host_cache()) w.models_in_host_cache.insert(m.name());
      for (const std::string& v : m.variants()) w.variants_on_disk.insert(m.name() + "@" + v);
    }
  }
  std::map<std::string, WorkerSnapshot*> by_id;
  for (WorkerSnapshot& w : cluster.workers) by_id[w.worker_id] = &w;
  for (const auto& [id, inst] : instances_) {
    auto it = by_id.find(inst.worker_id);
    if (it == by_id.end()) continue;
    WorkerSnapshot& w = *it->second;
    for (uint32_t dev : inst.devices) {
      if (dev >= w.devices.size()) continue;
      DeviceSnapshot& ds = w.devices[dev];
      ds.free_bytes -= std::min(ds.free_bytes, inst.bytes_per_device);
    }
    // A replica is copied from a resident instance of the same LoadSpec only: an outdated
    // one (another config) is not a source.
    auto dep = deployments_.find(inst.deployment);
    if (inst.state == "ready" && dep != deployments_.end() &&
        inst.config_digest == dep->second.digest) {
      w.resident.insert(inst.deployment);
    }
    if (inst.state != "unloading") ++w.replicas[inst.deployment];
    if (inst.state == "loading" && inst.bytes_total > inst.bytes_done) {
      w.queue_wait_seconds += static_cast<double>(inst.bytes_total - inst.bytes_done) /
                              std::min(w.disk_bandwidth, w.copy_bandwidth);
    }
  }
  return cluster;
}

PlacementRequest Controller::PlacementRequestLocked(const std::string& name, const Deployment& d) {
  PlacementRequest r;
  r.deployment = name;
  r.model = d.config.model;
  r.variant = VariantKey(d.config.quantization);
  r.num_gpus = d.config.num_gpus;
  r.allowed_workers = d.config.placement.memory_pool;
  r.local_disk = d.config.placement.local_disk;
  r.spread_required = d.config.placement.spread == "required";
  for (const auto& [id, entry] : workers_.entries()) {
    if (entry.lost) continue;
    for (const v1::StoredModel& m : entry.info.models()) {
      if (m.name() == r.model) r.checkpoint_bytes = std::max(r.checkpoint_bytes, m.bytes());
    }
  }
  if (!d.footprint.empty()) {
    // The worker's plan: what the load allocates on each device.
    r.loaded_bytes = 0;
    for (uint64_t b : d.footprint) r.loaded_bytes += b;
    r.device_bytes = *std::max_element(d.footprint.begin(), d.footprint.end());
    return r;
  }
  r.loaded_bytes = EstimateLoadedBytes(
      r.checkpoint_bytes, std::string(quant::QuantTypeName(d.config.quantization.type)),
      static_cast<uint32_t>(d.config.quantization.blocksize));
  return r;
}

void Controller::StartLoadLocked(const std::string& name, Deployment& d, const Placement& p,
                                 uint64_t bytes_per_device) {
  const WorkerRegistry::Entry* w = workers_.Find(p.worker_id);
  Instance inst;
  inst.id = RandomId("i-").substr(0, 18);
  inst.deployment = name;
  inst.worker_id = p.worker_id;
  inst.state = "loading";
  inst.devices = p.devices;
  for (uint32_t dev : p.devices) inst.device_names.push_back(w->info.devices(dev).name());
  inst.bytes_per_device = bytes_per_device;
  inst.config_digest = d.digest;
  v1::LoadInstanceRequest request;
  request.set_instance_id(inst.id);
  request.set_deployment(name);
  *request.mutable_spec() = ToLoadSpec(d.config);
  for (uint32_t dev : p.devices) request.add_devices(dev);
  Log(Level::info, "controller",
      {{"deployment", name}, {"instance", inst.id}, {"worker", p.worker_id}},
      "placing {} instance {} on worker {} (devices {}; estimated {:.3f} s)", name,
               inst.id, p.worker_id, absl::StrJoin(inst.device_names, ","), p.estimated_seconds);
  d.message.clear();
  PersistInstanceLocked(inst);
  EventLocked(inst, fmt::format("placed on {}", p.worker_id));
  auto canceller = inst.canceller;
  std::string id = inst.id;
  instances_[id] = std::move(inst);
  tasks_.Spawn([this, id, address = w->info.address(), request, canceller] {
    RunLoad(id, address, request, canceller);
  });
}

void Controller::RunLoad(std::string instance_id, std::string address,
                         v1::LoadInstanceRequest request, std::shared_ptr<CallCanceller> canceller) {
  std::shared_ptr<WorkerClient> client = options_.workers->ForAddress(address);
  absl::StatusOr<v1::InstanceReport> result = client->LoadInstance(
      request,
      [&](const v1::LoadProgress& p) {
        absl::MutexLock lock(&mu_);
        auto it = instances_.find(instance_id);
        if (it == instances_.end()) return;
        it->second.bytes_done = p.bytes_done();
        it->second.bytes_total = p.bytes_total();
        EventLocked(it->second);
      },
      canceller.get());
  absl::MutexLock lock(&mu_);
  auto it = instances_.find(instance_id);
  if (it == instances_.end()) return;  // deleted or scaled down meanwhile; unload was sent
  Instance& inst = it->second;
  int64_t now = options_.clock->NowMillis();
  if (result.ok()) {
    if (auto dit = deployments_.find(inst.deployment); dit != deployments_.end()) {
      dit->second.failures = 0;  // a success resets the backoff
    }
    inst.state = "ready";
    inst.source = result->source();
    inst.tier = result->tier();
    inst.gbps = result->gbps();
    inst.spread = result->spread();
    inst.load_seconds = result->load_seconds();
    inst.bytes_done = inst.bytes_total = std::max(inst.bytes_total, result->bytes());
    inst.ready_since_ms = inst.idle_since_ms = now;
    Log(Level::info, "controller",
        {{"deployment", inst.deployment}, {"instance", instance_id}, {"worker", inst.worker_id}},
        "{} instance {} ready on {} in {:.3f} s", inst.deployment, instance_id,
                 inst.worker_id, inst.load_seconds);
    PersistInstanceLocked(inst);
    EventLocked(inst);
    changed_.SignalAll();
    return;
  }
  absl::Status status(result.status().code(),
                      fmt::format("loading '{}' on worker {}: {}", inst.deployment,
                                  inst.worker_id, std::string(result.status().message())));
  if (absl::IsUnavailable(result.status()) || absl::IsCancelled(result.status())) {
    status = absl::UnavailableError(
        fmt::format("worker {} lost during load; rescheduling", inst.worker_id));
  }
  Log(Level::warn, "controller",
      {{"deployment", inst.deployment}, {"instance", inst.id}, {"worker", inst.worker_id}}, "{}",
      std::string(status.message()));
  if (absl::IsUnavailable(status)) workers_.MarkSuspect(inst.worker_id);
  auto dit = deployments_.find(inst.deployment);
  const std::string deployment = inst.deployment;
  RemoveInstanceLocked(instance_id, std::string(status.message()));
  if (dit != deployments_.end()) {
    Deployment& d = dit->second;
    d.last_error = status;
    ++d.error_seq;
    d.message = std::string(status.message());
    if (absl::IsUnavailable(status)) {
      d.retry_after_ms = now + static_cast<int64_t>(options_.load_retry_backoff_seconds * 1000);
    } else {
      LoadFailedLocked(deployment, d, status, now);
    }
  }
}

void Controller::LoadFailedLocked(const std::string& name, Deployment& d,
                                  const absl::Status& status, int64_t now) {
  ++d.failures;
  // 0.5 s, 1 s, 2 s, ... 30 s: the exponent is bounded so the double never overflows.
  double backoff = options_.load_retry_backoff_seconds *
                   std::pow(2.0, std::min<uint32_t>(d.failures - 1, 62));
  backoff = std::min(backoff, options_.load_retry_backoff_max_seconds);
  d.retry_after_ms = now + static_cast<int64_t>(backoff * 1000);
  if (options_.max_load_failures == 0 || d.failures < options_.max_load_failures) {
    Log(Level::info, "controller", {{"deployment", name}},
        "{}: load failure {} in a row; next try in {:.1f} s", name, d.failures, backoff);
    return;
  }
  d.failed = true;
  d.message = fmt::format(
      "failed: {} consecutive loads failed, not retried until it is redeployed or updated, a "
      "worker registers or the model changes in a worker's store; last error: {}",
      d.failures, std::string(status.message()));
  // Durable, so that a restarted controller does not start the sequence again.
  PersistLocked({RecordOf(name, d)}, "failed state of deployment " + name);
  Log(Level::err, "controller", {{"deployment", name}}, "{}: {}", name, d.message);
  v1::DeploymentEvent e;
  e.set_deployment(name);
  e.set_state("failed");
  e.set_message(d.message);
  events_.emplace_back(next_event_seq_++, std::move(e));
  changed_.SignalAll();
}

void Controller::ClearFailuresLocked(const std::string& model, const std::string& why,
                                     const std::string& only) {
  for (auto& [name, d] : deployments_) {
    if (!model.empty() && d.config.model != model) continue;
    if (!only.empty() && name != only) continue;
    if (!d.failed && d.failures == 0) continue;
    if (d.failed) {
      Log(Level::info, "controller", {{"deployment", name}}, "{}: retrying the failed deployment ({})",
          name, why);
      v1::DeploymentEvent e;
      e.set_deployment(name);
      e.set_state("retrying");
      e.set_message(why);
      events_.emplace_back(next_event_seq_++, std::move(e));
      d.message.clear();
    }
    const bool was_failed = d.failed;
    d.failed = false;
    d.failures = 0;
    d.retry_after_ms = 0;
    if (was_failed) PersistLocked({RecordOf(name, d)}, "retry of deployment " + name);
  }
  changed_.SignalAll();
}

std::set<std::string> Controller::ChangedModels(const v1::WorkerInfo* before,
                                                const v1::WorkerInfo& info) {
  std::map<std::string, const v1::StoredModel*> old;
  if (before != nullptr) {
    for (const v1::StoredModel& m : before->models()) old[m.name()] = &m;
  }
  std::set<std::string> changed;
  for (const v1::StoredModel& m : info.models()) {
    auto it = old.find(m.name());
    if (it == old.end() || it->second->bytes() != m.bytes() ||
        !std::equal(m.variants().begin(), m.variants().end(), it->second->variants().begin(),
                    it->second->variants().end())) {
      changed.insert(m.name());
    }
  }
  return changed;
}

void Controller::StopInstanceLocked(Instance& inst) {
  inst.canceller->Cancel();
  const WorkerRegistry::Entry* w = workers_.Find(inst.worker_id);
  if (w == nullptr || w->lost) return;
  tasks_.Spawn([this, worker = inst.worker_id, address = w->info.address(), id = inst.id] {
    RunUnload(worker, address, id);
  });
}

void Controller::RetireInstanceLocked(const std::string& id, const std::string& why) {
  auto it = instances_.find(id);
  if (it == instances_.end()) return;
  StopInstanceLocked(it->second);
  it->second.state = "unloading";
  EventLocked(it->second, why);
  PersistLocked({InstanceDeletion{id}}, "deletion of retired instance " + id);
  instances_.erase(it);
  changed_.SignalAll();
}

void Controller::RollLocked(const std::string& name, Deployment& d, uint32_t current_ready) {
  std::vector<std::string> loading, idle;
  uint32_t outdated_ready = 0;
  for (const auto& [id, inst] : instances_) {
    if (inst.deployment != name || inst.state == "unloading" ||
        inst.config_digest == d.digest) {
      continue;
    }
    if (inst.state != "ready") {
      loading.push_back(id);  // still loading the replaced config: not worth finishing
      continue;
    }
    ++outdated_ready;
    // Leased ones (or about to be) stay until released.
    if (inst.leases == 0 && inst.pending_leases == 0) idle.push_back(id);
  }
  for (const std::string& id : loading) RetireInstanceLocked(id, "replaced by an update");
  bool current_loading = false;
  for (const auto& [id, inst] : instances_) {
    current_loading |= inst.deployment == name && inst.config_digest == d.digest &&
                       inst.state != "ready" && inst.state != "unloading";
  }
  const uint32_t min = d.config.auto_scaling.min_instances;
  for (const std::string& id : idle) {
    // Keep min_instances ready across old and new, unless the old ones hold the memory
    // the new ones wait for (then capacity does not allow it).
    bool keeps_min = current_ready + outdated_ready - 1 >= min;
    bool frees_capacity = d.placement_blocked && !current_loading;
    if (!keeps_min && !frees_capacity) break;
    RetireInstanceLocked(id, "replaced by an update");
    --outdated_ready;
    if (!keeps_min) break;  // one at a time, so the freed memory goes to a new instance
  }
}

void Controller::RunUnload(std::string worker_id, std::string address, std::string instance_id) {
  absl::Status s = options_.workers->ForAddress(address)->UnloadInstance(instance_id);
  if (!s.ok() && !absl::IsNotFound(s)) {
    Log(Level::warn, "controller", {{"instance", instance_id}, {"worker", worker_id}},
        "unloading {} on worker {}: {}", instance_id, worker_id, std::string(s.message()));
  }
}

void Controller::RemoveInstanceLocked(const std::string& id, const std::string& why) {
  auto it = instances_.find(id);
  if (it == instances_.end()) return;
  // The instance's deletion takes its lease records with it.
  for (const LeaseRecord& lease : leases_.RemoveInstance(id)) (void)lease;
  it->second.state = "failed";
  EventLocked(it->second, why);
  PersistLocked({InstanceDeletion{id}}, "deletion of removed instance " + id);
  instances_.erase(it);
  changed_.SignalAll();
}

void Controller::ReconcileWorkerLocked(const v1::WorkerInfo& info) {
  int64_t now = options_.clock->NowMillis();
  std::map<std::string, const v1::InstanceReport*> reported;
  for (const v1::InstanceReport& r : info.instances()) reported[r.instance_id()] = &r;
  std::vector<std::string> gone;
  for (auto& [id, inst] : instances_) {
    if (inst.worker_id != info.worker_id()) continue;
    auto r = reported.find(id);
    if (r == reported.end()) {
      // A load we started may not show up yet; a ready instance that has been ready for
      // more than two heartbeats must.
      int64_t grace = 2 * heartbeat_interval_ms() + 1000;
      if (inst.recovered || (inst.state == "ready" && now - inst.ready_since_ms > grace)) {
        gone.push_back(id);
      }
      continue;
    }
    if (!inst.recovered) continue;
    inst.recovered = false;
    if (inst.draining) continue;  // stays "unloading" until its leases end
    inst.load_seconds = r->second->load_seconds();
    if (r->second->state() == "ready" && inst.state != "ready") {
      inst.state = "ready";
      inst.ready_since_ms = inst.idle_since_ms = now;
      PersistInstanceLocked(inst);
      EventLocked(inst, "recovered");
      changed_.SignalAll();
    } else if (r->second->state() == "loading") {
      // Its load call died with the previous controller: the worker cancels such loads.
      inst.recovered = true;
    }
  }
  for (const std::string& id : gone) {
    RemoveInstanceLocked(id, fmt::format("worker {} no longer holds it", info.worker_id()));
  }
  for (const auto& [id, report] : reported) {
    if (instances_.contains(id)) continue;
    // An instance nobody wants (its deployment was deleted, or a load the previous
    // controller started): free its memory.
    tasks_.Spawn([this, worker = info.worker_id(), address = info.address(), id = id] {
      RunUnload(worker, address, id);
    });
  }
}

void Controller::EventLocked(const Instance& inst, const std::string& message) {
  v1::DeploymentEvent e;
  e.set_deployment(inst.deployment);
  e.set_instance_id(inst.id);
  e.set_state(inst.state);
  e.set_bytes_done(inst.bytes_done);
  e.set_bytes_total(inst.bytes_total);
  e.set_message(message);
  events_.emplace_back(next_event_seq_++, std::move(e));
  changed_.SignalAll();
}

InstanceRecord Controller::RecordOf(const Instance& inst) {
  return {inst.id,           inst.deployment,       inst.worker_id,
          inst.state,        inst.idle_since_ms,    absl::StrJoin(inst.devices, ","),
          inst.bytes_per_device, inst.config_digest};
}

DeploymentRecord Controller::RecordOf(const std::string& name, const Deployment& d) {
  DeploymentRecord r{name, d.yaml, d.created_ms};
  if (d.failed) {
    r.failed_message = d.message;
    r.last_error_code = static_cast<int32_t>(d.last_error.code());
    r.last_error_message = std::string(d.last_error.message());
  }
  return r;
}

void Controller::PersistInstanceLocked(const Instance& inst) {
  PersistLocked({RecordOf(inst)}, "instance " + inst.id);
}

}  // namespace loadstar::daemon
