// The CUDA module's entry point: libloadstar_cuda.so, which the loader dlopens the first
// time CUDA devices are asked for (loader/device_backends.h). It holds kernels/ and the
// NCCL communicator; the `loadstar` binary links neither, so only a GPU path maps
// libcudart and libnccl.
#include "base/communicator.h"
#include "kernels/cuda_backend.h"
#ifdef LOADSTAR_HAVE_NCCL
#include "kernels/nccl_communicator.h"
#endif

namespace {

loadstar::kernels::CudaBackend::Options ModuleOptions() {
  loadstar::kernels::CudaBackend::Options options;
#ifdef LOADSTAR_HAVE_NCCL
  options.communicator = [](const std::vector<loadstar::Device*>& devices)
      -> absl::StatusOr<std::unique_ptr<loadstar::Communicator>> {
    auto comm = loadstar::kernels::NcclCommunicator::CreateForDevices(devices);
    if (!comm.ok()) return comm.status();
    return std::unique_ptr<loadstar::Communicator>(std::move(comm).value());
  };
#endif
  return options;
}

}  // namespace

// `abi`: the loader's LOADSTAR_MODULE_ABI. The module and the loader exchange C++ objects,
// so they must come from the same sources and compiler; any other tag gets nullptr.
extern "C" __attribute__((visibility("default"))) loadstar::DeviceBackend*
loadstar_cuda_backend_v1(const char* abi) {
  if (abi == nullptr || std::string_view(abi) != LOADSTAR_MODULE_ABI) return nullptr;
  static auto* backend = new loadstar::kernels::CudaBackend(ModuleOptions());
  return backend;
}
