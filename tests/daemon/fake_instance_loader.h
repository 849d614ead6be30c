// An in-memory InstanceLoader for tests: models are names with sizes, a load takes
// `load_seconds` (reporting progress, honouring cancellation) and holds the bytes in
// plain memory accounted against fake devices. Tests only.
#pragma once

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "daemon/instance_loader.h"

namespace loadstar::daemon::testing {

class FakeInstanceLoader : public InstanceLoader {
 public:
  FakeInstanceLoader(int devices, uint64_t device_bytes) : device_bytes_(device_bytes) {
    used_.assign(devices, 0);
  }

  void AddModel(const std::string& name, uint64_t bytes) {
    absl::MutexLock lock(&mu_);
    models_[name] = bytes;
  }
  // A kept non-weight file of `model` (served by ModelFiles / ReadModelFile).
  void AddFile(const std::string& model, const std::string& name, std::string contents) {
    absl::MutexLock lock(&mu_);
    files_[model][name] = std::move(contents);
  }
  // Loads of `name` fail with `status` while it still lists (a weight file deleted from
  // under the store); OK makes them work again.
  void SetLoadError(const std::string& name, absl::Status status) {
    absl::MutexLock lock(&mu_);
    if (status.ok()) {
      load_errors_.erase(name);
    } else {
      load_errors_[name] = std::move(status);
    }
  }
  // PlanLoad of `name` fails with `status` (OK: plans again), as a worker's plan of a
  // config that cannot load (an uncovered layer map, a cap exceeded).
  void SetPlanError(const std::string& name, absl::Status status) {
    absl::MutexLock lock(&mu_);
    if (status.ok()) {
      plan_errors_.erase(name);
    } else {
      plan_errors_[name] = std::move(status);
    }
  }
  // PlanLoad of `name` answers these per-device bytes instead of the even split.
  void SetPlan(const std::string& name, std::vector<uint64_t> device_bytes) {
    absl::MutexLock lock(&mu_);
    plans_[name] = std::move(device_bytes);
  }
  int plan_calls() const {
    absl::MutexLock lock(&mu_);
    return plan_calls_;
  }
  int load_calls() const {
    absl::MutexLock lock(&mu_);
    return load_calls_;
  }
  void set_load_seconds(double s) {
    absl::MutexLock lock(&mu_);
    load_seconds_ = s;
  }
  int live_instances() const {
    absl::MutexLock lock(&mu_);
    return live_;
  }
  uint64_t used(int device) const {
    absl::MutexLock lock(&mu_);
    return used_[device];
  }

  std::vector<loadstar::v1::DeviceInfo> Devices() const override {
    absl::MutexLock lock(&mu_);
    std::vector<loadstar::v1::DeviceInfo> out;
    for (size_t i = 0; i < used_.size(); ++i) {
      auto& d = out.emplace_back();
      d.set_name("host:" + std::to_string(i));
      d.set_kind("host");
      d.set_total_bytes(device_bytes_);
      d.set_free_bytes(device_bytes_ - used_[i]);
    }
    return out;
  }
  absl::StatusOr<std::vector<loadstar::v1::StoredModel>> ListModels() const override {
    absl::MutexLock lock(&mu_);
    std::vector<loadstar::v1::StoredModel> out;
    for (const auto& [name, bytes] : models_) {
      auto& m = out.emplace_back();
      m.set_name(name);
      m.set_bytes(bytes);
    }
    return out;
  }
  uint64_t host_cache_bytes() const override { return 0; }
  uint64_t host_cache_used() const override { return 0; }
  double disk_bandwidth() const override { return 1e9; }
  double copy_bandwidth() const override { return 1e10; }

  // The fake's loads hold the model's bytes whatever the quantization: its plan says so,
  // split evenly over the load's devices unless SetPlan named other bytes.
  absl::StatusOr<loadstar::v1::PlanLoadResponse> PlanLoad(
      const loadstar::v1::LoadSpec& spec) const override {
    absl::MutexLock lock(&mu_);
    ++plan_calls_;
    if (auto e = plan_errors_.find(spec.model()); e != plan_errors_.end()) return e->second;
    auto it = models_.find(spec.model());
    if (it == models_.end()) {
      return absl::NotFoundError("model '" + spec.model() + "' is not in the store");
    }
    const uint32_t n = std::max<uint32_t>(spec.num_gpus(), 1);
    loadstar::v1::PlanLoadResponse out;
    if (auto p = plans_.find(spec.model()); p != plans_.end()) {
      for (uint64_t b : p->second) out.add_device_bytes(b);
    } else {
      for (uint32_t i = 0; i < n; ++i) out.add_device_bytes((it->second + n - 1) / n);
    }
    out.set_source_bytes(it->second);
    out.set_source("checkpoint");
    return out;
  }

  absl::StatusOr<std::unique_ptr<LoadedInstance>> Load(
      const LoadRequest& request, const std::function<void(const LoadProgressInfo&)>& progress,
      const loader::CancellationToken& cancelled) override {
    uint64_t bytes;
    double seconds;
    uint32_t device = request.devices.empty() ? 0 : request.devices[0];
    {
      absl::MutexLock lock(&mu_);
      ++load_calls_;
      auto it = models_.find(request.spec.model());
      if (auto e = load_errors_.find(request.spec.model()); e != load_errors_.end()) {
        return e->second;
      }
      if (it == models_.end()) {
        return absl::NotFoundError("model '" + request.spec.model() + "' is not in the store");
      }
      bytes = it->second;
      seconds = load_seconds_;
      // As PipelineInstanceLoader: a device index comes from the caller, so check it.
      if (device >= used_.size()) {
        return absl::InvalidArgumentError("device index " + std::to_string(device) +
                                          " is beyond this worker's devices");
      }
      if (used_[device] + bytes > device_bytes_) {
        return absl::ResourceExhaustedError("device full");
      }
      used_[device] += bytes;
    }
    auto instance = std::make_unique<Instance>(this, device, bytes);
    constexpr int kSteps = 10;
    for (int i = 1; i <= kSteps; ++i) {
      std::this_thread::sleep_for(std::chrono::duration<double>(seconds / kSteps));
      if (cancelled.cancelled()) return absl::CancelledError("load cancelled");
      progress({bytes * i / kSteps, bytes, static_cast<uint32_t>(i), kSteps});
    }
    return instance;
  }

  absl::StatusOr<std::vector<loadstar::v1::ModelFile>> ModelFiles(
      const std::string& model) const override {
    absl::MutexLock lock(&mu_);
    if (!models_.contains(model)) return absl::NotFoundError("no model '" + model + "'");
    std::vector<loadstar::v1::ModelFile> out;
    auto it = files_.find(model);
    if (it == files_.end()) return out;
    for (const auto& [name, contents] : it->second) {
      auto& f = out.emplace_back();
      f.set_name(name);
      f.set_size(contents.size());
    }
    return out;
  }
  absl::StatusOr<std::string> ReadModelFile(const std::string& model,
                                            const std::string& name) const override {
    absl::MutexLock lock(&mu_);
    auto it = files_.find(model);
    if (it == files_.end() || !it->second.contains(name)) {
      return absl::NotFoundError("model '" + model + "' keeps no file '" + name + "'");
    }
    return it->second.at(name);
  }
  absl::Status Prefetch(const std::string&) override { return absl::OkStatus(); }
  absl::Status Evict(const std::string&) override { return absl::OkStatus(); }
  absl::StatusOr<loadstar::v1::ProbeResponse> Probe(const LoadedInstance&, const std::string&,
                                                    uint32_t) override {
    return absl::UnimplementedError("fake");
  }

 private:
  class Instance : public LoadedInstance {
   public:
    Instance(FakeInstanceLoader* owner, uint32_t device, uint64_t bytes)
        : owner_(owner), device_(device), data_(bytes, '\x5a') {
      absl::MutexLock lock(&owner_->mu_);
      ++owner_->live_;
    }
    ~Instance() override {
      absl::MutexLock lock(&owner_->mu_);
      --owner_->live_;
      owner_->used_[device_] -= data_.size();
    }
    loadstar::v1::InstanceHandle Handle() const override {
      loadstar::v1::InstanceHandle h;
      auto* d = h.add_devices();
      d->set_name("host:" + std::to_string(device_));
      auto* t = h.add_tensors();
      t->set_name("weight");
      t->set_dtype("U8");
      t->add_shape(static_cast<int64_t>(data_.size()));
      t->set_size(data_.size());
      h.set_bytes(data_.size());
      return h;
    }
    absl::Status ReadTensor(const std::string&, uint64_t offset, uint64_t n,
                            char* dst) const override {
      std::copy_n(data_.data() + offset, n, dst);
      return absl::OkStatus();
    }
    std::string source() const override { return "checkpoint"; }
    std::string tier() const override { return "disk"; }

   private:
    FakeInstanceLoader* owner_;
    uint32_t device_;
    std::string data_;
  };

  const uint64_t device_bytes_;
  mutable absl::Mutex mu_;
  std::map<std::string, uint64_t> models_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, std::string>> files_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> used_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> load_errors_ ABSL_GUARDED_BY(mu_);
  int load_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, absl::Status> plan_errors_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<uint64_t>> plans_ ABSL_GUARDED_BY(mu_);
  mutable int plan_calls_ ABSL_GUARDED_BY(mu_) = 0;
  double load_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  int live_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace loadstar::daemon::testing
