#include "kernels/cuda_backend.h"

#include <fmt/format.h>

#include "base/status_macros.h"
#include "kernels/cuda_device.h"
#include "kernels/cuda_host_allocator.h"
#include "kernels/gpu_quantizer.h"
#include "kernels/gpu_streaming_quantizer.h"

namespace loadstar::kernels {

CudaBackend::CudaBackend(Options options) : options_(std::move(options)) {}

CudaBackend::~CudaBackend() = default;

absl::Status CudaBackend::Usable() { return UsableGpuCount().status(); }

absl::StatusOr<std::vector<std::unique_ptr<Device>>> CudaBackend::CreateDevices() {
  return CreateCudaDevices(options_.copy_lanes);
}

absl::StatusOr<std::unique_ptr<Communicator>> CudaBackend::CreateCommunicator(
    const std::vector<Device*>& devices) {
  if (!options_.communicator) {
    return absl::FailedPreconditionError(
        "CUDA devices need NCCL, and loadstar was built without it");
  }
  return options_.communicator(devices);
}

HostMemoryAllocator* CudaBackend::staging_allocator() { return PinnedHostAllocator(); }

absl::StatusOr<const GpuQuantizer*> CudaBackend::QuantizerFor(int ordinal) {
  absl::MutexLock lock(&mu_);
  auto it = quantizers_.find(ordinal);
  if (it == quantizers_.end()) {
    ASSIGN_OR_RETURN(std::unique_ptr<GpuQuantizer> q, GpuQuantizer::Create(ordinal));
    it = quantizers_.emplace(ordinal, std::move(q)).first;
  }
  return it->second.get();
}

absl::StatusOr<std::unique_ptr<quant::TensorQuantizer>> CudaBackend::CreateQuantizer(
    Device& device, const quant::StreamingQuantizer::Options& options) {
  auto* cuda = dynamic_cast<CudaDevice*>(&device);
  if (cuda == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("{} is not a CUDA device of this backend", device.name()));
  }
  // A transposed Conv1D block spans every input row, so it cannot stream: CPU path.
  if (options.transpose_conv1d) return std::unique_ptr<quant::TensorQuantizer>();
  ASSIGN_OR_RETURN(const GpuQuantizer* gpu, QuantizerFor(cuda->ordinal()));
  uint64_t lane;
  {
    absl::MutexLock lock(&mu_);
    lane = next_lane_++;
  }
  // Spread concurrent tensors over the device's copy lanes; each quantizer waits only for
  // its own stream, so tensors on different lanes overlap.
  ASSIGN_OR_RETURN(std::unique_ptr<GpuStreamingQuantizer> q,
                   GpuStreamingQuantizer::Create(gpu, options,
                                                 cuda->stream(static_cast<int>(lane % 1024))));
  return std::unique_ptr<quant::TensorQuantizer>(std::move(q));
}

CudaBackend* StaticCudaBackend() {
  static CudaBackend* backend = new CudaBackend(CudaBackend::Options{});
  return backend;
}

}  // namespace loadstar::kernels
