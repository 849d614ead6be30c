// Turns CUDA runtime, cuBLAS and NCCL error codes into absl::Status at the call site:
//
//   CUDA_RETURN_IF_ERROR(cudaMalloc(&p, n));
//   CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(...));
//
// The message carries the library's error text, the call's source text and file:line, e.g.
// "cudaMalloc(&p, n) failed: out of memory (cudaErrorMemoryAllocation) at
// kernels/cuda_device.cc:57". Codes: out of memory -> ResourceExhausted, no driver / no
// device -> FailedPrecondition, invalid argument -> InvalidArgument, else Internal.
// CudaError (so every CUDA_RETURN_IF_ERROR) also clears the runtime's last error, so a
// handled failure is not reported again by the next launch's cudaGetLastError().
// Only .cc adapters include this (it pulls absl); .cu files return cudaError_t.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace loadstar::kernels {

absl::Status CudaError(cudaError_t error, const char* expr, const char* file, int line);
// Defined in cublas_status.cc (only its callers link libcublas).
absl::Status CublasError(cublasStatus_t error, const char* expr, const char* file, int line);

// `file` from "kernels/" on (the directory stripped), so messages are stable across
// build trees.
const char* SourceBaseName(const char* file);

// "no usable GPU: <reason>" when the runtime finds no driver or no device; the count
// otherwise (>= 1).
absl::Status NoUsableGpu(cudaError_t error);

}  // namespace loadstar::kernels

#define CUDA_RETURN_IF_ERROR(expr)                                                    \
  do {                                                                                \
    const cudaError_t loadstar_cuda_error_ = (expr);                                  \
    if (loadstar_cuda_error_ != cudaSuccess) {                                        \
      return ::loadstar::kernels::CudaError(loadstar_cuda_error_, #expr, __FILE__,    \
                                            __LINE__);                                \
    }                                                                                 \
  } while (0)

#define CUBLAS_RETURN_IF_ERROR(expr)                                                  \
  do {                                                                                \
    const cublasStatus_t loadstar_cublas_error_ = (expr);                             \
    if (loadstar_cublas_error_ != CUBLAS_STATUS_SUCCESS) {                            \
      return ::loadstar::kernels::CublasError(loadstar_cublas_error_, #expr, __FILE__, \
                                              __LINE__);                              \
    }                                                                                 \
  } while (0)

// For destructors and cleanup paths that cannot return: logs nothing; a failure's last
// error is cleared, as CUDA_RETURN_IF_ERROR does.
#define CUDA_IGNORE_ERROR(expr)                                                       \
  do {                                                                                \
    if ((expr) != cudaSuccess) static_cast<void>(cudaGetLastError());                 \
  } while (0)
