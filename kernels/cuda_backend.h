// CudaBackend: the DeviceBackend (quant/device_backend.h) over the GPUs of this process —
// CudaDevice per GPU, page-locked staging memory (CudaHostAllocator), GpuStreamingQuantizer
// on the device a tensor goes to, and a communicator from the factory it was given (the
// CUDA module passes NcclCommunicator's; this library itself never links NCCL, so the GPU
// tests that link it do not need libnccl).
//
// The loader reaches it by registration (loader/device_backends.h): the CUDA module's
// entry point returns it (kernels/module/cuda_module.cc), binaries linking kernels/
// statically register it themselves.
//
// Thread safety: every method is thread-safe (DeviceBackend rule 1).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "quant/device_backend.h"

namespace loadstar::kernels {

class GpuQuantizer;

class CudaBackend final : public DeviceBackend {
 public:
  using CommunicatorFactory = std::function<absl::StatusOr<std::unique_ptr<Communicator>>(
      const std::vector<Device*>& devices)>;
  struct Options {
    int copy_lanes = 4;  // CudaDevice::Options::copy_lanes
    // Null: CreateCommunicator is FailedPrecondition (built without NCCL).
    CommunicatorFactory communicator;
  };

  explicit CudaBackend(Options options);
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  DeviceKind kind() const override { return DeviceKind::kCuda; }
  absl::Status Usable() override;
  absl::StatusOr<std::vector<std::unique_ptr<Device>>> CreateDevices() override;
  absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
      const std::vector<Device*>& devices) override;
  HostMemoryAllocator* staging_allocator() override;
  absl::StatusOr<std::unique_ptr<quant::TensorQuantizer>> CreateQuantizer(
      Device& device, const quant::StreamingQuantizer::Options& options) override;

 private:
  // The GpuQuantizer of `ordinal`, created on first use (it holds the device's copy of the
  // double-quant map) and kept for the process.
  absl::StatusOr<const GpuQuantizer*> QuantizerFor(int ordinal);

  const Options options_;
  absl::Mutex mu_;
  std::map<int, std::unique_ptr<GpuQuantizer>> quantizers_ ABSL_GUARDED_BY(mu_);
  uint64_t next_lane_ ABSL_GUARDED_BY(mu_) = 0;
};

// The process-wide backend without a communicator factory, for binaries that link
// kernels/ and register it (GPU tests). Never deleted.
CudaBackend* StaticCudaBackend();

}  // namespace loadstar::kernels
