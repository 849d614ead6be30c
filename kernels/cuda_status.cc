#include "kernels/cuda_status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace loadstar::kernels {
const char* SourceBaseName(const char* file) {
  const std::string_view f(file);
  const size_t slash = f.rfind("/kernels/");
  return slash == std::string_view::npos ? file : file + slash + 1;
}

namespace {

absl::StatusCode CodeFor(cudaError_t error) {
  switch (error) {
    case cudaErrorMemoryAllocation:
      return absl::StatusCode::kResourceExhausted;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
      return absl::StatusCode::kFailedPrecondition;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidMemcpyDirection:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::Status CudaError(cudaError_t error, const char* expr, const char* file, int line) {
  // The runtime keeps a failed call's error as the thread's "last error" until someone
  // reads it, and the next kernel launcher's cudaGetLastError() would report it as its own
  // failure. The error is now in our Status, so clear it. (A sticky error, e.g. an illegal
  // address, stays: the context is unusable and every later call says so.)
  static_cast<void>(cudaGetLastError());
  return absl::Status(CodeFor(error),
                      absl::StrCat(expr, " failed: ", cudaGetErrorString(error), " (",
                                   cudaGetErrorName(error), ") at ", SourceBaseName(file), ":", line));
}

absl::Status NoUsableGpu(cudaError_t error) {
  return absl::FailedPreconditionError(
      absl::StrCat("no usable GPU: ", cudaGetErrorString(error)));
}

}  // namespace loadstar::kernels
