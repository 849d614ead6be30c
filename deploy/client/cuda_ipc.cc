#include "deploy/client/cuda_ipc.h"

#include <fmt/format.h>

#include <cstring>

#ifdef LOADSTAR_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#endif

namespace loadstar::client {

#ifdef LOADSTAR_HAVE_CUDA
namespace {

// The CUDA runtime is opened on first use, not linked: a program that links the client
// (the `loadstar` CLI among them) starts without mapping libcudart, and runs where it is
// missing; only opening a CUDA instance needs it. Same major version as the headers, so
// the declarations below match the library (cudaGetDeviceProperties is a macro naming
// the versioned symbol; CUDA_SYMBOL expands it before quoting).
#define CUDA_SYMBOL_QUOTE(name) #name
#define CUDA_SYMBOL(name) CUDA_SYMBOL_QUOTE(name)

struct CudaRuntime {
  decltype(&::cudaGetDeviceCount) get_device_count = nullptr;
  decltype(&::cudaGetDeviceProperties) get_device_properties = nullptr;
  decltype(&::cudaSetDevice) set_device = nullptr;
  decltype(&::cudaIpcOpenMemHandle) ipc_open = nullptr;
  decltype(&::cudaIpcCloseMemHandle) ipc_close = nullptr;
  decltype(&::cudaGetErrorString) error_string = nullptr;
  decltype(&::cudaGetLastError) get_last_error = nullptr;
};

// Looks `name` up in `lib` into `out`; the first name not found is kept in `missing`.
template <typename F>
void Resolve(void* lib, const char* name, F* out, const char** missing) {
  *out = reinterpret_cast<F>(::dlsym(lib, name));
  if (*out == nullptr && *missing == nullptr) *missing = name;
}

absl::StatusOr<const CudaRuntime*> Runtime() {
  static const absl::StatusOr<CudaRuntime>* runtime = [] {
    const std::string soname = fmt::format("libcudart.so.{}", CUDART_VERSION / 1000);
    void* lib = ::dlopen(soname.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (lib == nullptr) {
      const char* error = ::dlerror();
      return new absl::StatusOr<CudaRuntime>(absl::FailedPreconditionError(fmt::format(
          "the instance lives on a GPU, but the CUDA runtime cannot be loaded: {}",
          error ? error : soname)));
    }
    CudaRuntime r;
    const char* missing = nullptr;
    Resolve(lib, CUDA_SYMBOL(cudaGetDeviceCount), &r.get_device_count, &missing);
    Resolve(lib, CUDA_SYMBOL(cudaGetDeviceProperties), &r.get_device_properties, &missing);
    Resolve(lib, CUDA_SYMBOL(cudaSetDevice), &r.set_device, &missing);
    Resolve(lib, CUDA_SYMBOL(cudaIpcOpenMemHandle), &r.ipc_open, &missing);
    Resolve(lib, CUDA_SYMBOL(cudaIpcCloseMemHandle), &r.ipc_close, &missing);
    Resolve(lib, CUDA_SYMBOL(cudaGetErrorString), &r.error_string, &missing);
    Resolve(lib, CUDA_SYMBOL(cudaGetLastError), &r.get_last_error, &missing);
    if (missing != nullptr) {
      return new absl::StatusOr<CudaRuntime>(absl::FailedPreconditionError(
          fmt::format("{} has no {}", soname, missing)));
    }
    return new absl::StatusOr<CudaRuntime>(r);
  }();
  if (!runtime->ok()) return runtime->status();
  return &**runtime;
}

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

absl::Status CudaStatus(const CudaRuntime& rt, cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return absl::OkStatus();
  rt.get_last_error();  // clear the sticky error so later calls are not blamed for it
  return absl::FailedPreconditionError(
      fmt::format("{}: {} ({})", what, rt.error_string(e), static_cast<int>(e)));
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
  absl::StatusOr<const CudaRuntime*> runtime = Runtime();
  if (!runtime.ok()) return runtime.status();
  const CudaRuntime& rt = **runtime;
  int count = 0;
  if (absl::Status s = CudaStatus(rt, rt.get_device_count(&count), "no usable GPU"); !s.ok()) {
    return s;
  }
  int device = -1;
  for (int d = 0; d < count && !device_uuid.empty(); ++d) {
    cudaDeviceProp prop;
    if (rt.get_device_properties(&prop, d) == cudaSuccess && UuidOf(prop.uuid) == device_uuid) {
      device = d;
    }
  }
  if (!device_uuid.empty() && device < 0) {
    return absl::NotFoundError(fmt::format(
        "GPU {} is not visible to this process (check CUDA_VISIBLE_DEVICES)", device_uuid));
  }
  if (device >= 0) {
    if (absl::Status s = CudaStatus(rt, rt.set_device(device), "cudaSetDevice"); !s.ok()) {
      return s;
    }
  }
  void* ptr = nullptr;
  if (absl::Status s = CudaStatus(rt, rt.ipc_open(&ptr, h, cudaIpcMemLazyEnablePeerAccess),
                                  "cudaIpcOpenMemHandle");
      !s.ok()) {
    return s;
  }
  return ptr;
}

absl::Status CloseCudaIpcHandle(void* device_pointer) {
  absl::StatusOr<const CudaRuntime*> runtime = Runtime();
  if (!runtime.ok()) return runtime.status();
  return CudaStatus(**runtime, (*runtime)->ipc_close(device_pointer), "cudaIpcCloseMemHandle");
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
