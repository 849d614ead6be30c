#include "loader/device_backends.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace loadstar::loader {
namespace {

struct Registry {
  absl::Mutex mu;
  std::map<std::string, DeviceBackend*> backends ABSL_GUARDED_BY(mu);
  // The outcome of loading the CUDA module, once tried.
  std::optional<absl::StatusOr<DeviceBackend*>> cuda_module ABSL_GUARDED_BY(mu);
  bool cuda_module_loaded ABSL_GUARDED_BY(mu) = false;
};

Registry& GetRegistry() {
  static Registry* registry = new Registry;
  return *registry;
}

#ifdef LOADSTAR_CUDA_MODULE_BUILD_PATH
// The module's entry point (kernels/module/cuda_module.cc): the process-wide backend, or
// nullptr when `abi` is not the tag the module was built with.
using ModuleEntry = DeviceBackend* (*)(const char* abi);
constexpr char kModuleFile[] = "libloadstar_cuda.so";

std::vector<std::string> ModuleCandidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("LOADSTAR_CUDA_MODULE"); env != nullptr && *env) {
    paths.push_back(env);
    return paths;  // an explicit choice is not second-guessed
  }
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    paths.push_back((exe.parent_path() / ".." / "lib" / "loadstar" / kModuleFile).string());
  }
  paths.push_back(LOADSTAR_CUDA_MODULE_BUILD_PATH);
  return paths;
}

absl::StatusOr<DeviceBackend*> LoadCudaModule(bool* loaded) {
  std::vector<std::string> tried;
  for (const std::string& path : ModuleCandidates()) {
    if (::access(path.c_str(), R_OK) != 0) {
      tried.push_back(path);
      continue;
    }
    // RTLD_LOCAL: the module's copies of base/ and quant/ stay its own (it is linked with
    // --exclude-libs and exports only its entry point).
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* error = ::dlerror();
      return absl::FailedPreconditionError(
          fmt::format("CUDA module {} cannot be loaded: {}", path, error ? error : "?"));
    }
    auto entry = reinterpret_cast<ModuleEntry>(::dlsym(handle, "loadstar_cuda_backend_v1"));
    if (entry == nullptr) {
      return absl::FailedPreconditionError(
          fmt::format("CUDA module {} has no entry point loadstar_cuda_backend_v1", path));
    }
    DeviceBackend* backend = entry(LOADSTAR_MODULE_ABI);
    if (backend == nullptr) {
      return absl::FailedPreconditionError(fmt::format(
          "CUDA module {} was built for another loadstar (this one is {})", path,
          LOADSTAR_MODULE_ABI));
    }
    *loaded = true;
    return backend;  // the handle is never closed (backend contract rule 1)
  }
  return absl::FailedPreconditionError(fmt::format(
      "CUDA module {} not found (looked at {}; set LOADSTAR_CUDA_MODULE)", kModuleFile,
      fmt::join(tried, ", ")));
}
#endif

}  // namespace

absl::Status RegisterDeviceBackend(DeviceBackend* backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("null device backend");
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  // One backend per device kind, so BackendOf is unambiguous.
  for (const auto& [name, other] : r.backends) {
    if (name == backend->name() || other->kind() == backend->kind()) {
      return absl::AlreadyExistsError(fmt::format(
          "device backend '{}': '{}' is registered already for its devices", backend->name(),
          name));
    }
  }
  r.backends.emplace(backend->name(), backend);
  return absl::OkStatus();
}

absl::StatusOr<DeviceBackend*> GetDeviceBackend(const std::string& name) {
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  if (auto it = r.backends.find(name); it != r.backends.end()) return it->second;
  if (name != "cuda") {
    return absl::NotFoundError(fmt::format("no device backend '{}'", name));
  }
#ifdef LOADSTAR_CUDA_MODULE_BUILD_PATH
  if (!r.cuda_module.has_value()) {
    // Loading under the lock: concurrent first requests wait for one dlopen.
    bool loaded = false;
    r.cuda_module = LoadCudaModule(&loaded);
    r.cuda_module_loaded = loaded;
    if (r.cuda_module->ok()) {
      for (const auto& [other_name, other] : r.backends) {
        if (other->kind() == (**r.cuda_module)->kind()) {
          r.cuda_module = absl::FailedPreconditionError(fmt::format(
              "CUDA module loaded, but '{}' is registered for CUDA devices", other_name));
          return *r.cuda_module;
        }
      }
      r.backends.emplace(name, **r.cuda_module);
    }
  }
  return *r.cuda_module;
#else
  return absl::FailedPreconditionError("loadstar was built without CUDA");
#endif
}

DeviceBackend* BackendOf(const Device& device) {
  if (device.kind() == DeviceKind::kHost) return nullptr;
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  for (const auto& [name, backend] : r.backends) {
    if (backend->kind() == device.kind()) return backend;
  }
  return nullptr;
}

HostMemoryAllocator* StagingAllocatorFor(const std::vector<Device*>& devices) {
  for (Device* d : devices) {
    if (d == nullptr) continue;
    if (DeviceBackend* backend = BackendOf(*d)) return backend->staging_allocator();
  }
  return DefaultHostAllocator();
}

bool CudaModuleLoaded() {
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  return r.cuda_module_loaded;
}

}  // namespace loadstar::loader
