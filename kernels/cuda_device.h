// CudaDevice: a Device over one GPU. Memory comes from cudaMalloc; host-to-device
// copies are spread round-robin over `copy_lanes` streams (so several ring slots can be in
// flight, and copies overlap reads); each copy records an event, and its CopyTicket names
// that event. Export gives the allocation's cudaIpcMemHandle plus the GPU's UUID, which a
// consumer process opens with cudaIpcOpenMemHandle.
//
// Thread safety: every method is thread-safe (base/device.h rule 3). Each call selects
// its GPU (cudaSetDevice) on the calling thread first.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/device.h"

namespace loadstar::kernels {

// The number of GPUs the CUDA runtime sees, >= 1; FailedPrecondition "no usable GPU:
// <reason>" when there is no driver (error 35 on a CPU-only machine) or no device.
absl::StatusOr<int> UsableGpuCount();

class CudaDevice : public Device {
 public:
  struct Options {
    int ordinal = 0;     // CUDA device index
    int copy_lanes = 4;  // streams used for host-to-device copies, >= 1
  };

  static absl::StatusOr<std::unique_ptr<CudaDevice>> Create(const Options& options);
  // Frees what is still allocated (callers should have Freed it) and the streams.
  ~CudaDevice() override;
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string name() const override;
  uint64_t total_memory() const override { return total_memory_; }
  uint64_t free_memory() const override;

  absl::StatusOr<Allocation> Allocate(uint64_t bytes) override;
  absl::Status Free(const Allocation& allocation) override;
  absl::StatusOr<CopyTicket> CopyToDeviceAsync(const Allocation& dst,
                                                       uint64_t offset, const void* src,
                                                       uint64_t bytes) override;
  absl::Status Wait(CopyTicket ticket) override;
  // Waits for every copy enqueued on the copy lanes first, so it sees their bytes even
  // when the caller has not Waited for their tickets.
  absl::Status CopyToHost(void* dst, const Allocation& src, uint64_t offset,
                          uint64_t bytes) override;
  absl::StatusOr<ExportedHandle> Export(const Allocation& allocation) override;

  int ordinal() const { return options_.ordinal; }
  // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi prints it.
  const std::string& uuid() const { return uuid_; }
  // Stream of copy lane `lane % copy_lanes`, for kernels that should follow copies
  // (quantize while streaming).
  cudaStream_t stream(int lane) const { return streams_[lane % streams_.size()]; }

 private:
  CudaDevice(const Options& options, uint64_t total_memory, std::string uuid,
             std::vector<cudaStream_t> streams);
  // REQUIRES: the allocation is known and [offset, offset + bytes) lies inside it.
  absl::Status CheckRange(const Allocation& allocation, uint64_t offset,
                          uint64_t bytes) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const uint64_t total_memory_;
  const std::string uuid_;
  const std::vector<cudaStream_t> streams_;

  mutable absl::Mutex mu_;
  uint64_t next_allocation_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Allocation> allocations_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_lane_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<CopyTicket, cudaEvent_t> pending_ ABSL_GUARDED_BY(mu_);
};

// One CudaDevice per visible GPU, as loader::CreateDevices("cuda") returns them (through
// the CUDA backend, kernels/cuda_backend.h).
// FailedPrecondition "no usable GPU: ..." without a driver or device; never crashes.
absl::StatusOr<std::vector<std::unique_ptr<Device>>> CreateCudaDevices(
    int copy_lanes = 4);

}  // namespace loadstar::kernels
