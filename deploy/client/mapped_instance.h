// MappedInstance: the zero-copy view of a loaded instance for a consumer on the worker's
// host (SPEC §3.5). Host devices: each allocation's POSIX shared-memory object is mapped
// read-only (the instance is shared by every consumer and must not change under them).
// CUDA devices (a build with CUDA): the cudaIpcMemHandle is opened in this process.
//
// The mapping stays valid while this object lives, but loadstar only guarantees the bytes
// while a lease on the instance is live: destroy the MappedInstance before releasing.
//
// Thread safety: immutable after Map; Find may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loadstar/v1/worker.pb.h"

namespace loadstar::client {

struct TensorView {
  const loadstar::v1::TensorInfo* info = nullptr;  // name, dtype, shape, quant state
  std::string kind;            // "host" (data is CPU memory) | "cuda" (device pointer)
  const void* data = nullptr;  // first byte of the tensor
  uint64_t size = 0;
};

class MappedInstance {
 public:
  // Maps every allocation of `handle`. NotFound when a shared-memory object does not exist
  // here (the worker is on another host or in another IPC namespace: read the tensors over
  // Client::ReadTensor instead); FailedPrecondition for CUDA memory in a build without
  // CUDA; InvalidArgument when a tensor lies outside its allocation.
  static absl::StatusOr<std::unique_ptr<MappedInstance>> Map(
      const loadstar::v1::InstanceHandle& handle);
  ~MappedInstance();
  MappedInstance(const MappedInstance&) = delete;
  MappedInstance& operator=(const MappedInstance&) = delete;

  const loadstar::v1::InstanceHandle& handle() const { return handle_; }
  // The tensor `name`, or nullptr.
  const TensorView* Find(const std::string& name) const;
  const std::vector<TensorView>& tensors() const { return tensors_; }

 private:
  struct Region {
    std::string kind;
    void* base = nullptr;
    uint64_t size = 0;
  };
  MappedInstance() = default;

  loadstar::v1::InstanceHandle handle_;
  std::map<uint32_t, Region> regions_;  // by device index
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> by_name_;
};

}  // namespace loadstar::client
