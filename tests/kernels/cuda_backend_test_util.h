// For GPU tests that go through the loader (kernels_tests links it): registers the
// statically linked CUDA backend with the loader's registry once per process, as the CUDA
// module's entry point would be found by the `loadstar` binary.
#pragma once

#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"
#include "loader/device_backends.h"

namespace loadstar::kernels {

inline void RegisterCudaBackendOnce() {
  static const absl::Status registered = loader::RegisterDeviceBackend(StaticCudaBackend());
  ASSERT_TRUE(registered.ok()) << registered;
}

}  // namespace loadstar::kernels
