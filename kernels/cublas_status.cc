// CublasError, apart from cuda_status.cc so that only code that calls cuBLAS links
// libcublas (every GPU binary uses CudaError; with --as-needed, one that never calls
// cuBLAS then does not need libcublas on the GPU machine).
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_status.h"

namespace loadstar::kernels {

absl::Status CublasError(cublasStatus_t error, const char* expr, const char* file, int line) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  if (error == CUBLAS_STATUS_ALLOC_FAILED) code = absl::StatusCode::kResourceExhausted;
  if (error == CUBLAS_STATUS_INVALID_VALUE) code = absl::StatusCode::kInvalidArgument;
  if (error == CUBLAS_STATUS_NOT_SUPPORTED) code = absl::StatusCode::kUnimplemented;
  if (error == CUBLAS_STATUS_NOT_INITIALIZED) code = absl::StatusCode::kFailedPrecondition;
  return absl::Status(code, absl::StrCat(expr, " failed: ", cublasGetStatusString(error),
                                         " (", cublasGetStatusName(error), ") at ",
                                         SourceBaseName(file), ":", line));
}

}  // namespace loadstar::kernels
