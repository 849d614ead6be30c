// Turns CUDA runtime, cuBLAS and NCCL error codes into absl::Status at the call site:
//
//   CUDA_RETURN_IF_ERROR(cudaMalloc(&p, n));
//   CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(...));
//
// The message carries the library's error text, the call's source text and file:line, e.g.
// "cudaMalloc(&p, n) failed: out of memory (cudaErrorMemoryAllocation) at
// kernels/cuda_device.cc:57". Codes: out of memory -> ResourceExhausted, no driver / no
// device -> FailedPrecondition, invalid argument -> InvalidArgument, else Internal.
// Only .cc adapters include this (it pulls absl); .cu files return cudaError_t.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace loadstar::kernels {

absl::Status CudaError(cudaError_t error, const char* expr, const char* file, int line);
absl::Status CublasError(cublasStatus_t error, const char* expr, const char* file, int line);

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

// For destructors and cleanup paths that cannot return: logs nothing, just evaluates.
#define CUDA_IGNORE_ERROR(expr) static_cast<void>(expr)
