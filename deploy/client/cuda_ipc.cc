#include "deploy/client/cuda_ipc.h"

#include <fmt/format.h>

#include <cstring>

#ifdef LOADSTAR_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace loadstar::client {

#ifdef LOADSTAR_HAVE_CUDA
namespace {

// The same "GPU-xxxxxxxx-xxxx-..." form the worker exports (kernels/cuda_device.cc) and
// nvidia-smi prints.
std::string UuidOf(const cudaUUID_t& uuid) {
  const auto* b = reinterpret_cast<const unsigned char*>(uuid.bytes);
  return fmt::format(
      "GPU-{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}"
      "{:02x}{:02x}",
      b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
      b[14], b[15]);
}

absl::Status CudaStatus(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();  // clear the sticky error so later calls are not blamed for it
  return absl::FailedPreconditionError(
      fmt::format("{}: {} ({})", what, cudaGetErrorString(e), static_cast<int>(e)));
}

}  // namespace

absl::StatusOr<void*> OpenCudaIpcHandle(const std::string& ipc_handle,
                                        const std::string& device_uuid) {
  cudaIpcMemHandle_t h;
  if (ipc_handle.size() != sizeof(h)) {
    return absl::InvalidArgumentError(fmt::format(
        "CUDA IPC handle has {} bytes, expected {}", ipc_handle.size(), sizeof(h)));
  }
  std::memcpy(&h, ipc_handle.data(), sizeof(h));
  int count = 0;
  if (absl::Status s = CudaStatus(cudaGetDeviceCount(&count), "no usable GPU"); !s.ok()) return s;
  int device = -1;
  for (int d = 0; d < count && !device_uuid.empty(); ++d) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, d) == cudaSuccess && UuidOf(prop.uuid) == device_uuid) {
      device = d;
    }
  }
  if (!device_uuid.empty() && device < 0) {
    return absl::NotFoundError(fmt::format(
        "GPU {} is not visible to this process (check CUDA_VISIBLE_DEVICES)", device_uuid));
  }
  if (device >= 0) {
    if (absl::Status s = CudaStatus(cudaSetDevice(device), "cudaSetDevice"); !s.ok()) return s;
  }
  void* ptr = nullptr;
  if (absl::Status s = CudaStatus(cudaIpcOpenMemHandle(&ptr, h, cudaIpcMemLazyEnablePeerAccess),
                                  "cudaIpcOpenMemHandle");
      !s.ok()) {
    return s;
  }
  return ptr;
}

absl::Status CloseCudaIpcHandle(void* device_pointer) {
  return CudaStatus(cudaIpcCloseMemHandle(device_pointer), "cudaIpcCloseMemHandle");
}

#else

absl::StatusOr<void*> OpenCudaIpcHandle(const std::string&, const std::string& device_uuid) {
  return absl::FailedPreconditionError(fmt::format(
      "the instance lives on GPU {}, but this loadstar client was built without CUDA",
      device_uuid));
}

absl::Status CloseCudaIpcHandle(void*) {
  return absl::FailedPreconditionError("this loadstar client was built without CUDA");
}

#endif

}  // namespace loadstar::client
