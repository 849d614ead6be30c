// The loader's registry of device backends (quant/device_backend.h). Host devices are
// the loader's own (loader/host_device.h); accelerator devices come from a backend
// registered here. Binaries that link kernels/ statically (the GPU tests, bench_gpu)
// register kernels::CudaBackend() themselves; everything else, the `loadstar` binary
// included, gets the CUDA backend by loading the CUDA module (libloadstar_cuda.so, built
// from kernels/module/) on the first request for it. So `loadstar --help`, `store`
// commands and host-device workers never map libcudart or cuBLAS, and a loadstar built
// with CUDA runs on host devices where the CUDA libraries are missing.
//
// Thread safety: every function is thread-safe.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/device.h"
#include "base/host_memory_allocator.h"
#include "quant/device_backend.h"

namespace loadstar::loader {

// Registers `backend` (not owned; it must live as long as the process) under its name.
// AlreadyExists when a backend of that name or of the same device kind is registered (or
// was loaded) already: one backend per kind, so BackendOf is unambiguous.
absl::Status RegisterDeviceBackend(DeviceBackend* backend);

// The backend called `name` ("cuda"): the registered one, else the CUDA module's, loaded
// once from, in order: $LOADSTAR_CUDA_MODULE (a file path), <dir of the executable>/
// ../lib/loadstar/libloadstar_cuda.so, the build tree's lib/loadstar/. FailedPrecondition
// saying why there is none: built without CUDA, module not found, or its libraries
// missing (the dynamic loader's message, e.g. "libcudart.so.13: cannot open shared
// object file"). The first answer is kept; later calls do not retry.
absl::StatusOr<DeviceBackend*> GetDeviceBackend(const std::string& name);

// The registered or loaded backend whose devices are of `device`'s kind; nullptr for host
// devices (and for kinds no backend provides).
DeviceBackend* BackendOf(const Device& device);

// Staging memory (pinned ring, host cache) for loads onto `devices`: the backend's
// page-locked allocator when they are accelerator devices, DefaultHostAllocator()
// otherwise (empty list included).
HostMemoryAllocator* StagingAllocatorFor(const std::vector<Device*>& devices);

// True once this process has loaded the CUDA module (dlopen succeeded).
bool CudaModuleLoaded();

}  // namespace loadstar::loader
