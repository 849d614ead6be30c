// Opening a CUDA IPC memory handle exported by a worker (cudaIpcGetMemHandle), for
// MappedInstance. Built with CUDA, cuda_ipc.cc loads the CUDA runtime (libcudart of the
// headers' major version) on the first call, so linking the client costs nothing at start
// and a machine without CUDA gets FailedPrecondition naming the missing library; without
// CUDA both functions return FailedPrecondition saying so.
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
