#include "kernels/cuda_status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace loadstar::kernels {
namespace {

// Strips the directory, so messages are stable across build trees.
const char* BaseName(const char* file) {
  const std::string_view f(file);
  const size_t slash = f.rfind("/kernels/");
  return slash == std::string_view::npos ? file : file + slash + 1;
}

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
  return absl::Status(CodeFor(error),
                      absl::StrCat(expr, " failed: ", cudaGetErrorString(error), " (",
                                   cudaGetErrorName(error), ") at ", BaseName(file), ":", line));
}

absl::Status CublasError(cublasStatus_t error, const char* expr, const char* file, int line) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  if (error == CUBLAS_STATUS_ALLOC_FAILED) code = absl::StatusCode::kResourceExhausted;
  if (error == CUBLAS_STATUS_INVALID_VALUE) code = absl::StatusCode::kInvalidArgument;
  if (error == CUBLAS_STATUS_NOT_SUPPORTED) code = absl::StatusCode::kUnimplemented;
  if (error == CUBLAS_STATUS_NOT_INITIALIZED) code = absl::StatusCode::kFailedPrecondition;
  return absl::Status(code, absl::StrCat(expr, " failed: ", cublasGetStatusString(error),
                                         " (", cublasGetStatusName(error), ") at ",
                                         BaseName(file), ":", line));
}

absl::Status NoUsableGpu(cudaError_t error) {
  return absl::FailedPreconditionError(
      absl::StrCat("no usable GPU: ", cudaGetErrorString(error)));
}

}  // namespace loadstar::kernels
