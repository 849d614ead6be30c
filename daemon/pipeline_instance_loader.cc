#include "daemon/pipeline_instance_loader.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <vector>

#include "base/logging.h"
#include "base/status_macros.h"
#include "google/protobuf/util/message_differencer.h"
#include "loader/replica.h"
#include "daemon/load_spec.h"
#include "daemon/probe.h"
#include "daemon/rate_limited_env.h"
#include "loader/device_backends.h"
#include "loader/model_source.h"
#include "store/hf_checkpoint.h"
#include "loader/quantized_load.h"
#include "quant/policy.h"
#include "nlohmann/json.hpp"

namespace loadstar::daemon {

namespace v1 = loadstar::v1;

namespace {

std::string KindName(loader::DeviceKind kind) {
  return kind == loader::DeviceKind::kCuda ? "cuda" : "host";
}

int64_t JsonInt(const nlohmann::json& j, const char* key, int64_t fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<int64_t>() : fallback;
}

// The quantization state of a transformed tensor, from the transform's JSON description.
void FillQuantState(const std::string& info, v1::QuantState* q) {
  nlohmann::json j = nlohmann::json::parse(info, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return;
  if (j.contains("format")) {  // a packed tensor served with `keep` (loader/prequant_*.h)
    q->set_prequant(info);
    q->set_absmax_offset(-1);
    q->set_quant_map_offset(-1);
    q->set_nested_absmax_offset(-1);
    q->set_nested_quant_map_offset(-1);
    q->set_scb_offset(-1);
    return;
  }
  for (const char* key : {"quant_type", "type"}) {
    if (j.contains(key) && j[key].is_string()) q->set_type(j[key].get<std::string>());
  }
  q->set_blocksize(static_cast<uint32_t>(JsonInt(j, "blocksize", 0)));
  if (j.contains("dtype") && j["dtype"].is_string()) q->set_dtype(j["dtype"].get<std::string>());
  if (j.contains("shape") && j["shape"].is_array()) {
    for (const auto& d : j["shape"]) {
      if (d.is_number()) q->add_shape(d.get<int64_t>());
    }
  }
  q->set_absmax_offset(JsonInt(j, "absmax_offset", -1));
  q->set_quant_map_offset(JsonInt(j, "quant_map_offset", -1));
  q->set_nested_absmax_offset(JsonInt(j, "nested_absmax_offset", -1));
  q->set_nested_quant_map_offset(JsonInt(j, "nested_quant_map_offset", -1));
  q->set_nested_blocksize(static_cast<uint32_t>(JsonInt(j, "nested_blocksize", 0)));
  q->set_scb_offset(JsonInt(j, "scb_offset", -1));
  if (j.contains("nested_offset") && j["nested_offset"].is_number()) {
    q->set_nested_offset(j["nested_offset"].get<float>());
  }
}

// How an instance's bytes got onto its devices (InstanceReport tier, gbps, spread).
struct Provenance {
  std::string source;  // artifact | checkpoint
  std::string tier;    // disk | host_cache | device_copy
  double gbps = 0;
  std::string spread;       // per_device | staged | ""
  std::string copied_from;  // device_copy: the source instance
};

class PipelineLoadedInstance : public LoadedInstance {
 public:
  PipelineLoadedInstance(std::shared_ptr<const loader::LoadedModel> model, v1::LoadSpec spec,
                         Provenance provenance)
      : model_(std::move(model)), spec_(std::move(spec)), provenance_(std::move(provenance)) {}

  std::string source() const override { return provenance_.source; }
  std::string tier() const override { return provenance_.tier; }
  double gbps() const override { return provenance_.gbps; }
  std::string spread() const override { return provenance_.spread; }
  std::string copied_from() const override { return provenance_.copied_from; }

  const v1::LoadSpec& spec() const { return spec_; }
  const std::shared_ptr<const loader::LoadedModel>& model() const { return model_; }

  v1::InstanceHandle Handle() const override {
    v1::InstanceHandle h;
    for (int d = 0; d < model_->num_devices(); ++d) {
      loader::Device* dev = model_->device(d);
      v1::DeviceInfo* info = h.add_devices();
      info->set_name(dev->name());
      info->set_kind(KindName(dev->kind()));
      info->set_total_bytes(dev->total_memory());
      info->set_free_bytes(dev->free_memory());
    }
    absl::StatusOr<std::vector<loader::ExportedHandle>> handles = model_->Export();
    if (handles.ok()) {
      for (size_t d = 0; d < handles->size(); ++d) {
        const loader::ExportedHandle& e = (*handles)[d];
        if (e.size == 0) continue;
        v1::MemoryHandle* m = h.add_allocations();
        m->set_device(static_cast<uint32_t>(d));
        m->set_kind(KindName(e.kind));
        m->set_shm_name(e.shm_name);
        m->set_offset(e.offset);
        m->set_ipc_handle(e.ipc_handle);
        m->set_device_uuid(e.device_uuid);
        m->set_size(e.size);
        if (!e.device_uuid.empty()) h.mutable_devices(d)->set_uuid(e.device_uuid);
      }
    }
    for (const loader::LoadedTensor& t : model_->tensors()) {
      v1::TensorInfo* info = h.add_tensors();
      info->set_name(t.name);
      info->set_dtype(std::string(DTypeName(t.dtype)));
      for (int64_t d : t.shape) info->add_shape(d);
      info->set_device(static_cast<uint32_t>(t.device));
      info->set_offset(t.offset);
      info->set_size(t.size);
      if (!t.transform_info.empty()) FillQuantState(t.transform_info, info->mutable_quant());
    }
    h.set_bytes(model_->tensor_bytes());
    h.set_model(spec_.model());
    return h;
  }

  absl::Status ReadTensor(const std::string& name, uint64_t offset, uint64_t n,
                          char* dst) const override {
    const loader::LoadedTensor* t = model_->Find(name);
    if (t == nullptr) return absl::NotFoundError(fmt::format("no tensor '{}'", name));
    if (const char* data = model_->HostData(*t)) {
      std::memcpy(dst, data + offset, n);
      return absl::OkStatus();
    }
    return model_->device(t->device)->CopyToHost(dst, model_->allocation(t->device),
                                                  t->offset + offset, n);
  }

 private:
  std::shared_ptr<const loader::LoadedModel> model_;  // weakly held by the resident list
  const v1::LoadSpec spec_;
  const Provenance provenance_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PipelineInstanceLoader>> PipelineInstanceLoader::Create(
    PipelineInstanceLoaderOptions options) {
  std::unique_ptr<PipelineInstanceLoader> l(new PipelineInstanceLoader());
  ASSIGN_OR_RETURN(l->store_, store::Store::Open({options.store_dir, Env::Default()}));
  ASSIGN_OR_RETURN(l->devices_,
                   loader::CreateDevices(options.devices, options.host_device_bytes,
                                         /*host_retain_bytes=*/0,
                                         options.host_device_pool ? loader::HostMemory::kPooled
                                                                  : loader::HostMemory::kFresh));
  if (options.pipeline.ring_allocator == nullptr) {
    // Page-locked staging (ring and host cache) for CUDA devices, so copies are DMA.
    std::vector<loader::Device*> raw;
    for (const auto& d : l->devices_) raw.push_back(d.get());
    options.pipeline.ring_allocator = loader::StagingAllocatorFor(raw);
  }
  if (options.max_read_bandwidth > 0) {
    l->env_ = std::make_unique<RateLimitedEnv>(
        options.pipeline.env != nullptr ? options.pipeline.env : Env::Default(),
        options.max_read_bandwidth);
    options.pipeline.env = l->env_.get();
    // Every read must go through the limited Env, including page-cache hits.
    options.pipeline.io_mode = loader::IoMode::kBuffered;
  }
  if (options.host_cache_bytes > 0) {
    l->cache_ = std::make_unique<loader::HostCache>(
        loader::HostCache::Options{options.host_cache_bytes, options.pipeline.ring_allocator});
    options.pipeline.cache = l->cache_.get();
  }
  ASSIGN_OR_RETURN(l->pipeline_, loader::LoadPipeline::Create(options.pipeline));
  l->options_ = options;
  std::vector<loader::Device*> all;
  for (const auto& d : l->devices_) all.push_back(d.get());
  absl::StatusOr<std::unique_ptr<loader::Communicator>> comm = loader::CreateCommunicator(all);
  if (comm.ok()) {
    l->comm_ = *std::move(comm);
  } else {
    // Not fatal: loads still work through the host; the worker reports no device-copy
    // tier (device_copy_bandwidth 0), so the scheduler does not count on one.
    Log(Level::warn, "worker", {{"devices", options.devices}},
        "no communicator over the devices ({}); replicas and multi-device loads go "
        "through the host", std::string(comm.status().message()));
  }
  if (options.measure_bandwidth) {
    l->MeasureBandwidth();
    l->MeasureSpreadBandwidth();
  }
  if (options.max_read_bandwidth > 0) {
    l->disk_bandwidth_ = std::min(l->disk_bandwidth_, options.max_read_bandwidth);
  }
  return l;
}

PipelineInstanceLoader::~PipelineInstanceLoader() = default;

namespace {
// The middle of the probe runs (0 when none succeeded).
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}
}  // namespace

void PipelineInstanceLoader::MeasureBandwidth() {
  // Medians of several runs: one read can land on a slow moment of a shared disk and then
  // decide every placement (SPEC §7 scheduler).
  using Clock = std::chrono::steady_clock;
  constexpr size_t kBytes = 32 << 20;
  constexpr int kRuns = 5;
  std::vector<char> a(kBytes, 1), b(kBytes);
  std::vector<double> copy;
  for (int i = 0; i < kRuns; ++i) {
    auto start = Clock::now();
    std::memcpy(b.data(), a.data(), kBytes);
    double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (s > 0) copy.push_back(kBytes / s);
  }
  if (!copy.empty()) copy_bandwidth_ = Median(copy);
  // Disk: write a scratch file, then read it back kRuns times, dropped from the page cache
  // before each read.
  // Unique per process and loader: `loadstar up` runs several workers in one process.
  static std::atomic<int> counter{0};
  std::string path = JoinPath(store_->root(), fmt::format(".tmp/bw-{}-{}", ::getpid(), counter++));
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
  if (fd < 0) return;
  std::vector<double> disk;
  if (::write(fd, a.data(), kBytes) == static_cast<ssize_t>(kBytes) && ::fsync(fd) == 0) {
    for (int i = 0; i < kRuns; ++i) {
      if (::posix_fadvise(fd, 0, kBytes, POSIX_FADV_DONTNEED) != 0) break;
      auto start = Clock::now();
      if (::pread(fd, b.data(), kBytes, 0) != static_cast<ssize_t>(kBytes)) break;
      double s = std::chrono::duration<double>(Clock::now() - start).count();
      if (s > 0) disk.push_back(kBytes / s);
    }
  }
  if (!disk.empty()) disk_bandwidth_ = Median(disk);
  ::close(fd);
  ::unlink(path.c_str());
}

void PipelineInstanceLoader::MeasureSpreadBandwidth() {
  // 32 MiB per device, median of 3 timed runs after one untimed (first touch of fresh
  // device memory is not what a load sees in steady state).
  using Clock = std::chrono::steady_clock;
  constexpr uint64_t kBytes = 32ull << 20;
  constexpr int kRuns = 3;
  std::vector<loader::Allocation> allocations;
  auto free_all = [&] {
    for (size_t d = 0; d < allocations.size(); ++d) {
      if (allocations[d].ptr != nullptr) devices_[d]->Free(allocations[d]).IgnoreError();
    }
  };
  for (const auto& d : devices_) {
    absl::StatusOr<loader::Allocation> a = d->Allocate(kBytes);
    if (!a.ok()) {
      free_all();
      return;  // too little memory to probe: keep the defaults
    }
    allocations.push_back(*a);
  }
  std::vector<char> host(kBytes, 1);
  // Host -> device: device 0 alone, then every device at once.
  auto h2d = [&](size_t n) -> double {
    auto start = Clock::now();
    std::vector<loader::CopyTicket> tickets;
    for (size_t d = 0; d < n; ++d) {
      absl::StatusOr<loader::CopyTicket> t =
          devices_[d]->CopyToDeviceAsync(allocations[d], 0, host.data(), kBytes);
      if (!t.ok()) return 0;
      tickets.push_back(*t);
    }
    for (size_t d = 0; d < n; ++d) {
      if (!devices_[d]->Wait(tickets[d]).ok()) return 0;
    }
    double s = std::chrono::duration<double>(Clock::now() - start).count();
    return s > 0 ? static_cast<double>(n * kBytes) / s : 0;
  };
  h2d(devices_.size());  // first touch of every allocation
  std::vector<double> one, all, d2d;
  for (int i = 0; i < kRuns; ++i) {
    if (double bw = h2d(1); bw > 0) one.push_back(bw);
    if (double bw = h2d(devices_.size()); bw > 0) all.push_back(bw);
  }
  if (!one.empty()) spread_bandwidths_.host_to_device = Median(one);
  if (!all.empty()) spread_bandwidths_.host_to_devices_parallel = Median(all);
  if (comm_ != nullptr) {
    // Device 0 -> device 1, or between two buffers of device 0 on a single device.
    loader::Allocation second{};
    int dst_rank = 1;
    if (devices_.size() < 2) {
      absl::StatusOr<loader::Allocation> a = devices_[0]->Allocate(kBytes);
      if (a.ok()) second = *a;
      dst_rank = 0;
    }
    const loader::Allocation& dst = devices_.size() < 2 ? second : allocations[1];
    if (dst.ptr != nullptr) {
      for (int i = 0; i <= kRuns; ++i) {
        auto start = Clock::now();
        absl::Status st = comm_->Copy({0, allocations[0].ptr, kBytes}, {dst_rank, dst.ptr, kBytes});
        double s = std::chrono::duration<double>(Clock::now() - start).count();
        if (!st.ok()) break;
        if (i > 0 && s > 0) d2d.push_back(static_cast<double>(kBytes) / s);
      }
    }
    if (second.ptr != nullptr) devices_[0]->Free(second).IgnoreError();
    if (!d2d.empty()) spread_bandwidths_.device_to_device = Median(d2d);
  }
  free_all();
}

std::vector<v1::DeviceInfo> PipelineInstanceLoader::Devices() const {
  std::vector<v1::DeviceInfo> out;
  for (const auto& d : devices_) {
    v1::DeviceInfo& info = out.emplace_back();
    info.set_name(d->name());
    info.set_kind(KindName(d->kind()));
    info.set_total_bytes(d->total_memory());
    info.set_free_bytes(d->free_memory());
  }
  return out;
}

absl::StatusOr<std::vector<v1::StoredModel>> PipelineInstanceLoader::ListModels() const {
  ASSIGN_OR_RETURN(std::vector<store::ModelInfo> models, store_->List());
  std::vector<v1::StoredModel> out;
  for (const store::ModelInfo& m : models) {
    v1::StoredModel& s = out.emplace_back();
    s.set_name(m.name);
    s.set_bytes(m.bytes);
    s.set_in_host_cache(cache_ != nullptr && cache_->Contains(loader::ModelKey(m.name, "")));
    for (const std::string& v : m.variants) s.add_variants(v);
  }
  return out;
}

uint64_t PipelineInstanceLoader::host_cache_bytes() const {
  return cache_ == nullptr ? 0 : cache_->capacity_bytes();
}

uint64_t PipelineInstanceLoader::host_cache_used() const {
  return cache_ == nullptr ? 0 : cache_->used_bytes();
}

absl::StatusOr<v1::PlanLoadResponse> PipelineInstanceLoader::PlanLoad(
    const v1::LoadSpec& spec) const {
  const uint32_t num_gpus = std::max<uint32_t>(spec.num_gpus(), 1);
  ASSIGN_OR_RETURN(loader::PlanOptions plan, PlanOptionsFromLoadSpec(spec, num_gpus));
  ASSIGN_OR_RETURN(quant::QuantConfig qconfig, QuantConfigFromLoadSpec(spec));
  // The same choice of source and transform as Load's LoadQuantized; a replica copy, when
  // Load takes that path, allocates the same bytes (CopyReplica copies allocations whole).
  ASSIGN_OR_RETURN(loader::QuantizedLoadPlan planned,
                   loader::PlanQuantized(*store_, spec.model(), qconfig,
                                         static_cast<int>(num_gpus), plan,
                                         {.cast_to_torch_dtype = !spec.torch_dtype().empty()}));
  v1::PlanLoadResponse out;
  for (uint64_t b : planned.plan.device_bytes) out.add_device_bytes(b);
  out.set_source_bytes(planned.plan.source_bytes);
  out.set_source(planned.source);
  out.set_variant(planned.variant);
  return out;
}

absl::StatusOr<std::unique_ptr<LoadedInstance>> PipelineInstanceLoader::Load(
    const LoadRequest& request, const std::function<void(const LoadProgressInfo&)>& progress,
    const loader::CancellationToken& cancelled) {
  const v1::LoadSpec& spec = request.spec;
  uint32_t num_gpus = std::max<uint32_t>(spec.num_gpus(), 1);
  std::vector<uint32_t> indices = request.devices;
  if (indices.empty()) {
    for (uint32_t i = 0; i < num_gpus && i < devices_.size(); ++i) indices.push_back(i);
  }
  if (indices.size() != num_gpus) {
    return absl::InvalidArgumentError(
        fmt::format("num_gpus is {} but {} devices were assigned", num_gpus, indices.size()));
  }
  std::vector<loader::Device*> devices;
  for (uint32_t i : indices) {
    if (i >= devices_.size()) {
      return absl::InvalidArgumentError(
          fmt::format("device index {} is beyond this worker's {} devices", i, devices_.size()));
    }
    devices.push_back(devices_[i].get());
  }
  ASSIGN_OR_RETURN(store::Manifest manifest, store_->GetManifest(spec.model()));
  ASSIGN_OR_RETURN(std::unique_ptr<LoadedInstance> replica,
                   CopyFromResident(request, manifest, indices, devices, progress, cancelled));
  if (replica != nullptr) return replica;

  ASSIGN_OR_RETURN(loader::PlanOptions plan, PlanOptionsFromLoadSpec(spec, num_gpus));
  // Multi-device: per device or staged through device 0 (loader/spread.h).
  loader::SpreadOptions spread;
  if (devices.size() > 1 && comm_ != nullptr) {
    spread.communicator = comm_.get();
    for (uint32_t i : indices) spread.ranks.push_back(static_cast<int>(i));
    switch (options_.spread_path) {
      case PathChoice::kHost:
        spread.path = loader::SpreadPath::kPerDevice;
        break;
      case PathChoice::kDevice:
        spread.path = loader::SpreadPath::kStaged;
        break;
      case PathChoice::kMeasured: {
        // Estimated on the untransformed plan: quantized outputs go per device either way.
        ASSIGN_OR_RETURN(loader::LoadPlan estimate,
                         loader::MakeLoadPlan(manifest, static_cast<int>(devices.size()), plan));
        spread.path = loader::ChooseSpreadPath(manifest, estimate, spread_bandwidths_);
        break;
      }
    }
    plan.spread = &spread;
  }
  // The deployment's quantization: its stored variant when one matches, else the
  // checkpoint quantized while it streams (loader/quantized_load.h).
  ASSIGN_OR_RETURN(quant::QuantConfig qconfig, QuantConfigFromLoadSpec(spec));
  loader::LoadStats stats;
  ASSIGN_OR_RETURN(loader::QuantizedLoad loaded,
                   loader::LoadQuantized(*pipeline_, *store_, spec.model(), qconfig, devices,
                                         plan, {.cast_to_torch_dtype = !spec.torch_dtype().empty()},
                                         &cancelled,
                                         [&](const loader::LoadProgress& p) {
                                           progress({p.bytes, p.total_bytes,
                                                     static_cast<uint32_t>(p.tensors),
                                                     static_cast<uint32_t>(p.total_tensors)});
                                         },
                                         &stats));
  std::shared_ptr<const loader::LoadedModel> model = std::move(loaded.model);
  AddResident({request.instance_id, spec, std::move(manifest), indices, loaded.source, model});
  return std::make_unique<PipelineLoadedInstance>(
      std::move(model), spec,
      Provenance{loaded.source, stats.from_cache ? "host_cache" : "disk", stats.gbps,
                 stats.spread, ""});
}

void PipelineInstanceLoader::AddResident(Resident resident) {
  absl::MutexLock lock(&resident_mu_);
  std::erase_if(residents_, [](const Resident& r) { return r.model.expired(); });
  residents_.push_back(std::move(resident));
}

absl::StatusOr<std::unique_ptr<LoadedInstance>> PipelineInstanceLoader::CopyFromResident(
    const LoadRequest& request, const store::Manifest& manifest,
    const std::vector<uint32_t>& indices, const std::vector<loader::Device*>& devices,
    const std::function<void(const LoadProgressInfo&)>& progress,
    const loader::CancellationToken& cancelled) {
  if (comm_ == nullptr || options_.replica_path == PathChoice::kHost) return nullptr;
  std::shared_ptr<const loader::LoadedModel> source;
  Resident found;
  {
    absl::MutexLock lock(&resident_mu_);
    std::erase_if(residents_, [](const Resident& r) { return r.model.expired(); });
    for (const Resident& r : residents_) {
      // Same spec and same stored bytes: the replica is what a fresh load would give.
      if (r.devices.size() != devices.size() || !(r.manifest == manifest) ||
          !google::protobuf::util::MessageDifferencer::Equals(r.spec, request.spec)) {
        continue;
      }
      source = r.model.lock();
      if (source == nullptr) continue;
      found = r;
      break;
    }
  }
  if (source == nullptr) return nullptr;
  uint64_t bytes = 0;
  for (int d = 0; d < source->num_devices(); ++d) bytes += source->allocation(d).size;
  if (options_.replica_path == PathChoice::kMeasured) {
    // The host path reads the checkpoint (its store bytes) through the slower of disk and
    // the host -> device link, or from the host cache at the link's rate.
    uint64_t stored = 0;
    for (const store::ManifestTensor& t : manifest.tensors) stored += t.size;
    const bool cached =
        cache_ != nullptr && cache_->Contains(loader::ModelKey(request.spec.model(), ""));
    const double host_rate = cached ? copy_bandwidth_ : std::min(disk_bandwidth_, copy_bandwidth_);
    const double host_s = static_cast<double>(stored) / std::max(host_rate, 1.0);
    const double copy_s =
        static_cast<double>(bytes) / std::max(spread_bandwidths_.device_to_device, 1.0);
    if (copy_s > host_s) return nullptr;
  }
  std::vector<int> source_ranks, ranks;
  for (uint32_t i : found.devices) source_ranks.push_back(static_cast<int>(i));
  for (uint32_t i : indices) ranks.push_back(static_cast<int>(i));
  loader::ReplicaCopyStats stats;
  ASSIGN_OR_RETURN(std::unique_ptr<loader::LoadedModel> copy,
                   loader::CopyReplica(*source, devices, source_ranks, ranks, *comm_,
                                       &cancelled, &stats));
  source.reset();
  const uint32_t tensors = static_cast<uint32_t>(manifest.tensors.size());
  progress({stats.bytes, stats.bytes, tensors, tensors});
  std::shared_ptr<const loader::LoadedModel> model = std::move(copy);
  AddResident({request.instance_id, request.spec, manifest, indices, found.source, model});
  return std::make_unique<PipelineLoadedInstance>(
      std::move(model), request.spec,
      Provenance{found.source, "device_copy", stats.gbps, "", found.instance_id});
}

absl::StatusOr<std::vector<v1::ModelFile>> PipelineInstanceLoader::ModelFiles(
    const std::string& model) const {
  ASSIGN_OR_RETURN(store::Manifest manifest, store_->GetManifest(model));
  ASSIGN_OR_RETURN(std::string dir, store_->ModelDir(model));
  std::vector<v1::ModelFile> files;
  for (const std::string& name : manifest.extra_files) {
    ASSIGN_OR_RETURN(uint64_t size, store_->env()->GetFileSize(JoinPath(dir, name)));
    v1::ModelFile& f = files.emplace_back();
    f.set_name(name);
    f.set_size(size);
  }
  return files;
}

absl::StatusOr<std::string> PipelineInstanceLoader::ReadModelFile(const std::string& model,
                                                                  const std::string& name) const {
  ASSIGN_OR_RETURN(store::Manifest manifest, store_->GetManifest(model));
  // Only names the manifest lists: a request can never reach outside the model directory.
  if (std::find(manifest.extra_files.begin(), manifest.extra_files.end(), name) ==
      manifest.extra_files.end()) {
    return absl::NotFoundError(fmt::format("model '{}' keeps no file '{}'", model, name));
  }
  ASSIGN_OR_RETURN(std::string dir, store_->ModelDir(model));
  return ReadFileToString(store_->env(), JoinPath(dir, name), store::kMaxKeptFileBytes);
}

absl::Status PipelineInstanceLoader::Prefetch(const std::string& model) {
  if (cache_ == nullptr) {
    return absl::FailedPreconditionError("this worker has no host cache (--host-cache-bytes)");
  }
  ASSIGN_OR_RETURN(loader::ModelSource source, loader::ModelSourceFromStore(*store_, model));
  return cache_->Prefetch(source, *pipeline_);
}

absl::Status PipelineInstanceLoader::Evict(const std::string& model) {
  if (cache_ == nullptr) {
    return absl::FailedPreconditionError("this worker has no host cache (--host-cache-bytes)");
  }
  return cache_->Evict(loader::ModelKey(model, ""));
}

absl::StatusOr<v1::ProbeResponse> PipelineInstanceLoader::Probe(const LoadedInstance& instance,
                                                                const std::string& tensor,
                                                                uint32_t rows) {
  const auto* loaded = dynamic_cast<const PipelineLoadedInstance*>(&instance);
  if (loaded == nullptr) return absl::InternalError("instance was not loaded by this loader");
  return ProbeQuantizedWeight(
      instance.Handle(),
      [&](const std::string& name, uint64_t offset, uint64_t n, char* dst) {
        return instance.ReadTensor(name, offset, n, dst);
      },
      loaded->spec(), *store_, tensor, rows);
}

}  // namespace loadstar::daemon
