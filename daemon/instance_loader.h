// InstanceLoader: what a worker needs from the load pipeline, so the worker's instance
// manager (and its tests, with an in-memory fake) do not depend on loader/ internals.
// The real implementation, PipelineInstanceLoader (pipeline_instance_loader.cc), drives
// loader/'s LoadPipeline over the worker's store, devices and host cache.
//
// Contract:
//  1. Load blocks until the instance is resident, failed, or cancelled; it polls
//     `cancelled` between chunks and returns CANCELLED promptly once it is set, having freed
//     everything it allocated.
//  2. Destroying a LoadedInstance frees its device memory.
//  3. Every method is thread-safe; loads of different instances may run concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loader/load_pipeline.h"
#include "loadstar/v1/worker.pb.h"

namespace loadstar::daemon {

struct LoadRequest {
  std::string instance_id;
  loadstar::v1::LoadSpec spec;
  std::vector<uint32_t> devices;  // indices into Devices(); empty: loader's choice
};

struct LoadProgressInfo {
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  uint32_t tensors_done = 0;
  uint32_t tensors_total = 0;
};

class LoadedInstance {
 public:
  virtual ~LoadedInstance() = default;
  // Tensor table and memory handles; instance_id and model are filled by the caller.
  virtual loadstar::v1::InstanceHandle Handle() const = 0;
  // Copies `n` bytes of tensor `name` from `offset` into `dst` (bounds already checked
  // against the handle's size by the caller).
  virtual absl::Status ReadTensor(const std::string& name, uint64_t offset, uint64_t n,
                                  char* dst) const = 0;
  // Where the weights came from: "artifact" (a stored quantized variant) or "checkpoint"
  // (the checkpoint, quantized while loading when the deployment quantizes).
  virtual std::string source() const = 0;
  // The tier the bytes came from: "disk" (the store), "host_cache" (the worker's DRAM
  // cache of the checkpoint) or "device_copy" (a resident instance, device-to-device).
  virtual std::string tier() const = 0;
  // GB/s of the transfer that placed the bytes; 0 when not measured.
  virtual double gbps() const { return 0; }
  // Multi-device loads: "per_device" | "staged" (loader/spread.h); "" otherwise.
  virtual std::string spread() const { return ""; }
  // device_copy: the instance id the bytes were copied from.
  virtual std::string copied_from() const { return ""; }
};

class InstanceLoader {
 public:
  virtual ~InstanceLoader() = default;

  // Devices with their current free memory.
  virtual std::vector<loadstar::v1::DeviceInfo> Devices() const = 0;
  // The store's models (inventory for the scheduler).
  virtual absl::StatusOr<std::vector<loadstar::v1::StoredModel>> ListModels() const = 0;
  virtual uint64_t host_cache_bytes() const = 0;
  virtual uint64_t host_cache_used() const = 0;
  // Measured at start: store read and host -> device copy bandwidth, bytes/s.
  virtual double disk_bandwidth() const = 0;
  virtual double copy_bandwidth() const = 0;
  // Device -> device through the worker's Communicator; 0 without one.
  virtual double device_copy_bandwidth() const { return 0; }
  // The communicator's name ("host", "nccl"), "" without one.
  virtual std::string communicator() const { return ""; }

  // What Load of `spec` would allocate on each of its spec.num_gpus devices, planned from
  // the store without reading a tensor (the exact footprint the scheduler prices); fails
  // as that load would before reading. Independent of which devices it lands on.
  virtual absl::StatusOr<loadstar::v1::PlanLoadResponse> PlanLoad(
      const loadstar::v1::LoadSpec& spec) const = 0;

  virtual absl::StatusOr<std::unique_ptr<LoadedInstance>> Load(
      const LoadRequest& request, const std::function<void(const LoadProgressInfo&)>& progress,
      const loader::CancellationToken& cancelled) = 0;

  // The kept non-weight files of stored model `model` (config.json, tokenizer files, ...),
  // sorted by name; NotFound for an unknown model.
  virtual absl::StatusOr<std::vector<loadstar::v1::ModelFile>> ModelFiles(
      const std::string& model) const = 0;
  // The bytes of file `name` (one of ModelFiles(model)); NotFound for any other name.
  virtual absl::StatusOr<std::string> ReadModelFile(const std::string& model,
                                                    const std::string& name) const = 0;

  virtual absl::Status Prefetch(const std::string& model) = 0;
  virtual absl::Status Evict(const std::string& model) = 0;

  // Quantized matmul error of a loaded weight against its unquantized reference.
  virtual absl::StatusOr<loadstar::v1::ProbeResponse> Probe(const LoadedInstance& instance,
                                                            const std::string& tensor,
                                                            uint32_t rows) = 0;
};

}  // namespace loadstar::daemon
