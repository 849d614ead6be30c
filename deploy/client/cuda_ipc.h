// Opening a CUDA IPC memory handle exported by a worker (cudaIpcGetMemHandle), for
// MappedInstance. Defined in cuda_ipc.cc when loadstar is built with CUDA; without CUDA
// both functions return FailedPrecondition saying so.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace loadstar::client {

// Opens `ipc_handle` (the 64 bytes of a cudaIpcMemHandle_t) on the GPU whose UUID is
// `device_uuid` (empty: the current device) and returns the device pointer.
absl::StatusOr<void*> OpenCudaIpcHandle(const std::string& ipc_handle,
                                        const std::string& device_uuid);
absl::Status CloseCudaIpcHandle(void* device_pointer);

}  // namespace loadstar::client
