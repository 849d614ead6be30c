// CUDA_RETURN_IF_ERROR / CudaError: the Status it makes (also without a GPU, where every
// call fails with "no driver"), and that it clears the runtime's last error (GPU only:
// without a driver the runtime's initialization error is sticky, nothing can clear it).
#include "kernels/cuda_status.h"

#include <cuda_runtime_api.h>

#include <string>

#include "gtest/gtest.h"
#include "kernels/gpu_quantizer.h"
#include "tests/kernels/gpu_test_util.h"

namespace loadstar::kernels {
namespace {

// Device -1 never exists: fails with or without a GPU.
absl::Status SelectNoDevice() {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(-1));
  return absl::OkStatus();
}

void IgnoreFailure() { CUDA_IGNORE_ERROR(cudaSetDevice(-1)); }

TEST(CudaStatusTest, FailedCallBecomesAStatusNamingTheCall) {
  const absl::Status s = SelectNoDevice();
  ASSERT_FALSE(s.ok());
  const std::string message(s.message());
  EXPECT_NE(message.find("cudaSetDevice(-1) failed: "), std::string::npos) << message;
  EXPECT_NE(message.find("kernels/cuda_status_test.cc:"), std::string::npos) << message;
}

TEST(CudaStatusTest, FailedCallDoesNotLeaveItsErrorForTheNextCall) {
  SKIP_WITHOUT_GPU();
  // Unhandled, the runtime keeps the error as the thread's last error...
  ASSERT_NE(cudaSetDevice(-1), cudaSuccess);
  ASSERT_NE(cudaPeekAtLastError(), cudaSuccess)
      << "this runtime does not record the last error; the test below proves nothing";
  static_cast<void>(cudaGetLastError());
  // ...which the macros clear once the error is in a Status (or deliberately ignored).
  ASSERT_FALSE(SelectNoDevice().ok());
  EXPECT_EQ(cudaPeekAtLastError(), cudaSuccess);
  IgnoreFailure();
  EXPECT_EQ(cudaPeekAtLastError(), cudaSuccess);
}

TEST(CudaStatusTest, KernelLaunchAfterAHandledFailureSucceeds) {
  SKIP_WITHOUT_GPU();
  ASSERT_FALSE(SelectNoDevice().ok());
  void* in = nullptr;
  void* packed = nullptr;
  void* absmax = nullptr;
  ASSERT_EQ(cudaMalloc(&in, 64 * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&packed, 32), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&absmax, 4), cudaSuccess);
  ASSERT_EQ(cudaMemset(in, 0, 64 * 2), cudaSuccess);
  // The launcher returns cudaGetLastError(): a stale error would be reported here.
  EXPECT_EQ(LaunchQuantize4bit(Gpu4bit::kNf4, GpuElement::kF16, in, 64, 64,
                               static_cast<float*>(absmax), static_cast<uint8_t*>(packed),
                               nullptr),
            cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(in);
  cudaFree(packed);
  cudaFree(absmax);
}

}  // namespace
}  // namespace loadstar::kernels
