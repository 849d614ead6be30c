#include "loader/loaded_model.h"

#include "absl/strings/str_cat.h"

namespace loadstar::loader {

LoadedModel::LoadedModel(std::string key, std::vector<Device*> devices,
                         std::vector<Allocation> allocations, const LoadPlan& plan)
    : key_(std::move(key)), devices_(std::move(devices)), allocations_(std::move(allocations)) {
  tensors_.reserve(plan.tensors.size());
  for (const PlannedTensor& p : plan.tensors) {
    tensors_.push_back(LoadedTensor{p.name, p.dtype, p.shape, p.device, p.offset, p.size,
                                    p.transform_info, p.shard, p.num_shards});
  }
}

LoadedModel::LoadedModel(std::string key, std::vector<Device*> devices,
                         std::vector<Allocation> allocations, std::vector<LoadedTensor> tensors)
    : key_(std::move(key)),
      devices_(std::move(devices)),
      allocations_(std::move(allocations)),
      tensors_(std::move(tensors)) {}

LoadedModel::~LoadedModel() { Free().IgnoreError(); }

const LoadedTensor* LoadedModel::Find(std::string_view name) const {
  for (const LoadedTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

uint64_t LoadedModel::tensor_bytes() const {
  uint64_t total = 0;
  for (const LoadedTensor& t : tensors_) total += t.size;
  return total;
}

absl::StatusOr<std::vector<ExportedHandle>> LoadedModel::Export() const {
  std::vector<ExportedHandle> handles;
  for (size_t d = 0; d < devices_.size(); ++d) {
    if (allocations_[d].size == 0 && allocations_[d].ptr == nullptr) {
      ExportedHandle empty;
      empty.kind = devices_[d]->kind();
      handles.push_back(empty);
      continue;
    }
    absl::StatusOr<ExportedHandle> h = devices_[d]->Export(allocations_[d]);
    if (!h.ok()) return h.status();
    handles.push_back(*std::move(h));
  }
  return handles;
}

absl::StatusOr<std::string> LoadedModel::ReadTensor(const LoadedTensor& tensor) const {
  std::string bytes(tensor.size, '\0');
  absl::Status status = devices_[tensor.device]->CopyToHost(
      bytes.data(), allocations_[tensor.device], tensor.offset, tensor.size);
  if (!status.ok()) return status;
  return bytes;
}

const char* LoadedModel::HostData(const LoadedTensor& tensor) const {
  if (devices_[tensor.device]->kind() != DeviceKind::kHost) return nullptr;
  return static_cast<const char*>(allocations_[tensor.device].ptr) + tensor.offset;
}

absl::Status LoadedModel::Free() {
  if (freed_) return absl::OkStatus();
  freed_ = true;
  absl::Status first;
  for (size_t d = 0; d < devices_.size(); ++d) {
    if (allocations_[d].ptr == nullptr) continue;
    absl::Status s = devices_[d]->Free(allocations_[d]);
    if (first.ok() && !s.ok()) first = s;
    allocations_[d] = Allocation{};
  }
  return first;
}

}  // namespace loadstar::loader
