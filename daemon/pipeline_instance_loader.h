// PipelineInstanceLoader: the worker's real InstanceLoader — loader/'s LoadPipeline over
// a store directory, the worker's devices ("host:N", "cuda", "auto") and a host cache.
//
// Quantized deployments load the stored quantized artifact (variant) when the store has
// a matching one; otherwise the checkpoint is quantized while it streams
// (loader/quantized_load.h). Either way the instance's tensor table holds the HF
// state-dict tensors (weight, absmax, quant_map, ... / int8 weight + SCB).
//
// Spread (SPEC §5 Communicator): at start the loader creates one Communicator over all
// of its devices (loader::CreateCommunicator: host devices -> HostCommunicator, CUDA ->
// NCCL when built with it; without one both paths below stay on the host side) and
// measures its bandwidths next to the disk and copy probes. Then:
//  - a second instance of a resident model (same LoadSpec, same stored manifest) is
//    copied device-to-device from it (loader/replica.h; tier "device_copy") when
//    bytes / device_copy_bandwidth beats reading the store again;
//  - a multi-device load takes the per-device or the staged path (loader/spread.h) by
//    the measured host->device (one and all devices) and device->device bandwidths,
//    estimated on the load's placement plan before any transform.
//
// Thread safety: every method is thread-safe (InstanceLoader contract 3).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "loader/communicator.h"
#include "loader/loaded_model.h"
#include "loader/spread.h"
#include "loadstar/v1/worker.pb.h"
#include "store/manifest.h"

#include "daemon/instance_loader.h"
#include "loader/device.h"
#include "loader/host_cache.h"
#include "loader/load_pipeline.h"
#include "store/store.h"

namespace loadstar::daemon {

// Where a load has two ways to move its bytes: decided from the measured bandwidths, or
// forced (tests, benchmarks): kHost = the store through the host (per device), kDevice =
// through the devices (replica copy / staged spread).
enum class PathChoice { kMeasured, kHost, kDevice };

struct PipelineInstanceLoaderOptions {
  std::string store_dir;
  std::string devices = "host:1";
  uint64_t host_device_bytes = 16ull << 30;  // memory of each emulated host device
  // Each host device's memory is one pool, populated from start and reused by every
  // load, as a GPU's memory is (HostDevice::CreatePooled: steady-state loads run at
  // memcpy speed, freed memory is zeroed before reuse). false: fresh shm per allocation.
  bool host_device_pool = true;
  uint64_t host_cache_bytes = 0;             // 0: no host cache tier
  loader::LoadPipeline::Options pipeline;
  // Measure disk and copy bandwidth at start (a few hundred ms); off: report defaults.
  bool measure_bandwidth = true;
  // Cap on store read bandwidth in bytes/s (RateLimitedEnv); 0: none.
  double max_read_bandwidth = 0;
  // A second instance of a resident model: copied from it or read again (kDevice copies
  // whenever a resident instance exists; kHost never copies).
  PathChoice replica_path = PathChoice::kMeasured;
  // Multi-device loads: per device (kHost) or staged through device 0 (kDevice).
  PathChoice spread_path = PathChoice::kMeasured;
};

class PipelineInstanceLoader : public InstanceLoader {
 public:
  static absl::StatusOr<std::unique_ptr<PipelineInstanceLoader>> Create(
      PipelineInstanceLoaderOptions options);
  ~PipelineInstanceLoader() override;

  std::vector<loadstar::v1::DeviceInfo> Devices() const override;
  absl::StatusOr<std::vector<loadstar::v1::StoredModel>> ListModels() const override;
  uint64_t host_cache_bytes() const override;
  uint64_t host_cache_used() const override;
  double disk_bandwidth() const override { return disk_bandwidth_; }
  double copy_bandwidth() const override { return copy_bandwidth_; }
  double device_copy_bandwidth() const override {
    return comm_ == nullptr ? 0 : spread_bandwidths_.device_to_device;
  }
  std::string communicator() const override { return comm_ == nullptr ? "" : comm_->name(); }
  const loader::SpreadBandwidths& spread_bandwidths() const { return spread_bandwidths_; }
  absl::StatusOr<std::unique_ptr<LoadedInstance>> Load(
      const LoadRequest& request, const std::function<void(const LoadProgressInfo&)>& progress,
      const loader::CancellationToken& cancelled) override;
  absl::StatusOr<std::vector<loadstar::v1::ModelFile>> ModelFiles(
      const std::string& model) const override;
  absl::StatusOr<std::string> ReadModelFile(const std::string& model,
                                            const std::string& name) const override;
  absl::StatusOr<loadstar::v1::PlanLoadResponse> PlanLoad(
      const loadstar::v1::LoadSpec& spec) const override;
  absl::Status Prefetch(const std::string& model) override;
  absl::Status Evict(const std::string& model) override;
  absl::StatusOr<loadstar::v1::ProbeResponse> Probe(const LoadedInstance& instance,
                                                    const std::string& tensor,
                                                    uint32_t rows) override;

 private:
  // A resident instance a replica may be copied from. The model is held weakly: the
  // worker's instance owns it, and unloading it ends its use as a source.
  struct Resident {
    std::string instance_id;
    loadstar::v1::LoadSpec spec;
    store::Manifest manifest;
    std::vector<uint32_t> devices;
    std::string source;  // artifact | checkpoint
    std::weak_ptr<const loader::LoadedModel> model;
  };

  PipelineInstanceLoader() = default;
  void MeasureBandwidth();
  // Host -> device (one device, all at once) and device -> device through comm_.
  void MeasureSpreadBandwidth();
  // The replica of a resident instance matching the request, or nullptr when there is
  // none or the host path is estimated faster.
  absl::StatusOr<std::unique_ptr<LoadedInstance>> CopyFromResident(
      const LoadRequest& request, const store::Manifest& manifest,
      const std::vector<uint32_t>& indices, const std::vector<loader::Device*>& devices,
      const std::function<void(const LoadProgressInfo&)>& progress,
      const loader::CancellationToken& cancelled);
  void AddResident(Resident resident);

  PipelineInstanceLoaderOptions options_;
  std::unique_ptr<Env> env_;  // RateLimitedEnv when reads are capped
  std::unique_ptr<store::Store> store_;
  std::vector<std::unique_ptr<loader::Device>> devices_;
  std::unique_ptr<loader::HostCache> cache_;
  std::unique_ptr<loader::LoadPipeline> pipeline_;
  double disk_bandwidth_ = 1e9;
  double copy_bandwidth_ = 5e9;
  std::unique_ptr<loader::Communicator> comm_;  // over devices_, rank = index
  loader::SpreadBandwidths spread_bandwidths_;
  absl::Mutex resident_mu_;
  std::vector<Resident> residents_ ABSL_GUARDED_BY(resident_mu_);
};

}  // namespace loadstar::daemon
