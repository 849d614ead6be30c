// PipelineInstanceLoader: the worker's real InstanceLoader — loader/'s LoadPipeline over
// a store directory, the worker's devices ("host:N", "cuda", "auto") and a host cache.
//
// Quantized deployments load the stored quantized artifact (variant) when the store has
// a matching one; otherwise the checkpoint is quantized while it streams
// (loader/quantized_load.h). Either way the instance's tensor table holds the HF
// state-dict tensors (weight, absmax, quant_map, ... / int8 weight + SCB).
//
// Thread safety: every method is thread-safe (InstanceLoader contract 3).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "daemon/instance_loader.h"
#include "loader/device.h"
#include "loader/host_cache.h"
#include "loader/load_pipeline.h"
#include "store/store.h"

namespace loadstar::daemon {

struct PipelineInstanceLoaderOptions {
  std::string store_dir;
  std::string devices = "host:1";
  uint64_t host_device_bytes = 16ull << 30;  // memory of each emulated host device
  uint64_t host_cache_bytes = 0;             // 0: no host cache tier
  loader::LoadPipeline::Options pipeline;
  // Measure disk and copy bandwidth at start (a few hundred ms); off: report defaults.
  bool measure_bandwidth = true;
  // Cap on store read bandwidth in bytes/s (RateLimitedEnv); 0: none.
  double max_read_bandwidth = 0;
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
  absl::StatusOr<std::unique_ptr<LoadedInstance>> Load(
      const LoadRequest& request, const std::function<void(const LoadProgressInfo&)>& progress,
      const loader::CancellationToken& cancelled) override;
  absl::StatusOr<std::vector<loadstar::v1::ModelFile>> ModelFiles(
      const std::string& model) const override;
  absl::StatusOr<std::string> ReadModelFile(const std::string& model,
                                            const std::string& name) const override;
  absl::Status Prefetch(const std::string& model) override;
  absl::Status Evict(const std::string& model) override;
  absl::StatusOr<loadstar::v1::ProbeResponse> Probe(const LoadedInstance& instance,
                                                    const std::string& tensor,
                                                    uint32_t rows) override;

 private:
  PipelineInstanceLoader() = default;
  void MeasureBandwidth();

  PipelineInstanceLoaderOptions options_;
  std::unique_ptr<Env> env_;  // RateLimitedEnv when reads are capped
  std::unique_ptr<store::Store> store_;
  std::vector<std::unique_ptr<loader::Device>> devices_;
  std::unique_ptr<loader::HostCache> cache_;
  std::unique_ptr<loader::LoadPipeline> pipeline_;
  double disk_bandwidth_ = 1e9;
  double copy_bandwidth_ = 5e9;
};

}  // namespace loadstar::daemon
