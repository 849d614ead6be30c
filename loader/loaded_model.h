// LoadedModel: a model resident on devices — one allocation per device and a table of
// where each tensor lies. The worker serves it as an instance handle (GetInstance:
// Export() gives the per-device memory handles, tensors() the table) and destroys it on
// unload, which frees the allocations.
//
// Lifetime: the devices must outlive the LoadedModel. Thread safety: const methods are
// thread-safe; Free (and destruction) must not race with other calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "loader/device.h"
#include "loader/load_plan.h"

namespace loadstar::loader {

struct LoadedTensor {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;
  int device = 0;       // index into the model's devices
  uint64_t offset = 0;  // inside that device's allocation
  uint64_t size = 0;
  // Set by a load-time transform (e.g. quantization state as JSON); empty otherwise.
  std::string transform_info;
  // Tensor parallelism: shard `shard` of `num_shards` (1 when whole or replicated).
  int shard = 0;
  int num_shards = 1;
};

class LoadedModel {
 public:
  // Takes ownership of `allocations` (one per device; size 0 = nothing on that device).
  LoadedModel(std::string key, std::vector<Device*> devices,
              std::vector<Allocation> allocations, const LoadPlan& plan);
  // Same, with the tensor table given (a replica copied from a resident model).
  LoadedModel(std::string key, std::vector<Device*> devices,
              std::vector<Allocation> allocations, std::vector<LoadedTensor> tensors);
  ~LoadedModel();
  LoadedModel(const LoadedModel&) = delete;
  LoadedModel& operator=(const LoadedModel&) = delete;

  const std::string& key() const { return key_; }
  int num_devices() const { return static_cast<int>(devices_.size()); }
  Device* device(int i) const { return devices_[i]; }
  const Allocation& allocation(int i) const { return allocations_[i]; }
  const std::vector<LoadedTensor>& tensors() const { return tensors_; }
  // The table itself, for rewrites after the load (quantize_transform.h expands each
  // quantized region into its state-dict tensors). Not thread-safe.
  std::vector<LoadedTensor>& mutable_tensors() { return tensors_; }
  // First tensor (shard 0 under tensor parallelism) named `name`, or nullptr.
  const LoadedTensor* Find(std::string_view name) const;
  // Sum of tensor sizes (not counting padding).
  uint64_t tensor_bytes() const;

  // Per device: the handle a same-host consumer maps (kind kHost with an empty name when
  // the device holds nothing).
  absl::StatusOr<std::vector<ExportedHandle>> Export() const;
  // Copies a tensor's bytes out (verification, ReadTensor).
  absl::StatusOr<std::string> ReadTensor(const LoadedTensor& tensor) const;
  // Host pointer to a tensor's bytes when its device is host-addressable, else nullptr.
  const char* HostData(const LoadedTensor& tensor) const;

  // Frees every allocation; idempotent. The first error is returned, the rest still freed.
  absl::Status Free();

 private:
  std::string key_;
  std::vector<Device*> devices_;
  std::vector<Allocation> allocations_;
  std::vector<LoadedTensor> tensors_;
  bool freed_ = false;
};

}  // namespace loadstar::loader
