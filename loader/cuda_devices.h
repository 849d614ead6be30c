// The seam between loader/ and kernels/ for CUDA devices. loader/ never includes CUDA
// headers: when loadstar is built with CUDA (LOADSTAR_HAVE_CUDA, defined by the
// loadstar_kernels target), kernels/ defines these functions (kernels/cuda_device.cc);
// without CUDA they do not exist and CreateDevices reports that CUDA is not built in.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loader/device.h"

namespace loadstar::loader {

#ifdef LOADSTAR_HAVE_CUDA
// True when at least one GPU is usable. Otherwise false with `reason` set; a missing
// driver (cudaErrorInsufficientDriver, error 35) or no device is "no GPU", never a crash.
bool CudaUsable(std::string* reason);

// One Device per visible GPU, or an error naming why there is none
// (FailedPrecondition for no driver / no device).
absl::StatusOr<std::vector<std::unique_ptr<Device>>> CreateCudaDevices();
#endif

}  // namespace loadstar::loader
