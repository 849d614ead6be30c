// The loader's devices: the Device vocabulary (base/device.h, which kernels/ implements)
// under the loader's names, and CreateDevices, which builds host devices itself and asks
// the device backend registry (loader/device_backends.h) for CUDA devices.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/device.h"

namespace loadstar::loader {

using ::loadstar::Allocation;
using ::loadstar::CopyTicket;
using ::loadstar::Device;
using ::loadstar::DeviceKind;
using ::loadstar::ExportedHandle;

// Parses a device spec: "host:N" (N emulated devices of `host_device_bytes` each),
// "cuda" (every visible GPU), "auto" (cuda when a GPU is usable, else host:1).
// With no usable GPU, "cuda" is an error naming the reason (not built with CUDA, the CUDA
// module or its libraries missing, no driver, no device). Only "cuda" and "auto" load the
// CUDA module; host specs never touch CUDA.
// Host devices keep up to `host_retain_bytes` each of freed memory for reuse (see
// HostDevice); 0 returns it to the OS at once. With HostMemory::kPooled each host device
// is one shm pool of `host_device_bytes`, populated in the background from now on
// (HostDevice::CreatePooled; a worker's devices); retain must then be 0.
enum class HostMemory { kFresh, kPooled };
absl::StatusOr<std::vector<std::unique_ptr<Device>>> CreateDevices(
    const std::string& spec, uint64_t host_device_bytes = 64ull << 30,
    uint64_t host_retain_bytes = 0, HostMemory host_memory = HostMemory::kFresh);

}  // namespace loadstar::loader
