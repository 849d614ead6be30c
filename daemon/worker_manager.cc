#include "daemon/worker_manager.h"

#include <fmt/format.h>

#include <chrono>

#include "base/status_macros.h"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

namespace {
// ReadTensor chunk size: large enough to amortize per-message cost, small enough to stay
// far below gRPC's default 4 MiB message limit.
constexpr uint64_t kReadChunkBytes = 1 << 20;
}  // namespace

WorkerManager::WorkerManager(std::string worker_id, std::string address, InstanceLoader* loader)
    : loader_(loader), worker_id_(std::move(worker_id)), address_(std::move(address)) {}

std::string WorkerManager::worker_id() const {
  absl::MutexLock lock(&mu_);
  return worker_id_;
}

void WorkerManager::SetIdentity(std::string worker_id, std::string address) {
  absl::MutexLock lock(&mu_);
  worker_id_ = std::move(worker_id);
  address_ = std::move(address);
}

absl::StatusOr<v1::InstanceReport> WorkerManager::Load(
    const v1::LoadInstanceRequest& request,
    const std::function<bool(const LoadProgressInfo&)>& progress) {
  const std::string& id = request.instance_id();
  if (id.empty()) return absl::InvalidArgumentError("instance_id is empty");
  std::shared_ptr<loader::CancellationToken> cancelled;
  {
    absl::MutexLock lock(&mu_);
    if (instances_.contains(id)) {
      return absl::AlreadyExistsError(fmt::format("instance {} already exists", id));
    }
    Instance& inst = instances_[id];
    inst.report.set_instance_id(id);
    inst.report.set_deployment(request.deployment());
    inst.report.set_model(request.spec().model());
    inst.report.set_state("loading");
    cancelled = inst.cancelled;
  }
  LoadRequest load{id, request.spec(), {request.devices().begin(), request.devices().end()}};
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<LoadedInstance>> loaded = loader_->Load(
      load,
      [&](const LoadProgressInfo& p) {
        if (!progress(p)) cancelled->Cancel();
      },
      *cancelled);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Declared before `lock`, so destroyed (memory freed) after mu_ is released.
  std::shared_ptr<const LoadedInstance> doomed;
  absl::MutexLock lock(&mu_);
  auto it = instances_.find(id);
  if (loaded.ok() && cancelled->cancelled()) {
    doomed = std::move(*loaded);
    loaded = absl::CancelledError(fmt::format("load of instance {} was cancelled", id));
  }
  if (!loaded.ok()) {
    instances_.erase(it);
    return loaded.status();
  }
  absl::StatusOr<std::vector<v1::ModelFile>> files = loader_->ModelFiles(request.spec().model());
  if (!files.ok()) {
    doomed = std::move(*loaded);
    instances_.erase(it);
    return files.status();
  }
  Instance& inst = it->second;
  inst.loaded = std::move(*loaded);
  inst.handle = inst.loaded->Handle();
  inst.handle.set_instance_id(id);
  inst.handle.set_model(request.spec().model());
  inst.handle.set_worker_id(worker_id_);
  *inst.handle.mutable_spec() = request.spec();
  for (v1::ModelFile& f : *files) *inst.handle.add_files() = std::move(f);
  inst.report.set_state("ready");
  inst.report.set_load_seconds(seconds);
  inst.report.set_bytes(inst.handle.bytes());
  inst.report.set_source(inst.loaded->source());
  inst.report.set_tier(inst.loaded->tier());
  inst.report.set_gbps(inst.loaded->gbps());
  inst.report.set_spread(inst.loaded->spread());
  inst.report.set_copied_from(inst.loaded->copied_from());
  inst.handle.set_tier(inst.report.tier());
  inst.handle.set_gbps(inst.report.gbps());
  inst.handle.set_spread(inst.report.spread());
  inst.handle.set_copied_from(inst.report.copied_from());
  for (const v1::DeviceInfo& d : inst.handle.devices()) inst.report.add_devices(d.name());
  return inst.report;
}

absl::Status WorkerManager::Unload(const std::string& instance_id) {
  std::shared_ptr<const LoadedInstance> doomed;
  {
    absl::MutexLock lock(&mu_);
    auto it = instances_.find(instance_id);
    if (it == instances_.end()) {
      return absl::NotFoundError(fmt::format("instance {} is not on this worker", instance_id));
    }
    if (it->second.loaded == nullptr) {
      // Still loading: the Load call sees the flag, frees what it has and erases the entry.
      it->second.cancelled->Cancel();
      return absl::OkStatus();
    }
    doomed = std::move(it->second.loaded);
    instances_.erase(it);
  }
  return absl::OkStatus();  // `doomed` frees the memory here, unless a reader holds it
}

absl::StatusOr<std::shared_ptr<const LoadedInstance>> WorkerManager::Ready(
    const std::string& id, v1::InstanceHandle* handle) const {
  absl::MutexLock lock(&mu_);
  auto it = instances_.find(id);
  if (it == instances_.end()) {
    return absl::NotFoundError(fmt::format("instance {} is not on this worker", id));
  }
  if (it->second.loaded == nullptr) {
    return absl::FailedPreconditionError(fmt::format("instance {} is still loading", id));
  }
  if (handle != nullptr) *handle = it->second.handle;
  return it->second.loaded;
}

absl::StatusOr<v1::InstanceHandle> WorkerManager::GetInstance(const std::string& instance_id) {
  v1::InstanceHandle handle;
  absl::StatusOr<std::shared_ptr<const LoadedInstance>> inst = Ready(instance_id, &handle);
  if (!inst.ok()) return inst.status();
  return handle;
}

absl::Status WorkerManager::ReadTensor(const v1::ReadTensorRequest& request,
                                       const std::function<bool(uint64_t, std::string_view)>& sink) {
  v1::InstanceHandle handle;
  absl::StatusOr<std::shared_ptr<const LoadedInstance>> inst = Ready(request.instance_id(), &handle);
  if (!inst.ok()) return inst.status();
  const v1::TensorInfo* tensor = nullptr;
  for (const v1::TensorInfo& t : handle.tensors()) {
    if (t.name() == request.tensor()) tensor = &t;
  }
  if (tensor == nullptr) {
    return absl::NotFoundError(fmt::format("instance {} has no tensor '{}'",
                                           request.instance_id(), request.tensor()));
  }
  uint64_t offset = request.offset();
  if (offset > tensor->size()) {
    return absl::OutOfRangeError(fmt::format("offset {} is beyond tensor '{}' of {} bytes", offset,
                                             tensor->name(), tensor->size()));
  }
  uint64_t end = request.length() == 0 ? tensor->size()
                                       : std::min(tensor->size(), offset + request.length());
  std::string buffer;
  while (offset < end) {
    uint64_t n = std::min(kReadChunkBytes, end - offset);
    buffer.resize(n);
    absl::Status s = (*inst)->ReadTensor(tensor->name(), offset, n, buffer.data());
    if (!s.ok()) return s;
    if (!sink(offset - request.offset(), buffer)) {
      return absl::CancelledError("the reader went away");
    }
    offset += n;
  }
  return absl::OkStatus();
}

absl::Status WorkerManager::ReadModelFile(
    const v1::ReadModelFileRequest& request,
    const std::function<bool(uint64_t, std::string_view)>& sink) {
  ASSIGN_OR_RETURN(std::string bytes, loader_->ReadModelFile(request.model(), request.name()));
  uint64_t offset = 0;
  do {  // at least one chunk, so an empty file still answers
    std::string_view chunk = std::string_view(bytes).substr(offset, kReadChunkBytes);
    if (!sink(offset, chunk)) return absl::CancelledError("the reader went away");
    offset += chunk.size();
  } while (offset < bytes.size());
  return absl::OkStatus();
}

absl::StatusOr<v1::ProbeResponse> WorkerManager::Probe(const v1::ProbeRequest& request) {
  // The probe allocates rows x (in + out features) values: 4e9 rows from a client made
  // the worker allocate half a terabyte and die (found by worker_rpc_fuzzer). A few rows
  // measure the error as well as many.
  constexpr uint32_t kMaxProbeRows = 1024;
  if (request.rows() > kMaxProbeRows) {
    return absl::InvalidArgumentError(
        fmt::format("rows {} is more than a probe uses (at most {})", request.rows(), kMaxProbeRows));
  }
  absl::StatusOr<std::shared_ptr<const LoadedInstance>> inst = Ready(request.instance_id(), nullptr);
  if (!inst.ok()) return inst.status();
  return loader_->Probe(**inst, request.tensor(), request.rows() == 0 ? 4 : request.rows());
}

std::vector<v1::InstanceReport> WorkerManager::Instances() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::InstanceReport> out;
  for (const auto& [id, inst] : instances_) out.push_back(inst.report);
  return out;
}

v1::WorkerInfo WorkerManager::Info() const {
  v1::WorkerInfo info;
  {
    absl::MutexLock lock(&mu_);
    info.set_worker_id(worker_id_);
    info.set_address(address_);
  }
  for (const v1::DeviceInfo& d : loader_->Devices()) *info.add_devices() = d;
  info.set_host_cache_bytes(loader_->host_cache_bytes());
  info.set_host_cache_used(loader_->host_cache_used());
  absl::StatusOr<std::vector<v1::StoredModel>> models = loader_->ListModels();
  if (models.ok()) {
    for (const v1::StoredModel& m : *models) *info.add_models() = m;
  }
  info.set_disk_bandwidth(loader_->disk_bandwidth());
  info.set_copy_bandwidth(loader_->copy_bandwidth());
  info.set_device_copy_bandwidth(loader_->device_copy_bandwidth());
  info.set_communicator(loader_->communicator());
  for (const v1::InstanceReport& r : Instances()) *info.add_instances() = r;
  return info;
}

}  // namespace loadstar::daemon
